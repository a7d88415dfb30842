/*
 * client.c: outgoing HTTP on libcurl's multi interface, and the `core.client` module.
 *
 * curl tells us which sockets to watch (socket callback) and when to call it back (timer callback);
 * both only record what curl asked for, and the loop calls curl_multi_socket_action when a socket
 * is ready or the timer is due. Finished transfers are collected from curl_multi_info_read after
 * socket_action has returned, so the waiting Lua tasks are resumed outside every curl callback
 * (curl forbids re-entering the multi handle from its callbacks, and a resumed task may well start
 * another request).
 *
 * Easy handles are pooled. Connections (TCP or unix socket) are cached by the multi handle and
 * reused; CURLMOPT_MAX_HOST_CONNECTIONS caps the connections per host so that a burst of requests
 * queues instead of opening one Docker socket connection per request.
 *
 * opts.http2 = true asks for HTTP/2 over TLS and multiplexing (the Kubernetes API: every watch is a
 * long-lived transfer, and with HTTP/1.1 each would hold one of the host's capped connections, so a
 * burst of creates waiting for their pods starved every other request to the apiserver).
 *
 * Streaming (opts.on_data): the write callback calls the Lua function with each chunk on the main
 * state, which cannot yield; returning false aborts the transfer.
 */
#define _GNU_SOURCE
#include "buf.h"
#include "log.h"
#include "loop.h"
#include "task.h"

#include <ctype.h>
#include <curl/curl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR_MT "core.client.error"
#define EASY_POOL_MAX 64

struct creq {
    struct creq *prev, *next; /* in-flight requests */
    CURL *easy;
    task *t;
    buf_t body;
    buf_t hdrs_raw;
    struct curl_slist *hdrs;
    int on_data_ref;
    int body_ref; /* the request body (a Lua string), anchored while libcurl reads it in place */
    int aborted;
    int lua_error;
    uint64_t added_ns; /* when it was handed to curl (loop clock) */
    uint64_t sent_ns;  /* when it had its connection and was about to be sent (0: not yet) */
    char errbuf[CURL_ERROR_SIZE];
};

struct csock {
    loop_watch w;
    curl_socket_t fd;
    struct csock *prev, *next; /* all watched sockets, for shutdown */
};

static struct {
    CURLM *multi;
    loop_timer timer;
    CURL *pool[EASY_POOL_MAX];
    int npool;
    long max_host;
    int inited;
    int closing;
    struct creq *active;
    struct csock *socks;
    struct csock *graveyard; /* removed sockets, freed before the next epoll wait */
} C;

static void check_done(void);

/* ---- loop glue ---- */

static void csock_unlink(struct csock *cs)
{
    if (cs->prev)
        cs->prev->next = cs->next;
    else if (C.socks == cs)
        C.socks = cs->next;
    if (cs->next)
        cs->next->prev = cs->prev;
    cs->prev = cs->next = NULL;
}

/* Frees removed sockets once the epoll batch that may still name them has been dispatched. */
static void bury_all(void)
{
    while (C.graveyard) {
        struct csock *cs = C.graveyard;
        C.graveyard = cs->next;
        free(cs);
    }
}

static int64_t client_prepare(void *data)
{
    (void)data;
    bury_all();
    return -1;
}

static void on_sock_event(loop_watch *w, uint32_t events)
{
    struct csock *cs = w->data;
    int running, mask = 0;
    if (events & EPOLLIN)
        mask |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        mask |= CURL_CSELECT_OUT;
    if (events & (EPOLLERR | EPOLLHUP))
        mask |= CURL_CSELECT_ERR;
    curl_multi_socket_action(C.multi, cs->fd, mask, &running);
    check_done();
}

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct csock *cs = socketp;
    (void)e;
    (void)userp;
    if (what == CURL_POLL_REMOVE) {
        if (cs) {
            loop_watch_del(&cs->w);
            curl_multi_assign(C.multi, s, NULL);
            csock_unlink(cs);
            if (C.closing) {
                free(cs);
            } else { /* an event for it may still be in this epoll batch */
                cs->next = C.graveyard;
                C.graveyard = cs;
            }
        }
        return 0;
    }
    uint32_t ev = 0;
    if (what & CURL_POLL_IN)
        ev |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev |= EPOLLOUT;
    if (!cs) {
        cs = calloc(1, sizeof(*cs));
        if (!cs)
            return -1;
        cs->fd = s;
        cs->w.fd = s;
        cs->w.events = ev;
        cs->w.cb = on_sock_event;
        cs->w.data = cs;
        if (loop_watch_add(&cs->w) < 0) {
            free(cs);
            return -1;
        }
        curl_multi_assign(C.multi, s, cs);
        cs->next = C.socks;
        if (C.socks)
            C.socks->prev = cs;
        C.socks = cs;
    } else {
        loop_watch_mod(&cs->w, ev);
    }
    return 0;
}

