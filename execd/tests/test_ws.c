/*
 * test_ws.c: WebSocket handshake key (SHA-1, base64) and frame parsing/encoding (RFC 6455).
 */
#include "../src/ws.h"
#include "test.h"

#include <stdlib.h>

static void hex(const unsigned char *d, size_t n, char *out)
{
    size_t i;
    for (i = 0; i < n; i++)
        sprintf(out + i * 2, "%02x", d[i]);
}

static void test_sha1_base64(void)
{
    unsigned char d[20];
    char h[41], b[64], *big;

    sha1("abc", 3, d);
    hex(d, 20, h);
    CHECK_STR(h, "a9993e364706816aba3e25717850c26c9cd0d89d");
    sha1("", 0, d);
    hex(d, 20, h);
    CHECK_STR(h, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    /* 56 bytes: the padding needs a second block */
    sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d);
    hex(d, 20, h);
    CHECK_STR(h, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    big = malloc(1000000);
    memset(big, 'a', 1000000);
    sha1(big, 1000000, d);
    hex(d, 20, h);
    CHECK_STR(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(big);
    base64_encode((const unsigned char *)"f", 1, b);
    CHECK_STR(b, "Zg==");
    base64_encode((const unsigned char *)"fo", 2, b);
    CHECK_STR(b, "Zm8=");
    base64_encode((const unsigned char *)"foobar", 6, b);
    CHECK_STR(b, "Zm9vYmFy");
    ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", b); /* RFC 6455 section 1.3 */
    CHECK_STR(b, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_frames(void)
{
    /* RFC 6455 5.7: a masked "Hello" */
    char hello[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    char unmasked[] = "\x81\x05Hello";
    char bad_rsv[] = "\xC1\x80\0\0\0\0";
    char bad_op[] = "\x83\x80\0\0\0\0";
    char frag_ping[] = "\x09\x80\0\0\0\0";
    char long_ping[] = "\x89\xFE\x00\x7E\0\0\0\0";
    char huge[] = "\x82\xFF\x00\x00\x00\x00\x00\x20\x00\x00\0\0\0\0";
    char med[4 + 4 + 300];
    struct ws_frame f;
    struct buf b = {0};
    size_t i;

    CHECK(ws_parse_frame(hello, 11, &f) == 11);
    CHECK(f.fin == 1 && f.opcode == WS_OP_TEXT && f.len == 5 && memcmp(f.payload, "Hello", 5) == 0);
    for (i = 0; i < 11; i++) {
        char again[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
        CHECK(ws_parse_frame(again, i, &f) == 0); /* every prefix: need more */
    }
    CHECK(ws_parse_frame(unmasked, 7, &f) == WS_ERR_PROTOCOL);
    CHECK(ws_parse_frame(bad_rsv, 6, &f) == WS_ERR_PROTOCOL);
    CHECK(ws_parse_frame(bad_op, 6, &f) == WS_ERR_PROTOCOL);
    CHECK(ws_parse_frame(frag_ping, 6, &f) == WS_ERR_PROTOCOL);
    CHECK(ws_parse_frame(long_ping, 8, &f) == WS_ERR_PROTOCOL);
    CHECK(ws_parse_frame(huge, 14, &f) == WS_ERR_TOO_BIG);
    /* 16-bit length, zero mask */
    memset(med, 'x', sizeof(med));
    med[0] = (char)0x82;
    med[1] = (char)(0x80 | 126);
    med[2] = 0x01;
    med[3] = 0x2C; /* 300 */
    memset(med + 4, 0, 4);
    CHECK(ws_parse_frame(med, sizeof(med) - 1, &f) == 0);
    CHECK(ws_parse_frame(med, sizeof(med), &f) == (long)sizeof(med));
    CHECK(f.opcode == WS_OP_BINARY && f.len == 300 && f.payload[299] == 'x');

    ws_put_frame(&b, WS_OP_TEXT, "hi", 2);
    CHECK(b.len == 4 && memcmp(b.data, "\x81\x02hi", 4) == 0);
    buf_reset(&b);
    ws_put_frame(&b, WS_OP_BINARY, med, 300);
    CHECK(b.len == 304 && (unsigned char)b.data[1] == 126 && (unsigned char)b.data[2] == 1 &&
          (unsigned char)b.data[3] == 0x2C);
    buf_reset(&b);
    {
        char *big = calloc(1, 70000);
        ws_put_frame(&b, WS_OP_BINARY, big, 70000);
        CHECK(b.len == 70010 && (unsigned char)b.data[1] == 127 && (unsigned char)b.data[7] == 1 &&
              (unsigned char)b.data[8] == 0x11 && (unsigned char)b.data[9] == 0x70);
        free(big);
    }
    buf_reset(&b);
    ws_put_close(&b, 4001, "TAKEN_OVER");
    CHECK(b.len == 14 && memcmp(b.data, "\x88\x0c\x0f\xa1TAKEN_OVER", 14) == 0);
    buf_free(&b);
}

void suite_ws(void)
{
    test_sha1_base64();
    test_frames();
}
