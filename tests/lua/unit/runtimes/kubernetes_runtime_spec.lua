-- Unit specs of the Kubernetes runtime (runtimes.kubernetes, lua/runtimes/kubernetes/init.lua): the runtime
-- contract of lua/runtimes/README.md on the fake Kubernetes API transport (support/fake_kube.lua), with the
-- number of requests each operation makes.
package.path = "tests/lua/unit/runtimes/?.lua;" .. package.path

local kube = require("runtimes.kubernetes")
local runtimes = require("runtimes")
local mapping = require("runtimes.kubernetes.mapping")
local base64 = require("common.base64")
local json = require("common.json")
local fake_kube = require("support.fake_kube")

local ID = "5d41402a-bc4b-4a76-b971-9d911017c592"
local POD = "sandbox-" .. ID
local CREATED_US = 1767225600123456
local NS = "/api/v1/namespaces/sbx"
local SELECTOR = "labelSelector=opensandbox.io%2Fmanaged-by%3Dopensandbox-server"

-- a Lua pattern matching `s` literally
local function lit(s)
    return (s:gsub("%p", "%%%0"))
end

local CREDS = { server = "https://10.0.0.1:6443", ca = "CA", token = "tok" }

-- an agent_files stand-in
local function agent_files(has_execd)
    return {
        get = function()
            return { bootstrap = "#!/bin/sh\n", execd = has_execd ~= false and "ELF" or nil }
        end,
        tag = function()
            return "abc"
        end,
    }
end

local function new_rt(k, kcfg, deps)
    local d = { client = k, credentials = CREDS, agent_files = agent_files(), sleep = k.sleep,
        core = { now_s = k.now } }
    for key, v in pairs(deps or {}) do
        d[key] = v
    end
    local cfg = { kubernetes = { namespace = "sbx", create_timeout = 120, api_qps = 1000, api_burst = 1000 } }
    for key, v in pairs(kcfg or {}) do
        cfg.kubernetes[key] = v
    end
    return kube.new(cfg, d)
end

local function sandbox(over)
    local s = { id = ID, created_us = CREATED_US, expires_us = CREATED_US + 3600000000, metadata = { a = "b" },
        principal = "p1", access_token = "tok123" }
    for key, v in pairs(over or {}) do
        s[key] = v
    end
    return s
end

local function spec(over)
    local s = { image = { uri = "python:3.12" }, entrypoint = { "sleep", "infinity" }, env = { { "K", "V" } } }
    for key, v in pairs(over or {}) do
        s[key] = v
    end
    return s
end

-- a Pod object as the API server returns it: the manifest plus uid, resourceVersion and a status
local function pod_object(rv, status, name)
    local p = json.decode(json.encode(assert(mapping.pod(sandbox({ name = name }), spec(),
        { agent_configmap = "opensandbox-agent-abc", agent_has_execd = true }))))
    p.metadata.uid = "uid-" .. (name or "1")
    p.metadata.resourceVersion = rv
    p.status = status
    return p
end

-- a watch reply with one event
local function one(type_, rv, status)
    return { chunks = fake_kube.chunks({ { type = type_, object = pod_object(rv, status) } }) }
end

local RUNNING = { phase = "Running", podIP = "10.244.0.7", containerStatuses = { { name = "sandbox",
    state = { running = { startedAt = "2026-01-01T00:00:05Z" } } } } }
local PENDING = { phase = "Pending" }
local function waiting(reason, message)
    return { phase = "Pending", containerStatuses = { { name = "sandbox",
        state = { waiting = { reason = reason, message = message } } } } }
end

-- a connected runtime whose agent ConfigMap is already known (created by an earlier provision)
local function connected(k, kcfg, deps)
    local rt = new_rt(k, kcfg, deps)
    k:on("GET", "^/version$", { json = { gitVersion = "v1.30.2" } })
    k:on("GET", "^" .. NS .. "$", { json = { metadata = { name = "sbx" } } })
    k:on("GET", "/configmaps/opensandbox%-agent%-abc$", { json = {} })
    assert(rt:connect())
    assert.is_true(rt.agent_ready["opensandbox-agent-abc"])
    k.requests = {}
    return rt
end

