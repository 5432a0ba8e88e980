/* The built-in backbones' options as a list of int32 words, so the model
 * file can save them and create the same backbone again:
 *   dcn: cross_layers; autoint: n_layers, n_heads, head_dim, residual;
 *   xdeepfm: n_layers, split_half, then n_layers map counts;
 *   fibinet: reduction; mlp, wdl, deepfm, nfm, pnn: none. */
#include <string.h>

#include "backbones/backbones.h"
#include "backbones/backbone_io.h"

int mml__backbone_options_encode(mml_ctx *ctx, const char *type, const void *options,
                                 int32_t *words, int32_t *n)
{
    *n = 0;
    int rc = MML_OK;
    if (strcmp(type, "dcn") == 0) {
        mml_dcn_options o;
        if ((rc = MML__COPY_OPTIONS(ctx, &o, options, mml_dcn_options, "dcn options")) < 0)
            return rc;
        words[(*n)++] = o.cross_layers;
    } else if (strcmp(type, "autoint") == 0) {
        mml_autoint_options o;
        if ((rc = MML__COPY_OPTIONS(ctx, &o, options, mml_autoint_options, "autoint options")) < 0)
            return rc;
        words[(*n)++] = o.n_layers;
        words[(*n)++] = o.n_heads;
        words[(*n)++] = o.head_dim;
        words[(*n)++] = o.residual;
    } else if (strcmp(type, "xdeepfm") == 0) {
        mml_xdeepfm_options o;
        if ((rc = MML__COPY_OPTIONS(ctx, &o, options, mml_xdeepfm_options, "xdeepfm options")) < 0)
            return rc;
        if (o.n_layers < 1 || o.n_layers > MML__BACKBONE_MAX_WORDS - 2)
            return mml__error(ctx, MML_EINVAL, "xdeepfm: n_layers %d outside [1, %d]", o.n_layers,
                              MML__BACKBONE_MAX_WORDS - 2);
        words[(*n)++] = o.n_layers;
        words[(*n)++] = o.split_half;
        for (int32_t l = 0; l < o.n_layers; l++)
            words[(*n)++] = o.layer_sizes ? o.layer_sizes[l] : 128;
    } else if (strcmp(type, "fibinet") == 0) {
        mml_fibinet_options o;
        if ((rc = MML__COPY_OPTIONS(ctx, &o, options, mml_fibinet_options, "fibinet options")) < 0)
            return rc;
        words[(*n)++] = o.reduction;
    }
    return MML_OK;
}

int mml__backbone_options_decode(mml_ctx *ctx, const char *type, const int32_t *w, int32_t n,
                                 mml__backbone_saved_options *out, const void **options)
{
    *options = NULL;
    int32_t want = 0;
    if (strcmp(type, "dcn") == 0) {
        want = 1;
        if (n == want) {
            mml_dcn_options_init(&out->dcn);
            out->dcn.cross_layers = w[0];
            *options = &out->dcn;
        }
    } else if (strcmp(type, "autoint") == 0) {
        want = 4;
        if (n == want) {
            mml_autoint_options_init(&out->autoint);
            out->autoint.n_layers = w[0];
            out->autoint.n_heads = w[1];
            out->autoint.head_dim = w[2];
            out->autoint.residual = w[3];
            *options = &out->autoint;
        }
    } else if (strcmp(type, "xdeepfm") == 0) {
        want = n >= 2 && w[0] >= 1 && w[0] <= MML__BACKBONE_MAX_WORDS - 2 ? 2 + w[0] : -1;
        if (n == want) {
            mml_xdeepfm_options_init(&out->xdeepfm);
            out->xdeepfm.n_layers = w[0];
            out->xdeepfm.split_half = w[1];
            memcpy(out->layer_sizes, w + 2, sizeof(int32_t) * (size_t)w[0]);
            out->xdeepfm.layer_sizes = out->layer_sizes;
            *options = &out->xdeepfm;
        }
    } else if (strcmp(type, "fibinet") == 0) {
        want = 1;
        if (n == want) {
            mml_fibinet_options_init(&out->fibinet);
            out->fibinet.reduction = w[0];
            *options = &out->fibinet;
        }
    }
    if (n != want)
        return mml__error(ctx, MML_ECORRUPT, "backbone '%s': %d option words, expected %d", type, n,
                          want);
    return MML_OK;
}
