/* Backbones: the built-in mlp, wdl and deepfm through the public model API
 * (every gradient in every adapter mode, the FM and linear terms against
 * plain loops, one global bias, seeding, accumulation), the custom-backbone
 * registry and its callback contract, bad configurations and allocation
 * failures. */
#include "backbones.h" /* the built-in tables, for their infer_shape */
#include "testutil.h"

enum { F = 3, K = 4, D = 3, NDENSE = 2, HLAST = 6 };
static const int64_t sizes[F] = {11, 7, D};
static const int32_t tiny_hidden[2] = {8, 6};
static const char *const builtin[3] = {"mlp", "wdl", "deepfm"};
static const int32_t modes[4] = {MML_MIX_NONE, MML_MIX_DOMAIN, MML_MIX_GATED, MML_MIX_SINGLE};

/* ---- test data: SplitMix64, independent of the library's generator ---- */

static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unif(uint64_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }
static int32_t below(uint64_t *s, int64_t n) { return (int32_t)(unif(s) * (double)n); }

typedef struct fixture {
    mml_ctx *ctx;
    mml_model *model;
    int64_t n;
    int32_t n_dense;
    int32_t *ids, *domain;
    float *labels, *dense, *logits, *dlogits;
    mml_batch_view batch;
    int32_t mode, expert;
    mml_param *corrupt; /* if set, its gradient is made wrong on purpose */
} fixture;

#define MODEL_CHECK_OWN_GRAD
#include "model_check.h"

/* Rows of every domain, mixed (the first D rows are domains 0..D-1). */
static void make_batch(fixture *fx, int64_t n, int32_t n_dense, uint64_t seed)
{
    uint64_t s = seed;
    fx->n = n;
    fx->n_dense = n_dense;
    fx->ids = malloc(sizeof(int32_t) * (size_t)(n * F));
    fx->domain = malloc(sizeof(int32_t) * (size_t)n);
    fx->labels = malloc(sizeof(float) * (size_t)n);
    fx->logits = malloc(sizeof(float) * (size_t)n);
    fx->dlogits = malloc(sizeof(float) * (size_t)n);
    fx->dense = n_dense ? malloc(sizeof(float) * (size_t)(n * n_dense)) : NULL;
    for (int64_t r = 0; r < n; r++) {
        fx->domain[r] = r < D ? (int32_t)r : below(&s, D);
        for (int32_t f = 0; f < F - 1; f++)
            fx->ids[r * F + f] = below(&s, sizes[f]);
        fx->ids[r * F + F - 1] = fx->domain[r]; /* the domain is also a field */
        fx->labels[r] = (float)below(&s, 2);
        for (int32_t j = 0; j < n_dense; j++)
            fx->dense[r * n_dense + j] = (float)(2.0 * unif(&s) - 1.0);
    }
    mml_batch_view_init(&fx->batch, n, F, fx->ids, n_dense, fx->dense, fx->domain, fx->labels);
}

static void free_batch(fixture *fx)
{
    free(fx->ids);
    free(fx->domain);
    free(fx->labels);
    free(fx->logits);
    free(fx->dlogits);
    free(fx->dense);
}

/* Moves every value away from its init (B, c, biases and first-order weights
 * start at zero), so no gradient is trivially zero. */
static void randomize(mml_param *const *ps, int64_t n, uint64_t seed, float scale)
{
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < mml_param_size(ps[i]); j++)
            ps[i]->value[j] = (float)((2.0 * unif(&s) - 1.0) * scale);
}

static void randomize_model(mml_model *m, uint64_t seed, float scale)
{
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        randomize(&p, 1, seed * 1000003u + (uint64_t)i, scale);
    }
}

static int model_opts_create(mml_model **m, mml_ctx *ctx, const char *backbone, int32_t n_experts,
                             int gate, int32_t n_dense, float dropout, const void *bopt)
{
    mml_model_options o;
    mml_model_options_init(&o);
    o.backbone = backbone;
    o.backbone_options = bopt;
    o.n_fields = F;
    o.field_sizes = sizes;
    o.embed_dim = K;
    o.n_dense = n_dense;
    o.n_domains = D;
    o.n_experts = n_experts;
    o.gate = gate;
    o.alpha = 2;
    o.n_hidden = 2;
    o.hidden = tiny_hidden;
    o.dropout = dropout;
    return mml_model_create(m, ctx, &o);
}

static mml_model *tiny_model(mml_ctx *ctx, const char *backbone, int32_t n_experts, int gate,
                             int32_t n_dense, float dropout, const void *bopt)
{
    mml_model *m = NULL;
    int rc = model_opts_create(&m, ctx, backbone, n_experts, gate, n_dense, dropout, bopt);
    ck_assert_msg(rc == MML_OK, "model_create(%s): %s", backbone, mml_ctx_last_error(ctx));
    return m;
}

static int fx_grad(void *user)
{
    fixture *fx = user;
    mml_model *m = fx->model;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        mml_params_zero_grad(&p, 1);
    }
    int rc = mml_model_forward(m, &fx->batch, fx->mode, fx->expert, 1, fx->logits);
    if (rc < 0)
        return rc;
    rc = mml_bce_with_logits(fx->ctx, fx->logits, fx->labels, NULL, fx->n, NULL, fx->dlogits);
    if (rc < 0)
        return rc;
    rc = mml_model_backward(m, fx->dlogits);
    if (rc >= 0 && fx->corrupt)
        fx->corrupt->grad[mml_param_size(fx->corrupt) - 1] += 0.01f;
    return rc;
}

static mml_param *find_param(mml_model *m, const char *name)
{
    for (int64_t i = 0; i < mml_model_n_params(m); i++)
        if (strcmp(mml_model_param(m, i)->name, name) == 0)
            return mml_model_param(m, i);
    return NULL;
}

/* ---- gradients of every parameter, every adapter mode ---- */

typedef struct gc_result {
    int rc;
    mml_gradcheck_report rep;
    int64_t coords;
} gc_result;

static gc_result gradcheck_model(fixture *fx, mml_param **params, int64_t np)
{
    /* Fix the dropout masks for the +h/-h evaluations, and check that they are. */
    ck_assert_int_eq(mml_model_forward(fx->model, &fx->batch, fx->mode, fx->expert, 1, fx->logits),
                     MML_OK);
    ck_assert_int_eq(mml_model_set_dropout_replay(fx->model, 1), MML_OK);
    float *again = malloc(sizeof(float) * (size_t)fx->n);
    ck_assert_int_eq(mml_model_forward(fx->model, &fx->batch, fx->mode, fx->expert, 1, again),
                     MML_OK);
    ck_assert_int_eq(memcmp(again, fx->logits, sizeof(float) * (size_t)fx->n), 0);
    free(again);
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.step = 1e-3;
    o.rtol = 1e-2;
    o.atol = 2e-4;
    o.max_coords_per_param = 0; /* every coordinate */
    o.seed = 7;
    gc_result g;
    g.rc = mml_gradcheck(fx->ctx, &o, params, np, fx_grad, fx_loss, fx, &g.rep);
    g.coords = 0;
    for (int64_t i = 0; i < np; i++)
        g.coords += mml_param_size(params[i]);
    return g;
}

