-- The durable sandbox store (API.md §6.4): one SQLite database, one row per sandbox record (the record
-- shape is documented in sandbox/model.lua), reached through lua-dbi (Debian lua-dbi-sqlite3).
--
-- Durability: the database runs in WAL mode and every write is its own autocommit transaction. Without
-- opts.fsync, synchronous=FULL: a write that returned true is on disk. In the server, opts.fsync is
-- core.fsync (core/fsync.c): synchronous=NORMAL, and every write asks a thread of its own to fdatasync the
-- write-ahead log right away, so the event loop never waits on the disk and concurrent writes share
-- flushes; Store:durable() waits (yielding the task) until every write made so far is on disk. The API
-- calls it before it answers any request that may have written (lua/api/init.lua), so what a client was
-- told survives a crash of the machine right after the reply, as with FULL; a server process killed at
-- any moment loses nothing either way (the log is in the kernel's cache). Writes return true or nil, err;
-- failures such as a full disk or a read-only file come back as errors, never as raises.
--
-- image.auth and env are not part of a record. So that a create answered 202 can be resumed after a crash
-- (API.md §6.5 step 4), they are kept apart in the `sealed` table from just before the record is first
-- written until provisioning ends (a few seconds; a pull at most), and deleted then; `secure_delete` makes
-- SQLite overwrite what it deletes, so they do not linger in free pages. RELIABILITY.md says why they are
-- not encrypted.
--
-- Two quirks of lua-dbi 0.7 shape the SQL below:
--   * it binds every Lua number as a double and reads every INTEGER column with sqlite3_column_int (32 bits),
--     which would corrupt microsecond times. Integers are therefore bound as decimal text (the INTEGER
--     column affinity stores them as exact 64-bit integers) and read back with CAST(... AS TEXT).
--   * after a failed step, the statement's next sqlite3_reset repeats the old error, so a statement that
--     failed is closed and dropped from the cache instead of being reused.
-- Text is read back with strlen, so columns must not hold NUL bytes: JSON columns never do (cjson escapes
-- control characters), and the text columns hold ids, tokens and validated strings.
--
-- Checkpoints: with opts.checkpoint (core.checkpoint, core/checkpoint.c), SQLite's automatic checkpoint is off
-- on this connection and a thread with a connection of its own copies the log into the database every
-- opts.checkpoint_every writes (default 500). Otherwise the write that crosses SQLite's threshold (1000
-- pages) does it in place, with two fsyncs: on a disk dockerd keeps busy, a stall of 100 ms or more.
--
-- SQLite calls block the calling thread; they are short (one indexed row, or one scan for all()).
local DBI = require("DBI")
local lfs = require("lfs")
local json = require("common.json")
local metrics = require("common.metrics")

local M = {}

local Store = {}
Store.__index = Store

local SCHEMA_VERSION = 10

-- Record fields and their column kinds: "text", "int" (exact 64-bit) or "json" (any JSON value).
local COLUMNS = {
    { "id", "text" },
    { "handle", "text" },
    { "place", "json" },
    { "created_us", "int" },
    { "expires_us", "int" },
    { "image_uri", "text" },
    { "entrypoint", "json" },
    { "metadata", "json" },
    { "platform", "json" },
    { "extensions", "json" },
    { "state", "text" },
    { "reason", "text" },
    { "message", "text" },
    { "transition_us", "int" },
    { "access_token", "text" },
    { "failed_us", "int" },
    { "principal", "json" },
    { "provision", "json" },
    { "nano_cpus", "int" },
    { "memory", "int" },
    { "volumes", "json" },
    { "transitions", "json" },
    { "snapshot_id", "text" },
    { "network_policy", "json" },
    { "egress_token", "text" },
    { "pool", "text" },
}

-- Snapshot record fields (sandbox/snapshots.lua) and their column kinds, as for COLUMNS.
local SNAPSHOT_COLUMNS = {
    { "id", "text" },
    { "sandbox_id", "text" },
    { "name", "text" },
    { "principal", "json" },
    { "image", "text" },
    { "state", "text" },
    { "reason", "text" },
    { "message", "text" },
    { "transition_us", "int" },
    { "created_us", "int" },
}

