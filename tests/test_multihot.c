/* Multi-hot fields end to end: the batch view's multi-hot slots, the data
 * set view and the batcher, pooled tables in the model (values, gradients,
 * errors) and training from a CSV with a multi-hot column. */
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

enum { HF = 2, HK = 3, HD = 3, HV = 6, HN = 6 };
static const int64_t hsizes[HF] = {5, HD};
static const int64_t hmh_sizes[1] = {HV};
static const int32_t hhidden[2] = {5, 4};

/* Lists (offsets start above 0; the two leading ids are out of range and
 * must never be read): {1,2}, {}, {3,3,0}, {5}, {2,4,1,1}, {}. */
static const int64_t hoff[HN + 1] = {2, 4, 4, 7, 8, 12, 12};
static const int32_t hmh_ids[12] = {99, -7, 1, 2, 3, 3, 0, 5, 2, 4, 1, 1};

typedef struct mh_fx {
    mml_ctx *ctx;
    mml_model *model;
    int32_t ids[HN * HF], domain[HN];
    float labels[HN], logits[HN], dlogits[HN];
    const int64_t *offp[1];
    const int32_t *idp[1];
    mml_batch_view batch;
    int32_t mode;
} mh_fx;

static mml_model *mh_model(mml_ctx *ctx, const char *backbone, int32_t n_experts, int gate,
                           int32_t n_fields, const int64_t *sizes, int32_t n_mh, int32_t pooling)
{
    mml_model_options o;
    mml_model_options_init(&o);
    ck_assert_int_eq(o.multihot_pooling, MML_POOL_MEAN);
    ck_assert_int_eq(o.n_multihot, 0);
    o.backbone = backbone;
    o.n_fields = n_fields;
    o.field_sizes = sizes;
    o.embed_dim = HK;
    o.n_domains = HD;
    o.n_experts = n_experts;
    o.gate = gate;
    o.alpha = 2;
    o.n_hidden = 2;
    o.hidden = hhidden;
    o.dropout = 0.0f;
    o.n_multihot = n_mh;
    o.multihot_sizes = n_mh ? hmh_sizes : NULL;
    o.multihot_pooling = pooling;
    mml_model *m = NULL;
    int rc = mml_model_create(&m, ctx, &o);
    ck_assert_msg(rc == MML_OK, "model_create: %s", mml_ctx_last_error(ctx));
    return m;
}

static void randomize(mml_model *m, uint64_t seed, float scale)
{
    mml_rng rng;
    mml__rng_init(&rng, seed, 5);
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        for (int64_t j = 0; j < mml_param_size(p); j++)
            p->value[j] = (mml__rng_uniform(&rng) - 0.5f) * 2.0f * scale;
    }
}

static void mh_fx_init(mh_fx *fx, int32_t n_experts, int gate, int32_t pooling, const char *bb)
{
    memset(fx, 0, sizeof *fx);
    fx->ctx = plain_ctx(1, 3);
    fx->model = mh_model(fx->ctx, bb, n_experts, gate, HF, hsizes, 1, pooling);
    for (int32_t r = 0; r < HN; r++) {
        fx->domain[r] = r % HD;
        fx->ids[r * HF + 0] = (r * 3) % 5;
        fx->ids[r * HF + 1] = fx->domain[r];
        fx->labels[r] = (float)(r % 2);
    }
    mml_batch_view_init(&fx->batch, HN, HF, fx->ids, 0, NULL, fx->domain, fx->labels);
    ck_assert_int_eq(fx->batch.n_multihot, 0);
    ck_assert_ptr_null(fx->batch.multihot_offsets);
    ck_assert_ptr_null(fx->batch.multihot_ids);
    fx->offp[0] = hoff;
    fx->idp[0] = hmh_ids;
    fx->batch.n_multihot = 1;
    fx->batch.multihot_offsets = fx->offp;
    fx->batch.multihot_ids = fx->idp;
}

