/* Data sets: storage, schema, accessors, views and CSV output. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"

/* ------------------------------------------------------------ schema */

int mml__schema_create(mml_ctx *ctx, mml__schema **out, int32_t n_fields, int32_t n_dense,
                       int32_t n_multihot, int32_t n_domains)
{
    *out = NULL;
    mml__schema *s = mml__calloc(ctx, 1, sizeof *s);
    if (!s)
        return MML_ENOMEM;
    s->refs = 1;
    s->n_fields = n_fields;
    s->n_dense = n_dense;
    s->n_multihot = n_multihot;
    s->n_domains = n_domains;
    s->cap_fields = n_fields;
    s->domain_field = -1;
    int ok = 1;
    if (n_fields > 0) {
        s->field_names = mml__calloc(ctx, (size_t)n_fields, sizeof *s->field_names);
        s->field_sizes = mml__calloc(ctx, (size_t)n_fields, sizeof *s->field_sizes);
        s->field_oov = mml__calloc(ctx, (size_t)n_fields, sizeof *s->field_oov);
        s->field_vocab = mml__calloc(ctx, (size_t)n_fields, sizeof *s->field_vocab);
        s->field_kind = mml__calloc(ctx, (size_t)n_fields, sizeof *s->field_kind);
        s->field_seed = mml__calloc(ctx, (size_t)n_fields, sizeof *s->field_seed);
        ok = ok && s->field_names && s->field_sizes && s->field_oov && s->field_vocab &&
             s->field_kind && s->field_seed;
        if (s->field_oov)
            for (int32_t f = 0; f < n_fields; f++)
                s->field_oov[f] = -1;
    }
    if (n_dense > 0) {
        s->dense_names = mml__calloc(ctx, (size_t)n_dense, sizeof *s->dense_names);
        ok = ok && s->dense_names;
    }
    if (n_multihot > 0) {
        s->mh_names = mml__calloc(ctx, (size_t)n_multihot, sizeof *s->mh_names);
        s->mh_sizes = mml__calloc(ctx, (size_t)n_multihot, sizeof *s->mh_sizes);
        s->mh_vocab = mml__calloc(ctx, (size_t)n_multihot, sizeof *s->mh_vocab);
        ok = ok && s->mh_names && s->mh_sizes && s->mh_vocab;
    }
    if (n_domains > 0) {
        s->domain_names = mml__calloc(ctx, (size_t)n_domains, sizeof *s->domain_names);
        ok = ok && s->domain_names;
    }
    if (!ok) {
        mml__schema_release(ctx, s);
        return MML_ENOMEM;
    }
    *out = s;
    return MML_OK;
}

void mml__schema_release(mml_ctx *ctx, mml__schema *s)
{
    if (!s || --s->refs > 0)
        return;
    if (s->field_names)
        for (int32_t f = 0; f < s->cap_fields; f++)
            mml__strfree(ctx, s->field_names[f]);
    if (s->field_vocab)
        for (int32_t f = 0; f < s->cap_fields; f++)
            mml__vocab_destroy(ctx, s->field_vocab[f]);
    if (s->dense_names)
        for (int32_t j = 0; j < s->n_dense; j++)
            mml__strfree(ctx, s->dense_names[j]);
    if (s->mh_names)
        for (int32_t m = 0; m < s->n_multihot; m++)
            mml__strfree(ctx, s->mh_names[m]);
    if (s->mh_vocab)
        for (int32_t m = 0; m < s->n_multihot; m++)
            mml__vocab_destroy(ctx, s->mh_vocab[m]);
    if (s->domain_names)
        for (int32_t d = 0; d < s->n_domains; d++)
            mml__strfree(ctx, s->domain_names[d]);
    size_t nf = (size_t)s->cap_fields, nm = (size_t)s->n_multihot;
    mml__free(ctx, s->field_names, nf * sizeof *s->field_names);
    mml__free(ctx, s->field_sizes, nf * sizeof *s->field_sizes);
    mml__free(ctx, s->field_oov, nf * sizeof *s->field_oov);
    mml__free(ctx, s->field_vocab, nf * sizeof *s->field_vocab);
    mml__free(ctx, s->field_kind, nf * sizeof *s->field_kind);
    mml__free(ctx, s->field_seed, nf * sizeof *s->field_seed);
    mml__strfree(ctx, s->label_column);
    mml__strfree(ctx, s->domain_column);
    mml__vocab_destroy(ctx, s->domain_vocab);
    mml__free(ctx, s->dense_names, (size_t)s->n_dense * sizeof *s->dense_names);
    mml__free(ctx, s->mh_names, nm * sizeof *s->mh_names);
    mml__free(ctx, s->mh_sizes, nm * sizeof *s->mh_sizes);
    mml__free(ctx, s->mh_vocab, nm * sizeof *s->mh_vocab);
    mml__free(ctx, s->domain_names, (size_t)s->n_domains * sizeof *s->domain_names);
    mml__free(ctx, s, sizeof *s);
}

