/*
 * lcore.c: the `core` root module (clocks, stop, signals, paths) and `core.spawn`.
 *
 * Signals: TERM, INT and HUP are caught by a handler that writes the signal's number into a pipe
 * watched by the loop (the self-pipe pattern). Each delivery runs the Lua functions registered with
 * core.on_signal(name, fn) in new tasks; TERM and INT then start the drain (httpd_drain), which
 * stops the loop when in-flight requests are done or the drain timeout passes.
 * Not a signalfd: that needs the signals blocked, and a blocked mask (like an ignored disposition)
 * is inherited by every process the server or a test scenario starts (popen, os.execute): such a
 * child never died of SIGTERM, and test backends outlived their tests. Handlers are reset to the
 * default at exec, so children start clean. SIGPIPE gets an empty handler rather than SIG_IGN for
 * the same reason (writes still fail with EPIPE instead of killing the server).
 */
#define _GNU_SOURCE
#include "httpd.h"
#include "log.h"
#include "loop.h"
#include "server.h"
#include "task.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <malloc.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <dirent.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef OSB_VERSION
#define OSB_VERSION "0.1.0"
#endif

struct server_paths server_paths;

static int argc_saved;
static char **argv_saved;
static loop_watch sig_watch = {.fd = -1};
static int sig_pipe_w = -1; /* the write end of the self-pipe; the read end is sig_watch.fd */
static int shutting_down;

void server_set_argv(int argc, char **argv)
{
    argc_saved = argc;
    argv_saved = argv;
}

void server_shutdown(int code)
{
    if (shutting_down)
        return;
    shutting_down = 1;
    httpd_drain(code);
}

void server_run_signal(const char *name)
{
    lua_State *L = task_main_state();
    lua_getfield(L, LUA_REGISTRYINDEX, "core.signals");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, -1, name);
    if (lua_istable(L, -1)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            task_spawn(L, 0, "signal", NULL, NULL);
        }
    }
    lua_pop(L, 2);
}

static void on_signal_pipe(loop_watch *w, uint32_t events)
{
    unsigned char signo[32];
    ssize_t n;
    (void)events;
    while ((n = read(w->fd, signo, sizeof(signo))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            const char *name = signo[i] == SIGHUP ? "HUP" : signo[i] == SIGTERM ? "TERM" : "INT";
            log_write(LOG_INFO, NULL, "signal received", "signal", name, NULL);
            server_run_signal(name);
            if (signo[i] != SIGHUP)
                server_shutdown(0);
        }
    }
}

/* Async-signal-safe: one write of one byte (a full pipe drops it: a burst of the same signal is
 * one). */
static void catch_signal(int signo)
{
    int saved = errno;
    unsigned char b = (unsigned char)signo;
    if (sig_pipe_w >= 0)
        (void)!write(sig_pipe_w, &b, 1);
    errno = saved;
}

static void ignore_signal(int signo)
{
    (void)signo;
}

static int set_handler(int signo, void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    return sigaction(signo, &sa, NULL);
}

int server_signals_init(void)
{
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno;
    sig_watch.fd = fds[0];
    sig_pipe_w = fds[1];
    if (set_handler(SIGTERM, catch_signal) < 0 || set_handler(SIGINT, catch_signal) < 0 ||
        set_handler(SIGHUP, catch_signal) < 0 || set_handler(SIGPIPE, ignore_signal) < 0)
        return -errno;
    /* a parent that had them blocked (an older server, a shell) handed its mask down: undo it */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGPIPE);
    if (sigprocmask(SIG_UNBLOCK, &set, NULL) < 0)
        return -errno;
    sig_watch.events = EPOLLIN;
    sig_watch.cb = on_signal_pipe;
    return loop_watch_add(&sig_watch);
}

int server_sigpipe_init(void)
{
    struct sigaction cur;
    if (sigaction(SIGPIPE, NULL, &cur) < 0)
        return -errno;
    if (cur.sa_handler == SIG_DFL && set_handler(SIGPIPE, ignore_signal) < 0)
        return -errno;
    return 0;
}

void server_signals_free(void)
{
    if (sig_pipe_w >= 0) { /* only ours: an embedding program keeps its own handlers */
        set_handler(SIGTERM, SIG_DFL);
        set_handler(SIGINT, SIG_DFL);
        set_handler(SIGHUP, SIG_DFL);
    }
    if (sig_watch.fd >= 0)
        close(sig_watch.fd);
    if (sig_pipe_w >= 0)
        close(sig_pipe_w);
    sig_watch.fd = -1;
    sig_pipe_w = -1;
    shutting_down = 0;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, loop_wall_time());
    return 1;
}

static int l_monotonic(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)loop_now_ns() / 1e9);
    return 1;
}

/* core.free_tcp_port(host): a port the kernel hands out for bind(host:0), released again at once.
 */
