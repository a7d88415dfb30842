-- OpenSandbox server configuration (API.md §9).
--
-- This file is Lua 5.4 that returns a table. The server reads it from `--config PATH`, else from the path in
-- env SANDBOX_CONFIG_PATH, else ./config.lua, else ~/.sandbox.toml (if none exists, every default below
-- applies). A path ending in .toml is upstream OpenSandbox's TOML format instead (~/.sandbox.toml; README,
-- "Configuration in TOML": each upstream key is mapped onto a key below, or warned about, or refused).
-- Every key is shown with its default. A key left out or set to nil takes its default; `false` disables a
-- limit where that is allowed. Unknown sections or keys and values of the wrong type stop the server at
-- startup with a message naming the key.
--
-- The file runs in a restricted environment: basic functions, string/table/math/utf8, and os.getenv,
-- os.time, os.date, os.clock. For example: api_key = os.getenv("MY_KEY").
--
-- Environment variables that override this file:
--   OPENSANDBOX_SERVER_API_KEY  server.api_key (when non-blank)
--   OPENSANDBOX_INSECURE_SERVER=YES  allow a non-loopback server.host with no API key
--   DOCKER_HOST                 docker.host
--   DOCKER_API_TIMEOUT          docker.api_timeout (an integer > 0; an invalid value is warned about and ignored)
--   PENDING_FAILURE_TTL         server.pending_failure_ttl (an integer >= 0; invalid: warned about and ignored)
return {
    server = {
        -- Listen address and port. Without an API key the server only starts on a loopback address
        -- (127.0.0.0/8, ::1, localhost) unless OPENSANDBOX_INSECURE_SERVER=YES is set.
        host = "127.0.0.1",
        port = 8080,
        -- DEBUG, INFO, WARNING or ERROR (case-insensitive).
        log_level = "INFO",
        -- Clients send it in the OPEN-SANDBOX-API-KEY header. nil or blank: no authentication (unless
        -- api_keys below has keys). This key is the admin principal "default": it sees every sandbox.
        api_key = nil,
        -- Tenants: more keys, each naming a principal. A tenant sees and changes only the sandboxes its
        -- principal created (others answer 404 and are left out of lists); admin = true sees all. A key is
        -- given inline (key = "...") or read from the environment at startup (key_env = "NAME"; the server
        -- refuses to start when that variable is unset). Hooks see the principal (ctx.principal). Example:
        --   api_keys = {
        --       { key_env = "TEAM_A_KEY", principal = "team-a" },
        --       { key_env = "OPS_KEY", principal = "ops", admin = true },
        --   },
        api_keys = {},
        -- Upper bound for a sandbox's `timeout`, in seconds (an integer >= 60). nil or false: no cap.
        max_sandbox_timeout_seconds = nil,
        -- Public host (optionally host:port) used in endpoint replies instead of docker.host_ip or Host.
        eip = nil,
        -- Seconds a failed-provisioning record is kept before it is deleted (0: at the next sweep).
        pending_failure_ttl = 3600,
        -- Directory the /docs and /redoc asset files are served from (filled by scripts/docs-assets.sh).
        -- nil: <install root>/docs-assets in an install (cmake --install, the .deb), else
        -- <install root>/build/docs-assets (a source tree).
        docs_assets_dir = nil,
        -- HTTP engine limits: concurrent connections, memory per connection (bytes; bounds the request
        -- header size), idle connection timeout (seconds), and how long a shutdown waits for requests
        -- in flight (seconds).
        max_connections = 4096,
        -- Concurrent connections one client address may hold (TCP). A connection over it is closed at
        -- accept, before any byte is read; the client's other connections and every other client are
        -- served as usual. Behind a reverse proxy every client has the proxy's address: raise it, or set
        -- false for no per-address limit.
        max_connections_per_ip = 256,
        connection_memory = 16384,
        connection_timeout = 120,
        drain_timeout = 10,
        -- Failed API key attempts (a wrong OPEN-SANDBOX-API-KEY) allowed per client address in a minute.
        -- Beyond it, every request from that address that needs a key gets 429 GENERAL::TOO_MANY_REQUESTS
        -- with Retry-After until its minute is over (a missing key is not counted). nil or false: no limit.
        auth_failure_limit = nil,
        -- The server proxy keeps backend connections alive: at most this many idle connections per
        -- sandbox port are kept for later requests (closed with the sandbox). 0: a new connection per
        -- request (Connection: close upstream).
        proxy_keepalive = 32,
        -- Seconds an idle pooled backend connection is kept before it is closed.
        proxy_keepalive_timeout = 30,
        -- Seconds for which the server proxy forwards more requests of the same client credentials to the
        -- same sandbox port without running the Lua route again (the route's decision is remembered in C;
        -- any change of the sandbox, a reload and a due renewal forget it). Not used when an
        -- on_proxy_request hook exists or in host network mode. 0: every request runs the route.
        proxy_remember = 2,
        -- Operator routes: a directory of Lua route modules (every *.lua file in it) adding HTTP routes
        -- with the API's authentication, request id and error envelope; loaded at startup (a broken file
        -- stops the start) and reloaded on SIGHUP or `opensandbox-server --reload` (a broken file keeps
        -- the previous routes). nil or false: none. Writing routes: README.md, "Operator routes"; a sample
        -- is routes/hello.lua.
        routes_dir = nil,
        -- The server's scheduling priority (a nice value, -20..19), set at start-up. The default puts it
        -- ahead of the container daemons and of the sandboxes' processes, so that the API, warm pool
        -- claims and the proxy stay fast while dockerd and runc make containers (raising it needs root or
        -- CAP_SYS_NICE: otherwise a warning, and the server runs as started). false: left as started.
        -- A program embedding the engine (libopensandbox) keeps its own priority.
        nice = -10,
    },

    runtime = {
        -- Where sandboxes run: "docker" (the docker section below) or "kubernetes" (one Pod per sandbox,
        -- the kubernetes section below; pause and resume are not supported there).
        type = "docker",
        -- An upstream-style agent image to take execd from instead of the built-in agent. Cannot be
        -- combined with docker.network_mode = "host".
        execd_image = nil,
    },

    docker = {
        -- The Docker daemon: unix:///path or tcp://host:port (no TLS).
        host = "unix:///var/run/docker.sock",
        -- "bridge", "host", or the name of an existing user-defined network.
        network_mode = "bridge",
        -- Host IP that published ports bind to; also a candidate host for endpoint replies.
        host_ip = "127.0.0.1",
        -- Seconds per Docker API call (an idle timeout for image pulls).
        api_timeout = 180,
        -- Capabilities dropped from every sandbox; {} drops none.
        drop_capabilities = {
            "AUDIT_WRITE",
            "MKNOD",
            "NET_ADMIN",
            "NET_RAW",
            "SYS_ADMIN",
            "SYS_MODULE",
            "SYS_PTRACE",
            "SYS_TIME",
            "SYS_TTY_CONFIG",
        },
        -- Adds no-new-privileges:true to every sandbox.
        no_new_privileges = true,
        -- AppArmor profile name / seccomp profile (path or name). nil: Docker's defaults.
        apparmor_profile = nil,
        seccomp_profile = nil,
        -- Maximum number of processes per sandbox. false or 0: unlimited.
        pids_limit = 4096,
        -- OCI runtime for sandboxes, for example "runsc". nil: Docker's default.
        runtime = nil,
        -- This server's name on the daemon: every container it makes carries it in the label
        -- opensandbox.io/instance, and it lists, watches, adopts, expires and removes only containers that
        -- carry it, so several servers can share one daemon. nil: the server's own identity, a UUID made
        -- when its store is created and kept in it (logged at startup as "server identity"). Set a name to
        -- give several stores one explicit shared identity, or to keep a name across a lost store.
        instance = nil,
        -- Taking over another server's containers (its store was lost, or it is retired for good): the
        -- identities to adopt, for example { "3f0c...-uuid" } (read it from a container: docker inspect
        -- --format '{{index .Config.Labels "opensandbox.io/instance"}}' sandbox-ID). "unlabelled" adopts the
        -- containers made before servers had identities (no opensandbox.io/instance label; without it a
        -- server keeps only those it has records of). The same as `--adopt-instance ID` (repeatable). A
        -- takeover is kept in the store: the containers stay this server's when the option is removed.
        -- Never take over a server that still runs: both would then expire and remove the same sandboxes.
        adopt_instances = {},
        -- How the agent gets into each sandbox (API.md §8.4): "volume" (the default) fills one read-only
        -- Docker volume per agent version, only from the server's own files (created with NoCopy, filled
        -- through an image imported from those files, never from a user's image), and mounts it at
        -- /opt/opensandbox in every sandbox: nothing is uploaded per sandbox. The volume is named after the
        -- agent's files and made again when a sandbox fails to start because it was pruned or replaced (the
        -- start is then retried once); volumes of earlier agents that no container uses (and over an hour
        -- old) are removed. "archive" uploads the
        -- files into every container before it starts (PUT /containers/{id}/archive; Docker < 23 re-executes
        -- itself for each upload, ~45 ms here). runtime.execd_image always uses "archive".
        agent_delivery = "volume",
        -- Warm pool claims (pools below): each member gets a directory of its own under this one (0700), mounted
        -- read-only into it, and a claim is written there for its agent instead of being sent over HTTP, so
        -- that a claim never waits for a process in the member to be scheduled. Used only with a local daemon
        -- (a unix socket), and for each member only once its agent has shown it sees the directory (else the
        -- claim is POSTed as before). Best on a tmpfs (the default is under /run). false: always HTTP.
        pool_claim_dir = "/run/opensandbox/pool-claims",
    },

    kubernetes = {
        -- Used with runtime.type = "kubernetes" (lua/runtimes/kubernetes/README.md).
        -- The cluster's credentials: a kubeconfig file ("~" is the user's home), read at connect and again
        -- after a failure; nil: in-cluster (the server runs in a pod: its service account's token and CA,
        -- KUBERNETES_SERVICE_HOST/PORT). TLS is always verified (insecure-skip-tls-verify is refused).
        -- Client certificates and bearer tokens (token, tokenFile) are supported; exec plugins are not.
        kubeconfig_path = nil,
        -- The kubeconfig context to use. nil: its current-context.
        context = nil,
        -- The namespace of the sandbox pods (it must exist). nil: the kubeconfig context's namespace (in
        -- cluster: the service account's), else "default".
        namespace = nil,
        -- serviceAccountName of the sandbox pods (its token is never mounted into them). nil: the
        -- namespace's default.
        service_account = nil,
        -- imagePullPolicy of the sandbox container: "Always", "IfNotPresent" or "Never".
        image_pull_policy = "IfNotPresent",
        -- A YAML Pod (or PodTemplate) laid under every sandbox pod: nodeSelector, tolerations,
        -- runtimeClassName, extra labels and annotations... On conflicts the server's fields win; labels
        -- and annotations under opensandbox.io/ are ignored. nil: none.
        pod_template_file = nil,
        -- Seconds a create waits for the sandbox's container to run (scheduling and the image pull
        -- included) before it fails and the pod is deleted.
        create_timeout = 120,
        -- Client-side rate limit of Kubernetes API requests: requests per second and burst, applied to
        -- reads (get, list, watch) and to writes (create, patch, delete) separately.
        api_qps = 50,
        api_burst = 100,
        -- A name for this server's pods (label opensandbox.io/instance): several servers can then share a
        -- namespace without adopting or removing each other's sandboxes. nil: every pod labelled
        -- opensandbox.io/managed-by=opensandbox-server in the namespace belongs to this server.
        instance = nil,
        -- Seconds an image-pull Secret of ours that no pod owns must be old before the replica holding the
        -- Lease deletes it (a create that crashed between the Secret and its pod leaves one).
        orphan_grace_seconds = 300,
        -- Seconds one watch request of the namespace's pods lasts before it is made again from where it
        -- stopped (the apiserver's timeoutSeconds).
        watch_timeout_seconds = 300,
    },

    store = {
        -- The SQLite state database. "~" is the user's home; missing parent directories are created 0700.
        path = "~/.opensandbox/opensandbox.db",
    },

    storage = {
        -- Volumes on create (README "Volumes"). `host` volumes bind-mount a directory of the server's host,
        -- only under one of these path prefixes; the requested path (with its subPath) must exist and is
        -- compared after resolving ".." and symbolic links, so a link out of an allowed directory is refused.
        -- Empty (the default): every host volume is refused with 400 VOLUME::HOST_PATH_NOT_ALLOWED.
        -- e.g. allowed_host_paths = { "/srv/sandbox-data", "/data/shared" },
        allowed_host_paths = {},
        -- Kubernetes: the size a PersistentVolumeClaim gets when a `pvc` volume creates it without `storage`.
        volume_default_size = "1Gi",
    },

    hooks = {
        -- Directory of Lua policy hooks (every *.lua file in it), loaded at startup and reloaded on SIGHUP
        -- or `opensandbox-server --reload`. nil: <install root>/hooks, the shipped defaults (naming,
        -- metadata, quotas), which change nothing until configured below. false: no hooks.
        -- Writing hooks: README.md, section "Hooks".
        dir = nil,
        -- Per-hook settings, hooks.config.<hook name>. Examples for the shipped hooks:
        --   config = {
        --       naming = { template = "{metadata.team}-{id8}" },   -- default "sandbox-{id}"
        --       metadata = { metadata = { owner = "{principal}" }, env = { TZ = "UTC" } },
        --       quotas = {
        --           principals = { ["team-a"] = { max_sandboxes = 2, max_cpus = 4, max_memory = "8Gi" },
        --                          ["*"] = { max_sandboxes = 10, max_timeout = 86400 } },
        --           metadata = { team = { ["*"] = { max_sandboxes = 5 } } },
        --       },
        --   },
        config = {},
        -- Budgets of one hook call: VM instructions, and growth of the Lua heap in MB (the allocator refuses
        -- past it, also inside one C call). A call also ends after 0.5 s of its own running time. A hook that
        -- exceeds one fails (500 HOOK::FAILED naming the hook); the server keeps serving.
        instruction_budget = 10000000,
        memory_budget_mb = 64,
    },

    -- Network policy (networkPolicy on create, the /policy API) and sandbox isolation, Docker runtime. The
    -- server enforces both itself (nftables in each sandbox's network namespace, a DNS filter on the sandbox
    -- network's gateway, a host table keeping sandboxes apart): it must run as root.
    network_policy = {
        -- The resolver allowed names are forwarded to: "ip" or "ip:port". nil: the host's first nameserver.
        dns_upstream = nil,
        -- UDP port of the DNS filter on the sandbox network's gateway; 0: one the kernel picks.
        dns_port = 0,
        -- Sandboxes cannot reach each other's addresses, only through the server proxy. false: they can.
        isolate_sandboxes = true,
    },

    proxy = {
        -- Seconds to wait for a connection to a sandbox port through the server proxy.
        connect_timeout = 10,
        -- Seconds to wait for the backend's response head before answering 504. 0: no limit (the proxy
        -- has no read timeout otherwise: streams and long polls may stay open).
        header_timeout = 0,
    },

    metrics = {
        -- GET /metrics (Prometheus text format; it needs the API key like every route when keys are
        -- configured) and the per-request counters and latency histograms. false: neither.
        enabled = true,
        -- "host:port" of a second listener that serves only GET /metrics, WITHOUT an API key, for a
        -- Prometheus on a private network (e.g. "127.0.0.1:9464"). nil: no second listener.
        listen = nil,
    },

    diagnostics = {
        -- GET /sandboxes/{id}/diagnostics/logs and /events answer inline text of at most this many bytes
        -- (the newest are kept; the reply says `truncated: true` when something was cut).
        max_bytes = 262144,
        -- Lines of the sandbox container's stdout/stderr asked of the runtime at most (the newest).
        max_log_lines = 2000,
        -- Runtime events (Docker's event buffer, Kubernetes Events) asked of the runtime at most (the newest).
        max_events = 500,
    },

    renew_intent = {
        -- Renew on access (upstream OSEP-0009, server proxy mode): a sandbox created with
        -- extensions = { ["access.renew.extend.seconds"] = "1800" } (300..86400) gets expiresAt = now + 1800
        -- when a request goes through the server proxy (/sandboxes/{id}/proxy/{port}/...) and that moves
        -- the expiry later, at most once per min_interval_seconds per sandbox. The new expiry is stored like
        -- a renew-expiration. false: proxy traffic never renews (the extension is still accepted).
        enabled = true,
        min_interval_seconds = 60,
    },

    events = {
        -- GET /events (Server-Sent Events): sandbox and snapshot state changes as they happen, filtered by
        -- the caller's principal (as GET /sandboxes) and optionally ?sandboxId= / ?metadata=k=v&k2=v2.
        -- The last `buffer` events are kept in memory for clients that resume with Last-Event-ID (an older
        -- id gets a `reset` event first: some events were lost).
        buffer = 1024,
        -- A client that leaves more than this many bytes unread is dropped: an `overflow` event, then the
        -- stream ends (it may reconnect with Last-Event-ID). Bounds the memory one slow client costs.
        max_pending_bytes = 1048576,
        -- A `: ping` comment is sent after this many seconds without output, so that proxies keep the
        -- stream open.
        heartbeat_seconds = 15,
    },

    pools = {
        -- Warm pools (POST /pools): sandboxes started ahead of time from a pool's template, handed out by a
        -- create with extensions.poolRef in a few milliseconds. A claim of a pool with no warm member
        -- "cold"-creates from the template, or answers 503 POOL::EMPTY with "error".
        on_empty = "cold",
        -- Members being made at once, all pools together: a burst of claims refills in the background
        -- without starving the API or the runtime (one at a time while claims arrive).
        refill_concurrency = 2,
        -- The largest capacitySpec.poolMax a pool may ask for.
        max_pool_size = 100,
        -- Seconds a new member may take until its agent answers; then it is removed and replaced.
        ready_timeout_seconds = 30,
    },
}
