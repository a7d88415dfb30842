-- The lifecycle service: the sandbox state machine (API.md §3, §6), one FIFO lock per sandbox, expiry
-- timers and the periodic sweep, the durable store, Docker event following, start-up reconciliation, and
-- endpoint resolution (§7). It talks to the runtime only through the adapter contract
-- (lua/runtimes/README.md) and to the store only through lua/sandbox/store.lua.
--
-- Concurrency model: every public method runs in the calling request's task and may yield (Docker calls,
-- lock waits). Mutations of one sandbox take its lock; reads (get, list) never do and are served from
-- `self.records`, the in-memory view, which is always the committed state: a mutation writes the store
-- first and updates memory only once the store has accepted it.
--
-- Provisioning runs in a background task. Operations that must wait for it (pause, resume, delete, renew,
-- endpoint, expiry) wait on the record's `provisioned` event for at most PROVISION_WAIT seconds.
local errors = require("common.errors")
local sync = require("common.sync")
local model = require("sandbox.model")
local timefmt = require("sandbox.timefmt")
local listing = require("sandbox.listing")
local json = require("common.json")

local STATE, REASON, MESSAGE = model.STATE, model.REASON, model.MESSAGE

local M = {}

M.PROVISION_WAIT = 120 -- seconds (fixed by API.md §6.2)
M.SWEEP_INTERVAL = 30 -- seconds (fixed by API.md §6.3)
M.AGENT_PORT = 44772
M.MAX_TIMER = 86400 -- a timer further out is re-checked after a day

local Service = {}
Service.__index = Service

--- deps = { runtime = adapter, store = store, core = { now_us = fn, spawn = fn, timer = core.timer-like,
---   uuid = core.uuid-like, free_tcp_port = fn }, log = core.log-like, config = validated config,
---   agent_archive = fn() -> tar bytes or nil, err, docker_host = "unix:///...", failure_ttl = seconds,
---   hooks = hook runner or nil }
function M.new(deps)
    local self = setmetatable({}, Service)
    self.runtime = deps.runtime
    self.store = deps.store
    self.core = deps.core
    self.log = deps.log
    self.config = deps.config
    self.agent_archive = deps.agent_archive
    self.agent_volume = deps.agent_volume -- optional: function(image, platform) -> volume name | nil, err
    self.docker_host = deps.docker_host or "unix:///var/run/docker.sock"
    self.failure_ttl = deps.failure_ttl or 3600
    self.hooks = deps.hooks
    self.records = {} -- id -> record (committed state)
    self.locks = {} -- id -> sync.lock
    self.provisioning = {} -- id -> sync.event, while provisioning runs
    self.timers = {} -- id -> timer handle
    self.removing = {} -- container id -> true while we remove it ourselves
    self.unsaved = {} -- id -> true: memory is ahead of the store (a fact whose store write failed)
    self.available = false -- Docker reachable and reconciled
    self.restored = false -- the start-up restoration (§6.5) has run
    self.unavailable_reason = "not checked yet"
    self.ncpu = nil
    self.host_mode = (self.config.docker.network_mode == "host")
    return self
end

---------------------------------------------------------------------------------------------------------
-- small helpers
---------------------------------------------------------------------------------------------------------

local function copy(t)
    local o = {}
    for k, v in pairs(t) do
        o[k] = v
    end
    return o
end

function Service:now_us()
    return self.core.now_us()
end

function Service:unavailable_error()
    return errors.new(503, "DOCKER::UNAVAILABLE",
        string.format("Docker daemon is unreachable at %s: %s", self.docker_host, self.unavailable_reason),
        { ["Retry-After"] = "5" })
end

local function store_error(err)
    return errors.new(503, "STORE::UNAVAILABLE", "The state store rejected the write: " .. tostring(err),
        { ["Retry-After"] = "5" })
end

function Service:lock_of(id)
    local l = self.locks[id]
    if not l then
        l = sync.lock()
        self.locks[id] = l
    end
    return l
end

--- Commits `rec` (a modified copy of the current record) to the store, then to memory.
function Service:commit(rec)
    local ok, err = self.store:put(rec)
    if not ok then
        self.log.error("store write failed", { sandbox_id = rec.id, error = tostring(err) })
        return nil, store_error(err)
    end
    self.records[rec.id] = rec
    self.unsaved[rec.id] = nil
    return rec
end

function Service:drop_from_memory(id)
    self.records[id] = nil
    local t = self.timers[id]
    if t then
        t:cancel()
        self.timers[id] = nil
    end
end

function Service:forget(id)
    local ok, err = self.store:delete(id)
    if not ok then
        self.log.error("store delete failed", { sandbox_id = id, error = tostring(err) })
        return nil, store_error(err)
    end
    self.unsaved[id] = nil
    self:drop_from_memory(id)
    return true
end