static void mh_fx_free(mh_fx *fx)
{
    mml_model_destroy(fx->model);
    mml_ctx_destroy(fx->ctx);
}

static int fx_loss(void *user, double *loss, uint64_t *pattern)
{
    mh_fx *fx = user;
    int rc = mml_model_forward(fx->model, &fx->batch, fx->mode, 0, 1, fx->logits);
    if (rc < 0)
        return rc;
    *pattern = mml_model_kink_pattern(fx->model);
    return mml_bce_with_logits(fx->ctx, fx->logits, fx->labels, NULL, HN, loss, NULL);
}

static int fx_grad(void *user)
{
    mh_fx *fx = user;
    mml_model *m = fx->model;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        memset(p->grad, 0, sizeof(float) * (size_t)mml_param_size(p));
    }
    int rc = mml_model_forward(m, &fx->batch, fx->mode, 0, 1, fx->logits);
    if (rc < 0)
        return rc;
    double loss;
    rc = mml_bce_with_logits(fx->ctx, fx->logits, fx->labels, NULL, HN, &loss, fx->dlogits);
    if (rc < 0)
        return rc;
    return mml_model_backward(m, fx->dlogits);
}

static void gradcheck(mh_fx *fx)
{
    mml_param *params[256];
    int64_t np = 0;
    mml_model *m = fx->model;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        if (p->group == MML_GROUP_GATE && fx->mode != MML_MIX_GATED)
            continue;
        if (p->group == MML_GROUP_EXPERT && fx->mode == MML_MIX_NONE)
            continue;
        params[np++] = p;
    }
    mml_gradcheck_options o;
    mml_gradcheck_options_init(&o);
    o.step = 1e-3;
    o.rtol = 1e-2;
    o.atol = 2e-4;
    o.seed = 17;
    mml_gradcheck_report rep;
    int rc = mml_gradcheck(fx->ctx, &o, params, np, fx_grad, fx_loss, fx, &rep);
    ck_assert_msg(rc == MML_OK, "%s (checked %lld, skipped %lld, failed %lld)",
                  mml_ctx_last_error(fx->ctx), (long long)rep.checked,
                  (long long)rep.skipped_kinks, (long long)rep.failed);
    ck_assert_int_gt(rep.checked, 0);
    ck_assert_int_le(rep.skipped_kinks, rep.checked / 20 + 2);
}

static void check_table_grad_rows(mh_fx *fx)
{
    /* Rows of the multi-hot table that no list uses (none here besides...) keep
     * a zero gradient; rows used get one. Every id 0..5 is used once at least. */
    mml_param *p = mml_model_param(fx->model, HF);
    ck_assert_str_eq(p->name, "multihot0");
    ck_assert_int_eq(p->rows, HV);
    ck_assert_int_eq(p->cols, HK);
    ck_assert_int_eq(p->group, MML_GROUP_EMBEDDING);
    ck_assert_int_eq(fx_grad(fx), MML_OK);
    for (int64_t row = 0; row < HV; row++) {
        double s = 0;
        for (int32_t j = 0; j < HK; j++)
            s += fabs(p->grad[row * HK + j]);
        ck_assert_msg(s > 0, "row %lld of multihot0 got no gradient", (long long)row);
    }
}

