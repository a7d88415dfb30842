-- The Kubernetes runtime's diagnostics (the optional diagnostic_logs / diagnostic_events of the runtime
-- contract, lua/runtimes/README.md; the service's side is lua/sandbox/diagnostics.lua). Installed into the
-- adapter's class by kubernetes/init.lua.
--
-- Logs: the pod log API, GET /api/v1/namespaces/{ns}/pods/{pod}/log?container=sandbox&timestamps=true
-- &tailLines={max_lines + 1}&limitBytes={4 x max_bytes}: one line more than asked, so that `truncated` is
-- true only when older output exists; limitBytes bounds what the apiserver sends (it cuts the newest end,
-- which is then said in a warning and counted as a cut). Kubernetes merges stdout and stderr.
-- Events: the namespace's Events of the pod (fieldSelector involvedObject.kind=Pod,involvedObject.name=
-- {pod}), sorted by time, the newest max_events; and the pod's container state (exit code, OOMKilled,
-- restarts), which outlives the Events (the apiserver drops those after its --event-ttl, 1 h by default).
local api_mod = require("runtimes.kubernetes.api")
local mapping = require("runtimes.kubernetes.mapping")
local timefmt = require("common.timefmt")

local function ts_us(s)
    return type(s) == "string" and timefmt.parse_runtime(s) or nil
end

return function(Kube)
    --- lim = { max_lines, max_bytes } -> { lines, truncated, warnings } or nil, err.
    function Kube:diagnostic_logs(rec, lim)
        local limit = lim.max_bytes * 4
        local path = self:_path("pods", rec.handle) .. "/log" .. api_mod.query({ { "container", mapping.CONTAINER },
            { "timestamps", "true" }, { "tailLines", tostring(lim.max_lines + 1) },
            { "limitBytes", tostring(limit) } })
        local res, err = self.api:request("GET", path, { accept = "text/plain, */*" })
        if not res then
            return nil, err
        end
        if res.status == 400 then -- the container has not started (yet): nothing to read, and why
            return { lines = {}, truncated = false,
                warnings = { tostring(api_mod.http_error("GET", path, res).message) } }
        end
        if res.status ~= 200 then
            return nil, api_mod.http_error("GET", path, res)
        end
        local body = res.body or ""
        local lines, warnings, truncated = {}, nil, false
        for l in body:gmatch("([^\n]*)\n?") do
            if l ~= "" then
                lines[#lines + 1] = l
            end
        end
        if #body >= limit then
            truncated = true
            warnings = { string.format("The output after the first %d bytes of the last %d lines was cut.", limit,
                lim.max_lines + 1) }
        end
        if #lines > lim.max_lines then
            table.remove(lines, 1)
            truncated = true
        end
        return { lines = lines, truncated = truncated, warnings = warnings }
    end

    local function event_time(ev)
        local md = type(ev.metadata) == "table" and ev.metadata or {}
        return ts_us(ev.eventTime) or ts_us(ev.lastTimestamp) or ts_us(ev.firstTimestamp)
            or ts_us(md.creationTimestamp)
    end

    -- the sandbox container's state, as events
    local function state_events(pod, out)
        local st = type(pod) == "table" and type(pod.status) == "table" and pod.status or {}
        for _, cs in ipairs(type(st.containerStatuses) == "table" and st.containerStatuses or {}) do
            if cs.name == mapping.CONTAINER then
                local state = type(cs.state) == "table" and cs.state or {}
                local last = type(cs.lastState) == "table" and cs.lastState or {}
                if type(state.running) == "table" then
                    out[#out + 1] = { at_us = ts_us(state.running.startedAt),
                        text = "kubernetes state: container running" }
                end
                for _, term in ipairs({ state.terminated, last.terminated }) do
                    if type(term) == "table" then
                        out[#out + 1] = { at_us = ts_us(term.finishedAt), text = string.format(
                            "kubernetes state: container terminated with exit code %s (%s)%s",
                            tostring(math.tointeger(term.exitCode) or term.exitCode), tostring(term.reason),
                            term.reason == "OOMKilled" and ": out of memory" or "") }
                    end
                end
                if type(state.waiting) == "table" then
                    out[#out + 1] = { text = string.format("kubernetes state: container waiting (%s) %s",
                        tostring(state.waiting.reason), tostring(state.waiting.message or "")) }
                end
                local n = math.tointeger(cs.restartCount)
                if n and n > 0 then
                    out[#out + 1] = { text = "kubernetes state: container restarted " .. n .. " times" }
                end
            end
        end
    end

    --- lim = { max_events } -> { events = { {at_us, text} }, truncated, warnings } or nil, err.
    function Kube:diagnostic_events(rec, lim)
        local path = self:_path("events") .. api_mod.query({ { "fieldSelector",
            "involvedObject.kind=Pod,involvedObject.name=" .. rec.handle } })
        local list, err = self.api:get(path)
        if not list then
            return nil, err
        end
        local evs, scheduled = {}, false
        for _, ev in ipairs(type(list.items) == "table" and list.items or {}) do
            scheduled = scheduled or ev.reason == "Scheduled"
            local count = math.tointeger(ev.count)
                or (type(ev.series) == "table" and math.tointeger(ev.series.count))
            local message = tostring(ev.message or ""):gsub("\n", " ")
            evs[#evs + 1] = {
                at_us = event_time(ev),
                text = string.format("kubernetes %s %s %s%s", tostring(ev.type), tostring(ev.reason), message,
                    (count and count > 1) and (" (x" .. count .. ")") or ""),
            }
        end
        table.sort(evs, function(a, b)
            return (a.at_us or 0) < (b.at_us or 0)
        end)
        local truncated = #evs > lim.max_events
        if truncated then
            evs = table.move(evs, #evs - lim.max_events + 1, #evs, 1, {})
        end
        local pod = self.api:get(self:_path("pods", rec.handle))
        if pod then
            state_events(pod, evs)
        end
        local warnings
        if not scheduled then
            warnings = { "Kubernetes keeps Events only for a while (the apiserver's --event-ttl): older events "
                .. "of this pod are gone." }
        end
        return { events = evs, truncated = truncated, warnings = warnings }
    end
end
