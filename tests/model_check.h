/* Finite-difference check callbacks over a whole model, shared by the
 * model-level suites. Include after defining `fixture` with the fields ctx,
 * model, n, labels, logits, dlogits, batch, mode and expert. Define
 * MODEL_CHECK_OWN_GRAD before including to supply fx_grad yourself. */
#ifndef MML_MODEL_CHECK_H
#define MML_MODEL_CHECK_H

/* Training-mode forward pass and mean BCE; the kink pattern of the model. */
static inline int fx_loss(void *user, double *loss, uint64_t *pattern)
{
    fixture *fx = user;
    int rc = mml_model_forward(fx->model, &fx->batch, fx->mode, fx->expert, 1, fx->logits);
    if (rc < 0)
        return rc;
    *pattern = mml_model_kink_pattern(fx->model);
    return mml_bce_with_logits(fx->ctx, fx->logits, fx->labels, NULL, fx->n, loss, NULL);
}

#ifndef MODEL_CHECK_OWN_GRAD
/* Zeroes every gradient, then forward, loss and backward. */
static inline int fx_grad(void *user)
{
    fixture *fx = user;
    mml_model *m = fx->model;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        mml_params_zero_grad(&p, 1);
    }
    int rc = mml_model_forward(m, &fx->batch, fx->mode, fx->expert, 1, fx->logits);
    if (rc < 0)
        return rc;
    rc = mml_bce_with_logits(fx->ctx, fx->logits, fx->labels, NULL, fx->n, NULL, fx->dlogits);
    if (rc < 0)
        return rc;
    return mml_model_backward(m, fx->dlogits);
}
#endif

/* The model's parameters that take part in a forward pass of this mode. */
static inline int64_t active_params(mml_model *m, int32_t mode, int32_t expert, mml_param **out)
{
    int64_t n = 0;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        mml_param *p = mml_model_param(m, i);
        if (p->group == MML_GROUP_GATE && mode != MML_MIX_GATED)
            continue;
        if (p->group == MML_GROUP_EXPERT &&
            (mode == MML_MIX_NONE || (mode == MML_MIX_SINGLE && p->expert != expert)))
            continue;
        out[n++] = p;
    }
    return n;
}

#endif
