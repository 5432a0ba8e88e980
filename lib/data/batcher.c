/* The batcher: seeded per-epoch permutations, rows gathered into own buffers. */
#include <string.h>

#include "data/data_internal.h"

struct mml_batcher {
    mml_ctx *ctx;
    const mml_dataset *ds;
    mml_batcher_options o;
    int64_t n;          /* selected rows */
    int64_t *rows;      /* the selected rows, in data set order */
    int64_t *order;     /* this epoch's order */
    int64_t pos;        /* next position in order */
    int64_t buf_rows;   /* capacity of the gather buffers */
    int32_t *ids;
    float *dense;
    int32_t *domain;
    float *labels;
    const int64_t *last; /* rows of the last batch */
    int32_t nm;          /* multi-hot fields */
    int64_t *mh_off;     /* nm * (buf_rows + 1) */
    int32_t **mh_ids;    /* nm buffers of mh_cap[m] ids */
    int64_t *mh_cap;
    const int64_t **mh_offp; /* nm pointers into mh_off (for the view) */
    int contiguous;     /* all rows in order: views into the data set */
};

int mml_batcher_options_init_sized(mml_batcher_options *out, uint32_t struct_size)
{
    mml_batcher_options full, *o = &full;
    memset(o, 0, sizeof *o);
    o->batch_size = 1024;
    o->shuffle = 1;
    o->domain = -1;
    o->seed = 1;
    return mml__init_versioned(out, o, sizeof *o, struct_size, MML__OLDER_SIZES_mml_batcher_options);
}

void mml_batcher_destroy(mml_batcher *b)
{
    if (!b)
        return;
    mml_ctx *ctx = b->ctx;
    size_t n = (size_t)(b->n > 0 ? b->n : 1), br = (size_t)b->buf_rows;
    mml__free(ctx, b->rows, n * sizeof *b->rows);
    mml__free(ctx, b->order, n * sizeof *b->order);
    mml__free(ctx, b->ids, br * (size_t)b->ds->n_fields * sizeof *b->ids);
    mml__free(ctx, b->dense, br * (size_t)b->ds->n_dense * sizeof *b->dense);
    mml__free(ctx, b->domain, br * sizeof *b->domain);
    mml__free(ctx, b->labels, br * sizeof *b->labels);
    size_t nm = (size_t)b->nm;
    for (size_t m = 0; m < nm; m++)
        if (b->mh_ids && b->mh_cap)
            mml__free(ctx, b->mh_ids[m], (size_t)b->mh_cap[m] * sizeof(int32_t));
    mml__free(ctx, b->mh_off, nm * (br + 1) * sizeof *b->mh_off);
    mml__free(ctx, b->mh_ids, nm * sizeof *b->mh_ids);
    mml__free(ctx, b->mh_cap, nm * sizeof *b->mh_cap);
    mml__free(ctx, b->mh_offp, nm * sizeof *b->mh_offp);
    mml__free(ctx, b, sizeof *b);
}

