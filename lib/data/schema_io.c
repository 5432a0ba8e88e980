/* The schema's byte layout (docs/FORMAT.md, "Schema payload"), binding a caller's
 * column list to the schema's roles, and mapping raw rows to model inputs
 * exactly as the CSV reader maps the same cells. */
#include <string.h>

#include "data/data_internal.h"
#include "moemlora/hashing.h"

#define SCHEMA_VERSION 1u
/* A string is never longer than a CSV line can be. */
#define MAX_STR ((size_t)MML_CSV_MAX_LINE_LIMIT)
/* The smallest encodings, to bound counts by the bytes left. */
#define MIN_STR 4u
#define MIN_FIELD (MIN_STR + 4 + 4 + 4 + 8)
#define MIN_MH (MIN_STR + 4 + 8)

/* ------------------------------------------------------------ writing */

static void put_raw(mml__wbuf *w, const char *p, size_t len)
{
    mml__wbuf_u32(w, (uint32_t)len);
    mml__wbuf_bytes(w, p, len);
}

static void put_vocab_value(mml__wbuf *w, const mml__vocab *v, int32_t id)
{
    put_raw(w, mml__vocab_str(v, id), (size_t)(v->off[id + 1] - v->off[id] - 1));
}

static void put_vocab(mml__wbuf *w, const mml__vocab *v)
{
    int32_t n = v ? v->n : 0;
    mml__wbuf_i64(w, n);
    for (int32_t id = 0; id < n; id++)
        put_vocab_value(w, v, id);
}

void mml__schema_write(mml__wbuf *w, const mml__schema *s)
{
    mml__wbuf_u32(w, SCHEMA_VERSION);
    mml__wbuf_u32(w, (uint32_t)s->source);
    mml__wbuf_u32(w, (uint32_t)(unsigned char)s->delimiter);
    mml__wbuf_u32(w, (uint32_t)(unsigned char)s->mh_separator);
    mml__wbuf_str(w, s->label_column);
    mml__wbuf_u32(w, (uint32_t)s->label_kind);
    mml__wbuf_i32(w, s->label_min);
    mml__wbuf_str(w, s->domain_column);
    mml__wbuf_u32(w, (uint32_t)s->domain_mode);
    mml__wbuf_i64(w, s->n_domains);
    /* Names from the vocabulary when there is one: it keeps bytes after a NUL. */
    for (int32_t d = 0; d < s->n_domains; d++) {
        if (s->domain_vocab)
            put_vocab_value(w, s->domain_vocab, d);
        else
            mml__wbuf_str(w, s->domain_names[d]);
    }
    mml__wbuf_i64(w, s->n_fields);
    mml__wbuf_i32(w, s->domain_field);
    for (int32_t f = 0; f < s->n_fields; f++) {
        int32_t kind = s->field_kind[f];
        mml__wbuf_str(w, s->field_names[f]);
        mml__wbuf_u32(w, (uint32_t)kind);
        mml__wbuf_i32(w, s->field_sizes[f]);
        mml__wbuf_i32(w, s->field_oov[f]);
        mml__wbuf_u64(w, s->field_seed[f]);
        if (kind == MML__FIELD_VOCAB_OOV || kind == MML__FIELD_VOCAB)
            put_vocab(w, s->field_vocab[f]);
    }
    mml__wbuf_i64(w, s->n_dense);
    for (int32_t j = 0; j < s->n_dense; j++)
        mml__wbuf_str(w, s->dense_names[j]);
    mml__wbuf_i64(w, s->n_multihot);
    for (int32_t m = 0; m < s->n_multihot; m++) {
        mml__wbuf_str(w, s->mh_names[m]);
        mml__wbuf_i32(w, s->mh_sizes[m]);
        put_vocab(w, s->mh_vocab[m]);
    }
}

/* ------------------------------------------------------------ reading */

/* A count in [lo, hi] (else MML_ECORRUPT) whose entries of at least
 * min_bytes each fit in what is left (else MML_ETRUNCATED); -1 on failure. */
