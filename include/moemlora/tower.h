/**
 * @file
 * @brief The DNN tower with adapters.
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
 * The tower keeps the activations of its last forward pass (training or not)
 * in its own scratch buffers for the backward pass. The output pointer of a
 * forward pass stays valid until the next forward pass.
 *
 * Thread safety: one thread at a time per context and the objects made from it.
 */
#ifndef MOEMLORA_TOWER_H
#define MOEMLORA_TOWER_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "lora.h"
#include "param.h"

/** A DNN tower (opaque): hidden layers W_l, b_l with ReLU and dropout. */
typedef struct mml_tower mml_tower;

/** What mml_tower_create() builds. Initialise with mml_tower_options_init(). */
typedef struct mml_tower_options {
    /** Set by mml_tower_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** Input width, 1..2^20 (no default). */
    int32_t d_in;
    /** Hidden layers, 1..64; default 3. */
    int32_t n_layers;
    /** Dropout of the shared path, in [0, 1); default 0.5. */
    float dropout;
    /** n_layers widths (each 1..2^20), copied during create; default (NULL)
     *  256, 128, 64, which needs n_layers = 3. */
    const int32_t *hidden;
    /** Random stream for init and dropout; default 0. */
    uint64_t stream;
    /** Parameter name prefix: layer l's parameters are named name.l.W and
     *  name.l.b; default "tower" (also for NULL); copied during create. */
    const char *name;
} mml_tower_options;

MML_BEGIN_DECLS

/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_tower_options_init_sized(mml_tower_options *opt, uint32_t struct_size);
/** mml_tower_options_init_sized() with the caller's sizeof, so a newer library
 *  never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_tower_options_init(opt) mml_tower_options_init_sized((opt), (uint32_t)sizeof(mml_tower_options))
/** Creates a tower (W_l glorot-uniform, b_l zero). opt is read during the
 *  call only; NULL means the defaults, which leave d_in unset, so it gives
 *  MML_EINVAL. On failure *out is NULL.
 *  @param out receives the tower, owned by the caller (mml_tower_destroy()).
 *  @param ctx the context; it must outlive the tower.
 *  @param opt the options, or NULL for the defaults.
 *  @return MML_OK; MML_EINVAL for a NULL argument or an invalid option;
 *  MML_EVERSION for a struct_size of opt that no release produced; MML_ENOMEM. */
MML_API int mml_tower_create(mml_tower **out, mml_ctx *ctx, const mml_tower_options *opt);
/** Destroys the tower; NULL is a no-op.
 *  @param tower the tower, or NULL. */
MML_API void mml_tower_destroy(mml_tower *tower);

/** One forward pass. x: n x d_in, row-major (copied). *out receives n x d_out
 * (the last hidden width), owned by the tower until its next forward pass;
 * on failure *out is left unchanged. lora and mix may be NULL (no adapters);
 * both are read during the call, and lora must be passed again to backward.
 * @param tower the tower. @param x the input. @param n rows, >= 1.
 * @param lora experts built for the tower's widths, or NULL.
 * @param mix how they enter, or NULL. @param training nonzero: dropout on.
 * @param out receives the borrowed output.
 * @return MML_OK; MML_EINVAL for a NULL argument or an invalid mixture
 * (unknown mode, no domains or weights, a mode other than MML_MIX_NONE
 * without lora); MML_ESHAPE for n < 1, lora of other widths or a mixture of
 * another n_rows; MML_ERANGE for an expert or domain outside [0, E);
 * MML_ENONFINITE for a non-finite input or gate weight; MML_ESTATE when
 * dropout replay meets another batch size; MML_ENOMEM. */
MML_API int mml_tower_forward(mml_tower *tower, const float *x, int64_t n, const mml_lora *lora,
                              const mml_mix *mix, int32_t training, const float **out);
/** Backward of the last forward pass. dout: n x d_out. Accumulates into the
 * gradients of the tower's unfrozen parameters and of lora's unfrozen
 * parameters, into dx (n x d_in, may be NULL) and, for MML_MIX_GATED, into
 * dweights (n x n_experts, may be NULL).
 * @param tower the tower. @param dout gradient of the output.
 * @param dx input gradient (+=), or NULL.
 * @param lora the experts given to the forward pass (NULL if none).
 * @param dweights gate-weight gradient (+=), or NULL.
 * @return MML_OK; MML_EINVAL for a NULL tower or dout, or lora not the
 * forward pass's; MML_ESTATE without a forward pass. */
MML_API int mml_tower_backward(mml_tower *tower, const float *dout, float *dx, mml_lora *lora,
                               float *dweights);

/** Training forward passes reuse the previous pass's dropout masks while set
 * (the batch size must not change): finite-difference checks need that.
 * @param tower the tower. @param replay nonzero to replay, 0 to draw anew.
 * @return MML_OK; MML_EINVAL for NULL. */
MML_API int mml_tower_set_dropout_replay(mml_tower *tower, int32_t replay);
/** A fingerprint of the ReLU on/off pattern of the last forward pass.
 * @param tower the tower.
 * @return the fingerprint; 0 for NULL or before any forward pass. */
MML_API uint64_t mml_tower_relu_pattern(const mml_tower *tower);

/** The input width.
 *  @param tower the tower. @return d_in; 0 for NULL. */
MML_API int32_t mml_tower_d_in(const mml_tower *tower);
/** The output width (the last hidden width).
 *  @param tower the tower. @return d_out; 0 for NULL. */
MML_API int32_t mml_tower_d_out(const mml_tower *tower);
/** The number of hidden layers.
 *  @param tower the tower. @return the count; 0 for NULL. */
MML_API int32_t mml_tower_n_layers(const mml_tower *tower);
/** Width of hidden layer l.
 *  @param tower the tower. @param layer 0 .. n_layers - 1.
 *  @return the width, or -1 for NULL or a layer out of range. */
MML_API int32_t mml_tower_width(const mml_tower *tower, int32_t layer);
/** Number of parameters: W_0, b_0, W_1, b_1, ... (2 per layer, all
 *  MML_GROUP_BACKBONE; W_l is d_{l-1} x d_l, b_l is 1 x d_l).
 *  @param tower the tower. @return the count; 0 for NULL. */
MML_API int64_t mml_tower_n_params(const mml_tower *tower);
/** Parameter index, in the order W_0, b_0, W_1, b_1, ...
 *  @param tower the tower. @param index 0 .. n_params - 1.
 *  @return a borrowed pointer, valid until the tower is destroyed; NULL for
 *  NULL or an index out of range. */
MML_API mml_param *mml_tower_param(mml_tower *tower, int64_t index);

MML_END_DECLS

#endif
