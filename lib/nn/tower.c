#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/layers.h"
#include "moemlora/tower.h"

#define NAME_LEN 48

struct mml_tower {
    mml_ctx *ctx;
    int32_t n_layers;
    int32_t *dims; /* n_layers + 1 */
    float dropout;
    mml_rng dropout_rng;
    float *weights; /* W_0, b_0, W_1, b_1, ... in one block */
    float *grads;
    size_t n_floats;
    mml_param *params; /* 2 per layer */
    char *names;
    /* Scratch of the last forward pass, sized for cap_rows rows and cap_cols adapter columns. */
    int64_t cap_rows;
    int64_t cap_cols;
    float **h;    /* n_layers + 1: h[0] the input copy, h[l + 1] the output of layer l */
    float **mask; /* n_layers dropout multipliers */
    float **U;    /* n_layers adapter intermediates */
    float **Us;
    float *onehot; /* a copy of the gate weights of the last forward pass */
    mml__routing routing;
    float *tmp_a, *tmp_b, *dU;
    /* With adapters: a layer's [x W | x A] (cap_rows x (max_width + cap_cols)) and
     * the weights [W | A] side by side (wcat_floats). */
    float *pu, *wcat;
    float *gcat; /* backward: x^T [dP | dU], the size of wcat */
    int32_t max_width;
    int64_t last_rows;
    int32_t last_training;
    int32_t have_masks;
    int32_t replay;
    int32_t last_active;
    int32_t last_gated;
    mml__mixing last_mix;
    const mml_lora *last_lora;
    /* 1: a session's forward-only copy: weights, params, names and dims are
     * the shared model's, the scratch its own. 2: a training copy, which also
     * owns its params (the same values) and gradients. */
    int32_t replica;
};

int mml_tower_options_init_sized(mml_tower_options *out, uint32_t struct_size)
{
    mml_tower_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->n_layers = 3;
    opt->dropout = 0.5f;
    opt->name = "tower";
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_tower_options);
}

static const int32_t default_hidden[3] = {256, 128, 64};

static float *W_of(const mml_tower *t, int32_t l) { return t->params[2 * l].value; }
static float *b_of(const mml_tower *t, int32_t l) { return t->params[2 * l + 1].value; }

