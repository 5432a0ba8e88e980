/* Private declarations of the data layer: vocabularies, schema, data set
 * internals, the chunked line reader and the stratified split. */
#ifndef MML_DATA_INTERNAL_H
#define MML_DATA_INTERNAL_H

#include <stdio.h>

#include "core/internal.h"
#include "moemlora/data.h"

/* ------------------------------------------------------------ small helpers */

/* A copy of s (len bytes, NUL added) on the context allocator; free with mml__strfree. */
char *mml__strndup(mml_ctx *ctx, const char *s, size_t len);
char *mml__strdup(mml_ctx *ctx, const char *s);
/* The start of every loader: the outputs (any may be NULL) set to NULL, then
 * MML_EINVAL without a context. */
int mml__loader_start(mml_ctx *ctx, mml_dataset **train, mml_dataset **val, mml_dataset **test);
void mml__strfree(mml_ctx *ctx, char *s);

/* Grows the array whose pointer is at pp (a T ** passed as void *; elements
 * of elem bytes, capacity *cap) to hold at least need elements, doubling;
 * copies the old contents. MML_ENOMEM leaves it intact. */
int mml__grow(mml_ctx *ctx, void *pp, int64_t *cap, int64_t need, size_t elem);

/* Stable merge sort of n int32 indices with a comparator (tmp holds n). */
typedef int (*mml__cmp_fn)(const void *user, int32_t a, int32_t b);
void mml__sort_idx(int32_t *idx, int32_t *tmp, int32_t n, mml__cmp_fn cmp, const void *user);

/* 1 if s[0..len) is a canonical decimal integer ("0" or -?[1-9][0-9]{0,17}),
 * with its value in *v. */
int mml__parse_canonical_int(const char *s, size_t len, int64_t *v);

/* ------------------------------------------------------------ vocabulary */

/* Distinct strings <-> ids, open addressing. */
typedef struct mml__vocab {
    int32_t n;
    int32_t all_int;    /* every value is a canonical integer */
    int64_t off_cap, ival_cap;
    int64_t *off;       /* n + 1 offsets into chars */
    int64_t chars_len, chars_cap;
    char *chars;        /* NUL-terminated values, back to back */
    int64_t *ival;      /* integer values when all_int */
    uint32_t slots;     /* power of two */
    int32_t *table;     /* slots entries: id or -1 */
} mml__vocab;

int mml__vocab_create(mml_ctx *ctx, mml__vocab **out);
void mml__vocab_destroy(mml_ctx *ctx, mml__vocab *v);
/* The id of s[0..len), or -1. */
int32_t mml__vocab_find(const mml__vocab *v, const char *s, size_t len);
/* Finds or inserts; *id receives the id. */
int mml__vocab_intern(mml_ctx *ctx, mml__vocab *v, const char *s, size_t len, int32_t *id);
static inline const char *mml__vocab_str(const mml__vocab *v, int32_t id)
{
    return v->chars + v->off[id];
}
/* Sorts the values (numerically if all_int, bytewise otherwise) and renumbers
 * them; remap (n entries, allocated here, free with size n * 4) maps old ids
 * to new ids. */
int mml__vocab_sort(mml_ctx *ctx, mml__vocab *v, int32_t **remap);

/* ------------------------------------------------------------ schema */

typedef struct mml__schema {
    int32_t refs;
    int32_t n_fields, n_dense, n_multihot, n_domains;
    int32_t cap_fields;   /* entries allocated in the field arrays (>= n_fields) */
    int32_t domain_field; /* field that carries the domain id, or -1 */
    char **field_names;
    int32_t *field_sizes;
    int32_t *field_oov;   /* -1: none */
    mml__vocab **field_vocab; /* NULL entries: no vocabulary */
    char **dense_names;
    char **mh_names;
    int32_t *mh_sizes;
    mml__vocab **mh_vocab;
    char **domain_names;
} mml__schema;

/* Zero-filled arrays for the given counts; names NULL until set. */
int mml__schema_create(mml_ctx *ctx, mml__schema **out, int32_t n_fields, int32_t n_dense,
                       int32_t n_multihot, int32_t n_domains);
