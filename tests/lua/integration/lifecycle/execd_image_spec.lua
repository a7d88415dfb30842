-- Integration: runtime.execd_image (API.md §8.4): the agent and bootstrap are copied out of an image (a
-- scratch container that is never started, then removed) instead of the built-in agent.
local H = require("lifecycle.helpers")

describe("runtime.execd_image #integration #docker", function()
    setup(function()
        H.ensure_image()
        local out, ok = H.run("bash " .. H.root() .. "/tests/images/build-execd-image.sh")
        assert(ok, out)
    end)
    teardown(function()
        H.stop_all()
    end)

    it("provisions sandboxes with the agent taken from the image", function()
        local srv = H.start({ config = { runtime = { execd_image = "local/execd-image:latest" } } })
        local id = H.create_running(srv)
        -- the scratch container is gone
        local out = H.run("docker ps -a --filter label=opensandbox.scratch=1 -q")
        assert.are.equal("", out:gsub("%s", ""))
        -- the agent answers through the endpoint, with the sandbox's token
        local ep = H.call(srv, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772")
        assert.are.equal(200, ep.status)
        local token = ep.json.headers["X-EXECD-ACCESS-TOKEN"]
        local res
        for _ = 1, 50 do
            res = H.curl({ url = "http://" .. ep.json.endpoint .. "/ping",
                headers = { ["X-EXECD-ACCESS-TOKEN"] = token }, timeout = 2 })
            if res and res.status == 200 then
                break
            end
            H.sleep(0.1)
        end
        assert.are.equal(200, res and res.status)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
    end)

    it("fails provisioning clearly when the image is missing", function()
        local srv = H.start({ config = { runtime = { execd_image = "local/no-such-agent:1" } } })
        local id = H.create(srv)
        local sb = H.wait_state(srv, id, "Failed")
        assert.truthy(sb.status.message:find("DOCKER::SANDBOX_EXECD_DISTRIBUTION_FAILED", 1, true), sb.status.message)
        assert.truthy(sb.status.message:find("local/no-such-agent:1", 1, true), sb.status.message)
    end)
end)
