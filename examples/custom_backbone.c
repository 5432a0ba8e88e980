/* custom_backbone: a backbone of your own, registered, checked with the public
 * gradient checker and trained for a few Adam steps (see docs/BACKBONES.md).
 * It is a tiny factorisation machine over a row's field embeddings e_1..e_F:
 *     logit = sum_{i<j} <e_i, e_j> + w . [e_1, ..., e_F]   (the model adds the bias)
 * No arguments; exits 0 when the gradient check passes and the loss goes down. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moemlora/moemlora.h>
#include <moemlora/testing.h> /* mml_model_kink_pattern, for the gradient check */

typedef struct fm {
    mml_ctx *ctx;   /* all memory comes from the context's allocator */
    int32_t F, k;
    mml_param w;    /* F*k x 1, the one parameter; its value and grad follow the struct */
    float *emb;     /* the last forward's input, kept for backward */
    int64_t n_rows, emb_cap;
    size_t bytes;
} fm;

static float lcg(uint32_t *s) /* uniform in [0, 1) */
{
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f;
}

static void fm_destroy(void *self)
{
    fm *b = self;
    mml_ctx_free(b->ctx, b->emb, sizeof(float) * (size_t)b->emb_cap);
    mml_ctx_free(b->ctx, b, b->bytes);
}

static int fm_create(void *user, mml_ctx *ctx, const mml_backbone_config *cfg, void **self)
{
    (void)user; /* the pointer given to mml_backbone_register: unused here */
    if (cfg->n_dense != 0)
        return mml_ctx_set_error(ctx, MML_EUNSUPPORTED, "tiny_fm reads embeddings only");
    int64_t fk = (int64_t)cfg->n_fields * cfg->embed_dim;
    size_t bytes = sizeof(fm) + 2 * (size_t)fk * sizeof(float);
    fm *b = mml_ctx_alloc(ctx, bytes);
    if (!b) /* a failing create leaves nothing behind */
        return mml_ctx_set_error(ctx, MML_ENOMEM, "tiny_fm: out of memory");
    memset(b, 0, bytes);
    b->ctx = ctx;
    b->bytes = bytes;
    b->F = cfg->n_fields;
    b->k = cfg->embed_dim;
    float *values = (float *)(b + 1);
    b->w = (mml_param){.name = "fm.w", .value = values, .grad = values + fk, .rows = fk,
                       .cols = 1, .group = MML_GROUP_BACKBONE, .expert = -1};
    uint32_t s = (uint32_t)(mml_ctx_seed(ctx) + cfg->stream); /* seeded: reproducible */
    for (int64_t i = 0; i < fk; i++)
        b->w.value[i] = 0.1f * (lcg(&s) - 0.5f);
    *self = b;
    return MML_OK;
}

static int fm_forward(void *self, const mml_backbone_input *in, float *logit)
{
    fm *b = self;
    int32_t F = b->F, k = b->k, fk = F * k;
    if (in->n_rows * fk > b->emb_cap) { /* grow the kept input */
        mml_ctx_free(b->ctx, b->emb, sizeof(float) * (size_t)b->emb_cap);
        b->emb_cap = 0;
        b->emb = mml_ctx_alloc(b->ctx, sizeof(float) * (size_t)(in->n_rows * fk));
        if (!b->emb)
            return mml_ctx_set_error(b->ctx, MML_ENOMEM, "tiny_fm: out of memory");
        b->emb_cap = in->n_rows * fk;
    }
    float *e = b->emb;
    memcpy(e, in->emb, sizeof(float) * (size_t)(in->n_rows * fk));
    b->n_rows = in->n_rows;
    for (int64_t r = 0; r < in->n_rows; r++, e += fk) {
        double s = 0.0;
        for (int32_t i = 0; i < fk; i++)
            s += (double)b->w.value[i] * e[i];
        for (int32_t f = 0; f < F; f++)
            for (int32_t g = f + 1; g < F; g++)
                for (int32_t t = 0; t < k; t++)
                    s += (double)e[f * k + t] * e[g * k + t];
        logit[r] = (float)s; /* written, not accumulated */
    }
    return MML_OK;
}

/* Adds (+=) the gradients: d logit / d w = e, d logit / d e_f = w_f + sum_{g != f} e_g. */
static int fm_backward(void *self, const float *dlogit, const mml_backbone_grads *grads)
{
    fm *b = self;
    int32_t F = b->F, k = b->k, fk = F * k;
    for (int64_t r = 0; r < b->n_rows; r++) {
        const float *e = b->emb + r * fk;
        for (int32_t i = 0; i < fk; i++)
            b->w.grad[i] += dlogit[r] * e[i];
        for (int32_t t = 0; grads->d_emb && t < k; t++) { /* any buffer may be NULL */
            float sum = 0.0f;
            for (int32_t f = 0; f < F; f++)
                sum += e[f * k + t];
            for (int32_t f = 0; f < F; f++)
                grads->d_emb[r * fk + f * k + t] +=
                    dlogit[r] * (b->w.value[f * k + t] + sum - e[f * k + t]);
        }
    }
    return MML_OK;
}

