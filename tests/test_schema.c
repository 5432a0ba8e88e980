/* Feature hashing of strings, hashed CSV columns, the saved schema (write,
 * read, untrusted bytes), binding column lists and mapping raw rows. */
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "data_internal.h"
#include "testutil.h"

static char tmpdir[256];

static void tpath(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmpdir, name);
}

static void write_str(const char *name, const char *content)
{
    char p[512];
    tpath(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(content, 1, strlen(content), f), strlen(content));
    fclose(f);
}

static int load3(mml_ctx *ctx, const mml_csv_options *o, const char *tr, const char *va,
                 const char *te, mml_dataset **a, mml_dataset **b, mml_dataset **c)
{
    char p1[512], p2[512], p3[512];
    tpath(p1, sizeof p1, tr);
    if (va)
        tpath(p2, sizeof p2, va);
    if (te)
        tpath(p3, sizeof p3, te);
    return mml_csv_load(ctx, o, p1, va ? p2 : NULL, te ? p3 : NULL, a, b, c);
}

static int has(const char *msg, const char *part) { return strstr(msg, part) != NULL; }

#define ASSERT_MSG_HAS(ctx, part)                                                                \
    ck_assert_msg(has(mml_ctx_last_error(ctx), (part)), "message '%s' lacks '%s'",             \
                  mml_ctx_last_error(ctx), (part))

static int32_t id_of_field(const mml_dataset *ds, int64_t row, int32_t field)
{
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(ds, row, 1, &v), MML_OK);
    return v.ids[field];
}

/* ------------------------------------------------------------ hashing */

START_TEST(hash_string_pinned)
{
    /* XXH3-64 (seed 0) values that other implementations publish. */
    static const struct {
        const char *s;
        uint64_t h;
    } vec[] = {{"", 0x2D06800538D394C2ull},
               {"a", 0xE6C632B61E964E1Full},
               {"abc", 0x78AF5F94892F3950ull},
               {"hello", 0x9555E8555C62DCFDull}};
    for (size_t k = 0; k < sizeof vec / sizeof vec[0]; k++) {
        size_t len = strlen(vec[k].s);
        ck_assert_uint_eq(XXH3_64bits(vec[k].s, len), vec[k].h);
        for (uint64_t seed = 0; seed < 3; seed++)
            for (uint32_t b = 1; b < 5000; b += 977)
                ck_assert_uint_eq(mml_hash_string(vec[k].s, len, seed, b),
                                  mml_hash_id(vec[k].h, seed, b));
    }
    /* Pinned buckets (the formula in hashing.h; the example given there). */
    ck_assert_uint_eq(mml_hash_string("", 0, 0, 1000), 350);
    ck_assert_uint_eq(mml_hash_string(NULL, 0, 0, 1000), 350);
    ck_assert_uint_eq(mml_hash_string("abc", 3, 0, 1000), 464);
    ck_assert_uint_eq(mml_hash_string("hello", 5, 7, 1000), 128);
    ck_assert_uint_eq(mml_hash_string("a", 1, 0, 2147483647u), 1842745154u);
    ck_assert_uint_eq(mml_hash_string("abc", 3, 5, 0), 0);
    /* Bytes, not C strings: a NUL inside counts, the length decides. */
    ck_assert_uint_eq(mml_hash_string("abcdef", 3, 0, 1000), 464);
    ck_assert_uint_eq(mml_hash_string("a\0b", 3, 0, 1u << 30) != mml_hash_string("a", 1, 0, 1u << 30), 1);
}
END_TEST

/* ------------------------------------------------------------ hashed CSV columns */

static const char *const hashed_train = "label,domain,city,f\n"
                                        "1,0,Paris,x\n"
                                        "0,1,\"New York, NY\",y\n"
                                        "1,0,Paris,y\n"
                                        "0,1,Oslo,x\n";
static const char *const hashed_val = "f,city,domain,label\n"
                                      "x,Lima,1,1\n"
                                      "z,Paris,0,0\n";
static const char *const hashed_test = "label,domain,city,f\n"
                                       "0,1,\"New York, NY\",q\n"
                                       "1,0,,x\n";

static void hashed_options(mml_csv_options *o, const char *const *cols, const int64_t *buckets,
                           int32_t n)
{
    mml_csv_options_init(o);
    o->hashed_columns = cols;
    o->hashed_buckets = buckets;
    o->n_hashed_columns = n;
    o->hash_seed = 5;
}

