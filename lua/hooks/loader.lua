-- Loading a set of hooks: every `*.lua` file of a directory, in its own environment (lua/hooks/env.lua),
-- under the budgets (lua/hooks/budget.lua), checked, configured and ordered.
--
-- A hook file returns a table:
--   name         string, unique, [A-Za-z0-9_.-]+ (its config is hooks.config[name])
--   priority     integer; higher runs first (ties: by name)
--   description  string (optional)
--   init         function(config) -> true, or nil/false and a message (optional; runs at every load, so a
--                bad config fails the load and a reload keeps the old set)
--   <point>      a function per hook point it implements (lua/hooks/env.lua M.POINTS)
-- Any other field is an error (it is most likely a misspelt point). The framework sets `config` on the table
-- (a copy of hooks.config[name], {} when absent) before init runs.
--
-- A set is { hooks = {hook...} (ordered), by_point = { point = { {name=, fn=, hook=}... } }, warnings = {} }.
local budget = require("hooks.budget")
local env = require("hooks.env")
local files_mod = require("common.files")

local M = {}

local KNOWN = { name = true, priority = true, description = true, init = true, config = true }
for _, p in ipairs(env.POINTS) do
    KNOWN[p] = true
end

local function deep_copy(v, depth)
    if type(v) ~= "table" then
        return v
    end
    depth = depth or 0
    if depth > 32 then
        error("hooks.config is nested too deeply")
    end
    local out = {}
    for k, x in pairs(v) do
        out[k] = deep_copy(x, depth + 1)
    end
    return out
end
M.deep_copy = deep_copy

--- The `*.lua` files of `dir`, sorted by name; or nil, message.
function M.list_dir(dir)
    return files_mod.lua_files(dir, "hooks")
end

-- Checks the table a hook file returned. Returns true or nil, message.
local function check_hook(h)
    if type(h) ~= "table" then
        return nil, string.format("must return a table, got %s", type(h))
    end
    if type(h.name) ~= "string" or not h.name:find("^[%w_.%-]+$") then
        return nil, "name must be a non-empty string of letters, digits, '_', '.' or '-'"
    end
    if math.type(h.priority) ~= "integer" then
        return nil, string.format("hook '%s': priority must be an integer", h.name)
    end
    for k, v in pairs(h) do
        if not KNOWN[k] then
            return nil, string.format("hook '%s': unknown field '%s' (hook points are: %s)", h.name, tostring(k),
                table.concat(env.POINTS, ", "))
        end
        if (k == "init" or env.IS_POINT[k]) and type(v) ~= "function" then
            return nil, string.format("hook '%s': %s must be a function", h.name, k)
        end
    end
    if h.description ~= nil and type(h.description) ~= "string" then
        return nil, string.format("hook '%s': description must be a string", h.name)
    end
    return true
end

-- Loads one file. Returns the hook table or nil, message (naming the file).
local function load_file(dir, file, opts)
    local src, rerr = files_mod.read(dir .. "/" .. file)
    if not src then
        return nil, string.format("%s: cannot read: %s", file, tostring(rerr))
    end
    local fenv, info = env.new(file, opts.api)
    local chunk, lerr = load(src, "@" .. file, "t", fenv)
    if not chunk then
        return nil, lerr
    end
    local old = env.set_phase(nil)
    -- The file's table is copied raw inside the budget (its functions kept): reading it afterwards runs no
    -- metamethod of the hook's. The original is kept to give it its `config` (rawset, for `M.config`).
    local ok, h, orig = budget.call(opts.limits, function()
        local t = chunk()
        return budget.raw_copy(t, { functions = true }), t
    end)
    env.set_phase(old)
    if not ok then
        return nil, string.format("%s: %s", file, tostring(h))
    end
    local cok, cerr = check_hook(h)
    if not cok then
        return nil, string.format("%s: %s", file, cerr)
    end
    info.name = h.name
    local cfg = opts.config and opts.config[h.name]
    if cfg ~= nil and type(cfg) ~= "table" then
        return nil, string.format("%s: hooks.config.%s must be a table", file, h.name)
    end
    h.config = deep_copy(cfg or {})
    rawset(orig, "config", h.config)
    if h.init then
        local init = h.init
        local iok, res, why = budget.call(opts.limits, function(c)
            local r, w = init(c)
            return budget.raw_copy(r), budget.raw_copy(w)
        end, h.config)
        if not iok then
            return nil, string.format("%s: hook '%s' init failed: %s", file, h.name, tostring(res))
        end
        if not res then
            return nil, string.format("%s: hook '%s' init: %s", file, h.name, tostring(why or "rejected its config"))
        end
    end
    return h
end

--- Loads every hook file of opts.dir. opts = { dir = path, config = {name = table}, limits = {...},
--- api = (see lua/hooks/env.lua M.new) }. Returns a set, or nil and a message naming the file.
function M.load(opts)
    local files, err = M.list_dir(opts.dir)
    if not files then
        return nil, err
    end
    local set = { hooks = {}, by_point = {}, warnings = {} }
    local names = {}
    for _, file in ipairs(files) do
        local h, herr = load_file(opts.dir, file, opts)
        if not h then
            return nil, herr
        end
        if names[h.name] then
            return nil, string.format("%s: hook name '%s' is already used by %s", file, h.name, names[h.name])
        end
        names[h.name] = file
        set.hooks[#set.hooks + 1] = h
    end
    for name in pairs(opts.config or {}) do
        if not names[name] then
            set.warnings[#set.warnings + 1] = string.format("hooks.config.%s: no hook of that name is loaded",
                tostring(name))
        end
    end
    table.sort(set.hooks, function(a, b)
        if a.priority ~= b.priority then
            return a.priority > b.priority
        end
        return a.name < b.name
    end)
    for _, p in ipairs(env.POINTS) do
        local list = {}
        for _, h in ipairs(set.hooks) do
            if h[p] then
                list[#list + 1] = { name = h.name, fn = h[p], hook = h }
            end
        end
        set.by_point[p] = list
    end
    return set
end

return M