int mml_tower_create(mml_tower **out, mml_ctx *ctx, const mml_tower_options *opt)
{
    if (out)
        *out = NULL;
    if (!out || !ctx)
        return mml__error(ctx, MML_EINVAL, "tower_create: NULL argument");
    mml_tower_options o;
    int rc = MML__COPY_OPTIONS(ctx, &o, opt, mml_tower_options, "tower");
    if (rc < 0)
        return rc;
    const int32_t *hidden = o.hidden;
    if (!hidden) {
        if (o.n_layers != 3)
            return mml__error(ctx, MML_EINVAL, "tower: hidden widths missing for %d layers", o.n_layers);
        hidden = default_hidden;
    }
    if (o.n_layers < 1 || o.n_layers > 64 || o.d_in < 1 || o.d_in > (1 << 20))
        return mml__error(ctx, MML_EINVAL, "tower: d_in %d or n_layers %d invalid", o.d_in, o.n_layers);
    if (!(o.dropout >= 0.0f && o.dropout < 1.0f))
        return mml__error(ctx, MML_EINVAL, "tower: dropout %g outside [0, 1)", (double)o.dropout);
    for (int32_t l = 0; l < o.n_layers; l++)
        if (hidden[l] < 1 || hidden[l] > (1 << 20))
            return mml__error(ctx, MML_EINVAL, "tower: width %d of hidden layer %d invalid", hidden[l], l);
    const char *prefix = o.name ? o.name : "tower";
    mml_tower *t = mml__calloc(ctx, 1, sizeof *t);
    if (!t)
        return mml__error(ctx, MML_ENOMEM, "tower: out of memory");
    t->ctx = ctx;
    t->n_layers = o.n_layers;
    t->dropout = o.dropout;
    int32_t L = o.n_layers;
    t->dims = mml__alloc(ctx, sizeof(int32_t) * (size_t)(L + 1));
    t->params = mml__calloc(ctx, (size_t)(2 * L), sizeof(mml_param));
    t->names = mml__alloc(ctx, (size_t)(2 * L) * NAME_LEN);
    t->h = mml__calloc(ctx, (size_t)(L + 1), sizeof(float *));
    t->mask = mml__calloc(ctx, (size_t)L, sizeof(float *));
    t->U = mml__calloc(ctx, (size_t)L, sizeof(float *));
    t->Us = mml__calloc(ctx, (size_t)L, sizeof(float *));
    if (!t->dims || !t->params || !t->names || !t->h || !t->mask || !t->U || !t->Us)
        goto nomem;
    t->dims[0] = o.d_in;
    t->max_width = o.d_in;
    for (int32_t l = 0; l < L; l++) {
        t->dims[l + 1] = hidden[l];
        if (hidden[l] > t->max_width)
            t->max_width = hidden[l];
        t->n_floats += (size_t)t->dims[l] * (size_t)hidden[l] + (size_t)hidden[l];
    }
    t->weights = mml__calloc(ctx, t->n_floats, sizeof(float));
    t->grads = mml__calloc(ctx, t->n_floats, sizeof(float));
    if (!t->weights || !t->grads)
        goto nomem;
    mml_rng rng;
    mml__rng_init(&rng, ctx->seed, MML_STREAM_TOWER + o.stream);
    size_t off = 0;
    for (int32_t l = 0; l < L; l++) {
        int32_t din = t->dims[l], dout = t->dims[l + 1];
        mml_param *w = &t->params[2 * l], *b = &t->params[2 * l + 1];
        char *wn = t->names + (size_t)(2 * l) * NAME_LEN, *bn = wn + NAME_LEN;
        snprintf(wn, NAME_LEN, "%s.%d.W", prefix, l);
        snprintf(bn, NAME_LEN, "%s.%d.b", prefix, l);
        *w = (mml_param){wn, t->weights + off, t->grads + off, din, dout, MML_GROUP_BACKBONE, -1, 0, 0};
        off += (size_t)din * (size_t)dout;
        *b = (mml_param){bn, t->weights + off, t->grads + off, 1, dout, MML_GROUP_BACKBONE, -1, 0, 0};
        off += (size_t)dout;
        mml__glorot_uniform(&rng, w->value, din, dout);
    }
    mml__rng_init(&t->dropout_rng, ctx->seed, MML_STREAM_DROPOUT + o.stream);
    *out = t;
    return MML_OK;
nomem:
    mml_tower_destroy(t);
    return mml__error(ctx, MML_ENOMEM, "tower: out of memory");
}

/* The largest [W | A] of any layer, for cols adapter columns. */
static size_t wcat_floats(const mml_tower *t, int64_t cols)
{
    size_t m = 0;
    for (int32_t l = 0; l < t->n_layers; l++) {
        size_t f = (size_t)t->dims[l] * ((size_t)t->dims[l + 1] + (size_t)cols);
        if (f > m)
            m = f;
    }
    return m;
}

static void free_scratch(mml_tower *t)
{
    mml_ctx *ctx = t->ctx;
    int32_t L = t->n_layers;
    size_t rows = (size_t)t->cap_rows, cols = (size_t)t->cap_cols;
    for (int32_t l = 0; l <= L; l++) {
        mml__free(ctx, t->h[l], rows * (size_t)t->dims[l] * sizeof(float));
        t->h[l] = NULL;
    }
    for (int32_t l = 0; l < L; l++) {
        mml__free(ctx, t->mask[l], rows * (size_t)t->dims[l + 1] * sizeof(float));
        mml__free(ctx, t->U[l], rows * cols * sizeof(float));
        mml__free(ctx, t->Us[l], rows * cols * sizeof(float));
        t->mask[l] = t->U[l] = t->Us[l] = NULL;
    }
    mml__free(ctx, t->onehot, rows * cols * sizeof(float));
    mml__free(ctx, t->routing.perm, rows * sizeof(int32_t));
    mml__free(ctx, t->routing.offs, (cols + 1) * sizeof(int64_t));
    mml__free(ctx, t->routing.out, rows * (size_t)t->max_width * sizeof(float));
    memset(&t->routing, 0, sizeof t->routing);
    mml__free(ctx, t->tmp_a, rows * (size_t)t->max_width * sizeof(float));
    mml__free(ctx, t->tmp_b, rows * (size_t)t->max_width * sizeof(float));
    mml__free(ctx, t->dU, rows * cols * sizeof(float));
    if (cols) {
        mml__free(ctx, t->pu, rows * ((size_t)t->max_width + cols) * sizeof(float));
        mml__free(ctx, t->wcat, wcat_floats(t, t->cap_cols) * sizeof(float));
        mml__free(ctx, t->gcat, wcat_floats(t, t->cap_cols) * sizeof(float));
    }
    t->pu = t->wcat = t->gcat = NULL;
    t->onehot = t->tmp_a = t->tmp_b = t->dU = NULL;
    t->cap_rows = t->cap_cols = 0;
    t->have_masks = 0;
}

