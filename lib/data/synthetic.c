/* The synthetic multi-domain data set; the generative model is documented in data.h. */
#include <math.h>
#include <string.h>

#include "data/data_internal.h"

int mml_synthetic_options_init_sized(mml_synthetic_options *out, uint32_t struct_size)
{
    mml_synthetic_options full, *o = &full;
    memset(o, 0, sizeof *o);
    o->n_rows = 24000;
    o->n_domains = 4;
    o->n_users = 80;
    o->n_items = 40;
    o->seed = 1;
    o->n_factors = 4;
    o->shared_scale = 0.5;
    o->domain_scale = 2.0;
    o->shift_scale = 2.0;
    o->bias_scale = 0.5;
    o->offset_min = -1.5;
    o->offset_max = 0.0;
    return mml__init_versioned(out, o, sizeof *o, struct_size, MML__OLDER_SIZES_mml_synthetic_options);
}

static int popcount32(uint32_t x)
{
    int n = 0;
    for (; x; x &= x - 1)
        n++;
    return n;
}

typedef struct synth {
    double *p, *q, *bu, *ci, *v, *s, *a, *w;
    size_t np, nq, nu, ni, nv, ns, nd;
} synth;

static void synth_free(mml_ctx *ctx, synth *m)
{
    mml__free(ctx, m->p, m->np);
    mml__free(ctx, m->q, m->nq);
    mml__free(ctx, m->bu, m->nu);
    mml__free(ctx, m->ci, m->ni);
    mml__free(ctx, m->v, m->nv);
    mml__free(ctx, m->s, m->ns);
    mml__free(ctx, m->a, m->nd);
    mml__free(ctx, m->w, m->nd);
}

