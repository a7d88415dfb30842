-- Part of the lifecycle service (sandbox/service.lua): keeping the records true to the runtime.
--   reconcile(startup)  the runtime's list against the records (§6.3 sweep; §6.5 start-up restoration)
--   adopt(obs)          a record rebuilt from what the runtime holds of a sandbox we have no record of
--   on_change(change)   one change from the runtime's watch: a new status, or the sandbox gone
-- The adapter decodes its labels or annotations into the contract's `sandbox` identity and interprets its
-- own events; here only the contract's words are read (lua/runtimes/README.md).
local model = require("sandbox.model")

local STATE, MESSAGE = model.STATE, model.MESSAGE

local P = {}

--- An adopted sandbox's named volumes that a server created (the runtime's labels say so: this server, or
--- one whose sandboxes it took over) join the store's created volumes, so that deleteOnSandboxTermination
--- removes them with the sandbox, as their creator would have.
function P:adopt_volumes(rec)
    if not rec.volumes or not self.runtime.created_volume then
        return
    end
    for _, v in ipairs(rec.volumes) do
        local name = v.pvc and v.pvc.claimName
        if name and self.store:created_volume(name) == false then
            local by = self.runtime:created_volume(name)
            if by then
                self.store:add_created_volume(name, by, self:now_us())
            end
        end
    end
end

--- Adopts a sandbox the runtime has and we have no record of (§6.5 step 3); returns true when adopted.
function P:adopt(obs)
    local s = obs.sandbox
    if not s then
        return false
    end
    local rec = {
        id = s.id,
        handle = obs.handle,
        place = obs.place,
        created_us = s.created_us,
        expires_us = s.expires_us,
        image_uri = s.image_uri or "",
        entrypoint = s.entrypoint or {},
        metadata = s.metadata or {},
        platform = s.platform,
        extensions = {},
        access_token = s.access_token,
        principal = s.principal,
        nano_cpus = s.nano_cpus,
        memory = s.memory,
        volumes = s.volumes,
        snapshot_id = s.snapshot_id,
    }
    self:adopt_volumes(rec)
    local st = obs.status
    model.apply_status(rec, model.status(st.state, st.reason, st.message, st.at_us or s.created_us))
    if self:commit(rec) then
        self.log.info("adopted sandbox", { sandbox_id = s.id, handle = obs.handle })
        return true
    end
    return false
end