static void run_gradcheck(const char *backbone, int32_t mode, int32_t n_dense)
{
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 3);
    int32_t E = mode == MML_MIX_GATED ? 2 * D : D;
    fx.model = tiny_model(fx.ctx, backbone, E, mode == MML_MIX_GATED, n_dense, 0.5f, NULL);
    fx.mode = mode;
    fx.expert = 1;
    randomize_model(fx.model, 11, 0.5f);
    make_batch(&fx, 7, n_dense, 21);
    mml_param *params[128];
    int64_t np = active_params(fx.model, mode, fx.expert, params);
    ck_assert_int_le(np, 128);
    gc_result g = gradcheck_model(&fx, params, np);
    ck_assert_msg(g.rc == MML_OK,
                  "%s mode %d numeric %d: %s (checked %lld, skipped %lld, failed %lld)",
                  backbone, mode, n_dense, mml_ctx_last_error(fx.ctx), (long long)g.rep.checked,
                  (long long)g.rep.skipped_kinks, (long long)g.rep.failed);
    /* Every coordinate was either compared or skipped at a kink; few kinks. */
    ck_assert_int_eq(g.rep.checked + g.rep.skipped_kinks, g.coords);
    ck_assert_int_lt(g.rep.skipped_kinks, g.coords / 10 + 1);
    ck_assert_msg(g.rep.direction_checked && g.rep.direction_ok, "direction %g vs %g",
                  g.rep.direction_analytic, g.rep.direction_numeric);
    /* Parameters that took no part got no gradient; the others did. */
    for (int64_t i = 0; i < mml_model_n_params(fx.model); i++) {
        mml_param *p = mml_model_param(fx.model, i);
        int active = 0;
        for (int64_t j = 0; j < np; j++)
            active |= params[j] == p;
        double sum = 0;
        for (int64_t j = 0; j < mml_param_size(p); j++)
            sum += fabs(p->grad[j]);
        if (active)
            ck_assert_msg(sum > 0, "%s: %s has no gradient", backbone, p->name);
        else
            ck_assert_msg(sum == 0, "%s: inactive %s has a gradient", backbone, p->name);
    }
    mml_model_destroy(fx.model);
    mml_ctx_destroy(fx.ctx);
    free_batch(&fx);
}

/* _i: backbone (3) x mode (4) x numeric fields or not (2). */
START_TEST(gradcheck_every_parameter)
{
    run_gradcheck(builtin[_i / 8], modes[(_i / 2) % 4], _i % 2 ? NDENSE : 0);
}
END_TEST

/* The same check catches a small error in one coordinate of one parameter. */
START_TEST(gradcheck_catches_a_wrong_gradient)
{
    static const char *const victims[3] = {"head.w", "expert.4.1.B", "field1"};
    for (int v = 0; v < 3; v++) {
        fixture fx = {0};
        fx.ctx = plain_ctx(1, 3);
        fx.model = tiny_model(fx.ctx, "deepfm", 2 * D, 1, NDENSE, 0.5f, NULL);
        fx.mode = MML_MIX_GATED;
        randomize_model(fx.model, 11, 0.5f);
        make_batch(&fx, 7, NDENSE, 21);
        fx.corrupt = find_param(fx.model, victims[v]);
        ck_assert_ptr_nonnull(fx.corrupt);
        mml_param *params[128];
        int64_t np = active_params(fx.model, fx.mode, 0, params);
        gc_result g = gradcheck_model(&fx, params, np);
        ck_assert_int_eq(g.rc, MML_EGRADIENT);
        ck_assert_int_ge(g.rep.failed, 1);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(fx.ctx), victims[v]));
        mml_model_destroy(fx.model);
        mml_ctx_destroy(fx.ctx);
        free_batch(&fx);
    }
}
END_TEST

/* ---- the backbone API directly: input gradients and accumulation ---- */

static void tiny_config(mml_backbone_config *c, int32_t n_experts, float dropout)
{
    mml_backbone_config_init(c);
    c->n_fields = F;
    c->embed_dim = K;
    c->n_dense = NDENSE;
    c->n_domains = D;
    c->n_experts = n_experts;
    c->alpha = 2;
    c->n_hidden = 2;
    c->hidden = tiny_hidden;
    c->dropout = dropout;
}

typedef struct direct {
    mml_backbone *bb;
    int64_t n;
    mml_param in[3]; /* the embeddings, numeric values and gate weights, as parameters */
    mml_mix mix;
    float *coef, *logit;
    mml_param *params[64];
    int64_t np;
} direct;

/* loss = sum_r coef_r logit_r, so dlogit = coef. */
static int direct_loss(void *user, double *loss, uint64_t *pattern)
{
    direct *d = user;
    mml_backbone_input in = {sizeof(mml_backbone_input), 1, d->n, d->in[0].value, d->in[1].value, &d->mix};
    int rc = mml_backbone_forward(d->bb, &in, d->logit);
    if (rc < 0)
        return rc;
    *pattern = mml_backbone_kink_pattern(d->bb);
    *loss = 0;
    for (int64_t r = 0; r < d->n; r++)
        *loss += (double)d->coef[r] * d->logit[r];
    return MML_OK;
}

static int direct_grad(void *user)
{
    direct *d = user;
    mml_params_zero_grad(d->params, d->np);
    double loss;
    uint64_t pattern;
    int rc = direct_loss(d, &loss, &pattern);
    if (rc < 0)
        return rc;
    mml_backbone_grads g = {sizeof(mml_backbone_grads), 0, d->in[0].grad, d->in[1].grad, d->in[2].grad};
    return mml_backbone_backward(d->bb, d->coef, &g);
}

static void direct_param(mml_param *p, const char *name, int64_t rows, int64_t cols)
{
    memset(p, 0, sizeof *p);
    p->name = name;
    p->rows = rows;
    p->cols = cols;
    p->value = calloc((size_t)(rows * cols), sizeof(float));
    p->grad = calloc((size_t)(rows * cols), sizeof(float));
    p->expert = -1;
}

/* d_emb, d_dense and d_weights (gated) and the parameter gradients of each
 * built-in backbone, checked through mml_backbone_* alone. */
START_TEST(backbone_input_gradients)
{
    mml_ctx *ctx = plain_ctx(1, 8);
    const int32_t E = 2 * D;
    mml_backbone_config c;
    tiny_config(&c, E, 0.5f);
    direct d;
    memset(&d, 0, sizeof d);
    d.n = 5;
    ck_assert_int_eq(mml_backbone_create(&d.bb, ctx, builtin[_i], &c), MML_OK);
    ck_assert_str_eq(mml_backbone_type_name(d.bb), builtin[_i]);
    ck_assert_int_eq(mml_backbone_linear_term(d.bb), _i != 0);
    ck_assert_ptr_nonnull(mml_backbone_experts(d.bb));
    direct_param(&d.in[0], "d_emb", d.n, F * K);
    direct_param(&d.in[1], "d_dense", d.n, NDENSE);
    direct_param(&d.in[2], "d_weights", d.n, E);
    d.np = 3 + mml_backbone_n_params(d.bb);
    ck_assert_int_le(d.np, 64);
    for (int i = 0; i < 3; i++)
        d.params[i] = &d.in[i];
    for (int64_t i = 3; i < d.np; i++)
        d.params[i] = mml_backbone_param(d.bb, i - 3);
    randomize(d.params, d.np, 5, 0.5f);
    d.coef = malloc(sizeof(float) * (size_t)d.n);
    d.logit = malloc(sizeof(float) * (size_t)d.n);
    uint64_t s = 9;
    for (int64_t r = 0; r < d.n; r++)
        d.coef[r] = (float)(2 * unif(&s) - 1);
    mml_mix_init(&d.mix, MML_MIX_GATED, d.n);
    d.mix.weights = d.in[2].value;
    double loss;
    uint64_t pattern;
    ck_assert_int_eq(direct_loss(&d, &loss, &pattern), MML_OK);
    ck_assert_int_eq(mml_backbone_set_dropout_replay(d.bb, 1), MML_OK);
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.atol = 1e-4;
    mml_gradcheck_report rep;
    int rc = mml_gradcheck(ctx, &o, d.params, d.np, direct_grad, direct_loss, &d, &rep);
    ck_assert_msg(rc == MML_OK, "%s: %s", builtin[_i], mml_ctx_last_error(ctx));
    ck_assert_int_gt(rep.checked, 0);
    for (int i = 0; i < 3; i++) {
        free(d.in[i].value);
        free(d.in[i].grad);
    }
    free(d.coef);
    free(d.logit);
    mml_backbone_destroy(d.bb);
    mml_ctx_destroy(ctx);
}
END_TEST

