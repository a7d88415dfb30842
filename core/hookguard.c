/*
 * hookguard.c: the C half of the operator hooks' budgets (lua/hooks/budget.lua,
 * lua/hooks/README.md).
 *
 * Hooks run in the server's own Lua state. While a hook runs, the state is "armed":
 *  - memory: the state's allocator (hookguard_alloc, installed by engine.c) counts the net bytes
 *    allocated since arming and refuses (returns NULL, which Lua turns into a memory error) any
 * growth past the hook's budget. The heap therefore never exceeds its size at arming plus the
 * budget, also inside one C call (string.rep, table.concat, string.pack ...).
 *  - time: a deadline; the guards below and hg.check() (called by the budget's count hook) raise
 * once it has passed, so a hook that chains many cheap-looking C calls ends too.
 *  - single C calls that loop without allocating get a guard: the functions of the global `string`
 * table (which is also what the string metatable's __index reaches: ("x"):rep(n)) are replaced by
 * closures that call the original C function directly when nothing is armed (one branch), and when
 * armed first check: string.rep's count (an empty string repeated 2^53 times allocates nothing but
 * loops), the worst-case step count of a pattern (find, match, gmatch, gsub), and the deadline.
 * hg.wrap builds the same guard for the hook environment's own copies of table, utf8, math and os
 * (table.sort and table.move get a size cap). A hook that yields (opensandbox.http) suspends its
 * arming (hg.suspend) and resumes it afterwards, so other tasks running meanwhile are not counted
 * against it.
 *
 * Lua functions:
 *   hg.pcall(limit_bytes, seconds, fn, ...) -> ok, tripped ("memory"|"time"|false), results or
 * error arms, calls fn in protected mode (it may yield), disarms. Nested calls run inside the outer
 * arming. hg.suspend() -> state (an opaque integer-keyed table) ; hg.resume(state) hg.check() ->
 * nil, or "memory"/"time" when the running hook is past a budget hg.install() replaces the global
 * string functions by guards (idempotent) hg.wrap(fn, kind) -> a guard for a C library function
 * ("sort", "move" or "plain") hg.pattern_cost(pattern, subject_len) -> the estimate used by the
 * pattern guard hg.armed() -> bool ; hg.used() -> net bytes since arming
 */
#define _GNU_SOURCE
#include "server.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef OSB_MIMALLOC
#include <mimalloc.h>
/* The Lua state's heap lives in mimalloc (see the comment at hookguard_alloc). Debian's shared
 * libmimalloc also exports malloc and free, so linking it makes it the whole process's malloc;
 * calling mi_realloc/mi_free here keeps the Lua heap in mimalloc also where something (valgrind's
 * --soname-synonyms in tests/reliability/valgrind.sh) replaces malloc itself. */
#define LUA_HEAP_REALLOC mi_realloc
#define LUA_HEAP_FREE mi_free
#else
#define LUA_HEAP_REALLOC realloc
#define LUA_HEAP_FREE free
#endif

enum { TRIP_MEMORY = 1, TRIP_TIME = 2 };
enum { K_PLAIN, K_REP, K_FIND, K_MATCH, K_GMATCH, K_GSUB, K_SORT, K_MOVE };

/* Limits of single calls while armed (documented in lua/hooks/README.md). */
#define HG_MAX_REP (16.0 * 1024 * 1024)    /* bytes of a string.rep result; also its count for "" */
#define HG_MAX_PATTERN_STEPS 2e7           /* worst-case matcher steps (~0.2 s measured) */
#define HG_MAX_SORT ((lua_Integer)1 << 18) /* elements table.sort may sort (~0.1 s for numbers) */
#define HG_MAX_MOVE ((lua_Integer)1 << 22) /* elements table.move may move */

static struct {
    int armed;
    int tripped;
    long long net;   /* bytes allocated minus bytes freed since arming */
    long long limit; /* bytes */
    double deadline; /* monotonic seconds */
} G;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * The allocator of the server's Lua state. The heap is mimalloc's (Debian's libmimalloc-dev;
 * CMakeLists.txt, OPENSANDBOX_MIMALLOC): beside tens of MB of long-lived records, glibc's malloc
 * and free became a large part of a request that allocates a few KB of short-lived tables (a create
 * through the three default hooks; README, "Benchmarks", bench/hooks_quota.lua). Sanitizer builds
 * keep glibc so that ASan sees the Lua heap too.
 */
