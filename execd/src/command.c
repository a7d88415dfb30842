/*
 * command.c: running shell commands (POST /command and friends).
 *
 * Each command is a child started with fork/exec as the leader of its own process group, with
 * stdin on /dev/null and stdout/stderr on two pipes whose read ends the loop watches. All of the
 * agent's descriptors are close-on-exec, so the child inherits only 0, 1 and 2. The child resets
 * every signal disposition and unblocks all signals before exec; uid/gid are applied as
 * setgroups, setgid, setuid. Failures between fork and exec are written to a close-on-exec error
 * pipe, which the parent reads (EOF means exec succeeded).
 *
 * Foreground commands stream events on their connection (conn->cmd): init, ping every 3 s, one
 * stdout/stderr event per line, then exactly one terminal event; the response then ends after
 * EXECD_STREAM_LINGER_MS (env, default 0). Upstream's agent lingers 1 s because it polls output
 * files and may still find late lines; ours has drained the pipes to EOF before the terminal
 * event, so a linger would only add a second to every SDK commands.run() round trip. If the client
 * goes away the command keeps running and its output is still read (and dropped). Background
 * commands write their combined output into an in-memory log that GET /command/{id}/logs pages
 * through by byte offset.
 *
 * The exit status is reaped from the SIGCHLD signalfd. At that point the pipes are drained, so
 * output written before exit always precedes the terminal event. Finished commands are kept for
 * status queries (the oldest are dropped beyond CMD_KEEP).
 */
#include "execd.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json.h"

#define CMD_KEEP 256
#define CMD_LOG_MAX (64u * 1024 * 1024)
#define CMD_PING_MS 3000
#define CMD_TERM_GRACE_MS 3000

/* How long a foreground command's response stays open after its terminal event (env, ms). */
static long stream_linger_ms(void)
{
    static long v = -1;
    if (v < 0) {
        const char *e = getenv("EXECD_STREAM_LINGER_MS");
        char *end;
        v = 0;
        if (e && *e) {
            long x = strtol(e, &end, 10);
            if (!*end && x >= 0 && x <= 60000)
                v = x;
        }
    }
    return v;
}

extern char **environ;

struct cmd {
    char id[33];
    char *content;
    pid_t pid;
    int running;
    int background;
    int paused; /* output reading stopped while the client's send buffer is full */
    int status_known;
    int exit_code; /* -1 when killed by a signal */
    int term_sig;
    char *error;
    int fds[2]; /* stdout, stderr read ends, -1 when closed */
    struct ev evs[2];
    struct lines lines[2];
    struct buf log;
    int64_t started_ns, finished_ns;
    int64_t start_ms, deadline_ms, kill_at_ms, next_ping_ms;
    struct conn *conn;   /* streaming foreground client */
    struct conn *waiter; /* DELETE /command waiting for the exit */
    struct cmd *next;
};

static struct cmd *g_cmds;
static int g_ncmds;

/* A fresh 32-hex-digit id (commands, sessions, PTYs): 16 bytes of /dev/urandom, else of the clock.
 */
void execd_new_id(char out[33])
{
    unsigned char r[16];
    static const char hex[] = "0123456789abcdef";
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC), i;

    if (fd < 0 || read(fd, r, sizeof(r)) != (ssize_t)sizeof(r)) {
        int64_t t = wall_ns();
        for (i = 0; i < 16; i++)
            r[i] = (unsigned char)((t >> (i % 8 * 8)) ^ (i * 131) ^ getpid());
    }
    if (fd >= 0)
        close(fd);
    for (i = 0; i < 16; i++) {
        out[i * 2] = hex[r[i] >> 4];
        out[i * 2 + 1] = hex[r[i] & 15];
    }
    out[32] = '\0';
}

/* After a fork whose child reports a failed exec through the close-on-exec pipe `ep`: closes the
 * write end, then reads. 1: the child wrote why (into msg, NUL-terminated) and has been reaped; 0:
 * it exec'd. */