/* cols: room for the stacked adapters (n_experts * max rank, and n_experts for one-hot weights). */
static int ensure_scratch(mml_tower *t, int64_t rows, int64_t cols)
{
    if (rows <= t->cap_rows && cols <= t->cap_cols)
        return MML_OK;
    if (t->replay && t->have_masks)
        return mml__error(t->ctx, MML_ESTATE, "tower: dropout replay needs the same batch size");
    if (rows < t->cap_rows)
        rows = t->cap_rows;
    if (cols < t->cap_cols)
        cols = t->cap_cols;
    free_scratch(t);
    mml_ctx *ctx = t->ctx;
    int32_t L = t->n_layers;
    size_t r = (size_t)rows, c = (size_t)cols;
    int ok = 1;
    for (int32_t l = 0; l <= L; l++)
        ok &= (t->h[l] = mml__alloc(ctx, r * (size_t)t->dims[l] * sizeof(float))) != NULL;
    for (int32_t l = 0; l < L; l++) {
        ok &= (t->mask[l] = mml__alloc(ctx, r * (size_t)t->dims[l + 1] * sizeof(float))) != NULL;
        if (c) {
            ok &= (t->U[l] = mml__alloc(ctx, r * c * sizeof(float))) != NULL;
            ok &= (t->Us[l] = mml__alloc(ctx, r * c * sizeof(float))) != NULL;
        }
    }
    if (c) {
        ok &= (t->onehot = mml__alloc(ctx, r * c * sizeof(float))) != NULL;
        size_t rw = r * (size_t)t->max_width * sizeof(float);
        ok &= (t->routing.perm = mml__alloc(ctx, r * sizeof(int32_t))) != NULL;
        ok &= (t->routing.offs = mml__alloc(ctx, (c + 1) * sizeof(int64_t))) != NULL;
        ok &= (t->routing.out = mml__alloc(ctx, rw)) != NULL;
        ok &= (t->dU = mml__alloc(ctx, r * c * sizeof(float))) != NULL;
        ok &= (t->pu = mml__alloc(ctx, r * ((size_t)t->max_width + c) * sizeof(float))) != NULL;
        ok &= (t->wcat = mml__alloc(ctx, wcat_floats(t, cols) * sizeof(float))) != NULL;
        ok &= (t->gcat = mml__alloc(ctx, wcat_floats(t, cols) * sizeof(float))) != NULL;
    }
    ok &= (t->tmp_a = mml__alloc(ctx, r * (size_t)t->max_width * sizeof(float))) != NULL;
    ok &= (t->tmp_b = mml__alloc(ctx, r * (size_t)t->max_width * sizeof(float))) != NULL;
    t->cap_rows = rows;
    t->cap_cols = cols;
    if (!ok) {
        free_scratch(t);
        return mml__error(ctx, MML_ENOMEM, "tower: out of memory for %lld rows", (long long)rows);
    }
    return MML_OK;
}

void mml_tower_destroy(mml_tower *t)
{
    if (!t)
        return;
    mml_ctx *ctx = t->ctx;
    int32_t L = t->n_layers;
    if (t->dims && t->h && t->mask && t->U && t->Us)
        free_scratch(t);
    mml__free(ctx, t->h, (size_t)(L + 1) * sizeof(float *));
    mml__free(ctx, t->mask, (size_t)L * sizeof(float *));
    mml__free(ctx, t->U, (size_t)L * sizeof(float *));
    mml__free(ctx, t->Us, (size_t)L * sizeof(float *));
    if (t->replica == 2) {
        mml__free(ctx, t->grads, t->n_floats * sizeof(float));
        mml__free(ctx, t->params, (size_t)(2 * L) * sizeof(mml_param));
    }
    if (t->replica) {
        mml__free(ctx, t, sizeof *t);
        return;
    }
    mml__free(ctx, t->weights, t->n_floats * sizeof(float));
    mml__free(ctx, t->grads, t->n_floats * sizeof(float));
    mml__free(ctx, t->params, (size_t)(2 * L) * sizeof(mml_param));
    mml__free(ctx, t->names, (size_t)(2 * L) * NAME_LEN);
    mml__free(ctx, t->dims, sizeof(int32_t) * (size_t)(L + 1));
    mml__free(ctx, t, sizeof *t);
}

