-- Integration spec: a private image pulled with one tenant's registry credentials is not free for the other
-- tenants once it is on the daemon (API.md §8.5, sandbox.image_access). Against tests/images/registry.sh's
-- authenticated registry, with two tenants (and a third after a restart): A pulls with credentials and
-- runs; B without credentials, with wrong ones, or naming the image by its ID, fails at the pull; B with
-- the right credentials runs and keeps that proof; a public (local) image is unaffected; the record of
-- which principals proved access survives a restart.
local H = require("lifecycle.helpers")

local USER, PASSWORD = H.REGISTRY_USER, H.REGISTRY_PASSWORD
local KEYS = { a = "key-team-a", b = "key-team-b", c = "key-team-c" }

describe("private images and tenants #integration #docker", function()
    local srv, image, was_running

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
        image, was_running = H.push_private_image("private")
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
        if image then
            H.run("docker rmi -f " .. image)
        end
        if not was_running then
            H.run("sh tests/images/registry.sh stop")
        end
    end)

    local function start(dir)
        return H.start({ dir = dir, config = { server = { api_keys = {
            { key = KEYS.a, principal = "team-a" },
            { key = KEYS.b, principal = "team-b" },
            { key = KEYS.c, principal = "team-c" },
        } } } })
    end

    -- creates as `tenant` and waits for the outcome; returns the sandbox
    local function run_as(tenant, uri, auth)
        local headers = { ["OPEN-SANDBOX-API-KEY"] = KEYS[tenant] }
        local res = H.call(srv, "POST", "/v1/sandboxes", H.body({ image = { uri = uri, auth = auth } }), headers)
        assert.are.equal(202, res.status, res.body)
        local deadline = os.time() + 90
        repeat
            local g = H.call(srv, "GET", "/v1/sandboxes/" .. res.json.id, nil, headers)
            assert.are.equal(200, g.status, g.body)
            if g.json.status.state ~= "Pending" then
                return g.json
            end
            H.sleep(0.1)
        until os.time() > deadline
        error("sandbox " .. res.json.id .. " still Pending")
    end

    local function pull_refused(sb, uri)
        assert.is_table(sb)
        assert.are.equal("Failed", sb.status.state, H.json.encode(sb.status))
        local prefix = "DOCKER::SANDBOX_IMAGE_PULL_FAILED: Failed to pull image '" .. uri .. "': "
        assert.are.equal(prefix, sb.status.message:sub(1, #prefix), sb.status.message)
        assert.is_false(H.container_exists("sandbox-" .. sb.id))
    end

    it("lets only principals that proved access run a private image", function()
        srv = start()
        local right = { username = USER, password = PASSWORD }
        assert.is_nil(H.inspect(image), "the image must not be local")
        -- A pulls with its credentials and runs
        local a1 = run_as("a", image, right)
        assert.are.equal("Running", a1.status.state, H.json.encode(a1.status))
        local image_id = H.inspect(image).Id
        -- the image is on the daemon now; B has no credentials, or wrong ones, or names it by its ID
        pull_refused(run_as("b", image, nil), image)
        pull_refused(run_as("b", image, { username = USER, password = "wrong" }), image)
        pull_refused(run_as("b", image_id, nil), image_id)
        pull_refused(run_as("b", image_id:sub(8, 19), nil), image_id:sub(8, 19))
        -- a public image is unaffected
        assert.are.equal("Running", run_as("b", H.IMAGE, nil).status.state)
        -- B with the right credentials proves access, and then runs it as A does
        assert.are.equal("Running", run_as("b", image, right).status.state)
        assert.are.equal("Running", run_as("b", image, nil).status.state)
        assert.are.equal("Running", run_as("a", image, nil).status.state)

        -- the proofs are in the store: after a restart, C (no proof) is refused, A and B are not
        srv:stop()
        srv = start(srv.dir)
        pull_refused(run_as("c", image, nil), image)
        assert.are.equal("Running", run_as("a", image, nil).status.state)
        assert.are.equal("Running", run_as("b", image, nil).status.state)
        assert.are.equal("Running", run_as("c", H.IMAGE, nil).status.state)
    end)
end)
