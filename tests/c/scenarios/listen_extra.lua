-- Scenario: http.listen_extra, a second listening socket whose connections the same daemon serves with
-- their own handler (the separate metrics listener of metrics.listen): each port reaches its own handler,
-- also over kept-alive connections and with both in use at once; a second call and a call before
-- http.listen are refused.
local core = require("core")
local http = require("core.http")
local client = require("core.client")
local log = require("core.log")

local ok0, e0 = pcall(http.listen_extra, { port = 0, handler = function() end })
assert(not ok0 and tostring(e0):find("call http.listen first", 1, true), tostring(e0))

local port = http.listen({ host = "127.0.0.1", port = 0, handler = function(req)
    return 200, { ["Content-Type"] = "text/plain" }, "main " .. req.path
end })
local xport = http.listen_extra({ host = "127.0.0.1", port = 0, handler = function(req)
    return 200, { ["Content-Type"] = "text/plain" }, "extra " .. req.path
end })
assert(type(xport) == "number" and xport > 0 and xport ~= port, "extra port " .. tostring(xport))
local ok1, e1 = pcall(http.listen_extra, { port = 0, handler = function() end })
assert(not ok1 and tostring(e1):find("already listening", 1, true), tostring(e1))

local ok, err = pcall(function()
    for i = 1, 20 do -- alternating, so that kept-alive connections to both ports are reused
        local a = assert(client.request({ url = "http://127.0.0.1:" .. port .. "/m" .. i }))
        assert(a.status == 200 and a.body == "main /m" .. i, a.body)
        local b = assert(client.request({ url = "http://127.0.0.1:" .. xport .. "/metrics" }))
        assert(b.status == 200 and b.body == "extra /metrics", b.body)
    end
    -- many at once on both
    local done = 0
    for i = 1, 40 do
        require("core.spawn")(function()
            local p = i % 2 == 0 and port or xport
            local r = client.request({ url = "http://127.0.0.1:" .. p .. "/x" })
            if r and r.body == (i % 2 == 0 and "main /x" or "extra /x") then
                done = done + 1
            end
        end)
    end
    local t0 = core.monotonic()
    while done < 40 and core.monotonic() - t0 < 10 do
        require("core.timer").sleep(0.01)
    end
    assert(done == 40, "concurrent requests on both ports: " .. done)
end)
if not ok then
    error(err, 0)
end
log.info("listen_extra scenario passed")
core.stop(0)
