-- Integration: runtime.type = "kubernetes" against the real one-node cluster of tests/k8s/cluster.sh
-- (kube-apiserver, scheduler, controller-manager, kubelet, containerd), through the real server binary:
-- create to Running, the Pod we make, the agent through the server proxy, exits, image failures, pause
-- and snapshots refused, renew, delete, a pod deleted behind the server's back, adoption after a restart without the
-- store, and an unreachable apiserver.
local K = require("kubernetes.helpers")
local json = K.json

local function path(id, rest)
    return "/v1/sandboxes/" .. id .. (rest or "")
end

-- the agent answers /ping through the server proxy, with the token the endpoint reply hands out
local function agent_answers(srv, id)
    local ep = K.call(srv, "GET", path(id, "/endpoints/44772?use_server_proxy=true"))
    assert.are.equal(200, ep.status, ep.body)
    local token = ep.json.headers and ep.json.headers["X-EXECD-ACCESS-TOKEN"]
    assert.is_string(token, ep.body)
    for _ = 1, 100 do
        local res = K.curl({ url = "http://" .. ep.json.endpoint .. "/ping",
            headers = { ["X-EXECD-ACCESS-TOKEN"] = token }, timeout = 2 })
        if res and res.status == 200 then
            return true, token, ep.json.endpoint
        end
        K.sleep(0.1)
    end
    return false
end

