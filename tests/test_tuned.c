/* MoE-MLoRA beyond the paper (1.3): the gate's per-domain table and prior,
 * the gate over the rows' embeddings (gradients, stop-gradient, model file,
 * sessions), and the trainer options (what each one changes, what stays
 * frozen, stage 4, checkpoints, the moe-tuned preset). */
#include <math.h>
#include <unistd.h>

#include "internal.h"
#include "core/bytes.h"
#include "moemlora/session.h"
#include "train/trainer_internal.h"

#include "trainer_world.h"

/* ---- the model: the gate's 1.3 parameters ---- */

enum { F = 3, K = 4, D = 3 };
static const int64_t sizes[F] = {11, 7, D};
static const int32_t tiny_hidden[2] = {8, 6};

static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unif(uint64_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }
static int32_t below(uint64_t *s, int64_t n) { return (int32_t)(unif(s) * (double)n); }

typedef struct fixture {
    mml_ctx *ctx;
    mml_model *model;
    int64_t n;
    int32_t *ids, *domain;
    float *labels, *logits, *dlogits;
    mml_batch_view batch;
    int32_t mode, expert;
} fixture;

#include "model_check.h"

static mml_model *gate_model(mml_ctx *ctx, int32_t E, int domain_bias, float prior, int32_t input)
{
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = F;
    o.field_sizes = sizes;
    o.embed_dim = K;
    o.n_domains = D;
    o.n_experts = E;
    o.gate = 1;
    o.alpha = 2;
    o.n_hidden = 2;
    o.hidden = tiny_hidden;
    o.gate_domain_bias = domain_bias;
    o.gate_prior = prior;
    o.gate_input = input;
    mml_model *m = NULL;
    int rc = mml_model_create(&m, ctx, &o);
    ck_assert_msg(rc == MML_OK, "model_create: %s", mml_ctx_last_error(ctx));
    return m;
}

static void make_batch(fixture *fx, int64_t n, uint64_t seed)
{
    uint64_t s = seed;
    fx->n = n;
    fx->ids = malloc(sizeof(int32_t) * (size_t)(n * F));
    fx->domain = malloc(sizeof(int32_t) * (size_t)n);
    fx->labels = malloc(sizeof(float) * (size_t)n);
    fx->logits = malloc(sizeof(float) * (size_t)n);
    fx->dlogits = malloc(sizeof(float) * (size_t)n);
    for (int64_t r = 0; r < n; r++) {
        fx->domain[r] = r < D ? (int32_t)r : below(&s, D);
        for (int32_t f = 0; f < F - 1; f++)
            fx->ids[r * F + f] = below(&s, sizes[f]);
        fx->ids[r * F + F - 1] = fx->domain[r];
        fx->labels[r] = (float)below(&s, 2);
    }
    mml_batch_view_init(&fx->batch, n, F, fx->ids, 0, NULL, fx->domain, fx->labels);
}

static void free_fixture(fixture *fx)
{
    mml_model_destroy(fx->model);
    mml_ctx_destroy(fx->ctx);
    free(fx->ids);
    free(fx->domain);
    free(fx->labels);
    free(fx->logits);
    free(fx->dlogits);
}

static void randomize_model(mml_model *m, uint64_t seed, float scale)
{
    uint64_t s = seed;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        for (int64_t j = 0; j < mml_param_size(p); j++)
            p->value[j] = (float)((2.0 * unif(&s) - 1.0) * scale);
    }
}

static mml_param *find_param(mml_model *m, const char *name)
{
    for (int64_t i = 0; i < mml_model_n_params(m); i++)
        if (strcmp(mml_model_param(m, i)->name, name) == 0)
            return mml_model_param(m, i);
    return NULL;
}

static int gradcheck(fixture *fx, mml_param **params, int64_t np, mml_gradcheck_report *rep)
{
    ck_assert_int_eq(mml_model_forward(fx->model, &fx->batch, fx->mode, 0, 1, fx->logits), MML_OK);
    ck_assert_int_eq(mml_model_set_dropout_replay(fx->model, 1), MML_OK);
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.step = 1e-3;
    o.rtol = 1e-2;
    o.atol = 2e-4;
    o.seed = 7;
    return mml_gradcheck(fx->ctx, &o, params, np, fx_grad, fx_loss, fx, rep);
}

