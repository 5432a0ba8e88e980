/* Private declarations of the data layer: vocabularies, schema, data set
 * internals, the chunked line reader and the stratified split. */
#ifndef MML_DATA_INTERNAL_H
#define MML_DATA_INTERNAL_H

#include <stdio.h>

#include "core/bytes.h"
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

/* 1 with *out set if s[0..len) is a finite number (strtod syntax, C
 * locale) within float range: the CSV reader's numeric cells. */
int mml__parse_float(const char *s, size_t len, float *out);

/* ------------------------------------------------------------ schema */

/* How a categorical field's raw value becomes its id (values pinned: saved
 * in model files, docs/FORMAT.md, "Schema payload"). */
enum {
    MML__FIELD_IDS = 0,       /* the value is the id: a canonical integer in [0, size) */
    MML__FIELD_VOCAB_OOV = 1, /* vocabulary; unknown values -> field_oov (= size - 1) */
    MML__FIELD_VOCAB = 2,     /* vocabulary of size values; unknown values are errors */
    MML__FIELD_HASHED = 3,    /* mml_hash_string(value, field_seed, size) */
    MML__FIELD_DOMAIN = 4     /* the domain id (from the domain column) */
};
/* How the domain column's raw value becomes the domain id. */
enum {
    MML__DOMAIN_ONE = 0,   /* no domain column: every row is domain 0 */
    MML__DOMAIN_IDS = 1,   /* the value is the id: a canonical integer in [0, D) */
    MML__DOMAIN_NAMES = 2  /* the value is one of domain_names (CSV: sorted numbering) */
};
/* What the label column holds. */
enum {
    MML__LABEL_01 = 0,        /* "0" or "1" */
    MML__LABEL_RATING_MIN = 1 /* an integer rating 1..5; label = rating >= label_min */
};
/* The loader that made the schema (informational). */
enum { MML__SOURCE_CSV = 0, MML__SOURCE_MOVIELENS = 1, MML__SOURCE_SYNTHETIC = 2 };

/* Everything that maps a raw row (values by column name) to model inputs.
 * A categorical field's column is named field_names[f]; the DOMAIN field's
 * name is the domain column's. Immutable once a loader or mml__schema_read
 * has built it: many threads may read it at once (refs is changed only by
 * the thread that owns the objects holding it). */
typedef struct mml__schema {
    int32_t refs;
    int32_t n_fields, n_dense, n_multihot, n_domains;
    int32_t cap_fields;   /* entries allocated in the field arrays (>= n_fields) */
    int32_t domain_field; /* field that carries the domain id, or -1 */
    char **field_names;
    int32_t *field_sizes;
    int32_t *field_oov;   /* -1: none */
    mml__vocab **field_vocab; /* NULL entries: no vocabulary */
    int32_t *field_kind;  /* MML__FIELD_* */
    uint64_t *field_seed; /* hashed fields' seeds (0 otherwise) */
    char **dense_names;
    char **mh_names;
    int32_t *mh_sizes;    /* vocabulary size + 1 (the last id is out-of-vocabulary) */
    mml__vocab **mh_vocab;
    char **domain_names;
    int32_t source;       /* MML__SOURCE_* */
    int32_t label_kind;   /* MML__LABEL_* */
    int32_t label_min;    /* MML__LABEL_RATING_MIN's threshold, else 0 */
    int32_t domain_mode;  /* MML__DOMAIN_* */
    char *label_column;   /* never NULL once built */
    char *domain_column;  /* NULL with MML__DOMAIN_ONE */
    mml__vocab *domain_vocab; /* domain names -> ids with MML__DOMAIN_NAMES, else NULL */
    char delimiter;       /* of the raw text (the caller splits and unquotes) */
    char mh_separator;    /* between the values of a multi-hot cell */
} mml__schema;

/* Zero-filled arrays for the given counts; names NULL until set. */
int mml__schema_create(mml_ctx *ctx, mml__schema **out, int32_t n_fields, int32_t n_dense,
                       int32_t n_multihot, int32_t n_domains);
void mml__schema_release(mml_ctx *ctx, mml__schema *s);
/* Another reference (for a model that keeps its data's schema). */
void mml__schema_retain(mml__schema *s);
/* The data set's schema, borrowed (retain it to keep it). */
mml__schema *mml__dataset_schema(const mml_dataset *ds);
/* Sets label_column, domain_column (NULL: none), the modes and the text
 * separators, and builds domain_vocab from domain_names for
 * MML__DOMAIN_NAMES (MML_EINVAL for duplicate names). Messages set. */
