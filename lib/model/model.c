#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/param_rows.h"
#include "moemlora/embedding.h"
#include "moemlora/loss.h"
#include "moemlora/model.h"
#include "model/model_internal.h"
#include "data/data_internal.h"
#include "backbones/backbones.h"
#include "nn/layers.h"

int mml_model_options_init_sized(mml_model_options *out, uint32_t struct_size)
{
    mml_model_options full, *opt = &full;
    static const int32_t hidden[3] = {256, 128, 64};
    memset(opt, 0, sizeof *opt);
    opt->backbone = "mlp";
    opt->embed_dim = 8;
    opt->embed_std = 0.01f;
    opt->gate_dim = 4;
    opt->alpha = 16;
    opt->n_hidden = 3;
    opt->hidden = hidden;
    opt->dropout = 0.5f;
    opt->multihot_pooling = MML_POOL_MEAN;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size, MML__OLDER_SIZES_mml_model_options);
}

static int ensure_i64(mml_ctx *ctx, int64_t **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return MML_OK;
    mml__free(ctx, *buf, *cap * sizeof(int64_t));
    *cap = 0;
    *buf = mml__alloc(ctx, n * sizeof(int64_t));
    if (!*buf)
        return mml__error(ctx, MML_ENOMEM, "model: out of memory for %zu offsets", n);
    *cap = n;
    return MML_OK;
}

static int ensure_i32(mml_ctx *ctx, int32_t **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return MML_OK;
    mml__free(ctx, *buf, *cap * sizeof(int32_t));
    *cap = 0;
    *buf = mml__alloc(ctx, n * sizeof(int32_t));
    if (!*buf)
        return mml__error(ctx, MML_ENOMEM, "model: out of memory for %zu ids", n);
    *cap = n;
    return MML_OK;
}

static int32_t *batch_ids(const mml_model *m) { return (int32_t *)(void *)m->idsbuf; }
static int32_t *batch_domains(const mml_model *m) { return batch_ids(m) + m->n * m->F; }

void mml_model_destroy(mml_model *m)
{
    if (!m)
        return;
    mml_ctx *ctx = m->ctx;
    for (int32_t f = 0; f < m->F; f++) {
        if (m->emb)
            mml_embedding_destroy(m->emb[f]);
        if (m->first)
            mml_embedding_destroy(m->first[f]);
    }
    for (int32_t f = 0; m->mh && f < m->M; f++)
        mml_embedding_destroy(m->mh[f]);
    mml__free(ctx, m->mh, sizeof(void *) * (size_t)m->M);
    mml__free(ctx, m->mh_start, sizeof(int64_t) * (size_t)(m->M + 1));
    mml__free(ctx, m->mh_off, m->cap_mhoff * sizeof(int64_t));
    mml__free(ctx, m->mh_idbuf, m->cap_mhid * sizeof(int32_t));
    mml__free(ctx, m->emb, sizeof(void *) * (size_t)m->F);
    mml__free(ctx, m->first, sizeof(void *) * (size_t)m->F);
    mml__free(ctx, m->dense_w.value, sizeof(float) * (size_t)m->n_dense);
    mml__free(ctx, m->dense_w.grad, sizeof(float) * (size_t)m->n_dense);
    mml__par_destroy(m->par);
    mml_backbone_destroy(m->backbone);
    mml_gate_destroy(m->gate);
    mml__free(ctx, m->names, (size_t)(2 * m->F + m->M) * NAME_LEN);
    mml__free(ctx, m->params, sizeof(mml_param *) * (size_t)m->n_params);
    mml__free(ctx, m->embbuf, m->cap_emb * sizeof(float));
    mml__free(ctx, m->demb, m->cap_demb * sizeof(float));
    mml__free(ctx, m->lin, m->cap_lin * sizeof(float));
    mml__free(ctx, m->dense, m->cap_dense * sizeof(float));
    mml__free(ctx, m->dweights, m->cap_dw * sizeof(float));
    mml__free(ctx, m->own, m->cap_own * sizeof(float));
    mml__free(ctx, m->idsbuf, m->cap_ids * sizeof(float));
    mml__free(ctx, m->sortbuf, m->cap_sort * sizeof(float));
    mml__free(ctx, m->hidden, sizeof(int32_t) * (size_t)m->opt.n_hidden);
    mml__free(ctx, m->field_sizes, sizeof(int64_t) * (size_t)m->F);
    mml__free(ctx, m->mh_sizes, sizeof(int64_t) * (size_t)m->M);
    mml__schema_release(ctx, m->schema);
    mml__free(ctx, m->owner, sizeof(int32_t) * (size_t)m->E);
    mml__free(ctx, m, sizeof *m);
}

