#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/layers.h"

struct mml_lora {
    mml_ctx *ctx;
    int32_t n_layers;
    int32_t n_experts;
    int32_t alpha;
    int32_t *dims;  /* n_layers + 1 */
    int32_t *rank;  /* n_layers */
    float **value;  /* per layer: A_t (E r x d_in), B (E r x d_out), c (E x d_out), in one block */
    float **grad;
    size_t *layer_floats;
    mml_param *params; /* E * n_layers * 3 */
    char *names;
    size_t names_size;
    /* A training thread's copy: values, dims, ranks and names are the
     * original's; grad, its blocks and params its own. */
    int32_t replica;
};

#define NAME_LEN 48

int mml_lora_options_init_sized(mml_lora_options *out, uint32_t struct_size)
{
    mml_lora_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->n_experts = 1;
    opt->alpha = 16;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_lora_options);
}

int32_t mml_lora_rank_for(int32_t d_in, int32_t d_out, int32_t alpha)
{
    if (d_in < 1 || d_out < 1 || alpha < 1)
        return -1;
    int32_t r = d_out / alpha;
    if (r < 1)
        r = 1;
    int32_t cap = d_in < d_out ? d_in : d_out;
    return r < cap ? r : cap;
}

void mml__glorot_uniform(mml_rng *rng, float *w, int64_t fan_in, int64_t fan_out)
{
    double limit = sqrt(6.0 / (double)(fan_in + fan_out));
    for (int64_t i = 0; i < fan_in * fan_out; i++)
        w[i] = (float)((2.0 * mml__rng_uniform_double(rng) - 1.0) * limit);
}

static float *A_t(const mml_lora *l, int32_t layer) { return l->value[layer]; }
static float *B_of(const mml_lora *l, int32_t layer)
{
    return l->value[layer] + (size_t)l->n_experts * (size_t)l->rank[layer] * (size_t)l->dims[layer];
}
static float *C_of(const mml_lora *l, int32_t layer)
{
    return B_of(l, layer) + (size_t)l->n_experts * (size_t)l->rank[layer] * (size_t)l->dims[layer + 1];
}
/* The same offsets in the gradient block. */
static float *grad_at(const mml_lora *l, int32_t layer, const float *value_ptr)
{
    return l->grad[layer] + (value_ptr - l->value[layer]);
}