-- Each migration brings the schema from version i-1 to version i.
local MIGRATIONS = {
    {
        [[CREATE TABLE sandboxes (
            id            TEXT PRIMARY KEY,
            container_id  TEXT,
            created_us    INTEGER NOT NULL,
            expires_us    INTEGER,          -- NULL: manual cleanup
            image_uri     TEXT NOT NULL,
            entrypoint    TEXT NOT NULL,    -- JSON array
            metadata      TEXT NOT NULL,    -- JSON object
            platform      TEXT,             -- JSON object
            extensions    TEXT NOT NULL,    -- JSON object
            state         TEXT NOT NULL,
            reason        TEXT NOT NULL,
            message       TEXT NOT NULL,
            transition_us INTEGER NOT NULL,
            agent_port    INTEGER,
            host_ports    TEXT,             -- JSON object {"44772": port, "8080": port}
            container_ip  TEXT,
            access_token  TEXT,
            failed_us     INTEGER,
            principal     TEXT              -- JSON value
        )]],
        "CREATE INDEX sandboxes_by_created ON sandboxes (created_us DESC, id)",
    },
    -- 2: the runtime-neutral record (lua/runtimes/README.md): the container id becomes the adapter's
    -- `handle`, and the Docker-only columns become the adapter's `place` (Docker's shape: ip, ports,
    -- agent_port), which the service stores without reading it.
    {
        "ALTER TABLE sandboxes ADD COLUMN handle TEXT",
        "ALTER TABLE sandboxes ADD COLUMN place TEXT",
        [[UPDATE sandboxes SET handle = container_id,
            place = CASE WHEN container_id IS NULL THEN NULL ELSE json_object(
                'ip', container_ip, 'agent_port', agent_port, 'ports', json(COALESCE(host_ports, '{}'))) END]],
        "ALTER TABLE sandboxes DROP COLUMN container_id",
        "ALTER TABLE sandboxes DROP COLUMN agent_port",
        "ALTER TABLE sandboxes DROP COLUMN host_ports",
        "ALTER TABLE sandboxes DROP COLUMN container_ip",
    },
    -- 3: facts of the server rather than of one sandbox: `meta` (its identity, the identities it took over)
    -- and which principals proved access to which image repositories (pulled with credentials).
    {
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        [[CREATE TABLE image_access (
            repository TEXT NOT NULL,         -- registry/path of an image pulled with credentials
            principal  TEXT NOT NULL,         -- a principal that proved it may pull it ('' : none)
            PRIMARY KEY (repository, principal)
        )]],
    },
    -- 4: what a Pending record needs to resume its provisioning after a crash: `provision` (the create
    -- spec's non-secret rest: the runtime object's name, resources) and the `sealed` secrets (env,
    -- image.auth) of sandboxes still provisioning.
    {
        "ALTER TABLE sandboxes ADD COLUMN provision TEXT",
        "CREATE TABLE sealed (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    },
    -- 5: the resource limits join the record, so that quotas count live sandboxes' cpu and memory after a
    -- restart. Older rows have none (NULL): the start-up reconciliation fills them in from what the
    -- runtime holds (sandbox/reconcile.lua, refresh).
    {
        "ALTER TABLE sandboxes ADD COLUMN nano_cpus INTEGER",
        "ALTER TABLE sandboxes ADD COLUMN memory INTEGER",
    },
    -- 6: volumes (sandbox/volumes.lua). `volumes`: the sandbox's normalised create-time volumes (JSON array;
    -- NULL: none), so that a removal knows which to delete and a resumed provisioning mounts them.
    -- `created_volumes`: the named volumes this server created (a pvc with createIfNotExists that did not
    -- exist), the only ones deleteOnSandboxTermination may remove, also after a restart.
    {
        "ALTER TABLE sandboxes ADD COLUMN volumes TEXT",
        [[CREATE TABLE created_volumes (
            name       TEXT PRIMARY KEY,     -- the runtime's volume name (pvc.claimName)
            sandbox_id TEXT NOT NULL,        -- the sandbox whose create made it
            created_us INTEGER NOT NULL
        )]],
    },
    -- 7: the status changes the server saw (model.lua `transitions`: a bounded JSON array), the lifecycle
    -- events of the diagnostics API. Older rows have none (NULL).
    {
        "ALTER TABLE sandboxes ADD COLUMN transitions TEXT",
    },
    -- 8: snapshots (sandbox/snapshots.lua): one row per snapshot, and the snapshot a sandbox was created
    -- from (NULL: created from an image).
    {
        [[CREATE TABLE snapshots (
            id            TEXT PRIMARY KEY,
            sandbox_id    TEXT NOT NULL,    -- the source sandbox (it may be gone since)
            name          TEXT,
            principal     TEXT,             -- JSON value: who made it (visibility)
            image         TEXT,             -- the runtime's artifact (Docker: an image reference); NULL until Ready
            state         TEXT NOT NULL,    -- Creating, Ready, Failed, Deleting
            reason        TEXT NOT NULL,
            message       TEXT NOT NULL,
            transition_us INTEGER NOT NULL,
            created_us    INTEGER NOT NULL
        )]],
        "ALTER TABLE sandboxes ADD COLUMN snapshot_id TEXT",
    },
    -- 9: network policy (sandbox/netpolicy.lua, sandbox/egress.lua): the sandbox's current egress policy
    -- (JSON; NULL: none, no enforcement) and the token of its egress API (OPENSANDBOX-EGRESS-AUTH).
    {
        "ALTER TABLE sandboxes ADD COLUMN network_policy TEXT",
        "ALTER TABLE sandboxes ADD COLUMN egress_token TEXT",
    },
    -- 10: warm pools (sandbox/pools.lua): one row per pool, and the pool a sandbox was claimed from (NULL:
    -- not a claim). A sandbox's row is its claim: the member it took has the sandbox's id, and a member
    -- with a row is never handed out again, also after a restart.
    {
        [[CREATE TABLE pools (
            name       TEXT PRIMARY KEY,
            principal  TEXT,                -- JSON value: who made it (visibility)
            template   TEXT NOT NULL,       -- JSON: the validated template, without image.auth
            capacity   TEXT NOT NULL,       -- JSON: capacitySpec
            revision   INTEGER NOT NULL,    -- bumped by every update
            created_us INTEGER NOT NULL
        )]],
        "ALTER TABLE sandboxes ADD COLUMN pool TEXT",
    },
}