int execd_exec_failed(int ep[2], pid_t pid, char *msg, size_t len)
{
    ssize_t n;
    close(ep[1]);
    ep[1] = -1;
    do {
        n = read(ep[0], msg, len - 1);
    } while (n < 0 && errno == EINTR);
    if (n <= 0)
        return 0;
    msg[n] = '\0';
    int st;
    waitpid(pid, &st, 0);
    return 1;
}

static struct cmd *cmd_find(const char *id)
{
    struct cmd *c;

    for (c = g_cmds; c; c = c->next)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

static void cmd_free(struct cmd *c)
{
    int i;

    for (i = 0; i < 2; i++) {
        if (c->fds[i] >= 0) {
            loop_del(c->fds[i]);
            close(c->fds[i]);
        }
        lines_free(&c->lines[i]);
    }
    buf_free(&c->log);
    free(c->content);
    free(c->error);
    free(c);
}

/* Drops the oldest finished commands beyond CMD_KEEP (never one still attached to a client). */
static void cmd_evict(void)
{
    struct cmd **pp, *c, **victim = NULL;

    while (g_ncmds > CMD_KEEP) {
        victim = NULL;
        for (pp = &g_cmds; *pp; pp = &(*pp)->next) {
            c = *pp;
            if (!c->running && !c->conn && !c->waiter)
                victim = pp; /* list is newest-first: the last match is the oldest */
        }
        if (!victim)
            return;
        c = *victim;
        *victim = c->next;
        cmd_free(c);
        g_ncmds--;
    }
}

/* ---- events -------------------------------------------------------------------------------- */

static void cmd_event(struct cmd *c, const char *type, const char *text, size_t len,
                      const char *tail)
{
    struct buf b = {0};

    if (!c->conn)
        return;
    buf_printf(&b, "{\"type\":\"%s\"", type);
    if (text) {
        buf_puts(&b, ",\"text\":");
        json_put_str(&b, text, len);
    }
    if (tail)
        buf_puts(&b, tail);
    buf_printf(&b, ",\"timestamp\":%lld}\n\n", (long long)wall_ms());
    conn_stream_write(c->conn, b.data, b.len);
    buf_free(&b);
}

struct line_ctx {
    struct cmd *c;
    const char *type;
};

static void cmd_emit_line(void *ud, const char *line, size_t len)
{
    struct line_ctx *lc = ud;

    if (len == 0)
        cmd_event(lc->c, lc->type, "\n", 1, NULL);
    else
        cmd_event(lc->c, lc->type, line, len, NULL);
}

void cmd_output(struct cmd *c, int which, const char *p, size_t n)
{
    struct line_ctx lc = {c, which ? "stderr" : "stdout"};

    if (c->background) {
        if (c->log.len + n <= CMD_LOG_MAX)
            buf_append(&c->log, p, n);
        return;
    }
    lines_feed(&c->lines[which], p, n, cmd_emit_line, &lc);
}

int cmd_should_pause(struct cmd *c)
{
    if (c->conn && c->conn->out.len >= EXECD_OUT_HIGH) {
        c->paused = 1;
        return 1;
    }
    return 0;
}

/* Reads a pipe until EAGAIN (or EOF, which closes it). Unless `force`, stops reading (and
 * watching the pipes) while the client has EXECD_OUT_HIGH bytes unsent: the command then blocks
 * on a full pipe, which bounds the agent's memory whatever the command writes. */
static void cmd_drain(struct cmd *c, int which, int force)
{
    char tmp[65536];

    while (c->fds[which] >= 0) {
        ssize_t n;
        if (!force && cmd_should_pause(c)) {
            int i;
            for (i = 0; i < 2; i++)
                if (c->fds[i] >= 0)
                    loop_mod(c->fds[i], 0, &c->evs[i]);
            return;
        }
        n = read(c->fds[which], tmp, sizeof(tmp));
        if (n > 0) {
            cmd_output(c, which, tmp, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        loop_del(c->fds[which]);
        close(c->fds[which]);
        c->fds[which] = -1;
    }
}

void cmd_resume(struct cmd *c)
{
    int i;

    if (!c->paused || (c->conn && c->conn->out.len >= EXECD_OUT_HIGH / 2))
        return;
    c->paused = 0;
    if (c->fds[0] < 0 && c->fds[1] < 0) {
        session_resume(c);
        return;
    }
    for (i = 0; i < 2; i++)
        if (c->fds[i] >= 0)
            loop_mod(c->fds[i], EPOLLIN, &c->evs[i]);
    for (i = 0; i < 2 && !c->paused; i++)
        cmd_drain(c, i, 0);
}

void cmd_on_pipe(struct ev *ev, uint32_t events)
{
    struct cmd *c = ev->obj;
    int which = ev->kind == EV_CMD_ERR;

    (void)events;
    cmd_drain(c, which, 0);
}

static void cmd_terminal_event(struct cmd *c)
{
    struct buf t = {0};
    char ev[64];

    if (!c->conn)
        return;
    if (c->error) {
        buf_puts(&t, ",\"error\":{\"ename\":\"CommandExecError\",\"evalue\":");
        json_put_cstr(&t, c->error);
        buf_puts(&t, ",\"traceback\":[");
        json_put_cstr(&t, c->error);
        buf_puts(&t, "]}");
        cmd_event(c, "error", NULL, 0, t.data);
    } else if (c->exit_code == 0) {
        snprintf(ev, sizeof(ev), ",\"execution_time\":%lld",
                 (long long)((c->finished_ns - c->started_ns) / 1000000));
        cmd_event(c, "execution_complete", NULL, 0, ev);
    } else if (c->term_sig) {
        const char *why = c->term_sig == SIGKILL   ? "signal: killed"
                          : c->term_sig == SIGTERM ? "signal: terminated"
                                                   : NULL;
        char other[48];
        if (!why) {
            snprintf(other, sizeof(other), "signal: %s", strsignal(c->term_sig));
            why = other;
        }
        buf_puts(&t,
                 ",\"error\":{\"ename\":\"CommandExecError\",\"evalue\":\"-1\",\"traceback\":[");
        json_put_cstr(&t, why);
        buf_puts(&t, "]}");
        cmd_event(c, "error", NULL, 0, t.data);
    } else {
        buf_printf(&t,
                   ",\"error\":{\"ename\":\"CommandExecError\",\"evalue\":\"%d\","
                   "\"traceback\":[\"exit status %d\"]}",
                   c->exit_code, c->exit_code);
        cmd_event(c, "error", NULL, 0, t.data);
    }
    buf_free(&t);
    c->conn->end_at = now_ms() + stream_linger_ms();
}

void cmd_complete(struct cmd *c, int exit_code, int term_sig)
{
    int i;

    for (i = 0; i < 2; i++) {
        struct line_ctx lc = {c, i ? "stderr" : "stdout"};
        lines_flush(&c->lines[i], cmd_emit_line, &lc);
    }
    c->running = 0;
    c->status_known = 1;
    c->finished_ns = wall_ns();
    c->term_sig = term_sig;
    c->exit_code = term_sig ? -1 : exit_code;
    cmd_terminal_event(c);
    if (c->waiter) {
        struct conn *w = c->waiter;
        c->waiter = NULL;
        conn_reply_empty(w);
    }
}

static void cmd_finished(struct cmd *c, int status)
{
    int i;

    for (i = 0; i < 2; i++) {
        cmd_drain(c, i, 1);
        if (c->fds[i] >= 0) {
            /* a grandchild may still hold the pipe: stop listening, the command is over */
            loop_del(c->fds[i]);
            close(c->fds[i]);
            c->fds[i] = -1;
        }
    }
    if (WIFSIGNALED(status))
        cmd_complete(c, -1, WTERMSIG(status));
    else
        cmd_complete(c, WEXITSTATUS(status), 0);
}

void cmd_on_sigchld(void)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        struct cmd *c;

        if (pid <= 0)
            return;
        if (session_reaped(pid, status) || pty_reaped(pid, status))
            continue;
        for (c = g_cmds; c; c = c->next)
            if (c->running && c->pid == pid)
                break;
        if (c)
            cmd_finished(c, status);
    }
}

void cmd_conn_gone(struct conn *conn)
{
    struct cmd *c;

    for (c = g_cmds; c; c = c->next) {
        if (c->conn == conn) {
            c->conn = NULL;
            cmd_resume(c); /* nobody reads the events any more: drain and drop */
        }
        if (c->waiter == conn)
            c->waiter = NULL;
    }
    conn->cmd = NULL;
}

int64_t cmd_tick(int64_t now)
{
    int64_t next = INT64_MAX;
    struct cmd *c;

    cmd_evict();
    for (c = g_cmds; c; c = c->next) {
        if (!c->running)
            continue;
        if (c->deadline_ms && now >= c->deadline_ms) {
            kill(-c->pid, SIGKILL);
            c->deadline_ms = 0;
        }
        if (c->kill_at_ms && now >= c->kill_at_ms) {
            kill(-c->pid, SIGKILL);
            c->kill_at_ms = 0;
        }
        if (c->conn && now >= c->next_ping_ms) {
            cmd_event(c, "ping", "pong", 4, NULL);
            c->next_ping_ms = now + CMD_PING_MS;
        }
        if (c->deadline_ms && c->deadline_ms < next)
            next = c->deadline_ms;
        if (c->kill_at_ms && c->kill_at_ms < next)
            next = c->kill_at_ms;
        if (c->conn && c->next_ping_ms < next)
            next = c->next_ping_ms;
    }
    return next;
}

/* ---- spawning ------------------------------------------------------------------------------ */

/* Finds an executable named `name` on PATH into out. */
static int find_on_path(const char *name, char *out, size_t outsz)
{
    const char *path = getenv("PATH"), *p;

    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (p = path; *p;) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        if (n && (size_t)snprintf(out, outsz, "%.*s/%s", (int)n, p, name) < outsz &&
            access(out, X_OK) == 0)
            return 0;
        p += n;
        if (*p == ':')
            p++;
    }
    return -1;
}

