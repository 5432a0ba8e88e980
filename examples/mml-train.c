/* mml-train: staged training of the shared model, MLoRA and MoE-MLoRA on
 * MovieLens, CSV splits or the built-in synthetic data, with per-domain
 * results on stdout and optionally as JSON. All ML logic is in the library;
 * this program parses arguments, calls it and prints. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <moemlora/moemlora.h>

#include "mml-train-add.h"
#include "plot.h"

#ifdef MML_WITH_MPI
#include "mpi_reduce.h"
#include "mpi_shards.h"
/* Data-parallel training: one rank per process (mpirun -np N); rank 0 alone
 * prints tables and writes files. Alone, a single rank of one. */
static mpi_reducer mpi;
#define RANK mpi.rank
#define RANKS mpi.size
#else
#define RANK 0
#define RANKS 1
#endif

#define MAX_LIST 64

typedef struct args {
    int synthetic;
    int64_t synthetic_rows;
    int32_t synthetic_domains;
    const char *movielens, *domain_by;
    int32_t label_min;
    const char *train, *val, *test, *label, *domain;
    char fields_buf[1024];
    const char *fields[MAX_LIST];
    int n_fields;
    char numeric_buf[1024];
    const char *numeric[MAX_LIST];
    int n_numeric;
    /* --hash COL:BUCKETS (repeatable): the names copied, as COL ends at the colon. */
    char hash_names[MAX_LIST][256];
    const char *hashed[MAX_LIST];
    int64_t hash_buckets[MAX_LIST];
    int n_hashed;
    uint64_t hash_seed;
    const char *backbone;
    int variants[4], n_variants;
    int32_t experts_per_domain, alpha, embed_dim, hidden[MAX_LIST], n_hidden;
    float dropout, lr, l2_embedding, l2_dense;
    int32_t optimizer, gate_top_k;
    int64_t batch;
    int32_t patience, max_epochs;
    uint64_t seeds[MAX_LIST];
    int n_seeds;
    uint64_t data_seed;
    uint32_t threads;
    const char *json, *write_splits;
    const char *save, *checkpoint, *resume, *init; /* model and checkpoint files */
    int32_t first_stage;                            /* --stage; -1: the variant's first */
    int stop_after;                                 /* --stop-after N epochs; 0: never */
    int checkpoint_every;                           /* --checkpoint-every N epochs (1) */
    double checkpoint_minutes;                      /* --checkpoint-minutes M; 0: off */
    const char *blis_arch; /* NULL: auto unless BLIS_ARCH_TYPE is set */
    int print_blis_arch;
    int verbose;
    int quiet;    /* no progress line, no tables on stdout */
    const char *plot; /* --plot DIR */
    int log_json; /* --log-format json: stderr lines are JSON objects */
    int add_domain;          /* --add-domain: with --init, the data's new domain joins the model */
    int32_t add_experts;     /* --add-experts M; 0: the model's experts per domain */
    double add_gate_prior;   /* --add-gate-prior W; < 0: the library's default */
    int add_domain_row;      /* --add-domain-row 0|1; < 0: the library's default */
    const char *drop_domain; /* --drop-domain NAME: leave that domain's rows out */
    /* The synthetic generator's scales; NAN: its defaults. */
    double syn_domain_scale, syn_shift_scale, syn_shared_scale;
    /* MoE-MLoRA beyond the paper, for moe and moe-tuned; < 0: not given. */
    float gate_prior, gate_lr, expert_lr, expert_backbone_lr, expert_other_weight, finetune_lr;
    int32_t finetune, finetune_patience, gate_input;
} args;

typedef struct data {
    mml_dataset *train, *val, *test;
} data;

static const char *const variant_names[4] = {"base", "mlora", "moe", "moe-tuned"};
/* --variant moe-tuned: MML_VARIANT_MOE with mml_trainer_options_moe_tuned(). */
#define VARIANT_TUNED 3

/* Set while a context is being made: its errors reach only the log. */
static int creating_ctx;

/* The library's warnings go to stderr. Errors are printed where a call
 * fails, from mml_ctx_last_error(), except while a context is being made. */
/* --log-format json: every line on stderr is one JSON object. */
static int log_json;

static void json_line(json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    if (text)
        fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(o);
}

static void print_log(void *user, int level, const char *message)
{
    static char last_warning[1024]; /* each run's context warns again: print once */
    (void)user;
    if (log_json) {
        static const char *const names[4] = {"", "info", "warn", "error"};
        if (level == MML_LOG_ERROR && !creating_ctx)
            return;
        json_line(json_pack("{s:s,s:s,s:s}", "event", "log", "level",
                            names[level >= 1 && level <= 3 ? level : 3], "message", message));
        return;
    }
    if (level == MML_LOG_INFO) {
        fprintf(stderr, "mml-train: %s\n", message);
    } else if (level == MML_LOG_WARN) {
        if (strncmp(message, last_warning, sizeof last_warning - 1) != 0)
            fprintf(stderr, "mml-train: %s\n", message);
        snprintf(last_warning, sizeof last_warning, "%s", message);
    } else if (level == MML_LOG_ERROR && creating_ctx) {
        fprintf(stderr, "mml-train: %s\n", message);
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mml-train [data] [model] [training] [output]\n"
            "data (default --synthetic):\n"
            "  --synthetic [--synthetic-rows N] [--synthetic-domains D] [--synthetic-domain-scale S]\n"
            "    (2) [--synthetic-shift-scale S] (2) [--synthetic-shared-scale S] (0.5)\n"
            "  --movielens DIR --domain-by gender|age|occupation [--label-min R]\n"
            "  --train F --val F --test F [--label COL] [--domain COL] [--fields C1,C2,...]\n"
            "    [--numeric C1,C2,...] (numeric columns)  [--hash COL:BUCKETS] (repeatable: a\n"
            "    categorical column hashed into BUCKETS ids, no vocabulary)  [--hash-seed N] (0)\n"
            "model: --backbone mlp|wdl|deepfm|nfm|pnn|dcn|autoint|xdeepfm|fibinet (mlp)\n"
            "  --variant base|mlora|moe|moe-tuned|all (moe)  --experts-per-domain M (1)  --alpha A (16)\n"
            "  --embed-dim K (8)  --hidden 256,128,64  --dropout P (0.5)  --gate-top-k K (0: dense)\n"
            "moe beyond the paper (moe and moe-tuned; moe-tuned presets some, see\n"
            "  docs/EXPERIMENTS.md): --gate-prior S (0: off; the gate starts at logit S on\n"
            "  each domain's own experts)  --gate-lr R (0: --lr)  --expert-lr R (0: --lr)\n"
            "  --expert-backbone-lr R (0: backbone frozen in stage 2)  --expert-other-weight W\n"
            "  (0: stage 2 drops other domains' rows; else weighs them by W)\n"
            "  --finetune none|experts-gate|all (none: no stage 4)  --finetune-lr R (0: --lr)\n"
            "  --finetune-patience N (0: --patience)  --gate-input domain|embeddings|\n"
            "  embeddings-grad (domain; embeddings: also the row's field embeddings)\n"
            "training: --lr (1e-3) --batch (1024) --patience (3) --max-epochs (50)\n"
            "  --optimizer adam|lazy-adam|adagrad|sgd (adam)  --l2-embedding L (0)  --l2-dense L (0)\n"
            "  --seed N (1) | --seeds A,B,C  --data-seed N (123)  --threads T (online CPUs)\n"
            "kernels: --blis-arch NAME|auto (auto: the fastest BLIS kernels this CPU runs,\n"
            "  unless BLIS_ARCH_TYPE is set)  --print-blis-arch (print the\n"
            "  kernels it would use and exit)\n"
            "  --verbose (the trainer's line per epoch on stderr)  --quiet (no progress line,\n"
            "  no tables)  --log-format text|json (json: one object per stderr line, an\n"
            "  \"epoch\" event after every epoch; no progress line)\n"
            "  --plot DIR (creates DIR: PNG charts of the per-domain test AUC, the validation\n"
            "  AUC per epoch and the gate, drawn by gnuplot; their data files and script)\n"
            "output: --json FILE  --write-splits DIR (write train/val/test CSV and exit)\n"
            "model files (one variant and seed):\n"
            "  --save FILE (the trained model)  --checkpoint FILE (the model and the trainer's\n"
            "  state after every epoch, replaced atomically)  --resume FILE (continue a\n"
            "  checkpoint; give the options and seed it was made with)\n"
            "  --init FILE (start from a saved model: fine-tune it)  --stage\n"
            "  joint|backbone|experts|gate|finetune (start with that stage; with --init, e.g. re-run\n"
            "  stage 2 and 3 of a MoE model)  --stop-after N (stop after N epochs, after\n"
            "  their checkpoint, exit status 3)  --checkpoint-every N (epochs; 1)\n"
            "  --checkpoint-minutes M (also once M minutes passed since the last one)\n"
            "distributed: mpirun -np N mml-train ... (built with MPI): the same options, the\n"
            "  training rows and --batch split across the ranks (docs/DISTRIBUTED.md); with\n"
            "  %%r in --train, --val and --test each rank reads only its own files\n"
            "  (train.%%r.csv: train.0.csv, train.1.csv, ...)\n"
            "adding a domain: --init FILE --add-domain (the one domain of the data that the\n"
            "  MoE model lacks gains experts and a gate row, the rest frozen; --lr, --batch,\n"
            "  --patience, --max-epochs apply; --save FILE writes the grown model; exit\n"
            "  status 4 if an old domain's prediction changed)  --add-experts M (the\n"
            "  model's experts per domain)  --add-gate-prior W (0.9: the new gate row starts\n"
            "  with weight W on the new experts; 0: fresh)  --add-domain-row 0|1 (1: train\n"
            "  the domain id's embedding row first)  --drop-domain NAME (leave a domain's\n"
            "  rows out of all splits, e.g. to train the model it is added to later)\n");
}