START_TEST(csv_hashed_column)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    write_str("h_train.csv", hashed_train);
    write_str("h_val.csv", hashed_val);
    write_str("h_test.csv", hashed_test);
    static const char *const cols[] = {"city"};
    static const int64_t buckets[] = {64};
    mml_csv_options o;
    hashed_options(&o, cols, buckets, 1);
    mml_dataset *tr, *va, *te;
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", "h_val.csv", "h_test.csv", &tr, &va, &te),
                     MML_OK);
    /* Field order as without hashing: city, f, then the domain field. */
    ck_assert_int_eq(mml_dataset_n_fields(tr), 3);
    ck_assert_str_eq(mml_dataset_field_name(tr, 0), "city");
    ck_assert_int_eq(mml_dataset_field_size(tr, 0), 64);
    ck_assert_int_eq(mml_dataset_field_oov(tr, 0), -1);
    ck_assert_ptr_null(mml_dataset_field_value(tr, 0, 0));
    ck_assert_int_eq(mml_dataset_field_size(tr, 1), 3); /* x, y + OOV */
    const mml__schema *s = mml__dataset_schema(tr);
    ck_assert_ptr_eq(s, mml__dataset_schema(te));
    ck_assert_int_eq(s->field_kind[0], MML__FIELD_HASHED);
    ck_assert_uint_eq(s->field_seed[0], 5);
    ck_assert_int_eq(s->field_kind[1], MML__FIELD_VOCAB_OOV);
    ck_assert_int_eq(s->field_kind[2], MML__FIELD_DOMAIN);
    ck_assert_int_eq(s->domain_mode, MML__DOMAIN_IDS);
    ck_assert_str_eq(s->label_column, "label");
    ck_assert_str_eq(s->domain_column, "domain");
    static const char *const tr_city[] = {"Paris", "New York, NY", "Paris", "Oslo"};
    static const char *const va_city[] = {"Lima", "Paris"};
    static const char *const te_city[] = {"New York, NY", ""};
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(tr, 0, 4, &v), MML_OK);
    for (int r = 0; r < 4; r++)
        ck_assert_int_eq(v.ids[3 * r], (int32_t)mml_hash_string(tr_city[r], strlen(tr_city[r]), 5, 64));
    ck_assert_int_eq(v.ids[0], v.ids[6]);
    /* Validation and test: the same function, unseen values included. */
    ck_assert_int_eq(mml_dataset_view(va, 0, 2, &v), MML_OK);
    for (int r = 0; r < 2; r++)
        ck_assert_int_eq(v.ids[3 * r], (int32_t)mml_hash_string(va_city[r], strlen(va_city[r]), 5, 64));
    ck_assert_int_eq(v.ids[3 * 1 + 1], 2); /* "z": f's OOV id */
    ck_assert_int_eq(mml_dataset_view(te, 0, 2, &v), MML_OK);
    for (int r = 0; r < 2; r++)
        ck_assert_int_eq(v.ids[3 * r], (int32_t)mml_hash_string(te_city[r], strlen(te_city[r]), 5, 64));
    mml_dataset_destroy(tr);
    mml_dataset_destroy(va);
    mml_dataset_destroy(te);

    /* A different seed moves some values. */
    o.hash_seed = 6;
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml__dataset_schema(tr)->field_seed[0], 6);
    mml_dataset_destroy(tr);

    /* Option errors. */
    static const char *const twice[] = {"city", "city"};
    static const int64_t b2[] = {8, 8};
    static const char *const dom[] = {"domain"};
    static const char *const lab[] = {"label"};
    static const char *const nope[] = {"nope"};
    static const char *const empty[] = {""};
    static const int64_t zero[] = {0}, big[] = {(int64_t)INT32_MAX + 1};
    hashed_options(&o, cols, zero, 1);
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    ASSERT_MSG_HAS(ctx, "hashed_buckets[0] = 0");
    ck_assert_ptr_null(tr);
    hashed_options(&o, cols, big, 1);
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    hashed_options(&o, cols, NULL, 1);
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    hashed_options(&o, empty, buckets, 1);
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    hashed_options(&o, cols, buckets, -1);
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    hashed_options(&o, twice, b2, 2);
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    ASSERT_MSG_HAS(ctx, "'city' listed twice in hashed_columns");
    hashed_options(&o, dom, buckets, 1);
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    ASSERT_MSG_HAS(ctx, "is the domain column");
    hashed_options(&o, lab, buckets, 1);
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    ASSERT_MSG_HAS(ctx, "'label' is not a categorical column");
    hashed_options(&o, nope, buckets, 1);
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_ENOTFOUND);
    ASSERT_MSG_HAS(ctx, "no column 'nope'");
    static const char *const only_f[] = {"f"};
    hashed_options(&o, cols, buckets, 1);
    o.field_columns = only_f;
    o.n_field_columns = 1;
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    ASSERT_MSG_HAS(ctx, "not in field_columns");
    /* Listed in field_columns: hashed at its place there. */
    static const char *const fc[] = {"f", "city"};
    o.field_columns = fc;
    o.n_field_columns = 2;
    ck_assert_int_eq(load3(ctx, &o, "h_train.csv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_dataset_n_fields(tr), 2);
    ck_assert_int_eq(mml_dataset_field_size(tr, 1), 64);
    ck_assert_int_eq(id_of_field(tr, 3, 1), (int32_t)mml_hash_string("Oslo", 4, 5, 64));
    mml_dataset_destroy(tr);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------ round trips */

typedef struct bytes {
    uint8_t *p;
    size_t n;
} bytes;

static bytes serialise(mml_ctx *ctx, const mml__schema *s)
{
    mml__wbuf w;
    mml__wbuf_init(&w, ctx);
    mml__schema_write(&w, s);
    ck_assert_int_eq(mml__wbuf_status(&w), MML_OK);
    bytes b = {malloc(w.len ? w.len : 1), w.len};
    ck_assert_ptr_nonnull(b.p);
    memcpy(b.p, w.data, w.len);
    mml__wbuf_free(&w);
    return b;
}

static int parse(mml_ctx *ctx, const uint8_t *p, size_t n, mml__schema **out, size_t *used)
{
    mml__rbuf r;
    mml__rbuf_init(&r, ctx, p, n, 0, "schema");
    int rc = mml__schema_read(ctx, &r, out);
    if (used)
        *used = r.pos;
    return rc;
}

static void assert_vocab_eq(const mml__vocab *a, const mml__vocab *b)
{
    ck_assert_int_eq(a == NULL, b == NULL);
    if (!a)
        return;
    ck_assert_int_eq(a->n, b->n);
    for (int32_t id = 0; id < a->n; id++) {
        int64_t la = a->off[id + 1] - a->off[id], lb = b->off[id + 1] - b->off[id];
        ck_assert_int_eq(la, lb);
        ck_assert_int_eq(memcmp(a->chars + a->off[id], b->chars + b->off[id], (size_t)la), 0);
        ck_assert_int_eq(mml__vocab_find(b, mml__vocab_str(a, id), (size_t)la - 1), id);
    }
}

static void assert_str_eq_or_null(const char *a, const char *b)
{
    ck_assert_int_eq(a == NULL, b == NULL);
    if (a)
        ck_assert_str_eq(a, b);
}

/* Field by field, independent of the byte layout. */
static void assert_schema_eq(const mml__schema *a, const mml__schema *b)
{
    ck_assert_int_eq(a->n_fields, b->n_fields);
    ck_assert_int_eq(a->n_dense, b->n_dense);
    ck_assert_int_eq(a->n_multihot, b->n_multihot);
    ck_assert_int_eq(a->n_domains, b->n_domains);
    ck_assert_int_eq(a->domain_field, b->domain_field);
    ck_assert_int_eq(a->source, b->source);
    ck_assert_int_eq(a->label_kind, b->label_kind);
    ck_assert_int_eq(a->label_min, b->label_min);
    ck_assert_int_eq(a->domain_mode, b->domain_mode);
    ck_assert_int_eq(a->delimiter, b->delimiter);
    ck_assert_int_eq(a->mh_separator, b->mh_separator);
    ck_assert_str_eq(a->label_column, b->label_column);
    assert_str_eq_or_null(a->domain_column, b->domain_column);
    for (int32_t f = 0; f < a->n_fields; f++) {
        ck_assert_str_eq(a->field_names[f], b->field_names[f]);
        ck_assert_int_eq(a->field_kind[f], b->field_kind[f]);
        ck_assert_int_eq(a->field_sizes[f], b->field_sizes[f]);
        ck_assert_int_eq(a->field_oov[f], b->field_oov[f]);
        ck_assert_uint_eq(a->field_seed[f], b->field_seed[f]);
        assert_vocab_eq(a->field_vocab[f], b->field_vocab[f]);
    }
    for (int32_t j = 0; j < a->n_dense; j++)
        ck_assert_str_eq(a->dense_names[j], b->dense_names[j]);
    for (int32_t m = 0; m < a->n_multihot; m++) {
        ck_assert_str_eq(a->mh_names[m], b->mh_names[m]);
        ck_assert_int_eq(a->mh_sizes[m], b->mh_sizes[m]);
        assert_vocab_eq(a->mh_vocab[m], b->mh_vocab[m]);
    }
    for (int32_t d = 0; d < a->n_domains; d++)
        ck_assert_str_eq(a->domain_names[d], b->domain_names[d]);
    assert_vocab_eq(a->domain_vocab, b->domain_vocab);
}

/* write -> read gives an equal schema that writes the same bytes, all consumed. */
static void assert_round_trip(mml_ctx *ctx, const mml__schema *s)
{
    bytes a = serialise(ctx, s);
    mml__schema *t = NULL;
    size_t used = 0;
    ck_assert_msg(parse(ctx, a.p, a.n, &t, &used) == MML_OK, "%s", mml_ctx_last_error(ctx));
    ck_assert_uint_eq(used, a.n);
    assert_schema_eq(s, t);
    bytes b = serialise(ctx, t);
    ck_assert_uint_eq(a.n, b.n);
    ck_assert_int_eq(memcmp(a.p, b.p, a.n), 0);
    mml__schema_release(ctx, t);
    free(a.p);
    free(b.p);
}

/* Every role: a vocabulary field, a hashed field, numeric, multi-hot and
 * the domain field (values 0..2: ids). */
static const char *const full_train = "label,domain,user,city,price,tags,junk\n"
                                      "1,0,u1,Paris,1.5,a|b,j\n"
                                      "0,1,u2,Oslo,2,b,j\n"
                                      "1,2,u1,Lima,-3e2,,j\n"
                                      "0,1,u3,Paris,0.25,c|a|zz,j\n";
static const char *const num_cols[] = {"price"};
static const char *const mh_cols[] = {"tags"};
static const char *const ign_cols[] = {"junk"};
static const char *const hash_cols[] = {"city"};
static const int64_t hash_buckets[] = {1000};

static void full_options(mml_csv_options *o)
{
    mml_csv_options_init(o);
    o->numeric_columns = num_cols;
    o->n_numeric_columns = 1;
    o->multihot_columns = mh_cols;
    o->n_multihot_columns = 1;
    o->ignore_columns = ign_cols;
    o->n_ignore_columns = 1;
    o->hashed_columns = hash_cols;
    o->hashed_buckets = hash_buckets;
    o->n_hashed_columns = 1;
    o->hash_seed = 9;
}

static mml_dataset *load_full(mml_ctx *ctx)
{
    write_str("full_train.csv", full_train);
    mml_csv_options o;
    full_options(&o);
    mml_dataset *tr;
    ck_assert_int_eq(load3(ctx, &o, "full_train.csv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    return tr;
}

START_TEST(schema_round_trip_csv)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *tr = load_full(ctx);
    const mml__schema *s = mml__dataset_schema(tr);
    ck_assert_int_eq(s->n_fields, 3);
    ck_assert_int_eq(s->field_kind[0], MML__FIELD_VOCAB_OOV);
    ck_assert_int_eq(s->field_kind[1], MML__FIELD_HASHED);
    ck_assert_int_eq(s->field_kind[2], MML__FIELD_DOMAIN);
    ck_assert_int_eq(s->domain_field, 2);
    ck_assert_int_eq(s->domain_mode, MML__DOMAIN_IDS);
    ck_assert_ptr_null(s->domain_vocab);
    ck_assert_int_eq(s->source, MML__SOURCE_CSV);
    ck_assert_int_eq(s->delimiter, ',');
    ck_assert_int_eq(s->mh_separator, '|');
    assert_round_trip(ctx, s);
    mml_dataset_destroy(tr);

    /* String domains (sorted numbering) as field 0 through field_columns,
     * TSV with a ';' separator, a value with a NUL byte inside. */
    static const char tsv[] = "y\tg\tuser\tt\n1\tM\tu1\ta;b\n0\tF\tu\0x\tb\n1\tM\tu2\t\n";
    char p[512];
    tpath(p, sizeof p, "names.tsv");
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite(tsv, 1, sizeof tsv - 1, f);
    fclose(f);
    static const char *const fc[] = {"g", "user"};
    static const char *const mh[] = {"t"};
    mml_csv_options o;
    mml_csv_options_init(&o);
    o.label_column = "y";
    o.domain_column = "g";
    o.delimiter = '\t';
    o.multihot_separator = ';';
    o.field_columns = fc;
    o.n_field_columns = 2;
    o.multihot_columns = mh;
    o.n_multihot_columns = 1;
    ck_assert_int_eq(load3(ctx, &o, "names.tsv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    s = mml__dataset_schema(tr);
    ck_assert_int_eq(s->domain_mode, MML__DOMAIN_NAMES);
    ck_assert_ptr_nonnull(s->domain_vocab);
    ck_assert_int_eq(s->domain_field, 0);
    ck_assert_int_eq(s->field_kind[0], MML__FIELD_DOMAIN);
    ck_assert_str_eq(s->field_names[0], "g");
    ck_assert_str_eq(s->domain_names[0], "F");
    ck_assert_int_eq(s->field_vocab[1]->n, 3);
    ck_assert_int_eq(s->delimiter, '\t');
    ck_assert_int_eq(s->mh_separator, ';');
    assert_round_trip(ctx, s);
    mml_dataset_destroy(tr);

    /* No domain column: one domain, no domain field. */
    o.domain_column = NULL;
    o.field_columns = NULL;
    o.n_field_columns = 0;
    write_str("nodom.tsv", "y\tuser\tt\n1\tu1\ta\n0\tu2\t\n");
    ck_assert_int_eq(load3(ctx, &o, "nodom.tsv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    s = mml__dataset_schema(tr);
    ck_assert_int_eq(s->domain_mode, MML__DOMAIN_ONE);
    ck_assert_ptr_null(s->domain_column);
    ck_assert_int_eq(s->n_domains, 1);
    ck_assert_int_eq(s->domain_field, -1);
    assert_round_trip(ctx, s);
    mml_dataset_destroy(tr);
    mml_ctx_destroy(ctx);
}
END_TEST

/* A small ML-100K fixture: occupations by name from u.occupation. */
static void write_ml100k(const char *dir)
{
    char p[512], buf[4096];
    snprintf(p, sizeof p, "%s/%s", tmpdir, dir);
    mkdir(p, 0755);
    size_t k = 0;
    for (int o = 0; o < 4; o++)
        k += (size_t)sprintf(buf + k, "job_%c\n", 'a' + o);
    snprintf(p, sizeof p, "%s/u.occupation", dir);
    buf[k] = '\0';
    write_str(p, buf);
    k = 0;
    for (int u = 1; u <= 6; u++)
        k += (size_t)sprintf(buf + k, "%d|%d|%c|job_%c|%05d\n", u * 3, 15 + 7 * u,
                             u % 2 ? 'M' : 'F', 'a' + u % 4, u);
    snprintf(p, sizeof p, "%s/u.user", dir);
    buf[k] = '\0';
    write_str(p, buf);
    k = 0;
    for (int u = 1; u <= 6; u++)
        for (int i = 0; i < 5; i++)
            k += (size_t)sprintf(buf + k, "%d\t%d\t%d\t%d\n", u * 3, 10 + i * 11,
                                 1 + (u * 7 + i * 3) % 5, 880000000 + u * 10 + i);
    snprintf(p, sizeof p, "%s/u.data", dir);
    buf[k] = '\0';
    write_str(p, buf);
}

static void load_ml(mml_ctx *ctx, int by, mml_dataset *out[3])
{
    write_ml100k("ml");
    char p[512];
    tpath(p, sizeof p, "ml");
    mml_movielens_options o;
    mml_movielens_options_init(&o);
    o.dir = p;
    o.domain_by = by;
    o.label_min = 4;
    ck_assert_int_eq(mml_movielens_load(ctx, &o, &out[0], &out[1], &out[2]), MML_OK);
}

static void load_synth(mml_ctx *ctx, mml_dataset *out[3])
{
    mml_synthetic_options o;
    mml_synthetic_options_init(&o);
    o.n_rows = 600;
    o.n_domains = 3;
    o.n_users = 12;
    o.n_items = 9;
    ck_assert_int_eq(mml_synthetic_generate(ctx, &o, &out[0], &out[1], &out[2]), MML_OK);
}

static void destroy3(mml_dataset *d[3])
{
    for (int k = 0; k < 3; k++)
        mml_dataset_destroy(d[k]);
}

START_TEST(schema_round_trip_movielens_synthetic)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *d[3];
    for (int by = 0; by < 3; by++) {
        load_ml(ctx, by, d);
        const mml__schema *s = mml__dataset_schema(d[0]);
        ck_assert_ptr_eq(s, mml__dataset_schema(d[2]));
        ck_assert_int_eq(s->source, MML__SOURCE_MOVIELENS);
        ck_assert_int_eq(s->field_kind[0], MML__FIELD_VOCAB);
        ck_assert_int_eq(s->field_kind[1], MML__FIELD_VOCAB);
        ck_assert_int_eq(s->field_kind[2], MML__FIELD_DOMAIN);
        ck_assert_int_eq(s->field_oov[0], -1);
        ck_assert_int_eq(s->label_kind, MML__LABEL_RATING_MIN);
        ck_assert_int_eq(s->label_min, 4);
        ck_assert_str_eq(s->label_column, "rating");
        ck_assert_int_eq(s->domain_mode, MML__DOMAIN_NAMES);
        ck_assert_int_eq(s->n_domains, by == 0 ? 2 : by == 1 ? 7 : 4);
        if (by == 2)
            ck_assert_str_eq(s->domain_names[3], "job_d");
        assert_round_trip(ctx, s);
        destroy3(d);
    }
    load_synth(ctx, d);
    const mml__schema *s = mml__dataset_schema(d[1]);
    ck_assert_int_eq(s->source, MML__SOURCE_SYNTHETIC);
    ck_assert_int_eq(s->field_kind[0], MML__FIELD_IDS);
    ck_assert_int_eq(s->field_sizes[0], 12);
    ck_assert_int_eq(s->field_kind[2], MML__FIELD_DOMAIN);
    ck_assert_int_eq(s->domain_mode, MML__DOMAIN_IDS);
    ck_assert_str_eq(s->domain_names[2], "d2");
    assert_round_trip(ctx, s);
    /* A retained schema outlives its data sets. */
    mml__schema *kept = mml__dataset_schema(d[0]);
    mml__schema_retain(kept);
    destroy3(d);
    ck_assert_int_eq(kept->n_domains, 3);
    assert_round_trip(ctx, kept);
    mml__schema_release(ctx, kept);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------ untrusted bytes */

/* Every truncation fails as such; every single-byte corruption is an error
 * with a message, or a schema that writes back exactly the bytes it read. */
static void check_untrusted(mml_ctx *ctx, const bytes *a)
{
    mml__schema *t;
    for (size_t n = 0; n < a->n; n++) {
        ck_assert_int_eq(parse(ctx, a->p, n, &t, NULL), MML_ETRUNCATED);
        ck_assert_ptr_null(t);
        ck_assert_msg(has(mml_ctx_last_error(ctx), "schema at byte"), "%s",
                      mml_ctx_last_error(ctx));
    }
    uint8_t *c = malloc(a->n);
    ck_assert_ptr_nonnull(c);
    long accepted = 0;
    for (size_t i = 0; i < a->n; i++) {
        for (int v = 0; v < 256; v++) {
            if (v == a->p[i])
                continue;
            memcpy(c, a->p, a->n);
            c[i] = (uint8_t)v;
            size_t used = 0;
            int rc = parse(ctx, c, a->n, &t, &used);
            if (rc < 0) {
                ck_assert_ptr_null(t);
                ck_assert_msg(rc == MML_ETRUNCATED || rc == MML_ECORRUPT || rc == MML_EVERSION,
                              "byte %zu = %d: status %d", i, v, rc);
                ck_assert(mml_ctx_last_error(ctx)[0] != '\0');
                continue;
            }
            accepted++;
            bytes b = serialise(ctx, t);
            ck_assert_msg(b.n == used && memcmp(b.p, c, used) == 0, "byte %zu = %d", i, v);
            free(b.p);
            mml__schema_release(ctx, t);
        }
    }
    ck_assert_int_gt(accepted, 0); /* e.g. the bytes of names */
    free(c);
}

START_TEST(schema_truncation_and_corruption)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    /* Every field kind and domain mode: CSV (vocabulary, hashed, domain
     * field, ids mode), TSV with string domains (names mode, a NUL byte in
     * a value), synthetic (ids fields), MovieLens (vocabularies without
     * out-of-vocabulary id, rating labels). */
    mml_dataset *tr = load_full(ctx);
    bytes a = serialise(ctx, mml__dataset_schema(tr));
    mml_dataset_destroy(tr);
    check_untrusted(ctx, &a);
    free(a.p);
    static const char tsv[] = "y\tg\tuser\n1\tM\tu1\n0\tF\tu\0x\n";
    char p[512];
    tpath(p, sizeof p, "corrupt.tsv");
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite(tsv, 1, sizeof tsv - 1, f);
    fclose(f);
    mml_csv_options o;
    mml_csv_options_init(&o);
    o.label_column = "y";
    o.domain_column = "g";
    o.delimiter = '\t';
    ck_assert_int_eq(load3(ctx, &o, "corrupt.tsv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml__dataset_schema(tr)->domain_mode, MML__DOMAIN_NAMES);
    a = serialise(ctx, mml__dataset_schema(tr));
    mml_dataset_destroy(tr);
    check_untrusted(ctx, &a);
    free(a.p);
    mml_dataset *d[3];
    load_synth(ctx, d);
    a = serialise(ctx, mml__dataset_schema(d[0]));
    destroy3(d);
    check_untrusted(ctx, &a);
    free(a.p);
    load_ml(ctx, MML_DOMAIN_BY_GENDER, d);
    a = serialise(ctx, mml__dataset_schema(d[0]));
    destroy3(d);
    check_untrusted(ctx, &a);
    free(a.p);
    mml_ctx_destroy(ctx);
}
END_TEST

static size_t find_bytes(const bytes *b, const void *pat, size_t n)
{
    for (size_t i = 0; i + n <= b->n; i++)
        if (memcmp(b->p + i, pat, n) == 0)
            return i;
    ck_abort_msg("pattern not found");
    return 0;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Patches n bytes at off with v, parses, expects rc and a message part. */
static void expect_bad(mml_ctx *ctx, const bytes *good, size_t off, uint64_t v, int n, int rc,
                       const char *part)
{
    uint8_t *c = malloc(good->n);
    ck_assert_ptr_nonnull(c);
    memcpy(c, good->p, good->n);
    put_le(c + off, v, n);
    mml__schema *t = (mml__schema *)1;
    ck_assert_int_eq(parse(ctx, c, good->n, &t, NULL), rc);
    ck_assert_ptr_null(t);
    ASSERT_MSG_HAS(ctx, part);
    free(c);
}

START_TEST(schema_malformed_fields_named)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *tr = load_full(ctx);
    bytes g = serialise(ctx, mml__dataset_schema(tr));
    mml_dataset_destroy(tr);
    /* Header: version, source, delimiter, separator, then strings. */
    expect_bad(ctx, &g, 0, 2, 4, MML_EVERSION, "schema version 2");
    expect_bad(ctx, &g, 4, 9, 4, MML_ECORRUPT, "schema source 9 unknown");
    expect_bad(ctx, &g, 8, '"', 4, MML_ECORRUPT, "delimiter 34");
    expect_bad(ctx, &g, 12, 300, 4, MML_ECORRUPT, "multi-hot separator 300");
    expect_bad(ctx, &g, 16, 0xFFFFFFFFu, 4, MML_ECORRUPT, "label column is missing");
    expect_bad(ctx, &g, 16, 1u << 29, 4, MML_ECORRUPT, "label column has 536870912 bytes");
    size_t off_lk = 16 + 4 + 5;
    expect_bad(ctx, &g, off_lk, 7, 4, MML_ECORRUPT, "label kind 7 unknown");
    expect_bad(ctx, &g, off_lk + 4, 3, 4, MML_ECORRUPT, "label threshold 3");
    size_t off_mode = off_lk + 8 + 4 + 6;
    expect_bad(ctx, &g, off_mode, 5, 4, MML_ECORRUPT, "domain mode 5 unknown");
    expect_bad(ctx, &g, off_mode, MML__DOMAIN_ONE, 4, MML_ECORRUPT, "does not allow a domain column");
    size_t off_D = off_mode + 4;
    expect_bad(ctx, &g, off_D, (uint64_t)-1, 8, MML_ECORRUPT, "domain count = -1 outside");
    expect_bad(ctx, &g, off_D, 0, 8, MML_ECORRUPT, "domain count = 0 outside");
    expect_bad(ctx, &g, off_D, 1ull << 40, 8, MML_ECORRUPT, "domain count = 1099511627776");
    expect_bad(ctx, &g, off_D, 100000, 8, MML_ETRUNCATED, "domain count = 100000 needs at least");
    /* Fields: after three domain names of one byte each. */
    size_t off_nf = off_D + 8 + 3 * 5;
    expect_bad(ctx, &g, off_nf, (uint64_t)-5, 8, MML_ECORRUPT, "field count = -5");
    expect_bad(ctx, &g, off_nf, 1000000, 8, MML_ETRUNCATED, "field count = 1000000 needs");
    expect_bad(ctx, &g, off_nf + 8, 3, 4, MML_ECORRUPT, "domain field 3 not in -1 .. 2");
    expect_bad(ctx, &g, off_nf + 8, 0, 4, MML_ECORRUPT, "field 0 ('user'): kind 1 but the domain field is 0");
    size_t off_user = find_bytes(&g, "\x04\0\0\0user", 8) + 8;
    expect_bad(ctx, &g, off_user, 9, 4, MML_ECORRUPT, "field 0 ('user'): kind 9 unknown");
    expect_bad(ctx, &g, off_user, MML__FIELD_HASHED, 4, MML_ECORRUPT,
               "field 0 ('user'): out-of-vocabulary id 3, expected -1");
    expect_bad(ctx, &g, off_user + 4, 0, 4, MML_ECORRUPT, "field 0 ('user'): size 0");
    expect_bad(ctx, &g, off_user + 8, 1, 4, MML_ECORRUPT,
               "field 0 ('user'): out-of-vocabulary id 1, expected 3");
    expect_bad(ctx, &g, off_user + 12, 1, 8, MML_ECORRUPT, "a seed on a field that is not hashed");
    expect_bad(ctx, &g, off_user + 20, 2, 8, MML_ECORRUPT,
               "field 0 ('user') value count = 2, the size says 3");
    expect_bad(ctx, &g, off_user + 20, (uint64_t)-1, 8, MML_ECORRUPT, "field 0 ('user') value count = -1");
    size_t off_u2 = find_bytes(&g, "\x02\0\0\0u2", 6) + 4;
    expect_bad(ctx, &g, off_u2, 'u' | ('1' << 8), 2, MML_ECORRUPT,
               "field 0 ('user') value 1 is a duplicate of value 0");
    size_t off_city = find_bytes(&g, "\x04\0\0\0city", 8) + 8;
    expect_bad(ctx, &g, off_city + 4, 0, 4, MML_ECORRUPT, "field 1 ('city'): size 0");
    size_t off_dom = find_bytes(&g, "\x06\0\0\0domain\x04", 11) + 10;
    expect_bad(ctx, &g, off_dom + 4, 2, 4, MML_ECORRUPT, "the domain field must have size D = 3");
    /* Two roles for one column name: the multi-hot "tags" renamed "user". */
    size_t off_tags = find_bytes(&g, "\x04\0\0\0tags", 8) + 4;
    expect_bad(ctx, &g, off_tags, 0x72657375u, 4, MML_ECORRUPT, "column 'user' has two roles");
    expect_bad(ctx, &g, off_tags + 4, 0, 4, MML_ECORRUPT, "multi-hot field 0 ('tags'): size 0");
    expect_bad(ctx, &g, off_tags - 12, 1000000, 8, MML_ETRUNCATED, "multi-hot field count = 1000000");
    size_t off_price = find_bytes(&g, "\x05\0\0\0price", 9);
    expect_bad(ctx, &g, off_price - 8, 100, 8, MML_ETRUNCATED, "numeric column count = 100");
    expect_bad(ctx, &g, off_price, 0xFFFFFFFFu, 4, MML_ECORRUPT, "numeric column 0 name is missing");
    free(g.p);

    /* Domain names that must be distinct (they map raw values). */
    write_str("fm.csv", "label,domain,u\n1,F,a\n0,M,b\n");
    mml_dataset *d2;
    ck_assert_int_eq(load3(ctx, NULL, "fm.csv", NULL, NULL, &d2, NULL, NULL), MML_OK);
    g = serialise(ctx, mml__dataset_schema(d2));
    mml_dataset_destroy(d2);
    size_t off_m = find_bytes(&g, "\x01\0\0\0M", 5) + 4;
    expect_bad(ctx, &g, off_m, 'F', 1, MML_ECORRUPT, "domain 1 name is a duplicate of domain 0");
    free(g.p);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(schema_read_bind_allocation_failures)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *tr = load_full(ctx);
    bytes g = serialise(ctx, mml__dataset_schema(tr));
    mml_dataset_destroy(tr);
    mml_ctx_destroy(ctx);
    static const char *const names[] = {"tags", "price", "x", "city", "user", "domain", "label"};
    int done = 0;
    for (long k = 1; !done && k < 500; k++) {
        counting_allocator al;
        mml_ctx *c = counting_ctx(&al, 0, 1, 1);
        ck_assert_ptr_nonnull(c);
        al.fail_at = al.calls + k;
        mml__schema *s = NULL;
        int rc = parse(c, g.p, g.n, &s, NULL);
        mml__binding *b = NULL;
        if (rc == MML_OK)
            rc = mml__schema_bind(c, s, 7, names, &b);
        if (rc == MML_OK) {
            done = 1;
            ck_assert_int_eq(b->domain_col, 5);
        } else {
            ck_assert_int_eq(rc, MML_ENOMEM);
            ck_assert_ptr_null(b);
        }
        mml__binding_destroy(c, b);
        mml__schema_release(c, s);
        mml_ctx_destroy(c);
        ck_assert_int_eq(al.live, 0);
    }
    ck_assert(done);
    free(g.p);
}
END_TEST

/* ------------------------------------------------------------ mapping raw rows */

/* A test file as raw cells (before quoting); written with RFC 4180 quoting. */
#define MAXC 8
typedef struct raw_file {
    int n_cols, n_rows;
    const char *header[MAXC];
    const char *rows[16][MAXC];
} raw_file;

static void write_raw(const char *name, const raw_file *f, char delim)
{
    char buf[8192];
    size_t k = 0;
    for (int r = -1; r < f->n_rows; r++) {
        for (int c = 0; c < f->n_cols; c++) {
            const char *v = r < 0 ? f->header[c] : f->rows[r][c];
            if (c)
                buf[k++] = delim;
            int q = strchr(v, delim) || strchr(v, '"') || v[0] == '"';
            if (q)
                buf[k++] = '"';
            for (const char *p = v; *p; p++) {
                if (*p == '"')
                    buf[k++] = '"';
                buf[k++] = *p;
            }
            if (q)
                buf[k++] = '"';
        }
        buf[k++] = '\n';
    }
    buf[k] = '\0';
    write_str(name, buf);
}

/* Binds the file's header, maps every row and compares with ds (the CSV
 * reader's result for the same file, in file order). */
static void assert_map_equals(mml_ctx *ctx, const mml_dataset *ds, const raw_file *f,
                              int with_lens)
{
    const mml__schema *s = mml__dataset_schema(ds);
    mml__binding *b;
    ck_assert_msg(mml__schema_bind(ctx, s, f->n_cols, f->header, &b) == MML_OK, "%s",
                  mml_ctx_last_error(ctx));
    ck_assert_int_eq(mml_dataset_n_rows(ds), f->n_rows);
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(ds, 0, f->n_rows, &v), MML_OK);
    for (int r = 0; r < f->n_rows; r++) {
        int32_t ids[MAXC], dom = -7, bad = 99;
        float dense[MAXC], label = -1.0f;
        int64_t mh_off[MAXC + 1];
        int32_t mh_ids[64];
        size_t lens[MAXC];
        for (int c = 0; c < f->n_cols; c++)
            lens[c] = strlen(f->rows[r][c]);
        int rc = mml__schema_map_row(s, b, f->rows[r], with_lens ? lens : NULL, ids, dense, &dom,
                                     &label, mh_off, mh_ids, 64, &bad);
        ck_assert_msg(rc == MML_OK, "row %d: status %d at column %d", r, rc, (int)bad);
        ck_assert_int_eq(bad, -1);
        for (int32_t fi = 0; fi < v.n_fields; fi++)
            ck_assert_msg(ids[fi] == v.ids[r * v.n_fields + fi], "row %d field %d: %d vs %d", r,
                          (int)fi, (int)ids[fi], (int)v.ids[r * v.n_fields + fi]);
        for (int32_t j = 0; j < v.n_dense; j++)
            ck_assert(memcmp(&dense[j], &v.dense[r * v.n_dense + j], sizeof(float)) == 0);
        ck_assert_int_eq(dom, v.domain[r]);
        if (b->label_col >= 0)
            ck_assert(label == v.labels[r]);
        for (int32_t m = 0; m < s->n_multihot; m++) {
            const int32_t *want;
            int64_t n;
            ck_assert_int_eq(mml_dataset_multihot_row(ds, m, r, &want, &n), MML_OK);
            ck_assert_int_eq(mh_off[m + 1] - mh_off[m], n);
            for (int64_t k = 0; k < n; k++)
                ck_assert_int_eq(mh_ids[mh_off[m] + k], want[k]);
        }
    }
    mml__binding_destroy(ctx, b);
}

/* Columns in another order than training, an extra column, quoted cells,
 * unknown values (out-of-vocabulary ids, new hash buckets), numbers in
 * several spellings, empty and unknown multi-hot values. */
static const raw_file full_test = {
    7,
    6,
    {"extra", "tags", "city", "price", "user", "domain", "label"},
    {{"e", "a|b", "Paris", "1.5", "u1", "0", "1"},
     {"e", "", "New, York", "2e3", "u9", "2", "0"},
     {"e", "zz|q|", "\"Q\"", " -0.5", "u3", "1", "1"},
     {"e", "b", "", "0x10", "", "1", "0"},
     {"e", "c,a", "Oslo", "1e-40", "u2", "0", "1"},
     {"e", "|", "Lima", ".25", "u,1", "2", "0"}}};

START_TEST(map_row_equals_csv_reader)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    write_str("full_train.csv", full_train);
    write_raw("full_test.csv", &full_test, ',');
    mml_csv_options o;
    full_options(&o);
    mml_dataset *tr, *te;
    ck_assert_int_eq(load3(ctx, &o, "full_train.csv", NULL, "full_test.csv", &tr, NULL, &te),
                     MML_OK);
    assert_map_equals(ctx, te, &full_test, 0);
    assert_map_equals(ctx, te, &full_test, 1);
    /* The schema read back from its bytes maps the same way. */
    mml__schema *s2;
    bytes g = serialise(ctx, mml__dataset_schema(te));
    ck_assert_int_eq(parse(ctx, g.p, g.n, &s2, NULL), MML_OK);
    mml__rbuf r;
    mml__rbuf_init(&r, ctx, g.p, g.n, 0, "schema");
    mml_ctx *other = plain_ctx(1, 1);
    mml__schema *s3 = (mml__schema *)1;
    ck_assert_int_eq(mml__schema_read(other, &r, &s3), MML_EINVAL);
    ck_assert_ptr_null(s3);
    mml_ctx_destroy(other);
    free(g.p);
    mml__binding *b;
    ck_assert_int_eq(mml__schema_bind(ctx, s2, 7, full_test.header, &b), MML_OK);
    int32_t ids[3], dom, bad;
    float dense[1], label;
    int64_t off[2];
    int32_t mh[8];
    ck_assert_int_eq(mml__schema_map_row(s2, b, full_test.rows[1], NULL, ids, dense, &dom, &label,
                                         off, mh, 8, &bad), MML_OK);
    ck_assert_int_eq(ids[0], s2->field_oov[0]);
    ck_assert_int_eq(ids[1], (int32_t)mml_hash_string("New, York", 9, 9, 1000));
    ck_assert_int_eq(ids[2], 2);
    ck_assert_int_eq(dom, 2);
    ck_assert(dense[0] == 2000.0f);
    ck_assert(label == 0.0f);
    ck_assert_int_eq(off[1], 0);

    /* Bad values: the caller's column index of the first one. */
    const char *row[7] = {"e", "a", "Paris", "1", "u1", "0", "1"};
    row[3] = "abc";
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, &label, off, mh, 8,
                                         &bad), MML_EPARSE);
    ck_assert_int_eq(bad, 3);
    row[3] = "inf";
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, &label, off, mh, 8,
                                         &bad), MML_EPARSE);
    row[3] = "1e39"; /* finite as a double, not as a float */
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, &label, off, mh, 8,
                                         &bad), MML_EPARSE);
    row[1] = "a|b|c";
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, &label, off, mh, 2,
                                         &bad), MML_EPARSE); /* value errors come first */
    ck_assert_int_eq(bad, 3);
    row[3] = "1";
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, &label, off, mh, 2,
                                         &bad), MML_ESHAPE);
    ck_assert_int_eq(bad, 1);
    row[5] = "3";
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, &label, off, mh, 8,
                                         &bad), MML_ERANGE);
    ck_assert_int_eq(bad, 5);
    row[5] = "00";
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, &label, off, mh, 8,
                                         &bad), MML_ERANGE);
    row[5] = "1";
    row[6] = "yes";
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, &label, off, mh, 8,
                                         &bad), MML_EPARSE);
    ck_assert_int_eq(bad, 6);
    /* Without a label output the label column is not read. */
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, NULL, off, mh, 8,
                                         &bad), MML_OK);
    row[6] = "1";
    row[4] = NULL;
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, &label, off, mh, 8,
                                         &bad), MML_EINVAL);
    ck_assert_int_eq(bad, 4);
    row[4] = "u1";
    row[0] = NULL; /* an unbound column is never read */
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, ids, dense, &dom, &label, off, mh, 8,
                                         &bad), MML_OK);
    ck_assert_int_eq(bad, -1);
    ck_assert_int_eq(mml__schema_map_row(mml__dataset_schema(te), b, row, NULL, ids, dense, &dom,
                                         &label, off, mh, 8, &bad), MML_EINVAL);
    ck_assert_int_eq(mml__schema_map_row(s2, b, row, NULL, NULL, dense, &dom, &label, off, mh, 8,
                                         &bad), MML_EINVAL);
    mml__binding_destroy(ctx, b);

    /* Binding: the label is optional, a missing column is named, a column
     * listed twice is refused, unknown columns are ignored. */
    static const char *const nolabel[] = {"tags", "city", "price", "user", "domain", "zzz"};
    ck_assert_int_eq(mml__schema_bind(ctx, s2, 6, nolabel, &b), MML_OK);
    ck_assert_int_eq(b->label_col, -1);
    label = 42.0f;
    const char *row2[6] = {"a", "Paris", "1", "u1", "0", NULL};
    ck_assert_int_eq(mml__schema_map_row(s2, b, row2, NULL, ids, dense, &dom, &label, off, mh, 8,
                                         &bad), MML_OK);
    ck_assert(label == 42.0f);
    mml__binding_destroy(ctx, b);
    static const char *const missing[] = {"tags", "city", "user", "domain", "label"};
    ck_assert_int_eq(mml__schema_bind(ctx, s2, 5, missing, &b), MML_ENOTFOUND);
    ck_assert_ptr_null(b);
    ASSERT_MSG_HAS(ctx, "no column 'price' (a numeric column)");
    static const char *const nodom[] = {"tags", "city", "price", "user"};
    ck_assert_int_eq(mml__schema_bind(ctx, s2, 4, nodom, &b), MML_ENOTFOUND);
    ASSERT_MSG_HAS(ctx, "no column 'domain' (the domain column)");
    static const char *const twice[] = {"tags", "city", "price", "user", "domain", "city"};
    ck_assert_int_eq(mml__schema_bind(ctx, s2, 6, twice, &b), MML_EINVAL);
    ASSERT_MSG_HAS(ctx, "column 'city' is listed twice (1 and 5)");
    ck_assert_int_eq(mml__schema_bind(ctx, s2, -1, twice, &b), MML_EINVAL);
    ck_assert_int_eq(mml__schema_bind(ctx, NULL, 6, twice, &b), MML_EINVAL);
    mml__schema_release(ctx, s2);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(te);
    mml_ctx_destroy(ctx);
}
END_TEST

