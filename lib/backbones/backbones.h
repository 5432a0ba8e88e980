/* Private helpers shared by the built-in backbones.
 *
 * Every built-in backbone is a "deep base" (backbone_base.c): a DNN tower
 * with its adapters over an input row, and a bias-free head.w over
 * [side output, tower output]. What differs is a side part, described by an
 * mml__side: its options, the tower's input, its own parameters and their
 * forward and backward. MML__BACKBONE_TABLE makes its callback table. */
#ifndef MML_BACKBONES_H
#define MML_BACKBONES_H

#include <stddef.h>

#include "core/internal.h"
#include "moemlora/backbone.h"
#include "moemlora/tower.h"

/* Side parameters and head.w; dcn and autoint use the most (2 * 64 + 1, 4 * 32 + 1). */
#define MML__MAX_PARAMS 129
#define MML__PARAM_NAME_MAX 32

typedef struct mml__side mml__side;

/* The state every built-in backbone starts with; a side part that needs more
 * embeds it as its first member. */
typedef struct mml__deep {
    mml_ctx *ctx;
    const mml__side *side;
    const char *name; /* the type name, for messages */
    int32_t F, k, n_dense;
    int32_t width;     /* of the tower's input */
    int32_t head_side; /* rows of head.w before the tower's: they weigh z */
    mml_tower *tower;
    mml_lora *lora; /* NULL when E = 0 */
    /* After the tower's and the experts' parameters: the side part's, head.w last. */
    mml_param p[MML__MAX_PARAMS];
    char names[MML__MAX_PARAMS][MML__PARAM_NAME_MAX];
    int32_t np;
    float *x, *dh, *dx; /* tower input, d tower output, d tower input */
    size_t cap_x, cap_dh, cap_dx;
    const float *h; /* tower output of the last forward pass */
    const float *z; /* n x head_side side output of the last forward pass */
    int64_t n;      /* rows of the last forward pass; 0 without one */
    int32_t readonly; /* gradients freed (mml__deep_make_readonly) */
    int32_t replica;  /* a session's copy: parameters, experts, side tables shared */
} mml__deep;

/* A built-in's options: cfg->options copied over its defaults. */
typedef union mml__opts {
    mml_nfm_options nfm;
    mml_pnn_options pnn;
    mml_dcn_options dcn;
    mml_autoint_options autoint;
    mml_xdeepfm_options xdeepfm;
    mml_fibinet_options fibinet;
} mml__opts;

/* What makes a built-in backbone different. Hooks left NULL do nothing, or
 * what is said. */
struct mml__side {
    size_t size; /* of the backbone's struct: sizeof(mml__deep) or larger */
    /* The tower reads the side part's output, so its parameters' gradients
     * need the tower's input gradient. */
    int feeds_tower;
    /* Where the side part's forward and backward scratch starts in its
     * struct: it runs to the end of the struct, and a session's copy starts
     * with all of it zeroed (0: no scratch). */
    size_t scratch;
    /* Its options struct (MML__SIDE_OPTIONS; without, cfg->options is ignored). */
    const void *defaults;
    size_t opts_size;
    const uint32_t *opts_older;
    /* Checks the options; ctx may be NULL (no message). */
    int (*check)(mml_ctx *ctx, const mml_backbone_config *cfg, const mml__opts *opts);
    /* The tower's input width; NULL: F k + n_dense. */
    int32_t (*width)(const mml_backbone_config *cfg);
    /* Parameter values besides the tower, the experts and head.w's tower rows. */
    int64_t (*n_values)(const mml_backbone_config *cfg, const mml__opts *opts);
    /* After the tower: the side part's fields and parameters (mml__deep_add_param),
     * and head_side. */
    int (*create)(mml__deep *d, const mml_backbone_config *cfg, const mml__opts *opts);
    /* Frees what the side part allocated itself. */
    void (*destroy)(mml__deep *d);
    /* Fills x, runs the tower (mml__deep_tower_forward) and the side part, sets
     * z; NULL: mml__deep_flat_input, then the tower. */
    int (*forward)(mml__deep *d, const mml_backbone_input *in);
    /* Adds its own terms to the head's logits of the n rows. */
    void (*logit)(const mml__deep *d, float *logit);
    /* After the head and the tower: dx is the tower's input gradient, NULL
     * when nothing needs it. NULL: mml__deep_input_grad(d, g, dx, 1). */
    int (*backward)(mml__deep *d, const float *dlogit, const mml_backbone_grads *g, float *dx);
    /* Folds its own kinks of the last forward pass (there is one) into h. */
    uint64_t (*pattern)(const mml__deep *d, uint64_t h);
};

