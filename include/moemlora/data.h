/** @file
 * libmoemlora: data sets, loaders and the batcher.
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
 *
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
 *   - mml_csv_load: delimited text with a header row, roles per column
 *   - mml_movielens_load: the official ML-100K and ML-1M files
 *   - mml_synthetic_generate: a documented multi-domain generative model
 *
 * Splits (MovieLens and synthetic): per domain and per label class, the rows
 * are shuffled with the split seed; the first round(0.6 n) go to train, the
 * next round(0.2 n) to validation, the rest to test; then each split is
 * shuffled once. Deterministic for the seed.
 *
 * Strings and arrays that the accessors return are borrowed: the data set
 * owns them, the caller never frees them, and they stay valid until that data
 * set is destroyed. Fallible functions return 0 (MML_OK) or a negative MML_E*
 * code; the functions that take a context record a message in
 * mml_ctx_last_error().
 */
#ifndef MOEMLORA_DATA_H
#define MOEMLORA_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "view.h"

/** An immutable table of rows with its (shared) schema; see the file
 * description. Made by the loaders, released with mml_dataset_destroy(). */
typedef struct mml_dataset mml_dataset;

/* ---------------------------------------------------------------- data set */

MML_BEGIN_DECLS

/** Releases a data set (and its reference to the shared schema).
 * Every pointer obtained from it (names, values, CSR arrays, views) becomes
 * invalid; batchers and trainers that use it must be destroyed first, and it
 * must be destroyed before its context. NULL-safe.
 * @param ds the data set, or NULL */
MML_API void mml_dataset_destroy(mml_dataset *ds);

/** The number of rows.
 * @param ds the data set
 * @return the row count; 0 for a NULL data set */
MML_API int64_t mml_dataset_n_rows(const mml_dataset *ds);
/** The number of categorical fields per row.
 * @param ds the data set
 * @return the field count; 0 for a NULL data set */
MML_API int32_t mml_dataset_n_fields(const mml_dataset *ds);
/** The number of numeric values per row.
 * @param ds the data set
 * @return the numeric column count; 0 for a NULL data set */
MML_API int32_t mml_dataset_n_dense(const mml_dataset *ds);
/** D of the schema (the same for train, validation and test).
 * @param ds the data set
 * @return the number of domains; 0 for a NULL data set */
MML_API int32_t mml_dataset_n_domains(const mml_dataset *ds);
/** The cardinality of a categorical field: its ids lie in [0, size); the
 * size includes the out-of-vocabulary id if any.
 * @param ds the data set
 * @param field the field index, 0 .. n_fields - 1
 * @return the size; 0 for a NULL data set or a field out of range */
MML_API int32_t mml_dataset_field_size(const mml_dataset *ds, int32_t field);
/** The name of a categorical field.
 * @param ds the data set
 * @param field the field index, 0 .. n_fields - 1
 * @return a borrowed string, valid until ds is destroyed; NULL for a NULL
 *         data set or a field out of range */
MML_API const char *mml_dataset_field_name(const mml_dataset *ds, int32_t field);
/** The index of the field with that name.
 * @param ds the data set
 * @param name the field name (read during the call only)
 * @return the field index, or -1 (no such field, NULL arguments) */
MML_API int32_t mml_dataset_find_field(const mml_dataset *ds, const char *name);
/** The index of the categorical field that carries the domain id itself.
 * @param ds the data set
 * @return the field index, or -1 (no such field, NULL data set) */
MML_API int32_t mml_dataset_domain_field(const mml_dataset *ds);
/** The name of a domain: "F", "M"; "<18", "18-24", ...; occupation names;
 * synthetic "d0", "d1", ...; for CSV the domain column's values ("all" when
 * the file has no domain column).
 * @param ds the data set
 * @param domain the domain id, 0 .. D - 1
 * @return a borrowed string, valid until ds is destroyed; NULL for a NULL
 *         data set or a domain out of range */
MML_API const char *mml_dataset_domain_name(const mml_dataset *ds, int32_t domain);
/** Rows of this data set in that domain.
 * @param ds the data set
 * @param domain the domain id, 0 .. D - 1
 * @return the row count; 0 for a NULL data set or a domain out of range */
MML_API int64_t mml_dataset_domain_rows(const mml_dataset *ds, int32_t domain);
/** The name of a numeric column.
 * @param ds the data set
 * @param j the numeric column, 0 .. n_dense - 1
 * @return a borrowed string, valid until ds is destroyed; NULL for a NULL
 *         data set or j out of range */
MML_API const char *mml_dataset_dense_name(const mml_dataset *ds, int32_t j);
/** Rows the loader skipped as bad (mml_csv_options.skip_bad_rows).
 * @param ds the data set
 * @return the skipped row count; 0 otherwise and for a NULL data set */
MML_API int64_t mml_dataset_skipped_rows(const mml_dataset *ds);

