/* libmoemlora: data sets, loaders and the batcher.
 *
 * A data set (mml_dataset) is an immutable table of rows. Each row has
 *   - n_fields categorical ids (int32, row-major, field f's ids lie in
 *     [0, mml_dataset_field_size(ds, f))),
 *   - n_dense numeric values (float, row-major),
 *   - a domain id in [0, D) and a label (0.0f or 1.0f),
 *   - optionally multi-hot fields (a variable-length list of ids per row,
 *     stored as CSR arrays: offsets[n_rows + 1] and ids; see
 *     mml_dataset_multihot_csr). Batch views (mml_dataset_view, the batcher)
 *     carry them in mml_batch_view.multihot_offsets / multihot_ids.
 * plus a schema shared by the train, validation and test sets that one loader
 * call returns: field names and cardinalities, vocabularies (value <-> id),
 * numeric and multi-hot column names, domain names and D.
 *
 * Every loader returns three data sets (train, validation, test) sharing one
 * schema. Each must be released with mml_dataset_destroy(); the context they
 * were loaded with must outlive them. The three share their schema (reference
 * counted), so, like every object of a context, they are used by one thread
 * at a time; a data set is only read after loading, so reading one from
 * several threads at once is fine as long as none is being destroyed.
 *
 * Loaders:
 *   mml_csv_load        delimited text with a header row, roles per column
 *   mml_movielens_load  the official ML-100K and ML-1M files
 *   mml_synthetic_generate  a documented multi-domain generative model
 *
 * Splits (MovieLens and synthetic): per domain and per label class, the rows
 * are shuffled with the split seed; the first round(0.6 n) go to train, the
 * next round(0.2 n) to validation, the rest to test; then each split is
 * shuffled once. Deterministic for the seed.
 */
#ifndef MOEMLORA_DATA_H
#define MOEMLORA_DATA_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "view.h"

typedef struct mml_dataset mml_dataset;

/* ---------------------------------------------------------------- data set */

MML_BEGIN_DECLS

/* NULL-safe. */
MML_API void mml_dataset_destroy(mml_dataset *ds);

/* Accessors return 0 (or NULL, or -1 where stated) for a NULL data set or an
 * index out of range. */
MML_API int64_t mml_dataset_n_rows(const mml_dataset *ds);
MML_API int32_t mml_dataset_n_fields(const mml_dataset *ds);
MML_API int32_t mml_dataset_n_dense(const mml_dataset *ds);
/* D of the schema (the same for train, validation and test). */
MML_API int32_t mml_dataset_n_domains(const mml_dataset *ds);
/* Ids of that field lie in [0, size); the size includes the out-of-vocabulary id if any. */
MML_API int32_t mml_dataset_field_size(const mml_dataset *ds, int32_t field);
MML_API const char *mml_dataset_field_name(const mml_dataset *ds, int32_t field);
/* The index of the field with that name, or -1. */
MML_API int32_t mml_dataset_find_field(const mml_dataset *ds, const char *name);
/* The index of the categorical field that carries the domain id itself, or -1. */
MML_API int32_t mml_dataset_domain_field(const mml_dataset *ds);
/* "F", "M"; "<18", "18-24", ...; occupation names; synthetic "d0", "d1", ...;
 * for CSV the domain column's values. */
MML_API const char *mml_dataset_domain_name(const mml_dataset *ds, int32_t domain);
/* Rows of this data set in that domain. */
MML_API int64_t mml_dataset_domain_rows(const mml_dataset *ds, int32_t domain);
MML_API const char *mml_dataset_dense_name(const mml_dataset *ds, int32_t j);
/* Rows the loader skipped as bad (mml_csv_options.skip_bad_rows), 0 otherwise. */
MML_API int64_t mml_dataset_skipped_rows(const mml_dataset *ds);

