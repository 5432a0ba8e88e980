/* Core layers: embeddings, tower, LoRA experts, gate, model composition,
 * gradient checks in every adapter mode, freezing, dropout, bad input. */
#include "internal.h"
#include "testutil.h"

enum { F = 3, K = 4, D = 3 };
static const int64_t sizes[F] = {11, 7, D};
static const int32_t tiny_hidden[2] = {8, 6};

typedef struct fixture {
    mml_ctx *ctx;
    mml_model *model;
    int64_t n;
    int32_t *ids, *domain;
    float *labels, *dense, *logits, *dlogits;
    mml_batch_view batch;
    int32_t mode, expert;
} fixture;

#include "model_check.h"

static void make_batch(fixture *fx, int64_t n, int32_t n_dense, uint64_t seed)
{
    mml_rng rng;
    mml__rng_init(&rng, seed, 77);
    fx->n = n;
    fx->ids = malloc(sizeof(int32_t) * (size_t)(n * F));
    fx->domain = malloc(sizeof(int32_t) * (size_t)n);
    fx->labels = malloc(sizeof(float) * (size_t)n);
    fx->logits = malloc(sizeof(float) * (size_t)n);
    fx->dlogits = malloc(sizeof(float) * (size_t)n);
    fx->dense = n_dense ? malloc(sizeof(float) * (size_t)(n * n_dense)) : NULL;
    for (int64_t r = 0; r < n; r++) {
        fx->domain[r] = (int32_t)mml__rng_below(&rng, D);
        for (int32_t f = 0; f < F - 1; f++)
            fx->ids[r * F + f] = (int32_t)mml__rng_below(&rng, (uint64_t)sizes[f]);
        fx->ids[r * F + F - 1] = fx->domain[r]; /* the domain is also a field */
        fx->labels[r] = (float)(mml__rng_below(&rng, 2));
        for (int32_t j = 0; j < n_dense; j++)
            fx->dense[r * n_dense + j] = mml__rng_uniform(&rng) - 0.5f;
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

/* Moves every value away from its init (B and c start at zero, and first-order
 * weights too), so no gradient is trivially zero. */
static void randomize_params(mml_model *m, uint64_t seed, float scale)
{
    mml_rng rng;
    mml__rng_init(&rng, seed, 5);
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        for (int64_t j = 0; j < mml_param_size(p); j++)
            p->value[j] = (mml__rng_uniform(&rng) - 0.5f) * 2.0f * scale;
    }
}

static mml_model *tiny_model(mml_ctx *ctx, const char *backbone, int32_t n_experts, int gate,
                             int32_t n_dense, float dropout)
{
    mml_model_options o;
    mml_model_options_init(&o);
    o.backbone = backbone;
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
    mml_model *m = NULL;
    int rc = mml_model_create(&m, ctx, &o);
    ck_assert_msg(rc == MML_OK, "model_create: %s", mml_ctx_last_error(ctx));
    return m;
}

/* A large batch crosses some ReLU kink along any direction; their effect on a
 * central difference is second order, so compare g.d with the difference
 * quotient anyway, at a looser tolerance. */
static void check_direction_across_kinks(fixture *fx, mml_param **params, int64_t np)
{
    ck_assert_int_eq(fx_grad(fx), MML_OK);
    mml_rng rng;
    mml__rng_init(&rng, 5, 9);
    double norm = 0, analytic = 0;
    float **dir = malloc(sizeof(float *) * (size_t)np);
    float **v0 = malloc(sizeof(float *) * (size_t)np);
    for (int64_t i = 0; i < np; i++) {
        int64_t n = mml_param_size(params[i]);
        dir[i] = malloc(sizeof(float) * (size_t)n);
        v0[i] = malloc(sizeof(float) * (size_t)n);
        memcpy(v0[i], params[i]->value, sizeof(float) * (size_t)n);
        for (int64_t j = 0; j < n; j++) {
            dir[i][j] = (float)mml__rng_normal(&rng);
            norm += (double)dir[i][j] * dir[i][j];
        }
    }
    norm = sqrt(norm);
    for (int64_t i = 0; i < np; i++)
        for (int64_t j = 0; j < mml_param_size(params[i]); j++) {
            dir[i][j] = (float)(dir[i][j] / norm);
            analytic += (double)dir[i][j] * params[i]->grad[j];
        }
    const double h = 1e-3;
    double loss[2];
    for (int side = 0; side < 2; side++) {
        for (int64_t i = 0; i < np; i++)
            for (int64_t j = 0; j < mml_param_size(params[i]); j++)
                params[i]->value[j] = v0[i][j] + (float)((side ? -h : h) * dir[i][j]);
        uint64_t pattern;
        ck_assert_int_eq(fx_loss(fx, &loss[side], &pattern), MML_OK);
    }
    double numeric = (loss[0] - loss[1]) / (2 * h);
    ck_assert_msg(fabs(analytic - numeric) <= 0.03 * fmax(fabs(analytic), fabs(numeric)) + 1e-5,
                  "direction: analytic %g numeric %g", analytic, numeric);
    for (int64_t i = 0; i < np; i++) {
        memcpy(params[i]->value, v0[i], sizeof(float) * (size_t)mml_param_size(params[i]));
        free(dir[i]);
        free(v0[i]);
    }
    free(dir);
    free(v0);
}

/* Experts of run _i: the per-domain mixture runs one-hot with up to 4
 * experts and routed (rows sorted by expert) with more: loop 4 takes that
 * path with 2 D experts, of which the batch's domains use D. */
static int32_t experts_of(int32_t mode, int i) { return mode == MML_MIX_GATED || i == 4 ? 2 * D : D; }

static void run_gradcheck(const char *backbone, int32_t mode, int32_t E, int64_t n_rows,
                          int64_t sample, int32_t n_dense)
{
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 4);
    fx.model = tiny_model(fx.ctx, backbone, E, mode == MML_MIX_GATED, n_dense, 0.5f);
    fx.mode = mode;
    fx.expert = 1;
    randomize_params(fx.model, 11, 0.5f);
    make_batch(&fx, n_rows, n_dense, 21);
    /* Fix the dropout masks across the +h/-h evaluations. */
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, mode, fx.expert, 1, fx.logits), MML_OK);
    ck_assert_int_eq(mml_model_set_dropout_replay(fx.model, 1), MML_OK);
    mml_param *params[256];
    int64_t np = active_params(fx.model, mode, fx.expert, params);
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    /* Large batches cross ReLU kinks at the slightest step; their mean loss is
     * also less noisy, so a smaller step works there. */
    o.step = n_rows > 64 ? 1e-4 : 1e-3;
    o.rtol = 1e-2;
    o.atol = 2e-4;
    o.max_coords_per_param = sample;
    o.seed = 99;
    mml_gradcheck_report rep;
    int rc = mml_gradcheck(fx.ctx, &o, params, np, fx_grad, fx_loss, &fx, &rep);
    ck_assert_msg(rc == MML_OK, "%s mode %d rows %lld: %s (checked %lld, skipped %lld, failed %lld)",
                  backbone, mode, (long long)n_rows, mml_ctx_last_error(fx.ctx),
                  (long long)rep.checked, (long long)rep.skipped_kinks, (long long)rep.failed);
    ck_assert_int_gt(rep.checked, 0);
    /* A step crosses a ReLU kink of some of 1024 rows x 256 units far more
     * often than of a few rows: measured up to 20% there, never above 5% on
     * the small batches. */
    if (n_rows > 64)
        ck_assert_int_le(rep.skipped_kinks, rep.checked / 4);
    else
        ck_assert_int_le(rep.skipped_kinks, rep.checked / 20 + 2);
    if (n_rows <= 64)
        ck_assert_msg(rep.direction_checked && rep.direction_ok, "direction %g vs %g",
                      rep.direction_analytic, rep.direction_numeric);
    else
        check_direction_across_kinks(&fx, params, np);
    mml_model_destroy(fx.model);
    mml_ctx_destroy(fx.ctx);
    free_batch(&fx);
}

