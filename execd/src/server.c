/*
 * server.c: the agent's process, event loop, connections and router.
 *
 * One epoll instance drives everything: the listening socket, client connections, the
 * signalfd (SIGCHLD, SIGTERM, SIGINT), command output pipes, session shell pipes and proxy
 * upstream sockets. There
 * are no threads. Each connection is a small state machine:
 *
 *   C_HEAD  -> read and parse a request head (http.c); authenticate; pick a route
 *   C_BODY  -> de-frame the body (Content-Length or chunked) into the route's sink: a 1 MiB
 *              buffer (JSON routes), the multipart upload writer, or nowhere (early errors)
 *   C_RESP  -> a handler produced a response; a streamed one (command events, file download)
 *              keeps the connection here until it ends
 *   C_PROXY -> raw byte tunnel to 127.0.0.1:{port} (proxy.c) until either side closes
 *   C_CLOSING -> flush what is queued, then close
 *
 * Back-pressure: a connection stops reading while it is not in C_HEAD/C_BODY, and producers
 * (downloads, the proxy) stop filling `out` above EXECD_OUT_HIGH.
 */
#include "execd.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

#define READ_CHUNK (64 * 1024)
#define IN_CAP (256 * 1024)

int g_port = EXECD_DEFAULT_PORT;
static int g_ep = -1;
static const char *g_token;
static struct conn *g_conns;
static struct ev g_listen_ev = {EV_LISTEN, NULL};
static struct ev g_sig_ev = {EV_SIGNAL, NULL};
static struct ev g_pool_ev = {EV_POOL_WATCH, NULL};
static int g_stop;
static int g_nconns; /* client connections open (not yet closed) */
static long g_max_conns = EXECD_MAX_CONNS;
static long g_head_timeout_ms = EXECD_HEAD_TIMEOUT_MS;
static long g_idle_timeout_ms = EXECD_IDLE_TIMEOUT_MS;

/* ---- time ---------------------------------------------------------------------------------- */

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t wall_ms(void)
{
    return wall_ns() / 1000000;
}

void fmt_time_ns(char *out, size_t n, int64_t ns)
{
    time_t sec = (time_t)(ns / 1000000000);
    struct tm tm;
    char tmp[32];

    gmtime_r(&sec, &tm);
    strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%09lldZ", tmp, (long long)(ns % 1000000000));
}

static void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_msg(const char *fmt, ...)
{
    char ts[40];
    va_list ap;

    fmt_time_ns(ts, sizeof(ts), wall_ns());
    fprintf(stderr, "%s execd: ", ts);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- epoll --------------------------------------------------------------------------------- */

int loop_add(int fd, uint32_t events, struct ev *ev)
{
    struct epoll_event e = {.events = events, .data.ptr = ev};
    return epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &e);
}

int loop_mod(int fd, uint32_t events, struct ev *ev)
{
    struct epoll_event e = {.events = events, .data.ptr = ev};
    return epoll_ctl(g_ep, EPOLL_CTL_MOD, fd, &e);
}

void loop_del(int fd)
{
    epoll_ctl(g_ep, EPOLL_CTL_DEL, fd, NULL);
}

/* ---- responses ----------------------------------------------------------------------------- */

static const char *status_text(int s)
{
    switch (s) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 206:
        return "Partial Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 416:
        return "Range Not Satisfiable";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    default:
        return "Unknown";
    }
}

static void conn_head(struct conn *c, int status, const char *ctype, const char *framing,
                      const char *extra)
{
    buf_printf(&c->out, "HTTP/1.1 %d %s\r\n", status, status_text(status));
    if (ctype)
        buf_printf(&c->out, "Content-Type: %s\r\n", ctype);
    buf_puts(&c->out, framing);
    if (!c->keep_alive)
        buf_puts(&c->out, "Connection: close\r\n");
    if (extra)
        buf_puts(&c->out, extra);
    buf_puts(&c->out, "\r\n");
}

/* The response to the current request has been queued in full. */
static void conn_request_done(struct conn *c)
{
    if (c->have_req)
        http_req_free(&c->req);
    c->have_req = 0;
    free(c->path);
    c->path = NULL;
    buf_free(&c->reqbody);
    files_upload_free(c);
    c->handler = NULL;
    c->err_status = 0;
    c->too_large = 0;
    c->streaming = 0;
    c->end_at = 0;
    c->watch_at = 0;
    c->state = c->keep_alive ? C_HEAD : C_CLOSING;
    c->head_scan = 0;
    c->wait_since = now_ms();
}

