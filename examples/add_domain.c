/* Adding a domain to a trained MoE-MLoRA model: train on three synthetic
 * domains, save, load, add the fourth (new experts and a gate row trained on
 * its rows, everything else frozen), check that the old domains' predictions
 * kept their bits, and print the new domain's test AUC.
 * Usage: add_domain [MODEL_FILE]   (default add_domain.mml in /tmp) */
#include <moemlora/moemlora.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                                \
    do {                                                                                           \
        if ((rc = (call)) < 0) {                                                                   \
            fprintf(stderr, "%s: %s\n", #call, mml_ctx_last_error(ctx));                           \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* Probabilities of the rows of ds in domains < D (dataset order, batches of 256). */
static int predict_old(mml_model *m, const mml_dataset *ds, int32_t D, float *p, int64_t *n)
{
    int64_t at = 0;
    for (int64_t s = 0; s < mml_dataset_n_rows(ds); s++) {
        mml_batch_view b;
        int rc = mml_dataset_view(ds, s, 1, &b);
        if (rc < 0)
            return rc;
        if (b.domain[0] < D && (rc = mml_model_predict(m, &b, MML_MIX_GATED, 0, p + at++)) < 0)
            return rc;
    }
    *n = at;
    return MML_OK;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/tmp/add_domain.mml";
    mml_ctx *ctx = NULL;
    mml_ctx_options co;
    mml_ctx_options_init(&co);
    co.seed = 1;
    if (mml_ctx_create(&ctx, &co) < 0)
        return 1;
    int rc, changed = 1;
    mml_dataset *tr = NULL, *va = NULL, *te = NULL, *otr = NULL, *ova = NULL;
    mml_dataset *gtr = NULL, *gva = NULL, *gte = NULL;
    mml_trainer *t = NULL;
    mml_model *trained = NULL, *old = NULL, *grown = NULL;
    mml_metrics *met = NULL;
    float *before = NULL, *after = NULL;

    /* Four domains; the model first sees three of them. */
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_rows = 12000;
    CHECK(mml_synthetic_generate(ctx, &so, &tr, &va, &te));
    CHECK(mml_dataset_drop_domain(&otr, tr, 3));
    CHECK(mml_dataset_drop_domain(&ova, va, 3));

    /* MoE-MLoRA on domains 0-2, saved and loaded back. */
    mml_trainer_options to;
    mml_trainer_options_init(&to);
    CHECK(mml_trainer_create(&t, ctx, &to, otr, ova));
    CHECK(mml_trainer_run(t));
    CHECK(mml_trainer_take_model(t, &trained));
    CHECK(mml_model_save(trained, path));
    CHECK(mml_model_load(&old, ctx, path));

    /* The fourth domain joins: new experts, a gate row, data mapped by name. */
    mml_add_domain_options ao;
    mml_add_domain_options_init(&ao);
    CHECK(mml_model_add_domain(&grown, old, tr, &ao));
    CHECK(mml_dataset_for_model(&gtr, tr, grown));
    CHECK(mml_dataset_for_model(&gva, va, grown));
    CHECK(mml_dataset_for_model(&gte, te, grown));
    int32_t D = mml_model_n_domains(old);
    int64_t n = mml_dataset_n_rows(gte), n0 = 0, n1 = 0;
    before = malloc(sizeof(float) * (size_t)n);
    after = malloc(sizeof(float) * (size_t)n);
    if (!before || !after)
        goto done;
    CHECK(predict_old(old, gte, D, before, &n0));
    CHECK(mml_model_train_domain(grown, D, gtr, gva, &ao));
    CHECK(mml_model_save(grown, path));
    CHECK(predict_old(grown, gte, D, after, &n1));
    changed = n0 != n1 || memcmp(before, after, sizeof(float) * (size_t)n0) != 0;
    printf("old domains: %lld test predictions %s\n", (long long)n0,
           changed ? "CHANGED" : "bit for bit unchanged");

    /* Test AUC of every domain with the grown model. */
    CHECK(mml_metrics_create(&met, ctx, D + 1));
    for (int64_t s = 0; s < n; s += 256) {
        mml_batch_view b;
        int64_t k = n - s < 256 ? n - s : 256;
        CHECK(mml_dataset_view(gte, s, k, &b));
        CHECK(mml_model_forward(grown, &b, MML_MIX_GATED, 0, 0, after)); /* logits */
        CHECK(mml_metrics_add(met, after, b.labels, b.domain, k));
    }
    mml_metrics_summary sum;
    CHECK(mml_metrics_compute(met, &sum));
    for (int32_t d = 0; d <= D; d++) {
        mml_domain_metrics dm;
        CHECK(mml_metrics_domain(met, d, &dm));
        printf("domain %-4s test AUC %.4f%s\n", mml_dataset_domain_name(gte, d), dm.auc,
               d == D ? "  (added)" : "");
    }
done:
    mml_metrics_destroy(met);
    free(before);
    free(after);
    mml_model_destroy(grown);
    mml_model_destroy(old);
    mml_model_destroy(trained);
    mml_trainer_destroy(t);
    mml_dataset *sets[8] = {tr, va, te, otr, ova, gtr, gva, gte};
    for (int i = 0; i < 8; i++)
        mml_dataset_destroy(sets[i]);
    mml_ctx_destroy(ctx);
    remove(path);
    return rc < 0 || changed ? 1 : 0;
}