static int collect_params(mml_model *m)
{
    int64_t nb = mml_backbone_n_params(m->backbone);
    int64_t n = m->F + m->M + (m->linear ? m->F + (m->n_dense > 0) : 0) + 1 + nb +
                mml_gate_n_params(m->gate);
    m->params = mml__alloc(m->ctx, sizeof(mml_param *) * (size_t)n);
    if (!m->params)
        return mml__error(m->ctx, MML_ENOMEM, "model: out of memory");
    m->n_params = n;
    int64_t i = 0;
    for (int32_t f = 0; f < m->F; f++)
        m->params[i++] = mml_embedding_param(m->emb[f]);
    for (int32_t f = 0; f < m->M; f++)
        m->params[i++] = mml_embedding_param(m->mh[f]);
    if (m->linear) {
        for (int32_t f = 0; f < m->F; f++)
            m->params[i++] = mml_embedding_param(m->first[f]);
        if (m->n_dense > 0)
            m->params[i++] = &m->dense_w;
    }
    m->params[i++] = &m->bias;
    for (int64_t j = 0; j < nb; j++) {
        m->params[i] = mml_backbone_param(m->backbone, j);
        if (!m->params[i])
            return mml__error(m->ctx, MML_ECALLBACK, "backbone parameter %lld is NULL", (long long)j);
        i++;
    }
    for (int64_t j = 0; j < mml_gate_n_params(m->gate); j++)
        m->params[i++] = mml_gate_param(m->gate, j);
    return MML_OK;
}

