/*
 * ws_echo.c: TEST-ONLY HTTP/WebSocket backend that runs inside a sandbox, for the server proxy's
 * integration specs (tests/lua/integration/proxy) and benchmark (bench/proxy.sh).
 *
 * Listens on 0.0.0.0:$PORT (default 8080) and forks one process per connection; a connection
 * serves requests one after the other (HTTP/1.1 keep-alive) until the client closes or sends
 * Connection: close. Every response carries X-Echo-Method and X-Echo-Target (the method and the
 * raw target of the request line).
 *
 * Routes:
 * - GET /: 200 "ws-echo ok".
 * - GET /sse: text/event-stream, chunked, 5 events 200 ms apart, each written at once.
 * - GET /bytes?n=N: N bytes with Content-Length, in 64 KiB writes (&chunked=1: chunked).
 * - ANY /echo: the request body (Content-Length or chunked), answered with Content-Length.
 * - ANY /headers: the request headers as text, one "Name: value" line each, as received.
 * - GET /resp-headers: hop-by-hop headers, one named in Connection, an X-Request-ID; with
 *   ?close-first=1 the "Connection: close" line comes before the one naming X-Hop-Secret.
 * - GET /close-mid: Content-Length: 1000, then 100 bytes, then the connection is closed.
 * - GET /ws: WebSocket (RFC 6455), echoes text and binary frames, answers ping, echoes close.
 * - anything else: 404 "not found".
 * A request with Expect: 100-continue gets an interim 100 Continue before its body is read.
 *
 * The WebSocket handshake needs SHA-1 and base64 of the client's key; they are written here
 * (small, from FIPS 180-4 and RFC 4648) because the binary is linked statically with musl-gcc,
 * and there is no crypto library built for musl on this machine (OpenSSL's static libraries are
 * glibc-only).
 *
 * Build: tests/images/build-ws-echo.sh (musl-gcc -static), which also makes local/ws-echo:latest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX (64 * 1024)
#define BLOCK (64 * 1024)
#define WS_MAX_PAYLOAD (16 * 1024 * 1024)

/* ---- SHA-1 (FIPS 180-4) and base64 (RFC 4648) --------------------------------------------- */

struct sha1 {
    uint32_t h[5];
    uint64_t len;
    unsigned char block[64];
    size_t fill;
};

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(struct sha1 *s, const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
}

static void sha1_init(struct sha1 *s)
{
    static const uint32_t iv[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    memcpy(s->h, iv, sizeof(iv));
    s->len = 0;
    s->fill = 0;
}

static void sha1_update(struct sha1 *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    s->len += n;
    while (n > 0) {
        size_t take = 64 - s->fill;
        if (take > n)
            take = n;
        memcpy(s->block + s->fill, p, take);
        s->fill += take;
        p += take;
        n -= take;
        if (s->fill == 64) {
            sha1_block(s, s->block);
            s->fill = 0;
        }
    }
}

static void sha1_final(struct sha1 *s, unsigned char out[20])
{
    uint64_t bits = s->len * 8;
    unsigned char pad = 0x80;
    sha1_update(s, &pad, 1);
    pad = 0;
    while (s->fill != 56)
        sha1_update(s, &pad, 1);
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha1_update(s, lenb, 8);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(s->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s->h[i];
    }
}

/* Writes the base64 of `n` bytes into `out` (room for 4 * ceil(n / 3) + 1 bytes). */
static void base64(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

/* ---- connection I/O ------------------------------------------------------------------------- */

struct conn {
    int fd;
    char buf[HEAD_MAX];
    size_t len; /* bytes read but not consumed */
};

static int write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads more bytes into the buffer; returns the count, 0 at EOF, -1 on error or a full buffer. */
static ssize_t fill(struct conn *c)
{
    if (c->len == sizeof(c->buf))
        return -1;
    for (;;) {
        ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r > 0)
            c->len += (size_t)r;
        return r;
    }
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Reads exactly n bytes (buffered first) into out (may be NULL to discard); 0 on success. */
static int read_exact(struct conn *c, char *out, size_t n)
{
    while (n > 0) {
        if (c->len == 0 && fill(c) <= 0)
            return -1;
        size_t take = c->len < n ? c->len : n;
        if (out) {
            memcpy(out, c->buf, take);
            out += take;
        }
        consume(c, take);
        n -= take;
    }
    return 0;
}

/* Reads one CRLF-terminated line (without the CRLF) into line; 0 on success. */
static int read_line(struct conn *c, char *line, size_t cap)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            size_t keep = n > 0 && c->buf[n - 1] == '\r' ? n - 1 : n;
            if (keep >= cap)
                return -1;
            memcpy(line, c->buf, keep);
            line[keep] = '\0';
            consume(c, n + 1);
            return 0;
        }
        if (fill(c) <= 0)
            return -1;
    }
}

