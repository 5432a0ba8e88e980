/* MoE-MLoRA's staged training composed from the library's pieces, step by
 * step as METHOD.md section 4 describes it, on the built-in synthetic data:
 *   1. backbone: embeddings and shared network on all domains, no experts;
 *   2. experts: each expert alone on its own domain's rows;
 *   3. gate: the gate alone, over the full gated mixture.
 * Each stage has its own Adam, early stopping and restore-best. At the end it
 * trains the same model with mml_trainer and exits 1 unless the two agree
 * bit for bit.   Usage: staged_pipeline [THREADS]   */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moemlora/moemlora.h>

enum { BATCH = 1024, PATIENCE = 3, MAX_EPOCHS = 50 };

static int fail(mml_ctx *ctx, int rc, const char *what)
{
    fprintf(stderr, "staged_pipeline: %s: %s (%s)\n", what, mml_status_str(rc),
            ctx ? mml_ctx_last_error(ctx) : "");
    return 1;
}

/* Test or validation metrics of rows of ds (only domain's when >= 0). */
static int evaluate(mml_ctx *ctx, mml_model *m, const mml_dataset *ds, int32_t mode,
                    int32_t expert, int32_t domain, mml_metrics *metrics, float *logits)
{
    mml_batcher_options bo;
    mml_batcher_options_init(&bo);
    bo.batch_size = BATCH, bo.shuffle = 0, bo.domain = domain;
    mml_batcher *bt = NULL;
    mml_batch_view b;
    int rc = mml_batcher_create(&bt, ctx, ds, &bo);
    mml_metrics_reset(metrics);
    if (rc >= 0)
        rc = mml_batcher_start_epoch(bt, 0);
    while (rc >= 0 && (rc = mml_batcher_next(bt, &b)) == 1)
        if ((rc = mml_model_forward(m, &b, mode, expert, 0, logits)) >= 0)
            rc = mml_metrics_add(metrics, logits, b.labels, b.domain, b.n_rows);
    mml_batcher_destroy(bt);
    return rc;
}

/* Copies the n parameters' values into buf, or back when restore is set. */
static void copy_values(mml_param **p, int64_t n, float *buf, int restore)
{
    for (int64_t i = 0; i < n; buf += mml_param_size(p[i]), i++)
        memcpy(restore ? p[i]->value : buf, restore ? buf : p[i]->value,
               sizeof(float) * (size_t)mml_param_size(p[i]));
}

/* One stage (in stage 2, one expert on its domain's rows), early-stopping on
 * the validation AUC (of that domain, or the mean over domains). */
static int run_stage(mml_ctx *ctx, mml_model *m, const mml_dataset *train, const mml_dataset *val,
                     int32_t stage, int32_t expert, mml_metrics *metrics)
{
    int32_t mode = stage == MML_STAGE_BACKBONE  ? MML_MIX_NONE
                   : stage == MML_STAGE_EXPERTS ? MML_MIX_SINGLE : MML_MIX_GATED;
    int64_t np = mml_model_n_params(m), nt = 0, nv = 0;
    mml_param **params = malloc(sizeof *params * (size_t)np);
    float *logits = malloc(sizeof(float) * BATCH), *dlogits = malloc(sizeof(float) * BATCH);
    int32_t domain = expert >= 0 ? expert % mml_model_n_domains(m) : -1;
    for (int64_t i = 0; params && i < np; i++)
        params[i] = mml_model_param(m, i);
    /* Freeze the groups the stage does not train. */
    int backbone = stage == MML_STAGE_BACKBONE;
    mml_params_freeze_group(params, np, MML_GROUP_EMBEDDING, -1, !backbone);
    mml_params_freeze_group(params, np, MML_GROUP_BACKBONE, -1, !backbone);
    mml_params_freeze_group(params, np, MML_GROUP_EXPERT, -1, 1);
    mml_params_freeze_group(params, np, MML_GROUP_EXPERT, expert, stage != MML_STAGE_EXPERTS);
    mml_params_freeze_group(params, np, MML_GROUP_GATE, -1, stage != MML_STAGE_GATE);
    for (int64_t i = 0; params && i < np; i++) /* the trainable ones first */
        if (!params[i]->frozen)
            nv += mml_param_size(params[i]), params[nt++] = params[i];
    float *best = malloc(sizeof(float) * (size_t)nv);
    mml_optimizer *opt = NULL; /* fresh Adam (lr 1e-3) over exactly these */
    mml_batcher *bt = NULL;
    mml_batcher_options bo;
    mml_batcher_options_init(&bo);
    bo.batch_size = BATCH, bo.domain = domain;
    bo.seed = mml_trainer_shuffle_seed(mml_ctx_seed(ctx), stage, expert);
    int rc = !params || !logits || !dlogits || !best ? MML_ENOMEM : MML_OK;
    if (rc >= 0)
        rc = mml_optimizer_create(&opt, ctx, NULL, params, nt);
    if (rc >= 0)
        rc = mml_batcher_create(&bt, ctx, train, &bo);
    double best_score = -INFINITY;
    int32_t best_epoch = 0, bad = 0;
    for (int32_t epoch = 1; rc >= 0 && epoch <= MAX_EPOCHS && bad < PATIENCE; epoch++) {
        mml_batch_view b;
        mml_metrics_summary s;
        mml_domain_metrics dm;
        double loss;
        rc = mml_batcher_start_epoch(bt, (uint64_t)epoch);
        while (rc >= 0 && (rc = mml_batcher_next(bt, &b)) == 1) {
            mml_params_zero_grad(params, nt);
            if ((rc = mml_model_forward(m, &b, mode, expert, 1, logits)) >= 0 &&
                (rc = mml_bce_with_logits(ctx, logits, b.labels, b.weights, b.n_rows, &loss,
                                          dlogits)) >= 0 &&
                (rc = mml_model_backward(m, dlogits)) >= 0)
                rc = mml_optimizer_step(opt);
        }
        if (rc < 0 || (rc = evaluate(ctx, m, val, mode, expert, domain, metrics, logits)) < 0)
            break;
        if ((rc = mml_metrics_compute(metrics, &s)) < 0 ||
            (domain >= 0 && (rc = mml_metrics_domain(metrics, domain, &dm)) < 0))
            break;
        double score = domain >= 0 ? (dm.auc_defined ? dm.auc : 0.0) : s.mean_auc;
        if (score > best_score) /* keep a copy of the best epoch's weights */
            best_score = score, best_epoch = epoch, bad = 0, copy_values(params, nt, best, 0);
        else
            bad++;
    }
    if (rc >= 0 && best_epoch > 0)
        copy_values(params, nt, best, 1);
    for (int64_t i = 0; i < np; i++)
        mml_model_param(m, i)->frozen = 0;
    mml_batcher_destroy(bt);
    mml_optimizer_destroy(opt);
    free(params), free(logits), free(dlogits), free(best);
    return rc;
}

