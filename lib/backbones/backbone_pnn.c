/* PNN (inner-product variant, as DeepCTR builds it): a DNN tower over
 *
 *     [e_1 .. e_F, <e_i, e_j> for i < j, numeric]
 *
 * with the F (F - 1) / 2 plain (unweighted) inner products in the order
 * (0,1), (0,2), .., (1,2), ..; no linear term. The tower's head is a
 * bias-free Linear(d_last -> 1). */
#include <string.h>

#include "backbones/backbones.h"

static const mml_pnn_options defaults = {.struct_size = sizeof(mml_pnn_options)};

int mml_pnn_options_init_sized(mml_pnn_options *out, uint32_t struct_size)
{
    return mml__init_versioned(out, &defaults, sizeof defaults, struct_size,
                               MML__OLDER_SIZES_mml_pnn_options);
}

static int32_t pnn_width(const mml_backbone_config *c)
{
    return c->n_fields * c->embed_dim + mml__n_pairs(c->n_fields) + c->n_dense;
}

static int pnn_forward(mml__deep *d, const mml_backbone_input *in)
{
    int64_t n = in->n_rows;
    int32_t F = d->F, k = d->k, fk = F * k, P = mml__n_pairs(F), w = d->width;
    int rc = mml__ensure_floats(d->ctx, &d->x, &d->cap_x, (size_t)(n * w));
    if (rc < 0)
        return rc;
    for (int64_t r = 0; r < n; r++) {
        float *x = d->x + r * w;
        memcpy(x, in->emb + r * fk, sizeof(float) * (size_t)fk);
        float *prod = x + fk;
        for (int32_t i = 0; i < F; i++)
            for (int32_t j = i + 1; j < F; j++) {
                float s = 0.0f;
                for (int32_t t = 0; t < k; t++)
                    s += x[i * k + t] * x[j * k + t];
                *prod++ = s;
            }
        if (d->n_dense)
            memcpy(x + fk + P, in->dense + r * d->n_dense, sizeof(float) * (size_t)d->n_dense);
    }
    return mml__deep_tower_forward(d, in);
}

static int pnn_backward(mml__deep *d, const float *dlogit, const mml_backbone_grads *g, float *dxs)
{
    int32_t F = d->F, k = d->k, fk = F * k, w = d->width;
    (void)dlogit;
    mml__deep_input_grad(d, g, dxs, 1);
    if (!g->d_emb)
        return MML_OK;
    for (int64_t r = 0; r < d->n; r++) {
        const float *e = d->x + r * w, *dprod = dxs + r * w + fk;
        float *de = g->d_emb + r * fk;
        for (int32_t i = 0; i < F; i++)
            for (int32_t j = i + 1; j < F; j++) {
                float gp = *dprod++;
                for (int32_t t = 0; t < k; t++) {
                    de[i * k + t] += gp * e[j * k + t];
                    de[j * k + t] += gp * e[i * k + t];
                }
            }
    }
    return MML_OK;
}

static const mml__side side = {.size = sizeof(mml__deep), .feeds_tower = 1,
                               MML__SIDE_OPTIONS(mml_pnn_options, defaults), .width = pnn_width,
                               .forward = pnn_forward, .backward = pnn_backward};

MML__BACKBONE_TABLE(pnn, 0, side);
