/* PNN (inner-product variant, as DeepCTR builds it): a DNN tower over
 *
 *     [e_1 .. e_F, <e_i, e_j> for i < j, numeric]
 *
 * with the F (F - 1) / 2 plain (unweighted) inner products in the order
 * (0,1), (0,2), .., (1,2), ..; no linear term. The tower's head is a
 * bias-free Linear(d_last -> 1). */
#include <string.h>

#include "backbones/backbones.h"

typedef struct pnn {
    mml_ctx *ctx;
    int32_t F, k, n_dense, P;
    mml__dnn dnn;
    mml_param head; /* d_last x 1 */
    float *x, *dh, *dx;
    size_t cap_x, cap_dh, cap_dx;
    const float *h; /* tower output of the last forward pass */
    int64_t n;
} pnn;

int mml_pnn_options_init_sized(mml_pnn_options *out, uint32_t struct_size)
{
    mml_pnn_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->struct_size = (uint32_t)sizeof *opt;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_pnn_options);
}

static int pnn_options(mml_ctx *ctx, const mml_backbone_config *c, mml_pnn_options *o)
{
    mml_pnn_options_init(o);
    if (c->options)
        return MML__COPY_OPTIONS(ctx, o, c->options, mml_pnn_options, "pnn");
    return MML_OK;
}

static int32_t n_pairs(const mml_backbone_config *c) { return c->n_fields * (c->n_fields - 1) / 2; }
static int32_t input_width(const mml_backbone_config *c)
{
    return c->n_fields * c->embed_dim + n_pairs(c) + c->n_dense;
}

/* Invalid options report 0 values here; create refuses them with a message. */
static int pnn_infer_shape(void *user, mml_ctx *ctx, const mml_backbone_config *c,
                            int64_t *n_values)
{
    (void)user;
    (void)ctx;
    mml_pnn_options o;
    *n_values = 0;
    if (pnn_options(NULL, c, &o) < 0)
        return MML_OK;
    *n_values = mml__dnn_param_count(c, input_width(c)) + c->hidden[c->n_hidden - 1];
    return MML_OK;
}

static void pnn_destroy(void *self)
{
    pnn *d = self;
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

static int pnn_create(void *user, mml_ctx *ctx, const mml_backbone_config *c, void **self)
{
    (void)user;
    mml_pnn_options o;
    int rc = pnn_options(ctx, c, &o);
    if (rc < 0)
        return rc;
    pnn *d = mml__calloc(ctx, 1, sizeof *d);
    if (!d)
        return mml__error(ctx, MML_ENOMEM, "pnn: out of memory");
    d->ctx = ctx;
    d->F = c->n_fields;
    d->k = c->embed_dim;
    d->n_dense = c->n_dense;
    d->P = n_pairs(c);
    rc = mml__dnn_create(&d->dnn, ctx, c, input_width(c));
    if (rc >= 0)
        rc = mml__head_init(ctx, &d->head, "head.w", mml__dnn_d_out(&d->dnn), c->stream);
    if (rc < 0) {
        pnn_destroy(d);
        return rc;
    }
    *self = d;
    return MML_OK;
}

static int pnn_forward(void *self, const mml_backbone_input *in, float *logit)
{
    pnn *d = self;
    int64_t n = in->n_rows;
    int32_t F = d->F, k = d->k, fk = F * k, w = fk + d->P + d->n_dense;
    d->n = 0;
    if (d->n_dense && !in->dense)
        return mml__error(d->ctx, MML_EINVAL, "pnn: numeric values missing");
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
            memcpy(x + fk + d->P, in->dense + r * d->n_dense, sizeof(float) * (size_t)d->n_dense);
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
        logit[r] = s;
    }
    d->n = n;
    return MML_OK;
}

static int pnn_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    pnn *d = self;
    int64_t n = d->n;
    if (n < 1)
        return mml__error(d->ctx, MML_ESTATE, "pnn: backward without a forward pass");
    int32_t F = d->F, k = d->k, fk = F * k, w = fk + d->P + d->n_dense;
    float *dxs;
    int rc = mml__dnn_head_backward(d->ctx, &d->dnn, &d->head, d->h, n, dlogit, g,
                                    g->d_emb || (g->d_dense && d->n_dense), w, &d->dh, &d->cap_dh,
                                    &d->dx, &d->cap_dx, &dxs);
    if (rc < 0 || !dxs)
        return rc;
    for (int64_t r = 0; r < n; r++) {
        const float *dx = dxs + r * w;
        if (g->d_emb) {
            const float *e = d->x + r * w;
            float *de = g->d_emb + r * fk;
            for (int32_t i = 0; i < fk; i++)
                de[i] += dx[i];
            const float *dprod = dx + fk;
            for (int32_t i = 0; i < F; i++)
                for (int32_t j = i + 1; j < F; j++) {
                    float gp = *dprod++;
                    for (int32_t t = 0; t < k; t++) {
                        de[i * k + t] += gp * e[j * k + t];
                        de[j * k + t] += gp * e[i * k + t];
                    }
                }
        }
        if (g->d_dense)
            for (int32_t i = 0; i < d->n_dense; i++)
                g->d_dense[r * d->n_dense + i] += dx[fk + d->P + i];
    }
    return MML_OK;
}

static int64_t pnn_n_params(void *self) { return mml__dnn_n_params(&((pnn *)self)->dnn) + 1; }

static mml_param *pnn_param(void *self, int64_t i)
{
    pnn *d = self;
    int64_t nd = mml__dnn_n_params(&d->dnn);
    if (i < 0 || i > nd)
        return NULL;
    return i == nd ? &d->head : mml__dnn_param(&d->dnn, i);
}

static mml_lora *pnn_experts(void *self) { return ((pnn *)self)->dnn.lora; }
static uint64_t pnn_pattern(void *self) { return mml_tower_relu_pattern(((pnn *)self)->dnn.tower); }
static int pnn_replay(void *self, int32_t replay)
{
    return mml_tower_set_dropout_replay(((pnn *)self)->dnn.tower, replay);
}

const mml_backbone_vtable mml__backbone_pnn = {
    sizeof(mml_backbone_vtable), MML_BACKBONE_ABI_VERSION, "pnn", 0, 0, pnn_infer_shape,
    pnn_create, pnn_destroy, pnn_forward, pnn_backward, pnn_n_params, pnn_param,
    pnn_experts, pnn_pattern, pnn_replay, NULL, NULL};
