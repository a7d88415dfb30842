-- Upstream OpenSandbox's TOML configuration (`~/.sandbox.toml`, opensandbox-server 1.1.x) mapped onto ours.
--
--   local tbl, notes = require("config.toml").map(doc, schema_sections)
--
-- `doc` is the parsed TOML (core.toml), `schema_sections` lua/config/schema.lua's sections. The result is a
-- table in config.lua's shape, which then goes through the same validation as config.lua (lua/config). notes:
--   warnings = { "section.key: ignored: why", ... }   upstream keys this server does not implement, where
--                                                      ignoring them is safe (logged at startup)
--   errors   = { "section.key: not supported: why" }  keys we cannot honour where ignoring them would be
--                                                      unsafe (the server does not start)
--   names    = { ["server.log_level"] = "log.level" } our key -> the TOML key it came from, so that a
--                                                      validation error names the key the operator wrote
-- Every decision per key is listed in the README ("Configuration in TOML"). A key of a section that is one
-- of ours (and not an upstream key) is taken as it is, so a TOML file can also set what only this server has
-- ([hooks], server.api_keys, kubernetes.pod_template_file ...). Anything else is an unknown key, reported
-- as config.lua reports one.
local M = {}

-- The type name of a value as the configuration's messages say it ("integer" apart from "number"); also
-- config/init.lua's.
local function lua_type(v)
    if math.type(v) == "integer" then
        return "integer"
    end
    return type(v)
end
M.lua_type = lua_type

-- A value as the configuration's messages quote it; also config/init.lua's.
local function quote(v)
    if type(v) == "string" then
        return string.format("%q", v)
    end
    return tostring(v)
end
M.quote = quote

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

-- Reasons shared by several keys.
local PYTHON = "a setting of upstream's Python server (uvicorn, anyio, Python logging); this server has no equivalent"
local EGRESS = "this server enforces networkPolicy itself (no egress sidecar image, always DNS filtering plus a "
    .. "packet filter, the egress API served by the server): the sidecar's settings have no use here"
local NOT_PODS = "this server runs one plain Pod per sandbox (no BatchSandbox, agent-sandbox or fast-sandbox "
    .. "resources); pod settings go in kubernetes.pod_template_file"
local RENEW = "renew on access works through the server proxy: a sandbox asks for it with "
    .. 'extensions["access.renew.extend.seconds"]'

