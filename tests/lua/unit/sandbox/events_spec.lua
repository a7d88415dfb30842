-- Unit spec of the event stream: the hub (lua/sandbox/events.lua: ring, resume window, frames, filters),
-- the service publishing every committed change into it (sandboxes and snapshots, on the fake runtime), and
-- one stream's loop (lua/api/events.lua serve(): live events, principal isolation, filters, Last-Event-ID
-- resume and reset, heartbeat, the drop of a client that does not read, the end of a client that left).
local S = dofile("tests/lua/unit/sandbox/support.lua")
local events = require("sandbox.events")
local api_events = require("api.events")
local json = require("common.json")

local ALICE = { principal = "alice", admin = false }
local BOB = { principal = "bob", admin = false }
local ADMIN = { principal = "root", admin = true }

-- "id: 3\nevent: k\ndata: {...}\n\n" -> { id = 3, event = "k", data = table }
local function parse(frame)
    local out = {}
    for line in frame:gmatch("[^\n]+") do
        local k, v = line:match("^(%w+): (.*)$")
        if k == "id" then
            out.id = tonumber(v)
        elseif k == "event" then
            out.event = v
        elseif k == "data" then
            out.data = json.decode(v)
        elseif k then
            out[k] = v
        else
            out.comment = line
        end
    end
    return out
end

