/* Training a domain added to a MoE-MLoRA model (add_domain.h): only the
 * parameters that belong to the domain move. Where such a parameter is a
 * part of a shared tensor (a row of an embedding table, columns of the
 * gate), the optimiser gets a view of exactly that part; the tensor's
 * gradient is computed and zeroed whole, but nothing else of it is ever
 * stepped, so the rest stays bit for bit. */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "data/data_internal.h"
#include "model/model_internal.h"
#include "moemlora/add_domain.h"
#include "moemlora/loss.h"
#include "moemlora/metrics.h"
#include "moemlora/optimizer.h"
#include "nn/layers.h"

#define MAX_VIEWS 80

/* One early-stopped step: what it trains and how it runs. */
typedef struct step {
    int32_t mode, expert;
    mml_param *grads[MAX_VIEWS]; /* whole tensors whose gradients are computed (unfrozen) */
    int64_t n_grads;
    mml_param views[MAX_VIEWS]; /* what the optimiser steps */
    mml_param *vp[MAX_VIEWS];
    int64_t n_views;
} step;

typedef struct job {
    mml_ctx *ctx;
    mml_model *m;
    int32_t domain;
    const mml_dataset *train, *val;
    mml_add_domain_options o;
    float *logits, *dlogits, *vlabels;
    size_t cap_logits, cap_dlogits, cap_vl;
} job;

static int add_view(mml_ctx *ctx, step *s, mml_param *whole, int64_t offset, int64_t rows,
                    int64_t cols)
{
    if (s->n_views == MAX_VIEWS)
        return mml__error(ctx, MML_EINVAL, "train_domain: more than %d parameter parts", MAX_VIEWS);
    s->views[s->n_views] = (mml_param){whole->name, whole->value + offset, whole->grad + offset,
                                       rows, cols, whole->group, whole->expert, 0, 0};
    s->vp[s->n_views] = &s->views[s->n_views];
    s->n_views++;
    return MML_OK;
}

static void add_grad(step *s, mml_param *p)
{
    for (int64_t i = 0; i < s->n_grads; i++)
        if (s->grads[i] == p)
            return;
    if (s->n_grads < MAX_VIEWS)
        s->grads[s->n_grads++] = p;
}

/* Every parameter frozen but the step's tensors. */
static void set_frozen(job *j, const step *s)
{
    for (int64_t i = 0; i < j->m->n_params; i++)
        j->m->params[i]->frozen = 1;
    for (int64_t i = 0; i < s->n_grads; i++)
        s->grads[i]->frozen = 0;
}

static void unfreeze_all(job *j)
{
    for (int64_t i = 0; i < j->m->n_params; i++)
        j->m->params[i]->frozen = 0;
}

/* The domain's validation AUC with the step's mixture. */
static int val_auc(job *j, const step *s, double *auc, int32_t *defined)
{
    int64_t nv = mml_dataset_domain_rows(j->val, j->domain);
    int rc = mml__ensure_floats(j->ctx, &j->vlabels, &j->cap_vl, (size_t)(2 * nv));
    if (rc < 0)
        return rc;
    float *scores = j->vlabels + nv;
    mml_batcher_options bo;
    mml_batcher_options_init(&bo);
    bo.batch_size = j->o.batch_size;
    bo.shuffle = 0;
    bo.domain = j->domain;
    mml_batcher *bt = NULL;
    if ((rc = mml_batcher_create(&bt, j->ctx, j->val, &bo)) < 0)
        return rc;
    int64_t at = 0;
    mml_batch_view b;
    if ((rc = mml_batcher_start_epoch(bt, 0)) >= 0)
        while ((rc = mml_batcher_next(bt, &b)) == 1) {
            if ((rc = mml_model_forward(j->m, &b, s->mode, s->expert, 0, scores + at)) < 0)
                break;
            memcpy(j->vlabels + at, b.labels, sizeof(float) * (size_t)b.n_rows);
            at += b.n_rows;
        }
    mml_batcher_destroy(bt);
    if (rc < 0)
        return rc;
    return mml_auc_ex(j->ctx, scores, j->vlabels, at, auc, defined);
}

static void snapshot(const step *s, float *buf, int restore)
{
    size_t off = 0;
    for (int64_t i = 0; i < s->n_views; i++) {
        size_t n = (size_t)mml_param_size(&s->views[i]);
        if (restore)
            memcpy(s->views[i].value, buf + off, n * sizeof(float));
        else
            memcpy(buf + off, s->views[i].value, n * sizeof(float));
        off += n;
    }
}

