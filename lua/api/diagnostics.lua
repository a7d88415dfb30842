-- The diagnostics routes (upstream specs/diagnostic-api.yml): GET /sandboxes/{id}/diagnostics/logs and
-- GET /sandboxes/{id}/diagnostics/events, each with the required `scope` query parameter. The handler
-- checks the scope and shapes the reply; the service (sandbox/diagnostics.lua) reads the record and the
-- runtime. Visibility is GET /sandboxes/{id}'s: another tenant's sandbox is 404.
local errors = require("common.errors")
local respond = require("api.respond")
local diag = require("sandbox.diagnostics")

local M = {}

--- The scope of `query` for `kind` ("logs" or "events"), or nil, err (400). `scopes` is kind -> set of
--- scopes, `list` kind -> "a, b" (sandbox/diagnostics.lua).
function M.scope(query, kind, scopes, list)
    local values = query and query.scope
    local n = values and #values or 0
    if n == 0 or values[n] == "" then
        return nil, errors.invalid(string.format("scope is required; supported %s scopes: %s.", kind, list[kind]))
    end
    local scope = values[n]
    if not scopes[kind][scope] then
        return nil, errors.invalid(string.format("scope '%s' is not supported for %s; supported: %s.", scope,
            kind, list[kind]))
    end
    return scope
end

--- The handlers, bound to deps.service (the lifecycle service, or a fake with the same methods).
function M.new(deps)
    local service = assert(deps.service, "api: deps.service is required")
    local h = {}

    local function handler(kind, method)
        return function(ctx)
            local scope, err = M.scope(ctx.query, kind, diag.DIAGNOSTIC_SCOPES, diag.DIAGNOSTIC_SCOPE_LIST)
            if not scope then
                return nil, err
            end
            local res
            res, err = service[method](service, ctx.params.id, scope, ctx.svc)
            if not res then
                return nil, err
            end
            return respond.json(200, res)
        end
    end
    h.logs = handler("logs", "diagnostic_logs")
    h.events = handler("events", "diagnostic_events")
    return h
end

return M
