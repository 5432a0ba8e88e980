/* libFuzzer target for the model file loader. Input: the bytes of a file.
 * A file that loads must predict finite probabilities on a batch of its own
 * shape in every mixture mode it can serve, and save to the same bytes it
 * would load again. A failure leaves no model and always says why. Each
 * input is loaded twice: as it is, and with its CRCs made right.
 *
 * -DMML_FUZZ_REPLAY builds the plain replay program (fuzz_replay.h); with
 * `--write-seeds DIR` it writes the seed corpus of small valid files. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(mml_ctx *ctx, mml_model *m)
{
    enum { N = 3 };
    int32_t F = mml_model_n_fields(m), D = mml_model_n_domains(m);
    int32_t ids[N * 64] = {0}, dom[N];
    float dense[N * 64] = {0}, p[N];
    int64_t off[N + 1] = {0};
    const int64_t *offs[64];
    int32_t none = 0;
    const int32_t *mh[64];
    if (F > 64)
        return;
    for (int r = 0; r < N; r++)
        dom[r] = r % D;
    mml_batch_view v;
    mml_batch_view_init(&v, N, F, ids, 0, dense, dom, NULL);
    /* The numeric and multi-hot counts are not public: try until the shape fits. */
    for (int32_t nd = 0; nd <= 64; nd++)
        for (int32_t nm = 0; nm <= 64; nm += 1) {
            v.n_dense = nd;
            v.n_multihot = nm;
            for (int32_t j = 0; j < nm; j++) {
                offs[j] = off;
                mh[j] = &none;
            }
            v.multihot_offsets = nm ? offs : NULL;
            v.multihot_ids = nm ? mh : NULL;
            int rc = mml_model_predict(m, &v, MML_MIX_NONE, 0, p);
            if (rc == MML_ESHAPE)
                continue;
            if (rc == MML_OK)
                for (int r = 0; r < N; r++)
                    if (!(p[r] >= 0.0f && p[r] <= 1.0f))
                        __builtin_trap();
            for (int32_t mode = MML_MIX_DOMAIN; mode <= MML_MIX_OWN; mode++)
                (void)mml_model_predict(m, &v, mode, 0, p);
            void *again = NULL;
            size_t n = 0;
            if (mml_model_save_mem(m, &again, &n) == MML_OK) {
                mml_model *l = NULL;
                if (mml_model_load_mem(&l, ctx, again, n) != MML_OK)
                    __builtin_trap(); /* what this release writes, it reads */
                mml_model_destroy(l);
                mml_ctx_free(ctx, again, n);
            }
            return;
        }
}

