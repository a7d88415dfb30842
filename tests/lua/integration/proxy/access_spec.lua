-- Integration: who and what the server proxy may reach (API.md §7.3), against the real binary and real
-- sandboxes (local/ws-echo:latest):
--   * tenants: a proxy request needs a key that sees the sandbox or the sandbox's capability
--     (X-OpenSandbox-Proxy-Token from an endpoint reply); another tenant's key gets 404, no credentials 401,
--     and the capability still opens the sandbox after a server restart
--   * host network mode: the proxy reaches the sandbox's agent and the ports its own processes listen on,
--     never another service of the host's loopback (here: the server itself and a listener of the test)
--
-- Only the sandboxes created here are deleted at the end (another spec may share the Docker daemon).
local server = require("support.server")
local P = require("proxy.helpers")

local KEY_A, KEY_B, ADMIN = "proxy-tenant-a", "proxy-tenant-b", "proxy-admin"

local function tenants_config(instance)
    return {
        server = { api_key = ADMIN, api_keys = {
            { key = KEY_A, principal = "team-a" },
            { key = KEY_B, principal = "team-b" },
        } },
        docker = { instance = instance },
    }
end

-- a free TCP port on the host (bind to port 0), for a host-mode sandbox's own service
local function free_port()
    local out = P.sh([[node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{]]
        .. [[console.log(s.address().port);s.close()})']])
    return assert(tonumber(out:match("%d+")), "no free port: " .. out)
end

describe("server proxy access #integration #docker", function()
    setup(function()
        assert(P.wait_docker(180), "Docker daemon not reachable")
        P.ensure_image()
    end)

    describe("tenants and the capability", function()
        local srv, id, instance

        setup(function()
            instance = "proxy-access-" .. os.time() .. "-" .. math.random(1e6)
            srv = server.start({ config = tenants_config(instance) })
            id = P.create_echo(srv, KEY_A)
            P.wait_ready(srv, KEY_A, id)
        end)

        teardown(function()
            P.finish(srv)
        end)

        local function get(path, headers, s)
            return P.curl(s or srv, "GET", "/sandboxes/" .. id .. "/proxy/8080" .. path,
                { anon = true, headers = headers })
        end

        it("needs a key that sees the sandbox, or its capability", function()
            -- no credentials: 401 (the sandbox exists and its id is known)
            local r = get("/")
            assert.are.equal(401, r.status, r.body)
            assert.are.equal("MISSING_API_KEY", r.json.code)
            -- the owner's key and the admin key: through
            assert.are.equal("ws-echo ok", get("/", { ["OPEN-SANDBOX-API-KEY"] = KEY_A }).body)
            assert.are.equal("ws-echo ok", get("/", { ["OPEN-SANDBOX-API-KEY"] = ADMIN }).body)
            -- another tenant's key: the sandbox does not exist for it
            r = get("/", { ["OPEN-SANDBOX-API-KEY"] = KEY_B })
            assert.are.equal(404, r.status, r.body)
            assert.are.equal("DOCKER::SANDBOX_NOT_FOUND", r.json.code)
            -- another tenant cannot get the capability either
            local ep = P.api(srv, KEY_B, "GET", "/v1/sandboxes/" .. id .. "/endpoints/8080?use_server_proxy=true")
            assert.are.equal(404, ep.status, ep.body)
            -- the owner's endpoint reply carries it; the SDKs send it with every request to the endpoint
            ep = P.api(srv, KEY_A, "GET", "/v1/sandboxes/" .. id .. "/endpoints/8080?use_server_proxy=true")
            assert.are.equal(200, ep.status, ep.body)
            local cap = ep.json.headers["X-OpenSandbox-Proxy-Token"]
            assert.matches("^%x+$", cap)
            r = get("/headers", { ["X-OpenSandbox-Proxy-Token"] = cap })
            assert.are.equal(200, r.status, r.body)
            assert.is_nil(r.body:lower():find("x-opensandbox-proxy-token", 1, true), r.body)
            -- with a key of another tenant the capability still decides (it names this one sandbox)
            r = get("/", { ["X-OpenSandbox-Proxy-Token"] = cap, ["OPEN-SANDBOX-API-KEY"] = KEY_B })
            assert.are.equal("ws-echo ok", r.body)
            -- a wrong capability: 401
            r = get("/", { ["X-OpenSandbox-Proxy-Token"] = ("0"):rep(64) })
            assert.are.equal(401, r.status, r.body)
            assert.are.equal("INVALID_API_KEY", r.json.code)
        end)

        it("keeps the capability valid across a server restart", function()
            local ep = P.api(srv, KEY_A, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772?use_server_proxy=true")
            local cap = ep.json.headers["X-OpenSandbox-Proxy-Token"]
            local exec_token = ep.json.headers["X-EXECD-ACCESS-TOKEN"]
            assert.matches("^%x+$", cap)
            local dir, port = srv.dir, srv.port
            srv:stop()
            srv = server.start({ dir = dir, port = port, config = tenants_config(instance) })
            P.wait_ready(srv, KEY_A, id)
            local r = P.curl(srv, "GET", "/sandboxes/" .. id .. "/proxy/44772/ping", { anon = true,
                headers = { ["X-OpenSandbox-Proxy-Token"] = cap, ["X-EXECD-ACCESS-TOKEN"] = exec_token } })
            assert.are.equal(200, r.status, r.body)
            ep = P.api(srv, KEY_A, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772?use_server_proxy=true")
            assert.are.equal(cap, ep.json.headers["X-OpenSandbox-Proxy-Token"])
        end)
    end)

    describe("host network mode", function()
        local srv, id, port, other

        setup(function()
            local instance = "proxy-host-" .. os.time() .. "-" .. math.random(1e6)
            srv = server.start({ config = { server = { api_key = ADMIN },
                docker = { network_mode = "host", instance = instance } } })
            port = free_port()
            id = P.create_echo(srv, ADMIN, { env = { PORT = tostring(port) } })
            -- a service of the host that is not the sandbox's: a ws-echo run by the test itself (not a
            -- sandbox), on another free port of the host's loopback
            other = free_port()
            P.sh(string.format("docker run -d --rm --network host --name osb-proxy-host-other-%d -e PORT=%d "
                .. "--label opensandbox.test=1 --entrypoint /ws_echo %s", other, other, P.IMAGE))
        end)

        teardown(function()
            if other then
                P.sh("docker rm -f osb-proxy-host-other-" .. other .. " >/dev/null 2>&1")
            end
            P.finish(srv)
        end)

        local function px(p, path, headers)
            local h = { ["OPEN-SANDBOX-API-KEY"] = ADMIN }
            for k, v in pairs(headers or {}) do
                h[k] = v
            end
            return P.curl(srv, "GET", "/sandboxes/" .. id .. "/proxy/" .. p .. path, { anon = true, headers = h })
        end

        it("reaches the ports the sandbox's processes listen on, and its agent", function()
            local deadline = os.time() + 90
            local r
            repeat
                r = px(port, "/")
                if r.status == 200 then
                    break
                end
                P.sh("sleep 0.3")
            until os.time() > deadline
            assert.are.equal(200, r.status, tostring(r.body))
            assert.are.equal("ws-echo ok", r.body)
            local ep = P.api(srv, ADMIN, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772?use_server_proxy=true")
            r = px(44772, "/ping", { ["X-EXECD-ACCESS-TOKEN"] = ep.json.headers["X-EXECD-ACCESS-TOKEN"] })
            assert.are.equal(200, r.status, tostring(r.body))
        end)

        it("refuses every other port of the host's loopback with 403", function()
            -- the server itself, a service of the host, and a port nobody listens on
            local other_ok = P.curl(srv, "GET", "/", { anon = true, base = "http://127.0.0.1:" .. other })
            assert.are.equal("ws-echo ok", other_ok.body, "the host service is up (control)")
            for _, t in ipairs({ { srv.port, "/health" }, { other, "/" }, { free_port(), "/" } }) do
                local r = px(t[1], t[2])
                local desc = t[1] .. t[2] .. " -> " .. tostring(r.status) .. " " .. tostring(r.body)
                assert.are.equal(403, r.status, desc)
                assert.are.equal("SANDBOX::PROXY_PORT_FORBIDDEN", r.json.code, desc)
                assert.truthy(r.json.message:find("is not served by sandbox " .. id, 1, true), desc)
                assert.are_not.equal("ws-echo ok", r.body, desc)
            end
        end)
    end)
end)
