/*
 * net.c: the `core.net` Lua module: what network policy enforcement needs from the kernel.
 *
 *   nft(pid, script)        runs an nftables script (libnftables) in the network namespace of
 *                           process `pid` (0: the server's own) on a worker thread, which joins
 *                           that namespace for the call; yields (see "nftables in a namespace")
 *   gate(pid, path)         writes one byte to the FIFO at `path` inside process `pid`'s root
 *                           (no symbolic link followed, never blocking): the start gate
 *   nl_open(pid)            a netfilter netlink socket opened once in process `pid`'s network
 *                           namespace (bound to it for its life: no setns per call) for the hot
 *                           path of the DNS filter: h:elements(table, set, adds, dels) adds and
 *                           removes IPv4 elements of an inet set in one batch (libnftnl + libmnl)
 *   udp_bind(host, port)    a UDP socket; sock:recv() yields for the next datagram
 *   udp_query(host, port, data, timeout)
 *                           sends one datagram from a fresh socket (kernel-chosen port) and yields
 *                           for the answer whose first two bytes (a DNS id) match
 *   dns_parse(msg)          the parts of a DNS message the policy needs, parsed by glibc's
 * libresolv
 *
 * The DNS filtering itself (which names resolve, which addresses get allowed) is Lua
 * (lua/runtimes/docker/netpolicy.lua); this file only moves bytes and talks to the kernel.
 */
#define _GNU_SOURCE
#include "loop.h"
#include "task.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <linux/netlink.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <math.h>
#include <netinet/in.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <nftables/libnftables.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define UDP_MT "core.net.udp"
#define DGRAM_MAX 65536

static int push_fail(lua_State *L, const char *what)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, strerror(errno));
    return 2;
}

/* Enters the network namespace of process `pid` on this thread. *self gets an fd of the namespace
 * left (setns back to it, then close it). Returns 0, or -1 with errno set and *why naming the step.
 */
static int netns_enter(long long pid, int *self, const char **why)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%lld/ns/net", pid);
    int target = open(path, O_RDONLY | O_CLOEXEC);
    if (target < 0) {
        *why = "cannot open the sandbox's network namespace";
        return -1;
    }
    *self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (*self < 0) {
        int e = errno;
        close(target);
        errno = e;
        *why = "cannot open the server's network namespace";
        return -1;
    }
    if (setns(target, CLONE_NEWNET) < 0) {
        int e = errno;
        close(target);
        close(*self);
        *self = -1;
        errno = e;
        *why = "cannot enter the sandbox's network namespace";
        return -1;
    }
    close(target);
    return 0;
}

/* ---------------------------------------------------------------- nftables in a namespace */

/* A libnftables call costs 0.1-1 ms on an idle host and 5-40 ms while dockerd and runc keep both
 * CPUs busy (a warm pool refilling: one table per new member); on the loop's thread every request
 * waited that long. So the calls run on one worker thread of their own, in the order they were made
 * (libnftables keeps some process-wide state: never two calls at once), and a task that calls
 * core.net.nft yields until its call is done. A caller that is not a task (start-up code, a script)
 * waits for the worker in place. The worker joins the sandbox's namespace for a call and returns to
 * the server's before the next (setns changes only the calling thread's namespace). */

struct nft_job {
    struct nft_job *next;
    long long pid;
    char *script;
    int ok;        /* the result: 1, or 0 with `text` the error */
    char *text;    /* nft's output, or the error (malloc'd; NULL when it could not be had) */
    task *t;       /* the waiting task; NULL once cancelled, or for a caller waiting in place */
    int cancelled; /* (loop thread) the task went away: free the job when it comes back */
    int done;      /* (under mu) for a caller waiting in place */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work, finished_cv;
    struct nft_job *head, *tail; /* to run */
    struct nft_job *finished;    /* run, for the loop to hand back */
    int efd;                     /* the worker's "a job is done" signal to the loop */
    loop_watch w;
    pthread_t th;
    int started, stop;
} NW = {.mu = PTHREAD_MUTEX_INITIALIZER,
        .work = PTHREAD_COND_INITIALIZER,
        .finished_cv = PTHREAD_COND_INITIALIZER,
        .efd = -1};

static char *dup_or_null(const char *a, const char *b)
{
    size_t na = a ? strlen(a) : 0, nb = b ? strlen(b) : 0;
    char *out = malloc(na + nb + 1);
    if (!out)
        return NULL;
    memcpy(out, a ? a : "", na);
    memcpy(out + na, b ? b : "", nb);
    out[na + nb] = '\0';
    return out;
}

