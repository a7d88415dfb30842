-- Operator policy hooks: the object the lifecycle service calls at its hook points (lua/sandbox/service.lua,
-- `deps.hooks`). Operators write hooks in Lua (README.md, section "Hooks"); the defaults live in <root>/hooks.
--
--   local hooks = require("hooks")
--   local h, err = hooks.new{ dir = path, config = cfg.hooks.config, log = log, spawn = spawn,
--       http = client.request, now = core.now, sandboxes = function() return service.records end,
--       usage = function(filter) return service:usage(filter) end,
--       limits = { instructions = n, memory_kb = n }, max_timeout = seconds|nil }
--
-- The points (each runs the hooks that implement it, highest priority first):
--   h:before_create(ctx, spec)          -> spec (a checked, possibly changed copy) or nil, err
--   h:sandbox_name(ctx, spec, rec)      -> container name (always a valid Docker name; "sandbox-{id}" default)
--   h:after_transition(rec, from, to)   -> nothing; never raises; runs in a task of its own (spawn)
--   h:before_delete(ctx, sandbox_view)  -> true or nil, err
--   h:on_proxy_request(ctx, sandbox_view, req_info) -> decision { allow = bool, ... } or nil, err
--   h:before_patch_metadata(ctx, rec, patch) -> patch (a checked, possibly changed copy) or nil, err
--   h:reload(opts)                      -> true or nil, message (the old set stays on any error)
-- ctx is { request_id, principal, admin, host, remote_addr }; hooks get a copy.
--
-- Errors: a hook rejects with `return nil, {status=, code=, message=}` (a common.errors object is made of
-- it). A hook that raises, exceeds its instruction, memory or time budget, returns something that cannot
-- cross the boundary (a function, a table nested too deeply), or breaks the spec gives 500 HOOK::FAILED
-- "Hook '<name>' failed in <point>: <reason>", logged at ERROR; the server keeps serving. What a hook
-- returns is copied raw inside its budget and every table it gets is a copy (lua/hooks/README.md).
local errors = require("common.errors")
local json = require("common.json")
local budget = require("hooks.budget")
local env = require("hooks.env")
local loader = require("hooks.loader")
local metrics = require("common.metrics")
local model = require("sandbox.model")
local validate = require("sandbox.validate")

local M = {}

local HOOK_CALLS = metrics.default:counter("opensandbox_hook_calls_total",
    "Hook function calls by hook name and point.", { "hook", "point" })
local HOOK_FAILURES = metrics.default:counter("opensandbox_hook_failures_total",
    "Hook calls that failed (raised, ran out of budget, returned something invalid) by hook and point.",
    { "hook", "point" })
local HOOK_DURATION = metrics.default:histogram("opensandbox_hook_duration_seconds",
    "Time spent in hook functions by hook name and point.", { "hook", "point" })

M.HOOK_FAILED = "HOOK::FAILED"
M.REJECTED = "HOOK::REJECTED"

local Hooks = {}
Hooks.__index = Hooks

local function copy(t)
    local o = {}
    for k, v in pairs(t) do
        o[k] = v
    end
    return o
end

local function nolog() end

--- A new hooks object, with every hook of opts.dir loaded; or nil and a message naming the failing file.
--- See the top of this file for `opts`; only `dir` is required.
function M.new(opts)
    assert(type(opts) == "table" and type(opts.dir) == "string", "hooks.new: opts.dir required")
    local self = setmetatable({}, Hooks)
    self.dir = opts.dir
    self.config = opts.config or {}
    self.log = opts.log or { debug = nolog, info = nolog, warn = nolog, error = nolog }
    self.spawn = opts.spawn
    self.records = opts.sandboxes
    self.usage_of = opts.usage -- the service's counters (sandbox/counters.lua); else usage() counts records
    self.max_timeout = opts.max_timeout
    self.limits = {
        instructions = opts.limits and opts.limits.instructions or budget.DEFAULT_INSTRUCTIONS,
        memory_kb = opts.limits and opts.limits.memory_kb or budget.DEFAULT_MEMORY_KB,
    }
    self.resources = {} -- sandbox id -> { nano_cpus =, memory = } seen at sandbox_name (see summaries())
    self.summary_cache = setmetatable({}, { __mode = "k" }) -- record table -> its summary
    self.api = {
        log = self.log,
        now = opts.now,
        http = opts.http,
        sandboxes = function()
            return self:summaries()
        end,
        usage = function(filter)
            return self:usage(filter)
        end,
    }
    local set, err = self:load()
    if not set then
        return nil, err
    end
    self.set = set
    return self