/* String domains (by name) as an explicit field, a vocabulary field, TSV. */
static const raw_file names_train = {
    4, 4, {"y", "g", "user", "n"},
    {{"1", "M", "u1", "1"}, {"0", "F", "u2", "2"}, {"1", "other", "u1", "3"}, {"0", "M", "u3", "4"}}};
static const raw_file names_test = {
    4, 4, {"n", "user", "g", "y"},
    {{"5", "u1", "other", "0"}, {"6", "u7", "F", "1"}, {"-1", "u3", "M", "1"}, {"7", "", "F", "0"}}};

START_TEST(map_row_domain_names_and_no_domain)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    write_raw("n_train.tsv", &names_train, '\t');
    write_raw("n_test.tsv", &names_test, '\t');
    static const char *const fc[] = {"user", "g"};
    static const char *const num[] = {"n"};
    mml_csv_options o;
    mml_csv_options_init(&o);
    o.label_column = "y";
    o.domain_column = "g";
    o.delimiter = '\t';
    o.field_columns = fc;
    o.n_field_columns = 2;
    o.numeric_columns = num;
    o.n_numeric_columns = 1;
    mml_dataset *tr, *te;
    ck_assert_int_eq(load3(ctx, &o, "n_train.tsv", NULL, "n_test.tsv", &tr, NULL, &te), MML_OK);
    const mml__schema *s = mml__dataset_schema(te);
    ck_assert_int_eq(s->domain_mode, MML__DOMAIN_NAMES);
    ck_assert_int_eq(s->domain_field, 1);
    assert_map_equals(ctx, te, &names_test, 0);
    mml__binding *b;
    ck_assert_int_eq(mml__schema_bind(ctx, s, 4, names_test.header, &b), MML_OK);
    const char *row[4] = {"1", "u1", "X", "1"};
    int32_t ids[2], dom, bad;
    float dense[1];
    ck_assert_int_eq(mml__schema_map_row(s, b, row, NULL, ids, dense, &dom, NULL, NULL, NULL, 0,
                                         &bad), MML_ERANGE);
    ck_assert_int_eq(bad, 2);
    mml__binding_destroy(ctx, b);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(te);

    /* Without a domain column every row is domain 0 and no column is required for it. */
    o.domain_column = "";
    static const char *const fc2[] = {"user"};
    static const char *const ign[] = {"g"};
    o.field_columns = fc2;
    o.n_field_columns = 1;
    o.ignore_columns = ign;
    o.n_ignore_columns = 1;
    ck_assert_int_eq(load3(ctx, &o, "n_train.tsv", NULL, "n_test.tsv", &tr, NULL, &te), MML_OK);
    ck_assert_int_eq(mml__dataset_schema(te)->domain_mode, MML__DOMAIN_ONE);
    assert_map_equals(ctx, te, &names_test, 1);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(te);
    mml_ctx_destroy(ctx);
}
END_TEST