void conn_reply(struct conn *c, int status, const char *ctype, const char *body, size_t len,
                const char *extra_headers)
{
    char framing[64];

    snprintf(framing, sizeof(framing), "Content-Length: %zu\r\n", len);
    conn_head(c, status, len ? ctype : NULL, framing, extra_headers);
    buf_append(&c->out, body, len);
    conn_request_done(c);
    conn_flush(c);
}

void conn_reply_empty(struct conn *c)
{
    conn_reply(c, 200, NULL, "", 0, NULL);
}

void conn_reply_json(struct conn *c, int status, const struct buf *json)
{
    conn_reply(c, status, "application/json", json->data ? json->data : "", json->len, NULL);
}

void conn_reply_error(struct conn *c, int status, const char *code, const char *fmt, ...)
{
    struct buf b = {0};
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    buf_puts(&b, "{\"code\":");
    json_put_cstr(&b, code);
    buf_puts(&b, ",\"message\":");
    json_put_cstr(&b, msg);
    buf_puts(&b, "}");
    conn_reply_json(c, status, &b);
    buf_free(&b);
}

void conn_stream_begin(struct conn *c, int status, const char *ctype)
{
    conn_head(c, status, ctype, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n", NULL);
    c->streaming = 1;
    c->state = C_RESP;
}

void conn_stream_write(struct conn *c, const char *p, size_t n)
{
    if (!n || c->dead)
        return;
    buf_printf(&c->out, "%zx\r\n", n);
    buf_append(&c->out, p, n);
    buf_puts(&c->out, "\r\n");
    conn_flush(c);
}

void conn_stream_end(struct conn *c)
{
    if (c->dead)
        return;
    buf_puts(&c->out, "0\r\n\r\n");
    conn_request_done(c);
    conn_flush(c);
}

void conn_send_file(struct conn *c, int status, const char *head_extra, int fd, uint64_t off,
                    uint64_t len)
{
    char framing[64];

    snprintf(framing, sizeof(framing), "Content-Length: %llu\r\n", (unsigned long long)len);
    conn_head(c, status, "application/octet-stream", framing, head_extra);
    if (len == 0 || lseek(fd, (off_t)off, SEEK_SET) < 0) {
        close(fd);
        conn_request_done(c);
        conn_flush(c);
        return;
    }
    c->file_fd = fd;
    c->file_left = len;
    c->state = C_RESP;
    conn_flush(c);
}

/* Moves more file bytes into `out` for a download in progress. */
static void conn_fill_file(struct conn *c)
{
    while (c->file_fd >= 0 && c->out.len < EXECD_OUT_HIGH) {
        size_t want = c->file_left < READ_CHUNK ? (size_t)c->file_left : READ_CHUNK;
        ssize_t n;
        if (buf_reserve(&c->out, want) < 0)
            return;
        n = read(c->file_fd, c->out.data + c->out.len, want);
        if (n <= 0) {
            /* the file shrank or failed: the Content-Length cannot be honoured, so close */
            close(c->file_fd);
            c->file_fd = -1;
            c->keep_alive = 0;
            conn_request_done(c);
            return;
        }
        c->out.len += (size_t)n;
        c->file_left -= (uint64_t)n;
        if (!c->file_left) {
            close(c->file_fd);
            c->file_fd = -1;
            conn_request_done(c);
        }
    }
}

void conn_upgrade(struct conn *c, const char *accept)
{
    buf_printf(&c->out,
               "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Accept: %s\r\n\r\n",
               accept);
    c->keep_alive = 0;
    conn_request_done(c);
    c->state = C_WS;
    conn_flush(c);
}

void conn_send_lines(struct conn *c, int fd, long long offset, long long limit)
{
    conn_stream_begin(c, 200, "text/plain; charset=utf-8");
    line_range_init(&c->lines, offset, limit);
    c->lines_fd = fd;
    conn_flush(c);
}

/* Ends a line-range download: the last chunk, then the next request. */
static void conn_lines_end(struct conn *c)
{
    close(c->lines_fd);
    c->lines_fd = -1;
    buf_puts(&c->out, "0\r\n\r\n");
    conn_request_done(c);
}

/* Scans more of a line-range download. Each call reads at most LINES_BUDGET bytes of the file, so a
 * long scan (offset near the end of a big file) shares the loop with other clients: the connection
 * stays EPOLLOUT-interested and is called again on the next turn. The file is read in READ_CHUNK
 * pieces into one static buffer; only the selected lines reach `out`. */
#define LINES_BUDGET (8 * 1024 * 1024)
static void conn_fill_lines(struct conn *c)
{
    static char chunk[READ_CHUNK];
    static struct buf sel;
    size_t scanned = 0;

    while (c->lines_fd >= 0 && c->out.len < EXECD_OUT_HIGH && scanned < LINES_BUDGET) {
        ssize_t n = read(c->lines_fd, chunk, sizeof(chunk));
        int done;

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            /* a read error after the head: end the stream here and drop the connection */
            c->keep_alive = 0;
            conn_lines_end(c);
            return;
        }
        if (n == 0) {
            line_range_eof(&c->lines);
            conn_lines_end(c);
            return;
        }
        scanned += (size_t)n;
        buf_reset(&sel);
        done = line_range_feed(&c->lines, chunk, (size_t)n, &sel);
        if (sel.len) {
            buf_printf(&c->out, "%zx\r\n", sel.len);
            buf_append(&c->out, sel.data, sel.len);
            buf_puts(&c->out, "\r\n");
        }
        if (sel.cap > READ_CHUNK * 2)
            buf_free(&sel); /* keep the agent small after a long selection */
        if (done)
            conn_lines_end(c);
    }
}