static int64_t get_count(mml__rbuf *r, int64_t lo, int64_t hi, size_t min_bytes, const char *what)
{
    int64_t n = mml__rbuf_count(r, lo, hi, what);
    if (r->status < 0)
        return -1;
    size_t left = mml__rbuf_left(r);
    if ((uint64_t)n > left / min_bytes) {
        mml__rbuf_fail(r, MML_ETRUNCATED, "%s = %lld needs at least %llu bytes, %zu left", what,
                       (long long)n, (unsigned long long)n * min_bytes, left);
        return -1;
    }
    return n;
}

/* A length-prefixed byte string (NUL bytes allowed), borrowed from the buffer. */
static const char *get_raw(mml__rbuf *r, size_t *len, const char *what)
{
    uint32_t n = mml__rbuf_u32(r, what);
    if (r->status < 0)
        return NULL;
    if (n > MAX_STR) {
        mml__rbuf_fail(r, MML_ECORRUPT, "%s has %u bytes, at most %zu allowed", what, n, MAX_STR);
        return NULL;
    }
    *len = n;
    return mml__rbuf_bytes(r, n, what);
}

static int nomem(mml__rbuf *r)
{
    r->status = mml__error(r->ctx, MML_ENOMEM, "%s: out of memory", r->where);
    return r->status;
}

/* n values in stored order (their ids); a value seen twice is MML_ECORRUPT. */
static int get_vocab(mml__rbuf *r, int64_t n, mml__vocab **out, const char *what)
{
    char w[160];
    if (mml__vocab_create(r->ctx, out) < 0)
        return nomem(r);
    for (int64_t k = 0; k < n; k++) {
        snprintf(w, sizeof w, "%s value %lld", what, (long long)k);
        size_t len;
        const char *p = get_raw(r, &len, w);
        if (!p)
            return r->status;
        int32_t id, before = (*out)->n;
        if (mml__vocab_intern(r->ctx, *out, p, len, &id) < 0)
            return nomem(r);
        if ((*out)->n == before)
            return mml__rbuf_fail(r, MML_ECORRUPT, "%s is a duplicate of value %d", w, (int)id);
    }
    return MML_OK;
}

/* A vocabulary count that must equal expect. */
static int64_t get_vocab_count(mml__rbuf *r, int64_t expect, const char *what)
{
    char w[160];
    snprintf(w, sizeof w, "%s value count", what);
    /* mml__vocab_intern holds at most INT32_MAX - 2 values. */
    int64_t n = get_count(r, 0, INT32_MAX - 2, MIN_STR, w);
    if (n >= 0 && n != expect) {
        mml__rbuf_fail(r, MML_ECORRUPT, "%s = %lld, the size says %lld", w, (long long)n,
                       (long long)expect);
        return -1;
    }
    return n;
}

static int valid_sep(uint32_t c) { return c != 0 && c != '"' && c != '\n' && c != '\r' && c < 256; }

