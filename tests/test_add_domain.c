/* Adding a domain to a trained MoE-MLoRA model: the old domains' predictions
 * and every old parameter stay bit for bit, the new experts get weight 0 for
 * the old domains, the grown model survives a save and load, bad input is
 * refused with a message, and allocation failures fail cleanly. */
#include "testutil.h"

#define D_ALL 3 /* the synthetic domains; the model is trained on the first two */
static const int32_t hidden[2] = {64, 32};
static const int32_t tiny_hidden[2] = {8, 4};
static int wide; /* nonzero: the default tower 256, 128, 64 (ranks 16, 8, 4) */
static int top_k; /* the gate's top_k */
static int tiny; /* nonzero: a tower of 8, 4 and fewer rows (the allocation sweep) */
static int tuned; /* 1: the moe-tuned preset; 2: it with a gate over the rows' embeddings */

typedef struct world {
    mml_ctx *ctx;
    mml_dataset *tr, *va, *te;    /* all domains */
    mml_dataset *otr, *ova, *ote; /* without the last */
    mml_model *old;               /* MoE-MLoRA trained on the first D_ALL - 1 */
} world;

static int make_data(world *w)
{
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_domains = D_ALL;
    so.n_rows = tiny ? 900 : wide ? 800 : 3000;
    so.n_users = tiny ? 10 : 40;
    so.n_items = tiny ? 8 : 20;
    int rc = mml_synthetic_generate(w->ctx, &so, &w->tr, &w->va, &w->te);
    if (rc >= 0)
        rc = mml_dataset_drop_domain(&w->otr, w->tr, D_ALL - 1);
    if (rc >= 0)
        rc = mml_dataset_drop_domain(&w->ova, w->va, D_ALL - 1);
    if (rc >= 0)
        rc = mml_dataset_drop_domain(&w->ote, w->te, D_ALL - 1);
    return rc;
}

/* Trained models by configuration, as files: without fork (valgrind) the
 * tests of one process load them instead of training again. */
static struct {
    char key[128];
    void *data;
    size_t size;
} cache[16];

static int train_model(mml_ctx *ctx, const char *backbone, int32_t variant, int32_t m,
                       const mml_dataset *tr, const mml_dataset *va, mml_model **out)
{
    char key[128];
    snprintf(key, sizeof key, "%s/%d/%d/%d/%d/%d/%d/%lld/%d", backbone, variant, m, wide, tiny,
             top_k, tuned, (long long)mml_dataset_n_rows(tr), mml_dataset_n_domains(tr));
    int slot = 0;
    while (slot < 16 && cache[slot].data && strcmp(cache[slot].key, key))
        slot++;
    if (slot < 16 && cache[slot].data)
        return mml_model_load_mem(out, ctx, cache[slot].data, cache[slot].size);
    mml_trainer_options to;
    mml_trainer_options_init(&to);
    if (tuned)
        ck_assert_int_eq(mml_trainer_options_moe_tuned(&to), MML_OK);
    if (tuned == 2)
        to.gate_input = MML_GATE_INPUT_EMBEDDINGS;
    to.variant = variant;
    to.backbone = backbone;
    to.experts_per_domain = m;
    if (!wide) {
        to.n_hidden = 2;
        to.hidden = tiny ? tiny_hidden : hidden;
    }
    to.batch_size = 256;
    to.max_epochs = 2;
    to.gate_top_k = top_k;
    mml_trainer *t = NULL;
    int rc = mml_trainer_create(&t, ctx, &to, tr, va);
    if (rc >= 0)
        rc = mml_trainer_run(t);
    if (rc >= 0)
        rc = mml_trainer_take_model(t, out);
    mml_trainer_destroy(t);
    void *d = NULL;
    size_t n = 0;
    if (rc >= 0 && slot < 16 && mml_model_save_mem(*out, &d, &n) == MML_OK) {
        if ((cache[slot].data = malloc(n))) {
            memcpy(cache[slot].data, d, n);
            cache[slot].size = n;
            snprintf(cache[slot].key, sizeof cache[slot].key, "%s", key);
        }
        mml_ctx_free(ctx, d, n);
    }
    return rc;
}

