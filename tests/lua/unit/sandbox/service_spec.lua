-- Unit spec of the lifecycle service (lua/sandbox/service.lua and its parts) on the fake runtime
-- (lua/runtimes/fake): the state machine, provisioning, operations, expiry, reconciliation, runtime changes,
-- endpoints and hooks, in the runtime contract's words only (lua/runtimes/README.md). The fake core
-- (support.lua) runs tasks only when told, and its clock moves only when told.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local rterrors = require("runtimes.errors")
local model = require("sandbox.model")
local timefmt = require("common.timefmt")

local STATE, REASON, MESSAGE = model.STATE, model.REASON, model.MESSAGE
local AGENT_PORT = 44772

local function count(t)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n
end

describe("sandbox.service create and provisioning", function()
    it("answers Pending at once, then is Running once its provisioning task has run", function()
        local env = S.env()
        local view = assert(env:create(S.spec()))
        local id = view.id
        assert.are.equal(STATE.PENDING, view.status.state)
        assert.are.equal(REASON.CONTAINER_STARTING, view.status.reason)
        assert.is_nil(view.image, "the 202 body has no image")
        assert.are.equal(timefmt.format(S.T0 + 600 * 1000000), view.expiresAt)
        local rec = env.svc.records[id]
        assert.are.equal(STATE.PENDING, rec.state)
        assert.is_nil(rec.handle)
        assert.are.equal(STATE.PENDING, env.store.rows[id].state, "the store has the Pending record")
        assert.are.equal(0, env.rt:count(), "provisioning has not run yet")
        assert.is_table(env.svc.provisioning[id])

        env:run()
        rec = env.svc.records[id]
        assert.are.equal(STATE.RUNNING, rec.state)
        assert.are.equal(REASON.CONTAINER_RUNNING, rec.reason)
        assert.are.equal("fake-1", rec.handle)
        assert.are.same({ ip = "10.0.0.1", agent_port = AGENT_PORT }, rec.place)
        assert.are.equal("fake-1", env.store.rows[id].handle)
        assert.are.equal(STATE.RUNNING, env.store.rows[id].state)
        assert.is_nil(env.svc.provisioning[id])
        assert.are.same({ "connect", "list", "provision " .. id }, env.rt.calls)
        -- what the runtime was given: the identity, with the agent's token, and the whole spec
        local obj = env.rt.objects["fake-1"]
        assert.are.equal(id, obj.sandbox.id)
        assert.are.equal(rec.access_token, obj.sandbox.access_token)
        assert.are.equal(rec.created_us, obj.sandbox.created_us)
        assert.are.equal(rec.expires_us, obj.sandbox.expires_us)
        assert.are.same({ team = "a" }, obj.sandbox.metadata)
        assert.are.same({ username = "u", password = "p" }, obj.spec.image.auth)
        -- ... of which the record keeps neither the image's auth nor the env
        assert.is_nil(env.store.rows[id].env)
        assert.is_nil(env.store.rows[id].image)
        assert.is_nil(env.store.rows[id].auth)
        assert.are.equal("example.com/app:1", env.store.rows[id].image_uri)
        -- and its expiry is armed
        local t = env.svc.timers[id]
        assert.is_table(t)
        assert.are.equal(600, t.delay)
    end)

    it("refuses with 503 while the runtime is unavailable, and creates nothing", function()
        local env = S.env({ connect = false })
        local view, err = env:create(S.spec())
        assert.is_nil(view)
        assert.are.equal(503, err.status)
        assert.are.equal("DOCKER::UNAVAILABLE", err.code)
        assert.are.equal("Fake runtime is unreachable: not checked yet", err.message)
        assert.are.equal("5", err.headers["Retry-After"])
        assert.are.same({}, env.svc.records)
        assert.are.same({}, env.store.rows)
        env:run()
        assert.are.same({}, env.rt.calls)
    end)

    local steps = {
        { "image", "DOCKER::SANDBOX_IMAGE_PULL_FAILED" },
        { "agent", "DOCKER::SANDBOX_EXECD_DISTRIBUTION_FAILED" },
        { "create", "DOCKER::SANDBOX_START_FAILED" },
        { "start", "DOCKER::SANDBOX_START_FAILED" },
    }
    for _, s in ipairs(steps) do
        local step, code = s[1], s[2]
        it("fails provisioning at the " .. step .. " step with " .. code, function()
            local env = S.env()
            env.rt:fail_next("provision", rterrors.new("api", "the runtime said no", { step = step }))
            local id = assert(env:create(S.spec())).id
            env:advance(3)
            env:run()
            local rec = env.svc.records[id]
            assert.are.equal(STATE.FAILED, rec.state)
            assert.are.equal(REASON.PROVISIONING_ERROR, rec.reason)
            assert.are.equal(code .. ": the runtime said no", rec.message)
            assert.are.equal(S.T0 + 3000000, rec.failed_us)
            assert.are.equal(S.T0 + 3000000, rec.transition_us)
            assert.is_nil(rec.handle)
            assert.are.equal(code .. ": the runtime said no", env.store.rows[id].message)
            assert.is_nil(env.svc.provisioning[id])
            assert.is_nil(env.svc.timers[id], "a failed sandbox does not expire, the sweep drops it")
            assert.are.same("Failed", env:op("get", id).status.state)
        end)
    end

    it("names a provisioning that raised an internal start failure", function()
        local env = S.env()
        env.rt.before.provision = function()
            error("boom")
        end
        local id = assert(env:create(S.spec())).id
        env:run()
        local rec = env.svc.records[id]
        assert.are.equal(REASON.PROVISIONING_ERROR, rec.reason)
        assert.truthy(rec.message:find("^DOCKER::SANDBOX_START_FAILED: internal error: .*boom"), rec.message)
        assert.is_nil(env.svc.provisioning[id])
    end)

    it("makes operations wait for provisioning, and answers 409 when it takes too long", function()
        local env = S.env()
        local id = assert(env:create(S.spec())).id
        -- an endpoint asked while Pending waits, then answers from the provisioned sandbox
        local ep = assert(env:op("endpoint", id, 8080, false, {}))
        assert.are.equal("10.0.0.1:8080", ep.endpoint)

        -- a provisioning that never ends (the runtime never answers)
        local hang = S.csync.waiter()
        env.rt.before.provision = function()
            hang:wait()
        end
        local id2 = assert(env:create(S.spec())).id
        local ok, err
        env:spawn(function()
            ok, err = env.svc:pause(id2)
        end)
        env:run()
        assert.is_nil(err, "still waiting")
        env:advance(119)
        assert.is_nil(err, "still waiting")
        env:advance(1)
        assert.is_nil(ok)
        assert.are.equal(409, err.status)
        assert.are.equal("SANDBOX::PROVISIONING_IN_PROGRESS", err.code)
        assert.are.equal("5", err.headers["Retry-After"])
        -- when the runtime finally answers, the sandbox runs
        hang:wake()
        env:run()
        assert.are.equal(STATE.RUNNING, env.svc.records[id2].state)
    end)
end)

