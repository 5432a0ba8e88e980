#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backbones/backbones.h"
#include "backbones/backbone_io.h"
#include "core/bytes.h"
#include "nn/layers.h"

#define TYPE_NAME_MAX 32

struct mml__backbone_entry {
    mml_backbone_vtable vt; /* the caller's table, callbacks it lacked set to NULL */
    void *user;
    char name[TYPE_NAME_MAX];
};

struct mml_backbone {
    mml_ctx *ctx;
    mml_backbone_vtable vt;
    void *user;
    void *self;
    int builtin;
    char name[TYPE_NAME_MAX];
    int32_t n_words; /* a built-in's options, for the model file */
    int32_t words[MML__BACKBONE_MAX_WORDS];
};

static const mml_backbone_vtable *const builtins[] = {
    &mml__backbone_mlp,
    &mml__backbone_wdl,
    &mml__backbone_deepfm,
    &mml__backbone_nfm,
    &mml__backbone_pnn,
    &mml__backbone_dcn,
    &mml__backbone_autoint,
    &mml__backbone_xdeepfm,
    &mml__backbone_fibinet,
};
#define N_BUILTINS ((int32_t)(sizeof builtins / sizeof builtins[0]))

int mml_backbone_config_init_sized(mml_backbone_config *out, uint32_t struct_size)
{
    mml_backbone_config full, *cfg = &full;
    static const int32_t hidden[3] = {256, 128, 64};
    memset(cfg, 0, sizeof *cfg);
    cfg->embed_dim = 8;
    cfg->n_domains = 1;
    cfg->alpha = 16;
    cfg->n_hidden = 3;
    cfg->hidden = hidden;
    cfg->dropout = 0.5f;
    return mml__init_versioned(out, cfg, sizeof *cfg, struct_size, MML__OLDER_SIZES_mml_backbone_config);
}

const char *mml_backbone_builtin_name(int32_t index)
{
    return index >= 0 && index < N_BUILTINS ? builtins[index]->type_name : NULL;
}

/* The backbones a user registered on one context, attached to it. */
typedef struct registry {
    struct mml__backbone_entry *entries;
    int32_t n, cap;
} registry;

static const char registry_key = 0;

static void registry_release(mml_ctx *ctx, void *data)
{
    registry *r = data;
    mml__free(ctx, r->entries, sizeof *r->entries * (size_t)r->cap);
    mml__free(ctx, r, sizeof *r);
}

static const mml_backbone_vtable *find(const mml_ctx *ctx, const char *name, int *builtin,
                                       void **user)
{
    *user = NULL;
    const registry *reg = mml__ctx_attached(ctx, &registry_key);
    for (int32_t i = 0; i < N_BUILTINS; i++)
        if (strcmp(builtins[i]->type_name, name) == 0) {
            *builtin = 1;
            return builtins[i];
        }
    for (int32_t i = 0; reg && i < reg->n; i++)
        if (strcmp(reg->entries[i].name, name) == 0) {
            *builtin = 0;
            *user = reg->entries[i].user;
            return &reg->entries[i].vt;
        }
    return NULL;
}

