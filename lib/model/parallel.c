/* Data parallelism inside one batch: the backbone's rows are cut into one
 * contiguous slice per thread; slice 0 runs on the model's own backbone in
 * the caller's thread, slice s >= 1 on a training copy of it (the same
 * weights, its own gradients and scratch, its own one-thread context) in
 * worker thread s. Every BLIS call then runs on one thread, with no barrier
 * inside it. The embeddings, the linear term and the gate stay with the
 * whole batch in the caller's thread. After backward, each copy's gradients
 * are added to the model's in slice order, so the result depends on the
 * thread count and nothing else. */
#include <pthread.h>
#include <string.h>

#include "backbones/backbone_io.h"
#include "backbones/backbones.h"
#include "model/model_internal.h"

/* Fewer rows than this per thread are not worth a thread. */
#define MIN_SLICE_ROWS 32

typedef struct slice {
    mml_ctx *ctx;     /* s >= 1: the worker's own */
    mml_backbone *bb; /* s == 0: the model's */
    int64_t first, n;
    mml_mix mix;
    mml_backbone_input in;
    mml_backbone_grads g;
    float *logits;
    const float *dlogits;
    int rc;
} slice;

struct mml__par {
    mml_ctx *ctx; /* the model's */
    int32_t n_slices;
    slice *s;
    /* Inside a job every thread, the caller's included, allocates through
     * the model's allocator (user) one at a time (locked). */
    pthread_mutex_t mu;
    mml_allocator user, locked;
    int32_t active; /* slices of the last forward pass */
};

static void *locked_alloc(void *user, size_t size, size_t align)
{
    mml__par *p = user;
    pthread_mutex_lock(&p->mu);
    void *q = p->user.alloc(p->user.user, size, align);
    pthread_mutex_unlock(&p->mu);
    return q;
}

static void locked_free(void *user, void *ptr, size_t size)
{
    mml__par *p = user;
    pthread_mutex_lock(&p->mu);
    p->user.free(p->user.user, ptr, size);
    pthread_mutex_unlock(&p->mu);
}

void mml__par_destroy(mml__par *p)
{
    if (!p)
        return;
    for (int32_t i = 1; i < p->n_slices; i++) {
        mml_backbone_destroy(p->s[i].bb);
        mml_ctx_destroy(p->s[i].ctx);
    }
    pthread_mutex_destroy(&p->mu);
    mml_ctx *ctx = p->ctx;
    mml__free(ctx, p->s, (size_t)p->n_slices * sizeof(slice));
    mml__free(ctx, p, sizeof *p);
}

static int par_create(mml_model *m, int32_t n_slices, mml__par **out)
{
    mml_ctx *ctx = m->ctx;
    *out = NULL;
    mml__par *p = mml__calloc(ctx, 1, sizeof *p);
    if (!p)
        return mml__error(ctx, MML_ENOMEM, "model: out of memory for %d threads", (int)n_slices);
    p->ctx = ctx;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        mml__free(ctx, p, sizeof *p);
        return mml__error(ctx, MML_ENOMEM, "model: cannot create a mutex for the threads");
    }
    p->user = ctx->allocator;
    p->locked = (mml_allocator){MML_ALLOCATOR_VERSION, 0, locked_alloc, locked_free, p};
    if (!(p->s = mml__calloc(ctx, (size_t)n_slices, sizeof(slice)))) {
        pthread_mutex_destroy(&p->mu);
        mml__free(ctx, p, sizeof *p);
        return mml__error(ctx, MML_ENOMEM, "model: out of memory for %d threads", (int)n_slices);
    }
    p->n_slices = 1;
    p->s[0].ctx = ctx;
    p->s[0].bb = m->backbone;
    int rc = MML_OK;
    for (int32_t i = 1; i < n_slices && rc >= 0; i++) {
        mml_ctx_options co;
        mml_ctx_options_init(&co);
        co.n_threads = 1;
        co.seed = ctx->seed;
        co.allocator = &p->locked;
        if ((rc = mml_ctx_create(&p->s[i].ctx, &co)) < 0) {
            rc = mml__error(ctx, rc, "model: cannot create the context of thread %d", (int)i);
            break;
        }
        p->n_slices = i + 1;
        if ((rc = mml__backbone_train_replica(m->backbone, p->s[i].ctx, &p->s[i].bb)) < 0)
            rc = mml__error(ctx, rc, "model: thread %d: %s", (int)i, mml_ctx_last_error(p->s[i].ctx));
    }
    if (rc < 0) {
        mml__par_destroy(p);
        return rc;
    }
    *out = p;
    return MML_OK;
}

