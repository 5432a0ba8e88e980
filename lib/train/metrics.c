/* Exact ROC AUC, log loss and the per-domain metrics accumulator. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "moemlora/metrics.h"
#include "train/metrics_internal.h"

/* Scores are sorted as 32-bit keys whose unsigned order is the float order
 * (-0 and +0 share a key); an item is (key << 32) | label. */
static uint32_t float_key(float f)
{
    if (f == 0.0f)
        f = 0.0f;
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/* LSD radix sort of a[0..n) by bits 32..63 (8 bits a pass), tmp holds n.
 * The result is in a. Passes whose digit is the same for every item are skipped. */
static void radix_sort_hi(uint64_t *a, uint64_t *tmp, int64_t n)
{
    uint64_t *src = a, *dst = tmp;
    for (int shift = 32; shift < 64; shift += 8) {
        int64_t count[256];
        memset(count, 0, sizeof count);
        for (int64_t i = 0; i < n; i++)
            count[(src[i] >> shift) & 0xff]++;
        if (n == 0 || count[(src[0] >> shift) & 0xff] == n)
            continue;
        int64_t pos = 0;
        for (int k = 0; k < 256; k++) {
            int64_t c = count[k];
            count[k] = pos;
            pos += c;
        }
        for (int64_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & 0xff]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a && n > 0)
        memcpy(a, src, (size_t)n * sizeof *a);
}

/* AUC of sorted items; 0 and *defined = 0 for one class. */
static double auc_sorted(const uint64_t *a, int64_t n, int32_t *defined)
{
    uint64_t pos = 0, neg = 0, acc2 = 0;
    for (int64_t i = 0; i < n;) {
        uint32_t key = (uint32_t)(a[i] >> 32);
        uint64_t gp = 0, gn = 0;
        for (; i < n && (uint32_t)(a[i] >> 32) == key; i++) {
            if (a[i] & 1u)
                gp++;
            else
                gn++;
        }
        acc2 += 2 * neg * gp + gp * gn;
        pos += gp;
        neg += gn;
    }
    if (pos == 0 || neg == 0) {
        *defined = 0;
        return 0.0;
    }
    *defined = 1;
    return (double)acc2 / (2.0 * (double)pos * (double)neg);
}

static double bce(float z, float y)
{
    double zd = z;
    return (zd > 0 ? zd : 0.0) - zd * (double)y + log1p(exp(-fabs(zd)));
}

/* The largest number of rows one AUC takes (keeps the pair count exact in 64 bits). */
#define AUC_MAX_ROWS ((int64_t)UINT32_MAX)

static int auc_with(mml_ctx *ctx, const mml_allocator *al, const float *scores,
                    const float *labels, int64_t n, double *auc, int32_t *defined)
{
    if (!auc || !defined || n < 0 || (n > 0 && (!scores || !labels)))
        return mml__error(ctx, MML_EINVAL, "mml_auc: NULL pointer or negative n");
    *auc = 0;
    *defined = 0;
    if (n > AUC_MAX_ROWS)
        return mml__error(ctx, MML_ERANGE, "mml_auc: more than 2^32 - 1 rows");
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] != 0.0f && labels[i] != 1.0f)
            return mml__error(ctx, MML_EINVAL, "mml_auc: label %lld is %g, expected 0 or 1",
                              (long long)i, (double)labels[i]);
        if (isnan(scores[i]))
            return mml__error(ctx, MML_ENONFINITE, "mml_auc: score %lld is NaN", (long long)i);
    }
    if (n == 0)
        return MML_OK;
    size_t bytes = (size_t)n * sizeof(uint64_t);
    uint64_t *a = mml__alloc_with(al, bytes), *t = mml__alloc_with(al, bytes);
    if (!a || !t) {
        mml__free_with(al, a, bytes);
        mml__free_with(al, t, bytes);
        return mml__error(ctx, MML_ENOMEM, "mml_auc: out of memory");
    }
    for (int64_t i = 0; i < n; i++)
        a[i] = (uint64_t)float_key(scores[i]) << 32 | (labels[i] == 1.0f);
    radix_sort_hi(a, t, n);
    *auc = auc_sorted(a, n, defined);
    mml__free_with(al, a, bytes);
    mml__free_with(al, t, bytes);
    return MML_OK;
}

int mml_auc(const float *scores, const float *labels, int64_t n, double *auc, int32_t *defined)
{
    return auc_with(NULL, mml__libc_allocator(), scores, labels, n, auc, defined);
}

