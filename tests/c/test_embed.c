/*
 * test_embed.c: the C API of libopensandbox (include/opensandbox.h) on the real engine, without
 * Docker (docker.host points nowhere: the server starts and serves its store). Covers: bad
 * configurations and broken modules failing osb_start with a clear message; one engine at a time;
 * configuring after the start refused; a C module, a Lua module and a route module served over HTTP
 * while the test drives the engine from its own poll() loop (osb_fd + osb_step); in-process calls,
 * synchronous and asynchronous (and a synchronous one refused inside the loop); osb_reload;
 * double stop; osb_run returning the code given to core.stop; several engines one after another.
 */
#define _GNU_SOURCE
#include "opensandbox.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef OSB_SOURCE_DIR
#define OSB_SOURCE_DIR "."
#endif

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "test_embed.c:%d: CHECK failed: %s\n", __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static char tmpdir[256];

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        perror("free_port");
        exit(1);
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static void config_text(char *buf, size_t n, int port, const char *extra)
{
    snprintf(buf, n,
             "return { server = { host = '127.0.0.1', port = %d, log_level = 'WARNING' %s },"
             " store = { path = '%s/state/opensandbox.db' },"
             " docker = { host = 'unix:///nonexistent/docker.sock' }, hooks = { dir = false } }",
             port, extra ? extra : "", tmpdir);
}

static osb_engine *engine(int port, const char *extra)
{
    char cfg[2048];
    osb_engine *e = osb_new();
    if (!e) {
        fprintf(stderr, "osb_new failed\n");
        exit(1);
    }
    config_text(cfg, sizeof(cfg), port, extra);
    CHECK(osb_set_root(e, OSB_SOURCE_DIR) == 0);
    CHECK(osb_config_string(e, cfg, "lua") == 0);
    return e;
}

/* ---- an extra C module: counter.bump() -> how many times it was called ---- */

static int bumps;

static int l_bump(lua_State *L)
{
    lua_pushinteger(L, ++bumps);
    return 1;
}

