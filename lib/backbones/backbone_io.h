/* What the model file needs from the backbone layer (private). */
#ifndef MML_BACKBONE_IO_H
#define MML_BACKBONE_IO_H

#include <stdint.h>

#include "core/internal.h"
#include "moemlora/backbone.h"
#include "moemlora/backbones.h"

/* Option words of a built-in: 2 + 32 CIN layers at most. */
#define MML__BACKBONE_MAX_WORDS 34

/* Storage for decoded options (they point into it). */
typedef struct mml__backbone_saved_options {
    mml_dcn_options dcn;
    mml_autoint_options autoint;
    mml_xdeepfm_options xdeepfm;
    mml_fibinet_options fibinet;
    int32_t layer_sizes[MML__BACKBONE_MAX_WORDS];
} mml__backbone_saved_options;

/* A built-in's options (NULL: defaults) as words (MML__BACKBONE_MAX_WORDS room). */
int mml__backbone_options_encode(mml_ctx *ctx, const char *type, const void *options,
                                 int32_t *words, int32_t *n);
/* Words back into an options struct in *out; *options points at it, or is
 * NULL for a type without options. MML_ECORRUPT for a wrong count. */
int mml__backbone_options_decode(mml_ctx *ctx, const char *type, const int32_t *words, int32_t n,
                                 mml__backbone_saved_options *out, const void **options);

/* Whether bb is a built-in type, and its option words (kept from create). */
int mml__backbone_is_builtin(const mml_backbone *bb);
const int32_t *mml__backbone_option_words(const mml_backbone *bb, int32_t *n);
/* A registered backbone's own state through its save / load callbacks;
 * MML_OK doing nothing when the callback is absent (or for a built-in). */
int mml__backbone_save_state(mml_backbone *bb, mml_write_fn write, void *user);
int mml__backbone_load_state(mml_backbone *bb, mml_read_fn read, void *user);
/* Whether a registered backbone has a load callback. */
int mml__backbone_has_load(const mml_backbone *bb);

#endif
