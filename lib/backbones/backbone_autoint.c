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
#define MAX_PARAMS (4 * MAX_LAYERS + 1)

typedef struct autoint {
    mml_ctx *ctx;
    int32_t F, k, n_dense, L, H, dh, A, res, per_layer;
    mml__dnn dnn;
    mml_param p[MAX_PARAMS]; /* per layer W_Q, W_K, W_V[, W_res]; head.w */
    char names[MAX_PARAMS - 1][32];
    int32_t np;
    /* Forward state: X holds x of every layer and the last output, QKV the
     * projections, P the attention weights (row, head, i, j). */
    float *tx, *X, *QKV, *P;
    size_t cap_tx, cap_X, cap_QKV, cap_P;
    /* Backward scratch. */
    float *dh_buf, *dx, *dY, *dXn, *dQKV, *tmp;
    size_t cap_dh, cap_dx, cap_dY, cap_dXn, cap_dQKV, cap_tmp;
    const float *h; /* tower output of the last forward pass */
    int64_t n;
} autoint;

int mml_autoint_options_init_sized(mml_autoint_options *out, uint32_t struct_size)
{
    mml_autoint_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->struct_size = (uint32_t)sizeof *opt;
    opt->n_layers = 3;
    opt->n_heads = 4;
    opt->head_dim = 8;
    opt->residual = 1;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_autoint_options);
}

