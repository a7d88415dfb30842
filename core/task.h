/*
 * task.h: Lua coroutines run by the loop ("tasks").
 *
 * A task is a Lua thread anchored in the registry while it lives. Its extra space (LUA_EXTRASPACE)
 * points back to the task, so a C function can tell whether it runs on a task's own thread (and may
 * yield) or on a coroutine that Lua code made (and must not). Finished threads are reset and kept
 * in a free list, so a request costs no thread allocation in the steady state.
 */
#ifndef OSB_TASK_H
#define OSB_TASK_H

#include <lua.h>

typedef struct task task;

/* Called when the task's function has returned (status LUA_OK, results on t->L, nres of them) or
 * raised (status != LUA_OK, the error already logged). The task is recycled right after done
 * returns. */
typedef void (*task_done_cb)(task *t, int status, int nres);

struct task {
    lua_State *L; /* the task's thread */
    int ref;      /* registry reference anchoring the thread */
    task_done_cb done;
    void *data;             /* owner's data (an HTTP request context, ...) */
    void (*cancel)(task *); /* set while waiting, to detach the wait when the task is abandoned */
    void *wait;             /* what the task waits for (owned by the waiting module) */
    char request_id[260];   /* for log lines; "" when none (up to 256 chars) */
    const char *name;       /* what started it, for error logs */
    int start_nargs;        /* arguments waiting on t->L for a spawned task's first turn */
    task *next_free;
    task *live_prev,
        *live_next; /* all live tasks, so that shutdown can release the ones still waiting */
};

void task_init(lua_State *main);
/* Releases every task: the ones still waiting are cancelled (t->cancel frees what they wait on) and
 * told they are done (status LUA_ERRRUN, no results); then the pool. Call before lua_close. */
void task_shutdown(void);
lua_State *task_main_state(void);

/* A new task running the function below the top nargs values of `from`'s stack (all popped). It
 * starts on the next loop iteration, so the caller goes on first. Inherits the caller's request id.
 */
task *task_spawn(lua_State *from, int nargs, const char *name, task_done_cb done, void *data);

/* Creates a task and pushes nothing; caller pushes function + args on t->L then calls task_start.
 */
task *task_new(const char *name, task_done_cb done, void *data);
void task_start(task *t, int nargs);

/* Resumes a waiting task with nres values already pushed on t->L. */
void task_resume(task *t, int nres);

/* The task running on L, or NULL when L is not a task's own thread. */
static inline task *task_of(lua_State *L)
{
    return *(task **)lua_getextraspace(L);
}

/* Checks that L may yield on behalf of the core; raises a Lua error otherwise. */
task *task_check(lua_State *L);

/* Number of live tasks (for drain and tests). */
int task_live(void);

#endif
