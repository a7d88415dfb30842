-- Unit specs of the Docker runtime's snapshot methods (lua/runtimes/docker/init.lua "snapshots", and the
-- engine's lua/runtimes/docker/snapshots.lua) through the real engine on the fake Engine API client: the
-- commit request (not paused, reserved labels and the agent token blanked), the never-pulled image of a
-- sandbox made from a snapshot, state and removal of snapshot images, and the reserved image name.
package.path = "tests/lua/unit/runtimes/?.lua;" .. package.path
package.loaded["core.sync"] = package.loaded["core.sync"] or {}

local docker_runtime = require("runtimes.docker")
local mapping = require("runtimes.docker.mapping")
local json = require("common.json")
local fake_client = require("support.fake_client")

local ID = "5d41402a-bc4b-4a76-b971-9d911017c592"
local SNAP = "0b6f3c1e-2a4d-4f6b-9c1d-3e5f7a9b1c2d"

local FILES = {
    get = function()
        return { bootstrap = "#!/bin/sh\nexec \"$@\"\n", execd = "\127ELF agent" }
    end,
    tag = function()
        return "t1"
    end,
}

local function make()
    local fake = fake_client.new()
    local t = 1000
    local rt = docker_runtime.new({ docker = { instance = "i1", agent_delivery = "archive" }, runtime = {} },
        { client = fake, agent_files = FILES, core = { now_s = function()
            t = t + 0.25
            return t
        end, uuid = { v4 = function() return "u" end } } })
    return rt, fake
end

local function container_json(labels)
    return json.encode({
        Id = "c1", Name = "/sandbox-" .. ID,
        State = { Status = "running", Running = true, StartedAt = "2026-01-01T00:00:00.123456789Z" },
        Config = { Image = "busybox:1", Labels = labels },
        NetworkSettings = { Networks = { bridge = { IPAddress = "172.17.0.7" } }, Ports = {} },
    })
end

