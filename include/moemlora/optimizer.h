/**
 * @file
 * @brief Optimisers (SGD, Adam, lazy Adam, Adagrad) over a list of parameters.
 *
 * An optimiser updates the mml_param structs it was created with; it copies
 * the pointer array, so the structs themselves (and their value and grad
 * buffers) must outlive it and keep their sizes. Each parameter has its own
 * state and its own step count.
 *
 * Freezing: a step updates only the parameters whose frozen flag is 0 at the
 * time of the call. A frozen parameter keeps its value, its Adam moments and
 * its step count bit-identical; unfrozen later, it continues from its own
 * step count (so its bias correction is its own, not the optimiser's).
 *
 * Adam is torch.optim.Adam of PyTorch 1.13 (amsgrad off, no weight decay):
 *     t += 1
 *     m = b1 m + (1 - b1) g
 *     v = b2 v + (1 - b2) g^2
 *     value -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * It is dense: every element moves each step, including embedding rows the
 * batch did not touch (they move by their momentum).
 * SGD: value -= lr * g (the step count is kept as well).
 *
 * Lazy Adam (MML_OPT_LAZY_ADAM), for sparse embedding updates: parameters
 * of group MML_GROUP_EMBEDDING (their group at creation) are updated row by
 * row, every other parameter by the dense Adam above. Each row r of an
 * embedding parameter has its own step count t_r. A step updates the rows
 * the batch used and leaves every other row alone (value, m, v and t_r
 * unchanged). Every used row does
 *     t_r += 1
 *     m[r,:] = b1 m[r,:] + (1 - b1) g[r,:]
 *     v[r,:] = b2 v[r,:] + (1 - b2) g[r,:]^2
 *     value[r,:] -= (lr / (1 - b1^t_r)) * m[r,:] / (sqrt(v[r,:]) / sqrt(1 - b2^t_r) + eps)
 * i.e. dense Adam's formula with the row's own count, so a row seen for the
 * first time after many steps takes a first, fully bias-corrected step.
 * Which rows the batch used is decided by the batch's ids, not by the
 * gradient's values: the library's embedding tables (mml_embedding, and so
 * a model's field, multi-hot and first-order tables) record the rows that
 * their backward passes (and the model's L2 term) wrote since the gradient
 * was last zeroed with mml_params_zero_grad(). A used row whose gradient
 * happens to be exactly zero still counts: t_r advances and m and v decay.
 * The step's cost then follows the batch, not the table: zeroing, the
 * non-finite check and the update visit only the recorded rows. For a
 * parameter that records no rows (one made by the caller, or the model's
 * numeric weights), the used rows are those whose gradient is not zero in
 * every element (found by a scan of the whole gradient).
 * Unlike dense Adam (the default, and what the reference protocol uses),
 * unused rows do not move by their momentum. The parameter's own step count
 * (mml_optimizer_steps) still counts every step.
 *
 * Adagrad (MML_OPT_ADAGRAD), every parameter, elementwise:
 *     G += g^2                     (G starts at adagrad_init, e.g. TF's 0.1)
 *     value -= lr * g / (sqrt(G) + eps)
 * (PyTorch's Adagrad with lr_decay 0 and initial_accumulator_value =
 * adagrad_init; note PyTorch's default eps is 1e-10, ours 1e-8.) Elements
 * with a zero gradient keep value and G, so Adagrad is naturally sparse; on
 * a parameter that records its rows (as above), a step visits only those
 * rows (the others have a zero gradient), so its cost follows the batch.
 * beta1 and beta2 are unused (still checked).
 *
 * Which one: dense Adam is the reference's semantics and the default. Lazy
 * Adam and Adagrad are for large vocabularies, where a step must cost what
 * the batch uses, not what the tables hold (dense Adam and SGD visit every
 * element of every parameter in each step).
 *
 * Thread safety: one thread at a time per optimiser (and its context and the
 * objects made from it).
 */
#ifndef MOEMLORA_OPTIMIZER_H
#define MOEMLORA_OPTIMIZER_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

/** An optimiser (opaque) over a fixed list of parameters. */
typedef struct mml_optimizer mml_optimizer;

/** The update rule (mml_optimizer_options::kind). */
typedef enum mml_optimizer_kind {
    /** value -= lr * g. */
    MML_OPT_SGD = 0,
    /** Dense Adam (PyTorch 1.13's torch.optim.Adam). */
    MML_OPT_ADAM = 1,
    /** Row-wise Adam for MML_GROUP_EMBEDDING parameters, dense Adam for the rest. */
    MML_OPT_LAZY_ADAM = 2,
    /** Adagrad, elementwise. */
    MML_OPT_ADAGRAD = 3
} mml_optimizer_kind;

/** Hyper-parameters. Initialise with mml_optimizer_options_init(); every
 *  field is checked, whatever the kind. */
