/*
 * session.c: bash-compatible sessions (the SDK's createSession / runInSession / deleteSession).
 *
 * A session is one long-lived shell (`bash --noprofile --norc` if bash is on PATH, else `sh`),
 * the leader of its own process group, started in the session's directory with the agent's
 * environment (minus the access token). Its stdin is a pipe the agent writes runs into, stdout
 * and stderr are pipes the loop reads, and descriptor 3 is a control pipe. A run writes one line
 * of shell text (shell.c) that evals the command, then prints its exit status to descriptor 3;
 * because it is the same shell every time, `cd`, `export`, variables and functions persist from
 * one run to the next.
 *
 * Each run is a foreground command of command.c (cmd_stream_new): the same event stream as
 * POST /command (init with the run's command id, ping, stdout/stderr lines, one terminal event),
 * the same status route, the same timeout and DELETE /command?id= handling. A status line ends
 * the run: the output pipes are drained first, so everything the command wrote precedes the
 * terminal event. One run at a time per session (409 while busy).
 *
 * Timeouts and interrupts signal the whole process group, which ends the shell too: the run
 * reports the signal, and the next run starts a fresh shell in the session's original directory
 * (the session's shell state is lost, its id stays valid). The same happens when the command
 * makes the shell exit (`exit 3`, a failing `set -e`, a syntax error in POSIX sh): that run
 * reports the shell's exit status.
 */
#include "execd.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json.h"
#include "shell.h"

#define SESSION_MAX 128

extern char **environ;

enum { S_IN, S_OUT, S_ERR, S_CTL, S_NFD };

struct session {
    char id[33];
    char *cwd; /* directory the shell starts in; NULL: the agent's */
    pid_t pid; /* 0 while no shell is running */
    int fds[S_NFD];
    struct ev evs[S_NFD];
    struct buf pending; /* run text not yet written to the shell's stdin */
    struct buf ctl;     /* partial status line */
    struct cmd *run;    /* run in progress */
    int deleted;
    struct session *next;
};

static struct session *g_sessions;
static int g_nsessions;

static struct session *session_find(const char *id)
{
    struct session *s;

