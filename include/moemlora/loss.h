/* libmoemlora: the training loss.
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

/* Mean binary cross-entropy of n >= 1 rows.
 *   labels: exactly 0 or 1.
 *   weights: NULL for all 1; otherwise finite and >= 0 with a positive sum,
 *            and loss = sum_i w_i l_i / sum_i w_i.
 *   loss: receives the mean (may be NULL).
 *   dlogits: may be NULL; receives d loss / d logit_i = w_i (sigmoid(z_i) - y_i) / sum w
 *            (written, not accumulated).
 * Everything is checked before anything is written: n < 1 gives MML_ESHAPE,
 * a NULL ctx, logits or labels MML_EINVAL, a bad label or weight MML_EINVAL
 * naming the row, a NaN or infinite logit MML_ENONFINITE naming the row. */
MML_API int mml_bce_with_logits(mml_ctx *ctx, const float *logits, const float *labels,
                                const float *weights, int64_t n, double *loss, float *dlogits);

/* 1 / (1 + exp(-z)) without overflow for any z. */
MML_API float mml_sigmoid(float z);
/* out[i] = mml_sigmoid(z[i]) for i < n; out may be z. Does nothing if a
 * pointer is NULL or n < 1. */
MML_API void mml_sigmoid_array(const float *z, float *out, int64_t n);

MML_END_DECLS

#endif
