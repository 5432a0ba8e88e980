/* Backbones, part 2: NFM, PNN, DCN, AutoInt, xDeepFM, FiBiNET.
 * Gradient checks of whole models in every adapter mode, input gradients of
 * the backbones, forward values against plain double loops, default shapes,
 * option checks and allocation failures. */
#include "internal.h"
#include "backbones.h"
#include "testutil.h"

enum { K = 4, D = 3, MAXF = 4, MAXW = 512 };
static const int64_t sizes3[3] = {11, 7, D};
static const int64_t sizes2[2] = {9, D};
static const int32_t tiny_hidden[2] = {8, 6};

static const char *const names[6] = {"nfm", "pnn", "dcn", "autoint", "xdeepfm", "fibinet"};
static const int32_t modes[4] = {MML_MIX_NONE, MML_MIX_DOMAIN, MML_MIX_GATED, MML_MIX_SINGLE};

/* ---- tiny options of every backbone ---- */

typedef struct tiny_opts {
    mml_nfm_options nfm;
    mml_pnn_options pnn;
    mml_dcn_options dcn;
    mml_autoint_options autoint;
    mml_xdeepfm_options xdeepfm;
    mml_fibinet_options fibinet;
    int32_t cin_sizes[3];
} tiny_opts;

/* variant 0: the tiny shapes; 1: other choices (residual off, no split, ...). */
static void *tiny_options(tiny_opts *o, const char *name, int variant)
{
    mml_nfm_options_init(&o->nfm);
    mml_pnn_options_init(&o->pnn);
    mml_dcn_options_init(&o->dcn);
    mml_autoint_options_init(&o->autoint);
    mml_xdeepfm_options_init(&o->xdeepfm);
    mml_fibinet_options_init(&o->fibinet);
    o->autoint.n_layers = 2;
    o->autoint.n_heads = 2;
    o->autoint.head_dim = 3;
    o->cin_sizes[0] = 4;
    o->cin_sizes[1] = 3; /* the last layer may be odd */
    o->xdeepfm.layer_sizes = o->cin_sizes;
    if (variant) {
        o->dcn.cross_layers = 3;
        o->autoint.n_layers = 1;
        o->autoint.residual = 0;
        o->autoint.n_heads = 3;
        o->autoint.head_dim = 2;
        o->xdeepfm.split_half = 0;
        o->xdeepfm.n_layers = 3;
        o->cin_sizes[0] = 3;
        o->cin_sizes[1] = 2;
        o->cin_sizes[2] = 3;
        o->fibinet.reduction = 1;
    }
    if (!strcmp(name, "nfm"))
        return &o->nfm;
    if (!strcmp(name, "pnn"))
        return &o->pnn;
    if (!strcmp(name, "dcn"))
        return &o->dcn;
    if (!strcmp(name, "autoint"))
        return &o->autoint;
    if (!strcmp(name, "xdeepfm"))
        return &o->xdeepfm;
    return &o->fibinet;
}

/* ---- batches and models ---- */

typedef struct fixture {
    mml_ctx *ctx;
    mml_model *model;
    int32_t F, n_dense;
    const int64_t *sizes;
    int64_t n;
    int32_t *ids, *domain;
    float *labels, *dense, *logits, *dlogits;
    mml_batch_view batch;
    int32_t mode, expert;
} fixture;

#include "model_check.h"

static void make_batch(fixture *fx, int64_t n, uint64_t seed)
{
    int32_t F = fx->F, nd = fx->n_dense;
    mml_rng rng;
    mml__rng_init(&rng, seed, 77);
    fx->n = n;
    fx->ids = malloc(sizeof(int32_t) * (size_t)(n * F));
    fx->domain = malloc(sizeof(int32_t) * (size_t)n);
    fx->labels = malloc(sizeof(float) * (size_t)n);
    fx->logits = malloc(sizeof(float) * (size_t)n);
    fx->dlogits = malloc(sizeof(float) * (size_t)n);
    fx->dense = nd ? malloc(sizeof(float) * (size_t)(n * nd)) : NULL;
    for (int64_t r = 0; r < n; r++) {
        fx->domain[r] = (int32_t)(r % D); /* every domain present */
        for (int32_t f = 0; f < F - 1; f++)
            fx->ids[r * F + f] = (int32_t)mml__rng_below(&rng, (uint64_t)fx->sizes[f]);
        fx->ids[r * F + F - 1] = fx->domain[r]; /* the domain is also a field */
        fx->labels[r] = (float)(mml__rng_below(&rng, 2));
        for (int32_t j = 0; j < nd; j++)
            fx->dense[r * nd + j] = mml__rng_uniform(&rng) - 0.5f;
    }
    mml_batch_view_init(&fx->batch, n, F, fx->ids, nd, fx->dense, fx->domain, fx->labels);
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

/* Moves every value away from its init (uniform in +-scale), so no gradient
 * is trivially zero. Embeddings and side parts get larger values: the SENET
 * and bilinear layers multiply three of them, and small values there would
 * leave gradients below the checker's absolute tolerance. */
static void randomize_params(mml_model *m, uint64_t seed, float scale)
{
    mml_rng rng;
    mml__rng_init(&rng, seed, 5);
    const float emb_scale = 1.0f, side_scale = 1.0f, senet_scale = 2.0f;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        float s = scale;
        if (p->group == MML_GROUP_EMBEDDING && !strstr(p->name, "linear"))
            s = emb_scale;
        else if (!strncmp(p->name, "senet", 5))
            s = senet_scale;
        else if (p->group == MML_GROUP_BACKBONE && strncmp(p->name, "tower", 5) &&
                 strcmp(p->name, "head.w") && strcmp(p->name, "bias"))
            s = side_scale;
        for (int64_t j = 0; j < mml_param_size(p); j++)
            p->value[j] = (mml__rng_uniform(&rng) - 0.5f) * 2.0f * s;
    }
}

static void tiny_model_options(mml_model_options *o, const fixture *fx, const char *backbone,
                               const void *bopt, int32_t n_experts, int gate, float dropout)
{
    mml_model_options_init(o);
    o->backbone = backbone;
    o->backbone_options = bopt;
    o->n_fields = fx->F;
    o->field_sizes = fx->sizes;
    o->embed_dim = K;
    o->n_dense = fx->n_dense;
    o->n_domains = D;
    o->n_experts = n_experts;
    o->gate = gate;
    o->alpha = 2;
    o->n_hidden = 2;
    o->hidden = tiny_hidden;
    o->dropout = dropout;
}

