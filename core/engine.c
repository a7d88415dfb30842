/*
 * engine.c: the engine as a library (include/opensandbox.h). One engine is a Lua state with the
 * core modules preloaded and package.path pointing at the Lua tree, the boot script (lua/main.lua)
 * run as the first task, and the loop. opensandbox-server's main() is a thin user of this API; the
 * C test runner uses engine_run() with test scenarios.
 *
 * The boot script learns what the host asked for through `core.embed` (config text, extra routes)
 * and hands back what the host calls: the in-process dispatcher (embed.serve) and a failure message
 * (embed.fail). The core keeps process-wide state (loop, HTTP daemon, HTTP client), hence one
 * engine at a time; teardown resets it so that another can follow.
 */
#define _GNU_SOURCE
#include "engine.h"

#include "httpd.h"
#include "log.h"
#include "loop.h"
#include "opensandbox.h"
#include "server.h"
#include "task.h"

#include <lauxlib.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef OSB_VERSION
#define OSB_VERSION "0.1.0"
#endif
#ifndef OSB_DATADIR
#define OSB_DATADIR "/usr/local/share/opensandbox"
#endif

void client_free(void);
int luaopen_core_log(lua_State *L);

enum { ST_NEW, ST_BOOTING, ST_RUNNING, ST_STOPPED };

struct module {
    char *name;
    osb_lua_open open; /* or */
    char *source;
};

struct routes {
    char *name;
    char *source;
};

/* One in-process call. Heap-allocated: a caller that gives up (the engine stopped) leaves it to the
 * task's completion, which frees it. */
struct call {
    osb_engine *e;
    osb_done_cb done; /* async; NULL for a synchronous call */
    void *ud;
    int finished;
    int abandoned;
    int status;
    char *body;
};

struct osb_engine {
    int state;
    char error[2048];
    char root[PATH_MAX_OSB];
    char *config_path, *config_text, *config_format;
    int argc;
    char **argv;
    int signals;
    struct module *mods;
    int nmods;
    struct routes *routes;
    int nroutes;
    lua_State *L;
    const char *script; /* the boot script; NULL: <root>/lua/main.lua */
    int boot_finished, boot_failed;
    int exit_code;
    int dispatch_ref;
    int stepping; /* inside loop_step: a synchronous call would nest the loop */
    int tearing_down;
    int c_failed; /* the boot failed before the boot script ran (nothing was printed) */
};

static osb_engine *current;

__attribute__((format(printf, 2, 3))) static void set_error(osb_engine *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->error, sizeof(e->error), fmt, ap);
    va_end(ap);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

const char *osb_version(void)
{
    return OSB_VERSION;
}

osb_engine *osb_new(void)
{
    if (current)
        return NULL;
    osb_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->dispatch_ref = LUA_NOREF;
    current = e;
    return e;
}

const char *osb_error(const osb_engine *e)
{
    return e ? e->error : "no engine";
}

static int configurable(osb_engine *e)
{
    if (!e)
        return 0;
    if (e->state != ST_NEW) {
        set_error(e, "the engine is already started");
        return 0;
    }
    return 1;
}

int osb_set_root(osb_engine *e, const char *dir)
{
    if (!configurable(e))
        return -1;
    if (!dir || strlen(dir) >= sizeof(e->root)) {
        set_error(e, "osb_set_root: missing or too long directory");
        return -1;
    }
    snprintf(e->root, sizeof(e->root), "%s", dir);
    return 0;
}

int osb_config_file(osb_engine *e, const char *path)
{
    if (!configurable(e))
        return -1;
    if (!path || !*path) {
        set_error(e, "osb_config_file: empty path");
        return -1;
    }
    free(e->config_path);
    free(e->config_text);
    free(e->config_format);
    e->config_text = e->config_format = NULL;
    e->config_path = strdup(path);
    return e->config_path ? 0 : -1;
}

int osb_config_string(osb_engine *e, const char *text, const char *format)
{
    if (!configurable(e))
        return -1;
    if (!text || !format || (strcmp(format, "lua") && strcmp(format, "toml"))) {
        set_error(e, "osb_config_string: text and a format \"lua\" or \"toml\" are required");
        return -1;
    }
    free(e->config_path);
    free(e->config_text);
    free(e->config_format);
    e->config_path = NULL;
    e->config_text = strdup(text);
    e->config_format = strdup(format);
    return e->config_text && e->config_format ? 0 : -1;
}