static float *copy_floats(const float *x, int64_t n)
{
    float *c = malloc(sizeof(float) * (size_t)n);
    memcpy(c, x, sizeof(float) * (size_t)n);
    return c;
}

/* backward adds to what is there: parameter gradients and the caller's buffers. */
START_TEST(backward_accumulates)
{
    mml_ctx *ctx = plain_ctx(1, 8);
    mml_backbone_config c;
    tiny_config(&c, D, 0.0f);
    mml_backbone *bb = NULL;
    ck_assert_int_eq(mml_backbone_create(&bb, ctx, builtin[_i], &c), MML_OK);
    enum { N = 6 };
    float emb[N * F * K], dense[N * NDENSE], dlogit[N], logit[N];
    float demb[N * F * K], ddense[N * NDENSE];
    int32_t dom[N];
    uint64_t s = 4;
    for (int i = 0; i < N * F * K; i++)
        emb[i] = (float)(unif(&s) - 0.5);
    for (int i = 0; i < N * NDENSE; i++)
        dense[i] = (float)(unif(&s) - 0.5);
    for (int r = 0; r < N; r++) {
        dlogit[r] = (float)(unif(&s) - 0.5);
        dom[r] = r % D;
    }
    int64_t np = mml_backbone_n_params(bb);
    mml_param *ps[32];
    for (int64_t i = 0; i < np; i++)
        ps[i] = mml_backbone_param(bb, i);
    randomize(ps, np, 2, 0.5f);
    mml_mix mix;
    mml_mix_init(&mix, MML_MIX_DOMAIN, N);
    mix.domain = dom;
    mml_backbone_input in = {sizeof(mml_backbone_input), 1, N, emb, dense, &mix};
    mml_params_zero_grad(ps, np);
    memset(demb, 0, sizeof demb);
    memset(ddense, 0, sizeof ddense);
    mml_backbone_grads g = {sizeof(mml_backbone_grads), 0, demb, ddense, NULL};
    ck_assert_int_eq(mml_backbone_forward(bb, &in, logit), MML_OK);
    ck_assert_int_eq(mml_backbone_backward(bb, dlogit, &g), MML_OK);
    float *g1[32];
    for (int64_t i = 0; i < np; i++)
        g1[i] = copy_floats(ps[i]->grad, mml_param_size(ps[i]));
    float *demb1 = copy_floats(demb, N * F * K), *ddense1 = copy_floats(ddense, N * NDENSE);
    /* Second pass on top of the first: twice the gradient. */
    ck_assert_int_eq(mml_backbone_forward(bb, &in, logit), MML_OK);
    ck_assert_int_eq(mml_backbone_backward(bb, dlogit, &g), MML_OK);
    for (int64_t i = 0; i < np; i++)
        for (int64_t j = 0; j < mml_param_size(ps[i]); j++)
            ck_assert_msg(fabsf(ps[i]->grad[j] - 2 * g1[i][j]) <= 1e-5f * (1 + fabsf(g1[i][j])),
                          "%s %s[%lld]", builtin[_i], ps[i]->name, (long long)j);
    for (int i = 0; i < N * F * K; i++)
        ck_assert(fabsf(demb[i] - 2 * demb1[i]) <= 1e-6f);
    for (int i = 0; i < N * NDENSE; i++)
        ck_assert(fabsf(ddense[i] - 2 * ddense1[i]) <= 1e-6f);
    /* Without any buffer the parameters still get theirs. */
    mml_params_zero_grad(ps, np);
    mml_backbone_grads none = {sizeof(mml_backbone_grads), 0, NULL, NULL, NULL};
    ck_assert_int_eq(mml_backbone_forward(bb, &in, logit), MML_OK);
    ck_assert_int_eq(mml_backbone_backward(bb, dlogit, &none), MML_OK);
    for (int64_t i = 0; i < np; i++) {
        for (int64_t j = 0; j < mml_param_size(ps[i]); j++)
            ck_assert(fabsf(ps[i]->grad[j] - g1[i][j]) <= 1e-6f * (1 + fabsf(g1[i][j])));
        free(g1[i]);
    }
    free(demb1);
    free(ddense1);
    /* Bad calls. */
    ck_assert_int_eq(mml_backbone_forward(bb, NULL, logit), MML_EINVAL);
    ck_assert_int_eq(mml_backbone_forward(bb, &in, NULL), MML_EINVAL);
    in.n_rows = 0;
    ck_assert_int_eq(mml_backbone_forward(bb, &in, logit), MML_ESHAPE);
    ck_assert_int_eq(mml_backbone_backward(bb, NULL, &g), MML_EINVAL);
    ck_assert_int_eq(mml_backbone_backward(bb, dlogit, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_backbone_forward(NULL, &in, logit), MML_EINVAL);
    ck_assert_ptr_null(mml_backbone_param(bb, -1));
    ck_assert_ptr_null(mml_backbone_param(bb, np));
    ck_assert_ptr_null(mml_backbone_param(NULL, 0));
    ck_assert_int_eq(mml_backbone_n_params(NULL), 0);
    mml_backbone_destroy(bb);
    mml_backbone_destroy(NULL);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---- forward values: FM term, linear term, shapes, bias, seeds ---- */

/* Copies every parameter of src into the parameter of dst with the same name. */
static void copy_by_name(mml_model *dst, mml_model *src)
{
    for (int64_t i = 0; i < mml_model_n_params(dst); i++) {
        mml_param *p = mml_model_param(dst, i), *q = find_param(src, p->name);
        ck_assert_msg(q && mml_param_size(q) == mml_param_size(p), "%s", p->name);
        memcpy(p->value, q->value, sizeof(float) * (size_t)mml_param_size(p));
    }
}

static void fm_and_linear(int32_t n_dense)
{
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 17);
    mml_model *mlp = tiny_model(fx.ctx, "mlp", 2 * D, 1, n_dense, 0.5f, NULL);
    mml_model *wdl = tiny_model(fx.ctx, "wdl", 2 * D, 1, n_dense, 0.5f, NULL);
    mml_model *dfm = tiny_model(fx.ctx, "deepfm", 2 * D, 1, n_dense, 0.5f, NULL);
    /* Same seed, same streams: wdl and deepfm start identical, parameter for parameter. */
    ck_assert_int_eq(mml_model_n_params(wdl), mml_model_n_params(dfm));
    for (int64_t i = 0; i < mml_model_n_params(wdl); i++) {
        mml_param *p = mml_model_param(wdl, i), *q = mml_model_param(dfm, i);
        ck_assert_str_eq(p->name, q->name);
        ck_assert_int_eq(memcmp(p->value, q->value, sizeof(float) * (size_t)mml_param_size(p)), 0);
    }
    randomize_model(wdl, 3, 0.5f);
    randomize_model(dfm, 3, 0.5f);
    copy_by_name(mlp, wdl);
    make_batch(&fx, 33, n_dense, 5);
    int64_t n = fx.n;
    float *lm = malloc(sizeof(float) * (size_t)n), *lw = malloc(sizeof(float) * (size_t)n),
          *ld = malloc(sizeof(float) * (size_t)n);
    mml_param *emb[F], *first[F], *numeric = find_param(wdl, "numeric.linear");
    ck_assert(n_dense ? numeric != NULL : numeric == NULL);
    for (int f = 0; f < F; f++) {
        char name[32];
        emb[f] = mml_model_param(wdl, f);
        snprintf(name, sizeof name, "field%d.linear", f);
        first[f] = find_param(wdl, name);
        ck_assert_ptr_nonnull(first[f]);
    }
    /* Inference and training (the three towers draw the same dropout masks). */
    for (int training = 0; training < 2; training++)
        for (int mi = 0; mi < 4; mi++) {
            ck_assert_int_eq(mml_model_forward(mlp, &fx.batch, modes[mi], 2, training, lm), MML_OK);
            ck_assert_int_eq(mml_model_forward(wdl, &fx.batch, modes[mi], 2, training, lw), MML_OK);
            ck_assert_int_eq(mml_model_forward(dfm, &fx.batch, modes[mi], 2, training, ld), MML_OK);
            for (int64_t r = 0; r < n; r++) {
                double fm = 0, lin = 0;
                for (int i = 0; i < F; i++)
                    for (int j = i + 1; j < F; j++)
                        for (int t = 0; t < K; t++)
                            fm += (double)emb[i]->value[fx.ids[r * F + i] * K + t] *
                                  emb[j]->value[fx.ids[r * F + j] * K + t];
                for (int f = 0; f < F; f++)
                    lin += first[f]->value[fx.ids[r * F + f]];
                for (int j = 0; j < n_dense; j++)
                    lin += (double)numeric->value[j] * fx.dense[r * n_dense + j];
                ck_assert_msg(fabs(ld[r] - lw[r] - fm) <= 2e-6 * (1 + fabs(lw[r]) + fabs(fm)),
                              "FM, mode %d training %d row %lld: %.9g vs %.9g", modes[mi], training,
                              (long long)r, (double)ld[r] - lw[r], fm);
                ck_assert_msg(fabs(lw[r] - lm[r] - lin) <= 2e-6 * (1 + fabs(lm[r]) + fabs(lin)),
                              "linear, mode %d row %lld: %.9g vs %.9g", modes[mi], (long long)r,
                              (double)lw[r] - lm[r], lin);
                ck_assert(fabs(fm) > 1e-3 && fabs(lin) > 1e-3);
            }
        }
    free(lm);
    free(lw);
    free(ld);
    mml_model_destroy(mlp);
    mml_model_destroy(wdl);
    mml_model_destroy(dfm);
    mml_ctx_destroy(fx.ctx);
    free_batch(&fx);
}

START_TEST(fm_and_linear_terms_match_plain_loops)
{
    fm_and_linear(_i ? NDENSE : 0);
}
END_TEST

static int64_t lora_params(int64_t d_in, int32_t E)
{
    /* alpha 2: ranks min(8 / 2, 8) = 4 and min(6 / 2, 6) = 3. */
    return (int64_t)E * (4 * (d_in + 8) + 8 + 3 * (8 + 6) + 6);
}

START_TEST(output_and_parameter_shapes)
{
    mml_ctx *ctx = plain_ctx(1, 2);
    for (int b = 0; b < 3; b++)
        for (int32_t nd = 0; nd <= NDENSE; nd += NDENSE) {
            mml_model *m = tiny_model(ctx, builtin[b], D, 1, nd, 0.5f, NULL);
            mml_backbone *bb = mml_model_backbone(m);
            int64_t d_in = F * K + nd;
            /* Tower, adapters, head: and infer_shape agrees. */
            int64_t total = 0, head = 0;
            for (int64_t i = 0; i < mml_backbone_n_params(bb); i++) {
                mml_param *p = mml_backbone_param(bb, i);
                total += mml_param_size(p);
                if (strncmp(p->name, "head", 4) == 0) {
                    head++;
                    ck_assert_str_eq(p->name, "head.w");
                    ck_assert_int_eq(p->rows, HLAST);
                    ck_assert_int_eq(p->cols, 1);
                    ck_assert_int_eq(p->group, MML_GROUP_BACKBONE);
                }
            }
            ck_assert_int_eq(head, 1);
            int64_t expect = d_in * 8 + 8 + 8 * 6 + 6 + lora_params(d_in, D) + HLAST;
            ck_assert_int_eq(total, expect);
            const mml_backbone_vtable *vt[3] = {&mml__backbone_mlp, &mml__backbone_wdl,
                                                &mml__backbone_deepfm};
            mml_backbone_config c;
            tiny_config(&c, D, 0.5f);
            c.n_dense = nd;
            int64_t inferred = -1;
            ck_assert_int_eq(vt[b]->infer_shape(NULL, NULL, &c, &inferred), MML_OK);
            ck_assert_int_eq(inferred, expect);
            mml_param *w0 = find_param(m, "tower.0.W"), *a0 = find_param(m, "expert.2.0.A_t");
            ck_assert_int_eq(w0->rows, d_in);
            ck_assert_int_eq(w0->cols, 8);
            ck_assert_int_eq(a0->rows, 4);
            ck_assert_int_eq(a0->cols, d_in);
            /* One logit per row, nothing written past the end. */
            fixture fx = {0};
            fx.ctx = ctx;
            make_batch(&fx, 5, nd, 3);
            float out[9];
            for (int i = 0; i < 9; i++)
                out[i] = -12345.0f;
            for (int mi = 0; mi < 4; mi++)
                for (int64_t n = 1; n <= 5; n += 4) {
                    mml_batch_view bv = fx.batch;
                    bv.n_rows = n;
                    ck_assert_int_eq(mml_model_forward(m, &bv, modes[mi], 0, mi & 1, out), MML_OK);
                    for (int i = 0; i < n; i++)
                        ck_assert(isfinite(out[i]) && out[i] != -12345.0f);
                    for (int i = 5; i < 9; i++)
                        ck_assert(out[i] == -12345.0f);
                }
            free_batch(&fx);
            mml_model_destroy(m);
        }
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(exactly_one_global_bias)
{
    mml_ctx *ctx = plain_ctx(1, 2);
    for (int b = 0; b < 3; b++)
        for (int gate = 0; gate < 2; gate++) {
            int32_t nd = gate ? NDENSE : 0;
            mml_model *m = tiny_model(ctx, builtin[b], gate ? 2 * D : 0, gate, nd, 0.5f, NULL);
            int64_t n_bias = 0, where = -1;
            for (int64_t i = 0; i < mml_model_n_params(m); i++)
                if (strcmp(mml_model_param(m, i)->name, "bias") == 0) {
                    n_bias++;
                    where = i;
                }
            ck_assert_int_eq(n_bias, 1);
            /* Where the header says: after the embeddings and the linear term. */
            ck_assert_int_eq(where, F + (b ? F + (nd > 0) : 0));
            mml_param *bias = mml_model_param(m, where);
            ck_assert_int_eq(mml_param_size(bias), 1);
            ck_assert_int_eq(bias->group, MML_GROUP_BACKBONE);
            /* The backbone itself has none ("head.w" alone is its output layer). */
            mml_backbone *bb = mml_model_backbone(m);
            for (int64_t i = 0; i < mml_backbone_n_params(bb); i++)
                ck_assert_ptr_null(strstr(mml_backbone_param(bb, i)->name, "bias"));
            /* Moving the bias moves every logit by exactly as much. */
            fixture fx = {0};
            fx.ctx = ctx;
            make_batch(&fx, 17, nd, 4);
            randomize_model(m, 6, 0.5f);
            float *before = malloc(sizeof(float) * 17);
            int32_t mode = gate ? MML_MIX_GATED : MML_MIX_NONE;
            ck_assert_int_eq(mml_model_forward(m, &fx.batch, mode, 0, 0, before), MML_OK);
            bias->value[0] += 0.75f;
            ck_assert_int_eq(mml_model_forward(m, &fx.batch, mode, 0, 0, fx.logits), MML_OK);
            for (int r = 0; r < 17; r++)
                ck_assert(fabsf(fx.logits[r] - before[r] - 0.75f) < 1e-5f);
            free(before);
            free_batch(&fx);
            mml_model_destroy(m);
        }
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(linear_term_only_where_asked)
{
    mml_ctx *ctx = plain_ctx(1, 2);
    for (int b = 0; b < 3; b++)
        for (int32_t nd = 0; nd <= NDENSE; nd += NDENSE) {
            mml_model *m = tiny_model(ctx, builtin[b], 0, 0, nd, 0.5f, NULL);
            ck_assert_int_eq(mml_backbone_linear_term(mml_model_backbone(m)), b != 0);
            int64_t n_linear = 0;
            for (int64_t i = 0; i < mml_model_n_params(m); i++) {
                mml_param *p = mml_model_param(m, i);
                if (!strstr(p->name, ".linear"))
                    continue;
                n_linear++;
                ck_assert_int_eq(p->group, MML_GROUP_EMBEDDING);
                for (int64_t j = 0; j < mml_param_size(p); j++)
                    ck_assert(p->value[j] == 0.0f); /* first-order weights start at 0 */
            }
            ck_assert_int_eq(n_linear, b ? F + (nd > 0) : 0);
            for (int f = 0; b && f < F; f++) {
                char name[32];
                snprintf(name, sizeof name, "field%d.linear", f);
                mml_param *p = find_param(m, name);
                ck_assert_ptr_nonnull(p);
                ck_assert_int_eq(p->rows, sizes[f]);
                ck_assert_int_eq(p->cols, 1);
            }
            if (b && nd) {
                mml_param *p = find_param(m, "numeric.linear");
                ck_assert_int_eq(p->rows, 1);
                ck_assert_int_eq(p->cols, nd);
            }
            mml_model_destroy(m);
        }
    mml_ctx_destroy(ctx);
}
END_TEST

/* Logits of a fresh model with randomised experts (so they count). */
static float *seeded_logits(mml_ctx *ctx, const char *backbone, int training)
{
    mml_model *m = tiny_model(ctx, backbone, 2 * D, 1, NDENSE, 0.5f, NULL);
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        if (p->group == MML_GROUP_EXPERT)
            randomize(&p, 1, 40 + (uint64_t)i, 0.3f);
    }
    fixture fx = {0};
    fx.ctx = ctx;
    make_batch(&fx, 20, NDENSE, 8);
    float *out = malloc(sizeof(float) * 20);
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_GATED, 0, training, out), MML_OK);
    free_batch(&fx);
    mml_model_destroy(m);
    return out;
}

