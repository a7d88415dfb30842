/*
 * fsync.c: the `core.fsync` module: fdatasync(2) of one file on a thread of its own, so that making
 * writes durable never blocks the event loop while the disk is slow, and concurrent writers share
 * flushes (group commit). The store (lua/sandbox/store.lua) uses it for its SQLite write-ahead log.
 *
 *   local f = fsync.open(path)   -- or nil, err (the file must exist)
 *   local g = f:request()        -- asks for a flush covering every write made before this call;
 *                                -- returns its generation at once (the flush runs on the thread)
 *   local ok, err = f:wait(g)    -- yields the task until generation g is on disk (true), or a
 *                                -- flush failed (nil, err); outside a task it flushes in place
 *   f:done()                     -- the highest generation on disk
 *   f:close()                    -- stops the thread (after its current flush); also at __gc
 *
 * The thread flushes whenever generations were requested since its last flush started: one flush
 * covers every request made before it started. A failed fdatasync is sticky: the kernel may have
 * dropped the dirty pages it could not write, so no later flush can vouch for earlier writes, and
 * every wait from then on answers the error.
 *
 * Written here because no library on this system offers an asynchronous fdatasync that reports to
 * our loop (io_uring's liburing would, but is not available on Debian 12's kernels everywhere).
 */
#define _GNU_SOURCE
#include "loop.h"
#include "task.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define FSYNC_MT "core.fsync.file"

struct fwait {
    struct fwait *next;
    struct fsfile *f;
    task *t;
    uint64_t gen;
};

struct fsfile {
    int fd;
    int efd;      /* the thread's "a flush ended" signal to the loop */
    loop_watch w; /* on efd */
    pthread_t th;
    int started; /* the thread runs */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    uint64_t want;  /* the highest generation requested */
    uint64_t begun; /* the generation the running or last flush covers */
    uint64_t done;  /* the highest generation on disk */
    int err;        /* errno of the first failed flush (sticky); 0 when none */
    int stop;
    /* loop thread only */
    struct fwait *waiters;
};

static void *flusher(void *arg)
{
    struct fsfile *f = arg;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (!f->stop && f->want == f->begun)
            pthread_cond_wait(&f->cv, &f->mu);
        if (f->want == f->begun) /* stopping, nothing left to flush */
            break;
        uint64_t g = f->want;
        f->begun = g;
        pthread_mutex_unlock(&f->mu);
        int rc = fdatasync(f->fd);
        int e = rc < 0 ? errno : 0;
        pthread_mutex_lock(&f->mu);
        if (e && !f->err)
            f->err = e;
        f->done = g;
        uint64_t one = 1;
        ssize_t n = write(f->efd, &one, sizeof(one));
        (void)n; /* (a full counter already wakes the loop) */
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

static void waiter_cancel(task *t)
{
    struct fwait *w = t->wait;
    struct fwait **pp = &w->f->waiters;
    while (*pp && *pp != w)
        pp = &(*pp)->next;
    if (*pp)
        *pp = w->next;
    free(w);
}

/* Resumes every waiter whose generation is on disk; all of them when closing (the thread flushed
 * everything requested before it stopped) or once a flush failed. The ready ones are taken off the
 * list first: a resumed task may wait again, or close the file, before the next is resumed. */
static void wake_ready(struct fsfile *f, int closing)
{
    pthread_mutex_lock(&f->mu);
    uint64_t done = f->done;
    int err = f->err;
    pthread_mutex_unlock(&f->mu);
    struct fwait *ready = NULL, **pp = &f->waiters;
    while (*pp) {
        struct fwait *w = *pp;
        if (!closing && !err && w->gen > done) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        w->next = ready;
        ready = w;
        w->t->wait = NULL; /* (no longer cancellable through the list) */
        w->t->cancel = NULL;
    }
    while (ready) {
        struct fwait *w = ready;
        ready = w->next;
        task *t = w->t;
        free(w);
        if (err) {
            lua_pushnil(t->L);
            lua_pushfstring(t->L, "fdatasync failed: %s", strerror(err));
            task_resume(t, 2);
        } else {
            lua_pushboolean(t->L, 1);
            task_resume(t, 1);
        }
    }
}

static void on_flushed(loop_watch *lw, uint32_t events)
{
    struct fsfile *f = lw->data;
    uint64_t v;
    (void)events;
    ssize_t n = read(f->efd, &v, sizeof(v));
    (void)n;
    wake_ready(f, 0);
}

static int l_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct fsfile *f = lua_newuserdatauv(L, sizeof(*f), 0);
    memset(f, 0, sizeof(*f));
    f->fd = f->efd = -1;
    luaL_setmetatable(L, FSYNC_MT);
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        int e = errno;
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(e));
        return 2;
    }
    f->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f->efd < 0)
        goto fail;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->w.fd = f->efd;
    f->w.events = EPOLLIN;
    f->w.cb = on_flushed;
    f->w.data = f;
    if (loop_watch_add(&f->w) < 0)
        goto fail_sync;
    if (pthread_create(&f->th, NULL, flusher, f) != 0) {
        loop_watch_del(&f->w);
        goto fail_sync;
    }
    f->started = 1;
    return 1;
