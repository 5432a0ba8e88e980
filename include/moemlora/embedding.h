/**
 * @file
 * @brief Embedding tables.
 *
 * One table per categorical field: n_rows ids, each mapped to a vector of
 * dimension dim. A batch lookup copies the rows of the batch's ids into the
 * caller's output; the backward pass adds the output gradient to the rows
 * the batch touched (rows it did not touch keep a zero gradient) and records
 * those rows, each once, until mml_params_zero_grad() clears them: the
 * sparse optimisers (lazy Adam, Adagrad) update exactly the recorded rows,
 * even a row whose gradient sums to exactly zero (see optimizer.h).
 *
 * Every lookup checks all its arguments and ids before writing anything, so a
 * failing call leaves the output (or the gradient) untouched.
 *
 * Thread safety: one thread at a time per context and the objects made from it.
 */
#ifndef MOEMLORA_EMBEDDING_H
#define MOEMLORA_EMBEDDING_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

/** An embedding table (opaque): n_rows vectors of dimension dim. */
typedef struct mml_embedding mml_embedding;

/** Out-of-vocabulary policy of a table. */
typedef enum mml_oov_policy {
    /** An id outside [0, n_rows) is an error (MML_ERANGE). */
    MML_OOV_ERROR = 0,
    /** Row n_rows - 1 is reserved: every id outside [0, n_rows - 1)
     *  (negative, too large, or n_rows - 1 itself) reads and trains that row;
     *  needs n_rows >= 2. */
    MML_OOV_RESERVED_ROW = 1
} mml_oov_policy;

/** How a table's values start. */
typedef enum mml_init_kind {
    /** N(0, scale^2). */
    MML_INIT_NORMAL = 0,
    /** U(-scale, scale). */
    MML_INIT_UNIFORM = 1,
    /** Zeros. */
    MML_INIT_ZEROS = 2
} mml_init_kind;

/** What mml_embedding_create() builds. Initialise with
 *  mml_embedding_options_init(). */
typedef struct mml_embedding_options {
    /** Set by mml_embedding_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** Vector width, >= 1; default 8. */
    int32_t dim;
    /** Rows (ids), 1..INT32_MAX (no default). */
    int64_t n_rows;
    /** mml_init_kind; default MML_INIT_NORMAL. */
    int32_t init;
    /** Finite, >= 0; default 0.01 (std of the normal init, bound of the uniform). */
    float scale;
    /** Random stream within the context's seed, such as the field index; default 0. */
    uint64_t stream;
    /** Used in error messages and as the parameter's name; default "embedding"
     *  (also for NULL); copied during create. */
    const char *name;
    /** Parameter group (MML_GROUP_*); default MML_GROUP_EMBEDDING. */
    int32_t group;
    /** MML_OOV_*; default MML_OOV_ERROR. */
    int32_t oov_policy;
} mml_embedding_options;

MML_BEGIN_DECLS

/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_embedding_options_init_sized(mml_embedding_options *opt, uint32_t struct_size);
/** mml_embedding_options_init_sized() with the caller's sizeof, so a newer
 *  library never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_embedding_options_init(opt) mml_embedding_options_init_sized((opt), (uint32_t)sizeof(mml_embedding_options))
/** Creates a table. opt is read during the call only; NULL means the
 *  defaults, which leave n_rows unset, so it gives MML_EINVAL. On failure
 *  *out is NULL.
 *  @param out receives the table, owned by the caller (mml_embedding_destroy()).
 *  @param ctx the context; it must outlive the table.
 *  @param opt the options, or NULL for the defaults.
 *  @return MML_OK; MML_EINVAL for a NULL argument or an invalid option;
 *  MML_EVERSION for a struct_size of opt that no release produced; MML_ENOMEM. */
MML_API int mml_embedding_create(mml_embedding **out, mml_ctx *ctx,
                                 const mml_embedding_options *opt);
/** Destroys the table; NULL is a no-op.
 *  @param emb the table, or NULL. */
MML_API void mml_embedding_destroy(mml_embedding *emb);