/* Vocabularies. A categorical field of a CSV file maps the training split's
 * distinct values, sorted (numerically when every value is an integer,
 * bytewise otherwise), to ids 0 .. V-1; the out-of-vocabulary id is V and the
 * field size is V + 1. MovieLens user and item fields map the raw ids (as
 * decimal strings) to their ranks and have no out-of-vocabulary id. The field
 * that carries the domain id has no vocabulary: its ids are the domain ids
 * (names from mml_dataset_domain_name). Synthetic fields have no vocabulary.
 *
 * The value of an id, or NULL (out-of-vocabulary id, no vocabulary, bad arguments). */
MML_API const char *mml_dataset_field_value(const mml_dataset *ds, int32_t field, int32_t id);
/* The id of a value: its id if known, else the out-of-vocabulary id if the
 * field has one, else -1 (also -1 for bad arguments or no vocabulary). */
MML_API int32_t mml_dataset_field_lookup(const mml_dataset *ds, int32_t field, const char *value);
/* The field's out-of-vocabulary id, or -1 if it has none. */
MML_API int32_t mml_dataset_field_oov(const mml_dataset *ds, int32_t field);

/* Multi-hot fields (CSV only): the values of one cell are separated by the
 * inner separator and map through the field's own vocabulary (as above, with
 * an out-of-vocabulary id). Row r's ids are ids[offsets[r] .. offsets[r+1]). */
MML_API int32_t mml_dataset_n_multihot(const mml_dataset *ds);
MML_API const char *mml_dataset_multihot_name(const mml_dataset *ds, int32_t m);
MML_API int32_t mml_dataset_multihot_size(const mml_dataset *ds, int32_t m);
MML_API const char *mml_dataset_multihot_value(const mml_dataset *ds, int32_t m, int32_t id);
/* The CSR arrays of multi-hot field m (offsets has n_rows + 1 entries; ids
 * may be NULL when no row has a value). Valid while the data set lives. */
MML_API int mml_dataset_multihot_csr(const mml_dataset *ds, int32_t m, const int64_t **offsets,
                                     const int32_t **ids);
/* The ids of multi-hot field m in one row. */
MML_API int mml_dataset_multihot_row(const mml_dataset *ds, int32_t m, int64_t row,
                                     const int32_t **ids, int64_t *n);

/* A view of the contiguous rows [start, start + count), no copy. The view
 * points into the data set and is valid while the data set lives; its
 * multi-hot fields point into the data set's CSR arrays (offsets starting at
 * row start's entry, so they may start above 0). Returns
 * MML_EINVAL for NULL arguments, MML_ERANGE for rows outside the data set. */
MML_API int mml_dataset_view_sized(const mml_dataset *ds, int64_t start, int64_t count,
                                   mml_batch_view *out, uint32_t struct_size);
#define mml_dataset_view(ds, start, count, out)                                                  \
    mml_dataset_view_sized((ds), (start), (count), (out), (uint32_t)sizeof(mml_batch_view))

/* Writes the rows as CSV: header `label,domain,<field names...>,<numeric
 * names...>,<multi-hot names...>` (the field that carries the domain id is
 * not repeated: it is the domain column), label 0/1, the domain id and the
 * categorical ids as integers, numeric values with 9 significant digits,
 * multi-hot ids joined by '|'. Written to a temporary file beside path, then
 * renamed over it. mml_csv_load with default options reads it back (the
 * domain column then becomes the last categorical field again; list numeric
 * and multi-hot columns to read those back as such). */
MML_API int mml_dataset_write_csv(const mml_dataset *ds, mml_ctx *ctx, const char *path);

/* ---------------------------------------------------------------- CSV */

/* The longest line the CSV reader accepts by default (bytes, without the line end). */
#define MML_CSV_MAX_LINE_DEFAULT (1 << 20)
/* The largest max_line_bytes option. */
#define MML_CSV_MAX_LINE_LIMIT (1 << 28)

