/* Data sets from caller arrays (mml_dataset_from_arrays) and the public split. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "data/data_internal.h"

int mml_arrays_init_sized(mml_arrays *out, uint32_t struct_size)
{
    mml_arrays full;
    memset(&full, 0, sizeof full);
    full.domain_field = -1;
    return mml__init_versioned(out, &full, sizeof full, struct_size, MML__OLDER_SIZES_mml_arrays);
}

/* names[i] or the default prefix + i, duplicated into *dst. */
static int set_name(mml_ctx *ctx, char **dst, const char *const *names, int32_t i,
                    const char *prefix, const char *what)
{
    char buf[32];
    const char *nm = buf;
    if (names) {
        nm = names[i];
        if (!nm || !nm[0])
            return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: %s name %d is %s", what,
                              (int)i, nm ? "empty" : "NULL");
    } else {
        snprintf(buf, sizeof buf, "%s%d", prefix, (int)i);
    }
    if (!(*dst = mml__strdup(ctx, nm)))
        return mml__error(ctx, MML_ENOMEM, "dataset_from_arrays: out of memory");
    return MML_OK;
}

/* Column names must be distinct: the session binds raw rows by name. */
static int check_distinct(mml_ctx *ctx, char *const *names, int32_t n, const char *extra,
                          const char *what)
{
    for (int32_t i = 0; i < n; i++) {
        if (extra && !strcmp(names[i], extra))
            return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: %s name '%s' is also the "
                              "name of the %s column", what, names[i], extra);
        for (int32_t j = 0; j < i; j++)
            if (!strcmp(names[i], names[j]))
                return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: %s name '%s' is used "
                                  "twice (%d and %d)", what, names[i], (int)j, (int)i);
    }
    return MML_OK;
}

/* Checks every value and fills sizes and D where the caller left them to us. */
static int scan(mml_ctx *ctx, const mml_arrays *a, int64_t ids_stride, int64_t dense_stride,
                int64_t *sizes, int32_t *D)
{
    const int32_t F = a->n_fields;
    for (int32_t f = 0; f < F; f++) {
        sizes[f] = a->field_sizes ? a->field_sizes[f] : 1;
        if (sizes[f] < 1 || sizes[f] > INT32_MAX)
            return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: field %d has size %lld "
                              "(1 .. %d)", (int)f, (long long)sizes[f], INT32_MAX);
    }
    int32_t max_domain = 0;
    for (int64_t r = 0; r < a->n_rows; r++) {
        const int32_t *row = a->ids + r * ids_stride;
        for (int32_t f = 0; f < F; f++) {
            int32_t id = row[f];
            if (id < 0 || (a->field_sizes && id >= sizes[f]))
                return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: row %lld, field %d: id "
                                  "%d outside [0, %lld)", (long long)r, (int)f, (int)id,
                                  (long long)sizes[f]);
            if (!a->field_sizes && id >= sizes[f])
                sizes[f] = (int64_t)id + 1;
        }
        int32_t d = a->domain ? a->domain[r] : row[a->domain_field];
        if (d < 0 || (a->n_domains > 0 && d >= a->n_domains))
            return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: row %lld: domain %d outside "
                              "[0, %d)", (long long)r, (int)d, (int)a->n_domains);
        if (a->domain && a->domain_field >= 0 && row[a->domain_field] != d)
            return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: row %lld: domain %d, but the "
                              "domain field %d holds %d", (long long)r, (int)d,
                              (int)a->domain_field, (int)row[a->domain_field]);
        if (d > max_domain)
            max_domain = d;
        float y = a->labels[r];
        if (y != 0.0f && y != 1.0f)
            return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: row %lld: label %g is "
                              "neither 0 nor 1", (long long)r, (double)y);
        for (int32_t j = 0; j < a->n_dense; j++)
            if (!isfinite(a->dense[r * dense_stride + j]))
                return mml__error(ctx, MML_ENONFINITE, "dataset_from_arrays: row %lld, numeric "
                                  "column %d: the value is not finite", (long long)r, (int)j);
    }
    *D = a->n_domains > 0 ? a->n_domains : max_domain + 1;
    if (a->domain_field >= 0) {
        if (a->field_sizes && sizes[a->domain_field] != *D)
            return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: the domain field %d has size "
                              "%lld, not the %d domains", (int)a->domain_field,
                              (long long)sizes[a->domain_field], (int)*D);
        sizes[a->domain_field] = *D;
    }
    return MML_OK;
}

static int build_schema(mml_ctx *ctx, const mml_arrays *a, const int64_t *sizes, int32_t D,
                        mml__schema **out)
{
    const int32_t F = a->n_fields;
    mml__schema *s = NULL;
    if (mml__schema_create(ctx, &s, F, a->n_dense, 0, D) < 0)
        return mml__error(ctx, MML_ENOMEM, "dataset_from_arrays: out of memory");
    int rc = MML_OK;
    for (int32_t f = 0; f < F && rc >= 0; f++) {
        rc = set_name(ctx, &s->field_names[f], a->field_names, f, "f", "field");
        s->field_sizes[f] = (int32_t)sizes[f];
    }
    for (int32_t j = 0; j < a->n_dense && rc >= 0; j++)
        rc = set_name(ctx, &s->dense_names[j], a->dense_names, j, "x", "numeric column");
    for (int32_t d = 0; d < D && rc >= 0; d++)
        rc = set_name(ctx, &s->domain_names[d], a->domain_names, d, "d", "domain");
    const char *domain_column = a->domain_field >= 0 && rc >= 0 ? s->field_names[a->domain_field]
                                                                : "domain";
    if (rc >= 0)
        rc = check_distinct(ctx, s->field_names, F, a->domain_field < 0 ? "domain" : NULL, "field");
    if (rc >= 0)
        rc = check_distinct(ctx, s->dense_names, a->n_dense, NULL, "numeric column");
    for (int32_t j = 0; j < a->n_dense && rc >= 0; j++)
        for (int32_t f = 0; f < F && rc >= 0; f++)
            if (!strcmp(s->dense_names[j], s->field_names[f]))
                rc = mml__error(ctx, MML_EINVAL, "dataset_from_arrays: '%s' names a field and a "
                                "numeric column", s->field_names[f]);
    if (rc >= 0)
        rc = check_distinct(ctx, s->domain_names, D, NULL, "domain");
    if (rc >= 0) {
        s->domain_field = a->domain_field;
        if (a->domain_field >= 0)
            s->field_kind[a->domain_field] = MML__FIELD_DOMAIN;
        /* Ids given directly, as the synthetic set's: raw values are the ids. */
        rc = mml__schema_set_roles(ctx, s, MML__SOURCE_SYNTHETIC, "label", MML__LABEL_01, 0,
                                   domain_column, MML__DOMAIN_IDS, ',', '|');
    }
    if (rc < 0) {
        mml__schema_release(ctx, s);
        return rc;
    }
    *out = s;
    return MML_OK;
}