static int l_free_tcp_port(lua_State *L)
{
    const char *host = luaL_optstring(L, 1, "0.0.0.0");
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return luaL_argerror(L, 1, "expected an IPv4 address");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        lua_pushnil(L);
        lua_pushstring(L, strerror(e));
        return 2;
    }
    close(fd);
    lua_pushinteger(L, ntohs(sa.sin_port));
    return 1;
}

/* core.mkdirs(path, mode): mkdir -p with `mode` for every directory it creates; true or nil, err.
 */
static int l_mkdirs(lua_State *L)
{
    size_t n;
    const char *path = luaL_checklstring(L, 1, &n);
    mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
    char buf[PATH_MAX_OSB];
    if (n == 0 || n >= sizeof(buf))
        return luaL_argerror(L, 1, "empty or too long");
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST) {
            lua_pushnil(L);
            lua_pushfstring(L, "%s: %s", buf, strerror(errno));
            return 2;
        }
        buf[i] = c;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* What a call on `path` that returned `rc` (-1: failed, errno set) gives Lua: true, or nil, "path:
 * error". */
static int path_result(lua_State *L, const char *path, int rc)
{
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.chmod(path, mode): chmod(2); true or nil, err. (The process runs with umask 077: a file or
 * directory that others must read, such as a pool member's claim directory seen by a container's
 * non-root user, is opened up explicitly; lua-filesystem has no chmod.) */
static int l_chmod(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    mode_t mode = (mode_t)luaL_checkinteger(L, 2);
    return path_result(L, path, chmod(path, mode));
}

/* core.mkfifo(path, mode): mkfifo(3) then chmod to `mode` exactly (the umask is 077); true or nil,
 * err. (lua-filesystem has neither.) */
static int l_mkfifo(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    mode_t mode = (mode_t)luaL_checkinteger(L, 2);
    return path_result(L, path, mkfifo(path, mode) < 0 ? -1 : chmod(path, mode));
}

/* core.poke(path): one byte into the FIFO at `path`, never blocking (a pool member's wake-up,
 * runtimes/docker/pool_claims.lua); true, or nil, err ("no reader" when nobody has it open, "full"
 * when its reader has not read for 64 KiB). A path that is not a FIFO (or a symlink) is refused. */
static int l_poke(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    int e = errno;
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode))) {
        close(fd);
        fd = -1;
        e = EINVAL;
    }
    if (fd >= 0) {
        ssize_t n = write(fd, "1", 1);
        e = errno;
        close(fd);
        if (n == 1) {
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path,
                    e == ENXIO    ? "no reader"
                    : e == EAGAIN ? "full (its reader does not read)"
                    : e == EINVAL ? "not a FIFO"
                                  : strerror(e));
    return 2;
}

/* core.process_stats() -> { rss_bytes =, open_fds = }: this process's resident memory (from
 * /proc/self/statm) and open file descriptors (entries of /proc/self/fd, less the one reading it).
 * A value that cannot be read is absent. */
static int l_process_stats(lua_State *L)
{
    lua_createtable(L, 0, 2);
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        unsigned long size, resident;
        if (fscanf(f, "%lu %lu", &size, &resident) == 2) {
            lua_pushinteger(L, (lua_Integer)resident * (lua_Integer)sysconf(_SC_PAGESIZE));
            lua_setfield(L, -2, "rss_bytes");
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        lua_Integer n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        lua_pushinteger(L, n > 0 ? n - 1 : 0);
        lua_setfield(L, -2, "open_fds");
    }
    return 1;
}

/* core.set_nice(n): the scheduling priority (nice value, -20..19) of the calling thread, which
 * threads made afterwards inherit (on Linux setpriority(PRIO_PROCESS, 0) is per thread), so
 * main.lua calls it before the store's flush thread exists. Returns true, or nil and the reason (a
 * raise needs CAP_SYS_NICE). */
