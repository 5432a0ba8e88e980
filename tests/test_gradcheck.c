/* The finite-difference gradient checker on small functions with known
 * gradients: pass, deliberate failures, kinks, sampling, the random
 * direction, callback errors, bad arguments, allocation failures. */
#include "testutil.h"

/* loss = sum_i c_i x_i^2 + sum_j s_j relu(y_j) + x_0 y_1, over x (1 x 5) and
 * y (2 x 3). The pattern is the bitmask of y_j > 0. */
enum { NX = 5, NY = 6 };
static const double C[NX] = {1.0, 2.0, 0.5, 3.0, 1.5};
static const double S[NY] = {1.5, -2.0, 0.5, 1.0, 3.0, -1.0};
static const float X0[NX] = {0.5f, -1.2f, 0.8f, 2.0f, -0.3f};
static const float Y0[NY] = {0.7f, -0.4f, 1.1f, -2.0f, 0.9f, 0.3f};

typedef struct fn {
    float x[NX], xg[NX], y[NY], yg[NY];
    mml_param px, py;
    mml_param *ps[2];
    int use_pattern;
    /* A deliberate error: grad of (wrong_param, wrong_index) += wrong_delta. */
    int wrong_param, wrong_index;
    float wrong_delta;
    int wrong2_param, wrong2_index;
    float wrong2_delta;
    int grad_rc;
    long loss_calls, grad_calls;
    long loss_fail_call; /* 1-based loss call that fails; 0 = never */
    int loss_fail_rc;    /* returned then; 0 = return a NaN loss instead */
    /* Which coordinates were perturbed alone (counts per coordinate). */
    float base_x[NX], base_y[NY];
    int hits_x[NX], hits_y[NY];
} fn;

static void fn_init(fn *f)
{
    memset(f, 0, sizeof *f);
    memcpy(f->x, X0, sizeof X0);
    memcpy(f->y, Y0, sizeof Y0);
    memcpy(f->base_x, X0, sizeof X0);
    memcpy(f->base_y, Y0, sizeof Y0);
    f->px = (mml_param){"x", f->x, f->xg, 1, NX, MML_GROUP_BACKBONE, -1, 0, 0};
    f->py = (mml_param){"tower.y", f->y, f->yg, 2, 3, MML_GROUP_EXPERT, 0, 0, 0};
    f->ps[0] = &f->px;
    f->ps[1] = &f->py;
    f->use_pattern = 1;
    f->wrong_param = f->wrong2_param = -1;
}

static int fn_grad(void *u)
{
    fn *f = u;
    f->grad_calls++;
    if (f->grad_rc)
        return f->grad_rc;
    for (int i = 0; i < NX; i++)
        f->xg[i] = (float)(2.0 * C[i] * f->x[i]);
    for (int j = 0; j < NY; j++)
        f->yg[j] = f->y[j] > 0.0f ? (float)S[j] : 0.0f;
    f->xg[0] += f->y[1];
    f->yg[1] += f->x[0];
    float *g[2] = {f->xg, f->yg};
    if (f->wrong_param >= 0)
        g[f->wrong_param][f->wrong_index] += f->wrong_delta;
    if (f->wrong2_param >= 0)
        g[f->wrong2_param][f->wrong2_index] += f->wrong2_delta;
    return 0;
}

static int fn_loss(void *u, double *loss, uint64_t *pattern)
{
    fn *f = u;
    f->loss_calls++;
    if (f->loss_fail_call && f->loss_calls == f->loss_fail_call) {
        if (f->loss_fail_rc)
            return f->loss_fail_rc;
        *loss = NAN;
        return 0;
    }
    double l = 0;
    uint64_t pat = 0;
    for (int i = 0; i < NX; i++)
        l += C[i] * (double)f->x[i] * f->x[i];
    for (int j = 0; j < NY; j++)
        if (f->y[j] > 0.0f) {
            l += S[j] * f->y[j];
            pat |= 1u << j;
        }
    l += (double)f->x[0] * f->y[1];
    *loss = l;
    *pattern = f->use_pattern ? pat : 0;
    /* Record a coordinate perturbed on its own. */
    int moved = 0, mx = -1, my = -1;
    for (int i = 0; i < NX; i++)
        if (f->x[i] != f->base_x[i]) {
            moved++;
            mx = i;
        }
    for (int j = 0; j < NY; j++)
        if (f->y[j] != f->base_y[j]) {
            moved++;
            my = j;
        }
    if (moved == 1) {
        if (mx >= 0)
            f->hits_x[mx]++;
        else
            f->hits_y[my]++;
    }
    return 0;
}