int mml_lora_create(mml_lora **out, mml_ctx *ctx, const mml_lora_options *opt)
{
    if (out)
        *out = NULL;
    if (!out || !ctx)
        return mml__error(ctx, MML_EINVAL, "lora_create: NULL argument");
    mml_lora_options o;
    int rc = MML__COPY_OPTIONS(ctx, &o, opt, mml_lora_options, "lora");
    if (rc < 0)
        return rc;
    if (o.n_layers < 1 || o.n_layers > 64 || !o.dims)
        return mml__error(ctx, MML_EINVAL, "lora: n_layers %d must be 1..64 with dims given",
                          o.n_layers);
    if (o.n_experts < 1 || o.n_experts > 4096 || o.alpha < 1)
        return mml__error(ctx, MML_EINVAL, "lora: n_experts %d (1..4096) or alpha %d (>= 1) invalid",
                          o.n_experts, o.alpha);
    for (int32_t i = 0; i <= o.n_layers; i++)
        if (o.dims[i] < 1 || o.dims[i] > (1 << 20))
            return mml__error(ctx, MML_EINVAL, "lora: width %d of layer %d invalid", o.dims[i], i);
    mml_lora *l = mml__calloc(ctx, 1, sizeof *l);
    if (!l)
        return mml__error(ctx, MML_ENOMEM, "lora: out of memory");
    l->ctx = ctx;
    l->n_layers = o.n_layers;
    l->n_experts = o.n_experts;
    l->alpha = o.alpha;
    int32_t L = o.n_layers, E = o.n_experts;
    int64_t n_params = (int64_t)E * L * 3;
    l->names_size = (size_t)n_params * NAME_LEN;
    l->dims = mml__alloc(ctx, sizeof(int32_t) * (size_t)(L + 1));
    l->rank = mml__alloc(ctx, sizeof(int32_t) * (size_t)L);
    l->value = mml__calloc(ctx, (size_t)L, sizeof(float *));
    l->grad = mml__calloc(ctx, (size_t)L, sizeof(float *));
    l->layer_floats = mml__calloc(ctx, (size_t)L, sizeof(size_t));
    l->params = mml__calloc(ctx, (size_t)n_params, sizeof(mml_param));
    l->names = mml__alloc(ctx, l->names_size);
    if (!l->dims || !l->rank || !l->value || !l->grad || !l->layer_floats || !l->params ||
        !l->names)
        goto nomem;
    memcpy(l->dims, o.dims, sizeof(int32_t) * (size_t)(L + 1));
    for (int32_t k = 0; k < L; k++) {
        int32_t din = l->dims[k], dout = l->dims[k + 1];
        int32_t r = l->rank[k] = mml_lora_rank_for(din, dout, o.alpha);
        size_t nf = (size_t)E * (size_t)r * (size_t)(din + dout) + (size_t)E * (size_t)dout;
        l->layer_floats[k] = nf;
        l->value[k] = mml__calloc(ctx, nf, sizeof(float));
        l->grad[k] = mml__calloc(ctx, nf, sizeof(float));
        if (!l->value[k] || !l->grad[k])
            goto nomem;
    }
    for (int32_t e = 0; e < E; e++) {
        /* Each expert draws from its own stream, so adding experts never
         * changes the others' initial values. */
        mml_rng rng;
        mml__rng_init(&rng, ctx->seed, MML_STREAM_EXPERT + o.stream + (uint64_t)e);
        for (int32_t k = 0; k < L; k++) {
            int32_t din = l->dims[k], dout = l->dims[k + 1], r = l->rank[k];
            float *a = A_t(l, k) + (size_t)e * (size_t)r * (size_t)din;
            /* Draw A (din x r) in its natural order, store it transposed. */
            double limit = sqrt(6.0 / (double)(din + r));
            for (int32_t i = 0; i < din; i++)
                for (int32_t j = 0; j < r; j++)
                    a[(size_t)j * (size_t)din + (size_t)i] =
                        (float)((2.0 * mml__rng_uniform_double(&rng) - 1.0) * limit);
            float *vals[3] = {a, B_of(l, k) + (size_t)e * (size_t)r * (size_t)dout,
                              C_of(l, k) + (size_t)e * (size_t)dout};
            int64_t rows[3] = {r, r, 1}, cols[3] = {din, dout, dout};
            static const char *const what[3] = {"A_t", "B", "c"};
            for (int t = 0; t < 3; t++) {
                int64_t idx = ((int64_t)e * L + k) * 3 + t;
                mml_param *p = &l->params[idx];
                char *name = l->names + (size_t)idx * NAME_LEN;
                snprintf(name, NAME_LEN, "expert.%d.%d.%s", e, k, what[t]);
                p->name = name;
                p->value = vals[t];
                p->grad = grad_at(l, k, vals[t]);
                p->rows = rows[t];
                p->cols = cols[t];
                p->group = MML_GROUP_EXPERT;
                p->expert = e;
            }
        }
    }
    *out = l;
    return MML_OK;
nomem:
    mml_lora_destroy(l);
    return mml__error(ctx, MML_ENOMEM, "lora: out of memory");
}

void mml_lora_destroy(mml_lora *l)
{
    if (!l)
        return;
    mml_ctx *ctx = l->ctx;
    int32_t L = l->n_layers;
    if (l->replica) {
        for (int32_t k = 0; l->grad && k < L; k++)
            mml__free(ctx, l->grad[k], l->layer_floats[k] * sizeof(float));
        mml__free(ctx, l->grad, (size_t)L * sizeof(float *));
        mml__free(ctx, l->params, (size_t)l->n_experts * (size_t)L * 3 * sizeof(mml_param));
        mml__free(ctx, l, sizeof *l);
        return;
    }
    if (l->value && l->grad && l->layer_floats)
        for (int32_t k = 0; k < L; k++) {
            mml__free(ctx, l->value[k], l->layer_floats[k] * sizeof(float));
            mml__free(ctx, l->grad[k], l->layer_floats[k] * sizeof(float));
        }
    mml__free(ctx, l->value, (size_t)L * sizeof(float *));
    mml__free(ctx, l->grad, (size_t)L * sizeof(float *));
    mml__free(ctx, l->layer_floats, (size_t)L * sizeof(size_t));
    mml__free(ctx, l->dims, sizeof(int32_t) * (size_t)(L + 1));
    mml__free(ctx, l->rank, sizeof(int32_t) * (size_t)L);
    mml__free(ctx, l->params, (size_t)l->n_experts * (size_t)L * 3 * sizeof(mml_param));
    mml__free(ctx, l->names, l->names_size);
    mml__free(ctx, l, sizeof *l);
}

