-- Integration: the server itself deployed into the test cluster from deploy/kubernetes (the image that
-- deploy/kubernetes/build-image.sh makes from this checkout, rbac.yaml, server.yaml), with the in-cluster
-- credentials of its ServiceAccount (token, CA and namespace files mounted by the kubelet), serving the API:
-- create to Running, the agent through the server proxy, delete.
--
-- Test-only adaptation of server.yaml (tests/k8s/cluster.sh's one-node cluster has no kube-proxy, and its
-- apiserver listens on 127.0.0.1 only): the server pod uses the node's network, KUBERNETES_SERVICE_HOST/PORT
-- point at that loopback address, and the server listens on a free port. Everything else is the file as
-- shipped.
local K = require("kubernetes.helpers")
local json = K.json

local IMAGE = "opensandbox-server:test"

local function free_port()
    local out = K.run([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); ]]
        .. [[print(s.getsockname()[1])']])
    return assert(tonumber(out), out)
end

local function read(path)
    local f = assert(io.open(path, "r"))
    local s = f:read("a")
    f:close()
    return s
end

describe("kubernetes: the server deployed in the cluster #integration #kubernetes", function()
    local ns
    setup(function()
        K.cluster()
        local old = K.kubectl("get ns -l opensandbox.deploy-test=1 -o name")
        for name in old:gmatch("namespace/(%S+)") do
            K.kubectl("delete ns " .. name .. " --wait=false")
        end
        ns = string.format("osb-deploy-%d-%d", os.time(), math.random(1000, 9999))
    end)
    teardown(function()
        if ns then
            K.kubectl("delete ns " .. ns .. " --wait=false")
        end
    end)

    it("runs from deploy/kubernetes with in-cluster credentials and serves sandboxes", function()
        local out, ok = K.run("bash deploy/kubernetes/build-image.sh " .. IMAGE .. " 2>&1")
        assert.is_true(ok, out)
        out, ok = K.run("bash " .. K.CLUSTER .. " load-image " .. IMAGE .. " 2>&1")
        assert.is_true(ok, out)

        local admin = read(K.cluster())
        local api_port = assert(admin:match("server:%s*https://127%.0%.0%.1:(%d+)"))
        local port = free_port()
        local yaml = read("deploy/kubernetes/rbac.yaml") .. "\n---\n" .. read("deploy/kubernetes/server.yaml")
        yaml = yaml:gsub("namespace: opensandbox\n", "namespace: " .. ns .. "\n")
            :gsub("\n  name: opensandbox\n", "\n  name: " .. ns
                .. "\n  labels:\n    opensandbox.deploy-test: \"1\"\n", 1)
            :gsub("port = 8080,", "port = " .. port .. ",")
            :gsub("containerPort: 8080", "containerPort: " .. port)
            :gsub("image: opensandbox%-server:dev\n          imagePullPolicy: IfNotPresent",
                "image: " .. IMAGE .. "\n          imagePullPolicy: Never")
            :gsub("      serviceAccountName: opensandbox%-server\n",
                "      serviceAccountName: opensandbox-server\n      hostNetwork: true\n"
                .. "      dnsPolicy: ClusterFirstWithHostNet\n")
            :gsub("          env:\n", "          env:\n            - name: KUBERNETES_SERVICE_HOST\n"
                .. "              value: \"127.0.0.1\"\n            - name: KUBERNETES_SERVICE_PORT\n"
                .. "              value: \"" .. api_port .. "\"\n", 1)
        local dir = K.run("mktemp -d /tmp/osb-test.XXXXXX"):gsub("%s+$", "")
        local f = assert(io.open(dir .. "/deploy.yaml", "w"))
        f:write(yaml)
        f:close()
        out, ok = K.kubectl("apply -f " .. dir .. "/deploy.yaml")
        assert.is_true(ok, out)
        local key = "k-" .. math.random(100000, 999999) .. "-" .. os.time()
        out, ok = K.kubectl("-n " .. ns .. " create secret generic opensandbox-server-key --from-literal=api-key="
            .. key)
        assert.is_true(ok, out)
        out, ok = K.kubectl("-n " .. ns .. " rollout status deploy/opensandbox-server --timeout=120s")
        if not ok then
            out = out .. "\n" .. K.kubectl("-n " .. ns .. " describe pods") .. "\n"
                .. K.kubectl("-n " .. ns .. " logs deploy/opensandbox-server --tail=50")
        end
        assert.is_true(ok, out)
        K.run("rm -rf " .. K.quote(dir))

        -- the API of the server in the pod (the pod has the node's network: its IP is the node's)
        local ip = K.kubectl("-n " .. ns .. " get pods -l app.kubernetes.io/name=opensandbox-server "
            .. "-o jsonpath={.items[0].status.podIP}"):gsub("%s+$", "")
        local srv = { base = "http://" .. ip .. ":" .. port }
        function srv.request(self, method, p, o)
            o = o or {}
            local headers = o.headers or {}
            headers["OPEN-SANDBOX-API-KEY"] = headers["OPEN-SANDBOX-API-KEY"] or key
            return K.curl({ method = method, url = self.base .. p, headers = headers, body = o.body,
                timeout = o.timeout or 30 })
        end
        K.assert_error(K.call(srv, "GET", "/v1/sandboxes", nil, { ["OPEN-SANDBOX-API-KEY"] = "wrong" }), 401,
            "INVALID_API_KEY")
        local id = K.create_running(srv)
        -- its pod is in the server's namespace (from the service account's namespace file)
        out, ok = K.kubectl("-n " .. ns .. " get pod sandbox-" .. id .. " -o json")
        assert.is_true(ok, out)
        assert.are.equal(id, json.decode(out).metadata.labels["opensandbox.io/id"])
        -- the agent through the server proxy of the server in the cluster
        local ep = K.call(srv, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772?use_server_proxy=true")
        assert.are.equal(200, ep.status, ep.body)
        local answered = false
        for _ = 1, 100 do
            local res = K.curl({ url = "http://" .. ep.json.endpoint .. "/ping", headers = ep.json.headers,
                timeout = 2 })
            if res and res.status == 200 then
                answered = true
                break
            end
            K.sleep(0.1)
        end
        assert.is_true(answered, "the agent did not answer through the in-cluster server's proxy")
        -- diagnostics with the Role of rbac.yaml (pods/log get, events list)
        local logs = K.call(srv, "GET", "/v1/sandboxes/" .. id .. "/diagnostics/logs?scope=container")
        assert.are.equal(200, logs.status, logs.body)
        local evs = K.call(srv, "GET", "/v1/sandboxes/" .. id .. "/diagnostics/events?scope=runtime")
        assert.are.equal(200, evs.status, evs.body)
        assert.truthy(evs.json.content:find("kubernetes Normal Scheduled", 1, true), evs.body)
        assert.are.equal(204, K.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
        local gone = false
        for _ = 1, 150 do
            if not select(2, K.kubectl("-n " .. ns .. " get pod sandbox-" .. id)) then
                gone = true
                break
            end
            K.sleep(0.2)
        end
        assert.is_true(gone, "the sandbox pod is still there after the delete")
    end)
end)