static void world_make(world *w, uint32_t threads, const char *backbone, int32_t m)
{
    memset(w, 0, sizeof *w);
    w->ctx = plain_ctx(threads, 7);
    ck_assert_int_eq(make_data(w), MML_OK);
    ck_assert_int_eq(mml_dataset_n_domains(w->otr), D_ALL - 1);
    ck_assert_int_eq(mml_dataset_domain_rows(w->otr, 0), mml_dataset_domain_rows(w->tr, 0));
    ck_assert_int_eq(train_model(w->ctx, backbone, MML_VARIANT_MOE, m, w->otr, w->ova, &w->old),
                     MML_OK);
}

static void world_free(world *w)
{
    mml_model_destroy(w->old);
    mml_dataset *sets[6] = {w->tr, w->va, w->te, w->otr, w->ova, w->ote};
    for (int i = 0; i < 6; i++)
        mml_dataset_destroy(sets[i]);
    mml_ctx_destroy(w->ctx);
}

/* Releases a grown model, its data sets and the world. */
static void grown_free(mml_model *g, mml_dataset *tr, mml_dataset *va, mml_dataset *te, world *w)
{
    mml_model_destroy(g);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(va);
    mml_dataset_destroy(te);
    world_free(w);
}

static mml_add_domain_options quick_options(void)
{
    mml_add_domain_options o;
    mml_add_domain_options_init(&o);
    o.batch_size = 128;
    o.max_epochs = 2;
    return o;
}

/* Probabilities of ds's rows of domains 0 .. n_domains - 1, batched per
 * domain (batches of 100 rows, the last one shorter), then 5 single rows. */
static float *predict_old_domains(mml_model *m, const mml_dataset *ds, int32_t n_domains,
                                  int64_t *n_out)
{
    int64_t n = 0;
    for (int32_t d = 0; d < n_domains; d++)
        n += mml_dataset_domain_rows(ds, d);
    float *p = malloc(sizeof(float) * (size_t)(n + 5));
    ck_assert_ptr_nonnull(p);
    int64_t at = 0;
    mml_ctx *ctx = NULL;
    for (int32_t d = 0; d < n_domains; d++) {
        mml_batcher_options bo;
        mml_batcher_options_init(&bo);
        bo.shuffle = 0;
        bo.batch_size = 100;
        bo.domain = d;
        mml_batcher *bt = NULL;
        ctx = plain_ctx(1, 1);
        ck_assert_int_eq(mml_batcher_create(&bt, ctx, ds, &bo), MML_OK);
        ck_assert_int_eq(mml_batcher_start_epoch(bt, 0), MML_OK);
        mml_batch_view b;
        int rc;
        while ((rc = mml_batcher_next(bt, &b)) == 1) {
            ck_assert_int_eq(mml_model_predict(m, &b, MML_MIX_GATED, 0, p + at), MML_OK);
            at += b.n_rows;
        }
        ck_assert_int_eq(rc, 0);
        mml_batcher_destroy(bt);
        mml_ctx_destroy(ctx);
    }
    for (int64_t i = 0, k = 0; k < 5 && i < mml_dataset_n_rows(ds); i++) {
        mml_batch_view b;
        ck_assert_int_eq(mml_dataset_view(ds, i, 1, &b), MML_OK);
        if (b.domain[0] >= n_domains)
            continue;
        ck_assert_int_eq(mml_model_predict(m, &b, MML_MIX_GATED, 0, p + at), MML_OK);
        at++;
        k++;
    }
    *n_out = at;
    return p;
}

static double domain_auc(mml_model *m, const mml_dataset *ds, int32_t d)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    int64_t n = mml_dataset_n_rows(ds), k = 0;
    float *s = malloc(sizeof(float) * (size_t)n), *l = malloc(sizeof(float) * (size_t)n);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(l);
    for (int64_t i = 0; i < n; i++) {
        mml_batch_view b;
        ck_assert_int_eq(mml_dataset_view(ds, i, 1, &b), MML_OK);
        if (b.domain[0] != d)
            continue;
        ck_assert_int_eq(mml_model_predict(m, &b, MML_MIX_GATED, 0, s + k), MML_OK);
        l[k++] = b.labels[0];
    }
    double auc = 0.0;
    int32_t def = 0;
    ck_assert_int_eq(mml_auc_ex(ctx, s, l, k, &auc, &def), MML_OK);
    ck_assert_int_eq(def, 1);
    free(s);
    free(l);
    mml_ctx_destroy(ctx);
    return auc;
}

