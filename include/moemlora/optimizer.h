/* libmoemlora: optimisers (SGD, Adam, lazy Adam, Adagrad) over a list of parameters.
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
 * embedding parameter has its own step count t_r. In a step, a row whose
 * gradient is exactly zero in every element (a row the batch did not use)
 * is left alone: value, m, v and t_r unchanged. Every other row does
 *     t_r += 1
 *     m[r,:] = b1 m[r,:] + (1 - b1) g[r,:]
 *     v[r,:] = b2 v[r,:] + (1 - b2) g[r,:]^2
 *     value[r,:] -= (lr / (1 - b1^t_r)) * m[r,:] / (sqrt(v[r,:]) / sqrt(1 - b2^t_r) + eps)
 * i.e. dense Adam's formula with the row's own count, so a row seen for the
 * first time after many steps takes a first, fully bias-corrected step.
 * Unlike dense Adam (the default, and what the reference protocol uses),
 * untouched rows do not move by their momentum, and a step costs work only
 * for the rows the batch used (after a scan of the gradient). The
 * parameter's own step count (mml_optimizer_steps) still counts every step.
 *
 * Adagrad (MML_OPT_ADAGRAD), every parameter, elementwise:
 *     G += g^2                     (G starts at adagrad_init, e.g. TF's 0.1)
 *     value -= lr * g / (sqrt(G) + eps)
 * (PyTorch's Adagrad with lr_decay 0 and initial_accumulator_value =
 * adagrad_init; note PyTorch's default eps is 1e-10, ours 1e-8.) Elements
 * with a zero gradient keep value and G, so Adagrad is naturally sparse.
 * beta1 and beta2 are unused (still checked).
 *
 * Thread safety: one thread at a time per optimiser (and its context).
 */
#ifndef MOEMLORA_OPTIMIZER_H
#define MOEMLORA_OPTIMIZER_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

typedef struct mml_optimizer mml_optimizer;

typedef enum mml_optimizer_kind {
    MML_OPT_SGD = 0,
    MML_OPT_ADAM = 1,
    MML_OPT_LAZY_ADAM = 2,
    MML_OPT_ADAGRAD = 3
} mml_optimizer_kind;

typedef struct mml_optimizer_options {
    uint32_t struct_size; /* sizeof(mml_optimizer_options) */
    int32_t kind;         /* MML_OPT_*; default MML_OPT_ADAM */
    float lr;             /* > 0, finite; default 1e-3 */
    float beta1;          /* Adam, in [0, 1); default 0.9 */
    float beta2;          /* Adam, in [0, 1); default 0.999 */
    float eps;            /* Adam, lazy Adam, Adagrad: > 0, finite; default 1e-8 */
    float adagrad_init;   /* Adagrad's initial accumulator G, >= 0, finite; default 0.1 */
} mml_optimizer_options;

MML_BEGIN_DECLS

MML_API int mml_optimizer_options_init_sized(mml_optimizer_options *opt, uint32_t struct_size);
#define mml_optimizer_options_init(opt) mml_optimizer_options_init_sized((opt), (uint32_t)sizeof(mml_optimizer_options))

/* opt may be NULL for the defaults; every field is checked, whatever the
 * kind. params holds n_params >= 1 distinct parameters, each with separate
 * value and grad buffers and rows, cols >= 1. Adam's state starts at zero. */
MML_API int mml_optimizer_create(mml_optimizer **out, mml_ctx *ctx,
                                 const mml_optimizer_options *opt, mml_param *const *params,
                                 int64_t n_params);
MML_API void mml_optimizer_destroy(mml_optimizer *opt);

/* One update of every parameter that is not frozen. A NaN or infinite
 * gradient in any of them gives MML_ENONFINITE (naming the parameter and
 * the index) before anything is changed. */
MML_API int mml_optimizer_step(mml_optimizer *opt);

/* Zeroes the state and step counts of every parameter (Adagrad's G goes
 * back to adagrad_init; lazy Adam's row counts to 0): fresh state for a new
 * training stage. Values are not touched. */
MML_API int mml_optimizer_reset(mml_optimizer *opt);

/* Number of updates parameter param_index has received since creation or the
 * last reset; -1 for a NULL optimiser or an index outside [0, n_params). */
MML_API int64_t mml_optimizer_steps(const mml_optimizer *opt, int64_t param_index);

/* Read access to a parameter's Adam moments (first m, second v; as many
 * floats as the parameter has values), e.g. for checkpoints. Either output
 * pointer may be NULL. For SGD both are set to NULL; for Adagrad m is NULL
 * and v is the accumulator G. The arrays stay valid
 * until the optimiser is destroyed. MML_ERANGE for a bad index. */
MML_API int mml_optimizer_state(const mml_optimizer *opt, int64_t param_index, const float **m,
                                const float **v);

/* Lazy Adam: the step count t_r of row `row` of parameter param_index (a
 * parameter of group MML_GROUP_EMBEDDING at creation). -1 for a NULL
 * optimiser, another kind, a parameter without row counts, or an index or
 * row out of range. */
MML_API int64_t mml_optimizer_row_steps(const mml_optimizer *opt, int64_t param_index,
                                        int64_t row);

MML_END_DECLS

#endif
