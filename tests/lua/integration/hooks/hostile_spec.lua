-- Integration spec: hostile operator hooks against the real server (and one real sandbox for the points
-- that need one). Each escape found by the review of issue 16 is a hook file of its own (ATTACKS below);
-- for each, a request runs it while a concurrent client times GET /health, and the spec checks that the
-- request got its HOOK::* ErrorResponse (or the documented rejection), that /health answered every time
-- within 1 s, that the server's peak RSS (VmHWM, reset through /proc/<pid>/clear_refs) stayed within the
-- hook memory budget plus a fixed margin, and that the server still serves. Design: lua/hooks/README.md;
-- the attack list and the figures: RELIABILITY.md ("Hostile hooks").
--
--   flock /tmp/osb-docker.lock lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' \
--       tests/lua/integration/hooks/hostile_spec.lua
local F = require("hooks.fixtures")
local H = F.H

local BUDGET_MB = 32 -- hooks.memory_budget_mb of this server
-- What the server may add besides the budget (allocator slack, the request itself). Under AddressSanitizer
-- (scripts/test.sh runs this spec with build-asan too) freed memory stays in ASan's quarantine instead of
-- being reused, and shadow memory comes on top, so the margin there is wider; the 2 GB escapes still fail.
local ASAN = (os.getenv("OPENSANDBOX_BIN") or ""):find("asan", 1, true) ~= nil
local MARGIN_MB = ASAN and 512 or 64
local SECRET = "s3cr3t-registry-password"

local LOOP = "function() while true do end end"

