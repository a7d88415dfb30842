-- Microbenchmark of the Lua side of one request: the API handler (request id, key check, routing,
-- context, handler, rendering) with a fake service that returns a 700-byte sandbox JSON, no engine.
-- Run from the repository root:  lua5.4 bench/api_bench.lua [PATH]   (default: an authenticated GET
-- /v1/sandboxes/{id}; e.g. /health). Prints microseconds and bytes allocated per request.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local api = require("api")

local ID = "6eb341eb-024d-4eb1-aea2-1ba70b9afd46"
local body = string.rep("x", 700)
local service = {
    get_json = function(_, id)
        if id == ID then
            return body
        end
    end,
}
local handler = api.new({
    config = { server = { api_key = "bench-key" } },
    service = service,
    log = { set_request_id = function() end, level = function()
        return "WARNING"
    end },
    uuid = { hex = function()
        return "0123456789abcdef0123456789abcdef"
    end },
    now = os.time,
})
local headers = { ["OPEN-SANDBOX-API-KEY"] = "bench-key" }
local req_mt = { __index = { header = function(_, k)
    return headers[k]
end } }
local path = arg[1] or ("/v1/sandboxes/" .. ID)
local function req()
    return setmetatable({ method = "GET", path = path, query = "", body = "", body_too_large = false,
        remote_addr = "127.0.0.1" }, req_mt)
end

local status = handler(req())
print(string.format("GET %s -> %d", path, status))
collectgarbage("generational") -- as the engine runs it (core/engine.c)
local N = 200000
local t0 = os.clock()
for _ = 1, N do
    handler(req())
end
local dt = os.clock() - t0
collectgarbage("collect")
collectgarbage("stop")
local k0 = collectgarbage("count")
for _ = 1, 10000 do
    handler(req())
end
local kb = collectgarbage("count") - k0
collectgarbage("restart")
print(string.format("%.2f us per request (the fake request table included), %.0f bytes allocated per request",
    dt / N * 1e6, kb * 1024 / 10000))
