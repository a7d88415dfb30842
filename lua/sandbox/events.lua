-- The event hub behind GET /events (Server-Sent Events, API.md "Events"): every state change the lifecycle
-- service commits becomes one event with a sequence number, kept in a ring of the last `buffer` events and
-- handed to the connected streams.
--
--   local hub = require("sandbox.events").new{ buffer = 1024, now = core.now, waiter = sync.waiter }
--   hub:sandbox(old_rec, new_rec)        -- from state.lua's set_record: created, transition, deleted
--   hub:snapshot(old_snap, new_snap, md) -- from snapshots.lua: snapshot transitions and deletes
--   local sub = hub:subscribe()          -- sub.waiter is woken at every publish; hub:unsubscribe(sub)
--   for e in hub:after(seq) do ... end   -- the ring's events after `seq`, oldest first
--
-- An event is { seq, kind, principal, sandbox_id, metadata, frame }: `frame` is its SSE text, encoded once
-- ("id: <seq>\nevent: <kind>\ndata: <json>\n\n") and written as it is to every stream that may see it;
-- principal, sandbox_id and metadata are what the streams filter on (visible(), matches()).
--
-- Never yields: publishing is a few table writes and one JSON encode, in the committing task.
local json = require("common.json")
local timefmt = require("common.timefmt")

local M = {}

M.DEFAULT_BUFFER = 1024

M.KIND = {
    TRANSITION = "sandbox.transition", -- a sandbox changed state (from = null: it was created)
    DELETED = "sandbox.deleted", -- a sandbox is gone (from = its last state)
    SNAPSHOT = "snapshot.transition", -- a snapshot changed state (from = null: it was accepted)
    SNAPSHOT_DELETED = "snapshot.deleted", -- a snapshot is gone
    POOL = "pool.changed", -- a warm pool was created, updated (capacity) or deleted (sandbox/pools.lua)
    RESET = "reset", -- first event of a resume whose Last-Event-ID is older than the window
    OVERFLOW = "overflow", -- last event of a stream dropped for not reading fast enough
}

local Hub = {}
Hub.__index = Hub

--- deps = { buffer = ring size (default 1024), now = fn -> seconds (float), waiter = fn -> a core.sync
--- waiter (wait(timeout), wake()), count = fn(kind) or nil (called per event: metrics) }.
function M.new(deps)
    deps = deps or {}
    local self = setmetatable({}, Hub)
    self.size = math.max(1, math.tointeger(deps.buffer) or M.DEFAULT_BUFFER)
    self.now = deps.now or os.time
    self.new_waiter = deps.waiter
    self.count = deps.count -- fn(kind) per published event (metrics), or nil
    self.ring = {} -- seq % size -> event
    self.seq = 0 -- the last event's sequence number (0: none yet)
    self.subs = {} -- subscription -> true
    self.nsubs = 0
    self.closed = false
    return self
end

--- The oldest sequence number the ring still holds (seq + 1 when it is empty).
function Hub:first()
    return math.max(1, self.seq - self.size + 1)
end

