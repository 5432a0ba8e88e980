/* xDeepFM: a DNN tower over [e_1 .. e_F, numeric] plus a compressed
 * interaction network (CIN) over the field embeddings X^0 (F maps of width k):
 *
 *     X^l_m = ReLU( sum_{i,j} W^l_{i F + j, m} (X^{l-1}_i o X^0_j) ),  m < H_l,
 *
 * where X^{l-1} are the M_l maps layer l - 1 passes on. With split_half, a
 * non-final layer passes its first H_l / 2 maps on and sends the other half
 * to the output; the final layer (and every layer without split_half) sends
 * all its maps to the output. The output maps are summed over k and go
 * through a bias-free Linear; the tower's head is a bias-free
 * Linear(d_last -> 1); the model adds the linear term.
 *
 * Layout: the maps of a row are stored position-major, (row, t, map), so a
 * whole layer is one matrix product (n k x M_l F) (M_l F x H_l). */
#include <stdio.h>
#include <string.h>

#include "backbones/backbones.h"

#define MAX_LAYERS 32
#define MAX_MAPS 65536

typedef struct xdeepfm {
    mml_ctx *ctx;
    int32_t F, k, n_dense, L, split;
    int32_t H[MAX_LAYERS], M[MAX_LAYERS], start[MAX_LAYERS], off[MAX_LAYERS], n_out;
    int64_t yoff[MAX_LAYERS];
    int32_t maxH, maxMF;
    mml__dnn dnn;
    mml_param p[MAX_LAYERS + 2]; /* cin.l.W ..., cin.head.w, head.w */
    char names[MAX_LAYERS][24];
    int32_t np;
    float *tx, *X0, *Y, *Z, *pool;
    size_t cap_tx, cap_X0, cap_Y, cap_Z, cap_pool;
    float *dh, *dx, *dZ, *dYa, *dYb, *dX0;
    size_t cap_dh, cap_dx, cap_dZ, cap_dYa, cap_dYb, cap_dX0;
    const float *h; /* tower output of the last forward pass */
    int64_t n;
} xdeepfm;

static const int32_t default_sizes[MAX_LAYERS] = {
    128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
    128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128};

int mml_xdeepfm_options_init_sized(mml_xdeepfm_options *out, uint32_t struct_size)
{
    mml_xdeepfm_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->struct_size = (uint32_t)sizeof *opt;
    opt->n_layers = 2;
    opt->layer_sizes = default_sizes;
    opt->split_half = 1;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_xdeepfm_options);
}

/* The CIN's shape from the options. */
typedef struct cin_shape {
    int32_t L, split, H[MAX_LAYERS], M[MAX_LAYERS], start[MAX_LAYERS], off[MAX_LAYERS], n_out;
    int64_t n_weights; /* sum of M_l F H_l */
} cin_shape;

static int xdeepfm_shape(mml_ctx *ctx, const mml_backbone_config *c, cin_shape *s)
{
    mml_xdeepfm_options o;
    mml_xdeepfm_options_init(&o);
    if (c->options) {
        int rc = MML__COPY_OPTIONS(ctx, &o, c->options, mml_xdeepfm_options, "xdeepfm");
        if (rc < 0)
            return rc;
    }
    if (o.n_layers < 1 || o.n_layers > MAX_LAYERS)
        return mml__error(ctx, MML_EINVAL, "xdeepfm: n_layers %d outside [1, %d]", o.n_layers,
                          MAX_LAYERS);
    memset(s, 0, sizeof *s);
    s->L = o.n_layers;
    s->split = o.split_half != 0;
    const int32_t *sizes = o.layer_sizes ? o.layer_sizes : default_sizes;
    int32_t M = c->n_fields;
    for (int32_t l = 0; l < s->L; l++) {
        int32_t H = sizes[l];
        if (H < 1 || H > MAX_MAPS)
            return mml__error(ctx, MML_EINVAL, "xdeepfm: CIN layer %d has size %d, outside [1, %d]",
                              l, H, MAX_MAPS);
        int last = l == s->L - 1;
        if (s->split && !last && H % 2)
            return mml__error(ctx, MML_EINVAL,
                              "xdeepfm: CIN layer %d has an odd size %d; with split_half every "
                              "layer but the last needs an even size",
                              l, H);
        s->H[l] = H;
        s->M[l] = M;
        s->start[l] = s->split && !last ? H / 2 : 0;
        s->off[l] = s->n_out;
        s->n_out += H - s->start[l];
        s->n_weights += (int64_t)M * c->n_fields * H;
        M = s->split && !last ? H / 2 : H;
    }
    return MML_OK;
}

