/**
 * @file
 * @brief Finite-difference gradient checker.
 *
 * Checks the analytic gradient of any scalar loss over a list of mml_param
 * (a layer, a backbone, your own code) against central differences, one
 * coordinate at a time (all of them, or a seeded sample per parameter), and
 * optionally along one seeded random direction through all parameters at
 * once. Modelled on KANN's kad_check_grad.
 *
 * You supply two callbacks over your own state:
 * - grad (mml_grad_fn): zero the parameters' grad buffers, then run forward
 *   and backward at the current values (the checker calls it once, first).
 * - loss (mml_loss_fn): forward only at the current values. Also report a
 *   fingerprint of the discrete choices the forward pass made (e.g. a hash of
 *   the ReLU on/off pattern, the arg-max of a top-k; 0 if there are none).
 *   Where a +h or -h evaluation yields a different fingerprint than
 *   the unperturbed one, the difference straddles a kink and says
 *   nothing about the gradient: that coordinate is skipped and counted.
 * The loss must be a deterministic function of the values (fix dropout
 * masks and any other randomness between calls) and is best accumulated in
 * double. Frozen parameters are checked like the others.
 *
 * Example, for a user's network `net` with parameters net->params:
 *
 * @code{.c}
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
 * @endcode
 *
 * Coordinate (p, i) passes iff |a - n| <= rtol * max(|a|, |n|) + atol, with
 * a the analytic and n = (L(v + h) - L(v - h)) / (actual float difference of
 * the two perturbed values), so the float spacing of large values is taken
 * into account. A value too large for the step to change it at all is moved
 * by one float spacing on each side instead.
 *
 * Thread safety: one thread at a time per context and the objects made from
 * it; the callbacks run on the calling thread.
 */
#ifndef MOEMLORA_GRADCHECK_H
#define MOEMLORA_GRADCHECK_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

/** The analytic-gradient callback: must zero, then fill, the parameters'
 *  grad buffers with the analytic gradient of the loss at the current values.
 *  @param user the pointer given to mml_gradcheck().
 *  @return 0 (or any value >= 0) on success; a negative code makes the check
 *  fail with MML_ECALLBACK. */
typedef int (*mml_grad_fn)(void *user);
/** The loss callback: forward only at the current values.
 *  @param user the pointer given to mml_gradcheck().
 *  @param loss receives the loss (preset to 0); it must be finite.
 *  @param pattern receives a fingerprint of the discrete choices taken
 *  (preset to 0).
 *  @return 0 (or any value >= 0) on success; a negative code makes the check
 *  fail with MML_ECALLBACK. */
typedef int (*mml_loss_fn)(void *user, double *loss, uint64_t *pattern);

/** Tolerances and sampling. Initialise with mml_gradcheck_options_init(). */
typedef struct mml_gradcheck_options {
    /** Set by mml_gradcheck_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** 0; reserved for later releases. */
    int32_t reserved0;
    /** h > 0, finite; default 1e-3. */
    double step;
    /** >= 0, finite; default 1e-2. */
    double rtol;
    /** >= 0, finite; default 1e-5. */
    double atol;
    /** 0 (default) = every coordinate; else a seeded sample of that many per
     *  parameter; >= 0. */
    int64_t max_coords_per_param;
    /** For the sample and the direction; default 1. */
    uint64_t seed;
    /** 1 (default): also check one random direction; 0: don't. */
    int32_t random_direction;
    /** 0; reserved for later releases. */
    int32_t reserved1;
} mml_gradcheck_options;

/** What a check did (filled by mml_gradcheck()). */
typedef struct mml_gradcheck_report {
    /** Bytes the library filled (the caller's size). */
    uint32_t struct_size;
    /** 1 if the direction was compared (0: off, or it crossed a kink). */
    int32_t direction_checked;
    /** 1 if it was compared and passed. */
    int32_t direction_ok;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** Coordinates compared. */
    int64_t checked;
    /** Coordinates skipped because the pattern changed. */
    int64_t skipped_kinks;
    /** Coordinates that failed. */
    int64_t failed;
    /** Max over compared coordinates of
     *  |a - n| - (rtol max(|a|, |n|) + atol): > 0 iff something
     *  failed; -inf if nothing was compared. */
    double worst_excess;
    /** The parameter of worst_excess (-1 if none). */
    int64_t worst_param;
    /** The index within that parameter (-1 if none). */
    int64_t worst_index;
    /** The analytic gradient at the worst coordinate. */
    double worst_analytic;
    /** The numeric estimate at the worst coordinate. */
    double worst_numeric;
    /** Gradient . d along the random direction d. */
    double direction_analytic;
    /** The difference estimate along d. */
    double direction_numeric;
} mml_gradcheck_report;

MML_BEGIN_DECLS

/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_gradcheck_options_init_sized(mml_gradcheck_options *opt, uint32_t struct_size);
/** mml_gradcheck_options_init_sized() with the caller's sizeof, so a newer
 *  library never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_gradcheck_options_init(opt) mml_gradcheck_options_init_sized((opt), (uint32_t)sizeof(mml_gradcheck_options))

/** Runs the check (use the mml_gradcheck() macro). opt may be NULL for the
 * defaults and is read during the call only; params, the callbacks and user
 * are borrowed for the call. The parameters' values are restored exactly in
 * every case; their grad buffers hold the analytic gradient afterwards. The
 * report is filled in every case with what was done (an empty report after
 * an argument error), except for MML_EVERSION on report_size (nothing written).
 * @param ctx the context. @param opt the options, or NULL.
 * @param params n_params distinct parameters. @param n_params >= 1.
 * @param grad the gradient callback. @param loss the loss callback.
 * @param user passed to both. @param report receives the report, or NULL.
 * @param report_size the caller's sizeof(mml_gradcheck_report).
 * @return MML_OK if nothing failed; MML_EGRADIENT if a coordinate or the
 * direction failed (the message names the worst parameter, index, analytic
 * and numeric values); MML_ECALLBACK if a callback returned a negative code
 * (given in the message); MML_ENONFINITE if the loss was not finite;
 * MML_EINVAL for a NULL ctx, callback or parameter, a repeated parameter or
 * an invalid option; MML_ESHAPE for an empty or too large parameter;
 * MML_EVERSION for a struct_size of opt or a report_size that no release
 * produced; MML_ENOMEM. */
MML_API int mml_gradcheck_sized(mml_ctx *ctx, const mml_gradcheck_options *opt,
                                mml_param *const *params, int64_t n_params, mml_grad_fn grad,
                                mml_loss_fn loss, void *user, mml_gradcheck_report *report,
                                uint32_t report_size);
/** mml_gradcheck_sized() with the caller's sizeof(mml_gradcheck_report), so a
 *  newer library never writes past an older application's report.
 *  @param ctx the context. @param opt the options, or NULL.
 *  @param params the parameters. @param n_params their count.
 *  @param grad the gradient callback. @param loss the loss callback.
 *  @param user passed to both. @param report receives the report, or NULL. */
#define mml_gradcheck(ctx, opt, params, n_params, grad, loss, user, report)                      \
    mml_gradcheck_sized((ctx), (opt), (params), (n_params), (grad), (loss), (user), (report),    \
                        (uint32_t)sizeof(mml_gradcheck_report))

MML_END_DECLS

#endif