/* Delimited text with a header row (line 1). Each column has a role:
 *   label      "0" or "1"
 *   domain     any value; D and the domain ids come from the training split:
 *              values that are exactly the integers 0 .. D-1 are used as they
 *              are, other values are numbered in sorted order (numerically if
 *              all are integers). A domain in validation or test that the
 *              training split lacks is a bad row. domain_column NULL or "":
 *              every row is in domain 0 ("all").
 *   categorical  any value, mapped through the field's vocabulary (built on
 *              the training split, unseen values -> the out-of-vocabulary id)
 *   numeric    a finite decimal number (strtod syntax, C locale)
 *   multi-hot  values separated by multihot_separator ("" = no value)
 *   ignored
 * Categorical fields: field_columns in that order if given (it may name the
 * domain column: the domain id then becomes that categorical field); if NULL,
 * every column without another role, in file order, followed by the domain
 * column when domain_as_field is set and its training values are exactly the
 * integers 0 .. D-1 (the MovieLens layout user,item,domain).
 *
 * Format: RFC 4180 quoting (a field in double quotes may hold the delimiter
 * and "" for a quote; no line breaks inside quotes), LF or CRLF line ends, an
 * optional UTF-8 byte order mark, blank lines ignored, the last line may lack
 * its line end. A line longer than max_line_bytes is a bad row (never a
 * crash). The files are read in chunks, never whole.
 *
 * Bad rows (wrong number of fields, a bad label, number or domain): by
 * default the first one stops the load with MML_EPARSE and the message
 * `FILE:LINE:COLUMN: field 'NAME': expected ..., got "..."` (LINE 1-based,
 * the header is line 1; COLUMN the 1-based field index). With skip_bad_rows
 * they are skipped and counted (mml_dataset_skipped_rows). A missing file is
 * MML_EIO, a missing column MML_ENOTFOUND, an empty file or a training file
 * without rows MML_EPARSE. */
typedef struct mml_csv_options {
    uint32_t struct_size;        /* set by mml_csv_options_init() */
    int32_t n_field_columns;
    const char *label_column;    /* "label" */
    const char *domain_column;   /* "domain"; NULL or "": one domain */
    const char *const *field_columns; /* NULL: default (see above) */
    const char *const *numeric_columns;
    const char *const *multihot_columns;
    const char *const *ignore_columns;
    int32_t n_numeric_columns;
    int32_t n_multihot_columns;
    int32_t n_ignore_columns;
    int32_t skip_bad_rows;       /* 0: the first bad row is an error */
    int32_t domain_as_field;     /* 1 */
    char multihot_separator;     /* '|' */
    char delimiter;              /* ',' (use '\t' for TSV) */
    char reserved[2];            /* 0 */
    int64_t max_line_bytes;      /* MML_CSV_MAX_LINE_DEFAULT; 1 .. MML_CSV_MAX_LINE_LIMIT */
} mml_csv_options;

/* ---------------------------------------------------------------- MovieLens */

typedef enum mml_domain_by {
    MML_DOMAIN_BY_GENDER = 0,
    MML_DOMAIN_BY_AGE = 1,
    MML_DOMAIN_BY_OCCUPATION = 2
} mml_domain_by;

/* The official MovieLens files, detected from the folder's contents:
 *   ML-100K: u.data (user TAB item TAB rating TAB timestamp), u.user
 *            (id|age|gender|occupation|zip), u.occupation (one name a line);
 *   ML-1M:   ratings.dat (user::item::rating::timestamp), users.dat
 *            (id::gender::age::occupation::zip).
 * Domains: gender F = 0, M = 1; age band <18, 18-24, 25-34, 35-44, 45-49,
 * 50-55, 56+ -> 0..6 (ML-1M's age codes 1, 18, 25, 35, 45, 50, 56 map the
 * same way); occupation: ML-100K the 0-based line of u.occupation (21),
 * ML-1M the code 0..20 (21). Label = rating >= label_min. Fields: user, item,
 * domain (categorical, in that order); user and item ids are the 0-based
 * ranks of the raw ids over all ratings; field sizes cover all three splits. */
