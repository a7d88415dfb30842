-- GET /metrics through the whole request pipeline (lua/api/init.lua + lua/api/metrics.lua) with fake deps:
-- request counters by route pattern, sandbox gauges from the service's records, access control, the
-- separate listener's handler, and the enabled switch.
local F = dofile("tests/lua/unit/api/fakes.lua")
local api = require("api")
local api_metrics = require("api.metrics")
local parse = require("common.metrics")

local KEY = { ["OPEN-SANDBOX-API-KEY"] = "secret-key" }
local ID = "5f0e8c4a-2b7d-4d1e-9a6b-3c2f1e0d9a8b"

-- The value of the one line `series` (name{labels}) in `text`, or nil.
local function value_of(text, series)
    for l in text:gmatch("[^\n]+") do
        local head, v = l:match("^(.-) (%S+)$")
        if head == series then
            return tonumber(v)
        end
    end
    return nil
end

local function scrape(handler)
    local s, h, b = handler(F.request({ path = "/metrics", headers = KEY }))
    assert.equal(200, s)
    assert.equal("text/plain; version=0.0.4; charset=utf-8", h["Content-Type"])
    return b
end

describe("GET /metrics", function()
    local deps, handler
    before_each(function()
        local records = {
            a = { state = "Running", principal = "default" },
            b = { state = "Running", principal = "default" },
            c = { state = "Paused", principal = "default" },
        }
        local svc = F.service({ get = { id = ID, status = { state = "Running" } } })
        svc.records = records
        svc.runtime = { name = "docker" }
        deps = F.deps({
            service = svc,
            version = "9.9.9",
            started = 1767225500.5,
            process_stats = function()
                return { rss_bytes = 12345678, open_fds = 17 }
            end,
            proxy_stats = function()
                return { connections_total = 3, active = 1, failures_total = 2, bytes_to_backend = 100,
                    bytes_from_backend = 2000, backend_connects_total = 1, pool_idle = 1 }
            end,
        })
        handler = api.new(deps)
    end)

    it("needs the API key when keys are configured", function()
        local s = handler(F.request({ path = "/metrics" }))
        assert.equal(401, s)
        assert.equal(200, (handler(F.request({ path = "/v1/metrics", headers = KEY }))))
    end)

    it("adds the proxy's remembered requests (counted in the core) to the proxy route's series", function()
        local fast = {}
        deps.proxy_stats = function()
            return { connections_total = 3, fast_total = 0, fast = fast }
        end
        handler = api.new(deps)
        local series = 'opensandbox_http_requests_total{method="GET",route="/sandboxes/{id}/proxy/{port}/{path*}",'
            .. 'status="200"}'
        -- (/v1 paths share the pattern label of their route)
        local v1 = 'opensandbox_http_requests_total{method="POST",route="/sandboxes/{id}/proxy/{port}",'
            .. 'status="200"}'
        local count = 'opensandbox_http_request_duration_seconds_count{method="GET",'
            .. 'route="/sandboxes/{id}/proxy/{port}/{path*}"}'
        local text = scrape(handler)
        local n0, c0 = value_of(text, series) or 0, value_of(text, count) or 0
        fast[1] = { false, true, "GET", 5, 0.00001 }
        fast[2] = { true, false, "POST", 2, 0.000004 }
        deps.proxy_stats = function()
            return { connections_total = 10, fast_total = 7, fast = fast }
        end
        text = scrape(handler)
        assert.equal(n0 + 5, value_of(text, series))
        assert.equal(c0 + 5, value_of(text, count))
        assert.equal(2, value_of(text, v1))
        assert.equal(7, value_of(text, "opensandbox_proxy_remembered_requests_total"))
        -- a later scrape adds only what is new
        fast[1] = { false, true, "GET", 8, 0.00002 }
        text = scrape(handler)
        assert.equal(n0 + 8, value_of(text, series))
        assert.equal(2, value_of(text, v1))
    end)

    it("adds the GET /health answers of the core to the /health series", function()
        local stats = { { "/health", 0, 0 }, { "/v1/health", 0, 0 } }
        deps.static_stats = function()
            return stats
        end
        handler = api.new(deps)
        local series = 'opensandbox_http_requests_total{method="GET",route="/health",status="200"}'
        local n0 = value_of(scrape(handler), series) or 0
        stats[1][2], stats[1][3] = 4, 0.00002
        stats[2][2], stats[2][3] = 1, 0.000005
        local text = scrape(handler)
        -- (/v1/health shares its route's pattern label; the scrape request itself goes through Lua)
        assert.equal(n0 + 5, value_of(text, series))
        text = scrape(handler)
        assert.equal(n0 + 5, value_of(text, series))
    end)

    it("counts requests by method, route pattern and status; never a sandbox id", function()
        local before = scrape(handler)
        local series = 'opensandbox_http_requests_total{method="GET",route="/sandboxes/{id}",status="200"}'
        local n0 = value_of(before, series) or 0
        handler(F.request({ path = "/v1/sandboxes/" .. ID, headers = KEY }))
        handler(F.request({ path = "/sandboxes/" .. ID, headers = KEY }))
        handler(F.request({ path = "/no/such/" .. ID, headers = KEY }))
        handler(F.request({ method = "BREW", path = "/sandboxes/" .. ID, headers = KEY }))
        handler(F.request({ path = "/sandboxes/" .. ID })) -- 401, before routing: labelled by its pattern
        local text = scrape(handler)
        assert.equal(n0 + 2, value_of(text, series))
        assert.truthy(value_of(text, 'opensandbox_http_requests_total{method="GET",route="unmatched",status="404"}'))
        assert.truthy(value_of(text, 'opensandbox_http_requests_total{method="OTHER",route="unmatched",status="405"}'))
        assert.truthy(value_of(text,
            'opensandbox_http_requests_total{method="GET",route="/sandboxes/{id}",status="401"}'))
        assert.truthy(value_of(text,
            'opensandbox_http_request_duration_seconds_count{method="GET",route="/sandboxes/{id}"}'))
        assert.is_nil(text:find(ID, 1, true))
        assert.is_nil(text:find("/no/such", 1, true))
    end)

    it("shows sandboxes by runtime and state (every state, 0 included), process, proxy and build figures", function()
        local text = scrape(handler)
        assert.equal(2, value_of(text, 'opensandbox_sandboxes{runtime="docker",state="Running",principal=""}'))
        assert.equal(1, value_of(text, 'opensandbox_sandboxes{runtime="docker",state="Paused",principal=""}'))
        assert.equal(0, value_of(text, 'opensandbox_sandboxes{runtime="docker",state="Failed",principal=""}'))
        assert.equal(12345678, value_of(text, "opensandbox_process_resident_memory_bytes"))
        assert.equal(17, value_of(text, "opensandbox_process_open_fds"))
        assert.equal(100, value_of(text, "opensandbox_uptime_seconds"))
        assert.truthy(value_of(text, "opensandbox_lua_memory_bytes") > 0)
        assert.equal(1, value_of(text, 'opensandbox_build_info{version="9.9.9"}'))
        assert.equal(3, value_of(text, "opensandbox_proxy_connections_total"))
        assert.equal(1, value_of(text, "opensandbox_proxy_active_connections"))
        assert.equal(2, value_of(text, "opensandbox_proxy_failures_total"))
        assert.equal(100, value_of(text, "opensandbox_proxy_sent_bytes_total"))
        assert.equal(2000, value_of(text, "opensandbox_proxy_received_bytes_total"))
        assert.equal(1, value_of(text, "opensandbox_proxy_backend_connects_total"))
        assert.equal(1, value_of(text, "opensandbox_proxy_idle_connections"))
        -- a record that goes away is no longer counted at the next scrape
        deps.service.records.a = nil
        text = scrape(handler)
        assert.equal(1, value_of(text, 'opensandbox_sandboxes{runtime="docker",state="Running",principal=""}'))
    end)

    it("labels sandboxes by principal when tenants exist, bounded by the configured principals", function()
        deps.config = {
            server = {
                api_keys = {
                    { key = "ka", principal = "team-a" },
                    { key = "kb", principal = "team-b" },
                },
            },
        }
        deps.keys = { { key = "secret-key", principal = "team-a", admin = true } }
        deps.service.records = {
            a = { state = "Running", principal = "team-a" },
            b = { state = "Running", principal = "team-b" },
            c = { state = "Running", principal = "gone-tenant" },
        }
        local text = scrape(api.new(deps))
        assert.equal(1, value_of(text, 'opensandbox_sandboxes{runtime="docker",state="Running",principal="team-a"}'))
        assert.equal(1, value_of(text, 'opensandbox_sandboxes{runtime="docker",state="Running",principal="team-b"}'))
        assert.equal(1, value_of(text, 'opensandbox_sandboxes{runtime="docker",state="Running",principal="_other"}'))
        assert.is_nil(text:find("gone-tenant", 1, true))
    end)

    it("the separate listener serves /metrics without a key, and nothing else", function()
        local h = api_metrics.listener_handler(deps)
        local s, hd, b = h(F.request({ path = "/metrics" }))
        assert.equal(200, s)
        assert.equal(parse.CONTENT_TYPE, hd["Content-Type"])
        assert.truthy(b:find("# TYPE opensandbox_sandboxes gauge", 1, true))
        assert.equal(404, (h(F.request({ path = "/v1/sandboxes" }))))
        assert.equal(405, (h(F.request({ method = "POST", path = "/metrics" }))))
    end)

    it("metrics.enabled = false: /metrics is 404 and requests are not counted", function()
        local series = 'opensandbox_http_requests_total{method="GET",route="/health",status="200"}'
        local n0 = value_of(scrape(handler), series) or 0
        local off = F.deps({ config = { server = { api_key = "secret-key" }, metrics = { enabled = false } } })
        local h = api.new(off)
        assert.equal(404, (h(F.request({ path = "/metrics", headers = KEY }))))
        h(F.request({ path = "/health" }))
        h(F.request({ path = "/health" }))
        assert.equal(n0, value_of(scrape(handler), series) or 0)
    end)
end)
