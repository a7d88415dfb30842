-- Integration spec: the server follows Docker (API.md §6.3 events): containers removed, paused, resumed or
-- killed behind its back, and a provisioning failure after the container was created (its published
-- ports cannot be bound, so the start fails) whose record must stay Failed although its container is
-- destroyed.
local H = require("lifecycle.helpers")

describe("Docker events #integration #docker", function()
    local srv

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
        srv = H.start()
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    local function path(id, suffix)
        return "/v1/sandboxes/" .. id .. (suffix or "")
    end

    it("drops the record when the container is removed behind the server's back", function()
        local id = H.create_running(srv, { metadata = { behind = "yes" } })
        local out, ok = H.run("docker rm -f sandbox-" .. id)
        assert.is_true(ok, out)
        H.wait_gone(srv, id, 10)
        H.assert_error(H.call(srv, "GET", path(id)), 404, "DOCKER::SANDBOX_NOT_FOUND",
            "Sandbox " .. id .. " not found.")
        assert.are.equal(0, H.call(srv, "GET", "/v1/sandboxes?metadata=behind%3Dyes").json.pagination.totalItems)
        H.assert_error(H.call(srv, "DELETE", path(id)), 404, "DOCKER::SANDBOX_NOT_FOUND")
    end)

    it("follows pause, unpause and kill done with the docker CLI", function()
        local id = H.create_running(srv)
        local name = "sandbox-" .. id
        H.run("docker pause " .. name)
        local sb = H.wait_state(srv, id, "Paused", 10)
        assert.are.equal("Sandbox container is paused.", sb.status.message)
        H.run("docker unpause " .. name)
        H.wait_state(srv, id, "Running", 10)
        H.run("docker kill " .. name)
        sb = H.wait_state(srv, id, "Failed", 10)
        assert.are.equal("CONTAINER_EXITED_ERROR", sb.status.reason)
        assert.are.equal("Sandbox container exited with code 137.", sb.status.message)
        -- an exited sandbox stays until deleted
        assert.is_true(H.container_exists(name))
        assert.are.equal(204, H.call(srv, "DELETE", path(id)).status)
        assert.is_false(H.container_exists(name))
    end)

    it("keeps a failed-provisioning record whose half-created container it removed", function()
        -- 192.0.2.1 (TEST-NET-1) is not an address of this host: Docker cannot bind the published ports
        local bad = H.start({ config = { docker = { host_ip = "192.0.2.1" } } })
        local id = H.create(bad)
        local sb = H.poll(bad, id, function(s)
            return s and s.status.state ~= "Pending"
        end, 60)
        assert.is_table(sb, "the record must stay after the failure")
        assert.are.equal("Failed", sb.status.state)
        assert.are.equal("PROVISIONING_ERROR", sb.status.reason)
        assert.matches("^DOCKER::SANDBOX_START_FAILED: ", sb.status.message)
        -- the removal's destroy event must not drop the record
        H.sleep(2)
        sb = H.call(bad, "GET", path(id)).json
        assert.is_table(sb, "the record must stay after its container was removed")
        assert.are.equal("PROVISIONING_ERROR", sb.status.reason)
        assert.is_false(H.container_exists("sandbox-" .. id))
        assert.are.equal(204, H.call(bad, "DELETE", path(id)).status)
        H.assert_error(H.call(bad, "GET", path(id)), 404, "DOCKER::SANDBOX_NOT_FOUND")
        bad:stop()
    end)
end)
