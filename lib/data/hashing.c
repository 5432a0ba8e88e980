#include <xxhash.h>

#include "core/internal.h"
#include "moemlora/hashing.h"

uint32_t mml_hash_id(uint64_t raw_id, uint64_t seed, uint32_t n_buckets)
{
    uint64_t x = (raw_id ^ seed) + 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    return (uint32_t)(((x >> 32) * (uint64_t)n_buckets) >> 32);
}

int mml_hash_ids(const uint64_t *raw, int64_t n, uint64_t seed, uint32_t n_buckets, int32_t *out)
{
    if (n < 0)
        return MML_ESHAPE;
    if (n_buckets < 1 || n_buckets > (uint32_t)INT32_MAX || (n > 0 && (!raw || !out)))
        return MML_EINVAL;
    for (int64_t i = 0; i < n; i++)
        out[i] = (int32_t)mml_hash_id(raw[i], seed, n_buckets);
    return MML_OK;
}

uint32_t mml_hash_string(const char *s, size_t len, uint64_t seed, uint32_t n_buckets)
{
    /* XXH3 reads nothing for len 0, but a NULL pointer is not a valid
     * argument to its memcpy-based readers in every build. */
    return mml_hash_id((uint64_t)XXH3_64bits(len ? (const void *)s : "", len), seed, n_buckets);
}
