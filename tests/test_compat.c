/* Files written by release 1.2 load in every later release: a model file
 * written then (tests/fixtures/moe_deepfm_1.2.mml, with a schema) and the
 * predictions it gave (moe_deepfm_1.2.txt) are checked on every build,
 * within 1e-5 (BLIS picks kernels by CPU, so bits do not travel).
 *
 * `test_compat --write-fixture DIR` wrote them; never run it again for
 * these names: a later release adds fixtures of its own beside them. */
#define _DEFAULT_SOURCE
#include <unistd.h>

#include "testutil.h"

#define ROWS 16

static const char *fixture_dir(void)
{
    const char *d = getenv("MML_FIXTURE_DIR");
    return d ? d : "tests/fixtures";
}

/* The rows the predictions are of: ids within every field, both domains,
 * numeric values of both signs. */
static void fixed_rows(int32_t *ids, float *dense, int32_t *dom, int32_t F, const int64_t *sizes)
{
    for (int r = 0; r < ROWS; r++) {
        for (int32_t f = 0; f < F; f++)
            ids[r * F + f] = (int32_t)((r * 7 + f * 3) % sizes[f]);
        dense[r] = (float)(r % 5) * 0.5f - 1.0f;
        dom[r] = r % 2;
    }
}

/* Trains a small MoE-MLoRA DeepFM on a CSV with a hashed, a numeric and a
 * categorical column and a domain by name, then writes the file and the
 * predictions of fixed rows. */
static int write_fixture(const char *dir)
{
    char tr[4096], va[4096], path[4096];
    snprintf(tr, sizeof tr, "%s/train.tmp.csv", dir);
    snprintf(va, sizeof va, "%s/val.tmp.csv", dir);
    FILE *f = fopen(tr, "w"), *g = fopen(va, "w");
    if (!f || !g)
        return 1;
    static const char *const cities[] = {"paris", "rome", "oslo", "lima", "kyiv"};
    fputs("user,city,n,segment,label\n", f);
    fputs("user,city,n,segment,label\n", g);
    for (int r = 0; r < 600; r++) {
        FILE *o = r % 5 == 0 ? g : f;
        int u = (r * 37) % 23, c = (r * 11) % 5;
        float n = (float)((r * 13) % 9) * 0.25f - 1.0f;
        int seg = (r * 3) % 2;
        int label = ((u + c + seg) % 3 == 0) ^ (n > 0.5f);
        fprintf(o, "u%d,%s,%g,%s,%d\n", u, cities[c], (double)n, seg ? "sports" : "news", label);
    }
    fclose(f);
    fclose(g);
    mml_ctx_options xo;
    mml_ctx_options_init(&xo);
    xo.n_threads = 1;
    xo.seed = 2026;
    mml_ctx *ctx = NULL;
    if (mml_ctx_create(&ctx, &xo) != MML_OK)
        return 1;
    static const char *const num[] = {"n"};
    static const char *const hashed[] = {"city"};
    static const int64_t buckets[] = {8};
    mml_csv_options co;
    mml_csv_options_init(&co);
    co.domain_column = "segment";
    co.numeric_columns = num;
    co.n_numeric_columns = 1;
    co.hashed_columns = hashed;
    co.hashed_buckets = buckets;
    co.n_hashed_columns = 1;
    co.hash_seed = 12;
    mml_dataset *train = NULL, *val = NULL, *test = NULL;
    if (mml_csv_load(ctx, &co, tr, va, va, &train, &val, &test) != MML_OK) {
        fprintf(stderr, "%s\n", mml_ctx_last_error(ctx));
        return 1;
    }
    static const int32_t hidden[2] = {16, 8};
    mml_trainer_options to;
    mml_trainer_options_init(&to);
    to.variant = MML_VARIANT_MOE;
    to.backbone = "deepfm";
    to.hidden = hidden;
    to.n_hidden = 2;
    to.alpha = 4;
    to.max_epochs = 3;
    to.batch_size = 64;
    mml_trainer *t = NULL;
    mml_model *m = NULL;
    int rc = mml_trainer_create(&t, ctx, &to, train, val);
    if (rc >= 0)
        rc = mml_trainer_run(t);
    if (rc >= 0)
        rc = mml_trainer_take_model(t, &m);
    mml_trainer_destroy(t);
    snprintf(path, sizeof path, "%s/moe_deepfm_1.2.mml", dir);
    if (rc >= 0)
        rc = mml_model_save(m, path);
    int32_t F = mml_dataset_n_fields(train);
    int64_t sizes[16];
    for (int32_t i = 0; i < F; i++)
        sizes[i] = mml_dataset_field_size(train, i);
    if (rc >= 0) {
        int32_t ids[ROWS * 16], dom[ROWS];
        float dense[ROWS], p[ROWS];
        fixed_rows(ids, dense, dom, F, sizes);
        mml_batch_view v;
        mml_batch_view_init(&v, ROWS, F, ids, 1, dense, dom, NULL);
        rc = mml_model_predict(m, &v, mml_model_mix_mode(m), 0, p);
        snprintf(path, sizeof path, "%s/moe_deepfm_1.2.txt", dir);
        FILE *o = rc >= 0 ? fopen(path, "w") : NULL;
        if (o) {
            fprintf(o, "%d", F);
            for (int32_t i = 0; i < F; i++)
                fprintf(o, " %lld", (long long)sizes[i]);
            fprintf(o, "\n");
            for (int r = 0; r < ROWS; r++)
                fprintf(o, "%.9g\n", (double)p[r]);
            fclose(o);
        } else {
            rc = -1;
        }
    }
    if (rc < 0)
        fprintf(stderr, "%s\n", mml_ctx_last_error(ctx));
    mml_model_destroy(m);
    mml_dataset_destroy(train);
    mml_dataset_destroy(val);
    mml_dataset_destroy(test);
    mml_ctx_destroy(ctx);
    unlink(tr);
    unlink(va);
    return rc < 0;
}

