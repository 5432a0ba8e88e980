#include <math.h>

#include "core/internal.h"
#include "moemlora/loss.h"

float mml_sigmoid(float z)
{
    /* exp of a non-positive argument cannot overflow. */
    if (z >= 0.0f)
        return 1.0f / (1.0f + expf(-z));
    float e = expf(z);
    return e / (1.0f + e);
}

void mml_sigmoid_array(const float *z, float *out, int64_t n)
{
    if (!z || !out)
        return;
    for (int64_t i = 0; i < n; i++)
        out[i] = mml_sigmoid(z[i]);
}

static double sigmoid_d(double z)
{
    if (z >= 0.0)
        return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

int mml_bce_with_logits(mml_ctx *ctx, const float *logits, const float *labels,
                        const float *weights, int64_t n, double *loss, float *dlogits)
{
    if (!ctx)
        return MML_EINVAL;
    if (n < 1)
        return mml__error(ctx, MML_ESHAPE, "bce_with_logits: %lld rows, expected >= 1",
                          (long long)n);
    if (!logits || !labels)
        return mml__error(ctx, MML_EINVAL, "bce_with_logits: NULL %s",
                          logits ? "labels" : "logits");
    /* Check every row before writing anything. */
    double wsum = weights ? 0.0 : (double)n;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] != 0.0f && labels[i] != 1.0f)
            return mml__error(ctx, MML_EINVAL,
                              "bce_with_logits: label %g at row %lld is neither 0 nor 1",
                              (double)labels[i], (long long)i);
        if (!isfinite(logits[i]))
            return mml__error(ctx, MML_ENONFINITE, "bce_with_logits: logit %g at row %lld",
                              (double)logits[i], (long long)i);
        if (weights) {
            if (!isfinite(weights[i]) || !(weights[i] >= 0.0f))
                return mml__error(ctx, MML_EINVAL,
                                  "bce_with_logits: weight %g at row %lld must be finite and >= 0",
                                  (double)weights[i], (long long)i);
            wsum += weights[i];
        }
    }
    if (!(wsum > 0.0))
        return mml__error(ctx, MML_EINVAL, "bce_with_logits: the weights of %lld rows sum to 0",
                          (long long)n);
    double inv = 1.0 / wsum;
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double z = logits[i];
        double w = weights ? weights[i] : 1.0;
        int pos = labels[i] == 1.0f;
        total += w * (fmax(z, 0.0) - (pos ? z : 0.0) + log1p(exp(-fabs(z))));
        if (dlogits) {
            /* sigmoid(z) - 1 = -sigmoid(-z): no cancellation for large positive z. */
            double d = pos ? -sigmoid_d(-z) : sigmoid_d(z);
            dlogits[i] = (float)(w * d * inv);
        }
    }
    if (loss)
        *loss = total * inv;
    return MML_OK;
}
