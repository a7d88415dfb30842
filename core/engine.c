/*
 * engine.c: one run of the engine: a Lua state with the core modules preloaded and package.path
 * pointing at the Lua tree, a script run as the first task, and the loop until the server stops.
 * main() uses it with lua/main.lua; the C test runner uses it with test scenarios.
 */
#define _GNU_SOURCE
#include "engine.h"

#include "httpd.h"
#include "log.h"
#include "loop.h"
#include "server.h"
#include "task.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>

void client_free(void);
int luaopen_core_log(lua_State *L);

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

static int boot_status;

static void boot_done(task *t, int status, int nres)
{
    (void)t;
    (void)nres;
    if (status != LUA_OK) {
        boot_status = 1;
        server_shutdown(1);
    }
}

int engine_run(const char *script)
{
    int code;
    boot_status = 0;
    if (loop_init() < 0 || server_signals_init() < 0) {
        fprintf(stderr, "opensandbox-server: cannot set up the event loop\n");
        return 1;
    }
    /* The allocator counts and refuses while an operator hook runs (core/hookguard.c). */
    lua_State *L = lua_newstate(hookguard_alloc, NULL);
    if (!L) {
        fprintf(stderr, "opensandbox-server: cannot create the Lua state\n");
        return 1;
    }
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
    preload(L, "core.hookguard", luaopen_core_hookguard);
    preload(L, "core.toml", luaopen_core_toml);
    preload(L, "core.net", luaopen_core_net);
    task_init(L);

    if (luaL_loadfile(L, script) != LUA_OK) {
        fprintf(stderr, "opensandbox-server: %s\n", lua_tostring(L, -1));
        lua_close(L);
        loop_free();
        return 1;
    }
    task *t = task_new("main", boot_done, NULL);
    if (!t) {
        lua_close(L);
        loop_free();
        return 1;
    }
    lua_xmove(L, t->L, 1);
    task_start(t, 0);
    code = loop_run();
    if (boot_status && code == 0)
        code = 1;
    httpd_free();
    task_shutdown(); /* cancels waits (client transfers included) before the client goes */
    client_free();
    lua_close(L);
    loop_free();
    server_signals_free();
    return code;
}
