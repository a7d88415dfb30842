-- Shared by the lifecycle service's specs (tests/lua/unit/sandbox/*_spec.lua): the service on the fake
-- runtime (lua/runtimes/fake) with a fake core, so that no daemon and no event loop are needed.
-- Loaded with dofile("tests/lua/unit/sandbox/support.lua") (busted runs from the repository root), BEFORE
-- anything requires common.sync: it installs the core.sync stub that common.sync is built on.
--
-- The fake core is a tiny deterministic scheduler over Lua coroutines, the way the C core schedules tasks:
--   - core.spawn(fn) queues a task; queued tasks run only when the spec says so (env:run()), so a spec can
--     look at a sandbox while its provisioning is still waiting to run;
--   - core.sync waiters (the stub below) park the calling task; wake() makes it ready again (deferred, as
--     in C: the waker keeps running first) and returns true only when a task was waiting;
--   - the clock (core.now_us) moves only when the spec moves it (env:advance(seconds)), which fires the
--     timers that fall due (core.timer.after/every, and waits with a timeout) each in a task of its own;
--     env:fire(handle) fires one timer by hand.
-- env:call(fn, ...) runs fn as a task and returns its results; if fn has to wait, the queued tasks run until
-- it is done (it raises when it can never be: the spec would have hung on the real core).
local S = {}

S.T0 = 1767225600 * 1000000 -- 2026-01-01T00:00:00Z, in microseconds

---------------------------------------------------------------------------------------------------------
-- the scheduler (one per env; the core.sync stub uses the newest)
---------------------------------------------------------------------------------------------------------

local Sched = {}
Sched.__index = Sched

local function new_sched()
    return setmetatable({ now = S.T0, ready = {}, timers = {}, tasks = {}, seq = 0 }, Sched)
end

local current -- the scheduler of the newest env

-- resumes a task; an error inside it fails the spec with the task's traceback
function Sched:resume(co, ...)
    local ok, err = coroutine.resume(co, ...)
    if not ok then
        self.tasks[co] = nil
        error(debug.traceback(co, tostring(err)), 0)
    end
    if coroutine.status(co) == "dead" then
        self.tasks[co] = nil
    end
end

