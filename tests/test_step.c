/* The training step: the sparse optimisers (lazy Adam, Adagrad) touch only
 * the embedding rows the batch used, zeroing the gradient leaves it all zero,
 * and a step allocates nothing once the first batch has sized the scratch. */
#include "testutil.h"

/* ------------------------------------------------------------ one table */

enum { TR = 1000, TK = 4 };

static mml_embedding *make_table(mml_ctx *ctx)
{
    mml_embedding_options eo;
    mml_embedding_options_init(&eo);
    eo.n_rows = TR;
    eo.dim = TK;
    eo.scale = 0.1f;
    eo.name = "t";
    mml_embedding *e = NULL;
    ck_assert_int_eq(mml_embedding_create(&e, ctx, &eo), MML_OK);
    return e;
}

static mml_optimizer *make_opt(mml_ctx *ctx, int32_t kind, mml_param **ps, int64_t n)
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

static int all_zero(const float *g, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (g[i] != 0.0f)
            return 0;
    return 1;
}

/* Zeroes the gradient, then one backward pass over ids whose output
 * gradient in row r is scale[r] * 0.1 * (1, 2, .., TK): exactly zero where
 * scale[r] is 0. */
static void table_backward(mml_embedding *e, const int32_t *ids, const float *scale, int64_t n)
{
    mml_param *p = mml_embedding_param(e);
    mml_params_zero_grad(&p, 1);
    ck_assert(all_zero(p->grad, TR * TK));
    float dout[16 * TK];
    ck_assert_int_le(n, 16);
    for (int64_t r = 0; r < n; r++)
        for (int j = 0; j < TK; j++)
            dout[r * TK + j] = scale[r] * 0.1f * (float)(j + 1);
    ck_assert_int_eq(mml_embedding_backward(e, ids, 1, n, dout, TK), MML_OK);
}

static int in_list(int32_t r, const int32_t *ids, int n)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == r)
            return 1;
    return 0;
}

/* Two steps. Step 1 uses rows 3, 7 (twice) and 500. Step 2 uses row 3 and,
 * with a gradient of exactly zero, rows 7 and 9; row 500 is not in it. */
static const int32_t ids1[4] = {3, 7, 7, 500};
static const float scale1[4] = {1.0f, -1.0f, 0.5f, 2.0f};
static const int32_t ids2[3] = {3, 7, 9};
static const float scale2[3] = {1.0f, 0.0f, 0.0f};

