-- Integration spec: the Docker daemon goes away (API.md §6.5 step 1, §1.6 DOCKER::UNAVAILABLE): create,
-- pause and delete answer 503 with Retry-After, /health and reads are still served, and the servers recover
-- once dockerd is back. Two servers: `live` runs through the outage (create must become 503 and work again
-- afterwards); `restarted` owned a Running sandbox, was stopped before the outage and is started while
-- Docker is down, so its record is still Running and pause must answer 503 (a server that stays up sees
-- the containers stop during dockerd's shutdown, and then pause is rightly 409).
-- It stops the machine's dockerd (SIGTERM to the pid in /var/run/docker.pid) and restarts it the way it
-- was started (`dockerd >> /tmp/dockerd.log 2>&1 &`), ALWAYS, even when an assertion fails. Named zz_ so
-- that it runs last.
local H = require("lifecycle.helpers")

local DOCKER_HOST = os.getenv("DOCKER_HOST") or "unix:///var/run/docker.sock"

local function docker_up()
    local _, ok = H.run("timeout 5 docker info >/dev/null")
    return ok
end

local function dockerd_pid()
    local f = io.open("/var/run/docker.pid")
    if not f then
        return nil
    end
    local pid = tonumber(f:read("l"))
    f:close()
    return pid
end

-- A zombie (an exited dockerd not yet reaped by its parent) counts as gone.
local function alive(pid)
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then
        return false
    end
    local stat = f:read("a") or ""
    f:close()
    return stat:match("^%d+ %b() (%a)") ~= "Z"
end

--- Starts dockerd again unless it answers (after waiting for a stopping one to exit); waits up to 60 s
--- for `docker info`.
local function ensure_dockerd()
    local deadline, started = os.time() + 60, false
    while os.time() < deadline do
        if docker_up() then
            return true
        end
        local pid = dockerd_pid()
        if not started and not (pid and alive(pid)) then
            -- a pid file left by a dead dockerd makes the new one refuse to start
            os.remove("/var/run/docker.pid")
            -- without our descriptors 3-9: a lock this run is held under (`flock LOCK busted ...`) must not
            -- pass to the daemon, which would hold it long after the run
            H.run("exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-; "
                .. "setsid nohup dockerd >> /tmp/dockerd.log 2>&1 < /dev/null &")
            started = true
        end
        H.sleep(0.3)
    end
    return false
end

describe("dockerd outage #integration #docker", function()
    setup(function()
        assert(ensure_dockerd(), "dockerd is not running")
        H.ensure_image()
        H.remove_all_containers()
    end)

    teardown(function()
        ensure_dockerd()
        H.stop_all()
        H.remove_all_containers()
    end)

    local function path(id, suffix)
        return "/v1/sandboxes/" .. id .. (suffix or "")
    end

    local PREFIX = "Docker daemon is unreachable at " .. DOCKER_HOST .. ": "

    local function assert_unavailable(res)
        H.assert_error(res, 503, "DOCKER::UNAVAILABLE", function(m)
            return m:sub(1, #PREFIX) == PREFIX and #m > #PREFIX
        end)
        assert.are.equal("5", res.headers["retry-after"])
    end

    local function assert_reads(srv, id)
        local res = H.call(srv, "GET", "/health")
        assert.are.equal(200, res.status)
        assert.are.equal('{"status":"healthy"}', res.body)
        assert.are.equal(200, H.call(srv, "GET", "/v1/health").status)
        res = H.call(srv, "GET", "/v1/sandboxes")
        assert.are.equal(200, res.status, res.body)
        if id then
            res = H.call(srv, "GET", path(id))
            assert.are.equal(200, res.status, res.body)
            assert.are.equal(id, res.json.id)
        end
    end

    --- Polls create until it is accepted (the server has reconnected); returns the new id.
    local function create_when_back(srv)
        local deadline = os.time() + 30
        repeat
            local res = H.create_raw(srv)
            if res.status == 202 then
                return res.json.id
            end
            assert_unavailable(res)
            H.sleep(0.3)
        until os.time() > deadline
        error("the server did not recover")
    end

    it("answers 503 DOCKER::UNAVAILABLE while dockerd is down, serves reads, and recovers", function()
        finally(function()
            assert(ensure_dockerd(), "could not restart dockerd")
        end)
        local live = H.start()
        local first = H.start()
        -- the entrypoint ends on SIGTERM, so that dockerd's shutdown does not wait 10 s for it
        local trap = { entrypoint = { "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done" } }
        local id = H.create_running(first, trap)
        -- `due` expires after Docker is back: the restarted server must arm its timer on reconnecting
        local due = H.create_running(first, { timeout = 60, entrypoint = trap.entrypoint })
        local due_res = H.call(first, "POST", path(due, "/renew-expiration"), { expiresAt = H.iso(20) })
        assert.are.equal(200, due_res.status, due_res.body)
        local due_at = H.parse_time(due_res.json.expiresAt) / 1e6
        first:stop()

        local pid = assert(dockerd_pid(), "no /var/run/docker.pid")
        H.run("kill -TERM " .. pid)
        local deadline = os.time() + 40
        while alive(pid) and os.time() < deadline do
            H.sleep(0.1)
        end
        assert.is_false(alive(pid), "dockerd did not stop")
        assert.is_false(docker_up())

        -- a server that was running: it notices (its event stream ended) and refuses what needs Docker
        H.sleep(0.5)
        assert_unavailable(H.create_raw(live))
        assert_reads(live)

        -- a server started while Docker is down serves its store and refuses the rest
        local restarted = H.start({ dir = first.dir })
        assert_reads(restarted, id)
        assert.are.equal("Running", H.call(restarted, "GET", path(id)).json.status.state)
        assert_unavailable(H.call(restarted, "POST", path(id, "/pause")))
        assert_unavailable(H.create_raw(restarted))
        assert_unavailable(H.call(restarted, "DELETE", path(id)))
        local res = H.call(restarted, "PATCH", path(id, "/metadata"), { during = "outage" })
        assert.are.equal(200, res.status, res.body)
        assert.are.equal(2, H.call(restarted, "GET", "/v1/sandboxes").json.pagination.totalItems)
        res = H.call(restarted, "GET", path(id, "/endpoints/8080"))
        assert.are.equal(200, res.status, res.body)

        assert.is_true(ensure_dockerd(), "could not restart dockerd")

        -- both reconnect on their own
        local new_id = create_when_back(live)
        H.wait_state(live, new_id, "Running", 60)
        assert.are.equal(202, H.call(live, "POST", path(new_id, "/pause")).status)
        assert.is_true(H.inspect("sandbox-" .. new_id).State.Paused)
        assert.are.equal(204, H.call(live, "DELETE", path(new_id)).status)

        -- the old sandbox's container was stopped by the daemon's shutdown (exit 0); reconciliation sees it
        local sb = H.poll(restarted, id, function(s)
            return s and s.status.state == "Terminated"
        end, 30)
        assert.is_table(sb)
        assert.are.equal("Terminated", sb.status.state, H.json.encode(sb.status))
        assert.are.equal("outage", sb.metadata.during)
        H.assert_error(H.call(restarted, "POST", path(id, "/pause")), 409, "DOCKER::SANDBOX_NOT_RUNNING",
            "Sandbox is not in a running state.")
        local other = create_when_back(restarted)
        H.wait_state(restarted, other, "Running", 60)
        assert.are.equal(204, H.call(restarted, "DELETE", path(other)).status)
        assert.are.equal(204, H.call(restarted, "DELETE", path(id)).status)
        assert.is_false(H.container_exists("sandbox-" .. id))

        -- the event stream of the server that stayed up works again
        local watched = create_when_back(live)
        H.wait_state(live, watched, "Running", 60)
        H.run("docker pause sandbox-" .. watched)
        H.wait_state(live, watched, "Paused", 10)

        -- the restarted server expires `due` on time (a timer, not the 30 s sweep)
        assert.is_true(H.now() < due_at, "the outage took too long for the expiry check")
        local _, gone = H.poll(restarted, due, function(_, r)
            return r.status == 404
        end, due_at - os.time() + 4)
        assert.is_true(gone, "sandbox " .. due .. " was not expired at " .. H.iso(0) .. " (due " .. due_at .. ")")
        assert.is_false(H.container_exists("sandbox-" .. due))
    end)
end)
