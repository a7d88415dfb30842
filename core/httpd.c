/*
 * httpd.c: libmicrohttpd driven by our epoll loop, one Lua task per request, and the `core.http`
 * module.
 *
 * How a request flows:
 *   1. MHD calls the URI-log callback first; it allocates the request context (struct reqctx) with
 * the raw URI (MHD would otherwise hand us a percent-decoded path) and MHD stores it as the
 * connection's per-request pointer.
 *   2. The first access-handler call only records that headers are in. Answering there would make
 * MHD close the connection after the reply, so work starts on a later call. The exception is a
 * request whose body framing is ambiguous (Content-Length with Transfer-Encoding, several
 * Transfer-Encoding headers or one other than chunked, Content-Length headers that disagree, a
 * framing header folded over several lines or a header name that is not a token): it
 * is refused right there with 400 (501 for an unknown coding) and the connection closed, so bytes
 * a front end took for its body can never run here as a second request (request smuggling).
 *   3. Body calls append to the context's buffer up to max_body; beyond it the body is dropped and
 * the request flagged body_too_large.
 *   4. The final call (no more upload data) builds the Lua `req` table and starts the handler task.
 * If the task finishes at once its response is queued right away; otherwise the connection is
 * suspended.
 *   5. When the task finishes later, the response is stored in the context, the connection resumed,
 * and MHD runs again (there is no wake-up channel in external mode, so we call MHD_run ourselves),
 * which calls the access handler once more, where the stored response is queued. Streaming
 * responses use a content-reader callback over a buffer that Lua fills with s:write(). When the
 * buffer is empty the reader suspends the connection; a write resumes it. A write that finds more
 * than STREAM_HIGH bytes waiting parks the writing task until the reader has drained it below
 * STREAM_LOW.
 *
 * Lifetime: a context is referenced by MHD (until the completion callback), by its running task, by
 * a stream userdata and by a streaming response; it is freed when the last reference goes.
 */
#define _GNU_SOURCE
#include "httpd.h"

#include "buf.h"
#include "httpd_int.h"
#include "log.h"
#include "loop.h"
#include "server.h"
#include "task.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uuid/uuid.h>

#define STREAM_MT "core.http.stream"
#define REQ_MT "core.http.request"
#define EARLY_BUFFER_MAX (64 * 1024)

static struct {
    struct MHD_Daemon *d;
    loop_watch watch;
    loop_timer mhd_timer;
    loop_timer drain_timer;
    int listen_fd;
    int handler_ref;
    size_t max_body;
    int needs_run;
    unsigned int conn_limit; /* MHD_OPTION_CONNECTION_LIMIT */
    int draining;
    int drain_code;
    double drain_timeout;
    int inflight; /* requests between their headers and MHD's completion notice (response sent) */
    struct reqctx *all;
    char **early_prefixes; /* paths whose handler starts at headers time ("*" = one segment) */
    int nearly;
} H = {.listen_fd = -1, .handler_ref = LUA_NOREF};

/* A second listening socket (http.listen_extra): its connections are accepted here and handed to
 * the same daemon (MHD_add_connection); their requests go to their own Lua handler. A connection is
 * told apart by its local port (getsockname), once per connection while an extra listener exists.
 */
static struct {
    int fd;
    int port;
    int handler_ref;
    loop_watch watch;
} X = {.fd = -1, .handler_ref = LUA_NOREF};

static void httpd_run(void);

void httpd_ctx_ref(struct reqctx *c)
{
    c->refs++;
}

void httpd_ctx_suspend(struct reqctx *c)
{
    if (!c->completed && !c->suspended && !c->reader_suspended) {
        MHD_suspend_connection(c->conn);
        c->suspended = 1;
    }
}

void httpd_request_run(void)
{
    H.needs_run = 1;
}

void httpd_ctx_unref(struct reqctx *c)
{
    if (--c->refs > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        H.all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->handle)
        httpd_handle_release(c->handle);
    if (c->resp)
        MHD_destroy_response(c->resp);
    buf_free(&c->body);
    buf_free(&c->sbuf);
    free(c->uri);
    free(c);
}

void httpd_ctx_resume(struct reqctx *c)
{
    if (c->completed)
        return;
    if (c->suspended || c->reader_suspended) {
        c->suspended = 0;
        c->reader_suspended = 0;
        MHD_resume_connection(c->conn);
        H.needs_run = 1;
    }
}

static void inflight_end(struct reqctx *c)
{
    if (!c->inflight)
        return;
    c->inflight = 0;
    H.inflight--;
    if (H.draining && H.inflight <= 0)
        loop_stop(H.drain_code);
}

static void writer_wake_deferred(void *data)
{
    struct reqctx *c = data;
    task *w = c->writer;
    if (w) {
        c->writer = NULL;
        if (c->writer_ok) {
            lua_pushboolean(w->L, 1);
            task_resume(w, 1);
        } else {
            lua_pushnil(w->L);
            lua_pushliteral(w->L, "closed");
            task_resume(w, 2);
        }
    }
    httpd_ctx_unref(c);
}

/* The loop stopped before the wake's turn: only the context reference is let go. */
static void writer_wake_drop(void *data)
{
    httpd_ctx_unref(data);
}

/* Wakes a task parked in s:write() on the next loop turn (never from inside an MHD callback). */
static void writer_wake(struct reqctx *c, int ok)
{
    c->writer_ok = ok ? 1 : 0;
    c->refs++;
    if (loop_defer_ex(writer_wake_deferred, writer_wake_drop, c) < 0)
        c->refs--;
}

