/* Readers for the official MovieLens ML-100K and ML-1M files. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data_internal.h"

/* ML-1M's occupation codes (its README). */
static const char *const ml1m_occupations[21] = {
    "other",          "academic/educator", "artist",         "clerical/admin",
    "college/grad student", "customer service", "doctor/health care",
    "executive/managerial", "farmer",         "homemaker",      "K-12 student",
    "lawyer",         "programmer",        "retired",        "sales/marketing",
    "scientist",      "self-employed",     "technician/engineer",
    "tradesman/craftsman", "unemployed",   "writer"};

static const char *const age_bands[7] = {"<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"};
static const char *const genders[2] = {"F", "M"};

static int32_t age_band(int64_t age)
{
    return age < 18 ? 0 : age < 25 ? 1 : age < 35 ? 2 : age < 45 ? 3 : age < 50 ? 4 : age < 56 ? 5 : 6;
}

/* ------------------------------------------------------------ tokens */

/* Splits line on sep into at most max tokens; returns the count (max + 1 if more). */
static int split_sep(const char *line, size_t len, const char *sep, size_t seplen, const char **tok,
                     size_t *tlen, int max)
{
    int n = 0;
    size_t i = 0;
    for (;;) {
        if (n == max)
            return max + 1;
        size_t j = i;
        const char *q = NULL;
        while (j + seplen <= len) {
            q = memchr(line + j, sep[0], len - j);
            if (!q || (size_t)(q - line) + seplen > len) {
                q = NULL;
                break;
            }
            if (seplen == 1 || memcmp(q, sep, seplen) == 0)
                break;
            j = (size_t)(q - line) + 1;
            q = NULL;
        }
        size_t e = q ? (size_t)(q - line) : len;
        tok[n] = line + i;
        tlen[n] = e - i;
        n++;
        if (!q)
            return n;
        i = e + seplen;
    }
}

/* A non-negative decimal integer of at most 18 digits. */
static int parse_uint(const char *s, size_t len, int64_t *v)
{
    if (len == 0 || len > 18)
        return 0;
    int64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned)(unsigned char)s[i] - '0';
        if (c > 9)
            return 0;
        x = x * 10 + (int64_t)c;
    }
    *v = x;
    return 1;
}

static int tok_error(mml_ctx *ctx, const char *name, int64_t line, int col, const char *field,
                     const char *expected, const char *tok, size_t tlen)
{
    int n = tlen > 40 ? 40 : (int)tlen;
    return mml__error(ctx, MML_EPARSE, "%s:%lld:%d: field '%s': expected %s, got \"%.*s\"", name,
                      (long long)line, col, field, expected, n, tok);
}

static int lines_error(mml_ctx *ctx, const mml__lines *r, const char *name, int rc)
{
    if (rc == MML_EPARSE)
        return mml__error(ctx, MML_EPARSE, "%s:%lld:1: line longer than %lld bytes", name,
                          (long long)r->line_no, (long long)MML_CSV_MAX_LINE_DEFAULT);
    return rc;
}

/* ------------------------------------------------------------ ratings */

void mml__ml_ratings_free(mml_ctx *ctx, mml__ratings *r)
{
    mml__free(ctx, r->user, (size_t)r->ucap * sizeof *r->user);
    mml__free(ctx, r->item, (size_t)r->icap * sizeof *r->item);
    mml__free(ctx, r->rating, (size_t)r->rcap * sizeof *r->rating);
    memset(r, 0, sizeof *r);
}

