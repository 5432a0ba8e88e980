/* A fixed set of worker threads that run one job at a time for their owner:
 * the owner runs task 0 itself, the workers tasks 1 .. n - 1, and
 * mml__pool_run() returns when every task has returned. Tasks of one job run
 * concurrently; a job's tasks never wait for each other. Jobs come every
 * millisecond or so in training, so both sides spin briefly before they
 * sleep on a condition variable. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/internal.h"

struct mml__pool {
    mml_ctx *ctx;
    int32_t n_workers;
    pthread_t *threads;
    int32_t started;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    _Atomic uint64_t job;    /* incremented for every job */
    _Atomic int32_t pending; /* workers still running the current job */
    _Atomic int32_t stop;
    void (*fn)(void *arg, int32_t task);
    void *arg;
};

typedef struct worker_arg {
    mml__pool *pool;
    int32_t task;
} worker_arg;

/* About 100-200 us of polling before a thread sleeps. */
#define SPINS 4000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker_main(void *p)
{
    worker_arg *wa = p;
    mml__pool *pool = wa->pool;
    int32_t task = wa->task;
    uint64_t seen = 0;
    for (;;) {
        for (int i = 0; i < SPINS && atomic_load_explicit(&pool->job, memory_order_acquire) == seen &&
                        !atomic_load_explicit(&pool->stop, memory_order_relaxed);
             i++)
            cpu_relax();
        pthread_mutex_lock(&pool->mu);
        while (atomic_load(&pool->job) == seen && !atomic_load(&pool->stop))
            pthread_cond_wait(&pool->go, &pool->mu);
        if (atomic_load(&pool->stop)) {
            pthread_mutex_unlock(&pool->mu);
            break;
        }
        seen = atomic_load(&pool->job);
        void (*fn)(void *, int32_t) = pool->fn;
        void *arg = pool->arg;
        pthread_mutex_unlock(&pool->mu);
        fn(arg, task);
        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->mu);
        }
    }
    return NULL;
}

/* The workers' arguments live after the thread handles, in one block. */
static size_t block_size(int32_t n) { return (size_t)n * (sizeof(pthread_t) + sizeof(worker_arg)); }

void mml__pool_destroy(mml__pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->go);
    pthread_mutex_unlock(&pool->mu);
    for (int32_t i = 0; i < pool->started; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->go);
    pthread_cond_destroy(&pool->done);
    pthread_mutex_destroy(&pool->mu);
    mml__free(pool->ctx, pool->threads, block_size(pool->n_workers));
    mml__free(pool->ctx, pool, sizeof *pool);
}

int mml__pool_create(mml_ctx *ctx, int32_t n_workers, mml__pool **out)
{
    *out = NULL;
    mml__pool *pool = mml__calloc(ctx, 1, sizeof *pool);
    if (!pool)
        return mml__error(ctx, MML_ENOMEM, "out of memory for %d worker threads", (int)n_workers);
    pool->ctx = ctx;
    pool->n_workers = n_workers;
    if (pthread_mutex_init(&pool->mu, NULL) != 0) {
        mml__free(ctx, pool, sizeof *pool);
        return mml__error(ctx, MML_ENOMEM, "cannot create a mutex for the worker threads");
    }
    if (pthread_cond_init(&pool->go, NULL) != 0) {
        pthread_mutex_destroy(&pool->mu);
        mml__free(ctx, pool, sizeof *pool);
        return mml__error(ctx, MML_ENOMEM, "cannot create a condition for the worker threads");
    }
    if (pthread_cond_init(&pool->done, NULL) != 0) {
        pthread_cond_destroy(&pool->go);
        pthread_mutex_destroy(&pool->mu);
        mml__free(ctx, pool, sizeof *pool);
        return mml__error(ctx, MML_ENOMEM, "cannot create a condition for the worker threads");
    }
    pool->threads = mml__alloc(ctx, block_size(n_workers));
    if (!pool->threads) {
        mml__pool_destroy(pool);
        return mml__error(ctx, MML_ENOMEM, "out of memory for %d worker threads", (int)n_workers);
    }
    worker_arg *args = (worker_arg *)(void *)(pool->threads + n_workers);
    for (int32_t i = 0; i < n_workers; i++) {
        args[i] = (worker_arg){pool, i + 1};
        if (pthread_create(&pool->threads[i], NULL, worker_main, &args[i]) != 0) {
            mml__pool_destroy(pool);
            return mml__error(ctx, MML_ENOMEM, "cannot start worker thread %d of %d", (int)i + 1,
                              (int)n_workers);
        }
        pool->started++;
    }
    *out = pool;
    return MML_OK;
}

int32_t mml__pool_size(const mml__pool *pool) { return pool ? pool->n_workers + 1 : 1; }

void mml__pool_run(mml__pool *pool, void (*fn)(void *arg, int32_t task), void *arg)
{
    if (!pool) {
        fn(arg, 0);
        return;
    }
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->arg = arg;
    atomic_store(&pool->pending, pool->n_workers);
    atomic_fetch_add_explicit(&pool->job, 1, memory_order_release);
    pthread_cond_broadcast(&pool->go);
    pthread_mutex_unlock(&pool->mu);
    fn(arg, 0);
    for (int i = 0; i < SPINS && atomic_load_explicit(&pool->pending, memory_order_acquire) > 0; i++)
        cpu_relax();
    pthread_mutex_lock(&pool->mu);
    while (atomic_load(&pool->pending) > 0)
        pthread_cond_wait(&pool->done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}

mml__pool *mml__ctx_pool(mml_ctx *ctx)
{
    int32_t want = (int32_t)ctx->n_threads - 1;
    if (ctx->pool && ctx->pool->n_workers != want) {
        mml__pool_destroy(ctx->pool);
        ctx->pool = NULL;
    }
    if (!ctx->pool && want > 0 && mml__pool_create(ctx, want, &ctx->pool) < 0)
        ctx->pool = NULL;
    return ctx->pool;
}
