-- sandbox.store, schema 6 (volumes): a record's volumes round-trip, and the named volumes this server
-- created are kept across a reopen (a restart) until dropped.
local store = require("sandbox.store")
local volumes = require("sandbox.volumes")

describe("sandbox.store volumes", function()
    local dir, path
    before_each(function()
        local p = assert(io.popen("mktemp -d /tmp/osb-storevol.XXXXXX"))
        dir = p:read("l")
        p:close()
        path = dir .. "/state.db"
    end)
    after_each(function()
        os.execute("rm -rf '" .. dir .. "'")
    end)

    it("keeps a record's volumes and the created volumes across a reopen", function()
        local s = assert(store.open(path))
        local vols = assert(volumes.validate({
            { name = "h", mountPath = "/h", host = { path = "/srv/x" }, readOnly = true, subPath = "a" },
            { name = "p", mountPath = "/p", pvc = { claimName = "c", deleteOnSandboxTermination = true,
                accessModes = { "ReadWriteOnce" } } },
        }))
        vols[1].source = "/srv/x/a"
        assert(s:put({ id = "sb-1", created_us = 1767225600000000, image_uri = "busybox", entrypoint = { "sh" },
            metadata = {}, extensions = {}, state = "Running", reason = "CONTAINER_RUNNING", message = "m",
            transition_us = 1767225600000000, volumes = vols }))
        assert.is_false(s:created_volume("c"))
        assert.is_true(s:add_created_volume("c", "sb-1", 1767225600000000))
        assert.is_true(s:add_created_volume("c", "sb-2", 1767225600000001)) -- the first creator stays
        s:close()
        s = assert(store.open(path))
        assert.same(vols, s:get("sb-1").volumes)
        assert.equal("sb-1", s:created_volume("c"))
        assert.is_true(s:drop_created_volume("c"))
        assert.is_false(s:created_volume("c"))
        s:close()
    end)
end)
