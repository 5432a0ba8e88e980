/**
 * @file
 * @brief Backbones, built-in and the user's own.
 *
 * A backbone turns a batch's field embeddings (and numeric values) into one
 * logit per row. Its DNN tower carries the adapters, so every backbone works
 * with every adapter mode (none, per-domain MLoRA, gated MoE-MLoRA, one
 * expert). The model adds the one global bias and, when the backbone asks
 * for it, the first-order linear term; a backbone's own logit has no bias.
 *
 * A backbone is a versioned table of callbacks (mml_backbone_vtable) plus a
 * `self` pointer. The built-in ones (mlp, wdl, deepfm, ...; see backbones.h)
 * use this same table. A user registers their own table by type name in a
 * context (mml_backbone_register()); models then refer to it by that name.
 *
 * Plug-in rules:
 * - The table carries its own `struct_size` and MML_BACKBONE_ABI_VERSION. It
 *   is accepted at any size a release produced; callbacks that a later
 *   release appended, beyond the table's struct_size, count as absent (NULL).
 * - The `user` pointer given to mml_backbone_register() reaches infer_shape
 *   and create; keep it in the instance if the other callbacks need it.
 * - Allocate with mml_ctx_alloc() / mml_ctx_free() on the context that create
 *   receives (keep it in the instance), and report errors with
 *   mml_ctx_set_error(), which returns the code to pass back.
 * - Callbacks return 0 or a negative MML_E* code. A failure surfaces as
 *   MML_ECALLBACK from the library call; its message then names the
 *   backbone, the callback and the code, followed by what the plug-in said
 *   with mml_ctx_set_error() during that call. A positive return is an error
 *   too.
 * - backward accumulates (+=) into parameter gradients and into the gradient
 *   buffers it is given, any of which may be NULL when nobody needs them; a
 *   backward call follows the forward call of the same batch.
 *
 * Thread safety: a backbone belongs to the context it was created with; one
 * thread at a time per context and the objects made from it.
 */
#ifndef MOEMLORA_BACKBONE_H
#define MOEMLORA_BACKBONE_H

#include <stddef.h>
#include <stdint.h>

#include "ctx.h"
#include "export.h"
#include "lora.h"
#include "param.h"

/** Version of the callback table (mml_backbone_vtable::abi_version) this
 *  library takes; a table of another version is refused with MML_EVERSION. */
#define MML_BACKBONE_ABI_VERSION 1u

/** Shape and hyper-parameters every backbone receives. Initialise with
 *  mml_backbone_config_init() before setting fields. */
typedef struct mml_backbone_config {
    /** Set by mml_backbone_config_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** F categorical fields (the model passes F + M with M multi-hot fields),
     *  1..4096; default 0, so it must be set. */
    int32_t n_fields;
    /** k, the embedding width, 1..4096; default 8. */
    int32_t embed_dim;
    /** Numeric values per row, 0..65536; default 0. */
    int32_t n_dense;
    /** D domains, >= 1; default 1. */
    int32_t n_domains;
    /** E experts, 0..4096; 0 = no adapters (the default). */
    int32_t n_experts;
    /** Adapter rank divisor, >= 1; default 16: rank = max(floor(width / alpha), 1),
     *  capped at the layer's smaller width. Not LoRA's alpha scale (there is no
     *  alpha / r factor). */
    int32_t alpha;
    /** DNN tower depth, 1..64; default 3. */
    int32_t n_hidden;
    /** DNN tower widths (n_hidden entries, each 1..2^20); default 256, 128, 64.
     *  Read during mml_backbone_create(); need not outlive it. */
    const int32_t *hidden;
    /** DNN tower dropout, in [0, 1); default 0.5. */
    float dropout;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** Random stream base for the backbone's init (and its dropout); default 0. */
    uint64_t stream;
    /** The backbone's own options struct (backbones.h), or NULL for its
     *  defaults. It must be the options type of the backbone being created;
     *  read during mml_backbone_create(), need not outlive it. */
    const void *options;
} mml_backbone_config;

/** A forward pass's input. The library passes its own sizeof in struct_size;
 *  a callback reads a field only when struct_size covers it. Everything it
 *  points to is valid only during the forward call. */