void *hookguard_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize tells the kind of object */
    if (nsize == 0) {
        LUA_HEAP_FREE(ptr);
        if (G.armed)
            G.net -= (long long)old;
        return NULL;
    }
    if (G.armed && nsize > old && G.net + (long long)(nsize - old) > G.limit) {
        G.tripped |= TRIP_MEMORY;
        return NULL; /* Lua collects in emergency mode, retries, then raises a memory error */
    }
    void *p = LUA_HEAP_REALLOC(ptr, nsize);
    if (p && G.armed)
        G.net += (long long)nsize - (long long)old;
    return p;
}

static const char *trip_name(int t)
{
    return (t & TRIP_MEMORY) ? "memory" : (t & TRIP_TIME) ? "time" : NULL;
}

/* Raises when the armed hook is past a budget (checked before every guarded C call). */
static void check_armed(lua_State *L)
{
    if (!G.tripped && mono() > G.deadline)
        G.tripped |= TRIP_TIME;
    if (G.tripped)
        luaL_error(L, "hook %s budget exceeded", trip_name(G.tripped));
}

/* ---- pattern cost ---- */

/* Index just past the single-character class starting at p[i] (a char, '.', %x or [set]). */
static size_t class_end(const char *p, size_t i, size_t lp)
{
    if (p[i] == '%')
        return i + 2 <= lp ? i + 2 : lp;
    if (p[i] == '[') {
        i++;
        if (i < lp && p[i] == '^')
            i++;
        do { /* the first character of a set is always part of it, also ']' */
            if (i >= lp)
                return lp;
            if (p[i++] == '%')
                i++;
        } while (i < lp && p[i] != ']');
        return i + 1 <= lp ? i + 1 : lp;
    }
    return i + 1;
}

/*
 * An upper bound of the steps Lua's backtracking matcher may take for pattern p on a subject of n
 * bytes, read from the pattern's structure (written here because the matcher is a single C call
 * that no hook can interrupt): every start position (unless anchored with '^') times, for each item
 * quantified with
 * '*', '+' or '-' that has more pattern after it, the n+1 lengths it may try; '?' doubles; %b and a
 * back-reference (%1..%9) scan up to n bytes per attempt. A quantified item with nothing after it
 * expands once and never backtracks, so it adds no factor.
 */
static double pattern_cost(const char *p, size_t lp, size_t n, int can_anchor)
{
    double N = (double)n + 1, cost = 1;
    size_t i = 0;
    int anchored = can_anchor && lp > 0 && p[0] == '^'; /* gmatch takes '^' as a plain character */
    if (anchored)
        i = 1;
    while (i < lp) {
        char c = p[i];
        if (c == '(' || c == ')') {
            i++;
            continue;
        }
        if (c == '$' && i + 1 == lp)
            break;
        if (c == '%' && i + 1 < lp) {
            char d = p[i + 1];
            if (d == 'b') {
                i += 4;
                cost *= N;
                continue;
            }
            if (d == 'f') {
                i = i + 2 < lp ? class_end(p, i + 2, lp) : lp;
                continue;
            }
            if (d >= '0' && d <= '9') {
                i += 2;
                cost *= N;
                continue;
            }
        }
        i = class_end(p, i, lp);
        if (i < lp && memchr("*+-?", p[i], 4)) {
            char q = p[i++];
            size_t j = i;
            while (j < lp && p[j] == ')')
                j++;
            if (q == '?')
                cost *= 2;
            else if (j < lp)
                cost *= N;
        }
        if (cost > 1e30)
            break;
    }
    if (!anchored)
        cost *= N;
    return cost + (double)n;
}

static int has_specials(const char *p, size_t lp)
{
    for (size_t i = 0; i < lp; i++)
        if (p[i] != '\0' && strchr("^$*+?.([%-", p[i]))
            return 1;
    return 0;
}