/* Up to this many experts, per-domain routing runs as a one-hot mixture. */
#define ONE_HOT_MAX_EXPERTS 4

/* Rows above this go through one product with [W | A] side by side (BLIS
 * packs x once for both); fewer rows take two small products instead of
 * copying the weights. */
#define MIXED_ONE_PRODUCT_ROWS 8

/* wcat = [W | A] of layer l for the active experts (din x (dout + K)). */
static void build_wcat(mml_tower *t, const mml_lora *lora, int32_t l, const mml__mixing *mx)
{
    int32_t din = t->dims[l], dout = t->dims[l + 1], r;
    const float *At, *B, *C, *W = W_of(t, l);
    mml__lora_layer_ptrs(lora, l, mx->first, &r, &At, &B, &C);
    int64_t K = (int64_t)mx->n_active * r, w = dout + K;
    float *wc = t->wcat;
    for (int32_t p = 0; p < din; p++) {
        memcpy(wc + (int64_t)p * w, W + (int64_t)p * dout, sizeof(float) * (size_t)dout);
        for (int64_t q = 0; q < K; q++)
            wc[(int64_t)p * w + dout + q] = At[q * din + p];
    }
}

/* A layer with every row on the same experts (one expert, or the gated
 * mixture): [P | U] = x [W | A] (P the shared product, U every active
 * expert's r columns), Us = U scaled by the row's gate weights, then one
 * pass: y = ReLU((P + b) + [Us | g] [B; c]) (dropout: ReLU(m (P + b) + ...)). */
static int layer_forward_mixed(mml_tower *t, const mml_lora *lora, int32_t l, int64_t n,
                               const mml__mixing *mx, int use_dropout, int draw, float keep_scale)
{
    mml_ctx *ctx = t->ctx;
    int32_t din = t->dims[l], dout = t->dims[l + 1], r, na = mx->n_active;
    const float *At, *B, *C, *x = t->h[l], *W = W_of(t, l), *b = b_of(t, l);
    mml__lora_layer_ptrs(lora, l, mx->first, &r, &At, &B, &C);
    int64_t K = (int64_t)na * r, w = dout + K;
    float *pu = t->pu, *y = t->h[l + 1], *U = t->U[l], *Us = mx->g ? t->Us[l] : t->U[l];
    int rc;
    if (n > MIXED_ONE_PRODUCT_ROWS) {
        build_wcat(t, lora, l, mx);
        rc = mml__gemm(ctx, 0, 0, n, w, din, 1.0f, x, din, 1, t->wcat, w, 1, 0.0f, pu, w, 1);
    } else {
        rc = mml__gemm(ctx, 0, 0, n, dout, din, 1.0f, x, din, 1, W, dout, 1, 0.0f, pu, w, 1);
        if (rc >= 0)
            rc = mml__gemm(ctx, 0, 1, n, K, din, 1.0f, x, din, 1, At, din, 1, 0.0f, pu + dout, w, 1);
    }
    if (rc < 0)
        return rc;
    for (int64_t i = 0; i < n; i++) {
        const float *u = pu + i * w + dout;
        memcpy(U + i * K, u, sizeof(float) * (size_t)K);
        if (mx->g)
            for (int32_t e = 0; e < na; e++) {
                float g = mx->g[i * na + e];
                for (int32_t q = 0; q < r; q++)
                    Us[i * K + (int64_t)e * r + q] = u[(int64_t)e * r + q] * g;
            }
    }
    const float *bias = b;
    if (use_dropout) {
        float *m = t->mask[l];
        if (draw)
            mml__dropout_mask(&t->dropout_rng, t->dropout, keep_scale, m, n * dout);
        mml__bias_mask_relu(n, dout, pu, w, b, m, 0);
        bias = NULL;
    }
    /* One expert (no gate): its c with weight 1 on every row. */
    static const float one = 1.0f;
    const float *z2 = mx->g ? mx->g : &one;
    mml__layer_epilogue(n, dout, pu, w, bias, Us, K, K, B, dout, z2, mx->g ? na : 0, na, C, dout,
                        y, dout, 1);
    return MML_OK;
}