/* Runs one job on the worker thread. */
static void nft_run_job(struct nft_job *j)
{
    int self = -1;
    const char *why;

    j->ok = 0;
    if (j->pid > 0 && netns_enter(j->pid, &self, &why) < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: %s", why, strerror(errno));
        j->text = dup_or_null(msg, NULL);
        return;
    }
    /* libnftables ends the whole process (exit) when it cannot open its netlink socket (no such
     * address family: a seccomp filter, a systemd RestrictAddressFamilies=, a kernel without
     * nf_tables): try one first, so that this is an error the caller sees instead. */
    int probe = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (probe < 0) {
        j->text = dup_or_null("cannot open a netfilter netlink socket: ", strerror(errno));
    } else {
        close(probe);
        struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
        if (!ctx) {
            j->text = dup_or_null("nft: cannot create a context", NULL);
        } else {
            nft_ctx_buffer_output(ctx);
            nft_ctx_buffer_error(ctx);
            if (nft_run_cmd_from_buffer(ctx, j->script) == 0) {
                j->ok = 1;
                j->text = dup_or_null(nft_ctx_get_output_buffer(ctx), NULL);
            } else {
                const char *msg = nft_ctx_get_error_buffer(ctx);
                j->text = dup_or_null(msg && *msg ? msg : "nft: the command failed", NULL);
            }
            nft_ctx_free(ctx);
        }
    }
    if (self >= 0) {
        /* The worker must never stay in a sandbox's namespace: the next call would run there.
         * Nothing sensible is left to do if the way back fails. */
        if (setns(self, CLONE_NEWNET) < 0) {
            fprintf(stderr, "core.net: cannot return to the server's network namespace: %s\n",
                    strerror(errno));
            abort();
        }
        close(self);
    }
}

static void *nft_worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&NW.mu);
    for (;;) {
        while (!NW.stop && !NW.head)
            pthread_cond_wait(&NW.work, &NW.mu);
        if (!NW.head) /* stopping, nothing queued */
            break;
        struct nft_job *j = NW.head;
        NW.head = j->next;
        if (!NW.head)
            NW.tail = NULL;
        pthread_mutex_unlock(&NW.mu);
        nft_run_job(j);
        pthread_mutex_lock(&NW.mu);
        if (j->t || j->cancelled) {
            j->next = NW.finished;
            NW.finished = j;
            uint64_t one = 1;
            ssize_t n = write(NW.efd, &one, sizeof(one));
            (void)n; /* (a full counter already wakes the loop) */
        } else {
            j->done = 1; /* a caller waiting in place */
            pthread_cond_broadcast(&NW.finished_cv);
        }
    }
    pthread_mutex_unlock(&NW.mu);
    return NULL;
}

static void nft_job_free(struct nft_job *j)
{
    free(j->script);
    free(j->text);
    free(j);
}

/* The loop side: hands each finished job back to its task (or drops a cancelled one). */
static void nft_on_done(loop_watch *lw, uint32_t events)
{
    uint64_t v;
    (void)lw;
    (void)events;
    ssize_t n = read(NW.efd, &v, sizeof(v));
    (void)n;
    pthread_mutex_lock(&NW.mu);
    struct nft_job *done = NW.finished;
    NW.finished = NULL;
    pthread_mutex_unlock(&NW.mu);
    while (done) {
        struct nft_job *j = done;
        done = j->next;
        task *t = j->t;
        if (t && !j->cancelled) {
            t->wait = NULL;
            t->cancel = NULL;
            if (j->ok)
                lua_pushboolean(t->L, 1);
            else
                lua_pushnil(t->L);
            lua_pushstring(t->L, j->text ? j->text : "core.net: out of memory");
            nft_job_free(j);
            task_resume(t, 2);
        } else {
            nft_job_free(j);
        }
    }
}

static void nft_cancel(task *t)
{
    struct nft_job *j = t->wait;
    /* (the worker may be running it: it comes back through the finished list and is freed there) */
    pthread_mutex_lock(&NW.mu);
    j->cancelled = 1;
    j->t = NULL;
    pthread_mutex_unlock(&NW.mu);
}

