/* The deep base of the built-in backbones: the DNN tower with its adapters,
 * the head logit = z . head.w[0, S) + h . head.w[S, S + d_last) (S =
 * head_side, z the side part's output, h the tower's), and the table
 * callbacks, which hand the rest to the backbone's mml__side. */
#include <string.h>

#include "backbones/backbones.h"
#include "nn/layers.h"

static int32_t tower_width(const mml__side *s, const mml_backbone_config *c)
{
    return s->width ? s->width(c) : c->n_fields * c->embed_dim + c->n_dense;
}

/* Parameter count of a tower of cfg's widths on d_in inputs, with its adapters. */
static int64_t tower_param_count(const mml_backbone_config *c, int32_t d_in)
{
    int64_t n = 0, prev = d_in;
    for (int32_t i = 0; i < c->n_hidden; i++) {
        int64_t w = c->hidden[i];
        n += prev * w + w;
        if (c->n_experts > 0) {
            int64_t r = mml_lora_rank_for((int32_t)prev, (int32_t)w, c->alpha);
            n += (int64_t)c->n_experts * (r * (prev + w) + w);
        }
        prev = w;
    }
    return n;
}

static int tower_create(mml__deep *d, const mml_backbone_config *c)
{
    mml_tower_options to;
    mml_tower_options_init(&to);
    to.d_in = d->width;
    to.n_layers = c->n_hidden;
    to.hidden = c->hidden;
    to.dropout = c->dropout;
    to.stream = c->stream;
    int rc = mml_tower_create(&d->tower, d->ctx, &to);
    if (rc < 0 || c->n_experts == 0)
        return rc;
    int32_t dims[65];
    dims[0] = d->width;
    for (int32_t i = 0; i < c->n_hidden; i++)
        dims[i + 1] = c->hidden[i];
    mml_lora_options lo;
    mml_lora_options_init(&lo);
    lo.n_layers = c->n_hidden;
    lo.dims = dims;
    lo.n_experts = c->n_experts;
    lo.alpha = c->alpha;
    lo.stream = c->stream;
    return mml_lora_create(&d->lora, d->ctx, &lo);
}

/* cfg->options over the side part's defaults, checked. */
static int side_options(const mml__side *s, mml_ctx *ctx, const char *name,
                        const mml_backbone_config *c, mml__opts *o)
{
    if (!s->defaults)
        return MML_OK;
    memcpy(o, s->defaults, s->opts_size);
    int rc = mml__copy_options(ctx, o, s->opts_size, c->options, s->opts_older, name);
    return rc < 0 || !s->check ? rc : s->check(ctx, c, o);
}

/* Invalid options report 0 values here; create, which always follows,
 * refuses them with a message. */
int mml__deep_infer_shape(const mml__side *s, const char *name, const mml_backbone_config *c,
                          int64_t *n_values)
{
    mml__opts o;
    *n_values = 0;
    if (side_options(s, NULL, name, c, &o) < 0)
        return MML_OK;
    *n_values = tower_param_count(c, tower_width(s, c)) + (s->n_values ? s->n_values(c, &o) : 0) +
                c->hidden[c->n_hidden - 1];
    return MML_OK;
}

void mml__deep_destroy(void *self)
{
    mml__deep *d = self;
    if (!d)
        return;
    mml_ctx *ctx = d->ctx;
    if (d->side->destroy)
        d->side->destroy(d);
    mml_tower_destroy(d->tower);
    if (!d->replica) {
        mml_lora_destroy(d->lora);
        for (int32_t i = 0; i < d->np; i++)
            mml__side_param_free(ctx, &d->p[i]);
    } else if (d->replica == 2) {
        mml_lora_destroy(d->lora);
        for (int32_t i = 0; i < d->np; i++)
            mml__free(ctx, d->p[i].grad, sizeof(float) * (size_t)(d->p[i].rows * d->p[i].cols));
    }
    float *const bufs[] = {d->x, d->dh, d->dx};
    const size_t caps[] = {d->cap_x, d->cap_dh, d->cap_dx};
    mml__free_floats(ctx, bufs, caps, 3);
    mml__free(ctx, d, d->side->size);
}

int mml__deep_create(const mml__side *s, const char *name, mml_ctx *ctx,
                     const mml_backbone_config *c, void **self)
{
    mml__opts o;
    int rc = side_options(s, ctx, name, c, &o);
    if (rc < 0)
        return rc;
    mml__deep *d = mml__calloc(ctx, 1, s->size);
    if (!d)
        return mml__error(ctx, MML_ENOMEM, "%s: out of memory", name);
    d->ctx = ctx;
    d->side = s;
    d->name = name;
    d->F = c->n_fields;
    d->k = c->embed_dim;
    d->n_dense = c->n_dense;
    d->width = tower_width(s, c);
    rc = tower_create(d, c);
    if (rc >= 0 && s->create)
        rc = s->create(d, c, &o);
    if (rc >= 0) {
        int64_t rows = d->head_side + mml_tower_d_out(d->tower);
        rc = mml__deep_add_param(d, "head.w", rows, 1, rows, 1, c->stream);
    }
    if (rc < 0) {
        mml__deep_destroy(d);
        return rc;
    }
    *self = d;
    return MML_OK;
}