void conn_flush(struct conn *c)
{
    if (c->dead)
        return;
    for (;;) {
        ssize_t n;
        if (c->file_fd >= 0)
            conn_fill_file(c);
        if (c->lines_fd >= 0)
            conn_fill_lines(c);
        if (!c->out.len)
            break;
        n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            conn_close(c);
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
    if (!c->out.len && c->state == C_CLOSING) {
        conn_close(c);
        return;
    }
    if (c->cmd)
        cmd_resume(c->cmd);
    if (c->dead)
        return;
    if (c->px)
        proxy_client_writable(c);
    if (c->pty)
        pty_resume(c->pty);
    conn_sync(c);
}

void conn_sync(struct conn *c)
{
    uint32_t ev = 0;

    if (c->dead)
        return;
    if ((c->state == C_HEAD || c->state == C_BODY) && c->in.len < IN_CAP && !c->peer_eof)
        ev |= EPOLLIN;
    if (c->state == C_PROXY && c->px && !c->peer_eof && c->in.len < IN_CAP)
        ev |= EPOLLIN; /* proxy.c throttles by not draining `in` */
    if (c->state == C_WS && !c->peer_eof && c->in.len < IN_CAP)
        ev |= EPOLLIN; /* pty.c throttles by not parsing `in` while stdin is backed up */
    if (c->out.len || c->file_fd >= 0 || c->lines_fd >= 0)
        ev |= EPOLLOUT;
    if (ev != c->events) {
        loop_mod(c->fd, ev, &c->ev);
        c->events = ev;
    }
}

void conn_close(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    g_nconns--;
    cmd_conn_gone(c);
    pty_conn_gone(c);
    proxy_free(c);
    files_upload_free(c);
    loop_del(c->fd);
    close(c->fd);
    if (c->file_fd >= 0)
        close(c->file_fd);
    c->file_fd = -1;
    if (c->lines_fd >= 0)
        close(c->lines_fd);
    c->lines_fd = -1;
}

static void conn_free(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        g_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->have_req)
        http_req_free(&c->req);
    free(c->path);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->reqbody);
    buf_free(&c->ws_msg);
    free(c->px); /* proxy_free (via conn_close) already closed its descriptor */
    free(c);
}

/* ---- routing ------------------------------------------------------------------------------- */

/* The claim of a pool member (pool.c) replaces the boot token: the old one stops working at once.
 */
void execd_set_token(const char *token)
{
    char *t = token && *token ? strdup(token) : NULL;

    if (t)
        g_token = t; /* (the previous one is the environment's or an earlier claim's: kept) */
}

static int token_ok(const char *got)
{
    size_t a, b, i;
    unsigned char diff = 0;

    if (!g_token)
        return 1;
    if (!got)
        return 0;
    a = strlen(g_token);
    b = strlen(got);
    diff = (unsigned char)(a != b);
    for (i = 0; i < a; i++)
        diff |= (unsigned char)(g_token[i] ^ (i < b ? got[i] : 0));
    return diff == 0;
}

static void handle_ping(struct conn *c)
{
    const char *marker = pool_claim_marker();
    char hdr[192];

    if (!marker) {
        conn_reply_empty(c);
        return;
    }
    /* a pool member that sees its server's claim directory says so (pool.c) */
    snprintf(hdr, sizeof(hdr), "X-Opensandbox-Pool-Claim-File: %s\r\n", marker);
    conn_reply(c, 200, NULL, "", 0, hdr);
}

