-- Scenario: core.fsync (core/fsync.c), the flush thread, and the store on it (lua/sandbox/store.lua durable).
local core = require("core")
local fsync = require("core.fsync")
local spawn = require("core.spawn")
local timer = require("core.timer")

local dir = os.tmpname()
os.remove(dir)
assert(core.mkdirs(dir, tonumber("700", 8)))
local path = dir .. "/file"
local fh = assert(io.open(path, "w"))

-- a file that is not there: nil, err naming it
local none, nerr = fsync.open(dir .. "/missing")
assert(none == nil and tostring(nerr):find("missing", 1, true), tostring(nerr))

local f = assert(fsync.open(path))
assert(f:done() == 0)

-- one write, one request, one wait from this task: true, and the generation is on disk
fh:write("one\n")
fh:flush()
local g = f:request()
assert(g == 1, "first generation " .. tostring(g))
assert(f:wait(g) == true)
assert(f:done() >= g)
-- a generation already on disk: at once
assert(f:wait(g) == true)

-- many tasks writing and waiting at the same time: every one is woken, and the flushes are shared (fewer
-- flushes than waiters is what group commit means; at least the last generation is on disk)
local woken, want = 0, 50
for i = 1, want do
    spawn(function()
        fh:write(string.format("line %d\n", i))
        fh:flush()
        local mine = f:request()
        assert(f:wait(mine) == true)
        assert(f:done() >= mine)
        woken = woken + 1
    end)
end
local t0 = core.monotonic()
while woken < want and core.monotonic() - t0 < 10 do
    timer.sleep(0.005)
end
assert(woken == want, "waiters woken: " .. woken)

-- the loop keeps running while a flush is under way: a timer fires during a wait
local ticks = 0
spawn(function()
    for _ = 1, 3 do
        ticks = ticks + 1
        timer.sleep(0)
    end
end)
assert(f:wait(f:request()) == true)
timer.sleep(0.01)
assert(ticks == 3)

-- closing wakes nobody wrongly and later use is an error
f:close()
assert(not pcall(f.request, f))
f:close() -- twice: harmless

-- the store on it: a write asks for a flush at once, durable() waits for it (and is free afterwards)
local store = assert(require("sandbox.store").open(dir .. "/db.sqlite", { fsync = fsync }))
assert(store.flusher, "the store runs its log flushes on the thread")
local model = require("sandbox.model")
local rec = { id = "a", created_us = 1, image_uri = "x", entrypoint = { "sh" }, metadata = {}, extensions = {},
    access_token = "t" }
model.apply_status(rec, model.status("Running", "CONTAINER_RUNNING", "", 1))
local waits = require("common.metrics").default:family("opensandbox_store_flush_wait_seconds"):get()
local waited = waits.count
assert(store:put(rec))
assert(store.write_gen > 0)
assert(store:durable() == true)
assert(store.durable_gen == store.write_gen)
assert(waits.count == waited + 1 and waits.sum > 0, "the wait for the flush is counted")
assert(store:durable() == true)
assert(waits.count == waited + 1, "nothing to wait for: not counted")
assert(store:get("a").state == "Running")
-- a reopened store finds what was written
store:close()
store = assert(require("sandbox.store").open(dir .. "/db.sqlite", { fsync = fsync }))
assert(store:get("a").state == "Running")
store:close()

fh:close()
os.execute("rm -rf '" .. dir .. "'")
require("core.log").info("fsync scenario passed")
core.stop(0)
