-- Part of the lifecycle service (sandbox/service.lua): claims of warm pool members (a create with
-- extensions.poolRef; provisioning.lua calls resolve_pool before the hooks and claim_member after them). The
-- pools, their members and the refill are sandbox/pools.lua, whose top comment says how a claim works.
local errors = require("common.errors")
local metrics = require("common.metrics")
local model = require("sandbox.model")

local STATE = model.STATE

local P = {}

P.CLAIM_ATTEMPTS = 3 -- members tried by one claim before it counts as empty

-- what the runtime sees of a member (the contract's `rec`, as in pools.lua)
local function member_rec(m)
    return { id = m.id, handle = m.handle, place = m.place, access_token = m.access_token, claim_file = m.claim_file }
end

local CLAIMS = metrics.default:counter("opensandbox_pool_claims_total",
    "Creates with extensions.poolRef, by result: claimed (a warm member), cold (none: created from the "
        .. "template), empty (none: 503).", { "result" })
-- the claim's resource limits against the template's: a claim may ask for less or the same, never more;
-- the sandbox gets the template's (the member was made with them). Returns true or nil, err.
local function check_limits(spec, t)
    local rl = t.resource_limits or {}
    local function exceeds(what, text)
        return nil, errors.invalid(string.format("resourceLimits.%s exceeds the pool's template (%s).", what, text))
    end
    -- (a template without a limit has none: any claim fits)
    if spec.nano_cpus and t.nano_cpus and spec.nano_cpus > t.nano_cpus then
        return exceeds("cpu", rl.cpu)
    end
    if spec.memory and t.memory and spec.memory > t.memory then
        return exceeds("memory", rl.memory)
    end
    if spec.gpu and (t.gpu == nil or (t.gpu ~= -1 and (spec.gpu == -1 or spec.gpu > t.gpu))) then
        return exceeds("gpu", rl.gpu or "none")
    end
    spec.nano_cpus, spec.memory, spec.gpu = t.nano_cpus, t.memory, t.gpu
    return true
end

--- Before the hooks: the pool a create claims, with the template's image and limits put into the spec so
--- that the hooks see what the sandbox will be (and `spec.pool`). Returns the pool, false when the create
--- claims none, or nil, err (400: unknown pool, a field the claim cannot change).
function P:resolve_pool(spec, ctx)
    if not spec.pool then
        return false
    end
    local ok, err = self:pools_supported()
    if not ok then
        return nil, err
    end
    local pool = self:visible_pool(spec.pool, ctx)
    if not pool then
        return nil, errors.invalid(string.format("extensions.poolRef: pool '%s' does not exist.", spec.pool))
    end
    local t = pool.template
    if spec.image and spec.image.uri ~= t.image.uri then
        return nil, errors.invalid(string.format("image.uri must be the pool's template image ('%s') or absent "
            .. "with extensions.poolRef.", t.image.uri))
    end
    if spec.volumes and #spec.volumes > 0 then
        return nil, errors.invalid("volumes cannot be set with extensions.poolRef: they are the pool's template's.")
    end
    if spec.platform then
        return nil, errors.invalid("platform cannot be set with extensions.poolRef.")
    end
    ok, err = check_limits(spec, t)
    if not ok then
        return nil, err
    end
    spec.image = { uri = t.image.uri, auth = t.image.auth }
    spec.volumes = {}
    return pool
end

--- After the hooks: claims a ready member of `pool` for the create `spec`. Returns the create view, or
--- nil, err (a store failure, or 503 POOL::EMPTY with pools.on_empty = "error"), or nil, nil when the pool
--- has no member to give and the create goes on cold (the spec is then the template's, with the claim's
--- env after the template's).
function P:claim_member(spec, ctx, pool)
    local ok, err = check_limits(spec, pool.template) -- (again: a hook may have raised them)
    if not ok then
        return nil, err
    end
    for _ = 1, P.CLAIM_ATTEMPTS do
        local m
        while #pool.ready > 0 and not m do
            local cand = self.pool_members[table.remove(pool.ready, 1)]
            if cand and cand.state == "ready" then
                m = cand
            end
        end
        if not m then
            break
        end
        local view
        view, err = self:claim_one(spec, ctx, pool, m)
        if view or err then
            return view, err
        end
    end
    self:pool_kick()
    if self:pool_settings().on_empty == "error" then
        CLAIMS:labels("empty"):inc()
        return nil, errors.new(503, "POOL::EMPTY", string.format("Pool '%s' has no warm sandbox available.",
            pool.name), { ["Retry-After"] = "1" })
    end
    CLAIMS:labels("cold"):inc()
    local t = pool.template
    local env = {}
    for _, kv in ipairs(t.env or {}) do
        env[#env + 1] = kv
    end
    for _, kv in ipairs(spec.env or {}) do
        env[#env + 1] = kv
    end
    spec.env = env
    spec.volumes = t.volumes
    spec.runtime_template = t.runtime_template -- (the runtime's own part of the template, rt:pool_template)
    spec.pool = nil -- a cold sandbox is not one of the pool's members
    return nil, nil
end

-- Claims the member `m` (taken off the ready list): the durable record first, then the agent. Returns the
-- view; nil, err on a store failure (the member goes back); nil, nil when the agent did not take the claim
-- (the member is dropped: try the next).
function P:claim_one(spec, ctx, pool, m)
    m.state = "claimed"
    self.pool_last_claim_us = self:now_us() -- the refill slows down while claims arrive (pools.lua)
    local t = pool.template
    local now = self:now_us()
    local rec = model.new_record(m.id, spec, now)
    rec.principal = ctx and ctx.principal or nil
    rec.access_token = self.core.uuid.random_hex(32)
    rec.pool = pool.name
    rec.handle, rec.place = m.handle, m.place
    rec.image_uri = t.image.uri
    rec.volumes = t.volumes and #t.volumes > 0 and t.volumes or nil
    model.apply_status(rec, model.status(STATE.RUNNING, model.REASON.CONTAINER_RUNNING, model.MESSAGE.RUNNING, now))
    local committed, cerr = self:commit(rec)
    local t_committed = self:now_us()
    if not committed then
        m.state = "ready"
        table.insert(pool.ready, 1, m.id)
        return nil, cerr
    end
    local env = {}
    for i, kv in ipairs(spec.env or {}) do
        env[i] = kv[1] .. "=" .. kv[2]
    end
    local mono = self.core.monotonic_us
    local t_sent = mono and mono()
    local ok, got = self.runtime:pool_claim(member_rec(m), { token = rec.access_token,
        entrypoint = spec.entrypoint, env = env })
    local t_back = mono and mono()
    if not ok then
        self.log.warn("pool member did not take its claim; dropping it", { pool = pool.name, sandbox_id = m.id,
            error = tostring(type(got) == "table" and got.message or got) })
        self:forget(rec.id)
        self:pool_drop_member(m, true)
        return nil, nil
    end
    self.pool_members[m.id] = nil
    pool.members[m.id] = nil
    CLAIMS:labels("claimed"):inc()
    -- where a claim's time went: the durable write, then the agent taking the claim; with the agent's own
    -- timings (same monotonic clock), the agent call split into: until the agent accepted the connection,
    -- until it had read the request, its work, and its answer's way back into this loop
    local t_end = self:now_us()
    local fields = { sandbox_id = m.id, pool = pool.name, store_ms = (t_committed - now) / 1000,
        agent_ms = (t_end - t_committed) / 1000, via = type(got) == "table" and got.file and "file" or "agent" }
    local at = type(got) == "table" and got.accepted_us and got -- (the agent's timings, pool_agent.lua)
    if at and t_sent then
        fields.agent_accept_ms = (at.accepted_us - t_sent) / 1000
        fields.agent_read_ms = (at.handled_us - at.accepted_us) / 1000
        fields.agent_work_ms = (at.replied_us - at.handled_us) / 1000
        fields.agent_back_ms = (t_back - at.replied_us) / 1000
    end
    self.log.info("sandbox claimed from pool", fields)
    rec = self.records[m.id] or rec
    self:notify_transition(rec, nil, rec.state)
    self:arm_timer(rec)
    self:pool_kick()
    return model.create_view(rec)
end

return P
