/* Parse throughput of the data readers, one core.
 *
 *   parse_bench [MB]
 *
 * Builds a file of about MB megabytes (default 64) in the ML-100K u.data
 * format (user TAB item TAB rating TAB timestamp) by repeating the real
 * u.data from $MML_DATA_DIR/ml-100k when present, or rows drawn at random
 * otherwise, and times:
 *   - the MovieLens ratings reader on it (target: >= 100 MB/s);
 *   - the CSV reader on the same rows as label,domain,user,item CSV;
 *   - mml_movielens_load on the real ML-100K folder (whole load: parse,
 *     id ranks, split), when present.
 * Best of 3 runs each. Temporary files go to $TMPDIR (default /tmp). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data_internal.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    mml_blis_arch_select("auto", 0); /* the fastest kernels unless BLIS_ARCH_TYPE is set */
    double mb = argc > 1 ? atof(argv[1]) : 64.0;
    if (mb <= 0)
        mb = 64.0;
    const char *root = getenv("MML_DATA_DIR");
    const char *tmp = getenv("TMPDIR");
    char ml_dir[1024], udata[1100], path[1100], csv_path[1100];
    snprintf(ml_dir, sizeof ml_dir, "%s/ml-100k", root ? root : "../shared/data");
    snprintf(udata, sizeof udata, "%s/u.data", ml_dir);
    snprintf(path, sizeof path, "%s/mml_parse_bench_%d.data", tmp ? tmp : "/tmp", (int)getpid());
    snprintf(csv_path, sizeof csv_path, "%s/mml_parse_bench_%d.csv", tmp ? tmp : "/tmp",
             (int)getpid());

    size_t src_len = 0;
    char *src = read_all(udata, &src_len);
    int real = src != NULL;
    if (!real) {
        /* Random rows in the same format. */
        src_len = 0;
        src = malloc(4 << 20);
        unsigned x = 12345;
        while (src_len < (4u << 20) - 64) {
            x = x * 1103515245u + 12345u;
            src_len += (size_t)sprintf(src + src_len, "%u\t%u\t%u\t%u\n", 1 + (x >> 8) % 943,
                                       1 + (x >> 4) % 1682, 1 + (x >> 20) % 5,
                                       874724710u + (x >> 3) % 20000000u);
        }
    }
    size_t target = (size_t)(mb * 1e6);
    FILE *f = fopen(path, "wb");
    FILE *g = fopen(csv_path, "wb");
    if (!f || !g) {
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    size_t written = 0, csv_written = 0;
    fputs("label,domain,user,item\n", g);
    while (written < target) {
        fwrite(src, 1, src_len, f);
        written += src_len;
        /* The CSV copy: label = rating == 5, domain = user % 2. */
        const char *p = src, *e = src + src_len;
        while (p < e && csv_written < target) {
            unsigned u, i, r, t;
            if (sscanf(p, "%u\t%u\t%u\t%u", &u, &i, &r, &t) != 4)
                break;
            csv_written += (size_t)fprintf(g, "%d,%u,%u,%u\n", r == 5, u % 2, u, i);
            p = memchr(p, '\n', (size_t)(e - p));
            if (!p)
                break;
            p++;
        }
    }
    fclose(f);
    fclose(g);
    free(src);

    mml_ctx *ctx;
    if (mml_ctx_create(&ctx, NULL) != MML_OK)
        return 1;
    printf("input: %.1f MB of %s u.data rows\n", (double)written / 1e6,
           real ? "ML-100K" : "random");

    double best = 1e30;
    int64_t rows = 0;
    for (int rep = 0; rep < 3; rep++) {
        mml__source s = {path, path, NULL, 0};
        mml__ratings r;
        double t0 = now();
        int rc = mml__ml_read_ratings(ctx, &s, "\t", &r);
        double t1 = now();
        if (rc != MML_OK) {
            fprintf(stderr, "%s\n", mml_ctx_last_error(ctx));
            return 1;
        }
        rows = r.n;
        mml__ml_ratings_free(ctx, &r);
        if (t1 - t0 < best)
            best = t1 - t0;
    }
    printf("movielens ratings reader: %lld rows in %.3f s: %.0f MB/s, %.1f M rows/s\n",
           (long long)rows, best, (double)written / 1e6 / best, (double)rows / 1e6 / best);

    best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        mml_dataset *ds;
        double t0 = now();
        int rc = mml_csv_load(ctx, NULL, csv_path, NULL, NULL, &ds, NULL, NULL);
        double t1 = now();
        if (rc != MML_OK) {
            fprintf(stderr, "%s\n", mml_ctx_last_error(ctx));
            return 1;
        }
        rows = mml_dataset_n_rows(ds);
        mml_dataset_destroy(ds);
        if (t1 - t0 < best)
            best = t1 - t0;
    }
    printf("csv reader (label,domain,user,item): %lld rows, %.1f MB in %.3f s: %.0f MB/s\n",
           (long long)rows, (double)csv_written / 1e6, best, (double)csv_written / 1e6 / best);
    unlink(path);
    unlink(csv_path);

    if (real) {
        best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            mml_movielens_options o;
            mml_movielens_options_init(&o);
            o.dir = ml_dir;
            mml_dataset *a, *b, *c;
            double t0 = now();
            int rc = mml_movielens_load(ctx, &o, &a, &b, &c);
            double t1 = now();
            if (rc != MML_OK) {
                fprintf(stderr, "%s\n", mml_ctx_last_error(ctx));
                return 1;
            }
            mml_dataset_destroy(a);
            mml_dataset_destroy(b);
            mml_dataset_destroy(c);
            if (t1 - t0 < best)
                best = t1 - t0;
        }
        printf("mml_movielens_load(ML-100K, gender): %.1f ms\n", best * 1e3);
    }
    mml_ctx_destroy(ctx);
    return 0;
}
