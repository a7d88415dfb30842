/*
 * ltoml.cpp: the `core.toml` module: TOML text to a Lua table, for configuration files in upstream
 * OpenSandbox's format (lua/config/toml.lua maps the result onto our configuration).
 *
 *   local toml = require("core.toml")
 *   local doc, err = toml.parse(text, name)   -- doc: a table; or nil, "name:line:column: what"
 *
 * Why C++: Debian 12 ships no TOML parser for C or for Lua; its maintained TOML 1.0 parsers are C++
 * (toml++ as libtomlplusplus-dev, toml11, cpptoml). toml++ is the one with a shared library and
 * line/column error positions. This file is the only C++ in the core and keeps C++ to itself: the
 * Lua API is called only where no C++ object with a destructor could be skipped by a Lua error.
 *
 * Mapping: tables (also inline and dotted keys) -> tables with string keys; arrays -> sequences;
 * strings, integers (Lua integers), floats (Lua floats), booleans as themselves; dates, times and
 * date-times -> strings in RFC 3339 form (nothing in the configuration takes one; a key that gets
 * one is then reported as the wrong type by the schema).
 *
 * How it works: toml++ parses into its own tree inside a try block (its errors are exceptions,
 * caught here and turned into a message in a fixed buffer). The tree is then pushed into Lua by
 * `push_doc`, run under lua_pcall, so a Lua error while pushing (out of memory) unwinds only frames
 * without destructors and ends in that lua_pcall; the tree is destroyed normally afterwards and the
 * error is raised again from `l_parse`, where no C++ object lives.
 *
 * Known issue of toml++ 3.3.0 (Debian 12's): its check for non-ASCII whitespace has an unreachable
 * branch that some non-ASCII characters reach (toml++ issues #190 and #295, fixed upstream
 * after 3.3.0), e.g. U+00A7 after a line-ending backslash in a multi-line string. Debian's build of
 * the library (GCC) answers correctly there; tests/c/scenarios/toml.lua pins those cases, and the
 * fuzz target (tests/fuzz/fuzz_toml.c) leaves that one check out of UBSan.
 */
#include <toml++/toml.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>

extern "C" {
#include <lauxlib.h>
#include <lua.h>
int luaopen_core_toml(lua_State *L);
}

static void push_node(lua_State *L, const toml::node &n);

static void push_table(lua_State *L, const toml::table &t)
{
    luaL_checkstack(L, 3, "TOML nesting too deep");
    lua_createtable(L, 0, (int)t.size());
    for (auto &&kv : t) {
        std::string_view k = kv.first.str();
        lua_pushlstring(L, k.data(), k.size());
        push_node(L, kv.second);
        lua_rawset(L, -3);
    }
}

static void push_array(lua_State *L, const toml::array &a)
{
    luaL_checkstack(L, 3, "TOML nesting too deep");
    lua_createtable(L, (int)a.size(), 0);
    lua_Integer i = 1;
    for (const toml::node &n : a) {
        push_node(L, n);
        lua_rawseti(L, -2, i++);
    }
}

/* Writes the RFC 3339 text of a date, time or date-time into buf. */
static void format_date(char *buf, size_t size, const toml::date &d)
{
    snprintf(buf, size, "%04u-%02u-%02u", (unsigned)d.year, (unsigned)d.month, (unsigned)d.day);
}

static void format_time(char *buf, size_t size, const toml::time &t)
{
    int n = snprintf(buf, size, "%02u:%02u:%02u", (unsigned)t.hour, (unsigned)t.minute,
                     (unsigned)t.second);
    if (t.nanosecond && n > 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, ".%09" PRIu32, (uint32_t)t.nanosecond);
}

static void push_date_time(lua_State *L, const toml::date_time &dt)
{
    char d[16], t[32], off[8] = "";
    format_date(d, sizeof d, dt.date);
    format_time(t, sizeof t, dt.time);
    if (dt.offset) {
        int m = dt.offset->minutes;
        if (m == 0)
            snprintf(off, sizeof off, "Z");
        else
            snprintf(off, sizeof off, "%c%02d:%02d", m < 0 ? '-' : '+', (m < 0 ? -m : m) / 60,
                     (m < 0 ? -m : m) % 60);
    }
    lua_pushfstring(L, "%sT%s%s", d, t, off);
}

