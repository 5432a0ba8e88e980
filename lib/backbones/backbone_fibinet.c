/* FiBiNET: SENET re-weighting and bilinear interactions of the fields.
 *
 *   SENET:     z_f = mean_t e_f[t];  a = ReLU( ReLU(z W1) W2 )  (F -> R -> F,
 *              R = max(1, floor(F / reduction)), no biases);  v_f = a_f e_f
 *   bilinear:  p_ij = (e_i W_ij) o e_j,  q_ij = (v_i W'_ij) o v_j,  i < j
 *              (one k x k matrix per pair and branch, no bias)
 *
 * A DNN tower reads [p_ij ..., q_ij ..., numeric]; its head is a bias-free
 * Linear(d_last -> 1); the model adds the linear term. */
#include <string.h>

#include "backbones/backbones.h"

enum { W1 = 0, W2 = 1, WB = 2, WS = 3, HEAD = 4, NP = 5 };

typedef struct fibinet {
    mml_ctx *ctx;
    int32_t F, k, n_dense, R, P;
    int32_t *pi, *pj; /* the fields of each pair */
    mml__dnn dnn;
    mml_param p[NP];
    float *E, *z, *a1, *a, *V, *T, *Ts, *x;
    size_t cap_E, cap_z, cap_a1, cap_a, cap_V, cap_T, cap_Ts, cap_x;
    float *dh, *dx, *dT, *dTs, *dV, *tmp;
    size_t cap_dh, cap_dx, cap_dT, cap_dTs, cap_dV, cap_tmp;
    const float *h; /* tower output of the last forward pass */
    int64_t n;
} fibinet;

int mml_fibinet_options_init_sized(mml_fibinet_options *out, uint32_t struct_size)
{
    mml_fibinet_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->struct_size = (uint32_t)sizeof *opt;
    opt->reduction = 3;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_fibinet_options);
}

/* Checks the options; *R receives the SENET bottleneck width. */
static int fibinet_options(mml_ctx *ctx, const mml_backbone_config *c, int32_t *R)
{
    mml_fibinet_options o;
    mml_fibinet_options_init(&o);
    if (c->options) {
        int rc = MML__COPY_OPTIONS(ctx, &o, c->options, mml_fibinet_options, "fibinet");
        if (rc < 0)
            return rc;
    }
    if (o.reduction < 1)
        return mml__error(ctx, MML_EINVAL, "fibinet: reduction %d must be >= 1", o.reduction);
    if (c->n_fields < 2)
        return mml__error(ctx, MML_EINVAL, "fibinet: needs at least 2 fields, has %d", c->n_fields);
    int64_t width = (int64_t)c->n_fields * (c->n_fields - 1) * c->embed_dim + c->n_dense;
    if (width > (1 << 20))
        return mml__error(ctx, MML_EINVAL,
                          "fibinet: %d fields of width %d give a tower input %lld wide (at most %d)",
                          c->n_fields, c->embed_dim, (long long)width, 1 << 20);
    *R = c->n_fields / o.reduction;
    if (*R < 1)
        *R = 1;
    return MML_OK;
}

static int32_t n_pairs(const mml_backbone_config *c) { return c->n_fields * (c->n_fields - 1) / 2; }
static int32_t tower_width(const mml_backbone_config *c)
{
    return 2 * n_pairs(c) * c->embed_dim + c->n_dense;
}

/* Invalid options report 0 values here; create refuses them with a message. */
static int fibinet_infer_shape(void *user, mml_ctx *ctx, const mml_backbone_config *c,
                            int64_t *n_values)
{
    (void)user;
    (void)ctx;
    int32_t R = 0;
    *n_values = 0;
    if (fibinet_options(NULL, c, &R) < 0)
        return MML_OK;
    int64_t k = c->embed_dim;
    *n_values = mml__dnn_param_count(c, tower_width(c)) + 2 * (int64_t)c->n_fields * R +
                2 * (int64_t)n_pairs(c) * k * k + c->hidden[c->n_hidden - 1];
    return MML_OK;
}

static void fibinet_destroy(void *self)
{
    fibinet *d = self;
    if (!d)
        return;
    mml_ctx *ctx = d->ctx;
    mml__dnn_destroy(&d->dnn);
    for (int32_t i = 0; i < NP; i++)
        mml__side_param_free(ctx, &d->p[i]);
    mml__free(ctx, d->pi, sizeof(int32_t) * 2 * (size_t)d->P);
    float **bufs[] = {&d->E, &d->z, &d->a1, &d->a, &d->V, &d->T, &d->Ts,
                      &d->x, &d->dh, &d->dx, &d->dT, &d->dTs, &d->dV, &d->tmp};
    size_t caps[] = {d->cap_E, d->cap_z, d->cap_a1, d->cap_a, d->cap_V, d->cap_T, d->cap_Ts,
                     d->cap_x, d->cap_dh, d->cap_dx, d->cap_dT, d->cap_dTs, d->cap_dV, d->cap_tmp};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
        mml__free(ctx, *bufs[i], caps[i] * sizeof(float));
    mml__free(ctx, d, sizeof *d);
}

