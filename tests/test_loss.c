/* Binary cross-entropy on logits and the sigmoid. */
#include "testutil.h"

/* softplus(x) = log(1 + e^x), evaluated so that neither branch overflows. */
static double ref_softplus(double x) { return x > 0 ? x + log(1 + exp(-x)) : log(1 + exp(x)); }

/* Per-row loss: -log sigmoid(z) for y = 1, -log(1 - sigmoid(z)) for y = 0. */
static double ref_bce_row(double z, double y)
{
    return y == 1.0 ? ref_softplus(-z) : ref_softplus(z);
}

/* The textbook formula, fine where sigmoid(z) stays away from 0 and 1. */
static double direct_bce_row(double z, double y)
{
    double p = 1.0 / (1.0 + exp(-z));
    return -(y * log(p) + (1 - y) * log(1 - p));
}

START_TEST(sigmoid_values)
{
    ck_assert(mml_sigmoid(0.0f) == 0.5f);
    ck_assert(mml_sigmoid(100.0f) == 1.0f);
    ck_assert(mml_sigmoid(1e4f) == 1.0f);
    ck_assert(mml_sigmoid(-1e4f) == 0.0f);
    ck_assert(mml_sigmoid(INFINITY) == 1.0f);
    ck_assert(mml_sigmoid(-INFINITY) == 0.0f);
    /* exp(-100) ~ 3.7e-44 is a float subnormal: no overflow, no 0/0. */
    float s = mml_sigmoid(-100.0f);
    ck_assert(s > 0.0f && fabs(s - exp(-100.0)) < 1e-45);
    for (int i = -400; i <= 400; i++) {
        float z = 0.05f * (float)i;
        double ref = 1.0 / (1.0 + exp(-(double)z));
        ck_assert_msg(fabs(mml_sigmoid(z) - ref) <= 2e-7 * ref, "z = %g", (double)z);
    }
}
END_TEST

START_TEST(sigmoid_array_matches_scalar)
{
    float z[37], out[37];
    for (int i = 0; i < 37; i++)
        z[i] = (float)(i - 18) * 1.7f;
    mml_sigmoid_array(z, out, 37);
    for (int i = 0; i < 37; i++)
        ck_assert(out[i] == mml_sigmoid(z[i]));
    mml_sigmoid_array(z, z, 37); /* in place */
    ck_assert_int_eq(memcmp(z, out, sizeof z), 0);
    mml_sigmoid_array(NULL, out, 3);
    mml_sigmoid_array(z, NULL, 3);
    out[0] = 42.0f;
    mml_sigmoid_array(z, out, 0);
    mml_sigmoid_array(z, out, -2);
    ck_assert(out[0] == 42.0f);
}
END_TEST

static void check_bce(mml_ctx *ctx, const float *z, const float *y, const float *w, int n)
{
    double sw = 0, sl = 0;
    for (int i = 0; i < n; i++) {
        double wi = w ? w[i] : 1.0;
        sw += wi;
        sl += wi * ref_bce_row(z[i], y[i]);
    }
    double loss = -1;
    float d[16];
    for (int i = 0; i < n; i++)
        d[i] = 123.0f; /* must be overwritten, not added to */
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, w, n, &loss, d), MML_OK);
    ck_assert_msg(fabs(loss - sl / sw) <= 1e-12 * fabs(sl / sw) + 1e-300, "loss %.17g vs %.17g",
                  loss, sl / sw);
    for (int i = 0; i < n; i++) {
        double wi = w ? w[i] : 1.0;
        double p = 1.0 / (1.0 + exp(-(double)z[i]));
        double ref = wi * (p - y[i]) / sw;
        /* For y = 1 and a large logit the true value is tiny, not 0. */
        if (y[i] == 1.0f && z[i] > 30.0f)
            ref = -wi * exp(-(double)z[i]) / sw;
        ck_assert_msg(fabs(d[i] - ref) <= 1e-6 * fabs(ref) + 1e-45, "row %d: %.9g vs %.9g", i,
                      (double)d[i], ref);
    }
}

