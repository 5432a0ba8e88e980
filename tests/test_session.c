/* Read-only models and per-thread sessions. */
#include <pthread.h>

#include "testutil.h"

static const char *const backbones[9] = {"mlp", "wdl", "deepfm", "nfm", "pnn",
                                         "dcn", "autoint", "xdeepfm", "fibinet"};
static const int64_t field_sizes[3] = {50, 30, 7};
static const int64_t mh_sizes[1] = {20};

#ifndef MML_TSAN_ONLY
/* ---- a registered user backbone: a linear logit over [e, numeric] that
 * keeps its input as scratch ---- */

typedef struct lin {
    mml_ctx *ctx;
    int32_t width, n_dense;
    mml_param w;
    float *x;
    int64_t cap;
    int64_t n;
} lin;

static void lin_destroy(void *self)
{
    lin *t = self;
    mml_ctx_free(t->ctx, t->w.value, sizeof(float) * (size_t)t->width);
    mml_ctx_free(t->ctx, t->w.grad, sizeof(float) * (size_t)t->width);
    mml_ctx_free(t->ctx, t->x, sizeof(float) * (size_t)(t->cap * t->width));
    mml_ctx_free(t->ctx, t, sizeof *t);
}

static int lin_create(void *user, mml_ctx *ctx, const mml_backbone_config *c, void **self)
{
    (void)user;
    lin *t = mml_ctx_alloc(ctx, sizeof *t);
    if (!t)
        return MML_ENOMEM;
    memset(t, 0, sizeof *t);
    t->ctx = ctx;
    t->width = c->n_fields * c->embed_dim + c->n_dense;
    t->n_dense = c->n_dense;
    t->w.name = "lin.w";
    t->w.rows = 1;
    t->w.cols = t->width;
    t->w.group = MML_GROUP_BACKBONE;
    t->w.expert = -1;
    t->w.value = mml_ctx_alloc(ctx, sizeof(float) * (size_t)t->width);
    t->w.grad = mml_ctx_alloc(ctx, sizeof(float) * (size_t)t->width);
    if (!t->w.value || !t->w.grad) {
        lin_destroy(t);
        return MML_ENOMEM;
    }
    for (int32_t i = 0; i < t->width; i++) {
        t->w.value[i] = 0.1f * (float)((i % 7) - 3);
        t->w.grad[i] = 0.0f;
    }
    *self = t;
    return MML_OK;
}

static int lin_forward(void *self, const mml_backbone_input *in, float *logit)
{
    lin *t = self;
    if (in->n_rows > t->cap) {
        float *x = mml_ctx_alloc(t->ctx, sizeof(float) * (size_t)(in->n_rows * t->width));
        if (!x)
            return MML_ENOMEM;
        mml_ctx_free(t->ctx, t->x, sizeof(float) * (size_t)(t->cap * t->width));
        t->x = x;
        t->cap = in->n_rows;
    }
    int32_t dn = in->dense ? t->n_dense : 0, fk = t->width - t->n_dense;
    for (int64_t r = 0; r < in->n_rows; r++) {
        float *x = t->x + r * t->width;
        memcpy(x, in->emb + r * fk, sizeof(float) * (size_t)fk);
        if (dn)
            memcpy(x + fk, in->dense + r * dn, sizeof(float) * (size_t)dn);
        float v = 0.0f;
        for (int32_t i = 0; i < t->width; i++)
            v += x[i] * t->w.value[i];
        logit[r] = v;
    }
    t->n = in->n_rows;
    return MML_OK;
}

static int lin_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    lin *t = self;
    (void)g;
    for (int64_t r = 0; r < t->n; r++)
        for (int32_t i = 0; i < t->width; i++)
            t->w.grad[i] += dlogit[r] * t->x[r * t->width + i];
    return MML_OK;
}

static int64_t lin_n_params(void *self)
{
    (void)self;
    return 1;
}

static mml_param *lin_param(void *self, int64_t i) { return i == 0 ? &((lin *)self)->w : NULL; }

static void register_lin(mml_ctx *ctx)
{
    mml_backbone_vtable vt;
    memset(&vt, 0, sizeof vt);
    vt.struct_size = sizeof vt;
    vt.abi_version = MML_BACKBONE_ABI_VERSION;
    vt.type_name = "lin";
    vt.create = lin_create;
    vt.destroy = lin_destroy;
    vt.forward = lin_forward;
    vt.backward = lin_backward;
    vt.n_params = lin_n_params;
    vt.param = lin_param;
    ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_OK);
}

#endif

/* ---- models and batches ---- */