local function paths(k)
    local out = {}
    for _, r in ipairs(k.requests) do
        out[#out + 1] = r.method .. " " .. r.path
    end
    return out
end

describe("kubernetes runtime: connection", function()
    it("is a complete adapter, selected by runtime.type = kubernetes", function()
        local rt = runtimes.new({ runtime = { type = "kubernetes" }, kubernetes = {} }, { client = fake_kube.new() })
        assert.equal("kubernetes", rt.name)
    end)

    it("connects with GET /version, a check of the namespace and of the agent's ConfigMap", function()
        local k = fake_kube.new()
        local rt = new_rt(k)
        k:on("GET", "^/version$", { json = { gitVersion = "v1.30.2" } })
        k:on("GET", "^" .. NS .. "$", { json = { metadata = { name = "sbx" } } })
        k:on("GET", "/configmaps/opensandbox%-agent%-abc$", { json = {} })
        assert.same({}, rt:connect())
        assert.same({ "GET /version", "GET " .. NS, "GET " .. NS .. "/configmaps/opensandbox-agent-abc" }, paths(k))
        assert.equal("v1.30.2", rt.version)
    end)

    it("makes the agent's ConfigMap at connect, so that no create pays for it; names a refusal", function()
        local k = fake_kube.new()
        local rt = new_rt(k)
        k:on("GET", "^/version$", { json = {} })
        k:on("GET", "^" .. NS .. "$", { json = {} })
        k:on("GET", "/configmaps/", { status = 404, json = fake_kube.status(404, "NotFound", "x") })
        k:on("POST", "/configmaps$", { status = 403, json = fake_kube.status(403, "Forbidden",
            'configmaps is forbidden: User "u" cannot create resource "configmaps"') })
        local ok, err = rt:connect()
        assert.is_nil(ok)
        assert.truthy(err.message:find("cannot make sure the agent's ConfigMap exists", 1, true), err.message)
        local code, message = rt:unavailable(err.message)
        assert.equal("KUBERNETES::INITIALIZATION_ERROR", code)
        assert.truthy(message:find('cannot create resource "configmaps"', 1, true), message)
        k:on("POST", "/configmaps$", { status = 201, json = {} })
        assert.same({}, rt:connect())
        assert.is_true(rt.agent_ready["opensandbox-agent-abc"])
        assert.equal("KUBERNETES::UNAVAILABLE", (rt:unavailable("x"))) -- the problem is gone
    end)

    it("names a namespace that does not exist; tolerates one it may not read", function()
        local k = fake_kube.new()
        local rt = new_rt(k)
        k:on("GET", "^/version$", { json = {} })
        k:on("GET", "^" .. NS .. "$", { status = 404, json = fake_kube.status(404, "NotFound", "not found") })
        local ok, err = rt:connect()
        assert.is_nil(ok)
        assert.equal('the namespace "sbx" does not exist (kubernetes.namespace)', err.message)
        local code, message = rt:unavailable(err.message)
        assert.equal("KUBERNETES::INITIALIZATION_ERROR", code)
        assert.equal('The Kubernetes runtime cannot be used: the namespace "sbx" does not exist '
            .. "(kubernetes.namespace)", message)
        k:on("GET", "/configmaps/opensandbox%-agent%-abc$", { json = {} })
        local warned = {}
        rt.log = { warn = function(m)
            warned[#warned + 1] = m
        end }
        k:on("GET", "^" .. NS .. "$", { status = 403, json = fake_kube.status(403, "Forbidden", "no") })
        assert.same({}, rt:connect())
        assert.same({ "cannot check that the Kubernetes namespace exists" }, warned)
    end)

    it("reports an unreachable server as unavailable, with the server in the 503 message", function()
        local k = fake_kube.new()
        local rt = new_rt(k)
        k:on("GET", "^/version$", { err = { kind = "connect", message = "Connection refused" } })
        local ok, err = rt:connect()
        assert.is_nil(ok)
        assert.equal("unavailable", err.kind)
        local code, message = rt:unavailable(err.message)
        assert.equal("KUBERNETES::UNAVAILABLE", code)
        assert.equal("Kubernetes API server is unreachable at https://10.0.0.1:6443: Connection refused", message)
    end)

    it("reads the kubeconfig at connect, names its problem, and picks up a fixed file", function()
        local k = fake_kube.new()
        local content = "current-context: nope\n"
        local rt = new_rt(k, { kubeconfig_path = "/k/config", namespace = false }, { credentials = false,
            read_file = function()
                return content
            end })
        local ok, err = rt:connect()
        assert.is_nil(ok)
        assert.equal('kubeconfig /k/config: context "nope" is not defined', err.message)
        assert.equal('The Kubernetes runtime cannot be used: kubeconfig /k/config: context "nope" is not defined',
            select(2, rt:unavailable("x")))
        content = table.concat({ "current-context: c", "contexts:", "- name: c", "  context: {cluster: k, user: u,",
            "    namespace: team}", "clusters:", "- name: k", "  cluster: {server: 'https://k:6443'}", "users:",
            "- name: u", "  user: {token: t0}" }, "\n")
        k:on("GET", "^/version$", { json = {} })
        k:on("GET", "^/api/v1/namespaces/team$", { json = {} })
        k:on("GET", "/configmaps/", { json = {} })
        assert(rt:connect())
        assert.equal("team", rt.namespace) -- the context's namespace when kubernetes.namespace is nil
        assert.equal("https://k:6443/version", k.requests[1].url)
        assert.equal("Bearer t0", k.requests[1].headers.Authorization)
    end)

    it("uses the in-cluster service account without a kubeconfig", function()
        local k = fake_kube.new()
        local env = { KUBERNETES_SERVICE_HOST = "10.96.0.1", KUBERNETES_SERVICE_PORT = "443" }
        local fs = { ["/var/run/secrets/kubernetes.io/serviceaccount/token"] = "sa",
            ["/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"] = "-----BEGIN CERTIFICATE-----\n" }
        local rt = new_rt(k, { namespace = false }, { credentials = false, getenv = function(n)
            return env[n]
        end, read_file = function(p)
            return fs[p]
        end })
        k:on("GET", "^/version$", { json = {} })
        k:on("GET", "^/api/v1/namespaces/default$", { json = {} })
        k:on("GET", "/configmaps/", { json = {} })
        assert(rt:connect())
        assert.equal("https://10.96.0.1:443/version", k.requests[1].url)
        assert.equal("Bearer sa", k.requests[1].headers.Authorization)
        assert.equal("default", rt.namespace) -- no namespace file, none configured
    end)
end)

describe("kubernetes runtime: provision", function()
    local k, rt
    before_each(function()
        k = fake_kube.new()
        rt = connected(k)
    end)

    local function created(status)
        k:on("POST", "^" .. NS .. "/pods$", { status = 201, json = pod_object("100", status or PENDING) })
    end

    it("makes at most 3 requests: POST the pod, then one watch of it from the create's resourceVersion", function()
        created()
        k:on("GET", "watch=1", { chunks = fake_kube.chunks({
            { type = "ADDED", object = pod_object("100", PENDING) },
            { type = "MODIFIED", object = pod_object("101", RUNNING) },
        }) })
        local placed = assert(rt:provision(sandbox(), spec()))
        assert.equal(POD, placed.handle)
        assert.same({ ip = "10.244.0.7" }, placed.place)
        assert.same({ state = "Running", reason = "CONTAINER_RUNNING", message = "Sandbox container is running.",
            at_us = CREATED_US - 123456 + 5000000 }, placed.status)
        assert.is_number(placed.steps.start_ms)
        assert.is_true(#k.requests <= 3)
        assert.same({ "POST " .. NS .. "/pods",
            "GET " .. NS .. "/pods?fieldSelector=metadata.name%3D" .. POD .. "&watch=1&allowWatchBookmarks=true"
                .. "&resourceVersion=100&timeoutSeconds=120" }, paths(k))
        local body = k.requests[1].json
        assert.equal(POD, body.metadata.name)
        assert.equal("opensandbox-agent-abc", body.spec.volumes[1].configMap.name)
    end)

    it("has the kubelet ask the registry (imagePullPolicy Always) for a caller that must prove access", function()
        local function policy_of(rt_, verify, auth)
            k.requests = {}
            k:on("POST", "/secrets$", { status = 201, json = {} })
            k:on("PATCH", "/secrets/", { json = {} })
            created()
            k:on("GET", "watch=1", one("MODIFIED", "101", RUNNING))
            assert(rt_:provision(sandbox(), spec({ image = { uri = "registry.example.com/private/app:1",
                auth = auth, verify = verify } })))
            for _, r in ipairs(k.requests) do
                if r.method == "POST" and r.path:find("/pods$") then
                    return r.json.spec.containers[1].imagePullPolicy
                end
            end
        end
        assert.equal("IfNotPresent", policy_of(rt, nil, nil))
        assert.equal("Always", policy_of(rt, true, nil))
        assert.equal("Always", policy_of(rt, true, { username = "u", password = "pw" }))
        -- an operator's Never (images preloaded, never pulled) stays Never
        local never = connected(k, { image_pull_policy = "Never" })
        assert.equal("Never", policy_of(never, true, nil))
    end)

    it("creates the agent ConfigMap once per process when it is missing", function()
        rt.agent_ready = {}
        k:on("GET", "/configmaps/opensandbox%-agent%-abc$",
            { status = 404, json = fake_kube.status(404, "NotFound", "x") })
        k:on("POST", "/configmaps$", { status = 201, json = {} })
        created(RUNNING)
        assert(rt:provision(sandbox(), spec()))
        assert(rt:provision(sandbox(), spec()))
        assert.equal(1, #k:find("GET", "/configmaps/"))
        local posts = k:find("POST", "/configmaps$")
        assert.equal(1, #posts)
        assert.equal("opensandbox-agent-abc", posts[1].json.metadata.name)
        assert.equal("ELF", base64.decode(posts[1].json.binaryData.execd))
        assert.equal(0, #k:find("GET", "watch=1")) -- the create's reply already said Running
    end)

    it("an agent ConfigMap another server made meanwhile is fine; a refusal fails at the agent step", function()
        rt.agent_ready = {}
        k:on("GET", "/configmaps/", { status = 404, json = fake_kube.status(404, "NotFound", "x") })
        k:on("POST", "/configmaps$", { status = 409, json = fake_kube.status(409, "AlreadyExists", "exists") })
        created(RUNNING)
        assert(rt:provision(sandbox(), spec()))
        rt.agent_ready = {}
        k:on("POST", "/configmaps$", { status = 403, json = fake_kube.status(403, "Forbidden", "no") })
        local placed, err = rt:provision(sandbox(), spec())
        assert.is_nil(placed)
        assert.equal("agent", err.step)
        assert.equal("Failed to deliver the agent: forbidden: cannot create configmaps in namespace sbx: no",
            err.message)
    end)

    it("waits for a new namespace's default ServiceAccount instead of failing the create", function()
        local refused = fake_kube.status(403, "Forbidden", 'pods "x" is forbidden: error looking up service '
            .. 'account sbx/default: serviceaccount "default" not found')
        k:on("POST", "^" .. NS .. "/pods$", { status = 201, json = pod_object("100", RUNNING) })
        k:on("POST", "^" .. NS .. "/pods$", { status = 403, json = refused, times = 2 })
        local placed = assert(rt:provision(sandbox(), spec()))
        assert.equal(POD, placed.handle)
        assert.equal(3, #k:find("POST", "/pods$"))
        assert.same({ 0.5, 0.5 }, k.slept)
        -- another refusal is not waited for
        k:on("POST", "^" .. NS .. "/pods$", { status = 403, json = fake_kube.status(403, "Forbidden", "no") })
        local none, err = rt:provision(sandbox(), spec())
        assert.is_nil(none)
        assert.equal(4, #k:find("POST", "/pods$"))
        assert.truthy(err.message:find("forbidden", 1, true))
    end)

    it("an image that cannot be pulled fails at the image step and the pod is deleted", function()
        created()
        k:on("GET", "watch=1", { chunks = fake_kube.chunks({ { type = "MODIFIED",
            object = pod_object("101", waiting("ErrImagePull", 'failed to pull "python:3.12": not found')) } }) })
        k:on("DELETE", "/pods/", { json = {} })
        local placed, err = rt:provision(sandbox(), spec())
        assert.is_nil(placed)
        assert.equal("image", err.step)
        assert.equal("Failed to pull image 'python:3.12': ErrImagePull: failed to pull \"python:3.12\": not found",
            err.message)
        assert.same({ "DELETE " .. NS .. "/pods/" .. POD .. "?gracePeriodSeconds=1" }, { paths(k)[3] })
    end)

    it("a container config error fails at the create step", function()
        created()
        k:on("GET", "watch=1", { chunks = fake_kube.chunks({ { type = "MODIFIED",
            object = pod_object("101", waiting("CreateContainerConfigError", 'secret "x" not found')) } }) })
        k:on("DELETE", "/pods/", { json = {} })
        local _, err = rt:provision(sandbox(), spec())
        assert.equal("create", err.step)
        assert.equal("Failed to create container: CreateContainerConfigError: secret \"x\" not found", err.message)
        assert.equal(1, #k:find("DELETE", "/pods/"))
    end)

    it("a container that cannot be run fails at the start step", function()
        created()
        k:on("GET", "watch=1", one("MODIFIED", "101", waiting("RunContainerError", "exec: no such file")))
        k:on("DELETE", "/pods/", { json = {} })
        local _, err = rt:provision(sandbox(), spec())
        assert.equal("start", err.step)
        assert.equal("Failed to start container: RunContainerError: exec: no such file", err.message)
    end)

    it("gives up after kubernetes.create_timeout, saying why the pod is pending, and deletes it", function()
        rt = connected(k, { create_timeout = 30 })
        created()
        local unschedulable = { phase = "Pending", conditions = { { type = "PodScheduled", status = "False",
            reason = "Unschedulable", message = "0/1 nodes are available: 1 Insufficient memory." } } }
        k:on("GET", "watch=1", { run = function()
            k.t = k.t + 31 -- the server ends the watch at timeoutSeconds
        end, chunks = fake_kube.chunks({ { type = "MODIFIED", object = pod_object("101", unschedulable) } }) })
        k:on("DELETE", "/pods/", { json = {} })
        local _, err = rt:provision(sandbox(), spec())
        assert.equal("start", err.step)
        assert.equal("the pod did not start within 30 s: Unschedulable: 0/1 nodes are available: 1 Insufficient "
            .. "memory.", err.message)
        assert.equal(1, #k:find("GET", "watch=1"))
        assert.equal("30", k:find("GET", "watch=1")[1].path:match("timeoutSeconds=(%d+)"))
        assert.equal(1, #k:find("DELETE", "/pods/"))
    end)

    it("watches again from the last resourceVersion when the stream ends early", function()
        created()
        k:on("GET", "watch=1", one("MODIFIED", "101", RUNNING))
        k:on("GET", "watch=1", { times = 1, chunks = fake_kube.chunks({
            { type = "BOOKMARK", object = { metadata = { resourceVersion = "105" } } } }) })
        assert(rt:provision(sandbox(), spec()))
        local w = k:find("GET", "watch=1")
        assert.equal(2, #w)
        assert.equal("105", w[2].path:match("resourceVersion=(%d+)"))
    end)

    it("reads the pod when its resourceVersion is already too old (410), then watches from there", function()
        created()
        k:on("GET", "watch=1", one("MODIFIED", "201", RUNNING))
        k:on("GET", "watch=1", { times = 1, chunks = fake_kube.chunks({
            { type = "ERROR", object = fake_kube.status(410, "Expired", "too old resource version") } }) })
        k:on("GET", lit("/pods/" .. POD) .. "$", { json = pod_object("200", PENDING) })
        assert(rt:provision(sandbox(), spec()))
        assert.same("200", k:find("GET", "watch=1")[2].path:match("resourceVersion=(%d+)"))
    end)

    it("a container that already exited is provisioned, with its exit status", function()
        created()
        local done = { phase = "Succeeded", podIP = "10.244.0.8", containerStatuses = { { name = "sandbox",
            state = { terminated = { exitCode = 0, finishedAt = "2026-01-01T00:00:06Z" } } } } }
        k:on("GET", "watch=1", one("MODIFIED", "101", done))
        local placed = assert(rt:provision(sandbox(), spec()))
        assert.equal("Terminated", placed.status.state)
    end)

    it("a pod deleted while it starts fails at the start step", function()
        created()
        k:on("GET", "watch=1", one("DELETED", "101", PENDING))
        k:on("DELETE", "/pods/", { status = 404, json = fake_kube.status(404, "NotFound", "gone") })
        local _, err = rt:provision(sandbox(), spec())
        assert.equal("start", err.step)
        assert.equal("the pod was deleted before it started", err.message)
    end)

    it("a refused pod create fails at the create step, naming verb and resource; nothing to delete", function()
        k:on("POST", "/pods$", { status = 403, json = fake_kube.status(403, "Forbidden", "quota") })
        local _, err = rt:provision(sandbox(), spec())
        assert.equal("create", err.step)
        assert.equal(403, err.status)
        assert.equal("Failed to create pod: forbidden: cannot create pods in namespace sbx: quota", err.message)
        assert.equal(1, #k.requests)
    end)

    it("a transport failure at create is unavailable", function()
        k:on("POST", "/pods$", { err = { kind = "connect", message = "refused" } })
        local _, err = rt:provision(sandbox(), spec())
        assert.equal("unavailable", err.kind)
        assert.equal("create", err.step)
    end)

    it("gpu = all cannot be asked of Kubernetes: unsupported, before any request", function()
        local _, err = rt:provision(sandbox(), spec({ gpu = -1 }))
        assert.equal("unsupported", err.kind)
        assert.equal("create", err.step)
        assert.equal(0, #k.requests)
    end)

    describe("resumed after a crash (API.md §6.5 step 4)", function()
        local auth_spec = spec({ image = { uri = "registry.example.com/app:1",
            auth = { username = "u", password = "pw" } } })

        it("takes the pod and Secret an interrupted provisioning made (AlreadyExists): no duplicate", function()
            k:on("POST", "/secrets$", { status = 409, json = fake_kube.status(409, "AlreadyExists", "exists") })
            k:on("GET", "/secrets/", { json = { metadata = { name = POD .. "-pull",
                labels = { ["opensandbox.io/id"] = ID } } } })
            k:on("PATCH", "/secrets/", { json = {} })
            k:on("POST", "^" .. NS .. "/pods$", { status = 409, json = fake_kube.status(409, "AlreadyExists",
                "pods \"" .. POD .. "\" already exists") })
            k:on("GET", "/pods/" .. lit(POD) .. "$", { json = pod_object("200", PENDING) })
            k:on("GET", "watch=1", one("MODIFIED", "201", RUNNING))
            local placed = assert(rt:provision(sandbox(), auth_spec))
            assert.equal(POD, placed.handle)
            assert.equal("Running", placed.status.state)
            assert.same({ ip = "10.244.0.7" }, placed.place)
            -- the Secret's credentials written again, then the ownerReference; the watch from the pod read
            local patches = k:find("PATCH", "/secrets/")
            assert.equal(2, #patches)
            assert.is_string(patches[1].json.data[".dockerconfigjson"])
            assert.equal("uid-1", patches[2].json.metadata.ownerReferences[1].uid)
            assert.truthy(k:find("GET", "resourceVersion=200")[1])
            assert.equal(0, #k:find("DELETE", "/"))
        end)

        it("takes a pod that already runs without waiting", function()
            k:on("POST", "^" .. NS .. "/pods$", { status = 409, json = fake_kube.status(409, "AlreadyExists", "x") })
            k:on("GET", "/pods/" .. lit(POD) .. "$", { json = pod_object("300", RUNNING) })
            local placed = assert(rt:provision(sandbox(), spec()))
            assert.equal("Running", placed.status.state)
            assert.equal(0, #k:find("GET", "watch=1"))
        end)

        it("refuses a pod of that name that is not this sandbox's, and deletes nothing", function()
            k:on("POST", "^" .. NS .. "/pods$", { status = 409, json = fake_kube.status(409, "AlreadyExists", "x") })
            local other = pod_object("300", RUNNING)
            other.metadata.labels["opensandbox.io/id"] = "someone-else"
            k:on("GET", "/pods/" .. lit(POD) .. "$", { json = other })
            local placed, err = rt:provision(sandbox(), spec())
            assert.is_nil(placed)
            assert.equal("create", err.step)
            assert.equal("conflict", err.kind)
            assert.equal(0, #k:find("DELETE", "/"))
        end)
    end)

    describe("with image.auth", function()
        local auth_spec = spec({ image = { uri = "registry.example.com/app:1",
            auth = { username = "u", password = "pw" } } })

        it("creates the pull Secret before the pod and makes the pod own it", function()
            k:on("POST", "/secrets$", { status = 201, json = {} })
            created()
            k:on("PATCH", "/secrets/", { json = {} })
            k:on("GET", "watch=1", one("MODIFIED", "101", RUNNING))
            assert(rt:provision(sandbox(), auth_spec))
            assert.same({ "POST " .. NS .. "/secrets", "POST " .. NS .. "/pods", "PATCH " .. NS .. "/secrets/" .. POD
                .. "-pull" }, { paths(k)[1], paths(k)[2], paths(k)[3] })
            local secret = k.requests[1].json
            assert.equal(POD .. "-pull", secret.metadata.name)
            assert.equal("kubernetes.io/dockerconfigjson", secret.type)
            local dcj = json.decode(base64.decode(secret.data[".dockerconfigjson"]))
            assert.equal("pw", dcj.auths["registry.example.com"].password)
            assert.same({ { name = POD .. "-pull" } }, k.requests[2].json.spec.imagePullSecrets)
            local patch = k.requests[3]
            assert.equal("application/merge-patch+json", patch.headers["Content-Type"])
            assert.same({ { apiVersion = "v1", kind = "Pod", name = POD, uid = "uid-1" } },
                patch.json.metadata.ownerReferences)
            assert.equal(4, #k.requests)
        end)

        it("a failed start deletes the pod, which takes its owned Secret with it", function()
            k:on("POST", "/secrets$", { status = 201, json = {} })
            created()
            k:on("PATCH", "/secrets/", { json = {} })
            k:on("GET", "watch=1", { chunks = fake_kube.chunks({ { type = "MODIFIED",
                object = pod_object("101", waiting("ImagePullBackOff", "unauthorized")) } }) })
            k:on("DELETE", "/pods/", { json = {} })
            local _, err = rt:provision(sandbox(), auth_spec)
            assert.equal("image", err.step)
            assert.equal(1, #k:find("DELETE", "/pods/"))
            assert.equal(0, #k:find("DELETE", "/secrets/"))
        end)

        it("a refused pod deletes the Secret, which no pod owns", function()
            k:on("POST", "/secrets$", { status = 201, json = {} })
            k:on("POST", "/pods$", { status = 422, json = fake_kube.status(422, "Invalid", "bad name") })
            k:on("DELETE", "/secrets/", { json = {} })
            local _, err = rt:provision(sandbox(), auth_spec)
            assert.equal("create", err.step)
            assert.same({ "DELETE " .. NS .. "/secrets/" .. POD .. "-pull" }, { paths(k)[3] })
        end)

        it("a failed ownerReference patch deletes both", function()
            k:on("POST", "/secrets$", { status = 201, json = {} })
            created()
            k:on("PATCH", "/secrets/", { status = 403, json = fake_kube.status(403, "Forbidden", "no") })
            k:on("DELETE", "/", { json = {} })
            local _, err = rt:provision(sandbox(), auth_spec)
            assert.equal("create", err.step)
            assert.equal(1, #k:find("DELETE", "/pods/"))
            assert.equal(1, #k:find("DELETE", "/secrets/"))
        end)
    end)
end)

describe("kubernetes runtime: operations", function()
    local k, rt
    before_each(function()
        k = fake_kube.new()
        rt = connected(k)
    end)

    it("has no pause or resume", function()
        for _, m in ipairs({ "pause", "resume" }) do
            local ok, err = rt[m](rt, { id = ID, handle = POD })
            assert.is_nil(ok)
            assert.equal("unsupported", err.kind)
            assert.equal('Kubernetes has no pause: pause and resume are not supported with runtime.type = '
                .. '"kubernetes".', err.message)
        end
        assert.equal(0, #k.requests)
    end)

    it("removes with one DELETE and a short grace period; gone already counts as removed", function()
        k:on("DELETE", "/pods/", { json = {} })
        assert.is_true(rt:remove({ id = ID, handle = POD }))
        assert.same({ "DELETE " .. NS .. "/pods/" .. POD .. "?gracePeriodSeconds=1" }, paths(k))
        k:on("DELETE", "/pods/", { status = 404, json = fake_kube.status(404, "NotFound", "x") })
        assert.is_true(rt:remove({ id = ID, handle = POD }))
        k:on("DELETE", "/pods/", { status = 500, json = fake_kube.status(500, "InternalError", "etcd") })
        local ok, err = rt:remove({ id = ID, handle = POD })
        assert.is_nil(ok)
        assert.equal("etcd", err.message)
    end)

    it("writes a renewed expiry into the pod's annotation with one merge patch", function()
        k:on("PATCH", "/pods/", { json = {} })
        assert.is_true(rt:set_expiry({ id = ID, handle = POD }, CREATED_US + 7200000000))
        assert.same({ "PATCH " .. NS .. "/pods/" .. POD }, paths(k))
        assert.equal("application/merge-patch+json", k.requests[1].headers["Content-Type"])
        assert.same({ metadata = { annotations = {
            ["opensandbox.io/expires-at"] = require("common.timefmt").format(CREATED_US + 7200000000) } } },
            k.requests[1].json)
        k:on("PATCH", "/pods/", { status = 404, json = fake_kube.status(404, "NotFound", "gone") })
        local ok, err = rt:set_expiry({ id = ID, handle = POD }, CREATED_US)
        assert.is_nil(ok)
        assert.equal("not_found", err.kind)
    end)

    it("addresses the pod IP, for the proxy and for clients", function()
        local rec = { id = ID, handle = POD, place = { ip = "10.244.0.7" } }
        assert.same({ host = "10.244.0.7", port = 44772 }, rt:address(rec, 44772, "proxy"))
        assert.same({ host = "10.244.0.7", port = 8080, own_host = true }, rt:address(rec, 8080, "public"))
        local v6 = { place = { ip = "fd00::7" } }
        assert.same({ host = "fd00::7", port = 80 }, rt:address(v6, 80, "proxy"))
        assert.same({ host = "[fd00::7]", port = 80, own_host = true }, rt:address(v6, 80, "public"))
        local none, err = rt:address({ place = {} }, 80, "proxy")
        assert.is_nil(none)
        assert.equal("conflict", err.kind)
    end)
end)

describe("kubernetes runtime: list and watch", function()
    local k, rt
    before_each(function()
        k = fake_kube.new()
        rt = connected(k)
    end)

    local function list_reply(rv, pods, cont)
        return { json = { kind = "PodList", metadata = { resourceVersion = rv, continue = cont }, items = pods } }
    end

    it("lists with one request and decodes the identity, token included", function()
        local other = pod_object("7", PENDING, "other")
        other.metadata.labels["opensandbox.io/id"] = nil
        local dying = pod_object("8", RUNNING, "dying")
        dying.metadata.deletionTimestamp = "2026-01-01T00:10:00Z"
        k:on("GET", "/pods%?labelSelector", list_reply("500", { pod_object("9", RUNNING), other, dying }))
        local entries = assert(rt:list())
        assert.equal(1, #k.requests)
        assert.matches(lit(SELECTOR .. "&limit=100") .. "$", k.requests[1].path)
        assert.equal(3, #entries)
        local e = entries[1]
        assert.equal(ID, e.id)
        assert.equal(POD, e.handle)
        assert.same({ ip = "10.244.0.7" }, e.place)
        assert.equal("Running", e.status.state)
        assert.same({ id = ID, created_us = CREATED_US, expires_us = CREATED_US + 3600000000, image_uri = "python:3.12",
            entrypoint = { "sleep", "infinity" }, metadata = { a = "b" }, principal = "p1", access_token = "tok123" },
            e.sandbox)
        assert.is_nil(entries[2].id)
        assert.is_nil(entries[2].sandbox)
        assert.equal("Stopping", entries[3].status.state)
        assert.is_nil(entries[3].sandbox) -- a pod being deleted is never adopted
        assert.equal("500", rt.resource_version)
    end)

    it("selects this instance's pods only when kubernetes.instance is set, and follows pages", function()
        rt = connected(k, { instance = "blue" })
        k:on("GET", "/pods%?labelSelector", list_reply("600", { pod_object("9", RUNNING) }, "page2"))
        k:on("GET", "continue=page2", list_reply("600", { pod_object("10", RUNNING, "second") }))
        local entries = assert(rt:list())
        assert.equal(2, #entries)
        assert.equal(2, #k.requests)
        assert.matches(lit(SELECTOR .. "%2Copensandbox.io%2Finstance%3Dblue&limit=100") .. "$", k.requests[1].path)
    end)

    it("fails the whole list when the transport fails", function()
        k:on("GET", "/pods%?labelSelector", { err = { kind = "connect", message = "refused" } })
        local entries, err = rt:list()
        assert.is_nil(entries)
        assert.equal("unavailable", err.kind)
    end)

    it("watches from the list's resourceVersion and reports status changes and removals", function()
        k:on("GET", "/pods%?labelSelector=[^&]*&limit", list_reply("500", { pod_object("9", PENDING) }))
        assert(rt:list())
        local exited = { phase = "Failed", containerStatuses = { { name = "sandbox",
            state = { terminated = { exitCode = 2, finishedAt = "2026-01-01T00:00:09Z" } } } } }
        k:on("GET", "watch=1", { chunks = fake_kube.chunks({
            { type = "MODIFIED", object = pod_object("501", RUNNING) },
            { type = "MODIFIED", object = pod_object("502", RUNNING) }, -- nothing new: not reported
            { type = "BOOKMARK", object = { kind = "Pod", metadata = { resourceVersion = "503" } } },
            { type = "MODIFIED", object = pod_object("504", exited) },
            { type = "DELETED", object = pod_object("505", exited) },
        }, 11) })
        local changes = {}
        local ok, err = rt:watch(function(c)
            changes[#changes + 1] = c
        end)
        assert.is_nil(ok)
        assert.equal("unavailable", err.kind)
        assert.matches("&watch=1&allowWatchBookmarks=true&resourceVersion=500&timeoutSeconds=300$",
            k:find("GET", "watch=1")[1].path)
        assert.equal(3, #changes)
        assert.same({ ID, POD, "Running" }, { changes[1].id, changes[1].handle, changes[1].status.state })
        assert.same({ "Failed", "Sandbox container exited with code 2." },
            { changes[2].status.state, changes[2].status.message })
        assert.same({ id = ID, handle = POD, gone = true }, changes[3])
        assert.equal("505", rt.resource_version)
        -- the next watch resumes where this one ended; a bookmark alone moves it too
        k:on("GET", "watch=1", { chunks = fake_kube.chunks({
            { type = "BOOKMARK", object = { metadata = { resourceVersion = "777" } } } }) })
        rt:watch(function() end)
        assert.equal("505", k:find("GET", "watch=1")[2].path:match("resourceVersion=(%d+)"))
        assert.equal("777", rt.resource_version)
    end)

    it("on 410 Gone lists again, reports every difference, and watches on from the new list", function()
        local a = pod_object("9", RUNNING)
        local b = pod_object("9", RUNNING, "b-pod")
        b.metadata.labels["opensandbox.io/id"] = "bbbb"
        k:on("GET", "/pods%?labelSelector=[^&]*&limit", list_reply("500", { a, b }))
        assert(rt:list())
        -- meanwhile: a exited, b was deleted, c appeared
        local exited = { phase = "Succeeded", containerStatuses = { { name = "sandbox",
            state = { terminated = { exitCode = 0 } } } } }
        local c = pod_object("880", RUNNING, "c-pod")
        c.metadata.labels["opensandbox.io/id"] = "cccc"
        k:on("GET", "/pods%?labelSelector=[^&]*&limit", list_reply("900", { pod_object("870", exited), c }))
        k:on("GET", "watch=1", { chunks = fake_kube.chunks({
            { type = "MODIFIED", object = c } }) }) -- c unchanged since the relist: not reported again
        k:on("GET", "watch=1", { times = 1, chunks = fake_kube.chunks({
            { type = "ERROR", object = fake_kube.status(410, "Expired", "too old resource version: 500 (850)") } }) })
        local changes = {}
        local _, err = rt:watch(function(ch)
            changes[#changes + 1] = ch
        end)
        assert.equal("unavailable", err.kind)
        table.sort(changes, function(x, y)
            return x.id < y.id
        end)
        assert.equal(3, #changes)
        assert.same({ ID, "Terminated" }, { changes[1].id, changes[1].status.state })
        assert.same({ id = "bbbb", handle = "b-pod", gone = true }, changes[2])
        assert.same({ "cccc", "Running" }, { changes[3].id, changes[3].status.state })
        local watches = k:find("GET", "watch=1")
        assert.equal(2, #watches)
        assert.equal("500", watches[1].path:match("resourceVersion=(%d+)"))
        assert.equal("900", watches[2].path:match("resourceVersion=(%d+)"))
        assert.equal(2, #k:find("GET", "&limit="))
    end)

    it("lists first when no list gave a resourceVersion yet", function()
        k:on("GET", "/pods%?labelSelector=[^&]*&limit", list_reply("42", {}))
        k:on("GET", "watch=1", { chunks = {} })
        rt:watch(function() end)
        assert.same({ "GET", "42" }, { k.requests[1].method, k.requests[2].path:match("resourceVersion=(%d+)") })
    end)
end)

describe("kubernetes runtime: leadership (a coordination.k8s.io Lease)", function()
    local timefmt = require("common.timefmt")
    local LEASES = "/apis/coordination.k8s.io/v1/namespaces/sbx/leases"
    local k, rt
    before_each(function()
        k = fake_kube.new()
        rt = connected(k)
    end)

    local function lease(holder, renewed_s)
        return { metadata = { name = "opensandbox-server", resourceVersion = "7" },
            spec = { holderIdentity = holder, leaseDurationSeconds = 15, leaseTransitions = 2,
                renewTime = timefmt.format(math.floor(renewed_s * 1e6)) } }
    end

    it("creates the Lease when there is none, and then holds it", function()
        k:on("GET", "/leases/opensandbox%-server$", { status = 404, json = fake_kube.status(404, "NotFound", "x") })
        k:on("POST", "/leases$", { status = 201, json = {} })
        assert.is_true(rt:lead("me"))
        local body = k.requests[2].json
        assert.equal(LEASES, k.requests[2].path)
        assert.equal("me", body.spec.holderIdentity)
        assert.equal(15, body.spec.leaseDurationSeconds)
    end)

    it("renews its own Lease, conditionally on the resourceVersion it read", function()
        k:on("GET", "/leases/opensandbox%-server$", { json = lease("me", k.t - 3) })
        k:on("PUT", "/leases/opensandbox%-server$", { json = {} })
        assert.is_true(rt:lead("me"))
        local put = k.requests[2].json
        assert.equal("7", put.metadata.resourceVersion)
        assert.equal(timefmt.format(math.floor(k.t * 1e6)), put.spec.renewTime)
        assert.equal(2, put.spec.leaseTransitions, "no transition: it was ours")
    end)

    it("leaves a live holder's Lease alone, and takes over one that lapsed", function()
        k:on("GET", "/leases/opensandbox%-server$", { json = lease("other", k.t - 5) })
        assert.is_false(rt:lead("me"))
        assert.equal(1, #k.requests, "no write while another replica holds it")
        k:on("GET", "/leases/opensandbox%-server$", { json = lease("other", k.t - 16) })
        k:on("PUT", "/leases/opensandbox%-server$", { json = {} })
        assert.is_true(rt:lead("me"))
        local put = k.requests[3].json
        assert.equal("me", put.spec.holderIdentity)
        assert.equal(3, put.spec.leaseTransitions)
    end)

    it("loses a race for it (409) without an error, and reports a transport failure", function()
        k:on("GET", "/leases/opensandbox%-server$", { json = lease("other", k.t - 60) })
        k:on("PUT", "/leases/opensandbox%-server$", { status = 409, json = fake_kube.status(409, "Conflict", "x") })
        local ok, err = rt:lead("me")
        assert.is_false(ok)
        assert.is_nil(err)
        k:on("GET", "/leases/opensandbox%-server$", { err = { kind = "connect", message = "refused" } })
        ok, err = rt:lead("me")
        assert.is_nil(ok)
        assert.equal("unavailable", err.kind)
    end)
end)

describe("kubernetes runtime: collecting orphaned ConfigMaps and Secrets", function()
    local k, rt
    before_each(function()
        k = fake_kube.new() -- its clock reads 1000 s after the epoch
        rt = connected(k)
        k:on("GET", "/pods%?labelSelector", { json = { metadata = { resourceVersion = "1" },
            items = { pod_object("9", RUNNING) } } })
        k:on("DELETE", "/configmaps/", { json = {} })
        k:on("DELETE", "/secrets/", { json = {} })
        k:on("PATCH", "/secrets/", { json = {} })
    end)

    local function object(name, labels, created, owners)
        return { metadata = { name = name, labels = labels, creationTimestamp = created, ownerReferences = owners } }
    end
    local OLD, NEW = "1970-01-01T00:00:00Z", "1970-01-01T00:16:00Z" -- 1000 s and 40 s old

    it("runs only on the holder of the Lease, and then at most every GC_INTERVAL seconds", function()
        k:on("GET", "/configmaps%?", { json = { items = {} } })
        k:on("GET", "/secrets%?", { json = { items = {} } })
        assert(rt:list())
        assert.equal(0, #k:find("GET", "/configmaps%?")) -- not leading (not asked yet)
        rt.leading = true
        assert(rt:list())
        assert(rt:list())
        assert.equal(1, #k:find("GET", "/configmaps%?"))
        assert.equal(1, #k:find("GET", "/secrets%?"))
        k.t = k.t + kube.GC_INTERVAL
        assert(rt:list())
        assert.equal(2, #k:find("GET", "/configmaps%?"))
    end)

    it("deletes unused agent ConfigMaps of other versions and unowned pull Secrets without a pod", function()
        rt.leading = true
        local mine = { ["opensandbox.io/managed-by"] = "opensandbox-server" }
        k:on("GET", "/configmaps%?", { json = { items = {
            object("opensandbox-agent-abc", mine, OLD), -- the current one
            object("opensandbox-agent-old", mine, OLD), -- an earlier version, mounted by no pod
            object("opensandbox-agent-used", mine, OLD), -- an earlier version a pod still mounts
        } } })
        local using = pod_object("9", RUNNING, "using")
        using.spec.volumes[1].configMap.name = "opensandbox-agent-used"
        using.metadata.labels["opensandbox.io/id"] = "other-id"
        k:on("GET", "/pods%?labelSelector", { json = { metadata = { resourceVersion = "1" },
            items = { pod_object("9", RUNNING), using } } })
        local function sec(name, id, created, owners)
            return object(name, { ["opensandbox.io/managed-by"] = "opensandbox-server", ["opensandbox.io/id"] = id },
                created, owners)
        end
        k:on("GET", "/secrets%?", { json = { items = {
            sec("crashed-pull", "gone-id", OLD), -- no pod, no owner, old: an orphan
            sec("young-pull", "gone-id-2", NEW), -- no pod yet, but young: a create in flight elsewhere
            sec("owned-pull", "gone-id-3", OLD, { { kind = "Pod", name = "x", uid = "u" } }), -- the GC's job
            sec(POD .. "-pull", ID, OLD), -- its pod exists but never became the owner
        } } })
        assert(rt:list())
        assert.same({ "DELETE " .. NS .. "/configmaps/opensandbox-agent-old",
            "DELETE " .. NS .. "/secrets/crashed-pull" }, (function()
            local out = {}
            for _, p in ipairs(paths(k)) do
                if p:find("^DELETE") then
                    out[#out + 1] = p
                end
            end
            return out
        end)())
        local patches = k:find("PATCH", "/secrets/")
        assert.equal(1, #patches)
        assert.equal(NS .. "/secrets/" .. POD .. "-pull", patches[1].path)
        assert.equal("uid-1", patches[1].json.metadata.ownerReferences[1].uid)
    end)

    it("makes the current agent ConfigMap again when it was deleted behind its back", function()
        rt.leading = true
        k:on("GET", "/configmaps%?", { json = { items = {} } })
        k:on("GET", "/secrets%?", { json = { items = {} } })
        k:on("GET", "/configmaps/opensandbox%-agent%-abc$",
            { status = 404, json = fake_kube.status(404, "NotFound", "x") })
        k:on("POST", "/configmaps$", { status = 201, json = {} })
        assert(rt:list())
        assert.equal(1, #k:find("POST", "/configmaps$"))
        assert.is_true(rt.agent_ready["opensandbox-agent-abc"])
    end)
end)

describe("kubernetes runtime: diagnostics", function()
    local REC = { id = ID, handle = POD, created_us = CREATED_US }

    it("reads the pod's log with tailLines one above max_lines and limitBytes, truncated only when cut", function()
        local k = fake_kube.new()
        local rt = connected(k)
        k:on("GET", "/pods/" .. lit(POD) .. "/log%?", { body = "2026-01-01T00:00:01Z one\n2026-01-01T00:00:02Z two\n" })
        local res = assert(rt:diagnostic_logs(REC, { max_lines = 2, max_bytes = 1024 }))
        assert.are.same({ "2026-01-01T00:00:01Z one", "2026-01-01T00:00:02Z two" }, res.lines)
        assert.is_false(res.truncated)
        assert.are.same({ "GET " .. NS .. "/pods/" .. POD .. "/log?container=sandbox&timestamps=true&tailLines=3"
            .. "&limitBytes=4096" }, paths(k))
        assert.matches("text/plain", k.requests[1].headers.Accept, 1, true)
        k:on("GET", "/pods/" .. lit(POD) .. "/log%?", { body = "a\nb\nc\n" })
        res = assert(rt:diagnostic_logs(REC, { max_lines = 2, max_bytes = 1024 }))
        assert.are.same({ "b", "c" }, res.lines)
        assert.is_true(res.truncated)
        -- a container that has not started: no lines, the apiserver's reason as a warning
        k:on("GET", "/pods/" .. lit(POD) .. "/log%?", { status = 400, json = { kind = "Status",
            message = 'container "sandbox" in pod is waiting to start: ContainerCreating' } })
        res = assert(rt:diagnostic_logs(REC, { max_lines = 2, max_bytes = 1024 }))
        assert.are.same({}, res.lines)
        assert.matches("waiting to start", res.warnings[1], 1, true)
        k:on("GET", "/pods/" .. lit(POD) .. "/log%?", { status = 404,
            json = { kind = "Status", message = "not found" } })
        local _, err = rt:diagnostic_logs(REC, { max_lines = 2, max_bytes = 1024 })
        assert.are.equal("not_found", err.kind)
    end)

    it("lists the pod's Events by time and the container's state", function()
        local k = fake_kube.new()
        local rt = connected(k)
        k:on("GET", "/events%?", { json = { items = {
            { type = "Normal", reason = "Started", message = "Started container sandbox",
              lastTimestamp = "2026-01-01T00:00:03Z" },
            { type = "Normal", reason = "Scheduled", message = "Successfully assigned",
              eventTime = "2026-01-01T00:00:01.000000Z" },
            { type = "Warning", reason = "BackOff", message = "Back-off", lastTimestamp = "2026-01-01T00:00:05Z",
              count = 3 },
        } } })
        k:on("GET", "/pods/" .. lit(POD) .. "$", { json = { status = { containerStatuses = { { name = "sandbox",
            restartCount = 0, state = { terminated = { exitCode = 137, reason = "OOMKilled",
            finishedAt = "2026-01-01T00:00:09Z" } } } } } } })
        local res = assert(rt:diagnostic_events(REC, { max_events = 10 }))
        assert.are.equal("GET " .. NS .. "/events?fieldSelector=involvedObject.kind%3DPod%2CinvolvedObject.name%3D"
            .. POD, paths(k)[1])
        local texts = {}
        for _, e in ipairs(res.events) do
            texts[#texts + 1] = e.text
        end
        assert.are.same({ "kubernetes Normal Scheduled Successfully assigned",
            "kubernetes Normal Started Started container sandbox", "kubernetes Warning BackOff Back-off (x3)",
            "kubernetes state: container terminated with exit code 137 (OOMKilled): out of memory" }, texts)
        assert.is_false(res.truncated)
        assert.is_nil(res.warnings)
        -- the newest max_events; a list without the Scheduled event warns of the apiserver's retention
        res = assert(rt:diagnostic_events(REC, { max_events = 1 }))
        assert.is_true(res.truncated)
        assert.are.equal("kubernetes Warning BackOff Back-off (x3)", res.events[1].text)
        k:on("GET", "/events%?", { json = { items = {} } })
        res = assert(rt:diagnostic_events(REC, { max_events = 1 }))
        assert.matches("event%-ttl", res.warnings[1])
    end)
end)

describe("kubernetes runtime: warm pools", function()
    local k, rt
    before_each(function()
        k = fake_kube.new()
        rt = connected(k)
    end)

    local member = { id = ID, handle = POD, place = { ip = "10.244.0.7" }, access_token = "boot" }

    it("declares pools, and is a complete pools runtime for the service", function()
        assert.is_true(rt.capabilities.pools)
        assert.is_false(rt.capabilities.pause)
        assert.is_function(rt.pool_ping)
        assert.is_function(rt.pool_claim)
        assert.is_function(rt.pool_template)
        assert.is_function(rt.pool_check)
    end)

    it("provisions a member: a pod waiting for its claim, labelled with its pool, listed back with it", function()
        local obj = pod_object("100", RUNNING)
        obj.metadata.labels["opensandbox.io/pool"] = "py"
        k:on("POST", "^" .. NS .. "/pods$", { status = 201, json = obj })
        local placed = assert(rt:provision(sandbox({ pool = "py" }), spec({ pool_member = true })))
        assert.equal(POD, placed.handle)
        assert.equal("Running", placed.status.state)
        assert.equal(1, #k.requests, "a pod that runs at once: no watch")
        local body = k.requests[1].json
        assert.equal("py", body.metadata.labels["opensandbox.io/pool"])
        local c = body.spec.containers[1]
        assert.same({}, c.args)
        local member_env
        for _, e in ipairs(c.env) do
            if e.name == "OPENSANDBOX_POOL_MEMBER" then
                member_env = e.value
            end
        end
        assert.equal("1", member_env)
        k:on("GET", "/pods%?labelSelector", { json = { metadata = { resourceVersion = "5" }, items = { obj } } })
        local entries = assert(rt:list())
        assert.equal("py", entries[1].sandbox.pool)
    end)

    it("pings the member's agent at the pod IP with the boot token, never the apiserver", function()
        k:on("GET", "^/ping$", { status = 200, body = "" })
        assert.is_true(rt:pool_ping(member))
        local r = k.requests[1]
        assert.equal("http://10.244.0.7:44772/ping", r.url)
        assert.equal("boot", r.headers["X-EXECD-ACCESS-TOKEN"])
        assert.is_nil(r.tls)
        k:on("GET", "^/ping$", { status = 401, body = "{}" })
        local ok, err = rt:pool_ping(member)
        assert.is_nil(ok)
        assert.equal("api", err.kind)
        k:on("GET", "^/ping$", { err = { kind = "connect", message = "refused" } })
        ok, err = rt:pool_ping(member)
        assert.is_nil(ok)
        assert.equal("unavailable", err.kind)
        -- a member without an IP yet has no address
        ok, err = rt:pool_ping({ id = ID, handle = POD, place = {}, access_token = "boot" })
        assert.is_nil(ok)
        assert.equal("conflict", err.kind)
        assert.equal(3, #k.requests)
    end)

    it("hands the claim to the agent: entrypoint, env and the new token, with the boot token", function()
        k:on("POST", "^/pool/claim$", { status = 200, body = "" })
        assert.is_true(rt:pool_claim(member, { token = "fresh", entrypoint = { "sh", "-c", "x" }, env = { "A=1" } }))
        local r = k.requests[1]
        assert.equal("http://10.244.0.7:44772/pool/claim", r.url)
        assert.equal("boot", r.headers["X-EXECD-ACCESS-TOKEN"])
        assert.same({ token = "fresh", entrypoint = { "sh", "-c", "x" }, env = { "A=1" } }, r.json)
        -- an empty env is a JSON array
        assert.is_true(rt:pool_claim(member, { token = "f2", entrypoint = { "true" } }))
        assert.truthy(k.requests[2].body:find('"env":[]', 1, true), k.requests[2].body)
        k:on("POST", "^/pool/claim$", { status = 409, body = "already claimed" })
        local ok, err = rt:pool_claim(member, { token = "f3", entrypoint = { "true" } })
        assert.is_nil(ok)
        assert.equal("conflict", err.kind)
        assert.equal("the agent refused the claim (409): already claimed", err.message)
    end)

    it("checks a member's pod with one dry-run create: nothing made, a refusal is invalid", function()
        k:on("POST", "^" .. NS .. "/pods%?dryRun=All&fieldValidation=Strict$", { status = 201, json = {} })
        assert.is_true(rt:pool_check(sandbox({ pool = "py" }), spec({ pool_member = true })))
        assert.same({ "POST " .. NS .. "/pods?dryRun=All&fieldValidation=Strict" }, paths(k))
        assert.equal("py", k.requests[1].json.metadata.labels["opensandbox.io/pool"])
        k:on("POST", "dryRun=All", { status = 422, json = fake_kube.status(422, "Invalid", "bad label") })
        local ok, err = rt:pool_check(sandbox({ pool = "py" }), spec({ pool_member = true }))
        assert.is_nil(ok)
        assert.equal("invalid", err.kind)
        assert.equal("template: the Kubernetes API server refuses a member's pod: bad label", err.message)
        k:on("POST", "dryRun=All", { status = 403, json = fake_kube.status(403, "Forbidden", "no") })
        ok, err = rt:pool_check(sandbox({ pool = "py" }), spec({ pool_member = true }))
        assert.is_nil(ok)
        assert.equal("api", err.kind)
        assert.equal(3, #k.requests)
    end)

    it("takes a PodTemplateSpec or the Docker-shaped template; a pool name is a label value", function()
        local got = assert(rt:pool_template({ spec = { containers = { { image = "python:3.12" } } } }, "py"))
        assert.same({ uri = "python:3.12" }, got.body.image)
        assert.is_false(rt:pool_template({ image = { uri = "x" }, resourceLimits = {} }, "py"))
        local none, err = rt:pool_template({ image = { uri = "x" } }, string.rep("a", 64))
        assert.is_nil(none)
        assert.equal("name must be at most 63 characters on the kubernetes runtime (it is a label value).", err)
        assert.same({}, k.requests)
    end)
end)
