-- Part of the lifecycle service (sandbox/service.lua): warm pools (upstream's `/pools` and
-- `extensions.poolRef`), on any runtime whose adapter declares `capabilities.pools` (lua/runtimes/README.md).
--
-- A pool is a template (image, resource limits, env, volumes) and a capacitySpec. Its *members* are sandboxes
-- the runtime made from the template ahead of time, in a waiting mode: the agent serves, and the main process
-- waits for an entrypoint (execd/src/pool.c). Members are not sandboxes of the API: they are neither in
-- `self.records` nor in the store, only in memory (`self.pool_members`) and in the runtime, whose identity
-- of each says which pool it belongs to; after a restart the runtime's list gives them back (adopted again).
--
-- A claim (a create with extensions.poolRef; sandbox/pool_claims.lua) takes a ready member and makes it the
-- sandbox:
--   1. the record is committed with the member's id (a UUID nobody has seen yet), handle and place, Running.
--      This write is the claim: a member whose id has a record is a sandbox, and is never handed out again,
--      also after a restart (reconcile finds the record and refreshes it as any sandbox);
--   2. the runtime hands the member its entrypoint, env and a fresh agent token (rt:pool_claim), which
--      replaces the member's boot token. The entrypoint becomes the main process: its exit is the sandbox's
--      Terminated/Failed as for a cold sandbox.
-- Neither step waits for the runtime's API: one durable write and one request to the agent (on Docker, a file
-- written for the agent instead when its ping showed it sees it: runtimes/docker/pool_claims.lua). A member whose
-- agent does not take the claim is dropped (record forgotten, object removed) and the next one is tried.
-- No member: a cold create from the template (pools.on_empty = "cold") or 503 POOL::EMPTY ("error").
--
-- Refill runs in one background task: it wakes on every change (claim, member ready or gone, PUT) and every
-- REFILL_PERIOD seconds, and keeps each pool at its capacitySpec (upstream's rule: the idle buffer between
-- bufferMin and bufferMax, aiming at their middle when outside; the total, allocated included, at least
-- poolMin and at most poolMax), making at most pools.refill_concurrency members at once over all pools.
-- A pool whose members fail to provision backs off (1 s doubling to 60 s).
local errors = require("common.errors")
local metrics = require("common.metrics")
local sync = require("common.sync")
local timefmt = require("common.timefmt")
local json = require("common.json")
local model = require("sandbox.model")
local counters = require("sandbox.counters")
local pool_validate = require("sandbox.pool_validate")
local image_access = require("sandbox.image_access")

local STATE = model.STATE

local P = {}

P.REFILL_PERIOD = 1 -- seconds between refill passes when nothing wakes it
P.READY_POLL = 0.02 -- seconds between two pings of a new member's agent
P.BACKOFF_MAX = 60

local SIZE = metrics.default:gauge("opensandbox_pool_size",
    "Members of each warm pool by state: warming (being made), ready (warm, idle), allocated (claimed sandboxes "
        .. "alive).", { "pool", "state" })
local current -- the service whose pools the gauge shows (the newest; one per process, specs make more)
metrics.default:on_scrape(function()
    SIZE:reset()
    if not current then
        return
    end
    for name, pool in pairs(current.pools) do
        local c = current:pool_counts(pool)
        SIZE:labels(name, "warming"):set(c.warming)
        SIZE:labels(name, "ready"):set(c.ready)
        SIZE:labels(name, "allocated"):set(c.allocated)
    end
end)

local function not_found(name)
    return errors.new(404, "POOL::NOT_FOUND", string.format("Pool '%s' not found.", tostring(name)))
end

P.CLAIMING_WINDOW_US = 2000000 -- a claim in the last 2 s: claims are arriving
P.CLAIMING_CONCURRENCY = 1 -- members made at once meanwhile

function P:pool_settings()
    local c = self.config and self.config.pools or {}
    return {
        on_empty = c.on_empty or "cold",
        concurrency = c.refill_concurrency or 2,
        max_size = c.max_pool_size or 100,
        ready_timeout = c.ready_timeout_seconds or 30,
    }
end

function P:pools_supported()
    local caps = self.runtime.capabilities
    if caps and caps.pools and self.runtime.pool_claim and self.runtime.pool_ping then
        return true
    end
    return nil, errors.new(400, "SANDBOX::API_NOT_SUPPORTED", string.format(
        "Pools are not supported by the %s runtime.", tostring(self.runtime.name)))