int mml_synthetic_generate(mml_ctx *ctx, const mml_synthetic_options *opt, mml_dataset **train,
                           mml_dataset **val, mml_dataset **test)
{
    if (mml__loader_start(ctx, train, val, test) < 0)
        return MML_EINVAL;
    if (!train || !val || !test)
        return mml__error(ctx, MML_EINVAL, "mml_synthetic_generate: NULL output");
    mml_synthetic_options o;
    int vrc = MML__COPY_OPTIONS(ctx, &o, opt, mml_synthetic_options, "mml_synthetic_generate");
    if (vrc < 0)
        return vrc;
    if (o.n_rows < 1 || o.n_rows > ((int64_t)1 << 40) || o.n_domains < 1 || o.n_domains > 1024 ||
        o.n_users < 1 || o.n_items < 1 || o.n_factors < 1 || o.n_factors > 64)
        return mml__error(ctx, MML_EINVAL,
                          "mml_synthetic_generate: sizes out of range (n_rows %lld, n_domains %d, "
                          "n_users %d, n_items %d, n_factors %d)",
                          (long long)o.n_rows, (int)o.n_domains, (int)o.n_users, (int)o.n_items,
                          (int)o.n_factors);
    if (!isfinite(o.shared_scale) || !isfinite(o.domain_scale) || !isfinite(o.shift_scale) ||
        !isfinite(o.bias_scale) || !isfinite(o.offset_min) || !isfinite(o.offset_max))
        return mml__error(ctx, MML_ENONFINITE, "mml_synthetic_generate: a scale is not finite");

    const int32_t D = o.n_domains, K = o.n_factors, U = o.n_users, I = o.n_items;
    synth m;
    memset(&m, 0, sizeof m);
    m.np = (size_t)U * (size_t)K * sizeof(double);
    m.nq = (size_t)I * (size_t)K * sizeof(double);
    m.nu = (size_t)U * sizeof(double);
    m.ni = (size_t)I * sizeof(double);
    m.nv = m.ns = (size_t)D * (size_t)K * sizeof(double);
    m.nd = (size_t)D * sizeof(double);
    m.p = mml__alloc(ctx, m.np);
    m.q = mml__alloc(ctx, m.nq);
    m.bu = mml__alloc(ctx, m.nu);
    m.ci = mml__alloc(ctx, m.ni);
    m.v = mml__alloc(ctx, m.nv);
    m.s = mml__alloc(ctx, m.ns);
    m.a = mml__alloc(ctx, m.nd);
    m.w = mml__alloc(ctx, m.nd);
    mml__schema *schema = NULL;
    mml_dataset *all = NULL;
    int rc = MML_OK;
    if (!m.p || !m.q || !m.bu || !m.ci || !m.v || !m.s || !m.a || !m.w) {
        rc = MML_ENOMEM;
        goto done;
    }

    /* The model. */
    mml_rng rng;
    mml__rng_init(&rng, o.seed, MML_STREAM_DATA + 2);
    for (size_t k = 0; k < (size_t)U * (size_t)K; k++)
        m.p[k] = mml__rng_normal(&rng);
    for (size_t k = 0; k < (size_t)I * (size_t)K; k++)
        m.q[k] = mml__rng_normal(&rng);
    for (int32_t u = 0; u < U; u++)
        m.bu[u] = o.bias_scale * mml__rng_normal(&rng);
    for (int32_t i = 0; i < I; i++)
        m.ci[i] = o.bias_scale * mml__rng_normal(&rng);
    for (int32_t k = 0; k < D * K; k++)
        m.v[k] = mml__rng_normal(&rng);
    double wsum = 0;
    for (int32_t d = 0; d < D; d++) {
        for (int32_t k = 0; k < K; k++)
            m.s[d * K + k] = (popcount32((uint32_t)d & (uint32_t)(k + 1)) & 1) ? -1.0 : 1.0;
        m.a[d] = D > 1 ? o.offset_min + (o.offset_max - o.offset_min) * d / (D - 1) : o.offset_min;
        wsum += 1.0 + d / 2.0;
        m.w[d] = wsum; /* cumulative */
    }

    /* The schema and the rows. */
    rc = mml__schema_create(ctx, &schema, 3, 0, 0, D);
    if (rc < 0)
        goto done;
    static const char *const fnames[3] = {"user", "item", "domain"};
    for (int f = 0; f < 3; f++)
        if (!(schema->field_names[f] = mml__strdup(ctx, fnames[f]))) {
            rc = MML_ENOMEM;
            goto done;
        }
    for (int32_t d = 0; d < D; d++) {
        char t[16];
        int len = snprintf(t, sizeof t, "d%d", (int)d);
        if (!(schema->domain_names[d] = mml__strndup(ctx, t, (size_t)len))) {
            rc = MML_ENOMEM;
            goto done;
        }
    }
    schema->field_sizes[0] = U;
    schema->field_sizes[1] = I;
    schema->field_sizes[2] = D;
    schema->domain_field = 2;
    schema->field_kind[2] = MML__FIELD_DOMAIN; /* user and item: the ids themselves */
    /* Raw rows are what mml_dataset_write_csv writes: label,domain,user,item. */
    rc = mml__schema_set_roles(ctx, schema, MML__SOURCE_SYNTHETIC, "label", MML__LABEL_01, 0,
                               "domain", MML__DOMAIN_IDS, ',', '|');
    if (rc < 0)
        goto done;
    rc = mml__dataset_create(ctx, schema, o.n_rows, &all);
    if (rc < 0)
        goto done;
    mml__rng_init(&rng, o.seed, MML_STREAM_DATA + 3);
    const double inv = 1.0 / sqrt((double)K);
    for (int64_t r = 0; r < o.n_rows; r++) {
        double x = mml__rng_uniform_double(&rng) * wsum;
        int32_t d = 0;
        while (d < D - 1 && x >= m.w[d])
            d++;
        int32_t u = (int32_t)mml__rng_below(&rng, (uint64_t)U);
        int32_t i = (int32_t)mml__rng_below(&rng, (uint64_t)I);
        const double *pu = m.p + (size_t)u * (size_t)K, *qi = m.q + (size_t)i * (size_t)K;
        const double *vd = m.v + (size_t)d * (size_t)K, *sd = m.s + (size_t)d * (size_t)K;
        double shift = 0, shared = 0, own = 0;
        for (int32_t k = 0; k < K; k++) {
            shift += vd[k] * qi[k];
            shared += pu[k] * qi[k];
            own += sd[k] * pu[k] * qi[k];
        }
        double z = m.a[d] + m.bu[u] + m.ci[i] +
                   inv * (o.shift_scale * shift + o.shared_scale * shared + o.domain_scale * own);
        double prob = 1.0 / (1.0 + exp(-z));
        all->ids[3 * r] = u;
        all->ids[3 * r + 1] = i;
        all->ids[3 * r + 2] = d;
        all->domain[r] = d;
        all->labels[r] = mml__rng_uniform_double(&rng) < prob ? 1.0f : 0.0f;
    }
    all->n_rows = o.n_rows;
    mml__dataset_count_domains(all);
    rc = mml__split_stratified(ctx, all, o.seed, train, val, test);
done:
    mml_dataset_destroy(all);
    mml__schema_release(ctx, schema);
    synth_free(ctx, &m);
    if (rc == MML_ENOMEM)
        return mml__error(ctx, rc, "out of memory generating the synthetic data set");
    return rc;
}