START_TEST(gate_parameters_by_option)
{
    mml_ctx *ctx = plain_ctx(1, 3);
    mml_model *plain = gate_model(ctx, 2 * D, 0, 0.0f, 0);
    mml_model *table = gate_model(ctx, 2 * D, 1, 0.0f, 0);
    mml_model *rows = gate_model(ctx, 2 * D, 1, 0.0f, MML_GATE_INPUT_EMBEDDINGS);
    ck_assert_int_eq(mml_gate_n_params(mml_model_gate(plain)), 3);
    ck_assert_int_eq(mml_gate_n_params(mml_model_gate(table)), 4);
    ck_assert_int_eq(mml_gate_n_params(mml_model_gate(rows)), 5);
    ck_assert_int_eq(mml_model_n_params(table), mml_model_n_params(plain) + 1);
    mml_param *t = find_param(table, "gate.domain_bias"), *v = find_param(rows, "gate.V");
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(t->rows, D);
    ck_assert_int_eq(t->cols, 2 * D);
    ck_assert_int_eq(v->rows, F * K);
    ck_assert_int_eq(v->group, MML_GROUP_GATE);
    /* The defaults keep the paper's gate: same weights as a plain one. */
    float a[D * 2 * D], b[D * 2 * D];
    ck_assert_int_eq(mml_gate_table(mml_model_gate(plain), a), MML_OK);
    ck_assert_int_eq(mml_gate_table(mml_model_gate(table), b), MML_OK);
    ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
    /* A row-input gate is run by the model, not alone. */
    const float *w;
    int32_t dom[1] = {0};
    ck_assert_int_eq(mml_gate_forward(mml_model_gate(rows), dom, 1, &w), MML_ESTATE);
    mml_model_destroy(plain);
    mml_model_destroy(table);
    mml_model_destroy(rows);
    /* Bad options. */
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = F;
    o.field_sizes = sizes;
    o.n_domains = D;
    o.n_experts = D;
    o.gate = 1;
    mml_model *m = NULL;
    o.gate_input = 3;
    ck_assert_int_eq(mml_model_create(&m, ctx, &o), MML_EINVAL);
    o.gate_input = 1;
    o.gate_top_k = 1;
    ck_assert_int_eq(mml_model_create(&m, ctx, &o), MML_EINVAL);
    o.gate_top_k = 0;
    o.gate_prior = -1.0f;
    ck_assert_int_eq(mml_model_create(&m, ctx, &o), MML_EINVAL);
    ck_assert_ptr_null(m);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(prior_starts_on_the_own_experts)
{
    mml_ctx *ctx = plain_ctx(1, 3);
    int32_t E = 2 * D;
    mml_model *m = gate_model(ctx, E, 1, 3.0f, 0);
    float w[D * 2 * D];
    ck_assert_int_eq(mml_gate_table(mml_model_gate(m), w), MML_OK);
    /* Two own experts at logit 3 against four at 0 (plus the small random
     * e_d W): about 2 e^3 / (2 e^3 + 4) = 0.91. */
    for (int32_t d = 0; d < D; d++) {
        double own = 0;
        for (int32_t e = 0; e < E; e++)
            if (e % D == d)
                own += w[d * E + e];
        ck_assert_msg(own > 0.85 && own < 0.95, "domain %d: own weight %g", d, own);
    }
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
}
END_TEST

/* _i: 0 the table, 1 embeddings with the gradient stopped, 2 with it. */
START_TEST(gradcheck_gate_extras)
{
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 3);
    int32_t input = _i == 0 ? MML_GATE_INPUT_DOMAIN : _i == 1 ? MML_GATE_INPUT_EMBEDDINGS
                                                              : MML_GATE_INPUT_EMBEDDINGS_GRAD;
    fx.model = gate_model(fx.ctx, 2 * D, 1, 1.0f, input);
    fx.mode = MML_MIX_GATED;
    randomize_model(fx.model, 11, 0.5f);
    make_batch(&fx, 7, 21);
    mml_param *params[128];
    int64_t np = 0;
    for (int64_t i = 0; i < mml_model_n_params(fx.model); i++) {
        mml_param *p = mml_model_param(fx.model, i);
        /* Stopped: the embeddings' analytic gradient lacks the gate's path by design. */
        if (input == MML_GATE_INPUT_EMBEDDINGS && p->group == MML_GROUP_EMBEDDING)
            continue;
        params[np++] = p;
    }
    mml_gradcheck_report rep;
    int rc = gradcheck(&fx, params, np, &rep);
    ck_assert_msg(rc == MML_OK, "input %d: %s (checked %lld, failed %lld)", (int)input,
                  mml_ctx_last_error(fx.ctx), (long long)rep.checked, (long long)rep.failed);
    ck_assert_int_gt(rep.checked, 100);
    mml_param *v = find_param(fx.model, input ? "gate.V" : "gate.domain_bias");
    double sum = 0;
    for (int64_t j = 0; j < mml_param_size(v); j++)
        sum += fabs(v->grad[j]);
    ck_assert_msg(sum > 0, "%s has no gradient", v->name);
    free_fixture(&fx);
}
END_TEST