static int32_t tower_width(const mml_backbone_config *c) { return c->n_fields * c->embed_dim + c->n_dense; }

/* Invalid options report 0 values here; create refuses them with a message. */
static int xdeepfm_infer_shape(void *user, mml_ctx *ctx, const mml_backbone_config *c,
                            int64_t *n_values)
{
    (void)user;
    (void)ctx;
    cin_shape s;
    *n_values = 0;
    if (xdeepfm_shape(NULL, c, &s) < 0)
        return MML_OK;
    *n_values = mml__dnn_param_count(c, tower_width(c)) + s.n_weights + s.n_out +
                c->hidden[c->n_hidden - 1];
    return MML_OK;
}

static void xdeepfm_destroy(void *self)
{
    xdeepfm *d = self;
    if (!d)
        return;
    mml_ctx *ctx = d->ctx;
    mml__dnn_destroy(&d->dnn);
    for (int32_t i = 0; i < d->np; i++)
        mml__side_param_free(ctx, &d->p[i]);
    float **bufs[] = {&d->tx, &d->X0, &d->Y, &d->Z, &d->pool, &d->dh,
                      &d->dx, &d->dZ, &d->dYa, &d->dYb, &d->dX0};
    size_t caps[] = {d->cap_tx, d->cap_X0, d->cap_Y, d->cap_Z, d->cap_pool, d->cap_dh,
                     d->cap_dx, d->cap_dZ, d->cap_dYa, d->cap_dYb, d->cap_dX0};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
        mml__free(ctx, *bufs[i], caps[i] * sizeof(float));
    mml__free(ctx, d, sizeof *d);
}

static int xdeepfm_create(void *user, mml_ctx *ctx, const mml_backbone_config *c, void **self)
{
    (void)user;
    cin_shape s;
    int rc = xdeepfm_shape(ctx, c, &s);
    if (rc < 0)
        return rc;
    xdeepfm *d = mml__calloc(ctx, 1, sizeof *d);
    if (!d)
        return mml__error(ctx, MML_ENOMEM, "xdeepfm: out of memory");
    d->ctx = ctx;
    d->F = c->n_fields;
    d->k = c->embed_dim;
    d->n_dense = c->n_dense;
    d->L = s.L;
    d->split = s.split;
    d->n_out = s.n_out;
    for (int32_t l = 0; l < s.L; l++) {
        d->H[l] = s.H[l];
        d->M[l] = s.M[l];
        d->start[l] = s.start[l];
        d->off[l] = s.off[l];
        d->yoff[l] = l ? d->yoff[l - 1] + d->H[l - 1] : 0;
        d->maxH = d->H[l] > d->maxH ? d->H[l] : d->maxH;
        d->maxMF = d->M[l] * d->F > d->maxMF ? d->M[l] * d->F : d->maxMF;
    }
    rc = mml__dnn_create(&d->dnn, ctx, c, tower_width(c));
    for (int32_t l = 0; rc >= 0 && l < d->L; l++) {
        snprintf(d->names[l], sizeof d->names[0], "cin.%d.W", l);
        int64_t fan_in = (int64_t)d->M[l] * d->F;
        rc = mml__side_param_init(ctx, &d->p[d->np], d->names[l], fan_in, d->H[l], fan_in, d->H[l],
                                  c->stream + 1 + (uint64_t)l);
        if (rc >= 0)
            d->np++;
    }
    if (rc >= 0) {
        rc = mml__head_init(ctx, &d->p[d->np], "cin.head.w", d->n_out, c->stream + 1 + MAX_LAYERS);
        if (rc >= 0)
            d->np++;
    }
    if (rc >= 0) {
        rc = mml__head_init(ctx, &d->p[d->np], "head.w", mml__dnn_d_out(&d->dnn), c->stream);
        if (rc >= 0)
            d->np++;
    }
    if (rc < 0) {
        xdeepfm_destroy(d);
        return rc;
    }
    *self = d;
    return MML_OK;
}

