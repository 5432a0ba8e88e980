/* mml-bench train: training speed of each stage, through the public API.
 *
 *   mml-bench train [--config ml100k|large|all] [--backbone mlp,deepfm] [--threads N]
 *                   [--epochs N] [--sections stages,experts,tower,threads] [--steps N]
 *                   [--data DIR] [--json FILE]
 *   mml-bench train --write-splits DIR [--config ...] [--data DIR]
 *   mml-bench train --flops [--config ...] [--backbone ...]
 *
 * Configurations (the model of ../shared/docs/PROTOCOL.md: fields user,
 * item and domain, tower 256-128-64, dropout 0.5, alpha 16 (ranks 16, 8,
 * 4), one expert per domain, Adam 1e-3, batch 1024):
 *   ml100k  ML-100K (DIR/ml-100k), domains by gender (2), split seed 123,
 *           embedding 8: 60,000 training rows;
 *   large   the synthetic generator with 1,000,000 rows (before the
 *           60/20/20 split: 600,000 training rows), 100,000 users, 50,000
 *           items, 8 domains, seed 123, embedding 16.
 *
 * Sections:
 *   stages   for each configuration and backbone, the four training stages:
 *            the shared model (MoE-MLoRA's stage 1, the same computation as
 *            the base variant), MLoRA's joint stage, stage 2 (the experts,
 *            one after the other) and stage 3 (the gate). Each runs exactly
 *            --epochs epochs (the validation score is replaced by a
 *            constant, so nothing stops early and no validation pass runs).
 *            Per stage: training rows/s (the trainer's own figure: rows over
 *            the training loop's time, median over the epochs; stage 2: over
 *            every expert's epochs), FLOPs per row (below), GFLOP/s = rows/s
 *            x FLOPs per row, and the peak RSS of the process so far. MLoRA
 *            and MoE-MLoRA each run in a child process of their own (data
 *            loading included), so the peak RSS of MoE's stages is that of
 *            MoE-MLoRA's run up to and including the stage.
 *   experts  the gated mixture against the shared model, on a model of the
 *            configuration's shape with E = 1, 2, 4, 8 experts and the gate:
 *            one step (mml_model_forward in training mode, then
 *            mml_model_backward, every parameter trainable; no optimiser
 *            step) on a fixed batch of 1024 rows, gated (MML_MIX_GATED)
 *            and shared (MML_MIX_NONE) alternately, median over --steps
 *            steps each. Prints time(gated) / time(shared) next to
 *            FLOPs(gated) / FLOPs(shared); the target is a time ratio no
 *            larger than the FLOPs ratio.
 *   tower    the tower's matrix products against bare BLIS: a tower of the
 *            configuration's widths (mml_tower_create, dropout 0), forward
 *            and backward (input gradient included) at batch 1024, against
 *            bli_sgemm_ex on the same nine (m, n, k) products in the same
 *            order (forward x W; backward dW += x^T dz and dx = dz W^T per
 *            layer), with 1 and with 2 threads, median over --steps
 *            iterations each, alternating. Both counted at 6 n sum_l a_l b_l
 *            FLOPs; the ratio tower / sgemm (target >= 50%) says how much
 *            of BLIS's speed survives the tower's own passes (bias, ReLU,
 *            masks, copies).
 *   threads  the stages of the large configuration with 1 and with 2
 *            threads (the 2-thread figures of the stages section when it
 *            ran them), and the speed-up (target 2 threads >= 1.7x).
 *
 * Every measurement runs in a child process (fork) of its own: the parent
 * never runs BLIS, so no OpenMP state crosses a fork, and each child's
 * peak RSS (getrusage) is its own.
 *
 * FLOPs per row of a training step, forward + backward. A matrix product of
 * an (m x k) and a (k x n) matrix counts 2 m n k (per row of the batch:
 * 2 k n); elementwise work (bias, ReLU, dropout, the mixture's scaling by
 * the gate weights, the loss) is not counted, nor is the optimiser (its
 * work grows with the parameters, not the rows), except DeepFM's FM term,
 * which is all the work of its side part. Only the products a stage needs
 * are counted: none for the gradients of frozen parameters. Tower layer l
 * maps width a = d_{l-1} to b = d_l (d_0 = F k, F = 3 fields); r = r_l is
 * the adapters' rank, E the number of experts, g the gate's domain
 * embedding width (4), D the domains, n the batch.
 *
 *   shared path      forward 2ab; backward dW = x^T dz 2ab (W trainable),
 *                    dx = dz W^T 2ab (a gradient needed below: l > 0, or
 *                    the embeddings trainable)
 *   one adapter      forward x A 2ar, (x A) B 2rb; backward dB 2rb
 *   (MLoRA, stage 2) (trainable), d(xA) = dz B^T 2rb, dA 2ar (trainable),
 *                    dx += d(xA) A^T 2ar (a gradient needed below)
 *   gated mixture    E times the adapter's products, plus g C 2Eb forward;
 *                    backward as the adapter for each expert, plus dC = g^T
 *                    dz 2Eb (trainable) and, for the gate weights, dg_i =
 *                    <d(xA)_i, (xA)_i> + <dz, c_i> 2E(r + b) (gate trainable)
 *   output layer     forward 2 d_L; backward dW 2 d_L (trainable), dx 2 d_L
 *   gate             softmax(W_g e_d + b_g) for the D domains once a batch:
 *                    2DgE / n forward, 4DgE / n backward (trainable)
 *   DeepFM           FM term forward 3Fk, backward 3Fk (embeddings
 *                    trainable); linear term forward F
 *
 * Stages: shared = embeddings and backbone trainable, no adapters; MLoRA =
 * everything trainable, one adapter a row (the row's domain); stage 2 = one
 * adapter, only it trainable (no gradient to the embeddings, none for W);
 * stage 3 = the gated mixture of all E experts, only the gate trainable. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <blis.h>
#include <moemlora/moemlora.h>

#include "bench.h"

/* ------------------------------------------------------------ set-up */

#define BATCH 1024
#define N_LAYERS 3
#define ALPHA 16
#define GATE_DIM 4 /* mml_model_options.gate_dim's default */
#define MAX_BACKBONES 8
#define MAX_ROWS 256

static const int32_t hidden[N_LAYERS] = {256, 128, 64};