void mml__schema_release(mml_ctx *ctx, mml__schema *s);

/* ------------------------------------------------------------ data set */

struct mml_dataset {
    mml_ctx *ctx;
    mml__schema *schema;
    int64_t n_rows;
    int64_t cap_rows;
    int32_t n_fields, n_dense, n_multihot, n_domains;
    int32_t *ids;      /* cap_rows * n_fields */
    float *dense;      /* cap_rows * n_dense */
    int32_t *domain;   /* cap_rows */
    float *labels;     /* cap_rows */
    int64_t **mh_off;  /* n_multihot arrays of cap_rows + 1 */
    int32_t **mh_ids;  /* n_multihot arrays of mh_cap[m] */
    int64_t *mh_cap;
    /* (cap_rows + 1) * n_multihot pointers: mh_view[s * n_multihot + m] =
     * mh_off[m] + s, so a batch view of rows from s points at its own slice
     * (mml_dataset_view); rebuilt whenever mh_off moves. */
    const int64_t **mh_view;
    int64_t *domain_rows; /* n_domains */
    int64_t skipped;
};

/* An empty data set with room for cap_rows rows (at least 1); takes a
 * reference to the schema. */
int mml__dataset_create(mml_ctx *ctx, mml__schema *schema, int64_t cap_rows, mml_dataset **out);
/* Room for at least n rows. */
int mml__dataset_reserve(mml_dataset *ds, int64_t n);
/* Room for need ids in multi-hot field m. */
int mml__dataset_reserve_mh(mml_dataset *ds, int32_t m, int64_t need);
/* Counts rows per domain (call when the rows are final). */
void mml__dataset_count_domains(mml_dataset *ds);
/* A new data set with rows idx[0..n) of src (same schema, multi-hot lists included). */
int mml__dataset_gather(const mml_dataset *src, const int64_t *idx, int64_t n,
                        mml_dataset **out);

/* Stratified split of src into three new data sets (see data.h), rng stream
 * MML_STREAM_DATA + 1 of seed. src needs its domain_rows counted. */
int mml__split_stratified(mml_ctx *ctx, const mml_dataset *src, uint64_t seed, mml_dataset **train,
                          mml_dataset **val, mml_dataset **test);

/* ------------------------------------------------------------ line reader */

/* A text source: a file (path) or memory (mem, mem_len; for fuzzing and
 * tests). name is used in messages. */
typedef struct mml__source {
    const char *name;
    const char *path;
    const char *mem;
    size_t mem_len;
} mml__source;

typedef struct mml__lines {
    mml_ctx *ctx;
    int fd;             /* -1 for memory sources */
    const char *name;   /* for messages */
    const char *mem;
    size_t mem_len;
    char *buf;
    size_t cap, start, end;
    int eof;
    int at_start;
    int64_t line_no;    /* of the line last returned (1-based) */
    size_t max_line;
} mml__lines;

/* MML_EIO (with message) when the file cannot be opened. */
int mml__lines_open(mml__lines *r, mml_ctx *ctx, const mml__source *src, size_t max_line);
/* 1: a line in *line and *len (without its line end; valid until the next call);
 * 0: end of input; MML_EPARSE: line r->line_no is longer than max_line (it
 * has been skipped, the caller may go on); MML_EIO: read error (message set). */
int mml__lines_next(mml__lines *r, const char **line, size_t *len);
void mml__lines_close(mml__lines *r);

/* CSV loading from sources (the public function opens files by path). */
int mml__csv_load_sources(mml_ctx *ctx, const mml_csv_options *o, const mml__source *train_src,
                          const mml__source *val_src, const mml__source *test_src,
                          mml_dataset **train, mml_dataset **val, mml_dataset **test);

/* MovieLens ratings lines (user, item, rating, timestamp with sep): also for the parse benchmark. */
typedef struct mml__ratings {
    int64_t n;
    int64_t ucap, icap, rcap;
    int32_t *user, *item;
    int8_t *rating;
} mml__ratings;
int mml__ml_read_ratings(mml_ctx *ctx, const mml__source *src, const char *sep,
                         mml__ratings *out);
void mml__ml_ratings_free(mml_ctx *ctx, mml__ratings *r);

#endif
