#include <string.h>

#include "core/internal.h"

int mml_batch_view_init_sized(mml_batch_view *out, uint32_t struct_size, int64_t n_rows,
                              int32_t n_fields, const int32_t *ids, int32_t n_dense,
                              const float *dense, const int32_t *domain, const float *labels)
{
    mml_batch_view view;
    memset(&view, 0, sizeof view);
    view.n_rows = n_rows;
    view.n_fields = n_fields;
    view.n_dense = n_dense;
    view.ids = ids;
    view.ids_row_stride = n_fields;
    view.dense = dense;
    view.dense_row_stride = n_dense;
    view.domain = domain;
    view.labels = labels;
    return mml__init_versioned(out, &view, sizeof view, struct_size,
                               MML__OLDER_SIZES_mml_batch_view);
}