/* Splits a line of plain (unquoted) cells on ',' in place. */
static int split_plain(char *line, char **cells, int max)
{
    int n = 0;
    for (char *p = line;; p++) {
        if (n < max)
            cells[n] = p;
        n++;
        p = strchr(p, ',');
        if (!p)
            return n;
        *p = '\0';
    }
}

START_TEST(map_row_synthetic_and_movielens)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *d[3];
    /* Synthetic: the raw rows are what mml_dataset_write_csv writes. */
    load_synth(ctx, d);
    char p[512];
    tpath(p, sizeof p, "synth_test.csv");
    ck_assert_int_eq(mml_dataset_write_csv(d[2], ctx, p), MML_OK);
    FILE *f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    char *cells[8];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    line[strcspn(line, "\n")] = '\0';
    ck_assert_int_eq(split_plain(line, cells, 8), 4);
    const mml__schema *s = mml__dataset_schema(d[2]);
    mml__binding *b;
    ck_assert_int_eq(mml__schema_bind(ctx, s, 4, (const char *const *)cells, &b), MML_OK);
    mml_batch_view v;
    int64_t n = mml_dataset_n_rows(d[2]);
    ck_assert_int_eq(mml_dataset_view(d[2], 0, n, &v), MML_OK);
    int64_t r = 0;
    int32_t ids[3], dom, bad;
    float label;
    for (; fgets(line, sizeof line, f); r++) {
        line[strcspn(line, "\n")] = '\0';
        ck_assert_int_eq(split_plain(line, cells, 8), 4);
        ck_assert_int_eq(mml__schema_map_row(s, b, (const char *const *)cells, NULL, ids, NULL,
                                             &dom, &label, NULL, NULL, 0, &bad), MML_OK);
        for (int k = 0; k < 3; k++)
            ck_assert_int_eq(ids[k], v.ids[3 * r + k]);
        ck_assert_int_eq(dom, v.domain[r]);
        ck_assert(label == v.labels[r]);
    }
    fclose(f);
    ck_assert_int_eq(r, n);
    const char *bad_user[4] = {"1", "0", "12", "0"};
    ck_assert_int_eq(mml__schema_map_row(s, b, bad_user, NULL, ids, NULL, &dom, &label, NULL, NULL,
                                         0, &bad), MML_ERANGE);
    ck_assert_int_eq(bad, 2);
    bad_user[2] = "x";
    ck_assert_int_eq(mml__schema_map_row(s, b, bad_user, NULL, ids, NULL, &dom, &label, NULL, NULL,
                                         0, &bad), MML_EPARSE);
    bad_user[2] = "1";
    bad_user[1] = "d1"; /* synthetic domains are given by id */
    ck_assert_int_eq(mml__schema_map_row(s, b, bad_user, NULL, ids, NULL, &dom, &label, NULL, NULL,
                                         0, &bad), MML_ERANGE);
    ck_assert_int_eq(bad, 1);
    mml__binding_destroy(ctx, b);
    destroy3(d);

    /* MovieLens: user and item by raw id, the domain by name, the rating. */
    load_ml(ctx, MML_DOMAIN_BY_OCCUPATION, d);
    s = mml__dataset_schema(d[2]);
    static const char *const hdr[] = {"rating", "domain", "item", "user"};
    ck_assert_int_eq(mml__schema_bind(ctx, s, 4, hdr, &b), MML_OK);
    n = mml_dataset_n_rows(d[2]);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(mml_dataset_view(d[2], 0, n, &v), MML_OK);
    for (r = 0; r < n; r++) {
        const char *row[4] = {"5", mml_dataset_domain_name(d[2], v.domain[r]),
                              mml_dataset_field_value(d[2], 1, v.ids[3 * r + 1]),
                              mml_dataset_field_value(d[2], 0, v.ids[3 * r])};
        ck_assert_int_eq(mml__schema_map_row(s, b, row, NULL, ids, NULL, &dom, &label, NULL, NULL,
                                             0, &bad), MML_OK);
        for (int k = 0; k < 3; k++)
            ck_assert_int_eq(ids[k], v.ids[3 * r + k]);
        ck_assert_int_eq(dom, v.domain[r]);
        ck_assert(label == 1.0f);
    }
    const char *row[4] = {"3", "job_b", "21", "3"};
    ck_assert_int_eq(mml__schema_map_row(s, b, row, NULL, ids, NULL, &dom, &label, NULL, NULL, 0,
                                         &bad), MML_OK);
    ck_assert(label == 0.0f); /* 3 < label_min 4 */
    ck_assert_int_eq(dom, 1);
    row[0] = "6";
    ck_assert_int_eq(mml__schema_map_row(s, b, row, NULL, ids, NULL, &dom, &label, NULL, NULL, 0,
                                         &bad), MML_EPARSE);
    ck_assert_int_eq(bad, 0);
    row[0] = "4";
    row[3] = "4"; /* no such user: MovieLens fields have no out-of-vocabulary id */
    ck_assert_int_eq(mml__schema_map_row(s, b, row, NULL, ids, NULL, &dom, &label, NULL, NULL, 0,
                                         &bad), MML_ERANGE);
    ck_assert_int_eq(bad, 3);
    mml__binding_destroy(ctx, b);
    destroy3(d);
    mml_ctx_destroy(ctx);
}
END_TEST

