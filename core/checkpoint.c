/*
 * checkpoint.c: the `core.checkpoint` module: SQLite write-ahead-log checkpoints on a thread of
 * their own, with a database connection of their own, so that copying the log into the database
 * (and the two fsyncs a checkpoint makes) never runs inside a write on the event loop. The store
 * (lua/sandbox/store.lua) turns SQLite's automatic checkpoint off on its own connection when this
 * runs.
 *
 *   local cp = checkpoint.open(path [, every [, busy_ms]])  -- or nil, err; `every`: commits
 *                  -- per checkpoint (default 500); busy_ms: how long a TRUNCATE waits (5000)
 *   cp:note()      -- one commit more in the log; after `every` of them the thread checkpoints
 *                  -- (PASSIVE: it copies what no reader needs and never waits for the writer);
 *                  -- returns the checkpoints finished so far, and whether one is under way
 *   cp:truncate()  -- asks for a TRUNCATE checkpoint: every frame copied, the log file emptied
 *                  -- (the thread, not the loop, waits for readers and the writer; one that
 *                  -- failed is made again with the next checkpoint, not at once)
 *   cp:stats()     -- { runs, failures, error?, ms, max_ms, log, copied, pending, running }
 *   cp:close()     -- stops the thread after its current checkpoint; also at __gc
 *
 * A PASSIVE checkpoint takes no lock the writer needs, so the loop's writes go on while it runs;
 * when it has copied every frame, the next write starts the log from its beginning again (SQLite
 * does that, at no cost). A checkpoint that could not finish (a reader held frames, or it failed)
 * is retried at the next `every` commits. With synchronous=NORMAL on this connection, SQLite syncs
 * the log before copying and the database after, so a log restarted after a checkpoint never loses
 * a frame the database lacks.
 *
 * Written here because SQLite offers no background checkpointer of its own (its automatic
 * checkpoint runs inside the commit that crosses the threshold), and lua-dbi exposes no handle to
 * hand to a thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <lauxlib.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECKPOINT_MT "core.checkpoint"
/* how long a TRUNCATE waits for readers and the writer, on the thread (default) */
#define CHECKPOINT_BUSY_MS 5000

struct ckpt {
    sqlite3 *db; /* used by the thread only, once it runs */
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    long every;
    long pending;      /* commits noted since the last checkpoint began */
    int want_truncate; /* asked for: the thread wakes for it */
    int owe_truncate;  /* one failed: the next checkpoint, when it comes, is a TRUNCATE again */
    int stop;
    long runs, failures;
    int running; /* a checkpoint is under way */
    double last_ms, max_ms;
    int log_frames, copied_frames;
    char error[160];
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *checkpointer(void *arg)
{
    struct ckpt *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && !c->want_truncate && c->pending < c->every)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop)
            break;
        int mode = c->want_truncate || c->owe_truncate ? SQLITE_CHECKPOINT_TRUNCATE
                                                       : SQLITE_CHECKPOINT_PASSIVE;
        c->want_truncate = c->owe_truncate = 0;
        c->pending = 0;
        c->running = 1;
        pthread_mutex_unlock(&c->mu);
        int nlog = -1, nckpt = -1;
        double t0 = now_ms();
        /* A TRUNCATE holds the writer's lock while it copies and syncs, and the loop's writes wait
         * for it meanwhile (in their busy handler): a PASSIVE checkpoint first copies and syncs
         * what it can without that lock, so that the TRUNCATE after it holds the lock about as long
         * as emptying the file takes. */
        int rc = SQLITE_OK;
        if (mode == SQLITE_CHECKPOINT_TRUNCATE)
            rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_wal_checkpoint_v2(c->db, NULL, mode, &nlog, &nckpt);
        double ms = now_ms() - t0;
        const char *msg = rc == SQLITE_OK ? NULL : sqlite3_errmsg(c->db);
        pthread_mutex_lock(&c->mu);
        c->running = 0;
        c->runs++;
        c->last_ms = ms;
        if (ms > c->max_ms)
            c->max_ms = ms;
        c->log_frames = nlog;
        c->copied_frames = nckpt;
        if (rc != SQLITE_OK) {
            c->failures++;
            snprintf(c->error, sizeof(c->error), "%s (%d)", msg ? msg : "checkpoint failed", rc);
            /* retried with the next checkpoint, not at once: a failure that comes back quickly
             * (an I/O error) would otherwise keep this thread spinning */
            if (mode == SQLITE_CHECKPOINT_TRUNCATE)
                c->owe_truncate = 1;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int exec_pragma(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", sql, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int l_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer every = luaL_optinteger(L, 2, 500);
    luaL_argcheck(L, every >= 1, 2, "at least one commit per checkpoint");
    lua_Integer busy_ms = luaL_optinteger(L, 3, CHECKPOINT_BUSY_MS);
    luaL_argcheck(L, busy_ms >= 0 && busy_ms <= 600000, 3, "busy timeout out of range");
    struct ckpt *c = lua_newuserdatauv(L, sizeof(*c), 0);
    memset(c, 0, sizeof(*c));
    luaL_setmetatable(L, CHECKPOINT_MT);
    c->every = (long)every;
    char err[256];
    /* NOMUTEX: the connection is used by one thread at a time (here, then only the checkpointer) */
    int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, sizeof(err), "%s", c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(c->db, (int)busy_ms);
    /* no automatic checkpoint of its own; NORMAL: a checkpoint syncs the log, then the database */
    if (exec_pragma(c->db, "PRAGMA wal_autocheckpoint = 0", err, sizeof(err)) < 0 ||
        exec_pragma(c->db, "PRAGMA synchronous = NORMAL", err, sizeof(err)) < 0)
        goto fail;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->th, NULL, checkpointer, c) != 0) {
        snprintf(err, sizeof(err), "cannot start its thread: %s", strerror(errno ? errno : EAGAIN));
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        goto fail;
    }
    c->started = 1;
    return 1;
