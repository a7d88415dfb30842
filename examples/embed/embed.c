/*
 * examples/embed/embed.c: a program that embeds the OpenSandbox server (libopensandbox).
 *
 * It configures an engine from a string (its own Docker instance name and state directory), adds an
 * HTTP route written in Lua, starts the engine, drives it from its own poll() loop while it asks
 * that route over HTTP, then creates a sandbox in-process (no HTTP), waits for it to run, lists it,
 * deletes it and stops the engine. Exit status 0 when every step worked.
 *
 *   cc embed.c $(pkg-config --cflags --libs opensandbox) -o embed
 *   ./embed [image]          (default image: local/busybox:latest; needs a Docker daemon)
 *
 * The Lua tree is found through $OPENSANDBOX_ROOT, else the install prefix's share/opensandbox.
 */
#define _GNU_SOURCE
#include <opensandbox.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* The route: GET /embed/hello/{name}, with the API's auth, request id and error envelope. */
static const char *ROUTES =
    "return { routes = {\n"
    "  { method = 'GET', path = '/embed/hello/{name}', summary = 'Greets from the host program',\n"
    "    handler = function(ctx)\n"
    "      return { status = 200, json = { hello = ctx.params.name, from = 'embed example' } }\n"
    "    end },\n"
    "} }\n";

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
        return -1;
    close(fd);
    return ntohs(sa.sin_port);
}

/* One HTTP GET to the engine, with the engine driven by this program's poll() loop meanwhile. */
static int http_get(osb_engine *e, int port, const char *path, char *resp, size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS))
        return -1;
    char req[512];
    int len =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    size_t sent = 0, got = 0;
    for (;;) {
        int timeout_ms;
        if (osb_step(e, &timeout_ms) != 1)
            break;
        struct pollfd p[2] = {{.fd = osb_fd(e), .events = POLLIN},
                              {.fd = fd, .events = sent < (size_t)len ? POLLOUT : POLLIN}};
        poll(p, 2, timeout_ms < 0 || timeout_ms > 1000 ? 1000 : timeout_ms);
        if (sent < (size_t)len && (p[1].revents & POLLOUT)) {
            ssize_t w = send(fd, req + sent, (size_t)len - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
        } else if (p[1].revents & (POLLIN | POLLHUP)) {
            ssize_t r = recv(fd, resp + got, n - 1 - got, 0);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
    }
    close(fd);
    resp[got] = '\0';
    return (int)got;
}

/* The value of "key":"..." in a JSON text (enough for this example's fixed shapes). */
static void json_string(const char *json, const char *key, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    const char *p = json ? strstr(json, pat) : NULL;
    out[0] = '\0';
    if (!p)
        return;
    p += strlen(pat);
    size_t i = 0;
    while (p[i] && p[i] != '"' && i + 1 < n) {
        out[i] = p[i];
        i++;
    }
    out[i] = '\0';
}

int main(int argc, char **argv)
{
    const char *image = argc > 1 ? argv[1] : "local/busybox:latest";
    char dir[] = "/tmp/osb-embed-example.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    int port = free_port();
    char config[2048];
    snprintf(config, sizeof(config),
             "return {\n"
             "  server = { host = '127.0.0.1', port = %d, log_level = 'WARNING' },\n"
             "  store = { path = '%s/state/opensandbox.db' },\n"
             "  docker = { instance = 'embed-example-%d' },\n"
             "  hooks = { dir = false },\n"
             "}\n",
             port, dir, (int)getpid());

    osb_engine *e = osb_new();
    if (!e || osb_config_string(e, config, "lua") != 0 ||
        osb_add_routes(e, "embed.lua", ROUTES) != 0) {
        fprintf(stderr, "embed: cannot configure the engine: %s\n", e ? osb_error(e) : "osb_new");
        return 1;
    }
    if (osb_start(e) != 0) {
        fprintf(stderr, "embed: the engine did not start: %s\n", osb_error(e));
        osb_free(e);
        return 1;
    }
    printf("embed: libopensandbox %s serving on 127.0.0.1:%d as docker instance embed-example-%d\n",
           osb_version(), port, (int)getpid());
    int rc = 1;
    char resp[4096], *out = NULL, id[128] = "", state[64] = "";

    /* 1. the route added above, over HTTP */
    if (http_get(e, port, "/embed/hello/world", resp, sizeof(resp)) <= 0 ||
        !strstr(resp, "\"hello\":\"world\"")) {
        fprintf(stderr, "embed: GET /embed/hello/world failed:\n%s\n", resp);
        goto done;
    }
    printf("embed: GET /embed/hello/world -> %s\n", strstr(resp, "\r\n\r\n") + 4);

    /* 2. a sandbox, in-process: create, wait until Running, list, delete */
    char request[512];
    snprintf(request, sizeof(request),
             "{\"image\":{\"uri\":\"%s\"},\"entrypoint\":[\"sleep\",\"600\"],\"timeout\":600,"
             "\"resourceLimits\":{},\"metadata\":{\"example\":\"embed\"}}",
             image);
    int status = osb_sandbox_create(e, request, &out);
    json_string(out, "id", id, sizeof(id));
    printf("embed: create -> %d %s\n", status, out);
    free(out);
    out = NULL;
    if (status != 202 || !id[0])
        goto done;
    for (int i = 0; i < 600; i++) { /* up to a minute */
        status = osb_sandbox_get(e, id, &out);
        json_string(out, "state", state, sizeof(state));
        free(out);
        out = NULL;
        if (status != 200 || strcmp(state, "Running") == 0 || strcmp(state, "Failed") == 0)
            break;
        /* keep serving while waiting: step the engine for 100 ms */
        for (int t = 0; t < 10; t++) {
            int timeout_ms;
            osb_step(e, &timeout_ms);
            struct pollfd p = {.fd = osb_fd(e), .events = POLLIN};
            poll(&p, 1, 10);
        }
    }
    printf("embed: sandbox %s is %s\n", id, state);
    /* the engine left this program's scheduling priority alone (server.nice is the binary's) */
    errno = 0;
    printf("embed: nice %d\n", getpriority(PRIO_PROCESS, 0));
    if (strcmp(state, "Running") != 0)
        goto done;
    status = osb_sandbox_list(e, "metadata=example%3Dembed", &out);
    printf("embed: list -> %d (%s)\n", status,
           out && strstr(out, id) ? "the sandbox is listed" : "missing");
    if (status != 200 || !out || !strstr(out, id))
        goto done;
    rc = 0;

done:
    free(out);
    out = NULL;
    if (id[0]) {
        status = osb_sandbox_delete(e, id, &out);
        printf("embed: delete -> %d\n", status);
        if (status != 204)
            rc = 1;
        free(out);
    }
    osb_free(e); /* drains, stops, releases everything */
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "embed: cannot remove %s\n", dir);
    printf("embed: %s\n", rc == 0 ? "OK" : "FAILED");
    return rc;
}
