/* libmoemlora: the staged trainer.
 *
 * Trains one model on a training split with early stopping on a validation
 * split, as METHOD.md section 4 specifies:
 *
 *   MML_VARIANT_BASE   one joint stage, the shared model (no experts);
 *   MML_VARIANT_MLORA  one joint stage, each row through its domain's adapter;
 *   MML_VARIANT_MOE    stage 1 "backbone": embeddings and backbone on all
 *                      domains, no experts in the forward pass;
 *                      stage 2 "experts": each expert i alone, on the training
 *                      rows of domain i mod D, everything else frozen, early
 *                      stopping on that domain's validation AUC;
 *                      stage 3 "gate": the gate alone, on all domains, with
 *                      the full gated mixture.
 *
 * Every stage (and every expert) starts a fresh Adam over exactly the
 * parameters it trains; frozen parameters do not change, bit for bit. After
 * each epoch the validation score is computed (dropout off): the unweighted
 * mean of per-domain AUCs (stage 2: the expert's own domain's AUC). The best
 * epoch (strictly greater score) is kept; a stage ends after `patience`
 * epochs without improvement or `max_epochs` epochs, and then restores its
 * best weights. Batches mix domains; each epoch reshuffles with a seeded
 * permutation. Same seed, data and thread count give bitwise-identical models.
 *
 * The shared model and MoE-MLoRA's stage 1 are the same computation for the
 * same seed, so their weights after that stage are identical.
 */
#ifndef MOEMLORA_TRAINER_H
#define MOEMLORA_TRAINER_H

#include <stdint.h>

#include "ctx.h"
#include "data.h"
#include "export.h"
#include "metrics.h"
#include "model.h"

typedef struct mml_trainer mml_trainer;

/** The three methods: the shared model, MLoRA and MoE-MLoRA (METHOD.md). */
typedef enum mml_variant {
    MML_VARIANT_BASE = 0,  /* the shared model, no adapters */
    MML_VARIANT_MLORA = 1, /* one adapter per domain, trained jointly */
    MML_VARIANT_MOE = 2    /* backbone, then experts one domain at a time, then the gate */
} mml_variant;

/** Training stages. */
typedef enum mml_stage {
    MML_STAGE_JOINT = 0,    /* base and MLoRA: everything at once */
    MML_STAGE_BACKBONE = 1, /* MoE-MLoRA stage 1: the shared model */
    MML_STAGE_EXPERTS = 2,  /* MoE-MLoRA stage 2: each expert on its own domain's rows */
    MML_STAGE_GATE = 3      /* MoE-MLoRA stage 3: the gate */
} mml_stage;

typedef struct mml_progress {
    uint32_t struct_size; /* the library's sizeof(mml_progress): read later fields only if
                             struct_size covers them */
    int32_t reserved;     /* 0 */
    int32_t stage;        /* MML_STAGE_* */
    int32_t expert;       /* stage 2: the expert; else -1 */
    int32_t epoch;        /* 1-based */
    int32_t max_epochs;
    int64_t step;         /* batches done in this epoch */
    int64_t steps;        /* batches in this epoch */
    double rows_per_s;    /* training throughput of this epoch so far */
    double loss;          /* mean training loss of this epoch so far */
    double eta_s;         /* estimated seconds left in this epoch */
} mml_progress;

/* Called every few batches and after each epoch; return nonzero to cancel. */
typedef int (*mml_progress_fn)(void *user, const mml_progress *progress);
/* Replaces the validation score (for tests and custom criteria). */
typedef int (*mml_validate_fn)(void *user, int32_t stage, int32_t expert, int32_t epoch,
                               double *score);

