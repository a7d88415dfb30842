-- Part of the lifecycle service (sandbox/service.lua): expiry timers and the periodic sweep (API.md §6.3).
-- Each sandbox with an expiry has one timer; when it fires the expiry is re-read under the lock, so a
-- renewal that won the race re-arms it instead. The sweep covers missed timers and failed removals, drops
-- old failed-provisioning records, finishes removals left in Stopping, and reconciles with the runtime.
local model = require("sandbox.model")
local C = require("sandbox.constants")

local P = {}

function P:arm_timer(rec)
    local old = self.timers[rec.id]
    if old then
        old:cancel()
        self.timers[rec.id] = nil
    end
    if not rec.expires_us or model.is_provisioning_failure(rec) then
        return
    end
    local delay = (rec.expires_us - self:now_us()) / 1e6
    if delay < 0 then
        delay = 0
    end
    if delay > C.MAX_TIMER then
        delay = C.MAX_TIMER
    end
    local id = rec.id
    self.timers[id] = self.core.timer.after(delay, function()
        self.timers[id] = nil
        self:expire(id)
    end)
end

-- With a runtime that keeps expiries (several replicas renew there): one read of the current expiry before
-- a removal, so that a renewal made elsewhere, or a change the watch delivered out of date, never lets a
-- renewed sandbox be removed. Returns the newer record when it was renewed, else nil.
function P:confirm_expiry(cur)
    if not self.runtime.expiry_of or not cur.handle then
        return nil
    end
    local at = self.runtime:expiry_of(cur)
    if not at or at <= self:now_us() then
        return nil -- due (or gone, or not readable: the removal decides)
    end
    local upd = self:copy(cur)
    upd.expires_us = at
    self:commit_fact(upd)
    self:arm_timer(upd)
    return upd
end

-- a replica that does not lead: the expiry is looked at again after LEAD_INTERVAL
function P:arm_retry(id)
    local old = self.timers[id]
    if old then
        old:cancel()
    end
    self.timers[id] = self.core.timer.after(C.LEAD_INTERVAL, function()
        self.timers[id] = nil
        self:expire(id)
    end)
end

--- Expires the sandbox if its (re-read) expiry has passed; re-arms the timer otherwise.
function P:expire(id)
    if not self.records[id] then
        return
    end
    local _, err = self:with_sandbox(id, true, function(cur)
        if not cur.expires_us or model.is_provisioning_failure(cur) then
            return true
        end
        if cur.expires_us > self:now_us() then
            self:arm_timer(cur)
            return true
        end
        if not self.leader then -- another replica removes it; look again (it may be gone, or we may lead)
            self:arm_retry(cur.id)
            return true
        end
        local fresh = self:confirm_expiry(cur)
        if fresh then -- renewed where the runtime keeps it, and the news had not reached us
            return true
        end
        self.log.info("sandbox expired", { sandbox_id = id })
        return self:remove_locked(cur, model.MESSAGE.EXPIRING)
    end)
    if err and err.status ~= 404 then
        self.log.warn("expiry failed; the sweep retries", { sandbox_id = id, error = tostring(err.message) })
    end
end

--- One sweep (§6.3): expire what is due, drop old failed-provisioning records, finish removals, reconcile.
function P:sweep()
    if next(self.unsaved) then
        self:flush_unsaved()
    end
    local now = self:now_us()
    local ids = {}
    for id, rec in pairs(self.records) do
        ids[#ids + 1] = { id, rec }
    end
    for _, e in ipairs(ids) do
        local id, rec = e[1], e[2]
        if model.is_provisioning_failure(rec) then
            if rec.failed_us and rec.failed_us + self.failure_ttl * 1000000 <= now then
                self:with_sandbox(id, false, function(cur)
                    return self:forget(cur.id)
                end)
            end
        elseif rec.expires_us and rec.expires_us <= now and not self.provisioning[id] then
            self:expire(id)
        elseif rec.state == model.STATE.STOPPING and not self.provisioning[id] and self.available and self.leader then
            self:with_sandbox(id, false, function(cur)
                return self:remove_locked(cur, cur.message)
            end)
        end
    end
    if self.available then
        self:reconcile(false)
    end
end

return P
