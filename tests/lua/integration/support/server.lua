-- TEST-ONLY. Starts the real opensandbox-server binary with a temporary configuration and talks to it
-- over HTTP (through the blocking curl_client), for the integration specs.
--
--   local server = require("support.server")
--   local srv = server.start({ config = { server = { api_key = "k" } }, env = { X = "1" } })
--   local res = srv:request("GET", "/health", { headers = {...}, body = "..." })
--   srv:stop()          -- SIGTERM, waits for the exit; srv:exit_code() afterwards
--
-- The binary is $OPENSANDBOX_BIN (default build/opensandbox-server). Each server gets its own state
-- directory, log file and a port picked at random (retried when taken).
local curl = require("support.curl_client")

local M = {}

local Server = {}
Server.__index = Server

local function sh(cmd)
    local p = assert(io.popen(cmd, "r"))
    local out = p:read("a")
    local ok, _, code = p:close()
    return out, ok, code
end
M.sh = sh

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = q

local function serialize(v, indent)
    indent = indent or ""
    if type(v) == "table" then
        local keys = {}
        for k in pairs(v) do
            keys[#keys + 1] = k
        end
        table.sort(keys, function(a, b)
            return tostring(a) < tostring(b)
        end)
        local parts = { "{\n" }
        for _, k in ipairs(keys) do
            local key = type(k) == "number" and "" or ("[" .. string.format("%q", k) .. "] = ")
            parts[#parts + 1] = indent .. "  " .. key .. serialize(v[k], indent .. "  ") .. ",\n"
        end
        parts[#parts + 1] = indent .. "}"
        return table.concat(parts)
    elseif type(v) == "string" then
        return string.format("%q", v)
    end
    return tostring(v)
end

local function merge(a, b)
    for k, v in pairs(b or {}) do
        if type(v) == "table" and type(a[k]) == "table" and #v == 0 then
            merge(a[k], v)
        else
            a[k] = v
        end
    end
    return a
end

function M.root()
    return os.getenv("OPENSANDBOX_SOURCE") or "."
end

function M.binary()
    return os.getenv("OPENSANDBOX_BIN") or (M.root() .. "/build/opensandbox-server")
end

function M.tmpdir()
    return (sh("mktemp -d /tmp/osb-test.XXXXXX"):gsub("%s+$", ""))
end

--- Starts a server; returns it once /health answers, or raises with the log.
function M.start(opts)
    opts = opts or {}
    local dir = opts.dir or M.tmpdir()
    local last_log
    for _ = 1, 5 do
        local port = opts.port or math.random(20000, 45000)
        local cfg = merge({
            server = { host = "127.0.0.1", port = port, log_level = "DEBUG" },
            store = { path = dir .. "/state/opensandbox.db" },
            -- (warm pool claim files: with the rest of the test's files, not under /run)
            docker = { pool_claim_dir = dir .. "/claims" },
        }, opts.config)
        local cfg_path = dir .. "/config.lua"
        local f = assert(io.open(cfg_path, "w"))
        f:write("return ", serialize(cfg), "\n")
        f:close()
        local log_path = dir .. "/server-" .. port .. ".log"
        local env = {}
        for k, v in pairs(opts.env or {}) do
            env[#env + 1] = k .. "=" .. q(v)
        end
        local args = opts.args or ("--config " .. q(cfg_path))
        local cmd = string.format("%s %s %s >%s 2>&1 & echo $!", #env > 0 and ("env " .. table.concat(env, " ")) or "",
            q(M.binary()), args, q(log_path))
        local pid = tonumber((sh(cmd)))
        local self = setmetatable({ pid = pid, port = port, dir = dir, log_path = log_path, config = cfg,
            base = "http://127.0.0.1:" .. port, cfg_path = cfg_path }, Server)
        if opts.no_wait then
            return self
        end
        for _ = 1, 100 do
            local res = curl.request({ url = self.base .. "/health", timeout = 1 })
            if res and res.status == 200 then
                return self
            end
            if not self:alive() then
                break
            end
            sh("sleep 0.1")
        end
        last_log = self:log()
        self:kill()
        if not last_log:find("Address already in use", 1, true) then
            break
        end
    end
    error("server did not start:\n" .. tostring(last_log))
end

function Server:alive()
    local _, ok = sh("kill -0 " .. self.pid .. " 2>/dev/null")
    return ok == true
end

function Server:signal(sig)
    sh("kill -" .. sig .. " " .. self.pid .. " 2>/dev/null")
end

--- Waits up to `timeout` seconds for the process to exit; returns true when it did.
function Server:wait_exit(timeout)
    local deadline = os.time() + (timeout or 15)
    while os.time() <= deadline do
        if not self:alive() then
            return true
        end
        sh("sleep 0.05")
    end
    return false
end

function Server:stop()
    if self:alive() then
        self:signal("TERM")
        if not self:wait_exit(20) then
            self:kill()
        end
    end
end

function Server:kill()
    if self.pid and self:alive() then
        self:signal("KILL")
        self:wait_exit(5)
    end
end

function Server:log()
    local f = io.open(self.log_path, "r")
    if not f then
        return ""
    end
    local s = f:read("a")
    f:close()
    return s
end

--- request(method, path, { headers = {}, body = "", timeout = s, on_data = fn }) -> res | nil, err
function Server:request(method, path, o)
    o = o or {}
    return curl.request({ method = method, url = self.base .. path, headers = o.headers, body = o.body,
        timeout = o.timeout or 30, on_data = o.on_data })
end

--- A raw exchange over TCP with `printf '...' | curl telnet`-free means: uses bash's /dev/tcp.
--- Returns what the server sent back (up to `timeout` seconds).
function Server:raw(bytes, timeout)
    local f = assert(io.open(self.dir .. "/raw.bin", "wb"))
    f:write(bytes)
    f:close()
    local out = sh(string.format(
        "timeout %d bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; cat %s >&3; cat <&3' 2>/dev/null",
        timeout or 5, self.port, q(self.dir .. "/raw.bin")))
    return out
end

return M
