-- Integration spec: durability and start-up restoration (API.md §6.4, §6.5) with real restarts of the
-- server on the same state directory: renewed expiry and patched metadata survive, a sandbox that expired
-- while the server was down is removed at start, provisioning cut by a kill -9 resumes (all Running, one
-- container each, nothing orphaned), an interrupted delete is finished, and a lost store is rebuilt from the
-- container labels (taking over the old identity explicitly).
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

    -- API.md §6.5 step 4: a 202 is a promise. (Until 2026-12 these ended Failed, "Provisioning was
    -- interrupted by a server restart.", and their containers were removed.)
    it("resumes 30 creates accepted 0.4 s before a kill -9: all Running, one container each, no orphans",
        function()
            local srv = H.start()
            -- 30 concurrent clients, each with an env and resources the resumed provisioning must not lose
            local dir = srv.dir .. "/burst"
            H.run("mkdir -p " .. H.quote(dir))
            local body = H.json.encode(H.body({ env = { RESUME_CHECK = "kept-after-kill" },
                resourceLimits = { memory = "96Mi" } }))
            local parts = {}
            for i = 1, 30 do
                parts[#parts + 1] = string.format("curl -s -m 30 -X POST -H 'Content-Type: application/json' "
                    .. "--data-binary %s -o %s/%d -w '%%{http_code}' %s >%s/%d.code &", H.quote(body), dir, i,
                    H.quote(srv.base .. "/v1/sandboxes"), dir, i)
            end
            local out, ok = H.run(table.concat(parts, "\n") .. "\nwait")
            assert.is_true(ok, out)
            H.sleep(0.4)
            srv:kill()
            assert.is_false(srv:alive())
            local ids = {}
            for i = 1, 30 do
                local code = H.run("cat " .. dir .. "/" .. i .. ".code")
                assert.are.equal("202", code, "create " .. i)
                ids[i] = H.json.decode(H.run("cat " .. dir .. "/" .. i)).id
            end
            local pending = 0
            local srv2 = H.start({ dir = srv.dir })
            for _, id in ipairs(ids) do
                local res = H.call(srv2, "GET", path(id))
                assert.are.equal(200, res.status, res.body)
                if res.json.status.state == "Pending" then
                    pending = pending + 1
                end
            end
            for _, id in ipairs(ids) do
                H.wait_state(srv2, id, "Running", 90)
            end
            print(string.format("\n  30 creates, kill -9 0.4 s after the last 202: %d still Pending at the restart; "
                .. "all 30 Running after it", pending))
            -- exactly one container per sandbox, none without a record, each made from the whole request
            local names = H.labelled_containers()
            table.sort(names)
            local want = {}
            for i, id in ipairs(ids) do
                want[i] = "sandbox-" .. id
            end
            table.sort(want)
            assert.are.same(want, names)
            for _, id in ipairs(ids) do
                local ins = H.inspect("sandbox-" .. id)
                assert.is_true(ins.State.Running)
                local env = table.concat(ins.Config.Env, "\n")
                assert.truthy(env:find("RESUME_CHECK=kept-after-kill", 1, true), id .. ": env lost")
                assert.are.equal(96 * 1024 * 1024, ins.HostConfig.Memory, id .. ": memory limit lost")
            end
            -- and they work: every one can be deleted, leaving nothing
            for _, id in ipairs(ids) do
                assert.are.equal(204, H.call(srv2, "DELETE", path(id)).status)
            end
            assert.are.same({}, H.labelled_containers())
            srv2:stop()
        end)

    -- A provisioning a kill -9 cut while the container waited at its start gate (bootstrap.sh holds the
    -- entrypoint until the server has put the network rules in place, then opens the gate). The server is
    -- frozen (SIGSTOP) the moment Docker reports the container started, so that it has not opened the gate
    -- yet, then killed. Returns the sandbox id and its container's main pid, or nil when the server was faster.
    local function cut_at_gate(srv)
        H.run(string.format("(timeout 20 docker events --filter event=start --filter label=opensandbox.io/id "
            .. "--format x | (read -r _; kill -STOP %d)) >/dev/null 2>&1 &", srv.pid))
        H.sleep(0.5) -- (the event stream is open)
        local id = H.create(srv)
        local stopped
        for _ = 1, 200 do
            local stat = H.run("cat /proc/" .. srv.pid .. "/stat")
            if stat:match("^%d+ %b() T") then
                stopped = true
                break
            end
            H.sleep(0.05)
        end
        assert.is_true(stopped, "the server was not frozen at the container's start")
        local cpid = tonumber((H.run("docker inspect -f '{{.State.Pid}}' sandbox-" .. id)))
        local cmdline = H.run("cat /proc/" .. cpid .. "/cmdline"):gsub("%z", " ")
        srv:kill()
        if not cmdline:find("/opt/opensandbox/bootstrap.sh", 1, true) then
            return nil -- past its gate already
        end
        return id, cpid
    end

    -- servers on `dir` until one is cut at a gate (cut_at_gate); returns the last server, the id and the pid
    local function server_cut_at_gate(dir)
        local srv, id, cpid
        for _ = 1, 5 do
            srv = H.start({ dir = dir })
            dir = srv.dir
            id, cpid = cut_at_gate(srv)
            if id then
                return srv, id, cpid
            end
        end
        error("the server always opened the gate before it could be frozen")
    end

    -- the command line of process `pid` once it is the entrypoint `sleep 600` (or the last seen after 5 s)
    local function entrypoint_of(pid)
        local main
        for _ = 1, 50 do
            main = H.run("cat /proc/" .. math.tointeger(pid) .. "/cmdline"):gsub("%z", " ")
            if main == "sleep 600 " then
                break
            end
            H.sleep(0.1)
        end
        return main
    end

    it("resumes a provisioning a kill -9 cut at the start gate: the gate is opened, or the container made "
        .. "again when its gate had failed", function()
        -- the gate never opened: the restarted server opens it, the entrypoint runs in the same container
        local srv, id, cpid = server_cut_at_gate(nil)
        local cid = H.inspect("sandbox-" .. id).Id
        srv = H.start({ dir = srv.dir })
        H.wait_state(srv, id, "Running", 30)
        assert.are.equal(cid, H.inspect("sandbox-" .. id).Id)
        assert.are.equal("sleep 600 ", entrypoint_of(cpid), "the entrypoint runs")
        srv:kill()

        -- the gate failed (as when the crash comes between the gate's open and its write: the bootstrap
        -- reads end-of-file and exits 125): the restarted server makes the container again, never reports
        -- that exit as the sandbox's
        srv, id, cpid = server_cut_at_gate(srv.dir)
        cid = H.inspect("sandbox-" .. id).Id
        local out, ok = H.run("sh -c 'exec 3>/proc/" .. cpid .. "/root/tmp/.opensandbox-gate'")
        assert.is_true(ok, out)
        local ins
        for _ = 1, 50 do
            ins = H.inspect("sandbox-" .. id)
            if not ins.State.Running then
                break
            end
            H.sleep(0.1)
        end
        assert.are.same({ "exited", 125 }, { ins.State.Status, ins.State.ExitCode })
        srv = H.start({ dir = srv.dir })
        local sb = H.wait_state(srv, id, "Running", 30)
        assert.are.equal("Running", sb.status.state)
        ins = H.inspect("sandbox-" .. id)
        assert.are_not.equal(cid, ins.Id, "made again")
        assert.is_true(ins.State.Running)
        assert.are.equal(ins.Id:sub(1, 12), (H.run("docker ps -aq --filter label=opensandbox.io/id=" .. id)
            :gsub("%s+$", "")), "one container for it")
        assert.are.equal("sleep 600 ", entrypoint_of(ins.State.Pid), "the entrypoint runs")
        srv:stop()
    end)

    it("finishes at the restart a delete that a kill -9 cut short", function()
        local srv = H.start()
        local id = H.create_running(srv)
        -- a delete whose removal is slow (a paused container: unpause, then remove), killed meanwhile
        assert.are.equal(202, H.call(srv, "POST", path(id, "/pause")).status)
        H.run(string.format("curl -s -m 10 -X DELETE %s >/dev/null 2>&1 &", H.quote(srv.base .. path(id))))
        H.sleep(0.05)
        srv:kill()
        local srv2 = H.start({ dir = srv.dir })
        -- whatever the kill interrupted, the sandbox ends deleted or untouched; never stuck in Stopping
        local sb = H.poll(srv2, id, function(s)
            return s == nil or s.status.state ~= "Stopping"
        end, 10)
        if sb then
            assert.are.equal("Paused", sb.status.state)
            assert.is_true(H.container_exists("sandbox-" .. id))
        else
            assert.is_false(H.container_exists("sandbox-" .. id))
        end
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
