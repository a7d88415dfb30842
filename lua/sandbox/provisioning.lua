-- Part of the lifecycle service (sandbox/service.lua): create and background provisioning (API.md §2.1,
-- §6.1). The runtime adapter does the steps (image, agent, create, start); the service owns the record,
-- the hooks, the wait of other operations and what a failure becomes.
local sync = require("common.sync")
local model = require("sandbox.model")
local image_access = require("sandbox.image_access")

local P = {}

-- the error code of a failed provisioning step (API.md §1.6, §6.1)
local STEP_CODES = {
    image = "DOCKER::SANDBOX_IMAGE_PULL_FAILED",
    agent = "DOCKER::SANDBOX_EXECD_DISTRIBUTION_FAILED",
    create = "DOCKER::SANDBOX_START_FAILED",
    start = "DOCKER::SANDBOX_START_FAILED",
}
local INTERNAL = "DOCKER::SANDBOX_START_FAILED"

function P:create(spec, ctx)
    local ok, err = self:require_runtime()
    if not ok then
        return nil, err
    end
    if self.hooks then
        local hspec, herr = self.hooks:before_create(ctx, spec)
        if not hspec then
            return nil, herr
        end
        spec = hspec
    end
    local id = self.core.uuid.v4()
    local rec = model.new_record(id, spec, self:now_us())
    rec.principal = ctx and ctx.principal or nil
    rec.access_token = self.core.uuid.random_hex(32)
    -- the name a hook chose for the runtime object (not stored: it is used once, to provision)
    local name = self.hooks and self.hooks:sandbox_name(ctx, spec, rec) or nil
    local committed, cerr = self:commit(rec)
    if not committed then
        return nil, cerr
    end
    self.provisioning[id] = sync.event()
    self.core.spawn(function()
        local pok, perr = pcall(self.provision, self, id, spec, name)
        if not pok then
            self.log.error("provisioning raised", { sandbox_id = id, error = tostring(perr) })
            self:finish_provisioning(id, nil, INTERNAL .. ": internal error: " .. tostring(perr))
        end
    end)
    self:notify_transition(rec, nil, model.STATE.PENDING)
    return model.create_view(rec)
end

--- Background provisioning (§6.1): hands the sandbox to the runtime and records the outcome. Never raises
--- for operational errors.
function P:provision(id, spec, name)
    local rec = self.records[id]
    self.log.info("provisioning", { sandbox_id = id, image = rec.image_uri })
    local sandbox = {
        id = id,
        name = name,
        created_us = rec.created_us,
        expires_us = rec.expires_us,
        metadata = rec.metadata,
        principal = rec.principal,
        platform = rec.platform,
        access_token = rec.access_token,
    }
    -- a private image needs proof of access from this principal (sandbox.image_access)
    local verify, repo, aerr = image_access.must_verify(self.store, rec.principal, spec)
    if aerr then
        self.log.error("cannot read image access from the store; asking the registry", { error = tostring(aerr) })
    end
    spec.image.verify = verify or nil
    local placed, err = self.runtime:provision(sandbox, spec)
    if placed and verify then
        local ok, gerr = image_access.granted(self.store, repo, rec.principal, true)
        if not ok then
            self.log.error("cannot record image access", { sandbox_id = id, error = tostring(gerr) })
        end
    end
    if not placed then
        local code = STEP_CODES[type(err) == "table" and err.step or ""] or INTERNAL
        return self:finish_provisioning(id, nil, model.provisioning_error_message(code,
            tostring(type(err) == "table" and err.message or err)))
    end
    return self:finish_provisioning(id, placed)
end

--- Ends provisioning under the sandbox's lock: `placed` (the adapter's { handle, place, status, steps })
--- on success, else `failure` (the "{CODE}: {detail}" message). Wakes the operations that waited for it.
function P:finish_provisioning(id, placed, failure)
    local ev = self.provisioning[id]
    local lock = self:lock_of(id)
    lock:acquire()
    local cur = self.records[id]
    if cur and placed then
        local rec = self:copy(cur)
        rec.handle, rec.place = placed.handle, placed.place
        local st = placed.status
        model.apply_status(rec, model.status(st.state, st.reason, st.message, st.at_us or self:now_us()))
        local fields = { sandbox_id = id, handle = placed.handle }
        for k, v in pairs(placed.steps or {}) do
            fields[k] = v
        end
        self.log.info("sandbox running", fields)
        self:commit_fact(rec)
        self:notify_transition(rec, cur.state, rec.state)
        self:arm_timer(rec)
    elseif cur then
        self.log.warn("provisioning failed", { sandbox_id = id, error = failure })
        self:commit_provisioning_failure(cur, failure)
    elseif placed then
        -- deleted while provisioning (cannot happen through the API, which waits; be safe anyway)
        self.runtime:remove({ id = id, handle = placed.handle, place = placed.place })
    end
    self.provisioning[id] = nil
    lock:release()
    if ev then
        ev:set(true)
    end
end

return P
