-- Scenario: the server listening on a unix socket and the client reaching it through unix_socket, the way
-- the Docker adapter reaches /var/run/docker.sock; connections are reused across requests.
local core = require("core")
local http = require("core.http")
local client = require("core.client")
local spawn = require("core.spawn")
local timer = require("core.timer")

local path = os.tmpname()
os.remove(path)
local seen = {}
http.listen({ unix_socket = path, handler = function(req)
    seen[#seen + 1] = req.path
    timer.sleep(req.path == "/slow" and 1.5 or 0.001)
    return 200, { ["Content-Type"] = "application/json" }, '{"ApiVersion":"1.41","path":"' .. req.path .. '"}'
end })

client.configure({ max_host_connections = 4 })
local res, err = client.request({ url = "http://docker/v1.41/version", unix_socket = path, timeout = 5 })
assert(res, tostring(err))
assert(res.status == 200 and res.body:find('"path":"/v1.41/version"', 1, true), res.body)

-- 100 requests through at most 4 connections
local ok = 0
for i = 1, 100 do
    spawn(function()
        local r = client.request({ url = "http://docker/_ping?i=" .. i, unix_socket = path, timeout = 10 })
        if r and r.status == 200 then
            ok = ok + 1
        end
    end)
end
local t0 = core.monotonic()
while ok < 100 and core.monotonic() - t0 < 10 do
    timer.sleep(0.01)
end
assert(ok == 100, "unix requests ok: " .. ok)

-- a request waiting for one of the host's connections while slow calls hold them all: the wait does not
-- count against its connect timeout, only against its timeout; a request that timed out before it was sent
-- says so (err.sent == false: the other end may well be alive, only busy with the requests ahead of it)
local slow_done = 0
for _ = 1, 4 do
    spawn(function()
        local r = client.request({ url = "http://docker/slow", unix_socket = path, timeout = 10 })
        assert(r and r.status == 200)
        slow_done = slow_done + 1
    end)
end
timer.sleep(0.2) -- (the four hold the four connections)
local t1 = core.monotonic()
res, err = client.request({ url = "http://docker/_ping?queued=short", unix_socket = path, timeout = 0.5 })
assert(not res and err.kind == "timeout", "a queued request past its timeout: " .. tostring(err))
assert(err.sent == false, "it was never sent")
assert(err.waited >= 0.5, "it waited all its time: " .. tostring(err.waited))
-- (curl looks at a queued request's time when a connection comes free: it fails then, not at its timeout)
assert(core.monotonic() - t1 < 3, "it failed when the slow ones ended")
res, err = client.request({ url = "http://docker/_ping?queued=connect", unix_socket = path, timeout = 10,
    connect_timeout = 0.2 })
assert(res and res.status == 200, "a queued request outlasting its connect timeout: " .. tostring(err))
assert(slow_done == 4, "it went through once a connection came free")
-- and one that was sent, then timed out waiting for the answer
res, err = client.request({ url = "http://docker/slow", unix_socket = path, timeout = 0.5 })
assert(not res and err.kind == "timeout" and err.sent == true, "sent, then timed out: " .. tostring(err))
assert(err.waited < 0.25, "it was sent at once: " .. tostring(err.waited))
-- and one that waited for a connection, then was sent and timed out: `waited` is the queue's part
slow_done = 0
for _ = 1, 4 do
    spawn(function()
        client.request({ url = "http://docker/slow", unix_socket = path, timeout = 10 })
        slow_done = slow_done + 1
    end)
end
timer.sleep(0.2)
res, err = client.request({ url = "http://docker/slow", unix_socket = path, timeout = 2 })
assert(not res and err.kind == "timeout" and err.sent == true, "queued, sent, timed out: " .. tostring(err))
assert(err.waited > 1 and err.waited < 1.9, "it waited about 1.3 s for a connection: " .. tostring(err.waited))
while slow_done < 4 do
    timer.sleep(0.05)
end

-- a socket path with nobody listening is a connect error
res, err = client.request({ url = "http://docker/_ping", unix_socket = path .. ".missing", timeout = 2 })
assert(not res and (err.kind == "connect" or err.kind == "error"), tostring(err))
os.remove(path)
require("core.log").info("unix_socket scenario passed")
core.stop(0)