static int nft_start(void)
{
    if (NW.started)
        return 0;
    NW.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (NW.efd < 0)
        return -1;
    NW.w.fd = NW.efd;
    NW.w.events = EPOLLIN;
    NW.w.cb = nft_on_done;
    NW.w.data = NULL;
    if (loop_watch_add(&NW.w) < 0) {
        close(NW.efd);
        NW.efd = -1;
        return -1;
    }
    NW.stop = 0;
    if (pthread_create(&NW.th, NULL, nft_worker, NULL) != 0) {
        loop_watch_del(&NW.w);
        close(NW.efd);
        NW.efd = -1;
        return -1;
    }
    NW.started = 1;
    return 0;
}

/* Stops the worker after what is queued (the module's __gc: at the Lua state's close). */
static int nft_stop(lua_State *L)
{
    (void)L;
    if (!NW.started)
        return 0;
    pthread_mutex_lock(&NW.mu);
    NW.stop = 1;
    pthread_cond_signal(&NW.work);
    pthread_mutex_unlock(&NW.mu);
    pthread_join(NW.th, NULL);
    NW.started = 0;
    loop_watch_del(&NW.w);
    close(NW.efd);
    NW.efd = -1;
    while (NW.finished) { /* (their tasks are gone with the state) */
        struct nft_job *j = NW.finished;
        NW.finished = j->next;
        nft_job_free(j);
    }
    return 0;
}

static int l_nft(lua_State *L)
{
    lua_Integer pid = luaL_optinteger(L, 1, 0);
    size_t len;
    const char *script = luaL_checklstring(L, 2, &len);

    if (pid < 0)
        return luaL_argerror(L, 1, "pid must be >= 0");
    if (nft_start() < 0)
        return push_fail(L, "core.net: cannot start the nftables worker");
    struct nft_job *j = calloc(1, sizeof(*j));
    if (!j || !(j->script = malloc(len + 1))) {
        free(j);
        return luaL_error(L, "core.net: out of memory");
    }
    memcpy(j->script, script, len + 1);
    j->pid = (long long)pid;
    task *t = task_of(L);
    int in_task = t && lua_isyieldable(L);
    j->t = in_task ? t : NULL;
    pthread_mutex_lock(&NW.mu);
    if (NW.tail)
        NW.tail->next = j;
    else
        NW.head = j;
    NW.tail = j;
    pthread_cond_signal(&NW.work);
    if (in_task) {
        pthread_mutex_unlock(&NW.mu);
        t->wait = j;
        t->cancel = nft_cancel;
        return lua_yield(L, 0);
    }
    while (!j->done) /* not a task: wait in place */
        pthread_cond_wait(&NW.finished_cv, &NW.mu);
    pthread_mutex_unlock(&NW.mu);
    if (j->ok)
        lua_pushboolean(L, 1);
    else
        lua_pushnil(L);
    lua_pushstring(L, j->text ? j->text : "core.net: out of memory");
    nft_job_free(j);
    return 2;
}

/* ---------------------------------------------------------------- set elements over netlink */

/* The DNS filter adds the addresses of every allowed name to a set in the sandbox's namespace
 * before it answers: that call is on the path of the sandbox's first connection. libnftables
 * costs ~0.1-1 ms a call (a context, the cache it fetches before an `add element`, the setns
 * pair); a netlink socket opened once in the namespace and kept with the sandbox's entry sends
 * one batch and reads its acknowledgements, tens of microseconds. The socket holds a reference on
 * the namespace: it must be closed with the sandbox (h:close(); __gc as a last resort). */

#define NL_MT "core.net.nl"
#define NL_MAX_ELEMS 256 /* per list and call: the caller splits longer lists */

struct nl {
    struct mnl_socket *sock;
    uint32_t seq;
};

