/* Data layer: CSV reader, MovieLens readers (on fixtures the tests write),
 * synthetic generator, data sets, CSV output and the batcher. */
#include <stddef.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data_internal.h"
#include "testutil.h"

/* ------------------------------------------------------------ fixtures */

static char tmpdir[256];

static void tpath(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmpdir, name);
}

static void write_file(const char *name, const char *content, size_t len)
{
    char p[512];
    tpath(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(content, 1, len, f), len);
    fclose(f);
}

static void write_str(const char *name, const char *content)
{
    write_file(name, content, strlen(content));
}

/* Loads CSV files of tmpdir (NULL names allowed) with options (NULL: defaults). */
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

/* The message must start with "<tmpdir>/<rest>". */
static void assert_msg(mml_ctx *ctx, const char *rest)
{
    char want[1024];
    snprintf(want, sizeof want, "%s/%s", tmpdir, rest);
    ck_assert_str_eq(mml_ctx_last_error(ctx), want);
}

static int32_t id_of(const mml_dataset *ds, int64_t row, int32_t field)
{
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(ds, row, 1, &v), MML_OK);
    return v.ids[field];
}

static const char *value_of(const mml_dataset *ds, int64_t row, int32_t field)
{
    return mml_dataset_field_value(ds, field, id_of(ds, row, field));
}

static float label_of(const mml_dataset *ds, int64_t row)
{
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(ds, row, 1, &v), MML_OK);
    return v.labels[0];
}

static int32_t domain_of(const mml_dataset *ds, int64_t row)
{
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(ds, row, 1, &v), MML_OK);
    return v.domain[0];
}

static const char train_csv[] = "user,item,domain,label\n"
                                "u1,i1,0,1\n"
                                "u2,i2,1,0\n"
                                "u1,i3,1,1\n"
                                "u3,i1,0,0\n"
                                "u2,i1,0,1\n";
static const char val_csv[] = "label,domain,item,user,extra\n"
                              "1,1,i9,u1,x\n"
                              "0,0,i2,u3,y\n";
static const char test_csv[] = "user,item,domain,label\n"
                               "u4,i1,1,0\n";

/* ------------------------------------------------------------ CSV */

