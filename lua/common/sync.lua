-- Task synchronisation built on core.sync waiters: a FIFO lock and a one-shot event.
--
-- lock:acquire(timeout) yields until the lock is free (FIFO: first come, first served), or returns
-- nil, "timeout". lock:release() hands the lock to the next waiter directly, so nobody can overtake.
-- event:wait(timeout) yields until event:set(...) was called (at once when it already was); every waiter
-- gets the values given to set.
local csync = require("core.sync")

local M = {}

local Lock = {}
Lock.__index = Lock

function M.lock()
    return setmetatable({ held = false, queue = {}, head = 1, tail = 0 }, Lock)
end

function Lock:acquire(timeout)
    if not self.held then
        self.held = true
        return true
    end
    local w = csync.waiter()
    self.tail = self.tail + 1
    self.queue[self.tail] = w
    local ok, err = w:wait(timeout)
    if ok then
        return true
    end
    -- timed out: leave the queue (the slot is skipped by release)
    for i = self.head, self.tail do
        if self.queue[i] == w then
            self.queue[i] = false
        end
    end
    return nil, err
end

function Lock:release()
    while self.head <= self.tail do
        local w = self.queue[self.head]
        self.queue[self.head] = nil
        self.head = self.head + 1
        if w and w:wake(true) then
            return -- ownership passes to the woken task; held stays true
        end
    end
    self.held = false
end

function Lock:busy()
    return self.held
end

--- Runs fn(...) holding the lock; returns fn's results, or nil, err when the lock was not acquired in time.
function Lock:with(timeout, fn, ...)
    local ok, err = self:acquire(timeout)
    if not ok then
        return nil, err
    end
    local res = table.pack(pcall(fn, ...))
    self:release()
    if not res[1] then
        error(res[2], 0)
    end
    return table.unpack(res, 2, res.n)
end

local Event = {}
Event.__index = Event

function M.event()
    return setmetatable({ done = false, values = nil, waiters = {} }, Event)
end

function Event:set(...)
    if self.done then
        return
    end
    self.done = true
    self.values = table.pack(...)
    local ws = self.waiters
    self.waiters = {}
    for _, w in ipairs(ws) do
        w:wake(table.unpack(self.values, 1, self.values.n))
    end
end

function Event:wait(timeout)
    if self.done then
        return table.unpack(self.values, 1, self.values.n)
    end
    local w = csync.waiter()
    self.waiters[#self.waiters + 1] = w
    local r = table.pack(w:wait(timeout))
    if r[1] == nil and r[2] == "timeout" and not self.done then
        for i, x in ipairs(self.waiters) do
            if x == w then
                table.remove(self.waiters, i)
                break
            end
        end
    end
    return table.unpack(r, 1, r.n)
end

return M
