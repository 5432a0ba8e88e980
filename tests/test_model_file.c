/* The model file: round trips for every backbone and variant, every kind
 * of damage with its own code, atomic saves, allocation failures. */
#define _DEFAULT_SOURCE
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define ROWS 37
#define F 3

static const char *const backbones[] = {"mlp", "wdl", "deepfm", "nfm", "pnn",
                                        "dcn", "autoint", "xdeepfm", "fibinet"};
#define N_BACKBONES ((int)(sizeof backbones / sizeof backbones[0]))

typedef struct rows {
    int32_t ids[ROWS * F];
    float dense[ROWS * 2];
    int32_t domain[ROWS];
    int64_t off[ROWS + 1];
    int32_t mh[ROWS * 3];
    const int64_t *offs[1];
    const int32_t *mhs[1];
    mml_batch_view view;
} rows;

static const int64_t sizes[F] = {11, 7, 3};

static void make_rows(rows *b, uint64_t seed, int n_dense, int n_mh)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    int64_t at = 0;
    for (int r = 0; r < ROWS; r++) {
        for (int f = 0; f < F; f++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            b->ids[r * F + f] = (int32_t)((x >> 33) % (uint64_t)sizes[f]);
        }
        b->domain[r] = b->ids[r * F + 2] % 2;
        b->dense[2 * r] = (float)(r % 5) * 0.25f;
        b->dense[2 * r + 1] = (float)((r * 7) % 3) - 1.0f;
        b->off[r] = at;
        for (int j = 0; j < r % 3; j++)
            b->mh[at++] = (r + j) % 5;
    }
    b->off[ROWS] = at;
    b->offs[0] = b->off;
    b->mhs[0] = b->mh;
    mml_batch_view_init(&b->view, ROWS, F, b->ids, n_dense, n_dense ? b->dense : NULL, b->domain, NULL);
    if (n_mh) {
        b->view.n_multihot = 1;
        b->view.multihot_offsets = b->offs;
        b->view.multihot_ids = b->mhs;
    }
}

/* Every weight moved off its init, so experts, gate and zero-started
 * tables all matter to the predictions. */
static void perturb(mml_model *m, uint64_t seed)
{
    uint64_t x = seed + 7;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        for (int64_t j = 0; j < p->rows * p->cols; j++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            p->value[j] += ((float)(x >> 40) / (float)(1 << 24) - 0.5f) * 0.2f;
        }
    }
}

/* variant 0 base, 1 MLoRA, 2 MoE (2 experts per domain, gate). */
static mml_model *build(mml_ctx *ctx, const char *backbone, int variant, int n_dense, int n_mh)
{
    static const int32_t hidden[2] = {8, 4};
    static const int64_t mh_sizes[1] = {5};
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = F;
    o.field_sizes = sizes;
    o.backbone = backbone;
    o.embed_dim = 4;
    o.n_dense = n_dense;
    o.n_domains = 2;
    o.n_experts = variant == 0 ? 0 : variant == 1 ? 2 : 4;
    o.gate = variant == 2;
    o.alpha = 2;
    o.n_hidden = 2;
    o.hidden = hidden;
    o.n_multihot = n_mh;
    o.multihot_sizes = mh_sizes;
    mml_xdeepfm_options xo;
    static const int32_t cin[2] = {4, 2};
    if (strcmp(backbone, "xdeepfm") == 0) {
        mml_xdeepfm_options_init(&xo);
        xo.layer_sizes = cin;
        o.backbone_options = &xo;
    }
    mml_autoint_options ao;
    if (strcmp(backbone, "autoint") == 0) {
        mml_autoint_options_init(&ao);
        ao.n_layers = 2;
        ao.n_heads = 2;
        ao.head_dim = 3;
        o.backbone_options = &ao;
    }
    mml_model *m = NULL;
    int rc = mml_model_create(&m, ctx, &o);
    ck_assert_msg(rc == MML_OK, "%s: %s", backbone, mml_ctx_last_error(ctx));
    perturb(m, (uint64_t)variant * 31 + (uint64_t)strlen(backbone));
    return m;
}

static int32_t mode_of(int variant)
{
    return variant == 0 ? MML_MIX_NONE : variant == 1 ? MML_MIX_DOMAIN : MML_MIX_GATED;
}

