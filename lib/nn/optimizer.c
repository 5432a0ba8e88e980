#include <float.h>
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "core/param_rows.h"
#include "moemlora/optimizer.h"
#include "nn/optimizer_internal.h"

/* The update loops stay out of line: inlined into the caller, GCC drops the
 * restrict qualifiers and guards the vector loop with alias checks. */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

/* Floats per 64-byte line: every parameter's m and v start on their own line. */
#define STATE_PAD 16

typedef struct opt_slot {
    mml_param *p;
    int64_t rows; /* shape at creation; a parameter that changed shape is refused */
    int64_t cols;
    int64_t size;
    int64_t t;    /* updates so far */
    float *m;     /* Adam moments (NULL for SGD and Adagrad) */
    float *v;     /* Adagrad: the accumulator G */
    int64_t *row_t; /* lazy Adam on an embedding parameter: per-row step counts, else NULL */
} opt_slot;

struct mml_optimizer {
    mml_ctx *ctx;
    mml_optimizer_options o;
    int64_t n;
    opt_slot *slots;
    float *state; /* every m and v in one block */
    size_t state_floats;
    int64_t *row_counts; /* every row_t in one block */
    size_t n_row_counts;
};

static const char *pname(const mml_param *p) { return p->name ? p->name : "(unnamed)"; }

int mml_optimizer_options_init_sized(mml_optimizer_options *out, uint32_t struct_size)
{
    mml_optimizer_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->kind = MML_OPT_ADAM;
    opt->lr = 1e-3f;
    opt->beta1 = 0.9f;
    opt->beta2 = 0.999f;
    opt->eps = 1e-8f;
    opt->adagrad_init = 0.1f;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_optimizer_options);
}

static int check_options(mml_ctx *ctx, const mml_optimizer_options *o)
{
    if (o->kind < MML_OPT_SGD || o->kind > MML_OPT_ADAGRAD)
        return mml__error(ctx, MML_EINVAL,
                          "optimizer: kind %d is none of SGD (0), Adam (1), lazy Adam (2), Adagrad (3)",
                          o->kind);
    if (!isfinite(o->adagrad_init) || !(o->adagrad_init >= 0.0f))
        return mml__error(ctx, MML_EINVAL, "optimizer: adagrad_init %g must be finite and >= 0",
                          (double)o->adagrad_init);
    if (!isfinite(o->lr) || !(o->lr > 0.0f))
        return mml__error(ctx, MML_EINVAL, "optimizer: lr %g must be finite and > 0",
                          (double)o->lr);
    /* The negated comparisons also reject NaN. */
    if (!(o->beta1 >= 0.0f && o->beta1 < 1.0f) || !(o->beta2 >= 0.0f && o->beta2 < 1.0f))
        return mml__error(ctx, MML_EINVAL, "optimizer: beta1 %g and beta2 %g must lie in [0, 1)",
                          (double)o->beta1, (double)o->beta2);
    if (!isfinite(o->eps) || !(o->eps > 0.0f))
        return mml__error(ctx, MML_EINVAL, "optimizer: eps %g must be finite and > 0",
                          (double)o->eps);
    return MML_OK;
}

/* Largest parameter and total state we accept: the byte counts then fit in size_t. */
#define MAX_FLOATS ((int64_t)(SIZE_MAX / (4 * sizeof(float))) - STATE_PAD)