static void handle_status(struct conn *c)
{
    cmd_handle_status(c, c->path + strlen("/command/status/"));
}

static void handle_logs(struct conn *c)
{
    char id[128];
    const char *s = c->path + strlen("/command/");
    size_t n = strlen(s) - strlen("/logs");

    if (n >= sizeof(id))
        n = sizeof(id) - 1;
    memcpy(id, s, n);
    id[n] = '\0';
    cmd_handle_logs(c, id);
}

/* The {id} of /session/{id} or /session/{id}/run, copied into id. */
static void session_id_of(const struct conn *c, char *id, size_t n)
{
    const char *s = c->path + strlen("/session/"), *slash = strchr(s, '/');
    size_t len = slash ? (size_t)(slash - s) : strlen(s);

    if (len >= n)
        len = n - 1;
    memcpy(id, s, len);
    id[len] = '\0';
}

static void handle_session_run(struct conn *c)
{
    char id[128];

    session_id_of(c, id, sizeof(id));
    session_handle_run(c, id);
}

static void handle_session_delete(struct conn *c)
{
    char id[128];

    session_id_of(c, id, sizeof(id));
    session_handle_delete(c, id);
}

/* The {id} of /pty/{id} or /pty/{id}/ws, copied into id. */
static void pty_id_of(const struct conn *c, char *id, size_t n)
{
    const char *s = c->path + strlen("/pty/"), *slash = strchr(s, '/');
    size_t len = slash ? (size_t)(slash - s) : strlen(s);

    if (len >= n)
        len = n - 1;
    memcpy(id, s, len);
    id[len] = '\0';
}

static void handle_pty_status(struct conn *c)
{
    char id[128];

    pty_id_of(c, id, sizeof(id));
    pty_handle_status(c, id);
}

static void handle_pty_delete(struct conn *c)
{
    char id[128];

    pty_id_of(c, id, sizeof(id));
    pty_handle_delete(c, id);
}

static void handle_pty_ws(struct conn *c)
{
    char id[128];

    pty_id_of(c, id, sizeof(id));
    pty_handle_ws(c, id);
}

static void handle_upload(struct conn *c)
{
    files_upload_end(c);
}

struct route {
    const char *method;
    const char *path;
    handler_fn fn;
    enum body_mode mode;
};

static const struct route routes[] = {
    {"GET", "/ping", handle_ping, BODY_DISCARD},
    {"POST", "/command", cmd_handle_run, BODY_BUFFER},
    {"DELETE", "/command", cmd_handle_kill, BODY_DISCARD},
    {"POST", "/files/upload", handle_upload, BODY_UPLOAD},
    {"GET", "/files/download", files_handle_download, BODY_DISCARD},
    {"GET", "/files/info", files_handle_info, BODY_DISCARD},
    {"DELETE", "/files", files_handle_delete, BODY_DISCARD},
    {"GET", "/files/search", files_handle_search, BODY_DISCARD},
    {"POST", "/files/replace", files_handle_replace, BODY_BUFFER},
    {"POST", "/files/permissions", files_handle_permissions, BODY_BUFFER},
    {"POST", "/files/mv", files_handle_mv, BODY_BUFFER},
    {"POST", "/directories", files_handle_mkdirs, BODY_BUFFER},
    {"DELETE", "/directories", files_handle_rmdirs, BODY_DISCARD},
    {"GET", "/directories/list", files_handle_list, BODY_DISCARD},
    {"GET", "/metrics", metrics_handle, BODY_DISCARD},
    {"GET", "/metrics/watch", metrics_watch_handle, BODY_DISCARD},
    {"POST", "/session", session_handle_create, BODY_BUFFER},
    {"POST", "/pty", pty_handle_create, BODY_BUFFER},
    {"POST", "/pool/claim", pool_handle_claim, BODY_BUFFER},
};

/* 1: /pty/{id}/ws, 2: /pty/{id}, 0: neither ({id} is one non-empty segment). */
static int path_pty(const char *p)
{
    const char *id = p + 5, *slash;

    if (strncmp(p, "/pty/", 5) != 0 || !*id || *id == '/')
        return 0;
    slash = strchr(id, '/');
    if (!slash)
        return 2;
    return strcmp(slash, "/ws") == 0 ? 1 : 0;
}

/* 1: /session/{id}/run, 2: /session/{id}, 0: neither ({id} is one non-empty segment). */
static int path_session(const char *p)
{
    const char *id = p + 9, *slash;

    if (strncmp(p, "/session/", 9) != 0 || !*id || *id == '/')
        return 0;
    slash = strchr(id, '/');
    if (!slash)
        return 2;
    return strcmp(slash, "/run") == 0 ? 1 : 0;
}

