-- Snapshots as a lean 2 ms polling client sees them, against raw Docker doing the same to the same container
-- by the same client, interleaved (run by bench/snapshot.sh through the tests' core_scenario binary, on our
-- own engine: libcurl with kept-alive connections, one small request per poll):
--   snapshot -> Ready (POST /v1/sandboxes/{id}/snapshots, then GET /v1/snapshots/{sid} until Ready) against
--     a raw POST /commit?pause=false of the same sandbox's container;
--   create from the snapshot -> Running (POST /v1/sandboxes {snapshotId}, then GET until Running) against a
--     raw create + start of the same snapshot image with the same container configuration, minus our agent.
-- Env: BENCH_URL (server, required), BENCH_KEY, SAMPLES (default 20), POLL_MS (default 2), SANDBOX_IMAGE.
local core = require("core")
local client = require("core.client")
local timer = require("core.timer")
local json = require("common.json")

local base = assert(os.getenv("BENCH_URL"), "BENCH_URL is required")
local key = os.getenv("BENCH_KEY") or ""
local samples = tonumber(os.getenv("SAMPLES") or "20")
local image = os.getenv("SANDBOX_IMAGE") or "local/busybox:latest"
local poll_s = tonumber(os.getenv("POLL_MS") or "2") / 1000
local H = { ["OPEN-SANDBOX-API-KEY"] = key, ["Content-Type"] = "application/json" }
local DOCKER = "/var/run/docker.sock"
local RAW_REPO = "bench-raw-snapshot-" .. core.getpid()

local function docker(method, path, body)
    local res, err = client.request({ method = method, url = "http://docker/v1.41" .. path,
        unix_socket = DOCKER, body = body and json.encode(body) or nil,
        headers = body and { ["Content-Type"] = "application/json" } or nil, timeout = 120 })
    return assert(res, tostring(err))
end

local function api(method, path, body)
    local res = assert(client.request({ method = method, url = base .. path, headers = H, timeout = 120,
        body = body and json.encode(body) or nil }))
    return res
end

local sandboxes, snapshots, raw_containers, raw_images = {}, {}, {}, {}

-- GET `path` every poll_s until its status.state is `want`; raises on Failed
local function poll(path, want)
    while true do
        local g = api("GET", path)
        local state = g.body:match('"state":"(%a+)"')
        if state == want then
            return
        end
        assert(state ~= "Failed", g.body)
        timer.sleep(poll_s)
    end
end

