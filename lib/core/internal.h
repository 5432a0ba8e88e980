/* Private declarations shared by the library's translation units. */
#ifndef MML_INTERNAL_H
#define MML_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "moemlora/moemlora.h"
#include "moemlora/testing.h"
#include "core/versions.h"

#define MML_ALIGN 64u
/* Slack after every block: BLIS's vector kernels may read a little past the
 * end of a small matrix. */
#define MML_PAD 128u
#define MML_ERRMSG_MAX 512
/* Higher layers' state hung on a context (the backbone registry, ...). */
#define MML_CTX_ATTACHMENTS 4

/* xoshiro256** state. */
typedef struct mml_rng {
    uint64_t s[4];
} mml_rng;

struct mml_ctx {
    mml_allocator allocator;
    uint32_t n_threads;
    uint64_t seed;
    mml_log_fn log;
    void *log_user;
    int32_t log_level;
    void *blis_rntm; /* rntm_t, kept opaque so only gemm.c and kernels.c see blis.h */
    const char *blis_arch;      /* BLIS sub-configuration in use (static) */
    const char *blis_arch_best; /* fastest one this CPU supports (static) */
    char last_error[MML_ERRMSG_MAX];
    struct mml__pool *pool; /* n_threads - 1 workers, made on first use (mml__ctx_pool) */
    struct mml__ctx_attachment {
        const void *key;
        void *data;
        void (*release)(mml_ctx *ctx, void *data);
    } attachments[MML_CTX_ATTACHMENTS];
};

/* Allocation through the context's allocator, aligned to MML_ALIGN. size 0 yields NULL. */
void *mml__alloc(mml_ctx *ctx, size_t size);
/* Zero-filled. */
void *mml__calloc(mml_ctx *ctx, size_t count, size_t elem_size);
void mml__free(mml_ctx *ctx, void *ptr, size_t size);
/* Same, with an allocator instead of a context (for the context itself). */
void *mml__alloc_with(const mml_allocator *a, size_t size);
void mml__free_with(const mml_allocator *a, void *ptr, size_t size);
const mml_allocator *mml__libc_allocator(void);