typedef struct mml_trainer_options {
    uint32_t struct_size;
    int32_t variant;              /* MML_VARIANT_*; default MML_VARIANT_MOE */
    const char *backbone;         /* default "mlp"; copied */
    const void *backbone_options; /* read during create */
    int32_t experts_per_domain;   /* m, MoE only; default 1 */
    int32_t alpha;                /* LoRA rank divisor (see mml_model_options); default 16 */
    int32_t embed_dim;            /* default 8 */
    int32_t n_hidden;             /* default 3 */
    const int32_t *hidden;        /* default 256, 128, 64 */
    float dropout;                /* default 0.5 */
    float lr;                     /* default 1e-3 */
    int64_t batch_size;           /* default 1024 */
    int32_t patience;             /* default 3 */
    int32_t max_epochs;           /* per stage and per expert; default 50 */
    mml_progress_fn progress;
    void *progress_user;
    mml_validate_fn validate;
    void *validate_user;
    int32_t optimizer;            /* MML_OPT_ADAM (default), MML_OPT_LAZY_ADAM, MML_OPT_ADAGRAD, MML_OPT_SGD */
    int32_t gate_top_k;           /* 0 (default): dense gate */
    float l2_embedding;           /* default 0; see mml_model_regularization */
    float l2_dense;               /* default 0 */
} mml_trainer_options;

typedef struct mml_stage_report {
    uint32_t struct_size;     /* bytes the library filled (the caller's size) */
    int32_t stage;            /* MML_STAGE_* */
    int32_t expert;           /* stage 2: the expert; else -1 */
    int32_t domain;           /* stage 2: its domain; else -1 */
    int32_t epochs;           /* epochs run */
    int32_t best_epoch;       /* 1-based */
    double best_val;          /* validation score of the best epoch */
    double seconds;           /* wall time of the stage, validation included */
    double train_rows_per_s;  /* median over epochs of rows / training-loop time */
} mml_stage_report;

typedef struct mml_epoch_report {
    uint32_t struct_size;     /* bytes the library filled (the caller's size) */
    int32_t stage;
    int32_t expert;
    int32_t epoch;
    double train_loss;        /* mean over the epoch's batches */
    double val_score;
    double train_seconds;     /* the training loop alone */
    double rows_per_s;
} mml_epoch_report;

MML_BEGIN_DECLS

MML_API int mml_trainer_options_init_sized(mml_trainer_options *opt, uint32_t struct_size);
#define mml_trainer_options_init(opt) mml_trainer_options_init_sized((opt), (uint32_t)sizeof(mml_trainer_options))
/* The model's shape comes from train (fields, vocabulary sizes, numeric
 * values, domains); val must share its schema. Both datasets must outlive the
 * trainer. Randomness comes from ctx's seed. */
MML_API int mml_trainer_create(mml_trainer **out, mml_ctx *ctx, const mml_trainer_options *opt,
                               const mml_dataset *train, const mml_dataset *val);
MML_API void mml_trainer_destroy(mml_trainer *trainer);

/* Runs one stage: MML_STAGE_JOINT (base, MLoRA) or, for MoE-MLoRA, the
 * stages in order. MML_ECANCELED if the progress callback asked to stop (the
 * stage's best weights so far are restored). */
MML_API int mml_trainer_run_stage(mml_trainer *trainer, int32_t stage);
/* Runs every stage of the variant that has not run yet. */
MML_API int mml_trainer_run(mml_trainer *trainer);

/* The mixture mode of the trained model for its variant (final prediction). */
MML_API int32_t mml_trainer_mix_mode(const mml_trainer *trainer);
/* Adds the logits of every row of ds, computed with mix_mode (MML_MIX_*), to
 * metrics (which must have the dataset's D domains). */
MML_API int mml_trainer_evaluate(mml_trainer *trainer, const mml_dataset *ds, int32_t mix_mode,
                                 mml_metrics *metrics);

MML_API mml_model *mml_trainer_model(mml_trainer *trainer);
MML_API int64_t mml_trainer_n_stage_reports(const mml_trainer *trainer);
MML_API int mml_trainer_stage_report_sized(const mml_trainer *trainer, int64_t index,
                                           mml_stage_report *out, uint32_t struct_size);
#define mml_trainer_stage_report(trainer, index, out)                                            \
    mml_trainer_stage_report_sized((trainer), (index), (out), (uint32_t)sizeof(mml_stage_report))
MML_API int64_t mml_trainer_n_epoch_reports(const mml_trainer *trainer);
MML_API int mml_trainer_epoch_report_sized(const mml_trainer *trainer, int64_t index,
                                           mml_epoch_report *out, uint32_t struct_size);
#define mml_trainer_epoch_report(trainer, index, out)                                            \
    mml_trainer_epoch_report_sized((trainer), (index), (out), (uint32_t)sizeof(mml_epoch_report))

MML_END_DECLS

#endif
