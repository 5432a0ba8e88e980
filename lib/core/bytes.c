#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/bytes.h"

/* Bitwise and branch-free: a model file is checked once per load, so a
 * table buys little. */
uint32_t mml__crc32c(uint32_t crc, const void *data, size_t size)
{
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < size; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

void mml__wbuf_init(mml__wbuf *w, mml_ctx *ctx)
{
    memset(w, 0, sizeof *w);
    w->ctx = ctx;
}

void mml__wbuf_free(mml__wbuf *w)
{
    mml__free(w->ctx, w->data, w->cap);
    w->data = NULL;
    w->len = w->cap = 0;
}

int mml__wbuf_status(const mml__wbuf *w) { return w->status; }

/* Moves the contents to a block of exactly cap bytes (cap >= len). */
static int wbuf_regrow(mml__wbuf *w, size_t cap)
{
    uint8_t *p = mml__alloc(w->ctx, cap);
    if (!p) {
        w->status = mml__error(w->ctx, MML_ENOMEM, "model file: out of memory for %zu bytes", cap);
        return 0;
    }
    if (w->len)
        memcpy(p, w->data, w->len);
    mml__free(w->ctx, w->data, w->cap);
    w->data = p;
    w->cap = cap;
    return 1;
}

static int wbuf_room(mml__wbuf *w, size_t n)
{
    if (w->status < 0)
        return 0;
    if (n <= w->cap - w->len)
        return 1;
    if (n > SIZE_MAX / 2 - w->len) {
        w->status = mml__error(w->ctx, MML_ENOMEM, "model file: %zu bytes are too many", n);
        return 0;
    }
    size_t cap = w->cap ? w->cap : 4096;
    while (cap - w->len < n)
        cap *= 2;
    return wbuf_regrow(w, cap);
}

void mml__wbuf_reserve(mml__wbuf *w, size_t total)
{
    if (w->status >= 0 && total > w->cap)
        (void)wbuf_regrow(w, total);
}

void mml__wbuf_bytes(mml__wbuf *w, const void *p, size_t n)
{
    if (n && wbuf_room(w, n)) {
        memcpy(w->data + w->len, p, n);
        w->len += n;
    }
}

void mml__wbuf_zeros(mml__wbuf *w, size_t n)
{
    if (n && wbuf_room(w, n)) {
        memset(w->data + w->len, 0, n);
        w->len += n;
    }
}

void mml__wbuf_align(mml__wbuf *w, size_t align) { mml__wbuf_zeros(w, (align - w->len % align) % align); }

static void put_le(mml__wbuf *w, uint64_t v, int n)
{
    uint8_t b[8];
    for (int i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    mml__wbuf_bytes(w, b, (size_t)n);
}

void mml__wbuf_u8(mml__wbuf *w, uint8_t v) { put_le(w, v, 1); }
void mml__wbuf_u16(mml__wbuf *w, uint16_t v) { put_le(w, v, 2); }
void mml__wbuf_u32(mml__wbuf *w, uint32_t v) { put_le(w, v, 4); }
void mml__wbuf_u64(mml__wbuf *w, uint64_t v) { put_le(w, v, 8); }
void mml__wbuf_i32(mml__wbuf *w, int32_t v) { put_le(w, (uint32_t)v, 4); }
void mml__wbuf_i64(mml__wbuf *w, int64_t v) { put_le(w, (uint64_t)v, 8); }

void mml__wbuf_f32(mml__wbuf *w, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    put_le(w, u, 4);
}

void mml__wbuf_f64(mml__wbuf *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    put_le(w, u, 8);
}

void mml__wbuf_f32s(mml__wbuf *w, const float *v, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n > SIZE_MAX / 4) {
        if (w->status >= 0)
            w->status = mml__error(w->ctx, MML_ENOMEM, "model file: %zu floats are too many", n);
        return;
    }
    mml__wbuf_bytes(w, v, n * 4);
#else
    for (size_t i = 0; i < n; i++)
        mml__wbuf_f32(w, v[i]);
#endif
}

void mml__wbuf_str(mml__wbuf *w, const char *s)
{
    if (!s) {
        mml__wbuf_u32(w, UINT32_MAX);
        return;
    }
    size_t n = strlen(s);
    mml__wbuf_u32(w, (uint32_t)n);
    mml__wbuf_bytes(w, s, n);
}

void mml__wbuf_patch_u32(mml__wbuf *w, size_t off, uint32_t v)
{
    if (w->status < 0 || off + 4 > w->len)
        return;
    for (int i = 0; i < 4; i++)
        w->data[off + (size_t)i] = (uint8_t)(v >> (8 * i));
}

void mml__wbuf_patch_u64(mml__wbuf *w, size_t off, uint64_t v)
{
    if (w->status < 0 || off + 8 > w->len)
        return;
    for (int i = 0; i < 8; i++)
        w->data[off + (size_t)i] = (uint8_t)(v >> (8 * i));
}

void mml__rbuf_init(mml__rbuf *r, mml_ctx *ctx, const void *data, size_t size, uint64_t base,
                    const char *where)
{
    r->ctx = ctx;
    r->data = data;
    r->size = size;
    r->pos = 0;
    r->base = base;
    r->where = where;
    r->status = 0;
}

int mml__rbuf_status(const mml__rbuf *r) { return r->status; }
size_t mml__rbuf_left(const mml__rbuf *r) { return r->size - r->pos; }

int mml__rbuf_fail(mml__rbuf *r, int status, const char *fmt, ...)
{
    if (r->status < 0)
        return r->status;
    char text[MML_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    r->status = mml__error(r->ctx, status, "%s at byte %llu: %s", r->where,
                           (unsigned long long)(r->base + r->pos), text);
    return r->status;
}

const void *mml__rbuf_bytes(mml__rbuf *r, size_t n, const char *what)
{
    if (r->status < 0)
        return NULL;
    if (n > r->size - r->pos) {
        mml__rbuf_fail(r, MML_ETRUNCATED, "%s needs %zu bytes, %zu left", what, n, r->size - r->pos);
        return NULL;
    }
    const void *p = r->data + r->pos;
    r->pos += n;
    return p;
}

void mml__rbuf_skip(mml__rbuf *r, size_t n, const char *what) { (void)mml__rbuf_bytes(r, n, what); }

void mml__rbuf_align(mml__rbuf *r, size_t align, const char *what)
{
    size_t pad = (size_t)((align - (r->base + r->pos) % align) % align);
    mml__rbuf_skip(r, pad, what);
}

static uint64_t get_le(mml__rbuf *r, int n, const char *what)
{
    const uint8_t *b = mml__rbuf_bytes(r, (size_t)n, what);
    uint64_t v = 0;
    for (int i = 0; b && i < n; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

uint8_t mml__rbuf_u8(mml__rbuf *r, const char *what) { return (uint8_t)get_le(r, 1, what); }
uint16_t mml__rbuf_u16(mml__rbuf *r, const char *what) { return (uint16_t)get_le(r, 2, what); }
uint32_t mml__rbuf_u32(mml__rbuf *r, const char *what) { return (uint32_t)get_le(r, 4, what); }
uint64_t mml__rbuf_u64(mml__rbuf *r, const char *what) { return get_le(r, 8, what); }
int32_t mml__rbuf_i32(mml__rbuf *r, const char *what) { return (int32_t)(uint32_t)get_le(r, 4, what); }
int64_t mml__rbuf_i64(mml__rbuf *r, const char *what) { return (int64_t)get_le(r, 8, what); }

float mml__rbuf_f32(mml__rbuf *r, const char *what)
{
    uint32_t u = (uint32_t)get_le(r, 4, what);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

double mml__rbuf_f64(mml__rbuf *r, const char *what)
{
    uint64_t u = get_le(r, 8, what);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

int mml__rbuf_f32s(mml__rbuf *r, float *out, size_t n, const char *what)
{
    if (n > SIZE_MAX / 4)
        return mml__rbuf_fail(r, MML_ECORRUPT, "%s: %zu floats", what, n);
    const uint8_t *b = mml__rbuf_bytes(r, n * 4, what);
    if (!b)
        return r->status;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n)
        memcpy(out, b, n * 4);
#else
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 | (uint32_t)b[4 * i + 2] << 16 |
                     (uint32_t)b[4 * i + 3] << 24;
        memcpy(&out[i], &u, 4);
    }
#endif
    return MML_OK;
}

int mml__rbuf_str(mml__rbuf *r, char **out, size_t *len_out, size_t max_len, int allow_null,
                  const char *what)
{
    *out = NULL;
    if (len_out)
        *len_out = 0;
    uint32_t n = mml__rbuf_u32(r, what);
    if (r->status < 0)
        return r->status;
    if (n == UINT32_MAX) {
        if (allow_null)
            return MML_OK;
        return mml__rbuf_fail(r, MML_ECORRUPT, "%s is missing", what);
    }
    if (n > max_len)
        return mml__rbuf_fail(r, MML_ECORRUPT, "%s has %u bytes, at most %zu allowed", what, n, max_len);
    const char *s = mml__rbuf_bytes(r, n, what);
    if (!s)
        return r->status;
    if (memchr(s, '\0', n))
        return mml__rbuf_fail(r, MML_ECORRUPT, "%s holds a NUL byte", what);
    char *copy = mml__alloc(r->ctx, (size_t)n + 1);
    if (!copy) {
        r->status = mml__error(r->ctx, MML_ENOMEM, "%s: out of memory for %s", r->where, what);
        return r->status;
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    *out = copy;
    if (len_out)
        *len_out = n;
    return MML_OK;
}

int64_t mml__rbuf_count(mml__rbuf *r, int64_t lo, int64_t hi, const char *what)
{
    int64_t v = mml__rbuf_i64(r, what);
    if (r->status < 0)
        return 0;
    if (v < lo || v > hi) {
        mml__rbuf_fail(r, MML_ECORRUPT, "%s = %lld outside [%lld, %lld]", what, (long long)v,
                       (long long)lo, (long long)hi);
        return 0;
    }
    return v;
}