-- Facts: changes that have already happened in Docker (provisioning finished, a container paused, exited or
-- removed). Refusing them because the store cannot take the write (a full disk) would leave memory saying
-- something Docker no longer does, so memory takes them at once and the store write is retried every
-- STORE_RETRY seconds (and at every sweep) until it goes through. A restart before that reconciles from
-- Docker as usual (API.md §6.5). Requests that only change our own state (create, renew, metadata) still
-- fail with 503 STORE::UNAVAILABLE, changing nothing.
M.STORE_RETRY = 5

--- commit() for a fact. Always returns the record.
function Service:commit_fact(rec)
    if not self:commit(rec) then
        self.records[rec.id] = rec
        self:store_later(rec.id)
    end
    return rec
end

--- forget() for a fact (the container is gone). Always returns true.
function Service:forget_fact(id)
    if not self:forget(id) then
        self:drop_from_memory(id)
        self:store_later(id)
    end
    return true
end

function Service:arm_store_retry()
    local timer = self.core.timer
    if not self.store_retry and timer and timer.after then
        self.store_retry = timer.after(M.STORE_RETRY, function()
            self.store_retry = nil
            self:flush_unsaved()
        end)
    end
end

function Service:store_later(id)
    self.unsaved[id] = true
    self:arm_store_retry()
end

--- Writes what memory has and the store lacks (records put, dropped records deleted). Returns how many
--- are still unsaved.
function Service:flush_unsaved()
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

function Service:transition(rec, state, reason, message, at_us)
    local old = rec.state
    model.apply_status(rec, model.status(state, reason, message, at_us or self:now_us()))
    if self.hooks and old ~= state then
        self.hooks:after_transition(rec, old, state)
    end
end

--- Waits while the sandbox is still provisioning; returns the current record, or nil, err.
function Service:wait_provisioned(id)
    local ev = self.provisioning[id]
    if ev then
        local _, err = ev:wait(M.PROVISION_WAIT)
        if err == "timeout" then
            return nil, errors.new(409, "SANDBOX::PROVISIONING_IN_PROGRESS",
                string.format("Sandbox %s is still being provisioned.", id), { ["Retry-After"] = "5" })
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
    local ok, lerr = lock:acquire(M.PROVISION_WAIT)
    if not ok then
        return nil, errors.new(409, "SANDBOX::PROVISIONING_IN_PROGRESS",
            string.format("Sandbox %s is busy: %s.", id, tostring(lerr)), { ["Retry-After"] = "5" })
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

function Service:require_docker()
    if not self.available then
        return nil, self:unavailable_error()
    end
    return true
end

--- Maps an adapter error: transport failures become 503 (and mark Docker unavailable), others `fallback`.
function Service:runtime_error(err, code, verb)
    if err and err.kind == "unavailable" then
        self:mark_unavailable(err.message)
        return self:unavailable_error()
    end
    return errors.new(500, code, string.format("Failed to %s sandbox container: %s", verb,
        tostring(err and err.message or err)))
end

---------------------------------------------------------------------------------------------------------
-- reads
---------------------------------------------------------------------------------------------------------

--- Tenancy: a non-admin principal sees only the sandboxes it created (API keys with principals, see
--- config server.api_keys); admins and single-key setups see everything.
function Service.visible(_, rec, ctx)
    if ctx and ctx.admin == false then
        return rec.principal == ctx.principal
    end
    return true
end

function Service:get(id, ctx)
    local rec = self.records[id]
    if not rec or not self:visible(rec, ctx) then
        return nil, errors.not_found(id)
    end
    return model.sandbox_view(rec)
end

-- Encoded `Sandbox` objects, per record. Records are never changed in place (a mutation commits a copy),
-- so a record's identity is its version and a weak-keyed cache never serves a stale view.
local view_json = setmetatable({}, { __mode = "k" })

local function sandbox_json(rec)
    local s = view_json[rec]
    if not s then
        s = json.encode(model.sandbox_view(rec))
        view_json[rec] = s
    end
    return s
end

--- get() already encoded: the API's GET /sandboxes/{id} body.
function Service:get_json(id, ctx)
    local rec = self.records[id]
    if not rec or not self:visible(rec, ctx) then
        return nil, errors.not_found(id)
    end
    return sandbox_json(rec)
end