/* ---- MHD callbacks ---- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    struct reqctx *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->uri = strdup(uri);
    c->uri_at = uri;
    if (!c->uri) {
        free(c);
        return NULL;
    }
    c->conn = conn;
    c->refs = 1;
    c->next = H.all;
    if (H.all)
        H.all->prev = c;
    H.all = c;
    return c;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct reqctx *c = *con_cls;
    if (!c)
        return;
    *con_cls = NULL;
    c->completed = 1;
    inflight_end(c);
    if (c->writer)
        writer_wake(c, 0);
    if (c->px)
        proxy_detach(c->px);
    httpd_ctx_unref(c);
}

static void json_escape(buf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            buf_append(b, e, 2);
        } else if (ch < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            buf_append(b, e, 6);
        } else {
            buf_append(b, s, 1);
        }
    }
}

struct MHD_Response *httpd_error_response(const char *code, const char *msg, const char *request_id)
{
    buf_t b = {0};
    buf_append(&b, "{\"code\":\"", 9);
    json_escape(&b, code);
    buf_append(&b, "\",\"message\":\"", 13);
    json_escape(&b, msg);
    buf_append(&b, "\"}", 2);
    struct MHD_Response *r = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
    buf_free(&b);
    if (!r)
        return NULL;
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (request_id && request_id[0])
        MHD_add_response_header(r, "X-Request-ID", request_id);
    return r;
}

static void set_error(struct reqctx *c, const char *request_id)
{
    if (c->resp)
        MHD_destroy_response(c->resp);
    c->status = 500;
    c->resp = httpd_error_response("GENERAL::UNKNOWN_ERROR", "Internal server error.", request_id);
}

/* Builds the response from the handler's results (status, headers, body) on L's stack top. */
static void set_response(struct reqctx *c, lua_State *L, int nres, const char *request_id)
{
    int base = lua_gettop(L) - nres + 1;
    int isnum = 0;
    lua_Integer status = nres >= 1 ? lua_tointegerx(L, base, &isnum) : 0;
    size_t blen = 0;
    const char *body = NULL;
    if (!isnum || status < 100 || status > 999) {
        log_write(LOG_ERROR, request_id, "handler returned no valid status", NULL);
        set_error(c, request_id);
        return;
    }
    if (nres >= 3 && lua_type(L, base + 2) == LUA_TSTRING)
        body = lua_tolstring(L, base + 2, &blen);
    struct MHD_Response *r =
        blen ? MHD_create_response_from_buffer(blen, (void *)body, MHD_RESPMEM_MUST_COPY)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        set_error(c, request_id);
        return;
    }
    if (nres >= 2 && lua_istable(L, base + 1)) {
        lua_pushnil(L);
        while (lua_next(L, base + 1)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING)
                MHD_add_response_header(r, lua_tostring(L, -2), lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    if (status == 204 && !blen) {
        /* The SDK wants Content-Length: 0 on every empty 2xx; MHD leaves it out for 204. */
        MHD_set_response_options(r, MHD_RF_INSANITY_HEADER_CONTENT_LENGTH, MHD_RO_END);
        MHD_add_response_header(r, "Content-Length", "0");
    }
    if (c->resp)
        MHD_destroy_response(c->resp);
    c->resp = r;
    c->status = (unsigned int)status;
}

static void on_task_done(task *t, int status, int nres)
{
    struct reqctx *c = t->data;
    c->t = NULL;
    if (!c->completed && !c->proxied) {
        if (c->streaming) {
            if (!c->stream_eof) {
                c->stream_eof = 1;
                httpd_ctx_resume(c);
            }
        } else {
            if (status == LUA_OK)
                set_response(c, t->L, nres, t->request_id);
            else
                set_error(c, t->request_id);
            httpd_ctx_resume(c);
        }
    }
    httpd_ctx_unref(c);
}

static enum MHD_Result queue_response(struct reqctx *c)
{
    struct MHD_Response *r = c->resp;
    c->resp = NULL;
    enum MHD_Result ret = MHD_queue_response(c->conn, c->status, r);
    MHD_destroy_response(r);
    c->state = RS_QUEUED;
    return ret;
}

/* Request handles: the Lua `req` table refers to its context through a pooled handle and a
 * generation number, so that no finalizer runs per request and a `req` kept beyond its request's
 * life finds nothing instead of freed memory. Handles are never freed, only reused (with the
 * generation bumped). */
struct reqhandle {
    struct reqctx *c;
    lua_Integer gen;
    struct reqhandle *next_free;
};

static struct reqhandle *handle_free_list;

static struct reqhandle *handle_get(struct reqctx *c)
{
    struct reqhandle *h = handle_free_list;
    if (h)
        handle_free_list = h->next_free;
    else if (!(h = calloc(1, sizeof(*h))))
        return NULL;
    h->c = c;
    h->next_free = NULL;
    return h;
}

void httpd_handle_release(struct reqhandle *h)
{
    h->c = NULL;
    h->gen++;
    h->next_free = handle_free_list;
    handle_free_list = h;
}

void httpd_peer_addr(struct reqctx *c, char *out, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = '\0';
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)size);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out,
                      (socklen_t)size);
    }
}