int mml_auc_ex(mml_ctx *ctx, const float *scores, const float *labels, int64_t n, double *auc,
               int32_t *defined)
{
    if (!ctx)
        return MML_EINVAL;
    return auc_with(ctx, &ctx->allocator, scores, labels, n, auc, defined);
}

int mml_logloss(const float *logits, const float *labels, int64_t n, double *out)
{
    if (!out || n < 0 || (n > 0 && (!logits || !labels)))
        return MML_EINVAL;
    *out = 0;
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] != 0.0f && labels[i] != 1.0f)
            return MML_EINVAL;
        if (!isfinite(logits[i]))
            return MML_ENONFINITE;
        s += bce(logits[i], labels[i]);
    }
    *out = n > 0 ? s / (double)n : 0.0;
    return MML_OK;
}

/* ------------------------------------------------------------ accumulator */

typedef struct gitem {
    int32_t group;
    uint32_t key;
    uint32_t label;
} gitem;

typedef struct dom_acc {
    int64_t n, npos, cap;
    double ll;
    uint64_t *items;
} dom_acc;

struct mml_metrics {
    mml_ctx *ctx;
    int32_t D;
    int32_t computed;
    dom_acc *dom;
    int64_t *pending; /* per domain: rows of the batch being added */
    mml_domain_metrics *res;
    gitem *g;
    int64_t gn, gcap;
    uint64_t *buf, *tmp;
    int64_t buf_cap;
};

int mml_metrics_create(mml_metrics **out, mml_ctx *ctx, int32_t n_domains)
{
    if (out)
        *out = NULL;
    if (!ctx)
        return MML_EINVAL;
    if (!out)
        return mml__error(ctx, MML_EINVAL, "mml_metrics_create: NULL output");
    if (n_domains < 1 || n_domains > (1 << 24))
        return mml__error(ctx, MML_EINVAL, "mml_metrics_create: n_domains %d not in 1..2^24",
                          (int)n_domains);
    mml_metrics *m = mml__calloc(ctx, 1, sizeof *m);
    if (!m)
        return mml__error(ctx, MML_ENOMEM, "out of memory creating metrics");
    m->ctx = ctx;
    m->D = n_domains;
    m->dom = mml__calloc(ctx, (size_t)n_domains, sizeof *m->dom);
    m->res = mml__calloc(ctx, (size_t)n_domains, sizeof *m->res);
    m->pending = mml__calloc(ctx, (size_t)n_domains, sizeof *m->pending);
    if (!m->dom || !m->res || !m->pending) {
        mml_metrics_destroy(m);
        return mml__error(ctx, MML_ENOMEM, "out of memory creating metrics");
    }
    *out = m;
    return MML_OK;
}

void mml_metrics_destroy(mml_metrics *m)
{
    if (!m)
        return;
    mml_ctx *ctx = m->ctx;
    if (m->dom)
        for (int32_t d = 0; d < m->D; d++)
            mml__free(ctx, m->dom[d].items, (size_t)m->dom[d].cap * sizeof(uint64_t));
    mml__free(ctx, m->dom, (size_t)m->D * sizeof *m->dom);
    mml__free(ctx, m->res, (size_t)m->D * sizeof *m->res);
    mml__free(ctx, m->pending, (size_t)m->D * sizeof *m->pending);
    mml__free(ctx, m->g, (size_t)m->gcap * sizeof *m->g);
    mml__free(ctx, m->buf, (size_t)m->buf_cap * sizeof *m->buf);
    mml__free(ctx, m->tmp, (size_t)m->buf_cap * sizeof *m->tmp);
    mml__free(ctx, m, sizeof *m);
}

void mml_metrics_reset(mml_metrics *m)
{
    if (!m)
        return;
    for (int32_t d = 0; d < m->D; d++) {
        m->dom[d].n = m->dom[d].npos = 0;
        m->dom[d].ll = 0;
    }
    m->gn = 0;
    m->computed = 0;
}

int32_t mml_metrics_n_domains(const mml_metrics *m) { return m ? m->D : 0; }

/* Grows a uint64 or gitem array to hold need elements (doubling, contents kept). */
static int grow(mml_ctx *ctx, void *pp, int64_t *cap, int64_t need, size_t elem)
{
    if (need <= *cap)
        return MML_OK;
    int64_t nc = *cap > 0 ? *cap : 256;
    while (nc < need)
        nc *= 2;
    void *np = mml__alloc(ctx, (size_t)nc * elem);
    if (!np)
        return MML_ENOMEM;
    void *p;
    memcpy(&p, pp, sizeof p);
    if (p) {
        memcpy(np, p, (size_t)*cap * elem);
        mml__free(ctx, p, (size_t)*cap * elem);
    }
    memcpy(pp, &np, sizeof np);
    *cap = nc;
    return MML_OK;
}

