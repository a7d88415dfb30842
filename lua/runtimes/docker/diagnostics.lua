-- The Docker runtime's diagnostics (the optional diagnostic_logs / diagnostic_events of the runtime
-- contract, lua/runtimes/README.md; the service's side is lua/sandbox/diagnostics.lua). Installed into the
-- adapter's class by docker/init.lua.
--
-- Logs: the container's stdout and stderr (GET /containers/{id}/logs, demultiplexed by the engine), the
-- newest `max_lines` entries, "<Docker's timestamp> <stdout|stderr> <text>" each. One entry more than asked
-- is requested, so that `truncated` is true only when older output really exists; the entries kept in
-- memory never exceed max_bytes (older ones are dropped as newer ones arrive, and that is a cut too).
--
-- Events: Docker keeps no per-container history, only a small in-memory buffer of recent events for the
-- whole daemon (GET /events with since/until replays it). So the events are (1) what that buffer still
-- holds of the container (create, start, pause, oom, die with its exit code...), and (2) what the container's
-- own state says for good (created, started, finished with exit code and OOMKilled, restarts, error), read
-- by inspect. When the buffer no longer holds the container's creation, a warning says older events are gone.
local timefmt = require("common.timefmt")

local function ts_us(s)
    return s and timefmt.parse_runtime(s) or nil
end

return function(Docker)
    --- lim = { max_lines, max_bytes } -> { lines, truncated } or nil, err.
    function Docker:diagnostic_logs(rec, lim)
        local out, first, last, bytes, truncated = {}, 1, 0, 0, false
        local ok, err = self.engine:container_logs(rec.handle, lim.max_lines + 1, function(stream, text)
            local stamp, rest = text:match("^(%S+) (.*)$")
            local line = stamp and (stamp .. " " .. stream .. " " .. rest) or (stream .. " " .. text)
            last = last + 1
            out[last] = line
            bytes = bytes + #line + 1
            while bytes > lim.max_bytes and first < last do
                bytes = bytes - #out[first] - 1
                out[first] = nil
                first = first + 1
                truncated = true
            end
        end)
        if not ok then
            return nil, err
        end
        local lines = table.move(out, first, last, 1, {})
        if #lines > lim.max_lines then
            table.remove(lines, 1)
            truncated = true
        end
        return { lines = lines, truncated = truncated }
    end

    local function event_text(ev)
        local t = "docker container " .. tostring(ev.action)
        if ev.exit_code then
            t = t .. " (exit code " .. ev.exit_code .. ")"
        end
        return t
    end

    --- lim = { max_events } -> { events = { {at_us, text} }, truncated, warnings } or nil, err.
    function Docker:diagnostic_events(rec, lim)
        local st, err = self.engine:container_state(rec.handle)
        if not st then
            return nil, err
        end
        local now_s = math.floor(self.core.now_s and self.core.now_s() or os.time())
        local created_us = ts_us(st.created) or rec.created_us
        local since = math.max(0, (created_us // 1000000) - 1)
        local evs, first, last, seen_create = {}, 1, 0, false
        local ok
        ok, err = self.engine:container_events(rec.handle, since, now_s + 1, function(ev)
            seen_create = seen_create or ev.action == "create"
            last = last + 1
            evs[last] = { at_us = ev.time_nano and ev.time_nano // 1000 or nil, text = event_text(ev) }
            if last - first + 1 > lim.max_events then
                evs[first] = nil
                first = first + 1
            end
        end)
        if not ok then
            return nil, err
        end
        local out = table.move(evs, first, last, 1, {})
        local truncated = first > 1
        -- what the container's state keeps for good
        local s = st.state
        out[#out + 1] = { at_us = created_us, text = "docker state: container created" }
        local started = ts_us(s.StartedAt)
        if started then
            out[#out + 1] = { at_us = started, text = "docker state: container started" }
        end
        local finished = ts_us(s.FinishedAt)
        if finished and s.Running ~= true then
            local t = "docker state: container exited with code " .. tostring(math.tointeger(s.ExitCode) or s.ExitCode)
            if s.OOMKilled == true then
                t = t .. " (OOMKilled: out of memory)"
            end
            out[#out + 1] = { at_us = finished, text = t }
        elseif s.OOMKilled == true then
            out[#out + 1] = { at_us = finished, text = "docker state: OOMKilled (out of memory)" }
        end
        if s.Paused == true then
            out[#out + 1] = { text = "docker state: container is paused" }
        end
        if st.restart_count and st.restart_count > 0 then
            out[#out + 1] = { text = "docker state: container restarted " .. st.restart_count .. " times" }
        end
        if type(s.Error) == "string" and s.Error ~= "" then
            out[#out + 1] = { at_us = finished, text = "docker state: error: " .. s.Error }
        end
        local warnings
        if not seen_create then
            warnings = { "Docker keeps only a small buffer of recent events per daemon: older events of this "
                .. "container are gone (its state, read now, is listed as \"docker state\")." }
        end
        return { events = out, truncated = truncated, warnings = warnings }
    end
end
