/* The trainer hands its model over, starts from a given model or stage, and
 * resumes bitwise from its state between two epochs (in memory and through
 * checkpoint files). */
#include <unistd.h>

#include "internal.h"
#include "core/bytes.h"
#include "model/model_internal.h"
#include "train/trainer_internal.h"

#include "trainer_world.h"

static void world_init(world *w, uint64_t seed) { world_init_sized(w, seed, 3000, 40, 30); }

/* Dropout stays on, so the dropout stream matters; patience 2. */
static void resume_options(mml_trainer_options *o, int32_t variant)
{
    tiny_options(o, variant);
    o->patience = 2;
}

/* The checkpoint callback: records where it was called; at call kill_at it
 * saves the state (into buf, or to path) and stops the run. */
typedef struct killer {
    int calls;
    int kill_at;
    const char *path;
    mml__wbuf buf;
    int32_t stage[64], expert[64], epoch[64];
} killer;

static int on_checkpoint(void *user, mml_trainer *t, const mml_progress *where)
{
    killer *k = user;
    ck_assert_int_eq(where->step, where->steps);
    ck_assert_int_ge(where->epoch, 1);
    if (k->calls < 64) {
        k->stage[k->calls] = where->stage;
        k->expert[k->calls] = where->expert;
        k->epoch[k->calls] = where->epoch;
    }
    k->calls++;
    if (k->calls != k->kill_at)
        return 0;
    /* Only read-only calls are allowed here: running is refused. */
    ck_assert_int_eq(mml_trainer_run(t), MML_ESTATE);
    if (k->path)
        ck_assert_int_eq(mml_trainer_save(t, k->path), MML_OK);
    else
        ck_assert_int_eq(mml__trainer_state_write(t, &k->buf), MML_OK);
    return 1;
}

static void same_reports(mml_trainer *a, mml_trainer *b)
{
    ck_assert_int_eq(mml_trainer_n_epoch_reports(a), mml_trainer_n_epoch_reports(b));
    ck_assert_int_eq(mml_trainer_n_stage_reports(a), mml_trainer_n_stage_reports(b));
    for (int64_t i = 0; i < mml_trainer_n_epoch_reports(a); i++) {
        mml_epoch_report x, y;
        ck_assert_int_eq(mml_trainer_epoch_report(a, i, &x), MML_OK);
        ck_assert_int_eq(mml_trainer_epoch_report(b, i, &y), MML_OK);
        ck_assert_int_eq(x.stage, y.stage);
        ck_assert_int_eq(x.expert, y.expert);
        ck_assert_int_eq(x.epoch, y.epoch);
        ck_assert(x.train_loss == y.train_loss);
        ck_assert(x.val_score == y.val_score);
    }
    for (int64_t i = 0; i < mml_trainer_n_stage_reports(a); i++) {
        mml_stage_report x, y;
        ck_assert_int_eq(mml_trainer_stage_report(a, i, &x), MML_OK);
        ck_assert_int_eq(mml_trainer_stage_report(b, i, &y), MML_OK);
        ck_assert_int_eq(x.stage, y.stage);
        ck_assert_int_eq(x.expert, y.expert);
        ck_assert_int_eq(x.epochs, y.epochs);
        ck_assert_int_eq(x.best_epoch, y.best_epoch);
        ck_assert(x.best_val == y.best_val);
        ck_assert_uint_eq(x.flags, y.flags);
    }
}

/* The uninterrupted run: its weights, and where its checkpoints were called. */
static snap reference_run(world *w, const mml_trainer_options *base, killer *where,
                             mml_trainer **keep)
{
    mml_trainer_options o = *base;
    memset(where, 0, sizeof *where);
    o.checkpoint = on_checkpoint;
    o.checkpoint_user = where;
    mml_trainer *t = make_trainer(w, &o);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    snap s = take(mml_trainer_model(t));
    *keep = t;
    return s;
}

/* Kill after checkpoint kill_at, read the state into a second trainer made
 * from the first one's model, finish, compare with the reference. With
 * same_trainer, the paused trainer itself goes on instead. */
