#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backbones/backbones.h"
#include "core/bytes.h"
#include "core/internal.h"
#include "model/model_file.h"
#include "model/model_internal.h"
#include "moemlora/loss.h"
#include "moemlora/optimizer.h"
#include "moemlora/trainer.h"
#include "data/data_internal.h"
#include "nn/optimizer_internal.h"
#include "train/reduce.h"
#include "train/trainer_internal.h"

/* The stage (or expert) being trained, between two epochs: what a checkpoint
 * saves besides the weights. */
typedef struct run_state {
    int active;
    int32_t stage, expert, mode;
    int32_t epoch;      /* epochs completed */
    int32_t best_epoch; /* 0: none improved yet */
    int32_t bad;        /* epochs since the best */
    uint32_t flags;     /* mml_stage_flag bits so far */
    double best_score;
    double seconds;     /* wall time of the earlier sessions (paused or saved) */
    double t_start;     /* this session's start */
    int64_t np, nt;     /* params has np slots, the first nt trainable */
    mml_param **params;
    size_t snap_n;
    float *best;        /* the best epoch's trainable values (or the start's) */
    double *rates;      /* max_epochs: rows per second of each epoch */
    mml_optimizer *opt;
    mml_batcher *bt;
    /* Since 1.3: the last n2 of the nt trainable parameters step with opt2
     * (stage 2's embeddings and backbone at expert_backbone_lr). */
    int64_t n2;
    mml_optimizer *opt2;
} run_state;

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
    run_state run;
    int running; /* inside run_one: the callbacks may only read */
    mml__dp *dp; /* data-parallel training (lib/train/reduce.c), or NULL */
    float *wbuf; /* batch_size row weights (stage 2 with expert_other_weight) */
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
    opt->first_stage = -1;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_trainer_options);
}

static void run_free(mml_trainer *t, run_state *r);

void mml_trainer_destroy(mml_trainer *t)
{
    if (!t)
        return;
    mml_ctx *ctx = t->ctx;
    run_free(t, &t->run);
    mml_model_destroy(t->model);
    mml_metrics_destroy(t->val_metrics);
    mml__dp_destroy(t->dp);
    mml__free(ctx, t->logits, t->cap_logits * sizeof(float));
    mml__free(ctx, t->dlogits, t->cap_dlogits * sizeof(float));
    mml__free(ctx, t->wbuf, t->wbuf ? (size_t)t->opt.batch_size * sizeof(float) : 0);
    mml__free(ctx, t->stages, (size_t)t->cap_stages * sizeof *t->stages);
    mml__free(ctx, t->epochs, (size_t)t->cap_epochs * sizeof *t->epochs);
    mml__free(ctx, t, sizeof *t);
}

static int stage_of_variant(int32_t variant, int32_t finetune, int32_t stage)
{
    if (variant == MML_VARIANT_MOE)
        return stage == MML_STAGE_BACKBONE || stage == MML_STAGE_EXPERTS || stage == MML_STAGE_GATE ||
               (stage == MML_STAGE_FINETUNE && finetune != MML_FINETUNE_NONE);
    return stage == MML_STAGE_JOINT;
}

