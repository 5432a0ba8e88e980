/* Adding a domain to a trained MoE-MLoRA model (add_domain.h): the grown
 * model, data mapped onto a model's schema, and the file section that keeps
 * the experts' owners and the gate's mask. The training is in
 * lib/train/add_domain_train.c. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backbones/backbone_io.h"
#include "core/bytes.h"
#include "data/data_internal.h"
#include "model/model_internal.h"
#include "moemlora/add_domain.h"
#include "moemlora/hashing.h"
#include "nn/layers.h"

int mml_add_domain_options_init_sized(mml_add_domain_options *out, uint32_t struct_size)
{
    mml_add_domain_options full, *opt = &full;
    memset(opt, 0, sizeof *opt);
    opt->lr = 1e-3f;
    opt->patience = 3;
    opt->batch_size = 1024;
    opt->max_epochs = 50;
    opt->train_domain_row = 1;
    opt->gate_own_weight = 0.9f;
    return mml__init_versioned(out, opt, sizeof *opt, struct_size,
                               MML__OLDER_SIZES_mml_add_domain_options);
}

int mml__add_domain_check_options(mml_ctx *ctx, const mml_add_domain_options *o)
{
    if (o->n_experts < 0 || o->n_experts > 4096 || !isfinite(o->lr) || !(o->lr > 0.0f) ||
        o->patience < 1 || o->batch_size < 1 || o->batch_size > INT32_MAX || o->max_epochs < 1 ||
        !(o->gate_own_weight >= 0.0f && o->gate_own_weight < 1.0f))
        return mml__error(ctx, MML_EINVAL,
                          "add_domain: n_experts %d (0..4096), lr %g (> 0), patience %d, "
                          "batch_size %lld, max_epochs %d (>= 1) or gate_own_weight %g ([0, 1)) "
                          "invalid", o->n_experts, (double)o->lr, o->patience,
                          (long long)o->batch_size, o->max_epochs, (double)o->gate_own_weight);
    return MML_OK;
}

int32_t mml__model_expert_owner(const mml_model *m, int32_t e)
{
    return m->owner ? m->owner[e] : e % m->D;
}

int32_t mml_model_expert_domain(const mml_model *m, int32_t e)
{
    return m && e >= 0 && e < m->E ? mml__model_expert_owner(m, e) : -1;
}

int32_t mml_model_expert_allowed(const mml_model *m, int32_t d, int32_t e)
{
    if (!m || !m->gate || d < 0 || d >= m->D || e < 0 || e >= m->E)
        return -1;
    const uint8_t *mask = mml__gate_mask(m->gate);
    return mask ? mask[(size_t)d * (size_t)m->E + (size_t)e] != 0 : 1;
}

/* ------------------------------------------------------------ schemas */

/* A deep copy of s with D domains named names[0 .. D) (and the domain
 * field of size D), made by writing a patched shallow copy and reading it
 * back: the reader checks and rebuilds everything. */
static int schema_with_domains(mml_ctx *ctx, const mml__schema *s, int32_t D,
                               const char *const *names, mml__schema **out)
{
    *out = NULL;
    size_t nf = (size_t)(s->n_fields > 0 ? s->n_fields : 1);
    int32_t *sizes = mml__alloc(ctx, nf * sizeof(int32_t));
    char **dn = mml__alloc(ctx, (size_t)D * sizeof(char *));
    if (!sizes || !dn) {
        mml__free(ctx, sizes, nf * sizeof(int32_t));
        mml__free(ctx, dn, (size_t)D * sizeof(char *));
        return mml__error(ctx, MML_ENOMEM, "add_domain: out of memory for the schema");
    }
    if (s->n_fields > 0)
        memcpy(sizes, s->field_sizes, (size_t)s->n_fields * sizeof(int32_t));
    if (s->domain_field >= 0)
        sizes[s->domain_field] = D;
    for (int32_t d = 0; d < D; d++)
        memcpy(&dn[d], &names[d], sizeof(char *)); /* borrowed, never written */
    mml__schema tmp = *s;
    tmp.field_sizes = sizes;
    tmp.n_domains = D;
    tmp.domain_names = dn;
    tmp.domain_vocab = NULL; /* names from domain_names */
    mml__wbuf w;
    mml__wbuf_init(&w, ctx);
    mml__schema_write(&w, &tmp);
    int rc = mml__wbuf_status(&w);
    if (rc >= 0) {
        mml__rbuf r;
        mml__rbuf_init(&r, ctx, w.data, w.len, 0, "schema");
        rc = mml__schema_read(ctx, &r, out);
        if (rc < 0 && rc != MML_ENOMEM)
            rc = mml__error(ctx, MML_EINVAL, "add_domain: the new schema is refused: %s",
                            mml_ctx_last_error(ctx));
    } else {
        rc = mml__error(ctx, rc, "add_domain: out of memory for the schema");
    }
    mml__wbuf_free(&w);
    mml__free(ctx, sizes, nf * sizeof(int32_t));
    mml__free(ctx, dn, (size_t)D * sizeof(char *));
    return rc;
}

