/**
 * @file
 * @brief Options of the built-in backbones.
 *
 * Every built-in backbone has a DNN tower (mml_backbone_config::hidden, with
 * the adapters) and may have side parts. Its own hyper-parameters come from
 * an options struct passed as mml_backbone_config::options or
 * mml_model_options::backbone_options; NULL means the defaults below, which
 * are the hyper-parameters of the MoE-MLoRA paper. "mlp", "wdl" and "deepfm"
 * have no options and ignore the pointer. Initialise a struct with its
 * _options_init macro before changing fields: the struct_size field versions
 * it (a size that no release produced gives MML_EVERSION), and the pointer
 * must point to the options type of the backbone being created. The library
 * copies what it needs at creation; the struct (and any array it points to)
 * need not outlive that call.
 *
 * Notation: F fields, k = embedding width, e_f the embedding of field f,
 * n_dense numeric values, d_last = the tower's last width. Numeric values are
 * appended to the tower's input. "Linear term": the model adds
 * sum_f w_f[id_f] + sum_j v_j x_j. No side part carries a bias of its own.
 *
 * - "nfm": tower over the bi-interaction pooling
 *   `0.5 ((sum_f e_f)^2 - sum_f e_f^2)` (elementwise, width k); linear term.
 * - "pnn": tower over `[e_1 .. e_F, <e_i, e_j> for i < j]`; no linear term.
 * - "dcn": cross network over `x0 = [e_1 .. e_F, numeric]` (width d):
 *   `x_{l+1} = x0 (x_l . w_l) + b_l + x_l`; tower over x0;
 *   logit = Linear over `[x_L, tower out]`; linear term.
 * - "autoint": tower over the embeddings; interacting layers over the F field
 *   vectors (multi-head self-attention with unscaled scores and a
 *   `ReLU(concat + x W_res)` residual); logit = Linear over
 *   `[flattened attention output (F x heads x head_dim), tower out]`;
 *   linear term.
 * - "xdeepfm": tower over the embeddings; + a compressed interaction network
 *   (CIN), ReLU, sum-pooled over k, through a bias-free Linear; linear term.
 * - "fibinet": SENET re-weighting of the fields and bilinear interactions
 *   `p_ij = (e_i W_ij) o e_j`, i < j, of the original and the re-weighted
 *   embeddings; tower over both; linear term.
 *
 * Parameters (all MML_GROUP_BACKBONE), in mml_backbone_param() order: the
 * tower's, the experts', then (P = F (F - 1) / 2 pairs (i, j), i < j, in the
 * order (0,1), (0,2), .., (0,F-1), (1,2), ..):
 * - nfm, pnn: `head.w` (d_last x 1).
 * - dcn: `cross.<l>.w` (d x 1), `cross.<l>.b` (d x 1) for each layer;
 *   `head.w` ((d + d_last) x 1): rows [0, d) read x_L, the rest the tower.
 * - autoint: for each layer l: `autoint.<l>.W_Q`, `.W_K`, `.W_V`
 *   (d_in x heads*head_dim; head h owns columns [h head_dim, (h + 1) head_dim)),
 *   then `autoint.<l>.W_res` (d_in x heads*head_dim, with residual only);
 *   d_in = k for layer 0, heads*head_dim after;
 *   `head.w` ((F heads head_dim + d_last) x 1): rows [0, F heads head_dim)
 *   read the attention output field after field.
 * - xdeepfm: `cin.<l>.W` ((M_l F) x H_l): row i F + j weighs `X^{l-1}_i o X^0_j`,
 *   M_0 = F and M_l the maps layer l - 1 passes on (H_{l-1}, or
 *   H_{l-1} / 2 with split_half: its first half; the second half
 *   goes to the output); `cin.head.w` (output maps x 1), ordered
 *   layer after layer; `head.w` (d_last x 1).
 * - fibinet: `senet.W1` (F x R), `senet.W2` (R x F), R = max(1, floor(F / reduction));
 *   `bilinear.W` (P k x k: pair p owns rows [p k, (p + 1) k)), for the
 *   original embeddings; `bilinear.W_senet` (same) for the re-weighted
 *   ones; `head.w` (d_last x 1). The tower reads [p_ij of the original
 *   embeddings, p_ij of the re-weighted ones, numeric].
 *
 * Matrices start glorot-uniform (stacked per-head or per-pair matrices with
 * the fans of one of them), the cross network's b_l at zero.
 */