static void push_request(lua_State *L, struct reqctx *c, const char *method)
{
    const char *q = strchr(c->uri, '?');
    size_t plen = q ? (size_t)(q - c->uri) : strlen(c->uri);
    char addr[INET6_ADDRSTRLEN];
    httpd_peer_addr(c, addr, sizeof(addr));
    lua_createtable(L, 0, 10);
    lua_pushstring(L, method);
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, c->uri, plen);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, q ? q + 1 : "");
    lua_setfield(L, -2, "query");
    if (c->early) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "streaming");
        lua_pushliteral(L, "");
    } else {
        lua_pushlstring(L, c->body.data ? c->body.data : "", c->body.len);
    }
    lua_setfield(L, -2, "body");
    lua_pushboolean(L, c->too_large);
    lua_setfield(L, -2, "body_too_large");
    lua_pushstring(L, addr);
    lua_setfield(L, -2, "remote_addr");
    if (!c->handle)
        c->handle = handle_get(c);
    if (c->handle) {
        lua_pushlightuserdata(L, c->handle);
        lua_setfield(L, -2, "_h");
        lua_pushinteger(L, c->handle->gen);
        lua_setfield(L, -2, "_g");
    }
    luaL_setmetatable(L, REQ_MT);
    if (!c->early)
        buf_free(&c->body);
}

/* Did this connection come through the extra listener? Asked once per connection (getsockname),
 * when MHD starts it; the answer is kept as the connection's socket context. */
static int conn_on_extra_port(struct MHD_Connection *conn)
{
    if (X.fd < 0)
        return 0;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (!ci || getsockname(ci->connect_fd, (struct sockaddr *)&ss, &sl) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port) == X.port;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == X.port;
    return 0;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        *socket_context = conn_on_extra_port(conn) ? (void *)&X : NULL;
}

static int conn_is_extra(struct MHD_Connection *conn)
{
    if (X.handler_ref == LUA_NOREF)
        return 0;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci && ci->socket_context == (void *)&X;
}

static void start_handler(struct reqctx *c, const char *method)
{
    lua_State *L = task_main_state();
    task *t = task_new("http", on_task_done, c);
    if (!t) {
        set_error(c, NULL);
        return;
    }
    c->refs++; /* the task's reference */
    c->t = t;
    lua_rawgeti(t->L, LUA_REGISTRYINDEX, conn_is_extra(c->conn) ? X.handler_ref : H.handler_ref);
    push_request(t->L, c, method);
    (void)L;
    task_start(t, 1);
}

/* Does the raw path start with one of the early prefixes ("*" matches one non-empty segment)? */
static int is_early(const char *uri)
{
    for (int i = 0; i < H.nearly; i++) {
        const char *p = H.early_prefixes[i], *u = uri;
        while (*p) {
            if (*p == '*') {
                const char *seg = u;
                while (*u && *u != '/' && *u != '?')
                    u++;
                if (u == seg)
                    break;
                p++;
            } else if (*p == *u) {
                p++;
                u++;
            } else {
                break;
            }
        }
        if (!*p)
            return 1;
    }
    return 0;
}

/* Upload data of an early request (its handler already runs). Returns MHD_YES; may suspend. */
static enum MHD_Result early_upload(struct reqctx *c, const char *data, size_t *size)
{
    size_t n = *size;
    if (c->px) {
        *size = 0;
        if (proxy_upload(c->px, data, n))
            httpd_ctx_suspend(c);
        return MHD_YES;
    }
    if (c->resp || c->state == RS_QUEUED || !c->t) { /* answered without the body: discard it */
        *size = 0;
        return MHD_YES;
    }
    if (c->body.len + n <= EARLY_BUFFER_MAX) {
        if (buf_append(&c->body, data, n) < 0)
            return MHD_NO;
        *size = 0;
        return MHD_YES;
    }
    httpd_ctx_suspend(c); /* the data stays unconsumed until the handler has decided */
    return MHD_YES;
}

/* ---- body framing checks (request smuggling) ---- */

struct framing {
    int ncl, nte, cl_conflict, te_other, folded;
    const char *cl;
};

/* Does value, without surrounding blanks, equal word (case-insensitively)? */
static int token_is(const char *value, const char *word)
{
    size_t n = strlen(word);
    while (*value == ' ' || *value == '\t')
        value++;
    if (strncasecmp(value, word, n) != 0)
        return 0;
    for (value += n; *value; value++)
        if (*value != ' ' && *value != '\t')
            return 0;
    return 1;
}

#define TCHARS "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

/* Is name the header name base (case-insensitively) followed by more characters? */
static int name_extends(const char *name, const char *base)
{
    size_t n = strlen(base);
    return strncasecmp(name, base, n) == 0 && name[n] != '\0';
}

static enum MHD_Result framing_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    struct framing *f = cls;
    (void)kind;
    if (!value)
        value = "";
    /* libmicrohttpd 0.9.75 appends an obs-fold continuation line to the header's *name*
     * ("Transfer-Encoding:\r\n chunked" arrives as "Transfer-Encodingchunked"). A name that is not
     * a token, or a framing header's name with more after it, can only come from such a fold. */
    if (key[strspn(key, TCHARS)] != '\0' || name_extends(key, "Content-Length") ||
        name_extends(key, "Transfer-Encoding"))
        f->folded = 1;
    if (strcasecmp(key, "Content-Length") == 0) {
        if (f->ncl++ == 0)
            f->cl = value;
        else if (strcmp(f->cl, value) != 0)
            f->cl_conflict = 1;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        f->nte++;
        if (!token_is(value, "chunked"))
            f->te_other = 1;
    }
    return MHD_YES;
}

/* Whether a request target (as the client sent it, before any decoding) holds a byte that no valid
 * target has: a space, a control character (CR, LF, NUL, ...) or DEL. libmicrohttpd splits the
 * request line at the first and last space and passes such bytes through, and the proxy forwards
 * the target byte for byte, so `GET /a\rInjected: 1\r HTTP/1.1` would otherwise reach a backend as
 * two lines. */
