-- The steps every request goes through before its handler (API.md §1.1-§1.3): the request id, CORS and
-- API-key authentication. Each is a small pure function so the rules can be tested one by one; the order in
-- which they run is in lua/api/init.lua.
local errors = require("common.errors")
local router = require("api.router")

local M = {}

local find = string.find

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

--- Whether the raw request path needs no API key: the exact paths of §1.2, "/docs/*", proxy paths, and the
--- egress API's /sandboxes/{id}/egress/policy (its handler checks the sandbox's egress token instead).
function M.is_exempt(raw_path)
    local p = router.unescape(raw_path)
    if EXEMPT[p] or find(p, "^/docs/") then
        return true
    end
    -- the egress API checks its own credential (lua/api/egress.lua)
    if find(p, "/egress/policy", 1, true)
        and (find(p, "^/sandboxes/[^/]+/egress/policy/?$") or find(p, "^/v1/sandboxes/[^/]+/egress/policy/?$")) then
        return true
    end
    -- the full proxy check only for paths that can be one (most requests are not)
    return find(p, "/proxy/", 1, true) ~= nil and M.is_exempt_proxy(p)
end

--- Compares two strings in time that depends only on the lengths, never on where they differ: `given` is
--- read whole, 8 bytes at a time and its last partial block byte by byte, against `expected` zero-padded to
--- whole blocks and read cyclically; the differences are OR-ed together. Nothing is allocated per call: the
--- padded form of each expected value (the configured keys) is kept.
local ZEROS = string.rep("\0", 8)
local padded, npadded = {}, 0
function M.constant_time_equal(given, expected)
    local n, m = #given, #expected
    if m == 0 then
        return false
    end
    local unpack, byte = string.unpack, string.byte
    local e = padded[expected]
    if not e then
        e = expected .. ZEROS:sub(1, (8 - m % 8) % 8)
        if npadded < 256 then -- configured keys are a handful; never grow without bound
            padded[expected], npadded = e, npadded + 1
        end
    end
    local eblocks = #e // 8
    local full = n // 8
    local diff = n ~ m
    for i = 0, full - 1 do
        diff = diff | (unpack("<i8", given, i * 8 + 1) ~ unpack("<i8", e, (i % eblocks) * 8 + 1))
    end
    local eoff = (full % eblocks) * 8
    for j = 1, n % 8 do
        diff = diff | (byte(given, full * 8 + j) ~ byte(e, eoff + j))
    end
    return diff == 0
end

-- Failed-key rate limit (server.auth_failure_limit) ----------------------------------------------------

M.TOO_MANY_FAILURES = "Too many failed authentication attempts from this address. Retry after %d seconds."
M.FAILURE_WINDOW = 60
-- at most this many client addresses are tracked; when full, expired windows are swept first and an
-- address that still finds no room is not tracked (the table cannot grow without bound)
M.MAX_TRACKED = 65536

--- A limiter of failed API key attempts per client address: at most `max` failures in a fixed window of
--- `window` seconds (default 60). Once an address has used them up, every request from it that needs a
--- key is refused with 429 GENERAL::TOO_MANY_REQUESTS and Retry-After (the seconds left in its window),
--- before the key is compared, so a right guess cannot be told from a wrong one while it lasts. `now` is a
--- clock in seconds (default os.time). Returns nil when `max` is nil or false (the limit is off).
function M.failure_limiter(max, now, window)
    if not max then
        return nil
    end
    now = now or os.time
    window = window or M.FAILURE_WINDOW
    local entries, tracked = {}, 0
    local L = {}

    local function current(addr, t)
        local e = entries[addr]
        if e and t - e.start >= window then
            entries[addr] = nil
            tracked = tracked - 1
            e = nil
        end
        return e
    end

    --- nil when `addr` may try a key, else the 429 error object.
    function L.check(addr)
        local t = now()
        local e = current(addr or "", t)
        if e and e.count >= max then
            local retry = math.max(1, math.ceil(e.start + window - t))
            return errors.new(429, "GENERAL::TOO_MANY_REQUESTS", string.format(M.TOO_MANY_FAILURES, retry),
                { ["Retry-After"] = tostring(retry) })
        end
        return nil
    end

    --- Counts one failed attempt from `addr`.
    function L.fail(addr)
        addr = addr or ""
        local t = now()
        local e = current(addr, t)
        if not e then
            if tracked >= M.MAX_TRACKED then
                for a in pairs(entries) do
                    current(a, t)
                end
                if tracked >= M.MAX_TRACKED then
                    return
                end
            end
            e = { start = t, count = 0 }
            entries[addr] = e
            tracked = tracked + 1
        end
        e.count = e.count + 1
    end

    --- How many addresses are tracked (for the specs).
    function L.tracked()
        return tracked
    end

    return L
end

--- The limiter for a validated config (server.auth_failure_limit), or nil when it is off.
function M.limiter_from_config(config, now)
    local server = config and config.server or {}
    return M.failure_limiter(server.auth_failure_limit, now)
end

--- An authenticator over a list of { key = "...", principal = "...", admin = bool }. An empty list means
--- "no key configured": every request is let through as principal "default", an admin.
--- Returns a function(req) -> principal, admin (a boolean) or nil, err (a common.errors object). The second
--- value is never an error when the first is set, so `local p, err = authenticate(req); if not p ...`
--- callers keep working; those that restrict tenants read it as the admin flag.
--- `limiter` (optional, M.failure_limiter) counts wrong keys per req.remote_addr and refuses an address
--- that has too many (a missing key is not counted: it is not a guess).
function M.authenticator(keys, limiter)
    keys = keys or {}
    return function(req)
        if #keys == 0 then
            return "default", true
        end
        local given = req:header(M.API_KEY_HEADER)
        if given == nil or given == "" then
            return nil, errors.new(401, "MISSING_API_KEY", M.MISSING_API_KEY)
        end
        if limiter then
            local limited = limiter.check(req.remote_addr)
            if limited then
                return nil, limited
            end
        end
        -- Compare with every key, without stopping at the first match.
        local found
        for _, k in ipairs(keys) do
            if M.constant_time_equal(given, k.key) and not found then
                found = k
            end
        end
        if not found then
            if limiter then
                limiter.fail(req.remote_addr)
            end
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