static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

/* Splits a comma list of integers. */
static int parse_int_list(const char *s, long long lo, long long hi, long long *out, int max)
{
    char buf[1024];
    if (strlen(s) >= sizeof buf)
        return -1;
    strcpy(buf, s);
    int n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max || parse_int(tok, lo, hi, &out[n]) < 0)
            return -1;
        n++;
    }
    return n > 0 ? n : -1;
}

static int bad_value(const char *opt, const char *v)
{
    fprintf(stderr, "mml-train: invalid value '%s' for %s\n", v, opt);
    return 2;
}

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    /* 0: the library's defaults for the synthetic data set. */
    a->synthetic_rows = 0;
    a->synthetic_domains = 0;
    a->label_min = 5;
    a->label = "label";
    a->domain = "domain";
    a->backbone = "mlp";
    a->variants[0] = MML_VARIANT_MOE;
    a->n_variants = 1;
    a->experts_per_domain = 1;
    a->alpha = 16;
    a->embed_dim = 8;
    a->hidden[0] = 256, a->hidden[1] = 128, a->hidden[2] = 64;
    a->n_hidden = 3;
    a->dropout = 0.5f;
    a->lr = 1e-3f;
    a->optimizer = MML_OPT_ADAM;
    a->batch = 1024;
    a->patience = 3;
    a->max_epochs = 50;
    a->seeds[0] = 1;
    a->n_seeds = 1;
    a->data_seed = 123;
    a->first_stage = -1;
    a->checkpoint_every = 1;
    a->add_gate_prior = -1.0;
    a->add_domain_row = -1;
    a->syn_domain_scale = a->syn_shift_scale = a->syn_shared_scale = NAN;
    a->gate_prior = a->gate_lr = a->expert_lr = a->expert_backbone_lr = -1.0f;
    a->expert_other_weight = a->finetune_lr = -1.0f;
    a->finetune = a->finetune_patience = a->gate_input = -1;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    a->threads = cpus > 0 ? (uint32_t)cpus : 1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(o, "--verbose")) {
            a->verbose = 1;
            continue;
        }
        if (!strcmp(o, "--plot") && i + 1 < argc) {
            a->plot = argv[++i];
            continue;
        }
        if (!strcmp(o, "--quiet")) {
            a->quiet = 1;
            continue;
        }
        if (!strcmp(o, "--log-format") && i + 1 < argc) {
            const char *f = argv[++i];
            if (strcmp(f, "json") && strcmp(f, "text")) {
                fprintf(stderr, "mml-train: --log-format %s: expected text or json\n", f);
                exit(2);
            }
            a->log_json = !strcmp(f, "json");
            continue;
        }
        if (!strcmp(o, "--print-blis-arch")) {
            a->print_blis_arch = 1;
            continue;
        }
        if (!strcmp(o, "--synthetic")) {
            a->synthetic = 1;
            continue;
        }
        if (!strcmp(o, "--add-domain")) {
            a->add_domain = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "mml-train: %s: unknown option or missing value\n", o);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        long long n;
        double x;
        long long list[MAX_LIST];
        if (!strcmp(o, "--synthetic-rows")) {
            if (parse_int(v, 10, 100000000, &n) < 0) return bad_value(o, v);
            a->synthetic_rows = n, a->synthetic = 1;
        } else if (!strcmp(o, "--synthetic-domain-scale") || !strcmp(o, "--synthetic-shift-scale") ||
                   !strcmp(o, "--synthetic-shared-scale")) {
            if (parse_float(v, 0.0, 100.0, &x) < 0) return bad_value(o, v);
            *(o[12] == 'd' ? &a->syn_domain_scale : o[13] == 'h' && o[14] == 'i' ? &a->syn_shift_scale
                                                                               : &a->syn_shared_scale) = x;
            a->synthetic = 1;
        } else if (!strcmp(o, "--gate-prior") || !strcmp(o, "--gate-lr") || !strcmp(o, "--expert-lr") ||
                   !strcmp(o, "--expert-backbone-lr") || !strcmp(o, "--expert-other-weight") ||
                   !strcmp(o, "--finetune-lr")) {
            int other = !strcmp(o, "--expert-other-weight");
            if (parse_float(v, 0.0, other ? 1.0 : 100.0, &x) < 0) return bad_value(o, v);
            float *f = !strcmp(o, "--gate-prior") ? &a->gate_prior : !strcmp(o, "--gate-lr") ? &a->gate_lr
                       : !strcmp(o, "--expert-lr") ? &a->expert_lr : other ? &a->expert_other_weight
                       : !strcmp(o, "--finetune-lr") ? &a->finetune_lr : &a->expert_backbone_lr;
            *f = (float)x;
        } else if (!strcmp(o, "--finetune")) {
            static const char *const kinds[3] = {"none", "experts-gate", "all"};
            int k = 0;
            while (k < 3 && strcmp(v, kinds[k])) k++;
            if (k == 3) return bad_value(o, v);
            a->finetune = k; /* MML_FINETUNE_* */
        } else if (!strcmp(o, "--finetune-patience")) {
            if (parse_int(v, 0, 1000, &n) < 0) return bad_value(o, v);
            a->finetune_patience = (int32_t)n;
        } else if (!strcmp(o, "--gate-input")) {
            static const char *const kinds[3] = {"domain", "embeddings", "embeddings-grad"};
            int k = 0;
            while (k < 3 && strcmp(v, kinds[k])) k++;
            if (k == 3) return bad_value(o, v);
            a->gate_input = k; /* MML_GATE_INPUT_* */
        } else if (!strcmp(o, "--synthetic-domains")) {
            if (parse_int(v, 1, 1024, &n) < 0) return bad_value(o, v);
            a->synthetic_domains = (int32_t)n, a->synthetic = 1;
        } else if (!strcmp(o, "--movielens")) {
            a->movielens = v;
        } else if (!strcmp(o, "--domain-by")) {
            if (strcmp(v, "gender") && strcmp(v, "age") && strcmp(v, "occupation")) return bad_value(o, v);
            a->domain_by = v;
        } else if (!strcmp(o, "--label-min")) {
            if (parse_int(v, 1, 5, &n) < 0) return bad_value(o, v);
            a->label_min = (int32_t)n;
        } else if (!strcmp(o, "--train")) {
            a->train = v;
        } else if (!strcmp(o, "--val")) {
            a->val = v;
        } else if (!strcmp(o, "--test")) {
            a->test = v;
        } else if (!strcmp(o, "--label")) {
            a->label = v;
        } else if (!strcmp(o, "--domain")) {
            a->domain = v;
        } else if (!strcmp(o, "--fields")) {
            if (strlen(v) >= sizeof a->fields_buf) return bad_value(o, v);
            strcpy(a->fields_buf, v);
            a->n_fields = 0;
            for (char *tok = strtok(a->fields_buf, ","); tok; tok = strtok(NULL, ","))
                if (a->n_fields < MAX_LIST - 1) a->fields[a->n_fields++] = tok;
            a->fields[a->n_fields] = NULL;
            if (a->n_fields == 0) return bad_value(o, v);
        } else if (!strcmp(o, "--numeric")) {
            if (strlen(v) >= sizeof a->numeric_buf) return bad_value(o, v);
            strcpy(a->numeric_buf, v);
            a->n_numeric = 0;
            for (char *tok = strtok(a->numeric_buf, ","); tok; tok = strtok(NULL, ","))
                if (a->n_numeric < MAX_LIST) a->numeric[a->n_numeric++] = tok;
            if (a->n_numeric == 0) return bad_value(o, v);
        } else if (!strcmp(o, "--hash")) {
            const char *colon = strrchr(v, ':');
            size_t nl = colon ? (size_t)(colon - v) : 0;
            if (!colon || nl == 0 || nl >= sizeof a->hash_names[0] || a->n_hashed == MAX_LIST ||
                parse_int(colon + 1, 1, INT32_MAX, &n) < 0)
                return bad_value(o, v);
            memcpy(a->hash_names[a->n_hashed], v, nl);
            a->hash_names[a->n_hashed][nl] = '\0';
            a->hashed[a->n_hashed] = a->hash_names[a->n_hashed];
            a->hash_buckets[a->n_hashed++] = n;
        } else if (!strcmp(o, "--hash-seed")) {
            if (parse_int(v, 0, INT64_MAX, &n) < 0) return bad_value(o, v);
            a->hash_seed = (uint64_t)n;
        } else if (!strcmp(o, "--backbone")) {
            if (!mml_backbone_known(NULL, v)) return bad_value(o, v);
            a->backbone = v;
        } else if (!strcmp(o, "--variant")) {
            if (!strcmp(v, "all")) {
                a->n_variants = 4;
                for (int k = 0; k < 4; k++) a->variants[k] = k;
            } else {
                int k = 0;
                while (k < 4 && strcmp(v, variant_names[k])) k++;
                if (k == 4) return bad_value(o, v);
                a->variants[0] = k, a->n_variants = 1;
            }
        } else if (!strcmp(o, "--experts-per-domain")) {
            if (parse_int(v, 1, 64, &n) < 0) return bad_value(o, v);
            a->experts_per_domain = (int32_t)n;
        } else if (!strcmp(o, "--alpha")) {
            if (parse_int(v, 1, 1 << 20, &n) < 0) return bad_value(o, v);
            a->alpha = (int32_t)n;
        } else if (!strcmp(o, "--embed-dim")) {
            if (parse_int(v, 1, 4096, &n) < 0) return bad_value(o, v);
            a->embed_dim = (int32_t)n;
        } else if (!strcmp(o, "--hidden")) {
            int k = parse_int_list(v, 1, 1 << 20, list, MAX_LIST);
            if (k < 0) return bad_value(o, v);
            for (int j = 0; j < k; j++) a->hidden[j] = (int32_t)list[j];
            a->n_hidden = k;
        } else if (!strcmp(o, "--dropout")) {
            if (parse_float(v, 0.0, 0.999, &x) < 0) return bad_value(o, v);
            a->dropout = (float)x;
        } else if (!strcmp(o, "--gate-top-k")) {
            if (parse_int(v, 0, 4096, &n) < 0) return bad_value(o, v);
            a->gate_top_k = (int32_t)n;
        } else if (!strcmp(o, "--optimizer")) {
            static const char *const kinds[4] = {"sgd", "adam", "lazy-adam", "adagrad"};
            int k = 0;
            while (k < 4 && strcmp(v, kinds[k])) k++;
            if (k == 4) return bad_value(o, v);
            a->optimizer = k; /* MML_OPT_SGD, _ADAM, _LAZY_ADAM, _ADAGRAD */
        } else if (!strcmp(o, "--l2-embedding")) {
            if (parse_float(v, 0.0, 1e6, &x) < 0) return bad_value(o, v);
            a->l2_embedding = (float)x;
        } else if (!strcmp(o, "--l2-dense")) {
            if (parse_float(v, 0.0, 1e6, &x) < 0) return bad_value(o, v);
            a->l2_dense = (float)x;
        } else if (!strcmp(o, "--lr")) {
            if (parse_float(v, 1e-12, 10.0, &x) < 0) return bad_value(o, v);
            a->lr = (float)x;
        } else if (!strcmp(o, "--batch")) {
            if (parse_int(v, 1, 1 << 24, &n) < 0) return bad_value(o, v);
            a->batch = n;
        } else if (!strcmp(o, "--patience")) {
            if (parse_int(v, 1, 1000, &n) < 0) return bad_value(o, v);
            a->patience = (int32_t)n;
        } else if (!strcmp(o, "--max-epochs")) {
            if (parse_int(v, 1, 100000, &n) < 0) return bad_value(o, v);
            a->max_epochs = (int32_t)n;
        } else if (!strcmp(o, "--seed")) {
            if (parse_int(v, 0, INT64_MAX, &n) < 0) return bad_value(o, v);
            a->seeds[0] = (uint64_t)n, a->n_seeds = 1;
        } else if (!strcmp(o, "--seeds")) {
            int k = parse_int_list(v, 0, INT64_MAX, list, MAX_LIST);
            if (k < 0) return bad_value(o, v);
            for (int j = 0; j < k; j++) a->seeds[j] = (uint64_t)list[j];
            a->n_seeds = k;
        } else if (!strcmp(o, "--data-seed")) {
            if (parse_int(v, 0, INT64_MAX, &n) < 0) return bad_value(o, v);
            a->data_seed = (uint64_t)n;
        } else if (!strcmp(o, "--threads")) {
            if (parse_int(v, 1, 1024, &n) < 0) return bad_value(o, v);
            a->threads = (uint32_t)n;
        } else if (!strcmp(o, "--blis-arch")) {
            a->blis_arch = v;
        } else if (!strcmp(o, "--json")) {
            a->json = v;
        } else if (!strcmp(o, "--write-splits")) {
            a->write_splits = v;
        } else if (!strcmp(o, "--save")) {
            a->save = v;
        } else if (!strcmp(o, "--checkpoint")) {
            a->checkpoint = v;
        } else if (!strcmp(o, "--resume")) {
            a->resume = v;
        } else if (!strcmp(o, "--init")) {
            a->init = v;
        } else if (!strcmp(o, "--stage")) {
            static const char *const stages[5] = {"joint", "backbone", "experts", "gate", "finetune"};
            int k = 0;
            while (k < 5 && strcmp(v, stages[k])) k++;
            if (k == 5) return bad_value(o, v);
            a->first_stage = k; /* MML_STAGE_JOINT .. MML_STAGE_FINETUNE */
        } else if (!strcmp(o, "--add-experts")) {
            if (parse_int(v, 1, 4096, &n) < 0) return bad_value(o, v);
            a->add_experts = (int32_t)n;
        } else if (!strcmp(o, "--add-gate-prior")) {
            if (parse_float(v, 0.0, 0.999999, &x) < 0) return bad_value(o, v);
            a->add_gate_prior = x;
        } else if (!strcmp(o, "--add-domain-row")) {
            if (parse_int(v, 0, 1, &n) < 0) return bad_value(o, v);
            a->add_domain_row = (int)n;
        } else if (!strcmp(o, "--drop-domain")) {
            a->drop_domain = v;
        } else if (!strcmp(o, "--stop-after")) {
            if (parse_int(v, 1, 1 << 30, &n) < 0) return bad_value(o, v);
            a->stop_after = (int)n;
        } else if (!strcmp(o, "--checkpoint-every")) {
            if (parse_int(v, 1, 1 << 30, &n) < 0) return bad_value(o, v);
            a->checkpoint_every = (int)n;
        } else if (!strcmp(o, "--checkpoint-minutes")) {
            double m;
            if (parse_float(v, 0.0, 1e9, &m) < 0) return bad_value(o, v);
            a->checkpoint_minutes = m;
        } else {
            fprintf(stderr, "mml-train: unknown option %s\n", o);
            usage(stderr);
            return 2;
        }
    }
    int sources = a->synthetic + (a->movielens != NULL) + (a->train || a->val || a->test);
    if (sources > 1) {
        fprintf(stderr, "mml-train: choose one of --synthetic, --movielens, --train/--val/--test\n");
        return 2;
    }
    if (a->movielens && !a->domain_by) {
        fprintf(stderr, "mml-train: --movielens needs --domain-by\n");
        return 2;
    }
    if ((a->train || a->val || a->test) && !(a->train && a->val && a->test)) {
        fprintf(stderr, "mml-train: --train, --val and --test go together\n");
        return 2;
    }
    if ((a->n_numeric || a->n_hashed) && !a->train) {
        fprintf(stderr, "mml-train: --numeric and --hash are for CSV data (--train/--val/--test)\n");
        return 2;
    }
    if (sources == 0)
        a->synthetic = 1;
    int files = a->save || a->checkpoint || a->resume || a->init || a->first_stage >= 0 ||
                a->stop_after;
    if (files && (a->n_variants != 1 || a->n_seeds != 1)) {
        fprintf(stderr, "mml-train: --save, --checkpoint, --resume, --init, --stage and "
                        "--stop-after need one variant and one seed\n");
        return 2;
    }
    if (a->add_domain && (!a->init || a->n_variants != 1 || a->n_seeds != 1 || a->resume ||
                          a->first_stage >= 0)) {
        fprintf(stderr, "mml-train: --add-domain needs --init FILE and one seed (no --resume, --stage)\n");
        return 2;
    }
    if (a->resume && (a->init || a->first_stage >= 0)) {
        fprintf(stderr, "mml-train: --resume continues where the checkpoint was: no --init or --stage\n");
        return 2;
    }
    return 0;
}

