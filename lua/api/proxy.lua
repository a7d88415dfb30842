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

local NO_TOKENS = {} -- (never written to)

local function tokens(v)
    if v == nil or v == "" then
        return NO_TOKENS -- most requests: no table made
    end
    local set = {}
    for t in v:gmatch("[^,%s]+") do
        set[t:lower()] = true
    end
    return set
end

-- Header names in lower case, remembered: clients send the same few names again and again, so no string is
-- made per header per request. Bounded (emptied when full).
local lower_memo, lower_n = {}, 0
local LOWER_MAX = 1024

local function lower(name)
    local l = lower_memo[name]
    if l then
        return l
    end
    l = name:lower()
    if lower_n >= LOWER_MAX then
        lower_memo, lower_n = {}, 0
    end
    lower_memo[name], lower_n = l, lower_n + 1
    return l
end

--- The header list sent upstream (see the rules at the top) as a flat array (name, value, name, value, ...:
--- what http.proxy takes, one table instead of one per header), and whether this is an upgrade.
function M.upstream_headers(req, target_host)
    local conn = tokens(req:header("connection"))
    local upgrade = req:header("upgrade")
    local is_upgrade = conn.upgrade and upgrade ~= nil
    local out, n = {}, 0
    local xff, host, has_proto, has_fwd_host
    for _, h in ipairs(req:headers()) do
        local name = h[1]
        local lname = lower(name)
        if lname == "x-forwarded-for" then
            xff = xff and (xff .. ", " .. h[2]) or h[2] -- (sent once, below, with the peer appended)
        elseif lname == "host" then
            host = h[2]
        elseif not DROP[lname] and not conn[lname] then
            out[n + 1], out[n + 2], n = name, h[2], n + 2
            if lname == "x-forwarded-proto" then
                has_proto = true
            elseif lname == "x-forwarded-host" then
                has_fwd_host = true
            end
        end
    end
    out[n + 1], out[n + 2], n = "Host", target_host, n + 2
    -- X-Forwarded-For: the client's own value (a proxy chain in front of us) with the address the
    -- connection really comes from appended, never only what the client claims
    local peer = req.remote_addr or ""
    if xff and xff:find("%S") then
        out[n + 1], out[n + 2], n = "X-Forwarded-For", xff .. ", " .. peer, n + 2
    else
        out[n + 1], out[n + 2], n = "X-Forwarded-For", peer, n + 2
    end
    if not has_proto then
        out[n + 1], out[n + 2], n = "X-Forwarded-Proto", "http", n + 2
    end
    if host and not has_fwd_host then
        out[n + 1], out[n + 2], n = "X-Forwarded-Host", host, n + 2
    end
    if is_upgrade then
        out[n + 1], out[n + 2], n = "Upgrade", upgrade, n + 2
        out[n + 1], out[n + 2] = "Connection", "Upgrade"
    end
    return out, is_upgrade
end

-- The raw tail of a proxy path whose route parameters are `id` and `port_s` (the router matched it: the
-- path is ["/v1"] "/sandboxes/" id "/proxy/" port_s tail), "/" when empty. Found by length, no pattern.
local function tail_of(path, id, port_s)
    local skip = (path:byte(2) == 118 and 3 or 0) + 11 + #id + 7 + #port_s -- (118: "v")
    if #path <= skip then
        return "/"
    end
    return path:sub(skip + 1)
end
M.tail_of = tail_of

--- deps = { service, http = core.http-like (proxy), config }
function M.new(deps)
    local h = {}
    -- the options of http.proxy, one table filled again for every request: the core reads them before it
    -- returns and keeps none of them
    local opts = {}

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
        local id = ctx.params.id
        local tail = tail_of(req.path, id, port_s)
        -- (the API ctx has what the service reads: principal, admin, and for hooks host and remote_addr)
        local target, err = svc:proxy_target(id, port, ctx, { port = port, method = req.method, path = tail })
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
        local path = tail
        if req.query and req.query ~= "" then
            path = path .. "?" .. req.query
        end
        local pcfg = deps.config and deps.config.proxy or {}
        opts.host = host
        opts.port = target.port
        opts.method = req.method
        opts.target = path
        opts.headers = headers
        opts.upgrade = is_upgrade
        opts.pool = id -- its pooled connections are closed with the sandbox
        opts.connect_timeout = pcfg.connect_timeout or 10
        opts.header_timeout = pcfg.header_timeout or 0
        -- the same decision for the same credentials again without Lua, for a while (core/proxy_fast.c)
        opts.remember = target.remember
        deps.http.proxy(req, opts)
        opts.headers = nil
        -- the core answers from here on; what is returned below is ignored
        return { status = 200 }
    end

    return h
end

return M
