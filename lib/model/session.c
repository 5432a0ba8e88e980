/* Sessions: a forward-only copy of a read-only model's object tree whose
 * weights are the model's and whose scratch is its own, so that threads
 * predicting through their own sessions never write shared memory. The copy
 * runs mml_model_forward() itself, which is what makes its results the
 * model's bits. Rows are checked here, before any shared object sees them,
 * so that no shared object ever reports into the model's context. */
#include <math.h>
#include <string.h>

#include "backbones/backbones.h"
#include "core/internal.h"
#include "data/data_internal.h"
#include "model/model_internal.h"
#include "moemlora/loss.h"
#include "moemlora/session.h"
#include "nn/layers.h"

#define MAX_ROWS ((int64_t)1 << 24)
#define MAX_MH_IDS ((int64_t)INT32_MAX)

struct mml_session {
    mml_ctx *ctx;
    const mml_model *model;
    mml_model *rep; /* the forward-only copy */
    int32_t mode;
    int64_t cap_rows; /* reserved rows: chunk size */
    /* A chunk's rows without its bad ones (and the synthetic reserve batch). */
    int32_t *ids, *dom;
    float *dense, *out;
    int32_t *st;
    int64_t *mhoff;       /* M x (cap_rows + 1) */
    int32_t *mhids;       /* cap_mhids */
    size_t cap_mhids;
    const int64_t **offp; /* M pointers of the view handed to the copy */
    const int32_t **idp;  /* M */
    /* Raw rows: the caller's columns bound to the model's schema, and a
     * chunk's multi-hot lists row after row (mhraw, cap_mhids ids; rowoff
     * (M + 1) offsets per row) before mhids holds them field after field. */
    mml__binding *bind;
    int32_t *mhraw;
    int64_t *rowoff;      /* cap_rows x (M + 1) */
    int32_t *badc;        /* cap_rows: bad columns when the caller wants none */
};

int mml_session_options_init_sized(mml_session_options *out, uint32_t struct_size)
{
    mml_session_options full;
    memset(&full, 0, sizeof full);
    full.mix_mode = -1;
    full.max_rows = 1024;
    return mml__init_versioned(out, &full, sizeof full, struct_size,
                               MML__OLDER_SIZES_mml_session_options);
}

/* ---- the forward-only copy of the model ---- */

static void replica_destroy(mml_model *r)
{
    if (!r)
        return;
    mml_ctx *ctx = r->ctx;
    mml_backbone_destroy(r->backbone);
    mml_gate_destroy(r->gate);
    mml__free(ctx, r->mh_start, sizeof(int64_t) * (size_t)(r->M + 1));
    mml__free(ctx, r->mh_off, r->cap_mhoff * sizeof(int64_t));
    mml__free(ctx, r->mh_idbuf, r->cap_mhid * sizeof(int32_t));
    float *const bufs[] = {r->embbuf, r->lin, r->dense, r->own, r->idsbuf};
    const size_t caps[] = {r->cap_emb, r->cap_lin, r->cap_dense, r->cap_own, r->cap_ids};
    for (size_t i = 0; i < 5; i++)
        mml__free(ctx, bufs[i], caps[i] * sizeof(float));
    mml__free(ctx, r, sizeof *r);
}

/* The tables, the experts and every weight stay the model's; the copy
 * starts without scratch. */