START_TEST(lazy_adam_moves_only_rows_in_the_batch)
{
    mml_ctx *ctx = plain_ctx(1, 7);
    mml_embedding *e = make_table(ctx);
    mml_param *p = mml_embedding_param(e);
    mml_optimizer *opt = make_opt(ctx, MML_OPT_LAZY_ADAM, &p, 1);
    const float *m, *v;
    ck_assert_int_eq(mml_optimizer_state(opt, 0, &m, &v), MML_OK);
    static float w0[TR * TK], w1[TR * TK], m1[TR * TK], v1[TR * TK];
    memcpy(w0, p->value, sizeof w0);

    table_backward(e, ids1, scale1, 4);
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    for (int32_t r = 0; r < TR; r++)
        if (mml_optimizer_row_steps(opt, 0, r) != in_list(r, ids1, 4))
            ck_abort_msg("row %d: %lld steps", (int)r, (long long)mml_optimizer_row_steps(opt, 0, r));
    memcpy(w1, p->value, sizeof w1);
    memcpy(m1, m, sizeof m1);
    memcpy(v1, v, sizeof v1);

    table_backward(e, ids2, scale2, 3);
    ck_assert(all_zero(p->grad + 7 * TK, TK)); /* in the batch, with a zero gradient */
    ck_assert(all_zero(p->grad + 9 * TK, TK));
    ck_assert(!all_zero(p->grad + 3 * TK, TK));
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);

    /* Counted as touched: rows 7 and 9 took a step although their gradient is 0. */
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, 3), 2);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, 7), 2);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, 9), 1);
    ck_assert_int_eq(mml_optimizer_row_steps(opt, 0, 500), 1);
    for (int j = 0; j < TK; j++) {
        int i7 = 7 * TK + j, i9 = 9 * TK + j, i500 = 500 * TK + j;
        /* Row 7: m = b1 m (+ 0), v = b2 v, and the value moves by its momentum. */
        ck_assert_float_eq(m[i7], 0.9f * m1[i7]);
        ck_assert_float_eq(v[i7], 0.999f * v1[i7]);
        ck_assert(m1[i7] != 0.0f);
        ck_assert(p->value[i7] != w1[i7]);
        /* Row 9: first step, with zero moments: nothing to move by. */
        ck_assert_float_eq(m[i9], 0.0f);
        ck_assert_float_eq(p->value[i9], w0[i9]);
        /* Row 500, outside the batch: value and moments bit-identical. */
        ck_assert(memcmp(&p->value[i500], &w1[i500], sizeof(float)) == 0);
        ck_assert(memcmp(&m[i500], &m1[i500], sizeof(float)) == 0);
        ck_assert(memcmp(&v[i500], &v1[i500], sizeof(float)) == 0);
    }
    /* Every row never used: as created, with zero state and count. */
    for (int32_t r = 0; r < TR; r++) {
        if (in_list(r, ids1, 4) || in_list(r, ids2, 3))
            continue;
        if (mml_optimizer_row_steps(opt, 0, r) != 0 ||
            memcmp(p->value + r * TK, w0 + r * TK, sizeof(float) * TK) != 0 ||
            !all_zero(m + r * TK, TK) || !all_zero(v + r * TK, TK))
            ck_abort_msg("row %d, never in a batch, changed", (int)r);
    }
    ck_assert_int_eq(mml_optimizer_steps(opt, 0), 2);
    mml_optimizer_destroy(opt);

    /* The contrast: dense Adam moves row 500 by its momentum in step 2. */
    memcpy(p->value, w0, sizeof w0);
    opt = make_opt(ctx, MML_OPT_ADAM, &p, 1);
    table_backward(e, ids1, scale1, 4);
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    float w500 = p->value[500 * TK];
    table_backward(e, ids2, scale2, 3);
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    ck_assert(p->value[500 * TK] != w500);
    mml_optimizer_destroy(opt);
    mml_embedding_destroy(e);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(adagrad_moves_only_rows_in_the_batch)
{
    mml_ctx *ctx = plain_ctx(1, 7);
    mml_embedding *e = make_table(ctx);
    mml_param *p = mml_embedding_param(e);
    mml_optimizer *opt = make_opt(ctx, MML_OPT_ADAGRAD, &p, 1);
    const float *G;
    ck_assert_int_eq(mml_optimizer_state(opt, 0, NULL, &G), MML_OK);
    static float w0[TR * TK], w1[TR * TK], G1[TR * TK];
    memcpy(w0, p->value, sizeof w0);
    table_backward(e, ids1, scale1, 4);
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    memcpy(w1, p->value, sizeof w1);
    memcpy(G1, G, sizeof G1);
    table_backward(e, ids2, scale2, 3);
    float g3[TK];
    memcpy(g3, p->grad + 3 * TK, sizeof g3);
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    for (int32_t r = 0; r < TR; r++)
        for (int j = 0; j < TK; j++) {
            int i = r * TK + j;
            if (r == 3) { /* G += g^2; w -= lr g / (sqrt(G) + eps) */
                float Gi = G1[i] + g3[j] * g3[j];
                ck_assert_float_eq(G[i], Gi);
                ck_assert_float_eq(p->value[i], w1[i] - 0.01f * (g3[j] / (sqrtf(Gi) + 1e-8f)));
            } else if (in_list(r, ids1, 4)) { /* 7 (zero gradient) and 500 (outside) */
                if (memcmp(&p->value[i], &w1[i], sizeof(float)) != 0 ||
                    memcmp(&G[i], &G1[i], sizeof(float)) != 0)
                    ck_abort_msg("row %d changed", (int)r);
            } else if (memcmp(&p->value[i], &w0[i], sizeof(float)) != 0 || G[i] != 0.1f) {
                ck_abort_msg("row %d, never in a batch, changed", (int)r);
            }
        }
    mml_optimizer_destroy(opt);
    mml_embedding_destroy(e);
    mml_ctx_destroy(ctx);
}
END_TEST

/* Zeroing clears everything the backward passes wrote, through a copy of
 * the parameter struct too, and all of a parameter made by the caller. */