int cmd_find_shell(char *out, size_t n)
{
    if (find_on_path("bash", out, n) == 0)
        return 1;
    if (find_on_path("sh", out, n) < 0)
        snprintf(out, n, "/bin/sh");
    return 0;
}

/* Builds the child's environment: ours (minus the agent token) overlaid with envs. */
static char **cmd_env(const struct json *envs)
{
    size_t n = 0, k = 0, i;
    const struct json *e;
    char **env;

    while (environ[n])
        n++;
    for (e = envs ? envs->child : NULL; e; e = e->next)
        n++;
    env = calloc(n + 1, sizeof(char *));
    if (!env)
        return NULL;
    for (i = 0; environ[i]; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t kl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int overridden = 0;
        if (kl == 18 && strncmp(environ[i], "EXECD_ACCESS_TOKEN", 18) == 0)
            continue;
        for (e = envs ? envs->child : NULL; e; e = e->next)
            if (e->key_len == kl && memcmp(e->key, environ[i], kl) == 0)
                overridden = 1;
        if (!overridden)
            env[k++] = environ[i];
    }
    for (e = envs ? envs->child : NULL; e; e = e->next) {
        struct buf b = {0};
        if (e->type != JSON_STRING || memchr(e->key, '=', e->key_len) || !e->key_len)
            continue;
        buf_append(&b, e->key, e->key_len);
        buf_puts(&b, "=");
        buf_append(&b, e->str, e->len);
        env[k++] = b.data; /* leaked into the forked child only; freed by cmd_env_free */
    }
    env[k] = NULL;
    return env;
}