static int load_data(mml_ctx *ctx, const args *a, data *d)
{
    if (a->movielens) {
        mml_movielens_options o;
        mml_movielens_options_init(&o);
        o.dir = a->movielens;
        o.domain_by = !strcmp(a->domain_by, "gender") ? MML_DOMAIN_BY_GENDER
                      : !strcmp(a->domain_by, "age")  ? MML_DOMAIN_BY_AGE
                                                      : MML_DOMAIN_BY_OCCUPATION;
        o.label_min = a->label_min;
        o.split_seed = a->data_seed;
        return mml_movielens_load(ctx, &o, &d->train, &d->val, &d->test);
    }
    if (a->train) {
        mml_csv_options o;
        mml_csv_options_init(&o);
        o.label_column = a->label;
        o.domain_column = a->domain;
        if (a->n_fields)
            o.field_columns = a->fields;
        o.numeric_columns = a->numeric;
        o.n_numeric_columns = a->n_numeric;
        o.hashed_columns = a->hashed;
        o.hashed_buckets = a->hash_buckets;
        o.n_hashed_columns = a->n_hashed;
        o.hash_seed = a->hash_seed;
        if (strstr(a->train, "%r")) {
#ifdef MML_WITH_MPI
            return mpi_load_shards(&mpi, ctx, &o, a->train, a->val, a->test, &d->train, &d->val,
                                   &d->test);
#else
            return mml_ctx_set_error(ctx, MML_EUNSUPPORTED, "per-rank files (%r in --train) "
                                     "need mml-train built with MPI (-Dmpi=enabled)");
#endif
        }
        return mml_csv_load(ctx, &o, a->train, a->val, a->test, &d->train, &d->val, &d->test);
    }
    mml_synthetic_options o;
    mml_synthetic_options_init(&o);
    if (a->synthetic_rows)
        o.n_rows = a->synthetic_rows;
    if (a->synthetic_domains)
        o.n_domains = a->synthetic_domains;
    if (!isnan(a->syn_domain_scale))
        o.domain_scale = a->syn_domain_scale;
    if (!isnan(a->syn_shift_scale))
        o.shift_scale = a->syn_shift_scale;
    if (!isnan(a->syn_shared_scale))
        o.shared_scale = a->syn_shared_scale;
    o.seed = a->data_seed;
    return mml_synthetic_generate(ctx, &o, &d->train, &d->val, &d->test);
}