START_TEST(model_gradcheck_none_and_gated)
{
    static const int32_t pools[2] = {MML_POOL_MEAN, MML_POOL_SUM};
    for (int i = 0; i < 2; i++) {
        mh_fx fx;
        mh_fx_init(&fx, 2 * HD, 1, pools[i], "mlp");
        randomize(fx.model, 11 + (uint64_t)i, 0.5f);
        fx.mode = MML_MIX_NONE;
        gradcheck(&fx);
        check_table_grad_rows(&fx);
        fx.mode = MML_MIX_GATED;
        gradcheck(&fx);
        mh_fx_free(&fx);
    }
    /* A backbone with a linear term: no first-order table for the multi-hot
     * field (parameter count: 2 tables + 1 mh + 2 first-order + bias + ...). */
    mh_fx fx;
    mh_fx_init(&fx, 0, 0, MML_POOL_MEAN, "deepfm");
    int n_linear = 0;
    for (int64_t i = 0; i < mml_model_n_params(fx.model); i++)
        n_linear += strstr(mml_model_param(fx.model, i)->name, ".linear") != NULL;
    ck_assert_int_eq(n_linear, HF);
    randomize(fx.model, 5, 0.5f);
    fx.mode = MML_MIX_NONE;
    gradcheck(&fx);
    mh_fx_free(&fx);
}
END_TEST

/* The pooled vector against a double loop: model B has a third categorical
 * field whose row r holds the pooled list of row r computed in double; with
 * every other parameter copied, both models give the same logits. */
START_TEST(forward_matches_double_loop)
{
    static const int32_t pools[2] = {MML_POOL_MEAN, MML_POOL_SUM};
    for (int i = 0; i < 2; i++) {
        mh_fx fx;
        mh_fx_init(&fx, 0, 0, pools[i], "mlp");
        randomize(fx.model, 21 + (uint64_t)i, 0.7f);
        int64_t bsizes[HF + 1] = {hsizes[0], hsizes[1], HN};
        mml_model *b = mh_model(fx.ctx, "mlp", 0, 0, HF + 1, bsizes, 0, MML_POOL_MEAN);
        ck_assert_int_eq(mml_model_n_params(b), mml_model_n_params(fx.model));
        const float *table = mml_model_param(fx.model, HF)->value;
        for (int64_t i2 = 0; i2 < mml_model_n_params(b); i2++) {
            mml_param *pb = mml_model_param(b, i2), *pa = mml_model_param(fx.model, i2);
            if (i2 == HF) {
                for (int32_t r = 0; r < HN; r++) {
                    for (int32_t j = 0; j < HK; j++) {
                        double s = 0;
                        for (int64_t q = hoff[r]; q < hoff[r + 1]; q++)
                            s += table[hmh_ids[q] * HK + j];
                        int64_t cnt = hoff[r + 1] - hoff[r];
                        if (pools[i] == MML_POOL_MEAN && cnt > 0)
                            s /= (double)cnt;
                        pb->value[r * HK + j] = (float)s;
                    }
                }
                continue;
            }
            ck_assert_int_eq(mml_param_size(pa), mml_param_size(pb));
            memcpy(pb->value, pa->value, sizeof(float) * (size_t)mml_param_size(pa));
        }
        int32_t ids3[HN * (HF + 1)];
        for (int32_t r = 0; r < HN; r++) {
            ids3[r * 3 + 0] = fx.ids[r * HF + 0];
            ids3[r * 3 + 1] = fx.ids[r * HF + 1];
            ids3[r * 3 + 2] = r;
        }
        mml_batch_view vb;
        mml_batch_view_init(&vb, HN, HF + 1, ids3, 0, NULL, fx.domain, NULL);
        float la[HN], lb[HN];
        ck_assert_int_eq(mml_model_forward(fx.model, &fx.batch, MML_MIX_NONE, 0, 0, la), MML_OK);
        ck_assert_int_eq(mml_model_forward(b, &vb, MML_MIX_NONE, 0, 0, lb), MML_OK);
        for (int32_t r = 0; r < HN; r++)
            ck_assert_msg(fabsf(la[r] - lb[r]) <= 1e-5f * (1.0f + fabsf(lb[r])),
                          "row %d: %g vs %g", r, (double)la[r], (double)lb[r]);
        /* Empty lists: same logits as a zero vector in B (rows 1 and 5 of B's
         * table are zero by construction; check it). */
        for (int32_t j = 0; j < HK; j++)
            ck_assert(mml_model_param(b, HF)->value[1 * HK + j] == 0.0f);
        mml_model_destroy(b);
        mh_fx_free(&fx);
    }
}
END_TEST