enum { CFG_ML100K, CFG_LARGE, N_CONFIGS };
typedef struct config {
    const char *name, *what;
    int32_t embed_dim;
    int32_t n_domains;
    int64_t sizes[3]; /* user, item, domain: the fields' vocabularies */
} config;
static const config configs[N_CONFIGS] = {
    {"ml100k", "ML-100K, domains by gender, split seed 123", 8, 2, {943, 1682, 2}},
    {"large", "synthetic, 1,000,000 rows, 100,000 users, 50,000 items, 8 domains, seed 123", 16, 8,
     {100000, 50000, 8}},
};
#define LARGE_ROWS 1000000
#define LARGE_USERS 100000
#define LARGE_ITEMS 50000
#define DATA_SEED 123

enum { ST_SHARED, ST_MLORA, ST_EXPERTS, ST_GATE, N_STAGES };
static const char *const stage_names[N_STAGES] = {"shared", "mlora", "experts", "gate"};

enum { SEC_STAGES = 1, SEC_EXPERTS = 2, SEC_TOWER = 4, SEC_THREADS = 8 };

typedef struct opts {
    int config[N_CONFIGS];
    char backbone[MAX_BACKBONES][32];
    int n_backbones;
    uint32_t threads;
    int32_t epochs;
    int steps;
    unsigned sections;
    const char *data_dir; /* holds ml-100k/ */
    const char *json, *write_splits;
    int print_flops;
} opts;

/* ------------------------------------------------------------ FLOPs */

/* The shapes the FLOPs are computed from. */
typedef struct shapes {
    int32_t F, k, D, E, gate_dim;
    int32_t dims[N_LAYERS + 1], ranks[N_LAYERS];
    int fm; /* DeepFM's FM and linear terms */
    int64_t batch;
} shapes;

/* What a step runs and trains. */
typedef struct step_kind {
    int adapters; /* 0: none; 1: one adapter a row; else a gated mixture of E */
    int train_embeddings, train_backbone, train_experts, train_gate;
} step_kind;

static const step_kind stage_kind[N_STAGES] = {
    {0, 1, 1, 0, 0}, /* shared: MoE stage 1 / base */
    {1, 1, 1, 1, 0}, /* MLoRA joint */
    {1, 0, 0, 1, 0}, /* stage 2: one expert */
    {2, 0, 0, 0, 1}, /* stage 3: the gate over the gated mixture */
};

static void make_shapes(shapes *s, const config *c, const char *backbone, int32_t n_experts)
{
    memset(s, 0, sizeof *s);
    s->F = 3;
    s->k = c->embed_dim;
    s->D = c->n_domains;
    s->E = n_experts;
    s->gate_dim = GATE_DIM;
    s->dims[0] = s->F * s->k;
    for (int l = 0; l < N_LAYERS; l++) {
        s->dims[l + 1] = hidden[l];
        s->ranks[l] = mml_lora_rank_for(s->dims[l], s->dims[l + 1], ALPHA);
    }
    s->fm = !strcmp(backbone, "deepfm");
    s->batch = BATCH;
}

/* FLOPs per row of one step (the file's comment has the formulas). */
static double step_flops(const shapes *s, const step_kind *w, double *fwd_out, double *bwd_out)
{
    double fwd = 0.0, bwd = 0.0;
    int gated = w->adapters > 1;
    double m = gated ? s->E : 1.0, E = s->E;
    for (int l = 0; l < N_LAYERS; l++) {
        double a = s->dims[l], b = s->dims[l + 1], r = s->ranks[l];
        int need_dx = l > 0 || w->train_embeddings;
        fwd += 2 * a * b;
        if (w->train_backbone)
            bwd += 2 * a * b;
        if (need_dx)
            bwd += 2 * a * b;
        if (!w->adapters)
            continue;
        fwd += m * (2 * a * r + 2 * r * b);
        if (gated)
            fwd += 2 * E * b;
        if (w->train_experts)
            bwd += m * (2 * r * b + 2 * a * r) + (gated ? 2 * E * b : 0.0);
        if (w->train_experts || need_dx || (gated && w->train_gate))
            bwd += m * 2 * r * b;
        if (need_dx)
            bwd += m * 2 * a * r;
        if (gated && w->train_gate)
            bwd += 2 * E * (r + b);
    }
    double last = s->dims[N_LAYERS];
    fwd += 2 * last;
    bwd += 2 * last + (w->train_backbone ? 2 * last : 0.0);
    if (gated) {
        fwd += 2.0 * s->D * s->gate_dim * E / (double)s->batch;
        if (w->train_gate)
            bwd += 4.0 * s->D * s->gate_dim * E / (double)s->batch;
    }
    if (s->fm) {
        fwd += 3.0 * s->F * s->k + s->F;
        if (w->train_embeddings)
            bwd += 3.0 * s->F * s->k;
    }
    if (fwd_out)
        *fwd_out = fwd;
    if (bwd_out)
        *bwd_out = bwd;
    return fwd + bwd;
}

/* ------------------------------------------------------------ helpers */

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

static mml_ctx *make_ctx(uint32_t threads, uint64_t seed)
{
    mml_ctx_options o;
    mml_ctx_options_init(&o);
    o.n_threads = threads;
    o.seed = seed;
    mml_ctx *ctx = NULL;
    return mml_ctx_create(&ctx, &o) == MML_OK ? ctx : NULL;
}

static int load_data(mml_ctx *ctx, const opts *o, int cfg, mml_dataset **tr, mml_dataset **va,
                     mml_dataset **te)
{
    if (cfg == CFG_ML100K) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/ml-100k", o->data_dir);
        mml_movielens_options mo;
        mml_movielens_options_init(&mo);
        mo.dir = dir;
        mo.domain_by = MML_DOMAIN_BY_GENDER;
        mo.split_seed = DATA_SEED;
        return mml_movielens_load(ctx, &mo, tr, va, te);
    }
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_rows = LARGE_ROWS;
    so.n_users = LARGE_USERS;
    so.n_items = LARGE_ITEMS;
    so.n_domains = configs[CFG_LARGE].n_domains;
    so.seed = DATA_SEED;
    return mml_synthetic_generate(ctx, &so, tr, va, te);
}

static uint64_t rng_state = 88172645463325252ull;
static uint32_t next_rand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