    for (s = g_sessions; s; s = s->next)
        if (!s->deleted && strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

static void session_close_fd(struct session *s, int which)
{
    if (s->fds[which] < 0)
        return;
    loop_del(s->fds[which]);
    close(s->fds[which]);
    s->fds[which] = -1;
}

/* Reads an output pipe until EAGAIN or EOF into the current run (dropped without one). Unless
 * `force`, pauses while the run's client is slow (see cmd_should_pause). */
static void session_drain(struct session *s, int which, int force)
{
    char tmp[65536];

    while (s->fds[which] >= 0) {
        ssize_t n;
        if (!force && s->run && cmd_should_pause(s->run)) {
            if (s->fds[S_OUT] >= 0)
                loop_mod(s->fds[S_OUT], 0, &s->evs[S_OUT]);
            if (s->fds[S_ERR] >= 0)
                loop_mod(s->fds[S_ERR], 0, &s->evs[S_ERR]);
            return;
        }
        n = read(s->fds[which], tmp, sizeof(tmp));
        if (n > 0) {
            if (s->run)
                cmd_output(s->run, which == S_ERR, tmp, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        session_close_fd(s, which);
    }
}

static void session_free(struct session *s)
{
    struct session **pp;
    int i;

    for (pp = &g_sessions; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    for (i = 0; i < S_NFD; i++)
        session_close_fd(s, i);
    buf_free(&s->pending);
    buf_free(&s->ctl);
    free(s->cwd);
    free(s);
    g_nsessions--;
}

/* Writes as much pending run text as the pipe takes; waits for EPOLLOUT for the rest. */
static void session_write(struct session *s)
{
    while (s->pending.len && s->fds[S_IN] >= 0) {
        ssize_t n = write(s->fds[S_IN], s->pending.data, s->pending.len);
        if (n > 0) {
            buf_consume(&s->pending, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            loop_mod(s->fds[S_IN], EPOLLOUT, &s->evs[S_IN]);
            return;
        }
        /* the shell is gone: its exit is reported through SIGCHLD */
        buf_reset(&s->pending);
        session_close_fd(s, S_IN);
        return;
    }
    if (s->fds[S_IN] >= 0)
        loop_mod(s->fds[S_IN], 0, &s->evs[S_IN]);
}

/* The agent's environment without its access token (entries are shared, the array is not). */
char **execd_child_env(void)
{
    size_t n = 0, k = 0, i;
    char **env;

    while (environ[n])
        n++;
    env = calloc(n + 1, sizeof(char *));
    if (!env)
        return NULL;
    for (i = 0; i < n; i++)
        if (strncmp(environ[i], "EXECD_ACCESS_TOKEN=", 19) != 0)
            env[k++] = environ[i];
    return env;
}

/* Starts the session's shell. Returns 0, or -1 with a reason in why. */
static int session_spawn(struct session *s, char *why, size_t whylen)
{
    int p[S_NFD][2], ep[2] = {-1, -1}, i, rc = -1;
    char shell[4096], msg[256];
    char **env = execd_child_env();
    pid_t pid;

    for (i = 0; i < S_NFD; i++)
        p[i][0] = p[i][1] = -1;
    if (!env) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    for (i = 0; i < S_NFD; i++)
        if (pipe2(p[i], O_CLOEXEC) < 0) {
            snprintf(why, whylen, "pipe: %s", strerror(errno));
            goto out;
        }
    if (pipe2(ep, O_CLOEXEC) < 0) {
        snprintf(why, whylen, "pipe: %s", strerror(errno));
        goto out;
    }
    {
        int bash = cmd_find_shell(shell, sizeof(shell));
        char *argv[] = {shell, bash ? "--noprofile" : NULL, bash ? "--norc" : NULL, NULL};

        pid = fork();
        if (pid < 0) {
            snprintf(why, whylen, "fork: %s", strerror(errno));
            goto out;
        }
        if (pid == 0) {
            struct sigaction sa;
            sigset_t none;
            int sig;

            memset(&sa, 0, sizeof(sa));
            sa.sa_handler = SIG_DFL;
            for (sig = 1; sig < 65; sig++)
                sigaction(sig, &sa, NULL);
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            setpgid(0, 0);
            /* dup2 clears close-on-exec on the copies; 0..3 are the only descriptors exec keeps */
            if (dup2(p[S_IN][0], 0) < 0 || dup2(p[S_OUT][1], 1) < 0 || dup2(p[S_ERR][1], 2) < 0 ||
                dup2(p[S_CTL][1], 3) < 0) {
                snprintf(msg, sizeof(msg), "dup2: %s", strerror(errno));
            } else if (fcntl(0, F_SETFD, 0) < 0 || fcntl(1, F_SETFD, 0) < 0 ||
                       fcntl(2, F_SETFD, 0) < 0 || fcntl(3, F_SETFD, 0) < 0) {
                snprintf(msg, sizeof(msg), "fcntl: %s", strerror(errno));
            } else if (s->cwd && chdir(s->cwd) < 0) {
                snprintf(msg, sizeof(msg), "chdir %s: %s", s->cwd, strerror(errno));
            } else {
                execve(shell, argv, env);
                snprintf(msg, sizeof(msg), "exec %.200s: %s", shell, strerror(errno));
            }
            if (write(ep[1], msg, strlen(msg)) < 0)
                _exit(127);
            _exit(127);
        }
    }
    setpgid(pid, pid);
    if (execd_exec_failed(ep, pid, msg, sizeof(msg))) {
        snprintf(why, whylen, "%s", msg);
        goto out;
    }
    s->pid = pid;
    s->fds[S_IN] = p[S_IN][1];
    s->fds[S_OUT] = p[S_OUT][0];
    s->fds[S_ERR] = p[S_ERR][0];
    s->fds[S_CTL] = p[S_CTL][0];
    p[S_IN][1] = p[S_OUT][0] = p[S_ERR][0] = p[S_CTL][0] = -1;
    for (i = 0; i < S_NFD; i++) {
        static const enum ev_kind kinds[S_NFD] = {EV_SESS_IN, EV_SESS_OUT, EV_SESS_ERR,
                                                  EV_SESS_CTL};
        fcntl(s->fds[i], F_SETFL, fcntl(s->fds[i], F_GETFL) | O_NONBLOCK);
        s->evs[i].kind = kinds[i];
        s->evs[i].obj = s;
        loop_add(s->fds[i], i == S_IN ? 0 : EPOLLIN, &s->evs[i]);
    }
    buf_reset(&s->ctl);
    rc = 0;
out:
    for (i = 0; i < S_NFD; i++) {
        if (p[i][0] >= 0)
            close(p[i][0]);
        if (p[i][1] >= 0)
            close(p[i][1]);
    }
    if (ep[0] >= 0)
        close(ep[0]);
    if (ep[1] >= 0)
        close(ep[1]);
    free(env);
    return rc;
}

/* Reads status lines; each one ends the run in progress. */
static void session_ctl(struct session *s)
{
    char tmp[256];
    int code;

    while (s->fds[S_CTL] >= 0) {
        ssize_t n = read(s->fds[S_CTL], tmp, sizeof(tmp));
        if (n > 0) {
            buf_append(&s->ctl, tmp, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            session_close_fd(s, S_CTL); /* the shell is exiting: SIGCHLD follows */
        break;
    }
    for (;;) {
        int r = shell_ctl_line(&s->ctl, &code);
        if (r == 0)
            break;
        if (r < 0 || !s->run)
            continue;
        session_drain(s, S_OUT, 1);
        session_drain(s, S_ERR, 1);
        cmd_complete(s->run, code, 0);
        s->run = NULL;
    }
}

void session_on_event(struct ev *ev, uint32_t events)
{
    struct session *s = ev->obj;

    switch (ev->kind) {
    case EV_SESS_IN:
        if (events & (EPOLLERR | EPOLLHUP)) {
            buf_reset(&s->pending);
            session_close_fd(s, S_IN);
        } else {
            session_write(s);
        }
        break;
    case EV_SESS_OUT:
        session_drain(s, S_OUT, 0);
        break;
    case EV_SESS_ERR:
        session_drain(s, S_ERR, 0);
        break;
    case EV_SESS_CTL:
        session_ctl(s);
        break;
    default:
        break;
    }
}

void session_resume(struct cmd *run)
{
    struct session *s;

    for (s = g_sessions; s; s = s->next)
        if (s->run == run)
            break;
    if (!s)
        return;
    if (s->fds[S_OUT] >= 0)
        loop_mod(s->fds[S_OUT], EPOLLIN, &s->evs[S_OUT]);
    if (s->fds[S_ERR] >= 0)
        loop_mod(s->fds[S_ERR], EPOLLIN, &s->evs[S_ERR]);
    session_drain(s, S_OUT, 0);
    session_drain(s, S_ERR, 0);
}

int session_reaped(pid_t pid, int status)
{
    struct session *s;
    int i;

    for (s = g_sessions; s; s = s->next)
        if (s->pid == pid)
            break;
    if (!s)
        return 0;
    /* a status line may still be queued (the shell exited right after printing it) */
    session_ctl(s);
    session_drain(s, S_OUT, 1);
    session_drain(s, S_ERR, 1);
    if (s->run) {
        if (WIFSIGNALED(status))
            cmd_complete(s->run, -1, WTERMSIG(status));
        else
            cmd_complete(s->run, WEXITSTATUS(status), 0);
        s->run = NULL;
    }
    for (i = 0; i < S_NFD; i++)
        session_close_fd(s, i); /* background jobs may hold the pipes: stop listening */
    buf_reset(&s->pending);
    s->pid = 0;
    if (s->deleted)
        session_free(s);
    return 1;
}

/* Validates an optional "cwd": NULL with no error when absent or empty. */
static int session_cwd(struct conn *conn, const struct json *cwd, const char **out)
{
    struct stat st;

    *out = NULL;
    if (!cwd || cwd->type == JSON_NULL)
        return 0;
    if (cwd->type != JSON_STRING || strlen(cwd->str) != cwd->len ||
        (cwd->len && (stat(cwd->str, &st) < 0 || !S_ISDIR(st.st_mode)))) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "cwd is missing or not a directory: %s",
                         cwd->type == JSON_STRING ? cwd->str : "(not a string)");
        return -1;
    }
    *out = cwd->len ? cwd->str : NULL;
    return 0;
}

void session_handle_create(struct conn *conn)
{
    struct json *req = NULL;
    struct session *s = NULL;
    struct buf b = {0};
    const char *cwd = NULL;
    char why[320];
    int i;

    if (conn->reqbody.len) {
        req = json_parse(conn->reqbody.data, conn->reqbody.len);
        if (!req || req->type != JSON_OBJECT) {
            conn_reply_error(conn, 400, "INVALID_REQUEST_BODY",
                             "request body must be a JSON object");
            goto out;
        }
        if (session_cwd(conn, json_get(req, "cwd"), &cwd) < 0)
            goto out;
    }
    if (g_nsessions >= SESSION_MAX) {
        conn_reply_error(conn, 500, "RUNTIME_ERROR", "too many sessions (at most %d)", SESSION_MAX);
        goto out;
    }
    s = calloc(1, sizeof(*s));
    if (!s || (cwd && !(s->cwd = strdup(cwd)))) {
        free(s);
        conn_reply_error(conn, 500, "RUNTIME_ERROR", "out of memory");
        goto out;
    }
    for (i = 0; i < S_NFD; i++)
        s->fds[i] = -1;
    execd_new_id(s->id);
    s->next = g_sessions;
    g_sessions = s;
    g_nsessions++;
    if (session_spawn(s, why, sizeof(why)) < 0) {
        session_free(s);
        conn_reply_error(conn, 500, "RUNTIME_ERROR", "cannot start the session shell: %s", why);
        goto out;
    }
    buf_puts(&b, "{\"session_id\":");
    json_put_cstr(&b, s->id);
    buf_puts(&b, "}");
    conn_reply_json(conn, 200, &b);
out:
    buf_free(&b);
    json_free(req);
}

void session_handle_run(struct conn *conn, const char *id)
{
    struct json *req = NULL, *command, *timeout;
    struct session *s = session_find(id);
    const char *cwd = NULL;
    long long ms = 0;
    char why[320];

    if (!s) {
        conn_reply_error(conn, 404, "RUNTIME_ERROR", "session %s not found", id);
        goto out;
    }
    req = json_parse(conn->reqbody.data ? conn->reqbody.data : "", conn->reqbody.len);
    if (!req || req->type != JSON_OBJECT) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "request body must be a JSON object");
        goto out;
    }
    command = json_get(req, "command");
    timeout = json_get(req, "timeout");
    if (!command || command->type != JSON_STRING || !command->len ||
        strlen(command->str) != command->len) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "command is required");
        goto out;
    }
    if (timeout && timeout->type != JSON_NULL && !json_int(timeout, 1, INT32_MAX, &ms)) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "timeout must be an integer >= 1 (ms)");
        goto out;
    }
    if (session_cwd(conn, json_get(req, "cwd"), &cwd) < 0)
        goto out;
    if (s->run) {
        conn_reply_error(conn, 409, "RUNTIME_ERROR",
                         "session %s is busy: a command is still running", id);
        goto out;
    }
    if (!s->pid && session_spawn(s, why, sizeof(why)) < 0) {
        conn_reply_error(conn, 500, "RUNTIME_ERROR", "cannot start the session shell: %s", why);
        goto out;
    }
    if (shell_session_script(&s->pending, command->str, command->len, cwd) < 0) {
        buf_reset(&s->pending);
        conn_reply_error(conn, 500, "RUNTIME_ERROR", "out of memory");
        goto out;
    }
    s->run = cmd_stream_new(conn, command->str, ms, s->pid);
    if (!s->run) {
        buf_reset(&s->pending);
        goto out;
    }
    session_write(s);
out:
    json_free(req);
}

void session_handle_delete(struct conn *conn, const char *id)
{
    struct session *s = session_find(id);

    if (!s) {
        conn_reply_error(conn, 404, "RUNTIME_ERROR", "session %s not found", id);
        return;
    }
    s->deleted = 1;
    if (s->pid)
        kill(-s->pid, SIGKILL); /* freed when reaped; a run in progress ends "signal: killed" */
    else
        session_free(s);
    conn_reply_empty(conn);
}
