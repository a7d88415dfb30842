/*
 * fuzz_http.c: libFuzzer target for the request head parser and the body decoder.
 *
 * The input is parsed as a head; if that succeeds, the remaining bytes are decoded as its body
 * in pieces whose sizes come from the input itself, to exercise every split point. The same bytes
 * then go through the line-range selector (with the head's offset/limit query values, as
 * GET /files/download?offset=&limit= uses them) and the WebSocket frame parser (as a PTY client's
 * frames after an upgrade).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "lines.h"
#include "ws.h"

/* Line selection over rest[0..n) in pieces of `step`; the output may only hold input bytes. */
static void fuzz_lines(const char *query, const char *rest, size_t n, size_t step)
{
    char *os = http_query_get(query, "offset"), *ls = http_query_get(query, "limit");
    long long off = line_param(os), lim = line_param(ls);
    struct line_range r;
    struct buf out = {0};
    size_t i;

    line_range_init(&r, off < 0 ? 1 : off % 64 + 1, lim < 0 ? -1 : lim % 64);
    for (i = 0; i < n && !r.done; i += step)
        line_range_feed(&r, rest + i, n - i < step ? n - i : step, &out);
    line_range_eof(&r);
    if (out.len > n)
        abort(); /* separators replace terminators: never more bytes than came in */
    buf_free(&out);
    free(os);
    free(ls);
}

/* WebSocket frames over a copy of rest[0..n): every parsed frame lies inside the input. */
static void fuzz_ws(const char *rest, size_t n)
{
    char *copy = malloc(n ? n : 1), *p;
    size_t left = n;

    if (!copy)
        return;
    memcpy(copy, rest, n);
    for (p = copy; left;) {
        struct ws_frame f;
        long used = ws_parse_frame(p, left, &f);
        if (used <= 0)
            break;
        if ((size_t)used > left || f.payload < p || f.payload + f.len > p + used)
            abort();
        p += used;
        left -= (size_t)used;
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_req r;
    struct http_body b;
    const char *p = (const char *)data;
    int n = http_parse_head(p, size, &r);
    size_t off, step;
    char *q;

    if (n <= 0)
        return 0;
    http_header(&r, "content-type");
    q = http_query_get(r.query, "path");
    free(q);
    http_body_init(&b, &r);
    off = (size_t)n;
    step = size > 0 ? (size_t)(data[0] % 7) + 1 : 1;
    while (off < size) {
        const char *out;
        size_t used, outlen, len = size - off < step ? size - off : step;
        int rc = http_body_feed(&b, p + off, len, &used, &out, &outlen);
        if (rc < 0 || rc == HTTP_BODY_DONE)
            break;
        if (rc == HTTP_BODY_DATA && outlen && (out < p || out + outlen > p + size))
            abort(); /* decoded spans must lie inside the input */
        off += used;
        if (used == 0 && rc == HTTP_BODY_MORE)
            break;
    }
    fuzz_lines(r.query, p + n, size - (size_t)n, step);
    fuzz_ws(p + n, size - (size_t)n);
    http_req_free(&r);
    return 0;
}
