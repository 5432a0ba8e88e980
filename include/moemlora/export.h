/**
 * @file
 * libmoemlora: symbol export and C++ linkage helpers.
 */
#ifndef MOEMLORA_EXPORT_H
#define MOEMLORA_EXPORT_H

#if defined(MML_BUILDING_LIBRARY) && defined(__GNUC__)
/** Marks a public function: default visibility while the library itself is
 *  built (MML_BUILDING_LIBRARY with GCC or Clang), empty for applications. */
#define MML_API __attribute__((visibility("default")))
#else
/** Marks a public function; empty outside the library's own build. */
#define MML_API
#endif

#ifdef __cplusplus
/** Opens C linkage for the declarations that follow (C++ only). */
#define MML_BEGIN_DECLS extern "C" {
/** Closes the block that MML_BEGIN_DECLS opened (C++ only). */
#define MML_END_DECLS }
#else
/** Opens C linkage for the declarations that follow (empty in C). */
#define MML_BEGIN_DECLS
/** Closes the block that MML_BEGIN_DECLS opened (empty in C). */
#define MML_END_DECLS
#endif

#endif
