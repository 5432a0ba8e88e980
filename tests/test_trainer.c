/* The staged trainer: stage equivalences, real freezing, early stopping,
 * restore-best, cancellation and determinism. */
#include "internal.h"
#include "testutil.h"

static const int32_t hidden[2] = {16, 8};

typedef struct world {
    mml_ctx *ctx;
    mml_dataset *train, *val, *test;
} world;

static void world_init(world *w, uint64_t seed)
{
    w->ctx = plain_ctx(1, seed);
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_rows = 4000;
    so.n_domains = 3;
    so.n_users = 60;
    so.n_items = 40;
    so.seed = 5;
    ck_assert_int_eq(mml_synthetic_generate(w->ctx, &so, &w->train, &w->val, &w->test), MML_OK);
}

static void world_free(world *w)
{
    mml_dataset_destroy(w->train);
    mml_dataset_destroy(w->val);
    mml_dataset_destroy(w->test);
    mml_ctx_destroy(w->ctx);
}

static void tiny_options(mml_trainer_options *o, int32_t variant)
{
    mml_trainer_options_init(o);
    o->variant = variant;
    o->n_hidden = 2;
    o->hidden = hidden;
    o->alpha = 4;
    o->batch_size = 256;
    o->max_epochs = 3;
    o->lr = 3e-3f;
}

static mml_trainer *make_trainer(world *w, const mml_trainer_options *o)
{
    mml_trainer *t = NULL;
    int rc = mml_trainer_create(&t, w->ctx, o, w->train, w->val);
    ck_assert_msg(rc == MML_OK, "trainer_create: %s", mml_ctx_last_error(w->ctx));
    return t;
}

/* A copy of every parameter value of the model. */
typedef struct snap {
    int64_t n;
    float **v;
} snap;

static snap take(mml_model *m)
{
    snap s = {mml_model_n_params(m), NULL};
    s.v = malloc(sizeof(float *) * (size_t)s.n);
    for (int64_t i = 0; i < s.n; i++) {
        mml_param *p = mml_model_param(m, i);
        s.v[i] = malloc(sizeof(float) * (size_t)mml_param_size(p));
        memcpy(s.v[i], p->value, sizeof(float) * (size_t)mml_param_size(p));
    }
    return s;
}

static int same(const snap *s, mml_model *m, int64_t i)
{
    mml_param *p = mml_model_param(m, i);
    return memcmp(s->v[i], p->value, sizeof(float) * (size_t)mml_param_size(p)) == 0;
}

static void drop(snap *s)
{
    for (int64_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

START_TEST(base_equals_moe_stage_one)
{
    world w;
    world_init(&w, 42);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_BASE);
    mml_trainer *base = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(base), MML_OK);
    o.variant = MML_VARIANT_MOE;
    mml_trainer *moe = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run_stage(moe, MML_STAGE_BACKBONE), MML_OK);
    /* Same parameters in the same order, up to the experts and gate MoE adds. */
    mml_model *mb = mml_trainer_model(base), *mm = mml_trainer_model(moe);
    int64_t compared = 0;
    for (int64_t i = 0, j = 0; i < mml_model_n_params(mb); i++, j++) {
        mml_param *p = mml_model_param(mb, i), *q = mml_model_param(mm, j);
        while (q->group == MML_GROUP_EXPERT || q->group == MML_GROUP_GATE)
            q = mml_model_param(mm, ++j);
        ck_assert_str_eq(p->name, q->name);
        ck_assert_msg(memcmp(p->value, q->value, sizeof(float) * (size_t)mml_param_size(p)) == 0,
                      "%s differs", p->name);
        compared++;
    }
    ck_assert_int_gt(compared, 5);
    mml_stage_report rb, rm;
    ck_assert_int_eq(mml_trainer_stage_report(base, 0, &rb), MML_OK);
    ck_assert_int_eq(mml_trainer_stage_report(moe, 0, &rm), MML_OK);
    ck_assert_int_eq(rb.epochs, rm.epochs);
    ck_assert(rb.best_val == rm.best_val);
    ck_assert_int_eq(rb.stage, MML_STAGE_JOINT);
    ck_assert_int_eq(rm.stage, MML_STAGE_BACKBONE);
    ck_assert(rb.train_rows_per_s > 0);
    /* Test metrics after stage 1 equal base's. */
    mml_metrics *m1 = NULL, *m2 = NULL;
    mml_metrics_summary s1, s2;
    ck_assert_int_eq(mml_metrics_create(&m1, w.ctx, 3), MML_OK);
    ck_assert_int_eq(mml_metrics_create(&m2, w.ctx, 3), MML_OK);
    ck_assert_int_eq(mml_trainer_evaluate(base, w.test, MML_MIX_NONE, m1), MML_OK);
    ck_assert_int_eq(mml_trainer_evaluate(moe, w.test, MML_MIX_NONE, m2), MML_OK);
    ck_assert_int_eq(mml_metrics_compute(m1, &s1), MML_OK);
    ck_assert_int_eq(mml_metrics_compute(m2, &s2), MML_OK);
    ck_assert(s1.wauc == s2.wauc && s1.logloss == s2.logloss);
    ck_assert(s1.wauc > 0.55);
    mml_metrics_destroy(m1);
    mml_metrics_destroy(m2);
    mml_trainer_destroy(base);
    mml_trainer_destroy(moe);
    world_free(&w);
}
END_TEST