static mml_model *tiny_model(fixture *fx, const char *backbone, const void *bopt, int32_t n_experts,
                             int gate, float dropout)
{
    mml_model_options o;
    tiny_model_options(&o, fx, backbone, bopt, n_experts, gate, dropout);
    mml_model *m = NULL;
    int rc = mml_model_create(&m, fx->ctx, &o);
    ck_assert_msg(rc == MML_OK, "%s: model_create: %s", backbone, mml_ctx_last_error(fx->ctx));
    return m;
}

/* ---- gradient checks of whole models ---- */

/* Whether every parameter has a nonzero gradient and every backbone
 * parameter one of at least 1e-3 somewhere (5 x the checker's atol). */
static int gradients_matter(mml_param *const *params, int64_t np, const char **weak)
{
    for (int64_t i = 0; i < np; i++) {
        double mx = 0;
        for (int64_t j = 0; j < mml_param_size(params[i]); j++)
            mx = fmax(mx, fabs(params[i]->grad[j]));
        if (mx == 0 || (params[i]->group == MML_GROUP_BACKBONE && mx < 1e-3)) {
            if (weak)
                *weak = params[i]->name;
            return 0;
        }
    }
    return 1;
}

static void run_gradcheck(const char *backbone, int variant, int32_t F, int32_t mode,
                          int32_t n_dense)
{
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 3);
    fx.F = F;
    fx.sizes = F == 3 ? sizes3 : sizes2;
    fx.n_dense = n_dense;
    tiny_opts to;
    const void *bopt = tiny_options(&to, backbone, variant);
    int32_t E = mode == MML_MIX_GATED ? 2 * D : D;
    fx.model = tiny_model(&fx, backbone, bopt, E, mode == MML_MIX_GATED, 0.5f);
    fx.mode = mode;
    fx.expert = 1;
    make_batch(&fx, 16, 21);
    /* Fix the dropout masks across the +h/-h evaluations. */
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, mode, fx.expert, 1, fx.logits), MML_OK);
    ck_assert_int_eq(mml_model_set_dropout_replay(fx.model, 1), MML_OK);
    mml_param *params[512];
    ck_assert_int_lt(mml_model_n_params(fx.model), 512);
    int64_t np = active_params(fx.model, mode, fx.expert, params);
    /* Random values where every parameter that takes part has a gradient,
     * and every backbone parameter one well above the absolute tolerance: a
     * single SENET unit (F <= 5) can be off, or nearly so, for every row of a
     * small batch, so another draw is taken then (asserted again below). */
    for (uint64_t seed = 11; seed < 211; seed++) {
        randomize_params(fx.model, seed, 0.5f);
        ck_assert_int_eq(fx_grad(&fx), MML_OK);
        if (gradients_matter(params, np, NULL))
            break;
    }
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.step = 1e-3;
    o.rtol = 1e-2;
    o.atol = 2e-4;
    o.max_coords_per_param = 0; /* every coordinate */
    o.seed = 99;
    mml_gradcheck_report rep;
    int rc = mml_gradcheck(fx.ctx, &o, params, np, fx_grad, fx_loss, &fx, &rep);
    ck_assert_msg(rc == MML_OK, "%s/%d F=%d mode %d: %s (checked %lld, skipped %lld, failed %lld)",
                  backbone, variant, F, mode, mml_ctx_last_error(fx.ctx), (long long)rep.checked,
                  (long long)rep.skipped_kinks, (long long)rep.failed);
    ck_assert_int_gt(rep.checked, 100);
    ck_assert_msg(rep.skipped_kinks <= rep.checked / 20 + 2, "%s mode %d: %lld kinks of %lld",
                  backbone, mode, (long long)rep.skipped_kinks, (long long)rep.checked);
    ck_assert_msg(rep.direction_checked && rep.direction_ok, "%s direction %g vs %g", backbone,
                  rep.direction_analytic, rep.direction_numeric);
    /* No parameter that takes part has a trivially small gradient. */
    ck_assert_int_eq(fx_grad(&fx), MML_OK);
    const char *weak = NULL;
    ck_assert_msg(gradients_matter(params, np, &weak), "%s mode %d: gradient of %s is (nearly) zero",
                  backbone, mode, weak);
    int64_t n_backbone = 0;
    for (int64_t i = 0; i < np; i++)
        n_backbone += params[i]->group == MML_GROUP_BACKBONE;
    ck_assert_int_gt(n_backbone, 5);
    mml_model_destroy(fx.model);
    mml_ctx_destroy(fx.ctx);
    free_batch(&fx);
}

START_TEST(gradcheck_every_backbone_every_mode)
{
    /* _i = backbone * 4 + mode; numeric values on odd backbones */
    int b = _i / 4;
    run_gradcheck(names[b], 0, 3, modes[_i % 4], b % 2 ? 2 : 0);
}
END_TEST

START_TEST(gradcheck_option_variants)
{
    /* residual off, 3 cross layers, CIN without split (odd sizes), R = F */
    run_gradcheck(names[_i], 1, 3, MML_MIX_DOMAIN, 1);
}
END_TEST

START_TEST(gradcheck_fibinet_two_fields)
{
    run_gradcheck("fibinet", 0, 2, modes[_i], _i % 2);
}
END_TEST

/* ---- input gradients (d_emb, d_dense) of the backbones themselves ---- */

typedef struct bb_fixture {
    mml_ctx *ctx;
    mml_backbone *bb;
    int64_t n;
    int32_t F, n_dense, use_demb;
    mml_param emb, dense;
    float *labels, *logits, *dlogits;
    int32_t *domain;
    mml_mix mix;
} bb_fixture;

static int bb_loss(void *user, double *loss, uint64_t *pattern)
{
    bb_fixture *b = user;
    mml_backbone_input in = {sizeof(mml_backbone_input), 1, b->n, b->emb.value, b->dense.value, &b->mix};
    int rc = mml_backbone_forward(b->bb, &in, b->logits);
    if (rc < 0)
        return rc;
    *pattern = mml_backbone_kink_pattern(b->bb);
    return mml_bce_with_logits(b->ctx, b->logits, b->labels, NULL, b->n, loss, NULL);
}