START_TEST(same_seed_same_logits)
{
    for (int b = 0; b < 3; b++)
        for (int training = 0; training < 2; training++) {
            mml_ctx *c1 = plain_ctx(1, 42), *c2 = plain_ctx(1, 42), *c3 = plain_ctx(1, 43);
            float *a = seeded_logits(c1, builtin[b], training);
            float *a2 = seeded_logits(c1, builtin[b], training); /* same context again */
            float *bb = seeded_logits(c2, builtin[b], training);
            float *c = seeded_logits(c3, builtin[b], training);
            ck_assert_int_eq(memcmp(a, a2, sizeof(float) * 20), 0);
            ck_assert_int_eq(memcmp(a, bb, sizeof(float) * 20), 0);
            int differ = 0;
            for (int r = 0; r < 20; r++)
                differ += a[r] != c[r];
            ck_assert_int_eq(differ, 20);
            free(a);
            free(a2);
            free(bb);
            free(c);
            mml_ctx_destroy(c1);
            mml_ctx_destroy(c2);
            mml_ctx_destroy(c3);
        }
}
END_TEST

/* ---- a custom backbone: logit = w . [embeddings, numeric values] ---- */

typedef struct toy_options {
    /* nonzero: that callback returns it */
    int fail_infer, fail_create, fail_forward, fail_backward;
    float grad_bug;  /* added to every analytic gradient of toy.w: a deliberate bug */
    int bad_count;   /* n_params reports -1 */
    int null_param;  /* param returns NULL */
    int nan_logit;   /* forward writes a NaN */
    int *destroyed;  /* counts destroy calls */
    int *bad_index;  /* counts param calls outside [0, n_params) */
} toy_options;