/* The stopped gradient: the same function as with the gradient, the same
 * gate gradients, but the embeddings get less (no path through the gate). */
START_TEST(stop_gradient_passes_nothing_through_the_gate)
{
    fixture fx = {0}, fy;
    fx.ctx = plain_ctx(1, 3);
    fx.model = gate_model(fx.ctx, 2 * D, 1, 1.0f, MML_GATE_INPUT_EMBEDDINGS);
    fx.mode = MML_MIX_GATED;
    randomize_model(fx.model, 11, 0.5f);
    make_batch(&fx, 7, 21);
    fy = fx;
    fy.model = gate_model(fx.ctx, 2 * D, 1, 1.0f, MML_GATE_INPUT_EMBEDDINGS_GRAD);
    fy.logits = malloc(sizeof(float) * 7);
    randomize_model(fy.model, 11, 0.5f);
    ck_assert_int_eq(mml_model_set_dropout_replay(fx.model, 0), MML_OK);
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_GATED, 0, 0, fx.logits), MML_OK);
    ck_assert_int_eq(mml_model_forward(fy.model, &fy.batch, MML_MIX_GATED, 0, 0, fy.logits), MML_OK);
    ck_assert_int_eq(memcmp(fx.logits, fy.logits, sizeof(float) * 7), 0);
    /* Dropout off for the comparison of the gradients. */
    fixture *both[2] = {&fx, &fy};
    for (int k = 0; k < 2; k++) {
        mml_model *m = both[k]->model;
        for (int64_t i = 0; i < mml_model_n_params(m); i++) {
            mml_param *p = mml_model_param(m, i);
            mml_params_zero_grad(&p, 1);
        }
        ck_assert_int_eq(mml_model_forward(m, &fx.batch, MML_MIX_GATED, 0, 0, both[k]->logits), MML_OK);
        ck_assert_int_eq(mml_bce_with_logits(fx.ctx, both[k]->logits, fx.labels, NULL, 7, NULL,
                                             both[k]->dlogits), MML_OK);
        ck_assert_int_eq(mml_model_backward(m, both[k]->dlogits), MML_OK);
    }
    for (int64_t i = 0; i < mml_model_n_params(fx.model); i++) {
        mml_param *p = mml_model_param(fx.model, i), *q = mml_model_param(fy.model, i);
        int eq = memcmp(p->grad, q->grad, sizeof(float) * (size_t)mml_param_size(p)) == 0;
        if (p->group == MML_GROUP_EMBEDDING && strcmp(p->name, "field0") == 0)
            ck_assert_msg(!eq, "%s: the gate's path made no difference", p->name);
        else if (p->group != MML_GROUP_EMBEDDING)
            ck_assert_msg(eq, "%s differs", p->name);
    }
    free(fy.logits);
    mml_model_destroy(fy.model);
    free_fixture(&fx);
}
END_TEST