static int l_nl_open(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    if (pid <= 0)
        return luaL_argerror(L, 1, "pid must be > 0");
    struct nl *h = lua_newuserdatauv(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    luaL_setmetatable(L, NL_MT);
    int self;
    const char *why;
    if (netns_enter((long long)pid, &self, &why) < 0)
        return push_fail(L, why);
    /* a netlink socket belongs to the namespace it was made in, wherever it is used later */
    h->sock = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
    int e = errno;
    if (setns(self, CLONE_NEWNET) < 0) {
        fprintf(stderr, "core.net: cannot return to the server's network namespace: %s\n",
                strerror(errno));
        abort();
    }
    close(self);
    if (!h->sock) {
        errno = e;
        return push_fail(L, "cannot open a netfilter netlink socket");
    }
    int one = 1;
    /* acknowledgements without a copy of the request */
    setsockopt(mnl_socket_get_fd(h->sock), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    if (mnl_socket_bind(h->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
        e = errno;
        mnl_socket_close(h->sock);
        h->sock = NULL;
        errno = e;
        return push_fail(L, "cannot bind the netfilter netlink socket");
    }
    h->seq = (uint32_t)loop_now_ns();
    return 1;
}

static struct nl *check_nl(lua_State *L)
{
    struct nl *h = luaL_checkudata(L, 1, NL_MT);
    if (!h->sock)
        luaL_error(L, "core.net: the netlink socket is closed");
    return h;
}

/* A set (table, name) holding the elements of the list at `idx`: addresses (dels) or {addr,
 * timeout_s} pairs (adds). NULL with a message on the Lua stack on a bad element. */
static struct nftnl_set *build_set(lua_State *L, const char *table, const char *name, int idx,
                                   int with_timeout, const char **bad)
{
    struct nftnl_set *s = nftnl_set_alloc();
    if (!s)
        return NULL;
    nftnl_set_set_str(s, NFTNL_SET_TABLE, table);
    nftnl_set_set_str(s, NFTNL_SET_NAME, name);
    lua_Integer n = luaL_len(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
        struct in_addr a;
        lua_Integer ttl = 0;
        lua_geti(L, idx, i);
        if (with_timeout) {
            if (lua_type(L, -1) != LUA_TTABLE) {
                lua_pop(L, 1);
                *bad = "an element to add is {address, timeout}";
                nftnl_set_free(s);
                return NULL;
            }
            lua_geti(L, -1, 2);
            ttl = lua_tointeger(L, -1);
            lua_pop(L, 1);
            lua_geti(L, -1, 1);
            lua_remove(L, -2);
        }
        const char *addr = lua_tostring(L, -1);
        int ok = addr && inet_pton(AF_INET, addr, &a) == 1 && (!with_timeout || ttl > 0);
        lua_pop(L, 1);
        if (!ok) {
            *bad = with_timeout ? "not an IPv4 address with a timeout > 0" : "not an IPv4 address";
            nftnl_set_free(s);
            return NULL;
        }
        struct nftnl_set_elem *e = nftnl_set_elem_alloc();
        if (!e) {
            nftnl_set_free(s);
            return NULL;
        }
        nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, &a, sizeof a);
        if (with_timeout)
            nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, (uint64_t)ttl * 1000);
        nftnl_set_elem_add(s, e);
    }
    return s;
}

/* h:elements(table, set, adds, dels) -> true | nil, err. One transaction on inet `table`'s set:
 * removes the addresses of `dels` (a list of strings), then adds `adds` (a list of {address,
 * timeout seconds}); at most NL_MAX_ELEMS of each. Nothing is changed when any part fails. */
static int nl_elements(lua_State *L)
{
    struct nl *h = check_nl(L);
    const char *table = luaL_checkstring(L, 2);
    const char *name = luaL_checkstring(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    int has_dels = !lua_isnoneornil(L, 5);
    if (has_dels)
        luaL_checktype(L, 5, LUA_TTABLE);
    lua_Integer nadd = luaL_len(L, 4), ndel = has_dels ? luaL_len(L, 5) : 0;
    luaL_argcheck(L, nadd <= NL_MAX_ELEMS, 4, "too many elements");
    luaL_argcheck(L, ndel <= NL_MAX_ELEMS, 5, "too many elements");
    if (nadd == 0 && ndel == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    const char *bad = NULL;
    struct nftnl_set *del = NULL, *add = NULL;
    if (ndel > 0 && !(del = build_set(L, table, name, 5, 0, &bad)))
        return luaL_argerror(L, 5, bad ? bad : "out of memory");
    if (nadd > 0 && !(add = build_set(L, table, name, 4, 1, &bad))) {
        if (del)
            nftnl_set_free(del);
        return luaL_argerror(L, 4, bad ? bad : "out of memory");
    }
    /* an element is well under 64 bytes in a message */
    size_t cap = (size_t)(nadd + ndel) * 64 + 1024;
    if (cap < (size_t)MNL_SOCKET_BUFFER_SIZE)
        cap = MNL_SOCKET_BUFFER_SIZE;
    char *buf = calloc(1, cap); /* zeroed: the attributes' padding goes to the kernel */
    if (!buf) {
        if (del)
            nftnl_set_free(del);
        if (add)
            nftnl_set_free(add);
        return luaL_error(L, "out of memory");
    }
    struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, cap);
    uint32_t first = h->seq, seq = h->seq;
    int acks = 0;
    nftnl_batch_begin(mnl_nlmsg_batch_current(b), seq++);
    mnl_nlmsg_batch_next(b);
    if (del) {
        struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_DELSETELEM,
                                                     NFPROTO_INET, NLM_F_ACK, seq++);
        nftnl_set_elems_nlmsg_build_payload(nlh, del);
        mnl_nlmsg_batch_next(b);
        acks++;
    }
    if (add) {
        struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWSETELEM,
                                                     NFPROTO_INET, NLM_F_CREATE | NLM_F_ACK, seq++);
        nftnl_set_elems_nlmsg_build_payload(nlh, add);
        mnl_nlmsg_batch_next(b);
        acks++;
    }
    nftnl_batch_end(mnl_nlmsg_batch_current(b), seq++);
    mnl_nlmsg_batch_next(b);
    h->seq = seq;
    if (del)
        nftnl_set_free(del);
    if (add)
        nftnl_set_free(add);

    int fd = mnl_socket_get_fd(h->sock), err = 0;
    const char *fail = NULL;
    if (mnl_socket_sendto(h->sock, mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b)) < 0) {
        err = errno;
        fail = "cannot send to netfilter";
    }
    mnl_nlmsg_batch_stop(b);
    /* The kernel handles the batch within sendto: the acknowledgements (one per message that
     * asked, or its error) are queued by now. A poll with a short limit covers a kernel that
     * replays the batch after loading a module. */
    while (!fail && acks > 0) {
        ssize_t n = recv(fd, buf, MNL_SOCKET_BUFFER_SIZE, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (poll(&p, 1, 1000) <= 0) {
                err = ETIMEDOUT;
                fail = "no answer from netfilter";
            }
            continue;
        }
        if (n < 0) {
            err = errno;
            fail = "cannot read netfilter's answer";
            break;
        }
        int len = (int)n;
        for (struct nlmsghdr *m = (struct nlmsghdr *)buf; mnl_nlmsg_ok(m, len);
             m = mnl_nlmsg_next(m, &len)) {
            if (m->nlmsg_type != NLMSG_ERROR || m->nlmsg_seq < first || m->nlmsg_seq >= seq)
                continue; /* not an answer to this batch */
            const struct nlmsgerr *e = mnl_nlmsg_get_payload(m);
            acks--;
            if (e->error != 0 && !err) {
                err = -e->error;
                fail = "netfilter refused the set elements";
            }
        }
    }
    free(buf);
    if (fail) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", fail, strerror(err));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int nl_close(lua_State *L)
{
    struct nl *h = luaL_checkudata(L, 1, NL_MT);
    if (h->sock) {
        mnl_socket_close(h->sock);
        h->sock = NULL;
    }
    return 0;
}

