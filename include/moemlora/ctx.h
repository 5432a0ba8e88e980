/**
 * @file
 * libmoemlora: the context.
 *
 * A context holds the allocator, the thread count used by the numeric
 * kernels (applied through a private BLIS runtime object, never through the
 * process-global BLIS setters), the seed of the deterministic random number
 * generator, an optional log callback and the last error message.
 *
 * Random numbers: xoshiro256** (Blackman and Vigna), its 256-bit state
 * filled by SplitMix64 from (seed, stream). Each consumer (an embedding
 * table's init, an expert's init, dropout, shuffling) draws from its own
 * stream number, so streams are independent of the order objects are made.
 *
 * Thread safety: the library has no mutable global state. A context and the
 * objects created from it are used by one thread at a time. Different
 * contexts may be used from different threads at once.
 *
 * Threads: with n_threads > 1 the context starts n_threads - 1 worker
 * threads of its own on first use (they live until mml_ctx_destroy()). A
 * training or evaluation batch of a model with a built-in backbone is cut
 * into one contiguous slice of rows per thread; each slice runs its
 * forward and backward pass with one-thread BLIS, and the slices'
 * gradients are added in slice order, so results depend on the thread
 * count and on nothing else. Dense Adam updates large tables on every
 * thread, each on its own range (the same bits as one thread). Registered
 * backbones and read-only models use BLIS's own threads instead. The worker
 * threads allocate through the context's allocator, one allocation at a
 * time under a lock, and never call the log callback. Like any threads,
 * they do not survive fork(): a child process makes its own contexts.
 *
 * Errors: every fallible function returns int, 0 (MML_OK) on success or a
 * negative MML_E* code (status.h), and leaves a message in
 * mml_ctx_last_error() of the context it was given (functions without a
 * context return the code only).
 */
#ifndef MOEMLORA_CTX_H
#define MOEMLORA_CTX_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "export.h"

/** An opaque library context: allocator, thread count, seed, log callback,
 *  last error message and the backbone registry. Made by mml_ctx_create(),
 *  owned by the caller until mml_ctx_destroy(). One thread at a time may use
 *  a context and the objects made from it. */
typedef struct mml_ctx mml_ctx;

/** The levels of the library's messages (the level argument of mml_log_fn). */
typedef enum mml_log_level {
    /** Progress: the trainer's line per epoch and per stage. */
    MML_LOG_INFO = 1,
    /** Something the caller should know: a warning, such as BLIS running its
     *  slow generic kernels on a CPU that supports faster ones (logged once by
     *  mml_ctx_create()). */
    MML_LOG_WARN = 2,
    /** The message of every failing call, the same text as
     *  mml_ctx_last_error(). */
    MML_LOG_ERROR = 3
} mml_log_level;

/** Receives the library's messages; the library prints nothing itself.
 *  Called synchronously, on the thread that is using the context, from
 *  inside the library call that produces the message.
 *  @param user the log_user pointer of mml_ctx_options, passed as given.
 *  @param level an mml_log_level value (MML_LOG_INFO, MML_LOG_WARN or
 *         MML_LOG_ERROR).
 *  @param message the text, NUL-terminated, without a trailing newline;
 *         borrowed: valid only until the callback returns (copy it to keep
 *         it). */
typedef void (*mml_log_fn)(void *user, int level, const char *message);

/** Options of mml_ctx_create(). Initialise with mml_ctx_options_init(),
 *  then change the fields you need. */
typedef struct mml_ctx_options {
    /** sizeof(mml_ctx_options), as mml_ctx_options_init() sets it. */
    uint32_t struct_size;
    /** Threads of the numeric kernels: >= 1 (at most 1024); default 1. */
    uint32_t n_threads;
    /** Seed of every random stream; default 1. */
    uint64_t seed;
    /** NULL: the C library's; otherwise copied by mml_ctx_create(). The
     *  allocator's user pointer must stay valid until mml_ctx_destroy(). */
    const mml_allocator *allocator;
    /** NULL: no logging. */
    mml_log_fn log;
    /** Passed to log as its user argument; not dereferenced by the library.
     *  Must stay valid as long as log may be called (until
     *  mml_ctx_destroy()). */
    void *log_user;
    /** Since 1.1: the lowest level (mml_log_level) that reaches log; default
     *  MML_LOG_INFO (everything). An application built against 1.0 headers
     *  has a shorter struct and gets the default. */
    int32_t log_level;
    /** 0; reserved for later releases. */
    int32_t reserved;
} mml_ctx_options;

MML_BEGIN_DECLS

/** Fills the first struct_size bytes of *opt with the defaults (n_threads 1,
 *  seed 1, the C library's allocator, no log) and sets opt->struct_size to
 *  struct_size. C callers use mml_ctx_options_init(); bindings call this with
 *  their own struct size.
 *  @param opt the struct to fill (caller's memory, used during the call only).
 *  @param struct_size the caller's sizeof(mml_ctx_options).
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a struct_size that no release produced. No context: no message. */
MML_API int mml_ctx_options_init_sized(mml_ctx_options *opt, uint32_t struct_size);
/** Fills *opt with the defaults: calls mml_ctx_options_init_sized() with the
 *  caller's sizeof(mml_ctx_options), which is what makes a newer library
 *  never write past an older application's struct.
 *  @param opt pointer to the mml_ctx_options to fill.
 *  @return the status of mml_ctx_options_init_sized(). */