static void on_timer(loop_timer *t)
{
    int running;
    (void)t;
    curl_multi_socket_action(C.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done();
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    (void)userp;
    if (timeout_ms < 0)
        loop_timer_stop(&C.timer);
    else
        loop_timer_start(&C.timer, (uint64_t)timeout_ms * 1000000ull);
    return 0;
}

static int client_init(void)
{
    if (C.inited)
        return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    C.multi = curl_multi_init();
    if (!C.multi)
        return -1;
    C.timer.cb = on_timer;
    if (!C.max_host)
        C.max_host = 16;
    curl_multi_setopt(C.multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(C.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(C.multi, CURLMOPT_MAX_HOST_CONNECTIONS, C.max_host);
    curl_multi_setopt(C.multi, CURLMOPT_MAXCONNECTS, C.max_host * 4);
    curl_multi_setopt(C.multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    loop_prepare_add(client_prepare, NULL);
    C.inited = 1;
    return 0;
}

/* ---- transfers ---- */

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct creq *r = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
        r->hdrs_raw.len = r->hdrs_raw.off = 0; /* a new response (after 100 Continue, say) */
    if (buf_append(&r->hdrs_raw, data, len) < 0)
        return 0;
    return len;
}

static size_t on_write(char *data, size_t size, size_t n, void *ud)
{
    struct creq *r = ud;
    size_t len = size * n;
    if (r->on_data_ref != LUA_NOREF) {
        lua_State *L = task_main_state();
        int top = lua_gettop(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->on_data_ref);
        lua_pushlstring(L, data, len);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            log_write(LOG_ERROR, r->t ? r->t->request_id : NULL, "client on_data failed", "error",
                      lua_tostring(L, -1), NULL);
            r->lua_error = 1;
            lua_settop(L, top);
            return 0;
        }
        int stop = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
        lua_settop(L, top);
        if (stop) {
            r->aborted = 1;
            return 0;
        }
        return len;
    }
    if (buf_append(&r->body, data, len) < 0)
        return 0;
    return len;
}

static void push_headers(lua_State *L, struct creq *r)
{
    lua_newtable(L);
    const char *p = r->hdrs_raw.data, *end = p + r->hdrs_raw.len;
    if (!p)
        return;
    /* skip the status line */
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    p = nl ? nl + 1 : end;
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && colon > p) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (const char *k = p; k < colon; k++)
                luaL_addchar(&b, (char)tolower((unsigned char)*k));
            luaL_pushresult(&b);
            const char *v = colon + 1;
            const char *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -3) == LUA_TSTRING) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
            }
            lua_rawset(L, -3);
        }
        p = le + 1;
    }
}

static void push_error(lua_State *L, const char *kind, const char *msg)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 2);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    luaL_setmetatable(L, ERR_MT);
}

static void creq_unlink(struct creq *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else if (C.active == r)
        C.active = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void creq_release(struct creq *r)
{
    lua_State *L = task_main_state();
    creq_unlink(r);
    if (r->on_data_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, r->on_data_ref);
    if (r->body_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, r->body_ref);
    curl_slist_free_all(r->hdrs);
    buf_free(&r->body);
    buf_free(&r->hdrs_raw);
    if (C.npool < EASY_POOL_MAX) {
        curl_easy_reset(r->easy);
        C.pool[C.npool++] = r->easy;
    } else {
        curl_easy_cleanup(r->easy);
    }
    free(r);
}

static int on_prereq(void *clientp, char *conn_primary_ip, char *conn_local_ip,
                     int conn_primary_port, int conn_local_port)
{
    struct creq *r = clientp;
    (void)conn_primary_ip, (void)conn_local_ip, (void)conn_primary_port, (void)conn_local_port;
    r->sent_ns = loop_now_ns();
    return CURL_PREREQFUNC_OK;
}

static void finish(struct creq *r, CURLcode code)
{
    task *t = r->t;
    lua_State *L = t->L;
    int nres;
    if (code == CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, status);
        lua_setfield(L, -2, "status");
        push_headers(L, r);
        lua_setfield(L, -2, "headers");
        lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
        lua_setfield(L, -2, "body");
        nres = 1;
    } else {
        const char *msg = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
        const char *kind = "error";
        if (r->aborted)
            kind = "aborted", msg = "aborted by the on_data callback";
        else if (r->lua_error)
            kind = "aborted", msg = "the on_data callback raised an error";
        else if (code == CURLE_OPERATION_TIMEDOUT)
            kind = "timeout";
        else if (code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST)
            kind = "connect";
        push_error(L, kind, msg);
        if (code == CURLE_OPERATION_TIMEDOUT) {
            /* Whether the request left: a timeout before it was sent is a wait for one of the
             * host's connections (max_host_connections) or for the connect, not an answer that
             * never came. */
            lua_pushboolean(L, r->sent_ns != 0);
            lua_setfield(L, -2, "sent");
            /* seconds it waited before it was sent (all of its time when it never was) */
            uint64_t until = r->sent_ns ? r->sent_ns : loop_now_ns();
            lua_pushnumber(L, (double)(until - r->added_ns) / 1e9);
            lua_setfield(L, -2, "waited");
        }
        nres = 2;
    }
    creq_release(r);
    task_resume(t, nres);
}