/* Uniform in [-1, 1). */
static float rand_sym(void)
{
    return (float)(next_rand() >> 8) / (float)(1u << 23) - 1.0f;
}

/* Runs fn(arg, out) in a child process and copies its out (size bytes)
 * back through a pipe. 0 when the child delivered it in full. */
typedef void (*child_fn)(const void *arg, void *out);
static int in_child(child_fn fn, const void *arg, void *out, size_t size)
{
    int fd[2];
    if (pipe(fd) != 0) {
        perror("mml-bench train: pipe");
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("mml-bench train: fork");
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        close(fd[0]);
        memset(out, 0, size);
        fn(arg, out);
        const char *p = out;
        size_t left = size;
        while (left > 0) {
            ssize_t w = write(fd[1], p, left);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                _exit(1);
            p += w;
            left -= (size_t)w;
        }
        close(fd[1]);
        _exit(0);
    }
    close(fd[1]);
    memset(out, 0, size);
    char *p = out;
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd[0], p + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (got != size || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "mml-bench train: a measurement's process failed (%s)\n",
                WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "no result");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ stages */

typedef struct stage_result {
    int32_t ran;
    int32_t epochs;      /* epochs timed (stage 2: over every expert) */
    double rows_per_s;   /* median over those epochs */
    double seconds;      /* the stage's wall time */
    double peak_rss_mb;  /* the process's peak so far, at the stage's end */
    int64_t rows;        /* training rows an epoch (stage 2: over every expert) */
} stage_result;

typedef struct run_job {
    const opts *o;
    int cfg;
    const char *backbone;
    int32_t variant; /* MML_VARIANT_MLORA or MML_VARIANT_MOE */
    uint32_t threads;
} run_job;

typedef struct run_result {
    int32_t ok;
    char error[512];
    int64_t train_rows;
    int32_t n_domains, n_experts;
    double data_seconds;
    stage_result st[N_STAGES];
} run_result;

/* No validation pass: every epoch scores the same, so the stage runs its
 * max_epochs (patience is larger) and timing is the training loop's. */
static int constant_score(void *user, int32_t stage, int32_t expert, int32_t epoch, double *score)
{
    (void)user, (void)stage, (void)expert, (void)epoch;
    *score = 0.5;
    return 0;
}

static void fill_stage(mml_trainer *tr, int32_t stage, stage_result *out, double seconds)
{
    double rates[4096];
    int n = 0;
    for (int64_t i = 0; i < mml_trainer_n_epoch_reports(tr) && n < 4096; i++) {
        mml_epoch_report er;
        if (mml_trainer_epoch_report(tr, i, &er) == MML_OK && er.stage == stage)
            rates[n++] = er.rows_per_s;
    }
    out->ran = 1;
    out->epochs = n;
    out->rows_per_s = bench_median(rates, n);
    out->seconds = seconds;
    out->peak_rss_mb = peak_rss_mb();
}

static void run_child(const void *arg, void *outp)
{
    const run_job *j = arg;
    run_result *out = outp;
    mml_dataset *tr = NULL, *va = NULL, *te = NULL;
    mml_trainer *t = NULL;
    mml_ctx *ctx = make_ctx(j->threads, 1);
    if (!ctx) {
        snprintf(out->error, sizeof out->error, "no context");
        return;
    }
    double t0 = bench_now();
    if (load_data(ctx, j->o, j->cfg, &tr, &va, &te) < 0)
        goto fail;
    out->data_seconds = bench_now() - t0;
    out->train_rows = mml_dataset_n_rows(tr);
    out->n_domains = mml_dataset_n_domains(tr);
    mml_dataset_destroy(te); /* the trainer never reads it */
    te = NULL;
    mml_trainer_options to;
    mml_trainer_options_init(&to);
    to.variant = j->variant;
    to.backbone = j->backbone;
    to.embed_dim = configs[j->cfg].embed_dim;
    to.alpha = ALPHA;
    to.n_hidden = N_LAYERS;
    to.hidden = hidden;
    to.dropout = 0.5f;
    to.lr = 1e-3f;
    to.batch_size = BATCH;
    to.optimizer = MML_OPT_ADAM;
    to.max_epochs = j->o->epochs;
    to.patience = j->o->epochs + 1;
    to.experts_per_domain = 1;
    to.validate = constant_score;
    if (mml_trainer_create(&t, ctx, &to, tr, va) < 0)
        goto fail;
    out->n_experts = mml_model_n_experts(mml_trainer_model(t));
    static const int32_t moe_stages[3] = {MML_STAGE_BACKBONE, MML_STAGE_EXPERTS, MML_STAGE_GATE};
    static const int moe_rows[3] = {ST_SHARED, ST_EXPERTS, ST_GATE};
    int n = j->variant == MML_VARIANT_MOE ? 3 : 1;
    for (int i = 0; i < n; i++) {
        int32_t stage = j->variant == MML_VARIANT_MOE ? moe_stages[i] : MML_STAGE_JOINT;
        int row = j->variant == MML_VARIANT_MOE ? moe_rows[i] : ST_MLORA;
        double s0 = bench_now();
        if (mml_trainer_run_stage(t, stage) < 0)
            goto fail;
        fill_stage(t, stage, &out->st[row], bench_now() - s0);
        out->st[row].rows = out->train_rows;
    }
    out->ok = 1;
    goto done;
fail:
    snprintf(out->error, sizeof out->error, "%s", mml_ctx_last_error(ctx));
done:
    mml_trainer_destroy(t);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(va);
    mml_dataset_destroy(te);
    mml_ctx_destroy(ctx);
}

/* One (configuration, backbone, threads): MLoRA and MoE-MLoRA, each in its
 * own process. */
static int run_stages(const opts *o, int cfg, const char *backbone, uint32_t threads,
                      stage_result st[N_STAGES], shapes *s)
{
    run_result r[2];
    int32_t variants[2] = {MML_VARIANT_MOE, MML_VARIANT_MLORA};
    memset(st, 0, sizeof(stage_result) * N_STAGES);
    for (int v = 0; v < 2; v++) {
        run_job j = {o, cfg, backbone, variants[v], threads};
        if (in_child(run_child, &j, &r[v], sizeof r[v]) < 0)
            return -1;
        if (!r[v].ok) {
            fprintf(stderr, "mml-bench train: %s %s: %s\n", configs[cfg].name, backbone, r[v].error);
            return -1;
        }
        for (int k = 0; k < N_STAGES; k++)
            if (r[v].st[k].ran)
                st[k] = r[v].st[k];
    }
    make_shapes(s, &configs[cfg], backbone, r[0].n_experts);
    return 0;
}

/* ------------------------------------------------------------ experts efficiency */

#define N_EXPERT_COUNTS 4
static const int32_t expert_counts[N_EXPERT_COUNTS] = {1, 2, 4, 8};

typedef struct eff_job {
    const opts *o;
    int cfg;
    const char *backbone;
} eff_job;

typedef struct eff_result {
    int32_t ok;
    char error[512];
    double base_ms[N_EXPERT_COUNTS], gated_ms[N_EXPERT_COUNTS];
} eff_result;

static int model_step(mml_model *m, const mml_batch_view *v, int32_t mode, float *logits,
                      const float *dlogits, double *seconds)
{
    double t0 = bench_now();
    int rc = mml_model_forward(m, v, mode, 0, 1, logits);
    if (rc == MML_OK)
        rc = mml_model_backward(m, dlogits);
    *seconds = bench_now() - t0;
    return rc;
}

static void eff_child(const void *arg, void *outp)
{
    const eff_job *j = arg;
    eff_result *out = outp;
    const config *c = &configs[j->cfg];
    mml_ctx *ctx = make_ctx(j->o->threads, 1);
    if (!ctx) {
        snprintf(out->error, sizeof out->error, "no context");
        return;
    }
    int32_t *ids = malloc(sizeof(int32_t) * BATCH * 3), *dom = malloc(sizeof(int32_t) * BATCH);
    float *logits = malloc(sizeof(float) * BATCH), *dlogits = malloc(sizeof(float) * BATCH);
    double *tb = malloc(sizeof(double) * (size_t)j->o->steps);
    double *tg = malloc(sizeof(double) * (size_t)j->o->steps);
    mml_model *m = NULL;
    if (!ids || !dom || !logits || !dlogits || !tb || !tg) {
        snprintf(out->error, sizeof out->error, "out of memory");
        goto done;
    }
    for (int i = 0; i < BATCH; i++) {
        dom[i] = (int32_t)(next_rand() % (uint32_t)c->n_domains);
        ids[3 * i] = (int32_t)(next_rand() % (uint32_t)c->sizes[0]);
        ids[3 * i + 1] = (int32_t)(next_rand() % (uint32_t)c->sizes[1]);
        ids[3 * i + 2] = dom[i];
        dlogits[i] = 0.5f * rand_sym() / BATCH;
    }
    mml_batch_view v;
    mml_batch_view_init(&v, BATCH, 3, ids, 0, NULL, dom, NULL);
    for (int e = 0; e < N_EXPERT_COUNTS; e++) {
        mml_model_options mo;
        mml_model_options_init(&mo);
        mo.backbone = j->backbone;
        mo.n_fields = 3;
        mo.field_sizes = c->sizes;
        mo.embed_dim = c->embed_dim;
        mo.n_domains = c->n_domains;
        mo.n_experts = expert_counts[e];
        mo.gate = 1;
        mo.alpha = ALPHA;
        mo.n_hidden = N_LAYERS;
        mo.hidden = hidden;
        mo.dropout = 0.5f;
        if (mml_model_create(&m, ctx, &mo) < 0)
            goto fail;
        /* Trained-looking experts (B = 0 at init); the speed does not depend on the values. */
        for (int64_t i = 0; i < mml_model_n_params(m); i++) {
            mml_param *p = mml_model_param(m, i);
            if (p->group == MML_GROUP_EXPERT)
                for (int64_t q = 0; q < p->rows * p->cols; q++)
                    p->value[q] += 0.05f * rand_sym();
        }
        double dt;
        for (int w = 0; w < 5; w++)
            if (model_step(m, &v, MML_MIX_NONE, logits, dlogits, &dt) < 0 ||
                model_step(m, &v, MML_MIX_GATED, logits, dlogits, &dt) < 0)
                goto fail;
        for (int s = 0; s < j->o->steps; s++)
            if (model_step(m, &v, MML_MIX_NONE, logits, dlogits, &tb[s]) < 0 ||
                model_step(m, &v, MML_MIX_GATED, logits, dlogits, &tg[s]) < 0)
                goto fail;
        out->base_ms[e] = 1e3 * bench_median(tb, j->o->steps);
        out->gated_ms[e] = 1e3 * bench_median(tg, j->o->steps);
        mml_model_destroy(m);
        m = NULL;
    }
    out->ok = 1;
    goto done;
fail:
    snprintf(out->error, sizeof out->error, "%s", mml_ctx_last_error(ctx));
done:
    mml_model_destroy(m);
    free(ids);
    free(dom);
    free(logits);
    free(dlogits);
    free(tb);
    free(tg);
    mml_ctx_destroy(ctx);
}

/* ------------------------------------------------------------ tower vs sgemm */

typedef struct tower_job {
    const opts *o;
    int cfg;
    uint32_t threads;
} tower_job;

typedef struct tower_result {
    int32_t ok;
    char error[512];
    double tower_ms, sgemm_ms;
} tower_result;

/* The nine products of a forward and backward pass, as the tower does
 * them (row-major): forward Z_l = X_l W_l; backward, from the top layer
 * down, dW_l += X_l^T dZ_l and dX_l = dZ_l W_l^T. */
typedef struct bare {
    float *x[N_LAYERS], *w[N_LAYERS], *z[N_LAYERS], *dz[N_LAYERS], *dw[N_LAYERS], *dx[N_LAYERS];
} bare;

static void bare_pass(bare *b, const int32_t *dims, rntm_t *rntm)
{
    float one = 1.0f, zero = 0.0f;
    dim_t n = BATCH;
    for (int l = 0; l < N_LAYERS; l++) {
        dim_t a = dims[l], c = dims[l + 1];
        bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, n, c, a, &one, b->x[l], a, 1, b->w[l],
                     c, 1, &zero, b->z[l], c, 1, NULL, rntm);
    }
    for (int l = N_LAYERS - 1; l >= 0; l--) {
        dim_t a = dims[l], c = dims[l + 1];
        bli_sgemm_ex(BLIS_TRANSPOSE, BLIS_NO_TRANSPOSE, a, c, n, &one, b->x[l], a, 1, b->dz[l], c,
                     1, &one, b->dw[l], c, 1, NULL, rntm);
        bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, n, a, c, &one, b->dz[l], c, 1, b->w[l], c,
                     1, &zero, b->dx[l], a, 1, NULL, rntm);
    }
}

