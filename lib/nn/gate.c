#include <math.h>
#include <string.h>

#include "nn/layers.h"
#include "moemlora/gate.h"

#define MAX_EXPERTS 4096

struct mml_gate {
    mml_ctx *ctx;
    int32_t n_domains, n_experts, dim;
    int32_t top_k;    /* 0 = dense, else 1 <= top_k < n_experts */
    uint64_t pattern; /* fingerprint of the kept sets of the last forward */
    float *block; /* values of emb, W, b then their gradients */
    size_t n_floats;
    mml_param params[5];
    int32_t n_params; /* 3, + domain_bias, + V */
    int32_t in_dim;   /* 0: the domain only; else the rows' inputs x (n x in_dim) */
    int32_t has_bias; /* params[3] is gate.domain_bias */
    const float *x;   /* the last forward_rows' inputs (the caller's), row stride ldx */
    int64_t ldx;
    float *table;  /* D x E softmax of the last forward */
    float *dtable; /* D x E */
    float *weights; /* cap_rows x E */
    int32_t *domain; /* cap_rows */
    int64_t cap_rows, last_rows;
    int32_t readonly; /* block holds the values only */
    int32_t replica;  /* a session's copy: block is the shared gate's */
    /* D x E: 0 where domain d may not use expert e (a domain added later
     * does not reach the older domains); NULL: every expert for all. */
    uint8_t *mask;
};

int mml_gate_options_init_sized(mml_gate_options *out, uint32_t struct_size)
{
    mml_gate_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->embed_dim = 4;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_gate_options);
}

int mml_gate_create(mml_gate **out, mml_ctx *ctx, const mml_gate_options *opt)
{
    if (out)
        *out = NULL;
    if (!out || !ctx)
        return mml__error(ctx, MML_EINVAL, "gate_create: NULL argument");
    mml_gate_options o;
    int rc = MML__COPY_OPTIONS(ctx, &o, opt, mml_gate_options, "gate");
    if (rc < 0)
        return rc;
    if (o.n_domains < 1 || o.n_experts < 1 || o.embed_dim < 1 || o.n_domains > (1 << 20) ||
        o.n_experts > MAX_EXPERTS || o.embed_dim > 4096)
        return mml__error(ctx, MML_EINVAL, "gate: %d domains, %d experts, dimension %d invalid",
                          o.n_domains, o.n_experts, o.embed_dim);
    if (o.top_k < 0)
        return mml__error(ctx, MML_EINVAL, "gate: top_k %d must be >= 0 (0 = dense)", o.top_k);
    if (o.input_dim < 0 || o.input_dim > (1 << 20) || !(o.prior >= 0.0f) || !isfinite(o.prior) ||
        (o.input_dim > 0 && o.top_k > 0 && o.top_k < o.n_experts))
        return mml__error(ctx, MML_EINVAL, "gate: input_dim %d or prior %g invalid (row inputs "
                          "need a dense gate, top_k 0)", o.input_dim, (double)o.prior);
    mml_gate *g = mml__calloc(ctx, 1, sizeof *g);
    if (!g)
        return mml__error(ctx, MML_ENOMEM, "gate: out of memory");
    g->ctx = ctx;
    g->top_k = o.top_k < o.n_experts ? o.top_k : 0;
    int32_t D = g->n_domains = o.n_domains, E = g->n_experts = o.n_experts,
            k = g->dim = o.embed_dim;
    g->has_bias = o.domain_bias != 0;
    g->in_dim = o.input_dim;
    g->n_params = 3 + g->has_bias + (g->in_dim > 0);
    size_t sizes[5] = {(size_t)D * (size_t)k, (size_t)k * (size_t)E, (size_t)E, 0, 0};
    int64_t rows[5] = {D, k, 1, 0, 0}, cols[5] = {k, E, E, 0, 0};
    const char *names[5] = {"gate.embedding", "gate.W", "gate.b", NULL, NULL};
    int32_t np = 3;
    if (g->has_bias) {
        sizes[np] = (size_t)D * (size_t)E, rows[np] = D, cols[np] = E;
        names[np++] = "gate.domain_bias";
    }
    if (g->in_dim > 0) {
        sizes[np] = (size_t)g->in_dim * (size_t)E, rows[np] = g->in_dim, cols[np] = E;
        names[np++] = "gate.V";
    }
    g->n_floats = 0;
    for (int32_t i = 0; i < np; i++)
        g->n_floats += sizes[i];
    g->block = mml__calloc(ctx, 2 * g->n_floats, sizeof(float));
    g->table = mml__alloc(ctx, sizeof(float) * (size_t)D * (size_t)E);
    g->dtable = mml__alloc(ctx, sizeof(float) * (size_t)D * (size_t)E);
    if (!g->block || !g->table || !g->dtable) {
        mml_gate_destroy(g);
        return mml__error(ctx, MML_ENOMEM, "gate: out of memory");
    }
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        g->params[i] = (mml_param){names[i], g->block + off, g->block + g->n_floats + off,
                                   rows[i], cols[i], MML_GROUP_GATE, -1, 0, 0};
        off += sizes[i];
    }
    mml_rng rng;
    mml__rng_init(&rng, ctx->seed, MML_STREAM_GATE + o.stream);
    for (size_t i = 0; i < sizes[0]; i++)
        g->params[0].value[i] = (float)((2.0 * mml__rng_uniform_double(&rng) - 1.0) * 0.05);
    mml__glorot_uniform(&rng, g->params[1].value, k, E);
    if (g->has_bias)
        for (int32_t d = 0; d < D; d++)
            for (int32_t e = 0; e < E; e++)
                g->params[3].value[(size_t)d * (size_t)E + (size_t)e] = e % D == d ? o.prior : 0.0f;
    *out = g;
    return MML_OK;
}