static void push_node(lua_State *L, const toml::node &n)
{
    char buf[32];
    switch (n.type()) {
    case toml::node_type::table:
        push_table(L, *n.as_table());
        break;
    case toml::node_type::array:
        push_array(L, *n.as_array());
        break;
    case toml::node_type::string: {
        const std::string &s = n.as_string()->get();
        lua_pushlstring(L, s.data(), s.size());
        break;
    }
    case toml::node_type::integer:
        lua_pushinteger(L, (lua_Integer)n.as_integer()->get());
        break;
    case toml::node_type::floating_point:
        lua_pushnumber(L, (lua_Number)n.as_floating_point()->get());
        break;
    case toml::node_type::boolean:
        lua_pushboolean(L, n.as_boolean()->get());
        break;
    case toml::node_type::date:
        format_date(buf, sizeof buf, n.as_date()->get());
        lua_pushstring(L, buf);
        break;
    case toml::node_type::time:
        format_time(buf, sizeof buf, n.as_time()->get());
        lua_pushstring(L, buf);
        break;
    case toml::node_type::date_time:
        push_date_time(L, n.as_date_time()->get());
        break;
    default:
        lua_pushnil(L);
        break;
    }
}

/* Run under lua_pcall: the parsed tree (a light userdata) -> a Lua table. */
static int push_doc(lua_State *L)
{
    const toml::table *t = static_cast<const toml::table *>(lua_touserdata(L, 1));
    push_table(L, *t);
    return 1;
}

enum parse_status { PARSED, SYNTAX_ERROR, LUA_FAILED };

/* Parses text and, when it is valid, pushes the table (or, when pushing failed, the Lua error
 * object). On a syntax error nothing is pushed and msg holds the reason. Never throws. */
static parse_status parse_and_push(lua_State *L, const char *text, size_t len, const char *name,
                                   char *msg, size_t msgsize) noexcept
{
    try {
        toml::table doc = toml::parse(std::string_view(text, len), std::string_view(name));
        lua_pushcfunction(L, push_doc);
        lua_pushlightuserdata(L, &doc);
        return lua_pcall(L, 1, 1, 0) == LUA_OK ? PARSED : LUA_FAILED;
    } catch (const toml::parse_error &e) {
        std::string_view d = e.description();
        snprintf(msg, msgsize, "%s:%u:%u: %.*s", name, (unsigned)e.source().begin.line,
                 (unsigned)e.source().begin.column, (int)d.size(), d.data());
    } catch (const std::exception &e) {
        snprintf(msg, msgsize, "%s: %s", name, e.what());
    } catch (...) {
        snprintf(msg, msgsize, "%s: cannot parse", name);
    }
    return SYNTAX_ERROR;
}

/* A NUL byte is never valid TOML. It is refused before toml++ sees the text: toml++ 3.3.0 reaches
 * an internal assertion on one in a key (found by tests/fuzz/fuzz_toml.c; its release build reports
 * an error there, but the parser is not meant to get that far). Returns 1 and fills msg when there
 * is one. */
static int has_nul(const char *text, size_t len, const char *name, char *msg, size_t msgsize)
{
    const char *nul = (const char *)memchr(text, 0, len);
    if (!nul)
        return 0;
    unsigned line = 1, col = 1;
    for (const char *p = text; p < nul; p++) {
        if (*p == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    snprintf(msg, msgsize, "%s:%u:%u: a NUL byte is not allowed in TOML", name, line, col);
    return 1;
}

/* toml.parse(text [, name]) -> table | nil, "name:line:column: reason" */
static int l_parse(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "toml");
    char msg[512];
    luaL_checkstack(L, 4, NULL);
    if (has_nul(text, len, name, msg, sizeof msg)) {
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    switch (parse_and_push(L, text, len, name, msg, sizeof msg)) {
    case PARSED:
        return 1;
    case LUA_FAILED:
        return lua_error(L);
    case SYNTAX_ERROR:
        break;
    }
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

int luaopen_core_toml(lua_State *L)
{
    static const luaL_Reg fns[] = {{"parse", l_parse}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
