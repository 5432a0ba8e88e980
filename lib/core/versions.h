/* Every size of each versioned public struct that an earlier release
 * produced, as a 0-terminated list. The library accepts these and its own
 * sizeof, and nothing else (docs/ABI.md). When a release appends fields to a
 * struct, the size before them, offsetof(T, first_new_field), joins its list
 * here: offsetof is right on every ABI, because no public struct has padding.
 * 1.0 was the first release. */
#ifndef MML_VERSIONS_H
#define MML_VERSIONS_H

#include <stddef.h>
#include <stdint.h>

/* 1.3 added mml_arrays: no older sizes. */
#define MML__OLDER_SIZES_mml_arrays ((const uint32_t[]){0})
/* 1.3 added mml_add_domain_options: no older sizes. */
#define MML__OLDER_SIZES_mml_add_domain_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_autoint_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_backbone_config ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_backbone_grads ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_backbone_input ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_backbone_vtable ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_batch_view ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_batcher_options ((const uint32_t[]){0})
/* 1.2 appended hashed_columns .. hash_seed. */
#define MML__OLDER_SIZES_mml_csv_options                                                         \
    ((const uint32_t[]){offsetof(mml_csv_options, hashed_columns), 0})
/* 1.1 appended log_level. */
#define MML__OLDER_SIZES_mml_ctx_options                                                         \
    ((const uint32_t[]){offsetof(mml_ctx_options, log_level), 0})
#define MML__OLDER_SIZES_mml_dcn_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_domain_metrics ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_embedding_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_epoch_report ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_fibinet_options ((const uint32_t[]){0})
/* 1.3 appended domain_bias .. reserved1. */
#define MML__OLDER_SIZES_mml_gate_options                                                        \
    ((const uint32_t[]){offsetof(mml_gate_options, domain_bias), 0})
#define MML__OLDER_SIZES_mml_gradcheck_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_gradcheck_report ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_lora_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_metrics_summary ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_mix ((const uint32_t[]){0})
/* 1.3 appended gate_domain_bias .. reserved1. */
#define MML__OLDER_SIZES_mml_model_options                                                       \
    ((const uint32_t[]){offsetof(mml_model_options, gate_domain_bias), 0})
#define MML__OLDER_SIZES_mml_movielens_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_nfm_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_optimizer_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_pnn_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_progress ((const uint32_t[]){0})
/* 1.2 added mml_session_options: no older sizes. */
#define MML__OLDER_SIZES_mml_session_options ((const uint32_t[]){0})
/* 1.1 appended flags. */
#define MML__OLDER_SIZES_mml_stage_report                                                        \
    ((const uint32_t[]){offsetof(mml_stage_report, flags), 0})
#define MML__OLDER_SIZES_mml_synthetic_options ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_tower_options ((const uint32_t[]){0})
/* 1.2 appended init_model, first_stage, checkpoint and checkpoint_user;
 * 1.3 reduce and gate_prior .. reserved2. */
#define MML__OLDER_SIZES_mml_trainer_options                                                     \
    ((const uint32_t[]){offsetof(mml_trainer_options, init_model),                              \
                        offsetof(mml_trainer_options, reduce), 0})
/* 1.3 added mml_reduce_hook: no older sizes. */
#define MML__OLDER_SIZES_mml_reduce_hook ((const uint32_t[]){0})
#define MML__OLDER_SIZES_mml_xdeepfm_options ((const uint32_t[]){0})

#endif