int mml_dataset_from_arrays(mml_ctx *ctx, const mml_arrays *arrays, mml_dataset **out)
{
    if (out)
        *out = NULL;
    if (!ctx)
        return MML_EINVAL;
    if (!arrays || !out)
        return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: NULL argument");
    mml_arrays a;
    int rc = MML__COPY_OPTIONS(ctx, &a, arrays, mml_arrays, "dataset_from_arrays");
    if (rc < 0)
        return rc;
    if (a.n_fields < 1 || a.n_fields > 4096 || a.n_rows < 1 || a.n_rows > ((int64_t)1 << 40) ||
        a.n_dense < 0 || a.n_dense > 4096 || a.n_domains < 0 || a.n_domains > 1024 ||
        a.domain_field < -1 || a.domain_field >= a.n_fields)
        return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: counts out of range (fields %d, "
                          "rows %lld, numeric %d, domains %d, domain field %d)", (int)a.n_fields,
                          (long long)a.n_rows, (int)a.n_dense, (int)a.n_domains,
                          (int)a.domain_field);
    if (!a.ids || !a.labels || (a.n_dense > 0 && !a.dense) || (!a.domain && a.domain_field < 0))
        return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: NULL %s",
                          !a.ids ? "ids" : !a.labels ? "labels" : !a.domain && a.domain_field < 0
                          ? "domain (and no domain_field)" : "dense");
    int64_t ids_stride = a.ids_row_stride ? a.ids_row_stride : a.n_fields;
    int64_t dense_stride = a.dense_row_stride ? a.dense_row_stride : a.n_dense;
    if (ids_stride < a.n_fields || dense_stride < a.n_dense)
        return mml__error(ctx, MML_EINVAL, "dataset_from_arrays: row stride %lld below the "
                          "row's %d values", (long long)(ids_stride < a.n_fields ? ids_stride
                                                         : dense_stride),
                          (int)(ids_stride < a.n_fields ? a.n_fields : a.n_dense));
    int64_t *sizes = mml__alloc(ctx, sizeof(int64_t) * (size_t)a.n_fields);
    if (!sizes)
        return mml__error(ctx, MML_ENOMEM, "dataset_from_arrays: out of memory");
    int32_t D = 0;
    mml__schema *schema = NULL;
    mml_dataset *ds = NULL;
    rc = scan(ctx, &a, ids_stride, dense_stride, sizes, &D);
    if (rc >= 0 && D > 1024)
        rc = mml__error(ctx, MML_EINVAL, "dataset_from_arrays: %d domains (at most 1024)", (int)D);
    if (rc >= 0)
        rc = build_schema(ctx, &a, sizes, D, &schema);
    if (rc >= 0 && mml__dataset_create(ctx, schema, a.n_rows, &ds) < 0)
        rc = mml__error(ctx, MML_ENOMEM, "dataset_from_arrays: out of memory for %lld rows",
                        (long long)a.n_rows);
    if (rc >= 0) {
        const int32_t F = a.n_fields;
        for (int64_t r = 0; r < a.n_rows; r++) {
            const int32_t *row = a.ids + r * ids_stride;
            memcpy(ds->ids + r * F, row, sizeof(int32_t) * (size_t)F);
            ds->domain[r] = a.domain ? a.domain[r] : row[a.domain_field];
            ds->labels[r] = a.labels[r];
            if (a.n_dense > 0)
                memcpy(ds->dense + r * a.n_dense, a.dense + r * dense_stride,
                       sizeof(float) * (size_t)a.n_dense);
        }
        ds->n_rows = a.n_rows;
        mml__dataset_count_domains(ds);
    }
    mml__schema_release(ctx, schema);
    mml__free(ctx, sizes, sizeof(int64_t) * (size_t)a.n_fields);
    if (rc < 0) {
        mml_dataset_destroy(ds);
        return rc;
    }
    *out = ds;
    return MML_OK;
}

int mml_dataset_split(mml_ctx *ctx, const mml_dataset *ds, uint64_t seed, mml_dataset **train,
                      mml_dataset **val, mml_dataset **test)
{
    if (mml__loader_start(ctx, train, val, test) < 0)
        return MML_EINVAL;
    if (!ds || !train || !val || !test)
        return mml__error(ctx, MML_EINVAL, "dataset_split: NULL argument");
    int rc = mml__split_stratified(ctx, ds, seed, train, val, test);
    if (rc == MML_ENOMEM)
        return mml__error(ctx, rc, "dataset_split: out of memory");
    return rc;
}
