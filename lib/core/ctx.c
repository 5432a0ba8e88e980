#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

int mml_ctx_options_init_sized(mml_ctx_options *out, uint32_t struct_size)
{
    mml_ctx_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->n_threads = 1;
    opt->seed = 1;
    opt->log_level = MML_LOG_INFO;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_ctx_options);
}

int mml_ctx_create(mml_ctx **out, const mml_ctx_options *opt)
{
    if (!out)
        return MML_EINVAL;
    *out = NULL;
    mml_ctx_options o;
    /* No context yet for a message: the code says it all. */
    if (MML__COPY_OPTIONS(NULL, &o, opt, mml_ctx_options, "context") < 0)
        return MML_EVERSION;
    if (o.n_threads < 1 || o.n_threads > 1024 || o.log_level < MML_LOG_INFO ||
        o.log_level > MML_LOG_ERROR)
        return MML_EINVAL;
    const mml_allocator *a = o.allocator ? o.allocator : mml__libc_allocator();
    if (a->version != MML_ALLOCATOR_VERSION)
        return MML_EVERSION;
    if (!a->alloc || !a->free)
        return MML_EINVAL;
    mml_ctx *ctx = mml__alloc_with(a, sizeof *ctx);
    if (!ctx)
        return MML_ENOMEM;
    memset(ctx, 0, sizeof *ctx);
    ctx->allocator = *a;
    ctx->n_threads = o.n_threads;
    ctx->seed = o.seed;
    ctx->log = o.log;
    ctx->log_user = o.log_user;
    ctx->log_level = o.log_level;
    int rc = mml__blis_arch_init(ctx);
    if (rc == MML_OK)
        rc = mml__blis_rntm_create(ctx);
    if (rc < 0) {
        mml__free_with(a, ctx, sizeof *ctx);
        return rc;
    }
    *out = ctx;
    return MML_OK;
}

void mml_ctx_destroy(mml_ctx *ctx)
{
    if (!ctx)
        return;
    mml_allocator a = ctx->allocator;
    for (int i = MML_CTX_ATTACHMENTS - 1; i >= 0; i--)
        if (ctx->attachments[i].key && ctx->attachments[i].release)
            ctx->attachments[i].release(ctx, ctx->attachments[i].data);
    mml__pool_destroy(ctx->pool);
    mml__blis_rntm_destroy(ctx);
    mml__free_with(&a, ctx, sizeof *ctx);
}

int mml__ctx_attach(mml_ctx *ctx, const void *key, void *data,
                    void (*release)(mml_ctx *ctx, void *data))
{
    if (mml__ctx_attached(ctx, key))
        return MML_EEXIST;
    for (int i = 0; i < MML_CTX_ATTACHMENTS; i++)
        if (!ctx->attachments[i].key) {
            ctx->attachments[i].key = key;
            ctx->attachments[i].data = data;
            ctx->attachments[i].release = release;
            return MML_OK;
        }
    return MML_ENOMEM;
}

void *mml__ctx_attached(const mml_ctx *ctx, const void *key)
{
    for (int i = 0; ctx && i < MML_CTX_ATTACHMENTS; i++)
        if (ctx->attachments[i].key == key)
            return ctx->attachments[i].data;
    return NULL;
}

const char *mml_ctx_last_error(const mml_ctx *ctx) { return ctx ? ctx->last_error : ""; }

void mml_ctx_clear_error(mml_ctx *ctx)
{
    if (ctx)
        ctx->last_error[0] = '\0';
}

void *mml_ctx_alloc(mml_ctx *ctx, size_t size)
{
    if (!ctx || size == 0)
        return NULL;
    void *p = mml__alloc(ctx, size);
    if (!p)
        mml__error(ctx, MML_ENOMEM, "mml_ctx_alloc: out of memory for %zu bytes", size);
    return p;
}

void mml_ctx_free(mml_ctx *ctx, void *ptr, size_t size)
{
    if (ctx && ptr)
        mml__free(ctx, ptr, size);
}

