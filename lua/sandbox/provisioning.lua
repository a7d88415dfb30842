-- Part of the lifecycle service (sandbox/service.lua): create and background provisioning (API.md §2.1,
-- §6.1). The runtime adapter does the steps (image, agent, create, start); the service owns the record,
-- the hooks, the wait of other operations and what a failure becomes.
local sync = require("common.sync")
local model = require("sandbox.model")
local image_access = require("sandbox.image_access")
local C = require("sandbox.constants")
local metrics = require("common.metrics")
local volumes = require("sandbox.volumes")

local P = {}

-- the error code of a failed provisioning step (API.md §1.6, §6.1)
local STEP_CODES = {
    image = "DOCKER::SANDBOX_IMAGE_PULL_FAILED",
    agent = "DOCKER::SANDBOX_EXECD_DISTRIBUTION_FAILED",
    create = "DOCKER::SANDBOX_START_FAILED",
    start = "DOCKER::SANDBOX_START_FAILED",
}
local INTERNAL = "DOCKER::SANDBOX_START_FAILED"

local STEP_SECONDS = metrics.default:histogram("opensandbox_provisioning_step_duration_seconds",
    "Duration of each step of successful provisionings (the runtime's steps, and \"total\").", { "step" },
    metrics.SLOW_SECONDS)
local OUTCOMES = metrics.default:counter("opensandbox_provisioning_total",
    "Provisionings that ended, by result (success, failure).", { "result" })
local FAILED_STEPS = metrics.default:counter("opensandbox_provisioning_failures_total",
    "Failed provisionings by the step that failed (\"internal\": no step named).", { "step" })
-- the step names adapters report (placed.steps "<name>_ms"); any other name counts as "other"
local STEP_NAMES = {
    image = true,
    agent = true,
    agent_volume = true,
    create = true,
    upload = true,
    start = true,
    restart = true,
    inspect = true,
}

