/*
 * uuid.c: the `core.uuid` module: random (v4) UUIDs from libuuid, and random hex tokens from
 * getrandom(2).
 */
#include <lauxlib.h>
#include <sys/random.h>
#include <uuid/uuid.h>

static const char hexdigits[] = "0123456789abcdef";

static int l_v4(lua_State *L)
{
    uuid_t u;
    char out[37];
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
    lua_pushlstring(L, out, 36);
    return 1;
}

static int l_hex(lua_State *L)
{
    uuid_t u;
    char out[32];
    uuid_generate_random(u);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hexdigits[u[i] >> 4];
        out[2 * i + 1] = hexdigits[u[i] & 15];
    }
    lua_pushlstring(L, out, 32);
    return 1;
}

static int l_random_hex(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    unsigned char raw[256];
    char out[512];
    luaL_argcheck(L, n >= 1 && n <= 256, 1, "between 1 and 256 bytes");
    size_t got = 0;
    while (got < (size_t)n) {
        ssize_t r = getrandom(raw + got, (size_t)n - got, 0);
        if (r < 0)
            return luaL_error(L, "getrandom failed");
        got += (size_t)r;
    }
    for (lua_Integer i = 0; i < n; i++) {
        out[2 * i] = hexdigits[raw[i] >> 4];
        out[2 * i + 1] = hexdigits[raw[i] & 15];
    }
    lua_pushlstring(L, out, (size_t)n * 2);
    return 1;
}

int luaopen_core_uuid(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"v4", l_v4}, {"hex", l_hex}, {"random_hex", l_random_hex}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
