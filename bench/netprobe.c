/*
 * netprobe.c: a measuring client run INSIDE a sandbox by bench/netpolicy.sh (built static with
 * musl-gcc, copied in with `docker cp`): resolves a name with the system resolver
 * (/etc/resolv.conf), connects, sends one HTTP/1.0 GET and reads the whole answer. Prints
 * "resolve_us connect_us total_us bytes" on one line, or with -b the answer's body instead
 * (tests/lua/integration/lifecycle/netpolicy_spec.lua uses it: the test image's static busybox
 * cannot resolve names with the system resolver). Exit 1 when the name does not resolve, 3 when the
 * connection fails. netprobe HOST PORT PATH [-b]
 * Measuring (without -b), it first sleeps 50 ms: `docker exec` starts it while runc and the shim are still
 * busy with the exec, and on a 2-vCPU machine every hop of the lookup would wait for a CPU behind them
 * (a lookup through the policy's DNS filter has two more hops than one without, so it paid that twice).
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
    struct addrinfo hints, *ai;
    static char buf[1 << 16];
    long long t0, t1, t2, total = 0;
    int fd, n, body = argc == 5 && strcmp(argv[4], "-b") == 0, in_head = 1;

    if (argc != 4 && !body) {
        fprintf(stderr, "usage: netprobe HOST PORT PATH [-b]\n");
        return 2;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (!body)
        usleep(50000);
    t0 = now_us();
    if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0) {
        fprintf(stderr, "netprobe: cannot resolve %s\n", argv[1]);
        return 1;
    }
    t1 = now_us();
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        fprintf(stderr, "netprobe: cannot connect\n");
        return 3;
    }
    t2 = now_us();
    n = snprintf(buf, sizeof buf, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", argv[3], argv[1]);
    if (write(fd, buf, (size_t)n) != n)
        return 1;
    while ((n = (int)read(fd, buf, sizeof buf)) > 0) {
        total += n;
        if (body) {
            char *p = buf;
            if (in_head) { /* (the small answers of the tests have their head in the first read) */
                char *end = strstr(buf, "\r\n\r\n");
                if (!end)
                    continue;
                p = end + 4;
                in_head = 0;
            }
            fwrite(p, 1, (size_t)(buf + n - p), stdout);
        }
    }
    if (body)
        return 0;
    printf("%lld %lld %lld %lld\n", t1 - t0, t2 - t1, now_us() - t0, total);
    return 0;
}