typedef struct mml_backbone_input {
    /** sizeof(mml_backbone_input) of the caller. */
    uint32_t struct_size;
    /** Nonzero in training: dropout on. */
    int32_t training;
    /** Rows of the batch, >= 1. */
    int64_t n_rows;
    /** n_rows x (F * k): field f of row r starts at emb[(r * F + f) * k]. */
    const float *emb;
    /** n_rows x n_dense, or NULL when n_dense is 0. */
    const float *dense;
    /** How the tower's adapters enter; never NULL. */
    const mml_mix *mix;
} mml_backbone_input;

/** Where backward accumulates the input gradients (struct_size as in
 *  mml_backbone_input). The buffers belong to the caller. */
typedef struct mml_backbone_grads {
    /** sizeof(mml_backbone_grads) of the caller. */
    uint32_t struct_size;
    /** 0; reserved for later releases. */
    uint32_t reserved;
    /** n_rows x (F * k), or NULL. */
    float *d_emb;
    /** n_rows x n_dense, or NULL. */
    float *d_dense;
    /** n_rows x E gradients of the gate weights (MML_MIX_GATED), or NULL. */
    float *d_weights;
} mml_backbone_grads;

/** Writes size bytes of data to the sink of a save callback.
 *  @param user the pointer given along with the callback.
 *  @param data the bytes to write. @param size their count.
 *  @return 0, or a negative MML_E* code. */
typedef int (*mml_write_fn)(void *user, const void *data, size_t size);
/** Reads exactly size bytes into data for a load callback.
 *  @param user the pointer given along with the callback.
 *  @param data where the bytes go. @param size their count.
 *  @return 0, or a negative MML_E* code. */
typedef int (*mml_read_fn)(void *user, void *data, size_t size);

/** The callback table of a backbone type (see the plug-in rules in the file
 *  description). The library copies it at registration. Required callbacks:
 *  create, destroy, forward, backward, n_params, param; the others may be NULL. */
typedef struct mml_backbone_vtable {
    /** sizeof(mml_backbone_vtable) of the release the plug-in was built against. */
    uint32_t struct_size;
    /** MML_BACKBONE_ABI_VERSION. */
    uint32_t abi_version;
    /** The type name: [a-z0-9_]+, at most 31 characters, not a built-in name;
     *  copied at registration. */
    const char *type_name;
    /** Nonzero: the model adds sum_f w_f[id_f] + numeric weights to the logit. */
    int32_t linear_term;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** Optional (may be NULL). Called by mml_backbone_create() before create,
     *  with cfg already checked: checks cfg further and stores in *n_values how
     *  many floats of parameters the backbone would have. A negative return
     *  makes the creation fail. user is the pointer given to
     *  mml_backbone_register(); cfg and its arrays are valid during the call. */
    int (*infer_shape)(void *user, mml_ctx *ctx, const mml_backbone_config *cfg,
                       int64_t *n_values);
    /** Required. Called by mml_backbone_create(): makes an instance in *self;
     *  keep ctx (for mml_ctx_alloc(), mml_ctx_free() and mml_ctx_set_error())
     *  and user in it if the other callbacks need them; copy from cfg what is
     *  needed later (cfg, cfg->hidden and cfg->options are valid during the call
     *  only). On failure it must release what it allocated: destroy is not
     *  called. Its parameters (n_params, param) must be ready on return. */
    int (*create)(void *user, mml_ctx *ctx, const mml_backbone_config *cfg, void **self);
    /** Required. Called by mml_backbone_destroy() (and when a creation fails
     *  after create succeeded): releases the instance and everything it owns. */
    void (*destroy)(void *self);
    /** Required. Called by mml_backbone_forward() after its checks: writes
     *  logit[r], the backbone's logit of row r < in->n_rows (written, not
     *  accumulated; each must be finite), and keeps in its own buffers what
     *  backward needs. */
    int (*forward)(void *self, const mml_backbone_input *in, float *logit);
    /** Required. Called by mml_backbone_backward() after the forward pass of
     *  the same batch: dlogit holds n_rows gradients of the logits. Adds (+=)
     *  to the gradients of its parameters (it may skip frozen ones) and to
     *  grads' non-NULL buffers. Return MML_ESTATE without a forward pass. */
    int (*backward)(void *self, const float *dlogit, const mml_backbone_grads *grads);
    /** Required. The number of parameters, 0..2^20, fixed for the instance's
     *  lifetime. */
    int64_t (*n_params)(void *self);
    /** Required. Parameter index (called with 0 <= index < n_params only): an
     *  mml_param owned by the instance, at a fixed address, with a name, value
     *  and grad buffers and rows, cols >= 1, valid until destroy (the built-in
     *  backbones list the tower's, the experts', then their own). */
    mml_param *(*param)(void *self, int64_t index);
    /** Optional (may be NULL): the tower's adapters (an mml_lora owned by the
     *  instance), or NULL without any. */
    mml_lora *(*experts)(void *self);
    /** Optional (may be NULL), for gradient checks: a fingerprint of the
     *  discrete choices (ReLU on/off pattern) of the last forward pass; 0
     *  when absent. */
    uint64_t (*kink_pattern)(void *self);
    /** Optional (may be NULL), for gradient checks: while replay is nonzero,
     *  training forward passes reuse the last dropout masks. Absent means
     *  there is nothing to replay. */
    int (*set_dropout_replay)(void *self, int32_t replay);
    /** Optional (may be NULL): writes the state beyond the parameters through
     *  write(user, data, size). Kept for the model file format of a later
     *  release; not called yet. */
    int (*save)(void *self, mml_write_fn write, void *user);
    /** Optional (may be NULL): reads back what save wrote, through
     *  read(user, data, size). Kept for the model file format of a later
     *  release; not called yet. */
    int (*load)(void *self, mml_read_fn read, void *user);
} mml_backbone_vtable;

