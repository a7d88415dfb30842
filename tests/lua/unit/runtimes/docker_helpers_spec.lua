-- Unit specs of the Docker adapter's small helpers: tar writer, image references, registry auth, time
-- text and the line splitter.
local tar = require("runtimes.docker.tar")
local imageref = require("runtimes.docker.imageref")
local registry_auth = require("runtimes.docker.registry_auth")
local timefmt = require("common.timefmt")
local lines = require("runtimes.docker.lines")
local json = require("common.json")

local function write_tmp(bytes)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(bytes)
    f:close()
    return path
end

local function run(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("a")
    local ok = p:close()
    return out, ok
end

describe("runtimes.docker.tar", function()
    local MTIME = 1700000000 -- 2023-11-14T22:13:20Z

    it("writes an archive GNU tar lists with modes, owners, sizes and times", function()
        local w = tar.new()
        w:dir("opt/opensandbox", { mode = tonumber("755", 8), mtime = MTIME })
        w:file("opt/opensandbox/bootstrap.sh", "#!/bin/sh\nexec \"$@\"\n", { mode = tonumber("755", 8), mtime = MTIME })
        w:file("opt/opensandbox/data.txt", "", { mode = tonumber("640", 8), mtime = MTIME })
        local bytes = w:finish()
        assert.are.equal(0, #bytes % 512)
        local path = write_tmp(bytes)
        local out, ok = run("TZ=UTC tar --numeric-owner -tvf " .. path)
        os.remove(path)
        assert.is_true(ok, out)
        assert.are.same({
            "drwxr-xr-x 0/0 0 2023-11-14 22:13 opt/opensandbox/",
            "-rwxr-xr-x 0/0 20 2023-11-14 22:13 opt/opensandbox/bootstrap.sh",
            "-rw-r----- 0/0 0 2023-11-14 22:13 opt/opensandbox/data.txt",
        }, (function()
            local rows = {}
            for line in out:gmatch("[^\n]+") do
                rows[#rows + 1] = (line:gsub("%s+", " "))
            end
            return rows
        end)())
    end)

    it("round-trips file content, including a size that is a multiple of 512", function()
        local big = string.rep("x", 1024)
        local bytes = tar.archive({
            { path = "a/one", content = "hello\n", mode = 420 },
            { path = "a/two", content = big, mode = 420 },
        })
        local path = write_tmp(bytes)
        local one = run("tar -xOf " .. path .. " a/one")
        local two = run("tar -xOf " .. path .. " a/two")
        os.remove(path)
        assert.are.equal("hello\n", one)
        assert.are.equal(big, two)
        -- header + 512 (hello) + header + 1024 + two zero blocks
        assert.are.equal(512 + 512 + 512 + 1024 + 1024, #bytes)
    end)

    it("computes the header checksum over the header with the field as spaces", function()
        local bytes = tar.archive({ { path = "f", content = "x", mtime = MTIME } })
        local header = bytes:sub(1, 512)
        local sum = 0
        for i = 1, 512 do
            sum = sum + ((i >= 149 and i <= 156) and 32 or header:byte(i))
        end
        assert.are.equal(string.format("%06o\0 ", sum), header:sub(149, 156))
        assert.are.equal("ustar\00000", header:sub(258, 265))
        assert.are.equal(string.rep("\0", 1024), bytes:sub(-1024))
    end)

    it("splits long names into prefix and name", function()
        local long = string.rep("d", 80) .. "/" .. string.rep("e", 80) .. "/file.txt"
        local path = write_tmp(tar.archive({ { path = long, content = "z" } }))
        local out = run("tar -tf " .. path)
        os.remove(path)
        assert.are.equal(long .. "\n", out)
    end)

    it("strips a leading slash and rejects bad input", function()
        local bytes = tar.archive({ { path = "/abs/file", content = "" } })
        assert.are.equal("abs/file", bytes:sub(1, 8))
        assert.has_error(function()
            tar.new():file("", "x")
        end)
        assert.has_error(function()
            tar.new():file(string.rep("a", 300), "x")
        end)
    end)
end)

describe("runtimes.docker.imageref", function()
    local cases = {
        { "ubuntu", nil, "ubuntu", nil, nil, "ubuntu", "latest" },
        { "ubuntu:22.04", nil, "ubuntu", "22.04", nil, "ubuntu", "22.04" },
        { "library/ubuntu:22.04", nil, "library/ubuntu", "22.04", nil, "library/ubuntu", "22.04" },
        { "localhost/foo", "localhost", "foo", nil, nil, "localhost/foo", "latest" },
        { "127.0.0.1:5000/a/b:1", "127.0.0.1:5000", "a/b", "1", nil, "127.0.0.1:5000/a/b", "1" },
        { "ghcr.io/org/img", "ghcr.io", "org/img", nil, nil, "ghcr.io/org/img", "latest" },
        { "registry:5000/img", "registry:5000", "img", nil, nil, "registry:5000/img", "latest" },
        { "org/img:tag@sha256:" .. string.rep("a", 64), nil, "org/img", "tag", "sha256:" .. string.rep("a", 64),
            "org/img", "sha256:" .. string.rep("a", 64) },
    }
    for _, c in ipairs(cases) do
        it("splits " .. c[1], function()
            local ref = assert(imageref.parse(c[1]))
            assert.are.equal(c[2], ref.registry)
            assert.are.equal(c[3], ref.repository)
            assert.are.equal(c[4], ref.tag)
            assert.are.equal(c[5], ref.digest)
            local from, tag = imageref.pull_params(ref)
            assert.are.equal(c[6], from)
            assert.are.equal(c[7], tag)
        end)
    end

    it("applies the serveraddress rule of §8.5", function()
        assert.are.equal("https://index.docker.io/v1/", imageref.server_address(imageref.parse("ubuntu")))
        assert.are.equal("https://index.docker.io/v1/", imageref.server_address(imageref.parse("org/img:1")))
        assert.are.equal("localhost", imageref.server_address(imageref.parse("localhost/img")))
        assert.are.equal("my.reg", imageref.server_address(imageref.parse("my.reg/img")))
        assert.are.equal("reg:5000", imageref.server_address(imageref.parse("reg:5000/img")))
        -- a registry-looking single component is a repository, not a host
        assert.are.equal("https://index.docker.io/v1/", imageref.server_address(imageref.parse("my.img")))
    end)

    it("rejects empty parts", function()
        assert.is_nil(imageref.parse(""))
        assert.is_nil(imageref.parse("img:"))
        assert.is_nil(imageref.parse("img@"))
    end)
end)

describe("runtimes.docker.registry_auth", function()
    it("encodes base64url with padding", function()
        assert.are.equal("", registry_auth.base64url(""))
        assert.are.equal("Zg==", registry_auth.base64url("f"))
        assert.are.equal("Zm8=", registry_auth.base64url("fo"))
        assert.are.equal("Zm9v", registry_auth.base64url("foo"))
        -- bytes that give + and / in the standard alphabet
        assert.are.equal("-_-_", registry_auth.base64url("\251\255\191"))
        assert.are.equal("+/+/", registry_auth.base64("\251\255\191"))
    end)

    it("builds the X-Registry-Auth JSON", function()
        local h = registry_auth.header({ username = "u", password = "p?>~" }, "reg:5000")
        assert.is_nil(h:find("[+/]"))
        local out = run("printf '%s' '" .. h .. "' | tr '_-' '/+' | base64 -d")
        assert.are.same({ username = "u", password = "p?>~", serveraddress = "reg:5000" }, json.decode(out))
    end)
end)

describe("common.timefmt for runtime timestamps", function()
    it("parses Docker's nanosecond timestamps to microseconds", function()
        assert.are.equal(1700000000123456, timefmt.parse_runtime("2023-11-14T22:13:20.123456789Z"))
        assert.are.equal(1700000000000000, timefmt.parse_runtime("2023-11-14T22:13:20Z"))
        assert.are.equal(1700000000100000, timefmt.parse_runtime("2023-11-14T23:13:20.1+01:00"))
        assert.is_nil(timefmt.parse_runtime("0001-01-01T00:00:00Z"))
        assert.is_nil(timefmt.parse_runtime(""))
        assert.is_nil(timefmt.parse_runtime("garbage"))
    end)

    it("formats microseconds with six digits", function()
        assert.are.equal("2023-11-14T22:13:20.000001Z", timefmt.format(1700000000000001))
        assert.are.equal("1970-01-01T00:00:00.000000Z", timefmt.format(0))
        assert.are.equal("2024-02-29T12:00:00.500000Z", timefmt.format(timefmt.parse_runtime("2024-02-29T12:00:00.5Z")))
        assert.are.equal("9999-12-31T23:59:59.000000Z", timefmt.format(timefmt.parse_runtime("9999-12-31T23:59:59Z")))
    end)
end)

describe("runtimes.docker.lines", function()
    it("splits lines across chunk boundaries", function()
        local got = {}
        local s = lines.new(function(l)
            got[#got + 1] = l
        end)
        s:feed('{"a"')
        s:feed(':1}\r\n{"b":2}\n\n{"c"')
        s:feed(":3}")
        assert.are.same({ '{"a":1}', '{"b":2}' }, got)
        s:finish()
        assert.are.same({ '{"a":1}', '{"b":2}', '{"c":3}' }, got)
    end)

    it("drops a line longer than the limit", function()
        local got = {}
        local s = lines.new(function(l)
            got[#got + 1] = l
        end, 8)
        s:feed("0123456789")
        s:feed("abc\nok\n")
        assert.are.same({ "ok" }, got)
    end)
end)

describe("runtimes.docker.tar.entries", function()
    it("reads back what the writer wrote", function()
        local bytes = tar.archive({
            { path = "opt/x", dir = true },
            { path = "opt/x/a.sh", content = "#!/bin/sh\necho hi\n", mode = tonumber("755", 8) },
            { path = "big", content = string.rep("z", 1000) },
        })
        local e = assert(tar.entries(bytes))
        assert.are.equal(3, #e)
        assert.are.same({ "opt/x/", "dir" }, { e[1].path, e[1].type })
        assert.are.same({ "opt/x/a.sh", "file", tonumber("755", 8), "#!/bin/sh\necho hi\n" },
            { e[2].path, e[2].type, e[2].mode, e[2].content })
        assert.are.equal(string.rep("z", 1000), e[3].content)
    end)
    it("rejects a truncated archive", function()
        local bytes = tar.archive({ { path = "f", content = string.rep("y", 2000) } })
        local e, err = tar.entries(bytes:sub(1, 1024))
        assert.is_nil(e)
        assert.truthy(err:find("truncated", 1, true))
    end)
end)
