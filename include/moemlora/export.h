/* libmoemlora: symbol export and C++ linkage helpers. */
#ifndef MOEMLORA_EXPORT_H
#define MOEMLORA_EXPORT_H

#if defined(MML_BUILDING_LIBRARY) && defined(__GNUC__)
#define MML_API __attribute__((visibility("default")))
#else
#define MML_API
#endif

#ifdef __cplusplus
#define MML_BEGIN_DECLS extern "C" {
#define MML_END_DECLS }
#else
#define MML_BEGIN_DECLS
#define MML_END_DECLS
#endif

#endif
