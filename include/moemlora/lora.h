/* libmoemlora: LoRA experts (the adapters of MLoRA and MoE-MLoRA).
 *
 * An mml_lora holds E experts for the hidden layers of one DNN tower. Expert
 * i adds, at tower layer l with input x (width d_{l-1}) and output width d_l,
 *
 *     x A_{l,i} B_{l,i} + c_{l,i}
 *
 * with A: d_{l-1} x r_l (glorot-uniform with fans d_{l-1} and r_l, from the
 * expert's own random stream), B: r_l x d_l (zeros), c: d_l (zeros), so a
 * fresh expert leaves the tower unchanged. Rank r_l = max(floor(d_l / alpha), 1),
 * capped at min(d_{l-1}, d_l). There is no alpha/r scaling of the product.
 *
 * Storage: the experts of a layer are stacked, so a gated batch is mixed with
 * three matrix products whatever the domains of its rows; per-domain routing
 * sorts the rows by domain and multiplies each expert with its own rows only. A is stored
 * transposed (parameter "A_t", r_l x d_{l-1}) so that every expert's A, B and
 * c are contiguous parameters: expert i's parameters are
 * mml_lora_param(lora, (i * n_layers + l) * 3 + {0: A_t, 1: B, 2: c}).
 *
 * How the experts enter a forward pass is chosen per call by an mml_mix:
 *   MML_MIX_NONE    no adapters (the shared backbone alone);
 *   MML_MIX_DOMAIN  each row uses the expert of its domain (MLoRA, E = D);
 *   MML_MIX_GATED   each row mixes all experts with its own weights (MoE-MLoRA);
 *   MML_MIX_SINGLE  every row uses expert `expert` alone (stage 2 training).
 */
#ifndef MOEMLORA_LORA_H
#define MOEMLORA_LORA_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

typedef struct mml_lora mml_lora;

typedef enum mml_mix_mode {
    MML_MIX_NONE = 0,
    MML_MIX_DOMAIN = 1,
    MML_MIX_GATED = 2,
    MML_MIX_SINGLE = 3,
    /* Model level only (mml_model_forward): each row mixes its domain's own
     * experts (i with i mod D = domain) with weight 1/m, m = E / D. */
    MML_MIX_OWN = 4
} mml_mix_mode;

typedef struct mml_mix {
    uint32_t struct_size;  /* set by mml_mix_init() */
    int32_t mode;          /* MML_MIX_* */
    int32_t expert;        /* MML_MIX_SINGLE: the expert */
    int32_t reserved;      /* 0 */
    int64_t n_rows;        /* rows of the batch */
    const int32_t *domain; /* MML_MIX_DOMAIN: expert index of each row (its domain) */
    const float *weights;  /* MML_MIX_GATED: n_rows x n_experts, row-major */
} mml_mix;

typedef struct mml_lora_options {
    uint32_t struct_size;
    int32_t n_layers;    /* hidden layers of the tower, >= 1 */
    const int32_t *dims; /* n_layers + 1 widths: the tower's input, then each hidden layer */
    int32_t n_experts;   /* >= 1 */
    int32_t alpha;       /* rank divisor ("lora_reduce"), >= 1; default 16: not LoRA's
                            alpha scale (there is no alpha / r factor) */
    uint64_t stream;     /* added to each expert's random stream number */
} mml_lora_options;

MML_BEGIN_DECLS

MML_API int mml_lora_options_init_sized(mml_lora_options *opt, uint32_t struct_size);
#define mml_lora_options_init(opt) mml_lora_options_init_sized((opt), (uint32_t)sizeof(mml_lora_options))
MML_API int mml_lora_create(mml_lora **out, mml_ctx *ctx, const mml_lora_options *opt);
MML_API void mml_lora_destroy(mml_lora *lora);

MML_API int32_t mml_lora_n_experts(const mml_lora *lora);
MML_API int32_t mml_lora_n_layers(const mml_lora *lora);
/* r_l of layer l, or -1. */
MML_API int32_t mml_lora_rank(const mml_lora *lora, int32_t layer);
/* The rank rule on its own: max(floor(d_out / alpha), 1) capped at min(d_in, d_out). */
MML_API int32_t mml_lora_rank_for(int32_t d_in, int32_t d_out, int32_t alpha);
MML_API int64_t mml_lora_n_params(const mml_lora *lora);
MML_API mml_param *mml_lora_param(mml_lora *lora, int64_t index);
/* A mixture description in *mix for n rows (convenience; fields can also be set by hand). */
MML_API int mml_mix_init_sized(mml_mix *mix, uint32_t struct_size, int32_t mode, int64_t n_rows);
#define mml_mix_init(mix, mode, n_rows)                                                          \
    mml_mix_init_sized((mix), (uint32_t)sizeof(mml_mix), (mode), (n_rows))

MML_END_DECLS

#endif