end

---------------------------------------------------------------------------------------------------------
-- state and views
---------------------------------------------------------------------------------------------------------

--- Loads the pools from the store (called by load()). Members come back from the runtime (reconcile).
function P:load_pools()
    current = self
    if not self.store.all_pools then
        return 0
    end
    local rows, err = self.store:all_pools()
    if not rows then
        return nil, err
    end
    for _, row in ipairs(rows) do
        -- (JSON numbers come back as floats: the limits and capacities are integers again)
        for _, t in ipairs({ row.template, row.capacity }) do
            for k, v in pairs(t) do
                if type(v) == "number" then
                    t[k] = math.tointeger(v) or v
                end
            end
        end
        row.members, row.ready = {}, {}
        self.pools[row.name] = row
    end
    return #rows
end

--- { warming, ready, idle = warming + ready, allocated, total = idle + allocated } of a pool.
function P:pool_counts(pool)
    local c = { warming = 0, ready = 0, allocated = 0 }
    for _, m in pairs(pool.members) do
        if m.state == "warming" then
            c.warming = c.warming + 1
        elseif m.state == "ready" then
            c.ready = c.ready + 1
        end
    end
    for _, rec in pairs(self.records) do
        if rec.pool == pool.name and counters.LIVE[rec.state] then
            c.allocated = c.allocated + 1
        end
    end
    c.idle = c.warming + c.ready
    c.total = c.idle + c.allocated
    return c
end

function P:pool_view(pool)
    local c = self:pool_counts(pool)
    local cap = pool.capacity
    return {
        name = pool.name,
        capacitySpec = { bufferMax = cap.bufferMax, bufferMin = cap.bufferMin, poolMax = cap.poolMax,
            poolMin = cap.poolMin },
        status = { total = c.total, allocated = c.allocated, available = c.ready,
            revision = tostring(math.tointeger(pool.revision) or pool.revision) },
        createdAt = timefmt.format(pool.created_us),
    }
end

-- the pool `name` when `ctx` may see it (pools are owned like sandboxes: views.visible)
function P:visible_pool(name, ctx)
    local pool = self.pools[name]
    if pool and self:visible(pool, ctx) then
        return pool
    end
    return nil
end

-- what the store keeps of a pool: the template without the registry credentials (kept in memory only)
local function stored(pool)
    local t = {}
    for k, v in pairs(pool.template) do
        t[k] = v
    end
    t.image = { uri = pool.template.image.uri }
    return { name = pool.name, principal = pool.principal, template = t, capacity = pool.capacity,
        revision = pool.revision, created_us = pool.created_us }
end

---------------------------------------------------------------------------------------------------------
-- the API: POST /pools, GET /pools, GET / PUT / DELETE /pools/{name}
---------------------------------------------------------------------------------------------------------

