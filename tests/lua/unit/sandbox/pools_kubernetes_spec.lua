-- Unit spec of warm pools on the Kubernetes runtime (lua/sandbox/pools.lua over runtimes.kubernetes): the
-- service and the real adapter on a fake cluster (support/fake_kube.lua answering as an apiserver that keeps
-- its pods, and as the members' agents at their pod IPs). A pool from a PodTemplateSpec or the Docker-shaped
-- template; members are pods of the template waiting for their claim; a claim is Running at once with the
-- member's id and a fresh token; bad templates and claims above the template's limits are 400s that create
-- nothing; an empty pool creates cold from the whole template; a restart adopts the members and never hands
-- one out twice; DELETE removes the idle members' pods and leaves the claimed sandboxes.
package.path = "tests/lua/unit/runtimes/?.lua;" .. package.path
local S = dofile("tests/lua/unit/sandbox/support.lua")
local json = require("common.json")
local kube = require("runtimes.kubernetes")
local fake_kube = require("support.fake_kube")

local ALICE = { principal = "alice", admin = false }
local NS = "/api/v1/namespaces/sbx"

-- A fake cluster: pods created are kept (Running at once, each with its own IP) and listed back; deleted
-- pods go; each pod's agent answers /ping and takes one /pool/claim with its current token.
local function cluster()
    local k = fake_kube.new()
    local c = { k = k, pods = {}, agents = {}, n = 0, rv = 100 }
    k:on("GET", "^/version$", { json = { gitVersion = "v1.30.2" } })
    k:on("GET", "^" .. NS .. "$", { json = { metadata = { name = "sbx" } } })
    k:on("GET", "/configmaps/", { json = {} })
    -- the Lease: none, and this replica creates it (the only one: it leads)
    k:on("GET", "/leases/", { status = 404, json = fake_kube.status(404, "NotFound", "not found") })
    k:on("POST", "/leases$", { status = 201, json = {} })
    -- the leader's collection of orphans: none
    k:on("GET", "/configmaps%?labelSelector", { json = { metadata = {}, items = {} } })
    k:on("GET", "/secrets%?labelSelector", { json = { metadata = {}, items = {} } })
    local create = { status = 201 }
    create.run = function(req)
        local pod = req.json
        c.n, c.rv = c.n + 1, c.rv + 1
        pod.metadata.uid = "uid-" .. c.n
        pod.metadata.resourceVersion = tostring(c.rv)
        local ip = "10.244.0." .. c.n
        pod.status = { phase = "Running", podIP = ip, containerStatuses = { { name = "sandbox",
            state = { running = { startedAt = "2026-01-01T00:00:05Z" } } } } }
        c.pods[pod.metadata.name] = pod
        local token
        for _, e in ipairs(pod.spec.containers[1].env) do
            if e.name == "EXECD_ACCESS_TOKEN" then
                token = e.value
            end
        end
        c.agents[ip] = { token = token, pod = pod.metadata.name }
        create.json = pod
    end
    k:on("POST", "^" .. NS .. "/pods$", create)
    -- a dry run (a pool's check of its member pod): accepted, or refused with c.refuse = { code, message }
    local dry = {}
    dry.run = function(req)
        c.dry_runs = (c.dry_runs or 0) + 1
        c.last_dry_run = req
        if c.refuse then
            dry.status, dry.json = c.refuse[1], fake_kube.status(c.refuse[1], "Invalid", c.refuse[2])
        else
            dry.status, dry.json = 201, req.json
        end
    end
    k:on("POST", "^" .. NS .. "/pods%?dryRun=All&fieldValidation=Strict$", dry)
    local list = {}
    list.run = function()
        local items = {}
        for _, pod in pairs(c.pods) do
            items[#items + 1] = pod
        end
        table.sort(items, function(a, b)
            return a.metadata.name < b.metadata.name
        end)
        list.json = { kind = "PodList", metadata = { resourceVersion = tostring(c.rv) }, items = items }
    end
    k:on("GET", "/pods%?labelSelector", list)
    local del = {}
    del.run = function(req)
        local name = req.path:match("/pods/([^?]+)")
        if c.pods[name] then
            c.agents[c.pods[name].status.podIP] = nil
            c.pods[name] = nil
            del.status, del.json = 200, {}
        else
            del.status, del.json = 404, fake_kube.status(404, "NotFound", "not found")
        end
    end
    k:on("DELETE", "/pods/", del)
    local function agent(req)
        local a = c.agents[req.url:match("^http://([%d.]+):44772/")]
        if a and a.token == req.headers["X-EXECD-ACCESS-TOKEN"] then
            return a
        end
        return nil
    end
    local ping = { body = "" }
    ping.run = function(req)
        ping.status = agent(req) and 200 or 401
    end
    k:on("GET", "^/ping$", ping)
    local claim = { body = "" }
    claim.run = function(req)
        local a = agent(req)
        if not a then
            claim.status = 401
        elseif a.claim then
            claim.status = 409
        else
            a.claim, a.token, claim.status = req.json, req.json.token, 200
        end
    end
    k:on("POST", "^/pool/claim$", claim)
    return c
end

local function runtime(c)
    return kube.new({ kubernetes = { namespace = "sbx", create_timeout = 60, api_qps = 1000, api_burst = 1000 } }, {
        client = c.k,
        credentials = { server = "https://10.0.0.1:6443", ca = "CA", token = "tok" },
        agent_files = { get = function()
            return { bootstrap = "#!/bin/sh\n", execd = "ELF" }
        end, tag = function()
            return "abc"
        end },
        sleep = c.k.sleep,
        core = { now_s = c.k.now },
    })
end

local function env_on(c, opts)
    opts = opts or {}
    opts.runtime = runtime(c)
    opts.config = { server = {}, kubernetes = {}, pools = opts.pools or {} }
    return S.env(opts)
end

-- upstream's shape: a PodTemplateSpec whose first container is the sandbox
local function pts_body(over)
    local b = {
        name = "py",
        template = json.decode([[{
          "metadata": {"labels": {"team": "ml"}},
          "spec": {
            "nodeSelector": {"disk": "ssd"},
            "containers": [
              {"name": "main", "image": "python:3.12", "workingDir": "/work",
               "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
               "env": [{"name": "TEMPLATE", "value": "t"}]},
              {"name": "side", "image": "busybox"}
            ]
          }
        }]]),
        capacitySpec = { bufferMin = 2, bufferMax = 2, poolMin = 0, poolMax = 5 },
    }
    for k, v in pairs(over or {}) do
        b[k] = v
    end
    return b
end

local function claim(over)
    local spec = { pool = "py", entrypoint = { "python", "app.py" }, env = { { "CLAIM", "c" } }, timeout = 600,
        metadata = { job = "j1" }, extensions = { poolRef = "py" }, volumes = {} }
    for k, v in pairs(over or {}) do
        spec[k] = v
    end
    return spec
end

local function refill(env)
    env.svc:pool_refill()
    env:run()
end

local function ready(env)
    local n = 0
    for _, m in pairs(env.svc.pools.py.members) do
        if m.state == "ready" then
            n = n + 1
        end
    end
    return n
end

local function member_pods(c)
    local out = {}
    for name, pod in pairs(c.pods) do
        if pod.metadata.labels["opensandbox.io/pool"] then
            out[#out + 1] = name
        end
    end
    table.sort(out)
    return out
end

local function count(c, method, pattern)
    return #c.k:find(method, pattern)
end

local function env_of(pod)
    local out = {}
    for _, e in ipairs(pod.spec.containers[1].env) do
        out[e.name] = e.value
    end
    return out
end

describe("sandbox.pools on the kubernetes runtime", function()
    it("fills a pool from a PodTemplateSpec with pods waiting for their claim, made from the template", function()
        local c = cluster()
        local env = env_on(c)
        local view = assert(env:op("create_pool", pts_body(), ALICE))
        assert.equal("py", view.name)
        assert.equal("python:3.12", env.store.pools.py.template.image.uri)
        assert.equal("ssd", env.store.pools.py.template.runtime_template.spec.nodeSelector.disk, "kept durable")
        -- the API server checked a member's pod first, without making it
        assert.equal(1, c.dry_runs)
        assert.equal("py", c.last_dry_run.json.metadata.labels["opensandbox.io/pool"])
        assert.equal("ssd", c.last_dry_run.json.spec.nodeSelector.disk)
        assert.same({}, c.pods)
        refill(env)
        assert.equal(2, ready(env))
        assert.same({ total = 2, allocated = 0, available = 2, revision = "1" },
            env:op("get_pool", "py", ALICE).status)
        local pods = member_pods(c)
        assert.equal(2, #pods)
        local pod = c.pods[pods[1]]
        assert.equal("py", pod.metadata.labels["opensandbox.io/pool"])
        assert.equal("ml", pod.metadata.labels.team)
        assert.equal("ssd", pod.spec.nodeSelector.disk)
        local main = pod.spec.containers[1]
        assert.equal("sandbox", main.name)
        assert.equal("python:3.12", main.image)
        assert.equal("/work", main.workingDir)
        assert.same({}, main.args)
        assert.same({ cpu = "500m", memory = "268435456" }, main.resources.limits)
        local env_vars = env_of(pod)
        assert.equal("1", env_vars.OPENSANDBOX_POOL_MEMBER)
        assert.equal("t", env_vars.TEMPLATE)
        assert.equal("side", pod.spec.containers[2].name)
        -- each member's agent was asked at its pod IP with its boot token
        assert.equal(2, count(c, "GET", "^/ping$"))
    end)

    it("claims a member: Running at once, the member's id, the agent takes the entrypoint and a fresh token",
        function()
        local c = cluster()
        local env = env_on(c)
        assert(env:op("create_pool", pts_body(), ALICE))
        refill(env)
        local pods_before = count(c, "POST", "/pods$")
        local view = assert(env:op("create", claim(), ALICE))
        assert.equal("Running", view.status.state)
        assert.same({ job = "j1" }, view.metadata)
        local pod = c.pods["sandbox-" .. view.id]
        assert.is_table(pod, "the sandbox is a member's pod")
        local a = c.agents[pod.status.podIP]
        assert.same({ "python", "app.py" }, a.claim.entrypoint)
        assert.same({ "CLAIM=c" }, a.claim.env)
        local rec = env.svc.records[view.id]
        assert.equal(rec.access_token, a.token, "the agent took the new token")
        assert.are_not.equal(env_of(pod).EXECD_ACCESS_TOKEN, rec.access_token, "not the boot token")
        assert.equal("py", rec.pool)
        assert.equal(pods_before, count(c, "POST", "/pods$"), "a claim makes no pod")
        -- the pool counts it and refills
        refill(env)
        assert.same({ total = 3, allocated = 1, available = 2, revision = "1" },
            env:op("get_pool", "py", ALICE).status)
        -- claims above the template's limits: 400, and no member taken
        local _, err = env:op("create", claim({ nano_cpus = 1000000000 }), ALICE)
        assert.equal(400, err.status)
        assert.equal("resourceLimits.cpu exceeds the pool's template (500m).", err.message)
        _, err = env:op("create", claim({ memory = 1024 * 1024 * 1024 }), ALICE)
        assert.equal("resourceLimits.memory exceeds the pool's template (256Mi).", err.message)
        assert.equal(2, ready(env))
    end)

    it("answers 400 for bad templates, naming the field, and creates nothing", function()
        local c = cluster()
        local env = env_on(c)
        local function bad(template, msg, name)
            local view, err = env:op("create_pool", pts_body({ template = template, name = name }), ALICE)
            assert.is_nil(view, msg)
            assert.equal(400, err.status, msg)
            assert.equal("SANDBOX::INVALID_PARAMETER", err.code)
            assert.equal(msg, err.message)
        end
        bad({ spec = { containers = {} } },
            "template.spec.containers must be a non-empty array: the first container is the sandbox.")
        bad({ spec = { containers = { { image = "BAD" } } } },
            "template.spec.containers[0].image 'BAD' is not a valid image reference.")
        bad({ spec = { containers = { { image = "x", resources = { limits = { cpu = "lots" } } } } } },
            "template.spec.containers[0].resources.limits.cpu 'lots' is invalid: use millicores such as '500m' or "
                .. "cores such as '0.5' (at most 9 decimals).")
        bad({ spec = { hostNetwork = true, containers = { { image = "x" } } } },
            "template.spec.hostNetwork is not allowed in a pool template.")
        bad({ spec = { containers = { { image = "x", args = { "a" } } } } }, "template.spec.containers[0].args is "
            .. "not part of a pool template: set entrypoint on each create with extensions.poolRef.")
        bad({ image = { uri = "x" }, resourceLimits = {} },
            "name must be at most 63 characters on the kubernetes runtime (it is a label value).", string.rep("p", 64))
        assert.same({}, env.store.pools)
        assert.same({}, env.svc.pools)
        assert.equal(0, count(c, "POST", "/pods$"))
        assert.is_nil(c.dry_runs, "nothing asked of the API server for what the server refuses itself")
        -- what only the API server knows: its refusal, in its words, and still nothing created
        c.refuse = { 422, 'Pod "sandbox-x" is invalid: metadata.labels: Invalid value: "a b": a valid label '
            .. 'must be ...' }
        bad({ metadata = { labels = { team = "a b" } }, spec = { containers = { { image = "x" } } } },
            "template: the Kubernetes API server refuses a member's pod: " .. c.refuse[2])
        c.refuse = { 400, 'strict decoding error: unknown field "spec.nodeSelectr"' }
        bad({ spec = { nodeSelectr = { a = "b" }, containers = { { image = "x" } } } },
            "template: the Kubernetes API server refuses a member's pod: " .. c.refuse[2])
        assert.equal(2, c.dry_runs)
        assert.same({}, env.store.pools)
        assert.same({}, c.pods)
        -- an API server that cannot be reached: 503, nothing created
        c.refuse = nil
        c.k:on("POST", "dryRun=All", { err = { kind = "connect", message = "refused" } })
        local view, err = env:op("create_pool", pts_body(), ALICE)
        assert.is_nil(view)
        assert.equal(503, err.status)
        assert.equal("KUBERNETES::UNAVAILABLE", err.code)
        assert.same({}, env.store.pools)
    end)

    it("takes the Docker-shaped template too", function()
        local c = cluster()
        local env = env_on(c)
        assert(env:op("create_pool", pts_body({ template = { image = { uri = "python:3.12" },
            resourceLimits = { cpu = "250m" }, env = { TEMPLATE = "d" } } }), ALICE))
        assert.is_nil(env.store.pools.py.template.runtime_template)
        refill(env)
        assert.equal(2, ready(env))
        local pod = c.pods[member_pods(c)[1]]
        assert.equal("250m", pod.spec.containers[1].resources.limits.cpu)
        assert.equal("d", env_of(pod).TEMPLATE)
        assert.is_nil(pod.spec.nodeSelector)
        local view = assert(env:op("create", claim(), ALICE))
        assert.equal("Running", view.status.state)
    end)

    it("creates cold from the whole template when the pool is empty", function()
        local c = cluster()
        local env = env_on(c)
        assert(env:op("create_pool", pts_body({ capacitySpec = { bufferMin = 0, bufferMax = 0, poolMin = 0,
            poolMax = 0 } }), ALICE))
        local view = assert(env:op("create", claim(), ALICE))
        assert.equal("Pending", view.status.state)
        env:run()
        assert.equal("Running", env.svc.records[view.id].state)
        local pod = c.pods["sandbox-" .. view.id]
        assert.is_nil(pod.metadata.labels["opensandbox.io/pool"], "not a member")
        assert.equal("ssd", pod.spec.nodeSelector.disk)
        assert.same({ "python", "app.py" }, pod.spec.containers[1].args)
        local e = env_of(pod)
        assert.is_nil(e.OPENSANDBOX_POOL_MEMBER)
        assert.equal("t", e.TEMPLATE)
        assert.equal("c", e.CLAIM)
        assert.equal("500m", pod.spec.containers[1].resources.limits.cpu)
        assert.equal("side", pod.spec.containers[2].name)
    end)

    it("a cold create's provisioning resumed after a crash still gets the pool's pod template", function()
        local c = cluster()
        local env = env_on(c)
        assert(env:op("create_pool", pts_body({ capacitySpec = { bufferMin = 0, bufferMax = 0, poolMin = 0,
            poolMax = 0 } }), ALICE))
        local view = assert(env:op("create", claim(), ALICE)) -- (its provisioning never runs: a crash)
        assert.equal("ssd", env.store.rows[view.id].provision.runtime_template.spec.nodeSelector.disk)
        assert.same({}, c.pods)
        local env2 = env_on(c, { store = env.store, load = true })
        env2:run()
        assert.equal("Running", env2.svc.records[view.id].state)
        local pod = c.pods["sandbox-" .. view.id]
        assert.equal("ssd", pod.spec.nodeSelector.disk)
        assert.equal("side", pod.spec.containers[2].name)
        assert.is_nil(env2.store.rows[view.id].provision, "dropped once provisioned")
    end)

    it("adopts the members after a restart and never hands one out twice", function()
        local c = cluster()
        local env = env_on(c)
        assert(env:op("create_pool", pts_body(), ALICE))
        refill(env)
        local first = assert(env:op("create", claim(), ALICE))
        refill(env)
        local idle = {}
        for _, name in ipairs(member_pods(c)) do
            if name ~= "sandbox-" .. first.id then
                idle[#idle + 1] = name
            end
        end
        assert.equal(2, #idle)
        local made = count(c, "POST", "/pods$")
        env.svc.stopped = true
        -- a new server on the same store and cluster
        local env2 = env_on(c, { store = env.store, load = true })
        env2:run()
        assert.equal("Running", env2.svc.records[first.id].state)
        assert.is_nil(env2.svc.pool_members[first.id], "the claimed one is a sandbox, not a member")
        assert.equal(2, ready(env2), "the idle members were adopted")
        assert.equal(made, count(c, "POST", "/pods$"), "no new pods")
        local ids = { [first.id] = true }
        for _ = 1, 2 do
            local view = assert(env2:op("create", claim(), ALICE))
            assert.equal("Running", view.status.state)
            assert.is_nil(ids[view.id], "never handed out twice")
            ids[view.id] = true
        end
        -- one claim each, each taken by the member's agent with the token it had
        assert.equal(3, count(c, "POST", "^/pool/claim$"))
        for id in pairs(ids) do
            local a = c.agents[c.pods["sandbox-" .. id].status.podIP]
            assert.equal(env2.svc.records[id] and env2.svc.records[id].access_token, a.token)
        end
    end)

    it("DELETE removes the idle members' pods and leaves the claimed sandboxes", function()
        local c = cluster()
        local env = env_on(c)
        assert(env:op("create_pool", pts_body(), ALICE))
        refill(env)
        local view = assert(env:op("create", claim(), ALICE))
        refill(env)
        assert.equal(3, #member_pods(c))
        assert.is_true(env:op("delete_pool", "py", ALICE))
        env:run()
        assert.same({ "sandbox-" .. view.id }, member_pods(c))
        assert.equal("Running", env.svc.records[view.id].state)
        assert.same({}, env.store.pools)
    end)
end)

describe("sandbox.pools on the kubernetes runtime: the watch", function()
    it("keeps a member the watch reports Pending (the pod before it runs); drops one that ended", function()
        local c = cluster()
        local env = env_on(c)
        assert(env:op("create_pool", pts_body(), ALICE))
        refill(env)
        local name = member_pods(c)[1]
        local id = c.pods[name].metadata.labels["opensandbox.io/id"]
        local m = env.svc.pool_members[id]
        m.state = "warming"
        env.svc:on_change({ id = id, handle = name, status = { state = "Pending", reason = "CONTAINER_STARTING" } })
        assert.equal(m, env.svc.pool_members[id])
        env.svc:on_change({ id = id, handle = name, status = { state = "Failed", reason = "CONTAINER_EXITED_ERROR" } })
        assert.is_nil(env.svc.pool_members[id])
    end)

    it("never adopts a member it does not hold as a sandbox from a change (one just dropped)", function()
        local c = cluster()
        local env = env_on(c)
        assert(env:op("create_pool", pts_body(), ALICE))
        refill(env)
        local name = member_pods(c)[1]
        local pod = c.pods[name]
        local id = pod.metadata.labels["opensandbox.io/id"]
        local m = env.svc.pool_members[id]
        env.svc:pool_drop_member(m, false) -- (as a DELETE /pools does, before its removal lands)
        local mapping = require("runtimes.kubernetes.mapping")
        env.svc:on_change({ id = id, handle = name, status = { state = "Running", reason = "CONTAINER_RUNNING" },
            sandbox = mapping.identity_of(pod), place = { ip = pod.status.podIP } })
        assert.is_nil(env.svc.records[id])
        -- a sandbox (no pool) another replica made is adopted from its change, as before
        local other = S.deep_copy(pod)
        other.metadata.labels["opensandbox.io/pool"] = nil
        env.svc:on_change({ id = id, handle = name, status = { state = "Running", reason = "CONTAINER_RUNNING" },
            sandbox = mapping.identity_of(other), place = { ip = pod.status.podIP } })
        assert.is_table(env.svc.records[id])
    end)
end)
