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

enum { W1 = 0, W2 = 1, WB = 2, WS = 3, HEAD = 4 };

typedef struct fibinet {
    mml__deep base; /* x is [p_ij ..., q_ij ..., numeric]; p holds W1, W2, WB, WS, head.w */
    int32_t R, P;
    int32_t *pi, *pj; /* the fields of each pair */
    float *E, *z, *a1, *a, *V, *T, *Ts;
    size_t cap_E, cap_z, cap_a1, cap_a, cap_V, cap_T, cap_Ts;
    float *dT, *dTs, *dV, *tmp;
    size_t cap_dT, cap_dTs, cap_dV, cap_tmp;
} fibinet;

static const mml_fibinet_options defaults = {.struct_size = sizeof(mml_fibinet_options),
                                             .reduction = 3};

int mml_fibinet_options_init_sized(mml_fibinet_options *out, uint32_t struct_size)
{
    return mml__init_versioned(out, &defaults, sizeof defaults, struct_size,
                               MML__OLDER_SIZES_mml_fibinet_options);
}

static int fibinet_check(mml_ctx *ctx, const mml_backbone_config *c, const mml__opts *o)
{
    if (o->fibinet.reduction < 1)
        return mml__error(ctx, MML_EINVAL, "fibinet: reduction %d must be >= 1",
                          o->fibinet.reduction);
    if (c->n_fields < 2)
        return mml__error(ctx, MML_EINVAL, "fibinet: needs at least 2 fields, has %d", c->n_fields);
    int64_t width = (int64_t)c->n_fields * (c->n_fields - 1) * c->embed_dim + c->n_dense;
    if (width > (1 << 20))
        return mml__error(ctx, MML_EINVAL,
                          "fibinet: %d fields of width %d give a tower input %lld wide (at most %d)",
                          c->n_fields, c->embed_dim, (long long)width, 1 << 20);
    return MML_OK;
}

/* R, the SENET bottleneck width. */
static int32_t senet_width(const mml_backbone_config *c, const mml__opts *o)
{
    int32_t R = c->n_fields / o->fibinet.reduction;
    return R < 1 ? 1 : R;
}

static int32_t fibinet_width(const mml_backbone_config *c)
{
    return 2 * mml__n_pairs(c->n_fields) * c->embed_dim + c->n_dense;
}

/* SENET's and the bilinear matrices. */
static int64_t fibinet_n_values(const mml_backbone_config *c, const mml__opts *o)
{
    int32_t R = senet_width(c, o);
    int64_t k = c->embed_dim;
    return 2 * (int64_t)c->n_fields * R + 2 * (int64_t)mml__n_pairs(c->n_fields) * k * k;
}

static int fibinet_create(mml__deep *base, const mml_backbone_config *c, const mml__opts *o)
{
    fibinet *d = (fibinet *)base;
    int32_t F = base->F, k = base->k, R = d->R = senet_width(c, o);
    d->P = mml__n_pairs(F);
    d->pi = mml__alloc(base->ctx, sizeof(int32_t) * 2 * (size_t)d->P);
    if (!d->pi)
        return mml__error(base->ctx, MML_ENOMEM, "fibinet: out of memory");
    d->pj = d->pi + d->P;
    for (int32_t i = 0, q = 0; i < F; i++)
        for (int32_t j = i + 1; j < F; j++, q++) {
            d->pi[q] = i;
            d->pj[q] = j;
        }
    int64_t Pk = (int64_t)d->P * k;
    int rc = mml__deep_add_param(base, "senet.W1", F, R, F, R, c->stream + 1);
    if (rc >= 0)
        rc = mml__deep_add_param(base, "senet.W2", R, F, R, F, c->stream + 2);
    if (rc >= 0)
        rc = mml__deep_add_param(base, "bilinear.W", Pk, k, k, k, c->stream + 3);
    if (rc >= 0)
        rc = mml__deep_add_param(base, "bilinear.W_senet", Pk, k, k, k, c->stream + 4);
    return rc;
}

static void fibinet_destroy(mml__deep *base)
{
    fibinet *d = (fibinet *)base;
    if (!base->replica) /* a session's copy shares the pair lists */
        mml__free(base->ctx, d->pi, sizeof(int32_t) * 2 * (size_t)d->P);
    float *const bufs[] = {d->E, d->z, d->a1, d->a, d->V, d->T,
                           d->Ts, d->dT, d->dTs, d->dV, d->tmp};
    const size_t caps[] = {d->cap_E, d->cap_z, d->cap_a1, d->cap_a, d->cap_V, d->cap_T,
                           d->cap_Ts, d->cap_dT, d->cap_dTs, d->cap_dV, d->cap_tmp};
    mml__free_floats(base->ctx, bufs, caps, sizeof caps / sizeof caps[0]);
}

/* Out (n x P k, pair p at columns [p k, (p + 1) k)) = X_i W_p for every pair. */
static int pair_products(fibinet *d, const float *X, const float *W, float *out)
{
    int32_t k = d->base.k, fk = d->base.F * k, Pk = d->P * k;
    for (int32_t q = 0; q < d->P; q++) {
        int rc = mml__gemm(d->base.ctx, 0, 0, d->base.n, k, k, 1.0f, X + d->pi[q] * k, fk, 1,
                           W + (int64_t)q * k * k, k, 1, 0.0f, out + q * k, Pk, 1);
        if (rc < 0)
            return rc;
    }
    return MML_OK;
}

