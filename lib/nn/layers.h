/* Private interfaces between the layer implementations. */
#ifndef MML_LAYERS_H
#define MML_LAYERS_H

#include "core/internal.h"
#include "moemlora/embedding.h"
#include "moemlora/gate.h"
#include "moemlora/lora.h"
#include "moemlora/tower.h"

/* A mixture resolved for one batch: experts [first, first + n_active) with
 * weights g (n x n_active, row-major); g == NULL means weight 1 (one expert). */
typedef struct mml__mixing {
    int32_t first;
    int32_t n_active;
    const float *g;
    /* Per-row routing (MML_MIX_DOMAIN): rows sorted by expert, so each
     * expert multiplies only its own rows; g is NULL then. */
    const struct mml__routing *route;
} mml__mixing;

/* Scratch of the routed path, owned by the tower: perm lists the rows of
 * expert e at perm[offs[e] .. offs[e + 1]) (the order the tower keeps its
 * rows in); out holds the tower's output back in the caller's order. */
typedef struct mml__routing {
    int32_t *perm;
    int64_t *offs;
    float *out;
} mml__routing;

/* Validates mix for n rows against lora and resolves it; routing has room for
 * n rows and n_experts + 1 offsets (used by MML_MIX_DOMAIN). Sets *active to 0
 * for MML_MIX_NONE. */
int mml__lora_resolve(const mml_lora *lora, mml_ctx *ctx, const mml_mix *mix, int64_t n,
                      mml__routing *routing, mml__mixing *out, int *active);
/* Widest stacked adapter of any layer: n_experts * max rank. */
int64_t mml__lora_max_cols(const mml_lora *lora);
/* Whether any parameter of experts [first, first + n) is unfrozen. */
/* Layer `layer`'s rank and its stacked A_t, B and c from expert `first` on. */
void mml__lora_layer_ptrs(const mml_lora *lora, int32_t layer, int32_t first, int32_t *rank,
                          const float **At, const float **B, const float **C);
int mml__lora_trainable(const mml_lora *lora, int32_t first, int32_t n);
/* Checks that lora was built for these tower widths. */
int mml__lora_matches(const mml_lora *lora, mml_ctx *ctx, int32_t n_layers, const int32_t *dims);


/* Per-domain routing with the rows already sorted by expert (expert e owns
 * rows [offs[e], offs[e + 1]) of x, y, U, dA and dx), so no row moves:
 * y += X_e A_e B_e + c_e; backward writes dx (every row) when not NULL and
 * accumulates parameter gradients when param_grads. U and dU hold n x r. */
int mml__lora_sorted_forward(const mml_lora *lora, mml_ctx *ctx, int32_t layer, const float *x,
                             const int64_t *offs, float *U, float *y);
int mml__lora_sorted_backward(mml_lora *lora, mml_ctx *ctx, int32_t layer, const float *x,
                              const int64_t *offs, const float *U, const float *dA,
                              int param_grads, float *dx, float *dU);

/* The first half of mml__lora_layer_backward() for a mixture without
 * routing: the gradients of c and B (param_grads), dG, and dU (n x n_active r,
 * row stride ldu), the gradient of U already scaled by the gate weights; the
 * caller finishes with A_t's gradient (dU^T x) and dx (dU A_t). */
int mml__lora_layer_backward_du(mml_lora *lora, mml_ctx *ctx, int32_t layer, int64_t n,
                                const mml__mixing *mix, const float *U, const float *Us,
                                const float *dA, int param_grads, float *dG, float *dU,
                                int64_t ldu);
/* The gradient block of layer's stacked A_t from expert first on. */
float *mml__lora_layer_grad_At(mml_lora *lora, int32_t layer, int32_t first);

/* Read-only models: free the gradient buffers (the params' grad becomes NULL). */
void mml__lora_drop_grads(mml_lora *lora);
int mml__lora_has_grads(const mml_lora *lora);
void mml__tower_drop_grads(mml_tower *t);
void mml__embedding_drop_grad(mml_embedding *e);
/* Allocates (the gate keeps values and gradients in one block): MML_ENOMEM
 * leaves the gate as it was. */
int mml__gate_drop_grads(mml_gate *g);
/* Forward-only copies for sessions: the weights are the original's (which
 * must outlive the copy), the scratch is the copy's own, allocated from ctx. */
int mml__tower_replica(const mml_tower *t, mml_ctx *ctx, mml_tower **out);
int mml__gate_replica(const mml_gate *g, mml_ctx *ctx, mml_gate **out);
/* Since 1.3, a gate with row inputs (mml_gate_options.input_dim > 0):
 * weights per row from the domain and x (n x input_dim, row stride ldx;
 * borrowed until the backward pass). The backward pass adds the gradients
 * of the unfrozen gate parameters and, when dx is not NULL, += dL/dx into
 * dx (row stride lddx). */
int32_t mml__gate_input_dim(const mml_gate *g);
int mml__gate_forward_rows(mml_gate *g, const int32_t *domain, const float *x, int64_t ldx,
                           int64_t n, const float **weights);
int mml__gate_backward_rows(mml_gate *g, const float *dweights, float *dx, int64_t lddx);
/* Copies for a training thread: the weights are the original's, the
 * parameter structs (frozen flags included), gradients and scratch the copy's
 * own; the owner syncs the flags and sums the gradients. */
int mml__tower_train_replica(const mml_tower *t, mml_ctx *ctx, mml_tower **out);
int mml__lora_train_replica(const mml_lora *l, mml_ctx *ctx, mml_lora **out);

/* The gate's D x E expert mask (nonzero: domain d may use expert e), copied;
 * NULL removes it (every domain uses every expert). A masked expert gets
 * weight exactly 0 and takes no part in its domain's softmax. MML_EINVAL
 * for a domain left without experts, MML_ENOMEM. */
int mml__gate_set_mask(mml_gate *g, const uint8_t *mask);
/* The mask, or NULL when every domain uses every expert. */
const uint8_t *mml__gate_mask(const mml_gate *g);

/* Glorot-uniform fill of a fan_in x fan_out matrix. */
void mml__glorot_uniform(mml_rng *rng, float *w, int64_t fan_in, int64_t fan_out);

/* The tower's dropout stream, for the trainer's checkpoints (its position is
 * part of a run's state). */
struct mml_tower;
mml_rng *mml__tower_dropout_rng(struct mml_tower *t);

#endif