void mml_gate_destroy(mml_gate *g)
{
    if (!g)
        return;
    mml_ctx *ctx = g->ctx;
    size_t de = (size_t)g->n_domains * (size_t)g->n_experts;
    if (!g->replica) {
        mml__free(ctx, g->block, (g->readonly ? 1 : 2) * g->n_floats * sizeof(float));
        mml__free(ctx, g->mask, de);
    }
    mml__free(ctx, g->table, de * sizeof(float));
    mml__free(ctx, g->dtable, de * sizeof(float));
    mml__free(ctx, g->weights, (size_t)g->cap_rows * (size_t)g->n_experts * sizeof(float));
    mml__free(ctx, g->domain, (size_t)g->cap_rows * sizeof(int32_t));
    mml__free(ctx, g, sizeof *g);
}

/* softmax(e_d W + b) for every domain, in double for a stable sum; with top-k,
 * the softmax over each row's kept experts (the others get 0). Returns the
 * fingerprint of the kept sets (0 when dense). */
static uint64_t compute_table(const mml_gate *g, float *table)
{
    int32_t D = g->n_domains, E = g->n_experts, k = g->dim, top = g->top_k;
    const float *emb = g->params[0].value, *W = g->params[1].value, *b = g->params[2].value;
    const float *T = g->has_bias ? g->params[3].value : NULL;
    unsigned char keep[MAX_EXPERTS];
    uint64_t pattern = 0;
    for (int32_t d = 0; d < D; d++) {
        float *row = table + (size_t)d * (size_t)E;
        const uint8_t *allow = g->mask ? g->mask + (size_t)d * (size_t)E : NULL;
        double mx = -INFINITY;
        for (int32_t e = 0; e < E; e++) {
            if (allow && !allow[e]) {
                row[e] = 0.0f;
                continue;
            }
            double z = b[e];
            for (int32_t j = 0; j < k; j++)
                z += (double)emb[d * k + j] * W[j * E + e];
            if (T)
                z += T[(size_t)d * (size_t)E + (size_t)e];
            row[e] = (float)z;
            if (z > mx)
                mx = z;
        }
        if (top > 0) {
            /* top passes, each taking the largest remaining logit; the strict
             * comparison makes the lowest index win among equal logits. */
            memset(keep, 0, (size_t)E);
            for (int32_t t = 0; t < top; t++) {
                int32_t best = -1;
                for (int32_t e = 0; e < E; e++)
                    if (!keep[e] && (!allow || allow[e]) && (best < 0 || row[e] > row[best]))
                        best = e;
                if (best >= 0)
                    keep[best] = 1;
            }
            for (int32_t e = 0; e < E; e++) {
                if (keep[e]) {
                    pattern ^= (uint64_t)d * 0x9E3779B97F4A7C15ull + (uint64_t)e;
                    pattern = (pattern ^ (pattern >> 29)) * 0xBF58476D1CE4E5B9ull;
                }
            }
        }
        /* Masked experts take no part: the softmax over the others is the
         * one a gate without them computes, in the same order. */
        double sum = 0;
        for (int32_t e = 0; e < E; e++)
            if ((top == 0 || keep[e]) && (!allow || allow[e]))
                sum += exp((double)row[e] - mx);
        for (int32_t e = 0; e < E; e++)
            row[e] = (top == 0 || keep[e]) && (!allow || allow[e])
                         ? (float)(exp((double)row[e] - mx) / sum)
                         : 0.0f;
    }
    return top > 0 ? pattern | 1u : 0;
}

