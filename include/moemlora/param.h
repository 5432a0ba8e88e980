/**
 * @file
 * libmoemlora: parameter groups.
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
 *
 * Sparse rows: an embedding table's parameter (mml_embedding_param(), and so
 * a model's field, multi-hot and first-order tables) records which rows its
 * backward passes wrote since its gradient was last zeroed; every other row
 * of its gradient is zero. mml_params_zero_grad() then clears only those
 * rows, and the sparse optimisers (lazy Adam, Adagrad) update only those, so
 * their cost follows the batch, not the table. The record goes with the
 * gradient buffer, so a copy of the struct finds it too. Code that adds to
 * such a gradient by other means than the library's backward passes is not
 * seen by the record: zeroing and sparse steps skip those rows.
 */
#ifndef MOEMLORA_PARAM_H
#define MOEMLORA_PARAM_H

#include <stdint.h>

#include "export.h"

/** The group a parameter belongs to (the group member of mml_param): what
 *  mml_params_freeze_group() and the trainer's stages select by. */
typedef enum mml_param_group {
    /** Embedding tables and first-order weights. */
    MML_GROUP_EMBEDDING = 0,
    /** The shared network, including the global bias. */
    MML_GROUP_BACKBONE = 1,
    /** LoRA adapters; mml_param.expert says which. */
    MML_GROUP_EXPERT = 2,
    /** The MoE gate. */
    MML_GROUP_GATE = 3
} mml_param_group;

/** One trainable tensor. The struct and everything it points to belong to
 *  the object that enumerates it (mml_X_param()): valid until that object is
 *  destroyed. The caller may change value, grad's contents and frozen. */
typedef struct mml_param {
    /** E.g. "tower.0.W"; owned by the object. */
    const char *name;
    /** rows * cols floats, row-major. */
    float *value;
    /** Same size; gradients accumulate (+=) into it. */
    float *grad;
    /** Number of rows (>= 1). */
    int64_t rows;
    /** Number of columns (>= 1). */
    int64_t cols;
    /** MML_GROUP_* */
    int32_t group;
    /** Expert index for MML_GROUP_EXPERT, otherwise -1. */
    int32_t expert;
    /** Nonzero: optimisers leave value and state alone. */
    int32_t frozen;
    /** Fills the struct to a multiple of 8 bytes. 0 in a parameter you
     *  make; the library's own parameters may hold a private value here
     *  (their gradient records its rows): leave it as it is. */
    int32_t reserved;
} mml_param;

MML_BEGIN_DECLS

/** Number of values of p (rows * cols); 0 for NULL.
 *  @param p the parameter, or NULL.
 *  @return rows * cols; 0 for a NULL p. */
MML_API int64_t mml_param_size(const mml_param *p);
/** Sets every gradient of the n parameters to zero (NULL entries are skipped).
 *  For a parameter that records its rows (an embedding table's), only the
 *  rows written since the last zeroing are cleared (the rest are zero
 *  already), and the record is emptied: the cost follows the batches, not
 *  the table.
 *  @param params an array of n parameter pointers, borrowed for the call;
 *         NULL does nothing.
 *  @param n the number of entries; n < 1 does nothing. */
MML_API void mml_params_zero_grad(mml_param *const *params, int64_t n);
/** Sets the frozen flag of every parameter in group (and, for experts, with
 *  the given expert index; -1 = all experts). Returns how many matched.
 *  @param params an array of n parameter pointers, borrowed for the call;
 *         NULL entries are skipped.
 *  @param n the number of entries.
 *  @param group an MML_GROUP_* value.
 *  @param expert for MML_GROUP_EXPERT, the expert index or -1 for all;
 *         ignored for the other groups.
 *  @param frozen the value stored in each matching frozen member (nonzero
 *         freezes, 0 unfreezes).
 *  @return the number of parameters changed; 0 for a NULL params or n < 1. */
MML_API int64_t mml_params_freeze_group(mml_param *const *params, int64_t n, int32_t group,
                                        int32_t expert, int32_t frozen);

MML_END_DECLS

#endif