int mml_batcher_create(mml_batcher **out, mml_ctx *ctx, const mml_dataset *ds,
                       const mml_batcher_options *opt)
{
    if (out)
        *out = NULL;
    if (!ctx)
        return MML_EINVAL;
    if (!out || !ds)
        return mml__error(ctx, MML_EINVAL, "mml_batcher_create: NULL output or data set");
    mml_batcher_options o;
    int vrc = MML__COPY_OPTIONS(ctx, &o, opt, mml_batcher_options, "mml_batcher_create");
    if (vrc < 0)
        return vrc;
    if (o.batch_size < 1 || o.batch_size > INT32_MAX)
        return mml__error(ctx, MML_EINVAL, "mml_batcher_create: batch_size %lld not in 1..2^31-1",
                          (long long)o.batch_size);
    if (o.domain < -1 || o.domain >= ds->n_domains)
        return mml__error(ctx, MML_ERANGE, "mml_batcher_create: domain %d not in -1..%d",
                          (int)o.domain, (int)ds->n_domains - 1);
    mml_batcher *b = mml__calloc(ctx, 1, sizeof *b);
    if (!b)
        return mml__error(ctx, MML_ENOMEM, "out of memory creating a batcher");
    b->ctx = ctx;
    b->ds = ds;
    b->o = o;
    b->n = o.domain < 0 ? ds->n_rows : ds->domain_rows[o.domain];
    b->buf_rows = o.batch_size < b->n ? o.batch_size : (b->n > 0 ? b->n : 1);
    size_t n = (size_t)(b->n > 0 ? b->n : 1), br = (size_t)b->buf_rows;
    b->rows = mml__alloc(ctx, n * sizeof *b->rows);
    b->order = mml__alloc(ctx, n * sizeof *b->order);
    if (ds->n_fields)
        b->ids = mml__alloc(ctx, br * (size_t)ds->n_fields * sizeof *b->ids);
    if (ds->n_dense)
        b->dense = mml__alloc(ctx, br * (size_t)ds->n_dense * sizeof *b->dense);
    b->domain = mml__alloc(ctx, br * sizeof *b->domain);
    b->labels = mml__alloc(ctx, br * sizeof *b->labels);
    if (!b->rows || !b->order || (ds->n_fields && !b->ids) || (ds->n_dense && !b->dense) ||
        !b->domain || !b->labels) {
        mml_batcher_destroy(b);
        return mml__error(ctx, MML_ENOMEM, "out of memory creating a batcher");
    }
    if (ds->n_multihot > 0) {
        size_t nm = (size_t)ds->n_multihot;
        b->nm = ds->n_multihot;
        b->mh_off = mml__alloc(ctx, nm * (br + 1) * sizeof *b->mh_off);
        b->mh_ids = mml__calloc(ctx, nm, sizeof *b->mh_ids);
        b->mh_cap = mml__calloc(ctx, nm, sizeof *b->mh_cap);
        b->mh_offp = mml__alloc(ctx, nm * sizeof *b->mh_offp);
    }
    if (b->nm && (!b->mh_off || !b->mh_ids || !b->mh_cap || !b->mh_offp)) {
        mml_batcher_destroy(b);
        return mml__error(ctx, MML_ENOMEM, "out of memory creating a batcher");
    }
    int64_t k = 0;
    for (int64_t r = 0; r < ds->n_rows; r++)
        if (o.domain < 0 || ds->domain[r] == o.domain)
            b->rows[k++] = r;
    b->contiguous = o.domain < 0 && !o.shuffle;
    mml_batcher_start_epoch(b, 0);
    *out = b;
    return MML_OK;
}

int mml_batcher_start_epoch(mml_batcher *b, uint64_t epoch)
{
    if (!b)
        return MML_EINVAL;
    memcpy(b->order, b->rows, (size_t)b->n * sizeof *b->order);
    if (b->o.shuffle) {
        mml_rng rng;
        mml__rng_init(&rng, b->o.seed + epoch * 0x9E3779B97F4A7C15ull, MML_STREAM_SHUFFLE + 1);
        for (int64_t i = b->n - 1; i > 0; i--) {
            int64_t j = (int64_t)mml__rng_below(&rng, (uint64_t)i + 1);
            int64_t t = b->order[i];
            b->order[i] = b->order[j];
            b->order[j] = t;
        }
    }
    b->pos = 0;
    b->last = NULL;
    return MML_OK;
}

static int next_batch(mml_batcher *b, mml_batch_view *out);

int mml_batcher_next_sized(mml_batcher *b, mml_batch_view *out, uint32_t struct_size)
{
    if (!b || !out)
        return b ? mml__error(b->ctx, MML_EINVAL, "mml_batcher_next: NULL output") : MML_EINVAL;
    int rc = mml__check_size(b->ctx, struct_size, sizeof *out, MML__OLDER_SIZES_mml_batch_view,
                             "mml_batcher_next: mml_batch_view");
    if (rc < 0)
        return rc;
    mml_batch_view full;
    rc = next_batch(b, &full);
    if (rc == 1)
        mml__init_versioned(out, &full, sizeof full, struct_size, MML__OLDER_SIZES_mml_batch_view);
    return rc;
}