static int bb_grad(void *user)
{
    bb_fixture *b = user;
    for (int64_t i = 0; i < mml_backbone_n_params(b->bb); i++) {
        mml_param *p = mml_backbone_param(b->bb, i);
        memset(p->grad, 0, sizeof(float) * (size_t)mml_param_size(p));
    }
    memset(b->emb.grad, 0, sizeof(float) * (size_t)mml_param_size(&b->emb));
    memset(b->dense.grad, 0, sizeof(float) * (size_t)mml_param_size(&b->dense));
    mml_backbone_input in = {sizeof(mml_backbone_input), 1, b->n, b->emb.value, b->dense.value, &b->mix};
    int rc = mml_backbone_forward(b->bb, &in, b->logits);
    if (rc < 0)
        return rc;
    double loss;
    rc = mml_bce_with_logits(b->ctx, b->logits, b->labels, NULL, b->n, &loss, b->dlogits);
    if (rc < 0)
        return rc;
    mml_backbone_grads g = {sizeof(mml_backbone_grads), 0, b->use_demb ? b->emb.grad : NULL, b->dense.grad, NULL};
    return mml_backbone_backward(b->bb, b->dlogits, &g);
}

START_TEST(input_gradients_of_every_backbone)
{
    const char *name = names[_i];
    bb_fixture b = {0};
    b.ctx = plain_ctx(1, 6);
    b.n = 6;
    b.F = 3;
    b.n_dense = 2;
    tiny_opts to;
    mml_backbone_config c;
    mml_backbone_config_init(&c);
    c.n_fields = b.F;
    c.embed_dim = K;
    c.n_dense = b.n_dense;
    c.n_domains = D;
    c.n_experts = D;
    c.alpha = 2;
    c.n_hidden = 2;
    c.hidden = tiny_hidden;
    c.dropout = 0.5f;
    c.options = tiny_options(&to, name, 0);
    ck_assert_int_eq(mml_backbone_create(&b.bb, b.ctx, name, &c), MML_OK);
    int64_t fk = b.F * K;
    float *ev = malloc(sizeof(float) * (size_t)(b.n * fk)), *eg = calloc((size_t)(b.n * fk), sizeof(float));
    float *dv = malloc(sizeof(float) * (size_t)(b.n * 2)), *dg = calloc((size_t)(b.n * 2), sizeof(float));
    b.emb = (mml_param){"input.emb", ev, eg, b.n, fk, MML_GROUP_EMBEDDING, -1, 0, 0};
    b.dense = (mml_param){"input.dense", dv, dg, b.n, 2, MML_GROUP_EMBEDDING, -1, 0, 0};
    mml_rng rng;
    mml__rng_init(&rng, 4, 1);
    for (int64_t i = 0; i < b.n * fk; i++)
        ev[i] = (mml__rng_uniform(&rng) - 0.5f) * 1.5f;
    for (int64_t i = 0; i < b.n * 2; i++)
        dv[i] = mml__rng_uniform(&rng) - 0.5f;
    b.labels = malloc(sizeof(float) * (size_t)b.n);
    b.logits = malloc(sizeof(float) * (size_t)b.n);
    b.dlogits = malloc(sizeof(float) * (size_t)b.n);
    b.domain = malloc(sizeof(int32_t) * (size_t)b.n);
    for (int64_t r = 0; r < b.n; r++) {
        b.labels[r] = (float)(r % 2);
        b.domain[r] = (int32_t)(r % D);
    }
    mml_mix_init(&b.mix, MML_MIX_DOMAIN, b.n);
    b.mix.domain = b.domain;
    int64_t nb = mml_backbone_n_params(b.bb);
    mml_param **params = malloc(sizeof(mml_param *) * (size_t)(nb + 2));
    for (int64_t i = 0; i < nb; i++) {
        params[i] = mml_backbone_param(b.bb, i);
        for (int64_t j = 0; j < mml_param_size(params[i]); j++)
            params[i]->value[j] = (mml__rng_uniform(&rng) - 0.5f);
    }
    ck_assert_ptr_null(mml_backbone_param(b.bb, nb));
    ck_assert_ptr_null(mml_backbone_param(b.bb, -1));
    params[nb] = &b.emb;
    params[nb + 1] = &b.dense;
    mml_backbone_input in = {sizeof(mml_backbone_input), 1, b.n, ev, dv, &b.mix};
    ck_assert_int_eq(mml_backbone_forward(b.bb, &in, b.logits), MML_OK);
    ck_assert_int_eq(mml_backbone_set_dropout_replay(b.bb, 1), MML_OK);
    b.use_demb = 1;
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.atol = 2e-4;
    mml_gradcheck_report rep;
    int rc = mml_gradcheck(b.ctx, &o, params, nb + 2, bb_grad, bb_loss, &b, &rep);
    ck_assert_msg(rc == MML_OK, "%s: %s", name, mml_ctx_last_error(b.ctx));
    ck_assert_msg(rep.skipped_kinks <= rep.checked / 20 + 2, "%s: %lld kinks of %lld", name,
                  (long long)rep.skipped_kinks, (long long)rep.checked);
    /* Without d_emb the parameter gradients are the same. */
    ck_assert_int_eq(bb_grad(&b), MML_OK);
    float emax = 0, dmax = 0;
    for (int64_t i = 0; i < b.n * fk; i++)
        emax = fmaxf(emax, fabsf(eg[i]));
    for (int64_t i = 0; i < b.n * 2; i++)
        dmax = fmaxf(dmax, fabsf(dg[i]));
    ck_assert_msg(emax > 1e-3f && dmax > 1e-3f, "%s: input gradients %g, %g", name, emax, dmax);
    float **saved = malloc(sizeof(float *) * (size_t)nb);
    for (int64_t i = 0; i < nb; i++) {
        saved[i] = malloc(sizeof(float) * (size_t)mml_param_size(params[i]));
        memcpy(saved[i], params[i]->grad, sizeof(float) * (size_t)mml_param_size(params[i]));
    }
    b.use_demb = 0;
    ck_assert_int_eq(bb_grad(&b), MML_OK);
    for (int64_t i = 0; i < nb; i++) {
        for (int64_t j = 0; j < mml_param_size(params[i]); j++)
            ck_assert_msg(fabsf(saved[i][j] - params[i]->grad[j]) <= 1e-6f * (1 + fabsf(saved[i][j])),
                          "%s: %s[%lld] differs without d_emb", name, params[i]->name, (long long)j);
        free(saved[i]);
    }
    free(saved);
    /* Frozen parameters receive nothing. */
    for (int64_t i = 0; i < nb; i++)
        params[i]->frozen = 1;
    b.use_demb = 1;
    ck_assert_int_eq(bb_grad(&b), MML_OK);
    for (int64_t i = 0; i < nb; i++)
        for (int64_t j = 0; j < mml_param_size(params[i]); j++)
            ck_assert_msg(params[i]->grad[j] == 0.0f, "%s: frozen %s got a gradient", name,
                          params[i]->name);
    /* With everything frozen, backward takes its shortcuts (no parameter
     * gradients): the input gradients must still match finite differences. */
    mml_param *inputs[2] = {&b.emb, &b.dense};
    rc = mml_gradcheck(b.ctx, &o, inputs, 2, bb_grad, bb_loss, &b, &rep);
    ck_assert_msg(rc == MML_OK, "%s, all frozen: %s", name, mml_ctx_last_error(b.ctx));
    ck_assert_int_gt(rep.checked, 0);
    ck_assert_msg(rep.skipped_kinks <= rep.checked / 20 + 2, "%s, all frozen: %lld kinks", name,
                  (long long)rep.skipped_kinks);
    /* Backward before any forward pass is refused. */
    mml_backbone *fresh = NULL;
    ck_assert_int_eq(mml_backbone_create(&fresh, b.ctx, name, &c), MML_OK);
    mml_backbone_grads g = {sizeof(mml_backbone_grads), 0, eg, dg, NULL};
    ck_assert_int_eq(mml_backbone_backward(fresh, b.dlogits, &g), MML_ESTATE);
    mml_backbone_input no_dense = {sizeof(mml_backbone_input), 1, b.n, ev, NULL, &b.mix};
    ck_assert_int_eq(mml_backbone_forward(fresh, &no_dense, b.logits), MML_EINVAL);
    mml_backbone_destroy(fresh);
    free(params);
    mml_backbone_destroy(b.bb);
    mml_ctx_destroy(b.ctx);
    free(ev);
    free(eg);
    free(dv);
    free(dg);
    free(b.labels);
    free(b.logits);
    free(b.dlogits);
    free(b.domain);
}
END_TEST