-- The page of `filter` among the sandboxes `ctx` may see: listing.apply's { items = records, pagination }.
function Service:page(filter, ctx)
    local all = {}
    for _, rec in pairs(self.records) do
        if self:visible(rec, ctx) then
            all[#all + 1] = rec
        end
    end
    return listing.apply(all, filter)
end

--- list() already encoded: the API's GET /sandboxes body.
function Service:list_json(filter, ctx)
    local res = self:page(filter, ctx)
    local items = {}
    for i, rec in ipairs(res.items) do
        items[i] = sandbox_json(rec)
    end
    local p = res.pagination
    return string.format('{"items":[%s],"pagination":{"page":%d,"pageSize":%d,"totalItems":%d,' ..
        '"totalPages":%d,"hasNextPage":%s}}', table.concat(items, ","), p.page, p.pageSize, p.totalItems,
        p.totalPages, tostring(p.hasNextPage))
end

function Service:list(filter, ctx)
    local res = self:page(filter, ctx)
    local items = json.array()
    for i, rec in ipairs(res.items) do
        items[i] = model.sandbox_view(rec)
    end
    return { items = items, pagination = res.pagination }
end

---------------------------------------------------------------------------------------------------------
-- create and provisioning
---------------------------------------------------------------------------------------------------------

function Service:allocate_agent_port()
    if not self.host_mode then
        return M.AGENT_PORT
    end
    local used = {}
    for _, rec in pairs(self.records) do
        if rec.agent_port then
            used[rec.agent_port] = true
        end
    end
    for _ = 1, 20 do
        local p, err = self.core.free_tcp_port("0.0.0.0")
        if not p then
            return nil, err
        end
        if not used[p] and p ~= 8080 and p ~= M.AGENT_PORT then
            return p
        end
    end
    return nil, "no free port found"
end

function Service:create(spec, ctx)
    local ok, err = self:require_docker()
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
    local now = self:now_us()
    local rec = model.new_record(id, spec, now)
    rec.principal = ctx and ctx.principal or nil
    rec.access_token = self.core.uuid.random_hex(32)
    local port, perr = self:allocate_agent_port()
    if not port then
        return nil, errors.new(503, "DOCKER::SANDBOX_START_FAILED", "Cannot allocate an agent port: " .. perr)
    end
    rec.agent_port = port
    if self.hooks then
        rec.container_name = self.hooks:sandbox_name(ctx, spec, rec)
    end
    local committed, cerr = self:commit(rec)
    if not committed then
        return nil, cerr
    end
    local ev = sync.event()
    self.provisioning[id] = ev
    self.core.spawn(function()
        local pok, perr2 = pcall(self.provision, self, id, spec)
        if not pok then
            self.log.error("provisioning raised", { sandbox_id = id, error = tostring(perr2) })
            self:finish_provisioning(id, nil, "DOCKER::SANDBOX_START_FAILED", "internal error: " .. tostring(perr2))
        end
    end)
    self:notify_transition(rec, nil, STATE.PENDING)
    return model.create_view(rec)
end

function Service:notify_transition(rec, from, to)
    if self.hooks and from ~= to then
        self.hooks:after_transition(rec, from, to)
    end
end

--- Background provisioning (§6.1). Never raises for operational errors.
function Service:provision(id, spec)
    local rt = self.runtime
    local rec = self.records[id]
    local log = self.log
    log.info("provisioning", { sandbox_id = id, image = rec.image_uri })
    -- how long each step took (milliseconds), logged with the result
    local steps, last = {}, self:now_us()
    local function step(name)
        local t = self:now_us()
        steps[name .. "_ms"] = (t - last) / 1000
        last = t
    end
    local function pull_failed(perr)
        return self:finish_provisioning(id, nil, "DOCKER::SANDBOX_IMAGE_PULL_FAILED",
            string.format("Failed to pull image '%s': %s", spec.image.uri, tostring(perr and perr.message or perr)))
    end
    local ok, err = rt:ensure_image(spec.image.uri, spec.image.auth, spec.platform)
    step("image")
    if not ok then
        return pull_failed(err)
    end
    local cspec = {
        id = id,
        name = rec.container_name,
        image_uri = spec.image.uri,
        entrypoint = spec.entrypoint,
        env = spec.env,
        nano_cpus = spec.nano_cpus,
        memory = spec.memory,
        gpu = spec.gpu,
        platform = spec.platform,
        agent_port = rec.agent_port,
        access_token = rec.access_token,
        created_us = rec.created_us,
        expires_us = rec.expires_us,
        metadata = rec.metadata,
        principal = rec.principal,
    }
    if self.agent_volume then -- docker.agent_delivery = "volume": mount the shared bundle, upload nothing
        local vol, verr = self.agent_volume(spec.image.uri, spec.platform)
        if verr then
            return self:finish_provisioning(id, nil, "DOCKER::SANDBOX_EXECD_DISTRIBUTION_FAILED", tostring(verr))
        end
        cspec.agent_volume = vol
        step("agent_volume")
    end
    local cid, failed
    cid, err, failed = rt:create_from_image(spec.image.uri, spec.image.auth, spec.platform, function()
        return rt:create_container(cspec)
    end)
    if failed == "pull" then -- the image had gone since it was seen, and pulling it again failed
        return pull_failed(err)
    end
    step("create")
    if not cid then
        return self:finish_provisioning(id, nil, "DOCKER::SANDBOX_START_FAILED",
            "Failed to create container: " .. tostring(err and err.message or err))
    end
    if not cspec.agent_volume then
        local tar, terr = self.agent_archive(spec.platform)
        if not tar then
            return self:finish_provisioning(id, cid, "DOCKER::SANDBOX_EXECD_DISTRIBUTION_FAILED", tostring(terr))
        end
        ok, err = rt:put_archive(cid, tar)
        if not ok then
            return self:finish_provisioning(id, cid, "DOCKER::SANDBOX_EXECD_DISTRIBUTION_FAILED",
                "Failed to upload the agent: " .. tostring(err and err.message or err))
        end
        step("upload")
    end
    ok, err = rt:start(cid)
    step("start")
    if not ok then
        return self:finish_provisioning(id, cid, "DOCKER::SANDBOX_START_FAILED",
            "Failed to start container: " .. tostring(err and err.message or err))
    end
    local info
    info, err = rt:inspect(cid)
    if not info then
        return self:finish_provisioning(id, cid, "DOCKER::SANDBOX_START_FAILED",
            "Failed to inspect container: " .. tostring(err and err.message or err))
    end
    step("inspect")
    return self:finish_provisioning(id, cid, nil, nil, info, steps)
end

--- Ends provisioning: success when `code` is nil (info = inspect result), else failure with `code`.
--- `steps` (optional) holds the duration of each provisioning step, for the log.
function Service:finish_provisioning(id, cid, code, detail, info, steps)
    local ev = self.provisioning[id]
    local lock = self:lock_of(id)
    lock:acquire()
    local cur = self.records[id]
    if cur then
        local rec = copy(cur)
        local from = rec.state
        if code then
            if cid then
                self.removing[cid] = true
                local rok, rerr = self.runtime:remove(cid)
                self.removing[cid] = nil
                if not rok then
                    self.log.error("cannot remove half-created container",
                        { sandbox_id = id, container_id = cid, error = tostring(rerr and rerr.message) })
                end
            end
            rec.container_id = nil
            rec.failed_us = self:now_us()
            model.apply_status(rec, model.status(STATE.FAILED, REASON.PROVISIONING_ERROR,
                model.provisioning_error_message(code, detail), rec.failed_us))
            self.log.warn("provisioning failed", { sandbox_id = id, code = code, detail = detail })
        else
            rec.container_id = cid
            rec.container_ip = info.ip
            rec.host_ports = info.host_ports
            local st, reason, message, at = self.runtime:status_of(info)
            if st == STATE.PENDING then
                st, reason, message, at = STATE.RUNNING, REASON.CONTAINER_RUNNING, MESSAGE.RUNNING, nil
            end
            model.apply_status(rec, model.status(st, reason, message, at or self:now_us()))
            local fields = { sandbox_id = id, container_id = cid }
            for k, v in pairs(steps or {}) do
                fields[k] = v
            end
            self.log.info("sandbox running", fields)
        end
        self:commit_fact(rec)
        self:notify_transition(rec, from, rec.state)
        self:arm_timer(rec)
    elseif cid then
        -- deleted while provisioning (cannot happen through the API, which waits; be safe anyway)
        self.runtime:remove(cid)
    end
    self.provisioning[id] = nil
    lock:release()
    if ev then
        ev:set(true)
    end
end

---------------------------------------------------------------------------------------------------------
-- pause, resume, delete, renew, metadata
---------------------------------------------------------------------------------------------------------

function Service:check_visible(id, ctx)
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
        call = "pause",
        failed = "DOCKER::SANDBOX_PAUSE_FAILED",
        to = { STATE.PAUSED, REASON.CONTAINER_PAUSED, MESSAGE.PAUSED },
    },
    resume = {
        from = STATE.PAUSED,
        refuse = { "DOCKER::SANDBOX_NOT_PAUSED", "Sandbox is not in a paused state." },
        call = "unpause",
        failed = "DOCKER::SANDBOX_RESUME_FAILED",
        to = { STATE.RUNNING, REASON.CONTAINER_RUNNING, MESSAGE.RUNNING },
    },
}

