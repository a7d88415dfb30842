/*
 * pty.c: interactive shell sessions over WebSocket (upstream's /pty routes, see its PTY.md).
 *
 *   POST   /pty          {cwd?, command?} -> 201 {session_id}; the shell starts on first attach
 *   GET    /pty/{id}     -> {session_id, running, output_offset}
 *   DELETE /pty/{id}     kills the shell's process group and forgets the session
 *   GET    /pty/{id}/ws  WebSocket attach (?pty=0 pipe mode, ?since=N replay, ?takeover=1)
 *
 * The shell is `bash --norc --noprofile [-c command]` (or `sh [-c command]` without bash) on a real
 * pseudo-terminal (openpty, setsid, TIOCSCTTY; 80x24 at start), or on three pipes in pipe mode. Its
 * output is always read (so it never blocks on a full terminal), kept in a 1 MiB replay ring, and
 * sent to the attached client while one is attached, as binary frames [0x01|0x02][bytes]. On attach
 * the client gets the ring from `since` as one [0x03][8-byte big-endian offset][bytes] frame, then
 * {"type":"connected",...}. Client frames: binary [0x00][stdin bytes]; text JSON {"type":"stdin",
 * "data"}, {"type":"resize","cols","rows"}, {"type":"signal","signal":"SIGINT"}, {"type":"ping"}.
 * When the shell exits: {"type":"exit","exit_code":N} and a close frame 1000; the session stays and
 * a later attach starts a new shell. One client at a time: another attach gets 409 unless it asks
 * ?takeover=1, which closes the current one with 4001 TAKEN_OVER. A client leaving (close frame or
 * a dropped connection) does not stop the shell.
 *
 * Everything runs on the agent's epoll loop: the terminal master (or the pipes) is registered with
 * EV_PTY_* tags, and output stops being read while the client's unsent output is above
 * EXECD_OUT_HIGH (it resumes from conn_flush through pty_resume). Stdin that the terminal does not
 * take at once waits in a per-session buffer; client frames are not parsed while it is large.
 */
#include "execd.h"

#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "json.h"
#include "ws.h"

#define PTY_RING (1024 * 1024)
#define PTY_READ (32 * 1024)
#define PTY_STDIN_HIGH (64 * 1024)

enum { BIN_STDIN = 0x00, BIN_STDOUT = 0x01, BIN_STDERR = 0x02, BIN_REPLAY = 0x03 };

struct pty_sess {
    char id[33];
    char *cwd, *command;
    pid_t pid;     /* 0: not running */
    int exit_code; /* of the last run; -1 before one ended (or when it was killed by a signal) */
    int is_pty;
    int fd_out; /* terminal master (pty mode: also stdin) or stdout pipe */
    int fd_err; /* pipe mode */
    int fd_in;  /* pipe mode */
    struct ev ev_out, ev_err, ev_in;
    uint32_t want_out, want_err, want_in; /* current epoll interest */
    int paused;                           /* output not read: the client is behind */
    char *ring;
    int64_t total; /* bytes of output ever produced (the replay offset) */
    struct buf stdin_pend;
    struct conn *ws;
    int deleted; /* DELETE while the shell runs: freed when it is reaped */
    int gone;    /* to be freed by pty_gc, after the current batch of epoll events */
    struct pty_sess *next;
};

static struct pty_sess *g_ptys;

/* ---- sessions ------------------------------------------------------------------------------ */

static struct pty_sess *pty_find(const char *id)
{
    struct pty_sess *s;