/* ---------------------------------------------------------------- the start gate */

/* Opens `path` (relative) under the directory `dfd` for writing without blocking, following no
 * symbolic link and no "..": each directory is opened with O_NOFOLLOW, so a link planted anywhere
 * on the way (the image's files) cannot lead outside the sandbox's root. Written by hand because
 * openat2's RESOLVE_IN_ROOT needs Linux 5.6 and is unknown to valgrind. Returns the fd or -1 with
 * errno. */
static int open_beneath(int dfd, const char *path)
{
    char comp[256];
    int cur = dup(dfd);
    while (cur >= 0) {
        while (*path == '/')
            path++;
        size_t n = strcspn(path, "/");
        if (n == 0 || n >= sizeof comp) {
            close(cur);
            errno = EINVAL;
            return -1;
        }
        memcpy(comp, path, n);
        comp[n] = 0;
        path += n;
        while (*path == '/')
            path++;
        if (strcmp(comp, "..") == 0 || strcmp(comp, ".") == 0) {
            close(cur);
            errno = EINVAL;
            return -1;
        }
        int last = *path == 0;
        int next = openat(cur, comp,
                          last ? O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW
                               : O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        close(cur);
        errno = e;
        if (last || next < 0)
            return next;
        cur = next;
    }
    return -1;
}

static int l_gate(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    const char *path = luaL_checkstring(L, 2);
    char root[64];
    struct stat st;

    snprintf(root, sizeof root, "/proc/%lld/root", (long long)pid);
    int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return push_fail(L, "cannot open the sandbox's root");
    int fd = open_beneath(dfd, path);
    int e = errno;
    close(dfd);
    if (fd < 0) {
        /* ENOENT: not made yet; ENXIO: made, nobody reading yet. Both mean "try again". */
        lua_pushnil(L);
        lua_pushstring(L, (e == ENOENT || e == ENXIO) ? "not ready" : strerror(e));
        return 2;
    }
    if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
        close(fd);
        lua_pushnil(L);
        lua_pushstring(L, "the gate is not a FIFO");
        return 2;
    }
    ssize_t n = write(fd, "1", 1);
    e = errno;
    close(fd);
    if (n != 1) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(e));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---------------------------------------------------------------- addresses */

