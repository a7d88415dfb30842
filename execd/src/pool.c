/*
 * pool.c: a warm pool member (the server's `pools`), and its claim.
 *
 * A cold sandbox's bootstrap.sh starts the agent in the background and execs the user's
 * entrypoint. A pool member is started before anyone asked for it, so there is no entrypoint yet:
 * bootstrap.sh execs `execd --pool-member` instead, and this file splits that process in two.
 *
 *   pool_member_split()  called first thing in main() (OPENSANDBOX_EXECD_LOG: another log file,
 * tests). Makes a pipe and forks. The child returns and becomes the agent as usual (its output to
 * /tmp/execd.log), keeping the pipe's write end. The parent stays the container's main process (PID
 * 1), blocked reading the pipe until the claim arrives, then execs the entrypoint with the claim's
 * environment: from then on it is exactly what a cold sandbox's main process is (its exit status is
 * the container's). pool_handle_claim()  POST /pool/claim, authenticated with the member's boot
 * token:
 *                        {"token": new token, "entrypoint": [argv...], "env": ["K=V", ...]}.
 *                        Writes argv and env to the pipe and closes it, adds env to the agent's own
 *                        environment (commands see it, as in a cold sandbox), and switches the
 * agent to the new token, so that the boot token is no longer valid. Answered 200 at once, with the
 * monotonic µs at which the connection was accepted, the request handled and the reply made; a
 * second claim is 409.
 *
 * The pipe carries NUL-terminated records: "a<arg>" for each argv element, then "e<K=V>" for each
 * variable. EOF without a record (the agent died) ends the member with status 1.
 *
 * The claim file (OPENSANDBOX_POOL_CLAIM_FILE, Docker: a directory of the server's host mounted
 * read-only into the member). The server may write the claim there instead of POSTing it: the
 * same JSON as the POST's body, written whole (a rename into place). It does so only after this
 * agent proved that it sees the server's directory: at start the agent reads the file `member`
 * next to the claim file (the server wrote the member's id there before it made the container)
 * and answers every GET /ping with it in X-Opensandbox-Pool-Claim-File; a server that does not
 * get its own id back POSTs the claim. The agent takes a written claim
 *   - before it handles any request (pool_check_file, from request_begin in server.c), so a
 *     request that follows the server's answer always finds the claim taken: its token valid,
 *     its env in the commands' environment;
 *   - and on its own as soon as the server, after the write, puts a byte into the FIFO `wake`
 *     next to it (pool_watch_fd, pool_on_watch), so the entrypoint starts without waiting for a
 *     first request. The agent holds the FIFO open for reading and writing, so it never sees a
 *     hang-up, and the server's non-blocking open always finds a reader. (Not inotify: its
 *     instances are limited per user, 128 by default, and every member's agent runs as the
 *     same user.) Without a FIFO it can open, the agent shows no marker.
 * So a claim never waits for the member's agent to be scheduled (on a host busy making
 * containers, its accept or read could come tens of milliseconds late). A claim file that does
 * not parse is logged and left; the member stays unclaimed.
 */
#include "execd.h"
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define POOL_MAX_ARGS 4096
#define POOL_MARKER_MAX 128

static int g_claim_fd = -1; /* the agent's write end of the pipe; -1 when not a member or claimed */
static int g_member;        /* 1 in the agent of a pool member */
static char *g_claim_file;  /* where the server may write the claim (NULL: POST only) */
static char g_marker[POOL_MARKER_MAX]; /* the `member` file's text: "" when none was readable */
static int g_watch_fd = -1;            /* the FIFO `wake`, until claimed */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads everything until EOF into a malloc'd buffer (*len bytes). NULL on a read error. */
static char *read_all(int fd, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap), *nb;

    while (b) {
        ssize_t r;
        if (n == cap) {
            nb = realloc(b, cap * 2);
            if (!nb)
                break;
            b = nb;
            cap *= 2;
        }
        r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        if (r == 0) {
            *len = n;
            return b;
        }
        n += (size_t)r;
    }
    free(b);
    return NULL;
}

