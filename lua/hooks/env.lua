-- The environment a hook file runs in, and the `opensandbox` table it gets.
--
-- A hook file is loaded with its own read-only _ENV: it can read the safe basics listed in BASICS below, and
-- assigning a global raises ("cannot create global 'x' (declare it local)"). The libraries are per-hook
-- copies, so a hook cannot change the server's own `string` or `table`. There is no io, require, load,
-- debug, coroutine, collectgarbage or os.getenv; `pcall`/`xpcall` re-raise budget errors
-- (lua/hooks/budget.lua) so a hook cannot swallow them; `getmetatable` returns only metatables the hook
-- set itself (not the string metatable nor the server's json.array tag); `setmetatable` refuses __gc and
-- __close (they would run outside the budget: finalizers with debug hooks off, __close when a task is
-- reset) and weak keys (ephemeron tables cost the collector time outside the budget). The library
-- functions are guarded by core.hookguard when the server has it (lua/hooks/README.md); `string.rep`
-- is capped here as well, and opensandbox.json.encode refuses values whose JSON could exceed MAX_JSON.
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

M.MAX_REP = 16 * 1024 * 1024 -- bytes: the largest string.rep result a hook may build (also its count)
M.MAX_JSON = 16 * 1024 * 1024 -- bytes: the largest JSON text opensandbox.json.encode may produce
M.MAX_HTTP_BODY = 4 * 1024 * 1024 -- bytes: the largest response body opensandbox.http returns
M.MAX_LOG = 4096 -- bytes: log messages and field values of hooks are cut there
M.MAX_LOG_LINES = 200 -- log lines (print included) one hook call may write
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

local guard = budget.guard

-- A budget error, or any error once core.hookguard says a budget is spent (the memory error Lua raises
-- when the allocator refuses is a plain string), goes on up: a hook cannot swallow it.
local function rethrow_budget(ok, ...)
    if not ok and (budget.is_budget_error((...)) or (guard and guard.check())) then
        error((...), 0)
    end
    return ok, ...
end

if guard then
    guard.install() -- the global string functions (reached through the string metatable too)
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
        if n > M.MAX_REP then -- an empty string repeated 2^53 times allocates nothing but loops
            error(string.format("string.rep: %.0f repetitions are more than the hook limit of %d", n,
                M.MAX_REP), 2)
        end
    end
    return string.rep(s, n, sep)
end

-- Metatables set through the hooks' setmetatable (weak keys): getmetatable returns only these.
local hook_mts = setmetatable({}, { __mode = "k" })

local function hook_getmetatable(v)
    local mt = getmetatable(v)
    if type(mt) == "table" and not hook_mts[mt] then
        return nil
    end
    return mt
end

local REFUSED = {
    __gc = "finalizers run outside the hook's budget, with debug hooks off",
    __close = "a to-be-closed value may be closed outside the hook's budget",
}

local function hook_setmetatable(t, mt)
    if type(mt) == "table" then
        for field, why in pairs(REFUSED) do
            if rawget(mt, field) ~= nil then
                error(string.format("setmetatable: %s is not allowed in hooks (%s)", field, why), 2)
            end
        end
        local mode = rawget(mt, "__mode")
        if mode ~= nil and (type(mode) ~= "string" or mode:find("k", 1, true)) then
            error("setmetatable: __mode with weak keys is not allowed in hooks (ephemeron tables cost the "
                .. "collector time outside the hook's budget); weak values (\"v\") are", 2)
        end
        hook_mts[mt] = true
    end
    return setmetatable(t, mt)
end

-- Raises once the running hook is past a budget (core.hookguard): the opensandbox functions check it on
-- entry, as the guarded library functions do, so a loop of cheap-looking calls (log lines) ends too.
local function check_deadline()
    if guard and guard.check() then
        error("hook budget exceeded", 2)
    end
end

-- Log messages and field values of hooks are cut at MAX_LOG bytes: a hook must not write gigabytes.
local function clip(s)
    if #s > M.MAX_LOG then
        return s:sub(1, M.MAX_LOG) .. "...(cut)"
    end
    return s
end

-- A copy of library table `lib` whose C functions check the hook's deadline (and the sizes given in
-- `kinds`) before they run, when core.hookguard is there.
local function guarded_copy(lib, kinds)
    local out = {}
    for k, v in pairs(lib) do
        out[k] = guard and type(v) == "function" and guard.wrap(v, kinds and kinds[k]) or v
    end
    return out
end

