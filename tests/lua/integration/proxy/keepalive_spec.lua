-- Integration: the server proxy's pool of keep-alive backend connections (server.proxy_keepalive) against
-- the real binary, a real sandbox and the ws_echo backend. What the backend saw is read from the host's socket
-- table (ss): the proxy's connections to the sandbox's ip:8080 (established, and TIME_WAIT left behind by the
-- proxy closing first). Checks: many requests over one connection; a response with Connection: close is not
-- reused; a backend that dropped its idle connections costs the client nothing (the dead connection leaves
-- the pool, the next request connects anew); a parallel burst leaves at most pool-size connections and no
-- TIME_WAIT; the connections are closed with the sandbox; with proxy_keepalive = 0, Connection: close
-- upstream and one connection per request. (The retry of a request sent on a connection that turns out dead
-- is checked in tests/c/scenarios/proxy_pool.lua, where the backend can drop a connection on cue.)
local server = require("support.server")
local P = require("proxy.helpers")

local KEY = "proxy-keepalive-key"
local POOL = 8

describe("server proxy keep-alive pool #integration #docker", function()
    local srv, id, ip

    local function px(rest)
        return "/sandboxes/" .. id .. "/proxy/8080" .. rest
    end

    -- the host's sockets towards ip:8080 in `state` ("established", "time-wait"): a set of local ports
    local function sockets(state)
        local out = P.sh("ss -Htn state " .. state .. " dst " .. ip .. ":8080")
        local set, n = {}, 0
        for line in out:gmatch("[^\n]+") do
            local local_addr = line:match("^%s*%d+%s+%d+%s+(%S+)")
            local port = local_addr and local_addr:match(":(%d+)$")
            if port then
                set[port] = true
                n = n + 1
            end
        end
        return set, n
    end

    local function new_ports(before, after)
        local n = 0
        for port in pairs(after) do
            if not before[port] then
                n = n + 1
            end
        end
        return n
    end

    setup(function()
        assert(P.wait_docker(180), "Docker daemon not reachable")
        P.ensure_image()
        P.defaults = { ["OPEN-SANDBOX-API-KEY"] = KEY }
        srv = server.start({ config = { server = { api_key = KEY, proxy_keepalive = POOL },
            docker = { instance = "proxy-ka-spec-" .. os.time() .. "-" .. math.random(1e6) } } })
        id = P.create_echo(srv, KEY)
        P.wait_ready(srv, KEY, id)
        ip = (P.sh("docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' sandbox-" .. id))
            :gsub("%s+", "")
        assert.is_truthy(ip:match("^%d+%.%d+%.%d+%.%d+$"), "container IP: " .. ip)
    end)

    teardown(function()
        P.defaults = nil
        P.finish(srv)
    end)

    it("sends 30 requests over one backend connection, without Connection: close", function()
        local tw0 = sockets("time-wait")
        local ports = {}
        for i = 1, 30 do
            local r = P.curl(srv, "GET", px("/"))
            assert.are.equal(200, r.status, "request " .. i)
            assert.are.equal("ws-echo ok", r.body)
            local est, n = sockets("established")
            assert.are.equal(1, n, "one connection to the backend after request " .. i)
            for port in pairs(est) do
                ports[port] = true
            end
        end
        local distinct = 0
        for _ in pairs(ports) do
            distinct = distinct + 1
        end
        assert.are.equal(1, distinct, "every request used the same connection (local port)")
        local r = P.curl(srv, "GET", px("/headers"))
        assert.are.equal(200, r.status)
        assert.is_nil(r.body:lower():find("\nconnection:", 1, true), "no Connection header upstream:\n" .. r.body)
        assert.are.equal(0, new_ports(tw0, (sockets("time-wait"))), "no TIME_WAIT socket left behind")
    end)

    it("does not reuse a connection after a response with Connection: close", function()
        assert.are.equal(200, P.curl(srv, "GET", px("/")).status)
        local before = sockets("established")
        local r = P.curl(srv, "GET", px("/resp-headers"))
        assert.are.equal(200, r.status)
        assert.are.equal("ok", r.body)
        r = P.curl(srv, "GET", px("/"))
        assert.are.equal(200, r.status)
        local after, n = sockets("established")
        assert.are.equal(1, n)
        assert.are.equal(1, new_ports(before, after), "the request after Connection: close used a new connection")
    end)

    it("drops pooled connections the backend closed; the next request connects anew", function()
        assert.are.equal(200, P.curl(srv, "GET", px("/")).status)
        local before, n0 = sockets("established")
        assert.are.equal(1, n0)
        -- the backend forks a process per connection: kill those (the listener, pid 1, stays)
        -- (the listener is the oldest, lowest pid: it stays)
        local kill = "kill -9 $(pidof ws_echo | tr ' ' '\\n' | sort -n | tail -n +2)"
        P.sh("docker exec sandbox-" .. id .. " sh -c " .. P.q(kill))
        local n
        for _ = 1, 50 do
            n = select(2, sockets("established"))
            if n == 0 then
                break
            end
            P.sh("sleep 0.1")
        end
        assert.are.equal(0, n, "the closed connection left the pool")
        for i = 1, 5 do
            local r = P.curl(srv, "GET", px("/"))
            assert.are.equal(200, r.status, "request " .. i .. " after the backend dropped its connections")
        end
        local after
        after, n = sockets("established")
        assert.are.equal(1, n)
        assert.are.equal(1, new_ports(before, after))
    end)

    it("serves a parallel burst (concurrency <= pool size) on at most that many connections, no TIME_WAIT", function()
        local tw0 = sockets("time-wait")
        local urls = {}
        for _ = 1, 200 do
            urls[#urls + 1] = P.q(srv.base .. px("/"))
        end
        local out = P.sh("curl -sS --no-progress-meter -Z --parallel-max " .. POOL
            .. " -H " .. P.q("OPEN-SANDBOX-API-KEY: " .. KEY)
            .. " -w '%{http_code}\\n' -o /dev/null " .. table.concat(urls, " -o /dev/null "))
        local ok200 = select(2, out:gsub("200\n", ""))
        assert.are.equal(200, ok200, "all 200 answered 200:\n" .. out)
        local _, n = sockets("established")
        assert.is_true(n >= 1 and n <= POOL, "idle backend connections after the burst: " .. n)
        assert.are.equal(0, new_ports(tw0, (sockets("time-wait"))), "no TIME_WAIT socket from the burst")
    end)

    it("closes the sandbox's backend connections when it is deleted", function()
        assert.are.equal(200, P.curl(srv, "GET", px("/")).status)
        local _, n = sockets("established")
        assert.is_true(n >= 1 and n <= POOL, "pooled connections before the delete: " .. n)
        local res = P.api(srv, KEY, "DELETE", "/v1/sandboxes/" .. id)
        assert.are.equal(204, res.status, res.body)
        _, n = sockets("established")
        assert.are.equal(0, n, "no connection to the deleted sandbox")
    end)

    it("with proxy_keepalive = 0 sends Connection: close and opens a connection per request", function()
        local srv0 = server.start({ config = { server = { api_key = KEY, proxy_keepalive = 0 },
            docker = { instance = "proxy-ka0-spec-" .. os.time() .. "-" .. math.random(1e6) } } })
        local ok, err = pcall(function()
            id = P.create_echo(srv0, KEY)
            P.wait_ready(srv0, KEY, id)
            ip = (P.sh("docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' sandbox-"
                .. id)):gsub("%s+", "")
            local r = P.curl(srv0, "GET", px("/headers"))
            assert.are.equal(200, r.status)
            assert.is_truthy(r.body:lower():find("\nconnection: close", 1, true), r.body)
            for i = 1, 10 do
                assert.are.equal(200, P.curl(srv0, "GET", px("/")).status, "request " .. i)
            end
            local _, n = sockets("established")
            assert.are.equal(0, n, "nothing kept open")
            P.api(srv0, KEY, "DELETE", "/v1/sandboxes/" .. id)
        end)
        srv0:stop()
        assert(ok, err)
    end)
end)
