/*
 * multipart.h: a streaming multipart/form-data parser (RFC 7578), for POST /files/upload.
 *
 * Bytes are fed in arbitrary pieces; part contents are handed to the on_data callback as they
 * are found, so a 100 MB file part is never held in memory. At most one delimiter's worth of
 * bytes (plus a part's header block, capped at MP_MAX_HEADERS) is buffered.
 *
 * Callbacks return 0 to continue or -1 to abort the parse (mp_feed then returns -1 too).
 */
#ifndef EXECD_MULTIPART_H
#define EXECD_MULTIPART_H

#include <stddef.h>

#include "buf.h"

#define MP_MAX_BOUNDARY 200
#define MP_MAX_HEADERS (16 * 1024)

struct mp_part {
    char name[256];
    char filename[1024];
    char content_type[256];
};

struct mp_callbacks {
    int (*on_part)(void *ud, const struct mp_part *part);
    int (*on_data)(void *ud, const char *p, size_t n);
    int (*on_part_end)(void *ud);
};

struct mp {
    char delim[MP_MAX_BOUNDARY + 8]; /* "\r\n--" boundary */
    size_t delim_len;
    int state;
    struct buf in;
    struct mp_callbacks cb;
    void *ud;
    const char *error; /* static description of the first error */
};

/* Extracts the boundary parameter of a Content-Type value into out. -1 if absent/invalid. */
int mp_boundary_from_content_type(const char *ctype, char *out, size_t outsz);
int mp_init(struct mp *m, const char *boundary, const struct mp_callbacks *cb, void *ud);
/* 0 on progress, -1 on malformed input or a callback abort (m->error says why). */
int mp_feed(struct mp *m, const char *p, size_t n);
/* Call at the end of the body: 0 if the closing delimiter was seen, else -1. */
int mp_finish(struct mp *m);
void mp_free(struct mp *m);

#endif
