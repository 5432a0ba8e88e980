/**
 * @file
 * libmoemlora: views of caller memory.
 *
 * A view describes memory the caller owns: pointer, shape and strides in
 * elements. The library reads (or writes, for output views) through it during
 * the call and never keeps it after the call returns.
 */
#ifndef MOEMLORA_VIEW_H
#define MOEMLORA_VIEW_H

#include <stdint.h>

#include "export.h"

/** A batch of rows: pointers into memory that the view does not own (the
 *  caller's, or a data set's or batcher's buffers for the views that
 *  mml_dataset_view and the batcher fill). Initialise a caller-filled view
 *  with mml_batch_view_init(). Strides are in elements. */
typedef struct mml_batch_view {
    /** Set by mml_batch_view_init(). */
    uint32_t struct_size;
    /** Number of categorical fields per row. */
    int32_t n_fields;
    /** Number of numeric values per row (0: none). */
    int32_t n_dense;
    /** The batch's multi-hot fields M (0: none; multihot_offsets and
     *  multihot_ids may then be NULL). Appended field: mml_batch_view_init
     *  sets it to 0. */
    int32_t n_multihot;
    /** Number of rows. */
    int64_t n_rows;
    /** n_rows x n_fields categorical ids: field f of row r is
     *  `ids[r * ids_row_stride + f]`. */
    const int32_t *ids;
    /** Elements from one row of ids to the next (n_fields when contiguous). */
    int64_t ids_row_stride;
    /** n_rows x n_dense numeric values, value j of row r at
     *  `dense[r * dense_row_stride + j]` (may be NULL when n_dense is 0). */
    const float *dense;
    /** Elements from one row of dense to the next (n_dense when contiguous). */
    int64_t dense_row_stride;
    /** The domain id of each row (0 .. D-1), n_rows entries. */
    const int32_t *domain;
    /** 0 or 1 per row; NULL for prediction. */
    const float *labels;
    /** Optional per-row loss weights (appended field): NULL means every
     *  row weighs 1; otherwise finite and >= 0 with a positive sum, and
     *  the trainer's batch loss is sum_r w_r l_r / sum_r w_r (see
     *  mml_bce_with_logits, which refuses a negative, NaN or infinite
     *  weight with MML_EINVAL naming the row). mml_batch_view_init sets
     *  it to NULL; the model's forward pass ignores it. */
    const float *weights;
    /** Appended field: for multi-hot field m < n_multihot, row r's ids are
     *
     *      multihot_ids[m][multihot_offsets[m][r] .. multihot_offsets[m][r + 1])
     *
     *  (CSR as mml_dataset_multihot_csr gives it; each multihot_offsets[m]
     *  has n_rows + 1 non-decreasing entries and may start above 0, so a
     *  slice of a larger CSR works as is). mml_batch_view_init sets it to
     *  NULL; mml_dataset_view points into the data set's CSR, the batcher
     *  into its own buffers. */
    const int64_t *const *multihot_offsets;
    /** Appended field: the ids of each multi-hot field, indexed through
     *  multihot_offsets; multihot_ids[m] may be NULL when every list of
     *  field m is empty. An empty list is allowed; ids may repeat.
     *  mml_batch_view_init sets it to NULL. */
    const int32_t *const *multihot_ids;
} mml_batch_view;

MML_BEGIN_DECLS

/** Fills *view with a contiguous batch (ids row stride n_fields, dense row stride n_dense,
 *  weights NULL, no multi-hot fields), writing the first struct_size bytes
 *  and setting view->struct_size to struct_size. Nothing else is checked
 *  here: the functions that read the view check it. C callers use
 *  mml_batch_view_init(); bindings call this with their own struct size.
 *  The array pointers are stored, not copied: the arrays stay the caller's
 *  and must stay valid as long as the view is used (the library reads them
 *  only during the calls the view is passed to).
 *  @param view the view to fill (caller's memory).
 *  @param struct_size the caller's sizeof(mml_batch_view).
 *  @param n_rows number of rows.
 *  @param n_fields categorical fields per row.
 *  @param ids n_rows x n_fields ids, row-major.
 *  @param n_dense numeric values per row.
 *  @param dense n_rows x n_dense values, row-major; may be NULL when n_dense is 0.
 *  @param domain n_rows domain ids.
 *  @param labels n_rows labels (0 or 1), or NULL for prediction.
 *  @return MML_OK; MML_EINVAL for a NULL view; MML_EVERSION (nothing
 *  written) for a struct_size that no release produced. No context: no
 *  message. */
MML_API int mml_batch_view_init_sized(mml_batch_view *view, uint32_t struct_size, int64_t n_rows,
                                      int32_t n_fields, const int32_t *ids, int32_t n_dense,
                                      const float *dense, const int32_t *domain,
                                      const float *labels);
/** Fills *view with a contiguous batch: calls mml_batch_view_init_sized()
 *  with the caller's sizeof(mml_batch_view), which is what makes a newer
 *  library never write past an older application's struct.
 *  @param view pointer to the mml_batch_view to fill.
 *  @param n_rows number of rows.
 *  @param n_fields categorical fields per row.
 *  @param ids n_rows x n_fields ids, row-major (borrowed).
 *  @param n_dense numeric values per row.
 *  @param dense n_rows x n_dense values, row-major, or NULL when n_dense is 0 (borrowed).
 *  @param domain n_rows domain ids (borrowed).
 *  @param labels n_rows labels, or NULL for prediction (borrowed).
 *  @return the status of mml_batch_view_init_sized(). */
#define mml_batch_view_init(view, n_rows, n_fields, ids, n_dense, dense, domain, labels)         \
    mml_batch_view_init_sized((view), (uint32_t)sizeof(mml_batch_view), (n_rows), (n_fields), (ids),      \
                              (n_dense), (dense), (domain), (labels))

MML_END_DECLS

#endif
