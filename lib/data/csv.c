/* The delimited-text (CSV/TSV) reader. See data.h for the format and roles. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"
#include "moemlora/hashing.h"

enum { ROLE_UNUSED = 0, ROLE_LABEL, ROLE_DOMAIN, ROLE_FIELD, ROLE_DENSE, ROLE_MH };

typedef struct cell {
    const char *p;
    size_t len;
} cell;

/* The column layout of one file. */
typedef struct plan {
    int32_t n_cols;
    int32_t *role;    /* per column */
    int32_t *target;  /* field, dense or multi-hot index */
    mml__vocab *names; /* header names; id = column index */
} plan;

typedef struct loader {
    mml_ctx *ctx;
    mml_csv_options o;
    const char *name;       /* file name for messages */
    mml__schema *schema;
    int32_t domain_slot;    /* field reserved for the domain id, or -1 */
    int32_t slot_explicit;  /* listed in field_columns */
    int32_t has_domain;     /* a domain column exists */
    mml__vocab *domain_vocab;
    int32_t training;       /* building vocabularies */
    const char **cells;     /* the current line's cells */
    size_t *cell_lens;
    int64_t cells_cap, lens_cap;
    char *scratch;          /* unescaped quoted cells */
    size_t scratch_cap;
    char msg[MML_ERRMSG_MAX];
} loader;

/* ------------------------------------------------------------ splitting */

/* The one splitter (mml_csv_split_line() is its public face): *what names
 * the quoting error for the loader's messages. */
static int64_t split_cells(const char *line, size_t len, char delim, int64_t max_cells,
                           const char **cells, size_t *lens, char *scratch, int32_t *bad_col,
                           const char **what)
{
    size_t i = 0, out = 0;
    int64_t n = 0;
    for (;;) {
        if (n >= max_cells)
            return max_cells + 1;
        if (i < len && line[i] == '"') {
            size_t start = out;
            i++;
            for (;;) {
                const char *q = i < len ? memchr(line + i, '"', len - i) : NULL;
                if (!q) {
                    *bad_col = (int32_t)(n + 1);
                    *what = "unterminated quoted field";
                    return MML_EPARSE;
                }
                size_t k = (size_t)(q - line);
                memcpy(scratch + out, line + i, k - i);
                out += k - i;
                i = k + 1;
                if (i < len && line[i] == '"') {
                    scratch[out++] = '"';
                    i++;
                    continue;
                }
                break;
            }
            cells[n] = scratch + start;
            lens[n] = out - start;
            n++;
            if (i == len)
                return n;
            if (line[i] != delim) {
                *bad_col = (int32_t)n;
                *what = "unexpected character after a closing quote";
                return MML_EPARSE;
            }
            i++;
        } else {
            const char *d = i < len ? memchr(line + i, delim, len - i) : NULL;
            size_t e = d ? (size_t)(d - line) : len;
            cells[n] = line + i;
            lens[n] = e - i;
            n++;
            if (!d)
                return n;
            i = e + 1;
        }
    }
}

int64_t mml_csv_split_line(const char *line, size_t len, char delimiter, int64_t max_cells,
                           const char **cells, size_t *cell_lens, char *scratch,
                           int32_t *bad_column)
{
    int32_t bc = 0;
    const char *what = NULL;
    if (bad_column)
        *bad_column = 0;
    if ((len > 0 && (!line || !scratch)) || max_cells < 0 || max_cells >= INT32_MAX ||
        (max_cells > 0 && (!cells || !cell_lens)) || delimiter == '\0' || delimiter == '"' ||
        delimiter == '\n' || delimiter == '\r')
        return MML_EINVAL;
    if (!line)
        line = ""; /* len is 0: no arithmetic on NULL */
    int64_t n = split_cells(line, len, delimiter, max_cells, cells, cell_lens, scratch, &bc, &what);
    if (n < 0 && bad_column)
        *bad_column = bc;
    return n;
}

/* Splits a line into L's cells: the count, max_cells + 1 for a longer row,
 * or MML_EPARSE with *bad_col (1-based) and *what. */
static int64_t split_line(loader *L, const char *line, size_t len, int64_t max_cells,
                          int32_t *bad_col, const char **what)
{
    return split_cells(line, len, L->o.delimiter, max_cells, L->cells, L->cell_lens, L->scratch,
                       bad_col, what);
}