START_TEST(bce_matches_reference)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    /* Moderate logits: also against the textbook formula. */
    float z[8] = {0.0f, 1.5f, -2.25f, 7.0f, -0.3f, 12.0f, -15.0f, 3.0f};
    float y[8] = {1, 0, 0, 1, 1, 0, 1, 0};
    double direct = 0;
    for (int i = 0; i < 8; i++)
        direct += direct_bce_row(z[i], y[i]);
    double loss = 0;
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, NULL, 8, &loss, NULL), MML_OK);
    ck_assert(fabs(loss - direct / 8) < 1e-10); /* the textbook form loses ~1e-11 at z = 12 */
    check_bce(ctx, z, y, NULL, 8);
    /* Single rows with known values. */
    float one_z = 0.0f, one_y = 1.0f;
    ck_assert_int_eq(mml_bce_with_logits(ctx, &one_z, &one_y, NULL, 1, &loss, NULL), MML_OK);
    ck_assert(fabs(loss - log(2.0)) < 1e-15);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(bce_extreme_logits)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    float z[8] = {100.0f, -100.0f, 1e4f, -1e4f, 100.0f, -100.0f, 1e4f, -1e4f};
    float y[8] = {0, 1, 0, 1, 1, 0, 1, 0};
    /* Wrong-side rows cost |z| (plus log1p(e^-|z|)), right-side rows ~e^-|z|. */
    static const double expect[8] = {100.0, 100.0, 1e4, 1e4, 3.720075976020836e-44,
                                     3.720075976020836e-44, 0.0, 0.0};
    float d;
    for (int i = 0; i < 8; i++) {
        double loss = -1;
        ck_assert_int_eq(mml_bce_with_logits(ctx, &z[i], &y[i], NULL, 1, &loss, &d), MML_OK);
        ck_assert_msg(fabs(loss - expect[i]) <= 1e-15 * expect[i] + 1e-60, "row %d: %.17g", i,
                      loss);
        ck_assert(isfinite(d));
    }
    check_bce(ctx, z, y, NULL, 8);
    double loss;
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, NULL, 8, &loss, NULL), MML_OK);
    ck_assert(fabs(loss - (200.0 + 2e4) / 8) < 1e-9);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(bce_weights)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    float z[6] = {0.5f, -1.0f, 2.0f, 100.0f, -3.0f, 0.0f};
    float y[6] = {1, 0, 0, 0, 1, 1};
    float w[6] = {1.0f, 0.5f, 2.0f, 0.0f, 3.0f, 0.25f};
    check_bce(ctx, z, y, w, 6);
    /* The zero-weight row neither counts nor gets a gradient. */
    double loss;
    float d[6];
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, w, 6, &loss, d), MML_OK);
    ck_assert(d[3] == 0.0f);
    /* Uniform weights equal no weights. */
    float u[6] = {2, 2, 2, 2, 2, 2};
    double lu, ln;
    float du[6], dn[6];
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, u, 6, &lu, du), MML_OK);
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, NULL, 6, &ln, dn), MML_OK);
    ck_assert(fabs(lu - ln) < 1e-14);
    for (int i = 0; i < 6; i++)
        ck_assert(fabsf(du[i] - dn[i]) <= 1e-7f * fabsf(dn[i]));
    /* Outputs are optional. */
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, w, 6, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, w, 6, NULL, d), MML_OK);
    mml_ctx_destroy(ctx);
}
END_TEST

/* The gradient of the BCE, checked by the library's own checker. */
typedef struct bce_user {
    mml_ctx *ctx;
    mml_param *p;
    const float *y, *w;
    int64_t n;
} bce_user;

static int bce_grad(void *u)
{
    bce_user *b = u;
    return mml_bce_with_logits(b->ctx, b->p->value, b->y, b->w, b->n, NULL, b->p->grad);
}

