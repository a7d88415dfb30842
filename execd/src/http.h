/*
 * http.h: the agent's HTTP/1.1 request parser (heads, body framing, URL decoding).
 *
 * Why hand-written: the agent must be one static musl binary with no runtime dependencies, and
 * none of the HTTP server libraries installed here (libmicrohttpd, etc.) are available as static
 * musl archives. The agent only needs a small, strict subset of HTTP/1.1, so it is parsed here,
 * with no dependence on I/O: the functions take bytes and return results, which is what the unit
 * tests and the libFuzzer target drive.
 *
 * - http_parse_head: the request line and headers, up to HTTP_MAX_HEAD bytes (else 431).
 * - struct http_body: incremental decoder for Content-Length and chunked bodies.
 * - percent/query decoding helpers.
 */
#ifndef EXECD_HTTP_H
#define EXECD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define HTTP_MAX_HEAD (64 * 1024)
#define HTTP_MAX_HEADERS 128

#define HTTP_ERR_BAD (-400)
#define HTTP_ERR_TOO_LARGE (-431)
#define HTTP_ERR_NOT_IMPL (-501)

struct http_header {
    const char *name;
    const char *value;
};

struct http_req {
    char *head; /* owned copy of the head; every pointer below points into it */
    const char *method;
    const char *target; /* raw request target */
    const char *path;   /* raw path (target up to '?') */
    const char *query;  /* raw query after '?', or "" */
    int minor;          /* HTTP/1.<minor> */
    struct http_header headers[HTTP_MAX_HEADERS];
    int nheaders;
    int64_t content_length; /* -1 when absent */
    int chunked;
    int keep_alive;
    int expect_continue;
    int upgrade; /* Connection: upgrade was requested */
};

/*
 * Parses a request head from p[0..n). Returns the head length (> 0) when a full head was
 * parsed into r, 0 when more bytes are needed, or HTTP_ERR_* on a malformed or oversized head.
 * On success the caller must http_req_free(r).
 */
int http_parse_head(const char *p, size_t n, struct http_req *r);
void http_req_free(struct http_req *r);
/* Case-insensitive header lookup; the first occurrence, or NULL. */
const char *http_header(const struct http_req *r, const char *name);

enum { HTTP_BODY_MORE = 0, HTTP_BODY_DATA = 1, HTTP_BODY_DONE = 2 };

struct http_body {
    int chunked;
    uint64_t left; /* Content-Length bytes left, or bytes left in the current chunk */
    int state;
    size_t line; /* length of the current size/trailer line */
    int digits;
};

void http_body_init(struct http_body *b, const struct http_req *r);
/*
 * Consumes input from in[0..n), setting *used. Returns HTTP_BODY_DATA with one decoded span in
 * (*out, *outlen) (a slice of `in`), HTTP_BODY_MORE when the input was used up without data,
 * HTTP_BODY_DONE when the body is complete, or HTTP_ERR_BAD on malformed chunk framing.
 */
int http_body_feed(struct http_body *b, const char *in, size_t n, size_t *used, const char **out,
                   size_t *outlen);

/* Percent-decodes (and, with form != 0, turns '+' into ' '). -1 on a bad escape. */
int http_pct_decode(struct buf *out, const char *s, size_t n, int form);
/* Decodes the values of query key `key` (form rules) into vals[0..max); returns the count. */
int http_query_getall(const char *query, const char *key, char **vals, int max);
/* First value of `key` (malloc'd) or NULL. */
char *http_query_get(const char *query, const char *key);

#endif
