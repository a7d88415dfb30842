/*
 * test_http.c: request head parsing, body de-framing and query decoding.
 */
#include <stdlib.h>

#include "../src/http.h"
#include "test.h"

static void test_simple_get(void)
{
    const char *s = "GET /files/info?path=%2Ftmp%2Fa+b&path=x HTTP/1.1\r\nHost: h\r\n"
                    "X-Execd-Access-Token:  tok \r\n\r\nNEXT";
    struct http_req r;
    int n = http_parse_head(s, strlen(s), &r);
    char *vals[4];
    int k;

    CHECK(n == (int)(strlen(s) - 4));
    CHECK_STR(r.method, "GET");
    CHECK_STR(r.path, "/files/info");
    CHECK_STR(http_header(&r, "x-execd-access-token"), "tok");
    CHECK(r.keep_alive == 1);
    CHECK(r.content_length == -1 && !r.chunked);
    k = http_query_getall(r.query, "path", vals, 4);
    CHECK(k == 2);
    if (k == 2) {
        CHECK_STR(vals[0], "/tmp/a b");
        CHECK_STR(vals[1], "x");
        free(vals[0]);
        free(vals[1]);
    }
    http_req_free(&r);
}

static void test_incomplete_and_errors(void)
{
    struct http_req r;
    char *big;

    CHECK(http_parse_head("GET / HTTP/1.1\r\nHost: x\r\n", 25, &r) == 0);
    CHECK(http_parse_head("GET / HTTP/2.0\r\n\r\n", 18, &r) == HTTP_ERR_BAD);
    CHECK(http_parse_head("GET  HTTP/1.1\r\n\r\n", 17, &r) == HTTP_ERR_BAD);
    CHECK(http_parse_head("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 33, &r) == HTTP_ERR_BAD);
    CHECK(http_parse_head("GET / HTTP/1.1\r\n folded\r\n\r\n", 27, &r) == HTTP_ERR_BAD);
    /* smuggling guards */
    {
        const char *s =
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        CHECK(http_parse_head(s, strlen(s), &r) == HTTP_ERR_BAD);
        s = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        CHECK(http_parse_head(s, strlen(s), &r) == HTTP_ERR_BAD);
        s = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        CHECK(http_parse_head(s, strlen(s), &r) == HTTP_ERR_NOT_IMPL);
        s = "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        CHECK(http_parse_head(s, strlen(s), &r) == HTTP_ERR_BAD);
    }
    big = malloc(HTTP_MAX_HEAD + 10);
    memset(big, 'a', HTTP_MAX_HEAD + 10);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    CHECK(http_parse_head(big, HTTP_MAX_HEAD + 10, &r) == HTTP_ERR_TOO_LARGE);
    free(big);
}

static void test_connection_close_and_http10(void)
{
    struct http_req r;
    const char *s = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n";

    CHECK(http_parse_head(s, strlen(s), &r) > 0 && r.keep_alive == 0);
    http_req_free(&r);
    s = "GET / HTTP/1.0\r\n\r\n";
    CHECK(http_parse_head(s, strlen(s), &r) > 0 && r.keep_alive == 0);
    http_req_free(&r);
    s = "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    CHECK(http_parse_head(s, strlen(s), &r) > 0 && r.upgrade == 1 && r.keep_alive == 1);
    http_req_free(&r);
}

/* Feeds `body` one byte at a time (the hardest split) and collects the decoded bytes. */
static int decode_bytewise(const char *head, const char *body, char *out, size_t outsz)
{
    struct http_req r;
    struct http_body b;
    size_t i = 0, olen = 0, n = strlen(body);
    int rc = 0;

    if (http_parse_head(head, strlen(head), &r) <= 0)
        return -1;
    http_body_init(&b, &r);
    while (rc != HTTP_BODY_DONE) {
        const char *o;
        size_t used, ol;
        size_t avail = i < n ? 1 : 0;
        rc = http_body_feed(&b, body + i, avail, &used, &o, &ol);
        if (rc < 0)
            break;
        if (rc == HTTP_BODY_DATA && olen + ol < outsz) {
            memcpy(out + olen, o, ol);
            olen += ol;
        }
        i += used;
        if (rc == HTTP_BODY_MORE && i >= n)
            break;
    }
    out[olen] = '\0';
    http_req_free(&r);
    return rc;
}

static void test_chunked_body(void)
{
    char out[256];
    const char *head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";

    CHECK(decode_bytewise(head,
                          "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nT: v\r\n\r\n", out,
                          sizeof(out)) == HTTP_BODY_DONE);
    CHECK_STR(out, "hello 0123456789");
    CHECK(decode_bytewise(head, "5\r\nhelloXX", out, sizeof(out)) == HTTP_ERR_BAD);
    CHECK(decode_bytewise(head, "zz\r\n", out, sizeof(out)) == HTTP_ERR_BAD);
    CHECK(decode_bytewise(head, "fffffffffffffffff\r\n", out, sizeof(out)) == HTTP_ERR_BAD);
    /* truncated: needs more */
    CHECK(decode_bytewise(head, "5\r\nhel", out, sizeof(out)) == HTTP_BODY_MORE);
}

static void test_length_body(void)
{
    char out[64];
    CHECK(decode_bytewise("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", "abcdef", out,
                          sizeof(out)) == HTTP_BODY_DONE);
    CHECK_STR(out, "abc");
    CHECK(decode_bytewise("GET / HTTP/1.1\r\n\r\n", "", out, sizeof(out)) == HTTP_BODY_DONE);
}

static void test_pct_decode(void)
{
    struct buf b = {0};
    CHECK(http_pct_decode(&b, "/a%20b+c", 8, 0) == 0);
    CHECK_STR(b.data, "/a b+c");
    buf_reset(&b);
    CHECK(http_pct_decode(&b, "a%2", 3, 0) < 0);
    buf_reset(&b);
    CHECK(http_pct_decode(&b, "a%zz", 4, 0) < 0);
    buf_free(&b);
}

void suite_http(void)
{
    test_simple_get();
    test_incomplete_and_errors();
    test_connection_close_and_http10();
    test_chunked_body();
    test_length_body();
    test_pct_decode();
}
