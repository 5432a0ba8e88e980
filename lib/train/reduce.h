/* Data-parallel training through an mml_reduce_hook (private): what the
 * trainer does with the hook, kept out of trainer.c. A trainer without a
 * hook, or with a hook of one worker, has no mml__dp and runs as before.
 *
 * Every collective here starts with a fixed header from each worker that
 * carries its status: a failure on one worker (before or during the
 * collective's local part) becomes the same failure on every worker, which
 * then return it together instead of waiting for each other. */
#ifndef MML_REDUCE_H
#define MML_REDUCE_H

#include <stdint.h>

#include "core/internal.h"
#include "moemlora/metrics.h"
#include "moemlora/param.h"
#include "moemlora/trainer.h"

typedef struct mml__dp mml__dp;

/* *out := NULL for a NULL hook or one of size 1; else a copy of the hook.
 * MML_EVERSION for an unknown struct_size, MML_EINVAL for a bad rank, size,
 * missing gather or abort, MML_ENOMEM. */
int mml__dp_create(mml__dp **out, mml_ctx *ctx, const mml_reduce_hook *hook);
void mml__dp_destroy(mml__dp *dp);
int32_t mml__dp_rank(const mml__dp *dp);
int32_t mml__dp_size(const mml__dp *dp);
/* This worker's rows [*lo, *hi) of n. */
void mml__dp_range(const mml__dp *dp, int64_t n, int64_t *lo, int64_t *hi);
/* This worker's share of a global batch of B >= size rows. */
int64_t mml__dp_batch(const mml__dp *dp, int64_t B);

/* Agreed: rc is this worker's status so far; *v becomes the maximum of
 * every worker's *v. Returns the first failing worker's status (every
 * worker returns the same) or MML_OK. */
int mml__dp_max(mml__dp *dp, int rc, int64_t *v);
/* Agreed, after this worker's backward pass of one step (rc its status,
 * ENONFINITE for a non-finite logit; rows and weights its batch, 0 rows
 * when it has none left this epoch; *loss its batch's mean loss): every
 * worker's gradients of params[0 .. n) are combined into each, weighted
 * by its rows' share, with the same bits everywhere; *loss becomes the
 * global batch's mean loss and *rows the global batch's rows. Returns the
 * agreed status. */
int mml__dp_step(mml__dp *dp, int rc, mml_param **params, int64_t n, int64_t *rows,
                 const float *weights, double *loss);
/* An accumulator of D domains for this worker's rows, emptied; NULL after
 * MML_ENOMEM (with a message). */
mml_metrics *mml__dp_scratch(mml__dp *dp, int32_t D);
/* Agreed: appends every worker's rows of its scratch accumulator to dst,
 * in rank order. */
int mml__dp_combine(mml__dp *dp, int rc, mml_metrics *dst);
/* After a failure rc of a trainer call: unless every worker knows it (an
 * agreed failure, or a callback's stop), calls the hook's abort. */
void mml__dp_failed(mml__dp *dp, int rc);
/* Every epoch of data-parallel training draws its dropout from a stream of
 * (seed, stage, expert, epoch, rank): each worker its own masks, and a
 * checkpoint between epochs needs no worker's stream. */
void mml__dp_reseed(const mml__dp *dp, mml_rng *rng, uint64_t seed, int32_t stage,
                    int32_t expert, int32_t epoch);
/* The next call starts with no agreed failure. */
void mml__dp_clear(mml__dp *dp);

#endif
