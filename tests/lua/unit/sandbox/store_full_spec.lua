-- Unit spec of the service when the store cannot take writes (a full disk) for changes that the runtime has
-- already made (lua/sandbox/state.lua, commit_fact/forget_fact): memory follows the runtime at once, the
-- store catches up when it can; requests that only change our own state still fail with 503
-- STORE::UNAVAILABLE. The integration counterpart (a real full tmpfs under the store) is in
-- tests/lua/integration/reliability.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local service = require("sandbox.service")
local model = require("sandbox.model")

local STATE = model.STATE

describe("sandbox.service with a store that rejects writes", function()
    it("records the end of provisioning in memory and writes it once the store has room", function()
        local env = S.env()
        local svc, store = env.svc, env.store
        local a = assert(env:create(S.spec())).id
        assert.are.equal(STATE.PENDING, store.rows[a].state)
        -- an operation waits for the provisioning
        local waited
        env:spawn(function()
            waited = assert(svc:wait_provisioned(a))
        end)
        store.full = true
        env:run()
        assert.are.equal(STATE.RUNNING, svc.records[a].state)
        assert.are.equal("fake-1", svc.records[a].handle)
        assert.are.equal(STATE.PENDING, store.rows[a].state, "the store cannot have it yet")
        assert.is_nil(store.rows[a].handle)
        assert.is_true(svc.unsaved[a])
        assert.is_nil(svc.provisioning[a])
        assert.are.equal(svc.records[a], waited, "waiters on provisioning are released")
        -- a retry is armed; while still full it keeps the record unsaved and arms another
        local first = svc.store_retry
        assert.is_table(first, "a store retry is armed")
        assert.are.equal(service.STORE_RETRY, first.delay)
        env:fire(first)
        assert.is_true(svc.unsaved[a])
        assert.is_table(svc.store_retry, "armed again while the store is still full")
        assert.are_not.equal(first, svc.store_retry)
        store.full = false
        env:advance(service.STORE_RETRY) -- the retry fires on its own
        assert.is_nil(svc.store_retry, "nothing left to retry")
        assert.are.equal(STATE.RUNNING, store.rows[a].state)
        assert.are.equal("fake-1", store.rows[a].handle)
        assert.are.same(svc.records[a].place, store.rows[a].place)
        assert.is_nil(next(svc.unsaved))
    end)

    it("pauses and deletes (the runtime did it) but refuses a renewal (only our state) while full", function()
        local env = S.env()
        local svc, store = env.svc, env.store
        local b = env:running()
        local expires = svc.records[b].expires_us
        store.full = true

        local ok, err = env:op("renew", b, expires + 3600 * 1000000)
        assert.is_nil(ok)
        assert.are.equal(503, err.status)
        assert.are.equal("STORE::UNAVAILABLE", err.code)
        assert.are.equal("5", err.headers["Retry-After"])
        assert.are.equal(expires, svc.records[b].expires_us, "a refused renewal changes nothing")

        assert.is_true(env:op("pause", b))
        assert.are.same({ "pause fake-1" }, env:calls("pause"))
        assert.are.equal(STATE.PAUSED, svc.records[b].state)
        assert.are.equal(STATE.RUNNING, store.rows[b].state)

        assert.is_true(env:op("delete", b))
        assert.are.same({ "remove fake-1" }, env:calls("remove"))
        assert.is_nil(svc.records[b], "the runtime's sandbox is gone, so is ours")
        assert.is_table(store.rows[b], "the store still has it")
        store.full = false
        assert.are.equal(0, svc:flush_unsaved())
        assert.is_nil(store.rows[b])
    end)

    it("follows the runtime's own changes while full, and the sweep catches the store up", function()
        local env = S.env()
        local svc, store = env.svc, env.store
        local c = env:running()
        local d = env:running()
        store.full = true
        env.rt:set_status(svc.records[c].handle, STATE.TERMINATED, model.REASON.CONTAINER_EXITED, model.MESSAGE.EXITED)
        env.rt:vanish(svc.records[d].handle)
        env:watch()
        assert.are.equal(STATE.TERMINATED, svc.records[c].state)
        assert.is_nil(svc.records[d])
        assert.are.equal(STATE.RUNNING, store.rows[c].state)
        assert.is_table(store.rows[d])
        -- a new sandbox is only our state: refused, nothing made
        local view, err = env:create(S.spec())
        assert.is_nil(view)
        assert.are.equal("STORE::UNAVAILABLE", err.code)
        env:run()
        assert.are.equal(2, #env:calls("provision"), "only c and d were provisioned")
        assert.are.equal(2, #store.all(), "and the store got no new row")
        store.full = false
        env:op("sweep")
        assert.are.equal(STATE.TERMINATED, store.rows[c].state)
        assert.is_nil(store.rows[d])
        assert.is_nil(next(svc.unsaved))
    end)
end)