static int replica_create(const mml_model *m, mml_ctx *ctx, mml_model **out)
{
    *out = NULL;
    mml_model *r = mml__alloc(ctx, sizeof *r);
    if (!r)
        return mml__error(ctx, MML_ENOMEM, "session: out of memory");
    *r = *m;
    r->ctx = ctx;
    r->backbone = NULL;
    r->gate = NULL;
    r->mh_start = NULL;
    r->mh_off = NULL;
    r->mh_idbuf = NULL;
    r->cap_mhoff = r->cap_mhid = 0;
    r->embbuf = r->demb = r->lin = r->dense = r->dweights = r->own = r->idsbuf = r->sortbuf = NULL;
    r->cap_emb = r->cap_demb = r->cap_lin = r->cap_dense = r->cap_dw = r->cap_ids = r->cap_own =
        r->cap_sort = 0;
    r->n = 0;
    r->par = NULL;
    r->no_split = 1;
    int rc = MML_OK;
    if (m->M > 0 && !(r->mh_start = mml__calloc(ctx, (size_t)(m->M + 1), sizeof(int64_t))))
        rc = mml__error(ctx, MML_ENOMEM, "session: out of memory");
    if (rc >= 0) {
        /* The model's own configuration, for a user backbone's private instance. */
        mml_backbone_config bc;
        mml_backbone_config_init(&bc);
        bc.n_fields = m->F + m->M;
        bc.embed_dim = m->k;
        bc.n_dense = m->n_dense;
        bc.n_domains = m->D;
        bc.n_experts = m->E;
        bc.alpha = m->opt.alpha;
        bc.n_hidden = m->opt.n_hidden;
        bc.hidden = m->hidden;
        bc.dropout = m->opt.dropout;
        rc = mml__backbone_replica(m->backbone, ctx, &bc, &r->backbone);
    }
    if (rc >= 0 && m->gate)
        rc = mml__gate_replica(m->gate, ctx, &r->gate);
    if (rc < 0) {
        replica_destroy(r);
        return rc;
    }
    *out = r;
    return MML_OK;
}

/* ---- buffers ---- */

static void free_buffers(mml_session *s)
{
    mml_ctx *ctx = s->ctx;
    const mml_model *m = s->model;
    size_t rows = (size_t)s->cap_rows;
    mml__free(ctx, s->ids, rows * (size_t)m->F * sizeof(int32_t));
    mml__free(ctx, s->dom, rows * sizeof(int32_t));
    mml__free(ctx, s->st, rows * sizeof(int32_t));
    mml__free(ctx, s->out, rows * sizeof(float));
    mml__free(ctx, s->dense, rows * (size_t)m->n_dense * sizeof(float));
    mml__free(ctx, s->mhoff, (size_t)m->M * (rows + 1) * sizeof(int64_t));
    mml__free(ctx, s->rowoff, (size_t)(m->M + 1) * rows * sizeof(int64_t));
    mml__free(ctx, s->badc, rows * sizeof(int32_t));
    s->ids = s->dom = s->st = s->badc = NULL;
    s->out = s->dense = NULL;
    s->mhoff = s->rowoff = NULL;
    s->cap_rows = 0;
}

/* Room for n multi-hot ids in mhids and mhraw; mhraw keeps its first keep ids. */
static int ensure_mhids(mml_session *s, size_t n, size_t keep)
{
    if (n <= s->cap_mhids)
        return MML_OK;
    int32_t *p = mml__alloc(s->ctx, n * sizeof(int32_t));
    int32_t *q = mml__alloc(s->ctx, n * sizeof(int32_t));
    if (!p || !q) {
        mml__free(s->ctx, p, n * sizeof(int32_t));
        mml__free(s->ctx, q, n * sizeof(int32_t));
        return mml__error(s->ctx, MML_ENOMEM, "session: out of memory for %zu multi-hot ids", n);
    }
    if (keep > 0)
        memcpy(q, s->mhraw, keep * sizeof(int32_t));
    mml__free(s->ctx, s->mhids, s->cap_mhids * sizeof(int32_t));
    mml__free(s->ctx, s->mhraw, s->cap_mhids * sizeof(int32_t));
    s->mhids = p;
    s->mhraw = q;
    s->cap_mhids = n;
    return MML_OK;
}

/* A batch view over the session's own rows (n of them). */
static void own_view(mml_session *s, int64_t n, mml_batch_view *v)
{
    const mml_model *m = s->model;
    mml_batch_view_init(v, n, m->F, s->ids, m->n_dense, m->n_dense > 0 ? s->dense : NULL, s->dom,
                        NULL);
    v->n_multihot = m->M;
    for (int32_t f = 0; f < m->M; f++) {
        s->offp[f] = s->mhoff + (size_t)f * (size_t)(n + 1);
        s->idp[f] = s->mhids;
    }
    v->multihot_offsets = m->M > 0 ? s->offp : NULL;
    v->multihot_ids = m->M > 0 ? s->idp : NULL;
}