typedef struct mml_optimizer_options {
    /** Set by mml_optimizer_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** MML_OPT_*; default MML_OPT_ADAM. */
    int32_t kind;
    /** Learning rate, > 0, finite; default 1e-3. */
    float lr;
    /** Adam, in [0, 1); default 0.9. */
    float beta1;
    /** Adam, in [0, 1); default 0.999. */
    float beta2;
    /** Adam, lazy Adam, Adagrad: > 0, finite; default 1e-8. */
    float eps;
    /** Adagrad's initial accumulator G, >= 0, finite; default 0.1. */
    float adagrad_init;
} mml_optimizer_options;

MML_BEGIN_DECLS

/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_optimizer_options_init_sized(mml_optimizer_options *opt, uint32_t struct_size);
/** mml_optimizer_options_init_sized() with the caller's sizeof, so a newer
 *  library never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_optimizer_options_init(opt) mml_optimizer_options_init_sized((opt), (uint32_t)sizeof(mml_optimizer_options))

/** Creates an optimiser. opt may be NULL for the defaults; it is read during
 * the call only, and every field is checked, whatever the kind. params holds
 * n_params >= 1 distinct parameters, each with separate value and grad
 * buffers and rows, cols >= 1; the pointer array is copied, the mml_param
 * structs are borrowed and must outlive the optimiser. Adam's state starts at
 * zero. On failure *out is NULL.
 * @param out receives the optimiser, owned by the caller (mml_optimizer_destroy()).
 * @param ctx the context; it must outlive the optimiser.
 * @param opt the options, or NULL. @param params the parameters.
 * @param n_params their count.
 * @return MML_OK; MML_EINVAL for a NULL out or ctx, an invalid option, a
 * NULL or empty list, a NULL or repeated parameter or one without separate
 * buffers; MML_ESHAPE for
 * an empty or too large parameter; MML_EVERSION for a struct_size of opt that
 * no release produced; MML_ENOMEM. */
MML_API int mml_optimizer_create(mml_optimizer **out, mml_ctx *ctx,
                                 const mml_optimizer_options *opt, mml_param *const *params,
                                 int64_t n_params);
/** Destroys the optimiser and its state (not the parameters); NULL is a no-op.
 * @param opt the optimiser, or NULL. */
MML_API void mml_optimizer_destroy(mml_optimizer *opt);

/** One update of every parameter that is not frozen. Everything is checked
 * before anything is changed.
 * @param opt the optimiser.
 * @return MML_OK; MML_EINVAL for NULL; MML_ESHAPE for a parameter whose shape
 * or buffers changed since creation; MML_ENONFINITE for a NaN or infinite
 * gradient in any of them (naming the parameter and the index). */
MML_API int mml_optimizer_step(mml_optimizer *opt);

/** Zeroes the state and step counts of every parameter (Adagrad's G goes
 * back to adagrad_init; lazy Adam's row counts to 0): fresh state for a new
 * training stage. Values are not touched.
 * @param opt the optimiser.
 * @return MML_OK; MML_EINVAL for NULL. */
MML_API int mml_optimizer_reset(mml_optimizer *opt);

/** Number of updates parameter param_index has received since creation or the
 * last reset.
 * @param opt the optimiser. @param param_index 0 .. n_params - 1.
 * @return the count; -1 for a NULL optimiser or an index outside [0, n_params). */
MML_API int64_t mml_optimizer_steps(const mml_optimizer *opt, int64_t param_index);

/** Read access to a parameter's Adam moments (first m, second v; as many
 * floats as the parameter has values), e.g. for checkpoints. For SGD both
 * are set to NULL; for Adagrad m is NULL and v is the accumulator G. The
 * arrays are borrowed: they stay valid until the optimiser is destroyed. On
 * failure *m and *v are left unchanged.
 * @param opt the optimiser. @param param_index 0 .. n_params - 1.
 * @param m receives the first moment, or NULL.
 * @param v receives the second moment (Adagrad: G), or NULL.
 * @return MML_OK; MML_EINVAL for a NULL optimiser; MML_ERANGE for a bad index. */
MML_API int mml_optimizer_state(const mml_optimizer *opt, int64_t param_index, const float **m,
                                const float **v);

/** Lazy Adam: the step count t_r of row `row` of parameter param_index (a
 * parameter of group MML_GROUP_EMBEDDING at creation).
 * @param opt the optimiser. @param param_index 0 .. n_params - 1.
 * @param row 0 .. rows - 1.
 * @return the count; -1 for a NULL optimiser, another kind, a parameter
 * without row counts, or an index or row out of range. */
MML_API int64_t mml_optimizer_row_steps(const mml_optimizer *opt, int64_t param_index,
                                        int64_t row);

MML_END_DECLS

#endif