START_TEST(csv_basic_layout_and_vocab)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    write_str("train.csv", train_csv);
    write_str("val.csv", val_csv);
    write_str("test.csv", test_csv);
    mml_dataset *tr, *va, *te;
    ck_assert_int_eq(load3(ctx, NULL, "train.csv", "val.csv", "test.csv", &tr, &va, &te), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(tr), 5);
    ck_assert_int_eq(mml_dataset_n_rows(va), 2);
    ck_assert_int_eq(mml_dataset_n_rows(te), 1);
    /* user, item, then the integer domain column as the last field. */
    ck_assert_int_eq(mml_dataset_n_fields(tr), 3);
    ck_assert_str_eq(mml_dataset_field_name(tr, 0), "user");
    ck_assert_str_eq(mml_dataset_field_name(tr, 1), "item");
    ck_assert_str_eq(mml_dataset_field_name(tr, 2), "domain");
    ck_assert_int_eq(mml_dataset_domain_field(tr), 2);
    ck_assert_int_eq(mml_dataset_find_field(tr, "item"), 1);
    ck_assert_int_eq(mml_dataset_find_field(tr, "nope"), -1);
    ck_assert_int_eq(mml_dataset_field_size(tr, 0), 4); /* u1 u2 u3 + OOV */
    ck_assert_int_eq(mml_dataset_field_size(tr, 1), 4); /* i1 i2 i3 + OOV */
    ck_assert_int_eq(mml_dataset_field_size(tr, 2), 2);
    ck_assert_int_eq(mml_dataset_field_oov(tr, 0), 3);
    ck_assert_int_eq(mml_dataset_field_oov(tr, 2), -1);
    ck_assert_int_eq(mml_dataset_n_domains(tr), 2);
    ck_assert_int_eq(mml_dataset_n_domains(te), 2);
    ck_assert_str_eq(mml_dataset_domain_name(tr, 0), "0");
    ck_assert_str_eq(mml_dataset_domain_name(tr, 1), "1");
    ck_assert_int_eq(mml_dataset_domain_rows(tr, 0), 3);
    ck_assert_int_eq(mml_dataset_domain_rows(tr, 1), 2);
    /* Sorted vocabulary. */
    ck_assert_str_eq(mml_dataset_field_value(tr, 0, 0), "u1");
    ck_assert_str_eq(mml_dataset_field_value(tr, 0, 2), "u3");
    ck_assert_ptr_null(mml_dataset_field_value(tr, 0, 3));
    ck_assert_int_eq(mml_dataset_field_lookup(tr, 1, "i3"), 2);
    ck_assert_int_eq(mml_dataset_field_lookup(tr, 1, "zzz"), 3);
    /* Rows in file order. */
    ck_assert_str_eq(value_of(tr, 2, 0), "u1");
    ck_assert_str_eq(value_of(tr, 2, 1), "i3");
    ck_assert_int_eq(id_of(tr, 2, 2), 1);
    ck_assert(label_of(tr, 0) == 1.0f && label_of(tr, 1) == 0.0f);
    /* Validation columns by name; unseen values map to OOV. */
    ck_assert_int_eq(id_of(va, 0, 1), 3);
    ck_assert_str_eq(value_of(va, 0, 0), "u1");
    ck_assert_int_eq(domain_of(va, 0), 1);
    ck_assert_int_eq(id_of(va, 0, 2), 1);
    ck_assert_str_eq(value_of(va, 1, 1), "i2");
    ck_assert_int_eq(id_of(te, 0, 0), 3);
    ck_assert_int_eq(mml_dataset_skipped_rows(tr), 0);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(va);
    mml_dataset_destroy(te);
    /* Only a training file. */
    ck_assert_int_eq(load3(ctx, NULL, "train.csv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(tr), 5);
    mml_dataset_destroy(tr);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(csv_roles_strings_numeric_multihot)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    write_str("t2.csv", "id,theme,click,price,tags,city,note\n"
                        "7,beta,1,2.5,a|b,paris,x\n"
                        "3,alpha,0,-1e3,,rome,y\n"
                        "7,gamma,0,0.25,b|c|a,paris,z\n");
    write_str("v2.csv", "id,theme,click,price,tags,city,note\n"
                        "9,gamma,1,1,d|a,oslo,q\n");
    static const char *const num[] = {"price"};
    static const char *const mh[] = {"tags"};
    static const char *const ign[] = {"note"};
    mml_csv_options o;
    mml_csv_options_init(&o);
    o.label_column = "click";
    o.domain_column = "theme";
    o.numeric_columns = num;
    o.n_numeric_columns = 1;
    o.multihot_columns = mh;
    o.n_multihot_columns = 1;
    o.ignore_columns = ign;
    o.n_ignore_columns = 1;
    mml_dataset *tr, *va;
    ck_assert_int_eq(load3(ctx, &o, "t2.csv", "v2.csv", NULL, &tr, &va, NULL), MML_OK);
    /* String domains: sorted, not a field. */
    ck_assert_int_eq(mml_dataset_n_domains(tr), 3);
    ck_assert_str_eq(mml_dataset_domain_name(tr, 0), "alpha");
    ck_assert_str_eq(mml_dataset_domain_name(tr, 2), "gamma");
    ck_assert_int_eq(domain_of(tr, 0), 1);
    ck_assert_int_eq(mml_dataset_domain_field(tr), -1);
    ck_assert_int_eq(mml_dataset_n_fields(tr), 2);
    ck_assert_str_eq(mml_dataset_field_name(tr, 0), "id");
    ck_assert_str_eq(mml_dataset_field_name(tr, 1), "city");
    /* Integer values sort numerically. */
    ck_assert_str_eq(mml_dataset_field_value(tr, 0, 0), "3");
    ck_assert_str_eq(mml_dataset_field_value(tr, 0, 1), "7");
    ck_assert_int_eq(mml_dataset_n_dense(tr), 1);
    ck_assert_str_eq(mml_dataset_dense_name(tr, 0), "price");
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(tr, 0, 3, &v), MML_OK);
    ck_assert(v.dense[0] == 2.5f && v.dense[1] == -1000.0f && v.dense[2] == 0.25f);
    ck_assert_int_eq(mml_dataset_n_multihot(tr), 1);
    ck_assert_str_eq(mml_dataset_multihot_name(tr, 0), "tags");
    ck_assert_int_eq(mml_dataset_multihot_size(tr, 0), 4);
    const int32_t *ids;
    int64_t n;
    ck_assert_int_eq(mml_dataset_multihot_row(tr, 0, 0, &ids, &n), MML_OK);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(mml_dataset_multihot_value(tr, 0, ids[0]), "a");
    ck_assert_str_eq(mml_dataset_multihot_value(tr, 0, ids[1]), "b");
    ck_assert_int_eq(mml_dataset_multihot_row(tr, 0, 1, &ids, &n), MML_OK);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(mml_dataset_multihot_row(tr, 0, 2, &ids, &n), MML_OK);
    ck_assert_int_eq(n, 3);
    ck_assert_str_eq(mml_dataset_multihot_value(tr, 0, ids[1]), "c");
    const int64_t *off;
    ck_assert_int_eq(mml_dataset_multihot_csr(tr, 0, &off, &ids), MML_OK);
    ck_assert_int_eq(off[0], 0);
    ck_assert_int_eq(off[3], 5);
    ck_assert_int_eq(mml_dataset_multihot_row(va, 0, 0, &ids, &n), MML_OK);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(ids[0], 3); /* "d" unseen: OOV */
    ck_assert_str_eq(mml_dataset_multihot_value(va, 0, ids[1]), "a");
    ck_assert_int_eq(id_of(va, 0, 0), 2);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(va);

    /* Explicit field order that lists the domain column. */
    static const char *const fields[] = {"theme", "city"};
    o.field_columns = fields;
    o.n_field_columns = 2;
    ck_assert_int_eq(load3(ctx, &o, "t2.csv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_dataset_n_fields(tr), 2);
    ck_assert_int_eq(mml_dataset_domain_field(tr), 0);
    ck_assert_int_eq(mml_dataset_field_size(tr, 0), 3);
    ck_assert_int_eq(id_of(tr, 2, 0), 2);
    ck_assert_str_eq(value_of(tr, 1, 1), "rome");
    mml_dataset_destroy(tr);

    /* No domain column: one domain; TSV. */
    write_str("t3.tsv", "label\tf\n1\ta\n0\tb\n");
    mml_csv_options_init(&o);
    o.delimiter = '\t';
    o.domain_column = NULL;
    ck_assert_int_eq(load3(ctx, &o, "t3.tsv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_dataset_n_domains(tr), 1);
    ck_assert_str_eq(mml_dataset_domain_name(tr, 0), "all");
    ck_assert_int_eq(mml_dataset_n_fields(tr), 1);
    ck_assert_int_eq(mml_dataset_domain_rows(tr, 0), 2);
    mml_dataset_destroy(tr);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(csv_format_details)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *tr, *va;
    /* CRLF, BOM, quoted fields, blank and trailing empty lines, no final newline. */
    write_str("q.csv", "\xEF\xBB\xBFlabel,domain,name,city\r\n"
                       "1,0,\"a,b\",\"say \"\"hi\"\"\"\r\n"
                       "\r\n"
                       "0,1,plain,\"\"\r\n"
                       "1,1,\"x\",last");
    ck_assert_int_eq(load3(ctx, NULL, "q.csv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(tr), 3);
    ck_assert_str_eq(mml_dataset_field_name(tr, 0), "name");
    ck_assert_str_eq(value_of(tr, 0, 0), "a,b");
    ck_assert_str_eq(value_of(tr, 0, 1), "say \"hi\"");
    ck_assert_str_eq(value_of(tr, 1, 1), "");
    ck_assert_str_eq(value_of(tr, 2, 1), "last");
    ck_assert_str_eq(value_of(tr, 2, 0), "x");
    mml_dataset_destroy(tr);
    write_str("q2.csv", "label,domain,f\n1,0,a\n0,0,b\n\n\n\n");
    ck_assert_int_eq(load3(ctx, NULL, "q2.csv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(tr), 2);
    mml_dataset_destroy(tr);
    /* Header-only validation file: no rows, fine. */
    write_str("hv.csv", "label,domain,f\n");
    ck_assert_int_eq(load3(ctx, NULL, "q2.csv", "hv.csv", NULL, &tr, &va, NULL), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(va), 0);
    ck_assert_int_eq(mml_dataset_domain_rows(va, 0), 0);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(va);
    mml_ctx_destroy(ctx);
}
END_TEST

/* Loads train.csv written from content; expects status and message (after tmpdir/). */
static void expect_train_error(mml_ctx *ctx, const mml_csv_options *o, const char *content,
                               size_t len, int status, const char *msg)
{
    write_file("bad.csv", content, len);
    mml_dataset *tr = (mml_dataset *)1, *va = (mml_dataset *)1;
    char p[512];
    tpath(p, sizeof p, "bad.csv");
    ck_assert_int_eq(mml_csv_load(ctx, o, p, NULL, NULL, &tr, &va, NULL), status);
    ck_assert_ptr_null(tr);
    ck_assert_ptr_null(va);
    if (msg)
        assert_msg(ctx, msg);
}

START_TEST(csv_malformed_input)
{
    mml_ctx *ctx = plain_ctx(1, 1);
#define BAD(text, status, msg) expect_train_error(ctx, NULL, text, sizeof text - 1, status, msg)
    BAD("user,item,domain,label\n1,2,0,1\n1,2,0,0\n3,4,1,1\n5,6,1,x\n", MML_EPARSE,
        "bad.csv:5:4: field 'label': expected 0 or 1, got \"x\"");
    BAD("user,item,domain,label\n1,2,0,2\n", MML_EPARSE,
        "bad.csv:2:4: field 'label': expected 0 or 1, got \"2\"");
    BAD("user,item,domain,label\n1,2,0,\n", MML_EPARSE,
        "bad.csv:2:4: field 'label': expected 0 or 1, got \"\"");
    BAD("user,item,domain\n1,2,0\n", MML_ENOTFOUND, "bad.csv:1: no column 'label' in the header");
    BAD("user,item,label\n1,2,0\n", MML_ENOTFOUND, "bad.csv:1: no column 'domain' in the header");
    BAD("", MML_EPARSE, "bad.csv:1:1: empty file: expected a header row");
    BAD("user,item,domain,label\n", MML_EPARSE, "bad.csv: no data rows");
    BAD("user,item,domain,label\n\n\n", MML_EPARSE, "bad.csv: no data rows");
    BAD("user,user,domain,label\n", MML_EPARSE, "bad.csv:1:2: duplicate column name 'user'");
    BAD("user,item,domain,label\n1,2,0,1\n1,2\n", MML_EPARSE,
        "bad.csv:3:3: field 'domain': expected a value (the header has more fields than this "
        "row)");
    BAD("user,item,domain,label\n1,2,0,1,9\n", MML_EPARSE,
        "bad.csv:2:5: unexpected field 5: the header has 4 fields");
    /* A truncated last line (no final newline) is an error when incomplete. */
    BAD("user,item,domain,label\n1,2,0,1\n1,2,0", MML_EPARSE,
        "bad.csv:3:4: field 'label': expected a value (the header has more fields than this "
        "row)");
    BAD("user,item,domain,label\n\"1,2,0,1\n", MML_EPARSE,
        "bad.csv:2:1: field 'user': unterminated quoted field");
    BAD("user,item,domain,label\n\"1\"x,2,0,1\n", MML_EPARSE,
        "bad.csv:2:1: field 'user': unexpected character after a closing quote");
    {
        static const char *const num[] = {"item"};
        mml_csv_options o;
        mml_csv_options_init(&o);
        o.numeric_columns = num;
        o.n_numeric_columns = 1;
        static const char t[] = "user,item,domain,label\n1,2.5,0,1\n1,abc,0,1\n";
        expect_train_error(ctx, &o, t, sizeof t - 1, MML_EPARSE,
                           "bad.csv:3:2: field 'item': expected a finite number, got \"abc\"");
        static const char t2[] = "user,item,domain,label\n1,1e999,0,1\n";
        expect_train_error(ctx, &o, t2, sizeof t2 - 1, MML_EPARSE,
                           "bad.csv:2:2: field 'item': expected a finite number, got \"1e999\"");
        static const char *const missing[] = {"price"};
        o.numeric_columns = missing;
        expect_train_error(ctx, &o, t, sizeof t - 1, MML_ENOTFOUND,
                           "bad.csv:1: no column 'price' in the header");
        /* Two roles for one column. */
        static const char *const lab[] = {"label"};
        o.numeric_columns = lab;
        expect_train_error(ctx, &o, t, sizeof t - 1, MML_EINVAL, NULL);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "two roles"));
    }
    /* Over-long lines: an error, or skipped and counted. */
    {
        mml_csv_options o;
        mml_csv_options_init(&o);
        o.max_line_bytes = 40;
        static const char t[] = "user,item,domain,label\n1,2,0,1\n"
                                "1,2222222222222222222222222222222222222222222222222222,0,1\n"
                                "3,4,1,0\n";
        expect_train_error(ctx, &o, t, sizeof t - 1, MML_EPARSE,
                           "bad.csv:3:1: line longer than 40 bytes");
        static const char h[] = "user,item,domain,label,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n1,2,0,1,1\n";
        expect_train_error(ctx, &o, h, sizeof h - 1, MML_EPARSE,
                           "bad.csv:1:1: header line longer than 40 bytes");
        o.skip_bad_rows = 1;
        write_str("long.csv", t);
        mml_dataset *tr;
        ck_assert_int_eq(load3(ctx, &o, "long.csv", NULL, NULL, &tr, NULL, NULL), MML_OK);
        ck_assert_int_eq(mml_dataset_n_rows(tr), 2);
        ck_assert_int_eq(mml_dataset_skipped_rows(tr), 1);
        mml_dataset_destroy(tr);
    }
    /* A line far longer than the read buffer (the default maximum is 1 MiB). */
    {
        size_t big = (size_t)MML_CSV_MAX_LINE_DEFAULT + 300000;
        char *t = malloc(big + 64);
        int k = sprintf(t, "user,item,domain,label\n1,2,0,1\n1,");
        memset(t + k, '7', big);
        k += (int)big;
        k += sprintf(t + k, ",0,1\n5,6,1,0\n");
        expect_train_error(ctx, NULL, t, (size_t)k, MML_EPARSE,
                           "bad.csv:3:1: line longer than 1048576 bytes");
        mml_csv_options o;
        mml_csv_options_init(&o);
        o.skip_bad_rows = 1;
        mml_dataset *tr;
        char p[512];
        tpath(p, sizeof p, "bad.csv");
        ck_assert_int_eq(mml_csv_load(ctx, &o, p, NULL, NULL, &tr, NULL, NULL), MML_OK);
        ck_assert_int_eq(mml_dataset_n_rows(tr), 2);
        ck_assert_int_eq(mml_dataset_skipped_rows(tr), 1);
        ck_assert_str_eq(value_of(tr, 1, 0), "5");
        mml_dataset_destroy(tr);
        free(t);
    }
    /* A missing file. */
    {
        mml_dataset *tr;
        char p[512];
        tpath(p, sizeof p, "does-not-exist.csv");
        ck_assert_int_eq(mml_csv_load(ctx, NULL, p, NULL, NULL, &tr, NULL, NULL), MML_EIO);
        ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "does-not-exist.csv: cannot open"));
    }
#undef BAD
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(csv_validation_and_test_errors)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    write_str("train.csv", train_csv);
    mml_dataset *tr = NULL, *va = NULL, *te = NULL;
    /* A domain in test that training lacks. */
    write_str("te_dom.csv", "user,item,domain,label\nu1,i1,0,1\nu1,i1,7,0\n");
    ck_assert_int_eq(load3(ctx, NULL, "train.csv", NULL, "te_dom.csv", &tr, NULL, &te),
                     MML_EPARSE);
    ck_assert_ptr_null(tr);
    ck_assert_ptr_null(te);
    assert_msg(ctx,
               "te_dom.csv:3:3: field 'domain': expected a domain of the training split, got \"7\"");
    /* A column the schema needs is missing from validation. */
    write_str("va_col.csv", "user,domain,label\nu1,0,1\n");
    ck_assert_int_eq(load3(ctx, NULL, "train.csv", "va_col.csv", NULL, &tr, &va, NULL),
                     MML_ENOTFOUND);
    assert_msg(ctx, "va_col.csv:1: no column 'item' in the header");
    /* Skipping bad rows counts them per file. */
    write_str("te_skip.csv", "user,item,domain,label\nu1,i1,0,1\nu1,i1,7,0\nu2,i2,1,x\n"
                             "u3\nu3,i3,1,0\n");
    mml_csv_options o;
    mml_csv_options_init(&o);
    o.skip_bad_rows = 1;
    ck_assert_int_eq(load3(ctx, &o, "train.csv", NULL, "te_skip.csv", &tr, NULL, &te), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(te), 2);
    ck_assert_int_eq(mml_dataset_skipped_rows(te), 3);
    ck_assert_int_eq(mml_dataset_skipped_rows(tr), 0);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(te);
    /* Bad rows skipped in training leave no trace in the vocabulary. */
    write_str("tr_skip.csv", "user,item,domain,label\nu1,i1,0,1\nghost,i9,1,x\nu2,i2,1,0\n");
    ck_assert_int_eq(load3(ctx, &o, "tr_skip.csv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_dataset_field_size(tr, 0), 3);
    ck_assert_int_eq(mml_dataset_field_lookup(tr, 0, "ghost"), 2);
    ck_assert_int_eq(mml_dataset_skipped_rows(tr), 1);
    mml_dataset_destroy(tr);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(csv_streams_large_files)
{
    /* Well over one read chunk, lines straddling chunk boundaries. */
    const int n = 40000;
    size_t cap = (size_t)n * 48 + 64;
    char *t = malloc(cap);
    size_t k = (size_t)sprintf(t, "label,domain,user,item,pad\n");
    for (int r = 0; r < n; r++)
        k += (size_t)sprintf(t + k, "%d,%d,u%d,%d,%.*s\n", r % 3 == 0, r % 5, r % 997, r % 101,
                             r % 13, "xxxxxxxxxxxxx");
    write_file("big.csv", t, k);
    free(t);
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *tr;
    ck_assert_int_eq(load3(ctx, NULL, "big.csv", NULL, NULL, &tr, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(tr), n);
    ck_assert_int_eq(mml_dataset_n_domains(tr), 5);
    ck_assert_int_eq(mml_dataset_field_size(tr, 0), 998);
    ck_assert_int_eq(mml_dataset_field_size(tr, 1), 102);
    ck_assert_int_eq(mml_dataset_field_size(tr, 2), 14);
    ck_assert_int_eq(mml_dataset_field_size(tr, 3), 5);
    for (int r = 0; r < n; r += 777) {
        char want[16];
        snprintf(want, sizeof want, "u%d", r % 997);
        ck_assert_str_eq(value_of(tr, r, 0), want);
        ck_assert_int_eq(atoi(value_of(tr, r, 1)), r % 101);
        ck_assert_int_eq(domain_of(tr, r), r % 5);
        ck_assert(label_of(tr, r) == (float)(r % 3 == 0));
    }
    mml_dataset_destroy(tr);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(csv_bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    write_str("train.csv", train_csv);
    char p[512];
    tpath(p, sizeof p, "train.csv");
    mml_dataset *tr = (mml_dataset *)1, *va = (mml_dataset *)1;
    ck_assert_int_eq(mml_csv_load(NULL, NULL, p, NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    ck_assert_ptr_null(tr);
    ck_assert_int_eq(mml_csv_load(ctx, NULL, NULL, NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_csv_load(ctx, NULL, p, NULL, NULL, NULL, NULL, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_csv_load(ctx, NULL, p, p, NULL, &tr, NULL, NULL), MML_EINVAL);
    va = (mml_dataset *)1;
    ck_assert_int_eq(mml_csv_load(ctx, NULL, p, NULL, p, &tr, &va, NULL), MML_EINVAL);
    ck_assert_ptr_null(va);
    mml_csv_options o;
    mml_csv_options_init(&o);
    o.struct_size = 0;
    ck_assert_int_eq(mml_csv_load(ctx, &o, p, NULL, NULL, &tr, NULL, NULL), MML_EVERSION);
    o.struct_size = sizeof o + 4;
    ck_assert_int_eq(mml_csv_load(ctx, &o, p, NULL, NULL, &tr, NULL, NULL), MML_EVERSION);
    mml_csv_options_init(&o);
    o.label_column = NULL;
    ck_assert_int_eq(mml_csv_load(ctx, &o, p, NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    mml_csv_options_init(&o);
    o.delimiter = '"';
    ck_assert_int_eq(mml_csv_load(ctx, &o, p, NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    mml_csv_options_init(&o);
    o.max_line_bytes = 0;
    ck_assert_int_eq(mml_csv_load(ctx, &o, p, NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    mml_csv_options_init(&o);
    o.n_numeric_columns = 2;
    ck_assert_int_eq(mml_csv_load(ctx, &o, p, NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    mml_csv_options_init(&o);
    static const char *const withnull[] = {"user", NULL};
    o.field_columns = withnull;
    o.n_field_columns = 2;
    ck_assert_int_eq(mml_csv_load(ctx, &o, p, NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    mml_csv_options_init(&o);
    static const char *const mh[] = {"item"};
    o.multihot_columns = mh;
    o.n_multihot_columns = 1;
    o.multihot_separator = ',';
    ck_assert_int_eq(mml_csv_load(ctx, &o, p, NULL, NULL, &tr, NULL, NULL), MML_EINVAL);
    /* A size that no release produced (here: ending inside the struct) is refused. */
    mml_csv_options_init(&o);
    o.struct_size = (uint32_t)offsetof(mml_csv_options, n_field_columns);
    ck_assert_int_eq(mml_csv_load(ctx, &o, p, NULL, NULL, &tr, NULL, NULL), MML_EVERSION);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "struct_size"));
    mml_csv_options_init(NULL);
    mml_ctx_destroy(ctx);
}
END_TEST

/* Runs op on a context whose allocator fails the Nth allocation after the
 * context exists, for N = 1 .. all the op makes; each must give MML_ENOMEM
 * and leak nothing. */
typedef int (*alloc_op)(mml_ctx *ctx, void *user);

static void fail_every_allocation(alloc_op op, void *user)
{
    counting_allocator a;
    mml_ctx *ctx = counting_ctx(&a, 0, 1, 1);
    ck_assert_ptr_nonnull(ctx);
    long base = a.calls, live = a.live;
    ck_assert_int_eq(op(ctx, user), MML_OK);
    long total = a.calls - base;
    ck_assert_int_eq(a.live, live);
    mml_ctx_destroy(ctx);
    ck_assert_int_eq(a.live, 0);
    ck_assert_int_gt(total, 0);
    for (long n = 1; n <= total; n++) {
        ctx = counting_ctx(&a, 0, 1, 1);
        ck_assert_ptr_nonnull(ctx);
        live = a.live;
        a.fail_at = a.calls + n;
        int rc = op(ctx, user);
        ck_assert_msg(rc == MML_ENOMEM, "allocation %ld of %ld: status %d (%s)", n, total, rc,
                      mml_ctx_last_error(ctx));
        ck_assert_msg(a.live == live, "allocation %ld of %ld: %ld blocks leaked", n, total,
                      a.live - live);
        mml_ctx_destroy(ctx);
        ck_assert_int_eq(a.live, 0);
        ck_assert_int_eq(a.live_bytes, 0);
    }
}

static int op_csv(mml_ctx *ctx, void *user)
{
    (void)user;
    static const char *const num[] = {"price"};
    static const char *const mh[] = {"tags"};
    mml_csv_options o;
    mml_csv_options_init(&o);
    o.numeric_columns = num;
    o.n_numeric_columns = 1;
    o.multihot_columns = mh;
    o.n_multihot_columns = 1;
    mml_dataset *tr, *va, *te;
    int rc = load3(ctx, &o, "af_train.csv", "af_val.csv", "af_test.csv", &tr, &va, &te);
    if (rc == MML_OK) {
        ck_assert_int_eq(mml_dataset_n_rows(tr), 40);
        mml_dataset_destroy(tr);
        mml_dataset_destroy(va);
        mml_dataset_destroy(te);
    }
    return rc;
}

START_TEST(csv_allocation_failures)
{
    char t[4096];
    size_t k = (size_t)sprintf(t, "label,domain,user,item,price,tags\n");
    for (int r = 0; r < 40; r++)
        k += (size_t)sprintf(t + k, "%d,%d,user%d,%d,%d.5,t%d|t%d\n", r % 2, r % 3, r % 17, r,
                             r, r % 5, r % 7);
    write_file("af_train.csv", t, k);
    write_str("af_val.csv", "label,domain,user,item,price,tags\n1,2,user3,99,1,t1|zz\n");
    write_str("af_test.csv", "label,domain,user,item,price,tags\n0,0,user1,1,2,\n");
    fail_every_allocation(op_csv, NULL);
}
END_TEST

/* ------------------------------------------------------------ MovieLens fixtures */

static const int ml_users = 8, ml_items = 5;
static const int ml_item_ids[5] = {5, 17, 42, 100, 250};
/* id, age, gender, occupation index (0..20), ML-1M age code */
static const int ml_user_info[8][4] = {{1, 24, 'M', 2},  {2, 53, 'F', 0},  {3, 17, 'M', 1},
                                       {4, 45, 'F', 2},  {5, 33, 'F', 20}, {6, 60, 'M', 0},
                                       {7, 35, 'M', 1},  {9, 18, 'F', 0}};
static const int ml_age_code[8] = {18, 50, 1, 45, 25, 56, 35, 18};

static int ml_rating(int u, int i) { return 1 + (u * 7 + i * 3) % 5; }

static void write_ml100k(const char *dir)
{
    char p[512], buf[8192];
    snprintf(p, sizeof p, "%s/%s", tmpdir, dir);
    mkdir(p, 0755);
    size_t k = 0;
    for (int o = 0; o < 21; o++)
        k += (size_t)sprintf(buf + k, "job_%c\n", 'a' + o);
    snprintf(p, sizeof p, "%s/u.occupation", dir);
    write_file(p, buf, k);
    k = 0;
    for (int u = 0; u < ml_users; u++)
        k += (size_t)sprintf(buf + k, "%d|%d|%c|job_%c|%05d\n", ml_user_info[u][0],
                             ml_user_info[u][1], ml_user_info[u][2], 'a' + ml_user_info[u][3],
                             u * 1111);
    snprintf(p, sizeof p, "%s/u.user", dir);
    write_file(p, buf, k);
    k = 0;
    for (int u = 0; u < ml_users; u++)
        for (int i = 0; i < ml_items; i++)
            k += (size_t)sprintf(buf + k, "%d\t%d\t%d\t%d\n", ml_user_info[u][0], ml_item_ids[i],
                                 ml_rating(u, i), 880000000 + u * 10 + i);
    snprintf(p, sizeof p, "%s/u.data", dir);
    write_file(p, buf, k);
}

static void write_ml1m(const char *dir)
{
    char p[512], buf[8192];
    snprintf(p, sizeof p, "%s/%s", tmpdir, dir);
    mkdir(p, 0755);
    size_t k = 0;
    for (int u = 0; u < ml_users; u++)
        k += (size_t)sprintf(buf + k, "%d::%c::%d::%d::%05d\n", ml_user_info[u][0],
                             ml_user_info[u][2], ml_age_code[u], ml_user_info[u][3], u * 1111);
    snprintf(p, sizeof p, "%s/users.dat", dir);
    write_file(p, buf, k);
    k = 0;
    for (int u = 0; u < ml_users; u++)
        for (int i = 0; i < ml_items; i++)
            k += (size_t)sprintf(buf + k, "%d::%d::%d::%d\r\n", ml_user_info[u][0],
                                 ml_item_ids[i], ml_rating(u, i), 970000000 + u);
    snprintf(p, sizeof p, "%s/ratings.dat", dir);
    write_file(p, buf, k);
}

static int32_t ml_expected_domain(int u, int by)
{
    int age = ml_user_info[u][1];
    if (by == MML_DOMAIN_BY_GENDER)
        return ml_user_info[u][2] == 'M';
    if (by == MML_DOMAIN_BY_AGE)
        return age < 18 ? 0 : age < 25 ? 1 : age < 35 ? 2 : age < 45 ? 3 : age < 50 ? 4
               : age < 56 ? 5 : 6;
    return ml_user_info[u][3];
}

static int ml_load(mml_ctx *ctx, const char *dir, int by, int label_min, uint64_t seed,
                   mml_dataset *out[3])
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, dir);
    mml_movielens_options o;
    mml_movielens_options_init(&o);
    o.dir = p;
    o.domain_by = by;
    o.label_min = label_min;
    o.split_seed = seed;
    return mml_movielens_load(ctx, &o, &out[0], &out[1], &out[2]);
}

/* Checks a MovieLens fixture load: every (user, item) once, ids, domains,
 * labels, and the stratified split sizes. */
static void check_ml_fixture(mml_dataset *const s[3], int by, int label_min)
{
    int32_t D = by == MML_DOMAIN_BY_GENDER ? 2 : by == MML_DOMAIN_BY_AGE ? 7 : 21;
    int seen[8][5];
    memset(seen, 0, sizeof seen);
    int64_t cnt[3][21][2];
    memset(cnt, 0, sizeof cnt);
    int64_t total[21][2];
    memset(total, 0, sizeof total);
    for (int u = 0; u < ml_users; u++)
        for (int i = 0; i < ml_items; i++)
            total[ml_expected_domain(u, by)][ml_rating(u, i) >= label_min]++;
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(mml_dataset_n_domains(s[k]), D);
        ck_assert_int_eq(mml_dataset_n_fields(s[k]), 3);
        ck_assert_int_eq(mml_dataset_field_size(s[k], 0), ml_users);
        ck_assert_int_eq(mml_dataset_field_size(s[k], 1), ml_items);
        ck_assert_int_eq(mml_dataset_field_size(s[k], 2), D);
        ck_assert_int_eq(mml_dataset_domain_field(s[k]), 2);
        mml_batch_view v;
        ck_assert_int_eq(mml_dataset_view(s[k], 0, mml_dataset_n_rows(s[k]), &v), MML_OK);
        for (int64_t r = 0; r < v.n_rows; r++) {
            int u = v.ids[3 * r], i = v.ids[3 * r + 1];
            ck_assert(u >= 0 && u < ml_users && i >= 0 && i < ml_items);
            ck_assert_int_eq(seen[u][i]++, 0);
            ck_assert_int_eq(v.ids[3 * r + 2], v.domain[r]);
            ck_assert_int_eq(v.domain[r], ml_expected_domain(u, by));
            ck_assert(v.labels[r] == (ml_rating(u, i) >= label_min ? 1.0f : 0.0f));
            cnt[k][v.domain[r]][v.labels[r] > 0.5f]++;
        }
    }
    for (int u = 0; u < ml_users; u++)
        for (int i = 0; i < ml_items; i++)
            ck_assert_int_eq(seen[u][i], 1);
    for (int d = 0; d < D; d++)
        for (int c = 0; c < 2; c++) {
            int64_t n = total[d][c];
            int64_t tr = (int64_t)floor(0.6 * (double)n + 0.5), va = (int64_t)floor(0.2 * (double)n + 0.5);
            ck_assert_int_eq(cnt[0][d][c], tr);
            ck_assert_int_eq(cnt[1][d][c], va);
            ck_assert_int_eq(cnt[2][d][c], n - tr - va);
        }
}

static void destroy3(mml_dataset *s[3])
{
    for (int k = 0; k < 3; k++) {
        mml_dataset_destroy(s[k]);
        s[k] = NULL;
    }
}

START_TEST(movielens_100k_fixture)
{
    write_ml100k("ml100k");
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3];
    for (int by = 0; by < 3; by++)
        for (int lm = 4; lm <= 5; lm++) {
            ck_assert_int_eq(ml_load(ctx, "ml100k", by, lm, 123, s), MML_OK);
            check_ml_fixture(s, by, lm);
            destroy3(s);
        }
    ck_assert_int_eq(ml_load(ctx, "ml100k", MML_DOMAIN_BY_OCCUPATION, 5, 123, s), MML_OK);
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 0), "job_a");
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 20), "job_u");
    ck_assert_str_eq(mml_dataset_field_name(s[0], 0), "user");
    ck_assert_str_eq(mml_dataset_field_name(s[0], 1), "item");
    ck_assert_str_eq(mml_dataset_field_name(s[0], 2), "domain");
    /* Ranks of the raw ids. */
    ck_assert_str_eq(mml_dataset_field_value(s[0], 1, 2), "42");
    ck_assert_str_eq(mml_dataset_field_value(s[0], 0, 7), "9");
    ck_assert_int_eq(mml_dataset_field_lookup(s[0], 1, "250"), 4);
    ck_assert_int_eq(mml_dataset_field_lookup(s[0], 1, "251"), -1);
    destroy3(s);
    ck_assert_int_eq(ml_load(ctx, "ml100k", MML_DOMAIN_BY_AGE, 5, 123, s), MML_OK);
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 0), "<18");
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 6), "56+");
    destroy3(s);
    ck_assert_int_eq(ml_load(ctx, "ml100k", MML_DOMAIN_BY_GENDER, 5, 123, s), MML_OK);
    ck_assert_str_eq(mml_dataset_domain_name(s[1], 0), "F");
    ck_assert_str_eq(mml_dataset_domain_name(s[2], 1), "M");
    /* The same seed gives the same split; another seed another one. */
    mml_dataset *t[3];
    ck_assert_int_eq(ml_load(ctx, "ml100k", MML_DOMAIN_BY_GENDER, 5, 123, t), MML_OK);
    int differs = 0;
    for (int k = 0; k < 3; k++) {
        mml_batch_view a, b;
        ck_assert_int_eq(mml_dataset_n_rows(s[k]), mml_dataset_n_rows(t[k]));
        mml_dataset_view(s[k], 0, mml_dataset_n_rows(s[k]), &a);
        mml_dataset_view(t[k], 0, mml_dataset_n_rows(t[k]), &b);
        ck_assert_int_eq(memcmp(a.ids, b.ids, (size_t)a.n_rows * 12), 0);
    }
    destroy3(t);
    ck_assert_int_eq(ml_load(ctx, "ml100k", MML_DOMAIN_BY_GENDER, 5, 124, t), MML_OK);
    for (int k = 0; k < 3; k++) {
        mml_batch_view a, b;
        mml_dataset_view(s[k], 0, mml_dataset_n_rows(s[k]), &a);
        mml_dataset_view(t[k], 0, mml_dataset_n_rows(t[k]), &b);
        differs |= a.n_rows != b.n_rows || memcmp(a.ids, b.ids, (size_t)a.n_rows * 12) != 0;
    }
    ck_assert(differs);
    destroy3(t);
    destroy3(s);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(movielens_1m_fixture)
{
    write_ml1m("ml1m");
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3];
    for (int by = 0; by < 3; by++)
        for (int lm = 3; lm <= 5; lm++) {
            ck_assert_int_eq(ml_load(ctx, "ml1m", by, lm, 7, s), MML_OK);
            check_ml_fixture(s, by, lm);
            destroy3(s);
        }
    ck_assert_int_eq(ml_load(ctx, "ml1m", MML_DOMAIN_BY_OCCUPATION, 5, 7, s), MML_OK);
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 0), "other");
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 20), "writer");
    destroy3(s);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(movielens_errors)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3] = {(mml_dataset *)1, (mml_dataset *)1, (mml_dataset *)1};
    char p[512];
    ck_assert_int_eq(ml_load(ctx, "nowhere", 0, 5, 1, s), MML_ENOTFOUND);
    ck_assert_ptr_null(s[0]);
    ck_assert_ptr_null(s[2]);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "neither u.data"));
    /* Bad rating, with its location. */
    write_ml100k("mlbad");
    write_str("mlbad/u.data", "1\t5\t3\t1\n2\t5\t9\t2\n");
    ck_assert_int_eq(ml_load(ctx, "mlbad", 0, 5, 1, s), MML_EPARSE);
    snprintf(p, sizeof p, "mlbad/u.data:2:3: field 'rating': expected an integer 1..5, got \"9\"");
    assert_msg(ctx, p);
    write_str("mlbad/u.data", "1\t5\t3\n");
    ck_assert_int_eq(ml_load(ctx, "mlbad", 0, 5, 1, s), MML_EPARSE);
    /* A rated user missing from u.user. */
    write_str("mlbad/u.data", "1\t5\t3\t1\n77\t5\t5\t2\n");
    ck_assert_int_eq(ml_load(ctx, "mlbad", 0, 5, 1, s), MML_EPARSE);
    ck_assert_ptr_nonnull(strstr(mml_ctx_last_error(ctx), "user 77 has ratings but is not in"));
    /* Bad gender and an unknown occupation. */
    write_str("mlbad/u.data", "1\t5\t3\t1\n");
    write_str("mlbad/u.user", "1|24|X|job_a|00000\n");
    ck_assert_int_eq(ml_load(ctx, "mlbad", MML_DOMAIN_BY_GENDER, 5, 1, s), MML_EPARSE);
    assert_msg(ctx, "mlbad/u.user:1:3: field 'gender': expected F or M, got \"X\"");
    write_str("mlbad/u.user", "1|24|F|pilot|00000\n");
    ck_assert_int_eq(ml_load(ctx, "mlbad", MML_DOMAIN_BY_OCCUPATION, 5, 1, s), MML_EPARSE);
    assert_msg(ctx, "mlbad/u.user:1:4: field 'occupation': expected a name listed in "
                    "u.occupation, got \"pilot\"");
    /* Empty ratings. */
    write_str("mlbad/u.user", "1|24|F|job_a|00000\n");
    write_str("mlbad/u.data", "\n");
    ck_assert_int_eq(ml_load(ctx, "mlbad", 0, 5, 1, s), MML_EPARSE);
    /* Bad arguments. */
    mml_movielens_options o;
    mml_movielens_options_init(&o);
    ck_assert_int_eq(mml_movielens_load(ctx, &o, &s[0], &s[1], &s[2]), MML_EINVAL); /* dir NULL */
    o.dir = tmpdir;
    o.domain_by = 3;
    ck_assert_int_eq(mml_movielens_load(ctx, &o, &s[0], &s[1], &s[2]), MML_EINVAL);
    o.domain_by = 0;
    o.label_min = 6;
    ck_assert_int_eq(mml_movielens_load(ctx, &o, &s[0], &s[1], &s[2]), MML_EINVAL);
    o.label_min = 5;
    o.struct_size = 2;
    ck_assert_int_eq(mml_movielens_load(ctx, &o, &s[0], &s[1], &s[2]), MML_EVERSION);
    mml_movielens_options_init(&o);
    o.dir = tmpdir;
    ck_assert_int_eq(mml_movielens_load(NULL, &o, &s[0], &s[1], &s[2]), MML_EINVAL);
    ck_assert_int_eq(mml_movielens_load(ctx, NULL, &s[0], &s[1], &s[2]), MML_EINVAL);
    ck_assert_int_eq(mml_movielens_load(ctx, &o, NULL, &s[1], &s[2]), MML_EINVAL);
    ck_assert_int_eq(mml_movielens_load(ctx, &o, &s[0], NULL, &s[2]), MML_EINVAL);
    ck_assert_int_eq(mml_movielens_load(ctx, &o, &s[0], &s[1], NULL), MML_EINVAL);
    mml_movielens_options_init(NULL);
    mml_ctx_destroy(ctx);
}
END_TEST

static int op_movielens(mml_ctx *ctx, void *user)
{
    const int *by = user;
    mml_dataset *s[3];
    int rc = ml_load(ctx, by[1] ? "ml1m" : "ml100k", by[0], 5, 3, s);
    if (rc == MML_OK)
        destroy3(s);
    return rc;
}

START_TEST(movielens_allocation_failures)
{
    write_ml100k("ml100k");
    write_ml1m("ml1m");
    int a[2] = {MML_DOMAIN_BY_OCCUPATION, 0}, b[2] = {MML_DOMAIN_BY_AGE, 1};
    fail_every_allocation(op_movielens, a);
    fail_every_allocation(op_movielens, b);
}
END_TEST

/* ------------------------------------------------------------ synthetic */

static int synth(mml_ctx *ctx, int64_t rows, int32_t domains, uint64_t seed, mml_dataset *s[3])
{
    mml_synthetic_options o;
    mml_synthetic_options_init(&o);
    o.n_rows = rows;
    o.n_domains = domains;
    o.n_users = 50;
    o.n_items = 30;
    o.seed = seed;
    return mml_synthetic_generate(ctx, &o, &s[0], &s[1], &s[2]);
}

static int same_rows(const mml_dataset *a, const mml_dataset *b)
{
    if (mml_dataset_n_rows(a) != mml_dataset_n_rows(b))
        return 0;
    mml_batch_view x, y;
    mml_dataset_view(a, 0, mml_dataset_n_rows(a), &x);
    mml_dataset_view(b, 0, mml_dataset_n_rows(b), &y);
    return memcmp(x.ids, y.ids, (size_t)x.n_rows * 12) == 0 &&
           memcmp(x.labels, y.labels, (size_t)x.n_rows * 4) == 0 &&
           memcmp(x.domain, y.domain, (size_t)x.n_rows * 4) == 0;
}

START_TEST(synthetic_sizes_determinism_rates)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3], *t[3], *u[3];
    ck_assert_int_eq(synth(ctx, 5000, 3, 11, s), MML_OK);
    ck_assert_int_eq(synth(ctx, 5000, 3, 11, t), MML_OK);
    ck_assert_int_eq(synth(ctx, 5000, 3, 12, u), MML_OK);
    int64_t total = 0;
    for (int k = 0; k < 3; k++) {
        ck_assert(same_rows(s[k], t[k]));
        ck_assert(!same_rows(s[k], u[k]));
        total += mml_dataset_n_rows(s[k]);
        ck_assert_int_eq(mml_dataset_n_fields(s[k]), 3);
        ck_assert_int_eq(mml_dataset_field_size(s[k], 0), 50);
        ck_assert_int_eq(mml_dataset_field_size(s[k], 1), 30);
        ck_assert_int_eq(mml_dataset_field_size(s[k], 2), 3);
        ck_assert_int_eq(mml_dataset_n_domains(s[k]), 3);
        ck_assert_str_eq(mml_dataset_domain_name(s[k], 2), "d2");
        ck_assert_str_eq(mml_dataset_field_name(s[k], 2), "domain");
        ck_assert_int_eq(mml_dataset_domain_field(s[k]), 2);
        mml_batch_view v;
        mml_dataset_view(s[k], 0, mml_dataset_n_rows(s[k]), &v);
        for (int64_t r = 0; r < v.n_rows; r++) {
            ck_assert(v.ids[3 * r] >= 0 && v.ids[3 * r] < 50);
            ck_assert(v.ids[3 * r + 1] >= 0 && v.ids[3 * r + 1] < 30);
            ck_assert_int_eq(v.ids[3 * r + 2], v.domain[r]);
        }
    }
    ck_assert_int_eq(total, 5000);
    /* Rounded per domain and class: within one row per group of 0.6 n. */
    ck_assert(llabs(mml_dataset_n_rows(s[0]) - 3000) <= 6);
    destroy3(s);
    destroy3(t);
    destroy3(u);

    /* The default configuration: sizes, domain sizes, different positive rates. */
    mml_synthetic_options o;
    mml_synthetic_options_init(&o);
    ck_assert_int_eq(mml_synthetic_generate(ctx, &o, &s[0], &s[1], &s[2]), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(s[0]) + mml_dataset_n_rows(s[1]) + mml_dataset_n_rows(s[2]),
                     o.n_rows);
    ck_assert_int_eq(mml_dataset_field_size(s[0], 0), o.n_users);
    ck_assert_int_eq(mml_dataset_field_size(s[0], 1), o.n_items);
    double lo = 1, hi = 0;
    for (int32_t d = 0; d < o.n_domains; d++) {
        int64_t n = 0, pos = 0;
        for (int k = 0; k < 3; k++) {
            mml_batch_view v;
            mml_dataset_view(s[k], 0, mml_dataset_n_rows(s[k]), &v);
            for (int64_t r = 0; r < v.n_rows; r++)
                if (v.domain[r] == d) {
                    n++;
                    pos += v.labels[r] > 0.5f;
                }
        }
        ck_assert_int_gt(n, 2500); /* a few thousand rows per domain at least */
        double rate = (double)pos / (double)n;
        ck_assert(rate > 0.05 && rate < 0.95);
        lo = rate < lo ? rate : lo;
        hi = rate > hi ? rate : hi;
    }
    ck_assert_msg(hi - lo > 0.1, "positive rates %.3f .. %.3f", lo, hi);
    destroy3(s);

    /* Bad arguments. */
    ck_assert_int_eq(mml_synthetic_generate(NULL, &o, &s[0], &s[1], &s[2]), MML_EINVAL);
    ck_assert_int_eq(mml_synthetic_generate(ctx, &o, NULL, &s[1], &s[2]), MML_EINVAL);
    ck_assert_int_eq(mml_synthetic_generate(ctx, &o, &s[0], NULL, &s[2]), MML_EINVAL);
    ck_assert_int_eq(mml_synthetic_generate(ctx, &o, &s[0], &s[1], NULL), MML_EINVAL);
    o.n_domains = 0;
    ck_assert_int_eq(mml_synthetic_generate(ctx, &o, &s[0], &s[1], &s[2]), MML_EINVAL);
    mml_synthetic_options_init(&o);
    o.n_rows = 0;
    ck_assert_int_eq(mml_synthetic_generate(ctx, &o, &s[0], &s[1], &s[2]), MML_EINVAL);
    mml_synthetic_options_init(&o);
    o.domain_scale = NAN;
    ck_assert_int_eq(mml_synthetic_generate(ctx, &o, &s[0], &s[1], &s[2]), MML_ENONFINITE);
    mml_synthetic_options_init(&o);
    o.struct_size = 1;
    ck_assert_int_eq(mml_synthetic_generate(ctx, &o, &s[0], &s[1], &s[2]), MML_EVERSION);
    ck_assert_ptr_null(s[0]);
    mml_synthetic_options_init(NULL);
    /* NULL options: the defaults. */
    ck_assert_int_eq(mml_synthetic_generate(ctx, NULL, &s[0], &s[1], &s[2]), MML_OK);
    ck_assert_int_eq(mml_dataset_n_domains(s[0]), 4);
    destroy3(s);
    mml_ctx_destroy(ctx);
}
END_TEST

