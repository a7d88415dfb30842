-- Scenario: core.checkpoint (core/checkpoint.c), the store's write-ahead log checkpointed on a thread of its
-- own (lua/sandbox/store.lua), with SQLite's automatic checkpoint off on the store's connection.
local core = require("core")
local checkpoint = require("core.checkpoint")
local fsync = require("core.fsync")
local timer = require("core.timer")
local model = require("sandbox.model")
local storemod = require("sandbox.store")

local dir = os.tmpname()
os.remove(dir)
assert(core.mkdirs(dir, tonumber("700", 8)))
local db = dir .. "/db.sqlite"

-- a database that is not there: nil, err naming it (the checkpointer never creates one)
local none, nerr = checkpoint.open(dir .. "/missing/db.sqlite")
assert(none == nil and tostring(nerr):find("missing", 1, true), tostring(nerr))

local function rec(id)
    local r = { id = id, created_us = 1, image_uri = "x", entrypoint = { "sh" }, metadata = {}, extensions = {},
        access_token = "t" }
    model.apply_status(r, model.status("Running", "CONTAINER_RUNNING", "", 1))
    return r
end

local function wal_size()
    local fh = io.open(db .. "-wal", "rb")
    if not fh then
        return 0
    end
    local n = fh:seek("end")
    fh:close()
    return n
end

local function until_true(what, fn)
    local t0 = core.monotonic()
    while not fn() do
        assert(core.monotonic() - t0 < 10, "timed out waiting for " .. what)
        timer.sleep(0.01)
    end
end

-- every 10 writes, the thread checkpoints: every frame is copied (nobody reads meanwhile)
local store = assert(storemod.open(db, { fsync = fsync, checkpoint = checkpoint, checkpoint_every = 10 }))
assert(store.checkpointer, "the store has a checkpoint thread")
local rows = assert(store.db:prepare("PRAGMA wal_autocheckpoint"))
rows:execute()
local auto
for row in rows:rows(true) do
    auto = row.wal_autocheckpoint
end
rows:close()
assert(auto == 0, "SQLite's automatic checkpoint is off on the store's connection: " .. tostring(auto))

local before = store:checkpoint_stats()
assert(before.runs == 0 and before.failures == 0, "no checkpoint before any write")
for i = 1, 9 do
    assert(store:put(rec("a" .. i)))
end
timer.sleep(0.05)
assert(store:checkpoint_stats().runs == 0, "9 writes: no checkpoint yet")
assert(store:put(rec("a10")))
until_true("the first checkpoint", function()
    return store:checkpoint_stats().runs == 1
end)
local st = store:checkpoint_stats()
assert(st.failures == 0 and st.error == nil, tostring(st.error))
assert(st.log > 0 and st.copied == st.log, string.format("copied %d of %d frames", st.copied, st.log))
assert(st.ms >= 0 and st.max_ms >= st.ms)

-- the metrics read it at scrape time
local text = require("common.metrics").default:expose()
assert(text:find('opensandbox_store_checkpoints_total{result="ok"} 1', 1, true), text)
assert(text:find("opensandbox_store_wal_frames " .. st.log, 1, true), text)