static int read_header(mml__rbuf *r, mml__schema *s)
{
    uint32_t ver = mml__rbuf_u32(r, "schema version");
    if (r->status < 0)
        return r->status;
    if (ver != SCHEMA_VERSION)
        return mml__rbuf_fail(r, MML_EVERSION, "schema version %u, this library reads %u", ver,
                              SCHEMA_VERSION);
    uint32_t src = mml__rbuf_u32(r, "schema source");
    if (r->status == 0 && src > MML__SOURCE_SYNTHETIC)
        return mml__rbuf_fail(r, MML_ECORRUPT, "schema source %u unknown", src);
    uint32_t delim = mml__rbuf_u32(r, "delimiter");
    if (r->status == 0 && !valid_sep(delim))
        return mml__rbuf_fail(r, MML_ECORRUPT, "delimiter %u is not a valid delimiter byte", delim);
    uint32_t sep = mml__rbuf_u32(r, "multi-hot separator");
    if (r->status == 0 && sep > 255)
        return mml__rbuf_fail(r, MML_ECORRUPT, "multi-hot separator %u is not a byte", sep);
    if (r->status < 0)
        return r->status;
    s->source = (int32_t)src;
    s->delimiter = (char)(unsigned char)delim;
    s->mh_separator = (char)(unsigned char)sep;
    size_t len;
    if (mml__rbuf_str(r, &s->label_column, &len, MAX_STR, 0, "label column") < 0)
        return r->status;
    if (len == 0)
        return mml__rbuf_fail(r, MML_ECORRUPT, "label column name is empty");
    uint32_t lk = mml__rbuf_u32(r, "label kind");
    int32_t lmin = mml__rbuf_i32(r, "label threshold");
    if (r->status < 0)
        return r->status;
    if (lk > MML__LABEL_RATING_MIN)
        return mml__rbuf_fail(r, MML_ECORRUPT, "label kind %u unknown", lk);
    if (lk == MML__LABEL_01 ? lmin != 0 : (lmin < 1 || lmin > 5))
        return mml__rbuf_fail(r, MML_ECORRUPT, "label threshold %d does not fit label kind %u",
                              (int)lmin, lk);
    s->label_kind = (int32_t)lk;
    s->label_min = lmin;
    if (mml__rbuf_str(r, &s->domain_column, &len, MAX_STR, 1, "domain column") < 0)
        return r->status;
    if (s->domain_column && len == 0)
        return mml__rbuf_fail(r, MML_ECORRUPT, "domain column name is empty");
    uint32_t mode = mml__rbuf_u32(r, "domain mode");
    if (r->status < 0)
        return r->status;
    if (mode > MML__DOMAIN_NAMES)
        return mml__rbuf_fail(r, MML_ECORRUPT, "domain mode %u unknown", mode);
    if ((mode == MML__DOMAIN_ONE) != (s->domain_column == NULL))
        return mml__rbuf_fail(r, MML_ECORRUPT, "domain mode %u %s a domain column", mode,
                              mode == MML__DOMAIN_ONE ? "does not allow" : "needs");
    s->domain_mode = (int32_t)mode;
    return MML_OK;
}

static int read_domains(mml__rbuf *r, mml__schema *s)
{
    int64_t D = get_count(r, 1, INT32_MAX, MIN_STR, "domain count");
    if (D < 0)
        return r->status;
    if (s->domain_mode == MML__DOMAIN_ONE && D != 1)
        return mml__rbuf_fail(r, MML_ECORRUPT, "domain count %lld without a domain column",
                              (long long)D);
    if (!(s->domain_names = mml__calloc(r->ctx, (size_t)D, sizeof *s->domain_names)))
        return nomem(r);
    s->n_domains = (int32_t)D;
    if (s->domain_mode == MML__DOMAIN_NAMES && mml__vocab_create(r->ctx, &s->domain_vocab) < 0)
        return nomem(r);
    char w[64];
    for (int64_t d = 0; d < D; d++) {
        snprintf(w, sizeof w, "domain %lld name", (long long)d);
        size_t len;
        const char *p = get_raw(r, &len, w);
        if (!p)
            return r->status;
        /* Only a vocabulary keeps the bytes after a NUL (the writer's source). */
        if (!s->domain_vocab && memchr(p, '\0', len))
            return mml__rbuf_fail(r, MML_ECORRUPT, "%s holds a NUL byte", w);
        if (!(s->domain_names[d] = mml__strndup(r->ctx, p, len)))
            return nomem(r);
        if (!s->domain_vocab)
            continue;
        int32_t id, before = s->domain_vocab->n;
        if (mml__vocab_intern(r->ctx, s->domain_vocab, p, len, &id) < 0)
            return nomem(r);
        if (s->domain_vocab->n == before)
            return mml__rbuf_fail(r, MML_ECORRUPT, "%s is a duplicate of domain %d", w, (int)id);
    }
    return MML_OK;
}

