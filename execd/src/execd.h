/*
 * execd.h: shared types of the agent's server side (connections, commands, proxy, files).
 *
 * The agent is one process with one epoll loop (server.c). Every descriptor registered with
 * epoll carries a struct ev tag that says which object it belongs to; server.c dispatches on the
 * tag's kind. Commands (command.c), file routes (files.c), the reverse proxy (proxy.c) and
 * metrics (metrics.c) plug into the connection life cycle through the conn_* functions below.
 *
 * Conventions: functions return 0 on success and -1 on failure; handlers always complete the
 * request by calling one of conn_reply*, conn_stream_end or conn_send_file (or hand the
 * connection over to the proxy).
 */
#ifndef EXECD_H
#define EXECD_H

#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "http.h"
#include "lines.h"
#include "multipart.h"

#define EXECD_DEFAULT_PORT 44772
#define EXECD_BODY_LIMIT (1024 * 1024)
#define EXECD_OUT_HIGH (1024 * 1024) /* stop producing into a socket buffer above this */
/* Connection limits (env overrides: EXECD_MAX_CONNS, EXECD_HEAD_TIMEOUT_MS, EXECD_IDLE_TIMEOUT_MS):
 * at most this many client connections (one more is answered 503 and closed); a connection waiting
 * for a request head (a new one, or kept alive between requests) is closed after HEAD_TIMEOUT; one
 * that sends no body byte for IDLE_TIMEOUT while a request body is due is closed. Streams,
 * downloads and proxy tunnels are not timed. */
#define EXECD_MAX_CONNS 512
#define EXECD_HEAD_TIMEOUT_MS 30000
#define EXECD_IDLE_TIMEOUT_MS 60000

enum ev_kind {
    EV_LISTEN,
    EV_CONN,
    EV_SIGNAL,
    EV_CMD_OUT,
    EV_CMD_ERR,
    EV_PROXY,
    EV_SESS_IN,
    EV_SESS_OUT,
    EV_SESS_ERR,
    EV_SESS_CTL,
    EV_PTY_OUT,
    EV_PTY_ERR,
    EV_PTY_IN,
    EV_POOL_WATCH
};

struct ev {
    enum ev_kind kind;
    void *obj;
};

enum conn_state { C_HEAD, C_BODY, C_RESP, C_PROXY, C_WS, C_CLOSING };
enum body_mode { BODY_BUFFER, BODY_DISCARD, BODY_UPLOAD, BODY_PROXY };

struct conn;
struct cmd;
struct upload;
struct proxy;
struct pty_sess;

typedef void (*handler_fn)(struct conn *c);

struct conn {
    int fd;
    struct ev ev;
    uint32_t events; /* current epoll interest */
    enum conn_state state;
    struct buf in, out;
    int peer_eof;
    size_t head_scan; /* bytes of `in` already searched for the end of a head (no re-parse) */
    int64_t
        wait_since; /* monotonic ms: since when C_HEAD waits for a head, or C_BODY's last byte */
    int64_t accepted_us; /* monotonic µs: when the connection was accepted (a claim's timings) */

    /* the current request */
    struct http_req req;
    int have_req;
    char *path; /* percent-decoded path with any local /proxy/{port} prefix removed */
    struct http_body body;
    enum body_mode body_mode;
    struct buf reqbody;
    int too_large;
    handler_fn handler;
    int keep_alive;
    int err_status; /* early error decided at head time, sent after the body */
    const char *err_code;
    const char *err_msg;

    /* the current response */
    int streaming;    /* chunked response in progress */
    int64_t end_at;   /* monotonic ms at which to end a command stream (0: not yet) */
    int64_t watch_at; /* monotonic ms of the next /metrics/watch sample (0: not watching) */
    struct cmd *cmd;  /* command whose events this stream carries */
    int file_fd;      /* download in progress */
    uint64_t file_left;
    int lines_fd; /* line-range download in progress (chunked text/plain) */
    struct line_range lines;
    struct upload *up;
    struct proxy *px;
    struct pty_sess *pty; /* C_WS: the PTY session this WebSocket is attached to */
    struct buf ws_msg;    /* C_WS: a fragmented client message being assembled */
    int ws_op;            /* its opcode (0: none in progress) */

    int dead; /* closed; freed at the end of the loop iteration */
    struct conn *prev, *next;
};

/* server.c */
int64_t now_ms(void);  /* monotonic */
int64_t now_us(void);  /* monotonic, microseconds (the same clock as the host's CLOCK_MONOTONIC) */
int64_t wall_ns(void); /* realtime */
int64_t wall_ms(void);
void fmt_time_ns(char *out, size_t n, int64_t ns); /* RFC 3339 UTC with nanoseconds */
int loop_add(int fd, uint32_t events, struct ev *ev);
int loop_mod(int fd, uint32_t events, struct ev *ev);
void loop_del(int fd);
extern int g_port;

void conn_reply(struct conn *c, int status, const char *ctype, const char *body, size_t len,
                const char *extra_headers);
