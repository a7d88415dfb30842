-- Integration: warm pools on runtime.type = "kubernetes" against the real one-node cluster of
-- tests/k8s/cluster.sh, through the real server binary (lua/sandbox/pools.lua, runtimes.kubernetes,
-- execd/src/pool.c). A pool from upstream's PodTemplateSpec fills with member pods waiting for their claim; a
-- claim is Running in its 202 with the member's id, its entrypoint is the pod's main process (its exit status
-- gives Terminated / Failed) and the agent answers with the claim's token, not the boot token; bad templates
-- and claims are 400s that create nothing; a restarted server adopts the idle members and never hands one
-- out twice; DELETE /pools removes the idle member pods and leaves the claimed sandboxes; an empty pool
-- creates cold from the whole template. Everything runs in a namespace of this run (labelled, removed).
--
--   OPENSANDBOX_SOURCE=$PWD flock -o /tmp/osb-docker.lock lua5.4 /usr/bin/busted \
--       --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' tests/lua/integration/kubernetes/pools_spec.lua
local K = require("kubernetes.helpers")
local json = K.json

-- upstream's template shape: a PodTemplateSpec whose first container is the sandbox
local function pool_body(over)
    local b = {
        name = "kp",
        template = {
            metadata = { labels = { ["osb-pool-test"] = "yes" }, annotations = { note = "from-the-template" } },
            spec = {
                terminationGracePeriodSeconds = 2,
                containers = { {
                    name = "main",
                    image = K.IMAGE,
                    workingDir = "/tmp",
                    resources = { limits = { cpu = "250m", memory = "64Mi" } },
                    env = { { name = "TEMPLATE", value = "t" } },
                } },
            },
        },
        capacitySpec = { bufferMin = 2, bufferMax = 2, poolMin = 0, poolMax = 6 },
    }
    for k, v in pairs(over or {}) do
        b[k] = v
    end
    return b
end

local function claim_body(over)
    local b = { extensions = { poolRef = "kp" }, timeout = 600, entrypoint = { "sleep", "600" } }
    for k, v in pairs(over or {}) do
        b[k] = v
    end
    return b
end

local wait_pool, available = K.wait_pool, K.pool_available