int mml_tower_forward(mml_tower *t, const float *x, int64_t n, const mml_lora *lora,
                      const mml_mix *mix, int32_t training, const float **out)
{
    if (!t)
        return MML_EINVAL;
    mml_ctx *ctx = t->ctx;
    if (!x || !out)
        return mml__error(ctx, MML_EINVAL, "tower_forward: NULL input or output");
    if (n < 1)
        return mml__error(ctx, MML_ESHAPE, "tower_forward: batch of %lld rows", (long long)n);
    int64_t cols = 0;
    if (lora && mix && mix->mode != MML_MIX_NONE) {
        int rc = mml__lora_matches(lora, ctx, t->n_layers, t->dims);
        if (rc < 0)
            return rc;
        cols = mml__lora_max_cols(lora);
        if (mml_lora_n_experts(lora) > cols)
            cols = mml_lora_n_experts(lora);
    }
    if (t->replay && t->have_masks && training && n != t->last_rows)
        return mml__error(ctx, MML_ESTATE, "tower: dropout replay needs the same batch size");
    int rc = ensure_scratch(t, n, cols);
    if (rc < 0)
        return rc;
    mml__mixing mx = {0, 0, NULL, NULL};
    int active = 0;
    rc = mml__lora_resolve(lora, ctx, mix, n, &t->routing, &mx, &active);
    if (rc < 0)
        return rc;
    int gated = active && mix->mode == MML_MIX_GATED;
    if (mx.route && mx.n_active <= ONE_HOT_MAX_EXPERTS) {
        /* Few experts: every row through all of them, weighted one-hot, in
         * one product per layer and direction, costs less than a product per
         * expert. */
        float *g = t->onehot;
        memset(g, 0, sizeof(float) * (size_t)(n * mx.n_active));
        for (int64_t i = 0; i < n; i++)
            g[i * mx.n_active + mix->domain[i]] = 1.0f;
        mx.g = g;
        mx.route = NULL;
    } else if (gated) {
        /* Keep a copy: the caller's weights are not ours to hold until backward. */
        memcpy(t->onehot, mx.g, sizeof(float) * (size_t)(n * mx.n_active));
        mx.g = t->onehot;
    }
    for (int64_t i = 0; i < n * t->dims[0]; i++)
        if (!isfinite(x[i]))
            return mml__error(ctx, MML_ENONFINITE, "tower input row %lld, column %lld is not finite",
                              (long long)(i / t->dims[0]), (long long)(i % t->dims[0]));
    /* Routed by domain: the tower keeps its rows sorted by expert from the
     * input to the output, so each expert's rows are one block in every layer. */
    const int32_t *perm = mx.route ? mx.route->perm : NULL;
    if (perm)
        for (int64_t j = 0; j < n; j++)
            memcpy(t->h[0] + j * t->dims[0], x + (int64_t)perm[j] * t->dims[0],
                   sizeof(float) * (size_t)t->dims[0]);
    else
        memcpy(t->h[0], x, sizeof(float) * (size_t)(n * t->dims[0]));
    int use_dropout = training && t->dropout > 0.0f;
    int draw = use_dropout && !(t->replay && t->have_masks);
    float keep_scale = 1.0f / (1.0f - t->dropout);
    for (int32_t l = 0; l < t->n_layers; l++) {
        int32_t din = t->dims[l], dout = t->dims[l + 1];
        float *y = t->h[l + 1];
        const float *b = b_of(t, l);
        if (active && !mx.route) {
            rc = layer_forward_mixed(t, lora, l, n, &mx, use_dropout, draw, keep_scale);
            if (rc < 0)
                return rc;
            continue;
        }
        if (!active && !use_dropout) {
            /* y = ReLU(x W + b) in one pass after the product. */
            rc = mml__gemm(ctx, 0, 0, n, dout, din, 1.0f, t->h[l], din, 1, W_of(t, l), dout, 1,
                           0.0f, y, dout, 1);
            if (rc < 0)
                return rc;
            mml__layer_epilogue(n, dout, y, dout, b, NULL, 0, 0, NULL, 0, NULL, 0, 0, NULL, 0, y,
                                dout, 1);
            continue;
        }
        rc = mml__gemm(ctx, 0, 0, n, dout, din, 1.0f, t->h[l], din, 1, W_of(t, l), dout, 1, 0.0f, y,
                       dout, 1);
        if (rc < 0)
            return rc;
        if (use_dropout) {
            float *m = t->mask[l];
            if (draw)
                mml__dropout_mask(&t->dropout_rng, t->dropout, keep_scale, m, n * dout);
            /* Without experts: y = ReLU(m (x W + b)) in one pass. */
            mml__bias_mask_relu(n, dout, y, dout, b, m, !active);
            if (!active)
                continue;
        } else {
            mml__bias_mask_relu(n, dout, y, dout, b, NULL, 0);
        }
        if (active) {
            /* Only routed mixtures get here (the others went through layer_forward_mixed). */
            rc = mml__lora_sorted_forward(lora, ctx, l, t->h[l], mx.route->offs, t->U[l], y);
            if (rc < 0)
                return rc;
        }
        for (int64_t i = 0; i < n * dout; i++)
            y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    }
    if (draw)
        t->have_masks = 1;
    t->last_rows = n;
    t->last_training = use_dropout;
    t->last_active = active;
    t->last_gated = gated;
    t->last_mix = mx;
    t->last_lora = lora;
    *out = t->h[t->n_layers];
    if (perm) {
        /* Back to the caller's row order. */
        int32_t w = t->dims[t->n_layers];
        float *o = t->routing.out;
        for (int64_t j = 0; j < n; j++)
            memcpy(o + (int64_t)perm[j] * w, t->h[t->n_layers] + j * w, sizeof(float) * (size_t)w);
        *out = o;
    }
    return MML_OK;
}

