/*
 * proxy_fast.c: remembered decisions of the server proxy, so that a sandbox's steady traffic is
 * forwarded without running the Lua route for every request.
 *
 * The Lua route (lua/api/proxy.lua) decides each proxied request: the credentials, which sandbox
 * and address, whether hooks or a renewal are involved, the headers that go upstream. When it finds
 * the decision repeatable (no on_proxy_request hook, no per-request port check, no renewal due:
 * sandbox/views.lua proxy_target) it passes `remember = seconds` to http.proxy, and
 * the decision is kept here under the exact (sandbox id, port as written, API key header, proxy
 * token header) of that request. A later request with the same four values, within that time, is
 * forwarded from here at headers time: the request id, the header rules and the head are made in C,
 * then the forwarding path is the same as for Lua's decisions (proxy.c).
 *
 * What makes a remembered decision void:
 *   - its time runs out (at most a few seconds: the Lua route runs again and remembers again);
 *   - any change of the sandbox's record (sandbox/state.lua set_record calls http.proxy_forget(id):
 *     a pause, a deletion, an expiry, a renewal, new metadata);
 *   - a reload (SIGHUP: hooks and routes may have changed), which forgets everything;
 *   - more than FAST_MAX remembered decisions (then everything is forgotten at once).
 * Requests the fast path leaves to Lua: OPTIONS (CORS preflights are answered by the server),
 * upgrades (any Upgrade header), a credential or X-Request-ID header sent twice, more than
 * FAST_HEADERS headers, a path that is not plainly /[v1/]sandboxes/{id}/proxy/{digits}[/...], and
 * every request that finds no remembered decision. Only the exact credential strings of a request
 * that Lua let through are remembered, so a wrong key can never take this path.
 *
 * Written here rather than taken from a library: it is a small hash table over our own request
 * context and the same header rules as the Lua route (both are tested against the same backend).
 */
#define _GNU_SOURCE
#include "httpd_int.h"
#include "log.h"
#include "loop.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FAST_BUCKETS 1024
#define FAST_MAX 4096
#define FAST_HEADERS 64
#define FAST_CONN_TOKENS 16
#define FAST_ID_MAX 128

struct fast_entry {
    struct fast_entry *next;
    uint64_t deadline; /* loop_now_ns() from which it no longer counts */
    double cto, hto;   /* connect and header timeouts, seconds */
    int port;          /* the target's */
    char host[64];
    size_t idlen;
    size_t klen;
    char key[]; /* id \0 port \0 API key \0 token \0 (klen bytes) */
};

static struct {
    struct fast_entry *buckets[FAST_BUCKETS];
    unsigned n;
    char key_header[64];   /* the API key's header (Lua's middleware.API_KEY_HEADER) */
    char token_header[64]; /* the proxy capability's header */
    /* requests forwarded from here, by route ([/v1] and with a path after the port or not: the
     * four proxy routes of lua/api/router.lua) and method (GET, HEAD, POST, PUT, PATCH, DELETE,
     * OPTIONS, other: the method labels of lua/api/metrics.lua), and their time in here */
    uint64_t count[4][8];
    uint64_t ns[4][8];
} F = {.key_header = "OPEN-SANDBOX-API-KEY", .token_header = "X-OpenSandbox-Proxy-Token"};

static const char *const METHODS[7] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};

static unsigned method_index(const char *m)
{
    for (unsigned i = 0; i < 7; i++)
        if (strcmp(m, METHODS[i]) == 0)
            return i;
    return 7;
}

/* FNV-1a of the sandbox id: a bucket holds every remembered decision of one sandbox, so that
 * forgetting a sandbox looks at one bucket. (Only decisions Lua allowed are inserted, so a client
 * cannot fill a bucket with keys of its choosing.) */
static unsigned id_hash(const char *id, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)id[i];
        h *= 16777619u;
    }
    return h % FAST_BUCKETS;
}

