/* mml-bench: what its sections (bench_serve.c, bench_train.c, bench_sparse.c) share with
 * the main program (mml_bench.c). */
#ifndef MML_BENCH_H
#define MML_BENCH_H

#include <stdint.h>

/* Monotonic wall clock, this process's and this thread's CPU time, in seconds. */
double bench_now(void);
double bench_process_cpu_now(void);
double bench_thread_cpu_now(void);
/* For qsort over doubles, ascending. */
int bench_cmp_double(const void *a, const void *b);
/* The median of n values (sorts them in place); 0 for n = 0. */
double bench_median(double *v, int n);

/* The sections: argv[0] is the section's name. Exit status. */
int bench_serve_main(int argc, char **argv);
int bench_train_main(int argc, char **argv);
int bench_sparse_main(int argc, char **argv);

#endif
