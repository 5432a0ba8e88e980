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
    ck_assert_int_le(rep.skipped_kinks, rep.checked / 20 + 2);
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


/* ---------------------------------------------------------------- row weights */

START_TEST(batch_view_weights_default_null)
{
    mml_batch_view v;
    memset(&v, 0xA5, sizeof v);
    int32_t ids[2] = {1, 2}, dom[2] = {0, 1};
    float lab[2] = {0, 1};
    mml_batch_view_init(&v, 2, 1, ids, 0, NULL, dom, lab);
    ck_assert_ptr_null(v.weights);
    ck_assert_ptr_eq(v.labels, lab);
}
END_TEST

START_TEST(weighted_loss_through_the_batch_view)
{
    model_fx fx = {0};
    fx.ctx = plain_ctx(1, 3);
    fx.model = model_with(fx.ctx, "mlp", 0, 0, 0, 0, 0);
    randomize_model(fx.model, 4, 0.5f);
    fx_batch(&fx, 9, 5);
    fx.batch.weights = fx.weights;
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits), MML_OK);
    double loss;
    ck_assert_int_eq(mml_bce_with_logits(fx.ctx, fx.logits, fx.labels, fx.batch.weights, fx.n, &loss,
                                         fx.dlogits),
                     MML_OK);
    double num = 0, den = 0;
    for (int64_t r = 0; r < fx.n; r++) {
        double z = fx.logits[r], y = fx.labels[r];
        double l = -(y * log(1 / (1 + exp(-z))) + (1 - y) * log(1 - 1 / (1 + exp(-z))));
        num += fx.weights[r] * l;
        den += fx.weights[r];
    }
    ck_assert_double_eq_tol(loss, num / den, 1e-6);
    for (int64_t r = 0; r < fx.n; r++) {
        double z = fx.logits[r], y = fx.labels[r];
        double d = fx.weights[r] * (1 / (1 + exp(-z)) - y) / den;
        ck_assert_double_eq_tol(fx.dlogits[r], d, 1e-6);
    }
    /* Gradients of the weighted loss through the whole model. */
    fx.mode = MML_MIX_NONE;
    model_gradcheck(&fx);
    /* Zero weight = the row does not count. */
    fx.weights[3] = 0.0f;
    double l1;
    ck_assert_int_eq(mml_bce_with_logits(fx.ctx, fx.logits, fx.labels, fx.weights, fx.n, &l1, NULL),
                     MML_OK);
    fx.logits[3] += 5.0f;
    double l2;
    ck_assert_int_eq(mml_bce_with_logits(fx.ctx, fx.logits, fx.labels, fx.weights, fx.n, &l2, NULL),
                     MML_OK);
    ck_assert_double_eq(l1, l2);
    /* Negative, NaN, infinite weights are refused, naming the row. */
    const float bad[3] = {-1.0f, NAN, INFINITY};
    for (int i = 0; i < 3; i++) {
        fx.weights[4] = bad[i];
        ck_assert_int_eq(mml_bce_with_logits(fx.ctx, fx.logits, fx.labels, fx.batch.weights, fx.n,
                                             &loss, fx.dlogits),
                         MML_EINVAL);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(fx.ctx), "row 4"));
    }
    fx_free(&fx);
}
END_TEST

/* ---------------------------------------------------------------- L2 */

START_TEST(l2_values_and_gradients)
{
    model_fx fx = {0};
    fx.ctx = plain_ctx(1, 3);
    const float le = 0.3f, ld = 0.2f;
    fx.model = model_with(fx.ctx, "wdl", MD, 0, 0, le, ld);
    randomize_model(fx.model, 8, 0.5f);
    fx_batch(&fx, 16, 6);
    mml_model *m = fx.model;
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_DOMAIN, 0, 1, fx.logits), MML_OK);
    int64_t np = mml_model_n_params(m);
    for (int64_t i = 0; i < np; i++)
        memset(mml_model_param(m, i)->grad, 0, sizeof(float) * (size_t)mml_param_size(mml_model_param(m, i)));
    double pen = -1;
    ck_assert_int_eq(mml_model_regularization(m, &pen), MML_OK);
    double ref = ref_penalty(m, &fx.batch, le, ld);
    ck_assert_double_eq_tol(pen, ref, 1e-9 * ref);
    ck_assert_double_gt(pen, 0);
    int n_matrices = 0;
    for (int64_t i = 0; i < np; i++) {
        mml_param *p = mml_model_param(m, i);
        if (i < MF) { /* embedding tables: used rows once, others 0 */
            for (int64_t row = 0; row < p->rows; row++) {
                int used = 0;
                for (int64_t r = 0; r < fx.n; r++)
                    used |= fx.ids[r * MF + i] == row;
                for (int64_t j = 0; j < p->cols; j++) {
                    float v = p->value[row * p->cols + j];
                    ck_assert_float_eq(p->grad[row * p->cols + j], used ? 2.0f * le * v : 0.0f);
                }
            }
        } else if (p->group == MML_GROUP_BACKBONE && p->rows > 1) {
            n_matrices++;
            for (int64_t j = 0; j < mml_param_size(p); j++)
                ck_assert_float_eq(p->grad[j], 2.0f * ld * p->value[j]);
        } else {
            for (int64_t j = 0; j < mml_param_size(p); j++)
                ck_assert_msg(p->grad[j] == 0.0f, "%s got a penalty gradient", p->name);
        }
    }
    ck_assert_int_ge(n_matrices, 3); /* two tower layers and the head, at least */
    /* Accumulates (+=): a second call doubles the gradient. */
    mml_param *e0 = mml_model_param(m, 0);
    int32_t row = fx.ids[0];
    float g1 = e0->grad[row * MK];
    ck_assert_int_eq(mml_model_regularization(m, NULL), MML_OK);
    ck_assert_float_eq(e0->grad[row * MK], 2.0f * g1);
    /* A frozen table still counts in the value but receives nothing. */
    e0->frozen = 1;
    memset(e0->grad, 0, sizeof(float) * (size_t)mml_param_size(e0));
    ck_assert_int_eq(mml_model_regularization(m, &pen), MML_OK);
    ck_assert_double_eq_tol(pen, ref, 1e-9 * ref);
    for (int64_t j = 0; j < mml_param_size(e0); j++)
        ck_assert_float_eq(e0->grad[j], 0.0f);
    e0->frozen = 0;
    fx_free(&fx);
}
END_TEST

