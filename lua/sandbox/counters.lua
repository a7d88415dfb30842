-- What the live sandboxes use, kept as running totals (for quotas: opensandbox.usage in lua/hooks/env.lua).
--
-- The lifecycle service tells the counters every change of its records (sandbox/state.lua, set_record), so a
-- question is answered from a total instead of a scan of every record: a create through the quota hook
-- costs the same with 10 or 10,000 live sandboxes.
--
--   local counters = require("sandbox.counters")
--   local c = counters.new()
--   c:update(id, rec)       -- rec is the new committed record, nil when the record is gone
--   c:usage{ principal = p, metadata = { k = v, ... } }  -> { sandboxes = n, nano_cpus = n, memory = n }
--
-- Totals are kept for every principal, every metadata key=value, and every principal with one key=value
-- (what the shipped quota hook asks). A filter with several metadata entries is answered from the members of
-- the smallest matching bucket. A sandbox counts while it is live (Pending, Running, Paused, Stopping), with
-- the cpu and memory limits of its record (0 when it has none). Each tracked sandbox keeps a snapshot of what
-- it added, so an update takes away exactly that, whatever happened to the old record table meanwhile.
-- Empty buckets are removed, so two counters over the same records are equal tables (see same()).
local model = require("sandbox.model")

local M = {}

M.LIVE = { Pending = true, Running = true, Paused = true, Stopping = true }

local Counters = {}
Counters.__index = Counters

function M.new()
    return setmetatable({
        entries = {}, -- id -> { principal, metadata (copy), nano, memory }
        total = { n = 0, nano = 0, memory = 0, ids = {} },
        by_principal = {}, -- principal -> bucket
        by_metadata = {}, -- key -> value -> bucket
        by_both = {}, -- principal -> key -> value -> bucket (totals only)
    }, Counters)
end

-- Principals are any JSON value (opaque to the service); only plain ones key a table of totals.
local function keyable(p)
    local t = type(p)
    return t == "string" or t == "number" or t == "boolean"
end

local function bucket(parent, key, with_ids)
    local b = parent[key]
    if not b then
        b = { n = 0, nano = 0, memory = 0, ids = with_ids and {} or nil }
        parent[key] = b
    end
    return b
end

local function sub_table(parent, key)
    local t = parent[key]
    if not t then
        t = {}
        parent[key] = t
    end
    return t
end

-- Adds (sign 1) or takes away (sign -1) one entry in bucket b; returns whether b is now empty.
local function apply(b, id, e, sign)
    b.n = b.n + sign
    b.nano = b.nano + sign * e.nano
    b.memory = b.memory + sign * e.memory
    if b.ids then
        b.ids[id] = sign > 0 or nil
    end
    return b.n == 0
end

function Counters:change(id, e, sign)
    apply(self.total, id, e, sign)
    local p = e.principal
    local pk = keyable(p)
    if pk and apply(bucket(self.by_principal, p, true), id, e, sign) then
        self.by_principal[p] = nil
    end
    for k, v in pairs(e.metadata) do
        local values = sub_table(self.by_metadata, k)
        if apply(bucket(values, v, true), id, e, sign) then
            values[v] = nil
            if next(values) == nil then
                self.by_metadata[k] = nil
            end
        end
        if pk then
            local keys = sub_table(self.by_both, p)
            local vals = sub_table(keys, k)
            if apply(bucket(vals, v, false), id, e, sign) then
                vals[v] = nil
                if next(vals) == nil then
                    keys[k] = nil
                    if next(keys) == nil then
                        self.by_both[p] = nil
                    end
                end
            end
        end
    end
end

local function entry_of(rec)
    local md = {}
    for k, v in pairs(rec.metadata or {}) do
        if type(k) == "string" and type(v) == "string" then
            md[k] = v
        end
    end
    return {
        principal = rec.principal,
        metadata = md,
        nano = math.tointeger(rec.nano_cpus) or 0,
        memory = math.tointeger(rec.memory) or 0,
    }
end

--- The record of sandbox `id` is now `rec` (nil: gone). Cheap when nothing that counts changed.
function Counters:update(id, rec)
    local old = self.entries[id]
    local live = rec ~= nil and M.LIVE[rec.state] == true
    if old and live then
        local nmd = rec.metadata or {}
        local same = old.principal == rec.principal and old.nano == (math.tointeger(rec.nano_cpus) or 0)
            and old.memory == (math.tointeger(rec.memory) or 0)
        if same then
            for k, v in pairs(old.metadata) do
                if nmd[k] ~= v then
                    same = false
                    break
                end
            end
        end
        if same then
            for k, v in pairs(nmd) do
                if old.metadata[k] ~= v and type(v) == "string" then
                    same = false
                    break
                end
            end
        end
        if same then
            return
        end
    end
    if old then
        self:change(id, old, -1)
        self.entries[id] = nil
    end
    if live then
        local e = entry_of(rec)
        self.entries[id] = e
        self:change(id, e, 1)
    end
end

--- Counters built from scratch over `records` (id -> record).
function M.of(records)
    local c = M.new()
    for id, rec in pairs(records) do
        c:update(id, rec)
    end
    return c
end

local ZERO = { n = 0, nano = 0, memory = 0 }

local function result(b)
    b = b or ZERO
    return { sandboxes = b.n, nano_cpus = b.nano, memory = b.memory }
end

local function matches(e, p, md)
    if p ~= nil and e.principal ~= p then
        return false
    end
    for k, v in pairs(md) do
        if e.metadata[k] ~= v then
            return false
        end
    end
    return true
end

--- { sandboxes, nano_cpus, memory } of the live sandboxes matching filter { principal =, metadata = {k=v} }
--- (both optional; all given must match).
function Counters:usage(filter)
    local p = filter and filter.principal
    local md = filter and filter.metadata or {}
    local k1, v1 = next(md)
    local several = k1 ~= nil and next(md, k1) ~= nil
    if not several and (p == nil or keyable(p)) then
        if p == nil and k1 == nil then
            return result(self.total)
        elseif k1 == nil then
            return result(self.by_principal[p])
        elseif p == nil then
            local values = self.by_metadata[k1]
            return result(values and values[v1])
        end
        local keys = self.by_both[p]
        local vals = keys and keys[k1]
        return result(vals and vals[v1])
    end
    -- several metadata entries (or a principal that is a table): the members of the smallest bucket
    local best = self.total
    if keyable(p) then
        best = self.by_principal[p] or ZERO
    end
    for k, v in pairs(md) do
        local values = self.by_metadata[k]
        local b = values and values[v] or ZERO
        if b.n < best.n then
            best = b
        end
    end
    local out = { n = 0, nano = 0, memory = 0 }
    for id in pairs(best.ids or {}) do
        local e = self.entries[id]
        if matches(e, p, md) then
            apply(out, id, e, 1)
        end
    end
    return result(out)
end

local same = model.same_value -- tables compared by value, recursively

--- Whether two counters hold the same totals and members (a recount check for specs and diagnostics).
function M.same(a, b)
    return same(a.entries, b.entries) and same(a.total, b.total) and same(a.by_principal, b.by_principal)
        and same(a.by_metadata, b.by_metadata) and same(a.by_both, b.by_both)
end

return M