START_TEST(bad_batches_refused)
{
    mh_fx fx;
    mh_fx_init(&fx, 0, 0, MML_POOL_MEAN, "mlp");
    float out[HN];
    /* No multi-hot slot on a model with one. */
    mml_batch_view b = fx.batch;
    b.n_multihot = 0;
    ck_assert_int_eq(mml_model_forward(fx.model, &b, MML_MIX_NONE, 0, 0, out), MML_ESHAPE);
    b.n_multihot = 2;
    ck_assert_int_eq(mml_model_forward(fx.model, &b, MML_MIX_NONE, 0, 0, out), MML_ESHAPE);
    b.n_multihot = 1;
    b.multihot_offsets = NULL;
    ck_assert_int_eq(mml_model_forward(fx.model, &b, MML_MIX_NONE, 0, 0, out), MML_EINVAL);
    /* Decreasing offsets. */
    static const int64_t badoff[HN + 1] = {2, 4, 3, 7, 8, 12, 12};
    const int64_t *bo[1] = {badoff};
    b = fx.batch;
    b.multihot_offsets = bo;
    ck_assert_int_eq(mml_model_forward(fx.model, &b, MML_MIX_NONE, 0, 0, out), MML_ESHAPE);
    /* A bad id names the table. */
    static const int32_t badids[12] = {0, 0, 1, 2, 3, 3, 0, 6, 2, 4, 1, 1};
    const int32_t *bi[1] = {badids};
    b = fx.batch;
    b.multihot_ids = bi;
    ck_assert_int_eq(mml_model_forward(fx.model, &b, MML_MIX_NONE, 0, 0, out), MML_ERANGE);
    ck_assert_msg(strstr(mml_ctx_last_error(fx.ctx), "multihot0") != NULL, "%s",
                  mml_ctx_last_error(fx.ctx));
    /* The failed forward leaves no state for backward. */
    ck_assert_int_eq(mml_model_backward(fx.model, out), MML_ESTATE);
    /* A batch with multi-hot fields on a model without. */
    mml_model *plain = mh_model(fx.ctx, "mlp", 0, 0, HF, hsizes, 0, MML_POOL_MEAN);
    ck_assert_int_eq(mml_model_forward(plain, &fx.batch, MML_MIX_NONE, 0, 0, out), MML_ESHAPE);
    b = fx.batch;
    b.n_multihot = 0;
    ck_assert_int_eq(mml_model_forward(plain, &b, MML_MIX_NONE, 0, 0, out), MML_OK);
    mml_model_destroy(plain);
    /* Bad options. */
    mml_model_options o;
    mml_model_options_init(&o);
    o.n_fields = HF;
    o.field_sizes = hsizes;
    o.n_domains = HD;
    o.n_multihot = 1;
    mml_model *m = NULL;
    ck_assert_int_eq(mml_model_create(&m, fx.ctx, &o), MML_EINVAL); /* NULL sizes */
    static const int64_t zero[1] = {0};
    o.multihot_sizes = zero;
    ck_assert_int_eq(mml_model_create(&m, fx.ctx, &o), MML_EINVAL);
    o.multihot_sizes = hmh_sizes;
    o.multihot_pooling = 7;
    ck_assert_int_eq(mml_model_create(&m, fx.ctx, &o), MML_EINVAL);
    o.multihot_pooling = MML_POOL_SUM;
    o.n_multihot = -1;
    ck_assert_int_eq(mml_model_create(&m, fx.ctx, &o), MML_EINVAL);
    ck_assert_ptr_null(m);
    mh_fx_free(&fx);
}
END_TEST

/* ------------------------------------------------------------ CSV, views, batcher, trainer */

static char tmpdir[64];