/* ---- requests -------------------------------------------------------------------------------- */

struct request {
    char method[16];
    char target[8192];
    char path[8192];
    const char *query;   /* into target, after '?', or "" */
    char head[HEAD_MAX]; /* the header lines, "Name: value\n" each */
    size_t head_len;
    long long content_length; /* -1 when absent */
    int chunked, keep_alive, expect_continue, upgrade_ws;
    char ws_key[128];
};

static int has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* Reads a request head; 0 on success, 1 at a clean EOF before it, -1 on error. */
static int read_request(struct conn *c, struct request *r)
{
    char line[HEAD_MAX];
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    if (c->len == 0) {
        ssize_t n = fill(c);
        if (n == 0)
            return 1;
        if (n < 0)
            return -1;
    }
    if (read_line(c, line, sizeof(line)) != 0)
        return -1;
    char version[16] = "";
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || (size_t)(sp1 - line) >= sizeof(r->method) ||
        (size_t)(sp2 - sp1 - 1) >= sizeof(r->target))
        return -1;
    memcpy(r->method, line, (size_t)(sp1 - line));
    memcpy(r->target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    snprintf(version, sizeof(version), "%s", sp2 + 1);
    r->keep_alive = strcmp(version, "HTTP/1.1") == 0;
    snprintf(r->path, sizeof(r->path), "%s", r->target);
    char *qm = strchr(r->path, '?');
    if (qm)
        *qm = '\0';
    const char *tq = strchr(r->target, '?');
    r->query = tq ? tq + 1 : "";
    int upgrade = 0, conn_upgrade = 0;
    for (;;) {
        if (read_line(c, line, sizeof(line)) != 0)
            return -1;
        if (line[0] == '\0')
            break;
        size_t ll = strlen(line);
        if (r->head_len + ll + 2 > sizeof(r->head))
            return -1;
        memcpy(r->head + r->head_len, line, ll);
        r->head_len += ll;
        r->head[r->head_len++] = '\n';
        r->head[r->head_len] = '\0';
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (strcasecmp(line, "Content-Length") == 0) {
            r->content_length = strtoll(v, NULL, 10);
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            r->chunked = has_token(v, "chunked");
        } else if (strcasecmp(line, "Connection") == 0) {
            if (has_token(v, "close"))
                r->keep_alive = 0;
            if (has_token(v, "keep-alive"))
                r->keep_alive = 1;
            if (has_token(v, "upgrade"))
                conn_upgrade = 1;
        } else if (strcasecmp(line, "Expect") == 0) {
            r->expect_continue = has_token(v, "100-continue");
        } else if (strcasecmp(line, "Upgrade") == 0) {
            upgrade = has_token(v, "websocket");
        } else if (strcasecmp(line, "Sec-WebSocket-Key") == 0) {
            snprintf(r->ws_key, sizeof(r->ws_key), "%s", v);
        }
    }
    r->upgrade_ws = upgrade && conn_upgrade && r->ws_key[0];
    return 0;
}

/* Reads the whole request body (either framing) into a malloc'd buffer; NULL on error. */
static char *read_body(struct conn *c, struct request *r, size_t *out_len)
{
    size_t cap = 4096, len = 0;
    char *body = malloc(cap);
    char line[256];
    if (!body)
        return NULL;
    if (r->expect_continue && (r->chunked || r->content_length > 0)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (write_all(c->fd, cont, sizeof(cont) - 1) != 0)
            goto fail;
    }
    for (;;) {
        unsigned long long n;
        if (r->chunked) {
            if (read_line(c, line, sizeof(line)) != 0)
                goto fail;
            char *end;
            n = strtoull(line, &end, 16);
            if (end == line)
                goto fail;
        } else {
            n = r->content_length > 0 ? (unsigned long long)r->content_length : 0;
        }
        if (n > 0) {
            while (len + n + 1 > cap) {
                cap *= 2;
                char *nb = realloc(body, cap);
                if (!nb)
                    goto fail;
                body = nb;
            }
            if (read_exact(c, body + len, (size_t)n) != 0)
                goto fail;
            len += (size_t)n;
        }
        if (!r->chunked)
            break;
        if (n == 0) {
            /* trailers up to the empty line */
            do {
                if (read_line(c, line, sizeof(line)) != 0)
                    goto fail;
            } while (line[0] != '\0');
            break;
        }
        if (read_line(c, line, sizeof(line)) != 0 || line[0] != '\0')
            goto fail;
    }
    *out_len = len;
    return body;
fail:
    free(body);
    return NULL;
}

