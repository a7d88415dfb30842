-- Micro-benchmark of the proxy's decision with renew on access (lua/sandbox/access_renew.lua): the cost of
-- svc:proxy_target(id, port) for a sandbox without the extension and for one with it whose renewal is not
-- due (the hot path: one table read and one clock compare more), on the fake runtime and fake core of the
-- unit specs (no daemon, no HTTP: the Lua decision alone).
--
--   lua5.4 bench/renew_on_access.lua [ITERATIONS]      (default 2000000; run from the repository root)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local S = dofile("tests/lua/unit/sandbox/support.lua")

local N = tonumber(arg[1]) or 2000000

local env = S.env()
local plain = env:running(S.spec({ timeout = 3600 }))
local opted = env:running(S.spec({ timeout = 3600, extensions = { ["access.renew.extend.seconds"] = "300" } }))
assert(env.svc.renew_due[opted] > env:now(), "the renewal must not be due")

local function run(id)
    local svc = env.svc
    local t0 = os.clock()
    for _ = 1, N do
        svc:proxy_target(id, 8080, nil)
    end
    return (os.clock() - t0) / N * 1e9
end

run(plain) -- warm up
local best = { math.huge, math.huge }
for _ = 1, 5 do
    best[1] = math.min(best[1], run(plain))
    best[2] = math.min(best[2], run(opted))
end
print(string.format("proxy_target, %d calls, best of 5: no extension %.0f ns/call, "
    .. "extension (not due) %.0f ns/call, difference %+.0f ns", N, best[1], best[2], best[2] - best[1]))