static int path_is_logs(const char *p)
{
    size_t n = strlen(p);
    return strncmp(p, "/command/", 9) == 0 && n > 9 + 5 && strcmp(p + n - 5, "/logs") == 0 &&
           !memchr(p + 9, '/', n - 9 - 5);
}

static void route_select(struct conn *c)
{
    const char *m = c->req.method, *p = c->path;
    int path_known = 0;
    size_t i;

    for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(routes[i].path, p) != 0)
            continue;
        path_known = 1;
        if (strcmp(routes[i].method, m) == 0) {
            c->handler = routes[i].fn;
            c->body_mode = routes[i].mode;
            return;
        }
    }
    if (strncmp(p, "/command/status/", 16) == 0 && p[16] && !strchr(p + 16, '/')) {
        path_known = 1;
        if (strcmp(m, "GET") == 0) {
            c->handler = handle_status;
            return;
        }
    } else if (path_session(p)) {
        int kind = path_session(p);
        path_known = 1;
        if (kind == 1 && strcmp(m, "POST") == 0) {
            c->handler = handle_session_run;
            c->body_mode = BODY_BUFFER;
            return;
        }
        if (kind == 2 && strcmp(m, "DELETE") == 0) {
            c->handler = handle_session_delete;
            return;
        }
    } else if (path_pty(p)) {
        int kind = path_pty(p);
        path_known = 1;
        if (kind == 1 && strcmp(m, "GET") == 0) {
            c->handler = handle_pty_ws;
            return;
        }
        if (kind == 2 && strcmp(m, "GET") == 0) {
            c->handler = handle_pty_status;
            return;
        }
        if (kind == 2 && strcmp(m, "DELETE") == 0) {
            c->handler = handle_pty_delete;
            return;
        }
    } else if (path_is_logs(p)) {
        path_known = 1;
        if (strcmp(m, "GET") == 0) {
            c->handler = handle_logs;
            return;
        }
    }
    c->err_status = path_known ? 405 : 404;
    c->err_code = "UNKNOWN";
    c->err_msg = path_known ? "Method Not Allowed" : "Not Found";
}

/* Returns the port of a "/proxy/{port}" prefix of `raw` and the rest, or -1. */
static int proxy_prefix(const char *raw, const char **rest)
{
    const char *s;
    long port = 0;

    if (strncmp(raw, "/proxy/", 7) != 0)
        return -1;
    s = raw + 7;
    if (*s < '0' || *s > '9')
        return -1;
    while (*s >= '0' && *s <= '9' && port <= 65535)
        port = port * 10 + (*s++ - '0');
    if (port < 1 || port > 65535 || (*s && *s != '/' && *s != '?'))
        return -1;
    *rest = s;
    return (int)port;
}

static void request_begin(struct conn *c)
{
    struct buf path = {0};
    const char *rest = NULL, *raw = c->req.path;
    int port;

    c->keep_alive = c->req.keep_alive;
    c->body_mode = BODY_DISCARD;
    http_body_init(&c->body, &c->req);
    c->state = C_BODY;

    pool_check_file(); /* a claim the server wrote is taken before any request (pool.c) */
    if (!token_ok(http_header(&c->req, "X-EXECD-ACCESS-TOKEN"))) {
        c->err_status = 401;
        return;
    }
    port = proxy_prefix(raw, &rest);
    if (port > 0 && port != g_port && port != EXECD_DEFAULT_PORT) {
        c->body_mode = BODY_PROXY;
        c->state = C_PROXY;
        /* forward the raw target after the port byte for byte (path and query) */
        if (proxy_start(c, port, c->req.target + (rest - raw)) < 0)
            return; /* proxy_start replied */
        return;
    }
    if (port > 0)
        raw = *rest ? rest : "/";
    if (http_pct_decode(&path, raw, strlen(raw), 0) < 0 || memchr(path.data, '\0', path.len)) {
        buf_free(&path);
        c->err_status = 400;
        c->err_code = "INVALID_REQUEST_BODY";
        c->err_msg = "malformed request path";
        return;
    }
    c->path = path.data;
    route_select(c);
    if (c->req.expect_continue && (c->req.chunked || c->req.content_length > 0) && !c->err_status)
        buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
}

