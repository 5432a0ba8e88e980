#include <stddef.h>
/* The staged trainer: stage equivalences, real freezing, early stopping,
 * restore-best, cancellation and determinism. */
#include "internal.h"

#include "trainer_world.h"

static void world_init(world *w, uint64_t seed) { world_init_sized(w, seed, 4000, 60, 40); }

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
        /* _i + 1 threads: with 2, every batch is split across them. */
        ck_assert_int_eq(mml_ctx_set_threads(w.ctx, (uint32_t)_i + 1), MML_OK);
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

/* ---- stage 2 and 3 under real validation (no scripted scores) ---- */

typedef struct steps_seen {
    int64_t steps[64]; /* batches per epoch seen for each stage-2 expert */
    int n_gate_epochs;
} steps_seen;

static int record_steps(void *user, const mml_progress *p)
{
    steps_seen *s = user;
    if (p->stage == MML_STAGE_EXPERTS && p->expert >= 0 && p->expert < 64)
        s->steps[p->expert] = p->steps;
    return 0;
}

/* AUC of domain d on ds with expert alone, computed the way the trainer
 * validates stage 2 (that domain's rows in order, batch_size at a time). */
static double expert_domain_auc(mml_trainer *t, mml_ctx *ctx, const mml_dataset *ds,
                                int32_t expert, int32_t d, int64_t batch_size)
{
    mml_metrics *m = NULL;
    ck_assert_int_eq(mml_metrics_create(&m, ctx, mml_dataset_n_domains(ds)), MML_OK);
    mml_batcher_options bo;
    mml_batcher_options_init(&bo);
    bo.batch_size = batch_size;
    bo.shuffle = 0;
    bo.domain = d;
    mml_batcher *bt = NULL;
    ck_assert_int_eq(mml_batcher_create(&bt, ctx, ds, &bo), MML_OK);
    ck_assert_int_eq(mml_batcher_start_epoch(bt, 0), MML_OK);
    float *logits = malloc(sizeof(float) * (size_t)batch_size);
    mml_batch_view b;
    while (mml_batcher_next(bt, &b) == 1) {
        ck_assert_int_eq(mml_model_forward(mml_trainer_model(t), &b, MML_MIX_SINGLE, expert, 0,
                                           logits), MML_OK);
        ck_assert_int_eq(mml_metrics_add(m, logits, b.labels, b.domain, b.n_rows), MML_OK);
    }
    mml_metrics_summary s;
    ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
    mml_domain_metrics dm;
    ck_assert_int_eq(mml_metrics_domain(m, d, &dm), MML_OK);
    ck_assert(dm.auc_defined);
    free(logits);
    mml_batcher_destroy(bt);
    mml_metrics_destroy(m);
    return dm.auc;
}

/* Options that overfit fast, so that early stopping fires in stages 2 and 3. */
static void overfit_options(mml_trainer_options *o)
{
    tiny_options(o, MML_VARIANT_MOE);
    o->experts_per_domain = 2;
    o->max_epochs = 40;
    o->patience = 2;
    o->lr = 3e-2f;
    o->batch_size = 128;
}

START_TEST(stage_two_trains_each_expert_on_its_own_domain)
{
    world w;
    world_init(&w, 3);
    mml_trainer_options o;
    overfit_options(&o);
    o.max_epochs = 2;
    steps_seen seen;
    memset(&seen, 0, sizeof seen);
    o.progress = record_steps;
    o.progress_user = &seen;
    mml_trainer *t = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    int32_t D = mml_dataset_n_domains(w.train);
    int differ = 0;
    for (int32_t e = 0; e < 2 * D; e++) {
        int64_t rows = mml_dataset_domain_rows(w.train, e % D);
        ck_assert_int_eq(seen.steps[e], (rows + o.batch_size - 1) / o.batch_size);
        differ += rows != mml_dataset_domain_rows(w.train, 0);
    }
    ck_assert_int_gt(differ, 0); /* the domains differ in size, so the check can fail */
    mml_trainer_destroy(t);
    world_free(&w);
}
END_TEST

START_TEST(stage_two_stops_on_its_domain_and_restores_the_best_epoch)
{
    world w;
    world_init(&w, 4);
    mml_trainer_options o;
    overfit_options(&o);
    mml_trainer *t = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    int early = 0, experts = 0;
    for (int64_t i = 0; i < mml_trainer_n_stage_reports(t); i++) {
        mml_stage_report r;
        ck_assert_int_eq(mml_trainer_stage_report(t, i, &r), MML_OK);
        if (r.stage != MML_STAGE_EXPERTS)
            continue;
        experts++;
        ck_assert_int_eq(r.domain, r.expert % mml_dataset_n_domains(w.train));
        /* The score it kept is the expert's own domain's validation AUC of the
         * weights it ends with: the best epoch's, restored. */
        double auc = expert_domain_auc(t, w.ctx, w.val, r.expert, r.domain, o.batch_size);
        ck_assert_msg(auc == r.best_val, "expert %d: restored AUC %.9f, best %.9f", r.expert, auc,
                      r.best_val);
        early += r.best_epoch < r.epochs;
    }
    ck_assert_int_eq(experts, 2 * mml_dataset_n_domains(w.train));
    ck_assert_int_gt(early, 0); /* some expert's last epoch was not its best */
    mml_trainer_destroy(t);
    world_free(&w);
}
END_TEST

