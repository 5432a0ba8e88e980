#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "moemlora/gradcheck.h"

/* RNG streams within the caller's seed: the sample of parameter p uses
 * stream p, so it does not depend on the sizes of the other parameters. */
#define DIRECTION_STREAM UINT64_MAX

typedef struct gc_run {
    mml_ctx *ctx;
    mml_gradcheck_options o;
    mml_param *const *params;
    int64_t n;
    mml_loss_fn loss;
    void *user;
    uint64_t base_pattern;
    float *saved;    /* every value at entry, parameter after parameter */
    float *analytic; /* the gradients from the grad callback, same layout */
    float *dir;      /* the random direction (unit length), same layout */
    size_t total;
    mml_gradcheck_report r;
} gc_run;

static const char *pname(const mml_param *p) { return p->name ? p->name : "(unnamed)"; }

int mml_gradcheck_options_init_sized(mml_gradcheck_options *out, uint32_t struct_size)
{
    mml_gradcheck_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->step = 1e-3;
    opt->rtol = 1e-2;
    opt->atol = 1e-5;
    opt->max_coords_per_param = 0;
    opt->seed = 1;
    opt->random_direction = 1;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_gradcheck_options);
}

static int check_args(mml_ctx *ctx, const mml_gradcheck_options *o, mml_param *const *params,
                      int64_t n, mml_grad_fn grad, mml_loss_fn loss, size_t *total)
{
    if (!isfinite(o->step) || !(o->step > 0.0))
        return mml__error(ctx, MML_EINVAL, "gradcheck: step %g must be finite and > 0", o->step);
    if (!isfinite(o->rtol) || !(o->rtol >= 0.0) || !isfinite(o->atol) || !(o->atol >= 0.0))
        return mml__error(ctx, MML_EINVAL, "gradcheck: rtol %g and atol %g must be finite and >= 0",
                          o->rtol, o->atol);
    if (o->max_coords_per_param < 0)
        return mml__error(ctx, MML_EINVAL, "gradcheck: max_coords_per_param %lld is negative",
                          (long long)o->max_coords_per_param);
    if (o->random_direction != 0 && o->random_direction != 1)
        return mml__error(ctx, MML_EINVAL, "gradcheck: random_direction %d is neither 0 nor 1",
                          o->random_direction);
    if (!grad || !loss)
        return mml__error(ctx, MML_EINVAL, "gradcheck: NULL %s callback", grad ? "loss" : "grad");
    if (!params || n < 1)
        return mml__error(ctx, MML_EINVAL, "gradcheck: %s (n_params %lld)",
                          params ? "no parameters" : "NULL parameter list", (long long)n);
    /* Three float copies of everything must fit in size_t. */
    const int64_t max_total = (int64_t)(SIZE_MAX / (3 * sizeof(float)) / 2);
    int64_t sum = 0;
    for (int64_t i = 0; i < n; i++) {
        const mml_param *p = params[i];
        if (!p)
            return mml__error(ctx, MML_EINVAL, "gradcheck: parameter %lld is NULL", (long long)i);
        if (!p->value || !p->grad)
            return mml__error(ctx, MML_EINVAL, "gradcheck: parameter %lld '%s' has a NULL %s",
                              (long long)i, pname(p), p->value ? "grad" : "value");
        if (p->rows < 1 || p->cols < 1 || p->rows > max_total / p->cols ||
            sum > max_total - p->rows * p->cols)
            return mml__error(ctx, MML_ESHAPE,
                              "gradcheck: parameter %lld '%s' has shape %lld x %lld",
                              (long long)i, pname(p), (long long)p->rows, (long long)p->cols);
        sum += p->rows * p->cols;
        /* Listed twice, a parameter would be moved twice along the direction. */
        for (int64_t j = 0; j < i; j++)
            if (params[j] == p || params[j]->value == p->value)
                return mml__error(ctx, MML_EINVAL,
                                  "gradcheck: parameters %lld and %lld ('%s') are the same",
                                  (long long)j, (long long)i, pname(p));
    }
    *total = (size_t)sum;
    return MML_OK;
}

/* Puts every value back as it was at entry. */
static void restore_all(gc_run *g)
{
    size_t off = 0;
    for (int64_t pi = 0; pi < g->n; pi++) {
        mml_param *p = g->params[pi];
        size_t size = (size_t)(p->rows * p->cols);
        memcpy(p->value, g->saved + off, size * sizeof(float));
        off += size;
    }
}

/* Where a loss evaluation happens, for messages. */
enum { AT_START = -1, AT_DIRECTION = -2 };

