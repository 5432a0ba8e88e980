/* With kernels.c, the only translation units that include blis.h: every BLIS call is
 * validated here first, because BLIS aborts the process on bad arguments. */
#include <blis.h>
#include <math.h>
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

/* ---- the tower's layer epilogue ---- */

/* Its terms are fused multiply-adds with one rounding, so the bits are the
 * same on every CPU. The x86-64-v3 and -v4 clones have the instruction: their
 * register tiles contract acc += s x into it (fp-contract=fast here only);
 * everywhere else the scalar loops call fmaf (libm's is exact). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) &&     \
    !defined(__SANITIZE_THREAD__)
#define EPI_CLONES                                                                                 \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),                 \
                   optimize("fp-contract=fast")))
#define EPI_INLINE __attribute__((always_inline, optimize("fp-contract=fast"))) inline
/* True in the clones with FMA, the ones the resolver picks on such CPUs. */
#define EPI_VECTOR_FMA() __builtin_cpu_supports("x86-64-v3")
/* True in the x86-64-v4 clone (32 vector registers: four rows at a time). */
#define EPI_VECTOR_FMA4() __builtin_cpu_supports("x86-64-v4")
#else
#define EPI_CLONES
#define EPI_INLINE inline
#define EPI_VECTOR_FMA() 0
#define EPI_VECTOR_FMA4() 0
#endif

/* One row's accumulator for a full tile of SMALL_TILE columns: acc starts
 * at 0 and takes z1[q] m1[q, .] for q < k1, then z2[q] m2[q, .] for q < k2,
 * one fused multiply-add per term, as fmaf in epi_tile gives it: only for
 * the clones that contract into FMA (EPI_VECTOR_FMA). */
#if defined(__GNUC__)
static EPI_INLINE void epi_tile64x2(float *restrict acc0, float *restrict acc1, const float *z1a,
                                const float *z1b, int64_t k1, const float *m1, int64_t rsm1,
                                const float *z2a, const float *z2b, int64_t k2, const float *m2,
                                int64_t rsm2, int64_t j0)
{
    mml__v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
    mml__v16 x0, x1, x2, x3;
    for (int pass = 0; pass < 2; pass++) {
        const float *za = pass ? z2a : z1a, *zb = pass ? z2b : z1b, *m = pass ? m2 : m1;
        int64_t k = pass ? k2 : k1, rsm = pass ? rsm2 : rsm1;
        for (int64_t q = 0; q < k; q++) {
            const float *mp = m + q * rsm + j0;
            float sa = za[q], sb = zb[q];
            memcpy(&x0, mp, sizeof x0);
            memcpy(&x1, mp + 16, sizeof x1);
            memcpy(&x2, mp + 32, sizeof x2);
            memcpy(&x3, mp + 48, sizeof x3);
            a0 += sa * x0;
            a1 += sa * x1;
            a2 += sa * x2;
            a3 += sa * x3;
            b0 += sb * x0;
            b1 += sb * x1;
            b2 += sb * x2;
            b3 += sb * x3;
        }
    }
    memcpy(acc0, &a0, sizeof a0);
    memcpy(acc0 + 16, &a1, sizeof a1);
    memcpy(acc0 + 32, &a2, sizeof a2);
    memcpy(acc0 + 48, &a3, sizeof a3);
    memcpy(acc1, &b0, sizeof b0);
    memcpy(acc1 + 16, &b1, sizeof b1);
    memcpy(acc1 + 32, &b2, sizeof b2);
    memcpy(acc1 + 48, &b3, sizeof b3);
}
#endif

#if defined(__GNUC__)
/* The same for four rows (16 accumulators: for AVX-512's 32 registers). */
static EPI_INLINE void epi_tile64x4(float *restrict acc, const float *z1r, int64_t rsz1,
                                    int64_t k1, const float *m1, int64_t rsm1, const float *z2r,
                                    int64_t rsz2, int64_t k2, const float *m2, int64_t rsm2,
                                    int64_t j0)
{
    /* Named accumulators: GCC keeps these in registers (an array it spills). */
    mml__v16 c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0}, c10 = {0}, c11 = {0}, c12 = {0},
             c13 = {0}, c20 = {0}, c21 = {0}, c22 = {0}, c23 = {0}, c30 = {0}, c31 = {0},
             c32 = {0}, c33 = {0}, x0, x1, x2, x3;
    for (int pass = 0; pass < 2; pass++) {
        const float *z = pass ? z2r : z1r, *m = pass ? m2 : m1;
        int64_t k = pass ? k2 : k1, rsm = pass ? rsm2 : rsm1, rsz = pass ? rsz2 : rsz1;
        for (int64_t q = 0; q < k; q++) {
            const float *mp = m + q * rsm + j0;
            memcpy(&x0, mp, sizeof x0);
            memcpy(&x1, mp + 16, sizeof x1);
            memcpy(&x2, mp + 32, sizeof x2);
            memcpy(&x3, mp + 48, sizeof x3);
            float s0 = z[q], s1 = z[rsz + q], s2 = z[2 * rsz + q], s3 = z[3 * rsz + q];
            c00 += s0 * x0;
            c01 += s0 * x1;
            c02 += s0 * x2;
            c03 += s0 * x3;
            c10 += s1 * x0;
            c11 += s1 * x1;
            c12 += s1 * x2;
            c13 += s1 * x3;
            c20 += s2 * x0;
            c21 += s2 * x1;
            c22 += s2 * x2;
            c23 += s2 * x3;
            c30 += s3 * x0;
            c31 += s3 * x1;
            c32 += s3 * x2;
            c33 += s3 * x3;
        }
    }
    const mml__v16 *all[16] = {&c00, &c01, &c02, &c03, &c10, &c11, &c12, &c13,
                               &c20, &c21, &c22, &c23, &c30, &c31, &c32, &c33};
    for (int v = 0; v < 16; v++)
        memcpy(acc + 16 * v, all[v], sizeof c00);
}
#endif

