local DBI = require("DBI")
local lfs = require("lfs")
local store = require("sandbox.store")

local function rm_rf(path)
    local mode = lfs.attributes(path, "mode")
    if mode == "directory" then
        for name in lfs.dir(path) do
            if name ~= "." and name ~= ".." then
                rm_rf(path .. "/" .. name)
            end
        end
        lfs.rmdir(path)
    elseif mode then
        os.remove(path)
    end
end

local function full_record(id, created)
    return {
        id = id,
        handle = "c0ffee" .. id,
        -- the adapter's own description of where the sandbox is (opaque to the store)
        place = { ip = "172.17.0.2", agent_port = 44772, ports = { ["44772"] = 32768, ["8080"] = 32769 } },
        created_us = created,
        expires_us = 253402300799000000, -- 9999-12-31T23:59:59Z: above 2^53 and 2^32
        image_uri = "localhost:5000/foo/bar:v1",
        entrypoint = { "sh", "-c", "echo 'hi' \"there\" \\ /" },
        metadata = { ["app.kubernetes.io/name"] = "x", note = "" },
        platform = { os = "linux", arch = "arm64" },
        extensions = { ["access.renew.extend.seconds"] = "300" },
        state = "Running",
        reason = "CONTAINER_RUNNING",
        message = "Sandbox container is running.",
        transition_us = created + 1,
        access_token = string.rep("ab", 32),
        failed_us = nil,
        principal = "team-a",
        transitions = {
            { at = "1767225600000001", state = "Pending", reason = "CONTAINER_STARTING", message = "starting" },
            { at = "1767225600000002", state = "Running", reason = "CONTAINER_RUNNING", message = "running" },
        },
        -- version 9: the egress policy (sandbox/netpolicy.lua) and the egress API's token
        network_policy = { defaultAction = "deny", egress = { { action = "allow", target = "*.pypi.org" },
            { action = "deny", target = "10.0.0.0/8" } } },
        egress_token = string.rep("cd", 32),
    }
end

local function minimal_record(id, created)
    return {
        id = id,
        created_us = created,
        image_uri = "busybox",
        entrypoint = { "sh" },
        metadata = {},
        extensions = {},
        state = "Pending",
        reason = "CONTAINER_STARTING",
        message = "Sandbox container is starting.",
        transition_us = created,
    }
end

