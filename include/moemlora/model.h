/**
 * @file
 * @brief The model.
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
 * (named `multihot<m>`, dimension embed_dim, same init, stream F + m); a
 * row's list of ids is pooled (multihot_pooling: MML_POOL_MEAN, the default,
 * or MML_POOL_SUM; an empty list gives a zero vector, a repeated id counts
 * each time) and the M pooled vectors are appended after the F categorical
 * embeddings, so the backbone sees F + M fields (an n x ((F + M) k) input;
 * its config's n_fields is F + M). Backward sends each pooled vector's
 * gradient to every id of the row's list. The first-order linear term has
 * no weights for multi-hot fields. A batch whose n_multihot differs from M
 * is MML_ESHAPE; an id outside a table is MML_ERANGE naming `multihot<m>`.
 *
 * Parameter order (mml_model_param()): the F embedding tables (`field<f>`);
 * the M multi-hot tables; then, with a linear term, the F first-order tables
 * (`field<f>.linear`) and the numeric weights (`numeric.linear`, when
 * n_dense > 0); the global bias (`bias`); the backbone's parameters (tower,
 * experts, side parts, head); the gate's. Each carries its group
 * (MML_GROUP_*) for freezing.
 *
 * The model keeps the activations of its last forward pass for the backward
 * pass. Thread safety: one thread at a time per context and the objects made
 * from it (the model included). A read-only model (mml_model_make_readonly())
 * can serve any number of threads at once through their own sessions
 * (session.h).
 *
 * Products with at most 8 rows skip BLIS (plain loops, faster there), so a
 * row's probability may differ in the last bits between batch sizes; the
 * same batch always gives the same bits.
 */
#ifndef MOEMLORA_MODEL_H
#define MOEMLORA_MODEL_H

#include <stdint.h>

#include "backbone.h"
#include "ctx.h"
#include "data.h"
#include "export.h"
#include "gate.h"
#include "lora.h"
#include "param.h"
#include "view.h"

/** A model (opaque): embedding tables, backbone, gate, linear term, bias. */
typedef struct mml_model mml_model;

/** What mml_model_create() builds. Initialise with mml_model_options_init();
 *  n_fields, field_sizes and n_domains have no usable default. The struct and
 *  every array it points to are read during mml_model_create() only. */
typedef struct mml_model_options {
    /** Set by mml_model_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** F categorical fields, 1..4096. */
    int32_t n_fields;
    /** Backbone type name (built-in or registered on the context); default
     *  "mlp"; copied. */
    const char *backbone;
    /** The backbone's own options (backbones.h), or NULL for its defaults;
     *  read during create. */
    const void *backbone_options;
    /** F vocabulary sizes, each 1..INT32_MAX; read during create. */
    const int64_t *field_sizes;
    /** Embedding width k; default 8. */
    int32_t embed_dim;
    /** Standard deviation of the embeddings' normal init; default 0.01. */
    float embed_std;
    /** Numeric values per row, >= 0; default 0. */
    int32_t n_dense;
    /** D domains, >= 1. */
    int32_t n_domains;
    /** 0 (shared model), D (MLoRA) or m * D (MoE-MLoRA); default 0. */
    int32_t n_experts;
    /** Nonzero: an MoE gate over the experts (needs n_experts >= 1); default 0. */
    int32_t gate;
    /** Width of the gate's domain embedding; default 4. */
    int32_t gate_dim;
    /** LoRA rank divisor: rank = max(floor(width / alpha), 1), >= 1 (not LoRA's
     *  alpha scale: no alpha / r factor); default 16. */
    int32_t alpha;
    /** DNN tower depth; default 3. */
    int32_t n_hidden;
    /** DNN tower dropout, in [0, 1); default 0.5. */
    float dropout;
    /** n_hidden tower widths; default 256, 128, 64 (a static array); read
     *  during create. */
    const int32_t *hidden;
    /** The gate's top_k (mml_gate_options::top_k); 0 (default) = dense. */
    int32_t gate_top_k;
    /** >= 0, finite; default 0: see mml_model_regularization(). */
    float l2_embedding;
    /** >= 0, finite; default 0: see mml_model_regularization(). */
    float l2_dense;
    /** Multi-hot fields M >= 0, F + M <= 4096; default 0. */
    int32_t n_multihot;
    /** M vocabulary sizes, each 1..INT32_MAX (may be NULL when M is 0); read
     *  during create. */
    const int64_t *multihot_sizes;
    /** MML_POOL_MEAN (default) or MML_POOL_SUM. */
    int32_t multihot_pooling;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** Since 1.3, with gate: nonzero gives the gate a D x E table of
     *  per-domain logits (mml_gate_options.domain_bias); default 0. */
    int32_t gate_domain_bias;
    /** Since 1.3: the table's start on each domain's own experts
     *  (mml_gate_options.prior); finite, >= 0; default 0. */
    float gate_prior;
    /** Since 1.3, with gate: what the gate sees besides the domain.
     *  MML_GATE_INPUT_DOMAIN (0, default): nothing; MML_GATE_INPUT_EMBEDDINGS:
     *  the row's concatenated field embeddings ((F + M) k values; numeric
     *  values are not included), as a constant (no gradient flows from the
     *  gate into the embeddings); MML_GATE_INPUT_EMBEDDINGS_GRAD: the same
     *  with the gradient. Needs a dense gate (gate_top_k 0). */
    int32_t gate_input;
    /** Since 1.3: 0; reserved for later releases. */
    int32_t reserved1;
} mml_model_options;

