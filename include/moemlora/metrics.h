/** @file
 * libmoemlora: evaluation metrics.
 *
 * ROC AUC is exact: the probability that a random positive scores above a
 * random negative, ties counted 1/2 (the Mann-Whitney statistic), computed in
 * O(n) after a radix sort of the scores (at most O(n log n)). It is undefined
 * when the rows hold one class only; an undefined AUC is reported as such
 * (defined = 0, value 0) and never enters a mean, so no total is ever NaN.
 *
 * Log loss is the mean binary cross-entropy computed from logits,
 * max(z, 0) - z y + log(1 + exp(-|z|)), in double precision, without clipping.
 *
 * The accumulator (mml_metrics) takes batches of logits, labels and domain
 * ids (and, for group AUC, a group id such as the user id) and computes:
 *   - per domain: rows, positives, AUC, log loss;
 *   - mean AUC: the unweighted mean of the defined per-domain AUCs;
 *   - WAUC: sum_d n_d AUC_d / sum_d n_d over the domains with a defined AUC,
 *     n_d the domain's rows in the evaluated split;
 *   - the pooled AUC over all rows;
 *   - group AUC (GAUC): sum_g n_g AUC_g / sum_g n_g over the groups that hold
 *     both classes, from the rows added with mml_metrics_add_grouped.
 *
 * AUCs are computed on the logits (sigmoid is monotone; logits keep ties that
 * float probabilities would create).
 *
 * Fallible functions return 0 (MML_OK) or a negative MML_E* code; those with
 * a context (mml_auc_ex, and the accumulator's, through the context it was
 * created with) record a message in mml_ctx_last_error(). An accumulator is
 * used by one thread at a time, with its context.
 */
#ifndef MOEMLORA_METRICS_H
#define MOEMLORA_METRICS_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"

/** The metrics accumulator (see the file description). Made with
 * mml_metrics_create(), released with mml_metrics_destroy(). */
typedef struct mml_metrics mml_metrics;

/** One domain's figures, filled by mml_metrics_domain(). */
typedef struct mml_domain_metrics {
    /** The number of bytes the library filled (the caller's size). */
    uint32_t struct_size;
    /** 0: one class only (or no rows); 1: auc is defined. */
    int32_t auc_defined;
    /** The domain's rows. */
    int64_t n;
    /** The domain's rows with label 1. */
    int64_t n_positive;
    /** The domain's AUC; 0 when undefined. */
    double auc;
    /** The domain's mean BCE; 0 when n == 0. */
    double logloss;
} mml_domain_metrics;

/** The totals, filled by mml_metrics_compute(). */
typedef struct mml_metrics_summary {
    /** The number of bytes the library filled (the caller's size). */
    uint32_t struct_size;
    /** Domains with a defined AUC; mean_auc and wauc are undefined when 0. */
    int32_t n_domains_with_auc;
    /** 0: no grouped rows, or no group holds both classes. */
    int32_t gauc_defined;
    /** 0: the pooled AUC is undefined. */
    int32_t auc_defined;
    /** The rows added since the last reset. */
    int64_t n;
    /** Mean BCE over all rows; 0 when n == 0. */
    double logloss;
    /** Over the domains with a defined AUC; 0 if none. */
    double mean_auc;
    /** Weighted by the domains' rows; 0 if none. */
    double wauc;
    /** Group AUC; 0 when undefined. */
    double gauc;
    /** Pooled over all rows; 0 when undefined. */
    double auc;
} mml_metrics_summary;

MML_BEGIN_DECLS

/** Exact ROC AUC of scores against labels (0 or 1). It takes no context, so
 * its scratch memory comes from the C library's allocator, no message is
 * recorded, and it may be called from any thread; mml_auc_ex uses the
 * context's allocator. The arrays are read during the call only.
 * @param scores n scores (any order; infinities allowed); may be NULL when n == 0
 * @param labels n labels, each 0 or 1; may be NULL when n == 0
 * @param n the number of rows, 0 .. 2^32 - 1
 * @param[out] auc receives the AUC; 0 when undefined
 * @param[out] defined receives 1, or 0 when one class is missing
 * @return MML_OK; MML_EINVAL for a NULL auc or defined, NULL arrays with
 *         n > 0, n < 0 or a label other than 0/1; MML_ERANGE for more than
 *         2^32 - 1 rows; MML_ENONFINITE for a NaN score; MML_ENOMEM.
 *         *auc and *defined are 0 after a failure, except for MML_EINVAL for
 *         NULL pointers or n < 0 (then they are not written). */
MML_API int mml_auc(const float *scores, const float *labels, int64_t n, double *auc,
                    int32_t *defined);
/** mml_auc() with the context's allocator and error message.
 * @param ctx the context
 * @param scores n scores; may be NULL when n == 0
 * @param labels n labels, each 0 or 1; may be NULL when n == 0
 * @param n the number of rows, 0 .. 2^32 - 1
 * @param[out] auc receives the AUC; 0 when undefined
 * @param[out] defined receives 1, or 0 when one class is missing
 * @return as mml_auc(), and MML_EINVAL (no message) for a NULL ctx. */
MML_API int mml_auc_ex(mml_ctx *ctx, const float *scores, const float *labels, int64_t n,
                       double *auc, int32_t *defined);