/** out[r * out_row_stride + j] = table[ids[r * id_stride]][j] for r < n, j < dim.
 * An id outside [0, n_rows) gives MML_ERANGE naming the table and the row
 * (MML_OOV_ERROR), or reads the reserved last row (MML_OOV_RESERVED_ROW).
 * @param emb the table. @param ids the ids. @param id_stride >= 1.
 * @param n rows, >= 1. @param out the output.
 * @param out_row_stride >= dim.
 * @return MML_OK; MML_EINVAL for a NULL argument; MML_ESHAPE for a bad n or
 * stride; MML_ERANGE for an id out of range. */
MML_API int mml_embedding_forward(mml_embedding *emb, const int32_t *ids, int64_t id_stride,
                                  int64_t n, float *out, int64_t out_row_stride);
/** grad[ids[r]] += dout[r] for r < n (ids mapped by the OOV policy as in
 * forward), whether or not the table is frozen.
 * @param emb the table. @param ids the ids. @param id_stride >= 1.
 * @param n rows, >= 1. @param dout the output gradient.
 * @param dout_row_stride >= dim.
 * @return the codes of mml_embedding_forward(). */
MML_API int mml_embedding_backward(mml_embedding *emb, const int32_t *ids, int64_t id_stride,
                                   int64_t n, const float *dout, int64_t dout_row_stride);

/** Multi-hot pooling (a variable number of ids per row). */
typedef enum mml_pooling {
    /** Sum of the rows' vectors. */
    MML_POOL_SUM = 0,
    /** Their mean. */
    MML_POOL_MEAN = 1
} mml_pooling;

/** Row r < n_rows of the batch has the ids ids[offsets[r] .. offsets[r + 1])
 * (CSR as mml_dataset_multihot_csr gives it; offsets has n_rows + 1 entries,
 * offsets[0] >= 0 and non-decreasing, so a sub-range of a larger CSR works
 * as is). out[r * out_row_stride + j] = sum over those ids of table[id][j]
 * (MML_POOL_SUM) or that sum divided by their count (MML_POOL_MEAN); an
 * empty list gives a zero vector; a repeated id counts each time. ids may be
 * NULL when every list is empty. Ids follow the table's OOV policy. The
 * model uses these for the batch view's multi-hot fields
 * (mml_model_options::n_multihot).
 * @param emb the table. @param offsets n_rows + 1 offsets into ids.
 * @param ids the ids, or NULL when every list is empty.
 * @param n_rows rows, >= 1. @param pooling an mml_pooling value.
 * @param out the output. @param out_row_stride >= dim.
 * @return Every argument and id is checked before anything is written:
 * MML_OK; MML_EINVAL for a NULL pointer or an unknown pooling; MML_ESHAPE
 * for n_rows < 1, a small stride or bad offsets (naming the row);
 * MML_ERANGE for an id. */
MML_API int mml_embedding_forward_multihot(mml_embedding *emb, const int64_t *offsets,
                                           const int32_t *ids, int64_t n_rows, int32_t pooling,
                                           float *out, int64_t out_row_stride);
/** Backward of the above: grad[id] += dout[r] (MML_POOL_SUM) or dout[r] /
 * count (MML_POOL_MEAN) for every id occurrence of every row r; empty rows
 * contribute nothing.
 * @param emb the table. @param offsets n_rows + 1 offsets into ids.
 * @param ids the ids, or NULL when every list is empty.
 * @param n_rows rows, >= 1. @param pooling an mml_pooling value.
 * @param dout the output gradient. @param dout_row_stride >= dim.
 * @return the codes (and checks) of mml_embedding_forward_multihot(). */
MML_API int mml_embedding_backward_multihot(mml_embedding *emb, const int64_t *offsets,
                                            const int32_t *ids, int64_t n_rows, int32_t pooling,
                                            const float *dout, int64_t dout_row_stride);

/** The number of rows.
 *  @param emb the table. @return n_rows; 0 for NULL. */
MML_API int64_t mml_embedding_n_rows(const mml_embedding *emb);
/** The vector width.
 *  @param emb the table. @return dim; 0 for NULL. */
MML_API int32_t mml_embedding_dim(const mml_embedding *emb);
/** The table as a parameter (n_rows x dim).
 *  @param emb the table.
 *  @return a borrowed pointer, valid until the table is destroyed; NULL for NULL. */
MML_API mml_param *mml_embedding_param(mml_embedding *emb);

MML_END_DECLS

#endif
