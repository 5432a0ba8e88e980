/* The model file (docs/FORMAT.md): a 64-byte header, a section table, and
 * 64-byte aligned section payloads, each with its CRC-32C. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backbones/backbone_io.h"
#include "core/bytes.h"
#include "data/data_internal.h"
#include "model/model_file.h"
#include "model/model_internal.h"
#include "moemlora/model_file.h"

#define HEADER_SIZE 64u
#define ENTRY_SIZE 32u
#define MAX_SECTIONS 1024u
#define MAGIC "MMLMODEL"

#define SEC_CONFIG MML__SECTION_ID('C', 'O', 'N', 'F')
#define SEC_BACKBONE MML__SECTION_ID('B', 'K', 'B', 'N')
#define SEC_SCHEMA MML__SECTION_ID('S', 'C', 'H', 'M')
#define SEC_PARAMS MML__SECTION_ID('P', 'A', 'R', 'M')
#define SEC_DOMAINS MML__SECTION_ID('D', 'O', 'M', 'X')
/* Since 1.3, only for a gate with a per-domain table or row inputs (required:
 * an older reader would build the gate without its parameters). */
#define SEC_GATE_EXTRA MML__SECTION_ID('G', 'A', 'T', 'X')

/* Limits a file must respect before anything is allocated from it. */
#define MAX_FIELDS 4096
#define MAX_WIDTH (1 << 20)
#define MAX_PARAM_NAME 255
#define MAX_STATE_BYTES ((uint64_t)1 << 40)

typedef struct section {
    uint32_t id, flags;
    uint64_t offset, size;
    uint32_t crc;
} section;

static void id_text(uint32_t id, char out[5])
{
    for (int i = 0; i < 4; i++) {
        char c = (char)(id >> (8 * i));
        out[i] = c >= 32 && c < 127 ? c : '?';
    }
    out[4] = '\0';
}

/* ------------------------------------------------------------ writing */

static void write_config(mml__wbuf *w, const mml_model *m)
{
    const mml_model_options *o = &m->opt;
    mml__wbuf_i32(w, m->F);
    mml__wbuf_i32(w, m->M);
    mml__wbuf_i32(w, m->k);
    mml__wbuf_i32(w, m->n_dense);
    mml__wbuf_i32(w, m->D);
    mml__wbuf_i32(w, m->E);
    mml__wbuf_i32(w, o->gate);
    mml__wbuf_i32(w, o->gate_dim);
    mml__wbuf_i32(w, o->gate_top_k);
    mml__wbuf_i32(w, o->alpha);
    mml__wbuf_i32(w, o->n_hidden);
    mml__wbuf_i32(w, o->multihot_pooling);
    mml__wbuf_i32(w, m->final_mix);
    mml__wbuf_i32(w, 0);
    mml__wbuf_f32(w, o->embed_std);
    mml__wbuf_f32(w, o->dropout);
    mml__wbuf_f32(w, o->l2_embedding);
    mml__wbuf_f32(w, o->l2_dense);
    for (int32_t i = 0; i < o->n_hidden; i++)
        mml__wbuf_i32(w, m->hidden[i]);
    for (int32_t f = 0; f < m->F; f++)
        mml__wbuf_i64(w, m->field_sizes[f]);
    for (int32_t f = 0; f < m->M; f++)
        mml__wbuf_i64(w, m->mh_sizes[f]);
}

/* The save callback's bytes go after a u64 count that is patched at the end. */
static int append_to_wbuf(void *user, const void *data, size_t size)
{
    mml__wbuf *w = user;
    mml__wbuf_bytes(w, data, size);
    return mml__wbuf_status(w);
}

static int write_backbone(mml__wbuf *w, const mml_model *m)
{
    int32_t n = 0;
    const int32_t *words = mml__backbone_option_words(m->backbone, &n);
    int builtin = mml__backbone_is_builtin(m->backbone);
    mml__wbuf_str(w, m->backbone_name);
    mml__wbuf_u32(w, builtin ? 1u : 0u);
    mml__wbuf_i32(w, builtin ? n : 0);
    for (int32_t i = 0; builtin && i < n; i++)
        mml__wbuf_i32(w, words[i]);
    size_t at = w->len;
    mml__wbuf_u64(w, 0);
    int rc = mml__backbone_save_state(m->backbone, append_to_wbuf, w);
    if (rc < 0)
        return rc;
    mml__wbuf_patch_u64(w, at, (uint64_t)(w->len - at - 8));
    return mml__wbuf_status(w);
}

static void write_params(mml__wbuf *w, const mml_model *m)
{
    mml__wbuf_i64(w, m->n_params);
    for (int64_t i = 0; i < m->n_params; i++) {
        const mml_param *p = m->params[i];
        mml__wbuf_str(w, p->name);
        mml__wbuf_i64(w, p->rows);
        mml__wbuf_i64(w, p->cols);
        mml__wbuf_i32(w, p->group);
        mml__wbuf_i32(w, p->expert);
        mml__wbuf_align(w, 64);
        mml__wbuf_f32s(w, p->value, (size_t)(p->rows * p->cols));
    }
}

