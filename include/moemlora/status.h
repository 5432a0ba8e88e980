/* libmoemlora: status codes.
 *
 * Every fallible function returns int: 0 (MML_OK) on success, a negative
 * MML_E* code otherwise. The values are pinned forever; new codes are only
 * appended. The context that was passed to the failing call keeps a detailed
 * message (mml_ctx_last_error()).
 */
#ifndef MOEMLORA_STATUS_H
#define MOEMLORA_STATUS_H

#include "export.h"

typedef enum mml_status {
    MML_OK = 0,
    MML_EINVAL = -1,       /* an argument is invalid (NULL, out of range, bad option) */
    MML_ENOMEM = -2,       /* the allocator returned NULL */
    MML_ERANGE = -3,       /* an id, domain or index lies outside its table */
    MML_ESHAPE = -4,       /* shapes or strides do not fit together */
    MML_ENONFINITE = -5,   /* NaN or infinity where a finite number is required */
    MML_EIO = -6,          /* a file could not be opened, read or written */
    MML_EPARSE = -7,       /* malformed text input (message gives file:line:column) */
    MML_ESTATE = -8,       /* the call is not valid in the object's current state */
    MML_EVERSION = -9,     /* a struct, table or file version is not supported */
    MML_EEXIST = -10,      /* the name is already registered */
    MML_ENOTFOUND = -11,   /* no such name, column or file */
    MML_ECANCELED = -12,   /* a callback asked to stop */
    MML_ECALLBACK = -13,   /* a user callback returned an error */
    MML_EUNSUPPORTED = -14, /* valid but not implemented for this configuration */
    MML_EFORMAT = -15,     /* a binary file is corrupt or not of this format */
    MML_EGRADIENT = -16    /* a gradient check found a mismatch */
} mml_status;

MML_BEGIN_DECLS

/* Short static description of a status code; never NULL. */
MML_API const char *mml_status_str(int status);

MML_END_DECLS

#endif
