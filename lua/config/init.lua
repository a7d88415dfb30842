-- Loading and validating the configuration (API.md §9, the auth guard of §1.2).
--
--   local cfg, err, code = config.load(path_or_nil, env, opts)
--
-- `path_or_nil` is the --config value (see M.path_from_args). Without it the path is env SANDBOX_CONFIG_PATH,
-- else ./config.lua, else upstream's ~/.sandbox.toml; an explicit path that is missing is an error, implicit
-- ones that are missing mean "all defaults". A path ending in .toml is upstream OpenSandbox's TOML format
-- (parsed by core.toml, mapped by lua/config/toml.lua, then validated like config.lua; its warnings go to
-- opts.warn). Any other file is Lua that returns a table; it runs in its own environment with only safe
-- basics (no io, no require, no load, os limited to getenv/time/date/clock) and an instruction budget.
-- The table is checked against lua/config/schema.lua (errors name the key), defaults are filled in, then the
-- environment overrides apply, tenant keys given as key_env are read from the environment, `~` is expanded,
-- and the auth guard runs.
--
-- On failure: nil, message, exit code (1 = invalid configuration, 2 = refused by the auth guard).
-- Warnings (for example an invalid DOCKER_API_TIMEOUT) go to opts.warn(msg) (default: stderr).
-- `env` is a table name -> value or a function(name) -> value; default os.getenv.
-- opts.unknown = "warn" turns unknown sections/keys into warnings instead of errors (the default is error).
-- opts.toml_parse = function(text, name) -> table | nil, err replaces core.toml's parser (unit specs).
-- opts.text (with opts.format "lua" or "toml") is the configuration itself instead of a file (an embedding
-- program's osb_config_string); `path_or_nil` is then ignored and cfg.source is "(config string)".
local schema = require("config.schema")
local toml = require("config.toml")

local M = {}

M.EXIT_INVALID = 1
M.EXIT_INSECURE = 2

M.schema = schema

local function env_getter(env)
    if env == nil then
        return os.getenv
    end
    if type(env) == "function" then
        return env
    end
    return function(name)
        return env[name]
    end
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    table.sort(keys, function(a, b)
        return tostring(a) < tostring(b)
    end)
    return keys
end

local lua_type, quote = toml.lua_type, toml.quote

local function copy(v)
    if type(v) ~= "table" then
        return v
    end
    local out = {}
    for k, x in pairs(v) do
        out[k] = copy(x)
    end
    return out
end

-- Checks one value against its key spec. Returns the (normalised) value, or nil and the reason.
local function check_value(spec, v)
    if v == false and spec.false_ok then
        return false
    end
    local t = spec.type
    if t == "string" or t == "boolean" then
        if type(v) ~= t then
            return nil, string.format("expected %s, got %s", t, lua_type(v))
        end
        return v
    end
    if t == "integer" or t == "number" then
        if type(v) ~= "number" or v ~= v then
            return nil, string.format("expected %s, got %s", t, lua_type(v))
        end
        if t == "integer" then
            local i = math.tointeger(v)
            if not i then
                return nil, string.format("expected integer, got %s", quote(v))
            end
            v = i
        end
        if spec.min and v < spec.min then
            return nil, string.format("must be >= %s, got %s", spec.min, v)
        end
        if spec.max and v > spec.max then
            return nil, string.format("must be <= %s, got %s", spec.max, v)
        end
        return v
    end
    if t == "enum" then
        if type(v) == "string" then
            for _, allowed in ipairs(spec.values) do
                if v:upper() == allowed:upper() then
                    return allowed
                end
            end
        end
        return nil, string.format("expected one of %s, got %s", table.concat(spec.values, ", "), quote(v))
    end
    if t == "string_list" then
        if type(v) ~= "table" then
            return nil, string.format("expected array of strings, got %s", lua_type(v))
        end
        local n = #v
        for k, x in pairs(v) do
            if math.type(k) ~= "integer" or k < 1 or k > n then
                return nil, string.format("expected array of strings, got key %s", quote(k))
            end
            if type(x) ~= "string" then
                return nil, string.format("expected array of strings, element %d is %s", k, lua_type(x))
            end
        end
        return copy(v)
    end
    if t == "table" then
        if type(v) ~= "table" then
            return nil, string.format("expected table, got %s", lua_type(v))
        end
        for k in pairs(v) do
            if type(k) ~= "string" then
                return nil, string.format("expected table with string keys, got key %s", quote(k))
            end
        end
        return copy(v)
    end
    if t == "api_keys" then
        return M.check_api_keys(v)
    end
    error("config schema: unknown type " .. tostring(t))
end

local API_KEY_FIELDS = { key = true, key_env = true, principal = true, admin = true }

--- Checks server.api_keys: an array of { key = "..." or key_env = "ENV", principal = "name", admin = bool }.
--- Returns a copy (admin defaults to false), or nil and the reason. key_env is resolved later (M.finish).
function M.check_api_keys(v)
    if type(v) ~= "table" then
        return nil, string.format("expected array of tables, got %s", lua_type(v))
    end
    local n = #v
    for k in pairs(v) do
        if math.type(k) ~= "integer" or k < 1 or k > n then
            return nil, string.format("expected array of tables, got key %s", quote(k))
        end
    end
    local out = {}
    for i, e in ipairs(v) do
        local where = string.format("[%d]", i)
        if type(e) ~= "table" then
            return nil, string.format("%s: expected table, got %s", where, lua_type(e))
        end
        for k in pairs(e) do
            if not API_KEY_FIELDS[k] then
                return nil, string.format("%s: unknown field %s", where, quote(k))
            end
        end
        if (e.key == nil) == (e.key_env == nil) then
            return nil, where .. ": exactly one of key and key_env is required"
        end
        if e.key ~= nil and (type(e.key) ~= "string" or not e.key:find("%S")) then
            return nil, where .. ".key: expected a non-blank string"
        end
        if e.key_env ~= nil and (type(e.key_env) ~= "string" or e.key_env == "") then
            return nil, where .. ".key_env: expected the name of an environment variable"
        end
        if type(e.principal) ~= "string" or not e.principal:find("%S") then
            return nil, where .. ".principal: expected a non-blank string"
        end
        if e.admin ~= nil and type(e.admin) ~= "boolean" then
            return nil, string.format("%s.admin: expected boolean, got %s", where, lua_type(e.admin))
        end
        out[i] = { key = e.key, key_env = e.key_env, principal = e.principal, admin = e.admin == true }
    end
    return out
end

--- Validates a configuration table as written in config.lua and returns a new, complete table (every
--- section present, defaults filled in, enums in canonical spelling), or nil and a message naming every bad
--- key ("docker.api_timeout: expected integer, got string"), one per line. No environment is read here.
--- opts.unknown = "warn" reports unknown keys through opts.warn instead of failing.
function M.validate(tbl, opts)
    opts = opts or {}
    local errs = {}
    local function unknown(msg)
        if opts.unknown == "warn" then
            if opts.warn then
                opts.warn(msg)
            end
        else
            errs[#errs + 1] = msg
        end
    end
    if type(tbl) ~= "table" then
        return nil, string.format("configuration: expected a table, got %s", lua_type(tbl))
    end
    for _, name in ipairs(sorted_keys(tbl)) do
        if not schema.sections[name] then
            unknown(string.format("%s: unknown section", tostring(name)))
        elseif type(tbl[name]) ~= "table" then
            errs[#errs + 1] = string.format("%s: expected table, got %s", name, lua_type(tbl[name]))
        end
    end
    local out = {}
    for _, section in ipairs(sorted_keys(schema.sections)) do
        local keys = schema.sections[section]
        local given = type(tbl[section]) == "table" and tbl[section] or {}
        local sec = {}
        for _, key in ipairs(sorted_keys(given)) do
            if not keys[key] then
                unknown(string.format("%s.%s: unknown key", section, tostring(key)))
            end
        end
        for key, spec in pairs(keys) do
            local v = given[key]
            if v == nil then
                sec[key] = copy(spec.default)
            else
                local ok, why = check_value(spec, v)
                if ok == nil then
                    errs[#errs + 1] = string.format("%s.%s: %s", section, key, why)
                else
                    sec[key] = ok
                end
            end
        end
        out[section] = sec
    end
    -- Rules across keys (§8.4): the upstream agent image always listens on 44772, so it cannot share the
    -- host's network with other sandboxes.
    if out.runtime.execd_image and out.docker.network_mode == "host" then
        errs[#errs + 1] = 'runtime.execd_image: cannot be combined with docker.network_mode = "host"'
    end
    if out.runtime.execd_image and out.runtime.type == "kubernetes" then
        errs[#errs + 1] = 'runtime.execd_image: not supported with runtime.type = "kubernetes" (the agent comes '
            .. "from a ConfigMap of the server's own files)"
    end
    if out.metrics.listen then
        local host, port = require("common.metrics").parse_listen(out.metrics.listen)
        if not host then
            errs[#errs + 1] = 'metrics.listen: expected "host:port" (e.g. "127.0.0.1:9464"), got '
                .. string.format("%q", out.metrics.listen)
        elseif port == out.server.port then
            errs[#errs + 1] = "metrics.listen: the port must differ from server.port"
        end
    end
    for i, p in ipairs(out.storage and out.storage.allowed_host_paths or {}) do
        if p:sub(1, 1) ~= "/" then
            errs[#errs + 1] = string.format("storage.allowed_host_paths[%d]: must be an absolute path, got %q", i, p)
        end
    end
    if #errs > 0 then
        table.sort(errs)
        return nil, table.concat(errs, "\n")
    end
    -- Normalise "disabled" limits: no cap is nil, an unlimited pids limit is false.
    if out.server.max_sandbox_timeout_seconds == false then
        out.server.max_sandbox_timeout_seconds = nil
    end
    if out.docker.pids_limit == 0 then
        out.docker.pids_limit = false
    end
    return out
end

-- The environment a config file runs in: safe basics only; each library is a copy, so the file cannot
-- change the server's own.
local function sandbox_env(getenv)
    local env = {
        assert = assert,
        error = error,
        ipairs = ipairs,
        next = next,
        pairs = pairs,
        pcall = pcall,
        select = select,
        tonumber = tonumber,
        tostring = tostring,
        type = type,
        math = copy(math),
        string = copy(string),
        table = copy(table),
        utf8 = copy(utf8),
        os = { getenv = getenv, time = os.time, date = os.date, clock = os.clock },
    }
    env._G = env
    return env
end

local INSTRUCTION_BUDGET = 10000000

--- Runs the config file at `path` and returns its table, or nil and a message. Missing file -> nil, msg, true.
--- With `src`, that text is run instead of the file's (`path` then only names it in messages).
function M.read_file(path, getenv, _, src)
    if not src then
        local f, ferr = io.open(path, "rb")
        if not f then
            return nil, string.format("cannot open config file %s: %s", path, tostring(ferr)), true
        end
        src = f:read("a")
        f:close()
    end
    local chunk, lerr = load(src, "@" .. path, "t", sandbox_env(getenv or os.getenv))
    if not chunk then
        return nil, string.format("config file %s: %s", path, lerr)
    end
    local co = coroutine.create(chunk)
    debug.sethook(co, function()
        error("instruction budget exceeded (an endless loop?)", 2)
    end, "", INSTRUCTION_BUDGET)
    local ok, res = coroutine.resume(co)
    if not ok then
        return nil, string.format("config file %s: %s", path, tostring(res))
    end
    if coroutine.status(co) ~= "dead" then
        return nil, string.format("config file %s: must not yield", path)
    end
    if type(res) ~= "table" then
        return nil, string.format("config file %s: must return a table, got %s", path, lua_type(res))
    end
    return res
end

--- Whether `path` names a TOML file (upstream's format): it ends in .toml (any case).
function M.is_toml(path)
    return type(path) == "string" and path:lower():sub(-5) == ".toml"
end

--- Reads and parses the TOML file at `path` (parse: core.toml's by default). Returns the document, or nil
--- and a message (missing file: nil, msg, true).
function M.read_toml(path, _, parse, text)
    if not text then
        local f, ferr = io.open(path, "rb")
        if not f then
            return nil, string.format("cannot open config file %s: %s", path, tostring(ferr)), true
        end
        text = f:read("a")
        f:close()
    end
    parse = parse or require("core.toml").parse
    local doc, perr = parse(text, path)
    if not doc then
        return nil, string.format("config file %s: %s", path, tostring(perr))
    end
    return doc
end

--- The --config value from an argument list ({"--config", "x"} or {"--config=x"}), or nil.
function M.path_from_args(argv)
    for i, a in ipairs(argv or {}) do
        if a == "--config" then
            return argv[i + 1]
        end
        local v = a:match("^%-%-config=(.*)$")
        if v then
            return v
        end
    end
    return nil
end

--- Every value of a repeatable option (`--name V` or `--name=V`) in an argument list, in order.
function M.values_from_args(argv, name)
    local out, flag = {}, "--" .. name
    for i, a in ipairs(argv or {}) do
        if a == flag and argv[i + 1] then
            out[#out + 1] = argv[i + 1]
        elseif a:sub(1, #flag + 1) == flag .. "=" then
            out[#out + 1] = a:sub(#flag + 2)
        end
    end
    return out
end

local function blank(s)
    return s == nil or not tostring(s):find("%S")
end

local function file_exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
    end
    return f ~= nil
end

--- Which file to read: `path` (--config), else env SANDBOX_CONFIG_PATH, else ./config.lua, else (when
--- ./config.lua does not exist and HOME is set) upstream's ~/.sandbox.toml. Returns the path and whether it
--- was asked for explicitly (the first two: a missing file is then an error). `exists(path)` -> boolean.
function M.config_path(path, getenv, exists)
    if not blank(path) then
        return path, true
    end
    path = getenv("SANDBOX_CONFIG_PATH")
    if not blank(path) then
        return path, true
    end
    local home = getenv("HOME")
    if (exists or file_exists)("./config.lua") or blank(home) then
        return "./config.lua", false
    end
    return (home:gsub("/+$", "")) .. "/.sandbox.toml", false
end

--- Whether `host` is a loopback address: 127.0.0.0/8, ::1 or localhost.
function M.is_loopback(host)
    if type(host) ~= "string" then
        return false
    end
    local h = host:lower():match("^%[(.*)%]$") or host:lower()
    if h == "localhost" or h == "::1" or h == "0:0:0:0:0:0:0:1" then
        return true
    end
    local a, b, c, d = h:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then
        return false
    end
    for _, o in ipairs({ a, b, c, d }) do
        if #o > 3 or tonumber(o) > 255 then
            return false
        end
    end
    return tonumber(a) == 127
end

local function expand_home(path, home)
    if path == "~" or path:sub(1, 2) == "~/" then
        if blank(home) then
            return nil
        end
        return (home:gsub("/+$", "")) .. path:sub(2)
    end
    return path
end

-- An env value that must be an integer >= min; invalid -> warning and nil.
local function env_integer(getenv, name, min, warn)
    local raw = getenv(name)
    if raw == nil or raw == "" then
        return nil
    end
    local s = raw:match("^%s*(%d+)%s*$")
    local v = s and math.tointeger(tonumber(s))
    if not v or v < min then
        warn(string.format("%s=%q is not an integer >= %d; using the configured value or the default", name, raw, min))
        return nil
    end
    return v
end

--- Applies the environment overrides, expands `~` and runs the auth guard on a validated config (in place).
--- Returns cfg, or nil, message, exit code.
function M.finish(cfg, getenv, warn)
    local key = getenv("OPENSANDBOX_SERVER_API_KEY")
    if not blank(key) then
        cfg.server.api_key = key
    elseif blank(cfg.server.api_key) then
        cfg.server.api_key = nil
    end
    local docker_host = getenv("DOCKER_HOST")
    if not blank(docker_host) then
        cfg.docker.host = docker_host
    end
    cfg.docker.api_timeout = env_integer(getenv, "DOCKER_API_TIMEOUT", 1, warn) or cfg.docker.api_timeout
    cfg.server.pending_failure_ttl = env_integer(getenv, "PENDING_FAILURE_TTL", 0, warn)
        or cfg.server.pending_failure_ttl
    cfg.server.insecure = getenv("OPENSANDBOX_INSECURE_SERVER") == "YES"

    -- tenant keys: resolve key_env, refuse duplicates (a key must name one principal)
    local seen = {}
    if cfg.server.api_key then
        seen[cfg.server.api_key] = "server.api_key"
    end
    for i, e in ipairs(cfg.server.api_keys or {}) do
        local where = string.format("server.api_keys[%d]", i)
        if e.key_env then
            local v = getenv(e.key_env)
            if blank(v) then
                return nil, string.format("%s.key_env: environment variable %s is not set or blank", where,
                    e.key_env), M.EXIT_INVALID
            end
            e.key, e.key_env = v, nil
        end
        if seen[e.key] then
            return nil, string.format("%s: the same key is already used by %s", where, seen[e.key]), M.EXIT_INVALID
        end
        seen[e.key] = where
    end

    local home = getenv("HOME")
    for _, k in ipairs({ { "store", "path" }, { "hooks", "dir" }, { "server", "docs_assets_dir" },
        { "server", "routes_dir" },
        { "kubernetes", "kubeconfig_path" }, { "kubernetes", "pod_template_file" } }) do
        local v = cfg[k[1]][k[2]]
        if v then
            local expanded = expand_home(v, home)
            if not expanded then
                return nil, string.format("%s.%s: cannot expand ~ because HOME is not set", k[1], k[2]), M.EXIT_INVALID
            end
            cfg[k[1]][k[2]] = expanded
        end
    end

    local keyless = not cfg.server.api_key and #(cfg.server.api_keys or {}) == 0
    if keyless and not cfg.server.insecure and not M.is_loopback(cfg.server.host) then
        return nil,
            string.format(
                "refusing to start: no API key is configured and server.host %q is not a loopback address. "
                    .. "Set server.api_key, server.api_keys or OPENSANDBOX_SERVER_API_KEY, listen on 127.0.0.1, "
                    .. "or set OPENSANDBOX_INSECURE_SERVER=YES to run without authentication.",
                cfg.server.host
            ),
            M.EXIT_INSECURE
    end
    return cfg
end

--- Loads, validates and finishes the configuration. See the top of this file.
function M.load(path, env, opts)
    opts = opts or {}
    local getenv = env_getter(env)
    local warn = opts.warn or function(msg)
        io.stderr:write("config: warning: ", msg, "\n")
    end
    local explicit
    if opts.text then -- the configuration as text (libopensandbox's osb_config_string): "lua" or "toml"
        path, explicit = opts.format == "toml" and "(config string).toml" or "(config string)", true
    else
        path, explicit = M.config_path(path, getenv, opts.exists)
    end
    local source = path
    local read = M.is_toml(path) and M.read_toml or M.read_file
    local tbl, err, missing = read(path, getenv, opts.toml_parse, opts.text)
    if not tbl then
        if missing and not explicit then
            tbl, source = {}, nil
        else
            return nil, err, M.EXIT_INVALID
        end
    end
    local names, errs = {}, {}
    if source and M.is_toml(path) then
        local notes
        tbl, notes = toml.map(tbl, schema.sections)
        for _, w in ipairs(notes.warnings) do
            warn(w)
        end
        names, errs = notes.names, notes.errors
    end
    local cfg
    cfg, err = M.validate(tbl, { unknown = opts.unknown, warn = warn })
    if not cfg or #errs > 0 then
        for line in ((err or "") .. "\n"):gmatch("(.-)\n") do
            if line ~= "" then
                errs[#errs + 1] = toml.rename(line, names)
            end
        end
        table.sort(errs)
        return nil, string.format("invalid configuration in %s:\n%s", path, table.concat(errs, "\n")), M.EXIT_INVALID
    end
    cfg.source = source -- the file the configuration came from (nil: built-in defaults)
    return M.finish(cfg, getenv, warn)
end

return M
