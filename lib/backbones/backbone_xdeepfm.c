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
_Static_assert(MAX_LAYERS + 2 <= MML__MAX_PARAMS, "cin.l.W, cin.head.w and head.w fit");

typedef struct xdeepfm {
    mml__deep base; /* p holds cin.l.W ..., cin.head.w, head.w */
    int32_t L, split;
    int32_t H[MAX_LAYERS], M[MAX_LAYERS], start[MAX_LAYERS], off[MAX_LAYERS], n_out;
    int64_t yoff[MAX_LAYERS];
    int32_t maxH, maxMF;
    float *X0, *Y, *Z, *pool;
    size_t cap_X0, cap_Y, cap_Z, cap_pool;
    float *dZ, *dYa, *dYb, *dX0;
    size_t cap_dZ, cap_dYa, cap_dYb, cap_dX0;
} xdeepfm;

static const int32_t default_sizes[MAX_LAYERS] = {
    128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
    128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128};

static const mml_xdeepfm_options defaults = {.struct_size = sizeof(mml_xdeepfm_options),
                                             .n_layers = 2,
                                             .split_half = 1,
                                             .layer_sizes = default_sizes};

int mml_xdeepfm_options_init_sized(mml_xdeepfm_options *out, uint32_t struct_size)
{
    return mml__init_versioned(out, &defaults, sizeof defaults, struct_size,
                               MML__OLDER_SIZES_mml_xdeepfm_options);
}

/* The CIN's shape from the options. */
typedef struct cin_shape {
    int32_t L, split, H[MAX_LAYERS], M[MAX_LAYERS], start[MAX_LAYERS], off[MAX_LAYERS], n_out;
    int64_t n_weights; /* sum of M_l F H_l */
} cin_shape;

static int cin_shape_of(mml_ctx *ctx, const mml_backbone_config *c, const mml_xdeepfm_options *o,
                        cin_shape *s)
{
    if (o->n_layers < 1 || o->n_layers > MAX_LAYERS)
        return mml__error(ctx, MML_EINVAL, "xdeepfm: n_layers %d outside [1, %d]", o->n_layers,
                          MAX_LAYERS);
    memset(s, 0, sizeof *s);
    s->L = o->n_layers;
    s->split = o->split_half != 0;
    const int32_t *sizes = o->layer_sizes ? o->layer_sizes : default_sizes;
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

static int xdeepfm_check(mml_ctx *ctx, const mml_backbone_config *c, const mml__opts *o)
{
    cin_shape s;
    return cin_shape_of(ctx, c, &o->xdeepfm, &s);
}

/* The CIN's weights and cin.head.w. */
static int64_t xdeepfm_n_values(const mml_backbone_config *c, const mml__opts *o)
{
    cin_shape s;
    cin_shape_of(NULL, c, &o->xdeepfm, &s); /* checked before */
    return s.n_weights + s.n_out;
}

static int xdeepfm_create(mml__deep *base, const mml_backbone_config *c, const mml__opts *o)
{
    xdeepfm *d = (xdeepfm *)base;
    cin_shape shape, *s = &shape;
    cin_shape_of(NULL, c, &o->xdeepfm, s); /* checked before */
    d->L = s->L;
    d->split = s->split;
    d->n_out = s->n_out;
    for (int32_t l = 0; l < s->L; l++) {
        d->H[l] = s->H[l];
        d->M[l] = s->M[l];
        d->start[l] = s->start[l];
        d->off[l] = s->off[l];
        d->yoff[l] = l ? d->yoff[l - 1] + d->H[l - 1] : 0;
        d->maxH = d->H[l] > d->maxH ? d->H[l] : d->maxH;
        d->maxMF = d->M[l] * base->F > d->maxMF ? d->M[l] * base->F : d->maxMF;
    }
    int rc = MML_OK;
    for (int32_t l = 0; rc >= 0 && l < d->L; l++) {
        char name[MML__PARAM_NAME_MAX];
        snprintf(name, sizeof name, "cin.%d.W", l);
        int64_t fan_in = (int64_t)d->M[l] * base->F;
        rc = mml__deep_add_param(base, name, fan_in, d->H[l], fan_in, d->H[l],
                                 c->stream + 1 + (uint64_t)l);
    }
    if (rc >= 0)
        rc = mml__deep_add_param(base, "cin.head.w", d->n_out, 1, d->n_out, 1,
                                 c->stream + 1 + MAX_LAYERS);
    return rc;
}

static void xdeepfm_destroy(mml__deep *base)
{
    xdeepfm *d = (xdeepfm *)base;
    float *const bufs[] = {d->X0, d->Y, d->Z, d->pool, d->dZ, d->dYa, d->dYb, d->dX0};
    const size_t caps[] = {d->cap_X0, d->cap_Y, d->cap_Z, d->cap_pool,
                           d->cap_dZ, d->cap_dYa, d->cap_dYb, d->cap_dX0};
    mml__free_floats(base->ctx, bufs, caps, sizeof caps / sizeof caps[0]);
}

/* Z (n k x M_l F) = the outer products X^{l-1}_i o X^0_j of layer l. */
static void outer_products(const xdeepfm *d, int32_t l, float *Z)
{
    int64_t nk = d->base.n * d->base.k;
    int32_t F = d->base.F, M = d->M[l], MF = M * F;
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

static int xdeepfm_forward(mml__deep *base, const mml_backbone_input *in)
{
    xdeepfm *d = (xdeepfm *)base;
    mml_ctx *ctx = base->ctx;
    int64_t n = in->n_rows, nk = n * base->k;
    int32_t F = base->F, k = base->k;
    int64_t sumH = d->yoff[d->L - 1] + d->H[d->L - 1];
    int rc;
    if ((rc = mml__deep_flat_input(base, in)) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->X0, &d->cap_X0, (size_t)(nk * F))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->Y, &d->cap_Y, (size_t)(nk * sumH))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->Z, &d->cap_Z, (size_t)(nk * d->maxMF))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->pool, &d->cap_pool, (size_t)(n * d->n_out))) < 0 ||
        (rc = mml__deep_tower_forward(base, in)) < 0)
        return rc;
    base->n = n;
    for (int64_t r = 0; r < n; r++)
        for (int32_t j = 0; j < F; j++)
            for (int32_t t = 0; t < k; t++)
                d->X0[(r * k + t) * F + j] = in->emb[(r * F + j) * k + t];
    memset(d->pool, 0, sizeof(float) * (size_t)(n * d->n_out));
    for (int32_t l = 0; l < d->L; l++) {
        int32_t H = d->H[l], MF = d->M[l] * F;
        float *Y = d->Y + d->yoff[l] * nk;
        outer_products(d, l, d->Z);
        rc = mml__gemm_rm(ctx, 0, 0, nk, H, MF, 1.0f, d->Z, d->base.p[l].value, 0.0f, Y);
        if (rc < 0)
            return rc;
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
    return MML_OK;
}

