-- Unit spec of the Docker runtime's diagnostics (lua/runtimes/docker/diagnostics.lua, docker/logs.lua):
-- the output demultiplexer, the logs request and its bounds, and the events (daemon buffer + state), through
-- the real engine on the fake Engine API client.
package.path = "tests/lua/unit/runtimes/?.lua;" .. package.path
package.loaded["core.sync"] = package.loaded["core.sync"] or {}

local docker_runtime = require("runtimes.docker")
local engine = require("runtimes.docker.engine")
local json = require("common.json")
local fake_client = require("support.fake_client")

local function frame(stream, text)
    return string.pack(">B xxx I4", stream, #text) .. text
end

local function new_rt(fake)
    return docker_runtime.new({ docker = { instance = "i1" }, runtime = {} },
        { client = fake, core = { now_s = function() return 1767225700 end } })
end

local REC = { id = "s1", handle = "c1", created_us = 1767225600000000 }

describe("runtimes.docker.logs demuxer", function()
    it("splits multiplexed frames across chunk boundaries and keeps the stream", function()
        local got = {}
        local d = engine.new_demux(function(stream, payload)
            got[#got + 1] = stream .. ":" .. payload
        end)
        local body = frame(1, "out\n") .. frame(2, "err\n") .. frame(1, "x")
        for i = 1, #body, 3 do
            d:feed(body:sub(i, i + 2))
        end
        d:finish()
        assert.are.same({ "stdout:out\n", "stderr:err\n", "stdout:x" }, got)
    end)

    it("reads a TTY container's raw body as stdout lines", function()
        local got = {}
        local d = engine.new_demux(function(stream, payload)
            got[#got + 1] = stream .. ":" .. payload
        end)
        d:feed("2026-01-01T00:00:00Z hello\n2026-01-01T00:00:01Z wor")
        d:feed("ld\n")
        d:finish()
        assert.are.same({ "stdout:2026-01-01T00:00:00Z hello", "stdout:2026-01-01T00:00:01Z world" }, got)
    end)
end)

describe("runtimes.docker diagnostic_logs", function()
    it("asks for one line more than max_lines and says truncated only when it came", function()
        local fake = fake_client.new()
        fake:on("GET", "^/v1%.41/containers/c1/logs%?stdout=1&stderr=1&timestamps=1&tail=3$", { chunks = {
            frame(1, "2026-01-01T00:00:01.000000001Z one\n") .. frame(2, "2026-01-01T00:00:02Z two\n") } })
        local rt = new_rt(fake)
        local res = assert(rt:diagnostic_logs(REC, { max_lines = 2, max_bytes = 4096 }))
        assert.are.same({ "2026-01-01T00:00:01.000000001Z stdout one", "2026-01-01T00:00:02Z stderr two" }, res.lines)
        assert.is_false(res.truncated)
        fake:on("GET", "^/v1%.41/containers/c1/logs%?", { chunks = { frame(1, "t a\n"), frame(1, "t b\n"),
            frame(2, "t c\n") } })
        res = assert(rt:diagnostic_logs(REC, { max_lines = 2, max_bytes = 4096 }))
        assert.are.same({ "t stdout b", "t stderr c" }, res.lines)
        assert.is_true(res.truncated)
    end)

    it("keeps no more than max_bytes in memory, dropping the oldest", function()
        local fake = fake_client.new()
        local chunks = {}
        for i = 1, 50 do
            chunks[i] = frame(1, "t " .. string.rep(tostring(i % 10), 100) .. "\n")
        end
        fake:on("GET", "^/v1%.41/containers/c1/logs%?", { chunks = chunks })
        local res = assert(new_rt(fake):diagnostic_logs(REC, { max_lines = 100, max_bytes = 1024 }))
        local bytes = 0
        for _, l in ipairs(res.lines) do
            bytes = bytes + #l + 1
        end
        assert.is_true(bytes <= 1024)
        assert.is_true(res.truncated)
        assert.matches("^t stdout 0+$", res.lines[#res.lines])
    end)

    it("answers not_found for a container that is gone", function()
        local fake = fake_client.new()
        fake:on("GET", "^/v1%.41/containers/c1/logs%?", { status = 404, body = '{"message":"No such container: c1"}' })
        local _, err = new_rt(fake):diagnostic_logs(REC, { max_lines = 2, max_bytes = 4096 })
        assert.are.equal("not_found", err.kind)
        assert.matches("No such container", err.message)
    end)
end)

describe("runtimes.docker diagnostic_events", function()
    local STATE = json.encode({ Created = "2026-01-01T00:00:00.5Z", RestartCount = 0, State = {
        Status = "exited", Running = false, Paused = false, OOMKilled = true, ExitCode = 137,
        StartedAt = "2026-01-01T00:00:01Z", FinishedAt = "2026-01-01T00:00:09Z" } })

    local function ev(action, nano, attrs)
        -- (written by hand: timeNano needs all 19 digits)
        return string.format('{"Type":"container","Action":"%s","Actor":{"ID":"c1","Attributes":%s},'
            .. '"time":%d,"timeNano":%d}\n', action, json.encode(attrs or {}),
            nano // 1000000000, nano)
    end

    it("lists the daemon's buffered events of the container and its state for good", function()
        local fake = fake_client.new()
        fake:on("GET", "^/v1%.41/containers/c1/json$", { body = STATE })
        fake:on("GET", "^/v1%.41/events%?", { chunks = { ev("create", 1767225600500000000),
            ev("start", 1767225601000000000), ev("oom", 1767225609000000000),
            ev("die", 1767225609000000001, { exitCode = "137" }) } })
        local res = assert(new_rt(fake):diagnostic_events(REC, { max_events = 10 }))
        local req = fake:find("GET", "^/v1%.41/events")[1]
        assert.matches("since=1767225599&until=1767225701&filters=", req.path, 1, true)
        local filters = json.decode((req.path:match("filters=(.*)$"):gsub("%%(%x%x)", function(h)
            return string.char(tonumber(h, 16))
        end)))
        assert.are.same({ container = { "c1" }, type = { "container" } }, filters)
        local texts = {}
        for _, e in ipairs(res.events) do
            texts[#texts + 1] = e.text
        end
        assert.are.same({ "docker container create", "docker container start", "docker container oom",
            "docker container die (exit code 137)", "docker state: container created",
            "docker state: container started",
            "docker state: container exited with code 137 (OOMKilled: out of memory)" }, texts)
        assert.are.equal(1767225609000000, res.events[4].at_us)
        assert.are.equal(1767225609000000, res.events[7].at_us)
        assert.is_false(res.truncated)
        assert.is_nil(res.warnings)
    end)

    it("keeps the newest max_events, and warns when the buffer lost the container's creation", function()
        local fake = fake_client.new()
        fake:on("GET", "^/v1%.41/containers/c1/json$", { body = STATE })
        fake:on("GET", "^/v1%.41/events%?", { chunks = { ev("start", 1767225601000000000),
            ev("pause", 1767225602000000000), ev("unpause", 1767225603000000000) } })
        local res = assert(new_rt(fake):diagnostic_events(REC, { max_events = 2 }))
        assert.are.equal("docker container pause", res.events[1].text)
        assert.are.equal("docker container unpause", res.events[2].text)
        assert.is_true(res.truncated)
        assert.matches("buffer", res.warnings[1])
    end)
end)
