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

-- The claim as a file (runtimes/docker/pool_claims.lua): the member's directory, the proof on /ping that its
-- agent sees it, the claim written there (no request to the agent), HTTP when any of that is missing.
describe("runtimes.docker pools: the claim file", function()
    local lfs = require("lfs")
    local ID = "11111111-2222-4333-8444-555555555555"
    local base

    -- core.mkdirs, chmod and mkfifo are C (core/lcore.c); these do the same with the shell. core.poke (a byte
    -- into the FIFO, never blocking) is recorded; `poke_fails` makes it answer as with no reader.
    local pokes, poke_fails = {}, false
    local fake_core = {
        mkfifo = function(p, mode)
            return os.execute(string.format("mkfifo -m %o '%s'", mode, p)) and true or nil, "mkfifo failed"
        end,
        poke = function(p)
            if poke_fails then
                return nil, p .. ": no reader"
            end
            pokes[#pokes + 1] = p
            return true
        end,
        mkdirs = function(p, mode)
            return os.execute(string.format("mkdir -p -m %o '%s'", mode, p)) and true or nil, "mkdir failed"
        end,
        chmod = function(p, mode)
            return os.execute(string.format("chmod %o '%s'", mode, p)) and true or nil, "chmod failed"
        end,
    }
    local function new_rt(client, over)
        local dcfg = { pool_claim_dir = base, instance = "inst:1" }
        for k, v in pairs(over or {}) do
            dcfg[k] = v
        end
        local removed = {}
        local engine = { remove = function(_, handle)
            removed[#removed + 1] = handle
            return true
        end }
        local rt = docker_runtime.new({ docker = dcfg, runtime = {} }, { client = client or fake_client.new(),
            log = { warn = function() end, info = function() end }, core = fake_core, engine = engine })
        return rt, removed
    end
    local function read(path)
        local f = io.open(path, "rb")
        if not f then
            return nil
        end
        local s = f:read("a")
        f:close()
        return s
    end

    before_each(function()
        base = os.tmpname()
        os.remove(base)
        pokes, poke_fails = {}, false
    end)
    after_each(function()
        os.execute("rm -rf '" .. base .. "'")
    end)

    it("is mounted read-only into a member and named in its env; a cold sandbox has neither", function()
        local b = json.decode(mapping.create_body(member_spec({ claim_dir = "/run/x/m1" }), {}))
        assert.are.same({ "/run/x/m1:/run/opensandbox-pool:ro" }, b.HostConfig.Binds)
        local found
        for _, e in ipairs(b.Env) do
            found = found or e == "OPENSANDBOX_POOL_CLAIM_FILE=/run/opensandbox-pool/claim.json"
        end
        assert.is_true(found)
        b = json.decode(mapping.create_body(member_spec({ claim_dir = "/run/x/m1", pool_member = false }), {}))
        assert.is_nil(b.HostConfig.Binds)
    end)

    it("makes the member's directory (base 0700, the member's 0755, `member` holds its id) and drops it", function()
        local rt = new_rt()
        local dir = rt:make_claim_dir(ID)
        assert.are.equal(base .. "/inst_1/" .. ID, dir)
        assert.are.equal("rwx------", lfs.attributes(base .. "/inst_1", "permissions"))
        assert.are.equal("rwxr-xr-x", lfs.attributes(dir, "permissions"))
        assert.are.equal(ID .. "\n", read(dir .. "/member"))
        assert.are.equal("rw-r--r--", lfs.attributes(dir .. "/member", "permissions"))
        assert.are.equal("named pipe", lfs.attributes(dir .. "/wake", "mode"))
        assert.is_nil(rt:make_claim_dir("../x"), "an id that is not a path component")
        assert.are.equal(dir, rt:make_claim_dir(ID), "made again (a retried provisioning): its FIFO kept")
        assert.are.equal("named pipe", lfs.attributes(dir .. "/wake", "mode"))
        rt:drop_claim_dir(ID)
        assert.is_nil(lfs.attributes(dir, "mode"))
    end)

    it("is not used with a remote daemon or with pool_claim_dir = false", function()
        assert.is_nil((new_rt(nil, { host = "tcp://10.0.0.1:2375" })):make_claim_dir(ID))
        assert.is_nil((new_rt(nil, { pool_claim_dir = false })):make_claim_dir(ID))
        assert.is_nil((new_rt(nil, { pool_claim_dir = "relative/dir" })):make_claim_dir(ID))
        assert.is_nil(lfs.attributes(base, "mode"))
    end)

    it("is used for a member whose ping shows its own id, and written whole with no request to the agent", function()
        local client = fake_client.new()
        local rt, removed = new_rt(client)
        local dir = rt:make_claim_dir(ID)
        local rec = { id = ID, handle = "c1", access_token = "boot",
            place = { ip = "172.17.0.9", ports = {}, agent_port = 44772 } }
        client:on("GET", "^/ping$", { status = 200, body = "", headers = { ["x-opensandbox-pool-claim-file"] = ID } })
        local ok, info = rt:pool_ping(rec)
        assert.is_true(ok)
        assert.is_true(info.claim_file)
        client:on("GET", "^/ping$", { status = 200, body = "",
            headers = { ["x-opensandbox-pool-claim-file"] = "other" } })
        ok, info = rt:pool_ping(rec)
        assert.is_true(ok)
        assert.is_false(info.claim_file, "another directory than the server's")
        client:on("GET", "^/ping$", { status = 200, body = "" })
        assert.is_false(select(2, rt:pool_ping(rec)).claim_file, "an agent that shows nothing")
        -- its own id, but no directory of this server's (a member of an instance taken over)
        local other = ID:gsub("1", "9")
        client:on("GET", "^/ping$", { status = 200, body = "",
            headers = { ["x-opensandbox-pool-claim-file"] = other } })
        assert.is_false(select(2, rt:pool_ping({ id = other, handle = "c2", access_token = "boot",
            place = rec.place })).claim_file)

        local n = #client.requests
        rec.claim_file = true
        local claimed, how = rt:pool_claim(rec, { token = "fresh", entrypoint = { "sh", "-c", "x" }, env = { "A=1" } })
        assert.is_true(claimed)
        assert.is_true(how.file)
        assert.are.equal(n, #client.requests, "no request to the agent")
        assert.are.same({ token = "fresh", entrypoint = { "sh", "-c", "x" }, env = { "A=1" } },
            json.decode(read(dir .. "/claim.json")))
        assert.are.equal("rw-r--r--", lfs.attributes(dir .. "/claim.json", "permissions"))
        assert.is_nil(lfs.attributes(dir .. "/.claim.json.tmp", "mode"))
        assert.are.same({ dir .. "/wake" }, pokes, "the agent woken after the write")
        -- an agent that no longer holds its FIFO is gone: the claim fails (the service takes the next member)
        poke_fails = true
        local nok, nerr = rt:pool_claim(rec, { token = "f2", entrypoint = { "true" } })
        assert.is_nil(nok)
        assert.are.equal("unavailable", nerr.kind)
        assert.are.equal(n, #client.requests)
        -- the container's removal takes the directory with it
        assert.is_true(rt:remove({ id = ID, handle = "c1", place = {} }))
        assert.are.same({ "c1" }, removed)
        assert.is_nil(lfs.attributes(dir, "mode"))
    end)

    it("falls back to the agent over HTTP when the file cannot be written", function()
        local client = fake_client.new()
        client:on("POST", "^/pool/claim$", { status = 200, body = "" })
        local rt = new_rt(client)
        rt:make_claim_dir(ID)
        rt:drop_claim_dir(ID) -- (gone: the write fails)
        local rec = { id = ID, handle = "c1", access_token = "boot", claim_file = true,
            place = { ip = "172.17.0.9", ports = {}, agent_port = 44772 } }
        assert.is_true(rt:pool_claim(rec, { token = "fresh", entrypoint = { "true" } }))
        assert.are.equal("http://172.17.0.9:44772/pool/claim", client.requests[#client.requests].url)
    end)
end)
