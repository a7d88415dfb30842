-- Integration: chaos (RELIABILITY.md, "A 202 is a promise"). Concurrent clients send bursts of creates,
-- deletes, pauses and renewals; the server is killed with kill -9 at a random moment of each burst, then
-- restarted on the same state, for OSB_CHAOS_ROUNDS rounds (default 10, and never past ~150 s). The moments
-- and the choice of operations come from a seed (OSB_CHAOS_SEED, else the clock), printed so that a failing
-- run can be replayed. After every restart, every answer a client got is checked against what the server
-- shows:
--   * 202 create  -> the sandbox exists and ends Running (Paused once a pause was answered), never Failed;
--   * 204 delete  -> it is gone, and so is its container;
--   * 200 renew   -> its expiresAt is at least the one answered;
--   * 202 pause   -> it is Paused (unless deleted later);
-- an operation that got no answer (killed mid-request) may have happened or not, but not half: no record
-- stays Pending or Stopping. And Docker holds exactly one container per live sandbox of this server's
-- instance, in the state the record says, none without a record, and no volume of the server is left at
-- the end.
local R = require("reliability.support")
local H = R.H
local json = R.json

local INSTANCE = "rel-chaos"
local ROUNDS = tonumber(os.getenv("OSB_CHAOS_ROUNDS") or "") or 10
local TIME_BUDGET_S = 150
local SEED = tonumber(os.getenv("OSB_CHAOS_SEED") or "") or os.time()

local function path(id, suffix)
    return "/v1/sandboxes/" .. id .. (suffix or "")
end

local function list_all(srv)
    local res = R.call(srv, "GET", "/v1/sandboxes?pageSize=200")
    assert.are.equal(200, res.status, res.body)
    return res.json.items
end

-- the containers of the instance: sandbox id -> array of { state } (docker ps), to see duplicates
local function containers()
    local out = H.run("docker ps -a --filter label=opensandbox.io/instance=" .. INSTANCE
        .. " --format '{{.Label \"opensandbox.io/id\"}} {{.State}}'")
    local by = {}
    for id, state in out:gmatch("(%S+) (%S+)") do
        by[id] = by[id] or {}
        table.insert(by[id], state)
    end
    return by
end

local function volumes()
    local set = {}
    for v in H.run("docker volume ls -q"):gmatch("%S+") do
        set[v] = true
    end
    return set
end