/* Room for n rows of weights and domains. */
static int ensure_rows(mml_gate *g, int64_t n)
{
    int32_t E = g->n_experts;
    if (n > g->cap_rows) {
        mml__free(g->ctx, g->weights, (size_t)g->cap_rows * (size_t)E * sizeof(float));
        mml__free(g->ctx, g->domain, (size_t)g->cap_rows * sizeof(int32_t));
        g->weights = mml__alloc(g->ctx, (size_t)n * (size_t)E * sizeof(float));
        g->domain = mml__alloc(g->ctx, (size_t)n * sizeof(int32_t));
        g->cap_rows = n;
        if (!g->weights || !g->domain) {
            mml__free(g->ctx, g->weights, (size_t)n * (size_t)E * sizeof(float));
            mml__free(g->ctx, g->domain, (size_t)n * sizeof(int32_t));
            g->weights = NULL;
            g->domain = NULL;
            g->cap_rows = g->last_rows = 0;
            return mml__error(g->ctx, MML_ENOMEM, "gate: out of memory for %lld rows", (long long)n);
        }
    }
    return MML_OK;
}

/* Every row's domain in range, and room for n rows: what both forward
 * passes need before they write anything. */
static int check_domains_and_reserve(mml_gate *g, const int32_t *domain, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (domain[i] < 0 || domain[i] >= g->n_domains)
            return mml__error(g->ctx, MML_ERANGE, "gate: domain %d at row %lld outside [0, %d)",
                              domain[i], (long long)i, g->n_domains);
    return ensure_rows(g, n);
}

int mml_gate_forward(mml_gate *g, const int32_t *domain, int64_t n, const float **weights)
{
    if (!g)
        return MML_EINVAL;
    if (!domain || !weights)
        return mml__error(g->ctx, MML_EINVAL, "gate_forward: NULL argument");
    if (n < 1)
        return mml__error(g->ctx, MML_ESHAPE, "gate_forward: batch of %lld rows", (long long)n);
    if (g->in_dim > 0)
        return mml__error(g->ctx, MML_ESTATE, "gate_forward: this gate takes %d input values a "
                          "row besides the domain; the model runs it", g->in_dim);
    int rc = check_domains_and_reserve(g, domain, n);
    if (rc < 0)
        return rc;
    int32_t E = g->n_experts;
    g->pattern = compute_table(g, g->table);
    g->x = NULL;
    for (int64_t i = 0; i < n; i++)
        memcpy(g->weights + i * E, g->table + (size_t)domain[i] * (size_t)E, sizeof(float) * (size_t)E);
    memcpy(g->domain, domain, sizeof(int32_t) * (size_t)n);
    g->last_rows = n;
    *weights = g->weights;
    return MML_OK;
}

