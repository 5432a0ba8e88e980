/**
 * @file
 * @brief Sessions: per-thread prediction on a shared read-only model.
 *
 * A model made read-only (mml_model_make_readonly()) holds weights only and
 * is shared by any number of threads; each thread predicts through its own
 * session, which owns all the scratch of a forward pass. A session reserves
 * room for a number of rows (and multi-hot ids) up front; after that,
 * predicting a batch that fits never calls the allocator (BLIS's internal
 * packing pools, used for batches of more than 8 rows, are allocated by BLIS
 * itself).
 *
 * A session is a forward-only copy of the model's object tree whose weights
 * are the model's: it costs its scratch, not a copy of the weights. The one
 * exception is a registered user backbone, whose scratch cannot be told from
 * its weights: the session holds a private instance of it, made with its
 * create callback from the model's backbone configuration (options NULL)
 * and given a copy of the model's backbone parameter values.
 *
 * Raw rows: a model that keeps its data's schema (mml_model_has_schema())
 * also serves rows of raw values, e.g. split CSV lines: bind the header once
 * (mml_session_bind_columns()), then mml_session_predict_raw() maps each row
 * as the CSV reader mapped the training file and predicts it.
 *
 * Results: mml_session_predict() gives the bits mml_model_predict() gives
 * for the same batch (the same code runs). Batches longer than the
 * reservation are served in chunks of the reserved row count, and a batch
 * with bad rows is served without them, so a row's probability may differ in
 * the last bits from the one it gets in a batch of another size (products of
 * at most 8 rows do not go through BLIS).
 *
 * Thread safety: a session is used by one thread at a time, with its own
 * context (mml_session_create()), which must not be used by another thread
 * meanwhile. Any number of sessions on different threads may predict on one
 * read-only model at once: a session's predict writes only the session and
 * its context, never the model, the model's context or another session. While
 * sessions exist, the model must not be changed or destroyed, and neither
 * it nor its context may be used by other calls (mml_model_predict()
 * included) at the same time as a session is created or predicts.
 */
#ifndef MOEMLORA_SESSION_H
#define MOEMLORA_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "model.h"
#include "view.h"

/** A per-thread prediction session on a read-only model (opaque). */
typedef struct mml_session mml_session;

/** What mml_session_create() sets up. Initialise with
 *  mml_session_options_init(). */
typedef struct mml_session_options {
    /** Set by mml_session_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** The mixture mode (MML_MIX_NONE, MML_MIX_DOMAIN, MML_MIX_GATED or
     *  MML_MIX_OWN), or -1 (the default) for mml_model_mix_mode() of the
     *  model at creation. */
    int32_t mix_mode;
    /** Rows to reserve room for at creation, 1 .. 2^24; default 1024. */
    int64_t max_rows;
    /** Multi-hot ids per call (all fields together) to reserve room for,
     *  0 .. 2^31 - 1; default 0. */
    int64_t max_multihot_ids;
    /** 0; reserved for later releases. */
    int64_t reserved;
} mml_session_options;

MML_BEGIN_DECLS

/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_session_options_init_sized(mml_session_options *opt, uint32_t struct_size);
/** mml_session_options_init_sized() with the caller's sizeof, so a newer
 *  library never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_session_options_init(opt)                                                            \
    mml_session_options_init_sized((opt), (uint32_t)sizeof(mml_session_options))

/** Creates a session on a read-only model and reserves room for
 *  opt->max_rows rows and opt->max_multihot_ids multi-hot ids (running one
 *  forward pass of that size on zero ids). On failure *out is NULL.
 *  @param out receives the session (mml_session_destroy()).
 *  @param ctx the calling thread's own context: it holds the session's
 *  memory (its allocator), runs its products (its thread count is the BLIS
 *  threads of this session) and gets its messages; it must outlive the
 *  session. It may be the model's context when only one thread uses both.
 *  @param model a read-only model; it must outlive the session.
 *  @param opt the options, or NULL for the defaults.
 *  @return MML_OK; MML_EINVAL for a NULL argument or an invalid option (an
 *  unknown mix_mode, MML_MIX_SINGLE); MML_EVERSION for a struct_size that no
 *  release produced; MML_ESTATE for a model that is not read-only or a
 *  mix_mode it cannot serve; MML_ENOMEM; MML_ECALLBACK from a user
 *  backbone's create callback or a private instance whose parameters do not
 *  match the model's. */
MML_API int mml_session_create(mml_session **out, mml_ctx *ctx, const mml_model *model,
                               const mml_session_options *opt);
/** Destroys the session (not its model or context); NULL is a no-op.
 *  @param session the session, or NULL. */
MML_API void mml_session_destroy(mml_session *session);
/** Grows the reservation (it never shrinks) to max_rows rows and
 *  max_multihot_ids multi-hot ids, so that later predictions within it do not
 *  allocate.
 *  @param session the session. @param max_rows 1 .. 2^24.
 *  @param max_multihot_ids 0 .. 2^31 - 1.
 *  @return MML_OK; MML_EINVAL for NULL or a value out of range; MML_ENOMEM
 *  (the session keeps working, but may allocate later); MML_ECALLBACK from
 *  a user backbone. */
MML_API int mml_session_reserve(mml_session *session, int64_t max_rows, int64_t max_multihot_ids);
/** The reserved row count.
 *  @param session the session. @return the rows; 0 for NULL. */
MML_API int64_t mml_session_max_rows(const mml_session *session);