static void free_args(osb_engine *e)
{
    for (int i = 0; i < e->argc; i++)
        free(e->argv[i]);
    free(e->argv);
    e->argv = NULL;
    e->argc = 0;
}

int osb_set_args(osb_engine *e, int argc, char **argv)
{
    if (!configurable(e))
        return -1;
    if (argc < 0 || (argc > 0 && !argv)) {
        set_error(e, "osb_set_args: bad arguments");
        return -1;
    }
    free_args(e);
    e->argv = calloc((size_t)argc + 1, sizeof(char *));
    if (!e->argv)
        return -1;
    for (int i = 0; i < argc; i++) {
        e->argv[i] = strdup(argv[i] ? argv[i] : "");
        if (!e->argv[i])
            return -1;
        e->argc = i + 1;
    }
    return 0;
}

int osb_set_signals(osb_engine *e, int on)
{
    if (!configurable(e))
        return -1;
    e->signals = on != 0;
    return 0;
}

static int valid_name(osb_engine *e, const char *what, const char *name)
{
    if (!name || !*name || strlen(name) > 255) {
        set_error(e, "%s: a name of 1 to 255 characters is required", what);
        return 0;
    }
    return 1;
}

static int add_module(osb_engine *e, const char *name, osb_lua_open open, const char *source)
{
    struct module *m = realloc(e->mods, ((size_t)e->nmods + 1) * sizeof(*m));
    if (!m)
        return -1;
    e->mods = m;
    m = &e->mods[e->nmods];
    m->name = strdup(name);
    m->open = open;
    m->source = dup_or_null(source);
    if (!m->name || (source && !m->source)) {
        free(m->name);
        free(m->source);
        return -1;
    }
    e->nmods++;
    return 0;
}

int osb_add_module(osb_engine *e, const char *name, osb_lua_open open)
{
    if (!configurable(e) || !valid_name(e, "osb_add_module", name))
        return -1;
    if (!open) {
        set_error(e, "osb_add_module: an opener function is required");
        return -1;
    }
    return add_module(e, name, open, NULL);
}

int osb_add_lua_module(osb_engine *e, const char *name, const char *source)
{
    if (!configurable(e) || !valid_name(e, "osb_add_lua_module", name))
        return -1;
    if (!source) {
        set_error(e, "osb_add_lua_module: source text is required");
        return -1;
    }
    return add_module(e, name, NULL, source);
}

int osb_add_routes(osb_engine *e, const char *name, const char *source)
{
    if (!configurable(e) || !valid_name(e, "osb_add_routes", name))
        return -1;
    if (!source) {
        set_error(e, "osb_add_routes: source text is required");
        return -1;
    }
    struct routes *r = realloc(e->routes, ((size_t)e->nroutes + 1) * sizeof(*r));
    if (!r)
        return -1;
    e->routes = r;
    r = &e->routes[e->nroutes];
    r->name = strdup(name);
    r->source = strdup(source);
    if (!r->name || !r->source) {
        free(r->name);
        free(r->source);
        return -1;
    }
    e->nroutes++;
    return 0;
}

/* ---- finding the Lua tree ---- */

static int has_main_lua(const char *dir)
{
    char p[PATH_MAX_OSB + 32];
    snprintf(p, sizeof(p), "%s/lua/main.lua", dir);
    return access(p, R_OK) == 0;
}

static int use_root(const char *dir)
{
    char real[PATH_MAX];
    if (!has_main_lua(dir))
        return -1;
    if (!realpath(dir, real))
        snprintf(real, sizeof(real), "%s", dir);
    snprintf(server_paths.root, sizeof(server_paths.root), "%s", real);
    snprintf(server_paths.lua, sizeof(server_paths.lua), "%s/lua", real);
    return 0;
}

/* <dir>/, <dir>/.., <dir>/../share/opensandbox and <dir>/../../share/opensandbox (a library in
 * lib/<multiarch>/) */
static int root_near(const char *file)
{
    char buf[PATH_MAX], cand[PATH_MAX + 64];
    snprintf(buf, sizeof(buf), "%s", file);
    char *d = dirname(buf);
    static const char *const rel[] = {"", "/..", "/../share/opensandbox",
                                      "/../../share/opensandbox"};
    for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
        snprintf(cand, sizeof(cand), "%s%s", d, rel[i]);
        if (use_root(cand) == 0)
            return 0;
    }
    return -1;
}