static void cmd_env_free(char **env)
{
    size_t i;
    int ours = 0;

    for (i = 0; env[i]; i++) {
        size_t j;
        ours = 1;
        for (j = 0; environ[j]; j++)
            if (environ[j] == env[i])
                ours = 0;
        if (ours)
            free(env[i]);
    }
    free(env);
}

static void child_fail(int errfd, const char *what)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));
    if (n > 0 && write(errfd, msg, (size_t)n) < 0)
        _exit(127);
    _exit(127);
}

struct spawn_args {
    const char *shell;
    const char *command;
    const char *cwd;
    char **env;
    int has_uid, has_gid;
    uid_t uid;
    gid_t gid;
};

/* Runs in the forked child: never returns. */
static void child_exec(const struct spawn_args *a, int out, int err, int errfd)
{
    struct sigaction sa;
    sigset_t none;
    int sig, nullfd;
    char *argv[4];

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (sig = 1; sig < 65; sig++)
        sigaction(sig, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setpgid(0, 0);
    nullfd = open("/dev/null", O_RDONLY);
    if (nullfd < 0)
        child_fail(errfd, "open /dev/null");
    if (dup2(nullfd, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        child_fail(errfd, "dup2");
    if (nullfd > 2)
        close(nullfd);
    if (a->cwd && chdir(a->cwd) < 0)
        child_fail(errfd, "chdir");
    if (a->has_uid) {
        gid_t g = a->gid;
        if (setgroups(1, &g) < 0)
            child_fail(errfd, "setgroups");
        if (setgid(g) < 0)
            child_fail(errfd, "setgid");
        if (setuid(a->uid) < 0)
            child_fail(errfd, "setuid");
    }
    argv[0] = (char *)a->shell;
    argv[1] = "-c";
    argv[2] = (char *)a->command;
    argv[3] = NULL;
    execve(a->shell, argv, a->env);
    child_fail(errfd, "exec");
}

/* Starts the command. Returns 0, or -1 with *why set to a malloc'd start error. */
static int cmd_spawn(struct cmd *c, const struct spawn_args *a, char **why)
{
    int out[2] = {-1, -1}, err[2] = {-1, -1}, ep[2] = {-1, -1}, i;
    char msg[512];
    pid_t pid;

    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
        snprintf(msg, sizeof(msg), "pipe: %s", strerror(errno));
        goto fail;
    }
    pid = fork();
    if (pid < 0) {
        snprintf(msg, sizeof(msg), "fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        close(ep[0]);
        child_exec(a, out[1], err[1], ep[1]);
    }
    setpgid(pid, pid); /* also in the parent, so kill(-pid) works at once */
    close(out[1]);
    close(err[1]);
    out[1] = err[1] = -1;
    int failed = execd_exec_failed(ep, pid, msg, sizeof(msg));
    close(ep[0]);
    ep[0] = -1;
    if (failed)
        goto fail;
    c->pid = pid;
    c->running = 1;
    c->fds[0] = out[0];
    c->fds[1] = err[0];
    for (i = 0; i < 2; i++) {
        fcntl(c->fds[i], F_SETFL, fcntl(c->fds[i], F_GETFL) | O_NONBLOCK);
        c->evs[i].kind = i ? EV_CMD_ERR : EV_CMD_OUT;
        c->evs[i].obj = c;
        loop_add(c->fds[i], EPOLLIN, &c->evs[i]);
    }
    return 0;
fail:
    for (i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
        if (ep[i] >= 0)
            close(ep[i]);
    }
    *why = strdup(msg);
    return -1;
}

/* ---- handlers ------------------------------------------------------------------------------ */

void cmd_handle_run(struct conn *conn)
{
    struct json *req = json_parse(conn->reqbody.data ? conn->reqbody.data : "", conn->reqbody.len);
    struct json *command, *cwd, *bg, *timeout, *uid, *gid, *envs;
    struct spawn_args a;
    struct stat st;
    struct passwd *pw;
    struct cmd *c = NULL;
    char shell[4096];
    long long v;
    char *why = NULL;

    memset(&a, 0, sizeof(a));
    if (!req || req->type != JSON_OBJECT) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "request body must be a JSON object");
        goto out;
    }
    command = json_get(req, "command");
    cwd = json_get(req, "cwd");
    bg = json_get(req, "background");
    timeout = json_get(req, "timeout");
    uid = json_get(req, "uid");
    gid = json_get(req, "gid");
    envs = json_get(req, "envs");
    if (!command || command->type != JSON_STRING || !command->len ||
        strlen(command->str) != command->len) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "command is required");
        goto out;
    }
    if (cwd && cwd->type == JSON_NULL)
        cwd = NULL;
    if (cwd && (cwd->type != JSON_STRING ||
                (cwd->len && (stat(cwd->str, &st) < 0 || !S_ISDIR(st.st_mode))))) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "cwd is missing or not a directory: %s",
                         cwd->type == JSON_STRING ? cwd->str : "(not a string)");
        goto out;
    }
    if (timeout && timeout->type != JSON_NULL && !json_int(timeout, 1, INT32_MAX, &v)) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "timeout must be an integer >= 1 (ms)");
        goto out;
    }
    if (uid && uid->type == JSON_NULL)
        uid = NULL;
    if (gid && gid->type == JSON_NULL)
        gid = NULL;
    if (gid && !uid) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "gid requires uid");
        goto out;
    }
    if (uid) {
        if (!json_int(uid, 0, UINT32_MAX - 1, &v)) {
            conn_reply_error(conn, 400, "INVALID_REQUEST_BODY",
                             "uid must be a non-negative integer");
            goto out;
        }
        a.has_uid = 1;
        a.uid = (uid_t)v;
        /* without gid: the user's primary group when it has a passwd entry, else gid = uid */
        pw = getpwuid(a.uid);
        a.gid = pw ? pw->pw_gid : (gid_t)a.uid;
    }
    if (gid) {
        if (!json_int(gid, 0, UINT32_MAX - 1, &v)) {
            conn_reply_error(conn, 400, "INVALID_REQUEST_BODY",
                             "gid must be a non-negative integer");
            goto out;
        }
        a.has_gid = 1;
        a.gid = (gid_t)v;
    }
    if (envs && envs->type != JSON_OBJECT && envs->type != JSON_NULL) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "envs must be an object of strings");
        goto out;
    }
    cmd_find_shell(shell, sizeof(shell));

    c = calloc(1, sizeof(*c));
    if (!c) {
        conn_reply_error(conn, 500, "RUNTIME_ERROR", "out of memory");
        goto out;
    }
    execd_new_id(c->id);
    c->fds[0] = c->fds[1] = -1;
    c->content = strdup(command->str);
    c->background = bg && bg->type == JSON_TRUE;
    c->started_ns = wall_ns();
    c->start_ms = now_ms();
    if (timeout && timeout->type == JSON_NUMBER) {
        json_int(timeout, 1, INT32_MAX, &v);
        c->deadline_ms = c->start_ms + v;
    }
    a.shell = shell;
    a.command = command->str;
    a.cwd = cwd && cwd->len ? cwd->str : NULL;
    a.env = cmd_env(envs && envs->type == JSON_OBJECT ? envs : NULL);
    if (!a.env) {
        free(c->content);
        free(c);
        conn_reply_error(conn, 500, "RUNTIME_ERROR", "out of memory");
        goto out;
    }
    c->next = g_cmds;
    g_cmds = c;
    g_ncmds++;

    /* headers are sent only now, so every validation error above was a JSON 400 */
    conn_stream_begin(conn, 200, "text/event-stream");
    c->conn = conn;
    conn->cmd = c;
    cmd_event(c, "init", c->id, strlen(c->id), NULL);
    if (cmd_spawn(c, &a, &why) < 0) {
        c->error = why;
        c->status_known = 1;
        c->exit_code = -1;
        c->finished_ns = wall_ns();
        cmd_terminal_event(c);
    } else if (c->background) {
        char t[40];
        snprintf(t, sizeof(t), ",\"execution_time\":0");
        cmd_event(c, "execution_complete", NULL, 0, t);
        c->conn = NULL;
        conn->cmd = NULL;
        conn_stream_end(conn);
    } else {
        cmd_event(c, "ping", "pong", 4, NULL);
        c->next_ping_ms = now_ms() + CMD_PING_MS;
    }
    cmd_env_free(a.env);
