/* libmoemlora: the context.
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
 */
#ifndef MOEMLORA_CTX_H
#define MOEMLORA_CTX_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "export.h"

typedef struct mml_ctx mml_ctx;

/* The levels of the library's messages. */
typedef enum mml_log_level {
    MML_LOG_INFO = 1,  /* progress: the trainer's line per epoch and per stage */
    MML_LOG_WARN = 2,  /* something the caller should know: slow kernels, a stage that
                          could not validate */
    MML_LOG_ERROR = 3  /* the message of every failing call, as mml_ctx_last_error() */
} mml_log_level;

/* Receives the library's messages; the library prints nothing itself. */
typedef void (*mml_log_fn)(void *user, int level, const char *message);

typedef struct mml_ctx_options {
    uint32_t struct_size;           /* sizeof(mml_ctx_options) */
    uint32_t n_threads;             /* >= 1; default 1 */
    uint64_t seed;                  /* default 1 */
    const mml_allocator *allocator; /* NULL: the C library's; copied */
    mml_log_fn log;                 /* NULL: no logging */
    void *log_user;
} mml_ctx_options;

MML_BEGIN_DECLS

MML_API int mml_ctx_options_init_sized(mml_ctx_options *opt, uint32_t struct_size);
#define mml_ctx_options_init(opt) mml_ctx_options_init_sized((opt), (uint32_t)sizeof(mml_ctx_options))
/* opt may be NULL for the defaults. */
MML_API int mml_ctx_create(mml_ctx **out, const mml_ctx_options *opt);
MML_API void mml_ctx_destroy(mml_ctx *ctx);

/* The message of the last failing call on this context ("" if none). Valid
 * until the next call that uses the context. Never NULL; ctx may be NULL. */
MML_API const char *mml_ctx_last_error(const mml_ctx *ctx);
MML_API void mml_ctx_clear_error(mml_ctx *ctx);

MML_API uint32_t mml_ctx_threads(const mml_ctx *ctx);
/* n_threads >= 1; results are bitwise reproducible for a fixed count. */
MML_API int mml_ctx_set_threads(mml_ctx *ctx, uint32_t n_threads);
MML_API uint64_t mml_ctx_seed(const mml_ctx *ctx);
MML_API int mml_ctx_set_seed(mml_ctx *ctx, uint64_t seed);

MML_API void *mml_ctx_alloc(mml_ctx *ctx, size_t size);
MML_API void mml_ctx_free(mml_ctx *ctx, void *ptr, size_t size);
MML_API int mml_ctx_set_error(mml_ctx *ctx, int status, const char *message);

MML_END_DECLS

#endif
