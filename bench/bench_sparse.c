/* Training step time against the size of an embedding table.
 *
 *   mml-bench sparse [--rows 100000,10000000] [--optimizer lazy-adam,adagrad]
 *                     [--variant base|mlora|moe] [--hidden 256,128,64]
 *                     [--batch 1024] [--steps 100] [--rounds 5] [--threads 1]
 *
 * An ML-100K-shaped model (fields: a user table of R rows, 1682 items, 2
 * genders, 7 ages, 21 occupations; embedding 8; 2 domains) for each R asked
 * for, and the trainer's step on it: zero the gradients, forward (training),
 * loss, backward, optimiser step. The batches (32 of them, reused) draw
 * every id uniformly from its whole table, so a larger table also means
 * more cache misses per row: the cost the step cannot avoid.
 *
 * For each optimiser, every table size gets its own model and optimiser;
 * after 10 warm-up steps each, the sizes take turns, `steps` steps at a
 * time, `rounds` times, so that a change in the machine's load hits them
 * alike. Printed: the median over the rounds of the wall time and of the
 * process's CPU time per step, and each size's ratios to the first size
 * (the figures that say whether the step cost follows the batch or the
 * table; the CPU time's is the one to read on a machine others share).
 * The sparse optimisers (lazy Adam, Adagrad) should stay near 1; dense Adam
 * ("adam") visits every element of every table in each step.
 *
 * What remains of the difference is the memory system: rows scattered over
 * a table of hundreds of MB miss the caches and, with 4 KiB pages, the TLB,
 * in every phase that touches them (gather, backward, update, zeroing).
 * Selects the best BLIS kernels for this CPU first (as mml-train does). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moemlora/moemlora.h>

#include "bench.h"

#define N_FIELDS 5
#define N_BATCHES 32
#define WARMUP 10
#define MAX_SIZES 8
#define MAX_HIDDEN 8

static uint64_t rng_state = 88172645463325252ull;
static uint64_t next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void die(const char *what, mml_ctx *ctx)
{
    fprintf(stderr, "mml-bench sparse: %s: %s\n", what, ctx ? mml_ctx_last_error(ctx) : "");
    exit(1);
}

typedef struct batches {
    int64_t n;
    int32_t *ids, *domain;
    float *labels;
    mml_batch_view view[N_BATCHES];
} batches;

typedef struct run {
    int64_t rows;
    mml_ctx *ctx;
    mml_model *model;
    mml_optimizer *opt;
    mml_param **params;
    int64_t n_params;
    batches b;
    float *logits, *dlogits;
    int next_batch;
    double *wall, *cpu; /* per round, seconds a step */
} run;

static void make_batches(batches *b, int64_t n, const int64_t *sizes)
{
    b->n = n;
    b->ids = malloc(sizeof(int32_t) * (size_t)(N_BATCHES * n * N_FIELDS));
    b->domain = malloc(sizeof(int32_t) * (size_t)(N_BATCHES * n));
    b->labels = malloc(sizeof(float) * (size_t)(N_BATCHES * n));
    if (!b->ids || !b->domain || !b->labels)
        die("out of memory", NULL);
    for (int k = 0; k < N_BATCHES; k++) {
        int32_t *ids = b->ids + (size_t)k * (size_t)(n * N_FIELDS);
        int32_t *dom = b->domain + (size_t)k * (size_t)n;
        float *lab = b->labels + (size_t)k * (size_t)n;
        for (int64_t r = 0; r < n; r++) {
            for (int f = 0; f < N_FIELDS; f++)
                ids[r * N_FIELDS + f] = (int32_t)(next() % (uint64_t)sizes[f]);
            dom[r] = ids[r * N_FIELDS + 2]; /* the gender is the domain */
            lab[r] = (float)(next() % 2);
        }
        mml_batch_view_init(&b->view[k], n, N_FIELDS, ids, 0, NULL, dom, lab);
    }
}

