/* Helpers for the side parts of the built-in backbones (cross network,
 * attention, CIN, SENET, bilinear layers): their parameters, scratch and
 * kink fingerprints. */
#include <math.h>
#include <string.h>

#include "backbones/backbones.h"

int mml__side_param_init(mml_ctx *ctx, mml_param *p, const char *name, int64_t rows, int64_t cols,
                         int64_t fan_in, int64_t fan_out, uint64_t stream)
{
    memset(p, 0, sizeof *p);
    if (rows < 1 || cols < 1 || rows > INT64_MAX / cols ||
        (uint64_t)(rows * cols) > SIZE_MAX / sizeof(float))
        return mml__error(ctx, MML_EINVAL, "%s: invalid shape %lld x %lld", name, (long long)rows,
                          (long long)cols);
    size_t size = (size_t)(rows * cols);
    p->value = mml__alloc(ctx, sizeof(float) * size);
    p->grad = mml__calloc(ctx, size, sizeof(float));
    p->rows = rows;
    p->cols = cols;
    if (!p->value || !p->grad) {
        mml__side_param_free(ctx, p);
        return mml__error(ctx, MML_ENOMEM, "%s: out of memory", name);
    }
    p->name = name;
    p->group = MML_GROUP_BACKBONE;
    p->expert = -1;
    if (fan_in > 0) {
        mml_rng rng;
        mml__rng_init(&rng, ctx->seed, MML_STREAM_BACKBONE + stream);
        double limit = sqrt(6.0 / (double)(fan_in + fan_out));
        for (size_t i = 0; i < size; i++)
            p->value[i] = (float)((2.0 * mml__rng_uniform_double(&rng) - 1.0) * limit);
    } else {
        memset(p->value, 0, sizeof(float) * size);
    }
    return MML_OK;
}

void mml__side_param_free(mml_ctx *ctx, mml_param *p)
{
    size_t size = (size_t)(p->rows * p->cols);
    mml__free(ctx, p->value, sizeof(float) * size);
    mml__free(ctx, p->grad, sizeof(float) * size);
    p->value = p->grad = NULL;
    p->rows = p->cols = 0;
}

void mml__free_floats(mml_ctx *ctx, float *const *bufs, const size_t *caps, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mml__free(ctx, bufs[i], caps[i] * sizeof(float));
}

uint64_t mml__pattern_fold(uint64_t h, const float *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        h ^= (uint64_t)(v[i] > 0.0f);
        h *= 1099511628211ull;
    }
    return h;
}

int mml__any_unfrozen(const mml_param *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!p[i].frozen)
            return 1;
    return 0;
}
