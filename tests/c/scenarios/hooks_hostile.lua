-- Scenario: every attack of the hostile-hooks spec (tests/lua/integration/hooks/hostile_spec.lua, read from
-- there) run through lua/hooks in the real engine, whose Lua state has the counting allocator and the
-- guards of core/hookguard.c: each before_create fails with HOOK::FAILED and the expected reason, within a
-- bounded time and with the process's peak RSS within the budget plus a margin. No HTTP and no Docker, so it
-- also runs under ctest, ASan and valgrind; the live-server checks (/health from a concurrent client, the
-- points with a sandbox) are in the integration spec.
local core = require("core")
local root = core.paths.root
local S = dofile(root .. "/tests/lua/unit/hooks/support.lua")
local hooks = require("hooks")

local f = assert(io.open(root .. "/tests/lua/integration/hooks/hostile_spec.lua"))
local src = f:read("a")
f:close()
local loop = assert(src:match('\nlocal LOOP = (".-")\n'))
local list = assert(src:match("\nlocal ATTACKS = (%b{})"))
local ATTACKS = assert(load("local LOOP = " .. loop .. "\nreturn " .. list))()
local template = assert(src:match('local function hook_file%(a%)\n    return string.format%(%[%[\n(.-)%]%]'))

local BUDGET_KB = 32 * 1024
-- generous: valgrind runs this 20-50 times slower, ASan keeps freed memory in quarantine
local MAX_SECONDS, MARGIN_KB = 10, 512 * 1024

local function status(field)
    local sf = assert(io.open("/proc/self/status"))
    local s = sf:read("a")
    sf:close()
    return tonumber(s:match(field .. ":%s*(%d+) kB"))
end

local function reset_peak()
    local cf = assert(io.open("/proc/self/clear_refs", "w"))
    cf:write("5\n")
    cf:close()
end

local CTX = { request_id = "scenario", principal = "team-a", admin = false }
assert(#ATTACKS >= 30, "the attack list was read: " .. #ATTACKS)
for _, a in ipairs(ATTACKS) do
    local dir = S.dir({ ["atk.lua"] = string.format(template, a.name, a.name, a.body) })
    local h = assert(hooks.new({ dir = dir, log = S.log(), limits = { memory_kb = BUDGET_KB } }))
    local spec = S.spec()
    spec.metadata.attack = a.name
    collectgarbage()
    local rss0 = status("VmRSS")
    reset_peak()
    local t0 = core.monotonic()
    local out, err = h:before_create(CTX, spec)
    local took = core.monotonic() - t0
    local grew = status("VmHWM") - rss0
    S.rmdir(dir)
    assert(out == nil and err and err.code == "HOOK::FAILED", a.name .. ": not a HOOK::FAILED")
    -- on a slow run (valgrind: 20-50 times slower) the time budget may end an attack before what the
    -- attack aims at is reached; that is a bounded outcome too (the live spec checks the exact reasons)
    local slow_ok = err.message:find("time budget exceeded", 1, true)
    local expected = false -- a.expect: one pattern, or several of which any may be the outcome
    for _, e in ipairs(type(a.expect) == "table" and a.expect or { a.expect }) do
        expected = expected or err.message:find(e) ~= nil
    end
    assert(expected or slow_ok, a.name .. ": " .. err.message:sub(1, 300))
    assert(took < MAX_SECONDS, string.format("%s: took %.3f s", a.name, took))
    assert(grew < BUDGET_KB + MARGIN_KB, string.format("%s: peak RSS grew by %d KB", a.name, grew))
end

-- the points with no spec (the spec's POINTS_HOOK): on_proxy_request's looping __index, before_delete's and
-- after_transition's error objects with looping metamethods
local points = assert(src:match("\nlocal POINTS_HOOK = %[%[\n(.-)%]%]"))
local dir = S.dir({ ["points.lua"] = points })
local log = S.log()
local h = assert(hooks.new({ dir = dir, log = log, limits = { memory_kb = BUDGET_KB } }))
S.rmdir(dir)
local view = { id = "sb-1", metadata = { attack = "points" }, principal = "team-a" }
local out, err = h:on_proxy_request(CTX, view, { port = 9999, method = "GET", path = "/atk" })
assert(out == nil and err.message:find("^Hook 'atk_points' failed in on_proxy_request: a table returned by a hook "
    .. "has a metatable"), tostring(err and err.message))
out, err = h:before_delete(CTX, view)
assert(out == nil and err.message == "Hook 'atk_points' failed in before_delete: the hook raised an error value of "
    .. "type table", tostring(err and err.message))
h:after_transition({ id = "sb-1", metadata = { attack = "points" }, principal = "team-a", state = "Running",
    image = { uri = "x" }, entrypoint = { "sleep" }, created_us = 1000000, expires_us = 2000000,
    transition_us = 1500000 }, "Pending", "Running")
local logged = false
for _, l in ipairs(log.lines) do
    logged = logged or (l.msg == "hook failed" and l.fields.point == "after_transition"
        and l.fields.error == "the hook raised an error value of type table")
end
assert(logged, "the after_transition failure was logged")

require("core.log").info("hooks_hostile scenario passed", { attacks = tostring(#ATTACKS) })
core.stop(0)
