/* Optimisers: Adam against an independent double-precision reference, SGD,
 * freezing, reset, non-finite gradients, bad arguments, allocation failures. */
#include "testutil.h"

/* A parameter with its own buffers. */
typedef struct tparam {
    mml_param p;
    float value[32];
    float grad[32];
} tparam;

static void tparam_init(tparam *t, const char *name, int64_t rows, int64_t cols)
{
    memset(t, 0, sizeof *t);
    t->p.name = name;
    t->p.value = t->value;
    t->p.grad = t->grad;
    t->p.rows = rows;
    t->p.cols = cols;
    t->p.expert = -1;
}

/* Adam written from the paper's bias-corrected form, in double:
 * m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t), w -= lr m_hat / (sqrt(v_hat) + eps). */
typedef struct ref_adam {
    double w[32], m[32], v[32];
    int t;
} ref_adam;

static void ref_adam_step(ref_adam *r, const float *g, int n, double lr, double b1, double b2,
                          double eps)
{
    r->t++;
    for (int i = 0; i < n; i++) {
        r->m[i] = b1 * r->m[i] + (1 - b1) * g[i];
        r->v[i] = b2 * r->v[i] + (1 - b2) * (double)g[i] * g[i];
        double mhat = r->m[i] / (1 - pow(b1, r->t));
        double vhat = r->v[i] / (1 - pow(b2, r->t));
        r->w[i] -= lr * mhat / (sqrt(vhat) + eps);
    }
}

static mml_optimizer *make_opt(mml_ctx *ctx, int32_t kind, float lr, float b1, float b2,
                               float eps, mml_param **ps, int64_t n)
{
    mml_optimizer_options o;
    mml_optimizer_options_init(&o);
    o.kind = kind;
    o.lr = lr;
    o.beta1 = b1;
    o.beta2 = b2;
    o.eps = eps;
    mml_optimizer *opt = NULL;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, n), MML_OK);
    ck_assert_ptr_nonnull(opt);
    return opt;
}

START_TEST(options_defaults)
{
    mml_optimizer_options o;
    memset(&o, 0xff, sizeof o);
    mml_optimizer_options_init(&o);
    ck_assert_uint_eq(o.struct_size, sizeof o);
    ck_assert_int_eq(o.kind, MML_OPT_ADAM);
    ck_assert(o.lr == 1e-3f);
    ck_assert(o.beta1 == 0.9f);
    ck_assert(o.beta2 == 0.999f);
    ck_assert(o.eps == 1e-8f);
    mml_optimizer_options_init(NULL);
}
END_TEST

/* Three Adam steps on a 2 x 3 parameter against the double reference. The
 * elements cover: ordinary gradients, a sign change, a tiny gradient where
 * eps matters, a gradient only in step 1 (the element keeps moving by its
 * momentum: dense Adam), and a zero gradient (never moves). */
START_TEST(adam_matches_reference_for_three_steps)
{
    static const float w0[6] = {1.0f, -0.5f, 0.25f, 2.0f, 0.0f, -1.5f};
    static const float gs[3][6] = {
        {0.5f, -1.0f, 1e-7f, 3.0f, 0.0f, 0.2f},
        {0.25f, 2.0f, 1e-7f, 0.0f, 0.0f, -0.1f},
        {-0.75f, 0.5f, -2e-7f, 0.0f, 0.0f, 0.3f},
    };
    /* Default and non-default betas (swapping b1 and b2 would show). */
    static const float cfg[2][4] = {{0.1f, 0.9f, 0.999f, 1e-8f}, {0.05f, 0.8f, 0.99f, 1e-6f}};
    for (int c = 0; c < 2; c++) {
        mml_ctx *ctx = plain_ctx(1, 1);
        tparam tp;
        tparam_init(&tp, "w", 2, 3);
        memcpy(tp.value, w0, sizeof w0);
        mml_param *ps[1] = {&tp.p};
        float lr = cfg[c][0], b1 = cfg[c][1], b2 = cfg[c][2], eps = cfg[c][3];
        mml_optimizer *opt = make_opt(ctx, MML_OPT_ADAM, lr, b1, b2, eps, ps, 1);
        ref_adam r;
        memset(&r, 0, sizeof r);
        for (int i = 0; i < 6; i++)
            r.w[i] = w0[i];
        for (int s = 0; s < 3; s++) {
            memcpy(tp.grad, gs[s], sizeof gs[s]);
            ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
            ref_adam_step(&r, gs[s], 6, lr, b1, b2, eps);
            ck_assert_int_eq(mml_optimizer_steps(opt, 0), s + 1);
            const float *m = NULL, *v = NULL;
            ck_assert_int_eq(mml_optimizer_state(opt, 0, &m, &v), MML_OK);
            for (int i = 0; i < 6; i++) {
                ck_assert_msg(fabs(tp.value[i] - r.w[i]) <= 1e-6 * (1 + fabs(r.w[i])),
                              "cfg %d step %d elem %d: %.9g vs %.9g", c, s + 1, i,
                              (double)tp.value[i], r.w[i]);
                ck_assert(fabs(m[i] - r.m[i]) <= 1e-6 * fabs(r.m[i]) + 1e-12);
                ck_assert(fabs(v[i] - r.v[i]) <= 1e-5 * fabs(r.v[i]) + 1e-20);
            }
        }
        /* The momentum-only element moved in steps 2 and 3; the zero one never did. */
        ck_assert(tp.value[3] < 2.0f - 1.5f * lr);
        ck_assert(tp.value[4] == 0.0f);
        mml_optimizer_destroy(opt);
        mml_ctx_destroy(ctx);
    }
}
END_TEST

