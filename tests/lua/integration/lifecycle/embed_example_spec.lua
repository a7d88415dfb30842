-- Integration: examples/embed (a C program embedding libopensandbox) against the real Docker daemon. It
-- adds a route and asks it over HTTP while driving the engine from its own poll() loop, creates a sandbox
-- in-process, waits for Running, lists and deletes it, and stops the engine. Checked here: its exit status
-- and report, and that no container of its docker.instance is left behind. The example binary is the one
-- built next to the server under test ($OPENSANDBOX_BIN's directory: build/ or build-asan/).
local H = require("lifecycle.helpers")
local server = require("support.server")

describe("examples/embed #integration #docker", function()
    setup(function()
        H.ensure_image()
    end)

    it("embeds the engine, serves its route, creates and deletes a sandbox in-process", function()
        local bin = server.binary():gsub("[^/]*$", "") .. "embed-example"
        local out, ok = H.run("OPENSANDBOX_ROOT=" .. H.quote(H.root()) .. " timeout 180 " .. H.quote(bin) .. " "
            .. H.quote(H.IMAGE))
        assert.is_true(ok, out)
        assert.truthy(out:find('GET /embed/hello/world -> {"', 1, true), out)
        assert.truthy(out:find('"hello":"world"', 1, true), out)
        assert.truthy(out:find("embed: create -> 202 ", 1, true), out)
        assert.truthy(out:find("embed: sandbox [%w%-]+ is Running"), out)
        assert.truthy(out:find("embed: list -> 200 (the sandbox is listed)", 1, true), out)
        -- server.nice (default -10) is the binary's: the host program keeps the priority it was started with
        local own = tonumber(H.run("cut -d' ' -f19 /proc/$$/stat"):match("%-?%d+"))
        assert.are.equal("embed: nice " .. own, out:match("embed: nice %-?%d+"), out)
        assert.truthy(out:find("embed: delete -> 204", 1, true), out)
        assert.truthy(out:find("embed: OK", 1, true), out)
        local instance = assert(out:match("as docker instance (embed%-example%-%d+)"), out)
        local left = H.run("docker ps -aq --filter label=opensandbox.io/instance=" .. instance)
        assert.are.equal("", left)
    end)
end)
