local config = require("config")

local function tmpfile(content)
    local p = os.tmpname()
    local f = assert(io.open(p, "wb"))
    f:write(content)
    f:close()
    return p
end

local function collect()
    local w = {}
    return w, function(msg)
        w[#w + 1] = msg
    end
end

describe("config.validate", function()
    it("fills every default for an empty table", function()
        local c = assert(config.validate({}))
        assert.equal("127.0.0.1", c.server.host)
        assert.equal(8080, c.server.port)
        assert.equal("INFO", c.server.log_level)
        assert.is_nil(c.server.api_key)
        assert.is_nil(c.server.max_sandbox_timeout_seconds)
        assert.equal(4096, c.server.max_connections)
        assert.equal(256, c.server.max_connections_per_ip)
        assert.equal(16384, c.server.connection_memory)
        assert.equal(120, c.server.connection_timeout)
        assert.equal(10, c.server.drain_timeout)
        assert.equal(-10, c.server.nice)
        assert.equal(3600, c.server.pending_failure_ttl)
        assert.equal("docker", c.runtime.type)
        assert.equal("bridge", c.docker.network_mode)
        assert.equal("127.0.0.1", c.docker.host_ip)
        assert.equal(180, c.docker.api_timeout)
        assert.equal(4096, c.docker.pids_limit)
        assert.is_true(c.docker.no_new_privileges)
        assert.same(config.schema.DEFAULT_CAP_DROP, c.docker.drop_capabilities)
        assert.equal("~/.opensandbox/opensandbox.db", c.store.path)
        assert.is_nil(c.hooks.dir)
        assert.equal(10, c.proxy.connect_timeout)
    end)

    it("does not share default tables between configs", function()
        local a = assert(config.validate({}))
        a.docker.drop_capabilities[1] = "CHANGED"
        assert.equal("AUDIT_WRITE", assert(config.validate({})).docker.drop_capabilities[1])
    end)

    it("names the key and the expected type", function()
        local c, err = config.validate({ docker = { api_timeout = "10" } })
        assert.is_nil(c)
        assert.equal("docker.api_timeout: expected integer, got string", err)
        c, err = config.validate({ server = { port = 80.5 } })
        assert.is_nil(c)
        assert.equal("server.port: expected integer, got 80.5", err)
        assert.equal("docker.no_new_privileges: expected boolean, got string",
            select(2, config.validate({ docker = { no_new_privileges = "yes" } })))
        assert.equal("server.host: expected string, got integer", select(2, config.validate({ server = { host = 1 } })))
        assert.equal("server: expected table, got string", select(2, config.validate({ server = "x" })))
    end)

    it("checks enums case-insensitively and reports the choices", function()
        assert.equal("WARNING", assert(config.validate({ server = { log_level = "warning" } })).server.log_level)
        assert.equal('server.log_level: expected one of DEBUG, INFO, WARNING, ERROR, got "x"',
            select(2, config.validate({ server = { log_level = "x" } })))
        assert.equal('runtime.type: expected one of docker, kubernetes, got "podman"',
            select(2, config.validate({ runtime = { type = "podman" } })))
    end)

    it("checks ranges", function()
        assert.equal("server.max_sandbox_timeout_seconds: must be >= 60, got 59",
            select(2, config.validate({ server = { max_sandbox_timeout_seconds = 59 } })))
        assert.equal("server.port: must be <= 65535, got 70000",
            select(2, config.validate({ server = { port = 70000 } })))
        assert.equal("server.nice: must be >= -20, got -21", select(2, config.validate({ server = { nice = -21 } })))
        assert.equal("server.nice: must be <= 19, got 20", select(2, config.validate({ server = { nice = 20 } })))
        assert.is_falsy(assert(config.validate({ server = { nice = false } })).server.nice)
        assert.equal(8081, assert(config.validate({ server = { port = 8081.0 } })).server.port)
        assert.equal(math.type(assert(config.validate({ server = { port = 8081.0 } })).server.port), "integer")
    end)

    it("accepts false to disable limits, and normalises it", function()
        local c = assert(config.validate({ server = { max_sandbox_timeout_seconds = false },
            docker = { pids_limit = false } }))
        assert.is_nil(c.server.max_sandbox_timeout_seconds)
        assert.is_false(c.docker.pids_limit)
        assert.is_false(assert(config.validate({ docker = { pids_limit = 0 } })).docker.pids_limit)
        assert.equal("server.port: expected integer, got boolean",
            select(2, config.validate({ server = { port = false } })))
    end)

    it("checks string lists", function()
        assert.same({}, assert(config.validate({ docker = { drop_capabilities = {} } })).docker.drop_capabilities)
        assert.equal("docker.drop_capabilities: expected array of strings, element 2 is integer",
            select(2, config.validate({ docker = { drop_capabilities = { "A", 2 } } })))
        assert.equal('docker.drop_capabilities: expected array of strings, got key "x"',
            select(2, config.validate({ docker = { drop_capabilities = { x = "A" } } })))
    end)

    it("has a storage section: allowed_host_paths (absolute, default none) and volume_default_size", function()
        local c = assert(config.validate({}))
        assert.same({}, c.storage.allowed_host_paths)
        assert.equal("1Gi", c.storage.volume_default_size)
        assert.same({ "/srv/a" }, assert(config.validate({ storage = { allowed_host_paths = { "/srv/a" } } }))
            .storage.allowed_host_paths)
        assert.equal('storage.allowed_host_paths[2]: must be an absolute path, got "data"',
            select(2, config.validate({ storage = { allowed_host_paths = { "/srv/a", "data" } } })))
    end)

    it("rejects runtime.execd_image with host networking", function()
        assert.equal('runtime.execd_image: cannot be combined with docker.network_mode = "host"',
            select(2, config.validate({ runtime = { execd_image = "img" }, docker = { network_mode = "host" } })))
        assert.is_table(config.validate({ runtime = { execd_image = "img" } }))
    end)

    it("checks metrics.listen: host:port, a port other than server.port", function()
        local c = assert(config.validate({ metrics = { listen = "127.0.0.1:9464" } }))
        assert.equal("127.0.0.1:9464", c.metrics.listen)
        assert.is_true(c.metrics.enabled)
        assert.is_table(config.validate({ metrics = { listen = "[::1]:9464", enabled = false } }))
        assert.equal('metrics.listen: expected "host:port" (e.g. "127.0.0.1:9464"), got "9464"',
            select(2, config.validate({ metrics = { listen = "9464" } })))
        assert.equal("metrics.listen: the port must differ from server.port",
            select(2, config.validate({ server = { port = 9000 }, metrics = { listen = "0.0.0.0:9000" } })))
    end)

    it("has a kubernetes section with its defaults, and runtime.type = kubernetes", function()
        local c = assert(config.validate({}))
        assert.is_nil(c.kubernetes.kubeconfig_path)
        assert.is_nil(c.kubernetes.context)
        assert.is_nil(c.kubernetes.namespace) -- the context's, else "default" (runtimes.kubernetes)
        assert.is_nil(c.kubernetes.service_account)
        assert.equal("IfNotPresent", c.kubernetes.image_pull_policy)
        assert.is_nil(c.kubernetes.pod_template_file)
        assert.equal(120, c.kubernetes.create_timeout)
        assert.equal(50, c.kubernetes.api_qps)
        assert.equal(100, c.kubernetes.api_burst)
        assert.is_nil(c.kubernetes.instance)
        c = assert(config.validate({ runtime = { type = "Kubernetes" },
            kubernetes = { namespace = "sandboxes", image_pull_policy = "never", api_qps = 2.5 } }))
        assert.equal("kubernetes", c.runtime.type)
        assert.equal("sandboxes", c.kubernetes.namespace)
        assert.equal("Never", c.kubernetes.image_pull_policy)
        assert.equal(2.5, c.kubernetes.api_qps)
    end)

    it("names the kubernetes key of a wrong value", function()
        assert.equal("kubernetes.create_timeout: expected integer, got string",
            select(2, config.validate({ kubernetes = { create_timeout = "60" } })))
        assert.equal("kubernetes.namespace: expected string, got integer",
            select(2, config.validate({ kubernetes = { namespace = 5 } })))
        assert.equal("kubernetes.image_pull_policy: expected one of Always, IfNotPresent, Never, got \"Sometimes\"",
            select(2, config.validate({ kubernetes = { image_pull_policy = "Sometimes" } })))
        assert.equal("kubernetes.api_burst: must be >= 1, got 0",
            select(2, config.validate({ kubernetes = { api_burst = 0 } })))
        assert.equal("kubernetes.nope: unknown key", select(2, config.validate({ kubernetes = { nope = 1 } })))
        assert.equal('runtime.execd_image: not supported with runtime.type = "kubernetes" (the agent comes from '
            .. "a ConfigMap of the server's own files)",
            select(2, config.validate({ runtime = { type = "kubernetes", execd_image = "img" } })))
    end)

    it("rejects unknown sections and keys, naming them", function()
        assert.equal("podman: unknown section", select(2, config.validate({ podman = {} })))
        assert.equal("server.hots: unknown key", select(2, config.validate({ server = { hots = "x" } })))
    end)

    it("reports every problem, one per line", function()
        local _, err = config.validate({ server = { port = "x", nope = 1 }, docker = { api_timeout = {} } })
        assert.equal(
            "docker.api_timeout: expected integer, got table\nserver.nope: unknown key\n"
                .. "server.port: expected integer, got string",
            err)
    end)

    it("can warn about unknown keys instead", function()
        local w, warn = collect()
        local c = assert(config.validate({ server = { extra = 1 }, other = {} }, { unknown = "warn", warn = warn }))
        assert.equal(8080, c.server.port)
        assert.same({ "other: unknown section", "server.extra: unknown key" }, w)
    end)
end)

describe("config.load", function()
    local w, warn
    before_each(function()
        w, warn = collect()
    end)

    local ENV = { HOME = "/home/u" }

    it("loads the configuration from text (osb_config_string): Lua or TOML, ignoring any path", function()
        local c, err = config.load("/nonexistent/ignored.lua", ENV, {
            warn = warn,
            text = 'return { server = { port = 9001, routes_dir = "~/routes" } }',
            format = "lua",
        })
        assert.is_table(c, err)
        assert.equal(9001, c.server.port)
        assert.equal("/home/u/routes", c.server.routes_dir)
        assert.equal("(config string)", c.source)
        c, err = config.load(nil, ENV, { warn = warn, text = "[server]\nport = 9002\n", format = "toml",
            toml_parse = function()
                return { server = { port = 9002 } }
            end })
        assert.is_table(c, err)
        assert.equal(9002, c.server.port)
        local code
        c, err, code = config.load(nil, ENV, { warn = warn, text = "return {", format = "lua" })
        assert.is_nil(c)
        assert.truthy(err:find("config file (config string): (config string):1:", 1, true), err)
        assert.equal(1, code)
        c, err = config.load(nil, ENV, { warn = warn, text = "return { server = { routes_dir = 1 } }" })
        assert.is_nil(c)
        assert.truthy(err:find("server.routes_dir", 1, true), err)
    end)

    it("loads an explicit file, merges defaults and expands ~", function()
        local p = tmpfile('return { server = { port = 9000 }, store = { path = "~/db/s.db" }, hooks = { dir = "~" } }')
        local c, err = config.load(p, ENV, { warn = warn })
        os.remove(p)
        assert.is_table(c, err)
        assert.equal(9000, c.server.port)
        assert.equal("127.0.0.1", c.server.host)
        assert.equal("/home/u/db/s.db", c.store.path)
        assert.equal("/home/u", c.hooks.dir)
        assert.equal(p, c.source)
        assert.same({}, w)
    end)

    it("expands ~ in kubernetes.kubeconfig_path and kubernetes.pod_template_file", function()
        local p = tmpfile('return { kubernetes = { kubeconfig_path = "~/.kube/config", '
            .. 'pod_template_file = "~/t.yaml" } }')
        local c, err = config.load(p, ENV, { warn = warn })
        os.remove(p)
        assert.is_table(c, err)
        assert.equal("/home/u/.kube/config", c.kubernetes.kubeconfig_path)
        assert.equal("/home/u/t.yaml", c.kubernetes.pod_template_file)
    end)

    it("fails with exit code 1 when an explicit path is missing", function()
        local c, err, code = config.load("/nonexistent/config.lua", ENV, { warn = warn })
        assert.is_nil(c)
        assert.matches("/nonexistent/config.lua", err, 1, true)
        assert.equal(1, code)
        c, err, code = config.load(nil, { SANDBOX_CONFIG_PATH = "/nonexistent/x.lua" }, { warn = warn })
        assert.is_nil(c)
        assert.matches("/nonexistent/x.lua", err, 1, true)
        assert.equal(1, code)
    end)

    it("uses SANDBOX_CONFIG_PATH when no path is given", function()
        local p = tmpfile("return { server = { port = 9001 } }")
        local c = assert(config.load(nil, { SANDBOX_CONFIG_PATH = p, HOME = "/h" }, { warn = warn }))
        os.remove(p)
        assert.equal(9001, c.server.port)
    end)

    it("uses defaults when ./config.lua is missing", function()
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir))
        -- Run the loader from a directory without config.lua (the path is relative to the cwd).
        local orig = config.read_file
        local asked
        config.read_file = function(path, getenv) -- luacheck: ignore 122
            asked = path
            return orig(dir .. "/" .. path, getenv)
        end
        local c = config.load(nil, ENV, { warn = warn })
        config.read_file = orig -- luacheck: ignore 122
        os.execute("rm -rf " .. dir)
        assert.equal("./config.lua", asked)
        assert.is_table(c)
        assert.equal(8080, c.server.port)
        assert.equal("/home/u/.opensandbox/opensandbox.db", c.store.path)
        assert.is_nil(c.source)
    end)

    it("fails when ~ cannot be expanded", function()
        local c, err, code = config.load("config.lua", {}, { warn = warn })
        assert.is_nil(c)
        assert.equal("store.path: cannot expand ~ because HOME is not set", err)
        assert.equal(1, code)
    end)

    it("reports validation errors with the file and exit code 1", function()
        local p = tmpfile('return { docker = { port = "x" } }')
        local c, err, code = config.load(p, ENV, { warn = warn })
        os.remove(p)
        assert.is_nil(c)
        assert.matches("docker.port: unknown key", err, 1, true)
        assert.matches(p, err, 1, true)
        assert.equal(1, code)
    end)

    it("reports syntax errors, runtime errors and non-table results", function()
        for _, src in ipairs({ "return {", "error('bad')", "return 42", "while true do end" }) do
            local p = tmpfile(src)
            local c, err, code = config.load(p, ENV, { warn = warn })
            os.remove(p)
            assert.is_nil(c, src)
            assert.matches(p, err, 1, true)
            assert.equal(1, code)
        end
    end)

    it("runs the file without access to unsafe globals", function()
        local p = tmpfile([[
            return { server = { eip = table.concat({ type(io), type(require), type(load), type(os.execute),
                type(dofile), type(debug), type(os.getenv) }, ",") } }
        ]])
        local c = assert(config.load(p, { HOME = "/h", X = "y" }, { warn = warn }))
        os.remove(p)
        assert.equal("nil,nil,nil,nil,nil,nil,function", c.server.eip)
        p = tmpfile('return { server = { api_key = os.getenv("X") } }')
        c = assert(config.load(p, { HOME = "/h", X = "from-env" }, { warn = warn }))
        os.remove(p)
        assert.equal("from-env", c.server.api_key)
        p = tmpfile('string.upper = nil; return {}')
        assert(config.load(p, ENV, { warn = warn }))
        os.remove(p)
        assert.is_function(string.upper)
    end)

    it("loads the repository's config.lua, which documents every key with its default", function()
        local c = assert(config.load("config.lua", ENV, { warn = warn }))
        local defaults = assert(config.validate({}))
        local f = assert(io.open("config.lua"))
        local src = f:read("a")
        f:close()
        for section, keys in pairs(config.schema.sections) do
            for key in pairs(keys) do
                assert.matches("%f[%w_]" .. key .. " = ", src, nil, false, section .. "." .. key)
                if section ~= "store" then
                    assert.same(defaults[section][key], c[section][key], section .. "." .. key)
                end
            end
        end
    end)

    describe("environment overrides", function()
        local p
        before_each(function()
            p = tmpfile('return { server = { api_key = "file-key", pending_failure_ttl = 60 }, '
                .. "docker = { api_timeout = 30 } }")
        end)
        after_each(function()
            os.remove(p)
        end)

        it("OPENSANDBOX_SERVER_API_KEY replaces server.api_key when non-blank", function()
            local function key(v)
                return assert(config.load(p, { HOME = "/h", OPENSANDBOX_SERVER_API_KEY = v })).server.api_key
            end
            assert.equal("env-key", key("env-key"))
            assert.equal("file-key", key("  "))
            assert.equal("file-key", key(nil))
        end)

        it("DOCKER_HOST, DOCKER_API_TIMEOUT and PENDING_FAILURE_TTL", function()
            local c = assert(config.load(p, { DOCKER_HOST = "tcp://10.0.0.1:2375", DOCKER_API_TIMEOUT = "15",
                PENDING_FAILURE_TTL = "0", HOME = "/h" }, { warn = warn }))
            assert.equal("tcp://10.0.0.1:2375", c.docker.host)
            assert.equal(15, c.docker.api_timeout)
            assert.equal(0, c.server.pending_failure_ttl)
            assert.same({}, w)
            assert.equal("unix:///var/run/docker.sock", assert(config.load(p, { HOME = "/h" })).docker.host)
        end)

        it("an invalid DOCKER_API_TIMEOUT or PENDING_FAILURE_TTL is a warning, not an error", function()
            for _, bad in ipairs({ "abc", "0", "-5", "1.5" }) do
                w, warn = collect()
                local c = assert(config.load(p, { DOCKER_API_TIMEOUT = bad, HOME = "/h" }, { warn = warn }))
                assert.equal(30, c.docker.api_timeout)
                assert.equal(1, #w)
                assert.matches("DOCKER_API_TIMEOUT", w[1])
            end
            w, warn = collect()
            local c = assert(config.load(p, { PENDING_FAILURE_TTL = "x", HOME = "/h" }, { warn = warn }))
            assert.equal(60, c.server.pending_failure_ttl)
            assert.matches("PENDING_FAILURE_TTL", w[1])
        end)
    end)

    describe("auth guard", function()
        local function load_with(server, env)
            local src = "return { server = { host = %q%s } }"
            local key = server.api_key and (", api_key = %q"):format(server.api_key) or ""
            local p = tmpfile(src:format(server.host, key))
            env = env or {}
            env.HOME = "/h"
            local c, err, code = config.load(p, env, { warn = function() end })
            os.remove(p)
            return c, err, code
        end

        it("refuses a non-loopback host without a key (exit code 2)", function()
            for _, host in ipairs({ "0.0.0.0", "::", "10.1.2.3", "example.com", "128.0.0.1", "127.0.0.256" }) do
                local c, err, code = load_with({ host = host })
                assert.is_nil(c, host)
                assert.equal(2, code)
                assert.equal(config.EXIT_INSECURE, code)
                assert.matches("OPENSANDBOX_INSECURE_SERVER", err)
            end
            local c, _, code = load_with({ host = "0.0.0.0", api_key = "   " })
            assert.is_nil(c)
            assert.equal(2, code)
        end)

        it("allows loopback hosts, a key, or OPENSANDBOX_INSECURE_SERVER=YES", function()
            for _, host in ipairs({ "127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST" }) do
                assert.is_table(load_with({ host = host }), host)
            end
            assert.is_table(load_with({ host = "0.0.0.0", api_key = "k" }))
            assert.is_table(load_with({ host = "0.0.0.0" }, { OPENSANDBOX_SERVER_API_KEY = "k" }))
            local c = load_with({ host = "0.0.0.0" }, { OPENSANDBOX_INSECURE_SERVER = "YES" })
            assert.is_table(c)
            assert.is_true(c.server.insecure)
            assert.is_nil(c.server.api_key)
            assert.is_nil(load_with({ host = "0.0.0.0" }, { OPENSANDBOX_INSECURE_SERVER = "1" }))
        end)
    end)
end)

describe("config.path_from_args", function()
    it("reads --config PATH and --config=PATH", function()
        assert.equal("a.lua", config.path_from_args({ "--config", "a.lua" }))
        assert.equal("b.lua", config.path_from_args({ "-v", "--config=b.lua" }))
        assert.is_nil(config.path_from_args({}))
    end)
end)

describe("config.values_from_args", function()
    it("reads a repeatable option in both spellings, in order (--adopt-instance)", function()
        assert.same({ "u1", "unlabelled", "u3" }, config.values_from_args({ "--config", "c.lua", "--adopt-instance",
            "u1", "--adopt-instance=unlabelled", "--adopt-instance", "u3" }, "adopt-instance"))
        assert.same({}, config.values_from_args({ "--config", "c.lua", "--adopt-instance" }, "adopt-instance"))
        assert.same({}, config.values_from_args({ "--adopt-instancex=1" }, "adopt-instance"))
    end)
end)
