-- Small routes with no resource behind them: the health check, the SDK's telemetry sink and, until the
-- server proxy is built, the proxy route.
local respond = require("api.respond")
local errors = require("common.errors")

local M = {}

local HEALTHY = '{"status":"healthy"}'

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

    --- The proxy route (§7.3). TODO: the server proxy is a later issue; until then the route answers 404.
    function h.proxy()
        return nil, errors.new(404, "GENERAL::NOT_FOUND", "Not Found")
    end

    return h
end

return M
