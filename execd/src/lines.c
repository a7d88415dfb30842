/*
 * lines.c: line splitter and UTF-8 repair, see lines.h.
 */
#include "lines.h"

#include <string.h>

#define LINES_DEFAULT_MAX (1024 * 1024)

/* Emits the pending line, cut into max-sized pieces if it is longer than that. */
static void lines_emit_pending(struct lines *l, size_t max, lines_emit_fn emit, void *ud)
{
    while (l->pending.len > max) {
        emit(ud, l->pending.data, max);
        buf_consume(&l->pending, max);
    }
    emit(ud, l->pending.data ? l->pending.data : "", l->pending.len);
    buf_reset(&l->pending);
}

void lines_feed(struct lines *l, const char *p, size_t n, lines_emit_fn emit, void *ud)
{
    size_t max = l->max_line ? l->max_line : LINES_DEFAULT_MAX;
    size_t i = 0, start;

    if (l->held_cr && n > 0) {
        l->held_cr = 0;
        if (p[0] == '\n')
            i = 1; /* the "\n" of a "\r\n" split across reads */
    }
    start = i;
    for (; i < n; i++) {
        if (p[i] != '\n' && p[i] != '\r')
            continue;
        buf_append(&l->pending, p + start, i - start);
        lines_emit_pending(l, max, emit, ud);
        if (p[i] == '\r') {
            if (i + 1 == n)
                l->held_cr = 1;
            else if (p[i + 1] == '\n')
                i++;
        }
        start = i + 1;
    }
    buf_append(&l->pending, p + start, n - start);
    while (l->pending.len > max) {
        emit(ud, l->pending.data, max);
        buf_consume(&l->pending, max);
    }
}

void lines_flush(struct lines *l, lines_emit_fn emit, void *ud)
{
    if (l->pending.len > 0)
        lines_emit_pending(l, l->max_line ? l->max_line : LINES_DEFAULT_MAX, emit, ud);
    l->held_cr = 0;
}

void lines_free(struct lines *l)
{
    buf_free(&l->pending);
    l->held_cr = 0;
}

size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (n >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        if (c == 0xED)
            hi = 0x9F; /* surrogates */
        if (n < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80)
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
        if (n < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

int utf8_fix(struct buf *out, const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t i = 0, run = 0, k;

    while (i < n) {
        k = utf8_seq_len(u + i, n - i);
        if (k) {
            i += k;
            continue;
        }
        if (buf_append(out, p + run, i - run) < 0 || buf_append(out, "\xEF\xBF\xBD", 3) < 0)
            return -1;
        i++;
        run = i;
    }
    return buf_append(out, p + run, n - run);
}

/* ---- line-range reads -------------------------------------------------------------------- */

void line_range_init(struct line_range *r, long long offset, long long limit)
{
    memset(r, 0, sizeof(*r));
    r->skip = offset > 1 ? offset - 1 : 0;
    r->left = limit;
    r->done = limit == 0;
}

/* Appends bytes of a selected line, starting the line (with its "\n" separator) if needed. */
static int range_put(struct line_range *r, const char *p, size_t n, struct buf *out)
{
    if (!r->in_line) {
        r->in_line = 1;
        if (r->emitted && buf_append(out, "\n", 1) < 0)
            return -1;
    }
    return n ? buf_append(out, p, n) : 0;
}

static void range_line_end(struct line_range *r)
{
    r->in_line = 0;
    r->held_cr = 0;
    if (r->skip) {
        r->skip--;
        return;
    }
    r->emitted++;
    if (r->left > 0 && --r->left == 0)
        r->done = 1;
}

int line_range_feed(struct line_range *r, const char *p, size_t n, struct buf *out)
{
    const char *end = p + n;

    while (p < end && !r->done) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;

        if (r->skip) {
            r->in_line = 1;
            if (nl)
                range_line_end(r);
            p = nl ? nl + 1 : end;
            continue;
        }
        if (nl) {
            size_t len = (size_t)(stop - p);
            if (r->held_cr) {
                /* a "\r" ending the previous chunk: content unless this "\n" follows it */
                r->held_cr = 0;
                if (len && range_put(r, "\r", 1, out) < 0)
                    return -1;
            }
            if (len && stop[-1] == '\r')
                len--; /* CRLF */
            if (range_put(r, p, len, out) < 0)
                return -1;
            range_line_end(r);
            p = nl + 1;
        } else {
            size_t len = (size_t)(end - p);
            int cr = end[-1] == '\r';
            if (r->held_cr) {
                r->held_cr = 0; /* not followed by "\n": it was content */
                if (range_put(r, "\r", 1, out) < 0)
                    return -1;
            }
            if (range_put(r, p, len - (size_t)cr, out) < 0)
                return -1;
            if (cr)
                r->held_cr = 1; /* decided by the next byte: "\n" ends the line */
            p = end;
        }
    }
    return r->done;
}

void line_range_eof(struct line_range *r)
{
    if (r->in_line && !r->done)
        range_line_end(r); /* a last line without "\n" (its trailing "\r" is dropped) */
    r->done = 1;
}

long long line_param(const char *s)
{
    long long v = 0;

    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 100000000000000LL)
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v >= 1 ? v : -1;
}
