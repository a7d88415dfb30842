/*
 * sync.c: the `core.sync` module: a waiter, the one primitive from which Lua builds locks, queues
 * and "wait until provisioned" (see lua/common/sync.lua).
 *
 *   local w = sync.waiter()      -- bound to nothing yet
 *   w:wait(timeout)              -- yields the calling task until w:wake(...) or the timeout;
 *                                -- returns the woken values, or nil, "timeout"
 *   w:wake(...)                  -- true if a task was waiting (it resumes on the next loop turn
 * with
 *                                -- these values), false otherwise
 * Waking is deferred to the loop so the waker keeps running first and wake chains never recurse.
 */
#include "loop.h"
#include "task.h"

#include <lauxlib.h>
#include <math.h>

#define WAITER_MT "core.sync.waiter"

struct waiter {
    task *t; /* the waiting task, NULL when none */
    loop_timer timer;
    int anchor;  /* registry ref keeping the userdata alive while a task waits */
    int pending; /* a deferred resume is queued */
    int nvals;
};

static void waiter_unanchor(struct waiter *w)
{
    if (w->anchor != LUA_NOREF) {
        luaL_unref(task_main_state(), LUA_REGISTRYINDEX, w->anchor);
        w->anchor = LUA_NOREF;
    }
}

static void resume_deferred(void *data)
{
    struct waiter *w = data;
    task *t = w->t;
    int n = w->nvals;
    w->t = NULL;
    w->pending = 0;
    waiter_unanchor(w); /* the task's stack still references the userdata (self) */
    task_resume(t, n);
}

static void on_timeout(loop_timer *lt)
{
    struct waiter *w = lt->data;
    if (!w->t || w->pending)
        return;
    lua_pushnil(w->t->L);
    lua_pushliteral(w->t->L, "timeout");
    w->nvals = 2;
    w->pending = 1;
    resume_deferred(w);
}

static void wait_cancel(task *t)
{
    struct waiter *w = t->wait;
    loop_timer_stop(&w->timer);
    w->t = NULL;
}

static int l_waiter(lua_State *L)
{
    struct waiter *w = lua_newuserdatauv(L, sizeof(*w), 0);
    w->t = NULL;
    w->timer.idx = 0;
    w->timer.cb = on_timeout;
    w->timer.data = w;
    w->anchor = LUA_NOREF;
    w->pending = 0;
    w->nvals = 0;
    luaL_setmetatable(L, WAITER_MT);
    return 1;
}

static int w_wait(lua_State *L)
{
    struct waiter *w = luaL_checkudata(L, 1, WAITER_MT);
    lua_Number timeout = luaL_optnumber(L, 2, -1);
    task *t = task_check(L);
    if (w->t)
        return luaL_error(L, "waiter: another task is already waiting");
    w->t = t;
    t->wait = w;
    t->cancel = wait_cancel;
    lua_pushvalue(L, 1);
    w->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
    if (timeout >= 0)
        loop_timer_start(&w->timer, (uint64_t)llround(timeout * 1e9));
    return lua_yield(L, 0);
}

static int w_wake(lua_State *L)
{
    struct waiter *w = luaL_checkudata(L, 1, WAITER_MT);
    int n = lua_gettop(L) - 1;
    if (!w->t || w->pending) {
        lua_pushboolean(L, 0);
        return 1;
    }
    loop_timer_stop(&w->timer);
    luaL_checkstack(w->t->L, n, "waiter: too many values");
    lua_xmove(L, w->t->L, n);
    w->nvals = n;
    w->pending = 1;
    if (loop_defer(resume_deferred, w) < 0)
        resume_deferred(w);
    lua_pushboolean(L, 1);
    return 1;
}

static int w_waiting(lua_State *L)
{
    struct waiter *w = luaL_checkudata(L, 1, WAITER_MT);
    lua_pushboolean(L, w->t != NULL && !w->pending);
    return 1;
}

static int w_gc(lua_State *L)
{
    struct waiter *w = luaL_checkudata(L, 1, WAITER_MT);
    loop_timer_stop(&w->timer);
    return 0;
}

int luaopen_core_sync(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"wait", w_wait}, {"wake", w_wake}, {"waiting", w_waiting}, {"__gc", w_gc}, {NULL, NULL}};
    static const luaL_Reg fns[] = {{"waiter", l_waiter}, {NULL, NULL}};
    luaL_newmetatable(L, WAITER_MT);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
