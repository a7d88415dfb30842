/*
 * ws.c: WebSocket handshake key, SHA-1, base64 and frames, see ws.h.
 */
#include "ws.h"

#include <string.h>

/* ---- SHA-1 (FIPS 180-4), only for the handshake's accept key -------------------------------- */

static uint32_t rol(uint32_t x, int k)
{
    return (x << k) | (x >> (32 - k));
}

static void sha1_block(uint32_t h[5], const unsigned char *b)
{
    uint32_t w[80], a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f, k, t;
    int i;

    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)b[i * 4] << 24 | (uint32_t)b[i * 4 + 1] << 16 |
               (uint32_t)b[i * 4 + 2] << 8 | b[i * 4 + 3];
    for (i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = (bb & c) | (~bb & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = bb ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (bb & c) | (bb & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = bb ^ c ^ d;
            k = 0xCA62C1D6;
        }
        t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(bb, 30);
        bb = a;
        a = t;
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void sha1(const void *data, size_t n, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const unsigned char *p = data;
    unsigned char tail[128];
    uint64_t bits = (uint64_t)n * 8;
    size_t rest, tl, i;

    for (; n >= 64; n -= 64, p += 64)
        sha1_block(h, p);
    rest = n;
    memset(tail, 0, sizeof(tail));
    if (rest)
        memcpy(tail, p, rest);
    tail[rest] = 0x80;
    tl = rest + 1 + 8 <= 64 ? 64 : 128;
    for (i = 0; i < 8; i++)
        tail[tl - 1 - i] = (unsigned char)(bits >> (i * 8));
    sha1_block(h, tail);
    if (tl == 128)
        sha1_block(h, tail + 64);
    for (i = 0; i < 5; i++) {
        out[i * 4] = (unsigned char)(h[i] >> 24);
        out[i * 4 + 1] = (unsigned char)(h[i] >> 16);
        out[i * 4 + 2] = (unsigned char)(h[i] >> 8);
        out[i * 4 + 3] = (unsigned char)h[i];
    }
}

void base64_encode(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i, o = 0;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
}

void ws_accept_key(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[20];
    struct buf b = {0};

    buf_puts(&b, key);
    buf_puts(&b, guid);
    sha1(b.data ? b.data : "", b.len, digest);
    buf_free(&b);
    base64_encode(digest, 20, out);
}

/* ---- frames ------------------------------------------------------------------------------- */

long ws_parse_frame(char *p, size_t n, struct ws_frame *f)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t hl = 2, i;
    uint64_t len;
    unsigned char mask[4];

    if (n < 2)
        return 0;
    f->fin = u[0] >> 7;
    f->opcode = u[0] & 0x0F;
    if (u[0] & 0x70)
        return WS_ERR_PROTOCOL; /* no extension was negotiated */
    if (!(u[1] & 0x80))
        return WS_ERR_PROTOCOL; /* client frames must be masked */
    if ((f->opcode > WS_OP_BINARY && f->opcode < WS_OP_CLOSE) || f->opcode > WS_OP_PONG)
        return WS_ERR_PROTOCOL;
    len = u[1] & 0x7F;
    if (f->opcode >= WS_OP_CLOSE && (!f->fin || len > 125))
        return WS_ERR_PROTOCOL;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)u[2] << 8 | u[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        if (u[2] & 0x80)
            return WS_ERR_PROTOCOL;
        len = 0;
        for (i = 0; i < 8; i++)
            len = len << 8 | u[2 + i];
        hl = 10;
    }
    if (len > WS_MAX_PAYLOAD)
        return WS_ERR_TOO_BIG;
    if (n < hl + 4 + len)
        return 0;
    memcpy(mask, u + hl, 4);
    hl += 4;
    f->payload = p + hl;
    f->len = (size_t)len;
    for (i = 0; i < f->len; i++)
        f->payload[i] ^= (char)mask[i & 3];
    return (long)(hl + f->len);
}

int ws_put_head(struct buf *out, int opcode, size_t len)
{
    unsigned char h[10];
    size_t hl = 2, i;

    h[0] = (unsigned char)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        h[1] = (unsigned char)len;
    } else if (len <= 0xFFFF) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hl = 4;
    } else {
        h[1] = 127;
        for (i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    return buf_append(out, h, hl);
}

int ws_put_frame(struct buf *out, int opcode, const void *payload, size_t len)
{
    if (ws_put_head(out, opcode, len) < 0)
        return -1;
    return len ? buf_append(out, payload, len) : 0;
}

int ws_put_close(struct buf *out, unsigned code, const char *reason)
{
    unsigned char p[125];
    size_t rl = reason ? strlen(reason) : 0;

    if (rl > sizeof(p) - 2)
        rl = sizeof(p) - 2;
    p[0] = (unsigned char)(code >> 8);
    p[1] = (unsigned char)code;
    if (rl)
        memcpy(p + 2, reason, rl);
    return ws_put_frame(out, WS_OP_CLOSE, p, 2 + rl);
}
