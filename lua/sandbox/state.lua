-- Part of the lifecycle service (sandbox/service.lua): committing records and transitions.
--
-- A mutation commits a modified copy of the record: the store first, then memory, so memory is always the
-- committed state. Facts (changes that have already happened in the runtime: provisioning finished, a
-- sandbox paused, exited or removed) are different: refusing them because the store cannot take the write
-- (a full disk) would leave memory saying something the runtime no longer does, so memory takes them at
-- once and the store write is retried every STORE_RETRY seconds (and at every sweep) until it goes through.
-- A restart before that reconciles from the runtime as usual (API.md §6.5). Requests that only change our
-- own state (create, renew, metadata) still fail with 503 STORE::UNAVAILABLE, changing nothing.
local errors = require("common.errors")
local model = require("sandbox.model")
local C = require("sandbox.constants")

local P = {}

function P.store_error(_, err)
    return errors.new(503, "STORE::UNAVAILABLE", "The state store rejected the write: " .. tostring(err),
        { ["Retry-After"] = "5" })
end

local function store_error(err)
    return P.store_error(nil, err)
end

--- A shallow copy (records are never changed in place: views are cached per record table).
function P.copy(_, t)
    local o = {}
    for k, v in pairs(t) do
        o[k] = v
    end
    return o
end

--- Commits `rec` (a modified copy of the current record) to the store, then to memory.
function P:commit(rec)
    local ok, err = self.store:put(rec)
    if not ok then
        self.log.error("store write failed", { sandbox_id = rec.id, error = tostring(err) })
        return nil, store_error(err)
    end
    self:set_record(rec.id, rec)
    self.unsaved[rec.id] = nil
    return rec
end

--- Puts `rec` in memory as the record of `id` (nil: none), keeping the usage counters in step. Every
--- change of self.records goes through here.
--- It is also where the event stream learns of every committed state change (sandbox/events.lua).
function P:set_record(id, rec)
    local old = self.records[id]
    self.records[id] = rec
    self.records_version = (self.records_version or 0) + 1 -- what cached list pages are checked against
    self.counters:update(id, rec)
    self:renew_policy(id, rec)
    if self.core.proxy_forget then -- decisions the server proxy remembered for it (core/proxy_fast.c)
        self.core.proxy_forget(id)
    end
    if self.events then
        self.events:sandbox(old, rec)
    end
end

--- What the live sandboxes matching `filter` use (sandbox/counters.lua; opensandbox.usage of the hooks):
--- { sandboxes, nano_cpus, memory }. Never yields.
function P:usage(filter)
    return self.counters:usage(filter)
end

function P:drop_from_memory(id)
    self:set_record(id, nil)
    if self.core.proxy_pool_close then -- the server proxy's idle connections to it
        self.core.proxy_pool_close(id)
    end
    local t = self.timers[id]
    if t then
        t:cancel()
        self.timers[id] = nil
    end
end

--- Deletes the record from the store, then from memory.
function P:forget(id)
    local ok, err = self.store:delete(id)
    if not ok then
        self.log.error("store delete failed", { sandbox_id = id, error = tostring(err) })
        return nil, store_error(err)
    end
    self.unsaved[id] = nil
    self.store:drop_sealed(id) -- (secrets of a provisioning that never ended; a failure is cleaned at load)
    self:drop_from_memory(id)
    return true
end

--- commit() for a fact. Always returns the record.
function P:commit_fact(rec)
    if not self:commit(rec) then
        self:set_record(rec.id, rec)
        self:store_later(rec.id)
    end
    return rec
end

--- forget() for a fact (the sandbox is gone from the runtime). Always returns true.
function P:forget_fact(id)
    if not self:forget(id) then
        self:drop_from_memory(id)
        self:store_later(id)
    end
    return true
end

function P:arm_store_retry()
    local timer = self.core.timer
    if not self.store_retry and timer and timer.after then
        self.store_retry = timer.after(C.STORE_RETRY, function()
            self.store_retry = nil
            self:flush_unsaved()
        end)
    end
end

function P:store_later(id)
    self.unsaved[id] = true
    self:arm_store_retry()
end

--- Writes what memory has and the store lacks (records put, dropped records deleted). Returns how many
--- are still unsaved.
function P:flush_unsaved()
    local left = 0
    for id in pairs(self.unsaved) do
        local rec = self.records[id]
        local ok, err
        if rec then
            ok, err = self.store:put(rec)
        else
            ok, err = self.store:delete(id)
        end
        if ok then
            self.unsaved[id] = nil
            self.log.info("store caught up", { sandbox_id = id })
        else
            left = left + 1
            self.log.warn("store write still failing", { sandbox_id = id, error = tostring(err) })
        end
    end
    if left > 0 then
        self:arm_store_retry()
    end
    return left
end

--- Tells the hooks of a state change (from -> to); nothing when the state did not change.
function P:notify_transition(rec, from, to)
    if self.hooks and from ~= to then
        self.hooks:after_transition(rec, from, to)
    end
end

--- Puts a runtime status ({ state, reason, message, at_us }) on a copy of the record and commits it as a
--- fact. at_us nil: now. Returns the new record.
function P:commit_status(cur, st)
    local rec = self:copy(cur)
    model.apply_status(rec, model.status(st.state, st.reason, st.message, st.at_us or self:now_us()))
    self:commit_fact(rec)
    self:notify_transition(rec, cur.state, rec.state)
    return rec
end

--- Applies a status the runtime reported to a settled sandbox (not provisioning, not being removed).
function P:apply_runtime_status(id, st)
    local cur = self.records[id]
    if not st or not cur or self.provisioning[id] or cur.state == model.STATE.STOPPING then
        return
    end
    if cur.state == st.state and cur.reason == st.reason and cur.message == st.message then
        return
    end
    self:commit_status(cur, st)
end

--- Marks a record as failed provisioning ("{CODE}: {detail}", failedAt now) and commits it as a fact.
function P:commit_provisioning_failure(cur, message)
    local rec = self:copy(cur)
    rec.handle, rec.place, rec.provision = nil, nil, nil
    rec.failed_us = self:now_us()
    model.apply_status(rec, model.status(model.STATE.FAILED, model.REASON.PROVISIONING_ERROR, message, rec.failed_us))
    self:commit_fact(rec)
    self:notify_transition(rec, cur.state, rec.state)
    return rec
end

return P