static int parse_addr(lua_State *L, int idx, int port_idx, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    const char *host = luaL_checkstring(L, idx);
    lua_Integer port = luaL_checkinteger(L, port_idx);
    if (port < 0 || port > 65535)
        return luaL_argerror(L, port_idx, "port out of range");
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
    } else {
        return luaL_argerror(L, idx, "not an IP address");
    }
    return 0;
}

static void push_addr(lua_State *L, const struct sockaddr_storage *ss)
{
    char buf[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
        lua_pushstring(L, buf);
        lua_pushinteger(L, ntohs(a->sin_port));
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
        lua_pushstring(L, buf);
        lua_pushinteger(L, ntohs(a->sin6_port));
    }
}

/* ---------------------------------------------------------------- bound UDP sockets */

struct udp {
    loop_watch w;
    task *waiter; /* the task parked in recv, if any */
    int closed;
};

static unsigned char g_dgram[DGRAM_MAX];

static void udp_ready(loop_watch *w, uint32_t events)
{
    struct udp *u = w->data;
    (void)events;
    if (!u->waiter)
        return;
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(u->w.fd, g_dgram, sizeof g_dgram, 0, (struct sockaddr *)&from, &flen);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    task *t = u->waiter;
    u->waiter = NULL;
    t->cancel = NULL;
    t->wait = NULL;
    loop_watch_mod(&u->w, 0);
    if (n < 0) {
        lua_pushnil(t->L);
        lua_pushstring(t->L, strerror(errno));
        task_resume(t, 2);
        return;
    }
    lua_pushlstring(t->L, (const char *)g_dgram, (size_t)n);
    push_addr(t->L, &from);
    task_resume(t, 3);
}

static void udp_cancel(task *t)
{
    struct udp *u = t->wait;
    u->waiter = NULL;
    loop_watch_mod(&u->w, 0);
}

static int l_udp_bind(lua_State *L)
{
    struct sockaddr_storage ss;
    socklen_t len;
    parse_addr(L, 1, 2, &ss, &len);
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return push_fail(L, "socket");
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return push_fail(L, "bind");
    }
    struct udp *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    u->w.fd = fd;
    u->w.events = 0;
    u->w.cb = udp_ready;
    u->w.data = u;
    luaL_setmetatable(L, UDP_MT);
    if (loop_watch_add(&u->w) < 0) {
        close(fd);
        u->closed = 1;
        lua_pushnil(L);
        lua_pushstring(L, "cannot watch the socket");
        return 2;
    }
    return 1;
}

static struct udp *check_udp(lua_State *L)
{
    struct udp *u = luaL_checkudata(L, 1, UDP_MT);
    if (u->closed)
        luaL_error(L, "core.net: the socket is closed");
    return u;
}

static int u_recv(lua_State *L)
{
    struct udp *u = check_udp(L);
    task *t = task_check(L);
    if (u->waiter)
        return luaL_error(L, "core.net: another task is already receiving on this socket");
    u->waiter = t;
    t->wait = u;
    t->cancel = udp_cancel;
    loop_watch_mod(&u->w, EPOLLIN);
    return lua_yield(L, 0);
}

static int u_send(lua_State *L)
{
    struct udp *u = check_udp(L);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    struct sockaddr_storage ss;
    socklen_t len;
    parse_addr(L, 3, 4, &ss, &len);
    if (sendto(u->w.fd, data, n, 0, (struct sockaddr *)&ss, len) < 0)
        return push_fail(L, "sendto");
    lua_pushboolean(L, 1);
    return 1;
}