typedef struct toy {
    toy_options opt;
    int32_t fk, nd, width;
    mml_param w;
    float *x; /* the inputs of the last forward, n x width */
    int64_t n;
} toy;

static int toy_infer(void *user, mml_ctx *ctx, const mml_backbone_config *c, int64_t *n_values)
{
    (void)user;
    (void)ctx;
    const toy_options *o = c->options;
    if (o && o->fail_infer)
        return o->fail_infer;
    *n_values = (int64_t)c->n_fields * c->embed_dim + c->n_dense;
    return MML_OK;
}

static void toy_destroy(void *self)
{
    toy *t = self;
    if (t->opt.destroyed)
        (*t->opt.destroyed)++;
    free(t->w.value);
    free(t->w.grad);
    free(t->x);
    free(t);
}

static int toy_create(void *user, mml_ctx *ctx, const mml_backbone_config *c, void **self)
{
    (void)user;
    (void)ctx;
    const toy_options *o = c->options;
    if (o && o->fail_create)
        return o->fail_create == MML_EUNSUPPORTED
                   ? mml_ctx_set_error(ctx, MML_EUNSUPPORTED, "toy wants no numeric values")
                   : o->fail_create;
    toy *t = calloc(1, sizeof *t);
    if (!t)
        return MML_ENOMEM;
    if (o)
        t->opt = *o;
    t->fk = c->n_fields * c->embed_dim;
    t->nd = c->n_dense;
    t->width = t->fk + t->nd;
    t->w = (mml_param){"toy.w", malloc(sizeof(float) * (size_t)t->width),
                       calloc((size_t)t->width, sizeof(float)), t->width, 1, MML_GROUP_BACKBONE, -1,
                       0, 0};
    if (!t->w.value || !t->w.grad) {
        toy_destroy(t);
        return MML_ENOMEM;
    }
    for (int32_t i = 0; i < t->width; i++)
        t->w.value[i] = 0.1f * (float)((i * 7 + (int)c->stream) % 5) - 0.2f;
    *self = t;
    return MML_OK;
}

static int toy_forward(void *self, const mml_backbone_input *in, float *logit)
{
    toy *t = self;
    if (t->opt.fail_forward)
        return t->opt.fail_forward;
    float *x = realloc(t->x, sizeof(float) * (size_t)(in->n_rows * t->width));
    if (!x)
        return MML_ENOMEM;
    t->x = x;
    t->n = in->n_rows;
    for (int64_t r = 0; r < t->n; r++) {
        float *xr = x + r * t->width;
        memcpy(xr, in->emb + r * t->fk, sizeof(float) * (size_t)t->fk);
        if (t->nd)
            memcpy(xr + t->fk, in->dense + r * t->nd, sizeof(float) * (size_t)t->nd);
        double s = 0;
        for (int32_t i = 0; i < t->width; i++)
            s += (double)xr[i] * t->w.value[i];
        logit[r] = (float)s;
    }
    if (t->opt.nan_logit)
        logit[t->n - 1] = NAN;
    return MML_OK;
}

static int toy_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    toy *t = self;
    if (t->opt.fail_backward)
        return t->opt.fail_backward;
    for (int64_t r = 0; r < t->n; r++)
        for (int32_t i = 0; i < t->width; i++) {
            t->w.grad[i] += dlogit[r] * t->x[r * t->width + i];
            if (i < t->fk && g->d_emb)
                g->d_emb[r * t->fk + i] += dlogit[r] * t->w.value[i];
            if (i >= t->fk && g->d_dense)
                g->d_dense[r * t->nd + i - t->fk] += dlogit[r] * t->w.value[i];
        }
    for (int32_t i = 0; i < t->width; i++)
        t->w.grad[i] += t->opt.grad_bug;
    return MML_OK;
}

