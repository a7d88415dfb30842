/*
 * test_timer_heap.c: the loop's timer heap fires timers in deadline order, and cancelled timers
 * never fire, including cancellation from inside another timer's callback.
 */
#include "loop.h"

#include <stdio.h>
#include <stdlib.h>

#define N 200

static int fired[N];
static int order[N];
static int nfired;
static loop_timer timers[N];

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void on_fire(loop_timer *t)
{
    int i = (int)(t - timers);
    fired[i]++;
    order[nfired++] = i;
    if (i == 10)
        loop_timer_stop(&timers[11]); /* cancel a sibling from a callback */
    if (nfired == N - N / 4 - 1)
        loop_stop(0);
}

static loop_timer stopper;
static void on_stop(loop_timer *t)
{
    (void)t;
    loop_stop(0);
}

int main(void)
{
    CHECK(loop_init() == 0);
    /* deadlines in a scrambled order: i -> (i * 37) % N ms */
    for (int i = 0; i < N; i++) {
        timers[i].cb = on_fire;
        loop_timer_start(&timers[i], (uint64_t)((i * 37) % N) * 100000ull);
    }
    /* restart moves a timer */
    loop_timer_start(&timers[0], 5000000ull);
    /* cancel every 4th one (except 0 and 10, 11) */
    int cancelled = 0;
    for (int i = 4; i < N; i += 4) {
        loop_timer_stop(&timers[i]);
        loop_timer_stop(&timers[i]); /* idempotent */
        cancelled++;
    }
    CHECK(cancelled == N / 4 - 1);
    stopper.cb = on_stop;
    loop_timer_start(&stopper, 100000000ull);
    CHECK(loop_run() == 0);
    for (int i = 0; i < N; i++) {
        if (i % 4 == 0 && i != 0)
            CHECK(fired[i] == 0);
    }
    /* 11 is cancelled by 10 only if 10 fires first; 10 fires at 370 % 200 = 170 * 0.1 ms, 11 at 7 *
     * 0.1 ms */
    CHECK(fired[11] == 1);
    for (int k = 1; k < nfired; k++) {
        int a = order[k - 1], b = order[k];
        CHECK(timers[a].deadline <= timers[b].deadline);
    }
    printf("timer heap: %d timers fired in order, cancelled ones silent\n", nfired);
    loop_free();
    return 0;
}
