-- Unit spec of the service's snapshots (lua/sandbox/snapshots.lua) on the fake runtime: the state machine
-- (Creating -> Ready | Failed, Deleting -> gone), the source's lock during a capture, visibility per
-- principal, list filters, create from a snapshot, deletion while sandboxes use the snapshot, restart
-- recovery, and a runtime without snapshots.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local rterrors = require("runtimes.errors")

local ALICE = { principal = "alice", admin = false }
local BOB = { principal = "bob", admin = false }
local ADMIN = { principal = "root", admin = true }

local function restore_spec(snapshot_id, over)
    local spec = S.spec({ image = false, snapshot_id = snapshot_id, entrypoint = { "tail", "-f", "/dev/null" } })
    for k, v in pairs(over or {}) do
        spec[k] = v
    end
    return spec
end

-- a Running sandbox of alice's and a Ready snapshot of it: env, sandbox id, snapshot id
local function ready_snapshot(env)
    local id = env:running(S.spec(), ALICE)
    local snap = assert(env:op("create_snapshot", id, { name = "first" }, ALICE))
    env:run()
    assert.are.equal("Ready", env.svc.snapshots[snap.id].state)
    return id, snap.id
end

describe("sandbox.snapshots create", function()
    it("answers Creating at once, captures in the background holding the source's lock, then is Ready", function()
        local env = S.env()
        local id = env:running(S.spec(), ALICE)
        local view = assert(env:op("create_snapshot", id, { name = "before import" }, ALICE))
        assert.are.equal("Creating", view.status.state)
        assert.are.equal("snapshot_accepted", view.status.reason)
        assert.are.equal("Snapshot creation accepted.", view.status.message)
        assert.are.equal(id, view.sandboxId)
        assert.are.equal("before import", view.name)
        assert.is_string(view.createdAt)
        -- durable before the 202; the capture has not run yet and holds the source's lock
        assert.are.equal("Creating", env.store.snaps[view.id].state)
        assert.are.equal("alice", env.store.snaps[view.id].principal)
        assert.are.same({}, env:calls("snapshot "))
        assert.is_true(env.svc.locks[id]:busy())
        -- a delete of the source waits for the capture
        local deleted
        env:spawn(function()
            deleted = table.pack(env.svc:delete(id, ALICE))
        end)
        env.rt.before.snapshot = function()
            assert.is_nil(deleted, "the delete waited for the capture")
            assert.is_table(env.svc.records[id])
        end
        env:run()
        assert.are.same({ "snapshot fake-1" }, env:calls("snapshot "))
        assert.is_true(deleted[1])
        local snap = env.svc.snapshots[view.id]
        assert.are.equal("Ready", snap.state)
        assert.are.equal("snapshot_ready", snap.reason)
        assert.are.equal("fake-snapshots:" .. view.id, snap.image)
        assert.are.equal("Ready", env.store.snaps[view.id].state)
        assert.are.equal("fake-snapshots:" .. view.id, env.store.snaps[view.id].image)
        -- deleting the sandbox did not delete its snapshot
        assert.is_nil(env.svc.records[id])
        assert.are.equal("Ready", env:op("get_snapshot", view.id, ALICE).status.state)
    end)

    it("refuses a sandbox that is not Running (409), an unknown one (404), and creates nothing", function()
        local env = S.env()
        local id = env:running(S.spec(), ALICE)
        assert.is_true(env:op("pause", id, ALICE))
        local snap, err = env:op("create_snapshot", id, {}, ALICE)
        assert.is_nil(snap)
        assert.are.equal(409, err.status)
        assert.are.equal("SNAPSHOT::INVALID_SOURCE_STATE", err.code)
        assert.are.equal("Snapshot can only be created from a Running sandbox.", err.message)
        assert.is_false(env.svc.locks[id]:busy(), "the lock was released")
        snap, err = env:op("create_snapshot", "nope", {}, ALICE)
        assert.is_nil(snap)
        assert.are.equal(404, err.status)
        assert.are.equal("DOCKER::SANDBOX_NOT_FOUND", err.code)
        -- another principal's sandbox is not found either
        assert.is_true(env:op("resume", id, ALICE))
        snap, err = env:op("create_snapshot", id, {}, BOB)
        assert.is_nil(snap)
        assert.are.equal(404, err.status)
        assert.are.same({}, env.store.snaps)
        assert.are.same({}, env.svc.snapshots)
        env:run()
        assert.are.same({}, env:calls("snapshot "))
    end)

    it("records a failed capture as Failed with the runtime's words", function()
        local env = S.env()
        local id = env:running(S.spec(), ALICE)
        env.rt:fail_next("snapshot", rterrors.new("api", "no space left on device"))
        local view = assert(env:op("create_snapshot", id, {}, ALICE))
        env:run()
        local snap = env.svc.snapshots[view.id]
        assert.are.equal("Failed", snap.state)
        assert.are.equal("snapshot_capture_failed", snap.reason)
        assert.are.equal("Snapshot creation failed: no space left on device", snap.message)
        assert.is_nil(snap.image)
        assert.are.equal("Failed", env.store.snaps[view.id].state)
        assert.is_false(env.svc.locks[id]:busy())
        -- the source is untouched
        assert.are.equal("Running", env.svc.records[id].state)
    end)

    it("refuses with 400 on a runtime without snapshots (like Kubernetes), before anything", function()
        local env = S.env({ runtime = require("runtimes.fake").new({ fake = { no_snapshots = true } }) })
        local id = env:running(S.spec(), ALICE)
        local snap, err = env:op("create_snapshot", id, {}, ALICE)
        assert.is_nil(snap)
        assert.are.equal(400, err.status)
        assert.are.equal("SANDBOX::API_NOT_SUPPORTED", err.code)
        assert.are.equal("Snapshots are not supported by the fake runtime.", err.message)
        local view
        view, err = env:create(restore_spec("s1"), ALICE)
        assert.is_nil(view)
        assert.are.equal(400, err.status)
        assert.are.equal("SANDBOX::API_NOT_SUPPORTED", err.code)
        assert.are.equal("snapshotId is not supported by the fake runtime.", err.message)
        assert.are.same({}, env.store.snaps)
        local n = 0
        for _ in pairs(env.svc.records) do
            n = n + 1
        end
        assert.are.equal(1, n, "only the first sandbox exists")
    end)
end)