-- Rules, per upstream section and key:
--   to = "section.key"        the value becomes that key of ours (checked by the schema)
--   blank_is_unset = true     "" means "not set" (upstream: an empty profile is Docker's default)
--   if_known = "section.key"  like `to`, when our schema has that key; else ignored with `why`
--   accept = { v, ... }       values that are what this server does anyway (silent); any other value is
--                             ignored with `why` (a warning), or refused when `refuse` is set
--   ignore = "why"            any value is ignored with a warning
--   refuse = "why"            any value (outside `accept`) stops the server
--   fn = function(v, out)     custom; returns nothing, or "warn"/"refuse", why
local RULES = {
    server = {
        host = { to = "server.host" },
        port = { to = "server.port" },
        api_key = { to = "server.api_key" },
        eip = { to = "server.eip" },
        max_sandbox_timeout_seconds = { to = "server.max_sandbox_timeout_seconds" },
        timeout_keep_alive = { to = "server.connection_timeout" },
        timeout_graceful_shutdown = { to = "server.drain_timeout" },
        limit_concurrency = {
            fn = function(v, out)
                if v == 0 then
                    return "warn", "0 (no limit) is not available here; server.max_connections keeps its default"
                end
                out.server.max_connections = v
            end,
            names = "server.max_connections",
        },
        backlog = { ignore = PYTHON },
        thread_pool_size = { ignore = PYTHON },
        loop = { ignore = PYTHON },
        http = { ignore = PYTHON },
    },
    proxy = {
        resolve_internal = { accept = { true }, ignore = "the server proxy always connects to the sandbox's own "
            .. "address (the container's IP on a bridge network)" },
    },
    log = {
        level = { to = "server.log_level" },
        file_enabled = { accept = { false }, ignore = "logs are written to stderr (JSON lines); redirect it" },
        file_path = { ignore = "logs are written to stderr (JSON lines)" },
        access_file_path = { ignore = "logs are written to stderr (JSON lines)" },
        file_max_bytes = { ignore = "logs are written to stderr (JSON lines)" },
        file_backup_count = { ignore = "logs are written to stderr (JSON lines)" },
    },
    otel = {
        enabled = { accept = { false }, ignore = "OpenTelemetry metrics are not exported by this server" },
        endpoint = { ignore = "OpenTelemetry metrics are not exported by this server" },
        service_name = { ignore = "OpenTelemetry metrics are not exported by this server" },
        export_interval_millis = { ignore = "OpenTelemetry metrics are not exported by this server" },
    },
    renew_intent = {
        enabled = { to = "renew_intent.enabled" },
        min_interval_seconds = { to = "renew_intent.min_interval_seconds" },
        redis = { ignore = "no Redis renew-intent consumer here (" .. RENEW .. ")" },
    },
    runtime = {
        type = { to = "runtime.type" },
        execd_image = {
            fn = function(v, out, doc)
                local rt = type(doc.runtime) == "table" and doc.runtime.type
                if type(rt) == "string" and rt:lower() == "kubernetes" then
                    return "warn", "on Kubernetes the built-in agent is used (from a ConfigMap of the server's "
                        .. "own files)"
                end
                out.runtime.execd_image = v
            end,
            names = "runtime.execd_image",
        },
        execd_run_as_init = { accept = { false }, ignore = "the agent runs beside the sandbox's entrypoint, "
            .. "not as its init process" },
    },
    docker = {
        network_mode = { to = "docker.network_mode" },
        api_timeout = { to = "docker.api_timeout" },
        drop_capabilities = { to = "docker.drop_capabilities" },
        no_new_privileges = { to = "docker.no_new_privileges" },
        pids_limit = { to = "docker.pids_limit" },
        apparmor_profile = { to = "docker.apparmor_profile", blank_is_unset = true },
        seccomp_profile = { to = "docker.seccomp_profile", blank_is_unset = true },
        -- upstream's host_ip is the host of endpoint URLs (ours: server.eip); its publish_host is the address
        -- ports are published on (ours: docker.host_ip)
        host_ip = {
            fn = function(v, out, doc)
                if type(doc.server) == "table" and doc.server.eip ~= nil then
                    return "warn", "server.eip is set and is the host of endpoint URLs"
                end
                out.server.eip = v
            end,
            names = "server.eip",
        },
        publish_host = { to = "docker.host_ip", blank_is_unset = true },
        port_range_min = { ignore = "Docker picks a free host port for each published port" },
        port_range_max = { ignore = "Docker picks a free host port for each published port" },
        sandbox_env = {
            fn = function(v, out)
                if out.hooks.dir == false then
                    return "warn", "it is applied by the shipped metadata hook, and hooks.dir = false"
                end
                out.hooks.config = type(out.hooks.config) == "table" and out.hooks.config or {}
                local md = out.hooks.config.metadata
                if md ~= nil and type(md) ~= "table" then
                    return
                end
                md = md or {}
                out.hooks.config.metadata = md
                if type(v) ~= "table" then
                    return "refuse", string.format("expected table, got %s", lua_type(v))
                end
                local env = type(md.env_defaults) == "table" and md.env_defaults or {}
                for k, x in pairs(v) do
                    if type(x) ~= "string" then
                        return "refuse", string.format("expected a table of strings, %s is %s", tostring(k),
                            lua_type(x))
                    end
                    if env[k] == nil then
                        env[k] = x
                    end
                end
                md.env_defaults = env
            end,
        },
        sandbox_binds = { ignore = "no host bind mounts are added to every sandbox" },
    },
    kubernetes = {
        kubeconfig_path = { to = "kubernetes.kubeconfig_path" },
        namespace = { to = "kubernetes.namespace" },
        service_account = { to = "kubernetes.service_account" },
        image_pull_policy = { to = "kubernetes.image_pull_policy" },
        sandbox_create_timeout_seconds = { to = "kubernetes.create_timeout" },
        informer_watch_timeout_seconds = { to = "kubernetes.watch_timeout_seconds" },
        informer_enabled = { accept = { true }, ignore = "the server always watches the namespace's pods" },
        informer_resync_seconds = { ignore = "the pod watch resumes where it stopped; there is no periodic resync" },
        sandbox_create_poll_interval_seconds = { ignore = "a create follows the pod watch, it does not poll" },
        insecure_skip_tls_verify = { accept = { false }, refuse = "TLS to the API server is always verified" },
        read_qps = { qps = true },
        write_qps = { qps = true },
        read_burst = { burst = true },
        write_burst = { burst = true },
        workload_provider = { ignore = NOT_PODS },
        batchsandbox_template_file = { ignore = NOT_PODS .. " (settings in this template do not apply)" },
        pool_acquisition_timeout_seconds = { ignore = NOT_PODS },
        fastpath_endpoint = { ignore = NOT_PODS },
        fastpath_timeout_seconds = { ignore = NOT_PODS },
        fastpath_wait_ready_seconds = { ignore = NOT_PODS },
        fastpath_resource_pool = { ignore = NOT_PODS },
        template_s3_publish_secret = { ignore = NOT_PODS },
        snapshot_create_timeout_seconds = { ignore = "no Kubernetes snapshot controller is used" },
        execd_init_resources = { ignore = "the agent comes from a ConfigMap; there is no init container" },
    },
    ingress = {
        mode = { accept = { "direct" }, refuse = "endpoints are direct (or through the server proxy); gateway "
            .. "ingress is not supported" },
        gateway = { refuse = "gateway ingress is not supported" },
        secure_access = { refuse = "signed endpoint routes (OSEP-0011) are not supported, and ignoring them "
            .. "would leave endpoints unprotected" },
    },
    egress = {
        image = { ignore = EGRESS },
        mode = { ignore = EGRESS },
        disable_ipv6 = { ignore = EGRESS },
        otlp_endpoint = { ignore = EGRESS },
        readiness_timeout_seconds = { ignore = EGRESS },
        requests = { ignore = EGRESS },
        limits = { ignore = EGRESS },
        upstream_proxy = { ignore = EGRESS },
    },
    storage = {
        allowed_host_paths = { if_known = "storage.allowed_host_paths",
            why = "host volumes are not supported by this server (refused)" },
        volume_default_size = { if_known = "storage.volume_default_size",
            why = "this server does not create PersistentVolumeClaims" },
        ossfs_mount_root = { ignore = "ossfs volumes are not supported (refused)" },
    },
    store = {
        type = { accept = { "sqlite" }, refuse = "the store is SQLite (store.path); another backend would "
            .. "silently keep the state in a local file instead" },
        path = { to = "store.path" },
        postgresql = { ignore = "the store is SQLite (store.path)" },
    },
    -- whole sections (upstream acts on their presence, even empty): see SECTIONS below
    tenants = {},
    agent_sandbox = {},
    secure_runtime = {
        type = { secure = true },
        docker_runtime = { secure = true },
        k8s_runtime_class = { secure = true },
    },
}

M.RULES = RULES

-- Sections judged as a whole, once, whatever keys they have (an empty one included).
local SECTIONS = {
    tenants = { refuse = "tenants are server.api_keys here (key or key_env, principal, admin); ignoring "
        .. "[tenants] would serve requests without the tenants' keys and isolation" },
    agent_sandbox = { ignore = NOT_PODS },
}

-- The upstream keys that are a table in TOML but one value to a rule (not recursed into).
local function join(section, key)
    return section .. "." .. tostring(key)
end

local function set_path(out, path, v)
    local s, k = path:match("^([^.]+)%.(.+)$")
    out[s] = out[s] or {}
    out[s][k] = v
end

local function known(sections, path)
    local s, k = path:match("^([^.]+)%.(.+)$")
    return sections[s] ~= nil and sections[s][k] ~= nil
end

-- [secure_runtime]: type "" (none), or gvisor / kata with the Docker OCI runtime name on Docker. Anything the
-- server cannot apply is refused: ignoring it would run sandboxes without the isolation asked for.
local function secure_runtime(sec, rt, out, refuse)
    local t = sec.type == nil and "" or sec.type
    if type(t) ~= "string" then
        return refuse("secure_runtime.type", string.format("expected string, got %s", lua_type(t)))
    end
    if t == "" then
        if sec.docker_runtime ~= nil or sec.k8s_runtime_class ~= nil then
            refuse("secure_runtime.type", 'docker_runtime and k8s_runtime_class must be omitted when type is ""')
        end
        return
    end
    if t ~= "gvisor" and t ~= "kata" and t ~= "firecracker" then
        return refuse("secure_runtime.type", "expected one of \"\", gvisor, kata, firecracker, got " .. quote(t))
    end
    if rt == "kubernetes" then
        return refuse("secure_runtime.k8s_runtime_class", "a RuntimeClass is not set by this server: put "
            .. "runtimeClassName in kubernetes.pod_template_file and leave [secure_runtime] out")
    end
    if t == "firecracker" then
        return refuse("secure_runtime.type", 'firecracker is only available with runtime.type = "kubernetes"')
    end
    if sec.docker_runtime == nil or sec.docker_runtime == "" then
        return refuse("secure_runtime.docker_runtime", "required on Docker when type is " .. quote(t)
            .. " (else sandboxes would run on the default runtime)")
    end
    out.docker.runtime = sec.docker_runtime
    return "docker.runtime", "secure_runtime.docker_runtime"
end

-- read/write qps and burst: this server has one limit for reads and one for writes, both with the same
-- numbers (kubernetes.api_qps, api_burst). 0 upstream means unlimited (qps) or "qps as burst".
local function k8s_limits(sec, out, warn, names)
    for _, pair in ipairs({ { "read_qps", "write_qps", "api_qps" }, { "read_burst", "write_burst", "api_burst" } }) do
        local a, b, target = sec[pair[1]], sec[pair[2]], pair[3]
        local chosen, from
        for _, k in ipairs({ pair[1], pair[2] }) do
            local v = sec[k]
            if v ~= nil then
                if type(v) ~= "number" then
                    chosen, from = v, k -- the schema reports the type
                    break
                elseif v == 0 then
                    warn("kubernetes." .. k, "0 (no limit) is not available here; kubernetes." .. target
                        .. " keeps its default")
                elseif chosen == nil or v < chosen then
                    chosen, from = v, k
                end
            end
        end
        if chosen ~= nil then
            if type(a) == "number" and type(b) == "number" and a > 0 and b > 0 and a ~= b then
                warn("kubernetes." .. (from == pair[1] and pair[2] or pair[1]), "reads and writes have the same "
                    .. "limit here; the lower one applies (" .. tostring(chosen) .. ")")
            end
            out.kubernetes[target] = chosen
            names["kubernetes." .. target] = "kubernetes." .. from
        end
    end
end

--- Maps a parsed upstream TOML document onto config.lua's shape. See the top of this file.
function M.map(doc, sections)
    local out = { server = {}, runtime = {}, docker = {}, kubernetes = {}, store = {}, hooks = {}, proxy = {} }
    local notes = { warnings = {}, errors = {}, names = {} }
    local function warn(key, why)
        notes.warnings[#notes.warnings + 1] = key .. ": ignored: " .. why
    end
    local function refuse(key, why)
        notes.errors[#notes.errors + 1] = key .. ": not supported: " .. why
    end
    if type(doc) ~= "table" then
        notes.errors[1] = "configuration: expected a table, got " .. lua_type(doc)
        return out, notes
    end
    -- native keys first (a section of ours written in TOML), so that upstream keys can add to them
    local upstream_rules = {}
    for _, section in ipairs(sorted_keys(doc)) do
        local given = doc[section]
        local rules = RULES[section]
        if rules == nil and sections[section] == nil then
            notes.errors[#notes.errors + 1] = tostring(section) .. ": unknown section"
        elseif SECTIONS[section] then
            if SECTIONS[section].refuse then
                refuse(section, SECTIONS[section].refuse)
            else
                warn(section, SECTIONS[section].ignore)
            end
        elseif type(given) ~= "table" then
            notes.errors[#notes.errors + 1] = string.format("%s: expected table, got %s", section, lua_type(given))
        else
            for _, key in ipairs(sorted_keys(given)) do
                local rule = rules and (rules[key] or rules["*"])
                if rule then
                    upstream_rules[#upstream_rules + 1] = { section, key, rule }
                elseif sections[section] and sections[section][key] ~= nil then
                    out[section] = out[section] or {}
                    out[section][key] = given[key]
                else
                    notes.errors[#notes.errors + 1] = join(section, key) .. ": unknown key"
                end
            end
        end
    end
    local rt = type(doc.runtime) == "table" and type(doc.runtime.type) == "string" and doc.runtime.type:lower()
        or "docker"
    local k8s_done, secure_done = false, false
    for _, r in ipairs(upstream_rules) do
        local section, key, rule = r[1], r[2], r[3]
        local v, name = doc[section][key], join(section, key)
        if rule.to or (rule.if_known and known(sections, rule.if_known)) then
            local target = rule.to or rule.if_known
            if rule.blank_is_unset and v == "" then
                v = nil
            end
            set_path(out, target, v)
            if target ~= name then
                notes.names[target] = name
            end
        elseif rule.if_known then
            warn(name, rule.why)
        elseif rule.accept then
            local ok = false
            for _, a in ipairs(rule.accept) do
                ok = ok or v == a
            end
            if not ok then
                local why = string.format("%s (got %s)", rule.refuse or rule.ignore, quote(v))
                if rule.refuse then
                    refuse(name, why)
                else
                    warn(name, why)
                end
            end
        elseif rule.ignore then
            warn(name, rule.ignore)
        elseif rule.refuse then
            refuse(name, rule.refuse)
        elseif rule.qps or rule.burst then
            if not k8s_done then
                k8s_done = true
                k8s_limits(doc.kubernetes, out, warn, notes.names)
            end
        elseif rule.secure then
            if not secure_done then
                secure_done = true
                local target, from = secure_runtime(doc.secure_runtime, rt, out, refuse)
                if target then
                    notes.names[target] = from
                end
            end
        elseif rule.fn then
            local what, why = rule.fn(v, out, doc)
            if what == "warn" then
                warn(name, why)
            elseif what == "refuse" then
                notes.errors[#notes.errors + 1] = name .. ": " .. why
            end
            if rule.names then
                notes.names[rule.names] = name
            end
        end
    end
    -- upstream's rules across sections: a Docker configuration has no [kubernetes] or [agent_sandbox]
    if rt == "docker" then
        for _, s in ipairs({ "kubernetes", "agent_sandbox" }) do
            if doc[s] ~= nil then
                notes.errors[#notes.errors + 1] = s .. ': must be omitted when runtime.type = "docker"'
            end
        end
    end
    for s, t in pairs(out) do
        if next(t) == nil and doc[s] == nil then
            out[s] = nil
        end
    end
    table.sort(notes.warnings)
    return out, notes
end

--- Rewrites "section.key: ..." lines of a validation message to name the TOML key the value came from.
function M.rename(message, names)
    local lines = {}
    for line in (message .. "\n"):gmatch("(.-)\n") do
        local key, rest = line:match("^([%w_]+%.[%w_]+)(.*)$")
        if key and names[key] then
            line = names[key] .. rest
        end
        lines[#lines + 1] = line
    end
    return table.concat(lines, "\n")
end

return M
