-- Part of the lifecycle service (sandbox/service.lua): snapshots (upstream sandbox-lifecycle.yml: Snapshot,
-- POST /sandboxes/{id}/snapshots, GET/DELETE /snapshots/{id}, GET /snapshots, and snapshotId on create).
--
-- A snapshot is a record of ours (the store's `snapshots` table, kept in memory in `self.snapshots`) and an
-- artifact of the runtime's (Docker: a committed image), made and removed through the optional snapshot
-- methods of the runtime contract (lua/runtimes/README.md: capabilities.snapshots, snapshot,
-- snapshot_state, delete_snapshot, is_snapshot_image). A runtime without them refuses snapshots with 400
-- SANDBOX::API_NOT_SUPPORTED.
--
-- States: Creating -> Ready | Failed; Ready or Failed -> Deleting -> (gone). The capture runs in a background
-- task that holds the source sandbox's lock (a delete, pause or expiry of the source waits for it; the source
-- keeps running). A restart while Creating asks the runtime whether the artifact exists: Ready if it does
-- (the capture had finished), else Failed ("interrupted by a server restart").
--
-- Deleting: the record shows Deleting at once (GET shows it, creates from it are refused) and the artifact
-- is removed as soon as no sandbox uses it: sandboxes created from the snapshot keep running on it (Docker
-- refuses to remove an image a container uses), and the removal is retried every SNAPSHOT_RETRY seconds
-- until the last of them is gone; then the record goes. Deleting a sandbox never deletes its snapshots.
--
-- Visibility is the sandboxes' rule (views.lua): a non-admin principal sees only the snapshots it made.
local errors = require("common.errors")
local json = require("common.json")
local timefmt = require("common.timefmt")
local model = require("sandbox.model")
local listing = require("sandbox.listing")
local C = require("sandbox.constants")

local P = {}

local SNAP = { CREATING = "Creating", READY = "Ready", FAILED = "Failed", DELETING = "Deleting" }
P.SNAPSHOT_STATE = SNAP

-- seconds between looks at snapshots left Deleting (in use) or whose store write failed
local SNAPSHOT_RETRY = 5

local REASONS = {
    accepted = { SNAP.CREATING, "snapshot_accepted", "Snapshot creation accepted." },
    ready = { SNAP.READY, "snapshot_ready", "Snapshot is ready." },
    recovered = { SNAP.READY, "snapshot_ready",
        "Snapshot is ready (its capture had finished when the server restarted)." },
    interrupted = { SNAP.FAILED, "snapshot_interrupted", "Snapshot creation was interrupted by a server restart." },
    delete_requested = { SNAP.DELETING, "snapshot_delete_requested", "Snapshot deletion requested." },
}

local function not_found(id)
    return errors.new(404, "SNAPSHOT::NOT_FOUND", string.format("Snapshot %s not found.", id))
end

local function msg(err)
    return tostring(type(err) == "table" and err.message or err)
end

local function set_status(snap, reason, message, now_us)
    local r = REASONS[reason]
    local state = r and r[1] or reason
    if snap.state ~= state or not snap.transition_us then
        snap.transition_us = now_us
    end
    snap.state = state
    snap.reason = r and r[2] or snap.reason
    snap.message = message or (r and r[3])
    return snap
end

--- The `Snapshot` object of the API for a snapshot record, ready for json.encode.
function P.snapshot_view(_, snap)
    return {
        id = snap.id,
        sandboxId = snap.sandbox_id,
        name = snap.name,
        status = {
            state = snap.state,
            reason = snap.reason,
            message = snap.message,
            lastTransitionAt = timefmt.format(snap.transition_us),
        },
        createdAt = timefmt.format(snap.created_us),
    }
end

function P:snapshots_supported()
    local caps = self.runtime.capabilities
    return caps and caps.snapshots == true and self.runtime.snapshot ~= nil
end

function P:snapshots_unsupported(what)
    return errors.new(400, "SANDBOX::API_NOT_SUPPORTED", string.format("%s not supported by the %s runtime.", what,
        tostring(self.runtime.name)))
end

-- the snapshot record `id` when `ctx` may see it, else nil, 404
function P:visible_snapshot(id, ctx)
    local snap = self.snapshots[id]
    if not snap or not self:visible(snap, ctx) then
        return nil, not_found(id)
    end
    return snap
end

---------------------------------------------------------------------------------------------------------
-- the store
---------------------------------------------------------------------------------------------------------

--- Loads the snapshot records from the store into memory (with load(), before connecting).
function P:load_snapshots()
    self.snapshots = self.snapshots or {}
    if not self.store.all_snapshots then
        return 0
    end
    local all, err = self.store:all_snapshots()
    if not all then
        return nil, err
    end
    for _, snap in ipairs(all) do
        self.snapshots[snap.id] = snap
    end
    return #all
