#include <stddef.h>
/* Core runtime: version, status codes, context, allocator, RNG, matrix multiply. */
#include "internal.h"
#include "testutil.h"

START_TEST(version_matches_macros)
{
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", MML_VERSION_MAJOR, MML_VERSION_MINOR,
             MML_VERSION_PATCH);
    ck_assert_str_eq(mml_version_string(), expect);
    ck_assert_uint_eq(mml_version_number(), MML_VERSION_NUMBER);
}
END_TEST

START_TEST(status_strings_are_distinct)
{
    ck_assert_str_eq(mml_status_str(MML_OK), "success");
    for (int a = MML_ESECTION; a <= MML_OK; a++) {
        ck_assert_ptr_nonnull(mml_status_str(a));
        ck_assert_str_ne(mml_status_str(a), "unknown status");
        for (int b = a + 1; b <= MML_OK; b++)
            ck_assert_str_ne(mml_status_str(a), mml_status_str(b));
    }
    ck_assert_str_eq(mml_status_str(-9999), "unknown status");
    ck_assert_str_eq(mml_status_str(5), "unknown status");
}
END_TEST

START_TEST(status_values_are_pinned)
{
    ck_assert_int_eq(MML_EINVAL, -1);
    ck_assert_int_eq(MML_ENOMEM, -2);
    ck_assert_int_eq(MML_ERANGE, -3);
    ck_assert_int_eq(MML_ESHAPE, -4);
    ck_assert_int_eq(MML_ENONFINITE, -5);
    ck_assert_int_eq(MML_EIO, -6);
    ck_assert_int_eq(MML_EPARSE, -7);
    ck_assert_int_eq(MML_ESTATE, -8);
    ck_assert_int_eq(MML_EVERSION, -9);
    ck_assert_int_eq(MML_EEXIST, -10);
    ck_assert_int_eq(MML_ENOTFOUND, -11);
    ck_assert_int_eq(MML_ECANCELED, -12);
    ck_assert_int_eq(MML_ECALLBACK, -13);
    ck_assert_int_eq(MML_EUNSUPPORTED, -14);
    ck_assert_int_eq(MML_EFORMAT, -15);
    ck_assert_int_eq(MML_EGRADIENT, -16);
}
END_TEST

START_TEST(ctx_defaults_and_setters)
{
    mml_ctx *ctx = NULL;
    ck_assert_int_eq(mml_ctx_create(&ctx, NULL), MML_OK);
    ck_assert_uint_eq(mml_ctx_threads(ctx), 1);
    ck_assert_uint_eq(mml_ctx_seed(ctx), 1);
    ck_assert_str_eq(mml_ctx_last_error(ctx), "");
    ck_assert_int_eq(mml_ctx_set_threads(ctx, 2), MML_OK);
    ck_assert_uint_eq(mml_ctx_threads(ctx), 2);
    ck_assert_int_eq(mml_ctx_set_threads(ctx, 0), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "thread count"));
    mml_ctx_clear_error(ctx);
    ck_assert_str_eq(mml_ctx_last_error(ctx), "");
    ck_assert_int_eq(mml_ctx_set_seed(ctx, 42), MML_OK);
    ck_assert_uint_eq(mml_ctx_seed(ctx), 42);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(ctx_bad_arguments)
{
    ck_assert_int_eq(mml_ctx_create(NULL, NULL), MML_EINVAL);
    mml_ctx *ctx = (mml_ctx *)1;
    mml_ctx_options o;
    mml_ctx_options_init(&o);
    o.n_threads = 0;
    ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_EINVAL);
    ck_assert_ptr_null(ctx);
    mml_ctx_options_init(&o);
    o.struct_size = 0;
    ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_EVERSION);
    o.struct_size = sizeof o + 8;
    ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_EVERSION);
    mml_allocator bad = {MML_ALLOCATOR_VERSION + 1, 0, NULL, NULL, NULL};
    mml_ctx_options_init(&o);
    o.allocator = &bad;
    ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_EVERSION);
    bad.version = MML_ALLOCATOR_VERSION;
    ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_EINVAL);
    /* NULL-safe accessors. */
    mml_ctx_destroy(NULL);
    ck_assert_str_eq(mml_ctx_last_error(NULL), "");
    ck_assert_uint_eq(mml_ctx_threads(NULL), 0);
    ck_assert_int_eq(mml_ctx_set_threads(NULL, 1), MML_EINVAL);
    ck_assert_int_eq(mml_ctx_set_seed(NULL, 1), MML_EINVAL);
    ck_assert_uint_eq(mml_ctx_seed(NULL), 0);
    mml_ctx_clear_error(NULL);
    mml_ctx_options_init(NULL);
}
END_TEST

