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