/* Makes room for a line of len bytes: scratch and cells (a line of len bytes has at most len + 1 cells). */
static int ensure_line_room(loader *L, size_t len, int64_t cells)
{
    if (L->scratch_cap < len + 1) {
        size_t cap = L->scratch_cap ? L->scratch_cap : 256;
        while (cap < len + 1)
            cap *= 2;
        char *s = mml__alloc(L->ctx, cap);
        if (!s)
            return MML_ENOMEM;
        mml__free(L->ctx, L->scratch, L->scratch_cap);
        L->scratch = s;
        L->scratch_cap = cap;
    }
    int rc = mml__grow(L->ctx, &L->cells, &L->cells_cap, cells, sizeof *L->cells);
    return rc < 0 ? rc : mml__grow(L->ctx, &L->cell_lens, &L->lens_cap, cells, sizeof *L->cell_lens);
}

/* ------------------------------------------------------------ messages */

/* Appends `got "VALUE"` with the value cut at 40 bytes. */
static int fmt_got(char *buf, size_t cap, const cell *c)
{
    int n = c->len > 40 ? 40 : (int)c->len;
    return snprintf(buf, cap, "\"%.*s%s\"", n, c->p, c->len > 40 ? "..." : "");
}

static int row_error(loader *L, int64_t line, int32_t col, const char *field, const char *expected,
                     const cell *got)
{
    char g[64] = "";
    if (got)
        fmt_got(g, sizeof g, got);
    if (field)
        snprintf(L->msg, sizeof L->msg, "%s:%lld:%d: field '%s': expected %s%s%s", L->name,
                 (long long)line, (int)col, field, expected, got ? ", got " : "", g);
    else
        snprintf(L->msg, sizeof L->msg, "%s:%lld:%d: %s", L->name, (long long)line, (int)col,
                 expected);
    return MML_EPARSE;
}

/* ------------------------------------------------------------ header */

static void plan_free(mml_ctx *ctx, plan *p)
{
    mml__free(ctx, p->role, (size_t)p->n_cols * sizeof *p->role);
    mml__free(ctx, p->target, (size_t)p->n_cols * sizeof *p->target);
    mml__vocab_destroy(ctx, p->names);
    memset(p, 0, sizeof *p);
}

/* Reads the header line into p->names (column names) and zeroed roles. */
static int read_header(loader *L, mml__lines *r, plan *p)
{
    const char *line;
    size_t len;
    int rc = mml__lines_next(r, &line, &len);
    if (rc == 0)
        return mml__error(L->ctx, MML_EPARSE, "%s:1:1: empty file: expected a header row",
                          L->name);
    if (rc == MML_EPARSE)
        return mml__error(L->ctx, MML_EPARSE, "%s:1:1: header line longer than %lld bytes",
                          L->name, (long long)L->o.max_line_bytes);
    if (rc < 0)
        return rc;
    if (len == 0)
        return mml__error(L->ctx, MML_EPARSE, "%s:1:1: empty header line", L->name);
    rc = ensure_line_room(L, len, (int64_t)len + 2);
    if (rc < 0)
        return mml__error(L->ctx, rc, "out of memory reading %s", L->name);
    int32_t bad_col = 0;
    const char *what = NULL;
    int64_t n = split_line(L, line, len, (int64_t)len + 1, &bad_col, &what);
    if (n < 0)
        return mml__error(L->ctx, MML_EPARSE, "%s:1:%d: header: %s", L->name, (int)bad_col, what);
    rc = mml__vocab_create(L->ctx, &p->names);
    if (rc < 0)
        return mml__error(L->ctx, rc, "out of memory reading %s", L->name);
    for (int64_t c = 0; c < n; c++) {
        int32_t id;
        int32_t before = p->names->n;
        rc = mml__vocab_intern(L->ctx, p->names, L->cells[c], L->cell_lens[c], &id);
        if (rc < 0)
            return mml__error(L->ctx, rc, "out of memory reading %s", L->name);
        if (p->names->n == before)
            return mml__error(L->ctx, MML_EPARSE, "%s:1:%lld: duplicate column name '%s'",
                              L->name, (long long)(c + 1), mml__vocab_str(p->names, id));
    }
    p->n_cols = (int32_t)n;
    p->role = mml__calloc(L->ctx, (size_t)n, sizeof *p->role);
    p->target = mml__calloc(L->ctx, (size_t)n, sizeof *p->target);
    if (!p->role || !p->target)
        return mml__error(L->ctx, MML_ENOMEM, "out of memory reading %s", L->name);
    return MML_OK;
}

static int32_t find_col(const plan *p, const char *name)
{
    return mml__vocab_find(p->names, name, strlen(name));
}