START_TEST(stage_three_restores_the_best_epoch)
{
    world w;
    world_init(&w, 4);
    mml_trainer_options o;
    overfit_options(&o);
    o.lr = 1e-1f; /* the gate alone moves slowly: push it to overshoot */
    mml_trainer *t = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    mml_stage_report r;
    int64_t last = mml_trainer_n_stage_reports(t) - 1;
    ck_assert_int_eq(mml_trainer_stage_report(t, last, &r), MML_OK);
    ck_assert_int_eq(r.stage, MML_STAGE_GATE);
    ck_assert_int_lt(r.best_epoch, r.epochs);
    mml_metrics *m = NULL;
    ck_assert_int_eq(mml_metrics_create(&m, w.ctx, mml_dataset_n_domains(w.val)), MML_OK);
    ck_assert_int_eq(mml_trainer_evaluate(t, w.val, MML_MIX_GATED, m), MML_OK);
    mml_metrics_summary s;
    ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
    ck_assert_msg(s.mean_auc == r.best_val, "gate: restored %.9f, best %.9f", s.mean_auc,
                  r.best_val);
    mml_metrics_destroy(m);
    mml_trainer_destroy(t);
    world_free(&w);
}
END_TEST

/* Scripted scores: expert 0 stops after stop0 epochs; every other expert
 * sees the same rising scores in both runs. */
typedef struct script2 {
    int32_t stop0;
} script2;

static int scripted_expert0(void *user, int32_t stage, int32_t expert, int32_t epoch,
                            double *score)
{
    const script2 *s = user;
    *score = (double)epoch;
    if (stage == MML_STAGE_EXPERTS && expert == 0 && epoch > s->stop0)
        *score = 0.0; /* worse: early stopping after patience epochs */
    return 0;
}

START_TEST(each_expert_starts_from_a_fresh_optimiser)
{
    /* Expert 1's training must not depend on how long expert 0 trained: with
     * an optimiser (or a random stream) carried over from expert 0, it would. */
    float *result[2] = {NULL, NULL};
    int64_t size = 0;
    for (int run = 0; run < 2; run++) {
        world w;
        world_init(&w, 6);
        mml_trainer_options o;
        tiny_options(&o, MML_VARIANT_MOE);
        o.max_epochs = 4;
        o.patience = 1;
        o.dropout = 0.0f; /* the tower's dropout stream runs on across experts */
        script2 sc = {run == 0 ? 1 : 3};
        o.validate = scripted_expert0;
        o.validate_user = &sc;
        mml_trainer *t = make_trainer(&w, &o);
        ck_assert_int_eq(mml_trainer_run_stage(t, MML_STAGE_BACKBONE), MML_OK);
        ck_assert_int_eq(mml_trainer_run_stage(t, MML_STAGE_EXPERTS), MML_OK);
        mml_lora *l = mml_model_experts(mml_trainer_model(t));
        int32_t n_layers = mml_lora_n_layers(l);
        size = 0;
        for (int32_t k = 0; k < 3 * n_layers; k++)
            size += mml_param_size(mml_lora_param(l, 3 * n_layers + k));
        result[run] = malloc(sizeof(float) * (size_t)size);
        int64_t off = 0;
        for (int32_t k = 0; k < 3 * n_layers; k++) {
            mml_param *p = mml_lora_param(l, 3 * n_layers + k);
            ck_assert_int_eq(p->expert, 1);
            memcpy(result[run] + off, p->value, sizeof(float) * (size_t)mml_param_size(p));
            off += mml_param_size(p);
        }
        mml_stage_report r0;
        ck_assert_int_eq(mml_trainer_stage_report(t, 1, &r0), MML_OK);
        ck_assert_int_eq(r0.expert, 0);
        ck_assert_int_eq(r0.epochs, run == 0 ? 2 : 4); /* expert 0 trained differently */
        mml_trainer_destroy(t);
        world_free(&w);
    }
    ck_assert_int_eq(memcmp(result[0], result[1], sizeof(float) * (size_t)size), 0);
    free(result[0]);
    free(result[1]);
}
END_TEST

typedef struct warn_log {
    int warnings;
    char last[1024];
} warn_log;

static void collect_warnings(void *user, int level, const char *message)
{
    warn_log *w = user;
    if (level == MML_LOG_WARN) {
        w->warnings++;
        snprintf(w->last, sizeof w->last, "%s", message);
    }
}

