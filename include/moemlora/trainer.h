/** @file
 * libmoemlora: the staged trainer.
 *
 * Trains one model on a training split with early stopping on a validation
 * split, as METHOD.md section 4 specifies:
 *
 *   - MML_VARIANT_BASE: one joint stage, the shared model (no experts);
 *   - MML_VARIANT_MLORA: one joint stage, each row through its domain's adapter;
 *   - MML_VARIANT_MOE: stage 1 "backbone": embeddings and backbone on all
 *     domains, no experts in the forward pass;
 *     stage 2 "experts": each expert i alone, on the training
 *     rows of domain i mod D, everything else frozen, early
 *     stopping on that domain's validation AUC;
 *     stage 3 "gate": the gate alone, on all domains, with
 *     the full gated mixture.
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
 *
 * Since 1.2: mml_trainer_take_model() hands the trained model over to the
 * caller (it outlives the trainer). mml_trainer_options.init_model starts
 * from a given model's weights and first_stage from a later stage (re-run
 * MoE-MLoRA's stage 2 or 3, or fine-tune with MML_STAGE_JOINT).
 * A checkpoint callback runs after every epoch; it may save the trainer
 * (mml_trainer_save()), or stop the run, which pauses the stage: running it
 * again continues with the next epoch. mml_trainer_resume() makes a trainer
 * from a saved checkpoint; a run killed after a checkpoint and resumed from
 * it ends bitwise identical to one never interrupted (same seed, thread
 * count, data and options; built-in backbones).
 *
 * Since 1.3: data-parallel training. mml_trainer_options.reduce gives a
 * table of collective callbacks (mml_reduce_hook) through which one trainer
 * per worker (an MPI rank, say) trains on its shard of the rows, with the
 * gradients summed over workers after every step and the validation and
 * test metrics computed exactly over every worker's rows; every worker ends
 * every step with the same weights, bit for bit. The library itself does
 * no communication (examples/mpi_reduce.c implements the table over MPI).
 *
 * Since 1.3: options beyond the paper for MoE-MLoRA (the fields from
 * gate_prior on, all off by default, so MML_VARIANT_MOE stays the paper's
 * method bit for bit): a gate prior toward each domain's own experts, its
 * own learning rates for stage 2 and stage 3, stage 2 with the embeddings
 * and backbone training at a reduced rate or with the other domains' rows
 * weighted down, a gate that also sees the row's embeddings, and an
 * optional stage 4, MML_STAGE_FINETUNE: experts and gate (or everything)
 * together on all domains with its own early stopping, which keeps the
 * weights it started from unless an epoch beats their validation score
 * (that start is validated as epoch 0: a validation callback is called
 * with epoch 0 for it). mml_trainer_options_moe_tuned() sets the
 * recommended combination (docs/EXPERIMENTS.md). A resumed run must be
 * given the 1.3 options it was saved with.
 *
 * A trainer and its model are used by one thread at a time, like their
 * context; the callbacks run on the thread that runs the trainer. Fallible
 * functions return 0 (MML_OK) or a negative MML_E* code with a message in
 * mml_ctx_last_error() of the trainer's context.
 */
#ifndef MOEMLORA_TRAINER_H
#define MOEMLORA_TRAINER_H

#include <stdint.h>

#include "ctx.h"
#include "data.h"
#include "export.h"
#include "metrics.h"
#include "model.h"

/** The staged trainer (see the file description). Made with
 * mml_trainer_create(), released with mml_trainer_destroy(). */
typedef struct mml_trainer mml_trainer;

/** The three methods: the shared model, MLoRA and MoE-MLoRA (METHOD.md). */
typedef enum mml_variant {
    /** The shared model, no adapters. */
    MML_VARIANT_BASE = 0,
    /** One adapter per domain, trained jointly. */
    MML_VARIANT_MLORA = 1,
    /** Backbone, then experts one domain at a time, then the gate. */
    MML_VARIANT_MOE = 2
} mml_variant;

/** Training stages. */
typedef enum mml_stage {
    /** Base and MLoRA: everything at once. */
    MML_STAGE_JOINT = 0,
    /** MoE-MLoRA stage 1: the shared model. */
    MML_STAGE_BACKBONE = 1,
    /** MoE-MLoRA stage 2: each expert on its own domain's rows. */
    MML_STAGE_EXPERTS = 2,
    /** MoE-MLoRA stage 3: the gate. */
    MML_STAGE_GATE = 3,
    /** Since 1.3: MoE-MLoRA's optional stage 4 (mml_trainer_options.finetune):
     *  experts and gate (or everything) together, on all domains, at
     *  finetune_lr, with its own early stopping. */
    MML_STAGE_FINETUNE = 4
} mml_stage;