/** The value of an id in a categorical field's vocabulary.
 *
 * Vocabularies. A categorical field of a CSV file maps the training split's
 * distinct values, sorted (numerically when every value is an integer,
 * bytewise otherwise), to ids 0 .. V-1; the out-of-vocabulary id is V and the
 * field size is V + 1. MovieLens user and item fields map the raw ids (as
 * decimal strings) to their ranks and have no out-of-vocabulary id. The field
 * that carries the domain id has no vocabulary: its ids are the domain ids
 * (names from mml_dataset_domain_name). Synthetic fields have no vocabulary.
 * Hashed CSV fields (mml_csv_options.hashed_columns) have none either: a
 * value's id is mml_hash_string(value, len, hash_seed, field size).
 * @param ds the data set
 * @param field the field index, 0 .. n_fields - 1
 * @param id the id
 * @return a borrowed string, valid until ds is destroyed; NULL for the
 *         out-of-vocabulary id, a field without vocabulary or bad arguments */
MML_API const char *mml_dataset_field_value(const mml_dataset *ds, int32_t field, int32_t id);
/** The id of a value in a categorical field's vocabulary.
 * @param ds the data set
 * @param field the field index, 0 .. n_fields - 1
 * @param value the value (read during the call only)
 * @return its id if known, else the out-of-vocabulary id if the field has
 *         one, else -1 (also -1 for bad arguments or no vocabulary) */
MML_API int32_t mml_dataset_field_lookup(const mml_dataset *ds, int32_t field, const char *value);
/** The field's out-of-vocabulary id.
 * @param ds the data set
 * @param field the field index, 0 .. n_fields - 1
 * @return the id, or -1 if the field has none (and for bad arguments) */
MML_API int32_t mml_dataset_field_oov(const mml_dataset *ds, int32_t field);

/** The number of multi-hot fields.
 *
 * Multi-hot fields (CSV only): the values of one cell are separated by the
 * inner separator and map through the field's own vocabulary (as for
 * categorical fields, with an out-of-vocabulary id, the last one). Row r's
 * ids are ids[offsets[r] .. offsets[r+1]).
 * @param ds the data set
 * @return the count; 0 for a NULL data set */
MML_API int32_t mml_dataset_n_multihot(const mml_dataset *ds);
/** The name of a multi-hot field.
 * @param ds the data set
 * @param m the multi-hot field, 0 .. n_multihot - 1
 * @return a borrowed string, valid until ds is destroyed; NULL for a NULL
 *         data set or m out of range */
MML_API const char *mml_dataset_multihot_name(const mml_dataset *ds, int32_t m);
/** The cardinality of a multi-hot field: its ids lie in [0, size), the
 * out-of-vocabulary id (size - 1) included.
 * @param ds the data set
 * @param m the multi-hot field, 0 .. n_multihot - 1
 * @return the size; 0 for a NULL data set or m out of range */
MML_API int32_t mml_dataset_multihot_size(const mml_dataset *ds, int32_t m);
/** The value of an id in a multi-hot field's vocabulary.
 * @param ds the data set
 * @param m the multi-hot field, 0 .. n_multihot - 1
 * @param id the id
 * @return a borrowed string, valid until ds is destroyed; NULL for the
 *         out-of-vocabulary id or bad arguments */
MML_API const char *mml_dataset_multihot_value(const mml_dataset *ds, int32_t m, int32_t id);
/** The CSR arrays of multi-hot field m. Both are borrowed: owned by the data
 * set and valid until it is destroyed. Sets no error message (no context).
 * @param ds the data set
 * @param m the multi-hot field, 0 .. n_multihot - 1
 * @param[out] offsets receives the offsets (n_rows + 1 entries, from 0)
 * @param[out] ids receives the ids; NULL when no row has a value
 * @return MML_OK; MML_EINVAL for a NULL argument, MML_ERANGE for m out of
 *         range. On failure *offsets and *ids are left unchanged. */
MML_API int mml_dataset_multihot_csr(const mml_dataset *ds, int32_t m, const int64_t **offsets,
                                     const int32_t **ids);
/** The ids of multi-hot field m in one row. Sets no error message (no context).
 * @param ds the data set
 * @param m the multi-hot field, 0 .. n_multihot - 1
 * @param row the row, 0 .. n_rows - 1
 * @param[out] ids receives a borrowed pointer to the row's *n ids, valid
 *             until ds is destroyed (NULL when no row of the field has a value)
 * @param[out] n receives the number of ids (0 for an empty list)
 * @return MML_OK; MML_EINVAL for a NULL argument, MML_ERANGE for m or row
 *         out of range. On failure *ids and *n are left unchanged. */
MML_API int mml_dataset_multihot_row(const mml_dataset *ds, int32_t m, int64_t row,
                                     const int32_t **ids, int64_t *n);

