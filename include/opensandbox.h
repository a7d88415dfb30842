/*
 * opensandbox.h: the OpenSandbox-compatible server as a library (libopensandbox).
 *
 * An engine is the whole server: configuration, store, runtime adapter (Docker or Kubernetes),
 * lifecycle service, HTTP API, hooks and operator routes, all on one event loop that the library
 * owns. The host program either hands it the thread (osb_run) or drives it from its own loop
 * (osb_fd + osb_step). Lifecycle calls can be made in-process, without HTTP (osb_call).
 *
 *   osb_engine *e = osb_new();
 *   osb_config_string(e, "return { server = { port = 0 } }", "lua");
 *   osb_add_routes(e, "hello.lua", "return { { method = 'GET', path = '/hello', handler = ... }
 * }"); if (osb_start(e) != 0) { fprintf(stderr, "%s\n", osb_error(e)); osb_free(e); return 1; }
 *   char *out = NULL;
 *   int status = osb_sandbox_create(e, "{\"image\":{\"uri\":\"busybox\"}, ...}", &out);
 *   free(out);
 *   osb_free(e);   // drains, stops and releases everything
 *
 * Threads: an engine, and every call on it, belongs to the thread that created it. One engine per
 * process at a time (the core keeps process-wide state: the loop, the HTTP daemon, the HTTP
 * client); after osb_free another may be created. Functions returning int return 0 on success and
 * -1 on error unless stated; osb_error(e) then tells why.
 */
#ifndef OPENSANDBOX_H
#define OPENSANDBOX_H