describe("sandbox.service pause and resume", function()
    it("pauses a running sandbox and resumes a paused one", function()
        local env = S.env()
        local id = env:running()
        env:advance(5)
        assert.is_true(env:op("pause", id))
        local rec = env.svc.records[id]
        assert.are.equal(STATE.PAUSED, rec.state)
        assert.are.equal(REASON.CONTAINER_PAUSED, rec.reason)
        assert.are.equal(MESSAGE.PAUSED, rec.message)
        assert.are.equal(S.T0 + 5000000, rec.transition_us)
        assert.are.equal(STATE.PAUSED, env.store.rows[id].state)
        assert.are.equal("Paused", env.rt.objects["fake-1"].status.state)
        assert.is_true(env:op("resume", id))
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        assert.are.equal(STATE.RUNNING, env.store.rows[id].state)
        assert.are.same({ "pause fake-1", "resume fake-1" }, { env:calls("pause")[1], env:calls("resume")[1] })
    end)

    it("answers 409 in the wrong state without asking the runtime", function()
        local env = S.env()
        local id = env:running()
        local ok, err = env:op("resume", id)
        assert.is_nil(ok)
        assert.are.equal(409, err.status)
        assert.are.equal("DOCKER::SANDBOX_NOT_PAUSED", err.code)
        assert(env:op("pause", id))
        ok, err = env:op("pause", id)
        assert.is_nil(ok)
        assert.are.equal(409, err.status)
        assert.are.equal("DOCKER::SANDBOX_NOT_RUNNING", err.code)
        assert.are.equal(1, #env:calls("pause"))
        assert.are.equal(0, #env:calls("resume"))
        assert.are.equal(STATE.PAUSED, env.svc.records[id].state)
    end)

    it("answers 404 for an unknown sandbox, and for another principal's", function()
        local env = S.env()
        local id = env:running(S.spec(), { principal = "alice", admin = false })
        local _, err = env:op("pause", "nope")
        assert.are.equal(404, err.status)
        assert.are.equal("DOCKER::SANDBOX_NOT_FOUND", err.code)
        _, err = env:op("pause", id, { principal = "bob", admin = false })
        assert.are.equal(404, err.status)
        assert.are.equal(0, #env:calls("pause"))
        assert.is_true(env:op("pause", id, { principal = "alice", admin = false }))
    end)

    it("answers 400 SANDBOX::API_NOT_SUPPORTED when the runtime cannot pause, changing nothing", function()
        local env = S.env({ runtime = require("runtimes.fake").new({ fake = { no_pause = true } }) })
        local id = env:running()
        local before = env.svc.records[id]
        local ok, err = env:op("pause", id)
        assert.is_nil(ok)
        assert.are.equal(400, err.status)
        assert.are.equal("SANDBOX::API_NOT_SUPPORTED", err.code)
        assert.are.equal("The fake runtime cannot pause sandboxes.", err.message)
        assert.are.equal(before, env.svc.records[id], "the record is untouched")
        assert.are.equal(STATE.RUNNING, env.store.rows[id].state)
        assert.is_true(env.svc.available, "an unsupported call says nothing of availability")
        -- resume too, although the sandbox is not Paused (the runtime's refusal comes before the state's)
        ok, err = env:op("resume", id)
        assert.is_nil(ok)
        assert.are.equal(400, err.status)
        assert.are.equal("SANDBOX::API_NOT_SUPPORTED", err.code)
    end)

    it("answers 503 with the runtime's unavailable code when the runtime is unreachable, marking it so", function()
        local env = S.env()
        local id = env:running()
        env.rt:fail_next("pause", rterrors.new("unavailable", "connection refused"))
        local ok, err = env:op("pause", id)
        assert.is_nil(ok)
        assert.are.equal(503, err.status)
        assert.are.equal("DOCKER::UNAVAILABLE", err.code)
        assert.are.equal("Fake runtime is unreachable: connection refused", err.message)
        assert.are.equal("5", err.headers["Retry-After"])
        assert.is_false(env.svc.available)
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        -- what needs the runtime is refused from now on, without asking it
        local calls = #env.rt.calls
        ok, err = env:op("pause", id)
        assert.is_nil(ok)
        assert.are.equal(503, err.status)
        ok, err = env:create(S.spec())
        assert.is_nil(ok)
        assert.are.equal(503, err.status)
        assert.are.equal(calls, #env.rt.calls)
        -- until it is reachable again
        assert(env:op("connect", false))
        assert.is_true(env.svc.available)
        assert.is_true(env:op("pause", id))
    end)

    it("answers the operation's own code for any other runtime error", function()
        local env = S.env()
        local id = env:running()
        assert(env:op("pause", id))
        env.rt:fail_next("resume", rterrors.new("api", "cannot unpause", { status = 500 }))
        local ok, err = env:op("resume", id)
        assert.is_nil(ok)
        assert.are.equal(500, err.status)
        assert.are.equal("DOCKER::SANDBOX_RESUME_FAILED", err.code)
        assert.are.equal("Failed to resume sandbox container: cannot unpause", err.message)
        assert.are.equal(STATE.PAUSED, env.svc.records[id].state)
        assert.is_true(env.svc.available)
    end)
end)

describe("sandbox.service delete", function()
    it("removes the runtime's object and forgets the record", function()
        local env = S.env()
        local id = env:running()
        local t = env.svc.timers[id]
        assert.is_true(env:op("delete", id))
        assert.is_nil(env.svc.records[id])
        assert.is_nil(env.store.rows[id])
        assert.are.equal(0, env.rt:count())
        assert.are.same({ "remove fake-1" }, env:calls("remove"))
        assert.is_true(t.cancelled, "its expiry timer is cancelled")
        assert.is_nil(env.svc.timers[id])
        assert.are.same({}, env.svc.removing)
        local _, err = env:op("get", id)
        assert.are.equal(404, err.status)
        _, err = env:op("delete", id)
        assert.are.equal(404, err.status)
        -- the runtime's report of the removal changes nothing
        env:watch()
        assert.is_nil(env.svc.records[id])
    end)

    it("closes the server proxy's pooled connections of the sandbox (core.proxy_pool_close)", function()
        local env = S.env()
        local closed = {}
        env.core.proxy_pool_close = function(tag)
            closed[#closed + 1] = tag
        end
        local id = env:running()
        local other = env:running()
        assert.are.same({}, closed)
        assert.is_true(env:op("delete", id))
        assert.are.same({ id }, closed, "only the deleted sandbox's pool tag")
        assert.is_not_nil(env.svc.records[other])
    end)

    it("forgets a failed provisioning without asking the runtime, even when it is unavailable", function()
        local env = S.env()
        env.rt:fail_next("provision", rterrors.new("api", "no", { step = "image" }))
        local id = assert(env:create(S.spec())).id
        env:run()
        env.svc:mark_unavailable("down")
        assert.is_true(env:op("delete", id))
        assert.is_nil(env.svc.records[id])
        assert.is_nil(env.store.rows[id])
        assert.are.equal(0, #env:calls("remove"))
    end)

    it("answers 503 while the runtime is unavailable and keeps the sandbox as it was", function()
        local env = S.env()
        local id = env:running()
        env.svc:mark_unavailable("down")
        local ok, err = env:op("delete", id)
        assert.is_nil(ok)
        assert.are.equal(503, err.status)
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        assert.are.equal(1, env.rt:count())
    end)

    it("stays Stopping when the runtime fails the removal, and the sweep finishes it", function()
        local env = S.env()
        local id = env:running()
        env.rt:fail_next("remove", rterrors.new("api", "device busy"))
        local ok, err = env:op("delete", id)
        assert.is_nil(ok)
        assert.are.equal(500, err.status)
        assert.are.equal("DOCKER::SANDBOX_DELETE_FAILED", err.code)
        assert.are.equal("Failed to delete sandbox container: device busy", err.message)
        assert.are.equal(STATE.STOPPING, env.svc.records[id].state)
        assert.are.equal(MESSAGE.DELETING, env.svc.records[id].message)
        assert.are.equal(STATE.STOPPING, env.store.rows[id].state)
        env:op("sweep")
        assert.is_nil(env.svc.records[id])
        assert.is_nil(env.store.rows[id])
        assert.are.equal(0, env.rt:count())
    end)

    it("asks the before_delete hooks first, and a refusal removes nothing", function()
        local hooks = S.hooks()
        hooks.refuse_delete = { status = 403, code = "HOOK::REJECTED", message = "not today" }
        local env = S.env({ hooks = hooks })
        local id = env:running()
        local ok, err = env:op("delete", id)
        assert.is_nil(ok)
        assert.are.equal("not today", err.message)
        assert.are.same({ id }, hooks.deletes)
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        assert.are.equal(0, #env:calls("remove"))
    end)
end)

describe("sandbox.service renew", function()
    it("moves the expiry to a future time and re-arms the timer", function()
        local env = S.env()
        local id = env:running()
        local old = env.svc.timers[id]
        local want = S.T0 + 3600 * 1000000
        local res = assert(env:op("renew", id, want))
        assert.are.same({ expiresAt = timefmt.format(want) }, res)
        assert.are.equal(want, env.svc.records[id].expires_us)
        assert.are.equal(want, env.store.rows[id].expires_us)
        assert.is_true(old.cancelled)
        assert.are.equal(3600, env.svc.timers[id].delay)
        -- the old expiry passes without effect; the new one expires it
        env:advance(601)
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        env:advance(3000)
        assert.is_nil(env.svc.records[id])
    end)

    it("writes the renewal where the runtime keeps expiries, and refuses it (changing nothing) when that fails",
        function()
            local env = S.env({ runtime = require("runtimes.fake").new({ fake = { keeps_expiry = true } }) })
            local id = env:running()
            local handle = env.svc.records[id].handle
            local want = S.T0 + 3600 * 1000000
            assert(env:op("renew", id, want))
            assert.are.equal(want, env.rt.objects[handle].sandbox.expires_us)
            assert.are.equal(1, #env:calls("set_expiry"))
            env.rt:fail_next("set_expiry", rterrors.new("unavailable", "connection refused"))
            local ok, err = env:op("renew", id, want + 1000000)
            assert.is_nil(ok)
            assert.are.equal(503, err.status)
            assert.are.equal(want, env.svc.records[id].expires_us, "the record keeps the last written expiry")
        end)

    it("takes the expiry the runtime holds (another replica renewed), and re-arms the timer", function()
        local env = S.env({ runtime = require("runtimes.fake").new({ fake = { keeps_expiry = true } }) })
        local id = env:running()
        local handle = env.svc.records[id].handle
        local later = env.svc.records[id].expires_us + 3600 * 1000000
        env.rt.objects[handle].sandbox.expires_us = later -- written by someone else
        env:op("sweep")
        assert.are.equal(later, env.svc.records[id].expires_us)
        assert.are.equal(later, env.store.rows[id].expires_us)
        env:advance(601) -- the old expiry passes without effect
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        -- an earlier one too (a renewal may shorten): the runtime holds the expiry
        env.rt.objects[handle].sandbox.expires_us = later - 1000
        env:op("sweep")
        assert.are.equal(later - 1000, env.svc.records[id].expires_us)
    end)

    it("reads the expiry the runtime holds before removing, and keeps a sandbox renewed elsewhere", function()
        local env = S.env({ runtime = require("runtimes.fake").new({ fake = { keeps_expiry = true } }) })
        local id = env:running()
        local handle = env.svc.records[id].handle
        local later = env.svc.records[id].expires_us + 600 * 1000000
        env.rt.objects[handle].sandbox.expires_us = later -- renewed elsewhere; no news of it here yet
        env:advance(601)
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state, "not removed")
        assert.are.equal(later, env.svc.records[id].expires_us)
        assert.are.equal(1, #env:calls("expiry_of"))
        env:advance(600)
        assert.is_nil(env.svc.records[id], "removed at the renewed expiry")
    end)

    it("refuses a time that is not in the future", function()
        local env = S.env()
        local id = env:running()
        local exp = env.svc.records[id].expires_us
        for _, at in ipairs({ S.T0, S.T0 - 1 }) do
            local ok, err = env:op("renew", id, at)
            assert.is_nil(ok)
            assert.are.equal(400, err.status)
            assert.are.equal("DOCKER::INVALID_EXPIRATION", err.code)
            assert.are.equal("New expiration time must be in the future.", err.message)
        end
        assert.are.equal(exp, env.svc.records[id].expires_us)
    end)

    it("refuses a sandbox with manual cleanup (which has no timer)", function()
        local env = S.env()
        local id = env:running(S.spec({ timeout = false }))
        assert.is_nil(env.svc.records[id].expires_us)
        assert.is_nil(env.svc.timers[id])
        local ok, err = env:op("renew", id, S.T0 + 1000000000)
        assert.is_nil(ok)
        assert.are.equal(409, err.status)
        assert.are.equal("DOCKER::INVALID_EXPIRATION", err.code)
        assert.are.equal(string.format("Sandbox %s does not have automatic expiration enabled.", id), err.message)
        assert.is_nil(env.svc.records[id].expires_us)
    end)

    it("refuses a failed provisioning with 409", function()
        local env = S.env()
        env.rt:fail_next("provision", rterrors.new("api", "no", { step = "start" }))
        local id = assert(env:create(S.spec())).id
        env:run()
        local _, err = env:op("renew", id, S.T0 + 1000000000)
        assert.are.equal(409, err.status)
        assert.are.equal("DOCKER::SANDBOX_NOT_RUNNING", err.code)
    end)
end)

describe("sandbox.service expiry", function()
    it("removes the sandbox when its timer fires at the expiry", function()
        local env = S.env()
        local id = env:running()
        env:advance(599)
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        env:advance(1)
        assert.is_nil(env.svc.records[id])
        assert.is_nil(env.store.rows[id])
        assert.are.same({ "remove fake-1" }, env:calls("remove"))
        assert.is_nil(env.svc.timers[id])
    end)

    it("re-reads the expiry when the timer fires: early, it re-arms; due, it removes", function()
        local env = S.env()
        local id = env:running()
        local t = env.svc.timers[id]
        env.sched.now = S.T0 + 200 * 1000000 -- the clock moves, no timer fires
        env:fire(t)
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        local again = env.svc.timers[id]
        assert.are_not.equal(t, again)
        assert.are.equal(400, again.delay)
        env.sched.now = S.T0 + 600 * 1000000
        env:fire(again)
        assert.is_nil(env.svc.records[id])
        assert.are.equal(0, env.rt:count())
    end)

    it("is finished by the sweep when the timer was missed or the removal failed", function()
        local env = S.env()
        local a = env:running()
        local b = env:running()
        -- a: its timer is lost; b: its timer fires, but the runtime fails the removal
        env.svc.timers[a]:cancel()
        env.svc.timers[a] = nil
        env.rt:fail_next("remove", rterrors.new("api", "busy"))
        env:advance(600)
        assert.are.equal(STATE.RUNNING, env.svc.records[a].state)
        assert.are.equal(STATE.STOPPING, env.svc.records[b].state)
        assert.are.equal(MESSAGE.EXPIRING, env.svc.records[b].message)
        env:op("sweep")
        assert.is_nil(env.svc.records[a])
        assert.is_nil(env.svc.records[b])
        assert.are.equal(0, env.rt:count())
    end)

    it("drops a failed provisioning in the sweep once failure_ttl has passed", function()
        local env = S.env({ failure_ttl = 60 })
        env.rt:fail_next("provision", rterrors.new("api", "no", { step = "image" }))
        local id = assert(env:create(S.spec())).id
        env:run()
        env:advance(59)
        env:op("sweep")
        assert.is_table(env.svc.records[id])
        env:advance(1)
        env:op("sweep")
        assert.is_nil(env.svc.records[id])
        assert.is_nil(env.store.rows[id])
    end)
end)

describe("sandbox.service reconciliation", function()
    local function identity(id, over)
        local s = { id = id, created_us = S.T0 - 3600 * 1000000, expires_us = S.T0 + 3600 * 1000000,
            image_uri = "example.com/adopted:2", entrypoint = { "run" }, metadata = { k = "v" },
            principal = "carol", access_token = "tok-adopted", platform = { os = "linux", arch = "amd64" } }
        for k, v in pairs(over or {}) do
            s[k] = v
        end
        return s
    end

    it("adopts a runtime object with a complete identity", function()
        local env = S.env()
        local handle = env.rt:inject({ id = "adopted-1", sandbox = identity("adopted-1"),
            status = { state = STATE.PAUSED, reason = REASON.CONTAINER_PAUSED, message = MESSAGE.PAUSED },
            place = { ip = "10.9.9.9" } })
        env:op("sweep")
        local rec = env.svc.records["adopted-1"]
        assert.is_table(rec)
        assert.are.equal(handle, rec.handle)
        assert.are.same({ ip = "10.9.9.9" }, rec.place)
        assert.are.equal(STATE.PAUSED, rec.state)
        assert.are.equal(REASON.CONTAINER_PAUSED, rec.reason)
        assert.are.equal(S.T0 - 3600 * 1000000, rec.created_us)
        assert.are.equal(rec.created_us, rec.transition_us, "no time from the runtime: since its creation")
        assert.are.equal(S.T0 + 3600 * 1000000, rec.expires_us)
        assert.are.equal("example.com/adopted:2", rec.image_uri)
        assert.are.same({ "run" }, rec.entrypoint)
        assert.are.same({ k = "v" }, rec.metadata)
        assert.are.equal("tok-adopted", rec.access_token)
        assert.are.equal("carol", rec.principal)
        assert.are.same({ os = "linux", arch = "amd64" }, rec.platform)
        assert.are.equal(handle, env.store.rows["adopted-1"].handle)
        assert.are.equal(0, #env:calls("remove"))
        -- an adopted sandbox is served like any other
        local ep = assert(env:op("endpoint", "adopted-1", AGENT_PORT, false, {}))
        assert.are.equal("tok-adopted", ep.headers["X-EXECD-ACCESS-TOKEN"])
    end)

    it("arms the expiry timer of a sandbox a sweep adopts (not only at start-up)", function()
        local env = S.env()
        local ident = identity("adopted-2")
        ident.expires_us = S.T0 + 10 * 1000000
        env.rt:inject({ id = "adopted-2", sandbox = ident })
        env:op("sweep")
        assert.is_table(env.svc.records["adopted-2"])
        assert.is_table(env.svc.timers["adopted-2"])
        env:advance(11) -- no sweep in between: the timer removes it
        assert.is_nil(env.svc.records["adopted-2"])
    end)

    it("neither adopts nor removes an object whose details could not be read, until they can", function()
        local env = S.env()
        local handle = env.rt:inject({ id = "unread", sandbox = identity("unread"), status = false })
        env:op("sweep")
        assert.is_nil(env.svc.records.unread, "not adopted as Pending (a restart would fail it)")
        assert.are.equal(0, #env:calls("remove"))
        env.rt.objects[handle].status = { state = STATE.RUNNING, reason = REASON.CONTAINER_RUNNING,
            message = MESSAGE.RUNNING }
        env:op("sweep")
        assert.are.equal(STATE.RUNNING, env.svc.records.unread.state)
    end)

    it("neither adopts nor removes a foreign object (perhaps another server's), but keeps a record of it", function()
        local env = S.env()
        env.rt:inject({ id = "theirs", sandbox = identity("theirs"), foreign = true })
        env.rt:inject({ id = "junk", foreign = true })
        env:op("sweep")
        assert.is_nil(env.svc.records.theirs)
        assert.is_nil(env.svc.records.junk)
        assert.are.equal(0, #env:calls("remove"))
        assert.are.equal(2, env.rt:count())
        -- a record of ours whose object is foreign (made before identities) is kept and refreshed
        local id = env:running()
        local handle = env.svc.records[id].handle
        env.rt.objects[handle].foreign = true
        env.rt.objects[handle].status = { state = STATE.PAUSED, reason = REASON.CONTAINER_PAUSED,
            message = MESSAGE.PAUSED }
        env:op("sweep")
        assert.are.equal(STATE.PAUSED, env.svc.records[id].state)
    end)

    it("removes a runtime object of ours without an identity to adopt", function()
        local env = S.env()
        local handle = env.rt:inject({ id = "orphan" })
        env:op("sweep")
        assert.is_nil(env.svc.records.orphan)
        assert.are.same({ "remove " .. handle }, env:calls("remove"))
        assert.are.equal(0, env.rt:count())
        assert.are.same({}, env.svc.removing)
    end)

    it("drops a record whose runtime object vanished", function()
        local env = S.env()
        local id = env:running()
        local keep = env:running()
        env.rt.objects["fake-1"] = nil -- gone, and nobody said so
        env:op("sweep")
        assert.is_nil(env.svc.records[id])
        assert.is_nil(env.store.rows[id])
        assert.is_nil(env.svc.timers[id])
        assert.are.equal(STATE.RUNNING, env.svc.records[keep].state)
        assert.are.equal(0, #env:calls("remove"))
    end)

    it("takes a listed object's status and place", function()
        local env = S.env()
        local id = env:running()
        local obj = env.rt.objects["fake-1"]
        obj.status = { state = STATE.FAILED, reason = REASON.CONTAINER_EXITED_ERROR,
            message = model.exited_error_message(137, true) }
        obj.place = { ip = "10.0.0.77", agent_port = AGENT_PORT }
        env:advance(1)
        env:op("sweep")
        local rec = env.svc.records[id]
        assert.are.equal(STATE.FAILED, rec.state)
        assert.are.equal("Sandbox container exited with code 137 (out of memory).", rec.message)
        assert.are.equal(S.T0 + 1000000, rec.transition_us)
        assert.are.same({ ip = "10.0.0.77", agent_port = AGENT_PORT }, rec.place)
        assert.are.same({ ip = "10.0.0.77", agent_port = AGENT_PORT }, env.store.rows[id].place)
    end)

    it("restores at start-up: interrupted provisioning fails, vanished records go, due ones expire", function()
        local rt = require("runtimes.fake").new({})
        local store = S.store()
        -- p was Pending when the server stopped; its half-made object is still there
        local ph = rt:inject({ id = "p", sandbox = identity("p") })
        store.rows.p = S.record("p", STATE.PENDING, { expires_us = S.T0 + 600 * 1000000 })
        -- r runs; v vanished while the server was down; d is past its expiry
        local rh = rt:inject({ id = "r", sandbox = identity("r") })
        store.rows.r = S.record("r", STATE.RUNNING, { handle = rh, expires_us = S.T0 + 600 * 1000000 })
        store.rows.v = S.record("v", STATE.RUNNING, { handle = "fake-gone", expires_us = S.T0 + 600 * 1000000 })
        local dh = rt:inject({ id = "d", sandbox = identity("d", { expires_us = S.T0 - 1 }) })
        store.rows.d = S.record("d", STATE.RUNNING, { handle = dh, expires_us = S.T0 - 1 })

        local env = S.env({ runtime = rt, store = store, load = true })
        assert.is_true(env.svc.available)
        assert.is_true(env.svc.restored)
        local p = env.svc.records.p
        assert.are.equal(STATE.FAILED, p.state)
        assert.are.equal(REASON.PROVISIONING_ERROR, p.reason)
        assert.are.equal("Provisioning was interrupted by a server restart.", p.message)
        assert.is_nil(p.handle)
        assert.are.equal(S.T0, p.failed_us)
        assert.are.equal(STATE.FAILED, store.rows.p.state)
        assert.is_nil(rt.objects[ph], "its object is removed")
        assert.are.equal(STATE.RUNNING, env.svc.records.r.state)
        assert.is_table(env.svc.timers.r, "a restored sandbox's expiry is armed")
        assert.is_nil(env.svc.records.v)
        assert.is_nil(store.rows.v)
        assert.is_nil(env.svc.records.d)
        assert.is_nil(store.rows.d)
        assert.is_nil(rt.objects[dh])
        assert.is_table(rt.objects[rh])
        local want = { "connect", "list", "remove " .. dh, "remove " .. ph }
        table.sort(want)
        table.sort(env.rt.calls)
        assert.are.same(want, env.rt.calls)
    end)

    it("runs the start-up restoration at the first connection that works", function()
        local rt = require("runtimes.fake").new({})
        local store = S.store()
        store.rows.p = S.record("p", STATE.PENDING)
        rt.down = true
        local env = S.env({ runtime = rt, store = store, load = true, connect = false })
        local ok, err = env:op("connect", true)
        assert.is_nil(ok)
        assert.are.equal("unavailable", err.kind)
        assert.is_false(env.svc.available)
        assert.are.equal(STATE.PENDING, env.svc.records.p.state)
        rt.down = false
        assert.is_true(env:op("connect", false))
        assert.is_true(env.svc.available)
        assert.are.equal(MESSAGE.INTERRUPTED, env.svc.records.p.message)
    end)

    it("a busy runtime (the request never left) fails that request only: 503 RUNTIME_BUSY, still available",
        function()
            local env = S.env()
            local id = env:running()
            local busy = rterrors.new("unavailable", "Docker is busy: waited for a connection")
            busy.busy = true
            env.rt:fail_next("pause", busy)
            local ok, err = env:op("pause", id)
            assert.is_nil(ok)
            assert.are.equal(503, err.status)
            assert.are.equal("SANDBOX::RUNTIME_BUSY", err.code)
            assert.are.equal("Docker is busy: waited for a connection", err.message)
            assert.are.equal("5", err.headers["Retry-After"])
            assert.is_true(env.svc.available)
            assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
            -- a list that failed so (the sweep's reconcile) leaves the runtime available too
            env.rt:fail_next("list", busy)
            assert.is_nil(env:op("reconcile", false))
            assert.is_true(env.svc.available)
            -- and the next pause goes to the runtime
            assert(env:op("pause", id))
            assert.are.equal(STATE.PAUSED, env.svc.records[id].state)
        end)

    it("marks the runtime unavailable and drops nothing when the list fails", function()
        local env = S.env()
        local id = env:running()
        env.rt.objects["fake-1"] = nil -- would be dropped by a list that worked
        env.rt:fail_next("list", rterrors.new("unavailable", "connection reset"))
        local ok, err = env:op("reconcile", false)
        assert.is_nil(ok)
        assert.are.equal("unavailable", err.kind)
        assert.is_false(env.svc.available)
        assert.are.equal("connection reset", env.svc.unavailable_reason)
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        assert.is_table(env.store.rows[id])
        -- the sweep does not list while the runtime is unavailable
        local lists = #env:calls("list")
        env:op("sweep")
        assert.are.equal(lists, #env:calls("list"))
        assert.is_table(env.svc.records[id])
    end)
end)

describe("sandbox.service memory after a sweep", function()
    it("collects the whole heap only when it has doubled since the last collection, and trims every time", function()
        local env = S.env()
        local trims = 0
        env.core.trim_memory = function()
            trims = trims + 1
        end
        local svc = env.svc
        assert.is_true(svc:trim_memory(collectgarbage("count"))) -- (the first: nothing known yet)
        local live = svc.gc_live_kb
        assert.is_true(live > 0)
        assert.is_false(svc:trim_memory(live * 1.5)) -- a steady heap: no stop-the-world collection
        assert.is_false(svc:trim_memory(live * 2))
        assert.is_true(svc:trim_memory(live * 2 + 1)) -- after a burst
        assert.are.equal(4, trims)
        env.core.trim_memory = nil -- (a core without it: nothing to hand back, nothing collected)
        assert.is_false(svc:trim_memory(live * 10))
    end)
end)

describe("sandbox.service reconciliation at scale", function()
    it("yields now and then through a long list (core.breathe), and still adopts everything", function()
        local env = S.env()
        local breaths = 0
        env.core.breathe = function()
            breaths = breaths + 1
        end
        for i = 1, 250 do
            local id = string.format("adopt-%03d", i)
            env.rt:inject({ id = id, sandbox = { id = id, created_us = S.T0, expires_us = S.T0 + 3600 * 1000000,
                image_uri = "x", entrypoint = { "run" }, metadata = {}, access_token = "t" .. i },
                status = { state = STATE.RUNNING, reason = REASON.CONTAINER_RUNNING, message = MESSAGE.RUNNING } })
        end
        env:op("sweep")
        assert.are.equal(250, count(env.svc.records))
        assert.are.equal(250 // require("sandbox.reconcile").BREATHE_EVERY, breaths)
    end)
end)

describe("sandbox.service runtime changes", function()
    it("applies a status change", function()
        local hooks = S.hooks()
        local env = S.env({ hooks = hooks })
        local id = env:running()
        env:advance(2)
        env.rt:set_status("fake-1", STATE.TERMINATED, REASON.CONTAINER_EXITED, MESSAGE.EXITED)
        env:watch()
        local rec = env.svc.records[id]
        assert.are.equal(STATE.TERMINATED, rec.state)
        assert.are.equal(REASON.CONTAINER_EXITED, rec.reason)
        assert.are.equal(MESSAGE.EXITED, rec.message)
        assert.are.equal(S.T0 + 2000000, rec.transition_us)
        assert.are.equal(STATE.TERMINATED, env.store.rows[id].state)
        assert.are.equal(id .. " Running->Terminated", hooks.transitions[#hooks.transitions])
    end)

    it("drops the record of a sandbox removed behind its back", function()
        local env = S.env()
        local id = env:running()
        local t = env.svc.timers[id]
        env.rt:vanish("fake-1")
        env:watch()
        assert.is_nil(env.svc.records[id])
        assert.is_nil(env.store.rows[id])
        assert.is_true(t.cancelled)
    end)

    it("ignores the removal it is doing itself; a Stopping sandbox whose object goes is dropped", function()
        local env = S.env()
        local id = env:running()
        env.svc.removing["fake-1"] = true
        env.svc:on_change({ id = id, handle = "fake-1", gone = true })
        assert.is_table(env.svc.records[id])
        env.svc.removing["fake-1"] = nil
        -- Stopping: the service's own removal failed and waits for the sweep; status changes do not undo it
        env.rt:fail_next("remove", rterrors.new("api", "busy"))
        env:op("delete", id)
        assert.are.equal(STATE.STOPPING, env.svc.records[id].state)
        env.svc:on_change({ id = id, handle = "fake-1", status = { state = STATE.RUNNING,
            reason = REASON.CONTAINER_RUNNING, message = MESSAGE.RUNNING } })
        assert.are.equal(STATE.STOPPING, env.svc.records[id].state)
        -- then the object goes (someone removed it, or a deletion already under way ended): so does the record
        env.svc:on_change({ id = id, handle = "fake-1", gone = true })
        assert.is_nil(env.svc.records[id])
    end)

    it("ignores changes of another handle, of unknown sandboxes and of sandboxes still provisioning", function()
        local env = S.env()
        local id = env:running()
        local rec = env.svc.records[id]
        local exited = { state = STATE.TERMINATED, reason = REASON.CONTAINER_EXITED, message = MESSAGE.EXITED }
        env.svc:on_change({ id = id, handle = "fake-99", status = exited })
        env.svc:on_change({ id = id, handle = "fake-99", gone = true })
        env.svc:on_change({ id = "unknown", handle = "fake-1", gone = true })
        assert.are.equal(rec, env.svc.records[id])
        local pid = assert(env:create(S.spec())).id
        env.svc:on_change({ id = pid, handle = "fake-2", status = exited })
        env.svc:on_change({ id = pid, handle = "fake-2", gone = true })
        assert.are.equal(STATE.PENDING, env.svc.records[pid].state)
        env:run()
        assert.are.equal(STATE.RUNNING, env.svc.records[pid].state)
    end)
end)

describe("sandbox.service endpoints and proxy target", function()
    it("gives the runtime's public address; the agent's path carries its token", function()
        local env = S.env()
        local id = env:running()
        local ep = assert(env:op("endpoint", id, 8080, false, { host = "api.example.com:8080" }))
        assert.are.same({ endpoint = "10.0.0.1:8080" }, ep)
        ep = assert(env:op("endpoint", id, AGENT_PORT, false, {}))
        assert.are.equal("10.0.0.1:44772/proxy/44772", ep.endpoint)
        assert.are.same({ ["X-EXECD-ACCESS-TOKEN"] = env.svc.records[id].access_token }, ep.headers)
        assert.is_string(env.svc.records[id].access_token)
    end)

    it("puts server.eip before the runtime's host", function()
        local env = S.env({ config = { server = { eip = "https://sandboxes.example.com/" }, docker = {} } })
        local id = env:running()
        local ep = assert(env:op("endpoint", id, 8080, false, {}))
        assert.are.equal("sandboxes.example.com:8080", ep.endpoint)
        ep = assert(env:op("endpoint", id, AGENT_PORT, true, { host = "ignored:1" }))
        assert.are.equal("sandboxes.example.com/sandboxes/" .. id .. "/proxy/44772", ep.endpoint)
    end)

    it("keeps the sandbox's own address (own_host) even when server.eip is set", function()
        local env = S.env({ config = { server = { eip = "sandboxes.example.com" }, docker = {} } })
        local id = env:running()
        env.rt.address = function(_, _, port)
            return { host = "10.244.0.7", port = port, own_host = true }
        end
        assert.are.equal("10.244.0.7:8080", env:op("endpoint", id, 8080, false, { host = "api:1" }).endpoint)
        assert.is_nil(env:op("endpoint", id, 8080, false, {}).headers)
        -- the agent's own port gets the token even when the runtime's address does not go through it
        local ep = env:op("endpoint", id, AGENT_PORT, false, {})
        assert.are.equal("10.244.0.7:44772", ep.endpoint)
        assert.are.same({ ["X-EXECD-ACCESS-TOKEN"] = env.svc.records[id].access_token }, ep.headers)
    end)

    it("uses the request's host, then loopback, when the runtime leaves the host to the server", function()
        local env = S.env()
        local id = env:running()
        env.rt.address = function(_, _, port)
            return { port = port + 1000 }
        end
        assert.are.equal("api.example.com:9080", env:op("endpoint", id, 8080, false, { host = "api.example.com:8080" })
            .endpoint)
        assert.are.equal("[::1]:9080", env:op("endpoint", id, 8080, false, { host = "[::1]:8080" }).endpoint)
        assert.are.equal("127.0.0.1:9080", env:op("endpoint", id, 8080, false, {}).endpoint)
    end)

    it("gives the server proxy's path, with the token only for the agent's port", function()
        local env = S.env()
        local id = env:running()
        local ep = assert(env:op("endpoint", id, 8080, true, { host = "api.example.com:8080" }))
        assert.are.same({ endpoint = "api.example.com:8080/sandboxes/" .. id .. "/proxy/8080" }, ep)
        ep = assert(env:op("endpoint", id, AGENT_PORT, true, {}))
        assert.are.equal("127.0.0.1:8080/sandboxes/" .. id .. "/proxy/44772", ep.endpoint)
        assert.are.equal(env.svc.records[id].access_token, ep.headers["X-EXECD-ACCESS-TOKEN"])
    end)

    it("answers 409 for a failed provisioning and 404 for an unknown sandbox", function()
        local env = S.env()
        env.rt:fail_next("provision", rterrors.new("api", "no", { step = "image" }))
        local id = assert(env:create(S.spec())).id
        env:run()
        local _, err = env:op("endpoint", id, 8080, false, {})
        assert.are.equal(409, err.status)
        assert.are.equal("DOCKER::SANDBOX_NOT_RUNNING", err.code)
        _, err = env:op("endpoint", "nope", 8080, false, {})
        assert.are.equal(404, err.status)
    end)

    it("gives the proxy target of a running sandbox only", function()
        local env = S.env()
        local id = env:running()
        local target = assert(env.svc:proxy_target(id, 8080, {}))
        assert.are.equal("10.0.0.1", target.host)
        assert.are.equal(8080, target.port)
        assert.are.equal(env.svc.records[id], target.record)
        assert(env:op("pause", id))
        local _, err = env.svc:proxy_target(id, 8080, {})
        assert.are.equal(409, err.status)
        assert.are.equal("DOCKER::SANDBOX_NOT_RUNNING", err.code)
        _, err = env.svc:proxy_target("nope", 8080, {})
        assert.are.equal(404, err.status)
    end)

    it("lets the proxy remember a decision only when nothing in it changes per request", function()
        -- server.proxy_remember (schema default 2; unset here: off)
        local env = S.env({ config = { server = { proxy_remember = 2 }, docker = {} } })
        local id = env:running()
        assert.are.equal(2, assert(env.svc:proxy_target(id, 8080, {})).remember)
        -- off
        local off = S.env()
        assert.is_nil(assert(off.svc:proxy_target(off:running(), 8080, {})).remember)
        off = S.env({ config = { server = { proxy_remember = 0 }, docker = {} } })
        assert.is_nil(assert(off.svc:proxy_target(off:running(), 8080, {})).remember)
        -- an on_proxy_request hook sees every request: nothing remembered
        local hooks = S.hooks()
        local hooked = S.env({ hooks = hooks, config = { server = { proxy_remember = 2 }, docker = {} } })
        assert.is_nil(assert(hooked.svc:proxy_target(hooked:running(), 8080, {})).remember)
        -- a runtime that checks the port per request (Docker host mode): nothing remembered; one whose answer
        -- stays (bridge mode) lets it
        local env2 = S.env({ config = { server = { proxy_remember = 2 }, docker = {} } })
        local id2 = env2:running()
        env2.rt.proxy_check = function(_, _, _, addr)
            return addr
        end
        assert.is_nil(assert(env2.svc:proxy_target(id2, 8080, {})).remember)
        env2.rt.proxy_check = function(_, _, _, addr)
            return addr, nil, true
        end
        assert.are.equal(2, assert(env2.svc:proxy_target(id2, 8080, {})).remember)
    end)

    it("remembers no longer than until a renewal on access is due", function()
        local env = S.env({ config = { server = { proxy_remember = 5 }, docker = {} } })
        local id = env:running(S.spec({ extensions = { ["access.renew.extend.seconds"] = "300" } }))
        -- expires at T0 + 600, due from T0 + 300
        env:advance(299)
        assert.are.equal(1, assert(env.svc:proxy_target(id, 8080, {})).remember)
        env:advance(0.5)
        assert.are.equal(0.5, assert(env.svc:proxy_target(id, 8080, {})).remember)
        -- due now: the renewal starts, and the decision is remembered only until the next one may start
        env:advance(0.5)
        local t = assert(env.svc:proxy_target(id, 8080, {}))
        assert.is_true(t.remember > 0 and t.remember <= 5)
    end)

    it("forgets the proxy's remembered decisions for a sandbox on every change of its record", function()
        local env = S.env()
        local forgotten = {}
        env.core.proxy_forget = function(id)
            forgotten[#forgotten + 1] = id
        end
        local id = env:running()
        local n = #forgotten
        assert(env:op("pause", id))
        assert.is_true(#forgotten > n)
        assert.are.equal(id, forgotten[#forgotten])
        n = #forgotten
        assert(env:op("resume", id))
        assert.is_true(#forgotten > n)
        n = #forgotten
        assert(env:op("delete", id))
        assert.is_true(#forgotten > n)
        assert.are.equal(id, forgotten[#forgotten])
    end)

    it("renews on access when a hook asks and less than half of the time is left", function()
        local hooks = S.hooks()
        local env = S.env({ hooks = hooks })
        local id = env:running() -- expires at T0 + 600 s
        hooks.decision = { allow = true, renew_seconds = 1000 } -- 600 s left: more than half
        local puts = env.store.puts
        assert(env.svc:proxy_target(id, 8080, {}))
        env:run()
        assert.are.equal(S.T0 + 600 * 1000000, env.svc.records[id].expires_us)
        assert.are.equal(puts, env.store.puts)
        hooks.decision = { allow = true, renew_seconds = 1500 } -- 600 s left: less than half
        assert(env.svc:proxy_target(id, 8080, {}, { port = 8080, method = "GET", path = "/" }))
        env:run()
        assert.are.equal(S.T0 + 1500 * 1000000, env.svc.records[id].expires_us)
        assert.are.equal(S.T0 + 1500 * 1000000, env.store.rows[id].expires_us)
        assert.are.equal(1500, env.svc.timers[id].delay)
        -- more than half left now: no write
        puts = env.store.puts
        assert(env.svc:proxy_target(id, 8080, {}))
        env:run()
        assert.are.equal(puts, env.store.puts)
        assert.are.same({ id = id, port = 8080 }, hooks.proxied[#hooks.proxied])
        -- a hook's refusal is the answer
        hooks.on_proxy_request = function()
            return nil, { status = 403, code = "HOOK::REJECTED", message = "no" }
        end
        local _, err = env.svc:proxy_target(id, 8080, {})
        assert.are.equal("no", err.message)
    end)
end)

describe("sandbox.service hooks", function()
    it("tells after_transition of every state change, from and to", function()
        local hooks = S.hooks()
        local env = S.env({ hooks = hooks })
        local id = assert(env:create(S.spec())).id
        assert.are.same({ id .. " nil->Pending" }, hooks.transitions)
        env:run()
        assert(env:op("pause", id))
        assert(env:op("resume", id))
        assert(env:op("delete", id))
        assert.are.same({
            id .. " nil->Pending",
            id .. " Pending->Running",
            id .. " Running->Paused",
            id .. " Paused->Running",
            id .. " Running->Stopping",
            id .. " Stopping->Deleted",
        }, hooks.transitions)
        -- the name a hook chose went to the runtime
        assert.are.same({ "sb-" .. id }, hooks.names)
    end)

    it("tells of a failed provisioning", function()
        local hooks = S.hooks()
        local env = S.env({ hooks = hooks })
        env.rt:fail_next("provision", rterrors.new("api", "no", { step = "agent" }))
        local id = assert(env:create(S.spec())).id
        env:run()
        assert.are.same({ id .. " nil->Pending", id .. " Pending->Failed" }, hooks.transitions)
    end)

    it("tells of a pause once when the runtime's own report of it came first", function()
        local hooks = S.hooks()
        local env = S.env({ hooks = hooks })
        local id = env:running()
        env.rt.before.pause = function(rec)
            -- while the runtime answers, the watch reports the pause
            env.svc:on_change({ id = rec.id, handle = rec.handle, status = { state = STATE.PAUSED,
                reason = REASON.CONTAINER_PAUSED, message = MESSAGE.PAUSED } })
        end
        assert(env:op("pause", id))
        assert.are.equal(STATE.PAUSED, env.svc.records[id].state)
        local paused = 0
        for _, t in ipairs(hooks.transitions) do
            if t == id .. " Running->Paused" then
                paused = paused + 1
            end
        end
        assert.are.equal(1, paused)
    end)

    it("gives before_create's refusal and creates nothing", function()
        local hooks = S.hooks()
        hooks.reject = { status = 403, code = "HOOK::REJECTED", message = "quota" }
        local env = S.env({ hooks = hooks })
        local view, err = env:create(S.spec())
        assert.is_nil(view)
        assert.are.equal("quota", err.message)
        assert.are.same({}, env.svc.records)
        assert.are.same({}, hooks.transitions)
        env:run()
        assert.are.equal(0, #env:calls("provision"))
    end)

    it("reads without the runtime: get and list come from memory", function()
        local env = S.env()
        local a = env:running()
        local b = env:running(S.spec({ metadata = { team = "b" } }))
        local calls = #env.rt.calls
        assert.are.equal(a, env:op("get", a).id)
        local res = env:op("list", { metadata = { team = "b" } }, {})
        assert.are.equal(1, #res.items)
        assert.are.equal(b, res.items[1].id)
        assert.are.equal(2, count(env.svc.records))
        assert.are.equal(calls, #env.rt.calls)
    end)

    it("serves a cached list page only while no record changed, per caller", function()
        local cjson = require("cjson")
        local env = S.env()
        local a = env:running()
        local svc = env.svc
        local filter = { page = 1, page_size = 20 }
        local admin = { admin = true }
        local key = svc.list_key(admin, "pageSize=20")
        assert.is_nil(svc:cached_list(key))
        local body = svc:list_json(filter, admin, key)
        assert.are.equal(body, svc:cached_list(key))
        assert.are.equal(a, cjson.decode(body).items[1].id)
        -- a new sandbox, a state change, a removal: each makes the cached page stale
        local b = env:running()
        assert.is_nil(svc:cached_list(key))
        body = svc:list_json(filter, admin, key)
        assert.are.equal(2, #cjson.decode(body).items)
        env:op("pause", b)
        env:run()
        assert.is_nil(svc:cached_list(key))
        body = svc:list_json(filter, admin, key)
        local states = {}
        for _, item in ipairs(cjson.decode(body).items) do
            states[item.id] = item.status.state
        end
        assert.are.equal("Paused", states[b])
        env:op("delete", b)
        env:run()
        assert.is_nil(svc:cached_list(key))
        -- another principal has a key of its own, and sees only its sandboxes
        local other = { admin = false, principal = "someone-else" }
        local okey = svc.list_key(other, "pageSize=20")
        assert.are_not.equal(key, okey)
        assert.are.equal(0, #cjson.decode(svc:list_json(filter, other, okey)).items)
        assert.is_not_nil(svc:cached_list(okey))
        -- bounded: many distinct queries never keep more than the cache's entries
        for i = 1, 100 do
            svc:list_json(filter, admin, svc.list_key(admin, "page=" .. i))
        end
        local n = 0
        for _ in pairs(svc.list_pages) do
            n = n + 1
        end
        assert.is_true(n <= 32)
    end)
end)

describe("sandbox.service with replicas (a runtime that elects a leader)", function()
    local function replica_env()
        return S.env({ runtime = require("runtimes.fake").new({ fake = { replicas = true, keeps_expiry = true } }) })
    end

    it("removes expired sandboxes only while it leads, and as soon as it does", function()
        local env = replica_env()
        local id = env:running()
        assert.is_true(env.svc.leader)
        env.rt.leading = false
        env:op("check_lead")
        assert.is_false(env.svc.leader)
        env:advance(601) -- past the expiry: another replica would remove it
        assert.are.equal(STATE.RUNNING, env.svc.records[id].state)
        assert.are.equal(0, #env:calls("remove"))
        env:op("sweep")
        assert.are.equal(0, #env:calls("remove"), "the sweep leaves it to the leader too")
        -- the leader is gone: this replica takes over and the next look removes it
        env.rt.leading = true
        env:op("check_lead")
        env:advance(6)
        assert.is_nil(env.svc.records[id])
        assert.are.equal(1, #env:calls("remove"))
    end)

    it("counts a failed election as not leading", function()
        local env = replica_env()
        env.rt:fail_next("lead", rterrors.new("unavailable", "apiserver down"))
        env:op("check_lead")
        assert.is_false(env.svc.leader)
    end)

    it("adopts another replica's running sandbox from the watch at once, but not a Pending one", function()
        local env = replica_env()
        local identity = { id = "other", created_us = S.T0, expires_us = S.T0 + 600 * 1000000, metadata = { k = "v" },
            access_token = "tok", image_uri = "img", entrypoint = { "sleep" } }
        env.svc:on_change({ id = "other", handle = "h-other", sandbox = identity, place = { ip = "10.1.1.1" },
            status = { state = STATE.PENDING, reason = REASON.CONTAINER_STARTING, message = MESSAGE.STARTING } })
        assert.is_nil(env.svc.records.other, "Pending: another replica is provisioning it")
        env.svc:on_change({ id = "other", handle = "h-other", sandbox = identity, place = { ip = "10.1.1.1" },
            status = { state = STATE.RUNNING, reason = REASON.CONTAINER_RUNNING, message = MESSAGE.RUNNING } })
        local rec = assert(env.svc.records.other)
        assert.are.equal("h-other", rec.handle)
        assert.are.equal("tok", rec.access_token)
        assert.is_table(env.svc.timers.other, "its expiry is armed here too")
        -- a later expiry written by the other replica is taken
        local later = S.T0 + 3600 * 1000000
        local renewed = {}
        for k, v in pairs(identity) do
            renewed[k] = v
        end
        renewed.expires_us = later
        env.svc:on_change({ id = "other", handle = "h-other", sandbox = renewed, place = { ip = "10.1.1.1" },
            status = { state = STATE.RUNNING, reason = REASON.CONTAINER_RUNNING, message = MESSAGE.RUNNING } })
        assert.are.equal(later, env.svc.records.other.expires_us)
        assert.are.equal(later, env.store.rows.other.expires_us)
    end)

    it("does not adopt again a sandbox it removed a moment ago when a late change arrives", function()
        local env = replica_env()
        local id = env:running()
        local handle = env.svc.records[id].handle
        assert(env:op("delete", id))
        env.svc:on_change({ id = id, handle = handle, sandbox = { id = id, created_us = S.T0 },
            status = { state = STATE.RUNNING, reason = REASON.CONTAINER_RUNNING, message = MESSAGE.RUNNING } })
        assert.is_nil(env.svc.records[id])
    end)
end)
