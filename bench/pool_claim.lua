-- Warm pool claims (sandbox/pools.lua): CLAIMS creates with extensions.poolRef at RATE per second while the
-- pool refills in the background, each followed by a client polling GET every POLL_MS until it sees
-- Running; then the sandbox is deleted (in the background, so that 1000 claims do not pile up 1000
-- containers). Run by bench/pool_claim.sh through the tests' core_scenario binary (our own engine: libcurl
-- with kept-alive connections).
--
-- Reports claim -> Running as the polling client sees it (median, p99, max), the POST answer time, and the
-- errors: any answer but a 202 that says Running (a cold create from an empty pool counts as an error
-- here: the server runs with pools.on_empty = "error", so an empty pool is a 503), or no Running within 10 s.
--
-- Env: BENCH_URL (required), BENCH_KEY, CLAIMS (default 1000), RATE (default 10), POLL_MS (default 2),
--      POOL (default "bench"), SANDBOX_IMAGE, BUFFER_MIN / BUFFER_MAX (the pool's buffer, default 200 / 300),
--      POOL_MAX (default 400), KEEP=1 (delete the claimed sandboxes after the run instead of each one once
--      it runs: dockerd then only refills during the run), REUSE_POOL=1 (a pool of that name that exists is
--      used as it is, and left after the run: experiments against a server kept running), CLAIM_LOG=path (one
--      line per claim: sandbox id, start on the monotonic clock, POST answer ms, Running ms), FIRST_COMMAND=1
--      (after Running, the client also asks the endpoint of the agent's port and runs `true` through the agent
--      with the sandbox's token: claim -> first command done, what a user of the sandbox waits for).
local core = require("core")
local client = require("core.client")
local timer = require("core.timer")
local spawn = require("core.spawn")
local json = require("common.json")

local base = assert(os.getenv("BENCH_URL"), "BENCH_URL is required")
local key = os.getenv("BENCH_KEY") or ""
local claims = tonumber(os.getenv("CLAIMS") or "1000")
local rate = tonumber(os.getenv("RATE") or "10")
local poll_s = tonumber(os.getenv("POLL_MS") or "2") / 1000
local pool = os.getenv("POOL") or "bench"
local image = os.getenv("SANDBOX_IMAGE") or "local/busybox:latest"
local first_command = os.getenv("FIRST_COMMAND") == "1"
local H = { ["OPEN-SANDBOX-API-KEY"] = key, ["Content-Type"] = "application/json" }
-- every claim's poll and DELETE run at once: without this, slow DELETEs (dockerd removing containers) hold
-- the client's 16 connections and new claims wait in the client, not in the server
client.configure({ max_host_connections = 1024 })

local function request(method, path, body, timeout)
    return client.request({ method = method, url = base .. path, headers = H, timeout = timeout or 30,
        body = body and json.encode(body) or nil })
end

local function percentile(t, p)
    local s = {}
    for i, v in ipairs(t) do
        s[i] = v
    end
    table.sort(s)
    if #s == 0 then
        return 0 / 0
    end
    return s[math.min(#s, math.max(1, math.ceil(#s * p)))]
end

local ok, err = pcall(function()
    local cap = { bufferMin = tonumber(os.getenv("BUFFER_MIN") or "200"),
        bufferMax = tonumber(os.getenv("BUFFER_MAX") or "300"), poolMin = 0,
        poolMax = tonumber(os.getenv("POOL_MAX") or "400") }
    local keep = os.getenv("KEEP") == "1"
    local kept = {}
    local res = assert(request("POST", "/v1/pools", { name = pool, capacitySpec = cap,
        template = { image = { uri = image }, resourceLimits = { cpu = "0.25", memory = "32Mi" } } }))
    -- REUSE_POOL=1: a pool of that name made earlier is taken as it is (experiments against a server left running)
    assert(res.status == 201 or (res.status == 409 and os.getenv("REUSE_POOL") == "1"), res.body)
    -- warm up: the buffer full
    local t0 = core.monotonic()
    while true do
        local g = json.decode(assert(request("GET", "/v1/pools/" .. pool)).body)
        if g.status.available >= cap.bufferMin and g.status.total == g.status.available then
            break
        end
        -- (about one member per second once a few hundred containers run: a big buffer needs longer)
        assert(core.monotonic() - t0 < math.max(300, cap.bufferMax * 1.5), "the pool did not fill")
        timer.sleep(0.2)
    end

    local running, answers, errors, done, min_avail = {}, {}, {}, 0, math.huge
    local commanded = {} -- FIRST_COMMAND=1: claim -> first command done (ms)
    -- the first command through the sandbox's agent: its endpoint from the server, then `true` run there
    local function first_command_of(id, t)
        local e = request("GET", "/v1/sandboxes/" .. id .. "/endpoints/44772", nil, 10)
        local ep = e and e.status == 200 and json.decode(e.body)
        if not ep then
            errors[#errors + 1] = "no endpoint: " .. tostring(e and e.body)
            return
        end
        local r = client.request({ method = "POST", url = "http://" .. ep.endpoint .. "/command", timeout = 30,
            headers = { ["X-EXECD-ACCESS-TOKEN"] = ep.headers and ep.headers["X-EXECD-ACCESS-TOKEN"],
                ["Content-Type"] = "application/json" }, body = '{"command":"true"}' })
        if not (r and r.status == 200) then
            errors[#errors + 1] = "first command failed: " .. tostring(r and r.status)
            return
        end
        commanded[#commanded + 1] = (core.monotonic() - t) * 1000
    end
    local claim_log = {} -- CLAIM_LOG=path: one line per claim (id, start on the monotonic clock, answer, Running)
    -- Without KEEP each claimed sandbox is deleted once it runs, by at most 32 tasks at once: unbounded, the
    -- DELETEs that dockerd is slow to finish pile up past the server's per-address connection limit (256), and
    -- the claims' own connections are then refused (connection reset), which measured the client, not the pool.
    local deletes, delq, deleters = 0, {}, 0
    local function delete_later(id)
        delq[#delq + 1] = id
        if deleters >= 32 then
            return
        end
        deleters = deleters + 1
        spawn(function()
            while #delq > 0 do
                local d = request("DELETE", "/v1/sandboxes/" .. table.remove(delq, 1), nil, 120)
                if d and d.status == 204 then
                    deletes = deletes + 1
                end
            end
            deleters = deleters - 1
        end)
    end
    local function claim(i)
        local t = core.monotonic()
        local r, rerr = request("POST", "/v1/sandboxes", { extensions = { poolRef = pool }, timeout = 600,
            entrypoint = { "sleep", "600" }, env = { N = tostring(i) }, metadata = { n = tostring(i) } }, 10)
        local answered = core.monotonic()
        if not r or r.status ~= 202 or not r.body:find('"state":"Running"', 1, true) then
            errors[#errors + 1] = r and (r.status .. " " .. r.body:sub(1, 120)) or tostring(rerr)
            if r and r.status == 202 then -- (a cold create: remove it too)
                delete_later(json.decode(r.body).id)
            end
            return
        end
        answers[#answers + 1] = (answered - t) * 1000
        local id = json.decode(r.body).id
        local entry = { id = id, t = t, answer_ms = (answered - t) * 1000 }
        claim_log[#claim_log + 1] = entry
        while true do
            local g = request("GET", "/v1/sandboxes/" .. id, nil, 10)
            if g and g.body:find('"state":"Running"', 1, true) then
                running[#running + 1] = (core.monotonic() - t) * 1000
                entry.running_ms = running[#running]
                break
            end
            if core.monotonic() - t > 10 then
                errors[#errors + 1] = "no Running within 10 s: " .. tostring(g and g.body)
                break
            end
            timer.sleep(poll_s)
        end
        if first_command and entry.running_ms then
            first_command_of(id, t)
        end
        if keep then
            kept[#kept + 1] = id
            return
        end
        delete_later(id)
    end

    local start = core.monotonic()
    for i = 1, claims do
        local due = start + (i - 1) / rate
        local wait = due - core.monotonic()
        if wait > 0 then
            timer.sleep(wait)
        end
        spawn(function()
            local cok, cerr = pcall(claim, i)
            if not cok then
                errors[#errors + 1] = tostring(cerr)
            end
            done = done + 1
        end)
        if i % 50 == 0 then
            local g = request("GET", "/v1/pools/" .. pool)
            local a = g and json.decode(g.body).status.available
            if a and a < min_avail then
                min_avail = a
            end
        end
    end
    while done < claims and core.monotonic() - start < claims / rate + 180 do
        timer.sleep(0.1)
    end
    local wall = core.monotonic() - start
    print(string.format("| pool | bufferMin %d, bufferMax %d, poolMax %d; claimed sandboxes deleted %s |",
        cap.bufferMin, cap.bufferMax, cap.poolMax, keep and "after the run" or "as soon as they run"))
    print(string.format("| claims (at %g/s, refill running) | %d in %.1f s |", rate, claims, wall))
    print(string.format("| claim -> Running seen by a client polling every %g ms: median | %.2f ms |", poll_s * 1000,
        percentile(running, 0.5)))
    print(string.format("| claim -> Running: p99 / max | %.2f ms / %.2f ms |", percentile(running, 0.99),
        percentile(running, 1)))
    print(string.format("| POST answer (already Running): median / p99 | %.2f ms / %.2f ms |",
        percentile(answers, 0.5), percentile(answers, 0.99)))
    if first_command then
        print(string.format("| claim -> first command (`true` through the agent) done: median / p99 / max | "
            .. "%.2f / %.2f / %.2f ms |", percentile(commanded, 0.5), percentile(commanded, 0.99),
            percentile(commanded, 1)))
    end
    print(string.format("| errors (not a warm claim, or not Running) | %d |", #errors))
    print(string.format("| fewest available members seen (every 50 claims) | %s |",
        min_avail == math.huge and "-" or tostring(min_avail)))
    -- the server's flush waits (every write's answer waits for the disk: opensandbox_store_flush_wait_seconds)
    local m = request("GET", "/metrics")
    if m and m.status == 200 then
        local total = tonumber(m.body:match("opensandbox_store_flush_wait_seconds_count (%d+)"))
        local upto = tonumber(m.body:match('opensandbox_store_flush_wait_seconds_bucket{le="0.05"} (%d+)'))
        local upto10 = tonumber(m.body:match('opensandbox_store_flush_wait_seconds_bucket{le="0.01"} (%d+)'))
        if total and upto and upto10 then
            print(string.format("| in the server: writes whose answer waited for the disk > 10 ms / > 50 ms "
                .. "| %d / %d of %d |", total - upto10, total - upto, total))
        end
        local ok_cp = m.body:match('opensandbox_store_checkpoints_total{result="ok"} (%d+)')
        if ok_cp then
            print(string.format("| in the server: checkpoints of the store's log on their thread (failed) | %s (%s) |",
                ok_cp, m.body:match('opensandbox_store_checkpoints_total{result="failed"} (%d+)') or "0"))
        end
    end
    if os.getenv("CLAIM_LOG") then
        local f = assert(io.open(os.getenv("CLAIM_LOG"), "w"))
        for _, c in ipairs(claim_log) do
            f:write(string.format("%s %.6f %.3f %.3f\n", c.id, c.t, c.answer_ms, c.running_ms or -1))
        end
        f:close()
    end
    for i = 1, math.min(5, #errors) do
        io.stderr:write("error: " .. errors[i] .. "\n")
    end
    -- the deletes of the last claims finish, then the pool goes (its idle members with it)
    local t1 = core.monotonic()
    if keep then
        -- at most 64 at once: the server refuses a client address more than server.max_connections_per_ip
        -- (256) connections, and a refused DELETE left its sandbox behind
        local left, inflight = #kept, 0
        for i = 1, #kept do
            while inflight >= 64 do
                timer.sleep(0.01)
            end
            inflight = inflight + 1
            spawn(function()
                local d = request("DELETE", "/v1/sandboxes/" .. kept[i], nil, 300)
                if not (d and (d.status == 204 or d.status == 404)) then
                    io.stderr:write("cleanup: DELETE " .. kept[i] .. " failed: " .. tostring(d and d.status) .. "\n")
                end
                inflight = inflight - 1
                left = left - 1
            end)
        end
        while left > 0 and core.monotonic() - t1 < 900 do
            timer.sleep(0.2)
        end
    end
    while not keep and (deletes < #running or deleters > 0) and core.monotonic() - t1 < 300 do
        timer.sleep(0.2)
    end
    if os.getenv("REUSE_POOL") ~= "1" then -- (a pool taken as it was is left as it is)
        request("DELETE", "/v1/pools/" .. pool)
    end
end)
if not ok then
    io.stderr:write("pool_claim: " .. tostring(err) .. "\n")
    os.exit(1)
end
-- the scenario runner's loop would go on: the run is over
core.stop(0)
