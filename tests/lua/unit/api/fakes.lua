-- Fakes shared by the lua/api specs: a core.http-like request, and the deps of api.new.
-- Loaded with dofile("tests/lua/unit/api/fakes.lua") (busted runs from the repository root).
local errors = require("common.errors")

local F = {}

--- A request like the core's: t.method, t.path, t.query, t.body, t.too_large, t.headers (name -> value).
function F.request(t)
    t = t or {}
    local list = {}
    for name, value in pairs(t.headers or {}) do
        list[#list + 1] = { name, value }
    end
    local req = {
        method = t.method or "GET",
        path = t.path or "/",
        query = t.query or "",
        body = t.body or "",
        body_too_large = t.too_large or false,
        remote_addr = t.remote_addr or "192.0.2.7",
    }
    function req.header(_, name)
        local found
        for _, h in ipairs(list) do
            if h[1]:lower() == name:lower() then
                found = found and (found .. ", " .. h[2]) or h[2]
            end
        end
        return found
    end
    function req.headers()
        return list
    end
    return req
end

--- A log that records every call.
function F.log()
    local log = { lines = {}, ids = {} }
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        log[level] = function(msg, fields)
            log.lines[#log.lines + 1] = { level = level, msg = msg, fields = fields or {} }
        end
    end
    function log.set_request_id(id)
        log.ids[#log.ids + 1] = id
    end
    return log
end

F.GENERATED_ID = "0123456789abcdef0123456789abcdef"

F.uuid = {
    hex = function()
        return F.GENERATED_ID
    end,
}

--- A service that records calls and answers from `answers[method]` (a value, or a function of the args).
function F.service(answers)
    answers = answers or {}
    local svc = { calls = {} }
    local function method(name)
        return function(_, ...)
            svc.calls[#svc.calls + 1] = { name = name, args = table.pack(...) }
            local a = answers[name]
            if type(a) == "function" then
                return a(...)
            end
            if a == nil then
                return nil, errors.not_found("x")
            end
            return a
        end
    end
    for _, name in ipairs({ "create", "get", "list", "delete", "pause", "resume", "renew", "endpoint",
        "patch_metadata", "proxy_target", "proxy_token", "diagnostic_logs", "diagnostic_events",
        "egress_access", "egress_policy", "patch_egress", "remove_egress" }) do
        svc[name] = method(name)
    end
    return svc
end

--- A sandbox.validate stand-in that records its arguments and accepts everything.
function F.validate()
    local v = { calls = {} }
    function v.create(body, opts)
        v.calls.create = { body = body, opts = opts }
        return { spec = true, image = body.image }
    end
    function v.list_query(params)
        v.calls.list_query = params
        return { filter = true }
    end
    function v.renew(body)
        v.calls.renew = body
        return 1767225600000000
    end
    function v.metadata_patch(body)
        v.calls.metadata_patch = body
        return { patch = body }
    end
    function v.endpoint(port, params)
        v.calls.endpoint = { port = port, params = params }
        return { port = tonumber(port), use_server_proxy = params.use_server_proxy ~= nil }
    end
    return v
end

--- deps for api.new; `over` replaces fields.
function F.deps(over)
    local d = {
        config = { server = { api_key = "secret-key", max_sandbox_timeout_seconds = 3600 } },
        service = F.service(),
        validate = F.validate(),
        log = F.log(),
        uuid = F.uuid,
        now = function()
            return 1767225600.5
        end,
        ncpu = 2,
        docs_dir = "/nonexistent-docs-dir",
    }
    for k, v in pairs(over or {}) do
        d[k] = v
    end
    return d
end

return F