typedef struct watch {
    mml_model *model;
    snap before;   /* taken before stage 2 */
    int checks;
} watch;

/* During stage 2, the expert being trained is the only thing that may differ
 * from the snapshot, apart from experts trained before it. */
static int watch_experts(void *user, int32_t stage, int32_t expert, int32_t epoch, double *score)
{
    watch *wt = user;
    *score = 0.5 + 0.01 * epoch;
    if (stage != MML_STAGE_EXPERTS)
        return 0;
    for (int64_t i = 0; i < mml_model_n_params(wt->model); i++) {
        mml_param *p = mml_model_param(wt->model, i);
        int may_change = p->group == MML_GROUP_EXPERT && p->expert <= expert;
        if (!may_change && !same(&wt->before, wt->model, i))
            return -1;
        if (p->group == MML_GROUP_EXPERT && p->expert == expert && !same(&wt->before, wt->model, i))
            wt->checks++;
    }
    return 0;
}

START_TEST(stages_freeze_what_they_say)
{
    world w;
    world_init(&w, 7);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_MOE);
    o.experts_per_domain = 2;
    watch wt = {0};
    o.validate = watch_experts;
    o.validate_user = &wt;
    mml_trainer *t = make_trainer(&w, &o);
    mml_model *m = wt.model = mml_trainer_model(t);
    ck_assert_int_eq(mml_model_n_experts(m), 6);
    snap s0 = take(m);
    ck_assert_int_eq(mml_trainer_run_stage(t, MML_STAGE_EXPERTS), MML_ESTATE);
    ck_assert_int_eq(mml_trainer_run_stage(t, MML_STAGE_BACKBONE), MML_OK);
    for (int64_t i = 0; i < s0.n; i++) {
        mml_param *p = mml_model_param(m, i);
        int trained = p->group == MML_GROUP_EMBEDDING || p->group == MML_GROUP_BACKBONE;
        ck_assert_msg(same(&s0, m, i) == !trained, "stage 1: %s", p->name);
    }
    wt.before = take(m);
    ck_assert_int_eq(mml_trainer_run_stage(t, MML_STAGE_EXPERTS), MML_OK);
    ck_assert_int_gt(wt.checks, 0);
    for (int64_t i = 0; i < s0.n; i++) {
        mml_param *p = mml_model_param(m, i);
        ck_assert_msg(same(&wt.before, m, i) == (p->group != MML_GROUP_EXPERT), "stage 2: %s", p->name);
    }
    ck_assert_int_eq(mml_trainer_n_stage_reports(t), 1 + 6);
    mml_stage_report r;
    ck_assert_int_eq(mml_trainer_stage_report(t, 5, &r), MML_OK);
    ck_assert_int_eq(r.expert, 4);
    ck_assert_int_eq(r.domain, 1);
    snap s2 = take(m);
    float gate0[18], gate1[18];
    ck_assert_int_eq(mml_gate_table(mml_model_gate(m), gate0), MML_OK);
    ck_assert_int_eq(mml_trainer_run_stage(t, MML_STAGE_GATE), MML_OK);
    for (int64_t i = 0; i < s0.n; i++) {
        mml_param *p = mml_model_param(m, i);
        ck_assert_msg(same(&s2, m, i) == (p->group != MML_GROUP_GATE), "stage 3: %s", p->name);
    }
    ck_assert_int_eq(mml_gate_table(mml_model_gate(m), gate1), MML_OK);
    ck_assert_int_ne(memcmp(gate0, gate1, sizeof gate0), 0);
    ck_assert_int_eq(mml_trainer_run_stage(t, MML_STAGE_GATE), MML_ESTATE);
    ck_assert_int_eq(mml_trainer_mix_mode(t), MML_MIX_GATED);
    drop(&s0);
    drop(&s2);
    drop(&wt.before);
    mml_trainer_destroy(t);
    world_free(&w);
}
END_TEST

typedef struct script {
    mml_model *model;
    const double *scores;
    int n;
    int calls;
    snap at_best;
    int best_epoch;
} script;

