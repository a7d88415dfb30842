-- The pure half of the Docker adapter: how a sandbox maps onto Docker objects and back, with no I/O.
--   labels_for(rec)              the immutable §8.3 labels of a sandbox
--   create_body(spec, config)    the POST /containers/create body of §8.2, as JSON text
--   normalize_inspect(doc, mode) GET /containers/{id}/json -> the adapter's flat inspect result
--   status_of(ins)               the §3.2 state/reason/message/at of an inspect result
local json = require("common.json")
local timefmt = require("common.timefmt")

local M = {}

M.AGENT_PORT = 44772
M.HTTP_PORT = 8080
M.BOOTSTRAP = "/opt/opensandbox/bootstrap.sh"
-- where a pool member sees its claim directory (runtimes/docker/pool_claims.lua)
M.CLAIM_MOUNT = "/run/opensandbox-pool"
M.LABEL_PREFIX = "opensandbox.io/"
M.LABEL_ID = "opensandbox.io/id"
-- The identity of the server that made the container (docker.instance, else the UUID kept in its store):
-- servers sharing one daemon see only their own containers.
M.LABEL_INSTANCE = "opensandbox.io/instance"
-- The snapshot a sandbox was made from (and, on a snapshot's image, the snapshot's own id).
M.LABEL_SNAPSHOT = "opensandbox.io/snapshot-id"
M.LABEL_POOL = "opensandbox.io/pool" -- a warm pool's member (and, once claimed, the sandbox it became)

-- §8.5 and §9 defaults, used for keys the (already validated) config leaves nil.
M.DEFAULT_CONFIG = {
    network_mode = "bridge",
    host_ip = "127.0.0.1",
    drop_capabilities = {
        "AUDIT_WRITE", "MKNOD", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE", "SYS_TIME",
        "SYS_TTY_CONFIG",
    },
    no_new_privileges = true,
    pids_limit = 4096,
}

local function cfg(config, key)
    local v = config and config[key]
    if v == nil then
        return M.DEFAULT_CONFIG[key]
    end
    return v
end
M.config_value = cfg

--- True when `network_mode` shares the host's network (no published ports, a per-sandbox agent port).
function M.is_host_network(network_mode)
    return network_mode == "host"
end

------------------------------------------------------------------------------------------------------------
-- labels (§8.3)

--- The labels of a sandbox record: `rec = { id, created_us, expires_us|nil, manual_cleanup?, metadata?,
--- agent_port?, platform = {os, arch}|nil }`. A record without `expires_us` is manual cleanup. All values
--- are strings.
function M.labels_for(rec)
    assert(type(rec) == "table" and type(rec.id) == "string", "labels_for: rec.id required")
    assert(rec.created_us, "labels_for: rec.created_us required")
    local labels = {
        [M.LABEL_ID] = rec.id,
        ["opensandbox.io/created-at"] = timefmt.format(rec.created_us),
        ["opensandbox.io/execd-port"] = tostring(math.tointeger(rec.agent_port or M.AGENT_PORT)),
    }
    if rec.expires_us and not rec.manual_cleanup then
        labels["opensandbox.io/expires-at"] = timefmt.format(rec.expires_us)
    else
        labels["opensandbox.io/manual-cleanup"] = "true"
    end
    if type(rec.metadata) == "table" and next(rec.metadata) ~= nil then
        labels["opensandbox.io/metadata"] = json.encode(rec.metadata)
    end
    if type(rec.principal) == "string" and rec.principal ~= "" then
        -- the tenant that created it, so that a store rebuilt from labels keeps tenancy
        labels["opensandbox.io/principal"] = rec.principal
    end
    if type(rec.snapshot_id) == "string" then
        labels[M.LABEL_SNAPSHOT] = rec.snapshot_id
    end
    if type(rec.pool) == "string" then
        labels[M.LABEL_POOL] = rec.pool
    end
    if rec.platform then
        labels["opensandbox.io/platform-os"] = rec.platform.os
        labels["opensandbox.io/platform-arch"] = rec.platform.arch
    end
    if type(rec.volumes) == "table" and #rec.volumes > 0 then
        -- the sandbox's volumes, so that an adopting server knows which to delete with it
        labels[M.LABEL_VOLUMES] = json.encode(rec.volumes)
    end
    return labels
end

------------------------------------------------------------------------------------------------------------
-- volumes (sandbox/volumes.lua: normalised, host ones with their resolved `source`)

