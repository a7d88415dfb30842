-- The Lua collector's mode, by heap size.
--
-- The server starts in generational mode (core/engine.c): nearly everything a request allocates dies young,
-- and minor collections make small requests ~10% cheaper than the incremental mode. But a generational
-- major collection runs in one go: with a large heap (thousands of sandbox records, pool members, their
-- cached views), it held the loop 15-30 ms (about 2 ms per MB, `cpu_ms` and `heap_kb` of the slow-turn
-- log during bench/pool_claim.sh), and every request and claim in flight waited for it. The incremental mode
-- does the same work in small steps between allocations.
--
-- So: generational while the heap is small, incremental once it grows past HIGH_KB, generational again
-- when it falls below LOW_KB (the gap keeps it from flapping: the switch back runs one full collection).
-- The size compared is the smallest of the last WINDOW checks: what the heap holds between collections
-- (garbage waiting for the next one makes the current count swing up to twice that in generational mode).
-- An idle server holds about 5.6 MB; with a thousand pool members and their claimed sandboxes, 6-18 MB.
--
--   local gc = require("common.gc")
--   local c = gc.new({ log = log })   -- opts.collect: collectgarbage (tests pass their own)
--   c:check()                         -- "incremental" / "generational" when it switched now, else nil
--   gc.start(c, timer)                -- c:check() every PERIOD_S seconds (core.timer)
local M = {}

M.HIGH_KB = 8 * 1024
M.LOW_KB = 4 * 1024
M.PERIOD_S = 1
M.WINDOW = 10

local C = {}
C.__index = C

function M.new(opts)
    opts = opts or {}
    return setmetatable({
        collect = opts.collect or collectgarbage,
        log = opts.log,
        high = opts.high_kb or M.HIGH_KB,
        low = opts.low_kb or M.LOW_KB,
        mode = "generational", -- (the engine's choice at start)
        window = opts.window or M.WINDOW,
        seen = {}, -- the last `window` counts, oldest first
    }, C)
end

--- Switches the mode when the heap crossed a bound. Returns the new mode when it switched, else nil.
function C:check()
    local seen = self.seen
    seen[#seen + 1] = self.collect("count")
    if #seen > self.window then
        table.remove(seen, 1)
    end
    if #seen < self.window then
        return nil
    end
    local kb = math.min(table.unpack(seen))
    local to
    if self.mode == "generational" and kb > self.high then
        to = "incremental"
    elseif self.mode == "incremental" and kb < self.low then
        to = "generational"
    end
    if not to then
        return nil
    end
    self.collect(to)
    self.mode = to
    self.seen = {} -- (the counts of the other mode say little about this one)
    if self.log then
        self.log.info("Lua collector mode changed", { mode = to, heap_kb = math.floor(kb) })
    end
    return to
end

--- Checks every PERIOD_S seconds (core.timer's `every`). Returns the timer handle (:cancel() stops it).
function M.start(c, timer)
    return timer.every(M.PERIOD_S, function()
        c:check()
    end)
end

return M