/* Grows w->old by the last domain and trains it. */
static mml_model *grow_and_train(world *w, mml_dataset **gtr, mml_dataset **gva, mml_dataset **gte)
{
    mml_add_domain_options o = quick_options();
    mml_model *g = NULL;
    ck_assert_int_eq(mml_model_add_domain(&g, w->old, w->tr, &o), MML_OK);
    ck_assert_int_eq(mml_model_n_domains(g), D_ALL);
    ck_assert_int_eq(mml_dataset_for_model(gtr, w->tr, g), MML_OK);
    ck_assert_int_eq(mml_dataset_for_model(gva, w->va, g), MML_OK);
    ck_assert_int_eq(mml_dataset_for_model(gte, w->te, g), MML_OK);
    ck_assert_int_eq(mml_model_train_domain(g, D_ALL - 1, *gtr, *gva, &o), MML_OK);
    return g;
}

static void check_unchanged(const char *backbone, uint32_t threads, int32_t m)
{
    world w;
    world_make(&w, threads, backbone, m);
    int64_t n0, n1, n2, n3;
    float *before = predict_old_domains(w.old, w.ote, D_ALL - 1, &n0);
    mml_dataset *gtr = NULL, *gva = NULL, *gte = NULL;
    /* Grown, untrained: the same bits already. */
    mml_add_domain_options o = quick_options();
    mml_model *g0 = NULL;
    ck_assert_int_eq(mml_model_add_domain(&g0, w.old, w.tr, &o), MML_OK);
    float *fresh = predict_old_domains(g0, w.ote, D_ALL - 1, &n1);
    ck_assert_int_eq(n0, n1);
    ck_assert_int_eq(memcmp(before, fresh, sizeof(float) * (size_t)n0), 0);
    mml_model_destroy(g0);
    mml_model *g = grow_and_train(&w, &gtr, &gva, &gte);
    float *after = predict_old_domains(g, w.ote, D_ALL - 1, &n2);
    ck_assert_int_eq(n0, n2);
    ck_assert_int_eq(memcmp(before, after, sizeof(float) * (size_t)n0), 0);
    /* The same rows mapped through the grown schema give the same bits. */
    float *mapped = predict_old_domains(g, gte, D_ALL - 1, &n3);
    ck_assert_int_eq(n0, n3);
    ck_assert_int_eq(memcmp(before, mapped, sizeof(float) * (size_t)n0), 0);
    /* And after making both read-only (one thread, no split). */
    ck_assert_int_eq(mml_model_make_readonly(w.old), MML_OK);
    ck_assert_int_eq(mml_model_make_readonly(g), MML_OK);
    float *ro_old = predict_old_domains(w.old, w.ote, D_ALL - 1, &n1);
    float *ro_new = predict_old_domains(g, w.ote, D_ALL - 1, &n2);
    ck_assert_int_eq(memcmp(ro_old, ro_new, sizeof(float) * (size_t)n1), 0);
    /* The new domain learned something. */
    double auc = domain_auc(g, gte, D_ALL - 1);
    ck_assert_msg(wide || auc > 0.55, "new domain's test AUC %.4f", auc); /* wide: few rows */
    free(before);
    free(fresh);
    free(after);
    free(mapped);
    free(ro_old);
    free(ro_new);
    grown_free(g, gtr, gva, gte, &w);
}

START_TEST(old_domains_unchanged_mlp)
{
    check_unchanged("mlp", (uint32_t)(_i + 1), 1);
}
END_TEST

START_TEST(old_domains_unchanged_deepfm)
{
    check_unchanged("deepfm", (uint32_t)(_i + 1), 1);
}
END_TEST

START_TEST(old_domains_unchanged_two_experts)
{
    wide = 1;
    check_unchanged(_i ? "dcn" : "mlp", 2, 2);
    wide = 0;
}
END_TEST

START_TEST(old_domains_unchanged_top_k)
{
    top_k = 2; /* of 4 experts for the old domains, 6 for the grown model */
    check_unchanged("mlp", 1, 2);
    top_k = 0;
}
END_TEST

/* The moe-tuned preset (a per-domain logit table, stage 4) and a gate that
 * also reads the rows' embeddings: the old domains keep their bits too. */
START_TEST(old_domains_unchanged_moe_tuned)
{
    tuned = 1 + _i;
    check_unchanged("mlp", 2, 1);
    tuned = 0;
}
END_TEST