static int read_field(mml__rbuf *r, mml__schema *s, int32_t f)
{
    char w[96];
    snprintf(w, sizeof w, "field %d name", (int)f);
    if (mml__rbuf_str(r, &s->field_names[f], NULL, MAX_STR, 0, w) < 0)
        return r->status;
    const char *nm = s->field_names[f];
    snprintf(w, sizeof w, "field %d ('%.40s')", (int)f, nm);
    uint32_t kind = mml__rbuf_u32(r, w);
    int32_t size = mml__rbuf_i32(r, w), oov = mml__rbuf_i32(r, w);
    uint64_t seed = mml__rbuf_u64(r, w);
    if (r->status < 0)
        return r->status;
    if (kind > MML__FIELD_DOMAIN)
        return mml__rbuf_fail(r, MML_ECORRUPT, "%s: kind %u unknown", w, kind);
    if (size < 1)
        return mml__rbuf_fail(r, MML_ECORRUPT, "%s: size %d", w, (int)size);
    int want_oov = kind == MML__FIELD_VOCAB_OOV ? size - 1 : -1;
    if (oov != want_oov)
        return mml__rbuf_fail(r, MML_ECORRUPT, "%s: out-of-vocabulary id %d, expected %d", w,
                              (int)oov, want_oov);
    if (kind != MML__FIELD_HASHED && seed != 0)
        return mml__rbuf_fail(r, MML_ECORRUPT, "%s: a seed on a field that is not hashed", w);
    if ((kind == MML__FIELD_DOMAIN) != (f == s->domain_field))
        return mml__rbuf_fail(r, MML_ECORRUPT, "%s: kind %u but the domain field is %d", w, kind,
                              (int)s->domain_field);
    if (kind == MML__FIELD_DOMAIN &&
        (size != s->n_domains || !s->domain_column || strcmp(nm, s->domain_column) != 0))
        return mml__rbuf_fail(r, MML_ECORRUPT,
                              "%s: the domain field must have size D = %d and the domain "
                              "column's name",
                              w, (int)s->n_domains);
    s->field_kind[f] = (int32_t)kind;
    s->field_sizes[f] = size;
    s->field_oov[f] = oov;
    s->field_seed[f] = seed;
    if (kind == MML__FIELD_VOCAB_OOV || kind == MML__FIELD_VOCAB) {
        int64_t n = get_vocab_count(r, kind == MML__FIELD_VOCAB ? size : (int64_t)size - 1, w);
        if (n < 0)
            return r->status;
        return get_vocab(r, n, &s->field_vocab[f], w);
    }
    return MML_OK;
}

static int read_fields(mml__rbuf *r, mml__schema *s)
{
    mml_ctx *ctx = r->ctx;
    int64_t nf = get_count(r, 0, INT32_MAX, MIN_FIELD, "field count");
    int32_t dfield = mml__rbuf_i32(r, "domain field");
    if (r->status < 0)
        return r->status;
    if (dfield < -1 || dfield >= nf)
        return mml__rbuf_fail(r, MML_ECORRUPT, "domain field %d not in -1 .. %lld", (int)dfield,
                              (long long)nf - 1);
    s->domain_field = dfield;
    if (nf == 0)
        return MML_OK;
    size_t n = (size_t)nf;
    s->field_names = mml__calloc(ctx, n, sizeof *s->field_names);
    s->field_sizes = mml__calloc(ctx, n, sizeof *s->field_sizes);
    s->field_oov = mml__calloc(ctx, n, sizeof *s->field_oov);
    s->field_vocab = mml__calloc(ctx, n, sizeof *s->field_vocab);
    s->field_kind = mml__calloc(ctx, n, sizeof *s->field_kind);
    s->field_seed = mml__calloc(ctx, n, sizeof *s->field_seed);
    /* Release frees cap_fields entries of each array (NULL ones are skipped). */
    s->cap_fields = s->n_fields = (int32_t)nf;
    if (!s->field_names || !s->field_sizes || !s->field_oov || !s->field_vocab ||
        !s->field_kind || !s->field_seed)
        return nomem(r);
    for (int32_t f = 0; f < s->n_fields; f++)
        if (read_field(r, s, f) < 0)
            return r->status;
    return MML_OK;
}

