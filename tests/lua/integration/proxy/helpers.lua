-- TEST-ONLY. Helpers for the server proxy integration specs (tests/lua/integration/proxy): a curl wrapper
-- that keeps the exact bytes of the request target (--path-as-is) and reports curl's exit code and
-- transfer figures, sandbox creation with the ws_echo backend (tests/backends/ws_echo.c), and the list of
-- sandboxes created here so that only those are deleted at the end (another spec may share the daemon).
--
--   local P = require("proxy.helpers")
--   local r = P.curl(srv, "GET", "/sandboxes/" .. id .. "/proxy/8080/echo?a=%20", { headers = {...} })
--   r.status, r.headers (lowercase names), r.body, r.exit (curl exit code), r.size, r.speed
local server = require("support.server")
local json = require("common.json")

local P = {}

P.IMAGE = "local/ws-echo:latest"
P.sh = server.sh
P.q = server.quote

local function slurp(path)
    local f = io.open(path, "rb")
    if not f then
        return ""
    end
    local s = f:read("a")
    f:close()
    return s
end
P.slurp = slurp

local function parse_headers(text)
    local status, headers, list
    for line in text:gmatch("[^\r\n]*") do
        local code = line:match("^HTTP/%S+%s+(%d%d%d)")
        if code then
            status, headers, list = tonumber(code), {}, {}
        elseif headers then
            local name, value = line:match("^([^:]+):%s*(.-)%s*$")
            if name then
                local key = name:lower()
                headers[key] = headers[key] and (headers[key] .. ", " .. value) or value
                list[#list + 1] = { name, value }
            end
        end
    end
    return status, headers or {}, list or {}
end

--- curl(srv, method, path, o): o.headers (table name -> value), o.body (string), o.body_file (path),
--- o.chunked (send the body with Transfer-Encoding: chunked), o.args (extra curl arguments string),
--- o.timeout (seconds, default 30), o.out (write the body to this file instead of reading it). The headers
--- of P.defaults (a spec sets it, e.g. its API key) are sent too, unless o.anon or o.headers names them.
P.defaults = nil
function P.curl(srv, method, path, o)
    o = o or {}
    local dir = srv.dir
    local hdr, out = dir .. "/h.txt", o.out or (dir .. "/b.bin")
    local args = { "curl", "-sS", "--path-as-is", "-D", P.q(hdr), "-o", P.q(out), "-X", P.q(method), "-H",
        P.q("Expect:") }
    local send = {}
    if not o.anon then
        for name, value in pairs(P.defaults or {}) do
            send[name] = value
        end
    end
    for name, value in pairs(o.headers or {}) do
        send[name] = value
    end
    for name, value in pairs(send) do
        args[#args + 1] = "-H " .. P.q(name .. ": " .. value)
    end
    local body_file = o.body_file
    if o.body then
        body_file = dir .. "/req.bin"
        local f = assert(io.open(body_file, "wb"))
        f:write(o.body)
        f:close()
    end
    if body_file then
        args[#args + 1] = "--data-binary @" .. P.q(body_file)
        if o.chunked then
            args[#args + 1] = "-H 'Transfer-Encoding: chunked'"
        end
    end
    args[#args + 1] = string.format("--max-time %d", o.timeout or 30)
    args[#args + 1] = o.args or ""
    args[#args + 1] = "-w '%{http_code} %{size_download} %{speed_download} %{exitcode}'"
    args[#args + 1] = P.q((o.base or srv.base) .. path)
    os.remove(hdr)
    if not o.out then -- only our own scratch file: o.out may be /dev/null, which must never be removed
        os.remove(out)
    end
    local w = P.sh(table.concat(args, " ") .. " 2>/dev/null")
    local code, size, speed, exit = w:match("(%d+) (%d+) ([%d.]+) (%d+)")
    local status, headers, list = parse_headers(slurp(hdr))
    local r = { status = status or tonumber(code), headers = headers, header_list = list,
        size = tonumber(size), speed = tonumber(speed), exit = tonumber(exit) }
    if not o.out then
        r.body = slurp(out)
        if r.body ~= "" and (headers["content-type"] or ""):find("application/json", 1, true) then
            r.json = json.decode(r.body)
        end
    end
    return r
end

--- Builds local/ws-echo:latest when missing or older than its source; raises on failure.
function P.ensure_image()
    local out, ok = P.sh("sh tests/images/build-ws-echo.sh 2>&1")
    assert(ok, "cannot build the ws-echo image: " .. out)
end

--- Waits up to `timeout` seconds for the Docker daemon to answer (another spec may restart it).
function P.wait_docker(timeout)
    local deadline = os.time() + (timeout or 120)
    repeat
        local _, ok = P.sh("docker info >/dev/null 2>&1")
        if ok then
            return true
        end
        P.sh("sleep 1")
    until os.time() > deadline
    return false
end

local created = {}

--- A JSON request with the key; returns { status, headers, body, json }.
function P.api(srv, key, method, path, body)
    local res = assert(srv:request(method, path, { body = body and json.encode(body) or nil,
        headers = { ["OPEN-SANDBOX-API-KEY"] = key }, timeout = 150 }))
    if res.body ~= "" then
        res.json = json.decode(res.body)
    end
    return res
end

--- Creates a ws_echo sandbox (remembered for delete_created) and waits until it is Running and its
--- backend answers through the proxy. `over` replaces fields of the create body.
function P.create_echo(srv, key, over)
    local body = {
        image = { uri = P.IMAGE },
        entrypoint = { "/ws_echo" },
        env = { PORT = "8080" },
        timeout = 900,
        resourceLimits = {},
        metadata = { ["opensandbox-test"] = "proxy" },
    }
    for k, v in pairs(over or {}) do
        body[k] = v
    end
    local res = P.api(srv, key, "POST", "/v1/sandboxes", body)
    assert(res.status == 202, "create: " .. res.status .. " " .. res.body)
    local id = res.json.id
    created[#created + 1] = { srv = srv, key = key, id = id }
    return id
end

--- Waits until the sandbox is Running and GET / through the proxy answers 200 "ws-echo ok".
function P.wait_ready(srv, key, id, timeout)
    local deadline = os.time() + (timeout or 90)
    local last
    repeat
        local res = P.api(srv, key, "GET", "/v1/sandboxes/" .. id)
        last = res.body
        if res.status == 200 and res.json.status.state == "Running" then
            local r = P.curl(srv, "GET", "/sandboxes/" .. id .. "/proxy/8080/", { timeout = 5,
                headers = { ["OPEN-SANDBOX-API-KEY"] = key } })
            if r.status == 200 and r.body == "ws-echo ok" then
                return true
            end
            last = tostring(r.status) .. " " .. tostring(r.body)
        elseif res.status == 200 and res.json.status.state ~= "Pending" then
            error("sandbox " .. id .. " is " .. res.body)
        end
        P.sh("sleep 0.2")
    until os.time() > deadline
    error("sandbox " .. id .. " not ready: " .. last)
end

--- Deletes every sandbox created through create_echo (and only those).
function P.delete_created()
    for i = #created, 1, -1 do
        local c = created[i]
        pcall(P.api, c.srv, c.key, "DELETE", "/v1/sandboxes/" .. c.id)
        created[i] = nil
    end
end

--- A spec's teardown: deletes the sandboxes made through create_echo, then stops `srv` (nil: nothing to do).
function P.finish(srv)
    if srv then
        P.delete_created()
        srv:stop()
    end
end

--- The server's resident set size in KiB.
function P.rss(pid)
    return tonumber((P.sh("ps -o rss= -p " .. pid)))
end

--- Runs the WebSocket client (ws_client.mjs) against `url`; returns its decoded JSON result.
function P.ws(url, headers)
    local args = {}
    for _, h in ipairs(headers or {}) do
        args[#args + 1] = P.q(h)
    end
    local out = P.sh(string.format("node tests/lua/integration/proxy/ws_client.mjs %s %s 2>&1", P.q(url),
        table.concat(args, " ")))
    local ok, v = pcall(json.decode, out)
    if ok and type(v) == "table" then
        return v
    end
    return { ok = false, error = "client output: " .. out }
end

--- Wall-clock seconds with sub-second precision.
function P.now()
    return tonumber((P.sh("date +%s.%N")))
end

return P