static int32_t find_domain(const mml__schema *s, const char *name)
{
    for (int32_t d = 0; d < s->n_domains; d++)
        if (s->domain_names[d] && strcmp(s->domain_names[d], name) == 0)
            return d;
    return -1;
}

static int32_t find_field(const mml__schema *s, const char *name)
{
    for (int32_t f = 0; f < s->n_fields; f++)
        if (s->field_names[f] && strcmp(s->field_names[f], name) == 0)
            return f;
    return -1;
}

/* ------------------------------------------------------------ the grown model */

/* dst's parameters from src's, matched by name: equal shapes are copied; the
 * domain field's tables get their old rows and the mean of them as the new
 * row; the gate's parameters with a row per domain or a column per expert
 * get their old rows and columns (the new ones keep their fresh initial
 * values; a new bias is 0), whatever the gate's inputs; a per-domain logit
 * table keeps its old cells and starts its new ones at 0. */
static int copy_grown(mml_model *dst, const mml_model *src, int32_t dfield)
{
    mml_ctx *ctx = dst->ctx;
    char emb_name[NAME_LEN], lin_name[NAME_LEN];
    snprintf(emb_name, sizeof emb_name, "field%d", dfield);
    snprintf(lin_name, sizeof lin_name, "field%d.linear", dfield);
    int32_t D = src->D, E = src->E;
    for (int64_t i = 0; i < dst->n_params; i++) {
        mml_param *p = dst->params[i];
        const mml_param *q = NULL;
        for (int64_t j = 0; j < src->n_params && !q; j++)
            if (strcmp(src->params[j]->name, p->name) == 0)
                q = src->params[j];
        if (!q)
            continue; /* a new expert's */
        if (q->rows == p->rows && q->cols == p->cols) {
            memcpy(p->value, q->value, sizeof(float) * (size_t)mml_param_size(p));
            continue;
        }
        int table = dfield >= 0 && (!strcmp(p->name, emb_name) || !strcmp(p->name, lin_name));
        int gate = p->group == MML_GROUP_GATE;
        if ((table || gate) && q->rows == D && p->rows == D + 1 && q->cols == p->cols) {
            memcpy(p->value, q->value, sizeof(float) * (size_t)mml_param_size(q));
            if (table)
                for (int64_t c = 0; c < p->cols; c++) {
                    double s = 0.0;
                    for (int32_t d = 0; d < D; d++)
                        s += q->value[(int64_t)d * q->cols + c];
                    p->value[(int64_t)D * p->cols + c] = (float)(s / D);
                }
            continue;
        }
        if (gate && q->cols == E && q->rows == p->rows && p->cols > E) {
            for (int64_t r = 0; r < p->rows; r++)
                memcpy(p->value + r * p->cols, q->value + r * q->cols, sizeof(float) * (size_t)E);
            if (!strcmp(p->name, "gate.b"))
                for (int64_t c = E; c < p->cols; c++)
                    p->value[c] = 0.0f;
            continue;
        }
        if (gate && q->rows == D && q->cols == E && p->rows == D + 1 && p->cols > E) {
            /* A per-domain logit table (gate.domain_bias): the old domains'
             * logits as they were; the new row and columns start at 0 (the
             * old domains never see the new columns: masked). */
            memset(p->value, 0, sizeof(float) * (size_t)mml_param_size(p));
            for (int64_t r = 0; r < D; r++)
                memcpy(p->value + r * p->cols, q->value + r * q->cols, sizeof(float) * (size_t)E);
            continue;
        }
        return mml__error(ctx, MML_ESHAPE, "add_domain: parameter '%s' is %lld x %lld, was %lld x %lld",
                          p->name, (long long)p->rows, (long long)p->cols, (long long)q->rows,
                          (long long)q->cols);
    }
    return MML_OK;
}

