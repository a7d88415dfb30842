-- The HTTP surface: builds the one function the core calls per request (core/README.md, core.http).
--
--   local handler = require("api").new{ config = cfg, service = svc, log = log, uuid = uuid, now = core.now }
--   http.listen{ ..., handler = handler }
--
-- Order per request (API.md §1): request id (set on every response, bound to the log) -> CORS preflight
-- (non-proxy routes, no auth) -> authentication (before routing, so an unknown path without a key is 401)
-- -> routing (404 / 405 + Allow) -> body limit (413, not on the proxy) -> handler -> one renderer. CORS headers
-- go on every response to a request with an Origin. A Lua error in a handler is logged with its traceback
-- and answered 500 GENERAL::UNKNOWN_ERROR.
--
-- Nothing here requires core.*: everything that touches the engine comes in through `deps`, so the whole
-- surface runs under busted with fakes. Optional deps: `validate` (default require "sandbox.validate"),
-- `ncpu`, `keys` (a list of {key=, principal=}; default from config), `auth_limiter` (default from
-- server.auth_failure_limit), `openapi_path`, `docs_dir`, `root`, `operator_routes` (a set from
-- lua/api/operator_routes.lua: tried after the built-in routes, served the same way).
local docs = require("api.docs")
local errors = require("common.errors")
local metrics = require("api.metrics")
local middleware = require("api.middleware")
local parse = require("api.parse")
local respond = require("api.respond")
local proxy = require("api.proxy")
local diagnostics = require("api.diagnostics")
local egress = require("api.egress")
local events = require("api.events")
local router = require("api.router")
local sandboxes = require("api.sandboxes")
local snapshots = require("api.snapshots")
local pools = require("api.pools")
local system = require("api.system")

local M = {}

local function method_not_allowed(allow)
    return errors.new(405, "GENERAL::METHOD_NOT_ALLOWED", "Method Not Allowed", { Allow = allow })
end

local function not_found()
    return errors.new(404, "GENERAL::NOT_FOUND", "Not Found")
end

-- The handler function of each route, looked up once by its name in the route table ("group.name").
local function bind_routes(groups)
    local bound = {}
    for _, r in ipairs(router.routes()) do
        local group, name = r.handler:match("^([%w_]+)%.([%w_]+)$")
        local fn = group and groups[group] and groups[group][name]
        assert(type(fn) == "function", "api: no handler for route " .. r.handler)
        bound[r.handler] = fn
    end
    return bound
end

-- The parts of a handler's ctx that most requests never read are built on first use: `query` (the parsed
-- query string) and `svc` (the context handed to the service).
local lazy_ctx = {
    __index = function(ctx, k)
        local v
        if k == "query" then
            v = parse.query(ctx.req.query)
        elseif k == "host" then -- (what a service context has: the API ctx can stand in for one)
            v = ctx.req:header("Host")
        elseif k == "remote_addr" then
            v = ctx.req.remote_addr
        elseif k == "svc" then
            local req = ctx.req
            v = {
                request_id = ctx.request_id,
                principal = ctx.principal,
                admin = ctx.admin,
                host = req:header("Host"),
                remote_addr = req.remote_addr,
            }
        else
            return nil
        end
        rawset(ctx, k, v)
        return v
    end,
}

-- handle()'s results once a route matched: the route goes along, for the request metrics.
local function with_route(route, status, headers, body)
    return status, headers, body, route
end

