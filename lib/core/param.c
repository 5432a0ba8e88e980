#include <string.h>

#include "core/internal.h"
#include "core/param_rows.h"
#include "moemlora/param.h"

#define MML__ROWS_MAGIC 0x6d6d6c5f726f7773ull /* "mml_rows" */

/* Bytes of the header before the gradient: a whole number of MML_ALIGN lines,
 * so the gradient keeps the allocator's alignment. */
#define ROWS_HEADER ((sizeof(mml__rows) + MML_ALIGN - 1) / MML_ALIGN * MML_ALIGN)

static size_t round_up(size_t n) { return (n + MML_ALIGN - 1) / MML_ALIGN * MML_ALIGN; }

mml__rows *mml__param_rows_alloc(mml_ctx *ctx, mml_param *p)
{
    if (p->rows < 1 || p->cols < 1 || p->rows > INT32_MAX ||
        (uint64_t)p->cols > (SIZE_MAX / 4 - ROWS_HEADER) / sizeof(float) / (uint64_t)p->rows)
        return NULL;
    size_t rows = (size_t)p->rows;
    size_t grad_bytes = round_up(rows * (size_t)p->cols * sizeof(float));
    size_t list_bytes = round_up(rows * sizeof(int32_t));
    size_t mark_bytes = (rows + 63) / 64 * sizeof(uint64_t);
    size_t bytes = ROWS_HEADER + grad_bytes + list_bytes + mark_bytes;
    /* Zeroed: the gradient and the marks must start at zero (the list need not). */
    char *block = mml__calloc(ctx, 1, bytes);
    if (!block)
        return NULL;
    mml__rows *t = (mml__rows *)(void *)block;
    t->magic = MML__ROWS_MAGIC;
    t->grad = (float *)(void *)(block + ROWS_HEADER);
    t->rows = p->rows;
    t->cols = p->cols;
    t->count = 0;
    t->list = (int32_t *)(void *)(block + ROWS_HEADER + grad_bytes);
    t->mark = (uint64_t *)(void *)(block + ROWS_HEADER + grad_bytes + list_bytes);
    t->bytes = bytes;
    p->grad = t->grad;
    p->reserved = MML__PARAM_ROWS;
    return t;
}

mml__rows *mml__param_rows(const mml_param *p)
{
    if (!p || p->reserved != MML__PARAM_ROWS || !p->grad)
        return NULL;
    mml__rows *t = (mml__rows *)(void *)((char *)p->grad - ROWS_HEADER);
    if (t->magic != MML__ROWS_MAGIC || t->grad != p->grad || t->rows != p->rows ||
        t->cols != p->cols)
        return NULL;
    return t;
}

void mml__rows_free(mml_ctx *ctx, mml__rows *t)
{
    if (!t)
        return;
    size_t bytes = t->bytes;
    t->magic = 0;
    mml__free(ctx, t, bytes);
}

void mml__rows_zero(mml__rows *t)
{
    size_t row_bytes = (size_t)t->cols * sizeof(float);
    for (int64_t k = 0; k < t->count; k++) {
        int64_t r = t->list[k];
        memset(t->grad + r * t->cols, 0, row_bytes);
        t->mark[r >> 6] &= ~((uint64_t)1 << (r & 63));
    }
    t->count = 0;
}

int64_t mml_param_size(const mml_param *p) { return p ? p->rows * p->cols : 0; }

void mml_params_zero_grad(mml_param *const *params, int64_t n)
{
    if (!params)
        return;
    for (int64_t i = 0; i < n; i++) {
        mml_param *p = params[i];
        if (!p || !p->grad)
            continue;
        /* A table that records its rows is zero outside them. */
        mml__rows *t = mml__param_rows(p);
        if (t)
            mml__rows_zero(t);
        else
            memset(p->grad, 0, (size_t)mml_param_size(p) * sizeof(float));
    }
}

int64_t mml_params_freeze_group(mml_param *const *params, int64_t n, int32_t group,
                                int32_t expert, int32_t frozen)
{
    int64_t matched = 0;
    if (!params)
        return 0;
    for (int64_t i = 0; i < n; i++) {
        mml_param *p = params[i];
        if (!p || p->group != group)
            continue;
        if (group == MML_GROUP_EXPERT && expert >= 0 && p->expert != expert)
            continue;
        p->frozen = frozen;
        matched++;
    }
    return matched;
}