START_TEST(row_gate_saves_loads_and_serves)
{
    fixture fx = {0};
    fx.ctx = plain_ctx(1, 3);
    fx.model = gate_model(fx.ctx, 2 * D, 1, 1.0f, MML_GATE_INPUT_EMBEDDINGS_GRAD);
    randomize_model(fx.model, 5, 0.5f);
    make_batch(&fx, 9, 4);
    ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_GATED, 0, 0, fx.logits), MML_OK);
    char path[] = "/tmp/mml_tuned_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(mml_model_save(fx.model, path), MML_OK);
    mml_model *back = NULL;
    int rc = mml_model_load(&back, fx.ctx, path);
    ck_assert_msg(rc == MML_OK, "load: %s", mml_ctx_last_error(fx.ctx));
    ck_assert_int_eq(mml_model_n_params(back), mml_model_n_params(fx.model));
    float out[9];
    ck_assert_int_eq(mml_model_forward(back, &fx.batch, MML_MIX_GATED, 0, 0, out), MML_OK);
    ck_assert_int_eq(memcmp(out, fx.logits, sizeof out), 0);
    /* A session (a replica of the gate) predicts the same. */
    ck_assert_int_eq(mml_model_make_readonly(back), MML_OK);
    mml_session *s = NULL;
    ck_assert_int_eq(mml_session_create(&s, fx.ctx, back, NULL), MML_OK);
    float p[9];
    rc = mml_session_predict(s, &fx.batch, p, NULL);
    ck_assert_msg(rc == MML_OK, "session: %s", mml_ctx_last_error(fx.ctx));
    for (int i = 0; i < 9; i++)
        ck_assert_float_eq_tol(p[i], 1.0f / (1.0f + expf(-fx.logits[i])), 1e-6f);
    mml_session_destroy(s);
    mml_model_destroy(back);
    unlink(path);
    free_fixture(&fx);
}
END_TEST

/* ---- the trainer ---- */

static void world_small(world *w, uint64_t seed) { world_init_sized(w, seed, 3000, 40, 30); }

/* Runs stages up to and including `last`; returns the trainer. */
static mml_trainer *run_until(world *w, const mml_trainer_options *o, int32_t last)
{
    mml_trainer *t = make_trainer(w, o);
    while (mml_trainer_next_stage(t) >= 0 && mml_trainer_next_stage(t) <= last) {
        int rc = mml_trainer_run_stage(t, mml_trainer_next_stage(t));
        ck_assert_msg(rc == MML_OK, "stage: %s", mml_ctx_last_error(w->ctx));
    }
    return t;
}

/* Whether param i of m belongs to one of the groups in mask (1 << group). */
static int in_groups(mml_model *m, int64_t i, unsigned mask)
{
    return (mask >> mml_model_param(m, i)->group) & 1u;
}

#define G(x) (1u << (x))

/* Runs `stage` after the earlier ones; checks that exactly the parameters of
 * `moving` groups may change (and some do), the others stay bit for bit. */
static void check_stage(world *w, const mml_trainer_options *o, int32_t stage, unsigned moving,
                        const char *what)
{
    mml_trainer *t = run_until(w, o, stage - 1);
    mml_model *m = mml_trainer_model(t);
    snap before = take(m);
    ck_assert_int_eq(mml_trainer_next_stage(t), stage);
    int rc = mml_trainer_run_stage(t, stage);
    ck_assert_msg(rc == MML_OK, "%s: %s", what, mml_ctx_last_error(w->ctx));
    int changed = 0;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        if (in_groups(m, i, moving))
            changed |= !same(&before, m, i);
        else
            ck_assert_msg(same(&before, m, i), "%s: frozen %s changed", what,
                          mml_model_param(m, i)->name);
    }
    ck_assert_msg(changed, "%s: nothing trained", what);
    drop(&before);
    mml_trainer_destroy(t);
}

/* The final weights of a whole run with o. */
static snap full_run(world *w, const mml_trainer_options *o)
{
    mml_trainer *t = make_trainer(w, o);
    int rc = mml_trainer_run(t);
    ck_assert_msg(rc == MML_OK, "run: %s", mml_ctx_last_error(w->ctx));
    snap s = take(mml_trainer_model(t));
    mml_trainer_destroy(t);
    return s;
}

/* Whether parameter index i differs between two runs of o (sizes from m). */
static int param_differs(mml_model *m, const snap *a, const snap *b, int64_t i)
{
    return memcmp(a->v[i], b->v[i], sizeof(float) * (size_t)mml_param_size(mml_model_param(m, i))) != 0;
}