static int check_params(mml_ctx *ctx, mml_param *const *params, int64_t n, int64_t *padded_total)
{
    if (!params || n < 1)
        return mml__error(ctx, MML_EINVAL, "optimizer: %s (n_params %lld)",
                          params ? "no parameters" : "NULL parameter list", (long long)n);
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        const mml_param *p = params[i];
        if (!p)
            return mml__error(ctx, MML_EINVAL, "optimizer: parameter %lld is NULL", (long long)i);
        if (!p->value || !p->grad || p->value == p->grad)
            return mml__error(ctx, MML_EINVAL, "optimizer: parameter %lld '%s' has %s",
                              (long long)i, pname(p),
                              !p->value  ? "a NULL value"
                              : !p->grad ? "a NULL grad"
                                         : "value and grad in the same buffer");
        if (p->rows < 1 || p->cols < 1 || p->rows > MAX_FLOATS / p->cols)
            return mml__error(ctx, MML_ESHAPE,
                              "optimizer: parameter %lld '%s' has shape %lld x %lld",
                              (long long)i, pname(p), (long long)p->rows, (long long)p->cols);
        int64_t padded = (p->rows * p->cols + STATE_PAD - 1) / STATE_PAD * STATE_PAD;
        if (total > MAX_FLOATS - padded)
            return mml__error(ctx, MML_ESHAPE, "optimizer: parameters too large in total");
        total += padded;
        /* Listed twice, a parameter would be updated twice per step. */
        for (int64_t j = 0; j < i; j++)
            if (params[j] == p || params[j]->value == p->value)
                return mml__error(ctx, MML_EINVAL,
                                  "optimizer: parameters %lld and %lld ('%s') are the same",
                                  (long long)j, (long long)i, pname(p));
    }
    *padded_total = total;
    return MML_OK;
}

/* Fresh state: moments 0, Adagrad's accumulator adagrad_init, counts 0. */
static void fill_state(mml_optimizer *op)
{
    if (op->state)
        memset(op->state, 0, op->state_floats * sizeof(float));
    if (op->o.kind == MML_OPT_ADAGRAD)
        for (int64_t i = 0; i < op->n; i++)
            for (int64_t j = 0; j < op->slots[i].size; j++)
                op->slots[i].v[j] = op->o.adagrad_init;
    if (op->row_counts)
        memset(op->row_counts, 0, op->n_row_counts * sizeof(int64_t));
    for (int64_t i = 0; i < op->n; i++)
        op->slots[i].t = 0;
}

int mml_optimizer_create(mml_optimizer **out, mml_ctx *ctx, const mml_optimizer_options *opt,
                         mml_param *const *params, int64_t n_params)
{
    if (out)
        *out = NULL;
    if (!out || !ctx)
        return mml__error(ctx, MML_EINVAL, "optimizer_create: NULL %s", out ? "ctx" : "out");
    mml_optimizer_options o;
    int rc = MML__COPY_OPTIONS(ctx, &o, opt, mml_optimizer_options, "optimizer");
    if (rc < 0)
        return rc;
    rc = check_options(ctx, &o);
    if (rc < 0)
        return rc;
    int64_t total = 0;
    rc = check_params(ctx, params, n_params, &total);
    if (rc < 0)
        return rc;

    mml_optimizer *op = mml__calloc(ctx, 1, sizeof *op);
    if (!op)
        return mml__error(ctx, MML_ENOMEM, "optimizer_create: out of memory");
    op->ctx = ctx;
    op->o = o;
    op->n = n_params;
    op->slots = mml__calloc(ctx, (size_t)n_params, sizeof *op->slots);
    int adam = o.kind == MML_OPT_ADAM || o.kind == MML_OPT_LAZY_ADAM;
    if (op->slots && o.kind != MML_OPT_SGD) {
        op->state_floats = (adam ? 2 : 1) * (size_t)total;
        op->state = mml__calloc(ctx, op->state_floats, sizeof(float));
    }
    if (o.kind == MML_OPT_LAZY_ADAM)
        for (int64_t i = 0; i < n_params; i++)
            if (params[i]->group == MML_GROUP_EMBEDDING)
                op->n_row_counts += (size_t)params[i]->rows;
    if (op->slots && op->n_row_counts)
        op->row_counts = mml__calloc(ctx, op->n_row_counts, sizeof(int64_t));
    if (!op->slots || (o.kind != MML_OPT_SGD && !op->state) ||
        (op->n_row_counts && !op->row_counts)) {
        mml_optimizer_destroy(op);
        return mml__error(ctx, MML_ENOMEM, "optimizer_create: out of memory for %lld parameters",
                          (long long)n_params);
    }
    size_t off = 0, rows_off = 0;
    for (int64_t i = 0; i < n_params; i++) {
        opt_slot *s = &op->slots[i];
        s->p = params[i];
        s->rows = params[i]->rows;
        s->cols = params[i]->cols;
        s->size = s->rows * s->cols;
        if (op->state && adam) {
            size_t padded = ((size_t)s->size + STATE_PAD - 1) / STATE_PAD * STATE_PAD;
            s->m = op->state + off;
            s->v = op->state + off + padded;
            off += 2 * padded;
        } else if (op->state) {
            size_t padded = ((size_t)s->size + STATE_PAD - 1) / STATE_PAD * STATE_PAD;
            s->v = op->state + off;
            off += padded;
        }
        if (op->row_counts && params[i]->group == MML_GROUP_EMBEDDING) {
            s->row_t = op->row_counts + rows_off;
            rows_off += (size_t)s->rows;
        }
    }
    fill_state(op);
    *out = op;
    return MML_OK;
}

