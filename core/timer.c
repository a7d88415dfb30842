/*
 * timer.c: the `core.timer` Lua module on top of the loop's timer heap.
 *
 * sleep(sec) parks the calling task on a timer and resumes it when the timer fires. after/every
 * return a handle (full userdata) that owns a loop_timer and a registry reference to the callback;
 * each firing runs the callback in a new task. A handle stays alive while armed (registry anchor),
 * so dropping it in Lua does not cancel it; :cancel() does.
 */
#include "loop.h"
#include "task.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>

#define TIMER_MT "core.timer.handle"

struct sleep_wait {
    loop_timer timer;
    task *t;
};

struct handle {
    loop_timer timer;
    int fn_ref;   /* callback */
    int self_ref; /* anchors the userdata while armed */
    uint64_t period_ns;
};

static uint64_t sec_to_ns(lua_State *L, int idx)
{
    lua_Number s = luaL_checknumber(L, idx);
    if (!(s >= 0) || s > 1e9)
        luaL_argerror(L, idx, "seconds must be between 0 and 1e9");
    return (uint64_t)llround(s * 1e9);
}

static void sleep_fired(loop_timer *lt)
{
    struct sleep_wait *w = lt->data;
    task *t = w->t;
    free(w);
    task_resume(t, 0);
}

static void sleep_cancel(task *t)
{
    struct sleep_wait *w = t->wait;
    loop_timer_stop(&w->timer);
    free(w);
}

static int l_sleep(lua_State *L)
{
    uint64_t ns = sec_to_ns(L, 1);
    task *t = task_check(L);
    struct sleep_wait *w = malloc(sizeof(*w));
    if (!w)
        return luaL_error(L, "out of memory");
    w->t = t;
    w->timer.idx = 0;
    w->timer.cb = sleep_fired;
    w->timer.data = w;
    t->wait = w;
    t->cancel = sleep_cancel;
    loop_timer_start(&w->timer, ns);
    return lua_yield(L, 0);
}

static void handle_release(lua_State *L, struct handle *h)
{
    if (h->self_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, h->self_ref);
        h->self_ref = LUA_NOREF;
    }
}

static void handle_fired(loop_timer *lt)
{
    struct handle *h = lt->data;
    lua_State *L = task_main_state();
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->fn_ref);
    if (h->period_ns)
        loop_timer_start(&h->timer, h->period_ns);
    else
        handle_release(L, h); /* may free h (via GC later); nothing below touches it */
    task_spawn(L, 0, "timer", NULL, NULL);
}

static int new_handle(lua_State *L, uint64_t delay, uint64_t period)
{
    luaL_checktype(L, 2, LUA_TFUNCTION);
    struct handle *h = lua_newuserdatauv(L, sizeof(*h), 0);
    h->timer.idx = 0;
    h->timer.cb = handle_fired;
    h->timer.data = h;
    h->period_ns = period;
    lua_pushvalue(L, 2);
    h->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_setmetatable(L, TIMER_MT);
    lua_pushvalue(L, -1);
    h->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    loop_timer_start(&h->timer, delay);
    return 1;
}

static int l_after(lua_State *L)
{
    return new_handle(L, sec_to_ns(L, 1), 0);
}

static int l_every(lua_State *L)
{
    uint64_t ns = sec_to_ns(L, 1);
    if (ns < 1000000)
        return luaL_argerror(L, 1, "period must be at least 1 ms");
    return new_handle(L, ns, ns);
}

static int h_cancel(lua_State *L)
{
    struct handle *h = luaL_checkudata(L, 1, TIMER_MT);
    loop_timer_stop(&h->timer);
    handle_release(L, h);
    return 0;
}

static int h_active(lua_State *L)
{
    struct handle *h = luaL_checkudata(L, 1, TIMER_MT);
    lua_pushboolean(L, loop_timer_armed(&h->timer));
    return 1;
}

static int h_gc(lua_State *L)
{
    struct handle *h = luaL_checkudata(L, 1, TIMER_MT);
    loop_timer_stop(&h->timer);
    if (h->fn_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, h->fn_ref);
        h->fn_ref = LUA_NOREF;
    }
    return 0;
}

int luaopen_core_timer(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"cancel", h_cancel}, {"active", h_active}, {"__gc", h_gc}, {NULL, NULL}};
    static const luaL_Reg fns[] = {
        {"sleep", l_sleep}, {"after", l_after}, {"every", l_every}, {NULL, NULL}};
    luaL_newmetatable(L, TIMER_MT);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
