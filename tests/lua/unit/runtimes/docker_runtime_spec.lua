-- Unit specs of the Docker runtime (runtimes.docker, lua/runtimes/docker/init.lua): the runtime contract of
-- lua/runtimes/README.md on a fake engine (a scripted stand-in for runtimes.docker.engine that records its
-- calls), and once end to end through the real engine on the fake Engine API client.
package.path = "tests/lua/unit/runtimes/?.lua;" .. package.path
-- the agent volume's single-flight event (common.sync) needs core.sync only to wait, which these specs never do
package.loaded["core.sync"] = package.loaded["core.sync"] or {}

local docker_runtime = require("runtimes.docker")
local runtimes = require("runtimes")
local rterrors = require("runtimes.errors")
local mapping = require("runtimes.docker.mapping")
local tar = require("runtimes.docker.tar")
local json = require("common.json")
local fake_client = require("support.fake_client")

local STARTED_US = 1767225600123456 -- 2026-01-01T00:00:00.123456Z
local ID = "5d41402a-bc4b-4a76-b971-9d911017c592"

------------------------------------------------------------------------------------------------------------
-- a fake engine: the methods runtimes.docker and runtimes.docker.agent call, recorded in `calls`
-- ("method arg1"), each failing once with `e.fail[method] = err`; `e.inspects[cid]` overrides an inspection

local FakeEngine = {}
FakeEngine.__index = FakeEngine

local function new_engine()
    return setmetatable({
        host = "unix:///var/run/docker.sock",
        calls = {},
        fail = {},
        specs = {}, -- create_container specs, in order
        archives = {}, -- cid -> tar bytes put
        inspects = {}, -- cid -> inspect result or an error
        containers = {}, -- engine:list() answer
        events_list = {}, -- what events() delivers before its stream ends
        events_calls = {}, -- { since, until } of each events() call
        next_id = 0,
        repull = nil, -- create_from_image: the create fails with a missing image and this pull error follows
        info_result = { ncpu = 8, runtimes = { runc = true } },
    }, FakeEngine)
end

