/* Row tracking for sparse parameters (private).
 *
 * An embedding table's gradient is written only in the rows its batches
 * used. So that zeroing the gradient and the sparse optimisers (lazy Adam,
 * Adagrad) cost work for those rows alone, not for the whole table, such a
 * parameter records the distinct rows written since its gradient was last
 * zeroed: a list in first-write order (deterministic) plus one mark bit per
 * row, kept consistent.
 *
 * The record lives in the same block as the gradient, in a header just
 * before p->grad; p->reserved holds MML__PARAM_ROWS to say so. The public
 * struct keeps its layout, a copy of the struct still finds the record (it
 * goes with the gradient buffer, not with the struct), and a parameter made
 * outside the library (reserved 0) is simply not tracked: code that sees no
 * record falls back to the whole table.
 *
 * Invariant: every row of the gradient outside the list is zero. Whoever
 * adds to a tracked gradient marks the row (mml__rows_touch) first.
 */
#ifndef MML_PARAM_ROWS_H
#define MML_PARAM_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* mml_param.reserved of a parameter whose gradient block carries an mml__rows header. */
#define MML__PARAM_ROWS 0x53574f52 /* "ROWS" */

typedef struct mml__rows {
    uint64_t magic; /* MML__ROWS_MAGIC */
    float *grad;    /* the gradient this header precedes: checked on every lookup */
    int64_t rows, cols;
    int64_t count;  /* entries in list */
    int32_t *list;  /* rows written since the last zeroing, each once, in first-write order */
    uint64_t *mark; /* bit r % 64 of mark[r / 64]: row r is in list */
    size_t bytes;   /* the whole block, for the free */
} mml__rows;

/* Allocates p's gradient (p->rows x p->cols zeros) with a row record, sets
 * p->grad and p->reserved and returns the record, which the owner keeps to
 * mark rows and to free the block. The list has room for every row, so
 * marking never allocates. NULL (out of memory, no message) leaves p as it
 * was. */
mml__rows *mml__param_rows_alloc(mml_ctx *ctx, mml_param *p);
/* Frees the block of a record (gradient included); NULL does nothing. The
 * owner then sets its parameter's grad to NULL and reserved to 0. */
void mml__rows_free(mml_ctx *ctx, mml__rows *t);
/* p's row record, or NULL when p has none (not made by the library, no
 * gradient, or a header that does not match p). */
mml__rows *mml__param_rows(const mml_param *p);

/* Records that row r (0 <= r < t->rows) is written. */
static inline void mml__rows_touch(mml__rows *t, int64_t r)
{
    uint64_t bit = (uint64_t)1 << (r & 63);
    uint64_t *w = t->mark + (r >> 6);
    if (!(*w & bit)) {
        *w |= bit;
        t->list[t->count++] = (int32_t)r;
    }
}

/* Zeroes the listed rows of the gradient and empties the list. */
void mml__rows_zero(mml__rows *t);

#endif
