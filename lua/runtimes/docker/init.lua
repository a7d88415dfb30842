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
local netpolicy_mod = require("runtimes.docker.netpolicy")
local agent_mod = require("runtimes.docker.agent")
local hostports = require("runtimes.docker.hostports")
local imageref = require("runtimes.docker.imageref")
local rterrors = require("runtimes.errors")
local pool_agent = require("runtimes.pool_agent")
local json = require("common.json")
local timefmt = require("common.timefmt")

local M = {}

M.AGENT_PORT = mapping.AGENT_PORT
M.HTTP_PORT = mapping.HTTP_PORT

local Docker = {}
Docker.__index = Docker

-- The value of docker.adopt_instances (and --adopt-instance) that takes over the containers made before
-- servers had identities (no opensandbox.io/instance label).
M.UNLABELLED = "unlabelled"

--- A new Docker runtime. `cfg` is the whole validated configuration (this reads `docker` and `runtime`);
--- deps = { client = core.client-like (required), log, agent_files = runtimes.agent_files object,
---          core = { free_tcp_port = fn(host) -> port | nil, err, uuid = core.uuid-like, now_s = fn } (optional),
---          identity = { server = the store's identity, adopted = { identities taken over } } (optional),
---          engine = an engine to use instead of a new one (tests) }
--- The server's containers are those labelled with its instance: docker.instance, else identity.server, or
--- one of identity.adopted. With neither docker.instance nor identity.server (specs and tools only), every
--- labelled container is taken for its own.
function M.new(cfg, deps)
    local dcfg = cfg.docker or {}
    local engine = deps.engine or engine_mod.new({
        client = deps.client,
        host = dcfg.host,
        api_timeout = dcfg.api_timeout,
        log = deps.log,
        config = dcfg,
        breathe = deps.core and deps.core.breathe,
    })
    local core = deps.core or {}
    local ident = deps.identity or {}
    local instance = (dcfg.instance ~= "" and dcfg.instance) or ident.server
    local owned = {}
    if instance then
        owned[instance] = true
    end
    for _, name in ipairs(ident.adopted or {}) do
        owned[name] = true
    end
    local self = setmetatable({
        instance = instance, -- written into the label of every container this server makes
        owned = owned, -- instances whose containers are this server's (its own and those taken over)
        name = "docker",
        -- snapshots are committed images (see "snapshots" below); pools: members wait in the agent ("pools")
        capabilities = { snapshots = true, pools = true },
        client = deps.client,
        engine = engine,
        config = dcfg,
        log = deps.log,
        core = core,
        host_mode = mapping.is_host_network(mapping.config_value(dcfg, "network_mode")),
        delivery = dcfg.agent_delivery or "volume",
        agent_ports = {}, -- agent port -> sandbox id (host mode: each sandbox has its own)
        listen_cache = {}, -- host mode: container id -> { at = s, ports = { [port] = host } } (proxy_check)
        listen_cached = 0,
        oom_seen = {}, -- container id -> true between an "oom" and its "die"
        last_event_s = nil, -- the watch resumes from here
        inspected = {}, -- container id -> { state, obs, at }: list() need not inspect it again (see there)
        -- one table per list() under way: the container ids an event or a call changed meanwhile (weak keys:
        -- a list() that raised half-way, its table no longer referenced, drops out at the next collection)
        listing = setmetatable({}, { __mode = "k" }),
    }, Docker)
    local net = deps.net
    if net == nil then
        local ok, mod = pcall(require, "core.net")
        net = ok and mod or false
    end
    self.netpolicy = netpolicy_mod.new({
        net = net or nil,
        log = deps.log,
        engine = engine,
        sleep = deps.sleep or function(sec)
            require("core.timer").sleep(sec)
        end,
        spawn = deps.spawn or function(fn)
            require("core.spawn")(fn)
        end,
        now = core.now_s,
        network = mapping.config_value(dcfg, "network_mode"),
        instance = instance,
        policy_config = cfg.network_policy,
    })
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

-- Whether a container an interrupted provisioning had made ended without running the sandbox's entrypoint:
-- its start failed (Docker never set StartedAt), or its start gate did (bootstrap.sh's exit status for it).
local function never_ran(info, gated)
    if info.status ~= "exited" and info.status ~= "dead" then
        return false
    end
    return info.started_us == nil or (gated ~= nil and info.exit_code == netpolicy_mod.GATE_FAILED_EXIT)
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
    local ok, err
    if spec.snapshot_id then
        -- a snapshot's image exists only on this daemon: never pulled (a registry could serve another image
        -- under its name)
        ok, err = e:image_exists(uri)
        if ok == false then
            err = string.format("the image of snapshot %s is gone", spec.snapshot_id)
        end
    else
        ok, err = e:ensure_image(uri, spec.image.auth, spec.platform, spec.image.verify)
    end
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
    local created_volumes -- the named volumes this create made: a failure removes them
    local claim_dir = spec.pool_member and self:make_claim_dir(sandbox.id) or nil -- (docker/pool_claims.lua)
    local function fail(step_name, message, cid, cause)
        if cid then
            remove_half_created(cid)
        end
        if claim_dir then
            self:drop_claim_dir(sandbox.id)
        end
        self:_drop_volumes(sandbox.id, created_volumes)
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
        snapshot_id = sandbox.snapshot_id,
        pool = sandbox.pool,
        pool_member = spec.pool_member,
        claim_dir = claim_dir,
        instance = self.instance,
        volumes = spec.volumes,
        -- the entrypoint waits until the sandbox's network rules are in place (isolation, policy)
        start_gate = self:_gated(spec) and netpolicy_mod.GATE_PATH or nil,
        no_ipv6 = spec.network_policy ~= nil or nil, -- the policy's rules and DNS filter speak IPv4
    }
    local verr0
    created_volumes, verr0 = self:_ensure_volumes(sandbox.id, spec.volumes)
    if not created_volumes then
        return fail("create", verr0.message, nil, verr0)
    end
    if spec.volumes and #spec.volumes > 0 then
        step("volumes")
    end
    if self.agent:uses_volume(self.delivery) then -- mount the shared agent volume, upload nothing
        local vol, verr = self.agent:volume()
        if not vol then
            return fail("agent", tostring(verr), nil, verr)
        end
        cspec.agent_volume = vol
        step("agent_volume")
    end
    local cid, failed
    if spec.snapshot_id then
        cid, err = e:create_container(cspec)
    else
        cid, err, failed = e:create_from_image(uri, spec.image.auth, spec.platform, function()
            return e:create_container(cspec)
        end)
    end
    if failed == "pull" then -- the image had gone since it was seen, and pulling it again failed
        return fail("image", string.format("Failed to pull image '%s': %s", uri, msg(err)), nil, err)
    end
    local existing
    if not cid and rterrors.is(err, "conflict") then
        -- the name is taken: by this sandbox's own container when a provisioning that a crash interrupted
        -- had made it (API.md §6.5 step 4). Taken after checking it is that sandbox's; never a duplicate.
        local oerr
        existing, oerr = self:_own_container(cspec.name or ("sandbox-" .. sandbox.id), sandbox.id)
        if not existing and not rterrors.is(oerr, "not_found") then -- (not_found: gone since; say the conflict)
            err = oerr
        end
        if existing and never_ran(existing, cspec.start_gate) then
            -- its start failed, or its gate did (the crash came between the gate's open and its write): the
            -- entrypoint never ran, so this provisioning makes it again rather than report that exit
            if self.log then
                self.log.warn("the container an interrupted provisioning had made never ran its entrypoint; "
                    .. "making it again", { sandbox_id = sandbox.id, container_id = existing.id,
                        exit_code = existing.exit_code })
            end
            remove_half_created(existing.id)
            existing = nil
            cid, err = e:create_container(cspec)
        end
        if existing then
            cid = existing.id
            local had = tonumber(existing.labels["opensandbox.io/execd-port"])
            if had and had ~= port then -- (host mode: the agent listens where it was told at the first create)
                self:release_agent_port({ id = sandbox.id, place = { agent_port = port } })
                port = had
                if self.host_mode then
                    self.agent_ports[port] = sandbox.id
                end
            end
        end
    end
    step("create")
    if not cid then
        return fail("create", "Failed to create container: " .. msg(err), nil, err)
    end
    -- a container taken that had started already (or ran and ended) is not given the agent or started again
    local started = existing ~= nil and existing.status ~= "created"
    if started then
        ok = true
    elseif not cspec.agent_volume then
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
    if not started then
        ok, err = e:start(cid)
        step("start")
    end
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
    -- the network: isolated from the other sandboxes, and the policy in place before the entrypoint starts
    if not self.host_mode and self.netpolicy:wants_table(spec.network_policy) then
        local pok, perr2 = self:_enforce(sandbox.id, info, spec.network_policy)
        if pok and cspec.start_gate then
            -- a container taken over (started by an interrupted provisioning) may have passed its gate already
            pok, perr2 = self.netpolicy:release(info.pid, 10, started)
        end
        step("network")
        if not pok then
            self.netpolicy:detach(sandbox.id)
            return fail("start", "Failed to put the sandbox's network rules in place: " .. tostring(perr2), cid)
        end
    end
    local st = status(mapping.status_of(info))
    if not st or st.state == "Pending" then -- started a moment ago: Docker may not say so yet
        st = status("Running", "CONTAINER_RUNNING", mapping.MESSAGES.CONTAINER_RUNNING, nil)
    end
    return { handle = cid, place = place_of(info, port), status = st, steps = steps,
        created_volumes = #created_volumes > 0 and created_volumes or nil }
end

------------------------------------------------------------------------------------------------------------
-- volumes (sandbox/volumes.lua checked the request's rules and resolved host paths)

local function invalid(code, fmt, ...)
    return nil, rterrors.new("invalid", string.format(fmt, ...), { code = code, status = 400 })
end

--- Before anything is created: a pvc that must exist does, and a subPath on a named volume can be served
--- (VolumeOptions.Subpath, Docker Engine API 1.45). True or nil, err (kind "invalid": a 400).
function Docker:check_volumes(vols)
    local e = self.engine
    for _, v in ipairs(vols or {}) do
        if v.pvc then
            if v.subPath and not e.subpath_supported then
                return invalid("VOLUME::PVC_SUBPATH_UNSUPPORTED", "Volume '%s': subPath on a Docker named volume "
                    .. "needs Docker Engine API %s (Docker 26) or newer; this daemon serves API %s.", v.name,
                    engine_mod.SUBPATH_API_VERSION, tostring(e.daemon_api_version or "?"))
            end
            if not v.pvc.createIfNotExists then
                local doc, err = e:inspect_volume(v.pvc.claimName)
                if not doc then
                    if rterrors.is(err, "not_found") then
                        return invalid("VOLUME::PVC_NOT_FOUND", "Volume '%s': Docker named volume '%s' does not "
                            .. "exist and createIfNotExists is false.", v.name, v.pvc.claimName)
                    end
                    return nil, err
                end
            end
        end
    end
    return true
end

--- Makes the missing named volumes of the sandbox's pvc volumes (createIfNotExists), labelled with this
--- server and the sandbox. Returns the names this sandbox's create made (also those an interrupted
--- provisioning of the same sandbox had made), or nil, err after removing what it made.
function Docker:_ensure_volumes(sandbox_id, vols)
    local e = self.engine
    local made, seen = {}, {}
    for _, v in ipairs(vols or {}) do
        local name = v.pvc and v.pvc.claimName
        if name and not seen[name] then
            seen[name] = true
            local doc, err = e:inspect_volume(name)
            if not doc and rterrors.is(err, "not_found") then
                if not v.pvc.createIfNotExists then
                    self:_drop_volumes(sandbox_id, made)
                    return nil, rterrors.new("api", string.format("Docker named volume '%s' does not exist and "
                        .. "createIfNotExists is false", name))
                end
                doc, err = e:create_volume(name, { [mapping.LABEL_VOLUME_MANAGED] = "server",
                    [mapping.LABEL_INSTANCE] = self.instance or "", [mapping.LABEL_VOLUME_SANDBOX] = sandbox_id })
            end
            if not doc then
                self:_drop_volumes(sandbox_id, made)
                return nil, rterrors.at_step("create", err, string.format("Failed to prepare volume '%s': %s",
                    name, msg(err)))
            end
            local labels = type(doc.Labels) == "table" and doc.Labels or {}
            if labels[mapping.LABEL_VOLUME_SANDBOX] == sandbox_id then -- made by this sandbox's create
                made[#made + 1] = name
                if self.log then
                    self.log.info("created a named volume", { sandbox_id = sandbox_id, volume = name })
                end
            end
        end
    end
    return made
end

-- removes the named volumes in `names` (made by this sandbox's create), best effort
function Docker:_drop_volumes(sandbox_id, names)
    for _, name in ipairs(names or {}) do
        local ok, err = self.engine:delete_volume(name)
        if not ok and self.log then
            self.log.error("cannot remove a volume this create made", { sandbox_id = sandbox_id, volume = name,
                error = msg(err) })
        end
    end
end

--- Whether the named volume was created by this server (or one whose sandboxes it took over), by its
--- labels: the id of the sandbox it was made for, or false (also when it cannot be read).
function Docker:created_volume(name)
    local doc = self.engine:inspect_volume(name)
    local labels = type(doc) == "table" and type(doc.Labels) == "table" and doc.Labels or {}
    if labels[mapping.LABEL_VOLUME_MANAGED] == "server" and self:ownership(labels) == "own" then
        return labels[mapping.LABEL_VOLUME_SANDBOX] or false
    end
    return false
end

--- Removes the named volume `name`, which the service knows this server created; a volume without this
--- server's label (replaced behind its back) is left alone. True, or nil, err ("conflict": still in use).
function Docker:remove_volume(name)
    local doc, err = self.engine:inspect_volume(name)
    if not doc then
        return rterrors.is(err, "not_found") or nil, err
    end
    local labels = type(doc.Labels) == "table" and doc.Labels or {}
    if labels[mapping.LABEL_VOLUME_MANAGED] ~= "server" or self:ownership(labels) ~= "own" then
        return nil, rterrors.new("conflict", "the volume is not labelled as made by this server")
    end
    return self.engine:delete_volume(name)
end

-- The container named `name`, inspected, when it is sandbox `id`'s (its id label, and this server's
-- instance label when docker.instance is set); else nil, err (a conflict naming who holds the name).
function Docker:_own_container(name, id)
    local info, err = self.engine:inspect(name)
    if not info then
        return nil, err
    end
    local labels = info.labels or {}
    local instance = self.instance -- this server's identity (or docker.instance)
    if labels[mapping.LABEL_ID] ~= id or (instance and labels[mapping.LABEL_INSTANCE] ~= instance) then
        return nil, rterrors.new("conflict", string.format(
            "the container name %s is taken by a container that is not this sandbox's", name), { status = 409 })
    end
    if self.log then
        self.log.info("took the container an interrupted provisioning had made",
            { sandbox_id = id, container_id = info.id, state = info.status })
    end
    return info
end

------------------------------------------------------------------------------------------------------------
-- operations on a provisioned sandbox (rec.handle is the container id)

function Docker:pause(rec)
    self:_forget_inspection(rec.handle)
    return self.engine:pause(rec.handle)
end

function Docker:resume(rec)
    self:_forget_inspection(rec.handle)
    return self.engine:unpause(rec.handle)
end

--- Removes the container (a paused one is unpaused and removed, §6.3); gone already counts as removed.
function Docker:remove(rec)
    self:_forget_inspection(rec.handle)
    local ok, err = self.engine:remove(rec.handle)
    if ok then
        self:release_agent_port(rec)
        self.netpolicy:detach(rec.id)
        self:drop_claim_dir(rec.id)
    end
    return ok, err
end

------------------------------------------------------------------------------------------------------------
-- network policy (netpolicy.lua has the design)

--- Whether a sandbox made from `spec` can have its `network_policy` enforced: true, or nil and the reason.
function Docker:network_policy_support(_spec)
    if self.host_mode then
        return nil, "networkPolicy cannot be enforced with docker.network_mode = \"host\" "
            .. "(the sandbox shares the host's network)"
    end
    local dropped = false
    for _, c in ipairs(mapping.config_value(self.config, "drop_capabilities") or {}) do
        if tostring(c):upper():gsub("^CAP_", "") == "NET_ADMIN" then
            dropped = true
        end
    end
    if not dropped then
        return nil, "networkPolicy needs docker.drop_capabilities to include NET_ADMIN "
            .. "(otherwise the sandbox could change its own firewall)"
    end
    if self.agent.execd_image then
        return nil, "networkPolicy needs the built-in agent (runtime.execd_image is set): its bootstrap holds "
            .. "the entrypoint until the policy is in place"
    end
    local ok, err = self.netpolicy:usable()
    if not ok then
        return nil, "networkPolicy cannot be enforced on this host (nftables: " .. tostring(err) .. ")"
    end
    return true
end

-- whether a sandbox made from `spec` waits at the start gate for its network rules (the built-in agent's
-- bootstrap knows the gate; an upstream-style agent image's does not: isolation is then put in place right
-- after the start, and a policy is refused by network_policy_support)
function Docker:_gated(spec)
    -- (a warm pool member runs no user code before its claim: its rules go in right after the start)
    return not self.host_mode and not self.agent.execd_image and not spec.pool_member
        and self.netpolicy:wants_table(spec.network_policy)
end

function Docker:_enforce(id, info, policy)
    if not (info.running and info.pid and info.pid > 0) then
        return true -- nothing runs: nothing to enforce; a sandbox that runs again is given it then
    end
    return self.netpolicy:apply(id, info.pid, info.ip, policy)
end

--- Makes a live sandbox enforce `policy` now (after a change, or once after a restart). A sandbox whose
--- container does not run is left as it is. Returns true or nil, err.
function Docker:set_network_policy(rec, policy)
    local info, err = self.engine:inspect(rec.handle)
    if not info then
        if rterrors.is(err, "not_found") then
            return true
        end
        return nil, err
    end
    local ok, perr = self:_enforce(rec.id, info, policy)
    if not ok then
        return nil, rterrors.new("api", perr)
    end
    return true
end

------------------------------------------------------------------------------------------------------------
-- snapshots (the optional snapshot methods of the contract): a snapshot is the container's filesystem
-- committed to the local image `opensandbox-snapshots:{snapshot id}` (upstream's naming), made and removed
-- only by this server. Volumes (the agent's, a user's) are not part of a commit, so a sandbox made from the
-- snapshot gets the agent like any other. The commit blanks the container's reserved labels (Docker merges a
-- container's labels into the image's, and an image's into every container made from it: a sandbox made from
-- the snapshot must not inherit the source's expiry, metadata or principal) and the agent token in its
-- environment; the rest of the environment, the working directory and the user stay as the source had them.

M.SNAPSHOT_REPOSITORY = "opensandbox-snapshots"
local SNAPSHOT_REPO_CANONICAL = "docker.io/library/" .. M.SNAPSHOT_REPOSITORY

local function snapshot_ref(id)
    return M.SNAPSHOT_REPOSITORY .. ":" .. id
end

--- Commits the sandbox's container (it keeps running) to the snapshot's image. `snap = { id, sandbox_id }`.
--- Returns { image = reference, ms = commit time } or nil, err.
function Docker:snapshot(rec, snap)
    local e = self.engine
    local info, err = e:inspect(rec.handle)
    if not info then
        return nil, err
    end
    local labels = {}
    for k in pairs(info.labels or {}) do
        if k:sub(1, #mapping.LABEL_PREFIX) == mapping.LABEL_PREFIX then
            labels[k] = ""
        end
    end
    labels[mapping.LABEL_SNAPSHOT] = snap.id
    labels["opensandbox.io/snapshot-of"] = snap.sandbox_id
    if self.instance then
        labels[mapping.LABEL_INSTANCE] = self.instance
    end
    local clock = self.core.now_s or os.time
    local t0 = clock()
    local id
    id, err = e:commit(rec.handle, M.SNAPSHOT_REPOSITORY, snap.id,
        { Labels = labels, Env = json.array({ "EXECD_ACCESS_TOKEN=" }) })
    if not id then
        return nil, err
    end
    return { image = snapshot_ref(snap.id), ms = math.floor((clock() - t0) * 1e6) / 1000 }
end

--- Whether the snapshot's image exists (a restart interrupted its capture): { state = "ready", image } or
--- { state = "missing" }, or nil, err.
function Docker:snapshot_state(snap)
    local ref = snap.image or snapshot_ref(snap.id)
    local ok, err = self.engine:image_exists(ref)
    if ok == nil then
        return nil, err
    end
    return ok and { state = "ready", image = ref } or { state = "missing" }
end

--- Removes the snapshot's image: true (also when gone), or a `conflict` while a container uses it.
function Docker:delete_snapshot(snap)
    return self.engine:delete_image(snap.image or snapshot_ref(snap.id))
end

--- Pure: whether `uri` names a snapshot image (refused as a create's image.uri: snapshotId is the way in).
function Docker.is_snapshot_image(_, uri)
    local ref = imageref.parse(uri)
    return ref ~= nil and imageref.repository(ref) == SNAPSHOT_REPO_CANONICAL
end

------------------------------------------------------------------------------------------------------------
-- what exists

-- The sandbox identity written into the labels (§8.3), read back; nil when the labels are not adoptable
-- (no valid id, created-at, and expires-at or manual-cleanup=true).
local function identity_of(all_labels, info)
    -- a container made from a snapshot inherits the snapshot image's labels, whose reserved ones the commit
    -- blanked (see "snapshots" below): an empty value counts as absent
    local labels = {}
    for k, v in pairs(all_labels) do
        if v ~= "" then
            labels[k] = v
        end
    end
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
        snapshot_id = labels[mapping.LABEL_SNAPSHOT],
        pool = labels[mapping.LABEL_POOL],
    }
    if labels["opensandbox.io/platform-os"] then
        s.platform = { os = labels["opensandbox.io/platform-os"], arch = labels["opensandbox.io/platform-arch"] }
    end
    local vols = labels[mapping.LABEL_VOLUMES] and json.decode(labels[mapping.LABEL_VOLUMES])
    if type(vols) == "table" and #vols > 0 then
        s.volumes = vols
    end
    return s
end

--- Whose container this is, by its labels: "own" (this server's instance, or one it took over), "foreign"
--- (no instance label: made before servers had identities, by this server or another; the service keeps
--- it only for a record it has, and never adopts or removes it otherwise), or nil (another server's).
function Docker:ownership(labels)
    local inst = labels and labels[mapping.LABEL_INSTANCE]
    if not self.instance then
        return "own"
    end
    if inst == nil or inst == "" then
        return self.owned[M.UNLABELLED] and "own" or "foreign"
    end
    return self.owned[inst] and "own" or nil
end

--- Every sandbox container of this server (see ownership; another server's are left out before they are
--- inspected), inspected: `{ id, handle, place, status, sandbox = identity | nil, foreign = true | nil }`.
--- A container removed between the list and its inspection is left out; one whose inspection failed
--- otherwise is listed with status and place nil. The tables are the service's to read, not to change: a
--- container listed in the same settled state as last time (running or paused), seen by an inspection less
--- than REINSPECT_S ago, with no event or call on it since, is not inspected again and its earlier entry is
--- given again. (A sweep inspected every container every 30 s: at 2,000 containers that was ~70 inspections a
--- second of dockerd's CPU and megabytes of JSON through the server's heap, whose collections held the loop
--- for tens of milliseconds. Events and calls on a container forget its entry; a new watch forgets them all,
--- since events may have been missed.)
M.REINSPECT_S = 600
M.BREATHE_EVERY = 100 -- containers between two yields of a list (core.breathe, when the server gives it)
local SETTLED = { running = true, paused = true }

--- Forgets what list() remembers of container `cid` (an event or a call changed it).
function Docker:_forget_inspection(cid)
    if cid then
        self.inspected[cid] = nil
        for touched in pairs(self.listing) do
            touched[cid] = true
        end
    end
end

-- The kernel's neighbour (ARP) table: with its defaults (gc_thresh2 512, gc_thresh3 1024) a host with about a
-- thousand containers on one bridge overflows it ("neighbor table overflow" in dmesg), and connections to
-- sandboxes (agent calls, pool claims, the proxy) wait for ARP or are dropped: a claim's agent call took 1 s
-- and some 10 s at 1000 pool members. Docker does not raise it; the operator does (README "Warm pools").
-- Says so once an hour while a local daemon's bridge holds more of ours than the table keeps (gc_thresh2).
M.NEIGH_DIR = "/proc/sys/net/ipv4/neigh/default/"

local function read_int(path)
    local f = io.open(path, "r")
    if not f then
        return nil
    end
    local v = tonumber(f:read("l") or "")
    f:close()
    return v
end

function Docker:_check_neighbours(n)
    if self.host_mode or not tostring(self.engine.host or ""):find("^unix:") or not self.log then
        return
    end
    local now = (self.core.now_s or os.time)()
    if self.neigh_warned_s and now - self.neigh_warned_s < 3600 then
        return
    end
    local t2, t3 = read_int(M.NEIGH_DIR .. "gc_thresh2"), read_int(M.NEIGH_DIR .. "gc_thresh3")
    if t2 and n > t2 then
        self.neigh_warned_s = now
        self.log.warn("more sandbox containers on the bridge than the kernel's neighbour table keeps: raise "
            .. "net.ipv4.neigh.default.gc_thresh1/2/3 (sysctl), or connections to sandboxes wait for ARP or fail",
            { containers = n, gc_thresh2 = t2, gc_thresh3 = t3 })
    end
end

function Docker:list()
    local e = self.engine
    local containers, err = e:list()
    if not containers then
        return nil, err
    end
    self:_check_neighbours(#containers)
    local now = self.core.now_s and self.core.now_s() or os.time()
    local known, kept, hits = self.inspected, {}, 0
    -- (lists may run at once, say a sweep and a reconcile: each keeps its own record of what changed)
    local touched = {}
    self.listing[touched] = true
    local out = {}
    for _, c in ipairs(containers) do
        local sid = c.labels and c.labels[mapping.LABEL_ID]
        local whose = self:ownership(c.labels) -- nil: another server's, not ours to see
        local foreign = whose == "foreign" or nil
        local hit = whose and known[c.id]
        if hit and hit.state == c.state and hit.obs.foreign == foreign and now - hit.at < M.REINSPECT_S then
            out[#out + 1] = hit.obs
            kept[c.id] = hit
            hits = hits + 1
            if hits % M.BREATHE_EVERY == 0 and self.core.breathe then
                self.core.breathe() -- (thousands of hits in one turn held the loop for tens of ms)
            end
        else
            local info, ierr
            if whose then
                info, ierr = e:inspect(c.id)
            end
            if info then
                local port = tonumber(info.labels["opensandbox.io/execd-port"]) or M.AGENT_PORT
                if self.host_mode and sid then
                    self.agent_ports[port] = sid
                end
                local obs = { id = sid, handle = c.id, place = place_of(info, port),
                    status = status(mapping.status_of(info)), sandbox = identity_of(info.labels, info),
                    foreign = foreign }
                out[#out + 1] = obs
                if SETTLED[c.state] and info.status == c.state then -- (unchanged since the list)
                    kept[c.id] = { state = c.state, obs = obs, at = now }
                end
            elseif rterrors.is(ierr, "unavailable") then
                self.listing[touched] = nil
                return nil, ierr
            elseif whose and not rterrors.is(ierr, "not_found") then
                out[#out + 1] = { id = sid, handle = c.id, foreign = foreign }
            end
        end
    end
    self.listing[touched] = nil
    for cid in pairs(touched) do -- changed while this list was being inspected
        kept[cid] = nil
    end
    self.inspected = kept
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
        -- the container's address goes back to Docker's pool: another container may get it
        self.netpolicy:detach(ev.sandbox_id)
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
        self.netpolicy:detach(ev.sandbox_id)
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
    self.inspected = {} -- (events may have been missed while no watch ran: list() inspects everything again)
    return self.engine:events(since, function(ev)
        if ev.time_nano then
            self.last_event_s = ev.time_nano // 1000000000 -- exact: a float division may round up a second
        end
        if not self:ownership({ [mapping.LABEL_INSTANCE] = ev.instance }) then
            return -- another server's container
        end
        self:_forget_inspection(ev.id)
        local change = self:change_of(ev)
        if change and change.id then
            on_change(change)
        end
    end)
end

------------------------------------------------------------------------------------------------------------
-- addresses (§7.1, §7.3)

local bracket = pool_agent.bracket

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

-- host mode: how long a container's listening ports are reused, and how old they must be before a port
-- not among them makes us look again (a service that just started listening is found at once)
M.LISTEN_TTL = 2
M.LISTEN_RECHECK = 0.2
M.LISTEN_CACHE_MAX = 4096

--- The server proxy's check of a target (`addr`, from address(rec, port, "proxy")): in host network mode
--- the target is the host's loopback, so only the sandbox's agent and the ports a process of its container
--- listens on may be reached (hostports.lua); the host returned is that listener's address. Bridge mode
--- targets the container's own IP: nothing to check. Returns addr, or nil and a message; a third value true
--- when the answer holds for as long as the sandbox is unchanged (bridge mode: the server proxy may then
--- remember its decision, core/proxy_fast.c). May yield.
function Docker:proxy_check(rec, port, addr)
    if not self.host_mode then
        return addr, nil, true
    end
    local place = rec.place or {}
    if port == M.AGENT_PORT or (place.agent_port and port == place.agent_port) then
        return addr
    end
    local now = self.core.now_s and self.core.now_s() or os.time()
    local c = self.listen_cache[rec.handle]
    if c and (c.ports[port] or now - c.at < M.LISTEN_RECHECK) and now - c.at < M.LISTEN_TTL then
        return c.ports[port] and { host = c.ports[port], port = port } or nil, c.why
    end
    local pids, err = self.engine:top_pids(rec.handle)
    local ports, why = {}, nil
    if pids then
        local readable
        ports, readable = hostports.listening(pids)
        if readable == 0 then
            why = "the server cannot read the sandbox's processes in /proc (it needs the host's PID "
                .. "namespace and the right to read their file descriptors)"
            if self.log and self.log.warn then
                self.log.warn("host-mode proxy: cannot see the container's sockets", { container = rec.handle })
            end
        end
    else
        why = "the sandbox's processes could not be listed: " .. tostring(err and err.message or err)
    end
    if self.listen_cached >= M.LISTEN_CACHE_MAX then
        self.listen_cache, self.listen_cached = {}, 0
    end
    if not self.listen_cache[rec.handle] then
        self.listen_cached = self.listen_cached + 1
    end
    self.listen_cache[rec.handle] = { at = now, ports = ports, why = why }
    if ports[port] then
        return { host = ports[port], port = port }
    end
    return nil, why
end

------------------------------------------------------------------------------------------------------------
-- pools (sandbox/pools.lua): a member is provisioned with spec.pool_member (bootstrap.sh then execs
-- `execd --pool-member`, execd/src/pool.c); these two talk to its agent, never to dockerd

pool_agent.install(Docker, { port = M.AGENT_PORT }) -- pool_ping, pool_claim
require("runtimes.docker.pool_claims").install(Docker) -- the claim as a file, where the agent sees it

-- the optional diagnostics of the contract (docker/diagnostics.lua)
require("runtimes.docker.diagnostics")(Docker)

return M
