/* DCN: a cross network and a DNN tower side by side over
 * x0 = [e_1 .. e_F, numeric] (width d),
 *
 *     x_{l+1} = x0 (x_l . w_l) + b_l + x_l,   l = 0 .. L - 1,
 *
 * w_l a d-vector (glorot-uniform with fans d and 1), b_l zeros; the logit is
 * a bias-free Linear over [x_L, tower out]; the model adds the linear term. */
#include <stdio.h>

#include "backbones/backbones.h"

#define MAX_CROSS 64
_Static_assert(2 * MAX_CROSS + 1 <= MML__MAX_PARAMS, "cross.l.w, cross.l.b and head.w fit");

typedef struct dcn {
    mml__deep base; /* x is x0; p holds cross.l.w, cross.l.b ..., head.w */
    int32_t L;
    float *xl, *s, *gv;
    size_t cap_xl, cap_s, cap_gv;
} dcn;

static const mml_dcn_options defaults = {.struct_size = sizeof(mml_dcn_options),
                                         .cross_layers = 2};

int mml_dcn_options_init_sized(mml_dcn_options *out, uint32_t struct_size)
{
    return mml__init_versioned(out, &defaults, sizeof defaults, struct_size,
                               MML__OLDER_SIZES_mml_dcn_options);
}

static int dcn_check(mml_ctx *ctx, const mml_backbone_config *c, const mml__opts *o)
{
    int32_t L = o->dcn.cross_layers;
    (void)c;
    if (L < 1 || L > MAX_CROSS)
        return mml__error(ctx, MML_EINVAL, "dcn: cross_layers %d outside [1, %d]", L, MAX_CROSS);
    return MML_OK;
}

/* The cross layers' w_l and b_l, and head.w's rows for x_L. */
static int64_t dcn_n_values(const mml_backbone_config *c, const mml__opts *o)
{
    int64_t d = c->n_fields * c->embed_dim + c->n_dense;
    return 2 * o->dcn.cross_layers * d + d;
}

static int dcn_create(mml__deep *base, const mml_backbone_config *c, const mml__opts *o)
{
    dcn *d = (dcn *)base;
    int32_t w = base->width;
    d->L = o->dcn.cross_layers;
    base->head_side = w;
    int rc = MML_OK;
    for (int32_t l = 0; rc >= 0 && l < d->L; l++) {
        char wn[MML__PARAM_NAME_MAX], bn[MML__PARAM_NAME_MAX];
        snprintf(wn, sizeof wn, "cross.%d.w", l);
        snprintf(bn, sizeof bn, "cross.%d.b", l);
        rc = mml__deep_add_param(base, wn, w, 1, w, 1, c->stream + 1 + (uint64_t)l);
        if (rc >= 0)
            rc = mml__deep_add_param(base, bn, w, 1, 0, 0, 0);
    }
    return rc;
}

static void dcn_destroy(mml__deep *base)
{
    dcn *d = (dcn *)base;
    float *const bufs[] = {d->xl, d->s, d->gv};
    const size_t caps[] = {d->cap_xl, d->cap_s, d->cap_gv};
    mml__free_floats(base->ctx, bufs, caps, 3);
}

static int dcn_forward(mml__deep *base, const mml_backbone_input *in)
{
    dcn *d = (dcn *)base;
    int64_t n = in->n_rows;
    int32_t w = base->width, L = d->L;
    int rc;
    if ((rc = mml__deep_flat_input(base, in)) < 0 ||
        (rc = mml__ensure_floats(base->ctx, &d->xl, &d->cap_xl, (size_t)(L * n * w))) < 0 ||
        (rc = mml__ensure_floats(base->ctx, &d->s, &d->cap_s, (size_t)(L * n))) < 0 ||
        (rc = mml__deep_tower_forward(base, in)) < 0)
        return rc;
    /* Cross layers: xl holds x_1 .. x_L, layer after layer. */
    for (int32_t l = 0; l < L; l++) {
        const float *wv = base->p[2 * l].value, *bv = base->p[2 * l + 1].value;
        for (int64_t r = 0; r < n; r++) {
            const float *x0 = base->x + r * w;
            const float *x = l ? d->xl + ((int64_t)(l - 1) * n + r) * w : x0;
            float *y = d->xl + ((int64_t)l * n + r) * w;
            float s = 0.0f;
            for (int32_t j = 0; j < w; j++)
                s += x[j] * wv[j];
            d->s[(int64_t)l * n + r] = s;
            for (int32_t j = 0; j < w; j++)
                y[j] = x0[j] * s + bv[j] + x[j];
        }
    }
    base->z = d->xl + (int64_t)(L - 1) * n * w;
    return MML_OK;
}

static int dcn_backward(mml__deep *base, const float *dlogit, const mml_backbone_grads *g,
                        float *dx)
{
    dcn *d = (dcn *)base;
    int64_t n = base->n;
    int32_t w = base->width, L = d->L;
    const float *hc = base->p[base->np - 1].value;
    /* The cross network, row by row: gv = d loss / d x_{l+1}. */
    if (dx || mml__any_unfrozen(base->p, 2 * L)) {
        int rc = mml__ensure_floats(base->ctx, &d->gv, &d->cap_gv, (size_t)w);
        if (rc < 0)
            return rc;
        float *gv = d->gv;
        for (int64_t r = 0; r < n; r++) {
            const float *x0 = base->x + r * w;
            float *dx0 = dx ? dx + r * w : NULL;
            for (int32_t j = 0; j < w; j++)
                gv[j] = dlogit[r] * hc[j];
            for (int32_t l = L - 1; l >= 0; l--) {
                const float *x = l ? d->xl + ((int64_t)(l - 1) * n + r) * w : x0;
                mml_param *wp = &base->p[2 * l], *bp = &base->p[2 * l + 1];
                float s = d->s[(int64_t)l * n + r], ds = 0.0f;
                for (int32_t j = 0; j < w; j++)
                    ds += gv[j] * x0[j];
                if (!bp->frozen)
                    for (int32_t j = 0; j < w; j++)
                        bp->grad[j] += gv[j];
                if (!wp->frozen)
                    for (int32_t j = 0; j < w; j++)
                        wp->grad[j] += ds * x[j];
                if (dx0)
                    for (int32_t j = 0; j < w; j++)
                        dx0[j] += s * gv[j];
                /* d x_l = g + ds w_l (x0 enters through s above, x_l = x0 at l = 0) */
                for (int32_t j = 0; j < w; j++)
                    gv[j] += ds * wp->value[j];
            }
            if (dx0)
                for (int32_t j = 0; j < w; j++)
                    dx0[j] += gv[j];
        }
    }
    mml__deep_input_grad(base, g, dx, 1);
    return MML_OK;
}

static const mml__side side = {.size = sizeof(dcn),
                               .scratch = offsetof(dcn, xl),
                               MML__SIDE_OPTIONS(mml_dcn_options, defaults),
                               .check = dcn_check, .n_values = dcn_n_values, .create = dcn_create,
                               .destroy = dcn_destroy, .forward = dcn_forward,
                               .backward = dcn_backward};

MML__BACKBONE_TABLE(dcn, 1, side);