end

function Hooks:load()
    local set, err = loader.load({ dir = self.dir, config = self.config, limits = self.limits, api = self.api })
    if not set then
        return nil, err
    end
    for _, w in ipairs(set.warnings) do
        self.log.warn(w)
    end
    return set
end

--- Loads the hook files again (and `opts.config`, the new hooks.config, when given). On any error the
--- current set stays, the error is logged and returned: nil, message. Never yields.
function Hooks:reload(opts)
    local old_config = self.config
    if opts and opts.config then
        self.config = opts.config
    end
    local set, err = self:load()
    if not set then
        self.config = old_config
        self.log.error("hooks reload failed; keeping the loaded hooks", { dir = self.dir, error = err })
        return nil, err
    end
    self.set = set
    local names = {}
    for i, h in ipairs(set.hooks) do
        names[i] = h.name
    end
    self.log.info("hooks loaded", { dir = self.dir, hooks = table.concat(names, ",") })
    return true
end

--- Whether a loaded hook implements `point` (callers skip building its arguments otherwise).
function Hooks:has(point)
    local list = self.set.by_point[point]
    return list ~= nil and #list > 0
end

--- Names of the loaded hooks, in the order they run.
function Hooks:names()
    local out = {}
    for i, h in ipairs(self.set.hooks) do
        out[i] = h.name
    end
    return out
end

---------------------------------------------------------------------------------------------------------
-- running one hook
---------------------------------------------------------------------------------------------------------

local function ctx_copy(ctx)
    ctx = ctx or {}
    return {
        request_id = ctx.request_id,
        principal = ctx.principal,
        admin = ctx.admin,
        host = ctx.host,
        remote_addr = ctx.remote_addr,
    }
end

function Hooks:failed(entry, point, reason, ctx)
    HOOK_FAILURES:labels(entry.name, point):inc()
    self.log.error("hook failed", {
        hook = entry.name,
        point = point,
        error = tostring(reason),
        request_id = ctx and ctx.request_id or nil,
    })
    return errors.new(500, M.HOOK_FAILED, string.format("Hook '%s' failed in %s: %s", entry.name, point, reason))
end

-- The common.errors object for what a hook returned as its rejection.
local function rejection(entry, e)
    if errors.is(e) then
        return e
    end
    if type(e) == "string" then
        return errors.new(403, M.REJECTED, e)
    end
    if type(e) ~= "table" then
        return errors.new(403, M.REJECTED, string.format("Rejected by hook '%s'.", entry.name))
    end
    local status = math.tointeger(e.status)
    if not status or status < 400 or status > 599 then
        status = 403
    end
    local code = type(e.code) == "string" and e.code ~= "" and e.code or M.REJECTED
    local message = type(e.message) == "string" and e.message
        or string.format("Rejected by hook '%s'.", entry.name)
    local headers
    if type(e.headers) == "table" then
        headers = {}
        for k, v in pairs(e.headers) do
            headers[tostring(k)] = tostring(v)
        end
    end
    return errors.new(status, code, message, headers)
end

-- Calls the hook and copies its first two results raw, still inside the budget (lua/hooks/README.md):
-- nothing the hook controls (a metamethod on what it returns) runs once the budget has ended. `keep` is
-- what a hook that returns nothing hands back (before_create: the spec it was given, maybe changed).
local function call_and_copy(fn, keep, ...)
    local r1, r2 = fn(...)
    if r1 == nil and r2 == nil then
        r1 = keep
    end
    return budget.raw_copy(r1), budget.raw_copy(r2)
end