/* One forward evaluation at coordinate (where_p, where_i), or AT_*. */
static int eval_loss(gc_run *g, double *loss, uint64_t *pattern, int64_t where_p,
                     int64_t where_i)
{
    *loss = 0.0;
    *pattern = 0;
    int rc = g->loss(g->user, loss, pattern);
    char where[160];
    if (rc >= 0 && isfinite(*loss))
        return MML_OK;
    if (where_p >= 0)
        snprintf(where, sizeof where, "parameter %lld '%s' index %lld moved", (long long)where_p,
                 pname(g->params[where_p]), (long long)where_i);
    else
        snprintf(where, sizeof where, "%s",
                 where_p == AT_START ? "unperturbed values" : "along the random direction");
    if (rc < 0)
        return mml__error(g->ctx, MML_ECALLBACK, "gradcheck: the loss callback returned %d (%s)",
                          rc, where);
    return mml__error(g->ctx, MML_ENONFINITE, "gradcheck: the loss is %g (%s)", *loss, where);
}

static int close_enough(const gc_run *g, double a, double n, double *excess)
{
    double diff = fabs(a - n);
    double tol = g->o.rtol * fmax(fabs(a), fabs(n)) + g->o.atol;
    *excess = isnan(diff) ? INFINITY : diff - tol;
    return diff <= tol;
}

static int check_coord(gc_run *g, int64_t pi, int64_t i, double a)
{
    float *x = g->params[pi]->value;
    float v0 = x[i];
    float xp = (float)((double)v0 + g->o.step);
    float xm = (float)((double)v0 - g->o.step);
    if (!(xp > xm)) {
        /* The step is below the float spacing of v0. */
        xp = nextafterf(v0, INFINITY);
        xm = nextafterf(v0, -INFINITY);
    }
    double lp, lm;
    uint64_t pp, pm;
    x[i] = xp;
    int rc = eval_loss(g, &lp, &pp, pi, i);
    x[i] = xm;
    if (rc == MML_OK)
        rc = eval_loss(g, &lm, &pm, pi, i);
    x[i] = v0;
    if (rc < 0)
        return rc;
    if (pp != g->base_pattern || pm != g->base_pattern) {
        g->r.skipped_kinks++;
        return MML_OK;
    }
    double num = (lp - lm) / ((double)xp - (double)xm);
    double excess;
    g->r.checked++;
    if (!close_enough(g, a, num, &excess))
        g->r.failed++;
    if (excess > g->r.worst_excess) {
        g->r.worst_excess = excess;
        g->r.worst_param = pi;
        g->r.worst_index = i;
        g->r.worst_analytic = a;
        g->r.worst_numeric = num;
    }
    return MML_OK;
}

static int check_coordinates(gc_run *g)
{
    size_t off = 0;
    for (int64_t pi = 0; pi < g->n; pi++) {
        int64_t size = g->params[pi]->rows * g->params[pi]->cols;
        const float *a = g->analytic + off;
        off += (size_t)size;
        int64_t k = g->o.max_coords_per_param;
        if (k == 0 || k >= size) {
            for (int64_t i = 0; i < size; i++) {
                int rc = check_coord(g, pi, i, a[i]);
                if (rc < 0)
                    return rc;
            }
            continue;
        }
        /* Selection sampling (Knuth's Algorithm S): exactly k distinct
         * indices in increasing order, no memory needed. */
        mml_rng rng;
        mml__rng_init(&rng, g->o.seed, (uint64_t)pi);
        for (int64_t i = 0; i < size && k > 0; i++) {
            if (mml__rng_below(&rng, (uint64_t)(size - i)) >= (uint64_t)k)
                continue;
            k--;
            int rc = check_coord(g, pi, i, a[i]);
            if (rc < 0)
                return rc;
        }
    }
    return MML_OK;
}

/* Sets every value to saved + sign * h * dir; returns sum g_k (new_k - saved_k)
 * over the actual float displacements. */
static double move_along(gc_run *g, double sign)
{
    double dot = 0.0;
    size_t off = 0;
    for (int64_t pi = 0; pi < g->n; pi++) {
        mml_param *p = g->params[pi];
        int64_t size = p->rows * p->cols;
        for (int64_t i = 0; i < size; i++, off++) {
            double v0 = g->saved[off];
            float x = (float)(v0 + sign * g->o.step * (double)g->dir[off]);
            p->value[i] = x;
            dot += (double)g->analytic[off] * ((double)x - v0);
        }
    }
    return dot;
}

static int check_direction(gc_run *g)
{
    mml_rng rng;
    mml__rng_init(&rng, g->o.seed, DIRECTION_STREAM);
    double norm2 = 0.0;
    for (size_t k = 0; k < g->total; k++) {
        double d = mml__rng_normal(&rng);
        g->dir[k] = (float)d;
        norm2 += (double)g->dir[k] * (double)g->dir[k];
    }
    if (!(norm2 > 0.0))
        return MML_OK;
    float scale = (float)(1.0 / sqrt(norm2));
    for (size_t k = 0; k < g->total; k++)
        g->dir[k] *= scale;

    double lp, lm;
    uint64_t pp, pm;
    double dot = move_along(g, 1.0);
    int rc = eval_loss(g, &lp, &pp, AT_DIRECTION, -1);
    if (rc == MML_OK) {
        dot -= move_along(g, -1.0);
        rc = eval_loss(g, &lm, &pm, AT_DIRECTION, -1);
    }
    restore_all(g);
    if (rc < 0)
        return rc;
    /* dot = g . (x+ - x-): both sides use the same float displacements. */
    double two_h = 2.0 * g->o.step;
    g->r.direction_analytic = dot / two_h;
    g->r.direction_numeric = (lp - lm) / two_h;
    if (pp != g->base_pattern || pm != g->base_pattern)
        return MML_OK;
    double excess;
    g->r.direction_checked = 1;
    g->r.direction_ok = close_enough(g, g->r.direction_analytic, g->r.direction_numeric, &excess);
    return MML_OK;
}

