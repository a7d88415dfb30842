-- Integration: docker.agent_delivery = "volume": the agent bundle lives in one read-only volume that every
-- sandbox mounts at /opt/opensandbox (no upload per sandbox); the agent answers as usual.
local H = require("lifecycle.helpers")

describe("docker.agent_delivery = volume #integration #docker", function()
    setup(function()
        H.ensure_image()
    end)
    teardown(function()
        H.stop_all()
    end)

    it("mounts one shared agent volume read-only and the agent answers", function()
        local srv = H.start({ config = { docker = { agent_delivery = "volume" } } })
        -- two concurrent creates share one fill
        local a = H.create(srv)
        local b = H.create(srv)
        H.wait_state(srv, a, "Running")
        H.wait_state(srv, b, "Running")
        local ia, ib = H.inspect("sandbox-" .. a), H.inspect("sandbox-" .. b)
        local ma, mb = ia.Mounts[1], ib.Mounts[1]
        assert.are.equal("volume", ma.Type)
        assert.are.equal("/opt/opensandbox", ma.Destination)
        assert.is_false(ma.RW)
        assert.are.equal(ma.Name, mb.Name)
        assert.truthy(ma.Name:match("^opensandbox%-agent%-%x+$"), ma.Name)
        -- the fill container is gone
        assert.is_false(H.container_exists(ma.Name .. "-fill"))
        -- the agent runs from the volume
        local ep = H.call(srv, "GET", "/v1/sandboxes/" .. a .. "/endpoints/44772")
        local res
        for _ = 1, 50 do
            res = H.curl({ url = "http://" .. ep.json.endpoint .. "/ping",
                headers = { ["X-EXECD-ACCESS-TOKEN"] = ep.json.headers["X-EXECD-ACCESS-TOKEN"] }, timeout = 2 })
            if res and res.status == 200 then
                break
            end
            H.sleep(0.1)
        end
        assert.are.equal(200, res and res.status)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. a).status)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. b).status)
    end)
end)