/* Z (n k x M_l F) = the outer products X^{l-1}_i o X^0_j of layer l. */
static void outer_products(const xdeepfm *d, int32_t l, float *Z)
{
    int64_t nk = d->n * d->k;
    int32_t F = d->F, M = d->M[l], MF = M * F;
    const float *Xp = l ? d->Y + d->yoff[l - 1] * nk : d->X0;
    int32_t ld = l ? d->H[l - 1] : F;
    for (int64_t rt = 0; rt < nk; rt++) {
        const float *x0 = d->X0 + rt * F, *xp = Xp + rt * ld;
        float *z = Z + rt * MF;
        for (int32_t i = 0; i < M; i++)
            for (int32_t j = 0; j < F; j++)
                z[i * F + j] = xp[i] * x0[j];
    }
}

static int xdeepfm_forward(void *self, const mml_backbone_input *in, float *logit)
{
    xdeepfm *d = self;
    mml_ctx *ctx = d->ctx;
    int64_t n = in->n_rows, nk = n * d->k;
    int32_t F = d->F, k = d->k, fk = F * k, tw = fk + d->n_dense;
    d->n = 0;
    if (d->n_dense && !in->dense)
        return mml__error(ctx, MML_EINVAL, "xdeepfm: numeric values missing");
    int64_t sumH = d->yoff[d->L - 1] + d->H[d->L - 1];
    int rc;
    if ((rc = mml__ensure_floats(ctx, &d->tx, &d->cap_tx, (size_t)(n * tw))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->X0, &d->cap_X0, (size_t)(nk * F))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->Y, &d->cap_Y, (size_t)(nk * sumH))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->Z, &d->cap_Z, (size_t)(nk * d->maxMF))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->pool, &d->cap_pool, (size_t)(n * d->n_out))) < 0)
        return rc;
    for (int64_t r = 0; r < n; r++) {
        memcpy(d->tx + r * tw, in->emb + r * fk, sizeof(float) * (size_t)fk);
        if (d->n_dense)
            memcpy(d->tx + r * tw + fk, in->dense + r * d->n_dense, sizeof(float) * (size_t)d->n_dense);
    }
    rc = mml__dnn_forward(&d->dnn, d->tx, n, in, &d->h);
    if (rc < 0)
        return rc;
    d->n = n;
    for (int64_t r = 0; r < n; r++)
        for (int32_t j = 0; j < F; j++)
            for (int32_t t = 0; t < k; t++)
                d->X0[(r * k + t) * F + j] = in->emb[(r * F + j) * k + t];
    memset(d->pool, 0, sizeof(float) * (size_t)(n * d->n_out));
    for (int32_t l = 0; l < d->L; l++) {
        int32_t H = d->H[l], MF = d->M[l] * F;
        float *Y = d->Y + d->yoff[l] * nk;
        outer_products(d, l, d->Z);
        rc = mml__gemm_rm(ctx, 0, 0, nk, H, MF, 1.0f, d->Z, d->p[l].value, 0.0f, Y);
        if (rc < 0) {
            d->n = 0;
            return rc;
        }
        for (int64_t i = 0; i < nk * H; i++)
            Y[i] = Y[i] > 0.0f ? Y[i] : 0.0f;
        for (int64_t r = 0; r < n; r++) {
            float *pr = d->pool + r * d->n_out + d->off[l];
            for (int32_t t = 0; t < k; t++) {
                const float *y = Y + (r * k + t) * H + d->start[l];
                for (int32_t m = 0; m < H - d->start[l]; m++)
                    pr[m] += y[m];
            }
        }
    }
    const mml_param *cin_head = &d->p[d->np - 2], *head = &d->p[d->np - 1];
    int32_t dout = (int32_t)head->rows;
    for (int64_t r = 0; r < n; r++) {
        const float *h = d->h + r * dout, *pr = d->pool + r * d->n_out;
        float s = 0.0f;
        for (int32_t j = 0; j < dout; j++)
            s += h[j] * head->value[j];
        for (int32_t j = 0; j < d->n_out; j++)
            s += pr[j] * cin_head->value[j];
        logit[r] = s;
    }
    return MML_OK;
}

