/* BLIS sub-configuration reporting and selection. With gemm.c, the only
 * translation unit that includes blis.h. */
#include <blis.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define MML_X86 1
#endif

#include "core/internal.h"

enum cpu_need { NEED_NONE, NEED_SSSE3, NEED_AVX, NEED_AVX2_FMA, NEED_AVX512_SKX };

typedef struct arch_entry {
    arch_t id;
    enum cpu_need need;
} arch_entry;

/* The x86 sub-configurations this BLIS build contains whose CPU
 * requirements we can test (knl and the bulldozer family are left out:
 * they need AVX-512 PF/ER or FMA4, which no current CPU has). */
static const arch_entry known_archs[] = {
#ifdef MML_X86
#ifdef BLIS_CONFIG_SKX
    {BLIS_ARCH_SKX, NEED_AVX512_SKX},
#endif
#ifdef BLIS_CONFIG_ZEN3
    {BLIS_ARCH_ZEN3, NEED_AVX2_FMA},
#endif
#ifdef BLIS_CONFIG_ZEN2
    {BLIS_ARCH_ZEN2, NEED_AVX2_FMA},
#endif
#ifdef BLIS_CONFIG_ZEN
    {BLIS_ARCH_ZEN, NEED_AVX2_FMA},
#endif
#ifdef BLIS_CONFIG_HASWELL
    {BLIS_ARCH_HASWELL, NEED_AVX2_FMA},
#endif
#ifdef BLIS_CONFIG_SANDYBRIDGE
    {BLIS_ARCH_SANDYBRIDGE, NEED_AVX},
#endif
#ifdef BLIS_CONFIG_PENRYN
    {BLIS_ARCH_PENRYN, NEED_SSSE3},
#endif
#endif
    {BLIS_ARCH_GENERIC, NEED_NONE},
};
#define N_KNOWN (sizeof known_archs / sizeof known_archs[0])

#ifdef MML_X86
typedef struct cpu_features {
    int amd, ssse3, avx, avx2_fma, avx512_skx;
} cpu_features;

static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* The same tests as BLIS's bli_cpuid.c: the instruction sets, and that the
 * operating system saves the wider registers (XCR0). */
static cpu_features detect_cpu(void)
{
    cpu_features f = {0};
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return f;
    unsigned max_leaf = a;
    f.amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u; /* "AuthenticAMD" */
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return f;
    int ssse3 = (c >> 9) & 1, fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    f.ssse3 = ssse3;
    uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    int os_ymm = (xcr0 & 0x6) == 0x6, os_zmm = (xcr0 & 0xe6) == 0xe6;
    f.avx = avx && os_ymm;
    if (max_leaf < 7)
        return f;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
        avx512vl = (b >> 31) & 1;
    f.avx2_fma = f.avx && avx2 && fma;
    f.avx512_skx = f.avx2_fma && os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
    return f;
}

static int cpu_can_run(const cpu_features *f, enum cpu_need need)
{
    switch (need) {
    case NEED_NONE:
        return 1;
    case NEED_SSSE3:
        return f->ssse3;
    case NEED_AVX:
        return f->avx;
    case NEED_AVX2_FMA:
        return f->avx2_fma;
    case NEED_AVX512_SKX:
        return f->avx512_skx;
    }
    return 0;
}

static int contains_arch(arch_t id)
{
    for (size_t i = 0; i < N_KNOWN; i++)
        if (known_archs[i].id == id)
            return 1;
    return 0;
}
#endif

static const arch_entry *find_arch(arch_t id)
{
    for (size_t i = 0; i < N_KNOWN; i++)
        if (known_archs[i].id == id)
            return &known_archs[i];
    return NULL;
}

/* The best sub-configuration by BLIS's preference: AVX-512 skx, then zen3 on
 * AMD or haswell elsewhere, then generic. -1 off x86 (BLIS decides there). */
static int best_arch_id(void)
{
#ifdef MML_X86
    cpu_features f = detect_cpu();
    if (f.avx512_skx && contains_arch(BLIS_ARCH_SKX))
        return BLIS_ARCH_SKX;
    if (f.avx2_fma) {
        arch_t want = f.amd ? BLIS_ARCH_ZEN3 : BLIS_ARCH_HASWELL;
        if (contains_arch(want))
            return (int)want;
        if (contains_arch(BLIS_ARCH_HASWELL))
            return BLIS_ARCH_HASWELL;
    }
    return BLIS_ARCH_GENERIC;
#else
    return -1;
#endif
}

