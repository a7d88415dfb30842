-- The environment a hook file runs in, and the `opensandbox` table it gets.
--
-- A hook file is loaded with its own read-only _ENV: it can read the safe basics listed in BASICS below, and
-- assigning a global raises ("cannot create global 'x' (declare it local)"). The libraries are per-hook
-- copies, so a hook cannot change the server's own `string` or `table`. There is no io, require, load,
-- debug, coroutine or collectgarbage; `pcall`/`xpcall` re-raise budget errors (lua/hooks/budget.lua) so a
-- hook cannot swallow them; `getmetatable` hides the shared string metatable; `string.rep` is capped.
--
-- `opensandbox` (documented for operators in README.md, section "Hooks"):
--   log.debug|info|warn|error(msg, fields)  the server log, with `hook = <name>` added
--   json.encode(v) / json.decode(s)        common.json
--   now()                                  seconds since the epoch (float)
--   template(str, values)                  "{key}" -> tostring(values[key]) ("" when missing)
--   reject(status, code, message)          returns nil, {status=, code=, message=} (for `return ...`)
--   metadata_label(k, v)                   true, or false and why (the API's metadata label rules)
--   sandboxes()                            array of read-only summaries of every current sandbox
--   usage{principal=, metadata={k=v}}      {sandboxes=, nano_cpus=, memory=} of the live matching ones
--                                          (sandboxes() and usage() are allowed where ALLOWED.sandboxes says)
--   http{method=, url=, headers=, body=, timeout=}  an outgoing HTTP request (yields; see ALLOWED)
--
-- Which point may call what is in ALLOWED; a call from elsewhere raises with the list of allowed points,
-- which fails the hook with a message that names it. The current point is tracked per thread, because a
-- hook that yields in opensandbox.http lets other requests run their hooks meanwhile.
local budget = require("hooks.budget")
local json = require("common.json")
local validate = require("sandbox.validate")

local M = {}

M.POINTS = { "before_create", "sandbox_name", "after_transition", "before_delete", "on_proxy_request",
    "before_patch_metadata" }
M.IS_POINT = {}
for _, p in ipairs(M.POINTS) do
    M.IS_POINT[p] = true
end

-- Functions restricted to some points. Everything else in `opensandbox` may be called anywhere, also while
-- the file loads and in init().
M.ALLOWED = {
    -- yields: not where the service needs an answer without a pause (the name is chosen between the quota
    -- check and the commit of the record; a metadata patch is checked and committed under the sandbox's
    -- lock), nor on the proxy's hot path
    http = { before_create = true, before_delete = true, after_transition = true },
    sandboxes = {
        before_create = true,
        sandbox_name = true,
        before_delete = true,
        after_transition = true,
        on_proxy_request = true,
        before_patch_metadata = true,
    },
}

M.MAX_REP = 16 * 1024 * 1024 -- bytes: the largest string.rep result a hook may build
M.HTTP_TIMEOUT = 5 -- seconds, default for opensandbox.http
M.HTTP_MAX_TIMEOUT = 30

local phase = setmetatable({}, { __mode = "k" }) -- thread -> point name being run

--- Sets the point being run on the current thread; returns the previous one (for set_phase(old)).
function M.set_phase(p)
    local co = coroutine.running()
    local old = phase[co]
    phase[co] = p
    return old
end

local function allowed_list(what)
    local names = {}
    for _, p in ipairs(M.POINTS) do
        if M.ALLOWED[what][p] then
            names[#names + 1] = p
        end
    end
    return table.concat(names, ", ")
end

local function check_phase(what)
    local p = phase[coroutine.running()]
    if not (p and M.ALLOWED[what][p]) then
        error(string.format("opensandbox.%s is not allowed in %s (allowed in: %s)", what, p or "the file body",
            allowed_list(what)), 3)
    end
end

local function copy(t)
    local o = {}
    for k, v in pairs(t) do
        o[k] = v
    end
    return o
end

local function rethrow_budget(ok, ...)
    if not ok and budget.is_budget_error((...)) then
        error((...), 0)
    end
    return ok, ...
end

local function safe_pcall(f, ...)
    return rethrow_budget(pcall(f, ...))
end

local function safe_xpcall(f, handler, ...)
    return rethrow_budget(xpcall(f, function(e)
        if budget.is_budget_error(e) then
            return e
        end
        return handler(e)
    end, ...))
end

local function capped_rep(s, n, sep)
    if type(n) == "number" and n > 0 then
        local size = #tostring(s) * n + (sep and #tostring(sep) * (n - 1) or 0)
        if size > M.MAX_REP then
            error(string.format("string.rep: result of %.0f bytes is larger than the hook limit of %d",
                size, M.MAX_REP), 2)
        end
    end
    return string.rep(s, n, sep)
end

local function hidden_getmetatable(v)
    if type(v) == "string" then
        return nil
    end
    return getmetatable(v)
end

--- Expands "{key}" placeholders: each becomes tostring(values[key]), or "" when values has no such key.
--- Keys are letters, digits, '_', '.' and '-'.
function M.template(str, values)
    return (str:gsub("{([%w_.%-]+)}", function(k)
        local v = values[k]
        if v == nil then
            return ""
        end
        return tostring(v)
    end))
end

local function make_http(api)
    return function(req)
        check_phase("http")
        if type(req) ~= "table" or type(req.url) ~= "string" or not req.url:find("^https?://") then
            error("opensandbox.http: url must be an http:// or https:// URL", 2)
        end
        if not api.http then
            return nil, "opensandbox.http is not available in this server"
        end
        local timeout = tonumber(req.timeout) or M.HTTP_TIMEOUT
        if timeout <= 0 or timeout > M.HTTP_MAX_TIMEOUT then
            timeout = M.HTTP_MAX_TIMEOUT
        end
        local headers = {}
        for k, v in pairs(req.headers or {}) do
            headers[tostring(k)] = tostring(v)
        end
        -- Only these fields go to the client: no unix_socket (the Docker socket), no streaming callback.
        local res, err = api.http({
            method = req.method or "GET",
            url = req.url,
            headers = headers,
            body = req.body,
            timeout = timeout,
        })
        budget.rebase()
        if not res then
            return nil, tostring(err)
        end
        return { status = res.status, headers = res.headers and copy(res.headers) or {}, body = res.body }
    end
end

--- A new environment for the hook file `file`. `api` = { log = core.log-like, now = fn,
--- http = fn(req) -> res or nil, err (core.client.request), sandboxes = fn() -> array,
--- usage = fn(filter) -> table }. Returns env, info; set `info.name`
--- once the hook's name is known (log lines carry it, else the file name).
function M.new(file, api)
    local info = { name = nil }
    local function fields_of(f)
        local out = type(f) == "table" and copy(f) or {}
        out.hook = info.name or file
        return out
    end
    local log = {}
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        log[level] = function(msg, f)
            local fn = api.log and api.log[level]
            if fn then
                fn(tostring(msg), fields_of(f))
            end
        end
    end
    local opensandbox = {
        log = log,
        json = { encode = json.encode, decode = json.decode, null = json.null, array = json.array },
        now = api.now or os.time,
        template = M.template,
        reject = function(status, code, message, headers)
            return nil, { status = status, code = code, message = message, headers = headers }
        end,
        metadata_label = function(k, v)
            local ok, err = validate.metadata_label(tostring(k), v ~= nil and tostring(v) or nil)
            if ok then
                return true
            end
            return false, err.message
        end,
        sandboxes = function()
            check_phase("sandboxes")
            if not api.sandboxes then
                return {}
            end
            return api.sandboxes()
        end,
        usage = function(filter)
            check_phase("sandboxes")
            if not api.usage then
                return { sandboxes = 0, nano_cpus = 0, memory = 0 }
            end
            return api.usage(filter)
        end,
        http = make_http(api),
    }
    local str = copy(string)
    str.rep = capped_rep
    local base = {
        _VERSION = _VERSION,
        assert = assert,
        error = error,
        getmetatable = hidden_getmetatable,
        ipairs = ipairs,
        next = next,
        pairs = pairs,
        pcall = safe_pcall,
        rawequal = rawequal,
        select = select,
        setmetatable = setmetatable,
        tonumber = tonumber,
        tostring = tostring,
        type = type,
        xpcall = safe_xpcall,
        print = function(...)
            local parts = table.pack(...)
            for i = 1, parts.n do
                parts[i] = tostring(parts[i])
            end
            log.info(table.concat(parts, "\t", 1, parts.n))
        end,
        string = str,
        table = copy(table),
        math = copy(math),
        utf8 = copy(utf8),
        os = { time = os.time, date = os.date, getenv = os.getenv, clock = os.clock },
        opensandbox = opensandbox,
    }
    local env = setmetatable({}, {
        __index = base,
        __newindex = function(_, k)
            error(string.format("cannot create global '%s' (declare it local)", tostring(k)), 2)
        end,
        __metatable = false,
    })
    base._G = env
    return env, info
end

return M
