/*
 * lines.h: splitting command output into lines, and UTF-8 repair.
 *
 * A command's stdout and stderr arrive as arbitrary byte chunks. The event stream sends one event
 * per line, so each stream owns a struct lines that buffers the unfinished tail. A line ends at
 * "\n", "\r" or "\r\n"; a "\r" at the very end of a chunk is held back until the next byte shows
 * whether it is followed by "\n" (so "\r\n" split across two reads still counts once).
 *
 * utf8_seq_len/utf8_fix implement the "invalid UTF-8 becomes U+FFFD" rule: one U+FFFD per
 * maximal invalid subsequence start byte (each byte that cannot start or continue a valid
 * sequence is replaced on its own).
 */
#ifndef EXECD_LINES_H
#define EXECD_LINES_H

#include <stddef.h>

#include "buf.h"

/* Emits one line (without terminator). `len` may be 0 for a blank line. */
typedef void (*lines_emit_fn)(void *ud, const char *line, size_t len);

struct lines {
    struct buf pending; /* bytes of the unfinished line */
    int held_cr;        /* the previous chunk ended in "\r" */
    size_t max_line;    /* force a line break after this many bytes (0: 1 MiB) */
};

void lines_feed(struct lines *l, const char *p, size_t n, lines_emit_fn emit, void *ud);
/* End of stream: emits the unfinished line, if any. */
void lines_flush(struct lines *l, lines_emit_fn emit, void *ud);
void lines_free(struct lines *l);

/* Length (1..4) of the valid UTF-8 sequence at p, or 0 if p does not start one. */
size_t utf8_seq_len(const unsigned char *p, size_t n);
/* Appends p to out with every invalid sequence replaced by U+FFFD. */
int utf8_fix(struct buf *out, const char *p, size_t n);

#endif
