-- A fake core.client for the adapter's unit specs: it records every request and answers from a script.
--
--   local fake = fake_client.new()
--   fake:on("GET", "^/v1.41/images/.*/json$", { status = 404, body = '{"message":"no such image"}' })
--   fake:on("POST", "^/v1.41/images/create", { status = 200, chunks = { '{"status":"a"}\n{"err', 'or":"x"}\n' } })
--   fake:on("GET", "^/_ping$", { err = { kind = "connect", message = "refused" } })
--
-- A rule matches the method and a Lua pattern on the URL path+query (the part after the host). A response
-- with `chunks` is delivered through opts.on_data chunk by chunk (res.body is then ""); with `yield = true`
-- the request first calls coroutine.yield() so that a spec can interleave two callers; `times = n` limits
-- how often a rule matches. The last matching rule added wins.
local M = {}

local Fake = {}
Fake.__index = Fake

function M.new()
    local self = setmetatable({ rules = {}, requests = {} }, Fake)
    -- the adapter calls client.request(opts) with a dot, like core.client
    self.request = function(opts)
        return self:_request(opts)
    end
    return self
end

function Fake:on(method, pattern, response)
    table.insert(self.rules, 1, { method = method, pattern = pattern, response = response })
    return self
end

function Fake:_request(opts)
    local path = opts.url:gsub("^https?://[^/]+", "")
    local record = {
        method = opts.method,
        url = opts.url,
        path = path,
        unix_socket = opts.unix_socket,
        headers = opts.headers or {},
        body = opts.body,
        timeout = opts.timeout,
        idle_timeout = opts.idle_timeout,
        streaming = opts.on_data ~= nil,
    }
    self.requests[#self.requests + 1] = record
    for _, rule in ipairs(self.rules) do
        local left = rule.response.times
        if rule.method == opts.method and path:find(rule.pattern) and (left == nil or left > 0) then
            local r = rule.response
            if r.times then
                r.times = r.times - 1
            end
            if r.yield then
                coroutine.yield("fake-client")
            end
            if r.err then
                return nil, r.err
            end
            local body = r.body or ""
            if opts.on_data then
                for _, chunk in ipairs(r.chunks or { body }) do
                    if chunk ~= "" and opts.on_data(chunk) == false then
                        return nil, { kind = "aborted", message = "aborted" }
                    end
                end
                body = ""
            elseif r.chunks then
                body = table.concat(r.chunks)
            end
            return { status = r.status or 200, headers = r.headers or {}, body = body }
        end
    end
    error("fake client: no rule for " .. opts.method .. " " .. path)
end

--- The recorded requests whose method matches and whose path matches `pattern`.
function Fake:find(method, pattern)
    local out = {}
    for _, r in ipairs(self.requests) do
        if r.method == method and r.path:find(pattern) then
            out[#out + 1] = r
        end
    end
    return out
end

return M