/** A view of the contiguous rows [start, start + count), no copy. The view
 * points into the data set and is valid until the data set is destroyed;
 * its multi-hot fields point into the data set's CSR arrays (offsets
 * starting at row start's entry, so they may start above 0). Use the
 * mml_dataset_view() macro. Sets no error message (no context).
 * @param ds the data set
 * @param start the first row, 0 .. n_rows
 * @param count the number of rows, 0 .. n_rows - start
 * @param[out] out receives the view: struct_size bytes written, and
 *             out->struct_size set to struct_size
 * @param struct_size the caller's sizeof(mml_batch_view)
 * @return MML_OK; MML_EINVAL for a NULL ds or out, MML_ERANGE for rows
 *         outside the data set, MML_EVERSION (nothing written) for a size
 *         that no release produced. On failure *out is not written. */
MML_API int mml_dataset_view_sized(const mml_dataset *ds, int64_t start, int64_t count,
                                   mml_batch_view *out, uint32_t struct_size);
/** mml_dataset_view_sized() with the caller's sizeof(mml_batch_view), so
 * that a newer library never writes past an older application's struct.
 * @param ds the data set
 * @param start the first row
 * @param count the number of rows
 * @param out the view to fill */
#define mml_dataset_view(ds, start, count, out)                                                  \
    mml_dataset_view_sized((ds), (start), (count), (out), (uint32_t)sizeof(mml_batch_view))

/** Writes the rows as CSV: header `label,domain,<field names...>,<numeric
 * names...>,<multi-hot names...>` (the field that carries the domain id is
 * not repeated: it is the domain column), label 0/1, the domain id and the
 * categorical ids as integers, numeric values with 9 significant digits,
 * multi-hot ids joined by '|'. Written to a temporary file beside path, then
 * renamed over it, so on failure path is untouched (and the temporary file
 * removed). mml_csv_load with default options reads it back (the
 * domain column then becomes the last categorical field again; list numeric
 * and multi-hot columns to read those back as such).
 * @param ds the data set
 * @param ctx the context for memory and the error message (any context)
 * @param path the file to write (read during the call only)
 * @return MML_OK; MML_EINVAL for a NULL ctx (no message), a NULL ds, a NULL
 *         or empty path, or a field other than the domain field named
 *         "label" or "domain"; MML_EIO when the temporary file cannot be
 *         created, written, synced, closed or renamed; MML_ENOMEM. */
MML_API int mml_dataset_write_csv(const mml_dataset *ds, mml_ctx *ctx, const char *path);

/* ---------------------------------------------------------------- CSV */

/** The longest line the CSV reader accepts by default (bytes, without the line end). */
#define MML_CSV_MAX_LINE_DEFAULT (1 << 20)
/** The largest max_line_bytes option. */
#define MML_CSV_MAX_LINE_LIMIT (1 << 28)

/** Options of mml_csv_load(): delimited text with a header row (line 1).
 *
 * Initialise with mml_csv_options_init(). mml_csv_load copies the struct and
 * reads the strings and lists it points to during the call only.
 *
 * Each column has a role:
 *   - label: "0" or "1"
 *   - domain: any value; D and the domain ids come from the training split:
 *     values that are exactly the integers 0 .. D-1 are used as they
 *     are, other values are numbered in sorted order (numerically if
 *     all are integers). A domain in validation or test that the
 *     training split lacks is a bad row. domain_column NULL or "":
 *     every row is in domain 0 ("all").
 *   - categorical: any value, mapped through the field's vocabulary (built on
 *     the training split, unseen values -> the out-of-vocabulary id)
 *   - hashed categorical (hashed_columns): a categorical field without
 *     vocabulary whose value (the cell's bytes after unquoting) maps to
 *     mml_hash_string(value, len, hash_seed, buckets), so the field size is
 *     the column's bucket count and every value has an id (no
 *     out-of-vocabulary id); it keeps its place in field order
 *   - numeric: a finite decimal number (strtod syntax, C locale)
 *   - multi-hot: values separated by multihot_separator ("" = no value)
 *   - ignored
 *
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
    /** Set by mml_csv_options_init(). */
    uint32_t struct_size;
    /** Entries in field_columns (used when field_columns is not NULL). */
    int32_t n_field_columns;
    /** The label column; default "label". */
    const char *label_column;
    /** The domain column; default "domain"; NULL or "": one domain. */
    const char *domain_column;
    /** The categorical columns, in field order; NULL: the default (see above). */
    const char *const *field_columns;
    /** The numeric columns (n_numeric_columns entries), in order; default none. */
    const char *const *numeric_columns;
    /** The multi-hot columns (n_multihot_columns entries), in order; default none. */
    const char *const *multihot_columns;
    /** Columns to ignore (n_ignore_columns entries); default none. */
    const char *const *ignore_columns;
    /** Entries in numeric_columns; default 0. */
    int32_t n_numeric_columns;
    /** Entries in multihot_columns; default 0. */
    int32_t n_multihot_columns;
    /** Entries in ignore_columns; default 0. */
    int32_t n_ignore_columns;
    /** Default 0: the first bad row is an error; nonzero: skip and count bad rows. */
    int32_t skip_bad_rows;
    /** Default 1: append the domain column as the last categorical field (see above). */
    int32_t domain_as_field;
    /** The separator of multi-hot values; default '|'. */
    char multihot_separator;
    /** The column delimiter; default ',' (use '\\t' for TSV). */
    char delimiter;
    /** 0; reserved for later releases. */
    char reserved[2];
    /** The longest line, in bytes; default MML_CSV_MAX_LINE_DEFAULT; 1 .. MML_CSV_MAX_LINE_LIMIT. */
    int64_t max_line_bytes;
    /** (1.2) Categorical columns to hash instead of building a vocabulary
     * (n_hashed_columns entries; default none). Each must be a categorical
     * column: listed in field_columns when that is given, else a column
     * without another role; not the domain column. */
    const char *const *hashed_columns;
    /** (1.2) The bucket count of each hashed column (n_hashed_columns
     * entries), 1 .. 2^31 - 1: its field size. */
    const int64_t *hashed_buckets;
    /** (1.2) Entries in hashed_columns and hashed_buckets; default 0. */
    int32_t n_hashed_columns;
    /** 0; reserved for later releases. */
    int32_t reserved2;
    /** (1.2) The seed of every hashed column; default 0. A value s maps to
     * mml_hash_string(s, len, hash_seed, buckets). */
    uint64_t hash_seed;
} mml_csv_options;