int mml__schema_set_roles(mml_ctx *ctx, mml__schema *s, int32_t source, const char *label_column,
                          int32_t label_kind, int32_t label_min, const char *domain_column,
                          int32_t domain_mode, char delimiter, char mh_separator);

/* Serialisation (docs/FORMAT.md, "Schema payload"). The writer's failures are sticky
 * in w. The reader treats the bytes as untrusted: MML_ETRUNCATED when they
 * end early, MML_ECORRUPT (message naming the field) for a bad count,
 * size, kind, duplicate or inconsistency, MML_EVERSION for a schema
 * version other than 1, MML_ENOMEM, MML_EINVAL for NULL arguments or
 * r->ctx != ctx; *out is NULL on failure, else a new schema with one
 * reference. Reads on from r's position; r->pos is after the schema. */
void mml__schema_write(mml__wbuf *w, const mml__schema *s);
int mml__schema_read(mml_ctx *ctx, mml__rbuf *r, mml__schema **out);

/* A caller's column list bound to a schema's roles (mml__schema_bind). */
typedef struct mml__binding {
    const mml__schema *schema;
    int32_t n_columns;
    int32_t label_col;   /* caller column of the label, or -1 */
    int32_t domain_col;  /* caller column of the domain, or -1 (MML__DOMAIN_ONE) */
    int32_t n_multihot;
    int32_t *role;       /* n_columns: MML__BIND_* */
    int32_t *target;     /* n_columns: field, numeric or multi-hot index */
    int32_t *mh_col;     /* n_multihot: the caller column of each multi-hot field */
} mml__binding;
enum { MML__BIND_NONE = 0, MML__BIND_LABEL, MML__BIND_DOMAIN, MML__BIND_FIELD, MML__BIND_DENSE,
       MML__BIND_MH };

/* Maps names[0..n_columns) (e.g. a CSV header) to the schema's roles.
 * Every categorical (but the DOMAIN field), numeric and multi-hot column and
 * the domain column (unless MML__DOMAIN_ONE) are required: a missing one is
 * MML_ENOTFOUND naming it; the label column is optional; other names are
 * ignored. MML_EINVAL for NULL arguments, n_columns < 0, a NULL name or a
 * schema column listed twice. s must outlive the binding. */
int mml__schema_bind(mml_ctx *ctx, const mml__schema *s, int32_t n_columns,
                     const char *const *names, mml__binding **out);
void mml__binding_destroy(mml_ctx *ctx, mml__binding *b);

/* One raw row into model inputs, as the CSV reader maps the same cells.
 * values[c] (lens[c] bytes; lens NULL: NUL-terminated) for the bound columns
 * c (others are not read and may be NULL). Outputs (caller memory):
 *   ids[n_fields], dense[n_dense] (each may be NULL when its count is 0),
 *   *domain, *label (may be NULL: the label column is then not read;
 *   written only when the label column is bound),
 *   multi-hot lists as CSR: mh_off[n_multihot + 1] (from 0) and mh_ids
 *   with room for mh_cap ids (NULLs allowed without multi-hot fields; the
 *   sum over multi-hot cells of len + 1 always suffices).
 * Returns MML_OK; MML_ERANGE for an unknown value of a field without
 * out-of-vocabulary id, an id out of range or an unknown domain; MML_EPARSE
 * for a numeric value (or label) that does not parse or is not finite, or
 * an id that is not an integer; MML_ESHAPE when the multi-hot ids exceed
 * mh_cap; MML_EINVAL for NULL arguments, a binding of another schema or a
 * bound value that is NULL. *bad_column (if not NULL) receives the caller's
 * column index of the first bad value in column order, -1 if none. Reads
 * the schema only and takes no context: no message, no allocation, safe
 * from many threads at once. Outputs are unspecified after a failure. */
int mml__schema_map_row(const mml__schema *s, const mml__binding *b, const char *const *values,
                        const size_t *lens, int32_t *ids, float *dense, int32_t *domain,
                        float *label, int64_t *mh_off, int32_t *mh_ids, int64_t mh_cap,
                        int32_t *bad_column);

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

/* Keeps only the selected rows in [lo, hi) (data-parallel training: one
 * worker's range) and restarts at epoch 0, as a new batcher would; its
 * batches then always gather. MML_ENOMEM leaves b as it was. */
int mml__batcher_restrict(mml_batcher *b, int64_t lo, int64_t hi);

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