fail:
    if (c->db)
        sqlite3_close(c->db);
    c->db = NULL;
    lua_pushnil(L);
    lua_pushfstring(L, "core.checkpoint: %s: %s", path, err);
    return 2;
}

static struct ckpt *check_open(lua_State *L)
{
    struct ckpt *c = luaL_checkudata(L, 1, CHECKPOINT_MT);
    if (!c->started)
        luaL_error(L, "core.checkpoint: closed");
    return c;
}

static int c_note(lua_State *L)
{
    struct ckpt *c = check_open(L);
    pthread_mutex_lock(&c->mu);
    if (++c->pending == c->every)
        pthread_cond_signal(&c->cv);
    long runs = c->runs;
    int running = c->running;
    pthread_mutex_unlock(&c->mu);
    lua_pushinteger(L, runs);
    lua_pushboolean(L, running);
    return 2;
}

static int c_truncate(lua_State *L)
{
    struct ckpt *c = check_open(L);
    pthread_mutex_lock(&c->mu);
    c->want_truncate = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static int c_stats(lua_State *L)
{
    struct ckpt *c = check_open(L);
    pthread_mutex_lock(&c->mu);
    long runs = c->runs, failures = c->failures, pending = c->pending;
    int running = c->running;
    double last_ms = c->last_ms, max_ms = c->max_ms;
    int log_frames = c->log_frames, copied = c->copied_frames;
    char error[sizeof(c->error)];
    memcpy(error, c->error, sizeof(error));
    pthread_mutex_unlock(&c->mu);
    lua_createtable(L, 0, 9);
    lua_pushinteger(L, runs);
    lua_setfield(L, -2, "runs");
    lua_pushinteger(L, failures);
    lua_setfield(L, -2, "failures");
    if (error[0]) {
        lua_pushstring(L, error);
        lua_setfield(L, -2, "error");
    }
    lua_pushnumber(L, last_ms);
    lua_setfield(L, -2, "ms");
    lua_pushnumber(L, max_ms);
    lua_setfield(L, -2, "max_ms");
    lua_pushinteger(L, log_frames);
    lua_setfield(L, -2, "log");
    lua_pushinteger(L, copied);
    lua_setfield(L, -2, "copied");
    lua_pushinteger(L, pending);
    lua_setfield(L, -2, "pending");
    lua_pushboolean(L, running);
    lua_setfield(L, -2, "running");
    return 1;
}

static int c_close(lua_State *L)
{
    struct ckpt *c = luaL_checkudata(L, 1, CHECKPOINT_MT);
    if (!c->started)
        return 0;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->th, NULL);
    c->started = 0;
    sqlite3_close(c->db);
    c->db = NULL;
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    return 0;
}

int luaopen_core_checkpoint(lua_State *L)
{
    static const luaL_Reg methods[] = {{"note", c_note},   {"truncate", c_truncate},
                                       {"stats", c_stats}, {"close", c_close},
                                       {"__gc", c_close},  {NULL, NULL}};
    static const luaL_Reg fns[] = {{"open", l_open}, {NULL, NULL}};
    luaL_newmetatable(L, CHECKPOINT_MT);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
