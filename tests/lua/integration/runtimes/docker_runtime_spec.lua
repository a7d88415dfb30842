-- Integration spec of the Docker runtime (runtimes.docker: the runtime contract of lua/runtimes/README.md)
-- against the REAL daemon (unix:///var/run/docker.sock or $DOCKER_HOST), through the test-only blocking curl
-- client: connect, provision with the agent volume, address, pause/resume, list, watch, remove, and a
-- provisioning that fails. Needs: docker, curl, busybox-static, and the agent binary (build/execd/
-- opensandbox-execd, built with scripts/build.sh when missing).
--
-- Everything it makes is this run's own: containers carry opensandbox.io/instance=rtspec-{epoch}-{random},
-- the agent volume is named opensandbox-agent-rtspec-{epoch}-{random}-{tag} (so that it never touches the
-- agent volume a server on this daemon uses), and all of it is removed in setup/teardown, as is what an
-- earlier, interrupted run left (instances over 30 minutes old).
--
--   cd /work/main && lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua' tests/lua/integration/runtimes
package.path = "tests/lua/integration/?.lua;" .. package.path
-- the agent volume's single-flight event (common.sync) needs core.sync only to wait: never, with a blocking client
package.loaded["core.sync"] = package.loaded["core.sync"] or {}

local docker_runtime = require("runtimes.docker")
local agent_files = require("runtimes.agent_files")
local json = require("common.json")
local curl = require("support.curl_client")

local HOST = os.getenv("DOCKER_HOST") or "unix:///var/run/docker.sock"
local IMAGE = "local/busybox:latest"
local PREFIX = "rtspec-"
local RUN = PREFIX .. os.time() .. "-" .. string.format("%08x", math.random(0, 0x7fffffff))
local INSTANCE = RUN
local STALE_S = 1800 -- leftovers of runs older than this are removed

local function repo_root()
    local env = os.getenv("OPENSANDBOX_SOURCE")
    if env and env ~= "" then
        return env
    end
    local src = debug.getinfo(1, "S").source:gsub("^@", "")
    if src:sub(1, 1) ~= "/" then
        src = (os.getenv("PWD") or ".") .. "/" .. src
    end
    return src:match("^(.*)/tests/lua/integration/runtimes/[^/]+$") or "."
end
local ROOT = repo_root()

local function sh(cmd)
    return os.execute(cmd) == true
end

local function capture(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("a")
    p:close()
    return out
end

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function uuid()
    local h = {}
    for i = 1, 32 do
        h[i] = string.format("%x", math.random(0, 15))
    end
    local s = table.concat(h)
    return s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-4" .. s:sub(14, 16) .. "-a" .. s:sub(18, 20) .. "-" .. s:sub(21, 32)
end

local function inspect(ref)
    local doc = json.decode(capture("docker inspect " .. q(ref)))
    return type(doc) == "table" and doc[1] or nil
end

-- curl_client blocks until a response ends, and the event stream of a watch never ends by itself: this
-- client makes Docker end every /events stream one second from now (until=), so that watch() returns
local bounded_client = {
    request = function(opts)
        if opts.url:find("/events?", 1, true) and not opts.url:find("until=", 1, true) then
            opts.url = opts.url .. "&until=" .. (os.time() + 1)
        end
        return curl.request(opts)
    end,
}

local silent_log = { debug = function() end, info = function() end, warn = function() end, error = function() end }

local function new_runtime()
    local files = agent_files.new({ root = ROOT, exe = ROOT .. "/build/opensandbox-server" })
    -- this run's own agent volume (see the head of the file)
    local tag = files.tag
    files.tag = function(self)
        local t, err = tag(self)
        return t and (RUN .. "-" .. t), err
    end
    local rt = docker_runtime.new({ docker = { host = HOST, instance = INSTANCE, agent_delivery = "volume" },
        runtime = {} }, {
        client = bounded_client,
        log = silent_log,
        agent_files = files,
        core = { now_s = os.time, uuid = { v4 = uuid } },
    })
    -- the once-per-run removal of other bundles' unused agent volumes is the server's business, not this spec's
    rt.agent.volumes_pruned = true
    return rt, files
end

-- removes this run's containers, volumes and fill images, and those of runs older than STALE_S
local function cleanup(all_of_this_run)
    local now = os.time()
    local function ours(name)
        local epoch = name:match(PREFIX:gsub("%p", "%%%0") .. "(%d+)%-")
        return epoch and ((all_of_this_run and name:find(RUN, 1, true)) or tonumber(epoch) < now - STALE_S)
    end
    local out = capture("docker ps -a --filter label=opensandbox.io/instance --format "
        .. q('{{.ID}} {{.Label "opensandbox.io/instance"}}'))
    for cid, instance in out:gmatch("(%x+) (%S+)") do
        if instance:sub(1, #PREFIX) == PREFIX and ours(instance) then
            sh("docker rm -f -v " .. cid .. " >/dev/null 2>&1")
        end
    end
    local fills = capture("docker ps -a --format '{{.Names}}' --filter name=opensandbox-agent-" .. PREFIX)
    for name in fills:gmatch("%S+") do
        if ours(name) then
            sh("docker rm -f " .. q(name) .. " >/dev/null 2>&1")
        end
    end
    for name in capture("docker volume ls -q --filter name=opensandbox-agent-" .. PREFIX):gmatch("%S+") do
        if ours(name) then
            sh("docker volume rm " .. q(name) .. " >/dev/null 2>&1")
        end
    end
    for ref in capture("docker images --format '{{.Repository}}:{{.Tag}}' opensandbox-agent-fill"):gmatch("%S+") do
        if ref:find(":opensandbox-agent-" .. PREFIX, 1, true) and ours(ref) then
            sh("docker rmi -f " .. q(ref) .. " >/dev/null 2>&1")
        end
    end
end

local function sandbox_for(id)
    local now_us = os.time() * 1000000 + 123456
    return {
        id = id,
        created_us = now_us,
        expires_us = now_us + 600 * 1000000,
        metadata = { team = "infra", run = RUN },
        principal = "tenant-a",
        access_token = "tok-" .. id:sub(1, 8),
    }
end

local SPEC = { image = { uri = IMAGE }, entrypoint = { "sleep", "300" }, env = { { "FOO", "bar" } } }

local function record_of(id, placed)
    return { id = id, handle = placed.handle, place = placed.place }
end

describe("docker runtime against the real daemon #integration", function()
    local rt, files

    setup(function()
        assert(sh("tests/images/build-busybox.sh >/dev/null"), "building " .. IMAGE .. " failed")
        local agent = io.open(ROOT .. "/build/execd/opensandbox-execd", "rb")
        if agent then
            agent:close()
        else
            assert(sh("cd " .. q(ROOT) .. " && sh scripts/build.sh >/dev/null"), "building the agent failed")
        end
        cleanup(true)
        rt, files = new_runtime()
    end)

    teardown(function()
        cleanup(true)
    end)

    it("connects and tells the daemon's CPU count", function()
        local info = assert(rt:connect())
        assert.are.equal(tonumber(capture("docker info -f '{{.NCPU}}'")), info.ncpu)
        assert.is_true(info.ncpu >= 1)
    end)

    it("provisions, addresses, pauses, resumes, lists, watches and removes a sandbox", function()
        local t0 = os.time() - 1
        local id = uuid()
        local sb = sandbox_for(id)
        local placed, perr = rt:provision(sb, SPEC)
        assert(placed, tostring(perr))
        local cid = placed.handle
        assert.is_truthy(cid:match("^%x+$"))
        assert.are.same({ state = "Running", reason = "CONTAINER_RUNNING", message = "Sandbox container is running." },
            { state = placed.status.state, reason = placed.status.reason, message = placed.status.message })
        assert.is_truthy(placed.steps.image_ms and placed.steps.agent_volume_ms and placed.steps.start_ms)

        -- what Docker made: the named container of this instance, mounting the agent volume read-only, NoCopy
        local raw = assert(inspect(cid))
        assert.are.equal("/sandbox-" .. id, raw.Name)
        assert.are.equal(INSTANCE, raw.Config.Labels["opensandbox.io/instance"])
        assert.are.equal("tenant-a", raw.Config.Labels["opensandbox.io/principal"])
        local volume = "opensandbox-agent-" .. assert(files:tag())
        assert.are.equal(1, #raw.Mounts)
        local m = raw.Mounts[1]
        assert.are.same({ "volume", volume, "/opt/opensandbox", false }, { m.Type, m.Name, m.Destination, m.RW })
        local hm = raw.HostConfig.Mounts[1]
        assert.is_true(hm.ReadOnly)
        assert.is_true(hm.VolumeOptions.NoCopy)
        -- the volume holds the agent's files only, and nothing of its fill is left
        local f = assert(files:get())
        assert.are.equal(".\n./bootstrap.sh\n./execd\n", capture("docker exec " .. cid
            .. " sh -c 'cd /opt/opensandbox && find . | sort'"))
        assert.are.equal(f.bootstrap, capture("docker exec " .. cid .. " cat /opt/opensandbox/bootstrap.sh"))
        assert.are.equal(#f.execd, tonumber(capture("docker exec " .. cid .. " stat -c %s /opt/opensandbox/execd")))
        assert.is_false(sh("docker inspect " .. q(volume .. "-fill") .. " >/dev/null 2>&1"), "no fill container")
        assert.are.equal("", capture("docker images -q " .. q("opensandbox-agent-fill:" .. volume)))
        local touched = capture("docker exec " .. cid .. " touch /opt/opensandbox/x")
        assert.is_truthy(touched:find("Read-only file system", 1, true), touched)

        -- the place is where Docker put it; addresses follow from it
        local bridge = raw.NetworkSettings.Networks.bridge
        local p8080 = math.tointeger(tonumber(raw.NetworkSettings.Ports["8080/tcp"][1].HostPort))
        local p44772 = math.tointeger(tonumber(raw.NetworkSettings.Ports["44772/tcp"][1].HostPort))
        assert.are.same({ ip = bridge.IPAddress, ports = { ["8080"] = p8080, ["44772"] = p44772 }, agent_port = 44772 },
            placed.place)
        local rec = record_of(id, placed)
        assert.are.same({ host = "127.0.0.1", port = p8080 }, rt:address(rec, 8080, "public"))
        assert.are.same({ host = "127.0.0.1", port = p44772, path = "/proxy/3000", agent = true },
            rt:address(rec, 3000, "public"))
        assert.are.same({ host = bridge.IPAddress, port = 8080 }, rt:address(rec, 8080, "proxy"))
        -- the agent from the volume answers on its public address, with the sandbox's token
        local agent = rt:address(rec, 44772, "public")
        local answered
        for _ = 1, 100 do
            local res = curl.request({ method = "GET", url = "http://" .. agent.host .. ":" .. agent.port .. agent.path
                .. "/ping", headers = { ["X-EXECD-ACCESS-TOKEN"] = sb.access_token }, timeout = 2 })
            if res and res.status == 200 then
                answered = true
                break
            end
            os.execute("sleep 0.1")
        end
        assert.is_true(answered, "the agent answers /ping")

        -- the bootstrap gives the token to the agent only: Docker has it, the user's process (pid 1) does not
        local env_found
        for _, e in ipairs(raw.Config.Env) do
            env_found = env_found or e == "EXECD_ACCESS_TOKEN=" .. sb.access_token
        end
        assert.is_true(env_found)
        local environ = capture("docker exec " .. cid .. " cat /proc/1/environ"):gsub("%z", "\n")
        assert.is_truthy(environ:find("FOO=bar\n", 1, true), environ)
        assert.is_truthy(environ:find("OPENSANDBOX_EXECD_PORT=44772\n", 1, true), environ)
        assert.is_falsy(environ:find("EXECD_ACCESS_TOKEN", 1, true), environ)
        assert.are.equal("sleep 300 ", (capture("docker exec " .. cid .. " cat /proc/1/cmdline"):gsub("%z", " ")))

        -- pause / resume, as Docker sees them
        assert.is_true(rt:pause(rec))
        assert.are.equal("true\n", capture("docker inspect -f '{{.State.Paused}}' " .. cid))
        local _, again = rt:pause(rec)
        assert.are.equal("conflict", again.kind)
        assert.is_true(rt:resume(rec))
        assert.are.equal("false running\n", capture("docker inspect -f '{{.State.Paused}} {{.State.Status}}' " .. cid))

        -- listed with its identity decoded from the labels
        local listed
        for _, e in ipairs(assert(rt:list())) do
            assert.are.equal(INSTANCE, inspect(e.handle).Config.Labels["opensandbox.io/instance"])
            if e.id == id then
                listed = e
            end
        end
        assert.is_truthy(listed)
        assert.are.equal(cid, listed.handle)
        assert.are.same(placed.place, listed.place)
        assert.are.equal("Running", listed.status.state)
        assert.are.same({
            id = id, created_us = sb.created_us, expires_us = sb.expires_us, image_uri = IMAGE,
            entrypoint = { "sleep", "300" }, metadata = sb.metadata, principal = "tenant-a",
            access_token = sb.access_token,
        }, listed.sandbox)

        -- removed behind the runtime's back: the watch reports the status changes, then the sandbox gone
        assert(sh("docker rm -f " .. cid .. " >/dev/null"))
        rt.last_event_s = t0
        local changes = {}
        local wres, werr = rt:watch(function(c)
            if c.handle == cid then
                assert.are.equal(id, c.id)
                changes[#changes + 1] = c.gone and "gone" or (c.status.state .. " " .. c.status.message)
            end
        end)
        assert.is_nil(wres)
        assert.are.equal("unavailable", werr.kind)
        assert.are.same({
            "Running Sandbox container is running.", -- start
            "Paused Sandbox container is paused.",
            "Running Sandbox container is running.", -- unpause
            "Failed Sandbox container exited with code 137.", -- docker rm -f kills it
            "gone",
        }, changes)
        assert.is_true(rt.last_event_s >= t0)

        -- remove: gone already counts as removed, and again
        assert.is_true(rt:remove(rec))
        assert.is_true(rt:remove(rec))
        for _, e in ipairs(assert(rt:list())) do
            assert.are_not.equal(id, e.id)
        end
    end)

    it("removes a sandbox (a paused one too), and a second remove is still a success", function()
        local id = uuid()
        local placed = assert(rt:provision(sandbox_for(id), SPEC))
        local rec = record_of(id, placed)
        assert.is_true(rt:pause(rec))
        assert.is_true(rt:remove(rec))
        assert.is_false(sh("docker inspect " .. placed.handle .. " >/dev/null 2>&1"))
        assert.is_true(rt:remove(rec))
        -- the agent volume outlives its sandboxes
        assert.is_true(sh("docker volume inspect " .. q("opensandbox-agent-" .. assert(files:tag())) .. " >/dev/null"))
    end)

    -- API.md §6.5 step 4: the service provisions again a sandbox whose provisioning a crash cut short
    it("provisions again a sandbox a crash cut between create and start: takes its container, never a second",
        function()
            local id = uuid()
            -- the server dies right after the create (the start never comes): the engine's start raises
            local real_start = rt.engine.start
            rt.engine.start = function()
                error("killed")
            end
            local ok = pcall(rt.provision, rt, sandbox_for(id), SPEC)
            rt.engine.start = real_start
            assert.is_false(ok)
            assert.are.equal("created", capture("docker inspect -f '{{.State.Status}}' sandbox-" .. id):match("%S+"))
            local cid = capture("docker inspect -f '{{.Id}}' sandbox-" .. id):match("%S+")

            local placed = assert(rt:provision(sandbox_for(id), SPEC))
            assert.are.equal(cid, placed.handle)
            assert.are.equal("Running", placed.status.state)
            assert.are.equal("running", capture("docker inspect -f '{{.State.Status}}' " .. cid):match("%S+"))
            -- and once more, now that it runs: taken as it is
            local again = assert(rt:provision(sandbox_for(id), SPEC))
            assert.are.equal(cid, again.handle)
            assert.are.equal(cid:sub(1, 12), capture("docker ps -aq --filter label=opensandbox.io/id=" .. id)
                :match("%S+"))
            assert.are.equal(1, select(2, capture("docker ps -aq --filter label=opensandbox.io/id=" .. id)
                :gsub("%S+", "")))
            assert.is_true(rt:remove(record_of(id, placed)))
        end)

    it("refuses to take a container of the sandbox's name that is another sandbox's, and leaves it", function()
        local id, other = uuid(), uuid()
        local placed = assert(rt:provision(sandbox_for(other), SPEC))
        local sb = sandbox_for(id)
        sb.name = "sandbox-" .. other
        local got, err = rt:provision(sb, SPEC)
        assert.is_nil(got)
        assert.are.equal("create", err.step)
        assert.are.equal("running", capture("docker inspect -f '{{.State.Status}}' " .. placed.handle):match("%S+"))
        assert.is_true(rt:remove(record_of(other, placed)))
    end)

    it("fails a provisioning of a missing image at step image and leaves no container", function()
        local id = uuid()
        local uri = "local/opensandbox-missing-" .. RUN .. ":1"
        local placed, err = rt:provision(sandbox_for(id), { image = { uri = uri }, entrypoint = { "sleep", "300" },
            env = {} })
        assert.is_nil(placed)
        assert.are.equal("image", err.step)
        local head = "Failed to pull image '" .. uri .. "': "
        assert.are.equal(head, err.message:sub(1, #head))
        assert.is_true(#err.message > #head, err.message) -- Docker's words follow
        assert.are.equal("", capture("docker ps -aq --filter label=opensandbox.io/id=" .. id))
        assert.is_false(sh("docker inspect sandbox-" .. id .. " >/dev/null 2>&1"))
    end)
end)