START_TEST(ctx_create_fails_cleanly_at_every_allocation)
{
    counting_allocator a;
    mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
    ck_assert_ptr_nonnull(ctx);
    long total = a.calls;
    mml_ctx_destroy(ctx);
    ck_assert_int_eq(a.live, 0);
    ck_assert_int_gt(total, 0);
    for (long n = 1; n <= total; n++) {
        counting_allocator_init(&a, n);
        mml_ctx_options o;
        mml_ctx_options_init(&o);
        o.allocator = &a.base;
        ctx = NULL;
        ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_ENOMEM);
        ck_assert_ptr_null(ctx);
        ck_assert_int_eq(a.live, 0);
    }
}
END_TEST

static int log_calls;
static void count_log(void *user, int level, const char *msg)
{
    (void)user;
    (void)msg;
    if (level == MML_LOG_ERROR)
        log_calls++;
}

START_TEST(log_callback_receives_errors)
{
    mml_ctx_options o;
    mml_ctx_options_init(&o);
    o.log = count_log;
    mml_ctx *ctx = NULL;
    ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_OK);
    log_calls = 0;
    ck_assert_int_eq(mml_ctx_set_threads(ctx, 0), MML_EINVAL);
    ck_assert_int_eq(log_calls, 1);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(views_init)
{
    int32_t ids[4] = {0, 1, 2, 3}, dom[2] = {0, 1};
    float lab[2] = {0, 1};
    mml_batch_view b;
    mml_batch_view_init(&b, 2, 2, ids, 0, NULL, dom, lab);
    ck_assert_int_eq(b.ids_row_stride, 2);
    ck_assert_int_eq(b.n_rows, 2);
    ck_assert_ptr_eq(b.labels, lab);
    ck_assert_int_eq(b.struct_size, sizeof b);
    ck_assert_int_eq(mml_batch_view_init(NULL, 0, 0, NULL, 0, NULL, NULL, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_batch_view_init_sized(&b, 12, 0, 0, NULL, 0, NULL, NULL, NULL),
                     MML_EVERSION);
}
END_TEST

START_TEST(rng_streams_are_deterministic_and_distinct)
{
    mml_rng a, b, c;
    mml__rng_init(&a, 7, 3);
    mml__rng_init(&b, 7, 3);
    mml__rng_init(&c, 7, 4);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = mml__rng_next(&a), y = mml__rng_next(&b), z = mml__rng_next(&c);
        ck_assert_uint_eq(x, y);
        same_c += x == z;
    }
    ck_assert_int_lt(same_c, 2);
    /* Moments of the normal and uniform generators. */
    double s = 0, s2 = 0, u = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double v = mml__rng_normal(&a);
        s += v;
        s2 += v * v;
        float f = mml__rng_uniform(&a);
        ck_assert(f >= 0.0f && f < 1.0f);
        u += f;
        uint64_t k = mml__rng_below(&a, 7);
        ck_assert_uint_lt(k, 7);
    }
    ck_assert(fabs(s / n) < 0.01);
    ck_assert(fabs(s2 / n - 1.0) < 0.02);
    ck_assert(fabs(u / n - 0.5) < 0.01);
}
END_TEST

