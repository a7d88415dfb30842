-- Integration spec: GET /v1/events (Server-Sent Events) on the real server and the real Docker daemon, with
-- tenants (server.api_keys): a tenant's stream shows its sandbox's Pending -> Running, the removal and the
-- deletion as they happen; another tenant's stream does not; filters; Last-Event-ID replays from the buffer
-- (and says `reset` for an id it no longer has); a client that does not read is dropped with `overflow`
-- while a reading one stays, without the server's memory growing (the events are big, so that the loopback
-- socket buffers, megabytes, fill within a bounded number of cycles); a shutdown ends the streams at once.
-- The streaming clients are curl and tests/lua/integration/lifecycle/sse_client.py processes started in
-- the background (by PID, ended by PID).
local F = require("hooks.fixtures")
local H = F.H
local json = H.json

local SSE_CLIENT = H.root() .. "/tests/lua/integration/lifecycle/sse_client.py"
-- under ASan (scripts/test.sh runs the lifecycle specs with build-asan too) freed memory waits in the
-- quarantine instead of going back, so the bound on RSS growth is wider there
local ASAN = (os.getenv("OPENSANDBOX_BIN") or ""):find("asan", 1, true) ~= nil
local RSS_MARGIN_KB = (ASAN and 256 or 32) * 1024

