/* Layer extras (issue 4): top-k gate, per-row weights in the batch view,
 * L2 regularisation, sparse optimisers, id hashing and out-of-vocabulary
 * policy, multi-hot pooling. */
#include "internal.h"
#include "testutil.h"

/* ---------------------------------------------------------------- top-k gate */

static mml_gate *make_gate(mml_ctx *ctx, int32_t D, int32_t E, int32_t k, int32_t top_k)
{
    mml_gate_options o;
    mml_gate_options_init(&o);
    o.n_domains = D;
    o.n_experts = E;
    o.embed_dim = k;
    o.top_k = top_k;
    o.stream = 3;
    mml_gate *g = NULL;
    int rc = mml_gate_create(&g, ctx, &o);
    ck_assert_msg(rc == MML_OK, "gate_create: %s", mml_ctx_last_error(ctx));
    return g;
}

static void randomize_gate(mml_gate *g, uint64_t seed, float scale)
{
    mml_rng rng;
    mml__rng_init(&rng, seed, 1);
    for (int64_t i = 0; i < mml_gate_n_params(g); i++) {
        mml_param *p = mml_gate_param(g, i);
        for (int64_t j = 0; j < mml_param_size(p); j++)
            p->value[j] = (mml__rng_uniform(&rng) - 0.5f) * 2.0f * scale;
    }
}

/* Reference: logits in double, top-k by logit (lower index wins ties), softmax over the kept set. */
static void ref_gate_row(mml_gate *g, int32_t d, int32_t top_k, double *w)
{
    int32_t E = mml_gate_n_experts(g);
    mml_param *emb = mml_gate_param(g, 0), *W = mml_gate_param(g, 1), *b = mml_gate_param(g, 2);
    int32_t k = (int32_t)emb->cols;
    double z[64];
    int keep[64];
    for (int32_t e = 0; e < E; e++) {
        double s = b->value[e];
        for (int32_t j = 0; j < k; j++)
            s += (double)emb->value[d * k + j] * W->value[j * E + e];
        z[e] = (float)s;
        keep[e] = top_k <= 0 || top_k >= E;
    }
    if (top_k > 0 && top_k < E) {
        for (int32_t e = 0; e < E; e++) {
            int rank = 0; /* experts that beat e */
            for (int32_t j = 0; j < E; j++)
                rank += z[j] > z[e] || (z[j] == z[e] && j < e);
            keep[e] = rank < top_k;
        }
    }
    double mx = -INFINITY, sum = 0;
    for (int32_t e = 0; e < E; e++)
        if (keep[e] && z[e] > mx)
            mx = z[e];
    for (int32_t e = 0; e < E; e++)
        sum += keep[e] ? exp(z[e] - mx) : 0.0;
    for (int32_t e = 0; e < E; e++)
        w[e] = keep[e] ? exp(z[e] - mx) / sum : 0.0;
}

START_TEST(gate_top_k_values)
{
    mml_ctx *ctx = plain_ctx(1, 7);
    enum { GD = 3, GE = 7 };
    for (int32_t top = 1; top <= GE + 1; top++) {
        mml_gate *g = make_gate(ctx, GD, GE, 4, top);
        randomize_gate(g, 100 + (uint64_t)top, 1.0f);
        int32_t dom[5] = {0, 2, 1, 2, 0};
        const float *w = NULL;
        ck_assert_int_eq(mml_gate_forward(g, dom, 5, &w), MML_OK);
        float table[GD * GE];
        ck_assert_int_eq(mml_gate_table(g, table), MML_OK);
        for (int r = 0; r < 5; r++) {
            double ref[GE], sum = 0;
            int kept = 0;
            ref_gate_row(g, dom[r], top, ref);
            for (int e = 0; e < GE; e++) {
                ck_assert_msg(fabs(w[r * GE + e] - ref[e]) < 1e-6, "top %d row %d expert %d: %g vs %g",
                              top, r, e, (double)w[r * GE + e], ref[e]);
                ck_assert_float_eq(w[r * GE + e], table[dom[r] * GE + e]);
                if (ref[e] == 0.0)
                    ck_assert_float_eq(w[r * GE + e], 0.0f); /* dropped experts are exactly 0 */
                kept += w[r * GE + e] != 0.0f;
                sum += w[r * GE + e];
            }
            ck_assert_int_eq(kept, top < GE ? top : GE);
            ck_assert_double_eq_tol(sum, 1.0, 1e-6);
        }
        ck_assert_int_eq(mml_gate_top_k(g), top < GE ? top : 0);
        if (top < GE)
            ck_assert_uint_ne(mml_gate_kink_pattern(g), 0);
        else
            ck_assert_uint_eq(mml_gate_kink_pattern(g), 0);
        mml_gate_destroy(g);
    }
    mml_ctx_destroy(ctx);
}
END_TEST

