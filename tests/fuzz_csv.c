/* libFuzzer target for the CSV reader.
 *
 * Input: one flag byte, then up to three files (train, validation, test)
 * separated by NUL bytes. Flags: bit 0 skip bad rows, bit 1 TSV, bit 2 column
 * "n" numeric, bit 3 column "m" multi-hot, bit 4 no domain column, bit 5 a
 * 16-byte line limit, bit 6 field_columns {"domain", "f"}, bit 7 column "f"
 * hashed into 16 buckets. A loaded schema must survive its own
 * serialisation: read back, it writes the same bytes.
 *
 * Built with -DMML_FUZZ_REPLAY it is a plain program that runs every file of
 * the directories given as arguments through the same function (the seed
 * corpus replay in the normal test suite). */
#include <string.h>

#include "data_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(mml_ctx *ctx, const mml_dataset *ds)
{
    if (!ds)
        return;
    int64_t n = mml_dataset_n_rows(ds);
    mml_batch_view v;
    if (mml_dataset_view(ds, 0, n, &v) != MML_OK)
        __builtin_trap();
    int32_t D = mml_dataset_n_domains(ds);
    for (int64_t r = 0; r < n; r++) {
        if (v.domain[r] < 0 || v.domain[r] >= D || (v.labels[r] != 0.0f && v.labels[r] != 1.0f))
            __builtin_trap();
        for (int32_t f = 0; f < v.n_fields; f++)
            if (v.ids[r * v.n_fields + f] < 0 ||
                v.ids[r * v.n_fields + f] >= mml_dataset_field_size(ds, f))
                __builtin_trap();
        for (int32_t m = 0; m < mml_dataset_n_multihot(ds); m++) {
            const int32_t *ids;
            int64_t k;
            if (mml_dataset_multihot_row(ds, m, r, &ids, &k) != MML_OK)
                __builtin_trap();
            for (int64_t j = 0; j < k; j++)
                if (ids[j] < 0 || ids[j] >= mml_dataset_multihot_size(ds, m))
                    __builtin_trap();
        }
    }
    for (int32_t f = 0; f < v.n_fields; f++)
        (void)mml_dataset_field_value(ds, f, 0);
    mml_batcher_options o;
    mml_batcher_options_init(&o);
    o.batch_size = 3;
    mml_batcher *b;
    if (mml_batcher_create(&b, ctx, ds, &o) == MML_OK) {
        int64_t seen = 0;
        while (mml_batcher_next(b, &v) == 1)
            seen += v.n_rows;
        if (seen != n)
            __builtin_trap();
        mml_batcher_destroy(b);
    }
}

static void schema_round_trip(mml_ctx *ctx, const mml_dataset *ds)
{
    if (!ds)
        return;
    mml__wbuf w;
    mml__wbuf_init(&w, ctx);
    mml__schema_write(&w, mml__dataset_schema(ds));
    if (mml__wbuf_status(&w) != MML_OK) {
        mml__wbuf_free(&w);
        return;
    }
    mml__rbuf r;
    mml__rbuf_init(&r, ctx, w.data, w.len, 0, "schema");
    mml__schema *s = NULL;
    int rc = mml__schema_read(ctx, &r, &s);
    if (rc == MML_OK) {
        mml__wbuf w2;
        mml__wbuf_init(&w2, ctx);
        mml__schema_write(&w2, s);
        if (r.pos != w.len || w2.len != w.len || memcmp(w2.data, w.data, w.len) != 0)
            __builtin_trap();
        mml__wbuf_free(&w2);
        mml__schema_release(ctx, s);
    } else if (rc != MML_ENOMEM) {
        __builtin_trap(); /* a schema the loader built always reads back */
    }
    mml__wbuf_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    mml__source src[3];
    int nsrc = 0;
    static const char *const names[3] = {"train.csv", "val.csv", "test.csv"};
    while (nsrc < 3) {
        const char *z = memchr(p, '\0', (size_t)(end - p));
        const char *e = z ? z : end;
        src[nsrc].name = names[nsrc];
        src[nsrc].path = NULL;
        src[nsrc].mem = p;
        src[nsrc].mem_len = (size_t)(e - p);
        nsrc++;
        if (!z)
            break;
        p = z + 1;
    }
    mml_ctx *ctx;
    if (mml_ctx_create(&ctx, NULL) != MML_OK)
        return 0;
    static const char *const num[] = {"n"};
    static const char *const mh[] = {"m"};
    static const char *const fields[] = {"domain", "f"};
    mml_csv_options o;
    mml_csv_options_init(&o);
    o.skip_bad_rows = flags & 1;
    if (flags & 2)
        o.delimiter = '\t';
    if (flags & 4) {
        o.numeric_columns = num;
        o.n_numeric_columns = 1;
    }
    if (flags & 8) {
        o.multihot_columns = mh;
        o.n_multihot_columns = 1;
    }
    if (flags & 16)
        o.domain_column = NULL;
    if (flags & 32)
        o.max_line_bytes = 16;
    if (flags & 64) {
        o.field_columns = fields;
        o.n_field_columns = 2;
    }
    static const char *const hashed[] = {"f"};
    static const int64_t buckets[] = {16};
    if (flags & 128) {
        o.hashed_columns = hashed;
        o.hashed_buckets = buckets;
        o.n_hashed_columns = 1;
        o.hash_seed = 3;
    }
    mml_dataset *tr = NULL, *va = NULL, *te = NULL;
    int rc = mml__csv_load_sources(ctx, &o, &src[0], nsrc > 1 ? &src[1] : NULL,
                                   nsrc > 2 ? &src[2] : NULL, &tr, &va, &te);
    if (rc == MML_OK) {
        exercise(ctx, tr);
        exercise(ctx, va);
        exercise(ctx, te);
        schema_round_trip(ctx, tr);
    } else if (tr || va || te || mml_ctx_last_error(ctx)[0] == '\0') {
        __builtin_trap(); /* a failure leaves no output and always says why */
    }
    mml_dataset_destroy(tr);
    mml_dataset_destroy(va);
    mml_dataset_destroy(te);
    mml_ctx_destroy(ctx);
    return 0;
}

#include "fuzz_replay.h"