/* Records a message in ctx (if not NULL) and returns status. printf-style. */
int mml__error(mml_ctx *ctx, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void mml__log(mml_ctx *ctx, int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Whether size is the library's own size of a struct (current) or one that
 * an earlier release produced (older, 0-terminated; see versions.h). */
int mml__size_known(uint32_t size, size_t current, const uint32_t *older);
/* Copies a caller's options struct (struct_size first, a known size) over
 * defaults already in dst; dst's struct_size becomes the full size. A NULL
 * src leaves the defaults.
 * MML_EVERSION naming `what` for any other size. */
int mml__copy_options(mml_ctx *ctx, void *dst, size_t dst_size, const void *src,
                      const uint32_t *older, const char *what);
#define MML__COPY_OPTIONS(ctx, dst, src, type, what)                                              \
    (type##_init(dst),                                                                            \
     mml__copy_options((ctx), (dst), sizeof *(dst), (src), MML__OLDER_SIZES_##type, (what)))
/* The body of every *_init_sized() and output filler: copies the first size
 * bytes of full (size sizeof'd by the caller) to out and sets out's
 * struct_size to size. MML_EINVAL for NULL out, MML_EVERSION (nothing
 * written) for a size that no release produced. */
int mml__init_versioned(void *out, const void *full, size_t full_size, uint32_t size,
                        const uint32_t *older);
/* mml__init_versioned, with a message naming `what` for an unknown size. */
int mml__write_versioned(mml_ctx *ctx, void *out, const void *full, size_t full_size,
                         uint32_t size, const uint32_t *older, const char *what);
/* Checks the struct_size of a struct the caller filled in (a batch view, a
 * mixture, a backbone table): MML_EVERSION with a message naming `what`. */
int mml__check_size(mml_ctx *ctx, uint32_t size, size_t current, const uint32_t *older,
                    const char *what);
#define MML__CHECK_SIZE(ctx, ptr, type, what)                                                     \
    mml__check_size((ctx), (ptr)->struct_size, sizeof(type), MML__OLDER_SIZES_##type, (what))

/* Sorts a[0 .. n) ascending, in place, without allocating. */
void mml__sort_i32(int32_t *a, size_t n);

/* Grows *buf (capacity *cap floats) to hold at least n floats; contents are lost. */
int mml__ensure_floats(mml_ctx *ctx, float **buf, size_t *cap, size_t n);
/* A higher layer keeps per-context state under a key of its own (the address
 * of one of its statics); the context calls release(ctx, data) when it is
 * destroyed, without knowing what the data is. attach replaces no existing
 * key: MML_EEXIST; MML_ENOMEM when every slot is taken. */
int mml__ctx_attach(mml_ctx *ctx, const void *key, void *data,
                    void (*release)(mml_ctx *ctx, void *data));
/* The data attached under key, or NULL. */
void *mml__ctx_attached(const mml_ctx *ctx, const void *key);

/* Element-wise passes (elementwise.c). */
/* Inverted-dropout multipliers of n units (0 or keep), four units per 64-bit
 * draw: a unit drops when its 16 bits fall below p 2^16, so p is rounded to
 * a multiple of 2^-16 (0.5 is exact). */
void mml__dropout_mask(struct mml_rng *rng, float p, float keep, float *m, int64_t n);
/* g = h > 0 ? g mask : 0 (mask NULL: 1). */
void mml__relu_grad(int64_t n, const float *h, const float *mask, float *g);
/* Each row of y (rows x cols, row stride ldy): y = (y + bias) mask (mask
 * dense rows x cols; NULL: 1), then ReLU when relu. */
void mml__bias_mask_relu(int64_t rows, int64_t cols, float *y, int64_t ldy, const float *bias,
                         const float *mask, int relu);
/* sums[j] += x[i][j] over the rows, row after row. */
void mml__col_sums_add(int64_t rows, int64_t cols, const float *x, float *sums);
/* y += x. */
void mml__add_to(int64_t n, const float *x, float *y);
/* d = d mask (mask NULL: 1), copied to the rows of out (row stride ldo). */
void mml__mask_copy(int64_t rows, int64_t cols, float *d, const float *mask, float *out,
                    int64_t ldo);

/* Worker threads owned by one object (pool.c). n_workers >= 1 threads start
 * at creation and wait; a job runs fn(arg, 0) on the caller and
 * fn(arg, 1 .. n_workers) on the workers, and returns when all have. A NULL
 * pool runs task 0 only. */
typedef struct mml__pool mml__pool;
int mml__pool_create(mml_ctx *ctx, int32_t n_workers, mml__pool **out);
void mml__pool_destroy(mml__pool *pool);
int32_t mml__pool_size(const mml__pool *pool);
/* The context's workers: n_threads - 1 of them, started on first use; NULL
 * with one thread, or when they cannot start (the caller then runs alone). */
mml__pool *mml__ctx_pool(mml_ctx *ctx);
void mml__pool_run(mml__pool *pool, void (*fn)(void *arg, int32_t task), void *arg);

/* Random numbers. stream selects an independent sequence for the same seed. */
void mml__rng_init(mml_rng *rng, uint64_t seed, uint64_t stream);
/* Inline: dropout draws one number per unit of every training batch. */
static inline uint64_t mml__rng_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static inline uint64_t mml__rng_next(mml_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = mml__rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = mml__rng_rotl(s[3], 45);
    return result;
}
/* Uniform in [0, 1) with 24 random bits. */
static inline float mml__rng_uniform(mml_rng *rng)
{
    return (float)(mml__rng_next(rng) >> 40) * 0x1.0p-24f;
}
/* Uniform in [0, 1) with 53 random bits. */
double mml__rng_uniform_double(mml_rng *rng);
/* Standard normal (Box-Muller, one value per call). */
double mml__rng_normal(mml_rng *rng);
/* Uniform integer in [0, n), n >= 1, unbiased. */
uint64_t mml__rng_below(mml_rng *rng, uint64_t n);

/* Stream numbers: each consumer of randomness has its own range. */
enum {
    MML_STREAM_EMBEDDING = 0x1000,
    MML_STREAM_TOWER = 0x2000,
    MML_STREAM_EXPERT = 0x3000,
    MML_STREAM_GATE = 0x4000,
    MML_STREAM_BACKBONE = 0x5000,
    MML_STREAM_DROPOUT = 0x6000,
    MML_STREAM_SHUFFLE = 0x7000,
    MML_STREAM_DATA = 0x8000
};

/* C = alpha op(A) op(B) + beta C on BLIS with the context's thread count.
 * op(A) is m x k, op(B) is k x n, C is m x n. Strides describe the stored
 * (untransposed) matrices in elements. Validates everything BLIS would abort on. */
int mml__gemm(mml_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t rsa, int64_t csa, const float *b, int64_t rsb, int64_t csb,
              float beta, float *c, int64_t rsc, int64_t csc);
/* Row-major contiguous shorthand: C[m x n] = alpha op(A) op(B) + beta C. */
int mml__gemm_rm(mml_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, const float *b, float beta, float *c);
/* The end of a tower layer, row by row (i < n, j < w):
 *   y[i, j] = act((p[i, j] + bias[j]) + acc[i, j]),
 *   acc[i, j] = sum_{q < k1} z1[i, q] m1[q, j] + sum_{q < k2} z2[i, q] m2[q, j],
 * acc accumulated from 0 in that order of q, one fmaf per term
 * (acc = fmaf(z, m, acc)); act is ReLU when relu is set; bias may be NULL (no term); with
 * k1 + k2 = 0 there is no acc term at all. Row strides rs*; rsz2 may be 0
 * (one z2 row for every row). y may be p (same stride). Same bits on every
 * CPU and every row, whatever n. */
void mml__layer_epilogue(int64_t n, int64_t w, const float *p, int64_t rsp, const float *bias,
                         const float *z1, int64_t rsz1, int64_t k1, const float *m1, int64_t rsm1,
                         const float *z2, int64_t rsz2, int64_t k2, const float *m2, int64_t rsm2,
                         float *y, int64_t rsy, int relu);
/* The private BLIS runtime object for the current thread count. */
int mml__blis_rntm_create(mml_ctx *ctx);
void mml__blis_rntm_destroy(mml_ctx *ctx);
void mml__blis_rntm_set_threads(mml_ctx *ctx, uint32_t n_threads);
/* Checks BLIS_ARCH_TYPE, initialises BLIS, records the kernels in use and
 * warns through the log when they are generic on a CPU that has better. */
int mml__blis_arch_init(mml_ctx *ctx);

#endif
