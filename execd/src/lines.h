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

/*
 * Line-range reads (GET /files/download?offset=&limit=): a streaming selector that is fed a file's
 * bytes in chunks of any size and appends the selected lines to an output buffer, so a file is
 * never held in memory. Lines end at "\n"; a "\r" right before the "\n" (or at the end of the
 * file) is dropped; a final line without "\n" still counts. The selected lines are joined with
 * "\n" and the output has no trailing newline (as upstream's agent answers).
 */
struct line_range {
    long long skip;    /* lines still to skip before the first selected one */
    long long left;    /* lines still to emit; -1: no limit */
    long long emitted; /* lines emitted so far */
    int in_line;       /* bytes of the current line have been seen */
    int held_cr;       /* a "\r" at the end of the previous chunk, not yet emitted */
    int done;          /* the limit was reached: no more input is needed */
};

/* offset: first line (1-based); limit: line count, or -1 for every line to the end. */
void line_range_init(struct line_range *r, long long offset, long long limit);
/* Feeds p[0..n); appends selected bytes to out. Returns 1 once done, 0 for more, -1 on OOM. */
int line_range_feed(struct line_range *r, const char *p, size_t n, struct buf *out);
/* End of file: completes the last line. */
void line_range_eof(struct line_range *r);
/* Parses a query value for offset/limit: decimal digits only, 1..10^15. -1 when invalid. */
long long line_param(const char *s);

#endif