void conn_reply_empty(struct conn *c);
void conn_reply_json(struct conn *c, int status, const struct buf *json);
void conn_reply_error(struct conn *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void conn_stream_begin(struct conn *c, int status, const char *ctype);
void conn_stream_write(struct conn *c, const char *p, size_t n);
void conn_stream_end(struct conn *c);
void conn_send_file(struct conn *c, int status, const char *head_extra, int fd, uint64_t off,
                    uint64_t len);
/* Streams lines [offset, offset+limit) of fd (limit -1: to the end) as a chunked text/plain 200,
 * reading the file in fixed chunks while the client keeps up (never the whole file at once). */
void conn_send_lines(struct conn *c, int fd, long long offset, long long limit);
void conn_flush(struct conn *c);
/* Answers 101 Switching Protocols (Sec-WebSocket-Accept: accept) and puts c in C_WS. */
void conn_upgrade(struct conn *c, const char *accept);
void conn_process(struct conn *c); /* parses what `in` holds (after a producer unblocked) */
void conn_close(struct conn *c);
void conn_sync(struct conn *c);

/* command.c */
void cmd_handle_run(struct conn *c);
void cmd_handle_kill(struct conn *c);
void cmd_handle_status(struct conn *c, const char *id);
void cmd_handle_logs(struct conn *c, const char *id);
void cmd_on_pipe(struct ev *ev, uint32_t events);
void cmd_on_sigchld(void);
void cmd_conn_gone(struct conn *c);
int64_t cmd_tick(int64_t now); /* returns the next deadline (ms) or INT64_MAX */
/* Finds bash (returns 1) or sh (returns 0) on PATH into out. */
int cmd_find_shell(char *out, size_t n);
void execd_new_id(char out[33]); /* a fresh 32-hex-digit id (command.c) */
/* 1 when a forked child reported a failed exec through the CLOEXEC pipe ep (command.c) */
int execd_exec_failed(int ep[2], pid_t pid, char *msg, size_t len);
/* The agent's environment without its access token, for a child (entries shared, the array is not;
 * free() it): session.c */
char **execd_child_env(void);
/* For session runs: starts a foreground event stream on conn for a command whose output the
 * caller feeds with cmd_output and ends with cmd_complete. Timeouts and DELETE /command signal
 * the process group of pid. NULL (after a 500 reply) when out of memory. */
struct cmd *cmd_stream_new(struct conn *conn, const char *content, long long timeout_ms, pid_t pid);
void cmd_output(struct cmd *c, int which, const char *p, size_t n);
void cmd_complete(struct cmd *c, int exit_code, int term_sig); /* term_sig 0: exited */
/* Back-pressure: 1 (and the command is marked paused) while its client has too much unsent;
 * cmd_resume restarts reading once the client has drained (called from conn_flush). */
int cmd_should_pause(struct cmd *c);
void cmd_resume(struct cmd *c);

/* session.c: persistent shells (POST /session, POST /session/{id}/run, DELETE /session/{id}) */
void session_handle_create(struct conn *c);
void session_handle_run(struct conn *c, const char *id);
void session_handle_delete(struct conn *c, const char *id);
void session_on_event(struct ev *ev, uint32_t events);
int session_reaped(pid_t pid, int status); /* 1 if pid was a session shell */
void session_resume(struct cmd *run);      /* cmd_resume for a session's run */

/* files.c */
void files_upload_begin(struct conn *c);
int files_upload_data(struct conn *c, const char *p, size_t n);
void files_upload_end(struct conn *c);
void files_upload_free(struct conn *c);
void files_handle_download(struct conn *c);
void files_handle_info(struct conn *c);
void files_handle_delete(struct conn *c);
void files_handle_mkdirs(struct conn *c);
void files_handle_rmdirs(struct conn *c);
void files_handle_list(struct conn *c);
void files_handle_search(struct conn *c);
void files_handle_replace(struct conn *c);
void files_handle_permissions(struct conn *c);
void files_handle_mv(struct conn *c);

/* pty.c: interactive shells over WebSocket (POST /pty, GET|DELETE /pty/{id}, GET /pty/{id}/ws) */
void pty_handle_create(struct conn *c);
void pty_handle_status(struct conn *c, const char *id);
void pty_handle_delete(struct conn *c, const char *id);
void pty_handle_ws(struct conn *c, const char *id);
void pty_ws_data(struct conn *c);   /* C_WS: client frames in `in` */
void pty_conn_gone(struct conn *c); /* the client left: the shell keeps running */
void pty_on_event(struct ev *ev, uint32_t events);
void pty_resume(struct pty_sess *s);   /* the client drained: read output again */
int pty_reaped(pid_t pid, int status); /* 1 if pid was a PTY session's shell */
void pty_gc(void);                     /* frees deleted sessions between loop turns */

/* proxy.c */
int proxy_start(struct conn *c, int port, const char *rest);
void proxy_on_event(struct ev *ev, uint32_t events);
void proxy_client_data(struct conn *c);
void proxy_client_writable(struct conn *c);
void proxy_free(struct conn *c);
int64_t proxy_tick(struct conn *c, int64_t now);

/* pool.c: a warm pool member (bootstrap.sh runs `execd --pool-member`) and POST /pool/claim */
void pool_member_split(void); /* returns in the agent; the member's main process execs the claim */
void pool_handle_claim(struct conn *c);
/* the claim file (pool.c): the FIFO to watch (-1: none); on its events; before each request */
int pool_watch_fd(void);
void pool_on_watch(void);
void pool_check_file(void);
const char *pool_claim_marker(void);     /* the `member` file's text while unclaimed, else NULL */
void execd_set_token(const char *token); /* server.c: the claim's token replaces the boot token */

/* metrics.c */
void metrics_init(void);
void metrics_handle(struct conn *c);
void metrics_watch_handle(struct conn *c); /* GET /metrics/watch: one sample per second */
int64_t metrics_watch_tick(struct conn *c, int64_t now); /* next sample time */

#endif
