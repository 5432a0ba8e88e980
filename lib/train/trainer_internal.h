/* The trainer's state between two epochs as bytes (private): the payload of
 * the model file's trainer section. The layout is in docs/FORMAT.md, "Trainer state payload". */
#ifndef MML_TRAINER_INTERNAL_H
#define MML_TRAINER_INTERNAL_H

#include "core/bytes.h"
#include "moemlora/trainer.h"

/* Appends t's state (not its weights: the model file holds those). MML_OK,
 * MML_EINVAL for NULL, MML_ESTATE once the model was handed over, or w's
 * error. */
int mml__trainer_state_write(const mml_trainer *t, mml__wbuf *w);
/* Replaces t's stage, reports, running stage and dropout stream with a state
 * that mml__trainer_state_write made, for a trainer of the same
 * configuration whose model holds the weights saved with it. Untrusted
 * input: MML_ESTATE naming the option that differs from the saved
 * configuration, MML_ECORRUPT naming the bad field, MML_ETRUNCATED,
 * MML_EVERSION for a newer layout, MML_ENOMEM; t is unchanged on failure. */
int mml__trainer_state_read(mml_trainer *t, mml__rbuf *r);

/* Since 1.3 (trainer_tuned.c): the MoE-MLoRA options beyond the paper. */
/* MML_EINVAL naming the first invalid 1.3 field of o. */
int mml__trainer_check_tuned(mml_ctx *ctx, const mml_trainer_options *o);
/* The learning rate of a stage's (first) optimiser. */
float mml__trainer_stage_lr(const mml_trainer_options *o, int32_t stage);
/* How many of the n parameters belong to group. */
int64_t mml__trainer_count_group(mml_param *const *params, int64_t n, int32_t group);
/* Row weights of batch b for stage 2 of domain's expert: the batch's own
 * (1 without) times other_weight on the other domains' rows, into out. */
const float *mml__trainer_other_weights(const mml_batch_view *b, int32_t domain,
                                        float other_weight, float *out);

#endif