static const int32_t modes[5] = {MML_MIX_NONE, MML_MIX_DOMAIN, MML_MIX_GATED, MML_MIX_SINGLE,
                                 MML_MIX_DOMAIN};

START_TEST(gradcheck_every_coordinate_tiny)
{
    run_gradcheck("mlp", modes[_i], experts_of(modes[_i], _i), 7, 0, 0);
}
END_TEST

START_TEST(gradcheck_sampled_batch_1024)
{
    run_gradcheck("mlp", modes[_i], experts_of(modes[_i], _i), 1024, 12, 0);
}
END_TEST

START_TEST(gradcheck_numeric_fields)
{
    run_gradcheck("wdl", modes[_i], experts_of(modes[_i], _i), 9, 0, 2);
}
END_TEST

/* ---- forward values against plain loops ---- */

static double ref_relu(double x) { return x > 0 ? x : 0; }

/* Reference tower + head in double, with the mixture weights g (n x E, or NULL). */
static void reference_logits(mml_model *m, const fixture *fx, const double *g, int32_t E,
                             int32_t single, double *out)
{
    /* Parameter layout of an mlp model: F embeddings, bias, W0, b0, W1, b1, experts..., head. */
    mml_param *emb[F];
    for (int f = 0; f < F; f++)
        emb[f] = mml_model_param(m, f);
    mml_param *bias = mml_model_param(m, F);
    mml_param *W[2] = {mml_model_param(m, F + 1), mml_model_param(m, F + 3)};
    mml_param *b[2] = {mml_model_param(m, F + 2), mml_model_param(m, F + 4)};
    mml_lora *lora = mml_model_experts(m);
    mml_param *head = mml_model_param(m, F + 5 + mml_lora_n_params(lora));
    ck_assert_str_eq(head->name, "head.w");
    int32_t dims[3] = {F * K, tiny_hidden[0], tiny_hidden[1]};
    for (int64_t r = 0; r < fx->n; r++) {
        double x[64], y[64];
        for (int f = 0; f < F; f++)
            for (int j = 0; j < K; j++)
                x[f * K + j] = emb[f]->value[fx->ids[r * F + f] * K + j];
        for (int l = 0; l < 2; l++) {
            for (int j = 0; j < dims[l + 1]; j++) {
                double s = b[l]->value[j];
                for (int i = 0; i < dims[l]; i++)
                    s += x[i] * W[l]->value[i * dims[l + 1] + j];
                y[j] = s;
            }
            for (int32_t e = 0; lora && e < E; e++) {
                double ge = single >= 0 ? (e == single) : (g ? g[r * E + e] : 0.0);
                if (ge == 0.0)
                    continue;
                mml_param *At = mml_lora_param(lora, ((int64_t)e * 2 + l) * 3);
                mml_param *B = mml_lora_param(lora, ((int64_t)e * 2 + l) * 3 + 1);
                mml_param *c = mml_lora_param(lora, ((int64_t)e * 2 + l) * 3 + 2);
                int64_t rk = At->rows;
                for (int j = 0; j < dims[l + 1]; j++) {
                    double s = c->value[j];
                    for (int64_t t = 0; t < rk; t++) {
                        double u = 0;
                        for (int i = 0; i < dims[l]; i++)
                            u += x[i] * At->value[t * dims[l] + i];
                        s += u * B->value[t * dims[l + 1] + j];
                    }
                    y[j] += ge * s;
                }
            }
            for (int j = 0; j < dims[l + 1]; j++)
                x[j] = ref_relu(y[j]);
        }
        double s = bias->value[0];
        for (int j = 0; j < dims[2]; j++)
            s += x[j] * head->value[j];
        out[r] = s;
    }
}