static void predict(mml_model *m, rows *b, int variant, float *out)
{
    int rc = mml_model_predict(m, &b->view, mode_of(variant), 0, out);
    ck_assert_int_eq(rc, MML_OK);
}

static void assert_same_params(mml_model *a, mml_model *b)
{
    ck_assert_int_eq(mml_model_n_params(a), mml_model_n_params(b));
    for (int64_t i = 0; i < mml_model_n_params(a); i++) {
        mml_param *p = mml_model_param(a, i), *q = mml_model_param(b, i);
        ck_assert_str_eq(p->name, q->name);
        ck_assert_int_eq(p->rows, q->rows);
        ck_assert_int_eq(p->cols, q->cols);
        ck_assert_int_eq(p->group, q->group);
        ck_assert_int_eq(p->expert, q->expert);
        ck_assert(memcmp(p->value, q->value, sizeof(float) * (size_t)(p->rows * p->cols)) == 0);
    }
}

START_TEST(round_trip_every_backbone_and_variant)
{
    mml_ctx *ctx = plain_ctx(1, 5);
    for (int bi = 0; bi < N_BACKBONES; bi++)
        for (int variant = 0; variant < 3; variant++)
            for (int extras = 0; extras < 2; extras++) {
                int n_dense = extras ? 2 : 0, n_mh = extras && bi != 8 ? 1 : 0;
                mml_model *m = build(ctx, backbones[bi], variant, n_dense, n_mh);
                rows b;
                make_rows(&b, (uint64_t)bi, n_dense, n_mh);
                float before[ROWS], after[ROWS];
                predict(m, &b, variant, before);
                void *data = NULL;
                size_t size = 0;
                ck_assert_int_eq(mml_model_save_mem(m, &data, &size), MML_OK);
                ck_assert_uint_eq(size % 64 == 0 || size > 64, 1);
                mml_model *l = NULL;
                int rc = mml_model_load_mem(&l, ctx, data, size);
                ck_assert_msg(rc == MML_OK, "%s/%d: %s", backbones[bi], variant, mml_ctx_last_error(ctx));
                assert_same_params(m, l);
                predict(l, &b, variant, after);
                ck_assert_msg(memcmp(before, after, sizeof before) == 0, "%s variant %d", backbones[bi],
                              variant);
                /* Saving the loaded model gives the same bytes. */
                void *again = NULL;
                size_t again_size = 0;
                ck_assert_int_eq(mml_model_save_mem(l, &again, &again_size), MML_OK);
                ck_assert_uint_eq(again_size, size);
                ck_assert(memcmp(again, data, size) == 0);
                mml_ctx_free(ctx, again, again_size);
                /* A read-only model (no gradients) saves the same bytes. */
                ck_assert_int_eq(mml_model_make_readonly(l), MML_OK);
                ck_assert_int_eq(mml_model_save_mem(l, &again, &again_size), MML_OK);
                ck_assert_uint_eq(again_size, size);
                ck_assert(memcmp(again, data, size) == 0);
                mml_ctx_free(ctx, again, again_size);
                mml_ctx_free(ctx, data, size);
                mml_model_destroy(l);
                mml_model_destroy(m);
            }
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---------------------------------------------------------------- custom backbone */

typedef struct lin {
    mml_ctx *ctx;
    int32_t width;
    float scale; /* state beyond the parameters: saved and loaded */
    mml_param w;
    float *in;
    int64_t n;
} lin;

static int lin_create(void *user, mml_ctx *ctx, const mml_backbone_config *cfg, void **self)
{
    (void)user;
    lin *l = mml_ctx_alloc(ctx, sizeof *l);
    if (!l)
        return mml_ctx_set_error(ctx, MML_ENOMEM, "lin: out of memory");
    memset(l, 0, sizeof *l);
    l->ctx = ctx;
    l->width = cfg->n_fields * cfg->embed_dim;
    l->scale = 1.0f;
    l->w.name = "lin.w";
    l->w.rows = l->width;
    l->w.cols = 1;
    l->w.group = MML_GROUP_BACKBONE;
    l->w.expert = -1;
    l->w.value = mml_ctx_alloc(ctx, sizeof(float) * (size_t)l->width);
    l->w.grad = mml_ctx_alloc(ctx, sizeof(float) * (size_t)l->width);
    if (!l->w.value || !l->w.grad) {
        mml_ctx_free(ctx, l->w.value, sizeof(float) * (size_t)l->width);
        mml_ctx_free(ctx, l->w.grad, sizeof(float) * (size_t)l->width);
        mml_ctx_free(ctx, l, sizeof *l);
        return mml_ctx_set_error(ctx, MML_ENOMEM, "lin: out of memory");
    }
    for (int32_t i = 0; i < l->width; i++)
        l->w.value[i] = l->w.grad[i] = 0.0f;
    *self = l;
    return 0;
}

static void lin_destroy(void *self)
{
    lin *l = self;
    mml_ctx_free(l->ctx, l->w.value, sizeof(float) * (size_t)l->width);
    mml_ctx_free(l->ctx, l->w.grad, sizeof(float) * (size_t)l->width);
    mml_ctx_free(l->ctx, l, sizeof *l);
}

static int lin_forward(void *self, const mml_backbone_input *in, float *logit)
{
    lin *l = self;
    for (int64_t r = 0; r < in->n_rows; r++) {
        float v = 0.0f;
        for (int32_t i = 0; i < l->width; i++)
            v += in->emb[r * l->width + i] * l->w.value[i];
        logit[r] = l->scale * v;
    }
    l->in = NULL;
    l->n = in->n_rows;
    return 0;
}

static int lin_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    (void)self, (void)dlogit, (void)g;
    return 0;
}

