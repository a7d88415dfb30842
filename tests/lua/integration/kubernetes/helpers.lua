-- TEST-ONLY helpers for the Kubernetes integration specs: the real one-node cluster of tests/k8s/cluster.sh
-- (started by the spec when it is not up), a namespace of its own per run, kubectl through the cluster
-- script, and servers with runtime.type = "kubernetes" (built on the lifecycle helpers).
local H = require("lifecycle.helpers")

local K = {}
for k, v in pairs(H) do
    K[k] = v
end

K.CLUSTER = "tests/k8s/cluster.sh"

--- `kubectl ARGS` against the test cluster; returns output, ok.
function K.kubectl(args)
    return H.run("bash " .. K.CLUSTER .. " kubectl " .. args .. " 2>&1")
end

--- Brings the cluster up (builds it the first time) and loads the test image; returns the kubeconfig path.
function K.cluster()
    if K.kubeconfig then
        return K.kubeconfig
    end
    H.ensure_image()
    local out, ok = H.run("bash " .. K.CLUSTER .. " up 2>/tmp/osb-k8s-up.log")
    assert(ok, "tests/k8s/cluster.sh up failed: " .. out .. "\n" .. (H.run("tail -40 /tmp/osb-k8s-up.log")))
    K.kubeconfig = assert(out:match("KUBECONFIG=(%S+)"), "no KUBECONFIG line: " .. out)
    out, ok = H.run("bash " .. K.CLUSTER .. " load-image " .. H.IMAGE .. " 2>&1")
    assert(ok, "load-image failed: " .. out)
    return K.kubeconfig
end

--- A namespace for this run (labelled, removed by K.cleanup and by the next run's K.namespace).
function K.namespace()
    if K.ns then
        return K.ns
    end
    -- leftovers of earlier runs
    local old = K.kubectl("get ns -l opensandbox.test=1 -o name")
    for name in old:gmatch("namespace/(%S+)") do
        K.kubectl("delete ns " .. name .. " --wait=false")
    end
    K.ns = string.format("osb-it-%d-%d", os.time(), math.random(1000, 9999))
    local out, ok = K.kubectl("create ns " .. K.ns)
    assert(ok, out)
    K.kubectl("label ns " .. K.ns .. " opensandbox.test=1")
    -- pods are refused until the controller manager made the namespace's default ServiceAccount (slow right
    -- after an apiserver restart): wait for it, up to 120 s
    for _ = 1, 120 do
        local _, sa = K.kubectl("-n " .. K.ns .. " get serviceaccount default")
        if sa then
            break
        end
        H.run("sleep 1")
    end
    return K.ns
end

--- The `kubernetes` config section for a server on the test cluster.
function K.config(over)
    local cfg = {
        runtime = { type = "kubernetes" },
        kubernetes = { kubeconfig_path = K.cluster(), namespace = K.namespace(), image_pull_policy = "Never",
            create_timeout = 60 },
    }
    for k, v in pairs(over or {}) do
        cfg.kubernetes[k] = v
    end
    return cfg
end

--- A server with runtime.type = "kubernetes" on the test cluster.
function K.start(over, opts)
    opts = opts or {}
    opts.config = K.config(over)
    return H.start(opts)
end

--- A server with a whole configuration (K.config() plus other sections) on the test cluster.
function K.start_with(cfg, opts)
    opts = opts or {}
    opts.config = cfg
    return H.start(opts)
end

--- The pod of a sandbox as JSON, or nil when there is none.
function K.pod(id)
    local out, ok = K.kubectl("-n " .. K.namespace() .. " get pod sandbox-" .. id .. " -o json")
    if not ok then
        return nil, out
    end
    return H.json.decode(out)
end

--- Waits until the sandbox's pod is gone; returns true when it is.
function K.wait_pod_gone(id, timeout)
    local deadline = os.time() + (timeout or 30)
    repeat
        if not K.pod(id) then
            return true
        end
        H.sleep(0.2)
    until os.time() > deadline
    return false
end

--- Removes this run's namespace (and so every pod left in it).
function K.cleanup()
    if K.ns then
        K.kubectl("delete ns " .. K.ns .. " --wait=false")
        K.ns = nil
    end
end

return K
