-- Unit specs of runtimes.docker.mapping: labels, the create body, inspect normalisation and the §3.2
-- status mapping. Pure functions, no client.
local mapping = require("runtimes.docker.mapping")
local json = require("common.json")

local CREATED = 1700000000123456 -- 2023-11-14T22:13:20.123456Z
local EXPIRES = CREATED + 600 * 1000000

local function base_spec(over)
    local s = {
        id = "11111111-2222-4333-8444-555555555555",
        image_uri = "python:3.12",
        entrypoint = { "python", "-m", "http.server" },
        env = { { "A", "1" }, { "EMPTY", "" } },
        created_us = CREATED,
        expires_us = EXPIRES,
        metadata = {},
    }
    for k, v in pairs(over or {}) do
        s[k] = v
    end
    return s
end

local function body(spec, config)
    local text = mapping.create_body(spec, config)
    return assert(json.decode(text)), text
end

describe("runtimes.docker.mapping: principal label", function()
    it("records the creating tenant so that adoption keeps tenancy", function()
        local labels = mapping.labels_for({ id = "abc", created_us = CREATED, principal = "team-a" })
        assert.are.equal("team-a", labels["opensandbox.io/principal"])
        labels = mapping.labels_for({ id = "abc", created_us = CREATED })
        assert.is_nil(labels["opensandbox.io/principal"])
    end)
end)

describe("runtimes.docker.mapping: instance label", function()
    it("labels the container with docker.instance when it is set, and only then", function()
        local b = body(base_spec(), { instance = "blue" })
        assert.are.equal("blue", b.Labels["opensandbox.io/instance"])
        b = body(base_spec(), {})
        assert.is_nil(b.Labels["opensandbox.io/instance"])
    end)
end)

describe("runtimes.docker.mapping.labels_for", function()
    it("writes the §8.3 labels of a timed sandbox", function()
        local labels = mapping.labels_for({
            id = "abc", created_us = CREATED, expires_us = EXPIRES, metadata = { team = "infra", note = "" },
            agent_port = 44772,
        })
        assert.are.equal("abc", labels["opensandbox.io/id"])
        assert.are.equal("2023-11-14T22:13:20.123456Z", labels["opensandbox.io/created-at"])
        assert.are.equal("2023-11-14T22:23:20.123456Z", labels["opensandbox.io/expires-at"])
        assert.is_nil(labels["opensandbox.io/manual-cleanup"])
        assert.are.equal("44772", labels["opensandbox.io/execd-port"])
        assert.are.same({ team = "infra", note = "" }, json.decode(labels["opensandbox.io/metadata"]))
        assert.is_nil(labels["opensandbox.io/platform-os"])
        for k, v in pairs(labels) do
            assert.are.equal("string", type(v), k)
        end
    end)

    it("marks manual cleanup, omits empty metadata, adds the platform", function()
        local labels = mapping.labels_for({
            id = "abc", created_us = CREATED, metadata = {}, agent_port = 40001,
            platform = { os = "linux", arch = "arm64" },
        })
        assert.are.equal("true", labels["opensandbox.io/manual-cleanup"])
        assert.is_nil(labels["opensandbox.io/expires-at"])
        assert.is_nil(labels["opensandbox.io/metadata"])
        assert.are.equal("40001", labels["opensandbox.io/execd-port"])
        assert.are.equal("linux", labels["opensandbox.io/platform-os"])
        assert.are.equal("arm64", labels["opensandbox.io/platform-arch"])
    end)

    it("treats manual_cleanup as winning over an expiry", function()
        local labels = mapping.labels_for({
            id = "x", created_us = CREATED, expires_us = EXPIRES, manual_cleanup = true,
        })
        assert.are.equal("true", labels["opensandbox.io/manual-cleanup"])
        assert.is_nil(labels["opensandbox.io/expires-at"])
    end)
end)