START_TEST(forward_matches_reference_in_every_mode)
{
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 4);
    const int32_t E = 2 * D;
    fx.model = tiny_model(fx.ctx, "mlp", E, 1, 0, 0.5f);
    randomize_params(fx.model, 12, 0.5f);
    static const int64_t ns[3] = {1, 7, 1024};
    for (int s = 0; s < 3; s++) {
        make_batch(&fx, ns[s], 0, 30 + (uint64_t)s);
        double *ref = malloc(sizeof(double) * (size_t)fx.n);
        double *g = malloc(sizeof(double) * (size_t)(fx.n * E));
        float table[D * 2 * D];
        ck_assert_int_eq(mml_gate_table(mml_model_gate(fx.model), table), MML_OK);
        for (int mi = 0; mi < 4; mi++) {
            int32_t mode = modes[mi], single = -1;
            for (int64_t r = 0; r < fx.n; r++)
                for (int32_t e = 0; e < E; e++)
                    g[r * E + e] = mode == MML_MIX_GATED ? table[fx.domain[r] * E + e]
                                   : mode == MML_MIX_DOMAIN ? (e == fx.domain[r])
                                                            : 0.0;
            if (mode == MML_MIX_SINGLE)
                single = 4;
            reference_logits(fx.model, &fx, mode == MML_MIX_NONE ? NULL : g, E, single, ref);
            ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, mode, 4, 0, fx.logits), MML_OK);
            for (int64_t r = 0; r < fx.n; r++)
                ck_assert_msg(fabs(fx.logits[r] - ref[r]) < 1e-4 * (1 + fabs(ref[r])),
                              "mode %d row %lld: %g vs %g", mode, (long long)r, fx.logits[r], ref[r]);
            /* Prediction is the sigmoid of the inference logits. */
            float *p = malloc(sizeof(float) * (size_t)fx.n);
            ck_assert_int_eq(mml_model_predict(fx.model, &fx.batch, mode, 4, p), MML_OK);
            for (int64_t r = 0; r < fx.n; r++)
                ck_assert(fabs(p[r] - 1.0 / (1.0 + exp(-ref[r]))) < 1e-5);
            free(p);
        }
        free(ref);
        free(g);
        free_batch(&fx);
    }
    mml_model_destroy(fx.model);
    mml_ctx_destroy(fx.ctx);
}
END_TEST

