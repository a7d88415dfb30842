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
    timer.sleep(0.001)
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

-- a socket path with nobody listening is a connect error
res, err = client.request({ url = "http://docker/_ping", unix_socket = path .. ".missing", timeout = 2 })
assert(not res and (err.kind == "connect" or err.kind == "error"), tostring(err))
os.remove(path)
require("core.log").info("unix_socket scenario passed")
core.stop(0)
