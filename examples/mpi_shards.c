/* One CSV file per rank, on one schema (see mpi_shards.h). */
#include "mpi_shards.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_COLUMNS = 4096 };

/* path with every "%r" replaced by the rank. */
static int rank_path(const char *path, int rank, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = path; *p; p++) {
        int w = p[0] == '%' && p[1] == 'r' ? snprintf(out + n, cap - n, "%d", rank)
                                           : snprintf(out + n, cap - n, "%c", *p);
        if (w < 0 || (size_t)w >= cap - n)
            return -1;
        n += (size_t)w;
        p += p[0] == '%' && p[1] == 'r';
    }
    return 0;
}

static int listed(const char *name, const char *const *list, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(name, list[i]))
            return 1;
    return 0;
}

/* A text buffer that grows. */
typedef struct text {
    char *s;
    size_t n, cap;
} text;

static int put(text *t, const char *s, size_t len)
{
    if (t->n + len + 1 > t->cap) {
        size_t cap = (t->cap + len + 1) * 2;
        char *p = realloc(t->s, cap);
        if (!p)
            return -1;
        t->s = p, t->cap = cap;
    }
    memcpy(t->s + t->n, s, len);
    t->n += len;
    t->s[t->n] = 0;
    return 0;
}

/* A quoted CSV cell: quotes doubled, so any value survives. */
static int put_cell(text *t, const char *v, int first, char delim)
{
    if ((!first && put(t, &delim, 1) < 0) || put(t, "\"", 1) < 0)
        return -1;
    for (const char *p = v; *p; p++)
        if (put(t, p, 1) < 0 || (*p == '"' && put(t, "\"", 1) < 0))
            return -1;
    return put(t, "\"", 1);
}

/* Rows that hold every categorical value and domain name of ds, under the
 * file's header columns: row i has each column's i-th value (its last one
 * once they run out); numeric, label and hashed columns hold 0. */
static int vocabulary_rows(const mml_dataset *ds, const mml_csv_options *o, char **cols,
                           int n_cols, text *t)
{
    /* Each column's role, once: -1 a constant 0, -2 the domain, -3 ignored,
     * else the field whose values it holds. */
    int32_t *role = malloc(sizeof(int32_t) * (size_t)n_cols);
    if (!role)
        return -1;
    int32_t D = mml_dataset_n_domains(ds);
    int64_t rows = D;
    for (int c = 0; c < n_cols; c++) {
        int32_t f = mml_dataset_find_field(ds, cols[c]);
        if (!strcmp(cols[c], o->label_column) ||
            listed(cols[c], o->numeric_columns, o->n_numeric_columns) ||
            listed(cols[c], o->hashed_columns, o->n_hashed_columns))
            role[c] = -1;
        else if (o->domain_column && !strcmp(cols[c], o->domain_column))
            role[c] = -2;
        else
            role[c] = f >= 0 ? f : -3;
        if (role[c] >= 0 && mml_dataset_field_size(ds, f) > rows)
            rows = mml_dataset_field_size(ds, f);
    }
    char delim = o->delimiter ? o->delimiter : ',';
    int rc = 0;
    for (int64_t i = 0; i < rows && rc == 0; i++) {
        for (int c = 0; c < n_cols && rc == 0; c++) {
            const char *v = role[c] == -1 ? "0" : "";
            if (role[c] == -2) {
                v = mml_dataset_domain_name(ds, (int32_t)(i < D ? i : D - 1));
            } else if (role[c] >= 0) {
                int32_t f = role[c];
                int32_t n = mml_dataset_field_size(ds, f), oov = mml_dataset_field_oov(ds, f);
                int32_t id = (int32_t)(i < n ? i : n - 1);
                if (id == oov && id > 0)
                    id--;
                v = mml_dataset_field_value(ds, f, id);
                if (!v || id == oov)
                    v = "0";
            }
            rc = put_cell(t, v, c == 0, delim);
        }
        if (rc == 0)
            rc = put(t, "\n", 1);
    }
    free(role);
    return rc;
}