static const char *fname(int kind)
{
    static const char *names[] = {"function",      "string.rep",  "string.find", "string.match",
                                  "string.gmatch", "string.gsub", "table.sort",  "table.move"};
    return names[kind];
}

static void check_pattern(lua_State *L, int kind)
{
    size_t n, lp;
    luaL_checklstring(L, 1, &n);
    const char *p = luaL_checklstring(L, 2, &lp);
    if (kind == K_FIND && lua_toboolean(L, 4))
        return; /* plain search: linear */
    if (!has_specials(p, lp))
        return;
    double cost = pattern_cost(p, lp, n, kind != K_GMATCH);
    if (cost > HG_MAX_PATTERN_STEPS) {
        char msg[256]; /* lua_pushfstring has no precision or %g */
        snprintf(
            msg, sizeof(msg),
            "%s: pattern on a subject of %zu bytes may take up to %.3g matcher steps (hook limit "
            "%.0f); anchor it, shorten the subject or use fewer quantifiers",
            fname(kind), n, cost, HG_MAX_PATTERN_STEPS);
        luaL_error(L, "%s", msg);
    }
}

static void check_rep(lua_State *L)
{
    size_t l, lsep = 0;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0)
        return;
    double size = (double)l * (double)n + (double)lsep * (double)(n - 1);
    char msg[160];
    if (size > HG_MAX_REP)
        snprintf(msg, sizeof(msg),
                 "string.rep: result of %.0f bytes is larger than the hook limit of %.0f", size,
                 HG_MAX_REP);
    else if ((double)n > HG_MAX_REP)
        snprintf(msg, sizeof(msg),
                 "string.rep: %.0f repetitions are more than the hook limit of %.0f", (double)n,
                 HG_MAX_REP);
    else
        return;
    luaL_error(L, "%s", msg);
}

static void check_kind(lua_State *L, int kind)
{
    switch (kind) {
    case K_REP:
        check_rep(L);
        break;
    case K_FIND:
    case K_MATCH:
    case K_GMATCH:
    case K_GSUB:
        check_pattern(L, kind);
        break;
    case K_SORT: {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_Integer n = luaL_len(L, 1);
        if (n > HG_MAX_SORT)
            luaL_error(L, "table.sort: %I elements are more than the hook limit of %I",
                       (LUAI_UACINT)n, (LUAI_UACINT)HG_MAX_SORT);
        break;
    }
    case K_MOVE: {
        lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
        if (e >= f && (double)e - (double)f >= (double)HG_MAX_MOVE)
            luaL_error(L, "table.move: more than %I elements (the hook limit)",
                       (LUAI_UACINT)HG_MAX_MOVE);
        break;
    }
    default:
        break;
    }
}

/* The guard: upvalue 1 the original C function, upvalue 2 the kind. */
static int guard(lua_State *L)
{
    lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
    if (G.armed) {
        check_armed(L);
        int kind = (int)lua_tointeger(L, lua_upvalueindex(2));
        if (kind != K_PLAIN)
            check_kind(L, kind);
    }
    return f(L);
}

static void push_guard(lua_State *L, lua_CFunction f, int kind)
{
    lua_pushcfunction(L, f);
    lua_pushinteger(L, kind);
    lua_pushcclosure(L, guard, 2);
}

static int l_install(lua_State *L)
{
    static const struct {
        const char *name;
        int kind;
    } special[] = {{"rep", K_REP},       {"find", K_FIND}, {"match", K_MATCH},
                   {"gmatch", K_GMATCH}, {"gsub", K_GSUB}, {NULL, 0}};
    if (lua_getfield(L, LUA_REGISTRYINDEX, "core.hookguard.installed") == LUA_TBOOLEAN)
        return 0;
    lua_pop(L, 1);
    lua_getglobal(L, "string");
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_CFunction f = lua_iscfunction(L, -1) ? lua_tocfunction(L, -1) : NULL;
        if (f && lua_type(L, -2) == LUA_TSTRING) {
            int kind = K_PLAIN;
            for (int i = 0; special[i].name; i++)
                if (strcmp(lua_tostring(L, -2), special[i].name) == 0)
                    kind = special[i].kind;
            lua_pushvalue(L, -2);
            push_guard(L, f, kind);
            lua_rawset(L, -5); /* replacing the value of an existing key is safe during lua_next */
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "core.hookguard.installed");
    return 0;
}