/* ---------------------------------------------------------------- MovieLens */

/** What makes the domains of a MovieLens data set (mml_movielens_options.domain_by). */
typedef enum mml_domain_by {
    /** Gender: F = 0, M = 1 (D = 2). */
    MML_DOMAIN_BY_GENDER = 0,
    /** Age band: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ -> 0..6 (D = 7). */
    MML_DOMAIN_BY_AGE = 1,
    /** Occupation (21 in the official files). */
    MML_DOMAIN_BY_OCCUPATION = 2
} mml_domain_by;

/** Options of mml_movielens_load(): the official MovieLens files, detected
 * from the folder's contents.
 *
 *   - ML-100K: u.data (user TAB item TAB rating TAB timestamp), u.user
 *     (id|age|gender|occupation|zip), u.occupation (one name a line);
 *   - ML-1M: ratings.dat (user::item::rating::timestamp), users.dat
 *     (id::gender::age::occupation::zip).
 *
 * Domains: gender F = 0, M = 1; age band <18, 18-24, 25-34, 35-44, 45-49,
 * 50-55, 56+ -> 0..6 (ML-1M's age codes 1, 18, 25, 35, 45, 50, 56 map the
 * same way); occupation: ML-100K the 0-based line of u.occupation (21),
 * ML-1M the code 0..20 (21). Label = rating >= label_min. Fields: user, item,
 * domain (categorical, in that order); user and item ids are the 0-based
 * ranks of the raw ids over all ratings; field sizes cover all three splits.
 *
 * Initialise with mml_movielens_options_init(); mml_movielens_load copies
 * the struct and reads dir during the call only. */
typedef struct mml_movielens_options {
    /** Set by mml_movielens_options_init(). */
    uint32_t struct_size;
    /** An mml_domain_by value; default MML_DOMAIN_BY_GENDER. */
    int32_t domain_by;
    /** The folder holding the files; required (default NULL). */
    const char *dir;
    /** Default 5 (label = rating >= label_min); 1..5. */
    int32_t label_min;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** The seed of the 60/20/20 split; default 123. */
    uint64_t split_seed;
} mml_movielens_options;

/* ---------------------------------------------------------------- synthetic */

/** Options of mml_synthetic_generate(): a synthetic multi-domain CTR data
 * set (the built-in data set of the examples).
 *
 * Generative model. K = n_factors latent dimensions.
 * @verbatim
  user u:   p_u ~ N(0, I_K), bias b_u ~ N(0, bias_scale^2)
  item i:   q_i ~ N(0, I_K), bias c_i ~ N(0, bias_scale^2)
  domain d: offset a_d = offset_min + (offset_max - offset_min) d / (D - 1)
            (a_0 = offset_min when D = 1; different positive rates), a
            taste direction v_d ~ N(0, I_K) (a domain-specific item shift)
            and signs s_dk = (-1)^popcount(d AND (k + 1)) (a
            domain-specific user-item interaction: Walsh-Hadamard rows, so
            with K = 4 the patterns of domains 0..3 are mutually orthogonal)
  row:      domain d ~ Categorical(w), w_d proportional to 1 + d / 2
            (unequal domain sizes); user u and item i uniform;
            logit z = a_d + b_u + c_i
                    + shift_scale    * <v_d, q_i> / sqrt(K)
                    + shared_scale   * <p_u, q_i> / sqrt(K)
                    + domain_scale   * sum_k s_dk p_uk q_ik / sqrt(K)
            label ~ Bernoulli(sigmoid(z)).
   @endverbatim
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
 * per-domain adapters capture and a shared tower learns only slowly.
 *
 * Initialise with mml_synthetic_options_init(); mml_synthetic_generate
 * copies the struct. */