static int need_col(loader *L, const plan *p, const char *name, int32_t *col)
{
    *col = find_col(p, name);
    if (*col < 0)
        return mml__error(L->ctx, MML_ENOTFOUND, "%s:1: no column '%s' in the header", L->name,
                          name);
    return MML_OK;
}

/* Assigns a role to a column named in an option list. */
static int assign(loader *L, plan *p, const char *name, int32_t role, int32_t target,
                  const char *list)
{
    int32_t col;
    int rc = need_col(L, p, name, &col);
    if (rc < 0)
        return rc;
    if (p->role[col] != ROLE_UNUSED)
        return mml__error(L->ctx, MML_EINVAL, "column '%s' has two roles (%s)", name, list);
    p->role[col] = role;
    p->target[col] = target;
    return MML_OK;
}

/* The training file's header decides the schema. */
static int plan_train(loader *L, plan *p)
{
    const mml_csv_options *o = &L->o;
    mml_ctx *ctx = L->ctx;
    int rc = assign(L, p, o->label_column, ROLE_LABEL, 0, "label");
    if (rc < 0)
        return rc;
    int32_t dcol = -1;
    if (L->has_domain) {
        rc = assign(L, p, o->domain_column, ROLE_DOMAIN, -1, "domain");
        if (rc < 0)
            return rc;
        dcol = find_col(p, o->domain_column);
    }
    /* Ignored columns: mark them with a role that parses nothing. */
    for (int32_t k = 0; k < o->n_ignore_columns; k++)
        if ((rc = assign(L, p, o->ignore_columns[k], -1, 0, "ignored")) < 0)
            return rc;
    for (int32_t k = 0; k < o->n_numeric_columns; k++)
        if ((rc = assign(L, p, o->numeric_columns[k], ROLE_DENSE, k, "numeric")) < 0)
            return rc;
    for (int32_t k = 0; k < o->n_multihot_columns; k++)
        if ((rc = assign(L, p, o->multihot_columns[k], ROLE_MH, k, "multi-hot")) < 0)
            return rc;
    int32_t nf = 0;
    L->domain_slot = -1;
    if (o->field_columns) {
        for (int32_t k = 0; k < o->n_field_columns; k++) {
            const char *name = o->field_columns[k];
            int32_t col;
            if ((rc = need_col(L, p, name, &col)) < 0)
                return rc;
            if (col == dcol) {
                if (L->domain_slot >= 0)
                    return mml__error(ctx, MML_EINVAL, "column '%s' listed twice in field_columns",
                                      name);
                L->domain_slot = nf++;
                L->slot_explicit = 1;
                continue;
            }
            if ((rc = assign(L, p, name, ROLE_FIELD, nf++, "categorical")) < 0)
                return rc;
        }
    } else {
        for (int32_t c = 0; c < p->n_cols; c++)
            if (p->role[c] == ROLE_UNUSED) {
                p->role[c] = ROLE_FIELD;
                p->target[c] = nf++;
            }
        if (L->has_domain && o->domain_as_field)
            L->domain_slot = nf++;
    }
    for (int32_t c = 0; c < p->n_cols; c++)
        if (p->role[c] < 0)
            p->role[c] = ROLE_UNUSED;
    rc = mml__schema_create(ctx, &L->schema, nf, o->n_numeric_columns, o->n_multihot_columns, 0);
    if (rc < 0)
        return mml__error(ctx, rc, "out of memory reading %s", L->name);
    mml__schema *s = L->schema;
    for (int32_t c = 0; c < p->n_cols; c++)
        if (p->role[c] == ROLE_FIELD)
            s->field_kind[p->target[c]] = MML__FIELD_VOCAB_OOV;
    for (int32_t k = 0; k < o->n_hashed_columns; k++) {
        const char *name = o->hashed_columns[k];
        int32_t col;
        if ((rc = need_col(L, p, name, &col)) < 0)
            return rc;
        if (col == dcol)
            return mml__error(ctx, MML_EINVAL, "hashed column '%s' is the domain column", name);
        if (p->role[col] != ROLE_FIELD)
            return mml__error(ctx, MML_EINVAL,
                              "hashed column '%s' is not a categorical column (it has another "
                              "role%s)",
                              name, o->field_columns ? " or is not in field_columns" : "");
        int32_t t = p->target[col];
        if (s->field_kind[t] == MML__FIELD_HASHED)
            return mml__error(ctx, MML_EINVAL, "column '%s' listed twice in hashed_columns", name);
        s->field_kind[t] = MML__FIELD_HASHED;
        s->field_sizes[t] = (int32_t)o->hashed_buckets[k];
        s->field_seed[t] = o->hash_seed;
    }
    for (int32_t c = 0; c < p->n_cols; c++) {
        const char *name = mml__vocab_str(p->names, c);
        int32_t t = p->target[c];
        char **slot = NULL;
        if (p->role[c] == ROLE_FIELD)
            slot = &s->field_names[t];
        else if (p->role[c] == ROLE_DENSE)
            slot = &s->dense_names[t];
        else if (p->role[c] == ROLE_MH)
            slot = &s->mh_names[t];
        else if (p->role[c] == ROLE_DOMAIN && L->domain_slot >= 0)
            slot = &s->field_names[L->domain_slot];
        if (slot && !(*slot = mml__strdup(ctx, name)))
            return mml__error(ctx, MML_ENOMEM, "out of memory reading %s", L->name);
        if (p->role[c] == ROLE_FIELD && s->field_kind[t] == MML__FIELD_VOCAB_OOV &&
            mml__vocab_create(ctx, &s->field_vocab[t]) < 0)
            return mml__error(ctx, MML_ENOMEM, "out of memory reading %s", L->name);
        if (p->role[c] == ROLE_MH && mml__vocab_create(ctx, &s->mh_vocab[t]) < 0)
            return mml__error(ctx, MML_ENOMEM, "out of memory reading %s", L->name);
    }
    if (mml__vocab_create(ctx, &L->domain_vocab) < 0)
        return mml__error(ctx, MML_ENOMEM, "out of memory reading %s", L->name);
    return MML_OK;
}