--- Returns handler(req) -> status, headers, body. See the top of this file for `deps`.
function M.new(deps)
    assert(type(deps) == "table", "api.new: deps table required")
    assert(deps.uuid and deps.uuid.hex, "api.new: deps.uuid.hex required")
    local log = deps.log or {}
    local sys = system.new(deps)
    local bound = bind_routes({
        sandboxes = sandboxes.new(deps),
        snapshots = snapshots.new(deps),
        pools = pools.new(deps),
        system = sys,
        docs = docs.new(deps),
        proxy = proxy.new(deps),
        metrics = metrics.new(deps),
        diagnostics = diagnostics.new(deps),
        events = events.new(deps),
        egress = egress.new(deps),
    })
    local measure = metrics.enabled(deps.config) and deps.now
    local now = deps.now
    local keys = deps.keys or middleware.keys_from_config(deps.config)
    local authenticate = middleware.authenticator(keys,
        deps.auth_limiter or middleware.limiter_from_config(deps.config, deps.now))
    local auth_on = #keys > 0
    local operator_routes = deps.operator_routes
    local durable = deps.durable

    local function handle(req, request_id)
        if middleware.is_preflight(req) then
            return 200, middleware.preflight_headers(req), nil
        end

        local exempt = middleware.is_exempt(req.path)
        local principal, admin, err
        if not exempt then
            principal, err = authenticate(req)
            if not principal then
                return respond.error(err)
            end
            admin = err -- on success the authenticator's second value is the admin flag
        end

        local route, params, allow = router.match(req.method, req.path)
        if not route and operator_routes then
            local oroute, oparams, oallow = operator_routes:match(req.method, req.path)
            if oroute then
                route, params = oroute, oparams
            elseif oparams == "method_not_allowed" and params ~= "method_not_allowed" then
                params, allow = oparams, oallow
            end
        end
        if not route then
            if params == "method_not_allowed" then
                return respond.error(method_not_allowed(allow))
            end
            return respond.error(not_found())
        end
        -- Defence in depth: a path let through without a key must land on a route that needs none.
        if exempt and not (route.exempt or route.raw_body) then
            principal, err = authenticate(req)
            if not principal then
                return with_route(route, respond.error(err))
            end
            admin = err -- on success the authenticator's second value is the admin flag
        end
        -- The proxy route (API.md §7.3). With no key configured it is open, as before. With keys (or
        -- tenants), it needs a key that can see the sandbox (the proxy then only reaches that tenant's
        -- sandboxes) or the sandbox's capability from an endpoint reply (checked by the proxy handler
        -- against the sandbox named in the path).
        local proxy_token
        if exempt and route.raw_body and auth_on then
            local token = req:header(proxy.TOKEN_HEADER)
            local has_token = token ~= nil and token ~= ""
            local key = req:header(middleware.API_KEY_HEADER)
            if key and key ~= "" then
                principal, err = authenticate(req)
                if principal then
                    admin = err
                elseif not has_token then
                    return with_route(route, respond.error(err))
                end
            end
            if has_token then
                proxy_token = token
            elseif not principal then
                return with_route(route,
                    respond.error(errors.new(401, "MISSING_API_KEY", proxy.MISSING_CREDENTIALS)))
            end
        end
        -- The egress API: the sandbox's egress token (checked by the service), or a valid key that can see
        -- the sandbox. A key that fails with no token sent is answered as on any other route. With no key
        -- configured every route is open (§1.2), this one too.
        local by_key = route.egress and not auth_on or nil
        if route.egress and auth_on then
            local key = req:header(middleware.API_KEY_HEADER)
            if key and key ~= "" then
                principal, err = authenticate(req)
                if principal then
                    admin, by_key = err, true
                elseif not req:header(egress.TOKEN_HEADER) then
                    return with_route(route, respond.error(err))
                end
            end
        end
        if req.body_too_large and not route.raw_body then
            return with_route(route, respond.error(parse.too_large()))
        end

        local ctx = setmetatable({
            req = req,
            route = route,
            params = params,
            principal = principal,
            admin = admin,
            request_id = request_id,
            proxy_token = proxy_token,
            by_key = by_key,
        }, lazy_ctx)
        local res
        res, err = (route.fn or bound[route.handler])(ctx)
        if not res then
            if not (type(err) == "table" and type(err.status) == "number" and type(err.code) == "string") then
                if log.error then
                    log.error("handler returned no response and no error object", {
                        route = route.handler,
                        err = tostring(err),
                    })
                end
                err = errors.internal()
            end
            return with_route(route, respond.error(err))
        end
        return with_route(route, respond.render(res))
    end

    local function traceback(e)
        return debug.traceback(tostring(e), 2)
    end

    -- GET /health is what load balancers poll: answered without the router and the middleware chain
    -- (no key, no parameters, no CORS preflight for GET), with the same headers and metrics as through them
    local health_route = router.match("GET", "/health")
    local health_v1 = router.match("GET", "/v1/health")
    local health = bound[health_route.handler]
    local function handle_health(route)
        return with_route(route, respond.render(health()))
    end

    return function(req)
        local started = measure and now()
        local request_id = middleware.request_id(req:header("X-Request-ID"), deps.uuid.hex)
        if log.set_request_id then
            log.set_request_id(request_id)
        end
        local ok, status, headers, body, route
        local path = req.path
        if req.method == "GET" and (path == "/health" or path == "/v1/health") and not req.body_too_large then
            ok, status, headers, body, route = true, handle_health(path == "/health" and health_route or health_v1)
        else
            ok, status, headers, body, route = xpcall(handle, traceback, req, request_id)
        end
        -- What the answer tells the client is on disk before it leaves: every request but a read waits for
        -- the store's writes so far (at once when there were none, or they are flushed already).
        local method = req.method
        -- (the server proxy's answer is the backend's, already on its way: nothing to hold back)
        if durable and method ~= "GET" and method ~= "HEAD" and method ~= "OPTIONS"
            and not (route and route.raw_body) then
            local dok, derr = durable()
            if not dok then
                if log.error then
                    log.error("the state store could not flush its writes", { err = tostring(derr) })
                end
                ok, status, headers, body = true, respond.error(errors.new(503, "STORE::UNAVAILABLE",
                    "The state store could not make the change durable: " .. tostring(derr),
                    { ["Retry-After"] = "5" }))
            end
        end
        if not ok then
            if log.error then
                log.error("unhandled error in request handler", {
                    method = req.method,
                    path = req.path,
                    err = status,
                })
            end
            status, headers, body = respond.error(errors.internal())
        end
        headers = headers or {}
        headers["X-Request-ID"] = request_id
        middleware.cors_headers(req, headers)
        if started then
            metrics.observe(req, ok and route or nil, status, started, now)
        end
        if log.level and log.level() == "DEBUG" then
            log.debug("request", { method = req.method, path = req.path, status = status })
        end
        return status, headers, body
    end
end

return M
