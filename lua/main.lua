-- The boot script: the first task the engine runs (core/engine.c).
--
-- 1. Command line: --config PATH, --check-config (validate and exit 0/1), --reload (SIGHUP the running
--    server found through its pid file), --version.
-- 2. Configuration (lua/config), log level, auth guard (exit 2).
-- 3. Store (SQLite), the runtime adapter named by runtime.type (lua/runtimes), lifecycle service; connect
--    to the runtime and reconcile before serving (if it is unreachable the server starts anyway and
--    reconnects in the background).
-- 4. HTTP: the API handler (lua/api) on server.host:server.port; GET /metrics alone on metrics.listen.
-- 5. Signals: TERM/INT drain (in the core); HUP reloads the operator routes and the hooks.
-- Embedded (libopensandbox, include/opensandbox.h): core.embed tells what the host program gave (config text,
-- route modules); the boot hands back its failure message (embed.fail) and the in-process call dispatcher
-- (embed.serve, lua/api/inproc.lua).
local core = require("core")
local log = require("core.log")
local uuid = require("core.uuid")
local http = require("core.http")
local client = require("core.client")
local timer = require("core.timer")
local spawn = require("core.spawn")
local config = require("config")
local embed = require("core.embed")
local embedded = embed.info()

local function die(msg, code)
    io.stderr:write("opensandbox-server: ", msg, "\n")
    embed.fail(msg)
    core.stop(code or 1)
end

-- the configuration: from the command line's file, or the text an embedding program gave
local function load_config()
    return config.load(config.path_from_args(core.argv), nil, {
        warn = function(m)
            log.warn(m)
        end,
        text = embedded.config_text,
        format = embedded.config_format,
    })
end

local function has_flag(name)
    for _, a in ipairs(core.argv) do
        if a == name then
            return true
        end
    end
    return false
end

