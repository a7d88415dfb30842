-- TEST-ONLY. A blocking stand-in for core.client, so that adapters can run against a real daemon before
-- (and without) the C core: `request(opts)` has the core.client interface (README of core/), built on
-- io.popen of the curl command line tool. It blocks the whole Lua state while a request runs, so it must
-- never be used by the server.
--
--   opts: method, url, unix_socket, headers, body, timeout (0 = none), idle_timeout, on_data
--   returns res = { status, headers (lowercase names), body } or nil, { kind, message }
--
-- The body is sent from a temporary file (--data-binary @file), the response headers are written to a
-- temporary file (-D) and read after the transfer; the response body is read from curl's stdout, and with
-- `on_data` it is fed line by line as it arrives (curl -N does not buffer), so streams such as
-- /events?until= can be followed. Returning false from on_data stops reading (kind "aborted").
local M = {}

local err_mt = {
    __tostring = function(e)
        return e.kind .. ": " .. e.message
    end,
}

local function fail(kind, message)
    return nil, setmetatable({ kind = kind, message = message }, err_mt)
end

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function parse_headers(text)
    -- with redirects or 100-continue there can be several header blocks: keep the last one
    local status, headers
    for line in (text or ""):gmatch("[^\r\n]*") do
        local code = line:match("^HTTP/%S+%s+(%d%d%d)")
        if code then
            status, headers = tonumber(code), {}
        elseif headers then
            local name, value = line:match("^([^:]+):%s*(.-)%s*$")
            if name then
                local key = name:lower()
                headers[key] = headers[key] and (headers[key] .. ", " .. value) or value
            end
        end
    end
    return status, headers or {}
end

local CURL_KINDS = { [6] = "connect", [7] = "connect", [28] = "timeout", [52] = "error", [56] = "error" }

function M.request(opts)
    local hdr_file = os.tmpname()
    local body_file
    local args = { "curl", "-sS", "-N", "-D", q(hdr_file), "-X", q(opts.method or "GET"), "-H", q("Expect:") }
    if opts.unix_socket then
        args[#args + 1] = "--unix-socket " .. q(opts.unix_socket)
    end
    for name, value in pairs(opts.headers or {}) do
        args[#args + 1] = "-H " .. q(name .. ": " .. value)
    end
    if opts.body and opts.body ~= "" then
        body_file = os.tmpname()
        local f = assert(io.open(body_file, "wb"))
        f:write(opts.body)
        f:close()
        args[#args + 1] = "--data-binary @" .. q(body_file)
    end
    local timeout = opts.timeout == nil and 180 or opts.timeout
    if timeout and timeout > 0 then
        args[#args + 1] = "--max-time " .. string.format("%.3f", timeout)
    end
    if opts.idle_timeout and opts.idle_timeout > 0 then
        args[#args + 1] = string.format("--speed-limit 1 --speed-time %d", math.max(1, math.ceil(opts.idle_timeout)))
    end
    args[#args + 1] = q(opts.url)
    args[#args + 1] = "2>/dev/null"

    local pipe = assert(io.popen(table.concat(args, " "), "r"))
    local chunks, aborted = {}, false
    if opts.on_data then
        for line in pipe:lines("L") do
            if not aborted and opts.on_data(line) == false then
                aborted = true
            end
        end
    else
        chunks[1] = pipe:read("a")
    end
    local _, _, code = pipe:close()
    local hf = io.open(hdr_file, "rb")
    local header_text = hf and hf:read("a") or ""
    if hf then
        hf:close()
    end
    os.remove(hdr_file)
    if body_file then
        os.remove(body_file)
    end
    if aborted then
        return fail("aborted", "aborted by on_data")
    end
    if code ~= 0 then
        return fail(CURL_KINDS[code] or "error", "curl exit code " .. tostring(code))
    end
    local status, headers = parse_headers(header_text)
    if not status then
        return fail("error", "no HTTP status in the response")
    end
    return { status = status, headers = headers, body = opts.on_data and "" or table.concat(chunks) }
end

return M
