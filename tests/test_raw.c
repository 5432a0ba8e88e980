/* Raw rows: mml_csv_split_line() against a plain reference, and sessions
 * predicting raw CSV rows through the model's schema
 * (mml_session_bind_columns(), mml_session_predict_raw()). */
#include <math.h>
#include <pthread.h>
#include <unistd.h>

#include "testutil.h"

/* ---- the CSV data: a domain by name, a categorical user, a hashed city,
 * a numeric price, multi-hot tags; the test rows hold unseen values ---- */

static char dir[64];

static void path_of(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

static uint64_t rng_state;
static uint32_t next_u32(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* Test rows: columns in another order than training, an extra column, no
 * label, quoted cells. */
#define N_TEST 300
static void write_data(void)
{
    snprintf(dir, sizeof dir, "/tmp/mml_raw_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    static const char *const doms[3] = {"news", "sport", "shop"};
    static const char *const tags[5] = {"a", "b", "c", "d", "e"};
    char p[128];
    rng_state = 99;
    for (int file = 0; file < 2; file++) {
        path_of(p, sizeof p, file == 0 ? "train.csv" : "test.csv");
        FILE *f = fopen(p, "w");
        ck_assert_ptr_nonnull(f);
        int n = file == 0 ? 400 : N_TEST;
        fputs(file == 0 ? "label,domain,user,city,price,tags\n"
                        : "extra,tags,price,city,user,domain,label\n",
              f);
        for (int r = 0; r < n; r++) {
            const char *dom = doms[next_u32() % 3];
            char user[16], city[16], tg[32] = "";
            snprintf(user, sizeof user, "u%u", next_u32() % (file ? 25 : 20)); /* u20+: unseen */
            snprintf(city, sizeof city, "c%u", next_u32() % 40);
            for (uint32_t k = 0, nt = next_u32() % 4; k < nt; k++) {
                if (k)
                    strcat(tg, "|");
                strcat(tg, file && next_u32() % 5 == 0 ? "zz" : tags[next_u32() % 5]);
            }
            double price = (double)(next_u32() % 1000) / 100.0;
            int label = (int)(next_u32() % 2);
            if (file == 0)
                fprintf(f, "%d,%s,%s,%s,%.2f,%s\n", label, dom, user, city, price, tg);
            else /* quoted cells on some rows: the same values */
                fprintf(f, r % 7 == 0 ? "x%d,\"%s\",%.2f,%s,\"%s\",%s,%d\n"
                                      : "x%d,%s,%.2f,%s,%s,%s,%d\n",
                        r, tg, price, city, user, dom, label);
        }
        fclose(f);
    }
}

static void remove_data(void)
{
    char p[128];
    path_of(p, sizeof p, "train.csv");
    unlink(p);
    path_of(p, sizeof p, "test.csv");
    unlink(p);
    rmdir(dir);
}

/* Loads the data, makes a model of its shape with its schema, read-only. */
static mml_model *make_model(mml_ctx *ctx, mml_dataset **train, mml_dataset **test)
{
    static const char *const num[] = {"price"};
    static const char *const mh[] = {"tags"};
    static const char *const hashed[] = {"city"};
    static const int64_t buckets[] = {16};
    mml_csv_options co;
    mml_csv_options_init(&co);
    co.numeric_columns = num;
    co.n_numeric_columns = 1;
    co.multihot_columns = mh;
    co.n_multihot_columns = 1;
    co.hashed_columns = hashed;
    co.hashed_buckets = buckets;
    co.n_hashed_columns = 1;
    co.hash_seed = 5;
    char tr[128], te[128];
    path_of(tr, sizeof tr, "train.csv");
    path_of(te, sizeof te, "test.csv");
    mml_dataset *val = NULL;
    ck_assert_msg(mml_csv_load(ctx, &co, tr, NULL, te, train, &val, test) == MML_OK, "%s",
                  mml_ctx_last_error(ctx));
    int32_t F = mml_dataset_n_fields(*train);
    int64_t fs[8], ms[1] = {mml_dataset_multihot_size(*train, 0)};
    for (int32_t f = 0; f < F; f++)
        fs[f] = mml_dataset_field_size(*train, f);
    static const int32_t hidden[2] = {16, 8};
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = F;
    o.field_sizes = fs;
    o.n_dense = 1;
    o.n_multihot = 1;
    o.multihot_sizes = ms;
    o.n_domains = mml_dataset_n_domains(*train);
    o.n_experts = o.n_domains;
    o.embed_dim = 4;
    o.embed_std = 0.3f;
    o.n_hidden = 2;
    o.hidden = hidden;
    mml_model *m = NULL;
    ck_assert_msg(mml_model_create(&m, ctx, &o) == MML_OK, "%s", mml_ctx_last_error(ctx));
    uint64_t h = 777; /* weights off their init, so every part counts */
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        for (int64_t j = 0; j < p->rows * p->cols; j++) {
            h = h * 6364136223846793005ull + 1442695040888963407ull;
            p->value[j] += 0.2f * ((float)(h >> 40) / 16777216.0f - 0.5f);
        }
    }
    ck_assert_int_eq(mml_model_attach_schema(m, *train), MML_OK);
    ck_assert_int_eq(mml_model_make_readonly(m), MML_OK);
    return m;
}

/* The test file's raw rows, split with mml_csv_split_line(). */
typedef struct raw {
    int32_t nc;
    char *names[8];
    int64_t n;
    char *text;               /* every line, then its scratch */
    const char **vals;        /* n x nc */
    size_t *lens;
} raw;

static void read_raw(raw *r)
{
    char p[128];
    path_of(p, sizeof p, "test.csv");
    FILE *f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    r->text = malloc(1 << 20);
    r->vals = malloc(sizeof *r->vals * 8 * (N_TEST + 1));
    r->lens = malloc(sizeof *r->lens * 8 * (N_TEST + 1));
    size_t used = 0;
    char line[512];
    r->n = -1; /* the header is row -1 */
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\n");
        char *t = r->text + used;
        memcpy(t, line, len);
        used += 2 * len + 1;
        const char **v = r->vals + (r->n + 1) * 8;
        size_t *l = r->lens + (r->n + 1) * 8;
        int64_t k = mml_csv_split_line(t, len, ',', 8, v, l, t + len, NULL);
        ck_assert_int_eq(k, 7);
        if (r->n < 0)
            for (int c = 0; c < 7; c++)
                r->names[c] = strndup(v[c], l[c]);
        r->n++;
    }
    fclose(f);
    r->nc = 7;
    ck_assert_int_eq(r->n, N_TEST);
    /* Rows of 8 slots to rows of 7 values, as predict_raw reads them. */
    for (int64_t i = 0; i < r->n; i++)
        for (int c = 0; c < 7; c++) {
            r->vals[i * 7 + c] = r->vals[(i + 1) * 8 + c];
            r->lens[i * 7 + c] = r->lens[(i + 1) * 8 + c];
        }
}

static void free_raw(raw *r)
{
    for (int c = 0; c < r->nc; c++)
        free(r->names[c]);
    free(r->text);
    free(r->vals);
    free(r->lens);
}

#ifndef MML_TSAN_ONLY
static mml_session *session(mml_ctx *ctx, const mml_model *m, int64_t rows, int64_t mh)
{
    mml_session_options so;
    mml_session_options_init(&so);
    so.max_rows = rows;
    so.max_multihot_ids = mh;
    mml_session *s = NULL;
    ck_assert_msg(mml_session_create(&s, ctx, m, &so) == MML_OK, "%s", mml_ctx_last_error(ctx));
    return s;
}

/* ---- splitting ---- */

/* A plain reference splitter: cells as NUL-terminated copies. */
static int64_t ref_split(const char *line, size_t len, char delim, int64_t max, char cells[][64],
                         int32_t *bad)
{
    int64_t n = 0;
    size_t i = 0;
    for (;;) {
        if (n == max)
            return max + 1;
        size_t o = 0;
        if (i < len && line[i] == '"') {
            i++;
            for (;;) {
                if (i >= len) {
                    *bad = (int32_t)n + 1;
                    return -1;
                }
                if (line[i] == '"' && i + 1 < len && line[i + 1] == '"') {
                    cells[n][o++] = '"';
                    i += 2;
                } else if (line[i] == '"') {
                    i++;
                    break;
                } else {
                    cells[n][o++] = line[i++];
                }
            }
            cells[n++][o] = '\0';
            if (i == len)
                return n;
            if (line[i] != delim) {
                *bad = (int32_t)n;
                return -1;
            }
            i++;
        } else {
            while (i < len && line[i] != delim)
                cells[n][o++] = line[i++];
            cells[n++][o] = '\0';
            if (i == len)
                return n;
            i++;
        }
    }
}

static void check_split(const char *line, size_t len, char delim, int64_t max)
{
    char ref[40][64];
    int32_t rbad = 0, bad = -7;
    const char *cells[40];
    size_t lens[40];
    char scratch[64];
    int64_t want = ref_split(line, len, delim, max, ref, &rbad);
    int64_t got = mml_csv_split_line(line, len, delim, max, cells, lens, scratch, &bad);
    if (want < 0) {
        ck_assert_msg(got == MML_EPARSE && bad == rbad, "'%.*s': %lld (column %d), want error at %d",
                      (int)len, line, (long long)got, bad, rbad);
        return;
    }
    ck_assert_msg(got == want, "'%.*s': %lld cells, want %lld", (int)len, line, (long long)got,
                  (long long)want);
    ck_assert_int_eq(bad, 0);
    for (int64_t c = 0; c < (got > max ? max : got); c++)
        ck_assert_msg(lens[c] == strlen(ref[c]) && !memcmp(cells[c], ref[c], lens[c]),
                      "'%.*s': cell %lld '%.*s', want '%s'", (int)len, line, (long long)c,
                      (int)lens[c], cells[c], ref[c]);
}

START_TEST(split_matches_reference)
{
    static const char *const tricky[] = {
        "", ",", "a", "a,,b", ",,,", "a,", ",a", "\"a,b\",c", "\"a\"\"b\"", "\"\"", "\"\",\"\"",
        "\"x\"y", "a,\"b", "a,b\"c", "\"", "\"\"\"", "\"a\"\"\",b", "x,\"\"\"\"", "a,\"b\",",
        "\"a\",\"b\"x", "\xEF\xBB\xBF" "a,b", " a , b ", "\"a\nb\",c"};
    for (size_t k = 0; k < sizeof tricky / sizeof tricky[0]; k++)
        for (int64_t max = 0; max <= 5; max++) {
            check_split(tricky[k], strlen(tricky[k]), ',', max);
            check_split(tricky[k], strlen(tricky[k]), ';', max);
        }
    check_split("a\tb\t\"c\td\"", 9, '\t', 5);
    /* Every line of up to 7 bytes over a, the delimiter and the quote. */
    static const char alpha[3] = {'a', ',', '"'};
    char line[8];
    for (int len = 0; len <= 7; len++) {
        int total = 1;
        for (int i = 0; i < len; i++)
            total *= 3;
        for (int x = 0; x < total; x++) {
            for (int i = 0, y = x; i < len; i++, y /= 3)
                line[i] = alpha[y % 3];
            check_split(line, (size_t)len, ',', 8);
            check_split(line, (size_t)len, ',', 2);
        }
    }
}
END_TEST

START_TEST(split_refuses_bad_calls)
{
    const char *cells[4];
    size_t lens[4];
    char scratch[8];
    int32_t bad = 5;
    ck_assert_int_eq(mml_csv_split_line(NULL, 0, ',', 4, cells, lens, NULL, &bad), 1);
    ck_assert_int_eq(lens[0], 0);
    ck_assert_int_eq(bad, 0);
    ck_assert_int_eq(mml_csv_split_line(NULL, 3, ',', 4, cells, lens, scratch, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_csv_split_line("a,b", 3, ',', 4, cells, lens, NULL, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_csv_split_line("a,b", 3, ',', 4, NULL, lens, scratch, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_csv_split_line("a,b", 3, ',', -1, cells, lens, scratch, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_csv_split_line("a,b", 3, '"', 4, cells, lens, scratch, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_csv_split_line("a,b", 3, '\n', 4, cells, lens, scratch, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_csv_split_line("a,b", 3, '\0', 4, cells, lens, scratch, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_csv_split_line("a,b", 3, ',', 0, NULL, NULL, scratch, NULL), 1);
}
END_TEST

/* ---- predict_raw == predict on the CSV reader's rows, bitwise ---- */

START_TEST(raw_equals_reader)
{
    static const int64_t rows[] = {1, 7, 64, 300, 1024};
    write_data();
    mml_ctx *ctx = plain_ctx(1, 3);
    mml_dataset *train = NULL, *test = NULL;
    mml_model *m = make_model(ctx, &train, &test);
    raw r;
    read_raw(&r);
    float *want = malloc(sizeof(float) * N_TEST), *got = malloc(sizeof(float) * N_TEST);
    int32_t *st = malloc(sizeof(int32_t) * N_TEST), *bc = malloc(sizeof(int32_t) * N_TEST);
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(test, 0, N_TEST, &v), MML_OK);
    for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
        /* Few multi-hot ids reserved: predict_raw grows its buffers mid-chunk. */
        mml_session *s = session(ctx, m, rows[k], k == 0 ? 0 : 2000);
        ck_assert_int_eq(mml_session_delimiter(s), ',');
        ck_assert_int_eq(mml_session_predict(s, &v, want, st), MML_OK);
        ck_assert_int_eq(mml_session_predict_raw(s, 1, r.vals, r.lens, got, st, bc), MML_ESTATE);
        ck_assert_int_eq(mml_session_bind_columns(s, r.nc, (const char *const *)r.names), MML_OK);
        memset(got, 0, sizeof(float) * N_TEST);
        ck_assert_int_eq(mml_session_predict_raw(s, N_TEST, r.vals, r.lens, got, st, bc), MML_OK);
        for (int64_t i = 0; i < N_TEST; i++) {
            ck_assert_int_eq(st[i], MML_OK);
            ck_assert_int_eq(bc[i], -1);
            ck_assert_msg(memcmp(&want[i], &got[i], sizeof(float)) == 0,
                          "reserve %lld row %lld: %.9g, reader %.9g", (long long)rows[k],
                          (long long)i, (double)got[i], (double)want[i]);
        }
        mml_session_destroy(s);
    }
    /* NUL-terminated values (lens NULL) mean the same. */
    char **z = malloc(sizeof *z * (size_t)(N_TEST * r.nc));
    for (int64_t i = 0; i < N_TEST * r.nc; i++)
        z[i] = strndup(r.vals[i], r.lens[i]);
    mml_session *s = session(ctx, m, 64, 0);
    ck_assert_int_eq(mml_session_bind_columns(s, r.nc, (const char *const *)r.names), MML_OK);
    ck_assert_int_eq(mml_session_predict_raw(s, N_TEST, (const char *const *)z, NULL, got, NULL,
                                             NULL), MML_OK);
    ck_assert_int_eq(mml_session_predict(s, &v, want, NULL), MML_OK);
    ck_assert(memcmp(want, got, sizeof(float) * N_TEST) == 0);
    ck_assert_int_eq(mml_session_predict_raw(s, 0, NULL, NULL, NULL, NULL, NULL), MML_OK);

    /* Bad rows: their status, NaN and column; the others served. */
    char *keep[4] = {z[3 * 7 + 2], z[5 * 7 + 5], z[8 * 7 + 4], z[9 * 7 + 0]};
    static char cheap[] = "cheap", games[] = "games";
    z[3 * 7 + 2] = cheap; /* price */
    z[5 * 7 + 5] = games; /* domain */
    z[8 * 7 + 4] = NULL;               /* user */
    z[9 * 7 + 0] = NULL;               /* extra: not bound, not read */
    ck_assert_int_eq(mml_session_predict_raw(s, 20, (const char *const *)z, NULL, got, st, bc),
                     MML_OK);
    for (int64_t i = 0; i < 20; i++) {
        int want_st = i == 3 ? MML_EPARSE : i == 5 ? MML_ERANGE : i == 8 ? MML_EINVAL : MML_OK;
        int want_col = i == 3 ? 2 : i == 5 ? 5 : i == 8 ? 4 : -1;
        ck_assert_msg(st[i] == want_st && bc[i] == want_col, "row %lld: status %d column %d",
                      (long long)i, st[i], bc[i]);
        ck_assert(want_st == MML_OK ? isfinite(got[i]) && got[i] >= 0 && got[i] <= 1
                                    : isnan(got[i]));
    }
    ck_assert_msg(strstr(mml_ctx_last_error(ctx), "row 3, column 2") &&
                      strstr(mml_ctx_last_error(ctx), "cheap"),
                  "%s", mml_ctx_last_error(ctx));
    z[3 * 7 + 2] = keep[0];
    z[5 * 7 + 5] = keep[1];
    z[8 * 7 + 4] = keep[2];
    z[9 * 7 + 0] = keep[3];
    for (int64_t i = 0; i < N_TEST * r.nc; i++)
        free(z[i]);
    free(z);

    /* Binding: the label is optional, other columns are required. */
    const char *cols[6] = {"domain", "user", "city", "price", "tags", "label"};
    ck_assert_int_eq(mml_session_bind_columns(s, 5, cols), MML_OK);
    ck_assert_int_eq(mml_session_bind_columns(s, 4, cols), MML_ENOTFOUND);
    ck_assert_msg(strstr(mml_ctx_last_error(ctx), "tags"), "%s", mml_ctx_last_error(ctx));
    ck_assert_int_eq(mml_session_bind_columns(s, 4, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_session_bind_columns(NULL, 4, cols), MML_EINVAL);
    ck_assert_int_eq(mml_session_predict_raw(s, -1, r.vals, r.lens, got, st, bc), MML_EINVAL);
    ck_assert_int_eq(mml_session_predict_raw(s, 2, NULL, r.lens, got, st, bc), MML_EINVAL);
    ck_assert_int_eq(mml_session_predict_raw(NULL, 2, r.vals, r.lens, got, st, bc), MML_EINVAL);
    ck_assert_int_eq(mml_session_delimiter(NULL), -1);
    mml_session_destroy(s);

    /* A model without a schema cannot bind. */
    mml_model *l = NULL;
    int64_t fs[1] = {5};
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = 1;
    o.field_sizes = fs;
    o.n_domains = 1;
    ck_assert_int_eq(mml_model_create(&l, ctx, &o), MML_OK);
    ck_assert_int_eq(mml_model_make_readonly(l), MML_OK);
    s = session(ctx, l, 4, 0);
    ck_assert_int_eq(mml_session_delimiter(s), -1);
    ck_assert_int_eq(mml_session_bind_columns(s, 5, cols), MML_ESTATE);
    mml_session_destroy(s);
    mml_model_destroy(l);

    free(want), free(got), free(st), free(bc);
    free_raw(&r);
    mml_model_destroy(m);
    mml_dataset_destroy(train);
    mml_dataset_destroy(test);
    mml_ctx_destroy(ctx);
    remove_data();
}
END_TEST

/* ---- no allocation within the reservation ---- */

START_TEST(raw_no_allocation_after_bind)
{
    write_data();
    mml_ctx *mctx = plain_ctx(1, 3);
    mml_dataset *train = NULL, *test = NULL;
    mml_model *m = make_model(mctx, &train, &test);
    raw r;
    read_raw(&r);
    counting_allocator a;
    mml_ctx *sctx = counting_ctx(&a, 0, 1, 1);
    ck_assert_ptr_nonnull(sctx);
    mml_session *s = session(sctx, m, 64, 2000);
    ck_assert_int_eq(mml_session_bind_columns(s, r.nc, (const char *const *)r.names), MML_OK);
    long calls = a.calls;
    float p[N_TEST];
    int32_t st[N_TEST], bc[N_TEST];
    static const int64_t sizes[] = {1, 3, 9, 64, 65, 300};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
        ck_assert_int_eq(mml_session_predict_raw(s, sizes[k], r.vals, r.lens, p, st, bc), MML_OK);
    /* Bad rows, and no arrays for statuses and columns. */
    const char *keep = r.vals[2 * 7 + 2];
    size_t keep_len = r.lens[2 * 7 + 2];
    r.vals[2 * 7 + 2] = "x";
    r.lens[2 * 7 + 2] = 1;
    ck_assert_int_eq(mml_session_predict_raw(s, 100, r.vals, r.lens, p, NULL, NULL), MML_OK);
    ck_assert(isnan(p[2]));
    r.vals[2 * 7 + 2] = keep;
    r.lens[2 * 7 + 2] = keep_len;
    ck_assert_msg(a.calls == calls, "%ld allocations after bind", a.calls - calls);
    /* Beyond the multi-hot reservation the buffers grow, once. */
    mml_session_destroy(s);
    s = session(sctx, m, 64, 1);
    ck_assert_int_eq(mml_session_bind_columns(s, r.nc, (const char *const *)r.names), MML_OK);
    calls = a.calls;
    ck_assert_int_eq(mml_session_predict_raw(s, N_TEST, r.vals, r.lens, p, st, bc), MML_OK);
    ck_assert(a.calls > calls);
    calls = a.calls;
    ck_assert_int_eq(mml_session_predict_raw(s, N_TEST, r.vals, r.lens, p, st, bc), MML_OK);
    ck_assert_int_eq(a.calls, calls);
    /* Allocation failures while binding leave the session as it was. */
    mml_session_destroy(s);
    for (long fail = 1;; fail++) {
        s = session(sctx, m, 8, 100);
        a.fail_at = a.calls + fail;
        int rc = mml_session_bind_columns(s, r.nc, (const char *const *)r.names);
        a.fail_at = 0;
        if (rc == MML_OK) {
            mml_session_destroy(s);
            break;
        }
        ck_assert_int_eq(rc, MML_ENOMEM);
        ck_assert_int_eq(mml_session_predict_raw(s, 1, r.vals, r.lens, p, st, bc), MML_ESTATE);
        mml_session_destroy(s);
    }
    mml_ctx_destroy(sctx);
    ck_assert_int_eq(a.live, 0);
    free_raw(&r);
    mml_model_destroy(m);
    mml_dataset_destroy(train);
    mml_dataset_destroy(test);
    mml_ctx_destroy(mctx);
    remove_data();
}
END_TEST
#endif

/* ---- threads: raw rows on one shared model ---- */

typedef struct job {
    const mml_model *m;
    const raw *r;
    float *out;
    int rc;
} job;

static void *thread_main(void *arg)
{
    job *j = arg;
    mml_ctx *ctx = NULL;
    mml_session *s = NULL;
    mml_session_options so;
    mml_session_options_init(&so);
    so.max_rows = 32;
    j->rc = mml_ctx_create(&ctx, NULL);
    if (j->rc == MML_OK)
        j->rc = mml_session_create(&s, ctx, j->m, &so);
    if (j->rc == MML_OK)
        j->rc = mml_session_bind_columns(s, j->r->nc, (const char *const *)j->r->names);
    for (int rep = 0; j->rc == MML_OK && rep < 3; rep++)
        j->rc = mml_session_predict_raw(s, j->r->n, j->r->vals, j->r->lens, j->out, NULL, NULL);
    mml_session_destroy(s);
    mml_ctx_destroy(ctx);
    return NULL;
}

START_TEST(raw_threads_share_one_model)
{
    write_data();
    mml_ctx *ctx = plain_ctx(1, 3);
    mml_dataset *train = NULL, *test = NULL;
    mml_model *m = make_model(ctx, &train, &test);
    raw r;
    read_raw(&r);
    enum { T = 4 };
    pthread_t tid[T];
    job jobs[T];
    for (int t = 0; t < T; t++) {
        jobs[t] = (job){m, &r, malloc(sizeof(float) * N_TEST), -1};
        ck_assert_int_eq(pthread_create(&tid[t], NULL, thread_main, &jobs[t]), 0);
    }
    for (int t = 0; t < T; t++)
        pthread_join(tid[t], NULL);
    for (int t = 0; t < T; t++) {
        ck_assert_int_eq(jobs[t].rc, MML_OK);
        for (int i = 0; i < N_TEST; i++)
            ck_assert_msg(memcmp(&jobs[t].out[i], &jobs[0].out[i], sizeof(float)) == 0,
                          "thread %d row %d: %.9g, thread 0 %.9g", t, i, (double)jobs[t].out[i],
                          (double)jobs[0].out[i]);
    }
    for (int t = 0; t < T; t++)
        free(jobs[t].out);
    free_raw(&r);
    mml_model_destroy(m);
    mml_dataset_destroy(train);
    mml_dataset_destroy(test);
    mml_ctx_destroy(ctx);
    remove_data();
}
END_TEST

static Suite *raw_suite(void)
{
    Suite *s = suite_create("raw");
    TCase *t = tcase_create("raw");
    tcase_set_timeout(t, 600);
#ifndef MML_TSAN_ONLY
    tcase_add_test(t, split_matches_reference);
    tcase_add_test(t, split_refuses_bad_calls);
    tcase_add_test(t, raw_equals_reader);
    tcase_add_test(t, raw_no_allocation_after_bind);
#endif
    tcase_add_test(t, raw_threads_share_one_model);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return run_suite(raw_suite()); }
