/* serve --model FILE [--threads N] < rows.csv > probabilities: the shape of
 * a prediction service. The model is loaded once and made read-only: all
 * threads share its weights. Each worker thread has its own context and
 * session (the scratch of a forward pass), so predicting takes no lock. The
 * main thread reads CSV rows (header on line 1) in batches, hands a batch to
 * each worker and writes the probabilities in input order. A row that cannot
 * be served gets "nan": a service never dies on one row. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moemlora/moemlora.h>

#define BATCH 1024 /* rows per batch, as mml-predict's default: the same bits */

typedef struct worker {
    mml_session *s;
    mml_ctx *ctx;
    int64_t n, good;               /* lines in the batch, well-formed ones */
    char *text[BATCH];             /* a line, then room to unquote its cells */
    size_t cap[BATCH];
    int64_t cells[BATCH];          /* mml_csv_split_line() of each line */
    const char **vals;             /* BATCH x n_cols cells of the well-formed lines */
    size_t *lens;
    float prob[BATCH];
    int32_t st[BATCH];
} worker;

static int32_t n_cols; /* the header's */
static char delim;     /* the model's */

static void *predict(void *arg)
{
    worker *w = arg;
    if (mml_session_predict_raw(w->s, w->good, w->vals, w->lens, w->prob, w->st, NULL) < 0)
        for (int64_t j = 0; j < w->good; j++)
            w->st[j] = MML_EINVAL; /* the call failed: every row is bad */
    return NULL;
}

/* Reads a line without its line end (and the header's byte order mark). */
static ssize_t read_line(char **line, size_t *cap, int first)
{
    ssize_t len = getline(line, cap, stdin);
    if (len > 0 && (*line)[len - 1] == '\n')
        (*line)[--len] = '\0';
    if (len > 0 && (*line)[len - 1] == '\r')
        (*line)[--len] = '\0';
    if (first && len >= 3 && !memcmp(*line, "\xEF\xBB\xBF", 3))
        memmove(*line, *line + 3, (size_t)(len -= 3) + 1);
    return len;
}

/* Fills w with up to BATCH rows; returns 1 at the end of input. */
static int fill(worker *w, char **line, size_t *cap)
{
    ssize_t len = 0;
    for (w->n = w->good = 0; w->n < BATCH && (len = read_line(line, cap, 0)) >= 0;) {
        if (len == 0)
            continue; /* blank lines are no rows, as for the CSV reader */
        int64_t i = w->n++;
        if (w->cap[i] < 2 * (size_t)len + 1 &&
            !(w->text[i] = realloc(w->text[i], w->cap[i] = 2 * (size_t)len + 1)))
            exit(1); /* out of memory: nothing sensible is left to do */
        memcpy(w->text[i], *line, (size_t)len);
        w->cells[i] = mml_csv_split_line(w->text[i], (size_t)len, delim, n_cols,
                                         w->vals + w->good * n_cols, w->lens + w->good * n_cols,
                                         w->text[i] + len, NULL);
        w->good += w->cells[i] == n_cols;
    }
    return len < 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int n_threads = 1, ok = 1;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--model"))
            path = argv[i + 1];
        else if (!strcmp(argv[i], "--threads"))
            n_threads = atoi(argv[i + 1]);
    if (!path || argc % 2 == 0 || n_threads < 1 || n_threads > 64)
        return fprintf(stderr, "usage: serve --model FILE [--threads N (1..64)] < rows\n"), 2;
    mml_blis_arch_select("auto", 0); /* before the first context */
    mml_ctx *ctx = NULL;
    mml_model *model = NULL;
    if (mml_ctx_create(&ctx, NULL) < 0 || mml_model_load(&model, ctx, path) < 0 ||
        mml_model_make_readonly(model) < 0)
        return fprintf(stderr, "serve: %s: %s\n", path, ctx ? mml_ctx_last_error(ctx) : "?"), 1;
    worker *w = calloc((size_t)n_threads, sizeof *w);
    mml_session_options so;
    mml_session_options_init(&so);
    so.max_rows = BATCH;
    for (int t = 0; ok && t < n_threads; t++)
        ok = mml_ctx_create(&w[t].ctx, NULL) == 0 &&
             mml_session_create(&w[t].s, w[t].ctx, model, &so) == 0;
    /* The header names the columns; every session binds them. */
    char *line = NULL, **names = NULL, *hs = NULL;
    size_t cap = 0, hl[256];
    const char *hc[256];
    ssize_t len = read_line(&line, &cap, 1);
    delim = ok ? (char)mml_session_delimiter(w[0].s) : ',';
    int64_t n = len < 0 || !(hs = malloc((size_t)len + 1))
                    ? -1 : mml_csv_split_line(line, (size_t)len, delim, 256, hc, hl, hs, NULL);
    n_cols = n > 0 && n <= 256 ? (int32_t)n : 0;
    names = calloc((size_t)n_cols + 1, sizeof *names);
    for (int32_t c = 0; c < n_cols; c++)
        names[c] = strndup(hc[c], hl[c]);
    for (int t = 0; ok && t < n_threads; t++) {
        w[t].vals = malloc(sizeof *w[t].vals * BATCH * (size_t)n_cols);
        w[t].lens = malloc(sizeof *w[t].lens * BATCH * (size_t)n_cols);
        ok = n_cols > 0 && mml_session_bind_columns(w[t].s, n_cols, (const char *const *)names) == 0;
    }
    if (!ok)
        fprintf(stderr, "serve: %s\n", n_cols ? mml_ctx_last_error(w[0].ctx) : "bad header");
    long long n_bad = 0;
    pthread_t tid[64];
    for (int eof = !ok; !eof;) {
        int k = 0;
        while (k < n_threads && !eof)
            eof = fill(&w[k++], &line, &cap);
        for (int t = 0; t < k; t++)
            pthread_create(&tid[t], NULL, predict, &w[t]);
        for (int t = 0; t < k; t++)
            pthread_join(tid[t], NULL);
        for (int t = 0; t < k; t++) /* in input order */
            for (int64_t i = 0, j = 0; i < w[t].n; i++) {
                int good = w[t].cells[i] == n_cols && w[t].st[j] == MML_OK;
                n_bad += !good;
                good ? printf("%.9g\n", (double)w[t].prob[j]) : fputs("nan\n", stdout);
                j += w[t].cells[i] == n_cols;
            }
    }
    fprintf(stderr, "serve: %lld bad rows\n", n_bad);
    int status = ok && fclose(stdout) == 0 ? 0 : 1; /* fclose reports write errors */
    for (int t = 0; t < n_threads; t++) {
        for (int i = 0; i < BATCH; i++)
            free(w[t].text[i]);
        free(w[t].vals), free(w[t].lens), mml_session_destroy(w[t].s), mml_ctx_destroy(w[t].ctx);
    }
    for (int32_t c = 0; c < n_cols; c++)
        free(names[c]);
    free(names), free(hs), free(w), free(line);
    mml_model_destroy(model), mml_ctx_destroy(ctx);
    return status;
}