static int64_t toy_n_params(void *self) { return ((toy *)self)->opt.bad_count ? -1 : 1; }

static mml_param *toy_param(void *self, int64_t index)
{
    toy *t = self;
    if (index < 0 || index >= toy_n_params(self)) {
        if (t->opt.bad_index)
            (*t->opt.bad_index)++;
        return NULL;
    }
    return t->opt.null_param ? NULL : &t->w;
}

static mml_backbone_vtable toy_table(const char *name)
{
    mml_backbone_vtable vt;
    memset(&vt, 0, sizeof vt);
    vt.struct_size = sizeof vt;
    vt.abi_version = MML_BACKBONE_ABI_VERSION;
    vt.type_name = name;
    vt.infer_shape = toy_infer;
    vt.create = toy_create;
    vt.destroy = toy_destroy;
    vt.forward = toy_forward;
    vt.backward = toy_backward;
    vt.n_params = toy_n_params;
    vt.param = toy_param;
    return vt;
}

static int register_toy(mml_ctx *ctx, const char *name)
{
    mml_backbone_vtable vt = toy_table(name);
    return mml_backbone_register(ctx, &vt, NULL);
}

START_TEST(builtin_names_are_known)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    for (int b = 0; b < 3; b++)
        ck_assert_str_eq(mml_backbone_builtin_name(b), builtin[b]);
    ck_assert_ptr_null(mml_backbone_builtin_name(-1));
    int32_t n = 0;
    for (; mml_backbone_builtin_name(n); n++) {
        const char *name = mml_backbone_builtin_name(n);
        ck_assert(mml_backbone_known(ctx, name));
        ck_assert(mml_backbone_known(NULL, name));
        for (int32_t j = 0; j < n; j++)
            ck_assert_str_ne(mml_backbone_builtin_name(j), name);
        /* A built-in name cannot be taken. */
        ck_assert_int_eq(register_toy(ctx, name), MML_EEXIST);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), name));
    }
    ck_assert_int_ge(n, 3);
    ck_assert_ptr_null(mml_backbone_builtin_name(n));
    ck_assert(!mml_backbone_known(ctx, "toy"));
    ck_assert(!mml_backbone_known(ctx, NULL));
    ck_assert(!mml_backbone_known(ctx, ""));
    ck_assert(!mml_backbone_known(ctx, "MLP"));
    mml_model *m = NULL;
    ck_assert_int_eq(model_opts_create(&m, ctx, "toy", 0, 0, 0, 0.5f, NULL), MML_ENOTFOUND);
    ck_assert_ptr_null(m);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(register_refuses_bad_tables)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    ck_assert_int_eq(register_toy(ctx, "toy"), MML_OK);
    ck_assert(mml_backbone_known(ctx, "toy"));
    ck_assert_int_eq(register_toy(ctx, "toy"), MML_EEXIST);
    mml_backbone_vtable vt = toy_table("toy2");
    ck_assert_int_eq(mml_backbone_register(NULL, &vt, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_backbone_register(ctx, NULL, NULL), MML_EINVAL);
    /* Versions. */
    vt.abi_version = MML_BACKBONE_ABI_VERSION + 1;
    ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_EVERSION);
    vt.abi_version = 0;
    ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_EVERSION);
    vt = toy_table("toy2");
    vt.struct_size -= 8;
    ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_EVERSION);
    vt.struct_size += 16;
    ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_EVERSION);
    vt.struct_size = 0;
    ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_EVERSION);
    /* Each required callback. */
    for (int which = 0; which < 6; which++) {
        vt = toy_table("toy2");
        switch (which) {
        case 0: vt.create = NULL; break;
        case 1: vt.destroy = NULL; break;
        case 2: vt.forward = NULL; break;
        case 3: vt.backward = NULL; break;
        case 4: vt.n_params = NULL; break;
        default: vt.param = NULL; break;
        }
        ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_EINVAL);
    }
    /* The optional ones may be missing. */
    vt = toy_table("toy_minimal");
    vt.infer_shape = NULL;
    ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_OK);
    /* Names: [a-z0-9_]{1,31}. */
    static const char *const bad[] = {"", "Toy", "toy-2", "toy 2", "toy.2", "t\xc3\xa9",
                                      "abcdefghijklmnopqrstuvwxyz_0123" "4"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(register_toy(ctx, bad[i]) == MML_EINVAL, "'%s'", bad[i]);
    vt = toy_table(NULL);
    ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_EINVAL);
    ck_assert_int_eq(register_toy(ctx, "abcdefghijklmnopqrstuvwxyz_0123"), MML_OK); /* 31 */
    ck_assert_int_eq(register_toy(ctx, "_9"), MML_OK);
    ck_assert(!mml_backbone_known(ctx, "toy2"));
    /* The table and its name are copied: the caller's may go away. */
    char name[8] = "mine";
    vt = toy_table(name);
    ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_OK);
    strcpy(name, "gone");
    memset(&vt, 0xff, sizeof vt);
    ck_assert(mml_backbone_known(ctx, "mine"));
    ck_assert(!mml_backbone_known(ctx, "gone"));
    mml_model *m = tiny_model(ctx, "mine", 0, 0, 0, 0.5f, NULL);
    ck_assert_str_eq(mml_backbone_type_name(mml_model_backbone(m)), "mine");
    mml_model_destroy(m);
    m = tiny_model(ctx, "toy_minimal", 0, 0, 0, 0.5f, NULL);
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
}
END_TEST

