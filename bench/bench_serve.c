/* mml-bench serve: serving speed through sessions on a shared read-only model.
 *
 *   mml-bench serve [--backbone mlp,deepfm,autoint] [--batches N] [--json]
 *
 * An ML-100K-shaped model (fields of 943, 1682 and 2 ids, embedding 8,
 * tower 256-128-64, 2 domains) of each backbone asked for (default mlp;
 * autoint with its default 3 layers of 4 heads of width 8), as the shared
 * model (no experts) and as MoE-MLoRA (2 experts and the gate), with random
 * weights. For each:
 *   - single-row latency: mml_session_predict_row() on one thread, the
 *     median of 2,000 timed calls after 200 warm-ups (and, for comparison,
 *     mml_model_predict() on one row the same way);
 *   - batch throughput: 2 threads, each with its own context (1 BLIS
 *     thread) and session, predicting batches of 1024 rows (default 300
 *     batches a thread, after 50 warm-up batches); rows/s over the wall time of the slower thread,
 *     and the sum of each thread's rows per second of its own CPU time (the
 *     figure to read on a machine that other jobs share).
 * The BLIS kernels are selected by mml_bench.c first (as mml-train does).
 * --json prints one JSON object a model instead (bench/serve_compare.py
 * reads them). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moemlora/moemlora.h>

#include "bench.h"

#define WARMUP 200
#define CALLS 2000
#define BATCH 1024
#define N_THREADS 2

static const int64_t sizes[3] = {943, 1682, 2};

static uint64_t rng = 88172645463325252ull;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static mml_ctx *make_ctx(void)
{
    mml_ctx_options o;
    mml_ctx_options_init(&o);
    o.n_threads = 1;
    mml_ctx *ctx = NULL;
    if (mml_ctx_create(&ctx, &o) != MML_OK) {
        fprintf(stderr, "mml-bench serve: no context\n");
        exit(1);
    }
    return ctx;
}

static mml_model *make_model(mml_ctx *ctx, const char *backbone, int moe)
{
    mml_model_options o;
    mml_model_options_init(&o);
    o.backbone = backbone;
    o.n_fields = 3;
    o.field_sizes = sizes;
    o.n_domains = 2;
    o.n_experts = moe ? 2 : 0;
    o.gate = moe;
    mml_model *m = NULL;
    if (mml_model_create(&m, ctx, &o) != MML_OK) {
        fprintf(stderr, "mml-bench serve: %s\n", mml_ctx_last_error(ctx));
        exit(1);
    }
    /* Trained-looking weights: experts (B = 0 at init) and biases count. */
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        for (int64_t j = 0; j < p->rows * p->cols; j++)
            p->value[j] += 0.05f * ((float)(next() % 2001) / 1000.0f - 1.0f);
    }
    if (mml_model_make_readonly(m) != MML_OK) {
        fprintf(stderr, "mml-bench serve: %s\n", mml_ctx_last_error(ctx));
        exit(1);
    }
    return m;
}

typedef struct rows {
    int32_t ids[BATCH * 3], dom[BATCH];
    mml_batch_view v;
} rows;

static void fill_rows(rows *r)
{
    for (int i = 0; i < BATCH; i++) {
        for (int f = 0; f < 3; f++)
            r->ids[i * 3 + f] = (int32_t)(next() % (uint32_t)sizes[f]);
        r->dom[i] = (int32_t)(next() % 2);
    }
    mml_batch_view_init(&r->v, BATCH, 3, r->ids, 0, NULL, r->dom, NULL);
}

static double median_us(double *t, int n)
{
    return 1e6 * bench_median(t, n);
}

typedef struct job {
    const mml_model *model;
    const rows *r;
    int batches;
    double seconds, cpu_seconds;
    int rc;
    pthread_barrier_t *start;
} job;

static void *worker(void *arg)
{
    job *j = arg;
    mml_ctx *ctx = make_ctx();
    mml_session *s = NULL;
    mml_session_options so;
    mml_session_options_init(&so);
    so.max_rows = BATCH;
    j->rc = mml_session_create(&s, ctx, j->model, &so);
    float *p = malloc(sizeof(float) * BATCH);
    /* Warm-up: the first passes of a process run slower (caches, BLIS's
     * packing pool, the other core waking up); the figure is the steady state. */
    for (int b = 0; j->rc == MML_OK && b < 50; b++)
        j->rc = mml_session_predict(s, &j->r->v, p, NULL);
    pthread_barrier_wait(j->start);
    double t0 = bench_now(), c0 = bench_thread_cpu_now();
    for (int b = 0; j->rc == MML_OK && b < j->batches; b++)
        j->rc = mml_session_predict(s, &j->r->v, p, NULL);
    j->seconds = bench_now() - t0;
    j->cpu_seconds = bench_thread_cpu_now() - c0;
    free(p);
    mml_session_destroy(s);
    mml_ctx_destroy(ctx);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: mml-bench serve [--backbone mlp,deepfm,autoint] [--batches N] [--json]\n");
    exit(2);
}

