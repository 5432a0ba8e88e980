/* The trainer's collective operations (mml_reduce_hook) over MPI, for
 * mml-train's data-parallel mode: one rank per worker on MPI_COMM_WORLD.
 * Built only when meson finds MPI (-Dmpi=auto|enabled). */
#ifndef MML_EXAMPLES_MPI_REDUCE_H
#define MML_EXAMPLES_MPI_REDUCE_H

#include <moemlora/trainer.h>

typedef struct mpi_reducer {
    int active;      /* started by an MPI launcher: MPI is initialised */
    int rank, size;
    long calls;      /* callback calls so far (fault injection) */
    int fail_rank;   /* MML_MPI_TEST_FAIL=RANK:CALL: a test-only injected failure */
    long fail_call;
    float *tmp;      /* sum_f32's chunks from every rank */
    long tmp_cap;
} mpi_reducer;

/* MPI_Init when an MPI launcher started the process; without one a single
 * rank that makes no MPI call. 0, or -1 with a message on stderr. */
int mpi_reducer_init(mpi_reducer *r, int *argc, char ***argv);
/* The hook of this rank: gather = MPI_Allgatherv, sum_f32 = a reduce-scatter
 * (MPI_Alltoallv) summed in rank order then MPI_Allgatherv, so that every
 * rank gets the same bits; abort prints the message and calls MPI_Abort. */
void mpi_reducer_hook(mpi_reducer *r, mml_reduce_hook *h);
/* Agrees on a status: every rank gets the first failing rank's status (0
 * when none failed) and that rank's message is printed once, by rank 0,
 * with its rank. */
int mpi_reducer_agree(mpi_reducer *r, int status, const char *message);
/* The first rank whose v differs from rank 0's, or -1 when all agree. */
int mpi_reducer_differs(mpi_reducer *r, unsigned long long v);
/* Rank 0's value on every rank. */
int mpi_reducer_bcast(mpi_reducer *r, int value);
/* Every rank's block of bytes, concatenated in rank order, on every rank
 * (malloc'ed into *out; the caller frees it). 0, or -1. */
int mpi_reducer_allgather(mpi_reducer *r, const void *send, long n, char **out, long *out_n);
/* The largest status of every rank, then MPI_Finalize. */
int mpi_reducer_finish(mpi_reducer *r, int status);

#endif