static void run_init(run *r, int64_t rows, int32_t kind, const char *variant, int32_t n_hidden,
                     const int32_t *hidden, int64_t batch, uint32_t threads, int rounds)
{
    memset(r, 0, sizeof *r);
    r->rows = rows;
    mml_ctx_options co;
    mml_ctx_options_init(&co);
    co.n_threads = threads;
    if (mml_ctx_create(&r->ctx, &co) != MML_OK)
        die("no context", NULL);
    int64_t sizes[N_FIELDS] = {rows, 1682, 2, 7, 21};
    mml_model_options mo;
    mml_model_options_init(&mo);
    mo.n_fields = N_FIELDS;
    mo.field_sizes = sizes;
    mo.n_domains = 2;
    mo.n_hidden = n_hidden;
    mo.hidden = hidden;
    if (strcmp(variant, "mlora") == 0) {
        mo.n_experts = 2;
    } else if (strcmp(variant, "moe") == 0) {
        mo.n_experts = 2;
        mo.gate = 1;
    } else if (strcmp(variant, "base") != 0) {
        fprintf(stderr, "mml-bench sparse: unknown variant '%s'\n", variant);
        exit(2);
    }
    if (mml_model_create(&r->model, r->ctx, &mo) != MML_OK)
        die("model_create", r->ctx);
    r->n_params = mml_model_n_params(r->model);
    r->params = malloc(sizeof(mml_param *) * (size_t)r->n_params);
    if (!r->params)
        die("out of memory", NULL);
    for (int64_t i = 0; i < r->n_params; i++)
        r->params[i] = mml_model_param(r->model, i);
    mml_optimizer_options oo;
    mml_optimizer_options_init(&oo);
    oo.kind = kind;
    if (mml_optimizer_create(&r->opt, r->ctx, &oo, r->params, r->n_params) != MML_OK)
        die("optimizer_create", r->ctx);
    make_batches(&r->b, batch, sizes);
    r->logits = malloc(sizeof(float) * (size_t)batch);
    r->dlogits = malloc(sizeof(float) * (size_t)batch);
    r->wall = calloc((size_t)rounds, sizeof(double));
    r->cpu = calloc((size_t)rounds, sizeof(double));
    if (!r->logits || !r->dlogits || !r->wall || !r->cpu)
        die("out of memory", NULL);
}

static void run_free(run *r)
{
    mml_optimizer_destroy(r->opt);
    mml_model_destroy(r->model);
    mml_ctx_destroy(r->ctx);
    free(r->params);
    free(r->b.ids);
    free(r->b.domain);
    free(r->b.labels);
    free(r->logits);
    free(r->dlogits);
    free(r->wall);
    free(r->cpu);
}

/* The trainer's step (without the L2 term, which is 0 here). */
static void steps(run *r, int n, int32_t mode)
{
    for (int s = 0; s < n; s++) {
        const mml_batch_view *v = &r->b.view[r->next_batch];
        r->next_batch = (r->next_batch + 1) % N_BATCHES;
        double loss;
        mml_params_zero_grad(r->params, r->n_params);
        if (mml_model_forward(r->model, v, mode, -1, 1, r->logits) != MML_OK ||
            mml_bce_with_logits(r->ctx, r->logits, v->labels, NULL, v->n_rows, &loss,
                                r->dlogits) != MML_OK ||
            mml_model_backward(r->model, r->dlogits) != MML_OK ||
            mml_optimizer_step(r->opt) != MML_OK)
            die("step", r->ctx);
    }
}

static int parse_list(const char *s, int64_t *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 1)
            return -1;
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

static int32_t kind_of(const char *name)
{
    if (strcmp(name, "lazy-adam") == 0)
        return MML_OPT_LAZY_ADAM;
    if (strcmp(name, "adagrad") == 0)
        return MML_OPT_ADAGRAD;
    if (strcmp(name, "adam") == 0)
        return MML_OPT_ADAM;
    if (strcmp(name, "sgd") == 0)
        return MML_OPT_SGD;
    fprintf(stderr, "mml-bench sparse: unknown optimizer '%s'\n", name);
    exit(2);
}

