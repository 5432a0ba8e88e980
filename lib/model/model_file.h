/* The model file's entry points for the layers above (the trainer adds its
 * state as one more section). Private. */
#ifndef MML_MODEL_FILE_H
#define MML_MODEL_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"
#include "moemlora/model.h"

/* Section ids: four ASCII bytes, read as a little-endian u32. */
#define MML__SECTION_ID(a, b, c, d)                                                                \
    ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define MML__SECTION_TRAINER MML__SECTION_ID('T', 'R', 'N', 'R')
/* Section flag: a reader that does not know the section must refuse the file. */
#define MML__SECTION_REQUIRED 1u

/* Where a file goes or comes from: exactly one of path, memory (mem/mem_size
 * to read; mem_out/mem_out_size to write, allocated on the model's context,
 * released with mml_ctx_free()) or a callback with its user pointer. */
typedef struct mml__io {
    const char *path;
    const void *mem;
    size_t mem_size;
    void **mem_out;
    size_t *mem_out_size;
    mml_write_fn write;
    mml_read_fn read;
    void *user;
} mml__io;

/* One more section for the writer. */
typedef struct mml__section_out {
    uint32_t id;
    uint32_t flags;
    const void *data;
    size_t size;
} mml__section_out;

/* Writes m and the extra sections. */
int mml__model_save_io(const mml_model *m, const mml__section_out *extra, int32_t n_extra,
                       const mml__io *io);
/* Reads a model; with want_id nonzero, *payload receives a copy of that
 * section's payload (on ctx; NULL with size 0 when absent; free with
 * mml__free(ctx, *payload, *payload_size)). */
int mml__model_load_io(mml_model **out, mml_ctx *ctx, const mml__io *io, uint32_t want_id,
                       void **payload, size_t *payload_size);

#endif
