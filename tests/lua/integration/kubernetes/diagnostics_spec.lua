-- Integration: the diagnostics API and renew on access with runtime.type = "kubernetes" against the real
-- one-node cluster of tests/k8s/cluster.sh: the pod log API (stdout and stderr, tailLines bound, truncated
-- honestly), the pod's Events and container state, the lifecycle, an exit, and proxy traffic moving
-- expiresAt (and the Pod's expiry annotation) once per cooldown.
local K = require("kubernetes.helpers")
local timefmt = require("common.timefmt")

local function path(id, rest)
    return "/v1/sandboxes/" .. id .. (rest or "")
end

local function has(text, s)
    return text:find(s, 1, true) ~= nil
end

local function count_lines(text)
    local n = 0
    for _ in text:gmatch("[^\n]*\n") do
        n = n + 1
    end
    return n
end

-- a server with its own instance label (servers of this file do not share each other's pods) and more
-- configuration sections
local function start(instance, sections)
    local cfg = K.config({ instance = instance })
    for k, v in pairs(sections or {}) do
        cfg[k] = v
    end
    return K.start_with(cfg)
end

local function diag(srv, id, kind, scope)
    local res = K.call(srv, "GET", path(id, "/diagnostics/" .. kind .. "?scope=" .. scope))
    assert.are.equal(200, res.status, res.body)
    assert.are.equal(id, res.json.sandboxId)
    assert.are.equal("inline", res.json.delivery)
    assert.are.equal(#res.json.content, res.json.contentLength)
    return res.json
end

local function diag_until(srv, id, kind, scope, pred, timeout)
    local d
    for _ = 1, (timeout or 30) * 4 do
        d = diag(srv, id, kind, scope)
        if pred(d) then
            return d
        end
        K.sleep(0.25)
    end
    error("diagnostics never matched; last content:\n" .. tostring(d and d.content))
end

describe("kubernetes diagnostics #integration #kubernetes", function()
    setup(function()
        K.cluster()
        K.namespace()
    end)
    teardown(function()
        K.stop_all()
        K.cleanup()
    end)

    it("reads the pod's log (stdout and stderr), bounded by max_log_lines, truncated only when cut", function()
        local srv = start("diag-logs", { diagnostics = { max_log_lines = 3 } })
        local id = K.create(srv, { entrypoint = { "sh", "-c",
            "echo k8s-out-1; echo k8s-err-1 >&2; echo k8s-out-2; exec sleep 600" } })
        K.wait_state(srv, id, "Running", 90)
        local d = diag_until(srv, id, "logs", "container", function(x)
            return has(x.content, "k8s-out-2")
        end)
        assert.is_true(has(d.content, "k8s-err-1"), d.content)
        assert.matches("%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z k8s%-out%-2\n", d.content)
        local many = K.create(srv, { entrypoint = { "sh", "-c",
            "for i in 1 2 3 4 5 6; do echo many-$i; done; exec sleep 600" } })
        K.wait_state(srv, many, "Running", 90)
        d = diag_until(srv, many, "logs", "all", function(x)
            return has(x.content, "many-6")
        end)
        assert.is_true(d.truncated)
        assert.are.equal(3, count_lines(d.content))
        assert.is_false(has(d.content, "many-1\n"))
        -- the first sandbox's output fits: not truncated (unless the agent wrote more lines than the bound)
        local wide = start("diag-wide", { diagnostics = { max_log_lines = 1000 } })
        local w = K.create(wide, { entrypoint = { "sh", "-c", "echo only-line; exec sleep 600" } })
        K.wait_state(wide, w, "Running", 90)
        d = diag_until(wide, w, "logs", "container", function(x)
            return has(x.content, "only-line")
        end)
        assert.is_false(d.truncated)
    end)

    it("lists the lifecycle, the pod's Events and an exit's code", function()
        local srv = start("diag-events")
        local id = K.create(srv)
        K.wait_state(srv, id, "Running", 90)
        local life = diag(srv, id, "events", "lifecycle")
        assert.matches("^%S+ lifecycle Pending CONTAINER_STARTING: [^\n]*\n%S+ lifecycle Running CONTAINER_RUNNING:",
            life.content)
        local rt = diag_until(srv, id, "events", "runtime", function(x)
            return has(x.content, "kubernetes Normal Started")
        end)
        assert.is_true(has(rt.content, "kubernetes Normal Scheduled"), rt.content)
        assert.is_true(has(rt.content, "kubernetes state: container running"), rt.content)
        local all = diag(srv, id, "events", "all")
        assert.is_true(count_lines(all.content) >= count_lines(life.content) + 3)
        -- an exit
        local ex = K.create(srv, { entrypoint = { "sh", "-c", "sleep 2; exit 3" } })
        K.wait_state(srv, ex, "Failed", 90)
        local d = diag_until(srv, ex, "events", "all", function(x)
            return has(x.content, "kubernetes state: container terminated with exit code 3")
        end)
        assert.is_true(has(d.content, "lifecycle Failed CONTAINER_EXITED_ERROR: Sandbox container exited with code 3."),
            d.content)
    end)

    it("renews on proxy traffic, in the store and the Pod's annotation, once per cooldown", function()
        local srv = start("diag-renew", { renew_intent = { min_interval_seconds = 4 } })
        local id = K.create(srv, { timeout = 60, extensions = { ["access.renew.extend.seconds"] = "300" } })
        local before = K.wait_state(srv, id, "Running", 90).expiresAt
        local ep = K.call(srv, "GET", path(id, "/endpoints/44772?use_server_proxy=true")).json
        local token = ep.headers["X-EXECD-ACCESS-TOKEN"]
        local function ping()
            local res = K.call(srv, "GET", path(id, "/proxy/44772/ping"), nil, { ["X-EXECD-ACCESS-TOKEN"] = token })
            assert.are.equal(200, res.status, res.body)
        end
        local function expires()
            return K.call(srv, "GET", path(id)).json.expiresAt
        end
        local t0 = K.now()
        ping()
        local first = before
        for _ = 1, 50 do
            first = expires()
            if first ~= before then
                break
            end
            K.sleep(0.1)
        end
        assert.are_not.equal(before, first)
        local at = timefmt.parse(first) / 1e6
        assert.is_true(at >= t0 + 299 and at <= K.now() + 301, first)
        -- the Pod's annotation holds it too (another replica, or a restart without the store, sees it)
        local pod = assert(K.pod(id))
        assert.are.equal(timefmt.parse(first), timefmt.parse(pod.metadata.annotations["opensandbox.io/expires-at"]))
        ping()
        ping()
        K.sleep(0.5)
        assert.are.equal(first, expires())
    end)
end)