static int scripted(void *user, int32_t stage, int32_t expert, int32_t epoch, double *score)
{
    (void)stage;
    (void)expert;
    script *s = user;
    ck_assert_int_lt(s->calls, s->n);
    *score = s->scores[s->calls++];
    if (epoch == s->best_epoch)
        s->at_best = take(s->model);
    return 0;
}

START_TEST(early_stopping_restores_the_best_epoch)
{
    world w;
    world_init(&w, 3);
    static const double scores[] = {0.50, 0.70, 0.60, 0.70, 0.69, 0.99};
    script sc = {NULL, scores, 6, 0, {0, NULL}, 2};
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_MLORA);
    o.max_epochs = 10;
    o.validate = scripted;
    o.validate_user = &sc;
    mml_trainer *t = make_trainer(&w, &o);
    sc.model = mml_trainer_model(t);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    /* Epoch 2 is best (0.70 later is not strictly greater); 3 bad epochs stop at 5. */
    ck_assert_int_eq(sc.calls, 5);
    mml_stage_report r;
    ck_assert_int_eq(mml_trainer_stage_report(t, 0, &r), MML_OK);
    ck_assert_int_eq(r.epochs, 5);
    ck_assert_int_eq(r.best_epoch, 2);
    ck_assert(r.best_val == 0.70);
    for (int64_t i = 0; i < sc.at_best.n; i++)
        ck_assert(same(&sc.at_best, sc.model, i));
    ck_assert_int_eq(mml_trainer_n_epoch_reports(t), 5);
    mml_epoch_report er;
    ck_assert_int_eq(mml_trainer_epoch_report(t, 3, &er), MML_OK);
    ck_assert_int_eq(er.epoch, 4);
    ck_assert(er.val_score == 0.70 && er.train_loss > 0 && er.rows_per_s > 0);
    ck_assert_int_eq(mml_trainer_epoch_report(t, 5, &er), MML_ERANGE);
    drop(&sc.at_best);
    mml_trainer_destroy(t);
    world_free(&w);
}
END_TEST

static int cancel_after(void *user, const mml_progress *p)
{
    int *left = user;
    ck_assert(p->step >= 1 && p->step <= p->steps && p->rows_per_s > 0);
    return --*left <= 0;
}

START_TEST(progress_can_cancel)
{
    world w;
    world_init(&w, 3);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_BASE);
    o.batch_size = 16; /* several progress calls per epoch */
    int left = 3;
    o.progress = cancel_after;
    o.progress_user = &left;
    mml_trainer *t = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(t), MML_ECANCELED);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "canceled"));
    ck_assert_int_eq(left, 0);
    mml_trainer_destroy(t);
    world_free(&w);
}
END_TEST

START_TEST(same_seed_same_model)
{
    float *first = NULL;
    size_t n = 0;
    for (int run = 0; run < 3; run++) {
        world w;
        world_init(&w, run == 2 ? 99 : 11);
        mml_trainer_options o;
        tiny_options(&o, MML_VARIANT_MOE);
        o.max_epochs = 2;
        mml_trainer *t = make_trainer(&w, &o);
        ck_assert_int_eq(mml_trainer_run(t), MML_OK);
        mml_model *m = mml_trainer_model(t);
        size_t total = 0;
        for (int64_t i = 0; i < mml_model_n_params(m); i++)
            total += (size_t)mml_param_size(mml_model_param(m, i));
        float *all = malloc(sizeof(float) * total), *p = all;
        for (int64_t i = 0; i < mml_model_n_params(m); i++) {
            mml_param *q = mml_model_param(m, i);
            memcpy(p, q->value, sizeof(float) * (size_t)mml_param_size(q));
            p += mml_param_size(q);
        }
        if (run == 0) {
            first = all;
            n = total;
        } else {
            ck_assert_uint_eq(total, n);
            if (run == 1)
                ck_assert_int_eq(memcmp(first, all, sizeof(float) * n), 0);
            else
                ck_assert_int_ne(memcmp(first, all, sizeof(float) * n), 0);
            free(all);
        }
        mml_trainer_destroy(t);
        world_free(&w);
    }
    free(first);
}
END_TEST

START_TEST(bad_arguments)
{
    world w;
    world_init(&w, 1);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_BASE);
    mml_trainer *t = NULL;
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, NULL, w.val), MML_EINVAL);
    o.variant = 7;
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_EINVAL);
    tiny_options(&o, MML_VARIANT_BASE);
    o.patience = 0;
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_EINVAL);
    tiny_options(&o, MML_VARIANT_BASE);
    o.lr = -1;
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_EINVAL);
    tiny_options(&o, MML_VARIANT_BASE);
    o.backbone = "unknown";
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_ENOTFOUND);
    o.struct_size = 3;
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_EVERSION);
    ck_assert_ptr_null(t);
    tiny_options(&o, MML_VARIANT_BASE);
    t = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run_stage(t, MML_STAGE_BACKBONE), MML_ESTATE);
    ck_assert_int_eq(mml_trainer_evaluate(t, NULL, MML_MIX_NONE, NULL), MML_EINVAL);
    mml_metrics *m = NULL;
    ck_assert_int_eq(mml_metrics_create(&m, w.ctx, 2), MML_OK);
    ck_assert_int_eq(mml_trainer_evaluate(t, w.test, MML_MIX_NONE, m), MML_ESHAPE);
    mml_metrics_destroy(m);
    mml_trainer_destroy(t);
    mml_trainer_destroy(NULL);
    ck_assert_int_eq(mml_trainer_run(NULL), MML_EINVAL);
    world_free(&w);
}
END_TEST