int mml_session_reserve(mml_session *s, int64_t max_rows, int64_t max_mh)
{
    if (!s)
        return MML_EINVAL;
    if (max_rows < 1 || max_rows > MAX_ROWS || max_mh < 0 || max_mh > MAX_MH_IDS)
        return mml__error(s->ctx, MML_EINVAL,
                          "session_reserve: %lld rows (1 .. %lld) or %lld multi-hot ids invalid",
                          (long long)max_rows, (long long)MAX_ROWS, (long long)max_mh);
    const mml_model *m = s->model;
    mml_ctx *ctx = s->ctx;
    if (max_rows < s->cap_rows)
        max_rows = s->cap_rows;
    if (max_rows > s->cap_rows) {
        size_t rows = (size_t)max_rows;
        int32_t *ids = mml__calloc(ctx, rows * (size_t)m->F, sizeof(int32_t));
        int32_t *dom = mml__calloc(ctx, rows, sizeof(int32_t));
        int32_t *st = mml__alloc(ctx, rows * sizeof(int32_t));
        int32_t *badc = mml__alloc(ctx, rows * sizeof(int32_t));
        float *out = mml__alloc(ctx, rows * sizeof(float));
        float *dense = m->n_dense > 0 ? mml__calloc(ctx, rows * (size_t)m->n_dense, sizeof(float)) : NULL;
        int64_t *mhoff = m->M > 0 ? mml__calloc(ctx, (size_t)m->M * (rows + 1), sizeof(int64_t)) : NULL;
        int64_t *rowoff = m->M > 0 ? mml__alloc(ctx, (size_t)(m->M + 1) * rows * sizeof(int64_t)) : NULL;
        if (!ids || !dom || !st || !badc || !out || (m->n_dense > 0 && !dense) ||
            (m->M > 0 && (!mhoff || !rowoff))) {
            mml__free(ctx, rowoff, (size_t)(m->M + 1) * rows * sizeof(int64_t));
            mml__free(ctx, ids, rows * (size_t)m->F * sizeof(int32_t));
            mml__free(ctx, dom, rows * sizeof(int32_t));
            mml__free(ctx, st, rows * sizeof(int32_t));
            mml__free(ctx, badc, rows * sizeof(int32_t));
            mml__free(ctx, out, rows * sizeof(float));
            mml__free(ctx, dense, rows * (size_t)m->n_dense * sizeof(float));
            mml__free(ctx, mhoff, (size_t)m->M * (rows + 1) * sizeof(int64_t));
            return mml__error(ctx, MML_ENOMEM, "session_reserve: out of memory for %lld rows",
                              (long long)max_rows);
        }
        free_buffers(s);
        s->ids = ids;
        s->dom = dom;
        s->st = st;
        s->badc = badc;
        s->out = out;
        s->dense = dense;
        s->mhoff = mhoff;
        s->rowoff = rowoff;
        s->cap_rows = max_rows;
    }
    int rc = ensure_mhids(s, (size_t)(max_mh > 0 ? max_mh : 1), 0);
    if (rc < 0)
        return rc;
    /* One forward pass of the full size on zero ids grows every scratch
     * buffer of the copy to what such a batch needs; they never shrink. */
    int64_t n = s->cap_rows;
    memset(s->ids, 0, sizeof(int32_t) * (size_t)(n * m->F));
    memset(s->dom, 0, sizeof(int32_t) * (size_t)n);
    if (m->n_dense > 0)
        memset(s->dense, 0, sizeof(float) * (size_t)(n * m->n_dense));
    if (m->M > 0) {
        memset(s->mhids, 0, sizeof(int32_t) * s->cap_mhids);
        for (int32_t f = 0; f < m->M; f++) {
            int64_t *off = s->mhoff + (size_t)f * (size_t)(n + 1);
            off[0] = 0;
            for (int64_t r = 1; r <= n; r++)
                off[r] = f == 0 ? max_mh : 0;
        }
    }
    mml_batch_view v;
    own_view(s, n, &v);
    return mml_model_forward(s->rep, &v, s->mode, 0, 0, s->out);
}

