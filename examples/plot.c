/* mml-train --plot DIR: three charts of a run, drawn by Debian's gnuplot
 * (gnuplot-nox): per-domain test AUC of the variants side by side,
 * validation AUC per epoch of every stage and expert, and the learned gate
 * as a domain x expert heat map. The data files and the script stay beside
 * the pictures, so a chart can be redrawn or restyled by hand. */
#define _POSIX_C_SOURCE 200809L
#include "plot.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const stage_names[5] = {"joint", "backbone", "experts", "gate", "finetune"};
enum { N_VARIANTS = 4 };
static const char *const variants[N_VARIANTS] = {"base", "mlora", "moe", "moe-tuned"};

json_t *plot_epochs_json(const mml_trainer *tr)
{
    json_t *arr = json_array();
    for (int64_t i = 0; i < mml_trainer_n_epoch_reports(tr); i++) {
        mml_epoch_report er;
        if (mml_trainer_epoch_report(tr, i, &er) != MML_OK)
            continue;
        json_array_append_new(arr, json_pack("{s:s,s:i,s:i,s:f}", "stage", stage_names[er.stage],
                                             "expert", (int)er.expert, "epoch", (int)er.epoch,
                                             "validation", er.val_score));
    }
    return arr;
}

static FILE *open_in(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "mml-train: --plot: cannot write %s: %s\n", path, strerror(errno));
    return f;
}

