/* libmoemlora: the DNN tower with adapters.
 *
 * Hidden layer l computes, for input x and the row's mixture of experts,
 *
 *     h_l = ReLU( Dropout(x W_l + b_l) + sum_i g_i (x A_{l,i} B_{l,i} + c_{l,i}) )
 *
 * W_l glorot-uniform, b_l zeros. Dropout is inverted dropout (kept units
 * scaled by 1/(1-p)) on the shared path only, before the activation, drawn
 * from the tower's own random stream in training and the identity at
 * inference. The adapters come from an mml_lora built for the same widths and
 * the mixture from an mml_mix (see lora.h); pass NULL for neither.
 *
 * The tower keeps the activations of its last training forward pass in its own
 * scratch buffers for the backward pass. The output pointer of a forward pass
 * stays valid until the next forward pass.
 */
#ifndef MOEMLORA_TOWER_H
#define MOEMLORA_TOWER_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "lora.h"
#include "param.h"

typedef struct mml_tower mml_tower;

typedef struct mml_tower_options {
    uint32_t struct_size;
    int32_t d_in;          /* input width, >= 1 */
    int32_t n_layers;      /* >= 1; default 3 */
    float dropout;         /* in [0, 1); default 0.5 */
    const int32_t *hidden; /* n_layers widths; default (NULL) 256, 128, 64 */
    uint64_t stream;       /* random stream for init and dropout */
    const char *name;      /* parameter name prefix; default "tower" */
} mml_tower_options;

MML_BEGIN_DECLS

MML_API int mml_tower_options_init_sized(mml_tower_options *opt, uint32_t struct_size);
#define mml_tower_options_init(opt) mml_tower_options_init_sized((opt), (uint32_t)sizeof(mml_tower_options))
MML_API int mml_tower_create(mml_tower **out, mml_ctx *ctx, const mml_tower_options *opt);
MML_API void mml_tower_destroy(mml_tower *tower);

/* x: n x d_in, row-major (copied). *out receives n x d_out (the last hidden
 * width), owned by the tower. lora and mix may be NULL (no adapters). */
MML_API int mml_tower_forward(mml_tower *tower, const float *x, int64_t n, const mml_lora *lora,
                              const mml_mix *mix, int32_t training, const float **out);
/* Backward of the last forward pass. dout: n x d_out. Accumulates into the
 * gradients of the tower's unfrozen parameters and of lora's unfrozen
 * parameters, into dx (n x d_in, may be NULL) and, for MML_MIX_GATED, into
 * dweights (n x n_experts, may be NULL). */
MML_API int mml_tower_backward(mml_tower *tower, const float *dout, float *dx, mml_lora *lora,
                               float *dweights);

/* Training forward passes reuse the previous pass's dropout masks while set
 * (the batch size must not change): finite-difference checks need that. */
MML_API int mml_tower_set_dropout_replay(mml_tower *tower, int32_t replay);
/* A fingerprint of the ReLU on/off pattern of the last forward pass. */
MML_API uint64_t mml_tower_relu_pattern(const mml_tower *tower);

MML_API int32_t mml_tower_d_in(const mml_tower *tower);
MML_API int32_t mml_tower_d_out(const mml_tower *tower);
MML_API int32_t mml_tower_n_layers(const mml_tower *tower);
/* Width of hidden layer l, or -1. */
MML_API int32_t mml_tower_width(const mml_tower *tower, int32_t layer);
/* Parameters: W_0, b_0, W_1, b_1, ... */
MML_API int64_t mml_tower_n_params(const mml_tower *tower);
MML_API mml_param *mml_tower_param(mml_tower *tower, int64_t index);

MML_END_DECLS

#endif
