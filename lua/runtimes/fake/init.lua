-- The fake runtime: the runtime contract (lua/runtimes/README.md) in memory, with no daemon. It backs the
-- lifecycle service's unit specs (as Kong's `strategies/fake` backs its DAO's), and is the smallest
-- complete example of an adapter.
--
-- A sandbox is an entry of `self.objects` (handle -> { id, sandbox, spec, status, place }). Specs drive it
-- from outside, the way the real world would:
--   rt:fail_next(method, err)        the next call of `method` fails with `err` (a runtimes.errors object)
--   rt:set_status(handle, state...)  changes an object's status and reports it to the watch
--   rt:vanish(handle)                removes an object behind the service's back (reported as gone)
--   rt:inject(obs)                   an object the service has no record of (adoption)
--   rt.down = true                   every call fails with `unavailable` until it is false again
--   rt.before[method] = fn(...)      runs inside `method` before it answers, where the real call would
--                                    yield (so specs can change the service meanwhile)
--   rt.calls                         every call, as "method id-or-handle" strings ("take handle" when a
--                                    provision took an object an interrupted one had made)
--   rt:write(handle, line)           a line of the sandbox's output (diagnostic_logs)
--   rt:event(handle, at_us, text)    a runtime event of the sandbox (diagnostic_events)
--   rt.crash_after = step            the next provisionings stop for good after "image", "create" or
--                                    "start" (a server killed there); rt.pulls, rt.starts count steps done
-- watch() returns at once with "unavailable" unless `rt.wait` (a function that yields until more changes
-- come, e.g. coroutine.yield) is set; changes made while nobody watches are kept and delivered first.
local rterrors = require("runtimes.errors")

local M = {}

local Fake = {}
Fake.__index = Fake

M.AGENT_PORT = 44772