/* acc[0 .. w) for one row, any width: the same operations per element. */
static inline void epi_tile(float *restrict acc, int64_t w, const float *z1, int64_t k1,
                            const float *m1, int64_t rsm1, const float *z2, int64_t k2,
                            const float *m2, int64_t rsm2, int64_t j0)
{
    for (int64_t j = 0; j < w; j++)
        acc[j] = 0.0f;
    for (int64_t q = 0; q < k1; q++) {
        float s = z1[q];
        const float *restrict mp = m1 + q * rsm1 + j0;
        for (int64_t j = 0; j < w; j++)
            acc[j] = fmaf(s, mp[j], acc[j]);
    }
    for (int64_t q = 0; q < k2; q++) {
        float s = z2[q];
        const float *restrict mp = m2 + q * rsm2 + j0;
        for (int64_t j = 0; j < w; j++)
            acc[j] = fmaf(s, mp[j], acc[j]);
    }
}

/* y = act((p + bias) + acc), written after p is read (y may be p). */
static inline void epi_store(float *y, const float *p, const float *bias, const float *acc,
                             int64_t w, int add_acc, int relu)
{
    for (int64_t j = 0; j < w; j++) {
        float v = p[j];
        if (bias)
            v = v + bias[j];
        if (add_acc)
            v = v + acc[j];
        y[j] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

EPI_CLONES void mml__layer_epilogue(int64_t n, int64_t w, const float *p, int64_t rsp,
                                      const float *bias, const float *z1, int64_t rsz1, int64_t k1,
                                      const float *m1, int64_t rsm1, const float *z2, int64_t rsz2,
                                      int64_t k2, const float *m2, int64_t rsm2, float *y,
                                      int64_t rsy, int relu)
{
    int add_acc = k1 + k2 > 0;
    float acc0[SMALL_TILE], acc1[SMALL_TILE], acc4[4 * SMALL_TILE];
    int64_t i = 0;
#if defined(__GNUC__)
    if (add_acc && EPI_VECTOR_FMA4())
        for (; i + 4 <= n; i += 4) {
            int64_t j0 = 0;
            for (; j0 + SMALL_TILE <= w; j0 += SMALL_TILE) {
                epi_tile64x4(acc4, z1 + i * rsz1, rsz1, k1, m1, rsm1, z2 + i * rsz2, rsz2, k2, m2,
                             rsm2, j0);
                for (int64_t r = 0; r < 4; r++)
                    epi_store(y + (i + r) * rsy + j0, p + (i + r) * rsp + j0,
                              bias ? bias + j0 : NULL, acc4 + r * SMALL_TILE, SMALL_TILE, 1, relu);
            }
            for (int64_t r = i; r < i + 4 && j0 < w; r++) {
                int64_t ww = w - j0;
                epi_tile(acc0, ww, z1 + r * rsz1, k1, m1, rsm1, z2 + r * rsz2, k2, m2, rsm2, j0);
                epi_store(y + r * rsy + j0, p + r * rsp + j0, bias ? bias + j0 : NULL, acc0, ww, 1,
                          relu);
            }
        }
    if (add_acc && EPI_VECTOR_FMA())
        for (; i + 2 <= n; i += 2) {
            const float *z1a = z1 + i * rsz1, *z2a = z2 + i * rsz2;
            int64_t j0 = 0;
            for (; j0 + SMALL_TILE <= w; j0 += SMALL_TILE) {
                epi_tile64x2(acc0, acc1, z1a, z1a + rsz1, k1, m1, rsm1, z2a, z2a + rsz2, k2, m2,
                             rsm2, j0);
                epi_store(y + i * rsy + j0, p + i * rsp + j0, bias ? bias + j0 : NULL, acc0,
                          SMALL_TILE, 1, relu);
                epi_store(y + (i + 1) * rsy + j0, p + (i + 1) * rsp + j0, bias ? bias + j0 : NULL,
                          acc1, SMALL_TILE, 1, relu);
            }
            for (int64_t r = i; r < i + 2 && j0 < w; r++) {
                int64_t ww = w - j0;
                epi_tile(acc0, ww, z1 + r * rsz1, k1, m1, rsm1, z2 + r * rsz2, k2, m2, rsm2, j0);
                epi_store(y + r * rsy + j0, p + r * rsp + j0, bias ? bias + j0 : NULL, acc0, ww, 1,
                          relu);
            }
        }
#endif
    for (; i < n; i++)
        for (int64_t j0 = 0; j0 < w; j0 += SMALL_TILE) {
            int64_t ww = w - j0 < SMALL_TILE ? w - j0 : SMALL_TILE;
            if (add_acc)
                epi_tile(acc0, ww, z1 + i * rsz1, k1, m1, rsm1, z2 + i * rsz2, k2, m2, rsm2, j0);
            epi_store(y + i * rsy + j0, p + i * rsp + j0, bias ? bias + j0 : NULL, acc0, ww,
                      add_acc, relu);
        }
}