/* Step 1 of Adam moves every element with a nonzero gradient by about lr. */
START_TEST(adam_first_step_is_lr_sign_g)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    tparam tp;
    tparam_init(&tp, "w", 1, 20);
    for (int i = 0; i < 20; i++) {
        tp.value[i] = 0.0f;
        tp.grad[i] = (i % 2 ? -1.0f : 1.0f) * (float)(i + 1) * 0.37f;
    }
    mml_param *ps[1] = {&tp.p};
    mml_optimizer *opt = make_opt(ctx, MML_OPT_ADAM, 1e-2f, 0.9f, 0.999f, 1e-8f, ps, 1);
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    for (int i = 0; i < 20; i++)
        ck_assert_msg(fabs(tp.value[i] - (i % 2 ? 1e-2 : -1e-2)) < 1e-8, "elem %d: %.9g", i,
                      (double)tp.value[i]);
    mml_optimizer_destroy(opt);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(sgd_step)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    tparam a, b;
    tparam_init(&a, "a", 3, 7);
    tparam_init(&b, "b", 1, 1);
    for (int i = 0; i < 21; i++) {
        a.value[i] = 0.1f * (float)i - 1.0f;
        a.grad[i] = (float)(i % 5) - 2.0f;
    }
    b.value[0] = 4.0f;
    b.grad[0] = -8.0f;
    mml_param *ps[2] = {&a.p, &b.p};
    mml_optimizer *opt = make_opt(ctx, MML_OPT_SGD, 0.25f, 0.9f, 0.999f, 1e-8f, ps, 2);
    const float *m = (const float *)1, *v = (const float *)1;
    ck_assert_int_eq(mml_optimizer_state(opt, 1, &m, &v), MML_OK);
    ck_assert_ptr_null(m);
    ck_assert_ptr_null(v);
    for (int s = 1; s <= 2; s++) {
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
        for (int i = 0; i < 21; i++) {
            double expect = (0.1f * (float)i - 1.0f) - 0.25 * s * ((float)(i % 5) - 2.0f);
            ck_assert_msg(fabs(a.value[i] - expect) < 1e-6, "step %d elem %d", s, i);
        }
        ck_assert(b.value[0] == 4.0f + 2.0f * (float)s);
        ck_assert_int_eq(mml_optimizer_steps(opt, 0), s);
        ck_assert_int_eq(mml_optimizer_steps(opt, 1), s);
    }
    mml_optimizer_destroy(opt);
    mml_ctx_destroy(ctx);
}
END_TEST

/* Deterministic pseudo-gradients for step s, element i of parameter k. */
static float grad_at(int k, int s, int i)
{
    return (float)sin(0.7 * (k + 1) + 1.3 * s + 0.29 * i) * (float)(1 + k);
}