/* ---- one run ---- */

static const char *const stage_names[5] = {"joint", "backbone", "experts", "gate", "finetune"};

/* What the progress line and the epoch events know of the run. */
typedef struct progress_state {
    const char *tag;
    int32_t stage, expert; /* of best */
    double best;           /* best validation score of this stage (or expert) so far */
    int have_best;
} progress_state;

static int show_progress(void *user, const mml_progress *p)
{
    progress_state *ps = user;
    fprintf(stderr, "\r%s %s", ps->tag, stage_names[p->stage]);
    if (p->expert >= 0)
        fprintf(stderr, " expert %d", p->expert);
    fprintf(stderr, " epoch %d/%d step %lld/%lld %.0f rows/s loss %.4f eta %.0fs", p->epoch,
            p->max_epochs, (long long)p->step, (long long)p->steps, p->rows_per_s, p->loss,
            p->eta_s);
    if (ps->have_best && ps->stage == p->stage && ps->expert == p->expert)
        fprintf(stderr, " best val %.4f", ps->best);
    fprintf(stderr, "   ");
    return 0;
}

/* After every epoch: the best validation so far, and the JSON event. */
static void epoch_done(progress_state *ps, const mml_trainer *tr)
{
    int64_t n = mml_trainer_n_epoch_reports(tr);
    mml_epoch_report er;
    if (n < 1 || mml_trainer_epoch_report(tr, n - 1, &er) != MML_OK)
        return;
    if (!ps->have_best || ps->stage != er.stage || ps->expert != er.expert || er.val_score > ps->best) {
        ps->best = er.val_score;
        ps->stage = er.stage;
        ps->expert = er.expert;
        ps->have_best = 1;
    }
    if (log_json)
        json_line(json_pack("{s:s,s:s,s:s,s:i,s:i,s:f,s:f,s:f,s:f}", "event", "epoch", "run",
                            ps->tag, "stage", stage_names[er.stage], "expert", (int)er.expert,
                            "epoch", (int)er.epoch, "train_loss", er.train_loss, "validation",
                            er.val_score, "best_validation", ps->best, "rows_per_s",
                            er.rows_per_s));
}