/* Owners and mask of the grown model g (D + 1 domains, E + add experts) from m's. */
static int grow_routing(mml_model *g, const mml_model *m)
{
    mml_ctx *ctx = g->ctx;
    int32_t D = m->D, E = m->E, D2 = g->D, E2 = g->E;
    size_t cells = (size_t)D2 * (size_t)E2;
    uint8_t *mask = mml__alloc(ctx, cells);
    g->owner = mml__alloc(ctx, sizeof(int32_t) * (size_t)E2);
    if (!mask || !g->owner) {
        mml__free(ctx, mask, cells);
        return mml__error(ctx, MML_ENOMEM, "add_domain: out of memory");
    }
    const uint8_t *old = mml__gate_mask(m->gate);
    for (int32_t d = 0; d < D2; d++)
        for (int32_t e = 0; e < E2; e++)
            mask[(size_t)d * (size_t)E2 + (size_t)e] =
                d == D ? 1 : e >= E ? 0 : old ? old[(size_t)d * (size_t)E + (size_t)e] : 1;
    for (int32_t e = 0; e < E2; e++)
        g->owner[e] = e < E ? mml__model_expert_owner(m, e) : D;
    int rc = mml__gate_set_mask(g->gate, mask);
    mml__free(ctx, mask, cells);
    return rc;
}