/* The header line of path, split into n_cols names (malloc'ed). */
static int read_header(const char *path, char delim, char ***cols, int *n_cols, text *line)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    int ch;
    while ((ch = fgetc(f)) != EOF && ch != '\n') {
        char c = (char)ch;
        if (c != '\r' && put(line, &c, 1) < 0) {
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    const char *cells[MAX_COLUMNS];
    size_t lens[MAX_COLUMNS];
    char *scratch = malloc(line->n + 1);
    int64_t n = scratch ? mml_csv_split_line(line->s ? line->s : "", line->n, delim, MAX_COLUMNS,
                                             cells, lens, scratch, NULL)
                        : -1;
    if (n < 1 || n > MAX_COLUMNS) {
        free(scratch);
        return -1;
    }
    *cols = calloc((size_t)n, sizeof **cols);
    for (int64_t c = 0; *cols && c < n; c++)
        if (((*cols)[c] = malloc(lens[c] + 1)))
            memcpy((*cols)[c], cells[c], lens[c]), (*cols)[c][lens[c]] = 0;
    free(scratch);
    *n_cols = (int)n;
    for (int c = 0; *cols && c < n; c++)
        if (!(*cols)[c])
            return -1;
    return *cols ? 0 : -1;
}

int mpi_load_shards(mpi_reducer *r, mml_ctx *ctx, const mml_csv_options *o, const char *train,
                    const char *val, const char *test, mml_dataset **tr, mml_dataset **va,
                    mml_dataset **te)
{
    char ptr[4096], pva[4096], pte[4096], vocab[64] = "";
    *tr = *va = *te = NULL;
    if (rank_path(train, r->rank, ptr, sizeof ptr) < 0 || rank_path(val, r->rank, pva, sizeof pva) < 0 ||
        rank_path(test, r->rank, pte, sizeof pte) < 0)
        return mml_ctx_set_error(ctx, MML_EINVAL, "per-rank file name too long");
    /* 1. This rank's own vocabularies: its training file alone. */
    mml_dataset *local = NULL, *vocab_rows = NULL;
    int rc = mml_csv_load(ctx, o, ptr, NULL, NULL, &local, NULL, NULL);
    char **cols = NULL;
    int n_cols = 0;
    text header = {0}, mine = {0};
    char *all = NULL;
    long all_n = 0;
    if (rc >= 0 && (read_header(ptr, o->delimiter ? o->delimiter : ',', &cols, &n_cols, &header) < 0 ||
                    vocabulary_rows(local, o, cols, n_cols, &mine) < 0))
        rc = mml_ctx_set_error(ctx, MML_EIO, "cannot read the header of the training file");
    /* 2. Every rank's values: one vocabulary file, the same on every rank,
     *    so the reader numbers every value alike everywhere. */
    int agreed = mpi_reducer_agree(r, rc < 0 ? rc : 0, rc < 0 ? mml_ctx_last_error(ctx) : NULL);
    if (agreed < 0 && rc >= 0)
        rc = mml_ctx_set_error(ctx, agreed, "another rank could not read its files");
    if (rc >= 0 && mpi_reducer_allgather(r, mine.s ? mine.s : "", (long)mine.n, &all, &all_n) < 0)
        rc = mml_ctx_set_error(ctx, MML_ECALLBACK, "gathering the ranks' vocabularies failed");
    if (rc >= 0) {
        snprintf(vocab, sizeof vocab, "/tmp/mml-vocab-%d-%d.csv", (int)getpid(), r->rank);
        FILE *f = fopen(vocab, "wb");
        if (!f || fwrite(header.s, 1, header.n, f) != header.n || fputc('\n', f) == EOF ||
            fwrite(all, 1, (size_t)all_n, f) != (size_t)all_n || fclose(f) != 0)
            rc = mml_ctx_set_error(ctx, MML_EIO, "cannot write the shared vocabulary file");
    }
    /* 3. This rank's rows of every split, mapped through that file's schema. */
    if (rc >= 0)
        rc = mml_csv_load(ctx, o, vocab, ptr, pva, &vocab_rows, tr, va);
    mml_dataset_destroy(vocab_rows);
    vocab_rows = NULL;
    if (rc >= 0)
        rc = mml_csv_load(ctx, o, vocab, pte, NULL, &vocab_rows, te, NULL);
    mml_dataset_destroy(vocab_rows);
    mml_dataset_destroy(local);
    if (vocab[0])
        remove(vocab);
    for (int c = 0; cols && c < n_cols; c++)
        free(cols[c]);
    free(cols), free(header.s), free(mine.s), free(all);
    if (rc < 0) {
        mml_dataset_destroy(*tr), mml_dataset_destroy(*va), mml_dataset_destroy(*te);
        *tr = *va = *te = NULL;
    }
    return rc;
}