/* The pooled maps through cin.head.w, after the tower's part of the logit. */
static void xdeepfm_logit(const mml__deep *base, float *logit)
{
    const xdeepfm *d = (const xdeepfm *)base;
    const mml_param *cin_head = &base->p[base->np - 2];
    for (int64_t r = 0; r < base->n; r++) {
        const float *pr = d->pool + r * d->n_out;
        float s = logit[r];
        for (int32_t j = 0; j < d->n_out; j++)
            s += pr[j] * cin_head->value[j];
        logit[r] = s;
    }
}

static int xdeepfm_backward(mml__deep *base, const float *dlogit, const mml_backbone_grads *g,
                            float *dx)
{
    xdeepfm *d = (xdeepfm *)base;
    mml_ctx *ctx = base->ctx;
    int64_t n = base->n, nk = n * base->k;
    int32_t F = base->F, k = base->k;
    mml_param *cin_head = &base->p[base->np - 2];
    int rc;
    if (!cin_head->frozen)
        for (int64_t r = 0; r < n; r++)
            for (int32_t j = 0; j < d->n_out; j++)
                cin_head->grad[j] += d->pool[r * d->n_out + j] * dlogit[r];
    mml__deep_input_grad(base, g, dx, 1);
    /* The CIN, when something there needs a gradient. */
    if (!g->d_emb && !mml__any_unfrozen(base->p, d->L))
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
        mml_param *W = &d->base.p[l];
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

static uint64_t xdeepfm_pattern(const mml__deep *base, uint64_t h)
{
    const xdeepfm *d = (const xdeepfm *)base;
    return mml__pattern_fold(h, d->Y, base->n * base->k * (d->yoff[d->L - 1] + d->H[d->L - 1]));
}

static const mml__side side = {.size = sizeof(xdeepfm),
                               .scratch = offsetof(xdeepfm, X0),
                               MML__SIDE_OPTIONS(mml_xdeepfm_options, defaults),
                               .check = xdeepfm_check, .n_values = xdeepfm_n_values,
                               .create = xdeepfm_create, .destroy = xdeepfm_destroy,
                               .forward = xdeepfm_forward, .logit = xdeepfm_logit,
                               .backward = xdeepfm_backward, .pattern = xdeepfm_pattern};

MML__BACKBONE_TABLE(xdeepfm, 1, side);