START_TEST(fresh_experts_leave_the_model_unchanged)
{
    /* B = 0 and c = 0 at init: every adapter mode gives the shared model's logits. */
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 4);
    fx.model = tiny_model(fx.ctx, "mlp", D, 1, 0, 0.5f);
    make_batch(&fx, 33, 0, 8);
    float *base = malloc(sizeof(float) * 33);
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_NONE, 0, 0, base), MML_OK);
    for (int mi = 1; mi < 4; mi++) {
        ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, modes[mi], 2, 0, fx.logits), MML_OK);
        for (int r = 0; r < 33; r++)
            ck_assert(fabs(fx.logits[r] - base[r]) < 1e-6);
    }
    free(base);
    mml_model_destroy(fx.model);
    mml_ctx_destroy(fx.ctx);
    free_batch(&fx);
}
END_TEST

START_TEST(lora_ranks_follow_the_rule)
{
    ck_assert_int_eq(mml_lora_rank_for(24, 256, 16), 16);
    ck_assert_int_eq(mml_lora_rank_for(256, 128, 16), 8);
    ck_assert_int_eq(mml_lora_rank_for(128, 64, 16), 4);
    ck_assert_int_eq(mml_lora_rank_for(8, 256, 4), 8);   /* capped by the input width (NFM) */
    ck_assert_int_eq(mml_lora_rank_for(64, 8, 16), 1);   /* at least 1 */
    ck_assert_int_eq(mml_lora_rank_for(64, 8, 0), -1);
    mml_ctx *ctx = plain_ctx(1, 1);
    int32_t dims[4] = {24, 256, 128, 64};
    mml_lora_options o;
    mml_lora_options_init(&o);
    o.n_layers = 3;
    o.dims = dims;
    o.n_experts = 2;
    mml_lora *l = NULL;
    ck_assert_int_eq(mml_lora_create(&l, ctx, &o), MML_OK);
    ck_assert_int_eq(mml_lora_rank(l, 0), 16);
    ck_assert_int_eq(mml_lora_rank(l, 2), 4);
    ck_assert_int_eq(mml_lora_rank(l, 3), -1);
    ck_assert_int_eq(mml_lora_n_params(l), 18);
    /* A glorot-uniform within its limit, B and c zero; each expert its own stream. */
    mml_param *a0 = mml_lora_param(l, 0), *a1 = mml_lora_param(l, 9);
    ck_assert_int_eq(a0->rows, 16);
    ck_assert_int_eq(a0->cols, 24);
    double limit = sqrt(6.0 / (24 + 16));
    int differ = 0;
    for (int64_t i = 0; i < mml_param_size(a0); i++) {
        ck_assert(fabs(a0->value[i]) <= limit);
        differ += a0->value[i] != a1->value[i];
    }
    ck_assert_int_gt(differ, 300);
    for (int64_t i = 0; i < mml_param_size(mml_lora_param(l, 1)); i++)
        ck_assert(mml_lora_param(l, 1)->value[i] == 0.0f);
    ck_assert_int_eq(a1->expert, 1);
    ck_assert_int_eq(a1->group, MML_GROUP_EXPERT);
    ck_assert_ptr_null(mml_lora_param(l, 18));
    /* Expert 1 is the same whether 2 or 5 experts exist: keep a copy of its 9
     * parameters (A_t, B, c of 3 layers) before the 2-expert set goes. */
    float *saved[9];
    int64_t saved_n[9];
    for (int j = 0; j < 9; j++) {
        mml_param *p = mml_lora_param(l, 9 + j);
        saved_n[j] = mml_param_size(p);
        saved[j] = malloc(sizeof(float) * (size_t)saved_n[j]);
        memcpy(saved[j], p->value, sizeof(float) * (size_t)saved_n[j]);
    }
    mml_lora_destroy(l);
    o.n_experts = 5;
    ck_assert_int_eq(mml_lora_create(&l, ctx, &o), MML_OK);
    for (int j = 0; j < 9; j++) {
        mml_param *p = mml_lora_param(l, 9 + j);
        ck_assert_int_eq(p->expert, 1);
        ck_assert_int_eq(mml_param_size(p), saved_n[j]);
        ck_assert_int_eq(memcmp(p->value, saved[j], sizeof(float) * (size_t)saved_n[j]), 0);
        free(saved[j]);
    }
    mml_lora_destroy(l);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(embedding_lookup_and_scatter)
{
    mml_ctx *ctx = plain_ctx(1, 9);
    mml_embedding_options o;
    mml_embedding_options_init(&o);
    o.n_rows = 2000;
    o.dim = 8;
    o.name = "user";
    mml_embedding *e = NULL;
    ck_assert_int_eq(mml_embedding_create(&e, ctx, &o), MML_OK);
    mml_param *p = mml_embedding_param(e);
    double s2 = 0, s = 0;
    for (int64_t i = 0; i < 16000; i++) {
        s += p->value[i];
        s2 += (double)p->value[i] * p->value[i];
    }
    ck_assert(fabs(sqrt(s2 / 16000) - 0.01) < 0.0005);
    ck_assert(fabs(s / 16000) < 0.0005);
    int32_t ids[6] = {3, 0, 3, 1999, 5, 3}; /* stride 2: rows use 3, 3, 5 */
    float out[3 * 10];
    ck_assert_int_eq(mml_embedding_forward(e, ids, 2, 3, out, 10), MML_OK);
    for (int j = 0; j < 8; j++) {
        ck_assert(out[j] == p->value[3 * 8 + j]);
        ck_assert(out[20 + j] == p->value[5 * 8 + j]);
    }
    float dout[3 * 10];
    for (int i = 0; i < 30; i++)
        dout[i] = (float)i;
    ck_assert_int_eq(mml_embedding_backward(e, ids, 2, 3, dout, 10), MML_OK);
    for (int j = 0; j < 8; j++) {
        ck_assert(p->grad[3 * 8 + j] == dout[j] + dout[10 + j]);
        ck_assert(p->grad[5 * 8 + j] == dout[20 + j]);
        ck_assert(p->grad[0 * 8 + j] == 0.0f);
    }
    int32_t bad[2] = {1, 2000};
    ck_assert_int_eq(mml_embedding_forward(e, bad, 1, 2, out, 8), MML_ERANGE);
    ck_assert_str_eq(mml_ctx_last_error(ctx), "field 'user': id 2000 at row 1 outside [0, 2000)");
    bad[1] = -1;
    ck_assert_int_eq(mml_embedding_backward(e, bad, 1, 2, dout, 8), MML_ERANGE);
    ck_assert_int_eq(mml_embedding_forward(e, ids, 1, 0, out, 8), MML_ESHAPE);
    ck_assert_int_eq(mml_embedding_forward(e, ids, 1, 1, out, 7), MML_ESHAPE);
    ck_assert_int_eq(mml_embedding_forward(e, NULL, 1, 1, out, 8), MML_EINVAL);
    ck_assert_int_eq(mml_embedding_forward(NULL, ids, 1, 1, out, 8), MML_EINVAL);
    ck_assert_int_eq(mml_embedding_n_rows(e), 2000);
    ck_assert_int_eq(mml_embedding_dim(e), 8);
    mml_embedding_destroy(e);
    /* Uniform and zero inits. */
    o.init = MML_INIT_UNIFORM;
    o.scale = 0.05f;
    ck_assert_int_eq(mml_embedding_create(&e, ctx, &o), MML_OK);
    p = mml_embedding_param(e);
    float mx = 0;
    for (int64_t i = 0; i < 16000; i++)
        mx = fmaxf(mx, fabsf(p->value[i]));
    ck_assert(mx <= 0.05f && mx > 0.049f);
    mml_embedding_destroy(e);
    o.init = MML_INIT_ZEROS;
    ck_assert_int_eq(mml_embedding_create(&e, ctx, &o), MML_OK);
    ck_assert(mml_embedding_param(e)->value[123] == 0.0f);
    mml_embedding_destroy(e);
    o.init = 7;
    ck_assert_int_eq(mml_embedding_create(&e, ctx, &o), MML_EINVAL);
    o.init = MML_INIT_NORMAL;
    o.n_rows = 0;
    ck_assert_int_eq(mml_embedding_create(&e, ctx, &o), MML_EINVAL);
    o.n_rows = 4;
    o.struct_size = 0;
    ck_assert_int_eq(mml_embedding_create(&e, ctx, &o), MML_EVERSION);
    mml_embedding_destroy(NULL);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(gate_softmax_table)
{
    mml_ctx *ctx = plain_ctx(1, 2);
    mml_gate_options o;
    mml_gate_options_init(&o);
    o.n_domains = 3;
    o.n_experts = 5;
    mml_gate *g = NULL;
    ck_assert_int_eq(mml_gate_create(&g, ctx, &o), MML_OK);
    mml_param *emb = mml_gate_param(g, 0), *W = mml_gate_param(g, 1), *b = mml_gate_param(g, 2);
    ck_assert_int_eq(emb->rows, 3);
    ck_assert_int_eq(emb->cols, 4);
    for (int i = 0; i < 12; i++)
        ck_assert(fabsf(emb->value[i]) <= 0.05f);
    b->value[2] = 0.3f;
    int32_t dom[4] = {2, 0, 2, 1};
    const float *w = NULL;
    ck_assert_int_eq(mml_gate_forward(g, dom, 4, &w), MML_OK);
    for (int r = 0; r < 4; r++) {
        double z[5], mx = -1e9, sum = 0;
        for (int e = 0; e < 5; e++) {
            z[e] = b->value[e];
            for (int j = 0; j < 4; j++)
                z[e] += (double)emb->value[dom[r] * 4 + j] * W->value[j * 5 + e];
            mx = fmax(mx, z[e]);
        }
        for (int e = 0; e < 5; e++)
            sum += exp(z[e] - mx);
        for (int e = 0; e < 5; e++)
            ck_assert(fabs(w[r * 5 + e] - exp(z[e] - mx) / sum) < 1e-6);
    }
    float table[15];
    ck_assert_int_eq(mml_gate_table(g, table), MML_OK);
    ck_assert_int_eq(memcmp(table + 10, w, sizeof(float) * 5), 0);
    dom[1] = 3;
    ck_assert_int_eq(mml_gate_forward(g, dom, 4, &w), MML_ERANGE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "domain 3 at row 1"));
    ck_assert_int_eq(mml_gate_forward(g, dom, 0, &w), MML_ESHAPE);
    mml_gate_destroy(g);
    mml_gate *g2 = NULL;
    ck_assert_int_eq(mml_gate_backward(NULL, table), MML_EINVAL);
    o.n_experts = 0;
    ck_assert_int_eq(mml_gate_create(&g2, ctx, &o), MML_EINVAL);
    mml_ctx_destroy(ctx);
}
END_TEST

static void snapshot(mml_model *m, float **copy)
{
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        copy[i] = malloc(sizeof(float) * (size_t)mml_param_size(p));
        memcpy(copy[i], p->value, sizeof(float) * (size_t)mml_param_size(p));
    }
}