--- Whether a resume from `last` (the client's Last-Event-ID) misses events the ring no longer holds, or
--- names an event this server never sent (an id from before a restart: the sequence starts again at 1).
function Hub:lost(last)
    return last < self:first() - 1 or last > self.seq
end

--- An iterator over the ring's events with seq > `last`, oldest first. Events published while iterating
--- are included (the iterator reads the ring at each step).
function Hub:after(last)
    local s = math.max(last, self:first() - 1)
    return function()
        if s >= self.seq then
            return nil
        end
        s = math.max(s + 1, self:first())
        return self.ring[s % self.size]
    end
end

--- The SSE text of one event. `data` is a table (JSON-encoded on one line).
function M.frame(seq, kind, data)
    local body = json.encode(data)
    if seq then
        return string.format("id: %d\nevent: %s\ndata: %s\n\n", seq, kind, body)
    end
    return string.format("event: %s\ndata: %s\n\n", kind, body)
end

--- Appends an event and wakes every stream. `data` is its JSON object (without `seq`); `f` = {principal,
--- sandbox_id, metadata} are the filtering facts. Returns the event.
function Hub:publish(kind, data, f)
    self.seq = self.seq + 1
    local seq = self.seq
    local e = {
        seq = seq,
        kind = kind,
        principal = f.principal,
        sandbox_id = f.sandbox_id,
        metadata = f.metadata,
        frame = M.frame(seq, kind, data),
    }
    self.ring[seq % self.size] = e
    if self.count then
        self.count(kind)
    end
    for sub in pairs(self.subs) do
        sub.waiter:wake()
    end
    return e
end

local function time_text(self)
    return timefmt.format(math.floor(self.now() * 1000000))
end

local function md_or_null(md)
    if md and next(md) ~= nil then
        return md
    end
    return json.null
end

--- A sandbox record changed from `old` to `new` (either may be nil). Publishes `sandbox.transition` when the
--- state changed (also on creation), `sandbox.deleted` when the record went.
function Hub:sandbox(old, new)
    if new then
        local from = old and old.state
        if from == new.state then
            return
        end
        local md = new.metadata
        self:publish(M.KIND.TRANSITION, {
            sandboxId = new.id,
            from = from or json.null,
            to = new.state,
            reason = new.reason or json.null,
            message = new.message or json.null,
            time = time_text(self),
            metadata = md_or_null(md),
        }, { principal = new.principal, sandbox_id = new.id, metadata = md })
    elseif old then
        local md = old.metadata
        self:publish(M.KIND.DELETED, {
            sandboxId = old.id,
            from = old.state,
            to = json.null,
            reason = json.null,
            message = json.null,
            time = time_text(self),
            metadata = md_or_null(md),
        }, { principal = old.principal, sandbox_id = old.id, metadata = md })
    end
end

--- A snapshot record changed from `old` to `new` (either may be nil). `md` is the metadata of its source
--- sandbox when that still exists (what a metadata filter matches), else nil.
function Hub:snapshot(old, new, md)
    local snap = new or old
    if not snap or (new and old and old.state == new.state) then
        return
    end
    self:publish(new and M.KIND.SNAPSHOT or M.KIND.SNAPSHOT_DELETED, {
        snapshotId = snap.id,
        sandboxId = snap.sandbox_id or json.null,
        from = old and old.state or json.null,
        to = new and new.state or json.null,
        reason = new and new.reason or json.null,
        message = new and new.message or json.null,
        time = time_text(self),
        metadata = md_or_null(md),
    }, { principal = snap.principal, sandbox_id = snap.sandbox_id, metadata = md })
end

--- A warm pool was created, updated or deleted (`what`); `view` is its Pool object then.
function Hub:pool(pool, what, view)
    self:publish(M.KIND.POOL, {
        pool = pool.name,
        change = what,
        capacitySpec = view.capacitySpec,
        status = view.status,
        time = time_text(self),
    }, { principal = pool.principal })
end

--- Whether the caller `ctx` ({principal, admin}) may see event `e`: the rule of GET /sandboxes (views.lua:
--- a non-admin principal sees only what it created).
function M.visible(e, ctx)
    if ctx and ctx.admin == false then
        return e.principal == ctx.principal
    end
    return true
end

--- Whether event `e` passes a stream's filter { sandbox_id = s|nil, metadata = {k=v}|nil } (metadata: AND,
--- exact, as the list's metadata filter).
function M.matches(e, filter)
    if filter.sandbox_id and e.sandbox_id ~= filter.sandbox_id then
        return false
    end
    local want = filter.metadata
    if want and next(want) ~= nil then
        local md = e.metadata
        if not md then
            return false
        end
        for k, v in pairs(want) do
            if md[k] ~= v then
                return false
            end
        end
    end
    return true
end

--- A new subscription: { waiter } woken at every publish (and at close_all).
function Hub:subscribe()
    local sub = { waiter = self.new_waiter() }
    self.subs[sub] = true
    self.nsubs = self.nsubs + 1
    return sub
end

function Hub:unsubscribe(sub)
    if self.subs[sub] then
        self.subs[sub] = nil
        self.nsubs = self.nsubs - 1
    end
end

--- The number of connected streams.
function Hub:clients()
    return self.nsubs
end

--- Ends every stream (server shutdown): they see `closed` and end their bodies.
function Hub:close_all()
    self.closed = true
    for sub in pairs(self.subs) do
        sub.waiter:wake()
    end
end

return M