static int send_head(int fd, struct request *r, int status, const char *reason, const char *extra,
                     long long length)
{
    char head[HEAD_MAX];
    int n =
        snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\nServer: ws-echo\r\nX-Echo-Method: %s\r\nX-Echo-Target: %s\r\n"
                 "%s",
                 status, reason, r->method, r->target, extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof(head))
        return -1;
    if (length >= 0)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %lld\r\n", length);
    if (!r->keep_alive)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Connection: close\r\n");
    n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
    if ((size_t)n >= sizeof(head))
        return -1;
    return write_all(fd, head, (size_t)n);
}

static int send_text(int fd, struct request *r, int status, const char *reason, const char *body,
                     size_t len)
{
    if (send_head(fd, r, status, reason, "Content-Type: text/plain\r\n", (long long)len) != 0)
        return -1;
    if (strcmp(r->method, "HEAD") == 0)
        return 0;
    return write_all(fd, body, len);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int send_chunk(int fd, const char *data, size_t n)
{
    char size[32];
    int sn = snprintf(size, sizeof(size), "%zx\r\n", n);
    if (write_all(fd, size, (size_t)sn) != 0 || write_all(fd, data, n) != 0)
        return -1;
    return write_all(fd, "\r\n", 2);
}

static int serve_sse(int fd, struct request *r)
{
    if (send_head(fd, r, 200, "OK",
                  "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                  "Transfer-Encoding: chunked\r\n",
                  -1) != 0)
        return -1;
    for (int i = 1; i <= 5; i++) {
        char ev[64];
        int n = snprintf(ev, sizeof(ev), "id: %d\ndata: event %d\n\n", i, i);
        if (send_chunk(fd, ev, (size_t)n) != 0)
            return -1;
        if (i < 5)
            sleep_ms(200);
    }
    return write_all(fd, "0\r\n\r\n", 5);
}

static long long query_int(const char *query, const char *name, long long def)
{
    size_t nl = strlen(name);
    const char *p = query;
    while (p && *p) {
        if (strncmp(p, name, nl) == 0 && p[nl] == '=')
            return strtoll(p + nl + 1, NULL, 10);
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return def;
}

static int serve_bytes(int fd, struct request *r)
{
    static char block[BLOCK];
    long long n = query_int(r->query, "n", 0);
    int chunked = query_int(r->query, "chunked", 0) == 1;
    if (n < 0)
        n = 0;
    for (size_t i = 0; i < sizeof(block); i++)
        block[i] = (char)('a' + i % 26);
    if (send_head(fd, r, 200, "OK",
                  chunked
                      ? "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
                      : "Content-Type: application/octet-stream\r\n",
                  chunked ? -1 : n) != 0)
        return -1;
    if (strcmp(r->method, "HEAD") == 0)
        return 0;
    while (n > 0) {
        size_t take = n < BLOCK ? (size_t)n : BLOCK;
        if ((chunked ? send_chunk(fd, block, take) : write_all(fd, block, take)) != 0)
            return -1;
        n -= (long long)take;
    }
    return chunked ? write_all(fd, "0\r\n\r\n", 5) : 0;
}

/* ---- WebSocket ---------------------------------------------------------------------------------
 */

static int ws_send(int fd, int fin_opcode, const char *data, size_t n)
{
    unsigned char h[10];
    size_t hl = 2;
    h[0] = (unsigned char)fin_opcode;
    if (n < 126) {
        h[1] = (unsigned char)n;
    } else if (n < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    if (write_all(fd, h, hl) != 0)
        return -1;
    return write_all(fd, data, n);
}

static int serve_ws(struct conn *c, struct request *r)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    struct sha1 s;
    unsigned char digest[20];
    char accept[32];
    char extra[HEAD_MAX];
    int rc = -1;
    char *payload = NULL;
    sha1_init(&s);
    sha1_update(&s, r->ws_key, strlen(r->ws_key));
    sha1_update(&s, guid, sizeof(guid) - 1);
    sha1_final(&s, digest);
    base64(digest, sizeof(digest), accept);
    int hn =
        snprintf(extra, sizeof(extra),
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\nX-Echo-Target: %s\r\n\r\n",
                 accept, r->target);
    if (hn < 0 || (size_t)hn >= sizeof(extra) || write_all(c->fd, extra, (size_t)hn) != 0)
        return -1;
    for (;;) {
        unsigned char h[2], ext[8], mask[4];
        if (read_exact(c, (char *)h, 2) != 0)
            goto out;
        int opcode = h[0] & 0x0f;
        uint64_t n = h[1] & 0x7f;
        int masked = h[1] & 0x80;
        if (n == 126) {
            if (read_exact(c, (char *)ext, 2) != 0)
                goto out;
            n = (uint64_t)ext[0] << 8 | ext[1];
        } else if (n == 127) {
            if (read_exact(c, (char *)ext, 8) != 0)
                goto out;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | ext[i];
        }
        if (n > WS_MAX_PAYLOAD)
            goto out;
        if (masked && read_exact(c, (char *)mask, 4) != 0)
            goto out;
        free(payload);
        payload = malloc(n ? (size_t)n : 1);
        if (!payload || read_exact(c, payload, (size_t)n) != 0)
            goto out;
        if (masked)
            for (uint64_t i = 0; i < n; i++)
                payload[i] ^= (char)mask[i % 4];
        switch (opcode) {
        case 0x0: /* continuation */
        case 0x1: /* text */
        case 0x2: /* binary: echoed with the same FIN bit and opcode */
            if (ws_send(c->fd, h[0] & 0x8f, payload, (size_t)n) != 0)
                goto out;
            break;
        case 0x8: /* close: echo the status code, then end */
            ws_send(c->fd, 0x88, payload, n >= 2 ? 2 : 0);
            rc = 0;
            goto out;
        case 0x9: /* ping -> pong */
            if (ws_send(c->fd, 0x8a, payload, (size_t)n) != 0)
                goto out;
            break;
        case 0xa: /* pong: ignored */
            break;
        default:
            goto out;
        }
    }
out:
    free(payload);
    return rc;
}

/* ---- dispatch ----------------------------------------------------------------------------------
 */

/* Serves one request; returns 0 to keep the connection, -1 to close it. */
static int serve(struct conn *c, struct request *r)
{
    int fd = c->fd;
    if (strcmp(r->path, "/ws") == 0 && r->upgrade_ws) {
        serve_ws(c, r);
        return -1;
    }
    size_t blen = 0;
    char *body = NULL;
    if (r->chunked || r->content_length > 0) {
        body = read_body(c, r, &blen);
        if (!body)
            return -1;
    }
    int rc = 0;
    if (strcmp(r->path, "/") == 0) {
        rc = send_text(fd, r, 200, "OK", "ws-echo ok", 10);
    } else if (strcmp(r->path, "/echo") == 0) {
        rc = send_text(fd, r, 200, "OK", body ? body : "", blen);
    } else if (strcmp(r->path, "/headers") == 0) {
        rc = send_text(fd, r, 200, "OK", r->head, r->head_len);
    } else if (strcmp(r->path, "/sse") == 0) {
        rc = serve_sse(fd, r);
    } else if (strcmp(r->path, "/bytes") == 0) {
        rc = serve_bytes(fd, r);
    } else if (strcmp(r->path, "/resp-headers") == 0) {
        static const char hops[] =
            "X-Hop-Secret: leak\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n"
            "X-Request-ID: from-backend\r\nX-Kept: yes\r\nContent-Type: text/plain\r\n";
        char extra[512];
        /* send_head adds "Connection: close" after `extra` (keep_alive = 0) */
        r->keep_alive = 0;
        if (query_int(r->query, "close-first", 0) == 1)
            snprintf(extra, sizeof(extra), "Connection: close\r\n%sConnection: X-Hop-Secret\r\n",
                     hops);
        else
            snprintf(extra, sizeof(extra), "Connection: X-Hop-Secret\r\n%s", hops);
        if (send_head(fd, r, 200, "OK", extra, 2) == 0)
            write_all(fd, "ok", 2);
        rc = -1;
    } else if (strcmp(r->path, "/close-mid") == 0) {
        static char part[100];
        memset(part, 'x', sizeof(part));
        send_head(fd, r, 200, "OK", "Content-Type: text/plain\r\n", 1000);
        write_all(fd, part, sizeof(part));
        rc = -1;
    } else {
        rc = send_text(fd, r, 404, "Not Found", "not found", 9);
    }
    free(body);
    if (rc != 0 || !r->keep_alive)
        return -1;
    return 0;
}

static void handle(int fd)
{
    static struct conn c;
    static struct request r;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c.fd = fd;
    c.len = 0;
    while (read_request(&c, &r) == 0) {
        if (serve(&c, &r) != 0)
            break;
    }
    shutdown(fd, SHUT_WR);
    close(fd);
}

int main(void)
{
    const char *port_s = getenv("PORT");
    int port = port_s && *port_s ? atoi(port_s) : 8080;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sa.sa_flags = SA_NOCLDWAIT;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in addr;
    if (ls < 0) {
        perror("socket");
        return 1;
    }
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(ls, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(ls, 1024) != 0) {
        perror("bind/listen");
        return 1;
    }
    fprintf(stderr, "ws_echo listening on 0.0.0.0:%d\n", port);
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
                continue;
            perror("accept");
            return 1;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(ls);
            handle(fd);
            _exit(0);
        }
        close(fd);
    }
}
