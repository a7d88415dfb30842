-- TEST-ONLY. Shared helpers of the reliability specs (tests/lua/integration/reliability): servers that each
-- own a docker.instance (so these specs see and remove only their own containers, whatever else runs on the
-- daemon), commands run inside a sandbox through its agent, raw TCP exchanges and the slowloris client
-- (tests/reliability/rawhttp.mjs).
--
--   local R = require("reliability.support")
--   local srv = R.start("rel-x", { server = { api_key = R.KEY } })
--   local out = R.exec(srv, id, "cat /proc/self/status")   -- { stdout = "...", exit = 0, events = {...} }
--   R.cleanup("rel-x")                                     -- stop servers, remove that instance's containers
local H = require("lifecycle.helpers")
local json = require("common.json")
local server = require("support.server")

local R = {}

R.H = H
R.KEY = "reliability-key"
R.json = json

local function merge(dst, src)
    for k, v in pairs(src or {}) do
        if type(v) == "table" and type(dst[k]) == "table" and #v == 0 then
            merge(dst[k], v)
        else
            dst[k] = v
        end
    end
    return dst
end

--- Starts a server of docker instance `instance` (config merged over { docker.instance, api_key = R.KEY }).
function R.start(instance, config, opts)
    opts = opts or {}
    opts.config = merge({ server = { api_key = R.KEY }, docker = { instance = instance } }, config)
    return H.start(opts)
end

--- Force-removes the containers of one docker instance (and only those).
function R.remove_instance(instance)
    H.run("docker ps -aq --filter label=opensandbox.io/instance=" .. H.quote(instance)
        .. " | xargs -r docker rm -f -v")
end