-- name -> { body (run when the request carries the attack's name), expect = pattern of the message }.
-- before_create hooks run `body` with `spec` and `ctx` in scope when spec.metadata.attack == name.
local ATTACKS = {
    -- code the hook controls, running after its budget ended
    { name = "result_index", body = "return setmetatable({}, { __index = " .. LOOP .. " })",
        expect = "has a metatable" },
    { name = "spec_changed", body = "setmetatable(spec, { __index = " .. LOOP .. " })",
        expect = "has a metatable" },
    { name = "reject_index", body = "return nil, setmetatable({}, { __index = " .. LOOP .. " })",
        expect = "has a metatable" },
    { name = "reject_pairs", body = "return nil, { status = 403, message = 'm', headers = setmetatable({}, "
        .. "{ __pairs = " .. LOOP .. " }) }", expect = "has a metatable" },
    { name = "metamethods", body = [[
        local mt = {}
        for _, k in ipairs({ "__len", "__eq", "__lt", "__le", "__concat", "__call", "__tostring", "__name" }) do
            mt[k] = ]] .. LOOP .. [[
        end
        local r = {}
        for k, v in pairs(spec) do r[k] = v end
        r.metadata = setmetatable({ a = "b" }, mt)
        return r]], expect = "has a metatable" },
    { name = "error_object", body = "error(setmetatable({}, { __index = " .. LOOP .. ", __tostring = " .. LOOP
        .. " }))", expect = "the hook raised an error value of type table" },
    { name = "gc", body = "setmetatable({}, { __gc = " .. LOOP .. " })\n"
        .. "local t = {} for i = 1, 20000 do t[i] = { i } end\nreturn nil, 'finalizer planted'",
        expect = "__gc is not allowed in hooks" },
    { name = "close", body = "local x <close> = setmetatable({}, { __close = " .. LOOP .. " })",
        expect = "__close is not allowed in hooks" },
    { name = "weak_keys", body = "setmetatable({}, { __mode = 'k' })", expect = "weak keys is not allowed" },
    { name = "cycle", body = "local t = {} t.t = t return nil, t", expect = "nested more than 32 levels" },
    { name = "function_result", body = "return nil, { status = 403, message = print }",
        expect = "got a function" },
    -- single C calls, neither interrupted nor counted
    { name = "rep_method", body = "local s = ('x'):rep(2^31) return nil, #s",
        expect = "string.rep: result of 2147483648 bytes" },
    { name = "rep_empty", body = "local s = (''):rep(2^53) return nil, #s", expect = "repetitions" },
    { name = "rep_empty_sep", body = "local s = (''):rep(2^40, '') return nil, #s", expect = "repetitions" },
    { name = "concat", body = "local s = ('x'):rep(16 * 2^20 - 1) local t = {}\n"
        .. "for i = 1, 64 do t[i] = s end\nreturn nil, #table.concat(t)", expect = "memory budget exceeded" },
    { name = "alloc_loop", body = "local s = ('x'):rep(16 * 2^20 - 1) local t = {}\n"
        .. "for i = 1, 64 do t[i] = s .. i end return nil, #t", expect = "memory budget exceeded" },
    { name = "pack", body = "return nil, #string.pack('c2147483647', '')", expect = "memory budget exceeded" },
    { name = "format_width", body = "return nil, string.format('%0999999d', 1)", expect = "invalid conversion" },
    { name = "find", body = "return nil, tostring(('a'):rep(3000):find('a*a*a*a*a*a*b'))",
        expect = "string.find: pattern on a subject of 3000 bytes" },
    { name = "match", body = "return nil, tostring(('a'):rep(3000):match('^(a-)(a-)(a-)(a-)b'))",
        expect = "string.match: pattern" },
    { name = "match2", body = "return nil, tostring(string.match(('a'):rep(3000), '.-.-.-.-b'))",
        expect = "string.match: pattern" },
    { name = "gsub", body = "return nil, tostring(('a'):rep(3000):gsub('a*a*a*a*b', ''))",
        expect = "string.gsub: pattern" },
    { name = "gmatch", body = "for m in ('a'):rep(3000):gmatch('a-a-a-a-b') do end",
        expect = "string.gmatch: pattern" },
    { name = "unpack", body = "return nil, utf8.char(table.unpack({}, 1, 2^31))", expect = "too many results" },
    { name = "utf8_char", body = "local t = {} for i = 1, 900000 do t[i] = 0x10FFFF end\n"
        .. "local s = utf8.char(table.unpack(t)) for i = 1, 64 do t[i] = s .. i end", expect = "budget exceeded" },
    { name = "sort_error", body = "table.sort({ 3, 2, 1 }, function() error('comparator says no') end)",
        expect = "comparator says no" },
    { name = "sort_loop", body = "table.sort({ 3, 2, 1 }, function() while true do end end)",
        expect = "instruction budget exceeded" },
    { name = "sort_big", body = "local t = {} for i = 1, 2^19 do t[i] = -i end table.sort(t)",
        expect = "table.sort: 524288 elements" },
    { name = "move", body = "table.move({}, 1, 2^40, 1, {})", expect = "table.move: more than" },
    { name = "many_calls", body = "local s = ('x'):rep(2^23) for i = 1, 1e7 do s:find('y', 1, true) end",
        expect = "time budget exceeded %(500 ms%)" },
    { name = "json_bomb", body = "local s = ('x'):rep(2^20) local t = {} for i = 1, 2048 do t[i] = s end\n"
        .. "return nil, #opensandbox.json.encode(t)", expect = "json.encode: the result could exceed" },
    { name = "error_huge", body = "error(('x'):rep(4 * 2^20), 0)", expect = "^Hook [^:]*: x+%.%.%.%(cut%)$" },
    { name = "log_flood", body = "local s = ('x'):rep(2^23) for i = 1, 1e7 do opensandbox.log.info(s, { s = s }) end",
        expect = "budget exceeded" },
    -- Lua's own stack limit or the memory budget, whichever the recursion reaches first
    { name = "stack_overflow", body = "local function f(n) return 1 + f(n + 1) end return nil, f(1)",
        expect = { "memory budget exceeded", "stack overflow" } },
    { name = "swallow", body = "for i = 1, 100 do pcall(function() local s = ('x'):rep(16 * 2^20 - 1) "
        .. "local t = {} for j = 1, 8 do t[j] = s .. j end end) end", expect = "memory budget exceeded" },
}

-- Rejects with what os.getenv gives (nil now) for the registry secret in the server's environment.
local GETENV_HOOK = [[
local M = { name = "atk_getenv", priority = 5 }
function M.before_create(ctx, spec)
    if spec.metadata.attack ~= "getenv" then
        return nil
    end
    local getenv = os.getenv
    return nil, { status = 403, code = "HOOK::REJECTED",
        message = "getenv:" .. tostring(getenv and getenv("OSB_HOSTILE_SECRET")) }
end
return M
]]

-- The points with no spec: on_proxy_request returning a table whose __index loops (the reported hang),
-- before_delete raising an error object with metamethods (not for the admin, so cleanup can delete),
-- after_transition raising one whose __tostring loops (its failure is logged).
local POINTS_HOOK = [[
local M = { name = "atk_points", priority = 5 }
local function loop() while true do end end
function M.on_proxy_request(ctx, sandbox, req)
    if req.path:find("/atk", 1, true) then
        return setmetatable({}, { __index = loop })
    end
end
function M.before_delete(ctx, sandbox)
    if sandbox.metadata.attack == "points" and not ctx.admin then
        error(setmetatable({}, { __index = loop, __tostring = loop }))
    end
end
function M.after_transition(ctx, sandbox, from, to)
    if sandbox.metadata.attack == "points" then
        error(setmetatable({}, { __tostring = loop }))
    end
end
return M
]]

local function hook_file(a)
    return string.format([[
local M = { name = "atk_%s", priority = 10 }
function M.before_create(ctx, spec)
    if spec.metadata.attack ~= %q then
        return nil
    end
    %s
end
return M
]], a.name, a.name, a.body)
end

local function read_status(pid, field)
    local f = io.open("/proc/" .. pid .. "/status", "r")
    if not f then
        return nil
    end
    local s = f:read("a")
    f:close()
    return tonumber(s:match(field .. ":%s*(%d+) kB"))
end

local function reset_peak(pid)
    local f = io.open("/proc/" .. pid .. "/clear_refs", "w")
    assert(f, "cannot open /proc/" .. pid .. "/clear_refs")
    f:write("5\n")
    f:close()
end

local poll_n = 0

-- Starts a client that GETs /health n times in a row (50 ms apart); returns its pid and output file.
local function start_health_poller(srv, n)
    poll_n = poll_n + 1
    local out = srv.dir .. "/health-" .. poll_n .. ".txt"
    local cmd = string.format("(for i in $(seq %d); do curl -s -o /dev/null -w '%%{http_code} %%{time_total}\\n' "
        .. "--max-time 3 http://127.0.0.1:%d/health; sleep 0.05; done) >%s 2>&1 & echo $!", n, srv.port, H.quote(out))
    return tonumber((H.sh(cmd))), out
end

-- Waits for the poller; returns the slowest answer in seconds and how many were not 200.
local function finish_health_poller(pid, out)
    for _ = 1, 200 do
        local _, alive = H.sh("kill -0 " .. pid .. " 2>/dev/null")
        if not alive then
            break
        end
        H.sleep(0.1)
    end
    local slowest, bad, n = 0, 0, 0
    for line in F.read(out):gmatch("[^\n]+") do
        local code, t = line:match("^(%d+) ([%d.]+)$")
        n = n + 1
        if code ~= "200" then
            bad = bad + 1
        end
        slowest = math.max(slowest, tonumber(t) or 99)
    end
    return slowest, bad, n
end

local figures = {}

-- Runs `fn` (the attacking request) under the checks; returns its response.
local function under_watch(srv, name, fn)
    local rss0 = read_status(srv.pid, "VmRSS")
    reset_peak(srv.pid)
    local ppid, out = start_health_poller(srv, 20)
    H.sleep(0.1)
    local w0 = H.now()
    local res = fn()
    local took = H.now() - w0
    local slowest, bad, n = finish_health_poller(ppid, out)
    local peak = read_status(srv.pid, "VmHWM")
    figures[#figures + 1] = string.format("%-16s %6.3f s  /health max %.3f s  peak RSS +%d MB", name, took, slowest,
        (peak - rss0) // 1024)
    assert.is_true(n >= 20, name .. ": the /health client ran " .. n .. " times")
    assert.are.equal(0, bad, name .. ": /health failed " .. bad .. " times")
    assert.is_true(slowest < 1, string.format("%s: /health took %.3f s", name, slowest))
    assert.is_true(peak - rss0 <= (BUDGET_MB + MARGIN_MB) * 1024,
        string.format("%s: peak RSS grew by %d MB (budget %d MB + margin %d MB)", name, (peak - rss0) // 1024,
            BUDGET_MB, MARGIN_MB))
    assert.is_true(srv:alive(), name .. ": the server died")
    assert.are.equal(200, srv:request("GET", "/health", { timeout = 5 }).status)
    return res
end

-- A request with a short timeout (a hook that hangs the server must fail the spec, not stall it).
local function request(srv, method, path, body, who)
    local res, err = srv:request(method, path, { timeout = 20, body = body and F.json.encode(body),
        headers = { ["OPEN-SANDBOX-API-KEY"] = F.KEYS[who or "a"], ["Content-Type"] = "application/json" } })
    assert(res, method .. " " .. path .. ": " .. tostring(err))
    res.json = res.body ~= "" and F.json.decode(res.body) or nil
    return res
end

local function attack_create(srv, name)
    return request(srv, "POST", "/v1/sandboxes", H.body({ metadata = { attack = name } }))
end

describe("hostile hooks #integration #docker", function()
    local srv, dir

    setup(function()
        dir = H.sh("mktemp -d /tmp/osb-hostile.XXXXXX"):gsub("%s+$", "")
        local hooks_dir = F.mkdir(dir, "hooks")
        for _, a in ipairs(ATTACKS) do
            F.write(hooks_dir .. "/atk_" .. a.name .. ".lua", hook_file(a))
        end
        F.write(hooks_dir .. "/atk_getenv.lua", GETENV_HOOK)
        F.write(hooks_dir .. "/atk_points.lua", POINTS_HOOK)
        srv = F.start({ hooks = { dir = hooks_dir, memory_budget_mb = BUDGET_MB } },
            { env = { OSB_HOSTILE_SECRET = SECRET } })
    end)

    teardown(function()
        F.cleanup()
        H.stop_all()
        H.sh("rm -rf " .. H.quote(dir))
        if #figures > 0 then
            print("\nhostile hooks (attack, request time, slowest /health, peak RSS growth):")
            print(table.concat(figures, "\n"))
        end
    end)

    for _, a in ipairs(ATTACKS) do
        it("before_create: " .. a.name .. " gives HOOK::FAILED and holds the server", function()
            local log0 = #srv:log()
            local res = under_watch(srv, a.name, function()
                return attack_create(srv, a.name)
            end)
            assert.are.equal(500, res.status, res.body)
            assert.is_true(#res.body < 4096, "the ErrorResponse has " .. #res.body .. " bytes")
            assert.is_true(#srv:log() - log0 < 2 * 1024 * 1024, "the log grew by " .. (#srv:log() - log0) .. " bytes")
            assert.are.equal("HOOK::FAILED", res.json.code)
            local prefix = "Hook 'atk_" .. a.name .. "' failed in before_create: "
            assert.are.equal(prefix, res.json.message:sub(1, #prefix))
            local expect = type(a.expect) == "table" and a.expect or { a.expect }
            local matched = false
            for _, e in ipairs(expect) do
                matched = matched or res.json.message:find(e) ~= nil
            end
            assert.is_true(matched, res.json.message)
        end)
    end

    it("os.getenv is not there: a hook cannot read the server's secrets", function()
        local res = under_watch(srv, "getenv", function()
            return attack_create(srv, "getenv")
        end)
        assert.are.equal(403, res.status, res.body)
        assert.are.equal("getenv:nil", res.json.message)
        assert.is_nil(res.body:find(SECRET, 1, true))
    end)

    it("on_proxy_request, before_delete and after_transition: metamethods on results and errors", function()
        local id = F.create_running(srv, "a", { metadata = { attack = "points" } })
        -- after_transition failed (Pending, Running) and was logged; its error object's __tostring never ran
        local lines = F.wait_lines(srv, function(l)
            return l.msg == "hook failed" and l.point == "after_transition" and l.hook == "atk_points"
        end, 1, 10, "after_transition failures")
        assert.are.equal("the hook raised an error value of type table", lines[1].error)

        local res = under_watch(srv, "proxy_index", function()
            return srv:request("GET", "/sandboxes/" .. id .. "/proxy/9999/atk", { timeout = 20,
                headers = { ["OPEN-SANDBOX-API-KEY"] = F.KEYS.a } }) -- tenants: the proxy needs a key too
        end)
        assert.are.equal(500, res.status, res.body)
        local body = F.json.decode(res.body)
        assert.are.equal("HOOK::FAILED", body.code)
        assert.matches("^Hook 'atk_points' failed in on_proxy_request: .*has a metatable", body.message)

        res = under_watch(srv, "delete_error", function()
            return request(srv, "DELETE", "/v1/sandboxes/" .. id)
        end)
        assert.are.equal(500, res.status, res.body)
        assert.are.equal("Hook 'atk_points' failed in before_delete: the hook raised an error value of type table",
            res.json.message)
        -- the admin is not refused by the hook: the sandbox goes
        assert.are.equal(204, F.call(srv, "admin", "DELETE", "/v1/sandboxes/" .. id).status)
    end)

    it("still serves normal requests after every attack", function()
        assert.are.equal(200, srv:request("GET", "/health").status)
        assert.are.equal(200, F.call(srv, "a", "GET", "/v1/sandboxes").status)
    end)
end)
