-- Part of the lifecycle service (sandbox/service.lua): the operations on one sandbox (API.md §2.4-§2.9):
-- pause, resume, delete (and the removal expiry shares), renew, metadata patch. Each runs under the
-- sandbox's lock; those that need the runtime wait for provisioning first (§6.2).
local errors = require("common.errors")
local model = require("sandbox.model")
local timefmt = require("common.timefmt")

local STATE, REASON, MESSAGE = model.STATE, model.REASON, model.MESSAGE

local P = {}

local function not_running()
    return errors.new(409, "DOCKER::SANDBOX_NOT_RUNNING", "Sandbox is not in a running state.")
end
P.not_running_error = not_running

--- The record if `ctx` may see it, else nil, 404.
function P:check_visible(id, ctx)
    local rec = self.records[id]
    if not rec or not self:visible(rec, ctx) then
        return nil, errors.not_found(id)
    end
    return rec
end

-- Pause and resume differ only in these facts (§2.5, §2.6).
local TOGGLES = {
    pause = {
        from = STATE.RUNNING,
        refuse = { "DOCKER::SANDBOX_NOT_RUNNING", "Sandbox is not in a running state." },
        failed = "DOCKER::SANDBOX_PAUSE_FAILED",
        to = { state = STATE.PAUSED, reason = REASON.CONTAINER_PAUSED, message = MESSAGE.PAUSED },
    },
    resume = {
        from = STATE.PAUSED,
        refuse = { "DOCKER::SANDBOX_NOT_PAUSED", "Sandbox is not in a paused state." },
        failed = "DOCKER::SANDBOX_RESUME_FAILED",
        to = { state = STATE.RUNNING, reason = REASON.CONTAINER_RUNNING, message = MESSAGE.RUNNING },
    },
}

function P:toggle(verb, id, ctx)
    local t = TOGGLES[verb]
    local visible, verr = self:check_visible(id, ctx)
    if verr then
        return nil, verr
    end
    local caps = self.runtime.capabilities
    if caps and caps.pause == false then
        -- a runtime without pause (Kubernetes): its own refusal, whatever the sandbox's state
        local _, err = self.runtime[verb](self.runtime, visible)
        return nil, self:runtime_error(err, t.failed, verb)
    end
    return self:with_sandbox(id, true, function(cur)
        if cur.state ~= t.from then
            return nil, errors.new(409, t.refuse[1], t.refuse[2])
        end
        local ok, err = self:require_runtime()
        if not ok then
            return nil, err
        end
        ok, err = self.runtime[verb](self.runtime, cur)
        if not ok then
            return nil, self:runtime_error(err, t.failed, verb)
        end
        -- the runtime's change of this may have been applied while the runtime answered (it does not take
        -- the lock): the hooks hear of the change once, from whichever commits it first
        local now = self.records[cur.id] or cur
        local rec = self:copy(cur)
        model.apply_status(rec, model.status(t.to.state, t.to.reason, t.to.message, self:now_us()))
        self:commit_fact(rec) -- the runtime has done it: memory says so even if the store cannot yet
        self:notify_transition(rec, now.state, rec.state)
        return true
    end)
end

function P:pause(id, ctx)
    return self:toggle("pause", id, ctx)
end

function P:resume(id, ctx)
    return self:toggle("resume", id, ctx)
end

--- Removes the sandbox (delete or expiry); called under its lock. `message` is the Stopping message.
function P:remove_locked(cur, message)
    if model.is_provisioning_failure(cur) or not cur.handle then
        return self:forget(cur.id)
    end
    local ok, err = self:require_runtime()
    if not ok then
        return nil, err
    end
    local rec = self:copy(cur)
    if rec.state ~= STATE.STOPPING then
        model.apply_status(rec, model.status(STATE.STOPPING, REASON.CONTAINER_REMOVING, message, self:now_us()))
        -- the removal goes ahead even when the store cannot record it (a full disk must not keep sandboxes
        -- alive); should the server die before the store catches up, start-up reconciliation finishes it
        self:commit_fact(rec)
        self:notify_transition(rec, cur.state, rec.state)
    end
    self.removing[rec.handle] = true
    ok, err = self.runtime:remove(rec)
    self.removing[rec.handle] = nil
    if not ok then
        return nil, self:runtime_error(err, "DOCKER::SANDBOX_DELETE_FAILED", "delete")
    end
    self:forget_fact(rec.id) -- the runtime's sandbox is gone: so is ours, whatever the store says
    self:remove_sandbox_volumes(rec)
    self:note_removed(rec.id)
    self:notify_transition(rec, rec.state, "Deleted")
    return true