/* Naive reference: C = alpha op(A) op(B) + beta C with arbitrary strides. */
static void naive_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha,
                       const float *a, int64_t rsa, int64_t csa, const float *b, int64_t rsb,
                       int64_t csb, double beta, double *c)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t p = 0; p < k; p++) {
                double av = ta ? a[p * rsa + i * csa] : a[i * rsa + p * csa];
                double bv = tb ? b[j * rsb + p * csb] : b[p * rsb + j * csb];
                s += av * bv;
            }
            c[i * n + j] = alpha * s + beta * c[i * n + j];
        }
}

START_TEST(gemm_matches_naive_loop)
{
    static const int64_t shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 1, 9},   {1, 13, 4},
                                        {33, 29, 31}, {64, 65, 63}, {5, 7, 0}};
    uint32_t threads = (uint32_t)_i + 1;
    mml_ctx *ctx = plain_ctx(threads, 1);
    mml_rng rng;
    mml__rng_init(&rng, 99, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        for (int layout = 0; layout < 3; layout++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++) {
                    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
                    /* layout 0: row-major padded, 1: column-major padded, 2: general strides */
                    int64_t rsa, csa, rsb, csb, rsc, csc;
                    if (layout == 0) {
                        rsa = ac + 3; csa = 1; rsb = bc + 1; csb = 1; rsc = n + 2; csc = 1;
                    } else if (layout == 1) {
                        rsa = 1; csa = ar + 2; rsb = 1; csb = br + 5; rsc = 1; csc = m + 1;
                    } else {
                        rsa = 2 * (ac + 1); csa = 2; rsb = 3; csb = 3 * (br + 1);
                        rsc = 2 * (n + 1); csc = 2;
                    }
                    size_t asz = (size_t)((ar + 1) * rsa + (ac + 1) * csa + 1);
                    size_t bsz = (size_t)((br + 1) * rsb + (bc + 1) * csb + 1);
                    size_t csz = (size_t)((m + 1) * rsc + (n + 1) * csc + 1);
                    float *a = malloc(asz * sizeof *a), *b = malloc(bsz * sizeof *b);
                    float *c = malloc(csz * sizeof *c);
                    double *ref = malloc((size_t)(m * n + 1) * sizeof *ref);
                    for (size_t i = 0; i < asz; i++) a[i] = mml__rng_uniform(&rng) - 0.5f;
                    for (size_t i = 0; i < bsz; i++) b[i] = mml__rng_uniform(&rng) - 0.5f;
                    for (size_t i = 0; i < csz; i++) c[i] = mml__rng_uniform(&rng) - 0.5f;
                    for (int64_t i = 0; i < m; i++)
                        for (int64_t j = 0; j < n; j++) ref[i * n + j] = c[i * rsc + j * csc];
                    naive_gemm(ta, tb, m, n, k, 0.75, a, rsa, csa, b, rsb, csb, 0.5, ref);
                    ck_assert_int_eq(mml__gemm(ctx, ta, tb, m, n, k, 0.75f, a, rsa, csa, b, rsb,
                                               csb, 0.5f, c, rsc, csc),
                                     MML_OK);
                    for (int64_t i = 0; i < m; i++)
                        for (int64_t j = 0; j < n; j++)
                            ck_assert_msg(fabs(c[i * rsc + j * csc] - ref[i * n + j]) <
                                              1e-4 * (1 + (double)k),
                                          "shape %zu layout %d ta %d tb %d (%lld,%lld)", s,
                                          layout, ta, tb, (long long)i, (long long)j);
                    free(a); free(b); free(c); free(ref);
                }
    }
    mml_ctx_destroy(ctx);
}
END_TEST

/* The plain-loop path (at most 8 rows, or an inner dimension of at most 16
 * without B transposed): against the reference, for full and partial
 * column tiles, zeros in A (skipped), every beta; each row of C must not
 * depend on the other rows; beta 0 ignores what C held (NaN). */
