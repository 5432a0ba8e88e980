/**
 * @file
 * libmoemlora: which BLIS kernels the matrix products run on.
 *
 * BLIS picks a "sub-configuration" (a set of kernels tuned for one CPU
 * family: "skx", "zen3", "haswell", ..., or the portable "generic") when it
 * initialises, from the CPU model or from the environment variable
 * BLIS_ARCH_TYPE (the index of the sub-configuration in BLIS's arch_t enum).
 * A CPU family that a BLIS release does not know gets the generic kernels,
 * which run matrix products 3-5x slower than the kernels the CPU could run.
 *
 * Every context records the sub-configuration in use and the fastest one
 * that this CPU supports and this BLIS build contains (found with CPUID,
 * using BLIS's own feature tests), and warns once through its log callback
 * when BLIS runs generic kernels on a CPU that supports faster ones.
 *
 * The library never changes the environment by itself. A program opts in
 * with mml_blis_arch_select(), which must run before BLIS initialises: at
 * program start, before the first mml_ctx_create() and before other threads
 * exist (it calls setenv()). Results are bitwise reproducible for a fixed
 * sub-configuration; different sub-configurations round differently.
 */
#ifndef MOEMLORA_KERNELS_H
#define MOEMLORA_KERNELS_H

#include <stdint.h>

#include "ctx.h"
#include "export.h"

MML_BEGIN_DECLS

/** The name of the BLIS sub-configuration this context's products run on,
 *  by BLIS's own name (bli_arch_string): for example "skx" or "generic".
 *  Static storage; never NULL ("" when ctx is NULL).
 *  @param ctx the context (recorded at mml_ctx_create()); may be NULL.
 *  @return a static string, valid for the life of the process (also after
 *  mml_ctx_destroy()); never to be freed. */
MML_API const char *mml_ctx_blis_arch(const mml_ctx *ctx);

/** The fastest sub-configuration that this CPU supports and the linked BLIS
 *  build contains. Equal to mml_ctx_blis_arch() when BLIS already runs the
 *  best kernels. Static storage; never NULL ("" when ctx is NULL).
 *  @param ctx the context (recorded at mml_ctx_create()); may be NULL.
 *  @return a static string, valid for the life of the process; never to be
 *  freed. */
MML_API const char *mml_ctx_blis_arch_best(const mml_ctx *ctx);

/** The same as mml_ctx_blis_arch_best() without a context, and without
 *  initialising BLIS (on x86-64; elsewhere the name BLIS chooses itself).
 *  Static storage; never NULL.
 *  @return a static string such as "zen3" or "generic", valid for the life
 *  of the process; never to be freed. */
MML_API const char *mml_blis_arch_best(void);

/** The value of BLIS_ARCH_TYPE for the named sub-configuration: its index in
 *  BLIS's arch_t. BLIS's list holds every name BLIS knows, including ones
 *  this build does not contain; mml_ctx_create() refuses such a
 *  BLIS_ARCH_TYPE (MML_EUNSUPPORTED), so check the name with
 *  mml_blis_arch_select() before putting the value in the environment.
 *  @param name a sub-configuration name, such as "haswell"; borrowed for the
 *         call.
 *  @return the index (>= 0), or -1 when name is NULL or BLIS knows no
 *  sub-configuration of that name. Thread-safe. */
MML_API int32_t mml_blis_arch_type(const char *name);

/** Chooses the BLIS sub-configuration for this process by setting
 *  BLIS_ARCH_TYPE. name is a sub-configuration name ("skx", "zen3",
 *  "haswell", "generic", ...) or "auto" (or NULL) for mml_blis_arch_best().
 *  When replace is 0 and BLIS_ARCH_TYPE is already set, it is left as it is
 *  (a service's own setting wins) and MML_OK is returned.
 *
 *  Call it before BLIS initialises (before the first mml_ctx_create() and
 *  before any other BLIS use in the process) and before other threads start:
 *  afterwards it has no effect on the kernels in use. It calls setenv(), so
 *  it is not thread-safe.
 *
 *  @param name the sub-configuration, "auto" or NULL; borrowed for the call.
 *         Off x86 only "generic" can be named; "auto" there leaves the
 *         choice to BLIS (MML_OK, nothing set).
 *  @param replace nonzero to overwrite an existing BLIS_ARCH_TYPE.
 *  @return MML_OK (also when nothing was changed, as above);
 *  MML_ENOTFOUND for a name that is not a sub-configuration of this BLIS
 *  build that the library can check; MML_EUNSUPPORTED when this CPU cannot
 *  run it; MML_EIO when the environment cannot be changed. No context: no
 *  message. */
MML_API int mml_blis_arch_select(const char *name, int32_t replace);

MML_END_DECLS

#endif
