-- The pure half of the Kubernetes runtime: how a sandbox maps onto Kubernetes objects and back, no I/O.
--   pod(sandbox, spec, opts)      the Pod manifest of a sandbox (README.md beside this file lists every field)
--   agent_configmap(name, files)  the ConfigMap that carries the agent (execd, bootstrap.sh)
--   pull_secret(...)/owner_patch  the image-pull Secret of `image.auth` and its ownerReference to the pod
--   status_of(pod)                the API's §3.2 state/reason/message/at of a Pod object
--   waiting_failure(pod)          why a pod cannot start (image pull, container config), for provisioning
--   identity_of(pod)              the contract's identity decoded from labels, annotations and the spec
-- Manifests are Lua tables ready for common.json (lists that may be empty are json.array).
local json = require("common.json")
local timefmt = require("common.timefmt")
local base64 = require("common.base64")
local imageref = require("runtimes.docker.imageref")
local template = require("runtimes.kubernetes.template")
local schema = require("config.schema")

local M = {}

M.AGENT_PORT = 44772
M.HTTP_PORT = 8080
M.CONTAINER = "sandbox" -- the sandbox's container in its pod
M.AGENT_DIR = "/opt/opensandbox"
M.BOOTSTRAP = M.AGENT_DIR .. "/bootstrap.sh"
M.AGENT_VOLUME = "opensandbox-agent"
M.EXEC_MODE = 493 -- 0755

M.LABEL_ID = "opensandbox.io/id"
M.LABEL_MANAGED_BY = "opensandbox.io/managed-by"
M.MANAGED_BY = "opensandbox-server"
M.LABEL_INSTANCE = "opensandbox.io/instance"
M.LABEL_AGENT_TAG = "opensandbox.io/agent-tag"
M.LABEL_POOL = "opensandbox.io/pool" -- a warm pool's member (and, once claimed, the sandbox it became)
M.ANN = {
    created = "opensandbox.io/created-at",
    expires = "opensandbox.io/expires-at",
    manual = "opensandbox.io/manual-cleanup",
    metadata = "opensandbox.io/metadata",
    principal = "opensandbox.io/principal",
    platform_os = "opensandbox.io/platform-os",
    platform_arch = "opensandbox.io/platform-arch",
}
M.DEFAULT_PULL_POLICY = "IfNotPresent"
M.GPU_RESOURCE = "nvidia.com/gpu"

-- the §3.2 messages, the same on every runtime
M.MESSAGES = require("runtimes.status").MESSAGES
M.exit_message = require("runtimes.status").exit_message

local function str(v)
    if type(v) == "string" and v ~= "" then
        return v
    end
    return nil
end

------------------------------------------------------------------------------------------------------------
-- names and selectors

--- The pod's name: the name a hook chose, else sandbox-{id}.
function M.pod_name(sandbox)
    return sandbox.name or ("sandbox-" .. sandbox.id)
end

function M.pull_secret_name(pod_name)
    return pod_name .. "-pull"
end

function M.agent_configmap_name(tag)
    return "opensandbox-agent-" .. tag
end

--- The label selector of this server's pods (with `instance`: of this instance only).
function M.selector(instance)
    local s = M.LABEL_MANAGED_BY .. "=" .. M.MANAGED_BY
    if instance then
        s = s .. "," .. M.LABEL_INSTANCE .. "=" .. instance
    end
    return s
end

local function owned_labels(instance)
    local labels = { [M.LABEL_MANAGED_BY] = M.MANAGED_BY }
    if instance then
        labels[M.LABEL_INSTANCE] = instance
    end
    return labels
end

------------------------------------------------------------------------------------------------------------
-- the pod

