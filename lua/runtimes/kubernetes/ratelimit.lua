-- A token bucket: the client-side rate limit of the Kubernetes API client (as client-go's default one:
-- `qps` requests per second on average, up to `burst` at once). The API client keeps one bucket for reads
-- and one for writes, so that a burst of creates cannot starve the list and watch calls.
--
-- The bucket holds up to `burst` tokens and gains `qps` per second; a request takes one. A request that
-- finds none reserves the next one (the count goes below zero) and sleeps until it is due, so callers that
-- arrive together are spaced 1/qps apart in the order they came. Time and sleeping are injected:
-- `now()` returns seconds (a float), `sleep(sec)` yields the calling task.
local M = {}

local Bucket = {}
Bucket.__index = Bucket

--- A new bucket: opts = { qps = n > 0, burst = n >= 1, now = fn, sleep = fn }. Starts full.
function M.new(opts)
    assert(type(opts.qps) == "number" and opts.qps > 0, "ratelimit: qps must be a number > 0")
    assert(type(opts.burst) == "number" and opts.burst >= 1, "ratelimit: burst must be >= 1")
    assert(type(opts.now) == "function" and type(opts.sleep) == "function", "ratelimit: now and sleep required")
    return setmetatable({ qps = opts.qps, burst = opts.burst, now = opts.now, sleep = opts.sleep,
        tokens = opts.burst, last = opts.now() }, Bucket)
end

--- Takes a token, sleeping (yielding) until one is due. Returns the seconds slept (0 when none).
function Bucket:take()
    local t = self.now()
    if t > self.last then
        self.tokens = math.min(self.burst, self.tokens + (t - self.last) * self.qps)
        self.last = t
    end
    self.tokens = self.tokens - 1
    if self.tokens >= 0 then
        return 0
    end
    local wait = -self.tokens / self.qps
    self.sleep(wait)
    return wait
end

return M