out:
    json_free(req);
}

struct cmd *cmd_stream_new(struct conn *conn, const char *content, long long timeout_ms, pid_t pid)
{
    struct cmd *c = calloc(1, sizeof(*c));

    if (!c || !(c->content = strdup(content))) {
        free(c);
        conn_reply_error(conn, 500, "RUNTIME_ERROR", "out of memory");
        return NULL;
    }
    execd_new_id(c->id);
    c->fds[0] = c->fds[1] = -1;
    c->pid = pid;
    c->running = 1;
    c->started_ns = wall_ns();
    c->start_ms = now_ms();
    if (timeout_ms > 0)
        c->deadline_ms = c->start_ms + timeout_ms;
    c->next = g_cmds;
    g_cmds = c;
    g_ncmds++;
    conn_stream_begin(conn, 200, "text/event-stream");
    c->conn = conn;
    conn->cmd = c;
    cmd_event(c, "init", c->id, strlen(c->id), NULL);
    cmd_event(c, "ping", "pong", 4, NULL);
    c->next_ping_ms = now_ms() + CMD_PING_MS;
    return c;
}

void cmd_handle_kill(struct conn *conn)
{
    char *id = http_query_get(conn->req.query, "id");
    struct cmd *c;

    if (!id || !*id) {
        conn_reply_error(conn, 400, "MISSING_QUERY", "missing query parameter 'id'");
        goto out;
    }
    c = cmd_find(id);
    if (!c || !c->running) {
        conn_reply_error(conn, 500, "RUNTIME_ERROR", "command %s is not running", id);
        goto out;
    }
    kill(-c->pid, SIGTERM);
    if (!c->kill_at_ms)
        c->kill_at_ms = now_ms() + CMD_TERM_GRACE_MS;
    if (c->waiter)
        conn_reply_empty(conn);
    else
        c->waiter = conn; /* answered when the process group leader exits */
out:
    free(id);
}