static float *rand_matrix(int64_t rows, int64_t cols)
{
    float *p = malloc(sizeof(float) * (size_t)(rows * cols));
    if (p)
        for (int64_t i = 0; i < rows * cols; i++)
            p[i] = rand_sym();
    return p;
}

static void tower_child(const void *arg, void *outp)
{
    const tower_job *j = arg;
    tower_result *out = outp;
    int32_t dims[N_LAYERS + 1] = {3 * configs[j->cfg].embed_dim};
    for (int l = 0; l < N_LAYERS; l++)
        dims[l + 1] = hidden[l];
    mml_ctx *ctx = make_ctx(j->threads, 1);
    if (!ctx) {
        snprintf(out->error, sizeof out->error, "no context");
        return;
    }
    mml_tower *t = NULL;
    mml_tower_options to;
    mml_tower_options_init(&to);
    to.d_in = dims[0];
    to.n_layers = N_LAYERS;
    to.hidden = hidden;
    to.dropout = 0.0f;
    bare b;
    memset(&b, 0, sizeof b);
    int ok = 1;
    for (int l = 0; l < N_LAYERS; l++) {
        b.x[l] = rand_matrix(BATCH, dims[l]);
        b.w[l] = rand_matrix(dims[l], dims[l + 1]);
        b.z[l] = rand_matrix(BATCH, dims[l + 1]);
        b.dz[l] = rand_matrix(BATCH, dims[l + 1]);
        b.dw[l] = rand_matrix(dims[l], dims[l + 1]);
        b.dx[l] = rand_matrix(BATCH, dims[l]);
        ok = ok && b.x[l] && b.w[l] && b.z[l] && b.dz[l] && b.dw[l] && b.dx[l];
    }
    float *x = rand_matrix(BATCH, dims[0]), *dout = rand_matrix(BATCH, dims[N_LAYERS]);
    float *dx = rand_matrix(BATCH, dims[0]);
    double *tt = malloc(sizeof(double) * (size_t)j->o->steps);
    double *ts = malloc(sizeof(double) * (size_t)j->o->steps);
    if (!ok || !x || !dout || !dx || !tt || !ts) {
        snprintf(out->error, sizeof out->error, "out of memory");
        goto done;
    }
    if (mml_tower_create(&t, ctx, &to) < 0)
        goto fail;
    rntm_t rntm = BLIS_RNTM_INITIALIZER;
    bli_rntm_set_num_threads((dim_t)j->threads, &rntm);
    for (int s = -5; s < j->o->steps; s++) {
        const float *y;
        double t0 = bench_now();
        if (mml_tower_forward(t, x, BATCH, NULL, NULL, 1, &y) < 0 ||
            mml_tower_backward(t, dout, dx, NULL, NULL) < 0)
            goto fail;
        double t1 = bench_now();
        bare_pass(&b, dims, &rntm);
        double t2 = bench_now();
        if (s >= 0) {
            tt[s] = t1 - t0;
            ts[s] = t2 - t1;
        }
    }
    out->tower_ms = 1e3 * bench_median(tt, j->o->steps);
    out->sgemm_ms = 1e3 * bench_median(ts, j->o->steps);
    out->ok = 1;
    goto done;
fail:
    snprintf(out->error, sizeof out->error, "%s", mml_ctx_last_error(ctx));
done:
    mml_tower_destroy(t);
    for (int l = 0; l < N_LAYERS; l++) {
        free(b.x[l]);
        free(b.w[l]);
        free(b.z[l]);
        free(b.dz[l]);
        free(b.dw[l]);
        free(b.dx[l]);
    }
    free(x);
    free(dout);
    free(dx);
    free(tt);
    free(ts);
    mml_ctx_destroy(ctx);
}