START_TEST(defaults_are_the_paper)
{
    mml_trainer_options o;
    mml_trainer_options_init(&o);
    ck_assert(o.gate_prior == 0.0f && o.gate_lr == 0.0f && o.expert_lr == 0.0f);
    ck_assert(o.expert_backbone_lr == 0.0f && o.expert_other_weight == 0.0f);
    ck_assert(o.finetune_lr == 0.0f);
    ck_assert_int_eq(o.finetune, MML_FINETUNE_NONE);
    ck_assert_int_eq(o.finetune_patience, 0);
    ck_assert_int_eq(o.gate_input, MML_GATE_INPUT_DOMAIN);
    /* An application built against 1.2 still gets its options. */
    mml_trainer_options old;
    memset(&old, 0xAB, sizeof old);
    ck_assert_int_eq(mml_trainer_options_init_sized(&old, (uint32_t)offsetof(mml_trainer_options,
                                                                              reduce)), MML_OK);
    ck_assert_uint_eq(((const unsigned char *)&old)[offsetof(mml_trainer_options, reduce)], 0xAB);
    /* The preset: MoE with stage 4, and refuses a struct without the 1.3 fields. */
    mml_trainer_options_init(&o);
    o.variant = MML_VARIANT_BASE;
    o.lr = 5e-3f;
    ck_assert_int_eq(mml_trainer_options_moe_tuned(&o), MML_OK);
    ck_assert_int_eq(o.variant, MML_VARIANT_MOE);
    ck_assert_int_ne(o.finetune, MML_FINETUNE_NONE);
    ck_assert(o.gate_prior > 0.0f);
    ck_assert(o.lr == 5e-3f);
    ck_assert_int_eq(mml_trainer_options_moe_tuned(NULL), MML_EINVAL);
    old.struct_size = (uint32_t)offsetof(mml_trainer_options, gate_prior);
    ck_assert_int_eq(mml_trainer_options_moe_tuned(&old), MML_EVERSION);
    /* A default MoE run and one with every 1.3 field zeroed by hand: the same model. */
    world w;
    world_small(&w, 4);
    mml_trainer_options a, b;
    tiny_options(&a, MML_VARIANT_MOE);
    b = a;
    memset(&b.gate_prior, 0, sizeof b - offsetof(mml_trainer_options, gate_prior));
    mml_trainer *t = make_trainer(&w, &a);
    ck_assert_int_eq(mml_gate_n_params(mml_model_gate(mml_trainer_model(t))), 3);
    mml_trainer_destroy(t);
    snap sa = full_run(&w, &a), sb = full_run(&w, &b);
    mml_trainer *tm = make_trainer(&w, &a);
    for (int64_t i = 0; i < sa.n; i++)
        ck_assert(!param_differs(mml_trainer_model(tm), &sa, &sb, i));
    mml_trainer_destroy(tm);
    drop(&sa);
    drop(&sb);
    world_free(&w);
}
END_TEST

START_TEST(bad_options_are_refused)
{
    world w;
    world_small(&w, 4);
    mml_trainer *t = NULL;
    struct { const char *field; mml_trainer_options o; } cases[10];
    int n = 0;
    mml_trainer_options o;
#define BAD(name, stmt)                                                                          \
    do {                                                                                         \
        tiny_options(&o, MML_VARIANT_MOE);                                                       \
        stmt;                                                                                    \
        cases[n].field = name;                                                                   \
        cases[n++].o = o;                                                                        \
    } while (0)
    BAD("gate_prior", o.gate_prior = -1.0f);
    BAD("gate_lr", o.gate_lr = NAN);
    BAD("expert_other_weight", o.expert_other_weight = 1.5f);
    BAD("finetune", o.finetune = 3);
    BAD("finetune_patience", o.finetune_patience = -1);
    BAD("gate_input", o.gate_input = 5);
    BAD("gate_input", (o.gate_input = 1, o.gate_top_k = 1));
    BAD("MML_VARIANT_MOE", (o.variant = MML_VARIANT_MLORA, o.gate_prior = 1.0f));
    BAD("first_stage", o.first_stage = MML_STAGE_FINETUNE);
#undef BAD
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(mml_trainer_create(&t, w.ctx, &cases[i].o, w.train, w.val), MML_EINVAL);
        ck_assert_msg(strstr(mml_ctx_last_error(w.ctx), cases[i].field), "%s: %s", cases[i].field,
                      mml_ctx_last_error(w.ctx));
        ck_assert_ptr_null(t);
    }
    world_free(&w);
}
END_TEST