/* A row used by many rows of the batch counts once. */
START_TEST(l2_distinct_rows_once)
{
    mml_ctx *ctx = plain_ctx(1, 3);
    mml_model *m = model_with(ctx, "mlp", 0, 0, 0, 0.5f, 0.0f);
    randomize_model(m, 9, 0.5f);
    int32_t ids[4 * MF] = {2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1};
    int32_t dom[4] = {1, 1, 1, 1};
    float lab[4] = {0, 1, 0, 1}, logits[4];
    mml_batch_view b;
    mml_batch_view_init(&b, 4, MF, ids, 0, NULL, dom, lab);
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, logits), MML_OK);
    double pen4, pen1, expect = 0;
    ck_assert_int_eq(mml_model_regularization(m, &pen4), MML_OK);
    b.n_rows = 1;
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, logits), MML_OK);
    ck_assert_int_eq(mml_model_regularization(m, &pen1), MML_OK);
    for (int f = 0; f < MF; f++)
        for (int j = 0; j < MK; j++) {
            double v = mml_model_param(m, f)->value[ids[f] * MK + j];
            expect += 0.5 * v * v;
        }
    ck_assert_double_eq(pen4, pen1);
    ck_assert_double_eq_tol(pen1, expect, 1e-12);
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(l2_gradcheck)
{
    static const char *const backbones[2] = {"mlp", "deepfm"};
    for (int i = 0; i < 2; i++) {
        model_fx fx = {0};
        fx.ctx = plain_ctx(1, 3);
        fx.l2_emb = 0.25f;
        fx.l2_dense = 0.125f;
        fx.regularize = 1;
        fx.model = model_with(fx.ctx, backbones[i], 2 * MD, 1, 2, (float)fx.l2_emb, (float)fx.l2_dense);
        fx.mode = MML_MIX_GATED;
        randomize_model(fx.model, 12, 0.5f);
        fx_batch(&fx, 7, 23);
        fx.batch.weights = fx.weights;
        model_gradcheck(&fx);
        fx_free(&fx);
    }
}
END_TEST

START_TEST(l2_off_and_bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 3);
    double pen = 5;
    ck_assert_int_eq(mml_model_regularization(NULL, &pen), MML_EINVAL);
    ck_assert_double_eq(pen, 0);
    mml_model *m = model_with(ctx, "mlp", 0, 0, 0, 0.0f, 0.0f);
    ck_assert_int_eq(mml_model_regularization(m, &pen), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "forward"));
    int32_t ids[MF] = {1, 2, 0}, dom[1] = {0};
    float lab[1] = {1}, logit;
    mml_batch_view b;
    mml_batch_view_init(&b, 1, MF, ids, 0, NULL, dom, lab);
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, &logit), MML_OK);
    pen = 5;
    ck_assert_int_eq(mml_model_regularization(m, &pen), MML_OK);
    ck_assert_double_eq(pen, 0);
    for (int64_t i = 0; i < mml_model_n_params(m); i++)
        for (int64_t j = 0; j < mml_param_size(mml_model_param(m, i)); j++)
            ck_assert_float_eq(mml_model_param(m, i)->grad[j], 0.0f);
    /* A failed forward leaves no state behind. */
    ids[0] = 99;
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, &logit), MML_ERANGE);
    ck_assert_int_eq(mml_model_regularization(m, &pen), MML_ESTATE);
    mml_model_destroy(m);
    mml_model_options o;
    mml_model_options_init(&o);
    ck_assert_float_eq(o.l2_embedding, 0.0f);
    ck_assert_float_eq(o.l2_dense, 0.0f);
    o.n_fields = MF;
    o.field_sizes = msizes;
    o.n_domains = MD;
    const float bad[3] = {-0.1f, NAN, INFINITY};
    for (int i = 0; i < 6; i++) {
        o.l2_embedding = i < 3 ? bad[i] : 0.0f;
        o.l2_dense = i < 3 ? 0.0f : bad[i - 3];
        m = (mml_model *)&o;
        ck_assert_int_eq(mml_model_create(&m, ctx, &o), MML_EINVAL);
        ck_assert_ptr_null(m);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "l2"));
    }
    mml_ctx_destroy(ctx);
}
END_TEST

/* The scratch of the penalty comes from the allocator: a failure is reported and leaks nothing. */
START_TEST(l2_allocation_failure)
{
    for (long n = 1; n < 400; n++) {
        counting_allocator al;
        mml_ctx *ctx = counting_ctx(&al, 0, 1, 1);
        ck_assert_ptr_nonnull(ctx);
        mml_model *m = NULL;
        mml_model_options o;
        mml_model_options_init(&o);
        o.n_fields = MF;
        o.field_sizes = msizes;
        o.n_domains = MD;
        o.n_hidden = 2;
        o.hidden = mhidden;
        o.l2_embedding = 0.1f;
        o.l2_dense = 0.1f;
        al.fail_at = al.calls + n;
        int rc = mml_model_create(&m, ctx, &o);
        int32_t ids[MF] = {1, 2, 0}, dom[1] = {0};
        float lab[1] = {1}, logit;
        mml_batch_view b;
        mml_batch_view_init(&b, 1, MF, ids, 0, NULL, dom, lab);
        double pen = 0;
        if (rc == MML_OK)
            rc = mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, &logit);
        if (rc == MML_OK)
            rc = mml_model_regularization(m, &pen);
        int done = rc == MML_OK;
        if (!done)
            ck_assert_int_eq(rc, MML_ENOMEM);
        else
            ck_assert_double_gt(pen, 0);
        al.fail_at = 0;
        mml_model_destroy(m);
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(al.live, 0);
        if (done)
            break;
    }
}
END_TEST


/* ---------------------------------------------------------------- sparse optimisers */

typedef struct oparam {
    mml_param p;
    float value[64], grad[64];
} oparam;

