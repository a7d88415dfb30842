-- The lifecycle service (API.md §3, §6): the sandbox state machine over a runtime adapter, the durable
-- store and the hooks. It speaks to the runtime only through the contract of lua/runtimes/README.md (in
-- the service's words: provision, pause, resume, remove, list, watch, address) and to the store only
-- through lua/sandbox/store.lua, so nothing here knows Docker or Kubernetes.
--
-- The service is one object whose methods live in files by concern, each read in one sitting:
--   sandbox/service.lua       construction, per-sandbox locks and waiting, runtime availability, background
--   sandbox/state.lua         committing records (store first, then memory), facts the store refused
--   sandbox/provisioning.lua  create and background provisioning (§6.1)
--   sandbox/operations.lua    pause, resume, delete, renew, metadata (§2.4-§2.9)
--   sandbox/expiry.lua        expiry timers and the periodic sweep (§6.3)
--   sandbox/reconcile.lua     reconciliation with the runtime, adoption, runtime changes (§6.3, §6.5)
--   sandbox/views.lua         reads, encoded views, endpoints and the proxy target (§2.2, §2.3, §7)
--   sandbox/access_renew.lua  renew on access through the server proxy (OSEP-0009)
--   sandbox/diagnostics.lua   the diagnostics API: logs and events of a sandbox
--   sandbox/snapshots.lua     snapshots: capture, list, delete, create-from-snapshot, restart recovery
--   sandbox/egress.lua        network policy: the create check, the egress API, re-applying after a restart
--   sandbox/pools.lua         warm pools: the /pools API, members, refill
--   sandbox/pool_claims.lua   claims of warm pool members (a create with extensions.poolRef)
--
-- Concurrency model: every public method runs in the calling request's task and may yield (runtime calls,
-- lock waits). Mutations of one sandbox take its lock; reads (get, list) never do and are served from
-- `self.records`, the in-memory view, which is always the committed state: a mutation writes the store
-- first and updates memory only once the store has accepted it.
--
-- Provisioning runs in a background task. Operations that must wait for it (pause, resume, delete, renew,
-- endpoint, expiry) wait on the record's `provisioned` event for at most PROVISION_WAIT seconds.
--
-- A record (sandbox/model.lua) holds, of the runtime, only `handle` (the adapter's id of what it made) and
-- `place` (the adapter's own description of where it is; the service never reads inside it).
local errors = require("common.errors")
local sync = require("common.sync")
local C = require("sandbox.constants")
local model = require("sandbox.model")
local counters = require("sandbox.counters")

local M = {}
for k, v in pairs(C) do
    M[k] = v
end

local Service = {}
Service.__index = Service

local PARTS = { "sandbox.state", "sandbox.provisioning", "sandbox.operations", "sandbox.expiry",
    "sandbox.reconcile", "sandbox.views", "sandbox.access_renew", "sandbox.diagnostics", "sandbox.snapshots",
    "sandbox.egress", "sandbox.pools", "sandbox.pool_claims" }
for _, name in ipairs(PARTS) do
    for k, fn in pairs(require(name)) do
        assert(Service[k] == nil, "sandbox.service: " .. name .. " defines " .. k .. " twice")
        Service[k] = fn
    end
end

--- deps = { runtime = adapter (lua/runtimes/README.md), store = store, core = { now_us = fn, spawn = fn,
---   monotonic_us = fn (optional: a pool claim's timings), breathe = fn (optional: yields until the loop's
---   next turn, for long loops), timer = core.timer-like, uuid = core.uuid-like },
---   log = core.log-like, config = validated config, failure_ttl = seconds, hooks = hook runner or nil }
function M.new(deps)
    local self = setmetatable({}, Service)
    self.runtime = deps.runtime
    self.store = deps.store
    self.core = deps.core
    self.log = deps.log
    self.config = deps.config
    self.failure_ttl = deps.failure_ttl or 3600
    self.hooks = deps.hooks
    self.events = deps.events -- the GET /events hub (sandbox/events.lua), or nil
    -- authentication is on (a key or tenants configured): the server proxy then needs a key or the
    -- sandbox's capability, which endpoint replies hand out (views.lua)
    local server = deps.config and deps.config.server or {}
    self.proxy_auth = (type(server.api_key) == "string" and server.api_key:find("%S") ~= nil)
        or (type(server.api_keys) == "table" and #server.api_keys > 0)
    -- how long the server proxy may take a decision again without Lua (core/proxy_fast.c; views.lua)
    local remember = tonumber(server.proxy_remember)
    self.proxy_remember = remember and remember > 0 and remember or nil
    self.records = {} -- id -> record (committed state); changed only through set_record
    self.counters = counters.new() -- usage of the live records (sandbox/counters.lua), kept by set_record
    self.locks = {} -- id -> sync.lock
    self.provisioning = {} -- id -> sync.event, while provisioning runs (or waits to resume)
    self.resuming = {} -- id -> sealed secrets: a Pending record loaded from the store, to resume
    self.timers = {} -- id -> timer handle
    self.removing = {} -- handle -> true while we remove it ourselves
    self.unsaved = {} -- id -> true: memory is ahead of the store (a fact whose store write failed)
    self.renew_due = {} -- id -> when renew on access is next due (us; sandbox/access_renew.lua)
    self.renew_last = {} -- id -> the last renew-on-access attempt (us)
    self.snapshots = {} -- snapshot id -> snapshot record (sandbox/snapshots.lua)
    self.snapshot_tasks = {} -- snapshot id -> true while its capture runs in this process
    self.snapshot_removing = {} -- snapshot id -> true while its artifact is being removed
    self.snapshots_unsaved = {} -- snapshot id -> true: a fact the store refused
    self.pools = {} -- pool name -> pool (sandbox/pools.lua)
    self.pool_members = {} -- member id -> member: warm sandboxes not yet claimed (in memory and the runtime)
    self.pool_inflight = 0 -- members being made now (all pools)
    self.available = false -- runtime reachable and reconciled
    self.restored = false -- the start-up restoration (§6.5) has run
    self.unavailable_reason = "not checked yet"
    self.ncpu = nil
    -- several replicas on one runtime (rt:lead): only the leader removes expired sandboxes and sweeps
    self.identity = deps.identity or (deps.core.uuid and deps.core.uuid.v4 and deps.core.uuid.v4()) or "server"
    self.leader = not self.runtime.lead
    return self
end

function Service:now_us()
    return self.core.now_us()
end

---------------------------------------------------------------------------------------------------------
-- per-sandbox serialization (§6.2)
---------------------------------------------------------------------------------------------------------

function Service:lock_of(id)
    local l = self.locks[id]
    if not l then
        l = sync.lock()
        self.locks[id] = l
    end
    return l
end

local function busy(id, why)
    return errors.new(409, "SANDBOX::PROVISIONING_IN_PROGRESS", string.format("Sandbox %s %s.", id, why),
        { ["Retry-After"] = "5" })
end

--- Waits while the sandbox is still provisioning; returns the current record, or nil, err.
function Service:wait_provisioned(id)
    local ev = self.provisioning[id]
    if ev then
        local _, err = ev:wait(C.PROVISION_WAIT)
        if err == "timeout" then
            return nil, busy(id, "is still being provisioned")
        end
    end
    local rec = self.records[id]
    if not rec then
        return nil, errors.not_found(id)
    end
    return rec
end

--- Runs fn(rec) under the sandbox's lock, after waiting for provisioning when `wait` is set. fn gets the
--- current record (re-read under the lock) and returns its results.
function Service:with_sandbox(id, wait, fn)
    if not self.records[id] then
        return nil, errors.not_found(id)
    end
    if wait then
        local _, err = self:wait_provisioned(id)
        if err then
            return nil, err
        end
    end
    local lock = self:lock_of(id)
    local ok, lerr = lock:acquire(C.PROVISION_WAIT)
    if not ok then
        return nil, busy(id, "is busy: " .. tostring(lerr))
    end
    local res = table.pack(pcall(function()
        local rec = self.records[id]
        if not rec then
            return nil, errors.not_found(id)
        end
        return fn(rec)
    end))
    lock:release()
    if not lock:busy() and not self.records[id] then
        self.locks[id] = nil
    end
    if not res[1] then
        error(res[2], 0)
    end
    return table.unpack(res, 2, res.n)
end

---------------------------------------------------------------------------------------------------------
-- runtime availability
---------------------------------------------------------------------------------------------------------

function Service:unavailable_error()
    local code, message = self.runtime:unavailable(self.unavailable_reason)
    return errors.new(503, code, message, { ["Retry-After"] = "5" })
end

function Service:require_runtime()
    if not self.available then
        return nil, self:unavailable_error()
    end
    return true
end

--- Maps an adapter error for a client: transport failures become 503 (and mark the runtime unavailable),
--- "unsupported" a 400 naming what this runtime cannot do, others 500 with `code`.
function Service:runtime_error(err, code, verb)
    if type(err) == "table" and err.kind == "unavailable" then
        if err.busy then -- (the runtime is there, only busy: this request fails, the others go on)
            return errors.new(503, "SANDBOX::RUNTIME_BUSY", tostring(err.message), { ["Retry-After"] = "5" })
        end
        self:mark_unavailable(err)
        return self:unavailable_error()
    end
    if type(err) == "table" and err.kind == "unsupported" then
        return errors.new(400, "SANDBOX::API_NOT_SUPPORTED", tostring(err.message))
    end
    if type(err) == "table" and err.kind == "invalid" then -- the request cannot be served as asked
        return errors.new(400, err.code or "SANDBOX::INVALID_PARAMETER", tostring(err.message))
    end
    return errors.new(500, code, string.format("Failed to %s sandbox container: %s", verb,
        tostring(type(err) == "table" and err.message or err)))
end

--- Takes the runtime for unreachable (every request 503 until the availability watcher reconnects). `reason` is
--- a message or the adapter's error; an error marked `busy` (runtimes.errors.transport: the request spent its
--- time waiting for one of the client's connections while slow calls held them all) says the runtime is alive,
--- and changes nothing.
function Service:mark_unavailable(reason)
    if type(reason) == "table" then
        if reason.busy then
            return
        end
        reason = reason.message
    end
    if self.available then
        self.log.error("runtime became unreachable", { runtime = self.runtime.name, reason = tostring(reason) })
    end
    self.available = false
    self.unavailable_reason = tostring(reason or "unreachable")
end

--- Connects to the runtime, then reconciles (the start-up restoration, §6.5, at the first successful
--- connection, also when the runtime was unreachable while the server started). Returns true or nil, err.
function Service:connect(startup)
    local info, err = self.runtime:connect()
    if not info then
        self:mark_unavailable(err)
        return nil, err
    end
    self.ncpu = info.ncpu
    self:check_lead()
    local ok, due = self:reconcile(startup or not self.restored)
    if not ok then
        self:mark_unavailable(due)
        return nil, due
    end
    local first = not self.restored
    self.restored = true
    if first then -- the runtime forgets nothing, but its enforcement may have (a restarted host or module)
        self:reapply_network_policies()
    end
    if not self.available then
        self.log.info("runtime is reachable", { runtime = self.runtime.name })
    end
    self.available = true
    -- interrupted provisioning resumes (§6.5 step 4), and removals a crash interrupted (records left in
    -- Stopping: the delete or expiry had begun) finish now rather than at the next sweep
    self:resume_provisioning()
    if self.leader then
        for id, rec in pairs(self.records) do
            if rec.state == model.STATE.STOPPING and not self.provisioning[id] then
                self.core.spawn(function()
                    self:with_sandbox(id, false, function(cur)
                        return self:remove_locked(cur, cur.message)
                    end)
                end)
            end
        end
    end
    for _, id in ipairs(due or {}) do -- what was due at start-up; removal needs the runtime available
        self:expire(id)
    end
    -- snapshots a restart interrupted, and deletions waiting for their image to be unused
    if self:recover_snapshots() then
        self:arm_snapshot_retry()
    end
    return true
end

--- With a runtime that elects a leader among replicas (rt:lead, Kubernetes' Lease): asks it, and notes
--- changes. A failure to ask counts as not leading (another replica may hold it).
function Service:check_lead()
    if not self.runtime.lead then
        return true
    end
    local lead, err = self.runtime:lead(self.identity)
    lead = lead == true
    if lead ~= self.leader then
        self.log.info(lead and "leading: this replica removes expired sandboxes and sweeps" or
            "not leading: another replica removes expired sandboxes", { identity = self.identity,
            error = err and tostring(err.message or err) or nil })
    end
    self.leader = lead
    return lead
end

--- Loads the records from the store into memory (before connecting).
function Service:load()
    local all, err = self.store:all()
    if not all then
        return nil, err
    end
    local events = self.events -- loading what the store has is no state change: no events
    self.events = nil
    for _, rec in ipairs(all) do
        self:set_record(rec.id, rec)
    end
    self.events = events
    self:mark_resumable()
    local _, serr = self:load_snapshots()
    if serr then
        return nil, serr
    end
    _, serr = self:load_pools()
    if serr then
        return nil, serr
    end
    return #all
end

--- After a sweep: what a burst freed goes back to the system (glibc keeps it mapped otherwise). A full
--- collection holds the loop while it traces the whole heap (tens of milliseconds at a few thousand
--- sandboxes and pool members: every request waits), so it runs only when the heap (`heap_kb`) has grown to
--- twice what the last one left live: after a burst, not every sweep of a steady server. Returns whether it
--- collected.
function Service:trim_memory(heap_kb)
    if not self.core.trim_memory then
        return false
    end
    local collected = false
    if heap_kb > 2 * (self.gc_live_kb or 0) then
        collectgarbage("collect")
        self.gc_live_kb = collectgarbage("count")
        collected = true
    end
    self.core.trim_memory()
    return collected
end

--- Background loops: the runtime's change watch, the sweep, and the availability watcher.
function Service:start_background()
    local timer = self.core.timer
    self.core.spawn(function()
        while not self.stopped do
            if self.available then
                local _, err = self.runtime:watch(function(change)
                    local ok, e = pcall(self.on_change, self, change)
                    if not ok then
                        self.log.error("runtime change handler failed", { error = tostring(e) })
                    end
                end)
                if not self.stopped then
                    self.log.warn("runtime watch ended; reconnecting", { error = tostring(err and err.message) })
                    if not self.runtime:connect() then
                        self:mark_unavailable(err and err.message or "watch ended")
                    end
                end
            end
            timer.sleep(1)
        end
    end)
    self.core.spawn(function()
        while not self.stopped do
            if not self.available then
                self:connect(false)
            end
            timer.sleep(self.available and 5 or 2)
        end
    end)
    self:start_pool_refill()
    self.sweeper = timer.every(C.SWEEP_INTERVAL, function()
        self:sweep()
        local before_kb = collectgarbage("count")
        self:trim_memory(before_kb)
        self.log.debug("swept", { lua_kb = math.floor(before_kb), lua_live_kb = math.floor(collectgarbage("count")) })
    end)
    if self.runtime.lead then
        self.core.spawn(function()
            while not self.stopped do
                timer.sleep(C.LEAD_INTERVAL)
                if self.available then
                    self:check_lead()
                end
            end
        end)
    end
end

return M