static int64_t fm_n_params(void *self) { (void)self; return 1; }
/* Called with 0 <= i < n_params only. */
static mml_param *fm_param(void *self, int64_t i) { return i == 0 ? &((fm *)self)->w : NULL; }

static const mml_backbone_vtable fm_table = {
    .struct_size = sizeof(mml_backbone_vtable), .abi_version = MML_BACKBONE_ABI_VERSION,
    .type_name = "tiny_fm", .create = fm_create, .destroy = fm_destroy, .forward = fm_forward,
    .backward = fm_backward, .n_params = fm_n_params, .param = fm_param};

/* ---- checked and trained through the public model API ---- */
enum { ROWS = 512, FIELDS = 3 };
static struct {
    mml_ctx *ctx;
    mml_model *model;
    mml_batch_view batch;
    float logits[ROWS], dlogits[ROWS];
    double loss;
} run;

/* A training-mode forward pass and the batch's mean loss (and d loss / d logits). */
static int forward(double *loss, float *dlogits)
{
    int rc = mml_model_forward(run.model, &run.batch, MML_MIX_NONE, 0, 1, run.logits);
    return rc < 0 ? rc : mml_bce_with_logits(run.ctx, run.logits, run.batch.labels, NULL,
                                             run.batch.n_rows, loss, dlogits);
}
/* The checker's two callbacks: the loss alone, and the analytic gradient. */
static int loss_fn(void *user, double *loss, uint64_t *pattern)
{
    (void)user;
    int rc = forward(loss, NULL);
    *pattern = mml_model_kink_pattern(run.model); /* 0 here: an FM has no ReLU kinks */
    return rc;
}
static int grad_fn(void *params)
{
    mml_params_zero_grad(params, mml_model_n_params(run.model)); /* backward accumulates */
    int rc = forward(&run.loss, run.dlogits);
    return rc < 0 ? rc : mml_model_backward(run.model, run.dlogits);
}

/* On failure: say which call failed and why, and exit 1. */
#define CHECK(call)                                                                \
    do {                                                                           \
        if ((call) < 0) {                                                          \
            fprintf(stderr, "%s: %s\n", #call, mml_ctx_last_error(run.ctx));       \
            return 1;                                                              \
        }                                                                          \
    } while (0)

int main(void)
{
    static int32_t ids[ROWS * FIELDS], domain[ROWS];
    static float labels[ROWS];
    const int64_t sizes[FIELDS] = {50, 40, 2}; /* user, item, domain */
    uint32_t s = 12345;
    for (int i = 0; i < ROWS; i++) { /* a click when the user's taste matches the item's kind */
        int32_t u = (int32_t)(lcg(&s) * 50), it = (int32_t)(lcg(&s) * 40);
        ids[i * FIELDS] = u;
        ids[i * FIELDS + 1] = it;
        ids[i * FIELDS + 2] = domain[i] = u % 2;
        labels[i] = (float)(u % 3 == it % 3);
    }
    CHECK(mml_ctx_create(&run.ctx, NULL));
    CHECK(mml_backbone_register(run.ctx, &fm_table, NULL)); /* "tiny_fm" now names it */
    mml_model_options o;
    mml_model_options_init(&o);
    o.backbone = "tiny_fm"; /* the tower options (hidden, dropout, ...) go unused */
    o.n_fields = FIELDS;
    o.field_sizes = sizes;
    o.embed_dim = 4;
    o.embed_std = 0.1f;
    o.n_domains = 2;
    CHECK(mml_model_create(&run.model, run.ctx, &o));
    mml_param *params[16]; /* embeddings, bias, fm.w: what the checker and Adam work on */
    int64_t n_params = mml_model_n_params(run.model);
    for (int64_t i = 0; i < n_params; i++)
        params[i] = mml_model_param(run.model, i);

    /* 1. Every coordinate of every parameter against central differences, on 32 rows. */
    mml_batch_view_init(&run.batch, 32, FIELDS, ids, 0, NULL, domain, labels);
    mml_gradcheck_report rep;
    CHECK(mml_gradcheck(run.ctx, NULL, params, n_params, grad_fn, loss_fn, params, &rep));
    printf("gradient check: %lld coordinates agree\n", (long long)rep.checked);

    /* 2. Full-batch Adam steps on all rows: the loss must go down. */
    mml_batch_view_init(&run.batch, ROWS, FIELDS, ids, 0, NULL, domain, labels);
    mml_optimizer_options oo;
    mml_optimizer_options_init(&oo);
    oo.lr = 0.05f;
    mml_optimizer *opt = NULL;
    CHECK(mml_optimizer_create(&opt, run.ctx, &oo, params, n_params));
    double first = 0.0;
    for (int step = 0; step <= 40; step++) {
        CHECK(grad_fn(params));
        first = step == 0 ? run.loss : first;
        if (step % 10 == 0)
            printf("step %2d  loss %.4f\n", step, run.loss);
        CHECK(mml_optimizer_step(opt));
    }
    int ok = run.loss < 0.5 * first;
    printf("%s: loss %.4f -> %.4f\n", ok ? "ok" : "FAILED", first, run.loss);
    mml_optimizer_destroy(opt);
    mml_model_destroy(run.model);
    mml_ctx_destroy(run.ctx); /* also frees the registry */
    return ok ? 0 : 1;
}