START_TEST(new_experts_get_zero_weight)
{
    world w;
    world_make(&w, 1, "mlp", 2);
    mml_dataset *gtr = NULL, *gva = NULL, *gte = NULL;
    mml_model *g = grow_and_train(&w, &gtr, &gva, &gte);
    int32_t D = D_ALL - 1, E = mml_model_n_experts(w.old), E2 = mml_model_n_experts(g);
    ck_assert_int_eq(E, 2 * D);
    ck_assert_int_eq(E2, E + 2);
    float *t0 = malloc(sizeof(float) * (size_t)(D * E)), *t1 = malloc(sizeof(float) * (size_t)(D_ALL * E2));
    ck_assert_int_eq(mml_gate_table(mml_model_gate(w.old), t0), MML_OK);
    ck_assert_int_eq(mml_gate_table(mml_model_gate(g), t1), MML_OK);
    for (int32_t d = 0; d < D; d++) {
        ck_assert_int_eq(memcmp(t0 + d * E, t1 + d * E2, sizeof(float) * (size_t)E), 0);
        for (int32_t e = E; e < E2; e++) {
            ck_assert_msg(t1[d * E2 + e] == 0.0f && !signbit(t1[d * E2 + e]),
                          "domain %d, new expert %d: weight %g", d, e, (double)t1[d * E2 + e]);
            ck_assert_int_eq(mml_model_expert_allowed(g, d, e), 0);
        }
    }
    double sum = 0.0;
    for (int32_t e = 0; e < E2; e++) {
        sum += t1[D * E2 + e];
        ck_assert_int_eq(mml_model_expert_allowed(g, D, e), 1);
        ck_assert_int_eq(mml_model_expert_domain(g, e), e < E ? e % D : D);
    }
    ck_assert(fabs(sum - 1.0) < 1e-5);
    ck_assert_int_eq(mml_model_expert_allowed(w.old, 0, E - 1), 1);
    ck_assert_int_eq(mml_model_expert_allowed(g, D_ALL, 0), -1);
    ck_assert_int_eq(mml_model_expert_domain(g, E2), -1);
    free(t0);
    free(t1);
    grown_free(g, gtr, gva, gte, &w);
}
END_TEST

/* Sessions on the read-only models, MML_MIX_OWN and raw rows by domain name. */
START_TEST(sessions_and_own_mixture)
{
    world w;
    world_make(&w, 2, "mlp", 2);
    mml_dataset *gtr = NULL, *gva = NULL, *gte = NULL;
    mml_model *g = grow_and_train(&w, &gtr, &gva, &gte);
    int32_t D = D_ALL - 1;
    int64_t n = mml_dataset_n_rows(w.ote);
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    /* Own experts: the old domains' mixture keeps its bits too. */
    for (int64_t s0 = 0; s0 < n; s0 += 100) {
        mml_batch_view v;
        int64_t k = n - s0 < 100 ? n - s0 : 100;
        ck_assert_int_eq(mml_dataset_view(w.ote, s0, k, &v), MML_OK);
        ck_assert_int_eq(mml_model_predict(w.old, &v, MML_MIX_OWN, 0, a + s0), MML_OK);
        ck_assert_int_eq(mml_model_predict(g, &v, MML_MIX_OWN, 0, b + s0), MML_OK);
    }
    ck_assert_int_eq(memcmp(a, b, sizeof(float) * (size_t)n), 0);
    ck_assert_int_eq(mml_model_make_readonly(w.old), MML_OK);
    ck_assert_int_eq(mml_model_make_readonly(g), MML_OK);
    mml_session *so = NULL, *sg = NULL;
    ck_assert_int_eq(mml_session_create(&so, w.ctx, w.old, NULL), MML_OK);
    ck_assert_int_eq(mml_session_create(&sg, w.ctx, g, NULL), MML_OK);
    for (int64_t s0 = 0; s0 < n; s0 += 100) {
        mml_batch_view v;
        int64_t k = n - s0 < 100 ? n - s0 : 100;
        ck_assert_int_eq(mml_dataset_view(w.ote, s0, k, &v), MML_OK);
        ck_assert_int_eq(mml_session_predict(so, &v, a + s0, NULL), MML_OK);
        ck_assert_int_eq(mml_session_predict(sg, &v, b + s0, NULL), MML_OK);
    }
    ck_assert_int_eq(memcmp(a, b, sizeof(float) * (size_t)n), 0);
    /* Raw rows: the grown schema knows the new domain. */
    const char *cols[4] = {"label", "domain", "user", "item"};
    ck_assert_int_eq(mml_session_bind_columns(sg, 4, cols), MML_OK);
    const char *row_new[4] = {"1", "2", "3", "4"}, *row_bad[4] = {"1", "3", "3", "4"};
    float p[2];
    int32_t st[2];
    ck_assert_int_eq(mml_session_predict_raw(sg, 1, row_new, NULL, p, st, NULL), MML_OK);
    ck_assert_int_eq(st[0], MML_OK);
    ck_assert(p[0] > 0.0f && p[0] < 1.0f);
    ck_assert_int_eq(mml_session_predict_raw(sg, 1, row_bad, NULL, p, st, NULL), MML_OK);
    ck_assert_int_eq(st[0], MML_ERANGE);
    (void)D;
    mml_session_destroy(so);
    mml_session_destroy(sg);
    free(a);
    free(b);
    grown_free(g, gtr, gva, gte, &w);
}
END_TEST

