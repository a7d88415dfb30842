-- Integration spec: snapshots on the real server and Docker (upstream sandbox-lifecycle.yml, "Snapshots";
-- lua/sandbox/snapshots.lua): a snapshot of a running busybox sandbox becomes Ready while the source keeps
-- running; a sandbox created from it has the source's files and an agent that works; list filters; delete
-- keeps the image while a sandbox made from it lives; snapshots survive restarts and a restart settles those
-- left Creating; another tenant gets 404 everywhere; bad input is a 400 and makes no image and no container.
--
--   flock /tmp/osb-docker.lock lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' \
--       tests/lua/integration/lifecycle/snapshot_spec.lua
local H = require("lifecycle.helpers")
local F = require("hooks.fixtures")
local json = H.json

local REPO = "opensandbox-snapshots"

-- ids of the snapshot images on the daemon
local function snapshot_images()
    local out = H.run("docker images " .. REPO .. " --format '{{.Tag}}'")
    local tags = {}
    for t in out:gmatch("%S+") do
        tags[#tags + 1] = t
    end
    table.sort(tags)
    return tags
end

local function image_exists(tag)
    local _, ok = H.run("docker image inspect " .. REPO .. ":" .. tag)
    return ok
end

local function remove_snapshot_images()
    H.run("docker ps -aq --filter ancestor=" .. REPO .. " | xargs -r docker rm -f -v")
    for _, t in ipairs(snapshot_images()) do
        H.run("docker rmi -f " .. REPO .. ":" .. t)
    end
end

-- polls GET /v1/snapshots/{id} until its state is `state` (nil: until 404); returns the snapshot
local function wait_snapshot(srv, id, state, timeout, call)
    call = call or function(method, path)
        return H.call(srv, method, path)
    end
    local deadline = os.time() + (timeout or 60)
    local res
    repeat
        res = call("GET", "/v1/snapshots/" .. id)
        if (state == nil and res.status == 404) or (res.status == 200 and res.json.status.state == state) then
            return res.json
        end
        H.sleep(0.1)
    until os.time() > deadline
    error(string.format("snapshot %s did not reach %s: %d %s", id, tostring(state), res.status, res.body))
end

-- runs `command` through the sandbox's agent (the SDK's POST /command, server-sent events); returns the text
-- the agent streamed back (stdout lines appear in it)
local function agent_run(srv, id, command)
    local ep = H.call(srv, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772").json
    local headers = { ["X-EXECD-ACCESS-TOKEN"] = ep.headers["X-EXECD-ACCESS-TOKEN"],
        ["Content-Type"] = "application/json" }
    for _ = 1, 100 do -- the agent starts with the container
        local ping = H.curl({ url = "http://" .. ep.endpoint .. "/ping", headers = headers, timeout = 2 })
        if ping and ping.status == 200 then
            break
        end
        H.sleep(0.1)
    end
    local res = H.curl({ method = "POST", url = "http://" .. ep.endpoint .. "/command", headers = headers,
        body = json.encode({ command = command }), timeout = 30 })
    assert(res and res.status == 200, "agent command failed: " .. tostring(res and res.status))
    return res.body
end

describe("snapshots #integration #docker", function()
    setup(function()
        H.ensure_image()
        remove_snapshot_images()
    end)

    teardown(function()
        H.stop_all()
        remove_snapshot_images()
    end)

    it("snapshots a running sandbox, which keeps running, and creates a working sandbox from it", function()
        local srv = H.start()
        local src, before = H.create_running(srv)
        assert.matches("written%-before", agent_run(srv, src, "echo written-before > /root/marker; "
            .. "mkdir -p /data && echo deep > /data/file && echo written-before"))

        local res = H.call(srv, "POST", "/v1/sandboxes/" .. src .. "/snapshots", { name = "before import" })
        assert.are.equal(202, res.status, res.body)
        local snap = res.json
        assert.are.equal("Creating", snap.status.state)
        assert.are.equal(src, snap.sandboxId)
        assert.are.equal("before import", snap.name)
        assert.matches(H.ISO_PATTERN, snap.createdAt)
        assert.are.equal("/v1/snapshots/" .. snap.id, res.headers["location"] or res.headers["Location"])
        local ready = wait_snapshot(srv, snap.id, "Ready", 60)
        assert.are.equal("snapshot_ready", ready.status.reason)

        -- the image: ours, labelled, without the source's identity or agent token
        local img = json.decode(H.run("docker image inspect " .. REPO .. ":" .. snap.id))[1]
        local labels = img.Config.Labels
        assert.are.equal(snap.id, labels["opensandbox.io/snapshot-id"])
        assert.are.equal(src, labels["opensandbox.io/snapshot-of"])
        assert.is_true(labels["opensandbox.io/instance"] ~= nil and labels["opensandbox.io/instance"] ~= "")
        assert.are.equal("", labels["opensandbox.io/id"])
        assert.are.equal("", labels["opensandbox.io/expires-at"])
        for _, e in ipairs(img.Config.Env) do
            assert.is_nil(e:match("^EXECD_ACCESS_TOKEN=.+"), "the source's agent token is not in the image")
        end

        -- the source kept running (never paused: a pause would have been a transition, seen in its status)
        local sb = H.call(srv, "GET", "/v1/sandboxes/" .. src).json
        assert.are.equal("Running", sb.status.state)
        assert.are.equal(before.status.lastTransitionAt, sb.status.lastTransitionAt)
        local c = H.inspect("sandbox-" .. src)
        assert.is_true(c.State.Running)
        assert.is_false(c.State.Paused)

        -- a sandbox from the snapshot: no image, default entrypoint, the source's files, a working agent
        res = H.call(srv, "POST", "/v1/sandboxes", { snapshotId = snap.id, timeout = 600, resourceLimits = {} })
        assert.are.equal(202, res.status, res.body)
        assert.is_nil(res.json.image)
        assert.is_nil(res.json.snapshotId)
        local restored = res.json.id
        sb = H.wait_state(srv, restored, "Running", 90)
        assert.are.equal(snap.id, sb.snapshotId)
        assert.is_nil(sb.image)
        assert.are.same({ "tail", "-f", "/dev/null" }, sb.entrypoint)
        local out = agent_run(srv, restored, "cat /root/marker /data/file; echo agent-$((6*7))")
        assert.matches("written%-before", out)
        assert.matches("deep", out)
        assert.matches("agent%-42", out)
        -- its container: our image, its own identity and token (the source's are not inherited)
        c = H.inspect("sandbox-" .. restored)
        assert.are.equal(REPO .. ":" .. snap.id, c.Config.Image)
        assert.are.equal(restored, c.Config.Labels["opensandbox.io/id"])
        assert.are.equal(snap.id, c.Config.Labels["opensandbox.io/snapshot-id"])
        assert.are.equal("", c.Config.Labels["opensandbox.io/manual-cleanup"] or "")
        local tokens = 0
        for _, e in ipairs(c.Config.Env) do
            if e:match("^EXECD_ACCESS_TOKEN=.") then
                tokens = tokens + 1
            end
        end
        assert.are.equal(1, tokens)
        -- the agent of the source still answers, with its own token
        assert.matches("still", agent_run(srv, src, "echo still"))

        -- a custom entrypoint runs too
        local custom = H.create_running(srv, { image = json.null, snapshotId = snap.id,
            entrypoint = { "sh", "-c", "cat /root/marker > /tmp/copy; sleep 600" } })
        assert.matches("written%-before", agent_run(srv, custom, "cat /tmp/copy"))

        -- list: by source, by state
        res = H.call(srv, "GET", "/v1/snapshots?sandboxId=" .. src)
        assert.are.equal(200, res.status, res.body)
        assert.are.equal(1, res.json.pagination.totalItems)
        assert.are.equal(snap.id, res.json.items[1].id)
        assert.are.equal(0, H.call(srv, "GET", "/v1/snapshots?sandboxId=" .. restored).json.pagination.totalItems)
        assert.are.equal(1, H.call(srv, "GET", "/v1/snapshots?state=ready&state=Failed").json.pagination.totalItems)
        assert.are.equal(0, H.call(srv, "GET", "/v1/snapshots?state=Creating").json.pagination.totalItems)

        -- deleting the source does not delete its snapshot
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. src).status)
        assert.are.equal("Ready", H.call(srv, "GET", "/v1/snapshots/" .. snap.id).json.status.state)
        assert.is_true(image_exists(snap.id))

        -- deleting the snapshot while sandboxes made from it live: Deleting, the image stays until the last
        -- of them is gone, creates from it are refused
        res = H.call(srv, "DELETE", "/v1/snapshots/" .. snap.id)
        assert.are.equal(204, res.status, res.body)
        local d = H.call(srv, "GET", "/v1/snapshots/" .. snap.id).json
        assert.are.equal("Deleting", d.status.state)
        assert.matches("still used by 2 sandboxes", d.status.message)
        assert.is_true(image_exists(snap.id))
        H.assert_error(H.call(srv, "POST", "/v1/sandboxes", { snapshotId = snap.id, resourceLimits = {} }), 409,
            "SNAPSHOT::NOT_READY", "Snapshot " .. snap.id .. " is not ready for restore.")
        assert.are.equal("Running", H.call(srv, "GET", "/v1/sandboxes/" .. restored).json.status.state)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. restored).status)
        H.sleep(6)
        assert.is_true(image_exists(snap.id), "still used by the other sandbox")
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. custom).status)
        wait_snapshot(srv, snap.id, nil, 30)
        assert.is_false(image_exists(snap.id))
        H.assert_error(H.call(srv, "DELETE", "/v1/snapshots/" .. snap.id), 404, "SNAPSHOT::NOT_FOUND",
            "Snapshot " .. snap.id .. " not found.")
    end)

    it("keeps snapshots across restarts, and settles those a restart left Creating", function()
        local srv = H.start()
        local src = H.create_running(srv)
        local snap = H.call(srv, "POST", "/v1/sandboxes/" .. src .. "/snapshots").json
        wait_snapshot(srv, snap.id, "Ready", 60)
        srv:stop()

        -- two snapshots the server was capturing when it died: one whose commit had finished in dockerd,
        -- one whose had not (written into its store as the server would have)
        local store = assert(require("sandbox.store").open(srv.dir .. "/state/opensandbox.db"))
        local done, lost = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
        for i, id in ipairs({ done, lost }) do
            local now = math.floor(H.now() * 1e6) + i
            assert(store:put_snapshot({ id = id, sandbox_id = src, state = "Creating", reason = "snapshot_accepted",
                message = "Snapshot creation accepted.", transition_us = now, created_us = now }))
        end
        store:close()
        local out, ok = H.run("docker commit --pause=false sandbox-" .. src .. " " .. REPO .. ":" .. done)
        assert.is_true(ok, out)

        local srv2 = H.start({ dir = srv.dir })
        local s = H.call(srv2, "GET", "/v1/snapshots/" .. snap.id)
        assert.are.equal(200, s.status, s.body)
        assert.are.equal("Ready", s.json.status.state)
        local a = H.call(srv2, "GET", "/v1/snapshots/" .. done).json
        assert.are.equal("Ready", a.status.state)
        assert.matches("had finished when the server restarted", a.status.message)
        local b = H.call(srv2, "GET", "/v1/snapshots/" .. lost).json
        assert.are.equal("Failed", b.status.state)
        assert.are.equal("snapshot_interrupted", b.status.reason)
        assert.are.equal("Snapshot creation was interrupted by a server restart.", b.status.message)
        -- a sandbox from the snapshot made before the restart works; a deletion survives a restart too
        local restored = H.create_running(srv2, { image = json.null, snapshotId = snap.id })
        assert.are.equal(snap.id, H.call(srv2, "GET", "/v1/sandboxes/" .. restored).json.snapshotId)
        assert.are.equal(204, H.call(srv2, "DELETE", "/v1/snapshots/" .. snap.id).status)
        assert.are.equal(204, H.call(srv2, "DELETE", "/v1/snapshots/" .. lost).status)
        assert.are.equal(404, H.call(srv2, "GET", "/v1/snapshots/" .. lost).status)
        srv2:stop()
        -- the sandbox made from it is removed behind the server's back; the restarted server finishes the
        -- deletion at start-up
        H.run("docker rm -f -v sandbox-" .. restored)
        local srv3 = H.start({ dir = srv.dir })
        wait_snapshot(srv3, snap.id, nil, 30)
        assert.is_false(image_exists(snap.id))
        assert.are.equal("Ready", H.call(srv3, "GET", "/v1/snapshots/" .. done).json.status.state)
        assert.are.equal(204, H.call(srv3, "DELETE", "/v1/snapshots/" .. done).status)
        assert.is_false(image_exists(done))
        assert.are.equal(204, H.call(srv3, "DELETE", "/v1/sandboxes/" .. src).status)
    end)

    it("shows a tenant's snapshots to no other tenant (404 everywhere), and all to an admin", function()
        local srv = F.start({})
        local a = F.create(srv, "a")
        F.wait_state(srv, a, "Running")
        local res = F.call(srv, "a", "POST", "/v1/sandboxes/" .. a .. "/snapshots", {})
        assert.are.equal(202, res.status, res.body)
        local sid = res.json.id
        wait_snapshot(srv, sid, "Ready", 60, function(method, path)
            return F.call(srv, "a", method, path)
        end)
        local function not_found(r)
            H.assert_error(r, 404, "SNAPSHOT::NOT_FOUND", "Snapshot " .. sid .. " not found.")
        end
        not_found(F.call(srv, "b", "GET", "/v1/snapshots/" .. sid))
        not_found(F.call(srv, "b", "DELETE", "/v1/snapshots/" .. sid))
        not_found(F.call(srv, "b", "POST", "/v1/sandboxes", { snapshotId = sid, resourceLimits = {} }))
        assert.are.equal(0, F.call(srv, "b", "GET", "/v1/snapshots").json.pagination.totalItems)
        -- b cannot snapshot a's sandbox either, nor run a's snapshot by naming its image
        H.assert_error(F.call(srv, "b", "POST", "/v1/sandboxes/" .. a .. "/snapshots"), 404,
            "DOCKER::SANDBOX_NOT_FOUND", "Sandbox " .. a .. " not found.")
        res = F.call(srv, "b", "POST", "/v1/sandboxes", H.body({ image = { uri = REPO .. ":" .. sid } }))
        H.assert_error(res, 400, "SANDBOX::INVALID_PARAMETER", function(m)
            return m:find("names a snapshot image", 1, true) ~= nil
        end)
        assert.are.equal("Ready", F.call(srv, "a", "GET", "/v1/snapshots/" .. sid).json.status.state)
        assert.are.equal(1, F.call(srv, "a", "GET", "/v1/snapshots").json.pagination.totalItems)
        assert.are.equal(sid, F.call(srv, "admin", "GET", "/v1/snapshots").json.items[1].id)
        assert.are.equal(204, F.call(srv, "a", "DELETE", "/v1/snapshots/" .. sid).status)
        assert.is_false(image_exists(sid))
        F.cleanup()
    end)

    it("answers bad input and wrong states with clear errors, and makes no image and no container", function()
        local srv = H.start()
        local src = H.create_running(srv)
        local images, containers = snapshot_images(), H.labelled_containers()
        local function bad(res, status, code, message)
            H.assert_error(res, status, code, message)
        end
        local path = "/v1/sandboxes/" .. src .. "/snapshots"
        bad(H.call(srv, "POST", path, "[1]"), 400, "SANDBOX::INVALID_PARAMETER", "Request body must be a JSON object.")
        bad(H.call(srv, "POST", path, "{"), 400, "SANDBOX::INVALID_PARAMETER", "Request body must be a JSON object.")
        bad(H.call(srv, "POST", path, { name = "" }), 400, "SANDBOX::INVALID_PARAMETER", "name must not be empty.")
        bad(H.call(srv, "POST", path, { name = 5 }), 400, "SANDBOX::INVALID_PARAMETER", "name must be a string.")
        bad(H.call(srv, "POST", "/v1/sandboxes/nope/snapshots"), 404, "DOCKER::SANDBOX_NOT_FOUND",
            "Sandbox nope not found.")
        assert.are.equal(202, H.call(srv, "POST", "/v1/sandboxes/" .. src .. "/pause").status)
        bad(H.call(srv, "POST", path), 409, "SNAPSHOT::INVALID_SOURCE_STATE",
            "Snapshot can only be created from a Running sandbox.")
        assert.are.equal(202, H.call(srv, "POST", "/v1/sandboxes/" .. src .. "/resume").status)
        bad(H.call(srv, "GET", "/v1/snapshots/nope"), 404, "SNAPSHOT::NOT_FOUND", "Snapshot nope not found.")
        bad(H.call(srv, "DELETE", "/v1/snapshots/nope"), 404, "SNAPSHOT::NOT_FOUND", "Snapshot nope not found.")
        bad(H.call(srv, "GET", "/v1/snapshots?pageSize=0"), 400, "SANDBOX::INVALID_PARAMETER",
            "pageSize must be an integer between 1 and 200.")
        -- creates from a snapshot
        local function create(body)
            return H.call(srv, "POST", "/v1/sandboxes", body)
        end
        bad(create({ snapshotId = "nope", resourceLimits = {} }), 404, "SNAPSHOT::NOT_FOUND",
            "Snapshot nope not found.")
        bad(create({ snapshotId = 7, resourceLimits = {} }), 400, "SANDBOX::INVALID_PARAMETER",
            "snapshotId must be a string.")
        bad(create({ snapshotId = "../x", resourceLimits = {} }), 400, "SANDBOX::INVALID_PARAMETER",
            "snapshotId must be 1-128 characters of letters, digits, '_', '.' or '-'.")
        bad(create(H.body({ snapshotId = "s" })), 400, "SANDBOX::INVALID_PARAMETER",
            "image and snapshotId are mutually exclusive: provide exactly one.")
        bad(create({ snapshotId = "s" }), 400, "SANDBOX::INVALID_PARAMETER", "resourceLimits is required.")
        bad(create(H.body({ image = { uri = "docker.io/library/" .. REPO .. ":x" } })), 400,
            "SANDBOX::INVALID_PARAMETER", "image.uri 'docker.io/library/" .. REPO .. ":x' names a snapshot image; "
            .. "create a sandbox from a snapshot with snapshotId.")
        -- a snapshot still Creating cannot be deleted nor created from
        local res = H.call(srv, "POST", path, {})
        assert.are.equal(202, res.status, res.body)
        local sid = res.json.id
        local del = H.call(srv, "DELETE", "/v1/snapshots/" .. sid)
        if del.status == 409 then -- (the commit of a small busybox container may be done already)
            H.assert_error(del, 409, "SNAPSHOT::INVALID_STATE",
                "Snapshot " .. sid .. " is still being created and cannot be deleted.")
            wait_snapshot(srv, sid, "Ready", 60)
            assert.are.equal(204, H.call(srv, "DELETE", "/v1/snapshots/" .. sid).status)
        else
            assert.are.equal(204, del.status, del.body)
        end
        wait_snapshot(srv, sid, nil, 30)
        -- nothing of the refused requests is left: the same images and containers as before
        assert.are.same(images, snapshot_images())
        assert.are.same(containers, H.labelled_containers())
        assert.are.equal(1, H.call(srv, "GET", "/v1/sandboxes").json.pagination.totalItems)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. src).status)
    end)
end)