void cmd_handle_status(struct conn *conn, const char *id)
{
    struct cmd *c = cmd_find(id);
    struct buf b = {0};
    char ts[48];

    if (!c) {
        conn_reply_error(conn, 404, "RUNTIME_ERROR", "command %s not found", id);
        return;
    }
    buf_puts(&b, "{\"id\":");
    json_put_cstr(&b, c->id);
    buf_puts(&b, ",\"content\":");
    json_put_cstr(&b, c->content);
    buf_printf(&b, ",\"running\":%s", c->running ? "true" : "false");
    if (c->status_known)
        buf_printf(&b, ",\"exit_code\":%d", c->exit_code);
    if (c->error) {
        buf_puts(&b, ",\"error\":");
        json_put_cstr(&b, c->error);
    } else if (c->term_sig) {
        buf_puts(&b, ",\"error\":");
        json_put_cstr(&b, c->term_sig == SIGKILL ? "signal: killed" : "signal: terminated");
    }
    fmt_time_ns(ts, sizeof(ts), c->started_ns);
    buf_printf(&b, ",\"started_at\":\"%s\"", ts);
    if (c->finished_ns) {
        fmt_time_ns(ts, sizeof(ts), c->finished_ns);
        buf_printf(&b, ",\"finished_at\":\"%s\"", ts);
    }
    buf_puts(&b, "}");
    conn_reply_json(conn, 200, &b);
    buf_free(&b);
}

void cmd_handle_logs(struct conn *conn, const char *id)
{
    struct cmd *c = cmd_find(id);
    char *cur = http_query_get(conn->req.query, "cursor"), *end = NULL;
    unsigned long long off = 0;
    char hdr[96];

    if (!c || !c->background) {
        conn_reply_error(conn, 400, "INVALID_REQUEST_BODY",
                         c ? "command %s is not a background command" : "command %s not found", id);
        goto out;
    }
    if (cur && *cur) {
        off = strtoull(cur, &end, 10);
        if (*end || cur[0] == '-') {
            conn_reply_error(conn, 400, "INVALID_REQUEST_BODY", "cursor must be an integer >= 0");
            goto out;
        }
    }
    if (off > c->log.len)
        off = c->log.len;
    snprintf(hdr, sizeof(hdr), "EXECD-COMMANDS-TAIL-CURSOR: %zu\r\n", c->log.len);
    conn_reply(conn, 200, "text/plain; charset=utf-8", c->log.data ? c->log.data + off : "",
               c->log.len - off, hdr);
out:
    free(cur);
}