describe("sandbox.snapshots reads", function()
    it("shows a principal only its own snapshots; an admin sees all", function()
        local env = S.env()
        local _, sid = ready_snapshot(env)
        local bob_sb = env:running(S.spec(), BOB)
        local bob_snap = assert(env:op("create_snapshot", bob_sb, {}, BOB)).id
        env:run()
        local snap, err = env:op("get_snapshot", sid, BOB)
        assert.is_nil(snap)
        assert.are.equal(404, err.status)
        assert.are.equal("SNAPSHOT::NOT_FOUND", err.code)
        assert.are.equal("Snapshot " .. sid .. " not found.", err.message)
        local ok
        ok, err = env:op("delete_snapshot", sid, BOB)
        assert.is_nil(ok)
        assert.are.equal(404, err.status)
        local view
        view, err = env:create(restore_spec(sid), BOB)
        assert.is_nil(view)
        assert.are.equal("SNAPSHOT::NOT_FOUND", err.code)
        local page = env:op("list_snapshots", { page = 1, page_size = 20 }, BOB)
        assert.are.equal(1, #page.items)
        assert.are.equal(bob_snap, page.items[1].id)
        page = env:op("list_snapshots", { page = 1, page_size = 20 }, ADMIN)
        assert.are.equal(2, page.pagination.totalItems)
        assert.are.equal("Ready", env:op("get_snapshot", sid, ADMIN).status.state)
        assert.are.equal("Ready", env:op("get_snapshot", sid, ALICE).status.state)
    end)

    it("filters the list by source sandbox and state, newest first, in pages", function()
        local env = S.env()
        local a = env:running(S.spec(), ALICE)
        local b = env:running(S.spec(), ALICE)
        local ids = {}
        for i = 1, 3 do
            env:advance(1)
            ids[i] = assert(env:op("create_snapshot", a, {}, ALICE)).id
            env:run()
        end
        env.rt:fail_next("snapshot", rterrors.new("api", "nope"))
        local failed = assert(env:op("create_snapshot", b, {}, ALICE)).id
        env:run()
        local page = env:op("list_snapshots", { page = 1, page_size = 2, sandbox_id = a }, ALICE)
        assert.are.same({ page = 1, pageSize = 2, totalItems = 3, totalPages = 2, hasNextPage = true }, page.pagination)
        assert.are.equal(ids[3], page.items[1].id)
        assert.are.equal(ids[2], page.items[2].id)
        page = env:op("list_snapshots", { page = 2, page_size = 2, sandbox_id = a }, ALICE)
        assert.are.equal(ids[1], page.items[1].id)
        page = env:op("list_snapshots", { page = 1, page_size = 20, states = { failed = true } }, ALICE)
        assert.are.equal(1, #page.items)
        assert.are.equal(failed, page.items[1].id)
        page = env:op("list_snapshots", { page = 1, page_size = 20, states = { [""] = true } }, ALICE)
        assert.are.equal(0, page.pagination.totalItems)
    end)
end)

describe("sandbox.snapshots create from a snapshot", function()
    it("runs the snapshot's image, records the snapshot id, and shows snapshotId instead of image", function()
        local env = S.env({ hooks = true })
        local seen
        env.hooks.before_create = function(_, _, spec)
            seen = S.deep_copy(spec)
            return spec
        end
        local _, sid = ready_snapshot(env)
        local view = assert(env:create(restore_spec(sid), ALICE))
        assert.is_nil(view.image)
        assert.is_nil(view.snapshotId, "the 202 body has no startup source")
        -- the hooks saw both the snapshot id and the image it resolved to
        assert.are.equal(sid, seen.snapshot_id)
        assert.are.equal("fake-snapshots:" .. sid, seen.image.uri)
        env:run()
        local rec = env.svc.records[view.id]
        assert.are.equal("Running", rec.state)
        assert.are.equal(sid, rec.snapshot_id)
        assert.are.equal("fake-snapshots:" .. sid, rec.image_uri)
        assert.are.equal(sid, env.store.rows[view.id].snapshot_id)
        local obj = env.rt.objects[rec.handle]
        assert.are.equal(sid, obj.spec.snapshot_id)
        assert.are.equal(sid, obj.sandbox.snapshot_id)
        assert.are.same({ "tail", "-f", "/dev/null" }, obj.spec.entrypoint)
        local got = env:op("get", view.id, ALICE)
        assert.are.equal(sid, got.snapshotId)
        assert.is_nil(got.image)
    end)

    it("refuses an unknown snapshot (404), one not Ready (409), and an image naming a snapshot (400)", function()
        local env = S.env()
        local id = env:running(S.spec(), ALICE)
        local view, err = env:create(restore_spec("nope"), ALICE)
        assert.is_nil(view)
        assert.are.equal(404, err.status)
        assert.are.equal("SNAPSHOT::NOT_FOUND", err.code)
        local creating = assert(env:op("create_snapshot", id, {}, ALICE)).id
        view, err = env:create(restore_spec(creating), ALICE)
        assert.is_nil(view)
        assert.are.equal(409, err.status)
        assert.are.equal("SNAPSHOT::NOT_READY", err.code)
        assert.are.equal("Snapshot " .. creating .. " is not ready for restore.", err.message)
        env:run()
        view, err = env:create(S.spec({ image = { uri = "fake-snapshots:" .. creating } }), ALICE)
        assert.is_nil(view)
        assert.are.equal(400, err.status)
        assert.are.equal("SANDBOX::INVALID_PARAMETER", err.code)
        assert.matches("names a snapshot image", err.message)
        local n = 0
        for _ in pairs(env.svc.records) do
            n = n + 1
        end
        assert.are.equal(1, n, "no sandbox was created")
    end)

    it("resumes an interrupted provisioning from a snapshot with the snapshot id", function()
        local env = S.env()
        local _, sid = ready_snapshot(env)
        env.rt.crash_after = "image"
        local id = assert(env:create(restore_spec(sid), ALICE)).id
        env:run()
        -- a new server on the same store and runtime
        env.rt.crash_after = nil
        local env2 = S.env({ store = env.store, runtime = env.rt, load = true })
        env2:run()
        local rec = env2.svc.records[id]
        assert.are.equal("Running", rec.state)
        assert.are.equal(sid, rec.snapshot_id)
        assert.are.equal(sid, env.rt.objects[rec.handle].spec.snapshot_id)
    end)
end)

describe("sandbox.snapshots delete", function()
    it("refuses a snapshot still Creating (409)", function()
        local env = S.env()
        local id = env:running(S.spec(), ALICE)
        local sid = assert(env:op("create_snapshot", id, {}, ALICE)).id
        local ok, err = env:op("delete_snapshot", sid, ALICE)
        assert.is_nil(ok)
        assert.are.equal(409, err.status)
        assert.are.equal("SNAPSHOT::INVALID_STATE", err.code)
        env:run()
        assert.are.equal("Ready", env.svc.snapshots[sid].state)
    end)

    it("removes an unused snapshot at once: image and record", function()
        local env = S.env()
        local _, sid = ready_snapshot(env)
        assert.is_true(env:op("delete_snapshot", sid, ALICE))
        assert.is_nil(env.svc.snapshots[sid])
        assert.is_nil(env.store.snaps[sid])
        assert.is_nil(env.rt.snapshot_images["fake-snapshots:" .. sid])
        local _, err = env:op("get_snapshot", sid, ALICE)
        assert.are.equal(404, err.status)
    end)

    it("keeps the image while sandboxes made from it live: Deleting, then gone after the last one", function()
        local env = S.env()
        local _, sid = ready_snapshot(env)
        local user = env:running(restore_spec(sid), ALICE)
        assert.is_true(env:op("delete_snapshot", sid, ALICE))
        local snap = env:op("get_snapshot", sid, ALICE)
        assert.are.equal("Deleting", snap.status.state)
        assert.are.equal("snapshot_delete_requested", snap.status.reason)
        assert.matches("still used by 1 sandbox created from it", snap.status.message)
        assert.are.equal("Deleting", env.store.snaps[sid].state)
        assert.is_table(env.rt.snapshot_images["fake-snapshots:" .. sid], "the image stays")
        assert.are.same({}, env:calls("delete_snapshot"))
        -- no new sandbox from it; a second DELETE is fine
        local view, err = env:create(restore_spec(sid), ALICE)
        assert.is_nil(view)
        assert.are.equal("SNAPSHOT::NOT_READY", err.code)
        assert.is_true(env:op("delete_snapshot", sid, ALICE))
        -- the sandbox made from it keeps running; once it is deleted, the retry removes the snapshot
        assert.are.equal("Running", env.svc.records[user].state)
        assert.is_true(env:op("delete", user, ALICE))
        env:advance(5)
        assert.is_nil(env.svc.snapshots[sid])
        assert.is_nil(env.store.snaps[sid])
        assert.is_nil(env.rt.snapshot_images["fake-snapshots:" .. sid])
    end)

    it("retries a removal the runtime refused (in use by something the records do not show)", function()
        local env = S.env()
        local _, sid = ready_snapshot(env)
        env.rt:fail_next("delete_snapshot", rterrors.new("conflict", "image is being used by container x"))
        assert.is_true(env:op("delete_snapshot", sid, ALICE))
        local snap = env.svc.snapshots[sid]
        assert.are.equal("Deleting", snap.state)
        assert.matches("still in use: image is being used by container x", snap.message)
        env:advance(5)
        assert.is_nil(env.svc.snapshots[sid])
    end)
end)

describe("sandbox.snapshots after a restart", function()
    it("settles snapshots left Creating: Ready when the runtime has the image, else Failed", function()
        local env = S.env()
        local id = env:running(S.spec(), ALICE)
        local id2 = env:running(S.spec(), ALICE)
        local done = assert(env:op("create_snapshot", id, {}, ALICE)).id
        local lost = assert(env:op("create_snapshot", id2, {}, ALICE)).id
        -- the server dies before the captures run (their tasks never do): one had finished in the runtime
        env.rt.snapshot_images["fake-snapshots:" .. done] = { from = "fake-1" }
        local env2 = S.env({ store = env.store, runtime = env.rt, load = true })
        local a, b = env2.svc.snapshots[done], env2.svc.snapshots[lost]
        assert.are.equal("Ready", a.state)
        assert.are.equal("fake-snapshots:" .. done, a.image)
        assert.matches("had finished when the server restarted", a.message)
        assert.are.equal("Failed", b.state)
        assert.are.equal("snapshot_interrupted", b.reason)
        assert.are.equal("Snapshot creation was interrupted by a server restart.", b.message)
        assert.are.equal("Ready", env.store.snaps[done].state)
        assert.are.equal("Failed", env.store.snaps[lost].state)
        -- a Failed snapshot can be deleted
        assert.is_true(env2:op("delete_snapshot", lost, ALICE))
        assert.is_nil(env2.svc.snapshots[lost])
    end)

    it("finishes a deletion a restart interrupted", function()
        local env = S.env()
        local _, sid = ready_snapshot(env)
        local user = env:running(restore_spec(sid), ALICE)
        assert.is_true(env:op("delete_snapshot", sid, ALICE))
        assert.is_true(env:op("delete", user, ALICE))
        local env2 = S.env({ store = env.store, runtime = env.rt, load = true })
        assert.is_nil(env2.svc.snapshots[sid])
        assert.is_nil(env.store.snaps[sid])
        assert.is_nil(env.rt.snapshot_images["fake-snapshots:" .. sid])
    end)
end)

describe("sandbox.snapshots and the store", function()
    it("refuses a snapshot with 503 when the store cannot take it; writes a capture's outcome later", function()
        local env = S.env()
        local id = env:running(S.spec(), ALICE)
        env.store.full = true
        local snap, err = env:op("create_snapshot", id, {}, ALICE)
        assert.is_nil(snap)
        assert.are.equal(503, err.status)
        assert.are.equal("STORE::UNAVAILABLE", err.code)
        assert.are.same({}, env.svc.snapshots)
        assert.is_false(env.svc.locks[id]:busy())
        env.store.full = false
        local sid = assert(env:op("create_snapshot", id, {}, ALICE)).id
        env.store.full = true
        env:run()
        -- the capture happened: memory says Ready, the store catches up when it has room
        assert.are.equal("Ready", env.svc.snapshots[sid].state)
        assert.are.equal("Creating", env.store.snaps[sid].state)
        env.store.full = false
        env:advance(5)
        assert.are.equal("Ready", env.store.snaps[sid].state)
    end)
end)
