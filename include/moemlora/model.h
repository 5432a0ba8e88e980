/* libmoemlora: the model.
 *
 * A model composes one embedding table per categorical field, a backbone
 * (with its DNN tower and that tower's LoRA experts), the optional MoE gate,
 * the optional first-order linear term and the one global bias:
 *
 *     logit = backbone(embeddings, numeric; adapters mixed as asked)
 *             [+ sum_f w_f[id_f] + sum_j v_j x_j]   (backbones with a linear term)
 *             + bias
 *
 * Multi-hot fields (optional, n_multihot = M >= 0): one more table per field
 * (named "multihot<m>", dimension embed_dim, same init, stream F + m); a
 * row's list of ids is pooled (multihot_pooling: MML_POOL_MEAN, the default,
 * or MML_POOL_SUM; an empty list gives a zero vector, a repeated id counts
 * each time) and the M pooled vectors are appended after the F categorical
 * embeddings, so the backbone sees F + M fields (an n x ((F + M) k) input;
 * its config's n_fields is F + M). Backward sends each pooled vector's
 * gradient to every id of the row's list. The first-order linear term has
 * no weights for multi-hot fields. A batch whose n_multihot differs from M
 * is MML_ESHAPE; an id outside a table is MML_ERANGE naming "multihot<m>".
 *
 * Parameter order (mml_model_param): the F embedding tables; the M multi-hot
 * tables; then, with a
 * linear term, the F first-order tables and the numeric weights; the global
 * bias; the backbone's parameters (tower, experts, side parts, head); the
 * gate's. Each carries its group (MML_GROUP_*) for freezing.
 *
 * The model keeps the activations of its last forward pass for the backward
 * pass; one thread at a time.
 */
#ifndef MOEMLORA_MODEL_H
#define MOEMLORA_MODEL_H

#include <stdint.h>

#include "backbone.h"
#include "ctx.h"
#include "export.h"
#include "gate.h"
#include "lora.h"
#include "param.h"
#include "view.h"

typedef struct mml_model mml_model;

typedef struct mml_model_options {
    uint32_t struct_size;          /* set by mml_model_options_init() */
    int32_t n_fields;              /* F >= 1 */
    const char *backbone;          /* type name; default "mlp"; copied */
    const void *backbone_options;  /* the backbone's own options, or NULL; read during create */
    const int64_t *field_sizes;    /* F vocabulary sizes; read during create */
    int32_t embed_dim;             /* default 8 */
    float embed_std;               /* default 0.01 */
    int32_t n_dense;               /* numeric values per row; default 0 */
    int32_t n_domains;             /* D >= 1 */
    int32_t n_experts;             /* 0 (shared model), D (MLoRA) or m * D (MoE-MLoRA) */
    int32_t gate;                  /* nonzero: an MoE gate over the experts */
    int32_t gate_dim;              /* default 4 */
    int32_t alpha;                 /* LoRA rank divisor: rank = max(floor(width / alpha), 1)
                                      (not LoRA's alpha scale: no alpha / r factor); default 16 */
    int32_t n_hidden;              /* default 3 */
    float dropout;                 /* default 0.5 */
    const int32_t *hidden;         /* default 256, 128, 64; read during create */
    int32_t gate_top_k;            /* the gate's top_k (mml_gate_options); 0 (default) = dense */
    float l2_embedding;            /* >= 0, finite; default 0: see mml_model_regularization */
    float l2_dense;                /* >= 0, finite; default 0: see mml_model_regularization */
    int32_t n_multihot;            /* multi-hot fields M >= 0, F + M <= 4096; default 0 */
    const int64_t *multihot_sizes; /* M vocabulary sizes (may be NULL when M is 0) */
    int32_t multihot_pooling;      /* MML_POOL_MEAN (default) or MML_POOL_SUM */
    int32_t reserved;              /* 0 */
} mml_model_options;

MML_BEGIN_DECLS

MML_API int mml_model_options_init_sized(mml_model_options *opt, uint32_t struct_size);
#define mml_model_options_init(opt) mml_model_options_init_sized((opt), (uint32_t)sizeof(mml_model_options))
MML_API int mml_model_create(mml_model **out, mml_ctx *ctx, const mml_model_options *opt);
MML_API void mml_model_destroy(mml_model *model);

/* Logits of the batch's rows into logits (n_rows floats). mix_mode is an
 * MML_MIX_* value; expert is used by MML_MIX_SINGLE; MML_MIX_GATED needs the gate
 * and MML_MIX_DOMAIN needs n_experts >= D. */
MML_API int mml_model_forward(mml_model *model, const mml_batch_view *batch, int32_t mix_mode,
                              int32_t expert, int32_t training, float *logits);
/* Backward of the last forward pass: dlogits (n_rows). Accumulates into the
 * gradients of every unfrozen parameter that took part. */
MML_API int mml_model_backward(mml_model *model, const float *dlogits);
/* Inference: probabilities (sigmoid of the logits), dropout off. */
MML_API int mml_model_predict(mml_model *model, const mml_batch_view *batch, int32_t mix_mode,
                              int32_t expert, float *probabilities);

/* Optional L2 regularisation of the last forward pass (default off):
 *
 *   penalty = l2_embedding * sum_f sum_{distinct rows i of table f used by the batch} |E_f[i]|^2
 *           + l2_dense * sum_{backbone matrices W} |W|^2
 *
 * The first sum runs over the F embedding tables and the M multi-hot tables
 * (not the first-order weights); a row used by several rows of the batch (or
 * several times in one list) counts once. The second
 * runs over the parameters of group MML_GROUP_BACKBONE with more than one
 * row (the weight matrices; biases, which are 1 x n, and the global bias are
 * excluded; experts and the gate are not backbone parameters). The penalty
 * is added to the batch-mean loss by the caller (the trainer does this when
 * either lambda is > 0 and reports the sum as its training loss; validation
 * log loss stays the pure BCE). *penalty (may be NULL) receives the value,
 * accumulated in double over all parameters, frozen or not; the gradient
 * (2 lambda E_f[i] for each distinct row, once; 2 lambda W) is ADDED to the
 * gradients of the unfrozen parameters. Call it after mml_model_backward
 * and before the optimiser step. With both lambdas 0 it sets 0 and does
 * nothing else. MML_ESTATE without a successful forward pass. */
MML_API int mml_model_regularization(mml_model *model, double *penalty);

MML_API int64_t mml_model_n_params(const mml_model *model);
MML_API mml_param *mml_model_param(mml_model *model, int64_t index);
MML_API mml_backbone *mml_model_backbone(mml_model *model);
MML_API mml_lora *mml_model_experts(mml_model *model);
MML_API mml_gate *mml_model_gate(mml_model *model);
MML_API int32_t mml_model_n_domains(const mml_model *model);
MML_API int32_t mml_model_n_experts(const mml_model *model);
/* F, the categorical fields (multi-hot fields not counted). */
MML_API int32_t mml_model_n_fields(const mml_model *model);

MML_END_DECLS

#endif