--- Names of the containers of one docker instance.
function R.instance_containers(instance)
    local out = H.run("docker ps -a --filter label=opensandbox.io/instance=" .. H.quote(instance)
        .. " --format '{{.Label \"opensandbox.io/id\"}}'")
    local ids = {}
    for id in out:gmatch("%S+") do
        ids[#ids + 1] = id
    end
    return ids
end

function R.cleanup(instance)
    H.stop_all()
    R.remove_instance(instance)
end

--- A JSON call with the API key.
function R.call(srv, method, path, body, headers)
    headers = headers or {}
    if headers["OPEN-SANDBOX-API-KEY"] == nil then
        headers["OPEN-SANDBOX-API-KEY"] = R.KEY
    end
    return H.call(srv, method, path, body, headers)
end

--- Creates a sandbox and waits for Running; returns its id.
function R.create_running(srv, over)
    local res = R.call(srv, "POST", "/v1/sandboxes", H.body(over))
    assert(res.status == 202, "create: " .. res.status .. " " .. res.body)
    local id = res.json.id
    local deadline = os.time() + 90
    repeat
        local g = R.call(srv, "GET", "/v1/sandboxes/" .. id)
        if g.status == 200 and g.json.status.state == "Running" then
            return id
        end
        assert(g.status == 200 and g.json.status.state == "Pending", "sandbox " .. id .. ": " .. g.body)
        H.sleep(0.2)
    until os.time() > deadline
    error("sandbox " .. id .. " did not reach Running")
end

--- The agent endpoint of a sandbox: base URL ("http://host:port") and its token.
function R.agent(srv, id)
    local res = R.call(srv, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772")
    assert(res.status == 200, res.body)
    return "http://" .. res.json.endpoint, res.json.headers["X-EXECD-ACCESS-TOKEN"]
end

--- A raw request to an agent: returns the curl_client response (status, body) or nil, err.
function R.agent_request(base, token, method, path, body, timeout)
    local headers = { ["Content-Type"] = "application/json" }
    if token then
        headers["X-EXECD-ACCESS-TOKEN"] = token
    end
    return H.curl({ method = method, url = base .. path, headers = headers, body = body, timeout = timeout or 30 })
end

--- Runs `cmd` in the sandbox through its agent (POST /command). Returns { stdout, stderr, exit, events }:
--- exit is 0 after execution_complete, the evalue's integer after an error event (-1: killed by a signal),
--- nil when the stream ended without a terminal event. `opts`: timeout_ms (the agent's), background.
function R.exec(srv, id, cmd, opts)
    opts = opts or {}
    local base, token = R.agent(srv, id)
    local res, err = R.agent_request(base, token, "POST", "/command", json.encode({
        command = cmd,
        timeout = opts.timeout_ms,
        background = opts.background == true,
    }), (opts.timeout_ms or 30000) / 1000 + 15)
    assert(res, "agent request failed: " .. tostring(err))
    assert(res.status == 200, "agent answered " .. res.status .. ": " .. res.body)
    local out = { stdout = {}, stderr = {}, events = {} }
    for chunk in res.body:gmatch("[^\n]+") do
        local ev = json.decode(chunk)
        if type(ev) == "table" then
            out.events[#out.events + 1] = ev
            if ev.type == "stdout" or ev.type == "stderr" then
                table.insert(out[ev.type], ev.text)
            elseif ev.type == "init" then
                out.command_id = ev.text
            elseif ev.type == "execution_complete" then
                out.exit = 0
            elseif ev.type == "error" and ev.error then
                out.exit = tonumber(ev.error.evalue) or ev.error.evalue
            end
        end
    end
    out.stdout = table.concat(out.stdout, "\n")
    out.stderr = table.concat(out.stderr, "\n")
    return out
end

--- Sends `bytes` on one new connection to the server and reads until it closes or is idle for idle_ms.
--- Returns { closed = bool, data = "...", statuses = { 400, ... } }.
function R.exchange(srv, bytes, idle_ms)
    local path = srv.dir .. "/exchange.bin"
    local f = assert(io.open(path, "wb"))
    f:write(bytes)
    f:close()
    local out = server.sh(string.format("node %s/tests/reliability/rawhttp.mjs exchange %d %s %d",
        H.quote(H.root()), srv.port, H.quote(path), idle_ms or 1500))
    local v = json.decode(out)
    assert(type(v) == "table", "rawhttp exchange: " .. tostring(out))
    return v
end

--- The slowloris client (see rawhttp.mjs); returns its report table. `source`: the local address the slow
--- connections come from (the probes always come from 127.0.0.1).
function R.slowloris(srv, conns, seconds, source)
    local out = server.sh(string.format("ulimit -n 8192 2>/dev/null; timeout %d node %s/tests/reliability/rawhttp.mjs "
        .. "slowloris %d %d %d %s",
        seconds + 60, H.quote(H.root()), srv.port, conns, seconds, source and H.quote(source) or ""))
    local v = json.decode(out)
    assert(type(v) == "table", "rawhttp slowloris: " .. tostring(out))
    return v
end

--- Starts every op ({ method, path, body = string | nil }) as its own curl in the background, all at once;
--- returns the pid of the shell that waits for them. Op i leaves its status code in dir/op<i>.code ("000"
--- when no answer came: the server was killed) and its body in dir/op<i>; R.storm_result reads them.
function R.storm(srv, dir, ops)
    local parts = {}
    for i, op in ipairs(ops) do
        local out = dir .. "/op" .. i
        parts[#parts + 1] = string.format("(curl -s -m 90 -X %s -H %s -H 'Content-Type: application/json' %s -o %s "
            .. "-w '%%{http_code}' %s >%s.code 2>/dev/null) &", op.method, H.quote("OPEN-SANDBOX-API-KEY: " .. R.KEY),
            op.body and ("--data-binary " .. H.quote(op.body)) or "", H.quote(out), H.quote(srv.base .. op.path),
            H.quote(out))
    end
    local script = dir .. "/storm.sh"
    local f = assert(io.open(script, "w"))
    f:write(table.concat(parts, "\n"), "\nwait\n")
    f:close()
    return tonumber((H.sh("sh " .. H.quote(script) .. " >/dev/null 2>&1 & echo $!")))
end

local read = require("common.files").read -- the text, or nil when there is no such file

--- The answer to op i of a storm: status code (0: none) and decoded body (nil when none or not JSON).
function R.storm_result(dir, i)
    local code = tonumber(read(dir .. "/op" .. i .. ".code") or "") or 0
    local body = read(dir .. "/op" .. i)
    local doc = body and body ~= "" and json.decode(body) or nil
    return code, type(doc) == "table" and doc or nil
end

--- Waits up to `seconds` for process `pid` to end; true when it did.
function R.wait_pid(pid, seconds)
    local deadline = os.time() + seconds
    while os.time() <= deadline do
        local _, ok = H.sh("kill -0 " .. pid .. " 2>/dev/null")
        if ok ~= true then
            return true
        end
        H.sleep(0.1)
    end
    return false
end

--- Count of open file descriptors of a process.
function R.fd_count(pid)
    local out = H.run("ls /proc/" .. pid .. "/fd | wc -l")
    return tonumber(out:match("%d+"))
end

return R