static int fibinet_forward(mml__deep *base, const mml_backbone_input *in)
{
    fibinet *d = (fibinet *)base;
    mml_ctx *ctx = base->ctx;
    int64_t n = in->n_rows;
    int32_t F = base->F, k = base->k, fk = F * k, R = d->R, Pk = d->P * k, tw = base->width;
    int rc;
    if ((rc = mml__ensure_floats(ctx, &d->E, &d->cap_E, (size_t)(n * fk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->z, &d->cap_z, (size_t)(n * F))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->a1, &d->cap_a1, (size_t)(n * R))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->a, &d->cap_a, (size_t)(n * F))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->V, &d->cap_V, (size_t)(n * fk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->T, &d->cap_T, (size_t)(n * Pk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &d->Ts, &d->cap_Ts, (size_t)(n * Pk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &base->x, &base->cap_x, (size_t)(n * tw))) < 0)
        return rc;
    base->n = n;
    memcpy(d->E, in->emb, sizeof(float) * (size_t)(n * fk));
    const float *w1 = base->p[W1].value, *w2 = base->p[W2].value;
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
    if ((rc = pair_products(d, d->E, base->p[WB].value, d->T)) < 0 ||
        (rc = pair_products(d, d->V, base->p[WS].value, d->Ts)) < 0)
        return rc;
    for (int64_t r = 0; r < n; r++) {
        float *x = base->x + r * tw;
        const float *e = d->E + r * fk, *v = d->V + r * fk;
        const float *T = d->T + r * Pk, *Ts = d->Ts + r * Pk;
        for (int32_t q = 0; q < d->P; q++) {
            const float *ej = e + d->pj[q] * k, *vj = v + d->pj[q] * k;
            for (int32_t t = 0; t < k; t++) {
                x[q * k + t] = T[q * k + t] * ej[t];
                x[Pk + q * k + t] = Ts[q * k + t] * vj[t];
            }
        }
        if (base->n_dense)
            memcpy(x + 2 * Pk, in->dense + r * base->n_dense, sizeof(float) * (size_t)base->n_dense);
    }
    return mml__deep_tower_forward(base, in);
}

/* d loss / d X_i (+=, into dX with row stride F k) and d loss / d W_p of the
 * pair products, given dOut (n x P k). dX may be NULL. */
static int pair_products_backward(fibinet *d, const float *X, mml_param *W, const float *dOut,
                                  float *dX)
{
    int32_t k = d->base.k, fk = d->base.F * k, Pk = d->P * k;
    for (int32_t q = 0; q < d->P; q++) {
        const float *xi = X + d->pi[q] * k, *dq = dOut + q * k, *w = W->value + (int64_t)q * k * k;
        int rc;
        if (!W->frozen &&
            (rc = mml__gemm(d->base.ctx, 1, 0, k, k, d->base.n, 1.0f, xi, fk, 1, dq, Pk, 1, 1.0f,
                            W->grad + (int64_t)q * k * k, k, 1)) < 0)
            return rc;
        if (dX && (rc = mml__gemm(d->base.ctx, 0, 1, d->base.n, k, k, 1.0f, dq, Pk, 1, w, k, 1, 1.0f,
                                  dX + d->pi[q] * k, fk, 1)) < 0)
            return rc;
    }
    return MML_OK;
}

static int fibinet_backward(mml__deep *base, const float *dlogit, const mml_backbone_grads *g,
                            float *dxs)
{
    fibinet *d = (fibinet *)base;
    mml_ctx *ctx = base->ctx;
    int64_t n = base->n;
    int32_t F = base->F, k = base->k, fk = F * k, R = d->R, Pk = d->P * k, tw = base->width;
    int rc;
    (void)dlogit;
    mml__deep_input_grad(base, g, dxs, 0);
    if (!g->d_emb && !mml__any_unfrozen(base->p, HEAD))
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
        const float *dx = dxs + r * tw, *e = d->E + r * fk, *v = d->V + r * fk;
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
    if ((rc = pair_products_backward(d, d->E, &base->p[WB], d->dT, de_all)) < 0 ||
        (rc = pair_products_backward(d, d->V, &base->p[WS], d->dTs, d->dV)) < 0)
        return rc;
    /* SENET. */
    mml_param *w1 = &base->p[W1], *w2 = &base->p[W2];
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

static uint64_t fibinet_pattern(const mml__deep *base, uint64_t h)
{
    const fibinet *d = (const fibinet *)base;
    h = mml__pattern_fold(h, d->a1, base->n * d->R);
    return mml__pattern_fold(h, d->a, base->n * base->F);
}

static const mml__side side = {.size = sizeof(fibinet),
                               .scratch = offsetof(fibinet, E), .feeds_tower = 1,
                               MML__SIDE_OPTIONS(mml_fibinet_options, defaults),
                               .check = fibinet_check, .width = fibinet_width,
                               .n_values = fibinet_n_values, .create = fibinet_create,
                               .destroy = fibinet_destroy, .forward = fibinet_forward,
                               .backward = fibinet_backward, .pattern = fibinet_pattern};

MML__BACKBONE_TABLE(fibinet, 1, side);
