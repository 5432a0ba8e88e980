#include "core/internal.h"

void mml_tensor_view_init(mml_tensor_view *view, float *data, int64_t rows, int64_t cols)
{
    if (!view)
        return;
    view->data = data;
    view->rows = rows;
    view->cols = cols;
    view->row_stride = cols;
    view->col_stride = 1;
}

void mml_batch_view_init(mml_batch_view *view, int64_t n_rows, int32_t n_fields, const int32_t *ids,
                         int32_t n_dense, const float *dense, const int32_t *domain,
                         const float *labels)
{
    if (!view)
        return;
    view->n_rows = n_rows;
    view->n_fields = n_fields;
    view->n_dense = n_dense;
    view->ids = ids;
    view->ids_row_stride = n_fields;
    view->dense = dense;
    view->dense_row_stride = n_dense;
    view->domain = domain;
    view->labels = labels;
    view->weights = NULL;
    view->n_multihot = 0;
    view->reserved_mh = 0;
    view->multihot_offsets = NULL;
    view->multihot_ids = NULL;
}
