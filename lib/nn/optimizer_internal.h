/* The optimiser's state as bytes, for the trainer's checkpoints (private).
 * The layout is in docs/FORMAT.md, "Trainer state payload". */
#ifndef MML_OPTIMIZER_INTERNAL_H
#define MML_OPTIMIZER_INTERNAL_H

#include "core/bytes.h"
#include "moemlora/optimizer.h"

/* Appends the kind, the parameter count and, per parameter, its size, step
 * count, moments and row counts. Errors stay in w (mml__wbuf_status). */
void mml__optimizer_state_write(const mml_optimizer *opt, mml__wbuf *w);
/* Reads what mml__optimizer_state_write wrote into an optimiser over the
 * same parameters (same kind, count, sizes and parts), checking each; on
 * failure the state is partly overwritten (reset it or discard the
 * optimiser). MML_ECORRUPT or the reader's error, with a message. */
int mml__optimizer_state_read(mml_optimizer *opt, mml__rbuf *r);

#endif