static void oparam_init(oparam *t, const char *name, int64_t rows, int64_t cols, int32_t group)
{
    memset(t, 0, sizeof *t);
    t->p.name = name;
    t->p.value = t->value;
    t->p.grad = t->grad;
    t->p.rows = rows;
    t->p.cols = cols;
    t->p.group = group;
    t->p.expert = -1;
    for (int i = 0; i < 64; i++)
        t->value[i] = 0.1f * (float)(i % 7) - 0.3f;
}

static mml_optimizer *make_optimizer(mml_ctx *ctx, int32_t kind, mml_param **ps, int64_t n)
{
    mml_optimizer_options o;
    mml_optimizer_options_init(&o);
    o.kind = kind;
    o.lr = 0.01f;
    mml_optimizer *opt = NULL;
    int rc = mml_optimizer_create(&opt, ctx, &o, ps, n);
    ck_assert_msg(rc == MML_OK, "optimizer_create: %s", mml_ctx_last_error(ctx));
    return opt;
}

/* Adam on one element in double, with the given step count. */
static void ref_adam(double *w, double *m, double *v, double g, int64_t t)
{
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    double mh = *m / (1 - pow(b1, (double)t)), vh = *v / (1 - pow(b2, (double)t));
    *w -= lr * mh / (sqrt(vh) + eps);
}

/* Rows touched per step (bit r = row r gets a gradient); rows untouched for several steps. */
static const unsigned touched[8] = {0x5, 0x1, 0x1, 0x0, 0x2, 0x9, 0x1, 0xF};

START_TEST(lazy_adam_matches_hand_reference)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    enum { R = 4, C = 3 };
    oparam emb, dense;
    oparam_init(&emb, "emb", R, C, MML_GROUP_EMBEDDING);
    oparam_init(&dense, "dense", 1, 2, MML_GROUP_BACKBONE);
    mml_param *ps[2] = {&emb.p, &dense.p};
    mml_optimizer *opt = make_optimizer(ctx, MML_OPT_LAZY_ADAM, ps, 2);
    double w[R * C], m[R * C] = {0}, v[R * C] = {0}, dw[2], dm[2] = {0}, dv[2] = {0};
    int64_t rt[R] = {0};
    for (int i = 0; i < R * C; i++)
        w[i] = emb.value[i];
    dw[0] = dense.value[0];
    dw[1] = dense.value[1];
    for (int step = 0; step < 8; step++) {
        float before[R * C], mbefore[R * C];
        const float *mo, *vo;
        ck_assert_int_eq(mml_optimizer_state(opt, 0, &mo, &vo), MML_OK);
        memcpy(before, emb.value, sizeof before);
        memcpy(mbefore, mo, sizeof mbefore);
        memset(emb.grad, 0, sizeof emb.grad);
        for (int r = 0; r < R; r++)
            if (touched[step] >> r & 1)
                for (int j = 0; j < C; j++) /* one zero element inside a used row: still updated */
                    emb.grad[r * C + j] = j == 1 && r == 0 ? 0.0f : 0.1f * (float)(r + 1) - 0.05f * (float)(j * step);
        dense.grad[0] = step % 3 == 0 ? 0.0f : 0.2f; /* zero: dense Adam moves it anyway */
        dense.grad[1] = -0.1f;
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
        for (int r = 0; r < R; r++) {
            int used = touched[step] >> r & 1;
            if (used)
                rt[r]++;
            ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, r), rt[r]);
            for (int j = 0; j < C; j++) {
                int i = r * C + j;
                if (used) {
                    ref_adam(&w[i], &m[i], &v[i], emb.grad[i], rt[r]);
                } else { /* bit-identical: value and moments */
                    ck_assert_float_eq(emb.value[i], before[i]);
                    ck_assert_float_eq(mo[i], mbefore[i]);
                }
                ck_assert_msg(fabs(emb.value[i] - w[i]) < 1e-6, "step %d row %d col %d: %g vs %g", step,
                              r, j, (double)emb.value[i], w[i]);
            }
        }
        for (int j = 0; j < 2; j++) {
            ref_adam(&dw[j], &dm[j], &dv[j], dense.grad[j], step + 1);
            ck_assert_msg(fabs(dense.value[j] - dw[j]) < 1e-6, "dense %d step %d", j, step);
        }
        ck_assert_int_eq(mml_optimizer_steps(opt, 0), step + 1);
        ck_assert_int_eq(mml_optimizer_steps(opt, 1), step + 1);
    }
    /* Row 3 was first used at step 6: its first update was a full bias-corrected
     * step of size ~lr, not dense Adam's damped one. Hand check of that case: */
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, 3), 2);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 1, 0), -1); /* dense parameter: no row counts */
    /* Reset: counts and moments back to zero. */
    ck_assert_int_eq(mml_optimizer_reset(opt), MML_OK);
    for (int r = 0; r < R; r++)
        ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, r), 0);
    mml_optimizer_destroy(opt);
    mml_ctx_destroy(ctx);
}
END_TEST

/* The first update of a row after k untouched steps moves it by ~lr per element. */
START_TEST(lazy_adam_first_touch_is_a_full_step)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    oparam emb;
    oparam_init(&emb, "emb", 2, 2, MML_GROUP_EMBEDDING);
    mml_param *ps[1] = {&emb.p};
    mml_optimizer *lazy = make_optimizer(ctx, MML_OPT_LAZY_ADAM, ps, 1);
    for (int step = 0; step < 5; step++) {
        memset(emb.grad, 0, sizeof emb.grad);
        emb.grad[0] = 1.0f; /* row 0 only */
        ck_assert_int_eq(mml_optimizer_step(lazy), MML_OK);
    }
    float w2 = emb.value[2], w3 = emb.value[3];
    ck_assert_float_eq(w2, 0.1f * 2 - 0.3f); /* untouched for 5 steps */
    emb.grad[0] = 0.0f;
    emb.grad[2] = 0.5f;
    emb.grad[3] = -2.0f;
    ck_assert_int_eq(mml_optimizer_step(lazy), MML_OK);
    /* t_r = 1: m_hat = g, v_hat = g^2, step = lr g / (|g| + eps) = +-lr. */
    ck_assert_float_eq_tol(emb.value[2], w2 - 0.01f, 1e-7f);
    ck_assert_float_eq_tol(emb.value[3], w3 + 0.01f, 1e-7f);
    ck_assert_int_eq(mml_optimizer_row_steps(lazy, 0, 1), 1);
    ck_assert_int_eq(mml_optimizer_row_steps(lazy, 0, 0), 5);
    /* Frozen: nothing changes, counts included. */
    emb.p.frozen = 1;
    float snap[4];
    memcpy(snap, emb.value, sizeof snap);
    ck_assert_int_eq(mml_optimizer_step(lazy), MML_OK);
    ck_assert_int_eq(memcmp(snap, emb.value, sizeof snap), 0);
    ck_assert_int_eq(mml_optimizer_row_steps(lazy, 0, 1), 1);
    mml_optimizer_destroy(lazy);
    mml_ctx_destroy(ctx);
}
END_TEST