static int64_t lin_n_params(void *self) { (void)self; return 1; }
static mml_param *lin_param(void *self, int64_t i) { (void)i; return &((lin *)self)->w; }

static int lin_save(void *self, mml_write_fn write, void *user)
{
    lin *l = self;
    int rc = write(user, "LIN1", 4);
    return rc < 0 ? rc : write(user, &l->scale, sizeof l->scale);
}

static int lin_load(void *self, mml_read_fn read, void *user)
{
    lin *l = self;
    char tag[4];
    int rc = read(user, tag, 4);
    if (rc < 0)
        return rc;
    if (memcmp(tag, "LIN1", 4) != 0)
        return mml_ctx_set_error(l->ctx, MML_ECORRUPT, "lin: unknown state tag");
    return read(user, &l->scale, sizeof l->scale);
}

static void register_lin(mml_ctx *ctx)
{
    mml_backbone_vtable vt;
    memset(&vt, 0, sizeof vt);
    vt.struct_size = sizeof vt;
    vt.abi_version = MML_BACKBONE_ABI_VERSION;
    vt.type_name = "lin";
    vt.linear_term = 1;
    vt.create = lin_create;
    vt.destroy = lin_destroy;
    vt.forward = lin_forward;
    vt.backward = lin_backward;
    vt.n_params = lin_n_params;
    vt.param = lin_param;
    vt.save = lin_save;
    vt.load = lin_load;
    ck_assert_int_eq(mml_backbone_register(ctx, &vt, NULL), MML_OK);
}

START_TEST(custom_backbone_saves_its_state)
{
    mml_ctx *ctx = plain_ctx(1, 5);
    register_lin(ctx);
    mml_model *m = build(ctx, "lin", 0, 0, 0);
    lin *self = NULL;
    /* The state must survive: set it through the instance the model holds. */
    mml_backbone *bb = mml_model_backbone(m);
    ck_assert_ptr_nonnull(bb);
    self = (lin *)(void *)((char *)mml_backbone_param(bb, 0) - offsetof(lin, w));
    self->scale = 2.5f;
    rows b;
    make_rows(&b, 3, 0, 0);
    float before[ROWS], after[ROWS];
    predict(m, &b, 0, before);
    void *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(mml_model_save_mem(m, &data, &size), MML_OK);
    mml_model *l = NULL;
    ck_assert_int_eq(mml_model_load_mem(&l, ctx, data, size), MML_OK);
    predict(l, &b, 0, after);
    ck_assert(memcmp(before, after, sizeof before) == 0);
    /* A session's private instance gets the state too. */
    ck_assert_int_eq(mml_model_make_readonly(l), MML_OK);
    mml_ctx *sctx = plain_ctx(1, 5);
    register_lin(sctx);
    mml_session *sess = NULL;
    ck_assert_msg(mml_session_create(&sess, sctx, l, NULL) == MML_OK, "%s", mml_ctx_last_error(sctx));
    float served[ROWS];
    int32_t st[ROWS];
    ck_assert_int_eq(mml_session_predict(sess, &b.view, served, st), MML_OK);
    ck_assert(memcmp(before, served, sizeof before) == 0);
    mml_session_destroy(sess);
    mml_ctx_destroy(sctx);
    /* Without the registration the type is unknown: its own code. */
    mml_ctx *other = plain_ctx(1, 5);
    mml_model *none = NULL;
    ck_assert_int_eq(mml_model_load_mem(&none, other, data, size), MML_ENOTFOUND);
    ck_assert_ptr_null(none);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(other), "'lin'"));
    mml_ctx_destroy(other);
    mml_ctx_free(ctx, data, size);
    mml_model_destroy(l);
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ---------------------------------------------------------------- damage */