START_TEST(zero_grad_leaves_every_gradient_zero)
{
    mml_ctx *ctx = plain_ctx(1, 7);
    mml_embedding *e = make_table(ctx);
    mml_param *p = mml_embedding_param(e);
    table_backward(e, ids1, scale1, 4);
    ck_assert(!all_zero(p->grad, TR * TK));
    mml_params_zero_grad(&p, 1);
    ck_assert(all_zero(p->grad, TR * TK));
    /* Twice without zeroing in between, then through a copy of the struct. */
    table_backward(e, ids1, scale1, 4);
    static const int64_t off[3] = {0, 2, 3};
    static const int32_t mh_ids[3] = {11, 999, 11};
    float dout[2 * TK] = {1, 2, 3, 4, 5, 6, 7, 8};
    ck_assert_int_eq(mml_embedding_backward_multihot(e, off, mh_ids, 2, MML_POOL_MEAN, dout, TK),
                     MML_OK);
    ck_assert(!all_zero(p->grad + 999 * TK, TK));
    mml_param copy = *p, *cp = &copy;
    mml_params_zero_grad(&cp, 1);
    ck_assert(all_zero(p->grad, TR * TK));
    mml_embedding_destroy(e);

    /* A parameter of the caller's own (reserved 0): the whole gradient. */
    float value[6] = {0}, grad[6] = {1, 2, 3, 4, 5, 6};
    mml_param mine = {"mine", value, grad, 3, 2, MML_GROUP_EMBEDDING, -1, 0, 0};
    mml_param *mp = &mine;
    mml_params_zero_grad(&mp, 1);
    ck_assert(all_zero(grad, 6));
    mml_ctx_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------ whole models */

static const int32_t small_hidden[2] = {16, 8};
enum { MD = 3, MF = 3, MN = 64, MH_PER_ROW = 2 };
static const int64_t model_sizes[MF] = {20000, 3000, 3};
static const int64_t model_mh_sizes[1] = {500};

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

typedef struct batch_data {
    int32_t ids[MN * MF], domain[MN], mh_ids[MN * MH_PER_ROW];
    int64_t mh_off[MN + 1];
    float labels[MN];
    const int64_t *offp[1];
    const int32_t *idp[1];
    mml_batch_view view;
} batch_data;

/* Random ids over the whole tables (a few repeats in the small ones), two
 * multi-hot ids per row, or none when n_mh is 0. */
static void make_batch(batch_data *b, uint64_t seed, int32_t n_mh)
{
    uint64_t s = seed;
    for (int r = 0; r < MN; r++) {
        for (int f = 0; f < MF; f++)
            b->ids[r * MF + f] = (int32_t)(lcg(&s) % (uint64_t)model_sizes[f]);
        b->domain[r] = (int32_t)(lcg(&s) % MD);
        b->labels[r] = (float)(lcg(&s) % 2);
        b->mh_off[r] = (int64_t)r * MH_PER_ROW;
        for (int q = 0; q < MH_PER_ROW; q++)
            b->mh_ids[r * MH_PER_ROW + q] = (int32_t)(lcg(&s) % (uint64_t)model_mh_sizes[0]);
    }
    b->mh_off[MN] = (int64_t)MN * MH_PER_ROW;
    mml_batch_view_init(&b->view, MN, MF, b->ids, 0, NULL, b->domain, b->labels);
    if (n_mh) {
        b->offp[0] = b->mh_off;
        b->idp[0] = b->mh_ids;
        b->view.n_multihot = 1;
        b->view.multihot_offsets = b->offp;
        b->view.multihot_ids = b->idp;
    }
}

typedef struct variant {
    const char *name;
    int32_t n_experts, gate, mode;
} variant;

static const variant variants[3] = {
    {"base", 0, 0, MML_MIX_NONE},
    {"mlora", MD, 0, MML_MIX_DOMAIN},
    {"moe", 4, 1, MML_MIX_GATED},
};

static mml_model *make_model(mml_ctx *ctx, const char *backbone, const variant *v, int32_t n_mh)
{
    mml_model_options o;
    mml_model_options_init(&o);
    o.backbone = backbone;
    o.n_fields = MF;
    o.field_sizes = model_sizes;
    o.embed_dim = 4;
    o.n_domains = MD;
    o.n_experts = v->n_experts;
    o.gate = v->gate;
    o.alpha = 2;
    o.n_hidden = 2;
    o.hidden = small_hidden;
    o.l2_embedding = 1e-4f;
    o.l2_dense = 1e-5f;
    o.n_multihot = n_mh;
    o.multihot_sizes = n_mh ? model_mh_sizes : NULL;
    mml_model *m = NULL;
    int rc = mml_model_create(&m, ctx, &o);
    ck_assert_msg(rc == MML_OK, "model_create(%s): %s", backbone, mml_ctx_last_error(ctx));
    return m;
}

/* The trainer's step on one batch. */
static void train_step(mml_ctx *ctx, mml_model *m, mml_optimizer *opt, mml_param **ps,
                       int64_t np, const batch_data *b, int32_t mode)
{
    float logits[MN], dlogits[MN];
    double loss, penalty;
    mml_params_zero_grad(ps, np);
    int rc = mml_model_forward(m, &b->view, mode, -1, 1, logits);
    if (rc == MML_OK)
        rc = mml_bce_with_logits(ctx, logits, b->labels, NULL, MN, &loss, dlogits);
    if (rc == MML_OK)
        rc = mml_model_backward(m, dlogits);
    if (rc == MML_OK)
        rc = mml_model_regularization(m, &penalty);
    if (rc == MML_OK)
        rc = mml_optimizer_step(opt);
    ck_assert_msg(rc == MML_OK, "step: %s", mml_ctx_last_error(ctx));
}

/* Sets used[r] to 1 for every row r of the embedding parameter named name
 * ("field<f>", "field<f>.linear" or "multihot0") that the batch uses, 0 for
 * the others. */
static void batch_rows(const batch_data *b, const mml_param *p, unsigned char *used)
{
    memset(used, 0, (size_t)p->rows);
    if (strcmp(p->name, "multihot0") == 0) {
        for (int i = 0; i < MN * MH_PER_ROW; i++)
            used[b->mh_ids[i]] = 1;
        return;
    }
    int f = -1;
    ck_assert_int_eq(sscanf(p->name, "field%d", &f), 1);
    for (int i = 0; i < MN; i++)
        used[b->ids[i * MF + f]] = 1;
}

/* Lazy Adam and Adagrad on whole models, with L2, multi-hot fields and (for
 * deepfm) first-order tables: after each step, every embedding row outside
 * the batch is bit-identical, every row inside it took exactly one lazy
 * step, and zeroing leaves every gradient of the model zero. */
START_TEST(model_steps_move_only_rows_in_the_batch)
{
    static const char *backbones[2] = {"mlp", "deepfm"};
    static const int32_t kinds[2] = {MML_OPT_LAZY_ADAM, MML_OPT_ADAGRAD};
    for (int bi = 0; bi < 2; bi++)
        for (int vi = 0; vi < 3; vi++)
            for (int ki = 0; ki < 2; ki++) {
                mml_ctx *ctx = plain_ctx(1, 11);
                mml_model *m = make_model(ctx, backbones[bi], &variants[vi], 1);
                int64_t np = mml_model_n_params(m);
                mml_param *ps[64];
                ck_assert_int_le(np, 64);
                for (int64_t i = 0; i < np; i++)
                    ps[i] = mml_model_param(m, i);
                mml_optimizer *opt = make_opt(ctx, kinds[ki], ps, np);
                float *before[64] = {0};
                int64_t *counts[64] = {0};
                int tables = 0;
                for (int step = 0; step < 4; step++) {
                    batch_data b;
                    make_batch(&b, 100 + (uint64_t)step, 1);
                    for (int64_t i = 0; i < np; i++) {
                        mml_param *p = ps[i];
                        if (p->group != MML_GROUP_EMBEDDING || p->rows < 2)
                            continue; /* the numeric weights' single row */
                        size_t n = (size_t)mml_param_size(p);
                        if (!before[i]) {
                            before[i] = malloc(n * sizeof(float));
                            counts[i] = malloc((size_t)p->rows * sizeof(int64_t));
                            tables++;
                        }
                        memcpy(before[i], p->value, n * sizeof(float));
                        for (int64_t r = 0; r < p->rows; r++)
                            counts[i][r] = mml_optimizer_row_steps(opt, i, r);
                    }
                    train_step(ctx, m, opt, ps, np, &b, variants[vi].mode);
                    for (int64_t i = 0; i < np; i++) {
                        mml_param *p = ps[i];
                        if (!before[i])
                            continue;
                        static unsigned char rows_used[20000];
                        ck_assert_int_le(p->rows, 20000);
                        batch_rows(&b, p, rows_used);
                        for (int64_t r = 0; r < p->rows; r++) {
                            int used = rows_used[r];
                            int64_t c = mml_optimizer_row_steps(opt, i, r);
                            /* (if + abort: Check reports every assertion to its parent) */
                            if (kinds[ki] == MML_OPT_LAZY_ADAM && c != counts[i][r] + used)
                                ck_abort_msg("%s %s: %s row %lld: count %lld, was %lld, used %d",
                                             backbones[bi], variants[vi].name, p->name,
                                             (long long)r, (long long)c, (long long)counts[i][r],
                                             used);
                            if (!used && memcmp(p->value + r * p->cols, before[i] + r * p->cols,
                                                sizeof(float) * (size_t)p->cols) != 0)
                                ck_abort_msg("%s %s kind %d: %s row %lld moved outside the batch",
                                             backbones[bi], variants[vi].name, kinds[ki], p->name,
                                             (long long)r);
                        }
                    }
                    /* The next step's zeroing: every gradient of the model is 0. */
                    mml_params_zero_grad(ps, np);
                    for (int64_t i = 0; i < np; i++)
                        if (!all_zero(ps[i]->grad, mml_param_size(ps[i])))
                            ck_abort_msg("%s: gradient of %s not zero", backbones[bi], ps[i]->name);
                }
                ck_assert_int_eq(tables, bi == 0 ? MF + 1 : 2 * MF + 1);
                for (int64_t i = 0; i < np; i++) {
                    free(before[i]);
                    free(counts[i]);
                }
                mml_optimizer_destroy(opt);
                mml_model_destroy(m);
                mml_ctx_destroy(ctx);
            }
}
END_TEST

/* ------------------------------------------------------------ allocations */

/* The trainer's step sequence (zero_grad, forward, loss, backward, L2,
 * optimiser step) allocates nothing after the first batch, for base, MLoRA
 * and MoE models, every optimiser, with and without first-order tables and
 * a multi-hot field (with the same number of multi-hot ids per batch: a
 * batch with more than any before grows the model's id buffer once). */
START_TEST(step_allocates_nothing_after_the_first_batch)
{
    static const char *backbones[2] = {"mlp", "deepfm"};
    static const int32_t kinds[4] = {MML_OPT_ADAM, MML_OPT_LAZY_ADAM, MML_OPT_ADAGRAD, MML_OPT_SGD};
    enum { NB = 5 };
    static batch_data batches[NB];
    /* Two threads split each batch (the split's copies are made in the first). */
    for (uint32_t threads = 1; threads <= 2; threads++)
    for (int n_mh = 0; n_mh <= 1; n_mh++)
        for (int bi = 0; bi < 2; bi++)
            for (int vi = 0; vi < 3; vi++)
                for (int ki = 0; ki < 4; ki++) {
                    counting_allocator al;
                    mml_ctx *ctx = counting_ctx(&al, 0, threads, 3);
                    ck_assert_ptr_nonnull(ctx);
                    mml_model *m = make_model(ctx, backbones[bi], &variants[vi], n_mh);
                    int64_t np = mml_model_n_params(m);
                    mml_param *ps[64];
                    ck_assert_int_le(np, 64);
                    for (int64_t i = 0; i < np; i++)
                        ps[i] = mml_model_param(m, i);
                    mml_optimizer *opt = make_opt(ctx, kinds[ki], ps, np);
                    for (int i = 0; i < NB; i++)
                        make_batch(&batches[i], 1000 + (uint64_t)i, n_mh);
                    long first = al.calls;
                    train_step(ctx, m, opt, ps, np, &batches[0], variants[vi].mode);
                    ck_assert_int_gt(al.calls, first); /* the scratch: the count sees the step */
                    long calls = al.calls, live = al.live;
                    for (int round = 0; round < 2; round++)
                        for (int i = 0; i < NB; i++) {
                            train_step(ctx, m, opt, ps, np, &batches[i], variants[vi].mode);
                            ck_assert_msg(al.calls == calls && al.live == live,
                                          "%u threads, %s %s, optimizer %d, multi-hot %d: batch %d "
                                          "of round %d allocated %ld times (%ld live blocks more)",
                                          threads, backbones[bi], variants[vi].name, kinds[ki], n_mh, i,
                                          round, al.calls - calls, al.live - live);
                        }
                    mml_optimizer_destroy(opt);
                    mml_model_destroy(m);
                    mml_ctx_destroy(ctx);
                    ck_assert_int_eq(al.live, 0);
                }
}
END_TEST

static Suite *step_suite(void)
{
    Suite *s = suite_create("step");
    TCase *tc = tcase_create("sparse");
    tcase_add_test(tc, lazy_adam_moves_only_rows_in_the_batch);
    tcase_add_test(tc, adagrad_moves_only_rows_in_the_batch);
    tcase_add_test(tc, zero_grad_leaves_every_gradient_zero);
    tcase_add_test(tc, model_steps_move_only_rows_in_the_batch);
    suite_add_tcase(s, tc);
    tc = tcase_create("allocations");
    tcase_add_test(tc, step_allocates_nothing_after_the_first_batch);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(step_suite()); }