void mml__schema_retain(mml__schema *s)
{
    if (s)
        s->refs++;
}

mml__schema *mml__dataset_schema(const mml_dataset *ds) { return ds ? ds->schema : NULL; }

int mml__schema_set_roles(mml_ctx *ctx, mml__schema *s, int32_t source, const char *label_column,
                          int32_t label_kind, int32_t label_min, const char *domain_column,
                          int32_t domain_mode, char delimiter, char mh_separator)
{
    s->source = source;
    s->label_kind = label_kind;
    s->label_min = label_min;
    s->domain_mode = domain_mode;
    s->delimiter = delimiter;
    s->mh_separator = mh_separator;
    if (!(s->label_column = mml__strdup(ctx, label_column)) ||
        (domain_column && !(s->domain_column = mml__strdup(ctx, domain_column))))
        return mml__error(ctx, MML_ENOMEM, "out of memory building the schema");
    if (domain_mode != MML__DOMAIN_NAMES || s->domain_vocab)
        return MML_OK;
    if (mml__vocab_create(ctx, &s->domain_vocab) < 0)
        return mml__error(ctx, MML_ENOMEM, "out of memory building the schema");
    for (int32_t d = 0; d < s->n_domains; d++) {
        int32_t id;
        const char *nm = s->domain_names[d];
        if (mml__vocab_intern(ctx, s->domain_vocab, nm, strlen(nm), &id) < 0)
            return mml__error(ctx, MML_ENOMEM, "out of memory building the schema");
        if (id != d)
            return mml__error(ctx, MML_EINVAL, "domain name '%s' is used twice", nm);
    }
    return MML_OK;
}

/* ------------------------------------------------------------ storage */

static size_t bytes_of(int64_t n, size_t elem) { return (size_t)n * elem; }

int mml__dataset_create(mml_ctx *ctx, mml__schema *schema, int64_t cap_rows, mml_dataset **out)
{
    *out = NULL;
    mml_dataset *ds = mml__calloc(ctx, 1, sizeof *ds);
    if (!ds)
        return MML_ENOMEM;
    ds->ctx = ctx;
    ds->schema = schema;
    schema->refs++;
    ds->n_fields = schema->n_fields;
    ds->n_dense = schema->n_dense;
    ds->n_multihot = schema->n_multihot;
    ds->n_domains = schema->n_domains;
    int ok = 1;
    if (ds->n_multihot > 0) {
        ds->mh_off = mml__calloc(ctx, (size_t)ds->n_multihot, sizeof *ds->mh_off);
        ds->mh_ids = mml__calloc(ctx, (size_t)ds->n_multihot, sizeof *ds->mh_ids);
        ds->mh_cap = mml__calloc(ctx, (size_t)ds->n_multihot, sizeof *ds->mh_cap);
        ok = ds->mh_off && ds->mh_ids && ds->mh_cap;
    }
    if (ok && ds->n_domains > 0) {
        ds->domain_rows = mml__calloc(ctx, (size_t)ds->n_domains, sizeof *ds->domain_rows);
        ok = ds->domain_rows != NULL;
    }
    int rc = ok ? mml__dataset_reserve(ds, cap_rows > 0 ? cap_rows : 1) : MML_ENOMEM;
    if (rc < 0) {
        mml_dataset_destroy(ds);
        return rc;
    }
    *out = ds;
    return MML_OK;
}

