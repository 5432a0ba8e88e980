/* libmoemlora: version numbers, at compile time and at run time. */
#ifndef MOEMLORA_VERSION_H
#define MOEMLORA_VERSION_H

#include <stdint.h>

#include "export.h"

#define MML_VERSION_MAJOR 0
#define MML_VERSION_MINOR 1
#define MML_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH, as mml_version_number() returns it. */
#define MML_VERSION_NUMBER (MML_VERSION_MAJOR * 10000 + MML_VERSION_MINOR * 100 + MML_VERSION_PATCH)

MML_BEGIN_DECLS

/* "MAJOR.MINOR.PATCH" of the library actually linked; static storage. */
MML_API const char *mml_version_string(void);
/* MML_VERSION_NUMBER of the library actually linked. */
MML_API uint32_t mml_version_number(void);

MML_END_DECLS

#endif
