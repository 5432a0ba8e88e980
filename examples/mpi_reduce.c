/* mml_reduce_hook over MPI (see mpi_reduce.h). Only standard MPI-2 calls:
 * the same code runs on Open MPI, MPICH and the vendors' MPIs. */
#include "mpi_reduce.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Started by an MPI launcher (mpirun, mpiexec, srun): the variables that
 * Open MPI, MPICH's Hydra and PMI/PMIx launchers set. Alone, mml-train
 * makes no MPI call at all: a singleton MPI_Init would want a daemon. */
static int launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK",
                                       "PMIX_RANK", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

int mpi_reducer_init(mpi_reducer *r, int *argc, char ***argv)
{
    memset(r, 0, sizeof *r);
    r->fail_rank = -1;
    r->size = 1;
    if (!launched())
        return 0;
    r->active = 1;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "mml-train: MPI_Init failed\n");
        return -1;
    }
    /* MPI's default handler aborts the job on a communication error. */
    MPI_Comm_rank(MPI_COMM_WORLD, &r->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &r->size);
    const char *f = getenv("MML_MPI_TEST_FAIL");
    if (f && sscanf(f, "%d:%ld", &r->fail_rank, &r->fail_call) != 2)
        r->fail_rank = -1;
    return 0;
}

/* A test-only failure of this rank's Nth collective. */
static int injected(mpi_reducer *r)
{
    return ++r->calls == r->fail_call && r->rank == r->fail_rank;
}

static int gather(void *user, const void *send, int64_t send_bytes, void *recv,
                  const int64_t *recv_bytes)
{
    mpi_reducer *r = user;
    if (injected(r))
        return -1;
    int *counts = malloc(sizeof(int) * 2 * (size_t)r->size), *displs = counts + r->size;
    if (!counts)
        return -1;
    int64_t off = 0;
    for (int q = 0; q < r->size; q++) {
        if (recv_bytes[q] > INT_MAX || off > INT_MAX) {
            free(counts);
            return -2; /* MPI counts are int: at most 2 GiB per gather */
        }
        counts[q] = (int)recv_bytes[q];
        displs[q] = (int)off;
        off += recv_bytes[q];
    }
    int rc = MPI_Allgatherv(send, (int)send_bytes, MPI_BYTE, recv, counts, displs, MPI_BYTE,
                            MPI_COMM_WORLD);
    free(counts);
    return rc == MPI_SUCCESS ? 0 : -3;
}

/* Rank q owns chunk q; it receives every rank's copy of its chunk, adds them
 * left to right in rank order, and every rank gathers the summed chunks.
 * Each element is added in one fixed order, on one rank: the same bits
 * everywhere, whatever the MPI's own reduction order would be. Per pass at
 * most 2^28 floats, so that MPI's int counts never overflow. */
static int sum_f32(void *user, float *buf, int64_t n)
{
    mpi_reducer *r = user;
    if (injected(r))
        return -1;
    int P = r->size;
    int *cnt = malloc(sizeof(int) * 4 * (size_t)P);
    if (!cnt)
        return -1;
    int *dsp = cnt + P, *rcnt = dsp + P, *rdsp = rcnt + P;
    for (int64_t base = 0; base < n; base += (int64_t)1 << 28) {
        int64_t m = n - base < ((int64_t)1 << 28) ? n - base : (int64_t)1 << 28;
        int64_t off = 0;
        for (int q = 0; q < P; q++) {
            cnt[q] = (int)(m / P + (q < m % P ? 1 : 0));
            dsp[q] = (int)off;
            off += cnt[q];
        }
        int mine = cnt[r->rank];
        if ((long)mine * P > r->tmp_cap) {
            free(r->tmp);
            r->tmp_cap = (long)mine * P;
            if (!(r->tmp = malloc(sizeof(float) * (size_t)(r->tmp_cap ? r->tmp_cap : 1)))) {
                r->tmp_cap = 0;
                free(cnt);
                return -1;
            }
        }
        for (int q = 0; q < P; q++) {
            rcnt[q] = mine;
            rdsp[q] = q * mine;
        }
        float *x = buf + base;
        if (MPI_Alltoallv(x, cnt, dsp, MPI_FLOAT, r->tmp, rcnt, rdsp, MPI_FLOAT,
                          MPI_COMM_WORLD) != MPI_SUCCESS) {
            free(cnt);
            return -3;
        }
        float *acc = x + dsp[r->rank];
        for (int i = 0; i < mine; i++)
            acc[i] = r->tmp[i];
        for (int q = 1; q < P; q++)
            for (int i = 0; i < mine; i++)
                acc[i] += r->tmp[(long)q * mine + i];
        if (MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, x, cnt, dsp, MPI_FLOAT,
                           MPI_COMM_WORLD) != MPI_SUCCESS) {
            free(cnt);
            return -3;
        }
    }
    free(cnt);
    return 0;
}

