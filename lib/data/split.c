/* The stratified 60/20/20 split of METHOD.md section 5 and PROTOCOL.md. */
#include <string.h>

#include "data/data_internal.h"

static void shuffle(mml_rng *rng, int64_t *a, int64_t n)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)mml__rng_below(rng, (uint64_t)i + 1);
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

int mml__split_stratified(mml_ctx *ctx, const mml_dataset *src, uint64_t seed, mml_dataset **train,
                          mml_dataset **val, mml_dataset **test)
{
    *train = *val = *test = NULL;
    int64_t n = src->n_rows;
    int32_t D = src->n_domains;
    size_t nb = (size_t)(n > 0 ? n : 1) * sizeof(int64_t);
    size_t gb = (size_t)(2 * D + 1) * sizeof(int64_t);
    int64_t *group = mml__alloc(ctx, nb); /* rows ordered by (domain, class), file order within */
    int64_t *start = mml__alloc(ctx, gb);
    int64_t *parts[3] = {mml__alloc(ctx, nb), mml__alloc(ctx, nb), mml__alloc(ctx, nb)};
    int rc = MML_OK;
    if (!group || !start || !parts[0] || !parts[1] || !parts[2]) {
        rc = MML_ENOMEM;
        goto done;
    }
    /* Counting sort by group g = 2 d + label. */
    memset(start, 0, gb);
    for (int64_t r = 0; r < n; r++)
        start[2 * src->domain[r] + (src->labels[r] > 0.5f) + 1]++;
    for (int32_t g = 0; g < 2 * D; g++)
        start[g + 1] += start[g];
    for (int64_t r = 0; r < n; r++) {
        int32_t g = 2 * src->domain[r] + (src->labels[r] > 0.5f);
        group[start[g]++] = r;
    }
    /* start[g] is now the end of group g; shift back to starts. */
    memmove(start + 1, start, (size_t)(2 * D) * sizeof *start);
    start[0] = 0;
    mml_rng rng;
    mml__rng_init(&rng, seed, MML_STREAM_DATA + 1);
    int64_t len[3] = {0, 0, 0};
    for (int32_t g = 0; g < 2 * D; g++) {
        int64_t *a = group + start[g];
        int64_t m = start[g + 1] - start[g];
        shuffle(&rng, a, m);
        /* round(0.6 m) and round(0.2 m); 0.6 m and 0.2 m are never halfway. */
        int64_t ntr = (6 * m + 5) / 10, nva = (2 * m + 5) / 10;
        if (ntr + nva > m)
            nva = m - ntr;
        memcpy(parts[0] + len[0], a, (size_t)ntr * sizeof *a);
        memcpy(parts[1] + len[1], a + ntr, (size_t)nva * sizeof *a);
        memcpy(parts[2] + len[2], a + ntr + nva, (size_t)(m - ntr - nva) * sizeof *a);
        len[0] += ntr;
        len[1] += nva;
        len[2] += m - ntr - nva;
    }
    mml_dataset *out[3] = {NULL, NULL, NULL};
    for (int k = 0; k < 3 && rc == MML_OK; k++) {
        shuffle(&rng, parts[k], len[k]);
        rc = mml__dataset_gather(src, parts[k], len[k], &out[k]);
    }
    if (rc < 0) {
        for (int k = 0; k < 3; k++)
            mml_dataset_destroy(out[k]);
        goto done;
    }
    *train = out[0];
    *val = out[1];
    *test = out[2];
done:
    mml__free(ctx, group, nb);
    mml__free(ctx, start, gb);
    for (int k = 0; k < 3; k++)
        mml__free(ctx, parts[k], nb);
    return rc;
}
