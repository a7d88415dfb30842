-- The configuration schema (API.md §9): every section and key the server accepts, its type and its default.
-- /work/main/config.lua documents the same keys for operators; a unit spec checks that the two agree.
--
-- A key is { type = ..., default = ..., ... } where type is one of
--   "string", "integer" (min/max), "number" (min/max), "boolean", "enum" (values; matched case-insensitively,
--   stored in the listed spelling), "string_list" (an array of strings), "table" (any table with string
--   keys, copied), "api_keys" (the tenant list of server.api_keys, checked in lua/config/init.lua)
-- `false_ok = true` lets the key be `false` (to disable a limit). Defaults that are tables are copied.
local M = {}

M.DEFAULT_CAP_DROP = {
    "AUDIT_WRITE",
    "MKNOD",
    "NET_ADMIN",
    "NET_RAW",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_PTRACE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
}

M.sections = {
    server = {
        host = { type = "string", default = "127.0.0.1" },
        port = { type = "integer", default = 8080, min = 1, max = 65535 },
        log_level = { type = "enum", values = { "DEBUG", "INFO", "WARNING", "ERROR" }, default = "INFO" },
        api_key = { type = "string" },
        -- tenants: { { key = "..." | key_env = "ENV_NAME", principal = "team-a", admin = false }, ... }
        api_keys = { type = "api_keys", default = {} },
        max_sandbox_timeout_seconds = { type = "integer", min = 60, false_ok = true },
        eip = { type = "string" },
        pending_failure_ttl = { type = "integer", default = 3600, min = 0 },
        docs_assets_dir = { type = "string" },
        max_connections = { type = "integer", default = 4096, min = 1 },
        max_connections_per_ip = { type = "integer", default = 256, min = 1, false_ok = true },
        connection_memory = { type = "integer", default = 16384, min = 4096 },
        connection_timeout = { type = "number", default = 120, min = 0 },
        drain_timeout = { type = "number", default = 10, min = 0 },
        -- failed API key attempts allowed per client address per minute; nil/false: no limit
        auth_failure_limit = { type = "integer", min = 1, false_ok = true },
        -- idle keep-alive connections the server proxy keeps per sandbox port (0: none), and for how long
        proxy_keepalive = { type = "integer", default = 32, min = 0, max = 100000 },
        proxy_keepalive_timeout = { type = "number", default = 30, min = 0.001, max = 86400 },
        -- seconds the server proxy may forward a sandbox's requests with the same credentials without running
        -- the Lua route again (core/proxy_fast.c); 0: every request runs it
        proxy_remember = { type = "number", default = 2, min = 0, max = 60 },
        -- operator routes: a directory of Lua route modules (README "Operator routes"); nil/false: none
        routes_dir = { type = "string", false_ok = true },
        -- the server's scheduling priority (nice value; README "Configuration"): above the runtime's daemons
        -- and the sandboxes' processes, so that claims and the API stay fast while dockerd makes containers;
        -- false: left as started
        nice = { type = "integer", default = -10, min = -20, max = 19, false_ok = true },
    },
    runtime = {
        type = { type = "enum", values = { "docker", "kubernetes" }, default = "docker" },
        execd_image = { type = "string" },
    },
    docker = {
        host = { type = "string", default = "unix:///var/run/docker.sock" },
        network_mode = { type = "string", default = "bridge" },
        host_ip = { type = "string", default = "127.0.0.1" },
        api_timeout = { type = "integer", default = 180, min = 1 },
        drop_capabilities = { type = "string_list", default = M.DEFAULT_CAP_DROP },
        no_new_privileges = { type = "boolean", default = true },
        apparmor_profile = { type = "string" },
        seccomp_profile = { type = "string" },
        pids_limit = { type = "integer", default = 4096, min = 0, false_ok = true },
        runtime = { type = "string" },
        -- this server's name on the daemon (label opensandbox.io/instance on every container it makes);
        -- nil: the identity kept in its store (a UUID made with the store). Servers see only their own.
        instance = { type = "string" },
        -- identities whose containers this server takes over (another server's, gone for good; "unlabelled":
        -- those made before servers had identities); kept in the store once taken. Also --adopt-instance.
        adopt_instances = { type = "string_list", default = {} },
        -- how the agent gets into sandboxes: "archive" (uploaded into each container before it starts) or
        -- "volume" (one read-only volume with the bundle, mounted by every sandbox)
        agent_delivery = { type = "enum", values = { "archive", "volume" }, default = "volume" },
        -- where warm pool claims are written for the members' agents (a directory per member, mounted into
        -- it read-only); false: claims are POSTed to the agent (runtimes/docker/README.md, "Pools")
        pool_claim_dir = { type = "string", default = "/run/opensandbox/pool-claims", false_ok = true },
    },
    kubernetes = {
        -- nil: in-cluster (the pod's service account); else a kubeconfig file ("~" expands to $HOME)
        kubeconfig_path = { type = "string" },
        -- the kubeconfig context to use; nil: its current-context
        context = { type = "string" },
        -- nil: the kubeconfig context's namespace (in cluster: the service account's), else "default"
        namespace = { type = "string" },
        service_account = { type = "string" },
        image_pull_policy = { type = "enum", values = { "Always", "IfNotPresent", "Never" }, default = "IfNotPresent" },
        -- a YAML Pod whose labels, annotations and spec lie under every sandbox pod ("~" expands)
        pod_template_file = { type = "string" },
        -- seconds a create waits for the pod's container to run
        create_timeout = { type = "integer", default = 120, min = 1 },
        -- client-side rate limit: requests per second and burst, for reads and for writes each
        api_qps = { type = "number", default = 50, min = 0.1 },
        api_burst = { type = "integer", default = 100, min = 1 },
        -- label opensandbox.io/instance on this server's pods (several servers in one namespace)
        instance = { type = "string" },
        -- seconds an unowned image-pull Secret of ours must be old before the sweep deletes it (a create
        -- that crashed between the Secret and its pod leaves one)
        orphan_grace_seconds = { type = "integer", default = 300, min = 0 },
        -- seconds one watch request of the namespace's pods lasts before it is made again from where it
        -- stopped (the apiserver's timeoutSeconds)
        watch_timeout_seconds = { type = "integer", default = 300, min = 1 },
    },
    store = {
        path = { type = "string", default = "~/.opensandbox/opensandbox.db" },
    },
    storage = {
        -- host path prefixes `host` volumes may mount (compared after resolving `..` and symlinks on the
        -- server's host); empty: every host volume is refused
        allowed_host_paths = { type = "string_list", default = {} },
        -- Kubernetes: the size of a PersistentVolumeClaim a `pvc` volume creates without `storage`
        volume_default_size = { type = "string", default = "1Gi" },
    },
    hooks = {
        -- nil: <install root>/hooks (the shipped defaults); false: no hooks at all
        dir = { type = "string", false_ok = true },
        -- per-hook configuration, hooks.config.<hook name> = table (each hook checks its own in init)
        config = { type = "table", default = {} },
        instruction_budget = { type = "integer", default = 10000000, min = 1000 },
        memory_budget_mb = { type = "integer", default = 64, min = 1 },
    },
    -- network policy enforcement and sandbox isolation (Docker; lua/runtimes/docker/netpolicy.lua)
    network_policy = {
        -- the resolver the DNS filter forwards allowed names to: "ip" or "ip:port"; nil: the first
        -- nameserver of the host's /etc/resolv.conf
        dns_upstream = { type = "string" },
        -- UDP port of the DNS filter on the sandbox network's gateway; 0: one the kernel picks
        dns_port = { type = "integer", default = 0, min = 0, max = 65535 },
        -- sandboxes cannot reach each other's addresses (only through the server proxy)
        isolate_sandboxes = { type = "boolean", default = true },
    },
    proxy = {
        connect_timeout = { type = "number", default = 10, min = 0 },
        -- seconds to wait for the backend's response head (504 after); 0: no limit (API.md: no read timeout)
        header_timeout = { type = "number", default = 0, min = 0 },
    },
    metrics = {
        -- GET /metrics and the per-request instrumentation; false: neither
        enabled = { type = "boolean", default = true },
        -- "host:port" ("[v6]:port"): a second listener serving only GET /metrics, without an API key
        listen = { type = "string" },
    },
    -- GET /sandboxes/{id}/diagnostics/logs and /events (sandbox/diagnostics.lua)
    diagnostics = {
        -- bytes of text one reply carries at most (the newest are kept; `truncated` says when cut)
        max_bytes = { type = "integer", default = 262144, min = 1024, max = 16777216 },
        -- lines of the container's output asked of the runtime at most (the newest)
        max_log_lines = { type = "integer", default = 2000, min = 1, max = 1000000 },
        -- runtime events asked of the runtime at most (the newest)
        max_events = { type = "integer", default = 500, min = 1, max = 100000 },
    },
    -- renew on access (OSEP-0009, server proxy mode): a sandbox created with
    -- extensions["access.renew.extend.seconds"] = "N" gets expiresAt = now + N when traffic goes through the
    -- server proxy, at most once per min_interval_seconds (sandbox/access_renew.lua)
    renew_intent = {
        enabled = { type = "boolean", default = true },
        min_interval_seconds = { type = "integer", default = 60, min = 0, max = 86400 },
    },
    -- GET /events, the lifecycle event stream (sandbox/events.lua, api/events.lua)
    events = {
        -- events kept for Last-Event-ID resumes (a ring: the oldest go first)
        buffer = { type = "integer", default = 1024, min = 1, max = 1048576 },
        -- bytes a client may leave unread before it is dropped (an `overflow` event, then the end)
        max_pending_bytes = { type = "integer", default = 1048576, min = 1024, max = 1073741824 },
        -- a `: ping` comment after this many seconds without output, for proxies that close idle streams
        heartbeat_seconds = { type = "number", default = 15, min = 0.05, max = 3600 },
    },
    -- warm pools (sandbox/pools.lua, api/pools.lua)
    pools = {
        -- a claim (extensions.poolRef) of a pool with no warm member: "cold" creates the sandbox from the
        -- pool's template as usual, "error" answers 503 POOL::EMPTY
        on_empty = { type = "enum", values = { "cold", "error" }, default = "cold" },
        -- members being made at once, all pools together (refill never starves the API or the daemon)
        refill_concurrency = { type = "integer", default = 2, min = 1, max = 64 },
        -- the largest capacitySpec.poolMax a pool may ask for
        max_pool_size = { type = "integer", default = 100, min = 1, max = 10000 },
        -- seconds a new member may take to answer its agent's /ping before it is replaced
        ready_timeout_seconds = { type = "number", default = 30, min = 1, max = 600 },
    },
}

return M