int mml__deep_add_param(mml__deep *d, const char *name, int64_t rows, int64_t cols,
                        int64_t fan_in, int64_t fan_out, uint64_t stream)
{
    char *copy = d->names[d->np];
    size_t len = strlen(name);
    if (len >= sizeof d->names[0])
        len = sizeof d->names[0] - 1;
    memcpy(copy, name, len);
    copy[len] = '\0';
    int rc = mml__side_param_init(d->ctx, &d->p[d->np], copy, rows, cols, fan_in, fan_out, stream);
    if (rc >= 0)
        d->np++;
    return rc;
}

int mml__deep_flat_input(mml__deep *d, const mml_backbone_input *in)
{
    int64_t n = in->n_rows;
    int32_t fk = d->F * d->k, w = d->width;
    int rc = mml__ensure_floats(d->ctx, &d->x, &d->cap_x, (size_t)(n * w));
    if (rc < 0)
        return rc;
    for (int64_t r = 0; r < n; r++) {
        memcpy(d->x + r * w, in->emb + r * fk, sizeof(float) * (size_t)fk);
        if (d->n_dense)
            memcpy(d->x + r * w + fk, in->dense + r * d->n_dense,
                   sizeof(float) * (size_t)d->n_dense);
    }
    return MML_OK;
}

int mml__deep_tower_forward(mml__deep *d, const mml_backbone_input *in)
{
    return mml_tower_forward(d->tower, d->x, in->n_rows, d->lora, in->mix, in->training, &d->h);
}

int mml__deep_forward(void *self, const mml_backbone_input *in, float *logit)
{
    mml__deep *d = self;
    const mml__side *s = d->side;
    int64_t n = in->n_rows;
    d->n = 0;
    if (d->n_dense && !in->dense)
        return mml__error(d->ctx, MML_EINVAL, "%s: numeric values missing", d->name);
    int rc = s->forward ? s->forward(d, in) : mml__deep_flat_input(d, in);
    if (rc >= 0 && !s->forward)
        rc = mml__deep_tower_forward(d, in);
    if (rc < 0) {
        d->n = 0;
        return rc;
    }
    d->n = n;
    int32_t S = d->head_side, dout = mml_tower_d_out(d->tower);
    const float *hw = d->p[d->np - 1].value;
    for (int64_t r = 0; r < n; r++) {
        const float *h = d->h + r * dout;
        float v = 0.0f;
        for (int32_t j = 0; j < S; j++)
            v += d->z[r * S + j] * hw[j];
        for (int32_t j = 0; j < dout; j++)
            v += h[j] * hw[S + j];
        logit[r] = v;
    }
    if (s->logit)
        s->logit(d, logit);
    return MML_OK;
}

void mml__deep_input_grad(const mml__deep *d, const mml_backbone_grads *g, const float *dx,
                          int emb)
{
    if (!dx)
        return;
    int32_t fk = d->F * d->k, w = d->width, nd = d->n_dense;
    for (int64_t r = 0; r < d->n; r++) {
        const float *x = dx + r * w;
        if (emb && g->d_emb)
            for (int32_t i = 0; i < fk; i++)
                g->d_emb[r * fk + i] += x[i];
        if (g->d_dense)
            for (int32_t i = 0; i < nd; i++)
                g->d_dense[r * nd + i] += x[w - nd + i];
    }
}

int mml__deep_backward(void *self, const float *dlogit, const mml_backbone_grads *g)
{
    mml__deep *d = self;
    const mml__side *s = d->side;
    int64_t n = d->n;
    if (d->readonly || d->replica == 1)
        return mml__error(d->ctx, MML_ESTATE, "%s: backward on a read-only model", d->name);
    if (n < 1)
        return mml__error(d->ctx, MML_ESTATE, "%s: backward without a forward pass", d->name);
    mml_param *head = &d->p[d->np - 1];
    int32_t S = d->head_side, dout = mml_tower_d_out(d->tower), w = d->width;
    int rc = mml__ensure_floats(d->ctx, &d->dh, &d->cap_dh, (size_t)(n * dout));
    if (rc < 0)
        return rc;
    for (int64_t r = 0; r < n; r++)
        for (int32_t j = 0; j < dout; j++)
            d->dh[r * dout + j] = dlogit[r] * head->value[S + j];
    if (!head->frozen)
        for (int64_t r = 0; r < n; r++) {
            for (int32_t j = 0; j < S; j++)
                head->grad[j] += d->z[r * S + j] * dlogit[r];
            for (int32_t j = 0; j < dout; j++)
                head->grad[S + j] += d->h[r * dout + j] * dlogit[r];
        }
    int need_dx = g->d_emb || (g->d_dense && d->n_dense) ||
                  (s->feeds_tower && mml__any_unfrozen(d->p, d->np - 1));
    if (need_dx) {
        if ((rc = mml__ensure_floats(d->ctx, &d->dx, &d->cap_dx, (size_t)(n * w))) < 0)
            return rc;
        memset(d->dx, 0, sizeof(float) * (size_t)(n * w));
    }
    float *dx = need_dx ? d->dx : NULL;
    rc = mml_tower_backward(d->tower, d->dh, dx, d->lora, g->d_weights);
    if (rc < 0)
        return rc;
    if (s->backward)
        return s->backward(d, dlogit, g, dx);
    mml__deep_input_grad(d, g, dx, 1);
    return MML_OK;
}