int mml__dataset_reserve(mml_dataset *ds, int64_t n)
{
    if (n <= ds->cap_rows)
        return MML_OK;
    mml_ctx *ctx = ds->ctx;
    int64_t ncap = ds->cap_rows > 0 ? ds->cap_rows : 1;
    while (ncap < n) {
        if (ncap > INT64_MAX / 4)
            return MML_ENOMEM;
        ncap *= 2;
    }
    int64_t nf = ds->n_fields, nd = ds->n_dense, nm = ds->n_multihot;
    if ((uint64_t)ncap > SIZE_MAX / 16 / (uint64_t)(nf + nd + 4))
        return MML_ENOMEM;
    int32_t *ids = nf ? mml__alloc(ctx, bytes_of(ncap * nf, 4)) : NULL;
    float *dense = nd ? mml__alloc(ctx, bytes_of(ncap * nd, 4)) : NULL;
    int32_t *dom = mml__alloc(ctx, bytes_of(ncap, 4));
    float *lab = mml__alloc(ctx, bytes_of(ncap, 4));
    const int64_t **mview = nm ? mml__alloc(ctx, (size_t)(ncap + 1) * (size_t)nm * sizeof *mview) : NULL;
    int ok = (!nf || ids) && (!nd || dense) && dom && lab && (!nm || mview);
    int64_t *offs[64];
    int64_t **moff = NULL;
    if (ok && nm > 0) {
        moff = nm <= 64 ? offs : mml__calloc(ctx, (size_t)nm, sizeof *moff);
        if (!moff)
            ok = 0;
        else {
            for (int64_t m = 0; m < nm; m++)
                moff[m] = NULL;
            for (int64_t m = 0; m < nm && ok; m++) {
                moff[m] = mml__alloc(ctx, bytes_of(ncap + 1, 8));
                ok = moff[m] != NULL;
            }
        }
    }
    if (!ok) {
        mml__free(ctx, ids, bytes_of(ncap * nf, 4));
        mml__free(ctx, dense, bytes_of(ncap * nd, 4));
        mml__free(ctx, dom, bytes_of(ncap, 4));
        mml__free(ctx, lab, bytes_of(ncap, 4));
        if (mview)
            mml__free(ctx, mview, (size_t)(ncap + 1) * (size_t)nm * sizeof *mview);
        if (moff) {
            for (int64_t m = 0; m < nm; m++)
                mml__free(ctx, moff[m], bytes_of(ncap + 1, 8));
            if (moff != offs)
                mml__free(ctx, moff, (size_t)nm * sizeof *moff);
        }
        return MML_ENOMEM;
    }
    int64_t oc = ds->cap_rows, nr = ds->n_rows;
    if (nr > 0) {
        if (nf)
            memcpy(ids, ds->ids, bytes_of(nr * nf, 4));
        if (nd)
            memcpy(dense, ds->dense, bytes_of(nr * nd, 4));
        memcpy(dom, ds->domain, bytes_of(nr, 4));
        memcpy(lab, ds->labels, bytes_of(nr, 4));
    }
    mml__free(ctx, ds->ids, bytes_of(oc * nf, 4));
    mml__free(ctx, ds->dense, bytes_of(oc * nd, 4));
    mml__free(ctx, ds->domain, bytes_of(oc, 4));
    mml__free(ctx, ds->labels, bytes_of(oc, 4));
    ds->ids = ids;
    ds->dense = dense;
    ds->domain = dom;
    ds->labels = lab;
    for (int64_t m = 0; m < nm; m++) {
        if (ds->mh_off[m])
            memcpy(moff[m], ds->mh_off[m], bytes_of(nr + 1, 8));
        else
            moff[m][0] = 0;
        mml__free(ctx, ds->mh_off[m], bytes_of(oc + 1, 8));
        ds->mh_off[m] = moff[m];
    }
    if (moff && moff != offs)
        mml__free(ctx, moff, (size_t)nm * sizeof *moff);
    if (nm) {
        if (ds->mh_view)
            mml__free(ctx, ds->mh_view, (size_t)(oc + 1) * (size_t)nm * sizeof *ds->mh_view);
        for (int64_t r = 0; r <= ncap; r++)
            for (int64_t m = 0; m < nm; m++)
                mview[r * nm + m] = ds->mh_off[m] + r;
        ds->mh_view = mview;
    }
    ds->cap_rows = ncap;
    return MML_OK;
}

