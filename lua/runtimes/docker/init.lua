-- The Docker runtime: the runtime contract of lua/runtimes/README.md on the Docker Engine API.
--
-- A sandbox is one container named `sandbox-{id}` (or the name a hook chose), with its identity in labels
-- (API.md §8.3, runtimes.docker.mapping), the agent delivered by runtimes.docker.agent and the requests sent
-- by runtimes.docker.engine. The service sees only the contract's words: a `handle` (the container id), a
-- `place` (where the sandbox can be reached: `{ ip, ports = {["44772"]=p, ["8080"]=p}, agent_port }`, which
-- only this file reads), statuses and changes. Docker's event vocabulary (start, die, oom, pause, destroy)
-- and its labels never leave this module.
local engine_mod = require("runtimes.docker.engine")
local mapping = require("runtimes.docker.mapping")
local agent_mod = require("runtimes.docker.agent")
local rterrors = require("runtimes.errors")
local json = require("common.json")
local timefmt = require("common.timefmt")

local M = {}

M.AGENT_PORT = mapping.AGENT_PORT
M.HTTP_PORT = mapping.HTTP_PORT

local Docker = {}
Docker.__index = Docker

--- A new Docker runtime. `cfg` is the whole validated configuration (this reads `docker` and `runtime`);
--- deps = { client = core.client-like (required), log, agent_files = runtimes.agent_files object,
---          core = { free_tcp_port = fn(host) -> port | nil, err, uuid = core.uuid-like, now_s = fn } (optional),
---          engine = an engine to use instead of a new one (tests) }
function M.new(cfg, deps)
    local dcfg = cfg.docker or {}
    local engine = deps.engine or engine_mod.new({
        client = deps.client,
        host = dcfg.host,
        api_timeout = dcfg.api_timeout,
        log = deps.log,
        config = dcfg,
    })
    local core = deps.core or {}
    local self = setmetatable({
        name = "docker",
        engine = engine,
        config = dcfg,
        log = deps.log,
        core = core,
        host_mode = mapping.is_host_network(mapping.config_value(dcfg, "network_mode")),
        delivery = dcfg.agent_delivery or "volume",
        agent_ports = {}, -- agent port -> sandbox id (host mode: each sandbox has its own)
        oom_seen = {}, -- container id -> true between an "oom" and its "die"
        last_event_s = nil, -- the watch resumes from here
    }, Docker)
    self.agent = agent_mod.new({
        files = deps.agent_files,
        engine = engine,
        log = deps.log,
        execd_image = cfg.runtime and cfg.runtime.execd_image,
        uuid = core.uuid,
        now_s = core.now_s,
    })
    return self
end

------------------------------------------------------------------------------------------------------------
-- connection

function Docker:unavailable(reason)
    return "DOCKER::UNAVAILABLE", string.format("Docker daemon is unreachable at %s: %s", self.engine.host,
        tostring(reason))
end

--- ping, version check, info. Returns { ncpu } or nil, err.
function Docker:connect()
    local e = self.engine
    local ok, err = e:ping()
    if ok then
        ok, err = e:version()
    end
    local info
    if ok then
        info, err = e:info()
    end
    if not info then
        return nil, err
    end
    local oci = self.config.runtime
    if oci and info.runtimes and not info.runtimes[oci] and self.log then
        self.log.error("configured docker.runtime is not known to the daemon", { runtime = oci })
    end
    return { ncpu = info.ncpu }
end

------------------------------------------------------------------------------------------------------------
-- provisioning

local function status(state, reason, message, at_us)
    if not state then
        return nil
    end
    return { state = state, reason = reason, message = message, at_us = at_us }
end

local function place_of(info, agent_port)
    return { ip = info.ip ~= "" and info.ip or nil, ports = info.host_ports or {}, agent_port = agent_port }
end

-- host mode: a port for the sandbox's agent, from the kernel (bind to 0), not used by another live sandbox
function Docker:allocate_agent_port(id)
    if not self.host_mode then
        return M.AGENT_PORT
    end
    for _ = 1, 20 do
        local p, err = self.core.free_tcp_port("0.0.0.0")
        if not p then
            return nil, err
        end
        if not self.agent_ports[p] and p ~= M.HTTP_PORT and p ~= M.AGENT_PORT then
            self.agent_ports[p] = id
            return p
        end
    end
    return nil, "no free port found"
