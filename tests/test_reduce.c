/* Data-parallel training through mml_reduce_hook without MPI: workers are
 * threads of this process on a small in-process bus. One worker is the
 * plain trainer bit for bit; two and three workers end with the same bits
 * on every worker, run to run, close to one process; a failure on one
 * worker ends every worker's run. */
#include <pthread.h>

#include "testutil.h"
#include "internal.h"
#include "train/metrics_internal.h"

enum { MAXW = 3 };

/* Collectives among n threads: a generation barrier that an abort breaks. */
typedef struct bus {
    int n, arrived, aborted;
    unsigned gen;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const void *send[MAXW];
    int64_t bytes[MAXW];
} bus;

typedef struct worker {
    bus *b;
    int rank;
    int aborts;
    /* The run. */
    const mml_dataset *train, *val, *test;
    int32_t variant;
    int threads;
    float l2_dense;
    int sharded; /* the hook's sharded flag: train, val, test hold this worker's rows */
    counting_allocator al;
    long fail_after; /* 0: never; else fail the allocation this many after create */
    int rc, eval_rc;
    char msg[512];
    double wauc;
    int64_t n_values;
    float *values; /* every parameter's values after training */
} worker;

/* 0 when every worker arrived; -1 once a worker aborted. */
static int bus_wait(bus *b)
{
    pthread_mutex_lock(&b->mu);
    int rc = 0;
    if (b->aborted) {
        rc = -1;
    } else if (++b->arrived == b->n) {
        b->arrived = 0;
        b->gen++;
        pthread_cond_broadcast(&b->cv);
    } else {
        unsigned g = b->gen;
        while (g == b->gen && !b->aborted)
            pthread_cond_wait(&b->cv, &b->mu);
        rc = g == b->gen ? -1 : 0;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

static int bus_gather(void *user, const void *send, int64_t bytes, void *recv,
                      const int64_t *recv_bytes)
{
    worker *w = user;
    bus *b = w->b;
    b->send[w->rank] = send;
    b->bytes[w->rank] = bytes;
    if (bus_wait(b) < 0)
        return -1;
    int64_t off = 0;
    for (int q = 0; q < b->n; q++) {
        ck_assert_int_eq(b->bytes[q], recv_bytes[q]);
        if (recv_bytes[q])
            memcpy((char *)recv + off, b->send[q], (size_t)recv_bytes[q]);
        off += recv_bytes[q];
    }
    return bus_wait(b);
}

/* Left to right in rank order, like examples/mpi_reduce.c. */
static int bus_sum(void *user, float *buf, int64_t n)
{
    worker *w = user;
    bus *b = w->b;
    b->send[w->rank] = buf;
    if (bus_wait(b) < 0)
        return -1;
    float *acc = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    ck_assert_ptr_nonnull(acc);
    memcpy(acc, b->send[0], sizeof(float) * (size_t)n);
    for (int q = 1; q < b->n; q++)
        for (int64_t i = 0; i < n; i++)
            acc[i] += ((const float *)b->send[q])[i];
    int rc = bus_wait(b); /* everyone has read every buffer */
    memcpy(buf, acc, sizeof(float) * (size_t)n);
    free(acc);
    return rc < 0 ? -1 : bus_wait(b);
}

static void bus_abort(void *user, int status, const char *message)
{
    worker *w = user;
    (void)status;
    w->aborts++;
    snprintf(w->msg, sizeof w->msg, "%s", message);
    pthread_mutex_lock(&w->b->mu);
    w->b->aborted = 1;
    pthread_cond_broadcast(&w->b->cv);
    pthread_mutex_unlock(&w->b->mu);
}

static const int32_t hidden[2] = {16, 8};

static void *train_worker(void *arg)
{
    worker *w = arg;
    counting_allocator_init(&w->al, 0);
    mml_ctx *ctx = counting_ctx(&w->al, 0, (uint32_t)w->threads, 5);
    mml_reduce_hook h;
    memset(&h, 0, sizeof h);
    h.struct_size = sizeof h;
    h.rank = w->rank;
    h.size = w->b ? w->b->n : 1;
    h.user = w;
    h.gather = bus_gather;
    h.sum_f32 = w->b && w->b->n == 2 ? bus_sum : NULL; /* three: the library's own sum */
    h.abort = bus_abort;
    h.sharded = w->sharded;
    mml_trainer_options o;
    mml_trainer_options_init(&o);
    o.variant = w->variant;
    o.n_hidden = 2;
    o.hidden = hidden;
    o.embed_dim = 4;
    o.batch_size = 96;
    o.max_epochs = 2;
    o.dropout = 0.1f;
    o.lr = 3e-3f;
    o.l2_dense = w->l2_dense;
    if (w->b)
        o.reduce = &h;
    mml_trainer *t = NULL;
    w->rc = mml_trainer_create(&t, ctx, &o, w->train, w->val);
    if (w->rc == MML_OK) {
        if (w->fail_after)
            w->al.fail_at = w->al.calls + w->fail_after;
        w->rc = mml_trainer_run(t);
    }
    if (w->rc == MML_OK) {
        mml_model *m = mml_trainer_model(t);
        w->n_values = 0;
        for (int64_t i = 0; i < mml_model_n_params(m); i++)
            w->n_values += mml_param_size(mml_model_param(m, i));
        w->values = malloc(sizeof(float) * (size_t)w->n_values);
        int64_t off = 0;
        for (int64_t i = 0; i < mml_model_n_params(m); i++) {
            mml_param *p = mml_model_param(m, i);
            memcpy(w->values + off, p->value, sizeof(float) * (size_t)mml_param_size(p));
            off += mml_param_size(p);
        }
        mml_metrics *mt = NULL;
        mml_metrics_summary s;
        w->eval_rc = mml_metrics_create(&mt, ctx, mml_dataset_n_domains(w->test));
        if (w->eval_rc == MML_OK)
            w->eval_rc = mml_trainer_evaluate(t, w->test, mml_trainer_mix_mode(t), mt);
        if (w->eval_rc == MML_OK)
            w->eval_rc = mml_metrics_compute(mt, &s);
        w->wauc = w->eval_rc == MML_OK ? s.wauc : -1.0;
        mml_metrics_destroy(mt);
    }
    if (w->rc < 0)
        snprintf(w->msg, sizeof w->msg, "%s", mml_ctx_last_error(ctx));
    mml_trainer_destroy(t);
    mml_ctx_destroy(ctx);
    ck_assert_int_eq(w->al.live, 0);
    return NULL;
}

static mml_dataset *g_train, *g_val, *g_test;
static mml_ctx *g_ctx;

static void data_setup(void)
{
    g_ctx = plain_ctx(1, 1);
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_rows = 6000;
    so.n_domains = 3;
    ck_assert_int_eq(mml_synthetic_generate(g_ctx, &so, &g_train, &g_val, &g_test), MML_OK);
}

static void data_teardown(void)
{
    mml_dataset_destroy(g_train);
    mml_dataset_destroy(g_val);
    mml_dataset_destroy(g_test);
    mml_ctx_destroy(g_ctx);
}

/* n workers (0: the plain trainer, no hook) of variant; results in w[0 .. n). */
static float g_l2_dense;
/* Nonzero: worker q gets g_shard[q] (train, val, test) and the sharded flag. */
static int g_sharded;
static mml_dataset *g_shard[2][3];

static void run_workers(worker *w, int n, int32_t variant, int threads, long fail_rank1_after)
{
    static bus b;
    memset(&b, 0, sizeof b);
    b.n = n;
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    int k = n > 0 ? n : 1;
    pthread_t th[MAXW];
    for (int q = 0; q < k; q++) {
        memset(&w[q], 0, sizeof w[q]);
        w[q].b = n > 0 ? &b : NULL;
        w[q].rank = q;
        w[q].train = g_train;
        w[q].val = g_val;
        w[q].test = g_test;
        w[q].variant = variant;
        w[q].threads = threads;
        w[q].fail_after = q == 1 ? fail_rank1_after : 0;
        w[q].l2_dense = g_l2_dense;
        if (g_sharded) {
            w[q].sharded = 1;
            w[q].train = g_shard[q][0];
            w[q].val = g_shard[q][1];
            w[q].test = g_shard[q][2];
        }
        ck_assert_int_eq(pthread_create(&th[q], NULL, train_worker, &w[q]), 0);
    }
    for (int q = 0; q < k; q++)
        pthread_join(th[q], NULL);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
}

static void free_workers(worker *w, int n)
{
    for (int q = 0; q < (n > 0 ? n : 1); q++)
        free(w[q].values);
}

static int same_values(const worker *a, const worker *b)
{
    return a->n_values == b->n_values &&
           memcmp(a->values, b->values, sizeof(float) * (size_t)a->n_values) == 0;
}

/* A hook of one worker changes nothing, bit for bit. */
START_TEST(one_worker_is_the_plain_trainer)
{
    worker plain[1], one[1];
    run_workers(plain, 0, MML_VARIANT_MOE, 2, 0);
    run_workers(one, 1, MML_VARIANT_MOE, 2, 0);
    ck_assert_msg(plain[0].rc == MML_OK && one[0].rc == MML_OK, "%s / %s", plain[0].msg,
                  one[0].msg);
    ck_assert(same_values(plain, one));
    ck_assert(plain[0].wauc == one[0].wauc);
    free_workers(plain, 0);
    free_workers(one, 1);
}
END_TEST

/* Two and three workers: the same weights on every worker and from run to
 * run, test metrics over all rows (the same on every worker), close to one
 * process. MoE covers every stage (stage 2 on one domain's rows). */
START_TEST(workers_agree_bit_for_bit)
{
    int n = 2 + _i;
    worker plain[1], a[MAXW], b[MAXW];
    run_workers(plain, 0, MML_VARIANT_MOE, 1, 0);
    run_workers(a, n, MML_VARIANT_MOE, 1, 0);
    run_workers(b, n, MML_VARIANT_MOE, 1, 0);
    ck_assert_msg(plain[0].rc == MML_OK, "%s", plain[0].msg);
    for (int q = 0; q < n; q++) {
        ck_assert_msg(a[q].rc == MML_OK && b[q].rc == MML_OK, "worker %d: %s / %s", q, a[q].msg,
                      b[q].msg);
        ck_assert_int_eq(a[q].eval_rc, MML_OK);
        ck_assert_int_eq(a[q].aborts, 0);
        ck_assert_msg(same_values(&a[0], &a[q]), "worker %d has other weights", q);
        ck_assert_msg(same_values(&a[q], &b[q]), "worker %d: runs differ", q);
        ck_assert(a[q].wauc == a[0].wauc);
    }
    /* Another split of the rows into batches, so not the same bits. */
    ck_assert(!same_values(&a[0], plain));
    ck_assert_msg(fabs(a[0].wauc - plain[0].wauc) < 0.02, "%d workers: test WAUC %.4f, one "
                  "process %.4f", n, a[0].wauc, plain[0].wauc);
    free_workers(plain, 0);
    free_workers(a, n);
    free_workers(b, n);
}
END_TEST

/* Rows [lo, hi) of ds as a data set of their own, with ds's field sizes. */
static mml_dataset *rows_of(const mml_dataset *ds, int64_t lo, int64_t hi)
{
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(ds, lo, hi - lo, &v), MML_OK);
    int64_t sizes[8];
    for (int32_t f = 0; f < mml_dataset_n_fields(ds); f++)
        sizes[f] = mml_dataset_field_size(ds, f);
    mml_arrays a;
    mml_arrays_init(&a);
    a.n_fields = v.n_fields;
    a.n_rows = v.n_rows;
    a.ids = v.ids;
    a.ids_row_stride = v.ids_row_stride;
    a.field_sizes = sizes;
    a.domain = v.domain;
    a.labels = v.labels;
    a.n_domains = mml_dataset_n_domains(ds);
    a.domain_field = mml_dataset_domain_field(ds);
    mml_dataset *out = NULL;
    ck_assert_int_eq(mml_dataset_from_arrays(g_ctx, &a, &out), MML_OK);
    return out;
}

/* Each worker given only its own rows (the sharded flag) trains exactly as
 * workers that take their range of the whole data sets. */
START_TEST(sharded_data_sets_equal_ranges)
{
    const mml_dataset *whole[3] = {g_train, g_val, g_test};
    for (int q = 0; q < 2; q++)
        for (int k = 0; k < 3; k++) {
            int64_t n = mml_dataset_n_rows(whole[k]);
            g_shard[q][k] = rows_of(whole[k], n * q / 2, n * (q + 1) / 2);
        }
    worker ranged[2], sharded[2];
    run_workers(ranged, 2, MML_VARIANT_MOE, 1, 0);
    g_sharded = 1;
    run_workers(sharded, 2, MML_VARIANT_MOE, 1, 0);
    g_sharded = 0;
    for (int q = 0; q < 2; q++) {
        ck_assert_msg(ranged[q].rc == MML_OK && sharded[q].rc == MML_OK, "worker %d: %s / %s", q,
                      ranged[q].msg, sharded[q].msg);
        ck_assert_msg(same_values(&ranged[q], &sharded[q]), "worker %d: sharded differs", q);
        ck_assert(ranged[q].wauc == sharded[q].wauc);
    }
    free_workers(ranged, 2);
    free_workers(sharded, 2);
    for (int q = 0; q < 2; q++)
        for (int k = 0; k < 3; k++)
            mml_dataset_destroy(g_shard[q][k]);
}
END_TEST

/* The dense L2 penalty: every worker's share adds up to the one penalty. */
START_TEST(dense_l2_with_two_workers)
{
    worker a[2], b[2];
    g_l2_dense = 1e-3f;
    run_workers(a, 2, MML_VARIANT_MLORA, 1, 0);
    run_workers(b, 2, MML_VARIANT_MLORA, 1, 0);
    g_l2_dense = 0.0f;
    for (int q = 0; q < 2; q++)
        ck_assert_msg(a[q].rc == MML_OK && b[q].rc == MML_OK, "%s", a[q].msg);
    ck_assert(same_values(&a[0], &a[1]));
    ck_assert(same_values(&a[0], &b[0]));
    worker c[2];
    run_workers(c, 2, MML_VARIANT_MLORA, 1, 0);
    ck_assert_msg(!same_values(&a[0], &c[0]), "the penalty changed nothing");
    free_workers(a, 2);
    free_workers(b, 2);
    free_workers(c, 2);
}
END_TEST

/* An allocation failing on worker 1 during training ends every worker's run
 * with an error, none waits for ever, nothing leaks (train_worker checks). */
START_TEST(a_failure_on_one_worker_ends_all)
{
    worker w[2];
    run_workers(w, 2, MML_VARIANT_MLORA, 1, 3 + 9 * _i);
    ck_assert_msg(w[1].rc < 0, "worker 1 should fail");
    ck_assert_msg(w[0].rc < 0, "worker 0 went on: %s", w[0].msg);
    ck_assert_msg(strstr(w[0].msg, "worker 1") || strstr(w[0].msg, "reduce hook"),
                  "worker 0's message: %s", w[0].msg);
    free_workers(w, 2);
}
END_TEST

/* Rows split over three accumulators and combined give exactly the AUCs of
 * one accumulator of every row (and its log loss up to the order of sums). */
START_TEST(combined_metrics_are_exact)
{
    enum { R = 5000, DOM = 3 };
    mml_ctx *ctx = plain_ctx(1, 1);
    static float logit[R], label[R];
    static int32_t dom[R], grp[R];
    mml_rng rng;
    mml__rng_init(&rng, 9, 1);
    for (int i = 0; i < R; i++) {
        dom[i] = (int32_t)mml__rng_below(&rng, DOM);
        grp[i] = (int32_t)mml__rng_below(&rng, 40);
        label[i] = (float)mml__rng_below(&rng, 2);
        /* Coarse scores: many ties across the parts. */
        logit[i] = (float)((int)mml__rng_below(&rng, 50) - 25) * 0.1f + label[i] * 0.3f;
    }
    mml_metrics *all = NULL, *part[3] = {NULL, NULL, NULL}, *comb = NULL;
    ck_assert_int_eq(mml_metrics_create(&all, ctx, DOM), MML_OK);
    ck_assert_int_eq(mml_metrics_create(&comb, ctx, DOM), MML_OK);
    ck_assert_int_eq(mml_metrics_add_grouped(all, logit, label, dom, grp, R), MML_OK);
    int cut[4] = {0, 1234, 1235, R};
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(mml_metrics_create(&part[k], ctx, DOM), MML_OK);
        ck_assert_int_eq(mml_metrics_add_grouped(part[k], logit + cut[k], label + cut[k],
                                                 dom + cut[k], grp + cut[k], cut[k + 1] - cut[k]),
                         MML_OK);
        size_t n = mml__metrics_packed_size(part[k]);
        void *buf = malloc(n);
        mml__metrics_pack(part[k], buf);
        ck_assert_int_eq(mml__metrics_append_packed(comb, buf, n), MML_OK);
        /* A block that does not fit is refused and changes nothing. */
        ck_assert_int_eq(mml__metrics_append_packed(comb, buf, n - 1), MML_ECORRUPT);
        free(buf);
    }
    mml_metrics_summary a, c;
    ck_assert_int_eq(mml_metrics_compute(all, &a), MML_OK);
    ck_assert_int_eq(mml_metrics_compute(comb, &c), MML_OK);
    ck_assert(a.n == c.n && a.auc == c.auc && a.wauc == c.wauc && a.mean_auc == c.mean_auc &&
              a.gauc == c.gauc);
    ck_assert(fabs(a.logloss - c.logloss) < 1e-12);
    for (int32_t d = 0; d < DOM; d++) {
        mml_domain_metrics x, y;
        ck_assert_int_eq(mml_metrics_domain(all, d, &x), MML_OK);
        ck_assert_int_eq(mml_metrics_domain(comb, d, &y), MML_OK);
        ck_assert(x.n == y.n && x.n_positive == y.n_positive && x.auc == y.auc);
    }
    for (int k = 0; k < 3; k++)
        mml_metrics_destroy(part[k]);
    mml_metrics_destroy(all);
    mml_metrics_destroy(comb);
    mml_ctx_destroy(ctx);
}
END_TEST

