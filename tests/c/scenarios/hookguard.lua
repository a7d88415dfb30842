-- Scenario: core.hookguard (core/hookguard.c) in the real engine: the counting allocator refuses growth past
-- an armed budget (also inside one C call) and lets the server allocate again once disarmed; the deadline;
-- the string guards (rep, the pattern estimate) through the string metatable and the wrapped table
-- functions; a yield through hg.pcall with the arming suspended around it; nested calls; results and errors.
local core = require("core")
local hg = require("core.hookguard")
local timer = require("core.timer")

hg.install()
hg.install() -- idempotent
assert(not hg.armed())

-- a plain call: results come back after ok, tripped
local ok, tripped, a, b = hg.pcall(1 << 20, 1, function(x, y)
    return x + y, "two"
end, 1, 2)
assert(ok == true and tripped == false and a == 3 and b == "two")
assert(not hg.armed())

-- an error: the error object comes back as it was raised
local err = {}
ok, tripped, a = hg.pcall(1 << 20, 1, function()
    error(err)
end)
assert(ok == false and tripped == false and a == err)

-- memory: one C call that would allocate 256 MB under a 4 MB budget is refused, and the budget is reported
ok, tripped = hg.pcall(4 << 20, 5, function()
    return table.concat({ ("x"):rep(1 << 20), ("y"):rep(1 << 20) }):rep(128)
end)
assert(ok == false and tripped == "memory", tostring(tripped))
-- a hook that catches the memory error still fails on the budget
ok, tripped = hg.pcall(4 << 20, 5, function()
    pcall(function()
        local t = {}
        for i = 1, 64 do
            t[i] = ("z"):rep(1 << 20) .. i
        end
        return #t
    end)
    return "swallowed"
end)
assert(ok == false and tripped == "memory")
-- disarmed, the server allocates as before
local big = ("q"):rep(32 << 20)
assert(#big == 32 << 20)
big = nil -- luacheck: ignore 311
collectgarbage()

-- the guards while armed: rep count and size, patterns, sort and move sizes, and the deadline
local function fails(fn, pattern)
    local pok, ptripped, perr = hg.pcall(64 << 20, 5, fn)
    assert(pok == false, "expected a failure matching " .. pattern)
    assert(not ptripped, tostring(ptripped))
    assert(tostring(perr):find(pattern), tostring(perr))
end
fails(function()
    return (""):rep(1 << 53)
end, "repetitions are more than the hook limit")
fails(function()
    return ("x"):rep(1 << 31)
end, "string.rep: result of 2147483648 bytes")
fails(function()
    return ("a"):rep(3000):find("a*a*a*a*a*a*b")
end, "string.find: pattern on a subject of 3000 bytes")
fails(function()
    return string.gsub(("a"):rep(3000), "a-a-b", "")
end, "string.gsub: pattern")
fails(function()
    for _ in ("a"):rep(10000):gmatch("^a*a*b") do -- '^' is no anchor for gmatch
    end
end, "string.gmatch: pattern")
local tsort = hg.wrap(table.sort, "sort")
local tmove = hg.wrap(table.move, "move")
fails(function()
    local t = {}
    for i = 1, hg.MAX_SORT + 1 do
        t[i] = i
    end
    tsort(t)
end, "table.sort: 262145 elements")
fails(function()
    tmove({}, 1, 1 << 40, 1, {})
end, "table.move: more than")
-- what stays allowed: anchored, trailing quantifiers, plain finds, modest sizes
ok = hg.pcall(64 << 20, 5, function()
    local s = ("a"):rep(100000)
    assert(s:find("^a+$"))
    assert(s:find("b", 1, true) == nil)
    assert(("sandbox-1"):match("^sandbox%-(%d+)$") == "1")
    assert(("x{id}y"):gsub("{([%w_.%-]+)}", "1") == "x1y")
    assert(#(""):rep(100) == 0)
    local t = { 3, 1, 2 }
    tsort(t)
    assert(t[1] == 1)
end)
assert(ok == true)
-- the estimate itself
assert(hg.pattern_cost("abc", 10) == 10)
assert(hg.pattern_cost("^a+$", 100) < 1000)
assert(hg.pattern_cost("a*b", 100) > 10000)
assert(hg.pattern_cost("^a*b", 100, true) > hg.pattern_cost("^a*b", 100))
-- the deadline: cheap-looking C calls in a loop end on time
local t0 = core.monotonic()
ok, tripped = hg.pcall(64 << 20, 0.2, function()
    local s = ("x"):rep(1 << 22)
    for _ = 1, 1e9 do
        s:find("y", 1, true)
    end
end)
assert(ok == false and tripped == "time", tostring(tripped))
assert(core.monotonic() - t0 < 5, "the deadline held") -- 0.2 s; generous for valgrind
-- nothing armed: the guards pass everything through
assert(#("ab"):rep(1 << 24) == 1 << 25)

-- nested calls run inside the outer arming and do not disarm it
ok = hg.pcall(4 << 20, 5, function()
    local iok = hg.pcall(1 << 30, 5, function()
        return 1
    end)
    assert(iok and hg.armed(), "still armed after a nested call")
end)
assert(ok and not hg.armed())

-- a yield through hg.pcall: suspended around the wait, another task allocates freely meanwhile
local other_done = false
require("core.spawn")(function()
    local s = ("o"):rep(16 << 20) -- 16 MB while the first task's 1 MB budget is suspended
    other_done = #s == 16 << 20
end)
ok, tripped, a = hg.pcall(1 << 20, 5, function()
    local saved = hg.suspend()
    assert(not hg.armed())
    timer.sleep(0.05)
    hg.resume(saved)
    assert(hg.armed())
    return "resumed"
end)
assert(ok == true and tripped == false and a == "resumed", tostring(a))
assert(other_done, "the other task ran while this one waited")
assert(not hg.armed())

-- raw copies: plain data only, the json.array tag kept, nothing of a metamethod run
local array_mt, null = { __name = "json.array" }, require("cjson").null
local src = { a = "x", n = 1, t = setmetatable({}, array_mt), z = null, deep = { { { 1 } } } }
local copy = hg.copy(src, array_mt, null)
assert(copy ~= src and copy.a == "x" and copy.deep[1][1][1] == 1 and copy.z == null)
assert(getmetatable(copy.t) == array_mt)
local ran = false
local evil = setmetatable({}, { __index = function()
    ran = true
end, __pairs = function()
    ran = true
end, __metatable = false })
local cok, cerr = pcall(hg.copy, { e = evil }, array_mt, null)
assert(not cok and cerr:find("has a metatable") and not ran, tostring(cerr))
cok, cerr = pcall(hg.copy, { f = print }, array_mt, null)
assert(not cok and cerr == "a hook may return only nil, booleans, numbers, strings and tables (got a function)")
assert(hg.copy({ f = print }, array_mt, null, 1).f == print)
local cyc = {}
cyc.c = cyc
cok, cerr = pcall(hg.copy, cyc, array_mt, null)
assert(not cok and cerr == "a value returned by a hook is nested more than 32 levels deep", tostring(cerr))
cok, cerr = pcall(hg.copy, { [{}] = 1 }, array_mt, null)
assert(not cok and cerr == "a table returned by a hook has a key of type table", tostring(cerr))

require("core.log").info("hookguard scenario passed")
core.stop(0)
