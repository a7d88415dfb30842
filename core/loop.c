/*
 * loop.c: epoll + timer heap + prepare hooks + deferred calls.
 *
 * One iteration: run deferred calls; run prepare hooks (each may shorten the sleep); compute the
 * sleep from the earliest timer; epoll_pwait2 with nanosecond resolution (plain epoll_wait rounds
 * to milliseconds, which makes timer-driven work bunch into waves); dispatch ready watchers; fire
 * expired timers. Timers live in a binary min-heap indexed from 1; a timer knows its slot so
 * cancelling is O(log n).
 */
#define _GNU_SOURCE
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256
#define LOOP_MAX_PREPARE 8

struct defer_item {
    loop_defer_cb cb;
    void *data;
    loop_defer_cb drop; /* called instead by loop_free when the loop stopped first; or NULL */
};

static struct {
    int epfd;
    int stopping;
    int exit_code;
    loop_timer **heap; /* heap[0] unused */
    size_t heap_len, heap_cap;
    struct {
        loop_prepare_cb cb;
        void *data;
    } prepare[LOOP_MAX_PREPARE];
    int nprepare;
    struct defer_item *defer, *defer_run;
    size_t defer_len, defer_cap, defer_run_cap;
    int have_pwait2;
} L = {.epfd = -1, .have_pwait2 = 1};

uint64_t loop_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double loop_wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000) / 1e6;
}

int loop_init(void)
{
    L.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (L.epfd < 0)
        return -errno;
    L.heap_cap = 64;
    L.heap = calloc(L.heap_cap + 1, sizeof(*L.heap));
    if (!L.heap)
        return -ENOMEM;
    return 0;
}

void loop_free(void)
{
    /* Calls still queued belong to a loop that will not turn again: each gets its drop callback,
     * which releases what it held. */
    for (size_t i = 0; i < L.defer_len; i++)
        if (L.defer[i].drop)
            L.defer[i].drop(L.defer[i].data);
    L.defer_len = 0;
    if (L.epfd >= 0)
        close(L.epfd);
    L.epfd = -1;
    free(L.heap);
    free(L.defer);
    free(L.defer_run);
    L.heap = NULL;
    L.defer = L.defer_run = NULL;
    L.heap_len = L.heap_cap = L.defer_len = L.defer_cap = L.defer_run_cap = 0;
    /* a later loop_init starts a fresh loop (an embedding program may run one engine after another)
     */
    L.nprepare = 0;
    L.stopping = 0;
    L.exit_code = 0;
}

void loop_stop(int code)
{
    L.stopping = 1;
    L.exit_code = code;
}

int loop_stopping(void)
{
    return L.stopping;
}

int loop_watch_add(loop_watch *w)
{
    struct epoll_event ev = {.events = w->events, .data.ptr = w};
    if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0)
        return -errno;
    return 0;
}

