/* BLIS kernel reporting, the generic-kernels warning and the checks on
 * BLIS_ARCH_TYPE. Run with --generic, the process first forces BLIS's
 * generic kernels, as a service on a CPU that BLIS does not know gets them. */
#include <blis.h>

#include "testutil.h"

typedef struct log_record {
    int warnings, errors;
    char last_warning[1024], last_error[1024];
} log_record;

static void record_log(void *user, int level, const char *message)
{
    log_record *r = user;
    if (level == MML_LOG_WARN) {
        r->warnings++;
        snprintf(r->last_warning, sizeof r->last_warning, "%s", message);
    } else if (level == MML_LOG_ERROR) {
        r->errors++;
        snprintf(r->last_error, sizeof r->last_error, "%s", message);
    }
}

static int create_logged(mml_ctx **ctx, log_record *r)
{
    memset(r, 0, sizeof *r);
    mml_ctx_options o;
    mml_ctx_options_init(&o);
    o.log = record_log;
    o.log_user = r;
    return mml_ctx_create(ctx, &o);
}

static char saved_env[64];
static int had_env;

static void save_env(void)
{
    const char *v = getenv("BLIS_ARCH_TYPE");
    had_env = v != NULL;
    snprintf(saved_env, sizeof saved_env, "%s", v ? v : "");
}

static void restore_env(void)
{
    if (had_env)
        setenv("BLIS_ARCH_TYPE", saved_env, 1);
    else
        unsetenv("BLIS_ARCH_TYPE");
}

/* Runs first, before anything initialises BLIS in this process: a bad value
 * must be refused before BLIS sees it (BLIS would abort). */
START_TEST(bad_arch_env_is_refused_before_blis_sees_it)
{
    save_env();
    static const char *const bad[] = {"abc", "skx", "", "3x", "-1", "99", "1000000000000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("BLIS_ARCH_TYPE", bad[i], 1);
        mml_ctx *ctx = (mml_ctx *)&ctx;
        log_record r;
        ck_assert_int_eq(create_logged(&ctx, &r), MML_EUNSUPPORTED);
        ck_assert_ptr_null(ctx);
        ck_assert_int_eq(r.errors, 1);
        ck_assert_msg(strstr(r.last_error, "BLIS_ARCH_TYPE=") != NULL, "%s", r.last_error);
    }
    /* knl: in the BLIS build, but needs AVX-512 PF/ER that no current CPU has. */
    char knl[16];
    snprintf(knl, sizeof knl, "%d", (int)BLIS_ARCH_KNL);
    setenv("BLIS_ARCH_TYPE", knl, 1);
    mml_ctx *ctx = NULL;
    log_record r;
    ck_assert_int_eq(create_logged(&ctx, &r), MML_EUNSUPPORTED);
    ck_assert_msg(strstr(r.last_error, "knl") != NULL, "%s", r.last_error);
    restore_env();
}
END_TEST

START_TEST(context_reports_kernels_in_use_and_best)
{
    mml_ctx *ctx = NULL;
    log_record r;
    ck_assert_int_eq(create_logged(&ctx, &r), MML_OK);
    const char *in_use = mml_ctx_blis_arch(ctx), *best = mml_ctx_blis_arch_best(ctx);
    ck_assert_str_eq(in_use, bli_arch_string(bli_arch_query_id()));
    ck_assert_str_eq(best, mml_blis_arch_best());
    ck_assert_str_ne(best, "");
    const char *env = getenv("BLIS_ARCH_TYPE");
    if (env)
        ck_assert_str_eq(in_use, bli_arch_string((arch_t)atoi(env)));
    /* The warning: exactly once per context, only for generic-with-better. */
    int expect = !strcmp(in_use, "generic") && strcmp(best, "generic") != 0;
    ck_assert_int_eq(r.warnings, expect);
    if (expect) {
        char want[64];
        arch_t id = 0;
        for (int i = 0; i < BLIS_NUM_ARCHS; i++)
            if (!strcmp(bli_arch_string((arch_t)i), best))
                id = (arch_t)i;
        snprintf(want, sizeof want, "BLIS_ARCH_TYPE=%d", (int)id);
        ck_assert_msg(strstr(r.last_warning, want) != NULL, "%s", r.last_warning);
        ck_assert_msg(strstr(r.last_warning, best) != NULL, "%s", r.last_warning);
    }
    ck_assert_str_eq(mml_ctx_blis_arch(NULL), "");
    ck_assert_str_eq(mml_ctx_blis_arch_best(NULL), "");
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(select_sets_the_variable_by_name)
{
    save_env();
    ck_assert_int_eq(mml_blis_arch_select("no-such-kernels", 1), MML_ENOTFOUND);
    ck_assert_int_eq(mml_blis_arch_select("knl", 1), MML_ENOTFOUND);
    ck_assert_int_eq(mml_blis_arch_select("generic", 1), MML_OK);
    char want[16];
    snprintf(want, sizeof want, "%d", (int)BLIS_ARCH_GENERIC);
    ck_assert_str_eq(getenv("BLIS_ARCH_TYPE"), want);
    /* replace = 0 keeps what is set. */
    setenv("BLIS_ARCH_TYPE", "12345", 1);
    ck_assert_int_eq(mml_blis_arch_select("auto", 0), MML_OK);
    ck_assert_str_eq(getenv("BLIS_ARCH_TYPE"), "12345");
    unsetenv("BLIS_ARCH_TYPE");
    ck_assert_int_eq(mml_blis_arch_select(NULL, 0), MML_OK);
    const char *v = getenv("BLIS_ARCH_TYPE");
    ck_assert_ptr_nonnull(v);
    ck_assert_str_eq(bli_arch_string((arch_t)atoi(v)), mml_blis_arch_best());
    /* The best one is always selectable by its name. */
    ck_assert_int_eq(mml_blis_arch_select(mml_blis_arch_best(), 1), MML_OK);
    ck_assert_str_eq(bli_arch_string((arch_t)atoi(getenv("BLIS_ARCH_TYPE"))),
                     mml_blis_arch_best());
    restore_env();
}
END_TEST

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--generic") && mml_blis_arch_select("generic", 1) != MML_OK)
        return EXIT_FAILURE;
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("kernels");
    tcase_add_test(tc, bad_arch_env_is_refused_before_blis_sees_it);
    tcase_add_test(tc, context_reports_kernels_in_use_and_best);
    tcase_add_test(tc, select_sets_the_variable_by_name);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