START_TEST(gemm_small_path_matches_naive_loop)
{
    static const int64_t ms[] = {1, 2, 5, 8, 40};
    static const int64_t ns[] = {1, 15, 64, 65, 130, 300};
    static const int64_t ks[] = {1, 5, 16, 17, 300};
    static const float betas[] = {0.0f, 0.5f, 1.0f};
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_rng rng;
    mml__rng_init(&rng, 7, 0);
    for (size_t mi = 0; mi < 5; mi++)
        for (size_t ni = 0; ni < 6; ni++)
            for (size_t ki = 0; ki < 5; ki++)
                for (int tb = 0; tb < 2; tb++)
                    for (size_t bi = 0; bi < 3; bi++) {
                        int64_t m = ms[mi], n = ns[ni], k = ks[ki];
                        float alpha = bi == 1 ? 0.75f : 1.0f, beta = betas[bi];
                        int64_t rsa = k + 3, rsb = (tb ? k : n) + 1, rsc = n + 2;
                        /* An extra row, like gemm_matches_naive_loop: BLIS's kernels read
                         * past the end of a matrix. */
                        size_t asz = (size_t)((m + 1) * rsa), bsz = (size_t)(((tb ? n : k) + 1) * rsb);
                        size_t csz = (size_t)((m + 1) * rsc);
                        float *a = malloc(asz * sizeof *a), *b = malloc(bsz * sizeof *b);
                        float *c = malloc(csz * sizeof *c), *c1 = malloc((size_t)rsc * sizeof *c1);
                        double *ref = malloc((size_t)(m * n) * sizeof *ref);
                        for (size_t i = 0; i < asz; i++)
                            a[i] = mml__rng_uniform(&rng) < 0.3f ? 0.0f : mml__rng_uniform(&rng) - 0.5f;
                        for (size_t i = 0; i < bsz; i++) b[i] = mml__rng_uniform(&rng) - 0.5f;
                        for (size_t i = 0; i < csz; i++)
                            c[i] = beta == 0.0f ? NAN : mml__rng_uniform(&rng) - 0.5f;
                        for (int64_t i = 0; i < m; i++)
                            for (int64_t j = 0; j < n; j++)
                                ref[i * n + j] = beta == 0.0f ? 0.0 : c[i * rsc + j];
                        naive_gemm(0, tb, m, n, k, alpha, a, rsa, 1, b, rsb, 1, beta, ref);
                        float *c0 = malloc(csz * sizeof *c0);
                        memcpy(c0, c, csz * sizeof *c0);
                        ck_assert_int_eq(mml__gemm(ctx, 0, tb, m, n, k, alpha, a, rsa, 1, b, rsb, 1,
                                                   beta, c, rsc, 1),
                                         MML_OK);
                        for (int64_t i = 0; i < m; i++) {
                            for (int64_t j = 0; j < n; j++)
                                ck_assert_msg(fabs(c[i * rsc + j] - ref[i * n + j]) < 1e-5 * (1 + (double)k),
                                              "m %lld n %lld k %lld tb %d beta %g (%lld,%lld): %g vs %g",
                                              (long long)m, (long long)n, (long long)k, tb,
                                              (double)beta, (long long)i, (long long)j,
                                              (double)c[i * rsc + j], ref[i * n + j]);
                            /* The same row alone gives the same bits (when it takes the
                             * same path: a single row always does). */
                            if (m <= 8 || (k <= 16 && !tb)) {
                                memcpy(c1, c0 + i * rsc, (size_t)rsc * sizeof *c1);
                                ck_assert_int_eq(mml__gemm(ctx, 0, tb, 1, n, k, alpha, a + i * rsa,
                                                           rsa, 1, b, rsb, 1, beta, c1, rsc, 1),
                                                 MML_OK);
                                ck_assert(memcmp(c1, c + i * rsc, (size_t)n * sizeof *c1) == 0);
                            }
                        }
                        free(a); free(b); free(c); free(c0); free(c1); free(ref);
                    }
    mml_ctx_destroy(ctx);
}
END_TEST

/* The tower's layer epilogue against a plain loop, bit for bit: full and
 * partial 64-column tiles, odd and even row counts, both z sources or
 * either alone or neither, z2 shared by every row (stride 0), with and
 * without bias and ReLU, in place (y = p) and not. */