static int u_port(lua_State *L)
{
    struct udp *u = check_udp(L);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(u->w.fd, (struct sockaddr *)&ss, &len) < 0)
        return push_fail(L, "getsockname");
    push_addr(L, &ss);
    lua_remove(L, -2);
    return 1;
}

static void udp_close(struct udp *u)
{
    if (u->closed)
        return;
    u->closed = 1;
    if (u->waiter) {
        task *t = u->waiter;
        u->waiter = NULL;
        t->cancel = NULL;
        t->wait = NULL;
        lua_pushnil(t->L);
        lua_pushstring(t->L, "closed");
        task_resume(t, 2);
    }
    loop_watch_del(&u->w);
    close(u->w.fd);
}

static int u_close(lua_State *L)
{
    struct udp *u = luaL_checkudata(L, 1, UDP_MT);
    udp_close(u);
    return 0;
}

static int u_gc(lua_State *L)
{
    struct udp *u = luaL_checkudata(L, 1, UDP_MT);
    /* no task can be waiting: a waiting task anchors nothing of the socket, but recv is only
     * called through a live reference */
    u->waiter = NULL;
    udp_close(u);
    return 0;
}

/* ---------------------------------------------------------------- one query, one answer */

struct query {
    loop_watch w;
    loop_timer timer;
    task *t;
    unsigned char id[2];
};

static void query_end(struct query *q)
{
    loop_timer_stop(&q->timer);
    loop_watch_del(&q->w);
    close(q->w.fd);
    free(q);
}

static void query_ready(loop_watch *w, uint32_t events)
{
    struct query *q = w->data;
    (void)events;
    for (;;) {
        ssize_t n = recv(q->w.fd, g_dgram, sizeof g_dgram, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            /* ECONNREFUSED and friends: the server is not there */
            task *t = q->t;
            int e = errno;
            t->cancel = NULL;
            t->wait = NULL;
            query_end(q);
            lua_pushnil(t->L);
            lua_pushstring(t->L, strerror(e));
            task_resume(t, 2);
            return;
        }
        if (n < 2 || memcmp(g_dgram, q->id, 2) != 0)
            continue; /* not the answer to this question */
        task *t = q->t;
        t->cancel = NULL;
        t->wait = NULL;
        query_end(q);
        lua_pushlstring(t->L, (const char *)g_dgram, (size_t)n);
        task_resume(t, 1);
        return;
    }
}

static void query_timeout(loop_timer *lt)
{
    struct query *q = lt->data;
    task *t = q->t;
    t->cancel = NULL;
    t->wait = NULL;
    query_end(q);
    lua_pushnil(t->L);
    lua_pushstring(t->L, "timeout");
    task_resume(t, 2);
}

static void query_cancel(task *t)
{
    query_end(t->wait);
}

static int l_udp_query(lua_State *L)
{
    struct sockaddr_storage ss;
    socklen_t len;
    size_t n;
    parse_addr(L, 1, 2, &ss, &len);
    const char *data = luaL_checklstring(L, 3, &n);
    lua_Number timeout = luaL_optnumber(L, 4, 2.0);
    if (n < 2)
        return luaL_argerror(L, 3, "a query is at least 2 bytes");
    if (!(timeout > 0) || timeout > 60)
        return luaL_argerror(L, 4, "timeout must be in (0, 60] seconds");
    task *t = task_check(L);
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return push_fail(L, "socket");
    if (connect(fd, (struct sockaddr *)&ss, len) < 0 || send(fd, data, n, 0) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return push_fail(L, "send");
    }
    struct query *q = calloc(1, sizeof *q);
    if (!q) {
        close(fd);
        return luaL_error(L, "out of memory");
    }
    q->w.fd = fd;
    q->w.events = EPOLLIN;
    q->w.cb = query_ready;
    q->w.data = q;
    q->timer.cb = query_timeout;
    q->timer.data = q;
    q->t = t;
    memcpy(q->id, data, 2);
    if (loop_watch_add(&q->w) < 0) {
        close(fd);
        free(q);
        lua_pushnil(L);
        lua_pushstring(L, "cannot watch the socket");
        return 2;
    }
    loop_timer_start(&q->timer, (uint64_t)llround(timeout * 1e9));
    t->wait = q;
    t->cancel = query_cancel;
    return lua_yield(L, 0);
}

/* ---------------------------------------------------------------- DNS messages */