START_TEST(frozen_groups_stay_bit_identical)
{
    /* Stage 2 style: only expert 2 trains; everything else must not move. */
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 4);
    fx.model = tiny_model(fx.ctx, "deepfm", D, 1, 0, 0.5f);
    make_batch(&fx, 64, 0, 3);
    mml_model *m = fx.model;
    int64_t np = mml_model_n_params(m);
    mml_param **ps = malloc(sizeof(mml_param *) * (size_t)np);
    for (int64_t i = 0; i < np; i++) {
        ps[i] = mml_model_param(m, i);
        ps[i]->frozen = !(ps[i]->group == MML_GROUP_EXPERT && ps[i]->expert == 2);
    }
    float **before = malloc(sizeof(float *) * (size_t)np);
    snapshot(m, before);
    mml_optimizer_options oo;
    mml_optimizer_options_init(&oo);
    oo.lr = 0.01f;
    mml_optimizer *opt = NULL;
    ck_assert_int_eq(mml_optimizer_create(&opt, fx.ctx, &oo, ps, np), MML_OK);
    for (int step = 0; step < 20; step++) {
        fx.mode = step % 2 ? MML_MIX_SINGLE : MML_MIX_GATED;
        fx.expert = 2;
        ck_assert_int_eq(fx_grad(&fx), MML_OK);
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    }
    int moved = 0;
    for (int64_t i = 0; i < np; i++) {
        int same = memcmp(before[i], ps[i]->value, sizeof(float) * (size_t)mml_param_size(ps[i])) == 0;
        if (ps[i]->frozen)
            ck_assert_msg(same, "frozen %s moved", ps[i]->name);
        else
            moved += !same;
        free(before[i]);
    }
    ck_assert_int_eq(moved, 6); /* A, B, c of expert 2 in both layers */
    mml_optimizer_destroy(opt);
    free(before);
    free(ps);
    mml_model_destroy(m);
    mml_ctx_destroy(fx.ctx);
    free_batch(&fx);
}
END_TEST