/* The main process of a member: waits for the claim, then execs its entrypoint. Never returns. */
static void await_claim(int rfd)
{
    char *argv[POOL_MAX_ARGS + 1];
    size_t len = 0, i = 0;
    int argc = 0;
    char *msg = read_all(rfd, &len);

    close(rfd);
    if (!msg || len == 0) {
        fprintf(stderr, "execd: pool member: the agent ended before a claim\n");
        _exit(1);
    }
    while (i < len) {
        char *rec = msg + i;
        size_t n = strnlen(rec, len - i);
        if (n == len - i)
            break; /* unterminated: ignore the tail */
        if (rec[0] == 'a' && argc < POOL_MAX_ARGS)
            argv[argc++] = rec + 1;
        else if (rec[0] == 'e' && strchr(rec + 1, '='))
            putenv(rec + 1);
        i += n + 1;
    }
    argv[argc] = NULL;
    if (argc == 0) {
        fprintf(stderr, "execd: pool member: the claim has no entrypoint\n");
        _exit(1);
    }
    execvp(argv[0], argv);
    /* as sh's `exec` would: 127 when not found, 126 when found but not executable */
    fprintf(stderr, "execd: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
}

void pool_member_split(void)
{
    int p[2], fd;
    pid_t pid;
    const char *log;

    if (pipe2(p, O_CLOEXEC) < 0) {
        fprintf(stderr, "execd: pool member: pipe: %s\n", strerror(errno));
        _exit(1);
    }
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "execd: pool member: fork: %s\n", strerror(errno));
        _exit(1);
    }
    if (pid > 0) {
        close(p[1]);
        /* what the user's process must never see */
        unsetenv("EXECD_ACCESS_TOKEN");
        unsetenv("OPENSANDBOX_POOL_MEMBER");
        unsetenv("OPENSANDBOX_POOL_CLAIM_FILE");
        await_claim(p[0]);
    }
    close(p[0]);
    g_claim_fd = p[1];
    g_member = 1;
    unsetenv("OPENSANDBOX_POOL_MEMBER");
    log = getenv("OPENSANDBOX_POOL_CLAIM_FILE");
    if (log && *log == '/')
        g_claim_file = strdup(log);
    unsetenv("OPENSANDBOX_POOL_CLAIM_FILE"); /* (commands must not see it) */
    /* the agent's output goes where a cold sandbox's does (bootstrap.sh) */
    log = getenv("OPENSANDBOX_EXECD_LOG"); /* (tests) */
    fd =
        open(log && *log ? log : "/tmp/execd.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        dup2(fd, 0);
        close(fd);
    }
}

/* Appends the record `tag` + s (n bytes, no NUL inside) + NUL; -1 when s holds a NUL. */
static int put_record(struct buf *b, char tag, const char *s, size_t n)
{
    if (memchr(s, '\0', n))
        return -1;
    if (buf_append(b, &tag, 1) < 0 || buf_append(b, s, n) < 0 || buf_append(b, "", 1) < 0)
        return -1;
    return 0;
}

static const char *claim_message(const struct json *j, struct buf *msg)
{
    const struct json *tok = json_get(j, "token"), *ep = json_get(j, "entrypoint");
    const struct json *env = json_get(j, "env"), *e;

    if (!tok || tok->type != JSON_STRING || tok->len == 0 || memchr(tok->str, '\0', tok->len))
        return "token must be a non-empty string";
    if (!ep || ep->type != JSON_ARRAY || !ep->child)
        return "entrypoint must be a non-empty array of strings";
    for (e = ep->child; e; e = e->next)
        if (e->type != JSON_STRING || put_record(msg, 'a', e->str, e->len) < 0)
            return "entrypoint must be a non-empty array of strings";
    if (env && env->type != JSON_ARRAY && env->type != JSON_NULL)
        return "env must be an array of \"K=V\" strings";
    for (e = env && env->type == JSON_ARRAY ? env->child : NULL; e; e = e->next)
        if (e->type != JSON_STRING || !memchr(e->str, '=', e->len) || e->str[0] == '=' ||
            put_record(msg, 'e', e->str, e->len) < 0)
            return "env must be an array of \"K=V\" strings";
    return NULL;
}

static void unwatch(void)
{
    if (g_watch_fd >= 0)
        close(g_watch_fd); /* (closing it takes it out of the epoll set) */
    g_watch_fd = -1;
}

/* Takes the claim `j` (checked into `msg` by claim_message): hands argv and env to the main
 * process, puts env into the agent's environment and switches to the claim's token. 0, or -1 with
 * errno. */
static int apply_claim(const struct json *j, struct buf *msg)
{
    const struct json *env, *e;

    /* the main process is blocked reading: the write completes as it reads */
    if (write_all(g_claim_fd, msg->data, msg->len) < 0)
        return -1;
    close(g_claim_fd);
    g_claim_fd = -1;
    unwatch();
    env = json_get(j, "env");
    for (e = env && env->type == JSON_ARRAY ? env->child : NULL; e; e = e->next) {
        char *kv = strdup(e->str);
        if (kv)
            putenv(kv); /* owned by the environment from now on */
    }
    execd_set_token(json_get(j, "token")->str);
    return 0;
}

