/**
 * @file
 * @brief LoRA experts (the adapters of MLoRA and MoE-MLoRA).
 *
 * An mml_lora holds E experts for the hidden layers of one DNN tower. Expert
 * i adds, at tower layer l with input x (width d_{l-1}) and output width d_l,
 *
 *     x A_{l,i} B_{l,i} + c_{l,i}
 *
 * with A: d_{l-1} x r_l (glorot-uniform with fans d_{l-1} and r_l, from the
 * expert's own random stream), B: r_l x d_l (zeros), c: d_l (zeros), so a
 * fresh expert leaves the tower unchanged. Rank r_l = max(floor(d_l / alpha), 1),
 * capped at min(d_{l-1}, d_l): alpha is a rank divisor, not LoRA's alpha
 * scale; there is no alpha/r scaling of the product.
 *
 * Storage: the experts of a layer are stacked, so a gated batch is mixed with
 * three matrix products whatever the domains of its rows; per-domain routing
 * sorts the rows by domain and multiplies each expert with its own rows only. A is stored
 * transposed (parameter "A_t", r_l x d_{l-1}) so that every expert's A, B and
 * c are contiguous parameters: expert i's parameters are
 * `mml_lora_param(lora, (i * n_layers + l) * 3 + {0: A_t, 1: B, 2: c})`,
 * named `expert.<i>.<l>.A_t`, `.B`, `.c` (group MML_GROUP_EXPERT, expert i).
 *
 * How the experts enter a forward pass is chosen per call by an mml_mix:
 * - MML_MIX_NONE: no adapters (the shared backbone alone);
 * - MML_MIX_DOMAIN: each row uses the expert of its domain (MLoRA, E = D);
 * - MML_MIX_GATED: each row mixes all experts with its own weights (MoE-MLoRA);
 * - MML_MIX_SINGLE: every row uses expert `expert` alone (stage 2 training).
 *
 * Thread safety: one thread at a time per context and the objects made from it.
 */
#ifndef MOEMLORA_LORA_H
#define MOEMLORA_LORA_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

/** The E experts of one DNN tower (opaque). */
typedef struct mml_lora mml_lora;

/** How the experts enter a forward pass (mml_mix::mode). */
typedef enum mml_mix_mode {
    /** No adapters: the shared backbone alone. */
    MML_MIX_NONE = 0,
    /** Each row uses the expert of its domain (MLoRA): mml_mix::domain. */
    MML_MIX_DOMAIN = 1,
    /** Each row mixes all experts with its own weights (MoE-MLoRA):
     *  mml_mix::weights. */
    MML_MIX_GATED = 2,
    /** Every row uses expert mml_mix::expert alone (stage 2 training). */
    MML_MIX_SINGLE = 3,
    /** Model level only (mml_model_forward()): each row mixes its domain's own
     * experts (i with i mod D = domain) with weight 1/m, m = E / D. */
    MML_MIX_OWN = 4
} mml_mix_mode;

/** A mixture description for a batch (mml_mix_init(), or set by hand). It
 *  and the arrays it points to belong to the caller and are read during the
 *  forward call only. */