function FakeEngine:_call(name, arg)
    self.calls[#self.calls + 1] = name .. (arg ~= nil and (" " .. tostring(arg)) or "")
    local err = self.fail[name]
    if err then
        self.fail[name] = nil
        return err
    end
    return nil
end

function FakeEngine:count(prefix)
    local n = 0
    for _, c in ipairs(self.calls) do
        if c == prefix or c:sub(1, #prefix + 1) == prefix .. " " then
            n = n + 1
        end
    end
    return n
end

local function answer(err, ...)
    if err then
        return nil, err
    end
    return ...
end

function FakeEngine:ping()
    return answer(self:_call("ping"), true)
end

function FakeEngine:version()
    return answer(self:_call("version"), { api_version = "1.41" })
end

function FakeEngine:info()
    return answer(self:_call("info"), self.info_result)
end

function FakeEngine:ensure_image(uri, _, _, verify)
    return answer(self:_call("ensure_image", uri .. (verify and " (verify)" or "")), true)
end

function FakeEngine:create_from_image(uri, _, _, create)
    self:_call("create_from_image", uri)
    if self.repull then
        return nil, self.repull, "pull"
    end
    return create()
end

function FakeEngine:create_container(spec)
    local err = self:_call("create_container", spec.id)
    if err then
        return nil, err
    end
    -- names are unique, as in Docker (a crash may leave a container of the name behind)
    local name = spec.name or ("sandbox-" .. spec.id)
    self.names = self.names or {}
    if self.names[name] then
        return nil, rterrors.new("conflict", "Conflict. The container name \"/" .. name .. "\" is already in use",
            { status = 409 })
    end
    self.specs[#self.specs + 1] = spec
    self.next_id = self.next_id + 1
    local cid = "c" .. self.next_id
    self.names[name] = cid
    local labels = mapping.labels_for(spec)
    self.inspects[cid] = self.inspects[cid] or {
        id = cid, status = "running", running = true, paused = false, exit_code = 0, started_us = STARTED_US,
        ip = "172.17.0." .. (4 + self.next_id), labels = labels, image = spec.image_uri, cmd = spec.entrypoint,
        host_ports = { ["44772"] = 32000 + self.next_id, ["8080"] = 33000 + self.next_id },
    }
    return cid
end

function FakeEngine:put_archive(cid, bytes)
    self.archives[cid] = bytes
    return answer(self:_call("put_archive", cid), true)
end

function FakeEngine:start(cid)
    return answer(self:_call("start", cid), true)
end

function FakeEngine:inspect(cid)
    local err = self:_call("inspect", cid)
    if err then
        return nil, err
    end
    local ins = self.inspects[cid] or (self.names and self.names[cid] and self.inspects[self.names[cid]])
    if getmetatable(ins) then -- an error
        return nil, ins
    end
    if not ins then
        return nil, rterrors.new("not_found", "No such container: " .. cid, { status = 404 })
    end
    return ins
end

function FakeEngine:remove(cid)
    local err = self:_call("remove", cid)
    for name, c in pairs(self.names or {}) do
        if c == cid and not err then
            self.names[name] = nil
        end
    end
    return answer(err, true)
end

function FakeEngine:pause(cid)
    return answer(self:_call("pause", cid), true)
end

function FakeEngine:unpause(cid)
    return answer(self:_call("unpause", cid), true)
end

function FakeEngine:list()
    return answer(self:_call("list"), self.containers)
end

function FakeEngine:events(since_s, on_event, until_s)
    self.events_calls[#self.events_calls + 1] = { since = since_s, ["until"] = until_s }
    for _, ev in ipairs(self.events_list) do
        on_event(ev)
    end
    self.events_list = {}
    return nil, rterrors.new("unavailable", "event stream ended", { status = 200 })
end

function FakeEngine:volume_state(name)
    -- `volume_states`: answers to give in turn (then "ours")
    return answer(self:_call("volume_state", name), self.volume_states and table.remove(self.volume_states, 1)
        or "ours")
end

function FakeEngine:ensure_volume(name, bytes, labels)
    self.volume_tar, self.volume_labels = bytes, labels
    return answer(self:_call("ensure_volume", name), true)
end

function FakeEngine:remove_unused_volumes(label, keep)
    self:_call("remove_unused_volumes", label .. " " .. keep)
    return 0
end

------------------------------------------------------------------------------------------------------------
-- helpers

local function new_log()
    local log = { lines = {} }
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        log[level] = function(msg, fields)
            log.lines[#log.lines + 1] = { level = level, msg = msg, fields = fields }
        end
    end
    return log
end

local FILES = {
    get = function()
        return { bootstrap = "#!/bin/sh\nexec \"$@\"\n", execd = "\127ELF agent" }
    end,
    tag = function()
        return "t1"
    end,
}

-- a clock that moves half a second per reading (exact in binary): every step takes 500 ms
local function stepping_clock()
    local t = 1000
    return function()
        t = t + 0.5
        return t
    end
end

-- a runtime on a fake engine. opts: docker (the docker section), runtime, ports (free_tcp_port answers)
local function make(opts)
    opts = opts or {}
    local engine = new_engine()
    local log = new_log()
    local ports = opts.ports or {}
    local core = {
        now_s = opts.now_s or stepping_clock(),
        uuid = { v4 = function() return "00000000-0000-4000-8000-000000000000" end },
        free_tcp_port = function(host)
            assert.are.equal("0.0.0.0", host)
            local p = table.remove(ports, 1)
            if type(p) == "table" then
                return nil, p.err
            end
            return p
        end,
    }
    local rt = docker_runtime.new({ docker = opts.docker or {}, runtime = opts.runtime or {} },
        { engine = engine, log = log, agent_files = opts.files or FILES, core = core, identity = opts.identity })
    return rt, engine, log
end

local function sandbox(overrides)
    local s = {
        id = ID,
        created_us = 1767225600000001,
        expires_us = 1767229200000001,
        metadata = { team = "infra" },
        principal = "tenant-a",
        access_token = "tok123",
    }
    for k, v in pairs(overrides or {}) do
        s[k] = v
    end
    return s
end

local function spec(overrides)
    local s = {
        image = { uri = "busybox:1", auth = { username = "u", password = "p" } },
        entrypoint = { "sleep", "300" },
        env = { { "FOO", "bar" } },
        nano_cpus = 500000000,
        memory = 67108864,
    }
    for k, v in pairs(overrides or {}) do
        s[k] = v
    end
    return s
end

local function api_error(message, status)
    return rterrors.new("api", message, { status = status })
end

------------------------------------------------------------------------------------------------------------

describe("runtimes.docker (runtime): construction and connection", function()
    it("is picked by runtimes.new for runtime.type docker and has the whole contract", function()
        local rt = runtimes.new({ runtime = { type = "docker" }, docker = {} }, { client = fake_client.new() })
        assert.are.equal("docker", rt.name)
        for _, m in ipairs(runtimes.METHODS) do
            assert.are.equal("function", type(rt[m]), m)
        end
        assert.are.equal("unix:///var/run/docker.sock", rt.engine.host)
    end)

    it("connects (ping, version, info) and returns the CPU count", function()
        local rt, engine = make()
        assert.are.same({ ncpu = 8 }, rt:connect())
        assert.are.same({ "ping", "version", "info" }, engine.calls)
    end)

    it("fails the connection with the engine's error at the first step that fails", function()
        for _, step in ipairs({ "ping", "version", "info" }) do
            local rt, engine = make()
            local e = rterrors.new("unavailable", "connect refused")
            engine.fail[step] = e
            local ok, err = rt:connect()
            assert.is_nil(ok)
            assert.are.equal(e, err)
            assert.are.equal(step, engine.calls[#engine.calls])
        end
    end)

    it("logs an OCI runtime the daemon does not know, and connects anyway", function()
        local rt, _, log = make({ docker = { runtime = "runsc" } })
        assert.are.same({ ncpu = 8 }, rt:connect())
        assert.are.equal("error", log.lines[1].level)
        assert.are.same({ runtime = "runsc" }, log.lines[1].fields)
        local ok_rt, _, ok_log = make({ docker = { runtime = "runc" } })
        assert.truthy(ok_rt:connect())
        assert.are.equal(0, #ok_log.lines)
    end)

    it("words the 503 of an unreachable daemon", function()
        local rt = make()
        local code, message = rt:unavailable("connect refused")
        assert.are.equal("DOCKER::UNAVAILABLE", code)
        assert.are.equal("Docker daemon is unreachable at unix:///var/run/docker.sock: connect refused", message)
    end)
end)

describe("runtimes.docker (runtime): provision", function()
    it("pulls, prepares the agent volume, creates, starts and inspects: handle, place, Running, steps", function()
        local rt, engine = make({ docker = { instance = "i1" } })
        local placed = assert(rt:provision(sandbox({ name = "custom" }), spec()))
        assert.are.same({
            handle = "c1",
            place = { ip = "172.17.0.5", ports = { ["44772"] = 32001, ["8080"] = 33001 }, agent_port = 44772 },
            status = { state = "Running", reason = "CONTAINER_RUNNING", message = "Sandbox container is running.",
                at_us = STARTED_US },
            steps = placed.steps,
        }, placed)
        -- how long each step took, in ms (the clock moves 0.5 s per reading; the agent reads it once more)
        assert.are.same({ image_ms = 500.0, agent_volume_ms = 1000.0, create_ms = 500.0, start_ms = 500.0,
            inspect_ms = 500.0 }, placed.steps)
        assert.are.same({
            "ensure_image busybox:1",
            "ensure_volume opensandbox-agent-t1",
            "remove_unused_volumes opensandbox.io/agent=true opensandbox-agent-t1",
            "create_from_image busybox:1",
            "create_container " .. ID,
            "start c1",
            "inspect c1",
        }, engine.calls)
        -- what the container is made of: the identity (for the labels), the request, the agent
        local cs = engine.specs[1]
        assert.are.same({
            id = ID, name = "custom", image_uri = "busybox:1", entrypoint = { "sleep", "300" },
            env = { { "FOO", "bar" } }, nano_cpus = 500000000, memory = 67108864, agent_port = 44772,
            access_token = "tok123", created_us = 1767225600000001, expires_us = 1767229200000001,
            metadata = { team = "infra" }, principal = "tenant-a", agent_volume = "opensandbox-agent-t1",
            instance = "i1",
        }, cs)
        -- the volume is filled from the agent's files only, and labelled as the server's
        local entries = assert(tar.entries(engine.volume_tar))
        local names = {}
        for _, e in ipairs(entries) do
            names[#names + 1] = e.path
        end
        assert.are.same({ "opt/opensandbox/", "opt/opensandbox/execd", "opt/opensandbox/bootstrap.sh" }, names)
        assert.are.same({ ["opensandbox.io/agent"] = "true" }, engine.volume_labels)
        assert.are.equal(0, engine:count("put_archive"))
    end)

    it("fills the agent volume once, then trusts it without a Docker call per create", function()
        local rt, engine = make()
        assert(rt:provision(sandbox(), spec()))
        assert(rt:provision(sandbox({ id = "second" }), spec()))
        assert.are.equal(1, engine:count("ensure_volume"))
        assert.are.equal(1, engine:count("remove_unused_volumes"))
        assert.are.equal(0, engine:count("volume_state"))
        assert.are.equal("opensandbox-agent-t1", engine.specs[2].agent_volume)
    end)

    it("makes the agent volume again when a start fails because it was pruned, and starts once more", function()
        local rt, engine, log = make()
        assert(rt:provision(sandbox(), spec()))
        -- `docker volume prune`: Docker made an empty volume of that name for the next container, whose
        -- bootstrap is then missing
        engine.fail.start = api_error("OCI runtime create failed: exec: \"/opt/opensandbox/bootstrap.sh\": " ..
            "stat /opt/opensandbox/bootstrap.sh: no such file or directory", 400)
        engine.volume_states = { "foreign" }
        local placed = assert(rt:provision(sandbox({ id = "second" }), spec()))
        assert.are.equal("c3", placed.handle)
        assert.are.equal(1, engine:count("volume_state"))
        assert.are.equal(2, engine:count("ensure_volume"))
        assert.are.equal(1, engine:count("remove c2"))
        assert.are.equal(2, engine:count("start c3") + engine:count("start c2"))
        assert.truthy(log.lines[#log.lines].msg:find("missing agent volume", 1, true))
    end)

    it("reports a start failure as it is when the agent volume is fine", function()
        local rt, engine = make()
        assert(rt:provision(sandbox(), spec()))
        engine.fail.start = api_error("boom", 500)
        local _, err = rt:provision(sandbox({ id = "second" }), spec())
        assert.are.equal("start", err.step)
        assert.are.equal(1, engine:count("volume_state"))
        assert.are.equal(1, engine:count("ensure_volume"))
        assert.are.equal(1, engine:count("create_container second"))
    end)

    it("says Running for a container Docker still calls created, with no time", function()
        local rt, engine = make()
        engine.inspects.c1 = { id = "c1", status = "created", labels = {}, host_ports = {} }
        local placed = assert(rt:provision(sandbox(), spec()))
        assert.are.same({ state = "Running", reason = "CONTAINER_RUNNING", message = "Sandbox container is running." },
            placed.status)
        assert.are.same({ ports = {}, agent_port = 44772 }, placed.place)
    end)

    it("uploads the agent archive into the created container with agent_delivery = archive", function()
        local rt, engine = make({ docker = { agent_delivery = "archive" } })
        local placed = assert(rt:provision(sandbox(), spec()))
        assert.are.same({ "ensure_image busybox:1", "create_from_image busybox:1", "create_container " .. ID,
            "put_archive c1", "start c1", "inspect c1" }, engine.calls)
        assert.is_nil(engine.specs[1].agent_volume)
        local files = {}
        for _, e in ipairs(assert(tar.entries(engine.archives.c1))) do
            files[e.path] = e.content
        end
        assert.are.equal("\127ELF agent", files["opt/opensandbox/execd"])
        assert.are.equal("#!/bin/sh\nexec \"$@\"\n", files["opt/opensandbox/bootstrap.sh"])
        assert.is_truthy(placed.steps.upload_ms)
        assert.is_nil(placed.steps.agent_volume_ms)
    end)

    it("fails at step image when the pull fails: Docker's words, nothing created", function()
        local rt, engine = make()
        engine.fail.ensure_image = api_error("manifest for busybox:1 not found", 404)
        local placed, err = rt:provision(sandbox(), spec())
        assert.is_nil(placed)
        assert.are.equal("image", err.step)
        assert.are.equal("Failed to pull image 'busybox:1': manifest for busybox:1 not found", err.message)
        assert.are.equal("api", err.kind)
        assert.are.equal(404, err.status)
        assert.are.same({ "ensure_image busybox:1" }, engine.calls)
    end)

    it("keeps the kind of the failure (a daemon gone during the pull is unavailable)", function()
        local rt, engine = make()
        engine.fail.ensure_image = rterrors.new("unavailable", "connect refused")
        local _, err = rt:provision(sandbox(), spec())
        assert.are.same({ "unavailable", "image" }, { err.kind, err.step })
        assert.are.equal("unavailable at image: Failed to pull image 'busybox:1': connect refused", tostring(err))
    end)

    it("fails at step image when the image went away and pulling it again fails", function()
        local rt, engine = make()
        engine.repull = api_error("pull access denied", 500)
        local _, err = rt:provision(sandbox(), spec())
        assert.are.equal("image", err.step)
        assert.are.equal("Failed to pull image 'busybox:1': pull access denied", err.message)
        assert.are.equal(0, engine:count("remove"))
    end)

    it("fails at step agent when the agent volume cannot be made, before creating anything", function()
        local rt, engine = make()
        engine.fail.ensure_volume = api_error("no space left on device", 500)
        local _, err = rt:provision(sandbox(), spec())
        assert.are.equal("agent", err.step)
        assert.are.equal("cannot prepare the agent volume opensandbox-agent-t1: no space left on device", err.message)
        assert.are.equal(0, engine:count("create_container"))
        assert.are.equal(0, engine:count("remove"))
        -- the next provisioning tries again
        assert(rt:provision(sandbox(), spec()))
        assert.are.equal(2, engine:count("ensure_volume"))
    end)

    it("fails at step agent when the agent's files are missing", function()
        local rt, engine = make({ files = { get = function() return nil, "bootstrap script not found" end,
            tag = function() return nil, "bootstrap script not found" end } })
        local _, err = rt:provision(sandbox(), spec())
        assert.are.same({ "agent", "bootstrap script not found" }, { err.step, err.message })
        assert.are.equal(0, engine:count("create_container"))
    end)

    it("fails at step agent when the archive upload fails, and removes the container", function()
        local rt, engine = make({ docker = { agent_delivery = "archive" } })
        engine.fail.put_archive = api_error("disk full", 500)
        local _, err = rt:provision(sandbox(), spec())
        assert.are.same({ "agent", "Failed to upload the agent: disk full" }, { err.step, err.message })
        assert.are.equal(1, engine:count("remove c1"))
        assert.are.equal(0, engine:count("start"))
    end)

    it("fails at step create when the container cannot be created (nothing to remove)", function()
        local rt, engine = make()
        engine.fail.create_container = rterrors.new("conflict", 'The container name "/custom" is already in use',
            { status = 409 })
        local _, err = rt:provision(sandbox({ name = "custom" }), spec())
        assert.are.equal("create", err.step)
        assert.are.equal('Failed to create container: The container name "/custom" is already in use', err.message)
        assert.are.same({ "conflict", 409 }, { err.kind, err.status })
        assert.are.equal(0, engine:count("remove"))
        assert.are.equal(0, engine:count("start"))
    end)

    it("fails at step start when the start fails, and removes the half-created container", function()
        local rt, engine, log = make()
        engine.fail.start = api_error("OCI runtime create failed: exec format error", 500)
        local _, err = rt:provision(sandbox(), spec())
        assert.are.equal("start", err.step)
        assert.are.equal("Failed to start container: OCI runtime create failed: exec format error", err.message)
        assert.are.equal("start c1", engine.calls[#engine.calls - 2])
        assert.are.equal("remove c1", engine.calls[#engine.calls - 1])
        assert.are.equal("volume_state opensandbox-agent-t1", engine.calls[#engine.calls], "the volume is fine")
        assert.are.equal(0, #log.lines)
    end)

    it("logs a half-created container it could not remove, and still reports the start failure", function()
        local rt, engine, log = make()
        engine.fail.start = api_error("boom", 500)
        engine.fail.remove = rterrors.new("unavailable", "connection reset")
        local _, err = rt:provision(sandbox(), spec())
        assert.are.equal("start", err.step)
        assert.are.equal("cannot remove half-created container", log.lines[1].msg)
        assert.are.same({ sandbox_id = ID, container_id = "c1", error = "connection reset" }, log.lines[1].fields)
    end)

    it("fails at step start when the started container cannot be inspected, and removes it", function()
        local rt, engine = make()
        engine.fail.inspect = api_error("daemon busy", 500)
        local _, err = rt:provision(sandbox(), spec())
        assert.are.same({ "start", "Failed to inspect container: daemon busy" }, { err.step, err.message })
        assert.are.equal("remove c1", engine.calls[#engine.calls])
    end)
end)

describe("runtimes.docker (runtime): provision resumed after a crash (API.md §6.5 step 4)", function()
    -- a container an interrupted provisioning made: created (not started) or running, with the labels it got
    local function leftover(engine, state, sb, port)
        local cs = { id = sb.id, name = sb.name, agent_port = port or 44772, created_us = sb.created_us,
            expires_us = sb.expires_us, metadata = sb.metadata, principal = sb.principal, access_token = "tok123" }
        local labels = mapping.labels_for(cs)
        labels["opensandbox.io/execd-port"] = tostring(port or 44772)
        engine.names = { [sb.name or ("sandbox-" .. sb.id)] = "old" }
        engine.inspects.old = { id = "old", status = state, running = state == "running", paused = false,
            exit_code = 0, started_us = state == "running" and STARTED_US or nil, ip = "172.17.0.9",
            labels = labels, host_ports = { ["44772"] = 32100, ["8080"] = 33100 } }
    end

    it("takes the container a crash left created, and starts it: no second container", function()
        local rt, engine = make()
        leftover(engine, "created", sandbox())
        local placed = assert(rt:provision(sandbox(), spec()))
        assert.are.equal("old", placed.handle)
        assert.are.same({ "ensure_image busybox:1", "ensure_volume opensandbox-agent-t1",
            "remove_unused_volumes opensandbox.io/agent=true opensandbox-agent-t1", "create_from_image busybox:1",
            "create_container " .. ID, "inspect sandbox-" .. ID, "start old", "inspect old" }, engine.calls)
        assert.are.equal(0, #engine.specs, "nothing new was created")
        assert.are.equal(0, engine:count("remove"))
    end)

    it("takes a container a crash left running as it is: neither the agent nor a start again", function()
        local rt, engine = make({ docker = { agent_delivery = "archive" } })
        leftover(engine, "running", sandbox({ name = "custom" }))
        local placed = assert(rt:provision(sandbox({ name = "custom" }), spec()))
        assert.are.equal("old", placed.handle)
        assert.are.equal("Running", placed.status.state)
        assert.are.equal(0, engine:count("start"))
        assert.are.equal(0, engine:count("put_archive"))
        assert.are.same({ ip = "172.17.0.9", ports = { ["44772"] = 32100, ["8080"] = 33100 }, agent_port = 44772 },
            placed.place)
    end)

    it("makes again a container a crash left exited without running its entrypoint (start or gate failed)",
        function()
            -- the start failed: Docker never set StartedAt
            local rt, engine = make()
            leftover(engine, "exited", sandbox())
            engine.inspects.old.exit_code = 128
            local placed = assert(rt:provision(sandbox(), spec()))
            assert.are.equal("c1", placed.handle)
            assert.are.equal("Running", placed.status.state)
            assert.are.equal(1, engine:count("remove"))
            assert.is_truthy(table.concat(engine.calls, ","):find("remove old", 1, true))
            assert.are.equal(1, #engine.specs, "made once more, one container in the end")

            -- it started, but its start gate failed (bootstrap.sh's exit status): gated sandboxes only
            rt, engine = make()
            local released = {}
            rt.netpolicy = { wants_table = function() return true end, detach = function() end,
                release = function(_, pid, _, taken)
                    released[#released + 1] = { pid, taken }
                    return true
                end }
            leftover(engine, "exited", sandbox())
            engine.inspects.old.started_us, engine.inspects.old.exit_code = STARTED_US, 125
            placed = assert(rt:provision(sandbox(), spec()))
            assert.are.equal("c1", placed.handle)
            assert.are.same({ { nil, false } }, released)

            -- an entrypoint that ran and ended is what the sandbox did: reported, not run again
            rt, engine = make()
            leftover(engine, "exited", sandbox())
            engine.inspects.old.started_us, engine.inspects.old.exit_code = STARTED_US, 125
            placed = assert(rt:provision(sandbox(), spec())) -- (not gated: 125 is the entrypoint's own)
            assert.are.equal("old", placed.handle)
            assert.are.equal(0, engine:count("remove"))
            assert.are.equal(0, engine:count("start"))
        end)

    it("host mode: keeps the agent port the container was made with, and frees the one it had just taken",
        function()
            local rt, engine = make({ docker = { network_mode = "host" }, ports = { 40001, 40002 } })
            leftover(engine, "created", sandbox(), 40500)
            local placed = assert(rt:provision(sandbox(), spec()))
            assert.are.equal(40500, placed.place.agent_port)
            assert.are.equal(ID, rt.agent_ports[40500])
            assert.is_nil(rt.agent_ports[40001])
        end)

    it("refuses a container of that name that is not this sandbox's (another id, or another instance)", function()
        local rt, engine = make()
        leftover(engine, "running", sandbox({ id = "someone-else", name = "shared" }))
        local _, err = rt:provision(sandbox({ name = "shared" }), spec())
        assert.are.equal("create", err.step)
        assert.are.equal("conflict", err.kind)
        assert.are.equal(0, engine:count("start"))
        assert.are.equal(0, engine:count("remove"), "what is not ours is never removed")

        rt, engine = make({ docker = { instance = "mine" } })
        leftover(engine, "running", sandbox()) -- (no instance label: another server's)
        _, err = rt:provision(sandbox(), spec())
        assert.are.equal("create", err.step)
        assert.are.equal(0, engine:count("remove"))
    end)
end)

describe("runtimes.docker (runtime): the kernel's neighbour table", function()
    local dir
    before_each(function()
        dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir))
        for name, v in pairs({ gc_thresh2 = 2, gc_thresh3 = 4 }) do
            local f = assert(io.open(dir .. "/" .. name, "w"))
            f:write(v, "\n")
            f:close()
        end
        docker_runtime.NEIGH_DIR = dir .. "/"
    end)
    after_each(function()
        docker_runtime.NEIGH_DIR = "/proc/sys/net/ipv4/neigh/default/"
        os.execute("rm -rf " .. dir)
    end)

    local function warnings(log)
        local n = 0
        for _, l in ipairs(log.lines) do
            if l.level == "warn" and l.msg:find("neighbour table", 1, true) then
                n = n + 1
                assert.are.same({ containers = 3, gc_thresh2 = 2, gc_thresh3 = 4 }, l.fields)
            end
        end
        return n
    end

    it("warns once an hour when a local daemon's bridge holds more sandboxes than gc_thresh2", function()
        local t = 1000
        local rt, engine, log = make({ now_s = function() return t end })
        engine.host = "unix:///var/run/docker.sock"
        engine.containers = { { id = "a", labels = {} }, { id = "b", labels = {} } }
        assert(rt:list())
        assert.are.equal(0, warnings(log), "two are not more than 2")
        engine.containers[3] = { id = "c", labels = {} }
        assert(rt:list())
        assert(rt:list())
        assert.are.equal(1, warnings(log))
        t = t + 3601
        assert(rt:list())
        assert.are.equal(2, warnings(log))
    end)

    it("says nothing for a remote daemon or in host mode", function()
        local rt, engine, log = make()
        engine.host = "tcp://10.0.0.5:2376"
        engine.containers = { { id = "a", labels = {} }, { id = "b", labels = {} }, { id = "c", labels = {} } }
        assert(rt:list())
        assert.are.equal(0, warnings(log))
        rt, engine, log = make({ docker = { network_mode = "host" } })
        engine.host = "unix:///var/run/docker.sock"
        engine.containers = { { id = "a", labels = {} }, { id = "b", labels = {} }, { id = "c", labels = {} } }
        assert(rt:list())
        assert.are.equal(0, warnings(log))
    end)
end)

describe("runtimes.docker (runtime): host network mode", function()
    local HOST = { network_mode = "host" }

    it("gives each sandbox its own agent port from free_tcp_port, never one another live sandbox holds", function()
        local rt, engine = make({ docker = HOST, ports = { 40001, 40001, 8080, 44772, 40002 } })
        engine.inspects.c1 = { id = "c1", status = "running", labels = {}, host_ports = {} }
        engine.inspects.c2 = { id = "c2", status = "running", labels = {}, host_ports = {} }
        local a = assert(rt:provision(sandbox({ id = "a" }), spec()))
        local b = assert(rt:provision(sandbox({ id = "b" }), spec()))
        assert.are.same({ ports = {}, agent_port = 40001 }, a.place)
        assert.are.same({ ports = {}, agent_port = 40002 }, b.place)
        assert.are.equal(40001, engine.specs[1].agent_port)
        assert.are.equal(40002, engine.specs[2].agent_port)
    end)

    it("releases a sandbox's port on remove (not on a failed one), so that it can be given again", function()
        local rt, engine = make({ docker = HOST, ports = { 40001, 40001, 40002, 40001 } })
        local a = assert(rt:provision(sandbox({ id = "a" }), spec()))
        local rec_a = { id = "a", handle = a.handle, place = a.place }
        engine.fail.remove = rterrors.new("unavailable", "down")
        assert.is_nil(rt:remove(rec_a))
        -- still held: 40001 is skipped
        local b = assert(rt:provision(sandbox({ id = "b" }), spec()))
        assert.are.equal(40002, b.place.agent_port)
        assert.is_true(rt:remove(rec_a))
        -- a record of another sandbox naming that port does not free it... but a's own removal did
        local c = assert(rt:provision(sandbox({ id = "c" }), spec()))
        assert.are.equal(40001, c.place.agent_port)
        rt:remove({ id = "other", handle = "x", place = { agent_port = 40001 } })
        assert.are.equal("c", rt.agent_ports[40001])
    end)

    it("releases the port of a failed provisioning", function()
        local rt, engine = make({ docker = HOST, ports = { 40001, 40001 } })
        engine.fail.start = api_error("boom", 500)
        assert.is_nil(rt:provision(sandbox({ id = "a" }), spec()))
        assert.is_nil(next(rt.agent_ports))
        local b = assert(rt:provision(sandbox({ id = "b" }), spec()))
        assert.are.equal(40001, b.place.agent_port)
    end)

    it("releases the port of a sandbox removed behind the server's back (destroy event)", function()
        local rt = make({ docker = HOST, ports = { 40001 } })
        local a = assert(rt:provision(sandbox({ id = "a" }), spec()))
        assert.are.equal("a", rt.agent_ports[40001])
        rt:change_of({ action = "destroy", id = a.handle, sandbox_id = "a" })
        assert.is_nil(rt.agent_ports[40001])
    end)

    it("does not give the port of a listed (adopted) sandbox to a new one", function()
        local rt, engine = make({ docker = HOST, ports = { 45000, 45001 } })
        engine.containers = { { id = "old", labels = { ["opensandbox.io/id"] = "adopted" } } }
        engine.inspects.old = { id = "old", status = "running",
            labels = { ["opensandbox.io/id"] = "adopted", ["opensandbox.io/execd-port"] = "45000" }, host_ports = {} }
        local list = assert(rt:list())
        assert.are.same({ ports = {}, agent_port = 45000 }, list[1].place)
        local placed = assert(rt:provision(sandbox(), spec()))
        assert.are.equal(45001, placed.place.agent_port)
    end)

    it("fails at step create when no port can be had, before creating anything", function()
        local rt, engine = make({ docker = HOST, ports = { { err = "EMFILE" } } })
        local _, err = rt:provision(sandbox(), spec())
        assert.are.same({ "create", "Cannot allocate an agent port: EMFILE" }, { err.step, err.message })
        assert.are.equal(0, engine:count("create_container"))
        local busy = {}
        for i = 1, 20 do
            busy[i] = 8080
        end
        local rt2 = make({ docker = HOST, ports = busy })
        local _, err2 = rt2:provision(sandbox(), spec())
        assert.are.equal("Cannot allocate an agent port: no free port found", err2.message)
    end)

    it("does not ask for ports in bridge mode", function()
        local rt = make({ ports = {} })
        local placed = assert(rt:provision(sandbox(), spec()))
        assert.are.equal(44772, placed.place.agent_port)
        assert.is_nil(next(rt.agent_ports))
    end)
end)

describe("runtimes.docker (runtime): pause, resume, remove", function()
    it("pauses, resumes and removes the container of the record's handle, with the engine's errors", function()
        local rt, engine = make()
        local rec = { id = ID, handle = "c9", place = {} }
        assert.is_true(rt:pause(rec))
        assert.is_true(rt:resume(rec))
        assert.is_true(rt:remove(rec))
        assert.are.same({ "pause c9", "unpause c9", "remove c9" }, engine.calls)
        local e = rterrors.new("conflict", "Container c9 is already paused", { status = 409 })
        engine.fail.pause = e
        local ok, err = rt:pause(rec)
        assert.is_nil(ok)
        assert.are.equal(e, err)
    end)
end)

describe("runtimes.docker (runtime): list", function()
    local function labels_of(rec, extra)
        local l = mapping.labels_for(rec)
        for k, v in pairs(extra or {}) do
            l[k] = v
        end
        return l
    end

    it("decodes each sandbox's identity from its labels, with handle, place and status", function()
        local rt, engine = make()
        local full = labels_of({ id = "s1", created_us = 1767225600123456, expires_us = 1767229200654321,
            metadata = { team = "infra", n = "1" }, principal = "tenant-a",
            platform = { os = "linux", arch = "arm64" } })
        local manual = labels_of({ id = "s2", created_us = 1767225600000000, manual_cleanup = true })
        engine.containers = {
            { id = "c1", labels = full },
            { id = "c2", labels = manual },
            { id = "c3", labels = { ["opensandbox.io/id"] = "s3" } }, -- no created-at: not adoptable
            { id = "c4", labels = labels_of({ id = "s4", created_us = 1 },
                { ["opensandbox.io/manual-cleanup"] = "no" }) },
        }
        engine.inspects.c1 = { id = "c1", status = "running", started_us = STARTED_US, ip = "172.17.0.9",
            host_ports = { ["44772"] = 32001, ["8080"] = 32002 }, labels = full, image = "busybox:1",
            cmd = { "sleep", "300" }, access_token = "tok1", nano_cpus = 500000000, memory = 67108864 }
        engine.inspects.c2 = { id = "c2", status = "exited", exit_code = 3, finished_us = STARTED_US + 1,
            host_ports = {}, labels = manual, image = "python:3" }
        engine.inspects.c3 = { id = "c3", status = "paused", paused = true, labels = engine.containers[3].labels,
            host_ports = {} }
        engine.inspects.c4 = { id = "c4", status = "running", labels = engine.containers[4].labels, host_ports = {} }
        local list = assert(rt:list())
        assert.are.equal(4, #list)
        assert.are.same({
            id = "s1", handle = "c1",
            place = { ip = "172.17.0.9", ports = { ["44772"] = 32001, ["8080"] = 32002 }, agent_port = 44772 },
            status = { state = "Running", reason = "CONTAINER_RUNNING", message = "Sandbox container is running.",
                at_us = STARTED_US },
            sandbox = { id = "s1", created_us = 1767225600123456, expires_us = 1767229200654321,
                image_uri = "busybox:1", entrypoint = { "sleep", "300" }, metadata = { team = "infra", n = "1" },
                principal = "tenant-a", access_token = "tok1", platform = { os = "linux", arch = "arm64" },
                nano_cpus = 500000000, memory = 67108864 },
        }, list[1])
        assert.are.same({ id = "s2", created_us = 1767225600000000, image_uri = "python:3", entrypoint = {},
            metadata = {} }, list[2].sandbox)
        assert.are.same({ state = "Failed", reason = "CONTAINER_EXITED_ERROR",
            message = "Sandbox container exited with code 3.", at_us = STARTED_US + 1 }, list[2].status)
        -- incomplete labels: listed (the service removes it), without an identity
        assert.are.equal("s3", list[3].id)
        assert.is_nil(list[3].sandbox)
        assert.are.equal("Paused", list[3].status.state)
        assert.is_nil(list[4].sandbox)
    end)

    it("leaves out a container removed before its inspection, lists one it could not inspect without status", function()
        local rt, engine = make()
        engine.containers = {
            { id = "gone", labels = { ["opensandbox.io/id"] = "s1" } },
            { id = "sick", labels = { ["opensandbox.io/id"] = "s2" } },
        }
        engine.inspects.sick = api_error("inspect exploded", 500)
        local list = assert(rt:list())
        assert.are.same({ { id = "s2", handle = "sick" } }, list)
        assert.are.same({ "list", "inspect gone", "inspect sick" }, engine.calls)
    end)

    it("fails as a whole when an inspection finds the daemon unreachable, or the list itself fails", function()
        local rt, engine = make()
        engine.containers = {
            { id = "c1", labels = { ["opensandbox.io/id"] = "s1" } },
            { id = "c2", labels = { ["opensandbox.io/id"] = "s2" } },
        }
        engine.inspects.c1 = { id = "c1", status = "running", labels = {}, host_ports = {} }
        local down = rterrors.new("unavailable", "connection reset")
        engine.inspects.c2 = down
        local list, err = rt:list()
        assert.is_nil(list)
        assert.are.equal(down, err)
        engine.fail.list = down
        list, err = rt:list()
        assert.is_nil(list)
        assert.are.equal(down, err)
    end)
end)

describe("runtimes.docker (runtime): list without inspecting again", function()
    local function inspects(engine)
        local n = {}
        for _, c in ipairs(engine.calls) do
            local cid = c:match("^inspect (.*)$")
            if cid then
                n[#n + 1] = cid
            end
        end
        engine.calls = {}
        return table.concat(n, " ")
    end

    local function setup(now)
        local rt, engine = make({ now_s = function() return now[1] end })
        engine.containers = {
            { id = "r", state = "running", labels = { ["opensandbox.io/id"] = "s-r" } },
            { id = "p", state = "paused", labels = { ["opensandbox.io/id"] = "s-p" } },
            { id = "x", state = "exited", labels = { ["opensandbox.io/id"] = "s-x" } },
        }
        engine.inspects.r = { id = "r", status = "running", labels = {}, host_ports = {}, ip = "172.17.0.2" }
        engine.inspects.p = { id = "p", status = "paused", paused = true, labels = {}, host_ports = {} }
        engine.inspects.x = { id = "x", status = "exited", exit_code = 1, labels = {}, host_ports = {} }
        return rt, engine
    end

    it("inspects a settled container once, and again when its state, an event, a call or time says so", function()
        local now = { 1000 }
        local rt, engine = setup(now)
        local first = assert(rt:list())
        assert.are.equal("r p x", inspects(engine))
        -- running and paused, unchanged: the same entries again; the exited one is always inspected
        local second = assert(rt:list())
        assert.are.equal("x", inspects(engine))
        assert.are.equal(first[1], second[1])
        assert.are.same(first, second)
        -- the list shows another state: inspected
        engine.containers[1].state = "paused"
        engine.inspects.r.status, engine.inspects.r.paused = "paused", true
        assert.are.equal("Paused", assert(rt:list())[1].status.state)
        assert.are.equal("r x", inspects(engine))
        -- an event on it, a call on it
        engine.events_list = { { action = "unpause", id = "r", sandbox_id = "s-r", time_nano = 1 } }
        rt:watch(function() end)
        rt:list()
        assert.are.equal("r p x", inspects(engine)) -- (a new watch forgets everything: events may be lost)
        rt:list()
        assert.are.equal("x", inspects(engine))
        engine.events_list = {}
        rt:pause({ handle = "p" })
        rt:resume({ handle = "r" })
        engine.calls = {}
        rt:list()
        assert.are.equal("r p x", inspects(engine))
        rt:remove({ id = "s-p", handle = "p" })
        engine.calls = {}
        rt:list()
        assert.are.equal("p x", inspects(engine))
        -- at most REINSPECT_S after its inspection
        now[1] = now[1] + docker_runtime.REINSPECT_S
        rt:list()
        assert.are.equal("r p x", inspects(engine))
    end)

    it("yields now and then through a long list of containers it need not inspect (core.breathe)", function()
        local rt, engine = make()
        local breaths = 0
        rt.core.breathe = function()
            breaths = breaths + 1
        end
        engine.containers = {}
        for i = 1, 250 do
            local cid = "c" .. i
            engine.containers[i] = { id = cid, state = "running", labels = { ["opensandbox.io/id"] = "s" .. i } }
            engine.inspects[cid] = { id = cid, status = "running", labels = {}, host_ports = {} }
        end
        assert.are.equal(250, #assert(rt:list()))
        assert.are.equal(0, breaths) -- (every container inspected: each inspection yields already)
        assert.are.equal(250, #assert(rt:list()))
        assert.are.equal(250 // docker_runtime.BREATHE_EVERY, breaths)
    end)

    it("keeps nothing of a container changed while the list was inspecting, or seen otherwise than listed",
        function()
            local rt, engine = setup({ 1000 })
            local inspect = engine.inspect
            function engine.inspect(e, cid)
                if cid == "x" then -- an event about r arrives while the list waits for this inspection
                    rt:_forget_inspection("r")
                end
                return inspect(e, cid)
            end
            engine.inspects.p.status = "running" -- (changed between the list and its inspection)
            rt:list()
            assert.are.equal("r p x", inspects(engine))
            engine.inspect = inspect
            rt:list()
            assert.are.equal("r p x", inspects(engine))
            rt:list()
            assert.are.equal("p x", inspects(engine)) -- (p listed paused, inspected running: never kept)
        end)

    it("keeps each list's record of changes when lists run at once", function()
        local rt, engine = setup({ 1000 })
        local inspect = engine.inspect
        local outer = true
        function engine.inspect(e, cid)
            if outer and cid == "p" then -- an event about r, which this list already inspected
                rt:_forget_inspection("r")
            elseif outer and cid == "x" then -- meanwhile another list runs from start to end
                outer = false
                assert(rt:list())
            end
            return inspect(e, cid)
        end
        assert(rt:list())
        engine.inspect = inspect
        engine.calls = {}
        -- r changed after the first list inspected it: inspected again, though the second list (which
        -- began after the event) finished in between
        rt:list()
        assert.are.equal("r x", inspects(engine))
        rt:list()
        assert.are.equal("x", inspects(engine))
        assert.are.same({}, rt.listing, "no list under way is remembered")
    end)

    it("forgets the record of a list that raised half-way", function()
        local rt, engine = setup({ 1000 })
        local inspect = engine.inspect
        function engine.inspect(e, cid)
            if cid == "p" then
                error("inspection raised")
            end
            return inspect(e, cid)
        end
        assert.has_error(function()
            rt:list()
        end)
        engine.inspect = inspect
        collectgarbage()
        collectgarbage()
        assert.is_nil(next(rt.listing), "the raised list's table went with the collection")
        assert(rt:list()) -- and lists go on as before
        assert.is_nil(next(rt.listing))
    end)

    it("does not give again an entry whose ownership changed", function()
        local rt, engine = setup({ 1000 })
        rt:list()
        engine.calls = {}
        local own = rt.ownership
        rt.ownership = function(_, labels) -- (taken over: the same container now counts as another's)
            return own(rt, labels) and "foreign"
        end
        local out = assert(rt:list())
        assert.are.equal("r p x", inspects(engine))
        assert.is_true(out[1].foreign)
    end)
end)

describe("runtimes.docker (runtime): private images", function()
    it("passes image.verify to the image step (a pull even when present)", function()
        local rt, engine = make()
        local sp = spec()
        sp.image.verify = true
        assert(rt:provision(sandbox(), sp))
        assert.are.equal("ensure_image busybox:1 (verify)", engine.calls[1])
    end)
end)

describe("runtimes.docker (runtime): ownership (servers sharing a daemon)", function()
    local function c(id, instance)
        return { id = "c-" .. id, labels = { ["opensandbox.io/id"] = id, ["opensandbox.io/instance"] = instance } }
    end

    local function listed(rt, engine)
        for _, x in ipairs(engine.containers) do
            engine.inspects[x.id] = { id = x.id, status = "running", labels = x.labels, host_ports = {} }
        end
        local out = {}
        for _, e in ipairs(assert(rt:list())) do
            out[#out + 1] = e.id .. (e.foreign and " foreign" or "")
        end
        return out
    end

    it("labels its containers with the store's identity, lists only those and unlabelled ones (foreign)", function()
        local rt, engine = make({ identity = { server = "me-uuid", adopted = {} } })
        assert(rt:provision(sandbox(), spec()))
        assert.are.equal("me-uuid", engine.specs[1].instance)
        engine.containers = { c("mine", "me-uuid"), c("theirs", "other-uuid"), c("old", nil) }
        engine.calls = {}
        assert.are.same({ "mine", "old foreign" }, listed(rt, engine))
        -- another server's container is not even inspected
        assert.are.equal(0, engine:count("inspect c-theirs"))
    end)

    it("docker.instance, when set, is the identity (an explicit shared name)", function()
        local rt, engine = make({ docker = { instance = "blue" }, identity = { server = "me-uuid", adopted = {} } })
        assert(rt:provision(sandbox(), spec()))
        assert.are.equal("blue", engine.specs[1].instance)
        engine.containers = { c("b", "blue"), c("mine", "me-uuid") }
        assert.are.same({ "b" }, listed(rt, engine))
    end)

    it("takes over the identities named to adopt, and unlabelled containers only when told", function()
        local rt, engine = make({ identity = { server = "me", adopted = { "gone-uuid", "unlabelled" } } })
        engine.containers = { c("mine", "me"), c("taken", "gone-uuid"), c("theirs", "other"), c("old", nil) }
        assert.are.same({ "mine", "taken", "old" }, listed(rt, engine))
    end)

    it("watches only its own containers' events", function()
        local rt, engine = make({ identity = { server = "me", adopted = {} } })
        engine.events_list = {
            { action = "die", id = "c1", sandbox_id = "s1", instance = "other", exit_code = 0, time_nano = 1 },
            { action = "die", id = "c2", sandbox_id = "s2", instance = "me", exit_code = 0, time_nano = 2 },
            { action = "die", id = "c3", sandbox_id = "s3", exit_code = 0, time_nano = 3 },
        }
        local seen = {}
        rt:watch(function(ch)
            seen[#seen + 1] = ch.id
        end)
        assert.are.same({ "s2", "s3" }, seen)
    end)
end)

describe("runtimes.docker (runtime): changes", function()
    local T = 1767225600123456789 -- ns

    local function ev(action, fields)
        local e = { action = action, id = "c1", sandbox_id = ID, time_nano = T }
        for k, v in pairs(fields or {}) do
            e[k] = v
        end
        return e
    end

    it("turns oom then die(137) into Failed (out of memory), at the die's time", function()
        local rt = make()
        assert.is_nil(rt:change_of(ev("oom")))
        assert.are.same({ id = ID, handle = "c1", status = { state = "Failed", reason = "CONTAINER_EXITED_ERROR",
            message = "Sandbox container exited with code 137 (out of memory).", at_us = T // 1000 } },
            rt:change_of(ev("die", { exit_code = 137 })))
        -- the oom was that container's only: its next die is a plain one
        assert.are.equal("Sandbox container exited with code 137.",
            rt:change_of(ev("die", { exit_code = 137 })).status.message)
    end)

    it("keeps an oom to its own container", function()
        local rt = make()
        rt:change_of(ev("oom", { id = "other" }))
        assert.are.equal("Sandbox container exited with code 1.",
            rt:change_of(ev("die", { exit_code = 1 })).status.message)
    end)

    it("maps die 0 to Terminated and another code to Failed", function()
        local rt = make()
        assert.are.same({ state = "Terminated", reason = "CONTAINER_EXITED",
            message = "Sandbox container exited successfully.", at_us = T // 1000 },
            rt:change_of(ev("die", { exit_code = 0 })).status)
        assert.are.same({ state = "Failed", reason = "CONTAINER_EXITED_ERROR",
            message = "Sandbox container exited with code 2.", at_us = T // 1000 },
            rt:change_of(ev("die", { exit_code = 2 })).status)
    end)

    it("maps start, pause and unpause to Running/Paused, destroy to gone, and ignores the rest", function()
        local rt = make()
        assert.are.same({ state = "Running", reason = "CONTAINER_RUNNING", message = "Sandbox container is running.",
            at_us = T // 1000 }, rt:change_of(ev("start")).status)
        assert.are.same({ state = "Paused", reason = "CONTAINER_PAUSED", message = "Sandbox container is paused.",
            at_us = T // 1000 }, rt:change_of(ev("pause")).status)
        assert.are.equal("Running", rt:change_of(ev("unpause")).status.state)
        assert.are.same({ id = ID, handle = "c1", gone = true }, rt:change_of(ev("destroy")))
        for _, a in ipairs({ "create", "exec_start", "exec_die", "kill", "attach", "rename", "resize", "commit" }) do
            assert.is_nil(rt:change_of(ev(a)), a)
        end
        -- no time: "when you see it"
        assert.is_nil(rt:change_of({ action = "start", id = "c1", sandbox_id = ID }).status.at_us)
    end)

    it("watches from now, delivers the changes of sandboxes, and resumes from the last event", function()
        local rt, engine = make({ now_s = function() return 1767225000.75 end })
        engine.events_list = {
            ev("create"),
            ev("start", { time_nano = T }),
            { action = "start", id = "x", time_nano = T + 1 }, -- no sandbox id: not ours to tell
            ev("oom", { time_nano = T + 2 }),
            ev("die", { exit_code = 137, time_nano = T + 3 }),
            ev("destroy", { time_nano = 1767225700999999999 }),
        }
        local changes = {}
        local res, err = rt:watch(function(c)
            changes[#changes + 1] = c
        end)
        assert.is_nil(res)
        assert.are.equal("unavailable", err.kind)
        assert.are.same({ since = 1767225000 }, engine.events_calls[1])
        assert.are.same({
            { id = ID, handle = "c1", status = { state = "Running", reason = "CONTAINER_RUNNING",
                message = "Sandbox container is running.", at_us = T // 1000 } },
            { id = ID, handle = "c1", status = { state = "Failed", reason = "CONTAINER_EXITED_ERROR",
                message = "Sandbox container exited with code 137 (out of memory).", at_us = (T + 3) // 1000 } },
            { id = ID, handle = "c1", gone = true },
        }, changes)
        rt:watch(function() end)
        assert.are.same({ since = 1767225700 }, engine.events_calls[2])
    end)
end)

describe("runtimes.docker (runtime): address", function()
    local BRIDGE_PLACE = { ip = "172.17.0.5", ports = { ["44772"] = 32001, ["8080"] = 33001 }, agent_port = 44772 }

    it("bridge: the proxy reaches the container's IP on the port itself", function()
        local rt = make()
        local rec = { id = ID, handle = "c1", place = BRIDGE_PLACE }
        assert.are.same({ host = "172.17.0.5", port = 3000 }, rt:address(rec, 3000, "proxy"))
        assert.are.same({ host = "172.17.0.5", port = 44772 }, rt:address(rec, 44772, "proxy"))
        local none, err = rt:address({ id = ID, handle = "c1", place = { ports = {} } }, 3000, "proxy")
        assert.is_nil(none)
        assert.are.equal("conflict", err.kind)
        assert.is_nil(rt:address({ id = ID, handle = "c1" }, 3000, "proxy"))
    end)

    it("bridge: 8080 is published directly, any other port goes through the agent's /proxy/P", function()
        local rt = make()
        local rec = { id = ID, handle = "c1", place = BRIDGE_PLACE }
        assert.are.same({ host = "127.0.0.1", port = 33001 }, rt:address(rec, 8080, "public"))
        assert.are.same({ host = "127.0.0.1", port = 32001, path = "/proxy/3000", agent = true },
            rt:address(rec, 3000, "public"))
        assert.are.same({ host = "127.0.0.1", port = 32001, path = "/proxy/44772", agent = true },
            rt:address(rec, 44772, "public"))
        -- 8080 not published (yet): through the agent too
        local no8080 = { id = ID, handle = "c1", place = { ip = "172.17.0.5", ports = { ["44772"] = 32001 } } }
        assert.are.same({ host = "127.0.0.1", port = 32001, path = "/proxy/8080", agent = true },
            rt:address(no8080, 8080, "public"))
        -- nothing published: no address
        local none, err = rt:address({ id = ID, handle = "c1", place = { ip = "172.17.0.5", ports = {} } }, 3000,
            "public")
        assert.is_nil(none)
        assert.are.equal("conflict", err.kind)
    end)

    it("takes the public host from docker.host_ip: a wildcard means the server's, IPv6 is bracketed", function()
        local rec = { id = ID, handle = "c1", place = BRIDGE_PLACE }
        for host_ip, want in pairs({ ["0.0.0.0"] = false, ["::"] = false, [""] = false, ["10.1.2.3"] = "10.1.2.3",
            ["::1"] = "[::1]", ["fd00::5"] = "[fd00::5]", ["[fd00::6]"] = "[fd00::6]" }) do
            local rt = make({ docker = { host_ip = host_ip } })
            local addr = rt:address(rec, 8080, "public")
            assert.are.equal(want or nil, addr.host, host_ip)
            assert.are.equal(33001, addr.port)
            assert.are.equal(want or nil, rt:address(rec, 3000, "public").host, host_ip)
        end
    end)

    it("host mode: the agent on the sandbox's own port, other ports directly, the proxy on loopback", function()
        local rt = make({ docker = { network_mode = "host", host_ip = "0.0.0.0" } })
        local rec = { id = ID, handle = "c1", place = { ports = {}, agent_port = 40001 } }
        assert.are.same({ host = "127.0.0.1", port = 40001 }, rt:address(rec, 44772, "proxy"))
        assert.are.same({ host = "127.0.0.1", port = 3000 }, rt:address(rec, 3000, "proxy"))
        assert.are.same({ host = "127.0.0.1", port = 8080 }, rt:address(rec, 8080, "proxy"))
        assert.are.same({ port = 40001, path = "/proxy/44772", agent = true }, rt:address(rec, 44772, "public"))
        assert.are.same({ port = 8080 }, rt:address(rec, 8080, "public"))
        assert.are.same({ port = 3000 }, rt:address(rec, 3000, "public"))
        local v6 = make({ docker = { network_mode = "host", host_ip = "::1" } })
        assert.are.same({ host = "[::1]", port = 40001, path = "/proxy/44772", agent = true },
            v6:address(rec, 44772, "public"))
    end)
end)

describe("runtimes.docker (runtime): through the real engine on a fake Engine API", function()
    it("provisions with the agent volume: fills it once, mounts it read-only with NoCopy, labels and token", function()
        local fake = fake_client.new()
        local rt = docker_runtime.new({ docker = { instance = "i1", agent_delivery = "volume" }, runtime = {} },
            { client = fake, log = new_log(), agent_files = FILES,
              core = { now_s = stepping_clock(), uuid = { v4 = function() return "u" end } } })
        fake:on("GET", "^/v1%.41/images/busybox:1/json$", { body = '{"RepoTags":["busybox:1"]}' })
        fake:on("GET", "^/v1%.41/volumes/opensandbox%-agent%-t1$", { status = 404,
            body = '{"message":"no such volume"}' })
        fake:on("POST", "^/v1%.41/images/create%?fromSrc=%-", { chunks = { '{"status":"sha256:1"}\n' } })
        fake:on("POST", "^/v1%.41/volumes/create$", { status = 201, body = "{}" })
        fake:on("POST", "^/v1%.41/containers/create%?name=opensandbox%-agent%-t1%-fill$", { status = 201,
            body = '{"Id":"f1"}' })
        fake:on("PUT", "^/v1%.41/containers/f1/archive%?path=/$", { status = 200 })
        fake:on("DELETE", "^/v1%.41/containers/f1%?", { status = 204 })
        fake:on("DELETE", "^/v1%.41/images/opensandbox%-agent%-fill:opensandbox%-agent%-t1%?force=true$",
            { body = "[]" })
        fake:on("GET", "^/v1%.41/volumes%?filters=", { body = '{"Volumes":[]}' })
        fake:on("POST", "^/v1%.41/containers/create%?name=sandbox%-", { status = 201,
            body = '{"Id":"c1","Warnings":[]}' })
        fake:on("POST", "^/v1%.41/containers/c1/start$", { status = 204 })
        fake:on("GET", "^/v1%.41/containers/c1/json$", { body = json.encode({
            Id = "c1", Name = "/sandbox-" .. ID,
            State = { Status = "running", Running = true, StartedAt = "2026-01-01T00:00:00.123456789Z" },
            Config = { Image = "busybox:1", Labels = { ["opensandbox.io/id"] = ID } },
            NetworkSettings = { Networks = { bridge = { IPAddress = "172.17.0.7" } },
                Ports = { ["44772/tcp"] = { { HostIp = "127.0.0.1", HostPort = "32768" } },
                    ["8080/tcp"] = { { HostIp = "127.0.0.1", HostPort = "32769" } } } },
        }) })
        local placed = assert(rt:provision(sandbox(), spec()))
        assert.are.equal("c1", placed.handle)
        assert.are.same({ ip = "172.17.0.7", ports = { ["44772"] = 32768, ["8080"] = 32769 }, agent_port = 44772 },
            placed.place)
        assert.are.same({ state = "Running", reason = "CONTAINER_RUNNING", message = "Sandbox container is running.",
            at_us = 1767225600123456 }, placed.status)
        -- the fill: the volume holds what the upload put there (the image's files are not copied: NoCopy)
        local fill = json.decode(fake:find("POST", "name=opensandbox%-agent%-t1%-fill")[1].body)
        assert.is_true(fill.HostConfig.Mounts[1].VolumeOptions.NoCopy)
        local upload = fake:find("PUT", "/containers/f1/archive")[1].body
        assert.are.equal(upload, fake:find("POST", "fromSrc=")[1].body)
        -- the sandbox: mounts the volume read-only with NoCopy, carries the identity and the agent token
        local body = json.decode(fake:find("POST", "name=sandbox%-")[1].body)
        assert.are.same({ { Type = "volume", Source = "opensandbox-agent-t1", Target = "/opt/opensandbox",
            ReadOnly = true, VolumeOptions = { NoCopy = true } } }, body.HostConfig.Mounts)
        assert.are.same({ "/opt/opensandbox/bootstrap.sh" }, body.Entrypoint)
        assert.are.same({ "sleep", "300" }, body.Cmd)
        assert.are.same({ "FOO=bar", "OPENSANDBOX_EXECD_PORT=44772", "EXECD_ACCESS_TOKEN=tok123" }, body.Env)
        assert.are.equal(ID, body.Labels["opensandbox.io/id"])
        assert.are.equal("i1", body.Labels["opensandbox.io/instance"])
        assert.are.equal("tenant-a", body.Labels["opensandbox.io/principal"])
        assert.are.equal(0, #fake:find("PUT", "/containers/c1/archive"))

        -- a second sandbox: no look at the volume, no fill
        fake:on("GET", "^/v1%.41/volumes/opensandbox%-agent%-t1$",
            { body = '{"Labels":{"opensandbox.io/agent":"true"}}' })
        fake:on("GET", "^/v1%.41/containers/c1/json$", { body = json.encode({ Id = "c1",
            State = { Status = "running", Running = true }, Config = {}, NetworkSettings = {} }) })
        assert(rt:provision(sandbox({ id = "second" }), spec()))
        assert.are.equal(1, #fake:find("POST", "fromSrc="))
        assert.are.equal(1, #fake:find("POST", "/volumes/create"))
        assert.are.equal(1, #fake:find("GET", "/volumes/opensandbox%-agent%-t1$"))
    end)
end)