int mml__dataset_reserve_mh(mml_dataset *ds, int32_t m, int64_t need)
{
    return mml__grow(ds->ctx, &ds->mh_ids[m], &ds->mh_cap[m], need, sizeof(int32_t));
}

void mml__dataset_count_domains(mml_dataset *ds)
{
    for (int32_t d = 0; d < ds->n_domains; d++)
        ds->domain_rows[d] = 0;
    for (int64_t r = 0; r < ds->n_rows; r++)
        ds->domain_rows[ds->domain[r]]++;
}

int mml__dataset_gather(const mml_dataset *src, const int64_t *idx, int64_t n, mml_dataset **out)
{
    mml_dataset *ds;
    int rc = mml__dataset_create(src->ctx, src->schema, n, &ds);
    if (rc < 0)
        return rc;
    int32_t nf = src->n_fields, nd = src->n_dense;
    for (int64_t k = 0; k < n; k++) {
        int64_t r = idx[k];
        if (nf)
            memcpy(ds->ids + k * nf, src->ids + r * nf, (size_t)nf * 4);
        if (nd)
            memcpy(ds->dense + k * nd, src->dense + r * nd, (size_t)nd * 4);
        ds->domain[k] = src->domain[r];
        ds->labels[k] = src->labels[r];
    }
    for (int32_t m = 0; m < src->n_multihot; m++) {
        int64_t total = 0;
        for (int64_t k = 0; k < n; k++)
            total += src->mh_off[m][idx[k] + 1] - src->mh_off[m][idx[k]];
        rc = mml__dataset_reserve_mh(ds, m, total);
        if (rc < 0) {
            mml_dataset_destroy(ds);
            return rc;
        }
        int64_t pos = 0;
        ds->mh_off[m][0] = 0;
        for (int64_t k = 0; k < n; k++) {
            int64_t a = src->mh_off[m][idx[k]], b = src->mh_off[m][idx[k] + 1];
            if (b > a)
                memcpy(ds->mh_ids[m] + pos, src->mh_ids[m] + a, (size_t)(b - a) * 4);
            pos += b - a;
            ds->mh_off[m][k + 1] = pos;
        }
    }
    ds->n_rows = n;
    mml__dataset_count_domains(ds);
    *out = ds;
    return MML_OK;
}

void mml_dataset_destroy(mml_dataset *ds)
{
    if (!ds)
        return;
    mml_ctx *ctx = ds->ctx;
    int64_t c = ds->cap_rows;
    mml__free(ctx, ds->ids, bytes_of(c * ds->n_fields, 4));
    mml__free(ctx, ds->dense, bytes_of(c * ds->n_dense, 4));
    mml__free(ctx, ds->domain, bytes_of(c, 4));
    mml__free(ctx, ds->labels, bytes_of(c, 4));
    for (int32_t m = 0; m < ds->n_multihot; m++) {
        if (ds->mh_off)
            mml__free(ctx, ds->mh_off[m], bytes_of(c + 1, 8));
        if (ds->mh_ids && ds->mh_cap)
            mml__free(ctx, ds->mh_ids[m], bytes_of(ds->mh_cap[m], 4));
    }
    size_t nm = (size_t)ds->n_multihot;
    if (ds->mh_view)
        mml__free(ctx, ds->mh_view, (size_t)(c + 1) * nm * sizeof *ds->mh_view);
    mml__free(ctx, ds->mh_off, nm * sizeof *ds->mh_off);
    mml__free(ctx, ds->mh_ids, nm * sizeof *ds->mh_ids);
    mml__free(ctx, ds->mh_cap, nm * sizeof *ds->mh_cap);
    mml__free(ctx, ds->domain_rows, (size_t)ds->n_domains * sizeof *ds->domain_rows);
    mml__schema_release(ctx, ds->schema);
    mml__free(ctx, ds, sizeof *ds);
}