static void load_one(const uint8_t *data, size_t size)
{
    mml_ctx *ctx;
    if (mml_ctx_create(&ctx, NULL) != MML_OK)
        return;
    mml_model *m = NULL;
    int rc = mml_model_load_mem(&m, ctx, size ? data : (const uint8_t *)"", size);
    if (rc == MML_OK)
        exercise(ctx, m);
    else if (m || mml_ctx_last_error(ctx)[0] == '\0')
        __builtin_trap();
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Random changes almost always break a CRC: a second pass with every CRC
 * made right again reaches the parsers behind them. */
static void fix_crcs(uint8_t *d, size_t size)
{
    if (size < 64)
        return;
    uint64_t table = le(d + 24, 8), n = le(d + 32, 4);
    if (table <= size && n <= (size - table) / 32) {
        for (uint64_t i = 0; i < n; i++) {
            uint8_t *e = d + table + 32 * i;
            uint64_t off = le(e + 8, 8), len = le(e + 16, 8);
            if (off <= size && len <= size - off)
                put_le32(e + 24, mml__crc32c(0, d + off, (size_t)len));
        }
        put_le32(d + 36, mml__crc32c(0, d + table, (size_t)(32 * n)));
    }
    put_le32(d + 60, mml__crc32c(0, d, 60));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_one(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    fix_crcs(copy, size);
    load_one(copy, size);
    free(copy);
    return 0;
}

#ifdef MML_FUZZ_REPLAY
#include <stdio.h>

/* Small valid files: every backbone, base and MoE, one with numeric and
 * multi-hot fields. */
static int write_seeds(const char *dir)
{
    static const char *const names[] = {"mlp", "wdl", "deepfm", "nfm", "pnn",
                                        "dcn", "autoint", "xdeepfm", "fibinet"};
    static const int64_t sizes[3] = {5, 4, 2};
    static const int64_t mh_sizes[1] = {3};
    static const int32_t hidden[2] = {4, 2};
    static const int32_t cin[2] = {2, 2};
    mml_ctx *ctx;
    if (mml_ctx_create(&ctx, NULL) != MML_OK)
        return 1;
    int bad = 0;
    for (int b = 0; b < 9; b++)
        for (int moe = 0; moe < 2; moe++) {
            mml_model_options o;
            mml_model_options_init(&o);
            o.n_fields = 3;
            o.field_sizes = sizes;
            o.backbone = names[b];
            o.embed_dim = 2;
            o.n_domains = 2;
            o.n_experts = moe ? 2 : 0;
            o.gate = moe;
            o.n_hidden = 2;
            o.hidden = hidden;
            o.alpha = 2;
            if (b == 0 && moe) {
                o.n_dense = 1;
                o.n_multihot = 1;
                o.multihot_sizes = mh_sizes;
            }
            mml_xdeepfm_options xo;
            mml_xdeepfm_options_init(&xo);
            xo.layer_sizes = cin;
            mml_autoint_options ao;
            mml_autoint_options_init(&ao);
            ao.n_layers = 1;
            ao.n_heads = 1;
            ao.head_dim = 2;
            o.backbone_options = b == 7 ? (const void *)&xo : b == 6 ? (const void *)&ao : NULL;
            mml_model *m = NULL;
            void *d = NULL;
            size_t n = 0;
            if (mml_model_create(&m, ctx, &o) != MML_OK || mml_model_save_mem(m, &d, &n) != MML_OK) {
                fprintf(stderr, "%s: %s\n", names[b], mml_ctx_last_error(ctx));
                bad = 1;
            } else {
                char path[4096];
                snprintf(path, sizeof path, "%s/%s%s.mml", dir, names[b], moe ? "_moe" : "");
                FILE *f = fopen(path, "wb");
                if (!f || fwrite(d, 1, n, f) != n)
                    bad = 1;
                if (f)
                    fclose(f);
            }
            mml_ctx_free(ctx, d, n);
            mml_model_destroy(m);
        }
    /* A MoE model that gained a domain (section DOMX). */
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_domains = 3;
    so.n_rows = 60;
    so.n_users = 5;
    so.n_items = 4;
    mml_dataset *all = NULL, *va = NULL, *te = NULL, *two = NULL;
    mml_model *m = NULL, *g = NULL;
    void *d = NULL;
    size_t n = 0;
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = 3;
    o.field_sizes = sizes;
    o.embed_dim = 2;
    o.n_domains = 2;
    o.n_experts = 2;
    o.gate = 1;
    o.n_hidden = 2;
    o.hidden = hidden;
    o.alpha = 2;
    if (mml_synthetic_generate(ctx, &so, &all, &va, &te) != MML_OK ||
        mml_dataset_drop_domain(&two, all, 2) != MML_OK || mml_model_create(&m, ctx, &o) != MML_OK ||
        mml_model_attach_schema(m, two) != MML_OK || mml_model_add_domain(&g, m, all, NULL) != MML_OK ||
        mml_model_save_mem(g, &d, &n) != MML_OK) {
        fprintf(stderr, "grown: %s\n", mml_ctx_last_error(ctx));
        bad = 1;
    } else {
        char path[4096];
        snprintf(path, sizeof path, "%s/mlp_moe_grown.mml", dir);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(d, 1, n, f) != n)
            bad = 1;
        if (f)
            fclose(f);
    }
    mml_ctx_free(ctx, d, n);
    mml_model_destroy(g);
    mml_model_destroy(m);
    mml_dataset_destroy(all);
    mml_dataset_destroy(va);
    mml_dataset_destroy(te);
    mml_dataset_destroy(two);
    mml_ctx_destroy(ctx);
    return bad;
}

int replay_main(int argc, char **argv);
#define main replay_main
#include "fuzz_replay.h"
#undef main

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0)
        return write_seeds(argv[2]);
    return replay_main(argc, argv);
}
#endif
