/* Batches split across threads (the model's training copies): every
 * backbone and mixture gives the one-thread logits and gradients, runs are
 * bitwise repeatable, errors in a worker's rows reach the caller, and a
 * failing allocator is survived without leaks. */
#include "internal.h"
#include "testutil.h"

enum { F = 3, K = 4, D = 3, N = 301 };
static const int64_t sizes[F] = {23, 17, D};
static const int32_t hidden[3] = {16, 12, 8};

typedef struct batch {
    int32_t ids[N * F], domain[N];
    float labels[N], dense[N * 2], logits[N], dlogits[N];
    mml_batch_view view;
} batch;

static void make_batch(batch *b, int32_t n_dense, uint64_t seed)
{
    mml_rng rng;
    mml__rng_init(&rng, seed, 3);
    for (int64_t r = 0; r < N; r++) {
        b->domain[r] = (int32_t)mml__rng_below(&rng, D);
        for (int32_t f = 0; f < F - 1; f++)
            b->ids[r * F + f] = (int32_t)mml__rng_below(&rng, (uint64_t)sizes[f]);
        b->ids[r * F + F - 1] = b->domain[r];
        b->labels[r] = (float)mml__rng_below(&rng, 2);
        for (int32_t j = 0; j < n_dense; j++)
            b->dense[r * n_dense + j] = mml__rng_uniform(&rng) - 0.5f;
    }
    mml_batch_view_init(&b->view, N, F, b->ids, n_dense, n_dense ? b->dense : NULL, b->domain,
                        b->labels);
}

static mml_model *make_model(mml_ctx *ctx, const char *backbone, int32_t E, int gate,
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
    o.n_experts = E;
    o.gate = gate;
    o.alpha = 4;
    o.n_hidden = 3;
    o.hidden = hidden;
    o.dropout = dropout;
    mml_model *m = NULL;
    int rc = mml_model_create(&m, ctx, &o);
    ck_assert_msg(rc == MML_OK, "%s: %s", backbone, mml_ctx_last_error(ctx));
    return m;
}

/* Moves B, c and the first-order weights off zero so every gradient flows. */
static void randomize(mml_model *m)
{
    mml_rng rng;
    mml__rng_init(&rng, 42, 1);
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        for (int64_t j = 0; j < mml_param_size(p); j++)
            p->value[j] = (mml__rng_uniform(&rng) - 0.5f) * 0.6f;
    }
}

static int step(mml_model *m, mml_ctx *ctx, batch *b, int32_t mode, int32_t expert)
{
    double loss;
    for (int64_t i = 0; i < mml_model_n_params(m); i++)
        mml_params_zero_grad((mml_param *const[]){mml_model_param(m, i)}, 1);
    int rc = mml_model_forward(m, &b->view, mode, expert, 1, b->logits);
    if (rc >= 0)
        rc = mml_bce_with_logits(ctx, b->logits, b->labels, NULL, N, &loss, b->dlogits);
    if (rc >= 0)
        rc = mml_model_backward(m, b->dlogits);
    return rc;
}

/* The fifth: per-domain routing with more than 4 experts (sorted blocks, not one-hot). */
static const int32_t modes[5] = {MML_MIX_NONE, MML_MIX_DOMAIN, MML_MIX_GATED, MML_MIX_SINGLE,
                                 MML_MIX_DOMAIN};

/* Without dropout the split changes nothing but the order of additions. */
START_TEST(two_threads_match_one_thread)
{
    const char *backbone = mml_backbone_builtin_name(_i / 5);
    int32_t mode = modes[_i % 5], E = _i % 5 == 4 ? 2 * D : D;
    int32_t n_dense = _i % 2 ? 2 : 0;
    mml_ctx *c1 = plain_ctx(1, 7), *c2 = plain_ctx(2, 7);
    int gate = mode == MML_MIX_GATED;
    mml_model *m1 = make_model(c1, backbone, E, gate, n_dense, 0.0f);
    mml_model *m2 = make_model(c2, backbone, E, gate, n_dense, 0.0f);
    randomize(m1);
    randomize(m2);
    static batch b1, b2;
    make_batch(&b1, n_dense, 5);
    make_batch(&b2, n_dense, 5);
    ck_assert_msg(step(m1, c1, &b1, mode, 1) == MML_OK, "%s", mml_ctx_last_error(c1));
    ck_assert_msg(step(m2, c2, &b2, mode, 1) == MML_OK, "%s", mml_ctx_last_error(c2));
    for (int64_t r = 0; r < N; r++)
        ck_assert_msg(fabsf(b1.logits[r] - b2.logits[r]) <= 1e-5f * (1.0f + fabsf(b1.logits[r])),
                      "%s mode %d row %lld: %g vs %g", backbone, mode, (long long)r,
                      (double)b1.logits[r], (double)b2.logits[r]);
    int64_t nonzero = 0;
    for (int64_t i = 0; i < mml_model_n_params(m1); i++) {
        mml_param *p = mml_model_param(m1, i), *q = mml_model_param(m2, i);
        double scale = 0;
        for (int64_t j = 0; j < mml_param_size(p); j++)
            scale = fmax(scale, fabs(p->grad[j]));
        for (int64_t j = 0; j < mml_param_size(p); j++) {
            nonzero += p->grad[j] != 0.0f;
            ck_assert_msg(fabs(p->grad[j] - q->grad[j]) <= 1e-5 * scale + 1e-7,
                          "%s mode %d %s[%lld]: %g vs %g", backbone, mode, p->name, (long long)j,
                          (double)p->grad[j], (double)q->grad[j]);
        }
    }
    ck_assert_int_gt(nonzero, 0);
    mml_model_destroy(m1);
    mml_model_destroy(m2);
    mml_ctx_destroy(c1);
    mml_ctx_destroy(c2);
}
END_TEST