/* dns_parse(msg) -> { id, qr, opcode, rcode, qname, qtype, qclass, qend, answers = {{name, type,
 * ttl, addr}...} } or nil, err. `qend` is the offset just past the first question (1-based end
 * index for string.sub), so a reply to the question can be made from msg:sub(1, qend). Only A and
 * AAAA answers carry `addr`; other types are listed with their numeric type. */
static int l_dns_parse(lua_State *L)
{
    size_t n;
    const unsigned char *msg = (const unsigned char *)luaL_checklstring(L, 1, &n);
    ns_msg h;
    ns_rr rr;
    if (n > DGRAM_MAX || ns_initparse(msg, (int)n, &h) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, "malformed DNS message");
        return 2;
    }
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, ns_msg_id(h));
    lua_setfield(L, -2, "id");
    lua_pushboolean(L, ns_msg_getflag(h, ns_f_qr));
    lua_setfield(L, -2, "qr");
    lua_pushinteger(L, ns_msg_getflag(h, ns_f_opcode));
    lua_setfield(L, -2, "opcode");
    lua_pushinteger(L, ns_msg_getflag(h, ns_f_rcode));
    lua_setfield(L, -2, "rcode");
    lua_pushinteger(L, ns_msg_count(h, ns_s_qd));
    lua_setfield(L, -2, "qdcount");
    if (ns_msg_count(h, ns_s_qd) >= 1) {
        if (ns_parserr(&h, ns_s_qd, 0, &rr) < 0) {
            lua_pushnil(L);
            lua_pushstring(L, "malformed DNS question");
            return 2;
        }
        lua_pushstring(L, ns_rr_name(rr));
        lua_setfield(L, -2, "qname");
        lua_pushinteger(L, ns_rr_type(rr));
        lua_setfield(L, -2, "qtype");
        lua_pushinteger(L, ns_rr_class(rr));
        lua_setfield(L, -2, "qclass");
        /* after parsing the only question, the cursor points past it */
        if (ns_msg_count(h, ns_s_qd) == 1) {
            lua_pushinteger(L, (lua_Integer)(h._msg_ptr - msg));
            lua_setfield(L, -2, "qend");
        }
    }
    int an = ns_msg_count(h, ns_s_an);
    lua_createtable(L, an, 0);
    for (int i = 0; i < an; i++) {
        if (ns_parserr(&h, ns_s_an, i, &rr) < 0)
            break;
        lua_createtable(L, 0, 4);
        lua_pushstring(L, ns_rr_name(rr));
        lua_setfield(L, -2, "name");
        lua_pushinteger(L, ns_rr_type(rr));
        lua_setfield(L, -2, "type");
        lua_pushinteger(L, (lua_Integer)ns_rr_ttl(rr));
        lua_setfield(L, -2, "ttl");
        char buf[INET6_ADDRSTRLEN];
        if (ns_rr_type(rr) == ns_t_a && ns_rr_rdlen(rr) == 4) {
            inet_ntop(AF_INET, ns_rr_rdata(rr), buf, sizeof buf);
            lua_pushstring(L, buf);
            lua_setfield(L, -2, "addr");
        } else if (ns_rr_type(rr) == ns_t_aaaa && ns_rr_rdlen(rr) == 16) {
            inet_ntop(AF_INET6, ns_rr_rdata(rr), buf, sizeof buf);
            lua_pushstring(L, buf);
            lua_setfield(L, -2, "addr");
        }
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "answers");
    return 1;
}

int luaopen_core_net(lua_State *L)
{
    static const luaL_Reg methods[] = {{"recv", u_recv},   {"send", u_send}, {"port", u_port},
                                       {"close", u_close}, {"__gc", u_gc},   {NULL, NULL}};
    static const luaL_Reg nl_methods[] = {
        {"elements", nl_elements}, {"close", nl_close}, {"__gc", nl_close}, {NULL, NULL}};
    static const luaL_Reg fns[] = {{"nft", l_nft},
                                   {"nl_open", l_nl_open},
                                   {"gate", l_gate},
                                   {"udp_bind", l_udp_bind},
                                   {"udp_query", l_udp_query},
                                   {"dns_parse", l_dns_parse},
                                   {NULL, NULL}};
    luaL_newmetatable(L, UDP_MT);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, NL_MT);
    luaL_setfuncs(L, nl_methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    /* the worker stops with the Lua state: a sentinel whose __gc stops it, kept by the module */
    lua_newuserdatauv(L, 1, 0);
    lua_newtable(L);
    lua_pushcfunction(L, nft_stop);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "_worker");
    return 1;
}