void mml_optimizer_destroy(mml_optimizer *opt)
{
    if (!opt)
        return;
    mml_ctx *ctx = opt->ctx;
    mml__free(ctx, opt->state, opt->state_floats * sizeof(float));
    mml__free(ctx, opt->slots, (size_t)opt->n * sizeof *opt->slots);
    mml__free(ctx, opt->row_counts, opt->n_row_counts * sizeof(int64_t));
    mml__free(ctx, opt, sizeof *opt);
}

/* Index of the first NaN or infinity, or -1. The first pass is a branch-free
 * reduction (vectorisable at -O3); only a hit is rescanned. */
static int64_t first_nonfinite(const float *restrict g, int64_t n)
{
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad |= (uint32_t)!(fabsf(g[i]) <= FLT_MAX);
    if (!bad)
        return -1;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(g[i]))
            return i;
    return -1;
}

/* The rows a sparse update visits: lazy Adam on an embedding parameter and
 * Adagrad on a parameter that records the rows its backward passes wrote
 * (every other row has a zero gradient). NULL: the whole parameter. */
static mml__rows *sparse_rows(const mml_optimizer *opt, const opt_slot *s)
{
    if (!s->row_t && opt->o.kind != MML_OPT_ADAGRAD)
        return NULL;
    return mml__param_rows(s->p);
}

static int check_slot(mml_optimizer *opt, const opt_slot *s, int64_t i)
{
    const mml_param *p = s->p;
    if (!p->value || !p->grad || p->value == p->grad || p->rows != s->rows || p->cols != s->cols)
        return mml__error(opt->ctx, MML_ESHAPE,
                          "optimizer_step: parameter %lld '%s' changed since creation (bad "
                          "buffers, or shape %lld x %lld instead of %lld x %lld)",
                          (long long)i, pname(p), (long long)p->rows, (long long)p->cols,
                          (long long)s->rows, (long long)s->cols);
    /* A tracked table's other rows hold zeros: only the recorded ones can be bad. */
    const mml__rows *t = mml__param_rows(s->p);
    int64_t bad = -1;
    if (!t)
        bad = first_nonfinite(p->grad, s->size);
    for (int64_t k = 0; t && k < t->count && bad < 0; k++) {
        int64_t at = first_nonfinite(p->grad + t->list[k] * s->cols, s->cols);
        if (at >= 0)
            bad = t->list[k] * s->cols + at;
    }
    if (bad >= 0)
        return mml__error(opt->ctx, MML_ENONFINITE,
                          "optimizer_step: gradient of parameter '%s' at index %lld is %g",
                          pname(p), (long long)bad, (double)p->grad[bad]);
    return MML_OK;
}

/* The update loops run over whole blocks of STATE_PAD elements and then the
 * rest: GCC's -O2 cost model vectorises only loops that leave no remainder.
 * Vectorising the Adam loop also needs -fno-math-errno (sqrtf may set errno). */
static inline void sgd_one(float *restrict w, const float *restrict g, int64_t i, float lr)
{
    w[i] -= lr * g[i];
}

