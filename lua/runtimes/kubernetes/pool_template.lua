-- A warm pool's template on the Kubernetes runtime (pure, no I/O): upstream's Pool CRD takes a Kubernetes
-- PodTemplateSpec,
--
--   { "metadata": { "labels": {...}, "annotations": {...} },
--     "spec": { "containers": [ { "name", "image", "resources": { "limits": {...} }, "env": [ {name, value} ] },
--                               ...sidecars ],
--               ...the rest of a PodSpec } }
--
-- and so does this runtime (rt:pool_template, lua/runtimes/README.md "pools"). The first container is the
-- sandbox: its image, resources.limits (cpu, memory, nvidia.com/gpu) and env entries with a `value` become
-- the template the service validates and claims check against (the Docker-shaped {image, resourceLimits,
-- env}); what is left of it (workingDir, volumeMounts, env with valueFrom...) and the rest of the pod
-- template lie under the member's pod the way kubernetes.pod_template_file does (runtimes.kubernetes.template:
-- ours win, the operator's file wins over a pool's). Its `resources.requests` are dropped: a sandbox's
-- requests are its limits.
--
-- A pool template comes from a tenant, not from the operator: what would take a member out of its isolation
-- is refused (the host's namespaces or paths, privileged or added capabilities, another ServiceAccount or
-- its token), as are the claim's own fields (command, args: the entrypoint is each claim's).
--
--   parse(v)   -> false when `v` is not a PodTemplateSpec (the Docker-shaped template applies), or
--                 { body = {image, resourceLimits, env}, env_order = {names}, names = {field renames for
--                   messages}, template = {metadata = {labels, annotations}, spec} }, or nil, message
local json = require("common.json")
local template = require("runtimes.kubernetes.template")
local mapping = require("runtimes.kubernetes.mapping")

local is_object, is_array, absent = json.is_object, json.is_array, json.absent

local M = {}

-- the first container's limits the sandbox's resourceLimits are made of
M.LIMITS = { cpu = "cpu", memory = "memory", [mapping.GPU_RESOURCE] = "gpu" }

-- the first container's fields that are each claim's
local CLAIM_FIELDS = { "command", "args" }

-- PodSpec fields a tenant's template cannot set: the host's namespaces, and the identity the operator chose
local HOST_FIELDS = { "hostNetwork", "hostPID", "hostIPC" }
local IDENTITY_FIELDS = { "serviceAccountName", "serviceAccount", "automountServiceAccountToken" }

local function fail(fmt, ...)
    return nil, string.format(fmt, ...)
end

-- a quantity as a string ("1", "500m"); JSON numbers are accepted (1 -> "1", 0.5 -> "0.5")
local function quantity(v)
    if type(v) == "string" then
        return v
    end
    if math.type(v) == "integer" or (math.type(v) == "float" and v == math.floor(v)) then
        return string.format("%d", math.tointeger(v))
    end
    if type(v) == "number" then
        return string.format("%.9g", v)
    end
    return nil
end

local function copy(t)
    local out = {}
    for k, v in pairs(t) do
        out[k] = v
    end
    return out
end

-- a container's privileges: refused when privileged, escalating, or adding capabilities
local function check_security(c, where)
    local sc = c.securityContext
    if absent(sc) then
        return true
    end
    if not is_object(sc) then
        return fail("template.%s.securityContext must be an object.", where)
    end
    if sc.privileged == true then
        return fail("template.%s.securityContext.privileged is not allowed in a pool template.", where)
    end
    if sc.allowPrivilegeEscalation == true then
        return fail("template.%s.securityContext.allowPrivilegeEscalation is not allowed in a pool template.", where)
    end
    local caps = sc.capabilities
    if is_object(caps) and type(caps.add) == "table" and next(caps.add) ~= nil then
        return fail("template.%s.securityContext.capabilities.add is not allowed in a pool template.", where)
    end
    return true
end

local function check_volumes(vols)
    if absent(vols) then
        return true
    end
    if not is_array(vols) then
        return fail("template.spec.volumes must be an array.")
    end
    for i, v in ipairs(vols) do
        if not is_object(v) then
            return fail("template.spec.volumes[%d] must be an object.", i - 1)
        end
        if not absent(v.hostPath) then
            return fail("template.spec.volumes[%d].hostPath is not allowed in a pool template (use the pool's "
                .. "volumes with storage.allowed_host_paths).", i - 1)
        end
        if v.name == mapping.AGENT_VOLUME then
            return fail("template.spec.volumes[%d]: the name '%s' is reserved for the sandbox agent.", i - 1, v.name)
        end
        local sources = is_object(v.projected) and v.projected.sources
        for _, s in ipairs(type(sources) == "table" and sources or {}) do
            if is_object(s) and not absent(s.serviceAccountToken) then
                return fail("template.spec.volumes[%d].projected: a serviceAccountToken is not allowed in a pool "
                    .. "template.", i - 1)
            end
        end
    end
    return true
end

-- the labels or annotations of the template's metadata: an object of strings
local function string_map(v, where)
    if absent(v) then
        return true
    end
    if not is_object(v) then
        return fail("template.metadata.%s must be an object of strings.", where)
    end
    for k, x in pairs(v) do
        if type(x) ~= "string" then
            return fail("template.metadata.%s.%s must be a string.", where, k)
        end
    end
    return true
end