static int par_enabled(const mml_model *m)
{
    return m->ctx->n_threads > 1 && !m->no_split && !m->replay && !m->readonly &&
           mml__backbone_is_builtin(m->backbone);
}

static int32_t par_slices(const mml_model *m, int64_t n_rows)
{
    if (!par_enabled(m))
        return 1;
    int64_t t = n_rows / MIN_SLICE_ROWS, workers = mml__pool_size(mml__ctx_pool(m->ctx));
    if (t > workers)
        t = workers;
    return t < 1 ? 1 : (int32_t)t;
}

static void forward_task(void *arg, int32_t task)
{
    mml__par *p = arg;
    if (task >= p->active)
        return;
    slice *s = &p->s[task];
    s->rc = mml_backbone_forward(s->bb, &s->in, s->logits);
}

static void backward_task(void *arg, int32_t task)
{
    mml__par *p = arg;
    if (task >= p->active)
        return;
    slice *s = &p->s[task];
    s->rc = mml_backbone_backward(s->bb, s->dlogits, &s->g);
}

/* One BLIS thread per slice, and the caller's allocations locked too. */
static void run_job(mml_model *m, void (*task)(void *, int32_t))
{
    mml__par *p = m->par;
    mml__blis_rntm_set_threads(m->ctx, 1);
    m->ctx->allocator = p->locked;
    mml__pool_run(mml__ctx_pool(m->ctx), task, p);
    m->ctx->allocator = p->user;
    mml__blis_rntm_set_threads(m->ctx, m->ctx->n_threads);
}

/* The first failing slice's code, its message moved to the model's context. */
static int first_error(mml__par *p)
{
    for (int32_t i = 0; i < p->active; i++) {
        int rc = p->s[i].rc;
        if (rc < 0)
            return i == 0 ? rc
                          : mml__error(p->ctx, rc, "rows %lld-%lld of the batch, numbered from 0 "
                                       "here: %s", (long long)p->s[i].first,
                                       (long long)(p->s[i].first + p->s[i].n - 1),
                                       mml_ctx_last_error(p->s[i].ctx));
    }
    return MML_OK;
}

static int split_forward(mml_model *m, const mml_backbone_input *in, int32_t n_slices,
                         float *logits)
{
    if (m->par && m->par->n_slices < n_slices) {
        mml__par_destroy(m->par);
        m->par = NULL;
    }
    int rc;
    if (!m->par && (rc = par_create(m, n_slices, &m->par)) < 0)
        return rc;
    mml__par *p = m->par;
    int64_t n = in->n_rows;
    int32_t fk = (m->F + m->M) * m->k;
    /* In training the copies' dropout streams start, every batch, from one
     * draw of the model's: a checkpoint's state stays the model's stream. */
    mml_rng *main_rng = in->training ? mml__backbone_dropout_rng(m->backbone) : NULL;
    uint64_t key = main_rng ? mml__rng_next(main_rng) : 0;
    for (int32_t i = 0; i < n_slices; i++) {
        slice *s = &p->s[i];
        s->first = n * i / n_slices;
        s->n = n * (i + 1) / n_slices - s->first;
        s->mix = *in->mix;
        s->mix.n_rows = s->n;
        if (s->mix.domain)
            s->mix.domain += s->first;
        if (s->mix.weights)
            s->mix.weights += s->first * m->E;
        s->in = *in;
        s->in.n_rows = s->n;
        s->in.emb = in->emb + s->first * fk;
        if (in->dense)
            s->in.dense = in->dense + s->first * m->n_dense;
        s->in.mix = &s->mix;
        s->logits = logits + s->first;
        s->rc = MML_OK;
        if (i == 0)
            continue;
        if (main_rng)
            mml__rng_init(mml__backbone_dropout_rng(s->bb), key, (uint64_t)i);
        /* The trainer freezes the model's parameters; the copies follow. */
        int64_t np = mml_backbone_n_params(m->backbone);
        for (int64_t j = 0; j < np; j++)
            mml_backbone_param(s->bb, j)->frozen = mml_backbone_param(m->backbone, j)->frozen;
    }
    p->active = n_slices;
    run_job(m, forward_task);
    if ((rc = first_error(p)) < 0)
        p->active = 0;
    return rc;
}

