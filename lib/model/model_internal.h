/* The composed model's state, shared by model.c, the model file and
 * sessions (private). */
#ifndef MML_MODEL_INTERNAL_H
#define MML_MODEL_INTERNAL_H

#include "core/internal.h"
#include "moemlora/backbone.h"
#include "moemlora/embedding.h"
#include "moemlora/model.h"

struct mml__schema;

#define NAME_LEN 32

struct mml_model {
    mml_ctx *ctx;
    int32_t F, k, n_dense, D, E, linear;
    float l2_emb, l2_dense;
    mml_embedding **emb;   /* F tables */
    mml_embedding **first; /* F first-order tables (n_rows x 1), with a linear term */
    int32_t M, pool;       /* multi-hot fields and their pooling */
    mml_embedding **mh;    /* M tables */
    int64_t *mh_start;     /* M + 1: field m's ids of the last batch start at mh_idbuf[mh_start[m]] */
    int64_t *mh_off;       /* M * (n + 1) offsets of the last batch, from 0 per field */
    int32_t *mh_idbuf;
    size_t cap_mhoff, cap_mhid;
    mml_param dense_w;     /* 1 x n_dense, with a linear term and numeric values */
    mml_param bias;
    float bias_value, bias_grad;
    mml_backbone *backbone;
    mml_gate *gate;
    char *names;
    int64_t n_params;
    mml_param **params;
    /* Scratch of the last forward pass. */
    int64_t n;
    int32_t mode;
    size_t cap_emb, cap_demb, cap_lin, cap_dense, cap_dw, cap_ids, cap_own;
    float *embbuf, *demb, *lin, *dense, *dweights, *own;
    float *idsbuf; /* ids and domains of the batch, as int32 in float-sized slots */
    float *sortbuf; /* one field's ids of the batch, sorted (int32 in float slots) */
    size_t cap_sort;
    /* What the model file saves: the creation options (arrays copied below,
     * backbone options left to the backbone's save callback). */
    mml_model_options opt;
    char backbone_name[32];
    int32_t *hidden;       /* opt.n_hidden */
    int64_t *field_sizes;  /* F */
    int64_t *mh_sizes;     /* M */
    int32_t final_mix;     /* MML_MIX_* of the model's final prediction */
    struct mml__schema *schema; /* raw values -> ids; NULL when unknown */
    int32_t readonly;      /* mml_model_make_readonly(): no gradients */
    /* Threads splitting the backbone's rows (parallel.c); created with the
     * first batch that uses them. */
    struct mml__par *par;
    int32_t no_split;      /* a session's copy: one thread */
    int32_t replay;        /* dropout replay (gradient checks): one thread */
    /* E: the domain each expert belongs to, for a model that gained domains
     * (add_domain.c); NULL: expert e belongs to domain e mod D. */
    int32_t *owner;
};

/* parallel.c */
typedef struct mml__par mml__par;
void mml__par_destroy(mml__par *p);
/* The backbone's forward pass over in's rows: cut into one slice per
 * thread of the context when the model and the batch allow it, else in the
 * caller's thread alone. */
int mml__par_forward(mml_model *m, const struct mml_backbone_input *in, float *logits);
/* Backward of the last mml__par_forward(): a split pass's copies add their
 * gradients to the model's, in slice order. */
int mml__par_backward(mml_model *m, const float *dlogits, const struct mml_backbone_grads *g);
/* Folds the copies' kinks of the last forward pass into h. */
uint64_t mml__par_kink_pattern(const mml_model *m, uint64_t h);

/* add_domain.c: the domain expert e belongs to. */
int32_t mml__model_expert_owner(const mml_model *m, int32_t e);
struct mml_add_domain_options;
int mml__add_domain_check_options(mml_ctx *ctx, const struct mml_add_domain_options *o);
/* The model file's section 'DOMX' (owners and mask of a model that gained
 * domains): whether m needs it, its payload, and reading it into m (after
 * the parameters; MML_ECORRUPT naming what is wrong). */
struct mml__wbuf;
struct mml__rbuf;
int mml__model_has_domains_section(const mml_model *m);
void mml__model_write_domains(struct mml__wbuf *w, const mml_model *m);
int mml__model_read_domains(mml_model *m, struct mml__rbuf *r);

/* MML_ESHAPE unless s describes m's inputs (fields, sizes, numeric,
 * multi-hot, domains). */
int mml__model_check_schema(const mml_model *m, const struct mml__schema *s);
/* MML_OK when mode (an MML_MIX_* value) is one the model can serve;
 * otherwise the code of mml_model_forward() with a message naming `what`. */
int mml__model_check_mode(const mml_model *m, mml_ctx *ctx, int32_t mode, const char *what);

#endif