/* Validation and test files: find the schema's columns by name. */
static int plan_other(loader *L, plan *p)
{
    const mml_csv_options *o = &L->o;
    const mml__schema *s = L->schema;
    int rc = assign(L, p, o->label_column, ROLE_LABEL, 0, "label");
    if (rc < 0)
        return rc;
    if (L->has_domain && (rc = assign(L, p, o->domain_column, ROLE_DOMAIN, -1, "domain")) < 0)
        return rc;
    for (int32_t f = 0; f < s->n_fields; f++)
        if (f != s->domain_field &&
            (rc = assign(L, p, s->field_names[f], ROLE_FIELD, f, "categorical")) < 0)
            return rc;
    for (int32_t j = 0; j < s->n_dense; j++)
        if ((rc = assign(L, p, s->dense_names[j], ROLE_DENSE, j, "numeric")) < 0)
            return rc;
    for (int32_t m = 0; m < s->n_multihot; m++)
        if ((rc = assign(L, p, s->mh_names[m], ROLE_MH, m, "multi-hot")) < 0)
            return rc;
    return MML_OK;
}

/* ------------------------------------------------------------ rows */

static int parse_number(const cell *c, float *out) { return mml__parse_float(c->p, c->len, out); }

/* Checks one row (count, label, numbers, known domain); on success stores
 * the label, dense values and (outside training) the domain id. */
static int check_row(loader *L, const plan *p, int64_t line_no, int64_t n, mml_dataset *ds,
                     int64_t r)
{
    if (n < p->n_cols)
        return row_error(L, line_no, (int32_t)n + 1, mml__vocab_str(p->names, (int32_t)n),
                         "a value (the header has more fields than this row)", NULL);
    if (n > p->n_cols) {
        char what[96];
        snprintf(what, sizeof what, "unexpected field %d: the header has %d fields",
                 (int)p->n_cols + 1, (int)p->n_cols);
        return row_error(L, line_no, p->n_cols + 1, NULL, what, NULL);
    }
    for (int32_t c = 0; c < p->n_cols; c++) {
        const cell cv = {L->cells[c], L->cell_lens[c]}, *v = &cv;
        switch (p->role[c]) {
        case ROLE_LABEL:
            if (v->len != 1 || (v->p[0] != '0' && v->p[0] != '1'))
                return row_error(L, line_no, c + 1, mml__vocab_str(p->names, c), "0 or 1", v);
            ds->labels[r] = v->p[0] == '1' ? 1.0f : 0.0f;
            break;
        case ROLE_DENSE:
            if (!parse_number(v, &ds->dense[r * ds->n_dense + p->target[c]]))
                return row_error(L, line_no, c + 1, mml__vocab_str(p->names, c),
                                 "a finite number", v);
            break;
        case ROLE_DOMAIN:
            if (!L->training) {
                int32_t d = mml__vocab_find(L->domain_vocab, v->p, v->len);
                if (d < 0)
                    return row_error(L, line_no, c + 1, mml__vocab_str(p->names, c),
                                     "a domain of the training split", v);
                ds->domain[r] = d;
            }
            break;
        default:
            break;
        }
    }
    return MML_OK;
}