static void kill_and_resume(world *w, const mml_trainer_options *base, const snap *ref,
                            mml_trainer *ref_t, int kill_at, int same_trainer)
{
    killer k;
    memset(&k, 0, sizeof k);
    k.kill_at = kill_at;
    mml__wbuf_init(&k.buf, w->ctx);
    mml_trainer_options o = *base;
    o.checkpoint = on_checkpoint;
    o.checkpoint_user = &k;
    mml_trainer *t1 = make_trainer(w, &o);
    ck_assert_int_eq(mml_trainer_run(t1), MML_ECANCELED);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w->ctx), "checkpoint"));
    ck_assert_int_eq(k.calls, kill_at);
    mml_trainer *t2 = t1;
    if (!same_trainer) {
        mml_trainer_options o2 = *base;
        o2.init_model = mml_trainer_model(t1);
        t2 = make_trainer(w, &o2);
        mml__rbuf r;
        mml__rbuf_init(&r, w->ctx, k.buf.data, k.buf.len, 0, "trainer state");
        int rc = mml__trainer_state_read(t2, &r);
        ck_assert_msg(rc == MML_OK, "state_read: %s", mml_ctx_last_error(w->ctx));
        mml_trainer_destroy(t1);
    }
    ck_assert_msg(mml_trainer_run(t2) == MML_OK, "%s", mml_ctx_last_error(w->ctx));
    const char *diff = first_difference(mml_trainer_model(t2), ref);
    ck_assert_msg(diff == NULL, "kill after checkpoint %d: parameter %s differs", kill_at, diff);
    same_reports(ref_t, t2);
    mml_trainer_destroy(t2);
    mml__wbuf_free(&k.buf);
}

/* The first checkpoint call of (stage, expert, epoch), 1-based; 0 if none. */
static int call_of(const killer *k, int32_t stage, int32_t expert, int32_t epoch)
{
    for (int i = 0; i < k->calls && i < 64; i++)
        if (k->stage[i] == stage && k->expert[i] == expert && (epoch < 0 || k->epoch[i] == epoch))
            return i + 1;
    return 0;
}

START_TEST(resume_is_bitwise_base_and_mlora)
{
    for (int32_t variant = MML_VARIANT_BASE; variant <= MML_VARIANT_MLORA; variant++) {
        world w;
        world_init(&w, 21);
        mml_trainer_options o;
        resume_options(&o, variant);
        killer where;
        mml_trainer *ref_t = NULL;
        snap ref = reference_run(&w, &o, &where, &ref_t);
        ck_assert_int_ge(where.calls, 2);
        for (int kill = 1; kill < where.calls; kill++)
            kill_and_resume(&w, &o, &ref, ref_t, kill, 0);
        /* The paused trainer itself continues the same way. */
        kill_and_resume(&w, &o, &ref, ref_t, 1, 1);
        /* Killing after the last epoch leaves only the stage's end. */
        kill_and_resume(&w, &o, &ref, ref_t, where.calls, 0);
        mml_trainer_destroy(ref_t);
        drop(&ref);
        world_free(&w);
    }
}
END_TEST

START_TEST(resume_is_bitwise_moe)
{
    world w;
    world_init(&w, 22);
    mml_trainer_options o;
    resume_options(&o, MML_VARIANT_MOE);
    killer where;
    mml_trainer *ref_t = NULL;
    snap ref = reference_run(&w, &o, &where, &ref_t);
    int in_stage1_end = call_of(&where, MML_STAGE_EXPERTS, 0, 1) - 1;
    int in_expert0 = call_of(&where, MML_STAGE_EXPERTS, 0, 2);
    int in_expert1 = call_of(&where, MML_STAGE_EXPERTS, 1, 1);
    int in_gate = call_of(&where, MML_STAGE_GATE, -1, 1);
    ck_assert_int_gt(in_stage1_end, 0);
    ck_assert_int_gt(in_expert0, 0);
    ck_assert_int_gt(in_expert1, 0);
    ck_assert_int_gt(in_gate, 0);
    /* Between stages, inside stage 2 (carrying the dropout stream from one
     * expert to the next) and inside stage 3. */
    kill_and_resume(&w, &o, &ref, ref_t, in_stage1_end, 0);
    kill_and_resume(&w, &o, &ref, ref_t, in_expert0, 0);
    kill_and_resume(&w, &o, &ref, ref_t, in_expert1, 0);
    kill_and_resume(&w, &o, &ref, ref_t, in_gate, 0);
    kill_and_resume(&w, &o, &ref, ref_t, in_expert1, 1);
    mml_trainer_destroy(ref_t);
    drop(&ref);
    world_free(&w);
}
END_TEST

