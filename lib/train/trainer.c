#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"
#include "moemlora/loss.h"
#include "moemlora/optimizer.h"
#include "moemlora/trainer.h"

struct mml_trainer {
    mml_ctx *ctx;
    mml_trainer_options opt;
    int32_t hidden[64];
    const mml_dataset *train, *val;
    int32_t D, E;
    mml_model *model;
    int32_t next_stage; /* the stage that may run next */
    float *logits, *dlogits;
    size_t cap_logits, cap_dlogits;
    mml_metrics *val_metrics;
    mml_stage_report *stages;
    int64_t n_stages, cap_stages;
    mml_epoch_report *epochs;
    int64_t n_epochs, cap_epochs;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int mml_trainer_options_init_sized(mml_trainer_options *out, uint32_t struct_size)
{
    mml_trainer_options full, *opt = &full;
    static const int32_t hidden[3] = {256, 128, 64};
    memset(opt, 0, sizeof *opt);
    opt->variant = MML_VARIANT_MOE;
    opt->backbone = "mlp";
    opt->experts_per_domain = 1;
    opt->alpha = 16;
    opt->embed_dim = 8;
    opt->n_hidden = 3;
    opt->hidden = hidden;
    opt->dropout = 0.5f;
    opt->lr = 1e-3f;
    opt->batch_size = 1024;
    opt->patience = 3;
    opt->max_epochs = 50;
    opt->optimizer = MML_OPT_ADAM;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_trainer_options);
}

void mml_trainer_destroy(mml_trainer *t)
{
    if (!t)
        return;
    mml_ctx *ctx = t->ctx;
    mml_model_destroy(t->model);
    mml_metrics_destroy(t->val_metrics);
    mml__free(ctx, t->logits, t->cap_logits * sizeof(float));
    mml__free(ctx, t->dlogits, t->cap_dlogits * sizeof(float));
    mml__free(ctx, t->stages, (size_t)t->cap_stages * sizeof *t->stages);
    mml__free(ctx, t->epochs, (size_t)t->cap_epochs * sizeof *t->epochs);
    mml__free(ctx, t, sizeof *t);
}