static int autoint_options(mml_ctx *ctx, const mml_backbone_config *c, mml_autoint_options *o)
{
    mml_autoint_options_init(o);
    if (c->options) {
        int rc = MML__COPY_OPTIONS(ctx, o, c->options, mml_autoint_options, "autoint");
        if (rc < 0)
            return rc;
    }
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

static int32_t tower_width(const mml_backbone_config *c) { return c->n_fields * c->embed_dim + c->n_dense; }

/* Invalid options report 0 values here; create refuses them with a message. */
static int autoint_infer_shape(void *user, mml_ctx *ctx, const mml_backbone_config *c,
                            int64_t *n_values)
{
    (void)user;
    (void)ctx;
    mml_autoint_options o;
    *n_values = 0;
    if (autoint_options(NULL, c, &o) < 0)
        return MML_OK;
    int64_t A = (int64_t)o.n_heads * o.head_dim, n = 0, din = c->embed_dim;
    for (int32_t l = 0; l < o.n_layers; l++) {
        n += (o.residual ? 4 : 3) * din * A;
        din = A;
    }
    *n_values = mml__dnn_param_count(c, tower_width(c)) + n + c->n_fields * A +
                c->hidden[c->n_hidden - 1];
    return MML_OK;
}

static void autoint_destroy(void *self)
{
    autoint *d = self;
    if (!d)
        return;
    mml_ctx *ctx = d->ctx;
    mml__dnn_destroy(&d->dnn);
    for (int32_t i = 0; i < d->np; i++)
        mml__side_param_free(ctx, &d->p[i]);
    float **bufs[] = {&d->tx, &d->X, &d->QKV, &d->P, &d->dh_buf, &d->dx, &d->dY, &d->dXn, &d->dQKV, &d->tmp};
    size_t caps[] = {d->cap_tx, d->cap_X, d->cap_QKV, d->cap_P, d->cap_dh,
                     d->cap_dx, d->cap_dY, d->cap_dXn, d->cap_dQKV, d->cap_tmp};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
        mml__free(ctx, *bufs[i], caps[i] * sizeof(float));
    mml__free(ctx, d, sizeof *d);
}

static int autoint_create(void *user, mml_ctx *ctx, const mml_backbone_config *c, void **self)
{
    (void)user;
    mml_autoint_options o;
    int rc = autoint_options(ctx, c, &o);
    if (rc < 0)
        return rc;
    autoint *d = mml__calloc(ctx, 1, sizeof *d);
    if (!d)
        return mml__error(ctx, MML_ENOMEM, "autoint: out of memory");
    d->ctx = ctx;
    d->F = c->n_fields;
    d->k = c->embed_dim;
    d->n_dense = c->n_dense;
    d->L = o.n_layers;
    d->H = o.n_heads;
    d->dh = o.head_dim;
    d->A = o.n_heads * o.head_dim;
    d->res = o.residual != 0;
    d->per_layer = d->res ? 4 : 3;
    rc = mml__dnn_create(&d->dnn, ctx, c, tower_width(c));
    static const char *const kind[4] = {"W_Q", "W_K", "W_V", "W_res"};
    for (int32_t l = 0; rc >= 0 && l < d->L; l++) {
        int32_t din = l ? d->A : d->k;
        for (int32_t t = 0; rc >= 0 && t < d->per_layer; t++) {
            char *name = d->names[d->np];
            snprintf(name, sizeof d->names[0], "autoint.%d.%s", l, kind[t]);
            /* Per-head matrices take one head's fans; W_res is one matrix. */
            rc = mml__side_param_init(ctx, &d->p[d->np], name, din, d->A, din, t < 3 ? d->dh : d->A,
                                      c->stream + 1 + (uint64_t)(4 * l + t));
            if (rc >= 0)
                d->np++;
        }
    }
    if (rc >= 0) {
        rc = mml__head_init(ctx, &d->p[d->np], "head.w",
                            (int64_t)d->F * d->A + mml__dnn_d_out(&d->dnn), c->stream);
        if (rc >= 0)
            d->np++;
    }
    if (rc < 0) {
        autoint_destroy(d);
        return rc;
    }
    *self = d;
    return MML_OK;
}

/* Offsets of layer l's input in X, and of its projections in QKV. */
static float *X_of(const autoint *d, int32_t l)
{
    int64_t nF = d->n * d->F;
    return l == 0 ? d->X : d->X + nF * d->k + (int64_t)(l - 1) * nF * d->A;
}
static float *Q_of(const autoint *d, int32_t l) { return d->QKV + (int64_t)l * 3 * d->n * d->F * d->A; }
static float *P_of(const autoint *d, int32_t l)
{
    return d->P + (int64_t)l * d->n * d->H * d->F * d->F;
}
static mml_param *W_of(autoint *d, int32_t l, int32_t t) { return &d->p[l * d->per_layer + t]; }

static int autoint_forward(void *self, const mml_backbone_input *in, float *logit)
{
    autoint *d = self;
    mml_ctx *ctx = d->ctx;
    int64_t n = in->n_rows, nF = n * d->F;
    int32_t F = d->F, k = d->k, fk = F * k, tw = fk + d->n_dense, A = d->A, H = d->H, hd = d->dh;
    d->n = 0;
    if (d->n_dense && !in->dense)
        return mml__error(ctx, MML_EINVAL, "autoint: numeric values missing");
    int rc;
    if ((rc = mml__ensure_floats(ctx, &d->tx, &d->cap_tx, (size_t)(n * tw))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->X, &d->cap_X, (size_t)(nF * (k + (int64_t)d->L * A)))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->QKV, &d->cap_QKV, (size_t)(3 * d->L * nF * A))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->P, &d->cap_P, (size_t)(d->L * nF * H * F))) < 0)
        return rc;
    for (int64_t r = 0; r < n; r++) {
        memcpy(d->tx + r * tw, in->emb + r * fk, sizeof(float) * (size_t)fk);
        if (d->n_dense)
            memcpy(d->tx + r * tw + fk, in->dense + r * d->n_dense, sizeof(float) * (size_t)d->n_dense);
    }
    rc = mml__dnn_forward(&d->dnn, d->tx, n, in, &d->h);
    if (rc < 0)
        return rc;
    d->n = n; /* the offsets below depend on it */
    memcpy(d->X, in->emb, sizeof(float) * (size_t)(nF * k));
    for (int32_t l = 0; l < d->L; l++) {
        int32_t din = l ? A : k;
        const float *X = X_of(d, l);
        float *Q = Q_of(d, l), *K = Q + nF * A, *V = K + nF * A, *Y = X_of(d, l + 1);
        float *P = P_of(d, l);
        if ((rc = mml__gemm_rm(ctx, 0, 0, nF, A, din, 1.0f, X, W_of(d, l, 0)->value, 0.0f, Q)) < 0 ||
            (rc = mml__gemm_rm(ctx, 0, 0, nF, A, din, 1.0f, X, W_of(d, l, 1)->value, 0.0f, K)) < 0 ||
            (rc = mml__gemm_rm(ctx, 0, 0, nF, A, din, 1.0f, X, W_of(d, l, 2)->value, 0.0f, V)) < 0)
            goto fail;
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
            goto fail;
        for (int64_t i = 0; i < nF * A; i++)
            Y[i] = Y[i] > 0.0f ? Y[i] : 0.0f;
    }
    const mml_param *head = &d->p[d->np - 1];
    int32_t dout = mml__dnn_d_out(&d->dnn), FA = F * A;
    const float *Yl = X_of(d, d->L);
    for (int64_t r = 0; r < n; r++) {
        const float *y = Yl + r * FA, *h = d->h + r * dout;
        float s = 0.0f;
        for (int32_t j = 0; j < FA; j++)
            s += y[j] * head->value[j];
        for (int32_t j = 0; j < dout; j++)
            s += h[j] * head->value[FA + j];
        logit[r] = s;
    }
    return MML_OK;