/* variant 0: shared model; 1: MLoRA (E = D); 2: MoE-MLoRA (E = 2 D, gate). */
static mml_model *make_model(mml_ctx *ctx, const char *backbone, int variant, int32_t n_dense,
                             int32_t n_mh)
{
    static const int32_t hidden[2] = {32, 16};
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = 3;
    o.field_sizes = field_sizes;
    o.backbone = backbone;
    o.embed_dim = 4;
    o.embed_std = 0.3f;
    o.n_dense = n_dense;
    o.n_domains = 2;
    o.n_experts = variant == 0 ? 0 : variant == 1 ? 2 : 4;
    o.gate = variant == 2;
    o.n_hidden = 2;
    o.hidden = hidden;
    o.alpha = 4;
    o.n_multihot = n_mh;
    o.multihot_sizes = n_mh ? mh_sizes : NULL;
    mml_model *m = NULL;
    int rc = mml_model_create(&m, ctx, &o);
    ck_assert_msg(rc == MML_OK, "%s: %s", backbone, mml_ctx_last_error(ctx));
    /* Every weight moved off its init, so experts (B = 0) and biases count. */
    uint64_t h = 12345;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        for (int64_t j = 0; j < p->rows * p->cols; j++) {
            h = h * 6364136223846793005ull + 1442695040888963407ull;
            p->value[j] += 0.2f * ((float)(h >> 40) / 16777216.0f - 0.5f);
        }
    }
    return m;
}

typedef struct batch {
    int64_t n;
    int32_t *ids, *dom, *mhid;
    float *dense;
    int64_t *off;
    const int64_t *offp[1];
    const int32_t *idp[1];
    mml_batch_view v;
} batch;

static void make_batch(batch *b, int64_t n, int32_t n_dense, int32_t n_mh, uint64_t seed)
{
    memset(b, 0, sizeof *b);
    b->n = n;
    b->ids = malloc(sizeof(int32_t) * (size_t)(3 * n));
    b->dom = malloc(sizeof(int32_t) * (size_t)n);
    b->dense = malloc(sizeof(float) * (size_t)(n * (n_dense ? n_dense : 1)));
    b->off = malloc(sizeof(int64_t) * (size_t)(n + 1));
    b->mhid = malloc(sizeof(int32_t) * (size_t)(4 * n + 1));
    uint64_t h = seed * 2654435761u + 1;
#define NEXT() (h = h * 6364136223846793005ull + 1442695040888963407ull, (uint32_t)(h >> 33))
    b->off[0] = 0;
    for (int64_t r = 0; r < n; r++) {
        for (int f = 0; f < 3; f++)
            b->ids[r * 3 + f] = (int32_t)(NEXT() % (uint32_t)field_sizes[f]);
        b->dom[r] = (int32_t)(NEXT() % 2);
        for (int j = 0; j < n_dense; j++)
            b->dense[r * n_dense + j] = (float)(NEXT() % 1000) / 500.0f - 1.0f;
        int64_t len = NEXT() % 5;
        for (int64_t i = 0; i < len; i++)
            b->mhid[b->off[r] + i] = (int32_t)(NEXT() % (uint32_t)mh_sizes[0]);
        b->off[r + 1] = b->off[r] + len;
    }
#undef NEXT
    mml_batch_view_init(&b->v, n, 3, b->ids, n_dense, n_dense ? b->dense : NULL, b->dom, NULL);
    if (n_mh) {
        b->offp[0] = b->off;
        b->idp[0] = b->mhid;
        b->v.n_multihot = 1;
        b->v.multihot_offsets = b->offp;
        b->v.multihot_ids = b->idp;
    }
}

static void free_batch(batch *b)
{
    free(b->ids);
    free(b->dom);
    free(b->dense);
    free(b->off);
    free(b->mhid);
}

#ifndef MML_TSAN_ONLY
static mml_session *make_session(mml_ctx *ctx, const mml_model *m, int64_t rows, int64_t mh)
{
    mml_session_options so;
    mml_session_options_init(&so);
    so.max_rows = rows;
    so.max_multihot_ids = mh;
    mml_session *s = NULL;
    int rc = mml_session_create(&s, ctx, m, &so);
    ck_assert_msg(rc == MML_OK, "session_create: %d %s", rc, mml_ctx_last_error(ctx));
    return s;
}

#endif

static int same_bits(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, sizeof(float) * (size_t)n) == 0;
}

#ifndef MML_TSAN_ONLY
/* ---- session == mml_model_predict, bitwise ---- */

START_TEST(session_equals_model_predict)
{
    const char *bb = backbones[_i / 3];
    int variant = _i % 3;
    mml_ctx *mctx = plain_ctx(1, 7), *sctx = plain_ctx(1, 99);
    mml_model *m = make_model(mctx, bb, variant, 2, 1);
    ck_assert_int_eq(mml_model_mix_mode(m), variant == 0 ? MML_MIX_NONE
                                            : variant == 1 ? MML_MIX_DOMAIN
                                                           : MML_MIX_GATED);
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    mml_session *s = make_session(sctx, m, 512, 4 * 512);
    static const int64_t sizes[] = {1, 2, 5, 8, 9, 37, 300};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        batch b;
        make_batch(&b, sizes[t], 2, 1, t + 1);
        float *p1 = malloc(sizeof(float) * (size_t)b.n), *p2 = malloc(sizeof(float) * (size_t)b.n);
        int32_t *st = malloc(sizeof(int32_t) * (size_t)b.n);
        ck_assert_int_eq(mml_model_predict(m, &b.v, mml_model_mix_mode(m), 0, p1), MML_OK);
        ck_assert_int_eq(mml_session_predict(s, &b.v, p2, st), MML_OK);
        ck_assert_msg(same_bits(p1, p2, b.n), "%s variant %d, %lld rows", bb, variant,
                      (long long)b.n);
        for (int64_t r = 0; r < b.n; r++) {
            ck_assert_int_eq(st[r], MML_OK);
            ck_assert(p2[r] > 0.0f && p2[r] < 1.0f);
        }
        free(p1);
        free(p2);
        free(st);
        free_batch(&b);
    }
    mml_session_destroy(s);
    mml_model_destroy(m);
    mml_ctx_destroy(sctx);
    mml_ctx_destroy(mctx);
}
END_TEST