end

function Docker:release_agent_port(rec)
    local p = rec.place and rec.place.agent_port
    if p and self.agent_ports[p] == rec.id then
        self.agent_ports[p] = nil
    end
end

-- the provisioning error: `err`'s kind and status (when it is an adapter error), `message`, the step
local function failure(step, message, err)
    return nil, rterrors.at_step(step, err, message)
end

local function msg(err)
    return tostring(type(err) == "table" and err.message or err)
end

--- Provisions the sandbox (API.md §6.1 steps 1-5): image, agent, container create, start, inspect. On a
--- failure the half-created container is removed before the error returns.
function Docker:provision(sandbox, spec)
    local e = self.engine
    -- how long each step took (milliseconds), for the service's log
    local clock = self.core.now_s or os.time
    local steps, last = {}, clock()
    local function step(name)
        local t = clock()
        steps[name .. "_ms"] = math.floor((t - last) * 1e6) / 1000
        last = t
    end
    local uri = spec.image.uri
    local ok, err = e:ensure_image(uri, spec.image.auth, spec.platform)
    step("image")
    if not ok then
        return failure("image", string.format("Failed to pull image '%s': %s", uri, msg(err)), err)
    end
    local port, perr = self:allocate_agent_port(sandbox.id)
    if not port then
        return failure("create", "Cannot allocate an agent port: " .. tostring(perr))
    end
    local function remove_half_created(cid)
        local rok, rerr = e:remove(cid)
        if not rok and self.log then
            self.log.error("cannot remove half-created container",
                { sandbox_id = sandbox.id, container_id = cid, error = msg(rerr) })
        end
    end
    local function fail(step_name, message, cid, cause)
        if cid then
            remove_half_created(cid)
        end
        self:release_agent_port({ id = sandbox.id, place = { agent_port = port } })
        return failure(step_name, message, cause)
    end
    local cspec = {
        id = sandbox.id,
        name = sandbox.name,
        image_uri = uri,
        entrypoint = spec.entrypoint,
        env = spec.env,
        nano_cpus = spec.nano_cpus,
        memory = spec.memory,
        gpu = spec.gpu,
        platform = spec.platform,
        agent_port = port,
        access_token = sandbox.access_token,
        created_us = sandbox.created_us,
        expires_us = sandbox.expires_us,
        metadata = sandbox.metadata,
        principal = sandbox.principal,
    }
    if self.agent:uses_volume(self.delivery) then -- mount the shared agent volume, upload nothing
        local vol, verr = self.agent:volume()
        if not vol then
            return fail("agent", tostring(verr), nil, verr)
        end
        cspec.agent_volume = vol
        step("agent_volume")
    end
    local cid, failed
    cid, err, failed = e:create_from_image(uri, spec.image.auth, spec.platform, function()
        return e:create_container(cspec)
    end)
    if failed == "pull" then -- the image had gone since it was seen, and pulling it again failed
        return fail("image", string.format("Failed to pull image '%s': %s", uri, msg(err)), nil, err)
    end
    step("create")
    if not cid then
        return fail("create", "Failed to create container: " .. msg(err), nil, err)
    end
    if not cspec.agent_volume then
        local tar, terr = self.agent:archive(spec.platform)
        if not tar then
            return fail("agent", tostring(terr), cid, terr)
        end
        ok, err = e:put_archive(cid, tar)
        if not ok then
            return fail("agent", "Failed to upload the agent: " .. msg(err), cid, err)
        end
        step("upload")
    end
    ok, err = e:start(cid)
    step("start")
    if not ok and cspec.agent_volume then
        -- the agent volume is trusted without a look per create; a start that fails may be its doing (pruned,
        -- or replaced by the empty one Docker makes by itself: the bootstrap is missing). Look, and when it had
        -- to be made again, create and start once more.
        remove_half_created(cid) -- first: a volume in use by it could not be replaced
        local failed_err = err
        local vol, remade = self.agent:volume(true)
        if not (vol and remade) then
            return fail("start", "Failed to start container: " .. msg(failed_err), nil, failed_err)
        end
        if self.log then
            self.log.warn("sandbox start failed on a missing agent volume; made it again and retrying",
                { sandbox_id = sandbox.id, volume = vol })
        end
        cid, err = e:create_container(cspec)
        if not cid then
            return fail("create", "Failed to create container: " .. msg(err), nil, err)
        end
        ok, err = e:start(cid)
        step("restart")
    end
    if not ok then
        return fail("start", "Failed to start container: " .. msg(err), cid, err)
    end
    local info
    info, err = e:inspect(cid)
    if not info then
        return fail("start", "Failed to inspect container: " .. msg(err), cid, err)
    end
    step("inspect")
    local st = status(mapping.status_of(info))
    if not st or st.state == "Pending" then -- started a moment ago: Docker may not say so yet
        st = status("Running", "CONTAINER_RUNNING", mapping.MESSAGES.CONTAINER_RUNNING, nil)
    end
    return { handle = cid, place = place_of(info, port), status = st, steps = steps }
