-- Unit specs of the Docker adapter (runtimes.docker) with a fake client that records the requests and
-- answers from a script: URLs, query strings, headers, bodies, error mapping, the pull stream, shared
-- pulls and the event stream.
package.path = "tests/lua/unit/runtimes/?.lua;" .. package.path

local docker = require("runtimes.docker.engine")
local json = require("common.json")
local timefmt = require("common.timefmt")
local fake_client = require("support.fake_client")
local registry_auth = require("runtimes.docker.registry_auth")

local function b64url_decode(s)
    local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    local bits = {}
    for c in s:gmatch("[^=]") do
        local v = alphabet:find(c, 1, true) - 1
        for i = 5, 0, -1 do
            bits[#bits + 1] = (v >> i) & 1
        end
    end
    local out = {}
    for i = 1, #bits - 7, 8 do
        local b = 0
        for j = 0, 7 do
            b = b * 2 + bits[i + j]
        end
        out[#out + 1] = string.char(b)
    end
    return table.concat(out)
end

local function query_of(path)
    local q = {}
    for k, v in (path:match("%?(.*)$") or ""):gmatch("([^&=]+)=([^&]*)") do
        q[k] = v:gsub("%%(%x%x)", function(h)
            return string.char(tonumber(h, 16))
        end)
    end
    return q
end

local function new_log()
    local log = { lines = {} }
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        log[level] = function(msg, fields)
            log.lines[#log.lines + 1] = { level = level, msg = msg, fields = fields }
        end
    end
    return log
end

local function make(opts)
    local fake = fake_client.new()
    local log = new_log()
    local o = { client = fake, log = log, api_timeout = 42, sleep = function() coroutine.yield("sleep") end }
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    return docker.new(o), fake, log
end

describe("runtimes.docker: connection", function()
    it("parses DOCKER_HOST", function()
        assert.are.same({ unix_socket = "/var/run/docker.sock", base = "http://docker" },
            docker.parse_host("unix:///var/run/docker.sock"))
        assert.are.same({ base = "http://10.0.0.1:2375" }, docker.parse_host("tcp://10.0.0.1:2375"))
        assert.is_nil(docker.parse_host("tcp://10.0.0.1"))
        assert.is_nil(docker.parse_host("https://x:1"))
        assert.has_error(function()
            docker.new({ client = fake_client.new(), host = "ssh://x" })
        end)
    end)

    it("sends versioned requests over the unix socket with the api timeout", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/info$", { body = json.encode({ NCPU = 8, MemTotal = 1024,
            Runtimes = { runc = { path = "runc" }, runsc = { path = "runsc" } } }) })
        local info = assert(a:info())
        assert.are.equal(8, info.ncpu)
        assert.are.equal("integer", math.type(info.ncpu))
        assert.are.same({ runc = true, runsc = true }, info.runtimes)
        local r = fake.requests[1]
        assert.are.equal("http://docker/v1.41/info", r.url)
        assert.are.equal("/var/run/docker.sock", r.unix_socket)
        assert.are.equal(42, r.timeout)
    end)

    it("uses tcp hosts without a socket", function()
        local a, fake = make({ host = "tcp://127.0.0.1:2375" })
        fake:on("GET", "^/_ping$", { body = "OK" })
        assert.is_true(a:ping())
        assert.are.equal("http://127.0.0.1:2375/_ping", fake.requests[1].url)
        assert.is_nil(fake.requests[1].unix_socket)
    end)

    it("maps transport failures to unavailable with the reason", function()
        local a, fake = make()
        fake:on("GET", "^/_ping$", { err = { kind = "connect", message = "Couldn't connect to server" } })
        local ok, err = a:ping()
        assert.is_nil(ok)
        assert.are.same({ kind = "unavailable", message = "Couldn't connect to server" },
            { kind = err.kind, status = err.status, message = err.message })
        assert.are.equal("unavailable: Couldn't connect to server", tostring(err))
    end)

    it("marks a timeout before the request was sent as busy, not a timeout after", function()
        local a, fake = make()
        fake:on("GET", "^/_ping$", { err = { kind = "timeout", sent = false, waited = 42,
            message = "Connection timed out after 0 milliseconds" } })
        local _, err = a:ping()
        assert.are.equal("unavailable", err.kind)
        assert.is_true(err.busy)
        assert.truthy(err.message:find("Docker is busy", 1, true), err.message)
        fake = select(2, make())
        a = docker.new({ client = fake, api_timeout = 42 })
        fake:on("GET", "^/_ping$", { err = { kind = "timeout", sent = true, waited = 0.01,
            message = "Operation timed out" } })
        _, err = a:ping()
        assert.are.equal("unavailable", err.kind)
        assert.is_nil(err.busy, "sent at once, then no answer for its whole time: the daemon is not answering")
        -- sent after waiting half its time or more for a connection: busy as well
        fake = select(2, make())
        a = docker.new({ client = fake, api_timeout = 42 })
        fake:on("GET", "^/_ping$", { err = { kind = "timeout", sent = true, waited = 21,
            message = "Operation timed out after 21000 milliseconds" } })
        _, err = a:ping()
        assert.is_true(err.busy)
        assert.truthy(err.message:find("waited 21.0 s", 1, true), err.message)
    end)

    it("negotiates the API version", function()
        local a, fake = make()
        fake:on("GET", "^/version$", { body = json.encode({ Version = "20.10.24", ApiVersion = "1.41",
            MinAPIVersion = "1.12", Os = "linux", Arch = "amd64" }) })
        local v = assert(a:version())
        assert.are.equal("1.41", v.api_version)
        assert.are.equal("http://docker/version", fake.requests[1].url)

        fake:on("GET", "^/version$", { body = json.encode({ Version = "19.03", ApiVersion = "1.40" }) })
        local nv, err = a:version()
        assert.is_nil(nv)
        assert.are.equal("api", err.kind)
        assert.are.equal("Docker API version 1.40 is older than the required 1.41 (Docker Engine >= 20.10)",
            err.message)

        fake:on("GET", "^/version$", { body = json.encode({ ApiVersion = "1.50", MinAPIVersion = "1.44" }) })
        assert.is_nil(a:version())
        fake:on("GET", "^/version$", { body = json.encode({ ApiVersion = "1.45", MinAPIVersion = "1.24" }) })
        assert.is_truthy(a:version())
    end)
