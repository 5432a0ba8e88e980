/* MoE-MLoRA beyond the paper (since 1.3): the checks and utilities of the
 * trainer's 1.3 options, and the recommended preset (docs/EXPERIMENTS.md). */
#include <math.h>
#include <stddef.h>

#include "core/internal.h"
#include "moemlora/trainer.h"
#include "train/trainer_internal.h"

static int rate_ok(float v) { return isfinite(v) && v >= 0.0f; }

int mml__trainer_check_tuned(mml_ctx *ctx, const mml_trainer_options *o)
{
    const char *bad = NULL;
    if (!rate_ok(o->gate_prior))
        bad = "gate_prior";
    else if (!rate_ok(o->gate_lr))
        bad = "gate_lr";
    else if (!rate_ok(o->expert_lr))
        bad = "expert_lr";
    else if (!rate_ok(o->expert_backbone_lr))
        bad = "expert_backbone_lr";
    else if (!rate_ok(o->expert_other_weight) || o->expert_other_weight > 1.0f)
        bad = "expert_other_weight (0 .. 1)";
    else if (!rate_ok(o->finetune_lr))
        bad = "finetune_lr";
    else if (o->finetune < MML_FINETUNE_NONE || o->finetune > MML_FINETUNE_ALL)
        bad = "finetune (0, 1 or 2)";
    else if (o->finetune_patience < 0)
        bad = "finetune_patience";
    else if (o->gate_input < MML_GATE_INPUT_DOMAIN || o->gate_input > MML_GATE_INPUT_EMBEDDINGS_GRAD)
        bad = "gate_input (0, 1 or 2)";
    else if (o->gate_input != MML_GATE_INPUT_DOMAIN && o->gate_top_k > 0)
        bad = "gate_input (needs a dense gate, gate_top_k 0)";
    if (bad)
        return mml__error(ctx, MML_EINVAL, "trainer: option %s invalid", bad);
    int any = o->gate_prior > 0.0f || o->gate_lr > 0.0f || o->expert_lr > 0.0f ||
              o->expert_backbone_lr > 0.0f || o->expert_other_weight > 0.0f ||
              o->finetune_lr > 0.0f || o->finetune != MML_FINETUNE_NONE ||
              o->finetune_patience > 0 || o->gate_input != MML_GATE_INPUT_DOMAIN;
    if (any && o->variant != MML_VARIANT_MOE)
        return mml__error(ctx, MML_EINVAL, "trainer: the MoE-MLoRA options of 1.3 (gate_prior .. "
                          "gate_input) need variant MML_VARIANT_MOE, not %d", (int)o->variant);
    return MML_OK;
}

float mml__trainer_stage_lr(const mml_trainer_options *o, int32_t stage)
{
    switch (stage) {
    case MML_STAGE_EXPERTS: return o->expert_lr > 0.0f ? o->expert_lr : o->lr;
    case MML_STAGE_GATE: return o->gate_lr > 0.0f ? o->gate_lr : o->lr;
    case MML_STAGE_FINETUNE: return o->finetune_lr > 0.0f ? o->finetune_lr : o->lr;
    default: return o->lr;
    }
}

int64_t mml__trainer_count_group(mml_param *const *params, int64_t n, int32_t group)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
        c += params[i]->group == group;
    return c;
}

const float *mml__trainer_other_weights(const mml_batch_view *b, int32_t domain,
                                        float other_weight, float *out)
{
    for (int64_t r = 0; r < b->n_rows; r++) {
        float w = b->weights ? b->weights[r] : 1.0f;
        out[r] = b->domain[r] == domain ? w : w * other_weight;
    }
    return out;
}

int mml_trainer_options_moe_tuned(mml_trainer_options *opt)
{
    if (!opt)
        return MML_EINVAL;
    if (opt->struct_size < offsetof(mml_trainer_options, reserved2) + sizeof opt->reserved2)
        return MML_EVERSION;
    opt->variant = MML_VARIANT_MOE;
    opt->gate_prior = 2.0f;
    opt->gate_lr = 1e-2f;
    opt->expert_lr = 0.0f;
    opt->expert_backbone_lr = 0.0f;
    opt->expert_other_weight = 0.0f;
    opt->finetune = MML_FINETUNE_ALL;
    opt->finetune_lr = 0.0f;
    opt->finetune_patience = 10;
    opt->gate_input = MML_GATE_INPUT_DOMAIN;
    return MML_OK;
}