int mml_model_create(mml_model **out, mml_ctx *ctx, const mml_model_options *opt)
{
    if (out)
        *out = NULL;
    if (!out || !ctx)
        return mml__error(ctx, MML_EINVAL, "model_create: NULL argument");
    mml_model_options o;
    int rc = MML__COPY_OPTIONS(ctx, &o, opt, mml_model_options, "model");
    if (rc < 0)
        return rc;
    if (o.n_fields < 1 || o.n_fields > 4096 || !o.field_sizes || !o.backbone)
        return mml__error(ctx, MML_EINVAL, "model: needs 1..4096 fields with sizes and a backbone");
    if (o.n_domains < 1 || o.n_experts < 0 || (o.gate && o.n_experts < 1) || o.n_dense < 0)
        return mml__error(ctx, MML_EINVAL, "model: %d domains, %d experts, gate %d, %d numeric invalid",
                          o.n_domains, o.n_experts, o.gate, o.n_dense);
    if (!isfinite(o.l2_embedding) || !(o.l2_embedding >= 0.0f) || !isfinite(o.l2_dense) ||
        !(o.l2_dense >= 0.0f))
        return mml__error(ctx, MML_EINVAL, "model: l2_embedding %g and l2_dense %g must be finite and >= 0",
                          (double)o.l2_embedding, (double)o.l2_dense);
    if (o.n_multihot < 0 || o.n_multihot > 4096 - o.n_fields || (o.n_multihot > 0 && !o.multihot_sizes))
        return mml__error(ctx, MML_EINVAL, "model: %d multi-hot fields (with %d fields, at most 4096 "
                          "in all, with sizes)", o.n_multihot, o.n_fields);
    if (o.n_multihot > 0 && o.multihot_pooling != MML_POOL_SUM && o.multihot_pooling != MML_POOL_MEAN)
        return mml__error(ctx, MML_EINVAL, "model: unknown multi-hot pooling %d", o.multihot_pooling);
    for (int32_t f = 0; f < o.n_multihot; f++)
        if (o.multihot_sizes[f] < 1 || o.multihot_sizes[f] > INT32_MAX)
            return mml__error(ctx, MML_EINVAL, "model: multi-hot field %d has size %lld", f,
                              (long long)o.multihot_sizes[f]);
    for (int32_t f = 0; f < o.n_fields; f++)
        if (o.field_sizes[f] < 1 || o.field_sizes[f] > INT32_MAX)
            return mml__error(ctx, MML_EINVAL, "model: field %d has size %lld", f,
                              (long long)o.field_sizes[f]);
    if (o.n_hidden < 1 || o.n_hidden > 64 || !o.hidden)
        return mml__error(ctx, MML_EINVAL, "model: n_hidden %d must be 1..64, with widths", o.n_hidden);
    if (o.gate_input < MML_GATE_INPUT_DOMAIN || o.gate_input > MML_GATE_INPUT_EMBEDDINGS_GRAD ||
        !isfinite(o.gate_prior) || !(o.gate_prior >= 0.0f))
        return mml__error(ctx, MML_EINVAL, "model: gate_input %d (0, 1 or 2) or gate_prior %g "
                          "(finite, >= 0) invalid", o.gate_input, (double)o.gate_prior);
    if (strlen(o.backbone) >= 32)
        return mml__error(ctx, MML_ENOTFOUND, "model: no backbone type named \"%.40s...\"", o.backbone);
    mml_model *m = mml__calloc(ctx, 1, sizeof *m);
    if (!m)
        return mml__error(ctx, MML_ENOMEM, "model: out of memory");
    m->ctx = ctx;
    m->F = o.n_fields;
    m->M = o.n_multihot;
    m->pool = o.multihot_pooling;
    m->k = o.embed_dim;
    m->n_dense = o.n_dense;
    m->D = o.n_domains;
    m->E = o.n_experts;
    m->l2_emb = o.l2_embedding;
    m->l2_dense = o.l2_dense;
    m->opt = o;
    m->opt.backbone = NULL;
    m->opt.backbone_options = NULL;
    m->final_mix = o.gate ? MML_MIX_GATED : o.n_experts >= o.n_domains ? MML_MIX_DOMAIN : MML_MIX_NONE;
    size_t name_len = strlen(o.backbone);
    m->hidden = mml__alloc(ctx, sizeof(int32_t) * (size_t)o.n_hidden);
    m->field_sizes = mml__alloc(ctx, sizeof(int64_t) * (size_t)m->F);
    m->mh_sizes = m->M > 0 ? mml__alloc(ctx, sizeof(int64_t) * (size_t)m->M) : NULL;
    if (!m->hidden || !m->field_sizes || (m->M > 0 && !m->mh_sizes)) {
        rc = mml__error(ctx, MML_ENOMEM, "model: out of memory");
        goto fail;
    }
    memcpy(m->hidden, o.hidden, sizeof(int32_t) * (size_t)o.n_hidden);
    memcpy(m->field_sizes, o.field_sizes, sizeof(int64_t) * (size_t)m->F);
    if (m->M > 0)
        memcpy(m->mh_sizes, o.multihot_sizes, sizeof(int64_t) * (size_t)m->M);
    memcpy(m->backbone_name, o.backbone, name_len + 1);
    m->bias = (mml_param){"bias", &m->bias_value, &m->bias_grad, 1, 1, MML_GROUP_BACKBONE, -1, 0, 0};
    mml_backbone_config bc;
    mml_backbone_config_init(&bc);
    bc.n_fields = o.n_fields + o.n_multihot;
    bc.embed_dim = o.embed_dim;
    bc.n_dense = o.n_dense;
    bc.n_domains = o.n_domains;
    bc.n_experts = o.n_experts;
    bc.alpha = o.alpha;
    bc.n_hidden = o.n_hidden;
    bc.hidden = o.hidden;
    bc.dropout = o.dropout;
    bc.options = o.backbone_options;
    rc = mml_backbone_create(&m->backbone, ctx, o.backbone, &bc);
    if (rc < 0)
        goto fail;
    m->linear = mml_backbone_linear_term(m->backbone);
    m->emb = mml__calloc(ctx, (size_t)m->F, sizeof(void *));
    m->names = mml__alloc(ctx, (size_t)(2 * m->F + m->M) * NAME_LEN);
    if (m->linear)
        m->first = mml__calloc(ctx, (size_t)m->F, sizeof(void *));
    if (m->M > 0) {
        m->mh = mml__calloc(ctx, (size_t)m->M, sizeof(void *));
        m->mh_start = mml__calloc(ctx, (size_t)(m->M + 1), sizeof(int64_t));
    }
    if (!m->emb || !m->names || (m->linear && !m->first) || (m->M > 0 && (!m->mh || !m->mh_start))) {
        rc = mml__error(ctx, MML_ENOMEM, "model: out of memory");
        goto fail;
    }
    for (int32_t f = 0; f < m->F; f++) {
        char *name = m->names + (size_t)(2 * f) * NAME_LEN;
        snprintf(name, NAME_LEN, "field%d", f);
        mml_embedding_options eo;
        mml_embedding_options_init(&eo);
        eo.n_rows = o.field_sizes[f];
        eo.dim = o.embed_dim;
        eo.scale = o.embed_std;
        eo.stream = (uint64_t)f;
        eo.name = name;
        rc = mml_embedding_create(&m->emb[f], ctx, &eo);
        if (rc < 0)
            goto fail;
        if (m->linear) {
            char *lname = name + NAME_LEN;
            snprintf(lname, NAME_LEN, "field%d.linear", f);
            eo.dim = 1;
            eo.init = MML_INIT_ZEROS;
            eo.name = lname;
            rc = mml_embedding_create(&m->first[f], ctx, &eo);
            if (rc < 0)
                goto fail;
        }
    }
    for (int32_t f = 0; f < m->M; f++) {
        char *name = m->names + (size_t)(2 * m->F + f) * NAME_LEN;
        snprintf(name, NAME_LEN, "multihot%d", f);
        mml_embedding_options eo;
        mml_embedding_options_init(&eo);
        eo.n_rows = o.multihot_sizes[f];
        eo.dim = o.embed_dim;
        eo.scale = o.embed_std;
        eo.stream = (uint64_t)(m->F + f);
        eo.name = name;
        rc = mml_embedding_create(&m->mh[f], ctx, &eo);
        if (rc < 0)
            goto fail;
    }
    if (m->linear && m->n_dense > 0) {
        m->dense_w = (mml_param){"numeric.linear", mml__calloc(ctx, (size_t)m->n_dense, sizeof(float)),
                                 mml__calloc(ctx, (size_t)m->n_dense, sizeof(float)), 1, m->n_dense,
                                 MML_GROUP_EMBEDDING, -1, 0, 0};
        if (!m->dense_w.value || !m->dense_w.grad) {
            rc = mml__error(ctx, MML_ENOMEM, "model: out of memory");
            goto fail;
        }
    }
    if (o.gate) {
        mml_gate_options go;
        mml_gate_options_init(&go);
        go.n_domains = o.n_domains;
        go.n_experts = o.n_experts;
        go.embed_dim = o.gate_dim;
        go.top_k = o.gate_top_k;
        go.domain_bias = o.gate_domain_bias != 0;
        go.prior = o.gate_prior;
        go.input_dim = o.gate_input != MML_GATE_INPUT_DOMAIN ? (o.n_fields + o.n_multihot) * o.embed_dim : 0;
        rc = mml_gate_create(&m->gate, ctx, &go);
        if (rc < 0)
            goto fail;
    }
    rc = collect_params(m);
    if (rc < 0)
        goto fail;
    *out = m;
    return MML_OK;
fail:
    mml_model_destroy(m);
    return rc;
}