static json_t *evaluate_json(mml_ctx *ctx, mml_trainer *tr, const data *d, int32_t mode,
                             int full, int *rc)
{
    int32_t D = mml_dataset_n_domains(d->test);
    mml_metrics *m = NULL;
    mml_metrics_summary s;
    json_t *o = NULL;
    if ((*rc = mml_metrics_create(&m, ctx, D)) < 0 ||
        (*rc = mml_trainer_evaluate(tr, d->test, mode, m)) < 0 ||
        (*rc = mml_metrics_compute(m, &s)) < 0) {
        mml_metrics_destroy(m);
        return NULL;
    }
    o = json_object();
    /* Undefined (no domain holds both classes): null, never 0. */
    json_object_set_new(o, "mean_auc", s.n_domains_with_auc ? json_real(s.mean_auc) : json_null());
    json_object_set_new(o, "wauc", s.n_domains_with_auc ? json_real(s.wauc) : json_null());
    if (full) {
        json_object_set_new(o, "logloss", json_real(s.logloss));
        json_t *doms = json_array();
        for (int32_t k = 0; k < D; k++) {
            mml_domain_metrics dm;
            mml_metrics_domain(m, k, &dm);
            json_t *x = json_object();
            json_object_set_new(x, "id", json_integer(k));
            json_object_set_new(x, "name", json_string(mml_dataset_domain_name(d->test, k)));
            json_object_set_new(x, "n_test", json_integer(dm.n));
            json_object_set_new(x, "auc", dm.auc_defined ? json_real(dm.auc) : json_null());
            json_object_set_new(x, "logloss", json_real(dm.logloss));
            json_array_append_new(doms, x);
        }
        json_object_set_new(o, "domains", doms);
    }
    mml_metrics_destroy(m);
    return o;
}