static int add_rows(mml_metrics *m, const float *logits, const float *labels,
                    const int32_t *domain, const int32_t *group, int64_t n)
{
    mml_ctx *ctx = m->ctx;
    if (n < 0 || (n > 0 && (!logits || !labels || !domain)))
        return mml__error(ctx, MML_EINVAL, "mml_metrics_add: NULL array or negative n");
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] != 0.0f && labels[i] != 1.0f)
            return mml__error(ctx, MML_EINVAL, "mml_metrics_add: label %lld is %g, expected 0 or 1",
                              (long long)i, (double)labels[i]);
        if (!isfinite(logits[i]))
            return mml__error(ctx, MML_ENONFINITE, "mml_metrics_add: logit %lld is not finite",
                              (long long)i);
        if (domain[i] < 0 || domain[i] >= m->D)
            return mml__error(ctx, MML_ERANGE, "mml_metrics_add: domain %d of row %lld not in 0..%d",
                              (int)domain[i], (long long)i, (int)m->D - 1);
    }
    /* Reserve first so a failure leaves the accumulator unchanged. */
    for (int64_t i = 0; i < n; i++)
        m->pending[domain[i]] = 0;
    for (int64_t i = 0; i < n; i++)
        m->pending[domain[i]]++;
    for (int64_t i = 0; i < n; i++) {
        int32_t d = domain[i];
        dom_acc *a = &m->dom[d];
        int64_t need = a->n + m->pending[d];
        if (need > AUC_MAX_ROWS)
            return mml__error(ctx, MML_ERANGE,
                              "mml_metrics_add: more than 2^32 - 1 rows in domain %d", (int)d);
        if (grow(ctx, &a->items, &a->cap, need, sizeof *a->items) < 0)
            return mml__error(ctx, MML_ENOMEM, "out of memory in mml_metrics_add");
    }
    if (group && grow(ctx, &m->g, &m->gcap, m->gn + n, sizeof *m->g) < 0)
        return mml__error(ctx, MML_ENOMEM, "out of memory in mml_metrics_add");
    for (int64_t i = 0; i < n; i++) {
        dom_acc *a = &m->dom[domain[i]];
        uint32_t key = float_key(logits[i]);
        int y = labels[i] == 1.0f;
        a->items[a->n++] = (uint64_t)key << 32 | (uint64_t)y;
        a->npos += y;
        a->ll += bce(logits[i], labels[i]);
        if (group) {
            gitem *g = &m->g[m->gn++];
            g->group = group[i];
            g->key = key;
            g->label = (uint32_t)y;
        }
    }
    m->computed = 0;
    return MML_OK;
}

int mml_metrics_add(mml_metrics *m, const float *logits, const float *labels, const int32_t *domain,
                    int64_t n)
{
    if (!m)
        return MML_EINVAL;
    return add_rows(m, logits, labels, domain, NULL, n);
}

int mml_metrics_add_grouped(mml_metrics *m, const float *logits, const float *labels,
                            const int32_t *domain, const int32_t *group, int64_t n)
{
    if (!m)
        return MML_EINVAL;
    if (!group && n > 0)
        return mml__error(m->ctx, MML_EINVAL, "mml_metrics_add_grouped: NULL group array");
    return add_rows(m, logits, labels, domain, group, n);
}

static int cmp_gitem(const void *pa, const void *pb)
{
    const gitem *a = pa, *b = pb;
    if (a->group != b->group)
        return a->group < b->group ? -1 : 1;
    return (a->key > b->key) - (a->key < b->key);
}