static void assert_values_restored(const fn *f)
{
    ck_assert_int_eq(memcmp(f->x, f->base_x, sizeof f->x), 0);
    ck_assert_int_eq(memcmp(f->y, f->base_y, sizeof f->y), 0);
}

START_TEST(options_defaults)
{
    mml_gradcheck_options o;
    memset(&o, 0xff, sizeof o);
    mml_gradcheck_options_init(&o);
    ck_assert_uint_eq(o.struct_size, sizeof o);
    ck_assert(o.step == 1e-3 && o.rtol == 1e-2 && o.atol == 1e-5);
    ck_assert_int_eq(o.max_coords_per_param, 0);
    ck_assert_uint_eq(o.seed, 1);
    ck_assert_int_eq(o.random_direction, 1);
    mml_gradcheck_options_init(NULL);
}
END_TEST

START_TEST(correct_gradient_passes)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    fn f;
    fn_init(&f);
    f.py.frozen = 1; /* frozen parameters are checked too */
    mml_gradcheck_report r;
    ck_assert_int_eq(mml_gradcheck(ctx, NULL, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_OK);
    ck_assert_int_eq(r.checked, NX + NY);
    ck_assert_int_eq(r.skipped_kinks, 0);
    ck_assert_int_eq(r.failed, 0);
    ck_assert(r.worst_excess < 0);
    ck_assert(r.worst_param >= 0 && r.worst_index >= 0);
    ck_assert_int_eq(r.direction_checked, 1);
    ck_assert_int_eq(r.direction_ok, 1);
    ck_assert(fabs(r.direction_analytic) > 0.1);
    ck_assert(fabs(r.direction_analytic - r.direction_numeric) <
              1e-4 * fabs(r.direction_analytic));
    ck_assert_int_eq(f.grad_calls, 1);
    ck_assert_int_eq(f.loss_calls, 1 + 2 * (NX + NY) + 2);
    for (int i = 0; i < NX; i++)
        ck_assert_int_eq(f.hits_x[i], 2);
    for (int j = 0; j < NY; j++)
        ck_assert_int_eq(f.hits_y[j], 2);
    assert_values_restored(&f);
    /* The grad buffers keep the analytic gradient. */
    ck_assert(f.xg[3] == 12.0f);
    /* Without the direction: two calls fewer. */
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.random_direction = 0;
    f.loss_calls = 0;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_OK);
    ck_assert_int_eq(r.direction_checked, 0);
    ck_assert_int_eq(f.loss_calls, 1 + 2 * (NX + NY));
    /* The report is optional. */
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, NULL), MML_OK);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(wrong_gradient_fails_and_is_located)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    fn f;
    fn_init(&f);
    f.wrong_param = 0;
    f.wrong_index = 3;
    f.wrong_delta = 0.5f; /* 12.5 instead of 12 */
    mml_gradcheck_report r;
    ck_assert_int_eq(mml_gradcheck(ctx, NULL, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EGRADIENT);
    ck_assert_int_eq(r.failed, 1);
    ck_assert_int_eq(r.checked, NX + NY);
    ck_assert_int_eq(r.worst_param, 0);
    ck_assert_int_eq(r.worst_index, 3);
    ck_assert(fabs(r.worst_analytic - 12.5) < 1e-6);
    ck_assert(fabs(r.worst_numeric - 12.0) < 1e-4);
    ck_assert(r.worst_excess > 0.3 && r.worst_excess < 0.4);
    const char *msg = mml_ctx_last_error(ctx);
    ck_assert_ptr_nonnull(strstr(msg, "'x'"));
    ck_assert_ptr_nonnull(strstr(msg, "index 3"));
    ck_assert_ptr_nonnull(strstr(msg, "12.5"));
    assert_values_restored(&f);

    /* In the second parameter, and with a smaller second error elsewhere:
     * both count, the worst is named. */
    fn_init(&f);
    f.wrong_param = 1;
    f.wrong_index = 5; /* y[1][2] */
    f.wrong_delta = -0.3f;
    f.wrong2_param = 0;
    f.wrong2_index = 1;
    f.wrong2_delta = 0.1f;
    ck_assert_int_eq(mml_gradcheck(ctx, NULL, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EGRADIENT);
    ck_assert_int_eq(r.failed, 2);
    ck_assert_int_eq(r.worst_param, 1);
    ck_assert_int_eq(r.worst_index, 5);
    ck_assert(fabs(r.worst_numeric - S[5]) < 1e-6);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "'tower.y'"));
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "index 5"));
    assert_values_restored(&f);

    /* An error within the tolerance passes; one just outside fails. */
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.random_direction = 0;
    fn_init(&f);
    f.wrong_param = 0;
    f.wrong_index = 3;
    /* The tolerance scales with the larger of |a| and |n|, on either side. */
    f.wrong_delta = 0.121f; /* 0.121 <= 0.01 * 12.121 + 1e-5, > 0.01 * 12 + 1e-5 */
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_OK);
    ck_assert(r.worst_excess < 0 && r.worst_excess > -1e-3 && r.worst_index == 3);
    f.wrong_delta = -0.119f; /* 0.119 <= 0.01 * 12 + 1e-5, > 0.01 * 11.881 + 1e-5 */
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_OK);
    ck_assert(r.worst_excess < 0 && r.worst_excess > -2e-3 && r.worst_index == 3);
    f.wrong_delta = 0.15f;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EGRADIENT);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(kinks_are_skipped_and_counted)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    fn f;
    fn_init(&f);
    f.y[2] = f.base_y[2] = 2e-4f; /* within h = 1e-3 of the ReLU kink */
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.random_direction = 0;
    mml_gradcheck_report r;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_OK);
    ck_assert_int_eq(r.skipped_kinks, 1);
    ck_assert_int_eq(r.checked, NX + NY - 1);
    ck_assert_int_eq(r.failed, 0);
    assert_values_restored(&f);
    /* Without a pattern the same coordinate is a (false) failure. */
    f.use_pattern = 0;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EGRADIENT);
    ck_assert_int_eq(r.skipped_kinks, 0);
    ck_assert_int_eq(r.failed, 1);
    ck_assert_int_eq(r.worst_param, 1);
    ck_assert_int_eq(r.worst_index, 2);
    ck_assert(fabs(r.worst_numeric - 0.5 * (2e-4 + 1e-3) / 2e-3) < 1e-4);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(sampling_checks_k_distinct_coordinates)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.random_direction = 0;
    o.max_coords_per_param = 2;
    int sets[4][NX + NY];
    for (int s = 0; s < 4; s++) {
        fn f;
        fn_init(&f);
        o.seed = (uint64_t)(s < 2 ? 7 : 100 + s);
        mml_gradcheck_report r;
        ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_OK);
        ck_assert_int_eq(r.checked, 4);
        ck_assert_int_eq(f.loss_calls, 1 + 2 * 4);
        int nx = 0, ny = 0;
        for (int i = 0; i < NX; i++) {
            ck_assert(f.hits_x[i] == 0 || f.hits_x[i] == 2);
            nx += f.hits_x[i] / 2;
            sets[s][i] = f.hits_x[i];
        }
        for (int j = 0; j < NY; j++) {
            ck_assert(f.hits_y[j] == 0 || f.hits_y[j] == 2);
            ny += f.hits_y[j] / 2;
            sets[s][NX + j] = f.hits_y[j];
        }
        ck_assert_int_eq(nx, 2);
        ck_assert_int_eq(ny, 2);
    }
    /* The same seed gives the same sample; other seeds give other samples. */
    ck_assert_int_eq(memcmp(sets[0], sets[1], sizeof sets[0]), 0);
    ck_assert(memcmp(sets[0], sets[2], sizeof sets[0]) != 0 ||
              memcmp(sets[0], sets[3], sizeof sets[0]) != 0);
    /* A sample at least as large as the parameter checks all of it. */
    fn f;
    fn_init(&f);
    o.max_coords_per_param = NY;
    mml_gradcheck_report r;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_OK);
    ck_assert_int_eq(r.checked, NX + NY);
    mml_ctx_destroy(ctx);
}
END_TEST

