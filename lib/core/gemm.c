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
#define SMALL_GROUP 4
/* Longest inner dimension of the small path (its index list lives on the stack). */
#define SMALL_MAX_K 4096

/* Columns of C accumulated at a time (on the stack). */
#define SMALL_BLOCK 256

/* C = alpha A B + beta C, A, B and C with unit column stride: per row and
 * block of columns, the nonzero entries of a (ReLU outputs are half zeros)
 * scale rows of B, four at a time in index order, into an accumulator that
 * starts at 0; then c = alpha acc + beta c, as BLIS orders it. */
static void small_nn(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t rsa,
                     const float *b, int64_t rsb, float beta, float *c, int64_t rsc, int32_t *nz)
{
    float acc[SMALL_BLOCK];
    for (int64_t i = 0; i < m; i++) {
        const float *ai = a + i * rsa;
        int64_t cnt = 0;
        for (int64_t p = 0; p < k; p++)
            if (ai[p] != 0.0f)
                nz[cnt++] = (int32_t)p;
        for (int64_t j0 = 0; j0 < n; j0 += SMALL_BLOCK) {
            int64_t nb = n - j0 < SMALL_BLOCK ? n - j0 : SMALL_BLOCK;
            memset(acc, 0, sizeof(float) * (size_t)nb);
            int64_t q = 0;
            for (; q + SMALL_GROUP <= cnt; q += SMALL_GROUP) {
                float s0 = ai[nz[q]], s1 = ai[nz[q + 1]], s2 = ai[nz[q + 2]], s3 = ai[nz[q + 3]];
                const float *restrict b0 = b + nz[q] * rsb + j0, *restrict b1 = b + nz[q + 1] * rsb + j0,
                                      *restrict b2 = b + nz[q + 2] * rsb + j0,
                                      *restrict b3 = b + nz[q + 3] * rsb + j0;
                for (int64_t j = 0; j < nb; j++) {
                    float v = acc[j];
                    v += s0 * b0[j];
                    v += s1 * b1[j];
                    v += s2 * b2[j];
                    v += s3 * b3[j];
                    acc[j] = v;
                }
            }
            for (; q < cnt; q++) {
                float s = ai[nz[q]];
                const float *restrict bp = b + nz[q] * rsb + j0;
                for (int64_t j = 0; j < nb; j++)
                    acc[j] += s * bp[j];
            }
            float *restrict ci = c + i * rsc + j0;
            if (beta == 0.0f)
                for (int64_t j = 0; j < nb; j++)
                    ci[j] = alpha * acc[j];
            else
                for (int64_t j = 0; j < nb; j++)
                    ci[j] = beta * ci[j] + alpha * acc[j];
        }
    }
}

/* Eight partial sums in a fixed order: vectorisable without reassociation. */
static float small_dot(const float *restrict x, const float *restrict y, int64_t k)
{
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t p = 0;
    for (; p + 8 <= k; p += 8)
        for (int t = 0; t < 8; t++)
            s[t] += x[p + t] * y[p + t];
    for (int t = 0; p < k; p++, t++)
        s[t] += x[p] * y[p];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* C = alpha A B^T + beta C with B stored n x k (unit column strides). */
static void small_nt(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t rsa,
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
    if (m <= SMALL_ROWS && !trans_a && csa == 1 && csb == 1 && csc == 1) {
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
