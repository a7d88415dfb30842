-- The lifecycle service's part of volumes (sandbox/provisioning.lua, operations.lua) on the fake runtime:
-- every rule checked before anything is created, the hooks' volumes checked again, the runtime's check,
-- the record and the store keeping what was created, and removal deleting only what this server created.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local rterrors = require("runtimes.errors")
local volumes = require("sandbox.volumes")

local function vols(list)
    return assert(volumes.validate(list))
end

local function pvc(name, claim, over)
    local p = { claimName = claim }
    for k, v in pairs(over or {}) do
        p[k] = v
    end
    return { name = name, mountPath = "/" .. name, pvc = p }
end

local function count(t)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n
end

describe("sandbox.service volumes", function()
    local root
    before_each(function()
        local p = assert(io.popen("mktemp -d /tmp/osb-volsvc.XXXXXX"))
        root = p:read("l")
        p:close()
        assert(os.execute(string.format("mkdir -p %s/ok %s/no && ln -s %s/no %s/ok/link", root, root, root, root)))
    end)
    after_each(function()
        os.execute("rm -rf '" .. root .. "'")
    end)

    local function env(opts)
        opts = opts or {}
        opts.config = { server = {}, docker = {}, storage = { allowed_host_paths = { root .. "/ok" } } }
        return S.env(opts)
    end

    local function refused_create(e, spec, code)
        local before = #e.rt.calls
        local v, err = e:create(spec)
        assert.is_nil(v)
        assert.equal(400, err.status)
        assert.equal(code, err.code)
        e:run()
        assert.equal(0, count(e.store.rows), "no record")
        assert.equal(0, e.rt:count(), "no runtime object")
        assert.equal(0, count(e.rt.volumes), "no volume")
        for i = before + 1, #e.rt.calls do
            assert.is_nil(e.rt.calls[i]:find("^provision"), "nothing provisioned")
        end
        return err
    end

    it("hands the normalised volumes (host ones resolved) to the runtime and keeps them in the record", function()
        local e = env()
        local spec = S.spec({ volumes = vols({ { name = "h", mountPath = "/h", host = { path = root .. "/ok/" },
            readOnly = true }, pvc("p", "cache") }) })
        local id = e:running(spec)
        local obj = e.rt.objects["fake-1"]
        assert.equal(root .. "/ok", obj.spec.volumes[1].source)
        assert.is_true(obj.spec.volumes[1].readOnly)
        assert.equal("cache", obj.spec.volumes[2].pvc.claimName)
        assert.same(obj.spec.volumes, e.store.rows[id].volumes)
        assert.same({ cache = id }, e.store.created, "the created volume is recorded in the store")
    end)

    it("refuses a host path outside the allowed prefixes (also via a link), and one that is missing", function()
        local e = env()
        refused_create(e, S.spec({ volumes = vols({ { name = "h", mountPath = "/h",
            host = { path = root .. "/no" } } }) }), "VOLUME::HOST_PATH_NOT_ALLOWED")
        refused_create(e, S.spec({ volumes = vols({ { name = "h", mountPath = "/h",
            host = { path = root .. "/ok/link" } } }) }), "VOLUME::HOST_PATH_NOT_ALLOWED")
        refused_create(e, S.spec({ volumes = vols({ { name = "h", mountPath = "/h",
            host = { path = root .. "/ok/../no" } } }) }), "VOLUME::HOST_PATH_NOT_ALLOWED")
        refused_create(e, S.spec({ volumes = vols({ { name = "h", mountPath = "/h",
            host = { path = root .. "/ok/gone" } } }) }), "VOLUME::HOST_PATH_NOT_FOUND")
    end)

    it("refuses host volumes when storage.allowed_host_paths is not configured", function()
        local e = S.env()
        local _, err = e:create(S.spec({ volumes = vols({ { name = "h", mountPath = "/h",
            host = { path = "/tmp" } } }) }))
        assert.equal("VOLUME::HOST_PATH_NOT_ALLOWED", err.code)
        assert.equal(0, count(e.store.rows))
    end)

    it("answers the runtime's refusal (a missing pvc with createIfNotExists false) as its 400", function()
        local e = env()
        local err = refused_create(e, S.spec({ volumes = vols({ pvc("p", "absent", { createIfNotExists = false }) }) }),
            "VOLUME::PVC_NOT_FOUND")
        assert.matches("absent", err.message)
        e.rt.volumes.present = {}
        assert.is_not_nil(e:create(S.spec({ volumes = vols({ pvc("p", "present", { createIfNotExists = false }) }) })))
    end)

    it("validates again what a before_create hook hands back", function()
        local e = env({ hooks = true })
        e.hooks.before_create = function(_, _, spec)
            spec.volumes = { { name = "Bad Name", mountPath = "/x", pvc = { claimName = "c" } } }
            return spec
        end
        refused_create(e, S.spec(), "VOLUME::INVALID_NAME")
        e.hooks.before_create = function(_, _, spec)
            spec.volumes = { { name = "h", mountPath = "/h", host = { path = root .. "/no" } } }
            return spec
        end
        refused_create(e, S.spec(), "VOLUME::HOST_PATH_NOT_ALLOWED")
    end)

    it("answers 400 SANDBOX::API_NOT_SUPPORTED on a runtime without volumes, creating nothing", function()
        local e = env()
        e.rt.check_volumes = false
        refused_create(e, S.spec({ volumes = vols({ pvc("p", "cache") }) }), "SANDBOX::API_NOT_SUPPORTED")
    end)

    it("answers 503 when the runtime cannot be asked, creating nothing", function()
        local e = env()
        e.rt:fail_next("check_volumes", rterrors.new("unavailable", "down"))
        local v, err = e:create(S.spec({ volumes = vols({ pvc("p", "cache") }) }))
        assert.is_nil(v)
        assert.equal(503, err.status)
        assert.equal(0, count(e.store.rows))
    end)

    it("deleteOnSandboxTermination removes only volumes this server created, and only when asked", function()
        local e = env()
        e.rt.volumes.theirs = {} -- existed before: never removed
        local a = e:running(S.spec({ volumes = vols({ pvc("a", "mine", { deleteOnSandboxTermination = true }),
            pvc("b", "theirs", { deleteOnSandboxTermination = true }), pvc("c", "kept") }) }))
        assert.same({ mine = a, kept = a }, e.store.created)
        assert.is_true(e:op("delete", a))
        assert.is_nil(e.rt.volumes.mine, "created and marked: removed")
        assert.is_not_nil(e.rt.volumes.theirs, "not created by the server: kept")
        assert.is_not_nil(e.rt.volumes.kept, "created but not marked: kept")
        assert.same({ kept = a }, e.store.created)
        assert.same({ "remove_volume mine" }, e:calls("remove_volume"))
    end)

    it("keeps a volume the runtime cannot remove (in use by another sandbox), and its record", function()
        local e = env()
        local a = e:running(S.spec({ volumes = vols({ pvc("a", "shared", { deleteOnSandboxTermination = true }) }) }))
        e:running(S.spec({ volumes = vols({ pvc("a", "shared") }) }))
        e.rt.volumes.shared.in_use = true
        assert.is_true(e:op("delete", a))
        assert.is_not_nil(e.rt.volumes.shared)
        assert.same({ shared = a }, e.store.created)
    end)

    it("a restarted server (the record and the created volumes from the store) still removes them", function()
        local store = S.store()
        local e = env({ store = store })
        local a = e:running(S.spec({ volumes = vols({ pvc("a", "mine", { deleteOnSandboxTermination = true }) }) }))
        local rt = e.rt
        local e2 = env({ store = store, runtime = rt, load = true })
        assert.same(e.svc.records[a].volumes, e2.svc.records[a].volumes)
        assert.is_true(e2:op("delete", a))
        assert.is_nil(rt.volumes.mine)
    end)

    it("a provisioning resumed after a crash mounts the volumes of the record", function()
        local store = S.store()
        local e = env({ store = store })
        e.rt.crash_after = "image"
        local view = assert(e:create(S.spec({ volumes = vols({ pvc("a", "mine") }) })))
        e:run()
        local rt = e.rt
        rt.crash_after = nil
        local e2 = env({ store = store, runtime = rt, load = true })
        e2:run()
        assert.equal("Running", e2.svc.records[view.id].state)
        assert.equal("mine", rt.objects["fake-1"].spec.volumes[1].pvc.claimName)
        assert.same({ mine = view.id }, store.created)
    end)

    it("an adopted sandbox keeps its volumes, and the volumes a server created are removed with it", function()
        local e = env()
        local v = vols({ pvc("a", "theirs-made", { deleteOnSandboxTermination = true }),
            pvc("b", "pre", { deleteOnSandboxTermination = true }) })
        e.rt.volumes["theirs-made"] = { created_for = "adopted-1" } -- labelled by the server that made it
        e.rt.volumes.pre = {}
        e.rt:inject({ id = "adopted-1", sandbox = { id = "adopted-1", created_us = S.T0,
            expires_us = S.T0 + 3600 * 1000000, image_uri = "x", entrypoint = { "run" }, metadata = {}, volumes = v } })
        e:op("sweep")
        assert.same(v, e.svc.records["adopted-1"].volumes)
        assert.same({ ["theirs-made"] = "adopted-1" }, e.store.created)
        assert.is_true(e:op("delete", "adopted-1"))
        assert.is_nil(e.rt.volumes["theirs-made"])
        assert.is_not_nil(e.rt.volumes.pre)
    end)
end)
