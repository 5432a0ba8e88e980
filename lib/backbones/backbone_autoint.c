/* AutoInt: a DNN tower over [e_1 .. e_F, numeric] and interacting layers
 * over the F field vectors. Layer l, with input rows x_1 .. x_F (width d_in:
 * k for the first layer, heads * head_dim after), computes per head h
 *
 *     q_i = x_i W_Q^h, k_i = x_i W_K^h, v_i = x_i W_V^h        (head_dim wide)
 *     a_ij = softmax_j <q_i, k_j>                                (unscaled)
 *     o_i^h = sum_j a_ij v_j
 *
 * and y_i = ReLU([o_i^1 .. o_i^H] + x_i W_res) (W_res only with residual).
 * The logit is a bias-free Linear over [y of the last layer, flattened field
 * after field, tower out]; the model adds the linear term. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backbones/backbones.h"

#define MAX_LAYERS 32
_Static_assert(4 * MAX_LAYERS + 1 <= MML__MAX_PARAMS, "4 matrices a layer and head.w fit");

typedef struct autoint {
    mml__deep base; /* p holds per layer W_Q, W_K, W_V[, W_res]; head.w */
    int32_t L, H, dh, A, res, per_layer;
    /* Forward state: X holds x of every layer and the last output, QKV the
     * projections, P the attention weights (row, head, i, j). */
    float *X, *QKV, *P;
    size_t cap_X, cap_QKV, cap_P;
    /* Backward scratch. */
    float *dY, *dXn, *dQKV, *tmp;
    size_t cap_dY, cap_dXn, cap_dQKV, cap_tmp;
} autoint;

static const mml_autoint_options defaults = {.struct_size = sizeof(mml_autoint_options),
                                             .n_layers = 3,
                                             .n_heads = 4,
                                             .head_dim = 8,
                                             .residual = 1};

int mml_autoint_options_init_sized(mml_autoint_options *out, uint32_t struct_size)
{
    return mml__init_versioned(out, &defaults, sizeof defaults, struct_size,
                               MML__OLDER_SIZES_mml_autoint_options);
}

static int autoint_check(mml_ctx *ctx, const mml_backbone_config *c, const mml__opts *opts)
{
    const mml_autoint_options *o = &opts->autoint;
    (void)c;
    if (o->n_layers < 1 || o->n_layers > MAX_LAYERS)
        return mml__error(ctx, MML_EINVAL, "autoint: n_layers %d outside [1, %d]", o->n_layers,
                          MAX_LAYERS);
    if (o->n_heads < 1 || o->n_heads > 256 || o->head_dim < 1 || o->head_dim > 4096 ||
        o->n_heads * o->head_dim > 65536)
        return mml__error(ctx, MML_EINVAL,
                          "autoint: %d heads of width %d (heads 1..256, width 1..4096, at most "
                          "65536 in all)",
                          o->n_heads, o->head_dim);
    return MML_OK;
}

/* The interacting layers, and head.w's rows for their output. */
static int64_t autoint_n_values(const mml_backbone_config *c, const mml__opts *opts)
{
    const mml_autoint_options *o = &opts->autoint;
    int64_t A = (int64_t)o->n_heads * o->head_dim, n = 0, din = c->embed_dim;
    for (int32_t l = 0; l < o->n_layers; l++) {
        n += (o->residual ? 4 : 3) * din * A;
        din = A;
    }
    return n + c->n_fields * A;
}

static int autoint_create(mml__deep *base, const mml_backbone_config *c, const mml__opts *opts)
{
    autoint *d = (autoint *)base;
    const mml_autoint_options *o = &opts->autoint;
    d->L = o->n_layers;
    d->H = o->n_heads;
    d->dh = o->head_dim;
    d->A = o->n_heads * o->head_dim;
    d->res = o->residual != 0;
    d->per_layer = d->res ? 4 : 3;
    base->head_side = base->F * d->A;
    static const char *const kind[4] = {"W_Q", "W_K", "W_V", "W_res"};
    int rc = MML_OK;
    for (int32_t l = 0; rc >= 0 && l < d->L; l++) {
        int32_t din = l ? d->A : base->k;
        for (int32_t t = 0; rc >= 0 && t < d->per_layer; t++) {
            char name[MML__PARAM_NAME_MAX];
            snprintf(name, sizeof name, "autoint.%d.%s", l, kind[t]);
            /* Per-head matrices take one head's fans; W_res is one matrix. */
            rc = mml__deep_add_param(base, name, din, d->A, din, t < 3 ? d->dh : d->A,
                                     c->stream + 1 + (uint64_t)(4 * l + t));
        }
    }
    return rc;
}

static void autoint_destroy(mml__deep *base)
{
    autoint *d = (autoint *)base;
    float *const bufs[] = {d->X, d->QKV, d->P, d->dY, d->dXn, d->dQKV, d->tmp};
    const size_t caps[] = {d->cap_X, d->cap_QKV, d->cap_P, d->cap_dY, d->cap_dXn, d->cap_dQKV,
                           d->cap_tmp};
    mml__free_floats(base->ctx, bufs, caps, sizeof caps / sizeof caps[0]);
}