/* ------------------------------------------------------------ splits */

static int write_splits(const opts *o)
{
    if (mkdir(o->write_splits, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "mml-bench train: %s: %s\n", o->write_splits, strerror(errno));
        return 1;
    }
    mml_ctx *ctx = make_ctx(1, 1);
    if (!ctx)
        return 1;
    int status = 0;
    for (int cfg = 0; cfg < N_CONFIGS && !status; cfg++) {
        if (!o->config[cfg])
            continue;
        char dir[4096], path[4200];
        snprintf(dir, sizeof dir, "%s/%s", o->write_splits, configs[cfg].name);
        if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "mml-bench train: %s: %s\n", dir, strerror(errno));
            status = 1;
            break;
        }
        mml_dataset *sets[3] = {NULL, NULL, NULL};
        static const char *const names[3] = {"train", "val", "test"};
        if (load_data(ctx, o, cfg, &sets[0], &sets[1], &sets[2]) < 0) {
            fprintf(stderr, "mml-bench train: %s: %s\n", configs[cfg].name, mml_ctx_last_error(ctx));
            status = 1;
        }
        for (int i = 0; i < 3 && !status; i++) {
            snprintf(path, sizeof path, "%s/%s.csv", dir, names[i]);
            if (mml_dataset_write_csv(sets[i], ctx, path) < 0) {
                fprintf(stderr, "mml-bench train: %s\n", mml_ctx_last_error(ctx));
                status = 1;
            }
        }
        if (!status)
            printf("wrote %s/{train,val,test}.csv: %lld / %lld / %lld rows, %d domains, "
                   "embedding %d\n",
                   dir, (long long)mml_dataset_n_rows(sets[0]), (long long)mml_dataset_n_rows(sets[1]),
                   (long long)mml_dataset_n_rows(sets[2]), (int)mml_dataset_n_domains(sets[0]),
                   (int)configs[cfg].embed_dim);
        for (int i = 0; i < 3; i++)
            mml_dataset_destroy(sets[i]);
    }
    mml_ctx_destroy(ctx);
    return status;
}

/* ------------------------------------------------------------ --flops */