/* ---- forward values against plain double loops ---- */

static mml_param *model_param(mml_model *m, const char *name)
{
    for (int64_t i = 0; i < mml_model_n_params(m); i++)
        if (!strcmp(mml_model_param(m, i)->name, name))
            return mml_model_param(m, i);
    ck_abort_msg("no model parameter %s", name);
    return NULL;
}

static mml_param *bb_param(mml_model *m, const char *name)
{
    mml_backbone *bb = mml_model_backbone(m);
    for (int64_t i = 0; i < mml_backbone_n_params(bb); i++)
        if (!strcmp(mml_backbone_param(bb, i)->name, name))
            return mml_backbone_param(bb, i);
    ck_abort_msg("no backbone parameter %s", name);
    return NULL;
}

static double relu(double x) { return x > 0 ? x : 0; }

/* The tower (no adapters, no dropout) on x (width din): out has 6 values. */
static void ref_tower(mml_model *m, const double *x, int32_t din, double *out)
{
    double h[8];
    const float *W0 = bb_param(m, "tower.0.W")->value, *b0 = bb_param(m, "tower.0.b")->value;
    const float *W1 = bb_param(m, "tower.1.W")->value, *b1 = bb_param(m, "tower.1.b")->value;
    ck_assert_int_eq(bb_param(m, "tower.0.W")->rows, din);
    for (int j = 0; j < 8; j++) {
        double s = b0[j];
        for (int i = 0; i < din; i++)
            s += x[i] * W0[i * 8 + j];
        h[j] = relu(s);
    }
    for (int j = 0; j < 6; j++) {
        double s = b1[j];
        for (int i = 0; i < 8; i++)
            s += h[i] * W1[i * 6 + j];
        out[j] = relu(s);
    }
}

static double dot_head(const float *w, const double *x, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += w[i] * x[i];
    return s;
}

