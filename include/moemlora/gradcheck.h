/* libmoemlora: finite-difference gradient checker.
 *
 * Checks the analytic gradient of any scalar loss over a list of mml_param
 * (a layer, a backbone, your own code) against central differences, one
 * coordinate at a time (all of them, or a seeded sample per parameter), and
 * optionally along one seeded random direction through all parameters at
 * once. Modelled on KANN's kad_check_grad.
 *
 * You supply two callbacks over your own state:
 *   grad: zero the parameters' grad buffers, then run forward and backward at
 *         the current values (the checker calls it once, first).
 *   loss: forward only at the current values. Also report a fingerprint of
 *         the discrete choices the forward pass made (e.g. a hash of the ReLU
 *         on/off pattern, the arg-max of a top-k; 0 if there are none).
 *         Where a +h or -h evaluation yields a different fingerprint than
 *         the unperturbed one, the difference straddles a kink and says
 *         nothing about the gradient: that coordinate is skipped and counted.
 * The loss must be a deterministic function of the values (fix dropout
 * masks and any other randomness between calls) and is best accumulated in
 * double. Frozen parameters are checked like the others.
 *
 * Example, for a user's network `net` with parameters net->params:
 *
 *     static int my_grad(void *u) {
 *         my_net *net = u;
 *         mml_params_zero_grad(net->params, net->n_params);
 *         return my_forward_backward(net);          // fills the grad buffers
 *     }
 *     static int my_loss(void *u, double *loss, uint64_t *pattern) {
 *         return my_forward(u, loss, pattern);      // pattern: hash of ReLU bits
 *     }
 *
 *     mml_gradcheck_options o;
 *     mml_gradcheck_options_init(&o);
 *     o.max_coords_per_param = 64;                  // 0 = every coordinate
 *     mml_gradcheck_report r;
 *     int rc = mml_gradcheck(ctx, &o, net->params, net->n_params, my_grad, my_loss, net, &r);
 *     if (rc == MML_EGRADIENT)                      // names parameter, index, both values
 *         fprintf(stderr, "%s\n", mml_ctx_last_error(ctx));
 *
 * Coordinate (p, i) passes iff |a - n| <= rtol * max(|a|, |n|) + atol, with
 * a the analytic and n = (L(v + h) - L(v - h)) / (actual float difference of
 * the two perturbed values), so the float spacing of large values is taken
 * into account. A value too large for the step to change it at all is moved
 * by one float spacing on each side instead.
 */
#ifndef MOEMLORA_GRADCHECK_H
#define MOEMLORA_GRADCHECK_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

/* Must zero, then fill, the parameters' grad buffers with the analytic
 * gradient of the loss at the current values. Negative return = failure. */
typedef int (*mml_grad_fn)(void *user);
/* Forward only at the current values: *loss, and in *pattern (preset to 0) a
 * fingerprint of the discrete choices taken. Negative return = failure. */
typedef int (*mml_loss_fn)(void *user, double *loss, uint64_t *pattern);

typedef struct mml_gradcheck_options {
    uint32_t struct_size;         /* set by mml_gradcheck_options_init() */
    int32_t reserved0;            /* 0 */
    double step;                  /* h > 0; default 1e-3 */
    double rtol;                  /* >= 0; default 1e-2 */
    double atol;                  /* >= 0; default 1e-5 */
    int64_t max_coords_per_param; /* 0 (default) = every coordinate; else a seeded sample */
    uint64_t seed;                /* for the sample and the direction; default 1 */
    int32_t random_direction;     /* 1 (default): also check one random direction; 0: don't */
    int32_t reserved1;            /* 0 */
} mml_gradcheck_options;

typedef struct mml_gradcheck_report {
    uint32_t struct_size;   /* bytes the library filled (the caller's size) */
    int32_t direction_checked; /* 1 if the direction was compared (0: off, or it crossed a kink) */
    int32_t direction_ok;      /* 1 if it was compared and passed */
    int32_t reserved;          /* 0 */
    int64_t checked;        /* coordinates compared */
    int64_t skipped_kinks;  /* coordinates skipped because the pattern changed */
    int64_t failed;         /* coordinates that failed */
    double worst_excess;    /* max over compared coordinates of
                               |a - n| - (rtol max(|a|, |n|) + atol): > 0 iff something
                               failed; -inf if nothing was compared */
    int64_t worst_param;    /* the coordinate of worst_excess (-1, -1 if none) */
    int64_t worst_index;
    double worst_analytic;
    double worst_numeric;
    double direction_analytic; /* gradient . d and its difference estimate */
    double direction_numeric;
} mml_gradcheck_report;

MML_BEGIN_DECLS

MML_API int mml_gradcheck_options_init_sized(mml_gradcheck_options *opt, uint32_t struct_size);
#define mml_gradcheck_options_init(opt) mml_gradcheck_options_init_sized((opt), (uint32_t)sizeof(mml_gradcheck_options))

/* Runs the check. opt may be NULL for the defaults, report may be NULL.
 * Returns MML_OK if nothing failed, MML_EGRADIENT if a coordinate or the
 * direction failed (the message names the worst parameter, index, analytic
 * and numeric values), MML_ECALLBACK if a callback returned a negative code
 * (given in the message), MML_ENONFINITE if the loss was not finite. The
 * parameters' values are restored exactly in every case; their grad buffers
 * hold the analytic gradient afterwards. The report is filled in every case
 * with what was done. */
MML_API int mml_gradcheck_sized(mml_ctx *ctx, const mml_gradcheck_options *opt,
                                mml_param *const *params, int64_t n_params, mml_grad_fn grad,
                                mml_loss_fn loss, void *user, mml_gradcheck_report *report,
                                uint32_t report_size);
#define mml_gradcheck(ctx, opt, params, n_params, grad, loss, user, report)                      \
    mml_gradcheck_sized((ctx), (opt), (params), (n_params), (grad), (loss), (user), (report),    \
                        (uint32_t)sizeof(mml_gradcheck_report))

MML_END_DECLS

#endif
