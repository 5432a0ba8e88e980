/* DCN: a cross network and a DNN tower side by side over
 * x0 = [e_1 .. e_F, numeric] (width d),
 *
 *     x_{l+1} = x0 (x_l . w_l) + b_l + x_l,   l = 0 .. L - 1,
 *
 * w_l a d-vector (glorot-uniform with fans d and 1), b_l zeros; the logit is
 * a bias-free Linear over [x_L, tower out]; the model adds the linear term. */
#include <stdio.h>
#include <string.h>

#include "backbones/backbones.h"

#define MAX_CROSS 64

typedef struct dcn {
    mml_ctx *ctx;
    int32_t F, k, n_dense, L, d;
    mml__dnn dnn;
    mml_param p[2 * MAX_CROSS + 1]; /* cross.l.w, cross.l.b ..., head.w */
    char names[2 * MAX_CROSS][24];
    int32_t np;
    float *x0, *xl, *s, *dh, *dx, *gv;
    size_t cap_x0, cap_xl, cap_s, cap_dh, cap_dx, cap_gv;
    const float *h; /* tower output of the last forward pass */
    int64_t n;
} dcn;

int mml_dcn_options_init_sized(mml_dcn_options *out, uint32_t struct_size)
{
    mml_dcn_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->struct_size = (uint32_t)sizeof *opt;
    opt->cross_layers = 2;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_dcn_options);
}

static int dcn_options(mml_ctx *ctx, const mml_backbone_config *c, mml_dcn_options *o)
{
    mml_dcn_options_init(o);
    if (c->options) {
        int rc = MML__COPY_OPTIONS(ctx, o, c->options, mml_dcn_options, "dcn");
        if (rc < 0)
            return rc;
    }
    if (o->cross_layers < 1 || o->cross_layers > MAX_CROSS)
        return mml__error(ctx, MML_EINVAL, "dcn: cross_layers %d outside [1, %d]", o->cross_layers,
                          MAX_CROSS);
    return MML_OK;
}

static int32_t input_width(const mml_backbone_config *c) { return c->n_fields * c->embed_dim + c->n_dense; }

/* Invalid options report 0 values here; create refuses them with a message. */
static int dcn_infer_shape(void *user, mml_ctx *ctx, const mml_backbone_config *c,
                            int64_t *n_values)
{
    (void)user;
    (void)ctx;
    mml_dcn_options o;
    *n_values = 0;
    if (dcn_options(NULL, c, &o) < 0)
        return MML_OK;
    int64_t d = input_width(c);
    *n_values = mml__dnn_param_count(c, (int32_t)d) + 2 * o.cross_layers * d + d +
                c->hidden[c->n_hidden - 1];
    return MML_OK;
}

static void dcn_destroy(void *self)
{
    dcn *d = self;
    if (!d)
        return;
    mml_ctx *ctx = d->ctx;
    mml__dnn_destroy(&d->dnn);
    for (int32_t i = 0; i < d->np; i++)
        mml__side_param_free(ctx, &d->p[i]);
    mml__free(ctx, d->x0, d->cap_x0 * sizeof(float));
    mml__free(ctx, d->xl, d->cap_xl * sizeof(float));
    mml__free(ctx, d->s, d->cap_s * sizeof(float));
    mml__free(ctx, d->dh, d->cap_dh * sizeof(float));
    mml__free(ctx, d->dx, d->cap_dx * sizeof(float));
    mml__free(ctx, d->gv, d->cap_gv * sizeof(float));
    mml__free(ctx, d, sizeof *d);
}

