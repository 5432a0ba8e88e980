/* Little-endian byte streams for the model file: a growable writer, a
 * bounds-checked reader over untrusted bytes, and CRC-32C. */
#ifndef MML_BYTES_H
#define MML_BYTES_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, initial value and
 * final XOR 0xFFFFFFFF): crc32c("123456789") = 0xE3069283. Continue a CRC by
 * passing the previous result as crc (start with 0). */
uint32_t mml__crc32c(uint32_t crc, const void *data, size_t size);

/* A growable byte buffer on the context allocator. The first failure is
 * sticky: later puts do nothing and mml__wbuf_status() returns it (with
 * the message set once). */
typedef struct mml__wbuf {
    mml_ctx *ctx;
    uint8_t *data;
    size_t len, cap;
    int status;
} mml__wbuf;

void mml__wbuf_init(mml__wbuf *w, mml_ctx *ctx);
void mml__wbuf_free(mml__wbuf *w);
int mml__wbuf_status(const mml__wbuf *w);
/* Room for exactly total bytes in all (no doubling): a buffer filled to
 * total then has cap == len and can be handed over as it is. */
void mml__wbuf_reserve(mml__wbuf *w, size_t total);
void mml__wbuf_bytes(mml__wbuf *w, const void *p, size_t n);
void mml__wbuf_zeros(mml__wbuf *w, size_t n);
/* Zero bytes up to the next multiple of align (a power of two). */
void mml__wbuf_align(mml__wbuf *w, size_t align);
void mml__wbuf_u8(mml__wbuf *w, uint8_t v);
void mml__wbuf_u16(mml__wbuf *w, uint16_t v);
void mml__wbuf_u32(mml__wbuf *w, uint32_t v);
void mml__wbuf_u64(mml__wbuf *w, uint64_t v);
void mml__wbuf_i32(mml__wbuf *w, int32_t v);
void mml__wbuf_i64(mml__wbuf *w, int64_t v);
void mml__wbuf_f32(mml__wbuf *w, float v);
void mml__wbuf_f64(mml__wbuf *w, double v);
/* n floats, little-endian. */
void mml__wbuf_f32s(mml__wbuf *w, const float *v, size_t n);
/* A string: u32 length (bytes, no NUL), then the bytes. NULL writes
 * 0xFFFFFFFF and nothing else. */
void mml__wbuf_str(mml__wbuf *w, const char *s);
/* Overwrites 4 bytes at off (already written). */
void mml__wbuf_patch_u32(mml__wbuf *w, size_t off, uint32_t v);
void mml__wbuf_patch_u64(mml__wbuf *w, size_t off, uint64_t v);

/* A cursor over size bytes it never reads past. Every get checks the room
 * first; the first failure is sticky (later gets return zeros) and records
 * MML_ETRUNCATED with "<where>: <what> at byte <offset>: needs N bytes, M
 * left" in ctx. `where` names the section for messages, `base` is the
 * offset of data in the file (for messages). */
typedef struct mml__rbuf {
    mml_ctx *ctx;
    const uint8_t *data;
    size_t size, pos;
    uint64_t base;
    const char *where;
    int status;
} mml__rbuf;

void mml__rbuf_init(mml__rbuf *r, mml_ctx *ctx, const void *data, size_t size, uint64_t base,
                    const char *where);
int mml__rbuf_status(const mml__rbuf *r);
size_t mml__rbuf_left(const mml__rbuf *r);
/* Records a failure (status, message "<where> at byte <offset>: <text>") unless one
 * is already recorded; returns the recorded status. */
int mml__rbuf_fail(mml__rbuf *r, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* The next n bytes (a pointer into the buffer), or NULL. */
const void *mml__rbuf_bytes(mml__rbuf *r, size_t n, const char *what);
void mml__rbuf_skip(mml__rbuf *r, size_t n, const char *what);
void mml__rbuf_align(mml__rbuf *r, size_t align, const char *what);
uint8_t mml__rbuf_u8(mml__rbuf *r, const char *what);
uint16_t mml__rbuf_u16(mml__rbuf *r, const char *what);
uint32_t mml__rbuf_u32(mml__rbuf *r, const char *what);
uint64_t mml__rbuf_u64(mml__rbuf *r, const char *what);
int32_t mml__rbuf_i32(mml__rbuf *r, const char *what);
int64_t mml__rbuf_i64(mml__rbuf *r, const char *what);
float mml__rbuf_f32(mml__rbuf *r, const char *what);
double mml__rbuf_f64(mml__rbuf *r, const char *what);
/* n floats into out (which holds n); 0 or the failure. */
int mml__rbuf_f32s(mml__rbuf *r, float *out, size_t n, const char *what);
/* A string written by mml__wbuf_str, of at most max_len bytes and without
 * NUL bytes, copied onto the context allocator (free with mml__free(ctx, s,
 * *len_out + 1)); *out is NULL for a NULL string (when allow_null) and on
 * failure. */
int mml__rbuf_str(mml__rbuf *r, char **out, size_t *len_out, size_t max_len, int allow_null,
                  const char *what);
/* A count in [lo, hi], else MML_ECORRUPT naming what. */
int64_t mml__rbuf_count(mml__rbuf *r, int64_t lo, int64_t hi, const char *what);

#endif
