/* Data-parallel training through an mml_reduce_hook: the step's gradient
 * exchange, agreed statuses and exact metrics over every worker's rows. */
#include <string.h>

#include "core/param_rows.h"
#include "core/versions.h"
#include "train/metrics_internal.h"
#include "train/reduce.h"

/* What every worker sends first in every collective. */
typedef struct hdr {
    int32_t status; /* 0, or this worker's MML_E* failure */
    int32_t reserved;
    int64_t rows;   /* mml__dp_max: the value */
    int64_t bytes;  /* the payload that follows */
    double w;       /* the batch's weight sum */
    double loss;    /* its mean loss times w */
    char msg[216];  /* the failure's message */
} hdr;

struct mml__dp {
    mml_ctx *ctx;
    mml_reduce_hook h;
    int agreed; /* the last failure is known to every worker */
    hdr *hdrs;  /* size */
    int64_t *counts;
    unsigned char *send, *recv;
    size_t send_cap, recv_cap;
    float *dense;
    size_t dense_cap;
    int64_t *cursor;
    mml_metrics *scratch;
};

int mml__dp_create(mml__dp **out, mml_ctx *ctx, const mml_reduce_hook *h)
{
    *out = NULL;
    if (!h)
        return MML_OK;
    int rc = MML__CHECK_SIZE(ctx, h, mml_reduce_hook, "trainer: mml_reduce_hook");
    if (rc < 0)
        return rc;
    if (h->size < 1 || h->rank < 0 || h->rank >= h->size || !h->gather || !h->abort)
        return mml__error(ctx, MML_EINVAL, "trainer: reduce hook of rank %d, size %d, gather "
                          "%s, abort %s (rank in 0 .. size - 1 and both callbacks needed)",
                          (int)h->rank, (int)h->size, h->gather ? "set" : "NULL",
                          h->abort ? "set" : "NULL");
    if (h->size == 1)
        return MML_OK;
    mml__dp *dp = mml__calloc(ctx, 1, sizeof *dp);
    if (dp) {
        dp->ctx = ctx;
        memcpy(&dp->h, h, sizeof dp->h);
        dp->hdrs = mml__alloc(ctx, sizeof(hdr) * (size_t)h->size);
        dp->counts = mml__alloc(ctx, sizeof(int64_t) * (size_t)h->size);
        dp->cursor = mml__alloc(ctx, sizeof(int64_t) * (size_t)h->size);
    }
    if (!dp || !dp->hdrs || !dp->counts || !dp->cursor) {
        mml__dp_destroy(dp);
        return mml__error(ctx, MML_ENOMEM, "trainer: out of memory");
    }
    *out = dp;
    return MML_OK;
}

void mml__dp_destroy(mml__dp *dp)
{
    if (!dp)
        return;
    mml_ctx *ctx = dp->ctx;
    size_t n = (size_t)dp->h.size;
    mml__free(ctx, dp->hdrs, sizeof(hdr) * n);
    mml__free(ctx, dp->counts, sizeof(int64_t) * n);
    mml__free(ctx, dp->cursor, sizeof(int64_t) * n);
    mml__free(ctx, dp->send, dp->send_cap);
    mml__free(ctx, dp->recv, dp->recv_cap);
    mml__free(ctx, dp->dense, dp->dense_cap * sizeof(float));
    mml_metrics_destroy(dp->scratch);
    mml__free(ctx, dp, sizeof *dp);
}

int32_t mml__dp_rank(const mml__dp *dp) { return dp ? dp->h.rank : 0; }
int32_t mml__dp_size(const mml__dp *dp) { return dp ? dp->h.size : 1; }

void mml__dp_range(const mml__dp *dp, int64_t n, int64_t *lo, int64_t *hi)
{
    if (dp->h.sharded) { /* the worker's data sets hold its own rows only */
        *lo = 0;
        *hi = n;
        return;
    }
    int64_t r = dp->h.rank, s = dp->h.size;
    /* n * r / s without overflow for any n below 2^62. */
    *lo = n / s * r + n % s * r / s;
    *hi = n / s * (r + 1) + n % s * (r + 1) / s;
}

int64_t mml__dp_batch(const mml__dp *dp, int64_t B)
{
    return B / dp->h.size + (dp->h.rank < B % dp->h.size ? 1 : 0);
}