/* ---- the request ---- */

struct target {
    int v1;
    const char *id;
    size_t idlen;
    const char *port_s;
    size_t portlen;
    const char *tail; /* the path after the port ("" when none), up to the query */
    size_t taillen;
    const char *query; /* after '?', or NULL */
};

static int id_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_' || ch == '.';
}

/* /[v1/]sandboxes/{id}/proxy/{port}[/tail][?query] with a plain id and a port of 1-5 digits. */
static int parse_target(const char *uri, struct target *t)
{
    const char *p = uri;
    t->v1 = strncmp(p, "/v1/", 4) == 0;
    if (t->v1)
        p += 3;
    if (strncmp(p, "/sandboxes/", 11) != 0)
        return 0;
    p += 11;
    t->id = p;
    while (id_char(*p))
        p++;
    t->idlen = (size_t)(p - t->id);
    if (!t->idlen || t->idlen > FAST_ID_MAX || strncmp(p, "/proxy/", 7) != 0)
        return 0;
    p += 7;
    t->port_s = p;
    while (*p >= '0' && *p <= '9')
        p++;
    t->portlen = (size_t)(p - t->port_s);
    if (!t->portlen || t->portlen > 5 || (*p && *p != '/' && *p != '?'))
        return 0;
    t->tail = p;
    while (*p && *p != '?')
        p++;
    t->taillen = (size_t)(p - t->tail);
    t->query = *p == '?' ? p + 1 : NULL;
    return 1;
}

struct hdrs {
    const char *name[FAST_HEADERS];
    const char *value[FAST_HEADERS];
    int n;
    int too_many;
    const char *key, *token, *rid, *connection, *upgrade;
    int nkey, ntoken, nrid, nconn;
};

static enum MHD_Result collect_cb(void *cls, enum MHD_ValueKind kind, const char *name,
                                  const char *value)
{
    struct hdrs *h = cls;
    (void)kind;
    if (!value)
        value = "";
    if (h->n == FAST_HEADERS) {
        h->too_many = 1;
        return MHD_NO;
    }
    h->name[h->n] = name;
    h->value[h->n++] = value;
    if (strcasecmp(name, F.key_header) == 0) {
        h->key = value;
        h->nkey++;
    } else if (strcasecmp(name, F.token_header) == 0) {
        h->token = value;
        h->ntoken++;
    } else if (strcasecmp(name, "X-Request-ID") == 0) {
        h->rid = value;
        h->nrid++;
    } else if (strcasecmp(name, "Connection") == 0) {
        h->connection = value;
        h->nconn++;
    } else if (strcasecmp(name, "Upgrade") == 0) {
        h->upgrade = value;
    }
    return MHD_YES;
}

/* The request's headers, or 0 when the fast path must leave it to Lua. */
static int collect(struct reqctx *c, struct hdrs *h)
{
    memset(h, 0, sizeof(*h));
    MHD_get_connection_values(c->conn, MHD_HEADER_KIND, collect_cb, h);
    return !h->too_many && h->nkey <= 1 && h->ntoken <= 1 && h->nrid <= 1 && h->nconn <= 1 &&
           !h->upgrade;
}

/* The lookup key: id \0 port \0 key \0 token \0, in buf (size cap); its length, or 0 when it does
 * not fit. */
static size_t make_key(char *buf, size_t cap, const struct target *t, const struct hdrs *h)
{
    const char *key = h->key ? h->key : "", *token = h->token ? h->token : "";
    size_t kl = strlen(key), tl = strlen(token);
    size_t n = t->idlen + 1 + t->portlen + 1 + kl + 1 + tl + 1;
    if (n > cap)
        return 0;
    char *p = buf;
    memcpy(p, t->id, t->idlen);
    p += t->idlen;
    *p++ = '\0';
    memcpy(p, t->port_s, t->portlen);
    p += t->portlen;
    *p++ = '\0';
    memcpy(p, key, kl + 1);
    p += kl + 1;
    memcpy(p, token, tl + 1);
    return n;
}

