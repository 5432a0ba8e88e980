/* libmoemlora: parameter groups.
 *
 * Every trainable tensor of every object is an mml_param: a contiguous
 * row-major block of values, a gradient block of the same size, a group tag
 * and a frozen flag. Objects enumerate their parameters
 * (mml_X_n_params / mml_X_param), so optimisers, checkpoints and the
 * gradient checker work on any of them, the user's own backbones included.
 *
 * Gradients accumulate (+=): backward passes add to grad, and whoever drives
 * training zeroes them (mml_params_zero_grad). A frozen parameter still
 * receives gradients if asked, but optimisers neither update it nor touch
 * its optimiser state.
 */
#ifndef MOEMLORA_PARAM_H
#define MOEMLORA_PARAM_H

#include <stdint.h>

#include "export.h"

typedef enum mml_param_group {
    MML_GROUP_EMBEDDING = 0, /* embedding tables and first-order weights */
    MML_GROUP_BACKBONE = 1,  /* the shared network, including the global bias */
    MML_GROUP_EXPERT = 2,    /* LoRA adapters; mml_param.expert says which */
    MML_GROUP_GATE = 3       /* the MoE gate */
} mml_param_group;

typedef struct mml_param {
    const char *name;   /* e.g. "tower.0.W"; owned by the object */
    float *value;       /* rows * cols floats, row-major */
    float *grad;        /* same size */
    int64_t rows;
    int64_t cols;
    int32_t group;      /* MML_GROUP_* */
    int32_t expert;     /* expert index for MML_GROUP_EXPERT, otherwise -1 */
    int32_t frozen;     /* nonzero: optimisers leave value and state alone */
    int32_t reserved;
} mml_param;

MML_BEGIN_DECLS

/* Number of values of p (rows * cols); 0 for NULL. */
MML_API int64_t mml_param_size(const mml_param *p);
/* Sets every gradient of the n parameters to zero (NULL entries are skipped). */
MML_API void mml_params_zero_grad(mml_param *const *params, int64_t n);
/* Sets the frozen flag of every parameter in group (and, for experts, with
 * the given expert index; -1 = all experts). Returns how many matched. */
MML_API int64_t mml_params_freeze_group(mml_param *const *params, int64_t n, int32_t group,
                                        int32_t expert, int32_t frozen);

MML_END_DECLS

#endif
