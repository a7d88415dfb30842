-- A line splitter for streamed HTTP bodies (the image pull progress and the event stream are JSON lines):
-- chunks may end in the middle of a line, so the unfinished tail is kept until its newline arrives.
-- `\r\n` and `\n` both end a line; empty lines are skipped. A line longer than `max` bytes (default 4 MiB)
-- is dropped rather than buffered without bound.
local M = {}

local Splitter = {}
Splitter.__index = Splitter

--- A splitter that calls `on_line(line)` for every complete line.
function M.new(on_line, max)
    return setmetatable({ buf = "", on_line = on_line, max = max or 4 * 1024 * 1024, skipping = false }, Splitter)
end

function Splitter:_emit(line)
    if line:sub(-1) == "\r" then
        line = line:sub(1, -2)
    end
    if line ~= "" then
        self.on_line(line)
    end
end

--- Feeds one chunk.
function Splitter:feed(chunk)
    local buf = self.buf .. chunk
    local pos = 1
    while true do
        local nl = buf:find("\n", pos, true)
        if not nl then
            break
        end
        if self.skipping then
            self.skipping = false
        else
            self:_emit(buf:sub(pos, nl - 1))
        end
        pos = nl + 1
    end
    buf = buf:sub(pos)
    if #buf > self.max then
        buf, self.skipping = "", true
    end
    self.buf = buf
end

--- Ends the stream: a last line without a newline is emitted.
function Splitter:finish()
    local buf = self.buf
    self.buf = ""
    if buf ~= "" and not self.skipping then
        self:_emit(buf)
    end
    self.skipping = false
end

return M