static void write_csv(const char *name, int rows, uint32_t seed)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    static const char *const g[5] = {"a", "b", "c", "d", "e"};
    fprintf(f, "label,domain,user,genres\n");
    uint32_t x = seed;
    for (int r = 0; r < rows; r++) {
        x = x * 1103515245u + 12345u;
        int n = (int)((x >> 16) % 4); /* 0..3 genres, with repeats possible */
        fprintf(f, "%d,%d,u%d,", (int)((x >> 8) & 1), r % 2, (int)((x >> 20) % 7));
        for (int k = 0; k < n; k++) {
            x = x * 1103515245u + 12345u;
            fprintf(f, "%s%s", k ? "|" : "", g[(x >> 16) % 5]);
        }
        fprintf(f, "\n");
    }
    fclose(f);
}

static void load(mml_ctx *ctx, mml_dataset **tr, mml_dataset **va)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mml_mh_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    write_csv("train.csv", 120, 7);
    write_csv("val.csv", 40, 9);
    static const char *const mh[] = {"genres"};
    mml_csv_options o;
    mml_csv_options_init(&o);
    o.multihot_columns = mh;
    o.n_multihot_columns = 1;
    char p1[256], p2[256];
    snprintf(p1, sizeof p1, "%s/train.csv", tmpdir);
    snprintf(p2, sizeof p2, "%s/val.csv", tmpdir);
    int rc = mml_csv_load(ctx, &o, p1, p2, NULL, tr, va, NULL);
    ck_assert_msg(rc == MML_OK, "%s", mml_ctx_last_error(ctx));
    unlink(p1);
    unlink(p2);
    rmdir(tmpdir);
    ck_assert_int_eq(mml_dataset_n_multihot(*tr), 1);
}

static void check_row(const mml_dataset *ds, const mml_batch_view *b, int64_t r, int64_t row)
{
    const int32_t *want;
    int64_t n;
    ck_assert_int_eq(mml_dataset_multihot_row(ds, 0, row, &want, &n), MML_OK);
    const int64_t *off = b->multihot_offsets[0];
    ck_assert_int_eq(off[r + 1] - off[r], n);
    for (int64_t q = 0; q < n; q++)
        ck_assert_int_eq(b->multihot_ids[0][off[r] + q], want[q]);
}

