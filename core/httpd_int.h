/*
 * httpd_int.h: what httpd.c shares with proxy.c (the forwarding path): the per-request context and
 * the few operations on it. Not a public interface.
 */
#ifndef OSB_HTTPD_INT_H
#define OSB_HTTPD_INT_H

#include "buf.h"
#include "task.h"

#include <microhttpd.h>

#define STREAM_HIGH (64 * 1024)
#define STREAM_LOW (16 * 1024)

enum rstate { RS_HEADERS, RS_BODY, RS_RUNNING, RS_QUEUED };

struct proxy;
struct reqhandle;

struct reqctx {
    struct MHD_Connection *conn;
    int refs;
    enum rstate state;
    unsigned suspended : 1; /* suspended by us, waiting for Lua or the proxy */
    unsigned completed : 1; /* MHD is done with the request */
    unsigned too_large : 1;
    unsigned streaming : 1;        /* a streamed response (Lua stream or proxy) was created */
    unsigned stream_eof : 1;       /* the streamed body is complete */
    unsigned stream_error : 1;     /* the streamed body failed: close the connection */
    unsigned reader_suspended : 1; /* the content reader suspended the connection */
    unsigned inflight : 1;         /* counted in the drain's in-flight count */
    unsigned writer_ok : 1;        /* result for the parked writer */
    unsigned early : 1;            /* handler started at headers time (streamed request body) */
    unsigned upload_done : 1;      /* the whole request body has been received (early requests) */
    unsigned proxied : 1;          /* http.proxy took over the response */
    char *uri;
    const char *uri_at; /* where libmicrohttpd holds the raw target (to find a NUL in it) */
    buf_t body;
    task *t;                   /* the handler task while it runs */
    task *writer;              /* a task parked in s:write() */
    struct proxy *px;          /* the forwarding state when the request is proxied */
    struct reqhandle *handle;  /* what Lua's `req` table points at */
    struct MHD_Response *resp; /* ready to queue */
    unsigned int status;
    buf_t sbuf;                 /* streamed bytes waiting for the client */
    struct reqctx *prev, *next; /* all live contexts, for shutdown */
};

void httpd_ctx_ref(struct reqctx *c);
void httpd_handle_release(struct reqhandle *h);
void httpd_ctx_unref(struct reqctx *c);
/* Resumes the connection when we suspended it, and makes MHD run on the next loop turn. */
void httpd_ctx_resume(struct reqctx *c);
void httpd_ctx_suspend(struct reqctx *c);
void httpd_request_run(void);
/* A JSON ErrorResponse {"code","message"} with X-Request-ID (when request_id is not empty). */
struct MHD_Response *httpd_error_response(const char *code, const char *message,
                                          const char *request_id);
/* A streamed response reading c->sbuf (the same reader Lua streams use); size may be
 * MHD_SIZE_UNKNOWN. */
struct MHD_Response *httpd_stream_response(struct reqctx *c, uint64_t size);

/* proxy.c */
int lhttp_proxy(lua_State *L, struct reqctx *c);
/* http.proxy_stats(): the proxy's counters as a table. */
int lhttp_proxy_stats(lua_State *L);
/* http.proxy_configure{keepalive=, keepalive_timeout=} and http.proxy_pool_close(tag?): the pool of
 * idle backend connections. proxy_pool_free() closes them at shutdown. */
int lhttp_proxy_configure(lua_State *L);
int lhttp_proxy_pool_close(lua_State *L);
/* The request id of a request: the client's X-Request-ID (given, may be NULL) without the blanks
 * around it when that is 1-256 printable characters (as lua/api/middleware.lua request_id), else a
 * new one (32 hex digits); into out (at least 257 bytes). */
void httpd_request_id(const char *given, char *out);
/* The client's address as text ("" when unknown), into out. */
void httpd_peer_addr(struct reqctx *c, char *out, size_t size);
/* proxy.c, for proxy_fast.c: a proxy whose head so far is the request line; its headers; then the
 * framing, the body and the backend connection. */
struct proxy *proxy_begin_fast(struct reqctx *c, const char *host, int port, const char *method,
                               const char *target, size_t target_len, const char *tag, double cto,
                               double hto, const char *request_id);
void proxy_header(struct proxy *px, const char *name, size_t nl, const char *value, size_t vl);
void proxy_launch(struct proxy *px);
/* proxy_fast.c: remembered decisions of the Lua route. proxy_fast() forwards request c at headers
 * time when one applies (1), else leaves it to Lua (0). proxy_fast_remember() keeps the decision
 * http.proxy was given for c. */
int proxy_fast(struct reqctx *c, const char *method);
void proxy_fast_remember(struct reqctx *c, const char *host, int port, const char *tag, double cto,
                         double hto, double seconds);
int lhttp_proxy_forget(lua_State *L);
void proxy_fast_stats(lua_State *L);
void proxy_fast_configure(const char *key_header, const char *token_header);
void proxy_fast_free(void);
void proxy_pool_free(void);
/* Feeds request body bytes; returns 1 when the proxy wants the connection suspended (buffer full).
 */
int proxy_upload(struct proxy *px, const char *data, size_t n);
void proxy_upload_done(struct proxy *px);
/* The client's reader drained c->sbuf below STREAM_LOW. */
void proxy_drained(struct proxy *px);
/* MHD is done with the request (client gone or response sent). */
void proxy_detach(struct proxy *px);

#endif
