-- Integration: GET /metrics of the real binary without Docker (docker.host points nowhere: the server starts,
-- serves the records of its store, and a create answers 503), scraped by a real Prometheus (Debian's
-- /usr/bin/prometheus, started here on a free loopback port and stopped by PID):
--   - 401 without the key on the API port; the separate listener (metrics.listen) answers without one and
--     serves nothing else;
--   - the sandboxes of the store show in the state gauge; route labels are patterns; no sandbox id appears;
--   - the text passes `promtool check metrics`; deploy/prometheus/alerts.yml passes `promtool check rules`;
--     every metric deploy/grafana/dashboard.json uses exists in /metrics;
--   - Prometheus scrapes the listener every second, and PromQL through /api/v1/query sees the stored sandboxes
--     and the create counter after a create request.
-- The create through Docker (a sandbox that runs, provisioning counters): lifecycle/metrics_spec.lua.
local server = require("support.server")
local prometheus = require("support.prometheus")
local value_of, wait_until = prometheus.value_of, prometheus.wait_until
local curl = require("support.curl_client")
local json = require("common.json")

local KEY = "metrics-test-key"
local AUTH = { ["OPEN-SANDBOX-API-KEY"] = KEY }
local IDS = {
    "5a1e0000-0000-4000-8000-000000000001",
    "5a1e0000-0000-4000-8000-000000000002",
    "5a1e0000-0000-4000-8000-000000000003",
}

local function read(path)
    local f = assert(io.open(path, "r"))
    local s = f:read("a")
    f:close()
    return s
end

-- A store with Running records, as a server that made them would have left it.
local function seed(path)
    local store = assert(require("sandbox.store").open(path, { mkdir = function(d)
        return require("lfs").mkdir(d)
    end }))
    local model = require("sandbox.model")
    local now = os.time() * 1000000
    for i, id in ipairs(IDS) do
        local rec = model.new_record(id, { image = { uri = "local/busybox:latest" }, entrypoint = { "sleep", "600" },
            timeout = 3600 }, now)
        model.apply_status(rec, model.status(model.STATE.RUNNING, model.REASON.CONTAINER_RUNNING, "running", now))
        rec.handle = string.format("%064d", i)
        rec.principal = "default"
        assert(store:put(rec))
    end
    store:close()
end

