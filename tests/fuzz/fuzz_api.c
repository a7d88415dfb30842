/*
 * fuzz_api.c: libFuzzer target for the request router + middleware + JSON validation path (lua/api
 * with the real sandbox.validate and a fake service, see api_harness.lua).
 *
 * Input layout: "METHOD\nPATH[?QUERY]\nHEADER-LINES...\n\nBODY" (missing parts are empty).
 * Coverage: the Lua library is not instrumented, so a line hook maps every executed Lua (source,
 * line) pair into libFuzzer's extra-counters section, which guides the fuzzer through the Lua code
 * paths. A Lua error out of the harness (an invariant broken, or the handler raising) aborts: a
 * finding.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NCOUNTERS (1 << 16)

__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_counters[NCOUNTERS];

static lua_State *L;
static int harness_ref;

static void line_hook(lua_State *l, lua_Debug *ar)
{
    if (!lua_getinfo(l, "S", ar))
        return;
    uintptr_t h = (uintptr_t)ar->source * 2654435761u ^ (uintptr_t)ar->currentline * 40503u;
    lua_counters[(h ^ (h >> 16)) & (NCOUNTERS - 1)]++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    luaL_openlibs(L);
    char code[1024];
    snprintf(code, sizeof(code),
             "package.path = '%s/lua/?.lua;%s/lua/?/init.lua;' .. package.path "
             "return dofile('%s/tests/fuzz/api_harness.lua')",
             OSB_SOURCE_DIR, OSB_SOURCE_DIR, OSB_SOURCE_DIR);
    if (luaL_dostring(L, code) != LUA_OK) {
        fprintf(stderr, "fuzz_api: %s\n", lua_tostring(L, -1));
        abort();
    }
    harness_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_sethook(L, line_hook, LUA_MASKLINE, 0);
    return 0;
}

static const uint8_t *next_line(const uint8_t *p, const uint8_t *end, size_t *len)
{
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    *len = nl ? (size_t)(nl - p) : (size_t)(end - p);
    return nl ? nl + 1 : end;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    size_t mlen, plen;
    const uint8_t *method = p;
    p = next_line(p, end, &mlen);
    const uint8_t *path = p;
    p = next_line(p, end, &plen);
    /* headers until an empty line */
    const uint8_t *hstart = p;
    const uint8_t *hend = p;
    while (p < end) {
        size_t l;
        const uint8_t *n = next_line(p, end, &l);
        if (l == 0) {
            hend = p;
            p = n;
            break;
        }
        p = n;
        hend = p;
    }
    const uint8_t *q = memchr(path, '?', plen);
    size_t pathlen = q ? (size_t)(q - path) : plen;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, harness_ref);
    if (mlen)
        lua_pushlstring(L, (const char *)method, mlen);
    else
        lua_pushliteral(L, "GET");
    if (pathlen)
        lua_pushlstring(L, (const char *)path, pathlen);
    else
        lua_pushliteral(L, "/");
    lua_pushlstring(L, q ? (const char *)q + 1 : "", q ? plen - pathlen - 1 : 0);
    lua_pushlstring(L, (const char *)hstart, (size_t)(hend - hstart));
    lua_pushlstring(L, (const char *)p, (size_t)(end - p));
    if (lua_pcall(L, 5, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_api: invariant broken: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, top);
    if (lua_gc(L, LUA_GCCOUNT, 0) > 256 * 1024) /* KB: keep the heap bounded across runs */
        lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
