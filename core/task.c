/*
 * task.c: running Lua coroutines on the loop.
 *
 * task_start/task_resume call lua_resume. When the thread yields, whoever made it yield (a timer,
 * an HTTP client request, a stream write) holds the task pointer and resumes it later, pushing the
 * results that the yielding C function returns. When the thread returns or raises, `done` is told
 * and the thread is reset (lua_resetthread) and kept for reuse. Errors are logged with a traceback
 * of the failing thread.
 */
#include "task.h"

#include "log.h"
#include "loop.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TASK_POOL_MAX 512

static lua_State *main_L;
static task *free_list;
static int pool_size;
static int live;
static task *live_list;

static void task_recycle_for_shutdown(task *t);

/* Slow turns (OPENSANDBOX_SLOW_TURN_MS, off by default): a task turn that keeps the loop longer
 * than that is logged with where it began and where it ended (the Lua positions of its thread), to
 * find what holds the loop up (nothing else runs meanwhile: requests, timers, other tasks all
 * wait). */
static uint64_t slow_turn_ns;

void task_init(lua_State *L)
{
    const char *slow = getenv("OPENSANDBOX_SLOW_TURN_MS");
    main_L = L;
    *(task **)lua_getextraspace(L) = NULL;
    slow_turn_ns = slow && *slow ? (uint64_t)(strtod(slow, NULL) * 1e6) : 0;
}

/* "src:line < src:line < ..." of the first Lua levels of `L`'s stack (C levels skipped). */
static void where(lua_State *L, char *out, size_t len)
{
    lua_Debug ar;
    size_t n = 0;
    out[0] = '\0';
    for (int level = 0, shown = 0; shown < 6 && n + 1 < len && lua_getstack(L, level, &ar);
         level++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline < 0)
            continue;
        int w =
            snprintf(out + n, len - n, "%s%s:%d", shown ? " < " : "", ar.short_src, ar.currentline);
        if (w < 0)
            break;
        n += (size_t)w < len - n ? (size_t)w : len - n - 1;
        shown++;
    }
}

lua_State *task_main_state(void)
{
    return main_L;
}

int task_live(void)
{
    return live;
}

void task_shutdown(void)
{
    while (live_list) {
        task *t = live_list;
        if (t->cancel)
            t->cancel(t);
        t->cancel = NULL;
        if (t->done)
            t->done(t, LUA_ERRRUN, 0);
        t->done = NULL;
        task_recycle_for_shutdown(t);
    }
    while (free_list) {
        task *t = free_list;
        free_list = t->next_free;
        luaL_unref(main_L, LUA_REGISTRYINDEX, t->ref);
        free(t);
    }
    pool_size = 0;
}

task *task_new(const char *name, task_done_cb done, void *data)
{
    task *t = free_list;
    if (t) {
        free_list = t->next_free;
        pool_size--;
    } else {
        t = malloc(sizeof(*t));
        if (!t)
            return NULL;
        t->L = lua_newthread(main_L);
        t->ref = luaL_ref(main_L, LUA_REGISTRYINDEX);
    }
    t->done = done;
    t->data = data;
    t->cancel = NULL;
    t->wait = NULL;
    t->request_id[0] = '\0';
    t->name = name;
    t->next_free = NULL;
    *(task **)lua_getextraspace(t->L) = t;
    live++;
    t->live_prev = NULL;
    t->live_next = live_list;
    if (live_list)
        live_list->live_prev = t;
    live_list = t;
    return t;
}

static void unlink_live(task *t)
{
    if (t->live_prev)
        t->live_prev->live_next = t->live_next;
    else
        live_list = t->live_next;
    if (t->live_next)
        t->live_next->live_prev = t->live_prev;
    t->live_prev = t->live_next = NULL;
}

static void task_recycle(task *t)
{
    unlink_live(t);
    live--;
    *(task **)lua_getextraspace(t->L) = NULL;
    lua_resetthread(t->L);
    if (pool_size >= TASK_POOL_MAX) {
        luaL_unref(main_L, LUA_REGISTRYINDEX, t->ref);
        free(t);
        return;
    }
    t->next_free = free_list;
    free_list = t;
    pool_size++;
}