/* Adds a logit gradient dz of (domain d, expert e) to the domain-level
 * parameters' gradients (NULL: frozen): b, the table T, W and e_d. */
static void add_logit_grad(const mml_gate *g, int32_t d, int32_t e, float dz, float *db,
                           float *dT, float *dW, float *demb)
{
    int32_t E = g->n_experts, k = g->dim;
    const float *emb = g->params[0].value, *W = g->params[1].value;
    if (db)
        db[e] += dz;
    if (dT)
        dT[(size_t)d * (size_t)E + (size_t)e] += dz;
    for (int32_t j = 0; j < k; j++) {
        if (dW)
            dW[j * E + e] += emb[d * k + j] * dz;
        if (demb)
            demb[d * k + j] += W[j * E + e] * dz;
    }
}

int mml_gate_backward(mml_gate *g, const float *dweights)
{
    if (!g)
        return MML_EINVAL;
    if (!dweights)
        return mml__error(g->ctx, MML_EINVAL, "gate_backward: NULL gradient");
    if (g->readonly)
        return mml__error(g->ctx, MML_ESTATE, "gate_backward: the gate is read-only (no gradients)");
    if (g->last_rows < 1)
        return mml__error(g->ctx, MML_ESTATE, "gate_backward without a forward pass");
    if (g->x)
        return mml__gate_backward_rows(g, dweights, NULL, 0);
    int32_t D = g->n_domains, E = g->n_experts;
    memset(g->dtable, 0, sizeof(float) * (size_t)D * (size_t)E);
    for (int64_t i = 0; i < g->last_rows; i++) {
        float *dt = g->dtable + (size_t)g->domain[i] * (size_t)E;
        for (int32_t e = 0; e < E; e++)
            dt[e] += dweights[i * E + e];
    }
    float *demb = g->params[0].frozen ? NULL : g->params[0].grad;
    float *dW = g->params[1].frozen ? NULL : g->params[1].grad;
    float *db = g->params[2].frozen ? NULL : g->params[2].grad;
    float *dT = g->has_bias && !g->params[3].frozen ? g->params[3].grad : NULL;
    for (int32_t d = 0; d < D; d++) {
        /* The table holds w = softmax over the kept set (everything when dense):
         * dz_e = w_e (dw_e - sum_i w_i dw_i), which is 0 for dropped experts. */
        const float *p = g->table + (size_t)d * (size_t)E;
        const float *dp = g->dtable + (size_t)d * (size_t)E;
        double dot = 0;
        for (int32_t e = 0; e < E; e++)
            dot += (double)p[e] * dp[e];
        for (int32_t e = 0; e < E; e++) {
            float dz = (float)((double)p[e] * ((double)dp[e] - dot));
            if (dz != 0.0f)
                add_logit_grad(g, d, e, dz, db, dT, dW, demb);
        }
    }
    return MML_OK;
}

int mml_gate_table(const mml_gate *g, float *out)
{
    if (!g || !out)
        return MML_EINVAL;
    compute_table(g, out);
    return MML_OK;
}

uint64_t mml_gate_kink_pattern(const mml_gate *g) { return g && g->last_rows > 0 ? g->pattern : 0; }
int32_t mml_gate_top_k(const mml_gate *g) { return g ? g->top_k : 0; }
int32_t mml_gate_n_domains(const mml_gate *g) { return g ? g->n_domains : 0; }
int32_t mml_gate_n_experts(const mml_gate *g) { return g ? g->n_experts : 0; }
int64_t mml_gate_n_params(const mml_gate *g) { return g ? g->n_params : 0; }
mml_param *mml_gate_param(mml_gate *g, int64_t index)
{
    return g && index >= 0 && index < g->n_params ? &g->params[index] : NULL;
}