static int print_flops(const opts *o)
{
    printf("FLOPs per row of a training step (see the formulas in bench/bench_train.c)\n");
    printf("%-7s %-8s %-8s %7s %10s %10s %10s\n", "config", "backbone", "stage", "experts",
           "forward", "backward", "total");
    for (int cfg = 0; cfg < N_CONFIGS; cfg++)
        for (int bb = 0; bb < o->n_backbones && o->config[cfg]; bb++)
            for (int k = 0; k < N_STAGES; k++) {
                shapes s;
                double f, b;
                /* One expert per domain, as the stages section trains them. */
                make_shapes(&s, &configs[cfg], o->backbone[bb], configs[cfg].n_domains);
                step_flops(&s, &stage_kind[k], &f, &b);
                printf("%-7s %-8s %-8s %7d %10.0f %10.0f %10.0f\n", configs[cfg].name,
                       o->backbone[bb], stage_names[k], (int)s.E, f, b, f + b);
            }
    return 0;
}

/* ------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mml-bench train [--config ml100k|large|all] (all) [--backbone mlp,deepfm]\n"
            "         [--threads N] (2) [--epochs N] (2 a stage) [--steps N] (40: timed steps of\n"
            "         the experts and tower sections) [--sections stages,experts,tower,threads]\n"
            "         (all) [--data DIR] (the folder holding ml-100k/; $MML_DATA_DIR, else\n"
            "         ../shared/data) [--json FILE]\n"
            "       mml-bench train --write-splits DIR [--config ...] [--data DIR]\n"
            "         (DIR/<config>/{train,val,test}.csv for bench/torch_reference.py)\n"
            "       mml-bench train --flops [--config ...] [--backbone ...]\n"
            "         (the FLOPs per row of each stage, forward and backward; runs nothing)\n");
}

static int parse(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->config[CFG_ML100K] = o->config[CFG_LARGE] = 1;
    strcpy(o->backbone[0], "mlp");
    strcpy(o->backbone[1], "deepfm");
    o->n_backbones = 2;
    o->threads = 2;
    o->epochs = 2;
    o->steps = 40;
    o->sections = SEC_STAGES | SEC_EXPERTS | SEC_TOWER | SEC_THREADS;
    o->data_dir = getenv("MML_DATA_DIR") ? getenv("MML_DATA_DIR") : "../shared/data";
    for (int a = 1; a < argc; a++) {
        const char *k = argv[a];
        if (!strcmp(k, "--help") || !strcmp(k, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(k, "--flops")) {
            o->print_flops = 1;
            continue;
        }
        if (a + 1 >= argc) {
            usage(stderr);
            return -1;
        }
        const char *v = argv[++a];
        char buf[256];
        if (strlen(v) >= sizeof buf) {
            fprintf(stderr, "mml-bench train: %s: value too long\n", k);
            return -1;
        }
        if (!strcmp(k, "--config")) {
            o->config[CFG_ML100K] = !strcmp(v, "ml100k") || !strcmp(v, "all");
            o->config[CFG_LARGE] = !strcmp(v, "large") || !strcmp(v, "all");
            if (!o->config[CFG_ML100K] && !o->config[CFG_LARGE])
                goto bad;
        } else if (!strcmp(k, "--backbone")) {
            strcpy(buf, v);
            o->n_backbones = 0;
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o->n_backbones == MAX_BACKBONES || strlen(t) >= sizeof o->backbone[0] ||
                    !mml_backbone_known(NULL, t))
                    goto bad;
                strcpy(o->backbone[o->n_backbones++], t);
            }
            if (!o->n_backbones)
                goto bad;
        } else if (!strcmp(k, "--sections")) {
            strcpy(buf, v);
            o->sections = 0;
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "stages"))
                    o->sections |= SEC_STAGES;
                else if (!strcmp(t, "experts"))
                    o->sections |= SEC_EXPERTS;
                else if (!strcmp(t, "tower"))
                    o->sections |= SEC_TOWER;
                else if (!strcmp(t, "threads"))
                    o->sections |= SEC_THREADS;
                else
                    goto bad;
            }
        } else if (!strcmp(k, "--threads")) {
            long n = strtol(v, NULL, 10);
            if (n < 1 || n > 1024)
                goto bad;
            o->threads = (uint32_t)n;
        } else if (!strcmp(k, "--epochs")) {
            long n = strtol(v, NULL, 10);
            if (n < 1 || n > 1000)
                goto bad;
            o->epochs = (int32_t)n;
        } else if (!strcmp(k, "--steps")) {
            long n = strtol(v, NULL, 10);
            if (n < 1 || n > 100000)
                goto bad;
            o->steps = (int)n;
        } else if (!strcmp(k, "--data")) {
            o->data_dir = v;
        } else if (!strcmp(k, "--json")) {
            o->json = v;
        } else if (!strcmp(k, "--write-splits")) {
            o->write_splits = v;
        } else {
            fprintf(stderr, "mml-bench train: unknown option %s\n", k);
            usage(stderr);
            return -1;
        }
        continue;
    bad:
        fprintf(stderr, "mml-bench train: invalid value '%s' for %s\n", v, k);
        return -1;
    }
    return 0;
}

/* What the parent keeps for the summary and the JSON. */
typedef struct stage_row {
    int cfg, bb;
    uint32_t threads;
    int stage;
    stage_result r;
    double flops;
} stage_row;

typedef struct eff_row {
    int cfg, bb;
    int32_t experts;
    double base_ms, gated_ms, flops_base, flops_gated;
} eff_row;

typedef struct tower_row {
    int cfg;
    uint32_t threads;
    double tower_ms, sgemm_ms, flops;
} tower_row;

typedef struct results {
    stage_row st[MAX_ROWS];
    int n_st;
    eff_row eff[MAX_ROWS];
    int n_eff;
    tower_row tw[MAX_ROWS];
    int n_tw;
} results;

static const stage_row *find_stage(const results *R, int cfg, int bb, uint32_t threads, int stage)
{
    for (int i = 0; i < R->n_st; i++)
        if (R->st[i].cfg == cfg && R->st[i].bb == bb && R->st[i].threads == threads &&
            R->st[i].stage == stage)
            return &R->st[i];
    return NULL;
}