/** Values of mml_trainer_options.finetune (since 1.3). */
typedef enum mml_finetune {
    /** No stage 4 (the paper's method). */
    MML_FINETUNE_NONE = 0,
    /** Stage 4 trains the experts and the gate. */
    MML_FINETUNE_EXPERTS_GATE = 1,
    /** Stage 4 trains every parameter. */
    MML_FINETUNE_ALL = 2
} mml_finetune;

/** What the progress callback receives. The library fills it with its own
 * size, so a callback built against an older or newer header reads a field
 * only when struct_size covers it (offsetof(mml_progress, field) +
 * sizeof(field) <= struct_size). */
typedef struct mml_progress {
    /** The library's sizeof(mml_progress): read later fields only if
     * struct_size covers them. */
    uint32_t struct_size;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** MML_STAGE_*. */
    int32_t stage;
    /** Stage 2: the expert; else -1. */
    int32_t expert;
    /** 1-based. */
    int32_t epoch;
    /** The stage's max_epochs option. */
    int32_t max_epochs;
    /** Batches done in this epoch. */
    int64_t step;
    /** Batches in this epoch. */
    int64_t steps;
    /** Training throughput of this epoch so far (rows per second). */
    double rows_per_s;
    /** Mean training loss of this epoch so far (L2 penalty included). */
    double loss;
    /** Estimated seconds left in this epoch. */
    double eta_s;
} mml_progress;

/** Progress callback (mml_trainer_options.progress): called every 16
 * batches and after the last batch of each epoch, on the thread running
 * mml_trainer_run() or mml_trainer_run_stage(). It must not call functions
 * on the trainer or its model.
 * @param user mml_trainer_options.progress_user
 * @param progress the progress, valid during the call only
 * @return 0 to go on; nonzero to cancel (the run then fails with
 *         MML_ECANCELED) */
typedef int (*mml_progress_fn)(void *user, const mml_progress *progress);
/** Validation callback (mml_trainer_options.validate): replaces the
 * validation score after each epoch (for tests and custom criteria); higher
 * is better. It must not call functions on the trainer or its model.
 * @param user mml_trainer_options.validate_user
 * @param stage MML_STAGE_*
 * @param expert stage 2: the expert; else -1
 * @param epoch 1-based
 * @param[out] score receives the score (it holds 0 when the callback is called)
 * @return >= 0 on success; a negative value fails the run with MML_ECALLBACK */
typedef int (*mml_validate_fn)(void *user, int32_t stage, int32_t expert, int32_t epoch,
                               double *score);
/** Checkpoint callback (mml_trainer_options.checkpoint, since 1.2): called
 * after every completed epoch, once its validation and early-stopping
 * bookkeeping are done, on the thread running the trainer. It may call
 * mml_trainer_save() and the read-only functions (reports, mix mode,
 * mml_trainer_model() to read weights), and nothing else on the trainer or
 * its model.
 * @param user mml_trainer_options.checkpoint_user
 * @param trainer the trainer, between two epochs
 * @param where the epoch just completed (step == steps, loss its mean
 *              training loss); valid during the call only
 * @return 0 to go on; nonzero to stop: the run fails with MML_ECANCELED and
 *         the trainer stays exactly as it was during the call (the stage
 *         paused, its best weights not restored), so that running the stage
 *         again continues with the next epoch, as a trainer resumed from a
 *         state saved in the call would */
typedef int (*mml_checkpoint_fn)(void *user, mml_trainer *trainer, const mml_progress *where);