int mml__gate_drop_grads(mml_gate *g)
{
    if (g->readonly)
        return MML_OK;
    float *values = mml__alloc(g->ctx, g->n_floats * sizeof(float));
    if (!values)
        return mml__error(g->ctx, MML_ENOMEM, "gate: out of memory");
    memcpy(values, g->block, g->n_floats * sizeof(float));
    for (int i = 0; i < g->n_params; i++) {
        g->params[i].value = values + (g->params[i].value - g->block);
        g->params[i].grad = NULL;
    }
    mml__free(g->ctx, g->block, 2 * g->n_floats * sizeof(float));
    g->block = values;
    g->readonly = 1;
    return MML_OK;
}

int mml__gate_replica(const mml_gate *g, mml_ctx *ctx, mml_gate **out)
{
    *out = NULL;
    mml_gate *r = mml__alloc(ctx, sizeof *r);
    if (!r)
        return mml__error(ctx, MML_ENOMEM, "gate: out of memory for a session");
    *r = *g;
    r->ctx = ctx;
    r->replica = 1;
    r->weights = NULL;
    r->domain = NULL;
    r->dtable = NULL;
    r->cap_rows = r->last_rows = 0;
    r->x = NULL;
    r->table = mml__alloc(ctx, sizeof(float) * (size_t)g->n_domains * (size_t)g->n_experts);
    if (!r->table) {
        mml__free(ctx, r, sizeof *r);
        return mml__error(ctx, MML_ENOMEM, "gate: out of memory for a session");
    }
    *out = r;
    return MML_OK;
}

int mml__gate_set_mask(mml_gate *g, const uint8_t *mask)
{
    size_t de = (size_t)g->n_domains * (size_t)g->n_experts;
    if (g->replica)
        return mml__error(g->ctx, MML_ESTATE, "gate: a session's copy keeps its model's mask");
    for (int32_t d = 0; mask && d < g->n_domains; d++) {
        int any = 0;
        for (int32_t e = 0; e < g->n_experts; e++)
            any |= mask[(size_t)d * (size_t)g->n_experts + (size_t)e] != 0;
        if (!any)
            return mml__error(g->ctx, MML_EINVAL, "gate: domain %d may use no expert", d);
    }
    if (mask && !g->mask && !(g->mask = mml__alloc(g->ctx, de)))
        return mml__error(g->ctx, MML_ENOMEM, "gate: out of memory");
    if (mask) {
        for (size_t i = 0; i < de; i++)
            g->mask[i] = mask[i] ? 1 : 0;
    } else {
        mml__free(g->ctx, g->mask, de);
        g->mask = NULL;
    }
    return MML_OK;
}

const uint8_t *mml__gate_mask(const mml_gate *g) { return g ? g->mask : NULL; }

/* ---- Row inputs (since 1.3): z_r = e_d W + b + T[d] + x_r V, a softmax per row ---- */

int32_t mml__gate_input_dim(const mml_gate *g) { return g ? g->in_dim : 0; }