/* The lazy-Adam row counts and Adagrad's sums travel too. */
START_TEST(resume_is_bitwise_other_optimisers)
{
    static const int32_t kinds[3] = {MML_OPT_LAZY_ADAM, MML_OPT_ADAGRAD, MML_OPT_SGD};
    for (int i = 0; i < 3; i++) {
        world w;
        world_init(&w, 23);
        mml_trainer_options o;
        resume_options(&o, MML_VARIANT_MLORA);
        o.optimizer = kinds[i];
        killer where;
        mml_trainer *ref_t = NULL;
        snap ref = reference_run(&w, &o, &where, &ref_t);
        kill_and_resume(&w, &o, &ref, ref_t, 1, 0);
        mml_trainer_destroy(ref_t);
        drop(&ref);
        world_free(&w);
    }
}
END_TEST

/* The same through checkpoint files and mml_trainer_resume(). */
START_TEST(resume_from_a_file_is_bitwise)
{
    world w;
    world_init(&w, 24);
    char path[] = "/tmp/mml_resume_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    mml_trainer_options o;
    resume_options(&o, MML_VARIANT_MOE);
    killer where;
    mml_trainer *ref_t = NULL;
    snap ref = reference_run(&w, &o, &where, &ref_t);
    /* Inside stage 3, inside stage 2 after an expert changed; the last one
     * (2 epochs done) stays in the file for the checks below. */
    int kills[3] = {call_of(&where, MML_STAGE_GATE, -1, 1), call_of(&where, MML_STAGE_EXPERTS, 1, 1),
                    call_of(&where, MML_STAGE_EXPERTS, 0, 2)};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_gt(kills[i], 0);
        killer k;
        memset(&k, 0, sizeof k);
        k.kill_at = kills[i];
        k.path = path;
        mml_trainer_options o1 = o;
        o1.checkpoint = on_checkpoint;
        o1.checkpoint_user = &k;
        mml_trainer *t1 = make_trainer(&w, &o1);
        ck_assert_int_eq(mml_trainer_run(t1), MML_ECANCELED);
        mml_trainer_destroy(t1);
        mml_trainer *t2 = NULL;
        int rc = mml_trainer_resume(&t2, w.ctx, &o, path, w.train, w.val);
        ck_assert_msg(rc == MML_OK, "resume: %s", mml_ctx_last_error(w.ctx));
        ck_assert_int_eq(mml_trainer_run(t2), MML_OK);
        const char *diff = first_difference(mml_trainer_model(t2), &ref);
        ck_assert_msg(diff == NULL, "kill %d: parameter %s differs", kills[i], diff);
        same_reports(ref_t, t2);
        mml_trainer_destroy(t2);
    }
    /* The checkpoint is also a plain model file. */
    mml_model *m = NULL;
    ck_assert_int_eq(mml_model_load(&m, w.ctx, path), MML_OK);
    ck_assert_int_eq(m->final_mix, MML_MIX_GATED);
    /* Options that describe another configuration are refused, by name. */
    mml_trainer *t = NULL;
    mml_trainer_options bad = o;
    bad.batch_size = 128;
    ck_assert_int_eq(mml_trainer_resume(&t, w.ctx, &bad, path, w.train, w.val), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "batch_size"));
    bad = o;
    bad.optimizer = MML_OPT_SGD;
    ck_assert_int_eq(mml_trainer_resume(&t, w.ctx, &bad, path, w.train, w.val), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "optimizer"));
    bad = o;
    bad.variant = MML_VARIANT_MLORA;
    ck_assert_int_eq(mml_trainer_resume(&t, w.ctx, &bad, path, w.train, w.val), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "variant"));
    bad = o;
    bad.embed_dim = 4;
    ck_assert_int_eq(mml_trainer_resume(&t, w.ctx, &bad, path, w.train, w.val), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "embed_dim"));
    bad = o;
    bad.max_epochs = 1;
    ck_assert_int_eq(mml_trainer_resume(&t, w.ctx, &bad, path, w.train, w.val), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "max_epochs"));
    ck_assert_ptr_null(t);
    /* Another seed would shuffle the remaining epochs differently. */
    mml_ctx *other_seed = plain_ctx(1, 777);
    ck_assert_int_eq(mml_trainer_resume(&t, other_seed, &o, path, w.train, w.val), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(other_seed), "seed"));
    mml_ctx_destroy(other_seed);
    /* A model file without trainer state. */
    ck_assert_int_eq(mml_model_save(m, path), MML_OK);
    ck_assert_int_eq(mml_trainer_resume(&t, w.ctx, &o, path, w.train, w.val), MML_ENOTFOUND);
    ck_assert_ptr_null(t);
    mml_model_destroy(m);
    int rc = mml_trainer_resume(&t, w.ctx, &o, "/nonexistent/x.mml", w.train, w.val);
    ck_assert_msg(rc == MML_EIO || rc == MML_ENOTFOUND, "rc %d", rc);
    ck_assert_int_eq(mml_trainer_resume(&t, w.ctx, &o, NULL, w.train, w.val), MML_EINVAL);
    /* Saving after a run keeps the finished state: resuming has nothing left to do. */
    ck_assert_int_eq(mml_trainer_save(ref_t, path), MML_OK);
    ck_assert_int_eq(mml_trainer_resume(&t, w.ctx, &o, path, w.train, w.val), MML_OK);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    ck_assert_ptr_null(first_difference(mml_trainer_model(t), &ref));
    same_reports(ref_t, t);
    mml_trainer_destroy(t);
    unlink(path);
    mml_trainer_destroy(ref_t);
    drop(&ref);
    world_free(&w);
}
END_TEST