int mml__ml_read_ratings(mml_ctx *ctx, const mml__source *src, const char *sep, mml__ratings *out)
{
    static const char *const names[4] = {"user", "item", "rating", "timestamp"};
    memset(out, 0, sizeof *out);
    mml__lines r;
    int rc = mml__lines_open(&r, ctx, src, MML_CSV_MAX_LINE_DEFAULT);
    if (rc < 0)
        return rc;
    size_t seplen = strlen(sep);
    const char *line;
    size_t len;
    for (;;) {
        rc = mml__lines_next(&r, &line, &len);
        if (rc != 1) {
            if (rc == MML_EPARSE)
                rc = lines_error(ctx, &r, src->name, rc);
            break;
        }
        if (len == 0)
            continue;
        const char *tok[4];
        size_t tl[4];
        int n = split_sep(line, len, sep, seplen, tok, tl, 4);
        if (n != 4) {
            rc = mml__error(ctx, MML_EPARSE,
                            "%s:%lld:%d: expected 4 fields (user, item, rating, timestamp), "
                            "found %s",
                            src->name, (long long)r.line_no, n < 4 ? n + 1 : 5,
                            n < 4 ? "fewer" : "more");
            break;
        }
        int64_t v[4];
        int bad = -1;
        for (int k = 0; k < 4 && bad < 0; k++)
            if (!parse_uint(tok[k], tl[k], &v[k]) || (k < 2 && (v[k] < 1 || v[k] > INT32_MAX)) ||
                (k == 2 && (v[k] < 1 || v[k] > 5)))
                bad = k;
        if (bad >= 0) {
            rc = tok_error(ctx, src->name, r.line_no, bad + 1, names[bad],
                           bad == 2   ? "an integer 1..5"
                           : bad == 3 ? "a non-negative integer"
                                      : "a positive integer id",
                           tok[bad], tl[bad]);
            break;
        }
        int64_t k = out->n;
        if (mml__grow(ctx, &out->user, &out->ucap, k + 1, sizeof *out->user) < 0 ||
            mml__grow(ctx, &out->item, &out->icap, k + 1, sizeof *out->item) < 0 ||
            mml__grow(ctx, &out->rating, &out->rcap, k + 1, sizeof *out->rating) < 0) {
            rc = mml__error(ctx, MML_ENOMEM, "out of memory reading %s", src->name);
            break;
        }
        out->user[k] = (int32_t)v[0];
        out->item[k] = (int32_t)v[1];
        out->rating[k] = (int8_t)v[2];
        out->n = k + 1;
    }
    mml__lines_close(&r);
    if (rc < 0) {
        mml__ml_ratings_free(ctx, out);
        return rc;
    }
    if (out->n == 0) {
        mml__ml_ratings_free(ctx, out);
        return mml__error(ctx, MML_EPARSE, "%s: no ratings", src->name);
    }
    return MML_OK;
}

/* ------------------------------------------------------------ users */

typedef struct user_table {
    int64_t n, cap_id, cap_dom;
    int32_t *id;
    int32_t *dom;
} user_table;

static void users_free(mml_ctx *ctx, user_table *u)
{
    mml__free(ctx, u->id, (size_t)u->cap_id * sizeof *u->id);
    mml__free(ctx, u->dom, (size_t)u->cap_dom * sizeof *u->dom);
    memset(u, 0, sizeof *u);
}

/* Reads u.occupation: one name a line, ids in line order. */
static int read_occupations(mml_ctx *ctx, const mml__source *src, mml__vocab *v)
{
    mml__lines r;
    int rc = mml__lines_open(&r, ctx, src, MML_CSV_MAX_LINE_DEFAULT);
    if (rc < 0)
        return rc;
    const char *line;
    size_t len;
    for (;;) {
        rc = mml__lines_next(&r, &line, &len);
        if (rc != 1) {
            if (rc == MML_EPARSE)
                rc = lines_error(ctx, &r, src->name, rc);
            break;
        }
        if (len == 0)
            continue;
        int32_t before = v->n, id;
        if ((rc = mml__vocab_intern(ctx, v, line, len, &id)) < 0) {
            rc = mml__error(ctx, rc, "out of memory reading %s", src->name);
            break;
        }
        if (v->n == before) {
            rc = mml__error(ctx, MML_EPARSE, "%s:%lld:1: occupation '%s' listed twice", src->name,
                            (long long)r.line_no, mml__vocab_str(v, id));
            break;
        }
    }
    mml__lines_close(&r);
    if (rc == 0 && v->n == 0)
        rc = mml__error(ctx, MML_EPARSE, "%s: no occupations", src->name);
    return rc < 0 ? rc : MML_OK;
}