static int read_rest(mml__rbuf *r, mml__schema *s)
{
    mml_ctx *ctx = r->ctx;
    char w[96];
    int64_t nd = get_count(r, 0, INT32_MAX, MIN_STR, "numeric column count");
    if (nd < 0)
        return r->status;
    if (nd > 0 && !(s->dense_names = mml__calloc(ctx, (size_t)nd, sizeof *s->dense_names)))
        return nomem(r);
    s->n_dense = (int32_t)nd;
    for (int32_t j = 0; j < s->n_dense; j++) {
        snprintf(w, sizeof w, "numeric column %d name", (int)j);
        if (mml__rbuf_str(r, &s->dense_names[j], NULL, MAX_STR, 0, w) < 0)
            return r->status;
    }
    int64_t nm = get_count(r, 0, INT32_MAX, MIN_MH, "multi-hot field count");
    if (nm < 0)
        return r->status;
    if (nm > 0 && (!valid_sep((unsigned char)s->mh_separator) || s->mh_separator == s->delimiter))
        return mml__rbuf_fail(r, MML_ECORRUPT, "multi-hot separator %u is not valid with "
                              "multi-hot fields", (unsigned)(unsigned char)s->mh_separator);
    if (nm > 0) {
        s->mh_names = mml__calloc(ctx, (size_t)nm, sizeof *s->mh_names);
        s->mh_sizes = mml__calloc(ctx, (size_t)nm, sizeof *s->mh_sizes);
        s->mh_vocab = mml__calloc(ctx, (size_t)nm, sizeof *s->mh_vocab);
        s->n_multihot = (int32_t)nm;
        if (!s->mh_names || !s->mh_sizes || !s->mh_vocab)
            return nomem(r);
    }
    for (int32_t m = 0; m < s->n_multihot; m++) {
        snprintf(w, sizeof w, "multi-hot field %d name", (int)m);
        if (mml__rbuf_str(r, &s->mh_names[m], NULL, MAX_STR, 0, w) < 0)
            return r->status;
        snprintf(w, sizeof w, "multi-hot field %d ('%.40s')", (int)m, s->mh_names[m]);
        int32_t size = mml__rbuf_i32(r, w);
        if (r->status < 0)
            return r->status;
        if (size < 1)
            return mml__rbuf_fail(r, MML_ECORRUPT, "%s: size %d", w, (int)size);
        s->mh_sizes[m] = size;
        int64_t n = get_vocab_count(r, (int64_t)size - 1, w);
        if (n < 0 || get_vocab(r, n, &s->mh_vocab[m], w) < 0)
            return r->status;
    }
    return MML_OK;
}

/* The columns of the schema's roles, in slot order: label, domain (if
 * any), categorical fields but the DOMAIN one, numeric, multi-hot. */
typedef struct column_slots {
    int32_t n;
    int32_t *role, *target;
    mml__vocab *names; /* id = slot */
} column_slots;

static void slots_free(mml_ctx *ctx, column_slots *c, int64_t cap)
{
    mml__free(ctx, c->role, (size_t)cap * sizeof *c->role);
    mml__free(ctx, c->target, (size_t)cap * sizeof *c->target);
    mml__vocab_destroy(ctx, c->names);
}

static int64_t slots_cap(const mml__schema *s)
{
    return 2 + (int64_t)s->n_fields + s->n_dense + s->n_multihot;
}