-- the pods labelled with the pool, as JSON objects
local function pool_pods(pool)
    local out, ok = K.kubectl("-n " .. K.namespace() .. " get pods -l opensandbox.io/pool=" .. pool .. " -o json")
    assert(ok, out)
    local items = {}
    for _, p in ipairs(json.decode(out).items) do
        if not p.metadata.deletionTimestamp then
            items[#items + 1] = p
        end
    end
    return items
end

-- the ids of the pool's members (its pods whose id is no sandbox of the server), sorted
local function member_ids(srv, pool)
    local ids = {}
    for _, p in ipairs(pool_pods(pool)) do
        local id = p.metadata.labels["opensandbox.io/id"]
        if K.call(srv, "GET", "/v1/sandboxes/" .. id).status == 404 then
            ids[#ids + 1] = id
        end
    end
    table.sort(ids)
    return ids
end

-- waits until the pool has exactly `n` member pods (idle ones being removed); returns their ids
local function wait_members(srv, pool, n, timeout)
    local deadline = os.time() + (timeout or 60)
    local ids
    repeat
        ids = member_ids(srv, pool)
        if #ids == n then
            return ids
        end
        K.sleep(0.3)
    until os.time() > deadline
    error(string.format("pool %s has %d member pods, not %d", pool, #ids, n))
end

local function env_of(pod)
    local env = {}
    for _, e in ipairs(pod.spec.containers[1].env) do
        env[e.name] = e.value
    end
    return env
end

-- runs `command` through the sandbox's agent (at the pod IP) with the endpoint's token; returns the
-- streamed stdout and the endpoint
local function agent_run(srv, id, command)
    local ep = K.call(srv, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772").json
    local res = K.curl({ method = "POST", url = "http://" .. ep.endpoint .. "/command", timeout = 30,
        headers = { ["X-EXECD-ACCESS-TOKEN"] = ep.headers["X-EXECD-ACCESS-TOKEN"],
            ["Content-Type"] = "application/json" }, body = json.encode({ command = command }) })
    assert(res and res.status == 200, "agent command failed: " .. tostring(res and res.status))
    local out = {}
    for line in res.body:gmatch("[^\n]+") do
        local ev = json.decode(line)
        if type(ev) == "table" and ev.type == "stdout" then
            out[#out + 1] = tostring(ev.text)
        end
    end
    return table.concat(out, "\n"), ep
end

describe("warm pools on kubernetes #integration #kubernetes", function()
    setup(function()
        K.cluster()
        K.namespace()
    end)
    after_each(function()
        K.stop_all()
    end)
    teardown(function()
        K.stop_all()
        K.cleanup()
    end)

    it("answers 400 for bad templates and claims, and creates nothing", function()
        local srv = K.start()
        local function bad(template, msg)
            K.assert_error(K.call(srv, "POST", "/v1/pools", pool_body({ template = template })), 400,
                "SANDBOX::INVALID_PARAMETER", msg)
        end
        bad({ spec = { containers = {} } },
            "template.spec.containers must be a non-empty array: the first container is the sandbox.")
        bad({ spec = { hostNetwork = true, containers = { { name = "main", image = K.IMAGE } } } },
            "template.spec.hostNetwork is not allowed in a pool template.")
        bad({ spec = { containers = { { name = "main", image = K.IMAGE, command = { "sh" } } } } },
            "template.spec.containers[0].command is not part of a pool template: set entrypoint on each create "
                .. "with extensions.poolRef.")
        bad({ spec = { containers = { { name = "main", image = K.IMAGE,
            resources = { limits = { cpu = "lots" } } } } } },
            "template.spec.containers[0].resources.limits.cpu 'lots' is invalid: use millicores such as '500m' or "
                .. "cores such as '0.5' (at most 9 decimals).")
        -- what only the API server knows, from its dry run of a member's pod
        local function refused(template, what)
            K.assert_error(K.call(srv, "POST", "/v1/pools", pool_body({ template = template })), 400,
                "SANDBOX::INVALID_PARAMETER", function(m)
                    return m:find("template: the Kubernetes API server refuses a member's pod: ", 1, true) == 1
                        and m:find(what, 1, true) ~= nil
                end)
        end
        refused({ metadata = { labels = { team = "not a label" } }, spec = { containers = { { name = "main",
            image = K.IMAGE } } } }, "metadata.labels")
        refused({ spec = { nodeSelectr = { a = "b" }, containers = { { name = "main", image = K.IMAGE } } } },
            "nodeSelectr")
        K.assert_error(K.create_raw(srv, claim_body()), 400, "SANDBOX::INVALID_PARAMETER",
            "extensions.poolRef: pool 'kp' does not exist.")
        assert.are.same({ items = {} }, K.call(srv, "GET", "/v1/pools").json)
        assert.are.same({}, pool_pods("kp"))
        -- a good pool; claims above its limits are refused and take no member
        local res = K.call(srv, "POST", "/v1/pools", pool_body())
        assert.are.equal(201, res.status, res.body)
        wait_pool(srv, "kp", available(2))
        K.assert_error(K.create_raw(srv, claim_body({ resourceLimits = { cpu = "1" } })), 400,
            "SANDBOX::INVALID_PARAMETER", "resourceLimits.cpu exceeds the pool's template (250m).")
        K.assert_error(K.create_raw(srv, claim_body({ resourceLimits = { memory = "1Gi" } })), 400,
            "SANDBOX::INVALID_PARAMETER", "resourceLimits.memory exceeds the pool's template (64Mi).")
        assert.are.equal(0, K.call(srv, "GET", "/v1/sandboxes").json.pagination.totalItems)
        assert.are.equal(2, #member_ids(srv, "kp"))
        assert.are.equal(204, K.call(srv, "DELETE", "/v1/pools/kp").status)
        wait_members(srv, "kp", 0)
    end)

    it("claims a member pod: Running at once, the entrypoint is its main process, a fresh token", function()
        local srv = K.start()
        local res = K.call(srv, "POST", "/v1/pools", pool_body())
        assert.are.equal(201, res.status, res.body)
        wait_pool(srv, "kp", available(2))
        local pods = pool_pods("kp")
        assert.are.equal(2, #pods)
        local member = pods[1]
        assert.are.equal("yes", member.metadata.labels["osb-pool-test"])
        assert.are.equal("from-the-template", member.metadata.annotations.note)
        assert.are.equal(2, member.spec.terminationGracePeriodSeconds)
        local c = member.spec.containers[1]
        assert.are.equal("sandbox", c.name)
        assert.are.equal(K.IMAGE, c.image)
        assert.are.equal("/tmp", c.workingDir)
        assert.are.equal("250m", c.resources.limits.cpu)
        assert.is_nil(c.args and c.args[1], "a member has no entrypoint")
        local menv = env_of(member)
        assert.are.equal("1", menv.OPENSANDBOX_POOL_MEMBER)
        assert.are.equal("t", menv.TEMPLATE)
        local boot = {}
        for _, p in ipairs(pods) do
            boot[p.metadata.labels["opensandbox.io/id"]] = env_of(p).EXECD_ACCESS_TOKEN
        end

        res = K.create_raw(srv, claim_body({ metadata = { job = "j1" }, env = { CLAIM = "c" },
            entrypoint = { "sh", "-c", "echo $CLAIM $TEMPLATE $(pwd) > /tmp/out; exec sleep 600" } }))
        assert.are.equal(202, res.status, res.body)
        assert.are.equal("Running", res.json.status.state)
        assert.are.same({ job = "j1" }, res.json.metadata)
        local id = res.json.id
        assert.is_string(boot[id], "the sandbox is a member's pod, with the member's id")
        local got = K.call(srv, "GET", "/v1/sandboxes/" .. id).json
        assert.are.equal("Running", got.status.state)
        assert.are.equal(K.IMAGE, got.image.uri)
        -- the entrypoint is the pod's main process, with the claim's env after the template's, in the
        -- template's workingDir, without the agent's token
        local out, ep = agent_run(srv, id, "cat /tmp/out; tr '\\0' ' ' < /proc/1/cmdline; echo; "
            .. "echo tokens=$(tr '\\0' '\\n' < /proc/1/environ | grep -c EXECD_ACCESS_TOKEN)")
        assert.matches("c t /tmp", out, 1, true)
        assert.matches("sleep 600", out, 1, true)
        assert.matches("tokens=0", out, 1, true)
        -- the claim's token works, the boot token no longer does
        local token = ep.headers["X-EXECD-ACCESS-TOKEN"]
        assert.are_not.equal(boot[id], token)
        local ping = K.curl({ url = "http://" .. ep.endpoint .. "/ping",
            headers = { ["X-EXECD-ACCESS-TOKEN"] = boot[id] }, timeout = 5 })
        assert.are.equal(401, ping.status)
        ping = K.curl({ url = "http://" .. ep.endpoint .. "/ping", headers = { ["X-EXECD-ACCESS-TOKEN"] = token },
            timeout = 5 })
        assert.are.equal(200, ping.status)
        -- the pool counts it as allocated and refills
        local p = wait_pool(srv, "kp", available(2))
        assert.are.equal(1, p.status.allocated)
        assert.are.equal(3, p.status.total)

        -- exit statuses, as for a cold sandbox
        local failed = K.create(srv, claim_body({ entrypoint = { "sh", "-c", "sleep 1; exit 3" } }))
        wait_pool(srv, "kp", available(2))
        local done = K.create(srv, claim_body({ entrypoint = { "true" } }))
        local f = K.wait_state(srv, failed, "Failed", 60)
        assert.are.equal("CONTAINER_EXITED_ERROR", f.status.reason)
        assert.matches("exited with code 3", f.status.message, 1, true)
        K.wait_state(srv, done, "Terminated", 60)

        -- DELETE of a claimed sandbox deletes its pod like any
        assert.are.equal(204, K.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
        assert.is_true(K.wait_pod_gone(id, 30))
        for _, sid in ipairs({ failed, done }) do
            assert.are.equal(204, K.call(srv, "DELETE", "/v1/sandboxes/" .. sid).status)
        end
        assert.are.equal(204, K.call(srv, "DELETE", "/v1/pools/kp").status)
        wait_members(srv, "kp", 0)
    end)

    it("adopts the idle members after a restart and never hands one out twice; DELETE leaves the claimed",
        function()
        local srv = K.start()
        assert.are.equal(201, K.call(srv, "POST", "/v1/pools", pool_body()).status)
        local claimed = {}
        for _ = 1, 2 do -- (one at a time, each from a full pool: a claim of an empty pool would be cold)
            wait_pool(srv, "kp", available(2))
            local id, res = K.create(srv, claim_body())
            assert.are.equal("Running", res.json.status.state)
            assert.is_nil(claimed[id])
            claimed[id] = true
        end
        wait_pool(srv, "kp", available(2))
        local idle = member_ids(srv, "kp")
        assert.are.equal(2, #idle)
        srv:stop()

        -- a restart on the same store: the claimed are sandboxes, the idle members are adopted (no new pods)
        local srv2 = K.start(nil, { dir = srv.dir })
        for id in pairs(claimed) do
            assert.are.equal("Running", K.wait_state(srv2, id, "Running", 30).status.state)
        end
        local p = wait_pool(srv2, "kp", available(2))
        assert.are.equal(2, p.status.allocated)
        assert.are.same(idle, member_ids(srv2, "kp"))
        for _ = 1, 2 do
            local res = K.create_raw(srv2, claim_body())
            assert.are.equal(202, res.status, res.body)
            assert.are.equal("Running", res.json.status.state)
            assert.is_nil(claimed[res.json.id], "never handed out twice")
            claimed[res.json.id] = true
            -- the adopted member took the claim: its agent answers with the new token
            assert.matches("adopted%-ok", (agent_run(srv2, res.json.id, "echo adopted-ok")))
        end

        -- DELETE /pools: the idle member pods go, the claimed sandboxes stay
        assert.are.equal(204, K.call(srv2, "DELETE", "/v1/pools/kp").status)
        K.assert_error(K.call(srv2, "GET", "/v1/pools/kp"), 404, "POOL::NOT_FOUND", "Pool 'kp' not found.")
        wait_members(srv2, "kp", 0)
        for id in pairs(claimed) do
            assert.are.equal("Running", K.call(srv2, "GET", "/v1/sandboxes/" .. id).json.status.state)
            assert.is_table(K.pod(id), "a claimed sandbox's pod stays")
        end
        -- nothing left behind once the sandboxes are deleted
        for id in pairs(claimed) do
            assert.are.equal(204, K.call(srv2, "DELETE", "/v1/sandboxes/" .. id).status)
        end
        for id in pairs(claimed) do
            assert.is_true(K.wait_pod_gone(id, 30))
        end
        assert.are.same({}, pool_pods("kp"))
    end)

    it("creates cold from the whole template when the pool is empty", function()
        local srv = K.start()
        local empty = pool_body({ capacitySpec = { bufferMin = 0, bufferMax = 0, poolMin = 0, poolMax = 0 } })
        assert.are.equal(201, K.call(srv, "POST", "/v1/pools", empty).status)
        local res = K.create_raw(srv, claim_body({ env = { CLAIM = "c" } }))
        assert.are.equal(202, res.status, res.body)
        assert.are.equal("Pending", res.json.status.state)
        local id = res.json.id
        K.wait_state(srv, id, "Running", 90)
        local pod = assert(K.pod(id))
        assert.is_nil(pod.metadata.labels["opensandbox.io/pool"], "not a member")
        assert.are.equal("yes", pod.metadata.labels["osb-pool-test"])
        assert.are.equal("/tmp", pod.spec.containers[1].workingDir)
        assert.are.same({ "sleep", "600" }, pod.spec.containers[1].args)
        local env = env_of(pod)
        assert.is_nil(env.OPENSANDBOX_POOL_MEMBER)
        assert.are.equal("t", env.TEMPLATE)
        assert.are.equal("c", env.CLAIM)
        assert.are.equal(204, K.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
        assert.is_true(K.wait_pod_gone(id, 30))
        assert.are.equal(204, K.call(srv, "DELETE", "/v1/pools/kp").status)
    end)
end)
