-- Integration: the server proxy (API.md §7.3, auth exemption §1.2) against the real binary, real
-- sandboxes and the ws_echo backend (tests/backends/ws_echo.c, image local/ws-echo:latest built by
-- tests/images/build-ws-echo.sh): methods and raw targets byte for byte, streamed bodies both ways with
-- flat memory, SSE, WebSocket, a backend dying mid-response, header rules, auth, traversal, error codes,
-- and the sandbox's agent (execd) reached through the proxy.
--
-- Only the sandboxes created here are deleted at the end (another spec may share the Docker daemon).
local server = require("support.server")
local json = require("common.json")
local P = require("proxy.helpers")

local KEY = "proxy-test-key"

describe("server proxy #integration #docker", function()
    local srv, id, paused_id, ip

    local function px(rest, v1)
        return (v1 and "/v1" or "") .. "/sandboxes/" .. id .. "/proxy/8080" .. rest
    end

    local function assert_error(r, status, code, message)
        local desc = string.format("got %s %s", tostring(r.status), tostring(r.body))
        assert.are.equal(status, r.status, desc)
        assert.is_table(r.json, desc)
        assert.are.equal(code, r.json.code, desc)
        if type(message) == "function" then
            assert.is_true(message(r.json.message), desc)
        elseif message then
            assert.are.equal(message, r.json.message, desc)
        end
    end

    setup(function()
        assert(P.wait_docker(180), "Docker daemon not reachable")
        P.ensure_image()
        -- its own instance name: servers of other specs on the same daemon leave these sandboxes alone
        -- proxy requests carry the key unless a test says otherwise (with a key configured the proxy
        -- needs it, or the sandbox's capability: see "auth and paths")
        P.defaults = { ["OPEN-SANDBOX-API-KEY"] = KEY }
        srv = server.start({ config = { server = { api_key = KEY },
            docker = { instance = "proxy-spec-" .. os.time() .. "-" .. math.random(1e6) } } })
        id = P.create_echo(srv, KEY)
        paused_id = P.create_echo(srv, KEY)
        P.wait_ready(srv, KEY, id)
        P.wait_ready(srv, KEY, paused_id)
        local res = P.api(srv, KEY, "POST", "/v1/sandboxes/" .. paused_id .. "/pause")
        assert.are.equal(202, res.status, res.body)
        ip = (P.sh("docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' sandbox-" .. id))
            :gsub("%s+", "")
    end)

    teardown(function()
        P.defaults = nil
        P.finish(srv)
    end)

    describe("methods and targets", function()
        it("forwards GET/POST/PUT/DELETE/PATCH with the raw target byte for byte", function()
            local query = "?a=1&b=%20x%2Fy&c=%E2%9C%93&d=a+b&&e=&f=%25&g=%3F%23"
            for _, m in ipairs({ "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS" }) do
                local body = m == "GET" and nil or ("body of " .. m .. " \0\255 end")
                local r = P.curl(srv, m, px("/echo" .. query), { body = body })
                assert.are.equal(200, r.status, m .. ": " .. tostring(r.body))
                assert.are.equal(m, r.headers["x-echo-method"])
                assert.are.equal("/echo" .. query, r.headers["x-echo-target"])
                assert.are.equal(body or "", r.body)
            end
        end)

        it("keeps encoded path bytes and the /v1 prefix form", function()
            local r = P.curl(srv, "GET", px("/a%2Fb/c%20d/%E2%9C%93;p=1?x=%2e%2E", true))
            assert.are.equal(404, r.status)
            assert.are.equal("/a%2Fb/c%20d/%E2%9C%93;p=1?x=%2e%2E", r.headers["x-echo-target"])
            assert.are.equal("not found", r.body)
            -- no tail: the backend sees "/"; a trailing slash alone is "/" as well
            r = P.curl(srv, "GET", "/sandboxes/" .. id .. "/proxy/8080")
            assert.are.equal(200, r.status)
            assert.are.equal("/", r.headers["x-echo-target"])
            r = P.curl(srv, "GET", "/v1/sandboxes/" .. id .. "/proxy/8080?q=1")
            assert.are.equal("/?q=1", r.headers["x-echo-target"])
        end)

        it("forwards an empty POST body (Content-Length: 0)", function()
            local r = P.curl(srv, "POST", px("/echo?empty"), { args = "-H 'Content-Length: 0'" })
            assert.are.equal(200, r.status)
            assert.are.equal("", r.body)
            assert.are.equal("/echo?empty", r.headers["x-echo-target"])
        end)

        it("serves 64 concurrent requests", function()
            local out = P.sh(string.format("seq 1 64 | xargs -P 32 -I{} curl -s -H 'OPEN-SANDBOX-API-KEY: "
                .. KEY .. "' --max-time 20 -o /dev/null " ..
                "-w '%%{http_code}\\n' %s", P.q(srv.base .. px("/bytes?n=100000&i={}"))))
            local n = 0
            for code in out:gmatch("%d+") do
                assert.are.equal("200", code, out)
                n = n + 1
            end
            assert.are.equal(64, n, out)
        end)

        it("relays HEAD without a body", function()
            local r = P.curl(srv, "HEAD", px("/bytes?n=5000"), { args = "-I" })
            assert.are.equal(200, r.status)
            assert.are.equal("5000", r.headers["content-length"])
            assert.are.equal(0, r.size)
            assert.are.equal(0, r.exit)
        end)

        it("streams a chunked upload and a large Content-Length upload", function()
            local file = srv.dir .. "/up.bin"
            P.sh("head -c 20000000 /dev/urandom > " .. P.q(file))
            local sum = P.sh("sha256sum < " .. P.q(file)):match("%x+")
            for _, chunked in ipairs({ true, false }) do
                local out = srv.dir .. "/down.bin"
                local r = P.curl(srv, "POST", px("/echo"), { body_file = file, chunked = chunked, out = out })
                assert.are.equal(200, r.status)
                assert.are.equal(20000000, r.size)
                assert.are.equal(sum, P.sh("sha256sum < " .. P.q(out)):match("%x+"))
            end
        end)

        it("passes an Expect: 100-continue upload (interim 100 from the backend is skipped)", function()
            local r = P.curl(srv, "POST", px("/echo"), { body = string.rep("e", 300000),
                headers = { Expect = "100-continue" } })
            assert.are.equal(200, r.status)
            assert.are.equal(300000, #r.body)
        end)

        it("relays a chunked response", function()
            local r = P.curl(srv, "GET", px("/bytes?n=3000000&chunked=1"), { out = srv.dir .. "/c.bin" })
            assert.are.equal(200, r.status)
            assert.are.equal(3000000, r.size)
            assert.are.equal(0, r.exit)
        end)
    end)

    describe("streaming", function()
        it("downloads 200 MB to a slow client with flat server memory", function()
            local base = P.rss(srv.pid)
            local n = 200 * 1024 * 1024
            local cmd = string.format(
                "curl -sS -H 'OPEN-SANDBOX-API-KEY: " .. KEY .. "' --limit-rate 50M --max-time 20 -o /dev/null "
                .. "-w '%%{size_download} %%{exitcode}' %s" ..
                " > %s 2>&1 & c=$!; while kill -0 $c 2>/dev/null; do ps -o rss= -p %d; sleep 0.2; done; wait $c",
                P.q(srv.base .. px("/bytes?n=" .. n)), P.q(srv.dir .. "/dl.txt"), srv.pid)
            local samples = P.sh(cmd)
            local peak = base
            local count = 0
            for v in samples:gmatch("%d+") do
                count = count + 1
                peak = math.max(peak, tonumber(v))
            end
            local size, exit = P.slurp(srv.dir .. "/dl.txt"):match("(%d+) (%d+)")
            assert.are.equal(n, tonumber(size), "downloaded " .. tostring(size))
            assert.are.equal(0, tonumber(exit))
            assert.is_true(count >= 10, "RSS samples: " .. count)
            -- the backend writes as fast as it can (GB/s); a buffering proxy would hold most of 200 MB
            assert.is_true(peak - base < 60 * 1024, string.format("RSS grew from %d to %d KiB", base, peak))
            print(string.format("\n  200 MB slow download: server RSS %d -> peak %d KiB over %d samples", base, peak,
                count))
        end)

        it("delivers SSE events one by one", function()
            local out = P.sh(string.format(
                "curl -sS -N -H 'OPEN-SANDBOX-API-KEY: " .. KEY .. "' --max-time 10 %s | while IFS= read -r l; "
                .. "do echo \"$(date +%%s.%%N) $l\"; done",
                P.q(srv.base .. px("/sse"))))
            local times = {}
            for t, data in out:gmatch("([%d.]+) data: ([^\n]*)") do
                times[#times + 1] = tonumber(t)
                assert.are.equal("event " .. #times, data)
            end
            assert.are.equal(5, #times, out)
            for i = 2, 5 do
                assert.is_true(times[i] - times[i - 1] > 0.1, "events " .. (i - 1) .. "," .. i .. ": " .. out)
            end
            assert.is_true(times[5] - times[1] > 0.6, out)
        end)

        it("tunnels a WebSocket: text, binary, 200 KiB, ping, close", function()
            for _, v1 in ipairs({ false, true }) do
                local url = "ws://127.0.0.1:" .. srv.port .. px("/ws?room=1", v1)
                local r = P.ws(url, { "Authorization: Bearer secret", "Cookie: a=b",
                    "OPEN-SANDBOX-API-KEY: " .. KEY })
                assert.is_true(r.ok, json.encode(r))
                assert.are.equal(101, r.status)
                assert.is_true(r.accept_ok)
                assert.are.equal("héllo proxy", r.text)
                assert.are.same({ 0, 255, 7 }, r.binary)
                assert.is_true(r.big_ok)
                assert.are.equal("are you there", r.pong)
                assert.are.equal(1000, r.close_code)
                assert.truthy(r.response_head:find("X-Echo-Target: /ws?room=1", 1, true), r.response_head)
                assert.truthy(r.response_head:lower():find("x-request-id:", 1, true), r.response_head)
            end
            local res = assert(srv:request("GET", "/health"))
            assert.are.equal(200, res.status)
        end)

        it("a WebSocket request the backend does not upgrade is relayed as a normal response", function()
            local r = P.ws("ws://127.0.0.1:" .. srv.port .. px("/not-ws"), { "OPEN-SANDBOX-API-KEY: " .. KEY })
            assert.is_false(r.ok)
            assert.are.equal(404, r.status)
        end)

        it("closes the client connection when the backend dies mid-response; the server stays healthy",
            function()
                local r = P.curl(srv, "GET", px("/close-mid"), { timeout = 10 })
                assert.are.equal(200, r.status)
                assert.are.equal(100, r.size)
                assert.are_not.equal(0, r.exit) -- 18: partial file (or 56: receive error)
                local ok = P.curl(srv, "GET", px("/"))
                assert.are.equal(200, ok.status)
                assert.are.equal("ws-echo ok", ok.body)
                assert.are.equal(200, (assert(srv:request("GET", "/health"))).status)
            end)

        it("survives a client that goes away in the middle of a large download", function()
            local r = P.curl(srv, "GET", px("/bytes?n=1000000000"), { out = "/dev/null",
                args = "--limit-rate 20M", timeout = 1 })
            assert.are.equal(28, r.exit)
            P.sh("sleep 0.3")
            local ok = P.curl(srv, "GET", px("/"))
            assert.are.equal("ws-echo ok", ok.body)
        end)
    end)

    describe("headers", function()
        it("drops hop-by-hop, Connection-named and credential headers and adds X-Forwarded-*", function()
            local r = P.curl(srv, "GET", px("/headers"), {
                headers = {
                    ["Authorization"] = "Bearer secret",
                    ["Cookie"] = "session=1",
                    ["OPEN-SANDBOX-API-KEY"] = KEY,
                    ["Connection"] = "keep-alive, X-Drop-Me",
                    ["X-Drop-Me"] = "1",
                    ["Keep-Alive"] = "timeout=5",
                    ["TE"] = "trailers",
                    ["Trailer"] = "X-T",
                    ["Proxy-Authorization"] = "Basic eA==",
                    ["X-Keep"] = "yes",
                    ["X-Request-ID"] = "trace-proxy-1",
                },
            })
            assert.are.equal(200, r.status)
            local seen = {}
            for name, value in r.body:gmatch("([^:\n]+): ([^\n]*)") do
                seen[name:lower()] = value
            end
            for _, h in ipairs({ "authorization", "cookie", "open-sandbox-api-key", "x-drop-me",
                "keep-alive", "te", "trailer", "proxy-authorization", "transfer-encoding", "upgrade" }) do
                assert.is_nil(seen[h], h .. " was forwarded:\n" .. r.body)
            end
            -- the client's Connection is not forwarded; with backend keep-alive (the default) the proxy sends
            -- none (HTTP/1.1 keeps the connection), keepalive_spec.lua checks Connection: close without it
            assert.is_nil(seen["connection"], "Connection was forwarded:\n" .. r.body)
            assert.are.equal("yes", seen["x-keep"])
            assert.are.equal(ip .. ":8080", seen["host"])
            assert.are.equal("127.0.0.1", seen["x-forwarded-for"])
            assert.are.equal("http", seen["x-forwarded-proto"])
            assert.are.equal("127.0.0.1:" .. srv.port, seen["x-forwarded-host"])
            assert.are.equal("trace-proxy-1", r.headers["x-request-id"])
        end)

        it("drops headers named in any of several Connection lines of the client", function()
            local out = srv:raw("GET " .. px("/headers") .. " HTTP/1.1\r\nHost: x\r\nOPEN-SANDBOX-API-KEY: " .. KEY
                .. "\r\nConnection: X-A\r\n" ..
                "Connection: X-B, close\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n", 3)
            assert.truthy(out:find("^HTTP/1.1 200"), out)
            assert.truthy(out:find("\nX-C: 3\n", 1, true), out)
            assert.is_nil(out:find("X-A:", 1, true), out)
            assert.is_nil(out:find("X-B:", 1, true), out)
        end)

        it("keeps X-Forwarded-Proto/Host the client sent and appends the real peer to its X-Forwarded-For",
            function()
                local r = P.curl(srv, "GET", px("/headers"), { headers = { ["X-Forwarded-For"] = "10.1.2.3",
                    ["X-Forwarded-Proto"] = "https", ["X-Forwarded-Host"] = "example.com" } })
                local n = select(2, r.body:gsub("X%-Forwarded%-For:", ""))
                assert.are.equal(1, n, r.body)
                -- a client cannot pass itself off as 10.1.2.3: the address it connects from comes last
                assert.truthy(r.body:find("X-Forwarded-For: 10.1.2.3, 127.0.0.1\n", 1, true), r.body)
                assert.truthy(r.body:find("X-Forwarded-Proto: https\n", 1, true), r.body)
                assert.truthy(r.body:find("X-Forwarded-Host: example.com\n", 1, true), r.body)
            end)

        it("refuses a request target with a bare CR, LF, space, NUL or control byte (400), on every route",
            function()
                local auth = "Host: x\r\nOPEN-SANDBOX-API-KEY: " .. KEY .. "\r\nConnection: close\r\n\r\n"
                local bad = {
                    "GET " .. px("/echo\rInjected: 1\r") .. " HTTP/1.1\r\n",
                    "GET " .. px("/echo") .. " HTTP/1.0 x HTTP/1.1\r\n",
                    "GET " .. px("/echo\0x") .. " HTTP/1.1\r\n",
                    "GET " .. px("/echo?a=\1\31") .. " HTTP/1.1\r\n",
                    "GET " .. px("/echo\127") .. " HTTP/1.1\r\n",
                    "GET " .. px("/echo\tx") .. " HTTP/1.1\r\n",
                    "GET /health\rInjected: 1\r HTTP/1.1\r\n",
                    "GET /v1/sandboxes/" .. id .. " x HTTP/1.1\r\n",
                }
                for _, line in ipairs(bad) do
                    local out = srv:raw(line .. auth, 5)
                    local desc = string.format("%q -> %s", line, out)
                    assert.truthy(out:find("^HTTP/1%.1 400"), desc)
                    -- never the backend's answer (it echoes the target it got)
                    assert.is_nil(out:lower():find("x-echo-target", 1, true), desc)
                    local body = json.decode(out:match("\r\n\r\n(.*)$"))
                    assert.are.equal("GENERAL::BAD_REQUEST", body.code, desc)
                    assert.is_string(body.message, desc)
                end
                -- a percent-encoded CR is a normal byte of the path: forwarded as it is
                local out = srv:raw("GET " .. px("/echo?x=%0d%0aX:%201") .. " HTTP/1.1\r\n" .. auth, 5)
                assert.truthy(out:find("^HTTP/1%.1 200"), out)
                assert.truthy(out:find("X-Echo-Target: /echo?x=%0d%0aX:%201\r\n", 1, true), out)
            end)

        it("filters the backend's hop-by-hop response headers and sets X-Request-ID", function()
            local r = P.curl(srv, "GET", px("/resp-headers"), { headers = { ["X-Request-ID"] = "rid-77" } })
            assert.are.equal(200, r.status)
            assert.are.equal("ok", r.body)
            assert.are.equal("yes", r.headers["x-kept"])
            assert.is_nil(r.headers["x-hop-secret"])
            assert.is_nil(r.headers["keep-alive"])
            assert.is_nil(r.headers["proxy-authenticate"])
            assert.are.equal("rid-77", r.headers["x-request-id"])
            r = P.curl(srv, "GET", px("/resp-headers"))
            assert.matches("^%x+$", r.headers["x-request-id"])
            assert.are.equal(32, #r.headers["x-request-id"])
        end)

        it("honours every Connection header line of the backend, not only the first", function()
            -- RFC 9110 §5.3: several field lines of one name are one list; X-Hop-Secret is named in the
            -- second "Connection" line here
            local r = P.curl(srv, "GET", px("/resp-headers?close-first=1"))
            assert.are.equal(200, r.status)
            assert.are.equal("yes", r.headers["x-kept"])
            assert.is_nil(r.headers["x-hop-secret"])
        end)
    end)

    describe("auth and paths", function()
        it("with a key configured, needs the key or the sandbox's capability on proxy paths", function()
            -- neither: 401 before anything is looked up (an unknown id answers the same)
            for _, p in ipairs({ px("/"), px("/", true),
                "/sandboxes/00000000-0000-4000-8000-000000000000/proxy/8080/" }) do
                local r = P.curl(srv, "GET", p, { anon = true })
                assert_error(r, 401, "MISSING_API_KEY", function(m)
                    return m:find("X-OpenSandbox-Proxy-Token", 1, true) ~= nil
                end)
            end
            local r = P.curl(srv, "GET", px("/"), { anon = true, headers = { ["OPEN-SANDBOX-API-KEY"] = "wrong" } })
            assert_error(r, 401, "INVALID_API_KEY")
            -- the key: through
            r = P.curl(srv, "GET", px("/", true))
            assert.are.equal(200, r.status)
            -- the capability from an endpoint reply, for any port of that sandbox, and nothing else
            local ep = P.api(srv, KEY, "GET", "/v1/sandboxes/" .. id .. "/endpoints/8080?use_server_proxy=true")
            assert.are.equal(200, ep.status, ep.body)
            local cap = ep.json.headers and ep.json.headers["X-OpenSandbox-Proxy-Token"]
            assert.matches("^%x+$", cap)
            assert.are.equal(64, #cap)
            local agent_ep = P.api(srv, KEY, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772?use_server_proxy=true")
            assert.are.equal(cap, agent_ep.json.headers["X-OpenSandbox-Proxy-Token"])
            assert.is_string(agent_ep.json.headers["X-EXECD-ACCESS-TOKEN"])
            r = P.curl(srv, "GET", px("/headers"), { anon = true, headers = { ["X-OpenSandbox-Proxy-Token"] = cap } })
            assert.are.equal(200, r.status, r.body)
            -- the capability never reaches the sandbox
            assert.is_nil(r.body:lower():find("x-opensandbox-proxy-token", 1, true), r.body)
            -- it opens only its own sandbox: the paused one answers 401, not 409
            r = P.curl(srv, "GET", "/sandboxes/" .. paused_id .. "/proxy/8080/", { anon = true,
                headers = { ["X-OpenSandbox-Proxy-Token"] = cap } })
            assert_error(r, 401, "INVALID_API_KEY")
            -- a near miss is refused too
            local wrong = cap:sub(1, 63) .. (cap:sub(64) == "0" and "1" or "0")
            r = P.curl(srv, "GET", px("/"), { anon = true, headers = { ["X-OpenSandbox-Proxy-Token"] = wrong } })
            assert_error(r, 401, "INVALID_API_KEY")
        end)

        it("needs the key on any path with '..'", function()
            local r
            for _, p in ipairs({ px("/../x"), px("/%2e%2e/x"), px("/%2E%2e/x"), px("/a/..%2f..%2fhealth"),
                px("/..", true), "/sandboxes/" .. id .. "/../" .. id .. "/proxy/8080/" }) do
                r = P.curl(srv, "GET", p, { anon = true })
                assert_error(r, 401, "MISSING_API_KEY")
            end
            -- non-proxy routes still need it
            r = P.curl(srv, "GET", "/v1/sandboxes/" .. id, { anon = true })
            assert_error(r, 401, "MISSING_API_KEY")
        end)

        it("does not let traversal escape the route, even with the key", function()
            local hdr = { ["OPEN-SANDBOX-API-KEY"] = KEY }
            local tails = { "/../../../../health", "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/health",
                "/..%2f..%2f..%2f..%2fhealth", "/../../" .. paused_id .. "/proxy/8080/", "/./../x" }
            for _, t in ipairs(tails) do
                local r = P.curl(srv, "GET", px(t), { headers = hdr })
                local desc = t .. " -> " .. tostring(r.status) .. " " .. tostring(r.body)
                assert.are_not.equal('{"status":"healthy"}', r.body, desc)
                if r.headers["x-echo-target"] then
                    -- reached the same backend, with the tail untouched
                    assert.are.equal(t, r.headers["x-echo-target"], desc)
                else
                    assert.is_table(r.json, desc)
                    assert.truthy(r.status >= 400 and r.status < 500, desc)
                end
                -- the paused sandbox must not be reached (it would be 409 if routed there)
                assert.are_not.equal(409, r.status, desc)
            end
        end)
    end)

    describe("errors", function()
        it("unknown sandbox -> 404", function()
            local r = P.curl(srv, "GET", "/sandboxes/00000000-0000-4000-8000-000000000000/proxy/8080/")
            assert_error(r, 404, "DOCKER::SANDBOX_NOT_FOUND",
                "Sandbox 00000000-0000-4000-8000-000000000000 not found.")
        end)

        it("paused sandbox -> 409 DOCKER::SANDBOX_NOT_RUNNING", function()
            local r = P.curl(srv, "GET", "/v1/sandboxes/" .. paused_id .. "/proxy/8080/")
            assert_error(r, 409, "DOCKER::SANDBOX_NOT_RUNNING", "Sandbox is not in a running state.")
            assert.truthy(r.headers["x-request-id"])
        end)

        it("port not listening -> 502", function()
            local r = P.curl(srv, "GET", "/sandboxes/" .. id .. "/proxy/9/x")
            assert_error(r, 502, "GENERAL::UNKNOWN_ERROR", function(m)
                return m:find("Could not connect to the backend sandbox", 1, true) == 1
            end)
        end)

        it("bad port -> 400 DOCKER::INVALID_PORT", function()
            local hdr = { ["OPEN-SANDBOX-API-KEY"] = KEY }
            for _, port in ipairs({ "0", "65536", "99999999999999999999", "abc", "-1" }) do
                local r = P.curl(srv, "GET", "/sandboxes/" .. id .. "/proxy/" .. port .. "/", { headers = hdr })
                assert_error(r, 400, "DOCKER::INVALID_PORT", "Port must be between 1 and 65535.")
            end
        end)
    end)

    describe("the agent through the server proxy", function()
        it("use_server_proxy endpoint + token reaches execd /ping", function()
            local res = P.api(srv, KEY, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772?use_server_proxy=true")
            assert.are.equal(200, res.status, res.body)
            local ep = res.json.endpoint
            assert.are.equal("127.0.0.1:" .. srv.port .. "/sandboxes/" .. id .. "/proxy/44772", ep)
            local token = res.json.headers and res.json.headers["X-EXECD-ACCESS-TOKEN"]
            assert.is_string(token)
            local r = P.curl(srv, "GET", "/ping", { base = "http://" .. ep,
                headers = { ["X-EXECD-ACCESS-TOKEN"] = token } })
            assert.are.equal(200, r.status, tostring(r.body))
            -- without the token the agent refuses; the proxy relays its answer
            r = P.curl(srv, "GET", "/ping", { base = "http://" .. ep })
            assert.are.equal(401, r.status, tostring(r.body))
            -- an SDK-style command run through the proxy streams back
            r = P.curl(srv, "POST", "/command", { base = "http://" .. ep,
                headers = { ["X-EXECD-ACCESS-TOKEN"] = token, ["Content-Type"] = "application/json" },
                body = json.encode({ command = "echo proxied-$((6*7))" }), timeout = 30 })
            assert.are.equal(200, r.status, tostring(r.body))
            assert.truthy(r.body:find("proxied-42", 1, true), r.body)
        end)
    end)
end)
