#include <math.h>

#include "core/internal.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void mml__rng_init(mml_rng *rng, uint64_t seed, uint64_t stream)
{
    /* Mix the stream in through its own SplitMix64 output so nearby
     * (seed, stream) pairs give unrelated states. */
    uint64_t t = stream;
    uint64_t x = seed ^ splitmix64(&t);
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&x);
}

double mml__rng_uniform_double(mml_rng *rng)
{
    return (double)(mml__rng_next(rng) >> 11) * 0x1.0p-53;
}

double mml__rng_normal(mml_rng *rng)
{
    double u1 = 1.0 - mml__rng_uniform_double(rng); /* (0, 1] */
    double u2 = mml__rng_uniform_double(rng);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

uint64_t mml__rng_below(mml_rng *rng, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = mml__rng_next(rng);
    while (x >= limit);
    return x % n;
}