static int l_wrap(lua_State *L)
{
    static const char *const kinds[] = {"plain", "sort", "move", NULL};
    static const int kv[] = {K_PLAIN, K_SORT, K_MOVE};
    if (!lua_iscfunction(L, 1) || lua_tocfunction(L, 1) == guard) {
        lua_settop(L, 1); /* a Lua function or an installed guard: returned as it is */
        return 1;
    }
    int k = luaL_checkoption(L, 2, "plain", kinds);
    push_guard(L, lua_tocfunction(L, 1), kv[k]);
    return 1;
}

/* ---- arming ---- */

static int finish_pcall(lua_State *L, int status, lua_KContext nested)
{
    int tripped = G.tripped;
    if (!nested) {
        G.armed = 0;
        G.tripped = 0;
    }
    int ok = (status == LUA_OK || status == LUA_YIELD);
    luaL_checkstack(L, 2, "hook results");
    /* stack: limit, seconds, results... (or the error object) */
    lua_pushboolean(L, ok && !tripped);
    lua_replace(L, 1);
    if (tripped)
        lua_pushstring(L, trip_name(tripped));
    else
        lua_pushboolean(L, 0);
    lua_replace(L, 2);
    return lua_gettop(L);
}

static int l_pcall(lua_State *L)
{
    lua_Integer limit = luaL_checkinteger(L, 1);
    lua_Number seconds = luaL_checknumber(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    int nested = G.armed;
    if (!nested) {
        G.armed = 1;
        G.tripped = 0;
        G.net = 0;
        G.limit = limit;
        G.deadline = mono() + seconds;
    }
    int status = lua_pcallk(L, lua_gettop(L) - 3, LUA_MULTRET, 0, nested, finish_pcall);
    return finish_pcall(L, status, nested);
}

static int l_suspend(lua_State *L)
{
    lua_createtable(L, 5, 0);
    lua_pushboolean(L, G.armed);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, G.tripped);
    lua_rawseti(L, -2, 2);
    lua_pushinteger(L, G.net);
    lua_rawseti(L, -2, 3);
    lua_pushinteger(L, G.limit);
    lua_rawseti(L, -2, 4);
    lua_pushnumber(L, G.deadline - mono());
    lua_rawseti(L, -2, 5);
    G.armed = 0;
    G.tripped = 0;
    return 1;
}

static int l_resume(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_rawgeti(L, 1, 1);
    lua_rawgeti(L, 1, 2);
    lua_rawgeti(L, 1, 3);
    lua_rawgeti(L, 1, 4);
    lua_rawgeti(L, 1, 5);
    G.armed = lua_toboolean(L, -5);
    G.tripped = (int)lua_tointeger(L, -4);
    G.net = (long long)lua_tointeger(L, -3);
    G.limit = (long long)lua_tointeger(L, -2);
    G.deadline = mono() + lua_tonumber(L, -1);
    return 0;
}

static int l_check(lua_State *L)
{
    if (!G.armed)
        return 0;
    if (!G.tripped && mono() > G.deadline)
        G.tripped |= TRIP_TIME;
    if (!G.tripped)
        return 0;
    lua_pushstring(L, trip_name(G.tripped));
    return 1;
}

static int l_armed(lua_State *L)
{
    lua_pushboolean(L, G.armed);
    return 1;
}

static int l_used(lua_State *L)
{
    lua_pushinteger(L, G.armed ? G.net : 0);
    return 1;
}

/* ---- raw copies (lua/hooks/budget.lua raw_copy; the rules are documented there) ---- */

#define HG_COPY_MAX_DEPTH 32

/* Raises a message without the position luaL_error would prepend (that of budget.lua, not the
 * hook's). */
static int copy_fail(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return lua_error(L);
}

/* Pushes a raw copy of the value at idx. Stack slots 2 and 3 of the hg.copy call hold the
 * json.array metatable and json.null. Only lua_next, lua_rawset and lua_getmetatable: no metamethod
 * runs. */
