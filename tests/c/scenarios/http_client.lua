-- Scenario: core.http serving and core.client calling it over TCP on the same loop: methods, bodies,
-- headers, raw paths and queries, body limit, suspended handlers, many concurrent requests, streaming
-- responses with back-pressure, on_data streaming, timeouts and connection errors.
local core = require("core")
local http = require("core.http")
local client = require("core.client")
local timer = require("core.timer")
local spawn = require("core.spawn")

local nowait = {}

local function handler(req)
    local p = req.path
    if p == "/echo" then
        local names = {}
        for _, h in ipairs(req:headers()) do
            names[#names + 1] = h[1]
        end
        return 200, { ["X-Names"] = table.concat(names, ","), ["X-Method"] = req.method, ["X-Query"] = req.query,
            ["X-Test"] = req:header("x-test") or "",
            ["X-Too-Large"] = tostring(req.body_too_large), ["X-Remote"] = req.remote_addr }, req.body
    elseif p == "/sleep" then
        timer.sleep(0.05)
        return 200, nil, "slept"
    elseif p == "/a%2Fb/c" then
        return 200, nil, "raw path kept"
    elseif p == "/nobody" then
        return 204
    elseif p == "/raise" then
        error("handler blew up")
    elseif p == "/stream" then
        local s = http.stream(req, 200, { ["Content-Type"] = "text/event-stream" })
        for i = 1, 5 do
            assert(s:write("event " .. i .. "\n\n"))
            timer.sleep(0.02)
        end
        s:close()
        return
    elseif p == "/big" then
        local s = http.stream(req, 200, { ["Content-Type"] = "application/octet-stream" })
        local chunk = string.rep("x", 32768)
        for _ = 1, 320 do -- 10 MiB, far above the 64 KiB high-water mark
            if not s:write(chunk) then
                return
            end
        end
        s:close()
        return
    elseif p == "/nowait" then
        local s = http.stream(req, 200, { ["Content-Type"] = "application/octet-stream" })
        local chunk = string.rep("y", 32768)
        for _ = 1, 8 do -- 256 KiB without yielding: nothing reaches the client in between
            assert(s:write(chunk, true))
        end
        nowait.pending = s:pending()
        while true do -- the reader drains it; pending counts down to 0, or the client goes
            local left, why = s:pending()
            if not left then
                nowait.closed = why
                return
            end
            if left == 0 then
                break
            end
            timer.sleep(0.005)
        end
        nowait.drained = true
        s:close()
        return
    elseif p == "/slow" then
        timer.sleep(2)
        return 200, nil, "late"
    end
    return 404, nil, "nope"
end

local port = http.listen({ host = "127.0.0.1", port = 0, handler = handler, max_body = 1024 })
assert(port > 0)
local base = "http://127.0.0.1:" .. port

-- plain request with a body, headers, raw query
local res, err = client.request({ method = "POST", url = base .. "/echo?a=1&a=2&b=%20x+y", body = "hello",
    headers = { ["X-Test"] = "yes" } })
assert(res, tostring(err))
assert(res.status == 200, res.status)
assert(res.body == "hello", res.body)
assert(res.headers["x-method"] == "POST")
assert(res.headers["x-query"] == "a=1&a=2&b=%20x+y", res.headers["x-query"])
assert(res.headers["x-test"] == "yes")
assert(res.headers["x-names"]:find("X-Test", 1, true), res.headers["x-names"])
assert(res.headers["x-remote"] == "127.0.0.1")
assert(res.headers["content-length"] == "5")

-- methods
for _, m in ipairs({ "PUT", "DELETE", "PATCH", "GET" }) do
    res = assert(client.request({ method = m, url = base .. "/echo" }))
    assert(res.headers["x-method"] == m, m)
end

-- the path reaches Lua undecoded
res = assert(client.request({ url = base .. "/a%2Fb/c" }))
assert(res.body == "raw path kept", res.body)

-- body above max_body is flagged and dropped, the connection survives
res = assert(client.request({ method = "POST", url = base .. "/echo", body = string.rep("z", 5000) }))
assert(res.headers["x-too-large"] == "true" and res.body == "")

-- 204 carries Content-Length: 0
res = assert(client.request({ method = "DELETE", url = base .. "/nobody" }))
assert(res.status == 204 and res.headers["content-length"] == "0", tostring(res.headers["content-length"]))

-- a handler that raises gives a 500 ErrorResponse
res = assert(client.request({ url = base .. "/raise" }))
assert(res.status == 500 and res.body:find("GENERAL::UNKNOWN_ERROR", 1, true), res.body)

-- 300 concurrent requests, each suspended in a sleep, all answered
local done, n = 0, 300
for _ = 1, n do
    spawn(function()
        local r = client.request({ url = base .. "/sleep" })
        assert(r and r.status == 200 and r.body == "slept")
        done = done + 1
    end)
end
local t0 = core.monotonic()
while done < n and core.monotonic() - t0 < 20 do
    timer.sleep(0.01)
end
assert(done == n, "concurrent requests done: " .. done)

-- streaming: chunks arrive one by one, as written
local chunks, stamps = {}, {}
res = assert(client.request({ url = base .. "/stream", on_data = function(c)
    chunks[#chunks + 1] = c
    stamps[#stamps + 1] = core.monotonic()
end }))
assert(res.status == 200 and res.headers["transfer-encoding"] == "chunked")
assert(table.concat(chunks) == "event 1\n\nevent 2\n\nevent 3\n\nevent 4\n\nevent 5\n\n", table.concat(chunks))
assert(#chunks >= 5, "chunks were merged: " .. #chunks)
assert(stamps[#stamps] - stamps[1] >= 0.06, "stream was buffered")

-- a 10 MiB stream through the back-pressured writer
local total = 0
res = assert(client.request({ url = base .. "/big", on_data = function(c) total = total + #c end }))
assert(res.status == 200)
assert(total == 320 * 32768, "big stream bytes: " .. total)

-- s:write(data, true) never parks the writer; s:pending() tells what waits, nil once the client is gone
total = 0
res = assert(client.request({ url = base .. "/nowait", on_data = function(c) total = total + #c end }))
assert(res.status == 200 and total == 8 * 32768, "nowait stream bytes: " .. total)
assert(nowait.pending == 8 * 32768, "pending after unparked writes: " .. tostring(nowait.pending))
assert(nowait.drained and not nowait.closed)
nowait = {}
res, err = client.request({ url = base .. "/nowait", on_data = function() return false end })
assert(not res and err.kind == "aborted", tostring(err and err.kind))
for _ = 1, 200 do
    if nowait.closed then
        break
    end
    timer.sleep(0.01)
end
assert(nowait.closed == "closed" and not nowait.drained, "pending after the client left: " .. tostring(nowait.closed))

-- on_data returning false aborts
local res2
res2, err = client.request({ url = base .. "/big", on_data = function() return false end })
assert(not res2 and err.kind == "aborted", tostring(err and err.kind))

-- timeouts and connection errors are values, not raises
res, err = client.request({ url = base .. "/slow", timeout = 0.2 })
assert(not res and err.kind == "timeout", tostring(err and err.kind))
assert(tostring(err):len() > 0)
res, err = client.request({ url = "http://127.0.0.1:1/", timeout = 2 })
assert(not res and err.kind == "connect", tostring(err and err.kind) .. " " .. tostring(err))

require("core.log").info("http_client scenario passed")
core.stop(0)
