-- TEST-ONLY. Shared helpers for the lifecycle integration specs (tests/lua/integration/lifecycle): start
-- real servers (support.server) against the real Docker daemon, talk JSON to them, poll for states and look
-- at containers with the docker CLI.
--
--   local H = require("lifecycle.helpers")
--   local srv = H.start()                      -- remembered; H.stop_all() stops every server started
--   local id = H.create_running(srv)           -- create + wait for Running
--   local res = H.call(srv, "GET", "/v1/sandboxes/" .. id)   -- res.status, res.json, res.headers
--   H.assert_error(res, 404, "DOCKER::SANDBOX_NOT_FOUND", "Sandbox " .. id .. " not found.")
--
-- Every container the server creates carries the label opensandbox.io/id; H.remove_all_containers()
-- force-removes all of them (this machine runs only our tests), which each spec file does at its start and
-- end.
local assert = require("luassert")
local server = require("support.server")
local json = require("common.json")
local timefmt = require("common.timefmt")

local H = {}

H.IMAGE = "local/busybox:latest"
H.curl = require("support.curl_client").request
H.root = server.root
H.json = json
H.sh = server.sh
H.quote = server.quote

local started = {}

--- Runs a shell command; returns its stdout (stderr merged) and whether it exited 0.
function H.run(cmd)
    local out, ok = server.sh("(" .. cmd .. ") 2>&1")
    return out, ok == true
end

function H.sleep(s)
    server.sh("sleep " .. s)
end

