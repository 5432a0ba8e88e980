/* libFuzzer target for the trainer state (the model file's TRNR payload).
 * Input: one byte choosing the variant (0 base, 1 MLoRA, 2 MoE, by value
 * mod 3), then the state bytes, read into a fresh trainer of that variant.
 * A failure always says why; a success leaves a trainer that runs.
 *
 * -DMML_FUZZ_REPLAY builds the plain replay program (fuzz_replay.h); with
 * `--write-seeds DIR` it writes states checkpointed after every epoch of
 * small runs of each variant. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "train/trainer_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int32_t hidden[2] = {4, 2};

typedef struct world {
    mml_ctx *ctx;
    mml_dataset *train, *val, *test;
} world;

static int world_make(world *w)
{
    memset(w, 0, sizeof *w);
    mml_ctx_options co;
    mml_ctx_options_init(&co);
    co.n_threads = 1;
    co.seed = 3;
    if (mml_ctx_create(&w->ctx, &co) != MML_OK)
        return -1;
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_rows = 300;
    so.n_domains = 2;
    so.n_users = 10;
    so.n_items = 8;
    so.seed = 5;
    return mml_synthetic_generate(w->ctx, &so, &w->train, &w->val, &w->test);
}

static void world_free(world *w)
{
    mml_dataset_destroy(w->train);
    mml_dataset_destroy(w->val);
    mml_dataset_destroy(w->test);
    mml_ctx_destroy(w->ctx);
}

static void options(mml_trainer_options *o, int variant)
{
    mml_trainer_options_init(o);
    o->variant = variant == 0 ? MML_VARIANT_BASE : variant == 1 ? MML_VARIANT_MLORA : MML_VARIANT_MOE;
    o->n_hidden = 2;
    o->hidden = hidden;
    o->alpha = 2;
    o->batch_size = 64;
    o->max_epochs = 2;
    o->patience = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    world w;
    if (world_make(&w) != MML_OK) {
        world_free(&w);
        return 0;
    }
    mml_trainer_options o;
    options(&o, data[0] % 3);
    mml_trainer *t = NULL;
    if (mml_trainer_create(&t, w.ctx, &o, w.train, w.val) == MML_OK) {
        mml__rbuf r;
        mml__rbuf_init(&r, w.ctx, data + 1, size - 1, 0, "trainer state");
        int rc = mml__trainer_state_read(t, &r);
        if (rc < 0 && mml_ctx_last_error(w.ctx)[0] == '\0')
            __builtin_trap(); /* a failure always says why */
        if (rc == MML_OK) {
            rc = mml_trainer_run(t);
            if (rc < 0 && rc != MML_ENONFINITE && mml_ctx_last_error(w.ctx)[0] == '\0')
                __builtin_trap();
        }
    }
    mml_trainer_destroy(t);
    world_free(&w);
    return 0;
}

#ifdef MML_FUZZ_REPLAY
typedef struct seeds {
    mml_ctx *ctx;
    const char *dir;
    int variant, n, bad;
} seeds;

static int write_seed(void *user, mml_trainer *t, const mml_progress *where)
{
    (void)where;
    seeds *s = user;
    mml__wbuf w;
    mml__wbuf_init(&w, s->ctx);
    uint8_t v = (uint8_t)s->variant;
    mml__wbuf_bytes(&w, &v, 1);
    if (mml__trainer_state_write(t, &w) != MML_OK || mml__wbuf_status(&w) < 0) {
        s->bad = 1;
    } else {
        char path[4096];
        snprintf(path, sizeof path, "%s/state_v%d_%d", s->dir, s->variant, s->n++);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(w.data, 1, w.len, f) != w.len)
            s->bad = 1;
        if (f)
            fclose(f);
    }
    mml__wbuf_free(&w);
    return 0;
}

static int write_seeds(const char *dir)
{
    int bad = 0;
    for (int variant = 0; variant < 3; variant++) {
        world w;
        if (world_make(&w) != MML_OK)
            return 1;
        seeds s = {w.ctx, dir, variant, 0, 0};
        mml_trainer_options o;
        options(&o, variant);
        o.checkpoint = write_seed;
        o.checkpoint_user = &s;
        mml_trainer *t = NULL;
        if (mml_trainer_create(&t, w.ctx, &o, w.train, w.val) != MML_OK || mml_trainer_run(t) != MML_OK)
            bad = 1;
        bad |= s.bad;
        mml_trainer_destroy(t);
        world_free(&w);
    }
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