function Service:toggle(verb, id, ctx)
    local t = TOGGLES[verb]
    local _, verr = self:check_visible(id, ctx)
    if verr then
        return nil, verr
    end
    return self:with_sandbox(id, true, function(cur)
        if cur.state ~= t.from then
            return nil, errors.new(409, t.refuse[1], t.refuse[2])
        end
        local ok, err = self:require_docker()
        if not ok then
            return nil, err
        end
        ok, err = self.runtime[t.call](self.runtime, cur.container_id)
        if not ok then
            return nil, self:runtime_error(err, t.failed, verb)
        end
        -- the Docker event of this change may have been applied while Docker answered (it does not take
        -- the lock): the hooks hear of the change once, from whichever commits it first
        local from = (self.records[cur.id] or cur).state
        local rec = copy(cur)
        model.apply_status(rec, model.status(t.to[1], t.to[2], t.to[3], self:now_us()))
        self:commit_fact(rec) -- Docker has done it: memory says so even if the store cannot yet
        self:notify_transition(rec, from, rec.state)
        return true
    end)
end

function Service:pause(id, ctx)
    return self:toggle("pause", id, ctx)
end

function Service:resume(id, ctx)
    return self:toggle("resume", id, ctx)
end

--- Removes the sandbox (delete or expiry); called under its lock. `message` is the Stopping message.
function Service:remove_locked(cur, message)
    if model.is_provisioning_failure(cur) or not cur.container_id then
        return self:forget(cur.id)
    end
    local ok, err = self:require_docker()
    if not ok then
        return nil, err
    end
    local rec = copy(cur)
    if rec.state ~= STATE.STOPPING then
        model.apply_status(rec, model.status(STATE.STOPPING, REASON.CONTAINER_REMOVING, message, self:now_us()))
        -- the removal goes ahead even when the store cannot record it (a full disk must not keep sandboxes
        -- alive); should the server die before the store catches up, start-up reconciliation finishes it
        self:commit_fact(rec)
        self:notify_transition(rec, cur.state, rec.state)
    end
    self.removing[rec.container_id] = true
    ok, err = self.runtime:remove(rec.container_id) -- the adapter unpauses and retries a paused one
    self.removing[rec.container_id] = nil
    if not ok then
        return nil, self:runtime_error(err, "DOCKER::SANDBOX_DELETE_FAILED", "delete")
    end
    self:forget_fact(rec.id) -- the container is gone: so is the sandbox, whatever the store says
    self:notify_transition(rec, rec.state, "Deleted")
    return true