int bench_serve_main(int argc, char **argv)
{
    int batches = 300, json = 0;
    char list[256] = "mlp";
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--json") == 0)
            json = 1;
        else if (strcmp(argv[a], "--batches") == 0 && a + 1 < argc && (batches = atoi(argv[++a])) >= 1)
            continue;
        else if (strcmp(argv[a], "--backbone") == 0 && a + 1 < argc && strlen(argv[a + 1]) < sizeof list)
            strcpy(list, argv[++a]);
        else
            usage();
    }
    rows *r = malloc(sizeof *r);
    fill_rows(r);
    for (char *save = NULL, *backbone = strtok_r(list, ",", &save); backbone;
         backbone = strtok_r(NULL, ",", &save))
    for (int moe = 0; moe <= 1; moe++) {
        mml_ctx *ctx = make_ctx();
        mml_model *m = make_model(ctx, backbone, moe);
        const char *name = moe ? "MoE-MLoRA (2 experts, gate)" : "shared model";
        if (!json)
            printf("%s %s, BLIS kernels %s\n", backbone, name, mml_ctx_blis_arch(ctx));
        mml_ctx *sctx = make_ctx();
        mml_session *s = NULL;
        if (mml_session_create(&s, sctx, m, NULL) != MML_OK) {
            fprintf(stderr, "mml-bench serve: %s\n", mml_ctx_last_error(sctx));
            return 1;
        }
        double *t = malloc(sizeof(double) * CALLS);
        float prob;
        for (int i = 0; i < WARMUP + CALLS; i++) {
            int k = i % BATCH;
            double t0 = bench_now();
            int rc = mml_session_predict_row(s, r->ids + 3 * k, NULL, r->dom[k], &prob);
            double dt = bench_now() - t0;
            if (rc != MML_OK) {
                fprintf(stderr, "mml-bench serve: %s\n", mml_ctx_last_error(sctx));
                return 1;
            }
            if (i >= WARMUP)
                t[i - WARMUP] = dt;
        }
        double session_us = median_us(t, CALLS);
        mml_batch_view one = r->v;
        one.n_rows = 1;
        for (int i = 0; i < WARMUP + CALLS; i++) {
            one.ids = r->ids + 3 * (i % BATCH);
            one.domain = r->dom + i % BATCH;
            double t0 = bench_now();
            mml_model_predict(m, &one, mml_model_mix_mode(m), 0, &prob);
            double dt = bench_now() - t0;
            if (i >= WARMUP)
                t[i - WARMUP] = dt;
        }
        double model_us = median_us(t, CALLS);
        if (!json) {
            printf("  session single row: median %.2f us (%d calls after %d warm-ups)\n", session_us,
                   CALLS, WARMUP);
            printf("  mml_model_predict single row: median %.2f us\n", model_us);
        }
        free(t);
        mml_session_destroy(s);
        mml_ctx_destroy(sctx);

        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, N_THREADS);
        pthread_t th[N_THREADS];
        job jobs[N_THREADS];
        for (int i = 0; i < N_THREADS; i++) {
            jobs[i] = (job){m, r, batches, 0.0, 0.0, 0, &start};
            pthread_create(&th[i], NULL, worker, &jobs[i]);
        }
        double slowest = 0.0, cpu_rate = 0.0;
        for (int i = 0; i < N_THREADS; i++) {
            pthread_join(th[i], NULL);
            if (jobs[i].rc != MML_OK) {
                fprintf(stderr, "mml-bench serve: a worker failed with %d\n", jobs[i].rc);
                return 1;
            }
            if (jobs[i].seconds > slowest)
                slowest = jobs[i].seconds;
            cpu_rate += (double)batches * BATCH / jobs[i].cpu_seconds;
        }
        pthread_barrier_destroy(&start);
        double total = (double)N_THREADS * batches * BATCH;
        if (json)
            printf("{\"side\": \"c\", \"backbone\": \"%s\", \"variant\": \"%s\", \"threads\": %d, "
                   "\"blis_arch\": \"%s\", \"batch_rows_per_s\": %.0f, \"cpu_rows_per_s\": %.0f, "
                   "\"latency_us\": %.3f, \"model_predict_latency_us\": %.3f}\n",
                   backbone, moe ? "moe" : "base", N_THREADS, mml_ctx_blis_arch(ctx), total / slowest,
                   cpu_rate, session_us, model_us);
        else
            printf("  %d threads x batches of %d: %.2f M rows/s wall (%d batches a thread, %.3f s); "
                   "%.2f M rows/s summed over the threads' CPU time\n",
                   N_THREADS, BATCH, total / slowest / 1e6, batches, slowest, cpu_rate / 1e6);
        fflush(stdout);
        mml_model_destroy(m);
        mml_ctx_destroy(ctx);
    }
    free(r);
    return 0;
}