/* MML_ENOMEM, or MML_EEXIST with *dup naming a column of two roles. */
static int slots_build(mml_ctx *ctx, const mml__schema *s, column_slots *c, const char **dup)
{
    memset(c, 0, sizeof *c);
    int64_t cap = slots_cap(s);
    c->role = mml__alloc(ctx, (size_t)cap * sizeof *c->role);
    c->target = mml__alloc(ctx, (size_t)cap * sizeof *c->target);
    if (!c->role || !c->target || mml__vocab_create(ctx, &c->names) < 0)
        return MML_ENOMEM;
    for (int64_t k = -2; k < cap - 2; k++) {
        const char *nm;
        int32_t role, t;
        if (k == -2) {
            if (!(nm = s->label_column))
                continue;
            role = MML__BIND_LABEL, t = 0;
        } else if (k == -1) {
            if (!(nm = s->domain_column))
                continue;
            role = MML__BIND_DOMAIN, t = 0;
        } else if (k < s->n_fields) {
            if (s->field_kind[k] == MML__FIELD_DOMAIN)
                continue;
            nm = s->field_names[k], role = MML__BIND_FIELD, t = (int32_t)k;
        } else if (k < (int64_t)s->n_fields + s->n_dense) {
            t = (int32_t)(k - s->n_fields);
            nm = s->dense_names[t], role = MML__BIND_DENSE;
        } else {
            t = (int32_t)(k - s->n_fields - s->n_dense);
            nm = s->mh_names[t], role = MML__BIND_MH;
        }
        int32_t id;
        if (mml__vocab_intern(ctx, c->names, nm, strlen(nm), &id) < 0)
            return MML_ENOMEM;
        if (id < c->n) {
            *dup = nm;
            return MML_EEXIST;
        }
        c->role[c->n] = role;
        c->target[c->n] = t;
        c->n++;
    }
    return MML_OK;
}

int mml__schema_read(mml_ctx *ctx, mml__rbuf *r, mml__schema **out)
{
    if (out)
        *out = NULL;
    if (!ctx)
        return MML_EINVAL;
    if (!r || !out || r->ctx != ctx)
        return mml__error(ctx, MML_EINVAL, "schema read: NULL reader or output, or a reader of "
                          "another context");
    mml__schema *s;
    if (mml__schema_create(ctx, &s, 0, 0, 0, 0) < 0)
        return nomem(r);
    int rc = read_header(r, s);
    if (rc == MML_OK)
        rc = read_domains(r, s);
    if (rc == MML_OK)
        rc = read_fields(r, s);
    if (rc == MML_OK)
        rc = read_rest(r, s);
    if (rc == MML_OK) {
        column_slots c;
        const char *dup = NULL;
        rc = slots_build(ctx, s, &c, &dup);
        if (rc == MML_EEXIST)
            rc = mml__rbuf_fail(r, MML_ECORRUPT, "column '%.60s' has two roles", dup);
        else if (rc < 0)
            rc = nomem(r);
        slots_free(ctx, &c, slots_cap(s));
    }
    if (rc == MML_OK && r->status < 0)
        rc = r->status;
    if (rc < 0) {
        mml__schema_release(ctx, s);
        return rc;
    }
    *out = s;
    return MML_OK;
}

/* ------------------------------------------------------------ binding */

void mml__binding_destroy(mml_ctx *ctx, mml__binding *b)
{
    if (!b)
        return;
    size_t n = (size_t)(b->n_columns > 0 ? b->n_columns : 1);
    mml__free(ctx, b->role, n * sizeof *b->role);
    mml__free(ctx, b->target, n * sizeof *b->target);
    mml__free(ctx, b->mh_col, (size_t)(b->n_multihot > 0 ? b->n_multihot : 1) * sizeof *b->mh_col);
    mml__free(ctx, b, sizeof *b);
}

static const char *role_what(int32_t role)
{
    switch (role) {
    case MML__BIND_DOMAIN:
        return "the domain column";
    case MML__BIND_FIELD:
        return "a categorical column";
    case MML__BIND_DENSE:
        return "a numeric column";
    default:
        return "a multi-hot column";
    }
}

