#include <string.h>

#include "core/internal.h"
#include "moemlora/param.h"

int64_t mml_param_size(const mml_param *p) { return p ? p->rows * p->cols : 0; }

void mml_params_zero_grad(mml_param *const *params, int64_t n)
{
    if (!params)
        return;
    for (int64_t i = 0; i < n; i++)
        if (params[i] && params[i]->grad)
            memset(params[i]->grad, 0, (size_t)mml_param_size(params[i]) * sizeof(float));
}

int64_t mml_params_freeze_group(mml_param *const *params, int64_t n, int32_t group,
                                int32_t expert, int32_t frozen)
{
    int64_t matched = 0;
    if (!params)
        return 0;
    for (int64_t i = 0; i < n; i++) {
        mml_param *p = params[i];
        if (!p || p->group != group)
            continue;
        if (group == MML_GROUP_EXPERT && expert >= 0 && p->expert != expert)
            continue;
        p->frozen = frozen;
        matched++;
    }
    return matched;
}
