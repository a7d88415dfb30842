-- Integration spec: provisioning from a private registry for real (API.md §6.1 step 1, §8.5): the test
-- image is pushed to tests/images/registry.sh's registry (127.0.0.1:5055, testuser/testpass), the local tag
-- is removed, and creates with right, wrong and missing image.auth are watched; missing images and an
-- unreachable registry fail (Failed/PROVISIONING_ERROR) instead of hanging; failed records are deletable.
local H = require("lifecycle.helpers")

local REGISTRY = H.REGISTRY
local USER, PASSWORD = H.REGISTRY_USER, H.REGISTRY_PASSWORD

describe("private registry #integration #docker", function()
    local srv, image, was_running

    local function rmi()
        H.run("docker rmi -f " .. image)
    end

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
        image, was_running = H.push_private_image("busybox")
        srv = H.start()
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
        if image then
            rmi()
        end
        if not was_running then
            H.run("sh tests/images/registry.sh stop")
        end
    end)

    local function path(id, suffix)
        return "/v1/sandboxes/" .. id .. (suffix or "")
    end

    local function assert_pull_failed(sb, uri, detail_pred, what)
        assert.are.equal("Failed", sb.status.state)
        assert.are.equal("PROVISIONING_ERROR", sb.status.reason)
        local prefix = "DOCKER::SANDBOX_IMAGE_PULL_FAILED: Failed to pull image '" .. uri .. "': "
        assert.are.equal(prefix, sb.status.message:sub(1, #prefix), sb.status.message)
        assert.is_true(detail_pred(sb.status.message:sub(#prefix + 1):lower()), what .. ": " .. sb.status.message)
    end

    local function finished(sb)
        return sb and sb.status.state ~= "Pending"
    end

    it("fails with wrong or missing credentials, and the failed records behave per §3.3", function()
        local wrong = H.create(srv, { image = { uri = image, auth = { username = USER, password = "wrong" } } })
        local missing = H.create(srv, { image = { uri = image } })
        local sb = H.poll(srv, wrong, finished, 60)
        assert_pull_failed(sb, image, function(d)
            return d:find("unauthorized", 1, true) ~= nil
        end, "wrong password")
        sb = H.poll(srv, missing, finished, 60)
        assert_pull_failed(sb, image, function(d)
            return d:find("unauthorized", 1, true) ~= nil or d:find("no basic auth credentials", 1, true) ~= nil
        end, "no credentials")
        H.assert_sandbox_shape(sb)
        assert.are.equal(image, sb.image.uri)
        assert.is_nil(H.call(srv, "GET", path(wrong)).body:find("wrong", 1, true))

        -- operations on a failed-provisioning record
        H.assert_error(H.call(srv, "POST", path(wrong, "/pause")), 409, "DOCKER::SANDBOX_NOT_RUNNING",
            "Sandbox is not in a running state.")
        H.assert_error(H.call(srv, "POST", path(wrong, "/resume")), 409, "DOCKER::SANDBOX_NOT_PAUSED",
            "Sandbox is not in a paused state.")
        H.assert_error(H.call(srv, "POST", path(wrong, "/renew-expiration"), { expiresAt = H.iso(3600) }), 409,
            "DOCKER::SANDBOX_NOT_RUNNING", "Sandbox is not in a running state.")
        H.assert_error(H.call(srv, "GET", path(wrong, "/endpoints/44772")), 409, "DOCKER::SANDBOX_NOT_RUNNING",
            "Sandbox is not in a running state.")
        -- still listed, PATCH allowed
        local l = H.call(srv, "GET", "/v1/sandboxes?state=failed")
        assert.is_true(l.json.pagination.totalItems >= 2)
        assert.are.equal(200, H.call(srv, "PATCH", path(wrong, "/metadata"), { k = "v" }).status)
        assert.is_false(H.container_exists("sandbox-" .. wrong))
        assert.is_false(H.container_exists("sandbox-" .. missing))

        -- deletable
        assert.are.equal(204, H.call(srv, "DELETE", path(wrong)).status)
        assert.are.equal(204, H.call(srv, "DELETE", path(missing)).status)
        H.assert_error(H.call(srv, "GET", path(wrong)), 404, "DOCKER::SANDBOX_NOT_FOUND")
        H.assert_error(H.call(srv, "DELETE", path(missing)), 404, "DOCKER::SANDBOX_NOT_FOUND")
    end)

    it("fails (does not hang) on a missing image and an unreachable registry", function()
        local absent_uri = REGISTRY .. "/osb/does-not-exist:1"
        local dead_uri = "127.0.0.1:1/osb/busybox:1"
        local absent = H.create(srv, { image = { uri = absent_uri, auth = { username = USER, password = PASSWORD } } })
        local dead = H.create(srv, { image = { uri = dead_uri } })
        local t0 = os.time()
        local sb = H.poll(srv, absent, finished, 60)
        assert_pull_failed(sb, absent_uri, function(d)
            return d:find("not found", 1, true) ~= nil or d:find("manifest unknown", 1, true) ~= nil
        end, "missing image")
        sb = H.poll(srv, dead, finished, 60)
        assert_pull_failed(sb, dead_uri, function(d)
            return d ~= ""
        end, "unreachable registry")
        assert.is_true(os.time() - t0 < 30)
        -- operations that wait for provisioning get the failed state
        H.assert_error(H.call(srv, "POST", path(absent, "/pause")), 409, "DOCKER::SANDBOX_NOT_RUNNING")
        assert.are.equal(204, H.call(srv, "DELETE", path(absent)).status)
        assert.are.equal(204, H.call(srv, "DELETE", path(dead)).status)
    end)

    it("pulls with the right credentials and reaches Running, sharing concurrent identical pulls", function()
        assert.is_nil(H.inspect(image), "the image must not be local")
        local auth = { username = USER, password = PASSWORD }
        local id = H.create(srv, { image = { uri = image, auth = auth } })
        local others = {}
        for i = 1, 3 do
            others[i] = H.create(srv, { image = { uri = image, auth = auth } })
        end
        local sb = H.wait_state(srv, id, "Running", 90)
        assert.are.equal(image, sb.image.uri)
        local c = H.inspect("sandbox-" .. id)
        assert.are.equal(image, c.Config.Image)
        assert.is_true(c.State.Running)
        for _, o in ipairs(others) do
            H.wait_state(srv, o, "Running", 90)
            assert.are.equal(204, H.call(srv, "DELETE", path(o)).status)
        end
        -- the credentials are in neither the container, the store nor the log
        assert.is_nil(H.json.encode(c.Config):find(PASSWORD, 1, true))
        local out = H.run("grep -rla " .. PASSWORD .. " " .. srv.dir .. " || true")
        assert.are.equal("", out)
        assert.are.equal(204, H.call(srv, "DELETE", path(id)).status)
    end)

    it("pulls again an image removed behind its back after it was seen (no inspection per create)", function()
        local auth = { username = USER, password = PASSWORD }
        local id = H.create(srv, { image = { uri = image, auth = auth } })
        H.wait_state(srv, id, "Running", 90)
        assert.are.equal(204, H.call(srv, "DELETE", path(id)).status)
        -- the server has seen the image present; now it goes away
        rmi()
        assert.is_nil(H.inspect(image), "the image must be gone")
        local again = H.create(srv, { image = { uri = image, auth = auth } })
        local sb = H.wait_state(srv, again, "Running", 90)
        assert.are.equal(image, sb.image.uri)
        assert.is_not_nil(H.inspect(image), "pulled again")
        assert.is_true(H.inspect("sandbox-" .. again).State.Running)
        assert.are.equal(204, H.call(srv, "DELETE", path(again)).status)
        -- gone again and no longer pullable (wrong credentials): a clear pull failure, no container left
        rmi()
        local bad = H.create(srv, { image = { uri = image, auth = { username = USER, password = "wrong" } } })
        sb = H.poll(srv, bad, finished, 60)
        assert_pull_failed(sb, image, function(d)
            return d:find("unauthorized", 1, true) ~= nil
        end, "wrong password after the image went away")
        assert.is_false(H.container_exists("sandbox-" .. bad))
        assert.are.equal(204, H.call(srv, "DELETE", path(bad)).status)
    end)
end)