/* Reads the user file; ml1m selects the column order (id::gender::age::occupation::zip). */
static int read_users(mml_ctx *ctx, const mml__source *src, int ml1m, int32_t domain_by,
                      const mml__vocab *occ, user_table *u)
{
    const char *sep = ml1m ? "::" : "|";
    int gcol = ml1m ? 1 : 2, acol = ml1m ? 2 : 1, ocol = 3;
    mml__lines r;
    int rc = mml__lines_open(&r, ctx, src, MML_CSV_MAX_LINE_DEFAULT);
    if (rc < 0)
        return rc;
    const char *line;
    size_t len;
    for (;;) {
        rc = mml__lines_next(&r, &line, &len);
        if (rc != 1) {
            if (rc == MML_EPARSE)
                rc = lines_error(ctx, &r, src->name, rc);
            break;
        }
        if (len == 0)
            continue;
        const char *tok[6];
        size_t tl[6];
        int n = split_sep(line, len, sep, strlen(sep), tok, tl, 5);
        if (n < 4) {
            rc = mml__error(ctx, MML_EPARSE, "%s:%lld:%d: expected 5 fields (%s), found %d",
                            src->name, (long long)r.line_no, n + 1,
                            ml1m ? "id::gender::age::occupation::zip"
                                 : "id|age|gender|occupation|zip",
                            n);
            break;
        }
        int64_t id;
        if (!parse_uint(tok[0], tl[0], &id) || id < 1 || id > INT32_MAX) {
            rc = tok_error(ctx, src->name, r.line_no, 1, "id", "a positive integer id", tok[0],
                           tl[0]);
            break;
        }
        int32_t dom = 0;
        if (domain_by == MML_DOMAIN_BY_GENDER) {
            if (tl[gcol] != 1 || (tok[gcol][0] != 'F' && tok[gcol][0] != 'M')) {
                rc = tok_error(ctx, src->name, r.line_no, gcol + 1, "gender", "F or M", tok[gcol],
                               tl[gcol]);
                break;
            }
            dom = tok[gcol][0] == 'M';
        } else if (domain_by == MML_DOMAIN_BY_AGE) {
            int64_t age;
            if (!parse_uint(tok[acol], tl[acol], &age) || age > 200) {
                rc = tok_error(ctx, src->name, r.line_no, acol + 1, "age", "an age 0..200",
                               tok[acol], tl[acol]);
                break;
            }
            dom = age_band(age);
        } else if (ml1m) {
            int64_t code;
            if (!parse_uint(tok[ocol], tl[ocol], &code) || code > 20) {
                rc = tok_error(ctx, src->name, r.line_no, ocol + 1, "occupation",
                               "an occupation code 0..20", tok[ocol], tl[ocol]);
                break;
            }
            dom = (int32_t)code;
        } else {
            dom = mml__vocab_find(occ, tok[ocol], tl[ocol]);
            if (dom < 0) {
                rc = tok_error(ctx, src->name, r.line_no, ocol + 1, "occupation",
                               "a name listed in u.occupation", tok[ocol], tl[ocol]);
                break;
            }
        }
        if (mml__grow(ctx, &u->id, &u->cap_id, u->n + 1, sizeof *u->id) < 0 ||
            mml__grow(ctx, &u->dom, &u->cap_dom, u->n + 1, sizeof *u->dom) < 0) {
            rc = mml__error(ctx, MML_ENOMEM, "out of memory reading %s", src->name);
            break;
        }
        u->id[u->n] = (int32_t)id;
        u->dom[u->n] = dom;
        u->n++;
    }
    mml__lines_close(&r);
    return rc < 0 ? rc : MML_OK;
}

/* ------------------------------------------------------------ ranks */

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The sorted distinct values of v[0..n) in *out (*n_out of them; capacity n). */
static int distinct(mml_ctx *ctx, const int32_t *v, int64_t n, int32_t **out, int64_t *n_out)
{
    int32_t *s = mml__alloc(ctx, (size_t)n * sizeof *s);
    if (!s)
        return MML_ENOMEM;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_i32);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (k == 0 || s[k - 1] != s[i])
            s[k++] = s[i];
    *out = s;
    *n_out = k;
    return MML_OK;
}

