-- GET /metrics: the server's metrics in the Prometheus text format (lua/common/metrics.lua), and the
-- per-request instrumentation that lua/api/init.lua calls for every response.
--
-- What is counted where:
--   requests (method, route pattern, status; latency)   here, called from lua/api/init.lua
--   sandboxes by state (runtime, state, principal)      here, at scrape time from the service's records
--   provisioning steps and outcomes                     lua/sandbox/provisioning.lua
--   runtime API requests                                lua/runtimes/docker/engine.lua, kubernetes/api.lua
--   hook calls, failures, durations                     lua/hooks/init.lua
--   store write failures                                lua/sandbox/store.lua
--   proxy connections and bytes                         core/proxy.c (http.proxy_stats), read at scrape time
--   process (RSS, fds, Lua heap, uptime, build info)    here, at scrape time
--   pools (members by state, claims)                    lua/sandbox/pools.lua
--
-- deps (all optional, for specs): service, config, now, version, started (the start time, seconds),
-- process_stats() -> { rss_bytes, open_fds }, proxy_stats() -> { connections_total, ... }, registry.
local errors = require("common.errors")
local metrics = require("common.metrics")
local router = require("api.router")

local M = {}

local registry = metrics.default

local REQUESTS = registry:counter("opensandbox_http_requests_total",
    "HTTP requests answered, by method, route pattern and status.", { "method", "route", "status" })
local LATENCY = registry:histogram("opensandbox_http_request_duration_seconds",
    "Time from the start of the handler to the response (to the response head for the proxy), by method and "
        .. "route pattern.", { "method", "route" })

--- The route label of requests that matched no route (404, and 401 before routing with no route behind).
M.UNMATCHED = "unmatched"

-- Methods outside this set are counted as "OTHER" (a client chooses the method: it must not pick labels).
local METHODS = {
    GET = "GET",
    HEAD = "HEAD",
    POST = "POST",
    PUT = "PUT",
    PATCH = "PATCH",
    DELETE = "DELETE",
    OPTIONS = "OPTIONS",
}

-- The series of each (route entry, method), resolved once: { h = latency series, [status] = counter series }.
-- Keyed by the router's entry tables (a fixed set) and then by method (bounded by METHODS).
local by_route = setmetatable({}, { __mode = "k" })
local unmatched_route = {} -- the key for requests that matched no route

local function entry_for(route, method)
    local per = by_route[route]
    if not per then
        per = {}
        by_route[route] = per
    end
    local e = per[method]
    if not e then
        local pattern = route == unmatched_route and M.UNMATCHED or route.pattern
        e = { h = LATENCY:labels(method, pattern), pattern = pattern }
        per[method] = e
    end
    return e
end

--- Records one answered request. `route` is the router's entry (nil when none matched: then the path is
--- matched again for its label, which only the error paths pay). `started` is deps.now() at the start.
--- The common case is a few table reads and adds: no string is built, no function but now() is called.
function M.observe(req, route, status, started, now)
    local method = METHODS[req.method] or "OTHER"
    if not route then
        route = router.match(req.method, req.path) or unmatched_route
    end
    local per = by_route[route]
    local e = per and per[method] or entry_for(route, method)
    local c = e[status]
    if not c then
        c = REQUESTS:labels(method, e.pattern, status)
        e[status] = c
    end
    c.value = c.value + 1
    -- Histogram:observe, inline
    local h = e.h
    local v = now() - started
    local b, i, nb = h.bounds, 1, h.nb
    while i <= nb and v > b[i] do
        i = i + 1
    end
    local counts = h.counts
    counts[i] = counts[i] + 1
    h.sum = h.sum + v
    h.count = h.count + 1
end

-- scrape-time families
local SANDBOXES = registry:gauge("opensandbox_sandboxes",
    "Sandboxes known to the server, by runtime, state and principal (principal is \"\" without tenants).",
    { "runtime", "state", "principal" })
