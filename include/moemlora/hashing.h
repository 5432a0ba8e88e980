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
 */
#ifndef MOEMLORA_HASHING_H
#define MOEMLORA_HASHING_H

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

MML_END_DECLS

#endif
