-- Benchmark server for the engine (run by bench/engine.sh through tests' core_scenario binary): a route
-- whose Lua handler yields on a timer and resumes (GET /yield), and one that answers at once (GET /now).
local http = require("core.http")
local timer = require("core.timer")
local json = require("common.json")

local port = tonumber(os.getenv("BENCH_PORT") or "18090")
http.listen({ host = "127.0.0.1", port = port, conn_limit = 8192, handler = function(req)
    if req.path == "/yield" then
        timer.sleep(0)
    end
    return 200, { ["Content-Type"] = "application/json" }, json.encode({ status = "healthy" })
end })
