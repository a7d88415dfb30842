-- The Kubernetes runtime: the runtime contract of lua/runtimes/README.md on the Kubernetes API.
--
-- A sandbox is one Pod named `sandbox-{id}` (or the name a hook chose) in `kubernetes.namespace`, with its
-- identity in labels and annotations (runtimes.kubernetes.mapping), the agent mounted from a ConfigMap
-- named after the agent's files, and, for `image.auth`, a pull Secret owned by the pod. The `handle` is
-- the pod's name and the `place` is `{ ip = <pod IP> }`. Requests go through runtimes.kubernetes.api
-- (rate limited); credentials come from runtimes.kubernetes.kubeconfig (a file, or in-cluster). Pod phases,
-- container states, watch events and resourceVersions never leave this module. The request budget of each
-- operation is in README.md beside this file.
local api_mod = require("runtimes.kubernetes.api")
local kubeconfig = require("runtimes.kubernetes.kubeconfig")
local mapping = require("runtimes.kubernetes.mapping")
local template_mod = require("runtimes.kubernetes.template")
local pool_template = require("runtimes.kubernetes.pool_template")
local pool_agent = require("runtimes.pool_agent")
local rterrors = require("runtimes.errors")
local timefmt = require("common.timefmt")

local M = {}

M.AGENT_PORT = mapping.AGENT_PORT
M.HTTP_PORT = mapping.HTTP_PORT
M.DEFAULT_NAMESPACE = "default"
M.DEFAULT_CREATE_TIMEOUT = 120
M.DELETE_GRACE_SECONDS = 1 -- a sandbox's process gets SIGTERM, then SIGKILL a second later
M.LIST_PAGE = 100 -- pods per LIST request (one page of full Pod objects is held at a time)
M.UNAVAILABLE_CODE = "KUBERNETES::UNAVAILABLE"
M.INIT_ERROR_CODE = "KUBERNETES::INITIALIZATION_ERROR" -- upstream's code for a runtime that cannot start
-- What this runtime calls the service's codes (runtimes contract: `codes`), as upstream's Kubernetes provider
-- names them: a sandbox that is not there, a state that does not allow the operation, a failed API call,
-- and a pod that could not be provisioned (the message says at which step).
M.CODES = {
    ["DOCKER::SANDBOX_NOT_FOUND"] = "KUBERNETES::SANDBOX_NOT_FOUND",
    ["DOCKER::SANDBOX_NOT_RUNNING"] = "KUBERNETES::INVALID_STATE",
    ["DOCKER::SANDBOX_NOT_PAUSED"] = "KUBERNETES::INVALID_STATE",
    ["DOCKER::SANDBOX_DELETE_FAILED"] = "KUBERNETES::API_ERROR",
    ["DOCKER::SANDBOX_IMAGE_PULL_FAILED"] = "KUBERNETES::POD_FAILED",
    ["DOCKER::SANDBOX_START_FAILED"] = "KUBERNETES::POD_FAILED",
    ["DOCKER::SANDBOX_EXECD_DISTRIBUTION_FAILED"] = "KUBERNETES::POD_FAILED",
}
M.GC_INTERVAL = 600 -- seconds between two collections of orphaned ConfigMaps and Secrets (leader only)
M.SA_WAIT_TRIES = 20 -- half-seconds a create waits for a new namespace's default ServiceAccount
M.DEFAULT_ORPHAN_GRACE = 300

local Kube = {}
Kube.__index = Kube

local default_read_file = require("common.files").read

