/*
 * buf.h: a growing byte buffer (the agent's only string builder).
 *
 * Every piece of output (HTTP heads, JSON bodies, chunk frames, command logs) is built in a
 * struct buf. The data is always NUL-terminated after `len` so it can be handed to libc string
 * functions, but it may also hold binary data. A zeroed struct is a valid empty buffer.
 */
#ifndef EXECD_BUF_H
#define EXECD_BUF_H

#include <stddef.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);
void buf_free(struct buf *b);

#endif
