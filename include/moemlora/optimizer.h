/* libmoemlora: optimisers (SGD and Adam) over a list of parameters.
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
 * Thread safety: one thread at a time per optimiser (and its context).
 */
#ifndef MOEMLORA_OPTIMIZER_H
#define MOEMLORA_OPTIMIZER_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

typedef struct mml_optimizer mml_optimizer;

enum { MML_OPT_SGD = 0, MML_OPT_ADAM = 1 };

typedef struct mml_optimizer_options {
    uint32_t struct_size; /* sizeof(mml_optimizer_options) */
    int32_t kind;         /* MML_OPT_*; default MML_OPT_ADAM */
    float lr;             /* > 0, finite; default 1e-3 */
    float beta1;          /* Adam, in [0, 1); default 0.9 */
    float beta2;          /* Adam, in [0, 1); default 0.999 */
    float eps;            /* Adam, > 0, finite; default 1e-8 */
} mml_optimizer_options;

MML_BEGIN_DECLS

MML_API void mml_optimizer_options_init(mml_optimizer_options *opt);

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

/* Zeroes the state and step counts of every parameter: fresh state for a new
 * training stage. Values are not touched. */
MML_API int mml_optimizer_reset(mml_optimizer *opt);

/* Number of updates parameter param_index has received since creation or the
 * last reset; -1 for a NULL optimiser or an index outside [0, n_params). */
MML_API int64_t mml_optimizer_steps(const mml_optimizer *opt, int64_t param_index);

/* Read access to a parameter's Adam moments (first m, second v; as many
 * floats as the parameter has values), e.g. for checkpoints. Either output
 * pointer may be NULL. For SGD both are set to NULL. The arrays stay valid
 * until the optimiser is destroyed. MML_ERANGE for a bad index. */
MML_API int mml_optimizer_state(const mml_optimizer *opt, int64_t param_index, const float **m,
                                const float **v);

MML_END_DECLS

#endif