--- Starts a server (server.start options) and remembers it for stop_all.
function H.start(opts)
    local srv = server.start(opts or {})
    started[#started + 1] = srv
    return srv
end

--- Stops every server started through H.start and deletes their state directories (kept when
--- OSB_KEEP_TEST_DIRS is set, for looking at the logs).
function H.stop_all()
    local dirs = {}
    for i = #started, 1, -1 do
        local srv = started[i]
        pcall(srv.stop, srv)
        started[i] = nil
        dirs[srv.dir] = true
    end
    if not os.getenv("OSB_KEEP_TEST_DIRS") then
        for dir in pairs(dirs) do
            if dir:find("^/tmp/osb%-test%.") then
                server.sh("rm -rf " .. server.quote(dir))
            end
        end
    end
end

--- A request; `body` may be a table (JSON-encoded) or a string. Returns { status, headers, body, json }.
function H.call(srv, method, path, body, headers)
    if type(body) == "table" then
        body = json.encode(body)
    end
    local res, err = srv:request(method, path, { body = body, headers = headers, timeout = 150 })
    assert(res, "request " .. method .. " " .. path .. " failed: " .. tostring(err))
    if res.body ~= "" then
        res.json = json.decode(res.body)
    end
    return res
end

--- Asserts an ErrorResponse: status, code and (exact) message; `message` may be a function(msg) -> bool.
function H.assert_error(res, status, code, message)
    local desc = string.format("got %d %s", res.status, res.body)
    assert.are.equal(status, res.status, desc)
    assert.is_table(res.json, desc)
    assert.are.equal(code, res.json.code, desc)
    if type(message) == "function" then
        assert.is_true(message(res.json.message), desc)
    elseif message then
        assert.are.equal(message, res.json.message, desc)
    end
    assert.is_string(res.json.message)
    local n = 0
    for _ in pairs(res.json) do
        n = n + 1
    end
    assert.are.equal(2, n, "ErrorResponse has exactly code and message: " .. res.body)
end

--- A valid create body; `over` replaces top-level fields (json.null removes one).
function H.body(over)
    local b = {
        image = { uri = H.IMAGE },
        entrypoint = { "sleep", "600" },
        timeout = 600,
        resourceLimits = {},
    }
    for k, v in pairs(over or {}) do
        if v == json.null then
            b[k] = nil
        else
            b[k] = v
        end
    end
    return b
end

--- POST /v1/sandboxes; returns the response (asserting nothing).
function H.create_raw(srv, over)
    return H.call(srv, "POST", "/v1/sandboxes", H.body(over))
end

--- Creates a sandbox, asserts 202, returns its id and the response.
function H.create(srv, over)
    local res = H.create_raw(srv, over)
    assert.are.equal(202, res.status, res.body)
    return res.json.id, res
end

--- Polls GET until `pred(sandbox or nil, res)` is true or `timeout` seconds pass; returns the last
--- sandbox (nil when 404) and whether pred held.
function H.poll(srv, id, pred, timeout)
    local deadline = os.time() + (timeout or 60)
    local sb, res
    repeat
        res = H.call(srv, "GET", "/v1/sandboxes/" .. id)
        sb = res.status == 200 and res.json or nil
        if pred(sb, res) then
            return sb, true
        end
        H.sleep(0.1)
    until os.time() > deadline
    return sb, false
end

--- Waits for the sandbox to reach `state`; asserts it did. Returns the sandbox.
function H.wait_state(srv, id, state, timeout)
    local sb, ok = H.poll(srv, id, function(s)
        return s and s.status.state == state
    end, timeout)
    assert.is_true(ok, string.format("sandbox %s did not reach %s: %s", id, state,
        sb and json.encode(sb.status) or "404"))
    return sb
end

--- Waits until GET answers 404; asserts it did.
function H.wait_gone(srv, id, timeout)
    local sb, ok = H.poll(srv, id, function(_, res)
        return res.status == 404
    end, timeout)
    assert.is_true(ok, "sandbox " .. id .. " still exists: " .. (sb and json.encode(sb.status) or "?"))
end

function H.create_running(srv, over)
    local id = H.create(srv, over)
    return id, H.wait_state(srv, id, "Running", 90)
end

--- Polls GET /v1/pools/{name} until pred(pool) holds; returns the pool (raises after `timeout` s, default 90).
function H.wait_pool(srv, name, pred, timeout)
    local deadline = os.time() + (timeout or 90)
    local res
    repeat
        res = H.call(srv, "GET", "/v1/pools/" .. name)
        if res.status == 200 and pred(res.json) then
            return res.json
        end
        H.sleep(0.1)
    until os.time() > deadline
    error("pool " .. name .. " did not get there: " .. res.status .. " " .. res.body)
end

--- A wait_pool predicate: exactly `n` members ready and none being made.
function H.pool_available(n)
    return function(p)
        return p.status.available == n and p.status.total - p.status.allocated == n
    end
end

--- `docker inspect` of a container (by name or id); nil when it does not exist.
function H.inspect(name)
    local out, ok = H.run("docker inspect " .. server.quote(name))
    if not ok then
        return nil
    end
    local v = json.decode(out)
    return v and v[1]
end

function H.container_exists(name)
    local _, ok = H.run("docker inspect --format '{{.Id}}' " .. server.quote(name))
    return ok
end

--- Names of the containers that carry the label opensandbox.io/id.
function H.labelled_containers()
    local out = H.run("docker ps -a --filter label=opensandbox.io/id --format '{{.Names}}'")
    local names = {}
    for n in out:gmatch("%S+") do
        names[#names + 1] = n
    end
    return names
end

--- Force-removes every container labelled opensandbox.io/id (leftovers of test servers).
function H.remove_all_containers()
    H.run("docker ps -aq --filter label=opensandbox.io/id | xargs -r docker rm -f -v")
end

--- Builds the test image when it is missing.
function H.ensure_image()
    local out, ok = H.run("sh tests/images/build-busybox.sh")
    assert(ok, "cannot build the test image: " .. out)
end

--- RFC 3339 UTC of now + `offset` seconds (microsecond precision).
function H.iso(offset)
    local us = math.floor((H.now() + (offset or 0)) * 1e6)
    return timefmt.format(us)
end

--- Wall-clock time in seconds with sub-second precision (date +%s.%N).
function H.now()
    return tonumber((server.sh("date +%s.%N")))
end

H.parse_time = timefmt.parse

local ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$"
H.ISO_PATTERN = ISO

--- Asserts the shape of a Sandbox object (§3.1).
function H.assert_sandbox_shape(sb)
    assert.is_string(sb.id)
    assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", sb.id)
    assert.is_table(sb.image)
    assert.is_string(sb.image.uri)
    assert.is_nil(sb.image.auth)
    assert.is_table(sb.status)
    for _, k in ipairs({ "state", "reason", "message", "lastTransitionAt" }) do
        assert.is_string(sb.status[k], "status." .. k)
    end
    assert.matches(ISO, sb.status.lastTransitionAt)
    assert.is_table(sb.metadata)
    assert.is_table(sb.entrypoint)
    assert.matches(ISO, sb.createdAt)
    if sb.expiresAt ~= nil then
        assert.matches(ISO, sb.expiresAt)
    end
end

H.REGISTRY = "127.0.0.1:" .. (os.getenv("REGISTRY_PORT") or "5055") -- tests/images/registry.sh
H.REGISTRY_USER, H.REGISTRY_PASSWORD = "testuser", "testpass"

--- Starts tests/images/registry.sh's authenticated registry (when it is not running), pushes the test image
--- there as `<registry>/osb/<name>:t<now>` and removes the local tag. Returns the image reference and
--- whether the registry was running before (stop it in teardown when it was not).
function H.push_private_image(name)
    local _, was_running = H.run("sh tests/images/registry.sh status")
    local out, ok = H.run("sh tests/images/registry.sh start")
    assert(ok, out)
    local image = string.format("%s/osb/%s:t%d", H.REGISTRY, name, os.time())
    out, ok = H.run(string.format("echo %s | docker login %s -u %s --password-stdin && docker tag %s %s && "
        .. "docker push %s", H.REGISTRY_PASSWORD, H.REGISTRY, H.REGISTRY_USER, H.IMAGE, image, image))
    H.run("docker logout " .. H.REGISTRY)
    assert(ok, out)
    H.run("docker rmi -f " .. image)
    return image, was_running
end

return H