-- An upper bound of the size of json.encode(v), read raw (no metamethods); raises past MAX_JSON. cjson
-- builds its text in malloc'd memory, outside the Lua allocator's count, so the bound is checked first.
local function json_size(v, depth, acc)
    local t = type(v)
    if t == "string" then
        return acc + 6 * #v + 2 -- every byte may become \u00XX
    elseif t ~= "table" then
        return acc + 32
    end
    if depth > 100 then
        error("json.encode: the value is nested too deeply", 0)
    end
    acc = acc + 2
    local k, x = next(v)
    while k ~= nil do
        acc = json_size(x, depth + 1, json_size(k, depth + 1, acc + 2))
        if acc > M.MAX_JSON then
            error(string.format("json.encode: the result could exceed the hook limit of %d bytes", M.MAX_JSON),
                0)
        end
        k, x = next(v, k)
    end
    return acc
end

local function bounded_encode(v)
    check_deadline()
    json_size(v, 0, 0)
    return json.encode(v)
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
        check_deadline()
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
        -- Everything the client reads is a plain string made here, inside the budget: it reads them
        -- after the task yielded, when the hook's budget is suspended.
        local body = req.body ~= nil and tostring(req.body) or nil
        local method = tostring(req.method or "GET")
        -- The response body is collected here, up to MAX_HTTP_BODY: it arrives while the budget is
        -- suspended, so the client must not buffer an unbounded reply on the hook's behalf.
        local chunks, size, too_big = {}, 0, false
        local function on_data(chunk)
            size = size + #chunk
            if size > M.MAX_HTTP_BODY then
                too_big = true
                return false
            end
            chunks[#chunks + 1] = chunk
            return true
        end
        -- Only these fields go to the client: no unix_socket (the Docker socket).
        local saved = guard and guard.suspend()
        local ok, res, err = pcall(api.http, {
            method = method,
            url = req.url,
            headers = headers,
            body = body,
            timeout = timeout,
            on_data = on_data,
        })
        if saved then
            guard.resume(saved)
        end
        budget.rebase()
        if not ok then
            error(res, 0)
        end
        if too_big then
            return nil, string.format("the response body is larger than the hook limit of %d bytes",
                M.MAX_HTTP_BODY)
        end
        if not res then
            return nil, tostring(err)
        end
        local text = res.body
        if #chunks > 0 or text == nil or text == "" then
            text = table.concat(chunks)
        end
        return { status = res.status, headers = res.headers and copy(res.headers) or {}, body = text }
    end
end

--- A new environment for the hook file `file`. `api` = { log = core.log-like, now = fn,
--- http = fn(req) -> res or nil, err (core.client.request), sandboxes = fn() -> array,
--- usage = fn(filter) -> table }. Returns env, info; set `info.name`
--- once the hook's name is known (log lines carry it, else the file name).
function M.new(file, api)
    local info = { name = nil }
    local function fields_of(f)
        local out = {}
        if type(f) == "table" then
            for k, v in pairs(f) do
                if type(v) ~= "number" and type(v) ~= "boolean" then
                    v = clip(tostring(v))
                end
                out[clip(tostring(k))] = v
            end
        end
        out.hook = info.name or file
        return out
    end
    local log = {}
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        log[level] = function(msg, f)
            check_deadline()
            local fn = api.log and api.log[level]
            local n = budget.tick("log")
            if n > M.MAX_LOG_LINES then
                return -- dropped: MAX_LOG_LINES per call is plenty for a policy hook
            end
            if n == M.MAX_LOG_LINES then
                msg, f = "hook log lines beyond this one are dropped in this call", { max = M.MAX_LOG_LINES }
            end
            if fn then
                fn(clip(tostring(msg)), fields_of(f))
            end
        end
    end
    local opensandbox = {
        log = log,
        json = { encode = bounded_encode, decode = json.decode, null = json.null, array = json.array },
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
    local str = copy(string) -- the global string functions: guarded by core.hookguard when it is there
    str.rep = capped_rep
    local base = {
        _VERSION = _VERSION,
        assert = assert,
        error = error,
        getmetatable = hook_getmetatable,
        ipairs = ipairs,
        next = next,
        pairs = pairs,
        pcall = safe_pcall,
        rawequal = rawequal,
        select = select,
        setmetatable = hook_setmetatable,
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
        table = guarded_copy(table, { sort = "sort", move = "move" }),
        math = guarded_copy(math),
        utf8 = guarded_copy(utf8),
        -- no getenv: the server's environment holds its API key and the registries' secrets (key_env)
        os = guarded_copy({ time = os.time, date = os.date, clock = os.clock }),
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