local function create_running(body)
    local t0 = core.monotonic()
    local res = api("POST", "/v1/sandboxes", body)
    assert(res.status == 202, res.body)
    local id = json.decode(res.body).id
    sandboxes[#sandboxes + 1] = id
    poll("/v1/sandboxes/" .. id, "Running")
    return (core.monotonic() - t0) * 1000, id
end

-- ours: snapshot -> Ready, in milliseconds from the POST
local function ours_snapshot(src)
    local t0 = core.monotonic()
    local res = api("POST", "/v1/sandboxes/" .. src .. "/snapshots", {})
    assert(res.status == 202, res.body)
    local sid = json.decode(res.body).id
    snapshots[#snapshots + 1] = sid
    poll("/v1/snapshots/" .. sid, "Ready")
    return (core.monotonic() - t0) * 1000, sid
end

-- raw: docker commit of the same container, not paused (as ours)
local function raw_commit(cid, i)
    local t0 = core.monotonic()
    local res = docker("POST", "/commit?container=" .. cid .. "&repo=" .. RAW_REPO .. "&tag=" .. i
        .. "&pause=false", {})
    assert(res.status == 201, res.body)
    local ms = (core.monotonic() - t0) * 1000
    raw_images[#raw_images + 1] = RAW_REPO .. ":" .. i
    return ms
end

-- raw: create + start of the snapshot image, the container configuration the server uses, minus our agent
local function raw_restore(snapshot_image, i)
    local t0 = core.monotonic()
    local c = docker("POST", "/containers/create?name=bench-snap-" .. core.getpid() .. "-" .. i, {
        Image = snapshot_image, Entrypoint = json.array({ "sleep" }), Cmd = json.array({ "3600" }),
        Labels = { ["opensandbox.bench"] = "1" },
        ExposedPorts = { ["44772/tcp"] = {}, ["8080/tcp"] = {} },
        HostConfig = {
            NetworkMode = "bridge",
            PortBindings = { ["44772/tcp"] = json.array({ { HostIp = "127.0.0.1", HostPort = "" } }),
                ["8080/tcp"] = json.array({ { HostIp = "127.0.0.1", HostPort = "" } }) },
            CapDrop = json.array({ "AUDIT_WRITE", "MKNOD", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_MODULE",
                "SYS_PTRACE", "SYS_TIME", "SYS_TTY_CONFIG" }),
            SecurityOpt = json.array({ "no-new-privileges:true" }), PidsLimit = 4096,
            RestartPolicy = { Name = "no" },
        },
    })
    assert(c.status == 201, c.body)
    local id = json.decode(c.body).Id
    raw_containers[#raw_containers + 1] = id
    local s = docker("POST", "/containers/" .. id .. "/start")
    assert(s.status == 204, s.body)
    return (core.monotonic() - t0) * 1000
end

local function cleanup()
    for _, id in ipairs(sandboxes) do
        api("DELETE", "/v1/sandboxes/" .. id)
    end
    for _, id in ipairs(raw_containers) do
        docker("DELETE", "/containers/" .. id .. "?force=true&v=true")
    end
    for _, sid in ipairs(snapshots) do
        api("DELETE", "/v1/snapshots/" .. sid)
    end
    for _, ref in ipairs(raw_images) do
        docker("DELETE", "/images/" .. ref)
    end
end

local function median(t)
    local s = {}
    for i, v in ipairs(t) do
        s[i] = v
    end
    table.sort(s)
    return s[#s // 2 + 1]
end

local ok, err = pcall(function()
    local _, src = create_running({ image = { uri = image }, entrypoint = { "sleep", "3600" }, timeout = 3600,
        resourceLimits = {} })
    -- a little state worth capturing: 4 MB of files written in the sandbox (docker exec, not timed)
    local ins = json.decode(docker("GET", "/containers/sandbox-" .. src .. "/json").body)
    local cid = ins.Id
    local ex = docker("POST", "/containers/" .. cid .. "/exec", { Cmd = json.array({ "sh", "-c",
        "mkdir -p /data && dd if=/dev/urandom of=/data/blob bs=1M count=4 2>/dev/null" }) })
    local exec_id = json.decode(ex.body).Id
    docker("POST", "/exec/" .. exec_id .. "/start", { Detach = true })
    timer.sleep(1)
    local so, sr, ro, rr = {}, {}, {}, {}
    local sids = {}
    for i = 1, samples do
        local ms, sid = ours_snapshot(src)
        so[#so + 1] = ms
        sids[#sids + 1] = sid
        sr[#sr + 1] = raw_commit(cid, i)
    end
    for i = 1, samples do
        local sid = sids[(i - 1) % #sids + 1]
        ro[#ro + 1] = create_running({ snapshotId = sid, entrypoint = { "sleep", "3600" }, timeout = 3600,
            resourceLimits = {} })
        rr[#rr + 1] = raw_restore("opensandbox-snapshots:" .. sid, i)
    end
    print(string.format("| snapshot -> Ready, median of %d (ours, seen by a libcurl client polling every %g ms) "
        .. "| %.1f ms |", samples, poll_s * 1000, median(so)))
    print(string.format("| docker commit (pause=false) of the same container, median of %d (raw, same client) "
        .. "| %.1f ms |", samples, median(sr)))
    print(string.format("| ratio ours / raw (snapshot) | %.2f |", median(so) / median(sr)))
    print(string.format("| create from the snapshot -> Running, median of %d (ours, same client) | %.1f ms |",
        samples, median(ro)))
    print(string.format("| docker create + start of the snapshot image, median of %d (raw, same client) "
        .. "| %.1f ms |", samples, median(rr)))
    print(string.format("| ratio ours / raw (create from snapshot) | %.2f |", median(ro) / median(rr)))
end)
local cok, cerr = pcall(cleanup)
if not ok then
    io.stderr:write("snapshot bench: ", tostring(err), "\n")
elseif not cok then
    io.stderr:write("snapshot bench cleanup: ", tostring(cerr), "\n")
end
core.stop(ok and 0 or 1)