end

function Service:delete(id, ctx)
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

function Service:renew(id, expires_us, ctx)
    local _, verr = self:check_visible(id, ctx)
    if verr then
        return nil, verr
    end
    if self.provisioning[id] then
        local _, err = self:wait_provisioned(id)
        if err then
            return nil, err
        end
    end
    return self:with_sandbox(id, false, function(cur)
        if expires_us <= self:now_us() then
            return nil, errors.new(400, "DOCKER::INVALID_EXPIRATION", "New expiration time must be in the future.")
        end
        if model.is_provisioning_failure(cur) then
            return nil, errors.new(409, "DOCKER::SANDBOX_NOT_RUNNING", "Sandbox is not in a running state.")
        end
        if not cur.expires_us then
            return nil, errors.new(409, "DOCKER::INVALID_EXPIRATION",
                string.format("Sandbox %s does not have automatic expiration enabled.", id))
        end
        local rec = copy(cur)
        rec.expires_us = expires_us
        local c, cerr = self:commit(rec)
        if not c then
            return nil, cerr
        end
        self:arm_timer(rec)
        return { expiresAt = timefmt.format(expires_us) }
    end)
end

function Service:patch_metadata(id, patch, ctx)
    local _, verr = self:check_visible(id, ctx)
    if verr then
        return nil, verr
    end
    return self:with_sandbox(id, false, function(cur)
        local rec = copy(cur)
        local md = copy(cur.metadata or {})
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

---------------------------------------------------------------------------------------------------------
-- endpoints (§7)
---------------------------------------------------------------------------------------------------------

local function strip_scheme(s)
    s = s:gsub("^%a[%w+.-]*://", "")
    s = s:gsub("/+$", "")
    return s
end

local function bracket(host)
    if host:find(":", 1, true) and not host:find("^%[") then
        return "[" .. host .. "]"
    end
    return host
end

local function host_of_header(h)
    if not h or h == "" then
        return nil
    end
    if h:sub(1, 1) == "[" then
        return h:match("^(%[[^%]]*%])")
    end
    local host = h:match("^([^:]+)")
    return host
end

function Service:endpoint_host(ctx)
    local cfg = self.config
    if cfg.server.eip and cfg.server.eip ~= "" then
        return strip_scheme(cfg.server.eip), true
    end
    local hip = cfg.docker.host_ip
    if hip and hip ~= "" and hip ~= "0.0.0.0" and hip ~= "::" then
        return bracket(hip)
    end
    local h = host_of_header(ctx and ctx.host)
    if h then
        return h
    end
    return "127.0.0.1"
end

function Service:endpoint(id, port, use_server_proxy, ctx)
    local _, verr = self:check_visible(id, ctx)
    if verr then
        return nil, verr
    end
    local rec, err = self:wait_provisioned(id)
    if not rec then
        return nil, err
    end
    if model.is_provisioning_failure(rec) then
        return nil, errors.new(409, "DOCKER::SANDBOX_NOT_RUNNING", "Sandbox is not in a running state.")
    end
    local agent_headers = { ["X-EXECD-ACCESS-TOKEN"] = rec.access_token }
    if use_server_proxy then
        local base = self.config.server.eip and strip_scheme(self.config.server.eip) or (ctx and ctx.host) or
            "127.0.0.1:8080"
        return {
            endpoint = string.format("%s/sandboxes/%s/proxy/%d", base, id, port),
            headers = port == M.AGENT_PORT and agent_headers or nil,
        }
    end
    local host = self:endpoint_host(ctx)
    if self.host_mode then
        if port == M.AGENT_PORT then
            return { endpoint = string.format("%s:%d/proxy/%d", host, rec.agent_port, M.AGENT_PORT),
                headers = agent_headers }
        end
        return { endpoint = string.format("%s:%d", host, port) }
    end
    local hp = rec.host_ports or {}
    if port == 8080 and hp["8080"] then
        return { endpoint = string.format("%s:%d", host, hp["8080"]) }
    end
    local agent = hp[tostring(M.AGENT_PORT)]
    if not agent then
        return nil, errors.new(409, "DOCKER::SANDBOX_NOT_RUNNING", "Sandbox is not in a running state.")
    end
    return { endpoint = string.format("%s:%d/proxy/%d", host, agent, port), headers = agent_headers }
end

--- The target of the server proxy (§7.3): { host, port, record } or nil, err. Served from memory (no Docker
--- call). `ctx` (tenancy) and `req` ({ port, method, path }) go to the on_proxy_request hooks, which may refuse
--- or ask for renew-on-access ({ renew_seconds = n }: the expiry moves to now + n when less than half of n
--- is left, so that a busy sandbox costs one durable write per n/2 seconds, not one per request).
function Service:proxy_target(id, port, ctx, req)
    local rec = self.records[id]
    if not rec or not self:visible(rec, ctx) then
        return nil, errors.not_found(id)
    end
    if rec.state ~= STATE.RUNNING then
        return nil, errors.new(409, "DOCKER::SANDBOX_NOT_RUNNING", "Sandbox is not in a running state.")
    end
    local target
    if self.host_mode then
        target = { host = "127.0.0.1", port = port == M.AGENT_PORT and rec.agent_port or port, record = rec }
    else
        if not rec.container_ip or rec.container_ip == "" then
            return nil, errors.new(409, "DOCKER::SANDBOX_NOT_RUNNING", "Sandbox is not in a running state.")
        end
        target = { host = rec.container_ip, port = port, record = rec }
    end
    if self.hooks then
        local decision, herr = self.hooks:on_proxy_request(ctx, model.sandbox_view(rec),
            req or { port = port })
        if herr then
            return nil, herr
        end
        local renew = type(decision) == "table" and tonumber(decision.renew_seconds)
        if renew and renew > 0 and rec.expires_us then
            local want = self:now_us() + math.floor(renew * 1e6)
            if rec.expires_us - self:now_us() < renew * 1e6 / 2 and want > rec.expires_us then
                self.core.spawn(function()
                    self:with_sandbox(id, false, function(cur)
                        if cur.expires_us and want > cur.expires_us then
                            local upd = copy(cur)
                            upd.expires_us = want
                            if self:commit(upd) then
                                self:arm_timer(upd)
                            end
                        end
                        return true
                    end)
                end)
            end
        end
    end
    return target
end

---------------------------------------------------------------------------------------------------------
-- expiry
---------------------------------------------------------------------------------------------------------

function Service:arm_timer(rec)
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
    if delay > M.MAX_TIMER then
        delay = M.MAX_TIMER
    end
    local id = rec.id
    self.timers[id] = self.core.timer.after(delay, function()
        self.timers[id] = nil
        self:expire(id)
    end)
end

--- Expires the sandbox if its (re-read) expiry has passed; re-arms the timer otherwise.
function Service:expire(id)
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
        self.log.info("sandbox expired", { sandbox_id = id })
        return self:remove_locked(cur, MESSAGE.EXPIRING)
    end)
    if err and err.status ~= 404 then
        self.log.warn("expiry failed; the sweep retries", { sandbox_id = id, error = tostring(err.message) })
    end