int mml_model_add_domain(mml_model **out, const mml_model *m, const mml_dataset *data,
                         const mml_add_domain_options *opt)
{
    if (out)
        *out = NULL;
    if (!m)
        return MML_EINVAL;
    mml_ctx *ctx = m->ctx;
    if (!out || !data)
        return mml__error(ctx, MML_EINVAL, "add_domain: NULL argument");
    mml_add_domain_options o;
    int rc = MML__COPY_OPTIONS(ctx, &o, opt, mml_add_domain_options, "add_domain");
    if (rc < 0 || (rc = mml__add_domain_check_options(ctx, &o)) < 0)
        return rc;
    if (!m->gate || m->E < 1)
        return mml__error(ctx, MML_EINVAL, "add_domain: the model has no gate: only a MoE-MLoRA "
                          "model gains a domain");
    if (!m->schema)
        return mml__error(ctx, MML_ESTATE, "add_domain: the model has no schema (train it with "
                          "the trainer, or attach one with mml_model_attach_schema)");
    if (m->M > 0)
        return mml__error(ctx, MML_ESTATE, "add_domain: models with multi-hot fields are not "
                          "supported");
    if (!mml__backbone_is_builtin(m->backbone))
        return mml__error(ctx, MML_ESTATE, "add_domain: backbone '%s' is registered, not built "
                          "in: not supported", m->backbone_name);
    const mml__schema *ms = m->schema, *ds = mml__dataset_schema(data);
    if (ds->n_fields != ms->n_fields || ds->n_dense != ms->n_dense || ds->n_multihot != 0)
        return mml__error(ctx, MML_ESHAPE, "add_domain: the data has %d fields, %d numeric and %d "
                          "multi-hot columns, the model %d, %d and 0", ds->n_fields, ds->n_dense,
                          ds->n_multihot, ms->n_fields, ms->n_dense);
    for (int32_t f = 0; f < ms->n_fields; f++)
        if (find_field(ds, ms->field_names[f]) < 0)
            return mml__error(ctx, MML_ESHAPE, "add_domain: the data has no field '%s'",
                              ms->field_names[f]);
    if ((ds->domain_field >= 0) != (ms->domain_field >= 0) ||
        (ms->domain_field >= 0 &&
         find_field(ds, ms->field_names[ms->domain_field]) != ds->domain_field))
        return mml__error(ctx, MML_ESHAPE, "add_domain: the data's domain field (%d) is not the "
                          "model's ('%s')", ds->domain_field,
                          ms->domain_field >= 0 ? ms->field_names[ms->domain_field] : "none");
    int32_t D = m->D, E = m->E, fresh = -1, n_new = 0;
    for (int32_t d = 0; d < ds->n_domains; d++)
        if (find_domain(ms, ds->domain_names[d]) < 0) {
            fresh = d;
            n_new++;
        }
    if (n_new == 0)
        return mml__error(ctx, MML_ENOTFOUND, "add_domain: every domain of the data (%d) is one "
                          "of the model's %d: no new domain", ds->n_domains, D);
    if (n_new > 1)
        return mml__error(ctx, MML_ESHAPE, "add_domain: the data has %d domains the model lacks; "
                          "add one at a time", n_new);
    int32_t add = o.n_experts > 0 ? o.n_experts : (E / D > 0 ? E / D : 1);
    if (E + add > 4096)
        return mml__error(ctx, MML_EINVAL, "add_domain: %d + %d experts, at most 4096", E, add);
    int32_t df = ms->domain_field;
    if (df >= 0 && m->field_sizes[df] != D)
        return mml__error(ctx, MML_ESHAPE, "add_domain: the domain field has %lld ids for %d "
                          "domains", (long long)m->field_sizes[df], D);
    const char **names = mml__alloc(ctx, sizeof(char *) * (size_t)(D + 1));
    int64_t *sizes = mml__alloc(ctx, sizeof(int64_t) * (size_t)m->F);
    mml__schema *gs = NULL;
    mml_model *g = NULL;
    if (!names || !sizes) {
        rc = mml__error(ctx, MML_ENOMEM, "add_domain: out of memory");
        goto done;
    }
    for (int32_t d = 0; d < D; d++)
        names[d] = ms->domain_names[d];
    names[D] = ds->domain_names[fresh];
    if ((rc = schema_with_domains(ctx, ms, D + 1, names, &gs)) < 0)
        goto done;
    memcpy(sizes, m->field_sizes, sizeof(int64_t) * (size_t)m->F);
    if (df >= 0)
        sizes[df] = D + 1;
    int32_t nw = 0;
    const int32_t *words = mml__backbone_option_words(m->backbone, &nw);
    mml__backbone_saved_options so;
    const void *bopts = NULL;
    if ((rc = mml__backbone_options_decode(ctx, m->backbone_name, words, nw, &so, &bopts)) < 0)
        goto done;
    mml_model_options mo = m->opt;
    mo.struct_size = sizeof mo;
    mo.backbone = m->backbone_name;
    mo.backbone_options = bopts;
    mo.field_sizes = sizes;
    mo.hidden = m->hidden;
    mo.multihot_sizes = NULL;
    mo.n_domains = D + 1;
    mo.n_experts = E + add;
    if ((rc = mml_model_create(&g, ctx, &mo)) < 0 || (rc = copy_grown(g, m, df)) < 0 ||
        (rc = grow_routing(g, m)) < 0)
        goto done;
    g->schema = gs;
    gs = NULL;
    g->final_mix = MML_MIX_GATED;
    *out = g;
    g = NULL;
done:
    mml_model_destroy(g);
    mml__schema_release(ctx, gs);
    mml__free(ctx, names, sizeof(char *) * (size_t)(D + 1));
    mml__free(ctx, sizes, sizeof(int64_t) * (size_t)m->F);
    return rc;
}

/* ------------------------------------------------------------ data */