--- A new Kubernetes runtime. `cfg` is the whole validated configuration (this reads `kubernetes`);
--- deps = { client = core.client-like (required unless `api`), log, agent_files = runtimes.agent_files
---          object, core = { now_s = fn } (optional), and for tests: sleep = fn(sec), getenv, read_file,
---          credentials = a kubeconfig result (skips reading one), api = an api object to use }.
--- Nothing is read or sent here: connect() loads the credentials and the pod template (again after a
--- failure, so a fixed file is picked up without a restart).
function M.new(cfg, deps)
    local kcfg = cfg.kubernetes or {}
    local core = deps.core or {}
    return setmetatable({
        name = "kubernetes",
        codes = M.CODES,
        -- pause/resume answer `unsupported` (see pause below); pools: members wait in the agent ("pools")
        capabilities = { pause = false, pools = true },
        config = kcfg,
        log = deps.log,
        client = deps.client,
        agent_files = deps.agent_files,
        now_s = core.now_s or os.time,
        sleep = deps.sleep,
        getenv = deps.getenv or os.getenv,
        read_file = deps.read_file or default_read_file,
        credentials = deps.credentials,
        api = deps.api,
        instance = kcfg.instance,
        create_timeout = kcfg.create_timeout or M.DEFAULT_CREATE_TIMEOUT,
        -- the size of a claim a `pvc` volume creates without `storage`
        volume_default_size = cfg.storage and cfg.storage.volume_default_size or "1Gi",
        template = nil, -- the loaded pod template, false when none is configured
        agent_ready = {}, -- agent ConfigMap name -> true once it is known to exist
        known = {}, -- pod name -> { id, status }: what the last list and the watch saw
        init_error = nil, -- why the last connect() failed when the cause is not the transport (named to clients)
        leading = nil, -- the last answer of lead(): only the leader collects orphans
        last_gc = nil, -- when orphans were last collected (now_s)
        orphan_grace = kcfg.orphan_grace_seconds or M.DEFAULT_ORPHAN_GRACE,
        resource_version = nil, -- where the next watch starts (from the last list, event or bookmark)
    }, Kube)
end

------------------------------------------------------------------------------------------------------------
-- setup and connection

function Kube:_warn(msg, fields)
    if self.log then
        self.log.warn(msg, fields)
    end
end

function Kube:_sleep(sec)
    if not self.sleep then
        self.sleep = require("core.timer").sleep
    end
    self.sleep(sec)
end

-- credentials, namespace, pod template and API client: once, retried by every connect() until it works
function Kube:_setup()
    if self.api and self.template ~= nil and self.namespace then
        return true
    end
    local creds = self.credentials
    if not creds then
        local err
        if self.config.kubeconfig_path then
            creds, err = kubeconfig.load(self.config.kubeconfig_path, { read_file = self.read_file,
                context = self.config.context })
        else
            creds, err = kubeconfig.in_cluster(self.getenv, self.read_file)
        end
        if not creds then
            return nil, rterrors.new("api", err)
        end
        self.credentials = creds
    end
    if self.template == nil then
        if self.config.pod_template_file then
            local t, terr = template_mod.load(self.config.pod_template_file, self.read_file)
            if not t then
                return nil, rterrors.new("api", terr)
            end
            self.template = t
        else
            self.template = false
        end
    end
    self.namespace = self.config.namespace or creds.namespace or M.DEFAULT_NAMESPACE
    if not self.api then
        self.api = api_mod.new({
            client = self.client,
            server = creds.server,
            ca = creds.ca,
            cert = creds.cert,
            key = creds.key,
            token = creds.token,
            token_file = creds.token_file,
            read_file = self.read_file,
            now = self.now_s,
            sleep = function(sec)
                self:_sleep(sec)
            end,
            qps = self.config.api_qps,
            burst = self.config.api_burst,
            log = self.log,
        })
    end
    return true
end

-- where the API server is, for messages (before the credentials are read: where they come from)
function Kube:_server()
    if self.api then
        return self.api.server
    end
    if self.credentials then
        return self.credentials.server
    end
    return self.config.kubeconfig_path and ("the server of " .. self.config.kubeconfig_path) or "the in-cluster address"
end

--- The 503 a client gets while the runtime cannot be used: unreachable (KUBERNETES::UNAVAILABLE), or
--- reachable but unusable as configured (a missing namespace, RBAC that forbids a verb, unreadable
--- credentials: KUBERNETES::INITIALIZATION_ERROR naming the problem). Both are retried by every connect.
function Kube:unavailable(reason)
    if self.init_error then
        return M.INIT_ERROR_CODE, string.format("The Kubernetes runtime cannot be used: %s", self.init_error)
    end
    return M.UNAVAILABLE_CODE, string.format("Kubernetes API server is unreachable at %s: %s", self:_server(),
        tostring(reason))
