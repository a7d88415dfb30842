-- The one error shape between a runtime adapter and the lifecycle service (lua/runtimes/README.md).
--
-- Every adapter method reports an operational failure as `nil, err` with
--   err = { kind = <one of KINDS>, message = <the runtime's own words, or the transport reason>,
--           status = <the runtime API's HTTP status> | nil, step = <provisioning step> | nil }
-- and `tostring(err)` gives a one-line description. The service decides what a kind means to a client
-- (503 for "unavailable", 409 for "unsupported", ...); adapters never build HTTP errors.
local M = {}

M.KINDS = {
    unavailable = true, -- the runtime cannot be reached (transport failure, a watch stream that ended); with
    -- `busy = true`, it is reached but busy (M.transport): only that request failed
    not_found = true, -- the runtime says the object does not exist
    conflict = true, -- the runtime refuses because of the object's state
    unsupported = true, -- this runtime cannot do that at all (pause on Kubernetes)
    api = true, -- any other refusal or an unusable reply
    invalid = true, -- the request cannot be served as asked (a named volume that must exist does not): a 400
    -- with `code` (e.g. VOLUME::PVC_NOT_FOUND)
}

-- provisioning steps an error can name (err.step), in the order they run
M.STEPS = { image = true, agent = true, create = true, start = true }

local mt = {
    __tostring = function(e)
        local head = e.kind
        if e.step then
            head = head .. " at " .. e.step
        end
        if e.status then
            return string.format("%s (HTTP %d): %s", head, e.status, e.message)
        end
        return string.format("%s: %s", head, e.message)
    end,
}

--- A new error. `fields` (optional): status, step, code (kind "invalid": the API error code). Raises on an
--- unknown kind or step (a programmer error).
function M.new(kind, message, fields)
    assert(M.KINDS[kind], "runtimes.errors: unknown kind " .. tostring(kind))
    local step = fields and fields.step
    assert(step == nil or M.STEPS[step], "runtimes.errors: unknown step " .. tostring(step))
    return setmetatable({ kind = kind, message = tostring(message), status = fields and fields.status,
        step = step, code = fields and fields.code }, mt)
end

--- The same error, tagged with the provisioning step it happened at (a copy; `err` may be a string).
function M.at_step(step, err, message)
    local kind = type(err) == "table" and M.KINDS[err.kind] and err.kind or "api"
    return M.new(kind, message or (type(err) == "table" and err.message) or tostring(err),
        { status = type(err) == "table" and err.status or nil, step = step })
end

--- The "unavailable" error of a failed transfer (`err` from core.client.request, or a string). `what` names
--- the runtime ("Docker", "The Kubernetes API server"); `timeout` is the request's (seconds, 0: none).
--- A timeout that spent its time waiting for one of the client's connections to the host
--- (max_host_connections) while slow calls held them, never sent or sent with less than half its time
--- left, says the runtime is busy, not gone: the error is marked `busy`, and the service fails that request
--- alone (503 SANDBOX::RUNTIME_BUSY) instead of taking the runtime for unreachable. One that had half its
--- time or more after it was sent, and got no answer, is the runtime not answering.
function M.transport(err, what, timeout)
    local reason
    if type(err) == "table" then
        reason = err.message or err.kind
        if err.kind == "timeout" and (err.sent == false or (timeout and timeout > 0 and err.waited
            and err.waited >= timeout / 2)) then
            local e = M.new("unavailable", string.format("%s is busy: the request waited %.1f s for one of the " ..
                "server's connections to it (%s)", what, err.waited or 0, tostring(reason)))
            e.busy = true
            return e
        end
        if err.kind == "timeout" and reason and not reason:lower():find("time") then
            reason = "timeout: " .. reason
        end
    end
    return M.new("unavailable", tostring(reason or err or "request failed"))
end

--- True when `err` is an adapter error of that kind.
function M.is(err, kind)
    return type(err) == "table" and err.kind == kind
end

return M
