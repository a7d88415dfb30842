-- Upstream's TOML configuration (lua/config/toml.lua through config.load). The TOML parser itself (core.toml,
-- C++) is covered by tests/c/scenarios/toml.lua; here a parsed document is given as the Lua table core.toml
-- makes of it (opts.toml_parse), and config.load does everything else as it does in the server.
local config = require("config")
local tomlmap = require("config.toml")

local function tmpfile(content, suffix)
    local p = os.tmpname() .. (suffix or ".toml")
    local f = assert(io.open(p, "wb"))
    f:write(content or "")
    f:close()
    return p
end

-- Loads `doc` as if it were the TOML file's content. Returns cfg, err, code, warnings.
local function load(doc, env)
    env = env or {}
    env.HOME = env.HOME or "/home/u"
    local path = tmpfile("# parsed by the fake parser\n")
    local warnings = {}
    local cfg, err, code = config.load(path, env, {
        warn = function(m)
            warnings[#warnings + 1] = m
        end,
        toml_parse = function(text, name)
            assert.equal("# parsed by the fake parser\n", text)
            assert.equal(path, name)
            return doc
        end,
    })
    os.remove(path)
    return cfg, err, code, warnings
end

local function has(list, pattern)
    for _, s in ipairs(list) do
        if s:find(pattern, 1, true) then
            return true
        end
    end
    return false
end

-- The keys and values of upstream's example.config.toml (Docker), as our own fixture.
local function upstream_docker()
    return {
        server = { host = "127.0.0.1", port = 8080, max_sandbox_timeout_seconds = 86400 },
        proxy = { resolve_internal = true },
        log = { level = "INFO" },
        runtime = { type = "docker", execd_image = "registry.example/execd:v9" },
        storage = { allowed_host_paths = {}, volume_default_size = "1Gi" },
        store = { type = "sqlite", path = "~/.opensandbox/opensandbox.db" },
        docker = { network_mode = "bridge", port_range_min = 40000, port_range_max = 60000,
            drop_capabilities = { "AUDIT_WRITE", "MKNOD", "NET_ADMIN" }, no_new_privileges = true,
            apparmor_profile = "", pids_limit = 4096, seccomp_profile = "" },
        ingress = { mode = "direct" },
        egress = { image = "registry.example/egress:v9", mode = "dns", readiness_timeout_seconds = 30.0 },
        renew_intent = { enabled = false, min_interval_seconds = 60 },
    }
end

-- The keys and values of upstream's example.config.k8s.toml, as our own fixture.
local function upstream_k8s()
    return {
        server = { host = "0.0.0.0", port = 8080, max_sandbox_timeout_seconds = 86400 },
        proxy = { resolve_internal = true },
        log = { level = "INFO" },
        runtime = { type = "kubernetes", execd_image = "registry.example/execd:v9" },
        storage = { allowed_host_paths = {}, volume_default_size = "1Gi" },
        store = { type = "sqlite", path = "~/.opensandbox/opensandbox.db" },
        kubernetes = { kubeconfig_path = "~/.kube/config", namespace = "opensandbox", informer_resync_seconds = 300,
            informer_watch_timeout_seconds = 60, workload_provider = "batchsandbox", image_pull_policy = "IfNotPresent",
            batchsandbox_template_file = "~/batchsandbox-template.yaml" },
        ingress = { mode = "direct" },
        egress = { image = "registry.example/egress:v9", mode = "dns" },
        renew_intent = { enabled = false, min_interval_seconds = 60, redis = { enabled = false } },
    }
end

describe("TOML configuration: upstream's examples", function()
    it("loads the Docker example: mapped keys set, the rest warned about by name", function()
        local cfg, err, _, w = load(upstream_docker(), { HOME = "/home/u" })
        assert.is_nil(err)
        assert.equal("127.0.0.1", cfg.server.host)
        assert.equal(8080, cfg.server.port)
        assert.equal(86400, cfg.server.max_sandbox_timeout_seconds)
        assert.equal("INFO", cfg.server.log_level)
        assert.equal("docker", cfg.runtime.type)
        assert.equal("registry.example/execd:v9", cfg.runtime.execd_image)
        assert.equal("bridge", cfg.docker.network_mode)
        assert.same({ "AUDIT_WRITE", "MKNOD", "NET_ADMIN" }, cfg.docker.drop_capabilities)
        assert.is_true(cfg.docker.no_new_privileges)
        assert.equal(4096, cfg.docker.pids_limit)
        assert.is_nil(cfg.docker.apparmor_profile) -- "" is Docker's default upstream
        assert.is_nil(cfg.docker.seccomp_profile)
        assert.equal("/home/u/.opensandbox/opensandbox.db", cfg.store.path)
        for _, key in ipairs({ "docker.port_range_min", "docker.port_range_max", "egress.image", "egress.mode",
            "egress.readiness_timeout_seconds" }) do
            assert.is_true(has(w, key .. ": ignored: "), key .. " not warned about:\n" .. table.concat(w, "\n"))
        end
        -- renew on access maps onto ours (upstream's example turns it off)
        assert.is_false(cfg.renew_intent.enabled)
        assert.equal(60, cfg.renew_intent.min_interval_seconds)
        assert.is_false(has(w, "renew_intent.enabled"))
        -- what this server does anyway is accepted silently
        for _, key in ipairs({ "proxy.resolve_internal", "ingress.mode", "store.type", "log.level", "server.port" }) do
            assert.is_false(has(w, key), key)
        end
    end)

    it("loads the Kubernetes example (its host needs the insecure acknowledgement, as upstream's does)", function()
        local _, err, code = load(upstream_k8s(), { HOME = "/home/u" })
        assert.equal(config.EXIT_INSECURE, code)
        assert.truthy(err:find("OPENSANDBOX_INSECURE_SERVER=YES", 1, true))
        local cfg, err2, _, w = load(upstream_k8s(), { HOME = "/home/u", OPENSANDBOX_INSECURE_SERVER = "YES" })
        assert.is_nil(err2)
        assert.equal("kubernetes", cfg.runtime.type)
        assert.equal("/home/u/.kube/config", cfg.kubernetes.kubeconfig_path)
        assert.equal("opensandbox", cfg.kubernetes.namespace)
        assert.equal("IfNotPresent", cfg.kubernetes.image_pull_policy)
        assert.equal(60, cfg.kubernetes.watch_timeout_seconds)
        assert.is_nil(cfg.runtime.execd_image) -- the built-in agent on Kubernetes
        for _, key in ipairs({ "runtime.execd_image", "kubernetes.workload_provider",
            "kubernetes.informer_resync_seconds",
            "kubernetes.batchsandbox_template_file", "renew_intent.redis", "egress.image" }) do
            assert.is_true(has(w, key .. ": ignored: "), key .. " not warned about:\n" .. table.concat(w, "\n"))
        end
    end)
end)

describe("TOML configuration: mapping", function()
    it("maps every upstream key that has a counterpart", function()
        local cfg, err = load({
            server = { host = "127.0.0.2", port = 9000, api_key = "k", eip = "sandbox.example",
                max_sandbox_timeout_seconds = 600, timeout_keep_alive = 45, timeout_graceful_shutdown = 3,
                limit_concurrency = 77 },
            log = { level = "debug" },
            runtime = { type = "docker" },
            docker = { network_mode = "host", api_timeout = 30, no_new_privileges = false, pids_limit = 0,
                apparmor_profile = "docker-default", seccomp_profile = "/etc/seccomp.json",
                publish_host = "10.0.0.5", sandbox_env = { NODE_EXTRA_CA_CERTS = "/ca.pem" } },
            secure_runtime = { type = "gvisor", docker_runtime = "runsc" },
            store = { path = "/var/lib/x.db" },
        })
        assert.is_nil(err)
        local s = cfg.server
        assert.same({ "127.0.0.2", 9000, "k", "sandbox.example", 600, 45, 3, 77, "DEBUG" }, { s.host, s.port,
            s.api_key, s.eip, s.max_sandbox_timeout_seconds, s.connection_timeout, s.drain_timeout,
            s.max_connections, s.log_level })
        local d = cfg.docker
        assert.same({ "host", 30, false, false, "docker-default", "/etc/seccomp.json", "10.0.0.5", "runsc" },
            { d.network_mode, d.api_timeout, d.no_new_privileges, d.pids_limit, d.apparmor_profile,
                d.seccomp_profile, d.host_ip, d.runtime })
        assert.same({ NODE_EXTRA_CA_CERTS = "/ca.pem" }, cfg.hooks.config.metadata.env_defaults)
        assert.equal("/var/lib/x.db", cfg.store.path)
    end)

    it("takes docker.host_ip as the host of endpoint URLs (server.eip), unless server.eip is set", function()
        local cfg = load({ docker = { host_ip = "host.docker.internal" } })
        assert.equal("host.docker.internal", cfg.server.eip)
        assert.equal("127.0.0.1", cfg.docker.host_ip) -- the publish address keeps our default
        local cfg2, _, _, w = load({ server = { eip = "a.example" }, docker = { host_ip = "b.example" } })
        assert.equal("a.example", cfg2.server.eip)
        assert.is_true(has(w, "docker.host_ip: ignored: server.eip is set"))
    end)

    it("maps the Kubernetes client limits onto one limit for reads and writes", function()
        local cfg, _, _, w = load({ runtime = { type = "kubernetes" }, kubernetes = { read_qps = 20.0, write_qps = 5,
            read_burst = 40, write_burst = 40, sandbox_create_timeout_seconds = 90, service_account = "sb",
            informer_enabled = true, insecure_skip_tls_verify = false } })
        assert.equal(5, cfg.kubernetes.api_qps)
        assert.equal(40, cfg.kubernetes.api_burst)
        assert.equal(90, cfg.kubernetes.create_timeout)
        assert.equal("sb", cfg.kubernetes.service_account)
        assert.is_true(has(w, "kubernetes.read_qps: ignored: reads and writes have the same limit here"))
        assert.is_false(has(w, "informer_enabled"))
        assert.is_false(has(w, "insecure_skip_tls_verify"))
        local cfg2, _, _, w2 = load({ runtime = { type = "kubernetes" }, kubernetes = { read_qps = 0 } })
        assert.equal(50, cfg2.kubernetes.api_qps)
        assert.is_true(has(w2, "kubernetes.read_qps: ignored: 0 (no limit) is not available here"))
    end)

    it("keeps a key set by the request's env over docker.sandbox_env (env_defaults of the metadata hook)", function()
        local cfg = load({ hooks = { config = { metadata = { env_defaults = { A = "native" } } } },
            docker = { sandbox_env = { A = "toml", B = "toml" } } })
        assert.same({ A = "native", B = "toml" }, cfg.hooks.config.metadata.env_defaults)
        local _, _, _, w = load({ hooks = { dir = false }, docker = { sandbox_env = { A = "x" } } })
        assert.is_true(has(w, "docker.sandbox_env: ignored: it is applied by the shipped metadata hook"))
    end)

    it("takes this server's own keys in TOML too", function()
        local cfg, err = load({
            server = { api_keys = { { key = "team-a-key", principal = "team-a" } }, auth_failure_limit = 5 },
            hooks = { dir = false, instruction_budget = 5000 },
            proxy = { resolve_internal = true, header_timeout = 2.5 },
            docker = { instance = "blue", agent_delivery = "archive" },
        })
        assert.is_nil(err)
        assert.equal("team-a", cfg.server.api_keys[1].principal)
        assert.equal(5, cfg.server.auth_failure_limit)
        assert.is_false(cfg.hooks.dir)
        assert.equal(5000, cfg.hooks.instruction_budget)
        assert.equal(2.5, cfg.proxy.header_timeout)
        assert.equal("blue", cfg.docker.instance)
        assert.equal("archive", cfg.docker.agent_delivery)
    end)

    it("applies the environment overrides and the auth guard as for config.lua", function()
        local cfg = load({ server = { host = "0.0.0.0" } }, { OPENSANDBOX_SERVER_API_KEY = "from-env" })
        assert.equal("from-env", cfg.server.api_key)
        local _, err, code = load({ server = { host = "0.0.0.0", api_key = "" } })
        assert.equal(config.EXIT_INSECURE, code)
        assert.truthy(err:find("refusing to start", 1, true))
    end)
end)

describe("TOML configuration: keys this server does not implement", function()
    local ignored = {
        { "server", "backlog", 2048 }, { "server", "thread_pool_size", 200 }, { "server", "loop", "auto" },
        { "server", "http", "auto" }, { "proxy", "resolve_internal", false }, { "log", "file_enabled", true },
        { "log", "file_path", "/x.log" }, { "log", "access_file_path", "/a.log" }, { "log", "file_max_bytes", 1 },
        { "log", "file_backup_count", 1 }, { "otel", "enabled", true }, { "otel", "endpoint", "http://c:4318" },
        { "runtime", "execd_run_as_init", true }, { "docker", "sandbox_binds", { "/a:/b:ro" } },
        { "docker", "port_range_min", 40000 }, { "egress", "upstream_proxy", { url = "http://p:3128" } },
        { "egress", "disable_ipv6", false }, { "egress", "otlp_endpoint", "http://c:4318" },
        { "egress", "requests", { cpu = "1" } }, { "egress", "limits", { cpu = "1" } },
        { "storage", "ossfs_mount_root", "/mnt/ossfs" }, { "store", "postgresql", { min_pool_size = 1 } },
        { "renew_intent", "redis", { enabled = true, dsn = "redis://r" } },
    }
    for _, c in ipairs(ignored) do
        it("warns about " .. c[1] .. "." .. c[2] .. " and starts", function()
            local cfg, err, _, w = load({ [c[1]] = { [c[2]] = c[3] } })
            assert.is_nil(err)
            assert.truthy(cfg)
            assert.is_true(has(w, c[1] .. "." .. c[2] .. ": ignored: "), table.concat(w, "\n"))
        end)
    end

    it("warns about the Kubernetes keys that have no counterpart", function()
        local keys = { informer_enabled = false, informer_resync_seconds = 1, sandbox_create_poll_interval_seconds = 1,
            workload_provider = "agent-sandbox", batchsandbox_template_file = "/t.yaml", execd_init_resources = {},
            pool_acquisition_timeout_seconds = 1, fastpath_endpoint = "x", fastpath_timeout_seconds = 1,
            fastpath_wait_ready_seconds = 1, fastpath_resource_pool = "x", template_s3_publish_secret = "x",
            snapshot_create_timeout_seconds = 1 }
        local _, err, _, w = load({ runtime = { type = "kubernetes" }, kubernetes = keys,
            agent_sandbox = { shutdown_policy = "Retain" } })
        assert.is_nil(err)
        for k in pairs(keys) do
            assert.is_true(has(w, "kubernetes." .. k .. ": ignored: "), k)
        end
        assert.is_true(has(w, "agent_sandbox: ignored: "))
    end)

    local refused = {
        { { tenants = { provider = "file" } }, "tenants: not supported: tenants are server.api_keys here" },
        { { tenants = {} }, "tenants: not supported: tenants are server.api_keys here" },
        { { ingress = { mode = "gateway", gateway = { address = "gw.example", route = { mode = "uri" } } } },
            "ingress.gateway: not supported: gateway ingress" },
        { { ingress = { mode = "gateway" } }, 'ingress.mode: not supported: endpoints are direct (or through the '
            .. 'server proxy); gateway ingress is not supported (got "gateway")' },
        { { ingress = { secure_access = { active_key = "a" } } }, "ingress.secure_access: not supported: signed" },
        { { store = { type = "postgresql" } }, "store.type: not supported: the store is SQLite" },
        { { runtime = { type = "kubernetes" }, kubernetes = { insecure_skip_tls_verify = true } },
            "kubernetes.insecure_skip_tls_verify: not supported: TLS to the API server is always verified" },
        { { secure_runtime = { type = "gvisor" } },
            "secure_runtime.docker_runtime: not supported: required on Docker" },
        { { secure_runtime = { type = "firecracker", k8s_runtime_class = "kata-fc" } },
            'secure_runtime.type: not supported: firecracker is only available with runtime.type = "kubernetes"' },
        { { runtime = { type = "kubernetes" }, secure_runtime = { type = "kata", k8s_runtime_class = "kata-qemu" } },
            "secure_runtime.k8s_runtime_class: not supported: a RuntimeClass is not set by this server" },
        { { secure_runtime = { type = "", docker_runtime = "runsc" } },
            'secure_runtime.type: not supported: docker_runtime and k8s_runtime_class must be omitted' },
        { { runtime = { type = "docker" }, kubernetes = { namespace = "x" } },
            'kubernetes: must be omitted when runtime.type = "docker"' },
    }
    for _, c in ipairs(refused) do
        it("refuses to start: " .. c[2], function()
            local cfg, err, code = load(c[1])
            assert.is_nil(cfg)
            assert.equal(config.EXIT_INVALID, code)
            assert.truthy(err:find(c[2], 1, true), err)
        end)
    end

    it("accepts, silently, the values that are what this server does anyway", function()
        local _, err, _, w = load({ proxy = { resolve_internal = true }, log = { file_enabled = false },
            otel = { enabled = false }, runtime = { execd_run_as_init = false }, ingress = { mode = "direct" },
            store = { type = "sqlite" }, secure_runtime = { type = "" } })
        assert.is_nil(err)
        assert.same({}, w)
    end)
end)

describe("TOML configuration: errors name the TOML key, with config.lua's messages", function()
    -- each: TOML document, config.lua table with the same mistake, the key the TOML message must name
    local cases = {
        { { server = { port = "x" } }, { server = { port = "x" } }, "server.port" },
        { { server = { port = 70000 } }, { server = { port = 70000 } }, "server.port" },
        { { log = { level = "LOUD" } }, { server = { log_level = "LOUD" } }, "log.level" },
        { { server = { timeout_keep_alive = "1" } }, { server = { connection_timeout = "1" } },
            "server.timeout_keep_alive" },
        { { server = { limit_concurrency = -1 } }, { server = { max_connections = -1 } }, "server.limit_concurrency" },
        { { docker = { pids_limit = -1 } }, { docker = { pids_limit = -1 } }, "docker.pids_limit" },
        { { docker = { drop_capabilities = { 1 } } }, { docker = { drop_capabilities = { 1 } } },
            "docker.drop_capabilities" },
        { { docker = { publish_host = 5 } }, { docker = { host_ip = 5 } }, "docker.publish_host" },
        { { docker = { host_ip = true } }, { server = { eip = true } }, "docker.host_ip" },
        { { runtime = { type = "vm" } }, { runtime = { type = "vm" } }, "runtime.type" },
        { { kubernetes = { sandbox_create_timeout_seconds = 0 }, runtime = { type = "kubernetes" } },
            { kubernetes = { create_timeout = 0 }, runtime = { type = "kubernetes" } },
            "kubernetes.sandbox_create_timeout_seconds" },
        { { kubernetes = { write_qps = "fast" }, runtime = { type = "kubernetes" } },
            { kubernetes = { api_qps = "fast" }, runtime = { type = "kubernetes" } }, "kubernetes.write_qps" },
        { { store = { path = 1 } }, { store = { path = 1 } }, "store.path" },
        { { secure_runtime = { type = "gvisor", docker_runtime = 7 } }, { docker = { runtime = 7 } },
            "secure_runtime.docker_runtime" },
    }
    for _, c in ipairs(cases) do
        it(c[3], function()
            local _, lua_err = config.validate(c[2])
            local reason = lua_err:match("^[%w_]+%.[%w_]+(: .*)$")
            assert.truthy(reason, lua_err)
            local cfg, err, code = load(c[1])
            assert.is_nil(cfg)
            assert.equal(config.EXIT_INVALID, code)
            assert.truthy(err:find("\n" .. c[3] .. reason, 1, true), err .. "\nwanted: " .. c[3] .. reason)
        end)
    end

    it("reports unknown sections and keys as config.lua does, all at once", function()
        local _, err = load({ nope = {}, server = { bogus = 1, port = "x" }, hooks = { also_bogus = true } })
        local _, lua_err = config.validate({ nope = {}, server = { bogus = 1, port = "x" },
            hooks = { also_bogus = true } })
        assert.equal(lua_err, (err:gsub("^invalid configuration in [^\n]*\n", "")))
        assert.truthy(err:find("nope: unknown section\n", 1, true))
        assert.truthy(err:find("server.bogus: unknown key", 1, true))
    end)

    it("names the file and the parser's line and column for a syntax error", function()
        local path = tmpfile("x")
        local cfg, err, code = config.load(path, {}, { toml_parse = function(_, name)
            return nil, name .. ":3:7: Error while parsing key-value pair: expected value"
        end })
        os.remove(path)
        assert.is_nil(cfg)
        assert.equal(config.EXIT_INVALID, code)
        assert.equal("config file " .. path .. ": " .. path
            .. ":3:7: Error while parsing key-value pair: expected value", err)
    end)

    it("a section that is not a table", function()
        local _, err = load({ server = "x" })
        assert.truthy(err:find("\nserver: expected table, got string", 1, true), err)
    end)
end)

describe("TOML configuration: which file", function()
    local function env(t)
        return function(k)
            return t[k]
        end
    end
    local function exists(set)
        return function(p)
            return set[p] == true
        end
    end

    it("--config first, then SANDBOX_CONFIG_PATH, then ./config.lua, then ~/.sandbox.toml", function()
        local e = env({ SANDBOX_CONFIG_PATH = "/etc/osb.toml", HOME = "/home/u/" })
        assert.same({ "/x.toml", true }, { config.config_path("/x.toml", e, exists({})) })
        assert.same({ "/etc/osb.toml", true }, { config.config_path(nil, e, exists({})) })
        local e2 = env({ HOME = "/home/u/" })
        assert.same({ "./config.lua", false }, { config.config_path(nil, e2, exists({ ["./config.lua"] = true })) })
        assert.same({ "/home/u/.sandbox.toml", false }, { config.config_path(nil, e2, exists({})) })
        assert.same({ "./config.lua", false }, { config.config_path("", env({}), exists({})) })
    end)

    it("reads TOML by the extension (any case), Lua otherwise", function()
        assert.is_true(config.is_toml("/a/b.toml"))
        assert.is_true(config.is_toml("B.TOML"))
        assert.is_false(config.is_toml("/a/config.lua"))
        assert.is_false(config.is_toml("/a/toml"))
        -- a .lua path is run as Lua, even when it holds TOML
        local p = tmpfile('[server]\nport = 1\n', ".lua")
        local cfg, err = config.load(p, {})
        os.remove(p)
        assert.is_nil(cfg)
        assert.truthy(err:find("config file", 1, true))
    end)

    it("a missing explicit TOML file is an error; a missing ~/.sandbox.toml means the defaults", function()
        local cfg, err, code = config.load("/nonexistent/x.toml", {}, { toml_parse = error })
        assert.is_nil(cfg)
        assert.equal(config.EXIT_INVALID, code)
        assert.truthy(err:find("cannot open config file /nonexistent/x.toml", 1, true))
        local cfg2 = assert(config.load(nil, { HOME = "/nonexistent-home" }, { toml_parse = error,
            exists = function()
                return false
            end }))
        assert.is_nil(cfg2.source)
        assert.equal(8080, cfg2.server.port)
    end)
end)

describe("config.toml.rename", function()
    it("rewrites only the keys it knows, line by line", function()
        assert.equal("log.level: x\nserver.port: y\nz", tomlmap.rename("server.log_level: x\nserver.port: y\nz",
            { ["server.log_level"] = "log.level" }))
    end)
end)
