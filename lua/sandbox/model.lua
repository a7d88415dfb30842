-- The sandbox record and its rendering as API objects (API.md §3).
--
-- A record is a plain Lua table; it is what the store persists and what the lifecycle service keeps in
-- memory. Times are integers of microseconds since the Unix epoch (UTC).
--
--   id              string   lowercase UUIDv4
--   handle          string?  the runtime's id of what it made for the sandbox (nil until provisioned; nil for
--                   failed provisioning). Opaque to the service (Docker: the container id)
--   place           table?   the runtime's description of where the sandbox is; only the adapter reads it
--                   (through address()); the store keeps it as JSON
--   created_us      integer  when the create was accepted (createdAt)
--   expires_us      integer? current expiry (expiresAt); nil = manual cleanup
--   image_uri       string   image.uri as requested (trimmed); image.auth is never in a record
--   entrypoint      {string} the request's entrypoint
--   metadata        {k=v}    current user metadata (create-time, then patched)
--   platform        {os=, arch=}?  only when given at create
--   extensions      {k=v}    create extensions (stored, mostly ignored)
--   state, reason, message   the status (§3.2)
--   transition_us   integer  lastTransitionAt: set when state changes, and only then
--   access_token    string?  X-EXECD-ACCESS-TOKEN of the sandbox's agent (never logged)
--   failed_us       integer? failedAt of a failed-provisioning record
--   principal       any JSON value?  who created it (for hooks); opaque here (numbers in it come back from
--                   the store as floats)
--   nano_cpus       integer? the cpu limit (resourceLimits.cpu in 1e-9 cpus); nil = none. With memory, what
--                   the sandbox counts against quotas (sandbox/counters.lua), so it survives a restart
--   memory          integer? the memory limit in bytes; nil = none
--   volumes         {volume}? the create request's volumes, normalised (sandbox/volumes.lua; host ones with
--                   their resolved `source`); nil = none. Removal deletes the pvc ones marked
--                   deleteOnSandboxTermination that this server created
--   transitions     {table}? the status changes seen by this server, oldest first, at most MAX_TRANSITIONS:
--                   { at = "<microseconds, decimal text>", state, reason, message } (the lifecycle events of
--                   GET /sandboxes/{id}/diagnostics/events; kept in the record's row, so they cost no write
--                   of their own and go with the record). nil for a record restored from the runtime alone
--   snapshot_id     string?  the snapshot the sandbox was created from (sandbox/snapshots.lua); its view then
--                   shows `snapshotId` instead of `image` (image_uri is the snapshot's artifact)
--   network_policy  table?   the sandbox's current egress policy, normalised (sandbox/netpolicy.lua): set at
--                   create, changed through the egress API (sandbox/egress.lua); nil = none (no enforcement)
--   egress_token    string?  OPENSANDBOX-EGRESS-AUTH of the sandbox's egress API (never logged); set with a policy
--
--   provision       table?   while Pending: what provisioning needs beyond the fields above, to resume after a
--                   crash (resume_spec: the runtime object's name, resources); nil once provisioning ended
--
-- env and image.auth are never part of a record: the store seals them apart while provisioning runs
-- (sandbox/store.lua).
local json = require("common.json")
local timefmt = require("common.timefmt")

local M = {}

M.STATE = {
    PENDING = "Pending",
    RUNNING = "Running",
    PAUSED = "Paused",
    STOPPING = "Stopping",
    TERMINATED = "Terminated",
    FAILED = "Failed",
}

M.REASON = {
    CONTAINER_STARTING = "CONTAINER_STARTING",
    CONTAINER_RUNNING = "CONTAINER_RUNNING",
    CONTAINER_RESTARTING = "CONTAINER_RESTARTING",
    CONTAINER_PAUSED = "CONTAINER_PAUSED",
    CONTAINER_REMOVING = "CONTAINER_REMOVING",
    CONTAINER_EXITED = "CONTAINER_EXITED",
    CONTAINER_EXITED_ERROR = "CONTAINER_EXITED_ERROR",
    PROVISIONING_ERROR = "PROVISIONING_ERROR",
}

-- Fixed messages of §3.2; the ones that take a value are the functions below.
-- (the runtimes' words come from the contract's vocabulary, runtimes.status)
local RT = require("runtimes.status").MESSAGES
M.MESSAGE = {
    STARTING = RT.CONTAINER_STARTING,
    RUNNING = RT.CONTAINER_RUNNING,
    RESTARTING = RT.CONTAINER_RESTARTING,
    PAUSED = RT.CONTAINER_PAUSED,
    DELETING = RT.CONTAINER_REMOVING,
    EXPIRING = "Sandbox expired and is being removed.",
    EXITED = RT.CONTAINER_EXITED,
    -- §6.5 quotes this one bare, without the "{CODE}: " prefix of other PROVISIONING_ERROR messages.
    INTERRUPTED = "Provisioning was interrupted by a server restart.",
}

--- "Sandbox container exited with code {n}." (with " (out of memory)" before the dot when oom).
M.exited_error_message = require("runtimes.status").exit_message

--- "{CODE}: {detail}" for PROVISIONING_ERROR, e.g. code "DOCKER::SANDBOX_IMAGE_PULL_FAILED".
function M.provisioning_error_message(code, detail)
    return code .. ": " .. detail
end

--- A status value: { state=, reason=, message=, transition_us= }. Use apply_status to put it on a record.
function M.status(state, reason, message, at_us)
    return { state = state, reason = reason, message = message, transition_us = at_us }
end

-- how many status changes a record keeps (the oldest go first; the diagnostics say so)
M.MAX_TRANSITIONS = 64

-- Appends a status change to rec.transitions, copying the array (records are never changed in place: the
-- previous record still holds the old one). Times never go back in the list: a runtime's time of a change
-- can be coarser than ours (a Pod's startedAt has whole seconds) and would put Running before Pending.
local function note_transition(rec, st)
    local old = rec.transitions or {}
    local list = json.array()
    local first = #old >= M.MAX_TRANSITIONS and (#old - M.MAX_TRANSITIONS + 2) or 1
    for i = first, #old do
        list[#list + 1] = old[i]
    end
    local at = math.tointeger(st.transition_us)
    local prev = old[#old] and math.tointeger(tonumber(old[#old].at))
    if at and prev and at < prev then
        at = prev
    end
    list[#list + 1] = { at = at and string.format("%d", at) or nil, state = st.state, reason = st.reason,
        message = st.message }
    rec.transitions = list
end

--- Puts a status on a record (and notes it in rec.transitions when the state, reason or message changes).
--- lastTransitionAt changes only when the state does. Returns true when the state changed.
function M.apply_status(rec, st)
    local changed = rec.state ~= st.state
    if changed or rec.reason ~= st.reason or rec.message ~= st.message then
        note_transition(rec, st)
    end
    if changed or rec.transition_us == nil then
        rec.transition_us = st.transition_us
    end
    rec.state, rec.reason, rec.message = st.state, st.reason, st.message
    return changed
end

--- A new Pending record for a validated create spec (validate.create) accepted at `now_us`.
function M.new_record(id, spec, now_us)
    local rec = {
        id = id,
        created_us = now_us,
        expires_us = spec.timeout and now_us + spec.timeout * 1000000 or nil,
        image_uri = spec.image.uri,
        entrypoint = spec.entrypoint,
        metadata = spec.metadata or {},
        platform = spec.platform,
        extensions = spec.extensions or {},
        nano_cpus = spec.nano_cpus,
        memory = spec.memory,
        volumes = spec.volumes and #spec.volumes > 0 and spec.volumes or nil,
        snapshot_id = spec.snapshot_id,
        network_policy = spec.network_policy,
    }
    M.apply_status(rec, M.status(M.STATE.PENDING, M.REASON.CONTAINER_STARTING, M.MESSAGE.STARTING, now_us))
    return rec
end

--- The part of a validated create spec a Pending record keeps so that its provisioning can resume after a
--- crash (the rest is in the record; env and image.auth are sealed apart): { name, nano_cpus, memory, gpu }.
function M.resume_spec(spec, name)
    return { name = name, nano_cpus = spec.nano_cpus, memory = spec.memory, gpu = spec.gpu,
        runtime_template = spec.runtime_template } -- (a cold create from a pool: the runtime's part of its template)
end

--- Whether two plain values (strings, numbers, booleans, tables of them) are equal, tables by content.
function M.same_value(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then
        return a == b
    end
    for k, v in pairs(a) do
        if not M.same_value(v, b[k]) then
            return false
        end
    end
    for k in pairs(b) do
        if a[k] == nil then
            return false
        end
    end
    return true
end

--- True for a failed-provisioning record (Failed/PROVISIONING_ERROR; it has no container).
function M.is_provisioning_failure(rec)
    return rec.state == M.STATE.FAILED and rec.reason == M.REASON.PROVISIONING_ERROR
end

local function status_view(rec)
    return {
        state = rec.state,
        reason = rec.reason,
        message = rec.message,
        lastTransitionAt = timefmt.format(rec.transition_us),
    }
end

local function entrypoint_view(rec)
    local out = json.array()
    for i, s in ipairs(rec.entrypoint or {}) do
        out[i] = s
    end
    return out
end

--- The `Sandbox` object (§3.1) for a record, ready for json.encode. Absent values are left out.
function M.sandbox_view(rec)
    return {
        id = rec.id,
        image = not rec.snapshot_id and { uri = rec.image_uri } or nil,
        snapshotId = rec.snapshot_id,
        platform = rec.platform and { os = rec.platform.os, arch = rec.platform.arch } or nil,
        status = status_view(rec),
        metadata = rec.metadata or {},
        entrypoint = entrypoint_view(rec),
        expiresAt = rec.expires_us and timefmt.format(rec.expires_us) or nil,
        createdAt = timefmt.format(rec.created_us),
    }
end

--- The 202 body of create (`CreateSandboxResponse`, §2.1): like the Sandbox, without `image` (or
--- `snapshotId`: the startup source is not part of the create response).
function M.create_view(rec)
    local v = M.sandbox_view(rec)
    v.image, v.snapshotId = nil, nil
    return v
end

return M