START_TEST(allocation_failures_leak_nothing)
{
    counting_allocator a;
    for (long n = 1;; n++) {
        mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
        mml_synthetic_options so;
        mml_synthetic_options_init(&so);
        so.n_rows = 300;
        so.n_domains = 2;
        so.n_users = 10;
        so.n_items = 10;
        mml_dataset *tr = NULL, *va = NULL, *te = NULL;
        ck_assert_int_eq(mml_synthetic_generate(ctx, &so, &tr, &va, &te), MML_OK);
        long start = a.calls;
        a.fail_at = start + n;
        mml_trainer_options o;
        tiny_options(&o, MML_VARIANT_MOE);
        o.max_epochs = 1;
        o.batch_size = 64;
        mml_trainer *t = NULL;
        int rc = mml_trainer_create(&t, ctx, &o, tr, va);
        if (rc == MML_OK)
            rc = mml_trainer_run(t);
        mml_trainer_destroy(t);
        int failed = a.calls >= a.fail_at;
        a.fail_at = 0;
        mml_dataset_destroy(tr);
        mml_dataset_destroy(va);
        mml_dataset_destroy(te);
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(a.live, 0);
        if (!failed) {
            ck_assert_int_eq(rc, MML_OK);
            ck_assert_int_gt(n, 20);
            break;
        }
        ck_assert_msg(rc == MML_ENOMEM, "allocation %ld: rc %d", n, rc);
    }
}
END_TEST

/* The extras reach the model: a top-1 gate keeps one expert per domain, L2
 * changes the trained weights, and every optimiser kind trains. */
START_TEST(extras_pass_through)
{
    world w;
    world_init(&w, 13);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_MOE);
    o.experts_per_domain = 2;
    o.max_epochs = 1;
    o.gate_top_k = 1;
    mml_trainer *t = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    float g[3 * 6];
    ck_assert_int_eq(mml_gate_table(mml_model_gate(mml_trainer_model(t)), g), MML_OK);
    for (int d = 0; d < 3; d++) {
        int kept = 0;
        for (int e = 0; e < 6; e++)
            kept += g[d * 6 + e] != 0.0f;
        ck_assert_int_eq(kept, 1);
    }
    mml_trainer_destroy(t);
    float first = 0;
    for (int run = 0; run < 2; run++) {
        tiny_options(&o, MML_VARIANT_BASE);
        o.max_epochs = 1;
        o.l2_embedding = run ? 0.1f : 0.0f;
        o.l2_dense = run ? 0.01f : 0.0f;
        t = make_trainer(&w, &o);
        ck_assert_int_eq(mml_trainer_run(t), MML_OK);
        float v = mml_model_param(mml_trainer_model(t), 0)->value[0];
        if (run)
            ck_assert(v != first);
        first = v;
        mml_trainer_destroy(t);
    }
    static const int32_t kinds[3] = {MML_OPT_SGD, MML_OPT_LAZY_ADAM, MML_OPT_ADAGRAD};
    for (int k = 0; k < 3; k++) {
        tiny_options(&o, MML_VARIANT_MLORA);
        o.max_epochs = 1;
        o.optimizer = kinds[k];
        t = make_trainer(&w, &o);
        ck_assert_int_eq(mml_trainer_run(t), MML_OK);
        mml_trainer_destroy(t);
    }
    tiny_options(&o, MML_VARIANT_BASE);
    o.optimizer = 99;
    t = NULL;
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_EINVAL);
    ck_assert_ptr_null(t);
    world_free(&w);
}
END_TEST

static Suite *trainer_suite(void)
{
    Suite *s = suite_create("trainer");
    TCase *tc = tcase_create("trainer");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, base_equals_moe_stage_one);
    tcase_add_test(tc, stages_freeze_what_they_say);
    tcase_add_test(tc, early_stopping_restores_the_best_epoch);
    tcase_add_test(tc, progress_can_cancel);
    tcase_add_test(tc, same_seed_same_model);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, extras_pass_through);
    tcase_add_test(tc, allocation_failures_leak_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(trainer_suite()); }