static int run(gc_run *g, mml_grad_fn grad)
{
    int rc = grad(g->user);
    restore_all(g); /* in case the callback moved a value */
    if (rc < 0)
        return mml__error(g->ctx, MML_ECALLBACK, "gradcheck: the grad callback returned %d", rc);
    size_t off = 0;
    for (int64_t pi = 0; pi < g->n; pi++) {
        const mml_param *p = g->params[pi];
        size_t size = (size_t)(p->rows * p->cols);
        memcpy(g->analytic + off, p->grad, size * sizeof(float));
        off += size;
    }
    double l0;
    rc = eval_loss(g, &l0, &g->base_pattern, AT_START, -1);
    if (rc < 0)
        return rc;
    rc = check_coordinates(g);
    if (rc < 0)
        return rc;
    if (g->o.random_direction) {
        rc = check_direction(g);
        if (rc < 0)
            return rc;
    }
    const mml_gradcheck_report *r = &g->r;
    if (r->failed > 0) {
        const mml_param *p = g->params[r->worst_param];
        return mml__error(g->ctx, MML_EGRADIENT,
                          "gradcheck: %lld of %lld coordinates failed; worst: parameter %lld '%s' "
                          "index %lld, analytic %.9g, numeric %.9g",
                          (long long)r->failed, (long long)r->checked, (long long)r->worst_param,
                          pname(p), (long long)r->worst_index, r->worst_analytic,
                          r->worst_numeric);
    }
    if (r->direction_checked && !r->direction_ok)
        return mml__error(g->ctx, MML_EGRADIENT,
                          "gradcheck: along a random direction through all parameters: "
                          "analytic %.9g, numeric %.9g",
                          r->direction_analytic, r->direction_numeric);
    return MML_OK;
}

static void write_report(mml_gradcheck_report *out, uint32_t size, const mml_gradcheck_report *r)
{
    if (out)
        mml__init_versioned(out, r, sizeof *r, size, MML__OLDER_SIZES_mml_gradcheck_report);
}

int mml_gradcheck_sized(mml_ctx *ctx, const mml_gradcheck_options *opt, mml_param *const *params,
                        int64_t n_params, mml_grad_fn grad, mml_loss_fn loss, void *user,
                        mml_gradcheck_report *report, uint32_t report_size)
{
    if (report) {
        int vrc = mml__check_size(ctx, report_size, sizeof *report,
                                  MML__OLDER_SIZES_mml_gradcheck_report, "mml_gradcheck_report");
        if (vrc < 0)
            return vrc;
        mml_gradcheck_report empty;
        memset(&empty, 0, sizeof empty);
        empty.worst_excess = -INFINITY;
        empty.worst_param = -1;
        empty.worst_index = -1;
        write_report(report, report_size, &empty);
    }
    if (!ctx)
        return MML_EINVAL;
    gc_run g;
    memset(&g, 0, sizeof g);
    int rc = MML__COPY_OPTIONS(ctx, &g.o, opt, mml_gradcheck_options, "gradcheck");
    if (rc < 0)
        return rc;
    rc = check_args(ctx, &g.o, params, n_params, grad, loss, &g.total);
    if (rc < 0)
        return rc;
    g.ctx = ctx;
    g.params = params;
    g.n = n_params;
    g.loss = loss;
    g.user = user;
    g.r.worst_excess = -INFINITY;
    g.r.worst_param = -1;
    g.r.worst_index = -1;
    g.saved = mml__alloc(ctx, g.total * sizeof(float));
    g.analytic = mml__alloc(ctx, g.total * sizeof(float));
    if (g.o.random_direction)
        g.dir = mml__alloc(ctx, g.total * sizeof(float));
    if (!g.saved || !g.analytic || (g.o.random_direction && !g.dir)) {
        rc = mml__error(ctx, MML_ENOMEM, "gradcheck: out of memory for %zu values", g.total);
    } else {
        size_t off = 0;
        for (int64_t pi = 0; pi < n_params; pi++) {
            size_t size = (size_t)(params[pi]->rows * params[pi]->cols);
            memcpy(g.saved + off, params[pi]->value, size * sizeof(float));
            off += size;
        }
        rc = run(&g, grad);
        restore_all(&g);
        write_report(report, report_size, &g.r);
    }
    mml__free(ctx, g.dir, g.total * sizeof(float));
    mml__free(ctx, g.analytic, g.total * sizeof(float));
    mml__free(ctx, g.saved, g.total * sizeof(float));
    return rc;
}