-- Records the metrics of a provisioning that ended: `placed` on success, else `err` (the adapter's error).
local function observe(placed, err, seconds)
    if placed then
        OUTCOMES:labels("success"):inc()
        for k, ms in pairs(placed.steps or {}) do
            local name = type(k) == "string" and k:match("^(.*)_ms$")
            if name and type(ms) == "number" then
                STEP_SECONDS:labels(STEP_NAMES[name] and name or "other"):observe(ms / 1000)
            end
        end
        if seconds then
            STEP_SECONDS:labels("total"):observe(seconds)
        end
    else
        OUTCOMES:labels("failure"):inc()
        local step = type(err) == "table" and err.step
        FAILED_STEPS:labels(STEP_CODES[step or ""] and step or "internal"):inc()
    end
end


function P:create(spec, ctx)
    local ok, err = self:require_runtime()
    if not ok then
        return nil, err
    end
    -- a snapshotId becomes the snapshot's image (sandbox/snapshots.lua); the hooks see both
    ok, err = self:resolve_source(spec, ctx)
    if not ok then
        return nil, err
    end
    -- a claim of a warm pool (sandbox/pools.lua): the template's image and limits, seen by the hooks
    local pool
    pool, err = self:resolve_pool(spec, ctx)
    if pool == nil then
        return nil, err
    end
    if self.hooks then
        local hspec, herr = self.hooks:before_create(ctx, spec)
        if not hspec then
            return nil, herr
        end
        spec = hspec
    end
    if pool then
        local view, cerr = self:claim_member(spec, ctx, pool)
        if view or cerr then
            return view, cerr
        end -- (none to give: a cold create from the template, below)
    end
    local vok, verr = self:check_volumes(spec)
    if not vok then
        return nil, verr
    end
    vok, verr = self:check_network_policy(spec) -- (sandbox/egress.lua)
    if not vok then
        return nil, verr
    end
    local id = self.core.uuid.v4()
    local rec = model.new_record(id, spec, self:now_us())
    rec.principal = ctx and ctx.principal or nil
    rec.access_token = self.core.uuid.random_hex(32)
    rec.egress_token = spec.network_policy and self.core.uuid.random_hex(32) or nil
    -- the name a hook chose for the runtime object
    local name = self.hooks and self.hooks:sandbox_name(ctx, spec, rec) or nil
    -- A 202 is a promise (§6.5 step 4): what provisioning needs is durable before the reply, so that a
    -- restart, even after kill -9, resumes it. The secrets first: a crash between the two writes leaves
    -- sealed secrets without a record, which load() deletes; never a record that cannot be resumed.
    rec.provision = model.resume_spec(spec, name)
    if spec.snapshot_id then -- (the hooks may have yielded: deleted meanwhile?)
        ok, err = self:snapshot_ready(spec.snapshot_id)
        if not ok then
            return nil, err
        end
    end
    local sealed, serr = self.store:seal(id, { env = spec.env or {}, auth = spec.image.auth })
    if not sealed then
        self.log.error("store write failed", { sandbox_id = id, error = tostring(serr) })
        return nil, self:store_error(serr)
    end
    local committed, cerr = self:commit(rec)
    if not committed then
        self.store:drop_sealed(id)
        return nil, cerr
    end
    self:start_provisioning(id, spec, name)
    self:notify_transition(rec, nil, model.STATE.PENDING)
    return model.create_view(rec)
end

--- Every rule of the request's volumes, before anything is created (API.md §12): the hooks' result is
--- validated again, host paths are resolved and checked against storage.allowed_host_paths (their
--- `source` set), and the runtime checks what it must (a named volume that must exist, subPath support).
--- Returns true (spec.volumes normalised), or nil and a 400/503 error object.
function P:check_volumes(spec)
    local vols, err = volumes.validate(spec.volumes)
    if not vols then
        return nil, err
    end
    spec.volumes = vols
    if #vols == 0 then
        return true
    end
    local storage = self.config and self.config.storage or {}
    local ok
    ok, err = volumes.resolve_hosts(vols, storage.allowed_host_paths)
    if not ok then
        return nil, err
    end
    if not self.runtime.check_volumes then
        return nil, self:runtime_error({ kind = "unsupported", message = "volumes are not supported by the "
            .. tostring(self.runtime.name) .. " runtime." })
    end
    ok, err = self.runtime:check_volumes(vols)
    if not ok then
        return nil, self:runtime_error(err, "SANDBOX::INVALID_PARAMETER", "check the volumes of")
    end
    return true
end

--- Runs provisioning of the committed Pending record `id` in a background task.
function P:start_provisioning(id, spec, name)
    self.provisioning[id] = self.provisioning[id] or sync.event()
    self.core.spawn(function()
        local pok, perr = pcall(self.provision, self, id, spec, name)
        if not pok then
            observe(nil, nil)
            self.log.error("provisioning raised", { sandbox_id = id, error = tostring(perr) })
            self:finish_provisioning(id, nil, INTERNAL .. ": internal error: " .. tostring(perr))
        end
    end)
end

--- Marks the Pending records loaded from the store for resumption (called by load(), before anything can
--- wait on them): each is "provisioning" from now on, so operations wait for it and reconciliation leaves
--- its runtime object alone. A record written before resumption existed (no `provision`), or whose sealed
--- secrets are missing, is left to reconcile(), which fails it as interrupted. Sealed secrets of records
--- that are not Pending (a crash after provisioning ended, or before the record was written) are deleted.
function P:mark_resumable()
    local keep = {}
    for id, rec in pairs(self.records) do
        if rec.state == model.STATE.PENDING and rec.provision and not model.is_provisioning_failure(rec) then
            local secrets, err = self.store:unseal(id)
            if secrets then
                keep[id] = true
                self.resuming[id] = secrets
                self.provisioning[id] = sync.event()
            elseif err then
                self.log.error("cannot read the sealed secrets of a pending sandbox", { sandbox_id = id,
                    error = tostring(err) })
            end
        end
    end
    local ids = self.store:sealed_ids() or {}
    for _, id in ipairs(ids) do
        if not keep[id] then
            self.store:drop_sealed(id)
        end
    end
end

--- Resumes the provisioning of the sandboxes mark_resumable found (once the runtime is reachable): from
--- wherever it stopped, since the adapter's provision takes what it had already made.
function P:resume_provisioning()
    for id, secrets in pairs(self.resuming) do
        self.resuming[id] = nil
        local rec = self.records[id]
        if rec then
            local p = rec.provision
            local spec = {
                image = { uri = rec.image_uri, auth = secrets.auth },
                entrypoint = rec.entrypoint,
                env = secrets.env or {},
                nano_cpus = p.nano_cpus,
                memory = p.memory,
                gpu = p.gpu,
                platform = rec.platform,
                volumes = rec.volumes,
                snapshot_id = rec.snapshot_id,
                network_policy = rec.network_policy,
                runtime_template = p.runtime_template,
            }
            self.log.info("resuming interrupted provisioning", { sandbox_id = id })
            self:start_provisioning(id, spec, p.name)
        end
    end
end

--- Background provisioning (§6.1): hands the sandbox to the runtime and records the outcome. Never raises
--- for operational errors.
function P:provision(id, spec, name)
    local rec = self.records[id]
    local t0 = self:now_us()
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
        snapshot_id = rec.snapshot_id,
    }
    -- a private image needs proof of access from this principal (sandbox.image_access)
    local verify, repo, aerr = image_access.must_verify(self.store, rec.principal, spec)
    if aerr then
        self.log.error("cannot read image access from the store; asking the registry", { error = tostring(aerr) })
    end
    spec.image.verify = verify or nil
    local placed, err = self.runtime:provision(sandbox, spec)
    while not placed and type(err) == "table" and err.kind == "unavailable" and not self.stopped do
        -- the runtime went away: not a provisioning error. Wait for it, then provision again (the adapter
        -- takes what it had made); operations waiting meanwhile get their 409 after PROVISION_WAIT.
        self:mark_unavailable(err)
        self.log.warn(err.busy and "runtime busy while provisioning; retrying"
            or "runtime unreachable while provisioning; retrying when it is back", { sandbox_id = id })
        repeat
            self.core.timer.sleep(C.UNAVAILABLE_RETRY)
        until self.available or self.stopped or not self.records[id]
        if not self.records[id] then
            return self:finish_provisioning(id, nil, nil)
        end
        placed, err = self.runtime:provision(sandbox, spec)
    end
    if placed then
        self:note_created_volumes(id, placed.created_volumes)
    end
    if placed and verify then
        local ok, gerr = image_access.granted(self.store, repo, rec.principal, true)
        if not ok then
            self.log.error("cannot record image access", { sandbox_id = id, error = tostring(gerr) })
        end
    end
    observe(placed, err, placed and (self:now_us() - t0) / 1e6)
    if not placed then
        local code = STEP_CODES[type(err) == "table" and err.step or ""] or INTERNAL
        code = self.runtime.codes and self.runtime.codes[code] or code -- the runtime's name for it
        return self:finish_provisioning(id, nil, model.provisioning_error_message(code,
            tostring(type(err) == "table" and err.message or err)))
    end
    return self:finish_provisioning(id, placed)