int32_t mml_lora_n_experts(const mml_lora *l) { return l ? l->n_experts : 0; }
int32_t mml_lora_n_layers(const mml_lora *l) { return l ? l->n_layers : 0; }
int32_t mml_lora_rank(const mml_lora *l, int32_t layer)
{
    return l && layer >= 0 && layer < l->n_layers ? l->rank[layer] : -1;
}
int64_t mml_lora_n_params(const mml_lora *l) { return l ? (int64_t)l->n_experts * l->n_layers * 3 : 0; }
mml_param *mml_lora_param(mml_lora *l, int64_t index)
{
    return l && index >= 0 && index < mml_lora_n_params(l) ? &l->params[index] : NULL;
}

int mml_mix_init_sized(mml_mix *out, uint32_t struct_size, int32_t mode, int64_t n_rows)
{
    mml_mix mix;
    memset(&mix, 0, sizeof mix);
    mix.mode = mode;
    mix.n_rows = n_rows;
    return mml__init_versioned(out, &mix, sizeof mix, struct_size, MML__OLDER_SIZES_mml_mix);
}

int64_t mml__lora_max_cols(const mml_lora *l)
{
    int64_t m = 0;
    for (int32_t k = 0; k < l->n_layers; k++)
        if ((int64_t)l->rank[k] * l->n_experts > m)
            m = (int64_t)l->rank[k] * l->n_experts;
    return m;
}

void mml__lora_layer_ptrs(const mml_lora *l, int32_t layer, int32_t first, int32_t *rank,
                          const float **At, const float **B, const float **C)
{
    int32_t r = l->rank[layer];
    *rank = r;
    *At = A_t(l, layer) + (size_t)first * (size_t)r * (size_t)l->dims[layer];
    *B = B_of(l, layer) + (size_t)first * (size_t)r * (size_t)l->dims[layer + 1];
    *C = C_of(l, layer) + (size_t)first * (size_t)l->dims[layer + 1];
}

int mml__lora_trainable(const mml_lora *l, int32_t first, int32_t n)
{
    for (int32_t e = first; e < first + n; e++)
        for (int64_t i = 0; i < (int64_t)l->n_layers * 3; i++)
            if (!l->params[(int64_t)e * l->n_layers * 3 + i].frozen)
                return 1;
    return 0;
}

int mml__lora_matches(const mml_lora *l, mml_ctx *ctx, int32_t n_layers, const int32_t *dims)
{
    if (l->n_layers != n_layers)
        return mml__error(ctx, MML_ESHAPE, "lora has %d layers, tower %d", l->n_layers, n_layers);
    for (int32_t k = 0; k <= n_layers; k++)
        if (l->dims[k] != dims[k])
            return mml__error(ctx, MML_ESHAPE, "lora width %d at layer %d, tower width %d",
                              l->dims[k], k, dims[k]);
    return MML_OK;
}

int mml__lora_resolve(const mml_lora *l, mml_ctx *ctx, const mml_mix *mix, int64_t n,
                      mml__routing *routing, mml__mixing *out, int *active)
{
    *active = 0;
    out->route = NULL;
    if (!mix || mix->mode == MML_MIX_NONE)
        return MML_OK;
    if (!l)
        return mml__error(ctx, MML_EINVAL, "mixture mode %d needs experts", mix->mode);
    if (mix->n_rows != n)
        return mml__error(ctx, MML_ESHAPE, "mixture has %lld rows, batch %lld",
                          (long long)mix->n_rows, (long long)n);
    int32_t E = l->n_experts;
    switch (mix->mode) {
    case MML_MIX_SINGLE:
        if (mix->expert < 0 || mix->expert >= E)
            return mml__error(ctx, MML_ERANGE, "expert %d outside [0, %d)", mix->expert, E);
        out->first = mix->expert;
        out->n_active = 1;
        out->g = NULL;
        break;
    case MML_MIX_DOMAIN: {
        if (!mix->domain)
            return mml__error(ctx, MML_EINVAL, "per-domain mixture without domains");
        int64_t *offs = routing->offs;
        memset(offs, 0, sizeof(int64_t) * (size_t)(E + 1));
        for (int64_t i = 0; i < n; i++) {
            int32_t d = mix->domain[i];
            if (d < 0 || d >= E)
                return mml__error(ctx, MML_ERANGE, "domain %d at row %lld outside [0, %d)", d,
                                  (long long)i, E);
            offs[d + 1]++;
        }
        for (int32_t e = 0; e < E; e++)
            offs[e + 1] += offs[e];
        /* A stable counting sort; offs[e] is restored as the sort advances it. */
        for (int64_t i = 0; i < n; i++)
            routing->perm[offs[mix->domain[i]]++] = (int32_t)i;
        for (int32_t e = E; e > 0; e--)
            offs[e] = offs[e - 1];
        offs[0] = 0;
        out->first = 0;
        out->n_active = E;
        out->g = NULL;
        out->route = routing;
        break;
    }
    case MML_MIX_GATED:
        if (!mix->weights)
            return mml__error(ctx, MML_EINVAL, "gated mixture without weights");
        for (int64_t i = 0; i < n * E; i++)
            if (!isfinite(mix->weights[i]))
                return mml__error(ctx, MML_ENONFINITE, "gate weight of row %lld, expert %lld is not finite",
                                  (long long)(i / E), (long long)(i % E));
        out->first = 0;
        out->n_active = E;
        out->g = mix->weights;
        break;
    default:
        return mml__error(ctx, MML_EINVAL, "unknown mixture mode %d", mix->mode);
    }
    *active = 1;
    return MML_OK;
}