describe("GET /v1/events #integration #docker", function()
    local srv
    local pids = {}

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
        srv = F.start({ events = { buffer = 64, max_pending_bytes = 65536, heartbeat_seconds = 1 } })
    end)

    teardown(function()
        for _, pid in ipairs(pids) do
            H.sh("kill " .. pid .. " 2>/dev/null")
        end
        F.cleanup()
        H.stop_all()
        H.remove_all_containers()
    end)

    local n = 0
    -- a curl reading the stream into a file: { pid, file }
    local function listen(who, query, last_id, seconds)
        n = n + 1
        local file = srv.dir .. "/sse-" .. n .. ".txt"
        local cmd = string.format("curl -sN --max-time %d -H %s %s %s > %s 2>/dev/null & echo $!", seconds or 120,
            H.quote("OPEN-SANDBOX-API-KEY: " .. F.KEYS[who]),
            last_id and ("-H " .. H.quote("Last-Event-ID: " .. last_id)) or "",
            H.quote(srv.base .. "/v1/events" .. (query or "")), H.quote(file))
        local pid = assert(tonumber((H.sh(cmd))))
        pids[#pids + 1] = pid
        return { pid = pid, file = file }
    end

    local function text(c)
        local f = io.open(c.file, "rb")
        if not f then
            return ""
        end
        local s = f:read("a")
        f:close()
        return s
    end

    -- the events of a stream's text: { id =, event =, data = }, comments as { comment = }
    local function frames(s)
        local out = {}
        for block in s:gmatch("(.-)\n\n") do
            local e = {}
            for line in block:gmatch("[^\n]+") do
                local k, v = line:match("^(%w+): ?(.*)$")
                if k == "id" then
                    e.id = tonumber(v)
                elseif k == "event" then
                    e.event = v
                elseif k == "data" then
                    e.data = json.decode(v)
                elseif line:sub(1, 1) == ":" then
                    e.comment = line
                end
            end
            out[#out + 1] = e
        end
        return out
    end

    local function events_of(c, sid)
        local out = {}
        for _, e in ipairs(frames(text(c))) do
            if e.event and (not sid or (e.data and e.data.sandboxId == sid)) then
                out[#out + 1] = e
            end
        end
        return out
    end

    local function wait_for(what, fn, timeout)
        local deadline = os.time() + (timeout or 30)
        repeat
            local v = fn()
            if v then
                return v
            end
            H.sleep(0.1)
        until os.time() > deadline
        error("timed out waiting for " .. what)
    end

    local function connected(c)
        wait_for("the stream to start", function()
            return text(c):find("retry: 3000", 1, true)
        end, 10)
    end

    local function shape(list)
        local out = {}
        for _, e in ipairs(list) do
            local d = e.data
            out[#out + 1] = string.format("%s %s>%s", e.event, d.from == json.null and "-" or tostring(d.from),
                d.to == json.null and "-" or tostring(d.to))
        end
        return out
    end

    local function metric(name)
        local res = F.call(srv, "admin", "GET", "/metrics")
        return tonumber(res.body:match("\n" .. name .. " (%d+)"))
    end

    local function rss_kb()
        local f = assert(io.open("/proc/" .. srv.pid .. "/status"))
        local s = f:read("a")
        f:close()
        return tonumber(s:match("VmRSS:%s*(%d+)"))
    end

    local created_id, a_stream

    it("shows a tenant its sandbox's Pending -> Running and the delete; not another tenant; filters", function()
        local a = listen("a")
        local b = listen("b")
        local admin = listen("admin")
        local red = listen("a", "?metadata=" .. "team%3Dred")
        local other = listen("admin", "?sandboxId=not-this-one")
        for _, c in ipairs({ a, b, admin, red, other }) do
            connected(c)
        end
        local id = F.create_running(srv, "a", { metadata = { team = "red" } })
        local del = F.call(srv, "a", "DELETE", "/v1/sandboxes/" .. id)
        assert.are.equal(204, del.status, del.body)
        wait_for("the deleted event", function()
            local list = events_of(a, id)
            return #list > 0 and list[#list].event == "sandbox.deleted"
        end)
        local want = {
            "sandbox.transition ->Pending",
            "sandbox.transition Pending>Running",
            "sandbox.transition Running>Stopping",
            "sandbox.deleted Stopping>-",
        }
        local list = events_of(a, id)
        assert.are.same(want, shape(list))
        for i, e in ipairs(list) do
            assert.are.same({ team = "red" }, e.data.metadata)
            assert.is_string(e.data.time)
            if i > 1 then
                assert.is_true(e.id > list[i - 1].id, "ids increase")
            end
        end
        assert.are.equal("CONTAINER_RUNNING", list[2].data.reason)
        wait_for("the admin's deleted event", function()
            return #events_of(admin, id) == 4
        end)
        assert.are.same(want, shape(events_of(admin, id)))
        assert.are.same(want, shape(events_of(red, id)))
        -- another tenant saw nothing of it, though its stream was alive all along (heartbeats)
        H.sleep(1.2)
        assert.are.same({}, events_of(b, nil))
        assert.truthy(text(b):find(": ping", 1, true))
        assert.are.same({}, events_of(other, nil))
        created_id, a_stream = id, a
    end)

    it("replays the buffer after Last-Event-ID, and says `reset` for an id it does not have", function()
        assert.is_string(created_id, "needs the first test")
        local list = events_of(a_stream, created_id)
        local first = list[1].id
        local again = listen("a", nil, first, 3)
        wait_for("the replay", function()
            return #events_of(again, nil) >= 3
        end, 10)
        H.sleep(0.3)
        local replay = events_of(again, nil)
        assert.are.same({ list[2].id, list[3].id, list[4].id }, { replay[1].id, replay[2].id, replay[3].id })
        assert.are.same(shape({ list[2], list[3], list[4] }), shape({ replay[1], replay[2], replay[3] }))
        -- the other tenant's resume from 0 replays none of it
        local b0 = listen("b", nil, 0, 2)
        connected(b0)
        H.sleep(0.5)
        assert.are.same({}, events_of(b0, created_id))
        -- an id the server never sent (from before a restart): `reset` first
        local far = listen("a", nil, 999999, 2)
        wait_for("the reset event", function()
            return #events_of(far, nil) >= 1
        end, 10)
        local r = events_of(far, nil)[1]
        assert.are.equal("reset", r.event)
        assert.is_nil(r.id)
        assert.are.equal(999999, r.data.lastEventId)
    end)

    it("drops a client that does not read (overflow, then the end); a reader stays; memory stays bounded", function()
        -- the earlier tests' clients go first (the server notices at their next heartbeat)
        for i = #pids, 1, -1 do
            H.sh("kill " .. pids[i] .. " 2>/dev/null")
            pids[i] = nil
        end
        wait_for("the earlier clients to be gone", function()
            return metric("opensandbox_event_clients") == 0
        end, 10)
        local go = srv.dir .. "/go"
        local out = srv.dir .. "/stalled.txt"
        local cmd = string.format("python3 %s %d /v1/events %s '' %s %s 300 >/dev/null 2>&1 & echo $!",
            H.quote(SSE_CLIENT), srv.port, F.KEYS.admin, H.quote(out), H.quote(go))
        local pid = assert(tonumber((H.sh(cmd))))
        pids[#pids + 1] = pid
        local reader = listen("admin")
        connected(reader)
        wait_for("both clients connected", function()
            return metric("opensandbox_event_clients") == 2
        end, 10)
        local dropped0 = metric("opensandbox_event_clients_dropped_total")
        local rss0 = rss_kb()
        -- events until the stalled client's socket buffers and then max_pending_bytes (64 KiB) are full
        -- (big events: 300 metadata labels of 63 characters make each about 40 KB, so that the kernel's socket
        -- buffers on loopback, which take megabytes, fill in a bounded number of cycles)
        local md = { team = "pause" }
        for i = 1, 300 do
            md[string.format("k%03d", i) .. string.rep("k", 59)] = string.rep("v", 63)
        end
        local id = F.create_running(srv, "a", { metadata = md })
        local cycles = 0
        while metric("opensandbox_event_clients_dropped_total") == dropped0 do
            cycles = cycles + 1
            assert.is_true(cycles <= 400, "the client that does not read was never dropped")
            assert.are.equal(202, F.call(srv, "a", "POST", "/v1/sandboxes/" .. id .. "/pause").status)
            assert.are.equal(202, F.call(srv, "a", "POST", "/v1/sandboxes/" .. id .. "/resume").status)
        end
        assert.are.equal(dropped0 + 1, metric("opensandbox_event_clients_dropped_total"))
        assert.are.equal(1, metric("opensandbox_event_clients")) -- the reader is still there
        local rss1 = rss_kb()
        -- the stalled client now reads: what it was sent ends with `overflow`, and the body ended
        local f = assert(io.open(go, "w"))
        f:close()
        wait_for("the stalled client to finish", function()
            local rf = io.open(out .. ".rc")
            local rc = rf and rf:read("a")
            if rf then
                rf:close()
            end
            return rc and rc:match("%d")
        end, 30)
        local rf = assert(io.open(out .. ".rc"))
        assert.are.equal("0", rf:read("a"):match("%d+"), "the server ended the dropped client's body")
        rf:close()
        local got = events_of({ file = out }, nil)
        local last = got[#got]
        assert.are.equal("overflow", last.event)
        assert.is_true(last.data.pendingBytes > 65536)
        -- the reader got every pause and resume, in order, without gaps
        local mine = events_of(reader, id)
        assert.is_true(#mine >= 2 + 2 * cycles, "reader events: " .. #mine .. " for " .. cycles .. " cycles")
        for i = 2, #mine do
            assert.are.equal(mine[i - 1].id + 1, mine[i].id)
        end
        -- the server's memory did not grow with what the stalled client left unread
        local rss2 = rss_kb()
        print(string.format("\n  events: stalled client dropped after %d pause/resume cycles; RSS %d -> %d -> %d KiB",
            cycles, rss0, rss1, rss2))
        assert.is_true(rss2 - rss0 < RSS_MARGIN_KB, string.format("RSS grew from %d to %d KiB", rss0, rss2))
        assert.are.equal(204, F.call(srv, "a", "DELETE", "/v1/sandboxes/" .. id).status)
    end)

    it("ends the streams at once when the server stops", function()
        local c = listen("admin")
        connected(c)
        local t0 = os.time()
        srv:stop()
        assert.is_false(srv:alive())
        assert.is_true(os.time() - t0 <= 3, "the stop waited for the event stream")
    end)
end)