static int xdeepfm_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    xdeepfm *d = self;
    mml_ctx *ctx = d->ctx;
    int64_t n = d->n, nk = n * d->k;
    if (n < 1)
        return mml__error(ctx, MML_ESTATE, "xdeepfm: backward without a forward pass");
    int32_t F = d->F, k = d->k, fk = F * k, tw = fk + d->n_dense;
    mml_param *cin_head = &d->p[d->np - 2], *head = &d->p[d->np - 1];
    int32_t dout = (int32_t)head->rows;
    int rc = mml__ensure_floats(ctx, &d->dh, &d->cap_dh, (size_t)(n * dout));
    if (rc < 0)
        return rc;
    for (int64_t r = 0; r < n; r++)
        for (int32_t j = 0; j < dout; j++)
            d->dh[r * dout + j] = dlogit[r] * head->value[j];
    if (!head->frozen)
        for (int64_t r = 0; r < n; r++)
            for (int32_t j = 0; j < dout; j++)
                head->grad[j] += d->h[r * dout + j] * dlogit[r];
    if (!cin_head->frozen)
        for (int64_t r = 0; r < n; r++)
            for (int32_t j = 0; j < d->n_out; j++)
                cin_head->grad[j] += d->pool[r * d->n_out + j] * dlogit[r];
    int need_dx = g->d_emb || (g->d_dense && d->n_dense);
    if (need_dx) {
        rc = mml__ensure_floats(ctx, &d->dx, &d->cap_dx, (size_t)(n * tw));
        if (rc < 0)
            return rc;
        memset(d->dx, 0, sizeof(float) * (size_t)(n * tw));
    }
    rc = mml__dnn_backward(&d->dnn, d->dh, need_dx ? d->dx : NULL, g);
    if (rc < 0)
        return rc;
    if (need_dx)
        for (int64_t r = 0; r < n; r++) {
            const float *dx = d->dx + r * tw;
            if (g->d_emb)
                for (int32_t i = 0; i < fk; i++)
                    g->d_emb[r * fk + i] += dx[i];
            if (g->d_dense)
                for (int32_t i = 0; i < d->n_dense; i++)
                    g->d_dense[r * d->n_dense + i] += dx[fk + i];
        }
    /* The CIN, when something there needs a gradient. */
    if (!g->d_emb && !mml__any_unfrozen(d->p, d->L))
        return MML_OK;
    size_t wide = (size_t)(nk * d->maxH);
    if ((rc = mml__ensure_floats(ctx, &d->dYa, &d->cap_dYa, wide)) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->dYb, &d->cap_dYb, wide)) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->dZ, &d->cap_dZ, (size_t)(nk * d->maxMF))) < 0)
        return rc;
    float *dX0 = NULL;
    if (g->d_emb) {
        if ((rc = mml__ensure_floats(ctx, &d->dX0, &d->cap_dX0, (size_t)(nk * F))) < 0)
            return rc;
        dX0 = d->dX0;
        memset(dX0, 0, sizeof(float) * (size_t)(nk * F));
    }
    float *dY = d->dYa, *dYp = d->dYb;
    memset(dY, 0, sizeof(float) * (size_t)(nk * d->H[d->L - 1]));
    for (int32_t l = d->L - 1; l >= 0; l--) {
        int32_t H = d->H[l], M = d->M[l], MF = M * F, st = d->start[l];
        const float *Y = d->Y + d->yoff[l] * nk;
        /* The maps that reach the output, then the ReLU. */
        for (int64_t r = 0; r < n; r++) {
            const float *ch = cin_head->value + d->off[l];
            for (int32_t t = 0; t < k; t++) {
                float *dy = dY + (r * k + t) * H + st;
                for (int32_t m = 0; m < H - st; m++)
                    dy[m] += dlogit[r] * ch[m];
            }
        }
        for (int64_t i = 0; i < nk * H; i++)
            dY[i] = Y[i] > 0.0f ? dY[i] : 0.0f;
        mml_param *W = &d->p[l];
        if (!W->frozen) {
            outer_products(d, l, d->Z);
            rc = mml__gemm_rm(ctx, 1, 0, MF, H, nk, 1.0f, d->Z, dY, 1.0f, W->grad);
            if (rc < 0)
                return rc;
        }
        if (l == 0 && !dX0)
            break;
        rc = mml__gemm_rm(ctx, 0, 1, nk, MF, H, 1.0f, dY, W->value, 0.0f, d->dZ);
        if (rc < 0)
            return rc;
        /* Split dZ over the two factors X^{l-1}_i and X^0_j. */
        const float *Xp = l ? d->Y + d->yoff[l - 1] * nk : d->X0;
        int32_t ld = l ? d->H[l - 1] : F;
        if (l > 0)
            memset(dYp, 0, sizeof(float) * (size_t)(nk * ld));
        for (int64_t rt = 0; rt < nk; rt++) {
            const float *dz = d->dZ + rt * MF, *x0 = d->X0 + rt * F, *xp = Xp + rt * ld;
            float *dxp = l ? dYp + rt * ld : dX0 + rt * F;
            float *dx0 = dX0 ? dX0 + rt * F : NULL;
            for (int32_t i = 0; i < M; i++) {
                float s = 0.0f;
                for (int32_t j = 0; j < F; j++) {
                    s += dz[i * F + j] * x0[j];
                    if (dx0)
                        dx0[j] += dz[i * F + j] * xp[i];
                }
                dxp[i] += s;
            }
        }
        float *swap = dY;
        dY = dYp;
        dYp = swap;
    }
    if (dX0)
        for (int64_t r = 0; r < n; r++)
            for (int32_t j = 0; j < F; j++)
                for (int32_t t = 0; t < k; t++)
                    g->d_emb[(r * F + j) * k + t] += dX0[(r * k + t) * F + j];
    return MML_OK;
}

