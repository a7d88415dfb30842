-- Integration spec: the diagnostics API (upstream diagnostic-api.yml) and renew on access (OSEP-0009)
-- against the real server and the real Docker daemon: a sandbox's stdout/stderr (demultiplexed, bounded,
-- truncated honestly), its lifecycle and runtime events (Pending -> Running, pause/resume, an exit), tenant
-- visibility, and proxy traffic moving expiresAt at most once per cooldown, durably across a restart.
local H = require("lifecycle.helpers")
local timefmt = require("common.timefmt")

local KEY_A, KEY_B, ADMIN = "diag-tenant-a", "diag-tenant-b", "diag-admin"

local function path(id, suffix)
    return "/v1/sandboxes/" .. id .. (suffix or "")
end

-- GET a diagnostics descriptor; asserts 200 and the descriptor's shape (the admin key by default: servers
-- without keys ignore it)
local function diag(srv, id, kind, scope, headers)
    local res = H.call(srv, "GET", path(id, "/diagnostics/" .. kind .. "?scope=" .. scope), nil,
        headers or { ["OPEN-SANDBOX-API-KEY"] = ADMIN })
    assert.are.equal(200, res.status, res.body)
    local d = res.json
    assert.are.equal(id, d.sandboxId)
    assert.are.equal(kind, d.kind)
    assert.are.equal(scope, d.scope)
    assert.are.equal("inline", d.delivery)
    assert.are.equal("text/plain; charset=utf-8", d.contentType)
    assert.is_string(d.content)
    assert.are.equal(#d.content, d.contentLength)
    assert.is_boolean(d.truncated)
    return d
end

-- polls the descriptor until pred(d) holds (output and events arrive asynchronously)
local function diag_until(srv, id, kind, scope, pred, timeout)
    local d
    for _ = 1, (timeout or 20) * 4 do
        d = diag(srv, id, kind, scope)
        if pred(d) then
            return d
        end
        H.sleep(0.25)
    end
    error("diagnostics never matched; last content:\n" .. tostring(d and d.content))
end

local function has(text, s)
    return text:find(s, 1, true) ~= nil
end

local function count_lines(text)
    local n = 0
    for _ in text:gmatch("[^\n]*\n") do
        n = n + 1
    end
    return n
end

describe("diagnostics #integration #docker", function()
    local srv

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
        srv = H.start({ config = { server = { api_key = ADMIN, api_keys = {
            { key = KEY_A, principal = "team-a", admin = false },
            { key = KEY_B, principal = "team-b", admin = false },
        } } } })
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    local A = { ["OPEN-SANDBOX-API-KEY"] = KEY_A }
    local B = { ["OPEN-SANDBOX-API-KEY"] = KEY_B }
    local ADM = { ["OPEN-SANDBOX-API-KEY"] = ADMIN }

    local function call(method, p, body, headers)
        return H.call(srv, method, p, body, headers or ADM)
    end

    -- waits (as the admin) until the sandbox is in `state`
    local function wait_state(id, state)
        local sb
        for _ = 1, 240 do
            sb = call("GET", path(id)).json
            if sb and sb.status and sb.status.state == state then
                return sb
            end
            H.sleep(0.25)
        end
        error("sandbox " .. id .. " never reached " .. state .. ": " .. H.json.encode(sb))
    end

    local function create_running(over, headers)
        local res = call("POST", "/v1/sandboxes", H.body(over), headers)
        assert.are.equal(202, res.status, res.body)
        wait_state(res.json.id, "Running")
        return res.json.id
    end

    it("gives the container's stdout and stderr, each line marked with its stream", function()
        local id = create_running({ entrypoint = { "sh", "-c",
            "echo diag-out-1; echo diag-err-1 >&2; echo diag-out-2; exec sleep 600" } })
        local d = diag_until(srv, id, "logs", "container", function(x)
            return has(x.content, "diag-out-2")
        end)
        assert.matches("%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z stdout diag%-out%-1\n", d.content)
        assert.matches("Z stderr diag%-err%-1\n", d.content)
        assert.is_true(d.content:find("diag-out-1", 1, true) < d.content:find("diag-out-2", 1, true))
        assert.is_false(d.truncated)
        assert.is_nil(d.warnings)
        -- scope all is the same text; the scope is required and checked
        local all = diag(srv, id, "logs", "all")
        assert.is_true(has(all.content, "stderr diag-err-1"))
        H.assert_error(call("GET", path(id, "/diagnostics/logs")), 400, "SANDBOX::INVALID_PARAMETER",
            "scope is required; supported logs scopes: container, all.")
        H.assert_error(call("GET", path(id, "/diagnostics/logs?scope=network")), 400, "SANDBOX::INVALID_PARAMETER",
            "scope 'network' is not supported for logs; supported: container, all.")
        H.assert_error(call("GET", path("no-such-sandbox", "/diagnostics/logs?scope=container")), 404,
            "DOCKER::SANDBOX_NOT_FOUND")
    end)

    it("cuts to the configured lines and bytes, keeping the newest, and says truncated only then", function()
        local small = H.start({ config = { diagnostics = { max_log_lines = 3, max_bytes = 1024 } } })
        local res = H.call(small, "POST", "/v1/sandboxes", H.body({ entrypoint = { "sh", "-c",
            "for i in 1 2 3 4 5 6 7 8; do echo many-$i; done; exec sleep 600" } }))
        assert.are.equal(202, res.status, res.body)
        local id = res.json.id
        H.wait_state(small, id, "Running", 60)
        local d = diag_until(small, id, "logs", "container", function(x)
            return has(x.content, "many-8")
        end)
        assert.is_true(d.truncated)
        assert.are.equal(3, count_lines(d.content))
        assert.is_false(has(d.content, "many-1\n"))
        -- bytes: 40 lines of 100 characters do not fit in 1024 bytes
        res = H.call(small, "POST", "/v1/sandboxes", H.body({ entrypoint = { "sh", "-c",
            "i=0; while [ $i -lt 40 ]; do i=$((i+1)); printf 'b%03d%0100d\\n' $i 0; done; echo last-line; "
            .. "exec sleep 600" } }))
        local big = res.json.id
        H.wait_state(small, big, "Running", 60)
        small:stop() -- the same store and sandboxes, read with other bounds
        local roomy = H.start({ dir = small.dir, config = { diagnostics = { max_log_lines = 1000,
            max_bytes = 1024 } } })
        d = diag_until(roomy, big, "logs", "container", function(x)
            return has(x.content, "last-line")
        end)
        assert.is_true(d.truncated)
        assert.is_true(d.contentLength <= 1024, tostring(d.contentLength))
        assert.is_false(has(d.content, "b001"))
        -- the same output within generous bounds: not truncated
        roomy:stop()
        local wide = H.start({ dir = small.dir, config = { diagnostics = { max_log_lines = 1000,
            max_bytes = 1048576 } } })
        d = diag(wide, big, "logs", "container")
        assert.is_false(d.truncated)
        assert.is_true(has(d.content, "b001") and has(d.content, "b040") and has(d.content, "last-line"))
    end)

    it("lists the lifecycle (Pending, Running, pause, resume) and the runtime's events", function()
        local id = create_running()
        assert.are.equal(202, call("POST", path(id, "/pause")).status)
        wait_state(id, "Paused")
        assert.are.equal(202, call("POST", path(id, "/resume")).status)
        wait_state(id, "Running")
        local d = diag(srv, id, "events", "lifecycle")
        local order = {}
        for line in d.content:gmatch("[^\n]+") do
            local state = line:match("^%S+ lifecycle (%a+) ")
            assert.is_string(state, line)
            order[#order + 1] = state
        end
        assert.are.same({ "Pending", "Running", "Paused", "Running" }, order)
        assert.is_false(d.truncated)
        local rt = diag(srv, id, "events", "runtime")
        assert.is_true(has(rt.content, "docker state: container created"), rt.content)
        assert.is_true(has(rt.content, "docker state: container started"), rt.content)
        -- the daemon's buffer still holds this fresh container's pause and unpause (a busy shared daemon may
        -- have dropped its create: then a warning says so)
        assert.is_true(has(rt.content, "docker container pause"), rt.content)
        assert.is_true(has(rt.content, "docker container unpause"), rt.content)
        local all = diag(srv, id, "events", "all")
        assert.are.equal(count_lines(d.content) + count_lines(rt.content), count_lines(all.content))
        -- times ascend in the merged text
        local last = ""
        for stamp in all.content:gmatch("(%d%d%d%d%-[^ ]+) ") do
            assert.is_true(stamp >= last, stamp .. " < " .. last)
            last = stamp
        end
        H.assert_error(call("GET", path(id, "/diagnostics/events?scope=container")), 400,
            "SANDBOX::INVALID_PARAMETER", "scope 'container' is not supported for events; supported: "
            .. "lifecycle, runtime, all.")
    end)

    it("records an exit: the lifecycle's Failed and the container's exit code", function()
        local res = call("POST", "/v1/sandboxes", H.body({ entrypoint = { "sh", "-c", "sleep 1; exit 3" } }))
        assert.are.equal(202, res.status, res.body)
        local id = res.json.id
        wait_state(id, "Failed")
        local d = diag(srv, id, "events", "all")
        assert.is_true(has(d.content, "lifecycle Failed CONTAINER_EXITED_ERROR: Sandbox container exited with code 3."),
            d.content)
        assert.is_true(has(d.content, "docker state: container exited with code 3"), d.content)
        -- its output stays readable after the exit
        assert.are.equal(200, call("GET", path(id, "/diagnostics/logs?scope=container")).status)
    end)

    it("shows a tenant's sandbox to that tenant only (another's is 404)", function()
        local id = create_running(nil, A)
        diag(srv, id, "logs", "container", A)
        diag(srv, id, "events", "all", A)
        for _, kind in ipairs({ "logs?scope=container", "events?scope=all" }) do
            H.assert_error(H.call(srv, "GET", path(id, "/diagnostics/" .. kind), nil, B), 404,
                "DOCKER::SANDBOX_NOT_FOUND", "Sandbox " .. id .. " not found.")
        end
        H.assert_error(H.call(srv, "GET", path(id, "/diagnostics/logs?scope=container")), 401, "MISSING_API_KEY")
    end)
end)

describe("renew on access #integration #docker", function()
    local COOLDOWN = 4

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    local function expires(srv, id)
        local res = H.call(srv, "GET", path(id))
        assert.are.equal(200, res.status, res.body)
        return res.json.expiresAt
    end

    -- a request through the server proxy to the sandbox's agent (with the agent's token)
    local function proxied(srv, id)
        local ep = H.call(srv, "GET", path(id, "/endpoints/44772?use_server_proxy=true"))
        assert.are.equal(200, ep.status, ep.body)
        local res = H.call(srv, "GET", path(id, "/proxy/44772/ping"), nil,
            { ["X-EXECD-ACCESS-TOKEN"] = ep.json.headers["X-EXECD-ACCESS-TOKEN"] })
        assert.are.equal(200, res.status, res.body)
    end

    -- polls until expiresAt differs from `old` (the renewal is written by a background task)
    local function moved_from(srv, id, old)
        for _ = 1, 40 do
            local now = expires(srv, id)
            if now ~= old then
                return now
            end
            H.sleep(0.1)
        end
        return old
    end

    it("moves expiresAt on proxy traffic, once per cooldown, durably; never without the extension", function()
        local srv = H.start({ config = { renew_intent = { min_interval_seconds = COOLDOWN } } })
        local id = H.create_running(srv, { timeout = 60, extensions = { ["access.renew.extend.seconds"] = "300" } })
        local plain = H.create_running(srv, { timeout = 60 })
        local before = expires(srv, id)
        local plain_before = expires(srv, plain)
        local t0 = H.now()
        proxied(srv, id)
        local first = moved_from(srv, id, before)
        assert.are_not.equal(before, first)
        -- now + 300 s: between the request and a few seconds after it
        local at = timefmt.parse(first) / 1e6
        assert.is_true(at >= t0 + 299 and at <= H.now() + 301, first)
        -- inside the cooldown: more traffic does not move it
        for _ = 1, 5 do
            proxied(srv, id)
        end
        H.sleep(0.5)
        assert.are.equal(first, expires(srv, id))
        -- after the cooldown: it moves again
        H.sleep(COOLDOWN + 0.5)
        proxied(srv, id)
        local second = moved_from(srv, id, first)
        assert.is_true(second > first, second .. " <= " .. first)
        -- a sandbox without the extension is never renewed by traffic
        proxied(srv, plain)
        H.sleep(0.5)
        assert.are.equal(plain_before, expires(srv, plain))
        -- durable: a restarted server has the renewed expiry
        srv:stop()
        local srv2 = H.start({ dir = srv.dir, config = { renew_intent = { min_interval_seconds = COOLDOWN } } })
        assert.are.equal(second, expires(srv2, id))
        assert.are.equal(plain_before, expires(srv2, plain))
    end)

    it("refuses a malformed extension value with 400 and creates nothing", function()
        local srv = H.start()
        local before = #H.labelled_containers()
        for _, v in ipairs({ "299", "86401", "abc", "", "1e3", " 300" }) do
            H.assert_error(H.call(srv, "POST", "/v1/sandboxes", H.body({
                extensions = { ["access.renew.extend.seconds"] = v } })), 400, "SANDBOX::INVALID_PARAMETER",
                "extensions.access.renew.extend.seconds must be a decimal string between 300 and 86400.")
        end
        H.assert_error(H.call(srv, "POST", "/v1/sandboxes", H.body({
            extensions = { ["access.renew.extend.seconds"] = 300 } })), 400, "SANDBOX::INVALID_PARAMETER",
            "extensions.access.renew.extend.seconds must be a string.")
        assert.are.equal(before, #H.labelled_containers())
        assert.are.equal(0, H.call(srv, "GET", "/v1/sandboxes").json.pagination.totalItems)
    end)
end)