/* Equal logits: the lower expert index wins. */
START_TEST(gate_top_k_ties)
{
    mml_ctx *ctx = plain_ctx(1, 7);
    static const float bias[5] = {1.0f, 3.0f, 3.0f, 3.0f, 0.0f};
    struct {
        int32_t top;
        float expect[5];
    } cases[] = {
        {1, {0, 1, 0, 0, 0}},
        {2, {0, 0.5f, 0.5f, 0, 0}},
        {3, {0, 1.0f / 3, 1.0f / 3, 1.0f / 3, 0}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        mml_gate *g = make_gate(ctx, 2, 5, 2, cases[c].top);
        memset(mml_gate_param(g, 1)->value, 0, sizeof(float) * 10); /* W = 0: z = b */
        memcpy(mml_gate_param(g, 2)->value, bias, sizeof bias);
        int32_t dom[2] = {0, 1};
        const float *w;
        ck_assert_int_eq(mml_gate_forward(g, dom, 2, &w), MML_OK);
        for (int r = 0; r < 2; r++)
            for (int e = 0; e < 5; e++)
                ck_assert_msg(fabsf(w[r * 5 + e] - cases[c].expect[e]) < 1e-6f,
                              "top %d expert %d: %g", cases[c].top, e, (double)w[r * 5 + e]);
        mml_gate_destroy(g);
    }
    /* All equal: the first k experts. */
    mml_gate *g = make_gate(ctx, 1, 6, 2, 4);
    memset(mml_gate_param(g, 1)->value, 0, sizeof(float) * 12);
    int32_t dom = 0;
    const float *w;
    ck_assert_int_eq(mml_gate_forward(g, &dom, 1, &w), MML_OK);
    for (int e = 0; e < 6; e++)
        ck_assert_float_eq_tol(w[e], e < 4 ? 0.25f : 0.0f, 1e-7f);
    mml_gate_destroy(g);
    mml_ctx_destroy(ctx);
}
END_TEST

/* k >= E is the dense gate, bit for bit, values and gradients. */
START_TEST(gate_top_k_at_least_E_is_dense)
{
    mml_ctx *ctx = plain_ctx(1, 9);
    int32_t dom[6] = {0, 1, 2, 3, 1, 0};
    float dw[6 * 5];
    for (int i = 0; i < 30; i++)
        dw[i] = (float)((i * 7) % 11) / 11.0f - 0.4f;
    mml_gate *dense = make_gate(ctx, 4, 5, 3, 0);
    const float *wd;
    ck_assert_int_eq(mml_gate_forward(dense, dom, 6, &wd), MML_OK);
    ck_assert_int_eq(mml_gate_backward(dense, dw), MML_OK);
    for (int32_t top = 5; top <= 9; top += 4) {
        mml_gate *g = make_gate(ctx, 4, 5, 3, top);
        const float *w;
        ck_assert_int_eq(mml_gate_forward(g, dom, 6, &w), MML_OK);
        ck_assert_int_eq(memcmp(w, wd, sizeof(float) * 30), 0);
        ck_assert_int_eq(mml_gate_backward(g, dw), MML_OK);
        for (int64_t i = 0; i < 3; i++)
            ck_assert_int_eq(memcmp(mml_gate_param(g, i)->grad, mml_gate_param(dense, i)->grad,
                                    sizeof(float) * (size_t)mml_param_size(mml_gate_param(g, i))),
                             0);
        ck_assert_uint_eq(mml_gate_kink_pattern(g), 0);
        mml_gate_destroy(g);
    }
    mml_gate_destroy(dense);
    mml_ctx_destroy(ctx);
}
END_TEST

typedef struct gate_fx {
    mml_gate *g;
    int32_t *dom;
    int64_t n;
    const double *c; /* n x E loss coefficients */
} gate_fx;

static int gate_loss(void *user, double *loss, uint64_t *pattern)
{
    gate_fx *fx = user;
    const float *w;
    int rc = mml_gate_forward(fx->g, fx->dom, fx->n, &w);
    if (rc < 0)
        return rc;
    int32_t E = mml_gate_n_experts(fx->g);
    double s = 0;
    for (int64_t i = 0; i < fx->n * E; i++)
        s += fx->c[i] * w[i];
    *loss = s;
    *pattern = mml_gate_kink_pattern(fx->g);
    return MML_OK;
}

static int gate_grad(void *user)
{
    gate_fx *fx = user;
    for (int64_t i = 0; i < 3; i++) {
        mml_param *p = mml_gate_param(fx->g, i);
        memset(p->grad, 0, sizeof(float) * (size_t)mml_param_size(p));
    }
    double l;
    uint64_t pat;
    int rc = gate_loss(fx, &l, &pat);
    if (rc < 0)
        return rc;
    int32_t E = mml_gate_n_experts(fx->g);
    float *dw = malloc(sizeof(float) * (size_t)(fx->n * E));
    for (int64_t i = 0; i < fx->n * E; i++)
        dw[i] = (float)fx->c[i];
    rc = mml_gate_backward(fx->g, dw);
    free(dw);
    return rc;
}

START_TEST(gate_top_k_gradcheck)
{
    mml_ctx *ctx = plain_ctx(1, 5);
    enum { GD = 3, GE = 6, N = 8 };
    int32_t dom[N] = {0, 1, 2, 0, 1, 2, 2, 0};
    double c[N * GE];
    mml_rng rng;
    mml__rng_init(&rng, 4, 4);
    for (int i = 0; i < N * GE; i++)
        c[i] = mml__rng_normal(&rng);
    for (int32_t top = 1; top <= GE; top++) {
        mml_gate *g = make_gate(ctx, GD, GE, 4, top);
        randomize_gate(g, 50 + (uint64_t)top, 1.0f);
        gate_fx fx = {g, dom, N, c};
        mml_param *params[3] = {mml_gate_param(g, 0), mml_gate_param(g, 1), mml_gate_param(g, 2)};
        mml_gradcheck_options o;
        mml_gradcheck_options_init(&o);
        o.rtol = 1e-2;
        o.atol = 1e-4;
        mml_gradcheck_report rep;
        int rc = mml_gradcheck(ctx, &o, params, 3, gate_grad, gate_loss, &fx, &rep);
        ck_assert_msg(rc == MML_OK, "top %d: %s", top, mml_ctx_last_error(ctx));
        ck_assert_int_gt(rep.checked, 0);
        mml_gate_destroy(g);
    }
    /* One domain: the bias and W columns of dropped experts get exactly zero gradient. */
    mml_gate *g = make_gate(ctx, 1, GE, 4, 2);
    randomize_gate(g, 77, 1.0f);
    int32_t zero[N] = {0};
    gate_fx fx = {g, zero, N, c};
    ck_assert_int_eq(gate_grad(&fx), MML_OK);
    float table[GE];
    ck_assert_int_eq(mml_gate_table(g, table), MML_OK);
    int nonzero = 0;
    for (int e = 0; e < GE; e++) {
        float gb = mml_gate_param(g, 2)->grad[e];
        if (table[e] == 0.0f) {
            ck_assert_float_eq(gb, 0.0f);
            for (int j = 0; j < 4; j++)
                ck_assert_float_eq(mml_gate_param(g, 1)->grad[j * GE + e], 0.0f);
        } else {
            nonzero += gb != 0.0f;
        }
    }
    ck_assert_int_eq(nonzero, 2);
    mml_gate_destroy(g);
    mml_ctx_destroy(ctx);
}
END_TEST

/* The kink pattern changes exactly when the selected set changes. */
START_TEST(gate_top_k_pattern_follows_selection)
{
    mml_ctx *ctx = plain_ctx(1, 5);
    mml_gate *g = make_gate(ctx, 1, 4, 2, 2);
    float *b = mml_gate_param(g, 2)->value;
    memset(mml_gate_param(g, 1)->value, 0, sizeof(float) * 8);
    b[0] = 3, b[1] = 2, b[2] = 1, b[3] = 0;
    int32_t dom = 0;
    const float *w;
    ck_assert_int_eq(mml_gate_forward(g, &dom, 1, &w), MML_OK);
    uint64_t p01 = mml_gate_kink_pattern(g);
    b[1] = 2.5f; /* same set {0, 1} */
    ck_assert_int_eq(mml_gate_forward(g, &dom, 1, &w), MML_OK);
    ck_assert_uint_eq(mml_gate_kink_pattern(g), p01);
    b[2] = 2.75f; /* now {0, 2} */
    ck_assert_int_eq(mml_gate_forward(g, &dom, 1, &w), MML_OK);
    ck_assert_uint_ne(mml_gate_kink_pattern(g), p01);
    ck_assert_float_eq(w[1], 0.0f);
    mml_gate_destroy(g);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---------------------------------------------------------------- model fixtures */

enum { MF = 3, MK = 4, MD = 3 };
static const int64_t msizes[MF] = {11, 7, MD};
static const int32_t mhidden[2] = {8, 6};

typedef struct model_fx {
    mml_ctx *ctx;
    mml_model *model;
    int64_t n;
    int32_t *ids, *domain;
    float *labels, *weights, *logits, *dlogits;
    mml_batch_view batch;
    int32_t mode;
    int regularize; /* add the L2 penalty (reference in the loss, library in the gradient) */
    double l2_emb, l2_dense;
} model_fx;

static mml_model *model_with(mml_ctx *ctx, const char *backbone, int32_t n_experts, int gate,
                             int32_t top_k, float l2_emb, float l2_dense)
{
    mml_model_options o;
    mml_model_options_init(&o);
    o.backbone = backbone;
    o.n_fields = MF;
    o.field_sizes = msizes;
    o.embed_dim = MK;
    o.n_domains = MD;
    o.n_experts = n_experts;
    o.gate = gate;
    o.gate_top_k = top_k;
    o.alpha = 2;
    o.n_hidden = 2;
    o.hidden = mhidden;
    o.dropout = 0.0f;
    o.l2_embedding = l2_emb;
    o.l2_dense = l2_dense;
    mml_model *m = NULL;
    int rc = mml_model_create(&m, ctx, &o);
    ck_assert_msg(rc == MML_OK, "model_create: %s", mml_ctx_last_error(ctx));
    return m;
}

static void fx_batch(model_fx *fx, int64_t n, uint64_t seed)
{
    mml_rng rng;
    mml__rng_init(&rng, seed, 77);
    fx->n = n;
    fx->ids = malloc(sizeof(int32_t) * (size_t)(n * MF));
    fx->domain = malloc(sizeof(int32_t) * (size_t)n);
    fx->labels = malloc(sizeof(float) * (size_t)n);
    fx->weights = malloc(sizeof(float) * (size_t)n);
    fx->logits = malloc(sizeof(float) * (size_t)n);
    fx->dlogits = malloc(sizeof(float) * (size_t)n);
    for (int64_t r = 0; r < n; r++) {
        fx->domain[r] = (int32_t)mml__rng_below(&rng, MD);
        /* Few distinct ids, so rows repeat. */
        fx->ids[r * MF + 0] = (int32_t)mml__rng_below(&rng, 4);
        fx->ids[r * MF + 1] = (int32_t)mml__rng_below(&rng, (uint64_t)msizes[1]);
        fx->ids[r * MF + 2] = fx->domain[r];
        fx->labels[r] = (float)mml__rng_below(&rng, 2);
        fx->weights[r] = 0.25f + mml__rng_uniform(&rng);
    }
    mml_batch_view_init(&fx->batch, n, MF, fx->ids, 0, NULL, fx->domain, fx->labels);
}

static void fx_free(model_fx *fx)
{
    mml_model_destroy(fx->model);
    mml_ctx_destroy(fx->ctx);
    free(fx->ids);
    free(fx->domain);
    free(fx->labels);
    free(fx->weights);
    free(fx->logits);
    free(fx->dlogits);
}

static void randomize_model(mml_model *m, uint64_t seed, float scale)
{
    mml_rng rng;
    mml__rng_init(&rng, seed, 5);
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        for (int64_t j = 0; j < mml_param_size(p); j++)
            p->value[j] = (mml__rng_uniform(&rng) - 0.5f) * 2.0f * scale;
    }
}

/* The L2 penalty by plain loops: distinct rows of each embedding table used
 * by the batch, and every backbone matrix with more than one row. */
static double ref_penalty(mml_model *m, const mml_batch_view *b, double l2_emb, double l2_dense)
{
    double pen = 0;
    int32_t F = mml_model_n_fields(m);
    for (int32_t f = 0; f < F; f++) {
        mml_param *p = mml_model_param(m, f);
        for (int64_t row = 0; row < p->rows; row++) {
            int used = 0;
            for (int64_t r = 0; r < b->n_rows && !used; r++)
                used = b->ids[r * b->ids_row_stride + f] == row;
            if (!used)
                continue;
            for (int64_t j = 0; j < p->cols; j++)
                pen += l2_emb * (double)p->value[row * p->cols + j] * p->value[row * p->cols + j];
        }
    }
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        if (p->group != MML_GROUP_BACKBONE || p->rows < 2)
            continue;
        for (int64_t j = 0; j < mml_param_size(p); j++)
            pen += l2_dense * (double)p->value[j] * p->value[j];
    }
    return pen;
}