#ifdef __cplusplus
extern "C" {
#endif

struct lua_State;

typedef struct osb_engine osb_engine;

/* A Lua module opener (a lua_CFunction): it pushes the module's value and returns 1. */
typedef int (*osb_lua_open)(struct lua_State *L);

/* The completion of an asynchronous in-process call (osb_call_async). status is the HTTP status the
 * same request would have had (202, 200, 204, 400, 404, ...), or 0 when the engine stopped before
 * the call finished; body is the JSON response body ("" for none; NULL when status is 0). body
 * belongs to the library and is valid during the callback only. */
typedef void (*osb_done_cb)(void *ud, int status, const char *body);

/* The library's version ("0.1.0"). */
const char *osb_version(void);

/* ---- creating and configuring (before osb_start) ---- */

/* A new engine, not started; NULL when another engine exists in this process or memory is short. */
osb_engine *osb_new(void);

/* The last error of `e` ("" when none). Valid until the next call on e. */
const char *osb_error(const osb_engine *e);

/* The directory that holds lua/main.lua (the install root). Without it: $OPENSANDBOX_ROOT, the
 * executable's directory, its parent, <exe>/../share/opensandbox, then the library's install
 * prefix's share/opensandbox. */
int osb_set_root(osb_engine *e, const char *dir);

/* Configuration from a file (a .toml path is upstream's TOML format, anything else config.lua's Lua
 * format), or from text: format "lua" or "toml". Without either, the server's own search applies
 * ($SANDBOX_CONFIG_PATH, ./config.lua, ~/.sandbox.toml, else defaults). A bad configuration makes
 * osb_start fail with the validation message. */
int osb_config_file(osb_engine *e, const char *path);
int osb_config_string(osb_engine *e, const char *text, const char *format);

/* Command-line arguments, as opensandbox-server takes them (argv[0] is the program name). */
int osb_set_args(osb_engine *e, int argc, char **argv);

/* Whether the engine catches SIGTERM/SIGINT (drain and stop) and SIGHUP (reload). Off by default:
 * the host program owns its signals (osb_stop, osb_reload do the same). */
int osb_set_signals(osb_engine *e, int on);

/* An extra Lua module that the engine's Lua code (routes, hooks are sandboxed and cannot) can
 * require(name): a C opener, or Lua source text (compiled at osb_start; a syntax error fails it).
 */
int osb_add_module(osb_engine *e, const char *name, osb_lua_open open);
int osb_add_lua_module(osb_engine *e, const char *name, const char *source);

/* Extra HTTP routes written in Lua: `source` is a route module, the same shape as a file of the
 * server.routes_dir directory (README, "Operator routes"); `name` names it in errors ("x.lua"). The
 * routes get the API's authentication, request id and error envelope. A broken module fails
 * osb_start. */
int osb_add_routes(osb_engine *e, const char *name, const char *source);

/* ---- running ---- */

/* Boots the server: reads the configuration, opens the store, connects the runtime, listens. Runs
 * the loop until the server is ready (0) or the boot failed (-1, osb_error tells why, the engine is
 * then stopped; osb_exit_code gives the server's exit code: 1 invalid configuration, 2 refused by
 * the auth guard). */
int osb_start(osb_engine *e);

/* Runs the engine until it stops (osb_stop, core.stop, a signal); starts it first if needed.
 * Returns the exit code (0 after a clean stop). */
int osb_run(osb_engine *e);

/* For the host's own loop: a file descriptor to watch for readability (-1 when not running), and
 * one step that never blocks. osb_step returns 1 while the engine runs, 0 once it has stopped (then
 * osb_exit_code), -1 on misuse. *timeout_ms (may be NULL) receives how long the host may wait
 * before the next step when the fd stays quiet (-1: until the fd is readable). */
int osb_fd(const osb_engine *e);
int osb_step(osb_engine *e, int *timeout_ms);

/* Begins a clean stop: stops accepting, lets in-flight requests finish (bounded by
 * server.drain_timeout), then the engine stops (osb_step returns 0, osb_run returns). Idempotent;
 * does not block. */
void osb_stop(osb_engine *e, int code);

/* What SIGHUP does: re-reads hooks and operator routes (a broken set keeps the previous one). The
 * reload runs on the loop (on the next step). */
int osb_reload(osb_engine *e);

/* The exit code once stopped (0 while running). */
int osb_exit_code(const osb_engine *e);

/* Stops the engine if it runs (a blocking drain) and releases everything. NULL is fine. */
void osb_free(osb_engine *e);

/* ---- the lifecycle service in-process ---- */

/* Calls one lifecycle operation without HTTP, with the same validation, semantics and JSON as the
 * API (API.md), as the admin principal "default". op: "create" (body: CreateSandboxRequest),
 * "get", "delete", "pause", "resume" (arg: sandbox id), "renew" (arg: id, body:
 * {"expiresAt": ...}), "patch_metadata" (arg: id, body: the patch), "list" (arg: the query string
 * of GET /v1/sandboxes, e.g. "state=Running&pageSize=10", or NULL).
 *
 * Synchronous: the service waits on the runtime (a create pulls and starts a container), so
 * osb_call runs the engine's loop until the call is done; the server keeps serving meanwhile. Call
 * it from outside osb_step (not from a completion callback). Returns the HTTP status (202 for a
 * create, 200, 204, 4xx/5xx with an ErrorResponse body) and, when out is not NULL, the response
 * body in *out (malloc'd, "" for none; free() it); -1 on misuse (not running, unknown op). */
int osb_call(osb_engine *e, const char *op, const char *arg, const char *body, char **out);

/* The same without waiting: `done` runs later, inside osb_step/osb_run/osb_call, when the call has
 * finished (or with status 0 when the engine stopped first). Returns 0 or -1 (then done never
 * runs).
 */
int osb_call_async(osb_engine *e, const char *op, const char *arg, const char *body,
                   osb_done_cb done, void *ud);

/* Shorthands of osb_call. */
int osb_sandbox_create(osb_engine *e, const char *request_json, char **out);
int osb_sandbox_get(osb_engine *e, const char *id, char **out);
int osb_sandbox_list(osb_engine *e, const char *query, char **out);
int osb_sandbox_delete(osb_engine *e, const char *id, char **out);

#ifdef __cplusplus
}
#endif

#endif
