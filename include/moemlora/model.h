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
 * Parameter order (mml_model_param): the F embedding tables; then, with a
 * linear term, the F first-order tables and the numeric weights; the global
 * bias; the backbone's parameters (tower, experts, head, side parts); the
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
    uint32_t struct_size;
    const char *backbone;         /* type name; default "mlp" */
    const void *backbone_options; /* the backbone's own options, or NULL */
    int32_t n_fields;             /* F >= 1 */
    const int64_t *field_sizes;   /* F vocabulary sizes */
    int32_t embed_dim;            /* default 8 */
    float embed_std;              /* default 0.01 */
    int32_t n_dense;              /* numeric values per row; default 0 */
    int32_t n_domains;            /* D >= 1 */
    int32_t n_experts;            /* 0 (shared model), D (MLoRA) or m * D (MoE-MLoRA) */
    int32_t gate;                 /* nonzero: an MoE gate over the experts */
    int32_t gate_dim;             /* default 4 */
    int32_t alpha;                /* default 16 */
    int32_t n_hidden;             /* default 3 */
    const int32_t *hidden;        /* default 256, 128, 64 */
    float dropout;                /* default 0.5 */
} mml_model_options;

MML_BEGIN_DECLS

MML_API void mml_model_options_init(mml_model_options *opt);
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

MML_API int64_t mml_model_n_params(const mml_model *model);
MML_API mml_param *mml_model_param(mml_model *model, int64_t index);
MML_API mml_backbone *mml_model_backbone(mml_model *model);
MML_API mml_lora *mml_model_experts(mml_model *model);
MML_API mml_gate *mml_model_gate(mml_model *model);
MML_API int32_t mml_model_n_domains(const mml_model *model);
MML_API int32_t mml_model_n_experts(const mml_model *model);
MML_API int32_t mml_model_n_fields(const mml_model *model);
/* For finite-difference checks: reuse dropout masks; fingerprint of kinks taken. */
MML_API int mml_model_set_dropout_replay(mml_model *model, int32_t replay);
MML_API uint64_t mml_model_kink_pattern(mml_model *model);

MML_END_DECLS

#endif