/* Every row touched every step: lazy Adam is dense Adam, bit for bit. */
START_TEST(lazy_adam_all_rows_equals_dense)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    oparam a, b;
    oparam_init(&a, "a", 5, 7, MML_GROUP_EMBEDDING);
    oparam_init(&b, "b", 5, 7, MML_GROUP_EMBEDDING);
    mml_param *pa[1] = {&a.p}, *pb[1] = {&b.p};
    mml_optimizer *lazy = make_optimizer(ctx, MML_OPT_LAZY_ADAM, pa, 1);
    mml_optimizer *dense = make_optimizer(ctx, MML_OPT_ADAM, pb, 1);
    for (int step = 0; step < 6; step++) {
        for (int i = 0; i < 35; i++)
            a.grad[i] = b.grad[i] = 0.3f * sinf((float)(i + 7 * step)) + 0.01f;
        ck_assert_int_eq(mml_optimizer_step(lazy), MML_OK);
        ck_assert_int_eq(mml_optimizer_step(dense), MML_OK);
        ck_assert_int_eq(memcmp(a.value, b.value, sizeof(float) * 35), 0);
    }
    mml_optimizer_destroy(lazy);
    mml_optimizer_destroy(dense);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(adagrad_matches_hand_values)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    oparam p;
    oparam_init(&p, "p", 2, 2, MML_GROUP_BACKBONE);
    mml_param *ps[1] = {&p.p};
    mml_optimizer *opt = make_optimizer(ctx, MML_OPT_ADAGRAD, ps, 1);
    const float *m, *G;
    ck_assert_int_eq(mml_optimizer_state(opt, 0, &m, &G), MML_OK);
    ck_assert_ptr_null(m);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(G[i], 0.1f);
    double w[4], acc[4] = {0.1, 0.1, 0.1, 0.1};
    for (int i = 0; i < 4; i++)
        w[i] = p.value[i];
    /* Element 3 is never touched; element 2 only at step 3. */
    const float g[4][4] = {{0.5f, -1.0f, 0, 0}, {0.5f, 0, 0, 0}, {0.25f, 2.0f, 0, 0}, {-0.5f, 0.1f, 3.0f, 0}};
    for (int step = 0; step < 4; step++) {
        memcpy(p.grad, g[step], sizeof g[step]);
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
        for (int i = 0; i < 4; i++) {
            acc[i] += (double)g[step][i] * g[step][i];
            w[i] -= 0.01 * g[step][i] / (sqrt(acc[i]) + 1e-8);
            ck_assert_msg(fabs(p.value[i] - w[i]) < 1e-6, "step %d elem %d: %g vs %g", step, i,
                          (double)p.value[i], w[i]);
            ck_assert_double_eq_tol(G[i], acc[i], 1e-6);
        }
    }
    /* By hand, element 0 after step 1: G = 0.1 + 0.25 = 0.35, w = -0.3 - 0.01 * 0.5 / sqrt(0.35). */
    ck_assert_float_eq(p.value[3], 0.1f * 3 - 0.3f);
    ck_assert_int_eq(mml_optimizer_reset(opt), MML_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(G[i], 0.1f);
    ck_assert_int_eq(mml_optimizer_steps(opt, 0), 0);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, 0), -1);
    mml_optimizer_destroy(opt);
    /* One hand-computed step with adagrad_init 0: G = g^2, w -= lr g / (|g| + eps). */
    mml_optimizer_options o;
    mml_optimizer_options_init(&o);
    ck_assert_float_eq(o.adagrad_init, 0.1f);
    o.kind = MML_OPT_ADAGRAD;
    o.adagrad_init = 0.0f;
    o.lr = 0.5f;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 1), MML_OK);
    float w0 = p.value[0];
    p.grad[0] = 4.0f;
    p.grad[1] = p.grad[2] = p.grad[3] = 0.0f;
    float w1 = p.value[1];
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    ck_assert_float_eq_tol(p.value[0], w0 - 0.5f, 1e-6f);
    ck_assert_float_eq(p.value[1], w1); /* G = 0 and g = 0: 0 / eps, no NaN */
    mml_optimizer_destroy(opt);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(sparse_optimizer_bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    oparam p;
    oparam_init(&p, "p", 2, 2, MML_GROUP_EMBEDDING);
    mml_param *ps[1] = {&p.p};
    mml_optimizer_options o;
    const float bad[3] = {-0.5f, NAN, INFINITY};
    for (int32_t kind = MML_OPT_SGD; kind <= MML_OPT_ADAGRAD; kind++)
        for (int i = 0; i < 3; i++) {
            mml_optimizer_options_init(&o);
            o.kind = kind;
            o.adagrad_init = bad[i];
            mml_optimizer *opt = (mml_optimizer *)&o;
            ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 1), MML_EINVAL);
            ck_assert_ptr_null(opt);
            ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "adagrad_init"));
        }
    mml_optimizer_options_init(&o);
    o.kind = MML_OPT_ADAGRAD + 1;
    mml_optimizer *opt = NULL;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 1), MML_EINVAL);
    ck_assert_int_eq(mml_optimizer_row_steps(NULL, 0, 0), -1);
    opt = make_optimizer(ctx, MML_OPT_LAZY_ADAM, ps, 1);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, 0), 0);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, 2), -1);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, -1), -1);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 1, 0), -1);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, -1, 0), -1);
    /* A NaN gradient is refused before anything moves, rows included. */
    p.grad[3] = NAN;
    ck_assert_int_eq(mml_optimizer_step(opt), MML_ENONFINITE);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, 0), 0);
    mml_optimizer_destroy(opt);
    opt = make_optimizer(ctx, MML_OPT_ADAM, ps, 1);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, 0), -1);
    mml_optimizer_destroy(opt);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(sparse_optimizer_allocation_failures)
{
    oparam a, b;
    oparam_init(&a, "a", 4, 3, MML_GROUP_EMBEDDING);
    oparam_init(&b, "b", 2, 2, MML_GROUP_BACKBONE);
    mml_param *ps[2] = {&a.p, &b.p};
    for (int32_t kind = MML_OPT_LAZY_ADAM; kind <= MML_OPT_ADAGRAD; kind++) {
        mml_optimizer_options o;
        mml_optimizer_options_init(&o);
        o.kind = kind;
        counting_allocator al;
        mml_ctx *ctx = counting_ctx(&al, 0, 1, 1);
        ck_assert_ptr_nonnull(ctx);
        long base_calls = al.calls, base_live = al.live;
        mml_optimizer *opt = NULL;
        ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_OK);
        long total = al.calls - base_calls;
        ck_assert_int_eq(total, kind == MML_OPT_LAZY_ADAM ? 4 : 3);
        mml_optimizer_destroy(opt);
        ck_assert_int_eq(al.live, base_live);
        for (long n = 1; n <= total; n++) {
            al.fail_at = al.calls + n;
            opt = (mml_optimizer *)1;
            ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_ENOMEM);
            ck_assert_ptr_null(opt);
            ck_assert_int_eq(al.live, base_live);
        }
        al.fail_at = 0;
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(al.live, 0);
        ck_assert_int_eq(al.live_bytes, 0);
    }
}
END_TEST