int mml__lora_sorted_forward(const mml_lora *l, mml_ctx *ctx, int32_t layer, const float *x,
                             const int64_t *offs, float *U, float *y)
{
    int32_t r = l->rank[layer], din = l->dims[layer], dout = l->dims[layer + 1];
    for (int32_t e = 0; e < l->n_experts; e++) {
        int64_t o = offs[e], ne = offs[e + 1] - o;
        if (ne == 0)
            continue;
        const float *At = A_t(l, layer) + (size_t)e * (size_t)r * (size_t)din;
        const float *B = B_of(l, layer) + (size_t)e * (size_t)r * (size_t)dout;
        const float *C = C_of(l, layer) + (size_t)e * (size_t)dout;
        float *Ue = U + o * r, *Ye = y + o * dout;
        int rc = mml__gemm(ctx, 0, 1, ne, r, din, 1.0f, x + o * din, din, 1, At, din, 1, 0.0f, Ue,
                           r, 1);
        if (rc >= 0)
            rc = mml__gemm(ctx, 0, 0, ne, dout, r, 1.0f, Ue, r, 1, B, dout, 1, 1.0f, Ye, dout, 1);
        if (rc < 0)
            return rc;
        mml__bias_mask_relu(ne, dout, Ye, dout, C, NULL, 0);
    }
    return MML_OK;
}

int mml__lora_sorted_backward(mml_lora *l, mml_ctx *ctx, int32_t layer, const float *x,
                              const int64_t *offs, const float *U, const float *dA,
                              int param_grads, float *dx, float *dU)
{
    int32_t r = l->rank[layer], din = l->dims[layer], dout = l->dims[layer + 1];
    for (int32_t e = 0; e < l->n_experts; e++) {
        int64_t o = offs[e], ne = offs[e + 1] - o;
        if (ne == 0)
            continue;
        const float *At = A_t(l, layer) + (size_t)e * (size_t)r * (size_t)din;
        const float *B = B_of(l, layer) + (size_t)e * (size_t)r * (size_t)dout;
        const float *C = C_of(l, layer) + (size_t)e * (size_t)dout;
        const float *Ue = U + o * r, *dAe = dA + o * dout, *Xe = x + o * din;
        float *dUe = dU + o * r;
        int rc;
        if (param_grads) {
            mml__col_sums_add(ne, dout, dAe, grad_at(l, layer, C));
            rc = mml__gemm(ctx, 1, 0, r, dout, ne, 1.0f, Ue, r, 1, dAe, dout, 1, 1.0f,
                           grad_at(l, layer, B), dout, 1);
            if (rc < 0)
                return rc;
        }
        if (!param_grads && !dx)
            continue;
        rc = mml__gemm(ctx, 0, 1, ne, r, dout, 1.0f, dAe, dout, 1, B, dout, 1, 0.0f, dUe, r, 1);
        if (rc >= 0 && param_grads)
            rc = mml__gemm(ctx, 1, 0, r, din, ne, 1.0f, dUe, r, 1, Xe, din, 1, 1.0f,
                           grad_at(l, layer, At), din, 1);
        if (rc >= 0 && dx)
            rc = mml__gemm(ctx, 0, 0, ne, din, r, 1.0f, dUe, r, 1, At, din, 1, 0.0f, dx + o * din,
                           din, 1);
        if (rc < 0)
            return rc;
    }
    return MML_OK;
}

