-- Unit specs of runtimes.kubernetes.mapping and runtimes.kubernetes.template (pure): the Pod manifest of a
-- sandbox field by field, the operator's template under it, the agent ConfigMap, the pull Secret, the
-- status of a Pod in the API's vocabulary, and the identity read back from a pod.
local mapping = require("runtimes.kubernetes.mapping")
local template = require("runtimes.kubernetes.template")
local base64 = require("common.base64")
local json = require("common.json")
local schema = require("config.schema")

local ID = "5d41402a-bc4b-4a76-b971-9d911017c592"
local CREATED_US = 1767225600123456 -- 2026-01-01T00:00:00.123456Z
local EXPIRES_US = CREATED_US + 3600 * 1000000

local function sandbox(over)
    local s = { id = ID, created_us = CREATED_US, expires_us = EXPIRES_US, metadata = { team = "a" },
        principal = "team-a", access_token = "tok123" }
    for k, v in pairs(over or {}) do
        s[k] = v
    end
    return s
end

local function spec(over)
    local s = { image = { uri = "python:3.12" }, entrypoint = { "python", "-m", "http.server" },
        env = { { "B", "2" }, { "A", "1" }, { "EXECD_ACCESS_TOKEN", "forged" }, { "OPENSANDBOX_EXECD_PORT", "1" } },
        nano_cpus = 500000000, memory = 536870912 }
    for k, v in pairs(over or {}) do
        s[k] = v
    end
    return s
end

local OPTS = { agent_configmap = "opensandbox-agent-abc", agent_has_execd = true }

-- the manifest as the API server would receive it (encoded, then decoded)
local function pod_json(sb, sp, opts)
    local p = assert(mapping.pod(sb or sandbox(), sp or spec(), opts or OPTS))
    return json.decode(json.encode(p))
end

