/* mml-train's --add-domain (mml-train-add.c). */
#ifndef MML_TRAIN_ADD_H
#define MML_TRAIN_ADD_H

#include <moemlora/moemlora.h>

typedef struct add_domain_job {
    mml_ctx *ctx; /* seeded with the run's seed */
    const char *init, *save, *json;
    uint64_t seed;
    int64_t batch; /* for predictions */
    int quiet;
    const mml_dataset *train, *val, *test;
    mml_add_domain_options opt;
} add_domain_job;

/* 0 on success (*unchanged: the old domains' predictions kept their bits),
 * else a negative code, with the message printed. */
int mml_train_add_domain(const add_domain_job *job, int *unchanged);

#endif
