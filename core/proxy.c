/*
 * proxy.c: the forwarding path of the server proxy (`http.proxy(req, opts)`), in C so that bodies
 * stream in both directions without passing through Lua.
 *
 * Lua decides (which sandbox, which address, which headers go upstream); this file does the rest:
 *   - a non-blocking connection to host:port (connect timeout -> 502);
 *   - the request head as Lua built it, plus the body framing of the inbound request
 * (Content-Length kept, chunked re-chunked), then the body as libmicrohttpd hands it to us
 * (proxy_upload). When more than UP_HIGH bytes wait for the backend, the client connection is
 * suspended (back-pressure);
 *   - the response head parsed here (status line, headers, framing: Content-Length, chunked, or
 * until close); 1xx other than 101 are skipped; hop-by-hop headers and those named in Connection
 * are dropped;
 *   - the body de-chunked into the request context's stream buffer, read by the same content reader
 * that Lua streams use. When the client is slow and more than STREAM_HIGH bytes wait, reading from
 * the backend stops until the reader drained it (proxy_drained), so memory stays flat;
 *   - a 101 answer (WebSocket or any Upgrade) is relayed with MHD's upgrade support, then raw bytes
 * are tunnelled both ways until either side closes; failures before the response head become
 * ErrorResponse JSON (502 connect, 504 header timeout, 500 otherwise), after it the client
 * connection is closed;
 *   - backend connections are kept alive and pooled per (pool tag, host, port) when the pool is on
 * (http.proxy_configure{keepalive = N}): a connection goes back to the pool only when the whole
 * request was sent and the whole response read with nothing left over, the response was HTTP/1.1
 * with a length or chunked framing and no `Connection: close`, and it was not an upgrade. An idle
 * connection that the backend closes (or that sends anything) leaves the pool at once, one idle for
 * longer than the idle timeout is closed. A pooled connection found dead when its request gets no
 * response byte is replaced once by a fresh connection, when that is safe: nothing was sent on it
 * yet, or the method is idempotent and the whole request is still in memory. The pool tag (the
 * sandbox id for the server proxy) lets Lua close a sandbox's connections (http.proxy_pool_close).
 *
 * Hand-written HTTP/1.1 response parsing: no library here parses a response head incrementally on
 * our own sockets without taking over the loop (libcurl would buffer and own the connection, and
 * cannot hand an upgraded socket back to us).
 */
#define _GNU_SOURCE
#include "httpd_int.h"
#include "log.h"
#include "loop.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <unistd.h>

#define UP_HIGH (256 * 1024)
#define UP_LOW (64 * 1024)
#define HEAD_MAX (64 * 1024)
#define READ_CHUNK (64 * 1024)
#define SMALL_BODY (16 * 1024) /* a body up to this size read with its head is sent with it */

#define POOL_BUCKETS 64
#define POOL_TAG_MAX 128
#define POOL_HOST_MAX 64

enum px_state { PX_CONNECTING, PX_HEAD, PX_BODY, PX_TUNNEL, PX_DONE };
enum px_framing { FR_NONE, FR_LENGTH, FR_CHUNKED, FR_CLOSE };
enum chunk_state {
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_DONE
};

struct proxy {
    struct reqctx *c; /* holds a reference; NULL once detached */
    int fd;
    loop_watch w;
    loop_timer connect_timer;
    loop_timer header_timer;
    enum px_state state;
    buf_t out;         /* bytes for the backend: head, then body */
    int req_chunked;   /* re-chunk the request body */
    int req_body;      /* the request has a body */
    int req_done;      /* all of the request body is in `out` */
    int out_suspended; /* we suspended the client connection because `out` was full */
    int is_head;
    buf_t head; /* the backend's response head while it arrives */
    enum px_framing framing;
    uint64_t remaining; /* bytes left: of the body (FR_LENGTH) or of the current chunk */
    enum chunk_state ch;
    int read_paused;
    char target[320];
    char request_id[260];
    unsigned header_timeout_ms;
    uint64_t connect_ns;
    /* tunnel */
    struct MHD_UpgradeResponseHandle *urh;
    int cfd;
    loop_watch cw;
    buf_t to_client, to_backend;
    int client_eof, backend_eof, client_shut, backend_shut;
    /* keep-alive */
    struct proxy *aprev, *anext; /* the list of active proxies (http.proxy_pool_close) */
    char tag[POOL_TAG_MAX];
    char host[POOL_HOST_MAX];
    int port;
    int pool_ok;      /* the connection may go back to the pool once the exchange is complete */
    int reused;       /* the connection came from the pool */
    int retried;      /* a stale pooled connection was already replaced */
    int idempotent;   /* the method may be sent twice */
    int out_whole;    /* `out` holds the whole request from byte 0 (nothing appended later) */
    int got_response; /* a byte of the response arrived */
    int reusable;     /* the response head allows keep-alive */
    int extra;        /* the backend sent bytes after the response */
    uint64_t sent;    /* bytes sent on the current connection */
    /* a pooled connection in use: its fd stays registered under the pool entry's watch (which
     * forwards the events here), so taking it and giving it back cost no epoll_ctl */
    struct idle_conn *borrow;
};

static void px_tunnel_pump(struct proxy *px);
static int px_retry(struct proxy *px);

/* ---- counters (read by http.proxy_stats(); plain integer adds on the hot path) ---- */

static struct {
    uint64_t connections_total; /* proxies started */
    uint64_t active;            /* started and not finished (tunnels included) */
    uint64_t failures_total;    /* px_fail: connect error, timeout, bad or cut response */
    uint64_t bytes_to_backend;
    uint64_t bytes_from_backend;
    uint64_t backend_connects_total; /* new TCP connections to backends */
    uint64_t reused_total;           /* requests sent on a pooled connection */
    uint64_t retries_total;          /* stale pooled connections replaced by a fresh one */
} px_stats;

/* ---- the pool of idle keep-alive backend connections ---- */

struct pool_key;

struct idle_conn {
    struct idle_conn *prev, *next; /* in its key's list, the most recently used first */
    struct pool_key *k;            /* NULL while a proxy has borrowed it */
    int fd;
    loop_watch w;
    loop_timer timer;
    struct proxy *px; /* the proxy using it (its events go there), or NULL while idle */
};

struct pool_key { /* one backend: (tag, host, port) */
    struct pool_key *next;
    char tag[POOL_TAG_MAX];
    char host[POOL_HOST_MAX];
    int port;
    struct idle_conn *head;
    unsigned count;
};

static struct {
    unsigned max_idle; /* idle connections kept per backend; 0: no pooling */
    uint64_t idle_ns;  /* an idle connection is closed after this long */
    unsigned idle;     /* idle connections now */
    struct pool_key *buckets[POOL_BUCKETS];
    struct proxy *active;
} pool = {.max_idle = 0, .idle_ns = 30000000000ull};