/* A failing callback: MML_ECALLBACK from the library, its own code in the message. */
START_TEST(callback_errors_surface)
{
    counting_allocator a;
    mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
    ck_assert_int_eq(register_toy(ctx, "toy"), MML_OK);
    int destroyed = 0;
    toy_options o = {0};
    o.destroyed = &destroyed;
    mml_model *m = NULL;
    char expect[64];
    /* infer_shape and create */
    o.fail_infer = MML_ERANGE;
    ck_assert_int_eq(model_opts_create(&m, ctx, "toy", 0, 0, 0, 0.5f, &o), MML_ECALLBACK);
    snprintf(expect, sizeof expect, "infer_shape callback returned %d", MML_ERANGE);
    ck_assert_msg(strstr(mml_ctx_last_error(ctx), expect), "%s", mml_ctx_last_error(ctx));
    o.fail_infer = 0;
    o.fail_create = MML_EIO;
    ck_assert_int_eq(model_opts_create(&m, ctx, "toy", 0, 0, 0, 0.5f, &o), MML_ECALLBACK);
    ck_assert_ptr_null(m);
    snprintf(expect, sizeof expect, "create callback returned %d", MML_EIO);
    ck_assert_msg(strstr(mml_ctx_last_error(ctx), expect), "%s", mml_ctx_last_error(ctx));
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "'toy'"));
    /* What the plug-in said with mml_ctx_set_error stays in the message. */
    o.fail_create = MML_EUNSUPPORTED;
    ck_assert_int_eq(model_opts_create(&m, ctx, "toy", 0, 0, 0, 0.5f, &o), MML_ECALLBACK);
    ck_assert_msg(strstr(mml_ctx_last_error(ctx), "create callback returned") &&
                      strstr(mml_ctx_last_error(ctx), "toy wants no numeric values"),
                  "%s", mml_ctx_last_error(ctx));
    o.fail_create = 3; /* a positive return is an error too */
    ck_assert_int_eq(model_opts_create(&m, ctx, "toy", 0, 0, 0, 0.5f, &o), MML_ECALLBACK);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "not 0 or a negative code"));
    o.fail_create = MML_EIO;
    mml_backbone_config c;
    tiny_config(&c, 0, 0.5f);
    c.options = &o;
    mml_backbone *bb = NULL;
    ck_assert_int_eq(mml_backbone_create(&bb, ctx, "toy", &c), MML_ECALLBACK);
    ck_assert_ptr_null(bb);
    o.fail_create = 0;
    /* forward and backward, through the model */
    fixture fx = {0};
    fx.ctx = ctx;
    make_batch(&fx, 4, 0, 1);
    fx.model = tiny_model(ctx, "toy", 0, 0, 0, 0.5f, &o);
    toy *t = NULL;
    mml_param *w = find_param(fx.model, "toy.w");
    ck_assert_ptr_nonnull(w);
    t = (toy *)(void *)((char *)w - offsetof(toy, w));
    ck_assert_int_eq(fx_grad(&fx), MML_OK);
    t->opt.fail_forward = MML_ENOTFOUND;
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits),
                     MML_ECALLBACK);
    snprintf(expect, sizeof expect, "forward callback returned %d", MML_ENOTFOUND);
    ck_assert_msg(strstr(mml_ctx_last_error(ctx), expect), "%s", mml_ctx_last_error(ctx));
    /* A failed forward leaves nothing to go back on. */
    ck_assert_int_eq(mml_model_backward(fx.model, fx.dlogits), MML_ESTATE);
    t->opt.fail_forward = 0;
    t->opt.fail_backward = MML_ESHAPE;
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits), MML_OK);
    ck_assert_int_eq(mml_model_backward(fx.model, fx.dlogits), MML_ECALLBACK);
    snprintf(expect, sizeof expect, "backward callback returned %d", MML_ESHAPE);
    ck_assert_msg(strstr(mml_ctx_last_error(ctx), expect), "%s", mml_ctx_last_error(ctx));
    t->opt.fail_backward = 0;
    t->opt.nan_logit = 1;
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits),
                     MML_ENONFINITE);
    t->opt.nan_logit = 0;
    ck_assert_int_eq(fx_grad(&fx), MML_OK);
    mml_model_destroy(fx.model);
    ck_assert_int_eq(destroyed, 1);
    /* A table that lies about its parameters is refused at creation, not used. */
    int bad_index = 0;
    o.bad_index = &bad_index;
    o.null_param = 1;
    ck_assert_int_eq(model_opts_create(&m, ctx, "toy", 0, 0, 0, 0.5f, &o), MML_ECALLBACK);
    ck_assert_ptr_null(m);
    o.null_param = 0;
    o.bad_count = 1;
    ck_assert_int_eq(model_opts_create(&m, ctx, "toy", 0, 0, 0, 0.5f, &o), MML_ECALLBACK);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(mml_backbone_create(&bb, ctx, "toy", &c), MML_ECALLBACK);
    ck_assert_ptr_null(bb);
    o.bad_count = 0;
    ck_assert_int_eq(destroyed, 4);
    /* The library never asks for a parameter outside [0, n_params). */
    ck_assert_int_eq(mml_backbone_create(&bb, ctx, "toy", &c), MML_OK);
    ck_assert_ptr_null(mml_backbone_param(bb, 1));
    ck_assert_ptr_null(mml_backbone_param(bb, -1));
    ck_assert_ptr_nonnull(mml_backbone_param(bb, 0));
    ck_assert_int_eq(bad_index, 0);
    /* Optional callbacks absent: no experts, pattern 0, replay is a no-op. */
    ck_assert_ptr_null(mml_backbone_experts(bb));
    ck_assert_int_eq(mml_backbone_kink_pattern(bb), 0);
    ck_assert_int_eq(mml_backbone_set_dropout_replay(bb, 1), MML_OK);
    ck_assert_int_eq(mml_backbone_linear_term(bb), 0);
    mml_backbone_destroy(bb);
    ck_assert_int_eq(destroyed, 5);
    free_batch(&fx);
    mml_ctx_destroy(ctx);
    ck_assert_int_eq(a.live, 0);
}
END_TEST

START_TEST(registry_belongs_to_its_context)
{
    mml_ctx *c1 = plain_ctx(1, 1), *c2 = plain_ctx(1, 1);
    ck_assert_int_eq(register_toy(c1, "toy"), MML_OK);
    ck_assert(mml_backbone_known(c1, "toy"));
    ck_assert(!mml_backbone_known(c2, "toy"));
    ck_assert(!mml_backbone_known(NULL, "toy"));
    mml_model *m = NULL;
    ck_assert_int_eq(model_opts_create(&m, c2, "toy", 0, 0, 0, 0.5f, NULL), MML_ENOTFOUND);
    /* The other context may use the name for its own table. */
    ck_assert_int_eq(register_toy(c2, "toy"), MML_OK);
    m = tiny_model(c2, "toy", 0, 0, 0, 0.5f, NULL);
    mml_model_destroy(m);
    mml_ctx_destroy(c1);
    mml_ctx_destroy(c2);
}
END_TEST

START_TEST(registry_grows_and_is_freed)
{
    counting_allocator a;
    mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
    long base = a.live;
    char names[11][8];
    for (int i = 0; i < 11; i++) {
        snprintf(names[i], sizeof names[i], "toy_%d", i);
        mml_backbone_vtable vt = toy_table(names[i]);
        vt.linear_term = i % 2;
        ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_OK);
        for (int j = 0; j <= i; j++)
            ck_assert(mml_backbone_known(ctx, names[j]));
        ck_assert(!mml_backbone_known(ctx, "toy_11"));
    }
    ck_assert_int_gt(a.live, base);
    /* The entries survived the moves (4 -> 8 -> 16). */
    fixture fx = {0};
    fx.ctx = ctx;
    make_batch(&fx, 6, NDENSE, 2);
    for (int i = 0; i < 11; i++) {
        fx.model = tiny_model(ctx, names[i], 0, 0, NDENSE, 0.5f, NULL);
        ck_assert_str_eq(mml_backbone_type_name(mml_model_backbone(fx.model)), names[i]);
        ck_assert_int_eq(mml_backbone_linear_term(mml_model_backbone(fx.model)), i % 2);
        ck_assert_int_eq(find_param(fx.model, "numeric.linear") != NULL, i % 2);
        ck_assert_int_eq(fx_grad(&fx), MML_OK);
        mml_model_destroy(fx.model);
    }
    free_batch(&fx);
    mml_ctx_destroy(ctx);
    ck_assert_int_eq(a.live, 0);
    ck_assert_int_eq(a.live_bytes, 0);
}
END_TEST

/* The public checker on a user's backbone: passes, and catches a bug. */
START_TEST(custom_backbone_gradcheck)
{
    for (int bug = 0; bug < 2; bug++) {
        fixture fx = {0};
        fx.ctx = plain_ctx(1, 1);
        mml_backbone_vtable vt = toy_table("toy");
        vt.linear_term = 1;
        ck_assert_int_eq(mml_backbone_register(fx.ctx, &vt, NULL), MML_OK);
        toy_options o = {0};
        o.grad_bug = bug ? 1e-3f : 0.0f;
        fx.model = tiny_model(fx.ctx, "toy", 0, 0, NDENSE, 0.5f, &o);
        randomize_model(fx.model, 1, 0.5f);
        make_batch(&fx, 9, NDENSE, 3);
        mml_param *params[16];
        int64_t np = active_params(fx.model, MML_MIX_NONE, 0, params);
        gc_result g = gradcheck_model(&fx, params, np);
        if (bug) {
            ck_assert_int_eq(g.rc, MML_EGRADIENT);
            ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(fx.ctx), "toy.w"));
        } else {
            ck_assert_msg(g.rc == MML_OK, "%s", mml_ctx_last_error(fx.ctx));
            ck_assert_int_eq(g.rep.checked, g.coords);
        }
        mml_model_destroy(fx.model);
        mml_ctx_destroy(fx.ctx);
        free_batch(&fx);
    }
}
END_TEST

