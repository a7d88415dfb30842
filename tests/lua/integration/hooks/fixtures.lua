-- TEST-ONLY. Shared helpers for the hooks and tenants integration specs (tests/lua/integration/hooks): a
-- server with three tenants (team-a, team-b and the admin "ops"), JSON requests under one of their keys,
-- temporary hook directories, log assertions, a local webhook listener (node), and cleanup that deletes
-- only the sandboxes created here, through the API (another spec may share the Docker daemon).
--
--   local F = require("hooks.fixtures")
--   local srv = F.start({ hooks = { config = {...} } })       -- the config under `server.api_keys` is added
--   local id = F.create(srv, "a", { metadata = { team = "red" } })   -- "a", "b" or "admin"
--   local res = F.call(srv, "b", "GET", "/v1/sandboxes/" .. id)
--   F.cleanup()                                                -- deletes every sandbox created here
local assert = require("luassert")
local H = require("lifecycle.helpers")

local F = {}

F.H = H
F.json = H.json

F.KEYS = { a = "key-team-a", b = "key-team-b", admin = "key-ops-admin" }
F.PRINCIPALS = { a = "team-a", b = "team-b", admin = "ops" }

local created = {} -- { srv =, id = } of every sandbox created through F

--- The server.api_keys list of the three tenants, plus `extra` entries ({ key =, principal = }).
function F.api_keys(extra)
    local keys = {
        { key = F.KEYS.a, principal = F.PRINCIPALS.a },
        { key = F.KEYS.b, principal = F.PRINCIPALS.b },
        { key = F.KEYS.admin, principal = F.PRINCIPALS.admin, admin = true },
    }
    for _, e in ipairs(extra or {}) do
        keys[#keys + 1] = e
        F.KEYS[e.principal] = e.key
    end
    return keys
end

--- Starts a server with the tenants' keys; `config` is merged over { server = { api_keys = ... } }.
function F.start(config, opts)
    config = config or {}
    config.server = config.server or {}
    config.server.api_keys = config.server.api_keys or F.api_keys()
    opts = opts or {}
    opts.config = config
    return H.start(opts)
end

local function key_of(who)
    local k = F.KEYS[who]
    assert(k, "unknown tenant " .. tostring(who))
    return k
end

--- A request as tenant `who` ("a", "b", "admin" or a principal added through api_keys(extra)).
function F.call(srv, who, method, path, body, headers)
    local h = { ["OPEN-SANDBOX-API-KEY"] = key_of(who) }
    if body ~= nil then
        h["Content-Type"] = "application/json"
    end
    for k, v in pairs(headers or {}) do
        h[k] = v
    end
    return H.call(srv, method, path, body, h)
end

--- POST /v1/sandboxes as `who` (asserting nothing); a 202 is remembered for cleanup.
function F.create_raw(srv, who, over)
    local res = F.call(srv, who, "POST", "/v1/sandboxes", H.body(over))
    if res.status == 202 and res.json and res.json.id then
        created[#created + 1] = { srv = srv, id = res.json.id }
    end
    return res
end

--- Remembers a sandbox created outside F.create for cleanup.
function F.track(srv, id)
    created[#created + 1] = { srv = srv, id = id }
end

--- Creates a sandbox as `who`; asserts 202 and returns its id and the response.
function F.create(srv, who, over)
    local res = F.create_raw(srv, who, over)
    assert.are.equal(202, res.status, res.body)
    return res.json.id, res
end

--- Waits (as the admin) until the sandbox reaches `state`; returns the sandbox.
function F.wait_state(srv, id, state, timeout)
    local deadline = os.time() + (timeout or 60)
    local res
    repeat
        res = F.call(srv, "admin", "GET", "/v1/sandboxes/" .. id)
        if res.status == 200 and res.json.status.state == state then
            return res.json
        end
        H.sleep(0.1)
    until os.time() > deadline
    error(string.format("sandbox %s did not reach %s: %d %s", id, state, res.status, res.body))
end

function F.create_running(srv, who, over)
    local id = F.create(srv, who, over)
    return id, F.wait_state(srv, id, "Running", 90)
end

--- Deletes (as the admin) every sandbox created through F on a server that is still alive.
function F.cleanup()
    for i = #created, 1, -1 do
        local c = created[i]
        if c.srv:alive() then
            pcall(F.call, c.srv, "admin", "DELETE", "/v1/sandboxes/" .. c.id)
        end
        created[i] = nil
    end
end

--- The ids of a list response's items, as a set.
function F.ids(res)
    local out = {}
    for _, sb in ipairs(res.json.items) do
        out[sb.id] = true
    end
    return out
end

---------------------------------------------------------------------------------------------------------
-- files and logs
---------------------------------------------------------------------------------------------------------

function F.write(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
end

function F.read(path)
    local f = io.open(path, "r")
    if not f then
        return ""
    end
    local s = f:read("a")
    f:close()
    return s
end

--- A new temporary directory (removed by H.stop_all when it is under a server's dir: pass `parent`).
function F.mkdir(parent, name)
    local dir = parent .. "/" .. name
    H.run("mkdir -p " .. H.quote(dir))
    return dir
end

--- The server's JSON log lines (decoded), in order.
function F.log_lines(srv)
    local out = {}
    for line in srv:log():gmatch("[^\n]+") do
        local ok, v = pcall(F.json.decode, line)
        if ok and type(v) == "table" then
            out[#out + 1] = v
        end
    end
    return out
end

--- The log lines for which pred(line) holds.
function F.find_lines(srv, pred)
    local out = {}
    for _, l in ipairs(F.log_lines(srv)) do
        if pred(l) then
            out[#out + 1] = l
        end
    end
    return out
end

--- Waits up to `timeout` seconds until at least `n` log lines satisfy pred; returns them (asserting).
function F.wait_lines(srv, pred, n, timeout, what)
    local deadline = H.now() + (timeout or 10)
    local lines
    repeat
        lines = F.find_lines(srv, pred)
        if #lines >= n then
            return lines
        end
        H.sleep(0.05)
    until H.now() > deadline
    error(string.format("expected %d log line(s) for %s, got %d:\n%s", n, what or "?", #lines, srv:log()))
end

---------------------------------------------------------------------------------------------------------
-- a local webhook listener
---------------------------------------------------------------------------------------------------------

local LISTENER = [[
const http = require("http"), fs = require("fs");
const [out, portFile, delay] = process.argv.slice(2);
const srv = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => { body += c; });
  req.on("end", () => {
    fs.appendFileSync(out, JSON.stringify({ method: req.method, url: req.url,
      type: req.headers["content-type"] || "", body: body, at: Date.now() / 1000 }) + "\n");
    setTimeout(() => { res.writeHead(200, { "Content-Type": "text/plain" }); res.end("ok"); }, Number(delay));
  });
});
srv.listen(0, "127.0.0.1", () => fs.writeFileSync(portFile, String(srv.address().port)));
]]

--- Starts a node HTTP listener in `dir` that appends one JSON line per request (method, url, type, body,
--- at) to dir/received.jsonl and answers 200 "ok" after `delay_ms`. Returns { pid, url, file, stop }.
function F.listener(dir, delay_ms)
    local script, port_file, out = dir .. "/listener.js", dir .. "/listener.port", dir .. "/received.jsonl"
    F.write(script, LISTENER)
    local pid = tonumber((H.sh(string.format("node %s %s %s %d >%s 2>&1 & echo $!", H.quote(script),
        H.quote(out), H.quote(port_file), delay_ms or 0, H.quote(dir .. "/listener.log")))))
    local port
    for _ = 1, 100 do
        port = tonumber(F.read(port_file))
        if port then
            break
        end
        H.sleep(0.05)
    end
    if not port then
        H.sh("kill " .. pid .. " 2>/dev/null")
        error("the webhook listener did not start: " .. F.read(dir .. "/listener.log"))
    end
    return {
        pid = pid,
        url = "http://127.0.0.1:" .. port .. "/hook",
        file = out,
        received = function()
            local list = {}
            for line in F.read(out):gmatch("[^\n]+") do
                list[#list + 1] = F.json.decode(line)
            end
            return list
        end,
        stop = function()
            H.sh("kill " .. pid .. " 2>/dev/null")
        end,
    }
end

return F