describe("kubernetes pod manifest", function()
    it("names the pod sandbox-<id>, or the name a hook chose", function()
        assert.equal("sandbox-" .. ID, pod_json().metadata.name)
        assert.equal("my-box", pod_json(sandbox({ name = "my-box" })).metadata.name)
    end)

    it("labels the id and the manager, and the instance when configured", function()
        assert.same({ ["opensandbox.io/id"] = ID, ["opensandbox.io/managed-by"] = "opensandbox-server" },
            pod_json().metadata.labels)
        local opts = { agent_configmap = "cm", instance = "blue" }
        assert.equal("blue", pod_json(nil, nil, opts).metadata.labels["opensandbox.io/instance"])
    end)

    it("annotates created-at, expires-at, metadata and principal; manual cleanup instead of expires-at", function()
        assert.same({
            ["opensandbox.io/created-at"] = "2026-01-01T00:00:00.123456Z",
            ["opensandbox.io/expires-at"] = "2026-01-01T01:00:00.123456Z",
            ["opensandbox.io/metadata"] = '{"team":"a"}',
            ["opensandbox.io/principal"] = "team-a",
        }, pod_json().metadata.annotations)
        local ann = pod_json(sandbox({ expires_us = false, metadata = {}, principal = false })).metadata.annotations
        assert.same({ ["opensandbox.io/created-at"] = "2026-01-01T00:00:00.123456Z",
            ["opensandbox.io/manual-cleanup"] = "true" }, ann)
    end)

    it("never puts the agent's token in metadata, only in the container's env", function()
        local p = pod_json()
        assert.is_nil(json.encode(p.metadata):find("tok123", 1, true))
        assert.equal("tok123", mapping.token_of(p))
    end)

    it("runs the image through the bootstrap with the entrypoint as args", function()
        local c = pod_json().spec.containers[1]
        assert.equal("sandbox", c.name)
        assert.equal("python:3.12", c.image)
        assert.equal("IfNotPresent", c.imagePullPolicy)
        assert.same({ "/opt/opensandbox/bootstrap.sh" }, c.command)
        assert.same({ "python", "-m", "http.server" }, c.args)
        local opts = { agent_configmap = "cm", image_pull_policy = "Never" }
        assert.equal("Never", pod_json(nil, nil, opts).spec.containers[1].imagePullPolicy)
    end)

    it("keeps the env in request order, then the agent's port and token (the server's own win)", function()
        assert.same({
            { name = "B", value = "2" }, { name = "A", value = "1" },
            { name = "OPENSANDBOX_EXECD_PORT", value = "44772" }, { name = "EXECD_ACCESS_TOKEN", value = "tok123" },
        }, pod_json().spec.containers[1].env)
    end)

    it("asks for the cpu in millicores and the memory in bytes, as requests and limits", function()
        local r = pod_json().spec.containers[1].resources
        assert.same({ cpu = "500m", memory = "536870912" }, r.limits)
        assert.same(r.limits, r.requests)
        r = pod_json(nil, spec({ nano_cpus = 10000001, memory = false })).spec.containers[1].resources
        assert.same({ cpu = "11m" }, r.limits) -- rounded up to whole millicores
        assert.is_nil(pod_json(nil, spec({ nano_cpus = false, memory = false })).spec.containers[1].resources)
        r = pod_json(nil, spec({ gpu = 2 })).spec.containers[1].resources
        assert.equal("2", r.limits["nvidia.com/gpu"])
        local p, err = mapping.pod(sandbox(), spec({ gpu = -1 }), OPTS)
        assert.is_nil(p)
        assert.matches("gpu 'all' is not supported on Kubernetes", err, 1, true)
    end)

    it("locks the pod down: Never restart, no service account token, no service links, no escalation", function()
        local p = pod_json(nil, nil, { agent_configmap = "cm", service_account = "sandboxes" })
        assert.equal("Never", p.spec.restartPolicy)
        assert.is_false(p.spec.automountServiceAccountToken)
        assert.is_false(p.spec.enableServiceLinks)
        assert.equal("sandboxes", p.spec.serviceAccountName)
        local sc = p.spec.containers[1].securityContext
        assert.is_false(sc.allowPrivilegeEscalation)
        assert.same(schema.DEFAULT_CAP_DROP, sc.capabilities.drop)
        assert.same({ type = "RuntimeDefault" }, sc.seccompProfile)
        assert.is_nil(pod_json().spec.serviceAccountName)
        -- an empty drop list stays a list
        local enc = json.encode(assert(mapping.pod(sandbox(), spec(),
            { agent_configmap = "cm", drop_capabilities = {} })))
        assert.truthy(enc:find('"drop":[]', 1, true))
    end)

    it("mounts the agent ConfigMap read-only at /opt/opensandbox with executable files", function()
        local p = pod_json()
        assert.same({ { name = "opensandbox-agent", mountPath = "/opt/opensandbox", readOnly = true } },
            p.spec.containers[1].volumeMounts)
        assert.same({ { name = "opensandbox-agent", configMap = { name = "opensandbox-agent-abc", defaultMode = 493,
            items = { { key = "bootstrap.sh", path = "bootstrap.sh", mode = 493 },
                { key = "execd", path = "execd", mode = 493 } } } } }, p.spec.volumes)
        -- without an agent binary only the bootstrap is mounted
        local items = pod_json(nil, nil, { agent_configmap = "cm" }).spec.volumes[1].configMap.items
        assert.same({ { key = "bootstrap.sh", path = "bootstrap.sh", mode = 493 } }, items)
    end)

    it("references the pull secret, and selects nodes of the requested platform", function()
        local p = pod_json(sandbox({ platform = { os = "linux", arch = "arm64" } }), spec(),
            { agent_configmap = "cm", pull_secret = "sandbox-x-pull" })
        assert.same({ { name = "sandbox-x-pull" } }, p.spec.imagePullSecrets)
        assert.same({ ["kubernetes.io/os"] = "linux", ["kubernetes.io/arch"] = "arm64" }, p.spec.nodeSelector)
        assert.equal("arm64", p.metadata.annotations["opensandbox.io/platform-arch"])
        assert.is_nil(pod_json().spec.imagePullSecrets)
        assert.is_nil(pod_json().spec.nodeSelector)
    end)
end)

