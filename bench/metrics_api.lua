-- The Lua cost of the per-request instrumentation alone: the API handler (as in bench/api_bench.lua, a fake
-- service, no engine) with metrics.enabled true and false, alternating in rounds. The clock is os.time (a
-- vDSO call like the server's clock_gettime(CLOCK_REALTIME) behind core.now; os.clock would be a system call).
-- Run from the repository root:  lua5.4 bench/metrics_api.lua [ROUNDS] [PATH]
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local api = require("api")

local ID = "6eb341eb-024d-4eb1-aea2-1ba70b9afd46"
local body = string.rep("x", 700)
local function handler(enabled)
    return api.new({
        config = { server = { api_key = "bench-key" }, metrics = { enabled = enabled } },
        service = { get_json = function(_, id)
            return id == ID and body or nil
        end, records = {}, runtime = { name = "docker" } },
        log = { set_request_id = function() end, level = function()
            return "WARNING"
        end },
        uuid = { hex = function()
            return "0123456789abcdef0123456789abcdef"
        end },
        now = os.time,
    })
end
local headers = { ["OPEN-SANDBOX-API-KEY"] = "bench-key" }
local req_mt = { __index = { header = function(_, k)
    return headers[k]
end } }
local rounds = tonumber(arg[1] or "5")
local path = arg[2] or ("/v1/sandboxes/" .. ID)
local function req()
    return setmetatable({ method = "GET", path = path, query = "", body = "", body_too_large = false,
        remote_addr = "127.0.0.1" }, req_mt)
end
collectgarbage("generational")
local on, off = handler(true), handler(false)
assert(on(req()) == 200 and off(req()) == 200)
local N = 200000
local function time(h)
    local t0 = os.clock()
    for _ = 1, N do
        h(req())
    end
    return (os.clock() - t0) / N * 1e6
end
local ons, offs = {}, {}
for r = 1, rounds do
    ons[r], offs[r] = time(on), time(off)
end
table.sort(ons)
table.sort(offs)
local m = (rounds + 1) // 2
print(string.format("GET %s: %.2f us per request with the instrumentation, %.2f us without (median of %d rounds); "
    .. "+%.2f us", path, ons[m], offs[m], rounds, ons[m] - offs[m]))