START_TEST(frozen_params_stay_bit_identical_and_resume_their_own_count)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    tparam a, b;
    tparam_init(&a, "moving", 2, 5);
    tparam_init(&b, "frozen", 3, 4);
    for (int i = 0; i < 12; i++)
        b.value[i] = 0.1f * (float)i;
    mml_param *ps[2] = {&a.p, &b.p};
    mml_optimizer *opt = make_opt(ctx, MML_OPT_ADAM, 1e-2f, 0.9f, 0.999f, 1e-8f, ps, 2);
    /* b's history: 3 steps, then frozen, then 1 more: replayed below on its own. */
    float bgrads[4][12];
    int s = 0;
    for (; s < 3; s++) {
        for (int i = 0; i < 10; i++)
            a.grad[i] = grad_at(0, s, i);
        for (int i = 0; i < 12; i++)
            b.grad[i] = bgrads[s][i] = grad_at(1, s, i);
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    }
    b.p.frozen = 1;
    float bval[12], bm[12], bv[12];
    const float *m, *v;
    ck_assert_int_eq(mml_optimizer_state(opt, 1, &m, &v), MML_OK);
    memcpy(bval, b.value, sizeof bval);
    memcpy(bm, m, sizeof bm);
    memcpy(bv, v, sizeof bv);
    float aval[10];
    memcpy(aval, a.value, sizeof aval);
    for (; s < 53; s++) {
        for (int i = 0; i < 10; i++)
            a.grad[i] = grad_at(0, s, i);
        for (int i = 0; i < 12; i++)
            b.grad[i] = grad_at(1, s, i) * 100.0f;
        b.grad[5] = NAN; /* a frozen parameter's gradient is not even looked at */
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    }
    ck_assert_int_eq(memcmp(bval, b.value, sizeof bval), 0);
    ck_assert_int_eq(memcmp(bm, m, sizeof bm), 0);
    ck_assert_int_eq(memcmp(bv, v, sizeof bv), 0);
    ck_assert_int_eq(mml_optimizer_steps(opt, 1), 3);
    ck_assert_int_eq(mml_optimizer_steps(opt, 0), 53);
    ck_assert_int_ne(memcmp(aval, a.value, sizeof aval), 0);

    /* Unfrozen: b continues with t = 4, exactly like a fresh optimiser that
     * saw only b's four steps. */
    b.p.frozen = 0;
    for (int i = 0; i < 12; i++)
        b.grad[i] = bgrads[3][i] = grad_at(1, 99, i);
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    ck_assert_int_eq(mml_optimizer_steps(opt, 1), 4);

    tparam c;
    tparam_init(&c, "replay", 3, 4);
    for (int i = 0; i < 12; i++)
        c.value[i] = 0.1f * (float)i;
    mml_param *pc[1] = {&c.p};
    mml_optimizer *solo = make_opt(ctx, MML_OPT_ADAM, 1e-2f, 0.9f, 0.999f, 1e-8f, pc, 1);
    for (int k = 0; k < 4; k++) {
        memcpy(c.grad, bgrads[k], sizeof bgrads[k]);
        ck_assert_int_eq(mml_optimizer_step(solo), MML_OK);
    }
    ck_assert_int_eq(memcmp(c.value, b.value, sizeof bval), 0);
    const float *cm, *cv;
    ck_assert_int_eq(mml_optimizer_state(solo, 0, &cm, &cv), MML_OK);
    ck_assert_int_eq(memcmp(cm, m, sizeof bm), 0);
    ck_assert_int_eq(memcmp(cv, v, sizeof bv), 0);
    mml_optimizer_destroy(solo);
    mml_optimizer_destroy(opt);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(frozen_sgd_param_untouched)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    tparam a;
    tparam_init(&a, "a", 1, 3);
    a.value[0] = 1.0f;
    a.grad[0] = 1.0f;
    a.p.frozen = 1;
    mml_param *ps[1] = {&a.p};
    mml_optimizer *opt = make_opt(ctx, MML_OPT_SGD, 0.5f, 0.9f, 0.999f, 1e-8f, ps, 1);
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    ck_assert(a.value[0] == 1.0f);
    ck_assert_int_eq(mml_optimizer_steps(opt, 0), 0);
    mml_optimizer_destroy(opt);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(reset_gives_fresh_state)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    tparam a, c;
    tparam_init(&a, "a", 4, 4);
    tparam_init(&c, "c", 4, 4);
    mml_param *pa[1] = {&a.p}, *pc[1] = {&c.p};
    mml_optimizer *opt = make_opt(ctx, MML_OPT_ADAM, 1e-2f, 0.9f, 0.999f, 1e-8f, pa, 1);
    for (int s = 0; s < 5; s++) {
        for (int i = 0; i < 16; i++)
            a.grad[i] = grad_at(0, s, i);
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    }
    ck_assert_int_eq(mml_optimizer_reset(opt), MML_OK);
    ck_assert_int_eq(mml_optimizer_steps(opt, 0), 0);
    const float *m, *v;
    ck_assert_int_eq(mml_optimizer_state(opt, 0, &m, &v), MML_OK);
    for (int i = 0; i < 16; i++)
        ck_assert(m[i] == 0.0f && v[i] == 0.0f);
    /* The next step equals a fresh optimiser's first step from the same values. */
    memcpy(c.value, a.value, sizeof c.value);
    mml_optimizer *fresh = make_opt(ctx, MML_OPT_ADAM, 1e-2f, 0.9f, 0.999f, 1e-8f, pc, 1);
    for (int i = 0; i < 16; i++)
        a.grad[i] = c.grad[i] = grad_at(2, 0, i);
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    ck_assert_int_eq(mml_optimizer_step(fresh), MML_OK);
    ck_assert_int_eq(memcmp(a.value, c.value, sizeof a.value), 0);
    ck_assert_int_eq(mml_optimizer_steps(opt, 0), 1);
    mml_optimizer_destroy(fresh);
    mml_optimizer_destroy(opt);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(nonfinite_gradient_changes_nothing)
{
    static const float bad[2] = {NAN, INFINITY};
    for (int k = 0; k < 2; k++) {
        mml_ctx *ctx = plain_ctx(1, 1);
        tparam a, b;
        tparam_init(&a, "first", 2, 2);
        tparam_init(&b, "second.W", 5, 5);
        for (int i = 0; i < 4; i++)
            a.grad[i] = 1.0f;
        for (int i = 0; i < 25; i++)
            b.grad[i] = 0.5f;
        mml_param *ps[2] = {&a.p, &b.p};
        mml_optimizer *opt = make_opt(ctx, MML_OPT_ADAM, 1e-2f, 0.9f, 0.999f, 1e-8f, ps, 2);
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
        float av[4], bv[25], am[4];
        const float *m;
        ck_assert_int_eq(mml_optimizer_state(opt, 0, &m, NULL), MML_OK);
        memcpy(av, a.value, sizeof av);
        memcpy(bv, b.value, sizeof bv);
        memcpy(am, m, sizeof am);
        b.grad[17] = k ? -bad[k] : bad[k];
        ck_assert_int_eq(mml_optimizer_step(opt), MML_ENONFINITE);
        const char *msg = mml_ctx_last_error(ctx);
        ck_assert_ptr_nonnull(strstr(msg, "second.W"));
        ck_assert_ptr_nonnull(strstr(msg, "17"));
        ck_assert_int_eq(memcmp(av, a.value, sizeof av), 0);
        ck_assert_int_eq(memcmp(bv, b.value, sizeof bv), 0);
        ck_assert_int_eq(memcmp(am, m, sizeof am), 0);
        ck_assert_int_eq(mml_optimizer_steps(opt, 0), 1);
        ck_assert_int_eq(mml_optimizer_steps(opt, 1), 1);
        b.grad[17] = 0.0f;
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
        ck_assert_int_eq(mml_optimizer_steps(opt, 0), 2);
        mml_optimizer_destroy(opt);
        mml_ctx_destroy(ctx);
    }
}
END_TEST