typedef struct mml_movielens_options {
    uint32_t struct_size; /* set by mml_movielens_options_init() */
    int32_t domain_by;    /* MML_DOMAIN_BY_GENDER */
    const char *dir;      /* the folder holding the files; required */
    int32_t label_min;    /* 5 (label = rating >= label_min), 1..5 */
    int32_t reserved;     /* 0 */
    uint64_t split_seed;  /* 123 */
} mml_movielens_options;

/* ---------------------------------------------------------------- synthetic */

/* A synthetic multi-domain CTR data set (the built-in data set of the examples).
 *
 * Generative model. K = n_factors latent dimensions.
 *   user u:   p_u ~ N(0, I_K), bias b_u ~ N(0, bias_scale^2)
 *   item i:   q_i ~ N(0, I_K), bias c_i ~ N(0, bias_scale^2)
 *   domain d: offset a_d = offset_min + (offset_max - offset_min) d / (D - 1)
 *             (a_0 = offset_min when D = 1; different positive rates), a
 *             taste direction v_d ~ N(0, I_K) (a domain-specific item shift)
 *             and signs s_dk = (-1)^popcount(d AND (k + 1)) (a
 *             domain-specific user-item interaction: Walsh-Hadamard rows, so
 *             with K = 4 the patterns of domains 0..3 are mutually orthogonal)
 *   row:      domain d ~ Categorical(w), w_d proportional to 1 + d / 2
 *             (unequal domain sizes); user u and item i uniform;
 *             logit z = a_d + b_u + c_i
 *                     + shift_scale    * <v_d, q_i> / sqrt(K)
 *                     + shared_scale   * <p_u, q_i> / sqrt(K)
 *                     + domain_scale   * sum_k s_dk p_uk q_ik / sqrt(K)
 *             label ~ Bernoulli(sigmoid(z)).
 * The domain-specific interaction flips the sign of some user-item factor
 * products from one domain to another, so the best predictor differs by
 * domain: a shared model without per-domain capacity cannot fit all domains
 * at once, a per-domain adapter can. Fields: user, item, domain (categorical,
 * sizes n_users, n_items, D; no numeric fields); domain names "d0", "d1", ...
 * Split 60/20/20 per domain and label class as for MovieLens, with seed.
 * Everything is deterministic for (options, seed).
 * The defaults are sized for mml-train's demo (about a minute for three
 * variants and three seeds on two cores): 24,000 rows, 80 users and 40 items,
 * so every embedding row is seen often, and strong domain-specific terms
 * (shift_scale and domain_scale 2.0 against shared_scale 0.5), which
 * per-domain adapters capture and a shared tower learns only slowly. */
typedef struct mml_synthetic_options {
    uint32_t struct_size; /* set by mml_synthetic_options_init() */
    int32_t n_domains;    /* 4; 1 .. 1024 */
    int64_t n_rows;       /* 24000; >= 1 */
    int32_t n_users;      /* 80; >= 1 */
    int32_t n_items;      /* 40; >= 1 */
    uint64_t seed;        /* 1: the model, the rows and the split */
    int32_t n_factors;    /* 4; 1 .. 64 */
    int32_t reserved;     /* 0 */
    double shared_scale;  /* 0.5 */
    double domain_scale;  /* 2.0 */
    double shift_scale;   /* 2.0 */
    double bias_scale;    /* 0.5 */
    double offset_min;    /* -1.5: offset of domain 0 */
    double offset_max;    /* 0.0: offset of domain D-1 */
} mml_synthetic_options;

/* ---------------------------------------------------------------- batcher */