START_TEST(layer_epilogue_matches_plain_loop)
{
    static const int64_t ns[] = {1, 2, 3, 8, 33};
    static const int64_t ws[] = {1, 5, 63, 64, 65, 128, 200};
    static const int64_t k1s[] = {0, 1, 16, 34};
    static const int64_t k2s[] = {0, 1, 2};
    mml_rng rng;
    mml__rng_init(&rng, 11, 0);
    for (size_t ni = 0; ni < 5; ni++)
        for (size_t wi = 0; wi < 7; wi++)
            for (size_t k1i = 0; k1i < 4; k1i++)
                for (size_t k2i = 0; k2i < 3; k2i++)
                    for (int var = 0; var < 8; var++) {
                        int64_t n = ns[ni], w = ws[wi], k1 = k1s[k1i], k2 = k2s[k2i];
                        int use_bias = var & 1, relu = (var >> 1) & 1, shared_z2 = (var >> 2) & 1;
                        int inplace = (int)(ni + wi + k1i) % 2;
                        int64_t rsp = w + 3, rsy = inplace ? rsp : w + 1, rsz1 = k1 + 2;
                        int64_t rsz2 = shared_z2 ? 0 : k2 + 1, rsm1 = w + 5, rsm2 = w + 2;
                        size_t psz = (size_t)(n * rsp), ysz = (size_t)(n * rsy);
                        size_t z1sz = (size_t)(n * rsz1 + 1), z2sz = (size_t)(n * (k2 + 1) + 1);
                        size_t m1sz = (size_t)((k1 + 1) * rsm1), m2sz = (size_t)((k2 + 1) * rsm2);
                        float *p = malloc(psz * sizeof *p), *ref = malloc(ysz * sizeof *ref);
                        float *y = inplace ? p : malloc(ysz * sizeof *y);
                        float *bias = malloc((size_t)w * sizeof *bias);
                        float *z1 = malloc(z1sz * sizeof *z1), *z2 = malloc(z2sz * sizeof *z2);
                        float *m1 = malloc(m1sz * sizeof *m1), *m2 = malloc(m2sz * sizeof *m2);
                        float *bufs[] = {p, bias, z1, z2, m1, m2};
                        size_t sizes[] = {psz, (size_t)w, z1sz, z2sz, m1sz, m2sz};
                        for (int bi = 0; bi < 6; bi++)
                            for (size_t i = 0; i < sizes[bi]; i++)
                                bufs[bi][i] = 2.0f * mml__rng_uniform(&rng) - 1.0f;
                        for (int64_t i = 0; i < n; i++)
                            for (int64_t j = 0; j < w; j++) {
                                float acc = 0.0f;
                                for (int64_t q = 0; q < k1; q++)
                                    acc = fmaf(z1[i * rsz1 + q], m1[q * rsm1 + j], acc);
                                for (int64_t q = 0; q < k2; q++)
                                    acc = fmaf(z2[i * rsz2 + q], m2[q * rsm2 + j], acc);
                                float v = p[i * rsp + j];
                                if (use_bias)
                                    v = v + bias[j];
                                if (k1 + k2 > 0)
                                    v = v + acc;
                                ref[i * rsy + j] = relu ? (v > 0.0f ? v : 0.0f) : v;
                            }
                        mml__layer_epilogue(n, w, p, rsp, use_bias ? bias : NULL, z1, rsz1, k1, m1,
                                            rsm1, z2, rsz2, k2, m2, rsm2, y, rsy, relu);
                        for (int64_t i = 0; i < n; i++)
                            ck_assert_msg(memcmp(y + i * rsy, ref + i * rsy,
                                                 (size_t)w * sizeof *y) == 0,
                                          "n %lld w %lld k1 %lld k2 %lld var %d inplace %d row %lld",
                                          (long long)n, (long long)w, (long long)k1, (long long)k2,
                                          var, inplace, (long long)i);
                        if (!inplace)
                            free(y);
                        free(p); free(ref); free(bias); free(z1); free(z2); free(m1); free(m2);
                    }
}
END_TEST

