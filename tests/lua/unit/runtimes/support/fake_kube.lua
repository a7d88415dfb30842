-- A fake Kubernetes API transport for the Kubernetes runtime's unit specs: a core.client-like object that
-- records every request and answers from a script, plus a fake clock whose sleep() only moves time.
--
--   local k = fake_kube.new()
--   k:on("GET", "^/version$", { status = 200, json = { gitVersion = "v1.30.0" } })
--   k:on("GET", "watch=1", { chunks = { '{"type":"ADD', 'ED","object":{...}}\n' } })
--   k:on("POST", "/pods$", { err = { kind = "connect", message = "refused" } })
--   k.requests[i] = { method, path, url, headers, body, json (the decoded body), tls, timeout, streaming }
--
-- A rule matches the method and a Lua pattern on the path+query. `json` is encoded as the body; `chunks`
-- are delivered through opts.on_data (res.body is then ""); `times = n` limits how often a rule matches;
-- `run = fn(req)` runs first (to move the clock, for example). The last matching rule added wins.
local json = require("common.json")

local M = {}

local Fake = {}
Fake.__index = Fake

function M.new()
    local self = setmetatable({ rules = {}, requests = {}, t = 1000, slept = {} }, Fake)
    self.request = function(opts)
        return self:_request(opts)
    end
    self.now = function()
        return self.t
    end
    self.sleep = function(sec)
        self.slept[#self.slept + 1] = sec
        self.t = self.t + sec
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
        headers = opts.headers or {},
        body = opts.body,
        json = opts.body and json.decode(opts.body) or nil,
        tls = opts.tls,
        http2 = opts.http2,
        timeout = opts.timeout,
        streaming = opts.on_data ~= nil,
    }
    self.requests[#self.requests + 1] = record
    for _, rule in ipairs(self.rules) do
        local r = rule.response
        if rule.method == opts.method and path:find(rule.pattern) and (r.times == nil or r.times > 0) then
            if r.times then
                r.times = r.times - 1
            end
            if r.run then
                r.run(record)
            end
            if r.err then
                return nil, r.err
            end
            local body = r.body or (r.json and json.encode(r.json)) or ""
            if opts.on_data then
                for _, chunk in ipairs(r.chunks or { body }) do
                    if chunk ~= "" and opts.on_data(chunk) == false then
                        return nil, { kind = "aborted", message = "aborted by the on_data callback" }
                    end
                end
                body = ""
            elseif r.chunks then
                body = table.concat(r.chunks)
            end
            return { status = r.status or 200, headers = {}, body = body }
        end
    end
    error("fake kube: no rule for " .. opts.method .. " " .. path)
end

--- The recorded requests whose method matches (nil: any) and whose path matches `pattern` (nil: any).
function Fake:find(method, pattern)
    local out = {}
    for _, r in ipairs(self.requests) do
        if (method == nil or r.method == method) and (pattern == nil or r.path:find(pattern)) then
            out[#out + 1] = r
        end
    end
    return out
end

--- Watch lines: each event (a table) as one JSON line, the whole split into chunks of `size` bytes so
--- that lines are cut in the middle.
function M.chunks(events, size)
    local text = {}
    for _, ev in ipairs(events) do
        text[#text + 1] = json.encode(ev) .. "\n"
    end
    local all = table.concat(text)
    local out = {}
    for i = 1, #all, size or 7 do
        out[#out + 1] = all:sub(i, i + (size or 7) - 1)
    end
    return out
end

--- A Status object as the API server sends it.
function M.status(code, reason, message)
    return { kind = "Status", apiVersion = "v1", status = "Failure", code = code, reason = reason, message = message }
end

return M