static uint32_t crc32c_ref(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static void fix_header_crc(uint8_t *d) { put32(d + 60, crc32c_ref(d, 60)); }
static void fix_table_crc(uint8_t *d)
{
    uint64_t table = get64(d + 24);
    uint32_t n = get32(d + 32);
    put32(d + 36, crc32c_ref(d + table, n * 32u));
    fix_header_crc(d);
}

/* The table entry of section id, or NULL. */
static uint8_t *entry(uint8_t *d, const char *id)
{
    uint64_t table = get64(d + 24);
    uint32_t n = get32(d + 32);
    for (uint32_t i = 0; i < n; i++)
        if (memcmp(d + table + 32u * i, id, 4) == 0)
            return d + table + 32u * i;
    return NULL;
}

typedef struct saved {
    mml_ctx *ctx;
    mml_model *m;
    uint8_t *data;
    size_t size;
    rows b;
    float want[ROWS];
} saved;

static void saved_make(saved *s, const char *backbone, int variant)
{
    s->ctx = plain_ctx(1, 9);
    s->m = build(s->ctx, backbone, variant, 0, 0);
    make_rows(&s->b, 1, 0, 0);
    predict(s->m, &s->b, variant, s->want);
    void *d = NULL;
    ck_assert_int_eq(mml_model_save_mem(s->m, &d, &s->size), MML_OK);
    s->data = malloc(s->size);
    memcpy(s->data, d, s->size);
    mml_ctx_free(s->ctx, d, s->size);
}

static void saved_free(saved *s)
{
    free(s->data);
    mml_model_destroy(s->m);
    mml_ctx_destroy(s->ctx);
}

static int load_copy(saved *s, const uint8_t *d, size_t n)
{
    mml_model *l = NULL;
    int rc = mml_model_load_mem(&l, s->ctx, d, n);
    if (rc == MML_OK)
        mml_model_destroy(l);
    else
        ck_assert_ptr_null(l);
    return rc;
}

START_TEST(each_damage_has_its_code)
{
    saved s;
    saved_make(&s, "mlp", 2);
    uint8_t *d = malloc(s.size);
#define RESET() memcpy(d, s.data, s.size)
    RESET();
    ck_assert_int_eq(load_copy(&s, d, s.size), MML_OK);
    /* Wrong magic. */
    d[0] = 'X';
    ck_assert_int_eq(load_copy(&s, d, s.size), MML_EFORMAT);
    ck_assert_int_eq(load_copy(&s, (const uint8_t *)"hello, world", 12), MML_EFORMAT);
    ck_assert_int_eq(load_copy(&s, d, 0), MML_ETRUNCATED);
    /* A newer major version, even with a valid header CRC. */
    RESET();
    d[8] = 2;
    fix_header_crc(d);
    ck_assert_int_eq(load_copy(&s, d, s.size), MML_EVERSION);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(s.ctx), "2.0"));
    /* A newer minor version loads. */
    RESET();
    d[10] = 7;
    fix_header_crc(d);
    ck_assert_int_eq(load_copy(&s, d, s.size), MML_OK);
    /* Truncation. */
    RESET();
    ck_assert_int_eq(load_copy(&s, d, s.size - 1), MML_ETRUNCATED);
    ck_assert_int_eq(load_copy(&s, d, 40), MML_ETRUNCATED);
    /* A CRC mismatch in a payload. */
    uint8_t *parm = entry(d, "PARM");
    ck_assert_ptr_nonnull(parm);
    uint64_t poff = get64(parm + 8), psize = get64(parm + 16);
    d[poff + psize - 3] ^= 0x10;
    ck_assert_int_eq(load_copy(&s, d, s.size), MML_ECHECKSUM);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(s.ctx), "PARM"));
    /* Sizes that exceed the file. */
    RESET();
    parm = entry(d, "PARM");
    put64(parm + 16, psize + 64);
    fix_table_crc(d);
    ck_assert_int_eq(load_copy(&s, d, s.size), MML_ECORRUPT);
    RESET();
    put32(d + 32, 1000);
    fix_header_crc(d);
    ck_assert_int_eq(load_copy(&s, d, s.size), MML_ECORRUPT);
    /* Counts that do not add up: one parameter fewer (CRC fixed). */
    RESET();
    parm = entry(d, "PARM");
    put64(d + poff, get64(d + poff) - 1);
    put32(parm + 24, crc32c_ref(d + poff, (size_t)psize));
    fix_table_crc(d);
    ck_assert_int_eq(load_copy(&s, d, s.size), MML_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(s.ctx), "parameters"));
    /* A field size that would allocate far more than the file holds. */
    RESET();
    uint8_t *conf = entry(d, "CONF");
    uint64_t coff = get64(conf + 8), csize = get64(conf + 16);
    put64(d + coff + csize - 3 * 8, (uint64_t)INT32_MAX);
    put32(conf + 24, crc32c_ref(d + coff, (size_t)csize));
    fix_table_crc(d);
    ck_assert_int_eq(load_copy(&s, d, s.size), MML_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(s.ctx), "PARM"));
    /* An unknown required section; the same one optional is skipped. */
    RESET();
    uint8_t *bk = entry(d, "BKBN");
    RESET();
    ck_assert_ptr_nonnull(bk);
    (void)bk;
    {
        /* Grow the file by one section: copy, append a table entry in place
         * of the padding before the first payload when there is room. */
        uint64_t table = get64(d + 24);
        uint32_t n = get32(d + 32);
        uint64_t first = UINT64_MAX;
        for (uint32_t i = 0; i < n; i++)
            first = get64(d + table + 32u * i + 8) < first ? get64(d + table + 32u * i + 8) : first;
        ck_assert_uint_ge(first, table + 32u * (n + 1));
        uint8_t *e = d + table + 32u * n;
        memcpy(e, "ZZZZ", 4);
        put32(e + 4, 1);
        put64(e + 8, get64(parm + 8));
        put64(e + 16, 0);
        put32(e + 24, crc32c_ref(e, 0));
        put32(e + 28, 0);
        put32(d + 32, n + 1);
        fix_table_crc(d);
        ck_assert_int_eq(load_copy(&s, d, s.size), MML_ESECTION);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(s.ctx), "ZZZZ"));
        put32(e + 4, 0);
        fix_table_crc(d);
        ck_assert_int_eq(load_copy(&s, d, s.size), MML_OK);
    }
    free(d);
    saved_free(&s);
}
END_TEST