START_TEST(gemm_rejects_bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    float a[16] = {0}, b[16] = {0}, c[16] = {0};
    ck_assert_int_eq(mml__gemm(ctx, 0, 0, -1, 2, 2, 1, a, 2, 1, b, 2, 1, 0, c, 2, 1), MML_ESHAPE);
    ck_assert_int_eq(mml__gemm(ctx, 0, 0, 2, 2, 2, 1, a, 1, 1, b, 2, 1, 0, c, 2, 1), MML_ESHAPE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "strides for A"));
    ck_assert_int_eq(mml__gemm(ctx, 0, 0, 2, 2, 2, 1, a, 2, 1, b, 0, 1, 0, c, 2, 1), MML_ESHAPE);
    ck_assert_int_eq(mml__gemm(ctx, 0, 0, 2, 3, 2, 1, a, 2, 1, b, 3, 1, 0, c, 2, 1), MML_ESHAPE);
    ck_assert_int_eq(mml__gemm(ctx, 0, 0, 2, 2, 2, 1, NULL, 2, 1, b, 2, 1, 0, c, 2, 1),
                     MML_EINVAL);
    ck_assert_int_eq(mml__gemm(ctx, 0, 0, 2, 2, 2, 1, a, 2, 1, b, 2, 1, 0, NULL, 2, 1),
                     MML_EINVAL);
    /* Empty products are fine; k = 0 scales C by beta. */
    ck_assert_int_eq(mml__gemm(ctx, 0, 0, 0, 2, 2, 1, NULL, 2, 1, NULL, 2, 1, 0, NULL, 2, 1),
                     MML_OK);
    c[0] = 4;
    ck_assert_int_eq(mml__gemm(ctx, 0, 0, 1, 1, 0, 1, NULL, 1, 1, NULL, 1, 1, 0.5f, c, 1, 1),
                     MML_OK);
    ck_assert(c[0] == 2.0f);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(gemm_threads_give_identical_results_per_count)
{
    /* The same thread count gives bitwise-identical products. */
    const int64_t m = 300, n = 200, k = 150;
    float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
    float *c1 = calloc((size_t)(m * n), sizeof(float)), *c2 = calloc((size_t)(m * n), sizeof(float));
    mml_rng rng;
    mml__rng_init(&rng, 5, 0);
    for (int64_t i = 0; i < m * k; i++) a[i] = mml__rng_uniform(&rng);
    for (int64_t i = 0; i < k * n; i++) b[i] = mml__rng_uniform(&rng);
    mml_ctx *ctx = plain_ctx(2, 1);
    ck_assert_int_eq(mml__gemm_rm(ctx, 0, 0, m, n, k, 1, a, b, 0, c1), MML_OK);
    ck_assert_int_eq(mml__gemm_rm(ctx, 0, 0, m, n, k, 1, a, b, 0, c2), MML_OK);
    ck_assert_int_eq(memcmp(c1, c2, sizeof(float) * m * n), 0);
    mml_ctx_destroy(ctx);
    free(a); free(b); free(c1); free(c2);
}
END_TEST

/* An application built against the 1.0 headers: its mml_ctx_options ends
 * before log_level (appended in 1.1). Its layout, written out by hand. */
typedef struct ctx_options_1_0 {
    uint32_t struct_size;
    uint32_t n_threads;
    uint64_t seed;
    const mml_allocator *allocator;
    mml_log_fn log;
    void *log_user;
} ctx_options_1_0;

static int info_lines;
static void count_info(void *user, int level, const char *message)
{
    (void)user;
    (void)message;
    info_lines += level == MML_LOG_INFO;
}

