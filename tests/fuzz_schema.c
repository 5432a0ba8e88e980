/* libFuzzer target for the schema reader (the model file's schema section).
 *
 * Input: the schema bytes (docs/FORMAT.md, "Schema payload"); the seeds in
 * tests/corpus/schema are the schemas of a few CSV and synthetic loads. A
 * schema that reads must write back exactly the bytes it consumed, bind its
 * own column names, and map a row of its own values to ids inside the field
 * sizes.
 *
 * Built with -DMML_FUZZ_REPLAY it is a plain program that runs every file of
 * the directories given as arguments through the same function. */
#include <string.h>

#include "data_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A plausible raw value for each bound column: a vocabulary value or "0". */
static const char *value_for(const mml__schema *s, const mml__binding *b, int32_t c)
{
    int32_t t = b->target[c];
    const mml__vocab *v = NULL;
    if (b->role[c] == MML__BIND_FIELD)
        v = s->field_vocab[t];
    else if (b->role[c] == MML__BIND_MH)
        v = s->mh_vocab[t];
    else if (b->role[c] == MML__BIND_DOMAIN && s->domain_mode == MML__DOMAIN_NAMES)
        return s->domain_names[0];
    return v && v->n > 0 ? mml__vocab_str(v, 0) : "0";
}

static void exercise(mml_ctx *ctx, const mml__schema *s)
{
    /* The schema's own columns, in slot order. */
    int64_t n = 2 + (int64_t)s->n_fields + s->n_dense + s->n_multihot;
    if (n > 4096)
        return;
    const char *names[4096];
    int32_t nc = 0;
    names[nc++] = s->label_column;
    if (s->domain_column)
        names[nc++] = s->domain_column;
    for (int32_t f = 0; f < s->n_fields; f++)
        if (f != s->domain_field)
            names[nc++] = s->field_names[f];
    for (int32_t j = 0; j < s->n_dense; j++)
        names[nc++] = s->dense_names[j];
    for (int32_t m = 0; m < s->n_multihot; m++)
        names[nc++] = s->mh_names[m];
    mml__binding *b;
    if (mml__schema_bind(ctx, s, nc, names, &b) != MML_OK)
        __builtin_trap(); /* a schema that reads has distinct column names */
    const char *values[4096];
    for (int32_t c = 0; c < nc; c++)
        values[c] = value_for(s, b, c);
    static int32_t ids[4096];
    static float dense[4096];
    static int64_t mh_off[4097];
    static int32_t mh_ids[64];
    int32_t dom, bad;
    float label;
    int rc = mml__schema_map_row(s, b, values, NULL, ids, dense, &dom, &label, mh_off, mh_ids, 64,
                                 &bad);
    if (rc == MML_OK) {
        if (dom < 0 || dom >= s->n_domains)
            __builtin_trap();
        for (int32_t f = 0; f < s->n_fields; f++)
            if (ids[f] < 0 || ids[f] >= s->field_sizes[f])
                __builtin_trap();
        for (int32_t m = 0; m < s->n_multihot; m++)
            for (int64_t k = mh_off[m]; k < mh_off[m + 1]; k++)
                if (mh_ids[k] < 0 || mh_ids[k] >= s->mh_sizes[m])
                    __builtin_trap();
    } else if (bad < 0 || bad >= nc) {
        __builtin_trap();
    }
    mml__binding_destroy(ctx, b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mml_ctx *ctx;
    if (mml_ctx_create(&ctx, NULL) != MML_OK)
        return 0;
    mml__rbuf r;
    mml__rbuf_init(&r, ctx, data, size, 0, "schema");
    mml__schema *s = NULL;
    int rc = mml__schema_read(ctx, &r, &s);
    if (rc == MML_OK) {
        mml__wbuf w;
        mml__wbuf_init(&w, ctx);
        mml__schema_write(&w, s);
        if (mml__wbuf_status(&w) == MML_OK &&
            (w.len != r.pos || memcmp(w.data, data, w.len) != 0))
            __builtin_trap();
        mml__wbuf_free(&w);
        exercise(ctx, s);
        mml__schema_release(ctx, s);
    } else if (s || mml_ctx_last_error(ctx)[0] == '\0') {
        __builtin_trap(); /* a failure leaves no output and always says why */
    }
    mml_ctx_destroy(ctx);
    return 0;
}

#include "fuzz_replay.h"