/* Every single-byte change and every truncation: an error, or a model whose
 * predictions are the original's. Never a crash (ASan runs this too). */
START_TEST(every_corruption_and_truncation)
{
    saved s;
    saved_make(&s, "deepfm", 2);
    uint8_t *d = malloc(s.size);
    long errors = 0, same = 0;
    for (size_t i = 0; i < s.size; i++)
        for (int k = 0; k < 2; k++) {
            memcpy(d, s.data, s.size);
            d[i] ^= k ? 0xFF : 0x01;
            mml_model *l = NULL;
            int rc = mml_model_load_mem(&l, s.ctx, d, s.size);
            if (rc < 0) {
                ck_assert_ptr_null(l);
                errors++;
                continue;
            }
            float got[ROWS];
            predict(l, &s.b, 2, got);
            ck_assert_msg(memcmp(got, s.want, sizeof got) == 0, "byte %zu changed, loaded, predicts "
                          "differently", i);
            same++;
            mml_model_destroy(l);
        }
    ck_assert_int_gt(errors, 0);
    for (size_t n = 0; n < s.size; n++) {
        uint8_t *t = malloc(n ? n : 1);
        memcpy(t, s.data, n);
        mml_model *l = NULL;
        int rc = mml_model_load_mem(&l, s.ctx, t, n);
        ck_assert_msg(rc < 0, "a prefix of %zu bytes loaded", n);
        ck_assert_ptr_null(l);
        free(t);
    }
    free(d);
    saved_free(&s);
}
END_TEST