static int grow_bytes(mml__dp *dp, unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return MML_OK;
    size_t nc = *cap ? *cap : 4096;
    while (nc < need)
        nc *= 2;
    unsigned char *p = mml__alloc(dp->ctx, nc);
    if (!p)
        return mml__error(dp->ctx, MML_ENOMEM, "trainer: out of memory for the gradient exchange");
    mml__free(dp->ctx, *buf, *cap);
    *buf = p;
    *cap = nc;
    return MML_OK;
}

/* A callback failed: the others may be waiting in it, so stop everyone. */
static int hook_failed(mml__dp *dp, const char *what, int cb)
{
    int rc = mml__error(dp->ctx, MML_ECALLBACK, "reduce hook: %s returned %d on worker %d of %d",
                        what, cb, (int)dp->h.rank, (int)dp->h.size);
    dp->agreed = 1;
    dp->h.abort(dp->h.user, rc, mml_ctx_last_error(dp->ctx));
    return rc;
}

/* Every worker's header into dp->hdrs; the first failing worker's status
 * (with its message) on every worker, or MML_OK. */
static int exchange(mml__dp *dp, int rc, hdr *mine)
{
    mine->status = rc < 0 ? rc : 0;
    mine->reserved = 0;
    memset(mine->msg, 0, sizeof mine->msg);
    if (rc < 0) {
        mine->bytes = 0;
        strncpy(mine->msg, mml_ctx_last_error(dp->ctx), sizeof mine->msg - 1);
    }
    for (int32_t q = 0; q < dp->h.size; q++)
        dp->counts[q] = (int64_t)sizeof(hdr);
    int cb = dp->h.gather(dp->h.user, mine, (int64_t)sizeof(hdr), dp->hdrs, dp->counts);
    if (cb < 0)
        return hook_failed(dp, "gather", cb);
    for (int32_t q = 0; q < dp->h.size; q++) {
        hdr *x = &dp->hdrs[q];
        x->msg[sizeof x->msg - 1] = '\0';
        if (x->status < 0) {
            dp->agreed = 1;
            /* Keep the code: ENONFINITE makes every worker's stage diverge alike. */
            mml__error(dp->ctx, x->status, "worker %d of %d: %s", (int)q, (int)dp->h.size,
                       x->msg);
            return x->status;
        }
        if (x->bytes < 0) {
            dp->agreed = 1;
            return hook_failed(dp, "gather (a header of negative size)", -1);
        }
    }
    return MML_OK;
}

/* Every worker's payload, concatenated, into dp->recv: each of `each`
 * bytes, or (each < 0) of dp->hdrs[q].bytes. */
static int gather_payload(mml__dp *dp, const void *send, int64_t bytes, int64_t each)
{
    size_t total = 0;
    for (int32_t q = 0; q < dp->h.size; q++) {
        dp->counts[q] = each >= 0 ? each : dp->hdrs[q].bytes;
        total += (size_t)dp->counts[q];
    }
    int rc = grow_bytes(dp, &dp->recv, &dp->recv_cap, total ? total : 1);
    if (rc < 0) {
        /* The others are already in the gather: nothing can be agreed now. */
        dp->h.abort(dp->h.user, rc, mml_ctx_last_error(dp->ctx));
        dp->agreed = 1;
        return rc;
    }
    int cb = dp->h.gather(dp->h.user, send, bytes, dp->recv, dp->counts);
    return cb < 0 ? hook_failed(dp, "gather", cb) : MML_OK;
}

void mml__dp_clear(mml__dp *dp)
{
    if (dp)
        dp->agreed = 0;
}

void mml__dp_failed(mml__dp *dp, int rc)
{
    if (!dp || rc >= 0 || rc == MML_ECANCELED || dp->agreed)
        return;
    dp->agreed = 1;
    dp->h.abort(dp->h.user, rc, mml_ctx_last_error(dp->ctx));
}

int mml__dp_max(mml__dp *dp, int rc, int64_t *v)
{
    hdr mine;
    memset(&mine, 0, sizeof mine);
    mine.rows = *v;
    if ((rc = exchange(dp, rc, &mine)) < 0)
        return rc;
    for (int32_t q = 0; q < dp->h.size; q++)
        if (dp->hdrs[q].rows > *v)
            *v = dp->hdrs[q].rows;
    return MML_OK;
}

/* The row record of a trainable parameter that sends rows, or NULL (dense). */
static mml__rows *sparse_of(const mml_param *p) { return mml__param_rows(p); }

