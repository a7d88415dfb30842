-- Error objects are data: {status=, code=, message=, headers=?}. They are created here and rendered in one
-- place (lua/api/respond.lua). Everything that can fail with a client-visible error returns one of these.
local M = {}

local mt = {
    __tostring = function(e)
        return string.format("%s (%d): %s", e.code, e.status, e.message)
    end,
}

--- A new error. `headers` (optional) is a table of extra response headers, e.g. Retry-After.
function M.new(status, code, message, headers)
    return setmetatable({ status = status, code = code, message = message, headers = headers }, mt)
end

function M.is(e)
    return getmetatable(e) == mt
end

function M.invalid(message)
    return M.new(400, "SANDBOX::INVALID_PARAMETER", message)
end

function M.not_found(id)
    return M.new(404, "DOCKER::SANDBOX_NOT_FOUND", string.format("Sandbox %s not found.", id))
end

function M.internal()
    return M.new(500, "GENERAL::UNKNOWN_ERROR", "Internal server error.")
end

return M