/* Backward of a layer_forward_mixed() layer given d = d loss / d (its
 * pre-activation): [dP | dU] side by side in pu (dP = d times the dropout
 * mask, dU from the experts), then one product for the weight gradients,
 * x^T [dP | dU] = [dW | dA], and one for the input's, [dP | dU] [W | A]^T. */
static int mixed_layer_backward(mml_tower *t, mml_lora *lora, int32_t l, int64_t n,
                                const mml__mixing *mx, float *d, int lora_grads, float *dG,
                                float *dx, float beta)
{
    mml_ctx *ctx = t->ctx;
    int32_t din = t->dims[l], dout = t->dims[l + 1], r;
    const float *At, *B, *C, *x = t->h[l];
    mml__lora_layer_ptrs(lora, l, mx->first, &r, &At, &B, &C);
    int64_t K = (int64_t)mx->n_active * r, w = dout + K;
    float *P = t->pu;
    int need_du = lora_grads || dx || dG;
    int rc = MML_OK;
    if (need_du && (rc = mml__lora_layer_backward_du(lora, ctx, l, n, mx, t->U[l],
                                                     mx->g ? t->Us[l] : t->U[l], d, lora_grads,
                                                     dG, P + dout, w)) < 0)
        return rc;
    /* d = d m, and [dP | .] = d. */
    const float *m = t->last_training ? t->mask[l] : NULL;
    mml__mask_copy(n, dout, d, m, P, w);
    mml_param *Wp = &t->params[2 * l], *bp = &t->params[2 * l + 1];
    if (!bp->frozen)
        mml__col_sums_add(n, dout, d, bp->grad);
    if (!Wp->frozen && lora_grads) {
        float *G = t->gcat, *dAt = mml__lora_layer_grad_At(lora, l, mx->first);
        rc = mml__gemm(ctx, 1, 0, din, w, n, 1.0f, x, din, 1, P, w, 1, 0.0f, G, w, 1);
        if (rc < 0)
            return rc;
        for (int32_t p = 0; p < din; p++) {
            mml__add_to(dout, G + (int64_t)p * w, Wp->grad + (int64_t)p * dout);
            for (int64_t q = 0; q < K; q++)
                dAt[q * din + p] += G[(int64_t)p * w + dout + q];
        }
    } else if (!Wp->frozen) {
        rc = mml__gemm(ctx, 1, 0, din, dout, n, 1.0f, x, din, 1, d, dout, 1, 1.0f, Wp->grad, dout, 1);
    } else if (lora_grads) {
        rc = mml__gemm(ctx, 1, 0, K, din, n, 1.0f, P + dout, w, 1, x, din, 1, 1.0f,
                       mml__lora_layer_grad_At(lora, l, mx->first), din, 1);
    }
    if (rc < 0 || !dx)
        return rc;
    build_wcat(t, lora, l, mx);
    return mml__gemm(ctx, 0, 1, n, din, w, 1.0f, P, w, 1, t->wcat, w, 1, beta, dx, din, 1);
}

