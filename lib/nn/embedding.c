#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "core/param_rows.h"
#include "moemlora/embedding.h"
#include "nn/layers.h"

struct mml_embedding {
    mml_ctx *ctx;
    mml_param param;
    mml__rows *rows; /* the gradient's block and the rows written since it was zeroed */
    char *name;
    size_t name_size;
    int32_t oov; /* MML_OOV_* */
};

/* The row an id reads under the table's OOV policy (ids already checked under MML_OOV_ERROR). */
static inline int64_t row_of(const mml_embedding *e, int32_t id)
{
    int64_t last = e->param.rows - 1;
    if (e->oov == MML_OOV_RESERVED_ROW && (id < 0 || id >= last))
        return last;
    return id;
}

int mml_embedding_options_init_sized(mml_embedding_options *out, uint32_t struct_size)
{
    mml_embedding_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->dim = 8;
    opt->init = MML_INIT_NORMAL;
    opt->scale = 0.01f;
    opt->name = "embedding";
    opt->group = MML_GROUP_EMBEDDING;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_embedding_options);
}

int mml_embedding_create(mml_embedding **out, mml_ctx *ctx, const mml_embedding_options *opt)
{
    if (out)
        *out = NULL;
    if (!out || !ctx)
        return mml__error(ctx, MML_EINVAL, "embedding_create: NULL argument");
    mml_embedding_options o;
    int rc = MML__COPY_OPTIONS(ctx, &o, opt, mml_embedding_options, "embedding");
    if (rc < 0)
        return rc;
    if (o.dim < 1 || o.n_rows < 1 || o.n_rows > INT32_MAX)
        return mml__error(ctx, MML_EINVAL, "embedding '%s': n_rows %lld and dim %d must be >= 1",
                          o.name ? o.name : "", (long long)o.n_rows, o.dim);
    if (o.init < MML_INIT_NORMAL || o.init > MML_INIT_ZEROS || !isfinite(o.scale) || o.scale < 0)
        return mml__error(ctx, MML_EINVAL, "embedding: bad init %d or scale", o.init);
    if (o.oov_policy < MML_OOV_ERROR || o.oov_policy > MML_OOV_RESERVED_ROW ||
        (o.oov_policy == MML_OOV_RESERVED_ROW && o.n_rows < 2))
        return mml__error(ctx, MML_EINVAL,
                          "embedding '%s': OOV policy %d invalid (a reserved row needs n_rows >= 2, has %lld)",
                          o.name ? o.name : "", o.oov_policy, (long long)o.n_rows);
    const char *name = o.name ? o.name : "embedding";
    mml_embedding *e = mml__calloc(ctx, 1, sizeof *e);
    if (!e)
        return mml__error(ctx, MML_ENOMEM, "embedding '%s': out of memory", name);
    e->ctx = ctx;
    e->oov = o.oov_policy;
    e->name_size = strlen(name) + 1;
    e->name = mml__alloc(ctx, e->name_size);
    size_t n = (size_t)o.n_rows * (size_t)o.dim;
    e->param.rows = o.n_rows;
    e->param.cols = o.dim;
    e->param.value = mml__alloc(ctx, n * sizeof(float));
    /* The gradient records the rows that backward passes write (param_rows.h). */
    if (e->name && e->param.value)
        e->rows = mml__param_rows_alloc(ctx, &e->param);
    if (!e->name || !e->param.value || !e->rows) {
        mml_embedding_destroy(e);
        return mml__error(ctx, MML_ENOMEM, "embedding '%s': out of memory", name);
    }
    memcpy(e->name, name, e->name_size);
    e->param.name = e->name;
    e->param.group = o.group;
    e->param.expert = -1;
    mml_rng rng;
    mml__rng_init(&rng, ctx->seed, MML_STREAM_EMBEDDING + o.stream);
    float *v = e->param.value;
    for (size_t i = 0; i < n; i++) {
        if (o.init == MML_INIT_NORMAL)
            v[i] = (float)(mml__rng_normal(&rng) * o.scale);
        else if (o.init == MML_INIT_UNIFORM)
            v[i] = (float)((2.0 * mml__rng_uniform_double(&rng) - 1.0) * o.scale);
        else
            v[i] = 0.0f;
    }
    *out = e;
    return MML_OK;
}