/* ------------------------------------------------------------ accessors */

int64_t mml_dataset_n_rows(const mml_dataset *ds) { return ds ? ds->n_rows : 0; }
int32_t mml_dataset_n_fields(const mml_dataset *ds) { return ds ? ds->n_fields : 0; }
int32_t mml_dataset_n_dense(const mml_dataset *ds) { return ds ? ds->n_dense : 0; }
int32_t mml_dataset_n_domains(const mml_dataset *ds) { return ds ? ds->n_domains : 0; }
int32_t mml_dataset_n_multihot(const mml_dataset *ds) { return ds ? ds->n_multihot : 0; }
int64_t mml_dataset_skipped_rows(const mml_dataset *ds) { return ds ? ds->skipped : 0; }
int32_t mml_dataset_domain_field(const mml_dataset *ds) { return ds ? ds->schema->domain_field : -1; }

static int field_ok(const mml_dataset *ds, int32_t f) { return ds && f >= 0 && f < ds->n_fields; }
static int mh_ok(const mml_dataset *ds, int32_t m) { return ds && m >= 0 && m < ds->n_multihot; }

int32_t mml_dataset_field_size(const mml_dataset *ds, int32_t field)
{
    return field_ok(ds, field) ? ds->schema->field_sizes[field] : 0;
}

const char *mml_dataset_field_name(const mml_dataset *ds, int32_t field)
{
    return field_ok(ds, field) ? ds->schema->field_names[field] : NULL;
}

int32_t mml_dataset_find_field(const mml_dataset *ds, const char *name)
{
    if (!ds || !name)
        return -1;
    for (int32_t f = 0; f < ds->n_fields; f++)
        if (strcmp(ds->schema->field_names[f], name) == 0)
            return f;
    return -1;
}

const char *mml_dataset_domain_name(const mml_dataset *ds, int32_t domain)
{
    return ds && domain >= 0 && domain < ds->n_domains ? ds->schema->domain_names[domain] : NULL;
}

int64_t mml_dataset_domain_rows(const mml_dataset *ds, int32_t domain)
{
    return ds && domain >= 0 && domain < ds->n_domains ? ds->domain_rows[domain] : 0;
}

const char *mml_dataset_dense_name(const mml_dataset *ds, int32_t j)
{
    return ds && j >= 0 && j < ds->n_dense ? ds->schema->dense_names[j] : NULL;
}

const char *mml_dataset_field_value(const mml_dataset *ds, int32_t field, int32_t id)
{
    if (!field_ok(ds, field))
        return NULL;
    const mml__vocab *v = ds->schema->field_vocab[field];
    if (!v || id < 0 || id >= v->n)
        return NULL;
    return mml__vocab_str(v, id);
}

int32_t mml_dataset_field_lookup(const mml_dataset *ds, int32_t field, const char *value)
{
    if (!field_ok(ds, field) || !value)
        return -1;
    const mml__vocab *v = ds->schema->field_vocab[field];
    if (!v)
        return -1;
    int32_t id = mml__vocab_find(v, value, strlen(value));
    return id >= 0 ? id : ds->schema->field_oov[field];
}

int32_t mml_dataset_field_oov(const mml_dataset *ds, int32_t field)
{
    return field_ok(ds, field) ? ds->schema->field_oov[field] : -1;
}

const char *mml_dataset_multihot_name(const mml_dataset *ds, int32_t m)
{
    return mh_ok(ds, m) ? ds->schema->mh_names[m] : NULL;
}

