/*
 * proxy.c: /proxy/{port}/... for ports other than the agent's own: a reverse proxy to
 * 127.0.0.1:{port}.
 *
 * After the request head is rewritten (target without the /proxy/{port} prefix, Host set to the
 * target, hop-by-hop and credential headers dropped, Connection: close), the connection
 * becomes a byte tunnel: the rest of the client's bytes (body framing included, so chunked
 * uploads pass through untouched) go to the backend, and the backend's bytes (its status line,
 * headers and body, flushed as they arrive, so SSE works) go to the client. The backend closes
 * after its response because we asked it to, and then we close the client connection.
 *
 * WebSocket: when the client asks for an upgrade, Upgrade and Connection: Upgrade are kept and
 * the tunnel simply continues after the backend's 101, so frames flow both ways until either
 * side closes.
 *
 * Back-pressure: at most EXECD_OUT_HIGH bytes are queued in each direction; the side producing
 * more is not read until the queue drains. Connecting is bounded by PROXY_CONNECT_MS; failures
 * before any backend byte was relayed are answered 502 with a JSON body.
 */
#include "execd.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROXY_CONNECT_MS 10000

struct proxy {
    struct ev ev;
    int fd;
    int port;
    struct conn *c;
    struct buf to_up;
    int connected;
    int shut_wr;
    uint32_t events;
    int64_t deadline;
};

static int drop_header(const char *name, int upgrade)
{
    static const char *const drop[] = {
        "connection", "keep-alive", "proxy-authenticate",   "proxy-authorization",  "te",
        "trailer",    "host",       "x-execd-access-token", "open-sandbox-api-key", NULL};
    int i;

    for (i = 0; drop[i]; i++)
        if (strcasecmp(name, drop[i]) == 0)
            return 1;
    return strcasecmp(name, "upgrade") == 0 && !upgrade;
}

static void px_sync(struct proxy *px)
{
    uint32_t ev = 0;

    if (px->fd < 0)
        return;
    if (!px->connected || px->to_up.len)
        ev |= EPOLLOUT;
    if (px->connected && px->c->out.len < EXECD_OUT_HIGH)
        ev |= EPOLLIN;
    if (ev != px->events) {
        loop_mod(px->fd, ev, &px->ev);
        px->events = ev;
    }
}

static void px_fail(struct proxy *px, const char *why)
{
    struct conn *c = px->c;

    c->keep_alive = 0;
    proxy_free(c);
    conn_reply_error(c, 502, "RUNTIME_ERROR", "Could not connect to the backend 127.0.0.1:%d: %s",
                     px->port, why);
}

int proxy_start(struct conn *c, int port, const char *rest)
{
    struct proxy *px = calloc(1, sizeof(*px));
    struct sockaddr_in sa;
    int i, upgrade = c->req.upgrade && http_header(&c->req, "Upgrade");

    if (!px)
        goto fail;
    px->fd = -1;
    px->port = port;
    px->c = c;
    px->ev.kind = EV_PROXY;
    px->ev.obj = px;
    c->px = px;
    buf_printf(&px->to_up, "%s %s%s HTTP/1.1\r\n", c->req.method, *rest == '/' ? "" : "/", rest);
    for (i = 0; i < c->req.nheaders; i++) {
        const struct http_header *h = &c->req.headers[i];
        if (!drop_header(h->name, upgrade))
            buf_printf(&px->to_up, "%s: %s\r\n", h->name, h->value);
    }
    buf_printf(&px->to_up, "Host: 127.0.0.1:%d\r\nConnection: %s\r\n\r\n", port,
               upgrade ? "Upgrade" : "close");

    px->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (px->fd < 0)
        goto fail;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(px->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
        goto fail;
    px->deadline = now_ms() + PROXY_CONNECT_MS;
    px->events = EPOLLOUT;
    loop_add(px->fd, EPOLLOUT, &px->ev);
    c->state = C_PROXY;
    return 0;
fail:
    /* answer after the request body, so the connection could in principle be reused */
    {
        static char msg[160];
        snprintf(msg, sizeof(msg), "Could not connect to the backend 127.0.0.1:%d: %s", port,
                 strerror(errno));
        c->err_status = 502;
        c->err_code = "RUNTIME_ERROR";
        c->err_msg = msg;
    }
    proxy_free(c);
    free(c->px);
    c->px = NULL;
    c->body_mode = BODY_DISCARD;
    c->state = C_BODY;
    return -1;
}

static void px_write(struct proxy *px)
{
    while (px->fd >= 0 && px->to_up.len) {
        ssize_t n = send(px->fd, px->to_up.data, px->to_up.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                px->c->keep_alive = 0;
                px->c->state = C_CLOSING;
                conn_flush(px->c);
            }
            return;
        }
        buf_consume(&px->to_up, (size_t)n);
    }
    if (px->fd >= 0 && !px->to_up.len && px->c->peer_eof && !px->c->in.len && !px->shut_wr) {
        shutdown(px->fd, SHUT_WR);
        px->shut_wr = 1;
    }
}

void proxy_client_data(struct conn *c)
{
    struct proxy *px = c->px;
    size_t room;

    if (!px || px->fd < 0)
        return;
    if (px->to_up.len < EXECD_OUT_HIGH && c->in.len) {
        room = EXECD_OUT_HIGH - px->to_up.len;
        if (room > c->in.len)
            room = c->in.len;
        buf_append(&px->to_up, c->in.data, room);
        buf_consume(&c->in, room);
    }
    if (px->connected)
        px_write(px);
    if (!c->dead && c->px)
        px_sync(px);
}

void proxy_client_writable(struct conn *c)
{
    if (c->px && c->px->fd >= 0)
        px_sync(c->px);
}

static void px_read(struct proxy *px)
{
    struct conn *c = px->c;

    while (px->fd >= 0 && c->out.len < EXECD_OUT_HIGH) {
        ssize_t n;
        if (buf_reserve(&c->out, 65536) < 0)
            return;
        n = recv(px->fd, c->out.data + c->out.len, 65536, 0);
        if (n > 0) {
            c->out.len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        /* backend finished (or failed): deliver what we have, then close the client */
        proxy_free(c);
        c->keep_alive = 0;
        c->state = C_CLOSING;
        break;
    }
    conn_flush(c);
}

void proxy_on_event(struct ev *ev, uint32_t events)
{
    struct proxy *px = ev->obj;
    struct conn *c = px->c;

    if (px->fd < 0 || c->dead)
        return;
    if (!px->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (getsockopt(px->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            px_fail(px, strerror(err));
            return;
        }
        px->connected = 1;
    }
    if (events & EPOLLOUT)
        px_write(px);
    if (px->fd >= 0 && !c->dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        px_read(px);
    if (!c->dead && c->px && c->px->fd >= 0) {
        proxy_client_data(c);
        conn_sync(c);
    }
}

void proxy_free(struct conn *c)
{
    struct proxy *px = c->px;

    if (!px)
        return;
    if (px->fd >= 0) {
        loop_del(px->fd);
        close(px->fd);
        px->fd = -1;
    }
    buf_free(&px->to_up);
}

int64_t proxy_tick(struct conn *c, int64_t now)
{
    struct proxy *px = c->px;

    if (!px || px->fd < 0 || px->connected)
        return INT64_MAX;
    if (now >= px->deadline) {
        px_fail(px, "connect timed out");
        return INT64_MAX;
    }
    return px->deadline;
}