void mml_embedding_destroy(mml_embedding *e)
{
    if (!e)
        return;
    mml_ctx *ctx = e->ctx;
    size_t n = (size_t)(e->param.rows * e->param.cols);
    mml__free(ctx, e->param.value, n * sizeof(float));
    mml__rows_free(ctx, e->rows);
    mml__free(ctx, e->name, e->name_size);
    mml__free(ctx, e, sizeof *e);
}

static int check_ids(mml_embedding *e, const int32_t *ids, int64_t id_stride, int64_t n)
{
    if (e->oov == MML_OOV_RESERVED_ROW)
        return MML_OK; /* every id maps to a row */
    for (int64_t r = 0; r < n; r++) {
        int32_t id = ids[r * id_stride];
        if (id < 0 || id >= e->param.rows)
            return mml__error(e->ctx, MML_ERANGE, "field '%s': id %d at row %lld outside [0, %lld)",
                              e->name, id, (long long)r, (long long)e->param.rows);
    }
    return MML_OK;
}

static int check_args(mml_embedding *e, const int32_t *ids, int64_t id_stride, int64_t n,
                      const void *buf, int64_t row_stride)
{
    if (!e)
        return MML_EINVAL;
    if (!ids || !buf)
        return mml__error(e->ctx, MML_EINVAL, "field '%s': NULL ids or buffer", e->name);
    if (n < 1 || id_stride < 1 || row_stride < e->param.cols)
        return mml__error(e->ctx, MML_ESHAPE,
                          "field '%s': bad batch shape (n=%lld, id stride %lld, row stride %lld)",
                          e->name, (long long)n, (long long)id_stride, (long long)row_stride);
    return check_ids(e, ids, id_stride, n);
}

int mml_embedding_forward(mml_embedding *e, const int32_t *ids, int64_t id_stride, int64_t n,
                          float *out, int64_t out_row_stride)
{
    int rc = check_args(e, ids, id_stride, n, out, out_row_stride);
    if (rc < 0)
        return rc;
    size_t dim = (size_t)e->param.cols;
    for (int64_t r = 0; r < n; r++)
        memcpy(out + r * out_row_stride, e->param.value + (size_t)row_of(e, ids[r * id_stride]) * dim,
               dim * sizeof(float));
    return MML_OK;
}

int mml_embedding_backward(mml_embedding *e, const int32_t *ids, int64_t id_stride, int64_t n,
                           const float *dout, int64_t dout_row_stride)
{
    int rc = check_args(e, ids, id_stride, n, dout, dout_row_stride);
    if (rc < 0)
        return rc;
    if (!e->param.grad || !e->rows)
        return mml__error(e->ctx, MML_ESTATE, "field '%s': read-only (no gradient)", e->name);
    int64_t dim = e->param.cols;
    for (int64_t r = 0; r < n; r++) {
        int64_t row = row_of(e, ids[r * id_stride]);
        mml__rows_touch(e->rows, row);
        float *g = e->param.grad + row * dim;
        const float *d = dout + r * dout_row_stride;
        for (int64_t j = 0; j < dim; j++)
            g[j] += d[j];
    }
    return MML_OK;
}