function Sched:spawn(fn, ...)
    local co = coroutine.create(fn)
    self.tasks[co] = true
    self.ready[#self.ready + 1] = table.pack(co, ...)
    return co
end

--- Runs one ready task (to its next wait or its end); false when none was ready.
function Sched:step()
    local r = table.remove(self.ready, 1)
    if not r then
        return false
    end
    self:resume(r[1], table.unpack(r, 2, r.n))
    return true
end

--- Runs ready tasks until none is left (tasks waiting for a wake or a timer stay parked).
function Sched:run()
    local n = 0
    while self:step() do
        n = n + 1
        assert(n < 100000, "support: tasks keep waking each other")
    end
end

function Sched:call(fn, ...)
    local res
    local co = coroutine.create(function(...)
        res = table.pack(fn(...))
    end)
    self.tasks[co] = true
    self:resume(co, ...)
    while not res do
        if not self:step() then
            error("support: the task waits for something that never comes (it would hang on the real core)", 2)
        end
    end
    return table.unpack(res, 1, res.n)
end

function Sched:after(delay, fn, every)
    self.seq = self.seq + 1
    local t = { at = self.now + math.floor(delay * 1e6), delay = delay, fn = fn, every = every, seq = self.seq }
    function t.cancel()
        t.cancelled = true
    end
    self.timers[#self.timers + 1] = t
    return t
end

-- the next timer due at or before `limit`, taken off the list (every-timers are re-armed)
function Sched:take_due(limit)
    local best, bi
    for i, t in ipairs(self.timers) do
        local earlier = not best or t.at < best.at or (t.at == best.at and t.seq < best.seq)
        if not t.cancelled and t.at <= limit and earlier then
            best, bi = t, i
        end
    end
    if not best then
        return nil
    end
    table.remove(self.timers, bi)
    if best.every then -- the next firing, on the same handle (the service keeps it to cancel)
        best.at = best.at + math.floor(best.delay * 1e6)
        self.timers[#self.timers + 1] = best
    end
    return best
end

function Sched:fire(t)
    for i, x in ipairs(self.timers) do
        if x == t then
            table.remove(self.timers, i)
            break
        end
    end
    assert(not t.cancelled, "support: firing a cancelled timer")
    t.fired = true
    self:spawn(t.fn)
    self:run()
end

function Sched:advance(seconds)
    local limit = self.now + math.floor(seconds * 1e6)
    while true do
        local t = self:take_due(limit)
        if not t then
            break
        end
        if t.at > self.now then
            self.now = t.at
        end
        t.fired = true
        self:spawn(t.fn)
        self:run()
    end
    self.now = limit
    self:run()
end

--- Live (armed, not cancelled) timers.
function Sched:armed()
    local out = {}
    for _, t in ipairs(self.timers) do
        if not t.cancelled then
            out[#out + 1] = t
        end
    end
    return out
end

---------------------------------------------------------------------------------------------------------
-- the core.sync stub: waiters on the scheduler
---------------------------------------------------------------------------------------------------------

local Waiter = {}
Waiter.__index = Waiter

function Waiter:wait(timeout)
    local sched = self.sched
    local co = coroutine.running()
    assert(sched.tasks[co], "core.sync stub: waiting outside a task (run the call with env:call)")
    self.co, self.pending = co, false
    if timeout then
        self.timer = sched:after(timeout, function()
            if self.co == co and not self.pending then
                self.pending = true
                self.co = nil
                sched.ready[#sched.ready + 1] = table.pack(co, nil, "timeout")
            end
        end)
    end
    return coroutine.yield()
end

function Waiter:wake(...)
    if not self.co or self.pending then
        return false
    end
    local co = self.co
    self.pending = true
    self.co = nil
    if self.timer then
        self.timer:cancel()
        self.timer = nil
    end
    self.sched.ready[#self.sched.ready + 1] = table.pack(co, ...)
    return true
end

S.csync = {
    waiter = function()
        assert(current, "core.sync stub: no env yet (call support.env first)")
        return setmetatable({ sched = current }, Waiter)
    end,
}
package.loaded["core.sync"] = S.csync
-- modules that captured another core.sync (another spec's stub) are loaded again
for _, name in ipairs({ "common.sync", "sandbox.service", "sandbox.provisioning", "sandbox.snapshots",
    "sandbox.pools", "sandbox.pool_claims" }) do
    package.loaded[name] = nil
end

---------------------------------------------------------------------------------------------------------
-- the service's other deps
---------------------------------------------------------------------------------------------------------

local function deep_copy(v)
    if type(v) ~= "table" then
        return v
    end
    local o = {}
    for k, x in pairs(v) do
        o[k] = deep_copy(x)
    end
    return o
end
S.deep_copy = deep_copy

--- An in-memory store with the store's interface (put, delete, all). It keeps copies, as a real store keeps
--- serialized rows. `full = true` makes writes fail like a full disk.
function S.store()
    local store = { rows = {}, full = false, puts = 0, deletes = {} }
    function store.put(_, rec)
        store.puts = store.puts + 1
        if store.full then
            return nil, "database or disk is full"
        end
        store.rows[rec.id] = deep_copy(rec)
        return true
    end
    function store.delete(_, id)
        if store.full then
            return nil, "database or disk is full"
        end
        store.deletes[#store.deletes + 1] = id
        store.rows[id] = nil
        return true
    end
    store.sealed = {}
    function store.seal(_, id, secrets)
        if store.full then
            return nil, "database or disk is full"
        end
        store.sealed[id] = deep_copy(secrets)
        return true
    end
    function store.unseal(_, id)
        return deep_copy(store.sealed[id])
    end
    function store.drop_sealed(_, id)
        store.sealed[id] = nil
        return true
    end
    function store.sealed_ids()
        local out = {}
        for id in pairs(store.sealed) do
            out[#out + 1] = id
        end
        table.sort(out)
        return out
    end
    store.created = {} -- created volume name -> sandbox id
    function store.add_created_volume(_, name, sandbox_id)
        if store.full then
            return nil, "database or disk is full"
        end
        store.created[name] = store.created[name] or sandbox_id
        return true
    end
    function store.created_volume(_, name)
        return store.created[name] or false
    end
    function store.drop_created_volume(_, name)
        store.created[name] = nil
        return true
    end
    store.snaps = {} -- snapshot records (sandbox/snapshots.lua)
    function store.put_snapshot(_, snap)
        if store.full then
            return nil, "database or disk is full"
        end
        store.snaps[snap.id] = deep_copy(snap)
        return true
    end
    function store.delete_snapshot(_, id)
        if store.full then
            return nil, "database or disk is full"
        end
        store.snaps[id] = nil
        return true
    end
    function store.all_snapshots()
        local out = {}
        for _, snap in pairs(store.snaps) do
            out[#out + 1] = deep_copy(snap)
        end
        return out
    end
    store.pools = {} -- pool records (sandbox/pools.lua)
    function store.put_pool(_, pool)
        if store.full then
            return nil, "database or disk is full"
        end
        store.pools[pool.name] = deep_copy(pool)
        return true
    end
    function store.delete_pool(_, name)
        if store.full then
            return nil, "database or disk is full"
        end
        store.pools[name] = nil
        return true
    end
    function store.all_pools()
        local out = {}
        for _, pool in pairs(store.pools) do
            out[#out + 1] = deep_copy(pool)
        end
        return out
    end
    function store.all()
        local out = {}
        for _, rec in pairs(store.rows) do
            out[#out + 1] = deep_copy(rec)
        end
        table.sort(out, function(a, b)
            return a.id < b.id
        end)
        return out
    end
    return store
end

--- A log that keeps its lines ("level message").
function S.log()
    local log = { lines = {} }
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        log[level] = function(msg)
            log.lines[#log.lines + 1] = level .. " " .. tostring(msg)
        end
    end
    return log
end

--- Hooks that record what they are told: transitions as "id from->to" (from nil is "nil").
function S.hooks()
    local h = { transitions = {}, names = {}, deletes = {}, proxied = {}, decision = nil }
    function h.before_create(_, _, spec)
        if h.reject then
            return nil, h.reject
        end
        return spec
    end
    function h.sandbox_name(_, _, _, rec)
        local name = "sb-" .. rec.id
        h.names[#h.names + 1] = name
        return name
    end
    function h.after_transition(_, rec, from, to)
        h.transitions[#h.transitions + 1] = string.format("%s %s->%s", rec.id, tostring(from), tostring(to))
    end
    function h.before_delete(_, _, view)
        h.deletes[#h.deletes + 1] = view.id
        if h.refuse_delete then
            return nil, h.refuse_delete
        end
        return true
    end
    function h.on_proxy_request(_, _, view, req)
        h.proxied[#h.proxied + 1] = { id = view.id, port = req.port }
        return h.decision or { allow = true }
    end
    return h
end

--- A create spec as validate.create makes it (image.auth and env are never kept by the service).
function S.spec(over)
    local spec = {
        image = { uri = "example.com/app:1", auth = { username = "u", password = "p" } },
        entrypoint = { "sleep", "infinity" },
        env = { { "A", "1" } },
        timeout = 600,
        metadata = { team = "a" },
        extensions = {},
    }
    for k, v in pairs(over or {}) do
        if v == false then
            spec[k] = nil
        else
            spec[k] = v
        end
    end
    return spec
end

---------------------------------------------------------------------------------------------------------
-- the env: a service on runtimes.fake with all of the above
---------------------------------------------------------------------------------------------------------

local Env = {}
Env.__index = Env

--- opts: hooks (true for S.hooks(), or an object), config, failure_ttl, runtime (a runtimes.fake object),
--- store (an S.store()), load (svc:load() first: the records of the store), connect (default true:
--- svc:connect(true) runs, so the service is available and restored), events (a sandbox.events hub).
function S.env(opts)
    opts = opts or {}
    local sched = new_sched()
    current = sched
    local env = setmetatable({ sched = sched }, Env)
    env.rt = opts.runtime or require("runtimes.fake").new({})
    env.store = opts.store or S.store()
    env.log = S.log()
    env.hooks = opts.hooks == true and S.hooks() or opts.hooks or nil
    env.config = opts.config or { server = {}, docker = {} }
    local ids, tokens = 0, 0
    env.core = {
        now_us = function()
            return sched.now
        end,
        spawn = function(fn, ...)
            sched:spawn(fn, ...)
        end,
        timer = {
            after = function(delay, fn)
                return sched:after(delay, fn)
            end,
            every = function(delay, fn)
                return sched:after(delay, fn, true)
            end,
            sleep = function(seconds)
                S.csync.waiter():wait(seconds)
            end,
        },
        uuid = {
            v4 = function()
                ids = ids + 1
                return string.format("00000000-0000-4000-8000-%012d", ids)
            end,
            random_hex = function(n)
                tokens = tokens + 1
                return string.format("%0" .. n .. "x", tokens)
            end,
        },
    }
    package.loaded["core.sync"] = S.csync
    env.svc = require("sandbox.service").new({
        runtime = env.rt,
        store = env.store,
        core = env.core,
        log = env.log,
        config = env.config,
        failure_ttl = opts.failure_ttl,
        hooks = env.hooks,
        events = opts.events,
    })
    if opts.load then
        assert(env.svc:load())
    end
    if opts.connect ~= false then
        assert(env:call(env.svc.connect, env.svc, true))
    end
    return env
end

function Env:call(fn, ...)
    return self.sched:call(fn, ...)
end

--- Calls svc:<method>(...) in a task; returns its results.
function Env:op(method, ...)
    local svc = self.svc
    return self.sched:call(function(...)
        return svc[method](svc, ...)
    end, ...)
end

function Env:spawn(fn, ...)
    return self.sched:spawn(fn, ...)
end

function Env:run()
    self.sched:run()
end

function Env:advance(seconds)
    self.sched:advance(seconds)
end

function Env:fire(t)
    self.sched:fire(t)
end

function Env:now()
    return self.sched.now
end

--- Delivers the changes the fake runtime has queued through its watch, as the service's watch loop does.
function Env:watch()
    local svc = self.svc
    self.rt:watch(function(change)
        svc:on_change(change)
    end)
end

--- create, without running its provisioning: returns the 202 view (or nil, err).
function Env:create(spec, ctx)
    return self:op("create", spec or S.spec(), ctx)
end

--- create, then provisioning: returns the id of a Running sandbox.
function Env:running(spec, ctx)
    local view = assert(self:create(spec, ctx))
    self:run()
    assert(self.svc.records[view.id].state == "Running", "support: the sandbox did not come up")
    return view.id
end

--- The calls the runtime got whose text starts with `prefix`.
function Env:calls(prefix)
    local out = {}
    for _, c in ipairs(self.rt.calls) do
        if c:sub(1, #prefix) == prefix then
            out[#out + 1] = c
        end
    end
    return out
end

--- A record as the store would have it (for svc.records / store.rows set up by hand).
function S.record(id, state, fields)
    local model = require("sandbox.model")
    local rec = { id = id, created_us = S.T0 - 60000000, image_uri = "example.com/app:1", entrypoint = { "sleep" },
        metadata = {}, extensions = {}, access_token = "tok-" .. id }
    local reasons = { Pending = "CONTAINER_STARTING", Running = "CONTAINER_RUNNING", Paused = "CONTAINER_PAUSED",
        Stopping = "CONTAINER_REMOVING" }
    model.apply_status(rec, model.status(state, reasons[state] or "X", "", rec.created_us))
    for k, v in pairs(fields or {}) do
        rec[k] = v
    end
    return rec
end

return S