/* A grown model gains another domain: the first three keep their bits. */
START_TEST(two_domains_in_turn)
{
    mml_ctx *ctx = plain_ctx(2, 5);
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_domains = 4;
    so.n_rows = 4000;
    so.n_users = 40;
    so.n_items = 20;
    mml_dataset *tr = NULL, *va = NULL, *te = NULL, *tr3 = NULL, *va3 = NULL, *tr2 = NULL,
                *va2 = NULL;
    ck_assert_int_eq(mml_synthetic_generate(ctx, &so, &tr, &va, &te), MML_OK);
    ck_assert_int_eq(mml_dataset_drop_domain(&tr3, tr, 3), MML_OK);
    ck_assert_int_eq(mml_dataset_drop_domain(&va3, va, 3), MML_OK);
    ck_assert_int_eq(mml_dataset_drop_domain(&tr2, tr3, 2), MML_OK);
    ck_assert_int_eq(mml_dataset_drop_domain(&va2, va3, 2), MML_OK);
    mml_model *m2 = NULL, *m3 = NULL, *m4 = NULL;
    ck_assert_int_eq(train_model(ctx, "deepfm", MML_VARIANT_MOE, 1, tr2, va2, &m2), MML_OK);
    mml_add_domain_options o = quick_options();
    mml_dataset *a = NULL, *b = NULL, *c = NULL, *e = NULL, *t4 = NULL;
    ck_assert_int_eq(mml_model_add_domain(&m3, m2, tr3, &o), MML_OK);
    ck_assert_int_eq(mml_dataset_for_model(&a, tr3, m3), MML_OK);
    ck_assert_int_eq(mml_dataset_for_model(&b, va3, m3), MML_OK);
    ck_assert_int_eq(mml_model_train_domain(m3, 2, a, b, &o), MML_OK);
    ck_assert_int_eq(mml_model_add_domain(&m4, m3, tr, &o), MML_OK);
    ck_assert_int_eq(mml_model_n_domains(m4), 4);
    ck_assert_int_eq(mml_model_n_experts(m4), 4);
    ck_assert_int_eq(mml_dataset_for_model(&c, tr, m4), MML_OK);
    ck_assert_int_eq(mml_dataset_for_model(&e, va, m4), MML_OK);
    ck_assert_int_eq(mml_dataset_for_model(&t4, te, m4), MML_OK);
    ck_assert_int_eq(mml_model_train_domain(m4, 3, c, e, &o), MML_OK);
    for (int32_t d = 0; d < 4; d++)
        for (int32_t x = 0; x < 4; x++)
            ck_assert_int_eq(mml_model_expert_allowed(m4, d, x), d == 3 || x <= d || x < 2);
    ck_assert_int_eq(mml_model_expert_domain(m4, 2), 2);
    ck_assert_int_eq(mml_model_expert_domain(m4, 3), 3);
    int64_t n1, n2;
    float *p3 = predict_old_domains(m3, t4, 3, &n1), *p4 = predict_old_domains(m4, t4, 3, &n2);
    ck_assert_int_eq(n1, n2);
    ck_assert_int_eq(memcmp(p3, p4, sizeof(float) * (size_t)n1), 0);
    free(p3);
    free(p4);
    mml_dataset *sets[12] = {tr, va, te, tr3, va3, tr2, va2, a, b, c, e, t4};
    for (int i = 0; i < 12; i++)
        mml_dataset_destroy(sets[i]);
    mml_model_destroy(m2);
    mml_model_destroy(m3);
    mml_model_destroy(m4);
    mml_ctx_destroy(ctx);
}
END_TEST

static mml_param *by_name(mml_model *m, const char *name)
{
    for (int64_t i = 0; i < mml_model_n_params(m); i++)
        if (!strcmp(mml_model_param(m, i)->name, name))
            return mml_model_param(m, i);
    return NULL;
}

