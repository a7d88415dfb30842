-- Integration spec: durability and start-up restoration (API.md §6.4, §6.5) with real restarts of the
-- server on the same state directory: renewed expiry and patched metadata survive, a sandbox that expired
-- while the server was down is removed at start, a kill -9 during provisioning leaves nothing orphaned,
-- and a lost store is rebuilt from the container labels (taking over the old identity explicitly).
local H = require("lifecycle.helpers")

describe("restarts #integration #docker", function()
    setup(function()
        H.ensure_image()
        H.remove_all_containers()
    end)

    -- each test starts from no server and no sandbox container, so that leftovers of a failed test do
    -- not count as orphans in the next one
    before_each(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    local function path(id, suffix)
        return "/v1/sandboxes/" .. id .. (suffix or "")
    end

    it("keeps renewed expiry, patched metadata, endpoints and operations across a restart", function()
        local srv = H.start()
        local id, res = H.create(srv, { metadata = { team = "infra", gone = "1" } })
        local created = res.json
        H.wait_state(srv, id, "Running", 60)
        local renewed = H.iso(7200)
        res = H.call(srv, "POST", path(id, "/renew-expiration"), { expiresAt = renewed })
        assert.are.equal(200, res.status, res.body)
        res = H.call(srv, "PATCH", path(id, "/metadata"), '{"team":"core","gone":null,"added":"x"}')
        assert.are.equal(200, res.status, res.body)
        local ep = H.call(srv, "GET", path(id, "/endpoints/44772")).json
        local manual = H.create(srv, { timeout = H.json.null })
        H.wait_state(srv, manual, "Running", 60)
        srv:stop()
        assert.is_false(srv:alive())

        local srv2 = H.start({ dir = srv.dir })
        local sb = H.call(srv2, "GET", path(id)).json
        assert.are.equal(renewed, sb.expiresAt)
        assert.are.same({ team = "core", added = "x" }, sb.metadata)
        assert.are.equal(created.createdAt, sb.createdAt)
        assert.are.equal("Running", sb.status.state)
        assert.are.same(ep, H.call(srv2, "GET", path(id, "/endpoints/44772")).json)
        assert.are.equal(1, H.call(srv2, "GET", "/v1/sandboxes?metadata=team%3Dcore%26added%3Dx").json
            .pagination.totalItems)
        -- the label keeps the initial value; the store has the renewed one
        assert.are.equal(created.expiresAt, H.inspect("sandbox-" .. id).Config.Labels["opensandbox.io/expires-at"])
        local m = H.call(srv2, "GET", path(manual))
        assert.are.equal(200, m.status, m.body)
        assert.is_nil(m.json.expiresAt)
        assert.are.equal("Running", m.json.status.state)
        assert.are.equal(202, H.call(srv2, "POST", path(id, "/pause")).status)
        assert.are.equal("Paused", H.call(srv2, "GET", path(id)).json.status.state)
        srv2:stop()

        -- the paused state survives too, and delete works after the restart
        local srv3 = H.start({ dir = srv.dir })
        assert.are.equal("Paused", H.call(srv3, "GET", path(id)).json.status.state)
        assert.are.equal(204, H.call(srv3, "DELETE", path(id)).status)
        assert.is_false(H.container_exists("sandbox-" .. id))
        srv3:stop()
    end)

    it("removes at start a sandbox that expired while the server was down", function()
        local srv = H.start()
        local id = H.create(srv, { timeout = 60 })
        local keep = H.create(srv, { timeout = 600 })
        H.wait_state(srv, id, "Running", 60)
        H.wait_state(srv, keep, "Running", 60)
        local res = H.call(srv, "POST", path(id, "/renew-expiration"), { expiresAt = H.iso(2) })
        assert.are.equal(200, res.status, res.body)
        local deadline = H.parse_time(res.json.expiresAt) / 1e6
        srv:stop()
        assert.is_true(H.container_exists("sandbox-" .. id))
        while H.now() <= deadline + 0.2 do
            H.sleep(0.2)
        end

        local srv2 = H.start({ dir = srv.dir })
        -- restoration expires it before the server starts listening
        H.assert_error(H.call(srv2, "GET", path(id)), 404, "DOCKER::SANDBOX_NOT_FOUND")
        assert.is_false(H.container_exists("sandbox-" .. id))
        assert.are.equal("Running", H.call(srv2, "GET", path(keep)).json.status.state)
        assert.are.equal(204, H.call(srv2, "DELETE", path(keep)).status)
        srv2:stop()
    end)

    it("reconciles at start what Docker did while the server was down", function()
        local srv = H.start()
        local vanished = H.create(srv)
        local exited = H.create(srv)
        local paused = H.create(srv)
        for _, id in ipairs({ vanished, exited, paused }) do
            H.wait_state(srv, id, "Running", 60)
        end
        srv:stop()
        H.run("docker rm -f sandbox-" .. vanished)
        H.run("docker kill sandbox-" .. exited)
        H.run("docker pause sandbox-" .. paused)
        -- a container of this server's (its identity label) that cannot be adopted (no created-at, no
        -- expiry) is removed
        local identity = H.inspect("sandbox-" .. paused).Config.Labels["opensandbox.io/instance"]
        assert.is_string(identity)
        local out, ok = H.run("docker run -d --name osb-junk --label opensandbox.io/id=junk --label "
            .. "opensandbox.io/instance=" .. identity .. " --label opensandbox.test=1 " .. H.IMAGE .. " sleep 600")
        assert.is_true(ok, out)

        local srv2 = H.start({ dir = srv.dir })
        H.assert_error(H.call(srv2, "GET", path(vanished)), 404, "DOCKER::SANDBOX_NOT_FOUND")
        local sb = H.call(srv2, "GET", path(exited)).json
        assert.are.equal("Failed", sb.status.state)
        assert.are.equal("Sandbox container exited with code 137.", sb.status.message)
        sb = H.call(srv2, "GET", path(paused)).json
        assert.are.equal("Paused", sb.status.state)
        assert.are.equal(202, H.call(srv2, "POST", path(paused, "/resume")).status)
        assert.is_false(H.container_exists("osb-junk"))
        assert.are.equal(2, H.call(srv2, "GET", "/v1/sandboxes").json.pagination.totalItems)
        srv2:stop()
    end)

    it("leaves nothing orphaned after a kill -9 during provisioning", function()
        local srv = H.start()
        local ids = {}
        for i = 1, 4 do
            ids[i] = H.create(srv, { metadata = { crash = "yes" } })
        end
        srv:kill()
        assert.is_false(srv:alive())
        -- let requests that reached the daemon finish
        H.sleep(1)

        local srv2 = H.start({ dir = srv.dir })
        local records = {}
        for _, id in ipairs(ids) do
            local res = H.call(srv2, "GET", path(id))
            if res.status == 200 then
                local st = res.json.status
                records[id] = st
                if st.state == "Failed" then
                    assert.are.same({ state = "Failed", reason = "PROVISIONING_ERROR",
                        message = "Provisioning was interrupted by a server restart." },
                        { state = st.state, reason = st.reason, message = st.message })
                    assert.is_false(H.container_exists("sandbox-" .. id))
                else
                    assert.are.equal("Running", st.state, H.json.encode(st))
                    assert.is_true(H.container_exists("sandbox-" .. id))
                end
            else
                H.assert_error(res, 404, "DOCKER::SANDBOX_NOT_FOUND")
                assert.is_false(H.container_exists("sandbox-" .. id))
            end
        end
        -- no container without a live record
        for _, name in ipairs(H.labelled_containers()) do
            local id = name:gsub("^sandbox%-", "")
            assert.is_truthy(records[id], "orphaned container " .. name)
            assert.are_not.equal("Failed", records[id].state)
        end
        -- every record left is deletable
        for id in pairs(records) do
            assert.are.equal(204, H.call(srv2, "DELETE", path(id)).status)
        end
        assert.are.same({}, H.labelled_containers())
        srv2:stop()
    end)

    it("rebuilds a lost store from the container labels", function()
        local srv = H.start()
        local id, res = H.create(srv, { metadata = { team = "infra" }, platform = { os = "linux", arch = "amd64" } })
        local manual = H.create(srv, { timeout = H.json.null, entrypoint = { "sleep", "700" } })
        H.wait_state(srv, id, "Running", 60)
        H.wait_state(srv, manual, "Running", 60)
        assert.are.equal(200, H.call(srv, "PATCH", path(id, "/metadata"), { later = "x" }).status)
        srv:stop()
        H.run("rm -rf " .. srv.dir .. "/state")
        -- the new store has a new identity: taking over the old one's containers is the operator's explicit act
        local old_identity = H.inspect("sandbox-" .. id).Config.Labels["opensandbox.io/instance"]
        local srv2 = H.start({ dir = srv.dir, config = { docker = { adopt_instances = { old_identity } } } })
        local sb = H.call(srv2, "GET", path(id)).json
        assert.is_table(sb, "adopted")
        assert.are.equal(res.json.createdAt, sb.createdAt)
        assert.are.equal(res.json.expiresAt, sb.expiresAt)
        assert.are.same({ team = "infra" }, sb.metadata) -- the patch made after create is lost
        assert.are.same({ os = "linux", arch = "amd64" }, sb.platform)
        assert.are.same({ "sleep", "600" }, sb.entrypoint)
        assert.are.same({ uri = H.IMAGE }, sb.image)
        assert.are.equal("Running", sb.status.state)
        local m = H.call(srv2, "GET", path(manual)).json
        assert.is_nil(m.expiresAt)
        assert.are.same({ "sleep", "700" }, m.entrypoint)
        -- the agent token survives too
        local ep = H.call(srv2, "GET", path(id, "/endpoints/44772")).json
        assert.is_string(ep.headers and ep.headers["X-EXECD-ACCESS-TOKEN"])
        assert.are.equal(204, H.call(srv2, "DELETE", path(id)).status)
        assert.are.equal(204, H.call(srv2, "DELETE", path(manual)).status)
        srv2:stop()
    end)
end)