local function hub_events(hub)
    local out = {}
    for e in hub:after(0) do
        out[#out + 1] = parse(e.frame)
    end
    return out
end

local function kinds(list)
    local out = {}
    for _, e in ipairs(list) do
        local d = e.data or {}
        out[#out + 1] = string.format("%s %s>%s", e.event, tostring(d.from == json.null and "-" or d.from),
            tostring(d.to == json.null and "-" or d.to))
    end
    return out
end

local function new_hub(sched_now, size)
    return events.new({ buffer = size or 16, now = sched_now, waiter = S.csync.waiter })
end

describe("sandbox.events hub", function()
    local function pub(hub, n, principal)
        for i = 1, n do
            hub:publish("sandbox.transition", { i = i }, { principal = principal or "alice", sandbox_id = "s" .. i })
        end
    end

    it("keeps the last `buffer` events, numbered from 1, oldest first", function()
        S.env({ connect = false })
        local hub = new_hub(os.time, 3)
        assert.are.equal(1, hub:first())
        assert.is_nil(hub:after(0)())
        pub(hub, 5)
        assert.are.equal(5, hub.seq)
        assert.are.equal(3, hub:first())
        local seqs = {}
        for e in hub:after(0) do
            seqs[#seqs + 1] = e.seq
        end
        assert.are.same({ 3, 4, 5 }, seqs)
        seqs = {}
        for e in hub:after(3) do
            seqs[#seqs + 1] = e.seq
        end
        assert.are.same({ 4, 5 }, seqs)
        assert.is_nil(hub:after(5)())
    end)

    it("knows when a resume lost events: older than the window, or an id it never sent", function()
        S.env({ connect = false })
        local hub = new_hub(os.time, 3)
        assert.is_false(hub:lost(0))
        pub(hub, 5)
        assert.is_true(hub:lost(0))
        assert.is_true(hub:lost(1))
        assert.is_false(hub:lost(2)) -- 3, 4, 5 are all there
        assert.is_false(hub:lost(5))
        assert.is_true(hub:lost(6)) -- from before a restart
    end)

    it("frames an event once: id, event and one line of JSON", function()
        S.env({ connect = false })
        local hub = new_hub(os.time)
        local e = hub:publish("sandbox.deleted", { msg = "two\nlines" }, { principal = "p" })
        assert.are.equal('id: 1\nevent: sandbox.deleted\ndata: {"msg":"two\\nlines"}\n\n', e.frame)
        assert.are.equal("event: reset\ndata: {\"a\":1}\n\n", events.frame(nil, "reset", { a = 1 }))
    end)

    it("shows a tenant only its own events, an admin and a keyless caller all", function()
        local e = { principal = "alice", sandbox_id = "s1", metadata = { team = "a", env = "dev" } }
        assert.is_true(events.visible(e, ALICE))
        assert.is_false(events.visible(e, BOB))
        assert.is_true(events.visible(e, ADMIN))
        assert.is_true(events.visible(e, { principal = nil, admin = nil }))
        assert.is_false(events.visible({ principal = nil }, BOB))
    end)

    it("filters by sandbox id and by metadata (AND, exact)", function()
        local e = { principal = "alice", sandbox_id = "s1", metadata = { team = "a", env = "dev" } }
        assert.is_true(events.matches(e, {}))
        assert.is_true(events.matches(e, { sandbox_id = "s1" }))
        assert.is_false(events.matches(e, { sandbox_id = "s2" }))
        assert.is_true(events.matches(e, { metadata = { team = "a" } }))
        assert.is_true(events.matches(e, { metadata = { team = "a", env = "dev" } }))
        assert.is_false(events.matches(e, { metadata = { team = "a", env = "prod" } }))
        assert.is_false(events.matches({ sandbox_id = "s1" }, { metadata = { team = "a" } }))
    end)
end)

describe("sandbox.events from the service", function()
    local function env_with_hub(opts)
        opts = opts or {}
        local hub
        local env
        hub = events.new({ buffer = 64, now = function()
            return env and env:now() / 1e6 or 0
        end, waiter = S.csync.waiter })
        opts.events = hub
        env = S.env(opts)
        return env, hub
    end

    it("publishes every state change of a sandbox: created, Running, Paused, Running, Stopping, deleted", function()
        local env, hub = env_with_hub()
        local id = env:running(S.spec({ metadata = { team = "a" } }), ALICE)
        assert.is_true(env:op("pause", id, ALICE))
        assert.is_true(env:op("resume", id, ALICE))
        assert.is_true(env:op("delete", id, ALICE))
        local list = hub_events(hub)
        assert.are.same({
            "sandbox.transition ->Pending",
            "sandbox.transition Pending>Running",
            "sandbox.transition Running>Paused",
            "sandbox.transition Paused>Running",
            "sandbox.transition Running>Stopping",
            "sandbox.deleted Stopping>-",
        }, kinds(list))
        for i, e in ipairs(list) do
            assert.are.equal(i, e.id)
            assert.are.equal(id, e.data.sandboxId)
            assert.are.same({ team = "a" }, e.data.metadata)
            assert.matches("^2026%-01%-01T", e.data.time)
        end
        assert.are.equal("CONTAINER_RUNNING", list[2].data.reason)
        -- the filtering facts: the creator's principal and the sandbox
        for e in hub:after(0) do
            assert.are.equal("alice", e.principal)
            assert.are.equal(id, e.sandbox_id)
        end
    end)

    it("publishes a provisioning failure and its record going, and nothing for what load() reads", function()
        local env, hub = env_with_hub()
        env.rt:fail_next("provision", require("runtimes.errors").new("api", "no such image", { step = "image" }))
        local view = assert(env:create(S.spec(), ALICE))
        env:run()
        assert.are.same({ "sandbox.transition ->Pending", "sandbox.transition Pending>Failed" }, kinds(hub_events(hub)))
        assert.is_true(env:op("delete", view.id, ALICE))
        assert.are.equal("sandbox.deleted Failed>-", kinds(hub_events(hub))[3])

        -- a restarted service loading the store publishes nothing
        local store = S.store()
        store.rows["00000000-0000-4000-8000-000000000099"] = S.record("00000000-0000-4000-8000-000000000099", "Running")
        local env2, hub2 = env_with_hub({ store = store, load = true, connect = false })
        assert.is_table(env2.svc.records["00000000-0000-4000-8000-000000000099"])
        assert.are.equal(0, hub2.seq)
    end)

    it("publishes snapshot transitions and the snapshot's removal, with the source's principal", function()
        local env, hub = env_with_hub()
        local id = env:running(S.spec({ metadata = { team = "a" } }), ALICE)
        local before = hub.seq
        local snap = assert(env:op("create_snapshot", id, { name = "s" }, ALICE))
        env:run()
        assert.is_true(env:op("delete_snapshot", snap.id, ALICE))
        env:run()
        local list = {}
        for e in hub:after(before) do
            list[#list + 1] = parse(e.frame)
            assert.are.equal("alice", e.principal)
            assert.are.equal(id, e.sandbox_id)
        end
        assert.are.same({
            "snapshot.transition ->Creating",
            "snapshot.transition Creating>Ready",
            "snapshot.transition Ready>Deleting",
            "snapshot.deleted Deleting>-",
        }, kinds(list))
        assert.are.equal(snap.id, list[1].data.snapshotId)
        assert.are.equal(id, list[1].data.sandboxId)
        assert.are.same({ team = "a" }, list[1].data.metadata)
    end)
end)

-- A stream as http.stream gives it: write(data, nowait) appends, pending() is what the client has not read
-- (the spec "reads" with s:read()), and a client that left makes both say "closed".
local function fake_stream()
    local s = { frames = {}, unread = 0, gone = false, closed = false, nowait = true }
    function s.write(self, data, nowait)
        if self.gone then
            return nil, "closed"
        end
        self.nowait = self.nowait and nowait == true
        self.frames[#self.frames + 1] = data
        self.unread = self.unread + #data
        return true
    end
    function s.pending(self)
        if self.gone then
            return nil, "closed"
        end
        return self.unread
    end
    function s.close(self)
        self.closed = true
    end
    function s.read(self)
        self.unread = 0
    end
    function s.events(self)
        local out = {}
        for _, f in ipairs(self.frames) do
            local e = parse(f)
            if e.event then
                out[#out + 1] = e
            end
        end
        return out
    end
    return s
end

describe("api.events serve", function()
    local OPTS = { heartbeat = 15, max_pending = 4096 }

    -- an env (for the scheduler and clock) and a hub on its clock
    local function setup_env()
        local env = S.env({ connect = false })
        local hub = events.new({ buffer = 8, now = function()
            return env:now() / 1e6
        end, waiter = S.csync.waiter })
        return env, hub
    end

    local function publish(hub, principal, sid, md)
        return hub:publish("sandbox.transition", { sandboxId = sid }, { principal = principal, sandbox_id = sid,
            metadata = md })
    end

    local function start(env, hub, who, filter, last_id, opts)
        local s = fake_stream()
        local res = {}
        env:spawn(function()
            res.why = api_events.serve(hub, s, who, filter or {}, last_id, opts or OPTS)
        end)
        env:run()
        return s, res
    end

    local function ids(s)
        local out = {}
        for _, e in ipairs(s:events()) do
            out[#out + 1] = e.id or e.event
        end
        return out
    end

    it("sends live events a tenant may see, never another tenant's, and never parks the writer", function()
        local env, hub = setup_env()
        publish(hub, "alice", "old") -- before the connection: not replayed without Last-Event-ID
        local clients0 = api_events.metrics.clients.value
        local sa = start(env, hub, ALICE)
        local sb = start(env, hub, BOB)
        local sr = start(env, hub, ADMIN)
        assert.are.equal(3, hub:clients())
        assert.are.equal(clients0 + 3, api_events.metrics.clients.value)
        publish(hub, "alice", "a1")
        publish(hub, "bob", "b1")
        publish(hub, "alice", "a2")
        env:run()
        assert.are.same({ 2, 4 }, ids(sa))
        assert.are.same({ 3 }, ids(sb))
        assert.are.same({ 2, 3, 4 }, ids(sr))
        assert.are.equal("a1", sa:events()[1].data.sandboxId)
        assert.are.equal("retry: 3000\n\n", sa.frames[1])
        assert.is_true(sa.nowait and sb.nowait and sr.nowait)
    end)

    it("filters by sandbox id and metadata", function()
        local env, hub = setup_env()
        local s1 = start(env, hub, ADMIN, { sandbox_id = "x" })
        local s2 = start(env, hub, ADMIN, { metadata = { team = "a" } })
        publish(hub, "alice", "x", { team = "b" })
        publish(hub, "alice", "y", { team = "a" })
        publish(hub, "alice", "z")
        env:run()
        assert.are.same({ 1 }, ids(s1))
        assert.are.same({ 2 }, ids(s2))
    end)

    it("resumes after Last-Event-ID: the buffered events first, then live ones", function()
        local env, hub = setup_env()
        for i = 1, 5 do
            publish(hub, i == 3 and "bob" or "alice", "s" .. i)
        end
        local s = start(env, hub, ALICE, {}, 2)
        assert.are.same({ 4, 5 }, ids(s)) -- 3 is bob's
        publish(hub, "alice", "s6")
        env:run()
        assert.are.same({ 4, 5, 6 }, ids(s))
        -- a resume at the head replays nothing and misses nothing
        local s2 = start(env, hub, ALICE, {}, 6)
        assert.are.same({}, ids(s2))
    end)

    it("says `reset` first when Last-Event-ID is older than the window or from before a restart", function()
        local env, hub = setup_env() -- window of 8
        for i = 1, 12 do
            publish(hub, "alice", "s" .. i)
        end
        local s = start(env, hub, ALICE, {}, 1)
        local list = s:events()
        assert.are.equal("reset", list[1].event)
        assert.is_nil(list[1].id)
        assert.are.equal(1, list[1].data.lastEventId)
        assert.are.equal(5, list[1].data.oldestEventId)
        assert.are.same({ "reset", 5, 6, 7, 8, 9, 10, 11, 12 }, ids(s))
        local s2 = start(env, hub, ALICE, {}, 500) -- an id this server never sent
        publish(hub, "alice", "s13")
        env:run()
        assert.are.same({ "reset", 13 }, ids(s2))
    end)

    it("sends `: ping` after a heartbeat without output, also while other tenants' events flow", function()
        local env, hub = setup_env()
        local s = start(env, hub, ALICE, {}, nil, { heartbeat = 10, max_pending = 4096 })
        env:advance(5)
        publish(hub, "bob", "b1") -- woken, nothing to write
        env:run()
        env:advance(4)
        assert.are.same({ "retry: 3000\n\n" }, s.frames)
        env:advance(1.5)
        assert.are.same({ "retry: 3000\n\n", ": ping\n\n" }, s.frames)
        env:advance(10.5)
        assert.are.equal(": ping\n\n", s.frames[3])
    end)

    it("drops a client that does not read: one `overflow` event, then the end; a reader stays", function()
        local env, hub = setup_env()
        local dropped0 = api_events.metrics.dropped.value
        local slow, slow_res = start(env, hub, ADMIN)
        local fast, fast_res = start(env, hub, ADMIN)
        local big = string.rep("x", 1000)
        for i = 1, 10 do
            hub:publish("sandbox.transition", { pad = big, i = i }, { principal = "alice", sandbox_id = "s" })
            env:run()
            fast:read()
        end
        assert.are.equal("overflow", slow_res.why)
        assert.is_true(slow.closed)
        local list = slow:events()
        local last = list[#list]
        assert.are.equal("overflow", last.event)
        assert.is_nil(last.id)
        assert.is_true(last.data.pendingBytes > 4096)
        assert.are.equal(list[#list - 1].id, last.data.lastEventId)
        assert.is_true(#list <= 6, "bounded: " .. #list) -- about max_pending bytes, not all ten
        assert.are.equal(dropped0 + 1, api_events.metrics.dropped.value)
        assert.is_nil(fast_res.why)
        assert.are.equal(10, #fast:events())
        assert.are.equal(1, hub:clients())
        -- the slow client reconnects where it was dropped and gets the rest
        -- (a replay beyond max_pending_bytes is written at once and is no drop by itself)
        local again, again_res = start(env, hub, ADMIN, {}, last.data.lastEventId)
        assert.is_true(again.unread > 4096)
        assert.are.equal(10, again:events()[#again:events()].id)
        assert.are.equal(10 - last.data.lastEventId, #again:events())
        assert.is_nil(again_res.why)
        -- ... but leaving it unread is: at the next heartbeat it is dropped
        env:advance(16)
        assert.are.equal("overflow", again_res.why)
    end)

    it("ends when the client has gone, and when the hub closes (shutdown)", function()
        local env, hub = setup_env()
        local clients0 = api_events.metrics.clients.value
        local s, res = start(env, hub, ALICE)
        local s2, res2 = start(env, hub, ALICE)
        s.gone = true
        publish(hub, "alice", "a")
        env:run()
        assert.are.equal("closed", res.why)
        assert.is_true(s.closed)
        assert.is_nil(res2.why)
        hub:close_all()
        env:run()
        assert.are.equal("shutdown", res2.why)
        assert.is_true(s2.closed)
        assert.are.equal(0, hub:clients())
        assert.are.equal(clients0, api_events.metrics.clients.value)
    end)
end)

describe("api.events parse", function()
    it("takes sandboxId, metadata and Last-Event-ID; refuses bad ones with 400", function()
        local f, last = api_events.parse({ sandboxId = { "a", "b" }, metadata = { "team=a&env=dev" } }, " 42 ")
        assert.are.same({ sandbox_id = "b", metadata = { team = "a", env = "dev" } }, f)
        assert.are.equal(42, last)
        f, last = api_events.parse({}, "")
        assert.are.same({}, f)
        assert.is_nil(last)
        for _, bad in ipairs({ { {}, "x" }, { {}, "-1" }, { {}, "1.5" }, { {}, "9999999999999999" },
            { { sandboxId = { "" } } }, { { metadata = { "novalue" } } } }) do
            local r, err = api_events.parse(bad[1], bad[2])
            assert.is_nil(r)
            assert.are.equal(400, err.status)
            assert.matches("INVALID", err.code)
        end
    end)
end)