local function millicores(nano)
    return string.format("%dm", (math.tointeger(nano) + 999999) // 1000000)
end

--- The Pod manifest of a sandbox. `sandbox` and `spec` are the contract's (lua/runtimes/README.md);
--- opts = { agent_configmap = name (required), agent_has_execd = bool, pull_secret = name | nil,
---          image_pull_policy, service_account, instance, drop_capabilities (default: the Docker list),
---          template = runtimes.kubernetes.template result | nil }.
--- spec.pool_member: the pod waits for a claim (env OPENSANDBOX_POOL_MEMBER=1, no args); sandbox.pool: the
--- label opensandbox.io/pool; spec.runtime_template: a pool's pod template (laid under the operator's).
--- Returns the manifest, or nil and a message for a spec Kubernetes cannot express (gpu = all).
function M.pod(sandbox, spec, opts)
    assert(type(sandbox.id) == "string", "mapping.pod: sandbox.id required")
    assert(sandbox.created_us, "mapping.pod: sandbox.created_us required")
    assert(type(spec.image) == "table" and type(spec.image.uri) == "string", "mapping.pod: spec.image.uri required")
    assert(type(opts.agent_configmap) == "string", "mapping.pod: opts.agent_configmap required")

    local labels = owned_labels(opts.instance)
    labels[M.LABEL_ID] = sandbox.id
    if str(sandbox.pool) then
        labels[M.LABEL_POOL] = sandbox.pool
    end
    local ann = { [M.ANN.created] = timefmt.format(sandbox.created_us) }
    if sandbox.expires_us then
        ann[M.ANN.expires] = timefmt.format(sandbox.expires_us)
    else
        ann[M.ANN.manual] = "true"
    end
    if type(sandbox.metadata) == "table" and next(sandbox.metadata) ~= nil then
        ann[M.ANN.metadata] = json.encode(sandbox.metadata)
    end
    if str(sandbox.principal) then
        ann[M.ANN.principal] = sandbox.principal
    end

    -- The agent's token goes into the container's environment, as on Docker (bootstrap.sh hands it to the
    -- agent and removes it before the user's process starts). Whoever may read this pod's spec (get pods
    -- in the namespace) can read it there too: grant that only to whom may also use the agent.
    local env = json.array()
    for _, kv in ipairs(spec.env or {}) do
        local k, v = kv[1], kv[2]
        if k ~= "OPENSANDBOX_EXECD_PORT" and k ~= "EXECD_ACCESS_TOKEN" and k ~= "OPENSANDBOX_POOL_MEMBER" then
            env[#env + 1] = { name = k, value = v }
        end
    end
    env[#env + 1] = { name = "OPENSANDBOX_EXECD_PORT", value = tostring(M.AGENT_PORT) }
    if spec.pool_member then -- bootstrap.sh runs `execd --pool-member`: the claim brings the entrypoint
        env[#env + 1] = { name = "OPENSANDBOX_POOL_MEMBER", value = "1" }
    end
    if sandbox.access_token then
        env[#env + 1] = { name = "EXECD_ACCESS_TOKEN", value = sandbox.access_token }
    end

    local limits = {}
    if spec.nano_cpus then
        limits.cpu = millicores(spec.nano_cpus)
    end
    if spec.memory then
        limits.memory = string.format("%d", math.tointeger(spec.memory))
    end
    if spec.gpu then
        if spec.gpu == -1 or spec.gpu == "all" then
            return nil, "resourceLimits.gpu 'all' is not supported on Kubernetes: ask for a number of GPUs"
        end
        limits[M.GPU_RESOURCE] = tostring(math.tointeger(spec.gpu))
    end
    local resources
    if next(limits) then
        -- requests = limits: the sandbox gets what it asked for (Guaranteed QoS when both cpu and memory are set)
        local requests = {}
        for k, v in pairs(limits) do
            requests[k] = v
        end
        resources = { limits = limits, requests = requests }
    end

    local items = json.array({ { key = "bootstrap.sh", path = "bootstrap.sh", mode = M.EXEC_MODE } })
    if opts.agent_has_execd then
        items[#items + 1] = { key = "execd", path = "execd", mode = M.EXEC_MODE }
    end
    local drop = json.array()
    for i, c in ipairs(opts.drop_capabilities or schema.DEFAULT_CAP_DROP) do
        drop[i] = c
    end
    local args = json.array()
    for i, a in ipairs(not spec.pool_member and spec.entrypoint or {}) do
        args[i] = a
    end

    local container = {
        name = M.CONTAINER,
        image = spec.image.uri,
        imagePullPolicy = opts.image_pull_policy or M.DEFAULT_PULL_POLICY,
        command = json.array({ M.BOOTSTRAP }),
        args = args,
        env = env,
        ports = json.array({
            { name = "execd", containerPort = M.AGENT_PORT, protocol = "TCP" },
            { name = "http", containerPort = M.HTTP_PORT, protocol = "TCP" },
        }),
        resources = resources,
        volumeMounts = json.array({ { name = M.AGENT_VOLUME, mountPath = M.AGENT_DIR, readOnly = true } }),
        securityContext = {
            allowPrivilegeEscalation = false,
            capabilities = { drop = drop },
            seccompProfile = { type = "RuntimeDefault" },
        },
    }
    local podspec = {
        containers = json.array({ container }),
        restartPolicy = "Never",
        automountServiceAccountToken = false,
        enableServiceLinks = false,
        serviceAccountName = opts.service_account,
        volumes = json.array({ {
            name = M.AGENT_VOLUME,
            configMap = { name = opts.agent_configmap, defaultMode = M.EXEC_MODE, items = items },
        } }),
    }
    for _, v in ipairs(spec.volumes or {}) do -- (sandbox/volumes.lua; host ones resolved into `source`)
        -- (a host volume's `source` already ends in its subPath: resolved and checked by the server)
        container.volumeMounts[#container.volumeMounts + 1] = { name = v.name, mountPath = v.mountPath,
            readOnly = v.readOnly or nil, subPath = not v.host and v.subPath or nil }
        if v.host then
            podspec.volumes[#podspec.volumes + 1] = { name = v.name, hostPath = { path = v.source or v.host.path } }
        elseif v.pvc then
            podspec.volumes[#podspec.volumes + 1] = { name = v.name,
                persistentVolumeClaim = { claimName = v.pvc.claimName, readOnly = v.readOnly or nil } }
        end
    end
    if opts.pull_secret then
        podspec.imagePullSecrets = json.array({ { name = opts.pull_secret } })
    end
    if sandbox.platform then
        -- the nodes' well-known labels pick the platform; identity keeps it in annotations
        podspec.nodeSelector = { ["kubernetes.io/os"] = sandbox.platform.os,
            ["kubernetes.io/arch"] = sandbox.platform.arch }
        ann[M.ANN.platform_os] = sandbox.platform.os
        ann[M.ANN.platform_arch] = sandbox.platform.arch
    end
    local pod = {
        apiVersion = "v1",
        kind = "Pod",
        metadata = { name = M.pod_name(sandbox), labels = labels, annotations = ann },
        spec = podspec,
    }
    -- a pool's pod template (spec.runtime_template, runtimes.kubernetes.pool_template) lies under the
    -- operator's (kubernetes.pod_template_file), and both under ours
    return template.merge(template.layer(spec.runtime_template, opts.template), pod)
end

------------------------------------------------------------------------------------------------------------
-- PersistentVolumeClaims of `pvc` volumes

-- on a claim this server created for a sandbox: which sandbox's create made it
M.LABEL_VOLUME_SANDBOX = "opensandbox.io/volume-created-for"

--- The PersistentVolumeClaim a `pvc` volume with createIfNotExists creates: its storage (default
--- `default_size`), accessModes (default ReadWriteOnce) and storageClass (default: the cluster's).
function M.claim(v, default_size, sandbox_id, instance)
    local labels = owned_labels(instance)
    labels[M.LABEL_VOLUME_SANDBOX] = sandbox_id
    local modes = json.array()
    for i, m in ipairs(v.pvc.accessModes or { "ReadWriteOnce" }) do
        modes[i] = m
    end
    return {
        apiVersion = "v1",
        kind = "PersistentVolumeClaim",
        metadata = { name = v.pvc.claimName, labels = labels },
        spec = {
            accessModes = modes,
            storageClassName = v.pvc.storageClass,
            resources = { requests = { storage = v.pvc.storage or default_size or "1Gi" } },
        },
    }
end

------------------------------------------------------------------------------------------------------------
-- the agent ConfigMap and the pull Secret

--- The immutable ConfigMap `name` holding the agent's files (runtimes.agent_files: { bootstrap, execd? }).
function M.agent_configmap(name, files, tag, instance)
    local data = { ["bootstrap.sh"] = base64.encode(files.bootstrap) }
    if files.execd then
        data.execd = base64.encode(files.execd)
    end
    local labels = owned_labels(instance)
    labels[M.LABEL_AGENT_TAG] = tag
    return {
        apiVersion = "v1",
        kind = "ConfigMap",
        metadata = { name = name, labels = labels },
        immutable = true,
        binaryData = data,
    }
end

--- The `.dockerconfigjson` text for pulling `uri` with auth = { username, password }.
function M.dockerconfigjson(uri, auth)
    local ref = imageref.parse(uri)
    local server = ref and imageref.server_address(ref) or imageref.DOCKER_HUB_SERVER
    return json.encode({ auths = { [server] = {
        username = auth.username,
        password = auth.password,
        auth = base64.encode(auth.username .. ":" .. auth.password),
    } } })
end

--- The kubernetes.io/dockerconfigjson Secret `name` of a sandbox's image.auth.
function M.pull_secret(name, sandbox_id, uri, auth, instance)
    local labels = owned_labels(instance)
    labels[M.LABEL_ID] = sandbox_id
    return {
        apiVersion = "v1",
        kind = "Secret",
        type = "kubernetes.io/dockerconfigjson",
        metadata = { name = name, labels = labels },
        data = { [".dockerconfigjson"] = base64.encode(M.dockerconfigjson(uri, auth)) },
    }
end

--- The merge patch that makes an object owned by `pod` (a created Pod: metadata.name and uid), so that the
--- garbage collector deletes it with the pod.
function M.owner_patch(pod)
    local meta = pod.metadata or {}
    assert(str(meta.uid), "owner_patch: the pod has no uid")
    return { metadata = { ownerReferences = json.array({
        { apiVersion = "v1", kind = "Pod", name = meta.name, uid = meta.uid },
    }) } }
end

------------------------------------------------------------------------------------------------------------
-- reading pods back

local function container_of(list)
    if type(list) ~= "table" then
        return nil
    end
    for _, c in ipairs(list) do
        if type(c) == "table" and c.name == M.CONTAINER then
            return c
        end
    end
    return nil
end

local function container_status(pod)
    local st = type(pod.status) == "table" and pod.status or {}
    return container_of(st.containerStatuses)
end

-- waiting reasons that mean the container will not start (on its own, soon): the provisioning step each
-- failure belongs to
M.WAITING_FAILURES = {
    ErrImagePull = "image",
    ImagePullBackOff = "image",
    InvalidImageName = "image",
    ErrImageNeverPull = "image",
    ImageInspectError = "image",
    RegistryUnavailable = "image",
    SignatureValidationFailed = "image",
    CreateContainerConfigError = "create",
    CreateContainerError = "create",
    RunContainerError = "start",
}

--- When the pod's container is waiting for a reason it will not get past: step, reason, message
--- ("image"/"create"/"start", "ErrImagePull", the kubelet's words). Else nil.
function M.waiting_failure(pod)
    local cs = container_status(pod)
    local waiting = cs and type(cs.state) == "table" and cs.state.waiting
    if type(waiting) ~= "table" then
        return nil
    end
    local step = M.WAITING_FAILURES[waiting.reason]
    if not step then
        return nil
    end
    return step, waiting.reason, str(waiting.message) or waiting.reason
end

--- Why a pod is still pending, in the cluster's words (scheduling, a container waiting): text or nil.
function M.pending_detail(pod)
    local cs = container_status(pod)
    local waiting = cs and type(cs.state) == "table" and cs.state.waiting
    if type(waiting) == "table" and str(waiting.reason) then
        return waiting.reason .. (str(waiting.message) and (": " .. waiting.message) or "")
    end
    local st = type(pod.status) == "table" and pod.status or {}
    for _, c in ipairs(type(st.conditions) == "table" and st.conditions or {}) do
        if type(c) == "table" and c.status == "False" and (str(c.message) or str(c.reason)) then
            return (str(c.reason) or c.type or "") .. (str(c.message) and (": " .. c.message) or "")
        end
    end
    return str(st.phase) and ("phase " .. st.phase) or nil
end

--- state, reason, message, at_us of a Pod object (§3.2), in this order: being deleted -> Stopping;
--- evicted -> Failed; the container terminated (exit 0 -> Terminated, else Failed, OOMKilled noted),
--- running -> Running (readiness is not waited for), waiting for a reason it will not get past -> Failed;
--- else by phase (Pending -> Pending). nil for a pod whose state cannot be told (phase Unknown).
function M.status_of(pod)
    local meta = type(pod.metadata) == "table" and pod.metadata or {}
    local st = type(pod.status) == "table" and pod.status or {}
    if str(meta.deletionTimestamp) then
        return "Stopping", "CONTAINER_REMOVING", M.MESSAGES.CONTAINER_REMOVING, nil
    end
    if st.reason == "Evicted" then
        return "Failed", "CONTAINER_EXITED_ERROR",
            "Sandbox pod was evicted" .. (str(st.message) and (": " .. st.message) or "."), nil
    end
    local cs = container_status(pod)
    local cstate = cs and type(cs.state) == "table" and cs.state or {}
    local term = type(cstate.terminated) == "table" and cstate.terminated or nil
    if term then
        local code = math.tointeger(term.exitCode) or 0
        local oom = term.reason == "OOMKilled"
        local at = timefmt.parse_runtime(term.finishedAt)
        if code == 0 and not oom then
            return "Terminated", "CONTAINER_EXITED", M.MESSAGES.CONTAINER_EXITED, at
        end
        return "Failed", "CONTAINER_EXITED_ERROR", M.exit_message(code, oom), at
    end
    if type(cstate.running) == "table" then
        return "Running", "CONTAINER_RUNNING", M.MESSAGES.CONTAINER_RUNNING,
            timefmt.parse_runtime(cstate.running.startedAt)
    end
    local _, wreason, wmessage = M.waiting_failure(pod)
    if wreason then
        return "Failed", "CONTAINER_EXITED_ERROR",
            string.format("Sandbox container cannot start: %s: %s", wreason, wmessage), nil
    end
    local phase = st.phase
    if phase == "Pending" or phase == "Running" or phase == nil then
        return "Pending", "CONTAINER_STARTING", M.MESSAGES.CONTAINER_STARTING, nil
    end
    if phase == "Succeeded" then
        return "Terminated", "CONTAINER_EXITED", M.MESSAGES.CONTAINER_EXITED, nil
    end
    if phase == "Failed" then
        return "Failed", "CONTAINER_EXITED_ERROR",
            "Sandbox pod failed" .. (str(st.message) and (": " .. st.message) or "."), nil
    end
    return nil
end

--- The agent's token from the pod's container environment (nil when absent).
function M.token_of(pod)
    local spec = type(pod.spec) == "table" and pod.spec or {}
    local c = container_of(spec.containers)
    for _, e in ipairs(c and type(c.env) == "table" and c.env or {}) do
        if type(e) == "table" and e.name == "EXECD_ACCESS_TOKEN" then
            return str(e.value)
        end
    end
    return nil
end

--- The pod's IP, or nil before it has one.
function M.ip_of(pod)
    return type(pod.status) == "table" and str(pod.status.podIP) or nil
end

-- Kubernetes quantities (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/)
-- of the limits M.pod writes, read back: cpu in nano cpus, memory in bytes. The API server may rewrite them
-- in canonical form ("1" for "1000m", "64Mi" for "67108864"), so the suffixes are understood; anything
-- else gives nil. (Hand-written: a dozen lines, and no Debian Lua library parses quantities.)
local QUANTITY_UNITS = { [""] = 1, n = 1e-9, u = 1e-6, m = 1e-3, k = 1e3, M = 1e6, G = 1e9, T = 1e12,
    Ki = 1024, Mi = 1024 ^ 2, Gi = 1024 ^ 3, Ti = 1024 ^ 4 }

local function quantity(v, scale)
    if type(v) ~= "string" then
        return nil
    end
    local num, unit = v:match("^(%d+%.?%d*)(%a*)$")
    local mult = num and QUANTITY_UNITS[unit]
    if not mult then
        return nil
    end
    local n = math.tointeger(math.floor(tonumber(num) * mult * scale + 0.5))
    return n and n > 0 and n or nil
end

local function limits_of(c)
    local res = type(c.resources) == "table" and c.resources or {}
    local limits = type(res.limits) == "table" and res.limits or {}
    return quantity(limits.cpu, 1e9), quantity(limits.memory, 1)
end

--- The sandbox identity (the contract's list() `sandbox`) of a Pod object, or nil when it cannot be
--- adopted: no id label, no valid created-at, or neither a valid expires-at nor manual-cleanup = "true".
function M.identity_of(pod)
    local meta = type(pod.metadata) == "table" and pod.metadata or {}
    local labels = type(meta.labels) == "table" and meta.labels or {}
    local ann = type(meta.annotations) == "table" and meta.annotations or {}
    local id = str(labels[M.LABEL_ID])
    local created = timefmt.parse(ann[M.ANN.created])
    local expires = timefmt.parse(ann[M.ANN.expires])
    local manual = ann[M.ANN.manual] == "true"
    if not id or not created or not (expires or manual) then
        return nil
    end
    local md = str(ann[M.ANN.metadata]) and json.decode(ann[M.ANN.metadata])
    local spec = type(pod.spec) == "table" and pod.spec or {}
    local c = container_of(spec.containers) or {}
    local entrypoint = {}
    for i, a in ipairs(type(c.args) == "table" and c.args or {}) do
        entrypoint[i] = a
    end
    local s = {
        id = id,
        created_us = created,
        expires_us = (not manual) and expires or nil,
        image_uri = str(c.image) or "",
        entrypoint = entrypoint,
        metadata = type(md) == "table" and md or {},
        principal = str(ann[M.ANN.principal]),
        access_token = M.token_of(pod),
        pool = str(labels[M.LABEL_POOL]),
    }
    s.nano_cpus, s.memory = limits_of(c)
    if str(ann[M.ANN.platform_os]) then
        s.platform = { os = ann[M.ANN.platform_os], arch = ann[M.ANN.platform_arch] }
    end
    return s
end

return M
