-- Unit spec of the sweep's reconciliation (lua/sandbox/service.lua, Service:reconcile) against changes made
-- while its Docker calls yield. Found by the soak (RELIABILITY.md): a sandbox that finished provisioning
-- after the sweep had listed the containers was dropped as "container vanished" (GET 404 for a live
-- sandbox) and adopted again from its labels by the next sweep; a sandbox deleted meanwhile was "removed"
-- once more as an unadoptable container. Here the fake runtime's list() makes those changes the way the
-- other coroutines would while the real call waits.
package.loaded["core.sync"] = package.loaded["core.sync"] or {}
local service = require("sandbox.service")
local model = require("sandbox.model")

local function running(id, cid)
    local rec = { id = id, container_id = cid, created_us = 1, expires_us = nil, image_uri = "x", entrypoint = {},
        metadata = {}, extensions = {} }
    model.apply_status(rec, model.status(model.STATE.RUNNING, model.REASON.CONTAINER_RUNNING, "", 1))
    return rec
end

local function new_service(runtime)
    local deleted, logged = {}, {}
    local log = {}
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        log[level] = function(msg)
            logged[#logged + 1] = msg
        end
    end
    local svc = service.new({
        runtime = runtime,
        store = {
            put = function()
                return true
            end,
            delete = function(_, id)
                deleted[#deleted + 1] = id
                return true
            end,
        },
        core = { now_us = function()
            return 2
        end },
        log = log,
        config = { docker = { network_mode = "bridge" } },
    })
    return svc, deleted, logged
end

describe("sandbox.service reconcile during concurrent changes", function()
    it("keeps a record provisioned after the list, and does not touch a container deleted meanwhile", function()
        local svc
        local removed, adopted = {}, {}
        local runtime = {
            list = function()
                -- while the list call waits: "new" finishes provisioning, "old" is deleted by a request
                svc.records.new = running("new", "c-new")
                svc.provisioning.new = nil
                svc.records.old = nil
                return { { id = "c-old", labels = { ["opensandbox.io/id"] = "old",
                    ["opensandbox.io/created-at"] = "2026-01-01T00:00:00Z",
                    ["opensandbox.io/manual-cleanup"] = "true" } } }
            end,
            inspect = function(_, cid)
                adopted[#adopted + 1] = cid
                return nil
            end,
            remove = function(_, cid)
                removed[#removed + 1] = cid
                return true
            end,
        }
        local deleted, logged
        svc, deleted, logged = new_service(runtime)
        svc.records.old = running("old", "c-old")
        svc.records.new = { id = "new", state = model.STATE.PENDING }
        svc.provisioning.new = true
        assert(svc:reconcile(false))
        assert.is_table(svc.records.new, "the live record was dropped: " .. table.concat(logged, "; "))
        assert.are.same({}, deleted)
        assert.are.same({}, removed)
        assert.are.same({}, adopted)
    end)

    it("still drops a settled record whose container is gone, and adopts an unknown container", function()
        local svc
        local runtime = {
            list = function()
                return { { id = "c-x", labels = { ["opensandbox.io/id"] = "x",
                    ["opensandbox.io/created-at"] = "2026-01-01T00:00:00Z",
                    ["opensandbox.io/manual-cleanup"] = "true" } } }
            end,
            inspect = function()
                return { image = "x", cmd = {}, host_ports = {} }
            end,
            status_of = function()
                return model.STATE.RUNNING, model.REASON.CONTAINER_RUNNING, "", 1
            end,
            remove = function()
                return true
            end,
        }
        local deleted
        svc, deleted = new_service(runtime)
        svc.records.gone = running("gone", "c-gone")
        assert(svc:reconcile(false))
        assert.are.same({ "gone" }, deleted)
        assert.is_nil(svc.records.gone)
        assert.is_table(svc.records.x)
    end)
end)