static int op_synthetic(mml_ctx *ctx, void *user)
{
    (void)user;
    mml_dataset *s[3];
    int rc = synth(ctx, 60, 3, 5, s);
    if (rc == MML_OK)
        destroy3(s);
    return rc;
}

START_TEST(synthetic_allocation_failures) { fail_every_allocation(op_synthetic, NULL); }
END_TEST

/* ------------------------------------------------------------ caller arrays */

/* 12 rows, fields user (5), item (3), dom (3, the domain), one numeric column. */
typedef struct arrays_fixture {
    int32_t ids[12 * 3];
    int32_t domain[12];
    float labels[12], dense[12];
    const char *names[3], *dense_names[1];
    mml_arrays a;
} arrays_fixture;

static void arrays_fixture_init(arrays_fixture *x)
{
    for (int r = 0; r < 12; r++) {
        x->ids[3 * r] = r % 5;
        x->ids[3 * r + 1] = (r * 7) % 3;
        x->ids[3 * r + 2] = x->domain[r] = r % 3;
        x->labels[r] = (float)((r / 3) % 2);
        x->dense[r] = 0.25f * (float)r;
    }
    x->names[0] = "user", x->names[1] = "item", x->names[2] = "dom";
    x->dense_names[0] = "age";
    mml_arrays_init(&x->a);
    x->a.n_fields = 3;
    x->a.n_rows = 12;
    x->a.ids = x->ids;
    x->a.field_names = x->names;
    x->a.domain = x->domain;
    x->a.domain_field = 2;
    x->a.labels = x->labels;
    x->a.n_dense = 1;
    x->a.dense = x->dense;
    x->a.dense_names = x->dense_names;
}