typedef struct mml_mix {
    /** Set by mml_mix_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** An mml_mix_mode: MML_MIX_NONE, MML_MIX_DOMAIN, MML_MIX_GATED or
     *  MML_MIX_SINGLE (MML_MIX_OWN is for mml_model_forward() only). */
    int32_t mode;
    /** MML_MIX_SINGLE: the expert, in [0, E). */
    int32_t expert;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** Rows of the batch (must equal the batch's). */
    int64_t n_rows;
    /** MML_MIX_DOMAIN: expert index of each row (its domain), in [0, E). */
    const int32_t *domain;
    /** MML_MIX_GATED: n_rows x n_experts finite weights, row-major. */
    const float *weights;
} mml_mix;

/** What mml_lora_create() builds. Initialise with mml_lora_options_init(). */
typedef struct mml_lora_options {
    /** Set by mml_lora_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** Hidden layers of the tower, 1..64 (no default). */
    int32_t n_layers;
    /** n_layers + 1 widths (each 1..2^20): the tower's input, then each hidden
     *  layer; copied during create. */
    const int32_t *dims;
    /** E, 1..4096; default 1. */
    int32_t n_experts;
    /** Rank divisor ("lora_reduce"), >= 1; default 16: not LoRA's alpha scale
     *  (there is no alpha / r factor); rank = max(floor(width / alpha), 1). */
    int32_t alpha;
    /** Added to each expert's random stream number; default 0. */
    uint64_t stream;
} mml_lora_options;

MML_BEGIN_DECLS

/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_lora_options_init_sized(mml_lora_options *opt, uint32_t struct_size);
/** mml_lora_options_init_sized() with the caller's sizeof, so a newer library
 *  never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_lora_options_init(opt) mml_lora_options_init_sized((opt), (uint32_t)sizeof(mml_lora_options))
/** Creates E experts for a tower of the given widths (A glorot-uniform, B and
 *  c zero). opt is read during the call only; NULL means the defaults, which
 *  leave n_layers and dims unset, so it gives MML_EINVAL. On failure *out is
 *  NULL.
 *  @param out receives the experts, owned by the caller (mml_lora_destroy()).
 *  @param ctx the context; it must outlive the experts.
 *  @param opt the options, or NULL for the defaults.
 *  @return MML_OK; MML_EINVAL for a NULL argument or an invalid option;
 *  MML_EVERSION for a struct_size of opt that no release produced; MML_ENOMEM. */
MML_API int mml_lora_create(mml_lora **out, mml_ctx *ctx, const mml_lora_options *opt);
/** Destroys the experts; NULL is a no-op.
 *  @param lora the experts, or NULL. */
MML_API void mml_lora_destroy(mml_lora *lora);

/** E, the number of experts.
 *  @param lora the experts. @return E; 0 for NULL. */
MML_API int32_t mml_lora_n_experts(const mml_lora *lora);
/** The number of tower layers the experts cover.
 *  @param lora the experts. @return the count; 0 for NULL. */
MML_API int32_t mml_lora_n_layers(const mml_lora *lora);
/** r_l of layer l.
 *  @param lora the experts. @param layer 0 .. n_layers - 1.
 *  @return the rank, or -1 for NULL or a layer out of range. */
MML_API int32_t mml_lora_rank(const mml_lora *lora, int32_t layer);
/** The rank rule on its own: max(floor(d_out / alpha), 1) capped at
 *  min(d_in, d_out); alpha is the rank divisor, not LoRA's alpha scale.
 *  @param d_in the layer's input width. @param d_out its output width.
 *  @param alpha the rank divisor.
 *  @return the rank, or -1 if any argument is below 1. */
MML_API int32_t mml_lora_rank_for(int32_t d_in, int32_t d_out, int32_t alpha);
/** Number of parameters: E * n_layers * 3.
 *  @param lora the experts. @return the count; 0 for NULL. */
MML_API int64_t mml_lora_n_params(const mml_lora *lora);
/** Parameter index, in the order of the file description.
 *  @param lora the experts. @param index 0 .. n_params - 1.
 *  @return a borrowed pointer, valid until the experts are destroyed; NULL
 *  for NULL or an index out of range. */
MML_API mml_param *mml_lora_param(mml_lora *lora, int64_t index);
/** A mixture description in *mix for n rows (convenience; fields can also be
 *  set by hand): mode and n_rows as given, expert 0, domain and weights NULL.
 *  mode is not checked here.
 *  @param mix the struct to fill. @param struct_size the caller's sizeof.
 *  @param mode an MML_MIX_* value. @param n_rows rows of the batch.
 *  @return MML_OK; MML_EINVAL for a NULL mix; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_mix_init_sized(mml_mix *mix, uint32_t struct_size, int32_t mode, int64_t n_rows);
/** mml_mix_init_sized() with the caller's sizeof, so a newer library never
 *  writes past an older application's struct.
 *  @param mix the struct to fill. @param mode an MML_MIX_* value.
 *  @param n_rows rows of the batch. */
#define mml_mix_init(mix, mode, n_rows)                                                          \
    mml_mix_init_sized((mix), (uint32_t)sizeof(mml_mix), (mode), (n_rows))

MML_END_DECLS

#endif