/* Fresh Adam over the views; epochs on the domain's training rows until the
 * validation AUC stops improving; then the best epoch's values. */
static int run_step(job *j, step *s, uint64_t key, const char *what)
{
    mml_ctx *ctx = j->ctx;
    size_t snap_n = 0;
    for (int64_t i = 0; i < s->n_views; i++)
        snap_n += (size_t)mml_param_size(&s->views[i]);
    float *best = mml__alloc(ctx, snap_n * sizeof(float));
    if (!best)
        return mml__error(ctx, MML_ENOMEM, "train_domain: out of memory");
    snapshot(s, best, 0);
    set_frozen(j, s);
    mml_optimizer *opt = NULL;
    mml_batcher *bt = NULL;
    mml_optimizer_options oo;
    mml_optimizer_options_init(&oo);
    oo.lr = j->o.lr;
    int rc = mml_optimizer_create(&opt, ctx, &oo, s->vp, s->n_views);
    if (rc >= 0) {
        mml_batcher_options bo;
        mml_batcher_options_init(&bo);
        bo.batch_size = j->o.batch_size;
        bo.domain = j->domain;
        uint64_t x = ctx->seed ^ (0xD1B54A32D192ED03ull * (key + 1));
        bo.seed = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9ull;
        rc = mml_batcher_create(&bt, ctx, j->train, &bo);
    }
    double best_auc = -INFINITY;
    int32_t epoch = 0, best_epoch = 0, bad = 0, diverged = 0;
    while (rc >= 0 && epoch < j->o.max_epochs && bad < j->o.patience) {
        epoch++;
        if ((rc = mml_batcher_start_epoch(bt, (uint64_t)epoch)) < 0)
            break;
        double loss_sum = 0.0;
        int64_t steps = 0;
        mml_batch_view b;
        while ((rc = mml_batcher_next(bt, &b)) == 1) {
            double loss;
            size_t n = (size_t)b.n_rows;
            mml_params_zero_grad(s->grads, s->n_grads);
            if ((rc = mml__ensure_floats(ctx, &j->logits, &j->cap_logits, n)) < 0 ||
                (rc = mml__ensure_floats(ctx, &j->dlogits, &j->cap_dlogits, n)) < 0 ||
                (rc = mml_model_forward(j->m, &b, s->mode, s->expert, 1, j->logits)) < 0 ||
                (rc = mml_bce_with_logits(ctx, j->logits, b.labels, b.weights, b.n_rows, &loss,
                                          j->dlogits)) < 0 ||
                (rc = mml_model_backward(j->m, j->dlogits)) < 0)
                break;
            if (!isfinite(loss)) {
                diverged = 1;
                break;
            }
            if ((rc = mml_optimizer_step(opt)) < 0)
                break;
            loss_sum += loss;
            steps++;
        }
        if (rc == MML_ENONFINITE) {
            diverged = 1;
            rc = MML_OK;
        }
        if (rc < 0 || diverged || (steps && loss_sum / (double)steps > 4.0 * 0.69314718055994531)) {
            diverged = rc >= 0;
            break;
        }
        double auc = 0.0;
        int32_t defined = 0;
        if ((rc = val_auc(j, s, &auc, &defined)) < 0)
            break;
        mml__log(ctx, MML_LOG_INFO, "train_domain: %s, epoch %d: train loss %.5f, validation AUC "
                 "%.5f", what, (int)epoch, steps ? loss_sum / (double)steps : 0.0, auc);
        if (!defined)
            auc = 0.0;
        if (auc > best_auc) {
            best_auc = auc;
            best_epoch = epoch;
            bad = 0;
            snapshot(s, best, 0);
        } else {
            bad++;
        }
    }
    /* The best epoch (or, after a divergence before any, the start). */
    if (rc >= 0 || diverged)
        snapshot(s, best, 1);
    mml_optimizer_destroy(opt);
    mml_batcher_destroy(bt);
    mml__free(ctx, best, snap_n * sizeof(float));
    unfreeze_all(j);
    if (rc >= 0 && diverged)
        return mml__error(ctx, MML_ENONFINITE, "train_domain: %s: the training loss diverged; "
                          "kept the weights of %s; try a lower learning rate", what,
                          best_epoch ? "its best epoch" : "its start");
    if (rc >= 0)
        mml__log(ctx, MML_LOG_INFO, "train_domain: %s done: %d epochs, best %d (%.5f)", what,
                 (int)epoch, (int)best_epoch, best_epoch ? best_auc : 0.0);
    return rc < 0 ? rc : MML_OK;
}