static int bad_target(const char *uri)
{
    for (const unsigned char *p = (const unsigned char *)uri; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return 1;
    return 0;
}

/* Whether the request line had a NUL inside its target. libmicrohttpd hands the target over as a C
 * string, so a NUL cuts it short (`GET /a\0rest HTTP/1.1` arrives as "/a"). It keeps the request
 * line in place, with the space before the version turned into the string's end: the version then
 * starts right after the target, unless the target held a NUL. Only a version a little further on
 * in the same line counts (any other layout is not judged). */
static int nul_in_target(const struct reqctx *c, const char *version)
{
    size_t len = strlen(c->uri);
    /* integer addresses: the two pointers need not point into one object */
    uintptr_t v = (uintptr_t)version, u = (uintptr_t)c->uri_at;
    if (!version || !c->uri_at || v <= u)
        return 0;
    return v - u > len + 1 && v - u <= len + 1 + 65536;
}

/* NULL when the request's body framing is unambiguous, else why not (and the status in *status). */
static const char *framing_error(struct MHD_Connection *conn, unsigned int *status)
{
    struct framing f = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, framing_cb, &f);
    *status = MHD_HTTP_BAD_REQUEST;
    if (f.nte && f.ncl)
        return "Request has both Transfer-Encoding and Content-Length.";
    if (f.nte > 1)
        return "Request has more than one Transfer-Encoding header.";
    if (f.cl_conflict)
        return "Request has Content-Length headers with different values.";
    if (f.folded)
        return "Request has a header folded over several lines (obs-fold) or an invalid header "
               "name.";
    if (f.te_other) {
        *status = MHD_HTTP_NOT_IMPLEMENTED;
        return "Transfer-Encoding other than chunked is not supported.";
    }
    return NULL;
}

/* Answers a request refused at headers time; MHD closes the connection after the reply. */
static enum MHD_Result refuse_framing(struct reqctx *c, unsigned int status, const char *why)
{
    static const char hexdigits[] = "0123456789abcdef";
    uuid_t u;
    char rid[33];
    uuid_generate_random(u);
    for (int i = 0; i < 16; i++) {
        rid[2 * i] = hexdigits[u[i] >> 4];
        rid[2 * i + 1] = hexdigits[u[i] & 15];
    }
    rid[32] = '\0';
    log_write(LOG_WARNING, rid, "request refused at headers time", "reason", why, NULL);
    c->state = RS_QUEUED;
    struct MHD_Response *r = httpd_error_response(
        status == MHD_HTTP_BAD_REQUEST ? "GENERAL::BAD_REQUEST" : "GENERAL::NOT_IMPLEMENTED", why,
        rid);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c->conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

void httpd_request_id(const char *given, char *out)
{
    if (given) {
        while (*given == ' ' || *given == '\t')
            given++;
        size_t n = strlen(given);
        while (n && (given[n - 1] == ' ' || given[n - 1] == '\t'))
            n--;
        int ok = n >= 1 && n <= 256;
        for (size_t i = 0; ok && i < n; i++)
            ok = (unsigned char)given[i] >= 32 && (unsigned char)given[i] <= 126;
        if (ok) {
            memcpy(out, given, n);
            out[n] = '\0';
            return;
        }
    }
    if (uuid_hex(out) < 0)
        memset(out, '0', 32);
    out[32] = '\0';
}

/* ---- static answers (http.listen{ static = { [path] = json } }) ----
 * A GET of one of these paths (any query) on the main listener is answered here, without the Lua
 * handler, with 200, Content-Type: application/json, X-Request-ID and the fixed body: what the
 * handler would answer (the server's /health). Left to the handler: another method, a request body,
 * an Origin header (the handler adds the CORS headers), an X-Request-ID header sent twice. Counted
 * per path for the request metrics (http.static_stats). */
#define STATIC_MAX 8

static struct {
    char *path;
    char *body;
    size_t len;
    uint64_t count, ns;
} S[STATIC_MAX];
static int nstatic;

struct static_hdrs {
    const char *rid;
    int nrid, origin;
};

static enum MHD_Result static_hdr_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct static_hdrs *h = cls;
    (void)kind;
    if (strcasecmp(key, "X-Request-ID") == 0) {
        h->rid = value ? value : "";
        h->nrid++;
    } else if (strcasecmp(key, "Origin") == 0) {
        h->origin = 1;
    }
    return MHD_YES;
}

/* Answers request c from the static table when it applies (1), else 0. */
static int static_answer(struct reqctx *c, const char *method)
{
    if (!nstatic || strcmp(method, "GET") != 0 || c->too_large || c->body.len)
        return 0;
    size_t plen = strcspn(c->uri, "?");
    int i = 0;
    while (i < nstatic && !(strlen(S[i].path) == plen && memcmp(S[i].path, c->uri, plen) == 0))
        i++;
    if (i == nstatic || conn_is_extra(c->conn))
        return 0;
    uint64_t t0 = loop_now_ns();
    struct static_hdrs h = {0};
    MHD_get_connection_values(c->conn, MHD_HEADER_KIND, static_hdr_cb, &h);
    if (h.origin || h.nrid > 1)
        return 0;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(S[i].len, S[i].body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return 0;
    char rid[260];
    httpd_request_id(h.rid, rid);
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "X-Request-ID", rid);
    if (c->resp)
        MHD_destroy_response(c->resp);
    c->resp = r;
    c->status = 200;
    if (log_enabled(LOG_DEBUG))
        log_write(LOG_DEBUG, rid, "request", "method", method, "path", S[i].path, "static", "true",
                  NULL);
    S[i].count++;
    S[i].ns += loop_now_ns() - t0;
    return 1;
}