local function exec_rows(db, sql)
    local st = assert(db:prepare(sql))
    assert(st:execute())
    local rows = {}
    for row in st:rows(true) do
        rows[#rows + 1] = row
    end
    st:close()
    return rows
end

describe("sandbox.store", function()
    local dir, path, s

    before_each(function()
        dir = os.tmpname()
        os.remove(dir)
        path = dir .. "/state/sub/opensandbox.db"
    end)

    after_each(function()
        if s then
            s:close()
            s = nil
        end
        rm_rf(dir)
    end)

    it("creates missing parent directories through the given mkdir with mode 0700", function()
        local calls = {}
        s = assert(store.open(path, {
            mkdir = function(d, mode)
                calls[#calls + 1] = { d, mode }
                return lfs.mkdir(d)
            end,
        }))
        assert.same({ { dir, 448 }, { dir .. "/state", 448 }, { dir .. "/state/sub", 448 } }, calls)
        assert.equal("file", lfs.attributes(path, "mode"))
    end)

    it("creates parent directories with lfs by default", function()
        s = assert(store.open(path))
        assert.equal("directory", lfs.attributes(dir .. "/state/sub", "mode"))
    end)

    it("fails cleanly when a parent is not a directory or cannot be made", function()
        assert(io.open(dir, "w")):close()
        local st, err = store.open(dir .. "/x/db")
        assert.is_nil(st)
        assert.matches("is not a directory", err)
        os.remove(dir)
        st, err = store.open(path, { mkdir = function() return nil, "Permission denied" end })
        assert.is_nil(st)
        assert.matches("Permission denied", err)
    end)

    it("round-trips every field exactly", function()
        s = assert(store.open(path))
        local rec = full_record("id-1", 1767225600123456)
        assert.is_true(s:put(rec))
        local got = assert(s:get("id-1"))
        assert.same(rec, got)
        assert.equal("integer", math.type(got.expires_us))
        assert.equal("integer", math.type(got.place.ports["8080"]))
        assert.equal("integer", math.type(got.place.agent_port))

        assert.is_true(s:put(minimal_record("id-2", 5)))
        local min = assert(s:get("id-2"))
        assert.same(minimal_record("id-2", 5), min)
        assert.is_nil(min.expires_us)
        assert.is_nil(min.platform)
        assert.is_nil(min.place)
    end)

    it("never stores image auth or env even when present on the table", function()
        s = assert(store.open(path))
        local rec = minimal_record("id-1", 1)
        rec.auth = { username = "u", password = "hunter2" }
        rec.env = { { "SECRET", "v" } }
        assert.is_true(s:put(rec))
        s:close()
        s = nil
        local f = assert(io.open(path, "rb"))
        local bytes = f:read("a")
        f:close()
        assert.is_falsy(bytes:find("hunter2", 1, true))
        assert.is_falsy(bytes:find("SECRET", 1, true))
    end)

    it("seals secrets apart from the record until dropped, and leaves no trace of them on disk after", function()
        s = assert(store.open(path))
        assert.is_nil(s:unseal("id-1"))
        local secrets = { env = { { "SECRET", "v1" }, { "B", "2" } }, auth = { username = "u", password = "hunter2" } }
        assert.is_true(s:seal("id-1", secrets))
        assert.is_true(s:seal("id-2", { env = {} }))
        s:close()
        s = assert(store.open(path))
        assert.same(secrets, s:unseal("id-1"))
        local ids = assert(s:sealed_ids())
        table.sort(ids)
        assert.same({ "id-1", "id-2" }, ids)
        assert.is_true(s:drop_sealed("id-1"))
        assert.is_true(s:drop_sealed("id-1"))
        assert.is_nil(s:unseal("id-1"))
        assert.same({ "id-2" }, s:sealed_ids())
        s:close()
        s = nil
        local f = assert(io.open(path, "rb"))
        local bytes = f:read("a")
        f:close()
        assert.is_falsy(bytes:find("hunter2", 1, true), "secure_delete overwrote the dropped row")
        assert.is_falsy(bytes:find("SECRET", 1, true))
    end)

    it("truncates the write-ahead log once the last sealed secrets are dropped, while the store stays open", function()
        s = assert(store.open(path))
        local function wal()
            local f = io.open(path .. "-wal", "rb")
            if not f then
                return ""
            end
            local b = f:read("a")
            f:close()
            return b
        end
        assert.is_true(s:seal("id-1", { auth = { username = "u", password = "hunter2" } }))
        assert.is_true(s:seal("id-2", { env = { { "K", "swordfish" } } }))
        assert.truthy(wal():find("hunter2", 1, true)) -- written through the log, as every write
        assert.is_true(s:drop_sealed("id-1"))
        assert.is_true(s:drop_sealed("id-2")) -- the last: the log is checkpointed and truncated
        local bytes = wal()
        assert.is_falsy(bytes:find("hunter2", 1, true), "the -wal file still holds a dropped secret")
        assert.is_falsy(bytes:find("swordfish", 1, true))
    end)

    it("upserts, lists in list order, deletes", function()
        s = assert(store.open(path))
        assert.is_nil(s:get("missing"))
        assert.same({}, s:all())
        assert.is_true(s:put(minimal_record("b", 10)))
        assert.is_true(s:put(minimal_record("a", 10)))
        assert.is_true(s:put(minimal_record("c", 20)))
        local rec = minimal_record("z", 1)
        assert.is_true(s:put(rec))
        rec.metadata = { patched = "yes" }
        rec.expires_us = 42
        assert.is_true(s:put(rec))
        local all = assert(s:all())
        assert.same({ "c", "a", "b", "z" }, { all[1].id, all[2].id, all[3].id, all[4].id })
        assert.same({ patched = "yes" }, all[4].metadata)
        assert.equal(42, all[4].expires_us)
        assert.is_true(s:delete("a"))
        assert.is_true(s:delete("a"))
        assert.is_nil(s:get("a"))
        assert.equal(3, #s:all())
    end)

    it("persists across reopen", function()
        s = assert(store.open(path))
        local rec = full_record("id-1", 1767225600123456)
        assert.is_true(s:put(rec))
        rec.expires_us = rec.expires_us - 7
        assert.is_true(s:put(rec))
        s:close()
        s = assert(store.open(path))
        assert.same(rec, s:get("id-1"))
    end)

    it("uses WAL with synchronous=FULL and records the schema version", function()
        s = assert(store.open(path))
        assert.is_true(s:put(minimal_record("id-1", 1)))
        assert.equal("file", lfs.attributes(path .. "-wal", "mode"))
        local sth = assert(s.db:prepare("PRAGMA synchronous"))
        assert(sth:execute())
        assert.equal(2, sth:fetch(false)[1]) -- 2 = FULL
        sth:close()

        local other = assert(DBI.Connect("SQLite3", path))
        other:autocommit(true)
        local q = assert(other:prepare("PRAGMA journal_mode"))
        assert(q:execute())
        assert.equal("wal", q:fetch(false)[1])
        q:close()
        q = assert(other:prepare("SELECT version FROM schema_version"))
        assert(q:execute())
        assert.equal(store.SCHEMA_VERSION, q:fetch(false)[1])
        q:close()
        other:close()
    end)

    it("refuses a database from a newer schema", function()
        s = assert(store.open(path))
        local q = assert(s.db:prepare("UPDATE schema_version SET version = 99"))
        assert(q:execute())
        q:close()
        s:close()
        s = nil
        local st, err = store.open(path)
        assert.is_nil(st)
        assert.matches("schema version 99", err)
    end)

    it("returns write errors instead of raising, and recovers afterwards", function()
        s = assert(store.open(path))
        assert.is_true(s:put(minimal_record("id-1", 1)))
        local q = assert(s.db:prepare("PRAGMA query_only = 1")) -- the database refuses writes, like a ro file
        assert(q:execute())
        local ok, err = s:put(minimal_record("id-2", 2))
        assert.is_nil(ok)
        assert.matches("readonly", err)
        ok, err = s:delete("id-1")
        assert.is_nil(ok)
        assert.is_string(err)
        q:close()
        q = assert(s.db:prepare("PRAGMA query_only = 0"))
        assert(q:execute())
        q:close()
        assert.is_true(s:put(minimal_record("id-2", 2)))
        assert.is_true(s:delete("id-1"))
        assert.same({ "id-2" }, { s:all()[1].id })
    end)

    it("returns a full disk as an error", function()
        s = assert(store.open(path))
        local q = assert(s.db:prepare("PRAGMA max_page_count = 8"))
        assert(q:execute())
        q:close()
        local rec = minimal_record("big", 1)
        rec.message = string.rep("x", 200000)
        local ok, err = s:put(rec)
        assert.is_nil(ok)
        assert.matches("full", err)
        assert.is_nil(s:get("big"))
    end)

    it("fails cleanly once closed", function()
        s = assert(store.open(path))
        s:close()
        local ok, err = s:put(minimal_record("x", 1))
        assert.is_nil(ok)
        assert.is_string(err)
        ok, err = s:all()
        assert.is_nil(ok)
        assert.is_string(err)
        s = nil
    end)

    it("migrates a version 1 store (Docker columns) to the runtime-neutral handle and place", function()
        -- a store written by the server before the runtime contract: schema version 1
        assert(lfs.mkdir(dir) and lfs.mkdir(dir .. "/state") and lfs.mkdir(dir .. "/state/sub"))
        local db = assert(DBI.Connect("SQLite3", path))
        db:autocommit(true)
        for _, sql in ipairs({
            "CREATE TABLE schema_version (version INTEGER NOT NULL)",
            "INSERT INTO schema_version (version) VALUES (1)",
            [[CREATE TABLE sandboxes (id TEXT PRIMARY KEY, container_id TEXT, created_us INTEGER NOT NULL,
                expires_us INTEGER, image_uri TEXT NOT NULL, entrypoint TEXT NOT NULL, metadata TEXT NOT NULL,
                platform TEXT, extensions TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL,
                message TEXT NOT NULL, transition_us INTEGER NOT NULL, agent_port INTEGER, host_ports TEXT,
                container_ip TEXT, access_token TEXT, failed_us INTEGER, principal TEXT)]],
            [[INSERT INTO sandboxes VALUES ('a', 'cid-a', 1767225600123456, 1767225660123456, 'busybox', '["sh"]',
                '{}', NULL, '{}', 'Running', 'CONTAINER_RUNNING', 'm', 1767225600123457, 44772,
                '{"44772":32768,"8080":32769}', '172.17.0.2', 'tok', NULL, '"team-a"')]],
            [[INSERT INTO sandboxes VALUES ('b', NULL, 5, NULL, 'busybox', '["sh"]', '{}', NULL, '{}', 'Failed',
                'PROVISIONING_ERROR', 'x', 6, NULL, NULL, NULL, NULL, 7, NULL)]],
        }) do
            local st = assert(db:prepare(sql))
            assert(st:execute())
            st:close()
        end
        db:close()
        s = assert(store.open(path))
        local a = assert(s:get("a"))
        assert.equal("cid-a", a.handle)
        assert.same({ ip = "172.17.0.2", agent_port = 44772, ports = { ["44772"] = 32768, ["8080"] = 32769 } }, a.place)
        assert.equal("integer", math.type(a.place.ports["8080"]))
        assert.equal(1767225660123456, a.expires_us)
        assert.is_nil(a.container_id)
        local b = assert(s:get("b"))
        assert.is_nil(b.handle)
        assert.is_nil(b.place)
        assert.equal(7, b.failed_us)
        -- the Docker columns are gone, and the version is the current one
        local rows = {}
        local st = assert(s.db:prepare("SELECT name FROM pragma_table_info('sandboxes')"))
        assert(st:execute())
        for row in st:rows(true) do
            rows[row.name] = true
        end
        st:close()
        assert.is_nil(rows.container_id)
        assert.is_nil(rows.host_ports)
        assert.is_true(rows.handle and rows.place)
        assert.equal(10, store.SCHEMA_VERSION)
        -- version 3: a migrated store gets an identity at its first use, like a new one
        assert.is_nil(s:meta("server_identity"))
        assert.equal("id-1", s:identity(function() return "id-1" end))
    end)

    it("keeps the server's identity: made once, the same after a reopen", function()
        s = assert(store.open(path))
        local n = 0
        local function new_id()
            n = n + 1
            return "uuid-" .. n
        end
        assert.equal("uuid-1", s:identity(new_id))
        assert.equal("uuid-1", s:identity(new_id))
        assert(s:set_meta("adopted", '["x"]'))
        s:close()
        s = assert(store.open(path))
        assert.equal("uuid-1", s:identity(new_id))
        assert.equal(1, n)
        assert.equal('["x"]', s:meta("adopted"))
        assert.is_nil(s:meta("missing"))
    end)

    it("keeps the identities taken over (--adopt-instance), adding to them, across a reopen", function()
        s = assert(store.open(path))
        assert.same({}, s:adopt_instances({}))
        assert.same({ "b-uuid", "unlabelled" }, s:adopt_instances({ "unlabelled", "b-uuid" }))
        s:close()
        s = assert(store.open(path))
        assert.same({ "b-uuid", "unlabelled" }, s:adopt_instances(nil))
        assert.same({ "a-uuid", "b-uuid", "unlabelled" }, s:adopt_instances({ "a-uuid", "b-uuid" }))
    end)

    it("remembers which principals proved access to an image repository", function()
        s = assert(store.open(path))
        assert.same({}, s:image_access("127.0.0.1:5055/osb/busybox"))
        assert(s:grant_image_access("127.0.0.1:5055/osb/busybox", "team-a"))
        assert(s:grant_image_access("127.0.0.1:5055/osb/busybox", "team-a"))
        assert(s:grant_image_access("127.0.0.1:5055/osb/busybox", ""))
        s:close()
        s = assert(store.open(path))
        assert.same({ ["team-a"] = true, [""] = true }, s:image_access("127.0.0.1:5055/osb/busybox"))
        assert.same({}, s:image_access("127.0.0.1:5055/osb/other"))
    end)

    it("migrates a version 2 store: the resource limits join the record (nil for old rows)", function()
        -- a store written before the limits were durable: schema version 2
        assert(lfs.mkdir(dir) and lfs.mkdir(dir .. "/state") and lfs.mkdir(dir .. "/state/sub"))
        local db = assert(DBI.Connect("SQLite3", path))
        db:autocommit(true)
        for _, sql in ipairs({
            "CREATE TABLE schema_version (version INTEGER NOT NULL)",
            "INSERT INTO schema_version (version) VALUES (2)",
            [[CREATE TABLE sandboxes (id TEXT PRIMARY KEY, created_us INTEGER NOT NULL,
                expires_us INTEGER, image_uri TEXT NOT NULL, entrypoint TEXT NOT NULL, metadata TEXT NOT NULL,
                platform TEXT, extensions TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL,
                message TEXT NOT NULL, transition_us INTEGER NOT NULL, access_token TEXT, failed_us INTEGER,
                principal TEXT, handle TEXT, place TEXT)]],
            "CREATE INDEX sandboxes_by_created ON sandboxes (created_us DESC, id)",
            [[INSERT INTO sandboxes VALUES ('a', 1767225600123456, 1767225660123456, 'busybox', '["sh"]',
                '{"team":"red"}', NULL, '{}', 'Running', 'CONTAINER_RUNNING', 'm', 1767225600123457, 'tok', NULL,
                '"team-a"', 'cid-a', '{"ip":"172.17.0.2","agent_port":44772}')]],
        }) do
            local st = assert(db:prepare(sql))
            assert(st:execute())
            st:close()
        end
        db:close()
        s = assert(store.open(path))
        local a = assert(s:get("a"))
        assert.equal("cid-a", a.handle)
        assert.same({ team = "red" }, a.metadata)
        assert.equal("team-a", a.principal)
        assert.is_nil(a.nano_cpus)
        assert.is_nil(a.memory)
        -- the new columns hold exact 64-bit integers
        local upd = {}
        for k, v in pairs(a) do
            upd[k] = v
        end
        upd.nano_cpus, upd.memory = 2500000000, 17179869184 * 1024
        assert(s:put(upd))
        s:close()
        s = assert(store.open(path))
        local back = assert(s:get("a"))
        assert.equal(2500000000, back.nano_cpus)
        assert.equal(17179869184 * 1024, back.memory)
        assert.equal("integer", math.type(back.memory))
        local rows = exec_rows(s.db, "SELECT version FROM schema_version")
        assert.equal(1, #rows)
        assert.equal(store.SCHEMA_VERSION, rows[1].version)
    end)
end)

describe("sandbox.store pools (schema version 9)", function()
    it("keeps pools and a sandbox's pool across a reopen, and deletes them", function()
        local s = assert(store.open(":memory:"))
        local pool = { name = "py", principal = "alice", template = { image = { uri = "busybox" },
            nano_cpus = 500000000, memory = 67108864 }, capacity = { bufferMin = 1, bufferMax = 2, poolMin = 0,
            poolMax = 4 }, revision = 3, created_us = 1767225600123456 }
        assert.is_true(s:put_pool(pool))
        local rows = assert(s:all_pools())
        assert.equal(1, #rows)
        assert.equal("py", rows[1].name)
        assert.equal("alice", rows[1].principal)
        assert.equal(3, rows[1].revision)
        assert.equal(1767225600123456, rows[1].created_us)
        assert.equal("busybox", rows[1].template.image.uri)
        assert.equal(500000000, rows[1].template.nano_cpus)
        assert.same(pool.capacity, rows[1].capacity)
        assert.is_true(s:put({ id = "a", created_us = 1, image_uri = "x", entrypoint = {}, metadata = {},
            extensions = {}, state = "Running", reason = "r", message = "m", transition_us = 1, pool = "py" }))
        assert.equal("py", assert(s:get("a")).pool)
        assert.is_true(s:delete_pool("py"))
        assert.same({}, assert(s:all_pools()))
        s:close()
    end)
end)
