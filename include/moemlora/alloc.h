/**
 * @file
 * libmoemlora: caller-supplied allocator.
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

/** The version of mml_allocator that these headers describe: put it in
 *  mml_allocator.version (mml_ctx_create() refuses any other value with
 *  MML_EVERSION). */
#define MML_ALLOCATOR_VERSION 1u

/** A caller-supplied allocator, given in mml_ctx_options.allocator. The
 *  context copies the struct at mml_ctx_create(), so the struct itself may
 *  go away afterwards; user must stay valid until mml_ctx_destroy(). The
 *  callbacks run on the thread that is using the context; an allocator shared
 *  by contexts used from different threads must be thread-safe. */
typedef struct mml_allocator {
    /** MML_ALLOCATOR_VERSION */
    uint32_t version;
    /** 0 */
    uint32_t reserved;
    /** Returns size bytes aligned to alignment (a power of two, at most 4096),
     *  or NULL. size is never 0.
     *  @param user the user member, as given.
     *  @param size the number of bytes, never 0.
     *  @param alignment a power of two, at most 4096.
     *  @return the block, or NULL when out of memory. */
    void *(*alloc)(void *user, size_t size, size_t alignment);
    /** Releases a block from alloc; size is the size that was asked for. ptr is never NULL.
     *  @param user the user member, as given.
     *  @param ptr a block that alloc returned; never NULL.
     *  @param size the size that was passed to alloc for this block. */
    void (*free)(void *user, void *ptr, size_t size);
    /** Passed to alloc and free; not dereferenced by the library. */
    void *user;
} mml_allocator;

#endif