/** Values of mml_model_options.gate_input (since 1.3). */
typedef enum mml_gate_input {
    /** The gate sees the domain only (the paper's gate). */
    MML_GATE_INPUT_DOMAIN = 0,
    /** Also the row's field embeddings, with the gradient stopped there. */
    MML_GATE_INPUT_EMBEDDINGS = 1,
    /** Also the row's field embeddings, the gradient flowing into them. */
    MML_GATE_INPUT_EMBEDDINGS_GRAD = 2
} mml_gate_input;

MML_BEGIN_DECLS

/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_model_options_init_sized(mml_model_options *opt, uint32_t struct_size);
/** mml_model_options_init_sized() with the caller's sizeof, so a newer library
 *  never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_model_options_init(opt) mml_model_options_init_sized((opt), (uint32_t)sizeof(mml_model_options))
/** Creates a model. opt is read during the call only; NULL means the
 *  defaults, which leave n_fields, field_sizes and n_domains unset, so it
 *  gives MML_EINVAL. On failure *out is NULL.
 *  @param out receives the model, owned by the caller (mml_model_destroy()).
 *  @param ctx the context; it must outlive the model.
 *  @param opt the options, or NULL for the defaults.
 *  @return MML_OK; MML_EINVAL for a NULL argument or an invalid option;
 *  MML_EVERSION for a struct_size of opt or of backbone_options that no
 *  release produced; MML_ENOTFOUND for an unknown backbone; MML_ENOMEM;
 *  MML_ECALLBACK when a user backbone's callback fails. */
MML_API int mml_model_create(mml_model **out, mml_ctx *ctx, const mml_model_options *opt);
/** Destroys the model and everything it owns (backbone, experts, gate,
 *  tables); NULL is a no-op.
 *  @param model the model, or NULL. */
MML_API void mml_model_destroy(mml_model *model);

/** Logits of the batch's rows into logits (n_rows floats). mix_mode is an
 * MML_MIX_* value; expert is used by MML_MIX_SINGLE; MML_MIX_GATED needs the gate
 * and MML_MIX_DOMAIN needs n_experts >= D (it uses experts 0 .. D - 1). The
 * batch is read during the call only (its labels and weights are ignored).
 * On failure logits may be partly written.
 * @param model the model. @param batch the rows.
 * @param mix_mode how the adapters enter. @param expert for MML_MIX_SINGLE.
 * @param training nonzero: dropout on. @param logits n_rows floats.
 * @return MML_OK; MML_EINVAL for a NULL argument, a batch without ids,
 * domains, numeric or multi-hot arrays, or an unknown mix_mode; MML_EVERSION
 * for a batch struct_size that no release produced; MML_ESHAPE for a batch
 * that does not fit the model; MML_ERANGE for a domain, id or expert out of
 * range; MML_ENONFINITE for a non-finite numeric value or logit; MML_ESTATE
 * for a mix_mode the model cannot serve (adapters without experts, gated
 * without a gate, per-domain with n_experts < D, MML_MIX_OWN with n_experts
 * not a multiple of D); MML_ENOMEM; MML_ECALLBACK from a user backbone. */
MML_API int mml_model_forward(mml_model *model, const mml_batch_view *batch, int32_t mix_mode,
                              int32_t expert, int32_t training, float *logits);
/** Backward of the last forward pass. Accumulates (+=) into the gradients of
 * every unfrozen parameter that took part.
 * @param model the model. @param dlogits n_rows gradients of the logits.
 * @return MML_OK; MML_EINVAL for a NULL argument; MML_ESTATE without a
 * successful forward pass; MML_ENOMEM; MML_ECALLBACK from a user backbone. */
MML_API int mml_model_backward(mml_model *model, const float *dlogits);
/** Inference: probabilities (sigmoid of the logits), dropout off; a forward
 * pass with training 0 (so it replaces the state kept for backward).
 * @param model the model. @param batch the rows.
 * @param mix_mode as for mml_model_forward(). @param expert for MML_MIX_SINGLE.
 * @param probabilities n_rows floats.
 * @return the codes of mml_model_forward(). */
MML_API int mml_model_predict(mml_model *model, const mml_batch_view *batch, int32_t mix_mode,
                              int32_t expert, float *probabilities);

/** Optional L2 regularisation of the last forward pass (default off):
 *
 *     penalty = l2_embedding * sum_f sum_{distinct rows i of table f used by the batch} |E_f[i]|^2
 *             + l2_dense * sum_{backbone matrices W} |W|^2
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
 * gradients of the unfrozen parameters. Call it after mml_model_backward()
 * and before the optimiser step. With both lambdas 0 it sets 0 and does
 * nothing else.
 * @param model the model.
 * @param penalty receives the penalty (0 on failure), or NULL.
 * @return MML_OK; MML_EINVAL for a NULL model; MML_ESTATE without a
 * successful forward pass; MML_ENOMEM. */