START_TEST(arrays_build_a_data_set)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    arrays_fixture x;
    arrays_fixture_init(&x);
    mml_dataset *ds = NULL;
    ck_assert_int_eq(mml_dataset_from_arrays(ctx, &x.a, &ds), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(ds), 12);
    ck_assert_int_eq(mml_dataset_n_fields(ds), 3);
    ck_assert_int_eq(mml_dataset_n_dense(ds), 1);
    ck_assert_int_eq(mml_dataset_n_domains(ds), 3);
    ck_assert_int_eq(mml_dataset_domain_field(ds), 2);
    ck_assert_int_eq(mml_dataset_field_size(ds, 0), 5);
    ck_assert_int_eq(mml_dataset_field_size(ds, 1), 3);
    ck_assert_int_eq(mml_dataset_field_size(ds, 2), 3);
    ck_assert_str_eq(mml_dataset_field_name(ds, 1), "item");
    ck_assert_str_eq(mml_dataset_dense_name(ds, 0), "age");
    ck_assert_str_eq(mml_dataset_domain_name(ds, 2), "d2");
    ck_assert_int_eq(mml_dataset_domain_rows(ds, 1), 4);
    mml_batch_view b;
    ck_assert_int_eq(mml_dataset_view(ds, 0, 12, &b), MML_OK);
    for (int r = 0; r < 12; r++) {
        for (int f = 0; f < 3; f++)
            ck_assert_int_eq(b.ids[r * b.ids_row_stride + f], x.ids[3 * r + f]);
        ck_assert_int_eq(b.domain[r], x.domain[r]);
        ck_assert_float_eq(b.labels[r], x.labels[r]);
        ck_assert_float_eq(b.dense[r * b.dense_row_stride], x.dense[r]);
    }
    /* The caller's arrays are copied, not kept. */
    x.ids[0] = 4;
    ck_assert_int_eq(mml_dataset_view(ds, 0, 1, &b), MML_OK);
    ck_assert_int_eq(b.ids[0], 0);

    /* The split: 60/20/20 of each (domain, class) group, every row once. */
    mml_dataset *s[3];
    ck_assert_int_eq(mml_dataset_split(ctx, ds, 7, &s[0], &s[1], &s[2]), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(s[0]) + mml_dataset_n_rows(s[1]) + mml_dataset_n_rows(s[2]),
                     12);
    ck_assert_int_eq(mml_dataset_n_rows(s[0]), 6); /* 6 groups of 2: round(1.2) = 1 each */
    ck_assert_str_eq(mml_dataset_field_name(s[2], 0), "user");
    destroy3(s);
    ck_assert_int_eq(mml_dataset_split(ctx, NULL, 7, &s[0], &s[1], &s[2]), MML_EINVAL);
    ck_assert_ptr_null(s[0]);
    mml_dataset_destroy(ds);

    /* Defaults: sizes from the largest ids, names f0.., d0.., x0..; domain
     * from the domain field; a separate "domain" column when none carries it. */
    x.a.field_names = NULL;
    x.a.dense_names = NULL;
    x.a.domain = NULL;
    ck_assert_int_eq(mml_dataset_from_arrays(ctx, &x.a, &ds), MML_OK);
    ck_assert_str_eq(mml_dataset_field_name(ds, 2), "f2");
    ck_assert_str_eq(mml_dataset_dense_name(ds, 0), "x0");
    ck_assert_int_eq(mml_dataset_field_size(ds, 0), 5);
    mml_dataset_destroy(ds);
    x.a.domain = x.domain;
    x.a.domain_field = -1;
    x.a.n_domains = 5;
    int64_t sizes[3] = {10, 3, 3};
    x.a.field_sizes = sizes;
    x.a.ids_row_stride = 3;
    ck_assert_int_eq(mml_dataset_from_arrays(ctx, &x.a, &ds), MML_OK);
    ck_assert_int_eq(mml_dataset_domain_field(ds), -1);
    ck_assert_int_eq(mml_dataset_n_domains(ds), 5);
    ck_assert_int_eq(mml_dataset_domain_rows(ds, 4), 0);
    ck_assert_int_eq(mml_dataset_field_size(ds, 0), 10);
    mml_dataset_destroy(ds);
    mml_ctx_destroy(ctx);
}
END_TEST