/* The backbone's logit of one row, from e[F][K] and the numeric values. */
static double ref_backbone(mml_model *m, const char *name, const tiny_opts *to, int F,
                           double e[MAXF][K], const double *dense, int nd)
{
    double x[MAXW], t[6];
    int w = 0;
    int P = F * (F - 1) / 2;
    if (!strcmp(name, "nfm")) {
        for (int c = 0; c < K; c++) {
            double s = 0, q = 0;
            for (int f = 0; f < F; f++) {
                s += e[f][c];
                q += e[f][c] * e[f][c];
            }
            x[w++] = 0.5 * (s * s - q);
        }
        for (int j = 0; j < nd; j++)
            x[w++] = dense[j];
        ref_tower(m, x, w, t);
        return dot_head(bb_param(m, "head.w")->value, t, 6);
    }
    if (!strcmp(name, "pnn")) {
        for (int f = 0; f < F; f++)
            for (int c = 0; c < K; c++)
                x[w++] = e[f][c];
        for (int i = 0; i < F; i++)
            for (int j = i + 1; j < F; j++) {
                double s = 0;
                for (int c = 0; c < K; c++)
                    s += e[i][c] * e[j][c];
                x[w++] = s;
            }
        for (int j = 0; j < nd; j++)
            x[w++] = dense[j];
        ref_tower(m, x, w, t);
        return dot_head(bb_param(m, "head.w")->value, t, 6);
    }
    if (!strcmp(name, "dcn")) {
        for (int f = 0; f < F; f++)
            for (int c = 0; c < K; c++)
                x[w++] = e[f][c];
        for (int j = 0; j < nd; j++)
            x[w++] = dense[j];
        double xl[MAXW], y[MAXW];
        memcpy(xl, x, sizeof(double) * (size_t)w);
        for (int l = 0; l < to->dcn.cross_layers; l++) {
            char wn[32], bn[32];
            snprintf(wn, sizeof wn, "cross.%d.w", l);
            snprintf(bn, sizeof bn, "cross.%d.b", l);
            const float *wv = bb_param(m, wn)->value, *bv = bb_param(m, bn)->value;
            double s = 0;
            for (int j = 0; j < w; j++)
                s += xl[j] * wv[j];
            for (int j = 0; j < w; j++)
                y[j] = x[j] * s + bv[j] + xl[j];
            memcpy(xl, y, sizeof(double) * (size_t)w);
        }
        ref_tower(m, x, w, t);
        const float *hw = bb_param(m, "head.w")->value;
        ck_assert_int_eq(bb_param(m, "head.w")->rows, w + 6);
        return dot_head(hw, xl, w) + dot_head(hw + w, t, 6);
    }
    if (!strcmp(name, "autoint")) {
        int L = to->autoint.n_layers, H = to->autoint.n_heads, hd = to->autoint.head_dim, A = H * hd;
        double X[MAXF][64], Y[MAXF][64];
        int din = K;
        for (int f = 0; f < F; f++)
            for (int c = 0; c < K; c++)
                X[f][c] = e[f][c];
        for (int l = 0; l < L; l++) {
            char nm[4][32];
            const char *kind[4] = {"W_Q", "W_K", "W_V", "W_res"};
            const float *W[4];
            for (int q = 0; q < (to->autoint.residual ? 4 : 3); q++) {
                snprintf(nm[q], sizeof nm[q], "autoint.%d.%s", l, kind[q]);
                W[q] = bb_param(m, nm[q])->value;
            }
            for (int h = 0; h < H; h++) {
                double Q[MAXF][16], Kk[MAXF][16], V[MAXF][16];
                for (int f = 0; f < F; f++)
                    for (int c = 0; c < hd; c++) {
                        Q[f][c] = Kk[f][c] = V[f][c] = 0;
                        for (int i = 0; i < din; i++) {
                            Q[f][c] += X[f][i] * W[0][i * A + h * hd + c];
                            Kk[f][c] += X[f][i] * W[1][i * A + h * hd + c];
                            V[f][c] += X[f][i] * W[2][i * A + h * hd + c];
                        }
                    }
                for (int i = 0; i < F; i++) {
                    double s[MAXF], z = 0;
                    for (int j = 0; j < F; j++) {
                        s[j] = 0;
                        for (int c = 0; c < hd; c++)
                            s[j] += Q[i][c] * Kk[j][c];
                        s[j] = exp(s[j]);
                        z += s[j];
                    }
                    for (int c = 0; c < hd; c++) {
                        double o = 0;
                        for (int j = 0; j < F; j++)
                            o += s[j] / z * V[j][c];
                        Y[i][h * hd + c] = o;
                    }
                }
            }
            for (int f = 0; f < F; f++)
                for (int c = 0; c < A; c++) {
                    double r = Y[f][c];
                    if (to->autoint.residual)
                        for (int i = 0; i < din; i++)
                            r += X[f][i] * W[3][i * A + c];
                    Y[f][c] = relu(r);
                }
            memcpy(X, Y, sizeof X);
            din = A;
        }
        for (int f = 0; f < F; f++)
            for (int c = 0; c < K; c++)
                x[w++] = e[f][c];
        for (int j = 0; j < nd; j++)
            x[w++] = dense[j];
        ref_tower(m, x, w, t);
        const float *hw = bb_param(m, "head.w")->value;
        double s = 0;
        for (int f = 0; f < F; f++)
            for (int c = 0; c < A; c++)
                s += hw[f * A + c] * X[f][c];
        return s + dot_head(hw + F * A, t, 6);
    }
    if (!strcmp(name, "xdeepfm")) {
        int L = to->xdeepfm.n_layers, split = to->xdeepfm.split_half;
        double Xp[64][K], Xh[64][K];
        int M = F;
        for (int f = 0; f < F; f++)
            for (int c = 0; c < K; c++)
                Xp[f][c] = e[f][c];
        const float *ch = bb_param(m, "cin.head.w")->value;
        double s = 0;
        int off = 0;
        for (int l = 0; l < L; l++) {
            int H = to->cin_sizes[l];
            char nm[32];
            snprintf(nm, sizeof nm, "cin.%d.W", l);
            const float *W = bb_param(m, nm)->value;
            ck_assert_int_eq(bb_param(m, nm)->rows, M * F);
            for (int mm = 0; mm < H; mm++)
                for (int c = 0; c < K; c++) {
                    double z = 0;
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < F; j++)
                            z += W[(i * F + j) * H + mm] * Xp[i][c] * e[j][c];
                    Xh[mm][c] = relu(z);
                }
            int last = l == L - 1, first_out = split && !last ? H / 2 : 0;
            for (int mm = first_out; mm < H; mm++) {
                double pool = 0;
                for (int c = 0; c < K; c++)
                    pool += Xh[mm][c];
                s += ch[off++] * pool;
            }
            M = split && !last ? H / 2 : H;
            memcpy(Xp, Xh, sizeof Xp);
        }
        ck_assert_int_eq(bb_param(m, "cin.head.w")->rows, off);
        for (int f = 0; f < F; f++)
            for (int c = 0; c < K; c++)
                x[w++] = e[f][c];
        for (int j = 0; j < nd; j++)
            x[w++] = dense[j];
        ref_tower(m, x, w, t);
        return s + dot_head(bb_param(m, "head.w")->value, t, 6);
    }
    /* fibinet */
    int red = to->fibinet.reduction, R = F / red > 1 ? F / red : 1;
    const float *W1 = bb_param(m, "senet.W1")->value, *W2 = bb_param(m, "senet.W2")->value;
    const float *WB = bb_param(m, "bilinear.W")->value, *WS = bb_param(m, "bilinear.W_senet")->value;
    ck_assert_int_eq(bb_param(m, "senet.W1")->cols, R);
    double z[MAXF], a1[MAXF], a[MAXF], v[MAXF][K];
    for (int f = 0; f < F; f++) {
        z[f] = 0;
        for (int c = 0; c < K; c++)
            z[f] += e[f][c] / K;
    }
    for (int j = 0; j < R; j++) {
        double s = 0;
        for (int f = 0; f < F; f++)
            s += z[f] * W1[f * R + j];
        a1[j] = relu(s);
    }
    for (int f = 0; f < F; f++) {
        double s = 0;
        for (int j = 0; j < R; j++)
            s += a1[j] * W2[j * F + f];
        a[f] = relu(s);
        for (int c = 0; c < K; c++)
            v[f][c] = a[f] * e[f][c];
    }
    for (int branch = 0; branch < 2; branch++) {
        const float *Wp = branch ? WS : WB;
        int q = 0;
        for (int i = 0; i < F; i++)
            for (int j = i + 1; j < F; j++, q++)
                for (int c = 0; c < K; c++) {
                    double s = 0;
                    for (int u = 0; u < K; u++)
                        s += (branch ? v[i][u] : e[i][u]) * Wp[(q * K + u) * K + c];
                    x[w++] = s * (branch ? v[j][c] : e[j][c]);
                }
        ck_assert_int_eq(q, P);
    }
    for (int j = 0; j < nd; j++)
        x[w++] = dense[j];
    ref_tower(m, x, w, t);
    return dot_head(bb_param(m, "head.w")->value, t, 6);
}