START_TEST(frozen_parameters_unchanged)
{
    world w;
    world_make(&w, 2, _i ? "deepfm" : "mlp", 1);
    mml_dataset *gtr = NULL, *gva = NULL, *gte = NULL;
    mml_model *g = grow_and_train(&w, &gtr, &gva, &gte);
    int32_t D = mml_model_n_domains(w.old), E = mml_model_n_experts(w.old);
    int64_t changed_new = 0;
    for (int64_t i = 0; i < mml_model_n_params(w.old); i++) {
        const mml_param *q = mml_model_param(w.old, i);
        const mml_param *p = by_name(g, q->name);
        ck_assert_msg(p != NULL, "%s is missing", q->name);
        ck_assert_int_eq(p->cols >= q->cols, 1);
        /* Every old row, and in each the old columns. */
        for (int64_t r = 0; r < q->rows; r++)
            ck_assert_msg(!memcmp(p->value + r * p->cols, q->value + r * q->cols,
                                  sizeof(float) * (size_t)q->cols),
                          "%s row %lld changed", q->name, (long long)r);
        if (p->rows > q->rows) /* the domain field's tables and the gate's embedding */
            ck_assert_int_eq(p->rows, D + 1);
        if (p->cols > q->cols)
            ck_assert_int_eq(p->cols, E + 1);
    }
    /* The new parameters moved. */
    for (int64_t i = 0; i < mml_model_n_params(g); i++) {
        const mml_param *p = mml_model_param(g, i);
        if (p->group == MML_GROUP_EXPERT && p->expert == E)
            for (int64_t j = 0; j < mml_param_size(p); j++)
                changed_new += p->value[j] != 0.0f;
    }
    ck_assert_int_gt(changed_new, 0);
    grown_free(g, gtr, gva, gte, &w);
}
END_TEST

START_TEST(save_load_round_trip)
{
    world w;
    world_make(&w, 1, "mlp", 1);
    mml_dataset *gtr = NULL, *gva = NULL, *gte = NULL;
    mml_model *g = grow_and_train(&w, &gtr, &gva, &gte);
    void *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(mml_model_save_mem(g, &data, &size), MML_OK);
    mml_ctx *ctx2 = plain_ctx(1, 99);
    mml_model *h = NULL;
    ck_assert_int_eq(mml_model_load_mem(&h, ctx2, data, size), MML_OK);
    ck_assert_int_eq(mml_model_n_domains(h), D_ALL);
    ck_assert_int_eq(mml_model_n_experts(h), mml_model_n_experts(g));
    for (int32_t d = 0; d < D_ALL; d++)
        for (int32_t e = 0; e < mml_model_n_experts(g); e++)
            ck_assert_int_eq(mml_model_expert_allowed(h, d, e), mml_model_expert_allowed(g, d, e));
    int64_t n1, n2;
    float *a = predict_old_domains(g, gte, D_ALL, &n1);
    float *b = predict_old_domains(h, gte, D_ALL, &n2);
    ck_assert_int_eq(n1, n2);
    ck_assert_int_eq(memcmp(a, b, sizeof(float) * (size_t)n1), 0);
    /* The loaded model maps raw data itself and can gain another domain's
     * worth of checks: its schema knows the new domain by name. */
    mml_dataset *again = NULL;
    ck_assert_int_eq(mml_dataset_for_model(&again, w.te, h), MML_OK);
    ck_assert_int_eq(mml_dataset_n_domains(again), D_ALL);
    ck_assert_str_eq(mml_dataset_domain_name(again, D_ALL - 1), mml_dataset_domain_name(w.te, D_ALL - 1));
    /* A damaged mask section is refused. */
    uint8_t *bad = malloc(size);
    memcpy(bad, data, size);
    mml_model *x = NULL;
    int found = 0;
    for (size_t i = 64; i + 32 <= size && !found; i += 32)
        if (!memcmp(bad + i, "DOMX", 4)) {
            found = 1;
            bad[i + 8] ^= 0x40; /* its offset */
        }
    ck_assert(found);
    ck_assert_int_lt(mml_model_load_mem(&x, ctx2, bad, size), 0);
    ck_assert_ptr_null(x);
    free(bad);
    free(a);
    free(b);
    mml_dataset_destroy(again);
    mml_model_destroy(h);
    mml_ctx_free(w.ctx, data, size);
    mml_ctx_destroy(ctx2);
    grown_free(g, gtr, gva, gte, &w);
}
END_TEST