static json_t *gate_json(mml_model *model)
{
    mml_gate *g = mml_model_gate(model);
    int32_t D = mml_gate_n_domains(g), E = mml_gate_n_experts(g);
    float *t = malloc(sizeof(float) * (size_t)D * (size_t)E);
    json_t *rows = json_array();
    if (t && mml_gate_table(g, t) == MML_OK)
        for (int32_t k = 0; k < D; k++) {
            json_t *r = json_array();
            for (int32_t e = 0; e < E; e++)
                json_array_append_new(r, json_real(t[k * E + e]));
            json_array_append_new(rows, r);
        }
    free(t);
    return rows;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The stage rows of the JSON: MoE's experts are summed into one "experts" row. */
/* What went wrong in a stage, as keys present only when set. */
static void add_flags(json_t *o, uint32_t flags)
{
    if (flags & MML_STAGE_UNVALIDATED)
        json_object_set_new(o, "unvalidated", json_true());
    if (flags & MML_STAGE_DIVERGED)
        json_object_set_new(o, "diverged", json_true());
    if (flags & MML_STAGE_NO_TRAINING_ROWS)
        json_object_set_new(o, "no_training_rows", json_true());
}

static json_t *stages_json(mml_trainer *tr, json_t **experts)
{
    static const char *const names[5] = {"joint", "backbone", "experts", "gate", "finetune"};
    json_t *stages = json_array();
    *experts = json_array();
    double rates[4096];
    int n_rates = 0, n_exp = 0, n_exp_val = 0;
    double exp_val = 0, exp_sec = 0;
    long exp_epochs = 0;
    size_t exp_pos = 0;
    for (int64_t i = 0; i < mml_trainer_n_stage_reports(tr); i++) {
        mml_stage_report r;
        mml_trainer_stage_report(tr, i, &r);
        if (r.stage != MML_STAGE_EXPERTS) {
            json_t *s = json_object();
            json_object_set_new(s, "name", json_string(names[r.stage]));
            json_object_set_new(s, "epochs", json_integer(r.epochs));
            json_object_set_new(s, "best_val", r.flags & MML_STAGE_UNVALIDATED
                                                   ? json_null() : json_real(r.best_val));
            add_flags(s, r.flags);
            json_object_set_new(s, "seconds", json_real(r.seconds));
            json_object_set_new(s, "train_rows_per_s", json_real(r.train_rows_per_s));
            json_array_append_new(stages, s);
            continue;
        }
        json_t *e = json_object();
        json_object_set_new(e, "id", json_integer(r.expert));
        json_object_set_new(e, "domain", json_integer(r.domain));
        json_object_set_new(e, "epochs", json_integer(r.epochs));
        int defined = !(r.flags & MML_STAGE_UNVALIDATED);
        json_object_set_new(e, "best_val", defined ? json_real(r.best_val) : json_null());
        add_flags(e, r.flags);
        json_array_append_new(*experts, e);
        n_exp++;
        n_exp_val += defined;
        exp_val += defined ? r.best_val : 0.0;
        exp_sec += r.seconds;
        exp_epochs += r.epochs;
        /* The experts' stage row goes in position: after the backbone row (if any). */
        if (n_exp == 1) {
            exp_pos = json_array_size(stages);
            json_array_append_new(stages, json_object());
        }
    }
    for (int64_t i = 0; i < mml_trainer_n_epoch_reports(tr) && n_rates < 4096; i++) {
        mml_epoch_report er;
        mml_trainer_epoch_report(tr, i, &er);
        if (er.stage == MML_STAGE_EXPERTS)
            rates[n_rates++] = er.rows_per_s;
    }
    if (n_exp) {
        qsort(rates, (size_t)n_rates, sizeof rates[0], cmp_double);
        double med = n_rates % 2 ? rates[n_rates / 2] : 0.5 * (rates[n_rates / 2 - 1] + rates[n_rates / 2]);
        json_t *s = json_array_get(stages, exp_pos);
        json_object_set_new(s, "name", json_string("experts"));
        json_object_set_new(s, "epochs", json_integer(exp_epochs));
        json_object_set_new(s, "best_val", n_exp_val ? json_real(exp_val / n_exp_val) : json_null());
        json_object_set_new(s, "seconds", json_real(exp_sec));
        json_object_set_new(s, "train_rows_per_s", json_real(med));
    }
    return stages;
}

/* After every epoch: the checkpoint file, and --stop-after. */
typedef struct checkpointing {
    progress_state *ps;
    mml_ctx *ctx;
    const args *a;
    const char *tag;
    int epochs;
    int stopped; /* by --stop-after */
    int failed;  /* the save failed (its message is printed) */
    int since;   /* epochs since the last checkpoint */
    double last; /* when it was written (seconds) */
} checkpointing;

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int on_checkpoint(void *user, mml_trainer *tr, const mml_progress *where)
{
    checkpointing *c = user;
    (void)where;
    epoch_done(c->ps, tr);
    c->since++;
    /* Every --checkpoint-every epochs, after --checkpoint-minutes, and before --stop-after. */
    int due = c->a->checkpoint &&
              (c->since >= c->a->checkpoint_every ||
               (c->a->checkpoint_minutes > 0 && wall_s() - c->last >= 60.0 * c->a->checkpoint_minutes) ||
               (c->a->stop_after && c->epochs + 1 >= c->a->stop_after));
    /* Rank 0 writes the file and decides: every rank must stop alike. */
    int bad = 0;
    if (due && RANK == 0 && mml_trainer_save(tr, c->a->checkpoint) < 0) {
        /* The context's message names the failure; the run's own would only say "stopped". */
        fprintf(stderr, "mml-train: %s: --checkpoint %s: %s\n", c->tag, c->a->checkpoint,
                mml_ctx_last_error(c->ctx));
        bad = 1;
    }
#ifdef MML_WITH_MPI
    if (due && RANKS > 1)
        bad = mpi_reducer_bcast(&mpi, bad);
#endif
    if (bad) {
        c->failed = 1;
        return 1;
    }
    if (due) {
        c->since = 0;
        c->last = wall_s();
    }
    if (c->a->stop_after && ++c->epochs >= c->a->stop_after) {
        c->stopped = 1;
        return 1;
    }
    return 0;
}

/* A context with the run's threads and seed, logging to stderr. */
static int make_ctx(const args *a, uint64_t seed, mml_ctx **ctx)
{
    mml_ctx_options co;
    mml_ctx_options_init(&co);
    co.seed = seed;
    co.n_threads = a->threads;
    co.log = print_log;
    co.log_level = a->verbose ? MML_LOG_INFO : MML_LOG_WARN;
    if (RANK > 0) /* rank 0 says it for all */
        co.log_level = MML_LOG_ERROR;
    creating_ctx = 1;
    int rc = mml_ctx_create(ctx, &co);
    creating_ctx = 0;
    return rc;
}

/* Whether stage 3 has trained an epoch (in this process or before a resume). */
static int gate_started(const mml_trainer *tr)
{
    for (int64_t i = 0; i < mml_trainer_n_epoch_reports(tr); i++) {
        mml_epoch_report er;
        if (mml_trainer_epoch_report(tr, i, &er) == MML_OK && er.stage == MML_STAGE_GATE)
            return 1;
    }
    return 0;
}

/* FNV-1a over every weight's bits: equal digests, equal models (run to run,
 * rank to rank). */
static unsigned long long weights_digest(mml_model *m)
{
    unsigned long long h = 1469598103934665603ull;
    for (int64_t i = 0; i < mml_model_n_params(m); i++) {
        const mml_param *p = mml_model_param(m, i);
        const unsigned char *b = (const unsigned char *)p->value;
        for (size_t j = 0; j < sizeof(float) * (size_t)mml_param_size(p); j++)
            h = (h ^ b[j]) * 1099511628211ull;
    }
    return h;
}

/* Whether a stage has trained an epoch (in this process or before a resume). */
static int stage_started(const mml_trainer *tr, int32_t stage)
{
    for (int64_t i = 0; i < mml_trainer_n_epoch_reports(tr); i++) {
        mml_epoch_report er;
        if (mml_trainer_epoch_report(tr, i, &er) == MML_OK && er.stage == stage)
            return 1;
    }
    return 0;
}

/* Exit status 3: --stop-after stopped the run as planned. */
#define STOPPED 3

static json_t *run_one(const args *a, const data *d, int variant, uint64_t seed, int *rc,
                       int *stopped)
{
    mml_ctx *ctx = NULL;
    if ((*rc = make_ctx(a, seed, &ctx)) < 0)
        return NULL;
    char tag[64];
    snprintf(tag, sizeof tag, "[%s seed %llu]", variant_names[variant], (unsigned long long)seed);
    mml_trainer_options to;
    mml_trainer_options_init(&to);
    int is_moe = variant == MML_VARIANT_MOE || variant == VARIANT_TUNED;
    if (variant == VARIANT_TUNED)
        mml_trainer_options_moe_tuned(&to);
    to.variant = is_moe ? MML_VARIANT_MOE : variant;
    if (is_moe) { /* the flags given override the preset */
        if (a->gate_prior >= 0) to.gate_prior = a->gate_prior;
        if (a->gate_lr >= 0) to.gate_lr = a->gate_lr;
        if (a->expert_lr >= 0) to.expert_lr = a->expert_lr;
        if (a->expert_backbone_lr >= 0) to.expert_backbone_lr = a->expert_backbone_lr;
        if (a->expert_other_weight >= 0) to.expert_other_weight = a->expert_other_weight;
        if (a->finetune_lr >= 0) to.finetune_lr = a->finetune_lr;
        if (a->finetune >= 0) to.finetune = a->finetune;
        if (a->finetune_patience >= 0) to.finetune_patience = a->finetune_patience;
        if (a->gate_input >= 0) to.gate_input = a->gate_input;
    }
    to.backbone = a->backbone;
    to.experts_per_domain = a->experts_per_domain;
    to.alpha = a->alpha;
    to.embed_dim = a->embed_dim;
    to.n_hidden = a->n_hidden;
    to.hidden = a->hidden;
    to.dropout = a->dropout;
    to.lr = a->lr;
    to.batch_size = a->batch;
    to.patience = a->patience;
    to.max_epochs = a->max_epochs;
    to.optimizer = a->optimizer;
    to.gate_top_k = a->gate_top_k;
    to.l2_embedding = a->l2_embedding;
    to.l2_dense = a->l2_dense;
    progress_state ps = {tag, -1, -1, 0.0, 0};
    if (isatty(STDERR_FILENO) && !a->quiet && !a->log_json) {
        to.progress = show_progress;
        to.progress_user = &ps;
    }
    checkpointing cp = {&ps, ctx, a, tag, 0, 0, 0, 0, wall_s()};
#ifdef MML_WITH_MPI
    mml_reduce_hook hook;
    mpi_reducer_hook(&mpi, &hook);
    /* Per-rank files: each rank's data sets are its own rows. */
    hook.sharded = a->train && strstr(a->train, "%r") != NULL;
    to.reduce = &hook;
#endif
    to.checkpoint = on_checkpoint;
    to.checkpoint_user = &cp;
    to.first_stage = a->first_stage;
    mml_trainer *tr = NULL;
    mml_model *init = NULL;
    json_t *run = NULL, *after_backbone = NULL, *own = NULL, *gate_init = NULL, *after_gate = NULL;
    if (a->init) {
        if ((*rc = mml_model_load(&init, ctx, a->init)) < 0)
            goto done;
        to.init_model = init;
    }
    *rc = a->resume ? mml_trainer_resume(&tr, ctx, &to, a->resume, d->train, d->val)
                    : mml_trainer_create(&tr, ctx, &to, d->train, d->val);
    mml_model_destroy(init); /* its weights are copied */
#ifdef MML_WITH_MPI
    if (RANKS > 1) {
        /* Every rank goes on, or none; rank 0 prints the first failure. */
        int agreed = mpi_reducer_agree(&mpi, *rc < 0 ? *rc : 0, *rc < 0 ? mml_ctx_last_error(ctx) : NULL);
        if (agreed < 0 && *rc >= 0)
            *rc = agreed;
        if (agreed < 0) {
            cp.failed = 1; /* printed */
            goto done;
        }
    }
#endif
    if (*rc < 0)
        goto done;
    if (is_moe) {
        /* A resumed or re-run model reports only on the stages it ran here. */
        if (mml_trainer_next_stage(tr) == MML_STAGE_BACKBONE &&
            ((*rc = mml_trainer_run_stage(tr, MML_STAGE_BACKBONE)) < 0 ||
             !(after_backbone = evaluate_json(ctx, tr, d, MML_MIX_NONE, 0, rc))))
            goto done;
        if (mml_trainer_next_stage(tr) == MML_STAGE_EXPERTS &&
            ((*rc = mml_trainer_run_stage(tr, MML_STAGE_EXPERTS)) < 0 ||
             !(own = evaluate_json(ctx, tr, d, MML_MIX_OWN, 0, rc))))
            goto done;
        if (mml_trainer_next_stage(tr) == MML_STAGE_GATE) {
            if (!gate_started(tr)) /* a resumed stage 3 has moved it already */
                gate_init = gate_json(mml_trainer_model(tr));
            if ((*rc = mml_trainer_run_stage(tr, MML_STAGE_GATE)) < 0)
                goto done;
        }
        if (mml_trainer_next_stage(tr) == MML_STAGE_FINETUNE) {
            /* What stage 4 starts from, unless a resumed stage 4 has moved it. */
            if (!stage_started(tr, MML_STAGE_FINETUNE) &&
                !(after_gate = evaluate_json(ctx, tr, d, MML_MIX_GATED, 0, rc)))
                goto done;
            if ((*rc = mml_trainer_run_stage(tr, MML_STAGE_FINETUNE)) < 0)
                goto done;
        }
    } else if ((*rc = mml_trainer_run(tr)) < 0) {
        goto done;
    }
    unsigned long long digest = weights_digest(mml_trainer_model(tr));
#ifdef MML_WITH_MPI
    if (RANKS > 1) {
        /* The trainer's promise, checked: every rank ends with rank 0's bits. */
        int bad = mpi_reducer_differs(&mpi, digest);
        if (bad >= 0) {
            *rc = mml_ctx_set_error(ctx, MML_ESTATE, "the ranks' weights differ");
            if (RANK == 0)
                fprintf(stderr, "mml-train: %s: rank %d's weights differ from rank 0's\n", tag, bad);
            cp.failed = 1;
            goto done;
        }
    }
#endif
    if (!(run = evaluate_json(ctx, tr, d, mml_trainer_mix_mode(tr), 1, rc)))
        goto done;
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", digest);
    json_object_set_new(run, "weights_fnv1a", json_string(hex));
    json_object_set_new(run, "ranks", json_integer(RANKS));
    json_object_set_new(run, "backbone", json_string(a->backbone));
    json_object_set_new(run, "variant", json_string(variant_names[variant]));
    json_object_set_new(run, "seed", json_integer((json_int_t)seed));
    json_object_set_new(run, "threads", json_integer(a->threads));
    json_object_set_new(run, "blis_arch", json_string(mml_ctx_blis_arch(ctx)));
    json_t *experts;
    json_object_set_new(run, "stages", stages_json(tr, &experts));
    json_object_set_new(run, "epochs", plot_epochs_json(tr));
    if (is_moe) {
        if (after_gate)
            json_object_set_new(run, "after_gate", after_gate);
        after_gate = NULL;
        json_object_set_new(run, "gate", gate_json(mml_trainer_model(tr)));
        json_object_set_new(run, "gate_init", gate_init);
        json_object_set_new(run, "experts", experts);
        json_object_set_new(run, "after_backbone", after_backbone);
        json_object_set_new(run, "own_experts", own);
        gate_init = after_backbone = own = NULL;
    } else {
        json_decref(experts);
    }
    if (a->save) {
        /* The model is ours now: it outlives the trainer. */
        mml_model *m = NULL;
        if ((*rc = mml_trainer_take_model(tr, &m)) >= 0 && RANK == 0)
            *rc = mml_model_save(m, a->save);
        mml_model_destroy(m);
        if (*rc < 0) {
            json_decref(run);
            run = NULL;
        }
    }
done:
    if (isatty(STDERR_FILENO) && to.progress)
        fprintf(stderr, "\r%*s\r", 100, "");
    if (*rc == MML_ECANCELED && cp.stopped) {
        *stopped = 1;
        if (RANK == 0)
            fprintf(stderr, "mml-train: %s: stopped after %d epochs (--stop-after)%s%s\n", tag,
                cp.epochs, a->checkpoint ? "; continue with --resume " : "",
                a->checkpoint ? a->checkpoint : "");
    } else if (*rc < 0 && !cp.failed && (RANK == 0 || RANKS == 1)) {
        /* Under MPI the failure is every rank's (a local one aborts the job). */
        fprintf(stderr, "mml-train: %s: %s\n", tag, mml_ctx_last_error(ctx));
    }
    json_decref(after_backbone);
    json_decref(own);
    json_decref(gate_init);
    json_decref(after_gate);
    mml_trainer_destroy(tr);
    mml_ctx_destroy(ctx);
    return run;
}

/* ---- output ---- */

static double num(json_t *o, const char *key) { return json_number_value(json_object_get(o, key)); }

/* A figure, or n/a when it is undefined (null). */
static const char *fig(json_t *o, const char *key, char *buf, size_t size)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        return "n/a";
    snprintf(buf, size, "%.4f", json_number_value(v));
    return buf;
}