/* The options fields of an mml__side whose options struct is type. */
#define MML__SIDE_OPTIONS(type, defaults_)                                                         \
    .defaults = &(defaults_), .opts_size = sizeof(type), .opts_older = MML__OLDER_SIZES_##type

/* The table callbacks every built-in backbone shares (backbone_base.c). */
int mml__deep_infer_shape(const mml__side *side, const char *name, const mml_backbone_config *cfg,
                          int64_t *n_values);
int mml__deep_create(const mml__side *side, const char *name, mml_ctx *ctx,
                     const mml_backbone_config *cfg, void **self);
void mml__deep_destroy(void *self);
int mml__deep_forward(void *self, const mml_backbone_input *in, float *logit);
int mml__deep_backward(void *self, const float *dlogit, const mml_backbone_grads *g);
int64_t mml__deep_n_params(void *self);
mml_param *mml__deep_param(void *self, int64_t index);
mml_lora *mml__deep_experts(void *self);
uint64_t mml__deep_kink_pattern(void *self);
int mml__deep_set_dropout_replay(void *self, int32_t replay);
/* Frees the gradients of the tower, the experts and the side parameters, and
 * the backward scratch; backward then gives MML_ESTATE. */
void mml__deep_make_readonly(void *self);
/* A forward-only copy on ctx sharing self's weights (see mml__tower_replica). */
int mml__deep_replica(const void *self, mml_ctx *ctx, void **out);
/* A copy on ctx for a training thread: self's weights, its own gradients
 * (zero), parameter structs and scratch. */
int mml__deep_train_replica(const void *self, mml_ctx *ctx, void **out);

/* Defines mml__backbone_<id>, the table of type "<id>" with side part side:
 * infer_shape and create hand side to the shared ones (the user pointer of
 * a built-in is NULL), the other callbacks find it in the instance. */
#define MML__BACKBONE_TABLE(id, linear, side)                                                      \
    static int id##_table_infer_shape(void *user, mml_ctx *ctx, const mml_backbone_config *cfg,    \
                                      int64_t *n_values)                                           \
    {                                                                                              \
        (void)user;                                                                                \
        (void)ctx;                                                                                 \
        return mml__deep_infer_shape(&(side), #id, cfg, n_values);                                 \
    }                                                                                              \
    static int id##_table_create(void *user, mml_ctx *ctx, const mml_backbone_config *cfg,         \
                                 void **self)                                                      \
    {                                                                                              \
        (void)user;                                                                                \
        return mml__deep_create(&(side), #id, ctx, cfg, self);                                     \
    }                                                                                              \
    const mml_backbone_vtable mml__backbone_##id = {                                               \
        .struct_size = sizeof(mml_backbone_vtable), .abi_version = MML_BACKBONE_ABI_VERSION,       \
        .type_name = #id, .linear_term = (linear), .infer_shape = id##_table_infer_shape,          \
        .create = id##_table_create, .destroy = mml__deep_destroy,                                 \
        .forward = mml__deep_forward, .backward = mml__deep_backward,                              \
        .n_params = mml__deep_n_params, .param = mml__deep_param,                                  \
        .experts = mml__deep_experts, .kink_pattern = mml__deep_kink_pattern,                      \
        .set_dropout_replay = mml__deep_set_dropout_replay}