static int measure_stages(const opts *o, results *R, int cfg, int bb, uint32_t threads)
{
    stage_result st[N_STAGES];
    shapes s;
    if (run_stages(o, cfg, o->backbone[bb], threads, st, &s) < 0)
        return -1;
    for (int k = 0; k < N_STAGES && R->n_st < MAX_ROWS; k++) {
        stage_row *row = &R->st[R->n_st++];
        row->cfg = cfg, row->bb = bb, row->threads = threads, row->stage = k, row->r = st[k];
        row->flops = step_flops(&s, &stage_kind[k], NULL, NULL);
        printf("%-7s %-8s %-8s %7u %7d %12.0f %11.0f %9.2f %10.0f\n", configs[cfg].name,
               o->backbone[bb], stage_names[k], threads, st[k].epochs, st[k].rows_per_s,
               row->flops, st[k].rows_per_s * row->flops / 1e9, st[k].peak_rss_mb);
        fflush(stdout);
    }
    return 0;
}

static void print_stage_header(void)
{
    printf("%-7s %-8s %-8s %7s %7s %12s %11s %9s %10s\n", "config", "backbone", "stage", "threads",
           "epochs", "rows/s", "FLOP/row", "GFLOP/s", "RSS MiB");
}

static void write_json(const opts *o, const results *R, const char *arch)
{
    FILE *f = fopen(o->json, "w");
    if (!f) {
        fprintf(stderr, "mml-bench train: cannot write %s\n", o->json);
        return;
    }
    fprintf(f, "{\"side\": \"c\", \"bench\": \"train\", \"blis_arch\": \"%s\", \"threads\": %u, "
               "\"epochs\": %d, \"batch\": %d,\n \"stages\": [",
            arch, o->threads, (int)o->epochs, BATCH);
    for (int i = 0; i < R->n_st; i++) {
        const stage_row *r = &R->st[i];
        fprintf(f, "%s\n  {\"config\": \"%s\", \"backbone\": \"%s\", \"stage\": \"%s\", "
                   "\"threads\": %u, \"epochs\": %d, \"train_rows\": %lld, \"rows_per_s\": %.1f, "
                   "\"flops_per_row\": %.1f, \"gflops\": %.3f, \"seconds\": %.3f, "
                   "\"peak_rss_mb\": %.1f}",
                i ? "," : "", configs[r->cfg].name, o->backbone[r->bb], stage_names[r->stage],
                r->threads, (int)r->r.epochs, (long long)r->r.rows, r->r.rows_per_s, r->flops,
                r->r.rows_per_s * r->flops / 1e9, r->r.seconds, r->r.peak_rss_mb);
    }
    fprintf(f, "],\n \"experts_efficiency\": [");
    for (int i = 0; i < R->n_eff; i++) {
        const eff_row *r = &R->eff[i];
        fprintf(f, "%s\n  {\"config\": \"%s\", \"backbone\": \"%s\", \"experts\": %d, "
                   "\"threads\": %u, \"base_step_ms\": %.4f, \"gated_step_ms\": %.4f, "
                   "\"time_ratio\": %.4f, \"flops_base\": %.1f, \"flops_gated\": %.1f, "
                   "\"flops_ratio\": %.4f}",
                i ? "," : "", configs[r->cfg].name, o->backbone[r->bb], (int)r->experts, o->threads,
                r->base_ms, r->gated_ms, r->gated_ms / r->base_ms, r->flops_base, r->flops_gated,
                r->flops_gated / r->flops_base);
    }
    fprintf(f, "],\n \"tower_vs_sgemm\": [");
    for (int i = 0; i < R->n_tw; i++) {
        const tower_row *r = &R->tw[i];
        fprintf(f, "%s\n  {\"config\": \"%s\", \"d_in\": %d, \"threads\": %u, \"batch\": %d, "
                   "\"tower_ms\": %.4f, \"sgemm_ms\": %.4f, \"tower_gflops\": %.3f, "
                   "\"sgemm_gflops\": %.3f, \"ratio\": %.4f}",
                i ? "," : "", configs[r->cfg].name, 3 * (int)configs[r->cfg].embed_dim, r->threads,
                BATCH, r->tower_ms, r->sgemm_ms, r->flops / r->tower_ms / 1e6,
                r->flops / r->sgemm_ms / 1e6, r->sgemm_ms / r->tower_ms);
    }
    fprintf(f, "],\n \"threads_scaling\": [");
    int first = 1;
    for (int bb = 0; bb < o->n_backbones && (o->sections & SEC_THREADS); bb++)
        for (int k = 0; k < N_STAGES; k++) {
            const stage_row *a = find_stage(R, CFG_LARGE, bb, 1, k), *b = find_stage(R, CFG_LARGE, bb, 2, k);
            if (!a || !b)
                continue;
            fprintf(f, "%s\n  {\"config\": \"large\", \"backbone\": \"%s\", \"stage\": \"%s\", "
                       "\"rows_per_s_1\": %.1f, \"rows_per_s_2\": %.1f, \"speedup\": %.4f}",
                    first ? "" : ",", o->backbone[bb], stage_names[k], a->r.rows_per_s,
                    b->r.rows_per_s, b->r.rows_per_s / a->r.rows_per_s);
            first = 0;
        }
    fprintf(f, "]}\n");
    if (fclose(f) != 0)
        fprintf(stderr, "mml-bench train: cannot write %s\n", o->json);
}