/** The collective operations of data-parallel training (since 1.3): a table
 * of callbacks through which several trainers, one per worker (an MPI rank,
 * say), each on its own shard of the rows, train one model together. The
 * library does no communication itself; examples/mpi_reduce.c implements
 * the table over MPI. Give it through mml_trainer_options.reduce; the trainer
 * copies it at creation.
 *
 * With size > 1 every worker's trainer must be made with the same options,
 * seed, thread count and data sets (with sharded set: data sets of one
 * schema, each holding the worker's own rows), and every worker must make
 * the same calls in the same order (run, run_stage, evaluate, save on any
 * worker). Each worker then trains on its range of the training rows (rows
 * [n * rank / size, n * (rank + 1) / size); with sharded, all of its own
 * rows), with its share of batch_size
 * (batch_size / size, one more for the first batch_size % size workers);
 * after the backward pass of every step the dense gradients are summed
 * over workers (sum_f32, or gather), and the embedding gradients travel as
 * rows (ids and values, gather); each worker's part is weighted by its
 * rows' share of the global batch. Validation and mml_trainer_evaluate()
 * evaluate each worker's range of the rows and combine every worker's
 * scores exactly (gather), so that all workers see the same metrics and
 * take the same early-stopping decisions. Every worker ends every step with
 * bitwise identical weights. A failure on one worker inside a step or an
 * evaluation reaches every worker (each returns it, naming the worker);
 * any other failure on one worker, or a failing callback, calls abort. The
 * progress, validate and checkpoint callbacks must return the same decision
 * on every worker. With size > 1 l2_embedding is refused (a row used on
 * two workers would be penalised twice); l2_dense works (each worker's
 * penalty is weighted by its share like its loss); the dropout stream is
 * drawn per worker and epoch.
 *
 * With size == 1 (or no table) the trainer runs as it does without one, bit
 * for bit. The callbacks are called on the thread running the trainer. */
typedef struct mml_reduce_hook {
    /** sizeof(mml_reduce_hook) of the caller's header. */
    uint32_t struct_size;
    /** This worker, 0 .. size - 1. */
    int32_t rank;
    /** The number of workers, >= 1. */
    int32_t size;
    /** 0 (default): every worker is given the same data sets and trains on
     *  (and evaluates) its range of their rows; nonzero: each worker's data
     *  sets hold only its own rows (one file per worker, say, mapped to one
     *  shared schema so that every id means the same on every worker), and
     *  it trains on and evaluates all of them. */
    int32_t sharded;
    /** Passed to every callback. */
    void *user;
    /** Required: every worker's block, concatenated in rank order, on every
     *  worker (an allgather). recv_bytes[q] is worker q's block size (the
     *  same array on every worker), recv holds their sum.
     *  @return 0; a negative value on failure (the library then calls abort) */
    int (*gather)(void *user, const void *send, int64_t send_bytes, void *recv,
                  const int64_t *recv_bytes);
    /** Optional (NULL: the library gathers every worker's buffer and adds):
     *  buf[i] := x_0[i] + x_1[i] + ... + x_{size-1}[i], added left to right
     *  in rank order, where x_q is worker q's buf; the same bits on every
     *  worker. n is the same on every worker.
     *  @return 0; a negative value on failure (the library then calls abort) */
    int (*sum_f32)(void *user, float *buf, int64_t n);
    /** Required: stops every worker (MPI_Abort, say) after a failure on this
     *  worker that the others cannot learn: status is its MML_E* code and
     *  message the context's message. If it returns, the trainer's call
     *  returns status. */
    void (*abort)(void *user, int status, const char *message);
} mml_reduce_hook;

/** Options of mml_trainer_create(); initialise with mml_trainer_options_init().
 * mml_trainer_create copies the struct and the hidden widths, and reads
 * backbone and backbone_options during the call only; it keeps the callbacks
 * and their user pointers, which must stay valid while the trainer runs. */
