/* Metrics: exact AUC, log loss, per-domain accumulation, WAUC, group AUC. */
#include "internal.h"
#include "testutil.h"

/* O(n^2) reference: pairs (positive, negative), ties 1/2. */
static double pair_auc(const float *s, const float *y, int64_t n, int *defined)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (y[i] != 1.0f)
            continue;
        for (int64_t j = 0; j < n; j++) {
            if (y[j] != 0.0f)
                continue;
            den += 1;
            num += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
        }
    }
    *defined = den > 0;
    return den > 0 ? num / den : 0.0;
}

/* Direct double formula: -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))],
 * with log sigmoid(z) = -log1p(exp(-z)) and log(1 - sigmoid(z)) = -log1p(exp(z)). */
static double ref_bce(double z, double y)
{
    long double lz = z;
    return (double)(y * log1pl(expl(-lz)) + (1 - y) * log1pl(expl(lz)));
}

START_TEST(auc_matches_pair_count_with_ties)
{
    mml_rng rng;
    mml__rng_init(&rng, 17, 0);
    static const int64_t sizes[] = {1, 2, 3, 10, 57, 400, 1500};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++)
        for (int levels = 1; levels <= 1000; levels *= 10) {
            int64_t n = sizes[t];
            float *s = malloc((size_t)n * sizeof *s), *y = malloc((size_t)n * sizeof *y);
            for (int64_t i = 0; i < n; i++) {
                /* Few distinct levels: many ties; negative and positive, -0 and +0. */
                int64_t lv = (int64_t)mml__rng_below(&rng, (uint64_t)levels) - levels / 2;
                s[i] = (float)lv * 0.37f;
                if (lv == 0 && (i & 1))
                    s[i] = -0.0f;
                y[i] = mml__rng_uniform(&rng) < 0.3f ? 1.0f : 0.0f;
            }
            int def_ref;
            double ref = pair_auc(s, y, n, &def_ref);
            double auc;
            int32_t def;
            ck_assert_int_eq(mml_auc(s, y, n, &auc, &def), MML_OK);
            ck_assert_int_eq(def, def_ref);
            ck_assert_msg(fabs(auc - ref) < 1e-12, "n %lld levels %d: %.15f vs %.15f", (long long)n,
                          levels, auc, ref);
            mml_ctx *ctx = plain_ctx(1, 1);
            double auc2;
            ck_assert_int_eq(mml_auc_ex(ctx, s, y, n, &auc2, &def), MML_OK);
            ck_assert(auc2 == auc);
            mml_ctx_destroy(ctx);
            free(s);
            free(y);
        }
}
END_TEST

/* roc_auc_score values from Debian's python3-sklearn 1.2.1 on these arrays. */
static const float sk1_s[16] = {0.5f, 0.5f, 0.1f, 0.9f, 0.3f, 0.3f, 0.3f, 0.7f,
                                0.2f, 0.5f, 0.8f, 0.8f, 0.1f, 0.6f, 0.4f, 0.3f};
static const float sk1_y[16] = {1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0};
static const double sk1_auc = 0.8412698412698413;
static const float sk2_s[24] = {1, -2, 3, 0, 0, 1, -2, 3, -3, -2, 3, -1,
                                -1, -3, 3, 1, -3, 1, -3, 0, -1, 3, 0, 1};
static const float sk2_y[24] = {0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0,
                                0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 1};
static const double sk2_auc = 0.3263888888888889;
static const float sk3_s[30] = {-100.0f, 100.0f, -0.1f, -4.4f, -1.2f, -6.9f, 3.1f, -1.2f,
                                -2.2f,   3.2f,   -5.0f, 1.6f,  -6.2f, -2.0f, -3.6f, 4.4f,
                                5.3f,    -1.0f,  2.5f,  -0.5f, 1.7f,  -2.3f, -5.1f, -5.4f,
                                1.1f,    6.7f,   0.8f,  -1.6f, 5.7f,  0.7f};