/* dst's weights := src's, parameter by parameter, once every name and shape matched. */
static int copy_weights(mml_ctx *ctx, mml_model *dst, const mml_model *src)
{
    if (mml__model_has_domains_section(src)) /* its mask and experts' domains would be lost */
        return mml__error(ctx, MML_ESTATE, "trainer: init_model gained a domain "
                          "(mml_model_add_domain): train it with mml_model_train_domain");
    if (strcmp(src->backbone_name, dst->backbone_name) != 0)
        return mml__error(ctx, MML_ESHAPE, "trainer: init_model has backbone '%s', the options "
                          "make '%s'", src->backbone_name, dst->backbone_name);
    for (int64_t i = 0; i < dst->n_params || i < src->n_params; i++) {
        const mml_param *p = i < dst->n_params ? dst->params[i] : NULL;
        const mml_param *q = i < src->n_params ? src->params[i] : NULL;
        const char *pn = p && p->name ? p->name : "", *qn = q && q->name ? q->name : "";
        if (!p || !q || strcmp(pn, qn) != 0 || p->rows != q->rows || p->cols != q->cols)
            return mml__error(ctx, MML_ESHAPE,
                              "trainer: init_model parameter %lld is %s%s%s %lld x %lld, the "
                              "options make %s%s%s %lld x %lld", (long long)i,
                              q ? "'" : "", q ? qn : "none", q ? "'" : "",
                              q ? (long long)q->rows : 0LL, q ? (long long)q->cols : 0LL,
                              p ? "'" : "", p ? pn : "none", p ? "'" : "",
                              p ? (long long)p->rows : 0LL, p ? (long long)p->cols : 0LL);
    }
    for (int64_t i = 0; i < dst->n_params; i++)
        memcpy(dst->params[i]->value, src->params[i]->value,
               sizeof(float) * (size_t)mml_param_size(dst->params[i]));
    return MML_OK;
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
    if ((rc = mml__trainer_check_tuned(ctx, &o)) < 0)
        return rc;
    if (o.first_stage != -1 && !stage_of_variant(o.variant, o.finetune, o.first_stage))
        return mml__error(ctx, MML_EINVAL, "trainer: first_stage %d is not a stage of variant %d "
                          "(%s)", o.first_stage, o.variant,
                          o.variant == MML_VARIANT_MOE ? "backbone 1, experts 2, gate 3 or, with "
                                                         "finetune, finetune 4"
                                                       : "joint 0 only");
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
    t->opt.reduce = NULL; /* copied into t->dp */
    if ((rc = mml__dp_create(&t->dp, ctx, o.reduce)) >= 0 && t->dp &&
        (o.l2_embedding != 0.0f || o.batch_size < mml__dp_size(t->dp)))
        rc = mml__error(ctx, MML_EINVAL, "trainer: data-parallel training over %d workers needs "
                        "l2_embedding 0 (it is %g) and batch_size >= the workers (it is %lld)",
                        (int)mml__dp_size(t->dp), (double)o.l2_embedding,
                        (long long)o.batch_size);
    if (rc < 0) {
        mml_trainer_destroy(t);
        return rc;
    }
    memcpy(t->hidden, o.hidden, sizeof(int32_t) * (size_t)o.n_hidden);
    t->opt.hidden = t->hidden;
    t->train = train;
    t->val = val;
    t->D = D;
    t->E = o.variant == MML_VARIANT_BASE ? 0 : o.variant == MML_VARIANT_MLORA ? D : o.experts_per_domain * D;
    t->next_stage = o.first_stage != -1 ? o.first_stage
                    : o.variant == MML_VARIANT_MOE ? MML_STAGE_BACKBONE : MML_STAGE_JOINT;
    /* Read during create only: the caller may destroy it afterwards. */
    t->opt.init_model = NULL;
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
    if (o.variant == MML_VARIANT_MOE) {
        mo.gate_domain_bias = o.gate_prior > 0.0f;
        mo.gate_prior = o.gate_prior;
        mo.gate_input = o.gate_input;
    }
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
    if (rc >= 0 && o.init_model)
        rc = copy_weights(ctx, t->model, o.init_model);
    /* What a checkpoint's model predicts with when loaded alone, and how
     * it maps raw values. */
    if (rc >= 0)
        t->model->final_mix = mml_trainer_mix_mode(t);
    if (rc >= 0)
        rc = mml_model_attach_schema(t->model, train);
    if (rc >= 0)
        rc = mml_metrics_create(&t->val_metrics, ctx, D);
    if (rc >= 0)
        rc = mml__ensure_floats(ctx, &t->logits, &t->cap_logits, (size_t)o.batch_size);
    if (rc >= 0)
        rc = mml__ensure_floats(ctx, &t->dlogits, &t->cap_dlogits, (size_t)o.batch_size);
    if (rc >= 0 && o.variant == MML_VARIANT_MOE && o.expert_other_weight > 0.0f &&
        !(t->wbuf = mml__alloc(ctx, (size_t)o.batch_size * sizeof(float))))
        rc = mml__error(ctx, MML_ENOMEM, "trainer: out of memory");
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
        case MML_STAGE_FINETUNE:
            train = t->opt.finetune == MML_FINETUNE_ALL || p->group == MML_GROUP_EXPERT ||
                    p->group == MML_GROUP_GATE;
            break;
        default: train = p->group == MML_GROUP_GATE; break;
        }
        p->frozen = !train;
        if (train)
            out[n++] = p;
    }
    /* Since 1.3: stage 2 with expert_backbone_lr also trains what stage 1 did,
     * listed after the expert (the second optimiser's part). */
    for (int64_t i = 0; stage == MML_STAGE_EXPERTS && t->opt.expert_backbone_lr > 0.0f &&
                        i < mml_model_n_params(t->model); i++) {
        mml_param *p = mml_model_param(t->model, i);
        if (p->group == MML_GROUP_EMBEDDING || p->group == MML_GROUP_BACKBONE) {
            p->frozen = 0;
            out[n++] = p;
        }
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

/* Logits of the rows [lo, hi) of ds (or only of domain's rows among them
 * when domain >= 0) into metrics. */
static int evaluate_rows(mml_trainer *t, const mml_dataset *ds, int32_t mode, int32_t expert,
                         int32_t domain, mml_metrics *metrics, int64_t lo, int64_t hi)
{
    int rc;
    if (domain < 0) {
        int64_t n = hi;
        for (int64_t start = lo; start < n; start += t->opt.batch_size) {
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
    if (t->dp && (rc = mml__batcher_restrict(bt, lo, hi)) < 0) {
        mml_batcher_destroy(bt);
        return rc;
    }
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

/* evaluate_rows over every row; in data-parallel training each worker its
 * range, then every worker's rows into metrics on every worker. */
static int evaluate(mml_trainer *t, const mml_dataset *ds, int32_t mode, int32_t expert,
                    int32_t domain, mml_metrics *metrics)
{
    if (!t->dp)
        return evaluate_rows(t, ds, mode, expert, domain, metrics, 0, mml_dataset_n_rows(ds));
    int64_t lo, hi;
    mml__dp_range(t->dp, mml_dataset_n_rows(ds), &lo, &hi);
    mml_metrics *mine = mml__dp_scratch(t->dp, t->D);
    int rc = mine ? evaluate_rows(t, ds, mode, expert, domain, mine, lo, hi)
                  : mml__error(t->ctx, MML_ENOMEM, "trainer: out of memory");
    return mml__dp_combine(t->dp, rc, metrics);
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

uint64_t mml_trainer_shuffle_seed(uint64_t ctx_seed, int32_t stage, int32_t expert)
{
    /* The joint stage of the shared model and MoE's backbone stage shuffle alike. */
    uint64_t key = stage == MML_STAGE_BACKBONE ? (uint64_t)MML_STAGE_JOINT : (uint64_t)stage;
    uint64_t x = ctx_seed ^ (0x9E3779B97F4A7C15ull * (key * 65536u + (uint64_t)(expert + 1)));
    x = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}

static uint64_t shuffle_seed(const mml_trainer *t, int32_t stage, int32_t expert)
{
    return mml_trainer_shuffle_seed(t->ctx->seed, stage, expert);
}

/* "the joint stage", "expert 3 (domain 1)", ... for messages. */
static const char *who(const mml_trainer *t, int32_t stage, int32_t expert, char *buf, size_t size)
{
    static const char *const names[5] = {"the joint stage", "stage 1 (backbone)",
                                         "stage 2 (experts)", "stage 3 (gate)",
                                         "stage 4 (fine-tuning)"};
    if (expert >= 0)
        snprintf(buf, size, "stage 2, expert %d (domain %d)", (int)expert, (int)(expert % t->D));
    else
        snprintf(buf, size, "%s", stage >= 0 && stage < 5 ? names[stage] : "a stage");
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

/* Releases a run's buffers and leaves nothing frozen behind: the next stage
 * sets its own flags. */
static void run_free(mml_trainer *t, run_state *r)
{
    mml_ctx *ctx = t->ctx;
    if (t->model)
        for (int64_t i = 0; i < mml_model_n_params(t->model); i++)
            mml_model_param(t->model, i)->frozen = 0;
    mml_batcher_destroy(r->bt);
    mml_optimizer_destroy(r->opt);
    mml_optimizer_destroy(r->opt2);
    mml__free(ctx, r->best, r->snap_n * sizeof(float));
    mml__free(ctx, r->rates, sizeof(double) * (size_t)t->opt.max_epochs);
    mml__free(ctx, r->params, sizeof(mml_param *) * (size_t)r->np);
    memset(r, 0, sizeof *r);
}

/* Everything a run of (stage, expert) needs, at epoch 0: trainable set,
 * fresh optimiser, batcher, best-weights buffer (holding the start) and
 * per-epoch rates. On failure r is released. */
static int run_alloc(mml_trainer *t, run_state *r, int32_t stage, int32_t expert)
{
    mml_ctx *ctx = t->ctx;
    memset(r, 0, sizeof *r);
    r->stage = stage;
    r->expert = expert;
    r->mode = stage_mode(t, stage);
    r->best_score = -INFINITY;
    r->np = mml_model_n_params(t->model);
    r->params = mml__alloc(ctx, sizeof(mml_param *) * (size_t)r->np);
    if (!r->params) {
        r->np = 0;
        return mml__error(ctx, MML_ENOMEM, "trainer: out of memory");
    }
    r->nt = select_trainable(t, stage, expert, r->params);
    r->n2 = stage == MML_STAGE_EXPERTS && t->opt.expert_backbone_lr > 0.0f
                ? r->nt - mml__trainer_count_group(r->params, r->nt, MML_GROUP_EXPERT)
                : 0;
    for (int64_t i = 0; i < r->nt; i++)
        r->snap_n += (size_t)mml_param_size(r->params[i]);
    int rc = MML_OK;
    /* calloc: a diverged epoch counts but records no rate. */
    if (!(r->rates = mml__calloc(ctx, (size_t)t->opt.max_epochs, sizeof(double))))
        rc = mml__error(ctx, MML_ENOMEM, "trainer: out of memory");
    if (rc >= 0 && r->nt == 0)
        rc = mml__error(ctx, MML_ESTATE, "trainer: stage %d has nothing to train", stage);
    if (rc >= 0 && !(r->best = mml__alloc(ctx, r->snap_n * sizeof(float))))
        rc = mml__error(ctx, MML_ENOMEM, "trainer: out of memory");
    if (rc >= 0) {
        mml_optimizer_options oo;
        mml_optimizer_options_init(&oo);
        oo.kind = t->opt.optimizer;
        oo.lr = mml__trainer_stage_lr(&t->opt, stage);
        rc = mml_optimizer_create(&r->opt, ctx, &oo, r->params, r->nt - r->n2);
        if (rc >= 0 && r->n2 > 0) {
            oo.lr = t->opt.expert_backbone_lr;
            rc = mml_optimizer_create(&r->opt2, ctx, &oo, r->params + (r->nt - r->n2), r->n2);
        }
    }
    if (rc >= 0) {
        mml_batcher_options bo;
        mml_batcher_options_init(&bo);
        bo.batch_size = t->opt.batch_size;
        bo.domain = expert >= 0 && !t->wbuf ? expert % t->D : -1;
        bo.seed = shuffle_seed(t, stage, expert);
        if (t->dp)
            bo.batch_size = mml__dp_batch(t->dp, t->opt.batch_size);
        rc = mml_batcher_create(&r->bt, ctx, t->train, &bo);
        if (rc >= 0 && t->dp) {
            int64_t lo, hi;
            mml__dp_range(t->dp, mml_dataset_n_rows(t->train), &lo, &hi);
            rc = mml__batcher_restrict(r->bt, lo, hi);
        }
    }
    if (rc < 0) {
        run_free(t, r);
        return rc;
    }
    /* The weights the stage starts from: what a divergence before the first
     * validated epoch falls back to. */
    snapshot(r->params, r->nt, r->best, 0);
    if (mml_batcher_n_rows(r->bt) == 0)
        r->flags |= MML_STAGE_NO_TRAINING_ROWS;
    r->active = 1;
    return MML_OK;
}

/* Ends a run: restores its best weights (unless it failed), appends its
 * stage report and releases it. */
static int run_finish(mml_trainer *t, int rc, int canceled, int diverged)
{
    mml_ctx *ctx = t->ctx;
    run_state *r = &t->run;
    char tag[64];
    int32_t stage = r->stage, expert = r->expert, best_epoch = r->best_epoch;
    if (rc >= 0 && (r->best_epoch > 0 || diverged || (stage == MML_STAGE_FINETUNE && r->epoch > 0)))
        snapshot(r->params, r->nt, r->best, 1);
    if (diverged)
        r->flags |= MML_STAGE_DIVERGED;
    if (rc >= 0 && (rc = grow_reports(t, (void **)&t->stages, &t->cap_stages, t->n_stages,
                                      sizeof *t->stages)) >= 0) {
        t->stages[t->n_stages++] = (mml_stage_report){
            sizeof(mml_stage_report), stage, expert, expert >= 0 ? expert % t->D : -1, r->epoch,
            best_epoch, best_epoch > 0 || isfinite(r->best_score) ? r->best_score : 0.0,
            r->seconds + now_s() - r->t_start,
            median(r->rates, r->epoch), r->flags, 0};
        mml__log(ctx, MML_LOG_INFO, "%s done: %d epochs, best epoch %d (%.5f)",
                 who(t, stage, expert, tag, sizeof tag), (int)r->epoch, (int)best_epoch,
                 best_epoch > 0 || isfinite(r->best_score) ? r->best_score : 0.0);
    }
    run_free(t, r);
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

/* One early-stopped run over the trainable set of (stage, expert), or the
 * rest of it when it was paused (checkpoint) or read from a saved state. */
static int run_one(mml_trainer *t, int32_t stage, int32_t expert)
{
    mml_ctx *ctx = t->ctx;
    run_state *r = &t->run;
    char tag[64];
    int rc;
    mml__dp_clear(t->dp);
    if (r->active && r->stage == stage && r->expert == expert) {
        /* A read state left the flags alone; a paused run's may have been cleared since. */
        select_trainable(t, stage, expert, r->params);
    } else {
        run_free(t, r);
        if ((rc = run_alloc(t, r, stage, expert)) < 0)
            return rc;
        if (t->dp) {
            /* Rows on any worker: the stage trains. */
            int64_t n = mml_batcher_n_rows(r->bt);
            if ((rc = mml__dp_max(t->dp, MML_OK, &n)) < 0)
                return rc;
            if (n > 0)
                r->flags &= ~(uint32_t)MML_STAGE_NO_TRAINING_ROWS;
        }
        if (r->flags & MML_STAGE_NO_TRAINING_ROWS)
            mml__log(ctx, MML_LOG_WARN, "%s: the domain has no training rows: the expert stays "
                     "as it was made", who(t, stage, expert, tag, sizeof tag));
        if (stage == MML_STAGE_FINETUNE) {
            /* Since 1.3: stage 4 must beat where it starts (validated as
             * epoch 0), else it keeps the start. */
            int defined = 1;
            double score = 0.0;
            t->running = 1;
            rc = validation_score(t, stage, r->mode, expert, 0, &score, &defined);
            t->running = 0;
            if (rc < 0) {
                run_free(t, r);
                return rc;
            }
            if (defined)
                r->best_score = score;
        }
    }
    r->t_start = now_s();
    t->running = 1;
    int canceled = 0, diverged = 0, paused = 0;
    rc = MML_OK;
    int32_t patience = stage == MML_STAGE_FINETUNE && t->opt.finetune_patience > 0
                           ? t->opt.finetune_patience : t->opt.patience;
    while (r->epoch < t->opt.max_epochs && r->bad < patience) {
        int32_t epoch = r->epoch + 1;
        rc = mml_batcher_start_epoch(r->bt, (uint64_t)epoch);
        int64_t steps = mml_batcher_n_batches(r->bt), step = 0, rows = 0;
        if (t->dp) {
            /* Every worker runs the most batches any has; one whose rows
             * ran out adds nothing to the last steps. */
            if ((rc = mml__dp_max(t->dp, rc, &steps)) < 0)
                break;
            mml__dp_reseed(t->dp, mml__backbone_dropout_rng(t->model->backbone), ctx->seed,
                           stage, expert, epoch);
        }
        if (rc < 0)
            break;
        double loss_sum = 0.0, t0 = now_s();
        mml_batch_view b;
        while ((rc = mml_batcher_next(r->bt, &b)) == 1 || (t->dp && rc >= 0 && step < steps)) {
            double loss = 0.0, penalty = 0.0; /* L2 (0 unless the model's lambdas are > 0) */
            int64_t n_rows = rc == 1 ? b.n_rows : 0;
            mml_params_zero_grad(r->params, r->nt);
            const float *weights = b.weights;
            if (n_rows > 0 && stage == MML_STAGE_EXPERTS && t->wbuf)
                weights = mml__trainer_other_weights(&b, expert % t->D, t->opt.expert_other_weight,
                                                     t->wbuf);
            if (n_rows > 0 &&
                ((rc = mml_model_forward(t->model, &b, r->mode, expert, 1, t->logits)) < 0 ||
                 (rc = mml_bce_with_logits(ctx, t->logits, b.labels, weights, b.n_rows, &loss,
                                           t->dlogits)) < 0 ||
                 (rc = mml_model_backward(t->model, t->dlogits)) < 0 ||
                 (rc = mml_model_regularization(t->model, &penalty)) < 0))
                n_rows = 0;
            if (t->dp) {
                /* Each worker's L2 gradient, weighted by its share, adds up to one. */
                loss += penalty;
                penalty = 0.0;
                rc = mml__dp_step(t->dp, rc, r->params, r->nt, &n_rows,
                                  n_rows > 0 ? weights : NULL, &loss);
            }
            if (rc < 0 || !isfinite(loss + penalty) ||
                (rc = mml_optimizer_step(r->opt)) < 0 ||
                (r->opt2 && (rc = mml_optimizer_step(r->opt2)) < 0)) {
                /* Overflowing weights surface as a non-finite logit or loss. */
                if (rc == MML_ENONFINITE || (rc >= 0 && !isfinite(loss + penalty))) {
                    diverged = 1;
                    rc = MML_OK;
                }
                break;
            }
            loss_sum += loss + penalty;
            rows += t->dp ? n_rows : b.n_rows;
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
        double mean_loss = step ? loss_sum / (double)step : 0.0;
        /* Four times a coin flip's loss on the training rows: the weights ran away. */
        if (diverged || mean_loss > 4.0 * 0.69314718055994531) {
            diverged = 1;
            mml__log(ctx, MML_LOG_WARN, "%s: the training loss diverged in epoch %d (mean %.4g)",
                     who(t, stage, expert, tag, sizeof tag), (int)epoch, mean_loss);
            r->epoch = epoch;
            break;
        }
        double train_s = now_s() - t0;
        double score = 0.0;
        int defined = 1;
        if ((rc = validation_score(t, stage, r->mode, expert, epoch, &score, &defined)) < 0)
            break;
        if (!defined && !(r->flags & MML_STAGE_UNVALIDATED)) {
            r->flags |= MML_STAGE_UNVALIDATED;
            mml__log(ctx, MML_LOG_WARN,
                     "%s: %s, so the validation AUC is undefined and early stopping cannot work "
                     "(epoch %d is kept)", who(t, stage, expert, tag, sizeof tag),
                     expert >= 0 ? "the domain's validation rows hold one class or none"
                                 : "no domain's validation rows hold both classes",
                     r->best_epoch > 0 ? (int)r->best_epoch : (int)epoch);
        }
        double rate = train_s > 0 ? (double)rows / train_s : 0.0;
        if ((rc = grow_reports(t, (void **)&t->epochs, &t->cap_epochs, t->n_epochs, sizeof *t->epochs)) < 0)
            break;
        r->rates[epoch - 1] = rate;
        t->epochs[t->n_epochs++] = (mml_epoch_report){sizeof(mml_epoch_report), stage, expert, epoch,
                                                      mean_loss, score, train_s, rate};
        mml__log(ctx, MML_LOG_INFO, "%s, epoch %d: train loss %.5f, validation %.5f, %.0f rows/s",
                 who(t, stage, expert, tag, sizeof tag), (int)epoch, mean_loss, score, rate);
        if (score > r->best_score) {
            r->best_score = score;
            r->best_epoch = epoch;
            r->bad = 0;
            snapshot(r->params, r->nt, r->best, 0);
        } else {
            r->bad++;
        }
        r->epoch = epoch;
        if (t->opt.checkpoint) {
            mml_progress where = {sizeof where, 0, stage, expert, epoch, t->opt.max_epochs, steps,
                                  steps, rate, mean_loss, 0.0};
            if (t->opt.checkpoint(t->opt.checkpoint_user, t, &where)) {
                paused = 1;
                break;
            }
        }
    }
    t->running = 0;
    if (paused) {
        r->seconds += now_s() - r->t_start;
        return mml__error(ctx, MML_ECANCELED,
                          "trainer: stopped by the checkpoint callback after %s, epoch %d (running "
                          "the stage again continues from there)",
                          who(t, stage, expert, tag, sizeof tag), (int)r->epoch);
    }
    return run_finish(t, rc, canceled, diverged);
}

static int check_model(const mml_trainer *t, const char *what)
{
    if (!t->model)
        return mml__error(t->ctx, MML_ESTATE, "trainer: %s: the model was handed over "
                          "(mml_trainer_take_model)", what);
    if (t->running)
        return mml__error(t->ctx, MML_ESTATE, "trainer: %s: called from a callback of the "
                          "running trainer", what);
    return MML_OK;
}

int mml_trainer_run_stage(mml_trainer *t, int32_t stage)
{
    if (!t)
        return MML_EINVAL;
    int rc = check_model(t, "run_stage");
    if (rc < 0)
        return rc;
    if (stage != t->next_stage)
        return mml__error(t->ctx, MML_ESTATE, "trainer: stage %d cannot run now (next is %d)",
                          stage, t->next_stage);
    if (stage == MML_STAGE_EXPERTS) {
        /* A paused or resumed stage 2 goes on with its expert. */
        for (int32_t e = t->run.active ? t->run.expert : 0; e < t->E; e++)
            if ((rc = run_one(t, stage, e)) < 0) {
                mml__dp_failed(t->dp, rc);
                return rc;
            }
    } else if ((rc = run_one(t, stage, -1)) < 0) {
        mml__dp_failed(t->dp, rc);
        return rc;
    }
    t->next_stage = stage == MML_STAGE_JOINT || stage == MML_STAGE_FINETUNE ? -1
                    : stage == MML_STAGE_GATE ? (t->opt.finetune != MML_FINETUNE_NONE ? MML_STAGE_FINETUNE : -1)
                    : stage + 1;
    return MML_OK;
}

int mml_trainer_run(mml_trainer *t)
{
    if (!t)
        return MML_EINVAL;
    int rc = check_model(t, "run");
    if (rc < 0)
        return rc;
    while (t->next_stage >= 0) {
        rc = mml_trainer_run_stage(t, t->next_stage);
        if (rc < 0)
            return rc;
    }
    return MML_OK;
}

int mml_trainer_take_model(mml_trainer *t, mml_model **out)
{
    if (out)
        *out = NULL;
    if (!t)
        return MML_EINVAL;
    if (!out)
        return mml__error(t->ctx, MML_EINVAL, "trainer_take_model: NULL out");
    int rc = check_model(t, "take_model");
    if (rc < 0)
        return rc;
    /* A paused run's optimiser points into the model: it cannot go on without it. */
    run_free(t, &t->run);
    t->model->final_mix = mml_trainer_mix_mode(t);
    *out = t->model;
    t->model = NULL;
    return MML_OK;
}

int mml_trainer_evaluate(mml_trainer *t, const mml_dataset *ds, int32_t mix_mode,
                         mml_metrics *metrics)
{
    if (!t)
        return MML_EINVAL;
    if (!ds || !metrics)
        return mml__error(t->ctx, MML_EINVAL, "trainer_evaluate: NULL argument");
    int rc = check_model(t, "evaluate");
    if (rc < 0)
        return rc;
    if (mml_metrics_n_domains(metrics) != t->D || mml_dataset_n_domains(ds) != t->D)
        return mml__error(t->ctx, MML_ESHAPE, "trainer_evaluate: %d domains expected", t->D);
    mml__dp_clear(t->dp);
    rc = evaluate(t, ds, mix_mode, 0, -1, metrics);
    mml__dp_failed(t->dp, rc);
    return rc;
}

mml_model *mml_trainer_model(mml_trainer *t) { return t ? t->model : NULL; }
int32_t mml_trainer_next_stage(const mml_trainer *t) { return t ? t->next_stage : -1; }
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

/* ---- The state between two epochs (docs/FORMAT.md, "Trainer state payload") ---- */

#define STATE_MAGIC "MMLTRNR\0"
#define STATE_VERSION 1u
/* Bytes of one stage report and one epoch report in the state. */
#define STAGE_REC (5 * 4 + 3 * 8 + 4)
#define EPOCH_REC (3 * 4 + 4 * 8)

static const char *state_backbone(const mml_trainer *t) { return t->model->backbone_name; }

int mml__trainer_state_write(const mml_trainer *t, mml__wbuf *w)
{
    if (!t || !w)
        return MML_EINVAL;
    if (!t->model)
        return mml__error(t->ctx, MML_ESTATE, "trainer: no state to save: the model was handed "
                          "over (mml_trainer_take_model)");
    mml__wbuf_bytes(w, STATE_MAGIC, 8);
    mml__wbuf_u32(w, STATE_VERSION);
    mml__wbuf_u32(w, 0);
    /* The configuration a reader must match. */
    mml__wbuf_i32(w, t->opt.variant);
    mml__wbuf_i32(w, t->D);
    mml__wbuf_i32(w, t->E);
    mml__wbuf_i32(w, t->opt.experts_per_domain);
    mml__wbuf_i32(w, t->opt.optimizer);
    mml__wbuf_i32(w, t->opt.gate_top_k);
    mml__wbuf_i64(w, t->opt.batch_size);
    mml__wbuf_i32(w, t->opt.embed_dim);
    mml__wbuf_i32(w, t->opt.alpha);
    mml__wbuf_i32(w, t->opt.n_hidden);
    for (int32_t i = 0; i < t->opt.n_hidden; i++)
        mml__wbuf_i32(w, t->hidden[i]);
    mml__wbuf_str(w, state_backbone(t));
    mml__wbuf_i64(w, mml_model_n_params(t->model));
    mml__wbuf_u64(w, t->ctx->seed);
    /* Progress. */
    mml__wbuf_i32(w, t->next_stage);
    mml__wbuf_u32(w, 0);
    mml__wbuf_i64(w, t->n_stages);
    for (int64_t i = 0; i < t->n_stages; i++) {
        const mml_stage_report *s = &t->stages[i];
        mml__wbuf_i32(w, s->stage);
        mml__wbuf_i32(w, s->expert);
        mml__wbuf_i32(w, s->domain);
        mml__wbuf_i32(w, s->epochs);
        mml__wbuf_i32(w, s->best_epoch);
        mml__wbuf_f64(w, s->best_val);
        mml__wbuf_f64(w, s->seconds);
        mml__wbuf_f64(w, s->train_rows_per_s);
        mml__wbuf_u32(w, s->flags);
    }
    mml__wbuf_i64(w, t->n_epochs);
    for (int64_t i = 0; i < t->n_epochs; i++) {
        const mml_epoch_report *e = &t->epochs[i];
        mml__wbuf_i32(w, e->stage);
        mml__wbuf_i32(w, e->expert);
        mml__wbuf_i32(w, e->epoch);
        mml__wbuf_f64(w, e->train_loss);
        mml__wbuf_f64(w, e->val_score);
        mml__wbuf_f64(w, e->train_seconds);
        mml__wbuf_f64(w, e->rows_per_s);
    }
    /* The dropout stream runs through every stage (and from expert to expert). */
    const mml_rng *rng = mml__backbone_dropout_rng(t->model->backbone);
    mml__wbuf_u32(w, rng ? 1u : 0u);
    for (int i = 0; i < 4; i++)
        mml__wbuf_u64(w, rng ? rng->s[i] : 0u);
    /* The stage in progress, between two epochs. */
    const run_state *r = &t->run;
    mml__wbuf_u32(w, r->active ? 1u : 0u);
    if (r->active) {
        mml__wbuf_i32(w, r->stage);
        mml__wbuf_i32(w, r->expert);
        mml__wbuf_i32(w, r->epoch);
        mml__wbuf_i32(w, r->best_epoch);
        mml__wbuf_i32(w, r->bad);
        mml__wbuf_u32(w, r->flags);
        mml__wbuf_f64(w, r->best_score);
        mml__wbuf_f64(w, r->seconds + (t->running ? now_s() - r->t_start : 0.0));
        for (int32_t e = 0; e < r->epoch; e++)
            mml__wbuf_f64(w, r->rates[e]);
        mml__wbuf_i64(w, r->nt);
        mml__wbuf_u64(w, (uint64_t)r->snap_n);
        mml__wbuf_f32s(w, r->best, r->snap_n);
        mml__optimizer_state_write(r->opt, w);
        if (r->opt2)
            mml__optimizer_state_write(r->opt2, w);
    }
    return mml__wbuf_status(w);
}

/* An i32 of the saved configuration against the trainer's. */
static int state_same(mml__rbuf *r, int32_t want, const char *option, const char *what)
{
    int32_t v = mml__rbuf_i32(r, what);
    if (mml__rbuf_status(r) < 0)
        return mml__rbuf_status(r);
    if (v != want)
        return mml__rbuf_fail(r, MML_ESTATE, "the state was saved with %s %d, the options give %d",
                              option, (int)v, (int)want);
    return MML_OK;
}

static int state_config(mml_trainer *t, mml__rbuf *r)
{
    int rc;
    if ((rc = state_same(r, t->opt.variant, "variant", "variant")) < 0 ||
        (rc = state_same(r, t->D, "the data's domain count", "domain count")) < 0 ||
        (rc = state_same(r, t->E, "an expert count", "expert count")) < 0 ||
        (rc = state_same(r, t->opt.experts_per_domain, "experts_per_domain",
                         "experts per domain")) < 0 ||
        (rc = state_same(r, t->opt.optimizer, "optimizer", "optimizer")) < 0 ||
        (rc = state_same(r, t->opt.gate_top_k, "gate_top_k", "gate top k")) < 0)
        return rc;
    int64_t batch = mml__rbuf_i64(r, "batch size");
    if (mml__rbuf_status(r) < 0)
        return mml__rbuf_status(r);
    if (batch != t->opt.batch_size)
        return mml__rbuf_fail(r, MML_ESTATE, "the state was saved with batch_size %lld, the "
                              "options give %lld", (long long)batch, (long long)t->opt.batch_size);
    if ((rc = state_same(r, t->opt.embed_dim, "embed_dim", "embedding width")) < 0 ||
        (rc = state_same(r, t->opt.alpha, "alpha", "alpha")) < 0 ||
        (rc = state_same(r, t->opt.n_hidden, "n_hidden", "hidden layer count")) < 0)
        return rc;
    for (int32_t i = 0; i < t->opt.n_hidden; i++)
        if ((rc = state_same(r, t->hidden[i], "a hidden width (hidden)", "hidden width")) < 0)
            return rc;
    char *name = NULL;
    size_t len = 0;
    if ((rc = mml__rbuf_str(r, &name, &len, 64, 0, "backbone name")) < 0)
        return rc;
    int differs = strcmp(name, state_backbone(t)) != 0;
    if (differs)
        mml__rbuf_fail(r, MML_ESTATE, "the state was saved with backbone '%s', the options give "
                       "'%s'", name, state_backbone(t));
    mml__free(t->ctx, name, len + 1);
    if (differs)
        return mml__rbuf_status(r);
    int64_t np = mml__rbuf_i64(r, "parameter count");
    if (mml__rbuf_status(r) < 0)
        return mml__rbuf_status(r);
    if (np != mml_model_n_params(t->model))
        return mml__rbuf_fail(r, MML_ESTATE, "the state was saved for a model of %lld "
                              "parameters, the options make %lld", (long long)np,
                              (long long)mml_model_n_params(t->model));
    /* The shuffles of the remaining epochs derive from it. */
    uint64_t seed = mml__rbuf_u64(r, "seed");
    if (mml__rbuf_status(r) < 0)
        return mml__rbuf_status(r);
    if (seed != t->ctx->seed)
        return mml__rbuf_fail(r, MML_ESTATE, "the state was saved with the context's seed %llu, "
                              "the trainer's context has %llu", (unsigned long long)seed,
                              (unsigned long long)t->ctx->seed);
    return MML_OK;
}

/* Stage and expert of a report or a running stage: a stage of the variant,
 * expert -1 except in stage 2. */
static int state_check_stage(const mml_trainer *t, mml__rbuf *r, int32_t stage, int32_t expert,
                             const char *what)
{
    int ok = stage_of_variant(t->opt.variant, t->opt.finetune, stage) &&
             (stage == MML_STAGE_EXPERTS ? expert >= 0 && expert < t->E : expert == -1);
    if (!ok)
        return mml__rbuf_fail(r, MML_ECORRUPT, "%s: stage %d, expert %d is not a stage of "
                              "variant %d with %d experts", what, (int)stage, (int)expert,
                              (int)t->opt.variant, (int)t->E);
    return MML_OK;
}

/* What a read keeps until everything checked out. */
typedef struct state_tmp {
    mml_stage_report *stages;
    int64_t n_stages;
    mml_epoch_report *epochs;
    int64_t n_epochs;
    run_state run;
} state_tmp;

static void state_tmp_free(mml_trainer *t, state_tmp *s)
{
    mml__free(t->ctx, s->stages, (size_t)s->n_stages * sizeof *s->stages);
    mml__free(t->ctx, s->epochs, (size_t)s->n_epochs * sizeof *s->epochs);
    if (s->run.active)
        run_free(t, &s->run);
}

static int state_reports(mml_trainer *t, mml__rbuf *r, state_tmp *s)
{
    mml_ctx *ctx = t->ctx;
    int64_t n = mml__rbuf_count(r, 0, (int64_t)(mml__rbuf_left(r) / STAGE_REC), "stage report count");
    if (mml__rbuf_status(r) < 0)
        return mml__rbuf_status(r);
    if (n > 0 && !(s->stages = mml__calloc(ctx, (size_t)n, sizeof *s->stages)))
        return mml__error(ctx, MML_ENOMEM, "trainer state: out of memory");
    s->n_stages = n;
    for (int64_t i = 0; i < n; i++) {
        mml_stage_report *p = &s->stages[i];
        p->struct_size = sizeof *p;
        p->stage = mml__rbuf_i32(r, "stage report stage");
        p->expert = mml__rbuf_i32(r, "stage report expert");
        p->domain = mml__rbuf_i32(r, "stage report domain");
        p->epochs = mml__rbuf_i32(r, "stage report epochs");
        p->best_epoch = mml__rbuf_i32(r, "stage report best epoch");
        p->best_val = mml__rbuf_f64(r, "stage report best score");
        p->seconds = mml__rbuf_f64(r, "stage report seconds");
        p->train_rows_per_s = mml__rbuf_f64(r, "stage report rows per second");
        p->flags = mml__rbuf_u32(r, "stage report flags");
        int rc = mml__rbuf_status(r);
        if (rc >= 0)
            rc = state_check_stage(t, r, p->stage, p->expert, "stage report");
        if (rc < 0)
            return rc;
        if (p->domain != (p->expert >= 0 ? p->expert % t->D : -1) || p->epochs < 0 ||
            p->best_epoch < 0 || p->best_epoch > p->epochs || (p->flags & ~7u))
            return mml__rbuf_fail(r, MML_ECORRUPT, "stage report %lld: domain %d, epochs %d, "
                                  "best epoch %d or flags 0x%x invalid", (long long)i,
                                  (int)p->domain, (int)p->epochs, (int)p->best_epoch,
                                  (unsigned)p->flags);
    }
    n = mml__rbuf_count(r, 0, (int64_t)(mml__rbuf_left(r) / EPOCH_REC), "epoch report count");
    if (mml__rbuf_status(r) < 0)
        return mml__rbuf_status(r);
    if (n > 0 && !(s->epochs = mml__calloc(ctx, (size_t)n, sizeof *s->epochs)))
        return mml__error(ctx, MML_ENOMEM, "trainer state: out of memory");
    s->n_epochs = n;
    for (int64_t i = 0; i < n; i++) {
        mml_epoch_report *e = &s->epochs[i];
        e->struct_size = sizeof *e;
        e->stage = mml__rbuf_i32(r, "epoch report stage");
        e->expert = mml__rbuf_i32(r, "epoch report expert");
        e->epoch = mml__rbuf_i32(r, "epoch report epoch");
        e->train_loss = mml__rbuf_f64(r, "epoch report training loss");
        e->val_score = mml__rbuf_f64(r, "epoch report score");
        e->train_seconds = mml__rbuf_f64(r, "epoch report seconds");
        e->rows_per_s = mml__rbuf_f64(r, "epoch report rows per second");
        int rc = mml__rbuf_status(r);
        if (rc >= 0)
            rc = state_check_stage(t, r, e->stage, e->expert, "epoch report");
        if (rc < 0)
            return rc;
        if (e->epoch < 1)
            return mml__rbuf_fail(r, MML_ECORRUPT, "epoch report %lld: epoch %d", (long long)i,
                                  (int)e->epoch);
    }
    return MML_OK;
}

static int state_run(mml_trainer *t, mml__rbuf *r, int32_t next_stage, run_state *run)
{
    int32_t stage = mml__rbuf_i32(r, "running stage");
    int32_t expert = mml__rbuf_i32(r, "running expert");
    int32_t epoch = mml__rbuf_i32(r, "running epoch");
    int32_t best_epoch = mml__rbuf_i32(r, "running best epoch");
    int32_t bad = mml__rbuf_i32(r, "running epochs without improvement");
    uint32_t flags = mml__rbuf_u32(r, "running flags");
    double best_score = mml__rbuf_f64(r, "running best score");
    double seconds = mml__rbuf_f64(r, "running seconds");
    int rc = mml__rbuf_status(r);
    if (rc >= 0)
        rc = state_check_stage(t, r, stage, expert, "running stage");
    if (rc < 0)
        return rc;
    if (stage != next_stage)
        return mml__rbuf_fail(r, MML_ECORRUPT, "running stage %d is not the next stage %d",
                              (int)stage, (int)next_stage);
    if (epoch > t->opt.max_epochs)
        return mml__rbuf_fail(r, MML_ESTATE, "the running stage has done %d epochs, more than "
                              "the max_epochs option %d", (int)epoch, (int)t->opt.max_epochs);
    if (epoch < 0 || best_epoch < 0 || best_epoch > epoch || bad < 0 || bad > epoch ||
        (flags & ~(uint32_t)(MML_STAGE_UNVALIDATED | MML_STAGE_NO_TRAINING_ROWS)))
        return mml__rbuf_fail(r, MML_ECORRUPT, "running stage: epoch %d, best epoch %d, epochs "
                              "without improvement %d or flags 0x%x invalid", (int)epoch,
                              (int)best_epoch, (int)bad, (unsigned)flags);
    if ((rc = run_alloc(t, run, stage, expert)) < 0)
        return rc;
    run->epoch = epoch;
    run->best_epoch = best_epoch;
    run->bad = bad;
    run->flags = flags;
    run->best_score = best_score;
    run->seconds = seconds;
    for (int32_t e = 0; e < epoch; e++)
        run->rates[e] = mml__rbuf_f64(r, "running epoch rate");
    int64_t nt = mml__rbuf_i64(r, "running trainable count");
    uint64_t snap_n = mml__rbuf_u64(r, "running snapshot size");
    if ((rc = mml__rbuf_status(r)) < 0)
        return rc;
    if (nt != run->nt || snap_n != (uint64_t)run->snap_n)
        return mml__rbuf_fail(r, MML_ECORRUPT, "running stage: %lld trainable parameters of %llu "
                              "values, expected %lld of %llu", (long long)nt,
                              (unsigned long long)snap_n, (long long)run->nt,
                              (unsigned long long)run->snap_n);
    if ((rc = mml__rbuf_f32s(r, run->best, run->snap_n, "running best weights")) < 0)
        return rc;
    if ((rc = mml__optimizer_state_read(run->opt, r)) < 0)
        return rc;
    return run->opt2 ? mml__optimizer_state_read(run->opt2, r) : MML_OK;
}

int mml__trainer_state_read(mml_trainer *t, mml__rbuf *r)
{
    if (!t || !r)
        return MML_EINVAL;
    int rc = check_model(t, "read a state");
    if (rc < 0)
        return rc;
    const uint8_t *magic = mml__rbuf_bytes(r, 8, "trainer state magic");
    if (!magic)
        return mml__rbuf_status(r);
    if (memcmp(magic, STATE_MAGIC, 8) != 0)
        return mml__rbuf_fail(r, MML_ECORRUPT, "not a trainer state (bad magic)");
    uint32_t version = mml__rbuf_u32(r, "trainer state version");
    uint32_t reserved = mml__rbuf_u32(r, "trainer state reserved");
    if ((rc = mml__rbuf_status(r)) < 0)
        return rc;
    if (version != STATE_VERSION)
        return mml__rbuf_fail(r, MML_EVERSION, "trainer state version %u (this library reads %u)",
                              (unsigned)version, STATE_VERSION);
    if (reserved != 0)
        return mml__rbuf_fail(r, MML_ECORRUPT, "trainer state reserved field %u", (unsigned)reserved);
    if ((rc = state_config(t, r)) < 0)
        return rc;
    int32_t next_stage = mml__rbuf_i32(r, "next stage");
    reserved = mml__rbuf_u32(r, "next stage reserved");
    if ((rc = mml__rbuf_status(r)) < 0)
        return rc;
    if ((next_stage != -1 && !stage_of_variant(t->opt.variant, t->opt.finetune, next_stage)) || reserved != 0)
        return mml__rbuf_fail(r, MML_ECORRUPT, "next stage %d (reserved %u) invalid for "
                              "variant %d", (int)next_stage, (unsigned)reserved,
                              (int)t->opt.variant);
    state_tmp s;
    memset(&s, 0, sizeof s);
    rc = state_reports(t, r, &s);
    uint32_t has_rng = 0, active = 0;
    mml_rng saved;
    if (rc >= 0) {
        has_rng = mml__rbuf_u32(r, "dropout stream flag");
        for (int i = 0; i < 4; i++)
            saved.s[i] = mml__rbuf_u64(r, "dropout stream");
        active = mml__rbuf_u32(r, "running flag");
        rc = mml__rbuf_status(r);
    }
    mml_rng *rng = mml__backbone_dropout_rng(t->model->backbone);
    if (rc >= 0 && (has_rng != (rng ? 1u : 0u) || active > 1u ||
                    (has_rng && !(saved.s[0] | saved.s[1] | saved.s[2] | saved.s[3]))))
        rc = mml__rbuf_fail(r, MML_ECORRUPT, "dropout stream flag %u (expected %u), its state "
                            "or running flag %u invalid", (unsigned)has_rng, rng ? 1u : 0u,
                            (unsigned)active);
    if (rc >= 0 && active)
        rc = state_run(t, r, next_stage, &s.run);
    if (rc >= 0 && mml__rbuf_left(r) != 0)
        rc = mml__rbuf_fail(r, MML_ECORRUPT, "%zu bytes after the trainer state",
                            mml__rbuf_left(r));
    if (rc < 0) {
        state_tmp_free(t, &s);
        return rc;
    }
    /* Everything checked out: replace the trainer's state. */
    run_free(t, &t->run);
    t->run = s.run;
    mml__free(t->ctx, t->stages, (size_t)t->cap_stages * sizeof *t->stages);
    mml__free(t->ctx, t->epochs, (size_t)t->cap_epochs * sizeof *t->epochs);
    t->stages = s.stages;
    t->n_stages = t->cap_stages = s.n_stages;
    t->epochs = s.epochs;
    t->n_epochs = t->cap_epochs = s.n_epochs;
    t->next_stage = next_stage;
    if (rng)
        *rng = saved;
    return MML_OK;
}

/* ---- Checkpoint files: the model file plus the trainer section ---- */

int mml_trainer_save(const mml_trainer *t, const char *path)
{
    if (!t)
        return MML_EINVAL;
    if (!path)
        return mml__error(t->ctx, MML_EINVAL, "trainer_save: NULL path");
    if (!t->model)
        return mml__error(t->ctx, MML_ESTATE, "trainer_save: the model was handed over "
                          "(mml_trainer_take_model)");
    mml__wbuf w;
    mml__wbuf_init(&w, t->ctx);
    int rc = mml__trainer_state_write(t, &w);
    if (rc >= 0) {
        /* Optional: a reader that only wants the model skips it. */
        mml__section_out sec = {MML__SECTION_TRAINER, 0, w.data, w.len};
        mml__io io;
        memset(&io, 0, sizeof io);
        io.path = path;
        rc = mml__model_save_io(t->model, &sec, 1, &io);
    }
    mml__wbuf_free(&w);
    return rc;
}

/* The options against the saved model, before a trainer is made from them. */
static int resume_check_model(mml_ctx *ctx, const mml_trainer_options *o, const mml_model *m,
                              const char *path)
{
    int32_t variant = m->E == 0 ? MML_VARIANT_BASE : m->gate ? MML_VARIANT_MOE : MML_VARIANT_MLORA;
    const char *bad = NULL;
    if (o->variant != variant)
        bad = "variant";
    else if (!o->backbone || strcmp(o->backbone, m->backbone_name) != 0)
        bad = "backbone";
    else if (o->embed_dim != m->opt.embed_dim)
        bad = "embed_dim";
    else if (o->alpha != m->opt.alpha && variant != MML_VARIANT_BASE)
        bad = "alpha";
    else if (o->n_hidden != m->opt.n_hidden ||
             (o->hidden && memcmp(o->hidden, m->hidden, sizeof(int32_t) * (size_t)o->n_hidden)))
        bad = "n_hidden or hidden";
    else if (variant == MML_VARIANT_MOE && o->experts_per_domain * m->D != m->E)
        bad = "experts_per_domain";
    if (bad)
        return mml__error(ctx, MML_ESTATE, "trainer_resume: option %s differs from the model "
                          "saved in '%s' (variant %d, backbone '%s', embed_dim %d, alpha %d, %d "
                          "hidden layers, %d experts over %d domains)", bad, path, (int)variant,
                          m->backbone_name, (int)m->opt.embed_dim, (int)m->opt.alpha,
                          (int)m->opt.n_hidden, (int)m->E, (int)m->D);
    return MML_OK;
}

int mml_trainer_resume(mml_trainer **out, mml_ctx *ctx, const mml_trainer_options *opt,
                       const char *path, const mml_dataset *train, const mml_dataset *val)
{
    if (out)
        *out = NULL;
    if (!out || !ctx || !path)
        return mml__error(ctx, MML_EINVAL, "trainer_resume: NULL argument");
    mml_trainer_options o;
    int rc = MML__COPY_OPTIONS(ctx, &o, opt, mml_trainer_options, "trainer");
    if (rc < 0)
        return rc;
    if (o.n_hidden < 1 || o.n_hidden > 64)
        return mml__error(ctx, MML_EINVAL, "trainer_resume: %d hidden layers", o.n_hidden);
    mml__io io;
    memset(&io, 0, sizeof io);
    io.path = path;
    mml_model *m = NULL;
    void *payload = NULL;
    size_t size = 0;
    if ((rc = mml__model_load_io(&m, ctx, &io, MML__SECTION_TRAINER, &payload, &size)) < 0)
        return rc;
    if (!payload)
        rc = mml__error(ctx, MML_ENOTFOUND, "trainer_resume: '%s' holds a model but no trainer "
                        "state (not a checkpoint of mml_trainer_save)", path);
    if (rc >= 0)
        rc = resume_check_model(ctx, &o, m, path);
    mml_trainer *t = NULL;
    if (rc >= 0) {
        /* The stage comes from the state, the weights from the file. */
        o.init_model = m;
        o.first_stage = -1;
        rc = mml_trainer_create(&t, ctx, &o, train, val);
    }
    if (rc >= 0) {
        mml__rbuf r;
        mml__rbuf_init(&r, ctx, payload, size, 0, "trainer state");
        rc = mml__trainer_state_read(t, &r);
    }
    mml__free(ctx, payload, size);
    mml_model_destroy(m);
    if (rc < 0) {
        mml_trainer_destroy(t);
        return rc;
    }
    *out = t;
    return MML_OK;
}