static void check_forward(const char *name, int variant, int32_t F)
{
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 8);
    fx.F = F;
    fx.sizes = F == 3 ? sizes3 : sizes2;
    fx.n_dense = 2;
    tiny_opts to;
    const void *bopt = tiny_options(&to, name, variant);
    fx.model = tiny_model(&fx, name, bopt, 0, 0, 0.5f);
    randomize_params(fx.model, 12, 0.5f);
    make_batch(&fx, 7, 30);
    mml_model *m = fx.model;
    /* Training off: no dropout. */
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_NONE, 0, 0, fx.logits), MML_OK);
    int linear = mml_backbone_linear_term(mml_model_backbone(m));
    const float *bias = model_param(m, "bias")->value;
    for (int64_t r = 0; r < fx.n; r++) {
        double e[MAXF][K], dense[2];
        double lin = bias[0];
        for (int f = 0; f < F; f++) {
            char nm[32];
            snprintf(nm, sizeof nm, "field%d", f);
            const float *tab = model_param(m, nm)->value;
            int32_t id = fx.ids[r * F + f];
            for (int c = 0; c < K; c++)
                e[f][c] = tab[id * K + c];
            if (linear) {
                snprintf(nm, sizeof nm, "field%d.linear", f);
                lin += model_param(m, nm)->value[id];
            }
        }
        for (int j = 0; j < 2; j++) {
            dense[j] = fx.dense[r * 2 + j];
            if (linear)
                lin += model_param(m, "numeric.linear")->value[j] * dense[j];
        }
        double ref = lin + ref_backbone(m, name, &to, F, e, dense, 2);
        ck_assert_msg(fabs(fx.logits[r] - ref) < 1e-4 * (1 + fabs(ref)), "%s/%d row %lld: %g vs %g",
                      name, variant, (long long)r, fx.logits[r], ref);
    }
    mml_model_destroy(m);
    mml_ctx_destroy(fx.ctx);
    free_batch(&fx);
}

START_TEST(forward_matches_plain_loops)
{
    check_forward(names[_i % 6], _i / 6, 3);
}
END_TEST

START_TEST(forward_fibinet_two_fields)
{
    check_forward("fibinet", 0, 2);
    check_forward("pnn", 0, 2);
}
END_TEST

/* ---- defaults: the METHOD.md hyper-parameters ---- */

static mml_backbone *default_backbone(mml_ctx *ctx, const char *name, int32_t F, int32_t E,
                                      const void *opt)
{
    mml_backbone_config c;
    mml_backbone_config_init(&c); /* tower 256, 128, 64; alpha 16 */
    c.n_fields = F;
    c.embed_dim = 8;
    c.n_domains = D;
    c.n_experts = E;
    c.options = opt;
    mml_backbone *bb = NULL;
    int rc = mml_backbone_create(&bb, ctx, name, &c);
    ck_assert_msg(rc == MML_OK, "%s: %s", name, mml_ctx_last_error(ctx));
    /* infer_shape agrees with the parameters. */
    const mml_backbone_vtable *vt = !strcmp(name, "nfm")       ? &mml__backbone_nfm
                                    : !strcmp(name, "pnn")     ? &mml__backbone_pnn
                                    : !strcmp(name, "dcn")     ? &mml__backbone_dcn
                                    : !strcmp(name, "autoint") ? &mml__backbone_autoint
                                    : !strcmp(name, "xdeepfm") ? &mml__backbone_xdeepfm
                                                               : &mml__backbone_fibinet;
    int64_t n_values = -1, total = 0;
    ck_assert_int_eq(vt->infer_shape(NULL, NULL, &c, &n_values), MML_OK);
    for (int64_t i = 0; i < mml_backbone_n_params(bb); i++) {
        mml_param *p = mml_backbone_param(bb, i);
        total += mml_param_size(p);
        ck_assert_int_eq(p->group, p->expert >= 0 ? MML_GROUP_EXPERT : MML_GROUP_BACKBONE);
    }
    ck_assert_int_eq(n_values, total);
    return bb;
}

static mml_param *find_bb(mml_backbone *bb, const char *name)
{
    for (int64_t i = 0; i < mml_backbone_n_params(bb); i++)
        if (!strcmp(mml_backbone_param(bb, i)->name, name))
            return mml_backbone_param(bb, i);
    ck_abort_msg("no parameter %s", name);
    return NULL;
}

static void assert_shape(mml_backbone *bb, const char *name, int64_t rows, int64_t cols)
{
    mml_param *p = find_bb(bb, name);
    ck_assert_msg(p->rows == rows && p->cols == cols, "%s is %lld x %lld, expected %lld x %lld",
                  name, (long long)p->rows, (long long)p->cols, (long long)rows, (long long)cols);
}

static void assert_glorot(mml_backbone *bb, const char *name, double fan_in, double fan_out)
{
    mml_param *p = find_bb(bb, name);
    double limit = sqrt(6.0 / (fan_in + fan_out)), mx = 0;
    for (int64_t i = 0; i < mml_param_size(p); i++)
        mx = fmax(mx, fabs(p->value[i]));
    ck_assert_msg(mx <= limit && (mml_param_size(p) < 50 || mx > 0.8 * limit),
                  "%s: max |value| %g, glorot limit %g", name, mx, limit);
}