/* ---------------------------------------------------------------- callbacks and paths */

typedef struct sink {
    uint8_t *buf;
    size_t len, cap;
    long fail_at; /* the byte at which writing fails; -1 never */
} sink;

static int sink_write(void *user, const void *data, size_t size)
{
    sink *s = user;
    if (s->fail_at >= 0 && s->len + size > (size_t)s->fail_at)
        return MML_EIO;
    if (s->len + size > s->cap) {
        s->cap = (s->len + size) * 2;
        s->buf = realloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, data, size);
    s->len += size;
    return 0;
}

typedef struct source {
    const uint8_t *data;
    size_t size, at;
} source;

static int source_read(void *user, void *data, size_t size)
{
    source *s = user;
    if (size > s->size - s->at)
        return MML_ETRUNCATED;
    memcpy(data, s->data + s->at, size);
    s->at += size;
    return 0;
}

START_TEST(callbacks_and_paths)
{
    saved s;
    saved_make(&s, "dcn", 1);
    sink k = {NULL, 0, 0, -1};
    ck_assert_int_eq(mml_model_save_cb(s.m, sink_write, &k), MML_OK);
    ck_assert_uint_eq(k.len, s.size);
    ck_assert(memcmp(k.buf, s.data, s.size) == 0);
    source src = {k.buf, k.len, 0};
    mml_model *l = NULL;
    ck_assert_int_eq(mml_model_load_cb(&l, s.ctx, source_read, &src), MML_OK);
    float got[ROWS];
    predict(l, &s.b, 1, got);
    ck_assert(memcmp(got, s.want, sizeof got) == 0);
    mml_model_destroy(l);
    /* A reader that runs dry. */
    source shortsrc = {k.buf, k.len - 5, 0};
    ck_assert_int_eq(mml_model_load_cb(&l, s.ctx, source_read, &shortsrc), MML_ETRUNCATED);
    ck_assert_ptr_null(l);
    /* A writer that fails at byte N: the save fails, every N. */
    for (long n = 0; n < (long)s.size; n += (n < 128 ? 1 : 61)) {
        sink f = {NULL, 0, 0, n};
        ck_assert_int_eq(mml_model_save_cb(s.m, sink_write, &f), MML_ECALLBACK);
        free(f.buf);
    }
    free(k.buf);
    char dir[] = "/tmp/mml_model_file_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/model.mml", dir);
    mode_t old_mask = umask(027);
    ck_assert_int_eq(mml_model_save(s.m, path), MML_OK);
    umask(old_mask);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0640); /* the umask holds, as for any new file */
    ck_assert_int_eq(mml_model_load(&l, s.ctx, path), MML_OK);
    predict(l, &s.b, 1, got);
    ck_assert(memcmp(got, s.want, sizeof got) == 0);
    mml_model_destroy(l);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none/model.mml", dir);
    ck_assert_int_eq(mml_model_save(s.m, missing), MML_EIO);
    ck_assert_int_eq(mml_model_load(&l, s.ctx, missing), MML_ENOTFOUND);
    ck_assert_int_eq(mml_model_load(&l, s.ctx, dir), MML_EIO);
    unlink(path);
    rmdir(dir);
    saved_free(&s);
}
END_TEST

/* A full disk (a file-size limit in a child): the save fails, the old file
 * stays whole and no temporary file is left. */