/* A long parameter: the vector body and the remainder loop agree with a
 * scalar evaluation of the same float operations. */
START_TEST(long_param_blocks_and_tail_agree)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    enum { N = 1000 + 13 };
    float *w = malloc(N * sizeof *w), *g = malloc(N * sizeof *g);
    float *rw = malloc(N * sizeof *rw), *rm = calloc(N, sizeof *rm), *rv = calloc(N, sizeof *rv);
    for (int i = 0; i < N; i++) {
        w[i] = rw[i] = (float)cos(0.01 * i);
        g[i] = (float)sin(0.37 * i);
    }
    mml_param p = {"long", w, g, 1, N, MML_GROUP_EMBEDDING, -1, 0, 0};
    mml_param *ps[1] = {&p};
    mml_optimizer *opt = make_opt(ctx, MML_OPT_ADAM, 1e-3f, 0.9f, 0.999f, 1e-8f, ps, 1);
    for (int t = 1; t <= 3; t++) {
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
        double bc1 = 1 - pow(0.9f, t), bc2 = 1 - pow(0.999f, t);
        float step = (float)(1e-3f / bc1), bc2s = (float)sqrt(bc2);
        float omb1 = (float)(1.0 - 0.9f), omb2 = (float)(1.0 - 0.999f);
        for (int i = 0; i < N; i++) {
            float mi = 0.9f * rm[i] + omb1 * g[i];
            float vi = 0.999f * rv[i] + omb2 * g[i] * g[i];
            rm[i] = mi;
            rv[i] = vi;
            float den = sqrtf(vi) / bc2s + 1e-8f;
            rw[i] -= step * mi / den;
        }
    }
    for (int i = 0; i < N; i++)
        ck_assert_msg(fabsf(w[i] - rw[i]) <= 1e-6f, "elem %d", i);
    mml_optimizer_destroy(opt);
    mml_ctx_destroy(ctx);
    free(w); free(g); free(rw); free(rm); free(rv);
}
END_TEST

