/* The MovieLens reader on the real ML-100K ($MML_DATA_DIR/ml-100k).
 * Exits 77 (skipped) when the folder is absent. */
#include <sys/stat.h>

#include "testutil.h"

static char ml_dir[1024];

static void load(mml_ctx *ctx, int by, int label_min, uint64_t seed, mml_dataset *s[3])
{
    mml_movielens_options o;
    mml_movielens_options_init(&o);
    o.dir = ml_dir;
    o.domain_by = by;
    o.label_min = label_min;
    o.split_seed = seed;
    ck_assert_msg(mml_movielens_load(ctx, &o, &s[0], &s[1], &s[2]) == MML_OK, "%s",
                  mml_ctx_last_error(ctx));
}

static void destroy3(mml_dataset *s[3])
{
    for (int k = 0; k < 3; k++)
        mml_dataset_destroy(s[k]);
}

static int64_t round_half_up(double x) { return (int64_t)floor(x + 0.5); }

/* Every (user, item) once over the three splits; split sizes per domain and
 * class round(0.6 n) / round(0.2 n) / rest (within one row); returns the
 * positives. Fills per-domain totals. */
static int64_t check_splits(mml_dataset *const s[3], int32_t D, int64_t *dom_rows,
                            int64_t *dom_pos, int64_t split_rows[3])
{
    const int U = 943, I = 1682;
    unsigned char *seen = calloc((size_t)U * I, 1);
    int64_t cnt[3][21][2];
    memset(cnt, 0, sizeof cnt);
    int64_t pos = 0;
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(mml_dataset_n_domains(s[k]), D);
        ck_assert_int_eq(mml_dataset_field_size(s[k], 0), U);
        ck_assert_int_eq(mml_dataset_field_size(s[k], 1), I);
        ck_assert_int_eq(mml_dataset_field_size(s[k], 2), D);
        mml_batch_view v;
        ck_assert_int_eq(mml_dataset_view(s[k], 0, mml_dataset_n_rows(s[k]), &v), MML_OK);
        split_rows[k] = v.n_rows;
        int64_t bad = 0; /* one assertion per split: Check's per-assertion cost adds up */
        for (int64_t r = 0; r < v.n_rows; r++) {
            int32_t u = v.ids[3 * r], i = v.ids[3 * r + 1], d = v.domain[r];
            if (!(u >= 0 && u < U && i >= 0 && i < I && d >= 0 && d < D) ||
                v.ids[3 * r + 2] != d || seen[(size_t)u * I + i]++ != 0) {
                bad++;
                continue;
            }
            int y = v.labels[r] > 0.5f;
            cnt[k][d][y]++;
            pos += y;
        }
        ck_assert_int_eq(bad, 0);
    }
    free(seen);
    for (int32_t d = 0; d < D; d++) {
        dom_rows[d] = dom_pos[d] = 0;
        for (int y = 0; y < 2; y++) {
            int64_t n = cnt[0][d][y] + cnt[1][d][y] + cnt[2][d][y];
            ck_assert(llabs(cnt[0][d][y] - round_half_up(0.6 * (double)n)) <= 1);
            ck_assert(llabs(cnt[1][d][y] - round_half_up(0.2 * (double)n)) <= 1);
            ck_assert(llabs(cnt[2][d][y] - (n - round_half_up(0.6 * (double)n) -
                                            round_half_up(0.2 * (double)n))) <= 1);
            dom_rows[d] += n;
            if (y)
                dom_pos[d] += n;
        }
    }
    return pos;
}