static int check_batch(mml_model *m, const mml_batch_view *b)
{
    mml_ctx *ctx = m->ctx;
    if (!b)
        return mml__error(ctx, MML_EINVAL, "model: NULL batch");
    int rc = MML__CHECK_SIZE(ctx, b, mml_batch_view, "model: mml_batch_view");
    if (rc < 0)
        return rc;
    if (b->n_rows < 1)
        return mml__error(ctx, MML_ESHAPE, "model: batch of %lld rows", (long long)b->n_rows);
    if (b->n_fields != m->F)
        return mml__error(ctx, MML_ESHAPE, "model: batch has %d fields, model %d", b->n_fields, m->F);
    if (b->n_dense != m->n_dense)
        return mml__error(ctx, MML_ESHAPE, "model: batch has %d numeric values, model %d",
                          b->n_dense, m->n_dense);
    if (!b->ids || !b->domain || (m->n_dense > 0 && !b->dense))
        return mml__error(ctx, MML_EINVAL, "model: batch without ids, domains or numeric values");
    if (b->ids_row_stride < m->F || (m->n_dense > 0 && b->dense_row_stride < m->n_dense))
        return mml__error(ctx, MML_ESHAPE, "model: batch row stride too small");
    if (b->n_multihot != m->M)
        return mml__error(ctx, MML_ESHAPE, "model: batch has %d multi-hot fields, model %d",
                          b->n_multihot, m->M);
    if (m->M > 0 && (!b->multihot_offsets || !b->multihot_ids))
        return mml__error(ctx, MML_EINVAL, "model: batch without multi-hot offsets or ids");
    for (int32_t f = 0; f < m->M; f++) {
        const int64_t *off = b->multihot_offsets[f];
        if (!off)
            return mml__error(ctx, MML_EINVAL, "model: multi-hot field %d has no offsets", f);
        if (off[0] < 0)
            return mml__error(ctx, MML_ESHAPE, "model: multi-hot field %d: offsets[0] = %lld is negative",
                              f, (long long)off[0]);
        for (int64_t r = 0; r < b->n_rows; r++)
            if (off[r + 1] < off[r])
                return mml__error(ctx, MML_ESHAPE, "model: multi-hot field %d: offsets decrease at row %lld",
                                  f, (long long)r);
        if (off[b->n_rows] > off[0] && !b->multihot_ids[f])
            return mml__error(ctx, MML_EINVAL, "model: multi-hot field %d has values but no ids", f);
    }
    for (int64_t r = 0; r < b->n_rows; r++) {
        if (b->domain[r] < 0 || b->domain[r] >= m->D)
            return mml__error(ctx, MML_ERANGE, "model: domain %d at row %lld outside [0, %d)",
                              b->domain[r], (long long)r, m->D);
        for (int32_t j = 0; j < m->n_dense; j++)
            if (!isfinite(b->dense[r * b->dense_row_stride + j]))
                return mml__error(ctx, MML_ENONFINITE, "model: numeric value %d at row %lld is not finite",
                                  j, (long long)r);
    }
    return MML_OK;
}

int mml__model_check_mode(const mml_model *m, mml_ctx *ctx, int32_t mode, const char *what)
{
    if (mode < MML_MIX_NONE || mode > MML_MIX_OWN)
        return mml__error(ctx, MML_EINVAL, "%s: unknown mixture mode %d", what, mode);
    if (mode != MML_MIX_NONE && m->E == 0)
        return mml__error(ctx, MML_ESTATE, "%s: mixture mode %d on a model without experts", what,
                          mode);
    if (mode == MML_MIX_GATED && !m->gate)
        return mml__error(ctx, MML_ESTATE, "%s: gated mixture on a model without a gate", what);
    if (mode == MML_MIX_DOMAIN && m->E < m->D)
        return mml__error(ctx, MML_ESTATE, "%s: per-domain adapters need %d experts, have %d", what,
                          m->D, m->E);
    if (mode == MML_MIX_OWN && !m->owner && m->E % m->D != 0)
        return mml__error(ctx, MML_ESTATE, "%s: %d experts are not m per domain for %d domains",
                          what, m->E, m->D);
    return MML_OK;
}

