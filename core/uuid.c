/*
 * uuid.c: the `core.uuid` module: random (v4) UUIDs from libuuid, and random hex tokens from
 * getrandom(2).
 */
#include "server.h"

#include <lauxlib.h>
#include <string.h>
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

static unsigned char pool[4096];
static size_t pool_left;

/* 16 random bytes from the pool; returns -1 when the kernel gives none. */
static int pool_take(unsigned char out[16])
{
    if (pool_left < 16) {
        size_t got = 0;
        while (got < sizeof(pool)) {
            ssize_t r = getrandom(pool + got, sizeof(pool) - got, 0);
            if (r < 0)
                return -1;
            got += (size_t)r;
        }
        pool_left = sizeof(pool);
    }
    pool_left -= 16;
    memcpy(out, pool + pool_left, 16);
    memset(pool + pool_left, 0, 16); /* handed out once */
    return 0;
}

int uuid_hex(char out[32])
{
    unsigned char u[16];
    if (pool_take(u) < 0)
        return -1;
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40); /* the bits of a v4 UUID, as before */
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hexdigits[u[i] >> 4];
        out[2 * i + 1] = hexdigits[u[i] & 15];
    }
    return 0;
}

static int l_hex(lua_State *L)
{
    char out[32];
    if (uuid_hex(out) < 0)
        return luaL_error(L, "getrandom failed");
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