/* ---------------------------------------------------------------- hashing and OOV */

/* Pinned values: a change here breaks every model trained with hashed ids. */
START_TEST(hash_values_are_pinned)
{
    /* SplitMix64's published first two outputs for seed 0 are 0xE220A8397B1DCDAF
     * and 0x6E789E6AA1B965F4; with n_buckets = 2^32 - 1 the bucket is their
     * high half minus one (h * (2^32 - 1) >> 32 = h - 1 for h > 0). */
    ck_assert_uint_eq(mml_hash_id(0, 0, 0xFFFFFFFFu), 0xE220A839u - 1);
    ck_assert_uint_eq(mml_hash_id(0x9E3779B97F4A7C15ull, 0, 0xFFFFFFFFu), 0x6E789E6Au - 1);
    ck_assert_uint_eq(mml_hash_id(1, 0, 1000), 566);
    ck_assert_uint_eq(mml_hash_id(12345, 42, 1000003), 708655);
    ck_assert_uint_eq(mml_hash_id(UINT64_MAX, 7, 100), 53);
    ck_assert_uint_eq(mml_hash_id(987654321, 0x5EED, 1u << 20), 790216);
    ck_assert_uint_eq(mml_hash_id(1, 1, 10), 8);
    ck_assert_uint_eq(mml_hash_id(123, 4, 0), 0);
    ck_assert_uint_eq(mml_hash_id(123, 4, 1), 0);
    /* The array form agrees with the scalar one. */
    uint64_t raw[5] = {0, 1, 12345, UINT64_MAX, 987654321};
    int32_t out[5];
    ck_assert_int_eq(mml_hash_ids(raw, 5, 42, 1000003, out), MML_OK);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(out[i], (int32_t)mml_hash_id(raw[i], 42, 1000003));
    ck_assert_int_eq(out[2], 708655);
}
END_TEST

START_TEST(hash_distribution_and_collisions)
{
    enum { B = 100, N = 100000 };
    static int32_t out[N];
    static uint64_t raw[N];
    for (int i = 0; i < N; i++)
        raw[i] = (uint64_t)i; /* consecutive ids: the worst case for a weak hash */
    for (uint64_t seed = 0; seed < 3; seed++) {
        ck_assert_int_eq(mml_hash_ids(raw, N, seed, B, out), MML_OK);
        long count[B] = {0};
        for (int i = 0; i < N; i++) {
            ck_assert(out[i] >= 0 && out[i] < B);
            count[out[i]]++;
        }
        double chi2 = 0, expect = (double)N / B;
        for (int b = 0; b < B; b++)
            chi2 += (count[b] - expect) * (count[b] - expect) / expect;
        /* 99 degrees of freedom: mean 99, sd 14; 170 is p < 1e-5. */
        ck_assert_msg(chi2 < 170, "seed %llu: chi2 %g", (unsigned long long)seed, chi2);
    }
    /* Different seeds give different assignments. */
    int same = 0;
    for (int i = 0; i < 1000; i++)
        same += mml_hash_id((uint64_t)i, 1, B) == mml_hash_id((uint64_t)i, 2, B);
    ck_assert_int_lt(same, 30); /* about 10 expected */
    /* Collisions as documented: 2000 ids in 2^20 buckets, expected pairs ~1.9. */
    enum { M = 2000 };
    static uint32_t h[M];
    int pairs = 0;
    for (int i = 0; i < M; i++) {
        h[i] = mml_hash_id((uint64_t)i * 7919u, 99, 1u << 20);
        for (int j = 0; j < i; j++)
            pairs += h[i] == h[j];
    }
    ck_assert_int_le(pairs, 12);
}
END_TEST