static void forward_all(mml_model *m, const mml_dataset *ds, int32_t mix, float *out, int64_t n)
{
    mml_batch_view b;
    ck_assert_int_eq(mml_dataset_view(ds, 0, n, &b), MML_OK);
    ck_assert_int_eq(mml_model_forward(m, &b, mix, 0, 0, out), MML_OK);
}

START_TEST(take_model_outlives_the_trainer)
{
    world w;
    world_init(&w, 31);
    mml_trainer_options o;
    resume_options(&o, MML_VARIANT_MLORA);
    o.max_epochs = 1;
    mml_trainer *t = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    int64_t n = 200;
    float before[200], after[200];
    forward_all(mml_trainer_model(t), w.test, MML_MIX_DOMAIN, before, n);
    mml_model *m = NULL;
    ck_assert_int_eq(mml_trainer_take_model(t, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_trainer_take_model(t, &m), MML_OK);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(m->final_mix, MML_MIX_DOMAIN);
    ck_assert_ptr_null(mml_trainer_model(t));
    /* The trainer refuses to go on, but its reports stay. */
    mml_model *again = (mml_model *)1;
    ck_assert_int_eq(mml_trainer_take_model(t, &again), MML_ESTATE);
    ck_assert_ptr_null(again);
    ck_assert_int_eq(mml_trainer_run(t), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "handed over"));
    ck_assert_int_eq(mml_trainer_run_stage(t, MML_STAGE_JOINT), MML_ESTATE);
    mml_metrics *mt = NULL;
    ck_assert_int_eq(mml_metrics_create(&mt, w.ctx, 3), MML_OK);
    ck_assert_int_eq(mml_trainer_evaluate(t, w.test, MML_MIX_DOMAIN, mt), MML_ESTATE);
    mml_metrics_destroy(mt);
    ck_assert_int_eq(mml_trainer_save(t, "/tmp/never.mml"), MML_ESTATE);
    mml__wbuf buf;
    mml__wbuf_init(&buf, w.ctx);
    ck_assert_int_eq(mml__trainer_state_write(t, &buf), MML_ESTATE);
    mml__wbuf_free(&buf);
    ck_assert_int_eq(mml_trainer_n_stage_reports(t), 1);
    ck_assert_int_eq(mml_trainer_n_epoch_reports(t), 1);
    mml_trainer_destroy(t);
    forward_all(m, w.test, MML_MIX_DOMAIN, after, n);
    ck_assert_int_eq(memcmp(before, after, sizeof before), 0);
    mml_model_destroy(m);
    ck_assert_int_eq(mml_trainer_take_model(NULL, &again), MML_EINVAL);
    ck_assert_ptr_null(again);
    world_free(&w);
}
END_TEST