--- cfg is ignored but for `fake` (optional: { ncpu = n }); deps are ignored.
function M.new(cfg)
    local fcfg = cfg and cfg.fake or {}
    local self = setmetatable({
        name = "fake",
        ncpu = fcfg.ncpu or 2,
        objects = {}, -- handle -> object
        volumes = {}, -- named volume -> { created_for = sandbox id | nil, in_use = bool }
        calls = {},
        failures = {}, -- method -> error for its next call
        before = {},
        changes = {}, -- changes not yet delivered to a watch
        next_handle = 0,
        down = false,
        no_pause = fcfg.no_pause, -- answer pause and resume with "unsupported", like a runtime that has none
        capabilities = { pause = not fcfg.no_pause, snapshots = not fcfg.no_snapshots, pools = not fcfg.no_pools },
        snapshot_images = {}, -- snapshot reference -> { from = handle }
        applied = {}, -- set_network_policy calls: { handle, policy }
        policies = {}, -- handle -> the policy in force (set_network_policy, or provision's spec)
        no_policy_reason = fcfg.no_network_policy and "networkPolicy is not supported by the fake runtime." or nil,
    }, Fake)
    if fcfg.no_snapshots then -- like Kubernetes: no snapshot methods at all
        self.snapshot, self.snapshot_state, self.delete_snapshot, self.is_snapshot_image = nil, nil, nil, nil
        self.capabilities.snapshots = nil
    end
    if fcfg.keeps_expiry then -- like Kubernetes: renewals written where the sandbox is (set_expiry, expiry_of)
        self.set_expiry = M.set_expiry
        self.expiry_of = M.expiry_of
    end
    if fcfg.replicas then -- like Kubernetes: replicas elect a leader (lead); `rt.leading` is the answer
        self.leading = true
        self.lead = M.lead
    end
    return self
end

--- lead (only with cfg.fake.replicas): answers `rt.leading` (or fails as told by fail_next("lead", err)).
function M.lead(self, identity)
    local err = self:_call("lead", identity)
    if err then
        return nil, err
    end
    return self.leading
end

--- expiry_of (only with cfg.fake.keeps_expiry): the expiry the object holds now.
function M.expiry_of(self, rec)
    local err = self:_call("expiry_of", rec.handle, rec)
    if err then
        return nil, err
    end
    local obj = self.objects[rec.handle]
    return obj and obj.sandbox and obj.sandbox.expires_us or nil
end

--- set_expiry (only with cfg.fake.keeps_expiry): the new expiry is kept with the object, and list() shows it.
function M.set_expiry(self, rec, expires_us)
    local err = self:_call("set_expiry", rec.handle, rec, expires_us)
    if err then
        return nil, err
    end
    local obj = self.objects[rec.handle]
    if not obj then
        return nil, rterrors.new("not_found", "no such sandbox object " .. tostring(rec.handle))
    end
    obj.sandbox = obj.sandbox or {}
    obj.sandbox.expires_us = expires_us
    return true
end

local function unavailable()
    return rterrors.new("unavailable", "fake runtime is down")
end

-- the common head of every call: record it, run the spec's hook, fail when told to
function Fake:_call(method, key, ...)
    self.calls[#self.calls + 1] = method .. (key and (" " .. tostring(key)) or "")
    if self.before[method] then
        self.before[method](...)
    end
    if self.down then
        return unavailable()
    end
    local err = self.failures[method]
    if err then
        self.failures[method] = nil
        return err
    end
    return nil
end

function Fake:fail_next(method, err)
    self.failures[method] = err
end

function Fake:_emit(change)
    self.changes[#self.changes + 1] = change
end

local function status(state, reason, message)
    return { state = state, reason = reason, message = message }
end

---------------------------------------------------------------------------------------------------------
-- the contract

function Fake:connect()
    local err = self:_call("connect")
    if err then
        return nil, err
    end
    return { ncpu = self.ncpu }
end

function Fake.unavailable(_, reason)
    return "DOCKER::UNAVAILABLE", "Fake runtime is unreachable: " .. tostring(reason)
end

-- Provisioning goes in steps, like a real runtime's (image, create, start), each leaving its trace, so that a
-- crash between two of them can be simulated: with `rt.crash_after = step` the provisioning task stops for
-- good after that step (it yields and is never resumed: the server died there). Like the contract asks,
-- provision is idempotent: an object already made for the sandbox (by a provisioning a crash interrupted)
-- is taken, and started when it was not.
function Fake:_crash_point(step)
    if self.crash_after == step then
        self.crashed = (self.crashed or 0) + 1
        coroutine.yield() -- parked for good: nobody resumes a task of a dead server
    end
end

function Fake:provision(sandbox, spec)
    local err = self:_call("provision", sandbox.id, sandbox, spec)
    if err then
        if not err.step then
            err = rterrors.at_step("create", err)
        end
        return nil, err
    end
    self.images = self.images or {}
    if not self.images[spec.image.uri] then
        self.images[spec.image.uri] = true
        self.pulls = (self.pulls or 0) + 1
    end
    self:_crash_point("image")
    local obj
    for _, o in pairs(self.objects) do
        if o.id == sandbox.id then
            obj = o
        end
    end
    if obj then
        self.calls[#self.calls + 1] = "take " .. obj.handle
    else
        self.next_handle = self.next_handle + 1
        local handle = string.format("fake-%d", self.next_handle)
        obj = {
            id = sandbox.id,
            handle = handle,
            sandbox = sandbox,
            spec = spec,
            status = status("Pending", "CONTAINER_STARTING", "Sandbox container is starting."),
            place = { ip = "10.0.0." .. self.next_handle, agent_port = M.AGENT_PORT },
        }
        self.objects[handle] = obj
    end
    self:_crash_point("create")
    if obj.status.state == "Pending" then
        obj.status = status("Running", "CONTAINER_RUNNING", "Sandbox container is running.")
        self.starts = (self.starts or 0) + 1
    end
    self:_crash_point("start")
    self.policies[obj.handle] = spec.network_policy
    local made = {}
    for _, v in ipairs(spec.volumes or {}) do
        local name = v.pvc and v.pvc.claimName
        if name and not self.volumes[name] then
            self.volumes[name] = { created_for = sandbox.id }
        end
        if name and self.volumes[name].created_for == sandbox.id then
            made[#made + 1] = name
        end
    end
    return { handle = obj.handle, place = obj.place, status = obj.status, steps = { fake_ms = 0 },
        created_volumes = #made > 0 and made or nil }
end

--- check_volumes: a pvc with createIfNotExists = false must name a volume of `rt.volumes` (name -> {}).
function Fake:check_volumes(vols)
    local err = self:_call("check_volumes", nil, vols)
    if err then
        return nil, err
    end
    for _, v in ipairs(vols) do
        if v.pvc and not v.pvc.createIfNotExists and not self.volumes[v.pvc.claimName] then
            return nil, rterrors.new("invalid", "Volume '" .. v.name .. "': no volume " .. v.pvc.claimName,
                { code = "VOLUME::PVC_NOT_FOUND" })
        end
    end
    return true
end

--- created_volume: the sandbox `rt.volumes[name]` was created for, or false.
function Fake:created_volume(name)
    local v = self.volumes[name]
    return v and v.created_for or false
end

--- remove_volume: removes `rt.volumes[name]` (a "conflict" when `rt.volumes[name].in_use`).
function Fake:remove_volume(name)
    local err = self:_call("remove_volume", name)
    if err then
        return nil, err
    end
    local v = self.volumes[name]
    if v and v.in_use then
        return nil, rterrors.new("conflict", "volume in use")
    end
    self.volumes[name] = nil
    return true
end

-- pause/resume: fail on an object that is gone; pause is `unsupported` with cfg.fake.no_pause
function Fake:_toggle(method, rec, to)
    local err = self:_call(method, rec.handle, rec)
    if err then
        return nil, err
    end
    local obj = self.objects[rec.handle]
    if not obj then
        return nil, rterrors.new("not_found", "no such sandbox object " .. tostring(rec.handle))
    end
    obj.status = to
    self:_emit({ id = obj.id, handle = obj.handle, status = to })
    return true
end

function Fake:pause(rec)
    if self.no_pause then
        self:_call("pause", rec.handle, rec)
        return nil, rterrors.new("unsupported", "The fake runtime cannot pause sandboxes.")
    end
    return self:_toggle("pause", rec, status("Paused", "CONTAINER_PAUSED", "Sandbox container is paused."))
end

function Fake:resume(rec)
    if self.no_pause then
        self:_call("resume", rec.handle, rec)
        return nil, rterrors.new("unsupported", "The fake runtime cannot pause sandboxes.")
    end
    return self:_toggle("resume", rec, status("Running", "CONTAINER_RUNNING", "Sandbox container is running."))
end

function Fake:remove(rec)
    local err = self:_call("remove", rec.handle, rec)
    if err then
        return nil, err
    end
    local obj = self.objects[rec.handle]
    if obj then
        self.objects[rec.handle] = nil
        self:_emit({ id = obj.id, handle = obj.handle, gone = true })
    end
    return true
end

-- network policy: supported unless cfg.fake.no_network_policy (then refused with `rt.no_policy_reason`);
-- every set_network_policy is recorded in `rt.applied` ({ handle, policy } in call order) and the policy
-- in force per handle in `rt.policies`
function Fake:network_policy_support(spec)
    local err = self:_call("network_policy_support", nil, spec)
    if err then
        return nil, err
    end
    if self.no_policy_reason then
        return nil, self.no_policy_reason
    end
    return true
end

function Fake:set_network_policy(rec, policy)
    local err = self:_call("set_network_policy", rec.handle, rec, policy)
    if err then
        return nil, err
    end
    if not self.objects[rec.handle] then
        return nil, rterrors.new("not_found", "no such sandbox object: " .. tostring(rec.handle))
    end
    self.applied[#self.applied + 1] = { handle = rec.handle, policy = policy }
    self.policies[rec.handle] = policy
    return true
end

-- snapshots (optional methods of the contract): an image per snapshot, "fake-snapshots:{id}"; its removal
-- is refused (conflict) while an object made from it exists
M.SNAPSHOT_PREFIX = "fake-snapshots:"

function Fake:snapshot(rec, snap)
    local err = self:_call("snapshot", rec.handle, rec, snap)
    if err then
        return nil, err
    end
    if not self.objects[rec.handle] then
        return nil, rterrors.new("not_found", "no such sandbox object " .. tostring(rec.handle))
    end
    local ref = M.SNAPSHOT_PREFIX .. snap.id
    self.snapshot_images[ref] = { from = rec.handle }
    return { image = ref, ms = 0 }
end

function Fake:snapshot_state(snap)
    local err = self:_call("snapshot_state", snap.id, snap)
    if err then
        return nil, err
    end
    local ref = snap.image or (M.SNAPSHOT_PREFIX .. snap.id)
    return self.snapshot_images[ref] and { state = "ready", image = ref } or { state = "missing" }
end

function Fake:delete_snapshot(snap)
    local err = self:_call("delete_snapshot", snap.id, snap)
    if err then
        return nil, err
    end
    local ref = snap.image or (M.SNAPSHOT_PREFIX .. snap.id)
    for _, o in pairs(self.objects) do
        if o.spec and o.spec.image and o.spec.image.uri == ref then
            return nil, rterrors.new("conflict", "image " .. ref .. " is used by " .. o.handle, { status = 409 })
        end
    end
    self.snapshot_images[ref] = nil
    return true
end

function Fake.is_snapshot_image(_, uri)
    return type(uri) == "string" and uri:sub(1, #M.SNAPSHOT_PREFIX) == M.SNAPSHOT_PREFIX
end

function Fake:list()
    local err = self:_call("list")
    if err then
        return nil, err
    end
    local out = {}
    for handle, obj in pairs(self.objects) do
        local s = obj.sandbox
        local identity
        if s and s.created_us and s.id then
            identity = { id = s.id, created_us = s.created_us, expires_us = s.expires_us,
                image_uri = obj.spec and obj.spec.image and obj.spec.image.uri or "",
                entrypoint = obj.spec and obj.spec.entrypoint or {}, metadata = s.metadata or {},
                platform = s.platform, principal = s.principal, access_token = s.access_token,
                -- the limits: from the spec it was made with (an injected object may carry them in `sandbox`)
                nano_cpus = s.nano_cpus or obj.spec and obj.spec.nano_cpus,
                memory = s.memory or obj.spec and obj.spec.memory,
                volumes = s.volumes or obj.spec and obj.spec.volumes, pool = s.pool }
        end
        out[#out + 1] = { id = obj.id, handle = handle, place = obj.place, status = obj.status or nil,
            sandbox = identity, foreign = obj.foreign }
    end
    table.sort(out, function(a, b)
        return a.handle < b.handle
    end)
    return out
end

-- pools: a member (provisioned with spec.pool_member) answers pool_ping while it runs, and takes one claim
-- with its boot token (`obj.claim` keeps it; the object's token becomes the claim's, as the agent's does)
function Fake:pool_ping(rec)
    local err = self:_call("pool_ping", rec.handle, rec)
    if err then
        return nil, err
    end
    local obj = self.objects[rec.handle]
    if not obj or obj.status.state ~= "Running" or obj.sandbox.access_token ~= rec.access_token then
        return nil, rterrors.new("unavailable", "the agent cannot be reached")
    end
    -- (self.claim_files: the agents say they see a claim written for them, as Docker's may)
    return true, { claim_file = self.claim_files == true }
end

function Fake:pool_claim(rec, claim)
    local err = self:_call("pool_claim", rec.handle, rec, claim)
    if err then
        return nil, err
    end
    local obj = self.objects[rec.handle]
    if not obj or obj.status.state ~= "Running" then
        return nil, rterrors.new("unavailable", "the agent cannot be reached")
    end
    if obj.sandbox.access_token ~= rec.access_token then
        return nil, rterrors.new("api", "the agent answered 401", { status = 401 })
    end
    if obj.claim then
        return nil, rterrors.new("conflict", "claimed already", { status = 409 })
    end
    obj.claim = claim
    obj.claimed_by_file = rec.claim_file == true
    obj.sandbox.access_token = claim.token
    return true, { file = obj.claimed_by_file or nil }
end

function Fake:watch(on_change)
    local err = self:_call("watch")
    if err then
        return nil, err
    end
    repeat
        while #self.changes > 0 and not self.down do
            on_change(table.remove(self.changes, 1))
        end
    until not self.wait or self.down or self.wait() == false
    return nil, unavailable()
end

function Fake.address(_, rec, port, from)
    local place = rec.place
    if type(place) ~= "table" or not place.ip then
        return nil, rterrors.new("conflict", "the sandbox has no address")
    end
    if from == "proxy" then
        return { host = place.ip, port = port }
    end
    -- public: the agent port through the agent's own proxy path, like Docker's bridge mode
    if port == M.AGENT_PORT then
        return { host = place.ip, port = port, path = "/proxy/" .. port, agent = true }
    end
    return { host = place.ip, port = port }
end

---------------------------------------------------------------------------------------------------------
-- diagnostics (optional methods of the contract)

--- The newest `lim.max_lines` lines the object wrote (truncated when it wrote more).
function Fake:diagnostic_logs(rec, lim)
    local err = self:_call("diagnostic_logs", rec.handle)
    if err then
        return nil, err
    end
    local obj = self.objects[rec.handle]
    if not obj then
        return nil, rterrors.new("not_found", "no object " .. tostring(rec.handle))
    end
    local out = obj.output or {}
    local first = math.max(1, #out - lim.max_lines + 1)
    return { lines = table.move(out, first, #out, 1, {}), truncated = first > 1 }
end

--- The newest `lim.max_events` events of the object.
function Fake:diagnostic_events(rec, lim)
    local err = self:_call("diagnostic_events", rec.handle)
    if err then
        return nil, err
    end
    local obj = self.objects[rec.handle]
    if not obj then
        return nil, rterrors.new("not_found", "no object " .. tostring(rec.handle))
    end
    local evs = obj.events or {}
    local first = math.max(1, #evs - lim.max_events + 1)
    return { events = table.move(evs, first, #evs, 1, {}), truncated = first > 1,
        warnings = obj.event_warnings }
end

---------------------------------------------------------------------------------------------------------
-- what specs drive from outside

--- Adds a line to what the object wrote (its stdout/stderr).
function Fake:write(handle, line)
    local obj = assert(self.objects[handle], "fake: no object " .. tostring(handle))
    obj.output = obj.output or {}
    obj.output[#obj.output + 1] = line
end

--- Adds a runtime event of the object.
function Fake:event(handle, at_us, text)
    local obj = assert(self.objects[handle], "fake: no object " .. tostring(handle))
    obj.events = obj.events or {}
    obj.events[#obj.events + 1] = { at_us = at_us, text = text }
end

--- Changes an object's status (as if the sandbox exited, was paused by someone else, ...) and reports it.
function Fake:set_status(handle, state, reason, message)
    local obj = assert(self.objects[handle], "fake: no object " .. tostring(handle))
    obj.status = status(state, reason, message)
    self:_emit({ id = obj.id, handle = handle, status = obj.status })
end

--- Removes an object behind the service's back, and reports it gone.
function Fake:vanish(handle)
    local obj = assert(self.objects[handle], "fake: no object " .. tostring(handle))
    self.objects[handle] = nil
    self:_emit({ id = obj.id, handle = handle, gone = true })
end

--- Adds an object the service has no record of: obs = { id, sandbox = identity | nil, status?, place? }.
--- Returns its handle.
function Fake:inject(obs)
    self.next_handle = self.next_handle + 1
    local handle = obs.handle or string.format("fake-%d", self.next_handle)
    self.objects[handle] = {
        id = obs.id,
        handle = handle,
        sandbox = obs.sandbox,
        spec = { image = { uri = obs.sandbox and obs.sandbox.image_uri or "" },
            entrypoint = obs.sandbox and obs.sandbox.entrypoint or {} },
        -- status = false: an object whose details cannot be read (listed with status nil)
        status = obs.status == nil and status("Running", "CONTAINER_RUNNING", "Sandbox container is running.")
            or obs.status,
        place = obs.place or { ip = "10.0.1." .. self.next_handle },
        foreign = obs.foreign, -- listed as perhaps another server's (never adopted or removed)
    }
    return handle
end

--- How many objects exist.
function Fake:count()
    local n = 0
    for _ in pairs(self.objects) do
        n = n + 1
    end
    return n
end

return M