/* A context whose warnings land in *wl. */
static mml_ctx *warning_ctx(warn_log *wl, uint64_t seed)
{
    mml_ctx_options co;
    mml_ctx_options_init(&co);
    co.seed = seed;
    co.log = collect_warnings;
    co.log_user = wl;
    mml_ctx *ctx = NULL;
    ck_assert_int_eq(mml_ctx_create(&ctx, &co), MML_OK);
    return ctx;
}

START_TEST(a_diverging_stage_stops_and_keeps_its_best_weights)
{
    world w;
    world_init(&w, 7);
    warn_log wl = {0};
    /* A second context with a log, for the trainer; the data stay with theirs. */
    mml_ctx *data_ctx = w.ctx;
    w.ctx = warning_ctx(&wl, 7);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_BASE);
    o.lr = 50.0f; /* far too large: the weights run away in the first epoch */
    mml_trainer *t = make_trainer(&w, &o);
    snap start = take(mml_trainer_model(t));
    ck_assert_int_eq(mml_trainer_run(t), MML_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "diverged"));
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "learning rate"));
    ck_assert_int_ge(wl.warnings, 1);
    ck_assert_ptr_nonnull(strstr(wl.last, "diverged"));
    mml_stage_report r;
    ck_assert_int_eq(mml_trainer_n_stage_reports(t), 1);
    ck_assert_int_eq(mml_trainer_stage_report(t, 0, &r), MML_OK);
    ck_assert_uint_eq(r.flags & MML_STAGE_DIVERGED, MML_STAGE_DIVERGED);
    /* No epoch validated before it ran away: the starting weights are back. */
    ck_assert_int_eq(r.best_epoch, 0);
    for (int64_t i = 0; i < start.n; i++)
        ck_assert_msg(same(&start, mml_trainer_model(t), i), "parameter %lld", (long long)i);
    drop(&start);
    mml_trainer_destroy(t);
    mml_ctx_destroy(w.ctx);
    w.ctx = data_ctx;
    world_free(&w);
}
END_TEST

START_TEST(undefined_validation_and_empty_domains_are_flagged)
{
    /* 12 rows over 8 domains: some domains have no validation rows of both
     * classes, some no training rows at all. */
    warn_log wl = {0};
    mml_ctx *ctx = warning_ctx(&wl, 1);
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_rows = 12;
    so.n_domains = 8;
    mml_dataset *train = NULL, *val = NULL, *test = NULL;
    ck_assert_int_eq(mml_synthetic_generate(ctx, &so, &train, &val, &test), MML_OK);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_MOE);
    mml_trainer *t = NULL;
    ck_assert_int_eq(mml_trainer_create(&t, ctx, &o, train, val), MML_OK);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    int empty = 0, unvalidated = 0;
    for (int64_t i = 0; i < mml_trainer_n_stage_reports(t); i++) {
        mml_stage_report r;
        ck_assert_int_eq(mml_trainer_stage_report(t, i, &r), MML_OK);
        if (r.stage != MML_STAGE_EXPERTS)
            continue;
        int no_rows = mml_dataset_domain_rows(train, r.domain) == 0;
        ck_assert_int_eq(!!(r.flags & MML_STAGE_NO_TRAINING_ROWS), no_rows);
        empty += no_rows;
        unvalidated += !!(r.flags & MML_STAGE_UNVALIDATED);
    }
    ck_assert_int_gt(empty, 0);
    ck_assert_int_gt(unvalidated, 0);
    ck_assert_int_ge(wl.warnings, empty + unvalidated);
    /* A caller built against 1.0 gets the report without the flags. */
    mml_stage_report old;
    memset(&old, 0xAB, sizeof old);
    ck_assert_int_eq(mml_trainer_stage_report_sized(t, 0, &old,
                                                    (uint32_t)offsetof(mml_stage_report, flags)),
                     MML_OK);
    ck_assert_uint_eq(old.struct_size, offsetof(mml_stage_report, flags));
    ck_assert_uint_eq(old.flags, 0xABABABABu);
    mml_trainer_destroy(t);
    mml_dataset_destroy(train);
    mml_dataset_destroy(val);
    mml_dataset_destroy(test);
    mml_ctx_destroy(ctx);
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
    tcase_add_loop_test(tc, same_seed_same_model, 0, 2);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, extras_pass_through);
    tcase_add_test(tc, allocation_failures_leak_nothing);
    tcase_add_test(tc, stage_two_trains_each_expert_on_its_own_domain);
    tcase_add_test(tc, stage_two_stops_on_its_domain_and_restores_the_best_epoch);
    tcase_add_test(tc, stage_three_restores_the_best_epoch);
    tcase_add_test(tc, each_expert_starts_from_a_fresh_optimiser);
    tcase_add_test(tc, a_diverging_stage_stops_and_keeps_its_best_weights);
    tcase_add_test(tc, undefined_validation_and_empty_domains_are_flagged);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(trainer_suite()); }