describe("runtimes.docker snapshots", function()
    it("declares snapshots and commits the running container without pausing it", function()
        local rt, fake = make()
        assert.is_true(rt.capabilities.snapshots)
        local labels = mapping.labels_for({ id = ID, created_us = 1, expires_us = 2, metadata = { team = "a" },
            principal = "alice" })
        labels["opensandbox.io/instance"] = "i1"
        labels["maintainer"] = "someone"
        fake:on("GET", "^/v1%.41/containers/c1/json$", { body = container_json(labels) })
        fake:on("POST", "^/v1%.41/commit%?", { status = 201, body = '{"Id":"sha256:abc"}' })
        local res = assert(rt:snapshot({ id = ID, handle = "c1" }, { id = SNAP, sandbox_id = ID }))
        assert.are.equal("opensandbox-snapshots:" .. SNAP, res.image)
        assert.are.equal(250, res.ms)
        local req = fake:find("POST", "/commit")[1]
        assert.are.equal("/v1.41/commit?container=c1&repo=opensandbox-snapshots&tag=" .. SNAP .. "&pause=false",
            req.path)
        assert.are.equal(180 * 10, req.timeout)
        local body = json.decode(req.body)
        -- every reserved label of the container is blanked (a sandbox made from the image must not inherit
        -- the source's identity, expiry, metadata or principal); the image names its snapshot and owner
        assert.are.equal("", body.Labels["opensandbox.io/id"])
        assert.are.equal("", body.Labels["opensandbox.io/expires-at"])
        assert.are.equal("", body.Labels["opensandbox.io/metadata"])
        assert.are.equal("", body.Labels["opensandbox.io/principal"])
        assert.are.equal(SNAP, body.Labels["opensandbox.io/snapshot-id"])
        assert.are.equal(ID, body.Labels["opensandbox.io/snapshot-of"])
        assert.are.equal("i1", body.Labels["opensandbox.io/instance"])
        assert.is_nil(body.Labels.maintainer, "other labels are left as the container has them")
        assert.are.same({ "EXECD_ACCESS_TOKEN=" }, body.Env)
    end)

    it("passes the engine's error on when the commit fails", function()
        local rt, fake = make()
        fake:on("GET", "^/v1%.41/containers/c1/json$", { body = container_json({}) })
        fake:on("POST", "^/v1%.41/commit%?", { status = 500, body = '{"message":"no space left on device"}' })
        local res, err = rt:snapshot({ id = ID, handle = "c1" }, { id = SNAP, sandbox_id = ID })
        assert.is_nil(res)
        assert.are.equal("no space left on device", err.message)
    end)

    it("tells whether a snapshot image exists, and removes it unforced (409 while in use)", function()
        local rt, fake = make()
        local ref = "opensandbox-snapshots:" .. SNAP
        fake:on("GET", "^/v1%.41/images/opensandbox%-snapshots:" .. SNAP:gsub("%-", "%%-") .. "/json$",
            { body = "{}" })
        assert.are.same({ state = "ready", image = ref }, rt:snapshot_state({ id = SNAP }))
        fake:on("GET", "^/v1%.41/images/", { status = 404, body = '{"message":"No such image"}' })
        assert.are.same({ state = "missing" }, rt:snapshot_state({ id = SNAP }))
        fake:on("DELETE", "^/v1%.41/images/", { status = 409,
            body = '{"message":"conflict: unable to remove repository reference (must force)"}', times = 1 })
        local ok, err = rt:delete_snapshot({ id = SNAP, image = ref })
        assert.is_nil(ok)
        assert.are.equal("conflict", err.kind)
        assert.are.equal("/v1.41/images/" .. ref, fake:find("DELETE", "/images/")[1].path)
        fake:on("DELETE", "^/v1%.41/images/", { status = 404, body = '{"message":"No such image"}' })
        assert.is_true(rt:delete_snapshot({ id = SNAP, image = ref }))
    end)

    it("reserves the snapshot repository in every spelling", function()
        local rt = make()
        for _, uri in ipairs({ "opensandbox-snapshots:x", "opensandbox-snapshots", "library/opensandbox-snapshots:x",
            "docker.io/library/opensandbox-snapshots:x", "index.docker.io/library/opensandbox-snapshots@sha256:"
            .. string.rep("a", 64) }) do
            assert.is_true(rt:is_snapshot_image(uri), uri)
        end
        for _, uri in ipairs({ "busybox", "example.com/opensandbox-snapshots:x", "me/opensandbox-snapshots:x" }) do
            assert.is_false(rt:is_snapshot_image(uri), uri)
        end
    end)

    it("provisions from a snapshot image without ever pulling it, labelled with the snapshot", function()
        local rt, fake = make()
        local ref = "opensandbox-snapshots:" .. SNAP
        fake:on("GET", "^/v1%.41/images/opensandbox%-snapshots", { status = 404, body = '{"message":"No such image"}' })
        local sandbox = { id = ID, created_us = 1767225600000001, expires_us = 1767229200000001, metadata = {},
            access_token = "tok", snapshot_id = SNAP }
        local spec = { image = { uri = ref }, entrypoint = { "tail", "-f", "/dev/null" }, env = {},
            snapshot_id = SNAP }
        local placed, err = rt:provision(sandbox, spec)
        assert.is_nil(placed)
        assert.are.equal("image", err.step)
        assert.matches("the image of snapshot " .. SNAP:gsub("%-", "%%-") .. " is gone", err.message)
        assert.are.equal(0, #fake:find("POST", "/images/create"), "never pulled")
        -- present: created (no create_from_image re-pull path), started, labelled
        fake:on("GET", "^/v1%.41/images/opensandbox%-snapshots", { body = "{}" })
        fake:on("POST", "^/v1%.41/containers/create%?name=sandbox%-", { status = 201, body = '{"Id":"c1"}' })
        fake:on("PUT", "^/v1%.41/containers/c1/archive", { status = 200 })
        fake:on("POST", "^/v1%.41/containers/c1/start$", { status = 204 })
        fake:on("GET", "^/v1%.41/containers/c1/json$", { body = container_json({ ["opensandbox.io/id"] = ID }) })
        placed = assert(rt:provision(sandbox, spec))
        assert.are.equal("c1", placed.handle)
        local body = json.decode(fake:find("POST", "name=sandbox%-")[1].body)
        assert.are.equal(ref, body.Image)
        assert.are.equal(SNAP, body.Labels["opensandbox.io/snapshot-id"])
        assert.are.same({ "tail", "-f", "/dev/null" }, body.Cmd)
        assert.are.equal(0, #fake:find("POST", "/images/create"), "never pulled")
    end)

    it("reads a sandbox made from a snapshot back from its labels, blank inherited labels as absent", function()
        local rt, fake = make()
        local labels = mapping.labels_for({ id = ID, created_us = 1767225600000001, expires_us = 1767229200000001,
            snapshot_id = SNAP })
        labels["opensandbox.io/instance"] = "i1"
        -- inherited from the snapshot image, blanked by the commit
        labels["opensandbox.io/manual-cleanup"] = ""
        labels["opensandbox.io/principal"] = ""
        labels["opensandbox.io/metadata"] = ""
        labels["opensandbox.io/platform-os"] = ""
        fake:on("GET", "^/v1%.41/containers/json%?", { body = json.encode({ { Id = "c1", Names = { "/x" },
            Labels = labels, State = "running" } }) })
        fake:on("GET", "^/v1%.41/containers/c1/json$", { body = container_json(labels) })
        local list = assert(rt:list())
        local s = list[1].sandbox
        assert.are.equal(ID, s.id)
        assert.are.equal(SNAP, s.snapshot_id)
        assert.are.equal(1767229200000001, s.expires_us)
        assert.is_nil(s.principal)
        assert.are.same({}, s.metadata)
        assert.is_nil(s.platform)
    end)
end)
