-- Integration: hostile HTTP input against the real server (RELIABILITY.md, "Hostile input").
--   * slowloris: 2000 half-open connections trickling header bytes; /health from a fresh client still
--     answers within a second; with server.max_connections reached the server survives and recovers;
--     connection_timeout closes a connection that sends nothing; one client address holds at most
--     server.max_connections_per_ip connections while other addresses are still served
--   * request smuggling on a keep-alive connection: Content-Length with Transfer-Encoding, two different
--     Content-Length values, two Transfer-Encoding headers, an unknown coding, a folded framing header
--     (obs-fold). Each is refused (400/501) and the connection closed, and the request hidden in the body
--     never runs (it would patch the sandbox's metadata)
--   * oversized header blocks, URLs and bodies: 4xx and the server keeps serving
--   * control characters in metadata (400 with the exact API.md §4.1 message) and in env values (allowed by
--     §4.4: they reach the container byte for byte)
--   * server.auth_failure_limit: 429 GENERAL::TOO_MANY_REQUESTS with Retry-After after too many wrong keys.
--     The constant-time key comparison is covered by tests/lua/unit/api/middleware_spec.lua ("compares in
--     constant time without an early exit").
local R = require("reliability.support")
local H = R.H
local json = R.json

local INSTANCE = "rel-hostile"

describe("hostile input #integration #docker", function()
    local srv, id

    setup(function()
        H.ensure_image()
        R.remove_instance(INSTANCE)
        srv = R.start(INSTANCE)
        id = R.create_running(srv, { metadata = { mark = "orig" } })
    end)

    teardown(function()
        R.cleanup(INSTANCE)
    end)

    local function metadata()
        local res = R.call(srv, "GET", "/v1/sandboxes/" .. id)
        assert.are.equal(200, res.status, res.body)
        return res.json.metadata
    end

    local function health_ok(s)
        local res = (s or srv):request("GET", "/health", { timeout = 1 })
        return res ~= nil and res.status == 200
    end

    describe("slowloris", function()
        it("2000 half-open connections trickling headers do not keep /health from answering in 1 s", function()
            -- without the per-address limit: what the engine holds when every connection is let in
            local big = R.start(INSTANCE, { server = { max_connections_per_ip = false } })
            local fds0 = R.fd_count(big.pid)
            local rep = R.slowloris(big, 2000, 10)
            assert.are.equal(2000, rep.opened, json.encode(rep))
            -- below server.max_connections (4096) every connection is held, none is dropped
            assert.are.equal(2000, rep.openAtEnd, json.encode(rep))
            assert.is_true(rep.probes >= 20, json.encode(rep))
            assert.are.equal(0, rep.probeFailures, json.encode(rep))
            assert.is_true(rep.probeMaxMs < 1000, json.encode(rep))
            print(string.format("\n  slowloris 2000 conns 10 s: %d probes, p50 %d ms, max %d ms",
                rep.probes, rep.probeP50Ms, rep.probeMaxMs))
            -- the server lets go of the connections once the clients are gone
            local fds
            for _ = 1, 50 do
                fds = R.fd_count(big.pid)
                if fds <= fds0 + 10 then
                    break
                end
                H.sleep(0.1)
            end
            assert.is_true(fds <= fds0 + 10, "fds " .. fds0 .. " -> " .. fds)
            assert.is_true(health_ok(big))
            big:stop()
        end)

        it("one client address holds at most server.max_connections_per_ip; other clients are served", function()
            -- the default configuration (256 per address); the slow client is 127.0.0.2, the probes 127.0.0.1
            local rep = R.slowloris(srv, 600, 4, "127.0.0.2")
            assert.are.equal(600, rep.opened, json.encode(rep))
            assert.is_true(rep.openAtEnd <= 256, json.encode(rep))
            assert.is_true(rep.openAtEnd >= 200, json.encode(rep))
            assert.is_true(rep.closedByServer >= 600 - 256, json.encode(rep))
            assert.are.equal(0, rep.probeFailures, json.encode(rep))
            print(string.format("\n  600 slow conns from one address, limit 256: %d held, %d closed at accept; "
                .. "%d probes from another address, 0 failed, max %d ms", rep.openAtEnd, rep.closedByServer,
                rep.probes, rep.probeMaxMs))
            -- the address gets its connections back once its old ones are gone
            local v = R.exchange(srv, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert.are.same({ 200 }, v.statuses, v.data)
            assert.is_true(srv:alive())
        end)

        it("at server.max_connections the server stops accepting, survives and recovers", function()
            local small = R.start(INSTANCE, { server = { max_connections = 50 } })
            local rep = R.slowloris(small, 120, 4)
            -- libmicrohttpd stops accepting at the limit: the excess (and fresh clients) wait in the kernel's
            -- listen backlog, so this documents the limit rather than asserting a number of refusals
            assert.are.equal(120, rep.opened, json.encode(rep))
            print(string.format("\n  slowloris 120 conns on max_connections=50: %d of %d /health probes failed "
                .. "while they were held", rep.probeFailures, rep.probes))
            assert.is_true(small:alive())
            local ok
            for _ = 1, 20 do
                ok = health_ok(small)
                if ok then
                    break
                end
                H.sleep(0.1)
            end
            assert.is_true(ok, "no /health after the slow clients left")
            small:stop()
        end)

        it("connection_timeout closes a connection that stops sending", function()
            local s = R.start(INSTANCE, { server = { connection_timeout = 2 } })
            local t0 = H.now()
            local v = R.exchange(s, "GET /health HTTP/1.1\r\nHost: x\r\n", 6000)
            assert.is_true(v.closed)
            assert.is_true(H.now() - t0 < 5.5, "closed after " .. (H.now() - t0) .. " s")
            s:stop()
        end)
    end)

    describe("request smuggling on a keep-alive connection", function()
        local function smuggled(tag)
            local body = '{"smuggled":"' .. tag .. '"}'
            return "PATCH /v1/sandboxes/" .. id .. "/metadata HTTP/1.1\r\nHost: x\r\nOPEN-SANDBOX-API-KEY: "
                .. R.KEY .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
        end

        local function head(extra)
            return "POST /v1/metrics/events HTTP/1.1\r\nHost: x\r\nOPEN-SANDBOX-API-KEY: " .. R.KEY .. "\r\n"
                .. extra .. "\r\n"
        end

        local function assert_refused(bytes, status, message, tag)
            local v = R.exchange(srv, bytes)
            assert.are.same({ status }, v.statuses, v.data)
            assert.is_true(v.closed, "connection left open: " .. v.data)
            local body = v.data:match("\r\n\r\n(.*)$")
            local err = json.decode(body)
            assert.are.same({ code = status == 501 and "GENERAL::NOT_IMPLEMENTED" or "GENERAL::BAD_REQUEST",
                message = message }, err)
            assert.truthy(v.data:find("\r\nX%-Request%-ID: %x+\r\n"), v.data)
            assert.is_nil(metadata().smuggled, "the smuggled request ran (" .. tag .. ")")
        end

        it("the harness sees a second request on the connection (control)", function()
            local v = R.exchange(srv, head("Content-Length: 2\r\n") .. "{}" .. smuggled("control"))
            assert.are.same({ 204, 200 }, v.statuses, v.data)
            assert.are.equal("control", metadata().smuggled)
            local res = R.call(srv, "PATCH", "/v1/sandboxes/" .. id .. "/metadata", '{"smuggled":null}')
            assert.are.equal(200, res.status, res.body)
            assert.is_nil(metadata().smuggled)
            -- a chunked body alone is fine
            v = R.exchange(srv, head("Transfer-Encoding: chunked\r\nConnection: close\r\n") .. "2\r\n{}\r\n0\r\n\r\n")
            assert.are.same({ 204 }, v.statuses, v.data)
        end)

        it("refuses Content-Length together with Transfer-Encoding (CL.TE and TE.CL)", function()
            local hidden = "0\r\n\r\n" .. smuggled("cl-te")
            assert_refused(head("Content-Length: " .. #hidden .. "\r\nTransfer-Encoding: chunked\r\n") .. hidden,
                400, "Request has both Transfer-Encoding and Content-Length.", "cl-te")
            local s = smuggled("te-cl")
            local chunked = string.format("%x\r\n%s\r\n0\r\n\r\n", #s, s)
            assert_refused(head("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n") .. chunked,
                400, "Request has both Transfer-Encoding and Content-Length.", "te-cl")
        end)

        it("refuses two Content-Length headers with different values", function()
            assert_refused(head("Content-Length: 2\r\nContent-Length: 60\r\n") .. "{}" .. smuggled("dup-cl"),
                400, "Request has Content-Length headers with different values.", "dup-cl")
        end)

        it("refuses two Transfer-Encoding headers and an unknown coding", function()
            assert_refused(head("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n") .. "0\r\n\r\n"
                .. smuggled("dup-te"), 400, "Request has more than one Transfer-Encoding header.", "dup-te")
            assert_refused(head("Transfer-Encoding: xchunked\r\n") .. "0\r\n\r\n" .. smuggled("te-x"),
                501, "Transfer-Encoding other than chunked is not supported.", "te-x")
        end)

        it("refuses a framing header folded over two lines (obs-fold)", function()
            local msg = "Request has a header folded over several lines (obs-fold) or an invalid header name."
            local s = smuggled("fold-te")
            assert_refused(head("Transfer-Encoding:\r\n chunked\r\n")
                .. string.format("%x\r\n%s\r\n0\r\n\r\n", #s, s), 400, msg, "fold-te")
            assert_refused(head("X-Note: a\r\n Content-Length: 2\r\n") .. "{}" .. smuggled("fold-cl"), 400, msg,
                "fold-cl")
        end)

        it("refuses them on the proxy route too (its handler starts at headers time)", function()
            local hidden = "0\r\n\r\n" .. smuggled("proxy")
            local v = R.exchange(srv, "POST /v1/sandboxes/" .. id .. "/proxy/44772/ping HTTP/1.1\r\nHost: x\r\n"
                .. "Content-Length: " .. #hidden .. "\r\nTransfer-Encoding: chunked\r\n\r\n" .. hidden)
            assert.are.same({ 400 }, v.statuses, v.data)
            assert.is_true(v.closed)
            assert.is_nil(metadata().smuggled)
        end)
    end)

    describe("oversized input", function()
        it("answers 431 to a header block over connection_memory and 413 to a body over 1 MiB", function()
            local v = R.exchange(srv, "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("a", 20000)
                .. "\r\n\r\n")
            assert.are.same({ 431 }, v.statuses, v.data:sub(1, 300))
            local many = {}
            for i = 1, 2000 do
                many[i] = "X-H" .. i .. ": v\r\n"
            end
            v = R.exchange(srv, "GET /health HTTP/1.1\r\nHost: x\r\n" .. table.concat(many) .. "\r\n")
            assert.are.same({ 431 }, v.statuses, v.data:sub(1, 300))
            v = R.exchange(srv, "GET /" .. string.rep("a", 40000) .. " HTTP/1.1\r\nHost: x\r\n\r\n")
            assert.is_true(#v.statuses == 1 and v.statuses[1] >= 400 and v.statuses[1] < 500, v.data:sub(1, 300))
            local big = '{"x":"' .. string.rep("a", 1048576) .. '"}'
            local res = R.call(srv, "POST", "/v1/sandboxes", big)
            H.assert_error(res, 413, "GENERAL::PAYLOAD_TOO_LARGE", "Request body exceeds 1048576 bytes.")
            -- the same, chunked
            local chunk = string.rep("b", 65536)
            local parts = {}
            for i = 1, 17 do
                parts[i] = string.format("%x\r\n%s\r\n", #chunk, chunk)
            end
            v = R.exchange(srv, "POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nOPEN-SANDBOX-API-KEY: " .. R.KEY
                .. "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" .. table.concat(parts)
                .. "0\r\n\r\n")
            assert.are.same({ 413 }, v.statuses, v.data:sub(1, 300))
            assert.is_true(health_ok())
            assert.is_true(srv:alive())
        end)
    end)

    describe("control characters", function()
        local RULE = "a value must be empty or 1-63 characters that begin and end with a letter or digit and "
            .. "contain only letters, digits, '-', '_' or '.'."

        it("rejects them in metadata keys and values with the exact §4.1 message", function()
            local res = R.call(srv, "POST", "/v1/sandboxes", H.body({ metadata = { k = "a\nb" } }))
            H.assert_error(res, 400, "SANDBOX::INVALID_METADATA_LABEL", "Metadata value 'a\nb' is invalid: " .. RULE)
            res = R.call(srv, "POST", "/v1/sandboxes", H.body({ metadata = { ["a\tb"] = "v" } }))
            H.assert_error(res, 400, "SANDBOX::INVALID_METADATA_LABEL", "Metadata key 'a\tb' is invalid: the name "
                .. "must be 1-63 characters, begin and end with a letter or digit, and contain only letters, "
                .. "digits, '-', '_' or '.'.")
            res = R.call(srv, "PATCH", "/v1/sandboxes/" .. id .. "/metadata", { mark = "x\27[31m" })
            H.assert_error(res, 400, "SANDBOX::INVALID_METADATA_LABEL", "Metadata value 'x\27[31m' is invalid: "
                .. RULE)
            assert.are.equal("orig", metadata().mark)
            -- NUL is refused in env (§4.4)
            res = R.call(srv, "POST", "/v1/sandboxes", H.body({ env = { K = "a\0b" } }))
            H.assert_error(res, 400, "SANDBOX::INVALID_PARAMETER", "env.K must not contain NUL.")
        end)

        it("passes other control characters in env values to the container byte for byte (§4.4)", function()
            local value = "line1\nline2\ttab\rcr\27[31mesc\1"
            local sid = R.create_running(srv, { env = { CTRL = value, EMPTY = "" } })
            local env = H.inspect("sandbox-" .. sid).Config.Env
            local seen
            for _, e in ipairs(env) do
                if e:sub(1, 5) == "CTRL=" then
                    seen = e:sub(6)
                end
            end
            assert.are.equal(value, seen)
            local out = R.exec(srv, sid, "printf '%s' \"$CTRL\" | od -An -tx1 | tr -d ' \\n'; echo")
            assert.are.equal(0, out.exit, json.encode(out.events))
            assert.are.equal((value:gsub(".", function(c)
                return string.format("%02x", c:byte())
            end)), out.stdout)
            -- the store and the API never hold env: the record is unaffected and GET still answers
            assert.are.equal(200, R.call(srv, "GET", "/v1/sandboxes/" .. sid).status)
            assert.are.equal(204, R.call(srv, "DELETE", "/v1/sandboxes/" .. sid).status)
        end)
    end)

    describe("API key brute force", function()
        it("is not limited by default", function()
            for _ = 1, 30 do
                local res = R.call(srv, "GET", "/v1/sandboxes", nil, { ["OPEN-SANDBOX-API-KEY"] = "guess" })
                assert.are.equal(401, res.status)
            end
            assert.are.equal(200, R.call(srv, "GET", "/v1/sandboxes").status)
        end)

        it("answers 429 with Retry-After past server.auth_failure_limit, even to the right key", function()
            local s = R.start(INSTANCE, { server = { auth_failure_limit = 5 } })
            for i = 1, 5 do
                local res = R.call(s, "GET", "/v1/sandboxes", nil, { ["OPEN-SANDBOX-API-KEY"] = "guess" .. i })
                H.assert_error(res, 401, "INVALID_API_KEY")
            end
            local res = R.call(s, "GET", "/v1/sandboxes", nil, { ["OPEN-SANDBOX-API-KEY"] = "guess6" })
            H.assert_error(res, 429, "GENERAL::TOO_MANY_REQUESTS", function(m)
                return m:find("^Too many failed authentication attempts from this address%. Retry after %d+ "
                    .. "seconds%.$") ~= nil
            end)
            local retry = tonumber(res.headers["retry-after"])
            assert.is_true(retry ~= nil and retry >= 1 and retry <= 60, tostring(res.headers["retry-after"]))
            assert.is_string(res.headers["x-request-id"])
            res = R.call(s, "GET", "/v1/sandboxes")
            assert.are.equal(429, res.status, res.body)
            -- a missing key is not counted, and routes without a key keep working
            H.assert_error(R.call(s, "GET", "/v1/sandboxes", nil, { ["OPEN-SANDBOX-API-KEY"] = "" }), 401,
                "MISSING_API_KEY")
            assert.is_true(health_ok(s))
            s:stop()
        end)
    end)
end)