end

--- Records the named volumes provisioning created (the runtime's `placed.created_volumes`), so that
--- deleteOnSandboxTermination removes them, and only them, also after a restart.
function P:note_created_volumes(id, names)
    for _, name in ipairs(names or {}) do
        local ok, err = self.store:add_created_volume(name, id, self:now_us())
        if not ok then
            self.log.error("cannot record a created volume", { sandbox_id = id, volume = name, error = tostring(err) })
        end
    end
end

--- After a sandbox's removal: removes its pvc volumes marked deleteOnSandboxTermination that this server
--- created (the store says so). A volume still in use by another sandbox, or that the runtime cannot
--- remove, stays (logged). Never fails.
function P:remove_sandbox_volumes(rec)
    if not rec.volumes or not self.runtime.remove_volume then
        return
    end
    for _, v in ipairs(rec.volumes) do
        local name = v.pvc and v.pvc.deleteOnSandboxTermination and v.pvc.claimName
        local created = name and self.store:created_volume(name)
        if created then
            local ok, err = self.runtime:remove_volume(name)
            if ok then
                self.store:drop_created_volume(name)
                self.log.info("removed the sandbox's volume", { sandbox_id = rec.id, volume = name })
            else
                self.log.warn("volume kept: it cannot be removed", { sandbox_id = rec.id, volume = name,
                    error = tostring(type(err) == "table" and err.message or err) })
            end
        end
    end
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
        rec.provision = nil
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
    elseif cur and failure then
        self.log.warn("provisioning failed", { sandbox_id = id, error = failure })
        self:commit_provisioning_failure(cur, failure)
    elseif placed then
        -- deleted while provisioning (cannot happen through the API, which waits; be safe anyway)
        self.runtime:remove({ id = id, handle = placed.handle, place = placed.place })
    end
    self.provisioning[id] = nil
    -- provisioning has ended: the secrets it kept for a resumption go (a failure here is cleaned at load)
    self.store:drop_sealed(id)
    lock:release()
    if ev then
        ev:set(true)
    end
end

return P
