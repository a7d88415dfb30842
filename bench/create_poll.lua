-- create -> Running as a lean 2 ms polling client sees it, against the runtime's own create and start by the
-- same client, interleaved (run by bench/create_poll.sh and bench/kubernetes.sh through the tests'
-- core_scenario binary, on our own engine: libcurl with kept-alive connections, one small request per poll).
--   RAW=docker (default): raw Docker create + start of the same container configuration, minus our agent.
--   RAW=kubernetes: a raw Pod of the same image (POST, then GET every poll until its container runs), on the
--   cluster of $KUBECONFIG in $NAMESPACE.
-- BURST=n (optional): then n creates at once through the server, and n raw ones at once, each polled every
-- 250 ms: wall time until all run, and errors.
--
-- Why a second client beside bench/lifecycle.mjs: on 2 vCPUs a client that polls every 2 ms takes CPU
-- that dockerd needs while it starts the container, so the client's own cost shows up in the figure. Node's
-- HTTP client spends several times what this one does per poll; this one shows what is left of the
-- server's own overhead. Both are reported (the README's lifecycle section).
--
-- Env: BENCH_URL (server, required), BENCH_KEY (API key), SAMPLES (default 30), SANDBOX_IMAGE,
--      POLL_MS (default 2), SERVER_LOG (optional: also the time to the server's "sandbox running" line),
--      RAW, KUBECONFIG, NAMESPACE, BURST.
local core = require("core")
local client = require("core.client")
local timer = require("core.timer")
local spawn = require("core.spawn")
local json = require("common.json")

local base = assert(os.getenv("BENCH_URL"), "BENCH_URL is required")
local key = os.getenv("BENCH_KEY") or ""
local samples = tonumber(os.getenv("SAMPLES") or "30")
local image = os.getenv("SANDBOX_IMAGE") or "local/busybox:latest"
local poll_s = tonumber(os.getenv("POLL_MS") or "2") / 1000
local H = { ["OPEN-SANDBOX-API-KEY"] = key, ["Content-Type"] = "application/json" }
local DOCKER = "/var/run/docker.sock"

local function docker(method, path, body)
    local res, err = client.request({ method = method, url = "http://docker/v1.41" .. path,
        unix_socket = DOCKER, body = body and json.encode(body) or nil,
        headers = body and { ["Content-Type"] = "application/json" } or nil, timeout = 60 })
    return assert(res, tostring(err))
end

local created, raw_ids = {}, {}
local cleanup -- defined below, used by the burst and at the end

-- ours: POST, then GET every poll_s until Running; milliseconds from the POST
local function ours(every)
    every = every or poll_s
    local t0 = core.monotonic()
    local res = assert(client.request({ method = "POST", url = base .. "/v1/sandboxes", headers = H, timeout = 60,
        body = json.encode({ image = { uri = image }, entrypoint = { "sleep", "3600" }, timeout = 3600,
            resourceLimits = {} }) }))
    assert(res.status == 202, res.body)
    local id = json.decode(res.body).id
    created[#created + 1] = id
    while true do
        local g = assert(client.request({ url = base .. "/v1/sandboxes/" .. id, headers = H, timeout = 10 }))
        local state = g.body:match('"state":"(%a+)"')
        if state == "Running" then
            return (core.monotonic() - t0) * 1000, id, core.now()
        end
        assert(state ~= "Failed", g.body)
        timer.sleep(every)
    end
end

-- raw Docker: the container the server makes, minus our agent (bench/lifecycle.mjs makes the same)
local function raw_docker(i)
    local t0 = core.monotonic()
    local c = docker("POST", "/containers/create?name=bench-poll-" .. core.getpid() .. "-" .. i, {
        Image = image, Cmd = json.array({ "sleep", "3600" }), Labels = { ["opensandbox.bench"] = "1" },
        ExposedPorts = { ["44772/tcp"] = {}, ["8080/tcp"] = {} },
        HostConfig = {
            NetworkMode = "bridge",
            PortBindings = { ["44772/tcp"] = json.array({ { HostIp = "127.0.0.1", HostPort = "" } }),
                ["8080/tcp"] = json.array({ { HostIp = "127.0.0.1", HostPort = "" } }) },
            CapDrop = json.array({ "AUDIT_WRITE", "MKNOD", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_MODULE",
                "SYS_PTRACE", "SYS_TIME", "SYS_TTY_CONFIG" }),
            SecurityOpt = json.array({ "no-new-privileges:true" }), PidsLimit = 4096,
            RestartPolicy = { Name = "no" },
        },
    })
    assert(c.status == 201, c.body)
    local id = json.decode(c.body).Id
    raw_ids[#raw_ids + 1] = id
    local s = docker("POST", "/containers/" .. id .. "/start")
    assert(s.status == 204, s.body)
    return (core.monotonic() - t0) * 1000
end

-- raw Kubernetes: a Pod of the same image, as plain as the cluster allows, polled until its container runs
local kube
local function kube_request(method, path, body)
    if not kube then
        local kc = assert(require("runtimes.kubernetes.kubeconfig").load(assert(os.getenv("KUBECONFIG"))))
        kube = { server = kc.server, tls = { ca = kc.ca, cert = kc.cert, key = kc.key }, token = kc.token,
            ns = assert(os.getenv("NAMESPACE"), "NAMESPACE is required with RAW=kubernetes") }
    end
    local headers = { ["Content-Type"] = "application/json" }
    if kube.token then
        headers.Authorization = "Bearer " .. kube.token
    end
    local res, err = client.request({ method = method, url = kube.server .. path:gsub("{ns}", kube.ns),
        tls = kube.tls, headers = headers, body = body and json.encode(body) or nil, timeout = 60 })
    return assert(res, tostring(err))
end

local raw_pods = {}
local function raw_kubernetes(i, every)
    every = every or poll_s
    local name = string.format("bench-raw-%d-%d", core.getpid(), i)
    local t0 = core.monotonic()
    local res = kube_request("POST", "/api/v1/namespaces/{ns}/pods", {
        apiVersion = "v1", kind = "Pod",
        metadata = { name = name, labels = { ["opensandbox.bench"] = "1" } },
        spec = { restartPolicy = "Never", automountServiceAccountToken = false, enableServiceLinks = false,
            containers = json.array({ { name = "sandbox", image = image, imagePullPolicy = "Never",
                command = json.array({ "sleep", "3600" }) } }) },
    })
    assert(res.status == 201, res.body)
    raw_pods[#raw_pods + 1] = name
    while true do
        local g = kube_request("GET", "/api/v1/namespaces/{ns}/pods/" .. name)
        if g.body:find('"running":{', 1, true) then
            return (core.monotonic() - t0) * 1000
        end
        timer.sleep(every)
    end
end

local RAW = os.getenv("RAW") or "docker"
local raw = RAW == "kubernetes" and raw_kubernetes or raw_docker

-- removes what the run created so far (sandboxes through the server, raw containers and pods)
cleanup = function()
    for _, id in ipairs(created) do
        client.request({ method = "DELETE", url = base .. "/v1/sandboxes/" .. id, headers = H, timeout = 60 })
    end
    for _, id in ipairs(raw_ids) do
        docker("DELETE", "/containers/" .. id .. "?force=true")
    end
    for _, name in ipairs(raw_pods) do
        kube_request("DELETE", "/api/v1/namespaces/{ns}/pods/" .. name .. "?gracePeriodSeconds=0")
    end
    created, raw_ids, raw_pods = {}, {}, {}
end

local function median(t)
    local s = {}
    for i, v in ipairs(t) do
        s[i] = v
    end
    table.sort(s)
    return s[#s // 2 + 1]
end

-- the server's "sandbox running" log time of each sandbox (epoch seconds)
local function log_times()
    local at = {}
    local path = os.getenv("SERVER_LOG")
    local f = path and io.open(path, "r")
    if not f then
        return at
    end
    for line in f:lines() do
        if line:find('"sandbox running"', 1, true) then
            local ts, id = line:match('"ts":"([^"]+)"'), line:match('"sandbox_id":"([^"]+)"')
            local us = ts and require("common.timefmt").parse(ts)
            if us and id then
                at[id] = us / 1e6
            end
        end
    end
    f:close()
    return at
end

local ok, err = pcall(function()
    local o, r, seen_after_log, posts = {}, {}, {}, {}
    for i = 1, samples do
        local ms, id, seen_at = ours()
        o[#o + 1] = ms
        posts[id] = seen_at
        r[#r + 1] = raw(i)
    end
    local at = log_times()
    for id, seen_at in pairs(posts) do
        if at[id] then
            seen_after_log[#seen_after_log + 1] = (seen_at - at[id]) * 1000
        end
    end
    print(string.format("| create -> Running, median of %d (ours, seen by a libcurl client polling every %g ms) "
        .. "| %.1f ms |", samples, poll_s * 1000, median(o)))
    print(string.format("| %s, median of %d (raw, same client) | %.1f ms |", RAW == "kubernetes" and
        "Pod create -> container running" or "docker create + start", samples, median(r)))
    print(string.format("| ratio ours / raw | %.2f |", median(o) / median(r)))
    if #seen_after_log > 0 then
        print(string.format("| the client saw Running after the server logged it (median) | %.1f ms |",
            median(seen_after_log)))
    end
    local burst = tonumber(os.getenv("BURST") or "0")
    if burst > 0 then
        cleanup() -- the samples' sandboxes and pods first: the node has room for a limited number of pods
        timer.sleep(RAW == "kubernetes" and 10 or 1) -- (pods being deleted still count for a few seconds)
        -- n at once, each polled every 250 ms; wall time until the last one runs, and failures
        local function all_at_once(fn)
            local done, errs, t0 = 0, 0, core.monotonic()
            for i = 1, burst do
                spawn(function()
                    local ok = pcall(fn, i)
                    done, errs = done + 1, errs + (ok and 0 or 1)
                end)
            end
            while done < burst and core.monotonic() - t0 < 600 do
                timer.sleep(0.05)
            end
            return core.monotonic() - t0, errs + (burst - done)
        end
        local t, e = all_at_once(function()
            ours(0.25)
        end)
        print(string.format("| %d creates at once through the server: all Running | %.2f s, %d errors |", burst, t, e))
        t, e = all_at_once(function(i)
            raw(1000 + i, 0.25)
        end)
        print(string.format("| %d raw creates at once (%s): all running | %.2f s, %d errors |", burst, RAW, t, e))
    end
end)
cleanup()
if not ok then
    io.stderr:write("create_poll: ", tostring(err), "\n")
end
core.stop(ok and 0 or 1)