/** A backbone instance (opaque): a type's table plus its `self`. */
typedef struct mml_backbone mml_backbone;

MML_BEGIN_DECLS

/** Fills *cfg with the defaults for a struct of struct_size bytes.
 *  @param cfg the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL cfg; MML_EVERSION (nothing
 *  written) for a size that no release produced. */
MML_API int mml_backbone_config_init_sized(mml_backbone_config *cfg, uint32_t struct_size);
/** mml_backbone_config_init_sized() with the caller's sizeof, so a newer
 *  library never writes past an older application's struct.
 *  @param cfg the struct to fill. */
#define mml_backbone_config_init(cfg) mml_backbone_config_init_sized((cfg), (uint32_t)sizeof(mml_backbone_config))
/** Registers a backbone type in ctx's registry under vtable->type_name. The
 *  table and the name are copied (vtable need not outlive the call); user is
 *  kept as is, passed to infer_shape and create, and never freed: it must
 *  stay valid while backbones of this type may be created on ctx. The entry
 *  lasts until ctx is destroyed.
 *  @param ctx the context. @param vtable the table. @param user any pointer.
 *  @return MML_OK; MML_EINVAL for a NULL argument, a bad type name or a
 *  missing required callback; MML_EVERSION for another ABI version or a
 *  struct_size no release produced; MML_EEXIST if the name is taken
 *  (built-in names included); MML_ENOMEM. */
MML_API int mml_backbone_register(mml_ctx *ctx, const mml_backbone_vtable *vtable, void *user);
/** Whether type_name is known to ctx (built-in or registered).
 *  @param ctx the context, or NULL for the built-in names only.
 *  @param type_name the name (NULL gives 0).
 *  @return 1 if known, 0 otherwise. */
MML_API int mml_backbone_known(const mml_ctx *ctx, const char *type_name);
/** Built-in type names: "mlp", "wdl", "deepfm", "nfm", "pnn", "dcn",
 *  "autoint", "xdeepfm", "fibinet", in that order.
 *  @param index from 0.
 *  @return a static string, or NULL past the end (or for a negative index). */
MML_API const char *mml_backbone_builtin_name(int32_t index);