/* Each bad input: a negative code, a message naming it, no data set. */
START_TEST(arrays_bad_input)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    arrays_fixture x;
    mml_dataset *ds = (mml_dataset *)&x;
    int64_t sizes[3] = {5, 3, 3}, small[3] = {2, 3, 3}, big_dom[3] = {5, 3, 4};
    const char *dup[3] = {"user", "item", "user"}, *empty[3] = {"user", "", "dom"};
    const char *clash[3] = {"user", "domain", "dom"}, *dense_clash[1] = {"item"};
    struct { int what; int rc; const char *needle; } cases[] = {
        {0, MML_EINVAL, "counts"},       {1, MML_EINVAL, "NULL ids"},
        {2, MML_EINVAL, "NULL labels"},  {3, MML_EINVAL, "row 2, field 0: id 2 outside [0, 2)"},
        {4, MML_EINVAL, "row 5: label"}, {5, MML_ENONFINITE, "row 6, numeric column 0"},
        {6, MML_EINVAL, "row 7: domain 9"}, {7, MML_EINVAL, "domain field 2 holds"},
        {8, MML_EINVAL, "used twice"},   {9, MML_EINVAL, "empty"},
        {10, MML_EINVAL, "stride"},      {11, MML_EINVAL, "has size 0"},
        {12, MML_EINVAL, "not the 3 domains"}, {13, MML_EINVAL, "also the name"},
        {14, MML_EINVAL, "names a field and a numeric column"}, {15, MML_EVERSION, NULL},
        {16, MML_EINVAL, "NULL domain"}, {17, MML_EINVAL, "row 1: domain 1 outside [0, 1)"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        arrays_fixture_init(&x);
        int64_t zero[3] = {0, 3, 3};
        switch (cases[k].what) {
        case 0: x.a.n_rows = 0; break;
        case 1: x.a.ids = NULL; break;
        case 2: x.a.labels = NULL; break;
        case 3: x.a.field_sizes = small; break;
        case 4: x.labels[5] = 0.5f; break;
        case 5: x.dense[6] = INFINITY; break;
        case 6: x.domain[7] = 9; x.a.n_domains = 3; break;
        case 7: x.domain[8] = 1; break;
        case 8: x.a.field_names = dup; break;
        case 9: x.a.field_names = empty; break;
        case 10: x.a.ids_row_stride = 2; break;
        case 11: x.a.field_sizes = zero; break;
        case 12: x.a.field_sizes = big_dom; break;
        case 13: x.a.field_names = clash; x.a.domain_field = -1; break;
        case 14: x.a.dense_names = dense_clash; break;
        case 15: x.a.struct_size = 3; break;
        case 16: x.a.domain = NULL; x.a.domain_field = -1; break;
        case 17: x.a.n_domains = 1; x.a.field_sizes = sizes; x.a.domain_field = -1; break;
        }
        ds = (mml_dataset *)&x;
        int rc = mml_dataset_from_arrays(ctx, &x.a, &ds);
        ck_assert_msg(rc == cases[k].rc, "case %d: %d (%s)", cases[k].what, rc,
                      mml_ctx_last_error(ctx));
        ck_assert_ptr_null(ds);
        if (cases[k].needle)
            ck_assert_msg(strstr(mml_ctx_last_error(ctx), cases[k].needle), "case %d: '%s'",
                          cases[k].what, mml_ctx_last_error(ctx));
    }
    ck_assert_int_eq(mml_dataset_from_arrays(ctx, NULL, &ds), MML_EINVAL);
    ck_assert_int_eq(mml_dataset_from_arrays(ctx, &x.a, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_dataset_from_arrays(NULL, &x.a, &ds), MML_EINVAL);
    ck_assert_int_eq(mml_arrays_init(NULL), MML_EINVAL);
    ck_assert_int_eq(mml_arrays_init_sized(&x.a, 5), MML_EVERSION);
    mml_ctx_destroy(ctx);
}
END_TEST

static int op_arrays(mml_ctx *ctx, void *user)
{
    (void)user;
    arrays_fixture x;
    arrays_fixture_init(&x);
    mml_dataset *ds = NULL, *s[3];
    int rc = mml_dataset_from_arrays(ctx, &x.a, &ds);
    if (rc == MML_OK && (rc = mml_dataset_split(ctx, ds, 3, &s[0], &s[1], &s[2])) == MML_OK)
        destroy3(s);
    mml_dataset_destroy(ds);
    return rc;
}

START_TEST(arrays_allocation_failures) { fail_every_allocation(op_arrays, NULL); }
END_TEST

/* ------------------------------------------------------------ data set, CSV output */

START_TEST(dataset_accessors_and_view)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3];
    ck_assert_int_eq(synth(ctx, 200, 2, 3, s), MML_OK);
    mml_dataset *ds = s[0];
    mml_batch_view v;
    ck_assert_int_eq(mml_dataset_view(ds, 10, 5, &v), MML_OK);
    ck_assert_int_eq(v.n_rows, 5);
    ck_assert_int_eq(v.n_fields, 3);
    ck_assert_int_eq(v.ids_row_stride, 3);
    ck_assert_ptr_null(v.dense);
    mml_batch_view w;
    ck_assert_int_eq(mml_dataset_view(ds, 0, mml_dataset_n_rows(ds), &w), MML_OK);
    ck_assert_ptr_eq(v.ids, w.ids + 30);
    ck_assert_ptr_eq(v.labels, w.labels + 10);
    ck_assert_int_eq(mml_dataset_view(ds, mml_dataset_n_rows(ds), 0, &v), MML_OK);
    ck_assert_int_eq(mml_dataset_view(ds, -1, 1, &v), MML_ERANGE);
    ck_assert_int_eq(mml_dataset_view(ds, 0, mml_dataset_n_rows(ds) + 1, &v), MML_ERANGE);
    ck_assert_int_eq(mml_dataset_view(ds, 1, -1, &v), MML_ERANGE);
    ck_assert_int_eq(mml_dataset_view(NULL, 0, 1, &v), MML_EINVAL);
    ck_assert_int_eq(mml_dataset_view(ds, 0, 1, NULL), MML_EINVAL);
    /* Out-of-range and NULL accessors. */
    ck_assert_int_eq(mml_dataset_n_rows(NULL), 0);
    ck_assert_int_eq(mml_dataset_n_fields(NULL), 0);
    ck_assert_int_eq(mml_dataset_n_dense(NULL), 0);
    ck_assert_int_eq(mml_dataset_n_domains(NULL), 0);
    ck_assert_int_eq(mml_dataset_n_multihot(NULL), 0);
    ck_assert_int_eq(mml_dataset_skipped_rows(NULL), 0);
    ck_assert_int_eq(mml_dataset_domain_field(NULL), -1);
    ck_assert_int_eq(mml_dataset_field_size(ds, 3), 0);
    ck_assert_int_eq(mml_dataset_field_size(ds, -1), 0);
    ck_assert_ptr_null(mml_dataset_field_name(ds, 3));
    ck_assert_ptr_null(mml_dataset_field_name(NULL, 0));
    ck_assert_int_eq(mml_dataset_find_field(ds, NULL), -1);
    ck_assert_int_eq(mml_dataset_find_field(NULL, "user"), -1);
    ck_assert_ptr_null(mml_dataset_domain_name(ds, 2));
    ck_assert_ptr_null(mml_dataset_domain_name(ds, -1));
    ck_assert_int_eq(mml_dataset_domain_rows(ds, 2), 0);
    ck_assert_int_eq(mml_dataset_domain_rows(NULL, 0), 0);
    ck_assert_ptr_null(mml_dataset_dense_name(ds, 0));
    ck_assert_ptr_null(mml_dataset_field_value(ds, 0, 0)); /* synthetic: no vocabulary */
    ck_assert_ptr_null(mml_dataset_field_value(NULL, 0, 0));
    ck_assert_int_eq(mml_dataset_field_lookup(ds, 0, "1"), -1);
    ck_assert_int_eq(mml_dataset_field_lookup(ds, 0, NULL), -1);
    ck_assert_int_eq(mml_dataset_field_oov(ds, 0), -1);
    ck_assert_int_eq(mml_dataset_field_oov(NULL, 0), -1);
    ck_assert_ptr_null(mml_dataset_multihot_name(ds, 0));
    ck_assert_int_eq(mml_dataset_multihot_size(ds, 0), 0);
    ck_assert_ptr_null(mml_dataset_multihot_value(ds, 0, 0));
    const int64_t *off;
    const int32_t *ids;
    int64_t n;
    ck_assert_int_eq(mml_dataset_multihot_csr(ds, 0, &off, &ids), MML_ERANGE);
    ck_assert_int_eq(mml_dataset_multihot_csr(NULL, 0, &off, &ids), MML_EINVAL);
    ck_assert_int_eq(mml_dataset_multihot_csr(ds, 0, NULL, &ids), MML_EINVAL);
    ck_assert_int_eq(mml_dataset_multihot_row(ds, 0, 0, &ids, &n), MML_ERANGE);
    ck_assert_int_eq(mml_dataset_multihot_row(ds, 0, 0, NULL, &n), MML_EINVAL);
    int64_t sum = 0;
    for (int32_t d = 0; d < 2; d++)
        sum += mml_dataset_domain_rows(ds, d);
    ck_assert_int_eq(sum, mml_dataset_n_rows(ds));
    mml_dataset_destroy(NULL);
    destroy3(s);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(write_csv_round_trip)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3];
    ck_assert_int_eq(synth(ctx, 3000, 3, 9, s), MML_OK);
    char p[512];
    tpath(p, sizeof p, "out.csv");
    ck_assert_int_eq(mml_dataset_write_csv(s[0], ctx, p), MML_OK);
    mml_dataset *r;
    ck_assert_int_eq(mml_csv_load(ctx, NULL, p, NULL, NULL, &r, NULL, NULL), MML_OK);
    ck_assert_int_eq(mml_dataset_n_rows(r), mml_dataset_n_rows(s[0]));
    ck_assert_int_eq(mml_dataset_n_fields(r), 3);
    ck_assert_int_eq(mml_dataset_domain_field(r), 2);
    ck_assert_str_eq(mml_dataset_field_name(r, 0), "user");
    ck_assert_str_eq(mml_dataset_field_name(r, 2), "domain");
    mml_batch_view a, b;
    mml_dataset_view(s[0], 0, mml_dataset_n_rows(s[0]), &a);
    mml_dataset_view(r, 0, mml_dataset_n_rows(r), &b);
    for (int64_t k = 0; k < a.n_rows; k++) {
        ck_assert(a.labels[k] == b.labels[k]);
        ck_assert_int_eq(a.domain[k], b.domain[k]);
        ck_assert_int_eq(atoi(mml_dataset_field_value(r, 0, b.ids[3 * k])), a.ids[3 * k]);
        ck_assert_int_eq(atoi(mml_dataset_field_value(r, 1, b.ids[3 * k + 1])), a.ids[3 * k + 1]);
        ck_assert_int_eq(b.ids[3 * k + 2], a.ids[3 * k + 2]);
    }
    mml_dataset_destroy(r);
    /* No temporary file is left behind; a bad path is an I/O error. */
    ck_assert_int_eq(access(p, F_OK), 0);
    ck_assert_int_eq(mml_dataset_write_csv(s[0], ctx, "/nonexistent-dir/x.csv"), MML_EIO);
    ck_assert_int_eq(mml_dataset_write_csv(NULL, ctx, p), MML_EINVAL);
    ck_assert_int_eq(mml_dataset_write_csv(s[0], ctx, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_dataset_write_csv(s[0], NULL, p), MML_EINVAL);
    destroy3(s);

    /* A CSV data set with numeric and multi-hot columns writes them too. */
    write_str("wm.csv", "label,domain,f,x,tags\n1,a,p,1.5,u|v\n0,b,q,-2,\n");
    static const char *const num[] = {"x"};
    static const char *const mh[] = {"tags"};
    mml_csv_options o;
    mml_csv_options_init(&o);
    o.numeric_columns = num;
    o.n_numeric_columns = 1;
    o.multihot_columns = mh;
    o.n_multihot_columns = 1;
    ck_assert_int_eq(load3(ctx, &o, "wm.csv", NULL, NULL, &r, NULL, NULL), MML_OK);
    tpath(p, sizeof p, "wm_out.csv");
    ck_assert_int_eq(mml_dataset_write_csv(r, ctx, p), MML_OK);
    mml_dataset_destroy(r);
    FILE *f = fopen(p, "rb");
    char buf[256];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    ck_assert_str_eq(buf, "label,domain,f,x,tags\n1,0,0,1.5,0|1\n0,1,1,-2,\n");
    mml_ctx_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------ batcher */

static mml_batcher *make_batcher(mml_ctx *ctx, const mml_dataset *ds, int64_t bs, int shuffle,
                                 int32_t domain, uint64_t seed)
{
    mml_batcher_options o;
    mml_batcher_options_init(&o);
    o.batch_size = bs;
    o.shuffle = shuffle;
    o.domain = domain;
    o.seed = seed;
    mml_batcher *b = NULL;
    ck_assert_int_eq(mml_batcher_create(&b, ctx, ds, &o), MML_OK);
    return b;
}

/* Runs one epoch; checks every selected row is visited once with its data,
 * batch sizes, and records the order. Returns the number of rows. */
static int64_t run_epoch(mml_batcher *b, const mml_dataset *ds, int64_t bs, int32_t domain,
                         uint64_t epoch, int64_t *order)
{
    int64_t n = mml_dataset_n_rows(ds);
    char *seen = calloc((size_t)n + 1, 1);
    mml_batch_view all, v;
    mml_dataset_view(ds, 0, n, &all);
    ck_assert_int_eq(mml_batcher_start_epoch(b, epoch), MML_OK);
    ck_assert_ptr_null(mml_batcher_batch_rows(b));
    int64_t pos = 0, batches = 0, sel = mml_batcher_n_rows(b);
    int rc;
    while ((rc = mml_batcher_next(b, &v)) == 1) {
        batches++;
        int64_t want = sel - pos < bs ? sel - pos : bs;
        ck_assert_int_eq(v.n_rows, want);
        const int64_t *rows = mml_batcher_batch_rows(b);
        for (int64_t k = 0; k < v.n_rows; k++) {
            int64_t r = rows[k];
            ck_assert(r >= 0 && r < n);
            ck_assert_int_eq(seen[r], 0);
            seen[r] = 1;
            ck_assert_int_eq(memcmp(v.ids + k * v.ids_row_stride, all.ids + r * 3, 12), 0);
            ck_assert_int_eq(v.domain[k], all.domain[r]);
            ck_assert(v.labels[k] == all.labels[r]);
            if (domain >= 0)
                ck_assert_int_eq(v.domain[k], domain);
            order[pos++] = r;
        }
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(mml_batcher_next(b, &v), 0);
    ck_assert_int_eq(pos, sel);
    ck_assert_int_eq(batches, mml_batcher_n_batches(b));
    int64_t count = 0;
    for (int64_t r = 0; r < n; r++)
        count += seen[r];
    ck_assert_int_eq(count, sel);
    free(seen);
    return pos;
}

START_TEST(batcher_epochs_and_filters)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3];
    ck_assert_int_eq(synth(ctx, 4000, 3, 21, s), MML_OK);
    mml_dataset *ds = s[0];
    int64_t n = mml_dataset_n_rows(ds);
    int64_t *o1 = malloc((size_t)n * 8), *o2 = malloc((size_t)n * 8), *o3 = malloc((size_t)n * 8);
    static const int64_t sizes[] = {1, 7, 1024, 100000};
    for (size_t k = 0; k < 4; k++) {
        int64_t bs = sizes[k];
        mml_batcher *b = make_batcher(ctx, ds, bs, 1, -1, 5);
        mml_batcher *c = make_batcher(ctx, ds, bs, 1, -1, 5);
        ck_assert_int_eq(mml_batcher_n_rows(b), n);
        ck_assert_int_eq(mml_batcher_n_batches(b), (n + bs - 1) / bs);
        run_epoch(b, ds, bs, -1, 3, o1);
        run_epoch(c, ds, bs, -1, 3, o2);
        ck_assert_int_eq(memcmp(o1, o2, (size_t)n * 8), 0); /* same (seed, epoch) */
        run_epoch(b, ds, bs, -1, 4, o3);
        ck_assert_int_ne(memcmp(o1, o3, (size_t)n * 8), 0); /* another epoch */
        run_epoch(c, ds, bs, -1, 3, o2);                      /* independent of history */
        ck_assert_int_eq(memcmp(o1, o2, (size_t)n * 8), 0);
        mml_batcher_destroy(b);
        mml_batcher_destroy(c);
    }
    /* Another seed, another permutation. */
    mml_batcher *b = make_batcher(ctx, ds, 64, 1, -1, 6);
    run_epoch(b, ds, 64, -1, 3, o2);
    ck_assert_int_ne(memcmp(o1, o2, (size_t)n * 8), 0);
    mml_batcher_destroy(b);
    /* No shuffle: row order (views into the data set). */
    b = make_batcher(ctx, ds, 7, 0, -1, 1);
    run_epoch(b, ds, 7, -1, 9, o1);
    for (int64_t r = 0; r < n; r++)
        ck_assert_int_eq(o1[r], r);
    mml_batcher_destroy(b);
    /* One domain's rows. */
    for (int32_t d = 0; d < 3; d++)
        for (int sh = 0; sh < 2; sh++) {
            b = make_batcher(ctx, ds, 7, sh, d, 2);
            ck_assert_int_eq(mml_batcher_n_rows(b), mml_dataset_domain_rows(ds, d));
            int64_t m = run_epoch(b, ds, 7, d, 0, o1);
            ck_assert_int_eq(m, mml_dataset_domain_rows(ds, d));
            for (int64_t k = 1; k < m && !sh; k++)
                ck_assert_int_lt(o1[k - 1], o1[k]);
            mml_batcher_destroy(b);
        }
    /* The batcher starts in epoch 0. */
    b = make_batcher(ctx, ds, 100, 1, -1, 8);
    mml_batcher *c = make_batcher(ctx, ds, 100, 1, -1, 8);
    mml_batch_view v;
    ck_assert_int_eq(mml_batcher_next(b, &v), 1);
    const int64_t *first = mml_batcher_batch_rows(b);
    ck_assert_int_eq(mml_batcher_start_epoch(c, 0), MML_OK);
    ck_assert_int_eq(mml_batcher_next(c, &v), 1);
    ck_assert_int_eq(memcmp(first, mml_batcher_batch_rows(c), 100 * 8), 0);
    mml_batcher_destroy(b);
    mml_batcher_destroy(c);
    free(o1);
    free(o2);
    free(o3);
    destroy3(s);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(batcher_bad_arguments)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3];
    ck_assert_int_eq(synth(ctx, 300, 2, 1, s), MML_OK);
    mml_batcher *b = (mml_batcher *)1;
    mml_batcher_options o;
    mml_batcher_options_init(&o);
    ck_assert_int_eq(mml_batcher_create(&b, NULL, s[0], &o), MML_EINVAL);
    ck_assert_ptr_null(b);
    ck_assert_int_eq(mml_batcher_create(NULL, ctx, s[0], &o), MML_EINVAL);
    ck_assert_int_eq(mml_batcher_create(&b, ctx, NULL, &o), MML_EINVAL);
    o.batch_size = 0;
    ck_assert_int_eq(mml_batcher_create(&b, ctx, s[0], &o), MML_EINVAL);
    mml_batcher_options_init(&o);
    o.domain = 2;
    ck_assert_int_eq(mml_batcher_create(&b, ctx, s[0], &o), MML_ERANGE);
    o.domain = -2;
    ck_assert_int_eq(mml_batcher_create(&b, ctx, s[0], &o), MML_ERANGE);
    mml_batcher_options_init(&o);
    o.struct_size = 0;
    ck_assert_int_eq(mml_batcher_create(&b, ctx, s[0], &o), MML_EVERSION);
    ck_assert_int_eq(mml_batcher_create(&b, ctx, s[0], NULL), MML_OK);
    mml_batch_view v;
    ck_assert_int_eq(mml_batcher_next(b, NULL), MML_EINVAL);
    ck_assert_int_eq(mml_batcher_next(NULL, &v), MML_EINVAL);
    ck_assert_int_eq(mml_batcher_start_epoch(NULL, 0), MML_EINVAL);
    ck_assert_int_eq(mml_batcher_n_rows(NULL), 0);
    ck_assert_int_eq(mml_batcher_n_batches(NULL), 0);
    ck_assert_ptr_null(mml_batcher_batch_rows(NULL));
    ck_assert_int_eq(mml_batcher_next(b, &v), 1);
    ck_assert_int_eq(v.n_rows, mml_dataset_n_rows(s[0]) < 1024 ? mml_dataset_n_rows(s[0]) : 1024);
    mml_batcher_destroy(b);
    mml_batcher_destroy(NULL);
    mml_batcher_options_init(NULL);
    destroy3(s);
    mml_ctx_destroy(ctx);
}
END_TEST