int loop_watch_mod(loop_watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    w->events = events;
    if (epoll_ctl(L.epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
        return -errno;
    return 0;
}

void loop_watch_del(loop_watch *w)
{
    /* The fd may already be closed (libcurl does that); epoll forgot it then, so errors are fine.
     */
    epoll_ctl(L.epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

/* ---- timer heap ---- */

static void heap_set(size_t i, loop_timer *t)
{
    L.heap[i] = t;
    t->idx = i;
}

static void heap_up(size_t i)
{
    loop_timer *t = L.heap[i];
    while (i > 1 && L.heap[i / 2]->deadline > t->deadline) {
        heap_set(i, L.heap[i / 2]);
        i /= 2;
    }
    heap_set(i, t);
}

static void heap_down(size_t i)
{
    loop_timer *t = L.heap[i];
    for (;;) {
        size_t c = i * 2;
        if (c > L.heap_len)
            break;
        if (c + 1 <= L.heap_len && L.heap[c + 1]->deadline < L.heap[c]->deadline)
            c++;
        if (L.heap[c]->deadline >= t->deadline)
            break;
        heap_set(i, L.heap[c]);
        i = c;
    }
    heap_set(i, t);
}

void loop_timer_stop(loop_timer *t)
{
    size_t i = t->idx;
    if (!i)
        return;
    t->idx = 0;
    loop_timer *last = L.heap[L.heap_len--];
    if (last == t)
        return;
    heap_set(i, last);
    heap_up(i);
    heap_down(last->idx);
}

void loop_timer_start(loop_timer *t, uint64_t delay_ns)
{
    loop_timer_stop(t);
    if (L.heap_len == L.heap_cap) {
        size_t ncap = L.heap_cap * 2;
        loop_timer **n = realloc(L.heap, (ncap + 1) * sizeof(*n));
        if (!n)
            abort(); /* out of memory for a timer slot: nothing sane left to do */
        L.heap = n;
        L.heap_cap = ncap;
    }
    t->deadline = loop_now_ns() + delay_ns;
    L.heap[++L.heap_len] = t;
    t->idx = L.heap_len;
    heap_up(L.heap_len);
}

static void run_timers(uint64_t now)
{
    while (L.heap_len && L.heap[1]->deadline <= now) {
        loop_timer *t = L.heap[1];
        loop_timer_stop(t);
        t->cb(t);
    }
}

/* ---- prepare and defer ---- */

int loop_prepare_add(loop_prepare_cb cb, void *data)
{
    if (L.nprepare == LOOP_MAX_PREPARE)
        return -ENOSPC;
    L.prepare[L.nprepare].cb = cb;
    L.prepare[L.nprepare].data = data;
    L.nprepare++;
    return 0;
}

int loop_defer_ex(loop_defer_cb cb, loop_defer_cb drop, void *data)
{
    if (L.defer_len == L.defer_cap) {
        size_t ncap = L.defer_cap ? L.defer_cap * 2 : 64;
        struct defer_item *n = realloc(L.defer, ncap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        L.defer = n;
        L.defer_cap = ncap;
    }
    L.defer[L.defer_len].cb = cb;
    L.defer[L.defer_len].data = data;
    L.defer[L.defer_len].drop = drop;
    L.defer_len++;
    return 0;
}

int loop_defer(loop_defer_cb cb, void *data)
{
    return loop_defer_ex(cb, NULL, data);
}

/* Runs the deferred calls queued so far; calls queued while running wait for the next round. */
static int run_deferred(void)
{
    size_t n = L.defer_len;
    if (!n)
        return 0;
    struct defer_item *tmp = L.defer_run;
    size_t tcap = L.defer_run_cap;
    L.defer_run = L.defer;
    L.defer_run_cap = L.defer_cap;
    L.defer = tmp;
    L.defer_cap = tcap;
    L.defer_len = 0;
    for (size_t i = 0; i < n; i++)
        L.defer_run[i].cb(L.defer_run[i].data);
    return 1;
}

static int wait_events(struct epoll_event *evs, int64_t timeout_ns)
{
    if (L.have_pwait2) {
        struct timespec ts, *tsp = NULL;
        if (timeout_ns >= 0) {
            ts.tv_sec = timeout_ns / 1000000000ll;
            ts.tv_nsec = timeout_ns % 1000000000ll;
            tsp = &ts;
        }
#ifdef SYS_epoll_pwait2
        long r = syscall(SYS_epoll_pwait2, L.epfd, evs, LOOP_MAX_EVENTS, tsp, NULL, (size_t)8);
        if (r >= 0 || errno != ENOSYS)
            return (int)r;
#endif
        L.have_pwait2 = 0;
    }
    int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
    return epoll_wait(L.epfd, evs, LOOP_MAX_EVENTS, ms);
}

/* One turn: deferred calls, prepare hooks, a wait of at most the computed timeout (capped by
 * max_wait_ns when that is >= 0), watchers, expired timers. */
static int loop_turn(int64_t max_wait_ns)
{
    struct epoll_event evs[LOOP_MAX_EVENTS];
    while (run_deferred() && !L.stopping)
        ;
    int64_t timeout = loop_next_timeout();
    if (max_wait_ns >= 0 && (timeout < 0 || timeout > max_wait_ns))
        timeout = max_wait_ns;
    int n = wait_events(evs, timeout);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        return -1;
    }
    for (int i = 0; i < n; i++) {
        loop_watch *w = evs[i].data.ptr;
        w->cb(w, evs[i].events);
    }
    run_timers(loop_now_ns());
    return 0;
}

int64_t loop_next_timeout(void)
{
    int64_t timeout = -1;
    for (int i = 0; i < L.nprepare; i++) {
        int64_t t = L.prepare[i].cb(L.prepare[i].data);
        if (t >= 0 && (timeout < 0 || t < timeout))
            timeout = t;
    }
    if (L.defer_len || L.stopping)
        timeout = 0;
    if (L.heap_len) {
        uint64_t now = loop_now_ns();
        int64_t t = L.heap[1]->deadline > now ? (int64_t)(L.heap[1]->deadline - now) : 0;
        if (timeout < 0 || t < timeout)
            timeout = t;
    }
    return timeout;
}

int loop_fd(void)
{
    return L.epfd;
}

int loop_step(int64_t max_wait_ns)
{
    if (L.stopping)
        return 1;
    if (loop_turn(max_wait_ns) < 0) {
        L.stopping = 1;
        L.exit_code = 70; /* EX_SOFTWARE: epoll itself failed */
    }
    return L.stopping;
}

int loop_exit_code(void)
{
    return L.exit_code;
}

int loop_run(void)
{
    while (!L.stopping) {
        if (loop_turn(-1) < 0)
            return 70; /* EX_SOFTWARE: epoll itself failed */
    }
    return L.exit_code;
}