describe("metrics #integration", function()
    local srv, mbase, dir, prom

    local function scrape()
        local res = assert(curl.request({ url = mbase .. "/metrics", timeout = 10 }))
        assert.equal(200, res.status)
        return res.body
    end

    local function promql(q)
        return prom:query(q)
    end

    setup(function()
        dir = server.tmpdir()
        seed(dir .. "/state/opensandbox.db")
        local mport = math.random(45001, 47000)
        srv = server.start({
            dir = dir,
            config = {
                server = { api_key = KEY },
                docker = { host = "unix:///nonexistent/docker.sock" },
                metrics = { listen = "127.0.0.1:" .. mport },
            },
        })
        mbase = "http://127.0.0.1:" .. mport
    end)

    teardown(function()
        if prom then
            prom:stop()
        end
        if srv then
            srv:stop()
        end
        if dir and dir:find("^/tmp/osb%-test%.") and not os.getenv("OSB_KEEP_TEST_DIRS") then
            server.sh("rm -rf " .. server.quote(dir))
        end
    end)

    it("needs the API key on the API port; the separate listener serves /metrics only, without a key", function()
        assert.equal(401, srv:request("GET", "/metrics").status)
        local res = srv:request("GET", "/v1/metrics", { headers = AUTH })
        assert.equal(200, res.status)
        assert.equal("text/plain; version=0.0.4; charset=utf-8", res.headers["content-type"])
        local direct = curl.request({ url = mbase .. "/metrics" })
        assert.equal(200, direct.status)
        assert.truthy(direct.body:find("# TYPE opensandbox_http_requests_total counter", 1, true))
        assert.equal(404, curl.request({ url = mbase .. "/v1/sandboxes" }).status)
        assert.equal(404, curl.request({ url = mbase .. "/health" }).status)
        assert.equal(405, curl.request({ method = "POST", url = mbase .. "/metrics" }).status)
        assert.equal(200, srv:request("GET", "/health").status)
    end)

    it("shows the stored sandboxes by state, requests by route pattern, and no sandbox id", function()
        for _, id in ipairs(IDS) do
            assert.equal(200, srv:request("GET", "/v1/sandboxes/" .. id, { headers = AUTH }).status)
        end
        assert.equal(404, srv:request("GET", "/v1/sandboxes/" .. IDS[1] .. "x", { headers = AUTH }).status)
        local text = scrape()
        assert.equal(3, value_of(text, 'opensandbox_sandboxes{runtime="docker",state="Running",principal=""}'))
        assert.equal(0, value_of(text, 'opensandbox_sandboxes{runtime="docker",state="Paused",principal=""}'))
        assert.equal(3, value_of(text,
            'opensandbox_http_requests_total{method="GET",route="/sandboxes/{id}",status="200"}'))
        assert.equal(1, value_of(text,
            'opensandbox_http_requests_total{method="GET",route="/sandboxes/{id}",status="404"}'))
        assert.truthy(value_of(text,
            'opensandbox_runtime_requests_total{runtime="docker",method="GET",status_class="error"}') >= 1)
        assert.truthy(value_of(text, "opensandbox_process_resident_memory_bytes") > 1e6)
        assert.truthy(value_of(text, "opensandbox_process_open_fds") > 3)
        assert.truthy(value_of(text, "opensandbox_lua_memory_bytes") > 1e5)
        assert.truthy(value_of(text, "opensandbox_uptime_seconds") >= 0)
        assert.equal(0, value_of(text, "opensandbox_proxy_active_connections"))
        for _, id in ipairs(IDS) do
            assert.is_nil(text:find(id, 1, true))
        end
        for route in text:gmatch('opensandbox_http_requests_total{method="%u+",route="([^"]*)"') do
            assert.truthy(route == "unmatched" or route:sub(1, 1) == "/", route)
            assert.is_nil(route:find("%x%x%x%x%x%x%x%x%-"), route)
        end
    end)

    it("passes promtool check metrics; the alert rules pass promtool check rules", function()
        local path = dir .. "/scrape.txt"
        local f = assert(io.open(path, "w"))
        f:write(scrape())
        f:close()
        local out, ok = server.sh("promtool check metrics < " .. server.quote(path) .. " 2>&1")
        assert.is_true(ok, out)
        out, ok = server.sh("promtool check rules " .. server.quote(server.root() .. "/deploy/prometheus/alerts.yml")
            .. " 2>&1")
        assert.is_true(ok, out)
        assert.truthy(out:find("SUCCESS", 1, true), out)
    end)

    it("every metric the Grafana dashboard uses exists in /metrics", function()
        local dash = json.decode(read(server.root() .. "/deploy/grafana/dashboard.json"))
        local text = scrape()
        local used = 0
        for _, p in ipairs(dash.panels) do
            for _, t in ipairs(p.targets or {}) do
                for name in t.expr:gmatch("opensandbox_[%w_]+") do
                    local base = name
                    if not text:find("# TYPE " .. base .. " ", 1, true) then
                        base = name:gsub("_bucket$", ""):gsub("_sum$", ""):gsub("_count$", "")
                    end
                    assert.truthy(text:find("# TYPE " .. base .. " ", 1, true), "not in /metrics: " .. name)
                    used = used + 1
                end
            end
        end
        assert.truthy(used >= 15)
    end)

    it("a real Prometheus scrapes the listener and a PromQL query sees a create request", function()
        prom = prometheus.start(dir, (mbase:gsub("^http://", "")))
        wait_until("the stored sandboxes in Prometheus", 30, function()
            return promql('up{job="opensandbox"}') == 1
                and promql('sum(opensandbox_sandboxes{job="opensandbox",state="Running"})') == 3
        end)
        -- a create (the runtime is unreachable: 503), counted, and seen through PromQL: the series is new, so
        -- the query compares values (increase() ignores a series' first sample)
        local q = 'sum(opensandbox_http_requests_total{job="opensandbox",method="POST",route="/sandboxes"})'
        assert.is_nil(promql(q))
        local res = srv:request("POST", "/v1/sandboxes", { headers = AUTH, body = json.encode({
            image = { uri = "local/busybox:latest" }, entrypoint = { "sleep", "1" }, timeout = 60,
            resourceLimits = {} }) })
        assert.equal(503, res.status, res.body)
        assert.equal(1, wait_until("Prometheus to see the create", 30, function()
            return promql(q)
        end))
        assert.equal(1, promql('sum(opensandbox_http_requests_total{job="opensandbox",method="POST",'
            .. 'route="/sandboxes",status="503"})'))
    end)
end)