static int op_batcher(mml_ctx *ctx, void *user)
{
    const mml_dataset *ds = user;
    mml_batcher_options o;
    mml_batcher_options_init(&o);
    o.batch_size = 16;
    mml_batcher *b;
    int rc = mml_batcher_create(&b, ctx, ds, &o);
    if (rc == MML_OK)
        mml_batcher_destroy(b);
    return rc;
}

START_TEST(batcher_allocation_failures)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3];
    ck_assert_int_eq(synth(ctx, 300, 2, 1, s), MML_OK);
    fail_every_allocation(op_batcher, s[0]);
    destroy3(s);
    mml_ctx_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------ internals */

START_TEST(line_reader_and_vocab_internals)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml__source src = {"mem", NULL, "a\r\nbb\n\nccc", 10};
    mml__lines r;
    ck_assert_int_eq(mml__lines_open(&r, ctx, &src, 2), MML_OK);
    const char *line;
    size_t len;
    ck_assert_int_eq(mml__lines_next(&r, &line, &len), 1);
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(mml__lines_next(&r, &line, &len), 1);
    ck_assert_uint_eq(len, 2);
    ck_assert_int_eq(mml__lines_next(&r, &line, &len), 1);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(mml__lines_next(&r, &line, &len), MML_EPARSE);
    ck_assert_int_eq(r.line_no, 4);
    ck_assert_int_eq(mml__lines_next(&r, &line, &len), 0);
    mml__lines_close(&r);
    /* Vocabulary: many values, sorting and renumbering. */
    mml__vocab *v;
    ck_assert_int_eq(mml__vocab_create(ctx, &v), MML_OK);
    for (int k = 999; k >= 0; k--) {
        char t[16];
        int n = sprintf(t, "%d", k * 7);
        int32_t id;
        ck_assert_int_eq(mml__vocab_intern(ctx, v, t, (size_t)n, &id), MML_OK);
        ck_assert_int_eq(id, 999 - k);
    }
    ck_assert(v->all_int);
    int32_t *map;
    ck_assert_int_eq(mml__vocab_sort(ctx, v, &map), MML_OK);
    ck_assert_int_eq(map[0], 999);
    ck_assert_str_eq(mml__vocab_str(v, 1), "7");
    ck_assert_int_eq(mml__vocab_find(v, "70", 2), 10);
    mml__free(ctx, map, 1000 * sizeof *map);
    mml__vocab_destroy(ctx, v);
    int64_t x;
    ck_assert(mml__parse_canonical_int("-12", 3, &x) && x == -12);
    ck_assert(!mml__parse_canonical_int("012", 3, &x));
    ck_assert(!mml__parse_canonical_int("-0", 2, &x));
    ck_assert(!mml__parse_canonical_int("", 0, &x));
    ck_assert(!mml__parse_canonical_int("1a", 2, &x));
    mml_ctx_destroy(ctx);
}
END_TEST