local function main()
    if has_flag("--version") then
        io.stdout:write("opensandbox-server ", core.version, "\n")
        return core.stop(0)
    end
    if has_flag("--help") or has_flag("-h") then
        io.stdout:write([[
usage: opensandbox-server [--config PATH] [--adopt-instance ID]... [--check-config] [--reload] [--version]
  --config PATH    configuration file (default: $SANDBOX_CONFIG_PATH, else ./config.lua, else
                   ~/.sandbox.toml); a PATH ending in .toml is upstream OpenSandbox's TOML format
  --adopt-instance ID  take over the Docker containers of server identity ID (another server's, gone for
                   good; "unlabelled": those made before identities); kept in the store (docker.adopt_instances)
  --check-config   validate the configuration and exit 0 (valid) or 1 (invalid)
  --reload         tell the running server (found through its pid file) to reload its hooks
]])
        return core.stop(0)
    end
    local cfg, err, code = load_config()
    if not cfg then
        return die(err, code)
    end
    log.set_level(cfg.server.log_level)
    if has_flag("--check-config") then
        io.stdout:write("configuration OK", cfg.source and (" (" .. cfg.source .. ")") or " (defaults)", "\n")
        return core.stop(0)
    end

    local state_dir = cfg.store.path:match("^(.*)/[^/]*$") or "."
    local pidfile = state_dir .. "/server.pid"
    if has_flag("--reload") then
        local f = io.open(pidfile, "r")
        local pid = f and tonumber(f:read("l"))
        if f then
            f:close()
        end
        if not pid then
            return die("no running server found (pid file " .. pidfile .. ")", 1)
        end
        local ok, kerr = core.kill(pid, "HUP")
        if not ok then
            return die("cannot signal pid " .. pid .. ": " .. tostring(kerr), 1)
        end
        io.stdout:write("reload requested (pid ", pid, ")\n")
        return core.stop(0)
    end

    -- the scheduling priority, before any thread is made (threads inherit it); a host program embedding the
    -- engine keeps its own
    if cfg.server.nice and embedded.own_process then
        local nok, nerr = core.set_nice(cfg.server.nice)
        if nok then
            log.info("scheduling priority set", { nice = cfg.server.nice })
        else
            log.warn("cannot set the scheduling priority; running at the one it was started with",
                { nice = cfg.server.nice, error = nerr })
        end
    end

    -- state
    local ok, merr = core.mkdirs(state_dir, tonumber("700", 8))
    if not ok then
        return die("cannot create the state directory: " .. tostring(merr), 1)
    end
    local store, serr = require("sandbox.store").open(cfg.store.path, {
        mkdir = function(dir, mode)
            return core.mkdirs(dir, mode)
        end,
        fsync = require("core.fsync"), -- the log flushed on a thread (store.lua, core/fsync.c)
        checkpoint = require("core.checkpoint"), -- and checkpointed on another (core/checkpoint.c)
        log = log,
    })
    if not store then
        return die(serr, 1)
    end

    -- this server's identity (made with the store, kept in it), and the identities it took over: a Docker
    -- server touches only containers labelled with one of them
    local identity, ierr = store:identity(uuid.v4)
    if not identity then
        return die("cannot read the server identity from the store: " .. tostring(ierr), 1)
    end
    local takeover = table.move(cfg.docker.adopt_instances or {}, 1, #(cfg.docker.adopt_instances or {}), 1, {})
    for _, v in ipairs(config.values_from_args(core.argv, "adopt-instance")) do
        takeover[#takeover + 1] = v
    end
    local adopted, aerr = store:adopt_instances(takeover)
    if not adopted then
        return die("cannot record the instances to adopt: " .. tostring(aerr), 1)
    end
    log.info("server identity", { identity = identity, docker_instance = cfg.docker.instance,
        adopted_instances = #adopted > 0 and table.concat(adopted, ",") or nil })

    -- runtime and service
    client.configure({ max_host_connections = 16 })
    -- a long loop over every sandbox (a sweep at thousands) calls this now and then: the task yields until
    -- the loop's next turn, so that requests and other tasks are not held up behind it
    local function breathe()
        timer.sleep(0)
    end
    local runtime = require("runtimes").new(cfg, {
        identity = { server = identity, adopted = adopted },
        client = client,
        log = log,
        agent_files = require("runtimes.agent_files").new({ root = core.paths.root, exe = core.paths.exe, log = log }),
        core = { free_tcp_port = core.free_tcp_port, uuid = uuid, now_s = core.now, breathe = breathe,
            mkdirs = core.mkdirs, chmod = core.chmod, mkfifo = core.mkfifo, poke = core.poke },
    })
    require("api.respond").set_codes(runtime.codes) -- the runtime's names for the service's error codes

    local service, hooks_obj
    if cfg.hooks.dir ~= false then
        local herr
        hooks_obj, herr = require("hooks").new({
            dir = cfg.hooks.dir or (core.paths.root .. "/hooks"),
            config = cfg.hooks.config,
            limits = { instructions = cfg.hooks.instruction_budget, memory_kb = cfg.hooks.memory_budget_mb * 1024 },
            max_timeout = cfg.server.max_sandbox_timeout_seconds,
            log = log,
            spawn = spawn,
            http = client.request,
            now = core.now,
            sandboxes = function()
                return service and service.records or {}
            end,
            usage = function(filter)
                if not service then
                    return { sandboxes = 0, nano_cpus = 0, memory = 0 }
                end
                return service:usage(filter)
            end,
        })
        if not hooks_obj then
            return die("hooks: " .. tostring(herr), 1)
        end
        log.info("hooks loaded", { dir = hooks_obj.dir, hooks = table.concat(hooks_obj:names(), ",") })
    end
    -- the GET /events hub: the service publishes every committed state change into it
    local events_hub = require("sandbox.events").new({
        buffer = cfg.events.buffer,
        now = core.now,
        waiter = require("core.sync").waiter,
        count = require("api.events").count,
    })
    service = require("sandbox.service").new({
        hooks = hooks_obj,
        events = events_hub,
        runtime = runtime,
        store = store,
        log = log,
        config = cfg,
        failure_ttl = cfg.server.pending_failure_ttl,
        core = {
            now_us = function()
                return math.floor(core.now() * 1e6)
            end,
            breathe = breathe,
            monotonic_us = function() -- CLOCK_MONOTONIC, as the agents' (a pool claim's timings)
                return math.floor(core.monotonic() * 1e6)
            end,
            spawn = spawn,
            timer = timer,
            uuid = uuid,
            trim_memory = core.trim_memory,
            hmac_sha256 = core.hmac_sha256,
            proxy_pool_close = http.proxy_pool_close,
            proxy_forget = http.proxy_forget,
        },
    })
    local n, lerr = service:load()
    if not n then
        return die("cannot read the store: " .. tostring(lerr), 1)
    end
    log.info("store loaded", { path = cfg.store.path, sandboxes = n })
    local cok, cerr = service:connect(true)
    if not cok then
        log.error("the runtime is unreachable; serving anyway and retrying", {
            runtime = runtime.name,
            error = tostring(cerr and cerr.message or cerr),
        })
    end
    service:start_background()

    -- HTTP
    local api_deps = {
        config = cfg,
        service = service,
        log = log,
        uuid = uuid,
        now = core.now,
        http = http,
        events = events_hub,
        root = core.paths.root,
        ncpu = function()
            return service.ncpu
        end,
        -- for GET /metrics (lua/api/metrics.lua)
        version = core.version,
        started = core.now(),
        process_stats = core.process_stats,
        proxy_stats = http.proxy_stats,
        static_stats = http.static_stats,
        -- a request that may have written answers once its writes are on disk (store.lua, durable)
        durable = function()
            return store:durable()
        end,
    }
    -- operator routes: server.routes_dir and the route modules of an embedding program
    local operator_routes
    if cfg.server.routes_dir or #embedded.routes > 0 then
        operator_routes = require("api.operator_routes").new({
            dir = cfg.server.routes_dir or nil,
            sources = embedded.routes,
            log = log,
            extra_ctx = { service = service, config = cfg, log = log },
        })
        local rok, rerr = operator_routes:load()
        if not rok then
            return die("operator routes: " .. tostring(rerr), 1)
        end
        log.info("operator routes loaded", { dir = cfg.server.routes_dir or nil, routes = #operator_routes.routes })
    end
    api_deps.operator_routes = operator_routes
    local handler = require("api").new(api_deps)
    http.proxy_configure({
        keepalive = cfg.server.proxy_keepalive,
        keepalive_timeout = cfg.server.proxy_keepalive_timeout,
        -- the credentials a remembered proxy decision is kept under (core/proxy_fast.c)
        key_header = require("api.middleware").API_KEY_HEADER,
        token_header = require("sandbox.constants").PROXY_TOKEN_HEADER,
    })
    embed.serve(require("api.inproc").new(api_deps))
    local port = http.listen({
        host = cfg.server.host,
        port = cfg.server.port,
        handler = handler,
        max_body = 1048576,
        conn_limit = cfg.server.max_connections,
        conn_limit_per_ip = cfg.server.max_connections_per_ip or 0,
        conn_memory = cfg.server.connection_memory,
        conn_timeout = cfg.server.connection_timeout,
        drain_timeout = cfg.server.drain_timeout,
        -- the server proxy's requests start at headers time so that their bodies can stream
        early_paths = { "/sandboxes/*/proxy/", "/v1/sandboxes/*/proxy/" },
        -- what load balancers poll, answered by the core as the handler would (the handler still takes any
        -- request with an Origin, a body or another method)
        static = { ["/health"] = require("api.system").HEALTHY, ["/v1/health"] = require("api.system").HEALTHY },
    })
    -- the separate metrics listener (no API key: meant for a private network)
    if cfg.metrics.enabled and cfg.metrics.listen then
        local mhost, mport = require("common.metrics").parse_listen(cfg.metrics.listen)
        local lok, xerr = pcall(http.listen_extra, {
            host = mhost,
            port = mport,
            handler = require("api.metrics").listener_handler(api_deps),
        })
        if not lok then
            return die("metrics.listen: " .. tostring(xerr), 1)
        end
    end
    local pf = io.open(pidfile, "w")
    if pf then
        pf:write(tostring(core.getpid()), "\n")
        pf:close()
    end
    -- a shutdown ends the event streams at once (they would otherwise hold the drain for drain_timeout)
    for _, sig in ipairs({ "TERM", "INT" }) do
        core.on_signal(sig, function()
            events_hub:close_all()
        end)
    end
    core.on_signal("HUP", function()
        log.info("SIGHUP: reloading")
        http.proxy_forget() -- remembered proxy decisions assumed the old hooks (core/proxy_fast.c)
        if operator_routes then
            local rok, rerr = operator_routes:load()
            if rok then
                log.info("operator routes reloaded", { routes = #operator_routes.routes })
            else
                log.error("operator routes reload failed; the previous routes stay active", { error = tostring(rerr) })
            end
        end
        if not service.hooks then
            return
        end
        -- re-read the configuration so that a changed hooks.config applies too
        local c, lerr2 = load_config()
        if not c then
            log.error("config re-read failed; reloading hooks with the old hooks.config", { error = tostring(lerr2) })
        end
        local reloaded, rerr = service.hooks:reload(c and { config = c.hooks.config } or nil)
        http.proxy_forget() -- (and any remembered while the reload ran)
        if reloaded then
            log.info("hooks reloaded", { hooks = table.concat(service.hooks:names(), ",") })
        else
            log.error("hooks reload failed; the previous hooks stay active", { error = tostring(rerr) })
        end
    end)
    log.info("server ready", { host = cfg.server.host, port = port, version = core.version })
end

main()