-- With replicas (a runtime that elects a leader), a Pending sandbox we have no record of is being provisioned
-- by another replica: adopted once it runs, never as Pending (which a restart here would take for this
-- replica's own interrupted provisioning, and remove).
function P:adoptable_now(st)
    return not (self.runtime.lead and st.state == STATE.PENDING)
end

-- removes a runtime object we have no use for (a leftover of provisioning, or unadoptable)
function P:remove_leftover(obs)
    self.removing[obs.handle] = true
    self.runtime:remove({ id = obs.id, handle = obs.handle, place = obs.place })
    self.removing[obs.handle] = nil
end

-- resource limits the runtime reports for a record that has none (one stored before schema version 3)
local function missing_resources(rec, s)
    if not s then
        return nil, nil
    end
    local nano = rec.nano_cpus == nil and s.nano_cpus or nil
    local memory = rec.memory == nil and s.memory or nil
    return nano, memory
end

-- a record whose runtime object is listed: take its handle, place and status, the expiry when the runtime
-- keeps expiries (another replica, or this one before a restart, renewed it there), and the resource limits
-- the record lacks
function P:refresh(rec, obs)
    local later = self.runtime.set_expiry and obs.sandbox and obs.sandbox.expires_us
    later = later and rec.expires_us and later ~= rec.expires_us and later or nil
    local nano, memory = missing_resources(rec, obs.sandbox)
    if later or nano or memory or rec.handle ~= obs.handle
        or (obs.place and not model.same_value(rec.place, obs.place)) then
        local upd = self:copy(rec)
        upd.handle = obs.handle
        upd.place = obs.place or rec.place
        upd.expires_us = later or rec.expires_us
        upd.nano_cpus = upd.nano_cpus or nano
        upd.memory = upd.memory or memory
        self:commit(upd)
        if later then
            self:arm_timer(upd)
        end
    end
    self:apply_runtime_status(rec.id, obs.status)
end

--- Reconciles the records with the runtime. At start-up (`startup`), also returns what is due to expire
--- (§6.5); in sweeps only steps 2-4 apply. Pending records that can resume (load() marked them; they count
--- as provisioning) are left alone here, objects included: connect() resumes them. Only a Pending record
--- that cannot resume (written by an older server, or its sealed secrets lost) fails as interrupted, and
--- its half-made object is removed. Returns true[, due] or nil, err.
function P:reconcile(startup)
    -- The list call yields: records created, provisioned or deleted meanwhile must not be judged against
    -- it. Only records that existed, settled, before the list are checked for a vanished sandbox, and a
    -- listed sandbox whose record existed then but is gone now was deleted meanwhile (neither adopted nor
    -- removed again).
    local had, settled = {}, {}
    for id in pairs(self.records) do
        had[id] = true
        settled[id] = not self.provisioning[id]
    end
    local list, err = self.runtime:list()
    if not list then
        if type(err) == "table" and err.kind == "unavailable" then
            self:mark_unavailable(err)
        end
        return nil, err
    end
    local listed = {}
    for _, obs in ipairs(list) do
        if obs.id then
            listed[obs.id] = obs
        end
    end
    -- at thousands of sandboxes this loop held the event loop for tens of milliseconds in one turn: it yields
    -- every BREATHE_EVERY objects (core.breathe, in the server). What changes meanwhile is judged as for
    -- the list's own yield above: records made meanwhile are provisioning or not in `had`, and a record gone
    -- meanwhile is looked up again below.
    local seen = 0
    for sid, obs in pairs(listed) do
        seen = seen + 1
        if seen % P.BREATHE_EVERY == 0 and self.core.breathe then
            self.core.breathe()
        end
        local rec = self.records[sid]
        if rec then
            if not self.provisioning[sid] then
                if model.is_provisioning_failure(rec) or (startup and rec.state == STATE.PENDING) then
                    self:remove_leftover(obs) -- of failed or interrupted provisioning
                elseif rec.handle == nil or rec.handle == obs.handle then
                    self:refresh(rec, obs)
                end
            end
        elseif obs.sandbox and obs.sandbox.pool and not had[sid] then
            self:pool_listed(obs) -- a warm pool member (sandbox/pools.lua), not a sandbox
        elseif not self.provisioning[sid] and not had[sid] and obs.status and self:adoptable_now(obs.status)
            and not obs.foreign then -- (foreign: perhaps another server's, kept only for a record we have)
            -- (an object whose details could not be read is judged by a later sweep, not removed blind)
            local adopted = self:adopt(obs)
            if adopted and not startup then -- (at start-up every record's timer is armed below)
                self:arm_timer(self.records[sid])
            elseif not adopted and self.leader then -- (with replicas, the leader removes it)
                self.log.warn("removing an unadoptable sandbox", { handle = obs.handle })
                self:remove_leftover(obs)
            end
        end
    end
    -- records without a runtime object
    local now = self:now_us()
    for id, rec in pairs(self.records) do
        if not self.provisioning[id] and settled[id] and not model.is_provisioning_failure(rec) then
            if rec.state == STATE.PENDING and (startup or not listed[id]) then
                -- interrupted provisioning: its runtime object, if any, was removed above
                self:commit_provisioning_failure(rec, MESSAGE.INTERRUPTED)
            elseif not listed[id] then
                self.log.info("sandbox vanished from the runtime; dropping record", { sandbox_id = id })
                self:forget(id)
            end
        end
    end
    if not startup then
        return true
    end
    local due = {}
    for id, rec in pairs(self.records) do
        if rec.expires_us and rec.expires_us <= now and not model.is_provisioning_failure(rec) then
            due[#due + 1] = id
        else
            self:arm_timer(rec)
        end
    end
    return true, due
end

--- Applies one change from the runtime's watch (called from the watch; must not yield; commit writes the
--- store synchronously).
function P:on_change(change)
    local id = change.id
    local rec = id and self.records[id]
    if not rec and id and self.pool_members[id] then
        return self:pool_member_change(change) -- a warm pool member (sandbox/pools.lua)
    end
    -- (a warm pool member we do not hold is never adopted as a sandbox from a change: one just dropped, whose
    -- removal is under way; the sweep's reconcile judges the others, sandbox/pools.lua pool_listed)
    if not rec and id and change.sandbox and change.status and not change.gone and not self.provisioning[id]
        and not change.sandbox.pool and not self:removed_lately(id) and self:adoptable_now(change.status) then
        -- a sandbox another replica made (a runtime whose changes carry identity: Kubernetes): adopted at
        -- once, so that any replica serves it (the sweep would adopt it within SWEEP_INTERVAL)
        if self:adopt({ id = id, handle = change.handle, place = change.place, status = change.status,
            sandbox = change.sandbox }) then
            self:arm_timer(self.records[id])
        end
        return
    end
    if not rec or self.provisioning[id] then
        return
    end
    -- a record without a runtime object (failed or interrupted provisioning) is not affected: a removal seen
    -- now is that of its half-created object, done by us
    if not rec.handle or (change.handle and rec.handle ~= change.handle) then
        return
    end
    if change.gone then
        -- (a removal we are doing ourselves ends in remove_locked; one in Stopping because someone else
        -- deletes it, or because our removal failed earlier, ends here)
        if not self.removing[rec.handle] then
            self.log.info("sandbox removed behind our back; dropping record", { sandbox_id = id })
            self:forget_fact(id)
        end
        return
    end
    local expiry = self.runtime.set_expiry and change.sandbox and change.sandbox.expires_us
    local renewed = expiry and rec.expires_us and expiry ~= rec.expires_us
    local moved = change.place and change.place.ip and not model.same_value(rec.place, change.place)
    if renewed or moved then
        -- a renewal written by another replica (the runtime keeps the expiry), or a new address
        local upd = self:copy(rec)
        if renewed then
            upd.expires_us = expiry
        end
        if moved then
            upd.place = change.place
        end
        self:commit_fact(upd)
        self:arm_timer(upd)
    end
    self:apply_runtime_status(id, change.status)
end

-- Sandboxes this server removed in the last minute: a change of one that the watch delivers late is not a
-- new sandbox to adopt.
P.REMOVED_MEMORY_S = 60
P.BREATHE_EVERY = 100 -- listed objects between two yields of a reconcile (core.breathe, in the server)

function P:note_removed(id)
    local now = self:now_us()
    self.removed_at = self.removed_at or {}
    self.removed_at[id] = now
    for k, at in pairs(self.removed_at) do -- keep the table small
        if now - at > P.REMOVED_MEMORY_S * 1000000 then
            self.removed_at[k] = nil
        end
    end
end

function P:removed_lately(id)
    local at = self.removed_at and self.removed_at[id]
    return at ~= nil and self:now_us() - at <= P.REMOVED_MEMORY_S * 1000000
end

return P