-- Pool record fields (sandbox/pools.lua) and their column kinds, as for COLUMNS.
local POOL_COLUMNS = {
    { "name", "text" },
    { "principal", "json" },
    { "template", "json" },
    { "capacity", "json" },
    { "revision", "int" },
    { "created_us", "int" },
}

local SQL_PUT, SQL_SELECT
do
    local names, marks, selects = {}, {}, {}
    for i, c in ipairs(COLUMNS) do
        names[i], marks[i] = c[1], "?"
        selects[i] = c[2] == "int" and string.format("CAST(%s AS TEXT) AS %s", c[1], c[1]) or c[1]
    end
    SQL_PUT = string.format("INSERT OR REPLACE INTO sandboxes (%s) VALUES (%s)", table.concat(names, ", "),
        table.concat(marks, ", "))
    SQL_SELECT = string.format("SELECT %s FROM sandboxes", table.concat(selects, ", "))
end
local SQL_GET = SQL_SELECT .. " WHERE id = ?"
local SQL_SNAP_PUT, SQL_SNAP_ALL
do
    local names, marks, selects = {}, {}, {}
    for i, c in ipairs(SNAPSHOT_COLUMNS) do
        names[i], marks[i] = c[1], "?"
        selects[i] = c[2] == "int" and string.format("CAST(%s AS TEXT) AS %s", c[1], c[1]) or c[1]
    end
    SQL_SNAP_PUT = string.format("INSERT OR REPLACE INTO snapshots (%s) VALUES (%s)", table.concat(names, ", "),
        table.concat(marks, ", "))
    SQL_SNAP_ALL = string.format("SELECT %s FROM snapshots ORDER BY created_us DESC, id ASC",
        table.concat(selects, ", "))
end
local SQL_SNAP_DELETE = "DELETE FROM snapshots WHERE id = ?"
local SQL_POOL_PUT = "INSERT OR REPLACE INTO pools (name, principal, template, capacity, revision, created_us) "
    .. "VALUES (?, ?, ?, ?, ?, ?)"
local SQL_POOL_ALL = "SELECT name, principal, template, capacity, CAST(revision AS TEXT) AS revision, "
    .. "CAST(created_us AS TEXT) AS created_us FROM pools ORDER BY created_us ASC, name ASC"
local SQL_POOL_DELETE = "DELETE FROM pools WHERE name = ?"
local SQL_ALL = SQL_SELECT .. " ORDER BY created_us DESC, id ASC"
local SQL_DELETE = "DELETE FROM sandboxes WHERE id = ?"
local SQL_VOL_PUT = "INSERT OR IGNORE INTO created_volumes (name, sandbox_id, created_us) VALUES (?, ?, ?)"
local SQL_VOL_GET = "SELECT sandbox_id FROM created_volumes WHERE name = ?"
local SQL_VOL_DROP = "DELETE FROM created_volumes WHERE name = ?"
local SQL_SEAL = "INSERT OR REPLACE INTO sealed (id, body) VALUES (?, ?)"
local SQL_UNSEAL = "SELECT body FROM sealed WHERE id = ?"
local SQL_SEALED_IDS = "SELECT id FROM sealed"
local SQL_DROP_SEALED = "DELETE FROM sealed WHERE id = ?"
local SQL_META_GET = "SELECT value FROM meta WHERE key = ?"
local SQL_META_PUT = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
local SQL_ACCESS_GET = "SELECT principal FROM image_access WHERE repository = ?"
local SQL_ACCESS_PUT = "INSERT OR IGNORE INTO image_access (repository, principal) VALUES (?, ?)"

---------------------------------------------------------------------------------------------------------
-- Statements
---------------------------------------------------------------------------------------------------------

-- How long requests waited for their writes to reach the disk (the flush thread's fdatasync of the
-- write-ahead log, shared by every write made before it began): on a disk that dockerd keeps busy this,
-- not the server, is the tail of a write's answer.
local FLUSH_WAIT = metrics.default:histogram("opensandbox_store_flush_wait_seconds",
    "Time requests that wrote waited for their writes to be on disk.", nil,
    metrics.SECONDS)
