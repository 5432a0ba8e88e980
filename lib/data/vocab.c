/* Vocabularies (distinct strings <-> ids) and small helpers of the data layer. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

char *mml__strndup(mml_ctx *ctx, const char *s, size_t len)
{
    char *p = mml__alloc(ctx, len + 1);
    if (!p)
        return NULL;
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *mml__strdup(mml_ctx *ctx, const char *s) { return mml__strndup(ctx, s, strlen(s)); }

void mml__strfree(mml_ctx *ctx, char *s)
{
    if (s)
        mml__free(ctx, s, strlen(s) + 1);
}

int mml__grow(mml_ctx *ctx, void *pp, int64_t *cap, int64_t need, size_t elem)
{
    if (need <= *cap)
        return MML_OK;
    int64_t ncap = *cap > 0 ? *cap : 16;
    while (ncap < need) {
        if (ncap > INT64_MAX / 2)
            return MML_ENOMEM;
        ncap *= 2;
    }
    if ((uint64_t)ncap > SIZE_MAX / elem)
        return MML_ENOMEM;
    void *np = mml__alloc(ctx, (size_t)ncap * elem);
    if (!np)
        return MML_ENOMEM;
    /* pp is the address of a pointer of some object type: read and write it
     * with memcpy so no pointer is accessed through an incompatible type. */
    void *p;
    memcpy(&p, pp, sizeof p);
    if (p) {
        memcpy(np, p, (size_t)*cap * elem);
        mml__free(ctx, p, (size_t)*cap * elem);
    }
    memcpy(pp, &np, sizeof np);
    *cap = ncap;
    return MML_OK;
}

void mml__sort_idx(int32_t *idx, int32_t *tmp, int32_t n, mml__cmp_fn cmp, const void *user)
{
    /* Bottom-up merge sort: runs of width w are merged from idx into tmp and back. */
    int32_t *src = idx, *dst = tmp;
    for (int32_t w = 1; w < n; w = w > n / 2 ? n : 2 * w) {
        for (int32_t lo = 0; lo < n; lo += 2 * w) {
            int32_t mid = lo + w < n ? lo + w : n;
            int32_t hi = mid + w < n ? mid + w : n;
            int32_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                dst[k++] = cmp(user, src[j], src[i]) < 0 ? src[j++] : src[i++];
            while (i < mid)
                dst[k++] = src[i++];
            while (j < hi)
                dst[k++] = src[j++];
        }
        int32_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != idx)
        memcpy(idx, src, (size_t)n * sizeof *idx);
}

int mml__parse_canonical_int(const char *s, size_t len, int64_t *v)
{
    size_t i = 0;
    int neg = 0;
    if (len == 0)
        return 0;
    if (s[0] == '-') {
        neg = 1;
        i = 1;
    }
    size_t nd = len - i;
    if (nd == 0 || nd > 18)
        return 0;
    if (s[i] == '0' && (nd > 1 || neg))
        return 0;
    int64_t x = 0;
    for (; i < len; i++) {
        unsigned c = (unsigned)(unsigned char)s[i] - '0';
        if (c > 9)
            return 0;
        x = x * 10 + (int64_t)c;
    }
    *v = neg ? -x : x;
    return 1;
}

int mml__parse_float(const char *s, size_t len, float *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    double v = strtod(buf, &end);
    if (end != buf + len || !isfinite(v) || fabs(v) > FLT_MAX)
        return 0;
    *out = (float)v;
    return 1;
}

/* ------------------------------------------------------------ vocabulary */

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

