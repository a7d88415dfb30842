/*
 * metrics.c: GET /metrics, CPU and memory of the sandbox as the agent sees it.
 *
 * cgroup aware: cgroup v2 (/sys/fs/cgroup/cpu.max, cpu.stat, memory.max, memory.current) is
 * tried first, then cgroup v1 (cpu/cpu.cfs_quota_us, cpuacct/cpuacct.usage,
 * memory/memory.limit_in_bytes, memory.usage_in_bytes), then the host (/proc/stat,
 * /proc/meminfo, the online CPU count). Memory "used" excludes inactive page cache, like
 * `docker stats`. CPU percentage is the usage between two samples: the previous request (or the
 * agent's start) and now, divided by the CPU count.
 *
 * GET /metrics/watch streams the same object once a second (the first at once) as an event
 * stream framed like command events: compact JSON followed by a blank line, no `data:` prefix.
 * It ends only when the client goes away.
 */
#include "execd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"

#define METRICS_WATCH_MS 1000

static int64_t g_prev_usage_ns = -1, g_prev_ms;

static int read_ll(const char *path, long long *out)
{
    FILE *f = fopen(path, "re");
    int ok;

    if (!f)
        return -1;
    ok = fscanf(f, "%lld", out) == 1;
    fclose(f);
    return ok ? 0 : -1;
}

/* Value of `key` in a "key value" file such as memory.stat or cpu.stat. */
static int read_kv(const char *path, const char *key, long long *out)
{
    FILE *f = fopen(path, "re");
    char k[128];
    long long v;
    int found = -1;

    if (!f)
        return -1;
    while (fscanf(f, "%127s %lld", k, &v) == 2)
        if (strcmp(k, key) == 0) {
            *out = v;
            found = 0;
            break;
        }
    fclose(f);
    return found;
}

static double cpu_count(void)
{
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "re");
    long long quota, period;
    double host = (double)sysconf(_SC_NPROCESSORS_ONLN), n = host;
    char q[32];

    if (f) {
        if (fscanf(f, "%31s %lld", q, &period) == 2 && strcmp(q, "max") != 0 && period > 0)
            n = (double)atoll(q) / (double)period;
        fclose(f);
    } else if (read_ll("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", &quota) == 0 && quota > 0 &&
               read_ll("/sys/fs/cgroup/cpu/cpu.cfs_period_us", &period) == 0 && period > 0) {
        n = (double)quota / (double)period;
    }
    if (n <= 0 || n > host)
        n = host > 0 ? host : 1;
    return n;
}

/* Total CPU time used (ns) by the cgroup, or by the host from /proc/stat. */
static int64_t cpu_usage_ns(void)
{
    long long v;
    FILE *f;

    if (read_kv("/sys/fs/cgroup/cpu.stat", "usage_usec", &v) == 0)
        return (int64_t)v * 1000;
    if (read_ll("/sys/fs/cgroup/cpuacct/cpuacct.usage", &v) == 0 ||
        read_ll("/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage", &v) == 0)
        return (int64_t)v;
    f = fopen("/proc/stat", "re");
    if (f) {
        long long u = 0, n = 0, s = 0;
        int ok = fscanf(f, "cpu %lld %lld %lld", &u, &n, &s) == 3;
        long hz = sysconf(_SC_CLK_TCK);
        fclose(f);
        if (ok && hz > 0)
            return (int64_t)((u + n + s) * (1000000000LL / hz));
    }
    return 0;
}

static void mem_host(long long *total, long long *used)
{
    long long t = 0, avail = 0;

    read_kv("/proc/meminfo", "MemTotal:", &t);
    read_kv("/proc/meminfo", "MemAvailable:", &avail);
    *total = t * 1024;
    *used = (t - avail) * 1024;
}

static void mem_usage(long long *total, long long *used)
{
    long long host_total, host_used, lim, cur, inactive = 0;
    FILE *f;
    char q[32];

    mem_host(&host_total, &host_used);
    *total = host_total;
    *used = host_used;
    f = fopen("/sys/fs/cgroup/memory.max", "re");
    if (f) {
        int ok = fscanf(f, "%31s", q) == 1;
        fclose(f);
        if (ok && read_ll("/sys/fs/cgroup/memory.current", &cur) == 0) {
            if (strcmp(q, "max") != 0 && atoll(q) > 0 && atoll(q) < host_total)
                *total = atoll(q);
            read_kv("/sys/fs/cgroup/memory.stat", "inactive_file", &inactive);
            *used = cur - inactive;
        }
    } else if (read_ll("/sys/fs/cgroup/memory/memory.usage_in_bytes", &cur) == 0) {
        if (read_ll("/sys/fs/cgroup/memory/memory.limit_in_bytes", &lim) == 0 && lim > 0 &&
            lim < host_total)
            *total = lim;
        read_kv("/sys/fs/cgroup/memory/memory.stat", "total_inactive_file", &inactive);
        *used = cur - inactive;
    }
    if (*used < 0)
        *used = 0;
    if (*used > *total)
        *used = *total;
}

void metrics_init(void)
{
    g_prev_usage_ns = cpu_usage_ns();
    g_prev_ms = now_ms();
}

/* One sample as compact JSON. */
static void metrics_sample(struct buf *b)
{
    double cpus = cpu_count(), pct = 0;
    int64_t usage = cpu_usage_ns(), now = now_ms();
    long long total, used;

    if (g_prev_usage_ns >= 0 && now > g_prev_ms && usage >= g_prev_usage_ns)
        pct = (double)(usage - g_prev_usage_ns) / ((double)(now - g_prev_ms) * 1e6) / cpus * 100;
    if (pct > 100)
        pct = 100;
    if (now - g_prev_ms >= 500) {
        g_prev_usage_ns = usage;
        g_prev_ms = now;
    }
    mem_usage(&total, &used);
    buf_printf(b,
               "{\"cpu_count\":%.2f,\"cpu_used_pct\":%.2f,\"mem_total_mib\":%.2f,"
               "\"mem_used_mib\":%.2f,\"timestamp\":%lld}",
               cpus, pct, (double)total / 1048576.0, (double)used / 1048576.0,
               (long long)wall_ms());
}

void metrics_handle(struct conn *c)
{
    struct buf b = {0};

    metrics_sample(&b);
    conn_reply_json(c, 200, &b);
    buf_free(&b);
}

void metrics_watch_handle(struct conn *c)
{
    conn_stream_begin(c, 200, "text/event-stream");
    c->watch_at = now_ms(); /* the first sample goes out on this loop iteration */
}

int64_t metrics_watch_tick(struct conn *c, int64_t now)
{
    struct buf b = {0};

    if (now < c->watch_at)
        return c->watch_at;
    /* a client that stopped reading gets no more samples until it catches up */
    if (c->out.len < EXECD_OUT_HIGH) {
        metrics_sample(&b);
        buf_puts(&b, "\n\n");
        conn_stream_write(c, b.data, b.len);
        buf_free(&b);
    }
    c->watch_at = now + METRICS_WATCH_MS;
    return c->watch_at;
}