#define mml_ctx_options_init(opt) mml_ctx_options_init_sized((opt), (uint32_t)sizeof(mml_ctx_options))
/** Creates a context. Checks BLIS_ARCH_TYPE (see kernels.h), initialises
 *  BLIS and logs an MML_LOG_WARN when BLIS runs its generic kernels on a CPU
 *  that supports faster ones. May be called from any thread.
 *  @param out receives the new context, owned by the caller until
 *         mml_ctx_destroy(); set to NULL on failure (when out is not NULL).
 *  @param opt options, read during the call only; NULL means the defaults.
 *         Fields beyond an older struct_size take their defaults.
 *  @return MML_OK;
 *  MML_EINVAL for a NULL out, n_threads outside 1..1024, or an allocator
 *  whose alloc or free is NULL;
 *  MML_EVERSION for an opt->struct_size that no release produced, or an
 *  allocator whose version is not MML_ALLOCATOR_VERSION;
 *  MML_ENOMEM when the allocator fails;
 *  MML_EUNSUPPORTED when BLIS_ARCH_TYPE names no sub-configuration this
 *  library can check, or one this CPU cannot run.
 *  No context exists on failure, so there is no mml_ctx_last_error(); the
 *  MML_EUNSUPPORTED message goes to opt->log (MML_LOG_ERROR) only. */
MML_API int mml_ctx_create(mml_ctx **out, const mml_ctx_options *opt);
/** Destroys a context and what the library attached to it (the backbone
 *  registry, whose user pointers are not freed). Destroy every object made
 *  from the context first: they allocate through it. Afterwards ctx and the
 *  string of mml_ctx_last_error() are invalid.
 *  @param ctx the context; NULL does nothing. */
MML_API void mml_ctx_destroy(mml_ctx *ctx);

/** The message of the last failing call on this context ("" if none). Valid
 *  until the next call that uses the context. Never NULL; ctx may be NULL.
 *  @param ctx the context; NULL gives "".
 *  @return the message (at most 511 bytes), owned by the context: valid until
 *  the next call that uses the context and never after mml_ctx_destroy(). */
MML_API const char *mml_ctx_last_error(const mml_ctx *ctx);
/** Resets the last error message to "".
 *  @param ctx the context; NULL does nothing. */
MML_API void mml_ctx_clear_error(mml_ctx *ctx);

/** The number of threads the numeric kernels use.
 *  @param ctx the context.
 *  @return the thread count (1..1024); 0 for a NULL ctx. */
MML_API uint32_t mml_ctx_threads(const mml_ctx *ctx);
/** Sets the number of threads the numeric kernels use, from the next call
 *  on. n_threads >= 1; results are bitwise reproducible for a fixed count.
 *  The threads live inside the library's calls: the context is still used
 *  by one caller thread at a time.
 *  @param ctx the context.
 *  @param n_threads the new count, 1..1024.
 *  @return MML_OK; MML_EINVAL for a NULL ctx (no message) or n_threads
 *  outside 1..1024 (nothing changed). */
MML_API int mml_ctx_set_threads(mml_ctx *ctx, uint32_t n_threads);
/** The seed of the context's random streams.
 *  @param ctx the context.
 *  @return the seed; 0 for a NULL ctx (0 is also a valid seed). */
MML_API uint64_t mml_ctx_seed(const mml_ctx *ctx);
/** Sets the seed of the context's random streams. Objects read the seed when
 *  they are made (initial weights, dropout streams) and the trainer when it
 *  shuffles a stage, so the new seed affects what is made or trained
 *  afterwards, not existing objects.
 *  @param ctx the context.
 *  @param seed any value.
 *  @return MML_OK; MML_EINVAL for a NULL ctx. */
MML_API int mml_ctx_set_seed(mml_ctx *ctx, uint64_t seed);

/** Allocates through the context's allocator: a service for backbone
 *  plug-ins (with mml_ctx_free() and mml_ctx_set_error()).
 *  @param ctx the context; NULL gives NULL.
 *  @param size bytes to allocate; 0 gives NULL.
 *  @return a block aligned to 64 bytes, owned by the caller until
 *  mml_ctx_free() with the same ctx and size (before mml_ctx_destroy());
 *  NULL when the allocator fails (the message says so). */
MML_API void *mml_ctx_alloc(mml_ctx *ctx, size_t size);
/** Releases a block from mml_ctx_alloc(): a service for backbone plug-ins.
 *  @param ctx the context the block came from; NULL does nothing.
 *  @param ptr the block; NULL does nothing.
 *  @param size the size that was given to mml_ctx_alloc(). */
MML_API void mml_ctx_free(mml_ctx *ctx, void *ptr, size_t size);
/** Records message as the context's last error, passes it to the log
 *  callback (MML_LOG_ERROR) and returns the status: a service for backbone
 *  plug-ins, as in `return mml_ctx_set_error(ctx, MML_EINVAL, "...");`.
 *  When a plug-in's callback fails, the library reports the failure to its
 *  own caller as MML_ECALLBACK with a message that names the callback.
 *  @param ctx the context; NULL records nothing (status is still returned).
 *  @param status a negative MML_E* code; 0 or a positive value becomes
 *         MML_ECALLBACK (an error is never reported as success).
 *  @param message the text, copied (truncated to 511 bytes); NULL means "".
 *  @return status, or MML_ECALLBACK when status >= 0. */
MML_API int mml_ctx_set_error(mml_ctx *ctx, int status, const char *message);

MML_END_DECLS

#endif
