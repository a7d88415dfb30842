-- Integration: containment seen from inside a sandbox (RELIABILITY.md, "Containment"). Commands run through
-- the sandbox's own agent (POST /command on the 44772 endpoint with its token), as the SDK runs them:
--   * the capabilities of docker.drop_capabilities (the default list) are absent from CapEff and CapBnd
--   * NoNewPrivs is 1
--   * a fork bomb stops at docker.pids_limit while the server and another sandbox carry on
--   * the memory limit is the configured one and a command that exceeds it is OOM-killed (a main process
--     killed that way makes the sandbox Failed "... (out of memory).": tests/lua/integration/lifecycle/
--     api_spec.lua, "reports an OOM kill and a GPU request the host cannot satisfy")
--   * the agent wants its token (401 without or with a wrong one), and one sandbox's token opens no other
--     sandbox's agent, from the host or from inside the first sandbox
local R = require("reliability.support")
local H = R.H
local json = R.json
local schema = require("config.schema")

local INSTANCE = "rel-contain"
local PIDS = 64

-- Linux capability numbers (linux/capability.h) of the names Docker accepts in CapDrop.
local CAP_NUMBERS = {
    CHOWN = 0, DAC_OVERRIDE = 1, DAC_READ_SEARCH = 2, FOWNER = 3, FSETID = 4, KILL = 5, SETGID = 6, SETUID = 7,
    SETPCAP = 8, LINUX_IMMUTABLE = 9, NET_BIND_SERVICE = 10, NET_BROADCAST = 11, NET_ADMIN = 12, NET_RAW = 13,
    IPC_LOCK = 14, IPC_OWNER = 15, SYS_MODULE = 16, SYS_RAWIO = 17, SYS_CHROOT = 18, SYS_PTRACE = 19,
    SYS_PACCT = 20, SYS_ADMIN = 21, SYS_BOOT = 22, SYS_NICE = 23, SYS_RESOURCE = 24, SYS_TIME = 25,
    SYS_TTY_CONFIG = 26, MKNOD = 27, LEASE = 28, AUDIT_WRITE = 29, AUDIT_CONTROL = 30, SETFCAP = 31,
}

local function status_field(text, name)
    return text:match(name .. ":%s*(%S+)")
end