/* A paused stage is dropped with the hand-over: its optimiser pointed into the model. */
START_TEST(take_model_from_a_paused_trainer)
{
    world w;
    world_init(&w, 32);
    mml_trainer_options o;
    resume_options(&o, MML_VARIANT_MOE);
    killer k;
    memset(&k, 0, sizeof k);
    k.kill_at = 2;
    mml__wbuf_init(&k.buf, w.ctx);
    o.checkpoint = on_checkpoint;
    o.checkpoint_user = &k;
    mml_trainer *t = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(t), MML_ECANCELED);
    mml_model *m = NULL;
    ck_assert_int_eq(mml_trainer_take_model(t, &m), MML_OK);
    for (int64_t i = 0; i < mml_model_n_params(m); i++)
        ck_assert_int_eq(mml_model_param(m, i)->frozen, 0);
    mml_model_destroy(m);
    mml_trainer_destroy(t);
    mml__wbuf_free(&k.buf);
    world_free(&w);
}
END_TEST

START_TEST(init_model_copies_every_weight)
{
    world w;
    world_init(&w, 41);
    mml_trainer_options o;
    resume_options(&o, MML_VARIANT_MOE);
    o.max_epochs = 1;
    mml_trainer *a = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(a), MML_OK);
    snap wa = take(mml_trainer_model(a));
    /* A fresh trainer on the same seed starts elsewhere... */
    mml_trainer *fresh = make_trainer(&w, &o);
    ck_assert_ptr_nonnull(first_difference(mml_trainer_model(fresh), &wa));
    mml_trainer_destroy(fresh);
    /* ... one given a's model starts exactly there. */
    o.init_model = mml_trainer_model(a);
    mml_trainer *b = make_trainer(&w, &o);
    ck_assert_ptr_null(first_difference(mml_trainer_model(b), &wa));
    mml_trainer_destroy(a);
    ck_assert_ptr_null(first_difference(mml_trainer_model(b), &wa));
    mml_trainer_destroy(b);
    drop(&wa);
    world_free(&w);
}
END_TEST

START_TEST(init_model_of_another_shape_is_refused)
{
    world w;
    world_init(&w, 42);
    mml_trainer_options o;
    resume_options(&o, MML_VARIANT_BASE);
    mml_trainer *base = make_trainer(&w, &o);
    mml_trainer *t = NULL;
    /* Base into MLoRA: the experts are missing. */
    resume_options(&o, MML_VARIANT_MLORA);
    o.init_model = mml_trainer_model(base);
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_ESHAPE);
    ck_assert_ptr_null(t);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "init_model parameter"));
    /* Other hidden widths: the first tower layer differs, and is named. */
    static const int32_t wider[2] = {32, 8};
    resume_options(&o, MML_VARIANT_BASE);
    o.hidden = wider;
    o.init_model = mml_trainer_model(base);
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_ESHAPE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "x 32"));
    /* Another backbone. */
    resume_options(&o, MML_VARIANT_BASE);
    o.backbone = "wdl";
    o.init_model = mml_trainer_model(base);
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_ESHAPE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "backbone"));
    /* A first stage the variant does not have. */
    resume_options(&o, MML_VARIANT_MOE);
    o.first_stage = MML_STAGE_JOINT;
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "first_stage"));
    resume_options(&o, MML_VARIANT_BASE);
    o.first_stage = MML_STAGE_GATE;
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_EINVAL);
    o.first_stage = 9;
    ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &o, w.train, w.val), MML_EINVAL);
    ck_assert_ptr_null(t);
    mml_trainer_destroy(base);
    world_free(&w);
}
END_TEST