static void expect_error(mml_ctx *ctx, int rc, int want, const char *what)
{
    ck_assert_msg(rc == want, "%s: %d (%s), expected %d", what, rc, mml_ctx_last_error(ctx), want);
    ck_assert_msg(strlen(mml_ctx_last_error(ctx)) > 0, "%s: no message", what);
}

START_TEST(errors_are_reported)
{
    world w;
    world_make(&w, 1, "mlp", 1);
    mml_ctx *ctx = w.ctx;
    mml_add_domain_options o = quick_options();
    mml_model *g = NULL, *mlora = NULL;
    /* Not MoE-MLoRA. */
    ck_assert_int_eq(train_model(ctx, "mlp", MML_VARIANT_MLORA, 1, w.otr, w.ova, &mlora), MML_OK);
    expect_error(ctx, mml_model_add_domain(&g, mlora, w.tr, &o), MML_EINVAL, "MLoRA model");
    ck_assert_ptr_null(g);
    /* No new domain in the data. */
    expect_error(ctx, mml_model_add_domain(&g, w.old, w.otr, &o), MML_ENOTFOUND, "no new domain");
    ck_assert_ptr_null(g);
    /* Data in another schema: other field names. */
    char path[] = "/tmp/mml_add_domain_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs("label,domain,a,b\n", f);
    for (int i = 0; i < 40; i++)
        fprintf(f, "%d,d%d,u%d,i%d\n", i % 2, i % 3, i % 7, i % 5);
    fclose(f);
    mml_csv_options co;
    mml_csv_options_init(&co);
    mml_dataset *c1 = NULL, *c2 = NULL, *c3 = NULL;
    ck_assert_int_eq(mml_csv_load(ctx, &co, path, path, path, &c1, &c2, &c3), MML_OK);
    expect_error(ctx, mml_model_add_domain(&g, w.old, c1, &o), MML_ESHAPE, "mismatched schema");
    ck_assert_ptr_null(g);
    mml_dataset *mapped = NULL;
    expect_error(ctx, mml_dataset_for_model(&mapped, c1, w.old), MML_ESHAPE, "map: other fields");
    ck_assert_ptr_null(mapped);
    /* A domain the model does not know. */
    expect_error(ctx, mml_dataset_for_model(&mapped, w.tr, w.old), MML_ERANGE, "unknown domain");
    /* Bad options. */
    o.n_experts = -1;
    expect_error(ctx, mml_model_add_domain(&g, w.old, w.tr, &o), MML_EINVAL, "n_experts -1");
    o = quick_options();
    /* Training a domain whose experts the others use. */
    ck_assert_int_eq(mml_model_add_domain(&g, w.old, w.tr, &o), MML_OK);
    mml_dataset *gtr = NULL, *gva = NULL;
    ck_assert_int_eq(mml_dataset_for_model(&gtr, w.tr, g), MML_OK);
    ck_assert_int_eq(mml_dataset_for_model(&gva, w.va, g), MML_OK);
    expect_error(ctx, mml_model_train_domain(g, 0, gtr, gva, &o), MML_ESTATE, "old domain");
    expect_error(ctx, mml_model_train_domain(g, D_ALL, gtr, gva, &o), MML_ERANGE, "domain range");
    expect_error(ctx, mml_model_train_domain(g, D_ALL - 1, w.otr, gva, &o), MML_ESHAPE,
                 "unmapped data");
    expect_error(ctx, mml_model_train_domain(w.old, 0, w.otr, w.ova, &o), MML_ESTATE,
                 "model that gained no domain");
    mml_model_destroy(g);
    g = NULL;
    ck_assert_int_eq(mml_model_add_domain(NULL, w.old, w.tr, &o), MML_EINVAL);
    ck_assert_int_eq(mml_model_add_domain(&g, NULL, w.tr, &o), MML_EINVAL);
    ck_assert_ptr_null(g);
    /* The trainer does not start from a grown model (its mask would be lost). */
    mml_trainer_options to;
    mml_trainer_options_init(&to);
    to.init_model = g;
    mml_trainer *tr = NULL;
    ck_assert_int_eq(mml_model_add_domain(&g, w.old, w.tr, &o), MML_OK);
    to.init_model = g;
    expect_error(ctx, mml_trainer_create(&tr, ctx, &to, gtr, gva), MML_ESTATE, "trainer init");
    ck_assert_ptr_null(tr);
    mml_model_destroy(g);
    g = NULL;
    /* Dropping domains: bad arguments. */
    mml_dataset *dd = NULL;
    expect_error(ctx, mml_dataset_drop_domain(&dd, w.tr, D_ALL), MML_ERANGE, "drop range");
    ck_assert_ptr_null(dd);
    remove(path);
    mml_dataset_destroy(gtr);
    mml_dataset_destroy(gva);
    mml_dataset_destroy(c1);
    mml_dataset_destroy(c2);
    mml_dataset_destroy(c3);
    mml_model_destroy(mlora);
    world_free(&w);
}
END_TEST

