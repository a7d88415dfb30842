-- Unit spec of the service when the store cannot take writes (a full disk) for changes that Docker has already
-- made (lua/sandbox/service.lua, commit_fact/forget_fact): memory follows Docker at once, the store catches
-- up when it can; requests that only change our own state still fail with 503 STORE::UNAVAILABLE. The
-- integration counterpart (a real full tmpfs under the store) is in tests/lua/integration/reliability.
package.loaded["core.sync"] = package.loaded["core.sync"] or {}
local service = require("sandbox.service")
local model = require("sandbox.model")

local STATE = model.STATE

local function new_service()
    local store = { full = false, rows = {}, puts = 0 }
    function store.put(_, rec)
        store.puts = store.puts + 1
        if store.full then
            return nil, "database or disk is full"
        end
        store.rows[rec.id] = rec
        return true
    end
    function store.delete(_, id)
        if store.full then
            return nil, "database or disk is full"
        end
        store.rows[id] = nil
        return true
    end
    local docker = { calls = {} }
    local runtime = {
        status_of = function()
            return STATE.RUNNING, model.REASON.CONTAINER_RUNNING, model.MESSAGE.RUNNING, nil
        end,
        pause = function(_, cid)
            docker.calls[#docker.calls + 1] = "pause " .. cid
            return true
        end,
        remove = function(_, cid)
            docker.calls[#docker.calls + 1] = "remove " .. cid
            return true
        end,
    }
    local log = {}
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        log[level] = function() end
    end
    -- timers are recorded, not run: the spec fires the store retry by hand
    local timers = {}
    local timer = {
        after = function(delay, fn)
            local t = { delay = delay, fn = fn, cancelled = false }
            function t.cancel()
                t.cancelled = true
            end
            timers[#timers + 1] = t
            return t
        end,
    }
    docker.timers = timers
    local svc = service.new({
        runtime = runtime,
        store = store,
        core = { now_us = function()
            return 5000000
        end, timer = timer },
        log = log,
        config = { docker = { network_mode = "bridge" } },
    })
    svc.available = true
    return svc, store, docker
end

local function pending(id)
    local rec = { id = id, created_us = 1, expires_us = 3600000000, image_uri = "x", entrypoint = { "sleep" },
        metadata = {}, extensions = {} }
    model.apply_status(rec, model.status(STATE.PENDING, "PROVISIONING", "", 1))
    return rec
end

describe("sandbox.service with a store that rejects writes", function()
    it("records the end of provisioning in memory and writes it once the store has room", function()
        local svc, store = new_service()
        svc.records.a = pending("a")
        store.rows.a = svc.records.a
        local told = 0
        svc.provisioning.a = { set = function()
            told = told + 1
        end }
        store.full = true
        svc:finish_provisioning("a", "cid-a", nil, nil, { ip = "172.17.0.9", host_ports = {} })
        assert.are.equal(STATE.RUNNING, svc.records.a.state)
        assert.are.equal("cid-a", svc.records.a.container_id)
        assert.are.equal(STATE.PENDING, store.rows.a.state, "the store cannot have it yet")
        assert.is_true(svc.unsaved.a)
        assert.is_nil(svc.provisioning.a)
        assert.are.equal(1, told, "waiters on provisioning are released")
        -- a retry is armed; while still full it keeps the record unsaved and arms another
        assert.is_table(svc.store_retry, "a store retry is armed")
        assert.are.equal(service.STORE_RETRY, svc.store_retry.delay)
        local first = svc.store_retry
        first.fn()
        assert.is_true(svc.unsaved.a)
        assert.is_table(svc.store_retry, "armed again while the store is still full")
        assert.are_not.equal(first, svc.store_retry)
        store.full = false
        svc.store_retry.fn()
        assert.is_nil(svc.store_retry, "nothing left to retry")
        assert.are.equal(STATE.RUNNING, store.rows.a.state)
        assert.are.equal("cid-a", store.rows.a.container_id)
        assert.is_nil(next(svc.unsaved))
    end)

    it("pauses and deletes (Docker did it) but refuses a renewal (only our state) while full", function()
        local svc, store, docker = new_service()
        local rec = pending("b")
        rec.container_id = "cid-b"
        model.apply_status(rec, model.status(STATE.RUNNING, model.REASON.CONTAINER_RUNNING, "", 2))
        svc.records.b, store.rows.b = rec, rec
        store.full = true

        local ok, err = svc:renew("b", 7200000000)
        assert.is_nil(ok)
        assert.are.equal(503, err.status)
        assert.are.equal("STORE::UNAVAILABLE", err.code)
        assert.are.equal(3600000000, svc.records.b.expires_us, "a refused renewal changes nothing")

        assert.is_true(svc:pause("b"))
        assert.are.same({ "pause cid-b" }, docker.calls)
        assert.are.equal(STATE.PAUSED, svc.records.b.state)

        assert.is_true(svc:delete("b"))
        assert.are.same({ "pause cid-b", "remove cid-b" }, docker.calls)
        assert.is_nil(svc.records.b, "the container is gone, so is the sandbox")
        assert.is_table(store.rows.b, "the store still has it")
        store.full = false
        -- the sweep catches the store up first (nothing else of the sweep can run here: Docker is a fake)
        assert.are.equal(0, svc:flush_unsaved())
        assert.is_nil(store.rows.b)
    end)
end)