end

--- One sweep (§6.3): expire what is due, drop old failed-provisioning records, reconcile with Docker.
function Service:sweep()
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
        elseif rec.state == STATE.STOPPING and not self.provisioning[id] and self.available then
            self:with_sandbox(id, false, function(cur)
                return self:remove_locked(cur, cur.message)
            end)
        end
    end
    if self.available then
        self:reconcile(false)
    end
end

---------------------------------------------------------------------------------------------------------
-- reconciliation, events, availability
---------------------------------------------------------------------------------------------------------

--- Applies a runtime status to a record with a container (not provisioning).
function Service:apply_runtime_status(id, state, reason, message, at_us)
    local cur = self.records[id]
    if not cur or self.provisioning[id] or cur.state == STATE.STOPPING then
        return
    end
    if cur.state == state and cur.reason == reason and cur.message == message then
        return
    end
    local rec = copy(cur)
    model.apply_status(rec, model.status(state, reason, message, at_us or self:now_us()))
    self:commit_fact(rec)
    self:notify_transition(rec, cur.state, state)
end

--- Adopts a labelled container that has no record (§6.5 step 3); returns true when adopted.
function Service:adopt(c)
    local labels = c.labels or {}
    local id = labels["opensandbox.io/id"]
    local created = labels["opensandbox.io/created-at"] and timefmt.parse(labels["opensandbox.io/created-at"])
    local expires = labels["opensandbox.io/expires-at"] and timefmt.parse(labels["opensandbox.io/expires-at"])
    local manual = labels["opensandbox.io/manual-cleanup"] == "true"
    if not id or not created or not (expires or manual) then
        return false
    end
    local info = self.runtime:inspect(c.id)
    if not info then
        return false
    end
    local md = labels["opensandbox.io/metadata"] and json.decode(labels["opensandbox.io/metadata"]) or {}
    local rec = {
        id = id,
        container_id = c.id,
        created_us = created,
        expires_us = (not manual) and expires or nil,
        image_uri = info.image or c.image or "",
        entrypoint = info.cmd or {},
        metadata = type(md) == "table" and md or {},
        extensions = {},
        agent_port = tonumber(labels["opensandbox.io/execd-port"]) or M.AGENT_PORT,
        host_ports = info.host_ports,
        container_ip = info.ip,
        access_token = info.access_token,
        principal = labels["opensandbox.io/principal"],
    }
    if labels["opensandbox.io/platform-os"] then
        rec.platform = { os = labels["opensandbox.io/platform-os"], arch = labels["opensandbox.io/platform-arch"] }
    end
    local st, reason, message, at = self.runtime:status_of(info)
    model.apply_status(rec, model.status(st, reason, message, at or created))
    if self:commit(rec) then
        self.log.info("adopted container", { sandbox_id = id, container_id = c.id })
        return true
    end
    return false