int bench_sparse_main(int argc, char **argv)
{
    int64_t sizes[MAX_SIZES] = {100000, 10000000}, hid[MAX_HIDDEN] = {256, 128, 64};
    int n_sizes = 2, n_hidden = 3, n_steps = 100, rounds = 5;
    int64_t batch = 1024;
    uint32_t threads = 1;
    char optimizers[256] = "lazy-adam,adagrad";
    const char *variant = "base";
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a], *val = a + 1 < argc ? argv[a + 1] : NULL;
        if (!val) {
            fprintf(stderr, "mml-bench sparse: %s needs a value\n", arg);
            return 2;
        }
        a++;
        if (strcmp(arg, "--rows") == 0)
            n_sizes = parse_list(val, sizes, MAX_SIZES);
        else if (strcmp(arg, "--hidden") == 0)
            n_hidden = parse_list(val, hid, MAX_HIDDEN);
        else if (strcmp(arg, "--optimizer") == 0)
            snprintf(optimizers, sizeof optimizers, "%s", val);
        else if (strcmp(arg, "--variant") == 0)
            variant = val;
        else if (strcmp(arg, "--batch") == 0)
            batch = atoll(val);
        else if (strcmp(arg, "--steps") == 0)
            n_steps = atoi(val);
        else if (strcmp(arg, "--rounds") == 0)
            rounds = atoi(val);
        else if (strcmp(arg, "--threads") == 0)
            threads = (uint32_t)atoi(val);
        else {
            fprintf(stderr, "mml-bench sparse: unknown option %s\n", arg);
            return 2;
        }
    }
    if (n_sizes < 1 || n_hidden < 1 || batch < 1 || n_steps < 1 || rounds < 1 || threads < 1) {
        fprintf(stderr, "mml-bench sparse: bad option value\n");
        return 2;
    }
    int32_t hidden[MAX_HIDDEN];
    for (int i = 0; i < n_hidden; i++)
        hidden[i] = (int32_t)hid[i];
    if (mml_blis_arch_select("auto", 0) != MML_OK)
        fprintf(stderr, "mml-bench sparse: could not select the BLIS kernels\n");
    int32_t mode = strcmp(variant, "moe") == 0     ? MML_MIX_GATED
                   : strcmp(variant, "mlora") == 0 ? MML_MIX_DOMAIN
                                                   : MML_MIX_NONE;
    printf("variant %s, batch %lld, %d steps x %d rounds, %u thread(s)\n", variant,
           (long long)batch, n_steps, rounds, threads);
    printf("%-10s %12s %12s %12s %10s %10s\n", "optimizer", "user rows", "wall ms/step",
           "cpu ms/step", "wall ratio", "cpu ratio");
    for (char *save = NULL, *name = strtok_r(optimizers, ",", &save); name;
         name = strtok_r(NULL, ",", &save)) {
        int32_t kind = kind_of(name);
        run runs[MAX_SIZES];
        for (int i = 0; i < n_sizes; i++) {
            run_init(&runs[i], sizes[i], kind, variant, n_hidden, hidden, batch, threads, rounds);
            steps(&runs[i], WARMUP, mode);
        }
        for (int k = 0; k < rounds; k++)
            for (int i = 0; i < n_sizes; i++) {
                double w0 = bench_now(), c0 = bench_process_cpu_now();
                steps(&runs[i], n_steps, mode);
                runs[i].wall[k] = (bench_now() - w0) / n_steps;
                runs[i].cpu[k] = (bench_process_cpu_now() - c0) / n_steps;
            }
        double wall0 = 0.0, cpu0 = 0.0;
        for (int i = 0; i < n_sizes; i++) {
            double wall = bench_median(runs[i].wall, rounds), cpu = bench_median(runs[i].cpu, rounds);
            if (i == 0) {
                wall0 = wall;
                cpu0 = cpu;
            }
            printf("%-10s %12lld %12.3f %12.3f %10.3f %10.3f\n", name, (long long)sizes[i],
                   1e3 * wall, 1e3 * cpu, wall0 > 0 ? wall / wall0 : 0.0,
                   cpu0 > 0 ? cpu / cpu0 : 0.0);
            fflush(stdout);
        }
        for (int i = 0; i < n_sizes; i++)
            run_free(&runs[i]);
    }
    return 0;
}