static NOINLINE void sgd_update(float *restrict w, const float *restrict g, int64_t n, float lr)
{
    int64_t nb = n & ~(int64_t)(STATE_PAD - 1);
    for (int64_t i = 0; i < nb; i++)
        sgd_one(w, g, i, lr);
    for (int64_t i = nb; i < n; i++)
        sgd_one(w, g, i, lr);
}

typedef struct adam_coef {
    float b1, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps;
} adam_coef;

/* The operation order follows PyTorch's kernels (mul_ then add_/addcmul_,
 * sqrt / bc2_sqrt + eps, addcdiv) so float results agree closely. */
static inline void adam_one_g(float *restrict w, float gi, float *restrict m, float *restrict v,
                              int64_t i, adam_coef c)
{
    float mi = c.b1 * m[i] + c.one_minus_b1 * gi;
    float vi = c.b2 * v[i] + c.one_minus_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
    w[i] -= c.step_size * mi / denom;
}

static inline void adam_one(float *restrict w, const float *restrict g, float *restrict m,
                            float *restrict v, int64_t i, adam_coef c)
{
    adam_one_g(w, g[i], m, v, i, c);
}

static NOINLINE void adam_update(float *restrict w, const float *restrict g,
                                 float *restrict m, float *restrict v, int64_t n, adam_coef c)
{
    int64_t nb = n & ~(int64_t)(STATE_PAD - 1);
    for (int64_t i = 0; i < nb; i++)
        adam_one(w, g, m, v, i, c);
    for (int64_t i = nb; i < n; i++)
        adam_one(w, g, m, v, i, c);
}

/* adam_update() with every gradient +0, without reading one: the rows a
 * batch did not touch (the same bits: gi * c is computed, not folded). */
static NOINLINE void adam_update_untouched(float *restrict w, float *restrict m,
                                           float *restrict v, int64_t n, adam_coef c)
{
    for (int64_t i = 0; i < n; i++)
        adam_one_g(w, 0.0f, m, v, i, c);
}

static adam_coef adam_coefs(const mml_optimizer_options *o, int64_t step)
{
    /* Bias corrections in double, as PyTorch computes them in Python floats. */
    double t = (double)step;
    double bc1 = 1.0 - pow((double)o->beta1, t);
    double bc2 = 1.0 - pow((double)o->beta2, t);
    adam_coef c = {o->beta1,
                   (float)(1.0 - (double)o->beta1),
                   o->beta2,
                   (float)(1.0 - (double)o->beta2),
                   (float)((double)o->lr / bc1),
                   (float)sqrt(bc2),
                   o->eps};
    return c;
}

/* The sparse loops visit rows scattered over a table that may be far larger
 * than the caches: fetching the rows a few iterations ahead overlaps those
 * misses (the update itself is a few instructions per element). */
#define PREFETCH_ROWS 8
static inline void prefetch_row(const opt_slot *s, int64_t r, int with_m)
{
#if defined(__GNUC__)
    int64_t off = r * s->cols;
    __builtin_prefetch(s->p->value + off, 1);
    __builtin_prefetch(s->p->grad + off, 0);
    __builtin_prefetch(s->v + off, 1);
    if (with_m) {
        __builtin_prefetch(s->m + off, 1);
        __builtin_prefetch(s->row_t + r, 1);
    }
#else
    (void)s;
    (void)r;
    (void)with_m;
#endif
}

static void lazy_adam_row(const mml_optimizer_options *o, opt_slot *s, int64_t r)
{
    int64_t cols = s->cols;
    s->row_t[r]++;
    adam_update(s->p->value + r * cols, s->p->grad + r * cols, s->m + r * cols, s->v + r * cols,
                cols, adam_coefs(o, s->row_t[r]));
}

/* Lazy Adam over the rows of one embedding parameter: the rows the batch
 * wrote when the parameter records them (t), otherwise the rows whose
 * gradient is not all zero. */