static void copy_at(lua_State *L, int idx, int depth, int fdepth)
{
    int t = lua_type(L, idx);
    switch (t) {
    case LUA_TNIL:
    case LUA_TBOOLEAN:
    case LUA_TNUMBER:
    case LUA_TSTRING:
        lua_pushvalue(L, idx);
        return;
    case LUA_TLIGHTUSERDATA:
        if (lua_rawequal(L, idx, 3)) {
            lua_pushvalue(L, idx);
            return;
        }
        break;
    case LUA_TFUNCTION:
        if (depth <= fdepth) {
            lua_pushvalue(L, idx);
            return;
        }
        break;
    case LUA_TTABLE: {
        if (depth > HG_COPY_MAX_DEPTH)
            copy_fail(L, "a value returned by a hook is nested more than %d levels deep",
                      HG_COPY_MAX_DEPTH);
        luaL_checkstack(L, 8, "a value returned by a hook");
        int tagged = 0;
        if (lua_getmetatable(L, idx)) { /* the real one: __metatable does not hide it here */
            tagged = lua_rawequal(L, -1, 2);
            lua_pop(L, 1);
            if (!tagged)
                copy_fail(
                    L,
                    "a table returned by a hook has a metatable (its metamethods would run outside "
                    "the hook's budget)");
        }
        /* Sized from the start (a first pass counts the entries): growing a table key by key
         * rehashes it at every power of two, which cost more than the copy itself. */
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            n++;
        }
        lua_Unsigned border = lua_rawlen(L, idx);
        int na = border < (lua_Unsigned)n ? (int)border : n;
        lua_createtable(L, na, n - na);
        int dst = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            int kt = lua_type(L, -2);
            if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN)
                copy_fail(L, "a table returned by a hook has a key of type %s",
                          lua_typename(L, kt));
            lua_pushvalue(L, -2);
            copy_at(L, lua_gettop(L) - 1, depth + 1, fdepth);
            lua_rawset(L, dst);
            lua_pop(L, 1);
        }
        if (tagged) {
            lua_pushvalue(L, 2);
            lua_setmetatable(L, dst);
        }
        return;
    }
    default:
        break;
    }
    copy_fail(L, "a hook may return only nil, booleans, numbers, strings and tables (got a %s)",
              luaL_typename(L, idx));
}

/* hg.copy(v, array_mt, null, functions_depth): the raw copy of v (a C version of budget.raw_copy,
 * ~5x faster: it runs for every hook call, on the proxy's hot path too). */
static int l_copy(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 4);
    int fdepth = (int)luaL_optinteger(L, 4, -1);
    copy_at(L, 1, 0, fdepth);
    return 1;
}

static int l_pattern_cost(lua_State *L)
{
    size_t lp;
    const char *p = luaL_checklstring(L, 1, &lp);
    lua_Integer n = luaL_checkinteger(L, 2);
    int can_anchor = !lua_toboolean(L, 3); /* true: as gmatch does */
    lua_pushnumber(L, has_specials(p, lp) ? pattern_cost(p, lp, n < 0 ? 0 : (size_t)n, can_anchor)
                                          : (double)n);
    return 1;
}

int luaopen_core_hookguard(lua_State *L)
{
    static const luaL_Reg fns[] = {{"pcall", l_pcall},
                                   {"suspend", l_suspend},
                                   {"resume", l_resume},
                                   {"check", l_check},
                                   {"install", l_install},
                                   {"wrap", l_wrap},
                                   {"armed", l_armed},
                                   {"used", l_used},
                                   {"pattern_cost", l_pattern_cost},
                                   {"copy", l_copy},
                                   {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_pushnumber(L, HG_MAX_PATTERN_STEPS);
    lua_setfield(L, -2, "MAX_PATTERN_STEPS");
    lua_pushinteger(L, HG_MAX_SORT);
    lua_setfield(L, -2, "MAX_SORT");
    lua_pushinteger(L, HG_MAX_MOVE);
    lua_setfield(L, -2, "MAX_MOVE");
    return 1;
}