int mml_trainer_create(mml_trainer **out, mml_ctx *ctx, const mml_trainer_options *opt,
                       const mml_dataset *train, const mml_dataset *val)
{
    if (out)
        *out = NULL;
    if (!out || !ctx || !train || !val)
        return mml__error(ctx, MML_EINVAL, "trainer_create: NULL argument");
    mml_trainer_options o;
    int rc = MML__COPY_OPTIONS(ctx, &o, opt, mml_trainer_options, "trainer");
    if (rc < 0)
        return rc;
    if (o.variant < MML_VARIANT_BASE || o.variant > MML_VARIANT_MOE)
        return mml__error(ctx, MML_EINVAL, "trainer: unknown variant %d", o.variant);
    if (o.experts_per_domain < 1 || o.batch_size < 1 || o.patience < 1 || o.max_epochs < 1 ||
        !(o.lr > 0.0f) || !isfinite(o.lr) || o.n_hidden < 1 || o.n_hidden > 64 || !o.hidden)
        return mml__error(ctx, MML_EINVAL,
                          "trainer: experts per domain %d, batch %lld, patience %d, max epochs %d, "
                          "lr %g or %d hidden layers invalid",
                          o.experts_per_domain, (long long)o.batch_size, o.patience, o.max_epochs,
                          (double)o.lr, o.n_hidden);
    if (o.optimizer < MML_OPT_SGD || o.optimizer > MML_OPT_ADAGRAD)
        return mml__error(ctx, MML_EINVAL, "trainer: unknown optimiser kind %d", o.optimizer);
    int32_t F = mml_dataset_n_fields(train), D = mml_dataset_n_domains(train);
    if (F < 1 || D < 1 || mml_dataset_n_rows(train) < 1 || mml_dataset_n_rows(val) < 1)
        return mml__error(ctx, MML_EINVAL, "trainer: empty training or validation split");
    if (mml_dataset_n_fields(val) != F || mml_dataset_n_domains(val) != D ||
        mml_dataset_n_dense(val) != mml_dataset_n_dense(train) ||
        mml_dataset_n_multihot(val) != mml_dataset_n_multihot(train))
        return mml__error(ctx, MML_ESHAPE, "trainer: validation split has another schema");
    mml_trainer *t = mml__calloc(ctx, 1, sizeof *t);
    if (!t)
        return mml__error(ctx, MML_ENOMEM, "trainer: out of memory");
    t->ctx = ctx;
    t->opt = o;
    memcpy(t->hidden, o.hidden, sizeof(int32_t) * (size_t)o.n_hidden);
    t->opt.hidden = t->hidden;
    t->train = train;
    t->val = val;
    t->D = D;
    t->E = o.variant == MML_VARIANT_BASE ? 0 : o.variant == MML_VARIANT_MLORA ? D : o.experts_per_domain * D;
    t->next_stage = o.variant == MML_VARIANT_MOE ? MML_STAGE_BACKBONE : MML_STAGE_JOINT;
    int64_t sizes[4096];
    if (F > 4096) {
        mml_trainer_destroy(t);
        return mml__error(ctx, MML_EINVAL, "trainer: %d fields (at most 4096)", F);
    }
    for (int32_t f = 0; f < F; f++)
        sizes[f] = mml_dataset_field_size(train, f);
    mml_model_options mo;
    mml_model_options_init(&mo);
    mo.backbone = o.backbone;
    mo.backbone_options = o.backbone_options;
    mo.n_fields = F;
    mo.field_sizes = sizes;
    mo.embed_dim = o.embed_dim;
    mo.n_dense = mml_dataset_n_dense(train);
    mo.n_domains = D;
    mo.n_experts = t->E;
    mo.gate = o.variant == MML_VARIANT_MOE;
    mo.alpha = o.alpha;
    mo.n_hidden = o.n_hidden;
    mo.hidden = t->hidden;
    mo.dropout = o.dropout;
    mo.gate_top_k = o.gate_top_k;
    mo.l2_embedding = o.l2_embedding;
    mo.l2_dense = o.l2_dense;
    int32_t M = mml_dataset_n_multihot(train);
    int64_t *mh_sizes = NULL;
    if (M > 0) {
        mh_sizes = mml__alloc(ctx, sizeof(int64_t) * (size_t)M);
        if (!mh_sizes) {
            mml_trainer_destroy(t);
            return mml__error(ctx, MML_ENOMEM, "trainer: out of memory");
        }
        for (int32_t m = 0; m < M; m++)
            mh_sizes[m] = mml_dataset_multihot_size(train, m);
        mo.n_multihot = M;
        mo.multihot_sizes = mh_sizes;
    }
    rc = mml_model_create(&t->model, ctx, &mo);
    mml__free(ctx, mh_sizes, sizeof(int64_t) * (size_t)(M > 0 ? M : 0));
    if (rc >= 0)
        rc = mml_metrics_create(&t->val_metrics, ctx, D);
    if (rc >= 0)
        rc = mml__ensure_floats(ctx, &t->logits, &t->cap_logits, (size_t)o.batch_size);
    if (rc >= 0)
        rc = mml__ensure_floats(ctx, &t->dlogits, &t->cap_dlogits, (size_t)o.batch_size);
    if (rc < 0) {
        mml_trainer_destroy(t);
        return rc;
    }
    *out = t;
    return MML_OK;
}

static int stage_mode(const mml_trainer *t, int32_t stage)
{
    switch (stage) {
    case MML_STAGE_JOINT: return t->opt.variant == MML_VARIANT_MLORA ? MML_MIX_DOMAIN : MML_MIX_NONE;
    case MML_STAGE_BACKBONE: return MML_MIX_NONE;
    case MML_STAGE_EXPERTS: return MML_MIX_SINGLE;
    default: return MML_MIX_GATED;
    }
}