int bench_train_main(int argc, char **argv)
{
    opts o;
    if (parse(argc, argv, &o) < 0)
        return 2;
    if (o.write_splits)
        return write_splits(&o);
    if (o.print_flops)
        return print_flops(&o);
    /* The kernels' name. A context initialises BLIS but runs no product: the
     * parent never enters an OpenMP region, so forking stays safe. */
    char arch[64] = "?";
    {
        mml_ctx *ctx = make_ctx(1, 1);
        if (!ctx) {
            fprintf(stderr, "mml-bench train: no context (BLIS_ARCH_TYPE?)\n");
            return 1;
        }
        snprintf(arch, sizeof arch, "%s", mml_ctx_blis_arch(ctx));
        mml_ctx_destroy(ctx);
    }
    results *R = calloc(1, sizeof *R);
    if (!R)
        return 1;
    int status = 0;
    printf("mml-bench train: BLIS kernels %s, %u threads, %d epochs a stage, batch %d\n", arch,
           o.threads, (int)o.epochs, BATCH);
    for (int cfg = 0; cfg < N_CONFIGS; cfg++)
        if (o.config[cfg])
            printf("  %-7s %s, embedding %d\n", configs[cfg].name, configs[cfg].what,
                   (int)configs[cfg].embed_dim);

    if (o.sections & SEC_STAGES) {
        printf("\n== stages: rows/s median over epochs; FLOP/row forward + backward; RSS: peak of "
               "the run so far\n");
        print_stage_header();
        for (int cfg = 0; cfg < N_CONFIGS && !status; cfg++)
            for (int bb = 0; bb < o.n_backbones && o.config[cfg] && !status; bb++)
                status = measure_stages(&o, R, cfg, bb, o.threads) < 0;
    }

    if ((o.sections & SEC_THREADS) && o.config[CFG_LARGE] && !status) {
        printf("\n== threads: the large configuration with 1 and 2 threads (target: 2 threads "
               ">= 1.7x)\n");
        print_stage_header();
        for (int bb = 0; bb < o.n_backbones && !status; bb++)
            for (uint32_t t = 1; t <= 2 && !status; t++)
                if (!find_stage(R, CFG_LARGE, bb, t, ST_SHARED))
                    status = measure_stages(&o, R, CFG_LARGE, bb, t) < 0;
        printf("%-8s %-8s %12s %12s %8s\n", "backbone", "stage", "1 thread", "2 threads", "speed-up");
        for (int bb = 0; bb < o.n_backbones && !status; bb++)
            for (int k = 0; k < N_STAGES; k++) {
                const stage_row *a = find_stage(R, CFG_LARGE, bb, 1, k);
                const stage_row *b = find_stage(R, CFG_LARGE, bb, 2, k);
                if (a && b)
                    printf("%-8s %-8s %12.0f %12.0f %7.2fx\n", o.backbone[bb], stage_names[k],
                           a->r.rows_per_s, b->r.rows_per_s, b->r.rows_per_s / a->r.rows_per_s);
            }
    }

    if ((o.sections & SEC_EXPERTS) && !status) {
        printf("\n== experts efficiency: one step (forward + backward, all trainable), batch %d, "
               "%u threads, median of %d\n   (target: time ratio <= FLOPs ratio)\n",
               BATCH, o.threads, o.steps);
        printf("%-7s %-8s %7s %6s %12s %12s %10s %11s\n", "config", "backbone", "experts", "ranks",
               "shared ms", "gated ms", "time x", "FLOPs x");
        for (int cfg = 0; cfg < N_CONFIGS && !status; cfg++)
            for (int bb = 0; bb < o.n_backbones && o.config[cfg] && !status; bb++) {
                eff_job j = {&o, cfg, o.backbone[bb]};
                eff_result r;
                if (in_child(eff_child, &j, &r, sizeof r) < 0 || !r.ok) {
                    fprintf(stderr, "mml-bench train: experts: %s\n", r.error);
                    status = 1;
                    break;
                }
                for (int e = 0; e < N_EXPERT_COUNTS && R->n_eff < MAX_ROWS; e++) {
                    shapes s;
                    make_shapes(&s, &configs[cfg], o.backbone[bb], expert_counts[e]);
                    static const step_kind base = {0, 1, 1, 0, 0}, gated = {2, 1, 1, 1, 1};
                    eff_row *row = &R->eff[R->n_eff++];
                    row->cfg = cfg, row->bb = bb, row->experts = expert_counts[e];
                    row->base_ms = r.base_ms[e], row->gated_ms = r.gated_ms[e];
                    row->flops_base = step_flops(&s, &base, NULL, NULL);
                    row->flops_gated = step_flops(&s, &gated, NULL, NULL);
                    char ranks[32];
                    snprintf(ranks, sizeof ranks, "%d-%d-%d", (int)s.ranks[0], (int)s.ranks[1],
                             (int)s.ranks[2]);
                    printf("%-7s %-8s %7d %6s %12.3f %12.3f %9.2fx %10.2fx\n", configs[cfg].name,
                           o.backbone[bb], (int)expert_counts[e], ranks, row->base_ms,
                           row->gated_ms, row->gated_ms / row->base_ms,
                           row->flops_gated / row->flops_base);
                }
                fflush(stdout);
            }
    }

    if ((o.sections & SEC_TOWER) && !status) {
        printf("\n== tower products against bare bli_sgemm_ex on the same shapes: forward + "
               "backward, batch %d, median of %d\n   (target: tower >= 50%% of sgemm)\n",
               BATCH, o.steps);
        printf("%-7s %10s %7s %10s %10s %12s %12s %7s\n", "config", "widths", "threads", "tower ms",
               "sgemm ms", "tower GF/s", "sgemm GF/s", "ratio");
        for (int cfg = 0; cfg < N_CONFIGS && !status; cfg++)
            for (uint32_t t = 1; t <= 2 && o.config[cfg] && !status; t++) {
                tower_job j = {&o, cfg, t};
                tower_result r;
                if (in_child(tower_child, &j, &r, sizeof r) < 0 || !r.ok) {
                    fprintf(stderr, "mml-bench train: tower: %s\n", r.error);
                    status = 1;
                    break;
                }
                double d_in = 3.0 * configs[cfg].embed_dim;
                double flops = 6.0 * BATCH * (d_in * 256 + 256 * 128 + 128 * 64);
                tower_row *row = &R->tw[R->n_tw++];
                row->cfg = cfg, row->threads = t, row->tower_ms = r.tower_ms,
                row->sgemm_ms = r.sgemm_ms, row->flops = flops;
                char widths[32];
                snprintf(widths, sizeof widths, "%d-256-128-64", (int)d_in);
                printf("%-7s %10s %7u %10.3f %10.3f %12.2f %12.2f %6.0f%%\n", configs[cfg].name,
                       widths, t, r.tower_ms, r.sgemm_ms, flops / r.tower_ms / 1e6,
                       flops / r.sgemm_ms / 1e6, 100.0 * r.sgemm_ms / r.tower_ms);
                fflush(stdout);
            }
    }

    if (o.json && !status)
        write_json(&o, R, arch);
    free(R);
    return status;
}