static mml_param *find_param(mml_model *m, const char *name)
{
    for (int64_t i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i]->name, name))
            return m->params[i];
    return NULL;
}

/* Sets the biases of domain d's own experts [first, first + own) so that
 * its gate gives them total weight w, equally (the other logits as they are). */
static void own_prior(mml_model *m, const mml_param *ge, const mml_param *gw, mml_param *gb,
                      int32_t d, int32_t first, int32_t own, float w)
{
    int32_t E = m->E, k = (int32_t)ge->cols;
    const uint8_t *mask = mml__gate_mask(m->gate);
    double others = 0.0;
    for (int32_t e = 0; e < E; e++) {
        if ((e >= first && e < first + own) || (mask && !mask[(size_t)d * (size_t)E + (size_t)e]))
            continue;
        double z = gb->value[e];
        for (int32_t i = 0; i < k; i++)
            z += (double)ge->value[(int64_t)d * k + i] * gw->value[(int64_t)i * E + e];
        others += exp(z);
    }
    /* own experts' logit L: own e^L = w / (1 - w) * others */
    double L = others > 0.0 ? log((double)w / (1.0 - (double)w) * others / own) : 0.0;
    for (int32_t e = first; e < first + own; e++) {
        double z = 0.0;
        for (int32_t i = 0; i < k; i++)
            z += (double)ge->value[(int64_t)d * k + i] * gw->value[(int64_t)i * E + e];
        gb->value[e] = (float)(L - z);
    }
}

static int train_all(job *j)
{
    mml_ctx *ctx = j->ctx;
    mml_model *m = j->m;
    int32_t d = j->domain, E = m->E;
    const uint8_t *mask = mml__gate_mask(m->gate);
    int32_t first = -1, last = -1;
    for (int32_t e = 0; e < E; e++) {
        if (mml__model_expert_owner(m, e) != d)
            continue;
        for (int32_t o = 0; o < m->D; o++)
            if (o != d && (!mask || mask[(size_t)o * (size_t)E + (size_t)e]))
                return mml__error(ctx, MML_ESTATE, "train_domain: expert %d of domain %d is used "
                                  "by domain %d too: train a domain added by "
                                  "mml_model_add_domain()", e, d, o);
        if (first >= 0 && e != last + 1)
            return mml__error(ctx, MML_ESTATE, "train_domain: the experts of domain %d are not "
                              "consecutive", d);
        if (first < 0)
            first = e;
        last = e;
    }
    if (first < 0)
        return mml__error(ctx, MML_ESTATE, "train_domain: domain %d has no experts", d);
    int rc = MML_OK;
    step s;
    char what[64];
    /* 1. Its row of the domain field's tables, backbone alone. */
    int32_t df = m->schema ? m->schema->domain_field : -1;
    if (j->o.train_domain_row && df >= 0) {
        memset(&s, 0, sizeof s);
        s.mode = MML_MIX_NONE;
        mml_param *tabs[2] = {mml_embedding_param(m->emb[df]),
                              m->first ? mml_embedding_param(m->first[df]) : NULL};
        for (int t = 0; t < 2 && rc >= 0; t++)
            if (tabs[t]) {
                add_grad(&s, tabs[t]);
                rc = add_view(ctx, &s, tabs[t], (int64_t)d * tabs[t]->cols, 1, tabs[t]->cols);
            }
        if (rc >= 0)
            rc = run_step(j, &s, 0, "the domain's embedding row");
        if (rc < 0)
            return rc;
    }
    /* 2. Each of its experts alone. */
    for (int32_t e = first; e <= last; e++) {
        memset(&s, 0, sizeof s);
        s.mode = MML_MIX_SINGLE;
        s.expert = e;
        for (int64_t i = 0; i < m->n_params && rc >= 0; i++) {
            mml_param *p = m->params[i];
            if (p->group == MML_GROUP_EXPERT && p->expert == e) {
                add_grad(&s, p);
                rc = add_view(ctx, &s, p, 0, p->rows, p->cols);
            }
        }
        snprintf(what, sizeof what, "expert %d", (int)e);
        if (rc >= 0)
            rc = run_step(j, &s, 1 + (uint64_t)e, what);
        if (rc < 0)
            return rc;
    }
    /* 3. Its gate parameters, with the full mixture: its row of the gate's
     * domain embedding; of every other gate tensor with a column per expert,
     * its experts' columns (masked for the other domains, so used by none of
     * them). Whatever else the gate has is shared by all domains: frozen.
     * (By name, not shape: W is k x E, and k may equal D.) */
    memset(&s, 0, sizeof s);
    s.mode = MML_MIX_GATED;
    int32_t own = last - first + 1;
    mml_param *ge = find_param(m, "gate.embedding"), *gw = find_param(m, "gate.W"),
              *gb = find_param(m, "gate.b");
    if (j->o.gate_own_weight > 0.0f && ge && gw && gb && gw->rows == ge->cols)
        own_prior(m, ge, gw, gb, d, first, own, j->o.gate_own_weight);
    for (int64_t i = 0; i < m->n_params && rc >= 0; i++) {
        mml_param *p = m->params[i];
        if (p->group != MML_GROUP_GATE)
            continue;
        if (p == ge) {
            add_grad(&s, p);
            rc = add_view(ctx, &s, p, (int64_t)d * p->cols, 1, p->cols);
        } else if (p->cols == E) {
            add_grad(&s, p);
            for (int64_t r = 0; r < p->rows && rc >= 0; r++)
                rc = add_view(ctx, &s, p, r * p->cols + first, 1, own);
        }
    }
    if (rc >= 0 && s.n_views == 0)
        rc = mml__error(ctx, MML_ESTATE, "train_domain: the gate has no parameter of the domain");
    if (rc >= 0)
        rc = run_step(j, &s, 1 + (uint64_t)E, "the gate");
    return rc;
}

