-- The egress API (upstream's egress-api.yaml, served by this server instead of a sidecar per sandbox):
-- GET, PATCH and DELETE /sandboxes/{id}/egress/policy. Clients reach it the way upstream's SDKs do: the
-- endpoint of port 18080 of a sandbox with a network policy is /sandboxes/{id}/egress on this server, with
-- the OPENSANDBOX-EGRESS-AUTH header (sandbox/views.lua), and they call {endpoint}/policy.
--
-- Access (lua/api/init.lua lets these routes through without an API key): the sandbox's egress token in
-- OPENSANDBOX-EGRESS-AUTH, or a valid OPEN-SANDBOX-API-KEY that can see the sandbox (ctx.by_key). Bodies
-- are JSON arrays: PATCH a non-empty array of rules {action, target}, DELETE a non-empty array of targets.
-- Replies are upstream's PolicyStatusResponse; errors the usual ErrorResponse.
local C = require("sandbox.constants")
local errors = require("common.errors")
local json = require("common.json")
local netpolicy = require("sandbox.netpolicy")
local respond = require("api.respond")

local M = {}

M.TOKEN_HEADER = C.EGRESS_AUTH_HEADER

--- The decoded JSON array of a request body, or nil and a 400.
function M.json_array(body)
    local v = type(body) == "string" and body:find("%S") and body:match("^%s*%[") and json.decode(body)
    if type(v) ~= "table" then
        return nil, errors.invalid("Request body must be a JSON array.")
    end
    return v
end

function M.new(deps)
    local service = assert(deps.service, "api: deps.service is required")
    local h = {}

    local function token(ctx)
        return ctx.req:header(C.EGRESS_AUTH_HEADER)
    end

    function h.get(ctx)
        local res, err = service:egress_policy(ctx.params.id, token(ctx), ctx.by_key, ctx.svc)
        if not res then
            return nil, err
        end
        return respond.json(200, res)
    end

    -- PATCH and DELETE: the caller's access is checked before the body, so that a request without the
    -- token learns nothing from a 400
    local function change(validate, method)
        return function(ctx)
            local _, err = service:egress_access(ctx.params.id, token(ctx), ctx.by_key, ctx.svc)
            if err then
                return nil, err
            end
            local raw
            raw, err = M.json_array(ctx.req.body)
            if not raw then
                return nil, err
            end
            local list
            list, err = validate(raw)
            if not list then
                return nil, err
            end
            local res
            res, err = service[method](service, ctx.params.id, list, token(ctx), ctx.by_key, ctx.svc)
            if not res then
                return nil, err
            end
            return respond.json(200, res)
        end
    end
    h.patch = change(function(raw)
        return netpolicy.validate_rules(raw, "body", { non_empty = true })
    end, "patch_egress")
    h.delete = change(function(raw)
        return netpolicy.validate_targets(raw, "body")
    end, "remove_egress")
    return h
end

return M