int mml__vocab_create(mml_ctx *ctx, mml__vocab **out)
{
    *out = NULL;
    mml__vocab *v = mml__calloc(ctx, 1, sizeof *v);
    if (!v)
        return MML_ENOMEM;
    v->all_int = 1;
    v->slots = 64;
    v->table = mml__alloc(ctx, v->slots * sizeof *v->table);
    v->off_cap = 32;
    v->ival_cap = 32;
    v->off = mml__alloc(ctx, (size_t)v->off_cap * sizeof *v->off);
    v->ival = mml__alloc(ctx, (size_t)v->ival_cap * sizeof *v->ival);
    v->chars_cap = 256;
    v->chars = mml__alloc(ctx, (size_t)v->chars_cap);
    if (!v->table || !v->off || !v->ival || !v->chars) {
        mml__vocab_destroy(ctx, v);
        return MML_ENOMEM;
    }
    memset(v->table, 0xff, v->slots * sizeof *v->table);
    v->off[0] = 0;
    *out = v;
    return MML_OK;
}

void mml__vocab_destroy(mml_ctx *ctx, mml__vocab *v)
{
    if (!v)
        return;
    mml__free(ctx, v->table, v->slots * sizeof *v->table);
    mml__free(ctx, v->off, (size_t)v->off_cap * sizeof *v->off);
    mml__free(ctx, v->ival, (size_t)v->ival_cap * sizeof *v->ival);
    mml__free(ctx, v->chars, (size_t)v->chars_cap);
    mml__free(ctx, v, sizeof *v);
}

static uint32_t probe_start(const mml__vocab *v, const char *s, size_t len)
{
    return (uint32_t)hash_bytes(s, len) & (v->slots - 1);
}

int32_t mml__vocab_find(const mml__vocab *v, const char *s, size_t len)
{
    for (uint32_t h = probe_start(v, s, len);; h = (h + 1) & (v->slots - 1)) {
        int32_t id = v->table[h];
        if (id < 0)
            return -1;
        int64_t l = v->off[id + 1] - v->off[id] - 1;
        if ((size_t)l == len && memcmp(v->chars + v->off[id], s, len) == 0)
            return id;
    }
}

static int rehash(mml_ctx *ctx, mml__vocab *v, uint32_t slots)
{
    int32_t *t = mml__alloc(ctx, slots * sizeof *t);
    if (!t)
        return MML_ENOMEM;
    memset(t, 0xff, slots * sizeof *t);
    mml__free(ctx, v->table, v->slots * sizeof *v->table);
    v->table = t;
    v->slots = slots;
    for (int32_t id = 0; id < v->n; id++) {
        const char *s = v->chars + v->off[id];
        size_t len = (size_t)(v->off[id + 1] - v->off[id] - 1);
        uint32_t h = probe_start(v, s, len);
        while (t[h] >= 0)
            h = (h + 1) & (slots - 1);
        t[h] = id;
    }
    return MML_OK;
}

int mml__vocab_intern(mml_ctx *ctx, mml__vocab *v, const char *s, size_t len, int32_t *id)
{
    int32_t f = mml__vocab_find(v, s, len);
    if (f >= 0) {
        *id = f;
        return MML_OK;
    }
    if (v->n >= INT32_MAX - 2)
        return mml__error(ctx, MML_ERANGE, "vocabulary larger than 2^31 values");
    if ((uint64_t)(v->n + 1) * 2 > v->slots) {
        if (v->slots > (UINT32_MAX >> 2))
            return MML_ENOMEM;
        int rc = rehash(ctx, v, v->slots * 2);
        if (rc < 0)
            return rc;
    }
    int rc = mml__grow(ctx, &v->off, &v->off_cap, v->n + 2, sizeof *v->off);
    if (rc < 0)
        return rc;
    rc = mml__grow(ctx, &v->ival, &v->ival_cap, v->n + 1, sizeof *v->ival);
    if (rc < 0)
        return rc;
    if (v->chars_len + (int64_t)len + 1 > v->chars_cap) {
        rc = mml__grow(ctx, &v->chars, &v->chars_cap, v->chars_len + (int64_t)len + 1, 1);
        if (rc < 0)
            return rc;
    }
    memcpy(v->chars + v->chars_len, s, len);
    v->chars[v->chars_len + (int64_t)len] = '\0';
    int32_t nid = v->n;
    v->off[nid] = v->chars_len;
    v->chars_len += (int64_t)len + 1;
    v->off[nid + 1] = v->chars_len;
    int64_t iv = 0;
    if (v->all_int && !mml__parse_canonical_int(s, len, &iv))
        v->all_int = 0;
    v->ival[nid] = iv;
    v->n = nid + 1;
    uint32_t h = probe_start(v, s, len);
    while (v->table[h] >= 0)
        h = (h + 1) & (v->slots - 1);
    v->table[h] = nid;
    *id = nid;
    return MML_OK;
}

