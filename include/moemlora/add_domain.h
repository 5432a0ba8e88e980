/**
 * @file
 * @brief Adding a domain to a trained MoE-MLoRA model (since 1.3).
 *
 * A trained MoE-MLoRA model with D domains and E experts gains domain D:
 *
 *   1. mml_model_add_domain() makes the grown model: m new experts (m =
 *      the model's experts per domain, E / D, unless asked otherwise),
 *      appended as experts E .. E + m - 1 and owned by the new domain, a
 *      new row of the gate's domain embedding, new gate columns for the new
 *      experts, and a new row in the tables of the field that carries the
 *      domain id (the mean of the old rows). Every other weight is copied.
 *      The gate gets a per-domain expert mask: the old domains may not use
 *      the new experts (their gate logits are left out before the softmax,
 *      so each old domain's softmax runs over exactly the values it ran over
 *      before, in the same order, and the new experts get weight exactly 0);
 *      the new domain may use every expert.
 *   2. mml_dataset_for_model() maps data sets onto the grown model's schema
 *      (by column name; the new domain gets id D).
 *   3. mml_model_train_domain() trains the new domain's own parameters on
 *      its rows only, with everything else frozen: its row of the domain
 *      field's tables (optional, backbone alone), then each new expert alone
 *      (as MoE-MLoRA's stage 2), then its gate parameters (its gate
 *      embedding row and the gate's columns and biases of its experts) with
 *      the full gated mixture. Each step early-stops on the new domain's
 *      validation AUC and keeps its best epoch.
 *
 * The old domains' predictions stay bit for bit what they were (the test
 * suite checks it with memcmp for several backbones and thread counts), and
 * the backbone, the embeddings, the old experts and the gate's old
 * parameters stay bit for bit as saved.
 *
 * Values of the new rows that the saved vocabularies do not know (new users
 * or items) map to the field's out-of-vocabulary id when the field has one,
 * and its embedding stays frozen: such rows rely on the experts and the gate.
 * A field without an out-of-vocabulary id (MovieLens ids) refuses them.
 *
 * Limits: built-in backbones; no multi-hot fields; the model needs its
 * schema (a trained or loaded model has it). A grown model is saved with a
 * required section for the mask (docs/FORMAT.md), so a release that cannot
 * apply the mask refuses the file instead of predicting wrongly.
 *
 * Thread safety: one thread at a time per context and the objects made from it.
 */
#ifndef MOEMLORA_ADD_DOMAIN_H
#define MOEMLORA_ADD_DOMAIN_H

#include <stdint.h>

#include "data.h"
#include "export.h"
#include "model.h"

/** Options of mml_model_add_domain() and mml_model_train_domain().
 *  Initialise with mml_add_domain_options_init(). */
typedef struct mml_add_domain_options {
    /** Set by mml_add_domain_options_init(): the sizeof of the caller's struct. */
    uint32_t struct_size;
    /** New experts for the new domain, >= 0; default 0: the model's experts
     *  per domain (E / D, at least 1). */
    int32_t n_experts;
    /** Adam's learning rate; default 1e-3; finite, > 0. */
    float lr;
    /** Epochs without improvement before a step stops; default 3; >= 1. */
    int32_t patience;
    /** Rows per batch; default 1024; >= 1. */
    int64_t batch_size;
    /** Epochs per step at most; default 50; >= 1. */
    int32_t max_epochs;
    /** Default 1: first train the new domain's row of the domain field's
     *  tables (embedding and first-order weight) with the backbone alone;
     *  0: keep the mean of the old rows. */
    int32_t train_domain_row;
    /** Before the gate step, the new domain's gate starts with this total
     *  weight on its own experts (their gate biases set so; the rest spread
     *  over the other experts as the gate gives it), so that the gate starts
     *  from what the expert step reached instead of a near-uniform mixture;
     *  in [0, 1); default 0.9; 0: the gate's fresh initial values. */
    float gate_own_weight;
    /** 0; reserved for later releases. */
    int32_t reserved;
} mml_add_domain_options;

MML_BEGIN_DECLS

/** Fills *opt with the defaults for a struct of struct_size bytes.
 *  @param opt the struct to fill. @param struct_size the caller's sizeof.
 *  @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *  for a size that no release produced. */
MML_API int mml_add_domain_options_init_sized(mml_add_domain_options *opt, uint32_t struct_size);
/** mml_add_domain_options_init_sized() with the caller's sizeof.
 *  @param opt the struct to fill. */
#define mml_add_domain_options_init(opt)                                                         \
    mml_add_domain_options_init_sized((opt), (uint32_t)sizeof(mml_add_domain_options))