static void request_dispatch(struct conn *c)
{
    if (c->err_status == 401) {
        static const char msg[] =
            "{\"error\":\"Unauthorized: invalid or missing header X-EXECD-ACCESS-TOKEN\"}";
        conn_reply(c, 401, "application/json", msg, sizeof(msg) - 1, NULL);
        return;
    }
    if (c->err_status) {
        conn_reply_error(c, c->err_status, c->err_code, "%s", c->err_msg);
        return;
    }
    c->state = C_RESP;
    c->handler(c);
}

/* Feeds buffered input through the body decoder. 1: body complete, 0: need more, -1: bad. */
static int body_step(struct conn *c)
{
    for (;;) {
        const char *out = NULL;
        size_t used = 0, outlen = 0;
        int r = http_body_feed(&c->body, c->in.data, c->in.len, &used, &out, &outlen);

        if (r < 0)
            return -1;
        if (r == HTTP_BODY_DATA) {
            if (c->body_mode == BODY_BUFFER) {
                if (c->reqbody.len + outlen > EXECD_BODY_LIMIT)
                    c->too_large = 1;
                else
                    buf_append(&c->reqbody, out, outlen);
            } else if (c->body_mode == BODY_UPLOAD && !c->err_status) {
                files_upload_data(c, out, outlen);
            }
        }
        buf_consume(&c->in, used);
        if (c->too_large)
            return 2;
        if (r == HTTP_BODY_DONE)
            return 1;
        if (r == HTTP_BODY_MORE)
            return 0;
    }
}

/* Whether `in` holds the end of a request head (CRLF CRLF). Only the bytes that arrived since the
 * last call are searched (from 3 bytes back, for a terminator split across reads), so a client that
 * trickles a large head costs each byte once, not a re-parse of the whole head per loop turn; the
 * full parse runs once the end is there (or the head is too large to ever fit). */
static int head_complete(struct conn *c)
{
    size_t i = c->head_scan > 3 ? c->head_scan - 3 : 0;
    const char *p = c->in.data;

    for (; i + 3 < c->in.len; i++)
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
            return 1;
    c->head_scan = c->in.len;
    return c->in.len >= HTTP_MAX_HEAD;
}

void conn_process(struct conn *c)
{
    while (!c->dead) {
        if (c->state == C_HEAD) {
            int rc;
            if (!c->in.len || c->head_scan == c->in.len || !head_complete(c)) {
                if (c->peer_eof)
                    conn_close(c);
                break;
            }
            rc = http_parse_head(c->in.data, c->in.len, &c->req);
            if (rc == 0) {
                /* only empty lines so far (they are skipped before the request line) */
                c->head_scan = c->in.len;
                if (c->peer_eof)
                    conn_close(c);
                break;
            }
            if (rc < 0) {
                c->keep_alive = 0;
                c->state = C_RESP;
                if (rc == HTTP_ERR_TOO_LARGE)
                    conn_reply_error(c, 431, "INVALID_REQUEST_BODY",
                                     "request header fields too large");
                else if (rc == HTTP_ERR_NOT_IMPL)
                    conn_reply_error(c, 501, "INVALID_REQUEST_BODY",
                                     "unsupported transfer encoding");
                else
                    conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "malformed HTTP request");
                break;
            }
            buf_consume(&c->in, (size_t)rc);
            c->head_scan = 0;
            c->wait_since = now_ms(); /* C_BODY: since the last byte */
            c->have_req = 1;
            request_begin(c);
            if (c->body_mode == BODY_UPLOAD && !c->err_status)
                files_upload_begin(c);
            continue;
        }
        if (c->state == C_BODY) {
            int r = body_step(c);
            if (r == 0) {
                if (c->peer_eof)
                    conn_close(c);
                break;
            }
            if (r < 0 || r == 2) {
                c->keep_alive = 0;
                c->state = C_RESP;
                if (r < 0)
                    conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "malformed request body");
                else
                    conn_reply_error(c, 413, "INVALID_REQUEST_BODY",
                                     "Request body exceeds %d bytes.", EXECD_BODY_LIMIT);
                break;
            }
            request_dispatch(c);
            continue;
        }
        if (c->state == C_PROXY && c->px)
            proxy_client_data(c);
        if (c->state == C_WS) {
            pty_ws_data(c);
            if (!c->dead && c->peer_eof && c->state == C_WS)
                conn_close(c); /* the client went away: the shell keeps running */
        }
        break;
    }
    if (!c->dead)
        conn_sync(c);
}

