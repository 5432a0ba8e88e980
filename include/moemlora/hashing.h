/**
 * @file
 * libmoemlora: feature hashing of raw ids into embedding rows.
 *
 * mml_hash_id maps a 64-bit raw id (a user id, an item id, the 64-bit hash
 * of a string, ...) to a bucket in [0, n_buckets), seeded, with a fixed
 * formula that is the same on every platform, compiler and run, so serving
 * code in another language can reproduce it exactly. All arithmetic is on
 * unsigned 64-bit integers modulo 2^64:
 *
 *     x = (raw_id XOR seed) + 0x9E3779B97F4A7C15
 *     x = (x XOR (x >> 30)) * 0xBF58476D1CE4E5B9
 *     x = (x XOR (x >> 27)) * 0x94D049BB133111EB
 *     x =  x XOR (x >> 31)
 *     bucket = ((x >> 32) * n_buckets) >> 32
 *
 * The first four lines are one output of SplitMix64 (Steele, Lea, Flood
 * 2014; the generator that seeds xoshiro) whose state was raw_id XOR seed:
 * with raw_id = seed = 0, x = 0xE220A8397B1DCDAF, SplitMix64's first output
 * for seed 0. The last line is Lemire's multiply-shift reduction of the high
 * 32 bits (no modulo bias beyond 2^-32 per bucket, no division).
 * n_buckets = 0 gives 0. The library's test pins several values.
 *
 * Collisions are not detected: distinct raw ids that land in the same bucket
 * share the embedding row (and its gradient) -- the hashing trick. With n
 * distinct ids in B buckets, expect about n (n - 1) / (2 B) colliding pairs;
 * choose B well above the number of ids that matter, and change the seed to
 * get an independent assignment. Keep the seed with the model (the saved
 * model's schema carries it) so training and serving agree.
 *
 * mml_hash_string maps a string (its bytes, no terminator, no encoding or
 * case folding) to a bucket: the 64-bit XXH3 hash with seed 0 (xxHash 0.8,
 * XXH3_64bits(s, len); the function's output is fixed by the XXH3
 * specification), then mml_hash_id with the caller's seed:
 *
 *     bucket = mml_hash_id(XXH3_64bits(s, len), seed, n_buckets)
 *
 * In Python, with the xxhash package: mml_hash_id(xxhash.xxh3_64_intdigest(s),
 * seed, n_buckets). XXH3_64bits of "", "a", "abc" and "hello" is
 * 0x2D06800538D394C2, 0xE6C632B61E964E1F, 0x78AF5F94892F3950 and
 * 0x9555E8555C62DCFD (the values other XXH3 implementations publish; the
 * library's test checks them), so for example mml_hash_string("abc", 3, 0,
 * 1000) = mml_hash_id(0x78AF5F94892F3950, 0, 1000) = 464. Hashed CSV
 * columns (mml_csv_options.hashed_columns) use this function.
 */
#ifndef MOEMLORA_HASHING_H
#define MOEMLORA_HASHING_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"

MML_BEGIN_DECLS

/** The bucket of raw_id, as above. Pure function: thread-safe.
 *  @param raw_id the raw id.
 *  @param seed the hashing seed (keep it with the model).
 *  @param n_buckets the number of buckets; 0 gives 0.
 *  @return the bucket, in [0, n_buckets) (0 when n_buckets is 0). */
MML_API uint32_t mml_hash_id(uint64_t raw_id, uint64_t seed, uint32_t n_buckets);

/** out[i] = mml_hash_id(raw[i], seed, n_buckets) for i < n, as embedding ids.
 *  Thread-safe (no context, no state).
 *  @param raw n raw ids, read during the call; may be NULL when n is 0.
 *  @param n the number of ids; 0 writes nothing.
 *  @param seed the hashing seed.
 *  @param n_buckets the number of buckets, 1..INT32_MAX (the ids must fit
 *         in int32).
 *  @param out receives n ids (caller's memory); may be NULL when n is 0.
 *  @return MML_OK; MML_ESHAPE for n < 0; MML_EINVAL for n_buckets outside
 *  [1, INT32_MAX] (checked even when n is 0) or a NULL raw or out with
 *  n > 0. Nothing is written on failure. No context: no error message. */
MML_API int mml_hash_ids(const uint64_t *raw, int64_t n, uint64_t seed, uint32_t n_buckets,
                         int32_t *out);

/** The bucket of a string: mml_hash_id(XXH3_64bits(s, len), seed,
 *  n_buckets), as in the file description. Pure function: thread-safe.
 *  @param s the string's bytes (read during the call; no NUL needed); may
 *         be NULL when len is 0.
 *  @param len the number of bytes.
 *  @param seed the hashing seed (keep it with the model).
 *  @param n_buckets the number of buckets; 0 gives 0.
 *  @return the bucket, in [0, n_buckets) (0 when n_buckets is 0). */
MML_API uint32_t mml_hash_string(const char *s, size_t len, uint64_t seed, uint32_t n_buckets);

MML_END_DECLS

#endif