int main(int argc, char **argv)
{
    mml_ctx_options co;
    mml_ctx_options_init(&co);
    co.n_threads = argc > 1 ? (uint32_t)atoi(argv[1]) : 1;
    mml_ctx *ctx = NULL;
    mml_dataset *train = NULL, *val = NULL, *test = NULL;
    mml_model *model = NULL;
    mml_metrics *metrics = NULL;
    mml_trainer *trainer = NULL; /* for the comparison only */
    int rc = mml_ctx_create(&ctx, &co);
    if (rc < 0)
        return fail(NULL, rc, "context");
    if ((rc = mml_synthetic_generate(ctx, NULL, &train, &val, &test)) < 0)
        return fail(ctx, rc, "synthetic data");
    /* The pieces: embeddings (one table per field), the MLP backbone with its
     * tower, one LoRA expert per domain in the tower, and the gate. */
    int32_t F = mml_dataset_n_fields(train), D = mml_dataset_n_domains(train);
    int64_t sizes[64];
    for (int32_t f = 0; f < F; f++)
        sizes[f] = mml_dataset_field_size(train, f);
    mml_model_options mo;
    mml_model_options_init(&mo);
    mo.n_fields = F, mo.field_sizes = sizes, mo.n_domains = D;
    mo.n_experts = D, mo.gate = 1;
    if ((rc = mml_model_create(&model, ctx, &mo)) < 0 ||
        (rc = mml_metrics_create(&metrics, ctx, D)) < 0)
        return fail(ctx, rc, "model");
    for (int32_t stage = MML_STAGE_BACKBONE; stage <= MML_STAGE_GATE; stage++)
        for (int32_t e = 0; e < (stage == MML_STAGE_EXPERTS ? D : 1); e++)
            if ((rc = run_stage(ctx, model, train, val, stage,
                                stage == MML_STAGE_EXPERTS ? e : -1, metrics)) < 0)
                return fail(ctx, rc, "training");
    /* The per-domain table on the test rows. */
    static const int32_t modes[3] = {MML_MIX_NONE, MML_MIX_OWN, MML_MIX_GATED};
    static const char *const labels[3] = {"backbone", "own experts", "gated"};
    float logits[BATCH];
    printf("%-12s", "test AUC");
    for (int32_t d = 0; d < D; d++)
        printf(" %8s", mml_dataset_domain_name(test, d));
    printf(" %8s\n", "WAUC");
    for (int k = 0; k < 3; k++) {
        mml_metrics_summary s;
        mml_domain_metrics dm;
        if ((rc = evaluate(ctx, model, test, modes[k], -1, -1, metrics, logits)) < 0 ||
            (rc = mml_metrics_compute(metrics, &s)) < 0)
            return fail(ctx, rc, "test");
        printf("%-12s", labels[k]);
        for (int32_t d = 0; d < D && mml_metrics_domain(metrics, d, &dm) >= 0; d++)
            printf(" %8.4f", dm.auc_defined ? dm.auc : NAN);
        printf(" %8.4f\n", s.wauc);
    }
    /* The same model from the trainer: every weight must match bit for bit. */
    if ((rc = mml_trainer_create(&trainer, ctx, NULL, train, val)) < 0 ||
        (rc = mml_trainer_run(trainer)) < 0)
        return fail(ctx, rc, "trainer");
    mml_model *ref = mml_trainer_model(trainer);
    int64_t differ = mml_model_n_params(ref) != mml_model_n_params(model);
    for (int64_t i = 0; !differ && i < mml_model_n_params(model); i++) {
        const mml_param *p = mml_model_param(model, i), *q = mml_model_param(ref, i);
        differ = mml_param_size(p) != mml_param_size(q) ||
                 memcmp(p->value, q->value, sizeof(float) * (size_t)mml_param_size(p)) != 0;
        if (differ)
            fprintf(stderr, "staged_pipeline: parameter %s differs from mml_trainer's\n", p->name);
    }
    if (!differ)
        printf("identical to mml_trainer, bit for bit (%lld parameters)\n",
               (long long)mml_model_n_params(model));
    mml_trainer_destroy(trainer);
    mml_metrics_destroy(metrics);
    mml_model_destroy(model);
    mml_dataset_destroy(train), mml_dataset_destroy(val), mml_dataset_destroy(test);
    mml_ctx_destroy(ctx);
    return differ ? 1 : 0;
}