static void lazy_adam_update(const mml_optimizer_options *o, opt_slot *s, const mml__rows *t)
{
    if (t) {
        for (int64_t k = 0; k < t->count; k++) {
            if (k + PREFETCH_ROWS < t->count)
                prefetch_row(s, t->list[k + PREFETCH_ROWS], 1);
            lazy_adam_row(o, s, t->list[k]);
        }
        return;
    }
    int64_t cols = s->cols;
    for (int64_t r = 0; r < s->rows; r++) {
        const float *g = s->p->grad + r * cols;
        int64_t j = 0;
        while (j < cols && g[j] == 0.0f)
            j++;
        if (j == cols)
            continue; /* untouched row: nothing moves */
        lazy_adam_row(o, s, r);
    }
}

static NOINLINE void adagrad_update(float *restrict w, const float *restrict g,
                                    float *restrict G, int64_t n, float lr, float eps)
{
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        G[i] += gi * gi;
        w[i] -= lr * (gi / (sqrtf(G[i]) + eps)); /* addcdiv's order */
    }
}

/* Large parameters (the embedding tables) update on every thread of the
 * context, each on its own range: element-wise, so the bits do not depend
 * on the split. */
#define PARALLEL_MIN_FLOATS 65536

typedef struct adam_job {
    opt_slot *s;
    adam_coef c;
    int32_t n_tasks;
} adam_job;

/* Dense Adam over rows [r0, r1) of a tracked table, 64 rows (one word of
 * the mark bits) at a time: a block that no batch row touched is updated
 * without reading its gradient, any other block as usual (its untouched
 * rows' gradients are zeros: the same arithmetic). */
static void adam_rows(const opt_slot *s, const mml__rows *t, int64_t r0, int64_t r1, adam_coef c)
{
    int64_t cols = s->cols;
    float *w = s->p->value, *g = s->p->grad;
    for (int64_t r = r0; r < r1;) {
        int64_t end = (r | 63) + 1 < r1 ? (r | 63) + 1 : r1, o = r * cols, len = (end - r) * cols;
        if (t->mark[r >> 6] == 0)
            adam_update_untouched(w + o, s->m + o, s->v + o, len, c);
        else
            adam_update(w + o, g + o, s->m + o, s->v + o, len, c);
        r = end;
    }
}

static void adam_task(void *arg, int32_t task)
{
    const adam_job *j = arg;
    const opt_slot *s = j->s;
    const mml__rows *t = mml__param_rows(s->p);
    if (t) {
        int64_t words = (s->rows + 63) / 64;
        int64_t r0 = words * task / j->n_tasks * 64, r1 = words * (task + 1) / j->n_tasks * 64;
        adam_rows(s, t, r0, r1 < s->rows ? r1 : s->rows, j->c);
        return;
    }
    int64_t lines = (s->size + STATE_PAD - 1) / STATE_PAD;
    int64_t a = lines * task / j->n_tasks * STATE_PAD, b = lines * (task + 1) / j->n_tasks * STATE_PAD;
    if (b > s->size)
        b = s->size;
    if (a < b)
        adam_update(s->p->value + a, s->p->grad + a, s->m + a, s->v + a, b - a, j->c);
}

static void dense_adam(mml_optimizer *opt, opt_slot *s)
{
    adam_coef c = adam_coefs(&opt->o, s->t);
    mml__pool *pool = s->size >= PARALLEL_MIN_FLOATS ? mml__ctx_pool(opt->ctx) : NULL;
    adam_job j = {s, c, mml__pool_size(pool)};
    mml__pool_run(pool, adam_task, &j);
}