typedef struct mml_trainer_options {
    /** Set by mml_trainer_options_init(). */
    uint32_t struct_size;
    /** MML_VARIANT_*; default MML_VARIANT_MOE. */
    int32_t variant;
    /** The backbone's name (built in or registered); default "mlp"; copied. */
    const char *backbone;
    /** The backbone's own options struct, or NULL for its defaults; read during create. */
    const void *backbone_options;
    /** m, MoE only; default 1; >= 1. */
    int32_t experts_per_domain;
    /** LoRA rank divisor (see mml_model_options); default 16. */
    int32_t alpha;
    /** Embedding width; default 8. */
    int32_t embed_dim;
    /** Entries in hidden; default 3; 1 .. 64. */
    int32_t n_hidden;
    /** Hidden layer widths (n_hidden entries, copied); default 256, 128, 64. */
    const int32_t *hidden;
    /** Dropout rate; default 0.5. */
    float dropout;
    /** Learning rate; default 1e-3; finite, > 0. */
    float lr;
    /** Rows per batch; default 1024; >= 1. */
    int64_t batch_size;
    /** Epochs without improvement before a stage stops; default 3; >= 1. */
    int32_t patience;
    /** Per stage and per expert; default 50; >= 1. */
    int32_t max_epochs;
    /** Progress callback, or NULL (the default). */
    mml_progress_fn progress;
    /** Passed to progress. */
    void *progress_user;
    /** Validation callback, or NULL (the default: mean per-domain AUC). */
    mml_validate_fn validate;
    /** Passed to validate. */
    void *validate_user;
    /** MML_OPT_ADAM (default), MML_OPT_LAZY_ADAM, MML_OPT_ADAGRAD, MML_OPT_SGD. */
    int32_t optimizer;
    /** 0 (default): dense gate; else the gate's top_k (mml_gate_options). */
    int32_t gate_top_k;
    /** Default 0; see mml_model_regularization. */
    float l2_embedding;
    /** Default 0; see mml_model_regularization. */
    float l2_dense;
    /** Since 1.2: NULL (default) for fresh initial weights; else a model of
     *  the same shape (same backbone, parameters in the same order with the
     *  same names and shapes) whose weights are copied into the trainer's
     *  new model at creation, parameter by parameter. Read during create
     *  only. */
    const mml_model *init_model;
    /** Since 1.2: -1 (default) to start with the variant's first stage; else
     *  an MML_STAGE_* of the variant to start with, the earlier ones counting
     *  as done: MML_STAGE_EXPERTS or MML_STAGE_GATE re-runs the later stages
     *  of a MoE-MLoRA model given as init_model; MML_STAGE_JOINT with
     *  init_model fine-tunes a shared or MLoRA model (on new data). */
    int32_t first_stage;
    /** 0; reserved for later releases. */
    int32_t reserved;
    /** Since 1.2: checkpoint callback, or NULL (the default). */
    mml_checkpoint_fn checkpoint;
    /** Since 1.2: passed to checkpoint. */
    void *checkpoint_user;
    /** Since 1.3: NULL (default) to train alone; else the collective
     *  operations of data-parallel training (mml_reduce_hook), copied at
     *  creation. */
    const mml_reduce_hook *reduce;
    /* Since 1.3: MoE-MLoRA beyond the paper (docs/EXPERIMENTS.md). Every
     * field is off by default: MML_VARIANT_MOE then trains exactly the
     * paper's method; mml_trainer_options_moe_tuned() sets the measured
     * recommendation. */
    /** Since 1.3: > 0 gives the gate a per-domain logit table
     *  (mml_model_options.gate_domain_bias) that starts at this value on each
     *  domain's own experts and 0 on the others: stage 3 starts near the
     *  "own experts" mixture instead of uniform. Finite, >= 0; default 0. */
    float gate_prior;
    /** Since 1.3: the learning rate of stage 3 (the gate); 0 (default): lr.
     *  Finite, >= 0. */
    float gate_lr;
    /** Since 1.3: the learning rate of the experts in stage 2; 0 (default):
     *  lr. Finite, >= 0. */
    float expert_lr;
    /** Since 1.3: > 0: in stage 2 the embeddings and the backbone train too,
     *  at this rate, with each expert on its domain (a second optimiser over
     *  them); 0 (default): they stay frozen. Finite, >= 0. */
    float expert_backbone_lr;
    /** Since 1.3: > 0: stage 2 trains each expert on every domain's rows, the
     *  other domains' rows weighted by this factor (in (0, 1]) instead of
     *  dropped; early stopping still reads the expert's own domain. 0
     *  (default): only the domain's rows. */
    float expert_other_weight;
    /** Since 1.3: the learning rate of stage 4; 0 (default): lr.
     *  Finite, >= 0. */
    float finetune_lr;
    /** Since 1.3: an MML_FINETUNE_* value: whether MoE-MLoRA runs stage 4
     *  (MML_STAGE_FINETUNE) after stage 3, and what it trains; default
     *  MML_FINETUNE_NONE. */
    int32_t finetune;
    /** Since 1.3: stage 4's patience; 0 (default): patience. >= 0. */
    int32_t finetune_patience;
    /** Since 1.3: what the gate sees besides the domain, an MML_GATE_INPUT_*
     *  value (mml_model_options.gate_input); default MML_GATE_INPUT_DOMAIN.
     *  Needs gate_top_k 0. */
    int32_t gate_input;
    /** Since 1.3: 0; reserved for later releases. */
    int32_t reserved2;
} mml_trainer_options;

/** One stage's (or, in stage 2, one expert's) summary; see
 * mml_trainer_stage_report(). */