static void conn_read(struct conn *c)
{
    while (c->in.len < IN_CAP) {
        ssize_t n;
        if (buf_reserve(&c->in, READ_CHUNK) < 0)
            return;
        n = recv(c->fd, c->in.data + c->in.len, READ_CHUNK, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            c->in.data[c->in.len] = '\0';
            if (c->state == C_BODY)
                c->wait_since = now_ms();
            continue;
        }
        if (n == 0) {
            c->peer_eof = 1;
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_close(c);
        return;
    }
}

static void conn_on_event(struct conn *c, uint32_t events)
{
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (c->state == C_HEAD || c->state == C_BODY || c->state == C_PROXY || c->state == C_WS)
            conn_read(c);
        else if (events & (EPOLLHUP | EPOLLERR))
            conn_close(c);
    }
    if (!c->dead && (events & EPOLLOUT))
        conn_flush(c);
    if (!c->dead)
        conn_process(c);
}

static void accept_all(int lfd)
{
    for (;;) {
        int one = 1, fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct conn *c;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                log_msg("accept: %s", strerror(errno));
            return;
        }
        if (g_nconns >= g_max_conns) {
            /* over the cap: a short answer the socket buffer takes at once, then close */
            static const char busy[] =
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                "Connection: close\r\nContent-Length: 70\r\n\r\n"
                "{\"code\":\"RUNTIME_ERROR\",\"message\":\"too many connections to the agent\"}";
            ssize_t w = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
            shutdown(fd, SHUT_WR);
            close(fd);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->file_fd = -1;
        c->lines_fd = -1;
        c->ev.kind = EV_CONN;
        c->ev.obj = c;
        c->events = EPOLLIN;
        c->keep_alive = 1;
        c->wait_since = now_ms();
        c->accepted_us = now_us();
        if (loop_add(fd, EPOLLIN, &c->ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        g_nconns++;
        c->next = g_conns;
        if (g_conns)
            g_conns->prev = c;
        g_conns = c;
    }
}

static void on_signal(int sfd)
{
    struct signalfd_siginfo si;

    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGCHLD)
            cmd_on_sigchld();
        else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            g_stop = 1;
    }
    cmd_on_sigchld(); /* SIGCHLD coalesces: always reap */
}

/* Timers for connections: stream end (EXECD_STREAM_LINGER_MS after a terminal event), metrics
 * watch samples and proxy connects. */
static int64_t conns_tick(int64_t now)
{
    int64_t next = INT64_MAX;
    struct conn *c, *n;

    for (c = g_conns; c; c = n) {
        n = c->next;
        if (c->dead)
            continue;
        if (c->streaming && c->end_at) {
            if (now >= c->end_at) {
                cmd_conn_gone(c);
                conn_stream_end(c);
                if (!c->dead)
                    conn_process(c);
            } else if (c->end_at < next) {
                next = c->end_at;
            }
        }
        if (!c->dead && c->watch_at) {
            int64_t d = metrics_watch_tick(c, now);
            if (d < next)
                next = d;
        }
        if (!c->dead && c->px) {
            int64_t d = proxy_tick(c, now);
            if (d < next)
                next = d;
        }
        if (!c->dead && c->state == C_HEAD && c->in.len)
            conn_process(c);
        /* a head that does not come (slowloris, an idle keep-alive) or a body that stalls */
        if (!c->dead && (c->state == C_HEAD || c->state == C_BODY)) {
            int64_t limit = c->state == C_HEAD ? g_head_timeout_ms : g_idle_timeout_ms;
            if (c->out.len || c->file_fd >= 0 || c->lines_fd >= 0) {
                c->wait_since = now; /* still answering the previous request */
            } else if (now - c->wait_since >= limit) {
                conn_close(c);
                continue;
            }
            if (c->wait_since + limit < next)
                next = c->wait_since + limit;
        }
    }
    return next;
}

static void reap_conns(void)
{
    struct conn *c, *n;

    pty_gc();
    for (c = g_conns; c; c = n) {
        n = c->next;
        if (c->dead)
            conn_free(c);
    }
}

/* Marks every descriptor inherited from our parent close-on-exec, so commands never see them. */
static void cloexec_inherited(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != dirfd(d))
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    closedir(d);
}

static int listen_on(int port)
{
    struct sockaddr_in sa;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 512) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A positive integer from the environment, or `def` when unset or invalid. */
static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (!v || !*v)
        return def;
    n = strtol(v, &end, 10);
    return *end || n < 1 ? def : n;
}

/* `execd --wait-gate PATH` (bootstrap.sh, network policy): makes a FIFO at PATH and waits until the
 * server opens it and writes "1", then exits 0. Gives up after GATE_TIMEOUT_S (exit 1): a sandbox
 * whose policy was never put in place must not start its entrypoint. */