static int fibinet_create(void *user, mml_ctx *ctx, const mml_backbone_config *c, void **self)
{
    (void)user;
    int32_t R = 0;
    int rc = fibinet_options(ctx, c, &R);
    if (rc < 0)
        return rc;
    fibinet *d = mml__calloc(ctx, 1, sizeof *d);
    if (!d)
        return mml__error(ctx, MML_ENOMEM, "fibinet: out of memory");
    d->ctx = ctx;
    int32_t F = d->F = c->n_fields, k = d->k = c->embed_dim;
    d->n_dense = c->n_dense;
    d->R = R;
    d->P = n_pairs(c);
    d->pi = mml__alloc(ctx, sizeof(int32_t) * 2 * (size_t)d->P);
    if (!d->pi) {
        fibinet_destroy(d);
        return mml__error(ctx, MML_ENOMEM, "fibinet: out of memory");
    }
    d->pj = d->pi + d->P;
    for (int32_t i = 0, q = 0; i < F; i++)
        for (int32_t j = i + 1; j < F; j++, q++) {
            d->pi[q] = i;
            d->pj[q] = j;
        }
    int64_t Pk = (int64_t)d->P * k;
    rc = mml__dnn_create(&d->dnn, ctx, c, tower_width(c));
    if (rc >= 0)
        rc = mml__side_param_init(ctx, &d->p[W1], "senet.W1", F, R, F, R, c->stream + 1);
    if (rc >= 0)
        rc = mml__side_param_init(ctx, &d->p[W2], "senet.W2", R, F, R, F, c->stream + 2);
    if (rc >= 0)
        rc = mml__side_param_init(ctx, &d->p[WB], "bilinear.W", Pk, k, k, k, c->stream + 3);
    if (rc >= 0)
        rc = mml__side_param_init(ctx, &d->p[WS], "bilinear.W_senet", Pk, k, k, k, c->stream + 4);
    if (rc >= 0)
        rc = mml__head_init(ctx, &d->p[HEAD], "head.w", mml__dnn_d_out(&d->dnn), c->stream);
    if (rc < 0) {
        fibinet_destroy(d);
        return rc;
    }
    *self = d;
    return MML_OK;
}

/* Out (n x P k, pair p at columns [p k, (p + 1) k)) = X_i W_p for every pair. */
static int pair_products(fibinet *d, const float *X, const float *W, float *out)
{
    int32_t k = d->k, fk = d->F * k, Pk = d->P * k;
    for (int32_t q = 0; q < d->P; q++) {
        int rc = mml__gemm(d->ctx, 0, 0, d->n, k, k, 1.0f, X + d->pi[q] * k, fk, 1,
                           W + (int64_t)q * k * k, k, 1, 0.0f, out + q * k, Pk, 1);
        if (rc < 0)
            return rc;
    }
    return MML_OK;
}

