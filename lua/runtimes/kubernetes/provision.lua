-- Provisioning for the Kubernetes runtime (runtimes.kubernetes): the agent ConfigMap (once per agent version
-- and process), the image-pull Secret of `image.auth` and its ownerReference to the pod, the pod, and the
-- wait until the pod's container runs or cannot start. A part of the adapter, installed into its class by
-- init.lua (so `self` is the adapter); `u` has init.lua's helpers (status).
local api_mod = require("runtimes.kubernetes.api")
local mapping = require("runtimes.kubernetes.mapping")
local rterrors = require("runtimes.errors")

return function(Kube, M, u)
    local status = u.status

    local function msg(err)
        return tostring(type(err) == "table" and err.message or err)
    end

    local function failure(step, message, err)
        return nil, rterrors.at_step(step, err, message)
    end

    -- The agent's ConfigMap, created when missing; checked once per agent version and process. Returns its
    -- name and whether it holds the agent binary, or nil, err.
    function Kube:_ensure_agent()
        local files, ferr = self.agent_files:get()
        if not files then
            return nil, ferr
        end
        local tag = assert(self.agent_files:tag())
        local name = mapping.agent_configmap_name(tag)
        if not self.agent_ready[name] then
            local _, err = self.api:get(self:_path("configmaps", name))
            if err and err.kind == "not_found" then
                local _, cerr = self.api:create(self:_path("configmaps"),
                    mapping.agent_configmap(name, files, tag, self.instance))
                if cerr and cerr.kind ~= "conflict" then -- conflict: another server made it meanwhile
                    return nil, cerr
                end
            elseif err then
                return nil, err
            end
            self.agent_ready[name] = true
        end
        return name, files.execd ~= nil
    end

    -- The object `name` of `kind` ("pods", "secrets") when it is sandbox `id`'s (its id label, and this server's
    -- instance label when kubernetes.instance is set); else nil, err (a conflict when another's).
    function Kube:_own_object(kind, name, id)
        local obj, err = self.api:get(self:_path(kind, name))
        if not obj then
            return nil, err
        end
        local labels = type(obj.metadata) == "table" and type(obj.metadata.labels) == "table" and obj.metadata.labels
            or {}
        if labels[mapping.LABEL_ID] ~= id or (self.instance and labels[mapping.LABEL_INSTANCE] ~= self.instance) then
            return nil, rterrors.new("conflict", string.format("%s %s exists and is not this sandbox's", kind, name),
                { status = 409 })
        end
        return obj
    end

    -- Deletes a pod (and so what it owns); gone already counts as deleted.
    function Kube:_delete_pod(name)
        local _, err = self.api:delete(self:_path("pods", name) .. "?gracePeriodSeconds=" .. M.DELETE_GRACE_SECONDS)
        if err and err.kind ~= "not_found" then
            return nil, err
        end
        return true
    end

    -- Waits until the created pod runs or cannot start: one watch of that pod from the create's
    -- resourceVersion (again only if the stream ends early). Returns the last Pod object, or nil and
    -- { step, message, err }.
    function Kube:_wait_started(pod, deadline)
        local name = pod.metadata.name
        local rv = pod.metadata.resourceVersion
        local last, failed, done = pod, nil, false
        local function judge(p)
            last = p
            local step, reason, message = mapping.waiting_failure(p)
            if step then
                failed = { step = step, message = reason .. ": " .. message, waiting = true }
                return true
            end
            local state = mapping.status_of(p)
            if state == "Stopping" then
                failed = { step = "start", message = "the pod is being deleted" }
                return true
            end
            done = state == "Running" or state == "Terminated" or state == "Failed"
            return done
        end
        if judge(pod) then
            return (not failed) and last or nil, failed
        end
        local path = self:_path("pods") .. api_mod.query({ { "fieldSelector", "metadata.name=" .. name } })
        while not done and not failed do
            local left = deadline - self.now_s()
            if left <= 0 then
                local detail = mapping.pending_detail(last)
                return nil, { step = "start", message = string.format("the pod did not start within %d s%s",
                    self.create_timeout, detail and (": " .. detail) or "") }
            end
            local _, err = self.api:watch(path, rv, function(ev)
                local meta = type(ev.object.metadata) == "table" and ev.object.metadata or {}
                rv = meta.resourceVersion or rv
                if ev.type == "DELETED" then
                    failed = { step = "start", message = "the pod was deleted before it started" }
                    return false
                elseif ev.type ~= "BOOKMARK" and meta.name == name and judge(ev.object) then
                    return false
                end
            end, { timeout_s = left })
            if not done and not failed then
                if api_mod.is_gone(err) then -- the create's resourceVersion is already too old: read the pod
                    local p, gerr = self.api:get(self:_path("pods", name))
                    if not p then
                        return nil, { step = "start", message = "Failed to read the pod: " .. msg(gerr), err = gerr }
                    end
                    rv = p.metadata and p.metadata.resourceVersion
                    judge(p)
                elseif err and err.ended then -- the server closed the stream early: watch again, a little later
                    self:_sleep(math.min(1, math.max(0, deadline - self.now_s())))
                else
                    return nil, { step = "start", message = "Failed to watch the pod: " .. msg(err), err = err }
                end
            end
        end
        if failed then
            return nil, failed
        end
        return last
    end

    local function invalid(code, fmt, ...)
        return nil, rterrors.new("invalid", string.format(fmt, ...), { code = code, status = 400 })
    end

    --- Before anything is created: a volume name that is not the agent's, and a claim that must exist
    --- does. True or nil, err (kind "invalid": a 400).
    function Kube:check_volumes(vols)
        for _, v in ipairs(vols or {}) do
            if v.name == mapping.AGENT_VOLUME then
                return invalid("VOLUME::INVALID_NAME", "Volume name '%s' is reserved for the sandbox agent.", v.name)
            end
            if v.pvc and not v.pvc.createIfNotExists then
                local _, err = self.api:get(self:_path("persistentvolumeclaims", v.pvc.claimName))
                if err and err.kind == "not_found" then
                    return invalid("VOLUME::PVC_NOT_FOUND", "Volume '%s': PersistentVolumeClaim '%s' does not exist "
                        .. "and createIfNotExists is false.", v.name, v.pvc.claimName)
                elseif err then
                    return nil, err
                end
            end
        end
        return true
    end

    -- The claims of the sandbox's pvc volumes with createIfNotExists that do not exist, created. Returns
    -- the names this sandbox's create made (also by an interrupted provisioning of it), or nil, err.
    function Kube:_ensure_claims(sandbox_id, vols)
        local made = {}
        for _, v in ipairs(vols or {}) do
            if v.pvc and v.pvc.createIfNotExists then
                local name = v.pvc.claimName
                local obj, err = self.api:get(self:_path("persistentvolumeclaims", name))
                if err and err.kind == "not_found" then
                    obj, err = self.api:create(self:_path("persistentvolumeclaims"),
                        mapping.claim(v, self.volume_default_size, sandbox_id, self.instance))
                    if err and err.kind == "conflict" then -- made meanwhile by another create: use it
                        obj, err = self.api:get(self:_path("persistentvolumeclaims", name))
                    end
                end
                if err then
                    self:_drop_claims(made)
                    return nil, err
                end
                local labels = type(obj) == "table" and type(obj.metadata) == "table" and obj.metadata.labels or {}
                if type(labels) == "table" and labels[mapping.LABEL_VOLUME_SANDBOX] == sandbox_id then
                    made[#made + 1] = name
                end
            end
        end
        return made
    end

    function Kube:_drop_claims(names)
        for _, name in ipairs(names or {}) do
            local _, err = self.api:delete(self:_path("persistentvolumeclaims", name))
            if err and err.kind ~= "not_found" then
                self:_warn("cannot delete a claim this create made", { claim = name, error = msg(err) })
            end
        end
    end

    -- the pod manifest of a sandbox (mapping.pod with this runtime's settings), or nil, message
    function Kube:_manifest(sandbox, spec, cm, has_execd, secret)
        return mapping.pod(sandbox, spec, {
            agent_configmap = cm,
            agent_has_execd = has_execd,
            pull_secret = secret,
            -- a caller that has not proved access to a private image (spec.image.verify, sandbox.image_access):
            -- the kubelet asks the registry, with this pod's pull secret or none, even when the node has it
            image_pull_policy = (spec.image.verify and self.config.image_pull_policy ~= "Never") and "Always"
                or self.config.image_pull_policy,
            service_account = self.config.service_account,
            instance = self.instance,
            template = self.template or nil,
        })
    end

    --- Before a warm pool is created (lua/sandbox/pools.lua): whether a member of it can be made, asked of
    --- the API server without making it: the member's pod (the pool's template under the operator's and
    --- ours) POSTed with dryRun=All and fieldValidation=Strict, so that a template the API server refuses
    --- (an unknown field, a bad label, a wrong type) is a 400 naming its words, and nothing is created.
    --- 1 request (+1 per half-second while a new namespace has no default ServiceAccount yet). true or nil,
    --- err (kind "invalid" for a refusal).
    function Kube:pool_check(sandbox, spec)
        if not self.api then -- (never connected: the credentials could not be read)
            return nil, rterrors.new("unavailable", self.init_error or "not connected")
        end
        local cm, has_execd = self:_ensure_agent()
        if not cm then
            return nil, has_execd
        end
        local manifest, merr = self:_manifest(sandbox, spec, cm, has_execd,
            spec.image.auth and mapping.pull_secret_name(mapping.pod_name(sandbox)) or nil)
        if not manifest then
            return nil, rterrors.new("invalid", "template: " .. tostring(merr), { status = 400 })
        end
        local path = self:_path("pods") .. api_mod.query({ { "dryRun", "All" }, { "fieldValidation", "Strict" } })
        local _, err = self.api:create(path, manifest)
        local tries = 0
        while err and err.status == 403 and tries < M.SA_WAIT_TRIES
            and tostring(err.message):find("error looking up service account", 1, true) do
            tries = tries + 1
            self:_sleep(0.5)
            _, err = self.api:create(path, manifest)
        end
        if err and (err.status == 400 or err.status == 422) then
            return nil, rterrors.new("invalid", "template: the Kubernetes API server refuses a member's pod: "
                .. msg(err), { status = 400 })
        elseif err then
            return nil, err
        end
        return true
    end

    --- Provisions the sandbox: the agent ConfigMap (once), the pull Secret (with image.auth), the pod, the
    --- Secret's ownerReference to the pod, then a wait (kubernetes.create_timeout) until the pod's container
    --- runs or cannot start. On a failure the pod (and with it the Secret) is deleted before the error returns.
    function Kube:provision(sandbox, spec)
        local clock = self.now_s
        local started = clock()
        local steps, last = {}, started
        local function step(name)
            local t = clock()
            steps[name .. "_ms"] = math.floor((t - last) * 1e6) / 1000
            last = t
        end
        local cm, has_execd = self:_ensure_agent()
        step("agent")
        if not cm then
            return failure("agent", "Failed to deliver the agent: " .. msg(has_execd), has_execd)
        end
        local pod_name = mapping.pod_name(sandbox)
        local uri = spec.image.uri
        local secret
        if spec.image.auth then
            secret = mapping.pull_secret_name(pod_name)
        end
        local manifest, merr = self:_manifest(sandbox, spec, cm, has_execd, secret)
        if not manifest then
            return failure("create", merr, rterrors.new("unsupported", merr))
        end
        local api = self.api
        local claims, cerr = self:_ensure_claims(sandbox.id, spec.volumes)
        if not claims then
            return failure("create", "Failed to create a PersistentVolumeClaim: " .. msg(cerr), cerr)
        end
        -- The Secret exists before the pod, so that the kubelet's first pull has it; it is owned by the pod
        -- once the pod exists (a PATCH), so that the garbage collector deletes it with the pod.
        -- A provisioning a crash interrupted (API.md §6.5 step 4) may have made the Secret or the pod already:
        -- an AlreadyExists of this sandbox's own object (its id label says so) is taken, never duplicated.
        if secret then
            local secret_obj = mapping.pull_secret(secret, sandbox.id, uri, spec.image.auth, self.instance)
            local _, serr = api:create(self:_path("secrets"), secret_obj)
            if serr and serr.kind == "conflict" then
                local _, oerr = self:_own_object("secrets", secret, sandbox.id)
                if not oerr then -- ours: written again, in case the registry credentials differ
                    local _, rerr = api:merge_patch(self:_path("secrets", secret), { data = secret_obj.data })
                    serr = rerr
                else
                    serr = oerr
                end
            end
            if serr then
                self:_drop_claims(claims)
                return failure("image", "Failed to create the image pull secret: " .. msg(serr), serr)
            end
        end
        local function drop_secret()
            if secret then
                local _, derr = api:delete(self:_path("secrets", secret))
                if derr and derr.kind ~= "not_found" then
                    self:_warn("cannot delete the image pull secret", { secret = secret, error = msg(derr) })
                end
            end
        end
        local pod, err = api:create(self:_path("pods"), manifest)
        -- a namespace made moments ago has no `default` ServiceAccount until the controller-manager makes it,
        -- and admission refuses pods meanwhile (403 "error looking up service account"): transient, so
        -- wait for it (at most SA_WAIT_TRIES half-seconds) rather than fail the sandbox
        local tries = 0
        while not pod and err and err.status == 403 and tries < M.SA_WAIT_TRIES
            and tostring(err.message):find("error looking up service account", 1, true) do
            tries = tries + 1
            self:_sleep(0.5)
            pod, err = api:create(self:_path("pods"), manifest)
        end
        if not pod and err and err.kind == "conflict" then
            local taken, oerr = self:_own_object("pods", pod_name, sandbox.id)
            if taken then
                if self.log then
                    self.log.info("took the pod an interrupted provisioning had made", { sandbox_id = sandbox.id,
                        pod = pod_name })
                end
                pod, err = taken, nil
            elseif oerr and oerr.kind ~= "not_found" then -- (not_found: gone since; say the conflict)
                err = oerr
            end
        end
        step("create")
        if not pod then
            drop_secret()
            self:_drop_claims(claims)
            return failure("create", "Failed to create pod: " .. msg(err), err)
        end
        local function fail(step_name, message, cause, owned)
            local ok, derr = self:_delete_pod(pod_name)
            if not ok then
                self:_warn("cannot delete the pod of a failed sandbox", { sandbox_id = sandbox.id, pod = pod_name,
                    error = msg(derr) })
            end
            if not owned then
                drop_secret()
            end
            self:_drop_claims(claims) -- (a claim in use by the terminating pod goes once the pod has gone)
            return failure(step_name, message, cause)
        end
        if secret then
            local _, perr = api:merge_patch(self:_path("secrets", secret), mapping.owner_patch(pod))
            if perr then
                return fail("create", "Failed to make the pod own its image pull secret: " .. msg(perr), perr)
            end
        end
        local final, why = self:_wait_started(pod, started + self.create_timeout)
        step("start")
        if not final then
            local message = why.message
            if why.step == "image" then
                message = string.format("Failed to pull image '%s': %s", uri, why.message)
            elseif why.step == "create" then
                message = "Failed to create container: " .. why.message
            elseif why.waiting then
                message = "Failed to start container: " .. why.message
            end
            return fail(why.step, message, why.err, secret ~= nil)
        end
        local st = status(mapping.status_of(final))
        self.known[pod_name] = { id = sandbox.id, status = st }
        return { handle = pod_name, place = { ip = mapping.ip_of(final) }, status = st, steps = steps }
    end
end