int64_t mml_session_max_rows(const mml_session *s) { return s ? s->cap_rows : 0; }

void mml_session_destroy(mml_session *s)
{
    if (!s)
        return;
    mml_ctx *ctx = s->ctx;
    size_t M = (size_t)s->model->M;
    free_buffers(s);
    mml__binding_destroy(ctx, s->bind);
    mml__free(ctx, s->mhids, s->cap_mhids * sizeof(int32_t));
    mml__free(ctx, s->mhraw, s->cap_mhids * sizeof(int32_t));
    mml__free(ctx, s->offp, M * sizeof(*s->offp));
    mml__free(ctx, s->idp, M * sizeof(*s->idp));
    replica_destroy(s->rep);
    mml__free(ctx, s, sizeof *s);
}

int mml_session_create(mml_session **out, mml_ctx *ctx, const mml_model *model,
                       const mml_session_options *opt)
{
    if (out)
        *out = NULL;
    if (!out || !ctx || !model)
        return mml__error(ctx, MML_EINVAL, "session_create: NULL argument");
    mml_session_options o;
    int rc = MML__COPY_OPTIONS(ctx, &o, opt, mml_session_options, "session");
    if (rc < 0)
        return rc;
    if (!model->readonly)
        return mml__error(ctx, MML_ESTATE,
                          "session_create: the model is not read-only (mml_model_make_readonly)");
    int32_t mode = o.mix_mode == -1 ? model->final_mix : o.mix_mode;
    if (mode == MML_MIX_SINGLE)
        return mml__error(ctx, MML_EINVAL, "session_create: a single expert (%d) is no mixture mode",
                          mode);
    if ((rc = mml__model_check_mode(model, ctx, mode, "session_create")) < 0)
        return rc;
    if (o.max_rows < 1 || o.max_rows > MAX_ROWS || o.max_multihot_ids < 0 ||
        o.max_multihot_ids > MAX_MH_IDS)
        return mml__error(ctx, MML_EINVAL,
                          "session_create: max_rows %lld (1 .. %lld) or max_multihot_ids %lld invalid",
                          (long long)o.max_rows, (long long)MAX_ROWS, (long long)o.max_multihot_ids);
    mml_session *s = mml__calloc(ctx, 1, sizeof *s);
    if (!s)
        return mml__error(ctx, MML_ENOMEM, "session: out of memory");
    s->ctx = ctx;
    s->model = model;
    s->mode = mode;
    if (model->M > 0) {
        s->offp = mml__calloc(ctx, (size_t)model->M, sizeof(*s->offp));
        s->idp = mml__calloc(ctx, (size_t)model->M, sizeof(*s->idp));
        if (!s->offp || !s->idp) {
            rc = mml__error(ctx, MML_ENOMEM, "session: out of memory");
            goto fail;
        }
    }
    if ((rc = replica_create(model, ctx, &s->rep)) < 0 ||
        (rc = mml_session_reserve(s, o.max_rows, o.max_multihot_ids)) < 0)
        goto fail;
    *out = s;
    return MML_OK;
fail:
    mml_session_destroy(s);
    return rc;
}

/* ---- prediction ---- */