static int l_set_nice(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= -20 && n <= 19, 1, "a nice value is -20..19");
    if (setpriority(PRIO_PROCESS, 0, (int)n) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.json_elements(text): the texts of the elements of the JSON array `text`, as an array of
 * strings, each to be decoded on its own (lua-cjson); nil, err when `text` is not one array. Only
 * the element boundaries are found here (strings with their escapes, nesting): whether an element
 * is valid JSON is for its decoder to say. Written here because lua-cjson decodes a document whole,
 * in one C call: a container list of thousands (megabytes) held the event loop for tens of ms, and
 * split, it is decoded a part at a time with the loop turning in between (docker/engine.lua). */
static int l_json_elements(lua_State *L)
{
    size_t n, i = 0;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_Integer count = 0;

    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t'))
        i++;
    if (i >= n || s[i] != '[') {
        lua_pushnil(L);
        lua_pushstring(L, "not a JSON array");
        return 2;
    }
    i++;
    lua_newtable(L);
    for (;;) {
        while (i < n &&
               (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t' || s[i] == ','))
            i++;
        if (i >= n)
            break;
        if (s[i] == ']')
            return 1;
        size_t start = i;
        int depth = 0, in_str = 0;
        for (; i < n; i++) {
            char c = s[i];
            if (in_str) {
                if (c == '\\')
                    i++; /* the escaped character, whatever it is */
                else if (c == '"')
                    in_str = 0;
            } else if (c == '"') {
                in_str = 1;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (depth == 0)
                    break; /* the array's own end, after a scalar element */
                depth--;
                if (depth == 0) {
                    i++;
                    break;
                }
            } else if (c == ',' && depth == 0) {
                break; /* the end of a scalar element */
            }
        }
        if (in_str || depth != 0 || i > n)
            break;
        size_t end = i;
        while (end > start && (s[end - 1] == ' ' || s[end - 1] == '\n' || s[end - 1] == '\r' ||
                               s[end - 1] == '\t'))
            end--;
        if (end > start) {
            lua_pushlstring(L, s + start, end - start);
            lua_rawseti(L, -2, ++count);
        }
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_pushstring(L, "the JSON array is cut short");
    return 2;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

/* core.trim_memory(): hands freed heap memory back to the system (glibc's malloc_trim). A burst
 * (hundreds of sandboxes provisioning at once, each with its own transfer and decoded objects)
 * frees its memory afterwards, but glibc keeps most of it mapped, so the process's RSS stayed at
 * the burst's peak; the service calls this after each sweep. Returns true when memory was released.
 */
static int l_trim_memory(lua_State *L)
{
    lua_pushboolean(L, malloc_trim(0));
    return 1;
}

/* core.kill(pid, "HUP"|"TERM"|"INT"|0): sends a signal; returns true or nil, err. */
static int l_kill(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    const char *name = luaL_optstring(L, 2, "TERM");
    int sig = strcmp(name, "HUP") == 0    ? SIGHUP
              : strcmp(name, "TERM") == 0 ? SIGTERM
              : strcmp(name, "INT") == 0  ? SIGINT
              : strcmp(name, "0") == 0    ? 0
                                          : -1;
    if (sig < 0)
        return luaL_argerror(L, 2, "expected HUP, TERM, INT or 0");
    if (pid <= 0)
        return luaL_argerror(L, 1, "expected a positive pid");
    if (kill((pid_t)pid, sig) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_stop(lua_State *L)
{
    server_shutdown((int)luaL_optinteger(L, 1, 0));
    return 0;
}

static int l_on_signal(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (strcmp(name, "HUP") && strcmp(name, "TERM") && strcmp(name, "INT"))
        return luaL_argerror(L, 1, "expected \"HUP\", \"TERM\" or \"INT\"");
    if (lua_getfield(L, LUA_REGISTRYINDEX, "core.signals") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "core.signals");
    }
    if (lua_getfield(L, -1, name) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

/* core.hmac_sha256(key, msg) -> 64 lowercase hex characters. OpenSSL's libcrypto (Debian
 * libssl-dev), not a hand-written hash: the server proxy derives its per-sandbox capability with
 * it. */
static int l_hmac_sha256(lua_State *L)
{
    size_t klen, mlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *msg = luaL_checklstring(L, 2, &mlen);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    static const char hexd[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, md, &mdlen))
        return luaL_error(L, "hmac_sha256: libcrypto failed");
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = hexd[md[i] >> 4];
        out[2 * i + 1] = hexd[md[i] & 15];
    }
    lua_pushlstring(L, out, 2 * (size_t)mdlen);
    return 1;
}

int luaopen_core(lua_State *L)
{
    static const luaL_Reg fns[] = {{"now", l_now},
                                   {"monotonic", l_monotonic},
                                   {"stop", l_stop},
                                   {"free_tcp_port", l_free_tcp_port},
                                   {"getpid", l_getpid},
                                   {"set_nice", l_set_nice},
                                   {"process_stats", l_process_stats},
                                   {"mkdirs", l_mkdirs},
                                   {"chmod", l_chmod},
                                   {"mkfifo", l_mkfifo},
                                   {"poke", l_poke},
                                   {"kill", l_kill},
                                   {"trim_memory", l_trim_memory},
                                   {"json_elements", l_json_elements},
                                   {"on_signal", l_on_signal},
                                   {"hmac_sha256", l_hmac_sha256},
                                   {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_pushstring(L, OSB_VERSION);
    lua_setfield(L, -2, "version");
    lua_createtable(L, argc_saved, 0);
    for (int i = 1; i < argc_saved; i++) {
        lua_pushstring(L, argv_saved[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setfield(L, -2, "argv");
    lua_createtable(L, 0, 3);
    lua_pushstring(L, server_paths.exe);
    lua_setfield(L, -2, "exe");
    lua_pushstring(L, server_paths.root);
    lua_setfield(L, -2, "root");
    lua_pushstring(L, server_paths.lua);
    lua_setfield(L, -2, "lua");
    lua_setfield(L, -2, "paths");
    return 1;
}

/* core.spawn(fn, ...): the module value is this function. */
static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    task_spawn(L, lua_gettop(L) - 1, "spawn", NULL, NULL);
    return 0;
}

int luaopen_core_spawn(lua_State *L)
{
    lua_pushcfunction(L, l_spawn);
    return 1;
}