/** Makes a new model: model with one more domain, the one domain of data's
 *  schema (by name) that model's schema lacks (see the file description).
 *  model is only read; it may be read-only. The new model is not read-only,
 *  shares model's context and has the grown schema; its new domain is
 *  mml_model_n_domains(model), and its final mixture is MML_MIX_GATED.
 *  @param out receives the new model (mml_model_destroy()); NULL on failure.
 *  @param model a MoE-MLoRA model (with a gate) and its schema.
 *  @param data any data set whose domains include the new one (e.g. the
 *         training split of all domains).
 *  @param opt options (n_experts is read), or NULL for the defaults.
 *  @return MML_OK; MML_EINVAL for a NULL argument, a model without a gate
 *  (not MoE-MLoRA) or a bad option; MML_EVERSION for an opt->struct_size
 *  that no release produced; MML_ESTATE for a model without a schema, with
 *  multi-hot fields or a registered backbone; MML_ENOTFOUND when data has no
 *  domain the model lacks; MML_ESHAPE when data has more than one new domain
 *  or its fields (names, numeric columns) differ from the model's;
 *  MML_ENOMEM. */
MML_API int mml_model_add_domain(mml_model **out, const mml_model *model, const mml_dataset *data,
                                 const mml_add_domain_options *opt);

/** A copy of src's rows expressed in model's schema: categorical, domain and
 *  numeric columns matched by name, values mapped through model's
 *  vocabularies (unknown values to the out-of-vocabulary id), domains by
 *  name. The result shares model's schema (a model grown from model later
 *  needs its data mapped again).
 *  @param out receives the data set (mml_dataset_destroy()); NULL on failure.
 *  @param src the rows.
 *  @param model a model with a schema.
 *  @return MML_OK; MML_EINVAL for a NULL argument; MML_ESTATE for a model
 *  without a schema; MML_ESHAPE when a column of the model is missing from
 *  src, or for multi-hot fields; MML_ERANGE for a domain the model does not
 *  have, or a value unknown to a field without out-of-vocabulary id or
 *  outside an id field's range (the message names row and field);
 *  MML_ENOMEM. */
MML_API int mml_dataset_for_model(mml_dataset **out, const mml_dataset *src,
                                  const mml_model *model);

/** A copy of src without the rows of one domain, the later domains
 *  renumbered one down (names kept), with a schema of D - 1 domains: for
 *  example to train a model that a domain is added to later.
 *  @param out receives the data set; NULL on failure.
 *  @param src the rows (D >= 2). @param domain the domain to drop, 0 .. D - 1.
 *  @return MML_OK; MML_EINVAL for a NULL argument or a data set of one
 *  domain; MML_ERANGE for domain out of range; MML_ESTATE for multi-hot
 *  fields; MML_ENOMEM. */
MML_API int mml_dataset_drop_domain(mml_dataset **out, const mml_dataset *src, int32_t domain);

/** Trains the parameters that belong to domain alone (see the file
 *  description) on its rows of train, early-stopping on its rows of val;
 *  everything else stays bit for bit as it was. The domain's experts must
 *  be masked out for every other domain (a domain added by
 *  mml_model_add_domain()). Deterministic for a given context seed, thread
 *  count and data.
 *  @param model the grown model (not read-only).
 *  @param domain the added domain.
 *  @param train rows in model's schema (mml_dataset_for_model()); only
 *         domain's rows are used, and there must be some.
 *  @param val likewise, for early stopping.
 *  @param opt options, or NULL for the defaults.
 *  @return MML_OK; MML_EINVAL for a NULL argument or a bad option;
 *  MML_EVERSION for an opt->struct_size that no release produced;
 *  MML_ERANGE for domain out of range; MML_ESTATE for a read-only model,
 *  or a domain whose experts other domains use (or that has none);
 *  MML_ESHAPE when train or val does not fit the model or has no row of
 *  domain; MML_ENONFINITE when training diverges; MML_ENOMEM. */
MML_API int mml_model_train_domain(mml_model *model, int32_t domain, const mml_dataset *train,
                                   const mml_dataset *val, const mml_add_domain_options *opt);

/** The domain expert e belongs to (e mod D for a model that never gained a
 *  domain).
 *  @param model the model. @param expert 0 .. E - 1.
 *  @return the domain; -1 for NULL or an expert out of range. */
MML_API int32_t mml_model_expert_domain(const mml_model *model, int32_t expert);
/** Whether the gate lets domain use expert (1 everywhere for a model that
 *  never gained a domain).
 *  @param model the model. @param domain 0 .. D - 1. @param expert 0 .. E - 1.
 *  @return 1 or 0; -1 for NULL, a model without a gate, or an index out of
 *  range. */
MML_API int32_t mml_model_expert_allowed(const mml_model *model, int32_t domain, int32_t expert);

MML_END_DECLS

#endif
