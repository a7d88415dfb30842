-- Unit spec of warm pools (lua/sandbox/pools.lua, sandbox/pool_validate.lua) on the fake runtime: the /pools
-- API and its 400s, refill within capacitySpec with bounded concurrency, claims (the member's id, a fresh
-- token, the claim's entrypoint and env, limits), empty pools (cold or 503), members never handed out twice
-- (also after a restart, when the others are adopted), crashed members replaced, PUT and DELETE, hooks.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local json = require("common.json")
local rterrors = require("runtimes.errors")

local ALICE = { principal = "alice", admin = false }
local BOB = { principal = "bob", admin = false }

local function body(over)
    local b = {
        name = "py",
        template = { image = { uri = "example.com/py:3" }, resourceLimits = { cpu = "1", memory = "512Mi" },
            env = { TEMPLATE = "t" } },
        capacitySpec = { bufferMin = 2, bufferMax = 2, poolMin = 0, poolMax = 5 },
    }
    for k, v in pairs(over or {}) do
        b[k] = v
    end
    return b
end

-- a claim spec as validate.create makes it for {"extensions":{"poolRef":name}, ...}
local function claim(name, over)
    local spec = { pool = name, entrypoint = { "python", "app.py" }, env = { { "CLAIM", "c" } }, timeout = 600,
        metadata = { job = "j1" }, extensions = { poolRef = name }, volumes = {} }
    for k, v in pairs(over or {}) do
        spec[k] = v
    end
    return spec
end

local function env_with(config, opts)
    opts = opts or {}
    opts.config = { server = {}, docker = {}, pools = config or {} }
    return S.env(opts)
end

-- the pool's members by state
local function members(env, name)
    local out = { warming = 0, ready = 0 }
    for _, m in pairs(env.svc.pools[name].members) do
        out[m.state] = (out[m.state] or 0) + 1
    end
    return out
end

-- one refill pass, and every task it started
local function refill(env)
    env.svc:pool_refill()
    env:run()
end

local function n_records(env)
    local n = 0
    for _ in pairs(env.svc.records) do
        n = n + 1
    end
    return n
end

describe("sandbox.pools API", function()
    it("creates a pool (201 view, durable, owned), lists and gets it per principal", function()
        local env = env_with()
        local view = assert(env:op("create_pool", body(), ALICE))
        assert.equal("py", view.name)
        assert.same({ bufferMax = 2, bufferMin = 2, poolMax = 5, poolMin = 0 }, view.capacitySpec)
        assert.same({ total = 0, allocated = 0, available = 0, revision = "1" }, view.status)
        assert.is_string(view.createdAt)
        assert.equal("alice", env.store.pools.py.principal)
        assert.equal("example.com/py:3", env.store.pools.py.template.image.uri)
        assert.equal(1, #env:op("list_pools", ALICE).items)
        assert.equal(0, #env:op("list_pools", BOB).items)
        local _, err = env:op("get_pool", "py", BOB)
        assert.equal(404, err.status)
        assert.equal("POOL::NOT_FOUND", err.code)
        assert.equal("Pool 'py' not found.", err.message)
        _, err = env:op("create_pool", body(), ALICE)
        assert.equal(409, err.status)
        assert.equal("POOL::ALREADY_EXISTS", err.code)
    end)

    it("answers 400 for bad input before anything is created", function()
        local env = env_with({ max_pool_size = 10 })
        local cases = {
            { { name = "Bad_Name" }, "SANDBOX::INVALID_PARAMETER", "name must be a lowercase RFC 1123 name" },
            { { capacitySpec = json.null }, "SANDBOX::INVALID_PARAMETER", "capacitySpec is required." },
            { { capacitySpec = { bufferMin = 1, bufferMax = 1, poolMin = 0 } }, "SANDBOX::INVALID_PARAMETER",
                "capacitySpec.poolMax is required." },
            { { capacitySpec = { bufferMin = 3, bufferMax = 1, poolMin = 0, poolMax = 5 } },
                "SANDBOX::INVALID_PARAMETER", "capacitySpec.bufferMin must not exceed capacitySpec.bufferMax." },
            { { capacitySpec = { bufferMin = 0, bufferMax = 1, poolMin = 6, poolMax = 5 } },
                "SANDBOX::INVALID_PARAMETER", "capacitySpec.poolMin must not exceed capacitySpec.poolMax." },
            { { capacitySpec = { bufferMin = 0, bufferMax = 1, poolMin = 0, poolMax = 11 } },
                "SANDBOX::INVALID_PARAMETER", "capacitySpec.poolMax 11 exceeds the configured maximum of 10" },
            { { capacitySpec = { bufferMin = -1, bufferMax = 1, poolMin = 0, poolMax = 1 } },
                "SANDBOX::INVALID_PARAMETER", "capacitySpec.bufferMin must be an integer >= 0." },
            { { template = json.null }, "SANDBOX::INVALID_PARAMETER", "template is required." },
            { { template = { resourceLimits = {} } }, "SANDBOX::INVALID_PARAMETER", "template.image is required." },
            { { template = { image = { uri = "x" } } }, "SANDBOX::INVALID_PARAMETER",
                "template.resourceLimits is required." },
            { { template = { image = { uri = "x" }, resourceLimits = { cpu = "lots" } } },
                "SANDBOX::INVALID_PARAMETER", "template.resourceLimits.cpu 'lots' is invalid" },
            { { template = { image = { uri = "x" }, resourceLimits = {}, entrypoint = { "sh" } } },
                "SANDBOX::INVALID_PARAMETER", "template.entrypoint is not part of a pool template" },
            { { template = { image = { uri = "x" }, resourceLimits = {}, networkPolicy = {} } },
                "SANDBOX::API_NOT_SUPPORTED", "template.networkPolicy is not yet supported in pool templates." },
            { { template = { image = { uri = "x" }, resourceLimits = {}, volumes = { {} } } },
                "SANDBOX::INVALID_PARAMETER", "template.volumes[0] must be an object" },
            { { template = { image = { uri = "x" }, resourceLimits = {}, volumes = { { name = "v", mountPath = "/v",
                host = { path = "/etc" } } } } }, "VOLUME::HOST_PATH_NOT_ALLOWED", "" },
        }
        for _, c in ipairs(cases) do
            local view, err = env:op("create_pool", body(c[1]), ALICE)
            assert.is_nil(view, c[3])
            assert.equal(400, err.status, c[3])
            assert.equal(c[2], err.code, c[3])
            assert.equal(1, err.message:find(c[3], 1, true), err.message)
        end
        local _, err = env:op("create_pool", "not an object", ALICE)
        assert.equal(400, err.status)
        assert.same({}, env.store.pools)
        assert.same({}, env.svc.pools)
        assert.same({}, env:calls("provision"))
    end)

    it("publishes pool.changed events (created, updated, deleted) to the owner's streams", function()
        local hub = require("sandbox.events").new({ buffer = 16, now = function()
            return 1767225600
        end, waiter = function()
            return S.csync.waiter()
        end })
        local env = env_with(nil, { events = hub })
        assert(env:op("create_pool", body(), ALICE))
        assert(env:op("update_pool", "py", { capacitySpec = { bufferMin = 0, bufferMax = 0, poolMin = 0,
            poolMax = 1 } }, ALICE))
        assert.is_true(env:op("delete_pool", "py", ALICE))
        local changes = {}
        for e in hub:after(0) do
            assert.equal("pool.changed", e.kind)
            assert.equal("alice", e.principal)
            changes[#changes + 1] = e.frame:match('"change":"(%a+)"')
        end
        assert.same({ "created", "updated", "deleted" }, changes)
    end)

    it("refuses pools on a runtime without them (400)", function()
        local env = S.env({ runtime = require("runtimes.fake").new({ fake = { no_pools = true } }) })
        local view, err = env:op("create_pool", body(), ALICE)
        assert.is_nil(view)
        assert.equal(400, err.status)
        assert.equal("SANDBOX::API_NOT_SUPPORTED", err.code)
        assert.equal("Pools are not supported by the fake runtime.", err.message)
        view, err = env:create(claim("py"), ALICE)
        assert.is_nil(view)
        assert.equal("SANDBOX::API_NOT_SUPPORTED", err.code)
    end)
end)

describe("sandbox.pools refill", function()
    it("fills the buffer with waiting members of the template, at most refill_concurrency at once", function()
        local env = env_with({ refill_concurrency = 2 })
        assert(env:op("create_pool", body({ capacitySpec = { bufferMin = 3, bufferMax = 5, poolMin = 0,
            poolMax = 10 } }), ALICE))
        -- below bufferMin: aims at the middle (4), two at a time
        env.svc:pool_refill()
        assert.equal(2, env.svc.pool_inflight)
        env:run()
        assert.equal(0, env.svc.pool_inflight)
        assert.equal(2, members(env, "py").ready)
        refill(env)
        assert.equal(4, members(env, "py").ready)
        refill(env)
        assert.equal(4, members(env, "py").ready, "within the buffer: nothing more")
        local obj
        for _, o in pairs(env.rt.objects) do
            obj = o
        end
        assert.is_true(obj.spec.pool_member)
        assert.equal("py", obj.sandbox.pool)
        assert.equal("example.com/py:3", obj.spec.image.uri)
        assert.same({ { "TEMPLATE", "t" } }, obj.spec.env)
        assert.equal(1000000000, obj.spec.nano_cpus)
        assert.equal(512 * 1024 * 1024, obj.spec.memory)
        local view = env:op("get_pool", "py", ALICE)
        assert.same({ total = 4, allocated = 0, available = 4, revision = "1" }, view.status)
        assert.equal(0, n_records(env), "members are not sandboxes")
    end)

    it("backs off when members fail to provision", function()
        local env = env_with({ refill_concurrency = 1 })
        assert(env:op("create_pool", body(), ALICE))
        env.rt:fail_next("provision", rterrors.new("api", "no such image"))
        refill(env)
        assert.equal(0, members(env, "py").ready)
        refill(env)
        assert.equal(1, #env:calls("provision"), "waits before trying again")
        env:advance(1.5)
        refill(env)
        assert.equal(1, members(env, "py").ready)
    end)
end)

describe("sandbox.pools claims", function()
    local function ready_pool(config, opts)
        local env = env_with(config, opts)
        assert(env:op("create_pool", body(), ALICE))
        refill(env)
        assert.equal(2, members(env, "py").ready)
        return env
    end

    it("hands out a ready member: Running at once, its id, a fresh token, the claim's entrypoint and env", function()
        local env = ready_pool()
        local before = {}
        for id, m in pairs(env.svc.pool_members) do
            before[id] = m.access_token
        end
        local view = assert(env:create(claim("py"), ALICE))
        assert.equal("Running", view.status.state)
        assert.truthy(before[view.id], "the sandbox has the member's id")
        assert.same({ job = "j1" }, view.metadata)
        assert.same({ "python", "app.py" }, view.entrypoint)
        assert.is_string(view.expiresAt)
        local rec = env.svc.records[view.id]
        assert.equal("py", rec.pool)
        assert.equal("alice", rec.principal)
        assert.equal("example.com/py:3", rec.image_uri)
        assert.equal(1000000000, rec.nano_cpus)
        assert.are_not.equal(before[view.id], rec.access_token)
        assert.equal("py", env.store.rows[view.id].pool, "the claim is durable")
        local obj = env.rt.objects[rec.handle]
        assert.same({ "python", "app.py" }, obj.claim.entrypoint)
        assert.same({ "CLAIM=c" }, obj.claim.env)
        assert.equal(rec.access_token, obj.claim.token)
        assert.is_nil(env.svc.pool_members[view.id])
        assert.same({}, env:calls("provision " .. view.id .. "x"))
        -- the expiry timer is armed, the refill replaces the member
        assert.is_table(env.svc.timers[view.id])
        refill(env)
        local st = env:op("get_pool", "py", ALICE).status
        assert.same({ total = 3, allocated = 1, available = 2, revision = "1" }, st)
        -- the claimed sandbox exits like any: Terminated
        env.rt:set_status(rec.handle, "Terminated", "CONTAINER_EXITED", "Sandbox container exited.")
        env:watch()
        assert.equal("Terminated", env.svc.records[view.id].state)
    end)

    it("refills one member at a time while claims arrive, refill_concurrency again once they stop", function()
        local env = ready_pool({ refill_concurrency = 3 })
        assert(env:op("update_pool", "py", { capacitySpec = { bufferMin = 6, bufferMax = 8, poolMin = 0,
            poolMax = 20 } }, ALICE))
        env:run()
        assert(env:create(claim("py"), ALICE))
        env.svc:pool_refill()
        assert.equal(1, env.svc.pool_inflight, "a claim just happened: one at a time")
        env:run()
        env:advance(2.5) -- no claim for longer than the window
        env:run()
        env.svc:pool_refill()
        assert.equal(3, env.svc.pool_inflight, "claims stopped: refill_concurrency again")
        env:run()
    end)

    it("answers 400 for a claim it cannot serve, and takes no member", function()
        local env = ready_pool()
        local cases = {
            { claim("nope"), "extensions.poolRef: pool 'nope' does not exist." },
            { claim("py", { nano_cpus = 2000000000 }), "resourceLimits.cpu exceeds the pool's template (1)." },
            { claim("py", { memory = 1024 * 1024 * 1024 }), "resourceLimits.memory exceeds the pool's template" },
            { claim("py", { gpu = 1 }), "resourceLimits.gpu exceeds the pool's template (none)." },
            { claim("py", { image = { uri = "other:1" } }), "image.uri must be the pool's template image" },
            { claim("py", { volumes = { { name = "v" } } }), "volumes cannot be set with extensions.poolRef" },
            { claim("py", { platform = { os = "linux", arch = "amd64" } }), "platform cannot be set" },
        }
        for _, c in ipairs(cases) do
            local view, err = env:create(c[1], ALICE)
            assert.is_nil(view)
            assert.equal(400, err.status, c[2])
            assert.equal(1, err.message:find(c[2], 1, true), err.message)
        end
        -- another tenant's pool does not exist for bob
        local _, err = env:create(claim("py"), BOB)
        assert.equal("extensions.poolRef: pool 'py' does not exist.", err.message)
        assert.equal(0, n_records(env))
        assert.equal(2, members(env, "py").ready)
        -- less than the template is fine: the sandbox gets the template's limits
        local view = assert(env:create(claim("py", { nano_cpus = 500000000 }), ALICE))
        assert.equal(1000000000, env.svc.records[view.id].nano_cpus)
    end)

    it("an empty pool creates cold from the template (on_empty = cold)", function()
        local env = env_with({ refill_concurrency = 1 })
        assert(env:op("create_pool", body(), ALICE))
        local view = assert(env:create(claim("py"), ALICE))
        assert.equal("Pending", view.status.state)
        env:run()
        local rec = env.svc.records[view.id]
        assert.equal("Running", rec.state)
        assert.is_nil(rec.pool, "a cold sandbox is not allocated from the pool")
        local obj = env.rt.objects[rec.handle]
        assert.is_nil(obj.spec.pool_member)
        assert.equal("example.com/py:3", obj.spec.image.uri)
        assert.same({ { "TEMPLATE", "t" }, { "CLAIM", "c" } }, obj.spec.env)
        assert.same({ "python", "app.py" }, obj.spec.entrypoint)
    end)

    it("an empty pool answers 503 POOL::EMPTY with on_empty = error", function()
        local env = env_with({ on_empty = "error" })
        assert(env:op("create_pool", body(), ALICE))
        local view, err = env:create(claim("py"), ALICE)
        assert.is_nil(view)
        assert.equal(503, err.status)
        assert.equal("POOL::EMPTY", err.code)
        assert.equal("Pool 'py' has no warm sandbox available.", err.message)
        assert.equal(0, n_records(env))
    end)

    it("passes what the member's ping said (claim_file) back to the runtime's claim", function()
        for _, files in ipairs({ true, false }) do
            local env = env_with()
            env.rt.claim_files = files
            assert(env:op("create_pool", body(), ALICE))
            refill(env)
            for _, m in pairs(env.svc.pool_members) do
                assert.equal(files or nil, m.claim_file)
            end
            local view = assert(env:create(claim("py"), ALICE))
            assert.equal(files, env.rt.objects[env.svc.records[view.id].handle].claimed_by_file)
        end
    end)

    it("drops a member whose agent refuses the claim and takes the next", function()
        local env = ready_pool()
        env.rt:fail_next("pool_claim", rterrors.new("unavailable", "connection refused"))
        local view = assert(env:create(claim("py"), ALICE))
        assert.equal("Running", view.status.state)
        env:run()
        assert.equal(1, n_records(env), "the first member's record was forgotten")
        assert.equal(2, #env:calls("pool_claim"))
        assert.equal(1, #env:calls("remove"), "the member that refused was removed")
        assert.equal(0, members(env, "py").ready)
    end)

    it("replaces a member that crashed, and never hands it out", function()
        local env = ready_pool()
        local _, crashed = next(env.svc.pool_members)
        env.rt:set_status(crashed.handle, "Failed", "CONTAINER_EXITED_ERROR", "exited with code 137.")
        env:watch()
        env:run()
        assert.is_nil(env.svc.pool_members[crashed.id])
        assert.is_nil(env.rt.objects[crashed.handle], "removed")
        refill(env)
        assert.equal(2, members(env, "py").ready)
        for _ = 1, 2 do
            local view = assert(env:create(claim("py"), ALICE))
            assert.are_not.equal(crashed.id, view.id)
        end
    end)

    it("never hands a member out twice, also after a restart; the others are adopted", function()
        local env = ready_pool()
        local first = assert(env:create(claim("py"), ALICE))
        -- (the store gives JSON numbers back as floats, as SQLite's JSON columns do)
        env.store.pools.py.template.nano_cpus = 1e9
        env.store.pools.py.capacity.poolMax = 5.0
        -- a new server on the same store and runtime
        local env2 = env_with({}, { store = env.store, runtime = env.rt, load = true })
        assert.equal("integer", math.type(env2.svc.pools.py.template.nano_cpus))
        assert.equal("integer", math.type(env2.svc.pools.py.capacity.poolMax))
        env2:run()
        assert.equal("Running", env2.svc.records[first.id].state)
        assert.equal(1, members(env2, "py").ready, "the unclaimed member was adopted")
        assert.is_nil(env2.svc.pool_members[first.id])
        local second = assert(env2:op("create", claim("py"), ALICE))
        assert.are_not.equal(first.id, second.id)
        assert.equal("Running", second.status.state)
        -- the claimed one's agent would refuse a second claim anyway
        assert.equal(2, #env2:calls("pool_claim"), "one claim each (the runtime's calls are shared)")
    end)

    it("before_create hooks see the pool and the template's image", function()
        local env = ready_pool(nil, { hooks = true })
        local seen
        env.hooks.before_create = function(_, _, spec)
            seen = S.deep_copy(spec)
            spec.pool = "another" -- cannot change it
            return spec
        end
        local view = assert(env:create(claim("py"), ALICE))
        assert.equal("py", seen.pool)
        assert.equal("example.com/py:3", seen.image.uri)
        assert.equal("py", env.svc.records[view.id].pool)
    end)
end)

describe("sandbox.pools PUT and DELETE", function()
    it("PUT reconciles to the new capacity: more members, or idle ones removed", function()
        local env = env_with({ refill_concurrency = 4 })
        assert(env:op("create_pool", body(), ALICE))
        refill(env)
        local view = assert(env:op("update_pool", "py", { capacitySpec = { bufferMin = 4, bufferMax = 4, poolMin = 0,
            poolMax = 5 } }, ALICE))
        assert.equal("2", view.status.revision)
        assert.equal(2, env.store.pools.py.revision)
        refill(env)
        assert.equal(4, members(env, "py").ready)
        assert(env:op("update_pool", "py", { capacitySpec = { bufferMin = 0, bufferMax = 1, poolMin = 0,
            poolMax = 5 } }, ALICE))
        refill(env)
        assert.equal(0, members(env, "py").ready, "above bufferMax: down to the middle (0)")
        assert.equal(0, env.rt:count())
        local _, err = env:op("update_pool", "py", { template = {} }, ALICE)
        assert.equal(400, err.status)
        _, err = env:op("update_pool", "py", { capacitySpec = { bufferMin = 0, bufferMax = 1, poolMin = 0,
            poolMax = 5 } }, BOB)
        assert.equal(404, err.status)
    end)

    it("DELETE removes idle members and leaves claimed sandboxes alone", function()
        local env = env_with()
        assert(env:op("create_pool", body(), ALICE))
        refill(env)
        local view = assert(env:create(claim("py"), ALICE))
        assert.is_true(env:op("delete_pool", "py", ALICE))
        env:run()
        assert.is_nil(env.svc.pools.py)
        assert.is_nil(env.store.pools.py)
        assert.equal(1, env.rt:count(), "only the claimed sandbox is left")
        assert.equal("Running", env.svc.records[view.id].state)
        local _, err = env:op("delete_pool", "py", ALICE)
        assert.equal(404, err.status)
    end)
end)
