/* libmoemlora: embedding tables.
 *
 * One table per categorical field: n_rows ids, each mapped to a vector of
 * dimension dim. A batch lookup copies the rows of the batch's ids into the
 * caller's output; the backward pass adds the output gradient to the rows
 * the batch touched (rows it did not touch keep a zero gradient).
 */
#ifndef MOEMLORA_EMBEDDING_H
#define MOEMLORA_EMBEDDING_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

typedef struct mml_embedding mml_embedding;

/* Out-of-vocabulary policy of a table. */
typedef enum mml_oov_policy {
    MML_OOV_ERROR = 0,       /* an id outside [0, n_rows) is an error (MML_ERANGE) */
    MML_OOV_RESERVED_ROW = 1 /* row n_rows - 1 is reserved: every id outside
                                [0, n_rows - 1) (negative, too large, or n_rows - 1
                                itself) reads and trains that row; needs n_rows >= 2 */
} mml_oov_policy;

typedef enum mml_init_kind {
    MML_INIT_NORMAL = 0,  /* N(0, scale^2) */
    MML_INIT_UNIFORM = 1, /* U(-scale, scale) */
    MML_INIT_ZEROS = 2
} mml_init_kind;

typedef struct mml_embedding_options {
    uint32_t struct_size;
    int32_t dim;       /* >= 1; default 8 */
    int64_t n_rows;    /* >= 1 */
    int32_t init;      /* mml_init_kind; default MML_INIT_NORMAL */
    float scale;       /* default 0.01 (std of the normal init) */
    uint64_t stream;   /* random stream within the context's seed, e.g. the field index */
    const char *name;  /* used in error messages and parameter names; default "embedding" */
    int32_t group;     /* parameter group; default MML_GROUP_EMBEDDING */
    int32_t oov_policy; /* MML_OOV_*; default MML_OOV_ERROR */
} mml_embedding_options;

MML_BEGIN_DECLS

MML_API int mml_embedding_options_init_sized(mml_embedding_options *opt, uint32_t struct_size);
#define mml_embedding_options_init(opt) mml_embedding_options_init_sized((opt), (uint32_t)sizeof(mml_embedding_options))
MML_API int mml_embedding_create(mml_embedding **out, mml_ctx *ctx,
                                 const mml_embedding_options *opt);
MML_API void mml_embedding_destroy(mml_embedding *emb);

/* out[r * out_row_stride + j] = table[ids[r * id_stride]][j] for r < n, j < dim.
 * An id outside [0, n_rows) gives MML_ERANGE naming the table and the row
 * (MML_OOV_ERROR), or reads the reserved last row (MML_OOV_RESERVED_ROW). */
MML_API int mml_embedding_forward(mml_embedding *emb, const int32_t *ids, int64_t id_stride,
                                  int64_t n, float *out, int64_t out_row_stride);
/* grad[ids[r]] += dout[r] for r < n (ids mapped by the OOV policy as in forward). */
MML_API int mml_embedding_backward(mml_embedding *emb, const int32_t *ids, int64_t id_stride,
                                   int64_t n, const float *dout, int64_t dout_row_stride);

/* Multi-hot pooling (a variable number of ids per row). */
typedef enum mml_pooling {
    MML_POOL_SUM = 0, /* sum of the rows' vectors */
    MML_POOL_MEAN = 1 /* their mean */
} mml_pooling;

/* Row r < n_rows of the batch has the ids ids[offsets[r] .. offsets[r + 1])
 * (CSR as mml_dataset_multihot_csr gives it; offsets has n_rows + 1 entries,
 * offsets[0] >= 0 and non-decreasing, so a sub-range of a larger CSR works
 * as is). out[r * out_row_stride + j] = sum over those ids of table[id][j]
 * (MML_POOL_SUM) or that sum divided by their count (MML_POOL_MEAN); an
 * empty list gives a zero vector; a repeated id counts each time. ids may be
 * NULL when every list is empty. Ids follow the table's OOV policy. Every
 * argument and id is checked before anything is written: MML_EINVAL for a
 * NULL pointer or an unknown pooling, MML_ESHAPE for n_rows < 1, a small
 * stride or bad offsets (naming the row), MML_ERANGE for an id. The model
 * uses these for the batch view's multi-hot fields (mml_model_options.n_multihot). */
MML_API int mml_embedding_forward_multihot(mml_embedding *emb, const int64_t *offsets,
                                           const int32_t *ids, int64_t n_rows, int32_t pooling,
                                           float *out, int64_t out_row_stride);
/* Backward of the above: grad[id] += dout[r] (MML_POOL_SUM) or dout[r] /
 * count (MML_POOL_MEAN) for every id occurrence of every row r; empty rows
 * contribute nothing. Same checks. */
MML_API int mml_embedding_backward_multihot(mml_embedding *emb, const int64_t *offsets,
                                            const int32_t *ids, int64_t n_rows, int32_t pooling,
                                            const float *dout, int64_t dout_row_stride);

MML_API int64_t mml_embedding_n_rows(const mml_embedding *emb);
MML_API int32_t mml_embedding_dim(const mml_embedding *emb);
/* The table as a parameter (n_rows x dim); NULL for NULL. */
MML_API mml_param *mml_embedding_param(mml_embedding *emb);

MML_END_DECLS

#endif