/* Reads a small file whole: a malloc'd buffer (*len bytes) or NULL (errno set). */
static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *b;

    if (fd < 0)
        return NULL;
    b = read_all(fd, len);
    close(fd);
    return b;
}

void pool_check_file(void)
{
    size_t len = 0;
    char *text;
    struct json *j;
    struct buf msg = {0};
    const char *bad;

    if (!g_member || g_claim_fd < 0 || !g_claim_file)
        return;
    text = slurp(g_claim_file, &len);
    if (!text) {
        if (errno != ENOENT)
            fprintf(stderr, "execd: pool member: cannot read %s: %s\n", g_claim_file,
                    strerror(errno));
        return;
    }
    j = json_parse(text, len);
    bad = !j || j->type != JSON_OBJECT ? "not a JSON object" : claim_message(j, &msg);
    if (!bad && apply_claim(j, &msg) < 0)
        bad = strerror(errno);
    if (bad)
        fprintf(stderr, "execd: pool member: the claim in %s not taken: %s\n", g_claim_file, bad);
    json_free(j);
    buf_free(&msg);
    free(text);
}

int pool_watch_fd(void)
{
    char *dir, *m;
    size_t len = 0;
    char path[4096];

    if (!g_member || !g_claim_file || g_watch_fd >= 0)
        return g_watch_fd;
    dir = strdup(g_claim_file);
    if (!dir)
        return -1;
    dirname(dir);
    if (strlen(dir) + sizeof("/member") > sizeof(path)) {
        free(dir);
        return -1;
    }
    /* the proof that this is the server's directory: its `member` file */
    snprintf(path, sizeof(path), "%s/member", dir);
    m = slurp(path, &len);
    if (m) {
        while (len > 0 && (m[len - 1] == '\n' || m[len - 1] == '\r'))
            len--;
        /* (it goes into a header of /ping: one line of text) */
        if (len > 0 && len < sizeof(g_marker) && !memchr(m, '\0', len) && !memchr(m, '\n', len) &&
            !memchr(m, '\r', len)) {
            memcpy(g_marker, m, len);
            g_marker[len] = '\0';
        }
        free(m);
    }
    snprintf(path, sizeof(path), "%s/wake", dir);
    free(dir);
    g_watch_fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (g_watch_fd < 0) {
        if (g_marker[0])
            fprintf(stderr, "execd: pool member: cannot open %s: %s\n", path, strerror(errno));
        g_marker[0] = '\0'; /* (without a wake-up the entrypoint would wait for a request: POST) */
    } else {
        struct stat st;
        if (fstat(g_watch_fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
            unwatch();
            g_marker[0] = '\0';
        }
    }
    pool_check_file(); /* (written before the agent started) */
    return g_watch_fd;
}

void pool_on_watch(void)
{
    char b[256];

    while (g_watch_fd >= 0 && read(g_watch_fd, b, sizeof(b)) > 0)
        ;
    pool_check_file();
}

const char *pool_claim_marker(void)
{
    return g_member && g_claim_fd >= 0 && g_marker[0] ? g_marker : NULL;
}

void pool_handle_claim(struct conn *c)
{
    int64_t handled_us = now_us();
    struct json *j;
    struct buf msg = {0};
    char times[128];
    const char *bad;

    if (!g_member) {
        conn_reply_error(c, 404, "UNKNOWN", "this agent is not a pool member");
        return;
    }
    if (g_claim_fd < 0) {
        conn_reply_error(c, 409, "RUNTIME_ERROR", "this pool member has been claimed already");
        return;
    }
    j = json_parse(c->reqbody.data ? c->reqbody.data : "", c->reqbody.len);
    if (!j || j->type != JSON_OBJECT) {
        json_free(j);
        conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "request body must be a JSON object");
        return;
    }
    bad = claim_message(j, &msg);
    if (bad) {
        json_free(j);
        buf_free(&msg);
        conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "%s", bad);
        return;
    }
    if (apply_claim(j, &msg) < 0) {
        int e = errno;
        json_free(j);
        buf_free(&msg);
        conn_reply_error(c, 500, "RUNTIME_ERROR", "cannot hand the entrypoint over: %s",
                         strerror(e));
        return;
    }
    json_free(j);
    buf_free(&msg);
    /* where the claim's time went on this side, on the host's monotonic clock (the server logs
     * them): accepted (the connection), handled (the request read), replied */
    snprintf(times, sizeof(times), "{\"acceptedUs\":%lld,\"handledUs\":%lld,\"repliedUs\":%lld}",
             (long long)c->accepted_us, (long long)handled_us, (long long)now_us());
    conn_reply(c, 200, "application/json", times, strlen(times), NULL);
}