int mml_model_forward(mml_model *m, const mml_batch_view *b, int32_t mode, int32_t expert,
                      int32_t training, float *logits)
{
    if (!m)
        return MML_EINVAL;
    mml_ctx *ctx = m->ctx;
    m->n = 0; /* a failed forward pass leaves nothing for backward */
    if (!logits)
        return mml__error(ctx, MML_EINVAL, "model_forward: NULL output");
    int rc = check_batch(m, b);
    if (rc < 0)
        return rc;
    if ((rc = mml__model_check_mode(m, ctx, mode, "model_forward")) < 0)
        return rc;
    if (training && m->readonly)
        return mml__error(ctx, MML_ESTATE, "model_forward: training pass on a read-only model");
    int64_t n = b->n_rows;
    int32_t fk = (m->F + m->M) * m->k;
    m->n = 0;
    if (m->M > 0) {
        int64_t total = 0;
        for (int32_t f = 0; f < m->M; f++) {
            m->mh_start[f] = total;
            total += b->multihot_offsets[f][n] - b->multihot_offsets[f][0];
        }
        m->mh_start[m->M] = total;
        if ((rc = ensure_i64(ctx, &m->mh_off, &m->cap_mhoff, (size_t)(m->M * (n + 1)))) < 0 ||
            (rc = ensure_i32(ctx, &m->mh_idbuf, &m->cap_mhid, (size_t)(total > 0 ? total : 1))) < 0)
            return rc;
        for (int32_t f = 0; f < m->M; f++) {
            const int64_t *so = b->multihot_offsets[f];
            int64_t *off = m->mh_off + f * (n + 1);
            for (int64_t r = 0; r <= n; r++)
                off[r] = so[r] - so[0];
            if (so[n] > so[0])
                memcpy(m->mh_idbuf + m->mh_start[f], b->multihot_ids[f] + so[0],
                       sizeof(int32_t) * (size_t)(so[n] - so[0]));
        }
    }
    if ((rc = mml__ensure_floats(ctx, &m->embbuf, &m->cap_emb, (size_t)(n * fk))) < 0 ||
        (rc = mml__ensure_floats(ctx, &m->lin, &m->cap_lin, (size_t)n)) < 0 ||
        (rc = mml__ensure_floats(ctx, &m->idsbuf, &m->cap_ids, (size_t)(n * (m->F + 1)))) < 0)
        return rc;
    if (m->n_dense > 0 &&
        (rc = mml__ensure_floats(ctx, &m->dense, &m->cap_dense, (size_t)(n * m->n_dense))) < 0)
        return rc;
    m->n = n;
    int32_t *ids = batch_ids(m), *dom = batch_domains(m);
    for (int64_t r = 0; r < n; r++) {
        memcpy(ids + r * m->F, b->ids + r * b->ids_row_stride, sizeof(int32_t) * (size_t)m->F);
        dom[r] = b->domain[r];
        if (m->n_dense > 0)
            memcpy(m->dense + r * m->n_dense, b->dense + r * b->dense_row_stride,
                   sizeof(float) * (size_t)m->n_dense);
    }
    for (int32_t f = 0; f < m->F; f++) {
        rc = mml_embedding_forward(m->emb[f], ids + f, m->F, n, m->embbuf + f * m->k, fk);
        if (rc < 0)
            goto fail;
    }
    for (int32_t f = 0; f < m->M; f++) {
        rc = mml_embedding_forward_multihot(m->mh[f], m->mh_off + f * (n + 1),
                                            m->mh_idbuf + m->mh_start[f], n, m->pool,
                                            m->embbuf + (m->F + f) * m->k, fk);
        if (rc < 0)
            goto fail;
    }
    for (int64_t r = 0; r < n; r++)
        m->lin[r] = m->bias_value;
    if (m->linear) {
        for (int32_t f = 0; f < m->F; f++) {
            const float *w = mml_embedding_param(m->first[f])->value;
            for (int64_t r = 0; r < n; r++)
                m->lin[r] += w[ids[r * m->F + f]];
        }
        for (int64_t r = 0; r < n; r++)
            for (int32_t j = 0; j < m->n_dense; j++)
                m->lin[r] += m->dense_w.value[j] * m->dense[r * m->n_dense + j];
    }
    mml_mix mix;
    mml_mix_init(&mix, mode, n);
    mix.expert = expert;
    mix.domain = dom;
    if (mode == MML_MIX_GATED && mml__gate_input_dim(m->gate) > 0) {
        /* Since 1.3: the gate also sees the rows' embeddings. */
        rc = mml__gate_forward_rows(m->gate, dom, m->embbuf, fk, n, &mix.weights);
        if (rc < 0)
            goto fail;
    } else if (mode == MML_MIX_GATED) {
        rc = mml_gate_forward(m->gate, dom, n, &mix.weights);
        if (rc < 0)
            goto fail;
    } else if (mode == MML_MIX_OWN) {
        if ((rc = mml__ensure_floats(ctx, &m->own, &m->cap_own, (size_t)(n * m->E))) < 0)
            goto fail;
        float w = (float)m->D / (float)m->E;
        for (int64_t r = 0; r < n; r++)
            for (int32_t e = 0; e < m->E; e++)
                m->own[r * m->E + e] = e % m->D == dom[r] ? w : 0.0f;
        if (m->owner) /* a model that gained domains: 1 / (the domain's experts) */
            for (int64_t r = 0; r < n; r++) {
                int32_t cnt = 0;
                for (int32_t e = 0; e < m->E; e++)
                    cnt += m->owner[e] == dom[r];
                for (int32_t e = 0; e < m->E; e++)
                    m->own[r * m->E + e] = m->owner[e] == dom[r] ? 1.0f / (float)cnt : 0.0f;
            }
        mix.mode = MML_MIX_GATED;
        mix.weights = m->own;
    }
    mml_backbone_input in = {sizeof in, training ? 1 : 0, n, m->embbuf,
                             m->n_dense ? m->dense : NULL, &mix};
    rc = mml__par_forward(m, &in, logits);
    if (rc < 0)
        goto fail;
    for (int64_t r = 0; r < n; r++)
        logits[r] += m->lin[r];
    m->mode = mode;
    return MML_OK;
fail:
    m->n = 0;
    return rc;
}

