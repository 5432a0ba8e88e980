/* MLP, WDL and DeepFM: a DNN tower over the concatenated embeddings (and
 * numeric values). WDL adds the model's linear term; DeepFM adds the linear
 * term and the second-order FM term 0.5 sum_k((sum_f e_f)^2 - sum_f e_f^2). */
#include <string.h>

#include "backbones/backbones.h"

typedef struct deep {
    mml_ctx *ctx;
    int32_t F, k, n_dense, fm;
    mml__dnn dnn;
    mml_param head; /* d_out x 1 */
    float *x, *dh, *dx;
    size_t cap_x, cap_dh, cap_dx;
    const float *h; /* tower output of the last forward */
    int64_t n;
} deep;

static int32_t input_width(const mml_backbone_config *c) { return c->n_fields * c->embed_dim + c->n_dense; }

static int deep_infer_shape(void *user, mml_ctx *ctx, const mml_backbone_config *c,
                            int64_t *n_values)
{
    (void)user;
    (void)ctx;
    *n_values = mml__dnn_param_count(c, input_width(c)) + c->hidden[c->n_hidden - 1];
    return MML_OK;
}

static void deep_destroy(void *self)
{
    deep *d = self;
    if (!d)
        return;
    mml_ctx *ctx = d->ctx;
    mml__dnn_destroy(&d->dnn);
    mml__head_free(ctx, &d->head);
    mml__free(ctx, d->x, d->cap_x * sizeof(float));
    mml__free(ctx, d->dh, d->cap_dh * sizeof(float));
    mml__free(ctx, d->dx, d->cap_dx * sizeof(float));
    mml__free(ctx, d, sizeof *d);
}

static int deep_create_common(void **self, mml_ctx *ctx, const mml_backbone_config *c, int fm)
{
    deep *d = mml__calloc(ctx, 1, sizeof *d);
    if (!d)
        return mml__error(ctx, MML_ENOMEM, "backbone: out of memory");
    d->ctx = ctx;
    d->F = c->n_fields;
    d->k = c->embed_dim;
    d->n_dense = c->n_dense;
    d->fm = fm;
    int rc = mml__dnn_create(&d->dnn, ctx, c, input_width(c));
    if (rc >= 0)
        rc = mml__head_init(ctx, &d->head, "head.w", mml__dnn_d_out(&d->dnn), c->stream);
    if (rc < 0) {
        deep_destroy(d);
        return rc;
    }
    *self = d;
    return MML_OK;
}

static int mlp_create(void *user, mml_ctx *ctx, const mml_backbone_config *c, void **self)
{
    (void)user;
    return deep_create_common(self, ctx, c, 0);
}

static int deepfm_create(void *user, mml_ctx *ctx, const mml_backbone_config *c, void **self)
{
    (void)user;
    return deep_create_common(self, ctx, c, 1);
}

static int deep_forward(void *self, const mml_backbone_input *in, float *logit)
{
    deep *d = self;
    int64_t n = in->n_rows;
    int32_t fk = d->F * d->k, w = fk + d->n_dense;
    int rc = mml__ensure_floats(d->ctx, &d->x, &d->cap_x, (size_t)(n * w));
    if (rc < 0)
        return rc;
    for (int64_t r = 0; r < n; r++) {
        memcpy(d->x + r * w, in->emb + r * fk, sizeof(float) * (size_t)fk);
        if (d->n_dense)
            memcpy(d->x + r * w + fk, in->dense + r * d->n_dense, sizeof(float) * (size_t)d->n_dense);
    }
    rc = mml__dnn_forward(&d->dnn, d->x, n, in, &d->h);
    if (rc < 0)
        return rc;
    int32_t dout = (int32_t)d->head.rows;
    const float *hw = d->head.value;
    for (int64_t r = 0; r < n; r++) {
        const float *h = d->h + r * dout;
        float s = 0.0f;
        for (int32_t j = 0; j < dout; j++)
            s += h[j] * hw[j];
        if (d->fm) {
            const float *e = d->x + r * w;
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
            s += 0.5f * fm;
        }
        logit[r] = s;
    }
    d->n = n;
    return MML_OK;
}

static int deep_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    deep *d = self;
    int64_t n = d->n;
    int32_t fk = d->F * d->k, w = fk + d->n_dense;
    float *dxs;
    int rc = mml__dnn_head_backward(d->ctx, &d->dnn, &d->head, d->h, n, dlogit, g,
                                    g->d_emb || (g->d_dense && d->n_dense), w, &d->dh, &d->cap_dh,
                                    &d->dx, &d->cap_dx, &dxs);
    if (rc < 0 || !dxs)
        return rc;
    for (int64_t r = 0; r < n; r++) {
        const float *dx = dxs + r * w;
        if (g->d_emb) {
            float *de = g->d_emb + r * fk;
            for (int32_t i = 0; i < fk; i++)
                de[i] += dx[i];
            if (d->fm) {
                const float *e = d->x + r * w;
                for (int32_t j = 0; j < d->k; j++) {
                    float sum = 0.0f;
                    for (int32_t f = 0; f < d->F; f++)
                        sum += e[f * d->k + j];
                    for (int32_t f = 0; f < d->F; f++)
                        de[f * d->k + j] += dlogit[r] * (sum - e[f * d->k + j]);
                }
            }
        }
        if (g->d_dense)
            for (int32_t i = 0; i < d->n_dense; i++)
                g->d_dense[r * d->n_dense + i] += dx[fk + i];
    }
    return MML_OK;
}

static int64_t deep_n_params(void *self) { return mml__dnn_n_params(&((deep *)self)->dnn) + 1; }

static mml_param *deep_param(void *self, int64_t i)
{
    deep *d = self;
    int64_t nd = mml__dnn_n_params(&d->dnn);
    if (i < 0 || i > nd)
        return NULL;
    return i == nd ? &d->head : mml__dnn_param(&d->dnn, i);
}

static mml_lora *deep_experts(void *self) { return ((deep *)self)->dnn.lora; }
static uint64_t deep_pattern(void *self) { return mml_tower_relu_pattern(((deep *)self)->dnn.tower); }
static int deep_replay(void *self, int32_t replay)
{
    return mml_tower_set_dropout_replay(((deep *)self)->dnn.tower, replay);
}

#define DEEP_TABLE(NAME, LINEAR, CREATE)                                                          \
    {                                                                                             \
        sizeof(mml_backbone_vtable), MML_BACKBONE_ABI_VERSION, NAME, LINEAR, 0, deep_infer_shape, \
            CREATE, deep_destroy, deep_forward, deep_backward, deep_n_params, deep_param,         \
            deep_experts, deep_pattern, deep_replay, NULL, NULL                                   \
    }

const mml_backbone_vtable mml__backbone_mlp = DEEP_TABLE("mlp", 0, mlp_create);
const mml_backbone_vtable mml__backbone_wdl = DEEP_TABLE("wdl", 1, mlp_create);
const mml_backbone_vtable mml__backbone_deepfm = DEEP_TABLE("deepfm", 1, deepfm_create);