fail_sync:
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
fail : {
    int e = errno;
    if (f->efd >= 0)
        close(f->efd);
    close(f->fd);
    f->fd = f->efd = -1;
    lua_pushnil(L);
    lua_pushfstring(L, "core.fsync: %s", strerror(e ? e : ENOMEM));
    return 2;
}
}

static struct fsfile *check_open(lua_State *L)
{
    struct fsfile *f = luaL_checkudata(L, 1, FSYNC_MT);
    if (!f->started)
        luaL_error(L, "core.fsync: the file is closed");
    return f;
}

static int f_request(lua_State *L)
{
    struct fsfile *f = check_open(L);
    pthread_mutex_lock(&f->mu);
    uint64_t g = ++f->want;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    lua_pushinteger(L, (lua_Integer)g);
    return 1;
}

static int f_done(lua_State *L)
{
    struct fsfile *f = check_open(L);
    pthread_mutex_lock(&f->mu);
    uint64_t d = f->done;
    pthread_mutex_unlock(&f->mu);
    lua_pushinteger(L, (lua_Integer)d);
    return 1;
}

static int f_wait(lua_State *L)
{
    struct fsfile *f = check_open(L);
    uint64_t g = (uint64_t)luaL_checkinteger(L, 2);
    pthread_mutex_lock(&f->mu);
    uint64_t done = f->done;
    int err = f->err;
    pthread_mutex_unlock(&f->mu);
    if (err) {
        lua_pushnil(L);
        lua_pushfstring(L, "fdatasync failed: %s", strerror(err));
        return 2;
    }
    if (done >= g) {
        lua_pushboolean(L, 1);
        return 1;
    }
    task *t = task_of(L);
    if (!t || !lua_isyieldable(L)) {
        /* not on a task (a script, start-up): flush in place */
        if (fdatasync(f->fd) < 0) {
            int e = errno;
            lua_pushnil(L);
            lua_pushfstring(L, "fdatasync failed: %s", strerror(e));
            return 2;
        }
        lua_pushboolean(L, 1);
        return 1;
    }
    struct fwait *w = calloc(1, sizeof(*w));
    if (!w)
        return luaL_error(L, "core.fsync: out of memory");
    w->f = f;
    w->t = t;
    w->gen = g;
    w->next = f->waiters;
    f->waiters = w;
    t->wait = w;
    t->cancel = waiter_cancel;
    return lua_yield(L, 0);
}

static void fs_close(struct fsfile *f)
{
    if (!f->started)
        return;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->th, NULL); /* after the flush of what was requested */
    f->started = 0;
    wake_ready(f, 1);
    loop_watch_del(&f->w);
    close(f->efd);
    close(f->fd);
    f->fd = f->efd = -1;
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
}

static int f_close(lua_State *L)
{
    struct fsfile *f = luaL_checkudata(L, 1, FSYNC_MT);
    fs_close(f);
    return 0;
}

int luaopen_core_fsync(lua_State *L)
{
    static const luaL_Reg methods[] = {{"request", f_request}, {"wait", f_wait},  {"done", f_done},
                                       {"close", f_close},     {"__gc", f_close}, {NULL, NULL}};
    static const luaL_Reg fns[] = {{"open", l_open}, {NULL, NULL}};
    luaL_newmetatable(L, FSYNC_MT);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