START_TEST(options_of_an_older_release_work)
{
    ck_assert_int_eq(sizeof(ctx_options_1_0), offsetof(mml_ctx_options, log_level));
    /* init writes exactly the older struct, not one byte past it. */
    unsigned char buf[sizeof(mml_ctx_options) + 16];
    memset(buf, 0xAB, sizeof buf);
    ck_assert_int_eq(mml_ctx_options_init_sized((mml_ctx_options *)(void *)buf,
                                                (uint32_t)sizeof(ctx_options_1_0)),
                     MML_OK);
    for (size_t i = sizeof(ctx_options_1_0); i < sizeof buf; i++)
        ck_assert_int_eq(buf[i], 0xAB);
    ctx_options_1_0 old;
    memcpy(&old, buf, sizeof old);
    ck_assert_int_eq(old.struct_size, sizeof old);
    ck_assert_int_eq(old.n_threads, 1);
    ck_assert_int_eq(old.seed, 1);
    /* The library reads the older struct and takes the default log level. */
    old.n_threads = 2;
    old.seed = 77;
    old.log = count_info;
    mml_ctx *ctx = NULL;
    ck_assert_int_eq(mml_ctx_create(&ctx, (const mml_ctx_options *)(const void *)&old), MML_OK);
    ck_assert_int_eq(mml_ctx_threads(ctx), 2);
    ck_assert_int_eq(mml_ctx_seed(ctx), 77);
    mml_ctx_destroy(ctx);
    /* Sizes that no release produced are refused, and init writes nothing. */
    static const uint32_t bad[] = {0, 4, sizeof(ctx_options_1_0) + 4, sizeof(mml_ctx_options) + 8};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(buf, 0xAB, sizeof buf);
        ck_assert_int_eq(mml_ctx_options_init_sized((mml_ctx_options *)(void *)buf, bad[i]),
                         MML_EVERSION);
        ck_assert_int_eq(buf[0], 0xAB);
        mml_ctx_options o;
        mml_ctx_options_init(&o);
        o.struct_size = bad[i];
        ctx = (mml_ctx *)&o;
        ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_EVERSION);
        ck_assert_ptr_null(ctx);
    }
}
END_TEST

START_TEST(log_level_filters_messages)
{
    mml_ctx_options o;
    mml_ctx_options_init(&o);
    ck_assert_int_eq(o.log_level, MML_LOG_INFO);
    o.log = count_log;
    o.log_level = MML_LOG_ERROR + 1;
    mml_ctx *ctx = NULL;
    ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_EINVAL);
    o.log_level = MML_LOG_ERROR;
    ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_OK);
    log_calls = 0;
    ck_assert_int_eq(mml_ctx_set_threads(ctx, 0), MML_EINVAL);
    ck_assert_int_eq(log_calls, 1);
    mml_ctx_destroy(ctx);
}
END_TEST

static Suite *core_suite(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("runtime");
    tcase_add_test(tc, version_matches_macros);
    tcase_add_test(tc, status_strings_are_distinct);
    tcase_add_test(tc, status_values_are_pinned);
    tcase_add_test(tc, ctx_defaults_and_setters);
    tcase_add_test(tc, ctx_bad_arguments);
    tcase_add_test(tc, ctx_create_fails_cleanly_at_every_allocation);
    tcase_add_test(tc, log_callback_receives_errors);
    tcase_add_test(tc, options_of_an_older_release_work);
    tcase_add_test(tc, log_level_filters_messages);
    tcase_add_test(tc, views_init);
    tcase_add_test(tc, rng_streams_are_deterministic_and_distinct);
    suite_add_tcase(s, tc);
    TCase *g = tcase_create("gemm");
    tcase_set_timeout(g, 60);
    tcase_add_loop_test(g, gemm_matches_naive_loop, 0, 2);
    tcase_add_test(g, gemm_small_path_matches_naive_loop);
    tcase_add_test(g, layer_epilogue_matches_plain_loop);
    tcase_add_test(g, gemm_rejects_bad_arguments);
    tcase_add_test(g, gemm_threads_give_identical_results_per_count);
    suite_add_tcase(s, g);
    return s;
}

int main(void) { return run_suite(core_suite()); }
