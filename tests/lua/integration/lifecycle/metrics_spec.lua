-- Integration spec: GET /metrics of the real server against the real Docker daemon, scraped by a real
-- Prometheus (Debian's /usr/bin/prometheus, started here on a free loopback port and stopped by PID).
--   - access: 401 without the key on the API port; the separate listener (metrics.listen) answers without
--     one and serves nothing else;
--   - a create shows in the counters and gauges; route labels are patterns; no sandbox id anywhere;
--   (promtool, the alert rules and the dashboard are checked without Docker: engine/metrics_spec.lua)
--   - Prometheus scrapes the listener every second and a PromQL query through /api/v1/query sees a create.
--
--   flock /tmp/osb-docker.lock lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' \
--       tests/lua/integration/lifecycle/metrics_spec.lua
local H = require("lifecycle.helpers")
local prometheus = require("support.prometheus")
local value_of, wait_until = prometheus.value_of, prometheus.wait_until

local KEY = "metrics-spec-key"
local AUTH = { ["OPEN-SANDBOX-API-KEY"] = KEY }

-- create + wait for Running, with the key (the lifecycle helpers send none)
local function create_running(srv)
    local res = H.call(srv, "POST", "/v1/sandboxes", H.body(), AUTH)
    assert.equal(202, res.status, res.body)
    local id = res.json.id
    wait_until("sandbox " .. id .. " Running", 90, function()
        local r = H.call(srv, "GET", "/v1/sandboxes/" .. id, nil, AUTH)
        return r.status == 200 and r.json.status.state == "Running"
    end)
    return id
end

local function delete(srv, id)
    assert.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. id, nil, AUTH).status)
    wait_until("sandbox " .. id .. " gone", 60, function()
        return H.call(srv, "GET", "/v1/sandboxes/" .. id, nil, AUTH).status == 404
    end)
end

describe("metrics #integration #docker", function()
    local srv, mport, mbase, dir, prom

    local function scrape()
        local res = assert(H.curl({ url = mbase .. "/metrics", timeout = 10 }))
        assert.equal(200, res.status)
        return res.body
    end

    -- A PromQL instant query; returns the first result's value (a number) or nil.
    local function promql(q)
        return prom:query(q)
    end

    -- this spec's server has its own docker.instance and removes only the containers labelled with it, so
    -- that it never touches another server's
    local instance = string.format("metrics-spec-%d-%d", os.time(), math.random(1e6))
    local function remove_own_containers()
        H.run("docker ps -aq --filter label=opensandbox.io/instance=" .. instance .. " | xargs -r docker rm -f -v")
    end

    setup(function()
        H.ensure_image()
        mport = math.random(45001, 47000)
        srv = H.start({ config = { server = { api_key = KEY }, metrics = { listen = "127.0.0.1:" .. mport },
            docker = { instance = instance } } })
        mbase = "http://127.0.0.1:" .. mport
        dir = srv.dir
    end)

    teardown(function()
        if prom then
            prom:stop()
        end
        H.stop_all()
        remove_own_containers()
    end)

    it("needs the API key on the API port; the separate listener serves /metrics only, without a key", function()
        assert.equal(401, H.call(srv, "GET", "/metrics").status)
        local res = H.call(srv, "GET", "/v1/metrics", nil, AUTH)
        assert.equal(200, res.status)
        assert.equal("text/plain; version=0.0.4; charset=utf-8", res.headers["content-type"])
        local direct = H.curl({ url = mbase .. "/metrics" })
        assert.equal(200, direct.status)
        assert.truthy(direct.body:find("# TYPE opensandbox_http_requests_total counter", 1, true))
        assert.equal(404, H.curl({ url = mbase .. "/v1/sandboxes" }).status)
        assert.equal(404, H.curl({ url = mbase .. "/health" }).status)
        -- the API port still serves the API (the listener's handler is only for its own connections)
        assert.equal(200, H.call(srv, "GET", "/health").status)
    end)

    it("a create shows in the counters and gauges; routes are patterns; no sandbox id appears", function()
        local before = scrape()
        local created0 = value_of(before,
            'opensandbox_http_requests_total{method="POST",route="/sandboxes",status="202"}') or 0
        local ok0 = value_of(before, 'opensandbox_provisioning_total{result="success"}') or 0
        local id = create_running(srv)
        assert.equal(200, H.call(srv, "GET", "/v1/sandboxes/" .. id, nil, AUTH).status)
        assert.equal(404, H.call(srv, "GET", "/v1/sandboxes/" .. id .. "-nope", nil, AUTH).status)
        local text = scrape()
        assert.equal(created0 + 1,
            value_of(text, 'opensandbox_http_requests_total{method="POST",route="/sandboxes",status="202"}'))
        local get = 'opensandbox_http_requests_total{method="GET",route="/sandboxes/{id}",status="%d"}'
        assert.truthy(value_of(text, get:format(200)))
        assert.truthy(value_of(text, get:format(404)))
        assert.equal(ok0 + 1, value_of(text, 'opensandbox_provisioning_total{result="success"}'))
        assert.equal(1, value_of(text, 'opensandbox_sandboxes{runtime="docker",state="Running",principal=""}'))
        assert.truthy(value_of(text, 'opensandbox_provisioning_step_duration_seconds_count{step="image"}') >= 1)
        assert.truthy(value_of(text,
            'opensandbox_runtime_requests_total{runtime="docker",method="POST",status_class="2xx"}') >= 1)
        assert.truthy(value_of(text, "opensandbox_process_resident_memory_bytes") > 1e6)
        assert.truthy(value_of(text, "opensandbox_process_open_fds") > 3)
        assert.is_nil(text:find(id, 1, true))
        assert.is_nil(text:find(id:sub(1, 8), 1, true))
        -- every label value of the request counter's route label is a pattern from the route table
        for route in text:gmatch('opensandbox_http_requests_total{method="%u+",route="([^"]*)"') do
            assert.truthy(route == "unmatched" or route:sub(1, 1) == "/", route)
            assert.is_nil(route:find("%x%x%x%x%x%x%x%x%-"), route)
        end
        delete(srv, id)
    end)

    it("a real Prometheus scrapes the listener and a PromQL query sees a create", function()
        prom = prometheus.start(dir, "127.0.0.1:" .. mport)
        -- scraped, and no sandbox running yet
        wait_until("a first scrape", 30, function()
            return promql('up{job="opensandbox"}') == 1
                and promql('sum(opensandbox_sandboxes{job="opensandbox",state="Running"})') == 0
        end)
        local q = 'sum(opensandbox_http_requests_total{job="opensandbox",method="POST",route="/sandboxes",'
            .. 'status="202"})'
        local c0 = promql(q) or 0
        local id = create_running(srv)
        local running = wait_until("Prometheus to see the sandbox running", 30, function()
            local v = promql('sum(opensandbox_sandboxes{job="opensandbox",state="Running"})')
            return v == 1 and v
        end)
        assert.equal(1, running)
        -- the create counter, by value (increase() would ignore the first sample of a new series)
        local seen = wait_until("Prometheus to see the create", 30, function()
            local v = promql(q)
            return v and v > c0 and v
        end)
        assert.equal(c0 + 1, seen)
        delete(srv, id)
    end)
end)