fail:
    d->n = 0;
    return rc;
}

/* Backward of interacting layer l: dY (n F x A) holds d loss / d y on entry
 * (overwritten); dX (n F x d_in) receives d loss / d x when not NULL. */
static int layer_backward(autoint *d, int32_t l, float *dY, float *dX)
{
    mml_ctx *ctx = d->ctx;
    int64_t n = d->n, nF = n * d->F;
    int32_t F = d->F, A = d->A, H = d->H, hd = d->dh, din = l ? A : d->k;
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

static int autoint_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    autoint *d = self;
    mml_ctx *ctx = d->ctx;
    int64_t n = d->n, nF = n * d->F;
    if (n < 1)
        return mml__error(ctx, MML_ESTATE, "autoint: backward without a forward pass");
    int32_t F = d->F, k = d->k, fk = F * k, tw = fk + d->n_dense, A = d->A, FA = F * A;
    int32_t dout = mml__dnn_d_out(&d->dnn);
    mml_param *head = &d->p[d->np - 1];
    int rc = mml__ensure_floats(ctx, &d->dh_buf, &d->cap_dh, (size_t)(n * dout));
    if (rc < 0)
        return rc;
    for (int64_t r = 0; r < n; r++)
        for (int32_t j = 0; j < dout; j++)
            d->dh_buf[r * dout + j] = dlogit[r] * head->value[FA + j];
    const float *Yl = X_of(d, d->L);
    if (!head->frozen)
        for (int64_t r = 0; r < n; r++) {
            for (int32_t j = 0; j < FA; j++)
                head->grad[j] += Yl[r * FA + j] * dlogit[r];
            for (int32_t j = 0; j < dout; j++)
                head->grad[FA + j] += d->h[r * dout + j] * dlogit[r];
        }
    int need_dx = g->d_emb || (g->d_dense && d->n_dense);
    if (need_dx) {
        rc = mml__ensure_floats(ctx, &d->dx, &d->cap_dx, (size_t)(n * tw));
        if (rc < 0)
            return rc;
        memset(d->dx, 0, sizeof(float) * (size_t)(n * tw));
    }
    rc = mml__dnn_backward(&d->dnn, d->dh_buf, need_dx ? d->dx : NULL, g);
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
    /* The interacting layers, when something there needs a gradient. */
    if (!g->d_emb && !mml__any_unfrozen(d->p, d->np - 1))
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

static int64_t autoint_n_params(void *self)
{
    autoint *d = self;
    return mml__dnn_n_params(&d->dnn) + d->np;
}

static mml_param *autoint_param(void *self, int64_t i)
{
    autoint *d = self;
    return mml__dnn_then_side_param(&d->dnn, d->p, d->np, i);
}

static mml_lora *autoint_experts(void *self) { return ((autoint *)self)->dnn.lora; }

static uint64_t autoint_pattern(void *self)
{
    autoint *d = self;
    uint64_t h = mml_tower_relu_pattern(d->dnn.tower);
    if (d->n < 1)
        return h;
    return mml__pattern_fold(h, X_of(d, 1), d->n * d->F * (int64_t)d->A * d->L);
}

static int autoint_replay(void *self, int32_t replay)
{
    return mml_tower_set_dropout_replay(((autoint *)self)->dnn.tower, replay);
}

const mml_backbone_vtable mml__backbone_autoint = {
    sizeof(mml_backbone_vtable), MML_BACKBONE_ABI_VERSION, "autoint", 1, 0, autoint_infer_shape,
    autoint_create, autoint_destroy, autoint_forward, autoint_backward, autoint_n_params,
    autoint_param, autoint_experts, autoint_pattern, autoint_replay, NULL, NULL};