START_TEST(first_stage_reruns_stage_two_only)
{
    world w;
    world_init(&w, 43);
    mml_trainer_options o;
    resume_options(&o, MML_VARIANT_MOE);
    o.max_epochs = 2;
    mml_trainer *a = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(a), MML_OK);
    mml_model *ma = mml_trainer_model(a);
    o.init_model = ma;
    o.first_stage = MML_STAGE_EXPERTS;
    o.lr = 1e-2f; /* so the experts surely move */
    mml_trainer *b = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_next_stage(b), MML_STAGE_EXPERTS);
    ck_assert_int_eq(mml_trainer_run_stage(b, MML_STAGE_BACKBONE), MML_ESTATE);
    ck_assert_int_eq(mml_trainer_run_stage(b, MML_STAGE_EXPERTS), MML_OK);
    ck_assert_int_eq(mml_trainer_next_stage(b), MML_STAGE_GATE);
    mml_model *mb = mml_trainer_model(b);
    int experts_moved = 0;
    for (int64_t i = 0; i < mml_model_n_params(mb); i++) {
        mml_param *p = mml_model_param(ma, i), *q = mml_model_param(mb, i);
        int same = memcmp(p->value, q->value, sizeof(float) * (size_t)mml_param_size(p)) == 0;
        if (q->group == MML_GROUP_EXPERT)
            experts_moved += !same;
        else
            ck_assert_msg(same, "%s changed in stage 2", q->name);
    }
    ck_assert_int_gt(experts_moved, 0);
    /* Stage 2 reports only (one per expert), then the gate can follow. */
    ck_assert_int_eq(mml_trainer_n_stage_reports(b), 3);
    for (int64_t i = 0; i < 3; i++) {
        mml_stage_report r;
        ck_assert_int_eq(mml_trainer_stage_report(b, i, &r), MML_OK);
        ck_assert_int_eq(r.stage, MML_STAGE_EXPERTS);
    }
    ck_assert_int_eq(mml_trainer_run(b), MML_OK);
    ck_assert_int_eq(mml_trainer_next_stage(b), -1);
    ck_assert_int_eq(mml_trainer_next_stage(NULL), -1);
    ck_assert_int_eq(mml_trainer_n_stage_reports(b), 4);
    mml_trainer_destroy(b);
    mml_trainer_destroy(a);
    world_free(&w);
}
END_TEST

/* Fine-tuning: init_model + MML_STAGE_JOINT trains the shared model further. */
START_TEST(fine_tune_a_base_model)
{
    world w;
    world_init(&w, 44);
    mml_trainer_options o;
    resume_options(&o, MML_VARIANT_BASE);
    o.max_epochs = 1;
    mml_trainer *a = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(a), MML_OK);
    snap wa = take(mml_trainer_model(a));
    o.init_model = mml_trainer_model(a);
    o.first_stage = MML_STAGE_JOINT;
    mml_trainer *b = make_trainer(&w, &o);
    ck_assert_int_eq(mml_trainer_run(b), MML_OK);
    ck_assert_ptr_nonnull(first_difference(mml_trainer_model(b), &wa));
    mml_trainer_destroy(b);
    mml_trainer_destroy(a);
    drop(&wa);
    world_free(&w);
}
END_TEST

/* A small state (MLoRA paused after its first epoch) for the damage tests. */
static void small_state(world *w, mml_trainer_options *o, mml__wbuf *buf, mml_trainer **paused)
{
    resume_options(o, MML_VARIANT_MOE);
    o->batch_size = 512;
    killer k;
    memset(&k, 0, sizeof k);
    mml__wbuf_init(&k.buf, w->ctx);
    mml_trainer_options o1 = *o;
    o1.checkpoint = on_checkpoint;
    o1.checkpoint_user = &k;
    /* Inside stage 2: the trainable set (one expert) is small. */
    k.kill_at = 4;
    mml_trainer *t = make_trainer(w, &o1);
    ck_assert_int_eq(mml_trainer_run(t), MML_ECANCELED);
    ck_assert_int_eq(k.stage[3], MML_STAGE_EXPERTS);
    *buf = k.buf;
    *paused = t;
}

static int read_bytes(mml_trainer *t, mml_ctx *ctx, const uint8_t *data, size_t n)
{
    /* A copy of exactly n bytes: ASan sees any read past them. */
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    mml__rbuf r;
    mml__rbuf_init(&r, ctx, copy, n, 0, "trainer state");
    int rc = mml__trainer_state_read(t, &r);
    free(copy);
    return rc;
}

/* Offset of the next-stage field: after the magic, version, reserved and
 * the configuration (docs/FORMAT.md, "Trainer state payload"). */