/* Offsets of layer l's input in X, and of its projections in QKV. */
static float *X_of(const autoint *d, int32_t l)
{
    int64_t nF = d->base.n * d->base.F;
    return l == 0 ? d->X : d->X + nF * d->base.k + (int64_t)(l - 1) * nF * d->A;
}
static float *Q_of(const autoint *d, int32_t l)
{
    return d->QKV + (int64_t)l * 3 * d->base.n * d->base.F * d->A;
}
static float *P_of(const autoint *d, int32_t l)
{
    return d->P + (int64_t)l * d->base.n * d->H * d->base.F * d->base.F;
}
static mml_param *W_of(autoint *d, int32_t l, int32_t t)
{
    return &d->base.p[l * d->per_layer + t];
}

static int autoint_forward(mml__deep *base, const mml_backbone_input *in)
{
    autoint *d = (autoint *)base;
    mml_ctx *ctx = base->ctx;
    int64_t n = in->n_rows, nF = n * base->F;
    int32_t F = base->F, k = base->k, A = d->A, H = d->H, hd = d->dh;
    int rc;
    if ((rc = mml__deep_flat_input(base, in)) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->X, &d->cap_X, (size_t)(nF * (k + (int64_t)d->L * A)))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->QKV, &d->cap_QKV, (size_t)(3 * d->L * nF * A))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->P, &d->cap_P, (size_t)(d->L * nF * H * F))) < 0 ||
        (rc = mml__deep_tower_forward(base, in)) < 0)
        return rc;
    base->n = n; /* the offsets below depend on it */
    memcpy(d->X, in->emb, sizeof(float) * (size_t)(nF * k));
    for (int32_t l = 0; l < d->L; l++) {
        int32_t din = l ? A : k;
        const float *X = X_of(d, l);
        float *Q = Q_of(d, l), *K = Q + nF * A, *V = K + nF * A, *Y = X_of(d, l + 1);
        float *P = P_of(d, l);
        if ((rc = mml__gemm_rm(ctx, 0, 0, nF, A, din, 1.0f, X, W_of(d, l, 0)->value, 0.0f, Q)) < 0 ||
            (rc = mml__gemm_rm(ctx, 0, 0, nF, A, din, 1.0f, X, W_of(d, l, 1)->value, 0.0f, K)) < 0 ||
            (rc = mml__gemm_rm(ctx, 0, 0, nF, A, din, 1.0f, X, W_of(d, l, 2)->value, 0.0f, V)) < 0)
            return rc;
        for (int64_t r = 0; r < n; r++)
            for (int32_t h = 0; h < H; h++)
                for (int32_t i = 0; i < F; i++) {
                    const float *q = Q + (r * F + i) * A + h * hd;
                    float *a = P + ((r * H + h) * F + i) * F;
                    float mx = -INFINITY;
                    for (int32_t j = 0; j < F; j++) {
                        const float *kv = K + (r * F + j) * A + h * hd;
                        float s = 0.0f;
                        for (int32_t t = 0; t < hd; t++)
                            s += q[t] * kv[t];
                        a[j] = s;
                        mx = s > mx ? s : mx;
                    }
                    float sum = 0.0f;
                    for (int32_t j = 0; j < F; j++) {
                        a[j] = expf(a[j] - mx);
                        sum += a[j];
                    }
                    float *o = Y + (r * F + i) * A + h * hd;
                    memset(o, 0, sizeof(float) * (size_t)hd);
                    for (int32_t j = 0; j < F; j++) {
                        a[j] /= sum;
                        const float *v = V + (r * F + j) * A + h * hd;
                        for (int32_t t = 0; t < hd; t++)
                            o[t] += a[j] * v[t];
                    }
                }
        if (d->res &&
            (rc = mml__gemm_rm(ctx, 0, 0, nF, A, din, 1.0f, X, W_of(d, l, 3)->value, 1.0f, Y)) < 0)
            return rc;
        for (int64_t i = 0; i < nF * A; i++)
            Y[i] = Y[i] > 0.0f ? Y[i] : 0.0f;
    }
    base->z = X_of(d, d->L);
    return MML_OK;
}

/* Backward of interacting layer l: dY (n F x A) holds d loss / d y on entry
 * (overwritten); dX (n F x d_in) receives d loss / d x when not NULL. */