end

--- Reconciles the records with the runtime. At start-up (`startup`), also fails interrupted provisioning
--- and expires what is due (§6.5); in sweeps only steps 2-4 apply.
function Service:reconcile(startup)
    -- The list call and the inspections below yield: records created, provisioned or deleted meanwhile must
    -- not be judged against the list. Only records that existed, settled, before the list are checked for
    -- a vanished container, and a listed container whose record existed then but is gone now was deleted
    -- meanwhile (neither adopted nor removed again).
    local had, settled = {}, {}
    for id in pairs(self.records) do
        had[id] = true
        settled[id] = not self.provisioning[id]
    end
    local list, err = self.runtime:list()
    if not list then
        if err and err.kind == "unavailable" then
            self:mark_unavailable(err.message)
        end
        return nil, err
    end
    local by_sandbox = {}
    for _, c in ipairs(list) do
        local sid = c.labels and c.labels["opensandbox.io/id"]
        if sid then
            by_sandbox[sid] = c
        end
    end
    -- containers
    for sid, c in pairs(by_sandbox) do
        local rec = self.records[sid]
        if rec then
            if not self.provisioning[sid] then
                if model.is_provisioning_failure(rec) or (startup and rec.state == STATE.PENDING) then
                    -- a leftover of failed or interrupted provisioning
                    self.removing[c.id] = true
                    self.runtime:remove(c.id)
                    self.removing[c.id] = nil
                elseif rec.container_id == nil or rec.container_id == c.id then
                    local info = self.runtime:inspect(c.id)
                    if info then
                        local changed = false
                        local upd = copy(rec)
                        if upd.container_id ~= c.id then
                            upd.container_id, changed = c.id, true
                        end
                        if info.ip and info.ip ~= "" and upd.container_ip ~= info.ip then
                            upd.container_ip, changed = info.ip, true
                        end
                        if info.host_ports and next(info.host_ports) then
                            upd.host_ports = info.host_ports
                        end
                        if changed then
                            self:commit(upd)
                        end
                        self:apply_runtime_status(sid, self.runtime:status_of(info))
                    end
                end
            end
        elseif not self.provisioning[sid] and not had[sid] then
            if not self:adopt(c) then
                self.log.warn("removing unadoptable labelled container", { container_id = c.id })
                self.removing[c.id] = true
                self.runtime:remove(c.id)
                self.removing[c.id] = nil
            end
        end
    end
    -- records without a container
    local now = self:now_us()
    for id, rec in pairs(self.records) do
        if not by_sandbox[id] and not self.provisioning[id] and settled[id] then
            if model.is_provisioning_failure(rec) then
                local _ = rec -- kept until failed_us + TTL (the sweep drops it)
            elseif rec.state == STATE.PENDING then
                local upd = copy(rec)
                upd.failed_us = now
                upd.container_id = nil
                model.apply_status(upd, model.status(STATE.FAILED, REASON.PROVISIONING_ERROR, MESSAGE.INTERRUPTED, now))
                self:commit(upd)
            else
                self.log.info("container vanished; dropping record", { sandbox_id = id })
                self:forget(id)
            end
        end
    end
    if startup then
        for id, rec in pairs(self.records) do
            if rec.state == STATE.PENDING and not self.provisioning[id] and by_sandbox[id] then
                -- its container was removed above as interrupted
                local upd = copy(rec)
                upd.failed_us = now
                upd.container_id = nil
                model.apply_status(upd, model.status(STATE.FAILED, REASON.PROVISIONING_ERROR, MESSAGE.INTERRUPTED, now))
                self:commit(upd)
            end
        end
        -- what is due is expired by connect() once Docker is marked available (removal needs it)
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
    return true