typedef struct mml_stage_report {
    /** The number of bytes the library filled (the caller's size). */
    uint32_t struct_size;
    /** MML_STAGE_*. */
    int32_t stage;
    /** Stage 2: the expert; else -1. */
    int32_t expert;
    /** Stage 2: its domain; else -1. */
    int32_t domain;
    /** Epochs run. */
    int32_t epochs;
    /** 1-based; 0 if no epoch completed. */
    int32_t best_epoch;
    /** Validation score of the best epoch. */
    double best_val;
    /** Wall time of the stage, validation included. */
    double seconds;
    /** Median over epochs of rows / training-loop time. */
    double train_rows_per_s;
    /** Since 1.1: what went wrong, as mml_stage_flag bits (0: nothing). */
    uint32_t flags;
    /** 0; reserved for later releases. */
    int32_t reserved;
} mml_stage_report;

/** Bits of mml_stage_report.flags (since 1.1). Each is also announced once
 *  through the log callback as an MML_LOG_WARN message. */
typedef enum mml_stage_flag {
    /** The validation score was undefined in some epoch (the validation rows
     *  of the stage, or of the expert's domain, hold one class or none), so
     *  early stopping could not work; best_val is then not a score. */
    MML_STAGE_UNVALIDATED = 1,
    /** The training loss became non-finite or exploded (mean over an epoch
     *  above 4 ln 2, four times a coin flip's): the stage stopped and kept
     *  its best weights (those it started from when no epoch validated);
     *  mml_trainer_run_stage() returned MML_ENONFINITE. */
    MML_STAGE_DIVERGED = 2,
    /** Stage 2: the expert's domain has no training rows; it trained nothing. */
    MML_STAGE_NO_TRAINING_ROWS = 4
} mml_stage_flag;

/** One epoch's summary; see mml_trainer_epoch_report(). */
typedef struct mml_epoch_report {
    /** The number of bytes the library filled (the caller's size). */
    uint32_t struct_size;
    /** MML_STAGE_*. */
    int32_t stage;
    /** Stage 2: the expert; else -1. */
    int32_t expert;
    /** 1-based. */
    int32_t epoch;
    /** Mean over the epoch's batches (L2 penalty included). */
    double train_loss;
    /** The epoch's validation score. */
    double val_score;
    /** The training loop alone. */
    double train_seconds;
    /** Rows per second of the training loop. */
    double rows_per_s;
} mml_epoch_report;

MML_BEGIN_DECLS

/** Fills *opt with the defaults of every field.
 * @param[out] opt the options to fill: struct_size bytes written, and
 *             opt->struct_size set to struct_size
 * @param struct_size the caller's sizeof(mml_trainer_options)
 * @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION (nothing written)
 *         for a size that no release produced. */
MML_API int mml_trainer_options_init_sized(mml_trainer_options *opt, uint32_t struct_size);
/** mml_trainer_options_init_sized() with the caller's
 * sizeof(mml_trainer_options), so that a newer library never writes past an
 * older application's struct.
 * @param opt the options to fill */
#define mml_trainer_options_init(opt) mml_trainer_options_init_sized((opt), (uint32_t)sizeof(mml_trainer_options))
/** Sets the recommended MoE-MLoRA beyond the paper (since 1.3; what
 * `mml-train --variant moe-tuned` trains, measured in docs/EXPERIMENTS.md):
 * variant MML_VARIANT_MOE and the 1.3 fields of the recommendation:
 * gate_prior 2, gate_lr 1e-2, finetune MML_FINETUNE_ALL at finetune_lr 0
 * (lr) with finetune_patience 10, the others 0 (expert_lr,
 * expert_backbone_lr, expert_other_weight, gate_input: the paper's). Every
 * other field (backbone, widths, lr, batch, callbacks, ...) is left as it
 * is, so call it after mml_trainer_options_init() and before your own
 * changes to them.
 * @param[in,out] opt options initialised by mml_trainer_options_init()
 * @return MML_OK; MML_EINVAL for a NULL opt; MML_EVERSION when
 *         opt->struct_size is too small to hold the 1.3 fields (nothing
 *         written). */
