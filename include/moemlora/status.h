/**
 * @file
 * libmoemlora: status codes.
 *
 * Every fallible function returns int: 0 (MML_OK) on success, a negative
 * MML_E* code otherwise. The values are pinned forever; new codes are only
 * appended. The context that was passed to the failing call keeps a detailed
 * message (mml_ctx_last_error()).
 */
#ifndef MOEMLORA_STATUS_H
#define MOEMLORA_STATUS_H

#include "export.h"

/** The status codes that fallible functions return. Pinned forever: a value
 *  never changes its number, and new codes are only appended. */
typedef enum mml_status {
    /** Success. */
    MML_OK = 0,
    /** An argument is invalid (NULL, out of range, bad option). */
    MML_EINVAL = -1,
    /** The allocator returned NULL. */
    MML_ENOMEM = -2,
    /** An id, domain or index lies outside its table. */
    MML_ERANGE = -3,
    /** Shapes or strides do not fit together. */
    MML_ESHAPE = -4,
    /** NaN or infinity where a finite number is required. */
    MML_ENONFINITE = -5,
    /** A file could not be opened, read or written. */
    MML_EIO = -6,
    /** Malformed text input (the message gives file:line:column). */
    MML_EPARSE = -7,
    /** The call is not valid in the object's current state. */
    MML_ESTATE = -8,
    /** A struct, table or file version is not supported (for a struct: a
     *  struct_size that no release produced). */
    MML_EVERSION = -9,
    /** The name is already registered. */
    MML_EEXIST = -10,
    /** No such name, column or file. */
    MML_ENOTFOUND = -11,
    /** A callback asked to stop. */
    MML_ECANCELED = -12,
    /** A user callback returned an error. */
    MML_ECALLBACK = -13,
    /** Valid but not implemented for this configuration. */
    MML_EUNSUPPORTED = -14,
    /** Not a model file: the magic bytes are wrong (since 1.2; 1.0 and
     *  1.1 returned nothing with this code). */
    MML_EFORMAT = -15,
    /** A gradient check found a mismatch. */
    MML_EGRADIENT = -16,
    /** Since 1.2: the input ends early (a truncated model file). */
    MML_ETRUNCATED = -17,
    /** Since 1.2: a checksum (CRC-32C of a model file section) does not match. */
    MML_ECHECKSUM = -18,
    /** Since 1.2: counts, sizes or offsets in a model file do not add up, or
     *  exceed the file. */
    MML_ECORRUPT = -19,
    /** Since 1.2: a model file holds a required section this release does
     *  not know. */
    MML_ESECTION = -20
} mml_status;

MML_BEGIN_DECLS

/** Short static description of a status code; never NULL.
 *  @param status any int; values that are not MML_* codes give
 *         "unknown status".
 *  @return a static English string such as "invalid argument" (never NULL,
 *  never to be freed; valid for the life of the process). Thread-safe. */
MML_API const char *mml_status_str(int status);

MML_END_DECLS

#endif