static int64_t xdeepfm_n_params(void *self)
{
    xdeepfm *d = self;
    return mml__dnn_n_params(&d->dnn) + d->np;
}

static mml_param *xdeepfm_param(void *self, int64_t i)
{
    xdeepfm *d = self;
    return mml__dnn_then_side_param(&d->dnn, d->p, d->np, i);
}

static mml_lora *xdeepfm_experts(void *self) { return ((xdeepfm *)self)->dnn.lora; }

static uint64_t xdeepfm_pattern(void *self)
{
    xdeepfm *d = self;
    uint64_t h = mml_tower_relu_pattern(d->dnn.tower);
    if (d->n < 1)
        return h;
    return mml__pattern_fold(h, d->Y, d->n * d->k * (d->yoff[d->L - 1] + d->H[d->L - 1]));
}

static int xdeepfm_replay(void *self, int32_t replay)
{
    return mml_tower_set_dropout_replay(((xdeepfm *)self)->dnn.tower, replay);
}

const mml_backbone_vtable mml__backbone_xdeepfm = {
    sizeof(mml_backbone_vtable), MML_BACKBONE_ABI_VERSION, "xdeepfm", 1, 0, xdeepfm_infer_shape,
    xdeepfm_create, xdeepfm_destroy, xdeepfm_forward, xdeepfm_backward, xdeepfm_n_params,
    xdeepfm_param, xdeepfm_experts, xdeepfm_pattern, xdeepfm_replay, NULL, NULL};