MML_API int mml_trainer_options_moe_tuned(mml_trainer_options *opt);
/** Creates a trainer and its model. The model's shape comes from train
 * (fields, vocabulary sizes, numeric values, domains); val must share its
 * schema. Both data sets are borrowed and must outlive the trainer, as must
 * ctx. Randomness comes from ctx's seed (read at creation, for the initial
 * weights, and when each stage starts, for the shuffles).
 * @param[out] out receives the trainer, owned by the caller (release with
 *             mml_trainer_destroy()); NULL on failure
 * @param ctx the context
 * @param opt the options, or NULL for the defaults
 * @param train the training split (>= 1 row, >= 1 field)
 * @param val the validation split (>= 1 row)
 * @return MML_OK; MML_EINVAL for a NULL out, ctx (no message), train or
 *         val, a bad option (variant, experts_per_domain, batch_size,
 *         patience, max_epochs, lr, n_hidden, hidden, optimizer, first_stage,
 *         a 1.3 field, or one the model refuses), an empty split or more than
 *         4096 fields;
 *         MML_EVERSION for an opt->struct_size (or a backbone options
 *         struct_size) that no release produced; MML_ESHAPE when val has
 *         another number of fields, domains, numeric or multi-hot fields,
 *         or when init_model has another backbone or a parameter of another
 *         name or shape (the message names the first); MML_ESTATE (since
 *         1.3) when init_model gained a domain (add_domain.h);
 *         MML_ENOTFOUND for a backbone that is neither built in nor
 *         registered; MML_ECALLBACK when a registered backbone's callback
 *         fails; MML_ENOMEM. Since 1.3, with a reduce hook: MML_EVERSION for
 *         its struct_size; MML_EINVAL for a bad rank or size, a NULL gather
 *         or abort, and, with more than one worker, a nonzero l2_embedding
 *         or a batch_size below the number of workers. */
MML_API int mml_trainer_create(mml_trainer **out, mml_ctx *ctx, const mml_trainer_options *opt,
                               const mml_dataset *train, const mml_dataset *val);
/** Releases a trainer and its model (mml_trainer_model() becomes invalid);
 * the data sets are not touched. NULL-safe.
 * @param trainer the trainer, or NULL */
MML_API void mml_trainer_destroy(mml_trainer *trainer);

/** Runs one stage: MML_STAGE_JOINT (base, MLoRA) or, for MoE-MLoRA, the
 * stages in order (stage 2 trains every expert in turn; stage 4,
 * MML_STAGE_FINETUNE, only with the finetune option). Appends stage and
 * epoch reports. On failure the interrupted run keeps its best weights so
 * far and the stage stays the next one: running it again trains it again
 * from the current weights (stage 2: from the first expert). Stopped by the
 * checkpoint callback, the stage is paused instead: running it again
 * continues with its next epoch (stage 2: with the same expert).
 * @param trainer the trainer
 * @param stage an MML_STAGE_* value: the variant's next stage
 * @return MML_OK; MML_EINVAL for a NULL trainer (no message); MML_ESTATE
 *         when stage is not the next stage (out of order, unknown, or
 *         already run) or has nothing to train, once the model was handed
 *         over (mml_trainer_take_model()), or when called from a callback;
 *         MML_ECANCELED if the progress callback asked to stop (the stage's
 *         best weights so far are restored) or the checkpoint callback did
 *         (the stage is paused); MML_ECALLBACK when the validation callback returned
 *         a negative value (or a registered backbone's callback failed);
 *         MML_ENONFINITE when a logit becomes NaN or infinite (diverged
 *         training); MML_ENOMEM; or another code from the model's passes.
 *         Since 1.3, with a reduce hook of more than one worker, a failure
 *         on one worker inside a step or a validation is returned on every
 *         worker with that worker's code and message ("worker 1 of 2:
 *         ..."), and MML_ECALLBACK when a hook callback fails. */
MML_API int mml_trainer_run_stage(mml_trainer *trainer, int32_t stage);
/** Runs every stage of the variant that has not run yet, in order.
 * @param trainer the trainer
 * @return MML_OK (also when no stage is left); MML_EINVAL for a NULL
 *         trainer (no message); MML_ESTATE once the model was handed over or
 *         from a callback; else the code of the first failing
 *         mml_trainer_run_stage(). */
MML_API int mml_trainer_run(mml_trainer *trainer);

/** The mixture mode of the trained model for its variant (final prediction).
 * @param trainer the trainer
 * @return MML_MIX_NONE (base), MML_MIX_DOMAIN (MLoRA) or MML_MIX_GATED
 *         (MoE-MLoRA); MML_MIX_NONE for a NULL trainer */
