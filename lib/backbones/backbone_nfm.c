/* NFM: a DNN tower over the bi-interaction pooling of the field embeddings,
 *
 *     bi = 0.5 ((sum_f e_f)^2 - sum_f e_f^2)   (elementwise, a k-vector),
 *
 * with the numeric values appended; the model adds the linear term. The
 * tower's head is a bias-free Linear(d_last -> 1). */
#include <string.h>

#include "backbones/backbones.h"

typedef struct nfm {
    mml_ctx *ctx;
    int32_t F, k, n_dense;
    mml__dnn dnn;
    mml_param head; /* d_last x 1 */
    float *e, *x, *dh, *dx;
    size_t cap_e, cap_x, cap_dh, cap_dx;
    const float *h; /* tower output of the last forward pass */
    int64_t n;
} nfm;

int mml_nfm_options_init_sized(mml_nfm_options *out, uint32_t struct_size)
{
    mml_nfm_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->struct_size = (uint32_t)sizeof *opt;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_nfm_options);
}

static int nfm_options(mml_ctx *ctx, const mml_backbone_config *c, mml_nfm_options *o)
{
    mml_nfm_options_init(o);
    if (c->options)
        return MML__COPY_OPTIONS(ctx, o, c->options, mml_nfm_options, "nfm");
    return MML_OK;
}

static int32_t input_width(const mml_backbone_config *c) { return c->embed_dim + c->n_dense; }

/* Invalid options report 0 values here; create, which always follows, refuses
 * them with a message (this callback has no context to put one in). */
static int nfm_infer_shape(void *user, mml_ctx *ctx, const mml_backbone_config *c,
                            int64_t *n_values)
{
    (void)user;
    (void)ctx;
    mml_nfm_options o;
    *n_values = 0;
    if (nfm_options(NULL, c, &o) < 0)
        return MML_OK;
    *n_values = mml__dnn_param_count(c, input_width(c)) + c->hidden[c->n_hidden - 1];
    return MML_OK;
}

static void nfm_destroy(void *self)
{
    nfm *d = self;
    if (!d)
        return;
    mml_ctx *ctx = d->ctx;
    mml__dnn_destroy(&d->dnn);
    mml__head_free(ctx, &d->head);
    mml__free(ctx, d->e, d->cap_e * sizeof(float));
    mml__free(ctx, d->x, d->cap_x * sizeof(float));
    mml__free(ctx, d->dh, d->cap_dh * sizeof(float));
    mml__free(ctx, d->dx, d->cap_dx * sizeof(float));
    mml__free(ctx, d, sizeof *d);
}

static int nfm_create(void *user, mml_ctx *ctx, const mml_backbone_config *c, void **self)
{
    (void)user;
    mml_nfm_options o;
    int rc = nfm_options(ctx, c, &o);
    if (rc < 0)
        return rc;
    nfm *d = mml__calloc(ctx, 1, sizeof *d);
    if (!d)
        return mml__error(ctx, MML_ENOMEM, "nfm: out of memory");
    d->ctx = ctx;
    d->F = c->n_fields;
    d->k = c->embed_dim;
    d->n_dense = c->n_dense;
    rc = mml__dnn_create(&d->dnn, ctx, c, input_width(c));
    if (rc >= 0)
        rc = mml__head_init(ctx, &d->head, "head.w", mml__dnn_d_out(&d->dnn), c->stream);
    if (rc < 0) {
        nfm_destroy(d);
        return rc;
    }
    *self = d;
    return MML_OK;
}

static int nfm_forward(void *self, const mml_backbone_input *in, float *logit)
{
    nfm *d = self;
    int64_t n = in->n_rows;
    int32_t F = d->F, k = d->k, fk = F * k, w = k + d->n_dense;
    d->n = 0;
    if (d->n_dense && !in->dense)
        return mml__error(d->ctx, MML_EINVAL, "nfm: numeric values missing");
    int rc;
    if ((rc = mml__ensure_floats(d->ctx, &d->e, &d->cap_e, (size_t)(n * fk))) < 0 ||
        (rc = mml__ensure_floats(d->ctx, &d->x, &d->cap_x, (size_t)(n * w))) < 0)
        return rc;
    memcpy(d->e, in->emb, sizeof(float) * (size_t)(n * fk));
    for (int64_t r = 0; r < n; r++) {
        const float *e = d->e + r * fk;
        float *x = d->x + r * w;
        for (int32_t j = 0; j < k; j++) {
            float sum = 0.0f, sq = 0.0f;
            for (int32_t f = 0; f < F; f++) {
                float v = e[f * k + j];
                sum += v;
                sq += v * v;
            }
            x[j] = 0.5f * (sum * sum - sq);
        }
        if (d->n_dense)
            memcpy(x + k, in->dense + r * d->n_dense, sizeof(float) * (size_t)d->n_dense);
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

static int nfm_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    nfm *d = self;
    int64_t n = d->n;
    if (n < 1)
        return mml__error(d->ctx, MML_ESTATE, "nfm: backward without a forward pass");
    int32_t F = d->F, k = d->k, fk = F * k, w = k + d->n_dense;
    float *dxs;
    int rc = mml__dnn_head_backward(d->ctx, &d->dnn, &d->head, d->h, n, dlogit, g,
                                    g->d_emb || (g->d_dense && d->n_dense), w, &d->dh, &d->cap_dh,
                                    &d->dx, &d->cap_dx, &dxs);
    if (rc < 0 || !dxs)
        return rc;
    for (int64_t r = 0; r < n; r++) {
        const float *dx = dxs + r * w;
        if (g->d_emb) {
            /* d bi_j / d e_fj = sum_f' e_f'j - e_fj */
            const float *e = d->e + r * fk;
            float *de = g->d_emb + r * fk;
            for (int32_t j = 0; j < k; j++) {
                float sum = 0.0f;
                for (int32_t f = 0; f < F; f++)
                    sum += e[f * k + j];
                for (int32_t f = 0; f < F; f++)
                    de[f * k + j] += dx[j] * (sum - e[f * k + j]);
            }
        }
        if (g->d_dense)
            for (int32_t i = 0; i < d->n_dense; i++)
                g->d_dense[r * d->n_dense + i] += dx[k + i];
    }
    return MML_OK;
}

static int64_t nfm_n_params(void *self) { return mml__dnn_n_params(&((nfm *)self)->dnn) + 1; }

static mml_param *nfm_param(void *self, int64_t i)
{
    nfm *d = self;
    int64_t nd = mml__dnn_n_params(&d->dnn);
    if (i < 0 || i > nd)
        return NULL;
    return i == nd ? &d->head : mml__dnn_param(&d->dnn, i);
}

static mml_lora *nfm_experts(void *self) { return ((nfm *)self)->dnn.lora; }
static uint64_t nfm_pattern(void *self) { return mml_tower_relu_pattern(((nfm *)self)->dnn.tower); }
static int nfm_replay(void *self, int32_t replay)
{
    return mml_tower_set_dropout_replay(((nfm *)self)->dnn.tower, replay);
}

const mml_backbone_vtable mml__backbone_nfm = {
    sizeof(mml_backbone_vtable), MML_BACKBONE_ABI_VERSION, "nfm", 1, 0, nfm_infer_shape,
    nfm_create, nfm_destroy, nfm_forward, nfm_backward, nfm_n_params, nfm_param,
    nfm_experts, nfm_pattern, nfm_replay, NULL, NULL};