int mml__gate_forward_rows(mml_gate *g, const int32_t *domain, const float *x, int64_t ldx,
                           int64_t n, const float **weights)
{
    if (g->in_dim < 1 || !x || ldx < g->in_dim || n < 1)
        return mml__error(g->ctx, MML_EINVAL, "gate_forward_rows: no inputs, or stride %lld "
                          "below %d", (long long)ldx, g->in_dim);
    int rc = check_domains_and_reserve(g, domain, n);
    if (rc < 0)
        return rc;
    int32_t E = g->n_experts, k = g->dim, I = g->in_dim;
    const float *emb = g->params[0].value, *W = g->params[1].value, *b = g->params[2].value;
    const float *T = g->has_bias ? g->params[3].value : NULL, *V = g->params[g->n_params - 1].value;
    double z[MAX_EXPERTS];
    for (int64_t r = 0; r < n; r++) {
        int32_t d = domain[r];
        const float *xr = x + r * ldx;
        /* A masked expert takes no part, as in compute_table. */
        const uint8_t *allow = g->mask ? g->mask + (size_t)d * (size_t)E : NULL;
        double mx = -INFINITY;
        for (int32_t e = 0; e < E; e++) {
            double v = b[e];
            for (int32_t j = 0; j < k; j++)
                v += (double)emb[d * k + j] * W[j * E + e];
            if (T)
                v += T[(size_t)d * (size_t)E + (size_t)e];
            z[e] = v;
        }
        for (int32_t i = 0; i < I; i++) {
            double xi = xr[i];
            const float *vi = V + (size_t)i * (size_t)E;
            for (int32_t e = 0; e < E; e++)
                z[e] += xi * vi[e];
        }
        for (int32_t e = 0; e < E; e++)
            if ((!allow || allow[e]) && z[e] > mx)
                mx = z[e];
        double sum = 0;
        for (int32_t e = 0; e < E; e++)
            if (!allow || allow[e])
                sum += (z[e] = exp(z[e] - mx));
        float *w = g->weights + r * E;
        for (int32_t e = 0; e < E; e++)
            w[e] = !allow || allow[e] ? (float)(z[e] / sum) : 0.0f;
    }
    memcpy(g->domain, domain, sizeof(int32_t) * (size_t)n);
    g->x = x;
    g->ldx = ldx;
    g->pattern = 0;
    g->last_rows = n;
    *weights = g->weights;
    return MML_OK;
}

int mml__gate_backward_rows(mml_gate *g, const float *dweights, float *dx, int64_t lddx)
{
    if (g->readonly)
        return mml__error(g->ctx, MML_ESTATE, "gate_backward: the gate is read-only (no gradients)");
    if (g->last_rows < 1 || !g->x)
        return mml__error(g->ctx, MML_ESTATE, "gate_backward_rows without a forward_rows pass");
    int32_t D = g->n_domains, E = g->n_experts, I = g->in_dim;
    mml_param *pV = &g->params[g->n_params - 1];
    float *dV = pV->frozen ? NULL : pV->grad;
    const float *V = pV->value;
    /* Per-row dz; the domain-level parameters get each domain's sum. */
    memset(g->dtable, 0, sizeof(float) * (size_t)D * (size_t)E);
    double dz[MAX_EXPERTS];
    for (int64_t r = 0; r < g->last_rows; r++) {
        const float *w = g->weights + r * E, *dw = dweights + r * E;
        double dot = 0;
        for (int32_t e = 0; e < E; e++)
            dot += (double)w[e] * dw[e];
        float *dt = g->dtable + (size_t)g->domain[r] * (size_t)E;
        for (int32_t e = 0; e < E; e++) {
            dz[e] = (double)w[e] * ((double)dw[e] - dot);
            dt[e] += (float)dz[e];
        }
        const float *xr = g->x + r * g->ldx;
        float *dxr = dx ? dx + r * lddx : NULL;
        for (int32_t i = 0; i < I; i++) {
            const float *vi = V + (size_t)i * (size_t)E;
            if (dV) {
                float *dvi = dV + (size_t)i * (size_t)E;
                for (int32_t e = 0; e < E; e++)
                    dvi[e] += (float)(xr[i] * dz[e]);
            }
            if (dxr) {
                double s = 0;
                for (int32_t e = 0; e < E; e++)
                    s += vi[e] * dz[e];
                dxr[i] += (float)s;
            }
        }
    }
    float *demb = g->params[0].frozen ? NULL : g->params[0].grad;
    float *dW = g->params[1].frozen ? NULL : g->params[1].grad;
    float *db = g->params[2].frozen ? NULL : g->params[2].grad;
    float *dT = g->has_bias && !g->params[3].frozen ? g->params[3].grad : NULL;
    for (int32_t d = 0; d < D; d++)
        for (int32_t e = 0; e < E; e++) {
            float s = g->dtable[(size_t)d * (size_t)E + (size_t)e];
            if (s != 0.0f)
                add_logit_grad(g, d, e, s, db, dT, dW, demb);
        }
    return MML_OK;
}