/** Creates a backbone of type type_name (built-in or registered on ctx).
 *  cfg is required (NULL is refused: its defaults leave n_fields unset); it
 *  is checked (see mml_backbone_config) and copied, and its hidden and
 *  options arrays are read during the call only. On failure *out is NULL (a
 *  NULL ctx, type_name or cfg currently leaves it unchanged).
 *  @param out receives the backbone, owned by the caller (mml_backbone_destroy()).
 *  @param ctx the context; it must outlive the backbone.
 *  @param type_name the type. @param cfg the configuration.
 *  @return MML_OK; MML_EINVAL for a NULL argument or a bad configuration or
 *  options; MML_ENOTFOUND for an unknown type; MML_EVERSION for a struct_size
 *  of cfg or of the options that no release produced; MML_ENOMEM;
 *  MML_ECALLBACK when a user's callback fails or its parameters are invalid. */
MML_API int mml_backbone_create(mml_backbone **out, mml_ctx *ctx, const char *type_name,
                                const mml_backbone_config *cfg);
/** Destroys bb (its destroy callback) and everything it owns; NULL is a no-op.
 *  @param bb the backbone, or NULL. */
MML_API void mml_backbone_destroy(mml_backbone *bb);
/** One forward pass: logit receives the backbone's logit of each of the
 *  in->n_rows rows (no bias, no linear term). in and its arrays are read
 *  during the call only. On failure logit may be partly written.
 *  @param bb the backbone. @param in the input. @param logit in->n_rows floats.
 *  @return MML_OK; MML_EINVAL for a NULL argument (in->emb and in->mix
 *  included), missing numeric values or an invalid mixture (unknown mode, no
 *  domains or weights, adapters asked of a backbone without experts); MML_EVERSION for a struct_size of in
 *  or in->mix that no release produced; MML_ESHAPE for n_rows < 1 or a
 *  mixture that does not fit; MML_ERANGE for an expert or domain outside the
 *  experts; MML_ENONFINITE for a non-finite logit, input or gate weight;
 *  MML_ESTATE when dropout replay meets another batch size; MML_ENOMEM;
 *  MML_ECALLBACK when a user's forward callback fails. */
MML_API int mml_backbone_forward(mml_backbone *bb, const mml_backbone_input *in, float *logit);
/** Backward of the last forward pass: accumulates (+=) into the unfrozen
 *  parameters' gradients and into grads' non-NULL buffers.
 *  @param bb the backbone. @param dlogit n_rows gradients of the logits.
 *  @param grads where the input gradients go (struct_size set).
 *  @return MML_OK; MML_EINVAL for a NULL argument; MML_EVERSION for a
 *  struct_size of grads that no release produced; MML_ESTATE without a
 *  forward pass; MML_ENOMEM; MML_ECALLBACK when a user's backward fails. */
MML_API int mml_backbone_backward(mml_backbone *bb, const float *dlogit,
                                  const mml_backbone_grads *grads);
/** Number of parameters (for a built-in backbone: the tower's, the experts',
 *  then its own; see backbones.h).
 *  @param bb the backbone. @return the count; 0 for NULL. */
MML_API int64_t mml_backbone_n_params(mml_backbone *bb);
/** Parameter index, in the order of mml_backbone_n_params().
 *  @param bb the backbone. @param index 0 .. n_params - 1.
 *  @return a borrowed pointer, valid until bb is destroyed; NULL for a NULL
 *  bb or an index out of range. */
MML_API mml_param *mml_backbone_param(mml_backbone *bb, int64_t index);
/** The tower's adapters.
 *  @param bb the backbone.
 *  @return a borrowed pointer, owned by bb and valid until it is destroyed;
 *  NULL for NULL, without experts (n_experts 0) or without an experts callback. */
MML_API mml_lora *mml_backbone_experts(mml_backbone *bb);
/** Whether the model should add the first-order linear term.
 *  @param bb the backbone. @return 1 or 0 (0 for NULL). */
MML_API int32_t mml_backbone_linear_term(const mml_backbone *bb);
/** The backbone's type name.
 *  @param bb the backbone.
 *  @return a string owned by bb, valid until it is destroyed; NULL for NULL. */
MML_API const char *mml_backbone_type_name(const mml_backbone *bb);

MML_END_DECLS

#endif