static int next_batch(mml_batcher *b, mml_batch_view *out)
{
    if (b->pos >= b->n)
        return 0;
    int64_t m = b->n - b->pos < b->o.batch_size ? b->n - b->pos : b->o.batch_size;
    const int64_t *rows = b->order + b->pos;
    const mml_dataset *ds = b->ds;
    b->last = rows;
    b->pos += m;
    if (b->contiguous)
        return mml_dataset_view(ds, rows[0], m, out) == MML_OK ? 1 : MML_ESTATE;
    int32_t nf = ds->n_fields, nd = ds->n_dense;
    for (int64_t k = 0; k < m; k++) {
        int64_t r = rows[k];
        if (nf == 3) {
            const int32_t *s = ds->ids + r * 3;
            int32_t *d = b->ids + k * 3;
            d[0] = s[0];
            d[1] = s[1];
            d[2] = s[2];
        } else if (nf) {
            memcpy(b->ids + k * nf, ds->ids + r * nf, (size_t)nf * sizeof *b->ids);
        }
        if (nd)
            memcpy(b->dense + k * nd, ds->dense + r * nd, (size_t)nd * sizeof *b->dense);
        b->domain[k] = ds->domain[r];
        b->labels[k] = ds->labels[r];
    }
    for (int32_t f = 0; f < b->nm; f++) {
        int64_t *off = b->mh_off + (int64_t)f * (b->buf_rows + 1);
        const int64_t *so = ds->mh_off[f];
        int64_t total = 0;
        off[0] = 0;
        for (int64_t k = 0; k < m; k++) {
            total += so[rows[k] + 1] - so[rows[k]];
            off[k + 1] = total;
        }
        if (total > b->mh_cap[f]) {
            int rc = mml__grow(b->ctx, &b->mh_ids[f], &b->mh_cap[f], total, sizeof(int32_t));
            if (rc < 0)
                return mml__error(b->ctx, rc, "out of memory gathering multi-hot field %d", (int)f);
        }
        for (int64_t k = 0; k < m; k++) {
            int64_t a = so[rows[k]], c = so[rows[k] + 1];
            if (c > a)
                memcpy(b->mh_ids[f] + off[k], ds->mh_ids[f] + a, (size_t)(c - a) * sizeof(int32_t));
        }
        b->mh_offp[f] = off;
    }
    mml_batch_view_init(out, m, nf, nf ? b->ids : NULL, nd, nd ? b->dense : NULL, b->domain,
                        b->labels);
    if (b->nm) {
        out->n_multihot = b->nm;
        out->multihot_offsets = b->mh_offp;
        out->multihot_ids = (const int32_t *const *)b->mh_ids;
    }
    return 1;
}

int64_t mml_batcher_n_rows(const mml_batcher *b) { return b ? b->n : 0; }

int64_t mml_batcher_n_batches(const mml_batcher *b)
{
    return b ? (b->n + b->o.batch_size - 1) / b->o.batch_size : 0;
}

const int64_t *mml_batcher_batch_rows(const mml_batcher *b) { return b ? b->last : NULL; }

int mml__batcher_restrict(mml_batcher *b, int64_t lo, int64_t hi)
{
    int64_t k = 0;
    for (int64_t i = 0; i < b->n; i++)
        k += b->rows[i] >= lo && b->rows[i] < hi;
    size_t old = (size_t)(b->n > 0 ? b->n : 1), n = (size_t)(k > 0 ? k : 1);
    int64_t *rows = mml__alloc(b->ctx, n * sizeof *rows), *order = mml__alloc(b->ctx, n * sizeof *order);
    if (!rows || !order) {
        mml__free(b->ctx, rows, n * sizeof *rows);
        mml__free(b->ctx, order, n * sizeof *order);
        return mml__error(b->ctx, MML_ENOMEM, "out of memory creating a batcher");
    }
    k = 0;
    for (int64_t i = 0; i < b->n; i++)
        if (b->rows[i] >= lo && b->rows[i] < hi)
            rows[k++] = b->rows[i];
    mml__free(b->ctx, b->rows, old * sizeof *b->rows);
    mml__free(b->ctx, b->order, old * sizeof *b->order);
    b->rows = rows;
    b->order = order;
    b->n = k;
    b->contiguous = 0;
    mml_batcher_start_epoch(b, 0);
    return MML_OK;
}