MML_API int32_t mml_trainer_mix_mode(const mml_trainer *trainer);
/** Adds the logits of every row of ds, computed with mix_mode (MML_MIX_*,
 * dropout off, in batches of batch_size rows), to metrics, which is not
 * reset first. ds and metrics are used during the call only.
 * @param trainer the trainer
 * @param ds a data set with the training split's schema
 * @param mix_mode an MML_MIX_* value, e.g. mml_trainer_mix_mode()
 * @param metrics an accumulator with the data set's D domains
 * @return MML_OK; MML_EINVAL for a NULL trainer (no message), a NULL ds or
 *         metrics, or an unknown mix_mode; MML_ESHAPE when metrics or ds
 *         has another D, or ds another number of fields, numeric or
 *         multi-hot fields; MML_ESTATE for a mix_mode the model cannot run,
 *         once the model was handed over, or from a callback;
 *         MML_ENONFINITE for a NaN or infinite logit; MML_ENOMEM; or another
 *         code from the model's forward pass. On failure metrics keeps the
 *         batches added before the failing one. Since 1.3, with a reduce
 *         hook of more than one worker (mml_reduce_hook), this is a
 *         collective call: every worker evaluates its range of ds's rows and
 *         metrics receives every worker's rows (in rank order), so that
 *         every worker computes the same exact metrics; a failure on one
 *         worker is returned on every worker ("worker 1 of 2: ..."), and
 *         MML_ECALLBACK when a hook callback fails. */
MML_API int mml_trainer_evaluate(mml_trainer *trainer, const mml_dataset *ds, int32_t mix_mode,
                                 mml_metrics *metrics);

/** The trainer's model.
 * @param trainer the trainer
 * @return a borrowed pointer, owned by the trainer and valid until
 *         mml_trainer_destroy() (never destroy it yourself); NULL for a NULL
 *         trainer or once mml_trainer_take_model() handed the model over */
MML_API mml_model *mml_trainer_model(mml_trainer *trainer);
/** Saves a checkpoint (since 1.2): the model file of mml_model_save() (the
 * model's current weights; during a stage, those of its last epoch rather
 * than its best) with the trainer's state as an optional section, so that
 * mml_model_load() reads it as a plain model and mml_trainer_resume()
 * continues the run. The file is replaced atomically. Call it between
 * stages, after a run, or from the checkpoint callback (between two epochs).
 * The state: the next stage; the running stage's (or expert's) epoch,
 * early-stopping state (best score and epoch, epochs without improvement,
 * the best epoch's weights), optimiser moments and step counts; the built-in
 * backbones' dropout stream; every stage and epoch report so far. A
 * registered backbone's own random state is not saved.
 * @param trainer the trainer
 * @param path the file; its directory must be writable
 * @return MML_OK; MML_EINVAL for a NULL trainer (no message) or path;
 *         MML_ESTATE once the model was handed over; MML_EIO when the file
 *         cannot be written (an older file of that name is kept); MML_ENOMEM;
 *         MML_ECALLBACK from a registered backbone's save callback. */
MML_API int mml_trainer_save(const mml_trainer *trainer, const char *path);
/** Makes a trainer from a checkpoint of mml_trainer_save() (since 1.2): its
 * model's weights and the saved state, so that running it continues where
 * the saved trainer was and, with the same context seed and thread count,
 * data and options, ends bitwise identical to a run never interrupted. The
 * options must describe the saved configuration; init_model and first_stage
 * are ignored. The callbacks, lr, patience, dropout and max_epochs (at least
 * the epochs the running stage has done) may differ, at the cost of that
 * identity.
 * @param[out] out receives the trainer (release with mml_trainer_destroy());
 *             NULL on failure
 * @param ctx the context (with the registered backbones the file needs)
 * @param opt the options, or NULL for the defaults
 * @param path the checkpoint
 * @param train the training split, as for mml_trainer_create()
 * @param val the validation split
 * @return MML_OK; MML_EINVAL for a NULL out, ctx (no message) or path, or as
 *         mml_trainer_create(); MML_ENOTFOUND for a model file without
 *         trainer state; MML_ESTATE naming the option that differs from the
 *         saved model or state (variant, backbone, embed_dim, alpha, hidden,
 *         experts_per_domain, optimizer, batch_size, gate_top_k, max_epochs);
 *         MML_ESHAPE when the data sets do not fit the model; the codes of
 *         mml_model_load() for a damaged file (MML_ECORRUPT naming the field
 *         of the trainer state, MML_ETRUNCATED, MML_ECHECKSUM, ...);
 *         MML_ENOMEM. */
MML_API int mml_trainer_resume(mml_trainer **out, mml_ctx *ctx, const mml_trainer_options *opt,
                               const char *path, const mml_dataset *train,
                               const mml_dataset *val);
