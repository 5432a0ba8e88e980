/* Element-wise passes of the training step, written branch-free so that the
 * compiler vectorises them, and compiled for AVX-512, AVX2 and the baseline
 * (chosen when the library loads). No pass contracts a multiply and an add,
 * so every variant gives the same bits. */
#include "core/internal.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) &&     \
    !defined(__SANITIZE_THREAD__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* Units per block of random draws: four 16-bit lanes per 64-bit draw. */
#define MASK_BLOCK 256

CLONES static void lanes_to_mask(const uint16_t *restrict lane, uint16_t thr, float keep,
                                 float *restrict m, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        m[i] = lane[i] < thr ? 0.0f : keep;
}

void mml__dropout_mask(mml_rng *rng, float p, float keep, float *m, int64_t n)
{
    uint32_t t = (uint32_t)(p * 65536.0f + 0.5f);
    uint16_t thr = (uint16_t)(t > 65535u ? 65535u : t);
    uint64_t draw[MASK_BLOCK / 4];
    uint16_t lane[MASK_BLOCK];
    for (int64_t i = 0; i < n; i += MASK_BLOCK) {
        int64_t len = n - i < MASK_BLOCK ? n - i : MASK_BLOCK;
        int64_t nd = (len + 3) / 4;
        for (int64_t d = 0; d < nd; d++)
            draw[d] = mml__rng_next(rng);
        /* Lanes in a fixed order, whatever the host's byte order. */
        for (int64_t d = 0; d < nd; d++)
            for (int q = 0; q < 4; q++)
                lane[4 * d + q] = (uint16_t)(draw[d] >> (16 * q));
        lanes_to_mask(lane, thr, keep, m + i, len);
    }
}

CLONES void mml__relu_grad(int64_t n, const float *restrict h, const float *restrict mask,
                           float *restrict g)
{
    if (mask) {
        for (int64_t i = 0; i < n; i++) {
            float v = g[i] * mask[i];
            g[i] = h[i] > 0.0f ? v : 0.0f;
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float v = g[i];
        g[i] = h[i] > 0.0f ? v : 0.0f;
    }
}

CLONES void mml__bias_mask_relu(int64_t rows, int64_t cols, float *restrict y, int64_t ldy,
                                const float *restrict bias, const float *restrict mask, int relu)
{
    for (int64_t i = 0; i < rows; i++) {
        float *restrict yr = y + i * ldy;
        const float *restrict mr = mask ? mask + i * cols : NULL;
        if (mr && relu)
            for (int64_t j = 0; j < cols; j++) {
                float v = (yr[j] + bias[j]) * mr[j];
                yr[j] = v > 0.0f ? v : 0.0f;
            }
        else if (mr)
            for (int64_t j = 0; j < cols; j++)
                yr[j] = (yr[j] + bias[j]) * mr[j];
        else if (relu)
            for (int64_t j = 0; j < cols; j++) {
                float v = yr[j] + bias[j];
                yr[j] = v > 0.0f ? v : 0.0f;
            }
        else
            for (int64_t j = 0; j < cols; j++)
                yr[j] += bias[j];
    }
}

CLONES void mml__col_sums_add(int64_t rows, int64_t cols, const float *restrict x,
                              float *restrict sums)
{
    for (int64_t i = 0; i < rows; i++) {
        const float *restrict xr = x + i * cols;
        for (int64_t j = 0; j < cols; j++)
            sums[j] += xr[j];
    }
}

CLONES void mml__add_to(int64_t n, const float *restrict x, float *restrict y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

CLONES void mml__mask_copy(int64_t rows, int64_t cols, float *restrict d,
                           const float *restrict mask, float *restrict out, int64_t ldo)
{
    for (int64_t i = 0; i < rows; i++) {
        float *restrict dr = d + i * cols;
        float *restrict o = out + i * ldo;
        const float *restrict mr = mask ? mask + i * cols : NULL;
        if (mr)
            for (int64_t j = 0; j < cols; j++) {
                float v = dr[j] * mr[j];
                dr[j] = v;
                o[j] = v;
            }
        else
            for (int64_t j = 0; j < cols; j++)
                o[j] = dr[j];
    }
}