static int any_unfrozen(mml_embedding **tables, int32_t F)
{
    for (int32_t f = 0; tables && f < F; f++)
        if (!mml_embedding_param(tables[f])->frozen)
            return 1;
    return 0;
}

int mml_model_backward(mml_model *m, const float *dlogits)
{
    if (!m)
        return MML_EINVAL;
    mml_ctx *ctx = m->ctx;
    if (!dlogits)
        return mml__error(ctx, MML_EINVAL, "model_backward: NULL gradient");
    if (m->readonly)
        return mml__error(ctx, MML_ESTATE, "model_backward: the model is read-only");
    if (m->n < 1)
        return mml__error(ctx, MML_ESTATE, "model_backward without a successful forward pass");
    int64_t n = m->n;
    int32_t fk = (m->F + m->M) * m->k;
    const int32_t *ids = batch_ids(m);
    if (!m->bias.frozen)
        for (int64_t r = 0; r < n; r++)
            m->bias_grad += dlogits[r];
    if (m->linear) {
        for (int32_t f = 0; f < m->F; f++) {
            mml_param *p = mml_embedding_param(m->first[f]);
            mml__rows *t = mml__param_rows(p); /* the rows written, for zeroing and sparse steps */
            if (!p->frozen)
                for (int64_t r = 0; r < n; r++) {
                    if (t)
                        mml__rows_touch(t, ids[r * m->F + f]);
                    p->grad[ids[r * m->F + f]] += dlogits[r];
                }
        }
        if (m->n_dense > 0 && !m->dense_w.frozen)
            for (int64_t r = 0; r < n; r++)
                for (int32_t j = 0; j < m->n_dense; j++)
                    m->dense_w.grad[j] += dlogits[r] * m->dense[r * m->n_dense + j];
    }
    int rc;
    int need_emb = any_unfrozen(m->emb, m->F) || any_unfrozen(m->mh, m->M);
    if (need_emb) {
        if ((rc = mml__ensure_floats(ctx, &m->demb, &m->cap_demb, (size_t)(n * fk))) < 0)
            return rc;
        memset(m->demb, 0, sizeof(float) * (size_t)(n * fk));
    }
    int need_gate = 0;
    for (int64_t i = 0; m->mode == MML_MIX_GATED && i < mml_gate_n_params(m->gate); i++)
        need_gate |= !mml_gate_param(m->gate, i)->frozen;
    /* Since 1.3: a gate fed the embeddings with the gradient passes it on even when frozen. */
    if (m->mode == MML_MIX_GATED && need_emb && m->opt.gate_input == MML_GATE_INPUT_EMBEDDINGS_GRAD)
        need_gate = 1;
    if (need_gate) {
        if ((rc = mml__ensure_floats(ctx, &m->dweights, &m->cap_dw, (size_t)(n * m->E))) < 0)
            return rc;
        memset(m->dweights, 0, sizeof(float) * (size_t)(n * m->E));
    }
    mml_backbone_grads g = {sizeof g, 0, need_emb ? m->demb : NULL, NULL,
                            need_gate ? m->dweights : NULL};
    rc = mml__par_backward(m, dlogits, &g);
    if (rc < 0)
        return rc;
    if (need_gate && mml__gate_input_dim(m->gate) > 0) {
        /* Before the embeddings take their gradient: the gate may add to it. */
        int grad_x = need_emb && m->opt.gate_input == MML_GATE_INPUT_EMBEDDINGS_GRAD;
        if ((rc = mml__gate_backward_rows(m->gate, m->dweights, grad_x ? m->demb : NULL, fk)) < 0)
            return rc;
        need_gate = 0;
    }
    for (int32_t f = 0; need_emb && f < m->F; f++) {
        if (mml_embedding_param(m->emb[f])->frozen)
            continue;
        rc = mml_embedding_backward(m->emb[f], ids + f, m->F, n, m->demb + f * m->k, fk);
        if (rc < 0)
            return rc;
    }
    for (int32_t f = 0; need_emb && f < m->M; f++) {
        if (mml_embedding_param(m->mh[f])->frozen)
            continue;
        rc = mml_embedding_backward_multihot(m->mh[f], m->mh_off + f * (n + 1),
                                             m->mh_idbuf + m->mh_start[f], n, m->pool,
                                             m->demb + (m->F + f) * m->k, fk);
        if (rc < 0)
            return rc;
    }
    if (need_gate)
        return mml_gate_backward(m->gate, m->dweights);
    return MML_OK;
}