end

-- Commits a snapshot record: the store, then memory. A request's change (create, delete) fails with 503
-- when the store refuses it; a fact (the runtime has done it: `fact`) goes to memory anyway and is written
-- again by the next retry.
function P:commit_snapshot(snap, fact)
    local ok, err = self.store:put_snapshot(snap)
    if not ok then
        self.log.error("store write failed", { snapshot_id = snap.id, error = tostring(err) })
        if not fact then
            return nil, self:store_error(err)
        end
        self.snapshots_unsaved[snap.id] = true
        self:arm_snapshot_retry()
    else
        self.snapshots_unsaved[snap.id] = nil
    end
    local old = self.snapshots[snap.id]
    self.snapshots[snap.id] = snap
    self:snapshot_event(old, snap)
    return snap
end

-- Tells the event stream (sandbox/events.lua) of a snapshot change; a metadata filter matches the metadata
-- of the source sandbox while it exists.
function P:snapshot_event(old, new)
    if self.events then
        local src = self.records[(new or old).sandbox_id]
        self.events:snapshot(old, new, src and src.metadata)
    end
end

function P:forget_snapshot(id)
    local ok, err = self.store:delete_snapshot(id)
    if not ok then
        self.log.error("store delete failed", { snapshot_id = id, error = tostring(err) })
        return nil, err
    end
    local old = self.snapshots[id]
    self.snapshots[id] = nil
    self.snapshots_unsaved[id] = nil
    if old then
        self:snapshot_event(old, nil)
    end
    return true
end

---------------------------------------------------------------------------------------------------------
-- create
---------------------------------------------------------------------------------------------------------

--- POST /sandboxes/{id}/snapshots: accepts a snapshot of the Running sandbox `id` (202 with the snapshot in
--- Creating) and captures it in the background. `opts = { name = s|nil }`. Returns the view or nil, err.
function P:create_snapshot(id, opts, ctx)
    local _, verr = self:check_visible(id, ctx)
    if verr then
        return nil, verr
    end
    if not self:snapshots_supported() then
        return nil, self:snapshots_unsupported("Snapshots are")
    end
    local _, werr = self:wait_provisioned(id)
    if werr then
        return nil, werr
    end
    local ok, err = self:require_runtime()
    if not ok then
        return nil, err
    end
    -- the lock is handed to the capture task, which releases it when the runtime has answered: what
    -- would change the source meanwhile (delete, pause, expiry) waits for the capture
    local lock = self:lock_of(id)
    local got, lerr = lock:acquire(C.PROVISION_WAIT)
    if not got then
        return nil, errors.new(409, "SANDBOX::PROVISIONING_IN_PROGRESS", string.format("Sandbox %s is busy: %s.", id,
            tostring(lerr)), { ["Retry-After"] = "5" })
    end
    local cur = self.records[id]
    if not cur or cur.state ~= model.STATE.RUNNING then
        lock:release()
        if not cur then
            return nil, errors.not_found(id)
        end
        return nil, errors.new(409, "SNAPSHOT::INVALID_SOURCE_STATE",
            "Snapshot can only be created from a Running sandbox.")
    end
    local now = self:now_us()
    local snap = set_status({
        id = self.core.uuid.v4(),
        sandbox_id = id,
        name = opts and opts.name or nil,
        principal = ctx and ctx.principal or nil,
        created_us = now,
    }, "accepted", nil, now)
    local committed, cerr = self:commit_snapshot(snap)
    if not committed then
        lock:release()
        return nil, cerr
    end
    self.snapshot_tasks[snap.id] = true
    self.log.info("snapshot accepted", { snapshot_id = snap.id, sandbox_id = id })
    self.core.spawn(function()
        local pok, res, rerr = pcall(function()
            local src = self.records[id]
            if not src or src.state ~= model.STATE.RUNNING then
                return nil, "the sandbox stopped running before its capture began"
            end
            return self.runtime:snapshot(src, { id = snap.id, sandbox_id = id, principal = snap.principal })
        end)
        lock:release()
        if not lock:busy() and not self.records[id] then
            self.locks[id] = nil
        end
        if not pok then
            res, rerr = nil, "internal error: " .. tostring(res)
        end
        self:finish_snapshot(snap.id, res, rerr)
    end)
    return self:snapshot_view(snap)
end

