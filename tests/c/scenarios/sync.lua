-- Scenario: core.sync waiters and the lock/event built on them (lua/common/sync.lua).
local core = require("core")
local csync = require("core.sync")
local sync = require("common.sync")
local spawn = require("core.spawn")
local timer = require("core.timer")

-- a waiter returns what wake passed, or nil, "timeout"
local w = csync.waiter()
assert(not w:wake(1), "nobody waits yet")
spawn(function() timer.sleep(0.01); assert(w:wake("a", 2)) end)
local a, b = w:wait(5)
assert(a == "a" and b == 2)
local x, err = csync.waiter():wait(0.02)
assert(x == nil and err == "timeout")

-- the lock is FIFO and exclusive across yields
local lock = sync.lock()
local log, inside = {}, 0
for i = 1, 5 do
    spawn(function()
        assert(lock:acquire(5))
        inside = inside + 1
        assert(inside == 1, "two holders")
        timer.sleep(0.005)
        log[#log + 1] = i
        inside = inside - 1
        lock:release()
    end)
end
timer.sleep(0.2)
assert(table.concat(log, ",") == "1,2,3,4,5", table.concat(log, ","))

-- acquire times out while another holds it, and the queue recovers
assert(lock:acquire(1))
local r, e = (function()
    local res, er
    local done = false
    spawn(function() res, er = lock:acquire(0.02); done = true end)
    while not done do timer.sleep(0.005) end
    return res, er
end)()
assert(r == nil and e == "timeout")
lock:release()
assert(not lock:busy())
assert(lock:with(1, function() return true end))

-- an event wakes every waiter, and later waits return at once
local ev = sync.event()
local got = 0
for _ = 1, 3 do
    spawn(function() local v = ev:wait(5); if v == "ready" then got = got + 1 end end)
end
timer.sleep(0.01)
ev:set("ready")
timer.sleep(0.01)
assert(got == 3, "event waiters woken: " .. got)
assert(ev:wait(0) == "ready")
assert(select(2, sync.event():wait(0.01)) == "timeout")

require("core.log").info("sync scenario passed")
core.stop(0)