static int check_multihot(mml_embedding *e, const int64_t *offsets, const int32_t *ids,
                          int64_t n_rows, int32_t pooling, const void *buf, int64_t row_stride)
{
    if (!e)
        return MML_EINVAL;
    if (!offsets || !buf)
        return mml__error(e->ctx, MML_EINVAL, "field '%s' (multi-hot): NULL offsets or buffer", e->name);
    if (pooling != MML_POOL_SUM && pooling != MML_POOL_MEAN)
        return mml__error(e->ctx, MML_EINVAL, "field '%s' (multi-hot): unknown pooling %d", e->name,
                          pooling);
    if (n_rows < 1 || row_stride < e->param.cols)
        return mml__error(e->ctx, MML_ESHAPE,
                          "field '%s' (multi-hot): bad batch shape (n=%lld, row stride %lld)",
                          e->name, (long long)n_rows, (long long)row_stride);
    if (offsets[0] < 0)
        return mml__error(e->ctx, MML_ESHAPE, "field '%s' (multi-hot): offsets[0] = %lld is negative",
                          e->name, (long long)offsets[0]);
    for (int64_t r = 0; r < n_rows; r++)
        if (offsets[r + 1] < offsets[r])
            return mml__error(e->ctx, MML_ESHAPE,
                              "field '%s' (multi-hot): offsets decrease at row %lld (%lld > %lld)",
                              e->name, (long long)r, (long long)offsets[r], (long long)offsets[r + 1]);
    int64_t total = offsets[n_rows] - offsets[0];
    if (total > 0 && !ids)
        return mml__error(e->ctx, MML_EINVAL, "field '%s' (multi-hot): NULL ids for %lld values",
                          e->name, (long long)total);
    if (total > 0) {
        int rc = check_ids(e, ids + offsets[0], 1, total);
        if (rc < 0)
            return rc; /* the message counts values from offsets[0] */
    }
    return MML_OK;
}

int mml_embedding_forward_multihot(mml_embedding *e, const int64_t *offsets, const int32_t *ids,
                                   int64_t n_rows, int32_t pooling, float *out,
                                   int64_t out_row_stride)
{
    int rc = check_multihot(e, offsets, ids, n_rows, pooling, out, out_row_stride);
    if (rc < 0)
        return rc;
    int64_t dim = e->param.cols;
    for (int64_t r = 0; r < n_rows; r++) {
        float *o = out + r * out_row_stride;
        memset(o, 0, sizeof(float) * (size_t)dim);
        for (int64_t i = offsets[r]; i < offsets[r + 1]; i++) {
            const float *v = e->param.value + row_of(e, ids[i]) * dim;
            for (int64_t j = 0; j < dim; j++)
                o[j] += v[j];
        }
        int64_t cnt = offsets[r + 1] - offsets[r];
        if (pooling == MML_POOL_MEAN && cnt > 1) {
            float inv = 1.0f / (float)cnt;
            for (int64_t j = 0; j < dim; j++)
                o[j] *= inv;
        }
    }
    return MML_OK;
}

int mml_embedding_backward_multihot(mml_embedding *e, const int64_t *offsets, const int32_t *ids,
                                    int64_t n_rows, int32_t pooling, const float *dout,
                                    int64_t dout_row_stride)
{
    int rc = check_multihot(e, offsets, ids, n_rows, pooling, dout, dout_row_stride);
    if (rc < 0)
        return rc;
    if (!e->param.grad || !e->rows)
        return mml__error(e->ctx, MML_ESTATE, "field '%s' (multi-hot): read-only (no gradient)", e->name);
    int64_t dim = e->param.cols;
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t cnt = offsets[r + 1] - offsets[r];
        float scale = pooling == MML_POOL_MEAN && cnt > 1 ? 1.0f / (float)cnt : 1.0f;
        const float *d = dout + r * dout_row_stride;
        for (int64_t i = offsets[r]; i < offsets[r + 1]; i++) {
            int64_t row = row_of(e, ids[i]);
            mml__rows_touch(e->rows, row);
            float *g = e->param.grad + row * dim;
            for (int64_t j = 0; j < dim; j++)
                g[j] += scale * d[j];
        }
    }
    return MML_OK;
}

int64_t mml_embedding_n_rows(const mml_embedding *e) { return e ? e->param.rows : 0; }
int32_t mml_embedding_dim(const mml_embedding *e) { return e ? (int32_t)e->param.cols : 0; }
mml_param *mml_embedding_param(mml_embedding *e) { return e ? &e->param : NULL; }

void mml__embedding_drop_grad(mml_embedding *e)
{
    mml__rows_free(e->ctx, e->rows);
    e->rows = NULL;
    e->param.grad = NULL;
    e->param.reserved = 0;
}