static size_t next_stage_offset(void) { return 16 + 6 * 4 + 8 + 3 * 4 + 2 * 4 + 4 + 3 + 8 + 8; }

START_TEST(damaged_states_are_refused)
{
    world w;
    world_init(&w, 51);
    mml_trainer_options o;
    mml__wbuf buf;
    mml_trainer *paused = NULL;
    small_state(&w, &o, &buf, &paused);
    o.init_model = mml_trainer_model(paused);
    mml_trainer *t = make_trainer(&w, &o);
    mml_trainer_destroy(paused);
    ck_assert_int_lt(buf.len, 200000);
    /* Every truncation fails, and leaves the trainer as it was. */
    for (size_t n = 0; n < buf.len; n++) {
        int rc = read_bytes(t, w.ctx, buf.data, n);
        ck_assert_msg(rc < 0, "truncated to %zu of %zu bytes: accepted", n, buf.len);
        ck_assert_int_eq(mml_trainer_n_stage_reports(t), 0);
    }
    /* Named fields. */
    uint8_t *bad = malloc(buf.len + 1);
    memcpy(bad, buf.data, buf.len);
    bad[0] = 'X';
    ck_assert_int_eq(read_bytes(t, w.ctx, bad, buf.len), MML_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "magic"));
    memcpy(bad, buf.data, buf.len);
    bad[8] = 2;
    ck_assert_int_eq(read_bytes(t, w.ctx, bad, buf.len), MML_EVERSION);
    memcpy(bad, buf.data, buf.len);
    size_t ns = next_stage_offset();
    ck_assert_int_eq(bad[ns], MML_STAGE_EXPERTS);
    bad[ns] = 7;
    ck_assert_int_eq(read_bytes(t, w.ctx, bad, buf.len), MML_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "next stage"));
    memcpy(bad, buf.data, buf.len);
    /* The stage report count, right after the next stage and its reserved word. */
    bad[ns + 8 + 7] = 0x40;
    ck_assert_int_eq(read_bytes(t, w.ctx, bad, buf.len), MML_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "stage report count"));
    memcpy(bad, buf.data, buf.len);
    bad[buf.len] = 0;
    ck_assert_int_eq(read_bytes(t, w.ctx, bad, buf.len + 1), MML_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "after the trainer state"));
    /* Random damage anywhere: an error or a valid state, never a crash. */
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 400; i++) {
        memcpy(bad, buf.data, buf.len);
        for (int j = 0; j < 3; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            bad[x % buf.len] ^= (uint8_t)(1u << (x >> 40) % 8);
        }
        (void)read_bytes(t, w.ctx, bad, buf.len);
    }
    /* The intact state still reads, into a trainer of the same options only. */
    ck_assert_int_eq(read_bytes(t, w.ctx, buf.data, buf.len), MML_OK);
    ck_assert_int_eq(mml_trainer_n_stage_reports(t), 1);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    mml_trainer_options o2 = o;
    o2.batch_size = 256;
    o2.init_model = NULL; /* paused is gone */
    mml_trainer *other = make_trainer(&w, &o2);
    ck_assert_int_eq(read_bytes(other, w.ctx, buf.data, buf.len), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(w.ctx), "batch_size"));
    mml_trainer_destroy(other);
    free(bad);
    mml__wbuf_free(&buf);
    mml_trainer_destroy(t);
    world_free(&w);
}
END_TEST

static void alloc_data(mml_ctx *ctx, mml_dataset **tr, mml_dataset **va, mml_dataset **te)
{
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_rows = 300;
    so.n_domains = 2;
    so.n_users = 10;
    so.n_items = 10;
    ck_assert_int_eq(mml_synthetic_generate(ctx, &so, tr, va, te), MML_OK);
}

/* A trainer of o paused after checkpoint 4 (inside stage 2), its state in k->buf
 * or, with k->path, in that file. */
