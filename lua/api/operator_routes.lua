-- Operator routes: extra HTTP routes written in Lua, without recompiling. They come from the `*.lua` files
-- of server.routes_dir (sorted by name) and from the route modules an embedding program adds
-- (osb_add_routes, include/opensandbox.h). The API serves them after its own routes, with the same
-- authentication, request id, CORS, metrics and error envelope (lua/api/init.lua).
--
-- A route module returns a table:
--   return {
--     routes = {
--       { method = "GET", path = "/hello/{name}", summary = "Say hello",
--         handler = function(ctx) return { status = 200, json = { hello = ctx.params.name } } end },
--     },
--   }
-- method: GET, POST, PUT, PATCH or DELETE (GET also answers HEAD). path: "/"-separated segments, each a
-- literal, a `{name}` (one non-empty segment) or, last, `{name*}` (the rest of the path); parameters arrive
-- percent-decoded in ctx.params. A route that a built-in route would answer first is an error, and so is
-- the same method and path twice. summary is optional; any other field is an error.
--
-- handler(ctx) runs in the request's task (it may yield: service calls, core.client requests) and returns
-- a response table ({ status =, json = } | { status =, body =, content_type = } | { status = }, with
-- optional headers) or nil and an error object (require("common.errors").new(status, code, message)).
-- ctx has req (method, path, query, body, remote_addr, req:header(name)), params, query (name -> array of
-- values), principal, admin, request_id, and service (the lifecycle service), config, log.
-- A route file is trusted server code (unlike a hook, it runs without budgets); its top-level globals stay
-- in its own environment.
--
--   local set, err = operator_routes.new{ dir = path | nil, sources = {{name=, source=}...}, builtin = router,
--                                         log = log, extra_ctx = { service =, config =, log = } }
--   set:load()                   -> true or nil, message (the previous routes stay on any error)
--   set:match(method, raw_path)  -> route, params | nil, "not_found" | nil, "method_not_allowed", allow
local errors = require("common.errors")
local files_mod = require("common.files")

local M = {}

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }
local ROUTE_FIELDS = { method = true, path = true, handler = true, summary = true }
local MODULE_FIELDS = { routes = true }

