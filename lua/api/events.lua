-- GET /events: the lifecycle event stream (Server-Sent Events; README "Events"). The events come from the
-- hub (sandbox/events.lua); this file is one stream's loop: filter, resume, heartbeat, and the drop of a
-- client that does not read.
--
--   query  sandboxId=<id>        only that sandbox's events (and its snapshots')
--          metadata=k=v&k2=v2    only sandboxes whose metadata has those pairs (the list's filter syntax)
--   header Last-Event-ID: <n>    resume: the ring's events after n first; n older than the ring -> `reset`
--
-- The principal sees what GET /sandboxes shows it (a tenant only its own sandboxes and snapshots).
--
-- Backpressure: every frame is written without parking the task (s:write(frame, true)), so the loop always
-- comes back to its waiter; each time it wakes, before writing more, it reads s:pending(), the bytes the
-- client has not taken yet. Past `max_pending_bytes` the client is dropped: one `overflow` event, then the
-- body ends. So a stream costs at most max_pending_bytes plus one batch (at most the ring), however slow its
-- reader, a burst such as a replay is not a drop by itself, and no writer ever waits on a client.
local errors = require("common.errors")
local hub_mod = require("sandbox.events")
local metrics = require("common.metrics")
local middleware = require("api.middleware")

local M = {}

M.DEFAULTS = { heartbeat_seconds = 15, max_pending_bytes = 1048576 }

local registry = metrics.default
local CLIENTS = registry:gauge("opensandbox_event_clients", "Clients connected to GET /events now."):get()
local CONNECTS = registry:counter("opensandbox_event_clients_total", "Streams opened on GET /events."):get()
local DROPPED = registry:counter("opensandbox_event_clients_dropped_total",
    "GET /events clients dropped for not reading (pending output past events.max_pending_bytes)."):get()
local PUBLISHED = registry:counter("opensandbox_events_published_total",
    "Events published to GET /events, by kind.", { "kind" })
M.metrics = { clients = CLIENTS, connects = CONNECTS, dropped = DROPPED, published = PUBLISHED }

local function last(values)
    return values and values[#values]
end

--- The stream's filter from the parsed query and the Last-Event-ID header value, or nil, err (400).
--- Returns { sandbox_id =, metadata = }, last_id (integer or nil).
function M.parse(query, last_event_id, validate)
    validate = validate or require("sandbox.validate")
    local filter = {}
    local sid = last(query.sandboxId)
    if sid ~= nil then
        if sid == "" then
            return nil, errors.invalid("sandboxId must not be empty.")
        end
        filter.sandbox_id = sid
    end
    local lf, err = validate.list_query({ metadata = query.metadata })
    if not lf then
        return nil, err
    end
    filter.metadata = lf.metadata
    local last_id
    if last_event_id ~= nil then
        local s = require("common.strings").trim(last_event_id)
        if s ~= "" then -- an empty Last-Event-ID is "none" (an SSE client sends what it last saw)
            if not s:find("^%d+$") or #s > 15 then
                return nil, errors.invalid("Last-Event-ID must be an event id (a non-negative integer).")
            end
            last_id = math.tointeger(tonumber(s))
        end
    end
    return filter, last_id
end

--- Serves one stream on `s` (an http.stream: write(data, nowait), pending(), close()) until the client goes,
--- is dropped, or the hub closes. `who` = {principal, admin}; opts = { heartbeat, max_pending }. Returns why
--- it ended: "closed", "overflow" or "shutdown". Yields (waits for events).
function M.serve(hub, s, who, filter, last_id, opts)
    local sub = hub:subscribe()
    CLIENTS:inc()
    CONNECTS:inc()
    local visible, matches = hub_mod.visible, hub_mod.matches
    local cursor = hub.seq
    local now = hub.now
    local why
    local last_write = now()
    local function put(text)
        if not s:write(text, true) then
            why = "closed"
            return false
        end
        last_write = now()
        return true
    end
    put("retry: 3000\n\n")
    if last_id then
        if hub:lost(last_id) then
            put(hub_mod.frame(nil, hub_mod.KIND.RESET, {
                lastEventId = last_id,
                oldestEventId = hub:first(),
                message = "Events after the given Last-Event-ID are no longer buffered; some were lost.",
            }))
        end
        cursor = math.min(last_id, hub.seq)
    end
    while not why do
        -- what the client left unread since the last round decides: a burst (a replay) is never dropped by
        -- itself, only a client that does not take it
        local pending = s:pending()
        if not pending then
            why = "closed"
        elseif pending > opts.max_pending then
            s:write(hub_mod.frame(nil, hub_mod.KIND.OVERFLOW, {
                lastEventId = cursor,
                pendingBytes = pending,
                message = "The client did not read fast enough; reconnect with Last-Event-ID to resume.",
            }), true)
            DROPPED:inc()
            why = "overflow"
        else
            for e in hub:after(cursor) do
                cursor = e.seq
                if visible(e, who) and matches(e, filter) and not put(e.frame) then
                    break
                end
            end
            if hub.closed then
                why = why or "shutdown"
            elseif not why then
                -- a ping when nothing was written for a heartbeat (events this client does not see do not
                -- count)
                sub.waiter:wait(math.max(0.001, opts.heartbeat - (now() - last_write)))
                if now() - last_write >= opts.heartbeat and not hub.closed then
                    put(": ping\n\n")
                end
            end
        end
    end
    hub:unsubscribe(sub)
    CLIENTS:dec()
    s:close()
    return why
end

--- The handlers, bound to deps = { events = hub, http = core.http (stream), config = cfg }.
function M.new(deps)
    local h = {}
    local cfg = deps.config and deps.config.events or {}
    local opts = {
        heartbeat = cfg.heartbeat_seconds or M.DEFAULTS.heartbeat_seconds,
        max_pending = cfg.max_pending_bytes or M.DEFAULTS.max_pending_bytes,
    }

    function h.stream(ctx)
        local hub = deps.events
        if not hub or not deps.http then
            return nil, errors.new(404, "GENERAL::NOT_FOUND", "Not Found") -- (a server built without the hub)
        end
        local req = ctx.req
        local filter, last_id = M.parse(ctx.query, req:header("Last-Event-ID"), deps.validate)
        if not filter then
            return nil, last_id
        end
        local headers = middleware.cors_headers(req, {
            ["Content-Type"] = "text/event-stream",
            ["Cache-Control"] = "no-cache",
            ["X-Accel-Buffering"] = "no",
            ["X-Request-ID"] = ctx.request_id,
        })
        local s = deps.http.stream(req, 200, headers)
        M.serve(hub, s, { principal = ctx.principal, admin = ctx.admin }, filter, last_id, opts)
        return { status = 200 } -- ignored: the stream has answered
    end
    return h
end

--- Counts a published event (called by the hub's owner; kept here with the other event metrics).
function M.count(kind)
    PUBLISHED:labels(kind):inc()
end

return M