typedef struct mml_synthetic_options {
    /** Set by mml_synthetic_options_init(). */
    uint32_t struct_size;
    /** D; default 4; 1 .. 1024. */
    int32_t n_domains;
    /** Rows before the split; default 24000; 1 .. 2^40. */
    int64_t n_rows;
    /** Default 80; >= 1. */
    int32_t n_users;
    /** Default 40; >= 1. */
    int32_t n_items;
    /** Default 1: seeds the model, the rows and the split. */
    uint64_t seed;
    /** K; default 4; 1 .. 64. */
    int32_t n_factors;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** Default 0.5; finite. */
    double shared_scale;
    /** Default 2.0; finite. */
    double domain_scale;
    /** Default 2.0; finite. */
    double shift_scale;
    /** Default 0.5; finite. */
    double bias_scale;
    /** Default -1.5: offset of domain 0; finite. */
    double offset_min;
    /** Default 0.0: offset of domain D-1; finite. */
    double offset_max;
} mml_synthetic_options;

/* ---------------------------------------------------------------- arrays */

/** Since 1.3: a data set held in caller arrays, for mml_dataset_from_arrays()
 * (language bindings, and services that already hold their rows in memory).
 * Initialise with mml_arrays_init(), then set the pointers and counts.
 *
 * Every field is categorical with ids given directly: field f of row r is
 * `ids[r * ids_row_stride + f]`, in [0, field_sizes[f]). Rows of raw values
 * for mml_session_predict_raw() and mml-predict are then the ids written as
 * canonical integers, under the column names field_names, "domain" (unless a
 * field carries the domain: see domain_field), dense_names and "label". The
 * arrays are read during the call only: the data set keeps its own copy. */
typedef struct mml_arrays {
    /** Set by mml_arrays_init(). */
    uint32_t struct_size;
    /** F categorical fields; 1 .. 4096. */
    int32_t n_fields;
    /** Rows; >= 1. */
    int64_t n_rows;
    /** n_rows x F ids (see above). */
    const int32_t *ids;
    /** Elements from one row of ids to the next; 0 (default) means F. */
    int64_t ids_row_stride;
    /** F vocabulary sizes, each 1 .. INT32_MAX; NULL (default): each
     *  field's largest id + 1. Give them when several data sets (training,
     *  validation, serving) must agree on the sizes. */
    const int64_t *field_sizes;
    /** F distinct non-empty column names; NULL (default): "f0", "f1", ... */
    const char *const *field_names;
    /** n_rows domain ids in [0, n_domains); NULL (default): the values of
     *  the field domain_field. */
    const int32_t *domain;
    /** n_rows labels, each exactly 0 or 1. */
    const float *labels;
    /** D >= 1; 0 (default): the largest domain id + 1. */
    int32_t n_domains;
    /** -1 (default): no field carries the domain, and the domain is the
     *  column "domain"; else the field whose value is the row's domain id
     *  (as the domain field of MovieLens and the synthetic set: its size is
     *  then D, and it must equal domain[r] where both are given). */
    int32_t domain_field;
    /** D distinct non-empty domain names; NULL (default): "d0", "d1", ... */
    const char *const *domain_names;
    /** Numeric values per row; default 0. */
    int32_t n_dense;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** n_rows x n_dense finite values, value j of row r at
     *  `dense[r * dense_row_stride + j]`; may be NULL when n_dense is 0. */
    const float *dense;
    /** Elements from one row of dense to the next; 0 (default) means n_dense. */
    int64_t dense_row_stride;
    /** n_dense distinct non-empty column names; NULL (default): "x0", "x1", ... */
    const char *const *dense_names;
} mml_arrays;

/* ---------------------------------------------------------------- batcher */

/** Cuts a data set into batches. Each epoch visits every selected row exactly
 * once: shuffle = 1 visits them in a permutation that depends only on
 * (seed, epoch); shuffle = 0 in row order. domain = -1 selects all rows
 * (batches mix domains), domain = d only the rows of domain d (stage 2 of
 * MoE-MLoRA). Rows are gathered into the batcher's own buffers (multi-hot
 * lists too, with offsets rebuilt from 0; an unshuffled batcher over every
 * domain hands out mml_dataset_view views instead); the data set
 * is never copied. The data set and the context must outlive the batcher,
 * which is used by one thread at a time (with its context). */
typedef struct mml_batcher mml_batcher;

/** Options of mml_batcher_create(); initialise with mml_batcher_options_init(). */
typedef struct mml_batcher_options {
    /** Set by mml_batcher_options_init(). */
    uint32_t struct_size;
    /** Default 1: a seeded permutation per epoch; 0: row order. */
    int32_t shuffle;
    /** Rows per batch; default 1024; 1 .. 2^31 - 1. */
    int64_t batch_size;
    /** Default -1: all rows; else only that domain's rows (0 .. D - 1). */
    int32_t domain;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** The shuffle seed; default 1. */
    uint64_t seed;
} mml_batcher_options;

