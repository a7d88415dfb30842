/*
 * loop.h: the one event loop of the server.
 *
 * An epoll set of file-descriptor watchers, a binary min-heap of timers on the monotonic clock,
 * "prepare" callbacks that run before every wait (libmicrohttpd and libcurl use them to flush
 * pending work and to report how long the loop may sleep), and a queue of deferred calls that run
 * outside any callback. Nothing here knows about HTTP or Lua.
 */
#ifndef OSB_LOOP_H
#define OSB_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

typedef struct loop_watch loop_watch;
typedef void (*loop_io_cb)(loop_watch *w, uint32_t events);

struct loop_watch {
    int fd;
    uint32_t events; /* EPOLLIN | EPOLLOUT ..., level-triggered */
    loop_io_cb cb;
    void *data;
};

typedef struct loop_timer loop_timer;
typedef void (*loop_timer_cb)(loop_timer *t);

struct loop_timer {
    uint64_t deadline; /* monotonic ns */
    size_t idx;        /* position in the heap + 1; 0 when not armed */
    loop_timer_cb cb;
    void *data;
};

/* A prepare callback returns the longest time in ns the loop may sleep for its sake, or -1 for "no
 * limit". */
typedef int64_t (*loop_prepare_cb)(void *data);
typedef void (*loop_defer_cb)(void *data);

int loop_init(void);
void loop_free(void);

/* Runs until loop_stop(); returns the exit code given to loop_stop. */
int loop_run(void);
void loop_stop(int code);
int loop_stopping(void);
int loop_exit_code(void);

/* For a host program's own loop (include/opensandbox.h): the epoll fd to watch for readability, one
 * turn that waits at most max_wait_ns (0: do not block; -1: as long as the loop wants), returning 1
 * once the loop has stopped, and how long the loop may sleep now (ns, -1 for "until an fd is
 * ready"; runs the prepare hooks, which may do pending work). */
int loop_fd(void);
int loop_step(int64_t max_wait_ns);
int64_t loop_next_timeout(void);

int loop_watch_add(loop_watch *w);
int loop_watch_mod(loop_watch *w, uint32_t events);
void loop_watch_del(loop_watch *w);

void loop_timer_start(loop_timer *t, uint64_t delay_ns);
void loop_timer_stop(loop_timer *t);
static inline int loop_timer_armed(const loop_timer *t)
{
    return t->idx != 0;
}

int loop_prepare_add(loop_prepare_cb cb, void *data);

/* Queues cb(data) to run on the next iteration, outside any library callback. Returns 0 or -ENOMEM.
 */
int loop_defer(loop_defer_cb cb, void *data);
/* Like loop_defer, for a call that holds something: if the loop stops before cb's turn, loop_free
 * calls drop(data) instead, so nothing leaks at shutdown. drop runs after the Lua state and the
 * other modules are gone: it may only release plain memory. */
int loop_defer_ex(loop_defer_cb cb, loop_defer_cb drop, void *data);

uint64_t loop_now_ns(void); /* monotonic clock, read fresh */
double loop_wall_time(void);

#endif
