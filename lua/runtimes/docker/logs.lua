-- Diagnostics for the Docker Engine API client (runtimes.docker.engine): a container's output, its events
-- from the daemon's event buffer, and its raw state. A part of the engine, installed into its class by
-- engine.lua (so `self` is the engine); it uses the engine's request helpers `u`.
--
-- Output framing: a container created without a TTY (ours) has its stdout and stderr multiplexed in one
-- body, as frames of an 8-byte header (stream: 1 stdout, 2 stderr; 3 zero bytes; payload size, 32-bit
-- big-endian) and the payload. A TTY container's body is the raw bytes; the demuxer tells the two apart
-- by the first header, and then reads the body as plain stdout lines.
local json = require("common.json")
local lines_mod = require("runtimes.docker.lines")

-- the frame demuxer, a pure object (chunks in, entries out): on_entry(stream, payload), stream "stdout",
-- "stderr" (or "stdin"/"stdout" for stream 0/raw)
local Demux = {}
Demux.__index = Demux

local STREAMS = { [0] = "stdin", [1] = "stdout", [2] = "stderr" }

local function new_demux(on_entry)
    return setmetatable({ buf = "", on_entry = on_entry, raw = nil, raw_lines = nil }, Demux)
end

function Demux:feed(chunk)
    if self.raw == nil then
        local probe = self.buf .. chunk
        if #probe < 8 then
            self.buf = probe
            return
        end
        local b1, b2, b3, b4 = probe:byte(1, 4)
        self.raw = not (STREAMS[b1] and b2 == 0 and b3 == 0 and b4 == 0)
        self.buf, chunk = "", probe
        if self.raw then
            self.raw_lines = lines_mod.new(function(line)
                self.on_entry("stdout", line)
            end)
        end
    end
    if self.raw then
        self.raw_lines:feed(chunk)
        return
    end
    local buf = self.buf .. chunk
    local pos = 1
    while #buf - pos + 1 >= 8 do
        local stream, size = string.unpack(">B xxx I4", buf, pos)
        if #buf - pos + 1 < 8 + size then
            break
        end
        self.on_entry(STREAMS[stream] or "stdout", buf:sub(pos + 8, pos + 7 + size))
        pos = pos + 8 + size
    end
    self.buf = buf:sub(pos)
end

function Demux:finish()
    if self.raw and self.raw_lines then
        self.raw_lines:finish()
    elseif self.raw == nil and self.buf ~= "" then
        self.on_entry("stdout", self.buf) -- a body shorter than one header: raw text
    end
end

return function(Adapter, M, u)
    local urlencode, seg, http_error, decode_body = u.urlencode, u.seg, u.http_error, u.decode_body

    M.new_demux = new_demux

    --- GET /containers/{cid}/logs?stdout=1&stderr=1&timestamps=1&tail={tail}: calls on_entry(stream, text)
    --- for each entry of the output, oldest first, as it arrives (text without its newline; it starts with
    --- Docker's RFC 3339 timestamp). Returns true or nil, err ("not_found" when the container is gone).
    function Adapter:container_logs(cid, tail, on_entry)
        local demux = new_demux(function(stream, payload)
            on_entry(stream, (payload:gsub("\r?\n$", "")))
        end)
        local errbody = {}
        local res, err = self:_request("GET", "/containers/" .. seg(cid) .. "/logs?stdout=1&stderr=1&timestamps=1&tail="
            .. tostring(math.tointeger(tail) or "all"), {
                on_data = function(chunk)
                    if #errbody < 4 then
                        errbody[#errbody + 1] = chunk
                    end
                    demux:feed(chunk)
                end,
            })
        if not res then
            return nil, err
        end
        if res.status ~= 200 then
            res.body = (res.body ~= nil and res.body ~= "") and res.body or table.concat(errbody)
            return nil, http_error(res)
        end
        demux:finish()
        return true
    end

    --- GET /events?since=&until=&filters={"container":[cid],"type":["container"]}: the container's events
    --- still in the daemon's buffer, each decoded by M.parse_event (plus `attributes`), oldest first, to
    --- on_event (must not yield). Returns true or nil, err.
    function Adapter:container_events(cid, since_s, until_s, on_event)
        local filters = json.encode({ container = json.array({ cid }), type = json.array({ "container" }) })
        local path = string.format("/events?since=%d&until=%d&filters=%s", since_s, until_s, urlencode(filters))
        local res, err = self:_lines_request("GET", path, {}, function(line)
            local ev = M.parse_event(line)
            if ev then
                on_event(ev)
            end
        end, 4096)
        if not res then
            return nil, err
        end
        if res.status ~= 200 then
            return nil, http_error(res)
        end
        return true
    end

    --- GET /containers/{cid}/json -> { created = Docker's text, restart_count, state = Docker's State }.
    function Adapter:container_state(cid)
        local res, err = self:_request("GET", "/containers/" .. seg(cid) .. "/json")
        if not res then
            return nil, err
        end
        if res.status ~= 200 then
            return nil, http_error(res)
        end
        local doc
        doc, err = decode_body(res)
        if not doc then
            return nil, err
        end
        return {
            created = type(doc.Created) == "string" and doc.Created or nil,
            restart_count = math.tointeger(doc.RestartCount),
            state = type(doc.State) == "table" and doc.State or {},
        }
    end
end