START_TEST(dropout_masks_follow_the_seed)
{
    float *a = malloc(sizeof(float) * 50), *b = malloc(sizeof(float) * 50),
          *c = malloc(sizeof(float) * 50);
    for (int run = 0; run < 3; run++) {
        fixture fx = {0};
        fx.ctx = plain_ctx(1, run == 2 ? 8 : 7);
        fx.model = tiny_model(fx.ctx, "mlp", 0, 0, 0, 0.5f);
        make_batch(&fx, 50, 0, 1);
        /* Same weights for all runs, so only the masks can differ. */
        randomize_params(fx.model, 4, 0.5f);
        ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits), MML_OK);
        memcpy(run == 0 ? a : run == 1 ? b : c, fx.logits, sizeof(float) * 50);
        mml_model_destroy(fx.model);
        mml_ctx_destroy(fx.ctx);
        free_batch(&fx);
    }
    ck_assert_int_eq(memcmp(a, b, sizeof(float) * 50), 0);
    ck_assert_int_ne(memcmp(a, c, sizeof(float) * 50), 0);
    free(a);
    free(b);
    free(c);
}
END_TEST

START_TEST(dropout_keeps_the_expected_fraction)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_tower_options o;
    mml_tower_options_init(&o);
    o.d_in = 4;
    o.n_layers = 1;
    int32_t w = 512;
    o.hidden = &w;
    o.dropout = 0.25f;
    mml_tower *t = NULL;
    ck_assert_int_eq(mml_tower_create(&t, ctx, &o), MML_OK);
    /* Zero weights and bias 1: outputs are exactly the mask values. */
    memset(mml_tower_param(t, 0)->value, 0, sizeof(float) * 4 * 512);
    for (int j = 0; j < 512; j++)
        mml_tower_param(t, 1)->value[j] = 1.0f;
    float x[4 * 64] = {0};
    const float *h = NULL;
    ck_assert_int_eq(mml_tower_forward(t, x, 64, NULL, NULL, 1, &h), MML_OK);
    int kept = 0;
    for (int i = 0; i < 64 * 512; i++) {
        ck_assert(h[i] == 0.0f || fabsf(h[i] - 1.0f / 0.75f) < 1e-6f);
        kept += h[i] != 0.0f;
    }
    ck_assert(fabs(kept / (64.0 * 512) - 0.75) < 0.01);
    ck_assert_int_eq(mml_tower_forward(t, x, 64, NULL, NULL, 0, &h), MML_OK);
    for (int i = 0; i < 64 * 512; i++)
        ck_assert(h[i] == 1.0f);
    mml_tower_destroy(t);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(bad_input_is_refused)
{
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 4);
    fx.model = tiny_model(fx.ctx, "mlp", D, 1, 1, 0.5f);
    make_batch(&fx, 5, 1, 2);
    mml_model *m = fx.model;
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits), MML_OK);
    fx.ids[2 * F + 1] = 7; /* field 1 has 7 ids */
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits), MML_ERANGE);
    ck_assert_str_eq(mml_ctx_last_error(fx.ctx), "field 'field1': id 7 at row 2 outside [0, 7)");
    /* A failed forward leaves nothing for backward. */
    ck_assert_int_eq(mml_model_backward(m, fx.dlogits), MML_ESTATE);
    fx.ids[2 * F + 1] = 0;
    fx.domain[4] = D;
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_DOMAIN, 0, 1, fx.logits), MML_ERANGE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(fx.ctx), "domain 3 at row 4"));
    fx.domain[4] = 0;
    fx.dense[3] = NAN;
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits), MML_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(fx.ctx), "row 3"));
    fx.dense[3] = INFINITY;
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits), MML_ENONFINITE);
    fx.dense[3] = 0;
    mml_batch_view b = fx.batch;
    b.n_rows = 0;
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits), MML_OK);
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, fx.logits), MML_ESHAPE);
    /* Also when the batch is refused before any work. */
    ck_assert_int_eq(mml_model_backward(m, fx.dlogits), MML_ESTATE);
    b.struct_size = 8; /* no release's size */
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, fx.logits), MML_EVERSION);
    b.struct_size = fx.batch.struct_size;
    b = fx.batch;
    b.n_fields = 2;
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, fx.logits), MML_ESHAPE);
    b = fx.batch;
    b.n_dense = 0;
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, fx.logits), MML_ESHAPE);
    b = fx.batch;
    b.ids = NULL;
    ck_assert_int_eq(mml_model_forward(m, &b, MML_MIX_NONE, 0, 1, fx.logits), MML_EINVAL);
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, 9, 0, 1, fx.logits), MML_EINVAL);
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_SINGLE, D, 1, fx.logits), MML_ERANGE);
    ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_NONE, 0, 1, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_model_forward(NULL, &fx.batch, MML_MIX_NONE, 0, 1, fx.logits), MML_EINVAL);
    /* The loss refuses labels other than 0/1 and non-finite logits. */
    fx.labels[0] = 0.5f;
    double loss;
    ck_assert_int_eq(mml_bce_with_logits(fx.ctx, fx.logits, fx.labels, NULL, 5, &loss, NULL), MML_EINVAL);
    mml_model_destroy(m);
    /* A model without experts or gate refuses adapter modes. */
    fx.model = tiny_model(fx.ctx, "mlp", 0, 0, 1, 0.5f);
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_DOMAIN, 0, 1, fx.logits), MML_ESTATE);
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_GATED, 0, 1, fx.logits), MML_ESTATE);
    mml_model_destroy(fx.model);
    /* Bad model options. */
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = F;
    o.field_sizes = sizes;
    o.n_domains = D;
    o.backbone = "nope";
    mml_model *bad = NULL;
    ck_assert_int_eq(mml_model_create(&bad, fx.ctx, &o), MML_ENOTFOUND);
    o.backbone = "mlp";
    o.gate = 1;
    ck_assert_int_eq(mml_model_create(&bad, fx.ctx, &o), MML_EINVAL);
    o.gate = 0;
    o.dropout = 1.0f;
    ck_assert_int_eq(mml_model_create(&bad, fx.ctx, &o), MML_EINVAL);
    ck_assert_ptr_null(bad);
    mml_ctx_destroy(fx.ctx);
    free_batch(&fx);
}
END_TEST