/** Fills *o with the defaults of every field.
 * @param[out] o the options to fill: struct_size bytes written, and
 *             o->struct_size set to struct_size
 * @param struct_size the caller's sizeof(mml_csv_options)
 * @return MML_OK; MML_EINVAL for a NULL o; MML_EVERSION (nothing written)
 *         for a size that no release produced. */
MML_API int mml_csv_options_init_sized(mml_csv_options *o, uint32_t struct_size);
/** mml_csv_options_init_sized() with the caller's sizeof(mml_csv_options),
 * so that a newer library never writes past an older application's struct.
 * @param o the options to fill */
#define mml_csv_options_init(o) mml_csv_options_init_sized((o), (uint32_t)sizeof(mml_csv_options))
/** Loads delimited text files (see mml_csv_options for the format and the
 * roles). Loads train_path (required) and val_path / test_path (each may be
 * NULL: the matching output is then set to NULL and may itself be NULL). All
 * three share the schema built on the training file. The paths and the
 * options are read during the call only.
 * @param ctx the context; must outlive the data sets
 * @param o the options, or NULL for the defaults
 * @param train_path the training file; required
 * @param val_path the validation file, or NULL
 * @param test_path the test file, or NULL
 * @param[out] train receives the training set
 * @param[out] val receives the validation set (NULL without val_path)
 * @param[out] test receives the test set (NULL without test_path)
 * @return MML_OK, and the caller owns the new data sets (release each with
 *         mml_dataset_destroy()); on failure every output is NULL, and:
 *         MML_EINVAL for a NULL ctx (no message), a NULL train or train_path,
 *         a NULL output whose path is given, or a bad option (empty
 *         label_column, a bad delimiter or multihot_separator,
 *         max_line_bytes out of range, a bad column list, a column given two
 *         roles or listed twice, a hashed column that is not a categorical
 *         column or a bucket count out of range); MML_EVERSION for an o->struct_size that no release
 *         produced; MML_EIO when a file cannot be opened or read;
 *         MML_ENOTFOUND for a column missing from a header; MML_EPARSE for an
 *         empty file, a bad header (quoting, duplicate names), a bad row
 *         (unless skip_bad_rows) or a training file without rows;
 *         MML_ENOMEM. */
MML_API int mml_csv_load(mml_ctx *ctx, const mml_csv_options *o, const char *train_path,
                         const char *val_path, const char *test_path, mml_dataset **train,
                         mml_dataset **val, mml_dataset **test);

/** (1.2) Splits one line (without its line end) into cells exactly as the
 * CSV reader does: RFC 4180 quoting (a cell in double quotes may hold the
 * delimiter and "" for a quote; the quotes are removed), no line breaks
 * inside quotes, an empty line is one empty cell. A program that serves raw
 * rows (mml_session_predict_raw()) splits its lines with this, so they mean
 * what they meant to the reader at training time. Takes no context: no
 * message, no allocation, safe from many threads at once.
 * @param line the line (len bytes; may be NULL when len is 0)
 * @param len its length in bytes
 * @param delimiter the column delimiter (not NUL, '"', LF or CR); a
 *        model's is mml_session_delimiter()
 * @param max_cells the most cells to split out, 0 .. 2^31 - 2
 * @param[out] cells max_cells pointers, each to a cell's first byte, into
 *        line (unquoted cells) or scratch (quoted ones); not NUL-terminated
 * @param[out] cell_lens max_cells lengths
 * @param scratch len bytes for the unescaped quoted cells; cells point into
 *        it, so it must live as long as they are used
 * @param[out] bad_column receives the 1-based column of a quoting error, 0
 *        otherwise (may be NULL)
 * @return the number of cells (>= 1); max_cells + 1 when the line has more
 *         cells than max_cells (only the first max_cells are written);
 *         MML_EPARSE for an unterminated quoted cell or a character after a
 *         closing quote other than the delimiter (*bad_column set);
 *         MML_EINVAL for NULL arrays, a bad delimiter or max_cells out of
 *         range. */
MML_API int64_t mml_csv_split_line(const char *line, size_t len, char delimiter,
                                   int64_t max_cells, const char **cells, size_t *cell_lens,
                                   char *scratch, int32_t *bad_column);

/** Fills *o with the defaults of every field (dir NULL).
 * @param[out] o the options to fill: struct_size bytes written, and
 *             o->struct_size set to struct_size
 * @param struct_size the caller's sizeof(mml_movielens_options)
 * @return MML_OK; MML_EINVAL for a NULL o; MML_EVERSION (nothing written)
 *         for a size that no release produced. */
MML_API int mml_movielens_options_init_sized(mml_movielens_options *o, uint32_t struct_size);
/** mml_movielens_options_init_sized() with the caller's
 * sizeof(mml_movielens_options), so that a newer library never writes past
 * an older application's struct.
 * @param o the options to fill */