int mml__schema_bind(mml_ctx *ctx, const mml__schema *s, int32_t n_columns,
                     const char *const *names, mml__binding **out)
{
    if (out)
        *out = NULL;
    if (!ctx)
        return MML_EINVAL;
    if (!s || !out || n_columns < 0 || (n_columns > 0 && !names))
        return mml__error(ctx, MML_EINVAL, "schema bind: NULL schema, names or output, or %d "
                          "columns", (int)n_columns);
    for (int32_t c = 0; c < n_columns; c++)
        if (!names[c])
            return mml__error(ctx, MML_EINVAL, "schema bind: column %d has a NULL name", (int)c);
    mml__binding *b = mml__calloc(ctx, 1, sizeof *b);
    column_slots sl;
    const char *dup = NULL;
    int rc = b ? slots_build(ctx, s, &sl, &dup) : MML_ENOMEM;
    int64_t cap = slots_cap(s);
    int32_t *slot_col = NULL;
    if (rc == MML_EEXIST)
        rc = mml__error(ctx, MML_EINVAL, "schema bind: the schema gives column '%s' two roles",
                        dup);
    if (rc == MML_OK) {
        b->schema = s;
        b->n_columns = n_columns;
        b->n_multihot = s->n_multihot;
        b->label_col = b->domain_col = -1;
        size_t n = (size_t)(n_columns > 0 ? n_columns : 1);
        b->role = mml__calloc(ctx, n, sizeof *b->role);
        b->target = mml__calloc(ctx, n, sizeof *b->target);
        b->mh_col = mml__calloc(ctx, (size_t)(s->n_multihot > 0 ? s->n_multihot : 1),
                                sizeof *b->mh_col);
        slot_col = mml__alloc(ctx, (size_t)cap * sizeof *slot_col);
        if (!b->role || !b->target || !b->mh_col || !slot_col)
            rc = MML_ENOMEM;
    }
    for (int32_t k = 0; rc == MML_OK && k < sl.n; k++)
        slot_col[k] = -1;
    for (int32_t c = 0; rc == MML_OK && c < n_columns; c++) {
        int32_t k = mml__vocab_find(sl.names, names[c], strlen(names[c]));
        if (k < 0)
            continue;
        if (slot_col[k] >= 0) {
            rc = mml__error(ctx, MML_EINVAL, "schema bind: column '%s' is listed twice (%d and %d)",
                            names[c], (int)slot_col[k], (int)c);
            break;
        }
        slot_col[k] = c;
        b->role[c] = sl.role[k];
        b->target[c] = sl.target[k];
        if (sl.role[k] == MML__BIND_LABEL)
            b->label_col = c;
        else if (sl.role[k] == MML__BIND_DOMAIN)
            b->domain_col = c;
        else if (sl.role[k] == MML__BIND_MH)
            b->mh_col[sl.target[k]] = c;
    }
    for (int32_t k = 0; rc == MML_OK && k < sl.n; k++)
        if (slot_col[k] < 0 && sl.role[k] != MML__BIND_LABEL)
            rc = mml__error(ctx, MML_ENOTFOUND, "schema bind: no column '%s' (%s) among the %d "
                            "columns", mml__vocab_str(sl.names, k), role_what(sl.role[k]),
                            (int)n_columns);
    if (rc == MML_ENOMEM)
        rc = mml__error(ctx, rc, "schema bind: out of memory");
    mml__free(ctx, slot_col, (size_t)cap * sizeof *slot_col);
    if (b)
        slots_free(ctx, &sl, cap);
    if (rc < 0) {
        mml__binding_destroy(ctx, b);
        return rc;
    }
    *out = b;
    return MML_OK;
}

/* ------------------------------------------------------------ mapping */

static int bad(int32_t *bad_column, int32_t c, int rc)
{
    if (bad_column)
        *bad_column = c;
    return rc;
}