/* Every allocation of model creation and the first training step can fail cleanly. */
START_TEST(allocation_failures_leak_nothing)
{
    counting_allocator a;
    long total = -1;
    for (long n = 0;; n++) {
        mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
        a.fail_at = n ? a.calls + n : 0;
        fixture fx = {0};
        fx.ctx = ctx;
        make_batch(&fx, 9, 0, 1);
        mml_model_options o;
        mml_model_options_init(&o);
        o.backbone = "deepfm";
        o.n_fields = F;
        o.field_sizes = sizes;
        o.embed_dim = K;
        o.n_domains = D;
        o.n_experts = D;
        o.gate = 1;
        o.n_hidden = 2;
        o.hidden = tiny_hidden;
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
        ck_assert_msg(rc == MML_ENOMEM || a.calls < a.fail_at, "n=%ld rc=%d", n, rc);
        if (a.fail_at > total)
            break;
    }
    ck_assert_int_gt(total, 10);
}
END_TEST

static Suite *layers_suite(void)
{
    Suite *s = suite_create("layers");
    TCase *g = tcase_create("gradients");
    tcase_set_timeout(g, 300);
    tcase_add_loop_test(g, gradcheck_every_coordinate_tiny, 0, 5);
    tcase_add_loop_test(g, gradcheck_sampled_batch_1024, 0, 5);
    tcase_add_loop_test(g, gradcheck_numeric_fields, 0, 5);
    suite_add_tcase(s, g);
    TCase *t = tcase_create("layers");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, forward_matches_reference_in_every_mode);
    tcase_add_test(t, fresh_experts_leave_the_model_unchanged);
    tcase_add_test(t, lora_ranks_follow_the_rule);
    tcase_add_test(t, embedding_lookup_and_scatter);
    tcase_add_test(t, gate_softmax_table);
    tcase_add_test(t, frozen_groups_stay_bit_identical);
    tcase_add_test(t, dropout_masks_follow_the_seed);
    tcase_add_test(t, dropout_keeps_the_expected_fraction);
    tcase_add_test(t, bad_input_is_refused);
    tcase_add_test(t, allocation_failures_leak_nothing);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return run_suite(layers_suite()); }
