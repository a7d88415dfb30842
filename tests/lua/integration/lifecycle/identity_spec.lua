-- Integration: two default-configured servers (no docker.instance, each with its own store) on one Docker
-- daemon. Each server labels its containers with the identity made with its store
-- (opensandbox.io/instance) and lists, watches, adopts, expires and removes only those: neither sees,
-- expires (at the creation-time expiry of the labels, after the owner renewed) nor removes the other's.
-- Containers of older versions (no identity label) are left alone. Taking over another server's containers
-- (--adopt-instance / docker.adopt_instances) is explicit, and kept in the store.
local H = require("lifecycle.helpers")

describe("server identity on a shared daemon #integration #docker", function()
    setup(function()
        H.ensure_image()
        H.remove_all_containers()
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    local function path(id, suffix)
        return "/v1/sandboxes/" .. id .. (suffix or "")
    end

    local function identity_of(id)
        return H.inspect("sandbox-" .. id).Config.Labels["opensandbox.io/instance"]
    end

    local function ids(srv)
        local res = H.call(srv, "GET", "/v1/sandboxes?pageSize=100")
        assert.are.equal(200, res.status, res.body)
        local out = {}
        for _, sb in ipairs(res.json.items) do
            out[sb.id] = sb.status.state
        end
        return out
    end

    -- restarts `srv` on its own state directory (start-up reconciliation: where adoption happened)
    local function restart(srv, extra_args)
        srv:stop()
        local args
        if extra_args then
            args = "--config " .. H.quote(srv.dir .. "/config.lua") .. " " .. extra_args
        end
        return H.start({ dir = srv.dir, args = args })
    end

    it("keeps two servers apart: lists, renewals, expiry, removal; takeover only when asked", function()
        local a = H.start()
        local b = H.start()
        -- short-lived sandboxes (the creation-time expiry in the labels is 60 s away), renewed by their owner
        local a1 = H.create(a, { timeout = 60 })
        local b1 = H.create(b, { timeout = 60 })
        local a2 = H.create(a, { timeout = 900 })
        local created_at = H.now()
        H.wait_state(a, a1, "Running", 60)
        H.wait_state(b, b1, "Running", 60)
        H.wait_state(a, a2, "Running", 60)
        for _, x in ipairs({ { a, a1 }, { b, b1 } }) do
            local res = H.call(x[1], "POST", path(x[2], "/renew-expiration"), { expiresAt = H.iso(600) })
            assert.are.equal(200, res.status, res.body)
        end
        -- a container of an older version (no identity label), complete enough to adopt
        local legacy = "legacy-" .. tostring(os.time())
        local out, ok = H.run(string.format("docker run -d --name osb-%s --label opensandbox.io/id=%s "
            .. "--label opensandbox.io/created-at=%s --label opensandbox.io/expires-at=%s %s sleep 600",
            legacy, legacy, H.iso(0), H.iso(900), H.IMAGE))
        assert.is_true(ok, out)

        -- b restarted (start-up reconciliation) neither lists nor serves a's sandboxes, nor the old container
        b = restart(b)
        assert.are.same({ [b1] = "Running" }, ids(b))
        H.assert_error(H.call(b, "GET", path(a1)), 404, "DOCKER::SANDBOX_NOT_FOUND")
        H.assert_error(H.call(b, "DELETE", path(a2)), 404, "DOCKER::SANDBOX_NOT_FOUND")
        H.assert_error(H.call(b, "POST", path(a1, "/renew-expiration"), { expiresAt = H.iso(30) }), 404,
            "DOCKER::SANDBOX_NOT_FOUND")
        assert.are.same({ [a1] = "Running", [a2] = "Running" }, ids(a))
        -- each server's containers carry its own identity (a UUID, different per store)
        local ida, idb = identity_of(a1), identity_of(b1)
        assert.is_truthy(ida and ida:match("^%x+%-%x+%-%x+%-%x+%-%x+$"), tostring(ida))
        assert.is_truthy(idb and idb:match("^%x+%-%x+%-%x+%-%x+%-%x+$"), tostring(idb))
        assert.are_not.equal(ida, idb)
        assert.are.equal(ida, identity_of(a2))

        -- past the creation-time expiry of the labels: nobody removed a renewed sandbox
        while H.now() < created_at + 65 do
            H.sleep(1)
        end
        assert.are.equal("Running", H.call(a, "GET", path(a1)).json.status.state)
        assert.are.equal("Running", H.call(b, "GET", path(b1)).json.status.state)
        assert.is_true(H.container_exists("sandbox-" .. a1))
        assert.is_true(H.container_exists("sandbox-" .. b1))
        assert.is_true(H.container_exists("osb-" .. legacy))
        -- what happens to a's sandboxes (a pause: an event on the shared daemon) is not reported by b
        assert.are.equal(202, H.call(a, "POST", path(a2, "/pause")).status)
        assert.are.same({ [b1] = "Running" }, ids(b))

        -- a stops: b still leaves its containers alone, across a restart too
        a:stop()
        b = restart(b)
        assert.are.same({ [b1] = "Running" }, ids(b))
        assert.is_true(H.container_exists("sandbox-" .. a1))
        assert.is_true(H.container_exists("sandbox-" .. a2))

        -- the explicit takeover of a's identity adopts a's containers (from their labels: a1's renewal lived in
        -- a's store, so a1 is past its label expiry and is removed as expired; a2 is adopted, still Paused)
        b = restart(b, "--adopt-instance " .. ida)
        local seen = ids(b)
        assert.are.equal("Paused", seen[a2])
        assert.is_nil(seen[a1])
        assert.is_false(H.container_exists("sandbox-" .. a1))
        assert.is_nil(seen[legacy], "the unlabelled container is not part of a's identity")
        -- the takeover is kept in the store: without the flag, a2 is still b's; b removes it when told to
        b = restart(b)
        assert.are.equal("Paused", ids(b)[a2])
        assert.are.equal(204, H.call(b, "DELETE", path(a2)).status)
        assert.is_false(H.container_exists("sandbox-" .. a2))

        -- unlabelled containers of older versions: adopted only with the explicit "unlabelled"
        assert.is_true(H.container_exists("osb-" .. legacy))
        b = restart(b, "--adopt-instance unlabelled")
        assert.are.equal("Running", ids(b)[legacy])
        assert.are.equal(204, H.call(b, "DELETE", path(legacy)).status)
        assert.is_false(H.container_exists("osb-" .. legacy))
        assert.are.equal(204, H.call(b, "DELETE", path(b1)).status)
    end)
end)