    for (s = g_ptys; s; s = s->next)
        if (!s->deleted && strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

/* Frees the sessions marked gone. Called between loop turns: an event of the same epoll batch
 * may still carry a pointer to one. */
void pty_gc(void)
{
    struct pty_sess **pp = &g_ptys, *s;

    while ((s = *pp)) {
        if (!s->gone) {
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        free(s->cwd);
        free(s->command);
        free(s->ring);
        buf_free(&s->stdin_pend);
        free(s);
    }
}

static void fd_watch(int fd, uint32_t *cur, uint32_t want, struct ev *ev)
{
    if (fd >= 0 && *cur != want) {
        loop_mod(fd, want, ev);
        *cur = want;
    }
}

/* Recomputes the epoll interest of the session's descriptors. */
static void pty_sync(struct pty_sess *s)
{
    uint32_t out = s->paused ? 0 : EPOLLIN;

    if (s->is_pty) {
        if (s->stdin_pend.len)
            out |= EPOLLOUT;
    } else {
        fd_watch(s->fd_err, &s->want_err, s->paused ? 0 : EPOLLIN, &s->ev_err);
        fd_watch(s->fd_in, &s->want_in, s->stdin_pend.len ? EPOLLOUT : 0, &s->ev_in);
    }
    fd_watch(s->fd_out, &s->want_out, out, &s->ev_out);
}

static void fd_drop(int *fd)
{
    if (*fd >= 0) {
        loop_del(*fd);
        close(*fd);
    }
    *fd = -1;
}

static void pty_close_fds(struct pty_sess *s)
{
    fd_drop(&s->fd_out);
    fd_drop(&s->fd_err);
    fd_drop(&s->fd_in);
    s->want_out = s->want_err = s->want_in = 0;
    buf_reset(&s->stdin_pend);
}

/* ---- the client side ----------------------------------------------------------------------- */

static void ws_json(struct conn *c, struct buf *j)
{
    ws_put_frame(&c->out, WS_OP_TEXT, j->data, j->len);
    buf_free(j);
}

static void ws_error(struct conn *c, const char *code, const char *msg)
{
    struct buf j = {0};

    buf_puts(&j, "{\"type\":\"error\",\"error\":");
    json_put_cstr(&j, msg);
    buf_puts(&j, ",\"code\":");
    json_put_cstr(&j, code);
    buf_puts(&j, "}");
    ws_json(c, &j);
}

/* Detaches c from its session (the shell keeps running) and closes it after a close frame. */
static void ws_finish(struct conn *c, unsigned code, const char *reason)
{
    if (c->pty && c->pty->ws == c) {
        c->pty->ws = NULL;
        c->pty->paused = 0;
        pty_sync(c->pty);
    }
    c->pty = NULL;
    if (code)
        ws_put_close(&c->out, code, reason);
    c->keep_alive = 0;
    c->state = C_CLOSING;
    conn_flush(c);
}

void pty_conn_gone(struct conn *c)
{
    if (c->pty && c->pty->ws == c) {
        c->pty->ws = NULL;
        c->pty->paused = 0;
        pty_sync(c->pty);
    }
    c->pty = NULL;
}

/* Sends one output chunk (type byte + data) to the attached client, if any. */
static void pty_forward(struct pty_sess *s, int type, const char *p, size_t n)
{
    struct conn *c = s->ws;
    unsigned char t = (unsigned char)type;

    if (!c || c->dead)
        return;
    ws_put_head(&c->out, WS_OP_BINARY, n + 1);
    buf_append(&c->out, &t, 1);
    buf_append(&c->out, p, n);
    if (c->out.len > EXECD_OUT_HIGH) {
        s->paused = 1;
        pty_sync(s);
    }
    conn_flush(c);
}

static void ring_put(struct pty_sess *s, const char *p, size_t n)
{
    size_t at, first;

    if (!s->ring && !(s->ring = malloc(PTY_RING)))
        return;
    if (n > PTY_RING) {
        s->total += (int64_t)(n - PTY_RING);
        p += n - PTY_RING;
        n = PTY_RING;
    }
    at = (size_t)(s->total % PTY_RING);
    first = n < PTY_RING - at ? n : PTY_RING - at;
    memcpy(s->ring + at, p, first);
    memcpy(s->ring, p + first, n - first);
    s->total += (int64_t)n;
}

/* Queues the replay frame: output from `since` (clamped to what the ring still holds). */
static void ring_replay(struct pty_sess *s, struct conn *c, int64_t since)
{
    int64_t oldest = s->total > PTY_RING ? s->total - PTY_RING : 0;
    unsigned char h[9];
    size_t count, at, first;
    int i;

    if (since >= s->total || !s->ring)
        return;
    if (since < oldest)
        since = oldest;
    count = (size_t)(s->total - since);
    at = (size_t)(since % PTY_RING);
    first = count < PTY_RING - at ? count : PTY_RING - at;
    h[0] = BIN_REPLAY;
    for (i = 0; i < 8; i++)
        h[1 + i] = (unsigned char)((uint64_t)since >> (56 - 8 * i));
    /* one frame: header for 9 + count bytes, then the pieces */
    {
        struct buf payload = {0};
        buf_append(&payload, h, 9);
        buf_append(&payload, s->ring + at, first);
        buf_append(&payload, s->ring, count - first);
        ws_put_frame(&c->out, WS_OP_BINARY, payload.data, payload.len);
        buf_free(&payload);
    }
}

/* ---- the shell ----------------------------------------------------------------------------- */

/* Starts the shell (pty or pipe mode). 0, or -1 with a reason in why. */
static int pty_spawn(struct pty_sess *s, int want_pty, char *why, size_t whylen)
{
    int master = -1, slave = -1, in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    int ep[2] = {-1, -1}, rc = -1;
    char shell[4096], msg[300];
    char **env = execd_child_env();
    struct winsize wsz = {24, 80, 0, 0};
    pid_t pid;
    int bash = cmd_find_shell(shell, sizeof(shell)), k = 0;
    char *argv[6];

    argv[k++] = shell;
    if (bash) {
        argv[k++] = "--norc";
        argv[k++] = "--noprofile";
    }
    if (s->command) {
        argv[k++] = "-c";
        argv[k++] = s->command;
    }
    argv[k] = NULL;
    if (!env) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    if (want_pty) {
        if (openpty(&master, &slave, NULL, NULL, &wsz) < 0) {
            snprintf(why, whylen, "openpty: %s", strerror(errno));
            goto out;
        }
        fcntl(master, F_SETFD, FD_CLOEXEC);
        fcntl(slave, F_SETFD, FD_CLOEXEC);
    } else if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        snprintf(why, whylen, "pipe: %s", strerror(errno));
        goto out;
    }
    if (pipe2(ep, O_CLOEXEC) < 0) {
        snprintf(why, whylen, "pipe: %s", strerror(errno));
        goto out;
    }
    pid = fork();
    if (pid < 0) {
        snprintf(why, whylen, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        struct sigaction sa;
        sigset_t none;
        int sig, i0 = want_pty ? slave : in[0], o1 = want_pty ? slave : out[1];
        int e2 = want_pty ? slave : err[1];

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        for (sig = 1; sig < 65; sig++)
            sigaction(sig, &sa, NULL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (want_pty) {
            setsid(); /* a new session whose controlling terminal is the pty */
            ioctl(slave, TIOCSCTTY, 0);
        } else {
            setpgid(0, 0);
        }
        if (dup2(i0, 0) < 0 || dup2(o1, 1) < 0 || dup2(e2, 2) < 0)
            snprintf(msg, sizeof(msg), "dup2: %s", strerror(errno));
        else if (s->cwd && chdir(s->cwd) < 0)
            snprintf(msg, sizeof(msg), "chdir %.200s: %s", s->cwd, strerror(errno));
        else {
            execve(shell, argv, env);
            snprintf(msg, sizeof(msg), "exec %.200s: %s", shell, strerror(errno));
        }
        if (write(ep[1], msg, strlen(msg)) < 0)
            _exit(127);
        _exit(127);
    }
    if (!want_pty)
        setpgid(pid, pid);
    if (execd_exec_failed(ep, pid, msg, sizeof(msg))) {
        snprintf(why, whylen, "%s", msg);
        goto out;
    }
    s->pid = pid;
    s->is_pty = want_pty;
    s->exit_code = -1;
    if (want_pty) {
        s->fd_out = master;
        master = -1;
    } else {
        s->fd_out = out[0];
        s->fd_err = err[0];
        s->fd_in = in[1];
        out[0] = err[0] = in[1] = -1;
    }
    s->ev_out.kind = EV_PTY_OUT;
    s->ev_err.kind = EV_PTY_ERR;
    s->ev_in.kind = EV_PTY_IN;
    s->ev_out.obj = s->ev_err.obj = s->ev_in.obj = s;
    fcntl(s->fd_out, F_SETFL, fcntl(s->fd_out, F_GETFL) | O_NONBLOCK);
    loop_add(s->fd_out, EPOLLIN, &s->ev_out);
    s->want_out = EPOLLIN;
    if (!want_pty) {
        fcntl(s->fd_err, F_SETFL, fcntl(s->fd_err, F_GETFL) | O_NONBLOCK);
        fcntl(s->fd_in, F_SETFL, fcntl(s->fd_in, F_GETFL) | O_NONBLOCK);
        loop_add(s->fd_err, EPOLLIN, &s->ev_err);
        loop_add(s->fd_in, 0, &s->ev_in);
        s->want_err = EPOLLIN;
        s->want_in = 0;
    }
    s->paused = 0;
    rc = 0;
out:
    if (master >= 0)
        close(master);
    if (slave >= 0)
        close(slave);
    for (k = 0; k < 2; k++) {
        if (in[k] >= 0)
            close(in[k]);
        if (out[k] >= 0)
            close(out[k]);
        if (err[k] >= 0)
            close(err[k]);
        if (ep[k] >= 0)
            close(ep[k]);
    }
    free(env);
    return rc;
}

/* Reads what one output descriptor has (at most `rounds` chunks). 1 when it reached its end. */
static int pty_read(struct pty_sess *s, int which, int rounds)
{
    static char chunk[PTY_READ];
    int fd = which == BIN_STDERR ? s->fd_err : s->fd_out;

    while (fd >= 0 && rounds-- > 0) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n > 0) {
            ring_put(s, chunk, (size_t)n);
            pty_forward(s, which, chunk, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return 1; /* EOF, or EIO once no process holds the terminal any more */
    }
    return 0;
}

static void pty_write_stdin(struct pty_sess *s)
{
    int fd = s->is_pty ? s->fd_out : s->fd_in;

    while (fd >= 0 && s->stdin_pend.len) {
        ssize_t n = write(fd, s->stdin_pend.data, s->stdin_pend.len);
        if (n > 0) {
            buf_consume(&s->stdin_pend, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        buf_reset(&s->stdin_pend); /* the shell is gone; its exit is reported by the reaper */
        break;
    }
    pty_sync(s);
}

void pty_on_event(struct ev *ev, uint32_t events)
{
    struct pty_sess *s = ev->obj;
    int which = ev->kind == EV_PTY_ERR ? BIN_STDERR : BIN_STDOUT;

    if ((events & EPOLLOUT) && (ev->kind == EV_PTY_IN || (ev->kind == EV_PTY_OUT && s->is_pty))) {
        pty_write_stdin(s);
        if (s->ws && !s->ws->dead && s->stdin_pend.len < PTY_STDIN_HIGH)
            conn_process(s->ws); /* parse the client frames held back */
    }
    if (ev->kind == EV_PTY_IN)
        return;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (pty_read(s, which, 8)) {
            /* the end of the output (the shell's exit is reported by the reaper) */
            if (which == BIN_STDERR)
                fd_drop(&s->fd_err);
            else
                fd_drop(&s->fd_out);
        }
    }
}

void pty_resume(struct pty_sess *s)
{
    if (s->paused && s->ws && s->ws->out.len < EXECD_OUT_HIGH / 2) {
        s->paused = 0;
        pty_sync(s);
    }
}

int pty_reaped(pid_t pid, int status)
{
    struct pty_sess *s;
    struct conn *c;

    for (s = g_ptys; s; s = s->next)
        if (s->pid == pid)
            break;
    if (!s)
        return 0;
    /* what the shell wrote before it ended is still in the terminal (or pipes): send it first */
    s->paused = 0;
    pty_read(s, BIN_STDOUT, 64);
    if (s->fd_err >= 0)
        pty_read(s, BIN_STDERR, 64);
    pty_close_fds(s);
    s->pid = 0;
    s->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    c = s->ws;
    if (c && !c->dead) {
        struct buf j = {0};
        buf_printf(&j, "{\"type\":\"exit\",\"exit_code\":%d}", s->exit_code);
        ws_json(c, &j);
        ws_finish(c, 1000, "process exited");
    }
    s->ws = NULL;
    if (s->deleted)
        s->gone = 1;
    return 1;
}

/* ---- client frames ------------------------------------------------------------------------- */

static int signal_of(const char *name)
{
    static const struct {
        const char *n;
        int sig;
    } t[] = {{"SIGINT", SIGINT},
             {"SIGTERM", SIGTERM},
             {"SIGKILL", SIGKILL},
             {"SIGQUIT", SIGQUIT},
             {"SIGHUP", SIGHUP}};
    size_t i;

    for (i = 0; name && i < sizeof(t) / sizeof(t[0]); i++)
        if (strcmp(t[i].n, name) == 0)
            return t[i].sig;
    return 0;
}

static void pty_stdin(struct pty_sess *s, const char *p, size_t n)
{
    if (!s->pid || !n)
        return;
    buf_append(&s->stdin_pend, p, n);
    pty_write_stdin(s);
}

static void pty_text(struct conn *c, struct pty_sess *s, const char *p, size_t n)
{
    struct json *j = json_parse(p, n), *type, *v;
    long long cols, rows;

    if (!j || j->type != JSON_OBJECT) {
        json_free(j); /* not JSON: ignored, as upstream does */
        return;
    }
    type = json_get(j, "type");
    if (!type || type->type != JSON_STRING) {
        ws_error(c, "INVALID_FRAME", "frame without a type");
    } else if (strcmp(type->str, "stdin") == 0) {
        v = json_get(j, "data");
        if (v && v->type == JSON_STRING)
            pty_stdin(s, v->str, v->len);
    } else if (strcmp(type->str, "signal") == 0) {
        v = json_get(j, "signal");
        int sig = signal_of(v && v->type == JSON_STRING ? v->str : NULL);
        if (sig && s->pid) {
            /* a terminal's foreground job (bash with job control runs each in its own group),
             * as a key press would; the shell's group in pipe mode */
            pid_t fg = s->is_pty && s->fd_out >= 0 ? tcgetpgrp(s->fd_out) : -1;
            kill(fg > 0 ? -fg : -s->pid, sig);
        }
    } else if (strcmp(type->str, "resize") == 0) {
        if (json_int(json_get(j, "cols"), 1, 65535, &cols) &&
            json_int(json_get(j, "rows"), 1, 65535, &rows) && s->is_pty && s->fd_out >= 0) {
            struct winsize wsz = {(unsigned short)rows, (unsigned short)cols, 0, 0};
            ioctl(s->fd_out, TIOCSWINSZ, &wsz);
        }
    } else if (strcmp(type->str, "ping") == 0) {
        struct buf b = {0};
        buf_puts(&b, "{\"type\":\"pong\"}");
        ws_json(c, &b);
    } else {
        char msg[200];
        snprintf(msg, sizeof(msg), "unknown frame type \"%.100s\"", type->str);
        ws_error(c, "INVALID_FRAME", msg);
    }
    json_free(j);
}

void pty_ws_data(struct conn *c)
{
    while (!c->dead && c->state == C_WS && c->pty) {
        struct pty_sess *s = c->pty;
        struct ws_frame f;
        long used;

        if (s->stdin_pend.len >= PTY_STDIN_HIGH)
            return; /* resumed by pty_on_event once the terminal took some */
        used = ws_parse_frame(c->in.data, c->in.len, &f);
        if (used == 0)
            return;
        if (used < 0) {
            ws_finish(c, used == WS_ERR_TOO_BIG ? 1009 : 1002,
                      used == WS_ERR_TOO_BIG ? "frame too large" : "protocol error");
            return;
        }
        if (f.opcode == WS_OP_PING) {
            ws_put_frame(&c->out, WS_OP_PONG, f.payload, f.len);
        } else if (f.opcode == WS_OP_CLOSE) {
            unsigned code = f.len >= 2
                                ? ((unsigned char)f.payload[0] << 8 | (unsigned char)f.payload[1])
                                : 1000;
            buf_consume(&c->in, (size_t)used);
            ws_finish(c, code, "");
            return;
        } else if (f.opcode != WS_OP_PONG) {
            int op = f.opcode == WS_OP_CONT ? c->ws_op : f.opcode;
            if ((f.opcode == WS_OP_CONT) != (c->ws_op != 0) ||
                c->ws_msg.len + f.len > WS_MAX_PAYLOAD) {
                ws_finish(c, f.opcode == WS_OP_CONT || c->ws_op ? 1002 : 1009,
                          "bad fragmentation or message too large");
                return;
            }
            if (!f.fin) {
                c->ws_op = op;
                buf_append(&c->ws_msg, f.payload, f.len);
            } else {
                const char *p = f.payload;
                size_t n = f.len;
                if (c->ws_op) {
                    buf_append(&c->ws_msg, f.payload, f.len);
                    p = c->ws_msg.data;
                    n = c->ws_msg.len;
                }
                if (op == WS_OP_BINARY && n >= 1 && p[0] == BIN_STDIN)
                    pty_stdin(s, p + 1, n - 1);
                else if (op == WS_OP_TEXT)
                    pty_text(c, s, p, n);
                c->ws_op = 0;
                buf_reset(&c->ws_msg);
            }
        }
        buf_consume(&c->in, (size_t)used);
        conn_flush(c);
    }
}

/* ---- HTTP routes --------------------------------------------------------------------------- */

void pty_handle_create(struct conn *c)
{
    struct json *req = NULL, *cwd = NULL, *cmd = NULL;
    struct pty_sess *s;
    struct stat st;
    struct buf b = {0};

    if (c->reqbody.len) {
        req = json_parse(c->reqbody.data, c->reqbody.len);
        if (!req || req->type != JSON_OBJECT) {
            json_free(req);
            conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "request body must be a JSON object");
            return;
        }
        cwd = json_get(req, "cwd");
        cmd = json_get(req, "command");
        if (cwd && cwd->type == JSON_NULL)
            cwd = NULL;
        if (cmd && cmd->type == JSON_NULL)
            cmd = NULL;
    }
    if ((cwd && (cwd->type != JSON_STRING || memchr(cwd->str, '\0', cwd->len))) ||
        (cmd && (cmd->type != JSON_STRING || memchr(cmd->str, '\0', cmd->len)))) {
        json_free(req);
        conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "cwd and command must be strings");
        return;
    }
    if (cwd && cwd->len && (stat(cwd->str, &st) < 0 || !S_ISDIR(st.st_mode))) {
        conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "cwd is not a directory: %s", cwd->str);
        json_free(req);
        return;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        json_free(req);
        conn_reply_error(c, 500, "RUNTIME_ERROR", "out of memory");
        return;
    }
    execd_new_id(s->id);
    s->cwd = cwd && cwd->len ? strdup(cwd->str) : NULL;
    s->command = cmd && cmd->len ? strdup(cmd->str) : NULL;
    s->exit_code = -1;
    s->fd_out = s->fd_err = s->fd_in = -1;
    s->next = g_ptys;
    g_ptys = s;
    json_free(req);
    buf_puts(&b, "{\"session_id\":\"");
    buf_puts(&b, s->id);
    buf_puts(&b, "\"}");
    conn_reply_json(c, 201, &b);
    buf_free(&b);
}

void pty_handle_status(struct conn *c, const char *id)
{
    struct pty_sess *s = pty_find(id);
    struct buf b = {0};

    if (!s) {
        conn_reply_error(c, 404, "CONTEXT_NOT_FOUND", "pty session %s not found", id);
        return;
    }
    buf_printf(&b, "{\"session_id\":\"%s\",\"running\":%s,\"output_offset\":%lld}", s->id,
               s->pid ? "true" : "false", (long long)s->total);
    conn_reply_json(c, 200, &b);
    buf_free(&b);
}

void pty_handle_delete(struct conn *c, const char *id)
{
    struct pty_sess *s = pty_find(id);

    if (!s) {
        conn_reply_error(c, 404, "CONTEXT_NOT_FOUND", "pty session %s not found", id);
        return;
    }
    s->deleted = 1;
    if (s->pid) {
        kill(-s->pid, SIGKILL); /* the reaper sends the exit frame and frees the session */
        kill(s->pid, SIGKILL);
    } else {
        if (s->ws)
            ws_finish(s->ws, 1000, "session deleted");
        s->gone = 1;
    }
    conn_reply_empty(c);
}

/* A value of a "Connection"/"Upgrade"-style header contains token (case-insensitive). */
static int has_token(const char *v, const char *token)
{
    size_t n = strlen(token);

    for (; v && *v; v++)
        if (strncasecmp(v, token, n) == 0 && (v[n] == '\0' || v[n] == ',' || v[n] == ' '))
            return 1;
    return 0;
}

void pty_handle_ws(struct conn *c, const char *id)
{
    struct pty_sess *s = pty_find(id);
    const char *key = http_header(&c->req, "Sec-WebSocket-Key");
    const char *ver = http_header(&c->req, "Sec-WebSocket-Version");
    int is_ws = c->req.upgrade && has_token(http_header(&c->req, "Upgrade"), "websocket");
    char *q_pty = http_query_get(c->req.query, "pty"),
         *q_since = http_query_get(c->req.query, "since");
    char *q_take = http_query_get(c->req.query, "takeover");
    char accept[29], why[400];
    long long since = 0;
    struct buf j = {0};

    if (!s) {
        conn_reply_error(c, 404, "CONTEXT_NOT_FOUND", "pty session %s not found", id);
        goto out;
    }
    if (s->ws && !(is_ws && q_take && strcmp(q_take, "1") == 0)) {
        conn_reply_error(c, 409, "ALREADY_CONNECTED",
                         "another client is already connected to pty session %s", id);
        goto out;
    }
    if (!is_ws || !key || !*key || !ver || strcmp(ver, "13") != 0) {
        conn_reply_error(c, 400, "INVALID_REQUEST_BODY",
                         "a WebSocket handshake (Upgrade: websocket, Sec-WebSocket-Key, "
                         "Sec-WebSocket-Version: 13) is required");
        goto out;
    }
    if (q_since && *q_since) {
        char *end;
        since = strtoll(q_since, &end, 10);
        if (*end || since < 0)
            since = 0; /* as upstream: an unparsable value means 0 */
    }
    if (s->ws) {
        struct conn *old = s->ws;
        ws_finish(old, 4001, "TAKEN_OVER");
    }
    ws_accept_key(key, accept);
    conn_upgrade(c, accept);
    c->pty = s;
    s->ws = c;
    if (!s->pid && pty_spawn(s, !(q_pty && strcmp(q_pty, "0") == 0), why, sizeof(why)) < 0) {
        ws_error(c, "START_FAILED", why);
        ws_finish(c, 1011, "start failed");
        goto out;
    }
    ring_replay(s, c, since);
    buf_printf(&j, "{\"type\":\"connected\",\"session_id\":\"%s\",\"mode\":\"%s\"}", s->id,
               s->is_pty ? "pty" : "pipe");
    ws_json(c, &j);
    conn_flush(c);
out:
    free(q_pty);
    free(q_since);
    free(q_take);
}
