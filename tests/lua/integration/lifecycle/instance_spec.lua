-- Integration: docker.instance lets several servers share one daemon; each sees, adopts and removes only its
-- own containers (label opensandbox.io/instance).
local H = require("lifecycle.helpers")

describe("docker.instance #integration #docker", function()
    setup(function()
        H.ensure_image()
    end)
    teardown(function()
        H.stop_all()
    end)

    it("keeps two servers on one daemon apart, across restarts", function()
        local a = H.start({ config = { docker = { instance = "blue" } } })
        local b = H.start({ config = { docker = { instance = "green" } } })
        local id = H.create_running(a)
        local info = H.inspect("sandbox-" .. id)
        assert.are.equal("blue", info.Config.Labels["opensandbox.io/instance"])
        -- b neither lists it nor adopts it on (re)start
        local res = H.call(b, "GET", "/v1/sandboxes")
        assert.are.equal(0, res.json.pagination.totalItems)
        b:stop()
        b = H.start({ config = { docker = { instance = "green" } }, dir = b.dir })
        res = H.call(b, "GET", "/v1/sandboxes/" .. id)
        assert.are.equal(404, res.status)
        assert.is_true(H.container_exists("sandbox-" .. id))
        -- a still owns it and removes it
        assert.are.equal(204, H.call(a, "DELETE", "/v1/sandboxes/" .. id).status)
        assert.is_false(H.container_exists("sandbox-" .. id))
    end)
end)
