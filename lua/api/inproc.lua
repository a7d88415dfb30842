-- In-process calls of the lifecycle API (libopensandbox's osb_call, include/opensandbox.h): the handlers of
-- lua/api/sandboxes.lua run with a request made here instead of one from the network, so validation,
-- semantics, status codes and JSON are exactly the HTTP API's. The caller is the admin principal
-- "default" (the embedding program owns the server).
--
--   local call = require("api.inproc").new(deps)     -- deps: as for require("api").new
--   local status, body = call("create", nil, '{"image":...}')   -- may yield; body is a JSON string or ""
local errors = require("common.errors")
local parse = require("api.parse")
local respond = require("api.respond")
local sandboxes = require("api.sandboxes")

local M = {}

-- op -> { method, what the argument is }
local OPS = {
    create = { "POST" },
    list = { "GET", "query" },
    get = { "GET", "id" },
    delete = { "DELETE", "id" },
    pause = { "POST", "id" },
    resume = { "POST", "id" },
    renew = { "POST", "id" },
    patch_metadata = { "PATCH", "id" },
}

local function no_header()
    return nil
end

local function no_headers()
    return {}
end

function M.new(deps)
    local handlers = sandboxes.new(deps)
    local log = deps.log or {}
    local function traceback(e)
        return debug.traceback(tostring(e), 2)
    end

    local function call(op, arg, body)
        local spec = OPS[op]
        if not spec then
            return respond.error(errors.invalid("unknown in-process operation: " .. tostring(op)))
        end
        if spec[2] == "id" and (type(arg) ~= "string" or arg == "") then
            return respond.error(errors.invalid("a sandbox id is required"))
        end
        local request_id = deps.uuid.hex()
        if log.set_request_id then
            log.set_request_id(request_id)
        end
        local query = spec[2] == "query" and type(arg) == "string" and arg or ""
        local req = {
            method = spec[1],
            path = "(in-process " .. op .. ")",
            query = query,
            body = type(body) == "string" and body or "",
            remote_addr = "in-process",
            header = no_header,
            headers = no_headers,
        }
        local ctx = {
            req = req,
            params = { id = spec[2] == "id" and arg or nil },
            query = parse.query(query),
            principal = "default",
            admin = true,
            request_id = request_id,
            svc = { request_id = request_id, principal = "default", admin = true, remote_addr = "in-process" },
        }
        local res, err = handlers[op](ctx)
        if not res then
            return respond.error(err)
        end
        return respond.render(res)
    end

    --- Returns the HTTP status and the body (a JSON string, "" for none).
    return function(op, arg, body)
        local ok, status, _, out = xpcall(call, traceback, op, arg, body)
        if not ok then
            if log.error then
                log.error("unhandled error in an in-process call", { op = tostring(op), err = status })
            end
            status, _, out = respond.error(errors.internal())
        end
        return status, out or ""
    end
end

return M
