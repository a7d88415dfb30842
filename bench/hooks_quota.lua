io.stdout:setvbuf("line")
-- The hook cost of one create with many live sandboxes: before_create + sandbox_name + after_transition
-- through the three shipped hooks (metadata, naming, quotas), all configured, budgets on, with the quota
-- hook's usage answered by the lifecycle service's counters (lua/sandbox/counters.lua), as lua/main.lua
-- wires it. The live sandboxes are made through the real service on the fake runtime (no daemon; the unit
-- specs' deterministic core), through the same hooks.
--
--   bench/hooks_quota.sh [iterations]         (or: lua5.4 bench/hooks_quota.lua [iterations], from the root)
--   HOOKS_BENCH_N=20000 build/tests/c/core_scenario bench/hooks_quota.lua    (in the engine: the server's
--       allocator and string guards; what the figures in the README are measured with)
--   HOOKS_BENCH_SIZES=10000 ...               (only some sizes; default 1000,10000)
--
-- For each of 1,000 and 10,000 live sandboxes it prints microseconds per create (best of three runs) for the
-- hooks with the counters, for the same hooks unconfigured (the runner's floor at that heap size), for the
-- hooks counting by a scan of the records (how usage was answered before the counters), and what the service
-- adds per create and delete to keep the counters (set_record).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
collectgarbage("generational") -- as the server runs its Lua state (core/engine.c)
local S = dofile("tests/lua/unit/sandbox/support.lua")
local hooks = require("hooks")
local counters = require("sandbox.counters")

local N = tonumber(arg and arg[1]) or tonumber(os.getenv("HOOKS_BENCH_N")) or 20000
local SIZES = {}
for n in (os.getenv("HOOKS_BENCH_SIZES") or "1000,10000"):gmatch("%d+") do
    SIZES[#SIZES + 1] = tonumber(n)
end
local nolog = function() end
local log = { debug = nolog, info = nolog, warn = nolog, error = nolog }

local CONFIG = {
    naming = { template = "{metadata.team}-{id8}" },
    metadata = { metadata = { owner = "{principal}" }, metadata_defaults = { team = "none" }, env = { TZ = "UTC" } },
    quotas = {
        principals = { ["*"] = { max_sandboxes = 1000000, max_cpus = 1000000, max_memory = "1000Ti" } },
        metadata = { team = { ["*"] = { max_sandboxes = 1000000 } } },
    },
}
local TEAMS = { "infra", "web", "data", "ml", "ops" }

local function spec(i)
    return S.spec({
        image = { uri = "python:3.11-slim" },
        entrypoint = { "python", "-m", "http.server" },
        nano_cpus = 500000000,
        memory = 536870912,
        metadata = { team = TEAMS[i % #TEAMS + 1], purpose = "bench" },
    })
end

local function ctx(i)
    return { request_id = "0123456789abcdef0123456789abcdef", principal = "team-" .. (i % 20), admin = false,
        host = "127.0.0.1:8080", remote_addr = "127.0.0.1" }
end

-- a service on the fake runtime with `live` Running sandboxes, made through the hooks; returns env, hooks
local function populate(live)
    local env
    local h = assert(hooks.new({
        dir = "hooks",
        log = log,
        config = CONFIG,
        limits = { instructions = 10000000, memory_kb = 64 * 1024 }, -- the defaults of hooks.*_budget
        sandboxes = function()
            return env.svc.records
        end,
        usage = function(filter)
            return env.svc:usage(filter)
        end,
    }))
    -- the server's store is SQLite, outside the Lua heap: this one keeps nothing either (a store that kept
    -- copies would triple the heap, and with it the collector's share of every allocation)
    local store = S.store()
    function store.put()
        return true
    end
    function store.delete()
        return true
    end
    env = S.env({ hooks = h, store = store })
    for i = 1, live do
        assert(env:create(spec(i), ctx(i)))
        if i % 500 == 0 then
            env:run()
        end
    end
    env:run()
    return env, h
end

-- The requests of the timed creates, made before the clock starts: what is timed is the hooks, not the
-- building of a request (the API has the spec and the context already; before_create does not change them).
local REQUESTS = {}
for i = 1, 100 do
    REQUESTS[i] = { spec(i), ctx(i) }
end

-- microseconds per create through `h`: the best of three runs of n creates (the machine is shared)
local function time_creates(h, n)
    local rec = { id = "0123abcd-1111-4111-8111-111111111111", principal = "team-1", metadata = {} }
    local function one(i)
        local req = REQUESTS[i % #REQUESTS + 1]
        local out = assert(h:before_create(req[2], req[1]))
        rec.metadata = out.metadata
        h:sandbox_name(req[2], out, rec)
        h:after_transition(rec, nil, "Pending")
    end
    for i = 1, math.min(n, 500) do
        one(i)
    end
    local best = math.huge
    for _ = 1, 3 do
        local t0 = os.clock()
        for i = 1, n do
            one(i)
        end
        best = math.min(best, (os.clock() - t0) / n * 1e6)
    end
    return best
end

for _, live in ipairs(SIZES) do
    local env, h = populate(live)
    assert(env.svc:usage({}).sandboxes == live, "not all sandboxes are live")
    assert(counters.same(env.svc.counters, counters.of(env.svc.records)), "counters differ from a recount")
    local with_counters = time_creates(h, N)
    -- the floor: the same three hooks loaded but not configured (they return at once), same heap; what is
    -- left is the hook runner's own cost per call (copies, budgets, spec checks) and the collector's
    local idle = assert(hooks.new({ dir = "hooks", log = log, config = {} }))
    local floor = time_creates(idle, N)
    -- the same hooks, answered by a scan of the records (as before the counters)
    h.usage_of = nil
    local scans = time_creates(h, math.max(100, N // (live // 50)))
    -- what keeping the counters adds to the service: one update at the commit of a create and one at the
    -- removal, for a record like those above
    local c = env.svc.counters
    local rec = { state = "Running", principal = "team-3", metadata = { owner = "team-3", team = "web",
        purpose = "bench" }, nano_cpus = 500000000, memory = 536870912 }
    local t0 = os.clock()
    for _ = 1, N do
        c:update("bench-id", rec)
        c:update("bench-id", nil)
    end
    local upd = (os.clock() - t0) / N * 1e6
    print(string.format("%5d live sandboxes, heap %.0f MB: hooks per create %.1f us with the counters (hooks "
        .. "not configured: %.1f us; counting by scan: %.1f us); counters update per create + delete %.2f us",
        live, collectgarbage("count") / 1024, with_counters, floor, scans, upd))
end
-- in the engine (core_scenario) the loop would go on serving: stop it
local has_core, core = pcall(require, "core")
if has_core and type(core) == "table" and core.stop then
    core.stop(0)
end