static int mfx_loss(void *user, double *loss, uint64_t *pattern)
{
    model_fx *fx = user;
    int rc = mml_model_forward(fx->model, &fx->batch, fx->mode, 0, 1, fx->logits);
    if (rc < 0)
        return rc;
    *pattern = mml_model_kink_pattern(fx->model);
    rc = mml_bce_with_logits(fx->ctx, fx->logits, fx->labels, fx->batch.weights, fx->n, loss, NULL);
    if (rc < 0)
        return rc;
    if (fx->regularize)
        *loss += ref_penalty(fx->model, &fx->batch, fx->l2_emb, fx->l2_dense);
    return MML_OK;
}

static int mfx_grad(void *user)
{
    model_fx *fx = user;
    mml_model *m = fx->model;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        memset(p->grad, 0, sizeof(float) * (size_t)mml_param_size(p));
    }
    int rc = mml_model_forward(m, &fx->batch, fx->mode, 0, 1, fx->logits);
    if (rc < 0)
        return rc;
    double loss;
    rc = mml_bce_with_logits(fx->ctx, fx->logits, fx->labels, fx->batch.weights, fx->n, &loss,
                             fx->dlogits);
    if (rc < 0)
        return rc;
    rc = mml_model_backward(m, fx->dlogits);
    if (rc < 0 || !fx->regularize)
        return rc;
    double pen;
    return mml_model_regularization(m, &pen);
}