/* Builds the whole file in memory. */
static int build_file(const mml_model *m, const mml__section_out *extra, int32_t n_extra,
                      mml__wbuf *file)
{
    mml_ctx *ctx = m->ctx;
    if (n_extra < 0 || n_extra > 16)
        return mml__error(ctx, MML_EINVAL, "model save: %d extra sections", n_extra);
    mml__wbuf parts[5 + 16];
    uint32_t ids[5 + 16], flags[5 + 16];
    int32_t n = 0;
    int rc = MML_OK;
    for (int32_t i = 0; i < 5 + n_extra; i++)
        mml__wbuf_init(&parts[i], ctx);
    ids[n] = SEC_CONFIG, flags[n] = MML__SECTION_REQUIRED;
    write_config(&parts[n++], m);
    ids[n] = SEC_BACKBONE, flags[n] = MML__SECTION_REQUIRED;
    rc = write_backbone(&parts[n++], m);
    if (rc >= 0 && m->schema) {
        ids[n] = SEC_SCHEMA, flags[n] = 0;
        mml__schema_write(&parts[n++], m->schema);
    }
    if (rc >= 0 && m->gate && (m->opt.gate_domain_bias || m->opt.gate_input)) {
        ids[n] = SEC_GATE_EXTRA, flags[n] = MML__SECTION_REQUIRED;
        mml__wbuf_i32(&parts[n], m->opt.gate_domain_bias != 0);
        mml__wbuf_i32(&parts[n], m->opt.gate_input);
        mml__wbuf_f32(&parts[n], m->opt.gate_prior);
        mml__wbuf_i32(&parts[n++], 0);
    }
    ids[n] = SEC_PARAMS, flags[n] = MML__SECTION_REQUIRED;
    /* Parameter data is aligned within the section, which starts aligned. */
    write_params(&parts[n++], m);
    if (mml__model_has_domains_section(m)) {
        /* Required: a reader that cannot mask would predict the old domains wrongly. */
        ids[n] = SEC_DOMAINS, flags[n] = MML__SECTION_REQUIRED;
        mml__model_write_domains(&parts[n++], m);
    }
    for (int32_t i = 0; rc >= 0 && i < n_extra; i++) {
        ids[n] = extra[i].id, flags[n] = extra[i].flags;
        mml__wbuf_bytes(&parts[n++], extra[i].data, extra[i].size);
    }
    for (int32_t i = 0; rc >= 0 && i < n; i++)
        rc = mml__wbuf_status(&parts[i]);
    if (rc >= 0) {
        uint64_t table = HEADER_SIZE, off = table + (uint64_t)n * ENTRY_SIZE;
        off = (off + 63) / 64 * 64;
        mml__wbuf t;
        mml__wbuf_init(&t, ctx);
        uint64_t offsets[5 + 16];
        for (int32_t i = 0; i < n; i++) {
            offsets[i] = off;
            mml__wbuf_u32(&t, ids[i]);
            mml__wbuf_u32(&t, flags[i]);
            mml__wbuf_u64(&t, off);
            mml__wbuf_u64(&t, parts[i].len);
            mml__wbuf_u32(&t, mml__crc32c(0, parts[i].data, parts[i].len));
            mml__wbuf_u32(&t, 0);
            off = (off + parts[i].len + 63) / 64 * 64;
        }
        uint64_t file_size = n ? offsets[n - 1] + parts[n - 1].len : off;
        mml__wbuf_reserve(file, (size_t)file_size);
        mml__wbuf_bytes(file, MAGIC, 8);
        mml__wbuf_u16(file, MML_MODEL_FORMAT_MAJOR);
        mml__wbuf_u16(file, MML_MODEL_FORMAT_MINOR);
        mml__wbuf_u32(file, HEADER_SIZE);
        mml__wbuf_u64(file, file_size);
        mml__wbuf_u64(file, table);
        mml__wbuf_u32(file, (uint32_t)n);
        mml__wbuf_u32(file, mml__crc32c(0, t.data, t.len));
        mml__wbuf_u32(file, 0);
        mml__wbuf_zeros(file, 16);
        if ((rc = mml__wbuf_status(file)) >= 0)
            mml__wbuf_u32(file, mml__crc32c(0, file->data, 60));
        mml__wbuf_bytes(file, t.data, t.len);
        mml__wbuf_free(&t);
        for (int32_t i = 0; i < n; i++) {
            mml__wbuf_zeros(file, offsets[i] - file->len);
            mml__wbuf_bytes(file, parts[i].data, parts[i].len);
        }
        if (rc >= 0)
            rc = mml__wbuf_status(file);
    }
    for (int32_t i = 0; i < 5 + n_extra; i++)
        mml__wbuf_free(&parts[i]);
    return rc;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Temporary file beside path, flushed, renamed over it; the directory is
 * flushed too so the rename survives a crash. */
static int save_path(mml_ctx *ctx, const char *path, const uint8_t *data, size_t size)
{
    size_t len = strlen(path);
    char tmp[4096], dir[4096];
    if (len == 0 || len + 16 > sizeof tmp)
        return mml__error(ctx, MML_EINVAL, "model save: path of %zu bytes", len);
    /* open with O_EXCL rather than mkstemp, whose 0600 would ignore the
     * umask; the name mixes the process id and the clock. */
    int fd = -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    for (int attempt = 0; attempt < 64 && fd < 0; attempt++) {
        snprintf(tmp, sizeof tmp, "%s.tmp%ld.%lx", path, (long)getpid(),
                 (unsigned long)(ts.tv_nsec + attempt * 7919L));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0)
        return mml__error(ctx, MML_EIO, "%s: cannot make a temporary file beside it: %s", path,
                          strerror(errno));
    int err = 0;
    const char *step = "write";
    if (write_all(fd, data, size) < 0)
        err = errno ? errno : EIO;
    else if (step = "flush", fsync(fd) < 0)
        err = errno;
    if (close(fd) < 0 && !err) {
        step = "close";
        err = errno;
    }
    if (!err && (step = "rename", rename(tmp, path) < 0))
        err = errno;
    if (err) {
        unlink(tmp);
        return mml__error(ctx, MML_EIO, "%s: %s of the temporary file %s failed: %s", path, step,
                          tmp, strerror(err));
    }
    const char *slash = strrchr(path, '/');
    if (slash) {
        size_t dl = (size_t)(slash - path);
        memcpy(dir, path, dl ? dl : 1);
        dir[dl ? dl : 1] = '\0';
    } else {
        strcpy(dir, ".");
    }
    int dfd = open(dir, O_RDONLY);
    if (dfd >= 0) {
        (void)fsync(dfd); /* best effort: some file systems refuse it on directories */
        close(dfd);
    }
    return MML_OK;
}

int mml__model_save_io(const mml_model *m, const mml__section_out *extra, int32_t n_extra,
                       const mml__io *io)
{
    mml_ctx *ctx = m->ctx;
    mml__wbuf file;
    mml__wbuf_init(&file, ctx);
    int rc = build_file(m, extra, n_extra, &file);
    if (rc >= 0) {
        if (io->path) {
            rc = save_path(ctx, io->path, file.data, file.len);
        } else if (io->mem_out) {
            /* Reserved to the byte: the caller frees exactly len bytes. */
            *io->mem_out = file.data;
            *io->mem_out_size = file.len;
            file.data = NULL;
            file.cap = file.len = 0;
        } else {
            size_t chunk = 1 << 20;
            for (size_t at = 0; rc >= 0 && at < file.len; at += chunk) {
                size_t k = file.len - at < chunk ? file.len - at : chunk;
                int wr = io->write(io->user, file.data + at, k);
                if (wr != 0)
                    rc = mml__error(ctx, MML_ECALLBACK,
                                    "model save: the write callback returned %d at byte %zu", wr, at);
            }
        }
    }
    mml__wbuf_free(&file);
    return rc;
}

/* ------------------------------------------------------------ reading */

typedef struct loaded {
    mml_ctx *ctx;
    const uint8_t *data;
    uint64_t size;
    section sec[MAX_SECTIONS];
    uint32_t n_sec;
} loaded;

static int check_header(mml_ctx *ctx, const uint8_t *d, uint64_t size, uint64_t *file_size)
{
    if (size < 8 || memcmp(d, MAGIC, 8) != 0) {
        if (size < 8 && memcmp(d, MAGIC, (size_t)size) == 0)
            return mml__error(ctx, MML_ETRUNCATED, "model file: %llu bytes, shorter than its header",
                              (unsigned long long)size);
        return mml__error(ctx, MML_EFORMAT, "model file: not a model file (the first 8 bytes are not \"%s\")",
                          MAGIC);
    }
    if (size < 12)
        return mml__error(ctx, MML_ETRUNCATED, "model file: %llu bytes, shorter than its header",
                          (unsigned long long)size);
    mml__rbuf r;
    mml__rbuf_init(&r, ctx, d, (size_t)(size < HEADER_SIZE ? size : HEADER_SIZE), 0, "model file header");
    mml__rbuf_skip(&r, 8, "magic");
    uint16_t major = mml__rbuf_u16(&r, "format major");
    uint16_t minor = mml__rbuf_u16(&r, "format minor");
    if (major > MML_MODEL_FORMAT_MAJOR)
        return mml__error(ctx, MML_EVERSION,
                          "model file: format %u.%u is newer than this release reads (%d.x)", major,
                          minor, MML_MODEL_FORMAT_MAJOR);
    if (major < 1)
        return mml__error(ctx, MML_ECORRUPT, "model file: format major version 0");
    if (size < HEADER_SIZE)
        return mml__error(ctx, MML_ETRUNCATED, "model file: %llu bytes, shorter than its %u-byte header",
                          (unsigned long long)size, HEADER_SIZE);
    uint32_t hcrc = (uint32_t)d[60] | (uint32_t)d[61] << 8 | (uint32_t)d[62] << 16 | (uint32_t)d[63] << 24;
    if (mml__crc32c(0, d, 60) != hcrc)
        return mml__error(ctx, MML_ECHECKSUM, "model file header: CRC-32C mismatch");
    uint32_t hsize = mml__rbuf_u32(&r, "header size");
    *file_size = mml__rbuf_u64(&r, "file size");
    if (hsize != HEADER_SIZE)
        return mml__error(ctx, MML_ECORRUPT, "model file header at byte 12: header size %u, expected %u",
                          hsize, HEADER_SIZE);
    if (*file_size < HEADER_SIZE)
        return mml__error(ctx, MML_ECORRUPT, "model file header at byte 16: file size %llu",
                          (unsigned long long)*file_size);
    return MML_OK;
}

static int read_table(loaded *L)
{
    mml_ctx *ctx = L->ctx;
    const uint8_t *d = L->data;
    mml__rbuf r;
    mml__rbuf_init(&r, ctx, d, HEADER_SIZE, 0, "model file header");
    mml__rbuf_skip(&r, 24, "fixed fields");
    uint64_t table = mml__rbuf_u64(&r, "section table offset");
    uint32_t n = mml__rbuf_u32(&r, "section count");
    uint32_t tcrc = mml__rbuf_u32(&r, "section table CRC");
    if (n > MAX_SECTIONS)
        return mml__error(ctx, MML_ECORRUPT, "model file header at byte 32: %u sections, at most %u",
                          n, MAX_SECTIONS);
    if (table < HEADER_SIZE || table > L->size || (L->size - table) / ENTRY_SIZE < n)
        return mml__error(ctx, MML_ECORRUPT,
                          "model file header at byte 24: a table of %u sections at byte %llu exceeds "
                          "the file's %llu bytes", n, (unsigned long long)table,
                          (unsigned long long)L->size);
    if (mml__crc32c(0, d + table, (size_t)n * ENTRY_SIZE) != tcrc)
        return mml__error(ctx, MML_ECHECKSUM, "model file: section table CRC-32C mismatch");
    uint64_t table_end = table + (uint64_t)n * ENTRY_SIZE;
    mml__rbuf_init(&r, ctx, d + table, (size_t)n * ENTRY_SIZE, table, "model file section table");
    for (uint32_t i = 0; i < n; i++) {
        section *s = &L->sec[i];
        s->id = mml__rbuf_u32(&r, "section id");
        s->flags = mml__rbuf_u32(&r, "section flags");
        s->offset = mml__rbuf_u64(&r, "section offset");
        s->size = mml__rbuf_u64(&r, "section size");
        s->crc = mml__rbuf_u32(&r, "section CRC");
        mml__rbuf_skip(&r, 4, "reserved");
        char name[5];
        id_text(s->id, name);
        if (s->offset % 64 != 0 || s->offset < table_end || s->offset > L->size ||
            s->size > L->size - s->offset)
            return mml__error(ctx, MML_ECORRUPT,
                              "model file: section %u '%s' at byte %llu of %llu bytes is misaligned, "
                              "overlaps the table or exceeds the file's %llu bytes", i, name,
                              (unsigned long long)s->offset, (unsigned long long)s->size,
                              (unsigned long long)L->size);
        for (uint32_t j = 0; j < i; j++) {
            const section *t = &L->sec[j];
            if (t->id == s->id)
                return mml__error(ctx, MML_ECORRUPT, "model file: section '%s' appears twice", name);
            if (s->offset < t->offset + t->size && t->offset < s->offset + s->size)
                return mml__error(ctx, MML_ECORRUPT, "model file: sections %u and %u overlap", j, i);
        }
        if (mml__crc32c(0, d + s->offset, (size_t)s->size) != s->crc)
            return mml__error(ctx, MML_ECHECKSUM, "model file: section '%s' (bytes %llu..%llu): "
                              "CRC-32C mismatch", name, (unsigned long long)s->offset,
                              (unsigned long long)(s->offset + s->size));
        int known = s->id == SEC_CONFIG || s->id == SEC_BACKBONE || s->id == SEC_SCHEMA ||
                    s->id == SEC_PARAMS || s->id == MML__SECTION_TRAINER || s->id == SEC_DOMAINS ||
                    s->id == SEC_GATE_EXTRA;
        if (!known && (s->flags & MML__SECTION_REQUIRED))
            return mml__error(ctx, MML_ESECTION,
                              "model file: required section '%s' is unknown to this release (%s)",
                              name, mml_version_string());
    }
    L->n_sec = n;
    return mml__rbuf_status(&r);
}

static const section *find_section(const loaded *L, uint32_t id)
{
    for (uint32_t i = 0; i < L->n_sec; i++)
        if (L->sec[i].id == id)
            return &L->sec[i];
    return NULL;
}

static void section_reader(const loaded *L, const section *s, mml__rbuf *r, const char *where)
{
    mml__rbuf_init(r, L->ctx, L->data + s->offset, (size_t)s->size, s->offset, where);
}

/* The configuration, checked against limits and against the parameter
 * section's size before anything is allocated from it. */
typedef struct config {
    int32_t F, M, k, n_dense, D, E, gate, gate_dim, top_k, alpha, n_hidden, pooling, mix;
    float embed_std, dropout, l2_emb, l2_dense;
    int32_t hidden[64];
    int64_t *field_sizes, *mh_sizes;
} config;

static int read_config(const loaded *L, config *c, uint64_t param_bytes)
{
    mml_ctx *ctx = L->ctx;
    const section *s = find_section(L, SEC_CONFIG);
    if (!s)
        return mml__error(ctx, MML_ECORRUPT, "model file: no configuration section 'CONF'");
    mml__rbuf r;
    section_reader(L, s, &r, "model file section 'CONF'");
    c->F = mml__rbuf_i32(&r, "n_fields");
    c->M = mml__rbuf_i32(&r, "n_multihot");
    c->k = mml__rbuf_i32(&r, "embed_dim");
    c->n_dense = mml__rbuf_i32(&r, "n_dense");
    c->D = mml__rbuf_i32(&r, "n_domains");
    c->E = mml__rbuf_i32(&r, "n_experts");
    c->gate = mml__rbuf_i32(&r, "gate");
    c->gate_dim = mml__rbuf_i32(&r, "gate_dim");
    c->top_k = mml__rbuf_i32(&r, "gate_top_k");
    c->alpha = mml__rbuf_i32(&r, "alpha");
    c->n_hidden = mml__rbuf_i32(&r, "n_hidden");
    c->pooling = mml__rbuf_i32(&r, "multihot_pooling");
    c->mix = mml__rbuf_i32(&r, "final mixture mode");
    mml__rbuf_skip(&r, 4, "reserved");
    c->embed_std = mml__rbuf_f32(&r, "embed_std");
    c->dropout = mml__rbuf_f32(&r, "dropout");
    c->l2_emb = mml__rbuf_f32(&r, "l2_embedding");
    c->l2_dense = mml__rbuf_f32(&r, "l2_dense");
    if (mml__rbuf_status(&r) < 0)
        return mml__rbuf_status(&r);
    if (c->F < 1 || c->F > MAX_FIELDS || c->M < 0 || c->M > MAX_FIELDS - c->F || c->k < 1 ||
        c->k > 4096 || c->n_dense < 0 || c->n_dense > MAX_WIDTH || c->D < 1 || c->D > MAX_WIDTH ||
        c->E < 0 || c->E > 4096 || c->gate_dim < 0 || c->gate_dim > 4096 || c->n_hidden < 1 ||
        c->n_hidden > 64 || c->alpha < 1)
        return mml__error(ctx, MML_ECORRUPT,
                          "model file section 'CONF': fields %d, multi-hot %d, embed_dim %d, numeric "
                          "%d, domains %d, experts %d, gate_dim %d, n_hidden %d or alpha %d out of range",
                          c->F, c->M, c->k, c->n_dense, c->D, c->E, c->gate_dim, c->n_hidden, c->alpha);
    if (c->mix < MML_MIX_NONE || c->mix > MML_MIX_OWN || c->mix == MML_MIX_SINGLE)
        return mml__error(ctx, MML_ECORRUPT, "model file section 'CONF': final mixture mode %d", c->mix);
    if (!isfinite(c->embed_std) || !isfinite(c->dropout))
        return mml__error(ctx, MML_ECORRUPT, "model file section 'CONF': non-finite embed_std or dropout");
    /* Lower bound on the parameter floats: every table and tower matrix. */
    uint64_t floats = 0, prev = (uint64_t)(c->F + c->M) * (uint64_t)c->k + (uint64_t)c->n_dense;
    for (int32_t i = 0; i < c->n_hidden; i++) {
        c->hidden[i] = mml__rbuf_i32(&r, "hidden width");
        if (mml__rbuf_status(&r) < 0)
            return mml__rbuf_status(&r);
        if (c->hidden[i] < 1 || c->hidden[i] > MAX_WIDTH)
            return mml__rbuf_fail(&r, MML_ECORRUPT, "hidden width %d of layer %d", c->hidden[i], i);
        floats += prev * (uint64_t)c->hidden[i];
        prev = (uint64_t)c->hidden[i];
    }
    if (mml__rbuf_left(&r) / 8 < (uint64_t)(c->F + c->M))
        return mml__rbuf_fail(&r, MML_ETRUNCATED, "%d vocabulary sizes need %d bytes, %zu left",
                              c->F + c->M, 8 * (c->F + c->M), mml__rbuf_left(&r));
    c->field_sizes = mml__alloc(ctx, sizeof(int64_t) * (size_t)c->F);
    c->mh_sizes = mml__alloc(ctx, sizeof(int64_t) * (size_t)(c->M > 0 ? c->M : 1));
    if (!c->field_sizes || !c->mh_sizes)
        return mml__error(ctx, MML_ENOMEM, "model load: out of memory");
    for (int32_t f = 0; f < c->F + c->M; f++) {
        int64_t v = mml__rbuf_count(&r, 1, INT32_MAX, f < c->F ? "field size" : "multi-hot size");
        if (mml__rbuf_status(&r) < 0)
            return mml__rbuf_status(&r);
        if (f < c->F)
            c->field_sizes[f] = v;
        else
            c->mh_sizes[f - c->F] = v;
        floats += (uint64_t)v * (uint64_t)c->k;
    }
    if (mml__rbuf_left(&r) != 0)
        return mml__rbuf_fail(&r, MML_ECORRUPT, "%zu bytes after the configuration", mml__rbuf_left(&r));
    if (floats > param_bytes / 4)
        return mml__error(ctx, MML_ECORRUPT,
                          "model file: the configuration needs at least %llu parameter values, the "
                          "'PARM' section holds at most %llu", (unsigned long long)floats,
                          (unsigned long long)(param_bytes / 4));
    return MML_OK;
}

static int read_from_rbuf(void *user, void *data, size_t size)
{
    mml__rbuf *r = user;
    const void *p = mml__rbuf_bytes(r, size, "backbone state");
    if (!p)
        return r->status;
    memcpy(data, p, size);
    return MML_OK;
}

static int make_model(const loaded *L, const config *c, mml_model **out)
{
    mml_ctx *ctx = L->ctx;
    const section *s = find_section(L, SEC_BACKBONE);
    if (!s)
        return mml__error(ctx, MML_ECORRUPT, "model file: no backbone section 'BKBN'");
    mml__rbuf r;
    section_reader(L, s, &r, "model file section 'BKBN'");
    char *type = NULL;
    int rc = mml__rbuf_str(&r, &type, NULL, 31, 0, "backbone type name");
    if (rc < 0)
        return rc;
    uint32_t builtin = mml__rbuf_u32(&r, "built-in flag");
    int32_t nw = mml__rbuf_i32(&r, "option word count");
    int32_t words[MML__BACKBONE_MAX_WORDS];
    if (rc >= 0 && (nw < 0 || nw > MML__BACKBONE_MAX_WORDS))
        rc = mml__rbuf_fail(&r, MML_ECORRUPT, "%d option words, at most %d", nw, MML__BACKBONE_MAX_WORDS);
    for (int32_t i = 0; rc >= 0 && i < nw; i++)
        words[i] = mml__rbuf_i32(&r, "option word");
    uint64_t state_bytes = mml__rbuf_u64(&r, "backbone state size");
    if (rc >= 0 && (rc = mml__rbuf_status(&r)) >= 0 && state_bytes != mml__rbuf_left(&r))
        rc = mml__rbuf_fail(&r, MML_ECORRUPT, "backbone state of %llu bytes, %zu left",
                            (unsigned long long)state_bytes, mml__rbuf_left(&r));
    if (rc < 0) {
        mml__free(ctx, type, strlen(type) + 1);
        return rc;
    }
    int known = mml_backbone_known(ctx, type);
    int is_builtin = 0;
    for (int32_t i = 0; mml_backbone_builtin_name(i); i++)
        is_builtin |= strcmp(mml_backbone_builtin_name(i), type) == 0;
    if (!known) {
        rc = mml__error(ctx, MML_ENOTFOUND,
                        "model file: backbone type '%s' is neither built in nor registered on this "
                        "context (register it before loading)", type);
    } else if ((builtin != 0) != is_builtin) {
        rc = mml__error(ctx, MML_ECORRUPT, "model file section 'BKBN': backbone '%s' flagged %s",
                        type, builtin ? "built in" : "registered");
    } else if (!is_builtin && nw != 0) {
        rc = mml__error(ctx, MML_ECORRUPT, "model file section 'BKBN': %d option words for a "
                        "registered backbone", nw);
    }
    mml__backbone_saved_options so;
    const void *bopts = NULL;
    if (rc >= 0 && is_builtin)
        rc = mml__backbone_options_decode(ctx, type, words, nw, &so, &bopts);
    mml_model *m = NULL;
    if (rc >= 0) {
        mml_model_options o;
        mml_model_options_init(&o);
        o.n_fields = c->F;
        o.backbone = type;
        o.backbone_options = bopts;
        o.field_sizes = c->field_sizes;
        o.embed_dim = c->k;
        o.embed_std = c->embed_std;
        o.n_dense = c->n_dense;
        o.n_domains = c->D;
        o.n_experts = c->E;
        o.gate = c->gate;
        o.gate_dim = c->gate_dim;
        o.alpha = c->alpha;
        o.n_hidden = c->n_hidden;
        o.hidden = c->hidden;
        o.dropout = c->dropout;
        o.gate_top_k = c->top_k;
        o.l2_embedding = c->l2_emb;
        o.l2_dense = c->l2_dense;
        o.n_multihot = c->M;
        o.multihot_sizes = c->mh_sizes;
        o.multihot_pooling = c->pooling;
        const section *gx = find_section(L, SEC_GATE_EXTRA);
        if (gx) {
            mml__rbuf gr;
            section_reader(L, gx, &gr, "model file section 'GATX'");
            o.gate_domain_bias = mml__rbuf_i32(&gr, "gate domain bias");
            o.gate_input = mml__rbuf_i32(&gr, "gate input");
            o.gate_prior = mml__rbuf_f32(&gr, "gate prior");
            int32_t reserved = mml__rbuf_i32(&gr, "gate extra reserved");
            rc = mml__rbuf_status(&gr);
            if (rc >= 0 && (!c->gate || (o.gate_domain_bias != 0 && o.gate_domain_bias != 1) ||
                            o.gate_input < MML_GATE_INPUT_DOMAIN ||
                            o.gate_input > MML_GATE_INPUT_EMBEDDINGS_GRAD || reserved != 0 ||
                            !isfinite(o.gate_prior) || !(o.gate_prior >= 0.0f)))
                rc = mml__error(ctx, MML_ECORRUPT, "model file section 'GATX': domain bias %d, "
                                "gate input %d, prior %g or reserved %d invalid (gate %d)",
                                (int)o.gate_domain_bias, (int)o.gate_input, (double)o.gate_prior,
                                (int)reserved, (int)c->gate);
        }
        if (rc >= 0)
            rc = mml_model_create(&m, ctx, &o);
        if (rc < 0 && rc != MML_ENOMEM && rc != MML_ENOTFOUND && rc != MML_ECALLBACK) {
            char why[MML_ERRMSG_MAX];
            snprintf(why, sizeof why, "%s", mml_ctx_last_error(ctx));
            rc = mml__error(ctx, MML_ECORRUPT, "model file: the saved configuration is refused: %s", why);
        }
    }
    if (rc >= 0 && state_bytes > 0) {
        if (!mml__backbone_has_load(m->backbone))
            rc = mml__error(ctx, MML_ECORRUPT, "model file: %llu bytes of state for backbone '%s', "
                            "which has no load callback", (unsigned long long)state_bytes, type);
        else
            rc = mml__backbone_load_state(m->backbone, read_from_rbuf, &r);
        if (rc >= 0 && mml__rbuf_left(&r) != 0)
            rc = mml__error(ctx, MML_ECORRUPT, "model file: backbone '%s' left %zu of its %llu state "
                            "bytes unread", type, mml__rbuf_left(&r), (unsigned long long)state_bytes);
    }
    mml__free(ctx, type, strlen(type) + 1);
    if (rc < 0) {
        mml_model_destroy(m);
        return rc;
    }
    m->final_mix = c->mix;
    *out = m;
    return MML_OK;
}

static int read_params(const loaded *L, mml_model *m)
{
    mml_ctx *ctx = L->ctx;
    const section *s = find_section(L, SEC_PARAMS);
    if (!s)
        return mml__error(ctx, MML_ECORRUPT, "model file: no parameter section 'PARM'");
    mml__rbuf r;
    section_reader(L, s, &r, "model file section 'PARM'");
    int64_t n = mml__rbuf_i64(&r, "parameter count");
    if (mml__rbuf_status(&r) < 0)
        return mml__rbuf_status(&r);
    if (n != m->n_params)
        return mml__rbuf_fail(&r, MML_ECORRUPT, "%lld parameters, the configuration makes %lld",
                              (long long)n, (long long)m->n_params);
    for (int64_t i = 0; i < n; i++) {
        mml_param *p = m->params[i];
        char *name = NULL;
        size_t len = 0;
        if (mml__rbuf_str(&r, &name, &len, MAX_PARAM_NAME, 0, "parameter name") < 0)
            return mml__rbuf_status(&r);
        int same = strcmp(name, p->name) == 0;
        mml__free(ctx, name, len + 1);
        int64_t rows = mml__rbuf_i64(&r, "rows"), cols = mml__rbuf_i64(&r, "cols");
        int32_t group = mml__rbuf_i32(&r, "group"), expert = mml__rbuf_i32(&r, "expert");
        if (mml__rbuf_status(&r) < 0)
            return mml__rbuf_status(&r);
        if (!same || rows != p->rows || cols != p->cols || group != p->group || expert != p->expert)
            return mml__rbuf_fail(&r, MML_ECORRUPT,
                                  "parameter %lld is not '%s' (%lld x %lld, group %d, expert %d) as the "
                                  "configuration makes it", (long long)i, p->name, (long long)p->rows,
                                  (long long)p->cols, p->group, p->expert);
        mml__rbuf_align(&r, 64, "alignment");
        if (mml__rbuf_f32s(&r, p->value, (size_t)(p->rows * p->cols), p->name) < 0)
            return mml__rbuf_status(&r);
    }
    if (mml__rbuf_left(&r) != 0)
        return mml__rbuf_fail(&r, MML_ECORRUPT, "%zu bytes after the last parameter", mml__rbuf_left(&r));
    for (int64_t i = 0; i < n; i++) {
        const mml_param *p = m->params[i];
        for (int64_t j = 0; j < p->rows * p->cols; j++)
            if (!isfinite(p->value[j]))
                return mml__error(ctx, MML_ECORRUPT, "model file: parameter '%s' holds a non-finite "
                                  "value at index %lld", p->name, (long long)j);
    }
    return MML_OK;
}

static int load_bytes(mml_model **out, mml_ctx *ctx, const uint8_t *data, uint64_t size,
                      uint32_t want_id, void **payload, size_t *payload_size)
{
    uint64_t file_size = 0;
    int rc = check_header(ctx, data, size, &file_size);
    if (rc < 0)
        return rc;
    if (size < file_size)
        return mml__error(ctx, MML_ETRUNCATED, "model file: %llu bytes, its header says %llu",
                          (unsigned long long)size, (unsigned long long)file_size);
    if (size > file_size)
        return mml__error(ctx, MML_ECORRUPT, "model file: %llu bytes after the %llu its header names",
                          (unsigned long long)(size - file_size), (unsigned long long)file_size);
    loaded *L = mml__calloc(ctx, 1, sizeof *L);
    if (!L)
        return mml__error(ctx, MML_ENOMEM, "model load: out of memory");
    L->ctx = ctx;
    L->data = data;
    L->size = size;
    config c;
    memset(&c, 0, sizeof c);
    mml_model *m = NULL;
    const section *ps = NULL;
    if ((rc = read_table(L)) >= 0 && !(ps = find_section(L, SEC_PARAMS)))
        rc = mml__error(ctx, MML_ECORRUPT, "model file: no parameter section 'PARM'");
    if (rc >= 0 && ps)
        rc = read_config(L, &c, ps->size);
    if (rc >= 0)
        rc = make_model(L, &c, &m);
    if (rc >= 0)
        rc = read_params(L, m);
    const section *xs = rc >= 0 ? find_section(L, SEC_DOMAINS) : NULL;
    if (xs) {
        mml__rbuf r;
        section_reader(L, xs, &r, "model file section 'DOMX'");
        rc = mml__model_read_domains(m, &r);
    }
    const section *ss = rc >= 0 ? find_section(L, SEC_SCHEMA) : NULL;
    if (ss) {
        mml__rbuf r;
        section_reader(L, ss, &r, "model file section 'SCHM'");
        rc = mml__schema_read(ctx, &r, &m->schema);
        if (rc >= 0 && mml__rbuf_left(&r) != 0)
            rc = mml__rbuf_fail(&r, MML_ECORRUPT, "%zu bytes after the schema", mml__rbuf_left(&r));
        if (rc >= 0 && (rc = mml__model_check_schema(m, m->schema)) < 0) {
            char why[MML_ERRMSG_MAX];
            snprintf(why, sizeof why, "%s", mml_ctx_last_error(ctx));
            rc = mml__error(ctx, MML_ECORRUPT, "model file section 'SCHM': %s", why);
        }
    }
    if (rc >= 0 && want_id) {
        const section *ws = find_section(L, want_id);
        *payload = NULL;
        *payload_size = 0;
        if (ws && ws->size > 0) {
            *payload = mml__alloc(ctx, (size_t)ws->size);
            if (!*payload)
                rc = mml__error(ctx, MML_ENOMEM, "model load: out of memory");
            else {
                memcpy(*payload, data + ws->offset, (size_t)ws->size);
                *payload_size = (size_t)ws->size;
            }
        }
    }
    mml__free(ctx, c.field_sizes, sizeof(int64_t) * (size_t)c.F);
    mml__free(ctx, c.mh_sizes, sizeof(int64_t) * (size_t)(c.M > 0 ? c.M : 1));
    mml__free(ctx, L, sizeof *L);
    if (rc < 0) {
        mml_model_destroy(m);
        return rc;
    }
    *out = m;
    return MML_OK;
}

static int read_fd_all(mml_ctx *ctx, const char *path, uint8_t **data, size_t *size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return mml__error(ctx, errno == ENOENT ? MML_ENOTFOUND : MML_EIO, "%s: cannot open: %s", path,
                          strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mml__error(ctx, MML_EIO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = mml__alloc(ctx, n ? n : 1);
    if (!buf) {
        close(fd);
        return mml__error(ctx, MML_ENOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    if (got != n) {
        mml__free(ctx, buf, n ? n : 1);
        return mml__error(ctx, MML_EIO, "%s: read %zu of %zu bytes", path, got, n);
    }
    *data = buf;
    *size = n;
    return MML_OK;
}

int mml__model_load_io(mml_model **out, mml_ctx *ctx, const mml__io *io, uint32_t want_id,
                       void **payload, size_t *payload_size)
{
    if (want_id) {
        *payload = NULL;
        *payload_size = 0;
    }
    if (io->mem)
        return load_bytes(out, ctx, io->mem, io->mem_size, want_id, payload, payload_size);
    uint8_t *buf = NULL;
    size_t size = 0, cap = 0;
    int rc;
    if (io->path) {
        rc = read_fd_all(ctx, io->path, &buf, &size);
        cap = size ? size : 1;
    } else {
        uint8_t head[HEADER_SIZE];
        int r = io->read(io->user, head, HEADER_SIZE);
        uint64_t file_size = 0;
        if (r != 0)
            rc = mml__error(ctx, MML_ETRUNCATED, "model load: the read callback returned %d for the "
                            "header", r);
        else
            rc = check_header(ctx, head, HEADER_SIZE, &file_size);
        if (rc >= 0 && file_size > SIZE_MAX / 2)
            rc = mml__error(ctx, MML_ECORRUPT, "model file header: file size %llu",
                            (unsigned long long)file_size);
        if (rc >= 0) {
            size = cap = (size_t)file_size;
            buf = mml__alloc(ctx, cap);
            if (!buf)
                rc = mml__error(ctx, MML_ENOMEM, "model load: out of memory for %zu bytes", cap);
        }
        if (rc >= 0 && buf) {
            memcpy(buf, head, HEADER_SIZE);
            if (size > HEADER_SIZE && (r = io->read(io->user, buf + HEADER_SIZE, size - HEADER_SIZE)) != 0)
                rc = mml__error(ctx, MML_ETRUNCATED, "model load: the read callback returned %d "
                                "for bytes %u..%zu", r, HEADER_SIZE, size);
        }
    }
    if (rc >= 0)
        rc = load_bytes(out, ctx, buf, size, want_id, payload, payload_size);
    mml__free(ctx, buf, cap);
    return rc;
}

/* ------------------------------------------------------------ public */

int mml_model_save(const mml_model *model, const char *path)
{
    if (!model)
        return MML_EINVAL;
    if (!path)
        return mml__error(model->ctx, MML_EINVAL, "model_save: NULL path");
    mml__io io = {.path = path};
    return mml__model_save_io(model, NULL, 0, &io);
}

int mml_model_save_mem(const mml_model *model, void **data, size_t *size)
{
    if (data)
        *data = NULL;
    if (size)
        *size = 0;
    if (!model)
        return MML_EINVAL;
    if (!data || !size)
        return mml__error(model->ctx, MML_EINVAL, "model_save_mem: NULL output");
    mml__io io = {.mem_out = data, .mem_out_size = size};
    return mml__model_save_io(model, NULL, 0, &io);
}

int mml_model_save_cb(const mml_model *model, mml_write_fn write, void *user)
{
    if (!model)
        return MML_EINVAL;
    if (!write)
        return mml__error(model->ctx, MML_EINVAL, "model_save_cb: NULL callback");
    mml__io io = {.write = write, .user = user};
    return mml__model_save_io(model, NULL, 0, &io);
}

int mml_model_load(mml_model **out, mml_ctx *ctx, const char *path)
{
    if (out)
        *out = NULL;
    if (!out || !ctx || !path)
        return mml__error(ctx, MML_EINVAL, "model_load: NULL argument");
    mml__io io = {.path = path};
    return mml__model_load_io(out, ctx, &io, 0, NULL, NULL);
}

int mml_model_load_mem(mml_model **out, mml_ctx *ctx, const void *data, size_t size)
{
    if (out)
        *out = NULL;
    if (!out || !ctx || (!data && size))
        return mml__error(ctx, MML_EINVAL, "model_load_mem: NULL argument");
    mml__io io = {.mem = data ? data : "", .mem_size = size};
    return mml__model_load_io(out, ctx, &io, 0, NULL, NULL);
}

int mml_model_load_cb(mml_model **out, mml_ctx *ctx, mml_read_fn read, void *user)
{
    if (out)
        *out = NULL;
    if (!out || !ctx || !read)
        return mml__error(ctx, MML_EINVAL, "model_load_cb: NULL argument");
    mml__io io = {.read = read, .user = user};
    return mml__model_load_io(out, ctx, &io, 0, NULL, NULL);
}
