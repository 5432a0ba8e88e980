/* mml-predict: probabilities for CSV rows from a saved model.
 *
 * Reads rows with the training columns (header on line 1, label optional)
 * from a file or standard input, in batches (never the whole input), and
 * writes one probability per line, in input order. Lines are split with
 * mml_csv_split_line() and mapped through the model's saved schema by
 * mml_session_predict_raw(), so a row means what it meant to the CSV reader
 * at training time. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moemlora/moemlora.h>

/* One input line of the batch: its text, then room to unquote its cells. */
typedef struct slot {
    char *buf;
    size_t cap;
    int64_t line_no;
    int64_t n_cells; /* from mml_csv_split_line(): < 0 bad quoting */
    int32_t quote_col; /* 1-based column of a quoting error */
} slot;

typedef struct prog {
    const char *in_name, *out_name; /* "-" for the standard streams */
    FILE *out;
    int skip_bad;
    int64_t n_bad;
    int32_t nc;
    char **names;
} prog;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mml-predict --model FILE [--input FILE] [--output FILE] [--skip-bad-rows]\n"
            "                   [--batch N] [--blis-arch NAME|auto]\n"
            "Reads CSV rows with the training columns (header on line 1, label optional) from\n"
            "--input (default: standard input) and writes P(click) of each row, one a line\n"
            "(\"%%.9g\"), in input order, to --output (default: standard output).\n"
            "  --batch N        rows predicted at once (1024)\n"
            "  --skip-bad-rows  write \"nan\" for a row that cannot be served and go on\n"
            "                   (default: stop at the first one with exit status 1)\n"
            "  --blis-arch      BLIS kernels (auto: the fastest this CPU runs, unless\n"
            "                   BLIS_ARCH_TYPE is set)\n"
            "Exit status: 0 done, 1 a bad row or an error, 2 a usage error.\n");
}

static void print_warning(void *user, int level, const char *message)
{
    (void)user;
    if (level == MML_LOG_WARN)
        fprintf(stderr, "mml-predict: %s\n", message);
}

/* A bad row: its message, then "nan" (--skip-bad-rows) or the end. Returns
 * 0 to go on, 1 to stop. */
static int bad_row(prog *p, int64_t line, int32_t col, const char *what, const char *v,
                   size_t len)
{
    const char *name = col >= 1 && col <= p->nc ? p->names[col - 1] : NULL;
    fprintf(stderr, "%s:%lld:%d: ", p->in_name, (long long)line, (int)col);
    if (name)
        fprintf(stderr, "field '%s': ", name);
    fprintf(stderr, "%s", what);
    if (v)
        fprintf(stderr, " \"%.*s%s\"", (int)(len > 60 ? 60 : len), v, len > 60 ? "..." : "");
    fputc('\n', stderr);
    if (!p->skip_bad)
        return 1;
    p->n_bad++;
    return fputs("nan\n", p->out) < 0 ? -1 : 0;
}

/* Predicts the batch's n lines and writes their lines of output. Returns 0,
 * 1 to stop at a bad row, -1 for a write error or a failed call. */
