/* A small synthetic data set and tiny trainer options, shared by the
 * trainer suites. */
#ifndef MML_TRAINER_WORLD_H
#define MML_TRAINER_WORLD_H

#include "testutil.h"

static const int32_t hidden[2] = {16, 8};

typedef struct world {
    mml_ctx *ctx;
    mml_dataset *train, *val, *test;
} world;

static inline void world_init_sized(world *w, uint64_t seed, int64_t n_rows, int32_t n_users,
                                    int32_t n_items)
{
    w->ctx = plain_ctx(1, seed);
    mml_synthetic_options so;
    mml_synthetic_options_init(&so);
    so.n_rows = n_rows;
    so.n_domains = 3;
    so.n_users = n_users;
    so.n_items = n_items;
    so.seed = 5;
    ck_assert_int_eq(mml_synthetic_generate(w->ctx, &so, &w->train, &w->val, &w->test), MML_OK);
}

static inline void world_free(world *w)
{
    mml_dataset_destroy(w->train);
    mml_dataset_destroy(w->val);
    mml_dataset_destroy(w->test);
    mml_ctx_destroy(w->ctx);
}

/* Dropout stays at its default 0.5. */
static inline void tiny_options(mml_trainer_options *o, int32_t variant)
{
    mml_trainer_options_init(o);
    o->variant = variant;
    o->n_hidden = 2;
    o->hidden = hidden;
    o->alpha = 4;
    o->batch_size = 256;
    o->max_epochs = 3;
    o->lr = 3e-3f;
}

static inline mml_trainer *make_trainer(world *w, const mml_trainer_options *o)
{
    mml_trainer *t = NULL;
    int rc = mml_trainer_create(&t, w->ctx, o, w->train, w->val);
    ck_assert_msg(rc == MML_OK, "trainer_create: %s", mml_ctx_last_error(w->ctx));
    return t;
}

/* A copy of every parameter value of the model. */
typedef struct snap {
    int64_t n;
    float **v;
} snap;

static inline snap take(mml_model *m)
{
    snap s = {mml_model_n_params(m), NULL};
    s.v = malloc(sizeof(float *) * (size_t)s.n);
    for (int64_t i = 0; i < s.n; i++) {
        mml_param *p = mml_model_param(m, i);
        s.v[i] = malloc(sizeof(float) * (size_t)mml_param_size(p));
        memcpy(s.v[i], p->value, sizeof(float) * (size_t)mml_param_size(p));
    }
    return s;
}

static inline int same(const snap *s, mml_model *m, int64_t i)
{
    mml_param *p = mml_model_param(m, i);
    return memcmp(s->v[i], p->value, sizeof(float) * (size_t)mml_param_size(p)) == 0;
}

static inline void drop(snap *s)
{
    for (int64_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

/* Names the first parameter that differs bitwise from the snapshot, or NULL. */
static inline const char *first_difference(mml_model *m, const snap *s)
{
    for (int64_t i = 0; i < s->n; i++)
        if (!same(s, m, i))
            return mml_model_param(m, i)->name;
    return NULL;
}

#endif