static void abort_all(void *user, int status, const char *message)
{
    mpi_reducer *r = user;
    fprintf(stderr, "mml-train: rank %d of %d: %s (status %d); stopping every rank\n", r->rank,
            r->size, message, status);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

void mpi_reducer_hook(mpi_reducer *r, mml_reduce_hook *h)
{
    memset(h, 0, sizeof *h);
    h->struct_size = sizeof *h;
    h->rank = r->rank;
    h->size = r->size;
    h->user = r;
    h->gather = gather;
    h->sum_f32 = sum_f32;
    h->abort = abort_all;
}

int mpi_reducer_agree(mpi_reducer *r, int status, const char *message)
{
    if (!r->active)
        return status;
    struct {
        int status;
        char msg[508];
    } mine, *all;
    memset(&mine, 0, sizeof mine);
    mine.status = status;
    if (status && message)
        snprintf(mine.msg, sizeof mine.msg, "%s", message);
    if (!(all = malloc(sizeof mine * (size_t)r->size))) {
        fprintf(stderr, "mml-train: rank %d: out of memory\n", r->rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE,
                  MPI_COMM_WORLD);
    int agreed = 0;
    for (int q = 0; q < r->size && !agreed; q++)
        if (all[q].status) {
            agreed = all[q].status;
            if (r->rank == 0 && all[q].msg[0])
                fprintf(stderr, "mml-train: rank %d: %s\n", q, all[q].msg);
        }
    free(all);
    return agreed;
}

int mpi_reducer_differs(mpi_reducer *r, unsigned long long v)
{
    if (!r->active)
        return -1;
    unsigned long long *all = malloc(sizeof v * (size_t)r->size);
    if (!all) {
        fprintf(stderr, "mml-train: rank %d: out of memory\n", r->rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Allgather(&v, 1, MPI_UNSIGNED_LONG_LONG, all, 1, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD);
    int bad = -1;
    for (int q = 1; q < r->size && bad < 0; q++)
        if (all[q] != all[0])
            bad = q;
    free(all);
    return bad;
}

int mpi_reducer_bcast(mpi_reducer *r, int value)
{
    if (!r->active)
        return value;
    MPI_Bcast(&value, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return value;
}

int mpi_reducer_finish(mpi_reducer *r, int status)
{
    if (!r->active)
        return status;
    int worst = status;
    MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    free(r->tmp);
    MPI_Finalize();
    return worst;
}

int mpi_reducer_allgather(mpi_reducer *r, const void *send, long n, char **out, long *out_n)
{
    *out = NULL;
    *out_n = 0;
    if (!r->active) { /* one process: its own block */
        if (!(*out = malloc(n > 0 ? (size_t)n : 1)))
            return -1;
        memcpy(*out, send, (size_t)n);
        *out_n = n;
        return 0;
    }
    if (n > INT_MAX)
        return -1;
    int mine = (int)n, *counts = malloc(sizeof(int) * 2 * (size_t)r->size);
    if (!counts)
        return -1;
    int *displs = counts + r->size;
    if (MPI_Allgather(&mine, 1, MPI_INT, counts, 1, MPI_INT, MPI_COMM_WORLD) != MPI_SUCCESS) {
        free(counts);
        return -1;
    }
    long total = 0;
    for (int q = 0; q < r->size; q++) {
        if (total > INT_MAX - counts[q]) {
            free(counts);
            return -1;
        }
        displs[q] = (int)total;
        total += counts[q];
    }
    char *buf = malloc(total > 0 ? (size_t)total : 1);
    int rc = buf ? MPI_Allgatherv(send, mine, MPI_BYTE, buf, counts, displs, MPI_BYTE,
                                  MPI_COMM_WORLD) : MPI_ERR_NO_MEM;
    free(counts);
    if (rc != MPI_SUCCESS) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_n = total;
    return 0;
}