START_TEST(gate_options_train_the_gate_only)
{
    world w;
    world_small(&w, 4);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_MOE);
    o.gate_prior = 2.0f;
    o.gate_lr = 1e-2f;
    check_stage(&w, &o, MML_STAGE_GATE, G(MML_GROUP_GATE), "stage 3 with prior and gate_lr");
    o.gate_input = MML_GATE_INPUT_EMBEDDINGS_GRAD;
    check_stage(&w, &o, MML_STAGE_GATE, G(MML_GROUP_GATE), "stage 3 with row inputs");
    /* gate_lr changes stage 3 and nothing before it. */
    mml_trainer_options p = o;
    p.gate_lr = 0.0f;
    mml_trainer *a = run_until(&w, &o, MML_STAGE_GATE), *b = run_until(&w, &p, MML_STAGE_GATE);
    mml_model *ma = mml_trainer_model(a), *mb = mml_trainer_model(b);
    snap sa = take(ma), sb = take(mb);
    int gate_differs = 0;
    for (int64_t i = 0; i < sa.n; i++) {
        if (in_groups(ma, i, G(MML_GROUP_GATE)))
            gate_differs |= param_differs(ma, &sa, &sb, i);
        else
            ck_assert(!param_differs(ma, &sa, &sb, i));
    }
    ck_assert(gate_differs);
    /* The prior moved the gate toward the own experts. */
    float tab[3 * 3];
    ck_assert_int_eq(mml_gate_table(mml_model_gate(ma), tab), MML_OK);
    for (int d = 0; d < 3; d++)
        ck_assert_msg(tab[d * 3 + d] > 0.5f, "domain %d: own weight %g", d, (double)tab[d * 3 + d]);
    drop(&sa);
    drop(&sb);
    mml_trainer_destroy(a);
    mml_trainer_destroy(b);
    world_free(&w);
}
END_TEST

START_TEST(expert_options_change_stage_two)
{
    world w;
    world_small(&w, 4);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_MOE);
    check_stage(&w, &o, MML_STAGE_EXPERTS, G(MML_GROUP_EXPERT), "paper stage 2");
    mml_trainer_options lr = o, other = o, bb = o;
    lr.expert_lr = 1e-2f;
    other.expert_other_weight = 0.25f;
    bb.expert_backbone_lr = 1e-3f;
    check_stage(&w, &lr, MML_STAGE_EXPERTS, G(MML_GROUP_EXPERT), "expert_lr");
    check_stage(&w, &other, MML_STAGE_EXPERTS, G(MML_GROUP_EXPERT), "expert_other_weight");
    check_stage(&w, &bb, MML_STAGE_EXPERTS,
                G(MML_GROUP_EXPERT) | G(MML_GROUP_EMBEDDING) | G(MML_GROUP_BACKBONE),
                "expert_backbone_lr");
    /* Each changes the experts against the paper's stage 2. */
    const mml_trainer_options *variants[3] = {&lr, &other, &bb};
    mml_trainer *ref = run_until(&w, &o, MML_STAGE_EXPERTS);
    snap sr = take(mml_trainer_model(ref));
    for (int v = 0; v < 3; v++) {
        mml_trainer *t = run_until(&w, variants[v], MML_STAGE_EXPERTS);
        mml_model *m = mml_trainer_model(t);
        snap s = take(m);
        int differs = 0;
        for (int64_t i = 0; i < s.n; i++)
            if (mml_model_param(m, i)->group == MML_GROUP_EXPERT)
                differs |= param_differs(m, &s, &sr, i);
        ck_assert_msg(differs, "option %d left the experts as the paper's", v);
        drop(&s);
        mml_trainer_destroy(t);
    }
    drop(&sr);
    mml_trainer_destroy(ref);
    world_free(&w);
}
END_TEST