START_TEST(full_disk_keeps_the_old_file)
{
    saved s;
    saved_make(&s, "mlp", 0);
    char dir[] = "/tmp/mml_full_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/model.mml", dir);
    ck_assert_int_eq(mml_model_save(s.m, path), MML_OK);
    mml_model *big = build(s.ctx, "mlp", 2, 2, 1);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {(rlim_t)s.size / 2, (rlim_t)s.size / 2};
        setrlimit(RLIMIT_FSIZE, &rl);
        int code = mml_model_save(big, path) == MML_EIO ? 0 : 1;
        mml_model_destroy(big); /* valgrind checks the child's leaks too */
        saved_free(&s);
        _exit(code);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    mml_model *l = NULL;
    ck_assert_int_eq(mml_model_load(&l, s.ctx, path), MML_OK);
    float got[ROWS];
    predict(l, &s.b, 0, got);
    ck_assert(memcmp(got, s.want, sizeof got) == 0);
    mml_model_destroy(l);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", dir);
    ck_assert_int_eq(system(cmd), 0);
    unlink(path);
    rmdir(dir);
    mml_model_destroy(big);
    saved_free(&s);
}
END_TEST

/* A child saving in a loop, killed at random moments: the file under the
 * name always loads, as one of the two models. */
START_TEST(killed_save_leaves_a_whole_file)
{
    mml_ctx *ctx = plain_ctx(1, 3);
    static const int64_t big_sizes[F] = {200000, 7, 3};
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = F;
    o.field_sizes = big_sizes;
    o.n_domains = 2;
    mml_model *a = NULL, *b = NULL;
    ck_assert_int_eq(mml_model_create(&a, ctx, &o), MML_OK);
    ck_assert_int_eq(mml_model_create(&b, ctx, &o), MML_OK);
    perturb(b, 99);
    rows r;
    make_rows(&r, 4, 0, 0);
    float pa[ROWS], pb[ROWS], got[ROWS];
    predict(a, &r, 0, pa);
    predict(b, &r, 0, pb);
    ck_assert(memcmp(pa, pb, sizeof pa) != 0);
    char dir[] = "/tmp/mml_kill_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/model.mml", dir);
    ck_assert_int_eq(mml_model_save(a, path), MML_OK);
    int seen_b = 0;
    for (int round = 0; round < 12; round++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            for (int i = 0;; i++)
                mml_model_save(i % 2 ? a : b, path);
        }
        struct timespec ts = {0, 3000000L + 7000000L * round};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        mml_model *l = NULL;
        int rc = mml_model_load(&l, ctx, path);
        ck_assert_msg(rc == MML_OK, "round %d: %s", round, mml_ctx_last_error(ctx));
        predict(l, &r, 0, got);
        int is_a = memcmp(got, pa, sizeof got) == 0, is_b = memcmp(got, pb, sizeof got) == 0;
        ck_assert(is_a || is_b);
        seen_b |= is_b;
        mml_model_destroy(l);
    }
    (void)seen_b;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    mml_model_destroy(a);
    mml_model_destroy(b);
    mml_ctx_destroy(ctx);
}
END_TEST

/* Allocation failure at every allocation of save and load. */
START_TEST(allocation_failures_fail_cleanly)
{
    saved s;
    saved_make(&s, "xdeepfm", 2);
    for (long fail = 1;; fail++) {
        counting_allocator a;
        mml_ctx *ctx = counting_ctx(&a, 0, 1, 9);
        ck_assert_ptr_nonnull(ctx);
        long base = a.live;
        a.calls = 0;
        a.fail_at = fail;
        mml_model *l = NULL;
        int rc = mml_model_load_mem(&l, ctx, s.data, s.size);
        if (rc == MML_OK) {
            void *d = NULL;
            size_t n = 0;
            a.calls = 0;
            int src = mml_model_save_mem(l, &d, &n);
            if (src == MML_OK)
                mml_ctx_free(ctx, d, n);
            else
                ck_assert_int_eq(src, MML_ENOMEM);
            mml_model_destroy(l);
            ck_assert_int_eq(a.live, base);
            mml_ctx_destroy(ctx);
            ck_assert_int_eq(a.live, 0);
            if (src == MML_OK && fail > 1000)
                break;
            if (src == MML_OK && a.calls < fail)
                break;
            continue;
        }
        ck_assert_int_eq(rc, MML_ENOMEM);
        ck_assert_ptr_null(l);
        ck_assert_int_eq(a.live, base);
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(a.live, 0);
    }
    saved_free(&s);
}
END_TEST

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* A model with its data's schema: the schema goes through the file, the
 * same bytes come back, and a schema of another shape is refused. */
