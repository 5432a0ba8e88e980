/* libmoemlora: evaluation metrics.
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
 * AUCs are computed on the logits (sigmoid is monotone; logits keep ties that
 * float probabilities would create).
 */
#ifndef MOEMLORA_METRICS_H
#define MOEMLORA_METRICS_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"

typedef struct mml_metrics mml_metrics;

typedef struct mml_domain_metrics {
    uint32_t struct_size; /* bytes the library filled (the caller's size) */
    int32_t auc_defined;  /* 0: one class only (or no rows) */
    int64_t n;
    int64_t n_positive;
    double auc;           /* 0 when undefined */
    double logloss;       /* 0 when n == 0 */
} mml_domain_metrics;

typedef struct mml_metrics_summary {
    uint32_t struct_size;       /* bytes the library filled (the caller's size) */
    int32_t n_domains_with_auc; /* mean_auc and wauc are undefined when 0 */
    int32_t gauc_defined;       /* 0: no grouped rows, or no group holds both classes */
    int32_t auc_defined;        /* 0: the pooled AUC is undefined */
    int64_t n;
    double logloss;             /* mean BCE over all rows; 0 when n == 0 */
    double mean_auc;            /* over the domains with a defined AUC; 0 if none */
    double wauc;                /* weighted by the domains' rows; 0 if none */
    double gauc;                /* 0 when undefined */
    double auc;                 /* pooled over all rows; 0 when undefined */
} mml_metrics_summary;

MML_BEGIN_DECLS

/* Exact ROC AUC of scores against labels (0 or 1). *defined = 0 and *auc = 0
 * when one class is missing. MML_EINVAL for NULL pointers (scores and labels
 * may be NULL when n == 0), n < 0 or a label other than 0/1, MML_ENONFINITE
 * for a NaN score, MML_ENOMEM. It takes no context, so its scratch memory
 * comes from the C library's allocator; mml_auc_ex uses the context's. */
MML_API int mml_auc(const float *scores, const float *labels, int64_t n, double *auc,
                    int32_t *defined);
MML_API int mml_auc_ex(mml_ctx *ctx, const float *scores, const float *labels, int64_t n,
                       double *auc, int32_t *defined);
/* Mean BCE from logits (double, no clipping); 0 for n == 0. */
MML_API int mml_logloss(const float *logits, const float *labels, int64_t n, double *out);

/* n_domains >= 1. */
MML_API int mml_metrics_create(mml_metrics **out, mml_ctx *ctx, int32_t n_domains);
MML_API void mml_metrics_destroy(mml_metrics *m);
/* Forgets every row (keeps the memory). */
MML_API void mml_metrics_reset(mml_metrics *m);
/* Adds n rows. Logits must be finite, labels 0 or 1, domains in [0, D); a
 * batch that breaks a rule is rejected whole. */
MML_API int mml_metrics_add(mml_metrics *m, const float *logits, const float *labels,
                            const int32_t *domain, int64_t n);
/* Same, with a group id per row (e.g. the user id field) for group AUC. */
MML_API int mml_metrics_add_grouped(mml_metrics *m, const float *logits, const float *labels,
                                    const int32_t *domain, const int32_t *group, int64_t n);
/* Computes everything over the rows added since the last reset. More rows
 * may be added afterwards and compute called again. */
MML_API int mml_metrics_compute_sized(mml_metrics *m, mml_metrics_summary *out,
                                      uint32_t struct_size);
#define mml_metrics_compute(m, out)                                                              \
    mml_metrics_compute_sized((m), (out), (uint32_t)sizeof(mml_metrics_summary))
/* Domain d's figures from the last mml_metrics_compute (MML_ESTATE before it). */
MML_API int mml_metrics_domain_sized(const mml_metrics *m, int32_t d, mml_domain_metrics *out,
                                     uint32_t struct_size);
#define mml_metrics_domain(m, d, out)                                                            \
    mml_metrics_domain_sized((m), (d), (out), (uint32_t)sizeof(mml_domain_metrics))
MML_API int32_t mml_metrics_n_domains(const mml_metrics *m);

MML_END_DECLS

#endif