int32_t mml_dataset_multihot_size(const mml_dataset *ds, int32_t m)
{
    return mh_ok(ds, m) ? ds->schema->mh_sizes[m] : 0;
}

const char *mml_dataset_multihot_value(const mml_dataset *ds, int32_t m, int32_t id)
{
    if (!mh_ok(ds, m))
        return NULL;
    const mml__vocab *v = ds->schema->mh_vocab[m];
    if (!v || id < 0 || id >= v->n)
        return NULL;
    return mml__vocab_str(v, id);
}

int mml_dataset_multihot_csr(const mml_dataset *ds, int32_t m, const int64_t **offsets,
                             const int32_t **ids)
{
    if (!ds || !offsets || !ids)
        return MML_EINVAL;
    if (!mh_ok(ds, m))
        return MML_ERANGE;
    *offsets = ds->mh_off[m];
    *ids = ds->mh_ids[m];
    return MML_OK;
}

int mml_dataset_multihot_row(const mml_dataset *ds, int32_t m, int64_t row, const int32_t **ids,
                             int64_t *n)
{
    if (!ds || !ids || !n)
        return MML_EINVAL;
    if (!mh_ok(ds, m) || row < 0 || row >= ds->n_rows)
        return MML_ERANGE;
    int64_t a = ds->mh_off[m][row], b = ds->mh_off[m][row + 1];
    *ids = ds->mh_ids[m] ? ds->mh_ids[m] + a : NULL;
    *n = b - a;
    return MML_OK;
}

int mml__loader_start(mml_ctx *ctx, mml_dataset **train, mml_dataset **val, mml_dataset **test)
{
    if (train)
        *train = NULL;
    if (val)
        *val = NULL;
    if (test)
        *test = NULL;
    return ctx ? MML_OK : MML_EINVAL;
}

int mml_dataset_view_sized(const mml_dataset *ds, int64_t start, int64_t count,
                           mml_batch_view *user_out, uint32_t struct_size)
{
    if (!ds || !user_out)
        return MML_EINVAL;
    if (start < 0 || count < 0 || start > ds->n_rows || count > ds->n_rows - start)
        return MML_ERANGE;
    mml_batch_view full, *out = &full;
    mml_batch_view_init(out, count, ds->n_fields, ds->ids ? ds->ids + start * ds->n_fields : NULL,
                        ds->n_dense, ds->dense ? ds->dense + start * ds->n_dense : NULL,
                        ds->domain + start, ds->labels + start);
    if (ds->n_multihot > 0 && ds->mh_view) {
        out->n_multihot = ds->n_multihot;
        out->multihot_offsets = ds->mh_view + start * ds->n_multihot;
        out->multihot_ids = (const int32_t *const *)ds->mh_ids;
    }
    return mml__init_versioned(user_out, out, sizeof *out, struct_size,
                               MML__OLDER_SIZES_mml_batch_view);
}

/* ------------------------------------------------------------ CSV output */

/* Buffered output on a file descriptor (no stdio buffer behind the allocator). */
typedef struct outbuf {
    int fd;
    char buf[1 << 16];
    size_t len;
    int err;
} outbuf;