#ifndef MOEMLORA_BACKBONES_H
#define MOEMLORA_BACKBONES_H

#include <stdint.h>

#include "export.h"

/** Options of "nfm" (none yet besides the version). */
typedef struct mml_nfm_options {
    /** Set by mml_nfm_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
} mml_nfm_options;

/** Options of "pnn" (none yet besides the version). */
typedef struct mml_pnn_options {
    /** Set by mml_pnn_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
} mml_pnn_options;

/** Options of "dcn". */
typedef struct mml_dcn_options {
    /** Set by mml_dcn_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** Cross layers L, 1..64; default 2. */
    int32_t cross_layers;
} mml_dcn_options;

/** Options of "autoint". */
typedef struct mml_autoint_options {
    /** Set by mml_autoint_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** Interacting layers, 1..32; default 3. */
    int32_t n_layers;
    /** Attention heads, 1..256; default 4 (n_heads * head_dim at most 65536). */
    int32_t n_heads;
    /** Width of each head, 1..4096; default 8. */
    int32_t head_dim;
    /** Nonzero (default): ReLU(concat + x W_res); 0: ReLU(concat). */
    int32_t residual;
} mml_autoint_options;

/** Options of "xdeepfm". */
typedef struct mml_xdeepfm_options {
    /** Set by mml_xdeepfm_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** CIN layers, 1..32; default 2. */
    int32_t n_layers;
    /** Nonzero (default): half of each non-final layer's maps go to the
     *  output, half to the next layer (those sizes must be even); 0: all maps
     *  go to both. */
    int32_t split_half;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** n_layers feature-map counts, 1..65536; default 128, 128 (NULL: 128 for
     *  every layer); read during create, need not outlive it. */
    const int32_t *layer_sizes;
} mml_xdeepfm_options;

/** Options of "fibinet" (which needs F >= 2 fields). */
typedef struct mml_fibinet_options {
    /** Set by mml_fibinet_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** SENET reduction ratio, >= 1; default 3. */
    int32_t reduction;
} mml_fibinet_options;

MML_BEGIN_DECLS

/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_nfm_options_init_sized(mml_nfm_options *opt, uint32_t struct_size);
/** mml_nfm_options_init_sized() with the caller's sizeof, so a newer library
 *  never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_nfm_options_init(opt) mml_nfm_options_init_sized((opt), (uint32_t)sizeof(mml_nfm_options))
/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_pnn_options_init_sized(mml_pnn_options *opt, uint32_t struct_size);
/** mml_pnn_options_init_sized() with the caller's sizeof, so a newer library
 *  never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_pnn_options_init(opt) mml_pnn_options_init_sized((opt), (uint32_t)sizeof(mml_pnn_options))
/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_dcn_options_init_sized(mml_dcn_options *opt, uint32_t struct_size);
/** mml_dcn_options_init_sized() with the caller's sizeof, so a newer library
 *  never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_dcn_options_init(opt) mml_dcn_options_init_sized((opt), (uint32_t)sizeof(mml_dcn_options))
/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_autoint_options_init_sized(mml_autoint_options *opt, uint32_t struct_size);
/** mml_autoint_options_init_sized() with the caller's sizeof, so a newer
 *  library never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_autoint_options_init(opt) mml_autoint_options_init_sized((opt), (uint32_t)sizeof(mml_autoint_options))
/** Fills *opt with the defaults for a struct of struct_size bytes
 *  (layer_sizes points to a static array of 128s).
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_xdeepfm_options_init_sized(mml_xdeepfm_options *opt, uint32_t struct_size);
/** mml_xdeepfm_options_init_sized() with the caller's sizeof, so a newer
 *  library never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_xdeepfm_options_init(opt) mml_xdeepfm_options_init_sized((opt), (uint32_t)sizeof(mml_xdeepfm_options))
/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_fibinet_options_init_sized(mml_fibinet_options *opt, uint32_t struct_size);
/** mml_fibinet_options_init_sized() with the caller's sizeof, so a newer
 *  library never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_fibinet_options_init(opt) mml_fibinet_options_init_sized((opt), (uint32_t)sizeof(mml_fibinet_options))

MML_END_DECLS

#endif