static int layer_backward(autoint *d, int32_t l, float *dY, float *dX)
{
    mml_ctx *ctx = d->base.ctx;
    int64_t n = d->base.n, nF = n * d->base.F;
    int32_t F = d->base.F, A = d->A, H = d->H, hd = d->dh, din = l ? A : d->base.k;
    const float *X = X_of(d, l), *Y = X_of(d, l + 1), *P = P_of(d, l);
    const float *Q = Q_of(d, l), *K = Q + nF * A, *V = K + nF * A;
    float *dQ = d->dQKV, *dK = dQ + nF * A, *dV = dK + nF * A, *dP = d->tmp;
    int rc;
    for (int64_t i = 0; i < nF * A; i++)
        dY[i] = Y[i] > 0.0f ? dY[i] : 0.0f;
    if (d->res) {
        mml_param *Wr = W_of(d, l, 3);
        if (!Wr->frozen && (rc = mml__gemm_rm(ctx, 1, 0, din, A, nF, 1.0f, X, dY, 1.0f, Wr->grad)) < 0)
            return rc;
        if (dX && (rc = mml__gemm_rm(ctx, 0, 1, nF, din, A, 1.0f, dY, Wr->value, 0.0f, dX)) < 0)
            return rc;
    } else if (dX) {
        memset(dX, 0, sizeof(float) * (size_t)(nF * din));
    }
    memset(dQ, 0, sizeof(float) * (size_t)(3 * nF * A));
    for (int64_t r = 0; r < n; r++)
        for (int32_t h = 0; h < H; h++)
            for (int32_t i = 0; i < F; i++) {
                const float *a = P + ((r * H + h) * F + i) * F;
                const float *dO = dY + (r * F + i) * A + h * hd;
                float c = 0.0f;
                for (int32_t j = 0; j < F; j++) {
                    const float *v = V + (r * F + j) * A + h * hd;
                    float *dv = dV + (r * F + j) * A + h * hd;
                    float s = 0.0f;
                    for (int32_t t = 0; t < hd; t++) {
                        s += dO[t] * v[t];
                        dv[t] += a[j] * dO[t];
                    }
                    dP[j] = s;
                    c += a[j] * s;
                }
                const float *q = Q + (r * F + i) * A + h * hd;
                float *dq = dQ + (r * F + i) * A + h * hd;
                for (int32_t j = 0; j < F; j++) {
                    float ds = a[j] * (dP[j] - c);
                    const float *kv = K + (r * F + j) * A + h * hd;
                    float *dk = dK + (r * F + j) * A + h * hd;
                    for (int32_t t = 0; t < hd; t++) {
                        dq[t] += ds * kv[t];
                        dk[t] += ds * q[t];
                    }
                }
            }
    for (int32_t t = 0; t < 3; t++) {
        mml_param *W = W_of(d, l, t);
        const float *dZ = dQ + (int64_t)t * nF * A;
        if (!W->frozen && (rc = mml__gemm_rm(ctx, 1, 0, din, A, nF, 1.0f, X, dZ, 1.0f, W->grad)) < 0)
            return rc;
        if (dX && (rc = mml__gemm_rm(ctx, 0, 1, nF, din, A, 1.0f, dZ, W->value, 1.0f, dX)) < 0)
            return rc;
    }
    return MML_OK;
}

static int autoint_backward(mml__deep *base, const float *dlogit, const mml_backbone_grads *g,
                            float *dx)
{
    autoint *d = (autoint *)base;
    mml_ctx *ctx = base->ctx;
    int64_t n = base->n, nF = n * base->F;
    int32_t F = base->F, k = base->k, A = d->A, FA = F * A;
    const mml_param *head = &base->p[base->np - 1];
    int rc;
    mml__deep_input_grad(base, g, dx, 1);
    /* The interacting layers, when something there needs a gradient. */
    if (!g->d_emb && !mml__any_unfrozen(base->p, base->np - 1))
        return MML_OK;
    size_t wide = (size_t)(nF * (A > k ? A : k));
    if ((rc = mml__ensure_floats(ctx, &d->dY, &d->cap_dY, wide)) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->dXn, &d->cap_dXn, wide)) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->dQKV, &d->cap_dQKV, (size_t)(3 * nF * A))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->tmp, &d->cap_tmp, (size_t)F)) < 0)
        return rc;
    float *dY = d->dY, *dX = d->dXn;
    for (int64_t r = 0; r < n; r++)
        for (int32_t j = 0; j < FA; j++)
            dY[r * FA + j] = dlogit[r] * head->value[j];
    for (int32_t l = d->L - 1; l >= 0; l--) {
        rc = layer_backward(d, l, dY, l > 0 || g->d_emb ? dX : NULL);
        if (rc < 0)
            return rc;
        float *swap = dY;
        dY = dX;
        dX = swap;
    }
    if (g->d_emb)
        for (int64_t i = 0; i < nF * k; i++)
            g->d_emb[i] += dY[i];
    return MML_OK;
}

static uint64_t autoint_pattern(const mml__deep *base, uint64_t h)
{
    const autoint *d = (const autoint *)base;
    return mml__pattern_fold(h, X_of(d, 1), base->n * base->F * (int64_t)d->A * d->L);
}

static const mml__side side = {.size = sizeof(autoint),
                               .scratch = offsetof(autoint, X),
                               MML__SIDE_OPTIONS(mml_autoint_options, defaults),
                               .check = autoint_check, .n_values = autoint_n_values,
                               .create = autoint_create, .destroy = autoint_destroy,
                               .forward = autoint_forward, .backward = autoint_backward,
                               .pattern = autoint_pattern};

MML__BACKBONE_TABLE(autoint, 1, side);