end

function P:delete(id, ctx)
    local cur, verr = self:check_visible(id, ctx)
    if verr then
        return nil, verr
    end
    if self.hooks then
        local ok, herr = self.hooks:before_delete(ctx, model.sandbox_view(cur))
        if not ok then
            return nil, herr
        end
    end
    return self:with_sandbox(id, true, function(rec)
        return self:remove_locked(rec, MESSAGE.DELETING)
    end)
end

function P:renew(id, expires_us, ctx)
    local _, verr = self:check_visible(id, ctx)
    if verr then
        return nil, verr
    end
    return self:with_sandbox(id, true, function(cur)
        if expires_us <= self:now_us() then
            return nil, errors.new(400, "DOCKER::INVALID_EXPIRATION", "New expiration time must be in the future.")
        end
        if model.is_provisioning_failure(cur) then
            return nil, not_running()
        end
        if not cur.expires_us then
            return nil, errors.new(409, "DOCKER::INVALID_EXPIRATION",
                string.format("Sandbox %s does not have automatic expiration enabled.", id))
        end
        local ok, err = self:runtime_expiry(cur, expires_us)
        if not ok then
            return nil, err
        end
        local rec = self:copy(cur)
        rec.expires_us = expires_us
        local c, cerr = self:commit(rec)
        if not c then
            return nil, cerr
        end
        self:arm_timer(rec)
        return { expiresAt = timefmt.format(expires_us) }
    end)
end

--- Writes a new expiry where the runtime keeps it, when it does (Kubernetes: the Pod's annotation, so that
--- another replica, or this one restarted without its store, sees the renewal). A runtime that keeps none
--- (Docker: labels cannot change; the store is the record) has no set_expiry. Returns true or nil, err.
function P:runtime_expiry(cur, expires_us)
    if not self.runtime.set_expiry or not cur.handle then
        return true
    end
    local ok, err = self:require_runtime()
    if ok then
        ok, err = self.runtime:set_expiry(cur, expires_us)
    end
    if not ok then
        -- (an ErrorResponse already, from require_runtime; else the adapter's error)
        return nil, type(err) == "table" and err.code and err or self:runtime_error(err, "GENERAL::UNKNOWN_ERROR",
            "renew")
    end
    return true
end

--- Moves the expiry to `want` when it is later than the current one (renew on access); a background task.
function P:extend_expiry(id, want)
    self.core.spawn(function()
        self:with_sandbox(id, false, function(cur)
            if cur.expires_us and want > cur.expires_us and self:runtime_expiry(cur, want) then
                local upd = self:copy(cur)
                upd.expires_us = want
                if self:commit(upd) then
                    self:arm_timer(upd)
                end
            end
            return true
        end)
    end)
end

function P:patch_metadata(id, patch, ctx)
    local _, verr = self:check_visible(id, ctx)
    if verr then
        return nil, verr
    end
    return self:with_sandbox(id, false, function(cur)
        -- the hooks see the current record and the commit follows without a yield (a quota checked here
        -- cannot be raced by another patch or create)
        if self.hooks and self.hooks.before_patch_metadata then
            local hpatch, herr = self.hooks:before_patch_metadata(ctx, cur, patch)
            if not hpatch then
                return nil, herr
            end
            patch = hpatch
        end
        local rec = self:copy(cur)
        local md = self:copy(cur.metadata or {})
        for k, v in pairs(patch) do
            if v == false then
                md[k] = nil
            else
                md[k] = v
            end
        end
        rec.metadata = md
        local c, cerr = self:commit(rec)
        if not c then
            return nil, cerr
        end
        return model.sandbox_view(rec)
    end)
end

return P