/* At shutdown: no reset (the thread may be suspended inside a C call), just drop it. */
static void task_recycle_for_shutdown(task *t)
{
    unlink_live(t);
    live--;
    *(task **)lua_getextraspace(t->L) = NULL;
    luaL_unref(main_L, LUA_REGISTRYINDEX, t->ref);
    free(t);
}

static void task_failed(task *t, int status)
{
    const char *msg = lua_tostring(t->L, -1);
    luaL_traceback(t->L, t->L, msg ? msg : "(error object is not a string)", 0);
    log_write(LOG_ERROR, t->request_id, "task failed", "task", t->name ? t->name : "?", "error",
              lua_tostring(t->L, -1), NULL);
    lua_pop(t->L, 1);
    (void)status;
}

/* CPU time this thread has used (for the slow-turn log: wall time against time on a CPU). */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void task_run(task *t, int nargs)
{
    int nres = 0;
    uint64_t t0 = 0, cpu0 = 0;
    int kb0 = 0;
    char from[640];
    if (slow_turn_ns) {
        where(t->L, from, sizeof(from));
        t0 = loop_now_ns();
        cpu0 = thread_cpu_ns();
        kb0 = lua_gc(main_L, LUA_GCCOUNT);
    }
    int status = lua_resume(t->L, main_L, nargs, &nres);
    if (slow_turn_ns) {
        uint64_t dt = loop_now_ns() - t0;
        if (dt >= slow_turn_ns) {
            /* cpu_ms well under ms: the process was not running (another process had the CPU, or
             * the kernel blocked a call); the heap shrinking in the turn: the collector ran in it
             */
            char to[640], ms[32], cpu[32], heap[48];
            where(t->L, to, sizeof(to));
            snprintf(ms, sizeof(ms), "%.3f", (double)dt / 1e6);
            snprintf(cpu, sizeof(cpu), "%.3f", (double)(thread_cpu_ns() - cpu0) / 1e6);
            snprintf(heap, sizeof(heap), "%d -> %d", kb0, lua_gc(main_L, LUA_GCCOUNT));
            log_write(LOG_WARNING, t->request_id, "slow task turn", "task", t->name ? t->name : "?",
                      "ms", ms, "cpu_ms", cpu, "heap_kb", heap, "from", from[0] ? from : "(start)",
                      "to", status == LUA_YIELD ? (to[0] ? to : "?") : "(end)", NULL);
        }
    }
    if (status == LUA_YIELD) {
        /* The yielding function pushed nothing we need; drop whatever it yielded. */
        lua_pop(t->L, nres);
        return;
    }
    if (status != LUA_OK)
        task_failed(t, status);
    if (t->done)
        t->done(t, status, status == LUA_OK ? nres : 0);
    task_recycle(t);
}

void task_start(task *t, int nargs)
{
    task_run(t, nargs);
}

void task_resume(task *t, int nres)
{
    t->cancel = NULL;
    t->wait = NULL;
    task_run(t, nres);
}

/* The first turn of a spawned task. Nothing is allocated for it: a task still waiting for its
 * first turn at shutdown is on the live list and released by task_shutdown like any other. */
static void spawn_deferred(void *data)
{
    task *t = data;
    task_start(t, t->start_nargs);
}

task *task_spawn(lua_State *from, int nargs, const char *name, task_done_cb done, void *data)
{
    task *t = task_new(name, done, data);
    if (!t) {
        luaL_error(from, "out of memory");
        return NULL;
    }
    task *parent = task_of(from);
    if (parent)
        memcpy(t->request_id, parent->request_id, sizeof(t->request_id));
    lua_xmove(from, t->L, nargs + 1);
    t->start_nargs = nargs;
    if (loop_defer(spawn_deferred, t) < 0)
        task_start(t, nargs);
    return t;
}

task *task_check(lua_State *L)
{
    task *t = task_of(L);
    if (!t || !lua_isyieldable(L))
        luaL_error(L, "core: yielding call outside a core task");
    return t;
}