static mml_trainer *paused_trainer(mml_ctx *ctx, const mml_trainer_options *o, killer *k,
                                   const char *path, mml_dataset *tr, mml_dataset *va)
{
    memset(k, 0, sizeof *k);
    k->kill_at = 4;
    k->path = path;
    mml__wbuf_init(&k->buf, ctx);
    mml_trainer_options o1 = *o;
    o1.checkpoint = on_checkpoint;
    o1.checkpoint_user = k;
    mml_trainer *t = NULL;
    ck_assert_int_eq(mml_trainer_create(&t, ctx, &o1, tr, va), MML_OK);
    ck_assert_int_eq(mml_trainer_run(t), MML_ECANCELED);
    return t;
}

/* Every allocation of state_read, resume and take_model can fail without a leak. */
START_TEST(allocation_failures_leak_nothing)
{
    char path[] = "/tmp/mml_resume_alloc_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    mml_trainer_options o;
    resume_options(&o, MML_VARIANT_MOE);
    o.batch_size = 64;
    {
        mml_ctx *ctx = plain_ctx(1, 1);
        mml_dataset *tr = NULL, *va = NULL, *te = NULL;
        alloc_data(ctx, &tr, &va, &te);
        killer k;
        mml_trainer *t = paused_trainer(ctx, &o, &k, path, tr, va);
        mml_trainer_destroy(t);
        mml__wbuf_free(&k.buf);
        mml_dataset_destroy(tr);
        mml_dataset_destroy(va);
        mml_dataset_destroy(te);
        mml_ctx_destroy(ctx);
    }
    for (long n = 1;; n++) {
        counting_allocator a;
        mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
        mml_dataset *tr = NULL, *va = NULL, *te = NULL;
        alloc_data(ctx, &tr, &va, &te);
        killer k;
        mml_trainer *t1 = paused_trainer(ctx, &o, &k, NULL, tr, va);
        mml_trainer_options o2 = o;
        o2.init_model = mml_trainer_model(t1);
        mml_trainer *t2 = NULL;
        ck_assert_int_eq(mml_trainer_create(&t2, ctx, &o2, tr, va), MML_OK);
        a.fail_at = a.calls + n;
        mml__rbuf r;
        mml__rbuf_init(&r, ctx, k.buf.data, k.buf.len, 0, "trainer state");
        int rc = mml__trainer_state_read(t2, &r);
        mml_trainer *t3 = NULL;
        if (rc == MML_OK)
            rc = mml_trainer_resume(&t3, ctx, &o, path, tr, va);
        if (rc != MML_OK)
            ck_assert_ptr_null(t3);
        mml_model *m = NULL;
        if (rc == MML_OK)
            rc = mml_trainer_take_model(t3, &m);
        int failed = a.calls >= a.fail_at;
        a.fail_at = 0;
        char msg[256];
        snprintf(msg, sizeof msg, "%s", mml_ctx_last_error(ctx));
        /* What succeeded still trains on. */
        if (rc == MML_OK)
            ck_assert_int_eq(mml_trainer_run(t2), MML_OK);
        mml_model_destroy(m);
        mml_trainer_destroy(t3);
        mml_trainer_destroy(t2);
        mml_trainer_destroy(t1);
        mml__wbuf_free(&k.buf);
        mml_dataset_destroy(tr);
        mml_dataset_destroy(va);
        mml_dataset_destroy(te);
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(a.live, 0);
        if (!failed) {
            ck_assert_msg(rc == MML_OK, "rc %d", rc);
            ck_assert_int_gt(n, 10);
            break;
        }
        ck_assert_msg(rc == MML_ENOMEM, "allocation %ld: rc %d (%s)", n, rc, msg);
    }
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("resume");
    TCase *tc = tcase_create("resume");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, take_model_outlives_the_trainer);
    tcase_add_test(tc, take_model_from_a_paused_trainer);
    tcase_add_test(tc, init_model_copies_every_weight);
    tcase_add_test(tc, init_model_of_another_shape_is_refused);
    tcase_add_test(tc, first_stage_reruns_stage_two_only);
    tcase_add_test(tc, fine_tune_a_base_model);
    tcase_add_test(tc, resume_is_bitwise_base_and_mlora);
    tcase_add_test(tc, resume_is_bitwise_moe);
    tcase_add_test(tc, resume_is_bitwise_other_optimisers);
    tcase_add_test(tc, resume_from_a_file_is_bitwise);
    tcase_add_test(tc, damaged_states_are_refused);
    tcase_add_test(tc, allocation_failures_leak_nothing);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