local has_core, core_mod = pcall(require, "core")
local monotonic = has_core and type(core_mod) == "table" and core_mod.monotonic or os.clock

-- The checkpoint thread's work, read at scrape time from the newest store that has one.
local CHECKPOINTS = metrics.default:counter("opensandbox_store_checkpoints_total",
    "Checkpoints of the store's write-ahead log run by the checkpoint thread, by result.", { "result" })
local WAL_FRAMES = metrics.default:gauge("opensandbox_store_wal_frames",
    "Frames in the store's write-ahead log at the last checkpoint.")
local checkpointed -- the newest open store with a checkpoint thread
metrics.default:on_scrape(function()
    local cp = checkpointed and checkpointed.checkpointer
    if not cp then
        return
    end
    local st = cp:stats()
    CHECKPOINTS:labels("ok").value = st.runs - st.failures
    CHECKPOINTS:labels("failed").value = st.failures
    WAL_FRAMES:get():set(math.max(st.log, 0))
end)

local WRITE_FAILURES = metrics.default:counter("opensandbox_store_write_failures_total",
    "Statements that failed to change the store (SQLite), by statement kind.", { "op" })
local WRITE_OPS = { INSERT = "insert", REPLACE = "insert", UPDATE = "update", DELETE = "delete" }

-- Counts a failed statement when it is a write (reads fail too, but they change nothing).
local function count_failure(sql)
    local op = WRITE_OPS[sql:match("^%s*(%a+)") or ""]
    if op then
        WRITE_FAILURES:labels(op):inc()
    end
end

-- Executes `sql` with the given parameters on a cached prepared statement. Returns the statement (ready
-- to fetch), or nil, err.
local IS_WRITE = setmetatable({}, { __index = function(t, sql)
    local w = WRITE_OPS[sql:match("^%s*(%a+)") or ""] ~= nil
    t[sql] = w
    return w
end })

local function run(self, sql, n, ...)
    if not self.db then
        count_failure(sql)
        return nil, "store is closed"
    end
    local st = self.stmts[sql]
    if not st then
        local perr
        st, perr = self.db:prepare(sql)
        if not st then
            count_failure(sql)
            return nil, tostring(perr)
        end
        self.stmts[sql] = st
    end
    local ok, res, err = pcall(st.execute, st, table.unpack({ ... }, 1, n))
    if ok and res then
        if IS_WRITE[sql] then
            if self.flusher then
                self.write_gen = self.flusher:request() -- on disk soon; Store:durable() waits for it
            end
            if self.checkpointer then
                local runs = self.checkpointer:note()
                if runs ~= self.checkpoints_seen then -- one finished since the last write: say how it went
                    self.checkpoints_seen = runs
                    self:_checkpointed()
                end
            end
        end
        return st
    end
    self.stmts[sql] = nil
    pcall(st.close, st)
    count_failure(sql)
    return nil, tostring(ok and err or res)
end