static void static_free(void)
{
    for (int i = 0; i < nstatic; i++) {
        free(S[i].path);
        free(S[i].body);
    }
    nstatic = 0;
}

/* http.static_stats() -> { {path, count, seconds}, ... }: the requests answered from the table. */
static int l_static_stats(lua_State *L)
{
    lua_createtable(L, nstatic, 0);
    for (int i = 0; i < nstatic; i++) {
        lua_createtable(L, 3, 0);
        lua_pushstring(L, S[i].path);
        lua_rawseti(L, -2, 1);
        lua_pushinteger(L, (lua_Integer)S[i].count);
        lua_rawseti(L, -2, 2);
        lua_pushnumber(L, (lua_Number)S[i].ns / 1e9);
        lua_rawseti(L, -2, 3);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct reqctx *c = *con_cls;
    (void)cls;
    (void)url;
    (void)conn;
    if (!c)
        return MHD_NO; /* out of memory in on_uri */
    if (c->state == RS_HEADERS) {
        unsigned int st;
        if (bad_target(c->uri) || nul_in_target(c, version))
            return refuse_framing(c, MHD_HTTP_BAD_REQUEST,
                                  "Request target contains a space or a control character.");
        const char *bad = framing_error(conn, &st);
        if (bad)
            return refuse_framing(c, st, bad);
    }
    switch (c->state) {
    case RS_HEADERS:
        c->state = RS_BODY;
        c->inflight = 1; /* a request counts for the drain from its headers on */
        H.inflight++;
        if (H.nearly && is_early(c->uri)) {
            c->early = 1;
            c->state = RS_RUNNING;
            if (!proxy_fast(c,
                            method)) /* (a remembered decision of the proxy route, proxy_fast.c) */
                start_handler(c, method);
        }
        return MHD_YES; /* a response is queued on the next call at the earliest */
    case RS_BODY:
        if (*upload_data_size) {
            if (!c->too_large) {
                if (c->body.len + *upload_data_size > H.max_body) {
                    c->too_large = 1;
                    buf_free(&c->body);
                } else if (buf_append(&c->body, upload_data, *upload_data_size) < 0) {
                    return MHD_NO;
                }
            }
            *upload_data_size = 0;
            return MHD_YES;
        }
        c->state = RS_RUNNING;
        if (!static_answer(c, method))
            start_handler(c, method);
        break;
    case RS_RUNNING:
    case RS_QUEUED:
        if (c->early) {
            if (*upload_data_size)
                return early_upload(c, upload_data, upload_data_size);
            if (!c->upload_done) {
                c->upload_done = 1;
                if (c->px)
                    proxy_upload_done(c->px);
            }
        } else {
            *upload_data_size = 0; /* the body of a request refused at headers time */
        }
        break;
    }
    if (c->resp && c->state != RS_QUEUED)
        return queue_response(c);
    if (c->state == RS_RUNNING && !c->completed)
        httpd_ctx_suspend(c);
    return MHD_YES;
}

/* ---- streaming ---- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max)
{
    struct reqctx *c = cls;
    size_t n = buf_avail(&c->sbuf);
    (void)pos;
    if (n) {
        if (n > max)
            n = max;
        memcpy(out, c->sbuf.data + c->sbuf.off, n);
        c->sbuf.off += n;
        if (buf_avail(&c->sbuf) < STREAM_LOW) {
            if (c->writer)
                writer_wake(c, 1);
            if (c->px)
                proxy_drained(c->px);
        }
        return (ssize_t)n;
    }
    if (c->stream_error)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (c->stream_eof)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (!c->reader_suspended && !c->completed) {
        MHD_suspend_connection(c->conn);
        c->reader_suspended = 1;
    }
    return 0;
}

static void stream_free_cb(void *cls)
{
    httpd_ctx_unref(cls);
}

struct MHD_Response *httpd_stream_response(struct reqctx *c, uint64_t size)
{
    struct MHD_Response *r =
        MHD_create_response_from_callback(size, 16 * 1024, stream_reader, c, stream_free_cb);
    if (r)
        c->refs++; /* the response's reference, dropped by stream_free_cb */
    return r;
}

/* The context behind a `req` table, or NULL when the request is over. */
static struct reqctx *req_ctx_opt(lua_State *L, int idx)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "_h");
    lua_getfield(L, idx, "_g");
    struct reqhandle *h = lua_touserdata(L, -2);
    lua_Integer gen = lua_tointeger(L, -1);
    lua_pop(L, 2);
    if (!h || h->gen != gen)
        return NULL;
    return h->c;
}

static struct reqctx *req_ctx(lua_State *L, int idx)
{
    struct reqctx *c = req_ctx_opt(L, idx);
    if (!c)
        luaL_argerror(L, idx, "not a live request");
    return c;
}

static int l_stream(lua_State *L)
{
    struct reqctx *c = req_ctx(L, 1);
    lua_Integer status = luaL_checkinteger(L, 2);
    if (c->streaming || c->resp || c->px || c->state != RS_RUNNING)
        return luaL_error(L, "http.stream: a response was already started");
    if (c->completed) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                               stream_reader, c, stream_free_cb);
    if (!r)
        return luaL_error(L, "out of memory");
    c->refs++; /* the response's reference, dropped by stream_free_cb */
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING)
                MHD_add_response_header(r, lua_tostring(L, -2), lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    c->resp = r;
    c->status = (unsigned int)status;
    c->streaming = 1;
    httpd_ctx_resume(c);
    struct reqctx **s = lua_newuserdatauv(L, sizeof(*s), 0);
    *s = c;
    c->refs++; /* the stream object's reference */
    luaL_setmetatable(L, STREAM_MT);
    return 1;
}