end

--- Handles one Docker event (called from the event stream; must not yield).
function Service:on_event(ev)
    local id = ev.sandbox_id
    local rec = id and self.records[id]
    self.last_event_s = ev.time_nano and math.floor(ev.time_nano / 1e9) or self.last_event_s
    if not rec or self.provisioning[id] then
        return
    end
    -- a record without a container (failed or interrupted provisioning) is not affected by container
    -- events: a destroy seen now is the removal of its half-created container, done by us
    if not rec.container_id or (ev.id and rec.container_id ~= ev.id) then
        return
    end
    local at = ev.time_nano and ev.time_nano // 1000 or nil
    local a = ev.action
    if a == "oom" then
        self.oom_seen = self.oom_seen or {}
        self.oom_seen[id] = true
    elseif a == "die" then
        local code = ev.exit_code or 0
        local oom = self.oom_seen and self.oom_seen[id]
        if self.oom_seen then
            self.oom_seen[id] = nil
        end
        if code == 0 and not oom then
            self:apply_runtime_status(id, STATE.TERMINATED, REASON.CONTAINER_EXITED, MESSAGE.EXITED, at)
        else
            self:apply_runtime_status(id, STATE.FAILED, REASON.CONTAINER_EXITED_ERROR,
                model.exited_error_message(code, oom), at)
        end
    elseif a == "start" or a == "unpause" then
        self:apply_runtime_status(id, STATE.RUNNING, REASON.CONTAINER_RUNNING, MESSAGE.RUNNING, at)
    elseif a == "pause" then
        self:apply_runtime_status(id, STATE.PAUSED, REASON.CONTAINER_PAUSED, MESSAGE.PAUSED, at)
    elseif a == "destroy" then
        if not self.removing[ev.id] and rec.state ~= STATE.STOPPING then
            self.log.info("container destroyed behind our back; dropping record", { sandbox_id = id })
            self:forget_fact(id)
        end
    end
end

function Service:mark_unavailable(reason)
    if self.available then
        self.log.error("Docker became unreachable", { docker_host = self.docker_host, reason = tostring(reason) })
    end
    self.available = false
    self.unavailable_reason = tostring(reason or "unreachable")
end

--- Connects to Docker: ping, version check, info; then reconciles. Returns true or nil, err.
function Service:connect(startup)
    local rt = self.runtime
    local ok, err = rt:ping()
    if ok then
        ok, err = rt:version()
    end
    local info
    if ok then
        info, err = rt:info()
        ok = info ~= nil
    end
    if not ok then
        self:mark_unavailable(err and err.message or err)
        return nil, err
    end
    self.ncpu = info.ncpu
    local rcfg = self.config.docker.runtime
    if rcfg and info.runtimes and not info.runtimes[rcfg] then
        self.log.error("configured docker.runtime is not known to the daemon", { runtime = rcfg })
    end
    -- the start-up restoration (§6.5 steps 2-5: interrupted provisioning, due expiries, timers) runs at
    -- the first successful connection, also when Docker was unreachable while the server started
    local due
    ok, due = self:reconcile(startup or not self.restored)
    if not ok then
        self:mark_unavailable(due and due.message or due)
        return nil, due
    end
    self.restored = true
    if not self.available then
        self.log.info("Docker is reachable", { docker_host = self.docker_host })
    end
    self.available = true
    for _, id in ipairs(due or {}) do
        self:expire(id)
    end
    return true
end

--- Loads the records from the store into memory (before connecting).
function Service:load()
    local all, err = self.store:all()
    if not all then
        return nil, err
    end
    for _, rec in ipairs(all) do
        self.records[rec.id] = rec
    end
    return #all
end

--- Background loops: the Docker event follower, the sweep, and the availability watcher.
function Service:start_background()
    local timer = self.core.timer
    self.core.spawn(function()
        while not self.stopped do
            if self.available then
                local since = self.last_event_s or math.floor(self:now_us() / 1e6)
                local _, err = self.runtime:events(since, function(ev)
                    local ok, e = pcall(self.on_event, self, ev)
                    if not ok then
                        self.log.error("event handler failed", { error = tostring(e) })
                    end
                end)
                if not self.stopped then
                    self.log.warn("Docker event stream ended; reconnecting", { error = tostring(err and err.message) })
                    local ok = self.runtime:ping()
                    if not ok then
                        self:mark_unavailable(err and err.message or "event stream ended")
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
    self.sweeper = timer.every(M.SWEEP_INTERVAL, function()
        self:sweep()
    end)
end

return M
