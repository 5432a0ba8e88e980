/**
 * @file
 * @brief The MoE gate.
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
 *
 * Thread safety: one thread at a time per context and the objects made from it.
 */
#ifndef MOEMLORA_GATE_H
#define MOEMLORA_GATE_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "param.h"

/** An MoE gate (opaque): a learned D x E table of mixture weights. */
typedef struct mml_gate mml_gate;

/** What mml_gate_create() builds. Initialise with mml_gate_options_init(). */
typedef struct mml_gate_options {
    /** Set by mml_gate_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** D, 1..2^20 (no default). */
    int32_t n_domains;
    /** E, 1..4096 (no default). */
    int32_t n_experts;
    /** Width of the domain embedding, 1..4096; default 4. */
    int32_t embed_dim;
    /** Random stream for the init; default 0. */
    uint64_t stream;
    /** 0 (default): dense softmax; k >= 1: keep the k largest (see the file
     *  description; k >= E is dense). */
    int32_t top_k;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** Since 1.3: nonzero adds a D x E table T of per-domain logits,
     *  "gate.domain_bias" (after gate.b): z = e_d W + b + T[d] (+ x V).
     *  Default 0. */
    int32_t domain_bias;
    /** Since 1.3: with domain_bias, T starts at prior on each domain's own
     *  experts (e mod D == d) and 0 elsewhere: a gate that starts toward the
     *  own experts (weight about e^prior / (e^prior + E - 1) with one
     *  expert per domain). Finite, >= 0; default 0. */
    float prior;
    /** Since 1.3: 0 (default): the gate sees the domain only. n > 0: every
     *  row also brings n input values x (the model passes its concatenated
     *  field embeddings), and z gains x V with V an n x E matrix, "gate.V"
     *  (last, zeros at the start, so the gate starts as the domain-only one).
     *  Then the weights are per row rather than a D x E table: the model
     *  runs it; mml_gate_forward() refuses it (MML_ESTATE), mml_gate_table()
     *  gives the weights at x = 0. Needs a dense gate (top_k 0). */
    int32_t input_dim;
    /** Since 1.3: 0; reserved for later releases. */
    int32_t reserved1;
} mml_gate_options;

MML_BEGIN_DECLS

/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_gate_options_init_sized(mml_gate_options *opt, uint32_t struct_size);
/** mml_gate_options_init_sized() with the caller's sizeof, so a newer library
 *  never writes past an older application's struct.
 *  @param opt the struct to fill. */
#define mml_gate_options_init(opt) mml_gate_options_init_sized((opt), (uint32_t)sizeof(mml_gate_options))
/** Creates a gate. opt is read during the call only; NULL means the defaults,
 *  which leave n_domains and n_experts unset, so it gives MML_EINVAL. On
 *  failure *out is NULL.
 *  @param out receives the gate, owned by the caller (mml_gate_destroy()).
 *  @param ctx the context; it must outlive the gate.
 *  @param opt the options, or NULL for the defaults.
 *  @return MML_OK; MML_EINVAL for a NULL argument or an invalid option;
 *  MML_EVERSION for a struct_size of opt that no release produced; MML_ENOMEM. */
MML_API int mml_gate_create(mml_gate **out, mml_ctx *ctx, const mml_gate_options *opt);
/** Destroys the gate; NULL is a no-op.
 *  @param gate the gate, or NULL. */
MML_API void mml_gate_destroy(mml_gate *gate);

/** *weights receives n x n_experts mixture weights (each row sums to 1), owned
 * by the gate until the next forward pass (or its destruction). The domains
 * are copied for the backward pass. On failure *weights is left unchanged.
 * @param gate the gate. @param domain n domain ids, each in [0, D).
 * @param n rows, >= 1. @param weights receives the borrowed weights.
 * @return MML_OK; MML_EINVAL for a NULL argument; MML_ESHAPE for n < 1;
 * MML_ERANGE for a domain out of range; MML_ENOMEM. */
MML_API int mml_gate_forward(mml_gate *gate, const int32_t *domain, int64_t n,
                             const float **weights);
/** Accumulates (+=) the gradients of the unfrozen gate parameters from
 * dweights (n x n_experts, n of the last forward pass).
 * @param gate the gate. @param dweights gradients of the weights.
 * @return MML_OK; MML_EINVAL for a NULL argument; MML_ESTATE without a
 * forward pass. */
MML_API int mml_gate_backward(mml_gate *gate, const float *dweights);
/** The current D x E table of mixture weights (after top-k, if set),
 * row-major, into out, computed from the current parameters.
 * @param gate the gate. @param out D * E floats.
 * @return MML_OK; MML_EINVAL for a NULL argument. */
MML_API int mml_gate_table(const mml_gate *gate, float *out);
/** Fingerprint of the top-k selections (the kept set of every domain) made
 * by the last forward pass, for finite-difference checks.
 * @param gate the gate.
 * @return the fingerprint; 0 for a dense gate, a NULL gate or before any
 * forward pass. */
MML_API uint64_t mml_gate_kink_pattern(const mml_gate *gate);
/** The top_k in effect.
 * @param gate the gate.
 * @return k; 0 for a dense gate (also when top_k >= E was asked) and for NULL. */
MML_API int32_t mml_gate_top_k(const mml_gate *gate);

/** D, the number of domains.
 *  @param gate the gate. @return D; 0 for NULL. */
MML_API int32_t mml_gate_n_domains(const mml_gate *gate);
/** E, the number of experts.
 *  @param gate the gate. @return E; 0 for NULL. */
MML_API int32_t mml_gate_n_experts(const mml_gate *gate);
/** Number of parameters: embedding (D x k, "gate.embedding"), W (k x E,
 *  "gate.W"), b (1 x E, "gate.b"), in that order, all MML_GROUP_GATE;
 *  since 1.3 then "gate.domain_bias" (D x E) with domain_bias and "gate.V"
 *  (input_dim x E) with input_dim > 0.
 *  @param gate the gate. @return 3 to 5; 0 for NULL. */
MML_API int64_t mml_gate_n_params(const mml_gate *gate);
/** Parameter index (0 embedding, 1 W, 2 b, then the 1.3 parameters).
 *  @param gate the gate. @param index 0 .. mml_gate_n_params() - 1.
 *  @return a borrowed pointer, valid until the gate is destroyed; NULL for
 *  NULL or an index out of range. */
MML_API mml_param *mml_gate_param(mml_gate *gate, int64_t index);

MML_END_DECLS

#endif
