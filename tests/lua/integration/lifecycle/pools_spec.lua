-- Integration spec: warm pools on the real server and Docker (upstream sandbox-lifecycle.yml "Pools",
-- extensions.poolRef; lua/sandbox/pools.lua, execd/src/pool.c): a pool fills with waiting members of its
-- template; a claim is Running in its 202, with the member's container, its own metadata, env, timeout and
-- entrypoint (the container's main process, whose exit status is Terminated/Failed), and a fresh agent token
-- (the boot token stops working); limits above the template's and bad pools are 400s that create nothing; a
-- crashed member is replaced and never handed out; after a restart the claimed sandboxes stay sandboxes and
-- the idle members are adopted (never handed out twice); PUT reconciles, DELETE leaves claimed sandboxes
-- alone; an empty pool creates cold, or answers 503 with pools.on_empty = "error".
--
--   flock -o /tmp/osb-docker.lock lua5.4 /usr/bin/busted \
--       --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' tests/lua/integration/lifecycle/pools_spec.lua
local H = require("lifecycle.helpers")
local json = H.json

local function pool_body(over)
    local b = {
        name = "bb",
        template = { image = { uri = H.IMAGE }, resourceLimits = { cpu = "0.5", memory = "64Mi" },
            env = { TEMPLATE = "t" } },
        capacitySpec = { bufferMin = 2, bufferMax = 2, poolMin = 0, poolMax = 6 },
    }
    for k, v in pairs(over or {}) do
        b[k] = v
    end
    return b
end

local function claim_body(over)
    local b = { extensions = { poolRef = "bb" }, timeout = 600, entrypoint = { "sleep", "600" } }
    for k, v in pairs(over or {}) do
        b[k] = v
    end
    return b
end

local wait_pool, available = H.wait_pool, H.pool_available

-- the ids of the member containers of a pool (containers labelled with it that are not sandboxes)
local function member_ids(srv, pool)
    local out = H.run("docker ps -a --filter label=opensandbox.io/pool=" .. pool
        .. " --format '{{.Label \"opensandbox.io/id\"}}'")
    local ids = {}
    for id in out:gmatch("%S+") do
        if H.call(srv, "GET", "/v1/sandboxes/" .. id).status == 404 then
            ids[#ids + 1] = id
        end
    end
    table.sort(ids)
    return ids
end

-- runs `command` through the sandbox's agent with the endpoint's token; returns the streamed text
local function agent_run(srv, id, command)
    local ep = H.call(srv, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772").json
    local res = H.curl({ method = "POST", url = "http://" .. ep.endpoint .. "/command", timeout = 30,
        headers = { ["X-EXECD-ACCESS-TOKEN"] = ep.headers["X-EXECD-ACCESS-TOKEN"],
            ["Content-Type"] = "application/json" }, body = json.encode({ command = command }) })
    assert(res and res.status == 200, "agent command failed: " .. tostring(res and res.status))
    return res.body, ep
end

-- how the server handed sandbox `id` its claim ("file" or "agent"), from its "sandbox claimed from pool" line
local function claimed_via(srv, id)
    for line in srv:log():gmatch("[^\n]+") do
        if line:find('"sandbox claimed from pool"', 1, true) and line:find(id, 1, true) then
            return json.decode(line).via
        end
    end
end

local function env_of(container)
    local env = {}
    for _, e in ipairs(container.Config.Env) do
        local k, v = e:match("^([^=]+)=(.*)$")
        env[k] = v
    end
    return env
end

describe("warm pools #integration #docker", function()
    setup(function()
        H.ensure_image()
        H.remove_all_containers()
    end)

    before_each(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    it("answers 400 for bad pools and bad claims, and creates nothing", function()
        local srv = H.start()
        local function bad(over, code, msg)
            H.assert_error(H.call(srv, "POST", "/v1/pools", pool_body(over)), 400, code, function(m)
                return m:find(msg, 1, true) == 1
            end)
        end
        bad({ name = "Bad Name" }, "SANDBOX::INVALID_PARAMETER", "name must be a lowercase RFC 1123 name")
        bad({ capacitySpec = { bufferMin = 3, bufferMax = 1, poolMin = 0, poolMax = 4 } },
            "SANDBOX::INVALID_PARAMETER", "capacitySpec.bufferMin must not exceed capacitySpec.bufferMax.")
        bad({ template = { image = { uri = H.IMAGE }, resourceLimits = {},
            networkPolicy = { defaultAction = "deny" } } },
            "SANDBOX::API_NOT_SUPPORTED", "template.networkPolicy is not yet supported in pool templates.")
        bad({ template = { image = { uri = "BAD" }, resourceLimits = {} } }, "SANDBOX::INVALID_PARAMETER",
            "template.image.uri 'BAD' is not a valid image reference.")
        bad({ template = { image = { uri = H.IMAGE }, resourceLimits = {}, volumes = { { name = "h",
            mountPath = "/h", host = { path = "/etc" } } } } }, "VOLUME::HOST_PATH_NOT_ALLOWED", "")
        H.assert_error(H.call(srv, "POST", "/v1/pools", "[1]"), 400, "SANDBOX::INVALID_PARAMETER",
            "Request body must be a JSON object.")
        -- claims of a pool that does not exist
        H.assert_error(H.create_raw(srv, claim_body({ extensions = { poolRef = "nope" } })), 400,
            "SANDBOX::INVALID_PARAMETER", "extensions.poolRef: pool 'nope' does not exist.")
        assert.are.same({ items = {} }, H.call(srv, "GET", "/v1/pools").json)
        H.assert_error(H.call(srv, "GET", "/v1/pools/bb"), 404, "POOL::NOT_FOUND", "Pool 'bb' not found.")
        H.assert_error(H.call(srv, "PUT", "/v1/pools/bb", { capacitySpec = pool_body().capacitySpec }), 404,
            "POOL::NOT_FOUND", "Pool 'bb' not found.")
        assert.are.same({}, H.labelled_containers())
        -- a pool with limits; claims above them are refused, and take no member
        local res = H.call(srv, "POST", "/v1/pools", pool_body())
        assert.are.equal(201, res.status, res.body)
        wait_pool(srv, "bb", available(2), 60)
        H.assert_error(H.create_raw(srv, claim_body({ resourceLimits = { cpu = "1" } })), 400,
            "SANDBOX::INVALID_PARAMETER", "resourceLimits.cpu exceeds the pool's template (0.5).")
        H.assert_error(H.create_raw(srv, claim_body({ resourceLimits = { memory = "1Gi" } })), 400,
            "SANDBOX::INVALID_PARAMETER", "resourceLimits.memory exceeds the pool's template (64Mi).")
        H.assert_error(H.create_raw(srv, claim_body({ image = { uri = "busybox:other" } })), 400,
            "SANDBOX::INVALID_PARAMETER", function(m)
                return m:find("image.uri must be the pool's template image", 1, true) == 1
            end)
        H.assert_error(H.call(srv, "POST", "/v1/pools", pool_body()), 409, "POOL::ALREADY_EXISTS",
            "Pool 'bb' already exists.")
        assert.are.equal(0, H.call(srv, "GET", "/v1/sandboxes").json.pagination.totalItems)
        assert.are.equal(2, #member_ids(srv, "bb"))
    end)

    it("claims a warm member: Running at once, its own env, metadata, entrypoint and a fresh token", function()
        local srv = H.start()
        local res = H.call(srv, "POST", "/v1/pools", pool_body())
        assert.are.equal(201, res.status, res.body)
        assert.are.same({ bufferMax = 2, bufferMin = 2, poolMax = 6, poolMin = 0 }, res.json.capacitySpec)
        assert.are.equal("1", res.json.status.revision)
        wait_pool(srv, "bb", available(2), 60)
        local members = member_ids(srv, "bb")
        assert.are.equal(2, #members)
        local member = H.inspect("sandbox-" .. members[1])
        local boot = env_of(member).EXECD_ACCESS_TOKEN
        assert.is_string(boot)
        assert.are.equal("1", env_of(member).OPENSANDBOX_POOL_MEMBER)
        assert.are.equal(500000000, member.HostConfig.NanoCpus)

        res = H.create_raw(srv, claim_body({ metadata = { job = "j1" }, env = { CLAIM = "c" },
            entrypoint = { "sh", "-c", "echo $CLAIM $TEMPLATE > /tmp/out; exec sleep 600" } }))
        assert.are.equal(202, res.status, res.body)
        local sb = res.json
        assert.are.equal("Running", sb.status.state)
        assert.are.same({ job = "j1" }, sb.metadata)
        assert.is_string(sb.expiresAt)
        local id = sb.id
        assert.is_truthy(id == members[1] or id == members[2], "the sandbox is a member's container")
        local got = H.call(srv, "GET", "/v1/sandboxes/" .. id).json
        assert.are.equal("Running", got.status.state)
        assert.are.equal(H.IMAGE, got.image.uri)
        assert.are.same({ "sh", "-c", "echo $CLAIM $TEMPLATE > /tmp/out; exec sleep 600" }, got.entrypoint)

        -- the entrypoint is the container's main process, with the claim's env after the template's, and
        -- without the agent's token
        local out, ep = agent_run(srv, id, "cat /tmp/out; tr '\\0' ' ' < /proc/1/cmdline; echo; "
            .. "echo tokens=$(tr '\\0' '\\n' < /proc/1/environ | grep -c EXECD_ACCESS_TOKEN); echo CLAIM=$CLAIM")
        assert.matches("c t", out, 1, true)
        assert.matches("sleep 600", out, 1, true)
        assert.matches("tokens=0", out, 1, true)
        assert.matches("CLAIM=c", out, 1, true, "the agent's commands see the claim's env")
        -- the claim was written for the agent (runtimes/docker/pool_claims.lua), not POSTed to it
        local claim_file = H.run("ls " .. srv.dir .. "/claims/*/" .. id .. "/claim.json")
        assert.matches("/claim.json", claim_file, 1, true)
        assert.are.equal("file", claimed_via(srv, id))
        -- a fresh token: the boot token no longer works
        local token = ep.headers["X-EXECD-ACCESS-TOKEN"]
        assert.are_not.equal(boot, token)
        local ping = H.curl({ url = "http://" .. ep.endpoint .. "/ping",
            headers = { ["X-EXECD-ACCESS-TOKEN"] = boot } })
        assert.are.equal(401, ping.status)
        ping = H.curl({ url = "http://" .. ep.endpoint .. "/ping", headers = { ["X-EXECD-ACCESS-TOKEN"] = token } })
        assert.are.equal(200, ping.status)

        -- the pool counts it as allocated and refills
        local p = wait_pool(srv, "bb", available(2), 60)
        assert.are.equal(1, p.status.allocated)
        assert.are.equal(3, p.status.total)

        -- exit statuses: as for a cold sandbox
        local failed = H.create(srv, claim_body({ entrypoint = { "sh", "-c", "sleep 1; exit 3" } }))
        local done = H.create(srv, claim_body({ entrypoint = { "true" } }))
        local f = H.wait_state(srv, failed, "Failed", 30)
        assert.are.equal("CONTAINER_EXITED_ERROR", f.status.reason)
        assert.matches("exited with code 3", f.status.message, 1, true)
        H.wait_state(srv, done, "Terminated", 30)
        local missing = H.create(srv, claim_body({ entrypoint = { "/no/such/program" } }))
        assert.matches("code 127", H.wait_state(srv, missing, "Failed", 30).status.message, 1, true)

        -- DELETE of the sandbox removes its container like any, and its claim directory
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
        assert.is_false(H.container_exists("sandbox-" .. id))
        assert.is_false(select(2, H.run("ls -d " .. srv.dir .. "/claims/*/" .. id)))
    end)

    it("replaces a crashed member, and never hands out a member twice, also across a restart", function()
        local srv = H.start()
        assert.are.equal(201, H.call(srv, "POST", "/v1/pools", pool_body()).status)
        wait_pool(srv, "bb", available(2), 60)
        local crashed = member_ids(srv, "bb")[1]
        H.run("docker kill sandbox-" .. crashed)
        -- replaced: the crashed one is removed, two others are ready
        local deadline = os.time() + 60
        while H.container_exists("sandbox-" .. crashed) and os.time() < deadline do
            H.sleep(0.1)
        end
        assert.is_false(H.container_exists("sandbox-" .. crashed))
        wait_pool(srv, "bb", available(2), 60)
        local claimed = {}
        for _ = 1, 3 do -- (one at a time, each from a full pool: a claim of an empty pool would be a cold create)
            wait_pool(srv, "bb", available(2), 60)
            local id, res = H.create(srv, claim_body())
            assert.are.equal("Running", res.json.status.state)
            assert.are_not.equal(crashed, id)
            assert.is_nil(claimed[id])
            claimed[id] = true
        end
        wait_pool(srv, "bb", available(2), 60)
        local idle = member_ids(srv, "bb")
        srv:stop()

        -- a restart: the claimed are sandboxes, the idle members are adopted (no new containers); this server
        -- writes no claim files (docker.pool_claim_dir = false), so it POSTs its claims to the agents
        local srv2 = H.start({ dir = srv.dir, config = { docker = { pool_claim_dir = false } } })
        for id in pairs(claimed) do
            assert.are.equal("Running", H.call(srv2, "GET", "/v1/sandboxes/" .. id).json.status.state)
        end
        local p = wait_pool(srv2, "bb", available(2), 60)
        assert.are.equal(3, p.status.allocated)
        assert.are.same(idle, member_ids(srv2, "bb"))
        for _ = 1, 2 do
            local res = H.create_raw(srv2, claim_body())
            assert.are.equal(202, res.status, res.body)
            assert.are.equal("Running", res.json.status.state)
            assert.is_nil(claimed[res.json.id], "never handed out twice")
            claimed[res.json.id] = true
            -- the adopted member took the claim: its agent answers with the new token
            assert.matches("adopted%-ok", agent_run(srv2, res.json.id, "echo adopted-ok"))
            assert.are.equal("agent", claimed_via(srv2, res.json.id))
        end
    end)

    it("PUT reconciles to the new capacity; DELETE removes idle members and leaves claimed sandboxes", function()
        local srv = H.start()
        assert.are.equal(201, H.call(srv, "POST", "/v1/pools", pool_body()).status)
        wait_pool(srv, "bb", available(2), 60)
        local res = H.call(srv, "PUT", "/v1/pools/bb", { capacitySpec = { bufferMin = 4, bufferMax = 4, poolMin = 0,
            poolMax = 6 } })
        assert.are.equal(200, res.status, res.body)
        assert.are.equal("2", res.json.status.revision)
        wait_pool(srv, "bb", available(4), 60)
        local id = H.create(srv, claim_body())
        res = H.call(srv, "PUT", "/v1/pools/bb", { capacitySpec = { bufferMin = 1, bufferMax = 1, poolMin = 0,
            poolMax = 6 } })
        assert.are.equal(200, res.status, res.body)
        wait_pool(srv, "bb", available(1), 60)
        local deadline = os.time() + 30 -- (the idle members beyond the capacity are being removed)
        while #member_ids(srv, "bb") > 1 and os.time() < deadline do
            H.sleep(0.1)
        end
        assert.are.equal(1, #member_ids(srv, "bb"))
        H.assert_error(H.call(srv, "PUT", "/v1/pools/bb", { capacitySpec = { bufferMin = 1, bufferMax = 1,
            poolMin = 0, poolMax = 6 }, template = {} }), 400, "SANDBOX::INVALID_PARAMETER",
            "template cannot be changed: delete the pool and create it again.")
        assert.are.equal(1, #H.call(srv, "GET", "/v1/pools").json.items)

        assert.are.equal(204, H.call(srv, "DELETE", "/v1/pools/bb").status)
        H.assert_error(H.call(srv, "GET", "/v1/pools/bb"), 404, "POOL::NOT_FOUND", "Pool 'bb' not found.")
        deadline = os.time() + 30
        while #member_ids(srv, "bb") > 0 and os.time() < deadline do
            H.sleep(0.1)
        end
        assert.are.same({}, member_ids(srv, "bb"))
        assert.are.equal("Running", H.call(srv, "GET", "/v1/sandboxes/" .. id).json.status.state)
        assert.is_true(H.container_exists("sandbox-" .. id))
    end)

    it("an empty pool creates cold from the template, or answers 503 with on_empty = error", function()
        local srv = H.start()
        local empty = pool_body({ capacitySpec = { bufferMin = 0, bufferMax = 0, poolMin = 0, poolMax = 0 } })
        assert.are.equal(201, H.call(srv, "POST", "/v1/pools", empty).status)
        local res = H.create_raw(srv, claim_body({ env = { CLAIM = "c" },
            entrypoint = { "sh", "-c", "echo $CLAIM $TEMPLATE > /tmp/out; sleep 600" } }))
        assert.are.equal(202, res.status, res.body)
        assert.are.equal("Pending", res.json.status.state)
        H.wait_state(srv, res.json.id, "Running", 90)
        assert.matches("c t", agent_run(srv, res.json.id, "cat /tmp/out"), 1, true)
        local c = H.inspect("sandbox-" .. res.json.id)
        assert.are.equal(500000000, c.HostConfig.NanoCpus)
        assert.is_nil(env_of(c).OPENSANDBOX_POOL_MEMBER)
        srv:stop()

        local srv2 = H.start({ config = { pools = { on_empty = "error" } } })
        assert.are.equal(201, H.call(srv2, "POST", "/v1/pools", empty).status)
        H.assert_error(H.create_raw(srv2, claim_body()), 503, "POOL::EMPTY", "Pool 'bb' has no warm sandbox available.")
        assert.are.equal(0, H.call(srv2, "GET", "/v1/sandboxes").json.pagination.totalItems)
    end)
end)