/* Dense gradients: every worker's share added in rank order. */
static int sum_dense(mml__dp *dp, mml_param **params, int64_t n, float scale)
{
    size_t P = 0;
    for (int64_t i = 0; i < n; i++)
        if (!sparse_of(params[i]))
            P += (size_t)mml_param_size(params[i]);
    if (P == 0)
        return MML_OK;
    int rc = mml__ensure_floats(dp->ctx, &dp->dense, &dp->dense_cap, P);
    if (rc < 0) {
        /* The other workers are about to sum: stop them. */
        dp->agreed = 1;
        dp->h.abort(dp->h.user, rc, mml_ctx_last_error(dp->ctx));
        return rc;
    }
    float *buf = dp->dense;
    size_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        if (sparse_of(params[i]))
            continue;
        size_t s = (size_t)mml_param_size(params[i]);
        const float *g = params[i]->grad;
        for (size_t j = 0; j < s; j++)
            buf[off + j] = g[j] * scale;
        off += s;
    }
    if (dp->h.sum_f32) {
        int cb = dp->h.sum_f32(dp->h.user, buf, (int64_t)P);
        if (cb < 0)
            return hook_failed(dp, "sum_f32", cb);
    } else {
        int64_t bytes = (int64_t)(P * sizeof(float));
        if ((rc = gather_payload(dp, buf, bytes, bytes)) < 0)
            return rc;
        const float *all = (const float *)(const void *)dp->recv;
        memcpy(buf, all, P * sizeof(float));
        for (int32_t q = 1; q < dp->h.size; q++)
            for (size_t j = 0; j < P; j++)
                buf[j] += all[(size_t)q * P + j];
    }
    off = 0;
    for (int64_t i = 0; i < n; i++) {
        if (sparse_of(params[i]))
            continue;
        size_t s = (size_t)mml_param_size(params[i]);
        memcpy(params[i]->grad, buf + off, s * sizeof(float));
        off += s;
    }
    return MML_OK;
}

/* Bytes of this worker's sparse rows: per tracked parameter, an i64 count,
 * count i32 row ids and count * cols floats. */
static size_t sparse_bytes(mml_param **params, int64_t n)
{
    size_t b = 0;
    for (int64_t i = 0; i < n; i++) {
        const mml__rows *t = sparse_of(params[i]);
        if (t)
            b += 8 + (size_t)t->count * (4 + 4 * (size_t)t->cols);
    }
    return b;
}

static void sparse_pack(mml_param **params, int64_t n, float scale, unsigned char *p)
{
    for (int64_t i = 0; i < n; i++) {
        const mml__rows *t = sparse_of(params[i]);
        if (!t)
            continue;
        memcpy(p, &t->count, 8);
        p += 8;
        memcpy(p, t->list, 4 * (size_t)t->count);
        p += 4 * (size_t)t->count;
        for (int64_t k = 0; k < t->count; k++) {
            const float *g = params[i]->grad + (int64_t)t->list[k] * t->cols;
            for (int64_t j = 0; j < t->cols; j++) {
                float v = g[j] * scale;
                memcpy(p, &v, 4);
                p += 4;
            }
        }
    }
}

/* Every worker's rows, in rank order: a row's first value is assigned, the
 * next ones added, so each row is x_first + ... left to right. */
static int sparse_unpack(mml__dp *dp, mml_param **params, int64_t n)
{
    int64_t pos = 0;
    for (int32_t q = 0; q < dp->h.size; q++) {
        dp->cursor[q] = pos;
        pos += dp->hdrs[q].bytes;
        dp->counts[q] = pos; /* where worker q's block ends */
    }
    for (int64_t i = 0; i < n; i++) {
        mml__rows *t = sparse_of(params[i]);
        if (!t)
            continue;
        mml__rows_zero(t);
        for (int32_t q = 0; q < dp->h.size; q++) {
            const unsigned char *p = dp->recv + dp->cursor[q];
            int64_t end = dp->counts[q];
            int64_t cnt;
            if (dp->cursor[q] + 8 > end)
                return hook_failed(dp, "gather (a short block of rows)", -1);
            memcpy(&cnt, p, 8);
            if (cnt < 0 || cnt > t->rows ||
                dp->cursor[q] + 8 + cnt * (4 + 4 * t->cols) > end)
                return hook_failed(dp, "gather (a block of rows that does not fit)", -1);
            const unsigned char *ids = p + 8, *vals = ids + 4 * cnt;
            for (int64_t k = 0; k < cnt; k++) {
                int32_t row;
                memcpy(&row, ids + 4 * k, 4);
                if (row < 0 || row >= t->rows)
                    return hook_failed(dp, "gather (a row id out of range)", -1);
                float *g = params[i]->grad + (int64_t)row * t->cols;
                const unsigned char *v = vals + 4 * k * t->cols;
                uint64_t bit = (uint64_t)1 << (row & 63);
                if (!(t->mark[row >> 6] & bit)) {
                    mml__rows_touch(t, row);
                    memcpy(g, v, 4 * (size_t)t->cols);
                } else {
                    for (int64_t j = 0; j < t->cols; j++) {
                        float x;
                        memcpy(&x, v + 4 * j, 4);
                        g[j] += x;
                    }
                }
            }
            dp->cursor[q] += 8 + cnt * (4 + 4 * t->cols);
        }
    }
    return MML_OK;
}