START_TEST(schema_travels_with_the_model)
{
    char dir[] = "/tmp/mml_schema_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char tr[256], te[256];
    snprintf(tr, sizeof tr, "%s/train.csv", dir);
    snprintf(te, sizeof te, "%s/test.csv", dir);
    write_text(tr, "user,item,city,n,domain,label\nu1,i1,paris,0.5,F,1\nu2,i2,rome,1.5,M,0\n"
                   "u1,i3,oslo,2,M,1\nu3,i1,rome,-1,F,0\n");
    write_text(te, "user,item,city,n,domain,label\nu9,i1,lima,0,M,1\n");
    mml_ctx *ctx = plain_ctx(1, 3);
    static const char *const num[] = {"n"};
    static const char *const hashed[] = {"city"};
    static const int64_t buckets[] = {16};
    mml_csv_options co;
    mml_csv_options_init(&co);
    co.numeric_columns = num;
    co.n_numeric_columns = 1;
    co.hashed_columns = hashed;
    co.hashed_buckets = buckets;
    co.n_hashed_columns = 1;
    co.hash_seed = 42;
    mml_dataset *train = NULL, *val = NULL, *test = NULL;
    ck_assert_msg(mml_csv_load(ctx, &co, tr, te, te, &train, &val, &test) == MML_OK, "%s",
                  mml_ctx_last_error(ctx));
    int32_t F_ = mml_dataset_n_fields(train);
    int64_t fs[8];
    for (int32_t f = 0; f < F_; f++)
        fs[f] = mml_dataset_field_size(train, f);
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = F_;
    o.field_sizes = fs;
    o.n_dense = 1;
    o.n_domains = mml_dataset_n_domains(train);
    mml_model *m = NULL;
    ck_assert_int_eq(mml_model_create(&m, ctx, &o), MML_OK);
    ck_assert_int_eq(mml_model_has_schema(m), 0);
    ck_assert_int_eq(mml_model_attach_schema(m, train), MML_OK);
    ck_assert_int_eq(mml_model_has_schema(m), 1);
    void *d = NULL;
    size_t n = 0;
    ck_assert_int_eq(mml_model_save_mem(m, &d, &n), MML_OK);
    mml_model *l = NULL;
    ck_assert_int_eq(mml_model_load_mem(&l, ctx, d, n), MML_OK);
    ck_assert_int_eq(mml_model_has_schema(l), 1);
    void *again = NULL;
    size_t again_n = 0;
    ck_assert_int_eq(mml_model_save_mem(l, &again, &again_n), MML_OK);
    ck_assert_uint_eq(again_n, n);
    ck_assert(memcmp(again, d, n) == 0);
    /* Another model shape: refused. */
    mml_model *other = NULL;
    o.n_dense = 0;
    ck_assert_int_eq(mml_model_create(&other, ctx, &o), MML_OK);
    ck_assert_int_eq(mml_model_attach_schema(other, train), MML_ESHAPE);
    ck_assert_int_eq(mml_model_has_schema(other), 0);
    mml_model_destroy(other);
    mml_ctx_free(ctx, again, again_n);
    mml_ctx_free(ctx, d, n);
    mml_model_destroy(l);
    mml_model_destroy(m);
    mml_dataset_destroy(train);
    mml_dataset_destroy(val);
    mml_dataset_destroy(test);
    mml_ctx_destroy(ctx);
    unlink(tr);
    unlink(te);
    rmdir(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("model_file");
    TCase *t = tcase_create("model_file");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, round_trip_every_backbone_and_variant);
    tcase_add_test(t, custom_backbone_saves_its_state);
    tcase_add_test(t, each_damage_has_its_code);
    tcase_add_test(t, every_corruption_and_truncation);
    tcase_add_test(t, callbacks_and_paths);
    tcase_add_test(t, full_disk_keeps_the_old_file);
    tcase_add_test(t, killed_save_leaves_a_whole_file);
    tcase_add_test(t, allocation_failures_fail_cleanly);
    tcase_add_test(t, schema_travels_with_the_model);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return run_suite(suite()); }