int mml_tower_backward(mml_tower *t, const float *dout, float *dx, mml_lora *lora, float *dweights)
{
    if (!t)
        return MML_EINVAL;
    mml_ctx *ctx = t->ctx;
    if (!dout)
        return mml__error(ctx, MML_EINVAL, "tower_backward: NULL gradient");
    if (!t->grads || (lora && !mml__lora_has_grads(lora)))
        return mml__error(ctx, MML_ESTATE, "tower_backward: the model is read-only (no gradients)");
    if (t->last_rows < 1)
        return mml__error(ctx, MML_ESTATE, "tower_backward without a forward pass");
    if (t->last_active && lora != t->last_lora)
        return mml__error(ctx, MML_EINVAL, "tower_backward: not the experts of the forward pass");
    int64_t n = t->last_rows;
    mml__mixing mx = t->last_mix;
    int lora_grads = t->last_active && mml__lora_trainable(lora, mx.first, mx.n_active);
    float *dG = t->last_gated ? dweights : NULL;
    int32_t L = t->n_layers;
    float *cur = t->tmp_a, *next = t->tmp_b;
    const int32_t *perm = t->last_active && mx.route ? mx.route->perm : NULL;
    if (perm)
        for (int64_t j = 0; j < n; j++)
            memcpy(cur + j * t->dims[L], dout + (int64_t)perm[j] * t->dims[L],
                   sizeof(float) * (size_t)t->dims[L]);
    else
        memcpy(cur, dout, sizeof(float) * (size_t)(n * t->dims[L]));
    for (int32_t l = L - 1; l >= 0; l--) {
        int32_t din = t->dims[l], dout_w = t->dims[l + 1];
        const float *h = t->h[l + 1], *x = t->h[l];
        /* Without experts the mask's zeros are among h's: one pass does both. */
        mml__relu_grad(n * dout_w, h, t->last_training && !t->last_active ? t->mask[l] : NULL, cur);
        float *dx_l = l > 0 || (perm && dx) ? next : dx;
        float beta = l > 0 || perm ? 0.0f : 1.0f;
        int rc;
        if (perm) {
            rc = mml__lora_sorted_backward(lora, ctx, l, x, mx.route->offs, t->U[l], cur,
                                           lora_grads, dx_l, t->dU);
            if (rc < 0)
                return rc;
            if (dx_l)
                beta = 1.0f;
        } else if (t->last_active) {
            rc = mixed_layer_backward(t, lora, l, n, &mx, cur, lora_grads, dG, dx_l, beta);
            if (rc < 0)
                return rc;
            float *swap = cur;
            cur = next;
            next = swap;
            continue;
        }
        if (t->last_training && perm) {
            const float *m = t->mask[l];
            for (int64_t i = 0; i < n * dout_w; i++)
                cur[i] *= m[i];
        }
        mml_param *W = &t->params[2 * l], *b = &t->params[2 * l + 1];
        if (!W->frozen) {
            rc = mml__gemm(ctx, 1, 0, din, dout_w, n, 1.0f, x, din, 1, cur, dout_w, 1, 1.0f, W->grad,
                           dout_w, 1);
            if (rc < 0)
                return rc;
        }
        if (!b->frozen)
            mml__col_sums_add(n, dout_w, cur, b->grad);
        if (dx_l) {
            rc = mml__gemm(ctx, 0, 1, n, din, dout_w, 1.0f, cur, dout_w, 1, W->value, dout_w, 1, beta,
                           dx_l, din, 1);
            if (rc < 0)
                return rc;
        }
        if (l == 0 && perm && dx)
            for (int64_t j = 0; j < n; j++)
                mml__add_to(din, dx_l + j * din, dx + (int64_t)perm[j] * din);
        float *swap = cur;
        cur = next;
        next = swap;
    }
    return MML_OK;
}