/* The sample can miss a wrong coordinate; the random direction still sees it. */
START_TEST(random_direction_catches_what_the_sample_missed)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.max_coords_per_param = 1;
    int caught = 0;
    for (uint64_t seed = 1; seed <= 10 && !caught; seed++) {
        fn f;
        fn_init(&f);
        f.wrong_param = 0;
        f.wrong_index = 3;
        f.wrong_delta = 6.0f;
        o.seed = seed;
        mml_gradcheck_report r;
        int rc = mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r);
        ck_assert_int_eq(r.direction_checked, 1);
        if (r.failed == 0 && !r.direction_ok) {
            ck_assert_int_eq(rc, MML_EGRADIENT);
            ck_assert_int_eq(f.hits_x[3], 0);
            ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "direction"));
            caught = 1;
        }
        assert_values_restored(&f);
    }
    ck_assert(caught);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(random_direction_across_a_kink_is_skipped)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    fn f;
    fn_init(&f);
    f.y[4] = f.base_y[4] = 1e-6f;
    mml_gradcheck_report r;
    ck_assert_int_eq(mml_gradcheck(ctx, NULL, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_OK);
    ck_assert_int_eq(r.direction_checked, 0);
    ck_assert_int_eq(r.direction_ok, 0);
    ck_assert_int_eq(r.skipped_kinks, 1);
    assert_values_restored(&f);
    mml_ctx_destroy(ctx);
}
END_TEST

