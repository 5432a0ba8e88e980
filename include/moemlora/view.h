/* libmoemlora: views of caller memory.
 *
 * A view describes memory the caller owns: pointer, shape and strides in
 * elements. The library reads (or writes, for output views) through it during
 * the call and never keeps it after the call returns.
 */
#ifndef MOEMLORA_VIEW_H
#define MOEMLORA_VIEW_H

#include <stdint.h>

#include "export.h"

/* A batch of rows.
 *  ids:    n_rows x n_fields categorical ids, ids[r * ids_row_stride + f]
 *  dense:  n_rows x n_dense numeric values (may be NULL when n_dense is 0)
 *  domain: the domain id of each row (0 .. D-1)
 *  labels: 0 or 1 per row; NULL for prediction
 *  weights: optional per-row loss weights (appended field): NULL means every
 *          row weighs 1; otherwise finite and >= 0 with a positive sum, and
 *          the trainer's batch loss is sum_r w_r l_r / sum_r w_r (see
 *          mml_bce_with_logits, which refuses a negative, NaN or infinite
 *          weight with MML_EINVAL naming the row). mml_batch_view_init sets
 *          it to NULL; the model's forward pass ignores it.
 *  n_multihot, multihot_offsets, multihot_ids (appended fields): the batch's
 *          multi-hot fields M (0: none; both pointers may then be NULL). For
 *          field m < M, row r's ids are
 *              multihot_ids[m][multihot_offsets[m][r] .. multihot_offsets[m][r + 1])
 *          (CSR as mml_dataset_multihot_csr gives it; each multihot_offsets[m]
 *          has n_rows + 1 non-decreasing entries and may start above 0, so a
 *          slice of a larger CSR works as is; multihot_ids[m] may be NULL when
 *          every list of field m is empty). An empty list is allowed; ids may
 *          repeat. mml_batch_view_init
 *          sets n_multihot to 0 and both pointers to NULL; mml_dataset_view
 *          points into the data set's CSR, the batcher into its own buffers. */
typedef struct mml_batch_view {
    uint32_t struct_size; /* set by mml_batch_view_init() */
    int32_t n_fields;
    int32_t n_dense;
    int32_t n_multihot;
    int64_t n_rows;
    const int32_t *ids;
    int64_t ids_row_stride;
    const float *dense;
    int64_t dense_row_stride;
    const int32_t *domain;
    const float *labels;
    const float *weights;
    const int64_t *const *multihot_offsets;
    const int32_t *const *multihot_ids;
} mml_batch_view;

MML_BEGIN_DECLS

/* Fills *view with a contiguous batch (ids row stride n_fields, dense row stride n_dense,
 * weights NULL, no multi-hot fields). */
MML_API int mml_batch_view_init_sized(mml_batch_view *view, uint32_t struct_size, int64_t n_rows,
                                      int32_t n_fields, const int32_t *ids, int32_t n_dense,
                                      const float *dense, const int32_t *domain,
                                      const float *labels);
#define mml_batch_view_init(view, n_rows, n_fields, ids, n_dense, dense, domain, labels)         \
    mml_batch_view_init_sized((view), (uint32_t)sizeof(mml_batch_view), (n_rows), (n_fields), (ids),      \
                              (n_dense), (dense), (domain), (labels))

MML_END_DECLS

#endif