static int flush_batch(prog *p, mml_session *s, mml_ctx *ctx, const slot *slots, int64_t n,
                       const char **vals, const size_t *lens, float *prob, int32_t *st,
                       int32_t *bc)
{
    int64_t good = 0;
    for (int64_t i = 0; i < n; i++)
        good += slots[i].n_cells == p->nc;
    if (good > 0 && mml_session_predict_raw(s, good, vals, lens, prob, st, bc) < 0) {
        fprintf(stderr, "mml-predict: %s\n", mml_ctx_last_error(ctx));
        return -1;
    }
    for (int64_t i = 0, j = 0; i < n; i++) {
        const slot *r = &slots[i];
        char what[128];
        int rc = 0;
        if (r->n_cells < 0) {
            rc = bad_row(p, r->line_no, r->quote_col, "bad quoting (RFC 4180)", NULL, 0);
        } else if (r->n_cells < p->nc) {
            snprintf(what, sizeof what, "missing: the header has %d fields, this row %lld",
                     (int)p->nc, (long long)r->n_cells);
            rc = bad_row(p, r->line_no, (int32_t)r->n_cells + 1, what, NULL, 0);
        } else if (r->n_cells > p->nc) {
            snprintf(what, sizeof what, "unexpected field %d: the header has %d fields",
                     (int)p->nc + 1, (int)p->nc);
            rc = bad_row(p, r->line_no, p->nc + 1, what, NULL, 0);
        } else if (st[j] != MML_OK) {
            int32_t c = bc[j];
            const char *why = st[j] == MML_EPARSE   ? "value does not parse:"
                              : st[j] == MML_ERANGE ? "value unknown to the model (a domain, or "
                                                      "an id of a field without an "
                                                      "out-of-vocabulary id):"
                                                    : mml_status_str(st[j]);
            rc = bad_row(p, r->line_no, c + 1, why, vals[j * p->nc + c], lens[j * p->nc + c]);
            j++;
        } else {
            rc = fprintf(p->out, "%.9g\n", (double)prob[j++]) < 0 ? -1 : 0;
        }
        if (rc < 0)
            fprintf(stderr, "mml-predict: %s: write error: %s\n", p->out_name, strerror(errno));
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Reads a line without its line end into *line; -1 at the end of input. */
static ssize_t read_line(FILE *in, char **line, size_t *cap, int64_t line_no)
{
    ssize_t len = getline(line, cap, in);
    if (len < 0)
        return -1;
    if (len > 0 && (*line)[len - 1] == '\n')
        len--;
    if (len > 0 && (*line)[len - 1] == '\r')
        len--;
    if (line_no == 1 && len >= 3 && !memcmp(*line, "\xEF\xBB\xBF", 3)) {
        memmove(*line, *line + 3, (size_t)len - 3);
        len -= 3;
    }
    (*line)[len] = '\0';
    return len;
}

static int run(prog *p, mml_ctx *ctx, mml_session *s, FILE *in, int64_t batch)
{
    char delim = (char)mml_session_delimiter(s);
    char *line = NULL;
    size_t cap = 0;
    int64_t line_no = 1;
    int status = 1;
    ssize_t len = read_line(in, &line, &cap, 1);
    if (len < 0) {
        fprintf(stderr, "%s:1:1: empty input: expected a header row\n", p->in_name);
        free(line);
        return 1;
    }
    /* The header: names for the binding and the messages. */
    const char **hc = malloc(sizeof *hc * ((size_t)len + 1));
    size_t *hl = malloc(sizeof *hl * ((size_t)len + 1));
    char *hs = malloc((size_t)len + 1);
    int32_t qc = 0;
    int64_t n = hc && hl && hs ? mml_csv_split_line(line, (size_t)len, delim, len + 1, hc, hl, hs, &qc)
                               : MML_ENOMEM;
    if (n < 0)
        fprintf(stderr, "%s:1:%d: header: %s\n", p->in_name, (int)qc,
                n == MML_EPARSE ? "bad quoting (RFC 4180)" : mml_status_str((int)n));
    p->nc = n > 0 ? (int32_t)n : 0;
    p->names = calloc((size_t)(p->nc > 0 ? p->nc : 1), sizeof *p->names);
    for (int32_t c = 0; n > 0 && c < p->nc; c++)
        if (!p->names || !(p->names[c] = strndup(hc[c], hl[c])))
            n = MML_ENOMEM;
    free(hc), free(hl), free(hs);
    slot *slots = calloc((size_t)batch, sizeof *slots);
    const char **vals = malloc(sizeof *vals * (size_t)(batch * p->nc));
    size_t *lens = malloc(sizeof *lens * (size_t)(batch * p->nc));
    float *prob = malloc(sizeof *prob * (size_t)batch);
    int32_t *st = malloc(sizeof *st * (size_t)batch), *bc = malloc(sizeof *bc * (size_t)batch);
    if (n > 0 && (!slots || !vals || !lens || !prob || !st || !bc)) {
        n = MML_ENOMEM;
        fprintf(stderr, "mml-predict: out of memory\n");
    }
    if (n > 0 && mml_session_bind_columns(s, p->nc, (const char *const *)p->names) < 0) {
        fprintf(stderr, "%s:1: %s\n", p->in_name, mml_ctx_last_error(ctx));
        n = -1;
    }
    int64_t nb = 0, good = 0;
    int rc = n > 0 ? 0 : 1;
    while (rc == 0) {
        len = read_line(in, &line, &cap, ++line_no);
        if (len < 0 || nb == batch) {
            rc = flush_batch(p, s, ctx, slots, nb, vals, lens, prob, st, bc);
            nb = good = 0;
            if (len < 0 || rc != 0)
                break;
        }
        if (len == 0)
            continue; /* blank lines are no rows, as for the CSV reader */
        slot *r = &slots[nb++];
        if (r->cap < 2 * (size_t)len + 1) {
            char *b = realloc(r->buf, 2 * (size_t)len + 1);
            if (!b) {
                fprintf(stderr, "mml-predict: out of memory\n");
                rc = -1;
                break;
            }
            r->buf = b;
            r->cap = 2 * (size_t)len + 1;
        }
        memcpy(r->buf, line, (size_t)len);
        r->line_no = line_no;
        /* The text stays in the slot until the batch is predicted; quoted
         * cells are unescaped behind it. */
        r->n_cells = mml_csv_split_line(r->buf, (size_t)len, delim, p->nc, vals + good * p->nc,
                                        lens + good * p->nc, r->buf + len, &r->quote_col);
        good += r->n_cells == p->nc;
    }
    if (rc == 0 && ferror(in)) {
        fprintf(stderr, "mml-predict: %s: read error\n", p->in_name);
        rc = -1;
    }
    if (rc == 0)
        status = 0;
    for (int64_t i = 0; slots && i < batch; i++)
        free(slots[i].buf);
    free(slots), free(vals), free(lens), free(prob), free(st), free(bc), free(line);
    return status;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *input = NULL, *output = NULL, *arch = NULL;
    prog p = {0};
    long long batch = 1024;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(o, "--skip-bad-rows")) {
            p.skip_bad = 1;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!v || (strcmp(o, "--model") && strcmp(o, "--input") && strcmp(o, "--output") &&
                   strcmp(o, "--batch") && strcmp(o, "--blis-arch"))) {
            fprintf(stderr, "mml-predict: %s: unknown option or missing value\n", o);
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(o, "--model"))
            model_path = v;
        else if (!strcmp(o, "--input"))
            input = v;
        else if (!strcmp(o, "--output"))
            output = v;
        else if (!strcmp(o, "--blis-arch"))
            arch = v;
        else if (errno = 0, batch = strtoll(v, &end, 10), errno || *end || end == v || batch < 1 ||
                 batch > (1 << 24)) {
            fprintf(stderr, "mml-predict: invalid value '%s' for --batch (1 .. 2^24)\n", v);
            usage(stderr);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "mml-predict: --model is required\n");
        usage(stderr);
        return 2;
    }
    /* Before the first context: BLIS fixes its kernels when it initialises. */
    int rc = mml_blis_arch_select(arch ? arch : "auto", arch != NULL);
    if (rc < 0) {
        fprintf(stderr, "mml-predict: --blis-arch %s: %s (this CPU's best: %s)\n",
                arch ? arch : "auto", mml_status_str(rc), mml_blis_arch_best());
        return 2;
    }
    p.in_name = input ? input : "-";
    p.out_name = output ? output : "-";
    mml_ctx_options co;
    mml_ctx_options_init(&co);
    co.n_threads = 1;
    co.log = print_warning;
    mml_ctx *ctx = NULL;
    mml_model *m = NULL;
    mml_session *s = NULL;
    mml_session_options so;
    mml_session_options_init(&so);
    so.max_rows = batch;
    if ((rc = mml_ctx_create(&ctx, &co)) < 0) {
        fprintf(stderr, "mml-predict: cannot create a context: %s\n", mml_status_str(rc));
        return 1;
    }
    if ((rc = mml_model_load(&m, ctx, model_path)) < 0 || (rc = mml_model_make_readonly(m)) < 0 ||
        (rc = mml_session_create(&s, ctx, m, &so)) < 0) {
        fprintf(stderr, "mml-predict: %s: %s\n", model_path, mml_ctx_last_error(ctx));
    } else if (mml_session_delimiter(s) < 0) {
        fprintf(stderr, "mml-predict: %s: the model has no schema: it cannot map raw rows\n",
                model_path);
        rc = -1;
    }
    FILE *in = NULL;
    int status = 1;
    if (rc >= 0 && !(in = input ? fopen(input, "r") : stdin))
        fprintf(stderr, "mml-predict: %s: %s\n", input, strerror(errno));
    else if (rc >= 0 && !(p.out = output ? fopen(output, "w") : stdout))
        fprintf(stderr, "mml-predict: %s: %s\n", output, strerror(errno));
    else if (rc >= 0)
        status = run(&p, ctx, s, in, (int64_t)batch);
    if (p.out && fclose(p.out) != 0) {
        fprintf(stderr, "mml-predict: %s: write error: %s\n", p.out_name, strerror(errno));
        status = 1;
    }
    if (in && in != stdin)
        fclose(in);
    if (status == 0 && p.skip_bad)
        fprintf(stderr, "mml-predict: %lld bad rows skipped\n", (long long)p.n_bad);
    for (int32_t c = 0; p.names && c < p.nc; c++)
        free(p.names[c]);
    free(p.names);
    mml_session_destroy(s);
    mml_model_destroy(m);
    mml_ctx_destroy(ctx);
    return status;
}
