/*
 * fuzz_toml.c: libFuzzer target for TOML configuration files: core.toml's parse (core/ltoml.cpp
 * with toml++ compiled in, header-only, so the parser is instrumented too), then the mapping of
 * upstream's keys (lua/config/toml.lua) and the schema validation (lua/config), as config.load runs
 * them.
 *
 * Input: the bytes of a TOML file. A Lua error out of the harness (parse raising instead of
 * returning nil, err; the mapping or the validation raising on some document) aborts: a finding.
 * Lua lines run are fed to libFuzzer's extra counters as in fuzz_api.c.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int luaopen_core_toml(lua_State *L);

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

static const char harness[] =
    "local toml, map, config = require('core.toml'), require('config.toml'), require('config')\n"
    "local sections = require('config.schema').sections\n"
    "return function(text)\n"
    "  local doc, err = toml.parse(text, 'fuzz.toml')\n"
    "  if not doc then\n"
    "    assert(type(err) == 'string' and err:find('^fuzz%.toml:'), tostring(err))\n"
    "    return\n"
    "  end\n"
    "  local tbl, notes = map.map(doc, sections)\n"
    "  assert(type(tbl) == 'table' and type(notes.warnings) == 'table' and type(notes.errors) == "
    "'table')\n"
    "  local cfg, verr = config.validate(tbl)\n"
    "  assert(cfg or type(verr) == 'string')\n"
    "  if verr then map.rename(verr, notes.names) end\n"
    "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_core_toml);
    lua_setfield(L, -2, "core.toml");
    lua_pop(L, 1);
    char code[512];
    snprintf(code, sizeof(code), "package.path = '%s/lua/?.lua;%s/lua/?/init.lua;' .. package.path",
             OSB_SOURCE_DIR, OSB_SOURCE_DIR);
    if (luaL_dostring(L, code) != LUA_OK || luaL_dostring(L, harness) != LUA_OK) {
        fprintf(stderr, "fuzz_toml: %s\n", lua_tostring(L, -1));
        abort();
    }
    harness_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_sethook(L, line_hook, LUA_MASKLINE, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, harness_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_toml: invariant broken: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, top);
    if (lua_gc(L, LUA_GCCOUNT, 0) > 256 * 1024) /* KB: keep the heap bounded across runs */
        lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
