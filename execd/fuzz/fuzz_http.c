/*
 * fuzz_http.c: libFuzzer target for the request head parser and the body decoder.
 *
 * The input is parsed as a head; if that succeeds, the remaining bytes are decoded as its body
 * in pieces whose sizes come from the input itself, to exercise every split point.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "http.h"

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
    http_req_free(&r);
    return 0;
}
