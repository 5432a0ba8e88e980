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

enum {
    MML_INIT_NORMAL = 0,  /* N(0, scale^2) */
    MML_INIT_UNIFORM = 1, /* U(-scale, scale) */
    MML_INIT_ZEROS = 2
};

typedef struct mml_embedding_options {
    uint32_t struct_size;
    int32_t dim;       /* >= 1; default 8 */
    int64_t n_rows;    /* >= 1 */
    int32_t init;      /* MML_INIT_*; default MML_INIT_NORMAL */
    float scale;       /* default 0.01 (std of the normal init) */
    uint64_t stream;   /* random stream within the context's seed, e.g. the field index */
    const char *name;  /* used in error messages and parameter names; default "embedding" */
    int32_t group;     /* parameter group; default MML_GROUP_EMBEDDING */
} mml_embedding_options;

MML_BEGIN_DECLS

MML_API void mml_embedding_options_init(mml_embedding_options *opt);
MML_API int mml_embedding_create(mml_embedding **out, mml_ctx *ctx,
                                 const mml_embedding_options *opt);
MML_API void mml_embedding_destroy(mml_embedding *emb);

/* out[r * out_row_stride + j] = table[ids[r * id_stride]][j] for r < n, j < dim.
 * An id outside [0, n_rows) gives MML_ERANGE naming the table and the row. */
MML_API int mml_embedding_forward(mml_embedding *emb, const int32_t *ids, int64_t id_stride,
                                  int64_t n, float *out, int64_t out_row_stride);
/* grad[ids[r]] += dout[r] for r < n. */
MML_API int mml_embedding_backward(mml_embedding *emb, const int32_t *ids, int64_t id_stride,
                                   int64_t n, const float *dout, int64_t dout_row_stride);

MML_API int64_t mml_embedding_n_rows(const mml_embedding *emb);
MML_API int32_t mml_embedding_dim(const mml_embedding *emb);
/* The table as a parameter (n_rows x dim); NULL for NULL. */
MML_API mml_param *mml_embedding_param(mml_embedding *emb);

MML_END_DECLS

#endif
