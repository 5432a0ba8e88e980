/* Private helpers shared by the built-in backbones. */
#ifndef MML_BACKBONES_H
#define MML_BACKBONES_H

#include "core/internal.h"
#include "moemlora/backbone.h"
#include "moemlora/tower.h"

/* The DNN tower of a backbone with its adapters (lora is NULL when E = 0). */
typedef struct mml__dnn {
    mml_tower *tower;
    mml_lora *lora;
} mml__dnn;

int mml__dnn_create(mml__dnn *dnn, mml_ctx *ctx, const mml_backbone_config *cfg, int32_t d_in);
void mml__dnn_destroy(mml__dnn *dnn);
int mml__dnn_forward(mml__dnn *dnn, const float *x, int64_t n, const mml_backbone_input *in,
                     const float **out);
/* dx may be NULL. */
int mml__dnn_backward(mml__dnn *dnn, const float *dout, float *dx, const mml_backbone_grads *g);
int64_t mml__dnn_n_params(const mml__dnn *dnn);
mml_param *mml__dnn_param(mml__dnn *dnn, int64_t index);
int32_t mml__dnn_d_out(const mml__dnn *dnn);
/* Parameter i of a backbone whose parameters are its tower's (experts
 * included) followed by n_side of its own; NULL outside the range. */
mml_param *mml__dnn_then_side_param(mml__dnn *dnn, mml_param *side, int64_t n_side, int64_t i);

/* Backward through logit = tower(x) . head for the n rows of the last
 * forward pass (h: the tower's output): dh = dlogit head^T into *dh, the
 * head's gradient unless frozen, then the tower with its adapters. When
 * need_dx, *dx_out is the tower's input gradient (n x width, zeroed before
 * the tower adds to it, kept in *dx); otherwise NULL. */
int mml__dnn_head_backward(mml_ctx *ctx, mml__dnn *dnn, mml_param *head, const float *h, int64_t n,
                           const float *dlogit, const mml_backbone_grads *g, int need_dx,
                           int64_t width, float **dh, size_t *cap_dh, float **dx, size_t *cap_dx,
                           float **dx_out);

/* Common checks of a backbone configuration. */
int mml__check_backbone_config(mml_ctx *ctx, const mml_backbone_config *cfg, const char *name);
/* Parameter count of a tower of cfg's widths on d_in inputs, with its adapters. */
int64_t mml__dnn_param_count(const mml_backbone_config *cfg, int32_t d_in);

/* A bias-free linear head: a (rows x 1) parameter, glorot-uniform. */
int mml__head_init(mml_ctx *ctx, mml_param *p, const char *name, int64_t rows, uint64_t stream);
void mml__head_free(mml_ctx *ctx, mml_param *p);

extern const mml_backbone_vtable mml__backbone_mlp;
extern const mml_backbone_vtable mml__backbone_wdl;
extern const mml_backbone_vtable mml__backbone_deepfm;
extern const mml_backbone_vtable mml__backbone_nfm;
extern const mml_backbone_vtable mml__backbone_pnn;
extern const mml_backbone_vtable mml__backbone_dcn;
extern const mml_backbone_vtable mml__backbone_autoint;
extern const mml_backbone_vtable mml__backbone_xdeepfm;
extern const mml_backbone_vtable mml__backbone_fibinet;

/* Side parts of the built-in backbones (backbone_side.c). */

/* A backbone parameter of rows x cols (MML_GROUP_BACKBONE, zero gradient).
 * fan_in > 0: every value glorot-uniform with limit sqrt(6 / (fan_in + fan_out))
 * (a stack of equally shaped matrices takes one matrix's fans), drawn from
 * stream MML_STREAM_BACKBONE + stream; fan_in == 0: zeros. */
int mml__side_param_init(mml_ctx *ctx, mml_param *p, const char *name, int64_t rows, int64_t cols,
                         int64_t fan_in, int64_t fan_out, uint64_t stream);
void mml__side_param_free(mml_ctx *ctx, mml_param *p);
/* Folds the on/off bits (v[i] > 0) of n values into the fingerprint h. */
uint64_t mml__pattern_fold(uint64_t h, const float *v, int64_t n);
/* Whether any of the n parameters is unfrozen. */
int mml__any_unfrozen(const mml_param *p, int64_t n);

#endif