describe("containment from inside a sandbox #integration #docker", function()
    local srv, a, b

    setup(function()
        H.ensure_image()
        R.remove_instance(INSTANCE)
        srv = R.start(INSTANCE, { docker = { pids_limit = PIDS } })
        a = R.create_running(srv, { resourceLimits = { cpu = "500m", memory = "64Mi" } })
        b = R.create_running(srv)
    end)

    teardown(function()
        R.cleanup(INSTANCE)
    end)

    it("has none of the dropped capabilities, and NoNewPrivs", function()
        local mask = 0
        for _, name in ipairs(schema.DEFAULT_CAP_DROP) do
            assert.is_number(CAP_NUMBERS[name], name)
            mask = mask | (1 << CAP_NUMBERS[name])
        end
        local out = R.exec(srv, a, "cat /proc/self/status")
        assert.are.equal(0, out.exit, json.encode(out.events))
        for _, field in ipairs({ "CapEff", "CapBnd", "CapPrm" }) do
            local hex = status_field(out.stdout, field)
            assert.is_string(hex, field .. " in " .. out.stdout)
            local v = tonumber(hex, 16)
            assert.are.equal(0, v & mask, string.format("%s %s has dropped bits %x", field, hex, v & mask))
        end
        -- the reading means something: the agent runs as root with Docker's default set (CHOWN, KILL, ...)
        local eff = tonumber(status_field(out.stdout, "CapEff"), 16)
        assert.are_not.equal(0, eff & (1 << CAP_NUMBERS.CHOWN))
        assert.are.equal("1", status_field(out.stdout, "NoNewPrivs"))
        -- and what the mask stands for really fails: no raw sockets (NET_RAW), no mknod (MKNOD)
        out = R.exec(srv, a, "mknod /tmp/dev-null-copy c 1 3 && echo mknod-worked; echo done")
        assert.is_nil(out.stdout:find("mknod-worked", 1, true), out.stdout)
    end)

    it("stops a fork bomb at pids_limit while the server and another sandbox carry on", function()
        local out = R.exec(srv, a,
            "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max")
        assert.are.equal(tostring(PIDS), out.stdout)
        -- a fork bomb in the background, then a loop that forks without end (a classic bomb alone dies
        -- out once forks fail); the agent's timeout kills the process group after 20 s
        out = R.exec(srv, a, "b() { b | b & }; b; while :; do sleep 100 & done", { background = true,
            timeout_ms = 20000 })
        assert.are.equal(0, out.exit, json.encode(out.events))
        H.sleep(3)
        local t0 = H.now()
        local worst = 0
        for _ = 1, 10 do
            local t = H.now()
            local res = srv:request("GET", "/health", { timeout = 2 })
            assert.are.equal(200, res and res.status)
            worst = math.max(worst, H.now() - t)
        end
        assert.is_true(worst < 1, "/health took " .. worst .. " s during the fork bomb")
        -- another sandbox runs commands
        local other = R.exec(srv, b, "echo alive-$((6*7))", { timeout_ms = 10000 })
        assert.are.equal("alive-42", other.stdout)
        -- the lifecycle API still works on the bombed sandbox's neighbours
        assert.are.equal(200, R.call(srv, "GET", "/v1/sandboxes/" .. b).status)
        assert.is_true(H.now() - t0 < 30)
        -- the cap holds (read from the host cgroup)
        local cid = H.inspect("sandbox-" .. a).Id
        local cur = H.run("cat /sys/fs/cgroup/pids/docker/" .. cid .. "/pids.current 2>/dev/null || "
            .. "cat /sys/fs/cgroup/system.slice/docker-" .. cid .. ".scope/pids.current 2>/dev/null")
        cur = tonumber(cur)
        assert.is_number(cur, "pids.current of the sandbox's cgroup not found")
        -- (through the agent the bomb was seen at 5-16 processes when sampled, not at the cap: it is only
        -- checked that the cap holds; RELIABILITY.md has the figure of a bomb in a plain container)
        assert.is_true(cur <= PIDS, "pids.current " .. cur .. " (limit " .. PIDS .. ")")
        -- the bombed sandbox can be deleted in bounded time
        local t = H.now()
        assert.are.equal(204, R.call(srv, "DELETE", "/v1/sandboxes/" .. a).status)
        assert.is_true(H.now() - t < 30, "delete took " .. (H.now() - t) .. " s")
        a = R.create_running(srv, { resourceLimits = { cpu = "500m", memory = "64Mi" } })
    end)

    it("applies the memory limit: a command over it is OOM-killed, the agent carries on", function()
        local out = R.exec(srv, a, "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
            .. "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert.are.equal(tostring(64 * 1024 * 1024), out.stdout)
        out = R.exec(srv, a, "tail /dev/zero", { timeout_ms = 30000 })
        -- killed by the kernel (SIGKILL): the agent reports a signal, not a normal exit
        assert.are.equal(-1, out.exit, json.encode(out.events))
        out = R.exec(srv, a, "grep -h oom_kill /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control"
            .. " 2>/dev/null | grep -v disable; echo alive")
        assert.truthy(out.stdout:find("alive", 1, true))
        local kills = tonumber(out.stdout:match("oom_kill%s+(%d+)"))
        if kills then
            assert.is_true(kills >= 1, out.stdout)
        end
        local sb = R.call(srv, "GET", "/v1/sandboxes/" .. a).json
        assert.are.equal("Running", sb.status.state)
    end)

    it("requires the agent's token, and one sandbox's token opens no other agent", function()
        local base_a, token_a = R.agent(srv, a)
        local base_b, token_b = R.agent(srv, b)
        assert.are_not.equal(token_a, token_b)
        assert.is_true(#token_a >= 43, "token " .. token_a)
        local res = R.agent_request(base_a, nil, "GET", "/ping")
        assert.are.equal(401, res.status)
        assert.are.same({ error = "Unauthorized: invalid or missing header X-EXECD-ACCESS-TOKEN" },
            json.decode(res.body))
        res = R.agent_request(base_a, nil, "POST", "/command", '{"command":"echo x"}')
        assert.are.equal(401, res.status)
        res = R.agent_request(base_a, token_a .. "x", "GET", "/ping")
        assert.are.equal(401, res.status)
        assert.are.equal(200, R.agent_request(base_a, token_a, "GET", "/ping").status)
        -- a's token on b's agent, from the host
        res = R.agent_request(base_b, token_a, "POST", "/command", '{"command":"echo pwned"}')
        assert.are.equal(401, res.status, res.body)
        -- and from inside a, over the Docker network to b's address: sandbox isolation (network_policy.
        -- isolate_sandboxes, on by default) drops the connection before any agent sees it
        local ip_b = H.inspect("sandbox-" .. b).NetworkSettings.IPAddress
        assert.is_string(ip_b)
        local body = '{"command":"echo pwned"}'
        local out = R.exec(srv, a, string.format("printf 'POST /command HTTP/1.0\\r\\nX-EXECD-ACCESS-TOKEN: %s\\r\\n"
            .. "Content-Length: %d\\r\\n\\r\\n%s' | nc -w 3 %s 44772 2>&1; echo rc=$?", token_a, #body, body, ip_b))
        assert.is_nil(out.stdout:find("pwned\"", 1, true) and out.stdout:find("stdout", 1, true), out.stdout)
        assert.is_nil(out.stdout:find("401", 1, true), out.stdout) -- never got to b's agent
        assert.truthy(out.stdout:find("timed out", 1, true), out.stdout)
        assert.is_nil(out.stdout:find("rc=0", 1, true), out.stdout)
    end)
end)
