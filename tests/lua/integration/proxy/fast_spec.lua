-- Integration: the server proxy's remembered decisions (server.proxy_remember, core/proxy_fast.c) against
-- the real binary, real sandboxes and the ws_echo backend. After the Lua route let a request through, later
-- requests to the same sandbox port with the same credentials are forwarded from C; what reaches the
-- backend must be byte for byte what the Lua route sends, and nothing the Lua route would refuse may pass.
-- Which path a request took is read from opensandbox_proxy_remembered_requests_total; a SIGHUP forgets every
-- remembered decision, so that the next request runs the Lua route again.
local server = require("support.server")
local prom = require("support.prometheus")
local P = require("proxy.helpers")

local ADMIN, KEY_A, KEY_B = "fast-admin", "fast-tenant-a", "fast-tenant-b"
local REMEMBERED = "opensandbox_proxy_remembered_requests_total"

describe("server proxy remembered decisions #integration #docker", function()
    local srv, id

    local function metric(series)
        local r = srv:request("GET", "/metrics", { headers = { ["OPEN-SANDBOX-API-KEY"] = ADMIN } })
        assert.are.equal(200, r.status, r.body)
        return prom.value_of(r.body, series) or 0
    end

    local function remembered()
        return metric(REMEMBERED)
    end

    -- forgets every remembered decision (the HUP handler) and waits until the reload ran
    local function reloads()
        local _, n = srv:log():gsub("SIGHUP: reloading", "")
        return n
    end
    local function forget_all()
        local n = reloads()
        srv:signal("HUP")
        prom.wait_until("the reload", 10, function()
            return reloads() > n
        end)
    end

    -- a request with its headers in a fixed order (raw curl -H options), so that two runs send the same bytes
    local function get(path, headers, o)
        o = o or {}
        local args = {}
        for _, h in ipairs(headers) do
            args[#args + 1] = "-H " .. P.q(h)
        end
        return P.curl(srv, o.method or "GET", path, { anon = true, args = table.concat(args, " "), body = o.body })
    end

    local function px(rest, pid)
        return "/sandboxes/" .. (pid or id) .. "/proxy/8080" .. rest
    end

    setup(function()
        assert(P.wait_docker(180), "Docker daemon not reachable")
        P.ensure_image()
        srv = server.start({ config = {
            server = { api_key = ADMIN, api_keys = {
                { key = KEY_A, principal = "team-a" },
                { key = KEY_B, principal = "team-b" },
            }, proxy_remember = 30 },
            docker = { instance = "proxy-fast-spec-" .. os.time() .. "-" .. math.random(1e6) },
        } })
        id = P.create_echo(srv, KEY_A)
        P.wait_ready(srv, KEY_A, id)
    end)

    teardown(function()
        P.finish(srv)
    end)

    it("sends the backend the same bytes as the Lua route, for every route form and a body", function()
        local headers = { "OPEN-SANDBOX-API-KEY: " .. KEY_A, "Connection: X-Hop, keep-alive", "X-Hop: secret",
            "Cookie: c=1", "Authorization: Bearer x", "X-Forwarded-For: 10.9.8.7", "X-Forwarded-For: 10.9.8.8",
            "X-Keep: kept", "X-Request-ID:  client-id ", "Keep-Alive: 5" }
        local forms = { px("/headers?a=1&b=%20"), "/v1" .. px("/headers"), px("") , px("?q=1") }
        for _, path in ipairs(forms) do
            forget_all()
            local n0 = remembered()
            local slow = get(path, headers)
            assert.are.equal(200, slow.status, slow.body)
            assert.are.equal(n0, remembered(), "the first request runs the Lua route: " .. path)
            local fast = get(path, headers)
            assert.are.equal(n0 + 1, remembered(), "the second is forwarded on the remembered decision: " .. path)
            assert.are.equal(slow.body, fast.body, path)
            assert.are.equal(slow.headers["x-echo-target"], fast.headers["x-echo-target"])
            assert.are.equal("client-id", fast.headers["x-request-id"])
        end
        -- what the Lua route sends (checked once here, on the remembered path)
        local fast = get(px("/headers"), headers)
        local body = fast.body
        assert.is_nil(body:find("X-Hop", 1, true), body)
        assert.is_nil(body:find("Cookie", 1, true), body)
        assert.is_nil(body:find("Authorization", 1, true), body)
        assert.is_nil(body:find(KEY_A, 1, true), body)
        assert.is_nil(body:find("Keep-Alive", 1, true), body)
        assert.matches("X%-Keep: kept", body)
        assert.matches("X%-Forwarded%-For: 10%.9%.8%.7, 10%.9%.8%.8, 127%.0%.0%.1", body)
        assert.matches("X%-Forwarded%-Proto: http", body)
        -- a generated request id when the client sends none
        local r = get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A })
        assert.matches("^%x+$", r.headers["x-request-id"])
        assert.are.equal(32, #r.headers["x-request-id"])
        -- a body (Content-Length and chunked) on the remembered path
        local n0 = remembered()
        local payload = string.rep("0123456789abcdef", 8192)
        r = P.curl(srv, "POST", px("/echo"), { anon = true, headers = { ["OPEN-SANDBOX-API-KEY"] = KEY_A },
            body = payload })
        assert.are.equal(200, r.status)
        assert.are.equal(payload, r.body)
        r = P.curl(srv, "POST", px("/echo"), { anon = true, headers = { ["OPEN-SANDBOX-API-KEY"] = KEY_A },
            body = payload, chunked = true })
        assert.are.equal(200, r.status)
        assert.are.equal(payload, r.body)
        assert.are.equal(n0 + 2, remembered())
    end)

    it("never lets through what the Lua route refuses: other keys, no key, a wrong capability", function()
        assert.are.equal(200, get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A }).status)
        assert.are.equal(200, get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A }).status)
        local n0 = remembered()
        local r = get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_B })
        assert.are.equal(404, r.status, r.body)
        assert.are.equal("DOCKER::SANDBOX_NOT_FOUND", r.json.code)
        r = get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A .. "x" })
        assert.are.equal(401, r.status, r.body)
        r = get(px("/"), {})
        assert.are.equal(401, r.status, r.body)
        -- the key sent twice (the Lua route joins the values: not a valid key)
        r = get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A, "OPEN-SANDBOX-API-KEY: " .. KEY_A })
        assert.are.equal(401, r.status, r.body)
        -- the capability: its own remembered decision; a wrong one is refused
        local ep = P.api(srv, KEY_A, "GET", "/v1/sandboxes/" .. id .. "/endpoints/8080?use_server_proxy=true")
        local cap = ep.json.headers["X-OpenSandbox-Proxy-Token"]
        r = get(px("/"), { "X-OpenSandbox-Proxy-Token: " .. cap:sub(1, -2) .. (cap:sub(-1) == "0" and "1" or "0") })
        assert.are.equal(401, r.status, r.body)
        assert.are.equal(n0, remembered(), "no refused request took the remembered path")
        assert.are.equal(200, get(px("/"), { "X-OpenSandbox-Proxy-Token: " .. cap }).status)
        assert.are.equal(200, get(px("/"), { "X-OpenSandbox-Proxy-Token: " .. cap }).status)
        assert.are.equal(n0 + 1, remembered())
        -- OPTIONS always runs the Lua route (it answers CORS preflights itself when CORS is configured)
        get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A, "Origin: http://example.test",
            "Access-Control-Request-Method: GET" }, { method = "OPTIONS" })
        assert.are.equal(n0 + 1, remembered())
    end)

    it("forgets a sandbox's decisions the moment it changes: pause, resume, delete", function()
        assert.are.equal(200, get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A }).status)
        local n0 = remembered()
        assert.are.equal(200, get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A }).status)
        assert.are.equal(n0 + 1, remembered())
        local res = P.api(srv, KEY_A, "POST", "/v1/sandboxes/" .. id .. "/pause")
        assert.are.equal(202, res.status, res.body)
        prom.wait_until("Paused", 30, function()
            return P.api(srv, KEY_A, "GET", "/v1/sandboxes/" .. id).json.status.state == "Paused"
        end)
        local r = get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A })
        assert.are.equal(409, r.status, r.body) -- the Lua route's answer, not a forward into a frozen sandbox
        assert.are.equal(n0 + 1, remembered())
        res = P.api(srv, KEY_A, "POST", "/v1/sandboxes/" .. id .. "/resume")
        assert.are.equal(202, res.status, res.body)
        P.wait_ready(srv, KEY_A, id)
        -- a second sandbox of the same tenant: its decisions are its own
        local other = P.create_echo(srv, KEY_A)
        P.wait_ready(srv, KEY_A, other)
        assert.are.equal(200, get(px("/", other), { "OPEN-SANDBOX-API-KEY: " .. KEY_A }).status)
        local n1 = remembered()
        assert.are.equal(204, P.api(srv, KEY_A, "DELETE", "/v1/sandboxes/" .. other).status)
        r = get(px("/", other), { "OPEN-SANDBOX-API-KEY: " .. KEY_A })
        assert.are.equal(404, r.status, r.body)
        assert.are.equal(n1, remembered())
        -- the first sandbox still forwards on its remembered decision
        assert.are.equal(200, get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A }).status)
        assert.are.equal(200, get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A }).status)
        assert.is_true(remembered() > n1)
    end)

    it("counts remembered requests in the request metrics like the others", function()
        local series = 'opensandbox_http_requests_total{method="GET",route="/sandboxes/{id}/proxy/{port}/{path*}",'
            .. 'status="200"}'
        local before, n0 = metric(series), remembered()
        for _ = 1, 10 do
            assert.are.equal(200, get(px("/"), { "OPEN-SANDBOX-API-KEY: " .. KEY_A }).status)
        end
        assert.is_true(remembered() - n0 >= 9)
        assert.are.equal(before + 10, metric(series))
    end)
end)