int mml__lora_layer_backward_du(mml_lora *l, mml_ctx *ctx, int32_t layer, int64_t n,
                                const mml__mixing *mx, const float *U, const float *Us,
                                const float *dA, int param_grads, float *dG, float *dU,
                                int64_t ldu)
{
    int32_t r = l->rank[layer], dout = l->dims[layer + 1];
    int32_t na = mx->n_active;
    int64_t K = (int64_t)na * r;
    const float *B = B_of(l, layer) + (size_t)mx->first * (size_t)r * (size_t)dout;
    const float *C = C_of(l, layer) + (size_t)mx->first * (size_t)dout;
    float *dB = grad_at(l, layer, B), *dC = grad_at(l, layer, C);
    int rc;
    if (param_grads) {
        rc = MML_OK;
        if (mx->g)
            rc = mml__gemm(ctx, 1, 0, na, dout, n, 1.0f, mx->g, na, 1, dA, dout, 1, 1.0f, dC, dout, 1);
        else
            mml__col_sums_add(n, dout, dA, dC);
        if (rc >= 0)
            rc = mml__gemm(ctx, 1, 0, K, dout, n, 1.0f, Us, K, 1, dA, dout, 1, 1.0f, dB, dout, 1);
        if (rc < 0)
            return rc;
    }
    rc = mml__gemm(ctx, 0, 1, n, K, dout, 1.0f, dA, dout, 1, B, dout, 1, 0.0f, dU, ldu, 1);
    if (rc < 0)
        return rc;
    if (dG && mx->g) {
        rc = mml__gemm(ctx, 0, 1, n, na, dout, 1.0f, dA, dout, 1, C, dout, 1, 1.0f, dG, na, 1);
        if (rc < 0)
            return rc;
        for (int64_t i = 0; i < n; i++)
            for (int32_t e = 0; e < na; e++) {
                const float *u = U + i * K + (int64_t)e * r, *du = dU + i * ldu + (int64_t)e * r;
                float s = 0.0f;
                for (int32_t t = 0; t < r; t++)
                    s += du[t] * u[t];
                dG[i * na + e] += s;
            }
    }
    if (mx->g)
        for (int64_t i = 0; i < n; i++)
            for (int32_t e = 0; e < na; e++) {
                float g = mx->g[i * na + e];
                float *du = dU + i * ldu + (int64_t)e * r;
                for (int32_t t = 0; t < r; t++)
                    du[t] *= g;
            }
    return MML_OK;
}

float *mml__lora_layer_grad_At(mml_lora *l, int32_t layer, int32_t first)
{
    return grad_at(l, layer, A_t(l, layer) + (size_t)first * (size_t)l->rank[layer] *
                                                 (size_t)l->dims[layer]);
}


void mml__lora_drop_grads(mml_lora *l)
{
    for (int32_t k = 0; k < l->n_layers; k++) {
        mml__free(l->ctx, l->grad[k], l->layer_floats[k] * sizeof(float));
        l->grad[k] = NULL;
    }
    for (int64_t i = 0; i < mml_lora_n_params(l); i++)
        l->params[i].grad = NULL;
}

int mml__lora_has_grads(const mml_lora *l) { return l->n_layers > 0 && l->grad[0] != NULL; }

int mml__lora_train_replica(const mml_lora *l, mml_ctx *ctx, mml_lora **out)
{
    *out = NULL;
    mml_lora *r = mml__alloc(ctx, sizeof *r);
    if (!r)
        return mml__error(ctx, MML_ENOMEM, "lora: out of memory for a training thread");
    *r = *l;
    int32_t L = l->n_layers;
    int64_t np = mml_lora_n_params(l);
    r->ctx = ctx;
    r->replica = 1;
    r->grad = mml__calloc(ctx, (size_t)L, sizeof(float *));
    r->params = mml__alloc(ctx, (size_t)np * sizeof(mml_param));
    int ok = r->grad && r->params;
    for (int32_t k = 0; ok && k < L; k++)
        ok = (r->grad[k] = mml__calloc(ctx, l->layer_floats[k], sizeof(float))) != NULL;
    if (!ok) {
        mml_lora_destroy(r);
        return mml__error(ctx, MML_ENOMEM, "lora: out of memory for a training thread");
    }
    memcpy(r->params, l->params, (size_t)np * sizeof(mml_param));
    for (int64_t i = 0; i < np; i++) {
        int32_t k = (int32_t)((i / 3) % L);
        r->params[i].grad = r->grad[k] + (l->params[i].value - l->value[k]);
    }
    *out = r;
    return MML_OK;
}