START_TEST(hash_bad_arguments)
{
    uint64_t raw[2] = {1, 2};
    int32_t out[2] = {-7, -7};
    ck_assert_int_eq(mml_hash_ids(raw, -1, 0, 10, out), MML_ESHAPE);
    ck_assert_int_eq(mml_hash_ids(NULL, 2, 0, 10, out), MML_EINVAL);
    ck_assert_int_eq(mml_hash_ids(raw, 2, 0, 10, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_hash_ids(raw, 2, 0, 0, out), MML_EINVAL);
    ck_assert_int_eq(mml_hash_ids(raw, 2, 0, (uint32_t)INT32_MAX + 1u, out), MML_EINVAL);
    ck_assert_int_eq(out[0], -7); /* nothing written */
    ck_assert_int_eq(mml_hash_ids(NULL, 0, 0, 10, NULL), MML_OK);
    ck_assert_int_eq(mml_hash_ids(raw, 2, 0, (uint32_t)INT32_MAX, out), MML_OK);
    ck_assert_int_ge(out[0], 0);
}
END_TEST

static mml_embedding *make_emb(mml_ctx *ctx, int64_t rows, int32_t policy)
{
    mml_embedding_options o;
    mml_embedding_options_init(&o);
    o.n_rows = rows;
    o.dim = 3;
    o.oov_policy = policy;
    o.name = "items";
    mml_embedding *e = NULL;
    int rc = mml_embedding_create(&e, ctx, &o);
    ck_assert_msg(rc == MML_OK, "%s", mml_ctx_last_error(ctx));
    return e;
}

START_TEST(oov_reserved_row)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_embedding *e = make_emb(ctx, 5, MML_OOV_RESERVED_ROW);
    mml_param *p = mml_embedding_param(e);
    int32_t ids[7] = {0, 3, 4, -1, 5, INT32_MAX, INT32_MIN};
    int32_t rows[7] = {0, 3, 4, 4, 4, 4, 4};
    float out[7 * 3];
    ck_assert_int_eq(mml_embedding_forward(e, ids, 1, 7, out, 3), MML_OK);
    for (int r = 0; r < 7; r++)
        for (int j = 0; j < 3; j++)
            ck_assert_float_eq(out[r * 3 + j], p->value[rows[r] * 3 + j]);
    float dout[7 * 3];
    for (int i = 0; i < 21; i++)
        dout[i] = 1.0f;
    ck_assert_int_eq(mml_embedding_backward(e, ids, 1, 7, dout, 3), MML_OK);
    float expect[5] = {1, 0, 0, 1, 5};
    for (int r = 0; r < 5; r++)
        for (int j = 0; j < 3; j++)
            ck_assert_float_eq(p->grad[r * 3 + j], expect[r]);
    mml_embedding_destroy(e);
    /* The default still refuses. */
    e = make_emb(ctx, 5, MML_OOV_ERROR);
    ck_assert_int_eq(mml_embedding_forward(e, ids, 1, 7, out, 3), MML_ERANGE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "items"));
    ck_assert_int_eq(mml_embedding_forward(e, ids, 1, 3, out, 3), MML_OK); /* 0, 3, 4 are fine */
    mml_embedding_destroy(e);
    /* Hashing into the first n_rows - 1 rows leaves the last one for OOV. */
    e = make_emb(ctx, 1001, MML_OOV_RESERVED_ROW);
    uint64_t raw[3] = {11, 22, 33};
    int32_t hid[4];
    ck_assert_int_eq(mml_hash_ids(raw, 3, 5, 1000, hid), MML_OK);
    hid[3] = -1;
    ck_assert_int_eq(mml_embedding_forward(e, hid, 1, 4, out, 3), MML_OK);
    for (int j = 0; j < 3; j++) {
        ck_assert_float_eq(out[j], mml_embedding_param(e)->value[hid[0] * 3 + j]);
        ck_assert_float_eq(out[9 + j], mml_embedding_param(e)->value[1000 * 3 + j]);
    }
    mml_embedding_destroy(e);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(oov_bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_embedding_options o;
    mml_embedding_options_init(&o);
    ck_assert_int_eq(o.oov_policy, MML_OOV_ERROR);
    o.n_rows = 4;
    int32_t bad[3] = {-1, 2, 77};
    for (int i = 0; i < 3; i++) {
        o.oov_policy = bad[i];
        mml_embedding *e = (mml_embedding *)&o;
        ck_assert_int_eq(mml_embedding_create(&e, ctx, &o), MML_EINVAL);
        ck_assert_ptr_null(e);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "OOV"));
    }
    o.oov_policy = MML_OOV_RESERVED_ROW;
    o.n_rows = 1; /* no room for a reserved row */
    mml_embedding *e = NULL;
    ck_assert_int_eq(mml_embedding_create(&e, ctx, &o), MML_EINVAL);
    o.n_rows = 2;
    ck_assert_int_eq(mml_embedding_create(&e, ctx, &o), MML_OK);
    /* Shape checks still apply under the reserved-row policy. */
    int32_t ids[1] = {9};
    float out[8];
    ck_assert_int_eq(mml_embedding_forward(e, ids, 1, 0, out, 8), MML_ESHAPE);
    ck_assert_int_eq(mml_embedding_forward(e, NULL, 1, 1, out, 8), MML_EINVAL);
    ck_assert_int_eq(mml_embedding_backward(e, ids, 1, 1, out, 2), MML_ESHAPE);
    mml_embedding_destroy(e);
    mml_ctx_destroy(ctx);
}
END_TEST


/* ---------------------------------------------------------------- multi-hot */

/* 5 rows over a CSR that starts at offset 2: {4, 1}, {}, {3, 3, 0}, {2}, {}. */
static const int64_t mh_offsets[6] = {2, 4, 4, 7, 8, 8};
static const int32_t mh_ids[8] = {-9, -9, 4, 1, 3, 3, 0, 2};

static void ref_multihot(mml_embedding *e, int32_t pooling, double *out)
{
    mml_param *p = mml_embedding_param(e);
    for (int r = 0; r < 5; r++) {
        int64_t cnt = mh_offsets[r + 1] - mh_offsets[r];
        for (int j = 0; j < p->cols; j++) {
            double s = 0;
            for (int64_t i = mh_offsets[r]; i < mh_offsets[r + 1]; i++)
                s += p->value[mh_ids[i] * p->cols + j];
            out[r * p->cols + j] = pooling == MML_POOL_MEAN && cnt > 0 ? s / (double)cnt : s;
        }
    }
}