int mml_ctx_set_error(mml_ctx *ctx, int status, const char *message)
{
    if (status >= 0)
        status = MML_ECALLBACK; /* an error with a success code is still an error */
    return mml__error(ctx, status, "%s", message ? message : "");
}

uint32_t mml_ctx_threads(const mml_ctx *ctx) { return ctx ? ctx->n_threads : 0; }

int mml_ctx_set_threads(mml_ctx *ctx, uint32_t n_threads)
{
    if (!ctx)
        return MML_EINVAL;
    if (n_threads < 1 || n_threads > 1024)
        return mml__error(ctx, MML_EINVAL, "thread count %u: expected 1..1024", n_threads);
    ctx->n_threads = n_threads;
    mml__blis_rntm_set_threads(ctx, n_threads);
    return MML_OK;
}

uint64_t mml_ctx_seed(const mml_ctx *ctx) { return ctx ? ctx->seed : 0; }

int mml_ctx_set_seed(mml_ctx *ctx, uint64_t seed)
{
    if (!ctx)
        return MML_EINVAL;
    ctx->seed = seed;
    return MML_OK;
}

int mml__error(mml_ctx *ctx, int status, const char *fmt, ...)
{
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
        va_end(ap);
        if (ctx->log && ctx->log_level <= MML_LOG_ERROR)
            ctx->log(ctx->log_user, MML_LOG_ERROR, ctx->last_error);
    }
    return status;
}

void mml__log(mml_ctx *ctx, int level, const char *fmt, ...)
{
    if (!ctx || !ctx->log || level < ctx->log_level)
        return;
    char buf[MML_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_user, level, buf);
}

int mml__size_known(uint32_t size, size_t current, const uint32_t *older)
{
    if (size == current)
        return 1;
    for (; older && *older; older++)
        if (size == *older)
            return 1;
    return 0;
}

int mml__check_size(mml_ctx *ctx, uint32_t size, size_t current, const uint32_t *older,
                    const char *what)
{
    if (mml__size_known(size, current, older))
        return MML_OK;
    return mml__error(ctx, MML_EVERSION,
                      "%s: struct_size %u is not a size of this struct that any release "
                      "produced (this library's: %zu); initialise it with its _init()",
                      what, size, current);
}

int mml__copy_options(mml_ctx *ctx, void *dst, size_t dst_size, const void *src,
                      const uint32_t *older, const char *what)
{
    if (!src)
        return MML_OK; /* NULL options: the defaults already in dst */
    uint32_t size;
    memcpy(&size, src, sizeof size);
    char name[96];
    snprintf(name, sizeof name, "%s options", what);
    int rc = mml__check_size(ctx, size, dst_size, older, name);
    if (rc < 0)
        return rc;
    memcpy(dst, src, size);
    uint32_t full = (uint32_t)dst_size;
    memcpy(dst, &full, sizeof full);
    return MML_OK;
}

int mml__write_versioned(mml_ctx *ctx, void *out, const void *full, size_t full_size,
                         uint32_t size, const uint32_t *older, const char *what)
{
    int rc = mml__check_size(ctx, size, full_size, older, what);
    return rc < 0 ? rc : mml__init_versioned(out, full, full_size, size, older);
}

int mml__init_versioned(void *out, const void *full, size_t full_size, uint32_t size,
                        const uint32_t *older)
{
    if (!out)
        return MML_EINVAL;
    if (!mml__size_known(size, full_size, older))
        return MML_EVERSION;
    memcpy(out, full, size);
    memcpy(out, &size, sizeof size);
    return MML_OK;
}

int mml__ensure_floats(mml_ctx *ctx, float **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return MML_OK;
    mml__free(ctx, *buf, *cap * sizeof(float));
    *cap = 0;
    *buf = mml__alloc(ctx, n * sizeof(float));
    if (!*buf)
        return mml__error(ctx, MML_ENOMEM, "out of memory for %zu floats", n);
    *cap = n;
    return MML_OK;
}