describe("runtimes.docker.mapping.create_body", function()
    it("builds the bridge body of §8.2 with the defaults", function()
        local b = body(base_spec(), {})
        assert.are.equal("python:3.12", b.Image)
        assert.are.same({ "/opt/opensandbox/bootstrap.sh" }, b.Entrypoint)
        assert.are.same({ "python", "-m", "http.server" }, b.Cmd)
        assert.are.same({ "A=1", "EMPTY=", "OPENSANDBOX_EXECD_PORT=44772" }, b.Env)
        assert.are.same({ ["44772/tcp"] = {}, ["8080/tcp"] = {} }, b.ExposedPorts)
        local hc = b.HostConfig
        assert.are.equal("bridge", hc.NetworkMode)
        assert.are.same({ { HostIp = "127.0.0.1", HostPort = "" } }, hc.PortBindings["44772/tcp"])
        assert.are.same({ { HostIp = "127.0.0.1", HostPort = "" } }, hc.PortBindings["8080/tcp"])
        assert.are.same(mapping.DEFAULT_CONFIG.drop_capabilities, hc.CapDrop)
        assert.are.same({ "no-new-privileges:true" }, hc.SecurityOpt)
        assert.are.equal(4096, hc.PidsLimit)
        assert.are.same({ Name = "no" }, hc.RestartPolicy)
        assert.are.equal(false, hc.AutoRemove)
        assert.is_nil(hc.NanoCpus)
        assert.is_nil(hc.Memory)
        assert.is_nil(hc.DeviceRequests)
        assert.is_nil(hc.Runtime)
        assert.are.equal("11111111-2222-4333-8444-555555555555", b.Labels["opensandbox.io/id"])
    end)

    it("uses a user-defined network like bridge, on the configured host_ip", function()
        local b = body(base_spec(), { network_mode = "mynet", host_ip = "0.0.0.0" })
        assert.are.equal("mynet", b.HostConfig.NetworkMode)
        assert.are.equal("0.0.0.0", b.HostConfig.PortBindings["8080/tcp"][1].HostIp)
        assert.are.same({ ["44772/tcp"] = {}, ["8080/tcp"] = {} }, b.ExposedPorts)
    end)

    it("has no port fields in host mode and passes the agent port", function()
        local b = body(base_spec({ agent_port = 41234 }), { network_mode = "host" })
        assert.are.equal("host", b.HostConfig.NetworkMode)
        assert.is_nil(b.ExposedPorts)
        assert.is_nil(b.HostConfig.PortBindings)
        assert.are.equal("OPENSANDBOX_EXECD_PORT=41234", b.Env[#b.Env])
        assert.are.equal("41234", b.Labels["opensandbox.io/execd-port"])
    end)

    it("writes resources exactly, including integers beyond 14 digits", function()
        local mem = 200 * 1024 ^ 4 // 1 -- 200 TiB = 219902325555200 (15 digits)
        local b, text = body(base_spec({ nano_cpus = 2500000000, memory = mem, gpu = "2" }), {})
        assert.are.equal(2500000000, b.HostConfig.NanoCpus)
        assert.is_truthy(text:find('"Memory":219902325555200', 1, true))
        assert.is_truthy(text:find('"NanoCpus":2500000000', 1, true))
        assert.are.same({ { Count = 2, Capabilities = { { "gpu" } } } }, b.HostConfig.DeviceRequests)
        local all = body(base_spec({ gpu = "all" }), {})
        assert.are.equal(-1, all.HostConfig.DeviceRequests[1].Count)
        local max = body(base_spec({ memory = math.maxinteger }), {})
        assert.is_truthy(select(2, body(base_spec({ memory = math.maxinteger }), {}))
            :find('"Memory":9223372036854775807', 1, true))
        assert.is_truthy(max.HostConfig.Memory)
    end)

    it("does not let a user string forge the integer marker", function()
        local _, text = body(base_spec({ entrypoint = { "\1int00000000:5\1", "@@5@@" } }), {})
        local b = json.decode(text)
        assert.are.equal("string", type(b.Cmd[1]))
        assert.are.equal("\1int00000000:5\1", b.Cmd[1])
    end)

    it("applies the security configuration", function()
        local b = body(base_spec(), {
            drop_capabilities = {}, no_new_privileges = false, apparmor_profile = "my-aa",
            seccomp_profile = "/etc/seccomp.json", pids_limit = false, runtime = "runsc",
        })
        local hc = b.HostConfig
        assert.are.same({}, hc.CapDrop)
        assert.is_truthy(select(2, body(base_spec(), { drop_capabilities = {} })):find('"CapDrop":[]', 1, true))
        assert.are.same({ "apparmor=my-aa", "seccomp=/etc/seccomp.json" }, hc.SecurityOpt)
        assert.is_nil(hc.PidsLimit)
        assert.are.equal("runsc", hc.Runtime)
        assert.is_nil(body(base_spec(), { pids_limit = 0 }).HostConfig.PidsLimit)
        assert.is_nil(body(base_spec(), { no_new_privileges = false }).HostConfig.SecurityOpt)
    end)

    it("owns OPENSANDBOX_EXECD_PORT and EXECD_ACCESS_TOKEN", function()
        local b = body(base_spec({
            env = { { "OPENSANDBOX_EXECD_PORT", "1" }, { "B", "x=y" }, { "EXECD_ACCESS_TOKEN", "mine" } },
            access_token = "t0k",
        }), {})
        assert.are.same({ "B=x=y", "OPENSANDBOX_EXECD_PORT=44772", "EXECD_ACCESS_TOKEN=t0k" }, b.Env)
        -- without a server token the user's variable is passed through
        local b2 = body(base_spec({ env = { { "EXECD_ACCESS_TOKEN", "mine" } } }), {})
        assert.are.same({ "EXECD_ACCESS_TOKEN=mine", "OPENSANDBOX_EXECD_PORT=44772" }, b2.Env)
    end)

    it("adds extra labels but never in the reserved prefix", function()
        local b = body(base_spec({ extra_labels = { ["opensandbox.test"] = "1" } }), {})
        assert.are.equal("1", b.Labels["opensandbox.test"])
        assert.has_error(function()
            mapping.create_body(base_spec({ extra_labels = { ["opensandbox.io/id"] = "x" } }), {})
        end)
    end)

    it("writes metadata and platform labels", function()
        local b = body(base_spec({ metadata = { a = "b" }, platform = { os = "linux", arch = "amd64" } }), {})
        assert.are.same({ a = "b" }, json.decode(b.Labels["opensandbox.io/metadata"]))
        assert.are.equal("amd64", b.Labels["opensandbox.io/platform-arch"])
    end)
end)

-- a Docker inspect document with the fields the adapter reads
local function doc(state, over)
    local d = {
        Id = "c0ffee",
        Name = "/sandbox-abc",
        State = {
            Status = "running", Running = true, Paused = false, Restarting = false, OOMKilled = false,
            ExitCode = 0, Error = "", StartedAt = "2023-11-14T22:13:20.5Z", FinishedAt = "0001-01-01T00:00:00Z",
        },
        Config = {
            Image = "python:3.12", Cmd = { "python" }, Labels = { ["opensandbox.io/id"] = "abc", vendor = "x" },
        },
        NetworkSettings = {
            IPAddress = "172.17.0.5",
            Ports = {
                ["44772/tcp"] = { { HostIp = "127.0.0.1", HostPort = "49153" } },
                ["8080/tcp"] = { { HostIp = "0.0.0.0", HostPort = "49154" }, { HostIp = "::", HostPort = "49154" } },
                ["9999/tcp"] = json.null,
            },
            Networks = { bridge = { IPAddress = "172.17.0.5" } },
        },
    }
    for k, v in pairs(state or {}) do
        d.State[k] = v
    end
    for k, v in pairs(over or {}) do
        d[k] = v
    end
    return d
end

describe("runtimes.docker.mapping.normalize_inspect", function()
    it("flattens a running container", function()
        local i = mapping.normalize_inspect(doc(), "bridge")
        assert.are.equal("c0ffee", i.id)
        assert.are.equal("sandbox-abc", i.name)
        assert.are.equal("running", i.status)
        assert.is_true(i.running)
        assert.is_false(i.paused)
        assert.are.equal(0, i.exit_code)
        assert.are.equal(math.type(0), math.type(i.exit_code))
        assert.are.equal(1700000000500000, i.started_us)
        assert.is_nil(i.finished_us)
        assert.are.equal("172.17.0.5", i.ip)
        assert.are.same({ ["44772"] = 49153, ["8080"] = 49154 }, i.host_ports)
        assert.are.equal("python:3.12", i.image)
        assert.are.same({ "python" }, i.cmd)
        assert.are.equal("abc", i.labels["opensandbox.io/id"])
    end)

    it("reads the limits the container was made with (0 is none), for quotas after a restart", function()
        local i = mapping.normalize_inspect(doc(nil, { HostConfig = { NanoCpus = 1500000000, Memory = 67108864 } }),
            "bridge")
        assert.are.equal(1500000000, i.nano_cpus)
        assert.are.equal("integer", math.type(i.memory))
        assert.are.equal(67108864, i.memory)
        i = mapping.normalize_inspect(doc(nil, { HostConfig = { NanoCpus = 0, Memory = 0 } }), "bridge")
        assert.is_nil(i.nano_cpus)
        assert.is_nil(i.memory)
        assert.is_nil(mapping.normalize_inspect(doc(), "bridge").memory)
    end)

    it("reads the IP of a user-defined network and no ports in host mode", function()
        local d = doc(nil, { NetworkSettings = {
            IPAddress = "", Ports = {},
            Networks = { other = { IPAddress = "10.0.0.2" }, mynet = { IPAddress = "10.1.0.3" } },
        } })
        assert.are.equal("10.1.0.3", mapping.normalize_inspect(d, "mynet").ip)
        local h = doc(nil, {
            NetworkSettings = { IPAddress = "", Ports = json.null, Networks = { host = { IPAddress = "" } } },
        })
        local i = mapping.normalize_inspect(h, "host")
        assert.is_nil(i.ip)
        assert.are.same({}, i.host_ports)
    end)
end)

describe("runtimes.docker.mapping.status_of", function()
    local function status(state)
        return { mapping.status_of(mapping.normalize_inspect(doc(state), "bridge")) }
    end

    it("reports Paused before Running (Docker says Running=true while paused)", function()
        local s = status({ Status = "paused", Running = true, Paused = true })
        assert.are.same({ "Paused", "CONTAINER_PAUSED", "Sandbox container is paused." }, s)
    end)

    it("reports Running with StartedAt", function()
        assert.are.same({ "Running", "CONTAINER_RUNNING", "Sandbox container is running.", 1700000000500000 }, status())
        assert.are.same({ "Running", "CONTAINER_RESTARTING", "Sandbox container is restarting.", 1700000000500000 },
            status({ Status = "restarting", Restarting = true }))
    end)

    it("reports created, removing", function()
        assert.are.same({ "Pending", "CONTAINER_STARTING", "Sandbox container is starting." },
            status({ Status = "created", Running = false, StartedAt = "0001-01-01T00:00:00Z" }))
        assert.are.same({ "Stopping", "CONTAINER_REMOVING", "Sandbox is being deleted." },
            status({ Status = "removing", Running = false }))
    end)

    it("reports exits with FinishedAt", function()
        local fin = "2023-11-14T22:23:20.000001999Z"
        local at = 1700000600000001
        assert.are.same({ "Terminated", "CONTAINER_EXITED", "Sandbox container exited successfully.", at },
            status({ Status = "exited", Running = false, ExitCode = 0, FinishedAt = fin }))
        assert.are.same({ "Failed", "CONTAINER_EXITED_ERROR", "Sandbox container exited with code 137.", at },
            status({ Status = "exited", Running = false, ExitCode = 137, FinishedAt = fin }))
        assert.are.same({ "Failed", "CONTAINER_EXITED_ERROR", "Sandbox container exited with code 137 (out of memory).",
            at }, status({ Status = "exited", Running = false, ExitCode = 137, OOMKilled = true, FinishedAt = fin }))
        assert.are.same({ "Failed", "CONTAINER_EXITED_ERROR", "Sandbox container exited with code 2." },
            { select(1, mapping.status_of({ status = "dead", exit_code = 2 })) })
    end)

    it("returns nil for an unknown Docker status", function()
        assert.is_nil(mapping.status_of({ status = "weird" }))
    end)
end)