/* Mean test AUC of each domain over a variant's runs (seeds). */
static int write_domain_auc(const char *dir, json_t *runs)
{
    FILE *f = open_in(dir, "domain_auc.dat");
    if (!f)
        return -1;
    json_t *first = json_array_get(runs, 0);
    json_t *doms = json_object_get(first, "domains");
    fprintf(f, "domain");
    for (int v = 0; v < N_VARIANTS; v++)
        fprintf(f, " %s", variants[v]);
    fprintf(f, "\n");
    size_t d;
    json_t *dm;
    json_array_foreach(doms, d, dm) {
        fprintf(f, "\"%s\"", json_string_value(json_object_get(dm, "name")));
        for (int v = 0; v < N_VARIANTS; v++) {
            double sum = 0;
            int n = 0;
            size_t i;
            json_t *run;
            json_array_foreach(runs, i, run) {
                if (strcmp(json_string_value(json_object_get(run, "variant")), variants[v]))
                    continue;
                json_t *x = json_object_get(json_array_get(json_object_get(run, "domains"), d), "auc");
                if (json_is_number(x)) {
                    sum += json_number_value(x);
                    n++;
                }
            }
            if (n)
                fprintf(f, " %.6f", sum / n);
            else
                fprintf(f, " NaN");
        }
        fprintf(f, "\n");
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* One block per stage (and expert) of each variant's first run; gnuplot's
 * index selects a block, its first line names it. */
static int write_validation(const char *dir, json_t *runs, int *n_blocks)
{
    FILE *f = open_in(dir, "validation.dat");
    if (!f)
        return -1;
    *n_blocks = 0;
    for (int v = 0; v < N_VARIANTS; v++) {
        size_t i;
        json_t *run;
        json_array_foreach(runs, i, run) {
            if (strcmp(json_string_value(json_object_get(run, "variant")), variants[v]))
                continue;
            const char *stage = "";
            int expert = -2;
            size_t k;
            json_t *e;
            json_array_foreach(json_object_get(run, "epochs"), k, e) {
                const char *s = json_string_value(json_object_get(e, "stage"));
                int x = (int)json_integer_value(json_object_get(e, "expert"));
                if (strcmp(s, stage) || x != expert) {
                    if (*n_blocks)
                        fprintf(f, "\n\n");
                    if (x >= 0)
                        fprintf(f, "\"%s %s %d\"\n", variants[v], s, x);
                    else
                        fprintf(f, "\"%s %s\"\n", variants[v], s);
                    (*n_blocks)++;
                    stage = s;
                    expert = x;
                }
                fprintf(f, "%d %.6f\n", (int)json_integer_value(json_object_get(e, "epoch")),
                        json_number_value(json_object_get(e, "validation")));
            }
            break; /* the first seed's run only */
        }
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* The first MoE run's gate: a row per domain, a column per expert. */
static int write_gate(const char *dir, json_t *runs, int *have)
{
    *have = 0;
    size_t i;
    json_t *run;
    json_array_foreach(runs, i, run) {
        json_t *gate = json_object_get(run, "gate");
        if (!json_is_array(gate))
            continue;
        FILE *f = open_in(dir, "gate.dat");
        if (!f)
            return -1;
        size_t d;
        json_t *row;
        json_array_foreach(gate, d, row) {
            size_t e;
            json_t *w;
            json_array_foreach(row, e, w) fprintf(f, "%s%.6f", e ? " " : "", json_number_value(w));
            fprintf(f, "\n");
        }
        *have = 1;
        return fclose(f) == 0 ? 0 : -1;
    }
    return 0;
}

static int write_script(const char *dir, int n_blocks, int have_gate)
{
    FILE *f = open_in(dir, "plots.gp");
    if (!f)
        return -1;
    fprintf(f, "# Run in this folder: gnuplot plots.gp\n"
               "set terminal png size 900,520\n"
               "set key outside right\n"
               "set grid ytics\n"
               "set output 'domain_auc.png'\n"
               "set title 'Test AUC per domain (mean over seeds)'\n"
               "set style data histograms\n"
               "set style histogram clustered gap 1\n"
               "set style fill solid 0.8 border -1\n"
               "set ylabel 'AUC'\n"
               "set yrange [*:*]\n"
               "plot 'domain_auc.dat' using 2:xtic(1) title columnheader, '' using 3 title "
               "columnheader, '' using 4 title columnheader, '' using 5 title columnheader\n"
               "unset style\n"
               "set style data linespoints\n"
               "set output 'validation.png'\n"
               "set title 'Validation AUC per epoch (first seed)'\n"
               "set xlabel 'epoch'\n"
               "set ylabel 'validation AUC'\n");
    if (n_blocks > 0)
        fprintf(f, "plot for [i=0:%d] 'validation.dat' index i using 1:2 with linespoints "
                   "title columnheader(1)\n",
                n_blocks - 1);
    if (have_gate)
        fprintf(f, "set output 'gate.png'\n"
                   "set title 'Learned gate weights (rows: domains, columns: experts)'\n"
                   "unset key\n"
                   "set xlabel 'expert'\n"
                   "set ylabel 'domain'\n"
                   "set xtics 1\n"
                   "set ytics 1\n"
                   "set grid noytics\n"
                   "set yrange [] reverse\n"
                   "set cbrange [0:1]\n"
                   "set palette defined (0 'white', 1 'dark-blue')\n"
                   "plot 'gate.dat' matrix with image, '' matrix using 1:2:(sprintf('%%.2f', $3)) "
                   "with labels\n");
    return fclose(f) == 0 ? 0 : -1;
}

int plot_write(const char *dir, json_t *runs)
{
    if (!json_array_size(runs))
        return 0;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "mml-train: --plot: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    int n_blocks = 0, have_gate = 0;
    if (write_domain_auc(dir, runs) < 0 || write_validation(dir, runs, &n_blocks) < 0 ||
        write_gate(dir, runs, &have_gate) < 0 || write_script(dir, n_blocks, have_gate) < 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "mml-train: --plot: cannot start gnuplot: %s\n", strerror(errno));
        return 0;
    }
    if (pid == 0) {
        if (chdir(dir) != 0)
            _exit(126);
        execlp("gnuplot", "gnuplot", "plots.gp", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        fprintf(stderr, "mml-train: --plot: gnuplot not found (Debian: gnuplot-nox); wrote the "
                        "data files and %s/plots.gp\n", dir);
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "mml-train: --plot: gnuplot failed in %s (exit %d)\n", dir,
                WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