M.LABEL_VOLUMES = "opensandbox.io/volumes"
-- on a named volume this server created for a sandbox's pvc: which server, and for which sandbox
M.LABEL_VOLUME_MANAGED = "opensandbox.io/volume-managed-by"
M.LABEL_VOLUME_SANDBOX = "opensandbox.io/volume-created-for"

--- The HostConfig.Mounts entries of the sandbox's volumes: host -> a bind of the resolved path; pvc -> the
--- Docker named volume `claimName` (VolumeOptions.Subpath for a subPath, API 1.45).
function M.volume_mounts(vols)
    local out = {}
    for _, v in ipairs(vols or {}) do
        if v.host then
            assert(type(v.source) == "string", "volume_mounts: host volume without a resolved source")
            out[#out + 1] = { Type = "bind", Source = v.source, Target = v.mountPath, ReadOnly = v.readOnly == true }
        elseif v.pvc then
            local m = { Type = "volume", Source = v.pvc.claimName, Target = v.mountPath, ReadOnly = v.readOnly == true }
            if v.subPath then
                m.VolumeOptions = { Subpath = v.subPath }
            end
            out[#out + 1] = m
        end
    end
    return out
end

--- Whether the create of `spec` mounts a sub-directory of a named volume (needs API 1.45).
function M.uses_subpath(spec)
    for _, v in ipairs(spec.volumes or {}) do
        if v.pvc and v.subPath then
            return true
        end
    end
    return false
end

------------------------------------------------------------------------------------------------------------
-- create body (§8.2)

-- common.json writes numbers with 14 significant digits and cjson has no integer type, so an integer such
-- as Memory = 200 TiB would come out as 2.0e+14, which Docker refuses for an int64 field. Big integers are
-- therefore put in as marker strings and replaced by their digits after encoding. The marker has control
-- bytes (which cjson escapes as \u0001) and a per-process random nonce, so no user string can forge it.
local NONCE = string.format("%08x", math.random(0, 0x7fffffff))
local MARK_OPEN, MARK_CLOSE = "\1int" .. NONCE .. ":", "\1"
local MARK_PATTERN = '"\\u0001int' .. NONCE .. ':(%-?%d+)\\u0001"'

local function int(n)
    local i = math.tointeger(n)
    assert(i, "create_body: integer expected")
    return MARK_OPEN .. string.format("%d", i) .. MARK_CLOSE
end

local function array_copy(t)
    local out = json.array()
    for i, v in ipairs(t or {}) do
        out[i] = v
    end
    return out
end

--- The create body for `spec` (see runtimes/README.md) under the docker `config` section; JSON text.
function M.create_body(spec, config)
    assert(type(spec.image_uri) == "string", "create_body: spec.image_uri required")
    assert(type(spec.entrypoint) == "table" and spec.entrypoint[1], "create_body: spec.entrypoint required")
    local network_mode = cfg(config, "network_mode")
    local agent_port = math.tointeger(spec.agent_port or M.AGENT_PORT)

    local env = json.array()
    for _, kv in ipairs(spec.env or {}) do
        local k, v = kv[1], kv[2]
        -- the server owns these two (§4.4)
        if k ~= "OPENSANDBOX_EXECD_PORT" and not (spec.access_token and k == "EXECD_ACCESS_TOKEN") then
            env[#env + 1] = k .. "=" .. v
        end
    end
    env[#env + 1] = "OPENSANDBOX_EXECD_PORT=" .. agent_port
    if spec.start_gate then -- the entrypoint waits until the server opens this FIFO (network rules in place)
        env[#env + 1] = "OPENSANDBOX_START_GATE=" .. spec.start_gate
    end
    if spec.pool_member then -- bootstrap.sh waits for the claim's entrypoint (execd/src/pool.c)
        env[#env + 1] = "OPENSANDBOX_POOL_MEMBER=1"
        if spec.claim_dir then -- the claim may come as a file there (runtimes/docker/pool_claims.lua)
            env[#env + 1] = "OPENSANDBOX_POOL_CLAIM_FILE=" .. M.CLAIM_MOUNT .. "/claim.json"
        end
    end
    if spec.access_token then
        env[#env + 1] = "EXECD_ACCESS_TOKEN=" .. spec.access_token
    end

    local labels = M.labels_for(spec)
    local instance = spec.instance or cfg(config, "instance")
    if instance then
        labels[M.LABEL_INSTANCE] = instance
    end
    for k, v in pairs(spec.extra_labels or {}) do
        assert(k:sub(1, #M.LABEL_PREFIX) ~= M.LABEL_PREFIX, "create_body: extra label in reserved prefix")
        labels[k] = v
    end

    local host = {
        NetworkMode = network_mode,
        CapDrop = array_copy(cfg(config, "drop_capabilities")),
        RestartPolicy = { Name = "no" },
        AutoRemove = false,
    }
    local body = {
        Image = spec.image_uri,
        Entrypoint = json.array({ M.BOOTSTRAP }),
        Cmd = array_copy(spec.entrypoint),
        Env = env,
        Labels = labels,
        HostConfig = host,
    }
    if not M.is_host_network(network_mode) then
        local ports = { tostring(M.AGENT_PORT) .. "/tcp", tostring(M.HTTP_PORT) .. "/tcp" }
        body.ExposedPorts, host.PortBindings = {}, {}
        for _, p in ipairs(ports) do
            body.ExposedPorts[p] = {}
            host.PortBindings[p] = json.array({ { HostIp = cfg(config, "host_ip"), HostPort = "" } })
        end
    end
    if spec.no_ipv6 then
        -- a sandbox with a network policy has no IPv6: its rules and its DNS filter speak IPv4
        host.Sysctls = { ["net.ipv6.conf.all.disable_ipv6"] = "1", ["net.ipv6.conf.default.disable_ipv6"] = "1" }
    end
    if spec.nano_cpus then
        host.NanoCpus = int(spec.nano_cpus)
    end
    if spec.memory then
        host.Memory = int(spec.memory)
    end
    if spec.gpu then
        local count = spec.gpu == "all" and -1 or math.tointeger(tonumber(spec.gpu))
        assert(count, "create_body: spec.gpu must be a positive integer or 'all'")
        host.DeviceRequests = json.array({ { Count = count, Capabilities = json.array({ json.array({ "gpu" }) }) } })
    end
    local secopt = json.array()
    if cfg(config, "no_new_privileges") then
        secopt[#secopt + 1] = "no-new-privileges:true"
    end
    if config and config.apparmor_profile then
        secopt[#secopt + 1] = "apparmor=" .. config.apparmor_profile
    end
    if config and config.seccomp_profile then
        secopt[#secopt + 1] = "seccomp=" .. config.seccomp_profile
    end
    if #secopt > 0 then
        host.SecurityOpt = secopt
    end
    local pids = cfg(config, "pids_limit")
    if pids and pids ~= 0 then
        host.PidsLimit = int(pids)
    end
    if config and config.runtime then
        host.Runtime = config.runtime
    end
    local mounts = json.array()
    if spec.agent_volume then
        -- the agent bundle, shared read-only by every sandbox (docker.agent_delivery = "volume")
        -- (NoCopy: should the volume ever be missing, Docker must not fill it from the user's image)
        mounts[#mounts + 1] = { Type = "volume", Source = spec.agent_volume, Target = "/opt/opensandbox",
            ReadOnly = true, VolumeOptions = { NoCopy = true } }
    end
    for _, m in ipairs(M.volume_mounts(spec.volumes)) do
        mounts[#mounts + 1] = m
    end
    if #mounts > 0 then
        host.Mounts = mounts
    end
    if spec.pool_member and spec.claim_dir then
        -- (Binds, not Mounts: a daemon that does not see the server's directory makes an empty one instead of
        -- failing the create; the member then shows no marker and is claimed over HTTP)
        host.Binds = json.array({ spec.claim_dir .. ":" .. M.CLAIM_MOUNT .. ":ro" })
    end
    local text = json.encode(body)
    return (text:gsub(MARK_PATTERN, "%1"))
end

------------------------------------------------------------------------------------------------------------
-- inspect (GET /containers/{id}/json)

local function int_or_nil(v)
    if v == nil or v == json.null then
        return nil
    end
    return math.tointeger(tonumber(v))
end

local function positive_or_nil(v)
    local i = int_or_nil(v)
    return i and i > 0 and i or nil
end

local function str_or_nil(v)
    if type(v) == "string" and v ~= "" then
        return v
    end
    return nil
end

local function container_ip(ns, network_mode)
    if type(ns) ~= "table" then
        return nil
    end
    local nets = type(ns.Networks) == "table" and ns.Networks or {}
    if network_mode and type(nets[network_mode]) == "table" and str_or_nil(nets[network_mode].IPAddress) then
        return nets[network_mode].IPAddress
    end
    if str_or_nil(ns.IPAddress) then
        return ns.IPAddress
    end
    local names = {}
    for name in pairs(nets) do
        names[#names + 1] = name
    end
    table.sort(names)
    for _, name in ipairs(names) do
        local n = nets[name]
        if type(n) == "table" and str_or_nil(n.IPAddress) then
            return n.IPAddress
        end
    end
    return nil
end

local function host_ports(ns)
    local out = {}
    if type(ns) ~= "table" or type(ns.Ports) ~= "table" then
        return out
    end
    for key, bindings in pairs(ns.Ports) do
        local port, proto = key:match("^(%d+)/(%a+)$")
        if port and proto == "tcp" and type(bindings) == "table" then
            for _, b in ipairs(bindings) do
                local hp = type(b) == "table" and int_or_nil(b.HostPort)
                if hp and hp > 0 then
                    out[port] = hp
                    break
                end
            end
        end
    end
    return out
end

local function array_or_nil(t)
    if type(t) ~= "table" then
        return nil
    end
    local out = {}
    for i, v in ipairs(t) do
        out[i] = v
    end
    return out
end

--- The flat inspect result of a decoded GET /containers/{id}/json document. `network_mode` picks the
--- network whose IP is reported.
function M.normalize_inspect(doc, network_mode)
    local state = type(doc.State) == "table" and doc.State or {}
    local config = type(doc.Config) == "table" and doc.Config or {}
    local host = type(doc.HostConfig) == "table" and doc.HostConfig or {}
    local labels = {}
    if type(config.Labels) == "table" then
        for k, v in pairs(config.Labels) do
            labels[k] = v
        end
    end
    -- only the agent token is taken from the environment, so that an adopted sandbox keeps it (§6.5)
    local access_token
    if type(config.Env) == "table" then
        for _, e in ipairs(config.Env) do
            if type(e) == "string" and e:sub(1, 19) == "EXECD_ACCESS_TOKEN=" then
                access_token = str_or_nil(e:sub(20))
            end
        end
    end
    return {
        id = doc.Id,
        access_token = access_token,
        name = type(doc.Name) == "string" and doc.Name:gsub("^/", "") or nil,
        status = state.Status,
        running = state.Running == true,
        pid = int_or_nil(state.Pid), -- the main process on the host (0 when not running)
        paused = state.Paused == true,
        restarting = state.Restarting == true,
        exit_code = int_or_nil(state.ExitCode),
        oom_killed = state.OOMKilled == true,
        error = str_or_nil(state.Error),
        started_us = timefmt.parse_runtime(state.StartedAt),
        finished_us = timefmt.parse_runtime(state.FinishedAt),
        ip = container_ip(doc.NetworkSettings, network_mode),
        host_ports = host_ports(doc.NetworkSettings),
        labels = labels,
        image = config.Image,
        cmd = array_or_nil(config.Cmd),
        -- the limits the container was created with (0 = none): an adopted or restored sandbox counts them
        nano_cpus = positive_or_nil(host.NanoCpus),
        memory = positive_or_nil(host.Memory),
    }
end

------------------------------------------------------------------------------------------------------------
-- status (§3.2)

-- the §3.2 messages, the same on every runtime
M.MESSAGES = require("runtimes.status").MESSAGES
M.exit_message = require("runtimes.status").exit_message

--- state, reason, message, at_us of an inspect result. `at_us` is the Docker time of the transition when
--- inspect knows it (StartedAt for running, FinishedAt for exited), else nil (the caller uses now).
--- Returns nil for a Docker status it does not know.
function M.status_of(ins)
    local s = ins.status
    -- Docker reports Running=true while paused: test paused first
    if s == "paused" or ins.paused then
        return "Paused", "CONTAINER_PAUSED", M.MESSAGES.CONTAINER_PAUSED, nil
    end
    if s == "restarting" or ins.restarting then
        return "Running", "CONTAINER_RESTARTING", M.MESSAGES.CONTAINER_RESTARTING, ins.started_us
    end
    if s == "running" then
        return "Running", "CONTAINER_RUNNING", M.MESSAGES.CONTAINER_RUNNING, ins.started_us
    end
    if s == "created" then
        return "Pending", "CONTAINER_STARTING", M.MESSAGES.CONTAINER_STARTING, nil
    end
    if s == "removing" then
        return "Stopping", "CONTAINER_REMOVING", M.MESSAGES.CONTAINER_REMOVING, nil
    end
    if s == "exited" or s == "dead" then
        local code = ins.exit_code or 0
        if code == 0 then
            return "Terminated", "CONTAINER_EXITED", M.MESSAGES.CONTAINER_EXITED, ins.finished_us
        end
        return "Failed", "CONTAINER_EXITED_ERROR", M.exit_message(code, ins.oom_killed), ins.finished_us
    end
    return nil
end

return M
