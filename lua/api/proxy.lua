-- The server proxy route (API.md §7.3): ANY /sandboxes/{id}/proxy/{port}[/{path}].
--
-- This is the small Lua decision in front of the C forwarding path (core.http.proxy): which sandbox and
-- address (the service's in-memory view, no Docker call), whether it is allowed, and which headers go
-- upstream. The C core then streams both bodies and tunnels upgrades; this handler never sees the body.
--
-- Access: with no key configured the route is open; with keys, lua/api/init.lua lets through a request
-- with a valid key (the sandbox must then be visible to it) or with X-OpenSandbox-Proxy-Token, which
-- forward() checks against the sandbox's capability (views.lua P:proxy_token).
--
-- Header rules: hop-by-hop headers and every header named in Connection are dropped, and so are
-- Authorization, Cookie, OPEN-SANDBOX-API-KEY and X-OpenSandbox-Proxy-Token; Host is set to the target;
-- X-Forwarded-Proto/Host are added when the client did not send them; X-Forwarded-For is the client's
-- value with the peer address appended (or the peer address alone). For an upgrade request (Connection:
-- upgrade + Upgrade), Upgrade and Connection: Upgrade are kept. The path after {port} and the raw query
-- go upstream byte for byte.
local C = require("sandbox.constants")
local errors = require("common.errors")
local middleware = require("api.middleware")

local M = {}

M.TOKEN_HEADER = C.PROXY_TOKEN_HEADER
M.MISSING_CREDENTIALS = "The server proxy needs an OPEN-SANDBOX-API-KEY that can see the sandbox, or the "
    .. C.PROXY_TOKEN_HEADER .. " header of the sandbox's endpoint reply (GET /sandboxes/{id}/endpoints/{port}"
    .. "?use_server_proxy=true)."
M.INVALID_TOKEN = "The " .. C.PROXY_TOKEN_HEADER .. " header is not valid for this sandbox."

local DROP = {
    connection = true,
    ["keep-alive"] = true,
    ["proxy-authenticate"] = true,
    ["proxy-authorization"] = true,
    te = true,
    trailer = true,
    ["transfer-encoding"] = true,
    upgrade = true,
    authorization = true,
    cookie = true,
    ["open-sandbox-api-key"] = true,
    [C.PROXY_TOKEN_HEADER:lower()] = true, -- the proxy's capability never reaches the sandbox
    ["content-length"] = true, -- the core writes the framing itself
    host = true,
}

local function tokens(v)
    local set = {}
    for t in (v or ""):gmatch("[^,%s]+") do
        set[t:lower()] = true
    end
    return set
end

--- The raw path after /proxy/{port} (percent-encoding untouched), "/" when empty.
function M.raw_tail(path)
    local rest = path:match("^/v1/sandboxes/[^/]+/proxy/[^/]+(.*)$") or path:match("^/sandboxes/[^/]+/proxy/[^/]+(.*)$")
    if not rest or rest == "" then
        return "/"
    end
    return rest
end

--- The header list sent upstream (see the rules at the top), and whether this is an upgrade.
function M.upstream_headers(req, target_host)
    local conn = tokens(req:header("connection"))
    local upgrade = req:header("upgrade")
    local is_upgrade = conn.upgrade and upgrade ~= nil
    local out, seen = {}, {}
    for _, h in ipairs(req:headers()) do
        local name = h[1]
        local lname = name:lower()
        if not DROP[lname] and not conn[lname] then
            out[#out + 1] = { name, h[2] }
            seen[lname] = true
        end
    end
    out[#out + 1] = { "Host", target_host }
    -- X-Forwarded-For: the client's own value (a proxy chain in front of us) with the address the
    -- connection really comes from appended, never only what the client claims
    local xff = req:header("x-forwarded-for")
    local peer = req.remote_addr or ""
    if xff and xff:find("%S") then
        for i = #out, 1, -1 do
            if out[i][1]:lower() == "x-forwarded-for" then
                table.remove(out, i)
            end
        end
        out[#out + 1] = { "X-Forwarded-For", xff .. ", " .. peer }
    else
        out[#out + 1] = { "X-Forwarded-For", peer }
    end
    if not seen["x-forwarded-proto"] then
        out[#out + 1] = { "X-Forwarded-Proto", "http" }
    end
    if not seen["x-forwarded-host"] and req:header("host") then
        out[#out + 1] = { "X-Forwarded-Host", req:header("host") }
    end
    if is_upgrade then
        out[#out + 1] = { "Upgrade", upgrade }
        out[#out + 1] = { "Connection", "Upgrade" }
    end
    return out, is_upgrade
end

--- deps = { service, http = core.http-like (proxy), config }
function M.new(deps)
    local h = {}

    function h.forward(ctx)
        local req = ctx.req
        local port_s = ctx.params.port
        local port = port_s:match("^%d+$") and tonumber(port_s)
        if not port or port < 1 or port > 65535 then
            return nil, errors.new(400, "DOCKER::INVALID_PORT", "Port must be between 1 and 65535.")
        end
        local svc = deps.service
        if ctx.proxy_token then
            -- the capability opens its one sandbox, whatever tenant a key sent with it names; checked in
            -- constant time. A wrong one (an unknown sandbox answers the same) with no valid key: 401
            local want = svc:proxy_token(ctx.params.id)
            if want and middleware.constant_time_equal(ctx.proxy_token, want) then
                ctx.admin = nil -- no tenant restriction for this sandbox (ctx.svc is built after this)
            elseif not ctx.principal then
                return nil, errors.new(401, "INVALID_API_KEY", M.INVALID_TOKEN)
            end
        end
        local target, err = svc:proxy_target(ctx.params.id, port, ctx.svc,
            { port = port, method = req.method, path = M.raw_tail(req.path) })
        if not target then
            return nil, err
        end
        if not deps.http or not req.streaming then
            return nil, errors.new(500, "GENERAL::UNKNOWN_ERROR", "An internal error occurred in the proxy: " ..
                "the server proxy is not enabled on this listener")
        end
        local host = target.host
        local host_hdr = (host:find(":", 1, true) and ("[" .. host .. "]") or host) .. ":" .. target.port
        local headers, is_upgrade = M.upstream_headers(req, host_hdr)
        local path = M.raw_tail(req.path)
        if req.query and req.query ~= "" then
            path = path .. "?" .. req.query
        end
        local pcfg = deps.config and deps.config.proxy or {}
        deps.http.proxy(req, {
            host = host,
            port = target.port,
            method = req.method,
            target = path,
            headers = headers,
            upgrade = is_upgrade,
            pool = ctx.params.id, -- its pooled connections are closed with the sandbox
            connect_timeout = pcfg.connect_timeout or 10,
            header_timeout = pcfg.header_timeout or 0,
        })
        -- the core answers from here on; what is returned below is ignored
        return { status = 200 }
    end

    return h
end

return M
