/*
 * buf.h: a growable byte buffer with a read offset (the core's strbuf). Used for request bodies,
 * streamed response chunks and client responses. Functions return 0 or -ENOMEM.
 */
#ifndef OSB_BUF_H
#define OSB_BUF_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len; /* bytes stored, from data[0] */
    size_t off; /* bytes already consumed from the front */
    size_t cap;
} buf_t;

static inline int buf_reserve(buf_t *b, size_t extra)
{
    if (b->off && b->off == b->len) {
        b->off = b->len = 0;
    }
    if (b->len + extra <= b->cap)
        return 0;
    if (b->off) { /* compact before growing */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap)
            return 0;
    }
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + extra)
        ncap *= 2;
    char *n = realloc(b->data, ncap);
    if (!n)
        return -ENOMEM;
    b->data = n;
    b->cap = ncap;
    return 0;
}

static inline int buf_append(buf_t *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -ENOMEM;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static inline size_t buf_avail(const buf_t *b)
{
    return b->len - b->off;
}

static inline void buf_free(buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->off = b->cap = 0;
}

#endif