int mml__schema_map_row(const mml__schema *s, const mml__binding *b, const char *const *values,
                        const size_t *lens, int32_t *ids, float *dense, int32_t *domain,
                        float *label, int64_t *mh_off, int32_t *mh_ids, int64_t mh_cap,
                        int32_t *bad_column)
{
    if (bad_column)
        *bad_column = -1;
    if (!s || !b || b->schema != s || !values || !domain || (s->n_fields > 0 && !ids) ||
        (s->n_dense > 0 && !dense) || mh_cap < 0 ||
        (s->n_multihot > 0 && (!mh_off || (mh_cap > 0 && !mh_ids))))
        return MML_EINVAL;
    int32_t dom = 0;
    for (int32_t c = 0; c < b->n_columns; c++) {
        int32_t role = b->role[c], t = b->target[c];
        if (role == MML__BIND_NONE || role == MML__BIND_MH)
            continue;
        const char *v = values[c];
        if (!v)
            return bad(bad_column, c, MML_EINVAL);
        size_t len = lens ? lens[c] : strlen(v);
        int64_t x;
        switch (role) {
        case MML__BIND_LABEL:
            if (!label) /* the caller does not want it: its value cannot fail the row */
                break;
            if (s->label_kind == MML__LABEL_01) {
                if (len != 1 || (v[0] != '0' && v[0] != '1'))
                    return bad(bad_column, c, MML_EPARSE);
                x = v[0] == '1';
            } else {
                if (!mml__parse_canonical_int(v, len, &x) || x < 1 || x > 5)
                    return bad(bad_column, c, MML_EPARSE);
                x = x >= s->label_min;
            }
            *label = x ? 1.0f : 0.0f;
            break;
        case MML__BIND_DOMAIN:
            if (s->domain_mode == MML__DOMAIN_IDS) {
                if (!mml__parse_canonical_int(v, len, &x) || x < 0 || x >= s->n_domains)
                    return bad(bad_column, c, MML_ERANGE);
                dom = (int32_t)x;
            } else if ((dom = mml__vocab_find(s->domain_vocab, v, len)) < 0) {
                return bad(bad_column, c, MML_ERANGE);
            }
            break;
        case MML__BIND_DENSE:
            if (!mml__parse_float(v, len, &dense[t]))
                return bad(bad_column, c, MML_EPARSE);
            break;
        case MML__BIND_FIELD: {
            int32_t id;
            switch (s->field_kind[t]) {
            case MML__FIELD_HASHED:
                id = (int32_t)mml_hash_string(v, len, s->field_seed[t], (uint32_t)s->field_sizes[t]);
                break;
            case MML__FIELD_IDS:
                if (!mml__parse_canonical_int(v, len, &x))
                    return bad(bad_column, c, MML_EPARSE);
                if (x < 0 || x >= s->field_sizes[t])
                    return bad(bad_column, c, MML_ERANGE);
                id = (int32_t)x;
                break;
            default: /* a vocabulary, with or without out-of-vocabulary id */
                id = mml__vocab_find(s->field_vocab[t], v, len);
                if (id < 0 && (id = s->field_oov[t]) < 0)
                    return bad(bad_column, c, MML_ERANGE);
                break;
            }
            ids[t] = id;
            break;
        }
        default:
            break;
        }
    }
    if (s->domain_field >= 0)
        ids[s->domain_field] = dom;
    *domain = dom;
    if (s->n_multihot == 0)
        return MML_OK;
    /* Multi-hot lists in field order (the CSR layout), as the CSV reader splits them. */
    int64_t pos = 0;
    mh_off[0] = 0;
    for (int32_t m = 0; m < s->n_multihot; m++) {
        int32_t c = b->mh_col[m];
        const char *v = values[c];
        if (!v)
            return bad(bad_column, c, MML_EINVAL);
        size_t len = lens ? lens[c] : strlen(v), i = 0;
        while (len > 0) {
            const char *q = memchr(v + i, s->mh_separator, len - i);
            size_t e = q ? (size_t)(q - v) : len;
            int32_t id = mml__vocab_find(s->mh_vocab[m], v + i, e - i);
            if (pos >= mh_cap)
                return bad(bad_column, c, MML_ESHAPE);
            mh_ids[pos++] = id >= 0 ? id : s->mh_sizes[m] - 1;
            if (!q)
                break;
            i = e + 1;
        }
        mh_off[m + 1] = pos;
    }
    return MML_OK;
}