/* Maps the categorical and multi-hot values of a checked row (only memory can fail). */
static int store_row(loader *L, const plan *p, mml_dataset *ds, int64_t r)
{
    mml_ctx *ctx = L->ctx;
    mml__schema *s = L->schema;
    /* No categorical fields: ds->ids is NULL and no cell writes through ids. */
    int32_t *ids = ds->ids ? ds->ids + r * ds->n_fields : NULL;
    if (!L->has_domain)
        ds->domain[r] = 0;
    for (int32_t c = 0; c < p->n_cols; c++) {
        const cell cv = {L->cells[c], L->cell_lens[c]}, *v = &cv;
        int32_t t = p->target[c], id;
        int rc;
        switch (p->role[c]) {
        case ROLE_FIELD:
            if (s->field_kind[t] == MML__FIELD_HASHED) {
                id = (int32_t)mml_hash_string(v->p, v->len, s->field_seed[t],
                                              (uint32_t)s->field_sizes[t]);
            } else if (L->training) {
                if ((rc = mml__vocab_intern(ctx, s->field_vocab[t], v->p, v->len, &id)) < 0)
                    return rc;
            } else {
                id = mml__vocab_find(s->field_vocab[t], v->p, v->len);
                if (id < 0)
                    id = s->field_oov[t];
            }
            ids[t] = id;
            break;
        case ROLE_DOMAIN:
            if (L->training) {
                if ((rc = mml__vocab_intern(ctx, L->domain_vocab, v->p, v->len, &id)) < 0)
                    return rc;
                ds->domain[r] = id;
            }
            if (L->domain_slot >= 0)
                ids[L->domain_slot] = ds->domain[r];
            break;
        case ROLE_MH: {
            int64_t pos = ds->mh_off[t][r];
            size_t i = 0;
            while (v->len > 0) {
                const char *q = memchr(v->p + i, L->o.multihot_separator, v->len - i);
                size_t e = q ? (size_t)(q - v->p) : v->len;
                if (L->training) {
                    if ((rc = mml__vocab_intern(ctx, s->mh_vocab[t], v->p + i, e - i, &id)) < 0)
                        return rc;
                } else {
                    id = mml__vocab_find(s->mh_vocab[t], v->p + i, e - i);
                    if (id < 0)
                        id = s->mh_sizes[t] - 1;
                }
                if ((rc = mml__dataset_reserve_mh(ds, t, pos + 1)) < 0)
                    return rc;
                ds->mh_ids[t][pos++] = id;
                if (!q)
                    break;
                i = e + 1;
            }
            ds->mh_off[t][r + 1] = pos;
            break;
        }
        default:
            break;
        }
    }
    return MML_OK;
}

static int read_rows(loader *L, mml__lines *r, const plan *p, mml_dataset *ds)
{
    mml_ctx *ctx = L->ctx;
    const char *line;
    size_t len;
    for (;;) {
        int rc = mml__lines_next(r, &line, &len);
        if (rc == 0)
            return MML_OK;
        if (rc == MML_EPARSE) {
            if (L->o.skip_bad_rows) {
                ds->skipped++;
                continue;
            }
            return mml__error(ctx, MML_EPARSE, "%s:%lld:1: line longer than %lld bytes", L->name,
                              (long long)r->line_no, (long long)L->o.max_line_bytes);
        }
        if (rc < 0)
            return rc;
        if (len == 0)
            continue; /* blank line */
        if ((rc = ensure_line_room(L, len, p->n_cols + 2)) < 0)
            return mml__error(ctx, rc, "out of memory reading %s", L->name);
        int64_t row = ds->n_rows;
        if ((rc = mml__dataset_reserve(ds, row + 1)) < 0)
            return mml__error(ctx, rc, "out of memory reading %s", L->name);
        int32_t bad_col = 0;
        const char *what = NULL;
        int64_t n = split_line(L, line, len, p->n_cols, &bad_col, &what);
        if (n < 0) {
            if (bad_col <= p->n_cols)
                snprintf(L->msg, sizeof L->msg, "%s:%lld:%d: field '%s': %s", L->name,
                         (long long)r->line_no, (int)bad_col,
                         mml__vocab_str(p->names, bad_col - 1), what);
            else
                snprintf(L->msg, sizeof L->msg, "%s:%lld:%d: %s", L->name, (long long)r->line_no,
                         (int)bad_col, what);
            rc = MML_EPARSE;
        } else
            rc = check_row(L, p, r->line_no, n, ds, row);
        if (rc < 0) {
            if (L->o.skip_bad_rows) {
                ds->skipped++;
                continue;
            }
            return mml__error(ctx, MML_EPARSE, "%s", L->msg);
        }
        for (int32_t m = 0; m < ds->n_multihot; m++)
            ds->mh_off[m][row + 1] = ds->mh_off[m][row];
        if ((rc = store_row(L, p, ds, row)) < 0)
            return mml__error(ctx, rc, "out of memory reading %s", L->name);
        ds->n_rows = row + 1;
    }
}