end

local function seg(s)
    assert(type(s) == "string" and s ~= "", "kubernetes: a name is required")
    return api_mod.urlencode(s)
end

-- /api/v1/namespaces/{ns}/{resource}[/{name}]
function Kube:_path(resource, name)
    local p = "/api/v1/namespaces/" .. seg(self.namespace) .. "/" .. resource
    if name then
        p = p .. "/" .. seg(name)
    end
    return p
end

--- GET /version, then GET the namespace: a namespace that does not exist is an error naming it (one the
--- server may not read, 403, is only warned about: a namespaced Role cannot grant it). Then the agent's
--- ConfigMap is made sure of (GET, and a create when missing), so that no create pays for it. Returns {}.
--- A failure that is not the transport's is kept in `init_error`, which unavailable() names to clients.
function Kube:connect()
    local info, err = self:_connect()
    if not info and type(err) == "table" and err.kind ~= "unavailable" then
        self.init_error = tostring(err.message)
    else
        self.init_error = nil
    end
    return info, err
end

function Kube:_connect()
    local ok, err = self:_setup()
    if not ok then
        return nil, err
    end
    local version, verr = self.api:get("/version")
    if not version then
        return nil, verr
    end
    self.version = version.gitVersion
    local ns, nerr = self.api:get("/api/v1/namespaces/" .. seg(self.namespace))
    if not ns then
        if nerr.kind == "not_found" then
            return nil, rterrors.new("api", string.format('the namespace "%s" does not exist (kubernetes.namespace)',
                self.namespace), { status = 404 })
        elseif nerr.status == 403 then
            self:_warn("cannot check that the Kubernetes namespace exists", { namespace = self.namespace,
                error = nerr.message })
        else
            return nil, nerr
        end
    end
    local cm, cerr = self:_ensure_agent()
    if not cm then
        if type(cerr) == "table" and cerr.kind ~= "unavailable" then
            return nil, rterrors.new("api", "cannot make sure the agent's ConfigMap exists: " .. tostring(cerr.message),
                { status = cerr.status })
        end
        return nil, cerr
    end
    return {}
end

local function status(state, reason, message, at_us)
    if not state then
        return nil
    end
    return { state = state, reason = reason, message = message, at_us = at_us }
end

-- provisioning (provision.lua): the agent ConfigMap, the pull Secret, the pod, the wait until it runs
require("runtimes.kubernetes.provision")(Kube, M, { status = status })
require("runtimes.kubernetes.diagnostics")(Kube) -- the optional diagnostics of the contract