START_TEST(finetune_stage_trains_what_it_says)
{
    world w;
    world_small(&w, 4);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_MOE);
    o.finetune = MML_FINETUNE_EXPERTS_GATE;
    check_stage(&w, &o, MML_STAGE_FINETUNE, G(MML_GROUP_EXPERT) | G(MML_GROUP_GATE),
                "stage 4, experts and gate");
    o.finetune = MML_FINETUNE_ALL;
    o.finetune_patience = 2;
    o.finetune_lr = 3e-3f;
    check_stage(&w, &o, MML_STAGE_FINETUNE,
                G(MML_GROUP_EXPERT) | G(MML_GROUP_GATE) | G(MML_GROUP_EMBEDDING) |
                    G(MML_GROUP_BACKBONE),
                "stage 4, all");
    /* Stage 4 follows stage 3 and ends the run; its report never scores
     * below stage 3's (it keeps its start unless an epoch beats it). */
    mml_trainer *t = run_until(&w, &o, MML_STAGE_GATE);
    ck_assert_int_eq(mml_trainer_next_stage(t), MML_STAGE_FINETUNE);
    ck_assert_int_eq(mml_trainer_run(t), MML_OK);
    ck_assert_int_eq(mml_trainer_next_stage(t), -1);
    int64_t n = mml_trainer_n_stage_reports(t);
    mml_stage_report gate, ft;
    ck_assert_int_eq(mml_trainer_stage_report(t, n - 2, &gate), MML_OK);
    ck_assert_int_eq(mml_trainer_stage_report(t, n - 1, &ft), MML_OK);
    ck_assert_int_eq(gate.stage, MML_STAGE_GATE);
    ck_assert_int_eq(ft.stage, MML_STAGE_FINETUNE);
    ck_assert_int_ge(ft.epochs, 1);
    ck_assert_msg(ft.best_val >= gate.best_val, "stage 4 %g below stage 3 %g", ft.best_val,
                  gate.best_val);
    ck_assert_int_eq(mml_trainer_mix_mode(t), MML_MIX_GATED);
    mml_trainer_destroy(t);
    /* Without the option there is no stage 4. */
    o.finetune = MML_FINETUNE_NONE;
    o.finetune_patience = 0;
    o.finetune_lr = 0.0f;
    t = run_until(&w, &o, MML_STAGE_GATE);
    ck_assert_int_eq(mml_trainer_next_stage(t), -1);
    ck_assert_int_eq(mml_trainer_run_stage(t, MML_STAGE_FINETUNE), MML_ESTATE);
    mml_trainer_destroy(t);
    world_free(&w);
}
END_TEST

/* A checkpoint inside stage 4 and inside stage 2 with its second
 * optimiser: the resumed run ends bitwise identical. */
typedef struct killer {
    int calls, kill_at;
    int32_t stop_stage;
    mml__wbuf buf;
    const char *path; /* else into buf */
} killer;

static int on_checkpoint(void *user, mml_trainer *t, const mml_progress *where)
{
    killer *k = user;
    if (where->stage != k->stop_stage || ++k->calls != k->kill_at)
        return 0;
    if (k->path)
        ck_assert_int_eq(mml_trainer_save(t, k->path), MML_OK);
    else
        ck_assert_int_eq(mml__trainer_state_write(t, &k->buf), MML_OK);
    return 1;
}

/* The same through a checkpoint file (its model has the gate's GATX section). */
static void resume_from_file(world *w, const mml_trainer_options *o, int32_t stage)
{
    snap ref = full_run(w, o);
    char path[] = "/tmp/mml_tuned_ckpt_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    killer k;
    memset(&k, 0, sizeof k);
    k.kill_at = 1;
    k.stop_stage = stage;
    k.path = path;
    mml_trainer_options o1 = *o;
    o1.checkpoint = on_checkpoint;
    o1.checkpoint_user = &k;
    mml_trainer *t1 = make_trainer(w, &o1);
    ck_assert_int_eq(mml_trainer_run(t1), MML_ECANCELED);
    mml_trainer_destroy(t1);
    mml_trainer *t2 = NULL;
    int rc = mml_trainer_resume(&t2, w->ctx, o, path, w->train, w->val);
    ck_assert_msg(rc == MML_OK, "resume: %s", mml_ctx_last_error(w->ctx));
    ck_assert_int_eq(mml_trainer_next_stage(t2), stage);
    ck_assert_msg(mml_trainer_run(t2) == MML_OK, "%s", mml_ctx_last_error(w->ctx));
    const char *diff = first_difference(mml_trainer_model(t2), &ref);
    ck_assert_msg(diff == NULL, "from the file, stage %d: parameter %s differs", (int)stage, diff);
    mml_trainer_destroy(t2);
    /* Without the gate options the file's model does not fit. */
    mml_trainer_options plain = *o;
    plain.gate_prior = 0.0f;
    plain.gate_input = MML_GATE_INPUT_DOMAIN;
    ck_assert_int_lt(mml_trainer_resume(&t2, w->ctx, &plain, path, w->train, w->val), 0);
    ck_assert_ptr_null(t2);
    unlink(path);
    drop(&ref);
}