/* What mml_model_forward() would refuse for the whole batch. */
static int check_shape(mml_session *s, const mml_batch_view *b)
{
    const mml_model *m = s->model;
    mml_ctx *ctx = s->ctx;
    int rc = MML__CHECK_SIZE(ctx, b, mml_batch_view, "session: mml_batch_view");
    if (rc < 0)
        return rc;
    if (b->n_rows < 1)
        return mml__error(ctx, MML_ESHAPE, "session: batch of %lld rows", (long long)b->n_rows);
    if (b->n_fields != m->F || b->n_dense != m->n_dense || b->n_multihot != m->M)
        return mml__error(ctx, MML_ESHAPE,
                          "session: batch has %d fields, %d numeric values, %d multi-hot fields; "
                          "the model %d, %d, %d", b->n_fields, b->n_dense, b->n_multihot, m->F,
                          m->n_dense, m->M);
    if (!b->ids || !b->domain || (m->n_dense > 0 && !b->dense))
        return mml__error(ctx, MML_EINVAL, "session: batch without ids, domains or numeric values");
    if (b->ids_row_stride < m->F || (m->n_dense > 0 && b->dense_row_stride < m->n_dense))
        return mml__error(ctx, MML_ESHAPE, "session: batch row stride too small");
    if (m->M > 0 && (!b->multihot_offsets || !b->multihot_ids))
        return mml__error(ctx, MML_EINVAL, "session: batch without multi-hot offsets or ids");
    for (int32_t f = 0; f < m->M; f++) {
        const int64_t *off = b->multihot_offsets[f];
        if (!off)
            return mml__error(ctx, MML_EINVAL, "session: multi-hot field %d has no offsets", f);
        if (off[0] < 0)
            return mml__error(ctx, MML_ESHAPE, "session: multi-hot field %d: offsets[0] = %lld is negative",
                              f, (long long)off[0]);
        for (int64_t r = 0; r < b->n_rows; r++)
            if (off[r + 1] < off[r])
                return mml__error(ctx, MML_ESHAPE,
                                  "session: multi-hot field %d: offsets decrease at row %lld", f,
                                  (long long)r);
        if (off[b->n_rows] > off[0] && !b->multihot_ids[f])
            return mml__error(ctx, MML_EINVAL, "session: multi-hot field %d has values but no ids", f);
    }
    return MML_OK;
}

/* Row r's status, with a message in ctx when ctx is not NULL. */
static int check_row(mml_ctx *ctx, const mml_session *s, const mml_batch_view *b, int64_t r)
{
    const mml_model *m = s->model;
    int32_t d = b->domain[r];
    int rc = MML_OK;
    if (d < 0 || d >= m->D)
        rc = mml__error(ctx, MML_ERANGE, "session: row %lld: domain %d outside [0, %d)",
                        (long long)r, d, m->D);
    const int32_t *ids = b->ids + r * b->ids_row_stride;
    for (int32_t f = 0; rc == MML_OK && f < m->F; f++)
        if (ids[f] < 0 || ids[f] >= m->field_sizes[f])
            rc = mml__error(ctx, MML_ERANGE, "session: row %lld: id %d of field %d outside [0, %lld)",
                            (long long)r, ids[f], f, (long long)m->field_sizes[f]);
    for (int32_t f = 0; rc == MML_OK && f < m->M; f++) {
        const int64_t *off = b->multihot_offsets[f];
        const int32_t *mid = b->multihot_ids[f];
        for (int64_t i = off[r]; rc == MML_OK && i < off[r + 1]; i++)
            if (mid[i] < 0 || mid[i] >= m->mh_sizes[f])
                rc = mml__error(ctx, MML_ERANGE,
                                "session: row %lld: id %d of multi-hot field %d outside [0, %lld)",
                                (long long)r, mid[i], f, (long long)m->mh_sizes[f]);
    }
    for (int32_t j = 0; rc == MML_OK && j < m->n_dense; j++)
        if (!isfinite(b->dense[r * b->dense_row_stride + j]))
            rc = mml__error(ctx, MML_ENONFINITE, "session: row %lld: numeric value %d is not finite",
                            (long long)r, j);
    return rc;
}

/* Rows [r0, r0 + n) of b, all good, as a view into the caller's arrays. */
static void slice_view(mml_session *s, const mml_batch_view *b, int64_t r0, int64_t n,
                       mml_batch_view *v)
{
    *v = *b;
    v->struct_size = (uint32_t)sizeof *v;
    v->n_rows = n;
    v->ids = b->ids + r0 * b->ids_row_stride;
    v->dense = b->dense ? b->dense + r0 * b->dense_row_stride : NULL;
    v->domain = b->domain + r0;
    v->labels = NULL;
    v->weights = NULL;
    for (int32_t f = 0; f < s->model->M; f++) {
        s->offp[f] = b->multihot_offsets[f] + r0;
        s->idp[f] = b->multihot_ids[f];
    }
    v->multihot_offsets = s->model->M > 0 ? s->offp : NULL;
    v->multihot_ids = s->model->M > 0 ? s->idp : NULL;
}

/* The good rows of [r0, r0 + n) (st[i] == MML_OK) copied into the session's
 * buffers; returns their count. */