function P:create_pool(body, ctx)
    local ok, err = self:pools_supported()
    if not ok then
        return nil, err
    end
    local s = self:pool_settings()
    local req
    local rt = self.runtime
    req, err = pool_validate.create(body, { ncpu = self.ncpu, max_size = s.max_size,
        -- a runtime's own template shape (Kubernetes: a PodTemplateSpec), turned into ours
        runtime_template = rt.pool_template and function(v, name)
            return rt:pool_template(v, name)
        end or nil })
    if not req then
        return nil, err
    end
    if self.pools[req.name] then
        return nil, errors.new(409, "POOL::ALREADY_EXISTS", string.format("Pool '%s' already exists.", req.name))
    end
    ok, err = self:check_volumes(req.template) -- host paths allowed, named volumes known (provisioning.lua)
    if not ok then
        return nil, err
    end
    local pool = { name = req.name, principal = ctx and ctx.principal or nil, template = req.template,
        capacity = req.capacity, revision = 1, created_us = self:now_us(), members = {}, ready = {} }
    ok, err = self:pool_check(pool) -- (the runtime's own checks of a member, nothing made)
    if not ok then
        return nil, err
    end
    if self.pools[req.name] then -- (check_volumes and pool_check may have yielded)
        return nil, errors.new(409, "POOL::ALREADY_EXISTS", string.format("Pool '%s' already exists.", req.name))
    end
    ok, err = self.store:put_pool(stored(pool))
    if not ok then
        return nil, self:store_error(err)
    end
    self.pools[pool.name] = pool
    self.log.info("pool created", { pool = pool.name, pool_min = pool.capacity.poolMin,
        pool_max = pool.capacity.poolMax })
    self:pool_event(pool, "created")
    self:pool_kick()
    return self:pool_view(pool)
end

function P:list_pools(ctx)
    local names = {}
    for name, pool in pairs(self.pools) do
        if self:visible(pool, ctx) then
            names[#names + 1] = name
        end
    end
    table.sort(names)
    local items = json.array()
    for i, name in ipairs(names) do
        items[i] = self:pool_view(self.pools[name])
    end
    return { items = items }
end

function P:get_pool(name, ctx)
    local pool = self:visible_pool(name, ctx)
    if not pool then
        return nil, not_found(name)
    end
    return self:pool_view(pool)
end

function P:update_pool(name, body, ctx)
    local pool = self:visible_pool(name, ctx)
    if not pool then
        return nil, not_found(name)
    end
    local req, err = pool_validate.update(body, { max_size = self:pool_settings().max_size })
    if not req then
        return nil, err
    end
    local upd = {}
    for k, v in pairs(pool) do
        upd[k] = v
    end
    upd.capacity, upd.revision = req.capacity, pool.revision + 1
    local ok
    ok, err = self.store:put_pool(stored(upd))
    if not ok then
        return nil, self:store_error(err)
    end
    pool.capacity, pool.revision = upd.capacity, upd.revision
    self:pool_event(pool, "updated")
    self:pool_kick() -- reconciles to the new capacity
    return self:pool_view(pool)
end

--- Deletes the pool and removes its idle members; claimed sandboxes stay (they are sandboxes now).
function P:delete_pool(name, ctx)
    local pool = self:visible_pool(name, ctx)
    if not pool then
        return nil, not_found(name)
    end
    local ok, err = self.store:delete_pool(name)
    if not ok then
        return nil, self:store_error(err)
    end
    self.pools[name] = nil
    for _, m in pairs(pool.members) do
        if m.state == "ready" then -- (warming ones are removed when their provisioning ends)
            self:pool_drop_member(m, true)
        end
    end
    self.log.info("pool deleted", { pool = name })
    self:pool_event(pool, "deleted")
    return true
end

-- a pool's change on the event stream (GET /events), when the hub takes pool events
function P:pool_event(pool, what)
    if self.events and self.events.pool then
        self.events:pool(pool, what, self:pool_view(pool))
    end
end

---------------------------------------------------------------------------------------------------------
-- members
---------------------------------------------------------------------------------------------------------

-- what the runtime sees of a member (the contract's `rec`: id, handle, place, access_token; claim_file: what its
-- last ping said, rt:pool_ping)
local function member_rec(m)
    return { id = m.id, handle = m.handle, place = m.place, access_token = m.access_token, claim_file = m.claim_file }
end

--- Forgets a member and (with `remove`) removes its runtime object in the background. Never yields.
function P:pool_drop_member(m, remove)
    m.state = "gone"
    self.pool_members[m.id] = nil
    local pool = self.pools[m.pool]
    if pool and pool.members[m.id] == m then
        pool.members[m.id] = nil
    end
    if remove and m.handle then
        self.core.spawn(function()
            self.removing[m.handle] = true
            local ok, err = self.runtime:remove(member_rec(m))
            self.removing[m.handle] = nil
            if not ok then
                self.log.warn("cannot remove a pool member", { pool = m.pool, sandbox_id = m.id,
                    error = tostring(type(err) == "table" and err.message or err) })
            end
        end)
    end
    self:pool_kick()
end

-- Waits until the member's agent answers (up to pools.ready_timeout_seconds), then makes it ready. A member
-- that never answers, or whose pool went meanwhile, is removed.
function P:pool_await_ready(m)
    local deadline = self:now_us() + math.floor(self:pool_settings().ready_timeout * 1e6)
    local ok, err -- (err: the ping's info when ok)
    repeat
        ok, err = self.runtime:pool_ping(member_rec(m))
        if not ok then
            self.core.timer.sleep(P.READY_POLL)
        end
    until ok or m.state ~= "warming" or self:now_us() >= deadline or self.stopped
    local pool = self.pools[m.pool]
    if m.state ~= "warming" then
        return -- dropped meanwhile (it died, or was removed)
    end
    if not ok or not pool or pool.members[m.id] ~= m then
        if not ok then
            self.log.warn("pool member's agent never answered; replacing it", { pool = m.pool, sandbox_id = m.id,
                error = tostring(type(err) == "table" and err.message or err) })
        end
        return self:pool_drop_member(m, true)
    end
    m.claim_file = type(err) == "table" and err.claim_file or nil -- (its agent sees a claim written for it)
    m.state = "ready"
    pool.ready[#pool.ready + 1] = m.id
    self:pool_kick()
end

-- the contract's `sandbox` and `spec` of member `m` of `pool` (the template in waiting mode)
local function member_of(pool, m)
    local t = pool.template
    local sandbox = { id = m.id, created_us = m.created_us, metadata = {}, principal = pool.principal,
        access_token = m.access_token, pool = pool.name }
    local spec = { image = { uri = t.image.uri, auth = t.image.auth }, entrypoint = { "true" }, env = t.env or {},
        nano_cpus = t.nano_cpus, memory = t.memory, gpu = t.gpu, volumes = t.volumes, pool_member = true,
        runtime_template = t.runtime_template }
    return sandbox, spec
end

-- Before a pool is created: whether the runtime could make a member of it (rt:pool_check, optional: a
-- Kubernetes API server validates the whole pod, template included, without creating it). true or nil, err.
function P:pool_check(pool)
    if not self.runtime.pool_check then
        return true
    end
    local sandbox, spec = member_of(pool, { id = self.core.uuid.v4(), created_us = self:now_us(),
        access_token = self.core.uuid.random_hex(32) })
    local ok, err = self.runtime:pool_check(sandbox, spec)
    if not ok then
        return nil, self:runtime_error(err, "DOCKER::SANDBOX_START_FAILED", "check")
    end
    return true
end

-- Makes one member of `pool` (in a refill task): the runtime provisions the template in waiting mode.
function P:pool_add_member(pool)
    local id = self.core.uuid.v4()
    local m = { id = id, pool = pool.name, state = "warming", created_us = self:now_us(),
        access_token = self.core.uuid.random_hex(32) }
    self.pool_members[id] = m
    pool.members[id] = m
    local sandbox, spec = member_of(pool, m)
    -- a private image pulled by another tenant needs proof of access from the pool's owner (as a create)
    local verify, repo = image_access.must_verify(self.store, pool.principal, spec)
    spec.image.verify = verify or nil
    local placed, err = self.runtime:provision(sandbox, spec)
    if placed and verify then
        image_access.granted(self.store, repo, pool.principal, true)
    end
    if not placed then
        pool.failures = (pool.failures or 0) + 1
        local wait = math.min(2 ^ (pool.failures - 1), P.BACKOFF_MAX)
        pool.retry_us = self:now_us() + math.floor(wait * 1e6)
        self.log.warn("pool member provisioning failed", { pool = pool.name, sandbox_id = id, retry_s = wait,
            error = tostring(type(err) == "table" and err.message or err) })
        if type(err) == "table" and err.kind == "unavailable" then
            self:mark_unavailable(err)
        end
        return self:pool_drop_member(m, false)
    end
    pool.failures, pool.retry_us = 0, nil
    m.handle, m.place = placed.handle, placed.place
    if m.state ~= "warming" then -- it died before provisioning returned (the watch saw it)
        return self:pool_drop_member(m, true)
    end
    return self:pool_await_ready(m)
end

--- A member the runtime lists that we have no record of (reconcile): known ones are checked, unknown ones
--- (after a restart) adopted as warming (their agent is pinged, then they are ready) when their pool exists
--- and they run, else removed. Returns nothing.
function P:pool_listed(obs)
    local s = obs.sandbox
    local m = self.pool_members[obs.id]
    local running = obs.status and obs.status.state == STATE.RUNNING
    if m then
        -- (one still being made may be listed Pending: only an ended or paused one is dropped)
        local st = obs.status and obs.status.state
        if st and st ~= STATE.RUNNING and st ~= STATE.PENDING and m.state ~= "claimed" and m.handle == obs.handle then
            self:pool_drop_member(m, true)
        end
        return
    end
    local pool = self.pools[s.pool]
    if not (pool and running and s.access_token) then
        if obs.status and self.leader then -- (no status: its details could not be read; a later sweep sees)
            self.log.info("removing a pool member without a pool", { pool = s.pool, sandbox_id = obs.id })
            self:remove_leftover(obs)
        end
        return
    end
    m = { id = obs.id, pool = pool.name, state = "warming", created_us = s.created_us or self:now_us(),
        access_token = s.access_token, handle = obs.handle, place = obs.place }
    self.pool_members[m.id] = m
    pool.members[m.id] = m
    self.log.info("adopted a pool member", { pool = pool.name, sandbox_id = m.id })
    self.core.spawn(function()
        self:pool_await_ready(m)
    end)
end

--- A change the runtime's watch reports of a member (on_change; must not yield): a member that stops
--- running, or goes, is dropped and replaced.
function P:pool_member_change(change)
    local m = self.pool_members[change.id]
    if not m or m.state == "claimed" or (change.handle and m.handle and change.handle ~= m.handle) then
        return
    end
    -- (a member still being made may be reported Pending: Kubernetes' watch sees the pod before it runs)
    local st = change.status and change.status.state
    if change.gone or (st and st ~= STATE.RUNNING and st ~= STATE.PENDING) then
        self.log.warn("pool member stopped; replacing it", { pool = m.pool, sandbox_id = m.id,
            status = change.status and change.status.message or "removed" })
        self:pool_drop_member(m, not change.gone and m.handle ~= nil)
    end
end

---------------------------------------------------------------------------------------------------------
-- refill
---------------------------------------------------------------------------------------------------------

function P:pool_kick()
    if self.pool_wake then
        self.pool_wake:set(true)
    end
end

--- The background refill task (started by start_background).
function P:start_pool_refill()
    self.pool_wake = sync.event()
    self.core.spawn(function()
        while not self.stopped do
            self.pool_wake:wait(P.REFILL_PERIOD)
            self.pool_wake = sync.event()
            if self.available and not self.stopped then
                local ok, err = pcall(self.pool_refill, self)
                if not ok then
                    self.log.error("pool refill failed", { error = tostring(err) })
                end
            end
        end
    end)
end

--- One refill pass over every pool (never yields: members are made in tasks of their own).
function P:pool_refill()
    local s = self:pool_settings()
    local names = {}
    for name in pairs(self.pools) do
        names[#names + 1] = name
    end
    table.sort(names)
    local now = self:now_us()
    -- while claims arrive, one member at a time: making members saturates the CPUs (dockerd, runc), and the
    -- claims' agents and the API need them (claim latency p99 95 ms at 4 at once, 37 ms at 1, 10 claims/s
    -- on 2 vCPUs: bench/pool_claim.sh)
    local limit = s.concurrency
    if self.pool_last_claim_us and now - self.pool_last_claim_us < P.CLAIMING_WINDOW_US then
        limit = math.min(limit, P.CLAIMING_CONCURRENCY)
    end
    for _, name in ipairs(names) do
        local pool = self.pools[name]
        local cap, c = pool.capacity, self:pool_counts(pool)
        local buffer = c.idle
        local want_buffer = buffer
        if buffer < cap.bufferMin or buffer > cap.bufferMax then
            want_buffer = (cap.bufferMin + cap.bufferMax) // 2
        end
        local want_total = math.min(math.max(c.allocated + want_buffer, cap.poolMin), cap.poolMax)
        local more = want_total - c.total
        if more > 0 and not (pool.retry_us and now < pool.retry_us) then
            while more > 0 and self.pool_inflight < limit do
                more = more - 1
                self.pool_inflight = self.pool_inflight + 1
                self.core.spawn(function()
                    local ok, err = pcall(self.pool_add_member, self, pool)
                    self.pool_inflight = self.pool_inflight - 1
                    if not ok then
                        self.log.error("pool member task raised", { pool = pool.name, error = tostring(err) })
                    end
                    self:pool_kick()
                end)
            end
        elseif more < 0 then
            self:pool_shrink(pool, -more)
        end
    end
end

-- removes up to n ready members of the pool, the newest first (the oldest have waited longest to be used)
function P:pool_shrink(pool, n)
    for i = #pool.ready, 1, -1 do
        if n <= 0 then
            break
        end
        local m = self.pool_members[pool.ready[i]]
        table.remove(pool.ready, i)
        if m and m.state == "ready" then
            n = n - 1
            self:pool_drop_member(m, true)
        end
    end
end

return P