/* The id in target field tf of t for source id sid of field sf of s. */
static int map_id(mml_ctx *ctx, const mml__schema *s, int32_t sf, int32_t sid,
                  const mml__schema *t, int32_t tf, int64_t row, int32_t *id)
{
    int32_t sk = s->field_kind[sf], tk = t->field_kind[tf], size = t->field_sizes[tf];
    const char *name = t->field_names[tf];
    if (sk == tk && s->field_sizes[sf] == size &&
        (sk == MML__FIELD_IDS || (sk == MML__FIELD_HASHED && s->field_seed[sf] == t->field_seed[tf]) ||
         s->field_vocab[sf] == t->field_vocab[tf])) {
        *id = sid;
        return MML_OK;
    }
    /* The raw value: the vocabulary's string, or the id as a decimal. */
    char num[24];
    const char *v = NULL;
    size_t len = 0;
    const mml__vocab *sv = s->field_vocab[sf];
    if (sv && sid >= 0 && sid < sv->n) {
        v = mml__vocab_str(sv, sid);
        len = (size_t)(sv->off[sid + 1] - sv->off[sid] - 1);
    } else if (sk == MML__FIELD_IDS) {
        len = (size_t)snprintf(num, sizeof num, "%d", sid);
        v = num;
    } else if (!(sv && sid == s->field_oov[sf])) {
        return mml__error(ctx, MML_ESHAPE, "dataset_for_model: field '%s' is hashed or a domain "
                          "field in the data, not in the model", name);
    }
    switch (tk) {
    case MML__FIELD_VOCAB_OOV:
    case MML__FIELD_VOCAB: {
        int32_t k = v ? mml__vocab_find(t->field_vocab[tf], v, len) : -1;
        if (k < 0)
            k = t->field_oov[tf];
        if (k < 0)
            return mml__error(ctx, MML_ERANGE, "dataset_for_model: row %lld: value '%.40s' of "
                              "field '%s' is not in the model's vocabulary, which has no "
                              "out-of-vocabulary id", (long long)row, v ? v : "(unknown)", name);
        *id = k;
        return MML_OK;
    }
    case MML__FIELD_HASHED:
        if (!v)
            return mml__error(ctx, MML_ERANGE, "dataset_for_model: row %lld: field '%s' has an "
                              "out-of-vocabulary value, which cannot be hashed", (long long)row, name);
        *id = (int32_t)mml_hash_string(v, len, t->field_seed[tf], (uint32_t)size);
        return MML_OK;
    case MML__FIELD_IDS: {
        int64_t x = -1;
        if (!v || !mml__parse_canonical_int(v, len, &x) || x < 0 || x >= size)
            return mml__error(ctx, MML_ERANGE, "dataset_for_model: row %lld: value '%.40s' of "
                              "field '%s' is no id in [0, %d)", (long long)row,
                              v ? v : "(unknown)", name, size);
        *id = (int32_t)x;
        return MML_OK;
    }
    default:
        return mml__error(ctx, MML_ESHAPE, "dataset_for_model: field '%s' is the model's domain "
                          "field but not the data's", name);
    }
}

static int remap(mml_ctx *ctx, const mml_dataset *src, mml__schema *t, mml_dataset **out)
{
    const mml__schema *s = mml__dataset_schema(src);
    if (s->n_multihot > 0 || t->n_multihot > 0)
        return mml__error(ctx, MML_ESHAPE, "dataset_for_model: multi-hot fields are not supported");
    int32_t F = t->n_fields, sF = s->n_fields, nd = t->n_dense, sD = s->n_domains;
    int32_t *fmap = mml__alloc(ctx, sizeof(int32_t) * (size_t)(F + nd + sD + 1));
    if (!fmap)
        return mml__error(ctx, MML_ENOMEM, "dataset_for_model: out of memory");
    int32_t *dmap = fmap + F, *dom = dmap + nd;
    int rc = MML_OK;
    for (int32_t f = 0; f < F && rc >= 0; f++) {
        fmap[f] = f == t->domain_field ? -1 : find_field(s, t->field_names[f]);
        if (f != t->domain_field && fmap[f] < 0)
            rc = mml__error(ctx, MML_ESHAPE, "dataset_for_model: the data has no field '%s'",
                            t->field_names[f]);
    }
    for (int32_t j = 0; j < nd && rc >= 0; j++) {
        dmap[j] = -1;
        for (int32_t k = 0; k < s->n_dense; k++)
            if (!strcmp(s->dense_names[k], t->dense_names[j]))
                dmap[j] = k;
        if (dmap[j] < 0)
            rc = mml__error(ctx, MML_ESHAPE, "dataset_for_model: the data has no numeric column "
                            "'%s'", t->dense_names[j]);
    }
    for (int32_t d = 0; d < sD; d++)
        dom[d] = find_domain(t, s->domain_names[d]);
    mml_dataset *ds = NULL;
    int64_t n = mml_dataset_n_rows(src);
    if (rc >= 0)
        rc = mml__dataset_create(ctx, t, n, &ds);
    for (int64_t r = 0; r < n && rc >= 0; r++) {
        int32_t d = dom[src->domain[r]];
        if (d < 0) {
            rc = mml__error(ctx, MML_ERANGE, "dataset_for_model: row %lld: domain '%s' is not one "
                            "of the model's", (long long)r, s->domain_names[src->domain[r]]);
            break;
        }
        for (int32_t f = 0; f < F && rc >= 0; f++) {
            if (fmap[f] < 0)
                ds->ids[r * F + f] = d;
            else
                rc = map_id(ctx, s, fmap[f], src->ids[r * sF + fmap[f]], t, f, r,
                            &ds->ids[r * F + f]);
        }
        for (int32_t j = 0; j < nd; j++)
            ds->dense[r * nd + j] = src->dense[r * s->n_dense + dmap[j]];
        ds->domain[r] = d;
        ds->labels[r] = src->labels[r];
    }
    mml__free(ctx, fmap, sizeof(int32_t) * (size_t)(F + nd + sD + 1));
    if (rc < 0) {
        mml_dataset_destroy(ds);
        return rc;
    }
    ds->n_rows = n;
    mml__dataset_count_domains(ds);
    *out = ds;
    return MML_OK;
}