static int cmp_vocab(const void *user, int32_t a, int32_t b)
{
    const mml__vocab *v = user;
    if (v->all_int) {
        if (v->ival[a] != v->ival[b])
            return v->ival[a] < v->ival[b] ? -1 : 1;
        return 0;
    }
    const char *sa = v->chars + v->off[a], *sb = v->chars + v->off[b];
    size_t la = (size_t)(v->off[a + 1] - v->off[a] - 1), lb = (size_t)(v->off[b + 1] - v->off[b] - 1);
    int c = memcmp(sa, sb, la < lb ? la : lb);
    if (c)
        return c;
    return la < lb ? -1 : la > lb ? 1 : 0;
}

int mml__vocab_sort(mml_ctx *ctx, mml__vocab *v, int32_t **remap)
{
    *remap = NULL;
    int32_t n = v->n;
    size_t nb = (size_t)(n > 0 ? n : 1) * sizeof(int32_t);
    int32_t *order = mml__alloc(ctx, nb), *tmp = mml__alloc(ctx, nb), *map = mml__alloc(ctx, nb);
    int64_t *noff = mml__alloc(ctx, (size_t)v->off_cap * sizeof *noff);
    int64_t *nival = mml__alloc(ctx, (size_t)v->ival_cap * sizeof *nival);
    char *nchars = mml__alloc(ctx, (size_t)v->chars_cap);
    if (!order || !tmp || !map || !noff || !nival || !nchars) {
        mml__free(ctx, order, nb);
        mml__free(ctx, tmp, nb);
        mml__free(ctx, map, nb);
        mml__free(ctx, noff, (size_t)v->off_cap * sizeof *noff);
        mml__free(ctx, nival, (size_t)v->ival_cap * sizeof *nival);
        mml__free(ctx, nchars, (size_t)v->chars_cap);
        return MML_ENOMEM;
    }
    for (int32_t i = 0; i < n; i++)
        order[i] = i;
    mml__sort_idx(order, tmp, n, cmp_vocab, v);
    int64_t pos = 0;
    noff[0] = 0;
    for (int32_t k = 0; k < n; k++) {
        int32_t o = order[k];
        int64_t l = v->off[o + 1] - v->off[o];
        memcpy(nchars + pos, v->chars + v->off[o], (size_t)l);
        nival[k] = v->ival[o];
        pos += l;
        noff[k + 1] = pos;
        map[o] = k;
    }
    mml__free(ctx, v->off, (size_t)v->off_cap * sizeof *v->off);
    mml__free(ctx, v->ival, (size_t)v->ival_cap * sizeof *v->ival);
    mml__free(ctx, v->chars, (size_t)v->chars_cap);
    v->off = noff;
    v->ival = nival;
    v->chars = nchars;
    mml__free(ctx, order, nb);
    mml__free(ctx, tmp, nb);
    /* Rebuild the hash table for the new ids (same size, no allocation). */
    memset(v->table, 0xff, v->slots * sizeof *v->table);
    for (int32_t id = 0; id < n; id++) {
        const char *s = v->chars + v->off[id];
        size_t len = (size_t)(v->off[id + 1] - v->off[id] - 1);
        uint32_t h = probe_start(v, s, len);
        while (v->table[h] >= 0)
            h = (h + 1) & (v->slots - 1);
        v->table[h] = id;
    }
    *remap = map;
    return MML_OK;
}
