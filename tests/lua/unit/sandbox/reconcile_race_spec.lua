-- Unit spec of the sweep's reconciliation (lua/sandbox/reconcile.lua, reconcile) against changes made while
-- its runtime call yields. Found by the soak (RELIABILITY.md): a sandbox that finished provisioning after
-- the sweep had listed the runtime's objects was dropped as "vanished" (GET 404 for a live sandbox) and
-- adopted again by the next sweep; a sandbox deleted meanwhile was "removed" once more as an unadoptable
-- object. Here the fake runtime's list() answers with what it held when asked, and the other tasks (the
-- provisioning, a delete request) run before the answer arrives, as they would while the real call waits.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local model = require("sandbox.model")

local STATE = model.STATE

-- makes env.rt:list() take its answer, then run `meanwhile` (once) before returning it
local function list_then(env, meanwhile)
    local list = env.rt.list
    env.rt.list = function(rt)
        local out, err = list(rt)
        if meanwhile then
            local f = meanwhile
            meanwhile = nil
            f()
        end
        return out, err
    end
end

describe("sandbox.service reconcile during concurrent changes", function()
    it("keeps a record provisioned after the list, and does not touch an object deleted meanwhile", function()
        local env = S.env()
        local old = env:running()
        local old_handle = env.svc.records[old].handle
        local new = assert(env:create(S.spec())).id -- its provisioning is queued, not run
        assert.are.equal(STATE.PENDING, env.svc.records[new].state)
        list_then(env, function()
            -- while the list call waits: "new" finishes provisioning, "old" is deleted by a request
            env:run()
            assert.is_true(env.svc:delete(old))
        end)
        assert(env:op("reconcile", false))

        local rec = env.svc.records[new]
        assert.is_table(rec, "the live record was dropped: " .. table.concat(env.log.lines, "; "))
        assert.are.equal(STATE.RUNNING, rec.state)
        assert.is_table(env.rt.objects[rec.handle])
        assert.is_table(env.store.rows[new])
        assert.are.same({ old }, env.store.deletes, "only the deleted sandbox left the store")
        assert.is_nil(env.svc.records[old], "the deleted sandbox was adopted again")
        assert.is_nil(env.store.rows[old])
        assert.are.same({ "remove " .. old_handle }, env:calls("remove"), "removed once, by the delete")
        -- and the next sweep, with a list taken after all that, agrees
        env:op("sweep")
        assert.are.equal(STATE.RUNNING, env.svc.records[new].state)
        assert.is_nil(env.svc.records[old])
        assert.are.equal(1, #env:calls("remove"))
    end)

    it("still drops a settled record whose object is gone, and adopts an unknown object", function()
        local env = S.env()
        local gone = env:running()
        env.rt.objects[env.svc.records[gone].handle] = nil
        local handle = env.rt:inject({ id = "x", sandbox = { id = "x", created_us = S.T0 - 1000000,
            image_uri = "example.com/x:1", entrypoint = { "x" }, metadata = {}, access_token = "tok-x" } })
        assert(env:op("reconcile", false))
        assert.are.same({ gone }, env.store.deletes)
        assert.is_nil(env.svc.records[gone])
        local x = env.svc.records.x
        assert.is_table(x)
        assert.are.equal(handle, x.handle)
        assert.are.equal(STATE.RUNNING, x.state)
        assert.is_nil(x.expires_us, "no expiry in its identity: manual cleanup")
        assert.is_table(env.store.rows.x)
        assert.are.equal(0, #env:calls("remove"))
    end)
end)