/* ------------------------------------------------------------ training finish */

static int remap_vocab(mml_ctx *ctx, mml__vocab *v, int32_t *vals, int64_t n, int64_t stride)
{
    int32_t *map;
    int rc = mml__vocab_sort(ctx, v, &map);
    if (rc < 0)
        return rc;
    for (int64_t i = 0; i < n; i++)
        vals[i * stride] = map[vals[i * stride]];
    mml__free(ctx, map, (size_t)(v->n > 0 ? v->n : 1) * sizeof *map);
    return MML_OK;
}

/* Sorts the vocabularies, renumbers the rows, fixes D and the domain field. */
static int finish_train(loader *L, mml_dataset *ds)
{
    mml_ctx *ctx = L->ctx;
    mml__schema *s = L->schema;
    int rc;
    if (ds->n_rows == 0)
        return mml__error(ctx, MML_EPARSE, "%s: no data rows", L->name);
    for (int32_t f = 0; f < s->n_fields; f++) {
        if (!s->field_vocab[f])
            continue;
        if ((rc = remap_vocab(ctx, s->field_vocab[f], ds->ids + f, ds->n_rows, ds->n_fields)) < 0)
            return mml__error(ctx, rc, "out of memory reading %s", L->name);
        s->field_oov[f] = s->field_vocab[f]->n;
        s->field_sizes[f] = s->field_vocab[f]->n + 1;
    }
    for (int32_t m = 0; m < s->n_multihot; m++) {
        if ((rc = remap_vocab(ctx, s->mh_vocab[m], ds->mh_ids[m], ds->mh_off[m][ds->n_rows], 1)) <
            0)
            return mml__error(ctx, rc, "out of memory reading %s", L->name);
        s->mh_sizes[m] = s->mh_vocab[m]->n + 1;
    }
    int32_t D;
    int is_range = 0;
    if (L->has_domain) {
        if ((rc = remap_vocab(ctx, L->domain_vocab, ds->domain, ds->n_rows, 1)) < 0)
            return mml__error(ctx, rc, "out of memory reading %s", L->name);
        D = L->domain_vocab->n;
        is_range = L->domain_vocab->all_int;
        for (int32_t d = 0; d < D && is_range; d++)
            is_range = L->domain_vocab->ival[d] == d;
    } else {
        D = 1;
    }
    s->domain_names = mml__calloc(ctx, (size_t)D, sizeof *s->domain_names);
    if (!s->domain_names)
        return mml__error(ctx, MML_ENOMEM, "out of memory reading %s", L->name);
    s->n_domains = D;
    for (int32_t d = 0; d < D; d++) {
        const char *nm = L->has_domain ? mml__vocab_str(L->domain_vocab, d) : "all";
        if (!(s->domain_names[d] = mml__strdup(ctx, nm)))
            return mml__error(ctx, MML_ENOMEM, "out of memory reading %s", L->name);
    }
    ds->domain_rows = mml__calloc(ctx, (size_t)D, sizeof *ds->domain_rows);
    if (!ds->domain_rows)
        return mml__error(ctx, MML_ENOMEM, "out of memory reading %s", L->name);
    ds->n_domains = D;
    int32_t slot = L->domain_slot;
    if (slot >= 0 && !L->slot_explicit && !is_range) {
        /* The default domain field is dropped: it is the last field. */
        int32_t nf = ds->n_fields, nf2 = nf - 1;
        int32_t *ids = NULL;
        if (nf2 > 0) {
            ids = mml__alloc(ctx, (size_t)ds->cap_rows * (size_t)nf2 * sizeof *ids);
            if (!ids)
                return mml__error(ctx, MML_ENOMEM, "out of memory reading %s", L->name);
            for (int64_t r = 0; r < ds->n_rows; r++)
                memcpy(ids + r * nf2, ds->ids + r * nf, (size_t)nf2 * sizeof *ids);
        }
        mml__free(ctx, ds->ids, (size_t)ds->cap_rows * (size_t)nf * sizeof *ds->ids);
        ds->ids = ids;
        ds->n_fields = nf2;
        mml__strfree(ctx, s->field_names[slot]);
        s->field_names[slot] = NULL;
        s->n_fields = nf2;
        L->domain_slot = -1;
    } else if (slot >= 0) {
        for (int64_t r = 0; r < ds->n_rows; r++)
            ds->ids[r * ds->n_fields + slot] = ds->domain[r];
        s->domain_field = slot;
        s->field_sizes[slot] = D;
        s->field_kind[slot] = MML__FIELD_DOMAIN;
    }
    /* Validation and test domains are looked up in domain_vocab, the
     * training values in sorted order: with values exactly 0 .. D-1 that is
     * the same as reading them as ids. The schema takes the vocabulary in
     * the other case, for serving. */
    int32_t mode = !L->has_domain ? MML__DOMAIN_ONE : is_range ? MML__DOMAIN_IDS : MML__DOMAIN_NAMES;
    if (mode == MML__DOMAIN_NAMES)
        s->domain_vocab = L->domain_vocab;
    if ((rc = mml__schema_set_roles(ctx, s, MML__SOURCE_CSV, L->o.label_column, MML__LABEL_01, 0,
                                    L->has_domain ? L->o.domain_column : NULL, mode,
                                    L->o.delimiter, L->o.multihot_separator)) < 0)
        return rc;
    mml__dataset_count_domains(ds);
    return MML_OK;
}