static int fibinet_forward(void *self, const mml_backbone_input *in, float *logit)
{
    fibinet *d = self;
    mml_ctx *ctx = d->ctx;
    int64_t n = in->n_rows;
    int32_t F = d->F, k = d->k, fk = F * k, R = d->R, Pk = d->P * k, tw = 2 * Pk + d->n_dense;
    d->n = 0;
    if (d->n_dense && !in->dense)
        return mml__error(ctx, MML_EINVAL, "fibinet: numeric values missing");
    int rc;
    if ((rc = mml__ensure_floats(ctx, &d->E, &d->cap_E, (size_t)(n * fk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->z, &d->cap_z, (size_t)(n * F))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->a1, &d->cap_a1, (size_t)(n * R))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->a, &d->cap_a, (size_t)(n * F))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->V, &d->cap_V, (size_t)(n * fk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->T, &d->cap_T, (size_t)(n * Pk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->Ts, &d->cap_Ts, (size_t)(n * Pk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->x, &d->cap_x, (size_t)(n * tw))) < 0)
        return rc;
    d->n = n;
    memcpy(d->E, in->emb, sizeof(float) * (size_t)(n * fk));
    const float *w1 = d->p[W1].value, *w2 = d->p[W2].value;
    for (int64_t r = 0; r < n; r++) {
        const float *e = d->E + r * fk;
        float *z = d->z + r * F, *a1 = d->a1 + r * R, *a = d->a + r * F, *v = d->V + r * fk;
        for (int32_t f = 0; f < F; f++) {
            float s = 0.0f;
            for (int32_t t = 0; t < k; t++)
                s += e[f * k + t];
            z[f] = s / (float)k;
        }
        for (int32_t j = 0; j < R; j++) {
            float s = 0.0f;
            for (int32_t f = 0; f < F; f++)
                s += z[f] * w1[f * R + j];
            a1[j] = s > 0.0f ? s : 0.0f;
        }
        for (int32_t f = 0; f < F; f++) {
            float s = 0.0f;
            for (int32_t j = 0; j < R; j++)
                s += a1[j] * w2[j * F + f];
            a[f] = s > 0.0f ? s : 0.0f;
            for (int32_t t = 0; t < k; t++)
                v[f * k + t] = a[f] * e[f * k + t];
        }
    }
    if ((rc = pair_products(d, d->E, d->p[WB].value, d->T)) < 0 ||
        (rc = pair_products(d, d->V, d->p[WS].value, d->Ts)) < 0)
        goto fail;
    for (int64_t r = 0; r < n; r++) {
        float *x = d->x + r * tw;
        const float *e = d->E + r * fk, *v = d->V + r * fk;
        const float *T = d->T + r * Pk, *Ts = d->Ts + r * Pk;
        for (int32_t q = 0; q < d->P; q++) {
            const float *ej = e + d->pj[q] * k, *vj = v + d->pj[q] * k;
            for (int32_t t = 0; t < k; t++) {
                x[q * k + t] = T[q * k + t] * ej[t];
                x[Pk + q * k + t] = Ts[q * k + t] * vj[t];
            }
        }
        if (d->n_dense)
            memcpy(x + 2 * Pk, in->dense + r * d->n_dense, sizeof(float) * (size_t)d->n_dense);
    }
    rc = mml__dnn_forward(&d->dnn, d->x, n, in, &d->h);
    if (rc < 0)
        goto fail;
    const mml_param *head = &d->p[HEAD];
    int32_t dout = (int32_t)head->rows;
    for (int64_t r = 0; r < n; r++) {
        const float *h = d->h + r * dout;
        float s = 0.0f;
        for (int32_t j = 0; j < dout; j++)
            s += h[j] * head->value[j];
        logit[r] = s;
    }
    return MML_OK;
fail:
    d->n = 0;
    return rc;
}

/* d loss / d X_i (+=, into dX with row stride F k) and d loss / d W_p of the
 * pair products, given dOut (n x P k). dX may be NULL. */
static int pair_products_backward(fibinet *d, const float *X, mml_param *W, const float *dOut,
                                  float *dX)
{
    int32_t k = d->k, fk = d->F * k, Pk = d->P * k;
    for (int32_t q = 0; q < d->P; q++) {
        const float *xi = X + d->pi[q] * k, *dq = dOut + q * k, *w = W->value + (int64_t)q * k * k;
        int rc;
        if (!W->frozen &&
            (rc = mml__gemm(d->ctx, 1, 0, k, k, d->n, 1.0f, xi, fk, 1, dq, Pk, 1, 1.0f,
                            W->grad + (int64_t)q * k * k, k, 1)) < 0)
            return rc;
        if (dX && (rc = mml__gemm(d->ctx, 0, 1, d->n, k, k, 1.0f, dq, Pk, 1, w, k, 1, 1.0f,
                                  dX + d->pi[q] * k, fk, 1)) < 0)
            return rc;
    }
    return MML_OK;
}

static int fibinet_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    fibinet *d = self;
    mml_ctx *ctx = d->ctx;
    int64_t n = d->n;
    if (n < 1)
        return mml__error(ctx, MML_ESTATE, "fibinet: backward without a forward pass");
    int32_t F = d->F, k = d->k, fk = F * k, R = d->R, Pk = d->P * k, tw = 2 * Pk + d->n_dense;
    mml_param *head = &d->p[HEAD];
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
    int need_side = g->d_emb || mml__any_unfrozen(d->p, HEAD);
    int need_dx = need_side || (g->d_dense && d->n_dense);
    if (need_dx) {
        rc = mml__ensure_floats(ctx, &d->dx, &d->cap_dx, (size_t)(n * tw));
        if (rc < 0)
            return rc;
        memset(d->dx, 0, sizeof(float) * (size_t)(n * tw));
    }
    rc = mml__dnn_backward(&d->dnn, d->dh, need_dx ? d->dx : NULL, g);
    if (rc < 0 || !need_dx)
        return rc;
    if (g->d_dense)
        for (int64_t r = 0; r < n; r++)
            for (int32_t i = 0; i < d->n_dense; i++)
                g->d_dense[r * d->n_dense + i] += d->dx[r * tw + 2 * Pk + i];
    if (!need_side)
        return MML_OK;
    if ((rc = mml__ensure_floats(ctx, &d->dT, &d->cap_dT, (size_t)(n * Pk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->dTs, &d->cap_dTs, (size_t)(n * Pk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->dV, &d->cap_dV, (size_t)(n * fk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->tmp, &d->cap_tmp, (size_t)(2 * F + R))) < 0)
        return rc;
    memset(d->dV, 0, sizeof(float) * (size_t)(n * fk));
    float *de_all = g->d_emb;
    /* Elementwise products: p = T o e_j, q = Ts o v_j. */
    for (int64_t r = 0; r < n; r++) {
        const float *dx = d->dx + r * tw, *e = d->E + r * fk, *v = d->V + r * fk;
        const float *T = d->T + r * Pk, *Ts = d->Ts + r * Pk;
        float *dT = d->dT + r * Pk, *dTs = d->dTs + r * Pk, *dv = d->dV + r * fk;
        float *de = de_all ? de_all + r * fk : NULL;
        for (int32_t q = 0; q < d->P; q++) {
            int32_t j = d->pj[q];
            for (int32_t t = 0; t < k; t++) {
                float gp = dx[q * k + t], gq = dx[Pk + q * k + t];
                dT[q * k + t] = gp * e[j * k + t];
                dTs[q * k + t] = gq * v[j * k + t];
                dv[j * k + t] += gq * Ts[q * k + t];
                if (de)
                    de[j * k + t] += gp * T[q * k + t];
            }
        }
    }
    /* The bilinear matrices. */
    if ((rc = pair_products_backward(d, d->E, &d->p[WB], d->dT, de_all)) < 0 ||
        (rc = pair_products_backward(d, d->V, &d->p[WS], d->dTs, d->dV)) < 0)
        return rc;
    /* SENET. */
    mml_param *w1 = &d->p[W1], *w2 = &d->p[W2];
    float *da = d->tmp, *dz = da + F, *da1 = dz + F;
    for (int64_t r = 0; r < n; r++) {
        const float *e = d->E + r * fk, *dv = d->dV + r * fk;
        const float *z = d->z + r * F, *a1 = d->a1 + r * R, *a = d->a + r * F;
        float *de = de_all ? de_all + r * fk : NULL;
        for (int32_t f = 0; f < F; f++) {
            float s = 0.0f;
            for (int32_t t = 0; t < k; t++) {
                s += dv[f * k + t] * e[f * k + t];
                if (de)
                    de[f * k + t] += a[f] * dv[f * k + t];
            }
            da[f] = a[f] > 0.0f ? s : 0.0f; /* through the second ReLU */
        }
        for (int32_t j = 0; j < R; j++) {
            float s = 0.0f;
            for (int32_t f = 0; f < F; f++) {
                s += da[f] * w2->value[j * F + f];
                if (!w2->frozen)
                    w2->grad[j * F + f] += a1[j] * da[f];
            }
            da1[j] = a1[j] > 0.0f ? s : 0.0f; /* through the first ReLU */
        }
        for (int32_t f = 0; f < F; f++) {
            float s = 0.0f;
            for (int32_t j = 0; j < R; j++) {
                s += da1[j] * w1->value[f * R + j];
                if (!w1->frozen)
                    w1->grad[f * R + j] += z[f] * da1[j];
            }
            dz[f] = s;
        }
        if (de)
            for (int32_t f = 0; f < F; f++)
                for (int32_t t = 0; t < k; t++)
                    de[f * k + t] += dz[f] / (float)k;
    }
    return MML_OK;
}

static int64_t fibinet_n_params(void *self) { return mml__dnn_n_params(&((fibinet *)self)->dnn) + NP; }

static mml_param *fibinet_param(void *self, int64_t i)
{
    fibinet *d = self;
    return mml__dnn_then_side_param(&d->dnn, d->p, NP, i);
}

static mml_lora *fibinet_experts(void *self) { return ((fibinet *)self)->dnn.lora; }

static uint64_t fibinet_pattern(void *self)
{
    fibinet *d = self;
    uint64_t h = mml_tower_relu_pattern(d->dnn.tower);
    if (d->n < 1)
        return h;
    h = mml__pattern_fold(h, d->a1, d->n * d->R);
    return mml__pattern_fold(h, d->a, d->n * d->F);
}

static int fibinet_replay(void *self, int32_t replay)
{
    return mml_tower_set_dropout_replay(((fibinet *)self)->dnn.tower, replay);
}

const mml_backbone_vtable mml__backbone_fibinet = {
    sizeof(mml_backbone_vtable), MML_BACKBONE_ABI_VERSION, "fibinet", 1, 0, fibinet_infer_shape,
    fibinet_create, fibinet_destroy, fibinet_forward, fibinet_backward, fibinet_n_params,
    fibinet_param, fibinet_experts, fibinet_pattern, fibinet_replay, NULL, NULL};