end)

describe("runtimes.docker: containers", function()
    local SPEC = {
        id = "abc", image_uri = "busybox", entrypoint = { "sh" }, created_us = 1, expires_us = 2,
        platform = { os = "linux", arch = "arm64" },
    }

    it("creates with name and platform in the query and the §8.2 body", function()
        local a, fake = make({ config = { network_mode = "bridge", pids_limit = 10 } })
        fake:on("POST", "^/v1%.41/containers/create", { status = 201, body = '{"Id":"c123","Warnings":[]}' })
        assert.are.equal("c123", a:create_container(SPEC))
        local r = fake.requests[1]
        assert.are.same({ name = "sandbox-abc", platform = "linux/arm64" }, query_of(r.path))
        assert.are.equal("application/json", r.headers["Content-Type"])
        local body = json.decode(r.body)
        assert.are.equal(10, body.HostConfig.PidsLimit)
        assert.are.same({ "sh" }, body.Cmd)
        assert.are.equal("arm64", body.Labels["opensandbox.io/platform-arch"])
    end)

    it("creates without platform and with a given name", function()
        local a, fake = make()
        fake:on("POST", "^/v1%.41/containers/create", { status = 201, body = '{"Id":"c1","Warnings":["w1"]}' })
        local spec = { id = "abc", name = "custom", image_uri = "busybox", entrypoint = { "sh" }, created_us = 1 }
        assert.are.equal("c1", a:create_container(spec))
        assert.are.same({ name = "custom" }, query_of(fake.requests[1].path))
    end)

    it("maps Docker error replies to kinds with Docker's message", function()
        local a, fake = make()
        fake:on("POST", "^/v1%.41/containers/create", { status = 409,
            body = '{"message":"Conflict. The container name \\"/sandbox-abc\\" is already in use"}' })
        local id, err = a:create_container(SPEC)
        assert.is_nil(id)
        assert.are.equal("conflict", err.kind)
        assert.are.equal(409, err.status)
        assert.are.equal('Conflict. The container name "/sandbox-abc" is already in use', err.message)

        fake:on("POST", "^/v1%.41/containers/create",
            { status = 404, body = '{"message":"No such image: busybox:latest"}' })
        local _, e404 = a:create_container(SPEC)
        assert.are.equal("not_found", e404.kind)
        fake:on("POST", "^/v1%.41/containers/create", { status = 500, body = "plain text\n" })
        local _, e500 = a:create_container(SPEC)
        assert.are.same({ "api", 500, "plain text" }, { e500.kind, e500.status, e500.message })
        fake:on("POST", "^/v1%.41/containers/create", { status = 500, body = "" })
        local _, eempty = a:create_container(SPEC)
        assert.are.equal("Docker answered HTTP 500", eempty.message)
    end)

    it("uploads an archive, starts, pauses, unpauses", function()
        local a, fake = make()
        fake:on("PUT", "^/v1%.41/containers/c1/archive%?path=/$", { status = 200 })
        fake:on("POST", "^/v1%.41/containers/c1/start$", { status = 304 })
        fake:on("POST", "^/v1%.41/containers/c1/pause$", { status = 204 })
        fake:on("POST", "^/v1%.41/containers/c1/unpause$", { status = 204 })
        assert.is_true(a:put_archive("c1", "TARBYTES"))
        assert.are.equal("application/x-tar", fake.requests[1].headers["Content-Type"])
        assert.are.equal("TARBYTES", fake.requests[1].body)
        assert.is_true(a:start("c1"))
        assert.is_true(a:pause("c1"))
        assert.is_true(a:unpause("c1"))
        fake:on("POST", "^/v1%.41/containers/c1/pause$", { status = 409, body = '{"message":"is already paused"}' })
        local _, err = a:pause("c1")
        assert.are.equal("conflict", err.kind)
    end)

    it("removes with force and volumes; 404 is success; a paused refusal unpauses and retries", function()
        local a, fake = make()
        fake:on("DELETE", "^/v1%.41/containers/c1%?force=true&v=true$", { status = 204 })
        assert.is_true(a:remove("c1"))
        fake:on("DELETE", "^/v1%.41/containers/c2", { status = 404, body = '{"message":"No such container: c2"}' })
        assert.is_true(a:remove("c2"))
        fake:on("DELETE", "^/v1%.41/containers/c3", { status = 204 })
        fake:on("DELETE", "^/v1%.41/containers/c3", { status = 409, times = 1,
            body = '{"message":"You cannot remove a paused container c3. Unpause and then stop the container"}' })
        fake:on("POST", "^/v1%.41/containers/c3/unpause$", { status = 204 })
        assert.is_true(a:remove("c3"))
        assert.are.equal(1, #fake:find("POST", "/c3/unpause$"))
        assert.are.equal(2, #fake:find("DELETE", "/c3%?"))
        fake:on("DELETE", "^/v1%.41/containers/c4", { status = 500, body = '{"message":"driver failed"}' })
        local _, err = a:remove("c4")
        assert.are.same({ "api", "driver failed" }, { err.kind, err.message })
    end)

    it("normalizes inspect and reports a missing container", function()
        local a, fake = make({ config = { network_mode = "mynet" } })
        fake:on("GET", "^/v1%.41/containers/c1/json$", { body = json.encode({
            Id = "c1", Name = "/sandbox-abc",
            State = { Status = "paused", Running = true, Paused = true, ExitCode = 0,
                StartedAt = "2023-11-14T22:13:20.123456789Z", FinishedAt = "0001-01-01T00:00:00Z" },
            Config = { Image = "busybox", Cmd = { "sh" }, Labels = { ["opensandbox.io/id"] = "abc" } },
            NetworkSettings = { IPAddress = "", Networks = { mynet = { IPAddress = "10.9.0.2" } },
                Ports = { ["44772/tcp"] = { { HostIp = "127.0.0.1", HostPort = "40001" } } } },
        }) })
        local ins = assert(a:inspect("c1"))
        assert.are.equal("10.9.0.2", ins.ip)
        assert.are.same({ ["44772"] = 40001 }, ins.host_ports)
        assert.are.equal(1700000000123456, ins.started_us)
        assert.are.equal("Paused", (a:status_of(ins)))
        fake:on("GET", "^/v1%.41/containers/nope/json$",
            { status = 404, body = '{"message":"No such container: nope"}' })
        local none, err = a:inspect("nope")
        assert.is_nil(none)
        assert.are.same({ "not_found", 404, "No such container: nope" }, { err.kind, err.status, err.message })
    end)

    it("reads a network's IPv4 gateway, derived from the subnet when dockerd reports none", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/networks/withgw$", { body = json.encode({ Name = "withgw", IPAM = { Config = {
            { Subnet = "fd00::/64", Gateway = "fd00::1" }, { Subnet = "10.9.0.0/24", Gateway = "10.9.0.254" } } } }) })
        assert.are.same({ gateway = "10.9.0.254", subnet = "10.9.0.0/24", name = "withgw" }, a:network("withgw"))
        -- dockerd 20.10 on a fresh host: the default bridge's pool has a Subnet and no Gateway
        fake:on("GET", "^/v1%.41/networks/bridge$", { body = json.encode({ Name = "bridge", IPAM = { Config = {
            { Subnet = "172.17.0.0/16" } } } }) })
        assert.are.same({ gateway = "172.17.0.1", subnet = "172.17.0.0/16", name = "bridge", derived = true },
            a:network("bridge"))
        fake:on("GET", "^/v1%.41/networks/v6only$", { body = json.encode({ Name = "v6only", IPAM = { Config = {
            { Subnet = "fd00::/64" } } } }) })
        local none, err = a:network("v6only")
        assert.is_nil(none)
        assert.are.equal("network v6only has no IPv4 gateway", err.message)
        assert.are.equal("192.168.4.65", docker.first_host("192.168.4.77/26"))
        assert.is_nil(docker.first_host("10.0.0.0/31"))
        assert.is_nil(docker.first_host("300.0.0.0/8"))
        assert.is_nil(docker.first_host("fd00::/64"))
    end)

    it("lists labelled containers", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/containers/json%?", { body = json.encode({
            { Id = "c1", Names = { "/sandbox-a" }, Image = "busybox", State = "running", Status = "Up 2 minutes",
                Created = 1700000000, Labels = { ["opensandbox.io/id"] = "a" } },
            { Id = "c2", Names = { "/sandbox-b" }, Image = "busybox", State = "exited", Status = "Exited (0)",
                Created = 1700000001, Labels = { ["opensandbox.io/id"] = "b" } },
        }) })
        local list = assert(a:list())
        assert.are.equal(2, #list)
        assert.are.same({ id = "c1", name = "sandbox-a", image = "busybox", state = "running", status = "running",
            status_text = "Up 2 minutes", created_s = 1700000000, labels = { ["opensandbox.io/id"] = "a" } }, list[1])
        local q = query_of(fake.requests[1].path)
        assert.are.equal("true", q.all)
        assert.are.same({ label = { "opensandbox.io/id" } }, json.decode(q.filters))
        a:list({ "opensandbox.test=1" })
        assert.are.same({ label = { "opensandbox.io/id", "opensandbox.test=1" } },
            json.decode(query_of(fake.requests[2].path).filters))
    end)

    it("lists every server's containers, with their labels (the runtime picks its own)", function()
        local a, fake = make({ config = { instance = "blue" } })
        fake:on("GET", "^/v1%.41/containers/json%?", { body = json.encode({
            { Id = "c1", Labels = { ["opensandbox.io/id"] = "a", ["opensandbox.io/instance"] = "green" } } }) })
        local list = assert(a:list())
        assert.are.same({ label = { "opensandbox.io/id" } }, json.decode(query_of(fake.requests[1].path).filters))
        assert.are.equal("green", list[1].labels["opensandbox.io/instance"])
    end)
