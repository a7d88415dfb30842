-- The one place that turns handler results and error objects into (status, headers, body) for the core.
--
-- A handler returns a response table or nil and an error object (common.errors):
--   { status = 200, json = <value> }                 JSON body, Content-Type application/json
--   { status = 200, body = "...", content_type = "" } a body as it is
--   { status = 202 }                                 no body: the core sends Content-Length: 0
-- plus optional `headers` (name -> string). Errors become ErrorResponse {"code","message"} with the status
-- and any `headers` the error carries (for example Retry-After).
local errors = require("common.errors")
local json = require("common.json")

local M = {}

M.JSON = "application/json"

-- The runtime's names for the service's codes (e.g. KUBERNETES::SANDBOX_NOT_FOUND for
-- DOCKER::SANDBOX_NOT_FOUND, as upstream's Kubernetes provider answers): the service speaks one vocabulary,
-- and the runtime in use renames what differs. Set once at start-up (set_codes); empty for Docker.
local renamed = {}

--- Uses `codes` (a table code -> code, or nil) for every error rendered from now on.
function M.set_codes(codes)
    renamed = codes or {}
end

local function copy_headers(src, dst)
    if src then
        for k, v in pairs(src) do
            dst[k] = tostring(v)
        end
    end
    return dst
end

--- A JSON response table.
function M.json(status, value, headers)
    return { status = status, json = value, headers = headers }
end

--- A response with no body.
function M.empty(status, headers)
    return { status = status, headers = headers }
end

--- Renders an error object (anything with status/code/message; other values give a 500).
function M.error(err)
    if type(err) ~= "table" or type(err.status) ~= "number" or type(err.code) ~= "string" then
        err = errors.internal()
    end
    local headers = copy_headers(err.headers, {})
    headers["Content-Type"] = M.JSON
    -- messages may quote what the client sent (an id, a query segment): keep the JSON valid UTF-8
    local code = renamed[err.code] or err.code
    local body = json.encode({ code = code, message = json.valid_utf8(tostring(err.message or "")) })
    return math.tointeger(err.status) or 500, headers, body
end

--- Renders a response table.
function M.render(res)
    local headers = copy_headers(res.headers, {})
    local body = res.body
    if res.json ~= nil then
        body = json.encode(res.json)
        headers["Content-Type"] = M.JSON
    elseif body == "" then
        body = nil
    elseif body ~= nil then
        headers["Content-Type"] = res.content_type or headers["Content-Type"] or "application/octet-stream"
    end
    return res.status, headers, body
end

return M