describe("chaos #integration #docker #faults", function()
    setup(function()
        H.ensure_image()
        R.remove_instance(INSTANCE)
    end)

    teardown(function()
        R.cleanup(INSTANCE)
    end)

    it("kill -9 amid creates, deletes, pauses and renewals: every answer holds after the restart", function()
        print(string.format("\n  chaos seed %d (replay: OSB_CHAOS_SEED=%d)", SEED, SEED))
        math.randomseed(SEED)
        local vols_before = volumes()
        local started = os.time()
        local srv = R.start(INSTANCE)
        local dir = srv.dir
        -- what the clients were told, per sandbox id:
        --   exists: "yes" | "no" | "maybe" (a delete without an answer)
        --   state:  "Running" | "Paused" | "either" (a pause without an answer)
        --   min_expires: the latest expiresAt a renewal answered (microseconds)
        local told = {}
        local stats = { kills = 0, ops = 0, answered = 0, unanswered = 0, creates = 0, deletes = 0, pauses = 0,
            renewals = 0, lost = 0 }
        local summary = {}
        local failures = {}
        local function violation(fmt, ...)
            stats.lost = stats.lost + 1
            failures[#failures + 1] = string.format(fmt, ...)
        end

        local round = 0
        while round < ROUNDS and os.time() - started < TIME_BUDGET_S do
            round = round + 1
            -- the live sandboxes (settled by the previous check); a few to work on
            local live = {}
            for id, t in pairs(told) do
                if t.exists == "yes" then
                    live[#live + 1] = id
                end
            end
            table.sort(live)
            while #live < 4 do
                local id = R.create_running(srv)
                told[id] = { exists = "yes", state = "Running" }
                live[#live + 1] = id
            end
            -- the burst: creates, and one operation on each of some live sandboxes
            local ops = {}
            for _ = 1, math.random(4, 8) do
                ops[#ops + 1] = { kind = "create", method = "POST", path = "/v1/sandboxes",
                    body = json.encode(H.body({ metadata = { chaos = tostring(round) } })) }
            end
            local ndel = 0
            for i, id in ipairs(live) do
                local r = math.random()
                local t = told[id]
                if r < 0.25 or (#live - ndel > 10 and r < 0.6) then
                    ndel = ndel + 1
                    ops[#ops + 1] = { kind = "delete", id = id, method = "DELETE", path = path(id) }
                elseif r < 0.5 and t.state == "Running" then
                    ops[#ops + 1] = { kind = "pause", id = id, method = "POST", path = path(id, "/pause") }
                elseif r < 0.85 then
                    local at = H.iso(2 * 86400 + round * 600 + i)
                    ops[#ops + 1] = { kind = "renew", id = id, at = at, method = "POST",
                        path = path(id, "/renew-expiration"), body = json.encode({ expiresAt = at }) }
                end
            end
            local odir = dir .. "/round" .. round
            H.run("mkdir -p " .. H.quote(odir))
            -- mostly early, while creates still provision and removals run; sometimes after all answers
            local delay = 0.02 + math.random() ^ 2 * 1.5
            local pid = R.storm(srv, odir, ops)
            H.sleep(string.format("%.2f", delay))
            srv:kill()
            assert.is_false(srv:alive())
            stats.kills = stats.kills + 1
            assert.is_true(R.wait_pid(pid, 100), "burst clients did not finish")

            -- what each client was told
            local codes = {}
            for i, op in ipairs(ops) do
                local code, doc = R.storm_result(odir, i)
                stats.ops = stats.ops + 1
                codes[#codes + 1] = op.kind .. "=" .. code
                if code == 0 then
                    stats.unanswered = stats.unanswered + 1
                    local t = op.id and told[op.id]
                    if op.kind == "delete" then
                        t.exists = "maybe"
                    elseif op.kind == "pause" then
                        t.state = "either"
                    end
                else
                    stats.answered = stats.answered + 1
                    if op.kind == "create" then
                        assert.are.equal(202, code, "create answered " .. code)
                        told[doc.id] = { exists = "yes", state = "Running" }
                        stats.creates = stats.creates + 1
                    elseif op.kind == "delete" then
                        assert.are.equal(204, code, "delete of " .. op.id .. " answered " .. code)
                        told[op.id].exists = "no"
                        stats.deletes = stats.deletes + 1
                    elseif op.kind == "pause" then
                        assert.are.equal(202, code, "pause of " .. op.id .. " answered " .. code)
                        told[op.id].state = "Paused"
                        stats.pauses = stats.pauses + 1
                    elseif op.kind == "renew" then
                        assert.are.equal(200, code, "renewal of " .. op.id .. " answered " .. code)
                        told[op.id].min_expires = H.parse_time(doc.expiresAt)
                        stats.renewals = stats.renewals + 1
                    end
                end
            end
            summary[#summary + 1] = string.format("round %d: kill -9 after %.2f s: %s", round, delay,
                table.concat(codes, " "))

            srv = R.start(INSTANCE, nil, { dir = dir })
            -- resumed provisioning and removals settle: nothing stays Pending or Stopping
            local deadline = os.time() + 60
            local items
            repeat
                items = list_all(srv)
                local busy = false
                for _, sb in ipairs(items) do
                    busy = busy or sb.status.state == "Pending" or sb.status.state == "Stopping"
                end
                if busy then
                    H.sleep(0.3)
                end
            until not busy or os.time() > deadline
            local records = {}
            for _, sb in ipairs(items) do
                records[sb.id] = sb
                local st = sb.status.state
                if st ~= "Running" and st ~= "Paused" then
                    violation("round %d: %s is %s: %s", round, sb.id, st, json.encode(sb.status))
                end
                if not told[sb.id] then -- a create killed before its answer: it happened, so it must hold
                    told[sb.id] = { exists = "yes", state = "Running" }
                end
            end
            -- every answer against what the server shows
            for id, t in pairs(told) do
                local sb = records[id]
                if t.exists == "no" and sb then
                    violation("round %d: %s was deleted (204) and is back", round, id)
                elseif t.exists == "yes" and not sb then
                    violation("round %d: %s was accepted and is gone", round, id)
                end
                if sb then
                    if t.state ~= "either" and sb.status.state ~= t.state then
                        violation("round %d: %s should be %s, is %s", round, id, t.state, sb.status.state)
                    end
                    if t.min_expires and H.parse_time(sb.expiresAt) < t.min_expires then
                        violation("round %d: renewal of %s lost: %s", round, id, sb.expiresAt)
                    end
                    t.exists, t.state = "yes", sb.status.state
                else
                    t.exists = "no"
                end
            end
            -- Docker: one container per live sandbox, in its state; none without a record
            local by = containers()
            for id, states in pairs(by) do
                local sb = records[id]
                if not sb then
                    violation("round %d: orphan container of %s (%s)", round, id, table.concat(states, ","))
                elseif #states ~= 1 then
                    violation("round %d: %d containers for %s", round, #states, id)
                else
                    local want = sb.status.state == "Paused" and "paused" or "running"
                    if states[1] ~= want then
                        violation("round %d: %s is %s, its container %s", round, id, sb.status.state, states[1])
                    end
                end
            end
            for id in pairs(records) do
                if not by[id] then
                    violation("round %d: %s has a record and no container", round, id)
                end
            end
        end
        print("\n  " .. table.concat(summary, "\n  "))
        print(string.format("  chaos: %d kills survived, %d operations (%d answered: %d creates, %d deletes, "
            .. "%d pauses, %d renewals; %d cut by the kill), operations lost: %d, in %d s (seed %d)", stats.kills,
            stats.ops, stats.answered, stats.creates, stats.deletes, stats.pauses, stats.renewals, stats.unanswered,
            stats.lost, os.time() - started, SEED))
        assert.are.same({}, failures)
        assert.is_true(stats.kills >= 3, "at least three rounds ran within the time budget")
        -- everything can still be deleted; then nothing of the instance is left, volumes included
        for _, sb in ipairs(list_all(srv)) do
            assert.are.equal(204, R.call(srv, "DELETE", path(sb.id)).status)
        end
        assert.are.same({}, containers())
        for v in pairs(volumes()) do
            if not vols_before[v] and not v:find("^opensandbox%-agent%-") then
                error("volume left behind: " .. v)
            end
        end
    end)
end)