#define GATE_TIMEOUT_S 600
static int wait_gate(const char *path)
{
    char c = 0;
    int fd;
    ssize_t n;

    unlink(path);
    if (mkfifo(path, 0600) < 0) {
        log_msg("start gate: mkfifo %s: %s", path, strerror(errno));
        return 1;
    }
    alarm(GATE_TIMEOUT_S); /* the default action of SIGALRM ends this process */
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_msg("start gate: open %s: %s", path, strerror(errno));
        unlink(path);
        return 1;
    }
    do
        n = read(fd, &c, 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    unlink(path);
    return n == 1 && c == '1' ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *p = getenv("OPENSANDBOX_EXECD_PORT");
    struct epoll_event evs[64];
    sigset_t mask;
    int lfd, sfd, wfd;

    if (argc == 3 && strcmp(argv[1], "--wait-gate") == 0)
        return wait_gate(argv[2]);
    if (argc > 1 && strcmp(argv[1], "--pool-member") == 0)
        pool_member_split(); /* returns in the agent; the main process waits for the claim */
    if (p && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (*end || v < 1 || v > 65535) {
            log_msg("invalid OPENSANDBOX_EXECD_PORT '%s'", p);
            return 2;
        }
        g_port = (int)v;
    }
    g_max_conns = env_long("EXECD_MAX_CONNS", g_max_conns);
    g_head_timeout_ms = env_long("EXECD_HEAD_TIMEOUT_MS", g_head_timeout_ms);
    g_idle_timeout_ms = env_long("EXECD_IDLE_TIMEOUT_MS", g_idle_timeout_ms);
    g_token = getenv("EXECD_ACCESS_TOKEN");
    if (g_token && !*g_token)
        g_token = NULL;
    signal(SIGPIPE, SIG_IGN);
    cloexec_inherited();
    /* Orphans of our commands (a fork bomb, `cmd &` whose shell exited) are re-parented to us
     * instead of PID 1, which is the user's entrypoint and often never reaps: their zombies
     * would otherwise stay charged to the sandbox's pids limit forever. The SIGCHLD handler
     * reaps every child. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        log_msg("prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));

    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    lfd = listen_on(g_port);
    if (sfd < 0 || g_ep < 0 || lfd < 0) {
        log_msg("startup failed on port %d: %s", g_port, strerror(errno));
        return 1;
    }
    loop_add(lfd, EPOLLIN, &g_listen_ev);
    loop_add(sfd, EPOLLIN, &g_sig_ev);
    wfd = pool_watch_fd();
    if (wfd >= 0)
        loop_add(wfd, EPOLLIN, &g_pool_ev);
    metrics_init();
    log_msg("listening on 0.0.0.0:%d (auth %s)", g_port, g_token ? "on" : "off");

    while (!g_stop) {
        int64_t now = now_ms(), next = cmd_tick(now), d = conns_tick(now_ms());
        int timeout, i, n;

        reap_conns();
        if (d < next)
            next = d;
        timeout = next == INT64_MAX ? -1 : (int)(next - now_ms() > 0 ? next - now_ms() : 0);
        n = epoll_wait(g_ep, evs, 64, timeout);
        if (n < 0 && errno != EINTR) {
            log_msg("epoll_wait: %s", strerror(errno));
            return 1;
        }
        for (i = 0; i < n; i++) {
            struct ev *ev = evs[i].data.ptr;
            switch (ev->kind) {
            case EV_LISTEN:
                accept_all(lfd);
                break;
            case EV_SIGNAL:
                on_signal(sfd);
                break;
            case EV_POOL_WATCH:
                pool_on_watch();
                break;
            case EV_CONN:
                if (!((struct conn *)ev->obj)->dead)
                    conn_on_event(ev->obj, evs[i].events);
                break;
            case EV_CMD_OUT:
            case EV_CMD_ERR:
                cmd_on_pipe(ev, evs[i].events);
                break;
            case EV_PROXY:
                proxy_on_event(ev, evs[i].events);
                break;
            case EV_SESS_IN:
            case EV_SESS_OUT:
            case EV_SESS_ERR:
            case EV_SESS_CTL:
                session_on_event(ev, evs[i].events);
                break;
            case EV_PTY_OUT:
            case EV_PTY_ERR:
            case EV_PTY_IN:
                pty_on_event(ev, evs[i].events);
                break;
            }
        }
        reap_conns();
    }
    log_msg("stopping");
    return 0;
}
