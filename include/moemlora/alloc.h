/* libmoemlora: caller-supplied allocator.
 *
 * Every allocation the library itself makes goes through the allocator given
 * at context creation (copied there). Two things do not: BLIS's internal
 * packing-buffer pools and the OpenMP runtime's thread stacks, which those
 * libraries allocate for themselves.
 */
#ifndef MOEMLORA_ALLOC_H
#define MOEMLORA_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"

#define MML_ALLOCATOR_VERSION 1u

typedef struct mml_allocator {
    uint32_t version; /* MML_ALLOCATOR_VERSION */
    uint32_t reserved; /* 0 */
    /* Returns size bytes aligned to alignment (a power of two, at most 4096),
     * or NULL. size is never 0. */
    void *(*alloc)(void *user, size_t size, size_t alignment);
    /* Releases a block from alloc; size is the size that was asked for. ptr is never NULL. */
    void (*free)(void *user, void *ptr, size_t size);
    void *user;
} mml_allocator;

#endif
