/* libmoemlora: backbones, built-in and the user's own.
 *
 * A backbone turns a batch's field embeddings (and numeric values) into one
 * logit per row. Its DNN tower carries the adapters, so every backbone works
 * with every adapter mode (none, per-domain MLoRA, gated MoE-MLoRA, one
 * expert). The model adds the one global bias and, when the backbone asks
 * for it, the first-order linear term; a backbone's own logit has no bias.
 *
 * A backbone is a versioned table of callbacks plus a `self` pointer. The
 * built-in ones (mlp, wdl, deepfm, ...) use this same table. A user registers
 * their own table by type name in a context (mml_backbone_register); models
 * then refer to it by that name.
 *
 * Callback rules: return 0 or a negative MML_E* code (a failure surfaces as
 * MML_ECALLBACK from the library call, with the code in the message);
 * backward accumulates (+=) into parameter gradients and into the gradient
 * buffers it is given, any of which may be NULL when nobody needs them; a
 * backward call follows the forward call of the same batch.
 */
#ifndef MOEMLORA_BACKBONE_H
#define MOEMLORA_BACKBONE_H

#include <stddef.h>
#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "lora.h"
#include "param.h"

#define MML_BACKBONE_ABI_VERSION 1u

/* Shape and hyper-parameters every backbone receives. */
typedef struct mml_backbone_config {
    uint32_t struct_size;
    int32_t n_fields;      /* F categorical fields */
    int32_t embed_dim;     /* k */
    int32_t n_dense;       /* numeric values per row */
    int32_t n_domains;     /* D */
    int32_t n_experts;     /* E; 0 = no adapters */
    int32_t alpha;         /* adapter rank divisor (rank = max(floor(width / alpha), 1)) */
    int32_t n_hidden;      /* DNN tower depth */
    const int32_t *hidden; /* DNN tower widths */
    float dropout;         /* DNN tower dropout */
    int32_t reserved;      /* 0 */
    uint64_t stream;       /* random stream base for the backbone's init */
    const void *options;   /* the backbone's own options struct, or NULL for its defaults */
} mml_backbone_config;

/* A forward pass's input. The library passes its own sizeof in struct_size;
 * a callback reads a field only when struct_size covers it. */
typedef struct mml_backbone_input {
    uint32_t struct_size; /* sizeof(mml_backbone_input) of the caller */
    int32_t training;     /* dropout on */
    int64_t n_rows;
    const float *emb;   /* n_rows x (F * k): field f of row r starts at emb[(r * F + f) * k] */
    const float *dense; /* n_rows x n_dense, or NULL when n_dense is 0 */
    const mml_mix *mix; /* how the tower's adapters enter; never NULL */
} mml_backbone_input;

/* Where backward accumulates the input gradients (struct_size as above). */
typedef struct mml_backbone_grads {
    uint32_t struct_size; /* sizeof(mml_backbone_grads) of the caller */
    uint32_t reserved;    /* 0 */
    float *d_emb;     /* n_rows x (F * k), or NULL */
    float *d_dense;   /* n_rows x n_dense, or NULL */
    float *d_weights; /* n_rows x E gradients of the gate weights (MML_MIX_GATED), or NULL */
} mml_backbone_grads;

typedef int (*mml_write_fn)(void *user, const void *data, size_t size);
typedef int (*mml_read_fn)(void *user, void *data, size_t size);

typedef struct mml_backbone_vtable {
    uint32_t struct_size;  /* sizeof(mml_backbone_vtable) */
    uint32_t abi_version;  /* MML_BACKBONE_ABI_VERSION */
    const char *type_name; /* [a-z0-9_]+, at most 31 characters */
    int32_t linear_term;   /* nonzero: the model adds sum_f w_f[id_f] + numeric weights */
    int32_t reserved;
    /* Checks cfg and reports how many floats of parameters the backbone would
     * have. user is the pointer given to mml_backbone_register(). */
    int (*infer_shape)(void *user, mml_ctx *ctx, const mml_backbone_config *cfg,
                       int64_t *n_values);
    /* Makes an instance in *self; keep ctx (for mml_ctx_alloc, mml_ctx_free
     * and mml_ctx_set_error) and user in it if the other callbacks need them. */
    int (*create)(void *user, mml_ctx *ctx, const mml_backbone_config *cfg, void **self);
    void (*destroy)(void *self);
    /* logit[r] = the backbone's logit of row r, written, not accumulated. */
    int (*forward)(void *self, const mml_backbone_input *in, float *logit);
    int (*backward)(void *self, const float *dlogit, const mml_backbone_grads *grads);
    int64_t (*n_params)(void *self);
    mml_param *(*param)(void *self, int64_t index);
    /* Optional (may be NULL): */
    mml_lora *(*experts)(void *self);                      /* the tower's adapters */
    uint64_t (*kink_pattern)(void *self);                  /* for gradient checks */
    int (*set_dropout_replay)(void *self, int32_t replay); /* for gradient checks */
    int (*save)(void *self, mml_write_fn write, void *user); /* state beyond the parameters */
    int (*load)(void *self, mml_read_fn read, void *user);
} mml_backbone_vtable;

typedef struct mml_backbone mml_backbone;

MML_BEGIN_DECLS

MML_API int mml_backbone_config_init_sized(mml_backbone_config *cfg, uint32_t struct_size);
#define mml_backbone_config_init(cfg) mml_backbone_config_init_sized((cfg), (uint32_t)sizeof(mml_backbone_config))
/* Copies the table into ctx's registry. MML_EEXIST if the name is taken
 * (built-in names included), MML_EVERSION for another ABI version. */
MML_API int mml_backbone_register(mml_ctx *ctx, const mml_backbone_vtable *vtable, void *user);
/* Whether type_name is known to ctx (built-in or registered). */
MML_API int mml_backbone_known(const mml_ctx *ctx, const char *type_name);
/* Built-in type names: "mlp", "wdl", "deepfm", ...; index from 0; NULL past the end. */
MML_API const char *mml_backbone_builtin_name(int32_t index);

MML_API int mml_backbone_create(mml_backbone **out, mml_ctx *ctx, const char *type_name,
                                const mml_backbone_config *cfg);
MML_API void mml_backbone_destroy(mml_backbone *bb);
MML_API int mml_backbone_forward(mml_backbone *bb, const mml_backbone_input *in, float *logit);
MML_API int mml_backbone_backward(mml_backbone *bb, const float *dlogit,
                                  const mml_backbone_grads *grads);
MML_API int64_t mml_backbone_n_params(mml_backbone *bb);
MML_API mml_param *mml_backbone_param(mml_backbone *bb, int64_t index);
MML_API mml_lora *mml_backbone_experts(mml_backbone *bb);
MML_API int32_t mml_backbone_linear_term(const mml_backbone *bb);
MML_API const char *mml_backbone_type_name(const mml_backbone *bb);

MML_END_DECLS

#endif