START_TEST(dataset_view_and_batcher_lists)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *tr, *va;
    load(ctx, &tr, &va);
    int64_t n = mml_dataset_n_rows(tr);
    int64_t empty = 0, multi = 0;
    for (int64_t r = 0; r < n; r++) {
        const int32_t *ids;
        int64_t c;
        ck_assert_int_eq(mml_dataset_multihot_row(tr, 0, r, &ids, &c), MML_OK);
        empty += c == 0;
        multi += c > 1;
    }
    ck_assert_int_gt(empty, 0);
    ck_assert_int_gt(multi, 0);
    /* dataset_view: pointers into the CSR, offsets from row start's entry. */
    mml_batch_view b;
    ck_assert_int_eq(mml_dataset_view(tr, 5, n - 9, &b), MML_OK);
    ck_assert_int_eq(b.n_multihot, 1);
    const int64_t *csr_off;
    const int32_t *csr_ids;
    ck_assert_int_eq(mml_dataset_multihot_csr(tr, 0, &csr_off, &csr_ids), MML_OK);
    ck_assert_ptr_eq(b.multihot_offsets[0], csr_off + 5);
    ck_assert_ptr_eq(b.multihot_ids[0], csr_ids);
    for (int64_t r = 0; r < b.n_rows; r++)
        check_row(tr, &b, r, 5 + r);
    /* Two views alive at once keep their own slices. */
    mml_batch_view b2;
    ck_assert_int_eq(mml_dataset_view(tr, 0, 3, &b2), MML_OK);
    ck_assert_ptr_eq(b2.multihot_offsets[0], csr_off);
    ck_assert_ptr_eq(b.multihot_offsets[0], csr_off + 5);
    /* Batchers: shuffled, per domain and contiguous. */
    for (int variant = 0; variant < 3; variant++) {
        mml_batcher_options bo;
        mml_batcher_options_init(&bo);
        bo.batch_size = 7;
        bo.shuffle = variant != 2;
        bo.domain = variant == 1 ? 1 : -1;
        mml_batcher *bt;
        ck_assert_int_eq(mml_batcher_create(&bt, ctx, tr, &bo), MML_OK);
        for (uint64_t epoch = 0; epoch < 2; epoch++) {
            ck_assert_int_eq(mml_batcher_start_epoch(bt, epoch), MML_OK);
            int64_t seen = 0;
            int rc;
            while ((rc = mml_batcher_next(bt, &b)) == 1) {
                const int64_t *rows = mml_batcher_batch_rows(bt);
                ck_assert_int_eq(b.n_multihot, 1);
                if (variant != 2)
                    ck_assert_int_eq(b.multihot_offsets[0][0], 0);
                for (int64_t r = 0; r < b.n_rows; r++)
                    check_row(tr, &b, r, rows[r]);
                seen += b.n_rows;
            }
            ck_assert_int_eq(rc, 0);
            ck_assert_int_eq(seen, mml_batcher_n_rows(bt));
        }
        mml_batcher_destroy(bt);
    }
    mml_dataset_destroy(tr);
    mml_dataset_destroy(va);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(csv_trains_one_epoch)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *tr, *va;
    load(ctx, &tr, &va);
    static const int32_t hidden[1] = {4};
    mml_trainer_options o;
    mml_trainer_options_init(&o);
    o.variant = MML_VARIANT_BASE;
    o.n_hidden = 1;
    o.hidden = hidden;
    o.embed_dim = 4;
    o.batch_size = 16;
    o.max_epochs = 1;
    o.lr = 1e-2f;
    mml_trainer *t = NULL;
    int rc = mml_trainer_create(&t, ctx, &o, tr, va);
    ck_assert_msg(rc == MML_OK, "%s", mml_ctx_last_error(ctx));
    mml_model *m = mml_trainer_model(t);
    int32_t F = mml_dataset_n_fields(tr);
    mml_param *p = mml_model_param(m, F);
    ck_assert_str_eq(p->name, "multihot0");
    ck_assert_int_eq(p->rows, mml_dataset_multihot_size(tr, 0));
    float before[64];
    int64_t sz = mml_param_size(p);
    ck_assert_int_le(sz, 64);
    memcpy(before, p->value, sizeof(float) * (size_t)sz);
    rc = mml_trainer_run(t);
    ck_assert_msg(rc == MML_OK, "%s", mml_ctx_last_error(ctx));
    ck_assert_int_eq(mml_trainer_n_epoch_reports(t), 1);
    int changed = 0;
    for (int64_t j = 0; j < sz; j++)
        changed |= p->value[j] != before[j];
    ck_assert(changed);
    mml_metrics *met;
    ck_assert_int_eq(mml_metrics_create(&met, ctx, mml_dataset_n_domains(va)), MML_OK);
    ck_assert_int_eq(mml_trainer_evaluate(t, va, mml_trainer_mix_mode(t), met), MML_OK);
    mml_metrics_destroy(met);
    mml_trainer_destroy(t);
    mml_dataset_destroy(tr);
    mml_dataset_destroy(va);
    mml_ctx_destroy(ctx);
}
END_TEST

static Suite *multihot_suite(void)
{
    Suite *s = suite_create("multihot");
    TCase *tc = tcase_create("multihot");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, model_gradcheck_none_and_gated);
    tcase_add_test(tc, forward_matches_double_loop);
    tcase_add_test(tc, bad_batches_refused);
    tcase_add_test(tc, dataset_view_and_batcher_lists);
    tcase_add_test(tc, csv_trains_one_epoch);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(multihot_suite()); }