/* Many threads share one schema and binding: map_row only reads them. */
typedef struct map_job {
    const mml__schema *s;
    const mml__binding *b;
    int32_t ids[6][3];
    int rc;
} map_job;

static void *map_worker(void *arg)
{
    map_job *j = arg;
    for (int it = 0; it < 200 && j->rc == 0; it++)
        for (int r = 0; r < full_test.n_rows; r++) {
            int32_t dom, bad;
            float dense[1], label;
            int64_t off[2];
            int32_t mh[16];
            int rc = mml__schema_map_row(j->s, j->b, full_test.rows[r], NULL, j->ids[r], dense,
                                         &dom, &label, off, mh, 16, &bad);
            if (rc != MML_OK)
                j->rc = rc;
        }
    return NULL;
}

START_TEST(map_row_from_threads)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    write_str("full_train.csv", full_train);
    write_raw("full_test.csv", &full_test, ',');
    mml_csv_options o;
    full_options(&o);
    mml_dataset *tr, *te;
    ck_assert_int_eq(load3(ctx, &o, "full_train.csv", NULL, "full_test.csv", &tr, NULL, &te),
                     MML_OK);
    mml__binding *b;
    ck_assert_int_eq(mml__schema_bind(ctx, mml__dataset_schema(te), 7, full_test.header, &b),
                     MML_OK);
    map_job jobs[3];
    pthread_t th[3];
    for (int k = 0; k < 3; k++) {
        memset(&jobs[k], 0, sizeof jobs[k]);
        jobs[k].s = mml__dataset_schema(te);
        jobs[k].b = b;
        ck_assert_int_eq(pthread_create(&th[k], NULL, map_worker, &jobs[k]), 0);
    }
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(pthread_join(th[k], NULL), 0);
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(te, 0, 6, &v), MML_OK);
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(jobs[k].rc, 0);
        for (int r = 0; r < 6; r++)
            for (int fi = 0; fi < 3; fi++)
                ck_assert_int_eq(jobs[k].ids[r][fi], v.ids[3 * r + fi]);
    }
    mml__binding_destroy(ctx, b);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(te);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(csv_hashed_allocation_failures)
{
    write_str("h_train.csv", hashed_train);
    write_str("h_test.csv", hashed_test);
    static const char *const cols[] = {"city"};
    static const int64_t buckets[] = {64};
    mml_csv_options o;
    hashed_options(&o, cols, buckets, 1);
    int done = 0;
    for (long k = 1; !done && k < 2000; k++) {
        counting_allocator al;
        mml_ctx *c = counting_ctx(&al, 0, 1, 1);
        ck_assert_ptr_nonnull(c);
        al.fail_at = al.calls + k;
        mml_dataset *tr = NULL, *te = NULL;
        int rc = load3(c, &o, "h_train.csv", NULL, "h_test.csv", &tr, NULL, &te);
        if (rc == MML_OK)
            done = 1;
        else
            ck_assert_int_eq(rc, MML_ENOMEM);
        mml_dataset_destroy(tr);
        mml_dataset_destroy(te);
        mml_ctx_destroy(c);
        ck_assert_int_eq(al.live, 0);
    }
    ck_assert(done);
}
END_TEST