static int dcn_create(void *user, mml_ctx *ctx, const mml_backbone_config *c, void **self)
{
    (void)user;
    mml_dcn_options o;
    int rc = dcn_options(ctx, c, &o);
    if (rc < 0)
        return rc;
    dcn *d = mml__calloc(ctx, 1, sizeof *d);
    if (!d)
        return mml__error(ctx, MML_ENOMEM, "dcn: out of memory");
    d->ctx = ctx;
    d->F = c->n_fields;
    d->k = c->embed_dim;
    d->n_dense = c->n_dense;
    d->L = o.cross_layers;
    d->d = input_width(c);
    rc = mml__dnn_create(&d->dnn, ctx, c, d->d);
    for (int32_t l = 0; rc >= 0 && l < d->L; l++) {
        char *wn = d->names[2 * l], *bn = d->names[2 * l + 1];
        snprintf(wn, sizeof d->names[0], "cross.%d.w", l);
        snprintf(bn, sizeof d->names[0], "cross.%d.b", l);
        rc = mml__side_param_init(ctx, &d->p[d->np], wn, d->d, 1, d->d, 1, c->stream + 1 + (uint64_t)l);
        if (rc >= 0)
            d->np++;
        if (rc >= 0)
            rc = mml__side_param_init(ctx, &d->p[d->np], bn, d->d, 1, 0, 0, 0);
        if (rc >= 0)
            d->np++;
    }
    if (rc >= 0) {
        rc = mml__head_init(ctx, &d->p[d->np], "head.w", d->d + mml__dnn_d_out(&d->dnn), c->stream);
        if (rc >= 0)
            d->np++;
    }
    if (rc < 0) {
        dcn_destroy(d);
        return rc;
    }
    *self = d;
    return MML_OK;
}

static int dcn_forward(void *self, const mml_backbone_input *in, float *logit)
{
    dcn *d = self;
    int64_t n = in->n_rows;
    int32_t fk = d->F * d->k, w = d->d, L = d->L;
    d->n = 0;
    if (d->n_dense && !in->dense)
        return mml__error(d->ctx, MML_EINVAL, "dcn: numeric values missing");
    int rc;
    if ((rc = mml__ensure_floats(d->ctx, &d->x0, &d->cap_x0, (size_t)(n * w))) < 0 ||
        (rc = mml__ensure_floats(d->ctx, &d->xl, &d->cap_xl, (size_t)(L * n * w))) < 0 ||
        (rc = mml__ensure_floats(d->ctx, &d->s, &d->cap_s, (size_t)(L * n))) < 0)
        return rc;
    for (int64_t r = 0; r < n; r++) {
        memcpy(d->x0 + r * w, in->emb + r * fk, sizeof(float) * (size_t)fk);
        if (d->n_dense)
            memcpy(d->x0 + r * w + fk, in->dense + r * d->n_dense, sizeof(float) * (size_t)d->n_dense);
    }
    rc = mml__dnn_forward(&d->dnn, d->x0, n, in, &d->h);
    if (rc < 0)
        return rc;
    /* Cross layers: xl holds x_1 .. x_L, layer after layer. */
    for (int32_t l = 0; l < L; l++) {
        const float *wv = d->p[2 * l].value, *bv = d->p[2 * l + 1].value;
        for (int64_t r = 0; r < n; r++) {
            const float *x0 = d->x0 + r * w;
            const float *x = l ? d->xl + ((int64_t)(l - 1) * n + r) * w : x0;
            float *y = d->xl + ((int64_t)l * n + r) * w;
            float s = 0.0f;
            for (int32_t j = 0; j < w; j++)
                s += x[j] * wv[j];
            d->s[(int64_t)l * n + r] = s;
            for (int32_t j = 0; j < w; j++)
                y[j] = x0[j] * s + bv[j] + x[j];
        }
    }
    const mml_param *head = &d->p[d->np - 1];
    int32_t dout = mml__dnn_d_out(&d->dnn);
    const float *hc = head->value, *ht = head->value + w;
    for (int64_t r = 0; r < n; r++) {
        const float *xL = d->xl + ((int64_t)(L - 1) * n + r) * w, *h = d->h + r * dout;
        float s = 0.0f;
        for (int32_t j = 0; j < w; j++)
            s += xL[j] * hc[j];
        for (int32_t j = 0; j < dout; j++)
            s += h[j] * ht[j];
        logit[r] = s;
    }
    d->n = n;
    return MML_OK;
}