#define mml_movielens_options_init(o) mml_movielens_options_init_sized((o), (uint32_t)sizeof(mml_movielens_options))
/** Loads ML-100K or ML-1M from o->dir (see mml_movielens_options) and splits
 * it 60/20/20 per domain and label class with o->split_seed.
 * @param ctx the context; must outlive the data sets
 * @param o the options (read during the call only), or NULL for the
 *          defaults; dir has no default, so NULL fails with MML_EINVAL
 * @param[out] train receives the training set
 * @param[out] val receives the validation set
 * @param[out] test receives the test set
 * @return MML_OK, and the caller owns the three new data sets (release each
 *         with mml_dataset_destroy()); on failure every output is NULL, and:
 *         MML_EINVAL for a NULL ctx (no message) or output, a NULL or empty dir,
 *         domain_by or label_min out of range; MML_EVERSION for an
 *         o->struct_size that no release produced; MML_ENOTFOUND when dir
 *         holds neither u.data nor ratings.dat; MML_EIO when a file cannot be
 *         opened or read (e.g. a missing user or occupation file); MML_EPARSE
 *         for a malformed or overlong line, no ratings, a user listed twice
 *         or a rating user missing from the user file; MML_ENOMEM. */
MML_API int mml_movielens_load(mml_ctx *ctx, const mml_movielens_options *o, mml_dataset **train,
                               mml_dataset **val, mml_dataset **test);

/** Fills *o with the defaults of every field.
 * @param[out] o the options to fill: struct_size bytes written, and
 *             o->struct_size set to struct_size
 * @param struct_size the caller's sizeof(mml_synthetic_options)
 * @return MML_OK; MML_EINVAL for a NULL o; MML_EVERSION (nothing written)
 *         for a size that no release produced. */
MML_API int mml_synthetic_options_init_sized(mml_synthetic_options *o, uint32_t struct_size);
/** mml_synthetic_options_init_sized() with the caller's
 * sizeof(mml_synthetic_options), so that a newer library never writes past
 * an older application's struct.
 * @param o the options to fill */
#define mml_synthetic_options_init(o) mml_synthetic_options_init_sized((o), (uint32_t)sizeof(mml_synthetic_options))
/** Generates the synthetic data set (see mml_synthetic_options) and splits it
 * 60/20/20 per domain and label class with o->seed.
 * @param ctx the context; must outlive the data sets
 * @param o the options, or NULL for the defaults (read during the call only)
 * @param[out] train receives the training set
 * @param[out] val receives the validation set
 * @param[out] test receives the test set
 * @return MML_OK, and the caller owns the three new data sets (release each
 *         with mml_dataset_destroy()); on failure every output is NULL, and:
 *         MML_EINVAL for a NULL ctx (no message) or output, or a size out of
 *         range; MML_EVERSION for an o->struct_size that no release
 *         produced; MML_ENONFINITE for a scale or offset that is not finite;
 *         MML_ENOMEM. */
MML_API int mml_synthetic_generate(mml_ctx *ctx, const mml_synthetic_options *o,
                                   mml_dataset **train, mml_dataset **val, mml_dataset **test);

/** Fills *a with the defaults of every field (since 1.3): no rows, no
 * arrays, domain_field -1.
 * @param[out] a the struct to fill: struct_size bytes written, and
 *             a->struct_size set to struct_size
 * @param struct_size the caller's sizeof(mml_arrays)
 * @return MML_OK; MML_EINVAL for a NULL a; MML_EVERSION (nothing written)
 *         for a size that no release produced. */
MML_API int mml_arrays_init_sized(mml_arrays *a, uint32_t struct_size);
/** mml_arrays_init_sized() with the caller's sizeof(mml_arrays), so that a
 * newer library never writes past an older application's struct.
 * @param a the struct to fill */
#define mml_arrays_init(a) mml_arrays_init_sized((a), (uint32_t)sizeof(mml_arrays))
/** Makes a data set from caller arrays (since 1.3; see mml_arrays). The data
 * set copies the rows; the arrays are read during the call only.
 * @param ctx the context; must outlive the data set
 * @param a the arrays
 * @param[out] out receives the data set, owned by the caller (release with
 *             mml_dataset_destroy()); NULL on failure
 * @return MML_OK; MML_EINVAL for a NULL ctx (no message), a, out, ids or
 *         labels, a count out of range, a row stride below the row's width,
 *         a name that is empty, NULL or used twice, an id outside its
 *         field's size, a domain outside [0, D) or different from the domain
 *         field's value, or a label other than 0 and 1 (the message names the
 *         row and field); MML_ENONFINITE for a non-finite numeric value (row
 *         and column named); MML_EVERSION for an a->struct_size that no
 *         release produced; MML_ENOMEM. */
