-- Unit spec: a 202 is a promise (API.md §6.5 step 4). A server killed anywhere while it provisions,
-- deletes or pauses comes back and finishes the job: every interruption point of provisioning on the fake
-- runtime (which can stop a provisioning task for good after any step, the way kill -9 does), then a new
-- service on the same store and the same runtime objects, as after a restart.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local rterrors = require("runtimes.errors")
local model = require("sandbox.model")

local STATE, REASON, MESSAGE = model.STATE, model.REASON, model.MESSAGE

-- the objects the fake runtime holds for sandbox `id`
local function objects_of(rt, id)
    local out = {}
    for _, obj in pairs(rt.objects) do
        if obj.id == id then
            out[#out + 1] = obj
        end
    end
    return out
end

local function spec()
    return S.spec({
        env = { { "Z_FIRST", "1" }, { "A_SECOND", "two" } },
        nano_cpus = 500000000,
        memory = 268435456,
    })
end

-- a server restarted on what the dead one left: the same store and runtime objects, a new scheduler
local function restart(env, opts)
    opts = opts or {}
    env.rt.crash_after = nil
    return S.env({ runtime = env.rt, store = env.store, load = true, hooks = opts.hooks,
        connect = opts.connect })
end

describe("sandbox.service resumes provisioning after a crash", function()
    local points = { "accepted", "image", "create", "start" }
    for _, point in ipairs(points) do
        it("interrupted after '" .. point .. "': the sandbox ends Running, with one object made from the full spec",
            function()
                local env = S.env({ hooks = true })
                if point ~= "accepted" then
                    env.rt.crash_after = point
                end
                local view = assert(env:create(spec()))
                local id = view.id
                if point ~= "accepted" then -- ("accepted": the provisioning task never ran)
                    env:run()
                    assert.are.equal(1, env.rt.crashed)
                end
                assert.are.equal(STATE.PENDING, env.store.rows[id].state)
                assert.is_table(env.store.sealed[id], "env and auth are sealed while provisioning")

                local env2 = restart(env, { hooks = true })
                assert.is_table(env2.svc.provisioning[id], "operations wait for the resumed provisioning")
                env2:run()
                local rec = env2.svc.records[id]
                assert.are.equal(STATE.RUNNING, rec.state)
                assert.are.equal(REASON.CONTAINER_RUNNING, rec.reason)
                assert.are.equal(STATE.RUNNING, env2.store.rows[id].state)
                assert.is_nil(env2.svc.provisioning[id])
                local objs = objects_of(env2.rt, id)
                assert.are.equal(1, #objs, "exactly one runtime object")
                assert.are.equal(objs[1].handle, rec.handle)
                assert.are.equal(env2.rt:count(), 1, "nothing else was made")
                assert.are.equal(1, env2.rt.starts, "started once")
                -- what the resumed provisioning made it from: the whole spec, secrets included
                local made = objs[1].spec
                assert.are.same({ { "Z_FIRST", "1" }, { "A_SECOND", "two" } }, made.env)
                assert.are.same({ username = "u", password = "p" }, made.image.auth)
                assert.are.equal(500000000, made.nano_cpus)
                assert.are.equal(268435456, made.memory)
                assert.are.equal("sb-" .. id, objs[1].sandbox.name, "the hook's name is kept")
                assert.are.equal(view.expiresAt and rec.expires_us, env.store.rows[id].expires_us)
                -- the secrets are gone once provisioning ended, and so is what only a resumption needs
                assert.is_nil(env2.store.sealed[id])
                assert.is_nil(env2.store.rows[id].provision)
                assert.is_table(env2.svc.timers[id], "its expiry is armed")
                if point == "create" or point == "start" then
                    assert.are.same({ "take " .. objs[1].handle }, env2:calls("take "))
                end
            end)
    end

    it("brings 30 creates accepted just before a kill to Running, with no duplicates", function()
        local env = S.env()
        env.rt.crash_after = "create"
        local ids = {}
        for i = 1, 30 do
            ids[i] = assert(env:create(spec())).id
            if i % 3 == 0 then
                env:run() -- a third get their object made before the kill, the rest not even that
            end
        end
        local env2 = restart(env)
        env2:run()
        for _, id in ipairs(ids) do
            assert.are.equal(STATE.RUNNING, env2.svc.records[id].state, id)
            assert.are.equal(1, #objects_of(env2.rt, id), id)
        end
        assert.are.equal(30, env2.rt:count())
        assert.are.same({}, env2.store.sealed)
    end)

    it("makes operations wait for the resumed provisioning (a delete right after the restart)", function()
        local env = S.env()
        env.rt.crash_after = "image"
        local id = assert(env:create(spec())).id
        env:run()
        local env2 = restart(env, { hooks = true })
        local done
        env2:spawn(function()
            done = table.pack(env2.svc:delete(id))
        end)
        env2:run()
        assert.is_true(done[1])
        assert.are.equal(2, #env2:calls("provision " .. id), "the delete waited for the resumed provisioning")
        assert.are.same({ id .. " Pending->Running", id .. " Running->Stopping", id .. " Stopping->Deleted" },
            env2.hooks.transitions)
        assert.is_nil(env2.svc.records[id])
        assert.are.equal(0, env2.rt:count(), "the object the resumption made is removed, not left behind")
    end)

    it("resumes once the runtime is reachable, when it was down at the restart", function()
        local env = S.env()
        env.rt.crash_after = "create"
        local id = assert(env:create(spec())).id
        env:run()
        env.rt.down = true
        local env2 = restart(env, { connect = false })
        local ok = env2:op("connect", true)
        assert.is_nil(ok)
        assert.are.equal(STATE.PENDING, env2.svc.records[id].state)
        env2.rt.down = false
        assert.is_true(env2:op("connect", false))
        env2:run()
        assert.are.equal(STATE.RUNNING, env2.svc.records[id].state)
        assert.are.equal(1, env2.rt:count())
    end)

    it("keeps a provisioning whose runtime became unreachable Pending, and finishes it when it is back", function()
        local env = S.env()
        env.rt:fail_next("provision", rterrors.new("unavailable", "connection refused"))
        local id = assert(env:create(spec())).id
        env:run()
        assert.are.equal(STATE.PENDING, env.svc.records[id].state)
        assert.is_false(env.svc.available)
        env:advance(10) -- nobody reconnects it in this spec but us
        assert.are.equal(STATE.PENDING, env.svc.records[id].state)
        assert.is_true(env:op("connect", false))
        env:advance(3)
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        assert.are.equal(1, env.rt:count())
    end)

    it("still fails a real provisioning error of a resumed create, and removes the sealed secrets", function()
        local env = S.env()
        env.rt.crash_after = "image"
        local id = assert(env:create(spec())).id
        env:run()
        env.rt:fail_next("provision", rterrors.new("api", "manifest unknown", { step = "image" }))
        local env2 = restart(env)
        env2:run()
        local rec = env2.svc.records[id]
        assert.are.equal(STATE.FAILED, rec.state)
        assert.are.equal("DOCKER::SANDBOX_IMAGE_PULL_FAILED: manifest unknown", rec.message)
        assert.is_nil(env2.store.sealed[id])
    end)

    it("fails as interrupted a Pending record that cannot be resumed (no sealed secrets), removing its object",
        function()
            local env = S.env()
            env.rt.crash_after = "create"
            local id = assert(env:create(spec())).id
            env:run()
            env.store.sealed[id] = nil
            local env2 = restart(env)
            env2:run()
            local rec = env2.svc.records[id]
            assert.are.equal(STATE.FAILED, rec.state)
            assert.are.equal(MESSAGE.INTERRUPTED, rec.message)
            assert.are.equal(0, env2.rt:count())
        end)

    it("deletes at load the sealed secrets of records that are not pending, or that do not exist", function()
        local env = S.env()
        local id = env:running(spec())
        env.store.sealed[id] = { env = {} } -- a crash between the Running commit and the secrets' removal
        env.store.sealed.orphan = { env = {} } -- a crash between sealing and the record's first write
        local env2 = restart(env)
        assert.are.same({}, env2.store.sealed)
        assert.are.equal(STATE.RUNNING, env2.svc.records[id].state)
    end)

    it("answers 503 and leaves nothing behind when the secrets cannot be sealed", function()
        local env = S.env()
        env.store.full = true
        local view, err = env:create(spec())
        assert.is_nil(view)
        assert.are.equal(503, err.status)
        assert.are.equal("STORE::UNAVAILABLE", err.code)
        assert.are.same({}, env.store.rows)
        assert.are.same({}, env.store.sealed)
        env:run()
        assert.are.equal(0, env.rt:count())
    end)
end)

describe("sandbox.service finishes a delete or pause a crash interrupted", function()
    it("removes at the restart a sandbox whose delete was cut short during the runtime's removal", function()
        local env = S.env()
        local id = env:running(spec())
        env.rt.before.remove = function()
            coroutine.yield() -- the server dies while the runtime removes it
        end
        env:spawn(function()
            env.svc:delete(id)
        end)
        env:run()
        assert.are.equal(STATE.STOPPING, env.store.rows[id].state, "the intent is durable before the removal")
        env.rt.before.remove = nil
        local env2 = restart(env)
        env2:run()
        assert.is_nil(env2.svc.records[id])
        assert.is_nil(env2.store.rows[id])
        assert.are.equal(0, env2.rt:count())
    end)

    it("forgets at the restart a sandbox removed in the runtime whose record was not yet deleted", function()
        local env = S.env()
        local id = env:running(spec())
        local rec = env.svc:copy(env.svc.records[id])
        model.apply_status(rec, model.status(STATE.STOPPING, REASON.CONTAINER_REMOVING, MESSAGE.DELETING, S.T0))
        env.store.rows[id] = S.deep_copy(rec)
        env.rt:remove(rec)
        local env2 = restart(env)
        env2:run()
        assert.is_nil(env2.svc.records[id])
        assert.is_nil(env2.store.rows[id])
    end)

    it("ends Paused when the runtime paused it and the server died before recording it", function()
        local env = S.env()
        local id = env:running(spec())
        local handle = env.svc.records[id].handle
        env.rt.objects[handle].status = { state = STATE.PAUSED, reason = REASON.CONTAINER_PAUSED,
            message = MESSAGE.PAUSED } -- paused; the commit never happened, the change never delivered
        local env2 = restart(env)
        env2:run()
        assert.are.equal(STATE.PAUSED, env2.svc.records[id].state)
        assert.are.equal(STATE.PAUSED, env2.store.rows[id].state)
    end)

    it("ends Running (never stuck) when the server died before the runtime paused it", function()
        local env = S.env()
        local id = env:running(spec())
        env.rt.before.pause = function()
            coroutine.yield()
        end
        env:spawn(function()
            env.svc:pause(id)
        end)
        env:run()
        env.rt.before.pause = nil
        local env2 = restart(env)
        env2:run()
        assert.are.equal(STATE.RUNNING, env2.svc.records[id].state)
        assert.is_true(env2:op("pause", id))
        assert.are.equal(STATE.PAUSED, env2.svc.records[id].state)
    end)

    it("keeps a renewal answered before the crash", function()
        local env = S.env()
        local id = env:running(spec())
        local want = S.T0 + 7200 * 1000000
        assert.is_table(env:op("renew", id, want))
        local env2 = restart(env)
        assert.are.equal(want, env2.svc.records[id].expires_us)
    end)
end)