START_TEST(defaults_follow_the_method)
{
    mml_ctx *ctx = plain_ctx(1, 2);
    const int32_t F = 3, k = 8;
    /* Names and linear terms. */
    static const int32_t linear[6] = {1, 0, 1, 1, 1, 1};
    for (int b = 0; b < 6; b++) {
        int found = 0;
        for (int32_t i = 0; mml_backbone_builtin_name(i); i++)
            found += !strcmp(mml_backbone_builtin_name(i), names[b]);
        ck_assert_int_eq(found, 1);
        ck_assert(mml_backbone_known(ctx, names[b]));
        for (int32_t E = 0; E <= D; E += D) {
            mml_backbone *bb = default_backbone(ctx, names[b], F, E, NULL);
            ck_assert_int_eq(mml_backbone_linear_term(bb), linear[b]);
            ck_assert_str_eq(mml_backbone_type_name(bb), names[b]);
            ck_assert(E == 0 ? mml_backbone_experts(bb) == NULL : mml_backbone_experts(bb) != NULL);
            mml_backbone_destroy(bb);
        }
    }
    mml_backbone *bb = default_backbone(ctx, "nfm", F, D, NULL);
    assert_shape(bb, "tower.0.W", k, 256);
    ck_assert_int_eq(mml_lora_rank(mml_backbone_experts(bb), 0), k); /* capped by the input */
    assert_shape(bb, "head.w", 64, 1);
    mml_backbone_destroy(bb);
    bb = default_backbone(ctx, "pnn", F, 0, NULL);
    assert_shape(bb, "tower.0.W", F * k + 3, 256);
    mml_backbone_destroy(bb);
    bb = default_backbone(ctx, "dcn", F, 0, NULL);
    assert_shape(bb, "cross.0.w", F * k, 1);
    assert_shape(bb, "cross.1.b", F * k, 1);
    assert_shape(bb, "head.w", F * k + 64, 1);
    assert_glorot(bb, "cross.1.w", F * k, 1);
    for (int i = 0; i < F * k; i++)
        ck_assert(find_bb(bb, "cross.0.b")->value[i] == 0.0f);
    ck_assert_int_eq(mml_backbone_n_params(bb), 6 + 5);
    mml_backbone_destroy(bb);
    bb = default_backbone(ctx, "autoint", F, 0, NULL);
    assert_shape(bb, "autoint.0.W_Q", k, 32);
    assert_shape(bb, "autoint.0.W_res", k, 32);
    assert_shape(bb, "autoint.2.W_V", 32, 32);
    assert_shape(bb, "autoint.2.W_res", 32, 32);
    assert_shape(bb, "head.w", F * 32 + 64, 1);
    assert_glorot(bb, "autoint.1.W_K", 32, 8);
    assert_glorot(bb, "autoint.1.W_res", 32, 32);
    ck_assert_int_eq(mml_backbone_n_params(bb), 6 + 12 + 1);
    mml_backbone_destroy(bb);
    bb = default_backbone(ctx, "xdeepfm", F, 0, NULL);
    assert_shape(bb, "cin.0.W", F * F, 128);
    assert_shape(bb, "cin.1.W", 64 * F, 128);
    assert_shape(bb, "cin.head.w", 64 + 128, 1);
    assert_shape(bb, "head.w", 64, 1);
    assert_glorot(bb, "cin.1.W", 64 * F, 128);
    mml_backbone_destroy(bb);
    bb = default_backbone(ctx, "fibinet", F, 0, NULL);
    assert_shape(bb, "senet.W1", F, 1);
    assert_shape(bb, "senet.W2", 1, F);
    assert_shape(bb, "bilinear.W", 3 * k, k);
    assert_shape(bb, "bilinear.W_senet", 3 * k, k);
    assert_shape(bb, "tower.0.W", 2 * 3 * k, 256);
    assert_glorot(bb, "bilinear.W", k, k);
    mml_backbone_destroy(bb);
    bb = default_backbone(ctx, "fibinet", 7, 0, NULL);
    assert_shape(bb, "senet.W1", 7, 2);
    assert_shape(bb, "bilinear.W", 21 * k, k);
    mml_backbone_destroy(bb);
    bb = default_backbone(ctx, "fibinet", 2, D, NULL);
    assert_shape(bb, "senet.W1", 2, 1);
    assert_shape(bb, "bilinear.W", k, k);
    mml_backbone_destroy(bb);
    /* Option variants agree with infer_shape too. */
    tiny_opts to;
    for (int b = 0; b < 6; b++)
        for (int variant = 0; variant < 2; variant++)
            mml_backbone_destroy(default_backbone(ctx, names[b], F, D, tiny_options(&to, names[b], variant)));
    /* Same seed, same init; the side parts have their own streams. */
    mml_backbone *b1 = default_backbone(ctx, "dcn", F, 0, NULL), *b2 = default_backbone(ctx, "dcn", F, 0, NULL);
    ck_assert_int_eq(memcmp(find_bb(b1, "cross.0.w")->value, find_bb(b2, "cross.0.w")->value,
                            sizeof(float) * F * k), 0);
    ck_assert_int_ne(memcmp(find_bb(b1, "cross.0.w")->value, find_bb(b1, "cross.1.w")->value,
                            sizeof(float) * F * k), 0);
    mml_backbone_destroy(b1);
    mml_backbone_destroy(b2);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---- options that are refused ---- */

static int create_with(mml_ctx *ctx, const char *name, int32_t F, const void *opt)
{
    mml_backbone_config c;
    mml_backbone_config_init(&c);
    c.n_fields = F;
    c.embed_dim = 4;
    c.n_domains = D;
    c.n_hidden = 2;
    c.hidden = tiny_hidden;
    c.options = opt;
    mml_backbone *bb = NULL;
    int rc = mml_backbone_create(&bb, ctx, name, &c);
    ck_assert(rc == MML_OK ? bb != NULL : bb == NULL);
    mml_backbone_destroy(bb);
    return rc;
}

START_TEST(bad_options_are_refused)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    tiny_opts to;
    /* Odd CIN sizes with split-half: refused, naming the layer. */
    mml_xdeepfm_options xo;
    mml_xdeepfm_options_init(&xo);
    int32_t sizes[3] = {5, 4, 3};
    xo.layer_sizes = sizes;
    ck_assert_int_eq(create_with(ctx, "xdeepfm", 3, &xo), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "CIN layer 0 has an odd size 5"));
    sizes[0] = 4;
    sizes[1] = 7;
    xo.n_layers = 3;
    ck_assert_int_eq(create_with(ctx, "xdeepfm", 3, &xo), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "CIN layer 1 has an odd size 7"));
    sizes[1] = 6; /* 4, 6, 3: only the last is odd */
    ck_assert_int_eq(create_with(ctx, "xdeepfm", 3, &xo), MML_OK);
    sizes[1] = 7;
    xo.split_half = 0; /* without split-half odd sizes are fine */
    ck_assert_int_eq(create_with(ctx, "xdeepfm", 3, &xo), MML_OK);
    sizes[1] = 0;
    ck_assert_int_eq(create_with(ctx, "xdeepfm", 3, &xo), MML_EINVAL);
    xo.n_layers = 0;
    ck_assert_int_eq(create_with(ctx, "xdeepfm", 3, &xo), MML_EINVAL);
    /* NULL sizes: 128 per layer. */
    xo.n_layers = 3;
    xo.layer_sizes = NULL;
    xo.split_half = 1;
    ck_assert_int_eq(create_with(ctx, "xdeepfm", 3, &xo), MML_OK);
    /* The same through a model. */
    fixture fx = {0};
    fx.ctx = ctx;
    fx.F = 3;
    fx.sizes = sizes3;
    mml_model_options mo;
    xo.layer_sizes = sizes;
    sizes[0] = 3;
    tiny_model_options(&mo, &fx, "xdeepfm", &xo, D, 1, 0.5f);
    mml_model *m = NULL;
    ck_assert_int_eq(mml_model_create(&m, ctx, &mo), MML_EINVAL);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "layer 0"));
    /* A struct_size the library does not know. */
    for (int b = 0; b < 6; b++) {
        void *opt = tiny_options(&to, names[b], 0);
        uint32_t good;
        memcpy(&good, opt, sizeof good);
        uint32_t bad[2] = {0, good + 4};
        for (int i = 0; i < 2; i++) {
            memcpy(opt, &bad[i], sizeof bad[i]);
            ck_assert_int_eq(create_with(ctx, names[b], 3, opt), MML_EVERSION);
            ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), names[b]));
            tiny_model_options(&mo, &fx, names[b], opt, 0, 0, 0.5f);
            ck_assert_int_eq(mml_model_create(&m, ctx, &mo), MML_EVERSION);
        }
        memcpy(opt, &good, sizeof good);
        ck_assert_int_eq(create_with(ctx, names[b], 3, opt), MML_OK);
        /* A size that no release produced is refused. */
        uint32_t odd = 6;
        memcpy(opt, &odd, sizeof odd);
        ck_assert_int_eq(create_with(ctx, names[b], 3, opt), MML_EVERSION);
    }
    /* Other values out of range. */
    mml_dcn_options dco;
    mml_dcn_options_init(&dco);
    dco.cross_layers = 0;
    ck_assert_int_eq(create_with(ctx, "dcn", 3, &dco), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "cross_layers"));
    mml_autoint_options ao;
    mml_autoint_options_init(&ao);
    ao.n_heads = 0;
    ck_assert_int_eq(create_with(ctx, "autoint", 3, &ao), MML_EINVAL);
    mml_autoint_options_init(&ao);
    ao.n_layers = 0;
    ck_assert_int_eq(create_with(ctx, "autoint", 3, &ao), MML_EINVAL);
    mml_fibinet_options fo;
    mml_fibinet_options_init(&fo);
    fo.reduction = 0;
    ck_assert_int_eq(create_with(ctx, "fibinet", 3, &fo), MML_EINVAL);
    ck_assert_int_eq(create_with(ctx, "fibinet", 1, NULL), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "at least 2 fields"));
    ck_assert_int_eq(create_with(ctx, "fibinet", 600, NULL), MML_EINVAL); /* 1.4M wide */
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "tower input"));
    fo.reduction = 100; /* R = max(1, 0) */
    ck_assert_int_eq(create_with(ctx, "fibinet", 2, &fo), MML_OK);
    /* Defaults of the option structs. */
    ck_assert_int_eq(dco.struct_size, sizeof dco);
    mml_dcn_options_init(&dco);
    ck_assert_int_eq(dco.cross_layers, 2);
    mml_autoint_options_init(&ao);
    ck_assert(ao.n_layers == 3 && ao.n_heads == 4 && ao.head_dim == 8 && ao.residual == 1);
    mml_xdeepfm_options_init(&xo);
    ck_assert(xo.n_layers == 2 && xo.layer_sizes[0] == 128 && xo.layer_sizes[1] == 128 &&
              xo.split_half == 1);
    mml_fibinet_options_init(&fo);
    ck_assert_int_eq(fo.reduction, 3);
    mml_nfm_options_init(NULL);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---- allocation failures ---- */