static void check_done(void)
{
    CURLMsg *m;
    int left;
    struct creq *done[64];
    CURLcode codes[64];
    int n;
    do {
        n = 0;
        while (n < 64 && (m = curl_multi_info_read(C.multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct creq *r = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            codes[n] = m->data.result;
            done[n++] = r;
            curl_multi_remove_handle(C.multi, m->easy_handle);
        }
        for (int i = 0; i < n; i++)
            finish(done[i], codes[i]);
    } while (n == 64);
}

static double opt_num(lua_State *L, const char *k, double def)
{
    lua_getfield(L, 1, k);
    double v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, const char *k)
{
    lua_getfield(L, 1, k);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static const char *opt_str(lua_State *L, const char *k, size_t *len)
{
    lua_getfield(L, 1, k);
    const char *v = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, len);
    lua_pop(L, 1); /* the string stays referenced by the opts table */
    return v;
}

static int add_headers(lua_State *L, struct creq *r)
{
    char line[8192];
    lua_getfield(L, 1, "headers");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
                int n = snprintf(line, sizeof(line), "%s: %s", lua_tostring(L, -2),
                                 lua_tostring(L, -1));
                if (n > 0 && (size_t)n < sizeof(line)) {
                    struct curl_slist *nl = curl_slist_append(r->hdrs, line);
                    if (!nl)
                        return -1;
                    r->hdrs = nl;
                }
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    struct curl_slist *nl = curl_slist_append(r->hdrs, "Expect:");
    if (!nl)
        return -1;
    r->hdrs = nl;
    return 0;
}

/* opts.tls = { ca = PEM, cert = PEM, key = PEM } (each optional): the CA bundle that verifies the
 * server (instead of the system's), and a client certificate and key, all given as PEM text (a
 * kubeconfig carries them inline). libcurl copies each blob, so nothing here outlives the call.
 * Peer and host verification stay on (libcurl's defaults): there is no option to turn them off.
 * Returns 0, or -1 when libcurl refuses an option (a libcurl built without blob support). */
static int set_blob(CURL *e, CURLoption opt, lua_State *L, const char *k)
{
    size_t len = 0;
    lua_getfield(L, -1, k);
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    int rc = 0;
    if (v) {
        struct curl_blob b = {(void *)v, len, CURL_BLOB_COPY};
        rc = curl_easy_setopt(e, opt, &b) == CURLE_OK ? 0 : -1;
    }
    lua_pop(L, 1);
    return rc;
}

/* Raises on a malformed opts.tls; called before anything is allocated, so set_tls cannot raise. */
static void check_tls(lua_State *L)
{
    static const char *const keys[] = {"ca", "cert", "key"};
    lua_getfield(L, 1, "tls");
    if (!lua_isnil(L, -1)) {
        luaL_argcheck(L, lua_istable(L, -1), 1, "tls must be a table");
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            int ty = lua_getfield(L, -1, keys[i]);
            if (ty != LUA_TNIL && ty != LUA_TSTRING)
                luaL_error(L, "core.client: tls.%s must be a PEM string", keys[i]);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

static int set_tls(lua_State *L, CURL *e)
{
    int rc = 0;
    lua_getfield(L, 1, "tls");
    if (lua_istable(L, -1)) {
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
        if (set_blob(e, CURLOPT_CAINFO_BLOB, L, "ca") < 0 ||
            set_blob(e, CURLOPT_SSLCERT_BLOB, L, "cert") < 0 ||
            set_blob(e, CURLOPT_SSLKEY_BLOB, L, "key") < 0)
            rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

/* The waiting task is abandoned (shutdown): drop the transfer without resuming anybody. */
static void creq_cancel(task *t)
{
    struct creq *r = t->wait;
    curl_multi_remove_handle(C.multi, r->easy);
    r->t = NULL;
    creq_release(r);
}

static int l_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    task *t = task_check(L);
    if (client_init() < 0)
        return luaL_error(L, "core.client: libcurl initialisation failed");
    size_t ulen = 0, blen = 0, mlen = 0;
    const char *url = opt_str(L, "url", &ulen);
    if (!url)
        return luaL_argerror(L, 1, "url is required");
    const char *method = opt_str(L, "method", &mlen);
    const char *sock = opt_str(L, "unix_socket", NULL);
    const char *body = opt_str(L, "body", &blen);
    double timeout = opt_num(L, "timeout", 60);
    double idle = opt_num(L, "idle_timeout", 0);
    double connect_timeout = opt_num(L, "connect_timeout", 10);
    int http2 = opt_bool(L, "http2");
    check_tls(L);

    struct creq *r = calloc(1, sizeof(*r));
    if (!r)
        return luaL_error(L, "out of memory");
    r->on_data_ref = LUA_NOREF;
    r->body_ref = LUA_NOREF;
    r->easy = C.npool ? C.pool[--C.npool] : curl_easy_init();
    if (!r->easy || add_headers(L, r) < 0) {
        if (r->easy)
            curl_easy_cleanup(r->easy);
        curl_slist_free_all(r->hdrs);
        free(r);
        return luaL_error(L, "out of memory");
    }
    lua_getfield(L, 1, "on_data");
    if (lua_isfunction(L, -1))
        r->on_data_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_pop(L, 1);
    if (body) {
        /* libcurl reads the body from the Lua string itself (no copy per request: an agent archive
         * uploaded to many containers at once would otherwise be copied once per upload) */
        lua_getfield(L, 1, "body");
        /* the anchored value itself (a number in `body` became a string on the stack) */
        body = lua_tolstring(L, -1, &blen);
        r->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }

    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    if (http2) {
        /* HTTP/2 over TLS when the server offers it (ALPN), and this transfer waits for an existing
         * connection to that host to become a multiplexed one rather than opening its own:
         * long-lived streams (watches) then share a few connections instead of holding one each */
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    }
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (sock)
        curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, sock);
    if (set_tls(L, e) < 0) {
        creq_release(r);
        return luaL_error(L, "core.client: libcurl refused the tls options");
    }
    if (timeout > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    if (connect_timeout > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_timeout * 1000));
    if (idle > 0) {
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)(idle < 1 ? 1 : idle));
    }
    if (method && strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    }
    if (method && strcmp(method, "POST") == 0 && !body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    } else if (method && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 &&
               strcmp(method, "POST") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (method && strcmp(method, "GET") == 0 && body) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "GET");
    }

    r->t = t;
    r->added_ns = loop_now_ns();
    r->sent_ns = 0;
    /* when it has a connection (new or reused) and is about to be sent; curl's own times start
     * there, and its queue time (CURLINFO_QUEUE_TIME_T) is newer than Debian 12's curl */
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, r);
    r->next = C.active;
    if (C.active)
        C.active->prev = r;
    C.active = r;
    t->wait = r;
    t->cancel = creq_cancel;
    if (curl_multi_add_handle(C.multi, e) != CURLM_OK) {
        t->wait = NULL;
        t->cancel = NULL;
        r->t = NULL;
        creq_release(r);
        push_error(L, "error", "curl_multi_add_handle failed");
        return 2;
    }
    return lua_yield(L, 0);
}