static int find_root(osb_engine *e)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0) {
        const char *a0 = e->argc > 0 ? e->argv[0] : "";
        if (!realpath(a0, exe))
            snprintf(exe, sizeof(exe), "%s", a0);
    } else {
        exe[n] = '\0';
    }
    snprintf(server_paths.exe, sizeof(server_paths.exe), "%s", exe);
    if (e->root[0])
        return use_root(e->root);
    const char *env = getenv("OPENSANDBOX_ROOT");
    if (env && *env)
        return use_root(env);
    if (root_near(exe) == 0)
        return 0;
    /* next to the shared library this code is in (an install prefix other than the configured one)
     */
    Dl_info info;
    if (dladdr((void *)osb_new, &info) && info.dli_fname && root_near(info.dli_fname) == 0)
        return 0;
    return use_root(OSB_DATADIR);
}

/* ---- the Lua state ---- */

static void preload(lua_State *L, const char *name, lua_CFunction f)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, f);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

static void set_paths(lua_State *L)
{
    luaL_Buffer b;
    lua_getglobal(L, "package");
    luaL_buffinit(L, &b);
    luaL_addstring(&b, server_paths.lua);
    luaL_addstring(&b, "/?.lua;");
    luaL_addstring(&b, server_paths.lua);
    luaL_addstring(&b, "/?/init.lua;");
    lua_getfield(L, -2, "path");
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
}

/* An error outside any protected call (what luaL_newstate's own panic function also does). */
static int on_panic(lua_State *L)
{
    const char *msg =
        lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error object is not a string";
    fprintf(stderr, "opensandbox-server: PANIC: unprotected error in call to Lua API (%s)\n", msg);
    return 0; /* then Lua aborts */
}

/* core.embed.info() -> { embedded =, own_process =, config_text =, config_format =, routes =
 * {{name=, source=}...} }
 */
static int l_embed_info(lua_State *L)
{
    osb_engine *e = current;
    lua_createtable(L, 0, 4);
    if (!e)
        return 1;
    lua_pushboolean(L, e->script == NULL);
    lua_setfield(L, -2, "embedded");
    lua_pushboolean(
        L, e->signals); /* the process is the engine's own (the binary), not a host program's */
    lua_setfield(L, -2, "own_process");
    if (e->config_text) {
        lua_pushstring(L, e->config_text);
        lua_setfield(L, -2, "config_text");
        lua_pushstring(L, e->config_format);
        lua_setfield(L, -2, "config_format");
    }
    lua_createtable(L, e->nroutes, 0);
    for (int i = 0; i < e->nroutes; i++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, e->routes[i].name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, e->routes[i].source);
        lua_setfield(L, -2, "source");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "routes");
    return 1;
}

/* core.embed.fail(msg): why the boot failed, for osb_error. */
static int l_embed_fail(lua_State *L)
{
    const char *msg = luaL_checkstring(L, 1);
    if (current)
        set_error(current, "%s", msg);
    return 0;
}

/* core.embed.serve(fn): fn(op, arg, body) -> status, body serves osb_call. */
static int l_embed_serve(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (!current)
        return 0;
    luaL_unref(L, LUA_REGISTRYINDEX, current->dispatch_ref);
    lua_pushvalue(L, 1);
    current->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int luaopen_core_embed(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"info", l_embed_info}, {"fail", l_embed_fail}, {"serve", l_embed_serve}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}

static void boot_done(task *t, int status, int nres)
{
    (void)t;
    (void)nres;
    osb_engine *e = current;
    if (!e)
        return;
    e->boot_finished = 1;
    if (status != LUA_OK) {
        e->boot_failed = 1;
        if (!e->error[0])
            set_error(e, "%s", "the boot script raised an error (see the log)");
        server_shutdown(1);
    }
}

/* Everything the engine holds, released; the core's process-wide state is reset. */
static void teardown(osb_engine *e)
{
    if (!e->L)
        return;
    e->tearing_down = 1;
    httpd_free();
    task_shutdown(); /* cancels waits (client transfers and in-process calls) before the client goes
                      */
    client_free();
    lua_close(e->L);
    e->L = NULL;
    e->dispatch_ref = LUA_NOREF;
    loop_free();
    server_signals_free();
    e->tearing_down = 0;
}

