/**
 * @file
 * libmoemlora: hooks for finite-difference gradient checks of whole models.
 *
 * For tests only: these make a stochastic, piecewise-linear network
 * repeatable under small parameter changes, so that a loss function given to
 * mml_gradcheck() sees the same dropout masks and can tell when a ReLU or a
 * top-k choice flipped. A service never needs them.
 */
#ifndef MOEMLORA_TESTING_H
#define MOEMLORA_TESTING_H

#include <stdint.h>

#include "backbone.h"
#include "export.h"
#include "model.h"

MML_BEGIN_DECLS

/** Makes the model's forward passes in training mode reuse the dropout masks
 *  of the last training forward pass (replay nonzero) or draw new ones (0).
 *  @param model the model (borrowed for the call).
 *  @param replay nonzero to replay.
 *  @return MML_OK; MML_EINVAL for a NULL model (no message); for a user
 *  backbone, MML_ECALLBACK when its set_dropout_replay callback fails (the
 *  message names the callback and its code). A backbone without the callback
 *  gives MML_OK and no replay. */
MML_API int mml_model_set_dropout_replay(mml_model *model, int32_t replay);

/** A fingerprint of the discrete choices of the last forward pass (ReLU
 *  signs of the backbone, the gate's top-k selections): equal fingerprints
 *  mean the same piece of the piecewise-smooth loss.
 *  @param model the model (NULL gives 0).
 *  @return the fingerprint; 0 when nothing is recorded. The gate's choices
 *  count only in gated mixing (MML_MIX_GATED). */
MML_API uint64_t mml_model_kink_pattern(mml_model *model);

/** The backbone's own fingerprint (its kink_pattern callback; 0 without one).
 *  @param bb the backbone (NULL gives 0).
 *  @return the fingerprint, as the callback returns it. */
MML_API uint64_t mml_backbone_kink_pattern(mml_backbone *bb);

/** Forwards replay to the backbone's set_dropout_replay callback.
 *  @param bb the backbone (borrowed for the call).
 *  @param replay nonzero to replay the last masks.
 *  @return MML_OK (also without the callback); MML_EINVAL for a NULL bb (no
 *  message); for a user backbone, MML_ECALLBACK when the callback returns a
 *  negative code (the message names the callback and the code). */
MML_API int mml_backbone_set_dropout_replay(mml_backbone *bb, int32_t replay);

MML_END_DECLS

#endif
