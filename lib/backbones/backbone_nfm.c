/* NFM: a DNN tower over the bi-interaction pooling of the field embeddings,
 *
 *     bi = 0.5 ((sum_f e_f)^2 - sum_f e_f^2)   (elementwise, a k-vector),
 *
 * with the numeric values appended; the model adds the linear term. The
 * tower's head is a bias-free Linear(d_last -> 1). */
#include <string.h>

#include "backbones/backbones.h"

typedef struct nfm {
    mml__deep base;
    float *e; /* the embeddings of the last forward pass */
    size_t cap_e;
} nfm;

static const mml_nfm_options defaults = {.struct_size = sizeof(mml_nfm_options)};

int mml_nfm_options_init_sized(mml_nfm_options *out, uint32_t struct_size)
{
    return mml__init_versioned(out, &defaults, sizeof defaults, struct_size,
                               MML__OLDER_SIZES_mml_nfm_options);
}

static int32_t nfm_width(const mml_backbone_config *c) { return c->embed_dim + c->n_dense; }

static void nfm_destroy(mml__deep *base)
{
    nfm *d = (nfm *)base;
    mml__free(base->ctx, d->e, d->cap_e * sizeof(float));
}

static int nfm_forward(mml__deep *base, const mml_backbone_input *in)
{
    nfm *d = (nfm *)base;
    int64_t n = in->n_rows;
    int32_t F = base->F, k = base->k, fk = F * k, w = base->width;
    int rc;
    if ((rc = mml__ensure_floats(base->ctx, &d->e, &d->cap_e, (size_t)(n * fk))) < 0 ||
        (rc = mml__ensure_floats(base->ctx, &base->x, &base->cap_x, (size_t)(n * w))) < 0)
        return rc;
    memcpy(d->e, in->emb, sizeof(float) * (size_t)(n * fk));
    for (int64_t r = 0; r < n; r++) {
        const float *e = d->e + r * fk;
        float *x = base->x + r * w;
        for (int32_t j = 0; j < k; j++) {
            float sum = 0.0f, sq = 0.0f;
            for (int32_t f = 0; f < F; f++) {
                float v = e[f * k + j];
                sum += v;
                sq += v * v;
            }
            x[j] = 0.5f * (sum * sum - sq);
        }
        if (base->n_dense)
            memcpy(x + k, in->dense + r * base->n_dense, sizeof(float) * (size_t)base->n_dense);
    }
    return mml__deep_tower_forward(base, in);
}

static int nfm_backward(mml__deep *base, const float *dlogit, const mml_backbone_grads *g,
                        float *dxs)
{
    const nfm *d = (const nfm *)base;
    int32_t F = base->F, k = base->k, fk = F * k, w = base->width;
    (void)dlogit;
    mml__deep_input_grad(base, g, dxs, 0);
    if (!g->d_emb)
        return MML_OK;
    for (int64_t r = 0; r < base->n; r++) {
        /* d bi_j / d e_fj = sum_f' e_f'j - e_fj */
        const float *dx = dxs + r * w, *e = d->e + r * fk;
        float *de = g->d_emb + r * fk;
        for (int32_t j = 0; j < k; j++) {
            float sum = 0.0f;
            for (int32_t f = 0; f < F; f++)
                sum += e[f * k + j];
            for (int32_t f = 0; f < F; f++)
                de[f * k + j] += dx[j] * (sum - e[f * k + j]);
        }
    }
    return MML_OK;
}

static const mml__side side = {.size = sizeof(nfm),
                               .scratch = offsetof(nfm, e), .feeds_tower = 1,
                               MML__SIDE_OPTIONS(mml_nfm_options, defaults), .width = nfm_width,
                               .destroy = nfm_destroy, .forward = nfm_forward,
                               .backward = nfm_backward};

MML__BACKBONE_TABLE(nfm, 1, side);