/* ------------------------------------------------------------ driver */

static int load_file(loader *L, const mml__source *src, mml_dataset **out)
{
    mml_ctx *ctx = L->ctx;
    mml__lines r;
    plan p;
    memset(&p, 0, sizeof p);
    L->name = src->name;
    int rc = mml__lines_open(&r, ctx, src, (size_t)L->o.max_line_bytes);
    if (rc < 0)
        return rc;
    mml_dataset *ds = NULL;
    rc = read_header(L, &r, &p);
    if (rc == MML_OK)
        rc = L->training ? plan_train(L, &p) : plan_other(L, &p);
    if (rc == MML_OK) {
        rc = mml__dataset_create(ctx, L->schema, 1024, &ds);
        if (rc < 0)
            rc = mml__error(ctx, rc, "out of memory reading %s", L->name);
    }
    if (rc == MML_OK)
        rc = read_rows(L, &r, &p, ds);
    if (rc == MML_OK && L->training)
        rc = finish_train(L, ds);
    else if (rc == MML_OK)
        mml__dataset_count_domains(ds);
    mml__lines_close(&r);
    plan_free(ctx, &p);
    if (rc < 0) {
        mml_dataset_destroy(ds);
        return rc;
    }
    *out = ds;
    return MML_OK;
}

int mml__csv_load_sources(mml_ctx *ctx, const mml_csv_options *o, const mml__source *train_src,
                          const mml__source *val_src, const mml__source *test_src,
                          mml_dataset **train, mml_dataset **val, mml_dataset **test)
{
    loader *L = mml__calloc(ctx, 1, sizeof *L);
    if (!L)
        return mml__error(ctx, MML_ENOMEM, "out of memory reading %s", train_src->name);
    L->ctx = ctx;
    L->o = *o;
    L->has_domain = o->domain_column && o->domain_column[0];
    L->training = 1;
    mml_dataset *out[3] = {NULL, NULL, NULL};
    int rc = load_file(L, train_src, &out[0]);
    L->training = 0;
    if (rc == MML_OK && val_src)
        rc = load_file(L, val_src, &out[1]);
    if (rc == MML_OK && test_src)
        rc = load_file(L, test_src, &out[2]);
    if (!L->schema || L->schema->domain_vocab != L->domain_vocab)
        mml__vocab_destroy(ctx, L->domain_vocab);
    mml__schema_release(ctx, L->schema);
    mml__free(ctx, L->cells, (size_t)L->cells_cap * sizeof *L->cells);
    mml__free(ctx, L->cell_lens, (size_t)L->lens_cap * sizeof *L->cell_lens);
    mml__free(ctx, L->scratch, L->scratch_cap);
    mml__free(ctx, L, sizeof *L);
    if (rc < 0) {
        for (int k = 0; k < 3; k++)
            mml_dataset_destroy(out[k]);
        return rc;
    }
    *train = out[0];
    if (val)
        *val = out[1];
    if (test)
        *test = out[2];
    return MML_OK;
}