static int gather_good(mml_session *s, const mml_batch_view *b, int64_t r0, int64_t n,
                       int64_t *count)
{
    const mml_model *m = s->model;
    int64_t j = 0, cnt = 0, total = 0;
    for (int32_t f = 0; f < m->M; f++)
        for (int64_t i = 0; i < n; i++)
            if (s->st[i] == MML_OK)
                total += b->multihot_offsets[f][r0 + i + 1] - b->multihot_offsets[f][r0 + i];
    int rc = ensure_mhids(s, (size_t)(total > 0 ? total : 1), 0);
    if (rc < 0)
        return rc;
    for (int64_t i = 0; i < n; i++) {
        if (s->st[i] != MML_OK)
            continue;
        int64_t r = r0 + i;
        memcpy(s->ids + j * m->F, b->ids + r * b->ids_row_stride, sizeof(int32_t) * (size_t)m->F);
        s->dom[j] = b->domain[r];
        if (m->n_dense > 0)
            memcpy(s->dense + j * m->n_dense, b->dense + r * b->dense_row_stride,
                   sizeof(float) * (size_t)m->n_dense);
        j++;
    }
    /* Field f's lists of the good rows, one after the other in mhids. */
    for (int32_t f = 0; f < m->M; f++) {
        int64_t *off = s->mhoff + (size_t)f * (size_t)(j + 1);
        const int64_t *so = b->multihot_offsets[f];
        int64_t k = 0;
        off[0] = cnt;
        for (int64_t i = 0; i < n; i++) {
            if (s->st[i] != MML_OK)
                continue;
            int64_t len = so[r0 + i + 1] - so[r0 + i];
            if (len > 0)
                memcpy(s->mhids + cnt, b->multihot_ids[f] + so[r0 + i], sizeof(int32_t) * (size_t)len);
            cnt += len;
            off[++k] = cnt;
        }
    }
    *count = j;
    return MML_OK;
}

int mml_session_predict(mml_session *s, const mml_batch_view *b, float *prob, int32_t *status)
{
    if (!s)
        return MML_EINVAL;
    if (!b || !prob)
        return mml__error(s->ctx, MML_EINVAL, "session_predict: NULL batch or output");
    int rc = check_shape(s, b);
    if (rc < 0)
        return rc;
    int64_t first_bad = -1;
    for (int64_t r0 = 0; r0 < b->n_rows; r0 += s->cap_rows) {
        int64_t n = b->n_rows - r0 < s->cap_rows ? b->n_rows - r0 : s->cap_rows;
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            s->st[i] = check_row(NULL, s, b, r0 + i);
            if (s->st[i] != MML_OK && bad++ == 0 && first_bad < 0)
                first_bad = r0 + i;
        }
        mml_batch_view v;
        float *dst = prob + r0;
        if (bad == 0) {
            slice_view(s, b, r0, n, &v);
            rc = mml_model_forward(s->rep, &v, s->mode, 0, 0, dst);
            if (rc >= 0)
                mml_sigmoid_array(dst, dst, n);
        } else if (bad < n) {
            int64_t good = 0;
            rc = gather_good(s, b, r0, n, &good);
            if (rc >= 0) {
                own_view(s, good, &v);
                rc = mml_model_forward(s->rep, &v, s->mode, 0, 0, s->out);
            }
            if (rc >= 0) {
                mml_sigmoid_array(s->out, s->out, good);
                for (int64_t i = 0, j = 0; i < n; i++)
                    dst[i] = s->st[i] == MML_OK ? s->out[j++] : NAN;
            }
        } else {
            for (int64_t i = 0; i < n; i++)
                dst[i] = NAN;
        }
        if (rc < 0) {
            for (int64_t i = 0; i < n; i++) {
                dst[i] = NAN;
                s->st[i] = s->st[i] < 0 ? s->st[i] : rc;
            }
        }
        if (status)
            memcpy(status + r0, s->st, sizeof(int32_t) * (size_t)n);
        if (rc < 0)
            return rc;
    }
    /* Last, so that the forward passes do not clear it. */
    if (first_bad >= 0)
        check_row(s->ctx, s, b, first_bad);
    return MML_OK;
}