static void stopped(osb_engine *e)
{
    int code = loop_exit_code();
    if (e->boot_failed && code == 0)
        code = 1;
    e->exit_code = code;
    e->state = ST_STOPPED;
    teardown(e);
}

/* One turn of the loop; marks the engine stopped (and releases it) once the loop has stopped. */
static int step(osb_engine *e, int64_t max_wait_ns)
{
    e->stepping++;
    int done = loop_step(max_wait_ns);
    e->stepping--;
    if (done && e->state != ST_STOPPED)
        stopped(e);
    return done;
}

/* core.argv (copied into the `core` module when the boot script requires it): the program name,
 * --config PATH, then the host's own arguments. */
static void set_argv(osb_engine *e)
{
    static char *argv[2048 + 4];
    int argc = 0;
    argv[argc++] = e->argc > 0 ? e->argv[0] : "libopensandbox";
    if (e->config_path) {
        argv[argc++] = "--config";
        argv[argc++] = e->config_path;
    }
    for (int i = 1; i < e->argc && argc < 2048; i++)
        argv[argc++] = e->argv[i];
    argv[argc] = NULL;
    server_set_argv(argc, argv);
}

static int boot(osb_engine *e)
{
    if (!e->script && find_root(e) < 0) {
        set_error(
            e,
            "cannot find lua/main.lua (set OPENSANDBOX_ROOT or call osb_set_root); tried from %s",
            server_paths.exe);
        return -1;
    }
    if (!e->script)
        set_argv(e);
    if (loop_init() < 0) {
        set_error(e, "cannot set up the event loop");
        loop_free();
        return -1;
    }
    if (e->signals ? server_signals_init() < 0 : server_sigpipe_init() < 0) {
        set_error(e, "cannot set up the signal handlers");
        loop_free();
        server_signals_free();
        return -1;
    }
    /* The allocator counts and refuses while an operator hook runs (core/hookguard.c). */
    lua_State *L = lua_newstate(hookguard_alloc, NULL);
    if (!L) {
        set_error(e, "cannot create the Lua state");
        loop_free();
        server_signals_free();
        return -1;
    }
    e->L = L;
    /* Generational collection: nearly everything a request allocates (its table, the context, the
     * response headers) dies young, which is what this mode collects cheaply; measured ~10% more
     * requests/s than the incremental default on an authenticated GET (bench/engine.sh). */
    lua_atpanic(L, on_panic);
    lua_gc(L, LUA_GCGEN, 0, 0);
    luaL_openlibs(L);
    set_paths(L);
    preload(L, "core", luaopen_core);
    preload(L, "core.spawn", luaopen_core_spawn);
    preload(L, "core.timer", luaopen_core_timer);
    preload(L, "core.uuid", luaopen_core_uuid);
    preload(L, "core.log", luaopen_core_log);
    preload(L, "core.http", luaopen_core_http);
    preload(L, "core.client", luaopen_core_client);
    preload(L, "core.sync", luaopen_core_sync);
    preload(L, "core.fsync", luaopen_core_fsync);
    preload(L, "core.checkpoint", luaopen_core_checkpoint);
    preload(L, "core.hookguard", luaopen_core_hookguard);
    preload(L, "core.toml", luaopen_core_toml);
    preload(L, "core.net", luaopen_core_net);
    preload(L, "core.embed", luaopen_core_embed);
    task_init(L);
    for (int i = 0; i < e->nmods; i++) {
        struct module *m = &e->mods[i];
        if (m->open) {
            preload(L, m->name, m->open);
            continue;
        }
        char chunkname[300];
        snprintf(chunkname, sizeof(chunkname), "=%s", m->name);
        if (luaL_loadbufferx(L, m->source, strlen(m->source), chunkname, "t") != LUA_OK) {
            set_error(e, "extra Lua module: %s", lua_tostring(L, -1));
            teardown(e);
            return -1;
        }
        luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
        lua_insert(L, -2);
        lua_setfield(L, -2, m->name);
        lua_pop(L, 1);
    }

    char mainlua[PATH_MAX_OSB + 32];
    snprintf(mainlua, sizeof(mainlua), "%s/main.lua", server_paths.lua);
    const char *script = e->script ? e->script : mainlua;
    if (luaL_loadfile(L, script) != LUA_OK) {
        set_error(e, "%s", lua_tostring(L, -1));
        teardown(e);
        return -1;
    }
    task *t = task_new("main", boot_done, NULL);
    if (!t) {
        set_error(e, "out of memory");
        teardown(e);
        return -1;
    }
    lua_xmove(L, t->L, 1);
    task_start(t, 0);
    return 0;
}

