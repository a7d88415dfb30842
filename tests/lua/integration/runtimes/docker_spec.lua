-- Integration spec of the Docker adapter against the REAL daemon (unix:///var/run/docker.sock or
-- $DOCKER_HOST), through the test-only blocking curl client. Needs: docker, curl, busybox-static,
-- docker-registry, apache2-utils. Every container it makes carries the label opensandbox.test=1.
--
--   cd /work/main && lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua' tests/lua/integration
package.path = "tests/lua/integration/?.lua;" .. package.path

local docker = require("runtimes.docker.engine")
local tar = require("runtimes.docker.tar")
local json = require("common.json")
local curl = require("support.curl_client")

local HOST = os.getenv("DOCKER_HOST") or "unix:///var/run/docker.sock"
local IMAGE = "local/busybox:latest"
local REGISTRY_PORT = os.getenv("REGISTRY_PORT") or "5055"
local REGISTRY = "127.0.0.1:" .. REGISTRY_PORT
local TEST_LABEL = { ["opensandbox.test"] = "1" }

local function sh(cmd)
    local ok = os.execute(cmd)
    return ok == true
end

local function capture(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("a")
    p:close()
    return out
end

local function uuid()
    local h = {}
    for i = 1, 32 do
        h[i] = string.format("%x", math.random(0, 15))
    end
    local s = table.concat(h)
    return s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-4" .. s:sub(14, 16) .. "-a" .. s:sub(18, 20) .. "-" .. s:sub(21, 32)
end

local function now_us()
    return os.time() * 1000000
end

local silent_log = { debug = function() end, info = function() end, warn = function() end, error = function() end }

local CONFIG = {
    network_mode = "bridge",
    host_ip = "127.0.0.1",
    drop_capabilities = { "NET_RAW", "SYS_ADMIN", "MKNOD" },
    no_new_privileges = true,
    pids_limit = 256,
}

local function adapter(config)
    return docker.new({
        client = curl,
        host = HOST,
        api_timeout = 60,
        log = silent_log,
        config = config or CONFIG,
        sleep = function(s)
            os.execute("sleep " .. s)
        end,
    })
end

local BOOTSTRAP = '#!/bin/sh\necho "booted $*" >> /tmp/boot.log\nexec "$@"\n'

local function agent_tar()
    local w = tar.new()
    w:dir("opt/opensandbox", { mode = tonumber("755", 8) })
    w:file("opt/opensandbox/bootstrap.sh", BOOTSTRAP, { mode = tonumber("755", 8) })
    w:dir("opt/test", { mode = tonumber("755", 8) })
    w:file("opt/test/run.sh", "#!/bin/sh\necho ran > /tmp/run.log\nexec sleep 300\n", { mode = tonumber("755", 8) })
    return w:finish()
end

local function spec_for(id, overrides)
    local spec = {
        id = id,
        image_uri = IMAGE,
        entrypoint = { "/opt/test/run.sh" },
        env = { { "FOO", "bar" }, { "EMPTY", "" } },
        created_us = now_us(),
        expires_us = now_us() + 600 * 1000000,
        metadata = { team = "infra" },
        extra_labels = TEST_LABEL,
    }
    for k, v in pairs(overrides or {}) do
        spec[k] = v
    end
    return spec
end

-- the raw inspect document, to check what Docker really stored
local function raw_inspect(cid)
    local res = assert(curl.request({
        method = "GET",
        url = "http://docker/v1.41/containers/" .. cid .. "/json",
        unix_socket = HOST:match("^unix://(.+)$"),
    }))
    return assert(json.decode(res.body))
end

local function wait_for(a, cid, pred)
    for _ = 1, 100 do
        local ins = assert(a:inspect(cid))
        if pred(ins) then
            return ins
        end
        os.execute("sleep 0.1")
    end
    error("condition not reached for " .. cid)
end

local function remove_test_containers(a)
    local list = assert(a:list({ "opensandbox.test=1" }))
    for _, c in ipairs(list) do
        assert(a:remove(c.id))
    end
    -- containers without opensandbox.io/id (none expected) are removed by the CLI
    sh("docker ps -aq --filter label=opensandbox.test=1 | xargs -r docker rm -f >/dev/null")
end

describe("docker adapter against the real daemon #integration", function()
    local a

    setup(function()
        assert(sh("tests/images/build-busybox.sh >/dev/null"), "building " .. IMAGE .. " failed")
        a = adapter()
        remove_test_containers(a)
    end)

    teardown(function()
        remove_test_containers(a)
    end)

    it("talks to the daemon: ping, version, info", function()
        assert.is_true(a:ping())
        local v = assert(a:version())
        assert.is_truthy(v.api_version)
        local info = assert(a:info())
        assert.is_true(info.ncpu >= 1)
        assert.is_true(info.runtimes.runc ~= nil or next(info.runtimes) ~= nil)
    end)

    it("finds a local image without pulling", function()
        assert.is_true(a:ensure_image(IMAGE))
    end)

    it("runs the full container lifecycle in bridge mode", function()
        local t0 = os.time() - 1
        local id = uuid()
        local spec = spec_for(id, { nano_cpus = 500000000, memory = 64 * 1024 * 1024 })
        local cid = assert(a:create_container(spec))
        assert.is_truthy(cid:match("^%x+$"))

        -- created: labels, limits, security as stored by Docker
        local created = assert(a:inspect(cid))
        assert.are.equal("created", created.status)
        assert.are.equal("Pending", (a:status_of(created)))
        local raw = raw_inspect(cid)
        local hc = raw.HostConfig
        assert.are.equal(500000000, math.tointeger(hc.NanoCpus))
        assert.are.equal(64 * 1024 * 1024, math.tointeger(hc.Memory))
        assert.are.equal(256, math.tointeger(hc.PidsLimit))
        assert.are.same({ "NET_RAW", "SYS_ADMIN", "MKNOD" }, hc.CapDrop)
        assert.are.same({ "no-new-privileges:true" }, hc.SecurityOpt)
        assert.are.equal("no", hc.RestartPolicy.Name)
        assert.are.equal("sandbox-" .. id, raw.Name:sub(2))
        assert.are.same({ "/opt/opensandbox/bootstrap.sh" }, raw.Config.Entrypoint)
        assert.are.equal("", hc.PortBindings["44772/tcp"][1].HostPort)
        assert.are.equal("127.0.0.1", hc.PortBindings["8080/tcp"][1].HostIp)

        assert.is_true(a:put_archive(cid, agent_tar()))
        assert.is_true(a:start(cid))

        local ins = wait_for(a, cid, function(i)
            return i.running
        end)
        assert.are.equal("running", ins.status)
        assert.are.equal("sandbox-" .. id, ins.name)
        assert.are.equal(IMAGE, ins.image)
        assert.are.same({ "/opt/test/run.sh" }, ins.cmd)
        assert.is_truthy(ins.ip and ins.ip:match("^%d+%.%d+%.%d+%.%d+$"))
        assert.is_true(ins.host_ports["44772"] > 0)
        assert.is_true(ins.host_ports["8080"] > 0)
        assert.are_not.equal(ins.host_ports["44772"], ins.host_ports["8080"])
        assert.are.equal(id, ins.labels["opensandbox.io/id"])
        assert.are.equal("44772", ins.labels["opensandbox.io/execd-port"])
        assert.are.same({ team = "infra" }, json.decode(ins.labels["opensandbox.io/metadata"]))
        assert.is_truthy(ins.labels["opensandbox.io/expires-at"])
        assert.is_nil(ins.labels["opensandbox.io/manual-cleanup"])
        local state, reason, _, at = a:status_of(ins)
        assert.are.equal("Running", state)
        assert.are.equal("CONTAINER_RUNNING", reason)
        assert.are.equal(ins.started_us, at)
        assert.is_true(math.abs(at - os.time() * 1000000) < 60 * 1000000)

        -- the bootstrap from the tar ran the entrypoint, with the environment of §8.2
        assert.are.equal("booted /opt/test/run.sh\n", capture("docker exec " .. cid .. " cat /tmp/boot.log"))
        assert.are.equal("ran\n", capture("docker exec " .. cid .. " cat /tmp/run.log"))
        local env = capture("docker exec " .. cid .. " env")
        assert.is_truthy(env:find("FOO=bar\n", 1, true))
        assert.is_truthy(env:find("OPENSANDBOX_EXECD_PORT=44772\n", 1, true))

        -- listed
        local found
        for _, c in ipairs(assert(a:list({ "opensandbox.test=1" }))) do
            if c.id == cid then
                found = c
            end
        end
        assert.is_truthy(found)
        assert.are.equal("running", found.state)
        assert.are.equal(id, found.labels["opensandbox.io/id"])

        -- pause / unpause: Paused is tested before Running
        assert.is_true(a:pause(cid))
        local paused = assert(a:inspect(cid))
        assert.is_true(paused.paused)
        assert.is_true(paused.running)
        assert.are.equal("Paused", (a:status_of(paused)))
        local _, perr = a:pause(cid)
        assert.are.equal("conflict", perr.kind)
        assert.is_true(a:unpause(cid))
        assert.are.equal("Running", (a:status_of(assert(a:inspect(cid)))))
        -- Docker answers 500 (not 409) to unpausing a running container
        local _, uerr = a:unpause(cid)
        assert.are.equal("api", uerr.kind)
        assert.is_truthy(uerr.message:find("is not paused", 1, true))

        -- remove a paused container; a second remove is still a success
        assert.is_true(a:pause(cid))
        assert.is_true(a:remove(cid))
        local gone, gerr = a:inspect(cid)
        assert.is_nil(gone)
        assert.are.equal("not_found", gerr.kind)
        assert.is_true(a:remove(cid))

        -- the event stream saw it all (until= makes Docker end the stream)
        local events = {}
        local _, eerr = a:events(t0, function(ev)
            if ev.id == cid then
                events[#events + 1] = ev
            end
        end, os.time() + 1)
        assert.are.equal("unavailable", eerr.kind)
        local actions = {}
        for _, ev in ipairs(events) do
            actions[ev.action] = ev
            assert.are.equal(id, ev.sandbox_id)
            assert.is_true(ev.time_nano > t0 * 1000000000)
        end
        for _, want in ipairs({ "create", "start", "pause", "unpause", "die", "destroy" }) do
            assert.is_truthy(actions[want], "missing event " .. want)
        end
        assert.are.equal(137, actions.die.exit_code)
    end)

    it("maps exited containers to Terminated and Failed", function()
        local function run(cmd, overrides)
            local s = spec_for(uuid(), overrides)
            s.entrypoint = { "/bin/sh", "-c", cmd }
            local cid = assert(a:create_container(s))
            assert(a:put_archive(cid, agent_tar()))
            assert(a:start(cid))
            local ins = wait_for(a, cid, function(i)
                return i.status == "exited"
            end)
            assert(a:remove(cid))
            return ins
        end
        local ok = run("exit 0")
        local state, reason, message, at = a:status_of(ok)
        assert.are.same({ "Terminated", "CONTAINER_EXITED", "Sandbox container exited successfully." },
            { state, reason, message })
        assert.are.equal(ok.finished_us, at)
        -- (no finished >= started check: for a process that exits at once Docker may stamp StartedAt later)
        assert.is_true(math.abs(ok.finished_us - os.time() * 1000000) < 60 * 1000000)

        local bad = run("exit 3")
        state, reason, message = a:status_of(bad)
        assert.are.same({ "Failed", "CONTAINER_EXITED_ERROR", "Sandbox container exited with code 3." },
            { state, reason, message })

        local oom = run("x=$(head -c 200000000 /dev/zero | tr '\\000' a); echo ${#x}", { memory = 8 * 1024 * 1024 })
        assert.is_true(oom.oom_killed, "exit " .. tostring(oom.exit_code))
        state, reason, message = a:status_of(oom)
        assert.are.equal("Failed", state)
        assert.are.equal("CONTAINER_EXITED_ERROR", reason)
        assert.are.equal("Sandbox container exited with code " .. oom.exit_code .. " (out of memory).", message)
    end)

    it("creates host-mode containers without ports and with the given agent port", function()
        local h = adapter({ network_mode = "host", pids_limit = false, drop_capabilities = {} })
        local id = uuid()
        local cid = assert(h:create_container(spec_for(id, { agent_port = 45678, expires_us = false,
            manual_cleanup = true, metadata = {} })))
        local raw = raw_inspect(cid)
        assert.are.equal("host", raw.HostConfig.NetworkMode)
        local function empty(v)
            return v == nil or v == json.null or next(v) == nil
        end
        assert.is_true(empty(raw.HostConfig.PortBindings))
        assert.is_true(empty(raw.Config.ExposedPorts))
        assert.is_true(raw.HostConfig.PidsLimit == 0 or empty(raw.HostConfig.PidsLimit))
        assert.are.equal("true", raw.Config.Labels["opensandbox.io/manual-cleanup"])
        assert.is_nil(raw.Config.Labels["opensandbox.io/expires-at"])
        assert.is_nil(raw.Config.Labels["opensandbox.io/metadata"])
        assert.are.equal("45678", raw.Config.Labels["opensandbox.io/execd-port"])
        local found
        for _, e in ipairs(raw.Config.Env) do
            found = found or e == "OPENSANDBOX_EXECD_PORT=45678"
        end
        assert.is_true(found)
        local ins = assert(h:inspect(cid))
        assert.are.same({}, ins.host_ports)
        assert.is_true(h:remove(cid))
    end)

    it("fills an agent volume, replaces one Docker made empty, and removes unused earlier ones", function()
        -- a label of this spec's own, so that the server's real agent volumes are never touched
        local L = { ["opensandbox.io/agent-spec"] = "true" }
        local name = "opensandbox-spec-vol-" .. uuid():sub(1, 8)
        local old, used = name .. "-old", name .. "-used"
        local function cleanup()
            sh("docker rm -f " .. used .. "-c " .. name .. "-fill >/dev/null 2>&1; docker volume rm " .. name .. " "
                .. old .. " " .. used .. " >/dev/null 2>&1; docker rmi -f opensandbox-agent-fill:" .. name
                .. " >/dev/null 2>&1")
        end
        cleanup()
        finally(cleanup)
        assert.are.equal("missing", a:volume_state(name, L))
        -- what Docker makes by itself when a container names a missing volume: empty, unlabelled
        assert(sh("docker volume create " .. name .. " >/dev/null"))
        assert.are.equal("foreign", a:volume_state(name, L))
        assert.is_true(a:ensure_volume(name, agent_tar(), L))
        assert.are.equal("ours", a:volume_state(name, L))
        local labels = json.decode(capture("docker volume inspect -f '{{json .Labels}}' " .. name))
        assert.are.equal("true", labels["opensandbox.io/agent-spec"])
        -- the volume holds exactly the archive's files under opt/opensandbox (opt/test/run.sh of the same
        -- archive is outside the mount, so not in it), with their content and mode
        local function in_volume(cmd)
            return capture("docker run --rm --label opensandbox.test=1 -v " .. name .. ":/opt/opensandbox:ro "
                .. IMAGE .. " sh -c '" .. cmd .. "'")
        end
        assert.are.equal(".\n./bootstrap.sh\n", in_volume("cd /opt/opensandbox && find . | sort"))
        assert.are.equal(BOOTSTRAP, in_volume("cat /opt/opensandbox/bootstrap.sh"))
        assert.are.equal("755\n", in_volume("stat -c %a /opt/opensandbox/bootstrap.sh"))
        assert.is_false(sh("docker inspect " .. name .. "-fill >/dev/null 2>&1"), "the fill container is gone")
        -- the image imported from the archive to fill it is gone too
        local fill_image = "opensandbox-agent-fill:" .. name
        assert.is_false(sh("docker image inspect " .. fill_image .. " >/dev/null 2>&1"), "the fill image is gone")
        assert.are.equal("", capture("docker images -q " .. fill_image))
        -- a complete volume is kept as it is: two looks (the volume, a leftover fill container), nothing else
        local seen = {}
        local counting = docker.new({ client = { request = function(o)
            seen[#seen + 1] = o.method .. " " .. o.url:gsub("^%a+://[^/]+", ""):gsub("%?.*$", "")
            return curl.request(o)
        end }, host = HOST, api_timeout = 60, log = silent_log, config = CONFIG })
        assert.is_true(counting:ensure_volume(name, agent_tar(), L))
        assert.are.same({ "GET /v1.41/volumes/" .. name, "GET /v1.41/containers/" .. name .. "-fill/json" }, seen)
        assert.are.equal(".\n./bootstrap.sh\n", in_volume("cd /opt/opensandbox && find . | sort"))
        -- an unused earlier one goes; one a container uses stays, and so does the current one
        assert(sh("docker volume create --label opensandbox.io/agent-spec=true " .. old .. " >/dev/null"))
        assert(sh("docker volume create --label opensandbox.io/agent-spec=true " .. used .. " >/dev/null"))
        assert(sh("docker create --name " .. used .. "-c --label opensandbox.test=1 -v " .. used .. ":/x " .. IMAGE
            .. " true >/dev/null"))
        local n = assert(a:remove_unused_volumes("opensandbox.io/agent-spec=true", name, now_us() + 3600000000))
        assert.are.equal(1, n)
        assert.is_false(sh("docker volume inspect " .. old .. " >/dev/null 2>&1"))
        assert.is_true(sh("docker volume inspect " .. used .. " >/dev/null 2>&1"))
        assert.is_true(sh("docker volume inspect " .. name .. " >/dev/null 2>&1"))
        -- volumes made after the cutoff stay even when unused
        assert.are.equal(0, a:remove_unused_volumes("opensandbox.io/agent-spec=true", "none", now_us() - 3600000000))
        cleanup()
    end)

    it("reports Docker's errors with their kind and message", function()
        local id = uuid()
        local cid = assert(a:create_container(spec_for(id)))
        local _, cerr = a:create_container(spec_for(id))
        assert.are.equal("conflict", cerr.kind)
        assert.are.equal(409, cerr.status)
        assert.is_truthy(cerr.message:find("already in use", 1, true))
        assert(a:remove(cid))

        local _, nerr = a:create_container(spec_for(uuid(), { image_uri = "local/does-not-exist:1" }))
        assert.are.equal("not_found", nerr.kind)
        assert.is_truthy(nerr.message:find("No such image", 1, true))

        local _, serr = a:start("no-such-container-" .. id)
        assert.are.equal("not_found", serr.kind)

        local down = docker.new({ client = curl, host = "tcp://127.0.0.1:1", api_timeout = 5 })
        local _, derr = down:ping()
        assert.are.equal("unavailable", derr.kind)
        assert.is_nil(derr.status)
    end)

    describe("with a local registry", function()
        local docker_config

        setup(function()
            assert(sh("tests/images/registry.sh start >/dev/null"), "registry start failed")
            docker_config = capture("mktemp -d"):gsub("%s+$", "")
            local env = "DOCKER_CONFIG=" .. docker_config .. " "
            assert(sh("echo testpass | " .. env .. "docker login -u testuser --password-stdin " .. REGISTRY
                .. " >/dev/null 2>&1"), "docker login failed")
            assert(sh("docker tag " .. IMAGE .. " " .. REGISTRY .. "/test/busybox:1 && " .. env .. "docker push "
                .. REGISTRY .. "/test/busybox:1 >/dev/null && docker rmi " .. REGISTRY .. "/test/busybox:1 >/dev/null"),
                "push to the local registry failed")
        end)

        teardown(function()
            sh("docker rmi " .. REGISTRY .. "/test/busybox:1 >/dev/null 2>&1")
            if docker_config and docker_config:match("^/tmp/") then
                sh("rm -rf " .. docker_config)
            end
            sh("tests/images/registry.sh stop >/dev/null")
        end)

        it("fails a pull of a nonexistent image with a clear message", function()
            local ok, err = a:ensure_image(REGISTRY .. "/test/nope:1", { username = "testuser", password = "testpass" })
            assert.is_nil(ok)
            assert.is_truthy(err.message:find("manifest unknown", 1, true) or err.message:find("not found", 1, true),
                err.message)
        end)

        it("fails a pull without credentials and succeeds with them (X-Registry-Auth)", function()
            local ok, err = a:ensure_image(REGISTRY .. "/test/busybox:1")
            assert.is_nil(ok)
            assert.is_truthy(err.message:find("auth", 1, true), err.message)
            local _, berr = a:ensure_image(REGISTRY .. "/test/busybox:1", { username = "testuser", password = "wrong" })
            assert.is_truthy(berr)
            local auth = { username = "testuser", password = "testpass" }
            assert.is_true(a:ensure_image(REGISTRY .. "/test/busybox:1", auth))
            assert.is_true(sh("docker image inspect " .. REGISTRY .. "/test/busybox:1 >/dev/null 2>&1"))
        end)
    end)
end)
