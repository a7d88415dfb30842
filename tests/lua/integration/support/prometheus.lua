-- A real Prometheus (Debian's /usr/bin/prometheus) for the metrics specs: started on a port the kernel hands
-- out, scraping one target every second, queried through its HTTP API, stopped by its pid.
--
--   local prom = require("support.prometheus").start(dir, "127.0.0.1:9464")
--   prom:query('sum(opensandbox_sandboxes{state="Running"})')  -> number or nil
--   prom:stop()
local curl = require("support.curl_client")
local json = require("common.json")
local server = require("support.server")

local M = {}
local Prom = {}

--- The value of the one sample line `series` (name{labels}) in exposition `text`, or nil.
function M.value_of(text, series)
    for l in text:gmatch("[^\n]+") do
        local head, v = l:match("^(.-) (%S+)$")
        if head == series then
            return tonumber(v)
        end
    end
    return nil
end

--- Calls fn() every 0.25 s until it returns a true value (returned), or raises after `timeout` seconds.
function M.wait_until(what, timeout, fn)
    local deadline = os.time() + timeout
    while true do
        local v = fn()
        if v then
            return v
        end
        if os.time() > deadline then
            error("timed out waiting for " .. what)
        end
        server.sh("sleep 0.25")
    end
end
Prom.__index = Prom

local function free_port()
    local out = server.sh("python3 -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); "
        .. "print(s.getsockname()[1])'")
    return assert(tonumber(out), "no free port: " .. tostring(out))
end

local function tail(path, n)
    local f = io.open(path, "r")
    if not f then
        return "(no log)"
    end
    local lines = {}
    for l in f:lines() do
        lines[#lines + 1] = l
        if #lines > n then
            table.remove(lines, 1)
        end
    end
    f:close()
    return table.concat(lines, "\n")
end

--- Starts Prometheus with its data and log under `dir`, scraping `target` every second, and waits (up to
--- `ready_seconds`, default 90: a loaded machine or a sanitizer run is slow to start it) until it is ready.
--- Raises with the end of its log when it does not get there.
function M.start(dir, target, ready_seconds)
    local port = free_port()
    local cfg = dir .. "/prometheus.yml"
    local f = assert(io.open(cfg, "w"))
    f:write(string.format([[
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: opensandbox
    static_configs:
      - targets: ["%s"]
]], target))
    f:close()
    local log = dir .. "/prometheus.log"
    local out = server.sh(string.format(
        "/usr/bin/prometheus --config.file=%s --storage.tsdb.path=%s --web.listen-address=127.0.0.1:%d "
            .. ">%s 2>&1 & echo $!",
        server.quote(cfg), server.quote(dir .. "/prom-data"), port, server.quote(log)))
    local self = setmetatable({ pid = assert(tonumber(out), out), base = "http://127.0.0.1:" .. port, log = log },
        Prom)
    local deadline = os.time() + (ready_seconds or 90)
    while true do
        local r = curl.request({ url = self.base .. "/-/ready", timeout = 1 })
        if r and r.status == 200 then
            return self
        end
        local gone = server.sh("kill -0 " .. self.pid .. " 2>/dev/null || echo gone"):find("gone", 1, true) ~= nil
        if gone or os.time() > deadline then
            self:stop()
            error("Prometheus did not get ready" .. (gone and " (it exited)" or "") .. "; its log ends:\n"
                .. tail(log, 20))
        end
        server.sh("sleep 0.25")
    end
end

--- The first value of an instant PromQL query, or nil (no result, or Prometheus did not answer).
function Prom:query(expr)
    local res = curl.request({ url = self.base .. "/api/v1/query?query=" .. expr:gsub("[^%w%-_.~]", function(c)
        return string.format("%%%02X", c:byte())
    end), timeout = 5 })
    if not res or res.status ~= 200 then
        return nil
    end
    local doc = json.decode(res.body)
    local r = doc and doc.data and doc.data.result and doc.data.result[1]
    return r and tonumber(r.value[2]) or nil
end

--- Stops it (TERM, then waits up to 5 s for it to go).
function Prom:stop()
    if self.pid then
        server.sh("kill " .. self.pid .. " 2>/dev/null; for i in $(seq 50); do kill -0 " .. self.pid
            .. " 2>/dev/null || break; sleep 0.1; done")
        self.pid = nil
    end
end

return M
