-- Unit specs of the Docker runtime's warm pool parts (lua/runtimes/docker: mapping, pool_ping, pool_claim):
-- a member's create body (the waiting mode's env, the pool label), its identity read back, and the two
-- requests to the member's agent (never to dockerd), on the fake HTTP client.
package.path = "tests/lua/unit/runtimes/?.lua;" .. package.path
package.loaded["core.sync"] = package.loaded["core.sync"] or {}

local docker_runtime = require("runtimes.docker")
local mapping = require("runtimes.docker.mapping")
local json = require("common.json")
local fake_client = require("support.fake_client")

local CREATED = 1700000000123456

local function member_spec(over)
    local s = { id = "11111111-2222-4333-8444-555555555555", image_uri = "busybox", entrypoint = { "true" },
        env = { { "T", "1" } }, created_us = CREATED, metadata = {}, access_token = "boot", pool = "py",
        pool_member = true }
    for k, v in pairs(over or {}) do
        s[k] = v
    end
    return s
end

describe("runtimes.docker pools: the member's container", function()
    it("starts in waiting mode (OPENSANDBOX_POOL_MEMBER=1) and is labelled with its pool", function()
        local b = json.decode(mapping.create_body(member_spec(), {}))
        local env = {}
        for _, e in ipairs(b.Env) do
            env[#env + 1] = e
        end
        assert.are.same({ "T=1", "OPENSANDBOX_EXECD_PORT=44772", "OPENSANDBOX_POOL_MEMBER=1",
            "EXECD_ACCESS_TOKEN=boot" }, env)
        assert.are.equal("py", b.Labels["opensandbox.io/pool"])
        -- a cold sandbox has neither
        b = json.decode(mapping.create_body(member_spec({ pool = false, pool_member = false }), {}))
        assert.is_nil(b.Labels["opensandbox.io/pool"])
        for _, e in ipairs(b.Env) do
            assert.is_nil(e:find("POOL", 1, true), e)
        end
    end)

    it("declares pools among its capabilities", function()
        local rt = docker_runtime.new({ docker = {}, runtime = {} }, { client = fake_client.new(), log = {} })
        assert.is_true(rt.capabilities.pools)
    end)
end)

describe("runtimes.docker pools: the member's agent", function()
    local rec = { id = "m1", handle = "c1", access_token = "boot",
        place = { ip = "172.17.0.9", ports = { ["44772"] = 32001 }, agent_port = 44772 } }

    it("pings the agent at the container's address with the boot token", function()
        local client = fake_client.new()
        client:on("GET", "^/ping$", { status = 200, body = "" })
        local rt = docker_runtime.new({ docker = {}, runtime = {} }, { client = client, log = {} })
        assert.is_true(rt:pool_ping(rec))
        local r = client.requests[1]
        assert.are.equal("http://172.17.0.9:44772/ping", r.url)
        assert.are.equal("boot", r.headers["X-EXECD-ACCESS-TOKEN"])
        assert.is_nil(r.unix_socket, "not dockerd")
        client:on("GET", "^/ping$", { status = 401, body = "{}" })
        local ok, err = rt:pool_ping(rec)
        assert.is_nil(ok)
        assert.are.equal("api", err.kind)
        client:on("GET", "^/ping$", { err = { kind = "connect", message = "refused" } })
        ok, err = rt:pool_ping(rec)
        assert.is_nil(ok)
        assert.are.equal("unavailable", err.kind)
    end)

    it("hands the claim over: entrypoint, env and the new token, authenticated with the boot token", function()
        local client = fake_client.new()
        client:on("POST", "^/pool/claim$", { status = 200, body = "" })
        local rt = docker_runtime.new({ docker = {}, runtime = {} }, { client = client, log = {} })
        assert.is_true(rt:pool_claim(rec, { token = "fresh", entrypoint = { "sh", "-c", "x" }, env = { "A=1" } }))
        local r = client.requests[1]
        assert.are.equal("http://172.17.0.9:44772/pool/claim", r.url)
        assert.are.equal("boot", r.headers["X-EXECD-ACCESS-TOKEN"])
        assert.are.same({ token = "fresh", entrypoint = { "sh", "-c", "x" }, env = { "A=1" } }, json.decode(r.body))
        -- an empty env is a JSON array
        rt:pool_claim(rec, { token = "fresh", entrypoint = { "true" }, env = {} })
        assert.matches('"env":[]', client.requests[2].body, 1, true)
        -- the agent's own timings, when it gives them (an agent that answers nothing gives none)
        client:on("POST", "^/pool/claim$", { status = 200,
            body = '{"acceptedUs":1000,"handledUs":1200,"repliedUs":1250}' })
        local claimed, times = rt:pool_claim(rec, { token = "fresh", entrypoint = { "true" } })
        assert.is_true(claimed)
        assert.are.same({ accepted_us = 1000, handled_us = 1200, replied_us = 1250 }, times)
        client:on("POST", "^/pool/claim$", { status = 200, body = '{"acceptedUs":"x"}' })
        claimed, times = rt:pool_claim(rec, { token = "fresh", entrypoint = { "true" } })
        assert.is_true(claimed)
        assert.is_nil(times)
        client:on("POST", "^/pool/claim$", { status = 409, body = '{"code":"RUNTIME_ERROR"}' })
        local ok, err = rt:pool_claim(rec, { token = "fresh", entrypoint = { "true" } })
        assert.is_nil(ok)
        assert.are.equal("conflict", err.kind)
    end)

    it("reads the pool back from the labels (a restarted server finds its members)", function()
        local client = fake_client.new()
        local engine = {
            host = "unix:///var/run/docker.sock",
            list = function()
                return { { id = "c1", labels = { ["opensandbox.io/id"] = "m1" } } }
            end,
            inspect = function()
                return { id = "c1", status = "running", running = true, access_token = "boot", ip = "172.17.0.9",
                    host_ports = {}, image = "busybox", cmd = { "true" }, labels = {
                        ["opensandbox.io/id"] = "m1", ["opensandbox.io/created-at"] = "2026-01-01T00:00:00.000000Z",
                        ["opensandbox.io/manual-cleanup"] = "true", ["opensandbox.io/pool"] = "py" } }
            end,
        }
        local rt = docker_runtime.new({ docker = {}, runtime = {} }, { client = client, log = {}, engine = engine })
        local list = assert(rt:list())
        assert.are.equal("py", list[1].sandbox.pool)
        assert.are.equal("boot", list[1].sandbox.access_token)
    end)
end)