int mml_session_predict_row(mml_session *s, const int32_t *ids, const float *dense, int32_t domain,
                            float *prob)
{
    if (!s)
        return MML_EINVAL;
    const mml_model *m = s->model;
    if (!ids || !prob || (m->n_dense > 0 && !dense))
        return mml__error(s->ctx, MML_EINVAL, "session_predict_row: NULL ids, numeric values or output");
    static const int64_t empty[2] = {0, 0};
    mml_batch_view v;
    mml_batch_view_init(&v, 1, m->F, ids, m->n_dense, m->n_dense > 0 ? dense : NULL, &domain, NULL);
    /* Empty multi-hot lists, through the session's pointer arrays (slice_view
     * rewrites them with the same values). */
    if (m->M > 0) {
        for (int32_t f = 0; f < m->M; f++) {
            s->offp[f] = empty;
            s->idp[f] = NULL;
        }
        v.n_multihot = m->M;
        v.multihot_offsets = s->offp;
        v.multihot_ids = s->idp;
    }
    int32_t st = MML_OK;
    int rc = mml_session_predict(s, &v, prob, &st);
    return rc < 0 ? rc : st;
}

/* ---- raw rows ---- */

int mml_session_bind_columns(mml_session *s, int32_t n_columns, const char *const *names)
{
    if (!s)
        return MML_EINVAL;
    const mml__schema *sc = s->model->schema;
    if (!sc)
        return mml__error(s->ctx, MML_ESTATE,
                          "session_bind_columns: the model has no schema (mml_model_has_schema)");
    mml__binding *b = NULL;
    int rc = mml__schema_bind(s->ctx, sc, n_columns, names, &b);
    if (rc < 0)
        return rc;
    mml__binding_destroy(s->ctx, s->bind);
    s->bind = b;
    return MML_OK;
}

int32_t mml_session_delimiter(const mml_session *s)
{
    return s && s->model->schema ? (int32_t)(unsigned char)s->model->schema->delimiter : -1;
}

/* The most multi-hot ids a row's cells can give (a value per separator + 1). */
static size_t mh_bound(const mml_session *s, const char *const *v, const size_t *lens)
{
    size_t n = 0;
    for (int32_t f = 0; f < s->bind->n_multihot; f++) {
        int32_t c = s->bind->mh_col[f];
        n += (v[c] ? (lens ? lens[c] : strlen(v[c])) : 0) + 1;
    }
    return n;
}

static const char *raw_what(int st)
{
    switch (st) {
    case MML_EPARSE:
        return "a value that does not parse";
    case MML_ERANGE:
        return "a value the model does not know (a domain, or a value of a field without "
               "out-of-vocabulary id)";
    case MML_EINVAL:
        return "a NULL value";
    default:
        return "out of memory for multi-hot ids";
    }
}

/* Rows [r0, r0 + n) mapped into the session's buffers (the good ones, in
 * order; s->st and badc per row), then predicted into prob + r0. *first_bad
 * (if still -1) receives the first bad row. */