static int dcn_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    dcn *d = self;
    int64_t n = d->n;
    if (n < 1)
        return mml__error(d->ctx, MML_ESTATE, "dcn: backward without a forward pass");
    int32_t fk = d->F * d->k, w = d->d, L = d->L, dout = mml__dnn_d_out(&d->dnn);
    mml_param *head = &d->p[d->np - 1];
    int rc = mml__ensure_floats(d->ctx, &d->dh, &d->cap_dh, (size_t)(n * dout));
    if (rc < 0)
        return rc;
    const float *hc = head->value, *ht = head->value + w;
    for (int64_t r = 0; r < n; r++)
        for (int32_t j = 0; j < dout; j++)
            d->dh[r * dout + j] = dlogit[r] * ht[j];
    if (!head->frozen)
        for (int64_t r = 0; r < n; r++) {
            const float *xL = d->xl + ((int64_t)(L - 1) * n + r) * w, *h = d->h + r * dout;
            for (int32_t j = 0; j < w; j++)
                head->grad[j] += xL[j] * dlogit[r];
            for (int32_t j = 0; j < dout; j++)
                head->grad[w + j] += h[j] * dlogit[r];
        }
    int need_dx = g->d_emb || (g->d_dense && d->n_dense);
    if (need_dx) {
        rc = mml__ensure_floats(d->ctx, &d->dx, &d->cap_dx, (size_t)(n * w));
        if (rc < 0)
            return rc;
        memset(d->dx, 0, sizeof(float) * (size_t)(n * w));
    }
    rc = mml__dnn_backward(&d->dnn, d->dh, need_dx ? d->dx : NULL, g);
    if (rc < 0)
        return rc;
    /* The cross network, row by row: gv = d loss / d x_{l+1}. */
    if (need_dx || mml__any_unfrozen(d->p, 2 * L)) {
        rc = mml__ensure_floats(d->ctx, &d->gv, &d->cap_gv, (size_t)w);
        if (rc < 0)
            return rc;
        float *gv = d->gv;
        for (int64_t r = 0; r < n; r++) {
            const float *x0 = d->x0 + r * w;
            float *dx0 = need_dx ? d->dx + r * w : NULL;
            for (int32_t j = 0; j < w; j++)
                gv[j] = dlogit[r] * hc[j];
            for (int32_t l = L - 1; l >= 0; l--) {
                const float *x = l ? d->xl + ((int64_t)(l - 1) * n + r) * w : x0;
                mml_param *wp = &d->p[2 * l], *bp = &d->p[2 * l + 1];
                float s = d->s[(int64_t)l * n + r], ds = 0.0f;
                for (int32_t j = 0; j < w; j++)
                    ds += gv[j] * x0[j];
                if (!bp->frozen)
                    for (int32_t j = 0; j < w; j++)
                        bp->grad[j] += gv[j];
                if (!wp->frozen)
                    for (int32_t j = 0; j < w; j++)
                        wp->grad[j] += ds * x[j];
                if (dx0)
                    for (int32_t j = 0; j < w; j++)
                        dx0[j] += s * gv[j];
                /* d x_l = g + ds w_l (x0 enters through s above, x_l = x0 at l = 0) */
                for (int32_t j = 0; j < w; j++)
                    gv[j] += ds * wp->value[j];
            }
            if (dx0)
                for (int32_t j = 0; j < w; j++)
                    dx0[j] += gv[j];
        }
    }
    if (!need_dx)
        return MML_OK;
    for (int64_t r = 0; r < n; r++) {
        const float *dx = d->dx + r * w;
        if (g->d_emb) {
            float *de = g->d_emb + r * fk;
            for (int32_t i = 0; i < fk; i++)
                de[i] += dx[i];
        }
        if (g->d_dense)
            for (int32_t i = 0; i < d->n_dense; i++)
                g->d_dense[r * d->n_dense + i] += dx[fk + i];
    }
    return MML_OK;
}

static int64_t dcn_n_params(void *self)
{
    dcn *d = self;
    return mml__dnn_n_params(&d->dnn) + d->np;
}

static mml_param *dcn_param(void *self, int64_t i)
{
    dcn *d = self;
    return mml__dnn_then_side_param(&d->dnn, d->p, d->np, i);
}

static mml_lora *dcn_experts(void *self) { return ((dcn *)self)->dnn.lora; }
static uint64_t dcn_pattern(void *self) { return mml_tower_relu_pattern(((dcn *)self)->dnn.tower); }
static int dcn_replay(void *self, int32_t replay)
{
    return mml_tower_set_dropout_replay(((dcn *)self)->dnn.tower, replay);
}

const mml_backbone_vtable mml__backbone_dcn = {
    sizeof(mml_backbone_vtable), MML_BACKBONE_ABI_VERSION, "dcn", 1, 0, dcn_infer_shape,
    dcn_create, dcn_destroy, dcn_forward, dcn_backward, dcn_n_params, dcn_param,
    dcn_experts, dcn_pattern, dcn_replay, NULL, NULL};
