/* mml-train --init FILE --add-domain: the saved MoE-MLoRA model gains the one
 * domain of the data that it lacks; its new experts and gate row train on
 * that domain's rows, the rest stays frozen. Prints (and writes as JSON) the
 * test AUC per domain and whether the old domains' predictions stayed bit
 * for bit. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mml-train-add.h"

/* Probabilities of ds's rows of domains < D, per domain, in batches. */
static int predict_old(mml_ctx *ctx, mml_model *m, const mml_dataset *ds, int32_t D,
                       int64_t batch, float *p)
{
    int64_t at = 0;
    for (int32_t d = 0; d < D; d++) {
        mml_batcher_options bo;
        mml_batcher_options_init(&bo);
        bo.shuffle = 0;
        bo.batch_size = batch;
        bo.domain = d;
        mml_batcher *bt = NULL;
        int rc = mml_batcher_create(&bt, ctx, ds, &bo);
        if (rc >= 0)
            rc = mml_batcher_start_epoch(bt, 0);
        mml_batch_view b;
        while (rc >= 0 && (rc = mml_batcher_next(bt, &b)) == 1) {
            if ((rc = mml_model_predict(m, &b, MML_MIX_GATED, 0, p + at)) < 0)
                break;
            at += b.n_rows;
        }
        mml_batcher_destroy(bt);
        if (rc < 0)
            return rc;
    }
    return MML_OK;
}

static int evaluate(mml_ctx *ctx, mml_model *m, const mml_dataset *ds, int64_t batch,
                    mml_metrics *met)
{
    float *logits = malloc(sizeof(float) * (size_t)batch);
    int rc = logits ? MML_OK : MML_ENOMEM;
    for (int64_t s = 0; rc >= 0 && s < mml_dataset_n_rows(ds); s += batch) {
        int64_t n = mml_dataset_n_rows(ds) - s < batch ? mml_dataset_n_rows(ds) - s : batch;
        mml_batch_view b;
        if ((rc = mml_dataset_view(ds, s, n, &b)) >= 0 &&
            (rc = mml_model_forward(m, &b, MML_MIX_GATED, 0, 0, logits)) >= 0)
            rc = mml_metrics_add(met, logits, b.labels, b.domain, n);
    }
    free(logits);
    (void)ctx;
    return rc;
}

int mml_train_add_domain(const add_domain_job *job, int *unchanged)
{
    mml_ctx *ctx = job->ctx;
    mml_model *old = NULL, *g = NULL;
    mml_dataset *tr = NULL, *va = NULL, *te = NULL;
    mml_metrics *met = NULL;
    float *before = NULL, *after = NULL;
    json_t *run = NULL;
    *unchanged = 0;
    int rc = mml_model_load(&old, ctx, job->init);
    if (rc >= 0)
        rc = mml_model_add_domain(&g, old, job->train, &job->opt);
    if (rc >= 0 && (rc = mml_dataset_for_model(&tr, job->train, g)) >= 0 &&
        (rc = mml_dataset_for_model(&va, job->val, g)) >= 0)
        rc = mml_dataset_for_model(&te, job->test, g);
    int32_t D = mml_model_n_domains(old), fresh = D;
    int64_t n_old = 0;
    for (int32_t d = 0; rc >= 0 && d < D; d++)
        n_old += mml_dataset_domain_rows(te, d);
    if (rc >= 0 && (!(before = malloc(sizeof(float) * (size_t)(n_old + 1))) ||
                    !(after = malloc(sizeof(float) * (size_t)(n_old + 1)))))
        rc = MML_ENOMEM;
    if (rc >= 0)
        rc = predict_old(ctx, old, te, D, job->batch, before);
    if (rc >= 0)
        rc = mml_model_train_domain(g, fresh, tr, va, &job->opt);
    if (rc >= 0)
        rc = predict_old(ctx, g, te, D, job->batch, after);
    if (rc >= 0) {
        *unchanged = memcmp(before, after, sizeof(float) * (size_t)n_old) == 0;
        rc = mml_metrics_create(&met, ctx, D + 1);
    }
    if (rc >= 0)
        rc = evaluate(ctx, g, te, job->batch, met);
    mml_metrics_summary s;
    if (rc >= 0)
        rc = mml_metrics_compute(met, &s);
    if (rc >= 0) {
        run = json_pack("{s:s,s:s,s:I,s:s,s:b,s:I,s:f}", "variant", "add-domain", "init",
                        job->init, "seed", (json_int_t)job->seed, "new_domain",
                        mml_dataset_domain_name(te, fresh), "old_domains_unchanged", *unchanged,
                        "old_rows_compared", (json_int_t)n_old, "logloss", s.logloss);
        json_object_set_new(run, "wauc", s.n_domains_with_auc ? json_real(s.wauc) : json_null());
        json_t *doms = json_array();
        if (!job->quiet)
            printf("\nadd domain '%s' to %s (seed %llu)\n  %-12s %8s %8s %8s\n",
                   mml_dataset_domain_name(te, fresh), job->init, (unsigned long long)job->seed,
                   "domain", "n_test", "auc", "logloss");
        for (int32_t d = 0; d <= D; d++) {
            mml_domain_metrics dm;
            mml_metrics_domain(met, d, &dm);
            json_t *x = json_pack("{s:i,s:s,s:I,s:f}", "id", d, "name",
                                  mml_dataset_domain_name(te, d), "n_test", (json_int_t)dm.n,
                                  "logloss", dm.logloss);
            json_object_set_new(x, "auc", dm.auc_defined ? json_real(dm.auc) : json_null());
            json_array_append_new(doms, x);
            if (d == fresh)
                json_object_set_new(run, "new_domain_auc",
                                    dm.auc_defined ? json_real(dm.auc) : json_null());
            if (!job->quiet)
                printf("  %-12s %8lld %8.4f %8.4f%s\n", mml_dataset_domain_name(te, d),
                       (long long)dm.n, dm.auc_defined ? dm.auc : 0.0, dm.logloss,
                       d == fresh ? "  (new)" : "");
        }
        json_object_set_new(run, "domains", doms);
        if (!job->quiet)
            printf("  old domains' %lld test predictions bit for bit unchanged: %s\n",
                   (long long)n_old, *unchanged ? "yes" : "NO");
    }
    if (rc >= 0 && job->save)
        rc = mml_model_save(g, job->save);
    if (rc >= 0 && job->json && json_dump_file(run, job->json, JSON_INDENT(2) | JSON_REAL_PRECISION(10)))
        fprintf(stderr, "mml-train: cannot write %s\n", job->json), rc = MML_EIO;
    if (rc < 0)
        fprintf(stderr, "mml-train: --add-domain: %s\n",
                rc == MML_ENOMEM && !mml_ctx_last_error(ctx)[0] ? "out of memory"
                                                                 : mml_ctx_last_error(ctx));
    json_decref(run);
    free(before);
    free(after);
    mml_metrics_destroy(met);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(va);
    mml_dataset_destroy(te);
    mml_model_destroy(g);
    mml_model_destroy(old);
    return rc;
}