static unsigned pool_hash(const char *tag, const char *host, int port)
{
    unsigned h = 2166136261u;
    for (const char *p = tag; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    for (const char *p = host; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ (unsigned)port) * 16777619u;
    return h % POOL_BUCKETS;
}

static struct pool_key *pool_find(const char *tag, const char *host, int port, int create)
{
    unsigned b = pool_hash(tag, host, port);
    for (struct pool_key *k = pool.buckets[b]; k; k = k->next)
        if (k->port == port && strcmp(k->host, host) == 0 && strcmp(k->tag, tag) == 0)
            return k;
    if (!create)
        return NULL;
    struct pool_key *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    snprintf(k->tag, sizeof(k->tag), "%s", tag);
    snprintf(k->host, sizeof(k->host), "%s", host);
    k->port = port;
    k->next = pool.buckets[b];
    pool.buckets[b] = k;
    return k;
}

static void pool_key_drop_if_empty(struct pool_key *k)
{
    if (k->count)
        return;
    struct pool_key **pp = &pool.buckets[pool_hash(k->tag, k->host, k->port)];
    while (*pp && *pp != k)
        pp = &(*pp)->next;
    if (*pp)
        *pp = k->next;
    free(k);
}

/* Takes an idle connection out of its list and stops its timer; its fd stays in the epoll set under
 * its watch. */
static void idle_detach(struct idle_conn *ic)
{
    struct pool_key *k = ic->k;
    if (ic->prev)
        ic->prev->next = ic->next;
    else
        k->head = ic->next;
    if (ic->next)
        ic->next->prev = ic->prev;
    k->count--;
    pool.idle--;
    loop_timer_stop(&ic->timer);
    ic->k = NULL;
    ic->prev = ic->next = NULL;
    pool_key_drop_if_empty(k); /* may free k when it was the last one */
}

/* Frees a pool entry no longer in a list, and returns its fd (the caller owns it, still in the
 * epoll set). */
static int idle_free(struct idle_conn *ic)
{
    int fd = ic->fd;
    ic->fd = -1;
    ic->px = NULL;
    /* an epoll event for it may still be in this batch: free on the next turn */
    if (loop_defer_ex(free, free, ic) < 0)
        free(ic);
    return fd;
}

static int idle_unlink(struct idle_conn *ic)
{
    idle_detach(ic);
    return idle_free(ic);
}

static void on_backend(loop_watch *w, uint32_t events);

static void idle_close(struct idle_conn *ic)
{
    loop_watch_del(&ic->w);
    int fd = idle_unlink(ic);
    if (fd >= 0)
        close(fd);
}

static void on_idle_event(loop_watch *w, uint32_t events)
{
    struct idle_conn *ic = w->data;
    if (ic->px) { /* borrowed: the proxy's event */
        on_backend(&ic->px->w, events);
        return;
    }
    if (ic->fd >= 0 && ic->k) /* the backend closed it, or sent something unasked: it is done */
        idle_close(ic);
}

static void on_idle_timeout(loop_timer *t)
{
    struct idle_conn *ic = t->data;
    if (ic->fd >= 0)
        idle_close(ic);
}

/* Offers a connection (still in the epoll set) to the pool: returns 0 when the pool took it (its
 * watch now gets the fd's events), -1 when the backend's share is full (the caller closes it).
 * `reuse`: the pool entry the connection was borrowed from (its watch is the fd's already), or
 * NULL. */
static int pool_put(const char *tag, const char *host, int port, int fd, struct idle_conn *reuse)
{
    struct pool_key *k = pool.max_idle ? pool_find(tag, host, port, 1) : NULL;
    struct idle_conn *ic = NULL;
    if (k && k->count < pool.max_idle)
        ic = reuse ? reuse : calloc(1, sizeof(*ic));
    if (!ic) {
        if (k)
            pool_key_drop_if_empty(k);
        return -1;
    }
    ic->px = NULL;
    ic->fd = fd;
    ic->w.fd = fd;
    ic->w.cb = on_idle_event;
    ic->w.data = ic;
    if ((!reuse || ic->w.events != (EPOLLIN | EPOLLRDHUP)) &&
        loop_watch_mod(&ic->w, EPOLLIN | EPOLLRDHUP) < 0) {
        if (!reuse)
            free(ic);
        pool_key_drop_if_empty(k);
        return -1;
    }
    ic->k = k;
    ic->timer.cb = on_idle_timeout;
    ic->timer.data = ic;
    loop_timer_start(&ic->timer, pool.idle_ns);
    ic->next = k->head;
    if (k->head)
        k->head->prev = ic;
    k->head = ic;
    k->count++;
    pool.idle++;
    return 0;
}

/* An idle connection to the backend, or -1. With `peek`, one that still looks alive (a MSG_PEEK
 * finds no EOF and no unsolicited byte); without, the caller can send the request again on a fresh
 * connection if this one turns out closed (px_retry), and saves the syscall. A backend's close
 * that the loop already saw has removed the connection either way (on_idle_event). */
static struct idle_conn *pool_take(const char *tag, const char *host, int port, int peek)
{
    struct pool_key *k = pool_find(tag, host, port, 0);
    while (k && k->head) {
        int last = k->count == 1;
        struct idle_conn *ic = k->head;
        idle_detach(ic); /* may free k when it was the last one */
        if (!peek)
            return ic;
        char b;
        ssize_t n = recv(ic->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return ic;
        loop_watch_del(&ic->w);
        close(idle_free(ic)); /* closed by the backend (0), failed, or unsolicited bytes */
        if (last)
            break;
    }
    return NULL;
}

/* The watch the proxy's backend fd is registered under: its own, or its borrowed pool entry's. */
static loop_watch *px_watch(struct proxy *px)
{
    return px->borrow ? &px->borrow->w : &px->w;
}

/* ---- lifetime ---- */

static void px_close_fd(struct proxy *px)
{
    if (px->fd >= 0) {
        loop_watch_del(px_watch(px));
        close(px->fd);
        px->fd = -1;
    }
    if (px->borrow) {
        idle_free(px->borrow);
        px->borrow = NULL;
    }
}

static void px_free_deferred(void *data)
{
    struct proxy *px = data;
    buf_free(&px->out);
    buf_free(&px->head);
    buf_free(&px->to_client);
    buf_free(&px->to_backend);
    free(px);
}

/* Ends the proxy: closes the backend, lets go of the request context. Idempotent. */
static void px_finish(struct proxy *px)
{
    if (px->state == PX_DONE)
        return;
    px->state = PX_DONE;
    px_stats.active--;
    if (px->aprev)
        px->aprev->anext = px->anext;
    else if (pool.active == px)
        pool.active = px->anext;
    if (px->anext)
        px->anext->aprev = px->aprev;
    px->aprev = px->anext = NULL;
    loop_timer_stop(&px->connect_timer);
    loop_timer_stop(&px->header_timer);
    px_close_fd(px);
    if (px->urh) {
        loop_watch_del(&px->cw);
        MHD_upgrade_action(px->urh, MHD_UPGRADE_ACTION_CLOSE);
        px->urh = NULL;
        httpd_request_run();
    }
    if (px->c) {
        struct reqctx *c = px->c;
        px->c = NULL;
        c->px = NULL;
        httpd_ctx_resume(c);
        httpd_ctx_unref(c);
    }
    /* an epoll event for our fds may still be in this batch: free on the next turn */
    if (loop_defer_ex(px_free_deferred, px_free_deferred, px) < 0)
        px_free_deferred(px); /* no memory to queue: no event can be pending for a closed fd */
}

/* Fails the proxied request: an ErrorResponse when nothing was sent yet, else a closed connection.
 */
static void px_fail(struct proxy *px, const char *code, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void px_fail(struct proxy *px, const char *code, unsigned status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct reqctx *c = px->c;
    px_stats.failures_total++;
    log_write(status >= 500 ? LOG_WARNING : LOG_INFO, px->request_id, "proxy failed", "target",
              px->target, "error", msg, NULL);
    if (c && !c->completed) {
        if (!c->streaming && !c->resp && c->state != RS_QUEUED) {
            c->resp = httpd_error_response(code, msg, px->request_id);
            c->status = status;
        } else {
            c->stream_error = 1;
        }
    }
    px_finish(px);
}

/* ---- the request side ---- */

static void px_set_events(struct proxy *px)
{
    uint32_t ev = 0;
    if (px->fd < 0)
        return;
    if (px->state == PX_CONNECTING || buf_avail(&px->out))
        ev |= EPOLLOUT;
    if (px->state != PX_CONNECTING && !px->read_paused)
        ev |= EPOLLIN | EPOLLRDHUP;
    loop_watch *w = px_watch(px);
    if (ev != w->events)
        loop_watch_mod(w, ev);
}

static int px_flush_out(struct proxy *px)
{
    while (buf_avail(&px->out)) {
        ssize_t n = send(px->fd, px->out.data + px->out.off, buf_avail(&px->out), MSG_NOSIGNAL);
        if (n > 0) {
            px->out.off += (size_t)n;
            px->sent += (uint64_t)n;
            px_stats.bytes_to_backend += (uint64_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && errno == EINTR)
            continue;
        return -1;
    }
    if (px->out_suspended && buf_avail(&px->out) < UP_LOW && px->c) {
        px->out_suspended = 0;
        httpd_ctx_resume(px->c);
    }
    return 0;
}

static int append_body(struct proxy *px, const char *data, size_t n)
{
    if (!n)
        return 0;
    if (px->req_chunked) {
        char hdr[24];
        int k = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
        if (buf_append(&px->out, hdr, (size_t)k) < 0 || buf_append(&px->out, data, n) < 0 ||
            buf_append(&px->out, "\r\n", 2) < 0)
            return -1;
        return 0;
    }
    return buf_append(&px->out, data, n);
}

int proxy_upload(struct proxy *px, const char *data, size_t n)
{
    if (px->state == PX_DONE)
        return 0;
    if (px->state == PX_TUNNEL || px->req_done)
        return 0; /* nothing more goes upstream */
    if (append_body(px, data, n) < 0) {
        px_fail(px, "GENERAL::UNKNOWN_ERROR", 500, "An internal error occurred in the proxy: %s",
                "out of memory");
        return 0;
    }
    if (px->state != PX_CONNECTING) {
        if (px_flush_out(px) < 0) {
            if (px->state == PX_HEAD && px_retry(px))
                return 0;
            px_fail(px, "GENERAL::UNKNOWN_ERROR", 500,
                    "An internal error occurred in the proxy: writing to %s: %s", px->target,
                    strerror(errno));
            return 0;
        }
        px_set_events(px);
    }
    if (buf_avail(&px->out) > UP_HIGH) {
        px->out_suspended = 1;
        return 1;
    }
    return 0;
}

void proxy_upload_done(struct proxy *px)
{
    if (px->state == PX_DONE || px->req_done)
        return;
    px->req_done = 1;
    if (px->req_chunked)
        buf_append(&px->out, "0\r\n\r\n", 5);
    if (px->state != PX_CONNECTING && px->fd >= 0) {
        if (px_flush_out(px) < 0) {
            if (px->state == PX_HEAD && px_retry(px))
                return;
            px_fail(px, "GENERAL::UNKNOWN_ERROR", 500,
                    "An internal error occurred in the proxy: writing to %s: %s", px->target,
                    strerror(errno));
            return;
        }
        px_set_events(px);
    }
}

/* ---- the response side ---- */

static int hop_by_hop(const char *name, const char *connection)
{
    static const char *const hop[] = {"connection",          "keep-alive", "proxy-authenticate",
                                      "proxy-authorization", "te",         "trailer",
                                      "transfer-encoding",   "upgrade",    "content-length",
                                      "x-request-id",        NULL};
    for (int i = 0; hop[i]; i++)
        if (strcasecmp(name, hop[i]) == 0)
            return 1;
    /* a header named in the backend's Connection header */
    if (connection) {
        size_t nl = strlen(name);
        const char *p = connection;
        while (*p) {
            while (*p == ' ' || *p == ',' || *p == '\t')
                p++;
            const char *e = p;
            while (*e && *e != ',' && *e != ' ' && *e != '\t')
                e++;
            if ((size_t)(e - p) == nl && strncasecmp(p, name, nl) == 0)
                return 1;
            p = e;
        }
    }
    return 0;
}

struct parsed_head {
    int status;
    int minor;   /* HTTP/1.x */
    char *lines; /* the header block, NUL-separated name/value pairs */
    int nhdr;
    const char *names[128];
    const char *values[128];
};

/* Parses "HTTP/1.x NNN reason\r\n(Name: value\r\n)*" in place (head ends before the blank line). */
static int parse_head(char *head, size_t len, struct parsed_head *ph)
{
    char *end = head + len;
    char *eol = memchr(head, '\n', len);
    if (!eol || len < 12 || strncmp(head, "HTTP/1.", 7) != 0)
        return -1;
    if (!isdigit((unsigned char)head[9]) || !isdigit((unsigned char)head[10]) ||
        !isdigit((unsigned char)head[11]))
        return -1;
    ph->minor = head[7] - '0';
    ph->status = (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
    ph->nhdr = 0;
    char *p = eol + 1;
    while (p < end) {
        char *le = memchr(p, '\n', (size_t)(end - p));
        if (!le)
            le = end;
        char *lend = le;
        if (lend > p && lend[-1] == '\r')
            lend--;
        if (lend == p)
            break;
        char *colon = memchr(p, ':', (size_t)(lend - p));
        if (!colon || colon == p)
            return -1;
        if (ph->nhdr == 128)
            return -1;
        *colon = '\0';
        char *v = colon + 1;
        while (v < lend && (*v == ' ' || *v == '\t'))
            v++;
        char *ve = lend;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        *ve = '\0';
        ph->names[ph->nhdr] = p;
        ph->values[ph->nhdr] = v;
        ph->nhdr++;
        p = le + 1;
    }
    return 0;
}

static const char *head_value(struct parsed_head *ph, const char *name)
{
    for (int i = 0; i < ph->nhdr; i++)
        if (strcasecmp(ph->names[i], name) == 0)
            return ph->values[i];
    return NULL;
}

/* Every value of header `name` joined with "," (several field lines of one name are one list,
 * RFC 9110 section 5.3). Sets *out to a malloc'd string, or to NULL when the header is absent.
 * Returns -1 when out of memory. */
static int head_join(struct parsed_head *ph, const char *name, char **out)
{
    size_t len = 0, off = 0;
    *out = NULL;
    for (int i = 0; i < ph->nhdr; i++)
        if (strcasecmp(ph->names[i], name) == 0)
            len += strlen(ph->values[i]) + 1;
    if (!len)
        return 0;
    char *s = malloc(len);
    if (!s)
        return -1;
    for (int i = 0; i < ph->nhdr; i++) {
        if (strcasecmp(ph->names[i], name) != 0)
            continue;
        size_t vl = strlen(ph->values[i]);
        if (off)
            s[off++] = ',';
        memcpy(s + off, ph->values[i], vl);
        off += vl;
    }
    s[off] = '\0';
    *out = s;
    return 0;
}

static int has_token(const char *v, const char *tok)
{
    size_t tl = strlen(tok);
    while (v && *v) {
        while (*v == ' ' || *v == ',' || *v == '\t')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *te = e;
        while (te > v && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - v) == tl && strncasecmp(v, tok, tl) == 0)
            return 1;
        v = e;
    }
    return 0;
}

static void px_deliver(struct proxy *px, const char *data, size_t n)
{
    struct reqctx *c = px->c;
    if (!c || !n)
        return;
    buf_append(&c->sbuf, data, n);
    if (c->reader_suspended)
        httpd_ctx_resume(c);
    if (buf_avail(&c->sbuf) > STREAM_HIGH && !px->read_paused) {
        px->read_paused = 1;
        px_set_events(px);
    }
}

static void px_body_complete(struct proxy *px)
{
    struct reqctx *c = px->c;
    if (c) {
        c->stream_eof = 1;
        httpd_ctx_resume(c);
    }
    /* the exchange is complete on both sides and nothing else came: the connection can serve again
     */
    if (px->pool_ok && px->reusable && !px->extra && px->state == PX_BODY && px->req_done &&
        !buf_avail(&px->out) && px->fd >= 0 && pool.max_idle &&
        pool_put(px->tag, px->host, px->port, px->fd, px->borrow) == 0) {
        px->fd = -1; /* the pool's now (an event of ours still in this batch finds PX_DONE) */
        px->borrow = NULL;
    }
    px_finish(px);
}

/* Feeds backend body bytes through the framing; returns 1 when the body is complete. */
static int px_body(struct proxy *px, const char *p, size_t n)
{
    if (px->framing == FR_CLOSE) {
        px_deliver(px, p, n);
        return 0;
    }
    if (px->framing == FR_LENGTH) {
        size_t take = n < px->remaining ? n : (size_t)px->remaining;
        px_deliver(px, p, take);
        px->remaining -= take;
        if (take < n)
            px->extra = 1;
        return px->remaining == 0;
    }
    if (px->framing == FR_NONE) {
        if (n)
            px->extra = 1;
        return 1;
    }
    /* chunked */
    size_t i = 0;
    while (i < n) {
        char ch = p[i];
        switch (px->ch) {
        case CH_SIZE:
            if (isxdigit((unsigned char)ch)) {
                if (px->remaining > (UINT64_MAX >> 4))
                    return -1;
                px->remaining =
                    px->remaining * 16 + (uint64_t)(isdigit((unsigned char)ch)
                                                        ? ch - '0'
                                                        : (tolower((unsigned char)ch) - 'a' + 10));
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                px->ch = CH_EXT;
            } else if (ch == '\r') {
                px->ch = CH_SIZE_LF;
            } else if (ch == '\n') {
                px->ch = px->remaining ? CH_DATA : CH_TRAILER;
            } else {
                return -1;
            }
            i++;
            break;
        case CH_EXT:
            if (ch == '\r')
                px->ch = CH_SIZE_LF;
            else if (ch == '\n')
                px->ch = px->remaining ? CH_DATA : CH_TRAILER;
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                return -1;
            px->ch = px->remaining ? CH_DATA : CH_TRAILER;
            i++;
            break;
        case CH_DATA: {
            size_t take = n - i < px->remaining ? n - i : (size_t)px->remaining;
            px_deliver(px, p + i, take);
            px->remaining -= take;
            i += take;
            if (!px->remaining)
                px->ch = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch == '\r') {
                px->ch = CH_DATA_LF;
            } else if (ch == '\n') {
                px->ch = CH_SIZE;
            } else {
                return -1;
            }
            i++;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                return -1;
            px->ch = CH_SIZE;
            i++;
            break;
        case CH_TRAILER:
            /* trailers are dropped; the body ends at an empty line */
            if (ch == '\n') {
                if (px->remaining == 0) { /* empty line: done */
                    px->ch = CH_DONE;
                    if (i + 1 < n)
                        px->extra = 1;
                    return 1;
                }
                px->remaining = 0;
            } else if (ch != '\r') {
                px->remaining = 1; /* inside a trailer line */
            }
            i++;
            break;
        case CH_DONE:
            px->extra = 1;
            return 1;
        }
    }
    return px->ch == CH_DONE;
}

static void on_upgraded(void *cls, struct MHD_Connection *connection, void *con_cls,
                        const char *extra_in, size_t extra_in_size, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh);

/* The response head is complete in px->head (up to hlen bytes); the rest is body. */
static void px_on_head(struct proxy *px, size_t hlen)
{
    struct reqctx *c = px->c;
    struct parsed_head ph;
    char *head = malloc(hlen + 1);
    if (!head) {
        px_fail(px, "GENERAL::UNKNOWN_ERROR", 500, "An internal error occurred in the proxy: %s",
                "out of memory");
        return;
    }
    memcpy(head, px->head.data + px->head.off, hlen);
    head[hlen] = '\0';
    if (parse_head(head, hlen, &ph) < 0) {
        free(head);
        px_fail(px, "GENERAL::UNKNOWN_ERROR", 502,
                "The backend sandbox %s sent a malformed response", px->target);
        return;
    }
    px->head.off += hlen;
    if (ph.status >= 100 && ph.status < 200 && ph.status != 101) {
        free(head); /* an interim response (100 Continue): wait for the real one */
        return;
    }
    loop_timer_stop(&px->header_timer);
    char *connection;
    if (head_join(&ph, "Connection", &connection) < 0) {
        free(head);
        px_fail(px, "GENERAL::UNKNOWN_ERROR", 500, "An internal error occurred in the proxy: %s",
                "out of memory");
        return;
    }
    px->reusable = ph.status != 101 && ph.minor >= 1 && !has_token(connection, "close");
    struct MHD_Response *r;
    int small = 0;
    if (ph.status == 101) {
        r = MHD_create_response_for_upgrade(on_upgraded, px);
    } else {
        const char *te = head_value(&ph, "Transfer-Encoding");
        const char *cl = head_value(&ph, "Content-Length");
        uint64_t size = MHD_SIZE_UNKNOWN;
        if (px->is_head || ph.status == 204 || ph.status == 304) {
            px->framing = FR_NONE;
            if (cl && px->is_head)
                size = strtoull(cl, NULL, 10);
            else
                size = 0;
        } else if (te && has_token(te, "chunked")) {
            px->framing = FR_CHUNKED;
            px->ch = CH_SIZE;
            px->remaining = 0;
        } else if (cl) {
            char *endp;
            errno = 0;
            unsigned long long v = strtoull(cl, &endp, 10);
            if (errno || *endp || endp == cl) {
                free(head);
                free(connection);
                px_fail(px, "GENERAL::UNKNOWN_ERROR", 502,
                        "The backend sandbox %s sent an invalid Content-Length", px->target);
                return;
            }
            px->framing = v ? FR_LENGTH : FR_NONE;
            px->remaining = v;
            size = v;
            /* A small body already read whole leaves with its head in one send (a buffer response),
             * not through the stream callback (the head, then the body: two sends, two wakeups of
             * the client). */
            small = v && v <= SMALL_BODY && buf_avail(&px->head) >= v;
        } else {
            px->framing = FR_CLOSE;
            px->reusable = 0;
        }
        r = small ? MHD_create_response_from_buffer((size_t)size, px->head.data + px->head.off,
                                                    MHD_RESPMEM_MUST_COPY)
                  : httpd_stream_response(c, size);
    }
    if (!r) {
        free(head);
        free(connection);
        px_fail(px, "GENERAL::UNKNOWN_ERROR", 500, "An internal error occurred in the proxy: %s",
                "cannot create the response");
        return;
    }
    for (int i = 0; i < ph.nhdr; i++) {
        if (ph.status == 101 && (strcasecmp(ph.names[i], "Upgrade") == 0)) {
            MHD_add_response_header(r, ph.names[i], ph.values[i]);
            continue;
        }
        if (hop_by_hop(ph.names[i], connection))
            continue;
        MHD_add_response_header(r, ph.names[i], ph.values[i]);
    }
    if (ph.status == 101)
        MHD_add_response_header(r, "Connection", "Upgrade");
    if (px->request_id[0])
        MHD_add_response_header(r, "X-Request-ID", px->request_id);
    free(head);
    free(connection);
    c->resp = r;
    c->status = (unsigned)ph.status;
    if (ph.status == 101) {
        px->state = PX_TUNNEL;
        /* bytes after the 101 head belong to the tunnel */
        if (buf_avail(&px->head))
            buf_append(&px->to_client, px->head.data + px->head.off, buf_avail(&px->head));
        px->head.off = px->head.len;
        px->read_paused = 1; /* until MHD hands us the client socket */
        px_set_events(px);
    } else if (small) { /* the whole body is in the response already */
        px->head.off += (size_t)px->remaining;
        px->remaining = 0;
        if (buf_avail(&px->head))
            px->extra = 1; /* bytes after the body: the connection is not reused */
        px->state = PX_BODY;
        httpd_ctx_resume(c);
        px_body_complete(px);
        return;
    } else {
        c->streaming = 1;
        px->state = PX_BODY;
    }
    httpd_ctx_resume(c);
    if (px->state == PX_BODY) {
        size_t rest = buf_avail(&px->head);
        int done = 0;
        if (rest) {
            done = px_body(px, px->head.data + px->head.off, rest);
            px->head.off = px->head.len;
        } else if (px->framing == FR_NONE) {
            done = 1;
        }
        if (done < 0)
            px_fail(px, "", 502, "bad chunked encoding from %s", px->target);
        else if (done)
            px_body_complete(px);
    }
}

static int px_start_connect(struct proxy *px);

/* A pooled connection turned out dead before any byte of the response: sends the request once more
 * on a fresh connection when that is safe. Returns 1 when it took over (retrying, or failed). */
static int px_retry(struct proxy *px)
{
    if (!px->reused || px->retried || px->got_response || px->state != PX_HEAD)
        return 0;
    if (px->sent && !(px->idempotent && px->out_whole))
        return 0;
    px->retried = 1;
    px->reused = 0;
    px_stats.retries_total++;
    loop_timer_stop(&px->header_timer);
    px_close_fd(px);
    px->out.off = 0; /* the whole request again (out_whole), or nothing of it was sent */
    px->sent = 0;
    px->head.off = px->head.len = 0;
    if (px_start_connect(px) < 0)
        px_fail(px, "GENERAL::UNKNOWN_ERROR", 502,
                "Could not connect to the backend sandbox %s: %s", px->target, strerror(errno));
    return 1;
}

static void px_read(struct proxy *px)
{
    char tmp[READ_CHUNK];
    for (;;) {
        if (px->state == PX_DONE || px->read_paused)
            return;
        ssize_t n = recv(px->fd, tmp, sizeof(tmp), 0);
        if (n > 0) {
            px_stats.bytes_from_backend += (uint64_t)n;
            px->got_response = 1;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
        }
        if (n <= 0) { /* the backend closed (or failed) */
            if (px->state == PX_HEAD && px_retry(px))
                return;
            if (px->state == PX_HEAD) {
                px_fail(px, "GENERAL::UNKNOWN_ERROR", 502,
                        "The backend sandbox %s closed the connection without a response",
                        px->target);
            } else if (px->state == PX_BODY) {
                if (px->framing == FR_CLOSE) {
                    px_body_complete(px);
                } else {
                    px_fail(px, "", 502,
                            "The backend sandbox %s closed the connection mid-response",
                            px->target);
                }
            }
            return;
        }
        if (px->state == PX_HEAD) {
            if (buf_append(&px->head, tmp, (size_t)n) < 0) {
                px_fail(px, "GENERAL::UNKNOWN_ERROR", 500,
                        "An internal error occurred in the proxy: %s", "out of memory");
                return;
            }
            for (;;) {
                const char *h = px->head.data + px->head.off;
                size_t avail = buf_avail(&px->head);
                const char *e = memmem(h, avail, "\r\n\r\n", 4);
                size_t hl = 4;
                if (!e) {
                    e = memmem(h, avail, "\n\n", 2);
                    hl = 2;
                }
                if (!e) {
                    if (avail > HEAD_MAX)
                        px_fail(px, "GENERAL::UNKNOWN_ERROR", 502,
                                "The backend sandbox %s sent a response head over %d bytes",
                                px->target, HEAD_MAX);
                    break;
                }
                px_on_head(px, (size_t)(e - h) + hl);
                if (px->state != PX_HEAD)
                    break;
            }
        } else if (px->state == PX_BODY) {
            int done = px_body(px, tmp, (size_t)n);
            if (done < 0) {
                px_fail(px, "", 502, "bad chunked encoding from %s", px->target);
                return;
            }
            if (done) {
                px_body_complete(px);
                return;
            }
        } else if (px->state == PX_TUNNEL) {
            buf_append(&px->to_client, tmp, (size_t)n);
            px_tunnel_pump(px);
            return;
        }
    }
}

void proxy_drained(struct proxy *px)
{
    if (px->read_paused && px->state == PX_BODY) {
        px->read_paused = 0;
        px_set_events(px);
        px_read(px);
    }
}

static void on_backend(loop_watch *w, uint32_t events)
{
    struct proxy *px = w->data;
    if (px->state == PX_DONE)
        return;
    if (px->state == PX_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(px->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        if (!err && getpeername(px->fd, (struct sockaddr *)&peer, &plen) < 0)
            return; /* not connected yet (an event of the connection this one replaced) */
        if (err) {
            px_fail(px, "GENERAL::UNKNOWN_ERROR", 502,
                    "Could not connect to the backend sandbox %s: %s", px->target, strerror(err));
            return;
        }
        loop_timer_stop(&px->connect_timer);
        px->state = PX_HEAD;
        if (px->header_timeout_ms)
            loop_timer_start(&px->header_timer, (uint64_t)px->header_timeout_ms * 1000000ull);
    }
    if (px->state == PX_TUNNEL) {
        px_tunnel_pump(px);
        return;
    }
    if ((events & EPOLLOUT) && buf_avail(&px->out)) {
        if (px_flush_out(px) < 0) {
            if (px->state == PX_HEAD && px_retry(px))
                return;
            if (px->state == PX_HEAD)
                px_fail(px, "GENERAL::UNKNOWN_ERROR", 502,
                        "Could not send the request to the backend sandbox %s: %s", px->target,
                        strerror(errno));
            else
                px_fail(px, "", 502, "write to %s failed", px->target);
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        px_read(px);
    if (px->state != PX_DONE)
        px_set_events(px);
}

static void on_connect_timeout(loop_timer *t)
{
    struct proxy *px = t->data;
    px_fail(px, "GENERAL::UNKNOWN_ERROR", 502, "Could not connect to the backend sandbox %s: %s",
            px->target, "connection timed out");
}

static void on_header_timeout(loop_timer *t)
{
    struct proxy *px = t->data;
    px_fail(px, "GENERAL::UNKNOWN_ERROR", 504, "The backend sandbox %s did not answer in time",
            px->target);
}

/* ---- the tunnel (after 101) ---- */

/* Moves bytes from -> b -> to; `received` or `sent` (either may be NULL) count what crossed the
 * backend's side. */
static int pump_one(int from, int to, buf_t *b, int *from_eof, uint64_t *received, uint64_t *sent)
{
    char tmp[READ_CHUNK];
    while (!*from_eof && buf_avail(b) < UP_HIGH) {
        ssize_t n = recv(from, tmp, sizeof(tmp), 0);
        if (n > 0) {
            if (received)
                *received += (uint64_t)n;
            buf_append(b, tmp, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        *from_eof = 1;
    }
    while (buf_avail(b)) {
        ssize_t n = send(to, b->data + b->off, buf_avail(b), MSG_NOSIGNAL);
        if (n > 0) {
            b->off += (size_t)n;
            if (sent)
                *sent += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        return -1;
    }
    return 0;
}

static void px_tunnel_pump(struct proxy *px)
{
    if (px->state != PX_TUNNEL || px->cfd < 0)
        return;
    if (pump_one(px->cfd, px->fd, &px->to_backend, &px->client_eof, NULL,
                 &px_stats.bytes_to_backend) < 0 ||
        pump_one(px->fd, px->cfd, &px->to_client, &px->backend_eof, &px_stats.bytes_from_backend,
                 NULL) < 0) {
        px_finish(px);
        return;
    }
    if (px->client_eof && !buf_avail(&px->to_backend) && !px->backend_shut) {
        shutdown(px->fd, SHUT_WR);
        px->backend_shut = 1;
    }
    if (px->backend_eof && !buf_avail(&px->to_client) && !px->client_shut) {
        shutdown(px->cfd, SHUT_WR);
        px->client_shut = 1;
    }
    if (px->client_shut && px->backend_shut) {
        px_finish(px);
        return;
    }
    uint32_t bev = 0, cev = 0;
    if (!px->backend_eof && buf_avail(&px->to_client) < UP_HIGH)
        bev |= EPOLLIN | EPOLLRDHUP;
    if (buf_avail(&px->to_backend))
        bev |= EPOLLOUT;
    if (!px->client_eof && buf_avail(&px->to_backend) < UP_HIGH)
        cev |= EPOLLIN | EPOLLRDHUP;
    if (buf_avail(&px->to_client))
        cev |= EPOLLOUT;
    loop_watch *bw = px_watch(px);
    if (bev != bw->events)
        loop_watch_mod(bw, bev);
    if (cev != px->cw.events)
        loop_watch_mod(&px->cw, cev);
}

static void on_client_sock(loop_watch *w, uint32_t events)
{
    struct proxy *px = w->data;
    (void)events;
    px_tunnel_pump(px);
}

static void on_upgraded(void *cls, struct MHD_Connection *connection, void *con_cls,
                        const char *extra_in, size_t extra_in_size, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh)
{
    struct proxy *px = cls;
    (void)connection;
    (void)con_cls;
    px->urh = urh;
    px->cfd = sock;
    if (px->state != PX_TUNNEL) { /* the proxy already ended */
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        px->urh = NULL;
        httpd_request_run();
        return;
    }
    int fl = fcntl(sock, F_GETFL);
    if (fl >= 0)
        fcntl(sock, F_SETFL, fl | O_NONBLOCK);
    if (extra_in_size)
        buf_append(&px->to_backend, extra_in, extra_in_size);
    px->cw.fd = sock;
    px->cw.events = EPOLLIN | EPOLLRDHUP | EPOLLOUT;
    px->cw.cb = on_client_sock;
    px->cw.data = px;
    if (loop_watch_add(&px->cw) < 0) {
        px_finish(px);
        return;
    }
    px->read_paused = 0;
    px_tunnel_pump(px);
}

/* MHD is done with the request: the client went away, or the response was fully sent. */
void proxy_detach(struct proxy *px)
{
    if (px->state == PX_TUNNEL && px->cfd >= 0)
        return; /* the tunnel outlives the HTTP request */
    px_finish(px);
}

/* ---- start: http.proxy(req, opts) ---- */

static int connect_to(struct proxy *px, const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        errno = EINVAL;
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, res->ai_addr, res->ai_addrlen) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        freeaddrinfo(res);
        errno = e;
        return -1;
    }
    freeaddrinfo(res);
    px->fd = fd;
    px_stats.backend_connects_total++;
    return 0;
}

/* A fresh connection to px->host:px->port, watched until it is established. */
static int px_start_connect(struct proxy *px)
{
    if (connect_to(px, px->host, px->port) < 0)
        return -1;
    px->state = PX_CONNECTING;
    px->w.fd = px->fd;
    px->w.events = EPOLLOUT;
    px->w.cb = on_backend;
    px->w.data = px;
    if (loop_watch_add(&px->w) < 0) {
        close(px->fd);
        px->fd = -1;
        errno = ENOMEM;
        return -1;
    }
    loop_timer_start(&px->connect_timer, px->connect_ns);
    return 0;
}

static const char *opt_string(lua_State *L, int idx, const char *k, const char *def)
{
    lua_getfield(L, idx, k);
    const char *v = lua_isnil(L, -1) ? def : luaL_checkstring(L, -1);
    lua_pop(L, 1);
    return v;
}

static lua_Number opt_number(lua_State *L, int idx, const char *k, lua_Number def)
{
    lua_getfield(L, idx, k);
    lua_Number v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* The forwarding state of request c, up to the request line of the head; NULL when out of memory.
 * Both ways into the proxy start here: http.proxy (Lua's decision) and proxy_fast (a remembered
 * one). */
static struct proxy *px_begin(struct reqctx *c, const char *host, int port, const char *method,
                              const char *target, size_t target_len, const char *tag, int upgrade,
                              double cto, double hto, const char *request_id)
{
    struct proxy *px = calloc(1, sizeof(*px));
    if (!px)
        return NULL;
    px->fd = -1;
    px->cfd = -1;
    px->c = c;
    px_stats.connections_total++;
    px_stats.active++;
    px->anext = pool.active;
    if (pool.active)
        pool.active->aprev = px;
    pool.active = px;
    /* pooled: keep-alive is on, not an upgrade, and the key fits */
    px->pool_ok = pool.max_idle && !upgrade && strlen(tag) < sizeof(px->tag) &&
                  strlen(host) < sizeof(px->host);
    snprintf(px->tag, sizeof(px->tag), "%s", tag);
    snprintf(px->host, sizeof(px->host), "%s", host);
    px->port = port;
    px->connect_ns = (uint64_t)(cto * 1e9);
    px->idempotent = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ||
                     strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0 ||
                     strcmp(method, "OPTIONS") == 0 || strcmp(method, "TRACE") == 0;
    httpd_ctx_ref(c);
    c->px = px;
    c->proxied = 1;
    px->is_head = strcmp(method, "HEAD") == 0;
    px->header_timeout_ms = hto > 0 ? (unsigned)(hto * 1000) : 0;
    px->connect_timer.cb = on_connect_timeout;
    px->connect_timer.data = px;
    px->header_timer.cb = on_header_timeout;
    px->header_timer.data = px;
    snprintf(px->target, sizeof(px->target), "%s%s%s:%d", strchr(host, ':') ? "[" : "", host,
             strchr(host, ':') ? "]" : "", port);
    if (request_id)
        snprintf(px->request_id, sizeof(px->request_id), "%s", request_id);
    buf_append(&px->out, method, strlen(method));
    buf_append(&px->out, " ", 1);
    buf_append(&px->out, target, target_len);
    buf_append(&px->out, " HTTP/1.1\r\n", 11);
    return px;
}

/* One header line of the head to the backend; a name or value holding CR or LF is left out. */
static void px_header(struct proxy *px, const char *name, size_t nl, const char *value, size_t vl)
{
    if (memchr(name, '\n', nl) || memchr(value, '\n', vl) || memchr(name, '\r', nl) ||
        memchr(value, '\r', vl))
        return;
    buf_append(&px->out, name, nl);
    buf_append(&px->out, ": ", 2);
    buf_append(&px->out, value, vl);
    buf_append(&px->out, "\r\n", 2);
}

/* The rest of the head (the body framing of the inbound request), then off to the backend: on a
 * pooled connection at once, else a new connection. Failures answer the client (px_fail). */
static void px_launch(struct proxy *px, int upgrade)
{
    struct reqctx *c = px->c;
    /* body framing follows the inbound request */
    const char *cl = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Content-Length");
    const char *te = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Transfer-Encoding");
    if (te && has_token(te, "chunked")) {
        px->req_chunked = 1;
        px->req_body = 1;
        buf_append(&px->out, "Transfer-Encoding: chunked\r\n", 28);
    } else if (cl) {
        px->req_body = 1;
        buf_append(&px->out, "Content-Length: ", 16);
        buf_append(&px->out, cl, strlen(cl));
        buf_append(&px->out, "\r\n", 2);
    }
    if (!upgrade && !px->pool_ok)
        buf_append(&px->out, "Connection: close\r\n", 19);
    buf_append(&px->out, "\r\n", 2);
    /* body bytes that arrived while Lua decided */
    if (c->body.len)
        append_body(px, c->body.data, c->body.len);
    buf_free(&c->body);
    if (c->upload_done || !px->req_body) {
        px->req_done = 1;
        if (px->req_chunked && c->upload_done)
            buf_append(&px->out, "0\r\n\r\n", 5);
    }
    px->out_whole = px->req_done;

    /* a request that can be sent again (px_retry) skips the liveness peek */
    struct idle_conn *ic =
        px->pool_ok ? pool_take(px->tag, px->host, px->port, !(px->idempotent && px->out_whole))
                    : NULL;
    if (ic) { /* a pooled connection (still in the epoll set): the request goes out at once */
        px->fd = ic->fd;
        px->borrow = ic;
        ic->px = px; /* its watch forwards the fd's events to on_backend(&px->w) */
        px->reused = 1;
        px_stats.reused_total++;
        px->state = PX_HEAD;
        px->w.fd = ic->fd;
        px->w.events = 0;
        px->w.cb = on_backend;
        px->w.data = px;
        if (px->header_timeout_ms)
            loop_timer_start(&px->header_timer, (uint64_t)px->header_timeout_ms * 1000000ull);
        if (px_flush_out(px) < 0) {
            if (!px_retry(px))
                px_fail(px, "GENERAL::UNKNOWN_ERROR", 502,
                        "Could not send the request to the backend sandbox %s: %s", px->target,
                        strerror(errno));
        } else if (px->state != PX_DONE && px->borrow) {
            px_set_events(px); /* no epoll_ctl unless the request did not all go out */
        } else if (px->state != PX_DONE && !px->borrow &&
                   loop_watch_mod(&px->w, EPOLLIN | EPOLLRDHUP |
                                              (buf_avail(&px->out) ? EPOLLOUT : 0)) < 0) {
            px_fail(px, "GENERAL::UNKNOWN_ERROR", 500,
                    "An internal error occurred in the proxy: %s", "cannot watch the connection");
        }
        if (px->state != PX_DONE && c->suspended)
            httpd_ctx_resume(c);
        return;
    } else if (px_start_connect(px) < 0) {
        px_fail(px, "GENERAL::UNKNOWN_ERROR", 502,
                "Could not connect to the backend sandbox %s: %s", px->target, strerror(errno));
        return;
    }
    if (c->suspended) /* it waited for this decision with body bytes unconsumed */
        httpd_ctx_resume(c);
}

/* http.proxy(req, { host=, port=, method=, target= "/path?query", headers = {{name, value}, ...}
 *   or a flat {name, value, name, value, ...}, upgrade = bool, pool = tag, connect_timeout = 10,
 *   header_timeout = 0, remember = seconds }) -> true. The core owns the response from here on.
 * `remember` > 0: the decision may be taken again without Lua for that long (proxy_fast.c). */
int lhttp_proxy(lua_State *L, struct reqctx *c)
{
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *host = opt_string(L, 2, "host", NULL);
    int port = (int)opt_number(L, 2, "port", 0);
    const char *method = opt_string(L, 2, "method", "GET");
    size_t target_len;
    lua_getfield(L, 2, "target");
    const char *target = lua_isnil(L, -1) ? "/" : luaL_checklstring(L, -1, &target_len);
    if (lua_isnil(L, -1))
        target_len = 1;
    lua_pop(L, 1); /* (the options table keeps the string alive) */
    lua_Number cto = opt_number(L, 2, "connect_timeout", 10);
    lua_Number hto = opt_number(L, 2, "header_timeout", 0);
    lua_Number remember = opt_number(L, 2, "remember", 0);
    if (!host || port < 1 || port > 65535)
        return luaL_argerror(L, 2, "host and a port in 1..65535 are required");
    const char *tag = opt_string(L, 2, "pool", "");
    lua_getfield(L, 2, "upgrade");
    int upgrade = lua_toboolean(L, -1);
    lua_pop(L, 1);
    task *t = task_of(L);
    struct proxy *px = px_begin(c, host, port, method, target, target_len, tag, upgrade, cto, hto,
                                t ? t->request_id : NULL);
    if (!px)
        return luaL_error(L, "out of memory");
    lua_getfield(L, 2, "headers");
    if (lua_istable(L, -1)) {
        /* either {name, value} pairs or a flat name, value, name, value, ... list */
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, -1, i) == LUA_TTABLE) {
                lua_rawgeti(L, -1, 1);
                lua_rawgeti(L, -2, 2);
            } else {
                lua_pushnil(L); /* (the slot a pair would take) */
                lua_insert(L, -2);
                lua_rawgeti(L, -3, ++i);
            }
            size_t nl, vl;
            const char *name = lua_tolstring(L, -2, &nl);
            const char *value = lua_tolstring(L, -1, &vl);
            if (name && value)
                px_header(px, name, nl, value, vl);
            lua_pop(L, 3);
        }
    }
    lua_pop(L, 1);
    if (remember > 0 && !upgrade)
        proxy_fast_remember(c, host, port, tag, cto, hto, remember);
    px_launch(px, upgrade);
    lua_pushboolean(L, 1);
    return 1;
}

/* The fast path's start (proxy_fast.c): the head is the method, target and headers it built. */
struct proxy *proxy_begin_fast(struct reqctx *c, const char *host, int port, const char *method,
                               const char *target, size_t target_len, const char *tag, double cto,
                               double hto, const char *request_id)
{
    return px_begin(c, host, port, method, target, target_len, tag, 0, cto, hto, request_id);
}

void proxy_header(struct proxy *px, const char *name, size_t nl, const char *value, size_t vl)
{
    px_header(px, name, nl, value, vl);
}

void proxy_launch(struct proxy *px)
{
    px_launch(px, 0);
}

/* http.proxy_stats() -> { connections_total, active, failures_total, bytes_to_backend,
 * bytes_from_backend }: the proxy's counters since the start. */
int lhttp_proxy_stats(lua_State *L)
{
    lua_createtable(L, 0, 9);
    lua_pushinteger(L, (lua_Integer)px_stats.connections_total);
    lua_setfield(L, -2, "connections_total");
    lua_pushinteger(L, (lua_Integer)px_stats.active);
    lua_setfield(L, -2, "active");
    lua_pushinteger(L, (lua_Integer)px_stats.failures_total);
    lua_setfield(L, -2, "failures_total");
    lua_pushinteger(L, (lua_Integer)px_stats.bytes_to_backend);
    lua_setfield(L, -2, "bytes_to_backend");
    lua_pushinteger(L, (lua_Integer)px_stats.bytes_from_backend);
    lua_setfield(L, -2, "bytes_from_backend");
    lua_pushinteger(L, (lua_Integer)px_stats.backend_connects_total);
    lua_setfield(L, -2, "backend_connects_total");
    lua_pushinteger(L, (lua_Integer)px_stats.reused_total);
    lua_setfield(L, -2, "reused_total");
    lua_pushinteger(L, (lua_Integer)px_stats.retries_total);
    lua_setfield(L, -2, "retries_total");
    lua_pushinteger(L, (lua_Integer)pool.idle);
    lua_setfield(L, -2, "pool_idle");
    proxy_fast_stats(L);
    return 1;
}

/* Closes the idle connections of pool tag `tag` (every tag when NULL), and keeps the ones in use
 * with it from going back. Returns how many idle connections were closed. */
static unsigned pool_close(const char *tag)
{
    unsigned n = 0;
    for (int b = 0; b < POOL_BUCKETS; b++) {
        struct pool_key *k = pool.buckets[b];
        while (k) {
            struct pool_key *next = k->next;
            if (!tag || strcmp(k->tag, tag) == 0) {
                while (k->head) {
                    int last = k->count == 1;
                    idle_close(k->head); /* frees k with its last connection */
                    n++;
                    if (last)
                        break;
                }
            }
            k = next;
        }
    }
    for (struct proxy *px = pool.active; px; px = px->anext)
        if (!tag || strcmp(px->tag, tag) == 0)
            px->pool_ok = 0;
    return n;
}

/* http.proxy_configure{ keepalive = N, keepalive_timeout = seconds, key_header =, token_header = }:
 * idle connections kept per backend (0: none, the proxy then sends Connection: close) and how long
 * one may stay idle; the credential headers of the remembered decisions (proxy_fast.c). */
int lhttp_proxy_configure(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = (lua_Integer)opt_number(L, 1, "keepalive", pool.max_idle);
    lua_Number t = opt_number(L, 1, "keepalive_timeout", (lua_Number)pool.idle_ns / 1e9);
    if (n < 0 || n > 100000)
        return luaL_argerror(L, 1, "keepalive must be in 0..100000");
    if (!(t > 0) || t > 86400)
        return luaL_argerror(L, 1, "keepalive_timeout must be in (0, 86400] seconds");
    pool.max_idle = (unsigned)n;
    pool.idle_ns = (uint64_t)(t * 1e9);
    const char *kh = opt_string(L, 1, "key_header", NULL);
    const char *th = opt_string(L, 1, "token_header", NULL);
    if (kh || th)
        proxy_fast_configure(kh, th);
    if (!pool.max_idle)
        pool_close(NULL);
    return 0;
}

/* http.proxy_pool_close(tag?) -> n: closes the pooled connections of a tag (all without one). */
int lhttp_proxy_pool_close(lua_State *L)
{
    const char *tag = luaL_optstring(L, 1, NULL);
    lua_pushinteger(L, (lua_Integer)pool_close(tag));
    return 1;
}

/* At shutdown (the loop no longer runs): closes every idle connection. */
void proxy_pool_free(void)
{
    for (int b = 0; b < POOL_BUCKETS; b++) {
        struct pool_key *k = pool.buckets[b];
        while (k) {
            struct pool_key *next = k->next;
            for (struct idle_conn *ic = k->head; ic;) {
                struct idle_conn *in = ic->next;
                loop_watch_del(&ic->w);
                loop_timer_stop(&ic->timer);
                close(ic->fd);
                free(ic);
                ic = in;
            }
            free(k);
            k = next;
        }
        pool.buckets[b] = NULL;
    }
    pool.idle = 0;
}