--- Records the outcome of a capture: `res = { image }` (Ready) or nil and `err` (Failed).
function P:finish_snapshot(id, res, err)
    self.snapshot_tasks[id] = nil
    local cur = self.snapshots[id]
    if not cur then -- (cannot happen through the API: a Creating snapshot cannot be deleted)
        if res then
            self.runtime:delete_snapshot({ id = id, image = res.image })
        end
        return
    end
    local upd = self:copy(cur)
    if res then
        upd.image = res.image
        set_status(upd, "ready", nil, self:now_us())
        self.log.info("snapshot ready", { snapshot_id = id, sandbox_id = cur.sandbox_id, image = res.image,
            ms = res.ms })
    else
        if type(err) == "table" and err.kind == "unavailable" then
            self:mark_unavailable(err)
        end
        set_status(upd, SNAP.FAILED, "Snapshot creation failed: " .. msg(err), self:now_us())
        upd.reason = "snapshot_capture_failed"
        self.log.warn("snapshot failed", { snapshot_id = id, sandbox_id = cur.sandbox_id, error = msg(err) })
    end
    self:commit_snapshot(upd, true)
end

---------------------------------------------------------------------------------------------------------
-- reads
---------------------------------------------------------------------------------------------------------

function P:get_snapshot(id, ctx)
    local snap, err = self:visible_snapshot(id, ctx)
    if not snap then
        return nil, err
    end
    return self:snapshot_view(snap)
end

