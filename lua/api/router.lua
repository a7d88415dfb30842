-- The route table and the matcher.
--
-- The table is data: one entry per (method, pattern), each with the name of its handler, whether it is exempt
-- from authentication, whether a single trailing "/" is ignored, and a one-line summary. The same table is
-- compared with openapi.json by a unit spec, so the docs cannot drift from what is served.
--
-- Matching works on the path after one round of percent-decoding (as a framework that routes on the decoded
-- path does), split on "/". A `{name}` segment matches one non-empty segment; a final `{name*}` matches the
-- rest of the path (possibly empty). Every route is also served under "/v1". HEAD is accepted wherever GET is
-- (RFC 9110 §9.3.2); the core sends no body for it.
local M = {}

local PROXY_METHODS = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" }

-- exempt: no API key needed (the proxy's exemption depends on the path and is decided by the middleware).
-- slash: a single trailing "/" is ignored (the lifecycle routes).
-- raw_body: the route takes any body (no 1 MiB limit, no parsing): the proxy.
-- egress: the egress API; its own credential (lua/api/init.lua, lua/api/egress.lua).
local routes = {
    { "GET", "/health", "system.health", exempt = true, summary = "Health check" },
    { "GET", "/openapi.json", "docs.openapi", exempt = true, summary = "OpenAPI description of this API" },
    { "GET", "/docs", "docs.swagger", exempt = true, summary = "Swagger UI" },
    { "GET", "/docs/{file*}", "docs.asset", exempt = true, summary = "Swagger UI and ReDoc assets" },
    { "GET", "/redoc", "docs.redoc", exempt = true, summary = "ReDoc" },
    { "GET", "/metrics", "metrics.scrape", summary = "Prometheus metrics" },
    { "POST", "/metrics/events", "system.metrics_events", summary = "Record an SDK telemetry event (ignored)" },
    { "POST", "/sandboxes", "sandboxes.create", slash = true, summary = "Create a sandbox" },
    { "GET", "/sandboxes", "sandboxes.list", slash = true, summary = "List sandboxes" },
    { "GET", "/sandboxes/{id}", "sandboxes.get", slash = true, summary = "Get a sandbox" },
    { "DELETE", "/sandboxes/{id}", "sandboxes.delete", slash = true, summary = "Delete a sandbox" },
    { "POST", "/sandboxes/{id}/pause", "sandboxes.pause", slash = true, summary = "Pause a sandbox" },
    { "POST", "/sandboxes/{id}/resume", "sandboxes.resume", slash = true, summary = "Resume a paused sandbox" },
    {
        "POST",
        "/sandboxes/{id}/renew-expiration",
        "sandboxes.renew",
        slash = true,
        summary = "Set a new expiration time",
    },
    {
        "GET",
        "/sandboxes/{id}/endpoints/{port}",
        "sandboxes.endpoint",
        slash = true,
        summary = "Get the endpoint of a port in a sandbox",
    },
    {
        "PATCH",
        "/sandboxes/{id}/metadata",
        "sandboxes.patch_metadata",
        slash = true,
        summary = "Merge-patch a sandbox's metadata",
    },
    {
        "GET",
        "/sandboxes/{id}/diagnostics/logs",
        "diagnostics.logs",
        slash = true,
        summary = "Get a sandbox's diagnostic logs",
    },
    {
        "GET",
        "/sandboxes/{id}/diagnostics/events",
        "diagnostics.events",
        slash = true,
        summary = "Get a sandbox's diagnostic events",
    },
    {
        "POST",
        "/sandboxes/{id}/snapshots",
        "snapshots.create",
        slash = true,
        summary = "Create a snapshot of a running sandbox",
    },
    { "GET", "/snapshots", "snapshots.list", slash = true, summary = "List snapshots" },
    { "GET", "/snapshots/{id}", "snapshots.get", slash = true, summary = "Get a snapshot" },
    { "DELETE", "/snapshots/{id}", "snapshots.delete", slash = true, summary = "Delete a snapshot" },
    { "GET", "/events", "events.stream", slash = true, summary = "Stream lifecycle events (Server-Sent Events)" },
    -- the egress API (lua/api/egress.lua): no API key needed, the handler checks the sandbox's egress token
    {
        "GET",
        "/sandboxes/{id}/egress/policy",
        "egress.get",
        exempt = true,
        egress = true,
        slash = true,
        summary = "Get a sandbox's egress policy",
    },
    {
        "PATCH",
        "/sandboxes/{id}/egress/policy",
        "egress.patch",
        exempt = true,
        egress = true,
        slash = true,
        summary = "Merge egress rules into a sandbox's policy",
    },
    {
        "DELETE",
        "/sandboxes/{id}/egress/policy",
        "egress.delete",
        exempt = true,
        egress = true,
        slash = true,
        summary = "Remove egress rules from a sandbox's policy by target",
    },
    { "POST", "/pools", "pools.create", slash = true, summary = "Create a warm pool" },
    { "GET", "/pools", "pools.list", slash = true, summary = "List warm pools" },
    { "GET", "/pools/{name}", "pools.get", slash = true, summary = "Get a warm pool" },
    { "PUT", "/pools/{name}", "pools.update", slash = true, summary = "Change a warm pool's capacity" },
    { "DELETE", "/pools/{name}", "pools.delete", slash = true, summary = "Delete a warm pool" },
}
for _, pattern in ipairs({ "/sandboxes/{id}/proxy/{port}", "/sandboxes/{id}/proxy/{port}/{path*}" }) do
    for _, method in ipairs(PROXY_METHODS) do
        routes[#routes + 1] = {
            method,
            pattern,
            "proxy.forward",
            raw_body = true,
            summary = "Proxy a request to a port in a sandbox",
        }
    end
end

local find_plain = string.find
local sub = string.sub

-- "/a/b/" -> { "a", "b", "" } (the leading "/" starts the first segment)
local function split(path)
    local segs, n, pos = {}, 0, 2
    while true do
        local slash = find_plain(path, "/", pos, true)
        n = n + 1
        if not slash then
            segs[n] = sub(path, pos)
            return segs
        end
        segs[n] = sub(path, pos, slash - 1)
        pos = slash + 1
    end
end

-- Compiles the table once: named fields, and the pattern split into segments.
local compiled = {}
for i, r in ipairs(routes) do
    local segs = {}
    local rest
    for j, seg in ipairs(split(r[2])) do
        local name, star = seg:match("^{([%w_]+)(%*?)}$")
        if star == "*" then
            assert(j == #split(r[2]), "a {name*} segment must be last: " .. r[2])
            rest = name
        else
            segs[#segs + 1] = name and { param = name } or { lit = seg }
        end
    end
    compiled[i] = {
        method = r[1],
        pattern = r[2],
        handler = r[3],
        exempt = r.exempt or false,
        slash = r.slash or false,
        raw_body = r.raw_body or false,
        egress = r.egress or false,
        summary = r.summary,
        segs = segs,
        rest = rest,
    }
end

--- The route table: an array of { method, pattern, handler, exempt, slash, raw_body, egress, summary }.
--- Read-only use.
function M.routes()
    local out = {}
    for i, r in ipairs(compiled) do
        out[i] = {
            method = r.method,
            pattern = r.pattern,
            handler = r.handler,
            exempt = r.exempt,
            slash = r.slash,
            raw_body = r.raw_body,
            egress = r.egress,
            summary = r.summary,
        }
    end
    return out
end

local function hexbyte(h)
    return string.char(tonumber(h, 16))
end

--- Percent-decodes `s` once (a "%" not followed by two hex digits stays as it is). "+" is kept.
function M.unescape(s)
    if not s:find("%", 1, true) then
        return s
    end
    return (s:gsub("%%(%x%x)", hexbyte))
end

--- Strips one leading "/v1" component: "/v1/x" -> "/x", "/v1" -> "/". Other paths are returned unchanged.
function M.strip_version(path)
    if path == "/v1" then
        return "/"
    end
    if path:sub(1, 4) == "/v1/" then
        return path:sub(4)
    end
    return path
end

local function match_route(r, segs)
    local rsegs = r.segs
    local n = #rsegs
    if #segs < n or (not r.rest and #segs ~= n) then
        return nil
    end
    -- literals first: most candidates fail there, before any table is made
    for i = 1, n do
        local want, got = rsegs[i], segs[i]
        if want.lit then
            if want.lit ~= got then
                return nil
            end
        elseif got == "" then
            return nil
        end
    end
    if r.rest and #segs == n then
        -- "{path*}" needs the "/" after the fixed part: ".../proxy/80" is the other route, ".../proxy/80/" has "".
        return nil
    end
    local params = {}
    for i = 1, n do
        local want = rsegs[i]
        if want.param then
            params[want.param] = segs[i]
        end
    end
    if r.rest then
        params[r.rest] = table.concat(segs, "/", n + 1)
    end
    return params
end

-- Candidates by number of path segments (routes ending in "{path*}" are tried for every length).
local by_len, with_rest = {}, {}
for _, r in ipairs(compiled) do
    if r.rest then
        with_rest[#with_rest + 1] = r
    else
        local n = #r.segs
        by_len[n] = by_len[n] or {}
        by_len[n][#by_len[n] + 1] = r
    end
end
local NONE = {}

local function find(path, method, only_slash)
    local segs = split(path)
    local allowed, seen -- made only when a path matches with another method (405)
    for pass = 1, 2 do
        local list = pass == 1 and (by_len[#segs] or NONE) or with_rest
        for _, r in ipairs(list) do
            if not only_slash or r.slash then
                local params = match_route(r, segs)
                if params then
                    if r.method == method or (method == "HEAD" and r.method == "GET") then
                        return r, params
                    end
                    if not seen then
                        allowed, seen = {}, {}
                    end
                    if not seen[r.method] then
                        seen[r.method] = true
                        allowed[#allowed + 1] = r.method
                        if r.method == "GET" and not seen.HEAD then
                            seen.HEAD = true
                            allowed[#allowed + 1] = "HEAD"
                        end
                    end
                end
            end
        end
    end
    return nil, allowed or NONE
end

-- Fast path, tried first: static routes by their full decoded path (with and without "/v1"), then the
-- parameterised routes of the request's method as anchored Lua patterns applied after any "/v1" prefix.
-- It only answers exact matches; everything else (a trailing "/", 404, 405 and its Allow list) goes to the
-- segment matcher above, which defines the semantics (the unit specs run both).
local static, static_full = {}, {} -- pattern -> method -> route; the same keyed with and without "/v1"
for _, r in ipairs(compiled) do
    if not r.pattern:find("{", 1, true) then
        static[r.pattern] = static[r.pattern] or {}
        static[r.pattern][r.method] = r
        for _, key in ipairs({ r.pattern, "/v1" .. r.pattern }) do
            static_full[key] = static_full[key] or {}
            static_full[key][r.method] = r
        end
    end
end
local NO_PARAMS = setmetatable({}, { __newindex = function()
    error("router: static route params are read-only", 2)
end })

local by_method = {}
for _, r in ipairs(compiled) do
    if r.pattern:find("{", 1, true) then
        local names = {}
        local escaped = r.pattern:gsub("[%%%-%.%+%*%?%[%]%^%$%(%)]", "%%%0")
        local body = escaped:gsub("{([%w_]+)(%%?%*?)}", function(name, star)
            names[#names + 1] = name
            return star ~= "" and "(.*)" or "([^/]+)"
        end)
        local pat = "^" .. body .. "$"
        assert(#names <= 3, "router: at most 3 parameters per route: " .. r.pattern)
        -- The literal text after the first parameter ("/proxy/" of ".../{id}/proxy/{port}"), which any
        -- path the pattern matches contains: a plain find of it rules out most candidates before the
        -- pattern, whose "([^/]+)" would otherwise back off one character at a time through the id (about
        -- 0.7 us per candidate for a 36-character id).
        local need = r.pattern:match("^[^{]*{[^}]*}([^{]+)")
        local methods = r.method == "GET" and { "GET", "HEAD" } or { r.method }
        for _, m in ipairs(methods) do
            by_method[m] = by_method[m] or {}
            local list = by_method[m]
            list[#list + 1] = { pat = pat, route = r, names = names, need = need }
        end
    end
end

-- The server proxy's routes first: they carry most of the traffic, and no other route matches a path with
-- "proxy" as its third segment (nor they any other path), so the order changes nothing but the time
for _, list in pairs(by_method) do
    local proxy_first = {}
    for _, c in ipairs(list) do
        if c.route.handler == "proxy.forward" then
            proxy_first[#proxy_first + 1] = c
        end
    end
    for _, c in ipairs(list) do
        if c.route.handler ~= "proxy.forward" then
            proxy_first[#proxy_first + 1] = c
        end
    end
    for i, c in ipairs(proxy_first) do
        list[i] = c
    end
end

local match_pattern = string.match

-- The static route of `p` for `method` in one of the tables above (HEAD served by GET), or nil.
local function static_route(tbl, p, method)
    local st = tbl[p]
    return st and (st[method] or (method == "HEAD" and st.GET)) or nil
end

--- Matches a request. `path` is the raw request path (not decoded). Returns one of:
---   route, params        a match; params are the decoded path parameters
---   nil, "not_found"
---   nil, "method_not_allowed", allow   where allow is the value of the Allow header ("GET, HEAD")
function M.match(method, path)
    local p = M.unescape(path)
    local r = static_route(static_full, p, method)
    if r then
        return r, NO_PARAMS
    end
    local cands = by_method[method]
    if cands then
        local off = find_plain(p, "/v1/", 1, true) == 1 and 4 or 1
        for i = 1, #cands do
            local c = cands[i]
            local need = c.need
            local a, b, d
            if not need or find_plain(p, need, off, true) then
                a, b, d = match_pattern(p, c.pat, off)
            end
            if a then
                local names = c.names
                local params = { [names[1]] = a }
                if b then
                    params[names[2]] = b
                    if d then
                        params[names[3]] = d
                    end
                end
                return c.route, params
            end
        end
    end
    return M.match_segments(method, path)
end

--- The reference matcher (no fast path): the same results as M.match, by path segments.
function M.match_segments(method, path)
    local p = M.strip_version(M.unescape(path))
    local r = static_route(static, p, method)
    if r then
        return r, NO_PARAMS
    end
    local res
    r, res = find(p, method, false)
    if r then
        return r, res
    end
    local allowed = res
    if #allowed == 0 and #p > 1 and p:sub(-1) == "/" then
        r, res = find(p:sub(1, -2), method, true)
        if r then
            return r, res
        end
        allowed = res
    end
    if #allowed == 0 then
        return nil, "not_found"
    end
    table.sort(allowed)
    return nil, "method_not_allowed", table.concat(allowed, ", ")
end

return M