static int raw_chunk(mml_session *s, int64_t r0, int64_t n, const char *const *values,
                     const size_t *lens, float *prob, int32_t *badc, int64_t *first_bad)
{
    const mml_model *m = s->model;
    const mml__schema *sc = m->schema;
    const int32_t nc = s->bind->n_columns, M = m->M;
    int64_t good = 0;
    size_t cnt = 0; /* multi-hot ids of the good rows in mhraw */
    for (int64_t i = 0; i < n; i++) {
        const char *const *rv = values + (r0 + i) * nc;
        const size_t *rl = lens ? lens + (r0 + i) * nc : NULL;
        int64_t *ro = M > 0 ? s->rowoff + good * (M + 1) : NULL;
        int st;
        for (;;) {
            st = mml__schema_map_row(sc, s->bind, rv, rl, m->F > 0 ? s->ids + good * m->F : NULL,
                                     m->n_dense > 0 ? s->dense + good * m->n_dense : NULL,
                                     &s->dom[good], NULL, ro, s->mhraw + cnt,
                                     (int64_t)(s->cap_mhids - cnt), &badc[i]);
            if (st != MML_ESHAPE)
                break;
            /* More multi-hot ids than reserved: grow, keeping the chunk's. */
            size_t need = cnt + mh_bound(s, rv, rl), cap = s->cap_mhids * 2;
            if ((st = ensure_mhids(s, cap > need ? cap : need, cnt)) < 0)
                break;
        }
        s->st[i] = st;
        if (st != MML_OK && *first_bad < 0)
            *first_bad = r0 + i;
        if (st == MML_OK) {
            badc[i] = -1;
            cnt += M > 0 ? (size_t)ro[M] : 0;
            good++;
        }
    }
    if (good == 0) {
        for (int64_t i = 0; i < n; i++)
            prob[r0 + i] = NAN;
        return MML_OK;
    }
    /* Field f's lists of the good rows, one after the other, as a batch view wants them. */
    int64_t pos = 0;
    for (int32_t f = 0; f < M; f++) {
        int64_t *off = s->mhoff + (size_t)f * (size_t)(good + 1), start = 0;
        off[0] = pos;
        for (int64_t j = 0; j < good; j++) {
            const int64_t *ro = s->rowoff + j * (M + 1);
            int64_t len = ro[f + 1] - ro[f];
            if (len > 0)
                memcpy(s->mhids + pos, s->mhraw + start + ro[f], sizeof(int32_t) * (size_t)len);
            pos += len;
            off[j + 1] = pos;
            start += ro[M];
        }
    }
    mml_batch_view v;
    own_view(s, good, &v);
    int rc = mml_model_forward(s->rep, &v, s->mode, 0, 0, s->out);
    if (rc >= 0)
        mml_sigmoid_array(s->out, s->out, good);
    for (int64_t i = 0, j = 0; i < n; i++) {
        if (rc < 0 && s->st[i] == MML_OK)
            s->st[i] = rc;
        prob[r0 + i] = s->st[i] == MML_OK ? s->out[j++] : NAN;
    }
    return rc;
}

int mml_session_predict_raw(mml_session *s, int64_t n_rows, const char *const *values,
                            const size_t *lens, float *prob, int32_t *status, int32_t *bad_column)
{
    if (!s)
        return MML_EINVAL;
    mml_ctx *ctx = s->ctx;
    if (!s->bind)
        return mml__error(ctx, MML_ESTATE,
                          "session_predict_raw: no columns bound (mml_session_bind_columns)");
    if (n_rows < 0 || (n_rows > 0 && (!values || !prob)))
        return mml__error(ctx, MML_EINVAL, "session_predict_raw: %lld rows, NULL values or output",
                          (long long)n_rows);
    const int32_t nc = s->bind->n_columns;
    int64_t first_bad = -1;
    int32_t first_col = -1, first_st = MML_OK;
    int rc = MML_OK;
    for (int64_t r0 = 0; r0 < n_rows && rc >= 0; r0 += s->cap_rows) {
        int64_t n = n_rows - r0 < s->cap_rows ? n_rows - r0 : s->cap_rows;
        int32_t *badc = bad_column ? bad_column + r0 : s->badc;
        int64_t fb = first_bad;
        rc = raw_chunk(s, r0, n, values, lens, prob, badc, &first_bad);
        if (fb < 0 && first_bad >= 0) {
            first_col = badc[first_bad - r0];
            first_st = s->st[first_bad - r0];
        }
        if (status)
            memcpy(status + r0, s->st, sizeof(int32_t) * (size_t)n);
    }
    /* Last, so that the forward passes do not clear it. */
    if (rc >= 0 && first_bad >= 0) {
        const char *v = first_col >= 0 ? values[first_bad * nc + first_col] : NULL;
        size_t len = v ? (lens ? lens[first_bad * nc + first_col] : strlen(v)) : 0;
        mml__error(ctx, first_st, "session_predict_raw: row %lld, column %d: %s \"%.*s%s\"",
                   (long long)first_bad, (int)first_col, raw_what(first_st),
                   (int)(len > 40 ? 40 : len), v ? v : "", len > 40 ? "..." : "");
    }
    return rc;
}