int mml_optimizer_step(mml_optimizer *opt)
{
    if (!opt)
        return MML_EINVAL;
    /* Validate everything that will move before moving anything. */
    for (int64_t i = 0; i < opt->n; i++) {
        const opt_slot *s = &opt->slots[i];
        if (s->p->frozen)
            continue;
        int rc = check_slot(opt, s, i);
        if (rc < 0)
            return rc;
    }
    const mml_optimizer_options *o = &opt->o;
    for (int64_t i = 0; i < opt->n; i++) {
        opt_slot *s = &opt->slots[i];
        if (s->p->frozen)
            continue;
        s->t++;
        if (o->kind == MML_OPT_SGD) {
            sgd_update(s->p->value, s->p->grad, s->size, o->lr);
            continue;
        }
        if (o->kind == MML_OPT_ADAGRAD) {
            const mml__rows *t = sparse_rows(opt, s);
            if (!t) {
                adagrad_update(s->p->value, s->p->grad, s->v, s->size, o->lr, o->eps);
                continue;
            }
            for (int64_t k = 0; k < t->count; k++) {
                if (k + PREFETCH_ROWS < t->count)
                    prefetch_row(s, t->list[k + PREFETCH_ROWS], 0);
                int64_t off = t->list[k] * s->cols;
                adagrad_update(s->p->value + off, s->p->grad + off, s->v + off, s->cols, o->lr,
                               o->eps);
            }
            continue;
        }
        if (s->row_t) {
            lazy_adam_update(o, s, sparse_rows(opt, s));
            continue;
        }
        dense_adam(opt, s);
    }
    return MML_OK;
}

int mml_optimizer_reset(mml_optimizer *opt)
{
    if (!opt)
        return MML_EINVAL;
    fill_state(opt);
    return MML_OK;
}

int64_t mml_optimizer_steps(const mml_optimizer *opt, int64_t param_index)
{
    if (!opt || param_index < 0 || param_index >= opt->n)
        return -1;
    return opt->slots[param_index].t;
}

int mml_optimizer_state(const mml_optimizer *opt, int64_t param_index, const float **m,
                        const float **v)
{
    if (!opt)
        return MML_EINVAL;
    if (param_index < 0 || param_index >= opt->n)
        return mml__error(opt->ctx, MML_ERANGE,
                          "optimizer_state: parameter index %lld outside [0, %lld)",
                          (long long)param_index, (long long)opt->n);
    if (m)
        *m = opt->slots[param_index].m;
    if (v)
        *v = opt->slots[param_index].v;
    return MML_OK;
}

int64_t mml_optimizer_row_steps(const mml_optimizer *opt, int64_t param_index, int64_t row)
{
    if (!opt || param_index < 0 || param_index >= opt->n)
        return -1;
    const opt_slot *s = &opt->slots[param_index];
    if (!s->row_t || row < 0 || row >= s->rows)
        return -1;
    return s->row_t[row];
}

/* Which arrays a slot has: what its state block in the checkpoint holds. */
#define PART_M 1u
#define PART_V 2u
#define PART_ROWS 4u

static uint32_t slot_parts(const opt_slot *s)
{
    return (s->m ? PART_M : 0u) | (s->v ? PART_V : 0u) | (s->row_t ? PART_ROWS : 0u);
}

void mml__optimizer_state_write(const mml_optimizer *opt, mml__wbuf *w)
{
    mml__wbuf_i32(w, opt->o.kind);
    mml__wbuf_u32(w, 0);
    mml__wbuf_i64(w, opt->n);
    for (int64_t i = 0; i < opt->n; i++) {
        const opt_slot *s = &opt->slots[i];
        mml__wbuf_i64(w, s->size);
        mml__wbuf_i64(w, s->t);
        mml__wbuf_u32(w, slot_parts(s));
        mml__wbuf_u32(w, 0);
        if (s->m)
            mml__wbuf_f32s(w, s->m, (size_t)s->size);
        if (s->v)
            mml__wbuf_f32s(w, s->v, (size_t)s->size);
        if (s->row_t) {
            mml__wbuf_i64(w, s->rows);
            for (int64_t j = 0; j < s->rows; j++)
                mml__wbuf_i64(w, s->row_t[j]);
        }
    }
}