/* Cuts a data set into batches. Each epoch visits every selected row exactly
 * once: shuffle = 1 visits them in a permutation that depends only on
 * (seed, epoch); shuffle = 0 in row order. domain = -1 selects all rows
 * (batches mix domains), domain = d only the rows of domain d (stage 2 of
 * MoE-MLoRA). Rows are gathered into the batcher's own buffers (multi-hot
 * lists too, with offsets rebuilt from 0; an unshuffled batcher over every
 * domain hands out mml_dataset_view views instead); the data set
 * is never copied. The data set must outlive the batcher. */
typedef struct mml_batcher mml_batcher;

typedef struct mml_batcher_options {
    uint32_t struct_size; /* set by mml_batcher_options_init() */
    int32_t shuffle;      /* 1 */
    int64_t batch_size;   /* 1024; >= 1 */
    int32_t domain;       /* -1: all rows; else only that domain's rows */
    int32_t reserved;     /* 0 */
    uint64_t seed;        /* 1 */
} mml_batcher_options;

MML_API int mml_csv_options_init_sized(mml_csv_options *o, uint32_t struct_size);
#define mml_csv_options_init(o) mml_csv_options_init_sized((o), (uint32_t)sizeof(mml_csv_options))
/* Loads train_path (required) and val_path / test_path (each may be NULL: the
 * matching output is then set to NULL and may itself be NULL). All three
 * share the schema built on the training file. On failure every output is NULL. */
MML_API int mml_csv_load(mml_ctx *ctx, const mml_csv_options *o, const char *train_path,
                         const char *val_path, const char *test_path, mml_dataset **train,
                         mml_dataset **val, mml_dataset **test);

MML_API int mml_movielens_options_init_sized(mml_movielens_options *o, uint32_t struct_size);
#define mml_movielens_options_init(o) mml_movielens_options_init_sized((o), (uint32_t)sizeof(mml_movielens_options))
MML_API int mml_movielens_load(mml_ctx *ctx, const mml_movielens_options *o, mml_dataset **train,
                               mml_dataset **val, mml_dataset **test);

MML_API int mml_synthetic_options_init_sized(mml_synthetic_options *o, uint32_t struct_size);
#define mml_synthetic_options_init(o) mml_synthetic_options_init_sized((o), (uint32_t)sizeof(mml_synthetic_options))
MML_API int mml_synthetic_generate(mml_ctx *ctx, const mml_synthetic_options *o,
                                   mml_dataset **train, mml_dataset **val, mml_dataset **test);

MML_API int mml_batcher_options_init_sized(mml_batcher_options *o, uint32_t struct_size);
#define mml_batcher_options_init(o) mml_batcher_options_init_sized((o), (uint32_t)sizeof(mml_batcher_options))
/* o may be NULL for the defaults. The batcher starts in epoch 0. */
MML_API int mml_batcher_create(mml_batcher **out, mml_ctx *ctx, const mml_dataset *ds,
                               const mml_batcher_options *o);
MML_API void mml_batcher_destroy(mml_batcher *b);
/* Restarts at the first batch of the given epoch (a permutation that depends
 * only on seed and epoch). */
MML_API int mml_batcher_start_epoch(mml_batcher *b, uint64_t epoch);
/* 1: a batch in *out (valid until the next call on the batcher); 0: the epoch
 * is done; < 0: error. The last batch of an epoch may be short. */
MML_API int mml_batcher_next_sized(mml_batcher *b, mml_batch_view *out, uint32_t struct_size);
#define mml_batcher_next(b, out) mml_batcher_next_sized((b), (out), (uint32_t)sizeof(mml_batch_view))
/* Rows selected (all rows, or the domain's rows). */
MML_API int64_t mml_batcher_n_rows(const mml_batcher *b);
/* Batches per epoch. */
MML_API int64_t mml_batcher_n_batches(const mml_batcher *b);
/* The data set row indices of the last batch returned (n_rows of that batch
 * entries), or NULL before the first batch of an epoch. */
MML_API const int64_t *mml_batcher_batch_rows(const mml_batcher *b);

MML_END_DECLS

#endif
