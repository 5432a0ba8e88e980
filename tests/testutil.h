/* Shared helpers for the Check suites. */
#ifndef MML_TESTUTIL_H
#define MML_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moemlora/moemlora.h>
#include <moemlora/testing.h>

/* An allocator that counts live blocks and can fail the Nth allocation. */
typedef struct counting_allocator {
    mml_allocator base;
    long calls;     /* allocations attempted */
    long fail_at;   /* 1-based call to fail; 0 = never */
    long live;      /* blocks not yet freed */
    long long live_bytes;
} counting_allocator;

static void *counting_alloc(void *user, size_t size, size_t alignment)
{
    counting_allocator *a = user;
    a->calls++;
    if (a->fail_at && a->calls == a->fail_at)
        return NULL;
    size_t rounded = (size + alignment - 1) / alignment * alignment;
    void *p = aligned_alloc(alignment, rounded);
    if (p) {
        a->live++;
        a->live_bytes += (long long)size;
    }
    return p;
}

static void counting_free(void *user, void *ptr, size_t size)
{
    counting_allocator *a = user;
    a->live--;
    a->live_bytes -= (long long)size;
    free(ptr);
}

static inline void counting_allocator_init(counting_allocator *a, long fail_at)
{
    memset(a, 0, sizeof *a);
    a->base.version = MML_ALLOCATOR_VERSION;
    a->base.alloc = counting_alloc;
    a->base.free = counting_free;
    a->base.user = a;
    a->fail_at = fail_at;
}

/* A context with the counting allocator. */
static inline mml_ctx *counting_ctx(counting_allocator *a, long fail_at, uint32_t threads,
                                    uint64_t seed)
{
    counting_allocator_init(a, fail_at);
    mml_ctx_options o;
    mml_ctx_options_init(&o);
    o.allocator = &a->base;
    o.n_threads = threads;
    o.seed = seed;
    mml_ctx *ctx = NULL;
    if (mml_ctx_create(&ctx, &o) != MML_OK)
        return NULL;
    return ctx;
}

static inline mml_ctx *plain_ctx(uint32_t threads, uint64_t seed)
{
    mml_ctx_options o;
    mml_ctx_options_init(&o);
    o.n_threads = threads;
    o.seed = seed;
    mml_ctx *ctx = NULL;
    ck_assert_int_eq(mml_ctx_create(&ctx, &o), MML_OK);
    return ctx;
}

/* Runs one suite and returns the process exit status. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* Runs a suite with a fresh temporary folder whose name goes to dir (cap
 * bytes), removed afterwards with everything the tests left in it. */
static inline int run_suite_in_tmpdir(Suite *s, char *dir, size_t cap, const char *name)
{
    snprintf(dir, cap, "/tmp/mml_test_%s_XXXXXX", name);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    int rc = run_suite(s);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}

#endif