START_TEST(multihot_values_and_gradients)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_embedding *e = make_emb(ctx, 5, MML_OOV_ERROR);
    mml_param *p = mml_embedding_param(e);
    for (int32_t pool = MML_POOL_SUM; pool <= MML_POOL_MEAN; pool++) {
        float out[5 * 4];
        for (int i = 0; i < 20; i++)
            out[i] = 99.0f;
        ck_assert_int_eq(mml_embedding_forward_multihot(e, mh_offsets, mh_ids, 5, pool, out, 4), MML_OK);
        double ref[5 * 3];
        ref_multihot(e, pool, ref);
        for (int r = 0; r < 5; r++) {
            for (int j = 0; j < 3; j++)
                ck_assert_msg(fabs(out[r * 4 + j] - ref[r * 3 + j]) < 1e-7, "pool %d row %d", pool, r);
            ck_assert_float_eq(out[r * 4 + 3], 99.0f); /* past dim: untouched */
        }
        for (int j = 0; j < 3; j++) { /* empty rows: zeros */
            ck_assert_float_eq(out[1 * 4 + j], 0.0f);
            ck_assert_float_eq(out[4 * 4 + j], 0.0f);
        }
        /* Backward: every id occurrence gets dout (/ count for the mean). */
        memset(p->grad, 0, sizeof(float) * 15);
        float dout[5 * 4];
        for (int i = 0; i < 20; i++)
            dout[i] = (float)(i + 1);
        ck_assert_int_eq(mml_embedding_backward_multihot(e, mh_offsets, mh_ids, 5, pool, dout, 4), MML_OK);
        double g[5 * 3] = {0};
        for (int r = 0; r < 5; r++) {
            int64_t cnt = mh_offsets[r + 1] - mh_offsets[r];
            for (int64_t i = mh_offsets[r]; i < mh_offsets[r + 1]; i++)
                for (int j = 0; j < 3; j++)
                    g[mh_ids[i] * 3 + j] += dout[r * 4 + j] / (pool == MML_POOL_MEAN ? (double)cnt : 1.0);
        }
        for (int i = 0; i < 15; i++)
            ck_assert_msg(fabs(p->grad[i] - g[i]) < 1e-5, "pool %d grad %d: %g vs %g", pool, i,
                          (double)p->grad[i], g[i]);
        /* Row 2 uses id 3 twice: twice its share. */
        ck_assert_float_eq_tol(p->grad[3 * 3], (pool == MML_POOL_MEAN ? 2.0f / 3.0f : 2.0f) * dout[8], 1e-5f);
    }
    /* All lists empty: ids may be NULL. */
    int64_t empty[3] = {0, 0, 0};
    float z[6] = {1, 1, 1, 1, 1, 1};
    ck_assert_int_eq(mml_embedding_forward_multihot(e, empty, NULL, 2, MML_POOL_MEAN, z, 3), MML_OK);
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(z[i], 0.0f);
    ck_assert_int_eq(mml_embedding_backward_multihot(e, empty, NULL, 2, MML_POOL_SUM, z, 3), MML_OK);
    mml_embedding_destroy(e);
    mml_ctx_destroy(ctx);
}
END_TEST

typedef struct mh_fx {
    mml_embedding *e;
    int32_t pool;
    double c[5 * 3];
} mh_fx;

static int mh_loss(void *user, double *loss, uint64_t *pattern)
{
    mh_fx *fx = user;
    float out[15];
    int rc = mml_embedding_forward_multihot(fx->e, mh_offsets, mh_ids, 5, fx->pool, out, 3);
    double s = 0;
    for (int i = 0; i < 15; i++)
        s += fx->c[i] * out[i] * out[i]; /* non-linear, so values matter */
    *loss = s;
    *pattern = 0;
    return rc;
}

static int mh_grad(void *user)
{
    mh_fx *fx = user;
    mml_param *p = mml_embedding_param(fx->e);
    memset(p->grad, 0, sizeof(float) * (size_t)mml_param_size(p));
    float out[15], d[15];
    int rc = mml_embedding_forward_multihot(fx->e, mh_offsets, mh_ids, 5, fx->pool, out, 3);
    if (rc < 0)
        return rc;
    for (int i = 0; i < 15; i++)
        d[i] = (float)(2.0 * fx->c[i] * out[i]);
    return mml_embedding_backward_multihot(fx->e, mh_offsets, mh_ids, 5, fx->pool, d, 3);
}

START_TEST(multihot_gradcheck)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    for (int32_t pool = MML_POOL_SUM; pool <= MML_POOL_MEAN; pool++) {
        mh_fx fx;
        fx.e = make_emb(ctx, 5, MML_OOV_ERROR);
        fx.pool = pool;
        mml_param *p = mml_embedding_param(fx.e);
        for (int i = 0; i < 15; i++) {
            fx.c[i] = 0.5 + 0.1 * i;
            p->value[i] = 0.3f * sinf((float)i + 1.0f);
        }
        mml_param *ps[1] = {p};
        mml_gradcheck_report rep;
        int rc = mml_gradcheck(ctx, NULL, ps, 1, mh_grad, mh_loss, &fx, &rep);
        ck_assert_msg(rc == MML_OK, "pool %d: %s", pool, mml_ctx_last_error(ctx));
        ck_assert_int_eq(rep.checked, 15);
        mml_embedding_destroy(fx.e);
    }
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(multihot_bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_embedding *e = make_emb(ctx, 5, MML_OOV_ERROR);
    float out[5 * 3];
    for (int i = 0; i < 15; i++)
        out[i] = 7.0f;
    ck_assert_int_eq(mml_embedding_forward_multihot(NULL, mh_offsets, mh_ids, 5, 0, out, 3), MML_EINVAL);
    ck_assert_int_eq(mml_embedding_backward_multihot(NULL, mh_offsets, mh_ids, 5, 0, out, 3), MML_EINVAL);
    ck_assert_int_eq(mml_embedding_forward_multihot(e, NULL, mh_ids, 5, 0, out, 3), MML_EINVAL);
    ck_assert_int_eq(mml_embedding_forward_multihot(e, mh_offsets, NULL, 5, 0, out, 3), MML_EINVAL);
    ck_assert_int_eq(mml_embedding_forward_multihot(e, mh_offsets, mh_ids, 5, 0, NULL, 3), MML_EINVAL);
    ck_assert_int_eq(mml_embedding_backward_multihot(e, mh_offsets, mh_ids, 5, 0, NULL, 3), MML_EINVAL);
    ck_assert_int_eq(mml_embedding_forward_multihot(e, mh_offsets, mh_ids, 5, 2, out, 3), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "pooling"));
    ck_assert_int_eq(mml_embedding_forward_multihot(e, mh_offsets, mh_ids, 0, 0, out, 3), MML_ESHAPE);
    ck_assert_int_eq(mml_embedding_forward_multihot(e, mh_offsets, mh_ids, 5, 0, out, 2), MML_ESHAPE);
    int64_t dec[3] = {0, 2, 1};
    ck_assert_int_eq(mml_embedding_forward_multihot(e, dec, mh_ids + 2, 2, 0, out, 3), MML_ESHAPE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "row 1"));
    int64_t neg[2] = {-1, 1};
    ck_assert_int_eq(mml_embedding_forward_multihot(e, neg, mh_ids, 1, 0, out, 3), MML_ESHAPE);
    /* An id out of range (the -9 before offset 2) is refused, nothing written. */
    int64_t from0[2] = {0, 3};
    ck_assert_int_eq(mml_embedding_forward_multihot(e, from0, mh_ids, 1, 0, out, 3), MML_ERANGE);
    ck_assert_int_eq(mml_embedding_backward_multihot(e, from0, mh_ids, 1, 0, out, 3), MML_ERANGE);
    for (int i = 0; i < 15; i++)
        ck_assert_float_eq(out[i], 7.0f);
    for (int i = 0; i < 15; i++)
        ck_assert_float_eq(mml_embedding_param(e)->grad[i], 0.0f);
    mml_embedding_destroy(e);
    /* Under the reserved-row policy the same ids read the last row. */
    e = make_emb(ctx, 5, MML_OOV_RESERVED_ROW);
    ck_assert_int_eq(mml_embedding_forward_multihot(e, from0, mh_ids, 1, MML_POOL_SUM, out, 3), MML_OK);
    mml_param *p = mml_embedding_param(e);
    for (int j = 0; j < 3; j++)
        ck_assert_float_eq_tol(out[j], 2 * p->value[4 * 3 + j] + p->value[4 * 3 + j], 1e-6f);
    mml_embedding_destroy(e);
    mml_ctx_destroy(ctx);
}
END_TEST