int mml_backbone_known(const mml_ctx *ctx, const char *type_name)
{
    int builtin;
    void *user;
    return type_name && find(ctx, type_name, &builtin, &user) != NULL;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= TYPE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

int mml_backbone_register(mml_ctx *ctx, const mml_backbone_vtable *table, void *user)
{
    if (!ctx || !table)
        return mml__error(ctx, MML_EINVAL, "backbone_register: NULL argument");
    if (table->abi_version != MML_BACKBONE_ABI_VERSION)
        return mml__error(ctx, MML_EVERSION,
                          "backbone_register: table version %u not supported; this library "
                          "takes version %u",
                          table->abi_version, MML_BACKBONE_ABI_VERSION);
    int rc = mml__check_size(ctx, table->struct_size, sizeof *table,
                             MML__OLDER_SIZES_mml_backbone_vtable, "mml_backbone_vtable");
    if (rc < 0)
        return rc;
    /* A table from an older release ends early: its later callbacks are absent. */
    mml_backbone_vtable copy;
    memset(&copy, 0, sizeof copy);
    memcpy(&copy, table, table->struct_size);
    copy.struct_size = (uint32_t)sizeof copy;
    const mml_backbone_vtable *vt = &copy;
    if (!vt->type_name || !valid_name(vt->type_name))
        return mml__error(ctx, MML_EINVAL, "backbone_register: type name must be [a-z0-9_]{1,31}");
    if (!vt->create || !vt->destroy || !vt->forward || !vt->backward || !vt->n_params || !vt->param)
        return mml__error(ctx, MML_EINVAL,
                          "backbone '%s': create, destroy, forward, backward, n_params and param "
                          "callbacks are required", vt->type_name);
    if (mml_backbone_known(ctx, vt->type_name))
        return mml__error(ctx, MML_EEXIST, "backbone '%s' is already registered", vt->type_name);
    registry *reg = mml__ctx_attached(ctx, &registry_key);
    if (!reg) {
        reg = mml__calloc(ctx, 1, sizeof *reg);
        if (!reg)
            return mml__error(ctx, MML_ENOMEM, "backbone_register: out of memory");
        rc = mml__ctx_attach(ctx, &registry_key, reg, registry_release);
        if (rc < 0) {
            mml__free(ctx, reg, sizeof *reg);
            return mml__error(ctx, rc, "backbone_register: the context has no free slot");
        }
    }
    if (reg->n == reg->cap) {
        int32_t cap = reg->cap ? 2 * reg->cap : 4;
        struct mml__backbone_entry *e = mml__alloc(ctx, sizeof *e * (size_t)cap);
        if (!e)
            return mml__error(ctx, MML_ENOMEM, "backbone_register: out of memory");
        if (reg->n)
            memcpy(e, reg->entries, sizeof *e * (size_t)reg->n);
        /* Each entry's type_name points at its own name: re-point the moved ones. */
        for (int32_t i = 0; i < reg->n; i++)
            e[i].vt.type_name = e[i].name;
        mml__free(ctx, reg->entries, sizeof *e * (size_t)reg->cap);
        reg->entries = e;
        reg->cap = cap;
    }
    struct mml__backbone_entry *e = &reg->entries[reg->n++];
    e->vt = *vt;
    e->user = user;
    strcpy(e->name, vt->type_name);
    e->vt.type_name = e->name;
    return MML_OK;
}


/* A user's callback failed: keep its code visible, report MML_ECALLBACK. */
/* A user callback's code as a library result: the message names the
 * backbone and the callback and keeps what the plug-in said with
 * mml_ctx_set_error (the buffer is cleared before each call, USER_CALL). */
static int callback_result(mml_backbone *bb, int rc, const char *what)
{
    if (rc == 0 || bb->builtin)
        return rc;
    char said[MML_ERRMSG_MAX];
    snprintf(said, sizeof said, "%s", bb->ctx->last_error);
    if (rc > 0)
        return mml__error(bb->ctx, MML_ECALLBACK,
                          "backbone '%s': %s callback returned %d, not 0 or a negative code%s%s",
                          bb->name, what, rc, said[0] ? ": " : "", said);
    return mml__error(bb->ctx, MML_ECALLBACK, "backbone '%s': %s callback returned %d (%s)%s%s",
                      bb->name, what, rc, mml_status_str(rc), said[0] ? ": " : "", said);
}
#define USER_CALL(bb, call, what) (bb->ctx->last_error[0] = '\0', callback_result(bb, (call), what))

/* The model, optimisers and checkpoints index a backbone's parameters without
 * further checks: a user's table must enumerate real ones. */
static int check_user_params(mml_backbone *bb)
{
    int64_t n = bb->vt.n_params(bb->self);
    if (n < 0 || n > (1 << 20))
        return mml__error(bb->ctx, MML_ECALLBACK, "backbone '%s': n_params callback returned %lld",
                          bb->name, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        const mml_param *p = bb->vt.param(bb->self, i);
        if (!p || !p->name || !p->value || !p->grad || p->rows < 1 || p->cols < 1)
            return mml__error(bb->ctx, MML_ECALLBACK,
                              "backbone '%s': param callback gave %s for parameter %lld of %lld",
                              bb->name, p ? "no name, value or grad, or an empty shape" : "NULL",
                              (long long)i, (long long)n);
    }
    return MML_OK;
}

int mml_backbone_create(mml_backbone **out, mml_ctx *ctx, const char *type_name,
                        const mml_backbone_config *cfg)
{
    if (!out || !ctx || !type_name || !cfg)
        return mml__error(ctx, MML_EINVAL, "backbone_create: NULL argument");
    *out = NULL;
    int builtin = 0;
    void *user = NULL;
    const mml_backbone_vtable *vt = find(ctx, type_name, &builtin, &user);
    if (!vt)
        return mml__error(ctx, MML_ENOTFOUND, "backbone '%s' is not built in or registered",
                          type_name);
    mml_backbone_config c;
    int rc = MML__COPY_OPTIONS(ctx, &c, cfg, mml_backbone_config, "backbone config");
    if (rc < 0)
        return rc;
    rc = mml__check_backbone_config(ctx, &c, type_name);
    if (rc < 0)
        return rc;
    mml_backbone *bb = mml__calloc(ctx, 1, sizeof *bb);
    if (!bb)
        return mml__error(ctx, MML_ENOMEM, "backbone '%s': out of memory", type_name);
    bb->ctx = ctx;
    bb->vt = *vt;
    bb->user = user;
    bb->builtin = builtin;
    strcpy(bb->name, vt->type_name);
    bb->vt.type_name = bb->name; /* the registry's copy may move when it grows */
    if (builtin && (rc = mml__backbone_options_encode(ctx, bb->name, c.options, bb->words,
                                                      &bb->n_words)) < 0) {
        mml__free(ctx, bb, sizeof *bb);
        return rc;
    }
    if (vt->infer_shape) {
        int64_t n_values = 0;
        rc = USER_CALL(bb, vt->infer_shape(user, ctx, &c, &n_values), "infer_shape");
        if (rc < 0) {
            mml__free(ctx, bb, sizeof *bb);
            return rc;
        }
    }
    rc = USER_CALL(bb, vt->create(user, ctx, &c, &bb->self), "create");
    if (rc < 0) {
        mml__free(ctx, bb, sizeof *bb);
        return rc;
    }
    if (!builtin && (rc = check_user_params(bb)) < 0) {
        mml_backbone_destroy(bb);
        return rc;
    }
    *out = bb;
    return MML_OK;
}

void mml_backbone_destroy(mml_backbone *bb)
{
    if (!bb)
        return;
    if (bb->self)
        bb->vt.destroy(bb->self);
    mml__free(bb->ctx, bb, sizeof *bb);
}

int mml_backbone_forward(mml_backbone *bb, const mml_backbone_input *in, float *logit)
{
    if (!bb)
        return MML_EINVAL;
    if (!in || !logit || !in->emb || !in->mix)
        return mml__error(bb->ctx, MML_EINVAL, "backbone_forward: NULL argument");
    int vrc = MML__CHECK_SIZE(bb->ctx, in, mml_backbone_input, "backbone_forward: input");
    if (vrc == MML_OK)
        vrc = MML__CHECK_SIZE(bb->ctx, in->mix, mml_mix, "backbone_forward: mix");
    if (vrc < 0)
        return vrc;
    if (in->n_rows < 1)
        return mml__error(bb->ctx, MML_ESHAPE, "backbone_forward: batch of %lld rows",
                          (long long)in->n_rows);
    int rc = USER_CALL(bb, bb->vt.forward(bb->self, in, logit), "forward");
    if (rc < 0)
        return rc;
    for (int64_t i = 0; i < in->n_rows; i++)
        if (!isfinite(logit[i]))
            return mml__error(bb->ctx, MML_ENONFINITE, "backbone '%s': logit of row %lld is not finite",
                              bb->name, (long long)i);
    return MML_OK;
}

int mml_backbone_backward(mml_backbone *bb, const float *dlogit, const mml_backbone_grads *grads)
{
    if (!bb)
        return MML_EINVAL;
    if (!dlogit || !grads)
        return mml__error(bb->ctx, MML_EINVAL, "backbone_backward: NULL argument");
    int rc = MML__CHECK_SIZE(bb->ctx, grads, mml_backbone_grads, "backbone_backward: grads");
    if (rc < 0)
        return rc;
    return USER_CALL(bb, bb->vt.backward(bb->self, dlogit, grads), "backward");
}

int64_t mml_backbone_n_params(mml_backbone *bb) { return bb ? bb->vt.n_params(bb->self) : 0; }
mml_param *mml_backbone_param(mml_backbone *bb, int64_t index)
{
    /* A user's param callback is only ever asked for an index in range. */
    if (!bb || index < 0 || index >= bb->vt.n_params(bb->self))
        return NULL;
    return bb->vt.param(bb->self, index);
}
mml_lora *mml_backbone_experts(mml_backbone *bb)
{
    return bb && bb->vt.experts ? bb->vt.experts(bb->self) : NULL;
}
int32_t mml_backbone_linear_term(const mml_backbone *bb) { return bb ? bb->vt.linear_term != 0 : 0; }
const char *mml_backbone_type_name(const mml_backbone *bb) { return bb ? bb->name : NULL; }
uint64_t mml_backbone_kink_pattern(mml_backbone *bb)
{
    return bb && bb->vt.kink_pattern ? bb->vt.kink_pattern(bb->self) : 0;
}
mml_rng *mml__backbone_dropout_rng(mml_backbone *bb)
{
    /* Every built-in's self is (or starts with) an mml__deep. */
    return bb && bb->builtin ? mml__tower_dropout_rng(((mml__deep *)bb->self)->tower) : NULL;
}

int mml_backbone_set_dropout_replay(mml_backbone *bb, int32_t replay)
{
    if (!bb)
        return MML_EINVAL;
    if (!bb->vt.set_dropout_replay)
        return MML_OK;
    return USER_CALL(bb, bb->vt.set_dropout_replay(bb->self, replay), "set_dropout_replay");
}

/* ---- the checks every configuration passes, built-in or registered ---- */

int mml__check_backbone_config(mml_ctx *ctx, const mml_backbone_config *c, const char *name)
{
    if (c->n_fields < 1 || c->n_fields > 4096 || c->embed_dim < 1 || c->embed_dim > 4096 ||
        c->n_dense < 0 || c->n_dense > 65536 || c->n_domains < 1 || c->n_experts < 0 ||
        c->n_experts > 4096 || c->alpha < 1)
        return mml__error(ctx, MML_EINVAL,
                          "backbone '%s': invalid shape (fields %d, dim %d, numeric %d, domains %d, "
                          "experts %d, alpha %d)",
                          name, c->n_fields, c->embed_dim, c->n_dense, c->n_domains, c->n_experts,
                          c->alpha);
    if (c->n_hidden < 1 || c->n_hidden > 64 || !c->hidden)
        return mml__error(ctx, MML_EINVAL, "backbone '%s': the tower needs 1..64 hidden layers", name);
    for (int32_t i = 0; i < c->n_hidden; i++)
        if (c->hidden[i] < 1 || c->hidden[i] > (1 << 20))
            return mml__error(ctx, MML_EINVAL, "backbone '%s': hidden width %d at layer %d", name,
                              c->hidden[i], i);
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return mml__error(ctx, MML_EINVAL, "backbone '%s': dropout %g outside [0, 1)", name,
                          (double)c->dropout);
    return MML_OK;
}

int mml__backbone_is_builtin(const mml_backbone *bb) { return bb->builtin; }

const int32_t *mml__backbone_option_words(const mml_backbone *bb, int32_t *n)
{
    *n = bb->n_words;
    return bb->words;
}

int mml__backbone_save_state(mml_backbone *bb, mml_write_fn write, void *user)
{
    if (bb->builtin || !bb->vt.save)
        return MML_OK;
    return USER_CALL(bb, bb->vt.save(bb->self, write, user), "save");
}

int mml__backbone_load_state(mml_backbone *bb, mml_read_fn read, void *user)
{
    if (bb->builtin || !bb->vt.load)
        return MML_OK;
    return USER_CALL(bb, bb->vt.load(bb->self, read, user), "load");
}

int mml__backbone_has_load(const mml_backbone *bb) { return !bb->builtin && bb->vt.load != NULL; }

/* ---- read-only models and sessions ---- */

void mml__backbone_make_readonly(mml_backbone *bb)
{
    /* A user backbone keeps its buffers: its table has no way to drop them. */
    if (bb->builtin)
        mml__deep_make_readonly(bb->self);
}

static int wbuf_sink(void *user, const void *data, size_t size)
{
    mml__wbuf_bytes(user, data, size);
    return mml__wbuf_status(user);
}

static int rbuf_source(void *user, void *data, size_t size)
{
    const void *p = mml__rbuf_bytes(user, size, "backbone state");
    if (!p)
        return mml__rbuf_status(user);
    memcpy(data, p, size);
    return MML_OK;
}

int mml__backbone_train_replica(const mml_backbone *bb, mml_ctx *ctx, mml_backbone **out)
{
    *out = NULL;
    if (!bb->builtin)
        return MML_EUNSUPPORTED;
    mml_backbone *r = mml__alloc(ctx, sizeof *r);
    if (!r)
        return mml__error(ctx, MML_ENOMEM, "backbone '%s': out of memory for a training thread",
                          bb->name);
    *r = *bb;
    r->ctx = ctx;
    r->vt.type_name = r->name;
    int rc = mml__deep_train_replica(bb->self, ctx, &r->self);
    if (rc < 0) {
        mml__free(ctx, r, sizeof *r);
        return rc;
    }
    *out = r;
    return MML_OK;
}

int mml__backbone_replica(const mml_backbone *bb, mml_ctx *ctx, const mml_backbone_config *cfg,
                          mml_backbone **out)
{
    *out = NULL;
    mml_backbone *r = mml__alloc(ctx, sizeof *r);
    if (!r)
        return mml__error(ctx, MML_ENOMEM, "backbone '%s': out of memory for a session", bb->name);
    *r = *bb;
    r->ctx = ctx;
    r->self = NULL;
    r->vt.type_name = r->name;
    int rc;
    if (bb->builtin) {
        rc = mml__deep_replica(bb->self, ctx, &r->self);
        if (rc < 0) {
            mml__free(ctx, r, sizeof *r);
            return rc;
        }
        *out = r;
        return MML_OK;
    }
    /* A user backbone's scratch cannot be told from its weights: a private
     * instance of the same configuration gets the shared one's values. */
    rc = USER_CALL(r, r->vt.create(r->user, ctx, cfg, &r->self), "create");
    if (rc < 0) {
        mml__free(ctx, r, sizeof *r);
        return rc;
    }
    if ((rc = check_user_params(r)) < 0) {
        mml_backbone_destroy(r);
        return rc;
    }
    int64_t n = bb->vt.n_params(bb->self);
    if (r->vt.n_params(r->self) != n) {
        mml_backbone_destroy(r);
        return mml__error(ctx, MML_ECALLBACK,
                          "backbone '%s': a new instance has %lld parameters, the model's %lld",
                          bb->name, (long long)mml_backbone_n_params(r), (long long)n);
    }
    for (int64_t i = 0; i < n; i++) {
        const mml_param *src = bb->vt.param(bb->self, i);
        mml_param *dst = r->vt.param(r->self, i);
        if (src->rows != dst->rows || src->cols != dst->cols) {
            rc = mml__error(ctx, MML_ECALLBACK,
                            "backbone '%s': parameter %lld is %lld x %lld in a new instance, "
                            "%lld x %lld in the model", bb->name, (long long)i,
                            (long long)dst->rows, (long long)dst->cols, (long long)src->rows,
                            (long long)src->cols);
            mml_backbone_destroy(r);
            return rc;
        }
        memcpy(dst->value, src->value, sizeof(float) * (size_t)(src->rows * src->cols));
    }
    /* State beyond the parameters goes across as the model file carries it;
     * the save callback runs on the shared instance but reports into the
     * session's context. */
    if (bb->vt.save && r->vt.load) {
        mml_backbone shared = *r;
        shared.self = bb->self;
        mml__wbuf w;
        mml__wbuf_init(&w, ctx);
        rc = mml__backbone_save_state(&shared, wbuf_sink, &w);
        if (rc >= 0 && (rc = mml__wbuf_status(&w)) >= 0) {
            mml__rbuf rd;
            mml__rbuf_init(&rd, ctx, w.data, w.len, 0, "backbone state");
            rc = mml__backbone_load_state(r, rbuf_source, &rd);
        }
        mml__wbuf_free(&w);
        if (rc < 0) {
            mml_backbone_destroy(r);
            return rc;
        }
    }
    *out = r;
    return MML_OK;
}
