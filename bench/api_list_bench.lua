-- Microbenchmark of the Lua side of GET /v1/sandboxes (the list route) and GET /v1/sandboxes/{id}: the API
-- handler over the real lifecycle service on the fake runtime (tests/lua/unit/sandbox/support.lua), one
-- Running sandbox, no engine. Run from the repository root:
--   lua5.4 bench/api_list_bench.lua [list|get] [query]      (default: list with "pageSize=1")
-- Prints microseconds and bytes allocated per request (the fake request table included).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
collectgarbage("generational") -- as the engine runs it (core/engine.c)
local S = dofile("tests/lua/unit/sandbox/support.lua")
local api = require("api")

local env = S.env({})
assert(env:create(S.spec({ image = { uri = "local/busybox:latest" }, entrypoint = { "sleep", "600" } }),
    { principal = "p", admin = true }))
env:run()
local id = next(env.svc.records)
local nolog = function() end
local handler = api.new({
    config = { server = { api_key = "k" } },
    service = env.svc,
    log = { set_request_id = nolog, level = function()
        return "WARNING"
    end, debug = nolog, info = nolog, warn = nolog, error = nolog },
    uuid = { hex = function()
        return "0123456789abcdef0123456789abcdef"
    end },
    now = os.time,
})
local headers = { ["OPEN-SANDBOX-API-KEY"] = "k", Host = "127.0.0.1:8080" }
local req_mt = { __index = { header = function(_, k)
    return headers[k]
end } }
local what = arg[1] or "list"
local path = what == "get" and ("/v1/sandboxes/" .. id) or "/v1/sandboxes"
local query = arg[2] or (what == "get" and "" or "pageSize=1")
local function req()
    return setmetatable({ method = "GET", path = path, query = query, body = "", body_too_large = false,
        remote_addr = "127.0.0.1" }, req_mt)
end

local status, _, body = handler(req())
print(string.format("GET %s%s -> %d, %d bytes", path, query ~= "" and ("?" .. query) or "", status, #(body or "")))
local N = 100000
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
print(string.format("%.2f us per request, %.0f bytes allocated per request", dt / N * 1e6, kb * 1024 / 10000))