static void write_all(outbuf *o, const char *s, size_t n)
{
    while (n > 0 && !o->err) {
        ssize_t w = write(o->fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            o->err = errno ? errno : EIO;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static void ob_flush(outbuf *o)
{
    write_all(o, o->buf, o->len);
    o->len = 0;
}

static void ob_put(outbuf *o, const char *s, size_t n)
{
    if (o->len + n > sizeof o->buf) {
        ob_flush(o);
        if (n > sizeof o->buf) {
            write_all(o, s, n);
            return;
        }
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void ob_str(outbuf *o, const char *s) { ob_put(o, s, strlen(s)); }

static void ob_long(outbuf *o, int64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%lld", (long long)v);
    ob_put(o, t, (size_t)n);
}

/* A header name, quoted (RFC 4180) when it holds a comma, quote, CR or LF. */
static void ob_name(outbuf *o, const char *s)
{
    if (!strpbrk(s, ",\"\r\n") && s[0] != '\0') {
        ob_str(o, s);
        return;
    }
    ob_put(o, "\"", 1);
    for (; *s; s++) {
        if (*s == '"')
            ob_put(o, "\"", 1);
        ob_put(o, s, 1);
    }
    ob_put(o, "\"", 1);
}

int mml_dataset_write_csv(const mml_dataset *ds, mml_ctx *ctx, const char *path)
{
    if (!ctx)
        return MML_EINVAL;
    if (!ds || !path || !path[0])
        return mml__error(ctx, MML_EINVAL, "mml_dataset_write_csv: NULL data set or path");
    const mml__schema *s = ds->schema;
    for (int32_t f = 0; f < ds->n_fields; f++)
        if (f != s->domain_field &&
            (strcmp(s->field_names[f], "label") == 0 || strcmp(s->field_names[f], "domain") == 0))
            return mml__error(ctx, MML_EINVAL,
                              "mml_dataset_write_csv: field %d is named '%s', which the label "
                              "or domain column uses",
                              (int)f, s->field_names[f]);
    size_t plen = strlen(path);
    char *tmp = mml__alloc(ctx, plen + 8);
    outbuf *o = mml__alloc(ctx, sizeof *o);
    if (!tmp || !o) {
        mml__free(ctx, tmp, plen + 8);
        mml__free(ctx, o, sizeof *o);
        return mml__error(ctx, MML_ENOMEM, "out of memory writing %s", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".XXXXXX", 8);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        mml__free(ctx, tmp, plen + 8);
        mml__free(ctx, o, sizeof *o);
        return mml__error(ctx, MML_EIO, "%s: cannot create a temporary file: %s", path,
                          strerror(e));
    }
    (void)fchmod(fd, 0644);
    o->fd = fd;
    o->len = 0;
    o->err = 0;
    ob_str(o, "label,domain");
    for (int32_t f = 0; f < ds->n_fields; f++)
        if (f != s->domain_field) {
            ob_put(o, ",", 1);
            ob_name(o, s->field_names[f]);
        }
    for (int32_t j = 0; j < ds->n_dense; j++) {
        ob_put(o, ",", 1);
        ob_name(o, s->dense_names[j]);
    }
    for (int32_t m = 0; m < ds->n_multihot; m++) {
        ob_put(o, ",", 1);
        ob_name(o, s->mh_names[m]);
    }
    ob_put(o, "\n", 1);
    for (int64_t r = 0; r < ds->n_rows && !o->err; r++) {
        ob_put(o, ds->labels[r] > 0.5f ? "1," : "0,", 2);
        ob_long(o, ds->domain[r]);
        for (int32_t f = 0; f < ds->n_fields; f++)
            if (f != s->domain_field) {
                ob_put(o, ",", 1);
                ob_long(o, ds->ids[r * ds->n_fields + f]);
            }
        for (int32_t j = 0; j < ds->n_dense; j++) {
            char t[32];
            int n = snprintf(t, sizeof t, ",%.9g", (double)ds->dense[r * ds->n_dense + j]);
            ob_put(o, t, (size_t)n);
        }
        for (int32_t m = 0; m < ds->n_multihot; m++) {
            ob_put(o, ",", 1);
            for (int64_t k = ds->mh_off[m][r]; k < ds->mh_off[m][r + 1]; k++) {
                if (k > ds->mh_off[m][r])
                    ob_put(o, "|", 1);
                ob_long(o, ds->mh_ids[m][k]);
            }
        }
        ob_put(o, "\n", 1);
    }
    ob_flush(o);
    int err = o->err;
    if (!err && fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    mml__free(ctx, o, sizeof *o);
    const char *what = "write";
    if (!err && rename(tmp, path) != 0) {
        err = errno;
        what = "rename";
    }
    int rc = MML_OK;
    if (err) {
        unlink(tmp);
        rc = mml__error(ctx, MML_EIO, "%s: %s failed: %s", path, what, strerror(err));
    }
    mml__free(ctx, tmp, plen + 8);
    return rc;
}