static void print_run(json_t *run)
{
    printf("\n%s / %s / seed %lld\n", json_string_value(json_object_get(run, "backbone")),
           json_string_value(json_object_get(run, "variant")),
           (long long)json_integer_value(json_object_get(run, "seed")));
    printf("  %-12s %8s %8s %8s\n", "domain", "n_test", "auc", "logloss");
    size_t i;
    json_t *dm;
    json_array_foreach(json_object_get(run, "domains"), i, dm) {
        json_t *auc = json_object_get(dm, "auc");
        char buf[16] = "   n/a";
        if (json_is_number(auc))
            snprintf(buf, sizeof buf, "%.4f", json_number_value(auc));
        printf("  %-12s %8lld %8s %8.4f\n", json_string_value(json_object_get(dm, "name")),
               (long long)json_integer_value(json_object_get(dm, "n_test")), buf, num(dm, "logloss"));
    }
    char b1[32], b2[32], b3[32], b4[32];
    printf("  mean AUC %s  WAUC %s  log loss %.4f\n", fig(run, "mean_auc", b1, sizeof b1),
           fig(run, "wauc", b2, sizeof b2), num(run, "logloss"));
    json_t *st;
    json_array_foreach(json_object_get(run, "stages"), i, st)
        printf("  stage %-8s epochs %3lld  best val %6s  %7.1f s  %9.0f rows/s\n",
               json_string_value(json_object_get(st, "name")),
               (long long)json_integer_value(json_object_get(st, "epochs")),
               fig(st, "best_val", b1, sizeof b1), num(st, "seconds"),
               num(st, "train_rows_per_s"));
    json_t *gate = json_object_get(run, "gate");
    if (gate) {
        json_t *ab = json_object_get(run, "after_backbone"), *own = json_object_get(run, "own_experts");
        printf("  after backbone: mean AUC %s WAUC %s; own experts: mean AUC %s WAUC %s\n",
               fig(ab, "mean_auc", b1, sizeof b1), fig(ab, "wauc", b2, sizeof b2),
               fig(own, "mean_auc", b3, sizeof b3), fig(own, "wauc", b4, sizeof b4));
        printf("  gate (rows: domains, columns: experts)\n");
        json_t *row;
        json_array_foreach(gate, i, row) {
            printf("   ");
            size_t j;
            json_t *w;
            json_array_foreach(row, j, w) printf(" %.3f", json_number_value(w));
            printf("\n");
        }
    }
}

static void mean_sd(const double *x, int n, double *mean, double *sd)
{
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++)
        s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++)
        s2 += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : 0.0;
}

static void print_summary(json_t *runs, const args *a)
{
    printf("\nsummary over seeds (mean +- sample std)\n");
    printf("  %-8s %-18s %-18s %-18s\n", "variant", "WAUC", "mean AUC", "log loss");
    for (int v = 0; v < a->n_variants; v++) {
        double w[MAX_LIST], m[MAX_LIST], l[MAX_LIST];
        int n = 0, n_auc = 0;
        size_t i;
        json_t *run;
        json_array_foreach(runs, i, run) {
            if (strcmp(json_string_value(json_object_get(run, "variant")), variant_names[a->variants[v]]))
                continue;
            if (json_is_number(json_object_get(run, "wauc"))) { /* defined for this seed */
                w[n_auc] = num(run, "wauc"), m[n_auc] = num(run, "mean_auc");
                n_auc++;
            }
            l[n++] = num(run, "logloss");
        }
        double mw, sw, mm, sm, ml, sl;
        mean_sd(l, n, &ml, &sl);
        char cw[48] = "n/a", cm[48] = "n/a";
        if (n_auc) {
            mean_sd(w, n_auc, &mw, &sw);
            mean_sd(m, n_auc, &mm, &sm);
            snprintf(cw, sizeof cw, "%.4f +- %.4f", mw, sw);
            snprintf(cm, sizeof cm, "%.4f +- %.4f", mm, sm);
        }
        printf("  %-8s %-18s %-18s %.4f +- %.4f\n", variant_names[a->variants[v]], cw, cm, ml, sl);
    }
}