static int64_t used_params(mml_model *m, int32_t mode, mml_param **out)
{
    int64_t n = 0;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        if (p->group == MML_GROUP_GATE && mode != MML_MIX_GATED)
            continue;
        if (p->group == MML_GROUP_EXPERT && mode == MML_MIX_NONE)
            continue;
        out[n++] = p;
    }
    return n;
}

static void model_gradcheck(model_fx *fx)
{
    mml_param *params[256];
    int64_t np = used_params(fx->model, fx->mode, params);
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.step = 1e-3;
    o.rtol = 1e-2;
    o.atol = 2e-4;
    o.seed = 17;
    mml_gradcheck_report rep;
    int rc = mml_gradcheck(fx->ctx, &o, params, np, mfx_grad, mfx_loss, fx, &rep);
    ck_assert_msg(rc == MML_OK, "%s (checked %lld, skipped %lld, failed %lld)",
                  mml_ctx_last_error(fx->ctx), (long long)rep.checked,
                  (long long)rep.skipped_kinks, (long long)rep.failed);
    ck_assert_int_gt(rep.checked, 0);
    ck_assert_int_lt(rep.skipped_kinks, rep.checked / 2 + 1);
}

/* Through the model API: a gated MoE with top-2 of 6 experts. */
START_TEST(gate_top_k_model_gradcheck)
{
    model_fx fx = {0};
    fx.ctx = plain_ctx(1, 3);
    fx.model = model_with(fx.ctx, "mlp", 2 * MD, 1, 2, 0, 0);
    ck_assert_int_eq(mml_gate_top_k(mml_model_gate(fx.model)), 2);
    fx.mode = MML_MIX_GATED;
    randomize_model(fx.model, 11, 0.5f);
    fx_batch(&fx, 7, 21);
    model_gradcheck(&fx);
    /* The model's pattern includes the gate's selection. */
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_GATED, 0, 1, fx.logits), MML_OK);
    uint64_t gated = mml_model_kink_pattern(fx.model);
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_DOMAIN, 0, 1, fx.logits), MML_OK);
    ck_assert_uint_ne(mml_model_kink_pattern(fx.model), gated);
    fx_free(&fx);
}
END_TEST