const char *mml_blis_arch_best(void)
{
    int id = best_arch_id();
    if (id < 0) {
        bli_init();
        return bli_arch_string(bli_arch_query_id());
    }
    return bli_arch_string((arch_t)id);
}

static int lookup_name(const char *name, arch_t *out)
{
    for (int i = 0; i < BLIS_NUM_ARCHS; i++)
        if (!strcmp(name, bli_arch_string((arch_t)i))) {
            *out = (arch_t)i;
            return 1;
        }
    return 0;
}

int32_t mml_blis_arch_type(const char *name)
{
    arch_t a;
    return name && lookup_name(name, &a) ? (int32_t)a : -1;
}

int mml_blis_arch_select(const char *name, int32_t replace)
{
    if (!replace && getenv("BLIS_ARCH_TYPE"))
        return MML_OK;
    int id;
    if (!name || !strcmp(name, "auto")) {
        id = best_arch_id();
        if (id < 0)
            return MML_OK; /* BLIS's own choice is the best we know */
    } else {
        arch_t a;
        const arch_entry *e = lookup_name(name, &a) ? find_arch(a) : NULL;
        if (!e)
            return MML_ENOTFOUND;
#ifdef MML_X86
        cpu_features f = detect_cpu();
        if (!cpu_can_run(&f, e->need))
            return MML_EUNSUPPORTED;
#endif
        id = (int)a;
    }
    char value[16];
    snprintf(value, sizeof value, "%d", id);
    if (setenv("BLIS_ARCH_TYPE", value, 1) != 0)
        return MML_EIO;
    return MML_OK;
}

/* BLIS aborts the process on an unknown or unconfigured BLIS_ARCH_TYPE, and
 * a CPU that lacks the instructions dies of SIGILL later: refuse both. */
static int check_arch_env(mml_ctx *ctx)
{
    const char *v = getenv("BLIS_ARCH_TYPE");
    if (!v)
        return MML_OK;
    char *end;
    errno = 0;
    long id = strtol(v, &end, 10);
    if (errno || end == v || *end || id < 0 || id >= BLIS_NUM_ARCHS)
        return mml__error(ctx, MML_EUNSUPPORTED,
                          "BLIS_ARCH_TYPE=%s: expected the index of a BLIS sub-configuration "
                          "(for example %d for %s)",
                          v, best_arch_id() < 0 ? BLIS_ARCH_GENERIC : best_arch_id(),
                          mml_blis_arch_best());
    const arch_entry *e = find_arch((arch_t)id);
#ifdef MML_X86
    if (!e)
        return mml__error(ctx, MML_EUNSUPPORTED,
                          "BLIS_ARCH_TYPE=%s: sub-configuration '%s' is not one this library "
                          "can check or this BLIS build contains",
                          v, bli_arch_string((arch_t)id));
    cpu_features f = detect_cpu();
    if (!cpu_can_run(&f, e->need))
        return mml__error(ctx, MML_EUNSUPPORTED,
                          "BLIS_ARCH_TYPE=%s: this CPU cannot run the '%s' kernels (best: %s)", v,
                          bli_arch_string((arch_t)id), mml_blis_arch_best());
#else
    (void)e;
#endif
    return MML_OK;
}

int mml__blis_arch_init(mml_ctx *ctx)
{
    int rc = check_arch_env(ctx);
    if (rc < 0)
        return rc;
    bli_init();
    arch_t in_use = bli_arch_query_id();
    ctx->blis_arch = bli_arch_string(in_use);
    int best = best_arch_id();
    ctx->blis_arch_best = best < 0 ? ctx->blis_arch : bli_arch_string((arch_t)best);
    if (in_use == BLIS_ARCH_GENERIC && best >= 0 && best != BLIS_ARCH_GENERIC)
        mml__log(ctx, MML_LOG_WARN,
                 "BLIS runs its generic kernels, but this CPU supports '%s', whose matrix "
                 "products are several times faster: set BLIS_ARCH_TYPE=%d in the environment, "
                 "or call mml_blis_arch_select(\"auto\", 0) before the first context",
                 ctx->blis_arch_best, best);
    return MML_OK;
}

const char *mml_ctx_blis_arch(const mml_ctx *ctx) { return ctx ? ctx->blis_arch : ""; }

const char *mml_ctx_blis_arch_best(const mml_ctx *ctx) { return ctx ? ctx->blis_arch_best : ""; }