START_TEST(ml100k_gender)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3], *t[3];
    load(ctx, MML_DOMAIN_BY_GENDER, 5, 123, s);
    int64_t rows[2], pos[2], split[3];
    int64_t total_pos = check_splits(s, 2, rows, pos, split);
    ck_assert_int_eq(split[0] + split[1] + split[2], 100000);
    ck_assert_int_eq(total_pos, 21201);
    ck_assert_int_eq(rows[0], 25740);
    ck_assert_int_eq(pos[0], 5975);
    ck_assert_int_eq(rows[1], 74260);
    ck_assert_int_eq(pos[1], 15226);
    ck_assert_int_eq(split[0], 60000);
    ck_assert_int_eq(split[1], 20000);
    ck_assert_int_eq(split[2], 20000);
    ck_assert_int_eq(mml_dataset_domain_rows(s[2], 0), 5148);
    ck_assert_int_eq(mml_dataset_domain_rows(s[2], 1), 14852);
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 0), "F");
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 1), "M");
    /* Identical for the same seed, different for another. */
    load(ctx, MML_DOMAIN_BY_GENDER, 5, 123, t);
    for (int k = 0; k < 3; k++) {
        mml_batch_view a, b;
        mml_dataset_view(s[k], 0, mml_dataset_n_rows(s[k]), &a);
        mml_dataset_view(t[k], 0, mml_dataset_n_rows(t[k]), &b);
        ck_assert_int_eq(a.n_rows, b.n_rows);
        ck_assert_int_eq(memcmp(a.ids, b.ids, (size_t)a.n_rows * 12), 0);
        ck_assert_int_eq(memcmp(a.labels, b.labels, (size_t)a.n_rows * 4), 0);
    }
    destroy3(t);
    load(ctx, MML_DOMAIN_BY_GENDER, 5, 124, t);
    mml_batch_view a, b;
    mml_dataset_view(s[2], 0, mml_dataset_n_rows(s[2]), &a);
    mml_dataset_view(t[2], 0, mml_dataset_n_rows(t[2]), &b);
    ck_assert_int_ne(memcmp(a.ids, b.ids, (size_t)a.n_rows * 12), 0);
    destroy3(t);
    destroy3(s);
    /* The >= 4 label: 55.37% positives. */
    load(ctx, MML_DOMAIN_BY_GENDER, 4, 123, s);
    total_pos = check_splits(s, 2, rows, pos, split);
    ck_assert_int_eq(total_pos, 55375);
    destroy3(s);
    mml_ctx_destroy(ctx);
}
END_TEST

START_TEST(ml100k_age_and_occupation)
{
    mml_ctx *ctx = plain_ctx(1, 1);
    mml_dataset *s[3];
    int64_t rows[21], pos[21], split[3];
    load(ctx, MML_DOMAIN_BY_AGE, 5, 7, s);
    ck_assert_int_eq(check_splits(s, 7, rows, pos, split), 21201);
    ck_assert_int_eq(split[0] + split[1] + split[2], 100000);
    for (int d = 0; d < 7; d++)
        ck_assert_int_gt(rows[d], 0);
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 3), "35-44");
    destroy3(s);
    load(ctx, MML_DOMAIN_BY_OCCUPATION, 5, 7, s);
    ck_assert_int_eq(check_splits(s, 21, rows, pos, split), 21201);
    ck_assert_int_eq(split[0] + split[1] + split[2], 100000);
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 0), "administrator");
    ck_assert_str_eq(mml_dataset_domain_name(s[0], 20), "writer");
    destroy3(s);
    mml_ctx_destroy(ctx);
}
END_TEST

int main(void)
{
    const char *root = getenv("MML_DATA_DIR");
    struct stat st;
    snprintf(ml_dir, sizeof ml_dir, "%s/ml-100k", root ? root : "../shared/data");
    char probe[1100];
    snprintf(probe, sizeof probe, "%s/u.data", ml_dir);
    if (stat(probe, &st) != 0) {
        printf("skipped: %s not found (set MML_DATA_DIR to the folder holding ml-100k/)\n", probe);
        return 77;
    }
    Suite *s = suite_create("movielens_real");
    TCase *c = tcase_create("ml100k");
    tcase_set_timeout(c, 300);
    tcase_add_test(c, ml100k_gender);
    tcase_add_test(c, ml100k_age_and_occupation);
    suite_add_tcase(s, c);
    return run_suite(s);
}
