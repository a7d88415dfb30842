-- Unit spec of the usage counters (lua/sandbox/counters.lua) as the lifecycle service keeps them: after any
-- sequence of creates, provisioning outcomes, pauses, metadata patches, deletes, sandboxes vanishing from the
-- runtime and restarts, the counters equal a recount of the records, and every usage question gets the
-- answer a scan gives. Property-style: random sequences from fixed seeds, bounded in count.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local counters = require("sandbox.counters")
local rterrors = require("runtimes.errors")

local PRINCIPALS = { "team-a", "team-b", "team-c" }
local TEAMS = { "x", "y", "z" }
local ADMIN = { principal = "ops", admin = true }

-- what a scan of the records says (the reference the counters must match)
local function scan(records, filter)
    local n, nano, memory = 0, 0, 0
    for _, rec in pairs(records) do
        local ok = counters.LIVE[rec.state] and (filter.principal == nil or rec.principal == filter.principal)
        for k, v in pairs(filter.metadata or {}) do
            ok = ok and rec.metadata[k] == v
        end
        if ok then
            n, nano, memory = n + 1, nano + (rec.nano_cpus or 0), memory + (rec.memory or 0)
        end
    end
    return { sandboxes = n, nano_cpus = nano, memory = memory }
end

-- every filter the quota hook can ask, and some with two metadata entries
local function filters()
    local out = { {} }
    for _, p in ipairs(PRINCIPALS) do
        out[#out + 1] = { principal = p }
        for _, t in ipairs(TEAMS) do
            out[#out + 1] = { principal = p, metadata = { team = t } }
            out[#out + 1] = { principal = p, metadata = { team = t, tier = "gold" } }
        end
    end
    for _, t in ipairs(TEAMS) do
        out[#out + 1] = { metadata = { team = t } }
        out[#out + 1] = { metadata = { team = t, tier = "gold" } }
    end
    out[#out + 1] = { metadata = { tier = "gold" } }
    return out
end
local FILTERS = filters()

local function check(svc, where)
    assert.is_true(counters.same(svc.counters, counters.of(svc.records)), "counters differ from a recount " .. where)
    for _, f in ipairs(FILTERS) do
        assert.same(scan(svc.records, f), svc:usage(f), where)
    end
end

local function pick(rng, t)
    return t[rng(#t)]
end

local function ids_of(records)
    local ids = {}
    for id in pairs(records) do
        ids[#ids + 1] = id
    end
    table.sort(ids)
    return ids
end

describe("sandbox.counters", function()
    it("answer every filter as a scan does, and drop empty buckets", function()
        local c = counters.new()
        c:update("1", { state = "Running", principal = "p", metadata = { team = "x" }, nano_cpus = 10, memory = 5 })
        c:update("2", { state = "Paused", principal = "q", metadata = { team = "x", tier = "gold" }, memory = 7 })
        c:update("3", { state = "Failed", principal = "p", metadata = { team = "x" }, nano_cpus = 99 })
        assert.same({ sandboxes = 2, nano_cpus = 10, memory = 12 }, c:usage({}))
        assert.same({ sandboxes = 1, nano_cpus = 10, memory = 5 }, c:usage({ principal = "p" }))
        assert.same({ sandboxes = 2, nano_cpus = 10, memory = 12 }, c:usage({ metadata = { team = "x" } }))
        assert.same({ sandboxes = 1, nano_cpus = 0, memory = 7 }, c:usage({ principal = "q",
            metadata = { team = "x", tier = "gold" } }))
        assert.same({ sandboxes = 0, nano_cpus = 0, memory = 0 }, c:usage({ principal = "nobody" }))
        c:update("1", { state = "Stopping", principal = "p", metadata = { team = "y" }, nano_cpus = 10, memory = 5 })
        assert.same({ sandboxes = 1, nano_cpus = 0, memory = 7 }, c:usage({ metadata = { team = "x" } }))
        c:update("1", nil)
        c:update("2", { state = "Terminated", principal = "q", metadata = {} })
        assert.same({}, c.by_principal)
        assert.same({}, c.by_metadata)
        assert.same({}, c.by_both)
        assert.is_true(counters.same(c, counters.new()))
    end)

    for _, seed in ipairs({ 1, 7, 42, 1234 }) do
        it("equal a recount after random creates, deletes, patches, pauses and restarts (seed " .. seed .. ")",
            function()
                math.randomseed(seed)
                local rng = math.random
                local store = S.store()
                local rt = require("runtimes.fake").new({})
                local env = S.env({ runtime = rt, store = store })
                local steps = 0
                for _ = 1, 300 do
                    steps = steps + 1
                    local svc = env.svc
                    local ids = ids_of(svc.records)
                    local op = rng(100)
                    if op <= 35 or #ids == 0 then
                        local md = { team = pick(rng, TEAMS) }
                        if rng(2) == 1 then
                            md.tier = "gold"
                        end
                        if rng(5) == 1 then
                            md.team = nil
                        end
                        if rng(10) == 1 then
                            rt:fail_next("provision", rterrors.new("api", "no room"))
                        end
                        env:create(S.spec({
                            metadata = md,
                            nano_cpus = rng(2) == 1 and rng(8) * 250000000 or nil,
                            memory = rng(2) == 1 and rng(8) * 67108864 or nil,
                        }), { principal = pick(rng, PRINCIPALS), admin = false })
                        if rng(3) > 1 then
                            env:run()
                        end
                    elseif op <= 50 then
                        env:op("delete", pick(rng, ids), ADMIN)
                    elseif op <= 70 then
                        local patch = { team = rng(4) == 1 and false or pick(rng, TEAMS) }
                        if rng(3) == 1 then
                            patch.tier = rng(2) == 1 and "gold" or false
                        end
                        env:op("patch_metadata", pick(rng, ids), patch, ADMIN)
                    elseif op <= 78 then
                        env:op("pause", pick(rng, ids), ADMIN)
                    elseif op <= 84 then
                        env:op("resume", pick(rng, ids), ADMIN)
                    elseif op <= 90 then
                        local rec = svc.records[pick(rng, ids)]
                        if rec.handle and rt.objects[rec.handle] then
                            if rng(2) == 1 then
                                rt:vanish(rec.handle)
                            else
                                rt:set_status(rec.handle, "Terminated", "CONTAINER_EXITED", "exited")
                            end
                            env:watch()
                        end
                    elseif op <= 95 then
                        env:run()
                    else
                        -- a restart: a new service over the same store and runtime
                        env:run()
                        env = S.env({ runtime = rt, store = store, load = true })
                    end
                    check(env.svc, string.format("(seed %d, step %d)", seed, steps))
                end
                env:run()
                check(env.svc, "(end)")
            end)
    end
end)

describe("sandbox usage across a restart", function()
    it("counts the cpu and memory of restored sandboxes (the record keeps them)", function()
        local store = S.store()
        local rt = require("runtimes.fake").new({})
        local env = S.env({ runtime = rt, store = store })
        local ctx = { principal = "team-a", admin = false }
        env:running(S.spec({ nano_cpus = 1500000000, memory = 268435456 }), ctx)
        env:running(S.spec({ nano_cpus = 500000000 }), ctx)
        assert.same({ sandboxes = 2, nano_cpus = 2000000000, memory = 268435456 },
            env.svc:usage({ principal = "team-a" }))
        for _, row in pairs(store.rows) do
            assert.equal("integer", math.type(row.nano_cpus))
        end
        env = S.env({ runtime = rt, store = store, load = true })
        assert.same({ sandboxes = 2, nano_cpus = 2000000000, memory = 268435456 },
            env.svc:usage({ principal = "team-a" }))
    end)

    it("fills in the limits of records stored without them from the runtime at start-up", function()
        local store = S.store()
        local rt = require("runtimes.fake").new({})
        local env = S.env({ runtime = rt, store = store })
        local id = env:running(S.spec({ nano_cpus = 2000000000, memory = 134217728 }), { principal = "team-a" })
        -- a record of schema version 2: no limits
        store.rows[id].nano_cpus, store.rows[id].memory = nil, nil
        env = S.env({ runtime = rt, store = store, load = true })
        assert.equal(2000000000, env.svc.records[id].nano_cpus)
        assert.equal(134217728, store.rows[id].memory)
        assert.same({ sandboxes = 1, nano_cpus = 2000000000, memory = 134217728 }, env.svc:usage({}))
    end)

    it("adopts a sandbox with the limits the runtime reports", function()
        local rt = require("runtimes.fake").new({})
        local id = "00000000-0000-4000-8000-00000000abcd"
        rt:inject({ id = id, sandbox = { id = id, created_us = S.T0, expires_us = S.T0 + 600000000, metadata = {},
            principal = "team-b", nano_cpus = 750000000, memory = 67108864 },
            status = { state = "Running", reason = "CONTAINER_RUNNING", message = "running" } })
        local env = S.env({ runtime = rt })
        assert.equal(750000000, env.svc.records[id].nano_cpus)
        assert.same({ sandboxes = 1, nano_cpus = 750000000, memory = 67108864 },
            env.svc:usage({ principal = "team-b" }))
    end)
end)

describe("sandbox metadata patch and hooks", function()
    it("runs before_patch_metadata under the lock: a refusal changes nothing, an adjusted patch is applied",
        function()
            local hooks = S.hooks()
            local seen
            function hooks.before_patch_metadata(_, ctx, rec, patch)
                seen = { principal = ctx.principal, id = rec.id, team = rec.metadata.team, patch = patch }
                if patch.team == "full" then
                    return nil, require("common.errors").new(429, "QUOTA::EXCEEDED", "full")
                end
                return { team = patch.team, owner = "kept" }
            end
            local env = S.env({ hooks = hooks })
            local ctx = { principal = "team-a", admin = false }
            local id = env:running(S.spec({ metadata = { team = "a" } }), ctx)
            local puts = env.store.puts
            local view, err = env:op("patch_metadata", id, { team = "full" }, ctx)
            assert.is_nil(view)
            assert.equal("QUOTA::EXCEEDED", err.code)
            assert.same({ principal = "team-a", id = id, team = "a", patch = { team = "full" } }, seen)
            assert.equal(puts, env.store.puts, "nothing written")
            assert.same({ team = "a" }, env.svc.records[id].metadata)
            view = assert(env:op("patch_metadata", id, { team = "b" }, ctx))
            assert.same({ team = "b", owner = "kept" }, view.metadata)
            assert.same({ team = "b", owner = "kept" }, env.store.rows[id].metadata)
            assert.same({ sandboxes = 1, nano_cpus = 0, memory = 0 }, env.svc:usage({ metadata = { team = "b" } }))
            assert.same({ sandboxes = 0, nano_cpus = 0, memory = 0 }, env.svc:usage({ metadata = { team = "a" } }))
        end)
end)