/* The experts matter: a session in another mode gives other numbers, and
 * each mode equals the model's in that mode. */
START_TEST(session_modes)
{
    mml_ctx *ctx = plain_ctx(1, 3);
    mml_model *m = make_model(ctx, "mlp", 2, 0, 0);
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    batch b;
    make_batch(&b, 20, 0, 0, 5);
    float ref[20], got[20], gated[20];
    static const int32_t modes[] = {MML_MIX_NONE, MML_MIX_DOMAIN, MML_MIX_OWN, MML_MIX_GATED};
    for (int i = 0; i < 4; i++) {
        mml_session_options so;
        mml_session_options_init(&so);
        so.mix_mode = modes[i];
        so.max_rows = 32;
        mml_session *s = NULL;
        ck_assert_int_eq(mml_session_create(&s, ctx, m, &so), MML_OK);
        ck_assert_int_eq(mml_session_predict(s, &b.v, got, NULL), MML_OK);
        ck_assert_int_eq(mml_model_predict(m, &b.v, modes[i], 0, ref), MML_OK);
        for (int r = 0; r < 20; r++)
            ck_assert_msg(memcmp(&ref[r], &got[r], sizeof(float)) == 0, "mode %d row %d: %.9g %.9g",
                          modes[i], r, (double)ref[r], (double)got[r]);
        if (modes[i] == MML_MIX_GATED)
            memcpy(gated, got, sizeof gated);
        mml_session_destroy(s);
    }
    ck_assert_int_eq(mml_model_predict(m, &b.v, MML_MIX_NONE, 0, ref), MML_OK);
    ck_assert(!same_bits(ref, gated, 20));
    /* The model's final mode is the default. */
    ck_assert_int_eq(mml_model_set_mix_mode(m, MML_MIX_OWN), MML_OK);
    ck_assert_int_eq(mml_model_mix_mode(m), MML_MIX_OWN);
    mml_session *s = make_session(ctx, m, 20, 0); /* one chunk: the model's batch */
    ck_assert_int_eq(mml_session_predict(s, &b.v, got, NULL), MML_OK);
    ck_assert_int_eq(mml_model_predict(m, &b.v, MML_MIX_OWN, 0, ref), MML_OK);
    ck_assert(same_bits(ref, got, 20));
    mml_session_destroy(s);
    free_batch(&b);
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(set_mix_mode_validates)
{
    mml_ctx *ctx = plain_ctx(1, 3);
    mml_model *base = make_model(ctx, "mlp", 0, 0, 0), *mlora = make_model(ctx, "mlp", 1, 0, 0);
    ck_assert_int_eq(mml_model_set_mix_mode(base, MML_MIX_GATED), MML_ESTATE);
    ck_assert_int_eq(mml_model_set_mix_mode(base, MML_MIX_DOMAIN), MML_ESTATE);
    ck_assert_int_eq(mml_model_set_mix_mode(mlora, MML_MIX_GATED), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "gate"));
    ck_assert_int_eq(mml_model_set_mix_mode(mlora, MML_MIX_SINGLE), MML_EINVAL);
    ck_assert_int_eq(mml_model_set_mix_mode(mlora, 17), MML_EINVAL);
    ck_assert_int_eq(mml_model_set_mix_mode(mlora, -1), MML_EINVAL);
    ck_assert_int_eq(mml_model_set_mix_mode(NULL, MML_MIX_NONE), MML_EINVAL);
    ck_assert_int_eq(mml_model_mix_mode(mlora), MML_MIX_DOMAIN);
    ck_assert_int_eq(mml_model_set_mix_mode(mlora, MML_MIX_NONE), MML_OK);
    ck_assert_int_eq(mml_model_mix_mode(mlora), MML_MIX_NONE);
    ck_assert_int_eq(mml_model_mix_mode(NULL), MML_MIX_NONE);
    mml_model_destroy(base);
    mml_model_destroy(mlora);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---- a registered user backbone: a private instance with copied values ---- */

START_TEST(session_custom_backbone)
{
    mml_ctx *mctx = plain_ctx(1, 7), *sctx = plain_ctx(1, 8);
    register_lin(mctx);
    register_lin(sctx);
    mml_model *m = make_model(mctx, "lin", 0, 2, 0);
    mml_param *w = mml_backbone_param(mml_model_backbone(m), 0);
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    ck_assert_ptr_nonnull(w->grad); /* a user backbone keeps its own */
    ck_assert_ptr_null(mml_model_param(m, 0)->grad);
    mml_session *s = make_session(sctx, m, 64, 0);
    batch b;
    make_batch(&b, 50, 2, 0, 9);
    float p1[50], p2[50];
    ck_assert_int_eq(mml_model_predict(m, &b.v, MML_MIX_NONE, 0, p1), MML_OK);
    ck_assert_int_eq(mml_session_predict(s, &b.v, p2, NULL), MML_OK);
    ck_assert(same_bits(p1, p2, 50));
    /* The session's copy of the values: a change to the model after the
     * session was made does not reach it. */
    w->value[0] += 1.0f;
    ck_assert_int_eq(mml_session_predict(s, &b.v, p1, NULL), MML_OK);
    ck_assert(same_bits(p1, p2, 50));
    mml_session_destroy(s);
    /* The session's context must know the type: the private instance is
     * made with its create callback. */
    mml_ctx *other = plain_ctx(1, 1);
    mml_session *s2 = NULL;
    ck_assert_int_eq(mml_session_create(&s2, other, m, NULL), MML_OK); /* the table travels */
    mml_session_destroy(s2);
    mml_ctx_destroy(other);
    free_batch(&b);
    mml_model_destroy(m);
    mml_ctx_destroy(sctx);
    mml_ctx_destroy(mctx);
}
END_TEST

/* ---- bad rows ---- */

START_TEST(session_bad_rows_get_status_and_nan)
{
    mml_ctx *mctx = plain_ctx(1, 7), *sctx = plain_ctx(1, 8);
    mml_model *m = make_model(mctx, backbones[_i], 2, 2, 1);
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    mml_session *s = make_session(sctx, m, 16, 64);
    batch b;
    make_batch(&b, 12, 2, 1, 4);
    b.dom[2] = 2;
    b.ids[5 * 3 + 1] = 30;
    b.ids[6 * 3 + 0] = -1;
    b.dense[7 * 2 + 1] = NAN;
    b.dense[9 * 2 + 0] = INFINITY;
    /* row 10 gets a list with a bad id */
    int64_t r10 = b.off[10];
    b.off[11] = b.off[10] + 1; /* row 10's list: one id */
    int64_t len11 = 0;
    b.off[12] = b.off[11] + len11;
    b.mhid[r10] = 20;
    char before[600];
    snprintf(before, sizeof before, "%s", mml_ctx_last_error(mctx));
    float p[12];
    int32_t st[12];
    ck_assert_int_eq(mml_session_predict(s, &b.v, p, st), MML_OK);
    const int bad[] = {2, 5, 6, 7, 9, 10};
    const int32_t code[] = {MML_ERANGE, MML_ERANGE, MML_ERANGE, MML_ENONFINITE, MML_ENONFINITE,
                            MML_ERANGE};
    int is_bad[12] = {0};
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(st[bad[i]], code[i]);
        ck_assert(isnan(p[bad[i]]));
        is_bad[bad[i]] = 1;
    }
    ck_assert_msg(strstr(mml_ctx_last_error(sctx), "row 2") != NULL, "%s", mml_ctx_last_error(sctx));
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(sctx), "domain"));
    /* Nothing reached the model's context. */
    ck_assert_str_eq(mml_ctx_last_error(mctx), before);
    /* The good rows are the model's prediction of the good rows alone. */
    batch g;
    make_batch(&g, 6, 2, 1, 1);
    int64_t j = 0;
    g.off[0] = 0;
    for (int64_t r = 0; r < 12; r++) {
        if (is_bad[r])
            continue;
        ck_assert_int_eq(st[r], MML_OK);
        memcpy(g.ids + j * 3, b.ids + r * 3, sizeof(int32_t) * 3);
        g.dom[j] = b.dom[r];
        memcpy(g.dense + j * 2, b.dense + r * 2, sizeof(float) * 2);
        int64_t len = b.off[r + 1] - b.off[r];
        memcpy(g.mhid + g.off[j], b.mhid + b.off[r], sizeof(int32_t) * (size_t)len);
        g.off[j + 1] = g.off[j] + len;
        j++;
    }
    ck_assert_int_eq(j, 6);
    float ref[6];
    ck_assert_int_eq(mml_model_predict(m, &g.v, MML_MIX_GATED, 0, ref), MML_OK);
    for (int64_t r = 0, k = 0; r < 12; r++)
        if (!is_bad[r]) {
            ck_assert_msg(memcmp(&p[r], &ref[k], sizeof(float)) == 0, "row %lld", (long long)r);
            k++;
        }
    /* All rows bad: all NaN, still MML_OK. One row. */
    for (int64_t r = 0; r < 12; r++)
        b.dom[r] = -3;
    ck_assert_int_eq(mml_session_predict(s, &b.v, p, NULL), MML_OK);
    for (int64_t r = 0; r < 12; r++)
        ck_assert(isnan(p[r]));
    int32_t ids[3] = {1, 2, 3};
    float dense[2] = {0.5f, NAN}, one;
    ck_assert_int_eq(mml_session_predict_row(s, ids, dense, 0, &one), MML_ENONFINITE);
    ck_assert(isnan(one));
    dense[1] = 0.25f;
    ck_assert_int_eq(mml_session_predict_row(s, ids, dense, 5, &one), MML_ERANGE);
    ck_assert_int_eq(mml_session_predict_row(s, ids, dense, 1, &one), MML_OK);
    ck_assert(one > 0.0f && one < 1.0f);
    free_batch(&g);
    free_batch(&b);
    mml_session_destroy(s);
    mml_model_destroy(m);
    mml_ctx_destroy(sctx);
    mml_ctx_destroy(mctx);
}
END_TEST