int mml__optimizer_state_read(mml_optimizer *opt, mml__rbuf *r)
{
    int32_t kind = mml__rbuf_i32(r, "optimizer kind");
    uint32_t reserved = mml__rbuf_u32(r, "optimizer reserved");
    int64_t n = mml__rbuf_i64(r, "optimizer parameter count");
    if (mml__rbuf_status(r) < 0)
        return mml__rbuf_status(r);
    if (kind != opt->o.kind || reserved != 0 || n != opt->n)
        return mml__rbuf_fail(r, MML_ECORRUPT,
                              "optimizer kind %d (reserved %u) over %lld parameters, expected "
                              "kind %d over %lld",
                              (int)kind, (unsigned)reserved, (long long)n, (int)opt->o.kind,
                              (long long)opt->n);
    for (int64_t i = 0; i < opt->n; i++) {
        opt_slot *s = &opt->slots[i];
        int64_t size = mml__rbuf_i64(r, "optimizer parameter size");
        int64_t t = mml__rbuf_i64(r, "optimizer step count");
        uint32_t parts = mml__rbuf_u32(r, "optimizer parts");
        reserved = mml__rbuf_u32(r, "optimizer reserved");
        if (mml__rbuf_status(r) < 0)
            return mml__rbuf_status(r);
        if (size != s->size || parts != slot_parts(s) || reserved != 0)
            return mml__rbuf_fail(r, MML_ECORRUPT,
                                  "optimizer parameter %lld '%s': size %lld and parts %u, "
                                  "expected %lld and %u",
                                  (long long)i, pname(s->p), (long long)size, (unsigned)parts,
                                  (long long)s->size, (unsigned)slot_parts(s));
        if (t < 0)
            return mml__rbuf_fail(r, MML_ECORRUPT, "optimizer parameter %lld '%s': step count %lld",
                                  (long long)i, pname(s->p), (long long)t);
        s->t = t;
        if (s->m && mml__rbuf_f32s(r, s->m, (size_t)s->size, "optimizer first moment") < 0)
            return mml__rbuf_status(r);
        if (s->v && mml__rbuf_f32s(r, s->v, (size_t)s->size, "optimizer second moment") < 0)
            return mml__rbuf_status(r);
        /* A negative or non-finite second moment (or Adagrad sum) would turn
         * the next step's square root into NaN. */
        for (int64_t j = 0; j < (s->m ? s->size : 0); j++)
            if (!isfinite(s->m[j]))
                return mml__rbuf_fail(r, MML_ECORRUPT,
                                      "optimizer parameter %lld '%s': first moment %lld is %g",
                                      (long long)i, pname(s->p), (long long)j, (double)s->m[j]);
        for (int64_t j = 0; j < (s->v ? s->size : 0); j++)
            if (!(s->v[j] >= 0.0f && s->v[j] <= FLT_MAX))
                return mml__rbuf_fail(r, MML_ECORRUPT,
                                      "optimizer parameter %lld '%s': second moment %lld is %g",
                                      (long long)i, pname(s->p), (long long)j, (double)s->v[j]);
        if (s->row_t) {
            int64_t rows = mml__rbuf_i64(r, "optimizer row count");
            if (mml__rbuf_status(r) < 0)
                return mml__rbuf_status(r);
            if (rows != s->rows)
                return mml__rbuf_fail(r, MML_ECORRUPT,
                                      "optimizer parameter %lld '%s': %lld row counts, expected %lld",
                                      (long long)i, pname(s->p), (long long)rows,
                                      (long long)s->rows);
            for (int64_t j = 0; j < s->rows; j++) {
                int64_t rt = mml__rbuf_i64(r, "optimizer row step count");
                if (mml__rbuf_status(r) < 0)
                    return mml__rbuf_status(r);
                /* A row steps at most once per step of its parameter. */
                if (rt < 0 || rt > t)
                    return mml__rbuf_fail(r, MML_ECORRUPT,
                                          "optimizer parameter %lld '%s': row %lld step count "
                                          "%lld outside 0..%lld",
                                          (long long)i, pname(s->p), (long long)j, (long long)rt,
                                          (long long)t);
                s->row_t[j] = rt;
            }
        }
    }
    return MML_OK;
}