-- "/a/{b}/{c*}" -> segments { {lit="a"}, {param="b"} }, rest "c"; or nil, message
local function compile_path(path)
    if type(path) ~= "string" or path:sub(1, 1) ~= "/" or #path > 1024 then
        return nil, "path must be a string starting with '/'"
    end
    local segs, rest, seen = {}, nil, {}
    local parts = {}
    for seg in (path:sub(2) .. "/"):gmatch("(.-)/") do
        parts[#parts + 1] = seg
    end
    for i, seg in ipairs(parts) do
        local name, star = seg:match("^{([%a_][%w_]*)(%*?)}$")
        if name then
            if seen[name] then
                return nil, string.format("path %s: parameter {%s} appears twice", path, name)
            end
            seen[name] = true
            if star == "*" then
                if i ~= #parts then
                    return nil, string.format("path %s: a {%s*} segment must be the last", path, name)
                end
                rest = name
            else
                segs[#segs + 1] = { param = name }
            end
        elseif seg == "" and i == #parts and i == 1 then
            segs[#segs + 1] = { lit = "" } -- the path "/"
        elseif not seg:find("^[%w%-%._~:@!$&'()+,;=]+$") then
            return nil, string.format("path %s: segment '%s' is neither a literal nor a {name}", path, seg)
        else
            segs[#segs + 1] = { lit = seg }
        end
    end
    return segs, rest
end

-- A concrete path that the route matches (parameters filled in), to ask the built-in router about it.
local function sample_path(route)
    local out = {}
    for _, s in ipairs(route.segs) do
        out[#out + 1] = s.lit or "x"
    end
    if route.rest then
        out[#out + 1] = "x"
    end
    return "/" .. table.concat(out, "/")
end

local function split(path)
    local segs = {}
    for seg in (path:sub(2) .. "/"):gmatch("(.-)/") do
        segs[#segs + 1] = seg
    end
    return segs
end

local function match_route(r, segs)
    local n = #r.segs
    if r.rest then
        if #segs <= n then
            return nil
        end
    elseif #segs ~= n then
        return nil
    end
    for i = 1, n do
        local want, got = r.segs[i], segs[i]
        if want.lit then
            if want.lit ~= got then
                return nil
            end
        elseif got == "" then
            return nil
        end
    end
    local params = {}
    for i = 1, n do
        if r.segs[i].param then
            params[r.segs[i].param] = segs[i]
        end
    end
    if r.rest then
        params[r.rest] = table.concat(segs, "/", n + 1)
    end
    return params
end

-- The function the API calls for a matched operator route: the operator's handler with the extra ctx
-- fields, its result checked (a bad result is logged and answered 500, like a built-in handler's).
local function bind(self, name, r)
    local handler, extra, log = r.handler, self.extra_ctx, self.log
    return function(ctx)
        for k, v in pairs(extra) do
            rawset(ctx, k, v)
        end
        local res, err = handler(ctx)
        if res == nil then
            return nil, err
        end
        if type(res) ~= "table" or math.type(res.status) ~= "integer" or res.status < 100 or res.status > 599 then
            if log.error then
                log.error("operator route returned no valid response", { routes = name, path = r.path })
            end
            return nil, errors.internal()
        end
        return res
    end
end

-- Loads one route module (source text named `name`). Returns its route entries or nil, message.
local function load_module(self, name, src)
    local env = setmetatable({}, { __index = _G })
    local chunk, lerr = load(src, "@" .. name, "t", env)
    if not chunk then
        return nil, lerr
    end
    local ok, mod = pcall(chunk)
    if not ok then
        return nil, string.format("%s: %s", name, tostring(mod))
    end
    if type(mod) ~= "table" then
        return nil, string.format("%s: must return a table with `routes`, got %s", name, type(mod))
    end
    for k in pairs(mod) do
        if not MODULE_FIELDS[k] then
            return nil, string.format("%s: unknown field '%s' (a route module has `routes`)", name, tostring(k))
        end
    end
    if type(mod.routes) ~= "table" then
        return nil, string.format("%s: `routes` must be an array of routes", name)
    end
    local out = {}
    for i, r in ipairs(mod.routes) do
        local where = string.format("%s: route %d", name, i)
        if type(r) ~= "table" then
            return nil, where .. ": must be a table"
        end
        for k in pairs(r) do
            if not ROUTE_FIELDS[k] then
                return nil, string.format("%s: unknown field '%s' (method, path, handler, summary)", where, tostring(k))
            end
        end
        if not METHODS[r.method] then
            return nil, where .. ": method must be one of GET, POST, PUT, PATCH, DELETE"
        end
        if type(r.handler) ~= "function" then
            return nil, where .. ": handler must be a function"
        end
        if r.summary ~= nil and type(r.summary) ~= "string" then
            return nil, where .. ": summary must be a string"
        end
        local segs, rest = compile_path(r.path)
        if not segs then
            return nil, string.format("%s: %s", where, rest)
        end
        local entry = {
            method = r.method,
            pattern = r.path,
            handler = "operator." .. name,
            summary = r.summary,
            exempt = false,
            slash = false,
            raw_body = false,
            segs = segs,
            rest = rest,
            source = name,
        }
        entry.fn = bind(self, name, r)
        out[#out + 1] = entry
    end
    if #out ~= #mod.routes then
        return nil, string.format("%s: `routes` must be an array (no holes)", name)
    end
    return out
end

local Set = {}
Set.__index = Set

function M.new(opts)
    local self = setmetatable({
        dir = opts.dir,
        sources = opts.sources or {},
        builtin = opts.builtin or require("api.router"),
        log = opts.log or {},
        extra_ctx = opts.extra_ctx or {},
        routes = {},
    }, Set)
    return self
end

--- Loads every route module again. On success the new routes replace the old ones; on any error the old
--- ones stay and nil, message (naming the file) is returned.
function Set:load()
    local modules = {}
    if self.dir then
        local files, err = files_mod.lua_files(self.dir, "routes")
        if not files then
            return nil, err
        end
        for _, f in ipairs(files) do
            local src, rerr = files_mod.read(self.dir .. "/" .. f)
            if not src then
                return nil, string.format("%s: cannot read: %s", f, tostring(rerr))
            end
            modules[#modules + 1] = { name = f, source = src }
        end
    end
    for _, m in ipairs(self.sources) do
        modules[#modules + 1] = m
    end
    local routes, seen = {}, {}
    for _, m in ipairs(modules) do
        local list, err = load_module(self, m.name, m.source)
        if not list then
            return nil, err
        end
        for _, r in ipairs(list) do
            local key = r.method .. " " .. r.pattern
            if seen[key] then
                return nil, string.format("%s: %s is already defined by %s", m.name, key, seen[key])
            end
            seen[key] = m.name
            local b = self.builtin.match(r.method, sample_path(r))
            if b then
                return nil, string.format("%s: %s would never be reached: the built-in route %s %s answers it",
                    m.name, key, b.method, b.pattern)
            end
            routes[#routes + 1] = r
        end
    end
    self.routes = routes
    return true
end

--- The loaded routes: { {method=, pattern=, summary=, source=}... } in load order.
function Set:list()
    local out = {}
    for i, r in ipairs(self.routes) do
        out[i] = { method = r.method, pattern = r.pattern, summary = r.summary, source = r.source }
    end
    return out
end

--- Matches a request (raw, not yet decoded path), like api.router's match.
function Set:match(method, path)
    if #self.routes == 0 then
        return nil, "not_found"
    end
    local segs = split(self.builtin.unescape(path))
    local allowed, seen
    for _, r in ipairs(self.routes) do
        local params = match_route(r, segs)
        if params then
            if r.method == method or (method == "HEAD" and r.method == "GET") then
                return r, params
            end
            allowed, seen = allowed or {}, seen or {}
            for _, m in ipairs(r.method == "GET" and { "GET", "HEAD" } or { r.method }) do
                if not seen[m] then
                    seen[m] = true
                    allowed[#allowed + 1] = m
                end
            end
        end
    end
    if not allowed then
        return nil, "not_found"
    end
    table.sort(allowed)
    return nil, "method_not_allowed", table.concat(allowed, ", ")
end

return M