/* With dropout: the same seed and thread count give the same bits. */
START_TEST(split_steps_are_repeatable)
{
    const char *backbone = _i ? "deepfm" : "mlp";
    float *first = NULL;
    int64_t total = 0;
    for (int run = 0; run < 2; run++) {
        mml_ctx *ctx = plain_ctx(2, 9);
        mml_model *m = make_model(ctx, backbone, 2 * D, 1, 0, 0.5f);
        static batch b;
        make_batch(&b, 0, 11);
        mml_optimizer_options oo;
        mml_optimizer_options_init(&oo);
        mml_param *params[512];
        int64_t np = mml_model_n_params(m);
        ck_assert_int_le(np, 512);
        for (int64_t i = 0; i < np; i++)
            params[i] = mml_model_param(m, i);
        mml_optimizer *opt = NULL;
        ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &oo, params, np), MML_OK);
        for (int s = 0; s < 4; s++) {
            ck_assert_msg(step(m, ctx, &b, s % 2 ? MML_MIX_GATED : MML_MIX_DOMAIN, 0) == MML_OK,
                          "%s", mml_ctx_last_error(ctx));
            ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
        }
        if (run == 0) {
            for (int64_t i = 0; i < np; i++)
                total += mml_param_size(params[i]);
            first = malloc(sizeof(float) * (size_t)total);
        }
        int64_t off = 0;
        for (int64_t i = 0; i < np; i++) {
            int64_t sz = mml_param_size(params[i]);
            if (run == 0)
                memcpy(first + off, params[i]->value, sizeof(float) * (size_t)sz);
            else
                ck_assert_msg(memcmp(first + off, params[i]->value, sizeof(float) * (size_t)sz) == 0,
                              "%s differs between two runs", params[i]->name);
            off += sz;
        }
        mml_optimizer_destroy(opt);
        mml_model_destroy(m);
        mml_ctx_destroy(ctx);
    }
    free(first);
}
END_TEST

/* A bad value in the second thread's rows fails the call with a message
 * naming the rows, and the model works again afterwards. */
START_TEST(worker_error_reaches_the_caller)
{
    mml_ctx *ctx = plain_ctx(2, 3);
    mml_model *m = make_model(ctx, "mlp", 0, 0, 2, 0.5f);
    static batch b;
    make_batch(&b, 2, 13);
    /* A user id of the last row only: the second thread's embedding input. */
    int32_t user = b.ids[(N - 1) * F];
    for (int64_t r = 0; r < N - 1; r++)
        if (b.ids[r * F] == user)
            b.ids[r * F] = (user + 1) % (int32_t)sizes[0];
    mml_param *emb = mml_model_param(m, 0);
    float saved = emb->value[user * K + 2];
    emb->value[user * K + 2] = NAN;
    int rc = step(m, ctx, &b, MML_MIX_NONE, 0);
    ck_assert_int_eq(rc, MML_ENONFINITE);
    const char *msg = mml_ctx_last_error(ctx);
    ck_assert_msg(strstr(msg, "rows 150-300") && strstr(msg, "row 150,") &&
                      strstr(msg, "not finite"), "%s", msg);
    ck_assert_int_eq(mml_model_backward(m, b.dlogits), MML_ESTATE);
    emb->value[user * K + 2] = saved;
    ck_assert_msg(step(m, ctx, &b, MML_MIX_NONE, 0) == MML_OK, "%s", mml_ctx_last_error(ctx));
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
}
END_TEST