MML_API int mml_dataset_from_arrays(mml_ctx *ctx, const mml_arrays *a, mml_dataset **out);
/** Splits a data set 60/20/20 into training, validation and test rows, per
 * domain and label class, with a seeded shuffle (since 1.3): the split the
 * loaders and the synthetic generator make. The three share ds's schema.
 * @param ctx the context that receives the messages; the new data sets
 *        belong to ds's context, which must outlive them
 * @param ds the data set to split (not changed)
 * @param seed the shuffle's seed
 * @param[out] train receives the training rows
 * @param[out] val receives the validation rows
 * @param[out] test receives the test rows
 * @return MML_OK, and the caller owns the three new data sets; on failure
 *         every output is NULL, and: MML_EINVAL for a NULL ctx (no message),
 *         ds or output; MML_ENOMEM. */
MML_API int mml_dataset_split(mml_ctx *ctx, const mml_dataset *ds, uint64_t seed,
                              mml_dataset **train, mml_dataset **val, mml_dataset **test);

/** Fills *o with the defaults of every field.
 * @param[out] o the options to fill: struct_size bytes written, and
 *             o->struct_size set to struct_size
 * @param struct_size the caller's sizeof(mml_batcher_options)
 * @return MML_OK; MML_EINVAL for a NULL o; MML_EVERSION (nothing written)
 *         for a size that no release produced. */
MML_API int mml_batcher_options_init_sized(mml_batcher_options *o, uint32_t struct_size);
/** mml_batcher_options_init_sized() with the caller's
 * sizeof(mml_batcher_options), so that a newer library never writes past an
 * older application's struct.
 * @param o the options to fill */
#define mml_batcher_options_init(o) mml_batcher_options_init_sized((o), (uint32_t)sizeof(mml_batcher_options))
/** Creates a batcher over ds (see mml_batcher). The options are copied; ds
 * is borrowed and must outlive the batcher, as must ctx. The batcher starts
 * in epoch 0.
 * @param[out] out receives the batcher, owned by the caller (release with
 *             mml_batcher_destroy()); NULL on failure
 * @param ctx the context
 * @param ds the data set
 * @param o the options, or NULL for the defaults
 * @return MML_OK; MML_EINVAL for a NULL ctx (no message), out or ds, or a
 *         batch_size out of range; MML_EVERSION for an o->struct_size that no
 *         release produced; MML_ERANGE for a domain not in -1 .. D - 1;
 *         MML_ENOMEM. */
MML_API int mml_batcher_create(mml_batcher **out, mml_ctx *ctx, const mml_dataset *ds,
                               const mml_batcher_options *o);
/** Releases a batcher; the batches and row lists it handed out become
 * invalid. The data set is not touched. NULL-safe.
 * @param b the batcher, or NULL */
MML_API void mml_batcher_destroy(mml_batcher *b);
/** Restarts at the first batch of the given epoch (a permutation that depends
 * only on seed and epoch). Invalidates the last batch handed out.
 * @param b the batcher
 * @param epoch the epoch number
 * @return MML_OK; MML_EINVAL for a NULL b (no message). */
MML_API int mml_batcher_start_epoch(mml_batcher *b, uint64_t epoch);
/** Hands out the next batch of the epoch. The last batch of an epoch may be
 * short; once the epoch is done every call returns 0 until
 * mml_batcher_start_epoch(). Use the mml_batcher_next() macro.
 * @param b the batcher
 * @param[out] out receives the batch (struct_size bytes written, and
 *             out->struct_size set to struct_size); it points into the
 *             batcher's buffers (or the data set) and is valid until the next
 *             call on the batcher or its destruction. Not written unless 1
 *             is returned.
 * @param struct_size the caller's sizeof(mml_batch_view)
 * @return 1: a batch in *out; 0: the epoch is done; MML_EINVAL for a NULL b
 *         (no message) or out; MML_EVERSION for a size that no release
 *         produced; MML_ENOMEM (gathering multi-hot lists); MML_ESTATE if an
 *         unshuffled batcher cannot view its data set (internal error). */
MML_API int mml_batcher_next_sized(mml_batcher *b, mml_batch_view *out, uint32_t struct_size);
/** mml_batcher_next_sized() with the caller's sizeof(mml_batch_view), so
 * that a newer library never writes past an older application's struct.
 * @param b the batcher
 * @param out the batch view to fill */
#define mml_batcher_next(b, out) mml_batcher_next_sized((b), (out), (uint32_t)sizeof(mml_batch_view))
/** Rows selected (all rows, or the domain's rows).
 * @param b the batcher
 * @return the row count; 0 for a NULL batcher */
MML_API int64_t mml_batcher_n_rows(const mml_batcher *b);
/** Batches per epoch.
 * @param b the batcher
 * @return ceil(n_rows / batch_size); 0 for a NULL batcher */
MML_API int64_t mml_batcher_n_batches(const mml_batcher *b);
/** The data set row indices of the last batch returned.
 * @param b the batcher
 * @return a borrowed array of that batch's n_rows entries, owned by the
 *         batcher and valid until the next call on it or its destruction;
 *         NULL before the first batch of an epoch or for a NULL batcher */
MML_API const int64_t *mml_batcher_batch_rows(const mml_batcher *b);

MML_END_DECLS

#endif
