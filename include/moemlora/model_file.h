/**
 * @file
 * @brief Saving and loading models (the `.mml` model file).
 *
 * A model file holds everything needed to predict from raw input: every
 * model option, the backbone's type name and options (a registered
 * backbone's own state through its save / load callbacks), the data schema
 * when the model has one (column names and roles, vocabularies, hashed
 * fields, domain names), every weight (experts and gate included) and the
 * mixture mode of the final prediction; optionally the trainer's state
 * (mml_trainer_save()). docs/FORMAT.md specifies it byte by byte:
 * little-endian, a magic and a format version, a section table with a
 * CRC-32C per section, payloads aligned to 64 bytes. Files written by this
 * release load in every later one.
 *
 * Saving to a path writes a temporary file in the same directory, flushes
 * it to disk and renames it over the old one: a failed write, a full disk
 * or a process killed mid-save never leaves a damaged file under the name
 * and never loses the previous model.
 *
 * Loading validates everything before use and never reads outside the
 * input. Each kind of damage has its own status code: MML_EFORMAT (not a
 * model file: wrong magic), MML_EVERSION (a newer major format version),
 * MML_ETRUNCATED (the file ends early), MML_ECHECKSUM (a section's CRC-32C
 * does not match), MML_ECORRUPT (counts, sizes or offsets that do not add up
 * or exceed the file), MML_ESECTION (a required section this release does
 * not know), MML_ENOTFOUND (the backbone type is neither built in nor
 * registered on the context). Unknown optional sections are skipped.
 *
 * A registered backbone is re-created by its create callback with the
 * saved configuration and cfg->options NULL, then handed back what its save
 * callback wrote through its load callback, then its parameters are filled
 * from the file: register it on the loading context first.
 *
 * Thread safety: saving reads the model (one thread at a time per context,
 * as always); loading makes a new model on the given context.
 */
#ifndef MOEMLORA_MODEL_FILE_H
#define MOEMLORA_MODEL_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "backbone.h"
#include "ctx.h"
#include "export.h"
#include "model.h"

/** The format version this release writes (docs/FORMAT.md). A file of a
 *  newer major version is refused; a newer minor version loads. */
#define MML_MODEL_FORMAT_MAJOR 1
/** See MML_MODEL_FORMAT_MAJOR. */
#define MML_MODEL_FORMAT_MINOR 0

MML_BEGIN_DECLS

/** Saves a model to a file, atomically (see the file description).
 *  @param model the model. @param path the file; its directory must be
 *  writable (the temporary file is made there).
 *  @return MML_OK; MML_EINVAL for a NULL argument; MML_EIO when a file
 *  cannot be made, written, flushed or renamed (the old file is kept);
 *  MML_ENOMEM; MML_ECALLBACK from a registered backbone's save callback. */
MML_API int mml_model_save(const mml_model *model, const char *path);
/** Saves a model to memory.
 *  @param model the model.
 *  @param data receives the bytes, allocated on the model's context:
 *  release them with mml_ctx_free(ctx, *data, *size). NULL on failure.
 *  @param size receives their count (0 on failure).
 *  @return the codes of mml_model_save() except MML_EIO. */
MML_API int mml_model_save_mem(const mml_model *model, void **data, size_t *size);
/** Saves a model through a write callback, called with consecutive pieces
 *  of the file.
 *  @param model the model. @param write the callback; a negative return
 *  stops the save. @param user passed to write.
 *  @return the codes of mml_model_save() except MML_EIO; MML_ECALLBACK when
 *  write returned nonzero. */
MML_API int mml_model_save_cb(const mml_model *model, mml_write_fn write, void *user);

/** Loads a model from a file.
 *  @param out receives the model (release with mml_model_destroy()); NULL
 *  on failure. @param ctx the context it lives on (with the registered
 *  backbones). @param path the file.
 *  @return MML_OK; MML_EINVAL for a NULL argument; MML_EIO when the file
 *  cannot be read; MML_ENOMEM; the codes of the file description. */
MML_API int mml_model_load(mml_model **out, mml_ctx *ctx, const char *path);
/** Loads a model from memory (read during the call only).
 *  @param out receives the model; NULL on failure. @param ctx the context.
 *  @param data the bytes. @param size their count.
 *  @return the codes of mml_model_load() except MML_EIO. */
MML_API int mml_model_load_mem(mml_model **out, mml_ctx *ctx, const void *data, size_t size);
/** Loads a model through a read callback that delivers exactly the bytes
 *  asked for (the header first, then the rest of the file).
 *  @param out receives the model; NULL on failure. @param ctx the context.
 *  @param read the callback; a nonzero return stops the load with
 *  MML_ETRUNCATED. @param user passed to read.
 *  @return the codes of mml_model_load() except MML_EIO. */
MML_API int mml_model_load_cb(mml_model **out, mml_ctx *ctx, mml_read_fn read, void *user);

MML_END_DECLS

#endif