int mml_model_regularization(mml_model *m, double *penalty)
{
    if (penalty)
        *penalty = 0.0;
    if (!m)
        return MML_EINVAL;
    mml_ctx *ctx = m->ctx;
    if (m->readonly)
        return mml__error(ctx, MML_ESTATE, "model_regularization: the model is read-only");
    if (m->n < 1)
        return mml__error(ctx, MML_ESTATE, "model_regularization without a successful forward pass");
    double total = 0.0;
    if (m->l2_emb > 0.0f) {
        int rc = mml__ensure_floats(ctx, &m->sortbuf, &m->cap_sort, (size_t)m->n);
        if (rc < 0)
            return rc;
        int32_t *s = (int32_t *)(void *)m->sortbuf;
        const int32_t *ids = batch_ids(m);
        float two_l = 2.0f * m->l2_emb;
        for (int32_t f = 0; f < m->F; f++) {
            mml_param *p = mml_embedding_param(m->emb[f]);
            mml__rows *t = p->frozen ? NULL : mml__param_rows(p);
            for (int64_t r = 0; r < m->n; r++)
                s[r] = ids[r * m->F + f];
            mml__sort_i32(s, (size_t)m->n);
            double sq = 0.0;
            for (int64_t r = 0; r < m->n; r++) {
                if (r > 0 && s[r] == s[r - 1])
                    continue; /* each distinct row once */
                if (t)
                    mml__rows_touch(t, s[r]);
                const float *v = p->value + (int64_t)s[r] * m->k;
                float *g = p->grad + (int64_t)s[r] * m->k;
                for (int32_t j = 0; j < m->k; j++) {
                    sq += (double)v[j] * v[j];
                    if (!p->frozen)
                        g[j] += two_l * v[j];
                }
            }
            total += (double)m->l2_emb * sq;
        }
        for (int32_t f = 0; f < m->M; f++) {
            int64_t cnt = m->mh_start[f + 1] - m->mh_start[f];
            if (cnt < 1)
                continue;
            if ((rc = mml__ensure_floats(ctx, &m->sortbuf, &m->cap_sort, (size_t)cnt)) < 0)
                return rc;
            s = (int32_t *)(void *)m->sortbuf;
            memcpy(s, m->mh_idbuf + m->mh_start[f], sizeof(int32_t) * (size_t)cnt);
            mml__sort_i32(s, (size_t)cnt);
            mml_param *p = mml_embedding_param(m->mh[f]);
            mml__rows *t = p->frozen ? NULL : mml__param_rows(p);
            double sq = 0.0;
            for (int64_t r = 0; r < cnt; r++) {
                if (r > 0 && s[r] == s[r - 1])
                    continue;
                if (t)
                    mml__rows_touch(t, s[r]);
                const float *v = p->value + (int64_t)s[r] * m->k;
                float *g = p->grad + (int64_t)s[r] * m->k;
                for (int32_t j = 0; j < m->k; j++) {
                    sq += (double)v[j] * v[j];
                    if (!p->frozen)
                        g[j] += two_l * v[j];
                }
            }
            total += (double)m->l2_emb * sq;
        }
    }
    if (m->l2_dense > 0.0f) {
        float two_l = 2.0f * m->l2_dense;
        for (int64_t i = 0; i < m->n_params; i++) {
            mml_param *p = m->params[i];
            if (p->group != MML_GROUP_BACKBONE || p->rows < 2)
                continue;
            int64_t size = p->rows * p->cols;
            double sq = 0.0;
            for (int64_t j = 0; j < size; j++) {
                sq += (double)p->value[j] * p->value[j];
                if (!p->frozen)
                    p->grad[j] += two_l * p->value[j];
            }
            total += (double)m->l2_dense * sq;
        }
    }
    if (penalty)
        *penalty = total;
    return MML_OK;
}

int mml_model_predict(mml_model *m, const mml_batch_view *b, int32_t mode, int32_t expert,
                      float *prob)
{
    int rc = mml_model_forward(m, b, mode, expert, 0, prob);
    if (rc < 0)
        return rc;
    mml_sigmoid_array(prob, prob, b->n_rows);
    return MML_OK;
}