describe("kubernetes runtime #integration #kubernetes", function()
    setup(function()
        K.cluster()
        K.namespace()
    end)
    teardown(function()
        K.stop_all()
        K.cleanup()
    end)

    it("creates a Pod that reaches Running, with our identity, security context and agent", function()
        local srv = K.start()
        local id, created = K.create(srv, { metadata = { team = "infra" }, env = { GREETING = "hi" },
            resourceLimits = { cpu = "250m", memory = "128Mi" } })
        assert.are.equal("Pending", created.json.status.state)
        local sb = K.wait_state(srv, id, "Running", 90)
        assert.are.same({ team = "infra" }, sb.metadata)
        local pod = assert(K.pod(id))
        assert.are.equal(id, pod.metadata.labels["opensandbox.io/id"])
        assert.are.equal("opensandbox-server", pod.metadata.labels["opensandbox.io/managed-by"])
        assert.is_string(pod.metadata.annotations["opensandbox.io/expires-at"])
        assert.are.equal('{"team":"infra"}', pod.metadata.annotations["opensandbox.io/metadata"])
        local c = pod.spec.containers[1]
        assert.are.equal("250m", c.resources.limits.cpu)
        assert.are.equal(false, c.securityContext.allowPrivilegeEscalation)
        assert.are.equal("RuntimeDefault", c.securityContext.seccompProfile.type)
        assert.are.equal(false, pod.spec.automountServiceAccountToken)
        assert.are.same({ "sleep", "600" }, c.args)
        -- the agent, from the read-only ConfigMap volume, through the server proxy to the Pod IP
        local ok, token, endpoint = agent_answers(srv, id)
        assert.is_true(ok, "the agent did not answer through the server proxy")
        local res = K.curl({ method = "POST", url = "http://" .. endpoint .. "/command",
            headers = { ["X-EXECD-ACCESS-TOKEN"] = token, ["Content-Type"] = "application/json" },
            body = json.encode({
                command = "echo $GREETING; env | grep -c EXECD_ACCESS_TOKEN; touch /opt/opensandbox/x",
            }),
            timeout = 20 })
        assert.are.equal(200, res.status, res.body)
        local out = {}
        for line in res.body:gmatch("[^\n]+") do
            local ev = json.decode(line)
            if type(ev) == "table" and (ev.type == "stdout" or ev.type == "stderr") then
                out[#out + 1] = ev.type .. ":" .. tostring(ev.text)
            end
        end
        local text = table.concat(out, "\n")
        assert.truthy(text:find("stdout:hi", 1, true), text)
        assert.truthy(text:find("stdout:0", 1, true), "the user's commands do not see the agent token: " .. text)
        assert.truthy(text:find("Read-only", 1, true), "the agent volume is read-only: " .. text)
        -- the direct endpoints are the Pod IP; the agent's carries its token, and answers there too
        local ep = K.call(srv, "GET", path(id, "/endpoints/8080"))
        assert.are.equal(pod.status.podIP .. ":8080", ep.json.endpoint)
        ep = K.call(srv, "GET", path(id, "/endpoints/44772"))
        assert.are.equal(pod.status.podIP .. ":44772", ep.json.endpoint)
        assert.are.equal(token, ep.json.headers["X-EXECD-ACCESS-TOKEN"])
        res = K.curl({ url = "http://" .. ep.json.endpoint .. "/ping", headers = ep.json.headers, timeout = 5 })
        assert.are.equal(200, res and res.status)
        -- delete: the pod goes away
        assert.are.equal(204, K.call(srv, "DELETE", path(id)).status)
        K.assert_error(K.call(srv, "GET", path(id)), 404, "KUBERNETES::SANDBOX_NOT_FOUND")
        assert.is_true(K.wait_pod_gone(id, 30), "pod still there after delete")
    end)

    -- the Kubernetes API requests the server's log shows for one HTTP request (by its X-Request-ID)
    local function requests_of(srv, res)
        local rid = assert(res.headers["x-request-id"])
        local seen = {}
        for line in srv:log():gmatch("[^\n]+") do
            local mine = line:find('"request_id":"' .. rid .. '"', 1, true)
            if mine and line:find('"msg":"kubernetes request"', 1, true) then
                seen[#seen + 1] = line:match('"method":"(%u+)"') .. " " .. (line:match('"path":"([^"?]+)') or "?")
            end
        end
        return seen
    end

    it("creates with at most 3 Kubernetes API requests, the first create after a start too", function()
        local srv = K.start() -- the agent's ConfigMap is made sure of at connect, not by a create
        local first, res = K.create(srv)
        K.wait_state(srv, first, "Running", 90)
        local seen = requests_of(srv, res)
        assert.is_true(#seen >= 1 and #seen <= 3, #seen .. " requests: " .. table.concat(seen, ", "))
        for _, r in ipairs(seen) do
            assert.is_nil(r:find("configmaps", 1, true), "a create asked for the agent ConfigMap: " .. r)
        end
        local id
        id, res = K.create(srv)
        K.wait_state(srv, id, "Running", 90)
        seen = requests_of(srv, res)
        assert.is_true(#seen >= 1 and #seen <= 3, #seen .. " requests: " .. table.concat(seen, ", "))
        assert.are.equal(204, K.call(srv, "DELETE", path(first)).status)
        assert.are.equal(204, K.call(srv, "DELETE", path(id)).status)
    end)

    it("multiplexes its requests: 20 creates at once share a few HTTP/2 connections to the apiserver", function()
        local srv = K.start({ instance = "mux" }) -- its own pods only
        local api_port = assert(assert(io.open(K.cluster(), "r")):read("a"):match("server:%s*https://[^:]+:(%d+)"))
        local script = K.run("mktemp /tmp/osb-test.XXXXXX"):gsub("%s+$", "")
        local body = K.json.encode(K.body())
        local f = assert(io.open(script, "w"))
        -- 20 POSTs at once from the shell, then count the server's connections to the apiserver while their
        -- pods start (each create holds a watch of its pod until it runs)
        f:write(string.format([[
for i in $(seq 1 20); do
  curl -s -o /dev/null -H 'Content-Type: application/json' -d '%s' http://127.0.0.1:%d/v1/sandboxes &
done
wait
max=0
for i in $(seq 1 20); do
  n=$(ss -tnpH state established "( dport = :%s )" | grep -c "pid=%d,")
  [ "$n" -gt "$max" ] && max=$n
  sleep 0.1
done
echo $max
]], body, srv.port, api_port, srv.pid))
        f:close()
        local out = K.run("bash " .. script)
        os.remove(script)
        local max = assert(tonumber(out), out)
        assert.is_true(max >= 1 and max <= 4, max .. " connections to the apiserver during 20 creates")
        local list = K.call(srv, "GET", "/v1/sandboxes?pageSize=50")
        assert.are.equal(20, #list.json.items)
        for _, sb in ipairs(list.json.items) do
            K.wait_state(srv, sb.id, "Running", 120)
        end
        for _, sb in ipairs(list.json.items) do
            assert.are.equal(204, K.call(srv, "DELETE", path(sb.id)).status)
        end
    end)

    it("makes a pull Secret for image.auth that the pod owns, and the garbage collector deletes it", function()
        local srv = K.start()
        local id = K.create_running(srv, { image = { uri = K.IMAGE, auth = { username = "u", password = "p" } } })
        local name = "sandbox-" .. id .. "-pull"
        local out, ok = K.kubectl("-n " .. K.namespace() .. " get secret " .. name .. " -o json")
        assert.is_true(ok, out)
        local secret = json.decode(out)
        assert.are.equal("kubernetes.io/dockerconfigjson", secret.type)
        assert.are.equal("Pod", secret.metadata.ownerReferences[1].kind)
        assert.are.equal("sandbox-" .. id, secret.metadata.ownerReferences[1].name)
        assert.are.equal(name, K.pod(id).spec.imagePullSecrets[1].name)
        assert.are.equal(204, K.call(srv, "DELETE", path(id)).status)
        local gone = false
        for _ = 1, 300 do
            if not select(2, K.kubectl("-n " .. K.namespace() .. " get secret " .. name)) then
                gone = true
                break
            end
            K.sleep(0.2)
        end
        assert.is_true(gone, "the pull Secret outlived its pod")
    end)

    it("collects orphaned agent ConfigMaps and pull Secrets of its instance", function()
        K.stop_all() -- a server without kubernetes.instance owns every instance's objects: none may collect these
        local ns = K.namespace()
        local labels = "opensandbox.io/managed-by=opensandbox-server opensandbox.io/instance=gc"
        local out, ok = K.kubectl("-n " .. ns .. " create configmap opensandbox-agent-0ld --from-literal=x=1")
        assert.is_true(ok, out)
        out, ok = K.kubectl("-n " .. ns .. " create secret generic crashed-create-pull --from-literal=x=1")
        assert.is_true(ok, out)
        K.kubectl("-n " .. ns .. " label configmap opensandbox-agent-0ld " .. labels .. " opensandbox.io/agent-tag=0ld")
        K.kubectl("-n " .. ns .. " label secret crashed-create-pull " .. labels .. " opensandbox.io/id=no-such-id")
        local srv = K.start({ instance = "gc", orphan_grace_seconds = 0 })
        local function gone(kind, name)
            for _ = 1, 150 do
                if not select(2, K.kubectl("-n " .. ns .. " get " .. kind .. " " .. name)) then
                    return true
                end
                K.sleep(0.2)
            end
            return false
        end
        assert.is_true(gone("configmap", "opensandbox-agent-0ld"), "the old agent ConfigMap is still there")
        assert.is_true(gone("secret", "crashed-create-pull"), "the orphaned pull Secret is still there")
        -- the current agent ConfigMap stays, and works
        local current = K.kubectl("-n " .. ns .. " get configmap -l opensandbox.io/agent-tag -o name")
        assert.truthy(current:find("configmap/opensandbox%-agent%-"), current)
        local id = K.create_running(srv)
        assert.is_true((agent_answers(srv, id)))
        assert.truthy(srv:log():find("deleted an orphaned image pull Secret", 1, true))
        assert.are.equal(204, K.call(srv, "DELETE", path(id)).status)
    end)

    it("refuses pause and resume clearly, and renews", function()
        local srv = K.start()
        local id = K.create_running(srv)
        local res = K.call(srv, "POST", path(id, "/pause"))
        K.assert_error(res, 400, "SANDBOX::API_NOT_SUPPORTED", function(m)
            return m:find("pause", 1, true) ~= nil
        end)
        assert.are.equal("Running", K.call(srv, "GET", path(id)).json.status.state)
        -- snapshots are not supported on Kubernetes: refused before anything is made
        res = K.call(srv, "POST", path(id, "/snapshots"), { name = "x" })
        K.assert_error(res, 400, "SANDBOX::API_NOT_SUPPORTED", "Snapshots are not supported by the kubernetes runtime.")
        res = K.call(srv, "POST", "/v1/sandboxes", { snapshotId = "s1", resourceLimits = {} })
        K.assert_error(res, 400, "SANDBOX::API_NOT_SUPPORTED", "snapshotId is not supported by the kubernetes runtime.")
        res = K.call(srv, "GET", "/v1/snapshots")
        assert.are.equal(200, res.status, res.body)
        assert.are.equal(0, res.json.pagination.totalItems)
        assert.are.equal("Running", K.call(srv, "GET", path(id)).json.status.state)
        local want = K.iso(3600)
        res = K.call(srv, "POST", path(id, "/renew-expiration"), { expiresAt = want })
        assert.are.equal(200, res.status, res.body)
        -- durable in the Pod too, for another replica or a restart without the store
        local ann = assert(K.pod(id)).metadata.annotations["opensandbox.io/expires-at"]
        assert.are.equal(K.parse_time(want), K.parse_time(ann))
        assert.are.equal(204, K.call(srv, "DELETE", path(id)).status)
    end)

    it("refuses networkPolicy before anything is made; 18080 stays an ordinary port", function()
        local srv = K.start()
        local function pods()
            local out = K.kubectl("-n " .. K.namespace() .. " get pods -o name")
            return select(2, out:gsub("pod/", ""))
        end
        local before = pods()
        local res = K.call(srv, "POST", "/v1/sandboxes", K.body({ networkPolicy = { defaultAction = "deny",
            egress = { { action = "allow", target = "pypi.org" } } } }))
        K.assert_error(res, 400, "SANDBOX::INVALID_PARAMETER",
            "networkPolicy is not supported on the kubernetes runtime.")
        -- a malformed policy is refused by validation first, with the field named
        res = K.call(srv, "POST", "/v1/sandboxes", K.body({ networkPolicy = {
            egress = { { action = "x", target = "a" } } } }))
        K.assert_error(res, 400, "SANDBOX::INVALID_PARAMETER",
            "networkPolicy.egress[0].action must be 'allow' or 'deny'.")
        assert.are.equal(0, K.call(srv, "GET", "/v1/sandboxes").json.pagination.totalItems)
        assert.are.equal(before, pods(), "no pod was made")
        local id = K.create_running(srv)
        local ep = K.call(srv, "GET", path(id, "/endpoints/18080?use_server_proxy=true"))
        assert.are.equal(200, ep.status, ep.body)
        assert.is_nil(ep.json.headers and ep.json.headers["OPENSANDBOX-EGRESS-AUTH"])
        K.assert_error(K.call(srv, "GET", "/sandboxes/" .. id .. "/egress/policy"), 404,
            "SANDBOX::NETWORK_POLICY_NOT_FOUND")
        assert.are.equal(204, K.call(srv, "DELETE", path(id)).status)
    end)

    it("reports exits: Terminated on 0, Failed with the code otherwise", function()
        local srv = K.start()
        local ok_id = K.create(srv, { entrypoint = { "sh", "-c", "sleep 1; exit 0" } })
        local bad_id = K.create(srv, { entrypoint = { "sh", "-c", "sleep 1; exit 3" } })
        local sb = K.wait_state(srv, ok_id, "Terminated", 90)
        assert.are.equal("CONTAINER_EXITED", sb.status.reason)
        sb = K.wait_state(srv, bad_id, "Failed", 90)
        assert.are.equal("Sandbox container exited with code 3.", sb.status.message)
        assert.are.equal(204, K.call(srv, "DELETE", path(ok_id)).status)
        assert.are.equal(204, K.call(srv, "DELETE", path(bad_id)).status)
    end)

    it("reports an OOM kill and an eviction by the kubelet as Failed, with the reason", function()
        -- the operator's pod template adds an ephemeral-storage limit to the sandbox container
        local dir = K.run("mktemp -d /tmp/osb-test.XXXXXX"):gsub("%s+$", "")
        local f = assert(io.open(dir .. "/template.yaml", "w"))
        f:write("spec:\n  containers:\n  - name: sandbox\n    resources:\n      limits:\n"
            .. "        ephemeral-storage: 10Mi\n")
        f:close()
        local srv = K.start({ pod_template_file = dir .. "/template.yaml" })
        local hog = K.create(srv, { entrypoint = { "sh", "-c", "sleep 2; dd if=/dev/zero of=/big bs=1M count=40; "
            .. "sleep 600" } })
        local oom = K.create(srv, { entrypoint = { "sh", "-c", "sleep 2; x=a; while true; do x=$x$x; done" },
            resourceLimits = { memory = "16Mi" } })
        local sb = K.wait_state(srv, oom, "Failed", 90)
        assert.truthy(sb.status.message:find("OOM", 1, true) or sb.status.message:find("137", 1, true),
            sb.status.message)
        sb = K.wait_state(srv, hog, "Failed", 120)
        assert.truthy(sb.status.message:find("evicted", 1, true), sb.status.message)
        assert.truthy(sb.status.message:find("ephemeral", 1, true), sb.status.message)
        assert.are.equal(204, K.call(srv, "DELETE", path(hog)).status)
        assert.are.equal(204, K.call(srv, "DELETE", path(oom)).status)
        K.run("rm -rf " .. K.quote(dir))
    end)

    it("fails provisioning of an image the node does not have, and leaves no pod", function()
        local srv = K.start()
        local id = K.create(srv, { image = { uri = "local/not-there:1" } })
        local sb = K.wait_state(srv, id, "Failed", 90)
        assert.are.equal("PROVISIONING_ERROR", sb.status.reason)
        assert.truthy(sb.status.message:find("^KUBERNETES::POD_FAILED: Failed to pull image "), sb.status.message)
        assert.is_true(K.wait_pod_gone(id, 30), "the failed pod was left behind")
        assert.are.equal(204, K.call(srv, "DELETE", path(id)).status)
    end)

    it("drops a sandbox whose pod was deleted behind its back (watch)", function()
        local srv = K.start()
        local id = K.create_running(srv)
        local out, ok = K.kubectl("-n " .. K.namespace() .. " delete pod sandbox-" .. id ..
            " --grace-period=1 --wait=false")
        assert.is_true(ok, out)
        K.wait_gone(srv, id, 30)
    end)

    it("adopts its pods after a restart without its store, token, metadata and renewal kept", function()
        local first = K.start()
        local id = K.create_running(first, { metadata = { app = "kept" } })
        local _, token = agent_answers(first, id)
        local renewed = K.iso(5400)
        assert.are.equal(200, K.call(first, "POST", path(id, "/renew-expiration"), { expiresAt = renewed }).status)
        first:stop()
        K.run("rm -rf " .. K.quote(first.dir .. "/state"))
        local second = K.start()
        local sb = K.wait_state(second, id, "Running", 30)
        assert.are.same({ app = "kept" }, sb.metadata)
        assert.are.equal(K.parse_time(renewed), K.parse_time(sb.expiresAt), "the renewal survived without the store")
        local ok, token2 = agent_answers(second, id)
        assert.is_true(ok)
        assert.are.equal(token, token2)
        assert.are.equal(204, K.call(second, "DELETE", path(id)).status)
    end)

    it("answers 503 KUBERNETES::UNAVAILABLE while the apiserver is unreachable, and serves /health", function()
        -- a kubeconfig like the cluster's, pointing at a port where nothing listens
        local src = assert(io.open(K.cluster(), "r")):read("a")
        local dir = K.run("mktemp -d /tmp/osb-test.XXXXXX"):gsub("%s+$", "")
        local bad = src:gsub("https://127%.0%.0%.1:%d+", "https://127.0.0.1:1")
        local f = assert(io.open(dir .. "/kubeconfig", "w"))
        f:write(bad)
        f:close()
        local srv = K.start({ kubeconfig_path = dir .. "/kubeconfig" })
        assert.are.equal(200, K.call(srv, "GET", "/health").status)
        local res = K.create_raw(srv)
        K.assert_error(res, 503, "KUBERNETES::UNAVAILABLE", function(m)
            return m:find("https://127.0.0.1:1", 1, true) ~= nil
        end)
        K.run("rm -rf " .. K.quote(dir))
    end)

    -- deploy/kubernetes/rbac.yaml in this run's namespace, and a kubeconfig with a token of its ServiceAccount
    local function rbac_kubeconfig(drop_verb, edit)
        local ns = K.namespace()
        local f = assert(io.open("deploy/kubernetes/rbac.yaml", "r"))
        local yaml = f:read("a"):gsub("namespace: opensandbox\n", "namespace: " .. ns .. "\n")
        f:close()
        -- the test namespace exists already: apply everything but the Namespace object
        yaml = yaml:gsub("^.-\n%-%-%-\n", "", 1)
        if drop_verb then
            yaml = yaml:gsub('verbs: %["create", "get", "list", "watch", "delete", "patch"%]',
                'verbs: ["get", "list", "watch", "delete", "patch"]')
        end
        if edit then
            yaml = edit(yaml)
        end
        local dir = K.run("mktemp -d /tmp/osb-test.XXXXXX"):gsub("%s+$", "")
        f = assert(io.open(dir .. "/rbac.yaml", "w"))
        f:write(yaml)
        f:close()
        local out, ok = K.kubectl("apply -f " .. dir .. "/rbac.yaml")
        assert(ok, out)
        local token
        token, ok = K.kubectl("-n " .. ns .. " create token opensandbox-server")
        assert(ok, token)
        token = token:gsub("%s+$", "")
        -- the admin kubeconfig's cluster (server and CA), with the ServiceAccount's token as the user
        local admin = assert(io.open(K.cluster(), "r")):read("a")
        local server = assert(admin:match("server:%s*(%S+)"))
        local ca = assert(admin:match("certificate%-authority%-data:%s*(%S+)"))
        f = assert(io.open(dir .. "/kubeconfig", "w"))
        f:write(string.format([[
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: sa
  user:
    token: %s
contexts:
- name: sa
  context:
    cluster: c
    user: sa
    namespace: %s
current-context: sa
]], server, ca, token, ns))
        f:close()
        return dir .. "/kubeconfig", dir
    end

    it("works with exactly the verbs of deploy/kubernetes/rbac.yaml, and names a verb RBAC forbids", function()
        local kc, dir = rbac_kubeconfig(false)
        local srv = K.start({ kubeconfig_path = kc })
        local id = K.create_running(srv)
        assert.is_true((agent_answers(srv, id)))
        assert.are.equal(204, K.call(srv, "DELETE", path(id)).status)
        assert.is_true(K.wait_pod_gone(id, 30))
        srv:stop()
        K.run("rm -rf " .. K.quote(dir))
        -- the same Role without `create` on pods: the create fails and says why
        kc, dir = rbac_kubeconfig(true)
        srv = K.start({ kubeconfig_path = kc })
        id = K.create(srv)
        local sb = K.wait_state(srv, id, "Failed", 60)
        assert.truthy(sb.status.message:find("forbidden", 1, true), sb.status.message)
        assert.truthy(sb.status.message:find("create", 1, true), sb.status.message)
        assert.truthy(sb.status.message:find("pods", 1, true), sb.status.message)
        K.run("rm -rf " .. K.quote(dir))
    end)

    it("answers 503 KUBERNETES::INITIALIZATION_ERROR naming what RBAC forbids at start-up", function()
        -- no agent ConfigMap yet, and a Role that may not create one
        local ns = K.namespace()
        K.kubectl("-n " .. ns .. " delete configmap -l opensandbox.io/agent-tag --wait=true")
        local kc, dir = rbac_kubeconfig(false, function(yaml)
            return (yaml:gsub('verbs: %["get", "create", "list", "delete"%]', 'verbs: ["get", "list", "delete"]'))
        end)
        local srv = K.start({ kubeconfig_path = kc })
        local res = K.create_raw(srv)
        K.assert_error(res, 503, "KUBERNETES::INITIALIZATION_ERROR", function(m)
            return m:find("agent's ConfigMap", 1, true) ~= nil and m:find("configmaps", 1, true) ~= nil
                and m:find("forbidden", 1, true) ~= nil
        end)
        K.run("rm -rf " .. K.quote(dir))
    end)

    it("follows a token file: a replaced token is read again at the first 401, not a minute later", function()
        -- two ServiceAccounts bound to the Role of rbac.yaml; the server starts with A's token in a file
        local kc, dir = rbac_kubeconfig(false)
        local ns = K.namespace()
        local out, ok = K.kubectl("-n " .. ns .. " create serviceaccount osb-rotated")
        assert.is_true(ok, out)
        out, ok = K.kubectl("-n " .. ns .. " create rolebinding osb-rotated --role=opensandbox-server "
            .. "--serviceaccount=" .. ns .. ":osb-rotated")
        assert.is_true(ok, out)
        local function token(sa)
            local t, tok = K.kubectl("-n " .. ns .. " create token " .. sa)
            assert(tok, t)
            return (t:gsub("%s+$", ""))
        end
        local function write(file, text)
            local f = assert(io.open(file, "w"))
            f:write(text)
            f:close()
        end
        local old = token("osb-rotated")
        write(dir .. "/token", old)
        local text = assert(io.open(kc, "r")):read("a"):gsub("token: %S+", "tokenFile: " .. dir .. "/token")
        write(kc, text)
        local srv = K.start({ kubeconfig_path = kc })
        local id = K.create_running(srv)
        -- rotate: the file gets the other account's token, and the first account is deleted (its tokens
        -- are refused from now on)
        write(dir .. "/token", token("opensandbox-server"))
        out, ok = K.kubectl("-n " .. ns .. " delete serviceaccount osb-rotated")
        assert.is_true(ok, out)
        -- wait until the apiserver refuses the old token
        local admin = assert(io.open(K.cluster(), "r")):read("a")
        local server = assert(admin:match("server:%s*(%S+)"))
        write(dir .. "/ca.b64", assert(admin:match("certificate%-authority%-data:%s*(%S+)")))
        K.run("base64 -d " .. K.quote(dir .. "/ca.b64") .. " > " .. K.quote(dir .. "/ca.crt"))
        local refused = false
        for _ = 1, 100 do
            local code = K.run("curl -s -o /dev/stdout -w '%{http_code}' --cacert " .. K.quote(dir .. "/ca.crt")
                .. " -H " .. K.quote("Authorization: Bearer " .. old) .. " " .. server .. "/api/v1/namespaces/" .. ns
                .. "/pods | tail -c 3")
            if code == "401" then
                refused = true
                break
            end
            K.sleep(0.2)
        end
        assert.is_true(refused, "the deleted account's token is still accepted")
        local t0 = os.time()
        local id2 = K.create_running(srv)
        assert.is_true(os.time() - t0 < 45, "the new token was not used at once")
        assert.truthy(srv:log():find("the Kubernetes token was refused", 1, true))
        assert.are.equal(204, K.call(srv, "DELETE", path(id)).status)
        assert.are.equal(204, K.call(srv, "DELETE", path(id2)).status)
        K.run("rm -rf " .. K.quote(dir))
    end)
end)