static int split_backward(mml_model *m, const float *dlogits, const mml_backbone_grads *g)
{
    mml__par *p = m->par;
    int32_t fk = (m->F + m->M) * m->k;
    int64_t np = mml_backbone_n_params(m->backbone);
    for (int32_t i = 0; i < p->active; i++) {
        slice *s = &p->s[i];
        s->dlogits = dlogits + s->first;
        s->g = *g;
        if (g->d_emb)
            s->g.d_emb = g->d_emb + s->first * fk;
        if (g->d_dense)
            s->g.d_dense = g->d_dense + s->first * m->n_dense;
        if (g->d_weights)
            s->g.d_weights = g->d_weights + s->first * m->E;
        s->rc = MML_OK;
        for (int64_t j = 0; i > 0 && j < np; j++) {
            mml_param *q = mml_backbone_param(s->bb, j);
            if (!q->frozen)
                memset(q->grad, 0, sizeof(float) * (size_t)(q->rows * q->cols));
        }
    }
    run_job(m, backward_task);
    int rc = first_error(p);
    if (rc < 0)
        return rc;
    for (int32_t i = 1; i < p->active; i++)
        for (int64_t j = 0; j < np; j++) {
            mml_param *dst = mml_backbone_param(m->backbone, j);
            const mml_param *src = mml_backbone_param(p->s[i].bb, j);
            if (dst->frozen)
                continue;
            mml__add_to(dst->rows * dst->cols, src->grad, dst->grad);
        }
    return MML_OK;
}

/* A batch the model could split but that is too small runs in the caller's
 * thread alone, BLIS included: OpenMP's idle threads would spin against the
 * pool's. */
static void alone(mml_model *m, int begin)
{
    if (par_enabled(m))
        mml__blis_rntm_set_threads(m->ctx, begin ? 1 : m->ctx->n_threads);
}

int mml__par_forward(mml_model *m, const mml_backbone_input *in, float *logits)
{
    if (m->par)
        m->par->active = 0;
    int32_t slices = par_slices(m, in->n_rows);
    if (slices > 1)
        return split_forward(m, in, slices, logits);
    alone(m, 1);
    int rc = mml_backbone_forward(m->backbone, in, logits);
    alone(m, 0);
    return rc;
}

int mml__par_backward(mml_model *m, const float *dlogits, const mml_backbone_grads *g)
{
    if (m->par && m->par->active > 1)
        return split_backward(m, dlogits, g);
    alone(m, 1);
    int rc = mml_backbone_backward(m->backbone, dlogits, g);
    alone(m, 0);
    return rc;
}

uint64_t mml__par_kink_pattern(const mml_model *m, uint64_t h)
{
    const mml__par *p = m->par;
    for (int32_t i = 1; p && i < p->active; i++)
        h = (h ^ mml_backbone_kink_pattern(p->s[i].bb)) * 0x100000001B3ull;
    return h;
}
