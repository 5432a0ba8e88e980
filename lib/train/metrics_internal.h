/* The metrics accumulator's rows as bytes (private): what data-parallel
 * training gathers from every worker to compute exact metrics over all of
 * them (lib/train/reduce.c). */
#ifndef MML_METRICS_INTERNAL_H
#define MML_METRICS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "moemlora/metrics.h"

/* Bytes that mml__metrics_pack writes for m. */
size_t mml__metrics_packed_size(const mml_metrics *m);
/* Writes m's rows (per domain: count, positives, log-loss sum, the sorted
 * keys; then the grouped rows) to out, mml__metrics_packed_size(m) bytes. */
void mml__metrics_pack(const mml_metrics *m, void *out);
/* Appends the rows of a block that mml__metrics_pack made for an
 * accumulator of the same D. MML_ECORRUPT for a block that does not fit,
 * MML_ERANGE past 2^32 - 1 rows in a domain, MML_ENOMEM; m is unchanged on
 * failure. */
int mml__metrics_append_packed(mml_metrics *m, const void *data, size_t size);

#endif