int mml_dataset_for_model(mml_dataset **out, const mml_dataset *src, const mml_model *m)
{
    if (out)
        *out = NULL;
    if (!m)
        return MML_EINVAL;
    if (!out || !src)
        return mml__error(m->ctx, MML_EINVAL, "dataset_for_model: NULL argument");
    if (!m->schema)
        return mml__error(m->ctx, MML_ESTATE, "dataset_for_model: the model has no schema");
    return remap(m->ctx, src, m->schema, out);
}

int mml_dataset_drop_domain(mml_dataset **out, const mml_dataset *src, int32_t domain)
{
    if (out)
        *out = NULL;
    if (!src)
        return MML_EINVAL;
    mml_ctx *ctx = src->ctx;
    const mml__schema *s = mml__dataset_schema(src);
    if (!out || s->n_domains < 2)
        return mml__error(ctx, MML_EINVAL, "dataset_drop_domain: NULL argument or a data set of "
                          "one domain");
    if (domain < 0 || domain >= s->n_domains)
        return mml__error(ctx, MML_ERANGE, "dataset_drop_domain: domain %d outside [0, %d)",
                          domain, s->n_domains);
    if (s->n_multihot > 0)
        return mml__error(ctx, MML_ESTATE, "dataset_drop_domain: multi-hot fields are not supported");
    int32_t D = s->n_domains;
    const char **names = mml__alloc(ctx, sizeof(char *) * (size_t)D);
    if (!names)
        return mml__error(ctx, MML_ENOMEM, "dataset_drop_domain: out of memory");
    for (int32_t d = 0, k = 0; d < D; d++)
        if (d != domain)
            names[k++] = s->domain_names[d];
    mml__schema *ns = NULL;
    int rc = schema_with_domains(ctx, s, D - 1, names, &ns);
    mml__free(ctx, names, sizeof(char *) * (size_t)D);
    if (rc < 0)
        return rc;
    int64_t n = mml_dataset_n_rows(src), keep = n - mml_dataset_domain_rows(src, domain);
    mml_dataset *ds = NULL;
    rc = mml__dataset_create(ctx, ns, keep, &ds);
    mml__schema_release(ctx, ns);
    if (rc < 0)
        return mml__error(ctx, rc, "dataset_drop_domain: out of memory");
    int32_t F = s->n_fields, nd = s->n_dense, df = s->domain_field;
    int64_t k = 0;
    for (int64_t r = 0; r < n; r++) {
        int32_t d = src->domain[r];
        if (d == domain)
            continue;
        d -= d > domain;
        if (F)
            memcpy(ds->ids + k * F, src->ids + r * F, sizeof(int32_t) * (size_t)F);
        if (df >= 0)
            ds->ids[k * F + df] = d;
        if (nd)
            memcpy(ds->dense + k * nd, src->dense + r * nd, sizeof(float) * (size_t)nd);
        ds->domain[k] = d;
        ds->labels[k] = src->labels[r];
        k++;
    }
    ds->n_rows = k;
    mml__dataset_count_domains(ds);
    *out = ds;
    return MML_OK;
}

