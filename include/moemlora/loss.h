/**
 * @file
 * libmoemlora: the training loss.
 *
 * Binary cross-entropy on logits (the model's output before the sigmoid),
 * computed as max(z, 0) - z y + log1p(exp(-|z|)): exact for every finite
 * logit, including very large ones, with no clipping. The batch loss is the
 * (weighted) mean, accumulated in double.
 */
#ifndef MOEMLORA_LOSS_H
#define MOEMLORA_LOSS_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"

MML_BEGIN_DECLS

/** Mean binary cross-entropy of n >= 1 rows.
 *  Everything is checked before anything is written.
 *  @param ctx the context for the error message (not NULL).
 *  @param logits n logits (the model's output before the sigmoid), finite.
 *  @param labels n labels, exactly 0 or 1.
 *  @param weights NULL for all 1; otherwise n weights, finite and >= 0 with
 *         a positive sum, and loss = sum_i w_i l_i / sum_i w_i.
 *  @param n the number of rows, >= 1.
 *  @param loss receives the mean (may be NULL).
 *  @param dlogits may be NULL; receives n values
 *         d loss / d logit_i = w_i (sigmoid(z_i) - y_i) / sum w
 *         (written, not accumulated).
 *  All arrays are the caller's, used during the call only.
 *  @return MML_OK; MML_EINVAL for a NULL ctx (no message); MML_ESHAPE for
 *  n < 1; MML_EINVAL for a NULL logits or labels, a label other than 0 or 1,
 *  a negative, NaN or infinite weight (naming the row) or weights that sum
 *  to 0; MML_ENONFINITE for a NaN or infinite logit (naming the row). */
MML_API int mml_bce_with_logits(mml_ctx *ctx, const float *logits, const float *labels,
                                const float *weights, int64_t n, double *loss, float *dlogits);

/** 1 / (1 + exp(-z)) without overflow for any z. Thread-safe.
 *  @param z the logit.
 *  @return the sigmoid of z, in [0, 1]. */
MML_API float mml_sigmoid(float z);
/** out[i] = mml_sigmoid(z[i]) for i < n; out may be z. Does nothing if a
 *  pointer is NULL or n < 1. Thread-safe.
 *  @param z n logits, read during the call.
 *  @param out receives n values (caller's memory); may be z itself.
 *  @param n the number of values. */
MML_API void mml_sigmoid_array(const float *z, float *out, int64_t n);

MML_END_DECLS

#endif