static int bce_loss(void *u, double *loss, uint64_t *pattern)
{
    bce_user *b = u;
    *pattern = 0;
    return mml_bce_with_logits(b->ctx, b->p->value, b->y, b->w, b->n, loss, NULL);
}

START_TEST(bce_gradient_passes_gradcheck)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    enum { N = 12 };
    float z[N], g[N], y[N], w[N];
    for (int i = 0; i < N; i++) {
        z[i] = (float)(i - 6) * 0.9f;
        y[i] = (float)(i % 3 == 0);
        w[i] = 0.25f + (float)(i % 4);
    }
    mml_param p = {"logits", z, g, 1, N, MML_GROUP_BACKBONE, -1, 0, 0};
    mml_param *ps[1] = {&p};
    for (int weighted = 0; weighted < 2; weighted++) {
        bce_user u = {ctx, &p, y, weighted ? w : NULL, N};
        mml_gradcheck_options o;
        mml_gradcheck_options_init(&o);
        o.rtol = 1e-4;
        o.atol = 1e-7;
        mml_gradcheck_report r;
        ck_assert_int_eq(mml_gradcheck(ctx, &o, ps, 1, bce_grad, bce_loss, &u, &r), MML_OK);
        ck_assert_int_eq(r.checked, N);
        ck_assert_int_eq(r.failed, 0);
        ck_assert_int_eq(r.direction_checked, 1);
        ck_assert_int_eq(r.direction_ok, 1);
    }
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(bce_bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    float z[4] = {0.1f, -0.2f, 0.3f, 0.4f}, y[4] = {0, 1, 1, 0}, w[4] = {1, 1, 1, 1};
    double loss = 7.0;
    float d[4] = {9, 9, 9, 9};
    ck_assert_int_eq(mml_bce_with_logits(NULL, z, y, NULL, 4, &loss, d), MML_EINVAL);
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, NULL, 0, &loss, d), MML_ESHAPE);
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, NULL, -3, &loss, d), MML_ESHAPE);
    ck_assert_int_eq(mml_bce_with_logits(ctx, NULL, y, NULL, 4, &loss, d), MML_EINVAL);
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, NULL, NULL, 4, &loss, d), MML_EINVAL);

    static const float bad_labels[] = {0.5f, -1.0f, 2.0f, NAN, INFINITY};
    for (size_t k = 0; k < sizeof bad_labels / sizeof bad_labels[0]; k++) {
        y[2] = bad_labels[k];
        ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, NULL, 4, &loss, d), MML_EINVAL);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "row 2"));
    }
    y[2] = 1;
    static const float bad_logits[] = {NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < 3; k++) {
        z[3] = bad_logits[k];
        ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, NULL, 4, &loss, d), MML_ENONFINITE);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "row 3"));
    }
    z[3] = 0.4f;
    static const float bad_weights[] = {-1.0f, -1e-30f, NAN, INFINITY};
    for (size_t k = 0; k < 4; k++) {
        w[1] = bad_weights[k];
        ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, w, 4, &loss, d), MML_EINVAL);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "row 1"));
    }
    float zero[4] = {0, 0, 0, 0};
    ck_assert_int_eq(mml_bce_with_logits(ctx, z, y, zero, 4, &loss, d), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "sum to 0"));
    /* Nothing was written by any failing call. */
    ck_assert(loss == 7.0);
    for (int i = 0; i < 4; i++)
        ck_assert(d[i] == 9.0f);
    mml_ctx_destroy(ctx);
}
END_TEST

static Suite *loss_suite(void)
{
    Suite *s = suite_create("loss");
    TCase *tc = tcase_create("loss");
    tcase_add_test(tc, sigmoid_values);
    tcase_add_test(tc, sigmoid_array_matches_scalar);
    tcase_add_test(tc, bce_matches_reference);
    tcase_add_test(tc, bce_extreme_logits);
    tcase_add_test(tc, bce_weights);
    tcase_add_test(tc, bce_gradient_passes_gradcheck);
    tcase_add_test(tc, bce_bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(loss_suite()); }