/** Mean BCE from logits (double, no clipping). No context: no message is
 * recorded, and it may be called from any thread.
 * @param logits n logits, finite; may be NULL when n == 0
 * @param labels n labels, each 0 or 1; may be NULL when n == 0
 * @param n the number of rows, >= 0
 * @param[out] out receives the mean; 0 for n == 0
 * @return MML_OK; MML_EINVAL for a NULL out, NULL arrays with n > 0, n < 0
 *         or a label other than 0/1; MML_ENONFINITE for a NaN or infinite
 *         logit. *out is 0 after a failure, except for MML_EINVAL for NULL
 *         pointers or n < 0 (then it is not written). */
MML_API int mml_logloss(const float *logits, const float *labels, int64_t n, double *out);

/** Creates an empty accumulator for n_domains domains.
 * @param[out] out receives the accumulator, owned by the caller (release with
 *             mml_metrics_destroy()); NULL on failure
 * @param ctx the context; must outlive the accumulator
 * @param n_domains D, 1 .. 2^24
 * @return MML_OK; MML_EINVAL for a NULL ctx (no message), a NULL out or
 *         n_domains out of range; MML_ENOMEM. */
MML_API int mml_metrics_create(mml_metrics **out, mml_ctx *ctx, int32_t n_domains);
/** Releases an accumulator. NULL-safe.
 * @param m the accumulator, or NULL */
MML_API void mml_metrics_destroy(mml_metrics *m);
/** Forgets every row (keeps the memory); mml_metrics_domain() then returns
 * MML_ESTATE until the next mml_metrics_compute(). NULL-safe.
 * @param m the accumulator, or NULL */
MML_API void mml_metrics_reset(mml_metrics *m);
/** Adds n rows (copied: the arrays are read during the call only). Logits
 * must be finite, labels 0 or 1, domains in [0, D); a batch that breaks a
 * rule is rejected whole, leaving the accumulator as it was. After a
 * successful add, mml_metrics_domain() returns MML_ESTATE until the next
 * mml_metrics_compute().
 * @param m the accumulator
 * @param logits n logits; may be NULL when n == 0
 * @param labels n labels; may be NULL when n == 0
 * @param domain n domain ids; may be NULL when n == 0
 * @param n the number of rows, >= 0
 * @return MML_OK; MML_EINVAL for a NULL m (no message), NULL arrays with
 *         n > 0, n < 0 or a label other than 0/1; MML_ENONFINITE for a NaN
 *         or infinite logit; MML_ERANGE for a domain outside [0, D) or a
 *         domain that would exceed 2^32 - 1 rows; MML_ENOMEM. */
MML_API int mml_metrics_add(mml_metrics *m, const float *logits, const float *labels,
                            const int32_t *domain, int64_t n);
/** mml_metrics_add() with a group id per row (e.g. the user id field) for
 * group AUC.
 * @param m the accumulator
 * @param logits n logits; may be NULL when n == 0
 * @param labels n labels; may be NULL when n == 0
 * @param domain n domain ids; may be NULL when n == 0
 * @param group n group ids (any int32 values); may be NULL when n == 0
 * @param n the number of rows, >= 0
 * @return as mml_metrics_add(), and MML_EINVAL for a NULL group with n > 0. */
MML_API int mml_metrics_add_grouped(mml_metrics *m, const float *logits, const float *labels,
                                    const int32_t *domain, const int32_t *group, int64_t n);
/** Computes everything over the rows added since the last reset, and the
 * per-domain figures that mml_metrics_domain() returns. More rows may be
 * added afterwards and compute called again. Use the mml_metrics_compute()
 * macro.
 * @param m the accumulator
 * @param[out] out receives the totals: struct_size bytes written, and
 *             out->struct_size set to struct_size; not written on failure
 * @param struct_size the caller's sizeof(mml_metrics_summary)
 * @return MML_OK; MML_EINVAL for a NULL m (no message) or out; MML_EVERSION
 *         (nothing written) for a size that no release produced;
 *         MML_ENOMEM. */
MML_API int mml_metrics_compute_sized(mml_metrics *m, mml_metrics_summary *out,
                                      uint32_t struct_size);
/** mml_metrics_compute_sized() with the caller's sizeof(mml_metrics_summary),
 * so that a newer library never writes past an older application's struct.
 * @param m the accumulator
 * @param out the summary to fill */
#define mml_metrics_compute(m, out)                                                              \
    mml_metrics_compute_sized((m), (out), (uint32_t)sizeof(mml_metrics_summary))
/** Domain d's figures from the last mml_metrics_compute(). Use the
 * mml_metrics_domain() macro.
 * @param m the accumulator
 * @param d the domain, 0 .. D - 1
 * @param[out] out receives the figures: struct_size bytes written, and
 *             out->struct_size set to struct_size; not written on failure
 * @param struct_size the caller's sizeof(mml_domain_metrics)
 * @return MML_OK; MML_EINVAL for a NULL m or out (no message); MML_EVERSION
 *         (nothing written) for a size that no release produced; MML_ERANGE
 *         for d out of range; MML_ESTATE when compute has not run since the
 *         creation, the last reset or the last add. */
MML_API int mml_metrics_domain_sized(const mml_metrics *m, int32_t d, mml_domain_metrics *out,
                                     uint32_t struct_size);
/** mml_metrics_domain_sized() with the caller's sizeof(mml_domain_metrics),
 * so that a newer library never writes past an older application's struct.
 * @param m the accumulator
 * @param d the domain
 * @param out the figures to fill */
#define mml_metrics_domain(m, d, out)                                                            \
    mml_metrics_domain_sized((m), (d), (out), (uint32_t)sizeof(mml_domain_metrics))
/** The accumulator's D.
 * @param m the accumulator
 * @return D; 0 for a NULL accumulator */
MML_API int32_t mml_metrics_n_domains(const mml_metrics *m);

MML_END_DECLS

#endif