-- the first container: its image, limits and env values taken out; what is left lies under ours
local function sandbox_container(c)
    local where = "spec.containers[0]"
    if not is_object(c) then
        return fail("template.%s must be an object.", where)
    end
    for _, f in ipairs(CLAIM_FIELDS) do
        if not absent(c[f]) and not (type(c[f]) == "table" and next(c[f]) == nil) then -- ([] says nothing)
            return fail("template.%s.%s is not part of a pool template: set entrypoint on each create with "
                .. "extensions.poolRef.", where, f)
        end
    end
    if type(c.image) ~= "string" or c.image == "" then
        return fail("template.%s.image is required (a non-empty string).", where)
    end
    local limits = {}
    local res = c.resources
    if not absent(res) then
        if not is_object(res) then
            return fail("template.%s.resources must be an object.", where)
        end
        if not absent(res.limits) then
            if not is_object(res.limits) then
                return fail("template.%s.resources.limits must be an object.", where)
            end
            for k, v in pairs(res.limits) do
                local ours = M.LIMITS[k]
                if not ours then
                    return fail("template.%s.resources.limits.%s is not supported: only cpu, memory and %s.",
                        where, k, mapping.GPU_RESOURCE)
                end
                local q = quantity(v)
                if not q then
                    return fail("template.%s.resources.limits.%s must be a quantity (a string such as '500m').",
                        where, k)
                end
                limits[ours] = q
            end
        end
    end
    local env, order, rest_env = {}, {}, json.array()
    if not absent(c.env) then
        if not is_array(c.env) then
            return fail("template.%s.env must be an array of {name, value}.", where)
        end
        for i, e in ipairs(c.env) do
            if not is_object(e) or type(e.name) ~= "string" or e.name == "" then
                return fail("template.%s.env[%d] must be an object with a non-empty name.", where, i - 1)
            end
            if not absent(e.valueFrom) then
                rest_env[#rest_env + 1] = e -- (a reference the kubelet resolves: it lies under ours)
            elseif absent(e.value) then
                env[e.name] = ""
                order[#order + 1] = e.name
            elseif type(e.value) ~= "string" then
                return fail("template.%s.env[%d].value must be a string.", where, i - 1)
            else
                env[e.name] = e.value
                order[#order + 1] = e.name
            end
        end
    end
    local ok, err = check_security(c, where)
    if not ok then
        return nil, err
    end
    local rest = copy(c)
    rest.image, rest.resources, rest.env = nil, nil, #rest_env > 0 and rest_env or nil
    rest.command, rest.args = nil, nil
    rest.name = mapping.CONTAINER -- (it lies under our container, whatever the template called it)
    return { image = c.image, limits = limits, env = env, order = order, rest = rest }
end

--- The PodTemplateSpec `v` (a decoded JSON object) as a pool template: false when `v` is not one (no
--- `spec` nor `metadata`), the parts (see the top), or nil and a message for a 400.
function M.parse(v)
    if not is_object(v) or (absent(v.spec) and absent(v.metadata)) then
        return false
    end
    for _, f in ipairs({ "image", "resourceLimits", "env", "volumes", "networkPolicy" }) do
        if not absent(v[f]) then
            return fail("template.%s cannot be combined with a PodTemplateSpec (template.spec): set the first "
                .. "container's fields, or use {image, resourceLimits, env} without spec.", f)
        end
    end
    local meta = v.metadata
    if not absent(meta) and not is_object(meta) then
        return fail("template.metadata must be an object.")
    end
    meta = is_object(meta) and meta or {}
    local ok, err = string_map(meta.labels, "labels")
    if ok then
        ok, err = string_map(meta.annotations, "annotations")
    end
    if not ok then
        return nil, err
    end
    local spec = v.spec
    if not is_object(spec) then
        return fail("template.spec must be an object (a PodSpec).")
    end
    if not is_array(spec.containers) or #spec.containers == 0 then
        return fail("template.spec.containers must be a non-empty array: the first container is the sandbox.")
    end
    for _, f in ipairs(HOST_FIELDS) do
        if spec[f] == true then
            return fail("template.spec.%s is not allowed in a pool template.", f)
        end
    end
    for _, f in ipairs(IDENTITY_FIELDS) do
        if not absent(spec[f]) then
            return fail("template.spec.%s is not allowed in a pool template (the server's "
                .. "kubernetes.service_account applies).", f)
        end
    end
    ok, err = check_volumes(spec.volumes)
    if not ok then
        return nil, err
    end
    for _, list in ipairs({ "containers", "initContainers", "ephemeralContainers" }) do
        local cs = spec[list]
        if not absent(cs) then
            if not is_array(cs) then
                return fail("template.spec.%s must be an array.", list)
            end
            for i, c in ipairs(cs) do
                if list ~= "containers" or i > 1 then -- (the first container: sandbox_container below)
                    local where = string.format("spec.%s[%d]", list, i - 1)
                    if not is_object(c) then
                        return fail("template.%s must be an object.", where)
                    end
                    ok, err = check_security(c, where)
                    if not ok then
                        return nil, err
                    end
                    if c.name == mapping.CONTAINER then
                        return fail("template.%s: the name '%s' is the sandbox's (the first container's).", where,
                            c.name)
                    end
                end
            end
        end
    end
    local first, ferr = sandbox_container(spec.containers[1])
    if not first then
        return nil, ferr
    end
    local containers = json.array({ first.rest })
    for i = 2, #spec.containers do
        containers[#containers + 1] = spec.containers[i]
    end
    local pod_spec = copy(spec)
    pod_spec.containers = containers
    -- through the same cleaning as the operator's file (nulls and empty collections dropped, arrays marked),
    -- with its labels and annotations under opensandbox.io/ dropped (the identity is ours alone)
    local tpl = template.from_object({ metadata = meta, spec = pod_spec })
    return {
        body = { image = { uri = first.image }, resourceLimits = first.limits, env = first.env },
        env_order = first.order,
        names = { { "image.uri", "spec.containers[0].image" },
            { "resourceLimits", "spec.containers[0].resources.limits" }, { "env", "spec.containers[0].env" } },
        template = tpl,
    }
end

return M
