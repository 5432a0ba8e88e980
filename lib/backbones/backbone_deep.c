/* MLP, WDL and DeepFM: the deep base alone, its tower over the concatenated
 * embeddings (and numeric values). WDL adds the model's linear term; DeepFM
 * adds the linear term and the second-order FM term
 * 0.5 sum_k((sum_f e_f)^2 - sum_f e_f^2). */
#include "backbones/backbones.h"

static void fm_logit(const mml__deep *d, float *logit)
{
    for (int64_t r = 0; r < d->n; r++) {
        const float *e = d->x + r * d->width;
        float fm = 0.0f;
        for (int32_t j = 0; j < d->k; j++) {
            float sum = 0.0f, sq = 0.0f;
            for (int32_t f = 0; f < d->F; f++) {
                float v = e[f * d->k + j];
                sum += v;
                sq += v * v;
            }
            fm += sum * sum - sq;
        }
        logit[r] += 0.5f * fm;
    }
}

static int fm_backward(mml__deep *d, const float *dlogit, const mml_backbone_grads *g, float *dx)
{
    mml__deep_input_grad(d, g, dx, 1);
    if (!g->d_emb)
        return MML_OK;
    int32_t fk = d->F * d->k;
    for (int64_t r = 0; r < d->n; r++) {
        const float *e = d->x + r * d->width;
        float *de = g->d_emb + r * fk;
        for (int32_t j = 0; j < d->k; j++) {
            float sum = 0.0f;
            for (int32_t f = 0; f < d->F; f++)
                sum += e[f * d->k + j];
            for (int32_t f = 0; f < d->F; f++)
                de[f * d->k + j] += dlogit[r] * (sum - e[f * d->k + j]);
        }
    }
    return MML_OK;
}

static const mml__side plain = {.size = sizeof(mml__deep)};
static const mml__side fm = {.size = sizeof(mml__deep), .logit = fm_logit, .backward = fm_backward};

MML__BACKBONE_TABLE(mlp, 0, plain);
MML__BACKBONE_TABLE(wdl, 1, plain);
MML__BACKBONE_TABLE(deepfm, 1, fm);
