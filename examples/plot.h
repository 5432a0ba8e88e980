/* mml-train --plot DIR: data files, a gnuplot script and PNG charts. */
#ifndef MML_EXAMPLES_PLOT_H
#define MML_EXAMPLES_PLOT_H

#include <jansson.h>
#include <moemlora/moemlora.h>

/* The trainer's epoch reports: [{stage, expert, epoch, validation}, ...]. */
json_t *plot_epochs_json(const mml_trainer *tr);
/* Writes DIR/{domain_auc,validation,gate}.dat and DIR/plots.gp from the runs
 * (the objects mml-train prints), then runs gnuplot there for the PNGs.
 * 0 on success (also when gnuplot is missing: said on stderr); -1 when a file
 * cannot be written (said on stderr). */
int plot_write(const char *dir, json_t *runs);

#endif