/** Probabilities P(click) of the batch's rows, with the session's mixture
 * mode and dropout off. Each row is checked before the model sees it: a row
 * with a domain or an id outside the model (MML_ERANGE) or a non-finite
 * numeric value (MML_ENONFINITE) gets NaN and that code in status, and the
 * other rows are still served (the message of the first bad row is left in
 * the session's context). Longer batches than the reservation are served in
 * chunks of the reserved size without allocating; multi-hot ids beyond the
 * reservation grow the session's buffers (that allocates). The batch's
 * labels and weights are ignored.
 * @param session the session. @param batch the rows (read during the call).
 * @param prob n_rows floats. @param status n_rows codes (MML_OK or negative
 * per row), or NULL.
 * @return MML_OK when the batch itself is well-formed (whatever its rows'
 * statuses); MML_EINVAL for a NULL argument or a batch without ids, domains,
 * numeric or multi-hot arrays; MML_EVERSION for a batch struct_size that no
 * release produced; MML_ESHAPE for a batch that does not fit the model
 * (fields, numeric values, multi-hot fields, strides, offsets, no rows);
 * MML_ENOMEM (multi-hot growth); MML_ENONFINITE for a non-finite logit and
 * MML_ECALLBACK from a user backbone (the rows of the failed chunk get NaN
 * and the code). */
MML_API int mml_session_predict(mml_session *session, const mml_batch_view *batch, float *prob,
                                int32_t *status);
/** One row without multi-hot values (a model with multi-hot fields sees
 * empty lists): mml_session_predict() on a batch of one row.
 * @param session the session. @param ids n_fields categorical ids.
 * @param dense n_dense numeric values (may be NULL when n_dense is 0).
 * @param domain the row's domain. @param prob receives P(click), or NaN for
 * a bad row.
 * @return the row's status: MML_OK, MML_ERANGE or MML_ENONFINITE; or a code
 * of mml_session_predict() for the call itself (MML_EINVAL for a NULL
 * argument). */
MML_API int mml_session_predict_row(mml_session *session, const int32_t *ids, const float *dense,
                                    int32_t domain, float *prob);

/** (1.2) Binds the caller's columns (e.g. a CSV header) to the model's
 * saved schema, for mml_session_predict_raw(). Every categorical, numeric
 * and multi-hot column of the schema and its domain column (when the model
 * has one) must be among names; the label column is optional; other names
 * are ignored. Allocates the binding here, once: predicting raw rows
 * afterwards does not. A new binding replaces the old one (kept on failure).
 * @param session the session. @param n_columns the number of names, >= 0.
 * @param names n_columns column names (read during the call only).
 * @return MML_OK; MML_EINVAL for NULL arguments, a NULL name or a schema
 * column listed twice; MML_ESTATE for a model without a schema
 * (mml_model_has_schema()); MML_ENOTFOUND, with a message naming it, for a
 * required column missing from names; MML_ENOMEM. */
MML_API int mml_session_bind_columns(mml_session *session, int32_t n_columns,
                                     const char *const *names);
/** (1.2) Probabilities of raw rows: each row's values are mapped through the
 * model's schema exactly as the CSV reader maps the same cells (split lines
 * with mml_csv_split_line() and mml_session_delimiter()), then predicted
 * as mml_session_predict() predicts a batch (in chunks of the reserved row
 * count; a chunk's bad rows are left out of its batch). Unknown categorical
 * and multi-hot values take their out-of-vocabulary id. A row with a value
 * that does not parse (a numeric value, or an id of a field that takes ids:
 * MML_EPARSE), a domain the model does not know or a value of a field
 * without out-of-vocabulary id (MML_ERANGE), or a NULL value of a bound
 * column (MML_EINVAL) gets NaN, that status and the column; the other rows
 * are served, and the message of the first bad row is left in the
 * session's context. Within the reservation (rows and multi-hot ids) it
 * does not allocate; more multi-hot ids than reserved grow the session's
 * buffers. Label values are not read.
 * @param session a session with bound columns (mml_session_bind_columns()).
 * @param n_rows the rows, >= 0 (0: nothing to do).
 * @param values n_rows x n_columns values, row-major, in the bound column
 * order; values of unbound columns are not read (may be NULL).
 * @param lens the values' lengths in bytes (same layout), or NULL for
 * NUL-terminated values.
 * @param prob n_rows floats: P(click), NaN for a bad row.
 * @param status n_rows codes (MML_OK or negative per row), or NULL.
 * @param bad_column n_rows ints: a bad row's 0-based column in the bound
 * list, -1 for a good row; or NULL.
 * @return MML_OK whatever the rows' statuses; MML_EINVAL for a NULL session,
 * values or prob, or n_rows < 0; MML_ESTATE without bound columns;
 * MML_ENONFINITE for a non-finite logit and MML_ECALLBACK from a user
 * backbone (the good rows of the failed chunk get NaN and the code; later
 * rows are not written). */
MML_API int mml_session_predict_raw(mml_session *session, int64_t n_rows,
                                    const char *const *values, const size_t *lens, float *prob,
                                    int32_t *status, int32_t *bad_column);
/** (1.2) The column delimiter of the model's schema (the training file's),
 * for splitting raw lines with mml_csv_split_line().
 * @param session the session.
 * @return the delimiter byte (0 .. 255); -1 for NULL or a model without a
 * schema. */
MML_API int32_t mml_session_delimiter(const mml_session *session);

MML_END_DECLS

#endif