-- Fetches every remaining row of an executed statement as named tables. Returns the array or nil, err.
local function fetch_all(self, sql, st)
    local rows = {}
    local ok, err = pcall(function()
        for row in st:rows(true) do
            rows[#rows + 1] = row
        end
    end)
    if not ok then
        self.stmts[sql] = nil
        pcall(st.close, st)
        return nil, tostring(err)
    end
    return rows
end

-- Runs a one-off statement (DDL, PRAGMA, transaction control) without caching it. Returns the rows.
local function exec_once(db, sql, ...)
    local st, err = db:prepare(sql)
    if not st then
        return nil, tostring(err)
    end
    local rows = {}
    local ok, res, eerr = pcall(st.execute, st, ...)
    if ok and res then
        ok, eerr = pcall(function()
            for row in st:rows(true) do
                rows[#rows + 1] = row
            end
        end)
    else
        eerr = ok and eerr or res
        ok = false
    end
    pcall(st.close, st)
    if not ok then
        return nil, tostring(eerr)
    end
    return rows
end

---------------------------------------------------------------------------------------------------------
-- Rows and records
---------------------------------------------------------------------------------------------------------

local function int_text(v, field)
    if v == nil then
        return nil
    end
    local i = math.tointeger(v)
    if not i then
        error(string.format("store: record field %s must be an integer, got %s", field, tostring(v)), 3)
    end
    return string.format("%d", i)
end

local function row_values(rec, columns)
    local vals = {}
    for i, c in ipairs(columns or COLUMNS) do
        local name, kind = c[1], c[2]
        local v = rec[name]
        if kind == "int" then
            vals[i] = int_text(v, name)
        elseif kind == "json" then
            vals[i] = v ~= nil and json.encode(v) or nil
        else
            vals[i] = v
        end
    end
    return vals
end

local function decode_json(s)
    if s == nil then
        return nil
    end
    local v = json.decode(s)
    if v == json.null then
        return nil
    end
    return v
end

-- a decoded JSON value with every whole float made an integer and JSON nulls dropped (for `place`)
local function integers(v)
    if type(v) == "number" then
        return math.tointeger(v) or v
    end
    if type(v) ~= "table" then
        return v
    end
    local out = {}
    for k, x in pairs(v) do
        if x ~= json.null then
            out[k] = integers(x)
        end
    end
    return out
end

local function to_fields(row, columns)
    local rec = {}
    for _, c in ipairs(columns) do
        local name, kind = c[1], c[2]
        local v = row[name]
        if kind == "int" then
            rec[name] = v ~= nil and math.tointeger(tonumber(v)) or nil
        elseif kind == "json" then
            rec[name] = decode_json(v)
        else
            rec[name] = v
        end
    end
    return rec
end

local function to_record(row)
    local rec = to_fields(row, COLUMNS)
    rec.metadata = rec.metadata or {}
    rec.extensions = rec.extensions or {}
    rec.entrypoint = rec.entrypoint or {}
    if type(rec.place) == "table" then -- JSON numbers decode as floats; whole ones become integers again
        rec.place = integers(rec.place)
    end
    return rec
end

---------------------------------------------------------------------------------------------------------
-- Opening
---------------------------------------------------------------------------------------------------------

-- Default directory maker: lfs (Debian lua-filesystem). lfs.mkdir cannot set a mode, so the directory gets
-- 0777 minus the umask; pass opts.mkdir to get 0700.
local function lfs_mkdir(dir)
    local ok, err = lfs.mkdir(dir)
    if not ok and lfs.attributes(dir, "mode") ~= "directory" then
        return nil, err
    end
    return true
end

-- Creates the missing parent directories of `path`, each with mode 0700.
local function make_parents(path, mkdir)
    local dir = path:match("^(.*)/[^/]*$")
    if not dir or dir == "" then
        return true
    end
    local prefix = dir:sub(1, 1) == "/" and "" or "."
    for comp in dir:gmatch("[^/]+") do
        prefix = prefix .. "/" .. comp
        local mode = lfs.attributes(prefix, "mode")
        if mode == nil then
            local ok, err = mkdir(prefix, tonumber("700", 8))
            if not ok then
                return nil, string.format("cannot create directory %s: %s", prefix, tostring(err))
            end
        elseif mode ~= "directory" then
            return nil, string.format("%s is not a directory", prefix)
        end
    end
    return true
end

local function current_version(db)
    local ok, err = exec_once(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    if not ok then
        return nil, err
    end
    local rows
    rows, err = exec_once(db, "SELECT version FROM schema_version")
    if not rows then
        return nil, err
    end
    local v = 0
    for _, row in ipairs(rows) do
        v = math.max(v, row.version)
    end
    return v
end

local function migrate(db)
    local version, err = current_version(db)
    if not version then
        return nil, err
    end
    if version > SCHEMA_VERSION then
        return nil, string.format("store schema version %d is newer than this server's (%d)", version,
            SCHEMA_VERSION)
    end
    for v = version + 1, SCHEMA_VERSION do
        local ok
        ok, err = exec_once(db, "BEGIN IMMEDIATE")
        if not ok then
            return nil, err
        end
        for _, sql in ipairs(MIGRATIONS[v]) do
            ok, err = exec_once(db, sql)
            if not ok then
                break
            end
        end
        if ok then
            ok, err = exec_once(db, "DELETE FROM schema_version")
        end
        if ok then
            ok, err = exec_once(db, "INSERT INTO schema_version (version) VALUES (?)", tostring(v))
        end
        if ok then
            ok, err = exec_once(db, "COMMIT")
        end
        if not ok then
            exec_once(db, "ROLLBACK")
            return nil, string.format("store migration to version %d failed: %s", v, err)
        end
    end
    return true
end

--- Opens (creating if needed) the store at `path`. Missing parent directories are created with mode 0700
--- (through opts.mkdir(dir, mode) -> true | nil, err when given; the lfs fallback cannot set the mode).
--- opts.busy_timeout_ms (default 2000) bounds the wait on a locked database. opts.fsync and opts.checkpoint
--- (with opts.checkpoint_every, and opts.log for the warning when its thread cannot start) are the core
--- modules described at the top. Returns the store or nil, err.
function M.open(path, opts)
    opts = opts or {}
    if path ~= ":memory:" then
        local ok, err = make_parents(path, opts.mkdir or lfs_mkdir)
        if not ok then
            return nil, err
        end
    end
    local ok, db, err = pcall(DBI.Connect, "SQLite3", path)
    if not ok or not db then
        return nil, string.format("cannot open store %s: %s", path, tostring(ok and err or db))
    end
    db:autocommit(true) -- returns false when there was no transaction to roll back: harmless
    local function fail(e)
        db:close()
        return nil, string.format("cannot open store %s: %s", path, tostring(e))
    end
    local rows
    rows, err = exec_once(db, string.format("PRAGMA busy_timeout = %d", opts.busy_timeout_ms or 2000))
    if not rows then
        return fail(err)
    end
    rows, err = exec_once(db, "PRAGMA journal_mode = WAL")
    if not rows then
        return fail(err)
    end
    local mode = rows[1] and rows[1].journal_mode
    if mode ~= "wal" and path ~= ":memory:" then
        return fail("journal_mode is " .. tostring(mode) .. ", not wal")
    end
    rows, err = exec_once(db, opts.fsync and path ~= ":memory:" and "PRAGMA synchronous = NORMAL"
        or "PRAGMA synchronous = FULL")
    if not rows then
        return fail(err)
    end
    rows, err = exec_once(db, "PRAGMA secure_delete = ON")
    if not rows then
        return fail(err)
    end
    rows, err = migrate(db)
    if not rows then
        return fail(err)
    end
    local flusher
    if opts.fsync and path ~= ":memory:" then
        -- (the log exists once the database has been read in WAL mode, as migrate did)
        flusher = opts.fsync.open(path .. "-wal")
        if not flusher then
            rows, err = exec_once(db, "PRAGMA synchronous = FULL") -- every write flushes in place, as before
            if not rows then
                return fail(err)
            end
        end
    end
    local checkpointer
    if opts.checkpoint and path ~= ":memory:" then
        local cerr
        checkpointer, cerr = opts.checkpoint.open(path, opts.checkpoint_every)
        if checkpointer then
            rows, err = exec_once(db, "PRAGMA wal_autocheckpoint = 0")
            if not rows then
                checkpointer:close()
                return fail(err)
            end
        elseif opts.log then -- SQLite's automatic checkpoint stays on: slower writes, nothing lost
            opts.log.warn("store checkpoints stay in the writes", { error = cerr })
        end
    end
    local self = setmetatable({
        db = db,
        path = path,
        stmts = {},
        flusher = flusher,
        checkpointer = checkpointer,
        checkpoints_seen = 0,
        checkpoint_failures = 0,
        log = opts.log,
        write_gen = 0,
        durable_gen = 0,
    }, Store)
    if checkpointer then
        checkpointed = self
    end
    return self
end

M.SLOW_MS = 100 -- a checkpoint, or a wait for the log's flush, that took this long is logged as a warning

-- Logs the checkpoint thread's last checkpoint: a warning when it was slow or failed, debug otherwise.
function Store:_checkpointed()
    local log = self.log
    if not log then
        return
    end
    local st = self.checkpointer:stats()
    local fields = { ms = string.format("%.1f", st.ms), frames = st.log, copied = st.copied }
    if st.failures > self.checkpoint_failures then
        self.checkpoint_failures = st.failures
        fields.error = st.error
        log.warn("store checkpoint failed; the write-ahead log keeps growing until one succeeds", fields)
    elseif st.ms >= M.SLOW_MS then
        log.warn("slow store checkpoint", fields)
    elseif log.debug then
        log.debug("store checkpoint", fields)
    end
end

--- What the checkpoint thread did ({ runs, failures, error?, ms, max_ms, log, copied, pending, running }: see
--- core/checkpoint.c), or nil when the store has none.
function Store:checkpoint_stats()
    return self.checkpointer and self.checkpointer:stats() or nil
end

--- Waits until every write made so far is on disk: at once without core.fsync (each write was flushed in
--- place) or when it already is; otherwise yields the calling task until the flusher's thread reports it
--- (outside a task it flushes in place). Returns true, or nil, err when a flush failed (then no later
--- one vouches for this write either: see core/fsync.c).
function Store:durable()
    local f, g = self.flusher, self.write_gen
    if not f or g <= self.durable_gen then
        return true
    end
    local t0 = monotonic()
    local ok, err = f:wait(g)
    local waited = monotonic() - t0
    FLUSH_WAIT:get():observe(waited)
    if waited * 1000 >= M.SLOW_MS and self.log then
        local st = self.checkpointer and self.checkpointer:stats()
        self.log.warn("slow store flush: the disk took long to make writes durable", {
            ms = string.format("%.1f", waited * 1000),
            checkpoint_running = st and st.running or nil,
            last_checkpoint_ms = st and string.format("%.1f", st.ms) or nil,
        })
    end
    if not ok then
        return nil, err
    end
    if g > self.durable_gen then
        self.durable_gen = g
    end
    return true
end

---------------------------------------------------------------------------------------------------------
-- Operations
---------------------------------------------------------------------------------------------------------

--- Inserts or replaces the whole record (keyed by rec.id). Returns true or nil, err.
function Store:put(rec)
    local st, err = run(self, SQL_PUT, #COLUMNS, table.unpack(row_values(rec), 1, #COLUMNS))
    if not st then
        return nil, err
    end
    return true
end

--- Deletes the record with this id (a missing id is not an error). Returns true or nil, err.
function Store:delete(id)
    local st, err = run(self, SQL_DELETE, 1, id)
    if not st then
        return nil, err
    end
    return true
end

--- The record with this id; nil when there is none; nil, err on failure.
function Store:get(id)
    local st, err = run(self, SQL_GET, 1, id)
    if not st then
        return nil, err
    end
    local rows
    rows, err = fetch_all(self, SQL_GET, st)
    if not rows then
        return nil, err
    end
    return rows[1] and to_record(rows[1]) or nil
end

--- Every record, in list order (createdAt descending, then id ascending). Returns the array or nil, err.
function Store:all()
    local st, err = run(self, SQL_ALL, 0)
    if not st then
        return nil, err
    end
    local rows
    rows, err = fetch_all(self, SQL_ALL, st)
    if not rows then
        return nil, err
    end
    for i, row in ipairs(rows) do
        rows[i] = to_record(row)
    end
    return rows
end

--- The value kept under `key` in the server's own facts (a string); nil when there is none; nil, err.
function Store:meta(key)
    local st, err = run(self, SQL_META_GET, 1, key)
    if not st then
        return nil, err
    end
    local rows
    rows, err = fetch_all(self, SQL_META_GET, st)
    if not rows then
        return nil, err
    end
    return rows[1] and rows[1].value or nil
end

--- Keeps `value` (a string) under `key`. Returns true or nil, err.
function Store:set_meta(key, value)
    local st, err = run(self, SQL_META_PUT, 2, key, value)
    if not st then
        return nil, err
    end
    return true
end

--- This server's identity: the one kept in the store, or `new_id()` kept now (the first start with this
--- store). Returns the identity or nil, err.
function Store:identity(new_id)
    local id, err = self:meta("server_identity")
    if id or err then
        return id, err
    end
    id = new_id()
    local ok, perr = self:set_meta("server_identity", id)
    if not ok then
        return nil, perr
    end
    return id
end

--- Adds `names` (identities of other servers whose containers this one takes over) to those kept in the
--- store; returns every identity taken over so far (a sorted array), or nil, err.
function Store:adopt_instances(names)
    local text, err = self:meta("adopted_instances")
    if err then
        return nil, err
    end
    local set, list = {}, {}
    for _, n in ipairs(text and json.decode(text) or {}) do
        set[n] = true
    end
    local changed = false
    for _, n in ipairs(names or {}) do
        if not set[n] then
            set[n], changed = true, true
        end
    end
    for n in pairs(set) do
        list[#list + 1] = n
    end
    table.sort(list)
    if changed then
        local ok, perr = self:set_meta("adopted_instances", json.encode(json.array(list)))
        if not ok then
            return nil, perr
        end
    end
    return list
end

--- The principals that proved access to image repository `repo` (a set, principal -> true; empty when no
--- image of it was pulled with credentials), or nil, err.
function Store:image_access(repo)
    local st, err = run(self, SQL_ACCESS_GET, 1, repo)
    if not st then
        return nil, err
    end
    local rows
    rows, err = fetch_all(self, SQL_ACCESS_GET, st)
    if not rows then
        return nil, err
    end
    local set = {}
    for _, row in ipairs(rows) do
        set[row.principal] = true
    end
    return set
end

--- Records that `principal` proved access to image repository `repo`. Returns true or nil, err.
function Store:grant_image_access(repo, principal)
    local st, err = run(self, SQL_ACCESS_PUT, 2, repo, principal)
    if not st then
        return nil, err
    end
    return true
end

--- Records that this server created the named volume `name` for sandbox `sandbox_id`. True or nil, err.
function Store:add_created_volume(name, sandbox_id, created_us)
    local st, err = run(self, SQL_VOL_PUT, 3, name, sandbox_id, int_text(created_us, "created_us"))
    if not st then
        return nil, err
    end
    return true
end

--- Whether this server created the named volume: the id of the sandbox it was made for, false when not
--- recorded, or nil, err.
function Store:created_volume(name)
    local st, err = run(self, SQL_VOL_GET, 1, name)
    if not st then
        return nil, err
    end
    local rows
    rows, err = fetch_all(self, SQL_VOL_GET, st)
    if not rows then
        return nil, err
    end
    return rows[1] and rows[1].sandbox_id or false
end

--- Forgets the named volume (it was removed). True or nil, err.
function Store:drop_created_volume(name)
    local st, err = run(self, SQL_VOL_DROP, 1, name)
    if not st then
        return nil, err
    end
    return true
end

--- Keeps `secrets` (a JSON-able table: { env, auth }) of sandbox `id` apart from its record until
--- drop_sealed. Returns true or nil, err.
function Store:seal(id, secrets)
    local st, err = run(self, SQL_SEAL, 2, id, json.encode(secrets))
    if not st then
        return nil, err
    end
    return true
end

--- The secrets sealed for `id`; nil when there are none; nil, err on failure.
function Store:unseal(id)
    local st, err = run(self, SQL_UNSEAL, 1, id)
    if not st then
        return nil, err
    end
    local rows
    rows, err = fetch_all(self, SQL_UNSEAL, st)
    if not rows then
        return nil, err
    end
    return rows[1] and decode_json(rows[1].body) or nil
end

--- Deletes the secrets sealed for `id` (none is not an error). Returns true or nil, err.
--- When no sealed secrets are left, the write-ahead log is checkpointed and truncated: its frames still
--- hold the pages as they were when the secrets were written (secure_delete only overwrites the database's
--- own pages), so without this the credentials would stay in the -wal file until SQLite reuses it.
function Store:drop_sealed(id)
    local st, err = run(self, SQL_DROP_SEALED, 1, id)
    if not st then
        return nil, err
    end
    if st:affected() == 0 then -- none were sealed (most deletes): the log holds no secret of this one
        return true
    end
    local left = self:sealed_ids()
    if left and #left == 0 then
        if self.checkpointer then -- on its thread, which waits for readers and retries when busy
            self.checkpointer:truncate()
        else -- best effort: a checkpoint that cannot run now (busy) runs at the next drop or at close
            exec_once(self.db, "PRAGMA wal_checkpoint(TRUNCATE)")
        end
    end
    return true
end

--- The ids that have sealed secrets. Returns the array or nil, err.
function Store:sealed_ids()
    local st, err = run(self, SQL_SEALED_IDS, 0)
    if not st then
        return nil, err
    end
    local rows
    rows, err = fetch_all(self, SQL_SEALED_IDS, st)
    if not rows then
        return nil, err
    end
    for i, row in ipairs(rows) do
        rows[i] = row.id
    end
    return rows
end

--- Closes the database. The store cannot be used afterwards.
function Store:close()
    if self.flusher then -- what was written is flushed before the thread stops
        self.flusher:request()
        self.flusher:close()
        self.flusher = nil
    end
    if self.checkpointer then -- its connection closes first: the last one to close checkpoints the log
        self.checkpointer:close()
        self.checkpointer = nil
        if checkpointed == self then
            checkpointed = nil
        end
    end
    for sql, st in pairs(self.stmts) do
        pcall(st.close, st)
        self.stmts[sql] = nil
    end
    if self.db then
        self.db:close()
        self.db = nil
    end
    return true
end

---------------------------------------------------------------------------------------------------------
-- Snapshots
---------------------------------------------------------------------------------------------------------

--- Inserts or replaces a snapshot record (keyed by snap.id; fields as SNAPSHOT_COLUMNS). Returns true or
--- nil, err.
function Store:put_snapshot(snap)
    local n = #SNAPSHOT_COLUMNS
    local st, err = run(self, SQL_SNAP_PUT, n, table.unpack(row_values(snap, SNAPSHOT_COLUMNS), 1, n))
    if not st then
        return nil, err
    end
    return true
end

--- Deletes the snapshot record with this id (a missing one is not an error). Returns true or nil, err.
function Store:delete_snapshot(id)
    local st, err = run(self, SQL_SNAP_DELETE, 1, id)
    if not st then
        return nil, err
    end
    return true
end

--- Every snapshot record (createdAt descending, then id). Returns the array or nil, err.
function Store:all_snapshots()
    local st, err = run(self, SQL_SNAP_ALL, 0)
    if not st then
        return nil, err
    end
    local rows
    rows, err = fetch_all(self, SQL_SNAP_ALL, st)
    if not rows then
        return nil, err
    end
    for i, row in ipairs(rows) do
        rows[i] = to_fields(row, SNAPSHOT_COLUMNS)
    end
    return rows
end

---------------------------------------------------------------------------------------------------------
-- Pools
---------------------------------------------------------------------------------------------------------

--- Inserts or replaces a pool (keyed by pool.name; fields as POOL_COLUMNS). Returns true or nil, err.
function Store:put_pool(pool)
    local n = #POOL_COLUMNS
    local st, err = run(self, SQL_POOL_PUT, n, table.unpack(row_values(pool, POOL_COLUMNS), 1, n))
    if not st then
        return nil, err
    end
    return true
end

--- Deletes the pool with this name (a missing one is not an error). Returns true or nil, err.
function Store:delete_pool(name)
    local st, err = run(self, SQL_POOL_DELETE, 1, name)
    if not st then
        return nil, err
    end
    return true
end

--- Every pool (oldest first). Returns the array or nil, err.
function Store:all_pools()
    local st, err = run(self, SQL_POOL_ALL, 0)
    if not st then
        return nil, err
    end
    local rows
    rows, err = fetch_all(self, SQL_POOL_ALL, st)
    if not rows then
        return nil, err
    end
    for i, row in ipairs(rows) do
        rows[i] = to_fields(row, POOL_COLUMNS)
    end
    return rows
end

M.SCHEMA_VERSION = SCHEMA_VERSION

return M
