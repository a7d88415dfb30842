-- Small routes with no resource behind them: the health check and the SDK's telemetry sink.
local respond = require("api.respond")

local M = {}

local HEALTHY = '{"status":"healthy"}'
-- (lua/main.lua also hands it to the core, which answers a plain GET /health without Lua: core/httpd.c)
M.HEALTHY = HEALTHY

function M.new()
    local h = {}

    --- GET /health: exactly {"status":"healthy"}.
    function h.health()
        return { status = 200, body = HEALTHY, content_type = respond.JSON }
    end

    --- POST /metrics/events: 204 whatever the body (it is never parsed; §2.10).
    function h.metrics_events()
        return respond.empty(204)
    end

    return h
end

return M