START_TEST(release_1_2_file_loads_and_predicts)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/moe_deepfm_1.2.txt", fixture_dir());
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s is missing", path);
    int F = 0;
    ck_assert_int_eq(fscanf(f, "%d", &F), 1);
    ck_assert(F >= 1 && F <= 16);
    int64_t sizes[16];
    for (int i = 0; i < F; i++) {
        long long v = 0;
        ck_assert_int_eq(fscanf(f, "%lld", &v), 1);
        sizes[i] = v;
    }
    double want[ROWS];
    for (int r = 0; r < ROWS; r++)
        ck_assert_int_eq(fscanf(f, "%lf", &want[r]), 1);
    fclose(f);
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_model *m = NULL;
    snprintf(path, sizeof path, "%s/moe_deepfm_1.2.mml", fixture_dir());
    int rc = mml_model_load(&m, ctx, path);
    ck_assert_msg(rc == MML_OK, "%s", mml_ctx_last_error(ctx));
    ck_assert_int_eq(mml_model_n_fields(m), F);
    ck_assert_int_eq(mml_model_n_domains(m), 2);
    ck_assert_int_eq(mml_model_has_schema(m), 1);
    ck_assert_int_eq(mml_model_mix_mode(m), MML_MIX_GATED);
    int32_t ids[ROWS * 16], dom[ROWS];
    float dense[ROWS], p[ROWS];
    fixed_rows(ids, dense, dom, F, sizes);
    mml_batch_view v;
    mml_batch_view_init(&v, ROWS, F, ids, 1, dense, dom, NULL);
    ck_assert_int_eq(mml_model_predict(m, &v, mml_model_mix_mode(m), 0, p), MML_OK);
    for (int r = 0; r < ROWS; r++)
        ck_assert_msg(fabs((double)p[r] - want[r]) <= 1e-5, "row %d: %.9g, the file's release gave %.9g",
                      r, (double)p[r], want[r]);
    /* And through a session. */
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    mml_session *s = NULL;
    ck_assert_int_eq(mml_session_create(&s, ctx, m, NULL), MML_OK);
    int32_t st[ROWS];
    ck_assert_int_eq(mml_session_predict(s, &v, p, st), MML_OK);
    for (int r = 0; r < ROWS; r++)
        ck_assert(fabs((double)p[r] - want[r]) <= 1e-5);
    mml_session_destroy(s);
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-fixture") == 0)
        return write_fixture(argv[2]);
    Suite *s = suite_create("compat");
    TCase *t = tcase_create("compat");
    tcase_add_test(t, release_1_2_file_loads_and_predicts);
    suite_add_tcase(s, t);
    return run_suite(s);
}
