/* Data-parallel training from one CSV file per rank: paths with "%r" name
 * each rank's files (train.%r.csv: train.0.csv, train.1.csv, ...). Each rank
 * reads only its own files. The ranks exchange their distinct values once,
 * so that every rank numbers every value alike (as one process reading all
 * the files would: the reader sorts its vocabularies), and map their rows
 * onto that one schema. Built with MPI only (-Dmpi). */
#ifndef MML_EXAMPLES_MPI_SHARDS_H
#define MML_EXAMPLES_MPI_SHARDS_H

#include <moemlora/moemlora.h>

#include "mpi_reduce.h"

/* This rank's training, validation and test rows, on the shared schema.
 * o: the CSV options; train, val, test: paths with "%r". MML_OK, or a
 * negative code with the context's message (every rank fails if one does). */
int mpi_load_shards(mpi_reducer *r, mml_ctx *ctx, const mml_csv_options *o, const char *train,
                    const char *val, const char *test, mml_dataset **tr, mml_dataset **va,
                    mml_dataset **te);

#endif