------------------------------------------------------------------------------------------------------------
-- operations on a provisioned sandbox (rec.handle is the pod's name)

--- Writes a renewed expiry into the Pod's `opensandbox.io/expires-at` annotation (one merge patch), so that
--- another replica, or this one restarted without its store, sees the renewal (list() reads it back).
function Kube:set_expiry(rec, expires_us)
    local _, err = self.api:merge_patch(self:_path("pods", rec.handle),
        { metadata = { annotations = { [mapping.ANN.expires] = timefmt.format(expires_us) } } })
    if err then
        return nil, err
    end
    return true
end

------------------------------------------------------------------------------------------------------------
-- leadership: several server replicas on one namespace; only the holder of a coordination.k8s.io Lease
-- removes expired sandboxes and sweeps (every replica serves every sandbox)

M.LEASE_SECONDS = 15 -- a holder that has not renewed for this long has lost it

function Kube:_lease_path()
    local name = "opensandbox-server" .. (self.instance and ("-" .. self.instance) or "")
    return "/apis/coordination.k8s.io/v1/namespaces/" .. seg(self.namespace) .. "/leases", name
end

local function micro_time(s)
    return timefmt.format(math.floor(s * 1e6))
end

--- Takes or keeps the Lease for `identity`: true when this replica holds it now, false when another live
--- replica does (or won a race for it), nil, err when the apiserver cannot be asked. 1-2 requests.
function Kube:lead(identity)
    local leads, err = self:_lead(identity)
    self.leading = leads == true
    return leads, err
end

function Kube:_lead(identity)
    local base, name = self:_lease_path()
    local now = self.now_s()
    local lease, err = self.api:get(base .. "/" .. name)
    if not lease then
        if not (err and err.kind == "not_found") then
            return nil, err
        end
        local _, cerr = self.api:create(base, { apiVersion = "coordination.k8s.io/v1", kind = "Lease",
            metadata = { name = name, labels = { [mapping.LABEL_MANAGED_BY] = mapping.MANAGED_BY } },
            spec = { holderIdentity = identity, leaseDurationSeconds = M.LEASE_SECONDS,
                acquireTime = micro_time(now), renewTime = micro_time(now), leaseTransitions = 0 } })
        if cerr and cerr.kind == "conflict" then
            return false -- another replica created it first
        elseif cerr then
            return nil, cerr
        end
        return true
    end
    local spec = type(lease.spec) == "table" and lease.spec or {}
    local renewed = timefmt.parse(spec.renewTime or "")
    local duration = tonumber(spec.leaseDurationSeconds) or M.LEASE_SECONDS
    local mine = spec.holderIdentity == identity
    if not mine and renewed and renewed / 1e6 + duration > now then
        return false -- another replica holds it and is alive
    end
    spec.holderIdentity, spec.renewTime, spec.leaseDurationSeconds = identity, micro_time(now), M.LEASE_SECONDS
    if not mine then
        spec.acquireTime = micro_time(now)
        spec.leaseTransitions = (tonumber(spec.leaseTransitions) or 0) + 1
    end
    lease.spec = spec
    local _, uerr = self.api:replace(base .. "/" .. name, lease) -- conditional on its resourceVersion
    if uerr and uerr.kind == "conflict" then
        return false -- another replica renewed or took it meanwhile
    elseif uerr then
        return nil, uerr
    end
    return true
end

--- The expiry the Pod's annotation holds now (one GET), or nil (manual cleanup, gone), or nil, err.
function Kube:expiry_of(rec)
    local pod, err = self.api:get(self:_path("pods", rec.handle))
    if not pod then
        return nil, err
    end
    local identity = mapping.identity_of(pod)
    return identity and identity.expires_us or nil
end

local NO_PAUSE = 'Kubernetes has no pause: pause and resume are not supported with runtime.type = "kubernetes".'

function Kube.pause()
    return nil, rterrors.new("unsupported", NO_PAUSE)
end

function Kube.resume()
    return nil, rterrors.new("unsupported", NO_PAUSE)
end

M.NO_NETWORK_POLICY = "networkPolicy is not supported on the kubernetes runtime."

--- Network policy (lua/runtimes/README.md): not enforced on Kubernetes (no egress filter by name in a
--- NetworkPolicy), so a create that asks for one is refused before anything is made.
function Kube.network_policy_support()
    return nil, M.NO_NETWORK_POLICY
end

function Kube.set_network_policy()
    return nil, rterrors.new("unsupported", M.NO_NETWORK_POLICY)
end

--- Deletes the pod (its pull Secret goes with it); gone already counts as removed.
function Kube:remove(rec)
    return self:_delete_pod(rec.handle)
end

------------------------------------------------------------------------------------------------------------
-- what exists

local function same_status(a, b)
    return a ~= nil and b ~= nil and a.state == b.state and a.reason == b.reason and a.message == b.message
end

local function id_of(pod)
    local labels = type(pod.metadata) == "table" and type(pod.metadata.labels) == "table" and pod.metadata.labels
    return labels and labels[mapping.LABEL_ID] or nil
end

-- one listed pod: its entry, what is known of it, and the little the collection of orphans needs
local function list_entry(pod, out, known, lite)
    local meta = type(pod.metadata) == "table" and pod.metadata or {}
    local id = id_of(pod)
    local st = status(mapping.status_of(pod))
    local identity = nil
    if not meta.deletionTimestamp then
        identity = mapping.identity_of(pod)
    end
    local ip = mapping.ip_of(pod)
    out[#out + 1] = { id = id, handle = meta.name, place = { ip = ip }, status = st, sandbox = identity }
    if meta.name then
        known[meta.name] = { id = id, status = st, expires_us = identity and identity.expires_us, ip = ip }
    end
    local volumes = {}
    local spec = type(pod.spec) == "table" and pod.spec or {}
    for _, v in ipairs(type(spec.volumes) == "table" and spec.volumes or {}) do
        if type(v) == "table" and type(v.configMap) == "table" and v.configMap.name then
            volumes[#volumes + 1] = { configMap = { name = v.configMap.name } }
        end
    end
    lite[#lite + 1] = { metadata = { name = meta.name, uid = meta.uid, labels = { [mapping.LABEL_ID] = id } },
        spec = { volumes = volumes } }
end

--- Every pod of this server (of this instance, with kubernetes.instance): one LIST per M.LIST_PAGE pods.
--- Each page is turned into entries before the next is asked for, so only one page of full Pod objects
--- is held at a time (a Pod is kilobytes of JSON: 500 at once made the server's memory peak at twice its
--- size). Remembers its resourceVersion, where the next watch starts. A pod being deleted is listed as
--- Stopping and without identity (never adopted).
function Kube:list()
    local selector = mapping.selector(self.instance)
    local out, known, lite = {}, {}, {}
    local rv, cont, done = nil, nil, false
    repeat
        local path = self:_path("pods") .. api_mod.query({ { "labelSelector", selector },
            { "limit", tostring(M.LIST_PAGE) }, { "continue", cont } })
        local doc, err = self.api:get(path)
        if not doc then
            if api_mod.is_gone(err) and cont then -- the continue token expired: list again from the start
                out, known, lite, cont = {}, {}, {}, nil
            else
                return nil, err
            end
        else
            for _, pod in ipairs(type(doc.items) == "table" and doc.items or {}) do
                list_entry(pod, out, known, lite)
            end
            local meta = type(doc.metadata) == "table" and doc.metadata or {}
            rv = meta.resourceVersion or rv
            cont = type(meta.continue) == "string" and meta.continue ~= "" and meta.continue or nil
            done = cont == nil
        end
    until done
    self.known = known
    self.resource_version = rv
    self:_collect_orphans(lite)
    return out
end

-- the name of every ConfigMap the pods mount
local function mounted_configmaps(pods)
    local used = {}
    for _, pod in ipairs(pods) do
        local spec = type(pod.spec) == "table" and pod.spec or {}
        for _, v in ipairs(type(spec.volumes) == "table" and spec.volumes or {}) do
            if type(v) == "table" and type(v.configMap) == "table" and v.configMap.name then
                used[v.configMap.name] = true
            end
        end
    end
    return used
end

-- whether an object carries exactly this server's instance label (none when it has no instance): orphans
-- are collected only by servers of their own instance, never by a server that owns every instance's pods
local function same_instance(obj, instance)
    local labels = type(obj.metadata) == "table" and type(obj.metadata.labels) == "table" and obj.metadata.labels
        or {}
    return labels[mapping.LABEL_INSTANCE] == instance
end

local function created_s(obj)
    local t = type(obj.metadata) == "table" and timefmt.parse(obj.metadata.creationTimestamp or "")
    return t and t / 1e6 or nil
end

--- Best effort, by the holder of the Lease (a single server holds it too), at most every M.GC_INTERVAL
--- seconds, after a list (`pods` = every pod of ours): deletes agent ConfigMaps of other agent versions
--- that no pod mounts (left by earlier versions of the server), and image-pull Secrets that no pod owns and
--- whose sandbox has no pod, once older than kubernetes.orphan_grace_seconds (a create that crashed
--- between the Secret and its pod); makes a live pod the owner of its Secret when a crash came between the
--- two. Notices when the current agent ConfigMap was deleted behind our back, and makes it again.
--- 2 requests (two LISTs), plus one per orphan. Failures are logged, never returned.
-- an unowned pull Secret past its grace: its pod (if any) becomes the owner, else it is deleted
function Kube:_orphaned_secret(name, id, live)
    local pod = id and live[id]
    if pod and type(pod.metadata) == "table" and pod.metadata.uid then
        -- the pod exists but the ownerReference was never written (a crash in between): write it now
        local _, perr = self.api:merge_patch(self:_path("secrets", name), mapping.owner_patch(pod))
        if perr then
            self:_warn("cannot make a pod own its image pull Secret", { secret = name, error = perr.message })
        end
        return
    end
    local _, derr = self.api:delete(self:_path("secrets", name))
    if derr and derr.kind ~= "not_found" then
        self:_warn("cannot delete an orphaned image pull Secret", { secret = name, error = derr.message })
    elseif self.log then
        self.log.info("deleted an orphaned image pull Secret", { secret = name, sandbox_id = id })
    end
end

function Kube:_collect_orphans(pods)
    local now = self.now_s()
    if self.leading ~= true or (self.last_gc and now - self.last_gc < M.GC_INTERVAL) or not self.agent_files then
        return
    end
    self.last_gc = now
    local selector = api_mod.query({ { "labelSelector", mapping.selector(self.instance) } })
    local tag = self.agent_files:tag()
    local current = tag and mapping.agent_configmap_name(tag)
    local cms, err = self.api:get(self:_path("configmaps") .. selector)
    if not cms then
        self:_warn("cannot list the agent ConfigMaps", { error = tostring(err and err.message) })
        return
    end
    local used, seen_current = mounted_configmaps(pods), false
    for _, cm in ipairs(type(cms.items) == "table" and cms.items or {}) do
        local name = type(cm.metadata) == "table" and cm.metadata.name
        if name == current then
            seen_current = true
        elseif name and not used[name] and same_instance(cm, self.instance) then
            local _, derr = self.api:delete(self:_path("configmaps", name))
            if derr and derr.kind ~= "not_found" then
                self:_warn("cannot delete an unused agent ConfigMap", { configmap = name, error = derr.message })
            elseif self.log then
                self.log.info("deleted an unused agent ConfigMap", { configmap = name })
            end
        end
    end
    if current and not seen_current then
        self.agent_ready[current] = nil -- deleted behind our back: the next provision (or this) makes it again
        self:_ensure_agent()
    end
    local secrets, serr = self.api:get(self:_path("secrets") .. selector)
    if not secrets then
        self:_warn("cannot list the image pull Secrets", { error = tostring(serr and serr.message) })
        return
    end
    local live = {} -- sandbox id -> its pod
    for _, pod in ipairs(pods) do
        local id = id_of(pod)
        if id then
            live[id] = pod
        end
    end
    for _, sec in ipairs(type(secrets.items) == "table" and secrets.items or {}) do
        local meta = type(sec.metadata) == "table" and sec.metadata or {}
        local owned = type(meta.ownerReferences) == "table" and next(meta.ownerReferences) ~= nil
        local born = created_s(sec)
        local due = born and now - born >= self.orphan_grace
        if meta.name and not owned and due and same_instance(sec, self.instance) then
            self:_orphaned_secret(meta.name, id_of(sec), live)
        end
    end
end

-- one watch event: updates what is known and the resourceVersion, reports a change
function Kube:_on_event(ev, on_change)
    local obj = ev.object
    local meta = type(obj.metadata) == "table" and obj.metadata or {}
    if meta.resourceVersion then
        self.resource_version = meta.resourceVersion
    end
    local name = meta.name
    if ev.type == "BOOKMARK" or not name then
        return
    end
    local id = id_of(obj)
    if ev.type == "DELETED" then
        self.known[name] = nil
        if id then
            on_change({ id = id, handle = name, gone = true })
        end
        return
    end
    local st = status(mapping.status_of(obj))
    local prev = self.known[name]
    -- the identity too (never of a pod being deleted): another replica's new sandbox is adopted from it at
    -- once, and a renewal another replica wrote (the expiry annotation) is taken
    local identity = not meta.deletionTimestamp and mapping.identity_of(obj) or nil
    local expires = identity and identity.expires_us
    local ip = mapping.ip_of(obj)
    if st then
        self.known[name] = { id = id, status = st, expires_us = expires, ip = ip }
    end
    local changed = not same_status(prev and prev.status, st) or (prev and (prev.expires_us ~= expires or
        prev.ip ~= ip))
    if id and st and changed then
        on_change({ id = id, handle = name, status = st, sandbox = identity, place = { ip = ip } })
    end
end

-- after a 410: list again and report what differs from what was known
function Kube:_relist(on_change)
    local before = self.known
    local entries, err = self:list()
    if not entries then
        return nil, err
    end
    local seen = {}
    for _, e in ipairs(entries) do
        seen[e.handle] = true
        local prev = before[e.handle]
        local moved = prev and (prev.expires_us ~= (e.sandbox and e.sandbox.expires_us) or prev.ip ~= e.place.ip)
        if e.id and e.status and (not same_status(prev and prev.status, e.status) or moved) then
            on_change({ id = e.id, handle = e.handle, status = e.status, sandbox = e.sandbox, place = e.place })
        end
    end
    for name, k in pairs(before) do
        if not seen[name] and k.id then
            on_change({ id = k.id, handle = name, gone = true })
        end
    end
    return true
end

--- Follows this server's pods from the last list's (or event's, or bookmark's) resourceVersion and calls
--- on_change(change) for each status change or removal; on_change must not yield. When the
--- resourceVersion has expired (410 Gone), lists again, reports every difference, and watches on.
--- Returns only when the stream ends: nil, err.
function Kube:watch(on_change)
    if not self.resource_version then
        local entries, err = self:list()
        if not entries then
            return nil, err
        end
    end
    local path = self:_path("pods") .. api_mod.query({ { "labelSelector", mapping.selector(self.instance) } })
    while true do
        local _, err = self.api:watch(path, self.resource_version, function(ev)
            self:_on_event(ev, on_change)
        end, { timeout_s = self.config.watch_timeout_seconds })
        if not api_mod.is_gone(err) then
            return nil, err or rterrors.new("unavailable", "the Kubernetes watch stopped")
        end
        if self.log then
            self.log.info("Kubernetes watch expired; listing again", { resource_version = self.resource_version })
        end
        local ok, lerr = self:_relist(on_change)
        if not ok then
            return nil, lerr
        end
    end
end

------------------------------------------------------------------------------------------------------------
-- pools (sandbox/pools.lua): a member is a pod provisioned with spec.pool_member (mapping.pod: env
-- OPENSANDBOX_POOL_MEMBER=1, no args, so bootstrap.sh runs `execd --pool-member`, execd/src/pool.c) and
-- labelled with its pool; pool_ping and pool_claim talk to its agent at the pod IP, never to the apiserver

pool_agent.install(Kube, { port = M.AGENT_PORT })

M.POOL_NAME_MAX = 63 -- a pool's name is a label value

--- A pool's template on this runtime (pure): a PodTemplateSpec (runtimes.kubernetes.pool_template) or, when
--- `v` is not one, false (the Docker-shaped template). `name` is the pool's: a label value, at most 63
--- characters. Returns the parts, false, or nil and a message (a 400).
function Kube.pool_template(_, v, name)
    if type(name) == "string" and #name > M.POOL_NAME_MAX then
        return nil, string.format("name must be at most %d characters on the kubernetes runtime (it is a label "
            .. "value).", M.POOL_NAME_MAX)
    end
    return pool_template.parse(v)
end

------------------------------------------------------------------------------------------------------------
-- addresses

--- The pod's IP and the port, for the server's proxy and for clients alike (clients must reach pod IPs:
--- from outside the cluster, use_server_proxy=true goes through the server instead).
function Kube.address(_, rec, port, from)
    local ip = type(rec.place) == "table" and rec.place.ip
    if type(ip) ~= "string" or ip == "" then
        return nil, rterrors.new("conflict", "the sandbox has no address")
    end
    if from == "public" then
        -- the pod's own address: server.eip (the server's public host) does not replace it
        return { host = ip:find(":", 1, true) and ("[" .. ip .. "]") or ip, port = port, own_host = true }
    end
    return { host = ip, port = port }
end

return M