static int l_configure(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "max_host_connections");
    if (!lua_isnil(L, -1)) {
        C.max_host = (long)luaL_checkinteger(L, -1);
        if (C.inited)
            curl_multi_setopt(C.multi, CURLMOPT_MAX_HOST_CONNECTIONS, C.max_host);
    }
    return 0;
}

static int err_tostring(lua_State *L)
{
    lua_getfield(L, 1, "message");
    return 1;
}

void client_free(void)
{
    if (!C.inited)
        return;
    C.closing = 1;
    while (C.active) { /* transfers whose task is gone (task_shutdown ran first) */
        struct creq *r = C.active;
        curl_multi_remove_handle(C.multi, r->easy);
        creq_release(r);
    }
    loop_timer_stop(&C.timer);
    curl_multi_cleanup(C.multi);
    bury_all();
    while (C.socks) { /* sockets of cached connections curl closed without telling us */
        struct csock *cs = C.socks;
        csock_unlink(cs);
        free(cs);
    }
    for (int i = 0; i < C.npool; i++)
        curl_easy_cleanup(C.pool[i]);
    C.npool = 0;
    curl_global_cleanup();
    C.inited = 0;
    C.closing = 0; /* a later engine in the same process starts from a clean state */
}

int luaopen_core_client(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"request", l_request}, {"configure", l_configure}, {NULL, NULL}};
    luaL_newmetatable(L, ERR_MT);
    lua_pushcfunction(L, err_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