local RSS = registry:gauge("opensandbox_process_resident_memory_bytes", "Resident set size of the server.")
local FDS = registry:gauge("opensandbox_process_open_fds", "Open file descriptors of the server.")
local LUA_HEAP = registry:gauge("opensandbox_lua_memory_bytes", "Memory in use by the Lua heap.")
local UPTIME = registry:gauge("opensandbox_uptime_seconds", "Seconds since the server started.")
local BUILD = registry:gauge("opensandbox_build_info", "Always 1; the labels name the build.", { "version" })
local PROXY = {
    connections_total = registry:counter("opensandbox_proxy_connections_total",
        "Requests the server proxy forwarded to sandboxes (on a new or a pooled keep-alive connection)."),
    fast_total = registry:counter("opensandbox_proxy_remembered_requests_total",
        "Requests the server proxy forwarded on a remembered decision, without running the Lua route "
        .. "(server.proxy_remember)."),
    backend_connects_total = registry:counter("opensandbox_proxy_backend_connects_total",
        "TCP connections the server proxy opened to sandboxes (the other requests reused pooled ones)."),
    pool_idle = registry:gauge("opensandbox_proxy_idle_connections",
        "Idle keep-alive connections to sandboxes in the server proxy's pool now."),
    active = registry:gauge("opensandbox_proxy_active_connections",
        "Server proxy connections to sandboxes open now (tunnels included)."),
    failures_total = registry:counter("opensandbox_proxy_failures_total",
        "Proxied requests that failed (connect error, timeout, bad response from the sandbox)."),
    bytes_to_backend = registry:counter("opensandbox_proxy_sent_bytes_total",
        "Bytes the server proxy sent to sandboxes (request heads, bodies, tunnel data)."),
    bytes_from_backend = registry:counter("opensandbox_proxy_received_bytes_total",
        "Bytes the server proxy received from sandboxes (response heads, bodies, tunnel data)."),
}

local STATES = { "Pending", "Running", "Paused", "Stopping", "Terminated", "Failed" }

-- The principals that label the sandbox gauge: those of the configured tenants (server.api_keys), so that
-- the label set is bounded by the configuration. No tenants: one principal "". A record whose principal is
-- not configured (a removed tenant) counts under "_other".
local function tenant_principals(config)
    local keys = config and config.server and config.server.api_keys
    if type(keys) ~= "table" or #keys == 0 then
        return nil
    end
    local set = {}
    for _, k in ipairs(keys) do
        if type(k.principal) == "string" then
            set[k.principal] = true
        end
    end
    if config.server.api_key then
        set.default = true
    end
    return set
end

-- Requests the server proxy forwarded on a remembered decision (core/proxy_fast.c) never reach observe(): the
-- core counts them by route, method and time spent, and each scrape adds what is new since the last one to the
-- same series as the Lua route's (status 200, as observe() records a forwarded request; the time lands in the
-- bucket of its average, microseconds).
-- The same for GET /health answered by the core (core/httpd.c static answers, http.static_stats).
local fast_seen = {} -- "v1|tail|method" or a static path -> { count, seconds } already added

-- adds what is new in (count, seconds) since the last scrape under `k` to the series of the route matching
-- `path`, method `method`, status 200
local function fold(k, path, method, count, seconds)
    local seen = fast_seen[k] or { 0, 0 }
    local dn, ds = count - seen[1], seconds - seen[2]
    if dn <= 0 then
        return
    end
    local route = router.match("GET", path)
    local e = route and entry_for(route, method)
    if e then
        local c = e[200]
        if not c then
            c = REQUESTS:labels(method, e.pattern, 200)
            e[200] = c
        end
        c.value = c.value + dn
        local h = e.h
        local b, i, nb, avg = h.bounds, 1, h.nb, ds / dn
        while i <= nb and avg > b[i] do
            i = i + 1
        end
        h.counts[i] = h.counts[i] + dn
        h.sum = h.sum + ds
        h.count = h.count + dn
    end
    fast_seen[k] = { count, seconds }
end

function M.fold_fast(list)
    for _, f in ipairs(list or {}) do
        local v1, tail, method = f[1], f[2], f[3]
        fold((v1 and "v1" or "") .. "|" .. (tail and "t" or "") .. "|" .. method,
            (v1 and "/v1" or "") .. "/sandboxes/x/proxy/1" .. (tail and "/" or ""), method, f[4], f[5])
    end