/* For the side parts. */

/* Appends a side parameter (see mml__side_param_init; the name is copied). */
int mml__deep_add_param(mml__deep *d, const char *name, int64_t rows, int64_t cols,
                        int64_t fan_in, int64_t fan_out, uint64_t stream);
/* x = [e_1 .. e_F, numeric] for the rows of in. */
int mml__deep_flat_input(mml__deep *d, const mml_backbone_input *in);
/* The tower (with its adapters) over x into h. */
int mml__deep_tower_forward(mml__deep *d, const mml_backbone_input *in);
/* Adds the numeric values' part of dx (its last n_dense columns) to
 * g->d_dense and, with emb, its first F k columns to g->d_emb. dx may be NULL. */
void mml__deep_input_grad(const mml__deep *d, const mml_backbone_grads *g, const float *dx,
                          int emb);

/* Read-only models: a built-in drops its gradients; a user backbone keeps them. */
void mml__backbone_make_readonly(mml_backbone *bb);
/* A forward-only copy on ctx for a session: a built-in shares bb's weights;
 * a user backbone gets a private instance from its create callback with cfg,
 * holding a copy of bb's parameter values. */
int mml__backbone_replica(const mml_backbone *bb, mml_ctx *ctx, const mml_backbone_config *cfg,
                          mml_backbone **out);
/* A training thread's copy of a built-in backbone (mml__deep_train_replica);
 * MML_EUNSUPPORTED for a user backbone. */
int mml__backbone_train_replica(const mml_backbone *bb, mml_ctx *ctx, mml_backbone **out);

/* Common checks of a backbone configuration. */
int mml__check_backbone_config(mml_ctx *ctx, const mml_backbone_config *cfg, const char *name);

extern const mml_backbone_vtable mml__backbone_mlp;
extern const mml_backbone_vtable mml__backbone_wdl;
extern const mml_backbone_vtable mml__backbone_deepfm;
extern const mml_backbone_vtable mml__backbone_nfm;
extern const mml_backbone_vtable mml__backbone_pnn;
extern const mml_backbone_vtable mml__backbone_dcn;
extern const mml_backbone_vtable mml__backbone_autoint;
extern const mml_backbone_vtable mml__backbone_xdeepfm;
extern const mml_backbone_vtable mml__backbone_fibinet;

/* Helpers for the side parts (backbone_side.c). */

/* A backbone parameter of rows x cols (MML_GROUP_BACKBONE, zero gradient).
 * fan_in > 0: every value glorot-uniform with limit sqrt(6 / (fan_in + fan_out))
 * (a stack of equally shaped matrices takes one matrix's fans), drawn from
 * stream MML_STREAM_BACKBONE + stream; fan_in == 0: zeros. */
int mml__side_param_init(mml_ctx *ctx, mml_param *p, const char *name, int64_t rows, int64_t cols,
                         int64_t fan_in, int64_t fan_out, uint64_t stream);
void mml__side_param_free(mml_ctx *ctx, mml_param *p);
/* Frees n scratch buffers of caps[i] floats. */
void mml__free_floats(mml_ctx *ctx, float *const *bufs, const size_t *caps, size_t n);
/* Folds the on/off bits (v[i] > 0) of n values into the fingerprint h. */
uint64_t mml__pattern_fold(uint64_t h, const float *v, int64_t n);
/* Whether any of the n parameters is unfrozen. */
int mml__any_unfrozen(const mml_param *p, int64_t n);
/* The F (F - 1) / 2 field pairs (i, j), i < j. */
static inline int32_t mml__n_pairs(int32_t F) { return F * (F - 1) / 2; }

/* A built-in backbone's dropout stream (its tower's); NULL for a registered
 * one, whose randomness is its own. */
mml_rng *mml__backbone_dropout_rng(mml_backbone *bb);

#endif