int osb_start(osb_engine *e)
{
    if (!e)
        return -1;
    if (e->state != ST_NEW) {
        set_error(e, "osb_start: the engine was already started");
        return -1;
    }
    e->error[0] = '\0';
    e->state = ST_BOOTING;
    if (boot(e) < 0) {
        e->c_failed = 1;
        e->state = ST_STOPPED;
        e->exit_code = 1;
        return -1;
    }
    while (!e->boot_finished) {
        if (step(e, -1))
            break;
    }
    if (e->state == ST_STOPPED || loop_stopping()) {
        /* the boot script stopped the server (a bad configuration, --version, --check-config):
         * finish the drain so that the exit code is the one it chose */
        while (e->state != ST_STOPPED)
            step(e, -1);
        if (!e->error[0] && e->exit_code != 0)
            set_error(e, "the server stopped while starting (exit code %d)", e->exit_code);
        return -1;
    }
    e->state = ST_RUNNING;
    return 0;
}

int osb_run(osb_engine *e)
{
    if (!e)
        return 1;
    if (e->state == ST_NEW && osb_start(e) != 0) {
        if (e->c_failed)
            fprintf(stderr, "opensandbox-server: %s\n", e->error);
        return e->exit_code;
    }
    if (e->stepping) {
        set_error(e, "osb_run: called from inside the engine's loop");
        return 1;
    }
    while (e->state != ST_STOPPED)
        step(e, -1);
    return e->exit_code;
}

int osb_fd(const osb_engine *e)
{
    return e && (e->state == ST_RUNNING || e->state == ST_BOOTING) ? loop_fd() : -1;
}

int osb_step(osb_engine *e, int *timeout_ms)
{
    if (timeout_ms)
        *timeout_ms = -1;
    if (!e)
        return -1;
    if (e->state == ST_STOPPED)
        return 0;
    if (e->state != ST_RUNNING || e->stepping) {
        set_error(e, "osb_step: the engine is not running (or this is a nested call)");
        return -1;
    }
    if (step(e, 0))
        return 0;
    if (timeout_ms) {
        e->stepping++; /* the prepare hooks may run work (libmicrohttpd) */
        int64_t ns = loop_next_timeout();
        e->stepping--;
        *timeout_ms =
            ns < 0 ? -1
                   : (int)((ns + 999999) / 1000000 > 3600000 ? 3600000 : (ns + 999999) / 1000000);
    }
    return 1;
}

void osb_stop(osb_engine *e, int code)
{
    if (!e)
        return;
    if (e->state == ST_NEW) {
        e->state = ST_STOPPED;
        e->exit_code = code;
        return;
    }
    if (e->state == ST_RUNNING || e->state == ST_BOOTING)
        server_shutdown(code);
}

int osb_reload(osb_engine *e)
{
    if (!e || e->state != ST_RUNNING) {
        if (e)
            set_error(e, "osb_reload: the engine is not running");
        return -1;
    }
    server_run_signal("HUP");
    return 0;
}

int osb_exit_code(const osb_engine *e)
{
    return e && e->state == ST_STOPPED ? e->exit_code : 0;
}

void osb_free(osb_engine *e)
{
    if (!e)
        return;
    if (e->state == ST_RUNNING || e->state == ST_BOOTING) {
        server_shutdown(0);
        while (e->state != ST_STOPPED)
            step(e, -1);
    }
    teardown(e);
    free(e->config_path);
    free(e->config_text);
    free(e->config_format);
    free_args(e);
    for (int i = 0; i < e->nmods; i++) {
        free(e->mods[i].name);
        free(e->mods[i].source);
    }
    free(e->mods);
    for (int i = 0; i < e->nroutes; i++) {
        free(e->routes[i].name);
        free(e->routes[i].source);
    }
    free(e->routes);
    if (current == e)
        current = NULL;
    free(e);
}

/* ---- in-process calls ---- */

static void call_finish(struct call *c, int status, const char *body)
{
    if (c->done) {
        c->done(c->ud, status, body);
        free(c);
        return;
    }
    c->finished = 1;
    c->status = status;
    c->body = body ? strdup(body) : NULL;
    if (c->abandoned) {
        free(c->body);
        free(c);
    }
}

