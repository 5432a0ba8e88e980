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

#endif