static int write_json(const char *path, json_t *doc)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return -1;
    if (json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) != 0)
        return -1;
    if (rename(tmp, path) != 0) {
        remove(tmp);
        return -1;
    }
    return 0;
}

static int train_main(int argc, char **argv)
{
    args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    log_json = a.log_json;
    mml_ctx *ctx = NULL;
    data d = {0};
    /* Before the first context: BLIS fixes its kernels when it initialises. */
    rc = mml_blis_arch_select(a.blis_arch, a.blis_arch != NULL);
    if (rc < 0) {
        fprintf(stderr, "mml-train: --blis-arch %s: %s (this CPU's best: %s)\n", a.blis_arch,
                mml_status_str(rc), mml_blis_arch_best());
        return 2;
    }
    if (make_ctx(&a, a.data_seed, &ctx) < 0)
        return 1; /* the log callback has printed why */
    if (a.print_blis_arch) {
        printf("%s BLIS_ARCH_TYPE=%d\n", mml_ctx_blis_arch(ctx),
               (int)mml_blis_arch_type(mml_ctx_blis_arch(ctx)));
        mml_ctx_destroy(ctx);
        return 0;
    }
    rc = load_data(ctx, &a, &d);
#ifdef MML_WITH_MPI
    if (RANKS > 1) {
        if (rc >= 0 && mpi.fail_rank == RANK && mpi.fail_call == 0)
            rc = mml_ctx_set_error(ctx, MML_EIO, "injected failure reading the data (test)");
        /* Every rank has loaded the whole data set, or none trains. */
        if (mpi_reducer_agree(&mpi, rc < 0 ? rc : 0, rc < 0 ? mml_ctx_last_error(ctx) : NULL)) {
            mml_dataset_destroy(d.train);
            mml_dataset_destroy(d.val);
            mml_dataset_destroy(d.test);
            mml_ctx_destroy(ctx);
            return 1;
        }
    }
#endif
    if (rc < 0) {
        fprintf(stderr, "mml-train: %s\n", mml_ctx_last_error(ctx));
        mml_ctx_destroy(ctx);
        return 1;
    }
    int status = 0;
    if (a.drop_domain) {
        int32_t k = 0, D = mml_dataset_n_domains(d.train);
        while (k < D && strcmp(mml_dataset_domain_name(d.train, k), a.drop_domain))
            k++;
        mml_dataset **sets[3] = {&d.train, &d.val, &d.test};
        for (int i = 0; i < 3 && status == 0; i++) {
            mml_dataset *kept = NULL;
            if (k == D || mml_dataset_drop_domain(&kept, *sets[i], k) < 0) {
                fprintf(stderr, "mml-train: --drop-domain %s: %s\n", a.drop_domain,
                        k == D ? "no such domain" : mml_ctx_last_error(ctx));
                status = 1;
            } else {
                mml_dataset_destroy(*sets[i]);
                *sets[i] = kept;
            }
        }
    }
    if (status == 0 && a.add_domain && RANKS > 1) {
        fprintf(stderr, "mml-train: --add-domain runs in one process, not under mpirun\n");
        status = 1;
    } else if (status == 0 && a.add_domain) {
        add_domain_job job = {NULL, a.init, a.save, a.json, a.seeds[0], a.batch, a.quiet,
                              d.train, d.val, d.test, {0}};
        mml_add_domain_options_init(&job.opt);
        job.opt.n_experts = a.add_experts;
        job.opt.lr = a.lr;
        job.opt.batch_size = a.batch;
        job.opt.patience = a.patience;
        job.opt.max_epochs = a.max_epochs;
        if (a.add_gate_prior >= 0.0)
            job.opt.gate_own_weight = (float)a.add_gate_prior;
        if (a.add_domain_row >= 0)
            job.opt.train_domain_row = a.add_domain_row;
        int unchanged = 0;
        if (make_ctx(&a, a.seeds[0], &job.ctx) < 0)
            status = 1;
        else if (mml_train_add_domain(&job, &unchanged) < 0)
            status = 1;
        else if (!unchanged)
            status = 4;
        mml_ctx_destroy(job.ctx);
    } else if (a.write_splits && RANK > 0) {
        /* Rank 0 writes them. */
    } else if (status == 0 && a.write_splits) {
        const char *names[3] = {"train.csv", "val.csv", "test.csv"};
        const mml_dataset *sets[3] = {d.train, d.val, d.test};
        for (int i = 0; i < 3 && status == 0; i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", a.write_splits, names[i]);
            if (mml_dataset_write_csv(sets[i], ctx, path) < 0) {
                fprintf(stderr, "mml-train: %s\n", mml_ctx_last_error(ctx));
                status = 1;
            }
        }
    } else if (status == 0) {
        if (!a.quiet)
            printf("data: %lld train, %lld validation, %lld test rows, %d domains; threads %u; "
               "BLIS kernels %s (best for this CPU: %s)\n",
               (long long)mml_dataset_n_rows(d.train), (long long)mml_dataset_n_rows(d.val),
               (long long)mml_dataset_n_rows(d.test), mml_dataset_n_domains(d.train), a.threads,
               mml_ctx_blis_arch(ctx), mml_ctx_blis_arch_best(ctx));
        json_t *runs = json_array();
        for (int v = 0; v < a.n_variants && status == 0; v++)
            for (int s = 0; s < a.n_seeds && status == 0; s++) {
                int run_rc = 0, stopped = 0;
                json_t *run = run_one(&a, &d, a.variants[v], a.seeds[s], &run_rc, &stopped);
                if (!run) {
                    status = stopped ? STOPPED : 1;
                    break;
                }
                if (!a.quiet)
                    print_run(run);
                fflush(stdout);
                json_array_append_new(runs, run);
            }
        if (status == 0 && json_array_size(runs) > 1 && !a.quiet)
            print_summary(runs, &a);
        if (status == 0 && a.plot && RANK == 0 && plot_write(a.plot, runs) < 0)
            status = 1;
        if (status == 0 && a.json && RANK == 0) {
            json_t *doc = json_array_size(runs) == 1 ? json_incref(json_array_get(runs, 0))
                                                      : json_pack("{s:O}", "runs", runs);
            if (write_json(a.json, doc) < 0) {
                fprintf(stderr, "mml-train: cannot write %s\n", a.json);
                status = 1;
            }
            json_decref(doc);
        }
        json_decref(runs);
    }
    mml_dataset_destroy(d.train);
    mml_dataset_destroy(d.val);
    mml_dataset_destroy(d.test);
    mml_ctx_destroy(ctx);
    return status;
}

int main(int argc, char **argv)
{
#ifdef MML_WITH_MPI
    if (mpi_reducer_init(&mpi, &argc, &argv) < 0)
        return 1;
    /* Rank 0 alone prints the tables. */
    if (mpi.rank > 0 && !freopen("/dev/null", "w", stdout))
        return mpi_reducer_finish(&mpi, 1);
    return mpi_reducer_finish(&mpi, train_main(argc, argv));
#else
    return train_main(argc, argv);
#endif
}