int mml__dp_step(mml__dp *dp, int rc, mml_param **params, int64_t n, int64_t *rows,
                 const float *weights, double *loss)
{
    hdr mine;
    memset(&mine, 0, sizeof mine);
    double w = 0.0;
    if (rc >= 0) {
        if (weights)
            for (int64_t i = 0; i < *rows; i++)
                w += weights[i];
        else
            w = (double)*rows;
        mine.rows = *rows;
        mine.w = w;
        mine.loss = *rows > 0 ? *loss * w : 0.0;
        size_t sb = sparse_bytes(params, n);
        if ((rc = grow_bytes(dp, &dp->send, &dp->send_cap, sb ? sb : 1)) >= 0)
            mine.bytes = (int64_t)sb;
    }
    if ((rc = exchange(dp, rc, &mine)) < 0)
        return rc;
    double W = 0.0, L = 0.0;
    int64_t R = 0;
    for (int32_t q = 0; q < dp->h.size; q++) {
        W += dp->hdrs[q].w;
        L += dp->hdrs[q].loss;
        R += dp->hdrs[q].rows;
    }
    *rows = R;
    *loss = W > 0 ? L / W : 0.0;
    float scale = W > 0 ? (float)(w / W) : 0.0f;
    if ((rc = sum_dense(dp, params, n, scale)) < 0)
        return rc;
    sparse_pack(params, n, scale, dp->send);
    if ((rc = gather_payload(dp, dp->send, mine.bytes, -1)) < 0)
        return rc;
    return sparse_unpack(dp, params, n);
}

mml_metrics *mml__dp_scratch(mml__dp *dp, int32_t D)
{
    if (dp->scratch && mml_metrics_n_domains(dp->scratch) != D) {
        mml_metrics_destroy(dp->scratch);
        dp->scratch = NULL;
    }
    if (!dp->scratch && mml_metrics_create(&dp->scratch, dp->ctx, D) < 0)
        return NULL;
    mml_metrics_reset(dp->scratch);
    return dp->scratch;
}

int mml__dp_combine(mml__dp *dp, int rc, mml_metrics *dst)
{
    hdr mine;
    memset(&mine, 0, sizeof mine);
    size_t bytes = 0;
    if (rc >= 0 && !dp->scratch)
        rc = mml__error(dp->ctx, MML_ENOMEM, "trainer: out of memory for the metrics");
    if (rc >= 0) {
        bytes = mml__metrics_packed_size(dp->scratch);
        if ((rc = grow_bytes(dp, &dp->send, &dp->send_cap, bytes)) >= 0) {
            mml__metrics_pack(dp->scratch, dp->send);
            mine.bytes = (int64_t)bytes;
        }
    }
    if ((rc = exchange(dp, rc, &mine)) < 0)
        return rc;
    if ((rc = gather_payload(dp, dp->send, (int64_t)bytes, -1)) < 0)
        return rc;
    size_t off = 0;
    for (int32_t q = 0; q < dp->h.size; q++) {
        /* Only this worker can fail here (memory): the others go on. */
        if ((rc = mml__metrics_append_packed(dst, dp->recv + off, (size_t)dp->hdrs[q].bytes)) < 0)
            return rc;
        off += (size_t)dp->hdrs[q].bytes;
    }
    return MML_OK;
}

void mml__dp_reseed(const mml__dp *dp, mml_rng *rng, uint64_t seed, int32_t stage,
                    int32_t expert, int32_t epoch)
{
    if (!rng)
        return;
    uint64_t key = ((uint64_t)(uint32_t)stage << 48) ^ ((uint64_t)(uint32_t)(expert + 1) << 20) ^
                   (uint64_t)(uint32_t)epoch;
    mml__rng_init(rng, seed ^ (0xD1B54A32D192ED03ull * (key + 1)),
                  MML_STREAM_DROPOUT + 0x100 + (uint64_t)dp->h.rank);
}