static void resume_in(world *w, const mml_trainer_options *o, int32_t stage)
{
    snap ref = full_run(w, o);
    killer k;
    memset(&k, 0, sizeof k);
    k.kill_at = 2;
    k.stop_stage = stage;
    mml__wbuf_init(&k.buf, w->ctx);
    mml_trainer_options o1 = *o;
    o1.checkpoint = on_checkpoint;
    o1.checkpoint_user = &k;
    mml_trainer *t1 = make_trainer(w, &o1);
    ck_assert_int_eq(mml_trainer_run(t1), MML_ECANCELED);
    ck_assert_int_eq(k.calls, 2);
    mml_trainer_options o2 = *o;
    o2.init_model = mml_trainer_model(t1);
    mml_trainer *t2 = make_trainer(w, &o2);
    mml__rbuf r;
    mml__rbuf_init(&r, w->ctx, k.buf.data, k.buf.len, 0, "trainer state");
    int rc = mml__trainer_state_read(t2, &r);
    ck_assert_msg(rc == MML_OK, "state_read: %s", mml_ctx_last_error(w->ctx));
    mml_trainer_destroy(t1);
    ck_assert_int_eq(mml_trainer_next_stage(t2), stage);
    ck_assert_msg(mml_trainer_run(t2) == MML_OK, "%s", mml_ctx_last_error(w->ctx));
    const char *diff = first_difference(mml_trainer_model(t2), &ref);
    ck_assert_msg(diff == NULL, "stage %d: parameter %s differs", (int)stage, diff);
    mml_trainer_destroy(t2);
    mml__wbuf_free(&k.buf);
    drop(&ref);
}

START_TEST(checkpoints_resume_bitwise)
{
    world w;
    world_small(&w, 22);
    mml_trainer_options o;
    tiny_options(&o, MML_VARIANT_MOE);
    o.patience = 2;
    o.max_epochs = 4;
    ck_assert_int_eq(mml_trainer_options_moe_tuned(&o), MML_OK);
    o.expert_backbone_lr = 1e-3f;
    o.expert_other_weight = 0.5f;
    o.gate_input = MML_GATE_INPUT_EMBEDDINGS_GRAD;
    o.finetune_patience = 2;
    resume_in(&w, &o, MML_STAGE_FINETUNE);
    resume_in(&w, &o, MML_STAGE_EXPERTS);
    resume_from_file(&w, &o, MML_STAGE_FINETUNE);
    /* The saved state belongs to its options: stage 4 needs finetune. */
    world_free(&w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tuned");
    TCase *tc = tcase_create("tuned");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, gate_parameters_by_option);
    tcase_add_test(tc, prior_starts_on_the_own_experts);
    tcase_add_loop_test(tc, gradcheck_gate_extras, 0, 3);
    tcase_add_test(tc, stop_gradient_passes_nothing_through_the_gate);
    tcase_add_test(tc, row_gate_saves_loads_and_serves);
    tcase_add_test(tc, defaults_are_the_paper);
    tcase_add_test(tc, bad_options_are_refused);
    tcase_add_test(tc, gate_options_train_the_gate_only);
    tcase_add_test(tc, expert_options_change_stage_two);
    tcase_add_test(tc, finetune_stage_trains_what_it_says);
    tcase_add_test(tc, checkpoints_resume_bitwise);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