int32_t mml_trainer_mix_mode(const mml_trainer *t)
{
    if (!t)
        return MML_MIX_NONE;
    return t->opt.variant == MML_VARIANT_MOE ? MML_MIX_GATED : stage_mode(t, MML_STAGE_JOINT);
}

/* Marks what the stage trains; returns the number of trainable parameters, listed in out. */
static int64_t select_trainable(mml_trainer *t, int32_t stage, int32_t expert, mml_param **out)
{
    int64_t n = 0;
    for (int64_t i = 0; i < mml_model_n_params(t->model); i++) {
        mml_param *p = mml_model_param(t->model, i);
        int train;
        switch (stage) {
        case MML_STAGE_JOINT: train = p->group != MML_GROUP_GATE; break;
        case MML_STAGE_BACKBONE: train = p->group == MML_GROUP_EMBEDDING || p->group == MML_GROUP_BACKBONE; break;
        case MML_STAGE_EXPERTS: train = p->group == MML_GROUP_EXPERT && p->expert == expert; break;
        default: train = p->group == MML_GROUP_GATE; break;
        }
        p->frozen = !train;
        if (train)
            out[n++] = p;
    }
    return n;
}

static int grow_reports(mml_trainer *t, void **arr, int64_t *cap, int64_t n, size_t elem)
{
    if (n < *cap)
        return MML_OK;
    int64_t nc = *cap ? 2 * *cap : 16;
    void *p = mml__alloc(t->ctx, (size_t)nc * elem);
    if (!p)
        return mml__error(t->ctx, MML_ENOMEM, "trainer: out of memory");
    if (*cap)
        memcpy(p, *arr, (size_t)*cap * elem);
    mml__free(t->ctx, *arr, (size_t)*cap * elem);
    *arr = p;
    *cap = nc;
    return MML_OK;
}

/* Logits of every row of ds (or only of domain's rows when domain >= 0) into metrics. */
static int evaluate(mml_trainer *t, const mml_dataset *ds, int32_t mode, int32_t expert,
                    int32_t domain, mml_metrics *metrics)
{
    int rc;
    if (domain < 0) {
        int64_t n = mml_dataset_n_rows(ds);
        for (int64_t start = 0; start < n; start += t->opt.batch_size) {
            int64_t cnt = n - start < t->opt.batch_size ? n - start : t->opt.batch_size;
            mml_batch_view b;
            if ((rc = mml_dataset_view(ds, start, cnt, &b)) < 0 ||
                (rc = mml_model_forward(t->model, &b, mode, expert, 0, t->logits)) < 0 ||
                (rc = mml_metrics_add(metrics, t->logits, b.labels, b.domain, cnt)) < 0)
                return rc;
        }
        return MML_OK;
    }
    mml_batcher_options bo;
    mml_batcher_options_init(&bo);
    bo.batch_size = t->opt.batch_size;
    bo.shuffle = 0;
    bo.domain = domain;
    mml_batcher *bt = NULL;
    if ((rc = mml_batcher_create(&bt, t->ctx, ds, &bo)) < 0)
        return rc;
    if ((rc = mml_batcher_start_epoch(bt, 0)) >= 0) {
        mml_batch_view b;
        while ((rc = mml_batcher_next(bt, &b)) == 1) {
            if ((rc = mml_model_forward(t->model, &b, mode, expert, 0, t->logits)) < 0 ||
                (rc = mml_metrics_add(metrics, t->logits, b.labels, b.domain, b.n_rows)) < 0)
                break;
        }
    }
    mml_batcher_destroy(bt);
    return rc < 0 ? rc : MML_OK;
}