/** Hands the trained model over to the caller (since 1.2). The model then
 * belongs to the caller: it outlives the trainer, needs neither the trainer
 * nor the data sets, and its final mixture mode (what mml_model's
 * predictions use) is set to mml_trainer_mix_mode(). Afterwards the trainer
 * refuses to run, evaluate or save (MML_ESTATE), mml_trainer_model() returns
 * NULL, and a paused stage is dropped; its reports stay readable and
 * mml_trainer_destroy() releases the rest. The model still needs the
 * trainer's context.
 * @param trainer the trainer
 * @param[out] out receives the model, owned by the caller (release with
 *             mml_model_destroy()); NULL on failure
 * @return MML_OK; MML_EINVAL for a NULL trainer (no message) or out;
 *         MML_ESTATE when the model was already handed over, or when called
 *         from a callback of the running trainer. */
MML_API int mml_trainer_take_model(mml_trainer *trainer, mml_model **out);
/** The stage that runs next (since 1.2): what mml_trainer_run_stage()
 * accepts, e.g. to evaluate between the stages of a resumed run. Read-only.
 * @param trainer the trainer
 * @return an MML_STAGE_* value; -1 when every stage has run, and for a NULL
 *         trainer */
MML_API int32_t mml_trainer_next_stage(const mml_trainer *trainer);
/** The number of stage reports so far (one per stage run, one per expert in
 * stage 2).
 * @param trainer the trainer
 * @return the count; 0 for a NULL trainer */
MML_API int64_t mml_trainer_n_stage_reports(const mml_trainer *trainer);
/** Copies one stage report. Use the mml_trainer_stage_report() macro.
 * @param trainer the trainer
 * @param index the report, 0 .. mml_trainer_n_stage_reports() - 1
 * @param[out] out receives the report: struct_size bytes written, and
 *             out->struct_size set to struct_size; not written on failure
 * @param struct_size the caller's sizeof(mml_stage_report)
 * @return MML_OK; MML_EINVAL for a NULL trainer or out (no message);
 *         MML_ERANGE for index out of range; MML_EVERSION (nothing written)
 *         for a size that no release produced. */
MML_API int mml_trainer_stage_report_sized(const mml_trainer *trainer, int64_t index,
                                           mml_stage_report *out, uint32_t struct_size);
/** mml_trainer_stage_report_sized() with the caller's
 * sizeof(mml_stage_report), so that a newer library never writes past an
 * older application's struct.
 * @param trainer the trainer
 * @param index the report
 * @param out the report to fill */
#define mml_trainer_stage_report(trainer, index, out)                                            \
    mml_trainer_stage_report_sized((trainer), (index), (out), (uint32_t)sizeof(mml_stage_report))
/** The number of epoch reports so far (one per completed epoch, over all
 * stages and experts).
 * @param trainer the trainer
 * @return the count; 0 for a NULL trainer */
MML_API int64_t mml_trainer_n_epoch_reports(const mml_trainer *trainer);
/** Copies one epoch report. Use the mml_trainer_epoch_report() macro.
 * @param trainer the trainer
 * @param index the report, 0 .. mml_trainer_n_epoch_reports() - 1
 * @param[out] out receives the report: struct_size bytes written, and
 *             out->struct_size set to struct_size; not written on failure
 * @param struct_size the caller's sizeof(mml_epoch_report)
 * @return MML_OK; MML_EINVAL for a NULL trainer or out (no message);
 *         MML_ERANGE for index out of range; MML_EVERSION (nothing written)
 *         for a size that no release produced. */
MML_API int mml_trainer_epoch_report_sized(const mml_trainer *trainer, int64_t index,
                                           mml_epoch_report *out, uint32_t struct_size);
/** mml_trainer_epoch_report_sized() with the caller's
 * sizeof(mml_epoch_report), so that a newer library never writes past an
 * older application's struct.
 * @param trainer the trainer
 * @param index the report
 * @param out the report to fill */
#define mml_trainer_epoch_report(trainer, index, out)                                            \
    mml_trainer_epoch_report_sized((trainer), (index), (out), (uint32_t)sizeof(mml_epoch_report))

/** The seed of a stage's shuffles (since 1.3): the trainer's batcher for
 * (stage, expert) has mml_batcher_options.seed =
 * mml_trainer_shuffle_seed(mml_ctx_seed(ctx), stage, expert), so a pipeline
 * composed from the pieces shuffles exactly as the trainer does. The shared
 * model's joint stage and MoE-MLoRA's stage 1 get the same seed.
 * @param ctx_seed the context's seed (mml_ctx_seed())
 * @param stage an MML_STAGE_* value
 * @param expert stage 2: the expert; else -1
 * @return the batcher seed */
MML_API uint64_t mml_trainer_shuffle_seed(uint64_t ctx_seed, int32_t stage, int32_t expert);

MML_END_DECLS

#endif
