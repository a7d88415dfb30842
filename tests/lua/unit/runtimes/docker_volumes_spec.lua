-- Unit specs of the Docker runtime's volume methods (runtimes.docker: check_volumes, _ensure_volumes,
-- remove_volume, created_volume) on a fake engine holding named volumes, and the engine's choice of API
-- version for a create that mounts a named volume's sub-directory.
package.loaded["core.sync"] = package.loaded["core.sync"] or {}
local docker_runtime = require("runtimes.docker")
local engine_mod = require("runtimes.docker.engine")
local rterrors = require("runtimes.errors")
local volumes = require("sandbox.volumes")

local function fake_engine()
    local e = { host = "unix:///x", vols = {}, calls = {}, subpath_supported = false, daemon_api_version = "1.41" }
    function e.inspect_volume(_, name)
        e.calls[#e.calls + 1] = "inspect " .. name
        if e.down then
            return nil, rterrors.new("unavailable", "down")
        end
        local v = e.vols[name]
        if not v then
            return nil, rterrors.new("not_found", "no such volume", { status = 404 })
        end
        return { Name = name, Labels = v.labels }
    end
    function e.create_volume(_, name, labels)
        e.calls[#e.calls + 1] = "create " .. name
        e.vols[name] = e.vols[name] or { labels = labels }
        return { Name = name, Labels = e.vols[name].labels }
    end
    function e.delete_volume(_, name)
        e.calls[#e.calls + 1] = "delete " .. name
        if e.vols[name] and e.vols[name].in_use then
            return nil, rterrors.new("conflict", "volume is in use", { status = 409 })
        end
        e.vols[name] = nil
        return true
    end
    return e
end

local function runtime(e, instance)
    return docker_runtime.new({ docker = { instance = instance or "srv-a" } }, { engine = e })
end

local function pvc(name, claim, over)
    local p = { claimName = claim }
    for k, v in pairs(over or {}) do
        p[k] = v
    end
    return { name = name, mountPath = "/" .. name, pvc = p }
end

describe("runtimes.docker volumes", function()
    it("check_volumes: a pvc that must exist does, and a subPath needs API 1.45", function()
        local e = fake_engine()
        local rt = runtime(e)
        local ok, err = rt:check_volumes(assert(volumes.validate({
            pvc("a", "absent", { createIfNotExists = false }) })))
        assert.is_nil(ok)
        assert.equal("invalid", err.kind)
        assert.equal("VOLUME::PVC_NOT_FOUND", err.code)
        assert.equal("Volume 'a': Docker named volume 'absent' does not exist and createIfNotExists is false.",
            err.message)
        e.vols.present = { labels = {} }
        assert.is_true(rt:check_volumes(assert(volumes.validate({ pvc("a", "present", { createIfNotExists = false }),
            pvc("b", "absent") }))))
        local sub = pvc("a", "present")
        sub.subPath = "x"
        ok, err = rt:check_volumes(assert(volumes.validate({ sub })))
        assert.is_nil(ok)
        assert.equal("VOLUME::PVC_SUBPATH_UNSUPPORTED", err.code)
        assert.equal("Volume 'a': subPath on a Docker named volume needs Docker Engine API 1.45 (Docker 26) or newer; "
            .. "this daemon serves API 1.41.", err.message)
        e.subpath_supported = true
        assert.is_true(rt:check_volumes(assert(volumes.validate({ sub }))))
        e.down = true
        ok, err = rt:check_volumes(assert(volumes.validate({ pvc("a", "present", { createIfNotExists = false }) })))
        assert.is_nil(ok)
        assert.equal("unavailable", err.kind)
    end)

    it("_ensure_volumes creates the missing ones, labelled, and names only those this sandbox made", function()
        local e = fake_engine()
        local rt = runtime(e)
        e.vols.pre = { labels = {} }
        e.vols.other = { labels = { ["opensandbox.io/volume-created-for"] = "sb-0" } }
        local made = assert(rt:_ensure_volumes("sb-1", assert(volumes.validate({ pvc("a", "new"), pvc("b", "pre"),
            pvc("c", "other"), pvc("d", "new") }))))
        assert.same({ "new" }, made)
        assert.same({ ["opensandbox.io/volume-managed-by"] = "server", ["opensandbox.io/instance"] = "srv-a",
            ["opensandbox.io/volume-created-for"] = "sb-1" }, e.vols.new.labels)
        assert.equal(1, #(function()
            local n = {}
            for _, c in ipairs(e.calls) do
                if c:find("^create") then
                    n[#n + 1] = c
                end
            end
            return n
        end)())
        -- called again (a resumed provisioning): what it made is still its own
        assert.same({ "new" }, assert(rt:_ensure_volumes("sb-1", assert(volumes.validate({ pvc("a", "new") })))))
    end)

    it("_ensure_volumes removes what it made when a later volume fails", function()
        local e = fake_engine()
        local rt = runtime(e)
        local inspect = e.inspect_volume
        e.inspect_volume = function(self, name)
            if name == "bad" then
                return nil, rterrors.new("api", "boom", { status = 500 })
            end
            return inspect(self, name)
        end
        local made, err = rt:_ensure_volumes("sb-1", assert(volumes.validate({ pvc("a", "first"), pvc("b", "bad") })))
        assert.is_nil(made)
        assert.matches("Failed to prepare volume 'bad': boom", err.message)
        assert.is_nil(e.vols.first, "the volume this create made was removed")
    end)

    it("remove_volume and created_volume trust only this server's labels", function()
        local e = fake_engine()
        local rt = runtime(e)
        e.vols.mine = { labels = { ["opensandbox.io/volume-managed-by"] = "server",
            ["opensandbox.io/instance"] = "srv-a", ["opensandbox.io/volume-created-for"] = "sb-1" } }
        e.vols.foreign = { labels = { ["opensandbox.io/volume-managed-by"] = "server",
            ["opensandbox.io/instance"] = "srv-b", ["opensandbox.io/volume-created-for"] = "sb-2" } }
        e.vols.plain = { labels = {} }
        assert.equal("sb-1", rt:created_volume("mine"))
        assert.is_false(rt:created_volume("foreign"))
        assert.is_false(rt:created_volume("plain"))
        assert.is_false(rt:created_volume("gone"))
        local ok, err = rt:remove_volume("plain")
        assert.is_nil(ok)
        assert.equal("conflict", err.kind)
        assert.is_not_nil(e.vols.plain)
        assert.is_nil(rt:remove_volume("foreign"))
        e.vols.mine.in_use = true
        ok, err = rt:remove_volume("mine")
        assert.is_nil(ok)
        assert.equal("conflict", err.kind)
        e.vols.mine.in_use = false
        assert.is_true(rt:remove_volume("mine"))
        assert.is_nil(e.vols.mine)
        assert.is_true(rt:remove_volume("gone"))
        -- a server that took over srv-b's sandboxes owns its volumes too
        local rt2 = docker_runtime.new({ docker = { instance = "srv-c" } }, { engine = e,
            identity = { adopted = { "srv-b" } } })
        assert.equal("sb-2", rt2:created_volume("foreign"))
    end)

    it("the engine asks for API 1.45 only for a create that mounts a named volume's sub-directory", function()
        local urls = {}
        local client = { request = function(req)
            urls[#urls + 1] = req.url
            return { status = 201, headers = {}, body = '{"Id":"c1"}' }
        end }
        local e = engine_mod.new({ client = client, host = "unix:///var/run/docker.sock" })
        local spec = { id = "11111111-2222-4333-8444-555555555555", image_uri = "busybox", entrypoint = { "sh" },
            created_us = 1700000000000000, metadata = {} }
        assert.equal("c1", e:create_container(spec))
        spec.volumes = assert(volumes.validate({ pvc("a", "v") }))
        e:create_container(spec)
        spec.volumes[1].subPath = "x"
        e:create_container(spec)
        assert.matches("/v1%.41/containers/create", urls[1])
        assert.matches("/v1%.41/containers/create", urls[2])
        assert.matches("/v1%.45/containers/create", urls[3])
    end)
end)