/* ---------------------------------------------------------------- numeric fields */

/* The numeric weights enter the logit linearly: logit(v_j + delta) - logit(v_j) = delta x_j. */
START_TEST(numeric_linear_term_values)
{
    mml_ctx *ctx = plain_ctx(1, 3);
    mml_model_options o;
    mml_model_options_init(&o);
    o.backbone = "wdl";
    o.n_fields = MF;
    o.field_sizes = msizes;
    o.embed_dim = MK;
    o.n_dense = 2;
    o.n_domains = MD;
    o.n_hidden = 2;
    o.hidden = mhidden;
    o.dropout = 0.0f;
    mml_model *m = NULL;
    ck_assert_int_eq(mml_model_create(&m, ctx, &o), MML_OK);
    randomize_model(m, 3, 0.5f);
    mml_param *nw = NULL;
    for (int64_t i = 0; i < mml_model_n_params(m); i++)
        if (strcmp(mml_model_param(m, i)->name, "numeric.linear") == 0)
            nw = mml_model_param(m, i);
    ck_assert_ptr_nonnull(nw);
    ck_assert_int_eq(nw->rows, 1);
    ck_assert_int_eq(nw->cols, 2);
    ck_assert_int_eq(nw->group, MML_GROUP_EMBEDDING);
    int32_t ids[2 * MF] = {1, 2, 0, 3, 4, 2}, dom[2] = {0, 2};
    float dense[4] = {0.5f, -1.5f, 2.0f, 0.25f}, lab[2] = {1, 0}, l0[2], l1[2];
    mml_batch_view b;
    mml_batch_view_init(&b, 2, MF, ids, 2, dense, dom, lab);
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 0, l0), MML_OK);
    for (int j = 0; j < 2; j++) {
        nw->value[j] += 0.25f;
        ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 0, l1), MML_OK);
        for (int r = 0; r < 2; r++)
            ck_assert_float_eq_tol(l1[r] - l0[r], 0.25f * dense[r * 2 + j], 1e-6f);
        nw->value[j] -= 0.25f;
    }
    /* Gradient: sum_r dlogit_r x_rj. */
    memset(nw->grad, 0, sizeof(float) * 2);
    float dl[2] = {1.0f, -2.0f};
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, l0), MML_OK);
    ck_assert_int_eq(mml_model_backward(m, dl), MML_OK);
    ck_assert_float_eq_tol(nw->grad[0], 0.5f - 4.0f, 1e-6f);
    ck_assert_float_eq_tol(nw->grad[1], -1.5f - 0.5f, 1e-6f);
    mml_model_destroy(m);
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
    tc = tcase_create("weights_l2");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, batch_view_weights_default_null);
    tcase_add_test(tc, weighted_loss_through_the_batch_view);
    tcase_add_test(tc, l2_values_and_gradients);
    tcase_add_test(tc, l2_distinct_rows_once);
    tcase_add_test(tc, l2_gradcheck);
    tcase_add_test(tc, l2_off_and_bad_arguments);
    tcase_add_test(tc, l2_allocation_failure);
    suite_add_tcase(s, tc);
    tc = tcase_create("optimizers");
    tcase_add_test(tc, lazy_adam_matches_hand_reference);
    tcase_add_test(tc, lazy_adam_first_touch_is_a_full_step);
    tcase_add_test(tc, lazy_adam_all_rows_equals_dense);
    tcase_add_test(tc, adagrad_matches_hand_values);
    tcase_add_test(tc, sparse_optimizer_bad_arguments);
    tcase_add_test(tc, sparse_optimizer_allocation_failures);
    suite_add_tcase(s, tc);
    tc = tcase_create("hashing");
    tcase_add_test(tc, hash_values_are_pinned);
    tcase_add_test(tc, hash_distribution_and_collisions);
    tcase_add_test(tc, hash_bad_arguments);
    tcase_add_test(tc, oov_reserved_row);
    tcase_add_test(tc, oov_bad_arguments);
    suite_add_tcase(s, tc);
    tc = tcase_create("multihot");
    tcase_add_test(tc, multihot_values_and_gradients);
    tcase_add_test(tc, multihot_gradcheck);
    tcase_add_test(tc, multihot_bad_arguments);
    tcase_add_test(tc, numeric_linear_term_values);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(extras_suite()); }