static void call_done(task *t, int status, int nres)
{
    struct call *c = t->data;
    if (status != LUA_OK || nres < 2 || !lua_isinteger(t->L, -nres)) {
        /* the dispatcher raised (logged), or the task was abandoned at shutdown */
        if (!c->e->tearing_down)
            call_finish(
                c, 500,
                "{\"code\":\"GENERAL::UNKNOWN_ERROR\",\"message\":\"Internal server error.\"}");
        else
            call_finish(c, 0, NULL);
        return;
    }
    int st = (int)lua_tointeger(t->L, -nres);
    const char *body = lua_tostring(t->L, -nres + 1);
    call_finish(c, st, body ? body : "");
}

static const char *const OPS[] = {"create", "get",   "list",           "delete", "pause",
                                  "resume", "renew", "patch_metadata", NULL};

static struct call *call_begin(osb_engine *e, const char *op, const char *arg, const char *body,
                               task **tp)
{
    if (!e)
        return NULL;
    if (e->state != ST_RUNNING || e->dispatch_ref == LUA_NOREF) {
        set_error(e, "osb_call: the engine is not running");
        return NULL;
    }
    int known = 0;
    for (int i = 0; op && OPS[i]; i++)
        known |= strcmp(op, OPS[i]) == 0;
    if (!known) {
        set_error(e, "osb_call: unknown operation '%s'", op ? op : "(null)");
        return NULL;
    }
    struct call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->e = e;
    task *t = task_new("embed call", call_done, c);
    if (!t) {
        free(c);
        return NULL;
    }
    lua_rawgeti(t->L, LUA_REGISTRYINDEX, e->dispatch_ref);
    lua_pushstring(t->L, op);
    if (arg)
        lua_pushstring(t->L, arg);
    else
        lua_pushnil(t->L);
    if (body)
        lua_pushstring(t->L, body);
    else
        lua_pushnil(t->L);
    *tp = t;
    return c;
}

static void start_deferred(void *data)
{
    task *t = data;
    task_start(t, t->start_nargs);
}

int osb_call_async(osb_engine *e, const char *op, const char *arg, const char *body,
                   osb_done_cb done, void *ud)
{
    if (!done) {
        if (e)
            set_error(e, "osb_call_async: a completion callback is required");
        return -1;
    }
    task *t;
    struct call *c = call_begin(e, op, arg, body, &t);
    if (!c)
        return -1;
    c->done = done;
    c->ud = ud;
    /* started on the loop's next turn, so that `done` never runs inside this call */
    t->start_nargs = 3;
    if (loop_defer(start_deferred, t) < 0)
        task_start(t, 3);
    return 0;
}

int osb_call(osb_engine *e, const char *op, const char *arg, const char *body, char **out)
{
    if (out)
        *out = NULL;
    if (e && e->stepping) {
        set_error(e, "osb_call: called from inside the engine's loop (use osb_call_async)");
        return -1;
    }
    task *t;
    struct call *c = call_begin(e, op, arg, body, &t);
    if (!c)
        return -1;
    task_start(t, 3);
    while (!c->finished && e->state != ST_STOPPED)
        step(e, -1);
    if (!c->finished) {
        c->abandoned = 1; /* the task's completion frees it (teardown ran it already, or will) */
        set_error(e, "osb_call: the engine stopped before the call finished");
        return -1;
    }
    int status = c->status;
    if (out)
        *out = c->body ? c->body : strdup("");
    else
        free(c->body);
    free(c);
    return status;
}

int osb_sandbox_create(osb_engine *e, const char *request_json, char **out)
{
    return osb_call(e, "create", NULL, request_json, out);
}

int osb_sandbox_get(osb_engine *e, const char *id, char **out)
{
    return osb_call(e, "get", id, NULL, out);
}

int osb_sandbox_list(osb_engine *e, const char *query, char **out)
{
    return osb_call(e, "list", query, NULL, out);
}

int osb_sandbox_delete(osb_engine *e, const char *id, char **out)
{
    return osb_call(e, "delete", id, NULL, out);
}

/* ---- the C test runner ---- */

int engine_run(const char *script)
{
    osb_engine *e = osb_new();
    if (!e) {
        fprintf(stderr, "opensandbox-server: cannot create the engine\n");
        return 1;
    }
    e->script = script;
    e->signals = 1;
    int code = osb_run(e);
    osb_free(e);
    return code;
}
