/* A chunked line reader: files are read in blocks, never whole. Plain POSIX
 * file descriptors, so no stdio buffer is allocated behind the context's allocator. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "data/data_internal.h"

#define CHUNK ((size_t)1 << 18)

int mml__lines_open(mml__lines *r, mml_ctx *ctx, const mml__source *src, size_t max_line)
{
    memset(r, 0, sizeof *r);
    r->fd = -1;
    r->name = src->name;
    r->ctx = ctx;
    r->max_line = max_line;
    r->at_start = 1;
    if (!src->path) {
        r->mem = src->mem ? src->mem : "";
        r->mem_len = src->mem ? src->mem_len : 0;
        r->end = r->mem_len;
        r->eof = 1;
        return MML_OK;
    }
    /* Room for the longest line plus its line end, and at least one chunk. */
    r->cap = max_line + 2 > CHUNK ? max_line + 2 : CHUNK;
    r->buf = mml__alloc(ctx, r->cap);
    if (!r->buf)
        return mml__error(ctx, MML_ENOMEM, "out of memory reading %s", src->name);
    do
        r->fd = open(src->path, O_RDONLY);
    while (r->fd < 0 && errno == EINTR);
    if (r->fd < 0) {
        int e = errno;
        mml__free(ctx, r->buf, r->cap);
        r->buf = NULL;
        return mml__error(ctx, MML_EIO, "%s: cannot open: %s", src->name, strerror(e));
    }
    return MML_OK;
}

void mml__lines_close(mml__lines *r)
{
    if (r->fd >= 0)
        close(r->fd);
    if (r->buf)
        mml__free(r->ctx, r->buf, r->cap);
    r->fd = -1;
    r->buf = NULL;
}

static const char *data(const mml__lines *r) { return r->fd >= 0 ? r->buf : r->mem; }

/* Moves the unread bytes to the front and reads more. */
static int fill(mml__lines *r)
{
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    while (!r->eof && r->end < r->cap) {
        ssize_t got = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return MML_EIO;
        }
        if (got == 0) {
            r->eof = 1;
            break;
        }
        r->end += (size_t)got;
        break;
    }
    return MML_OK;
}

static void skip_bom(mml__lines *r)
{
    const char *d = data(r);
    if (r->end - r->start >= 3 && (unsigned char)d[r->start] == 0xEF &&
        (unsigned char)d[r->start + 1] == 0xBB && (unsigned char)d[r->start + 2] == 0xBF)
        r->start += 3;
}

int mml__lines_next(mml__lines *r, const char **line, size_t *len)
{
    if (r->at_start) {
        if (r->fd >= 0) {
            /* Read until at least 3 bytes or end of file to see a BOM. */
            while (!r->eof && r->end < 3)
                if (fill(r) < 0)
                    return mml__error(r->ctx, MML_EIO, "%s: read error: %s", r->name, strerror(errno));
        }
        skip_bom(r);
        r->at_start = 0;
    }
    size_t scanned = 0; /* bytes after start known to hold no newline */
    for (;;) {
        const char *d = data(r);
        const char *p = memchr(d + r->start + scanned, '\n', r->end - r->start - scanned);
        if (p || r->eof) {
            size_t s = r->start;
            size_t e = p ? (size_t)(p - d) : r->end;
            if (!p && s == e)
                return 0;
            r->start = p ? e + 1 : e;
            r->line_no++;
            if (e > s && d[e - 1] == '\r')
                e--;
            if (e - s > r->max_line)
                return MML_EPARSE;
            *line = d + s;
            *len = e - s;
            return 1;
        }
        scanned = r->end - r->start;
        if (scanned > r->max_line + 1) {
            /* Too long: drop bytes up to the next newline. */
            r->line_no++;
            for (;;) {
                r->start = r->end = 0;
                if (fill(r) < 0)
                    return mml__error(r->ctx, MML_EIO, "%s: read error: %s", r->name, strerror(errno));
                const char *q = memchr(r->buf, '\n', r->end);
                if (q) {
                    r->start = (size_t)(q - r->buf) + 1;
                    return MML_EPARSE;
                }
                if (r->eof) {
                    r->start = r->end;
                    return MML_EPARSE;
                }
            }
        }
        if (fill(r) < 0)
            return mml__error(r->ctx, MML_EIO, "%s: read error: %s", r->name, strerror(errno));
    }
}