-- after a complete checkpoint the next writes start the log again from its beginning: 100 more writes keep
-- the file at the size of about 10 of them, never the size of 110
local size10 = wal_size()
for i = 11, 110 do
    assert(store:put(rec("a" .. i)))
    if i % 10 == 0 then -- (each batch's checkpoint done before the next batch begins)
        until_true("checkpoint " .. i // 10, function()
            return store:checkpoint_stats().runs == i // 10
        end)
    end
end
assert(store:checkpoint_stats().failures == 0)
assert(wal_size() <= size10 * 2, string.format("log %d bytes, was %d after 10 writes", wal_size(), size10))

-- dropping the secrets of a sandbox that had none (every delete does): no checkpoint is asked for
local quiet = store:checkpoint_stats().runs
assert(store:drop_sealed("never-sealed"))
timer.sleep(0.05)
assert(store:checkpoint_stats().runs == quiet, "a drop that deleted nothing asked for a checkpoint")

-- the last sealed secret dropped: the thread truncates the log to nothing (no frame keeps the secret)
assert(store:seal("a1", { env = { K = "secret-value" } }))
assert(wal_size() > 0)
local runs = store:checkpoint_stats().runs
assert(store:drop_sealed("a1"))
until_true("the truncating checkpoint", function()
    return store:checkpoint_stats().runs > runs
end)
assert(wal_size() == 0, "log not truncated: " .. wal_size())

-- what was written survives closing and reopening (without the thread: SQLite's automatic checkpoint)
assert(store:put(rec("last")))
store:close()
store:close() -- twice: harmless
assert(text:find("opensandbox_store_checkpoints_total", 1, true))
store = assert(storemod.open(db, { fsync = fsync }))
assert(store.checkpointer == nil)
assert(store:get("a110").state == "Running" and store:get("last").state == "Running")
assert(#assert(store:all()) == 111)
store:close()

-- what the thread did is logged after the next write: here every checkpoint and flush counts as slow
local logged = {}
local function logger(level)
    return function(msg, fields)
        logged[#logged + 1] = { level = level, msg = msg, fields = fields }
    end
end
storemod.SLOW_MS = 0
store = assert(storemod.open(db, { fsync = fsync, checkpoint = checkpoint, checkpoint_every = 1,
    log = { warn = logger("warn"), debug = logger("debug") } }))
assert(store:put(rec("logged-1")))
until_true("a checkpoint of one write", function()
    return store:checkpoint_stats().runs == 1
end)
assert(store:put(rec("logged-2")))
assert(store:durable())
storemod.SLOW_MS = 100
local seen = {}
for _, l in ipairs(logged) do
    seen[l.msg] = l
end
local slow_cp = assert(seen["slow store checkpoint"], "the checkpoint is logged")
assert(slow_cp.level == "warn" and tonumber(slow_cp.fields.ms) and slow_cp.fields.frames >= 1)
local slow_flush = assert(seen["slow store flush: the disk took long to make writes durable"], "the flush too")
assert(tonumber(slow_flush.fields.ms) >= 0 and slow_flush.fields.last_checkpoint_ms)
store:close()

-- a TRUNCATE that fails (a reader holds the log past the thread's busy timeout) is not retried at once,
-- which would keep the thread spinning on a failure that comes back quickly, but with the next checkpoint
local DBI = require("DBI")
local cp2 = assert(checkpoint.open(db, 3, 20))
local writer = assert(DBI.Connect("SQLite3", db))
writer:autocommit(true)
local ins = assert(writer:prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"))
assert(ins:execute("ckpt-test", "1"))
local reader = assert(DBI.Connect("SQLite3", db))
reader:autocommit(false) -- its read transaction stays open until the rollback below
local rd = assert(reader:prepare("SELECT count(*) AS n FROM meta"))
assert(rd:execute())
for _ in rd:rows(true) do -- (the snapshot is taken at the first step)
end
assert(ins:execute("ckpt-test", "2")) -- a frame the reader's snapshot does not see
cp2:truncate()
until_true("the truncate to fail", function()
    return cp2:stats().failures == 1
end)
local failed_runs = cp2:stats().runs
timer.sleep(0.2)
assert(cp2:stats().runs == failed_runs, "a failed truncate was retried at once: "
    .. cp2:stats().runs - failed_runs .. " more runs")
assert(wal_size() > 0)
rd:close()
reader:rollback()
reader:close()
for _ = 1, 3 do -- the next checkpoint, after `every` commits, is the truncate owed
    cp2:note()
end
until_true("the owed truncate", function()
    return cp2:stats().runs == failed_runs + 1
end)
assert(cp2:stats().failures == 1, tostring(cp2:stats().error))
assert(wal_size() == 0, "the owed truncate emptied the log: " .. wal_size())
ins:close()
writer:close()
cp2:close()

-- the module on its own: closed use is an error, close is idempotent
local cp = assert(checkpoint.open(db, 1))
local runs0, busy0 = cp:note()
assert(runs0 == 0 and type(busy0) == "boolean", "note() gives the checkpoints finished and whether one runs")
until_true("a checkpoint of the reopened database", function()
    return cp:stats().runs == 1
end)
assert(cp:stats().running == false)
cp:close()
cp:close()
assert(not pcall(cp.note, cp))
assert(not pcall(checkpoint.open, db, 0), "at least one commit per checkpoint")
assert(not pcall(checkpoint.open, db, 1, -1), "a busy timeout of at least 0")

os.execute("rm -rf '" .. dir .. "'")
require("core.log").info("checkpoint scenario passed")
core.stop(0)