end

------------------------------------------------------------------------------------------------------------
-- operations on a provisioned sandbox (rec.handle is the container id)

function Docker:pause(rec)
    return self.engine:pause(rec.handle)
end

function Docker:resume(rec)
    return self.engine:unpause(rec.handle)
end

--- Removes the container (a paused one is unpaused and removed, §6.3); gone already counts as removed.
function Docker:remove(rec)
    local ok, err = self.engine:remove(rec.handle)
    if ok then
        self:release_agent_port(rec)
    end
    return ok, err
end

------------------------------------------------------------------------------------------------------------
-- what exists

-- The sandbox identity written into the labels (§8.3), read back; nil when the labels are not adoptable
-- (no valid id, created-at, and expires-at or manual-cleanup=true).
local function identity_of(labels, info)
    local id = labels[mapping.LABEL_ID]
    local created = labels["opensandbox.io/created-at"] and timefmt.parse(labels["opensandbox.io/created-at"])
    local expires = labels["opensandbox.io/expires-at"] and timefmt.parse(labels["opensandbox.io/expires-at"])
    local manual = labels["opensandbox.io/manual-cleanup"] == "true"
    if not id or not created or not (expires or manual) then
        return nil
    end
    local md = labels["opensandbox.io/metadata"] and json.decode(labels["opensandbox.io/metadata"])
    local s = {
        id = id,
        created_us = created,
        expires_us = (not manual) and expires or nil,
        image_uri = info.image or "",
        entrypoint = info.cmd or {},
        metadata = type(md) == "table" and md or {},
        principal = labels["opensandbox.io/principal"],
        access_token = info.access_token,
        nano_cpus = info.nano_cpus,
        memory = info.memory,
    }
    if labels["opensandbox.io/platform-os"] then
        s.platform = { os = labels["opensandbox.io/platform-os"], arch = labels["opensandbox.io/platform-arch"] }
    end
    return s
end

