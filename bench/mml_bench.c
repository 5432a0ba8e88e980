/* mml-bench: the library's speed, one section at a time.
 *
 *   mml-bench [--blis-arch NAME|auto] serve [serve options]   (bench_serve.c)
 *   mml-bench [--blis-arch NAME|auto] train [train options]   (bench_train.c)
 *   mml-bench --print-blis-arch
 *
 * Every section first selects the BLIS kernels: the fastest this CPU runs
 * unless BLIS_ARCH_TYPE is set (as mml-train does); --blis-arch overrides
 * both. --print-blis-arch prints the kernels it would use and the matching
 * BLIS_ARCH_TYPE value (e.g. "skx BLIS_ARCH_TYPE=0"), which the comparison
 * scripts give PyTorch: Debian's PyTorch multiplies through libblas.so.3,
 * BLIS here. `mml-bench serve --help` and `mml-bench train --help` list
 * each section's options; bench/README.md and docs/PERFORMANCE.md say what
 * they measure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moemlora/moemlora.h>

#include "bench.h"

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double bench_process_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double bench_thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    if (n < 1)
        return 0.0;
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mml-bench [--blis-arch NAME|auto] serve|train|sparse [options]   (--help after the\n"
               "                 section lists its options)\n"
               "       mml-bench --print-blis-arch\n");
}

int main(int argc, char **argv)
{
    const char *arch = NULL;
    int a = 1, print_arch = 0;
    for (; a < argc && argv[a][0] == '-'; a++) {
        if (!strcmp(argv[a], "--blis-arch") && a + 1 < argc) {
            arch = argv[++a];
        } else if (!strcmp(argv[a], "--print-blis-arch")) {
            print_arch = 1;
        } else if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    /* Before the first context: BLIS fixes its kernels when it initialises. */
    int rc = mml_blis_arch_select(arch, arch != NULL);
    if (rc < 0) {
        fprintf(stderr, "mml-bench: --blis-arch %s: %s (this CPU's best: %s)\n", arch,
                mml_status_str(rc), mml_blis_arch_best());
        return 2;
    }
    if (print_arch) {
        mml_ctx *ctx = NULL;
        if (mml_ctx_create(&ctx, NULL) != MML_OK) {
            fprintf(stderr, "mml-bench: no context (BLIS_ARCH_TYPE?)\n");
            return 1;
        }
        printf("%s BLIS_ARCH_TYPE=%d\n", mml_ctx_blis_arch(ctx),
               (int)mml_blis_arch_type(mml_ctx_blis_arch(ctx)));
        mml_ctx_destroy(ctx);
        return 0;
    }
    if (a == argc) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[a], "serve"))
        return bench_serve_main(argc - a, argv + a);
    if (!strcmp(argv[a], "train"))
        return bench_train_main(argc - a, argv + a);
    if (!strcmp(argv[a], "sparse"))
        return bench_sparse_main(argc - a, argv + a);
    fprintf(stderr, "mml-bench: unknown section '%s'\n", argv[a]);
    usage(stderr);
    return 2;
}
