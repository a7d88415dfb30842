-- Part of the lifecycle service (sandbox/service.lua): the diagnostics of one sandbox (upstream
-- specs/diagnostic-api.yml): GET /sandboxes/{id}/diagnostics/logs and /events, each answered with a
-- descriptor whose text is inline (`delivery = "inline"`; this server never hands out download URLs).
--
-- Scopes:
--   logs    container  the sandbox container's stdout and stderr (the runtime's diagnostic_logs)
--           all        the same (the container's output is the only log this server has of a sandbox)
--   events  lifecycle  the status changes this server saw (the record's `transitions`, kept in the store
--                      with the record: model.lua)
--           runtime    what the runtime says of the sandbox's container (the runtime's diagnostic_events:
--                      Docker's events and container state, Kubernetes Events of the pod)
--           all        both, merged by time
--
-- Bounds (config `diagnostics`): the runtime is asked for at most max_log_lines lines / max_events events
-- (the newest), and the text is cut to max_bytes keeping the newest lines. `truncated` is true only when
-- this server cut something (lines or events beyond the asked count existed, or bytes beyond max_bytes);
-- gaps of the runtime's own retention (Docker's event buffer, expired Kubernetes Events, transitions beyond
-- the record's ring) are told in `warnings` instead, as the spec asks.
--
-- Adapter contract (optional methods, lua/runtimes/README.md):
--   rt:diagnostic_logs(rec, { max_lines, max_bytes }) -> { lines = {"<text>", ...} oldest first,
--       truncated = bool, warnings = {..} | nil } or nil, err
--   rt:diagnostic_events(rec, { max_events }) -> { events = { { at_us = n | nil, text = "..." }, ... },
--       truncated = bool, warnings = {..} | nil } or nil, err
local errors = require("common.errors")
local json = require("common.json")
local model = require("sandbox.model")
local timefmt = require("common.timefmt")

local P = {}

local CONTENT_TYPE = "text/plain; charset=utf-8"

P.DIAGNOSTIC_SCOPES = {
    logs = { container = true, all = true },
    events = { lifecycle = true, runtime = true, all = true },
}
P.DIAGNOSTIC_SCOPE_LIST = {
    logs = "container, all",
    events = "lifecycle, runtime, all",
}

local DEFAULTS = { max_bytes = 262144, max_log_lines = 2000, max_events = 500 }

function P:diagnostic_limits()
    local c = self.config and self.config.diagnostics or {}
    return {
        max_bytes = c.max_bytes or DEFAULTS.max_bytes,
        max_lines = c.max_log_lines or DEFAULTS.max_log_lines,
        max_events = c.max_events or DEFAULTS.max_events,
    }
end

--- Joins `lines` (oldest first) with newlines, keeping the newest that fit in `max_bytes` (a line longer
--- than that keeps its tail). Returns the text and whether anything was cut.
function P.bounded_text(lines, max_bytes)
    local total, first = 0, #lines + 1
    for i = #lines, 1, -1 do
        local n = #lines[i] + 1
        if total + n > max_bytes then
            break
        end
        total, first = total + n, i
    end
    local cut = first > 1
    local keep = {}
    if first > #lines and #lines > 0 then
        -- not even the newest line fits: its tail does
        keep[1] = lines[#lines]:sub(-(max_bytes - 1))
        cut = true
    else
        table.move(lines, first, #lines, 1, keep)
    end
    if #keep == 0 then
        return "", cut
    end
    return table.concat(keep, "\n") .. "\n", cut
end

local function descriptor(rec, kind, scope, text, truncated, warnings)
    local out = {
        sandboxId = rec.id,
        kind = kind,
        scope = scope,
        delivery = "inline",
        contentType = CONTENT_TYPE,
        content = text,
        contentLength = #text,
        truncated = truncated == true,
    }
    if warnings and #warnings > 0 then
        out.warnings = json.array(warnings)
    end
    return out
end

local function add_all(dst, src)
    for _, w in ipairs(src or {}) do
        dst[#dst + 1] = w
    end
end

-- the runtime's optional method, or the 501 of the spec
function P:diagnostic_runtime(method)
    if type(self.runtime[method]) ~= "function" then
        return nil, errors.new(501, "DIAGNOSTICS_NOT_IMPLEMENTED", string.format(
            "The %s runtime does not provide sandbox diagnostics.", tostring(self.runtime.name)))
    end
    local ok, err = self:require_runtime()
    if not ok then
        return nil, err
    end
    return true
end

local function no_container(rec)
    return string.format("Sandbox %s has no container (state %s: %s).", rec.id, tostring(rec.state),
        tostring(rec.message))
end

--- The `logs` descriptor of sandbox `id` for `scope` (checked by the API: container or all), or nil, err.
--- Visible like GET /sandboxes/{id} (another tenant's: 404). May yield (the runtime).
function P:diagnostic_logs(id, scope, ctx)
    local rec, err = self:check_visible(id, ctx)
    if not rec then
        return nil, err
    end
    local lim = self:diagnostic_limits()
    if not rec.handle then
        return descriptor(rec, "logs", scope, "", false, { no_container(rec) })
    end
    local ok
    ok, err = self:diagnostic_runtime("diagnostic_logs")
    if not ok then
        return nil, err
    end
    local res
    res, err = self.runtime:diagnostic_logs(rec, { max_lines = lim.max_lines, max_bytes = lim.max_bytes })
    if not res then
        if type(err) == "table" and err.kind == "not_found" then
            return descriptor(rec, "logs", scope, "", false, { "The sandbox's container is gone: " ..
                tostring(err.message) })
        end
        return nil, self:runtime_error(err, "SANDBOX::DIAGNOSTICS_FAILED", "read the logs of")
    end
    local text, cut = P.bounded_text(res.lines or {}, lim.max_bytes)
    return descriptor(rec, "logs", scope, text, cut or res.truncated, res.warnings)
end

-- the record's status changes as events { at_us, text }
local function lifecycle_events(rec, warnings)
    local out = {}
    local list = rec.transitions or {}
    if #list == 0 then
        warnings[#warnings + 1] = "No status changes are recorded for this sandbox (it was restored from the "
            .. "runtime, or created before this server recorded them)."
    elseif #list >= model.MAX_TRANSITIONS then
        warnings[#warnings + 1] = string.format("Only the last %d status changes are kept.", model.MAX_TRANSITIONS)
    end
    for _, t in ipairs(list) do
        local at = t.at and math.tointeger(tonumber(t.at))
        out[#out + 1] = {
            at_us = at,
            text = string.format("lifecycle %s %s: %s", tostring(t.state), tostring(t.reason), tostring(t.message)),
        }
    end
    return out
end

local function event_lines(events)
    local lines = {}
    for i, ev in ipairs(events) do
        lines[i] = (ev.at_us and timefmt.format(ev.at_us) or "-") .. " " .. ev.text
    end
    return lines
end

-- both lists in one, ordered by time (stable: equal times keep lifecycle before runtime and their own
-- order; events without a time go last)
local function merge(a, b)
    local out = {}
    for _, list in ipairs({ a, b }) do
        for _, ev in ipairs(list) do
            out[#out + 1] = { at_us = ev.at_us, text = ev.text, seq = #out + 1 }
        end
    end
    table.sort(out, function(x, y)
        local tx, ty = x.at_us or math.maxinteger, y.at_us or math.maxinteger
        if tx ~= ty then
            return tx < ty
        end
        return x.seq < y.seq
    end)
    return out
end

--- The `events` descriptor of sandbox `id` for `scope` (lifecycle, runtime or all), or nil, err.
function P:diagnostic_events(id, scope, ctx)
    local rec, err = self:check_visible(id, ctx)
    if not rec then
        return nil, err
    end
    local lim = self:diagnostic_limits()
    local warnings, truncated = {}, false
    local life, rt = {}, {}
    if scope == "lifecycle" or scope == "all" then
        life = lifecycle_events(rec, warnings)
    end
    if scope == "runtime" or scope == "all" then
        if not rec.handle then
            warnings[#warnings + 1] = no_container(rec)
        else
            local ok
            ok, err = self:diagnostic_runtime("diagnostic_events")
            if not ok then
                return nil, err
            end
            local res
            res, err = self.runtime:diagnostic_events(rec, { max_events = lim.max_events })
            if res then
                rt = res.events or {}
                truncated = res.truncated == true
                add_all(warnings, res.warnings)
            elseif type(err) == "table" and err.kind == "not_found" then
                warnings[#warnings + 1] = "The sandbox's container is gone: " .. tostring(err.message)
            else
                return nil, self:runtime_error(err, "SANDBOX::DIAGNOSTICS_FAILED", "read the events of")
            end
        end
    end
    local text, cut = P.bounded_text(event_lines(merge(life, rt)), lim.max_bytes)
    return descriptor(rec, "events", scope, text, cut or truncated, warnings)
end

return P
