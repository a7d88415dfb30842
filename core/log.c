/*
 * log.c: one JSON object per line on stderr, and the `core.log` Lua module.
 *
 * A line is {"ts":"...","level":"...","msg":"...","request_id":"...", extra fields}. The request id
 * comes from the task the Lua call runs on (log.set_request_id binds it), so every line a request
 * writes carries it without threading it through every call. Lines are built in a buffer and
 * written with one write(2), so lines from one process never interleave.
 */
#define _GNU_SOURCE
#include "log.h"

#include "task.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_INFO;
static const char *level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR"};

typedef struct {
    char buf[8192];
    size_t len;
} logbuf;

static void lb_raw(logbuf *b, const char *s, size_t n)
{
    if (n > sizeof(b->buf) - 8 - b->len)
        n = sizeof(b->buf) - 8 - b->len;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void lb_str(logbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    lb_raw(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            lb_raw(b, esc, 2);
        } else if (c == '\n') {
            lb_raw(b, "\\n", 2);
        } else if (c < 0x20 || c == 0x7f) {
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            lb_raw(b, esc, 6);
        } else {
            lb_raw(b, (const char *)&s[i], 1);
        }
    }
    lb_raw(b, "\"", 1);
}

static void lb_key(logbuf *b, const char *k)
{
    lb_raw(b, ",", 1);
    lb_str(b, k, strlen(k));
    lb_raw(b, ":", 1);
}

static void lb_begin(logbuf *b, enum log_level level, const char *request_id, const char *msg,
                     size_t msglen)
{
    struct timespec ts;
    struct tm tm;
    char tsbuf[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tsbuf, sizeof(tsbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(tsbuf + n, sizeof(tsbuf) - n, ".%06ldZ", ts.tv_nsec / 1000);
    b->len = 0;
    lb_raw(b, "{\"ts\":", 6);
    lb_str(b, tsbuf, n);
    lb_key(b, "level");
    lb_str(b, level_names[level], strlen(level_names[level]));
    lb_key(b, "msg");
    lb_str(b, msg, msglen);
    if (request_id && request_id[0]) {
        lb_key(b, "request_id");
        lb_str(b, request_id, strlen(request_id));
    }
}

static void lb_end(logbuf *b)
{
    b->buf[b->len++] = '}';
    b->buf[b->len++] = '\n';
    ssize_t w = write(STDERR_FILENO, b->buf, b->len);
    (void)w;
}

int log_enabled(enum log_level level)
{
    return level >= current_level;
}

void log_set_level(enum log_level level)
{
    current_level = level;
}

int log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    if (strcasecmp(name, "WARN") == 0)
        return LOG_WARNING;
    return -1;
}

void log_write(enum log_level level, const char *request_id, const char *msg, ...)
{
    logbuf b;
    va_list ap;
    if (!log_enabled(level))
        return;
    lb_begin(&b, level, request_id, msg, strlen(msg));
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        lb_key(&b, k);
        if (v)
            lb_str(&b, v, strlen(v));
        else
            lb_raw(&b, "null", 4);
    }
    va_end(ap);
    lb_end(&b);
}

/* ---- core.log ---- */

/* Writes the fields of the table at idx; `skip_request_id` drops a "request_id" field when the line
 * already carries the task's bound request id (a key must not appear twice in one JSON object). */
static void lua_fields(lua_State *L, logbuf *b, int idx, int skip_request_id)
{
    if (!lua_istable(L, idx))
        return;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING &&
            !(skip_request_id && strcmp(lua_tostring(L, -2), "request_id") == 0)) {
            lb_key(b, lua_tostring(L, -2));
            int t = lua_type(L, -1);
            if (t == LUA_TNUMBER) {
                char num[64];
                int n = lua_isinteger(L, -1)
                            ? snprintf(num, sizeof(num), "%lld", (long long)lua_tointeger(L, -1))
                            : snprintf(num, sizeof(num), "%.14g", lua_tonumber(L, -1));
                lb_raw(b, num, (size_t)n);
            } else if (t == LUA_TBOOLEAN) {
                lb_raw(b, lua_toboolean(L, -1) ? "true" : "false", lua_toboolean(L, -1) ? 4 : 5);
            } else {
                size_t n;
                const char *s = luaL_tolstring(L, -1, &n);
                lb_str(b, s, n);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
}

static int l_log(lua_State *L, enum log_level level)
{
    logbuf b;
    size_t n;
    if (!log_enabled(level))
        return 0;
    const char *msg = luaL_tolstring(L, 1, &n);
    task *t = task_of(L);
    lb_begin(&b, level, t ? t->request_id : NULL, msg, n);
    lua_pop(L, 1);
    lua_fields(L, &b, 2, t && t->request_id[0]);
    lb_end(&b);
    return 0;
}

static int l_debug(lua_State *L)
{
    return l_log(L, LOG_DEBUG);
}
static int l_info(lua_State *L)
{
    return l_log(L, LOG_INFO);
}
static int l_warn(lua_State *L)
{
    return l_log(L, LOG_WARNING);
}
static int l_error(lua_State *L)
{
    return l_log(L, LOG_ERROR);
}

static int l_set_level(lua_State *L)
{
    int lvl = log_level_parse(luaL_checkstring(L, 1));
    if (lvl < 0)
        return luaL_argerror(L, 1, "expected DEBUG, INFO, WARNING or ERROR");
    log_set_level((enum log_level)lvl);
    return 0;
}

static int l_level(lua_State *L)
{
    lua_pushstring(L, level_names[current_level]);
    return 1;
}

static int l_set_request_id(lua_State *L)
{
    size_t n;
    const char *id = luaL_optlstring(L, 1, "", &n);
    task *t = task_of(L);
    if (!t)
        return 0;
    if (n >= sizeof(t->request_id))
        n = sizeof(t->request_id) - 1;
    memcpy(t->request_id, id, n);
    t->request_id[n] = '\0';
    return 0;
}

static int l_request_id(lua_State *L)
{
    task *t = task_of(L);
    if (t && t->request_id[0])
        lua_pushstring(L, t->request_id);
    else
        lua_pushnil(L);
    return 1;
}

int luaopen_core_log(lua_State *L)
{
    static const luaL_Reg fns[] = {{"debug", l_debug},
                                   {"info", l_info},
                                   {"warn", l_warn},
                                   {"warning", l_warn},
                                   {"error", l_error},
                                   {"set_level", l_set_level},
                                   {"level", l_level},
                                   {"set_request_id", l_set_request_id},
                                   {"request_id", l_request_id},
                                   {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