MML_API int mml_model_regularization(mml_model *model, double *penalty);

/** Makes the model read-only, for serving (irreversible): frees the gradient
 * buffers of every built-in part (embedding and first-order tables, numeric
 * weights, tower, LoRA experts, gate, the built-in backbones' side
 * parameters) and the backward scratch. A registered user backbone keeps
 * its own buffers. Afterwards the `grad` of those parameters is NULL (the
 * optimiser and the gradient checker refuse them, mml_params_zero_grad()
 * skips them); mml_model_forward() with training != 0,
 * mml_model_backward() and mml_model_regularization() give MML_ESTATE;
 * mml_model_predict() still works (one thread at a time, like every call on
 * the model). Sessions (session.h) need a read-only model. Calling it again
 * does nothing.
 * @param model the model.
 * @return MML_OK; MML_EINVAL for NULL; MML_ENOMEM (the model is left as it
 * was). */
MML_API int mml_model_make_readonly(mml_model *model);
/** Whether mml_model_make_readonly() was called.
 *  @param model the model. @return 1 or 0; 0 for NULL. */
MML_API int32_t mml_model_is_readonly(const mml_model *model);
/** The mixture mode (MML_MIX_*) of the model's final prediction: what a
 *  session uses by default. A new model has MML_MIX_GATED with a gate,
 *  MML_MIX_DOMAIN with n_experts >= D, MML_MIX_NONE otherwise.
 *  @param model the model. @return the mode; MML_MIX_NONE for NULL. */
MML_API int32_t mml_model_mix_mode(const mml_model *model);
/** Sets the mixture mode of the model's final prediction (read by sessions
 *  when they are created).
 *  @param model the model. @param mode MML_MIX_NONE, MML_MIX_DOMAIN,
 *  MML_MIX_GATED or MML_MIX_OWN.
 *  @return MML_OK; MML_EINVAL for NULL, an unknown mode or MML_MIX_SINGLE
 *  (one expert is no final mixture); MML_ESTATE for a mode the model cannot
 *  serve (as mml_model_forward()). */
MML_API int mml_model_set_mix_mode(mml_model *model, int32_t mode);

/** Number of parameters (see the order in the file description).
 *  @param model the model. @return the count; 0 for NULL. */
MML_API int64_t mml_model_n_params(const mml_model *model);
/** Parameter index, in the order of the file description.
 *  @param model the model. @param index 0 .. n_params - 1.
 *  @return a borrowed pointer, valid until the model is destroyed; NULL for a
 *  NULL model or an index out of range. */
MML_API mml_param *mml_model_param(mml_model *model, int64_t index);
/** The model's backbone.
 *  @param model the model.
 *  @return a borrowed pointer, owned by the model and valid until it is
 *  destroyed (do not destroy it); NULL for NULL. */
MML_API mml_backbone *mml_model_backbone(mml_model *model);
/** The experts of the backbone's tower.
 *  @param model the model.
 *  @return a borrowed pointer, owned by the model and valid until it is
 *  destroyed; NULL for NULL or a model without experts. */
MML_API mml_lora *mml_model_experts(mml_model *model);
/** The MoE gate.
 *  @param model the model.
 *  @return a borrowed pointer, owned by the model and valid until it is
 *  destroyed; NULL for NULL or a model without a gate. */
MML_API mml_gate *mml_model_gate(mml_model *model);
/** D, the number of domains.
 *  @param model the model. @return D; 0 for NULL. */
MML_API int32_t mml_model_n_domains(const mml_model *model);
/** E, the number of experts.
 *  @param model the model. @return E; 0 for NULL. */
MML_API int32_t mml_model_n_experts(const mml_model *model);
/** F, the categorical fields (multi-hot fields not counted).
 *  @param model the model. @return F; 0 for NULL. */
MML_API int32_t mml_model_n_fields(const mml_model *model);

/** Keeps a reference to the schema of ds (column names and roles,
 *  vocabularies, hashed fields, domain names: how raw values become this
 *  model's inputs), which mml_model_save() then writes and serving sessions
 *  use to map raw rows (since 1.2). The trainer attaches its training data's
 *  schema itself. The schema is shared with ds's loader call, not copied;
 *  ds may be destroyed afterwards. Replaces a schema attached before.
 *  @param model the model. @param ds a data set whose schema fits the model.
 *  @return MML_OK; MML_EINVAL for a NULL argument; MML_ESHAPE when the
 *  schema's fields, vocabulary sizes, numeric or multi-hot counts or domains
 *  differ from the model's. */
MML_API int mml_model_attach_schema(mml_model *model, const mml_dataset *ds);
/** Whether the model has a schema (attached, or loaded from its file).
 *  @param model the model. @return 1 or 0 (0 for NULL). */
MML_API int32_t mml_model_has_schema(const mml_model *model);

MML_END_DECLS

#endif