int mml_model_train_domain(mml_model *m, int32_t domain, const mml_dataset *train,
                           const mml_dataset *val, const mml_add_domain_options *opt)
{
    if (!m)
        return MML_EINVAL;
    mml_ctx *ctx = m->ctx;
    if (!train || !val)
        return mml__error(ctx, MML_EINVAL, "train_domain: NULL data set");
    job j;
    memset(&j, 0, sizeof j);
    int rc = MML__COPY_OPTIONS(ctx, &j.o, opt, mml_add_domain_options, "add_domain");
    if (rc < 0 || (rc = mml__add_domain_check_options(ctx, &j.o)) < 0)
        return rc;
    if (m->readonly)
        return mml__error(ctx, MML_ESTATE, "train_domain: the model is read-only");
    if (!m->gate)
        return mml__error(ctx, MML_ESTATE, "train_domain: the model has no gate");
    if (domain < 0 || domain >= m->D)
        return mml__error(ctx, MML_ERANGE, "train_domain: domain %d outside [0, %d)", domain, m->D);
    const mml_dataset *sets[2] = {train, val};
    for (int i = 0; i < 2; i++) {
        const mml_dataset *ds = sets[i];
        if (mml_dataset_n_domains(ds) != m->D || mml_dataset_n_fields(ds) != m->F ||
            mml_dataset_n_dense(ds) != m->n_dense || mml_dataset_n_multihot(ds) != m->M)
            return mml__error(ctx, MML_ESHAPE, "train_domain: the %s data has %d domains, %d "
                              "fields, %d numeric values; the model %d, %d, %d (map it with "
                              "mml_dataset_for_model)", i ? "validation" : "training",
                              mml_dataset_n_domains(ds), mml_dataset_n_fields(ds),
                              mml_dataset_n_dense(ds), m->D, m->F, m->n_dense);
        for (int32_t f = 0; f < m->F; f++)
            if (mml_dataset_field_size(ds, f) != m->field_sizes[f])
                return mml__error(ctx, MML_ESHAPE, "train_domain: field %d of the %s data has %d "
                                  "ids, the model %lld", f, i ? "validation" : "training",
                                  mml_dataset_field_size(ds, f), (long long)m->field_sizes[f]);
        if (mml_dataset_domain_rows(ds, domain) < 1)
            return mml__error(ctx, MML_ESHAPE, "train_domain: the %s data has no row of domain %d",
                              i ? "validation" : "training", domain);
    }
    j.ctx = ctx;
    j.m = m;
    j.domain = domain;
    j.train = train;
    j.val = val;
    rc = train_all(&j);
    mml__free(ctx, j.logits, j.cap_logits * sizeof(float));
    mml__free(ctx, j.dlogits, j.cap_dlogits * sizeof(float));
    mml__free(ctx, j.vlabels, j.cap_vl * sizeof(float));
    return rc;
}
