#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

static void *libc_alloc(void *user, size_t size, size_t alignment)
{
    (void)user;
    size_t rounded = (size + alignment - 1) / alignment * alignment;
    return aligned_alloc(alignment, rounded);
}

static void libc_free(void *user, void *ptr, size_t size)
{
    (void)user;
    (void)size;
    free(ptr);
}

static const mml_allocator libc_allocator = {MML_ALLOCATOR_VERSION, 0, libc_alloc, libc_free, NULL};

void *mml__alloc_with(const mml_allocator *a, size_t size)
{
    if (size == 0)
        return NULL;
    if (!a || !a->alloc)
        a = &libc_allocator;
    if (size > SIZE_MAX - 2 * MML_PAD)
        return NULL;
    return a->alloc(a->user, size + MML_PAD, MML_ALIGN);
}

void mml__free_with(const mml_allocator *a, void *ptr, size_t size)
{
    if (!ptr)
        return;
    if (!a || !a->free)
        a = &libc_allocator;
    a->free(a->user, ptr, size + MML_PAD);
}

void *mml__alloc(mml_ctx *ctx, size_t size) { return mml__alloc_with(&ctx->allocator, size); }

void *mml__calloc(mml_ctx *ctx, size_t count, size_t elem_size)
{
    if (count == 0 || elem_size == 0)
        return NULL;
    if (count > SIZE_MAX / elem_size)
        return NULL;
    void *p = mml__alloc(ctx, count * elem_size);
    if (p)
        memset(p, 0, count * elem_size);
    return p;
}

void mml__free(mml_ctx *ctx, void *ptr, size_t size) { mml__free_with(&ctx->allocator, ptr, size); }

const mml_allocator *mml__libc_allocator(void) { return &libc_allocator; }