#ifndef MML_TSAN_ONLY
/* Every allocation of the first split batch can fail: a clean error, no leak. */
START_TEST(failing_allocations_leak_nothing)
{
    counting_allocator probe;
    mml_ctx *ctx = counting_ctx(&probe, 0, 2, 1);
    mml_model *m = make_model(ctx, "deepfm", D, 1, 0, 0.5f);
    long before = probe.calls;
    static batch b;
    make_batch(&b, 0, 17);
    ck_assert_int_eq(step(m, ctx, &b, MML_MIX_GATED, 0), MML_OK);
    long needed = probe.calls - before;
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
    ck_assert_int_eq(probe.live, 0);
    ck_assert_int_gt(needed, 4);
    for (long k = 1; k <= needed; k++) {
        counting_allocator a;
        mml_ctx *c = counting_ctx(&a, 0, 2, 1);
        mml_model *mm = make_model(c, "deepfm", D, 1, 0, 0.5f);
        a.fail_at = a.calls + k;
        int rc = step(mm, c, &b, MML_MIX_GATED, 0);
        ck_assert_msg(rc == MML_OK || rc == MML_ENOMEM, "allocation %ld: %d", k, rc);
        a.fail_at = 0;
        ck_assert_msg(step(mm, c, &b, MML_MIX_GATED, 0) == MML_OK, "after failing %ld: %s", k,
                      mml_ctx_last_error(c));
        mml_model_destroy(mm);
        mml_ctx_destroy(c);
        ck_assert_msg(a.live == 0, "allocation %ld failed: %ld blocks leaked", k, a.live);
    }
}
END_TEST
#endif

#ifndef MML_TSAN_ONLY
/* A read-only model is never split (its BLIS calls take the context's threads). */
START_TEST(readonly_model_predicts_with_two_threads)
{
    mml_ctx *c1 = plain_ctx(1, 7), *c2 = plain_ctx(2, 7);
    mml_model *m1 = make_model(c1, "mlp", D, 0, 0, 0.5f);
    mml_model *m2 = make_model(c2, "mlp", D, 0, 0, 0.5f);
    static batch b1, b2;
    make_batch(&b1, 0, 5);
    make_batch(&b2, 0, 5);
    ck_assert_int_eq(step(m2, c2, &b2, MML_MIX_DOMAIN, 0), MML_OK);
    ck_assert_int_eq(mml_model_make_readonly(m2), MML_OK);
    ck_assert_int_eq(mml_model_predict(m1, &b1.view, MML_MIX_DOMAIN, 0, b1.logits), MML_OK);
    ck_assert_int_eq(mml_model_predict(m2, &b2.view, MML_MIX_DOMAIN, 0, b2.logits), MML_OK);
    ck_assert_int_eq(memcmp(b1.logits, b2.logits, sizeof b1.logits), 0);
    mml_model_destroy(m1);
    mml_model_destroy(m2);
    mml_ctx_destroy(c1);
    mml_ctx_destroy(c2);
}
END_TEST
#endif

/* A large table's Adam update split across threads gives the one-thread bits. */
START_TEST(parallel_adam_matches_serial)
{
    enum { ROWS = 40001, COLS = 3 };
    float *w[2], *g = malloc(sizeof(float) * ROWS * COLS);
    mml_rng rng;
    mml__rng_init(&rng, 4, 4);
    for (int64_t i = 0; i < ROWS * COLS; i++)
        g[i] = mml__rng_uniform(&rng) - 0.5f;
    for (int t = 0; t < 2; t++) {
        mml_ctx *ctx = plain_ctx(t ? 2 : 1, 1);
        w[t] = malloc(sizeof(float) * ROWS * COLS);
        for (int64_t i = 0; i < ROWS * COLS; i++)
            w[t][i] = (float)i * 1e-5f;
        float *grad = malloc(sizeof(float) * ROWS * COLS);
        mml_param p = {"table", w[t], grad, ROWS, COLS, MML_GROUP_EMBEDDING, -1, 0, 0};
        mml_param *pp = &p;
        mml_optimizer *opt = NULL;
        ck_assert_int_eq(mml_optimizer_create(&opt, ctx, NULL, &pp, 1), MML_OK);
        for (int s = 0; s < 3; s++) {
            for (int64_t i = 0; i < ROWS * COLS; i++)
                grad[i] = g[i] * (float)(s + 1);
            ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
        }
        mml_optimizer_destroy(opt);
        mml_ctx_destroy(ctx);
        free(grad);
    }
    ck_assert_int_eq(memcmp(w[0], w[1], sizeof(float) * ROWS * COLS), 0);
    ck_assert(w[0][7] != 7e-5f);
    free(w[0]);
    free(w[1]);
    free(g);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("parallel");
    TCase *t = tcase_create("parallel");
    tcase_set_timeout(t, 300);
    tcase_add_loop_test(t, two_threads_match_one_thread, 0, 9 * 5);
    tcase_add_loop_test(t, split_steps_are_repeatable, 0, 2);
    tcase_add_test(t, worker_error_reaches_the_caller);
#ifndef MML_TSAN_ONLY
    /* A failed pool, and a read-only model, run BLIS's own OpenMP threads,
     * which ThreadSanitizer cannot follow. */
    tcase_add_test(t, failing_allocations_leak_nothing);
    tcase_add_test(t, readonly_model_predicts_with_two_threads);
#endif
    tcase_add_test(t, parallel_adam_matches_serial);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return run_suite(suite()); }
