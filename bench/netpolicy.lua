-- The measuring half of bench/netpolicy.sh (run through the tests' core_scenario binary, on our own engine).
-- Env: BENCH_URL, BENCH_KEY, SAMPLES, MANY, GW (the bridge gateway, where dnsmasq answers), PROBE (the static
-- netprobe binary), SERVER_PID.
local client = require("core.client")
local timer = require("core.timer")
local core = require("core")
local json = require("common.json")

local base = assert(os.getenv("BENCH_URL"))
local H = { ["OPEN-SANDBOX-API-KEY"] = os.getenv("BENCH_KEY") or "", ["Content-Type"] = "application/json" }
local samples = tonumber(os.getenv("SAMPLES") or "20")
local many = tonumber(os.getenv("MANY") or "100")
local gw = assert(os.getenv("GW"))
local probe = assert(os.getenv("PROBE"))
local server_pid = assert(os.getenv("SERVER_PID"))
local POLICY = { defaultAction = "deny", egress = { { action = "allow", target = "allowed.test" } } }

local function api(method, path, body)
    return assert(client.request({ method = method, url = base .. path, headers = H, timeout = 120,
        body = body and json.encode(body) or nil }))
end

local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("a")
    p:close()
    return out
end

local created = {}
local function create(policy)
    local body = { image = { uri = "local/busybox:latest" }, entrypoint = { "sleep", "3600" }, timeout = 3600,
        resourceLimits = {}, networkPolicy = policy }
    local t0 = core.monotonic()
    local res = api("POST", "/v1/sandboxes", body)
    assert(res.status == 202, res.body)
    local id = json.decode(res.body).id
    created[#created + 1] = id
    while true do
        local g = api("GET", "/v1/sandboxes/" .. id)
        local state = g.body:match('"state":"(%a+)"')
        if state == "Running" then
            return id, (core.monotonic() - t0) * 1000
        end
        assert(state ~= "Failed", g.body)
        timer.sleep(0.002)
    end
end

local function delete_all()
    for _, id in ipairs(created) do
        api("DELETE", "/v1/sandboxes/" .. id)
    end
    created = {}
end

local function median(t)
    table.sort(t)
    local n = #t
    return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

local function row(name, a, b, unit, how)
    local diff = how == "diff" and string.format("%+.2f %s", b - a, unit) or string.format("%.3f×", b / a)
    print(string.format("| %s | %.2f %s | %.2f %s | %s |", name, a, unit, b, unit, diff))
end

-- the probe inside sandbox `id`: { resolve_us, connect_us, total_us, bytes }
local function run_probe(id, path, plain)
    local c = "sandbox-" .. id
    sh(string.format("docker cp %s %s:/netprobe", probe, c))
    if plain then -- no policy: ask the same DNS server directly
        sh(string.format("docker exec %s sh -c 'echo nameserver %s > /etc/resolv.conf'", c, gw))
    end
    local out = sh(string.format("docker exec %s /netprobe allowed.test 80 %s", c, path))
    local r, cn, t, b = out:match("(%d+) (%d+) (%d+) (%d+)")
    assert(r, "probe failed in " .. c .. ": " .. out)
    return { tonumber(r), tonumber(cn), tonumber(t), tonumber(b) }
end

-- 1. create -> Running, interleaved
local plain_ms, policy_ms = {}, {}
for _ = 1, samples do
    local _, a = create(nil)
    local _, b = create(POLICY)
    plain_ms[#plain_ms + 1], policy_ms[#policy_ms + 1] = a, b
end
delete_all()
row("create → Running, median (ms)", median(plain_ms), median(policy_ms), "ms")

-- 2. the first connection to the allowed name from a fresh sandbox (resolve + connect + GET of 6 bytes)
local first_plain, first_policy, res_plain, res_policy = {}, {}, {}, {}
for _ = 1, samples do
    local a = create(nil)
    local b = create(POLICY)
    local pa, pb = run_probe(a, "/index.html", true), run_probe(b, "/index.html", false)
    first_plain[#first_plain + 1], first_policy[#first_policy + 1] = pa[3] / 1000, pb[3] / 1000
    res_plain[#res_plain + 1], res_policy[#res_policy + 1] = pa[1] / 1000, pb[1] / 1000
    delete_all()
end
row("first connection: resolve + connect + GET, median (ms)", median(first_plain), median(first_policy), "ms", "diff")
row("  of which the name lookup, median (ms)", median(res_plain), median(res_policy), "ms", "diff")

-- 3. throughput of a 256 MB download through an allowed connection
local a = create(nil)
local b = create(POLICY)
local tp_plain, tp_policy = {}, {}
-- DL_SAMPLES downloads each (default 11), the order of the two sandboxes alternating from one pair to the
-- next so that neither always runs right after a `docker exec` of the other (2 vCPUs: the runs are short)
for i = 1, tonumber(os.getenv("DL_SAMPLES") or "11") do
    local pa, pb
    if i % 2 == 1 then
        pa = run_probe(a, "/big", true)
        pb = run_probe(b, "/big", false)
    else
        pb = run_probe(b, "/big", false)
        pa = run_probe(a, "/big", true)
    end
    tp_plain[#tp_plain + 1] = pa[4] / pa[3] -- bytes per µs = MB/s
    tp_policy[#tp_policy + 1] = pb[4] / pb[3]
end
delete_all()
row("256 MB download, median (MB/s)", median(tp_plain), median(tp_policy), "MB/s")

-- 4. memory at `many` sandboxes with policies against `many` without
local function rss_kb()
    return tonumber(sh("ps -o rss= -p " .. server_pid):match("%d+"))
end
local function slab_kb()
    return tonumber(sh("grep '^Slab:' /proc/meminfo"):match("%d+"))
end
local function fill(policy)
    local r0, s0 = rss_kb(), slab_kb()
    for _ = 1, many do
        create(policy)
    end
    timer.sleep(1)
    local r1, s1 = rss_kb(), slab_kb()
    delete_all()
    timer.sleep(2)
    return (r1 - r0) / many, (s1 - s0) / many
end
local rp, sp = fill(nil)
local rq, sq = fill(POLICY)
row(string.format("server RSS per sandbox at %d (kB)", many), rp, rq, "kB", "diff")
row(string.format("kernel slab per sandbox at %d (kB)", many), sp, sq, "kB", "diff")
core.stop(0)