static const float sk3_y[30] = {0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0,
                                0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
static const double sk3_auc = 0.592;

START_TEST(auc_matches_sklearn)
{
    double auc;
    int32_t def;
    ck_assert_int_eq(mml_auc(sk1_s, sk1_y, 16, &auc, &def), MML_OK);
    ck_assert(def && fabs(auc - sk1_auc) < 1e-12);
    ck_assert_int_eq(mml_auc(sk2_s, sk2_y, 24, &auc, &def), MML_OK);
    ck_assert(def && fabs(auc - sk2_auc) < 1e-12);
    ck_assert_int_eq(mml_auc(sk3_s, sk3_y, 30, &auc, &def), MML_OK);
    ck_assert(def && fabs(auc - sk3_auc) < 1e-12);
    /* The accumulator gives the same per domain. */
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_metrics *m;
    ck_assert_int_eq(mml_metrics_create(&m, ctx, 3), MML_OK);
    int32_t d1[16], d2[24], d3[30];
    for (int i = 0; i < 16; i++) d1[i] = 0;
    for (int i = 0; i < 24; i++) d2[i] = 1;
    for (int i = 0; i < 30; i++) d3[i] = 2;
    ck_assert_int_eq(mml_metrics_add(m, sk1_s, sk1_y, d1, 16), MML_OK);
    ck_assert_int_eq(mml_metrics_add(m, sk2_s, sk2_y, d2, 24), MML_OK);
    ck_assert_int_eq(mml_metrics_add(m, sk3_s, sk3_y, d3, 30), MML_OK);
    mml_metrics_summary s;
    ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
    mml_domain_metrics dm;
    const double want[3] = {sk1_auc, sk2_auc, sk3_auc};
    const int64_t n[3] = {16, 24, 30};
    double wsum = 0;
    for (int d = 0; d < 3; d++) {
        ck_assert_int_eq(mml_metrics_domain(m, d, &dm), MML_OK);
        ck_assert_int_eq(dm.n, n[d]);
        ck_assert(dm.auc_defined && fabs(dm.auc - want[d]) < 1e-12);
        wsum += (double)n[d] * want[d];
    }
    ck_assert_int_eq(s.n, 70);
    ck_assert_int_eq(s.n_domains_with_auc, 3);
    ck_assert(fabs(s.mean_auc - (sk1_auc + sk2_auc + sk3_auc) / 3) < 1e-12);
    ck_assert(fabs(s.wauc - wsum / 70) < 1e-12);
    mml_metrics_destroy(m);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(auc_edge_cases)
{
    double auc = 7;
    int32_t def = 7;
    const float s[4] = {0.1f, 0.2f, INFINITY, -INFINITY};
    const float one[4] = {1, 1, 1, 1};
    ck_assert_int_eq(mml_auc(s, one, 4, &auc, &def), MML_OK);
    ck_assert_int_eq(def, 0);
    ck_assert(auc == 0.0);
    ck_assert_int_eq(mml_auc(NULL, NULL, 0, &auc, &def), MML_OK);
    ck_assert_int_eq(def, 0);
    const float y[4] = {0, 0, 1, 0};
    ck_assert_int_eq(mml_auc(s, y, 4, &auc, &def), MML_OK);
    ck_assert(def && auc == 1.0);
    /* All tied: 1/2. */
    const float tied[4] = {3, 3, 3, 3};
    ck_assert_int_eq(mml_auc(tied, y, 4, &auc, &def), MML_OK);
    ck_assert(def && auc == 0.5);
    /* -0 and +0 tie. */
    const float z[2] = {-0.0f, 0.0f};
    const float zy[2] = {1, 0};
    ck_assert_int_eq(mml_auc(z, zy, 2, &auc, &def), MML_OK);
    ck_assert(auc == 0.5);
    /* Bad arguments. */
    const float bad_y[2] = {0.5f, 1};
    const float nan_s[2] = {NAN, 1};
    ck_assert_int_eq(mml_auc(s, bad_y, 2, &auc, &def), MML_EINVAL);
    ck_assert_int_eq(mml_auc(nan_s, zy, 2, &auc, &def), MML_ENONFINITE);
    ck_assert_int_eq(mml_auc(NULL, y, 2, &auc, &def), MML_EINVAL);
    ck_assert_int_eq(mml_auc(s, NULL, 2, &auc, &def), MML_EINVAL);
    ck_assert_int_eq(mml_auc(s, y, 2, NULL, &def), MML_EINVAL);
    ck_assert_int_eq(mml_auc(s, y, 2, &auc, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_auc(s, y, -1, &auc, &def), MML_EINVAL);
    ck_assert_int_eq(mml_auc_ex(NULL, s, y, 2, &auc, &def), MML_EINVAL);
    mml_ctx *ctx = plain_ctx(1, 1);
    ck_assert_int_eq(mml_auc_ex(ctx, s, bad_y, 2, &auc, &def), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "expected 0 or 1"));
    /* The context's allocator failing. */
    counting_allocator a;
    mml_ctx *c2 = counting_ctx(&a, 0, 1, 1);
    a.fail_at = a.calls + 1;
    ck_assert_int_eq(mml_auc_ex(c2, s, y, 4, &auc, &def), MML_ENOMEM);
    a.fail_at = a.calls + 2;
    ck_assert_int_eq(mml_auc_ex(c2, s, y, 4, &auc, &def), MML_ENOMEM);
    mml_ctx_destroy(c2);
    ck_assert_int_eq(a.live, 0);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(logloss_matches_direct_formula)
{
    const float z[] = {0, 1, -1, 2.5f, -3.25f, 10, -10, 30, -30, 88, -88, 100, -100, 1e-6f};
    const int nz = (int)(sizeof z / sizeof z[0]);
    float zz[2 * 14], yy[2 * 14];
    int32_t dd[2 * 14];
    double sum = 0;
    for (int i = 0; i < nz; i++)
        for (int y = 0; y < 2; y++) {
            float lab = (float)y;
            double got;
            ck_assert_int_eq(mml_logloss(&z[i], &lab, 1, &got), MML_OK);
            double want = ref_bce(z[i], y);
            ck_assert_msg(fabs(got - want) <= 1e-12 * (1 + want), "z %g y %d: %.17g vs %.17g",
                          (double)z[i], y, got, want);
            ck_assert(isfinite(got));
            zz[2 * i + y] = z[i];
            yy[2 * i + y] = lab;
            dd[2 * i + y] = y;
            sum += want;
        }
    /* Extreme logits: exact values without clipping. */
    float big = 100, lab0 = 0, lab1 = 1;
    double v;
    mml_logloss(&big, &lab0, 1, &v);
    ck_assert(fabs(v - 100.0) < 1e-12);
    mml_logloss(&big, &lab1, 1, &v);
    ck_assert(v > 0 && v < 1e-40);
    double mean;
    ck_assert_int_eq(mml_logloss(zz, yy, 2 * nz, &mean), MML_OK);
    ck_assert(fabs(mean - sum / (2 * nz)) < 1e-12);
    /* The accumulator's total and per-domain log loss. */
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_metrics *m;
    ck_assert_int_eq(mml_metrics_create(&m, ctx, 2), MML_OK);
    ck_assert_int_eq(mml_metrics_add(m, zz, yy, dd, 2 * nz), MML_OK);
    mml_metrics_summary s;
    ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
    ck_assert(fabs(s.logloss - sum / (2 * nz)) < 1e-12);
    double d1 = 0;
    for (int i = 0; i < nz; i++)
        d1 += ref_bce(z[i], 1);
    mml_domain_metrics dm;
    ck_assert_int_eq(mml_metrics_domain(m, 1, &dm), MML_OK);
    ck_assert(fabs(dm.logloss - d1 / nz) < 1e-12);
    /* One class per domain: no AUC anywhere, finite totals. */
    ck_assert_int_eq(dm.auc_defined, 0);
    ck_assert_int_eq(s.n_domains_with_auc, 0);
    ck_assert(s.mean_auc == 0 && s.wauc == 0);
    ck_assert(s.auc_defined == 1);
    mml_metrics_destroy(m);
    ck_assert_int_eq(mml_logloss(zz, yy, 0, &mean), MML_OK);
    ck_assert(mean == 0);
    float inf = INFINITY;
    ck_assert_int_eq(mml_logloss(&inf, &lab0, 1, &mean), MML_ENONFINITE);
    float half = 0.5f;
    ck_assert_int_eq(mml_logloss(&big, &half, 1, &mean), MML_EINVAL);
    ck_assert_int_eq(mml_logloss(NULL, &lab0, 1, &mean), MML_EINVAL);
    ck_assert_int_eq(mml_logloss(&big, &lab0, 1, NULL), MML_EINVAL);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(metrics_one_class_domains_and_batches)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_rng rng;
    mml__rng_init(&rng, 3, 0);
    const int64_t n = 5000;
    const int32_t D = 4;
    float *z = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    int32_t *d = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
        d[i] = (int32_t)mml__rng_below(&rng, (uint64_t)D);
        z[i] = (float)((int)mml__rng_below(&rng, 50) - 25) * 0.2f;
        y[i] = mml__rng_uniform(&rng) < 0.4f ? 1.0f : 0.0f;
        if (d[i] == 1)
            y[i] = 1; /* domain 1: positives only */
        if (d[i] == 2)
            z[i] += 3 * y[i];
    }
    mml_metrics *m;
    ck_assert_int_eq(mml_metrics_create(&m, ctx, D + 1), MML_OK); /* domain 4: no rows */
    /* Batch by batch, in uneven pieces. */
    for (int64_t a = 0; a < n;) {
        int64_t b = a + 1 + (int64_t)mml__rng_below(&rng, 700);
        if (b > n)
            b = n;
        ck_assert_int_eq(mml_metrics_add(m, z + a, y + a, d + a, b - a), MML_OK);
        a = b;
    }
    mml_metrics_summary s;
    ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
    ck_assert_int_eq(s.n, n);
    ck_assert_int_eq(s.n_domains_with_auc, 3);
    double sum = 0, wsum = 0;
    int64_t wn = 0;
    float *sz = malloc((size_t)n * 4), *sy = malloc((size_t)n * 4);
    for (int32_t dom = 0; dom <= D; dom++) {
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++)
            if (d[i] == dom) {
                sz[k] = z[i];
                sy[k++] = y[i];
            }
        int def;
        double ref = pair_auc(sz, sy, k, &def);
        mml_domain_metrics dm;
        ck_assert_int_eq(mml_metrics_domain(m, dom, &dm), MML_OK);
        ck_assert_int_eq(dm.n, k);
        ck_assert_int_eq(dm.auc_defined, def);
        ck_assert(fabs(dm.auc - ref) < 1e-12);
        ck_assert(!isnan(dm.auc) && !isnan(dm.logloss));
        if (def) {
            sum += ref;
            wsum += (double)k * ref;
            wn += k;
        }
    }
    ck_assert(fabs(s.mean_auc - sum / 3) < 1e-12);
    ck_assert(fabs(s.wauc - wsum / (double)wn) < 1e-12);
    int def;
    double pooled = pair_auc(z, y, n, &def);
    ck_assert(s.auc_defined && fabs(s.auc - pooled) < 1e-12);
    ck_assert(!isnan(s.mean_auc) && !isnan(s.wauc) && !isnan(s.logloss));
    ck_assert_int_eq(s.gauc_defined, 0);
    /* More rows after compute; reset forgets everything. */
    ck_assert_int_eq(mml_metrics_add(m, z, y, d, 10), MML_OK);
    mml_domain_metrics dm;
    ck_assert_int_eq(mml_metrics_domain(m, 0, &dm), MML_ESTATE);
    ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
    ck_assert_int_eq(s.n, n + 10);
    mml_metrics_reset(m);
    ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
    ck_assert_int_eq(s.n, 0);
    ck_assert(s.logloss == 0 && s.mean_auc == 0 && s.wauc == 0 && !s.auc_defined);
    mml_metrics_destroy(m);
    free(sz);
    free(sy);
    free(z);
    free(y);
    free(d);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(metrics_group_auc)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    /* Users 5 (4 rows, AUC 0.75), 9 (3 rows, AUC 1), 2 (2 rows, positives only: left out). */
    const float z[] = {0.1f, 0.4f, 0.35f, 0.8f, 1, 2, 3, 7, 8};
    const float y[] = {0, 0, 1, 1, 0, 1, 1, 1, 1};
    const int32_t g[] = {5, 5, 5, 5, 9, 9, 9, 2, 2};
    const int32_t d[] = {0, 1, 0, 1, 0, 0, 1, 1, 0};
    mml_metrics *m;
    ck_assert_int_eq(mml_metrics_create(&m, ctx, 2), MML_OK);
    ck_assert_int_eq(mml_metrics_add_grouped(m, z, y, d, g, 5), MML_OK);
    ck_assert_int_eq(mml_metrics_add_grouped(m, z + 5, y + 5, d + 5, g + 5, 4), MML_OK);
    mml_metrics_summary s;
    ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
    ck_assert_int_eq(s.gauc_defined, 1);
    ck_assert(fabs(s.gauc - (4 * 0.75 + 3 * 1.0) / 7) < 1e-12);
    ck_assert_int_eq(mml_metrics_add_grouped(m, z, y, d, NULL, 1), MML_EINVAL);
    mml_metrics_destroy(m);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(metrics_bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_metrics *m = (mml_metrics *)1;
    ck_assert_int_eq(mml_metrics_create(&m, NULL, 2), MML_EINVAL);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(mml_metrics_create(NULL, ctx, 2), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_create(&m, ctx, 0), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_create(&m, ctx, -3), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_create(&m, ctx, 2), MML_OK);
    ck_assert_int_eq(mml_metrics_n_domains(m), 2);
    ck_assert_int_eq(mml_metrics_n_domains(NULL), 0);
    const float z[2] = {1, 2}, y[2] = {0, 1}, by[2] = {0, 2}, nz[2] = {1, NAN};
    const int32_t d[2] = {0, 1}, bd[2] = {0, 2}, nd[2] = {-1, 0};
    ck_assert_int_eq(mml_metrics_add(NULL, z, y, d, 2), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_add(m, NULL, y, d, 2), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_add(m, z, NULL, d, 2), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_add(m, z, y, NULL, 2), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_add(m, z, y, d, -1), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_add(m, z, by, d, 2), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_add(m, nz, y, d, 2), MML_ENONFINITE);
    ck_assert_int_eq(mml_metrics_add(m, z, y, bd, 2), MML_ERANGE);
    ck_assert_int_eq(mml_metrics_add(m, z, y, nd, 2), MML_ERANGE);
    ck_assert_int_eq(mml_metrics_add_grouped(NULL, z, y, d, d, 2), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_add(m, NULL, NULL, NULL, 0), MML_OK);
    /* Rejected batches left nothing behind. */
    mml_metrics_summary s;
    ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
    ck_assert_int_eq(s.n, 0);
    ck_assert_int_eq(mml_metrics_compute(NULL, &s), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_compute(m, NULL), MML_EINVAL);
    mml_domain_metrics dm;
    ck_assert_int_eq(mml_metrics_domain(m, 2, &dm), MML_ERANGE);
    ck_assert_int_eq(mml_metrics_domain(m, -1, &dm), MML_ERANGE);
    ck_assert_int_eq(mml_metrics_domain(m, 0, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_domain(NULL, 0, &dm), MML_EINVAL);
    ck_assert_int_eq(mml_metrics_domain(m, 0, &dm), MML_OK);
    ck_assert_int_eq(dm.n, 0);
    ck_assert_int_eq(dm.auc_defined, 0);
    mml_metrics_reset(NULL);
    mml_metrics_destroy(m);
    mml_metrics_destroy(NULL);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(metrics_allocation_failures)
{
    /* create, and a full add + compute cycle, at every allocation. */
    counting_allocator a;
    mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
    long base = a.calls;
    const float z[3] = {1, 2, 3}, y[3] = {0, 1, 1};
    const int32_t d[3] = {0, 1, 0}, g[3] = {4, 4, 4};
    mml_metrics *m;
    ck_assert_int_eq(mml_metrics_create(&m, ctx, 3), MML_OK);
    long create_calls = a.calls - base;
    mml_metrics_destroy(m);
    mml_ctx_destroy(ctx);
    ck_assert_int_eq(a.live, 0);
    for (long n = 1; n <= create_calls; n++) {
        ctx = counting_ctx(&a, 0, 1, 1);
        long live = a.live;
        a.fail_at = a.calls + n;
        m = (mml_metrics *)1;
        ck_assert_int_eq(mml_metrics_create(&m, ctx, 3), MML_ENOMEM);
        ck_assert_ptr_null(m);
        ck_assert_int_eq(a.live, live);
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(a.live, 0);
    }
    for (long n = 1; n <= 6; n++) {
        ctx = counting_ctx(&a, 0, 1, 1);
        ck_assert_int_eq(mml_metrics_create(&m, ctx, 3), MML_OK);
        a.fail_at = a.calls + n;
        int rc = mml_metrics_add_grouped(m, z, y, d, g, 3);
        if (rc == MML_OK) {
            mml_metrics_summary s;
            rc = mml_metrics_compute(m, &s);
            ck_assert(rc == MML_OK || rc == MML_ENOMEM);
            if (rc == MML_ENOMEM) {
                a.fail_at = 0;
                ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
                ck_assert_int_eq(s.n, 3);
            }
        } else {
            ck_assert_int_eq(rc, MML_ENOMEM);
            a.fail_at = 0;
            mml_metrics_summary s;
            ck_assert_int_eq(mml_metrics_compute(m, &s), MML_OK);
            ck_assert(s.n == 0 || s.n == 3);
        }
        mml_metrics_destroy(m);
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(a.live, 0);
    }
}
END_TEST

START_TEST(auc_large_input_is_fast)
{
    const int64_t n = 2000000;
    float *s = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    mml_rng rng;
    mml__rng_init(&rng, 1, 0);
    for (int64_t i = 0; i < n; i++) {
        y[i] = mml__rng_uniform(&rng) < 0.2f ? 1.0f : 0.0f;
        s[i] = (float)mml__rng_normal(&rng) + y[i];
    }
    double auc;
    int32_t def;
    ck_assert_int_eq(mml_auc(s, y, n, &auc, &def), MML_OK);
    /* Two unit normals one apart: AUC = Phi(1 / sqrt 2) = 0.7602. */
    ck_assert(def && fabs(auc - 0.7602) < 0.003);
    free(s);
    free(y);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *c = tcase_create("metrics");
    tcase_set_timeout(c, 120);
    tcase_add_test(c, auc_matches_pair_count_with_ties);
    tcase_add_test(c, auc_matches_sklearn);
    tcase_add_test(c, auc_edge_cases);
    tcase_add_test(c, logloss_matches_direct_formula);
    tcase_add_test(c, metrics_one_class_domains_and_batches);
    tcase_add_test(c, metrics_group_auc);
    tcase_add_test(c, metrics_bad_arguments);
    tcase_add_test(c, metrics_allocation_failures);
    tcase_add_test(c, auc_large_input_is_fast);
    suite_add_tcase(s, c);
    return s;
}

int main(void) { return run_suite(metrics_suite()); }