/* ------------------------------------------------------------ public */

int mml_csv_options_init_sized(mml_csv_options *out, uint32_t struct_size)
{
    mml_csv_options full, *o = &full;
    memset(o, 0, sizeof *o);
    o->label_column = "label";
    o->domain_column = "domain";
    o->multihot_separator = '|';
    o->delimiter = ',';
    o->domain_as_field = 1;
    o->max_line_bytes = MML_CSV_MAX_LINE_DEFAULT;
    return mml__init_versioned(out, o, sizeof *o, struct_size, MML__OLDER_SIZES_mml_csv_options);
}

static int check_list(mml_ctx *ctx, const char *const *list, int32_t n, const char *what)
{
    if (n < 0 || (n > 0 && !list))
        return mml__error(ctx, MML_EINVAL, "mml_csv_load: %s: bad list (n = %d)", what, (int)n);
    for (int32_t k = 0; k < n; k++)
        if (!list[k] || !list[k][0])
            return mml__error(ctx, MML_EINVAL, "mml_csv_load: %s[%d] is NULL or empty", what,
                              (int)k);
    return MML_OK;
}

int mml_csv_load(mml_ctx *ctx, const mml_csv_options *opt, const char *train_path,
                 const char *val_path, const char *test_path, mml_dataset **train,
                 mml_dataset **val, mml_dataset **test)
{
    if (mml__loader_start(ctx, train, val, test) < 0)
        return MML_EINVAL;
    if (!train || !train_path || (val_path && !val) || (test_path && !test))
        return mml__error(ctx, MML_EINVAL,
                          "mml_csv_load: NULL train path or output (an output may be NULL only "
                          "when its path is)");
    mml_csv_options o;
    int vrc = MML__COPY_OPTIONS(ctx, &o, opt, mml_csv_options, "mml_csv_load");
    if (vrc < 0)
        return vrc;
    if (!o.label_column || !o.label_column[0])
        return mml__error(ctx, MML_EINVAL, "mml_csv_load: label_column is NULL or empty");
    if (o.delimiter == '\0' || o.delimiter == '"' || o.delimiter == '\n' || o.delimiter == '\r')
        return mml__error(ctx, MML_EINVAL, "mml_csv_load: bad delimiter");
    if (o.n_multihot_columns > 0 &&
        (o.multihot_separator == '\0' || o.multihot_separator == o.delimiter ||
         o.multihot_separator == '"' || o.multihot_separator == '\n' ||
         o.multihot_separator == '\r'))
        return mml__error(ctx, MML_EINVAL, "mml_csv_load: bad multihot_separator");
    if (o.max_line_bytes < 1 || o.max_line_bytes > MML_CSV_MAX_LINE_LIMIT)
        return mml__error(ctx, MML_EINVAL, "mml_csv_load: max_line_bytes %lld not in 1..%d",
                          (long long)o.max_line_bytes, MML_CSV_MAX_LINE_LIMIT);
    int rc;
    if ((o.field_columns && (rc = check_list(ctx, o.field_columns, o.n_field_columns,
                                             "field_columns")) < 0) ||
        (rc = check_list(ctx, o.numeric_columns, o.n_numeric_columns, "numeric_columns")) < 0 ||
        (rc = check_list(ctx, o.multihot_columns, o.n_multihot_columns, "multihot_columns")) < 0 ||
        (rc = check_list(ctx, o.ignore_columns, o.n_ignore_columns, "ignore_columns")) < 0 ||
        (rc = check_list(ctx, o.hashed_columns, o.n_hashed_columns, "hashed_columns")) < 0)
        return rc;
    if (o.n_hashed_columns > 0 && !o.hashed_buckets)
        return mml__error(ctx, MML_EINVAL, "mml_csv_load: hashed_buckets is NULL");
    for (int32_t k = 0; k < o.n_hashed_columns; k++)
        if (o.hashed_buckets[k] < 1 || o.hashed_buckets[k] > INT32_MAX)
            return mml__error(ctx, MML_EINVAL,
                              "mml_csv_load: hashed_buckets[%d] = %lld not in 1..2^31-1 (column "
                              "'%s')",
                              (int)k, (long long)o.hashed_buckets[k], o.hashed_columns[k]);
    mml__source s[3] = {{train_path, train_path, NULL, 0},
                        {val_path, val_path, NULL, 0},
                        {test_path, test_path, NULL, 0}};
    return mml__csv_load_sources(ctx, &o, &s[0], val_path ? &s[1] : NULL,
                                 test_path ? &s[2] : NULL, train, val, test);
}