static int compute(mml_metrics *m, mml_metrics_summary *out)
{
    mml_ctx *ctx = m->ctx;
    memset(out, 0, sizeof *out);
    int64_t total = 0;
    for (int32_t d = 0; d < m->D; d++)
        total += m->dom[d].n;
    if (total > m->buf_cap) {
        size_t bytes = (size_t)total * sizeof(uint64_t);
        uint64_t *b = mml__alloc(ctx, bytes), *t = mml__alloc(ctx, bytes);
        if (!b || !t) {
            mml__free(ctx, b, bytes);
            mml__free(ctx, t, bytes);
            return mml__error(ctx, MML_ENOMEM, "out of memory in mml_metrics_compute");
        }
        mml__free(ctx, m->buf, (size_t)m->buf_cap * sizeof *m->buf);
        mml__free(ctx, m->tmp, (size_t)m->buf_cap * sizeof *m->tmp);
        m->buf = b;
        m->tmp = t;
        m->buf_cap = total;
    }
    double ll = 0, sum_auc = 0, wsum_auc = 0;
    int64_t wn = 0, pos = 0;
    int32_t nd_auc = 0;
    for (int32_t d = 0; d < m->D; d++) {
        dom_acc *a = &m->dom[d];
        mml_domain_metrics *r = &m->res[d];
        memset(r, 0, sizeof *r);
        r->n = a->n;
        r->n_positive = a->npos;
        r->logloss = a->n > 0 ? a->ll / (double)a->n : 0.0;
        radix_sort_hi(a->items, m->tmp, a->n);
        r->auc = auc_sorted(a->items, a->n, &r->auc_defined);
        if (a->n > 0)
            memcpy(m->buf + pos, a->items, (size_t)a->n * sizeof *a->items);
        pos += a->n;
        ll += a->ll;
        if (r->auc_defined) {
            nd_auc++;
            sum_auc += r->auc;
            wsum_auc += (double)a->n * r->auc;
            wn += a->n;
        }
    }
    out->n = total;
    out->logloss = total > 0 ? ll / (double)total : 0.0;
    out->n_domains_with_auc = nd_auc;
    out->mean_auc = nd_auc > 0 ? sum_auc / nd_auc : 0.0;
    out->wauc = wn > 0 ? wsum_auc / (double)wn : 0.0;
    if (total > AUC_MAX_ROWS || total == 0) {
        out->auc_defined = 0;
    } else {
        radix_sort_hi(m->buf, m->tmp, total);
        out->auc = auc_sorted(m->buf, total, &out->auc_defined);
    }
    /* Group AUC over the grouped rows. */
    if (m->gn > 0) {
        qsort(m->g, (size_t)m->gn, sizeof *m->g, cmp_gitem);
        double gsum = 0;
        int64_t gw = 0;
        for (int64_t i = 0; i < m->gn;) {
            int32_t grp = m->g[i].group;
            int64_t start = i;
            uint64_t gpos = 0, gneg = 0, acc2 = 0;
            while (i < m->gn && m->g[i].group == grp) {
                uint32_t key = m->g[i].key;
                uint64_t tp = 0, tn = 0;
                for (; i < m->gn && m->g[i].group == grp && m->g[i].key == key; i++) {
                    if (m->g[i].label)
                        tp++;
                    else
                        tn++;
                }
                acc2 += 2 * gneg * tp + tp * tn;
                gpos += tp;
                gneg += tn;
            }
            if (gpos > 0 && gneg > 0) {
                int64_t ng = i - start;
                gsum += (double)ng * ((double)acc2 / (2.0 * (double)gpos * (double)gneg));
                gw += ng;
            }
        }
        if (gw > 0) {
            out->gauc = gsum / (double)gw;
            out->gauc_defined = 1;
        }
    }
    m->computed = 1;
    return MML_OK;
}

int mml_metrics_compute_sized(mml_metrics *m, mml_metrics_summary *out, uint32_t struct_size)
{
    if (!m)
        return MML_EINVAL;
    if (!out)
        return mml__error(m->ctx, MML_EINVAL, "mml_metrics_compute: NULL output");
    int rc = mml__check_size(m->ctx, struct_size, sizeof *out,
                             MML__OLDER_SIZES_mml_metrics_summary, "mml_metrics_summary");
    if (rc < 0)
        return rc;
    mml_metrics_summary full;
    rc = compute(m, &full);
    if (rc < 0)
        return rc;
    return mml__init_versioned(out, &full, sizeof full, struct_size,
                               MML__OLDER_SIZES_mml_metrics_summary);
}

int mml_metrics_domain_sized(const mml_metrics *m, int32_t d, mml_domain_metrics *out,
                             uint32_t struct_size)
{
    if (!m || !out)
        return MML_EINVAL;
    if (d < 0 || d >= m->D)
        return mml__error(m->ctx, MML_ERANGE, "mml_metrics_domain: domain %d not in 0..%d", (int)d,
                          (int)m->D - 1);
    if (!m->computed)
        return mml__error(m->ctx, MML_ESTATE,
                          "mml_metrics_domain: call mml_metrics_compute after the last add");
    return mml__write_versioned(m->ctx, out, &m->res[d], sizeof *out, struct_size,
                                MML__OLDER_SIZES_mml_domain_metrics, "mml_domain_metrics");
}

/* ------------------------------------------------- packed rows (reduce.c) */

