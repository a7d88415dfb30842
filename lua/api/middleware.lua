-- The steps every request goes through before its handler (API.md §1.1-§1.3): the request id, CORS and
-- API-key authentication. Each is a small pure function so the rules can be tested one by one; the order in
-- which they run is in lua/api/init.lua.
local errors = require("common.errors")
local router = require("api.router")

local M = {}

M.API_KEY_HEADER = "OPEN-SANDBOX-API-KEY"
M.MISSING_API_KEY = "Authentication credentials are missing. Provide API key via OPEN-SANDBOX-API-KEY header."
M.INVALID_API_KEY = "Authentication credentials are invalid. Check your API key and try again."

-- Request id ---------------------------------------------------------------------------------------------

--- The request id to use: the client's X-Request-ID trimmed, if it is 1-256 printable ASCII characters,
--- else a fresh one from `gen()` (32 lowercase hex characters).
function M.request_id(value, gen)
    if type(value) == "string" then
        local v = value:match("^[ \t]*(.-)[ \t]*$")
        if #v >= 1 and #v <= 256 and not v:find("[^\32-\126]") then
            return v
        end
    end
    return gen()
end

-- Authentication -----------------------------------------------------------------------------------------

local EXEMPT = {
    ["/health"] = true,
    ["/v1/health"] = true,
    ["/docs"] = true,
    ["/redoc"] = true,
    ["/openapi.json"] = true,
}

--- Whether a decoded path has the shape of a proxy request that may skip the key (§1.2): it matches
--- ^(/v1)?/sandboxes/[^/]+/proxy/\d+(/|$) and contains no ".." anywhere.
function M.is_exempt_proxy(decoded)
    if decoded:find("..", 1, true) then
        return false
    end
    local p = decoded
    if p:sub(1, 4) == "/v1/" then
        p = p:sub(4)
    end
    local rest = p:match("^/sandboxes/[^/]+/proxy/%d+(.*)$")
    return rest ~= nil and (rest == "" or rest:sub(1, 1) == "/")
end

--- Whether the raw request path needs no API key: the exact paths of §1.2, "/docs/*", and proxy paths.
function M.is_exempt(raw_path)
    local p = router.unescape(raw_path)
    if EXEMPT[p] or p:sub(1, 6) == "/docs/" then
        return true
    end
    return M.is_exempt_proxy(p)
end

--- Compares two strings in time that depends only on the length of `given`, never on where they differ.
function M.constant_time_equal(given, expected)
    local n, m = #given, #expected
    local diff = n ~ m
    if m == 0 then
        return false
    end
    local byte = string.byte
    for i = 1, n do
        local j = (i - 1) % m + 1
        diff = diff | (byte(given, i) ~ byte(expected, j))
    end
    return diff == 0
end

--- An authenticator over a list of { key = "...", principal = "...", admin = bool }. An empty list means
--- "no key configured": every request is let through as principal "default", an admin.
--- Returns a function(req) -> principal, admin (a boolean) or nil, err (a common.errors object). The second
--- value is never an error when the first is set, so `local p, err = authenticate(req); if not p ...`
--- callers keep working; those that restrict tenants read it as the admin flag.
function M.authenticator(keys)
    keys = keys or {}
    return function(req)
        if #keys == 0 then
            return "default", true
        end
        local given = req:header(M.API_KEY_HEADER)
        if given == nil or given == "" then
            return nil, errors.new(401, "MISSING_API_KEY", M.MISSING_API_KEY)
        end
        -- Compare with every key, without stopping at the first match.
        local found
        for _, k in ipairs(keys) do
            if M.constant_time_equal(given, k.key) and not found then
                found = k
            end
        end
        if not found then
            return nil, errors.new(401, "INVALID_API_KEY", M.INVALID_API_KEY)
        end
        return found.principal, found.admin == true
    end
end

--- The key list for a validated config: the single key (server.api_key) is the admin principal "default";
--- each server.api_keys entry (key_env already resolved by lua/config) maps to its principal, admin only
--- when it says so.
function M.keys_from_config(config)
    local server = config and config.server or {}
    local out = {}
    local key = server.api_key
    if type(key) == "string" and key:find("%S") then
        out[1] = { key = key, principal = "default", admin = true }
    end
    for _, e in ipairs(server.api_keys or {}) do
        if type(e.key) == "string" and e.key:find("%S") then
            out[#out + 1] = { key = e.key, principal = e.principal, admin = e.admin == true }
        end
    end
    return out
end

-- CORS ---------------------------------------------------------------------------------------------------

local CORS_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"

--- Whether the request is a CORS preflight that we answer ourselves (not one for the proxy route).
function M.is_preflight(req)
    if req.method ~= "OPTIONS" or not req:header("Origin") or not req:header("Access-Control-Request-Method") then
        return false
    end
    local p = router.strip_version(router.unescape(req.path))
    return not p:match("^/sandboxes/[^/]+/proxy/[^/]+")
end

--- Adds the CORS headers of a normal response to `headers` when the request has an Origin.
function M.cors_headers(req, headers)
    local origin = req:header("Origin")
    if origin then
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
        headers["Vary"] = "Origin"
    end
    return headers
end

--- The headers of a preflight answer (status 200, empty body).
function M.preflight_headers(req)
    local h = M.cors_headers(req, {})
    h["Access-Control-Allow-Methods"] = CORS_METHODS
    h["Access-Control-Allow-Headers"] = req:header("Access-Control-Request-Headers") or "*"
    h["Access-Control-Max-Age"] = "600"
    return h
end

return M