end)

describe("runtimes.docker: images", function()
    it("does not pull an image that is present", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/images/.*/json$", { body = '{"RepoTags":["127.0.0.1:5000/a/b:1"]}' })
        assert.is_true(a:ensure_image("127.0.0.1:5000/a/b:1"))
        assert.are.equal(1, #fake.requests)
        assert.are.equal("/v1.41/images/127.0.0.1:5000/a/b:1/json", fake.requests[1].path)
    end)

    it("remembers an image seen present or pulled, until told to forget it", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/images/.*/json$", { body = '{"RepoTags":["busybox:1"]}' })
        assert.is_true(a:ensure_image("busybox:1"))
        assert.is_true(a:ensure_image("busybox:1"))
        assert.are.equal(1, #fake.requests)
        -- another platform is another image
        assert.is_true(a:ensure_image("busybox:1", nil, { os = "linux", arch = "arm64" }))
        assert.are.equal(2, #fake.requests)
        a:forget_image("busybox:1")
        assert.is_true(a:ensure_image("busybox:1"))
        assert.are.equal(3, #fake.requests)
        -- a pulled image is remembered too
        fake:on("GET", "^/v1%.41/images/.*/json$", { status = 404, body = '{"message":"No such image"}' })
        fake:on("POST", "^/v1%.41/images/create", { chunks = { '{"status":"ok"}\n' } })
        assert.is_true(a:ensure_image("other:2"))
        local n = #fake.requests
        assert.is_true(a:ensure_image("other:2"))
        assert.are.equal(n, #fake.requests)
        -- a failed pull is not
        fake:on("POST", "^/v1%.41/images/create", { chunks = { '{"error":"boom"}\n' } })
        assert.is_nil(a:ensure_image("third:3"))
        n = #fake.requests
        assert.is_nil(a:ensure_image("third:3"))
        assert.is_true(#fake.requests > n)
    end)

    it("pulls an image found only by its ID (not by one of its names), and any image when told to verify", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/images/.*/json$", { body = json.encode({ Id = "sha256:" .. string.rep("a", 64),
            RepoTags = { "127.0.0.1:5055/private/img:1" },
            RepoDigests = { "127.0.0.1:5055/private/img@sha256:bb" } }) })
        fake:on("POST", "^/v1%.41/images/create", { chunks = { '{"error":"pull access denied for sha256"}\n' } })
        -- by ID, or by a prefix of it: Docker finds the image, but the reference does not name it
        local ok, err = a:ensure_image("sha256:" .. string.rep("a", 64))
        assert.is_nil(ok)
        assert.matches("pull access denied", err.message)
        assert.is_nil(a:ensure_image("aaaaaaaaaaaa"))
        assert.are.equal(2, #fake:find("POST", "/images/create"))
        -- by one of its names (a tag, or a digest): present
        assert.is_true(a:ensure_image("127.0.0.1:5055/private/img:1"))
        assert.is_true(a:ensure_image("127.0.0.1:5055/private/img@sha256:bb"))
        assert.are.equal(2, #fake:find("POST", "/images/create"))
        -- verify: pulled although present and remembered, with the caller's credentials only
        local n = #fake.requests
        ok = a:ensure_image("127.0.0.1:5055/private/img:1", nil, nil, true)
        assert.is_nil(ok)
        assert.are.equal(n + 1, #fake.requests, "no inspection: straight to the pull")
        local pull = fake.requests[#fake.requests]
        assert.is_nil(pull.headers["X-Registry-Auth"])
        fake:on("POST", "^/v1%.41/images/create", { chunks = { '{"status":"Image is up to date"}\n' } })
        assert.is_true(a:ensure_image("127.0.0.1:5055/private/img:1", { username = "u", password = "p" }, nil, true))
        assert.is_string(fake.requests[#fake.requests].headers["X-Registry-Auth"])
    end)

    it("tells a create that failed because the image is gone from other failures", function()
        local a, fake = make()
        fake:on("POST", "^/v1%.41/containers/create", { status = 404,
            body = '{"message":"No such image: local/gone:latest"}' })
        local cid, err = a:create_container({ id = "x", image_uri = "local/gone:latest", entrypoint = { "true" },
            created_us = 0 })
        assert.is_nil(cid)
        assert.is_true(a:image_missing(err))
        assert.is_false(a:image_missing({ status = 404, message = "No such container: x" }))
        assert.is_false(a:image_missing({ status = 409, message = "No such image: x" }))
        assert.is_false(a:image_missing(nil))
    end)

    it("create_from_image pulls and creates once more when the image has gone, and says when the pull fails", function()
        local a, fake = make()
        local creates = 0
        local gone = { status = 404, message = "No such image: local/x:1" }
        local function create()
            creates = creates + 1
            if creates == 1 then
                return nil, gone
            end
            return "cid-" .. creates
        end
        fake:on("GET", "^/v1%.41/images/.*/json$", { body = '{"RepoTags":["local/x:1"]}' }) -- present again
        assert.is_true(a:ensure_image("local/x:1")) -- seen present: remembered
        assert.are.equal("cid-2", a:create_from_image("local/x:1", nil, nil, create))
        assert.are.equal(2, #fake.requests, "the image was inspected again after the failed create")
        -- other failures are returned as they are, without a retry
        creates = 10
        local conflict = { status = 409, message = "name in use" }
        local cid, err, failed = a:create_from_image("local/x:1", nil, nil, function()
            creates = creates + 1
            return nil, conflict
        end)
        assert.is_nil(cid)
        assert.are.equal(conflict, err)
        assert.is_nil(failed)
        assert.are.equal(11, creates)
        -- gone and not pullable: nil, the pull error, "pull"; no second create
        fake:on("GET", "^/v1%.41/images/.*/json$", { status = 404, body = '{"message":"No such image"}' })
        fake:on("POST", "^/v1%.41/images/create", { chunks = { '{"error":"pull access denied"}\n' } })
        creates = 0
        cid, err, failed = a:create_from_image("local/x:1", nil, nil, create)
        assert.is_nil(cid)
        assert.are.equal("pull access denied", err.message)
        assert.are.equal("pull", failed)
        assert.are.equal(1, creates)
    end)

    it("pulls a missing image (latest by default) without auth, following the stream", function()
        local a, fake, log = make()
        fake:on("GET", "^/v1%.41/images/.*/json$", { status = 404, body = '{"message":"No such image"}' })
        fake:on("POST", "^/v1%.41/images/create", { chunks = {
            '{"status":"Pulling from library/busybox","id":"latest"}\n{"status":"Downl',
            'oading","id":"abc","progress":"[=>  ]"}\r\n',
            '{"status":"Status: Downloaded newer image for busybox:latest"}',
        } })
        assert.is_true(a:ensure_image("busybox"))
        local pull = fake:find("POST", "/images/create")[1]
        assert.are.same({ fromImage = "busybox", tag = "latest" }, query_of(pull.path))
        assert.is_nil(pull.headers and pull.headers["X-Registry-Auth"])
        assert.is_true(pull.streaming)
        assert.are.equal(0, pull.timeout)
        assert.are.equal(42, pull.idle_timeout)
        local progress = {}
        for _, l in ipairs(log.lines) do
            if l.level == "debug" and l.fields and l.fields.status then
                progress[#progress + 1] = l.fields.status
            end
        end
        assert.are.same({ "Pulling from library/busybox", "Downloading",
            "Status: Downloaded newer image for busybox:latest" }, progress)
    end)

    it("pulls by digest", function()
        local a, fake = make()
        local digest = "sha256:" .. string.rep("ab", 32)
        fake:on("GET", "^/v1%.41/images/.*/json$", { status = 404 })
        fake:on("POST", "^/v1%.41/images/create", { chunks = { '{"status":"ok"}\n' } })
        assert.is_true(a:ensure_image("ghcr.io/o/i:1@" .. digest))
        assert.are.same({ fromImage = "ghcr.io/o/i", tag = digest },
            query_of(fake:find("POST", "/images/create")[1].path))
    end)

    it("fails on an error line even under HTTP 200, with the line split across chunks", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/images/.*/json$", { status = 404 })
        fake:on("POST", "^/v1%.41/images/create", { status = 200, chunks = {
            '{"status":"Pulling fs layer","id":"1"}\n{"errorDetail":{"message":"manifest unk',
            'nown: manifest unknown"},"error":"manifest unknown: manifest unknown"}\n',
        } })
        local ok, err = a:ensure_image("foo:1")
        assert.is_nil(ok)
        assert.are.same({ "api", 200, "manifest unknown: manifest unknown" }, { err.kind, err.status, err.message })
        -- an error line with only "error"
        fake:on("POST", "^/v1%.41/images/create", { chunks = { '{"error":"boom"}' } })
        local _, e2 = a:ensure_image("foo:1")
        assert.are.equal("boom", e2.message)
    end)

    it("reports a refused pull (non-200) with Docker's message from the stream", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/images/.*/json$", { status = 404 })
        fake:on("POST", "^/v1%.41/images/create", { status = 404, chunks = {
            '{"message":"pull access denied for nope, repository does not exist"}\n' } })
        local _, err = a:ensure_image("nope")
        assert.are.same({ "not_found", 404, "pull access denied for nope, repository does not exist" },
            { err.kind, err.status, err.message })
        fake:on("POST", "^/v1%.41/images/create", { err = { kind = "timeout", message = "idle for 42 s" } })
        local _, terr = a:ensure_image("nope")
        assert.are.equal("unavailable", terr.kind)
        assert.is_truthy(terr.message:find("idle", 1, true))
    end)

    it("sends X-Registry-Auth only when auth is given, with the serveraddress rule", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/images/.*/json$", { status = 404 })
        fake:on("POST", "^/v1%.41/images/create", { chunks = { '{"status":"done"}\n' } })
        local auth = { username = "me", password = "s3cr3t/+?" }
        assert.is_true(a:ensure_image("org/app:2", auth))
        assert.is_true(a:ensure_image("localhost:5000/app", auth))
        local pulls = fake:find("POST", "/images/create")
        local h1, h2 = pulls[1].headers["X-Registry-Auth"], pulls[2].headers["X-Registry-Auth"]
        assert.is_nil(h1:find("[+/]"))
        assert.are.same({ username = "me", password = "s3cr3t/+?", serveraddress = "https://index.docker.io/v1/" },
            json.decode(b64url_decode(h1)))
        assert.are.same({ username = "me", password = "s3cr3t/+?", serveraddress = "localhost:5000" },
            json.decode(b64url_decode(h2)))
        assert.are.equal(registry_auth.header(auth, "localhost:5000"), h2)
        -- never on the existence check
        for _, r in ipairs(fake:find("GET", "/images/")) do
            assert.is_nil(r.headers["X-Registry-Auth"])
        end
    end)

    it("shares identical concurrent pulls", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/images/.*/json$", { status = 404 })
        fake:on("POST", "^/v1%.41/images/create", { yield = true, chunks = { '{"error":"denied"}\n' } })
        local results = {}
        local first = coroutine.create(function()
            results.first = { a:ensure_image("busybox:1") }
        end)
        local second = coroutine.create(function()
            results.second = { a:ensure_image("busybox:1") }
        end)
        assert.are.equal("fake-client", select(2, coroutine.resume(first))) -- the first is inside its pull
        assert.are.equal("sleep", select(2, coroutine.resume(second))) -- the second waits for it
        assert.are.equal("sleep", select(2, coroutine.resume(second)))
        assert.is_true(coroutine.resume(first))
        assert.are.equal("dead", coroutine.status(first))
        assert.is_true(coroutine.resume(second))
        assert.are.equal("dead", coroutine.status(second))
        assert.are.equal(1, #fake:find("POST", "/images/create"))
        assert.are.equal("denied", results.first[2].message)
        assert.is_nil(results.second[1])
        assert.are.equal(results.first[2], results.second[2])
        -- a later call pulls again
        fake:on("POST", "^/v1%.41/images/create", { chunks = { '{"status":"ok"}\n' } })
        assert.is_true(a:ensure_image("busybox:1"))
        assert.are.equal(2, #fake:find("POST", "/images/create"))
    end)

    it("waits for a shared pull on an injected event instead of polling", function()
        local events = {}
        local function new_event()
            local ev = { sets = 0 }
            function ev.wait()
                coroutine.yield("event-wait")
            end
            function ev.set()
                ev.sets = ev.sets + 1
            end
            events[#events + 1] = ev
            return ev
        end
        local a, fake = make({ sleep = false, new_event = new_event })
        fake:on("GET", "^/v1%.41/images/.*/json$", { status = 404 })
        fake:on("POST", "^/v1%.41/images/create", { yield = true, chunks = { '{"status":"ok"}\n' } })
        local first = coroutine.create(function()
            return a:ensure_image("busybox:1")
        end)
        local second = coroutine.create(function()
            return a:ensure_image("busybox:1")
        end)
        assert.are.equal("fake-client", select(2, coroutine.resume(first)))
        assert.are.equal("event-wait", select(2, coroutine.resume(second)))
        assert.are.same({ true, true }, { coroutine.resume(first) })
        assert.are.equal(1, #events)
        assert.are.equal(1, events[1].sets)
        assert.are.same({ true, true }, { coroutine.resume(second) })
        assert.are.equal(1, #fake:find("POST", "/images/create"))
    end)

    it("does not share pulls of different references", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/images/.*/json$", { status = 404 })
        fake:on("POST", "^/v1%.41/images/create", { yield = true, chunks = { '{"status":"ok"}\n' } })
        local c1 = coroutine.create(function()
            return a:ensure_image("busybox:1")
        end)
        local c2 = coroutine.create(function()
            return a:ensure_image("busybox:2")
        end)
        assert.are.equal("fake-client", select(2, coroutine.resume(c1)))
        assert.are.equal("fake-client", select(2, coroutine.resume(c2)))
        assert.are.same({ true, true }, { coroutine.resume(c1) })
        assert.are.same({ true, true }, { coroutine.resume(c2) })
        assert.are.equal(2, #fake:find("POST", "/images/create"))
    end)
end)

describe("runtimes.docker: events", function()
    local function ev_line(action, id, attrs, nano)
        return json.encode({ Type = "container", Action = action, status = action, id = id,
            Actor = { ID = id, Attributes = attrs }, time = nano // 1000000000, timeNano = 0 })
            :gsub('"timeNano":0', '"timeNano":' .. nano)
    end

    it("parses events across chunk boundaries with exact timeNano", function()
        local a, fake, log = make()
        local l1 = ev_line("start", "c1", { ["opensandbox.io/id"] = "s1", name = "sandbox-s1" }, 1700000000123456789)
        local l2 = ev_line("die", "c1", { ["opensandbox.io/id"] = "s1", exitCode = "137" }, 1700000001000000001)
        local l3 = ev_line("exec_start: sh -c ls", "c1", { ["opensandbox.io/id"] = "s1" }, 1700000002000000000)
        local l4 = ev_line("oom", "c2", { ["opensandbox.io/id"] = "s2" }, 1700000003000000000)
        local all = l1 .. "\n" .. l2 .. "\n" .. l3 .. "\n" .. l4 .. "\n"
        fake:on("GET", "^/v1%.41/events%?", { chunks = { all:sub(1, 10), all:sub(11, #l1 + 5), all:sub(#l1 + 6, 300),
            all:sub(301) } })
        local got = {}
        local ok, err = a:events(1700000000, function(ev)
            got[#got + 1] = ev
            if ev.action == "oom" then
                error("handler bug")
            end
        end)
        assert.is_nil(ok)
        assert.are.equal("unavailable", err.kind)
        assert.are.equal(4, #got)
        assert.are.same({ action = "start", raw_action = "start", id = "c1", sandbox_id = "s1",
            time_nano = 1700000000123456789 }, got[1])
        assert.are.equal(137, got[2].exit_code)
        assert.are.equal(1700000001000000001, got[2].time_nano)
        assert.are.equal("exec_start", got[3].action)
        assert.are.equal("s2", got[4].sandbox_id)
        local r = fake.requests[1]
        local q = query_of(r.path)
        assert.are.equal("1700000000", q.since)
        assert.are.same({ type = { "container" }, label = { "opensandbox.io/id" } }, json.decode(q.filters))
        assert.are.equal(0, r.timeout)
        assert.is_true(r.streaming)
        local logged = false
        for _, l in ipairs(log.lines) do
            logged = logged or (l.level == "error" and l.fields.error:find("handler bug", 1, true) ~= nil)
        end
        assert.is_true(logged)
    end)

    it("omits since when not given and reports a transport failure", function()
        local a, fake = make()
        fake:on("GET", "^/v1%.41/events%?", { err = { kind = "connect", message = "refused" } })
        local _, err = a:events(nil, function() end)
        assert.are.equal("unavailable", err.kind)
        assert.is_nil(query_of(fake.requests[1].path).since)
        a:events(1.5, function() end, 3)
        local q = query_of(fake.requests[2].path)
        assert.are.equal("1.500000000", q.since)
        assert.are.equal("3", q["until"])
    end)
end)

describe("runtimes.docker: agent volume", function()
    local LABELS = { ["opensandbox.io/agent"] = "true" }
    local VOL = "^/v1%.41/volumes/agent%-v$"
    local FILL = "^/v1%.41/containers/agent%-v%-fill/json$"

    local IMAGE_REF = "opensandbox%-agent%-fill:agent%-v"

    -- the calls that make and fill a volume: import the image from the tar, create the volume, create the
    -- fill container, upload, remove the container, remove the image
    local function fill_rules(fake)
        fake:on("POST", "^/v1%.41/images/create%?fromSrc=%-&", { status = 200,
            chunks = { '{"status":"sha256:0123"}\n' } })
        fake:on("POST", "^/v1%.41/volumes/create$", { status = 201, body = "{}" })
        fake:on("POST", "^/v1%.41/containers/create%?name=agent%-v%-fill$", { status = 201, body = '{"Id":"f1"}' })
        fake:on("PUT", "^/v1%.41/containers/f1/archive", { status = 200 })
        fake:on("DELETE", "^/v1%.41/containers/f1%?", { status = 204 })
        fake:on("DELETE", "^/v1%.41/images/" .. IMAGE_REF .. "%?force=true$", { status = 200, body = "[]" })
    end

    -- "METHOD path" (without the query) of every request, in order
    local function sequence(fake)
        local out = {}
        for _, r in ipairs(fake.requests) do
            out[#out + 1] = r.method .. " " .. r.path:gsub("%?.*$", "")
        end
        return out
    end

    it("tells our volume from a missing one and from one Docker made by itself", function()
        local a, fake = make()
        fake:on("GET", VOL, { body = '{"Name":"agent-v","Labels":{"opensandbox.io/agent":"true","x":"y"}}' })
        assert.are.equal("ours", a:volume_state("agent-v", LABELS))
        fake:on("GET", VOL, { body = '{"Name":"agent-v","Labels":null}' })
        assert.are.equal("foreign", a:volume_state("agent-v", LABELS))
        fake:on("GET", VOL, { body = '{"Name":"agent-v","Labels":{"opensandbox.io/agent":"false"}}' })
        assert.are.equal("foreign", a:volume_state("agent-v", LABELS))
        fake:on("GET", VOL, { status = 404, body = '{"message":"no such volume"}' })
        assert.are.equal("missing", a:volume_state("agent-v", LABELS))
        fake:on("GET", VOL, { status = 500, body = '{"message":"boom"}' })
        local state, err = a:volume_state("agent-v", LABELS)
        assert.is_nil(state)
        assert.are.equal("boom", err.message)
    end)

    it("keeps a complete volume, and makes a missing one with its labels", function()
        local a, fake = make()
        fake:on("GET", VOL, { body = '{"Labels":{"opensandbox.io/agent":"true"}}' })
        fake:on("GET", FILL, { status = 404, body = '{"message":"no such container"}' })
        assert.is_true(a:ensure_volume("agent-v", "TAR", LABELS))
        assert.are.equal(0, #fake:find("POST", "/volumes/create"))
        assert.are.equal(0, #fake:find("POST", "/images/create"))

        fake = fake_client.new()
        a = docker.new({ client = fake, log = new_log() })
        fake:on("GET", VOL, { status = 404, body = '{"message":"no such volume"}' })
        fill_rules(fake)
        assert.is_true(a:ensure_volume("agent-v", "TAR", LABELS))
        -- image from the tar, volume, fill container, upload, then container and image removed
        assert.are.same({
            "GET /v1.41/volumes/agent-v",
            "POST /v1.41/images/create",
            "POST /v1.41/volumes/create",
            "POST /v1.41/containers/create",
            "PUT /v1.41/containers/f1/archive",
            "DELETE /v1.41/containers/f1",
            "DELETE /v1.41/images/opensandbox-agent-fill:agent-v",
        }, sequence(fake))
        -- the image is imported from the tar itself (docker import), carrying the labels
        local import = fake.requests[2]
        assert.are.same({ fromSrc = "-", repo = "opensandbox-agent-fill", tag = "agent-v",
            changes = "LABEL opensandbox.io/agent=true" }, query_of(import.path))
        assert.are.equal("TAR", import.body)
        assert.are.equal("application/x-tar", import.headers["Content-Type"])
        local created = json.decode(fake:find("POST", "/volumes/create")[1].body)
        assert.are.same({ Name = "agent-v", Labels = LABELS }, created)
        -- the fill container: of the imported image, mounting the volume with NoCopy (nothing of the image is
        -- copied in by Docker; the volume holds only what the upload puts there)
        local fill = fake:find("POST", "/containers/create")[1]
        assert.are.same({ name = "agent-v-fill" }, query_of(fill.path))
        local body = json.decode(fill.body)
        assert.are.equal("opensandbox-agent-fill:agent-v", body.Image)
        assert.are.same(LABELS, body.Labels)
        assert.are.same({ { Type = "volume", Source = "agent-v", Target = "/opt/opensandbox",
            VolumeOptions = { NoCopy = true } } }, body.HostConfig.Mounts)
        assert.is_nil(body.HostConfig.Binds)
        assert.are.equal("TAR", fake:find("PUT", "/containers/f1/archive")[1].body)
        assert.are.same({ force = "true", v = "true" },
            query_of(fake:find("DELETE", "^/v1%.41/containers/f1%?")[1].path))
        assert.are.same({ force = "true" }, query_of(fake:find("DELETE", "/images/")[1].path))
        assert.are.equal(0, #fake:find("DELETE", "/volumes/"))
    end)

    it("replaces a volume Docker made empty, and one whose fill never finished", function()
        for _, case in ipairs({
            { labels = "null", fill = { status = 404, body = "{}" } },
            { labels = '{"opensandbox.io/agent":"true"}', fill = { body = '{"Id":"old"}' } },
        }) do
            local a, fake = make()
            fake:on("GET", VOL, { body = '{"Labels":' .. case.labels .. "}" })
            fake:on("GET", FILL, case.fill)
            fake:on("DELETE", "^/v1%.41/containers/agent%-v%-fill%?", { status = 204 })
            fake:on("DELETE", VOL, { status = 204 })
            fill_rules(fake)
            assert.is_true(a:ensure_volume("agent-v", "TAR", LABELS))
            assert.are.equal(1, #fake:find("DELETE", VOL))
            assert.are.equal(1, #fake:find("DELETE", "^/v1%.41/containers/agent%-v%-fill%?"))
            assert.are.equal(1, #fake:find("POST", "/images/create%?fromSrc="))
            assert.are.equal(1, #fake:find("POST", "/volumes/create"))
            assert.are.equal(1, #fake:find("PUT", "/containers/f1/archive"))
            assert.are.equal(1, #fake:find("DELETE", "^/v1%.41/containers/f1%?"))
            assert.are.equal(1, #fake:find("DELETE", "^/v1%.41/images/" .. IMAGE_REF))
            -- the old volume goes before the new one is made
            local seq = sequence(fake)
            local del, make_vol
            for i, s in ipairs(seq) do
                if s == "DELETE /v1.41/volumes/agent-v" then
                    del = i
                elseif s == "POST /v1.41/volumes/create" then
                    make_vol = i
                end
            end
            assert.is_true(del < make_vol)
        end
    end)

    it("says so when a bad volume cannot be replaced because something uses it", function()
        local a, fake = make()
        fake:on("GET", VOL, { body = '{"Labels":null}' })
        fake:on("DELETE", "^/v1%.41/containers/agent%-v%-fill%?", { status = 404, body = "{}" })
        fake:on("DELETE", VOL, { status = 409, body = '{"message":"volume is in use - [c9]"}' })
        local ok, err = a:ensure_volume("agent-v", "TAR", LABELS)
        assert.is_nil(ok)
        assert.are.equal("conflict", err.kind)
        assert.are.equal("volume agent-v is incomplete and cannot be replaced: volume is in use - [c9]", err.message)
        assert.are.equal(0, #fake:find("POST", "/volumes/create"))
        assert.are.equal(0, #fake:find("POST", "/images/create"))
    end)

    it("removes unused volumes of earlier bundles: not the current one, a recent one, one taken meanwhile", function()
        local a, fake = make()
        local old, new = "2026-01-01T00:00:00Z", "2026-06-01T00:00:00.5Z"
        fake:on("GET", "^/v1%.41/volumes%?filters=", { body = json.encode({ Volumes = {
            { Name = "agent-old1", CreatedAt = old }, { Name = "agent-v", CreatedAt = old },
            { Name = "agent-old2", CreatedAt = old }, { Name = "agent-recent", CreatedAt = new },
            { Name = "agent-nodate" } } }) })
        fake:on("DELETE", "^/v1%.41/volumes/agent%-old1$", { status = 204 })
        fake:on("DELETE", "^/v1%.41/volumes/agent%-old2$", { status = 409, body = '{"message":"volume is in use"}' })
        local cutoff = 1780000000 * 1000000 -- 2026-05-28
        assert.are.equal(1, a:remove_unused_volumes("opensandbox.io/agent=true", "agent-v", cutoff))
        local q = query_of(fake.requests[1].path)
        assert.are.same({ label = { "opensandbox.io/agent=true" }, dangling = { "true" } }, json.decode(q.filters))
        assert.are.equal(2, #fake:find("DELETE", "/volumes/"))
        assert.are.equal(0, #fake:find("DELETE", "/volumes/agent%-v$"))
        assert.are.equal(0, #fake:find("DELETE", "/volumes/agent%-recent$"))
    end)

    it("does not take a failed look at the fill container for a leftover one", function()
        local a, fake = make()
        fake:on("GET", VOL, { body = '{"Labels":{"opensandbox.io/agent":"true"}}' })
        fake:on("GET", FILL, { status = 500, body = '{"message":"daemon busy"}' })
        local ok, err = a:ensure_volume("agent-v", "TAR", LABELS)
        assert.is_nil(ok)
        assert.are.equal("daemon busy", err.message)
        assert.are.equal(0, #fake:find("DELETE", "/volumes/"))
        assert.are.equal(0, #fake:find("POST", "/images/create"))
    end)

    it("removes the volume, the fill container and the image again when the fill fails", function()
        local a, fake = make()
        fake:on("GET", VOL, { status = 404, body = "{}" })
        fill_rules(fake)
        fake:on("PUT", "^/v1%.41/containers/f1/archive", { status = 500, body = '{"message":"disk full"}' })
        fake:on("DELETE", VOL, { status = 204 })
        local ok, err = a:ensure_volume("agent-v", "TAR", LABELS)
        assert.is_nil(ok)
        assert.matches("disk full", err.message)
        assert.are.equal(1, #fake:find("DELETE", VOL))
        assert.are.equal(1, #fake:find("DELETE", "^/v1%.41/containers/f1%?"))
        assert.are.equal(1, #fake:find("DELETE", "^/v1%.41/images/" .. IMAGE_REF))
    end)

    it("fails before making the volume when the image cannot be imported, with Docker's message", function()
        for _, case in ipairs({
            -- refused outright: Docker's message is in the (streamed) body
            { reply = { status = 500, body = '{"message":"Error processing tar file(exit status 1): unexpected EOF"}' },
              message = "Error processing tar file(exit status 1): unexpected EOF", status = 500 },
            -- an error line under HTTP 200
            { reply = { status = 200,
                chunks = { '{"status":"x"}\n{"errorDetail":{"mess', 'age":"no space"},"error":"e"}\n' } },
              message = "no space", status = 200 },
        }) do
            local a, fake = make()
            fake:on("GET", VOL, { status = 404, body = "{}" })
            fill_rules(fake)
            fake:on("POST", "^/v1%.41/images/create%?fromSrc=%-&", case.reply)
            local ok, err = a:ensure_volume("agent-v", "TAR", LABELS)
            assert.is_nil(ok)
            assert.are.same({ "api", case.status, case.message }, { err.kind, err.status, err.message })
            assert.are.equal(0, #fake:find("POST", "/volumes/create"))
            assert.are.equal(0, #fake:find("POST", "/containers/create"))
        end
    end)

    it("waits for another server's fill in progress (a young fill container) and takes its volume", function()
        local a, fake = make({ sleep = function() end })
        local young = timefmt.format(os.time() * 1000000 - 2000000)
        fake:on("GET", VOL, { body = '{"Labels":{"opensandbox.io/agent":"true"}}' })
        fake:on("GET", FILL, { status = 404, body = "{}" })
        fake:on("GET", FILL, { body = json.encode({ Id = "theirs", Created = young }), times = 3 })
        assert.is_true(a:ensure_volume("agent-v", "TAR", LABELS))
        assert.are.equal(0, #fake:find("DELETE", "/containers/"))
        assert.are.equal(0, #fake:find("DELETE", VOL))
        assert.are.equal(0, #fake:find("POST", "/images/create"))
    end)

    it("waits for another server's fill when the fill container's name is taken under it", function()
        local a, fake = make({ sleep = function() end })
        fake:on("GET", VOL, { status = 404, body = "{}" })
        fill_rules(fake)
        fake:on("POST", "^/v1%.41/containers/create%?name=agent%-v%-fill$", { status = 409,
            body = '{"message":"Conflict. The container name \\"/agent-v-fill\\" is already in use"}' })
        fake:on("GET", FILL, { status = 404, body = "{}" })
        fake:on("GET", FILL, { body = '{"Id":"theirs"}', times = 2 })
        fake:on("GET", VOL, { body = '{"Labels":{"opensandbox.io/agent":"true"}}' })
        fake:on("GET", VOL, { status = 404, body = "{}", times = 1 })
        assert.is_true(a:ensure_volume("agent-v", "TAR", LABELS))
        assert.are.equal(0, #fake:find("PUT", "/archive"))
        assert.are.equal(0, #fake:find("DELETE", VOL), "the other server's volume is kept")
    end)

    it("removes the image and the volume when the fill container cannot be created", function()
        local a, fake = make()
        fake:on("GET", VOL, { status = 404, body = "{}" })
        fill_rules(fake)
        fake:on("POST", "^/v1%.41/containers/create%?name=agent%-v%-fill$", { status = 500, body = '{"message":"no"}' })
        fake:on("DELETE", VOL, { status = 204 })
        local ok, err = a:ensure_volume("agent-v", "TAR", LABELS)
        assert.is_nil(ok)
        assert.are.equal("no", err.message)
        assert.are.equal(0, #fake:find("PUT", "/archive"))
        assert.are.equal(1, #fake:find("DELETE", VOL))
        assert.are.equal(1, #fake:find("DELETE", "^/v1%.41/images/" .. IMAGE_REF))
    end)
end)