static Suite *data_suite(void)
{
    Suite *s = suite_create("data");
    TCase *c = tcase_create("csv");
    tcase_set_timeout(c, 120);
    tcase_add_test(c, csv_basic_layout_and_vocab);
    tcase_add_test(c, csv_roles_strings_numeric_multihot);
    tcase_add_test(c, csv_format_details);
    tcase_add_test(c, csv_malformed_input);
    tcase_add_test(c, csv_validation_and_test_errors);
    tcase_add_test(c, csv_streams_large_files);
    tcase_add_test(c, csv_bad_arguments);
    tcase_add_test(c, csv_allocation_failures);
    tcase_add_test(c, line_reader_and_vocab_internals);
    suite_add_tcase(s, c);
    TCase *m = tcase_create("movielens");
    tcase_set_timeout(m, 120);
    tcase_add_test(m, movielens_100k_fixture);
    tcase_add_test(m, movielens_1m_fixture);
    tcase_add_test(m, movielens_errors);
    tcase_add_test(m, movielens_allocation_failures);
    suite_add_tcase(s, m);
    TCase *g = tcase_create("synthetic");
    tcase_set_timeout(g, 120);
    tcase_add_test(g, synthetic_sizes_determinism_rates);
    tcase_add_test(g, synthetic_allocation_failures);
    tcase_add_test(g, dataset_accessors_and_view);
    tcase_add_test(g, write_csv_round_trip);
    tcase_add_test(g, arrays_build_a_data_set);
    tcase_add_test(g, arrays_bad_input);
    tcase_add_test(g, arrays_allocation_failures);
    suite_add_tcase(s, g);
    TCase *b = tcase_create("batcher");
    tcase_set_timeout(b, 120);
    tcase_add_test(b, batcher_epochs_and_filters);
    tcase_add_test(b, batcher_bad_arguments);
    tcase_add_test(b, batcher_allocation_failures);
    suite_add_tcase(s, b);
    return s;
}

int main(void) { return run_suite_in_tmpdir(data_suite(), tmpdir, sizeof tmpdir, "data"); }