mml_rng *mml__tower_dropout_rng(mml_tower *t) { return t ? &t->dropout_rng : NULL; }

int mml_tower_set_dropout_replay(mml_tower *t, int32_t replay)
{
    if (!t)
        return MML_EINVAL;
    t->replay = replay ? 1 : 0;
    return MML_OK;
}

uint64_t mml_tower_relu_pattern(const mml_tower *t)
{
    if (!t || t->last_rows < 1)
        return 0;
    uint64_t hsh = 1469598103934665603ull;
    for (int32_t l = 1; l <= t->n_layers; l++) {
        const float *h = t->h[l];
        for (int64_t i = 0; i < t->last_rows * t->dims[l]; i++) {
            hsh ^= (uint64_t)(h[i] > 0.0f);
            hsh *= 1099511628211ull;
        }
    }
    return hsh;
}

int32_t mml_tower_d_in(const mml_tower *t) { return t ? t->dims[0] : 0; }
int32_t mml_tower_d_out(const mml_tower *t) { return t ? t->dims[t->n_layers] : 0; }
int32_t mml_tower_n_layers(const mml_tower *t) { return t ? t->n_layers : 0; }
int32_t mml_tower_width(const mml_tower *t, int32_t layer)
{
    return t && layer >= 0 && layer < t->n_layers ? t->dims[layer + 1] : -1;
}
int64_t mml_tower_n_params(const mml_tower *t) { return t ? 2 * (int64_t)t->n_layers : 0; }
mml_param *mml_tower_param(mml_tower *t, int64_t index)
{
    return t && index >= 0 && index < 2 * (int64_t)t->n_layers ? &t->params[index] : NULL;
}

void mml__tower_drop_grads(mml_tower *t)
{
    mml__free(t->ctx, t->grads, t->n_floats * sizeof(float));
    t->grads = NULL;
    for (int32_t i = 0; i < 2 * t->n_layers; i++)
        t->params[i].grad = NULL;
}

int mml__tower_replica(const mml_tower *t, mml_ctx *ctx, mml_tower **out)
{
    *out = NULL;
    mml_tower *r = mml__alloc(ctx, sizeof *r);
    if (!r)
        return mml__error(ctx, MML_ENOMEM, "tower: out of memory for a session");
    *r = *t;
    int32_t L = t->n_layers;
    r->ctx = ctx;
    r->replica = 1;
    r->cap_rows = r->cap_cols = 0;
    r->onehot = r->tmp_a = r->tmp_b = r->dU = r->pu = r->wcat = r->gcat = NULL;
    memset(&r->routing, 0, sizeof r->routing);
    r->have_masks = r->replay = r->last_active = r->last_gated = r->last_training = 0;
    r->last_rows = 0;
    r->last_lora = NULL;
    r->h = mml__calloc(ctx, (size_t)(L + 1), sizeof(float *));
    r->mask = mml__calloc(ctx, (size_t)L, sizeof(float *));
    r->U = mml__calloc(ctx, (size_t)L, sizeof(float *));
    r->Us = mml__calloc(ctx, (size_t)L, sizeof(float *));
    if (!r->h || !r->mask || !r->U || !r->Us) {
        mml_tower_destroy(r);
        return mml__error(ctx, MML_ENOMEM, "tower: out of memory for a session");
    }
    *out = r;
    return MML_OK;
}

int mml__tower_train_replica(const mml_tower *t, mml_ctx *ctx, mml_tower **out)
{
    int rc = mml__tower_replica(t, ctx, out);
    if (rc < 0)
        return rc;
    mml_tower *r = *out;
    int32_t L = t->n_layers;
    r->params = mml__alloc(ctx, (size_t)(2 * L) * sizeof(mml_param));
    r->grads = mml__calloc(ctx, t->n_floats, sizeof(float));
    r->replica = 2;
    if (!r->params || !r->grads) {
        mml_tower_destroy(r);
        *out = NULL;
        return mml__error(ctx, MML_ENOMEM, "tower: out of memory for a training thread");
    }
    memcpy(r->params, t->params, (size_t)(2 * L) * sizeof(mml_param));
    for (int32_t i = 0; i < 2 * L; i++)
        r->params[i].grad = r->grads + (t->params[i].value - t->weights);
    return MML_OK;
}
