-- Scenario: the C forwarding path (http.proxy) against a real backend (busybox httpd with a CGI script):
-- streamed bodies both ways, framing (Content-Length, chunked, HEAD, 204-free passthrough of statuses),
-- header passthrough, 502 on a refused connection, and the back-pressured large download.
local core = require("core")
local http = require("core.http")
local client = require("core.client")
local timer = require("core.timer")
local log = require("core.log")

local function sh(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    p:close()
    return out
end

local dir = sh("mktemp -d /tmp/osb-proxy.XXXXXX"):gsub("%s+$", "")
sh("mkdir -p " .. dir .. "/cgi-bin")
local f = assert(io.open(dir .. "/small.txt", "w"))
f:write("hello from the backend\n")
f:close()
local big = string.rep("0123456789abcdef", 512 * 1024) -- 8 MiB
f = assert(io.open(dir .. "/big.bin", "wb"))
f:write(big)
f:close()
f = assert(io.open(dir .. "/cgi-bin/echo", "w"))
f:write([[#!/bin/sh
echo "Content-Type: text/plain"
echo "X-Backend: yes"
echo ""
echo "method=$REQUEST_METHOD query=$QUERY_STRING auth=${HTTP_AUTHORIZATION:-none}" \
    "xtest=${HTTP_X_TEST:-none} host=$HTTP_HOST"
cat
]])
f:close()
sh("chmod +x " .. dir .. "/cgi-bin/echo")
f = assert(io.open(dir .. "/cgi-bin/slow", "w"))
f:write("#!/bin/sh\nsleep 2\necho 'Content-Type: text/plain'\necho ''\necho late\n")
f:close()
sh("chmod +x " .. dir .. "/cgi-bin/slow")
-- (below the kernel's ephemeral range, 32768 and up: a client socket holding the port would make the listen fail)
local bport = 20000 + math.random(0, 12000)
local bpid = tonumber(sh(string.format("busybox httpd -f -p 127.0.0.1:%d -h %s >/dev/null 2>&1 & echo $!", bport, dir)))
-- A second backend for request bodies: busybox httpd does not read chunked request bodies (it hands the CGI
-- whatever arrived with the head, so a check through it depends on TCP timing). This one answers with the
-- Transfer-Encoding it got and the body it decoded.
local eport = bport + 1
local epid = tonumber(sh(string.format("node -e %q >/dev/null 2>&1 & echo $!", string.format(
    "require('http').createServer((q, s) => { let b = ''; q.on('data', (c) => (b += c)); "
    .. "q.on('end', () => s.end('te=' + (q.headers['transfer-encoding'] || 'none') + ' body=' + b)); })"
    .. ".listen(%d, '127.0.0.1')", eport))))
timer.sleep(0.3)
local eready = false
for _ = 1, 300 do -- node takes a moment to start, several seconds on a loaded machine (ASan stage)
    local r = client.request({ url = "http://127.0.0.1:" .. eport .. "/", timeout = 1 })
    if r and r.status == 200 then
        eready = true
        break
    end
    timer.sleep(0.1)
end
assert(eready, "the node body backend did not start on port " .. eport)

-- with the pool of keep-alive backend connections on, as the server runs it (proxy_pool.lua checks the pool)
http.proxy_configure({ keepalive = 8, keepalive_timeout = 30 })
local port = http.listen({ host = "127.0.0.1", port = 0, early_paths = { "/p/" }, handler = function(req)
    if req.path:sub(1, 3) ~= "/p/" then
        return 404, nil, "not proxied"
    end
    assert(req.streaming, "early requests are marked streaming")
    local target = req.path:sub(3)
    if req.query ~= "" then
        target = target .. "?" .. req.query
    end
    local bp = bport
    if target:find("^/refused") then
        bp = 1
    elseif target:find("^/body") then
        bp = eport
    end
    local hs = { { "Host", "backend.test" } }
    if req:header("x-test") then
        hs[#hs + 1] = { "X-Test", req:header("x-test") }
    end
    http.proxy(req, { host = "127.0.0.1", port = bp, method = req.method, target = target, headers = hs,
        connect_timeout = 2, header_timeout = target:find("slow", 1, true) and 0.3 or 0 })
end })
local base = "http://127.0.0.1:" .. port

local ok, err = pcall(function()
    -- GET a file (Content-Length framing); the proxy's counters (http.proxy_stats) see it
    local s0 = http.proxy_stats()
    assert(s0.connections_total == 0 and s0.active == 0, "fresh counters")
    local res = assert(client.request({ url = base .. "/p/small.txt" }))
    assert(res.status == 200, res.status)
    assert(res.body == "hello from the backend\n", res.body)
    assert(res.headers["content-length"] == "23", tostring(res.headers["content-length"]))
    local s1 = http.proxy_stats()
    assert(s1.connections_total == 1, "connections_total " .. s1.connections_total)
    assert(s1.active == 0, "active after the response " .. s1.active)
    assert(s1.bytes_from_backend > 23, "bytes from the backend (head + body) " .. s1.bytes_from_backend)
    assert(s1.bytes_to_backend > 20, "bytes to the backend (request head) " .. s1.bytes_to_backend)
    assert(s1.failures_total == 0)

    -- HEAD keeps the backend's Content-Length and has no body
    res = assert(client.request({ method = "HEAD", url = base .. "/p/big.bin" }))
    assert(res.status == 200 and res.headers["content-length"] == tostring(#big),
        tostring(res.headers["content-length"]))

    -- a large download arrives complete and in order
    local parts, n = {}, 0
    res = assert(client.request({ url = base .. "/p/big.bin", on_data = function(c)
        parts[#parts + 1] = c
        n = n + #c
    end }))
    assert(res.status == 200)
    assert(n == #big, "big download bytes: " .. n)
    assert(table.concat(parts) == big, "big download content differs")

    -- POST with a body and a query: body and query reach the backend byte for byte; headers from Lua
    res = assert(client.request({ method = "POST", url = base .. "/p/cgi-bin/echo?a=1&b=%20c", body = "payload-123",
        headers = { ["X-Test"] = "t1", Authorization = "Bearer x" } }))
    assert(res.status == 200, res.status)
    assert(res.headers["x-backend"] == "yes")
    assert(res.body:find("method=POST query=a=1&b=%20c", 1, true), res.body)
    assert(res.body:find("xtest=t1", 1, true), res.body)
    assert(res.body:find("auth=none", 1, true), "headers not passed by Lua must not reach the backend: " .. res.body)
    assert(res.body:find("host=backend.test", 1, true), res.body)
    assert(res.body:find("payload-123", 1, true), res.body)

    -- a chunked request body goes upstream chunked and arrives whole
    res = assert(client.request({ method = "POST", url = base .. "/p/body", body = "chunky",
        headers = { ["Transfer-Encoding"] = "chunked" } }))
    assert(res.status == 200, res.status)
    assert(res.body == "te=chunked body=chunky", res.body)
    -- and a body with Content-Length goes upstream as it is
    res = assert(client.request({ method = "PUT", url = base .. "/p/body", body = string.rep("x", 70000) }))
    assert(res.body == "te=none body=" .. string.rep("x", 70000), #res.body)

    -- a backend status passes through
    res = assert(client.request({ url = base .. "/p/missing.txt" }))
    assert(res.status == 404, res.status)

    -- refused connection: 502 ErrorResponse, counted as a failure
    local f0 = http.proxy_stats().failures_total
    res = assert(client.request({ url = base .. "/p/refused" }))
    assert(res.status == 502, res.status)
    assert(http.proxy_stats().failures_total == f0 + 1, "failures_total")
    assert(res.body:find('"code":"GENERAL::UNKNOWN_ERROR"', 1, true) and res.body:find("Could not connect", 1, true),
        res.body)

    -- no response head within header_timeout: 504
    res = assert(client.request({ url = base .. "/p/cgi-bin/slow" }))
    assert(res.status == 504, res.status)
    assert(res.body:find("did not answer in time", 1, true), res.body)

    -- many concurrent proxied requests
    local done = 0
    for _ = 1, 50 do
        require("core.spawn")(function()
            local r = client.request({ url = base .. "/p/small.txt" })
            if r and r.status == 200 and r.body == "hello from the backend\n" then
                done = done + 1
            end
        end)
    end
    local t0 = core.monotonic()
    while done < 50 and core.monotonic() - t0 < 10 do
        timer.sleep(0.01)
    end
    assert(done == 50, "concurrent proxied requests: " .. done)
    local st = http.proxy_stats()
    assert(st.active == 0, "active after all: " .. st.active)
    assert(st.bytes_from_backend > #big, "the big download is counted: " .. st.bytes_from_backend)
    assert(st.bytes_to_backend > 70000, "the PUT body is counted: " .. st.bytes_to_backend)
end)

core.kill(bpid, "TERM")
core.kill(epid, "TERM")
sh("rm -rf " .. dir)
if not ok then
    error(err, 0)
end
log.info("proxy scenario passed")
core.stop(0)