/* Every allocation of add, map and train fails in turn: each failure is a
 * clean MML_ENOMEM, nothing leaks, and the old model is untouched. */
START_TEST(allocation_failures_fail_cleanly)
{
    counting_allocator a;
    world w;
    memset(&w, 0, sizeof w);
    tiny = 1;
    w.ctx = counting_ctx(&a, 0, 1, 7);
    ck_assert_ptr_nonnull(w.ctx);
    ck_assert_int_eq(make_data(&w), MML_OK);
    ck_assert_int_eq(train_model(w.ctx, "mlp", MML_VARIANT_MOE, 1, w.otr, w.ova, &w.old), MML_OK);
    int64_t n0, n1;
    float *before = predict_old_domains(w.old, w.ote, D_ALL - 1, &n0);
    mml_add_domain_options o = quick_options();
    o.max_epochs = 1;
    int done = 0;
    long failures = 0;
    for (long k = 1; !done && k < 20000; k++) {
        long live = a.live;
        a.fail_at = a.calls + k;
        mml_model *g = NULL;
        mml_dataset *gtr = NULL, *gva = NULL;
        int rc = mml_model_add_domain(&g, w.old, w.tr, &o);
        if (rc >= 0)
            rc = mml_dataset_for_model(&gtr, w.tr, g);
        if (rc >= 0)
            rc = mml_dataset_for_model(&gva, w.va, g);
        if (rc >= 0)
            rc = mml_model_train_domain(g, D_ALL - 1, gtr, gva, &o);
        int hit = a.calls >= a.fail_at;
        a.fail_at = 0;
        if (rc >= 0) {
            done = !hit; /* a failure the code could do without */
        } else {
            ck_assert_msg(rc == MML_ENOMEM, "failure at allocation %ld: %d (%s)", k, rc,
                          mml_ctx_last_error(w.ctx));
            failures++;
        }
        mml_model_destroy(g);
        mml_dataset_destroy(gtr);
        mml_dataset_destroy(gva);
        ck_assert_msg(a.live == live, "allocation %ld: %ld blocks leaked", k, a.live - live);
    }
    ck_assert(done);
    ck_assert_int_gt(failures, 10);
    printf("allocation failures: %ld, all clean\n", failures);
    tiny = 0;
    float *after = predict_old_domains(w.old, w.ote, D_ALL - 1, &n1);
    ck_assert_int_eq(memcmp(before, after, sizeof(float) * (size_t)n0), 0);
    free(before);
    free(after);
    world_free(&w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("add_domain");
    TCase *t = tcase_create("add_domain");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, old_domains_unchanged_mlp, 0, 2);
    tcase_add_loop_test(t, old_domains_unchanged_deepfm, 0, 2);
    tcase_add_test(t, old_domains_unchanged_top_k);
    tcase_add_loop_test(t, old_domains_unchanged_moe_tuned, 0, 2);
    tcase_add_test(t, new_experts_get_zero_weight);
    tcase_add_loop_test(t, frozen_parameters_unchanged, 0, 2);
    tcase_add_test(t, save_load_round_trip);
    tcase_add_test(t, sessions_and_own_mixture);
    tcase_add_test(t, two_domains_in_turn);
    tcase_add_test(t, errors_are_reported);
    suite_add_tcase(s, t);
    TCase *wt = tcase_create("wide");
    tcase_set_timeout(wt, 600);
    tcase_add_loop_test(wt, old_domains_unchanged_two_experts, 0, 2);
    suite_add_tcase(s, wt);
    TCase *a = tcase_create("allocation");
    tcase_set_timeout(a, 600);
    tcase_add_test(a, allocation_failures_fail_cleanly);
    suite_add_tcase(s, a);
    int rc = run_suite(s);
    for (int i = 0; i < 16; i++)
        free(cache[i].data);
    return rc;
}