START_TEST(gate_top_k_bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_gate_options o;
    mml_gate_options_init(&o);
    ck_assert_int_eq(o.top_k, 0);
    o.n_domains = 2;
    o.n_experts = 3;
    o.top_k = -1;
    mml_gate *g = (mml_gate *)&o;
    ck_assert_int_eq(mml_gate_create(&g, ctx, &o), MML_EINVAL);
    ck_assert_ptr_null(g);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "top_k"));
    ck_assert_uint_eq(mml_gate_kink_pattern(NULL), 0);
    ck_assert_int_eq(mml_gate_top_k(NULL), 0);
    /* Before any forward pass: no pattern. */
    o.top_k = 1;
    ck_assert_int_eq(mml_gate_create(&g, ctx, &o), MML_OK);
    ck_assert_uint_eq(mml_gate_kink_pattern(g), 0);
    mml_gate_destroy(g);
    mml_model_options mo;
    mml_model_options_init(&mo);
    ck_assert_int_eq(mo.gate_top_k, 0);
    mo.n_fields = MF;
    mo.field_sizes = msizes;
    mo.n_domains = MD;
    mo.n_experts = MD;
    mo.gate = 1;
    mo.gate_top_k = -2;
    mml_model *m = NULL;
    ck_assert_int_eq(mml_model_create(&m, ctx, &mo), MML_EINVAL);
    ck_assert_ptr_null(m);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *extras_suite(void)
{
    Suite *s = suite_create("extras");
    TCase *tc = tcase_create("gate");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, gate_top_k_values);
    tcase_add_test(tc, gate_top_k_ties);
    tcase_add_test(tc, gate_top_k_at_least_E_is_dense);
    tcase_add_test(tc, gate_top_k_gradcheck);
    tcase_add_test(tc, gate_top_k_pattern_follows_selection);
    tcase_add_test(tc, gate_top_k_model_gradcheck);
    tcase_add_test(tc, gate_top_k_bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(extras_suite()); }