/* A value so large that x +- h rounds back to x: the checker steps by one
 * float spacing instead and divides by the actual difference. */
static int big_grad(void *u)
{
    mml_param *p = u;
    p->grad[0] = (float)(2.0 * 3.0 * p->value[0]);
    p->grad[1] = 1.0f;
    return 0;
}

static int big_loss(void *u, double *loss, uint64_t *pattern)
{
    mml_param *p = u;
    (void)pattern;
    *loss = 3.0 * (double)p->value[0] * p->value[0] + p->value[1];
    return 0;
}

START_TEST(large_values_use_the_float_spacing)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    float v[2] = {1e6f, 1e9f}, g[2]; /* float spacings 0.0625 and 64 */
    mml_param p = {"big", v, g, 1, 2, MML_GROUP_BACKBONE, -1, 0, 0};
    mml_param *ps[1] = {&p};
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.random_direction = 0;
    mml_gradcheck_report r;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, ps, 1, big_grad, big_loss, &p, &r), MML_OK);
    ck_assert_int_eq(r.checked, 2);
    ck_assert(v[0] == 1e6f && v[1] == 1e9f);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(callback_errors_are_passed_on)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    fn f;
    fn_init(&f);
    f.grad_rc = -3;
    mml_gradcheck_report r;
    ck_assert_int_eq(mml_gradcheck(ctx, NULL, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_ECALLBACK);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "-3"));
    ck_assert_int_eq(f.loss_calls, 0);
    assert_values_restored(&f);
    /* The loss fails at the start, mid-way (a coordinate is perturbed), and
     * along the direction (every value is moved): values come back exactly. */
    static const long fail_calls[] = {1, 6, 7, 1 + 2 * (NX + NY) + 1, 1 + 2 * (NX + NY) + 2};
    for (size_t k = 0; k < sizeof fail_calls / sizeof fail_calls[0]; k++) {
        for (int nan = 0; nan < 2; nan++) {
            fn_init(&f);
            f.loss_fail_call = fail_calls[k];
            f.loss_fail_rc = nan ? 0 : -7;
            int rc = mml_gradcheck(ctx, NULL, f.ps, 2, fn_grad, fn_loss, &f, &r);
            ck_assert_int_eq(rc, nan ? MML_ENONFINITE : MML_ECALLBACK);
            if (!nan)
                ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "-7"));
            ck_assert_int_eq(f.loss_calls, fail_calls[k]);
            assert_values_restored(&f);
        }
    }
    /* The coordinate being perturbed is named. */
    fn_init(&f);
    f.loss_fail_call = 1 + 2 * NX + 4; /* the - side of y[1] */
    f.loss_fail_rc = -9;
    ck_assert_int_eq(mml_gradcheck(ctx, NULL, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_ECALLBACK);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "'tower.y' index 1"));
    ck_assert_int_eq(r.checked, NX + 1);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    fn f;
    fn_init(&f);
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    mml_gradcheck_report r;
    ck_assert_int_eq(mml_gradcheck(NULL, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    ck_assert_int_eq(r.worst_param, -1);
    ck_assert_int_eq(mml_gradcheck(ctx, &o, NULL, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 0, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, NULL, fn_loss, &f, &r), MML_EINVAL);
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, NULL, &f, &r), MML_EINVAL);
    mml_param *withnull[2] = {&f.px, NULL};
    ck_assert_int_eq(mml_gradcheck(ctx, &o, withnull, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    mml_param *dup[2] = {&f.px, &f.px};
    ck_assert_int_eq(mml_gradcheck(ctx, &o, dup, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    f.py.value = NULL;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "'tower.y'"));
    f.py.value = f.y;
    f.py.grad = NULL;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    f.py.grad = f.yg;
    f.py.rows = 0;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_ESHAPE);
    f.py.rows = INT64_MAX / 2;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_ESHAPE);
    f.py.rows = 2;
    f.py.cols = -1;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_ESHAPE);
    f.py.cols = 3;

    static const double bad_steps[] = {0.0, -1e-3, NAN, INFINITY};
    for (size_t k = 0; k < 4; k++) {
        mml_gradcheck_options_init(&o);
        o.step = bad_steps[k];
        ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
        mml_gradcheck_options_init(&o);
        o.rtol = k ? bad_steps[k] : -1.0;
        ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
        mml_gradcheck_options_init(&o);
        o.atol = k ? bad_steps[k] : -1.0;
        ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    }
    mml_gradcheck_options_init(&o);
    o.max_coords_per_param = -1;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    mml_gradcheck_options_init(&o);
    o.random_direction = 2;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    mml_gradcheck_options_init(&o);
    o.struct_size = 0;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EVERSION);
    o.struct_size = sizeof o + 8;
    ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EVERSION);
    /* rtol = atol = 0 is allowed (exact agreement only). */
    mml_gradcheck_options_init(&o);
    o.rtol = 0;
    o.atol = 0;
    o.random_direction = 0;
    ck_assert_int_ne(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r), MML_EINVAL);
    /* None of the failing calls evaluated anything or moved a value. */
    ck_assert_int_eq(f.grad_calls, 1);
    assert_values_restored(&f);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(fails_cleanly_at_every_allocation)
{
    for (int32_t dir = 0; dir <= 1; dir++) {
        counting_allocator al;
        mml_ctx *ctx = counting_ctx(&al, 0, 1, 1);
        ck_assert_ptr_nonnull(ctx);
        long base_calls = al.calls, base_live = al.live;
        mml_gradcheck_options o;
        mml_gradcheck_options_init(&o);
        o.random_direction = dir;
        fn f;
        fn_init(&f);
        ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, NULL), MML_OK);
        long total = al.calls - base_calls;
        ck_assert_int_eq(total, 2 + dir);
        ck_assert_int_eq(al.live, base_live);
        for (long n = 1; n <= total; n++) {
            al.fail_at = al.calls + n;
            fn_init(&f);
            mml_gradcheck_report r;
            ck_assert_int_eq(mml_gradcheck(ctx, &o, f.ps, 2, fn_grad, fn_loss, &f, &r),
                             MML_ENOMEM);
            ck_assert_int_eq(al.live, base_live);
            ck_assert_int_eq(r.checked, 0);
            assert_values_restored(&f);
        }
        al.fail_at = 0;
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(al.live, 0);
        ck_assert_int_eq(al.live_bytes, 0);
    }
}
END_TEST

static Suite *gradcheck_suite(void)
{
    Suite *s = suite_create("gradcheck");
    TCase *tc = tcase_create("gradcheck");
    tcase_add_test(tc, options_defaults);
    tcase_add_test(tc, correct_gradient_passes);
    tcase_add_test(tc, wrong_gradient_fails_and_is_located);
    tcase_add_test(tc, kinks_are_skipped_and_counted);
    tcase_add_test(tc, sampling_checks_k_distinct_coordinates);
    tcase_add_test(tc, random_direction_catches_what_the_sample_missed);
    tcase_add_test(tc, random_direction_across_a_kink_is_skipped);
    tcase_add_test(tc, large_values_use_the_float_spacing);
    tcase_add_test(tc, callback_errors_are_passed_on);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, fails_cleanly_at_every_allocation);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(gradcheck_suite()); }
