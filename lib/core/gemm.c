/* With kernels.c, the only translation units that include blis.h: every BLIS call is
 * validated here first, because BLIS aborts the process on bad arguments. */
#include <blis.h>
#include <string.h>

#include "core/internal.h"

int mml__blis_rntm_create(mml_ctx *ctx)
{
    rntm_t *r = mml__alloc(ctx, sizeof *r);
    if (!r)
        return MML_ENOMEM;
    rntm_t init = BLIS_RNTM_INITIALIZER;
    *r = init;
    ctx->blis_rntm = r;
    mml__blis_rntm_set_threads(ctx, ctx->n_threads);
    return MML_OK;
}

void mml__blis_rntm_destroy(mml_ctx *ctx)
{
    mml__free(ctx, ctx->blis_rntm, sizeof(rntm_t));
    ctx->blis_rntm = NULL;
}

void mml__blis_rntm_set_threads(mml_ctx *ctx, uint32_t n_threads)
{
    bli_rntm_set_num_threads((dim_t)n_threads, (rntm_t *)ctx->blis_rntm);
}

/* Mirrors BLIS's own stride rules so that BLIS never sees what it rejects. */
static int strides_ok(int64_t rows, int64_t cols, int64_t rs, int64_t cs)
{
    if (rs < 1 || cs < 1)
        return 0;
    if (rows <= 1 || cols <= 1)
        return 1;
    if (rs == 1 && cs == 1)
        return 0;
    if (rs == 1)
        return cs >= rows;
    if (cs == 1)
        return rs >= cols;
    if (rs > cs)
        return rs >= cols * cs;
    return cs >= rows * rs;
}

/* Products with few rows of C (one prediction, a small batch) skip BLIS,
 * whose per-call setup costs more than the arithmetic there. Each row of C
 * is computed on its own in a fixed order, so a row's result does not depend
 * on the other rows; it may differ in the last bits from BLIS's. */
#define SMALL_ROWS 8
/* Products with an inner dimension this short (the adapters' rank blocks,
 * the gate weights times c) gain nothing from BLIS's packing at any row
 * count: the small kernel serves them too. */
#define SMALL_K 16
/* Longest inner dimension of the small path (its index list lives on the stack). */
#define SMALL_MAX_K 4096

/* The small kernels are compiled for AVX-512 and AVX2 as well, picked at
 * load time by the CPU (GCC's function clones; valgrind's CPU gets AVX2).
 * Every clone computes each element with the same operations in the same
 * order (ISO C mode: no contraction into FMA), so they give the same bits. */
/* Not under ThreadSanitizer: its instrumented ifunc resolvers run before
 * the runtime is up and crash. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) &&     \
    !defined(__SANITIZE_THREAD__)
#define SMALL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SMALL_CLONES
#endif

/* Columns of C accumulated at a time, in registers where the ISA has them. */
#define SMALL_TILE 64
/* Partial sums of a dot product. */
#define SMALL_LANES 16

/* acc[0 .. w) = sum over the listed q of a[nz[q]] B[nz[q], j0 + .], in list
 * order: the same sequence of operations for every element, whatever the
 * tile width, so full tiles and the last partial one agree. */
static inline void small_tile(float *restrict acc, int64_t w, const float *restrict a,
                              const int32_t *nz, int64_t cnt, const float *b, int64_t rsb,
                              int64_t j0)
{
    for (int64_t q = 0; q < cnt; q++) {
        float s = a[nz[q]];
        const float *restrict bp = b + nz[q] * rsb + j0;
        for (int64_t j = 0; j < w; j++)
            acc[j] += s * bp[j];
    }
}

#if defined(__GNUC__)
/* A full tile in four 16-float vectors held in registers (GCC's and clang's
 * vector extension; each clone lowers it to its own registers). Element by
 * element the operations are small_tile's. */
typedef float mml__v16 __attribute__((vector_size(64)));
static inline void small_tile64(float *restrict acc, const float *restrict a, const int32_t *nz,
                                int64_t cnt, const float *b, int64_t rsb, int64_t j0)
{
    mml__v16 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, x;
    for (int64_t q = 0; q < cnt; q++) {
        float s = a[nz[q]];
        const float *bp = b + nz[q] * rsb + j0;
        memcpy(&x, bp, sizeof x);
        c0 += s * x;
        memcpy(&x, bp + 16, sizeof x);
        c1 += s * x;
        memcpy(&x, bp + 32, sizeof x);
        c2 += s * x;
        memcpy(&x, bp + 48, sizeof x);
        c3 += s * x;
    }
    memcpy(acc, &c0, sizeof c0);
    memcpy(acc + 16, &c1, sizeof c1);
    memcpy(acc + 32, &c2, sizeof c2);
    memcpy(acc + 48, &c3, sizeof c3);
}
#else
static inline void small_tile64(float *restrict acc, const float *restrict a, const int32_t *nz,
                                int64_t cnt, const float *b, int64_t rsb, int64_t j0)
{
    small_tile(acc, SMALL_TILE, a, nz, cnt, b, rsb, j0);
}
#endif

/* C = alpha A B + beta C, A, B and C with unit column stride: per row of C
 * and tile of columns, the nonzero entries of a (ReLU outputs are half
 * zeros) scale rows of B into an accumulator that starts at 0; then
 * c = alpha acc + beta c, as BLIS orders it. */
