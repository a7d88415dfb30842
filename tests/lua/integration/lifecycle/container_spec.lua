-- Integration spec: what the real server asks Docker for (API.md §8.2, §8.3, §8.5), checked with
-- `docker inspect`, and 30 concurrent creates that must all reach Running with distinct host ports.
local H = require("lifecycle.helpers")

local DEFAULT_CAPDROP = { "AUDIT_WRITE", "MKNOD", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE",
    "SYS_TIME", "SYS_TTY_CONFIG" }

describe("container configuration #integration #docker", function()
    local srv

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
        srv = H.start()
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    local function env_map(list)
        local m, order = {}, {}
        for i, e in ipairs(list) do
            local k, v = e:match("^([^=]*)=(.*)$")
            m[k] = v
            order[k] = i
        end
        return m, order
    end

    it("passes env, labels, limits and the security defaults to Docker", function()
        local id, res = H.create(srv, {
            env = { GREETING = "hello world", EMPTY = "", DROPPED = H.json.null, OPENSANDBOX_EXECD_PORT = "1" },
            metadata = { team = "infra", note = "" },
            resourceLimits = { cpu = "500m", memory = "64Mi" },
            platform = { os = "linux", arch = "amd64" },
            entrypoint = { "sleep", "600" },
            timeout = 600,
        })
        local created = res.json
        local sb = H.wait_state(srv, id, "Running", 60)
        local c = H.inspect("sandbox-" .. id)
        assert.is_table(c, "container sandbox-" .. id .. " exists")
        -- Running since Docker's StartedAt (§3.1), truncated to microseconds
        assert.are.equal(c.State.StartedAt:sub(1, 26), sb.status.lastTransitionAt:sub(1, 26))
        assert.are.equal("/sandbox-" .. id, c.Name)

        -- env (§4.4, §8.2): null dropped, "" kept, OPENSANDBOX_EXECD_PORT owned by the server, after the user's
        local env, order = env_map(c.Config.Env)
        assert.are.equal("hello world", env.GREETING)
        assert.are.equal("", env.EMPTY)
        assert.is_nil(env.DROPPED)
        assert.are.equal("44772", env.OPENSANDBOX_EXECD_PORT)
        assert.is_true(order.OPENSANDBOX_EXECD_PORT > order.GREETING)
        assert.is_true(order.OPENSANDBOX_EXECD_PORT > order.EMPTY)
        assert.matches("^%x+$", env.EXECD_ACCESS_TOKEN)

        -- entrypoint and cmd (§8.2, §8.4)
        assert.are.same({ "/opt/opensandbox/bootstrap.sh" }, c.Config.Entrypoint)
        assert.are.same({ "sleep", "600" }, c.Config.Cmd)
        assert.are.equal(H.IMAGE, c.Config.Image)

        -- labels (§8.3)
        local l = c.Config.Labels
        assert.are.equal(id, l["opensandbox.io/id"])
        assert.are.equal(created.createdAt, l["opensandbox.io/created-at"])
        assert.are.equal(created.expiresAt, l["opensandbox.io/expires-at"])
        assert.is_nil(l["opensandbox.io/manual-cleanup"])
        assert.are.same({ team = "infra", note = "" }, H.json.decode(l["opensandbox.io/metadata"]))
        assert.are.equal("44772", l["opensandbox.io/execd-port"])
        assert.are.equal("linux", l["opensandbox.io/platform-os"])
        assert.are.equal("amd64", l["opensandbox.io/platform-arch"])
        assert.is_nil(l.team)
        assert.is_nil(l.note)
        for k in pairs(l) do
            assert.matches("^opensandbox%.io/", k)
        end

        -- resources and security (§4.3, §8.5)
        local hc = c.HostConfig
        assert.are.equal(500000000, hc.NanoCpus)
        assert.are.equal(64 * 1024 * 1024, hc.Memory)
        local caps = {}
        for i, cap in ipairs(hc.CapDrop) do
            caps[i] = cap:gsub("^CAP_", "")
        end
        table.sort(caps)
        assert.are.same(DEFAULT_CAPDROP, caps)
        local secopt = table.concat(hc.SecurityOpt or {}, ",")
        assert.matches("no%-new%-privileges", secopt)
        assert.are.equal(4096, hc.PidsLimit)
        assert.are.equal("no", hc.RestartPolicy.Name)
        assert.is_false(hc.AutoRemove)
        assert.are.equal("bridge", hc.NetworkMode)
        assert.is_false(hc.ReadonlyRootfs)
        for _, p in ipairs({ "44772/tcp", "8080/tcp" }) do
            assert.are.equal("127.0.0.1", hc.PortBindings[p][1].HostIp)
            assert.are.equal("", hc.PortBindings[p][1].HostPort)
            assert.matches("^%d+$", c.NetworkSettings.Ports[p][1].HostPort)
        end

        -- the agent was injected (§8.4)
        local out, ok = H.run("docker exec sandbox-" .. id .. " ls -l /opt/opensandbox/bootstrap.sh")
        assert.is_true(ok, out)
        assert.matches("^%-rwxr%-xr%-x", out)
    end)

    it("labels a manual-cleanup sandbox and leaves out empty metadata and the limits", function()
        local id = H.create(srv, { timeout = H.json.null })
        H.wait_state(srv, id, "Running", 60)
        local c = H.inspect("sandbox-" .. id)
        local l = c.Config.Labels
        assert.are.equal("true", l["opensandbox.io/manual-cleanup"])
        assert.is_nil(l["opensandbox.io/expires-at"])
        assert.is_nil(l["opensandbox.io/metadata"])
        assert.is_nil(l["opensandbox.io/platform-os"])
        assert.are.equal(0, c.HostConfig.NanoCpus)
        assert.are.equal(0, c.HostConfig.Memory)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
    end)

    it("passes env to Docker in request order (§8.2), whatever the keys' sort order", function()
        -- a raw body: encoding a Lua table would not keep any order
        local body = string.format('{"image":{"uri":"%s"},"entrypoint":["sleep","600"],"timeout":600,'
            .. '"resourceLimits":{},"env":{"ZED":"1","alpha":"2","Mid":null,"B_2":"3","B_1":"4",'
            .. '"\\u00e9t\\u00e9":"5"}}', H.IMAGE)
        local res = H.call(srv, "POST", "/v1/sandboxes", body)
        assert.are.equal(202, res.status, res.body)
        local id = res.json.id
        H.wait_state(srv, id, "Running", 60)
        local names = {}
        for _, e in ipairs(H.inspect("sandbox-" .. id).Config.Env) do
            names[#names + 1] = e:match("^([^=]*)=")
        end
        assert.are.same({ "ZED", "alpha", "B_2", "B_1", "\u{e9}t\u{e9}", "OPENSANDBOX_EXECD_PORT" },
            { table.unpack(names, 1, 6) })
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
    end)

    it("gives each sandbox its own agent port in host network mode (§7.1)", function()
        local host = H.start({ config = { docker = { network_mode = "host" } } })
        local a = H.create(host)
        local b = H.create(host)
        local ports = {}
        for _, id in ipairs({ a, b }) do
            H.wait_state(host, id, "Running", 60)
            local c = H.inspect("sandbox-" .. id)
            assert.are.equal("host", c.HostConfig.NetworkMode)
            local pb = c.HostConfig.PortBindings
            assert.is_true(pb == nil or pb == H.json.null or next(pb) == nil)
            local env = env_map(c.Config.Env)
            local port = env.OPENSANDBOX_EXECD_PORT
            assert.matches("^%d+$", port)
            assert.are_not.equal("44772", port)
            assert.are_not.equal("8080", port)
            assert.are.equal(port, c.Config.Labels["opensandbox.io/execd-port"])
            assert.is_nil(ports[port], "agent port " .. port .. " reused")
            ports[port] = true
            local ep = H.call(host, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772").json
            assert.are.equal("127.0.0.1:" .. port .. "/proxy/44772", ep.endpoint)
            assert.are.equal(env.EXECD_ACCESS_TOKEN, ep.headers["X-EXECD-ACCESS-TOKEN"])
            assert.are.same({ endpoint = "127.0.0.1:8080" },
                H.call(host, "GET", "/v1/sandboxes/" .. id .. "/endpoints/8080").json)
            assert.are.same({ endpoint = "127.0.0.1:18080" },
                H.call(host, "GET", "/v1/sandboxes/" .. id .. "/endpoints/18080").json)
            assert.are.equal(204, H.call(host, "DELETE", "/v1/sandboxes/" .. id).status)
        end
        host:stop()
    end)

    it("brings 30 concurrent creates to Running with distinct host ports", function()
        local N = 30
        local dir = srv.dir .. "/burst"
        H.run("mkdir -p " .. dir)
        local body = H.json.encode(H.body({ metadata = { burst = "yes" }, entrypoint = { "sleep", "600" } }))
        local bf = assert(io.open(dir .. "/body.json", "w"))
        bf:write(body)
        bf:close()
        local script = string.format(
            "for i in $(seq 1 %d); do curl -s -o %s/out.$i -w '%%{http_code}' -X POST -H 'Content-Type: "
                .. "application/json' --data-binary @%s/body.json %s/v1/sandboxes > %s/code.$i & done; wait",
            N, dir, dir, srv.base, dir)
        local out, ok = H.run(script)
        assert.is_true(ok, out)
        local ids, seen = {}, {}
        for i = 1, N do
            local code = H.run("cat " .. dir .. "/code." .. i)
            assert.are.equal("202", code, "create " .. i)
            local f = assert(io.open(dir .. "/out." .. i))
            local b = H.json.decode(f:read("a"))
            f:close()
            assert.is_nil(seen[b.id])
            seen[b.id] = true
            ids[#ids + 1] = b.id
        end
        -- poll the list until all are Running
        local deadline = os.time() + 120
        local running
        repeat
            local res = H.call(srv, "GET", "/v1/sandboxes?metadata=burst%3Dyes&state=running&pageSize=200")
            running = res.json.pagination.totalItems
            if running < N then
                local failed = H.call(srv, "GET", "/v1/sandboxes?metadata=burst%3Dyes&state=failed").json
                assert.are.equal(0, failed.pagination.totalItems, H.json.encode(failed.items))
                H.sleep(0.5)
            end
        until running >= N or os.time() > deadline
        assert.are.equal(N, running)

        local names = {}
        for i, id in ipairs(ids) do
            names[i] = "sandbox-" .. id
        end
        local ports = H.run("docker inspect -f '{{.Name}} {{(index (index .NetworkSettings.Ports \"44772/tcp\") 0)"
            .. ".HostPort}} {{(index (index .NetworkSettings.Ports \"8080/tcp\") 0).HostPort}} {{.State.Status}}' "
            .. table.concat(names, " "))
        local used, lines = {}, 0
        for name, a, b, st in ports:gmatch("(%S+) (%d+) (%d+) (%S+)") do
            lines = lines + 1
            assert.are.equal("running", st, name)
            assert.is_nil(used[a], "host port " .. a .. " reused")
            used[a] = true
            assert.is_nil(used[b], "host port " .. b .. " reused")
            used[b] = true
        end
        assert.are.equal(N, lines, ports)

        -- the endpoints the server reports match Docker's ports
        local ep = H.call(srv, "GET", "/v1/sandboxes/" .. ids[1] .. "/endpoints/8080").json.endpoint
        assert.is_true(used[ep:match(":(%d+)$")] ~= nil, ep)

        -- delete them concurrently
        local del = string.format("for id in %s; do curl -s -o /dev/null -w '%%{http_code}\\n' -X DELETE "
            .. "%s/v1/sandboxes/$id > %s/del.$id & done; wait; cat %s/del.*",
            table.concat(ids, " "), srv.base, dir, dir)
        local codes = H.run(del)
        local n204 = select(2, codes:gsub("204", ""))
        assert.are.equal(N, n204, codes)
        local left = 0
        for _, name in ipairs(H.labelled_containers()) do
            if seen[(name:gsub("^sandbox%-", ""))] then
                left = left + 1
            end
        end
        assert.are.equal(0, left)
        assert.are.equal(0, H.call(srv, "GET", "/v1/sandboxes?metadata=burst%3Dyes").json.pagination.totalItems)
    end)
end)
