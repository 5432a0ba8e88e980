/* An out-of-tree program built only with `pkg-config --cflags --libs moemlora`. */
#include <moemlora/moemlora.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    mml_ctx *ctx = NULL;
    if (mml_ctx_create(&ctx, NULL) != MML_OK)
        return 1;
    int ok = strcmp(mml_version_string(), "") != 0 &&
             mml_version_number() == MML_VERSION_NUMBER &&
             mml_ctx_set_threads(ctx, 0) == MML_EINVAL;
    printf("consumer linked libmoemlora %s: %s\n", mml_version_string(), ok ? "ok" : "FAILED");
    mml_ctx_destroy(ctx);
    return ok ? 0 : 1;
}