int64_t mml__deep_n_params(void *self)
{
    mml__deep *d = self;
    return mml_tower_n_params(d->tower) + mml_lora_n_params(d->lora) + d->np;
}

mml_param *mml__deep_param(void *self, int64_t i)
{
    mml__deep *d = self;
    int64_t nt = mml_tower_n_params(d->tower), nd = nt + mml_lora_n_params(d->lora);
    if (i < 0 || i >= nd + d->np)
        return NULL;
    if (i < nt)
        return mml_tower_param(d->tower, i);
    return i < nd ? mml_lora_param(d->lora, i - nt) : &d->p[i - nd];
}

mml_lora *mml__deep_experts(void *self) { return ((mml__deep *)self)->lora; }

uint64_t mml__deep_kink_pattern(void *self)
{
    const mml__deep *d = self;
    uint64_t h = mml_tower_relu_pattern(d->tower);
    return d->side->pattern && d->n >= 1 ? d->side->pattern(d, h) : h;
}

int mml__deep_set_dropout_replay(void *self, int32_t replay)
{
    return mml_tower_set_dropout_replay(((mml__deep *)self)->tower, replay);
}

void mml__deep_make_readonly(void *self)
{
    mml__deep *d = self;
    mml__tower_drop_grads(d->tower);
    if (d->lora)
        mml__lora_drop_grads(d->lora);
    for (int32_t i = 0; i < d->np; i++) {
        mml_param *p = &d->p[i];
        mml__free(d->ctx, p->grad, sizeof(float) * (size_t)(p->rows * p->cols));
        p->grad = NULL;
    }
    float *const bufs[] = {d->dh, d->dx};
    const size_t caps[] = {d->cap_dh, d->cap_dx};
    mml__free_floats(d->ctx, bufs, caps, 2);
    d->dh = d->dx = NULL;
    d->cap_dh = d->cap_dx = 0;
    d->readonly = 1;
}

int mml__deep_replica(const void *self, mml_ctx *ctx, void **out)
{
    const mml__deep *d = self;
    const mml__side *s = d->side;
    *out = NULL;
    mml__deep *r = mml__alloc(ctx, s->size);
    if (!r)
        return mml__error(ctx, MML_ENOMEM, "%s: out of memory for a session", d->name);
    memcpy(r, d, s->size);
    if (s->scratch)
        memset((char *)r + s->scratch, 0, s->size - s->scratch);
    r->ctx = ctx;
    r->replica = 1;
    r->tower = NULL;
    r->x = r->dh = r->dx = NULL;
    r->cap_x = r->cap_dh = r->cap_dx = 0;
    r->h = r->z = NULL;
    r->n = 0;
    int rc = mml__tower_replica(d->tower, ctx, &r->tower);
    if (rc < 0) {
        mml__deep_destroy(r);
        return rc;
    }
    *out = r;
    return MML_OK;
}

int mml__deep_train_replica(const void *self, mml_ctx *ctx, void **out)
{
    const mml__deep *d = self;
    *out = NULL;
    if (d->readonly)
        return mml__error(ctx, MML_ESTATE, "%s: the model is read-only", d->name);
    int rc = mml__deep_replica(self, ctx, out);
    if (rc < 0)
        return rc;
    mml__deep *r = *out;
    /* From here on destroy frees what the copy owns, and only that. */
    r->replica = 2;
    r->lora = NULL;
    for (int32_t i = 0; i < r->np; i++)
        r->p[i].grad = NULL;
    mml_tower *tw = NULL;
    rc = mml__tower_train_replica(d->tower, ctx, &tw);
    if (rc >= 0) {
        mml_tower_destroy(r->tower);
        r->tower = tw;
    }
    if (rc >= 0 && d->lora)
        rc = mml__lora_train_replica(d->lora, ctx, &r->lora);
    for (int32_t i = 0; rc >= 0 && i < r->np; i++)
        if (!(r->p[i].grad = mml__calloc(ctx, (size_t)(r->p[i].rows * r->p[i].cols), sizeof(float))))
            rc = mml__error(ctx, MML_ENOMEM, "%s: out of memory for a training thread", d->name);
    if (rc < 0) {
        mml__deep_destroy(r);
        *out = NULL;
        return rc;
    }
    return MML_OK;
}
