/* libmoemlora: the MoE gate.
 *
 *     g(d) = softmax( W_g e_d + b_g )   in R^E
 *
 * e_d is a learned embedding of the domain id (dimension 4 by default,
 * U(-0.05, 0.05) init), W_g glorot-uniform, b_g zeros. Since the gate sees
 * only the domain, it is a learned D x E table of mixture weights; the
 * forward pass computes that table once per batch and hands each row its
 * domain's weights. Dense softmax over all experts by default.
 *
 * Top-k (option top_k = k with 1 <= k < E): each domain's row keeps its k
 * largest weights and renormalises them to sum to 1; the other experts get
 * exactly 0. Experts are ranked by their logit z_e = (e_d W + b)_e, which
 * orders them exactly as the dense softmax weights do; among equal logits
 * the lower expert index wins (deterministic). The kept weights are
 *     w_i = p_i / sum_{j in K} p_j = exp(z_i) / sum_{j in K} exp(z_j)   (i in K)
 * with p the dense softmax and K the kept set, and the backward pass is the
 * gradient of exactly that function: only the kept experts' logits receive
 * gradient, the selection itself is treated as a constant (a kink, reported
 * by mml_gate_kink_pattern). top_k = 0 (default) or top_k >= E is the dense
 * softmax.
 */
#ifndef MOEMLORA_GATE_H
#define MOEMLORA_GATE_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

typedef struct mml_gate mml_gate;

typedef struct mml_gate_options {
    uint32_t struct_size;
    int32_t n_domains; /* >= 1 */
    int32_t n_experts; /* >= 1 */
    int32_t embed_dim; /* default 4 */
    uint64_t stream;   /* random stream for the init */
    int32_t top_k;     /* 0 (default): dense softmax; k >= 1: keep the k largest (see above) */
    int32_t reserved;  /* 0 */
} mml_gate_options;

MML_BEGIN_DECLS

MML_API int mml_gate_options_init_sized(mml_gate_options *opt, uint32_t struct_size);
#define mml_gate_options_init(opt) mml_gate_options_init_sized((opt), (uint32_t)sizeof(mml_gate_options))
MML_API int mml_gate_create(mml_gate **out, mml_ctx *ctx, const mml_gate_options *opt);
MML_API void mml_gate_destroy(mml_gate *gate);

/* *weights receives n x n_experts mixture weights (each row sums to 1), owned
 * by the gate until the next forward pass. */
MML_API int mml_gate_forward(mml_gate *gate, const int32_t *domain, int64_t n,
                             const float **weights);
/* Accumulates parameter gradients from dweights (n x n_experts) of the last forward. */
MML_API int mml_gate_backward(mml_gate *gate, const float *dweights);
/* The current D x E table of mixture weights (after top-k, if set), row-major, into out. */
MML_API int mml_gate_table(const mml_gate *gate, float *out);
/* Fingerprint of the top-k selections (the kept set of every domain) made
 * by the last forward pass, for finite-difference checks; 0 for a dense
 * gate, a NULL gate or before any forward pass. */
MML_API uint64_t mml_gate_kink_pattern(const mml_gate *gate);
/* The top_k in effect: 0 for a dense gate (also when top_k >= E was asked) and for NULL. */
MML_API int32_t mml_gate_top_k(const mml_gate *gate);

MML_API int32_t mml_gate_n_domains(const mml_gate *gate);
MML_API int32_t mml_gate_n_experts(const mml_gate *gate);
/* Parameters: embedding (D x k), W (k x E), b (1 x E). */
MML_API int64_t mml_gate_n_params(const mml_gate *gate);
MML_API mml_param *mml_gate_param(mml_gate *gate, int64_t index);

MML_END_DECLS

#endif