-- Runs one hook function for `point` under the budgets, with `keep` as what a hook that returns nothing
-- hands back. Returns true, r1, r2 (raw copies of a hook's first two results) or false, reason (a string).
function Hooks:run_keep(entry, point, keep, ...)
    local old = env.set_phase(point)
    local now = self.api.now
    local t0 = now and now()
    local ok, r1, r2 = budget.call(self.limits, call_and_copy, entry.fn, keep, ...)
    env.set_phase(old)
    HOOK_CALLS:labels(entry.name, point):inc()
    if t0 then
        HOOK_DURATION:labels(entry.name, point):observe(now() - t0)
    end
    return ok, r1, r2
end

-- Runs one hook function for `point` under the budgets. Returns true, r1, r2 (raw copies of a hook's
-- first two results) or false, reason (a string).
function Hooks:run(entry, point, ...)
    return self:run_keep(entry, point, nil, ...)
end

-- Whether the results of a hook mean "reject": `return nil, err` or `return false[, err]`.
local function is_rejection(r1, r2)
    return r1 == false or (r1 == nil and r2 ~= nil)
end

---------------------------------------------------------------------------------------------------------
-- sandbox summaries for opensandbox.sandboxes()
---------------------------------------------------------------------------------------------------------

local function read_only_error()
    error("sandbox summaries are read-only", 2)
end

-- A read-only view of `t`: reads, pairs and # work; writes raise.
local function read_only(t)
    return setmetatable({}, {
        __index = t,
        __newindex = read_only_error,
        __pairs = function()
            return next, t, nil
        end,
        __len = function()
            return #t
        end,
        __metatable = false,
    })
end

--- An array of read-only summaries of every current sandbox: { id, state, principal, metadata, nano_cpus,
--- memory, created_us, expires_us }. Resources come from the record (stored with it), else from what
--- sandbox_name saw at create. A committed record is never changed in place (the service
--- commits a new table), so the summary of a record table is built once and cached (weak keys).
function Hooks:summaries()
    local out = {}
    local records = self.records and self.records() or {}
    local cache = self.summary_cache
    local resources = self.resources
    local n = 0
    for id, rec in pairs(records) do
        local sum = cache[rec]
        if not sum then
            local res = resources[id]
            sum = read_only({
                id = id,
                state = rec.state,
                principal = rec.principal,
                metadata = read_only(rec.metadata and copy(rec.metadata) or {}),
                nano_cpus = rec.nano_cpus or (res and res.nano_cpus),
                memory = rec.memory or (res and res.memory),
                created_us = rec.created_us,
                expires_us = rec.expires_us,
            })
            cache[rec] = sum
        end
        n = n + 1
        out[n] = sum
    end
    return out
end

local LIVE = { Pending = true, Running = true, Paused = true, Stopping = true }
M.LIVE_STATES = LIVE

--- What the live sandboxes (Pending, Running, Paused, Stopping) matching `filter` use:
--- { sandboxes = n, nano_cpus = total, memory = total } (a sandbox without a limit adds 0). filter =
--- { principal = p, metadata = { k = v, ... } }, both optional (all given must match). With opts.usage (the
--- service's running totals, sandbox/counters.lua) it is answered from there; else by a scan of the records.
function Hooks:usage(filter)
    filter = filter or {}
    local p, md = filter.principal, filter.metadata
    if md ~= nil and type(md) ~= "table" then
        error("usage: filter.metadata must be a table", 2)
    end
    if self.usage_of then
        return self.usage_of(filter)
    end
    local records = self.records and self.records() or {}
    local resources = self.resources
    local n, nano, memory = 0, 0, 0
    for id, rec in pairs(records) do
        local match = LIVE[rec.state] and (p == nil or rec.principal == p)
        if match and md then
            local rmd = rec.metadata or {}
            for k, v in pairs(md) do
                if rmd[k] ~= v then
                    match = false
                    break
                end
            end
        end
        if match then
            local res = resources[id]
            n = n + 1
            nano = nano + (rec.nano_cpus or (res and res.nano_cpus) or 0)
            memory = memory + (rec.memory or (res and res.memory) or 0)
        end
    end
    return { sandboxes = n, nano_cpus = nano, memory = memory }
end

-- The Sandbox object of the API (§3.1) plus `principal`, with its own metadata table.
local function sandbox_view(rec)
    local v = model.sandbox_view(rec)
    v.metadata = copy(v.metadata or {})
    v.principal = rec.principal
    return v
end

---------------------------------------------------------------------------------------------------------
-- before_create
---------------------------------------------------------------------------------------------------------

local function deep_copy(v)
    if type(v) ~= "table" then
        return v
    end
    local out = {}
    for k, x in pairs(v) do
        out[k] = deep_copy(x)
    end
    return setmetatable(out, getmetatable(v))
end

local function is_int(v, min)
    return math.type(v) == "integer" and v >= min
end

-- Metadata entries already found valid (key -> value -> true; no string built per lookup); cleared when
-- it holds more than LABEL_MEMO_MAX entries.
local label_memo, label_memo_n = {}, 0
local LABEL_MEMO_MAX = 4096

local function check_label(k, v)
    local values = label_memo[k]
    if values and values[v] then
        return true
    end
    local ok, err = validate.metadata_label(k, v)
    if not ok then
        return nil, err
    end
    if label_memo_n >= LABEL_MEMO_MAX then
        label_memo, label_memo_n, values = {}, 0, nil
    end
    if not values then
        values = {}
        label_memo[k] = values
    end
    values[v], label_memo_n = true, label_memo_n + 1
    return true
end

-- Checks a spec a hook returned. Returns true, or nil and (reason, or an error object for the label rules).
function Hooks:check_spec(spec)
    if type(spec) ~= "table" then
        return nil, "the spec is not a table"
    end
    local ep = spec.entrypoint
    if type(ep) ~= "table" or type(ep[1]) ~= "string" or ep[1] == "" then
        return nil, "entrypoint must be an array of strings with a non-empty first element"
    end
    for i = 2, #ep do
        if type(ep[i]) ~= "string" then
            return nil, "entrypoint must be an array of strings"
        end
    end
    local t = spec.timeout
    if t ~= nil then
        if not is_int(t, 60) then
            return nil, "timeout must be nil or an integer >= 60"
        end
        if self.max_timeout and t > self.max_timeout then
            return nil, string.format("timeout %ds exceeds the configured maximum of %ds", t, self.max_timeout)
        end
    end
    if spec.nano_cpus ~= nil and not is_int(spec.nano_cpus, 10000000) then
        return nil, "nano_cpus must be nil or an integer >= 10000000"
    end
    if spec.memory ~= nil and not is_int(spec.memory, 6291456) then
        return nil, "memory must be nil or an integer >= 6291456"
    end
    if spec.gpu ~= nil and not (is_int(spec.gpu, 1) or spec.gpu == -1) then
        return nil, "gpu must be nil, -1 (all) or an integer >= 1"
    end
    if type(spec.env) ~= "table" then
        return nil, "env must be an array of {name, value}"
    end
    for _, e in ipairs(spec.env) do
        local k, v = type(e) == "table" and e[1], type(e) == "table" and e[2]
        if type(k) ~= "string" or k == "" or k:find("[=%z]") or type(v) ~= "string" or v:find("%z") then
            return nil, "env entries must be {name, value} strings (name non-empty, without '=' or NUL)"
        end
    end
    if type(spec.metadata) ~= "table" then
        return nil, "metadata must be a table"
    end
    for k, v in pairs(spec.metadata) do
        if type(k) ~= "string" or type(v) ~= "string" then
            return nil, "metadata keys and values must be strings"
        end
        local ok, err = check_label(k, v)
        if not ok then
            return nil, err
        end
    end
    if spec.extensions ~= nil and type(spec.extensions) ~= "table" then
        return nil, "extensions must be a table"
    end
    local p = spec.platform
    if p ~= nil and (type(p) ~= "table" or p.os ~= "linux" or (p.arch ~= "amd64" and p.arch ~= "arm64")) then
        return nil, "platform must be nil or {os = \"linux\", arch = \"amd64\"|\"arm64\"}"
    end
    return true
end

-- Runs the hooks of `point` in `list` one after another on `work`, which each may change in place or
-- replace: every hook gets (ctx copy[, a copy of `extra`], work), and a hook that returns nothing gives
-- back `work` (copied raw like a result). After each, `check(work)` -> the work to go on with, or nil and
-- why (a common.errors object: the hook's input was refused; a string: the hook failed). Returns the final
-- work, or nil and the rejection or failure; `what` names the operation in the log.
function Hooks:_chain(point, what, list, ctx, work, check, extra)
    for _, entry in ipairs(list) do
        local ok, r1, r2
        if extra ~= nil then
            ok, r1, r2 = self:run_keep(entry, point, work, ctx_copy(ctx), deep_copy(extra), work)
        else
            ok, r1, r2 = self:run_keep(entry, point, work, ctx_copy(ctx), work)
        end
        if not ok then
            return nil, self:failed(entry, point, r1, ctx)
        end
        if is_rejection(r1, r2) then
            local e = rejection(entry, r2)
            self.log.info(what .. " rejected by hook", { hook = entry.name, code = e.code, status = e.status })
            return nil, e
        end
        if type(r1) == "table" then
            work = r1
        end
        local checked, why = check(work)
        if not checked then
            if errors.is(why) then
                return nil, errors.new(why.status, why.code, why.message .. string.format(" (set by hook '%s')",
                    entry.name))
            end
            return nil, self:failed(entry, point, why, ctx)
        end
        work = checked
    end
    return work
end

--- Runs the before_create hooks on a copy of `spec`. Returns the spec to create (image and image.auth are
--- always the request's), or nil and a common.errors object. See the top of this file.
function Hooks:before_create(ctx, spec)
    local list = self.set.by_point.before_create
    if #list == 0 then
        return spec
    end
    local image = spec.image
    -- every table a hook gets is a copy of its own (made in C when core.hookguard is there; a spec with a
    -- metatable other than the JSON array tag, which validate never makes, is copied in Lua)
    local copied, work = pcall(budget.raw_copy, spec)
    if not copied then
        work = deep_copy(spec)
    end
    work.image = { uri = image.uri } -- hooks never see the registry credentials
    work.env = work.env or {}
    work.metadata = work.metadata or {}
    work.extensions = work.extensions or {}
    local err
    work, err = self:_chain("before_create", "create", list, ctx, work, function(w)
        local sok, why = self:check_spec(w)
        if sok then
            return w
        end
        return nil, type(why) == "string" and ("invalid spec: " .. why) or why
    end)
    if not work then
        return nil, err
    end
    work.image = image
    work.snapshot_id = spec.snapshot_id -- (like the image: the startup source is the request's)
    work.pool = spec.pool -- (the pool a claim takes from: the request's, seen but never changed)
    return work
end

---------------------------------------------------------------------------------------------------------
-- sandbox_name
---------------------------------------------------------------------------------------------------------

M.MAX_NAME = 200

--- Whether `name` is a valid Docker container name (and not longer than M.MAX_NAME).
function M.valid_name(name)
    return type(name) == "string" and #name <= M.MAX_NAME and name:find("^[a-zA-Z0-9][a-zA-Z0-9_.-]*$") ~= nil
end

--- The container name for a new sandbox: the first string a sandbox_name hook returns (in priority order),
--- else "sandbox-{id}". An invalid name or a failing hook is logged and gives the default. Never fails.
function Hooks:sandbox_name(ctx, spec, rec)
    local default = "sandbox-" .. rec.id
    self.resources[rec.id] = { nano_cpus = spec.nano_cpus, memory = spec.memory }
    local list = self.set.by_point.sandbox_name
    if #list == 0 then
        return default
    end
    for _, entry in ipairs(list) do
        -- each hook gets tables of its own, built here (not copies of shared ones: one allocation each)
        local sspec = {
            image = { uri = spec.image and spec.image.uri },
            timeout = spec.timeout,
            nano_cpus = spec.nano_cpus,
            memory = spec.memory,
            gpu = spec.gpu,
            metadata = copy(spec.metadata or {}),
            platform = spec.platform and copy(spec.platform) or nil,
        }
        local view = { id = rec.id, principal = rec.principal, metadata = copy(rec.metadata or {}),
            created_us = rec.created_us, expires_us = rec.expires_us }
        local ok, name = self:run(entry, "sandbox_name", ctx_copy(ctx), sspec, view)
        if not ok then
            self:failed(entry, "sandbox_name", name, ctx)
            return default
        end
        if name ~= nil then
            if M.valid_name(name) then
                return name
            end
            self.log.warn("hook returned an invalid container name; using the default", {
                hook = entry.name,
                name = tostring(name),
                sandbox_id = rec.id,
            })
            return default
        end
    end
    return default
end

---------------------------------------------------------------------------------------------------------
-- after_transition, before_delete, on_proxy_request
---------------------------------------------------------------------------------------------------------

function Hooks:run_transition(list, view, from, to)
    for _, entry in ipairs(list) do
        local ok, err = self:run(entry, "after_transition", { principal = view.principal }, deep_copy(view),
            from, to)
        if not ok then
            self:failed(entry, "after_transition", err)
        end
    end
end

--- Tells the after_transition hooks that `rec` went from state `from` (nil for a new sandbox) to `to`
--- ("Deleted" once it is gone). The hooks run in a new task when a spawn function was given, so a webhook
--- does not hold up the caller; they get a snapshot of the sandbox taken now. Never raises.
function Hooks:after_transition(rec, from, to)
    if to == "Deleted" and rec and rec.id then
        self.resources[rec.id] = nil
    end
    local list = self.set.by_point.after_transition
    if #list == 0 then
        return
    end
    local ok, err = pcall(function()
        local view = sandbox_view(rec)
        if self.spawn then
            self.spawn(function()
                self:run_transition(list, view, from, to)
            end)
        else
            self:run_transition(list, view, from, to)
        end
    end)
    if not ok then
        self.log.error("after_transition hooks failed", { error = tostring(err) })
    end
end

--- Runs the before_delete hooks. Returns true, or nil and a common.errors object.
function Hooks:before_delete(ctx, view)
    local list = self.set.by_point.before_delete
    if #list == 0 then
        return true
    end
    for _, entry in ipairs(list) do
        local ok, r1, r2 = self:run(entry, "before_delete", ctx_copy(ctx), deep_copy(view))
        if not ok then
            return nil, self:failed(entry, "before_delete", r1, ctx)
        end
        if is_rejection(r1, r2) then
            return nil, rejection(entry, r2)
        end
    end
    return true
end

--- Runs the on_proxy_request hooks for a request to a sandbox port. req_info = { port, method, path }.
--- Returns the decision, { allow = true } merged with the fields of every table a hook returned (for
--- example renew_seconds), or nil and a common.errors object (a hook rejected, returned allow = false, or
--- failed).
function Hooks:on_proxy_request(ctx, view, req_info)
    local decision = { allow = true }
    local list = self.set.by_point.on_proxy_request
    if #list == 0 then
        return decision
    end
    for _, entry in ipairs(list) do
        local ok, r1, r2 = self:run(entry, "on_proxy_request", ctx_copy(ctx), deep_copy(view),
            copy(req_info or {}))
        if not ok then
            return nil, self:failed(entry, "on_proxy_request", r1, ctx)
        end
        if is_rejection(r1, r2) then
            return nil, rejection(entry, r2)
        end
        if type(r1) == "table" then
            if r1.allow == false then
                return nil, errors.new(403, M.REJECTED, string.format("Access to port %s denied by hook '%s'.",
                    tostring(req_info and req_info.port), entry.name))
            end
            for k, v in pairs(r1) do
                decision[k] = v
            end
        end
    end
    return decision
end

---------------------------------------------------------------------------------------------------------
-- before_patch_metadata
---------------------------------------------------------------------------------------------------------

-- Checks a patch a hook returned: { key = "value" | false (remove) } under the API's rules. Returns the
-- patch, or nil and (a reason, or an error object for the label rules).
local function check_patch(patch)
    if type(patch) ~= "table" then
        return nil, "the patch is not a table"
    end
    local body = {}
    -- raw iteration (next, not pairs): no metamethod of a table a hook returned runs here, outside its budget
    for k, v in next, patch do
        if type(k) ~= "string" or (v ~= false and type(v) ~= "string") then
            return nil, "patch entries must be key = \"value\" or key = false (remove)"
        end
        body[k] = v == false and json.null or v
    end
    if next(body) == nil then
        return {}
    end
    local checked, err = validate.metadata_patch(body)
    if not checked then
        return nil, err
    end
    return checked
end

--- Runs the before_patch_metadata hooks for a metadata patch (PATCH /sandboxes/{id}/metadata) of the
--- record `rec`, under the sandbox's lock. `patch` is { key = "value" | false (remove) }. Each hook gets
--- ctx, the sandbox's summary (as opensandbox.sandboxes() gives it, with its own metadata table) and a
--- copy of the patch, which it may change in place or replace by returning a table. Returns the patch to
--- apply, or nil and a common.errors object.
function Hooks:before_patch_metadata(ctx, rec, patch)
    local list = self.set.by_point.before_patch_metadata
    if not list or #list == 0 then
        return patch
    end
    local summary = {
        id = rec.id,
        state = rec.state,
        principal = rec.principal,
        metadata = copy(rec.metadata or {}),
        nano_cpus = rec.nano_cpus,
        memory = rec.memory,
        created_us = rec.created_us,
        expires_us = rec.expires_us,
    }
    return self:_chain("before_patch_metadata", "metadata patch", list, ctx, copy(patch), function(w)
        local checked, why = check_patch(w)
        if checked then
            return checked
        end
        return nil, type(why) == "string" and ("invalid patch: " .. why) or why
    end, summary)
end

return M