describe("kubernetes pod template", function()
    local YAML = [[
apiVersion: v1
kind: Pod
metadata:
  name: ignored
  labels:
    team: infra
    opensandbox.io/id: forged
  annotations:
    cluster-autoscaler.kubernetes.io/safe-to-evict: "false"
spec:
  runtimeClassName: gvisor
  restartPolicy: Always
  nodeSelector:
    pool: sandboxes
    kubernetes.io/arch: amd64
  tolerations:
  - key: sandbox
    operator: Exists
    effect: NoSchedule
  imagePullSecrets: []
  volumes:
  - name: scratch
    emptyDir: {}
  containers:
  - name: sandbox
    image: ignored
    env:
    - name: TZ
      value: UTC
    - name: A
      value: from-template
    securityContext:
      readOnlyRootFilesystem: false
      allowPrivilegeEscalation: true
  - name: logger
    image: fluent-bit
]]

    it("merges under ours: template fields kept, ours win on every conflict", function()
        local t = assert(template.parse(YAML, "t.yaml"))
        local p = json.decode(json.encode(assert(mapping.pod(sandbox({ platform = { os = "linux", arch = "arm64" } }),
            spec(), { agent_configmap = "cm", template = t }))))
        assert.equal("sandbox-" .. ID, p.metadata.name)
        assert.equal("infra", p.metadata.labels.team)
        assert.equal(ID, p.metadata.labels["opensandbox.io/id"]) -- reserved keys are ours alone
        assert.equal("false", p.metadata.annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"])
        assert.equal("2026-01-01T00:00:00.123456Z", p.metadata.annotations["opensandbox.io/created-at"])
        assert.equal("gvisor", p.spec.runtimeClassName)
        assert.equal("Never", p.spec.restartPolicy)
        assert.same({ pool = "sandboxes", ["kubernetes.io/arch"] = "arm64", ["kubernetes.io/os"] = "linux" },
            p.spec.nodeSelector)
        assert.same({ { key = "sandbox", operator = "Exists", effect = "NoSchedule" } }, p.spec.tolerations)
        assert.is_nil(p.spec.imagePullSecrets) -- an empty YAML list is dropped
        -- named lists merge by name: ours first, then the template's others
        assert.same({ "opensandbox-agent", "scratch" }, { p.spec.volumes[1].name, p.spec.volumes[2].name })
        assert.same({ "sandbox", "logger" }, { p.spec.containers[1].name, p.spec.containers[2].name })
        local c = p.spec.containers[1]
        assert.equal("python:3.12", c.image)
        local env = {}
        for _, e in ipairs(c.env) do
            env[#env + 1] = e.name .. "=" .. e.value
        end
        assert.same({ "B=2", "A=1", "OPENSANDBOX_EXECD_PORT=44772", "EXECD_ACCESS_TOKEN=tok123", "TZ=UTC" }, env)
        assert.is_false(c.securityContext.allowPrivilegeEscalation)
        assert.is_false(c.securityContext.readOnlyRootFilesystem)
        assert.same({ type = "RuntimeDefault" }, c.securityContext.seccompProfile)
    end)

    it("accepts a PodTemplate and refuses what is not a pod", function()
        local t = assert(template.parse("kind: PodTemplate\ntemplate:\n  spec:\n    priorityClassName: low\n", "x"))
        assert.equal("low", t.spec.priorityClassName)
        assert.equal("pod template x: kind Deployment is neither Pod nor PodTemplate",
            select(2, template.parse("kind: Deployment\n", "x")))
        assert.equal("pod template x: not a mapping", select(2, template.parse("- a\n", "x")))
        assert.matches("^pod template x: invalid YAML", select(2, template.parse("spec: [", "x")))
        assert.equal("pod template /t: cannot be read: gone", select(2, template.load("/t", function()
            return nil, "gone"
        end)))
    end)
end)

describe("kubernetes agent ConfigMap and pull Secret", function()
    it("holds the agent's files as base64 binaryData, immutable, labelled with the tag", function()
        local cm = mapping.agent_configmap("opensandbox-agent-abc", { bootstrap = "#!/bin/sh\n", execd = "\127ELF" },
            "abc", "blue")
        assert.equal("ConfigMap", cm.kind)
        assert.equal("opensandbox-agent-abc", cm.metadata.name)
        assert.is_true(cm.immutable)
        assert.equal("#!/bin/sh\n", base64.decode(cm.binaryData["bootstrap.sh"]))
        assert.equal("\127ELF", base64.decode(cm.binaryData.execd))
        assert.same({ ["opensandbox.io/managed-by"] = "opensandbox-server", ["opensandbox.io/agent-tag"] = "abc",
            ["opensandbox.io/instance"] = "blue" }, cm.metadata.labels)
    end)

    it("writes a dockerconfigjson Secret for the image's registry, owned by the pod once it exists", function()
        local s = mapping.pull_secret("sandbox-x-pull", ID, "registry.example.com:5000/team/app:1",
            { username = "u", password = "p" })
        assert.equal("kubernetes.io/dockerconfigjson", s.type)
        assert.equal("sandbox-x-pull", s.metadata.name)
        assert.equal(ID, s.metadata.labels["opensandbox.io/id"])
        local cfg = json.decode(base64.decode(s.data[".dockerconfigjson"]))
        assert.same({ username = "u", password = "p", auth = base64.encode("u:p") },
            cfg.auths["registry.example.com:5000"])
        local hub = json.decode(mapping.dockerconfigjson("python:3.12", { username = "u", password = "p" }))
        assert.is_table(hub.auths["https://index.docker.io/v1/"])
        assert.same({ metadata = { ownerReferences = { { apiVersion = "v1", kind = "Pod", name = "sandbox-x",
            uid = "uid-1" } } } },
            json.decode(json.encode(mapping.owner_patch({ metadata = { name = "sandbox-x", uid = "uid-1" } }))))
    end)
end)

describe("kubernetes pod status", function()
    local function pod(status, meta)
        return { metadata = meta or { name = "p" }, status = status }
    end
    local function container(state)
        return { containerStatuses = { { name = "sandbox", state = state } } }
    end
    local function st(p)
        return { mapping.status_of(p) }
    end

    it("Pending while scheduled or creating", function()
        assert.same({ "Pending", "CONTAINER_STARTING", "Sandbox container is starting." },
            st(pod({ phase = "Pending" })))
        local s = container({ waiting = { reason = "ContainerCreating" } })
        s.phase = "Pending"
        assert.same({ "Pending", "CONTAINER_STARTING", "Sandbox container is starting." }, st(pod(s)))
        assert.same({ "Pending", "CONTAINER_STARTING", "Sandbox container is starting." }, st(pod(nil)))
    end)

    it("Failed for a waiting reason the container will not get past, with the reason in the message", function()
        local reasons = { "ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "InvalidImageName" }
        for _, reason in ipairs(reasons) do
            local s = container({ waiting = { reason = reason, message = "the kubelet's words" } })
            s.phase = "Pending"
            assert.same({ "Failed", "CONTAINER_EXITED_ERROR",
                "Sandbox container cannot start: " .. reason .. ": the kubelet's words" }, st(pod(s)))
        end
        local step, reason = mapping.waiting_failure(pod(container({ waiting = { reason = "ErrImagePull" } })))
        assert.same({ "image", "ErrImagePull" }, { step, reason })
        assert.equal("create", (mapping.waiting_failure(pod(container({
            waiting = { reason = "CreateContainerConfigError" } })))))
        assert.is_nil(mapping.waiting_failure(pod(container({ waiting = { reason = "ContainerCreating" } }))))
    end)

    it("Running when the container runs (ready or not), at its start time", function()
        local s = container({ running = { startedAt = "2026-01-01T00:00:05Z" } })
        s.phase = "Running"
        s.conditions = { { type = "Ready", status = "False" } }
        assert.same({ "Running", "CONTAINER_RUNNING", "Sandbox container is running.", CREATED_US - 123456 + 5000000 },
            st(pod(s)))
    end)

    it("Terminated on exit 0, Failed otherwise, noting an OOM kill", function()
        local at = "2026-01-01T00:01:00Z"
        assert.same({ "Terminated", "CONTAINER_EXITED", "Sandbox container exited successfully.",
            CREATED_US - 123456 + 60000000 },
            st(pod(container({ terminated = { exitCode = 0, reason = "Completed", finishedAt = at } }))))
        assert.same({ "Failed", "CONTAINER_EXITED_ERROR", "Sandbox container exited with code 3." },
            { mapping.status_of(pod(container({ terminated = { exitCode = 3, reason = "Error" } }))) })
        assert.same({ "Failed", "CONTAINER_EXITED_ERROR", "Sandbox container exited with code 137 (out of memory)." },
            { mapping.status_of(pod(container({ terminated = { exitCode = 137, reason = "OOMKilled" } }))) })
    end)

    it("Failed when evicted, Stopping when being deleted (before anything else)", function()
        local s = container({ running = { startedAt = "2026-01-01T00:00:05Z" } })
        s.phase, s.reason, s.message = "Failed", "Evicted", "The node was low on resource: memory."
        assert.same({ "Failed", "CONTAINER_EXITED_ERROR",
            "Sandbox pod was evicted: The node was low on resource: memory." },
            st(pod(s)))
        assert.same({ "Stopping", "CONTAINER_REMOVING", "Sandbox is being deleted." },
            st(pod(s, { name = "p", deletionTimestamp = "2026-01-01T00:02:00Z" })))
    end)

    it("by phase when the container says nothing; nil for Unknown", function()
        assert.same({ "Terminated", "CONTAINER_EXITED", "Sandbox container exited successfully." },
            st(pod({ phase = "Succeeded" })))
        assert.same({ "Failed", "CONTAINER_EXITED_ERROR", "Sandbox pod failed: DeadlineExceeded" },
            st(pod({ phase = "Failed", message = "DeadlineExceeded" })))
        assert.same({}, st(pod({ phase = "Unknown" })))
    end)

    it("explains a pod that is still pending", function()
        assert.equal("Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.", mapping.pending_detail(pod({
            phase = "Pending",
            conditions = { { type = "PodScheduled", status = "False", reason = "Unschedulable",
                message = "0/3 nodes are available: 3 Insufficient cpu." } } })))
        assert.equal("ContainerCreating", mapping.pending_detail(pod(container({
            waiting = { reason = "ContainerCreating" } }))))
    end)
end)

describe("kubernetes identity", function()
    it("reads back what the manifest wrote", function()
        local p = pod_json(sandbox({ platform = { os = "linux", arch = "amd64" } }))
        assert.same({
            id = ID,
            created_us = CREATED_US,
            expires_us = EXPIRES_US,
            image_uri = "python:3.12",
            entrypoint = { "python", "-m", "http.server" },
            metadata = { team = "a" },
            principal = "team-a",
            platform = { os = "linux", arch = "amd64" },
            access_token = "tok123",
            nano_cpus = 500000000,
            memory = 536870912,
        }, mapping.identity_of(p))
        local manual = mapping.identity_of(pod_json(sandbox({ expires_us = false, metadata = {} })))
        assert.is_nil(manual.expires_us)
        assert.same({}, manual.metadata)
    end)

    it("reads the limits back in the API server's canonical forms (restored sandboxes count them)", function()
        local cases = {
            { "1", "64Mi", 1000000000, 67108864 },
            { "250m", "1Gi", 250000000, 1073741824 },
            { "1.5", "2G", 1500000000, 2000000000 },
            { "100000u", "1000k", 100000000, 1000000 },
        }
        for _, c in ipairs(cases) do
            local p = pod_json()
            p.spec.containers[1].resources.limits.cpu = c[1]
            p.spec.containers[1].resources.limits.memory = c[2]
            local s = mapping.identity_of(p)
            assert.equal(c[3], s.nano_cpus, c[1])
            assert.equal(c[4], s.memory, c[2])
            assert.equal("integer", math.type(s.nano_cpus))
        end
        local p = pod_json()
        p.spec.containers[1].resources = nil
        local s = mapping.identity_of(p)
        assert.is_nil(s.nano_cpus)
        assert.is_nil(s.memory)
        p.spec.containers[1].resources = { limits = { cpu = "lots", memory = "-5" } }
        s = mapping.identity_of(p)
        assert.is_nil(s.nano_cpus)
        assert.is_nil(s.memory)
    end)

    it("is nil when the pod cannot be adopted", function()
        local p = pod_json()
        p.metadata.annotations["opensandbox.io/created-at"] = "yesterday"
        assert.is_nil(mapping.identity_of(p))
        p = pod_json()
        p.metadata.annotations["opensandbox.io/expires-at"] = nil
        assert.is_nil(mapping.identity_of(p))
        p = pod_json()
        p.metadata.labels["opensandbox.io/id"] = nil
        assert.is_nil(mapping.identity_of(p))
    end)
end)

describe("kubernetes warm pool members", function()
    local pool_template = require("runtimes.kubernetes.pool_template")

    local function env_of(p)
        local out = {}
        for _, e in ipairs(p.spec.containers[1].env) do
            out[#out + 1] = e.name .. "=" .. tostring(e.value)
        end
        return out
    end

    it("waits for its claim (OPENSANDBOX_POOL_MEMBER=1, no args) and is labelled with its pool", function()
        local p = pod_json(sandbox({ pool = "py" }), spec({ pool_member = true,
            env = { { "T", "1" }, { "OPENSANDBOX_POOL_MEMBER", "0" } } }))
        assert.equal("py", p.metadata.labels["opensandbox.io/pool"])
        assert.same({}, p.spec.containers[1].args)
        assert.same({ "/opt/opensandbox/bootstrap.sh" }, p.spec.containers[1].command)
        assert.same({ "T=1", "OPENSANDBOX_EXECD_PORT=44772", "OPENSANDBOX_POOL_MEMBER=1", "EXECD_ACCESS_TOKEN=tok123" },
            env_of(p))
        -- read back: the identity carries the pool (a restarted server adopts its members)
        p.status = { podIP = "10.244.0.9" }
        assert.equal("py", mapping.identity_of(p).pool)
        -- a cold sandbox has neither
        p = pod_json()
        assert.is_nil(p.metadata.labels["opensandbox.io/pool"])
        assert.same({ "python", "-m", "http.server" }, p.spec.containers[1].args)
        for _, e in ipairs(env_of(p)) do
            assert.is_nil(e:find("POOL", 1, true), e)
        end
        assert.is_nil(mapping.identity_of(p).pool)
    end)

    -- a pool's PodTemplateSpec, as a request decodes it
    local function pts(over)
        local t = json.decode([[{
          "metadata": {"labels": {"team": "ml", "opensandbox.io/id": "forged"}, "annotations": {"note": "n"}},
          "spec": {
            "nodeSelector": {"pool": "warm"},
            "tolerations": [{"key": "warm", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 5,
            "containers": [
              {"name": "main", "image": "python:3.12", "workingDir": "/work",
               "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m"}},
               "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"},
                       {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
              {"name": "side", "image": "busybox", "command": ["sleep", "1d"]}
            ]
          }
        }]])
        for k, v in pairs(over or {}) do
            t[k] = v
        end
        return t
    end

    it("turns a PodTemplateSpec into the template's image, limits and env, in order", function()
        local got = assert(pool_template.parse(pts()))
        assert.same({ image = { uri = "python:3.12" }, resourceLimits = { cpu = "500m", memory = "256Mi" },
            env = { B = "2", A = "1" } }, got.body)
        assert.same({ "B", "A" }, got.env_order)
        -- the rest: the first container (renamed to ours, without image, resources and env values), the sidecar
        local c = got.template.spec.containers
        assert.equal(2, #c)
        assert.equal("sandbox", c[1].name)
        assert.equal("/work", c[1].workingDir)
        assert.is_nil(c[1].image)
        assert.is_nil(c[1].resources)
        assert.same({ { name = "POD", valueFrom = { fieldRef = { fieldPath = "metadata.name" } } } }, c[1].env)
        assert.equal("side", c[2].name)
        assert.same({ team = "ml" }, got.template.metadata.labels, "opensandbox.io/ labels are dropped")
        -- numbers as quantities; a GPU limit
        got = assert(pool_template.parse(json.decode([[{"spec": {"containers": [{"image": "x",
            "resources": {"limits": {"cpu": 1, "memory": "1Gi", "nvidia.com/gpu": 2}}}]}}]])))
        assert.same({ cpu = "1", memory = "1Gi", gpu = "2" }, got.body.resourceLimits)
        -- the Docker-shaped template is not one
        assert.is_false(pool_template.parse({ image = { uri = "x" }, resourceLimits = {} }))
    end)

    it("lays the pool's template under the operator's, and both under ours", function()
        local got = assert(pool_template.parse(pts()))
        local operator = assert(template.parse("spec:\n  nodeSelector:\n    pool: operator\n  priorityClassName: low\n",
            "op.yaml"))
        local p = json.decode(json.encode(assert(mapping.pod(sandbox({ pool = "py" }),
            spec({ pool_member = true, runtime_template = got.template }),
            { agent_configmap = "cm", template = operator }))))
        assert.equal("operator", p.spec.nodeSelector.pool, "the operator's file wins over a pool's template")
        assert.equal("low", p.spec.priorityClassName)
        assert.equal(5, p.spec.terminationGracePeriodSeconds)
        assert.equal("warm", p.spec.tolerations[1].key)
        assert.equal("ml", p.metadata.labels.team)
        assert.equal(ID, p.metadata.labels["opensandbox.io/id"])
        assert.equal("n", p.metadata.annotations.note)
        local c = p.spec.containers
        assert.equal(2, #c)
        assert.equal("sandbox", c[1].name)
        assert.equal("python:3.12", c[1].image)
        assert.equal("/work", c[1].workingDir)
        assert.same({ "/opt/opensandbox/bootstrap.sh" }, c[1].command)
        assert.equal(false, c[1].securityContext.allowPrivilegeEscalation)
        local names = {}
        for _, e in ipairs(c[1].env) do
            names[#names + 1] = e.name
        end
        assert.same({ "B", "A", "OPENSANDBOX_EXECD_PORT", "OPENSANDBOX_POOL_MEMBER", "EXECD_ACCESS_TOKEN", "POD" },
            names)
        assert.equal("side", c[2].name)
        -- without a pool's template: the operator's alone, as before
        p = json.decode(json.encode(assert(mapping.pod(sandbox(), spec(),
            { agent_configmap = "cm", template = operator }))))
        assert.is_nil(p.spec.tolerations)
    end)

    it("refuses what a pool's template cannot set, with the field named", function()
        local function refused(t, msg)
            local got, err = pool_template.parse(t)
            assert.is_nil(got)
            assert.equal(msg, err)
        end
        local function spec_with(fields, first)
            local s = { containers = { first or { image = "x" } } }
            for k, v in pairs(fields) do
                s[k] = v
            end
            return { spec = s }
        end
        refused({ metadata = {} }, "template.spec must be an object (a PodSpec).")
        refused({ spec = { containers = {} } },
            "template.spec.containers must be a non-empty array: the first container is the sandbox.")
        refused(spec_with({}, { name = "main" }), "template.spec.containers[0].image is required (a non-empty string).")
        refused(spec_with({}, { image = "x", command = { "sh" } }), "template.spec.containers[0].command is not part "
            .. "of a pool template: set entrypoint on each create with extensions.poolRef.")
        refused(spec_with({}, { image = "x", resources = { limits = { ["ephemeral-storage"] = "1Gi" } } }),
            "template.spec.containers[0].resources.limits.ephemeral-storage is not supported: only cpu, memory and "
                .. "nvidia.com/gpu.")
        refused(spec_with({}, { image = "x", env = { { name = "A", value = 1 } } }),
            "template.spec.containers[0].env[0].value must be a string.")
        refused(spec_with({ hostNetwork = true }), "template.spec.hostNetwork is not allowed in a pool template.")
        refused(spec_with({ hostPID = true }), "template.spec.hostPID is not allowed in a pool template.")
        refused(spec_with({ serviceAccountName = "admin" }), "template.spec.serviceAccountName is not allowed in a "
            .. "pool template (the server's kubernetes.service_account applies).")
        refused(spec_with({ volumes = { { name = "h", hostPath = { path = "/" } } } }), "template.spec.volumes[0]."
            .. "hostPath is not allowed in a pool template (use the pool's volumes with storage.allowed_host_paths).")
        refused(spec_with({ volumes = { { name = "t", projected = { sources = { { serviceAccountToken = {
            path = "t" } } } } } } }), "template.spec.volumes[0].projected: a serviceAccountToken is not allowed in "
            .. "a pool template.")
        refused(spec_with({}, { image = "x", securityContext = { privileged = true } }),
            "template.spec.containers[0].securityContext.privileged is not allowed in a pool template.")
        refused(spec_with({ containers = { { image = "x" }, { name = "s", image = "y",
            securityContext = { capabilities = { add = { "SYS_ADMIN" } } } } } }),
            "template.spec.containers[1].securityContext.capabilities.add is not allowed in a pool template.")
        refused(spec_with({ initContainers = { { name = "i", image = "y",
            securityContext = { allowPrivilegeEscalation = true } } } }),
            "template.spec.initContainers[0].securityContext.allowPrivilegeEscalation is not allowed in a pool "
                .. "template.")
        refused(spec_with({ containers = { { image = "x" }, { name = "sandbox", image = "y" } } }),
            "template.spec.containers[1]: the name 'sandbox' is the sandbox's (the first container's).")
        refused({ image = { uri = "x" }, spec = { containers = { { image = "x" } } } }, "template.image cannot be "
            .. "combined with a PodTemplateSpec (template.spec): set the first container's fields, or use {image, "
            .. "resourceLimits, env} without spec.")
    end)
end)