int64_t mml_model_n_params(const mml_model *m) { return m ? m->n_params : 0; }
mml_param *mml_model_param(mml_model *m, int64_t i)
{
    return m && i >= 0 && i < m->n_params ? m->params[i] : NULL;
}
mml_backbone *mml_model_backbone(mml_model *m) { return m ? m->backbone : NULL; }
mml_lora *mml_model_experts(mml_model *m) { return m ? mml_backbone_experts(m->backbone) : NULL; }
mml_gate *mml_model_gate(mml_model *m) { return m ? m->gate : NULL; }
int32_t mml_model_n_domains(const mml_model *m) { return m ? m->D : 0; }
int32_t mml_model_n_experts(const mml_model *m) { return m ? m->E : 0; }
int32_t mml_model_n_fields(const mml_model *m) { return m ? m->F : 0; }
int mml_model_set_dropout_replay(mml_model *m, int32_t replay)
{
    if (!m)
        return MML_EINVAL;
    int rc = mml_backbone_set_dropout_replay(m->backbone, replay);
    if (rc >= 0)
        m->replay = replay ? 1 : 0;
    return rc;
}
uint64_t mml_model_kink_pattern(mml_model *m)
{
    if (!m)
        return 0;
    uint64_t p = mml__par_kink_pattern(m, mml_backbone_kink_pattern(m->backbone));
    if (m->gate && m->mode == MML_MIX_GATED)
        p ^= mml_gate_kink_pattern(m->gate) * 0xD6E8FEB86659FD93ull;
    return p;
}

int mml__model_check_schema(const mml_model *m, const mml__schema *s)
{
    if (s->n_fields != m->F || s->n_dense != m->n_dense || s->n_multihot != m->M ||
        s->n_domains != m->D)
        return mml__error(m->ctx, MML_ESHAPE,
                          "model: a schema of %d fields, %d numeric, %d multi-hot and %d domains "
                          "does not fit a model of %d, %d, %d and %d", s->n_fields, s->n_dense,
                          s->n_multihot, s->n_domains, m->F, m->n_dense, m->M, m->D);
    for (int32_t f = 0; f < m->F; f++)
        if (s->field_sizes[f] != m->field_sizes[f])
            return mml__error(m->ctx, MML_ESHAPE, "model: schema field %d ('%s') has %d ids, the "
                              "model's table %lld", f, s->field_names[f] ? s->field_names[f] : "",
                              s->field_sizes[f], (long long)m->field_sizes[f]);
    for (int32_t j = 0; j < m->M; j++)
        if (s->mh_sizes[j] != m->mh_sizes[j])
            return mml__error(m->ctx, MML_ESHAPE, "model: schema multi-hot field %d has %d ids, the "
                              "model's table %lld", j, s->mh_sizes[j], (long long)m->mh_sizes[j]);
    return MML_OK;
}

int mml_model_attach_schema(mml_model *m, const mml_dataset *ds)
{
    if (!m)
        return MML_EINVAL;
    if (!ds)
        return mml__error(m->ctx, MML_EINVAL, "model_attach_schema: NULL data set");
    mml__schema *s = mml__dataset_schema(ds);
    int rc = mml__model_check_schema(m, s);
    if (rc < 0)
        return rc;
    mml__schema_retain(s);
    mml__schema_release(m->ctx, m->schema);
    m->schema = s;
    return MML_OK;
}

int32_t mml_model_has_schema(const mml_model *m) { return m && m->schema ? 1 : 0; }

int mml_model_make_readonly(mml_model *m)
{
    if (!m)
        return MML_EINVAL;
    if (m->readonly)
        return MML_OK;
    /* The gate is the one part that allocates here: first, so that a
     * failure leaves the model as it was. */
    if (m->gate) {
        int rc = mml__gate_drop_grads(m->gate);
        if (rc < 0)
            return mml__error(m->ctx, rc, "model_make_readonly: out of memory for the gate");
    }
    for (int32_t f = 0; f < m->F; f++) {
        mml__embedding_drop_grad(m->emb[f]);
        if (m->first)
            mml__embedding_drop_grad(m->first[f]);
    }
    for (int32_t f = 0; f < m->M; f++)
        mml__embedding_drop_grad(m->mh[f]);
    mml__free(m->ctx, m->dense_w.grad, sizeof(float) * (size_t)m->n_dense);
    m->dense_w.grad = NULL;
    m->bias.grad = NULL;
    mml__par_destroy(m->par);
    m->par = NULL;
    mml__backbone_make_readonly(m->backbone);
    mml__free(m->ctx, m->demb, m->cap_demb * sizeof(float));
    mml__free(m->ctx, m->dweights, m->cap_dw * sizeof(float));
    mml__free(m->ctx, m->sortbuf, m->cap_sort * sizeof(float));
    m->demb = m->dweights = m->sortbuf = NULL;
    m->cap_demb = m->cap_dw = m->cap_sort = 0;
    m->n = 0;
    m->readonly = 1;
    return MML_OK;
}

int32_t mml_model_is_readonly(const mml_model *m) { return m ? m->readonly : 0; }

int32_t mml_model_mix_mode(const mml_model *m) { return m ? m->final_mix : MML_MIX_NONE; }

int mml_model_set_mix_mode(mml_model *m, int32_t mode)
{
    if (!m)
        return MML_EINVAL;
    if (mode == MML_MIX_SINGLE)
        return mml__error(m->ctx, MML_EINVAL,
                          "model_set_mix_mode: a single expert (%d) is no final mixture", mode);
    int rc = mml__model_check_mode(m, m->ctx, mode, "model_set_mix_mode");
    if (rc < 0)
        return rc;
    m->final_mix = mode;
    return MML_OK;
}
