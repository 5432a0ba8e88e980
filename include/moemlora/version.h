/**
 * @file
 * libmoemlora: version numbers, at compile time and at run time.
 *
 * The macros give the version of the headers a program was compiled with;
 * the functions that of the library it actually runs with, which may be a
 * later release of the same ABI major.
 */
#ifndef MOEMLORA_VERSION_H
#define MOEMLORA_VERSION_H

#include <stdint.h>

#include "export.h"

/** The major version of these headers. */
#define MML_VERSION_MAJOR 1
/** The minor version of these headers. */
#define MML_VERSION_MINOR 3
/** The patch version of these headers. */
#define MML_VERSION_PATCH 0
/** MAJOR * 10000 + MINOR * 100 + PATCH, as mml_version_number() returns it. */
#define MML_VERSION_NUMBER (MML_VERSION_MAJOR * 10000 + MML_VERSION_MINOR * 100 + MML_VERSION_PATCH)

MML_BEGIN_DECLS

/** "MAJOR.MINOR.PATCH" of the library actually linked; static storage.
 *  @return a static string (never NULL, never to be freed). Thread-safe. */
MML_API const char *mml_version_string(void);
/** MML_VERSION_NUMBER of the library actually linked.
 *  @return MAJOR * 10000 + MINOR * 100 + PATCH of the running library; compare
 *  it with MML_VERSION_NUMBER to detect a mismatch. Thread-safe. */
MML_API uint32_t mml_version_number(void);

MML_END_DECLS

#endif