SMALL_CLONES static void small_nn(int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                                  int64_t rsa, const float *b, int64_t rsb, float beta, float *c,
                                  int64_t rsc, int32_t *nz)
{
    for (int64_t i = 0; i < m; i++) {
        const float *ai = a + i * rsa;
        int64_t cnt = 0;
        for (int64_t p = 0; p < k; p++)
            if (ai[p] != 0.0f)
                nz[cnt++] = (int32_t)p;
        for (int64_t j0 = 0; j0 < n; j0 += SMALL_TILE) {
            float acc[SMALL_TILE];
            int64_t w = n - j0 < SMALL_TILE ? n - j0 : SMALL_TILE;
            memset(acc, 0, sizeof acc);
            if (w == SMALL_TILE)
                small_tile64(acc, ai, nz, cnt, b, rsb, j0);
            else
                small_tile(acc, w, ai, nz, cnt, b, rsb, j0);
            float *restrict ci = c + i * rsc + j0;
            if (beta == 0.0f)
                for (int64_t j = 0; j < w; j++)
                    ci[j] = alpha * acc[j];
            else
                for (int64_t j = 0; j < w; j++)
                    ci[j] = beta * ci[j] + alpha * acc[j];
        }
    }
}

/* SMALL_LANES partial sums in a fixed order, added pairwise: vectorisable
 * without reassociation, so every clone gives the same bits. */
static inline float small_dot(const float *restrict x, const float *restrict y, int64_t k)
{
    float s[SMALL_LANES];
    memset(s, 0, sizeof s);
    int64_t p = 0;
    for (; p + SMALL_LANES <= k; p += SMALL_LANES)
        for (int t = 0; t < SMALL_LANES; t++)
            s[t] += x[p + t] * y[p + t];
    for (int t = 0; p < k; p++, t++)
        s[t] += x[p] * y[p];
    for (int h = SMALL_LANES / 2; h > 0; h /= 2)
        for (int t = 0; t < h; t++)
            s[t] = s[t] + s[t + h];
    return s[0];
}

/* C = alpha A B^T + beta C with B stored n x k (unit column strides). */
SMALL_CLONES static void small_nt(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t rsa,
                     const float *b, int64_t rsb, float beta, float *c, int64_t rsc)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float v = alpha * small_dot(a + i * rsa, b + j * rsb, k);
            float *cij = c + i * rsc + j;
            *cij = beta == 0.0f ? v : beta * *cij + v;
        }
}

int mml__gemm(mml_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t rsa, int64_t csa, const float *b, int64_t rsb, int64_t csb,
              float beta, float *c, int64_t rsc, int64_t csc)
{
    if (m < 0 || n < 0 || k < 0)
        return mml__error(ctx, MML_ESHAPE, "gemm: negative dimension (m=%lld n=%lld k=%lld)",
                          (long long)m, (long long)n, (long long)k);
    if (m == 0 || n == 0)
        return MML_OK;
    if (!c)
        return mml__error(ctx, MML_EINVAL, "gemm: output matrix is NULL");
    if (!strides_ok(m, n, rsc, csc))
        return mml__error(ctx, MML_ESHAPE, "gemm: bad strides for C (%lld x %lld, rs=%lld cs=%lld)",
                          (long long)m, (long long)n, (long long)rsc, (long long)csc);
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                float *p = &c[i * rsc + j * csc];
                *p = beta == 0.0f ? 0.0f : beta * *p;
            }
        return MML_OK;
    }
    if (!a || !b)
        return mml__error(ctx, MML_EINVAL, "gemm: input matrix is NULL");
    int64_t ar = trans_a ? k : m, ac = trans_a ? m : k;
    int64_t br = trans_b ? n : k, bc = trans_b ? k : n;
    if (!strides_ok(ar, ac, rsa, csa))
        return mml__error(ctx, MML_ESHAPE, "gemm: bad strides for A (%lld x %lld, rs=%lld cs=%lld)",
                          (long long)ar, (long long)ac, (long long)rsa, (long long)csa);
    if (!strides_ok(br, bc, rsb, csb))
        return mml__error(ctx, MML_ESHAPE, "gemm: bad strides for B (%lld x %lld, rs=%lld cs=%lld)",
                          (long long)br, (long long)bc, (long long)rsb, (long long)csb);
    if ((m <= SMALL_ROWS || (k <= SMALL_K && !trans_b)) && !trans_a && csa == 1 && csb == 1 &&
        csc == 1) {
        if (!trans_b && k <= SMALL_MAX_K) {
            int32_t nz[SMALL_MAX_K];
            small_nn(m, n, k, alpha, a, rsa, b, rsb, beta, c, rsc, nz);
            return MML_OK;
        }
        if (trans_b) {
            small_nt(m, n, k, alpha, a, rsa, b, rsb, beta, c, rsc);
            return MML_OK;
        }
    }
    /* BLIS takes non-const pointers but does not write to A or B. */
    float *am, *bm;
    memcpy(&am, &a, sizeof am);
    memcpy(&bm, &b, sizeof bm);
    bli_sgemm_ex(trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, (dim_t)m, (dim_t)n, (dim_t)k, &alpha,
                 am, (inc_t)rsa, (inc_t)csa, bm, (inc_t)rsb, (inc_t)csb, &beta, c, (inc_t)rsc,
                 (inc_t)csc, NULL, (rntm_t *)ctx->blis_rntm);
    return MML_OK;
}

int mml__gemm_rm(mml_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, const float *b, float beta, float *c)
{
    return mml__gemm(ctx, trans_a, trans_b, m, n, k, alpha, a, trans_a ? m : k, 1, b,
                     trans_b ? k : n, 1, beta, c, n, 1);
}