static int validation_score(mml_trainer *t, int32_t stage, int32_t mode, int32_t expert,
                            int32_t epoch, double *score, int *defined)
{
    *defined = 1;
    if (t->opt.validate) {
        int rc = t->opt.validate(t->opt.validate_user, stage, expert, epoch, score);
        if (rc < 0)
            return mml__error(t->ctx, MML_ECALLBACK, "trainer: validation callback returned %d", rc);
        return MML_OK;
    }
    int32_t domain = expert >= 0 ? expert % t->D : -1;
    mml_metrics_reset(t->val_metrics);
    int rc = evaluate(t, t->val, mode, expert, domain, t->val_metrics);
    if (rc < 0)
        return rc;
    mml_metrics_summary s;
    if ((rc = mml_metrics_compute(t->val_metrics, &s)) < 0)
        return rc;
    if (domain >= 0) {
        mml_domain_metrics dm;
        if ((rc = mml_metrics_domain(t->val_metrics, domain, &dm)) < 0)
            return rc;
        *score = dm.auc_defined ? dm.auc : 0.0;
        *defined = dm.auc_defined;
    } else {
        *score = s.mean_auc;
        *defined = s.n_domains_with_auc > 0;
    }
    return MML_OK;
}

static double median(double *v, int32_t n)
{
    for (int32_t i = 1; i < n; i++)
        for (int32_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    if (n == 0)
        return 0.0;
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t shuffle_seed(const mml_trainer *t, int32_t stage, int32_t expert)
{
    /* The joint stage of the shared model and MoE's backbone stage shuffle alike. */
    uint64_t key = stage == MML_STAGE_BACKBONE ? (uint64_t)MML_STAGE_JOINT : (uint64_t)stage;
    uint64_t x = t->ctx->seed ^ (0x9E3779B97F4A7C15ull * (key * 65536u + (uint64_t)(expert + 1)));
    x = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}

/* "the joint stage", "expert 3 (domain 1)", ... for messages. */
static const char *who(const mml_trainer *t, int32_t stage, int32_t expert, char *buf, size_t size)
{
    static const char *const names[4] = {"the joint stage", "stage 1 (backbone)",
                                         "stage 2 (experts)", "stage 3 (gate)"};
    if (expert >= 0)
        snprintf(buf, size, "stage 2, expert %d (domain %d)", (int)expert, (int)(expert % t->D));
    else
        snprintf(buf, size, "%s", stage >= 0 && stage < 4 ? names[stage] : "a stage");
    return buf;
}

/* Copies the trainable values into buf (restore = 0) or back (restore = 1). */
static void snapshot(mml_param **params, int64_t n, float *buf, int restore)
{
    size_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t size = (size_t)mml_param_size(params[i]);
        if (restore)
            memcpy(params[i]->value, buf + off, size * sizeof(float));
        else
            memcpy(buf + off, params[i]->value, size * sizeof(float));
        off += size;
    }
}

/* One early-stopped run over the trainable set of (stage, expert). */
static int run_one(mml_trainer *t, int32_t stage, int32_t expert)
{
    mml_ctx *ctx = t->ctx;
    double t_start = now_s();
    int64_t np = mml_model_n_params(t->model);
    mml_param **params = mml__alloc(ctx, sizeof(mml_param *) * (size_t)np);
    if (!params)
        return mml__error(ctx, MML_ENOMEM, "trainer: out of memory");
    int64_t nt = select_trainable(t, stage, expert, params);
    size_t snap_n = 0;
    for (int64_t i = 0; i < nt; i++)
        snap_n += (size_t)mml_param_size(params[i]);
    int32_t mode = stage_mode(t, stage);
    mml_optimizer *opt = NULL;
    mml_batcher *bt = NULL;
    float *best = NULL;
    double *rates = mml__alloc(ctx, sizeof(double) * (size_t)t->opt.max_epochs);
    int rc = rates ? MML_OK : mml__error(ctx, MML_ENOMEM, "trainer: out of memory");
    if (rc >= 0 && nt == 0)
        rc = mml__error(ctx, MML_ESTATE, "trainer: stage %d has nothing to train", stage);
    if (rc >= 0 && !(best = mml__alloc(ctx, snap_n * sizeof(float))))
        rc = mml__error(ctx, MML_ENOMEM, "trainer: out of memory");
    if (rc >= 0) {
        mml_optimizer_options oo;
        mml_optimizer_options_init(&oo);
        oo.kind = t->opt.optimizer;
        oo.lr = t->opt.lr;
        rc = mml_optimizer_create(&opt, ctx, &oo, params, nt);
    }
    if (rc >= 0) {
        mml_batcher_options bo;
        mml_batcher_options_init(&bo);
        bo.batch_size = t->opt.batch_size;
        bo.domain = expert >= 0 ? expert % t->D : -1;
        bo.seed = shuffle_seed(t, stage, expert);
        rc = mml_batcher_create(&bt, ctx, t->train, &bo);
    }
    double best_score = -INFINITY;
    int32_t best_epoch = 0, epoch = 0, bad = 0;
    int canceled = 0, diverged = 0;
    uint32_t flags = 0;
    char tag[64];
    /* The weights the stage starts from: what a divergence before the first
     * validated epoch falls back to. */
    if (rc >= 0)
        snapshot(params, nt, best, 0);
    if (rc >= 0 && mml_batcher_n_rows(bt) == 0) {
        flags |= MML_STAGE_NO_TRAINING_ROWS;
        mml__log(ctx, MML_LOG_WARN, "%s: the domain has no training rows: the expert stays "
                 "as it was made", who(t, stage, expert, tag, sizeof tag));
    }
    for (epoch = 1; rc >= 0 && epoch <= t->opt.max_epochs && !canceled; epoch++) {
        if ((rc = mml_batcher_start_epoch(bt, (uint64_t)epoch)) < 0)
            break;
        int64_t steps = mml_batcher_n_batches(bt), step = 0, rows = 0;
        double loss_sum = 0.0, t0 = now_s();
        mml_batch_view b;
        while ((rc = mml_batcher_next(bt, &b)) == 1) {
            double loss, penalty; /* L2 (0 unless the model's lambdas are > 0) */
            mml_params_zero_grad(params, nt);
            if ((rc = mml_model_forward(t->model, &b, mode, expert, 1, t->logits)) < 0 ||
                (rc = mml_bce_with_logits(ctx, t->logits, b.labels, b.weights, b.n_rows, &loss,
                                          t->dlogits)) < 0 ||
                (rc = mml_model_backward(t->model, t->dlogits)) < 0 ||
                (rc = mml_model_regularization(t->model, &penalty)) < 0 ||
                !isfinite(loss + penalty) ||
                (rc = mml_optimizer_step(opt)) < 0) {
                /* Overflowing weights surface as a non-finite logit or loss. */
                if (rc == MML_ENONFINITE || (rc >= 0 && !isfinite(loss + penalty))) {
                    diverged = 1;
                    rc = MML_OK;
                }
                break;
            }
            loss_sum += loss + penalty;
            rows += b.n_rows;
            step++;
            if (t->opt.progress && (step % 16 == 0 || step == steps)) {
                double el = now_s() - t0;
                mml_progress pr = {sizeof pr, 0, stage, expert, epoch, t->opt.max_epochs, step, steps,
                                   el > 0 ? (double)rows / el : 0.0, loss_sum / (double)step,
                                   step ? el * (double)(steps - step) / (double)step : 0.0};
                if (t->opt.progress(t->opt.progress_user, &pr)) {
                    canceled = 1;
                    break;
                }
            }
        }
        if (rc < 0 || canceled)
            break;
        /* Four times a coin flip's loss on the training rows: the weights ran away. */
        if (diverged || (step > 0 && loss_sum / (double)step > 4.0 * 0.69314718055994531)) {
            diverged = 1;
            mml__log(ctx, MML_LOG_WARN, "%s: the training loss diverged in epoch %d (mean %.4g)",
                     who(t, stage, expert, tag, sizeof tag), (int)epoch,
                     step ? loss_sum / (double)step : 0.0);
            epoch++;
            break;
        }
        double train_s = now_s() - t0;
        double score = 0.0;
        int defined = 1;
        if ((rc = validation_score(t, stage, mode, expert, epoch, &score, &defined)) < 0)
            break;
        if (!defined && !(flags & MML_STAGE_UNVALIDATED)) {
            flags |= MML_STAGE_UNVALIDATED;
            mml__log(ctx, MML_LOG_WARN,
                     "%s: %s, so the validation AUC is undefined and early stopping cannot work "
                     "(epoch %d is kept)", who(t, stage, expert, tag, sizeof tag),
                     expert >= 0 ? "the domain's validation rows hold one class or none"
                                 : "no domain's validation rows hold both classes",
                     best_epoch > 0 ? (int)best_epoch : (int)epoch);
        }
        rates[epoch - 1] = train_s > 0 ? (double)rows / train_s : 0.0;
        if ((rc = grow_reports(t, (void **)&t->epochs, &t->cap_epochs, t->n_epochs, sizeof *t->epochs)) < 0)
            break;
        t->epochs[t->n_epochs++] = (mml_epoch_report){sizeof(mml_epoch_report), stage, expert, epoch,
                                                      step ? loss_sum / (double)step : 0.0, score,
                                                      train_s, rates[epoch - 1]};
        mml__log(ctx, MML_LOG_INFO, "%s, epoch %d: train loss %.5f, validation %.5f, %.0f rows/s",
                 who(t, stage, expert, tag, sizeof tag), (int)epoch, step ? loss_sum / (double)step : 0.0, score,
                 rates[epoch - 1]);
        if (score > best_score) {
            best_score = score;
            best_epoch = epoch;
            bad = 0;
            snapshot(params, nt, best, 0);
        } else if (++bad >= t->opt.patience) {
            epoch++;
            break;
        }
    }
    int32_t epochs_run = epoch - 1;
    if (rc >= 0 && (best_epoch > 0 || diverged))
        snapshot(params, nt, best, 1);
    if (diverged)
        flags |= MML_STAGE_DIVERGED;
    if (rc >= 0 && (rc = grow_reports(t, (void **)&t->stages, &t->cap_stages, t->n_stages,
                                      sizeof *t->stages)) >= 0) {
        t->stages[t->n_stages++] = (mml_stage_report){
            sizeof(mml_stage_report), stage, expert, expert >= 0 ? expert % t->D : -1, epochs_run, best_epoch,
            best_epoch > 0 ? best_score : 0.0, now_s() - t_start,
            median(rates, epochs_run), flags, 0};
        mml__log(ctx, MML_LOG_INFO, "%s done: %d epochs, best epoch %d (%.5f)",
                 who(t, stage, expert, tag, sizeof tag), (int)epochs_run, (int)best_epoch,
                 best_epoch > 0 ? best_score : 0.0);
    }
    /* Leave nothing frozen behind: the next stage sets its own flags. */
    for (int64_t i = 0; i < mml_model_n_params(t->model); i++)
        mml_model_param(t->model, i)->frozen = 0;
    mml_batcher_destroy(bt);
    mml_optimizer_destroy(opt);
    mml__free(ctx, best, snap_n * sizeof(float));
    mml__free(ctx, rates, sizeof(double) * (size_t)t->opt.max_epochs);
    mml__free(ctx, params, sizeof(mml_param *) * (size_t)np);
    if (rc >= 0 && canceled)
        rc = mml__error(ctx, MML_ECANCELED, "trainer: canceled by the progress callback");
    if (rc >= 0 && diverged)
        rc = mml__error(ctx, MML_ENONFINITE,
                        "trainer: %s: the training loss diverged (non-finite, or a mean above "
                        "4 ln 2 over an epoch), so it stopped and kept the weights of %s; try a "
                        "lower learning rate", who(t, stage, expert, tag, sizeof tag),
                        best_epoch > 0 ? "its best epoch" : "its start");
    return rc;
}

int mml_trainer_run_stage(mml_trainer *t, int32_t stage)
{
    if (!t)
        return MML_EINVAL;
    if (stage != t->next_stage)
        return mml__error(t->ctx, MML_ESTATE, "trainer: stage %d cannot run now (next is %d)",
                          stage, t->next_stage);
    int rc;
    if (stage == MML_STAGE_EXPERTS) {
        for (int32_t e = 0; e < t->E; e++)
            if ((rc = run_one(t, stage, e)) < 0)
                return rc;
    } else if ((rc = run_one(t, stage, -1)) < 0) {
        return rc;
    }
    t->next_stage = stage == MML_STAGE_JOINT || stage == MML_STAGE_GATE ? -1 : stage + 1;
    return MML_OK;
}

int mml_trainer_run(mml_trainer *t)
{
    if (!t)
        return MML_EINVAL;
    while (t->next_stage >= 0) {
        int rc = mml_trainer_run_stage(t, t->next_stage);
        if (rc < 0)
            return rc;
    }
    return MML_OK;
}

int mml_trainer_evaluate(mml_trainer *t, const mml_dataset *ds, int32_t mix_mode,
                         mml_metrics *metrics)
{
    if (!t)
        return MML_EINVAL;
    if (!ds || !metrics)
        return mml__error(t->ctx, MML_EINVAL, "trainer_evaluate: NULL argument");
    if (mml_metrics_n_domains(metrics) != t->D || mml_dataset_n_domains(ds) != t->D)
        return mml__error(t->ctx, MML_ESHAPE, "trainer_evaluate: %d domains expected", t->D);
    return evaluate(t, ds, mix_mode, 0, -1, metrics);
}

mml_model *mml_trainer_model(mml_trainer *t) { return t ? t->model : NULL; }
int64_t mml_trainer_n_stage_reports(const mml_trainer *t) { return t ? t->n_stages : 0; }
/* Report i of n (each `size` bytes at base, struct_size first) into the
 * caller's struct of struct_size bytes. */
static int copy_report(const mml_trainer *t, const void *base, int64_t n, size_t size, int64_t i,
                       void *out, uint32_t struct_size, const uint32_t *older, const char *what)
{
    if (!t || !out)
        return MML_EINVAL;
    if (i < 0 || i >= n)
        return mml__error(t->ctx, MML_ERANGE, "trainer: %s index %lld not in 0..%lld", what,
                          (long long)i, (long long)n - 1);
    return mml__write_versioned(t->ctx, out, (const char *)base + (size_t)i * size, size,
                                struct_size, older, what);
}

int mml_trainer_stage_report_sized(const mml_trainer *t, int64_t i, mml_stage_report *out,
                                   uint32_t struct_size)
{
    return copy_report(t, t ? t->stages : NULL, t ? t->n_stages : 0, sizeof *out, i, out,
                       struct_size, MML__OLDER_SIZES_mml_stage_report, "mml_stage_report");
}
int64_t mml_trainer_n_epoch_reports(const mml_trainer *t) { return t ? t->n_epochs : 0; }
int mml_trainer_epoch_report_sized(const mml_trainer *t, int64_t i, mml_epoch_report *out,
                                   uint32_t struct_size)
{
    return copy_report(t, t ? t->epochs : NULL, t ? t->n_epochs : 0, sizeof *out, i, out,
                       struct_size, MML__OLDER_SIZES_mml_epoch_report, "mml_epoch_report");
}