/* ------------------------------------------------------------ the file section */

int mml__model_has_domains_section(const mml_model *m)
{
    return m->owner != NULL || (m->gate && mml__gate_mask(m->gate) != NULL);
}

void mml__model_write_domains(mml__wbuf *w, const mml_model *m)
{
    const uint8_t *mask = m->gate ? mml__gate_mask(m->gate) : NULL;
    mml__wbuf_u32(w, 1); /* payload version */
    mml__wbuf_i32(w, m->D);
    mml__wbuf_i32(w, m->E);
    mml__wbuf_u32(w, mask ? 1u : 0u);
    for (int32_t e = 0; e < m->E; e++)
        mml__wbuf_i32(w, mml__model_expert_owner(m, e));
    for (size_t i = 0; mask && i < (size_t)m->D * (size_t)m->E; i++)
        mml__wbuf_u8(w, mask[i]);
}

int mml__model_read_domains(mml_model *m, mml__rbuf *r)
{
    mml_ctx *ctx = m->ctx;
    uint32_t version = mml__rbuf_u32(r, "version");
    int32_t D = mml__rbuf_i32(r, "domains"), E = mml__rbuf_i32(r, "experts");
    uint32_t has_mask = mml__rbuf_u32(r, "mask flag");
    if (mml__rbuf_status(r) < 0)
        return mml__rbuf_status(r);
    if (version != 1)
        return mml__rbuf_fail(r, MML_ECORRUPT, "version %u, this release reads 1", version);
    if (D != m->D || E != m->E || has_mask > 1 || (has_mask && !m->gate))
        return mml__rbuf_fail(r, MML_ECORRUPT, "%d domains, %d experts, mask flag %u for a model "
                              "of %d domains, %d experts%s", D, E, has_mask, m->D, m->E,
                              m->gate ? "" : " without a gate");
    size_t cells = has_mask ? (size_t)D * (size_t)E : 0;
    if (mml__rbuf_left(r) != (size_t)E * 4 + cells)
        return mml__rbuf_fail(r, MML_ECORRUPT, "%zu bytes, expected %zu", mml__rbuf_left(r),
                              (size_t)E * 4 + cells);
    int32_t *owner = mml__alloc(ctx, sizeof(int32_t) * (size_t)(E > 0 ? E : 1));
    if (!owner)
        return mml__error(ctx, MML_ENOMEM, "model load: out of memory");
    int rc = MML_OK;
    for (int32_t e = 0; e < E && rc >= 0; e++) {
        owner[e] = mml__rbuf_i32(r, "owner");
        if (owner[e] < 0 || owner[e] >= D)
            rc = mml__rbuf_fail(r, MML_ECORRUPT, "expert %d owned by domain %d", e, owner[e]);
    }
    const uint8_t *mask = cells && rc >= 0 ? mml__rbuf_bytes(r, cells, "mask") : NULL;
    for (size_t i = 0; mask && i < cells && rc >= 0; i++)
        if (mask[i] > 1)
            rc = mml__rbuf_fail(r, MML_ECORRUPT, "mask byte %zu is %u", i, mask[i]);
    for (int32_t e = 0; mask && e < E && rc >= 0; e++)
        if (!mask[(size_t)owner[e] * (size_t)E + (size_t)e])
            rc = mml__rbuf_fail(r, MML_ECORRUPT, "expert %d is masked for its own domain %d", e,
                                owner[e]);
    if (rc >= 0 && mask && (rc = mml__gate_set_mask(m->gate, mask)) < 0)
        rc = rc == MML_ENOMEM ? rc : mml__rbuf_fail(r, MML_ECORRUPT, "%s", mml_ctx_last_error(ctx));
    if (rc < 0) {
        mml__free(ctx, owner, sizeof(int32_t) * (size_t)(E > 0 ? E : 1));
        return rc;
    }
    mml__free(ctx, m->owner, sizeof(int32_t) * (size_t)m->E);
    if (E > 0) {
        m->owner = owner;
    } else {
        mml__free(ctx, owner, sizeof(int32_t));
        m->owner = NULL;
    }
    return MML_OK;
}