/* ---- the table ---- */

static void fast_clear(void)
{
    for (int b = 0; b < FAST_BUCKETS; b++) {
        struct fast_entry *e = F.buckets[b];
        while (e) {
            struct fast_entry *next = e->next;
            free(e);
            e = next;
        }
        F.buckets[b] = NULL;
    }
    F.n = 0;
}

/* Drops the remembered decisions of sandbox id (all when id is NULL). */
static void fast_forget(const char *id)
{
    if (!F.n)
        return;
    if (!id) {
        fast_clear();
        return;
    }
    size_t n = strlen(id);
    struct fast_entry **pp = &F.buckets[id_hash(id, n)];
    while (*pp) {
        struct fast_entry *e = *pp;
        if (e->idlen == n && memcmp(e->key, id, n) == 0) {
            *pp = e->next;
            free(e);
            F.n--;
        } else {
            pp = &e->next;
        }
    }
}

/* Whether a and b (n bytes) are equal, in time that does not depend on where they differ: the key
 * holds the client's credentials (the Lua route compares keys in constant time too). */
static int same_bytes(const char *a, const char *b, size_t n)
{
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static struct fast_entry *fast_find(const char *key, size_t klen, size_t idlen, uint64_t now)
{
    struct fast_entry **pp = &F.buckets[id_hash(key, idlen)];
    while (*pp) {
        struct fast_entry *e = *pp;
        if (e->klen == klen && same_bytes(e->key, key, klen)) {
            if (now < e->deadline)
                return e;
            *pp = e->next; /* run out: Lua decides again */
            free(e);
            F.n--;
            return NULL;
        }
        pp = &e->next;
    }
    return NULL;
}

void proxy_fast_remember(struct reqctx *c, const char *host, int port, const char *tag, double cto,
                         double hto, double seconds)
{
    struct target t;
    struct hdrs h;
    char key[1024];
    if (!parse_target(c->uri, &t) || !collect(c, &h) ||
        strlen(host) >= sizeof(((struct fast_entry *)0)->host))
        return;
    /* the pool tag is the sandbox id of the path (lua/api/proxy.lua): anything else is not ours */
    if (strlen(tag) != t.idlen || memcmp(tag, t.id, t.idlen) != 0)
        return;
    size_t klen = make_key(key, sizeof(key), &t, &h);
    if (!klen)
        return;
    uint64_t now = loop_now_ns();
    struct fast_entry *e = fast_find(key, klen, t.idlen, now);
    if (!e) {
        if (F.n >= FAST_MAX)
            fast_clear();
        e = malloc(sizeof(*e) + klen);
        if (!e)
            return;
        memcpy(e->key, key, klen);
        e->klen = klen;
        e->idlen = t.idlen;
        unsigned b = id_hash(key, t.idlen);
        e->next = F.buckets[b];
        F.buckets[b] = e;
        F.n++;
    }
    e->deadline = now + (uint64_t)(seconds * 1e9);
    e->cto = cto;
    e->hto = hto;
    e->port = port;
    snprintf(e->host, sizeof(e->host), "%s", host);
}

/* ---- the header rules (the same as lua/api/proxy.lua upstream_headers) ---- */

static const char *const DROP[] = {"Connection",
                                   "Keep-Alive",
                                   "Proxy-Authenticate",
                                   "Proxy-Authorization",
                                   "TE",
                                   "Trailer",
                                   "Transfer-Encoding",
                                   "Upgrade",
                                   "Authorization",
                                   "Cookie",
                                   "Content-Length",
                                   "Host",
                                   NULL};

struct tokens {
    const char *s[FAST_CONN_TOKENS];
    size_t n[FAST_CONN_TOKENS];
    int count;
};

static int is_sep(char ch)
{
    return ch == ',' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f' ||
           ch == '\v';
}

/* The tokens of a Connection value (split at commas and blanks); 0 when there are too many. */
static int split_tokens(const char *v, struct tokens *t)
{
    t->count = 0;
    while (v && *v) {
        while (*v && is_sep(*v))
            v++;
        const char *s = v;
        while (*v && !is_sep(*v))
            v++;
        if (v > s) {
            if (t->count == FAST_CONN_TOKENS)
                return 0;
            t->s[t->count] = s;
            t->n[t->count++] = (size_t)(v - s);
        }
    }
    return 1;
}

static int dropped(const char *name, const struct tokens *conn)
{
    for (int i = 0; DROP[i]; i++)
        if (strcasecmp(name, DROP[i]) == 0)
            return 1;
    if (strcasecmp(name, F.key_header) == 0 || strcasecmp(name, F.token_header) == 0)
        return 1;
    size_t n = strlen(name);
    for (int i = 0; i < conn->count; i++)
        if (conn->n[i] == n && strncasecmp(name, conn->s[i], n) == 0)
            return 1;
    return 0;
}

static int blank(const char *s)
{
    for (; *s; s++)
        if (!(*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n' || *s == '\f' || *s == '\v'))
            return 0;
    return 1;
}

int proxy_fast(struct reqctx *c, const char *method)
{
    if (!F.n || strcmp(method, "OPTIONS") == 0)
        return 0;
    uint64_t t0 = loop_now_ns();
    struct target t;
    struct hdrs h;
    struct tokens conn;
    char key[1024];
    if (!parse_target(c->uri, &t) || !collect(c, &h) || !split_tokens(h.connection, &conn))
        return 0;
    size_t klen = make_key(key, sizeof(key), &t, &h);
    struct fast_entry *e = klen ? fast_find(key, klen, t.idlen, t0) : NULL;
    if (!e)
        return 0;

    char rid[260];
    httpd_request_id(h.rid, rid);
    /* the target: the tail ("/" when empty) and the query when not empty */
    size_t qlen = t.query ? strlen(t.query) : 0;
    char tbuf[2048], *target = tbuf;
    size_t tlen = (t.taillen ? t.taillen : 1) + (qlen ? qlen + 1 : 0);
    if (tlen > sizeof(tbuf) && !(target = malloc(tlen)))
        return 0;
    memcpy(target, t.taillen ? t.tail : "/", t.taillen ? t.taillen : 1);
    if (qlen) {
        target[tlen - qlen - 1] = '?';
        memcpy(target + tlen - qlen, t.query, qlen);
    }
    char tag[FAST_ID_MAX + 1];
    memcpy(tag, t.id, t.idlen);
    tag[t.idlen] = '\0';
    struct proxy *px =
        proxy_begin_fast(c, e->host, e->port, method, target, tlen, tag, e->cto, e->hto, rid);
    if (target != tbuf)
        free(target);
    if (!px)
        return 0;

    /* the headers: the client's, less the dropped ones, then Host and the forwarding headers */
    const char *host = NULL;
    int has_proto = 0, has_fwd_host = 0;
    buf_t xff = {0};
    for (int i = 0; i < h.n; i++) {
        const char *name = h.name[i], *value = h.value[i];
        if (strcasecmp(name, "X-Forwarded-For") == 0) {
            if (xff.len)
                buf_append(&xff, ", ", 2);
            buf_append(&xff, value, strlen(value));
        } else if (strcasecmp(name, "Host") == 0) {
            host = value;
        } else if (!dropped(name, &conn)) {
            proxy_header(px, name, strlen(name), value, strlen(value));
            if (strcasecmp(name, "X-Forwarded-Proto") == 0)
                has_proto = 1;
            else if (strcasecmp(name, "X-Forwarded-Host") == 0)
                has_fwd_host = 1;
        }
    }
    char hostv[80];
    int hl = snprintf(hostv, sizeof(hostv), "%s%s%s:%d", strchr(e->host, ':') ? "[" : "", e->host,
                      strchr(e->host, ':') ? "]" : "", e->port);
    proxy_header(px, "Host", 4, hostv, (size_t)hl);
    char peer[64];
    httpd_peer_addr(c, peer, sizeof(peer));
    size_t pl = strlen(peer);
    buf_append(&xff, "", 1); /* (a C string for blank()) */
    if (xff.len > 1 && !blank(xff.data)) {
        xff.len--;
        buf_append(&xff, ", ", 2);
        buf_append(&xff, peer, pl);
        proxy_header(px, "X-Forwarded-For", 15, xff.data, xff.len);
    } else {
        proxy_header(px, "X-Forwarded-For", 15, peer, pl);
    }
    buf_free(&xff);
    if (!has_proto)
        proxy_header(px, "X-Forwarded-Proto", 17, "http", 4);
    if (host && !has_fwd_host)
        proxy_header(px, "X-Forwarded-Host", 16, host, strlen(host));
    if (log_enabled(
            LOG_DEBUG)) { /* (the Lua route's per-request line; the path without the query) */
        char path[512];
        snprintf(path, sizeof(path), "%.*s", (int)strcspn(c->uri, "?"), c->uri);
        log_write(LOG_DEBUG, rid, "request", "method", method, "path", path, "remembered", "true",
                  NULL);
    }
    proxy_launch(px);
    unsigned m = method_index(method), r = (unsigned)t.v1 * 2 + (t.taillen > 0);
    F.count[r][m]++;
    F.ns[r][m] += loop_now_ns() - t0;
    return 1;
}

/* ---- Lua ---- */

/* http.proxy_forget(id?): forgets the remembered decisions of a sandbox (of all without one). */
int lhttp_proxy_forget(lua_State *L)
{
    fast_forget(luaL_optstring(L, 1, NULL));
    return 0;
}

/* Adds the fast path's counters to the table on top (http.proxy_stats): "fast" = {{v1, tail,
 * method, count, seconds}, ...} (v1: the /v1 route; tail: the route with a path after the port),
 * "fast_total" (their sum) and "remembered" (decisions kept now). */
void proxy_fast_stats(lua_State *L)
{
    lua_newtable(L);
    int n = 0;
    uint64_t total = 0;
    for (int r = 0; r < 4; r++)
        for (int m = 0; m < 8; m++) {
            if (!F.count[r][m])
                continue;
            total += F.count[r][m];
            lua_createtable(L, 5, 0);
            lua_pushboolean(L, r >= 2);
            lua_rawseti(L, -2, 1);
            lua_pushboolean(L, r & 1);
            lua_rawseti(L, -2, 2);
            lua_pushstring(L, m < 7 ? METHODS[m] : "OTHER");
            lua_rawseti(L, -2, 3);
            lua_pushinteger(L, (lua_Integer)F.count[r][m]);
            lua_rawseti(L, -2, 4);
            lua_pushnumber(L, (lua_Number)F.ns[r][m] / 1e9);
            lua_rawseti(L, -2, 5);
            lua_rawseti(L, -2, ++n);
        }
    lua_setfield(L, -2, "fast");
    lua_pushinteger(L, (lua_Integer)total);
    lua_setfield(L, -2, "fast_total");
    lua_pushinteger(L, (lua_Integer)F.n);
    lua_setfield(L, -2, "remembered");
}

/* The header names of the credentials (http.proxy_configure{key_header=, token_header=}). */
void proxy_fast_configure(const char *key_header, const char *token_header)
{
    if (key_header)
        snprintf(F.key_header, sizeof(F.key_header), "%s", key_header);
    if (token_header)
        snprintf(F.token_header, sizeof(F.token_header), "%s", token_header);
    fast_clear();
}

void proxy_fast_free(void)
{
    fast_clear();
}