static struct reqctx *stream_ctx(lua_State *L)
{
    struct reqctx **s = luaL_checkudata(L, 1, STREAM_MT);
    if (!*s)
        luaL_argerror(L, 1, "stream already released");
    return *s;
}

static void writer_cancel(task *t)
{
    struct reqctx *c = t->wait;
    if (c->writer == t)
        c->writer = NULL;
}

static int s_write(lua_State *L)
{
    struct reqctx *c = stream_ctx(L);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    if (c->completed || c->stream_eof) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    int nowait = lua_toboolean(L, 3);
    if (n && buf_append(&c->sbuf, data, n) < 0)
        return luaL_error(L, "out of memory");
    if (c->reader_suspended)
        httpd_ctx_resume(c);
    if (!nowait && buf_avail(&c->sbuf) > STREAM_HIGH && task_of(L) && lua_isyieldable(L)) {
        task *t = task_of(L);
        c->writer = t;
        t->wait = c;
        t->cancel = writer_cancel;
        return lua_yield(L, 0);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* s:pending() -> the bytes written and not yet handed to the client's connection, or nil, "closed".
 */
static int s_pending(lua_State *L)
{
    struct reqctx *c = stream_ctx(L);
    if (c->completed) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)buf_avail(&c->sbuf));
    return 1;
}

static int s_close(lua_State *L)
{
    struct reqctx *c = stream_ctx(L);
    if (!c->stream_eof) {
        c->stream_eof = 1;
        httpd_ctx_resume(c);
    }
    return 0;
}

static int s_gc(lua_State *L)
{
    struct reqctx **s = luaL_checkudata(L, 1, STREAM_MT);
    if (*s) {
        struct reqctx *c = *s;
        *s = NULL;
        if (!c->stream_eof) {
            c->stream_eof = 1;
            httpd_ctx_resume(c);
        }
        httpd_ctx_unref(c);
    }
    return 0;
}

static int l_proxy(lua_State *L)
{
    struct reqctx *c = req_ctx(L, 1);
    if (!c->early)
        return luaL_error(
            L, "http.proxy: the request's path is not one of the listener's early_paths");
    if (c->streaming || c->resp || c->px || c->state != RS_RUNNING)
        return luaL_error(L, "http.proxy: a response was already started");
    c->proxied = 1;
    return lhttp_proxy(L, c);
}

/* ---- request methods ---- */

struct hdr_find {
    lua_State *L;
    const char *name;
    int found;
    luaL_Buffer *b;
};

static enum MHD_Result hdr_find_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct hdr_find *f = cls;
    (void)kind;
    if (strcasecmp(key, f->name) != 0)
        return MHD_YES;
    if (f->found++)
        luaL_addstring(f->b, ", ");
    luaL_addstring(f->b, value ? value : "");
    return MHD_YES;
}

/* req:header(name): the value (repeated headers joined with ", "), or nil. Looked up in
 * libmicrohttpd's parsed headers on demand: most requests read two or three headers, so no table is
 * built up front. */
static int r_header(lua_State *L)
{
    struct reqctx *c = req_ctx_opt(L, 1);
    const char *name = luaL_checkstring(L, 2);
    if (!c || c->completed) {
        lua_pushnil(L);
        return 1;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    struct hdr_find f = {.L = L, .name = name, .found = 0, .b = &b};
    MHD_get_connection_values(c->conn, MHD_HEADER_KIND, hdr_find_cb, &f);
    luaL_pushresult(&b);
    if (!f.found) {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
    return 1;
}

struct hdr_list {
    lua_State *L;
    lua_Integer n;
};

static enum MHD_Result hdr_list_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct hdr_list *hl = cls;
    lua_State *L = hl->L;
    (void)kind;
    lua_createtable(L, 2, 0);
    lua_pushstring(L, key);
    lua_rawseti(L, -2, 1);
    lua_pushstring(L, value ? value : "");
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, ++hl->n);
    return MHD_YES;
}

/* req:headers(): array of {name, value} in the order received (empty once the request is over). */
static int r_headers(lua_State *L)
{
    struct reqctx *c = req_ctx_opt(L, 1);
    lua_newtable(L);
    if (c && !c->completed) {
        struct hdr_list hl = {.L = L, .n = 0};
        MHD_get_connection_values(c->conn, MHD_HEADER_KIND, hdr_list_cb, &hl);
    }
    return 1;
}

/* ---- the daemon on the loop ---- */

static unsigned int httpd_connections(void)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(H.d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return i ? i->num_connections : 0;
}

static void httpd_run(void)
{
    H.needs_run = 0;
    if (!H.d)
        return;
    /* At the connection limit MHD takes the listen socket out of its epoll set and puts it
     * back only at the start of a later MHD_run. When the run that closes connections is the
     * last activity, nothing would call MHD_run again and the server would accept no
     * connection any more: run once more. */
    unsigned int before = httpd_connections();
    MHD_run(H.d);
    if (before >= H.conn_limit && httpd_connections() < before)
        H.needs_run = 1;
}

static void on_mhd_fd(loop_watch *w, uint32_t events)
{
    (void)w;
    (void)events;
    httpd_run();
}