START_TEST(allocation_failures_leak_nothing)
{
    const char *name = names[_i];
    counting_allocator a;
    long total = -1;
    for (long n = 0;; n++) {
        mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
        ck_assert_ptr_nonnull(ctx);
        a.fail_at = n ? a.calls + n : 0;
        fixture fx = {0};
        fx.ctx = ctx;
        fx.F = 3;
        fx.sizes = sizes3;
        fx.n_dense = 1;
        make_batch(&fx, 9, 1);
        tiny_opts to;
        mml_model_options o;
        tiny_model_options(&o, &fx, name, tiny_options(&to, name, 0), D, 1, 0.5f);
        mml_model *m = NULL;
        int rc = mml_model_create(&m, ctx, &o);
        if (rc == MML_OK) {
            fx.model = m;
            fx.mode = MML_MIX_GATED;
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
        ck_assert_msg(rc == MML_ENOMEM || a.calls < a.fail_at, "%s n=%ld rc=%d", name, n, rc);
        if (a.fail_at > total)
            break;
    }
    ck_assert_int_gt(total, 20);
}
END_TEST

static Suite *backbones2_suite(void)
{
    Suite *s = suite_create("backbones2");
    TCase *g = tcase_create("gradients");
    tcase_set_timeout(g, 300);
    tcase_add_loop_test(g, gradcheck_every_backbone_every_mode, 0, 24);
    tcase_add_loop_test(g, gradcheck_option_variants, 0, 6);
    tcase_add_loop_test(g, gradcheck_fibinet_two_fields, 0, 4);
    tcase_add_loop_test(g, input_gradients_of_every_backbone, 0, 6);
    suite_add_tcase(s, g);
    TCase *t = tcase_create("backbones");
    tcase_set_timeout(t, 120);
    tcase_add_loop_test(t, forward_matches_plain_loops, 0, 12);
    tcase_add_test(t, forward_fibinet_two_fields);
    tcase_add_test(t, defaults_follow_the_method);
    tcase_add_test(t, bad_options_are_refused);
    tcase_add_loop_test(t, allocation_failures_leak_nothing, 0, 6);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return run_suite(backbones2_suite()); }
