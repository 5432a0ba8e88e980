/* BLIS sub-configuration reporting and selection. With gemm.c, the only
 * translation unit that includes blis.h. */
#include <blis.h>
#include <errno.h>
#include <stdio.h>
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

/* What the CPU can run; all 0 off x86, where BLIS decides alone. */
typedef struct cpu_features {
    int x86, amd, ssse3, avx, avx2_fma, avx512_skx;
} cpu_features;

#ifdef MML_X86
static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

/* The same tests as BLIS's bli_cpuid.c: the instruction sets, and that the
 * operating system saves the wider registers (XCR0). */
static cpu_features detect_cpu(void)
{
    cpu_features f = {0};
#ifdef MML_X86
    f.x86 = 1;
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
#endif
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

static const arch_entry *find_arch(arch_t id)
{
    for (size_t i = 0; i < N_KNOWN; i++)
        if (known_archs[i].id == id)
            return &known_archs[i];
    return NULL;
}

/* Whether BLIS_ARCH_TYPE=id is safe here: MML_ENOTFOUND for a set this
 * library cannot check or this build lacks, MML_EUNSUPPORTED for one the CPU
 * cannot run. Off x86 any index BLIS knows is left to BLIS. */
static int arch_usable(long id, const cpu_features *f)
{
    if (id < 0 || id >= BLIS_NUM_ARCHS)
        return MML_ENOTFOUND;
    if (!f->x86)
        return MML_OK;
    const arch_entry *e = find_arch((arch_t)id);
    if (!e)
        return MML_ENOTFOUND;
    return cpu_can_run(f, e->need) ? MML_OK : MML_EUNSUPPORTED;
}

/* The best sub-configuration by BLIS's preference: AVX-512 skx, then zen3 on
 * AMD or haswell elsewhere, then generic. -1 off x86 (BLIS decides there). */
static int best_arch_id(const cpu_features *f)
{
    if (!f->x86)
        return -1;
    if (f->avx512_skx && find_arch(BLIS_ARCH_SKX))
        return BLIS_ARCH_SKX;
    if (f->avx2_fma) {
        arch_t want = f->amd ? BLIS_ARCH_ZEN3 : BLIS_ARCH_HASWELL;
        if (find_arch(want))
            return (int)want;
        if (find_arch(BLIS_ARCH_HASWELL))
            return BLIS_ARCH_HASWELL;
    }
    return BLIS_ARCH_GENERIC;
}

/* The name of best (from best_arch_id), or BLIS's own choice off x86. */
static const char *best_name(int best)
{
    if (best >= 0)
        return bli_arch_string((arch_t)best);
    bli_init();
    return bli_arch_string(bli_arch_query_id());
}

const char *mml_blis_arch_best(void)
{
    cpu_features f = detect_cpu();
    return best_name(best_arch_id(&f));
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
    cpu_features f = detect_cpu();
    long id;
    if (!name || !strcmp(name, "auto")) {
        id = best_arch_id(&f);
        if (id < 0)
            return MML_OK; /* BLIS's own choice is the best we know */
    } else {
        arch_t a;
        if (!lookup_name(name, &a))
            return MML_ENOTFOUND;
        /* Off x86 only generic is known to be in every build. */
        int rc = f.x86 ? arch_usable(a, &f) : find_arch(a) ? MML_OK : MML_ENOTFOUND;
        if (rc < 0)
            return rc;
        id = (long)a;
    }
    char value[16];
    snprintf(value, sizeof value, "%ld", id);
    if (setenv("BLIS_ARCH_TYPE", value, 1) != 0)
        return MML_EIO;
    return MML_OK;
}

/* BLIS aborts the process on an unknown or unconfigured BLIS_ARCH_TYPE, and
 * a CPU that lacks the instructions dies of SIGILL later: refuse both. */
static int check_arch_env(mml_ctx *ctx, const cpu_features *f, const char *best)
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
                          v, (int)mml_blis_arch_type(best), best);
    int rc = arch_usable(id, f);
    if (rc == MML_ENOTFOUND)
        return mml__error(ctx, MML_EUNSUPPORTED,
                          "BLIS_ARCH_TYPE=%s: sub-configuration '%s' is not one this library "
                          "can check or this BLIS build contains",
                          v, bli_arch_string((arch_t)id));
    if (rc < 0)
        return mml__error(ctx, MML_EUNSUPPORTED,
                          "BLIS_ARCH_TYPE=%s: this CPU cannot run the '%s' kernels (best: %s)", v,
                          bli_arch_string((arch_t)id), best);
    return MML_OK;
}

int mml__blis_arch_init(mml_ctx *ctx)
{
    cpu_features f = detect_cpu();
    int best = best_arch_id(&f);
    int rc = check_arch_env(ctx, &f, best >= 0 ? bli_arch_string((arch_t)best) : "generic");
    if (rc < 0)
        return rc;
    bli_init();
    arch_t in_use = bli_arch_query_id();
    ctx->blis_arch = bli_arch_string(in_use);
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