--- GET /snapshots: `filter` from validate.snapshot_list_query. Returns { items, pagination }.
function P:list_snapshots(filter, ctx)
    local all = {}
    for _, snap in pairs(self.snapshots) do
        if self:visible(snap, ctx) and (not filter.sandbox_id or snap.sandbox_id == filter.sandbox_id) then
            all[#all + 1] = snap
        end
    end
    local res = listing.apply(all, { states = filter.states, page = filter.page, page_size = filter.page_size })
    local items = json.array()
    for i, snap in ipairs(res.items) do
        items[i] = self:snapshot_view(snap)
    end
    return { items = items, pagination = res.pagination }
end

---------------------------------------------------------------------------------------------------------
-- delete
---------------------------------------------------------------------------------------------------------

--- DELETE /snapshots/{id}: Creating -> 409; otherwise the snapshot goes to Deleting (durably) and its
--- artifact is removed now or, while sandboxes created from it still exist, once they are gone. 204.
function P:delete_snapshot(id, ctx)
    local snap, err = self:visible_snapshot(id, ctx)
    if not snap then
        return nil, err
    end
    if snap.state == SNAP.CREATING then
        return nil, errors.new(409, "SNAPSHOT::INVALID_STATE",
            string.format("Snapshot %s is still being created and cannot be deleted.", id))
    end
    if snap.state ~= SNAP.DELETING then
        local upd = set_status(self:copy(snap), "delete_requested", nil, self:now_us())
        local ok, cerr = self:commit_snapshot(upd)
        if not ok then
            return nil, cerr
        end
        self.log.info("snapshot deletion requested", { snapshot_id = id })
    end
    self:remove_snapshot(id)
    self:arm_snapshot_retry()
    return true
end

--- The live sandboxes created from snapshot `id` (a failed provisioning made nothing, so it does not count).
function P:snapshot_users(id)
    local n = 0
    for _, rec in pairs(self.records) do
        if rec.snapshot_id == id and not model.is_provisioning_failure(rec) then
            n = n + 1
        end
    end
    return n
end

local function in_use_message(n)
    return string.format("Snapshot deletion requested; its image is still used by %d sandbox%s created from it "
        .. "and is removed when the last of them is deleted.", n, n == 1 and "" or "es")
end

-- a new message on a Deleting snapshot (a fact: written when the store takes it)
function P:note_snapshot(snap, message)
    if snap.message ~= message then
        local upd = self:copy(snap)
        upd.message = message
        self:commit_snapshot(upd, true)
    end
end

--- Tries to remove the artifact of the Deleting snapshot `id`, then its record. May yield.
function P:remove_snapshot(id)
    local snap = self.snapshots[id]
    if not snap or snap.state ~= SNAP.DELETING or self.snapshot_removing[id] then
        return
    end
    local users = self:snapshot_users(id)
    if users > 0 then
        return self:note_snapshot(snap, in_use_message(users))
    end
    if snap.image and self:snapshots_supported() then
        if not self.available then
            return -- the runtime is away: the retry comes back to it
        end
        self.snapshot_removing[id] = true
        local ok, err = self.runtime:delete_snapshot(snap)
        self.snapshot_removing[id] = nil
        snap = self.snapshots[id]
        if not snap then
            return
        end
        if not ok then
            if type(err) == "table" and err.kind == "unavailable" then
                self:mark_unavailable(err)
            elseif type(err) == "table" and err.kind == "conflict" then
                -- in use by something the records do not show (a sandbox being adopted): later
                self:note_snapshot(snap, "Snapshot deletion requested; its image is still in use: " .. msg(err))
            else
                self.log.warn("snapshot image removal failed; retrying", { snapshot_id = id, error = msg(err) })
                self:note_snapshot(snap, "Snapshot deletion requested; removing its image failed (retrying): "
                    .. msg(err))
            end
            return
        end
    end
    if self:forget_snapshot(id) then
        self.log.info("snapshot deleted", { snapshot_id = id })
    end
end

---------------------------------------------------------------------------------------------------------
-- background: restart recovery and retries
---------------------------------------------------------------------------------------------------------

--- Settles what a restart left behind and retries what waits: a Creating snapshot with no capture running
--- in this process (Ready when the runtime has its artifact, else Failed), Deleting snapshots (removed once
--- unused), and records the store refused. Runs at every (re)connection and every SNAPSHOT_RETRY seconds
--- while something waits. Returns true when something is still waiting. May yield.
function P:recover_snapshots()
    local waiting = false
    local ids = {}
    for id in pairs(self.snapshots) do
        ids[#ids + 1] = id
    end
    for _, id in ipairs(ids) do
        local snap = self.snapshots[id]
        if snap and snap.state == SNAP.CREATING and not self.snapshot_tasks[id] then
            local st, err
            if self:snapshots_supported() then
                st, err = self.runtime:snapshot_state(snap)
            else
                st = { state = "missing" }
            end
            snap = self.snapshots[id]
            if st and snap and snap.state == SNAP.CREATING and not self.snapshot_tasks[id] then
                local upd = self:copy(snap)
                if st.state == "ready" then
                    upd.image = st.image
                    set_status(upd, "recovered", nil, self:now_us())
                else
                    set_status(upd, "interrupted", nil, self:now_us())
                end
                self.log.info("snapshot interrupted by a restart settled", { snapshot_id = id, state = upd.state })
                self:commit_snapshot(upd, true)
            elseif not st then
                waiting = true
                self.log.warn("cannot ask the runtime about an interrupted snapshot", { snapshot_id = id,
                    error = msg(err) })
            end
        elseif snap and snap.state == SNAP.DELETING then
            self:remove_snapshot(id)
            waiting = waiting or self.snapshots[id] ~= nil
        end
    end
    for id in pairs(self.snapshots_unsaved) do
        local snap = self.snapshots[id]
        if not snap or self.store:put_snapshot(snap) then
            self.snapshots_unsaved[id] = nil
        else
            waiting = true
        end
    end
    return waiting
end

--- Arms the retry timer (once) while snapshots wait for something.
function P:arm_snapshot_retry()
    local timer = self.core.timer
    if self.snapshot_retry or not (timer and timer.after) then
        return
    end
    self.snapshot_retry = timer.after(SNAPSHOT_RETRY, function()
        self.snapshot_retry = nil
        if self.stopped then
            return
        end
        if not self.available or self:recover_snapshots() then
            self:arm_snapshot_retry()
        end
    end)
end

---------------------------------------------------------------------------------------------------------
-- create from a snapshot
---------------------------------------------------------------------------------------------------------

--- Resolves the startup source of a create spec (before the hooks): a `snapshot_id` becomes the snapshot's
--- artifact as `spec.image` (404 when the caller cannot see it, 409 when it is not Ready); an `image` that
--- names a snapshot artifact directly is refused (it would bypass the snapshot's visibility). Returns true
--- or nil, err.
function P:resolve_source(spec, ctx)
    if not spec.snapshot_id then
        if self.runtime.is_snapshot_image and spec.image and self.runtime:is_snapshot_image(spec.image.uri) then
            return nil, errors.invalid(string.format("image.uri '%s' names a snapshot image; create a sandbox from "
                .. "a snapshot with snapshotId.", spec.image.uri))
        end
        return true
    end
    if not self:snapshots_supported() then
        return nil, self:snapshots_unsupported("snapshotId is")
    end
    local snap, err = self:visible_snapshot(spec.snapshot_id, ctx)
    if not snap then
        return nil, err
    end
    local ok
    ok, err = self:snapshot_ready(snap.id)
    if not ok then
        return nil, err
    end
    spec.image = { uri = snap.image }
    return true
end

--- Whether snapshot `id` can still be created from (checked again right before the record is committed:
--- the hooks may have yielded meanwhile). Returns true or nil, 409.
function P:snapshot_ready(id)
    local snap = self.snapshots[id]
    if not snap then
        return nil, not_found(id)
    end
    if snap.state ~= SNAP.READY or not snap.image then
        return nil, errors.new(409, "SNAPSHOT::NOT_READY", string.format("Snapshot %s is not ready for restore.", id))
    end
    return true
end

return P