/* Hooks the trainer refuses, with a message naming what is wrong. */
START_TEST(bad_hooks_are_refused)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    worker w;
    memset(&w, 0, sizeof w);
    mml_reduce_hook good;
    memset(&good, 0, sizeof good);
    good.struct_size = sizeof good;
    good.rank = 1;
    good.size = 2;
    good.user = &w;
    good.gather = bus_gather;
    good.abort = bus_abort;
    for (int k = 0; k < 7; k++) {
        mml_reduce_hook h = good;
        mml_trainer_options o;
        mml_trainer_options_init(&o);
        o.reduce = &h;
        int want = MML_EINVAL;
        const char *word = "reduce hook";
        switch (k) {
        case 0: h.struct_size = 12, want = MML_EVERSION, word = "mml_reduce_hook"; break;
        case 1: h.size = 0; break;
        case 2: h.rank = 2; break;
        case 3: h.gather = NULL; break;
        case 4: h.abort = NULL; break;
        case 5: o.l2_embedding = 1e-4f, word = "l2_embedding"; break;
        default: o.batch_size = 1, word = "batch_size"; break;
        }
        mml_trainer *t = NULL;
        int rc = mml_trainer_create(&t, ctx, &o, g_train, g_val);
        ck_assert_msg(rc == want && !t, "case %d: %d", k, rc);
        ck_assert_msg(strstr(mml_ctx_last_error(ctx), word), "case %d: %s", k,
                      mml_ctx_last_error(ctx));
    }
    /* Size 1 with L2: the plain trainer, which has L2. */
    mml_reduce_hook one = good;
    one.rank = 0;
    one.size = 1;
    mml_trainer_options o;
    mml_trainer_options_init(&o);
    o.reduce = &one;
    o.l2_embedding = 1e-4f;
    mml_trainer *t = NULL;
    ck_assert_int_eq(mml_trainer_create(&t, ctx, &o, g_train, g_val), MML_OK);
    mml_trainer_destroy(t);
    mml_ctx_destroy(ctx);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("reduce");
    TCase *t = tcase_create("reduce");
    tcase_add_unchecked_fixture(t, data_setup, data_teardown);
    tcase_set_timeout(t, 300);
    tcase_add_test(t, combined_metrics_are_exact);
    tcase_add_test(t, bad_hooks_are_refused);
    tcase_add_test(t, one_worker_is_the_plain_trainer);
    tcase_add_loop_test(t, workers_agree_bit_for_bit, 0, 2);
    tcase_add_test(t, dense_l2_with_two_workers);
    tcase_add_test(t, sharded_data_sets_equal_ranges);
    tcase_add_loop_test(t, a_failure_on_one_worker_ends_all, 0, 3);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return run_suite(suite()); }