static int64_t find_sorted(const int32_t *s, int64_t n, int32_t x)
{
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (s[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && s[lo] == x ? lo : -1;
}

/* A vocabulary of the decimal strings of sorted ids (id k <-> s[k]). */
static int id_vocab(mml_ctx *ctx, const int32_t *s, int64_t n, mml__vocab **out)
{
    int rc = mml__vocab_create(ctx, out);
    for (int64_t k = 0; k < n && rc == MML_OK; k++) {
        char t[16];
        int len = snprintf(t, sizeof t, "%d", (int)s[k]);
        int32_t id;
        rc = mml__vocab_intern(ctx, *out, t, (size_t)len, &id);
    }
    return rc;
}

/* ------------------------------------------------------------ loader */

int mml_movielens_options_init_sized(mml_movielens_options *out, uint32_t struct_size)
{
    mml_movielens_options full, *o = &full;
    memset(o, 0, sizeof *o);
    o->domain_by = MML_DOMAIN_BY_GENDER;
    o->label_min = 5;
    o->split_seed = 123;
    return mml__init_versioned(out, o, sizeof *o, struct_size, MML__OLDER_SIZES_mml_movielens_options);
}

static char *join(mml_ctx *ctx, const char *dir, const char *file)
{
    size_t a = strlen(dir), b = strlen(file);
    char *p = mml__alloc(ctx, a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, file, b + 1);
    return p;
}

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

typedef struct ml_state {
    char *paths[3]; /* ratings, users, occupations */
    mml__ratings ratings;
    user_table users;
    mml__vocab *occ;
    int32_t *user_ids, *item_ids;
    int64_t n_users, n_items;
    mml__schema *schema;
    mml_dataset *all;
} ml_state;

static void ml_state_free(mml_ctx *ctx, ml_state *st)
{
    for (int k = 0; k < 3; k++)
        mml__strfree(ctx, st->paths[k]);
    mml__free(ctx, st->user_ids, (size_t)st->ratings.n * sizeof(int32_t));
    mml__free(ctx, st->item_ids, (size_t)st->ratings.n * sizeof(int32_t));
    mml__ml_ratings_free(ctx, &st->ratings);
    mml__vocab_destroy(ctx, st->occ);
    users_free(ctx, &st->users);
    mml_dataset_destroy(st->all);
    mml__schema_release(ctx, st->schema);
}

static int ml_build(mml_ctx *ctx, const mml_movielens_options *o, ml_state *st, mml_dataset **train,
                    mml_dataset **val, mml_dataset **test)
{
    int rc;
    int ml1m = 0;
    const char *rname = "u.data", *uname = "u.user";
    st->paths[0] = join(ctx, o->dir, "u.data");
    if (!st->paths[0])
        return mml__error(ctx, MML_ENOMEM, "out of memory");
    if (!file_exists(st->paths[0])) {
        mml__strfree(ctx, st->paths[0]);
        st->paths[0] = join(ctx, o->dir, "ratings.dat");
        if (!st->paths[0])
            return mml__error(ctx, MML_ENOMEM, "out of memory");
        if (!file_exists(st->paths[0]))
            return mml__error(ctx, MML_ENOTFOUND,
                              "%s: neither u.data (ML-100K) nor ratings.dat (ML-1M) found",
                              o->dir);
        ml1m = 1;
        rname = "ratings.dat";
        uname = "users.dat";
    }
    (void)rname;
    st->paths[1] = join(ctx, o->dir, uname);
    if (!st->paths[1])
        return mml__error(ctx, MML_ENOMEM, "out of memory");
    if (!ml1m && o->domain_by == MML_DOMAIN_BY_OCCUPATION) {
        st->paths[2] = join(ctx, o->dir, "u.occupation");
        if (!st->paths[2])
            return mml__error(ctx, MML_ENOMEM, "out of memory");
        if ((rc = mml__vocab_create(ctx, &st->occ)) < 0)
            return mml__error(ctx, rc, "out of memory");
        mml__source s = {st->paths[2], st->paths[2], NULL, 0};
        if ((rc = read_occupations(ctx, &s, st->occ)) < 0)
            return rc;
    }
    mml__source us = {st->paths[1], st->paths[1], NULL, 0};
    if ((rc = read_users(ctx, &us, ml1m, o->domain_by, st->occ, &st->users)) < 0)
        return rc;
    mml__source rs = {st->paths[0], st->paths[0], NULL, 0};
    if ((rc = mml__ml_read_ratings(ctx, &rs, ml1m ? "::" : "\t", &st->ratings)) < 0)
        return rc;

    /* Users by id, checked for duplicates. */
    user_table *u = &st->users;
    int32_t *uid_sorted = NULL;
    int64_t n_uid = 0;
    if (u->n > 0 && (rc = distinct(ctx, u->id, u->n, &uid_sorted, &n_uid)) < 0)
        return mml__error(ctx, rc, "out of memory");
    int32_t *udom = NULL;
    if (rc == MML_OK && u->n > 0) {
        udom = mml__alloc(ctx, (size_t)u->n * sizeof *udom);
        if (!udom)
            rc = mml__error(ctx, MML_ENOMEM, "out of memory");
        else if (n_uid != u->n)
            rc = mml__error(ctx, MML_EPARSE, "%s: a user id is listed twice", st->paths[1]);
        else
            for (int64_t k = 0; k < u->n; k++)
                udom[find_sorted(uid_sorted, n_uid, u->id[k])] = u->dom[k];
    }
    const mml__ratings *ra = &st->ratings;
    int64_t n = ra->n;
    if (rc == MML_OK && (rc = distinct(ctx, ra->user, n, &st->user_ids, &st->n_users)) < 0)
        rc = mml__error(ctx, rc, "out of memory");
    if (rc == MML_OK && (rc = distinct(ctx, ra->item, n, &st->item_ids, &st->n_items)) < 0)
        rc = mml__error(ctx, rc, "out of memory");
    int32_t D = o->domain_by == MML_DOMAIN_BY_GENDER ? 2 : o->domain_by == MML_DOMAIN_BY_AGE ? 7
                : ml1m ? 21 : (st->occ ? st->occ->n : 0);
    /* Domain of each distinct rated user. */
    int32_t *rank_dom = NULL;
    if (rc == MML_OK) {
        rank_dom = mml__alloc(ctx, (size_t)st->n_users * sizeof *rank_dom);
        if (!rank_dom)
            rc = mml__error(ctx, MML_ENOMEM, "out of memory");
    }
    for (int64_t k = 0; rc == MML_OK && k < st->n_users; k++) {
        int64_t at = u->n > 0 ? find_sorted(uid_sorted, n_uid, st->user_ids[k]) : -1;
        if (at < 0)
            rc = mml__error(ctx, MML_EPARSE, "%s: user %d has ratings but is not in %s",
                            st->paths[0], (int)st->user_ids[k], st->paths[1]);
        else
            rank_dom[k] = udom[at];
    }
    mml__free(ctx, uid_sorted, (size_t)u->n * sizeof *uid_sorted);
    mml__free(ctx, udom, (size_t)u->n * sizeof *udom);
    if (rc < 0) {
        mml__free(ctx, rank_dom, (size_t)st->n_users * sizeof *rank_dom);
        return rc;
    }

    /* The schema and all rows. */
    rc = mml__schema_create(ctx, &st->schema, 3, 0, 0, D);
    if (rc == MML_OK) {
        mml__schema *s = st->schema;
        static const char *const fnames[3] = {"user", "item", "domain"};
        for (int f = 0; f < 3 && rc == MML_OK; f++)
            if (!(s->field_names[f] = mml__strdup(ctx, fnames[f])))
                rc = MML_ENOMEM;
        for (int32_t d = 0; d < D && rc == MML_OK; d++) {
            const char *nm = o->domain_by == MML_DOMAIN_BY_GENDER ? genders[d]
                             : o->domain_by == MML_DOMAIN_BY_AGE  ? age_bands[d]
                             : ml1m                               ? ml1m_occupations[d]
                                                                  : mml__vocab_str(st->occ, d);
            if (!(s->domain_names[d] = mml__strdup(ctx, nm)))
                rc = MML_ENOMEM;
        }
        s->field_sizes[0] = (int32_t)st->n_users;
        s->field_sizes[1] = (int32_t)st->n_items;
        s->field_sizes[2] = D;
        s->domain_field = 2;
        s->field_kind[0] = s->field_kind[1] = MML__FIELD_VOCAB;
        s->field_kind[2] = MML__FIELD_DOMAIN;
        if (rc == MML_OK)
            rc = id_vocab(ctx, st->user_ids, st->n_users, &s->field_vocab[0]);
        if (rc == MML_OK)
            rc = id_vocab(ctx, st->item_ids, st->n_items, &s->field_vocab[1]);
        /* Serving maps raw rows user,item,domain[,rating] with the domain
         * given by name ("F", "25-34", "programmer"). */
        if (rc == MML_OK)
            rc = mml__schema_set_roles(ctx, s, MML__SOURCE_MOVIELENS, "rating",
                                       MML__LABEL_RATING_MIN, o->label_min, "domain",
                                       MML__DOMAIN_NAMES, ',', '|');
        if (rc == MML_OK)
            rc = mml__dataset_create(ctx, s, n, &st->all);
        if (rc == MML_ENOMEM)
            rc = mml__error(ctx, rc, "out of memory");
    } else {
        rc = mml__error(ctx, rc, "out of memory");
    }
    if (rc == MML_OK) {
        mml_dataset *all = st->all;
        for (int64_t r = 0; r < n; r++) {
            int64_t ur = find_sorted(st->user_ids, st->n_users, ra->user[r]);
            int64_t ir = find_sorted(st->item_ids, st->n_items, ra->item[r]);
            int32_t d = rank_dom[ur];
            all->ids[3 * r] = (int32_t)ur;
            all->ids[3 * r + 1] = (int32_t)ir;
            all->ids[3 * r + 2] = d;
            all->domain[r] = d;
            all->labels[r] = ra->rating[r] >= o->label_min ? 1.0f : 0.0f;
        }
        all->n_rows = n;
        mml__dataset_count_domains(all);
        rc = mml__split_stratified(ctx, all, o->split_seed, train, val, test);
        if (rc < 0)
            rc = mml__error(ctx, rc, "out of memory splitting the ratings");
    }
    mml__free(ctx, rank_dom, (size_t)st->n_users * sizeof *rank_dom);
    return rc;
}

int mml_movielens_load(mml_ctx *ctx, const mml_movielens_options *opt, mml_dataset **train,
                       mml_dataset **val, mml_dataset **test)
{
    if (mml__loader_start(ctx, train, val, test) < 0)
        return MML_EINVAL;
    if (!train || !val || !test)
        return mml__error(ctx, MML_EINVAL, "mml_movielens_load: NULL output");
    mml_movielens_options o;
    int vrc = MML__COPY_OPTIONS(ctx, &o, opt, mml_movielens_options, "mml_movielens_load");
    if (vrc < 0)
        return vrc;
    if (!o.dir || !o.dir[0])
        return mml__error(ctx, MML_EINVAL, "mml_movielens_load: dir is NULL or empty");
    if (o.domain_by < MML_DOMAIN_BY_GENDER || o.domain_by > MML_DOMAIN_BY_OCCUPATION)
        return mml__error(ctx, MML_EINVAL, "mml_movielens_load: domain_by %d not in 0..2",
                          (int)o.domain_by);
    if (o.label_min < 1 || o.label_min > 5)
        return mml__error(ctx, MML_EINVAL, "mml_movielens_load: label_min %d not in 1..5",
                          (int)o.label_min);
    ml_state st;
    memset(&st, 0, sizeof st);
    int rc = ml_build(ctx, &o, &st, train, val, test);
    ml_state_free(ctx, &st);
    return rc;
}