static Suite *schema_suite(void)
{
    Suite *s = suite_create("schema");
    TCase *h = tcase_create("hashing");
    tcase_set_timeout(h, 120);
    tcase_add_test(h, hash_string_pinned);
    tcase_add_test(h, csv_hashed_column);
    tcase_add_test(h, csv_hashed_allocation_failures);
    suite_add_tcase(s, h);
    TCase *io = tcase_create("io");
    tcase_set_timeout(io, 300);
    tcase_add_test(io, schema_round_trip_csv);
    tcase_add_test(io, schema_round_trip_movielens_synthetic);
    tcase_add_test(io, schema_truncation_and_corruption);
    tcase_add_test(io, schema_malformed_fields_named);
    tcase_add_test(io, schema_read_bind_allocation_failures);
    suite_add_tcase(s, io);
    TCase *m = tcase_create("mapping");
    tcase_set_timeout(m, 120);
    tcase_add_test(m, map_row_equals_csv_reader);
    tcase_add_test(m, map_row_domain_names_and_no_domain);
    tcase_add_test(m, map_row_synthetic_and_movielens);
    tcase_add_test(m, map_row_from_threads);
    suite_add_tcase(s, m);
    return s;
}

int main(void) { return run_suite_in_tmpdir(schema_suite(), tmpdir, sizeof tmpdir, "schema"); }