START_TEST(bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    tparam a, b;
    tparam_init(&a, "a", 2, 2);
    tparam_init(&b, "b", 1, 3);
    mml_param *ps[2] = {&a.p, &b.p};
    mml_optimizer_options o;
    mml_optimizer_options_init(&o);
    mml_optimizer *opt = (mml_optimizer *)1;

    ck_assert_int_eq(mml_optimizer_create(NULL, ctx, &o, ps, 2), MML_EINVAL);
    ck_assert_int_eq(mml_optimizer_create(&opt, NULL, &o, ps, 2), MML_EINVAL);
    ck_assert_ptr_null(opt);
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, NULL, 2), MML_EINVAL);
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 0), MML_EINVAL);
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, -1), MML_EINVAL);
    mml_param *withnull[2] = {&a.p, NULL};
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, withnull, 2), MML_EINVAL);
    mml_param *dup[2] = {&a.p, &a.p};
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, dup, 2), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "same"));
    b.p.value = a.value; /* two structs over one buffer */
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_EINVAL);
    b.p.value = NULL;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "'b'"));
    b.p.value = b.value;
    b.p.grad = NULL;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_EINVAL);
    b.p.grad = b.value;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_EINVAL);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "same buffer"));
    b.p.grad = b.grad;
    b.p.rows = 0;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_ESHAPE);
    b.p.rows = 1;
    b.p.cols = -3;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_ESHAPE);
    b.p.cols = INT64_MAX / 2;
    b.p.rows = 4;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_ESHAPE);
    b.p.rows = 1;
    b.p.cols = 3;

    static const struct { int field; float value; } bad_opts[] = {
        {0, 0.0f},  {0, -1e-3f}, {0, NAN},    {0, INFINITY}, {1, 1.0f},    {1, -0.1f},
        {1, NAN},   {2, 1.0f},   {2, 1.5f},   {2, NAN},      {3, 0.0f},    {3, -1e-8f},
        {3, NAN},   {3, INFINITY},
    };
    for (size_t k = 0; k < sizeof bad_opts / sizeof bad_opts[0]; k++) {
        mml_optimizer_options_init(&o);
        float *f = bad_opts[k].field == 0 ? &o.lr
                   : bad_opts[k].field == 1 ? &o.beta1
                   : bad_opts[k].field == 2 ? &o.beta2
                                            : &o.eps;
        *f = bad_opts[k].value;
        opt = (mml_optimizer *)1;
        ck_assert_msg(mml_optimizer_create(&opt, ctx, &o, ps, 2) == MML_EINVAL, "case %zu", k);
        ck_assert_ptr_null(opt);
    }
    mml_optimizer_options_init(&o);
    o.kind = 4; /* 2 and 3 are lazy Adam and Adagrad (test_extras.c) */
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_EINVAL);
    o.kind = -1;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_EINVAL);
    mml_optimizer_options_init(&o);
    o.struct_size = 0;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_EVERSION);
    o.struct_size = sizeof o + 4;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_EVERSION);
    /* beta = 0 is allowed; an older, shorter struct takes the defaults for the rest. */
    mml_optimizer_options_init(&o);
    o.beta1 = 0.0f;
    o.beta2 = 0.0f;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_OK);
    mml_optimizer_destroy(opt);
    mml_optimizer_options_init(&o);
    o.kind = MML_OPT_SGD;
    o.struct_size = (uint32_t)(sizeof o.struct_size + sizeof o.kind); /* no release's size */
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_EVERSION);
    mml_optimizer_options_init(&o);
    o.kind = MML_OPT_SGD;
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 2), MML_OK);
    a.grad[0] = 1.0f;
    a.value[0] = 0.0f;
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    ck_assert(a.value[0] == -1e-3f); /* SGD with the default lr */
    mml_optimizer_destroy(opt);
    ck_assert_int_eq(mml_optimizer_create(&opt, ctx, NULL, ps, 2), MML_OK);

    /* Other entry points. */
    ck_assert_int_eq(mml_optimizer_step(NULL), MML_EINVAL);
    ck_assert_int_eq(mml_optimizer_reset(NULL), MML_EINVAL);
    ck_assert_int_eq(mml_optimizer_steps(NULL, 0), -1);
    ck_assert_int_eq(mml_optimizer_steps(opt, -1), -1);
    ck_assert_int_eq(mml_optimizer_steps(opt, 2), -1);
    ck_assert_int_eq(mml_optimizer_steps(opt, 1), 0);
    const float *m = NULL, *v = NULL;
    ck_assert_int_eq(mml_optimizer_state(NULL, 0, &m, &v), MML_EINVAL);
    ck_assert_int_eq(mml_optimizer_state(opt, 2, &m, &v), MML_ERANGE);
    ck_assert_int_eq(mml_optimizer_state(opt, -1, &m, &v), MML_ERANGE);
    ck_assert_int_eq(mml_optimizer_state(opt, 1, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_optimizer_state(opt, 1, &m, &v), MML_OK);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(v);
    /* A parameter that changed shape or lost a buffer after creation. */
    b.p.cols = 2;
    ck_assert_int_eq(mml_optimizer_step(opt), MML_ESHAPE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "'b'"));
    b.p.cols = 3;
    b.p.grad = NULL;
    ck_assert_int_eq(mml_optimizer_step(opt), MML_ESHAPE);
    b.p.frozen = 1; /* frozen: not looked at */
    ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
    b.p.grad = b.grad;
    mml_optimizer_destroy(opt);
    mml_optimizer_destroy(NULL);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(create_fails_cleanly_at_every_allocation)
{
    tparam a, b, c;
    tparam_init(&a, "a", 2, 3);
    tparam_init(&b, "b", 1, 17);
    tparam_init(&c, "c", 4, 4);
    mml_param *ps[3] = {&a.p, &b.p, &c.p};
    for (int32_t kind = MML_OPT_SGD; kind <= MML_OPT_ADAM; kind++) {
        mml_optimizer_options o;
        mml_optimizer_options_init(&o);
        o.kind = kind;
        counting_allocator al;
        mml_ctx *ctx = counting_ctx(&al, 0, 1, 1);
        ck_assert_ptr_nonnull(ctx);
        long base_calls = al.calls, base_live = al.live;
        mml_optimizer *opt = NULL;
        ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 3), MML_OK);
        long total = al.calls - base_calls;
        ck_assert_int_eq(mml_optimizer_step(opt), MML_OK);
        mml_optimizer_destroy(opt);
        ck_assert_int_eq(al.live, base_live);
        ck_assert_int_eq(total, kind == MML_OPT_ADAM ? 3 : 2);
        for (long n = 1; n <= total; n++) {
            al.fail_at = al.calls + n;
            opt = (mml_optimizer *)1;
            ck_assert_int_eq(mml_optimizer_create(&opt, ctx, &o, ps, 3), MML_ENOMEM);
            ck_assert_ptr_null(opt);
            ck_assert_int_eq(al.live, base_live);
            ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "memory"));
        }
        al.fail_at = 0;
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(al.live, 0);
        ck_assert_int_eq(al.live_bytes, 0);
    }
}
END_TEST

static Suite *optimizer_suite(void)
{
    Suite *s = suite_create("optimizer");
    TCase *tc = tcase_create("optimizer");
    tcase_add_test(tc, options_defaults);
    tcase_add_test(tc, adam_matches_reference_for_three_steps);
    tcase_add_test(tc, adam_first_step_is_lr_sign_g);
    tcase_add_test(tc, sgd_step);
    tcase_add_test(tc, frozen_params_stay_bit_identical_and_resume_their_own_count);
    tcase_add_test(tc, frozen_sgd_param_untouched);
    tcase_add_test(tc, reset_gives_fresh_state);
    tcase_add_test(tc, nonfinite_gradient_changes_nothing);
    tcase_add_test(tc, long_param_blocks_and_tail_agree);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, create_fails_cleanly_at_every_allocation);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(optimizer_suite()); }