/* Layout: i32 D, i32 0, then D times (i64 n, i64 npos, f64 ll, n u64 items),
 * then i64 gn and gn gitems, all native-endian (one process's workers share
 * a machine type). */
size_t mml__metrics_packed_size(const mml_metrics *m)
{
    size_t s = 8;
    for (int32_t d = 0; d < m->D; d++)
        s += 24 + (size_t)m->dom[d].n * sizeof(uint64_t);
    return s + 8 + (size_t)m->gn * sizeof(gitem);
}

void mml__metrics_pack(const mml_metrics *m, void *out)
{
    unsigned char *p = out;
    int32_t hd[2] = {m->D, 0};
    memcpy(p, hd, 8);
    p += 8;
    for (int32_t d = 0; d < m->D; d++) {
        const dom_acc *a = &m->dom[d];
        memcpy(p, &a->n, 8);
        memcpy(p + 8, &a->npos, 8);
        memcpy(p + 16, &a->ll, 8);
        p += 24;
        if (a->n > 0)
            memcpy(p, a->items, (size_t)a->n * sizeof(uint64_t));
        p += (size_t)a->n * sizeof(uint64_t);
    }
    memcpy(p, &m->gn, 8);
    p += 8;
    if (m->gn > 0)
        memcpy(p, m->g, (size_t)m->gn * sizeof(gitem));
}

int mml__metrics_append_packed(mml_metrics *m, const void *data, size_t size)
{
    mml_ctx *ctx = m->ctx;
    const unsigned char *p = data, *end = p + size;
    int32_t hd[2];
    if (size < 8)
        return mml__error(ctx, MML_ECORRUPT, "metrics block of %zu bytes", size);
    memcpy(hd, p, 8);
    if (hd[0] != m->D)
        return mml__error(ctx, MML_ECORRUPT, "metrics block of %d domains, expected %d",
                          (int)hd[0], (int)m->D);
    /* Check and reserve first, so that a failure leaves m as it was. */
    const unsigned char *q = p + 8;
    for (int32_t d = 0; d < m->D; d++) {
        int64_t n;
        if ((size_t)(end - q) < 24)
            return mml__error(ctx, MML_ECORRUPT, "metrics block truncated in domain %d", (int)d);
        memcpy(&n, q, 8);
        if (n < 0 || (uint64_t)n > (uint64_t)(end - q - 24) / sizeof(uint64_t))
            return mml__error(ctx, MML_ECORRUPT, "metrics block: %lld rows in domain %d",
                              (long long)n, (int)d);
        if (m->dom[d].n + n > AUC_MAX_ROWS)
            return mml__error(ctx, MML_ERANGE, "metrics: more than 2^32 - 1 rows in domain %d",
                              (int)d);
        if (grow(ctx, &m->dom[d].items, &m->dom[d].cap, m->dom[d].n + n, sizeof(uint64_t)) < 0)
            return mml__error(ctx, MML_ENOMEM, "out of memory combining metrics");
        q += 24 + (size_t)n * sizeof(uint64_t);
    }
    int64_t gn;
    if ((size_t)(end - q) < 8)
        return mml__error(ctx, MML_ECORRUPT, "metrics block truncated before its groups");
    memcpy(&gn, q, 8);
    if (gn < 0 || (uint64_t)gn != (uint64_t)(end - q - 8) / sizeof(gitem) ||
        (size_t)(end - q - 8) % sizeof(gitem))
        return mml__error(ctx, MML_ECORRUPT, "metrics block: %lld grouped rows do not fit",
                          (long long)gn);
    if (gn > 0 && grow(ctx, &m->g, &m->gcap, m->gn + gn, sizeof *m->g) < 0)
        return mml__error(ctx, MML_ENOMEM, "out of memory combining metrics");
    q = p + 8;
    for (int32_t d = 0; d < m->D; d++) {
        dom_acc *a = &m->dom[d];
        int64_t n, npos;
        double ll;
        memcpy(&n, q, 8);
        memcpy(&npos, q + 8, 8);
        memcpy(&ll, q + 16, 8);
        q += 24;
        if (n > 0)
            memcpy(a->items + a->n, q, (size_t)n * sizeof(uint64_t));
        q += (size_t)n * sizeof(uint64_t);
        a->n += n;
        a->npos += npos;
        a->ll += ll;
    }
    q += 8;
    if (gn > 0)
        memcpy(m->g + m->gn, q, (size_t)gn * sizeof(gitem));
    m->gn += gn;
    m->computed = 0;
    return MML_OK;
}