end

function M.fold_static(list)
    for _, f in ipairs(list or {}) do
        fold(f[1], f[1], "GET", f[2], f[3])
    end
end

-- What the scrape-time collector reads: set by the latest new() (one server per process; specs make more).
local current

-- The sandbox gauge's series for one server, made once per (state, principal) so that every state shows,
-- even at 0.
local function sandbox_series(deps)
    local service = deps.service
    local principals = tenant_principals(deps.config)
    local runtime_name = service and service.runtime and service.runtime.name or "none"
    local by_state = {}
    for _, st in ipairs(STATES) do
        local per = {}
        if principals then
            for p in pairs(principals) do
                per[p] = SANDBOXES:labels(runtime_name, st, p)
            end
            per._other = SANDBOXES:labels(runtime_name, st, "_other")
        else
            per[""] = SANDBOXES:labels(runtime_name, st, "")
        end
        by_state[st] = per
    end
    return by_state, principals
end

local function collect()
    local cur = current
    if not cur then
        return
    end
    local deps, by_state, principals = cur.deps, cur.by_state, cur.principals
    SANDBOXES:reset()
    local service = deps.service
    if service and service.records then
        for _, rec in pairs(service.records) do
            local per = by_state[rec.state]
            if per then
                local s
                if principals then
                    s = per[principals[rec.principal] and rec.principal or "_other"]
                else
                    s = per[""]
                end
                s.value = s.value + 1
            end
        end
    end
    LUA_HEAP:get():set(collectgarbage("count") * 1024)
    if deps.now then
        UPTIME:get():set(deps.now() - cur.started)
    end
    if deps.process_stats then
        local ps = deps.process_stats()
        if ps then
            RSS:get():set(ps.rss_bytes or 0)
            FDS:get():set(ps.open_fds or 0)
        end
    end
    if deps.proxy_stats then
        local px = deps.proxy_stats()
        if px then
            for k, fam in pairs(PROXY) do
                fam:get().value = px[k] or 0
            end
            M.fold_fast(px.fast)
        end
    end
    if deps.static_stats then
        M.fold_static(deps.static_stats())
    end
end
registry:on_scrape(collect)

--- Whether config.metrics.enabled is not false.
function M.enabled(config)
    local cfg = config and config.metrics
    return not (cfg and cfg.enabled == false)
end

--- The route group "metrics" ({ scrape = fn }). config.metrics.enabled false: /metrics answers 404 (and
--- lua/api/init.lua does not call observe()).
function M.new(deps)
    local enabled = M.enabled(deps.config)
    if enabled then
        local by_state, principals = sandbox_series(deps)
        current = {
            deps = deps,
            by_state = by_state,
            principals = principals,
            started = deps.started or (deps.now and deps.now()) or 0,
        }
        BUILD:labels(deps.version or "unknown"):set(1)
    end
    local h = {}
    function h.scrape()
        if not enabled then
            return nil, errors.new(404, "GENERAL::NOT_FOUND", "Not Found")
        end
        local text, errs = registry:expose()
        if errs and deps.log and deps.log.error then
            deps.log.error("a metrics collector failed", { error = table.concat(errs, "; ") })
        end
        return { status = 200, body = text, content_type = metrics.CONTENT_TYPE }
    end
    return h
end

--- The handler of the separate metrics listener (config metrics.listen): GET or HEAD /metrics (or
--- /v1/metrics) without an API key; anything else 404 (405 for another method on /metrics).
function M.listener_handler(deps)
    local respond = require("api.respond")
    local h = M.new(deps)
    return function(req)
        local path = req.path
        if path ~= "/metrics" and path ~= "/v1/metrics" then
            return respond.error(errors.new(404, "GENERAL::NOT_FOUND", "Not Found"))
        end
        if req.method ~= "GET" and req.method ~= "HEAD" then
            return respond.error(errors.new(405, "GENERAL::METHOD_NOT_ALLOWED", "Method Not Allowed",
                { Allow = "GET, HEAD" }))
        end
        local res, err = h.scrape()
        if not res then
            return respond.error(err)
        end
        return respond.render(res)
    end
end

return M
