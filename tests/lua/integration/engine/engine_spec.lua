-- Integration: the real binary's HTTP surface without Docker (DOCKER_HOST points nowhere, so the server
-- starts, answers /health and serves reads from its store): auth, request ids, routing, error envelopes,
-- body limits, hostile input, docs, signals.
local server = require("support.server")
local json = require("common.json")

local KEY = "engine-test-key"

describe("engine #integration", function()
    local srv

    setup(function()
        srv = server.start({
            config = { server = { api_key = KEY }, docker = { host = "unix:///nonexistent/docker.sock" } },
        })
    end)

    teardown(function()
        if srv then
            srv:stop()
        end
    end)

    local function authed(method, path, o)
        o = o or {}
        o.headers = o.headers or {}
        o.headers["OPEN-SANDBOX-API-KEY"] = KEY
        return assert(srv:request(method, path, o))
    end

    local function envelope(res, status, code, message)
        assert.are.equal(status, res.status)
        assert.truthy(res.headers["content-type"]:find("application/json", 1, true))
        local body = assert(json.decode(res.body))
        assert.are.equal(code, body.code)
        if message then
            assert.are.equal(message, body.message)
        end
        assert.is_string(body.message)
        return body
    end

    it("serves /health and /v1/health without a key", function()
        for _, p in ipairs({ "/health", "/v1/health" }) do
            local res = assert(srv:request("GET", p))
            assert.are.equal(200, res.status)
            assert.are.equal('{"status":"healthy"}', res.body)
        end
    end)

    it("answers a plain GET /health in the core exactly as the handler does, and counts it", function()
        local function health_count()
            local text = assert(srv:request("GET", "/metrics", { headers = { ["OPEN-SANDBOX-API-KEY"] = KEY } })).body
            local n = 0
            for v in text:gmatch('opensandbox_http_requests_total{method="GET",route="/health",status="200"} (%d+)') do
                n = n + tonumber(v)
            end
            return n
        end
        local function static_lines()
            local n = 0
            for l in srv:log():gmatch("[^\n]+") do
                if l:find('"msg":"request"', 1, true) and l:find('"static":"true"', 1, true) then
                    n = n + 1
                end
            end
            return n
        end
        local n0, s0 = health_count(), static_lines()
        -- answered by the core (its DEBUG line says so): a query, /v1, a client's request id
        local plain = assert(srv:request("GET", "/health?probe=1"))
        local v1 = assert(srv:request("GET", "/v1/health", { headers = { ["X-Request-ID"] = " lb-check-1 " } }))
        assert.are.equal(s0 + 2, static_lines())
        -- left to the handler: an Origin (CORS headers), a body, another method
        local cors = assert(srv:request("GET", "/health", { headers = { Origin = "http://example.test" } }))
        local post = assert(srv:request("POST", "/health", { body = "{}" }))
        assert.are.equal(s0 + 2, static_lines())
        for _, r in ipairs({ plain, v1, cors }) do
            assert.are.equal(200, r.status)
            assert.are.equal('{"status":"healthy"}', r.body)
            assert.are.equal("application/json", r.headers["content-type"])
        end
        assert.are.equal(405, post.status) -- the router's answer
        assert.truthy(plain.headers["x-request-id"]:match("^" .. string.rep("%x", 32) .. "$"))
        assert.are.equal("lb-check-1", v1.headers["x-request-id"])
        assert.is_nil(plain.headers["access-control-allow-origin"])
        assert.are.equal("http://example.test", cors.headers["access-control-allow-origin"])
        -- the request metrics count both ways alike
        assert.are.equal(n0 + 3, health_count())
    end)

    it("answers 401 with the exact codes and messages", function()
        local res = assert(srv:request("GET", "/v1/sandboxes"))
        envelope(res, 401, "MISSING_API_KEY",
            "Authentication credentials are missing. Provide API key via OPEN-SANDBOX-API-KEY header.")
        res = assert(srv:request("GET", "/v1/sandboxes", { headers = { ["open-sandbox-api-key"] = "wrong" } }))
        envelope(res, 401, "INVALID_API_KEY",
            "Authentication credentials are invalid. Check your API key and try again.")
        -- authentication runs before routing: an unknown path without a key is 401, not 404
        res = assert(srv:request("GET", "/no/such/path"))
        envelope(res, 401, "MISSING_API_KEY")
    end)

    it("exempts exactly the documented paths", function()
        for _, p in ipairs({ "/health", "/v1/health", "/docs", "/redoc", "/openapi.json" }) do
            local res = assert(srv:request("GET", p))
            assert.are_not.equal(401, res.status, p)
        end
        -- a proxy-shaped path takes the key or the sandbox's capability (its own 401 message names both);
        -- one with '..' (even encoded) needs the key
        local res = assert(srv:request("GET", "/v1/sandboxes/abc/proxy/8080/x"))
        assert.are.equal(401, res.status)
        assert.truthy(res.body:find("X-OpenSandbox-Proxy-Token", 1, true), res.body)
        res = assert(srv:request("GET", "/v1/sandboxes/abc/proxy/8080/%2e%2e/x"))
        assert.are.equal(401, res.status)
        assert.is_nil(res.body:find("X-OpenSandbox-Proxy-Token", 1, true), res.body)
    end)

    it("sets X-Request-ID on every response, echoing a valid one", function()
        local res = assert(srv:request("GET", "/nope", { headers = { ["X-Request-ID"] = "  my-id-1  " } }))
        assert.are.equal("my-id-1", res.headers["x-request-id"])
        res = authed("GET", "/v1/nope", { headers = { ["X-Request-ID"] = "trace-404" } })
        assert.are.equal(404, res.status)
        assert.are.equal("trace-404", res.headers["x-request-id"])
        res = assert(srv:request("GET", "/health"))
        assert.truthy(res.headers["x-request-id"]:match("^" .. string.rep("%x", 32) .. "$"))
        res = assert(srv:request("GET", "/health", { headers = { ["X-Request-ID"] = string.rep("a", 257) } }))
        assert.truthy(res.headers["x-request-id"]:match("^" .. string.rep("%x", 32) .. "$"))
        -- the id is in the request's log lines
        authed("GET", "/v1/sandboxes", { headers = { ["X-Request-ID"] = "log-me-123" } })
        assert.truthy(srv:log():find('"request_id":"log-me-123"', 1, true))
    end)

    it("serves the same routes at / and /v1", function()
        local a = authed("GET", "/sandboxes?pageSize=5")
        local b = authed("GET", "/v1/sandboxes?pageSize=5")
        assert.are.equal(200, a.status)
        assert.are.equal(a.body, b.body)
        assert.are.equal('{"items":[],"pagination":{"page":1,"pageSize":5,"totalItems":0,"totalPages":0,' ..
            '"hasNextPage":false}}', (function()
                local v = json.decode(a.body)
                return string.format('{"items":[],"pagination":{"page":%d,"pageSize":%d,"totalItems":%d,' ..
                    '"totalPages":%d,"hasNextPage":%s}}', v.pagination.page, v.pagination.pageSize,
                    v.pagination.totalItems, v.pagination.totalPages, tostring(v.pagination.hasNextPage))
            end)())
        assert.truthy(a.body:find('"items":[]', 1, true))
    end)

    it("renders 404 and 405 as ErrorResponse", function()
        envelope(authed("GET", "/v1/nothing-here"), 404, "GENERAL::NOT_FOUND", "Not Found")
        local res = authed("PUT", "/v1/sandboxes")
        envelope(res, 405, "GENERAL::METHOD_NOT_ALLOWED", "Method Not Allowed")
        assert.truthy(res.headers["allow"]:find("GET", 1, true))
        assert.truthy(res.headers["allow"]:find("POST", 1, true))
        envelope(authed("GET", "/v1/sandboxes/unknown-id"), 404, "DOCKER::SANDBOX_NOT_FOUND",
            "Sandbox unknown-id not found.")
        envelope(authed("GET", "/v1/poolz"), 404, "GENERAL::NOT_FOUND")
    end)

    it("limits bodies to 1 MiB with 413", function()
        local res = authed("POST", "/v1/sandboxes", { body = string.rep("a", 1048577) })
        envelope(res, 413, "GENERAL::PAYLOAD_TOO_LARGE", "Request body exceeds 1048576 bytes.")
        -- the limit counts after de-chunking
        res = authed("POST", "/v1/sandboxes", { body = string.rep("a", 1048577),
            headers = { ["Transfer-Encoding"] = "chunked" } })
        envelope(res, 413, "GENERAL::PAYLOAD_TOO_LARGE")
    end)

    it("answers clear 400s for bad JSON", function()
        local bad = { "", "{", "[1,2]", "\"x\"", "{\"a\":\"\255\"}", string.rep("[", 5000) .. string.rep("]", 5000),
            string.rep('{"a":', 1000) .. "1" .. string.rep("}", 1000) }
        for _, body in ipairs(bad) do
            local res = authed("POST", "/v1/sandboxes", { body = body })
            envelope(res, 400, "SANDBOX::INVALID_PARAMETER", "Request body must be a JSON object.")
        end
    end)

    it("answers 503 DOCKER::UNAVAILABLE when Docker is unreachable, and still serves reads", function()
        local res = authed("POST", "/v1/sandboxes", { body = json.encode({ image = { uri = "local/busybox:latest" },
            entrypoint = { "sleep", "60" }, resourceLimits = {} }) })
        local body = envelope(res, 503, "DOCKER::UNAVAILABLE")
        assert.truthy(body.message:find("Docker daemon is unreachable at unix:///nonexistent/docker.sock", 1, true))
        assert.are.equal("5", res.headers["retry-after"])
        assert.are.equal(200, authed("GET", "/v1/sandboxes").status)
    end)

    it("serves the OpenAPI document and the docs pages", function()
        local res = assert(srv:request("GET", "/openapi.json"))
        assert.are.equal(200, res.status)
        local doc = assert(json.decode(res.body))
        assert.truthy(doc.openapi:match("^3%.1"))
        assert.truthy(doc.paths["/sandboxes"] or doc.paths["/v1/sandboxes"])
        for _, p in ipairs({ "/docs", "/redoc" }) do
            res = assert(srv:request("GET", p))
            assert.are.equal(200, res.status)
            assert.truthy(res.headers["content-type"]:find("text/html", 1, true))
            assert.truthy(res.body:find("/openapi.json", 1, true))
        end
    end)

    it("CORS preflight is answered without a key", function()
        local res = assert(srv:request("OPTIONS", "/v1/sandboxes", { headers = { Origin = "http://example.test",
            ["Access-Control-Request-Method"] = "POST" } }))
        assert.are.equal(200, res.status)
        assert.are.equal("http://example.test", res.headers["access-control-allow-origin"])
    end)

    it("survives hostile input without crashing", function()
        -- a malformed header line and an unknown HTTP version are refused by libmicrohttpd itself
        local out = srv:raw("GET /health HTTP/1.1\r\nNoColonHeader\r\n\r\n", 3)
        assert.truthy(out:match("^HTTP/1%.1 400"), out)
        out = srv:raw("GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 3)
        assert.truthy(out:match("^HTTP/1%.1 505"), out)
        -- an unknown method reaches the router: 404 ErrorResponse (no such route), not a crash
        out = srv:raw("BREW / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3)
        assert.truthy(out:match("^HTTP/1%.1 4%d%d"), out)
        -- a request line with no version at all is dropped
        srv:raw("GARBAGE\r\n\r\n", 2)
        -- more than 1 MiB of headers
        out = srv:raw("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("b", 1100000) .. "\r\n\r\n", 5)
        assert.truthy(out == "" or out:match("^HTTP/1%.1 4%d%d"), out:sub(1, 100))
        -- a truncated body: the connection closes before Content-Length bytes arrived
        srv:raw("POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"image\":", 1)
        -- conflicting Content-Length and Transfer-Encoding
        out = srv:raw("POST /v1/metrics/events HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n" ..
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", 3)
        assert.truthy(out:match("^HTTP/1%.1 %d%d%d"), out)
        assert.is_true(srv:alive())
        assert.are.equal(200, assert(srv:request("GET", "/health")).status)
    end)

    it("delivers SIGHUP to Lua and keeps serving", function()
        srv:signal("HUP")
        local found = false
        for _ = 1, 50 do
            if srv:log():find("SIGHUP: reloading", 1, true) then
                found = true
                break
            end
            server.sh("sleep 0.05")
        end
        assert.is_true(found)
        assert.are.equal(200, assert(srv:request("GET", "/health")).status)
    end)
end)

describe("engine shutdown #integration", function()
    it("drains an in-flight request on SIGTERM, then exits 0", function()
        local srv = server.start({ config = { docker = { host = "unix:///nonexistent/docker.sock" } } })
        -- a request whose body is still arriving when SIGTERM lands is finished, not dropped
        local out_path = srv.dir .. "/drain.out"
        local cmd = string.format([[
            (exec 3<>/dev/tcp/127.0.0.1/%d
             printf 'POST /v1/metrics/events HTTP/1.1\r\nHost: x\r\n' >&3
             printf 'Content-Length: 10\r\nConnection: close\r\n\r\n01234' >&3
             sleep 0.6
             printf '56789' >&3
             timeout 5 cat <&3 > %s) &
            sleep 0.3; kill -TERM %d; wait; ]], srv.port, server.quote(out_path), srv.pid)
        server.sh("bash -c " .. server.quote(cmd))
        local f = assert(io.open(out_path))
        local out = f:read("a")
        f:close()
        assert.truthy(out:match("^HTTP/1%.1 204"), out)
        assert.is_true(srv:wait_exit(10))
        local _, _, code = server.sh("wait " .. srv.pid .. " 2>/dev/null; echo")
        assert.is_nil(code == 1 or nil)
        assert.truthy(srv:log():find('"msg":"shutting down"', 1, true))
        -- new connections are refused once draining started
        assert.is_nil((srv:request("GET", "/health", { timeout = 1 })))
    end)

    it("refuses to start without a key on a non-loopback address (exit 2)", function()
        local dir = server.tmpdir()
        local f = assert(io.open(dir .. "/c.lua", "w"))
        f:write('return { server = { host = "0.0.0.0", port = 18999 }, store = { path = "' .. dir .. '/db" } }')
        f:close()
        local out, _, code = server.sh(server.quote(server.binary()) .. " --config " .. dir .. "/c.lua 2>&1")
        assert.are.equal(2, code)
        assert.truthy(out:lower():find("key", 1, true), out)
    end)

    it("checks the configuration with --check-config", function()
        local dir = server.tmpdir()
        local f = assert(io.open(dir .. "/bad.lua", "w"))
        f:write('return { docker = { api_timeout = "soon" } }')
        f:close()
        local out, _, code = server.sh(server.quote(server.binary()) .. " --check-config --config " .. dir ..
            "/bad.lua 2>&1")
        assert.are.equal(1, code)
        assert.truthy(out:find("docker.api_timeout", 1, true), out)
        out, _, code = server.sh(server.quote(server.binary()) .. " --check-config --config " ..
            server.quote(server.root() .. "/config.lua") .. " 2>&1")
        assert.are.equal(0, code, out)
    end)
    it("logs a task turn that holds the loop past OPENSANDBOX_SLOW_TURN_MS, with where it began and ended, " ..
        "its CPU time and the heap",
        function()
            local dir = server.tmpdir()
            os.execute("mkdir -p " .. server.quote(dir .. "/routes"))
            local f = assert(io.open(dir .. "/routes/spin.lua", "w"))
            f:write([[
return { routes = {
    { method = "GET", path = "/ops/spin", handler = function()
        local t0 = os.clock()
        while os.clock() - t0 < 0.03 do end -- 30 ms without yielding
        return { status = 200, json = { spun = true } }
    end },
    { method = "GET", path = "/ops/quick", handler = function() return { status = 200, json = {} } end },
} }
]])
            f:close()
            local s = server.start({ dir = dir, env = { OPENSANDBOX_SLOW_TURN_MS = "20" },
                config = { server = { api_key = KEY, routes_dir = dir .. "/routes" },
                    docker = { host = "unix:///nonexistent/docker.sock" } } })
            local h = { headers = { ["OPEN-SANDBOX-API-KEY"] = KEY } }
            assert.are.equal(200, assert(s:request("GET", "/ops/quick", h)).status)
            assert.are.equal(200, assert(s:request("GET", "/ops/spin", h)).status)
            local slow = {}
            for l in s:log():gmatch("[^\n]+") do
                -- (the boot task's first turn, loading every module, is slow too: requests only)
                if l:find('"msg":"slow task turn"', 1, true) and l:find('"task":"http"', 1, true) then
                    slow[#slow + 1] = assert(json.decode(l))
                end
            end
            s:stop()
            -- the spin, and not the quick request
            assert.are.equal(1, #slow, json.encode(slow))
            assert.are.equal("http", slow[1].task)
            assert.is_true(tonumber(slow[1].ms) >= 30, slow[1].ms)
            assert.are.equal("(start)", slow[1].from)
            assert.are.equal("(end)", slow[1].to)
            assert.is_string(slow[1].request_id)
            -- the spin was on the CPU (os.clock counts the process's CPU time); and the heap before -> after
            assert.is_true(tonumber(slow[1].cpu_ms) >= 20, slow[1].cpu_ms)
            assert.truthy(slow[1].heap_kb:match("^%d+ %-> %d+$"), slow[1].heap_kb)
        end)
end)