static int open_counter(struct lua_State *L)
{
    static const luaL_Reg fns[] = {{"bump", l_bump}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}

static const char *GREETING_MODULE = "return { text = function(n) return 'hello, ' .. n end }";

/* Each load of the module bumps the counter: a reload shows as loads == 2. */
static const char *ROUTES =
    "local counter = require('counter')\n"
    "local greeting = require('greeting')\n"
    "local loads = counter.bump()\n"
    "return { routes = {\n"
    "  { method = 'GET', path = '/greet/{name}', handler = function(ctx)\n"
    "      return { status = 200, json = { text = greeting.text(ctx.params.name),"
    " loads = loads } } end },\n"
    "} }\n";

/* ---- a tiny HTTP client driven from the same poll() loop as the engine ---- */

static int http_get(osb_engine *e, int port, const char *path, const char *key, char *resp,
                    size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    char req[1024];
    int rl =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s%s%s\r\n",
                 path, key ? "OPEN-SANDBOX-API-KEY: " : "", key ? key : "", key ? "\r\n" : "");
    size_t sent = 0, got = 0;
    for (int rounds = 0; rounds < 20000; rounds++) {
        int timeout = -1;
        if (osb_step(e, &timeout) != 1) {
            close(fd);
            return -1;
        }
        struct pollfd p[2] = {{.fd = osb_fd(e), .events = POLLIN},
                              {.fd = fd, .events = sent < (size_t)rl ? POLLOUT : POLLIN}};
        if (timeout < 0 || timeout > 100)
            timeout = 100;
        poll(p, 2, timeout);
        if (sent < (size_t)rl && (p[1].revents & POLLOUT)) {
            ssize_t w = send(fd, req + sent, (size_t)rl - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
        } else if (p[1].revents & (POLLIN | POLLHUP)) {
            ssize_t r = recv(fd, resp + got, n - 1 - got, 0);
            if (r == 0)
                break;
            if (r > 0)
                got += (size_t)r;
        }
    }
    close(fd);
    resp[got] = '\0';
    return (int)got;
}

/* ---- async completion ---- */

struct async_result {
    osb_engine *e;
    int called;
    int status;
    char body[4096];
    int nested; /* what a synchronous osb_call returned inside the callback */
};

static void on_done(void *ud, int status, const char *body)
{
    struct async_result *r = ud;
    r->called++;
    r->status = status;
    snprintf(r->body, sizeof(r->body), "%s", body ? body : "(null)");
    r->nested = osb_sandbox_list(r->e, NULL, NULL);
}

static void test_bad_input(void)
{
    /* an invalid configuration: osb_start fails with the validation message, exit code 1 */
    osb_engine *e = osb_new();
    CHECK(e != NULL);
    CHECK(osb_new() == NULL); /* one engine at a time */
    CHECK(osb_set_root(e, OSB_SOURCE_DIR) == 0);
    CHECK(osb_config_string(e, "return { server = { port = 'eighty' } }", "lua") == 0);
    CHECK(osb_config_string(e, "x", "yaml") == -1);
    CHECK(strstr(osb_error(e), "\"lua\" or \"toml\"") != NULL);
    CHECK(osb_start(e) == -1);
    CHECK(strstr(osb_error(e), "server.port") != NULL);
    CHECK(osb_exit_code(e) == 1);
    CHECK(osb_fd(e) == -1);
    CHECK(osb_step(e, NULL) == 0);
    CHECK(osb_start(e) == -1); /* not twice */
    osb_free(e);

    /* a syntax error in a config string, a missing config file, TOML text */
    e = osb_new();
    CHECK(e != NULL);
    osb_set_root(e, OSB_SOURCE_DIR);
    osb_config_string(e, "return {", "lua");
    CHECK(osb_start(e) == -1);
    CHECK(strstr(osb_error(e), "(config string)") != NULL);
    osb_free(e);
    e = osb_new();
    osb_set_root(e, OSB_SOURCE_DIR);
    osb_config_file(e, "/nonexistent/config.lua");
    CHECK(osb_start(e) == -1);
    CHECK(strstr(osb_error(e), "cannot open config file /nonexistent/config.lua") != NULL);
    osb_free(e);
    e = osb_new();
    osb_set_root(e, OSB_SOURCE_DIR);
    osb_config_string(e, "[server]\nport = \"x\"\n", "toml");
    CHECK(osb_start(e) == -1);
    CHECK(strstr(osb_error(e), "port") != NULL);
    osb_free(e);

    /* no Lua tree */
    e = osb_new();
    CHECK(osb_set_root(e, "/nonexistent") == 0);
    CHECK(osb_start(e) == -1);
    CHECK(strstr(osb_error(e), "cannot find lua/main.lua") != NULL);
    osb_free(e);

    /* a broken Lua module, a broken route module */
    e = engine(free_port(), NULL);
    CHECK(osb_add_lua_module(e, "broken", "return {") == 0);
    CHECK(osb_start(e) == -1);
    CHECK(strstr(osb_error(e), "extra Lua module") != NULL);
    osb_free(e);
    e = engine(free_port(), NULL);
    CHECK(osb_add_routes(e, "bad.lua", "return { routes = { { method = 'GET' } } }") == 0);
    CHECK(osb_start(e) == -1);
    CHECK(strstr(osb_error(e), "operator routes: bad.lua: route 1") != NULL);
    osb_free(e);

    /* misuse */
    e = engine(free_port(), NULL);
    CHECK(osb_add_module(e, "", open_counter) == -1);
    CHECK(osb_add_module(e, "x", NULL) == -1);
    CHECK(osb_add_routes(e, "x.lua", NULL) == -1);
    CHECK(osb_call(e, "list", NULL, NULL, NULL) == -1); /* not running */
    CHECK(osb_reload(e) == -1);
    osb_stop(e, 0); /* never started: just stopped */
    CHECK(osb_step(e, NULL) == 0);
    osb_free(e);
    osb_free(NULL);
}

static void test_driven(void)
{
    int port = free_port();
    char resp[8192];
    osb_engine *e = engine(port, ", api_key = 'k'");
    CHECK(osb_add_module(e, "counter", open_counter) == 0);
    CHECK(osb_add_lua_module(e, "greeting", GREETING_MODULE) == 0);
    CHECK(osb_add_routes(e, "greet.lua", ROUTES) == 0);
    bumps = 0;
    if (osb_start(e) != 0) {
        fprintf(stderr, "osb_start: %s\n", osb_error(e));
        failures++;
        osb_free(e);
        return;
    }
    CHECK(osb_add_routes(e, "late.lua", ROUTES) == -1); /* configuring after the start */
    CHECK(osb_fd(e) >= 0);

    /* HTTP while the test's own poll() loop drives the engine */
    CHECK(http_get(e, port, "/health", NULL, resp, sizeof(resp)) > 0);
    CHECK(strstr(resp, "200 OK") != NULL && strstr(resp, "{\"status\":\"healthy\"}") != NULL);
    CHECK(http_get(e, port, "/greet/ann", "k", resp, sizeof(resp)) > 0);
    CHECK(strstr(resp, "\"text\":\"hello, ann\"") != NULL);
    CHECK(strstr(resp, "\"loads\":1") != NULL);
    CHECK(strcasestr(resp, "X-Request-ID:") != NULL);
    CHECK(http_get(e, port, "/greet/ann", NULL, resp, sizeof(resp)) > 0);
    CHECK(strstr(resp, "401") != NULL && strstr(resp, "MISSING_API_KEY") != NULL);

    /* in-process calls */
    char *out = NULL;
    CHECK(osb_sandbox_list(e, "pageSize=5", &out) == 200);
    CHECK(out && strstr(out, "\"items\":[]") && strstr(out, "\"pageSize\":5"));
    free(out);
    CHECK(osb_sandbox_get(e, "no-such-sandbox", &out) == 404);
    CHECK(out && strstr(out, "SANDBOX_NOT_FOUND"));
    free(out);
    CHECK(osb_sandbox_create(e, "{\"image\":{}}", &out) == 400);
    CHECK(out && strstr(out, "SANDBOX::INVALID_PARAMETER"));
    free(out);
    CHECK(osb_sandbox_delete(e, "no-such-sandbox", NULL) == 404);
    CHECK(osb_call(e, "launch", "x", NULL, &out) == -1);
    CHECK(out == NULL);
    CHECK(strstr(osb_error(e), "unknown operation 'launch'") != NULL);

    /* asynchronous: the callback runs inside a step; a synchronous call there is refused */
    struct async_result ar = {.e = e};
    CHECK(osb_call_async(e, "list", NULL, NULL, NULL, NULL) == -1);
    CHECK(osb_call_async(e, "list", "state=Running", NULL, on_done, &ar) == 0);
    for (int i = 0; i < 2000 && !ar.called; i++) {
        int t;
        CHECK(osb_step(e, &t) == 1);
        struct pollfd p = {.fd = osb_fd(e), .events = POLLIN};
        poll(&p, 1, t < 0 || t > 10 ? 10 : t);
    }
    CHECK(ar.called == 1 && ar.status == 200 && strstr(ar.body, "\"items\":[]"));
    CHECK(ar.nested == -1);

    /* reload: the route module runs again */
    CHECK(osb_reload(e) == 0);
    for (int i = 0; i < 200 && bumps < 2; i++) {
        int t;
        osb_step(e, &t);
        struct pollfd p = {.fd = osb_fd(e), .events = POLLIN};
        poll(&p, 1, 5);
    }
    CHECK(bumps == 2);
    CHECK(http_get(e, port, "/greet/bob", "k", resp, sizeof(resp)) > 0);
    CHECK(strstr(resp, "\"loads\":2") != NULL);

    /* a pending async call when the engine stops: its callback gets status 0 */
    struct async_result pending = {.e = e};
    CHECK(osb_call_async(e, "list", NULL, NULL, on_done, &pending) == 0);

    /* double stop; the engine drains and stops; the code is the first one given */
    osb_stop(e, 7);
    osb_stop(e, 9);
    int rc = 1;
    for (int i = 0; i < 5000 && rc == 1; i++) {
        int t;
        rc = osb_step(e, &t);
        if (rc == 1) {
            struct pollfd p = {.fd = osb_fd(e), .events = POLLIN};
            poll(&p, 1, t < 0 || t > 10 ? 10 : t);
        }
    }
    CHECK(rc == 0);
    CHECK(osb_exit_code(e) == 7);
    CHECK(osb_fd(e) == -1);
    CHECK(osb_step(e, NULL) == 0);
    osb_stop(e, 3); /* after the stop: nothing */
    CHECK(osb_exit_code(e) == 7);
    CHECK(pending.called == 1 && (pending.status == 0 || pending.status == 200));
    CHECK(osb_sandbox_list(e, NULL, NULL) == -1);
    osb_free(e);
}

static void test_blocking(void)
{
    /* osb_run returns the code given to core.stop by a timer the route module starts */
    osb_engine *e = engine(free_port(), NULL);
    CHECK(
        osb_add_routes(e, "stopper.lua",
                       "require('core.timer').after(0.2, function() require('core').stop(3) end)\n"
                       "return { routes = {} }") == 0);
    CHECK(osb_run(e) == 3);
    CHECK(osb_exit_code(e) == 3);
    osb_free(e);

    /* osb_free on a running engine drains and releases it */
    e = engine(free_port(), NULL);
    CHECK(osb_start(e) == 0);
    char *out = NULL;
    CHECK(osb_sandbox_list(e, NULL, &out) == 200);
    free(out);
    osb_free(e);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

int main(void)
{
    int fds_before = open_fds();
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/osb-embed-test.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    CHECK(strcmp(osb_version(), "") != 0);
    test_bad_input();
    test_driven();
    test_blocking();
    /* engines one after another in one process: the core's state was reset each time */
    for (int i = 0; i < 3; i++) {
        osb_engine *e = engine(free_port(), NULL);
        CHECK(osb_start(e) == 0);
        osb_free(e);
    }
    /* every descriptor the engines opened (epoll, listeners, pipes, the store, curl) is closed */
    CHECK(open_fds() == fds_before);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpdir);
    if (failures) {
        fprintf(stderr, "test_embed: %d checks failed\n", failures);
        return 1;
    }
    printf("test_embed: all checks passed\n");
    return 0;
}