static void on_mhd_timer(loop_timer *t)
{
    (void)t;
    httpd_run();
}

static int64_t httpd_prepare(void *data)
{
    MHD_UNSIGNED_LONG_LONG to;
    (void)data;
    if (!H.d)
        return -1;
    if (H.needs_run)
        httpd_run();
    if (MHD_get_timeout(H.d, &to) == MHD_YES) {
        if (to == 0) {
            httpd_run();
            return 0;
        }
        loop_timer_start(&H.mhd_timer, (uint64_t)to * 1000000ull);
    } else {
        loop_timer_stop(&H.mhd_timer);
    }
    return H.needs_run ? 0 : -1;
}

static void on_drain_timeout(loop_timer *t)
{
    (void)t;
    log_write(LOG_WARNING, NULL, "drain timeout: requests still in flight are dropped", NULL);
    loop_stop(H.drain_code);
}

static void extra_close(void)
{
    if (X.fd < 0)
        return;
    loop_watch_del(&X.watch);
    close(X.fd);
    X.fd = -1;
}

void httpd_drain(int code)
{
    extra_close();
    H.drain_code = code;
    if (!H.d || H.draining) {
        loop_stop(code);
        return;
    }
    H.draining = 1;
    log_write(LOG_INFO, NULL, "shutting down", NULL);
    MHD_socket fd = MHD_quiesce_daemon(H.d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    H.listen_fd = -1;
    if (H.inflight <= 0) {
        loop_stop(code);
        return;
    }
    H.drain_timer.cb = on_drain_timeout;
    loop_timer_start(&H.drain_timer, (uint64_t)(H.drain_timeout * 1e9));
}

void httpd_free(void)
{
    extra_close();
    proxy_pool_free();
    proxy_fast_free();
    static_free();
    if (!H.d)
        return;
    /* MHD must not be stopped with suspended connections: resume them all first. */
    for (struct reqctx *c = H.all; c; c = c->next) {
        if (!c->completed && (c->suspended || c->reader_suspended)) {
            c->suspended = c->reader_suspended = 0;
            c->stream_eof = 1;
            MHD_resume_connection(c->conn);
        }
    }
    loop_timer_stop(&H.mhd_timer);
    loop_timer_stop(&H.drain_timer);
    loop_watch_del(&H.watch);
    MHD_stop_daemon(H.d);
    H.d = NULL;
    for (int i = 0; i < H.nearly; i++)
        free(H.early_prefixes[i]);
    free(H.early_prefixes);
    H.early_prefixes = NULL;
    H.nearly = 0;
    if (H.listen_fd >= 0)
        close(H.listen_fd);
    H.listen_fd = -1;
    /* a later engine in the same process (libopensandbox) starts from a clean state */
    H.draining = 0;
    H.inflight = 0;
    H.needs_run = 0;
    H.handler_ref = LUA_NOREF;
    X.handler_ref = LUA_NOREF;
}

/* libmicrohttpd's own messages (malformed requests it answers itself, ...) go to our log as DEBUG
 * lines. */
static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    if (!log_enabled(LOG_DEBUG))
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    log_write(LOG_DEBUG, NULL, "libmicrohttpd", "detail", msg, NULL);
}

static int make_unix_listener(lua_State *L, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return luaL_error(L, "http.listen: unix socket path too long: %s", path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return luaL_error(L, "http.listen: cannot listen on %s: %s", path, strerror(e));
    }
    return fd;
}

static int make_listener(lua_State *L, const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0)
        return luaL_error(L, "http.listen: cannot resolve %s: %s", host, gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return luaL_error(L, "http.listen: cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    freeaddrinfo(res);
    return fd;
}

static lua_Integer opt_int(lua_State *L, const char *k, lua_Integer def)
{
    lua_getfield(L, 1, k);
    lua_Integer v = lua_isnil(L, -1) ? def : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

static int l_listen(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (H.d)
        return luaL_error(L, "http.listen: already listening");
    lua_getfield(L, 1, "host");
    const char *host = luaL_optstring(L, -1, "127.0.0.1");
    int port = (int)opt_int(L, "port", 8080);
    lua_getfield(L, 1, "handler");
    luaL_checktype(L, -1, LUA_TFUNCTION);
    lua_pop(L, 1);
    lua_Integer max_body = opt_int(L, "max_body", 1048576);
    lua_Integer conn_limit = opt_int(L, "conn_limit", 4096);
    H.conn_limit = (unsigned int)conn_limit;
    lua_Integer conn_memory = opt_int(L, "conn_memory", 16384);
    lua_Integer conn_timeout = opt_int(L, "conn_timeout", 120);
    /* 0: no per-address limit. libmicrohttpd counts the connections of each client address (TCP
     * only) and closes one over the limit at accept, before reading a byte, so one client cannot
     * hold every connection of conn_limit. */
    lua_Integer per_ip = opt_int(L, "conn_limit_per_ip", 0);
    lua_getfield(L, 1, "drain_timeout");
    H.drain_timeout = luaL_optnumber(L, -1, 10);
    lua_pop(L, 1);
    lua_getfield(L, 1, "static");
    if (lua_istable(L, -1)) {
        static_free();
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (nstatic == STATIC_MAX)
                return luaL_error(L, "http.listen: at most %d static answers", STATIC_MAX);
            size_t len;
            const char *path = luaL_checkstring(L, -2);
            const char *body = luaL_checklstring(L, -1, &len);
            S[nstatic].path = strdup(path);
            S[nstatic].body = malloc(len ? len : 1);
            if (!S[nstatic].path || !S[nstatic].body) {
                free(S[nstatic].path);
                free(S[nstatic].body);
                return luaL_error(L, "out of memory");
            }
            memcpy(S[nstatic].body, body, len);
            S[nstatic].len = len;
            S[nstatic].count = S[nstatic].ns = 0;
            nstatic++;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "early_paths");
    if (lua_istable(L, -1)) {
        int n = (int)lua_rawlen(L, -1);
        H.early_prefixes = calloc((size_t)n + 1, sizeof(char *));
        if (!H.early_prefixes)
            return luaL_error(L, "out of memory");
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            H.early_prefixes[H.nearly++] = strdup(luaL_checkstring(L, -1));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);

    lua_getfield(L, 1, "unix_socket");
    const char *upath = luaL_optstring(L, -1, NULL);
    int fd = upath ? make_unix_listener(L, upath) : make_listener(L, host, port);
    if (!upath && port == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : ((struct sockaddr_in *)&ss)->sin_port);
    }
    H.max_body = (size_t)max_body;
    H.listen_fd = fd;
    H.d = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_TURBO |
            MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_access, NULL, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_URI_LOG_CALLBACK,
        on_uri, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, NULL, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)conn_limit,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)conn_memory, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)conn_timeout, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned int)(per_ip > 0 ? per_ip : 0), MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
        MHD_OPTION_END);
    if (!H.d) {
        close(fd);
        H.listen_fd = -1;
        return luaL_error(L, "http.listen: libmicrohttpd failed to start");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(H.d, MHD_DAEMON_INFO_EPOLL_FD);
    H.watch.fd = info->epoll_fd;
    H.watch.events = EPOLLIN;
    H.watch.cb = on_mhd_fd;
    loop_watch_add(&H.watch);
    H.mhd_timer.cb = on_mhd_timer;
    lua_getfield(L, 1, "handler");
    H.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    loop_prepare_add(httpd_prepare, NULL);
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    if (upath)
        log_write(LOG_INFO, NULL, "listening", "unix_socket", upath, NULL);
    else
        log_write(LOG_INFO, NULL, "listening", "host", host, "port", portstr, NULL);
    lua_pushinteger(L, port);
    return 1;
}