START_TEST(session_refuses_bad_calls)
{
    mml_ctx *ctx = plain_ctx(1, 7);
    mml_model *m = make_model(ctx, "mlp", 0, 2, 0), *moe = make_model(ctx, "mlp", 2, 2, 0);
    mml_session *s = (mml_session *)(void *)&ctx;
    ck_assert_int_eq(mml_session_create(&s, ctx, m, NULL), MML_ESTATE);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "read-only"));
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    ck_assert_int_eq(mml_model_make_readonly(moe), MML_OK);
    ck_assert_int_eq(mml_session_create(NULL, ctx, m, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_session_create(&s, NULL, m, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_session_create(&s, ctx, NULL, NULL), MML_EINVAL);
    mml_session_options so;
    mml_session_options_init(&so);
    ck_assert_int_eq(so.mix_mode, -1);
    ck_assert_int_eq(so.max_rows, 1024);
    ck_assert_int_eq(so.max_multihot_ids, 0);
    ck_assert_int_eq(mml_session_options_init_sized(&so, 12), MML_EVERSION);
    ck_assert_int_eq(mml_session_options_init_sized(NULL, sizeof so), MML_EINVAL);
    mml_session_options_init(&so);
    so.mix_mode = MML_MIX_GATED;
    ck_assert_int_eq(mml_session_create(&s, ctx, m, &so), MML_ESTATE);
    so.mix_mode = MML_MIX_SINGLE;
    ck_assert_int_eq(mml_session_create(&s, ctx, moe, &so), MML_EINVAL);
    so.mix_mode = 9;
    ck_assert_int_eq(mml_session_create(&s, ctx, moe, &so), MML_EINVAL);
    mml_session_options_init(&so);
    so.max_rows = 0;
    ck_assert_int_eq(mml_session_create(&s, ctx, m, &so), MML_EINVAL);
    so.max_rows = 4;
    so.max_multihot_ids = -1;
    ck_assert_int_eq(mml_session_create(&s, ctx, m, &so), MML_EINVAL);
    so.max_multihot_ids = 0;
    so.struct_size = 8;
    ck_assert_int_eq(mml_session_create(&s, ctx, m, &so), MML_EVERSION);
    so.struct_size = sizeof so;
    ck_assert_int_eq(mml_session_create(&s, ctx, m, &so), MML_OK);
    ck_assert_int_eq(mml_session_max_rows(s), 4);
    batch b;
    make_batch(&b, 10, 2, 0, 3);
    float p[10];
    int32_t st[10];
    ck_assert_int_eq(mml_session_predict(NULL, &b.v, p, st), MML_EINVAL);
    ck_assert_int_eq(mml_session_predict(s, NULL, p, st), MML_EINVAL);
    ck_assert_int_eq(mml_session_predict(s, &b.v, NULL, st), MML_EINVAL);
    b.v.n_fields = 2;
    ck_assert_int_eq(mml_session_predict(s, &b.v, p, st), MML_ESHAPE);
    b.v.n_fields = 3;
    b.v.n_dense = 1;
    ck_assert_int_eq(mml_session_predict(s, &b.v, p, st), MML_ESHAPE);
    b.v.n_dense = 2;
    b.v.n_rows = 0;
    ck_assert_int_eq(mml_session_predict(s, &b.v, p, st), MML_ESHAPE);
    b.v.n_rows = 10;
    b.v.ids_row_stride = 2;
    ck_assert_int_eq(mml_session_predict(s, &b.v, p, st), MML_ESHAPE);
    b.v.ids_row_stride = 3;
    b.v.struct_size = 4;
    ck_assert_int_eq(mml_session_predict(s, &b.v, p, st), MML_EVERSION);
    b.v.struct_size = sizeof b.v;
    b.v.n_multihot = 1;
    ck_assert_int_eq(mml_session_predict(s, &b.v, p, st), MML_ESHAPE);
    b.v.n_multihot = 0;
    /* 10 rows on a reservation of 4: chunks of 4, 4, 2, equal to the model's. */
    ck_assert_int_eq(mml_session_predict(s, &b.v, p, st), MML_OK);
    for (int64_t r0 = 0; r0 < 10; r0 += 4) {
        mml_batch_view c = b.v;
        c.n_rows = r0 + 4 <= 10 ? 4 : 10 - r0;
        c.ids = b.ids + r0 * 3;
        c.dense = b.dense + r0 * 2;
        c.domain = b.dom + r0;
        float ref[4];
        ck_assert_int_eq(mml_model_predict(m, &c, MML_MIX_NONE, 0, ref), MML_OK);
        ck_assert(same_bits(ref, p + r0, c.n_rows));
    }
    ck_assert_int_eq(mml_session_reserve(NULL, 4, 0), MML_EINVAL);
    ck_assert_int_eq(mml_session_reserve(s, 0, 0), MML_EINVAL);
    ck_assert_int_eq(mml_session_reserve(s, 4, -1), MML_EINVAL);
    ck_assert_int_eq(mml_session_reserve(s, 16, 0), MML_OK);
    ck_assert_int_eq(mml_session_max_rows(s), 16);
    ck_assert_int_eq(mml_session_reserve(s, 2, 0), MML_OK); /* never shrinks */
    ck_assert_int_eq(mml_session_max_rows(s), 16);
    ck_assert_int_eq(mml_session_predict_row(s, NULL, b.dense, 0, p), MML_EINVAL);
    ck_assert_int_eq(mml_session_predict_row(s, b.ids, NULL, 0, p), MML_EINVAL);
    ck_assert_int_eq(mml_session_predict_row(NULL, b.ids, b.dense, 0, p), MML_EINVAL);
    mml_session_destroy(s);
    mml_session_destroy(NULL);
    free_batch(&b);
    mml_model_destroy(m);
    mml_model_destroy(moe);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---- read-only models ---- */

static mml_param *g_params[256];
static int dummy_grad(void *user)
{
    (void)user;
    return MML_OK;
}
static int dummy_loss(void *user, double *loss, uint64_t *pattern)
{
    (void)user;
    *loss = 0.0;
    *pattern = 0;
    return MML_OK;
}

START_TEST(readonly_model)
{
    const char *bb = _i < 9 ? backbones[_i] : "lin";
    mml_ctx *ctx = plain_ctx(1, 7);
    if (_i == 9)
        register_lin(ctx);
    mml_model *m = make_model(ctx, bb, _i == 9 ? 0 : 2, 2, _i == 9 ? 0 : 1);
    batch b;
    make_batch(&b, 40, 2, _i == 9 ? 0 : 1, 2);
    int32_t mode = mml_model_mix_mode(m);
    float before[40], after[40], lg[40];
    ck_assert_int_eq(mml_model_predict(m, &b.v, mode, 0, before), MML_OK);
    ck_assert_int_eq(mml_model_is_readonly(m), 0);
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    ck_assert_int_eq(mml_model_is_readonly(m), 1);
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    ck_assert_int_eq(mml_model_is_readonly(NULL), 0);
    ck_assert_int_eq(mml_model_make_readonly(NULL), MML_EINVAL);
    ck_assert_int_eq(mml_model_predict(m, &b.v, mode, 0, after), MML_OK);
    ck_assert(same_bits(before, after, 40));
    int64_t n = mml_model_n_params(m), user = 0;
    ck_assert_int_le(n, 256);
    for (int64_t i = 0; i < n; i++) {
        mml_param *p = mml_model_param(m, i);
        g_params[i] = p;
        if (_i == 9 && strcmp(p->name, "lin.w") == 0) {
            ck_assert_ptr_nonnull(p->grad);
            user++;
            continue;
        }
        ck_assert_msg(p->grad == NULL, "%s: %s keeps a gradient", bb, p->name);
        ck_assert_ptr_nonnull(p->value);
    }
    ck_assert_int_eq(user, _i == 9);
    mml_params_zero_grad(g_params, n);
    ck_assert_int_eq(mml_model_forward(m, &b.v, mode, 0, 1, lg), MML_ESTATE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "read-only"));
    ck_assert_int_eq(mml_model_forward(m, &b.v, mode, 0, 0, lg), MML_OK);
    ck_assert_int_eq(mml_model_backward(m, lg), MML_ESTATE);
    double pen = 1.0;
    ck_assert_int_eq(mml_model_regularization(m, &pen), MML_ESTATE);
    ck_assert(pen == 0.0);
    /* The pieces refuse a backward pass too (no crash on NULL gradients). */
    if (_i < 9) {
        mml_backbone_grads g;
        memset(&g, 0, sizeof g);
        g.struct_size = sizeof g;
        ck_assert_int_eq(mml_backbone_backward(mml_model_backbone(m), lg, &g), MML_ESTATE);
        float dw[160] = {0};
        ck_assert_int_eq(mml_gate_backward(mml_model_gate(m), dw), MML_ESTATE);
    }
    mml_optimizer *opt = NULL;
    ck_assert_int_lt(mml_optimizer_create(&opt, ctx, NULL, g_params, n), 0);
    ck_assert_ptr_null(opt);
    mml_gradcheck_report rep;
    ck_assert_int_lt(mml_gradcheck(ctx, NULL, g_params, n, dummy_grad, dummy_loss, NULL, &rep), 0);
    free_batch(&b);
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---- no allocation after the reservation ---- */

START_TEST(no_allocation_after_reserve)
{
    const char *bb = backbones[_i / 3];
    int variant = _i % 3;
    mml_ctx *mctx = plain_ctx(1, 7);
    counting_allocator a;
    mml_ctx *sctx = counting_ctx(&a, 0, 1, 1);
    ck_assert_ptr_nonnull(sctx);
    mml_model *m = make_model(mctx, bb, variant, 2, 1);
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    mml_session *s = make_session(sctx, m, 200, 800);
    long calls = a.calls;
    static const int64_t sizes[] = {1, 3, 8, 9, 64, 200, 450};
    float *p = malloc(sizeof(float) * 450);
    int32_t *st = malloc(sizeof(int32_t) * 450);
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        batch b;
        make_batch(&b, sizes[t], 2, 1, t + 11);
        if (b.n > 4)
            b.dom[3] = 7; /* a bad row: the rest are gathered */
        ck_assert_int_eq(mml_session_predict(s, &b.v, p, st), MML_OK);
        free_batch(&b);
    }
    int32_t ids[3] = {1, 2, 3};
    float dense[2] = {0.5f, -0.5f};
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(mml_session_predict_row(s, ids, dense, i % 2, p), MML_OK);
    ck_assert_msg(a.calls == calls, "%s variant %d: %ld allocations after reserve", bb, variant,
                  a.calls - calls);
    /* Beyond the multi-hot reservation the buffers grow. */
    ck_assert_int_eq(mml_session_reserve(s, 200, 2000), MML_OK);
    calls = a.calls;
    batch b;
    make_batch(&b, 450, 2, 1, 3);
    ck_assert_int_eq(mml_session_predict(s, &b.v, p, st), MML_OK);
    ck_assert_int_eq(a.calls, calls);
    free_batch(&b);
    free(p);
    free(st);
    mml_session_destroy(s);
    mml_model_destroy(m);
    mml_ctx_destroy(sctx);
    ck_assert_int_eq(a.live, 0);
    mml_ctx_destroy(mctx);
}
END_TEST

/* ---- allocation failures ---- */

START_TEST(readonly_allocation_failures)
{
    counting_allocator a;
    long total = -1;
    for (long n = 0;; n++) {
        mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
        ck_assert_ptr_nonnull(ctx);
        mml_model *m = make_model(ctx, backbones[_i], 2, 2, 1);
        long start = a.calls;
        a.fail_at = n ? a.calls + n : 0;
        int rc = mml_model_make_readonly(m);
        if (n == 0)
            total = a.calls - start;
        if (rc < 0) {
            ck_assert_int_eq(rc, MML_ENOMEM);
            ck_assert_int_eq(mml_model_is_readonly(m), 0);
            ck_assert_ptr_nonnull(mml_model_param(m, 0)->grad);
            a.fail_at = 0;
            ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
        }
        mml_model_destroy(m);
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(a.live, 0);
        if (n > 0 && rc == MML_OK)
            break;
    }
    ck_assert_int_ge(total, 1);
}
END_TEST

START_TEST(session_create_allocation_failures)
{
    const char *bb = _i < 9 ? backbones[_i] : "lin";
    mml_ctx *mctx = plain_ctx(1, 7);
    if (_i == 9)
        register_lin(mctx);
    mml_model *m = make_model(mctx, bb, _i == 9 ? 0 : 2, 2, _i == 9 ? 0 : 1);
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    counting_allocator a;
    long total = -1;
    for (long n = 0;; n++) {
        mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
        ck_assert_ptr_nonnull(ctx);
        long start = a.calls;
        a.fail_at = n ? a.calls + n : 0;
        mml_session_options so;
        mml_session_options_init(&so);
        so.max_rows = 20;
        so.max_multihot_ids = 50;
        mml_session *s = (mml_session *)(void *)&a;
        int rc = mml_session_create(&s, ctx, m, &so);
        if (n == 0) {
            ck_assert_int_eq(rc, MML_OK);
            total = a.calls - start;
        }
        if (rc < 0) {
            ck_assert_msg(rc == MML_ENOMEM || (_i == 9 && rc == MML_ECALLBACK), "rc %d", rc);
            ck_assert_ptr_null(s);
        } else {
            batch b;
            make_batch(&b, 5, 2, _i == 9 ? 0 : 1, 1);
            float p[5];
            a.fail_at = 0;
            ck_assert_int_eq(mml_session_predict(s, &b.v, p, NULL), MML_OK);
            free_batch(&b);
        }
        mml_session_destroy(s);
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(a.live, 0);
        if (n > 0 && rc == MML_OK)
            break;
    }
    ck_assert_int_ge(total, 5);
    mml_model_destroy(m);
    mml_ctx_destroy(mctx);
}
END_TEST

#endif

/* ---- threads ---- */

#define THREAD_ROWS 10000
#define N_THREADS 8

typedef struct job {
    const mml_model *model;
    const int32_t *ids, *dom;
    const float *dense;
    float *out;
    int64_t chunk; /* 1: single rows; else batches of chunk rows (through BLIS) */
    int rc;
} job;

static void *thread_main(void *arg)
{
    job *j = arg;
    mml_ctx_options o;
    mml_ctx_options_init(&o);
    o.n_threads = 1;
    mml_ctx *ctx = NULL;
    j->rc = mml_ctx_create(&ctx, &o);
    if (j->rc < 0)
        return NULL;
    mml_session *s = NULL;
    mml_session_options so;
    mml_session_options_init(&so);
    so.max_rows = j->chunk;
    j->rc = mml_session_create(&s, ctx, j->model, &so);
    if (j->chunk == 1)
        for (int64_t r = 0; j->rc == MML_OK && r < THREAD_ROWS; r++)
            j->rc = mml_session_predict_row(s, j->ids + r * 3, j->dense + r * 2, j->dom[r],
                                            j->out + r);
    else
        for (int64_t r = 0; j->rc == MML_OK && r < THREAD_ROWS; r += j->chunk) {
            mml_batch_view v;
            mml_batch_view_init(&v, j->chunk, 3, j->ids + r * 3, 2, j->dense + r * 2, j->dom + r,
                                NULL);
            j->rc = mml_session_predict(s, &v, j->out + r, NULL);
        }
    mml_session_destroy(s);
    mml_ctx_destroy(ctx);
    return NULL;
}

START_TEST(threads_share_one_model)
{
    mml_ctx *mctx = plain_ctx(1, 7);
    mml_model *m = make_model(mctx, backbones[_i % 2 == 0 ? 0 : 2], _i % 2 == 0 ? 0 : 2, 2, 0);
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    batch b;
    make_batch(&b, THREAD_ROWS, 2, 0, 77);
    float *ref = malloc(sizeof(float) * THREAD_ROWS);
    job solo = {m, b.ids, b.dom, b.dense, ref, _i < 2 ? 1 : 100, 0};
    thread_main(&solo);
    ck_assert_int_eq(solo.rc, MML_OK);
    /* One row (or chunk) through the model itself gives the same bits. */
    mml_batch_view one = b.v;
    one.n_rows = solo.chunk;
    float p0[100];
    ck_assert_int_eq(mml_model_predict(m, &one, mml_model_mix_mode(m), 0, p0), MML_OK);
    ck_assert(same_bits(p0, ref, solo.chunk));
    pthread_t th[N_THREADS];
    job jobs[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        jobs[t] = solo;
        jobs[t].out = malloc(sizeof(float) * THREAD_ROWS);
        jobs[t].rc = -100;
        ck_assert_int_eq(pthread_create(&th[t], NULL, thread_main, &jobs[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++) {
        ck_assert_int_eq(pthread_join(th[t], NULL), 0);
        ck_assert_int_eq(jobs[t].rc, MML_OK);
        ck_assert_msg(same_bits(ref, jobs[t].out, THREAD_ROWS), "thread %d differs", t);
        free(jobs[t].out);
    }
    free(ref);
    free_batch(&b);
    mml_model_destroy(m);
    mml_ctx_destroy(mctx);
}
END_TEST

static Suite *session_suite(void)
{
    Suite *s = suite_create("session");
    TCase *t = tcase_create("threads");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, threads_share_one_model, 0, 4);
    suite_add_tcase(s, t);
#ifndef MML_TSAN_ONLY
    TCase *e = tcase_create("equality");
    tcase_set_timeout(e, 600);
    tcase_add_loop_test(e, session_equals_model_predict, 0, 27);
    tcase_add_test(e, session_modes);
    tcase_add_test(e, set_mix_mode_validates);
    tcase_add_test(e, session_custom_backbone);
    suite_add_tcase(s, e);
    TCase *r = tcase_create("rows");
    tcase_add_loop_test(r, session_bad_rows_get_status_and_nan, 0, 9);
    tcase_add_test(r, session_refuses_bad_calls);
    suite_add_tcase(s, r);
    TCase *ro = tcase_create("readonly");
    tcase_add_loop_test(ro, readonly_model, 0, 10);
    suite_add_tcase(s, ro);
    TCase *al = tcase_create("allocations");
    tcase_set_timeout(al, 600);
    tcase_add_loop_test(al, no_allocation_after_reserve, 0, 27);
    tcase_add_loop_test(al, readonly_allocation_failures, 0, 9);
    tcase_add_loop_test(al, session_create_allocation_failures, 0, 10);
    suite_add_tcase(s, al);
#endif
    return s;
}

int main(void) { return run_suite(session_suite()); }