--- Every sandbox container (of this server's instance, when docker.instance is set), inspected:
--- `{ id, handle, place, status, sandbox = identity | nil }`. A container removed between the list and its
--- inspection is left out; one whose inspection failed otherwise is listed with status and place nil.
function Docker:list()
    local e = self.engine
    local containers, err = e:list()
    if not containers then
        return nil, err
    end
    local out = {}
    for _, c in ipairs(containers) do
        local sid = c.labels and c.labels[mapping.LABEL_ID]
        local info, ierr = e:inspect(c.id)
        if info then
            local port = tonumber(info.labels["opensandbox.io/execd-port"]) or M.AGENT_PORT
            if self.host_mode and sid then
                self.agent_ports[port] = sid
            end
            out[#out + 1] = { id = sid, handle = c.id, place = place_of(info, port),
                status = status(mapping.status_of(info)), sandbox = identity_of(info.labels, info) }
        elseif rterrors.is(ierr, "unavailable") then
            return nil, ierr
        elseif not rterrors.is(ierr, "not_found") then
            out[#out + 1] = { id = sid, handle = c.id }
        end
    end
    return out
end

------------------------------------------------------------------------------------------------------------
-- changes

-- One Docker event -> the contract's change, or nil. Keeps the "oom" seen before a "die".
function Docker:change_of(ev)
    local at = ev.time_nano and ev.time_nano // 1000 or nil
    local base = { id = ev.sandbox_id, handle = ev.id }
    local a = ev.action
    if a == "oom" then
        self.oom_seen[ev.id or ""] = true
        return nil
    elseif a == "die" then
        local code = ev.exit_code or 0
        local oom = self.oom_seen[ev.id or ""]
        self.oom_seen[ev.id or ""] = nil
        if code == 0 and not oom then
            base.status = status("Terminated", "CONTAINER_EXITED", mapping.MESSAGES.CONTAINER_EXITED, at)
        else
            base.status = status("Failed", "CONTAINER_EXITED_ERROR", mapping.exit_message(code, oom), at)
        end
    elseif a == "start" or a == "unpause" then
        base.status = status("Running", "CONTAINER_RUNNING", mapping.MESSAGES.CONTAINER_RUNNING, at)
    elseif a == "pause" then
        base.status = status("Paused", "CONTAINER_PAUSED", mapping.MESSAGES.CONTAINER_PAUSED, at)
    elseif a == "destroy" then
        base.gone = true
        -- removed (perhaps behind the server's back, when remove() is never called): its agent port is free
        for p, sid in pairs(self.agent_ports) do
            if sid == ev.sandbox_id then
                self.agent_ports[p] = nil
            end
        end
    else
        return nil
    end
    return base
end

--- Follows Docker's event stream (from where the last one ended) and calls on_change(change) for each
--- sandbox change; on_change must not yield. Returns only when the stream ends: nil, err.
function Docker:watch(on_change)
    local since = self.last_event_s or math.floor(self.core.now_s and self.core.now_s() or os.time())
    return self.engine:events(since, function(ev)
        if ev.time_nano then
            self.last_event_s = ev.time_nano // 1000000000 -- exact: a float division may round up a second
        end
        local change = self:change_of(ev)
        if change and change.id then
            on_change(change)
        end
    end)
end

------------------------------------------------------------------------------------------------------------
-- addresses (§7.1, §7.3)

local function bracket(host)
    if host:find(":", 1, true) and not host:find("^%[") then
        return "[" .. host .. "]"
    end
    return host
end

-- docker.host_ip as an endpoint host, unless it is empty or a wildcard
function Docker:public_host()
    local hip = mapping.config_value(self.config, "host_ip")
    if hip and hip ~= "" and hip ~= "0.0.0.0" and hip ~= "::" then
        return bracket(hip)
    end
    return nil
end

local function no_address()
    return nil, rterrors.new("conflict", "the sandbox has no address")
end

--- Where port `port` of the sandbox is reached. from = "proxy": by the server (`{ host, port }`); from =
--- "public": by a client (`{ host = h | nil (the server's public host), port, path = "/proxy/P" | nil,
--- agent = true when the path goes through the sandbox's agent }`). nil, err when it has none.
function Docker:address(rec, port, from)
    local place = rec.place or {}
    if from == "proxy" then
        if self.host_mode then
            return { host = "127.0.0.1", port = port == M.AGENT_PORT and (place.agent_port or port) or port }
        end
        if type(place.ip) ~= "string" or place.ip == "" then
            return no_address()
        end
        return { host = place.ip, port = port }
    end
    local host = self:public_host()
    if self.host_mode then
        if port == M.AGENT_PORT then
            return { host = host, port = place.agent_port or port, path = "/proxy/" .. M.AGENT_PORT, agent = true }
        end
        return { host = host, port = port }
    end
    local hp = type(place.ports) == "table" and place.ports or {}
    if port == M.HTTP_PORT and math.tointeger(hp[tostring(M.HTTP_PORT)]) then
        return { host = host, port = math.tointeger(hp[tostring(M.HTTP_PORT)]) }
    end
    local agent = math.tointeger(hp[tostring(M.AGENT_PORT)])
    if not agent then
        return no_address()
    end
    return { host = host, port = agent, path = "/proxy/" .. port, agent = true }
end

return M