/* Accepts what waits on the extra listener and hands each connection to the daemon (which owns and
 * closes it from then on, also when it refuses it). */
static void on_extra_accept(loop_watch *w, uint32_t events)
{
    (void)w;
    (void)events;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int cfd = accept4(X.fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR)
                continue;
            break; /* EAGAIN, or an error such as EMFILE: try again on the next event */
        }
        if (!H.d || H.draining) {
            close(cfd);
            continue;
        }
        MHD_add_connection(H.d, cfd, (struct sockaddr *)&ss, sl);
    }
    httpd_request_run();
}

/* http.listen_extra{ host =, port =, handler = } -> port: a second TCP listener whose requests are
 * served by `handler` (same request object, same response contract as http.listen's). Call it after
 * http.listen; the port must differ from the main one. */
static int l_listen_extra(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!H.d)
        return luaL_error(L, "http.listen_extra: call http.listen first");
    if (X.fd >= 0)
        return luaL_error(L, "http.listen_extra: already listening");
    lua_getfield(L, 1, "host");
    const char *host = luaL_optstring(L, -1, "127.0.0.1");
    int port = (int)opt_int(L, "port", 0);
    lua_getfield(L, 1, "handler");
    luaL_checktype(L, -1, LUA_TFUNCTION);
    lua_pop(L, 1);
    int fd = make_listener(L, host, port);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    X.fd = fd;
    X.port = port;
    X.watch.fd = fd;
    X.watch.events = EPOLLIN;
    X.watch.cb = on_extra_accept;
    X.watch.data = NULL;
    if (loop_watch_add(&X.watch) < 0) {
        close(fd);
        X.fd = -1;
        return luaL_error(L, "http.listen_extra: cannot watch the socket");
    }
    lua_getfield(L, 1, "handler");
    if (X.handler_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, X.handler_ref);
    X.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    log_write(LOG_INFO, NULL, "listening (extra)", "host", host, "port", portstr, NULL);
    lua_pushinteger(L, port);
    return 1;
}

static int l_proxy_stats(lua_State *L)
{
    return lhttp_proxy_stats(L);
}

static int l_proxy_configure(lua_State *L)
{
    return lhttp_proxy_configure(L);
}

static int l_proxy_pool_close(lua_State *L)
{
    return lhttp_proxy_pool_close(L);
}

int luaopen_core_http(lua_State *L)
{
    static const luaL_Reg stream_methods[] = {{"write", s_write},
                                              {"pending", s_pending},
                                              {"close", s_close},
                                              {"__gc", s_gc},
                                              {NULL, NULL}};
    static const luaL_Reg req_methods[] = {
        {"header", r_header}, {"headers", r_headers}, {NULL, NULL}};
    static const luaL_Reg fns[] = {{"listen", l_listen},
                                   {"listen_extra", l_listen_extra},
                                   {"stream", l_stream},
                                   {"proxy", l_proxy},
                                   {"proxy_stats", l_proxy_stats},
                                   {"proxy_configure", l_proxy_configure},
                                   {"proxy_pool_close", l_proxy_pool_close},
                                   {"proxy_forget", lhttp_proxy_forget},
                                   {"static_stats", l_static_stats},
                                   {NULL, NULL}};
    luaL_newmetatable(L, STREAM_MT);
    luaL_setfuncs(L, stream_methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, REQ_MT);
    lua_newtable(L);
    luaL_setfuncs(L, req_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