/* ---- bad configurations ---- */

START_TEST(bad_configs_are_refused)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    ck_assert_int_eq(register_toy(ctx, "toy"), MML_OK);
    const char *names[4] = {"mlp", "wdl", "deepfm", "toy"};
    const int32_t zero_width[2] = {8, 0};
    for (int b = 0; b < 4; b++) {
        for (int which = 0; which < 8; which++) {
            mml_model_options o;
            mml_model_options_init(&o);
            o.backbone = names[b];
            o.n_fields = F;
            o.field_sizes = sizes;
            o.n_domains = D;
            o.n_hidden = 2;
            o.hidden = tiny_hidden;
            switch (which) {
            case 0: o.n_hidden = 0; break;
            case 1: o.hidden = NULL; break;
            case 2: o.hidden = zero_width; break;
            case 3: o.dropout = 1.0f; break;
            case 4: o.dropout = -0.1f; break;
            case 5: o.dropout = NAN; break;
            case 6: o.n_dense = -1; break;
            default: o.alpha = 0; break;
            }
            mml_model *m = NULL;
            ck_assert_msg(mml_model_create(&m, ctx, &o) == MML_EINVAL, "%s case %d", names[b],
                          which);
            ck_assert_ptr_null(m);
        }
        /* The same through mml_backbone_create. */
        for (int which = 0; which < 9; which++) {
            mml_backbone_config c;
            tiny_config(&c, D, 0.5f);
            int expect = MML_EINVAL;
            switch (which) {
            case 0: c.n_hidden = 0; break;
            case 1: c.dropout = 1.0f; break;
            case 2: c.n_dense = -1; break;
            case 3: c.n_fields = 0; break;
            case 4: c.embed_dim = 0; break;
            case 5: c.n_domains = 0; break;
            case 6: c.n_experts = -1; break;
            case 7: c.hidden = NULL; break;
            default: c.struct_size = 0; expect = MML_EVERSION; break;
            }
            mml_backbone *bb = (mml_backbone *)&c; /* must be reset */
            ck_assert_msg(mml_backbone_create(&bb, ctx, names[b], &c) == expect, "%s case %d",
                          names[b], which);
            ck_assert_ptr_null(bb);
        }
    }
    mml_backbone_config c;
    tiny_config(&c, 0, 0.5f);
    mml_backbone *bb = NULL;
    ck_assert_int_eq(mml_backbone_create(&bb, ctx, "nope", &c), MML_ENOTFOUND);
    ck_assert_int_eq(mml_backbone_create(&bb, ctx, NULL, &c), MML_EINVAL);
    ck_assert_int_eq(mml_backbone_create(&bb, ctx, "mlp", NULL), MML_EINVAL);
    ck_assert_int_eq(mml_backbone_create(&bb, NULL, "mlp", &c), MML_EINVAL);
    ck_assert_int_eq(mml_backbone_create(NULL, ctx, "mlp", &c), MML_EINVAL);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---- allocation failures ---- */

/* Registering five tables (the fifth grows the registry) with the Nth allocation failing. */
START_TEST(register_allocation_failures)
{
    counting_allocator a;
    long total = -1;
    for (long n = 0;; n++) {
        mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
        ck_assert_ptr_nonnull(ctx);
        a.fail_at = n ? a.calls + n : 0;
        char name[8];
        int rc = MML_OK, done = 0;
        for (; done < 5; done++) {
            snprintf(name, sizeof name, "toy_%d", done);
            if ((rc = register_toy(ctx, name)) < 0)
                break;
        }
        /* A failed registration leaves the registry as it was. */
        for (int i = 0; i < 5; i++) {
            snprintf(name, sizeof name, "toy_%d", i);
            ck_assert_int_eq(mml_backbone_known(ctx, name), i < done);
        }
        if (rc < 0) {
            ck_assert_int_eq(rc, MML_ENOMEM);
            snprintf(name, sizeof name, "toy_%d", done);
            ck_assert_int_eq(register_toy(ctx, name), MML_OK); /* and works again */
        }
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(a.live, 0);
        if (n == 0) {
            ck_assert_int_eq(rc, MML_OK);
            total = a.calls;
            continue;
        }
        ck_assert_msg((rc == MML_ENOMEM) == (a.fail_at <= total), "n=%ld rc=%d", n, rc);
        if (a.fail_at > total)
            break;
    }
    ck_assert_int_ge(total, 2);
}
END_TEST

/* Creating a model and one training step, with the Nth allocation failing. */
START_TEST(model_allocation_failures)
{
    const char *names[4] = {"mlp", "wdl", "deepfm", "toy"};
    counting_allocator a;
    long total = -1;
    for (long n = 0;; n++) {
        mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
        ck_assert_ptr_nonnull(ctx);
        if (_i == 3)
            ck_assert_int_eq(register_toy(ctx, "toy"), MML_OK);
        a.fail_at = n ? a.calls + n : 0;
        fixture fx = {0};
        fx.ctx = ctx;
        make_batch(&fx, 9, NDENSE, 1);
        mml_model *m = NULL;
        int rc = model_opts_create(&m, ctx, names[_i], D, 1, NDENSE, 0.5f, NULL);
        if (rc == MML_OK) {
            fx.model = m;
            fx.mode = MML_MIX_GATED;
            rc = fx_grad(&fx);
        }
        if (rc == MML_OK) {
            fx.mode = MML_MIX_DOMAIN;
            rc = fx_grad(&fx);
        }
        mml_model_destroy(m);
        free_batch(&fx);
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(a.live, 0);
        if (n == 0) {
            ck_assert_int_eq(rc, MML_OK);
            total = a.calls;
            continue;
        }
        ck_assert_msg((rc == MML_ENOMEM) == (a.fail_at <= total), "%s n=%ld rc=%d", names[_i], n,
                      rc);
        if (a.fail_at > total)
            break;
    }
    ck_assert_int_gt(total, 10);
}
END_TEST

static Suite *backbone_suite(void)
{
    Suite *s = suite_create("backbone");
    TCase *g = tcase_create("gradients");
    tcase_set_timeout(g, 120);
    tcase_add_loop_test(g, gradcheck_every_parameter, 0, 24);
    tcase_add_test(g, gradcheck_catches_a_wrong_gradient);
    tcase_add_loop_test(g, backbone_input_gradients, 0, 3);
    tcase_add_loop_test(g, backward_accumulates, 0, 3);
    tcase_add_test(g, custom_backbone_gradcheck);
    suite_add_tcase(s, g);
    TCase *f = tcase_create("forward");
    tcase_add_loop_test(f, fm_and_linear_terms_match_plain_loops, 0, 2);
    tcase_add_test(f, output_and_parameter_shapes);
    tcase_add_test(f, exactly_one_global_bias);
    tcase_add_test(f, linear_term_only_where_asked);
    tcase_add_test(f, same_seed_same_logits);
    suite_add_tcase(s, f);
    TCase *r = tcase_create("registry");
    tcase_set_timeout(r, 120);
    tcase_add_test(r, builtin_names_are_known);
    tcase_add_test(r, register_refuses_bad_tables);
    tcase_add_test(r, callback_errors_surface);
    tcase_add_test(r, registry_belongs_to_its_context);
    tcase_add_test(r, registry_grows_and_is_freed);
    tcase_add_test(r, bad_configs_are_refused);
    tcase_add_test(r, register_allocation_failures);
    tcase_add_loop_test(r, model_allocation_failures, 0, 4);
    suite_add_tcase(s, r);
    return s;
}

int main(void) { return run_suite(backbone_suite()); }
