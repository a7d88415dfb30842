/*
 * server.h: process-wide pieces shared by the core modules: where the server was installed,
 * shutdown, and signal delivery to Lua. Implemented in lcore.c (the `core` root module and
 * `core.spawn`).
 */
#ifndef OSB_SERVER_H
#define OSB_SERVER_H

#include <lua.h>

#define PATH_MAX_OSB 4200

struct server_paths {
    char exe[PATH_MAX_OSB];
    char root[PATH_MAX_OSB]; /* the directory that holds lua/, hooks/, config.lua */
    char lua[PATH_MAX_OSB + 8];
};

extern struct server_paths server_paths;

/* Starts the shutdown: the HTTP server stops accepting and drains, then the loop stops with `code`.
 */
void server_shutdown(int code);

/* Sets up signalfd for TERM, INT and HUP. Returns 0 or -errno. */
int server_signals_init(void);

/* Without server_signals_init (an embedding program owns its signals): SIGPIPE gets an empty
 * handler only when it has the default disposition, so that a write to a closed socket fails with
 * EPIPE instead of killing the host. Returns 0 or -errno. */
int server_sigpipe_init(void);

/* Restores the default handlers when server_signals_init installed them; resets the shutdown. */
void server_signals_free(void);

/* Runs the Lua functions registered with core.on_signal(name, fn), each in a new task, as if the
 * signal had arrived (without the drain of TERM/INT). */
void server_run_signal(const char *name);

void server_set_argv(int argc, char **argv);

int luaopen_core(lua_State *L);
int luaopen_core_spawn(lua_State *L);
int luaopen_core_uuid(lua_State *L);
/* 32 lower-case hex digits of a random v4 UUID (the request ids); -1 when the kernel gives no
 * randomness. */
int uuid_hex(char out[32]);
int luaopen_core_timer(lua_State *L);
int luaopen_core_http(lua_State *L);
int luaopen_core_client(lua_State *L);
int luaopen_core_sync(lua_State *L);
int luaopen_core_fsync(lua_State *L);
int luaopen_core_checkpoint(lua_State *L);
int luaopen_core_hookguard(lua_State *L);
int luaopen_core_toml(lua_State *L); /* ltoml.cpp */
int luaopen_core_net(lua_State *L);  /* net.c */
/* The Lua state's allocator: counts and refuses past an armed hook's memory budget (hookguard.c).
 */
void *hookguard_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

#endif
