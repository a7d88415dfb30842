-- The client of bench/vs-upstream.sh: drives our server and upstream's Python server (opensandbox-server from
-- PyPI) with the same requests, interleaved where the two can share the Docker daemon, and prints one table.
-- Run through the tests' core_scenario binary (our engine: libcurl with kept-alive connections).
--
-- Phases (each bounded in time; a failure of one server is written into its cell and the run goes on):
--   1. one warm-up create + delete on each (upstream reads its agent image on its first create)
--   2. SAMPLES creates, alternating which server goes first: POST answer time, and create -> Running seen by
--      a client that polls GET every POLL_MS; each sandbox is deleted before the next sample
--   3. GET of one sandbox with wrk (-t2 -c64, WRK_SECONDS, 3 rounds each, interleaved; median round)
--   4. BURST creates at once (each polled every 250 ms after its POST answered): wall time until all are
--      Running, errors, and the server's CPU seconds over the burst (utime + stime, per 100 creates)
--   5. LIST_N sandboxes (created 10 at a time), then the first page of GET /sandboxes 10 times, and the
--      server's RSS. Phases 4 and 5 run one server at a time: upstream's server counts every container on
--      the daemon that carries the label opensandbox.io/id, ours included, so ours are gone (checked on the
--      daemon) before upstream's turn.
--
-- Env: OURS_URL, OURS_PID, OURS_INSTANCE, UP_URL, UP_PID, KEY, UP_IDS (a file: the ids upstream created, one
-- a line, for the script's cleanup), SANDBOX_IMAGE, SAMPLES (60), POLL_MS (2), BURST (100), LIST_N (500),
-- WRK_SECONDS (5), UP_VERSION (for the table).
local core = require("core")
local client = require("core.client")
local timer = require("core.timer")
local spawn = require("core.spawn")
local json = require("common.json")

local env = os.getenv
local KEY = env("KEY") or ""
local image = env("SANDBOX_IMAGE") or "local/busybox:latest"
local samples = tonumber(env("SAMPLES") or "60")
local poll_s = tonumber(env("POLL_MS") or "2") / 1000
local burst = tonumber(env("BURST") or "100")
local list_n = tonumber(env("LIST_N") or "500")
local wrk_s = tonumber(env("WRK_SECONDS") or "5")
local H = { ["OPEN-SANDBOX-API-KEY"] = KEY, ["Content-Type"] = "application/json" }
local BODY = json.encode({ image = { uri = image }, entrypoint = { "sleep", "3600" }, timeout = 3600,
    resourceLimits = { cpu = "500m", memory = "256Mi" }, metadata = { bench = "vs-upstream" } })

client.configure({ max_host_connections = 256 }) -- a burst is really concurrent on both servers

local up_ids = assert(io.open(assert(env("UP_IDS"), "UP_IDS is required"), "a"))
local servers = {
    { name = "ours", url = assert(env("OURS_URL")), pid = assert(tonumber(env("OURS_PID"))), live = {} },
    { name = "upstream", url = assert(env("UP_URL")), pid = assert(tonumber(env("UP_PID"))), live = {} },
}
local ours, up = servers[1], servers[2]

local function log(fmt, ...)
    io.stderr:write(string.format("%s " .. fmt .. "\n", os.date("!%H:%M:%S"), ...))
end

-- the server process: alive (not gone, not a zombie), RSS in KiB, CPU seconds (utime + stime)
local function proc_stat(pid)
    local f = io.open("/proc/" .. pid .. "/stat", "r")
    if not f then
        return nil
    end
    local s = f:read("a")
    f:close()
    local rest = s:match("%)%s+(.*)$")
    local fields = {}
    for w in rest:gmatch("%S+") do
        fields[#fields + 1] = w
    end
    return fields -- fields[1] is the state (field 3 of stat)
end
local function alive(s)
    local f = proc_stat(s.pid)
    return f ~= nil and f[1] ~= "Z" and f[1] ~= "X"
end
local function cpu_s(s)
    local f = proc_stat(s.pid)
    if not f then
        return nil
    end
    -- stat fields 14-17 (utime, stime, cutime, cstime) in clock ticks (100 per second on Linux)
    return (tonumber(f[12]) + tonumber(f[13]) + tonumber(f[14]) + tonumber(f[15])) / 100
end
local function rss_mib(s)
    local f = io.open("/proc/" .. s.pid .. "/status", "r")
    if not f then
        return nil
    end
    local kb = f:read("a"):match("VmRSS:%s+(%d+)")
    f:close()
    return kb and tonumber(kb) / 1024
end

local function request(s, method, path, body, timeout)
    return client.request({ method = method, url = s.url .. path, headers = H, body = body,
        timeout = timeout or 120 })
end

local function short(msg)
    msg = tostring(msg):gsub("^.-:%d+: ", ""):gsub("%s+", " ")
    return #msg > 70 and msg:sub(1, 67) .. "..." or msg
end

-- one create: POST, then GET every `every` s until Running. Returns post_ms, running_ms; raises on failure
local function create(s, every)
    local t0 = core.monotonic()
    local res, err = request(s, "POST", "/v1/sandboxes", BODY, 300)
    if not res then
        error("POST: " .. tostring(err), 0)
    end
    local post_ms = (core.monotonic() - t0) * 1000
    if res.status ~= 202 then
        error("POST " .. res.status .. ": " .. res.body, 0)
    end
    local id = json.decode(res.body).id
    s.live[id] = true
    if s == up then
        up_ids:write(id, "\n")
        up_ids:flush()
    end
    while true do
        local g, gerr = request(s, "GET", "/v1/sandboxes/" .. id, nil, 60)
        if not g then
            error("GET: " .. tostring(gerr), 0)
        end
        local ok, doc = pcall(json.decode, g.body)
        local state = ok and type(doc) == "table" and type(doc.status) == "table" and doc.status.state
        if state == "Running" then
            return post_ms, (core.monotonic() - t0) * 1000, id
        end
        if g.status ~= 200 or state == "Failed" or state == "Terminated" then
            error("GET " .. g.status .. ": " .. g.body, 0)
        end
        if core.monotonic() - t0 > 300 then
            error("not Running after 300 s", 0)
        end
        timer.sleep(every)
    end
end

local function delete(s, id)
    local res = request(s, "DELETE", "/v1/sandboxes/" .. id, nil, 120)
    if res and (res.status == 204 or res.status == 404) then
        s.live[id] = nil
        return true
    end
    return false
end

-- runs fn(i) for i = 1..n with `width` tasks at a time; returns the number of failures and the first message
local function pool(n, width, fn, deadline_s)
    local next_i, done, errs, first = 1, 0, 0, nil
    local t0 = core.monotonic()
    for _ = 1, math.min(width, n) do
        spawn(function()
            while next_i <= n and core.monotonic() - t0 < deadline_s do
                local i = next_i
                next_i = next_i + 1
                local ok, err = pcall(fn, i)
                if not ok then
                    errs, first = errs + 1, first or err
                end
                done = done + 1
            end
        end)
    end
    while done < n and core.monotonic() - t0 < deadline_s + 330 do
        timer.sleep(0.05)
        if next_i > n and done >= n then
            break
        end
    end
    return errs + (n - done), first
end

local function delete_all(s)
    local ids = {}
    for id in pairs(s.live) do
        ids[#ids + 1] = id
    end
    pool(#ids, 10, function(i)
        delete(s, ids[i])
    end, 600)
end

-- our containers on the daemon (label opensandbox.io/instance), to wait until they are gone
local function ours_on_daemon()
    local filters = json.encode({ label = { "opensandbox.io/instance=" .. assert(env("OURS_INSTANCE")) } })
    local res = client.request({ url = "http://docker/v1.41/containers/json?all=true&filters="
        .. filters:gsub("[^%w]", function(c)
            return string.format("%%%02X", c:byte())
        end), unix_socket = "/var/run/docker.sock", timeout = 60 })
    return res and res.status == 200 and #json.decode(res.body) or -1
end
local function wait_ours_gone()
    local t0 = core.monotonic()
    while ours_on_daemon() ~= 0 and core.monotonic() - t0 < 300 do
        timer.sleep(0.5)
    end
end

local function sorted(t)
    local c = {}
    for i, v in ipairs(t) do
        c[i] = v
    end
    table.sort(c)
    return c
end
local function pct(t, p)
    local c = sorted(t)
    if #c == 0 then
        return nil
    end
    return c[math.max(1, math.ceil(p * #c))]
end

-- results[name][row] = number or string (an error shown in the cell)
local R = { ours = {}, upstream = {} }
local function fail_text(s, err)
    if not alive(s) then
        return "crashed"
    end
    return "error: " .. short(err)
end

-- ---------------------------------------------------------------------------------------------------------
local ok, err = pcall(function()
    for _, s in ipairs(servers) do
        R[s.name].rss_idle = rss_mib(s)
    end

    -- 1. warm-up
    for _, s in ipairs(servers) do
        local wok, werr = pcall(function()
            local _, _, id = create(s, poll_s)
            delete(s, id)
        end)
        log("warm-up %s: %s", s.name, wok and "ok" or tostring(werr))
    end

    -- 2. interleaved single creates
    local post, run, errs, first = {}, {}, {}, {}
    for _, s in ipairs(servers) do
        post[s.name], run[s.name], errs[s.name] = {}, {}, 0
    end
    for i = 1, samples do
        local order = i % 2 == 1 and { ours, up } or { up, ours }
        for _, s in ipairs(order) do
            if alive(s) then
                local cok, p, r, id = pcall(create, s, poll_s)
                if cok then
                    table.insert(post[s.name], p)
                    table.insert(run[s.name], r)
                    delete(s, id)
                else
                    errs[s.name] = errs[s.name] + 1
                    first[s.name] = first[s.name] or p
                end
            end
        end
    end
    for _, s in ipairs(servers) do
        local n = s.name
        if #run[n] > 0 then
            R[n].post_med, R[n].post_p99 = pct(post[n], 0.5), pct(post[n], 0.99)
            R[n].run_med, R[n].run_p99 = pct(run[n], 0.5), pct(run[n], 0.99)
        else
            local t = fail_text(s, first[n])
            R[n].post_med, R[n].post_p99, R[n].run_med, R[n].run_p99 = t, t, t, t
        end
        R[n].single_errs = errs[n]
        R[n].single_first = first[n]
        log("single creates %s: %d ok, %d errors %s", n, #run[n], errs[n], tostring(first[n] or ""))
    end
    delete_all(ours)
    delete_all(up)

    -- 3. GET one sandbox with wrk, 3 rounds each, interleaved
    local target = {}
    for _, s in ipairs(servers) do
        local cok, first_or_err, _, id = pcall(create, s, 0.05)
        target[s.name] = cok and id or nil
        if not cok then
            R[s.name].get_rps = fail_text(s, first_or_err)
            R[s.name].get_p99 = R[s.name].get_rps
        end
    end
    local rounds = { ours = {}, upstream = {} }
    for _ = 1, 3 do
        for _, s in ipairs(servers) do
            if target[s.name] and alive(s) then
                local cmd = string.format("wrk -t2 -c64 -d%ds --timeout 10s --latency -H 'OPEN-SANDBOX-API-KEY: %s' "
                    .. "'%s/v1/sandboxes/%s' 2>&1", wrk_s, KEY, s.url, target[s.name])
                local p = io.popen(cmd, "r")
                local out = p:read("a")
                p:close()
                local rps = tonumber(out:match("Requests/sec:%s+([%d%.]+)"))
                local v, unit = out:match("%s99%%%s+([%d%.]+)(%a+)")
                local p99 = tonumber(v)
                if p99 then
                    p99 = p99 * ({ us = 0.001, ms = 1, s = 1000, m = 60000 })[unit]
                end
                local non2xx = tonumber(out:match("Non%-2xx or 3xx responses:%s+(%d+)")) or 0
                local sockerr = out:match("Socket errors:([^\n]+)")
                table.insert(rounds[s.name], { rps = rps, p99 = p99, non2xx = non2xx, sockerr = sockerr })
                log("wrk %s: %s req/s, p99 %s ms, non-2xx %d, %s", s.name, tostring(rps), tostring(p99), non2xx,
                    tostring(sockerr or "no socket errors"))
            end
        end
    end
    for _, s in ipairs(servers) do
        local rs = rounds[s.name]
        if #rs > 0 then
            table.sort(rs, function(a, b)
                return (a.rps or 0) < (b.rps or 0)
            end)
            local m = rs[(#rs + 1) // 2]
            R[s.name].get_rps, R[s.name].get_p99 = m.rps or "error: wrk gave no figure", m.p99 or "-"
            local bad = 0
            for _, r in ipairs(rs) do
                bad = bad + r.non2xx + (r.sockerr and 1 or 0)
            end
            if bad > 0 then
                R[s.name].get_note = string.format("%d non-2xx; socket errors: %s", m.non2xx,
                    m.sockerr and m.sockerr:gsub("^%s+", "") or "none")
            end
        elseif R[s.name].get_rps == nil then
            R[s.name].get_rps, R[s.name].get_p99 = "crashed", "crashed"
        end
    end
    delete_all(ours)
    delete_all(up)
    wait_ours_gone()

    -- 4. BURST creates at once, one server at a time
    for _, s in ipairs(servers) do
        if not alive(s) then
            R[s.name].burst = "crashed"
        else
            local c0, t0 = cpu_s(s), core.monotonic()
            local done, errs_b, first_b = 0, 0, nil
            for _ = 1, burst do
                spawn(function()
                    local cok, cerr = pcall(create, s, 0.25)
                    if not cok then
                        errs_b, first_b = errs_b + 1, first_b or cerr
                    end
                    done = done + 1
                end)
            end
            while done < burst and core.monotonic() - t0 < 630 do
                timer.sleep(0.01)
            end
            local wall, c1 = core.monotonic() - t0, cpu_s(s)
            errs_b = errs_b + (burst - done)
            R[s.name].burst, R[s.name].burst_errs, R[s.name].burst_first = wall, errs_b, first_b
            R[s.name].cpu100 = c0 and c1 and (c1 - c0) * 100 / burst or "crashed"
            if not alive(s) then
                R[s.name].burst = "crashed"
            end
            log("burst %s: %.2f s, %d errors %s", s.name, wall, errs_b, tostring(first_b or ""))
            delete_all(s)
            if s == ours then
                wait_ours_gone()
            end
        end
    end

    -- 5. LIST_N sandboxes, one server at a time: list time and RSS
    for _, s in ipairs(servers) do
        if not alive(s) then
            R[s.name].list_med, R[s.name].list200_med, R[s.name].rss_full = "crashed", "crashed", "crashed"
        else
            local t0 = core.monotonic()
            local errs_l, first_l = pool(list_n, 10, function()
                create(s, 0.1)
            end, 1200)
            R[s.name].fill_s, R[s.name].fill_errs, R[s.name].fill_first = core.monotonic() - t0, errs_l, first_l
            log("%d sandboxes on %s: %.1f s, %d errors %s", list_n, s.name, core.monotonic() - t0, errs_l,
                tostring(first_l or ""))
            for _, q in ipairs({ { "", "list" }, { "?pageSize=200", "list200" } }) do
                local times, lerr, total = {}, nil, nil
                for _ = 1, 10 do
                    local l0 = core.monotonic()
                    local res, e = request(s, "GET", "/v1/sandboxes" .. q[1], nil, 300)
                    if res and res.status == 200 then
                        times[#times + 1] = (core.monotonic() - l0) * 1000
                        local d = json.decode(res.body)
                        total = type(d.pagination) == "table" and d.pagination.totalItems or total
                    else
                        lerr = lerr or (res and (res.status .. ": " .. res.body) or tostring(e))
                    end
                end
                local x = R[s.name]
                if #times > 0 then
                    x[q[2] .. "_med"], x[q[2] .. "_max"], x.list_total = pct(times, 0.5), pct(times, 1), total
                else
                    x[q[2] .. "_med"] = fail_text(s, lerr)
                end
                x.list_err = x.list_err or lerr
            end
            R[s.name].rss_full = alive(s) and rss_mib(s) or "crashed"
            delete_all(s)
            if s == ours then
                wait_ours_gone()
            end
        end
    end
end)
if not ok then
    log("client failed: %s", tostring(err))
end
delete_all(ours)
delete_all(up)
up_ids:close()

-- ---------------------------------------------------------------------------------------------------------
local function cell(v, fmt)
    if v == nil then
        return "not measured"
    end
    if type(v) == "number" then
        return string.format(fmt, v)
    end
    return v
end
local function ratio(a, b)
    if type(a) == "number" and type(b) == "number" and b > 0 and a > 0 then
        local r = a / b
        if r >= 10 then
            return string.format("%.0f×", r)
        elseif r >= 0.1 then
            return string.format("%.2f×", r)
        end
        return string.format("1/%.0f", 1 / r) -- upstream takes that many times as long
    end
    return "-"
end
local function verdict(cond)
    if cond == nil then
        return "n/a"
    end
    return cond and "**holds**" or "**misses**"
end
local o, u = R.ours, R.upstream
local function num(v)
    return type(v) == "number" and v or nil
end
local rows = {
    { "POST /sandboxes answer time, median (ms)", o.post_med, u.post_med, "%.1f" },
    { "POST /sandboxes answer time, p99 (ms)", o.post_p99, u.post_p99, "%.1f" },
    { "create → Running, 2 ms polling, median (ms)", o.run_med, u.run_med, "%.1f",
        "≤ 0.8×", num(o.run_med) and num(u.run_med) and o.run_med <= 0.8 * u.run_med },
    { "create → Running, 2 ms polling, p99 (ms)", o.run_p99, u.run_p99, "%.1f" },
    { "GET one sandbox, wrk -t2 -c64 (req/s)", o.get_rps, u.get_rps, "%.0f",
        "≥ 20×", num(o.get_rps) and num(u.get_rps) and o.get_rps >= 20 * u.get_rps },
    { "GET one sandbox, wrk p99 (ms)", o.get_p99, u.get_p99, "%.2f" },
    { string.format("list with %d sandboxes, first page (20), median of 10 (ms)", list_n), o.list_med, u.list_med,
        "%.1f" },
    { string.format("list with %d sandboxes, first page (20), max of 10 (ms)", list_n), o.list_max, u.list_max,
        "%.1f" },
    { string.format("list with %d sandboxes, pageSize=200, median of 10 (ms)", list_n), o.list200_med, u.list200_med,
        "%.1f" },
    { string.format("%d concurrent creates: all Running (s)", burst), o.burst, u.burst, "%.2f",
        "0 errors, ≤ 1×", num(o.burst) and num(u.burst) and o.burst_errs == 0 and o.burst <= u.burst },
    { string.format("%d concurrent creates: errors", burst), o.burst_errs, u.burst_errs, "%d" },
    { "server CPU seconds per 100 creates (in the burst)", o.cpu100, u.cpu100, "%.2f" },
    { "server RSS idle (MiB)", o.rss_idle, u.rss_idle, "%.1f" },
    { string.format("server RSS with %d sandboxes (MiB)", list_n), o.rss_full, u.rss_full, "%.1f",
        "≤ 0.25×", num(o.rss_full) and num(u.rss_full) and o.rss_full <= 0.25 * u.rss_full },
    { string.format("creating the %d, 10 at a time (s)", list_n), o.fill_s, u.fill_s, "%.1f" },
}
print(string.format("| measure | ours | upstream %s | ours ÷ upstream | target |", env("UP_VERSION") or ""))
print("|---|---|---|---|---|")
for _, r in ipairs(rows) do
    print(string.format("| %s | %s | %s | %s | %s |", r[1], cell(r[2], r[4]), cell(r[3], r[4]), ratio(r[2], r[3]),
        r[5] and (r[5] .. ": " .. verdict(r[6])) or ""))
end
print()
for _, s in ipairs(servers) do
    local x = R[s.name]
    local notes = {}
    if (x.single_errs or 0) > 0 then
        notes[#notes + 1] = string.format("%d of %d single creates failed (first: %s)", x.single_errs, samples,
            short(x.single_first))
    end
    if x.get_note then
        notes[#notes + 1] = "wrk: " .. x.get_note
    end
    if x.burst_first then
        notes[#notes + 1] = "burst: first error " .. short(x.burst_first)
    end
    if (x.fill_errs or 0) > 0 then
        notes[#notes + 1] = string.format("%d of %d creates of the list phase failed (first: %s)", x.fill_errs, list_n,
            short(x.fill_first))
    end
    if x.list_err then
        notes[#notes + 1] = "list: " .. short(x.list_err)
    end
    if x.list_total and x.list_total ~= list_n then
        notes[#notes + 1] = string.format("list reported totalItems %s", tostring(x.list_total))
    end
    if not alive(s) then
        notes[#notes + 1] = "the server process was gone at the end"
    end
    if #notes > 0 then
        print(string.format("- %s: %s", s.name, table.concat(notes, "; ")))
    end
end
core.stop(ok and 0 or 1)
