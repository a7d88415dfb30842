/*
 * bench_embed.c: the cost of an in-process lifecycle call (osb_call) on an engine without Docker:
 * osb_sandbox_list on an empty store and osb_sandbox_get of an unknown id, N calls each; prints a
 * markdown table. Run by bench/embed.sh: bench_embed ROOT WORKDIR [N].
 */
#define _GNU_SOURCE
#include "opensandbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s ROOT WORKDIR [N]\n", argv[0]);
        return 2;
    }
    int n = argc > 3 ? atoi(argv[3]) : 20000;
    char cfg[1024];
    snprintf(
        cfg, sizeof(cfg),
        "return { server = { port = %d, log_level = 'ERROR' }, store = { path = '%s/inproc/db' },"
        " docker = { host = 'unix:///nonexistent/docker.sock' }, hooks = { dir = false } }",
        30000 + (int)(now() * 1000) % 20000, argv[2]);
    osb_engine *e = osb_new();
    osb_set_root(e, argv[1]);
    osb_config_string(e, cfg, "lua");
    if (osb_start(e) != 0) {
        fprintf(stderr, "bench_embed: %s\n", osb_error(e));
        osb_free(e);
        return 1;
    }
    const char *names[] = {"osb_sandbox_list (empty store, 200)",
                           "osb_sandbox_get (unknown id, 404)"};
    printf("| in-process call (%d calls) | us per call | calls/s |\n|---|---|---|\n", n);
    for (int k = 0; k < 2; k++) {
        double t0 = now();
        for (int i = 0; i < n; i++) {
            char *out = NULL;
            int st = k == 0 ? osb_sandbox_list(e, NULL, &out) : osb_sandbox_get(e, "nope", &out);
            free(out);
            if (st != (k == 0 ? 200 : 404)) {
                fprintf(stderr, "bench_embed: unexpected status %d\n", st);
                osb_free(e);
                return 1;
            }
        }
        double dt = now() - t0;
        printf("| %s | %.1f | %.0f |\n", names[k], dt / n * 1e6, n / dt);
    }
    osb_free(e);
    return 0;
}
