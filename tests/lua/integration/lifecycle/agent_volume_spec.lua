-- Integration: docker.agent_delivery = "volume" (the default): the agent bundle lives in one read-only volume
-- that every sandbox mounts at /opt/opensandbox (no upload per sandbox), filled only from the server's own
-- files (API.md §8.4); the agent answers as usual. And "archive", which uploads it into each container.
local H = require("lifecycle.helpers")

describe("docker.agent_delivery = volume #integration #docker", function()
    setup(function()
        H.ensure_image()
    end)
    teardown(function()
        H.stop_all()
    end)

    -- the agent answers /ping in sandbox `id`: its bootstrap and binary came from the volume
    local function agent_answers(srv, id)
        local ep = H.call(srv, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772").json
        for _ = 1, 100 do
            local res = H.curl({ url = "http://" .. ep.endpoint .. "/ping",
                headers = { ["X-EXECD-ACCESS-TOKEN"] = ep.headers["X-EXECD-ACCESS-TOKEN"] }, timeout = 2 })
            if res and res.status == 200 then
                return true
            end
            H.sleep(0.1)
        end
        return false
    end

    it("mounts one shared agent volume read-only and the agent answers", function()
        -- an unused agent volume of another bundle, made just now (say, by another server on this daemon):
        -- kept, since only those over an hour old are removed (runtimes/docker_spec covers the removal)
        local old = "opensandbox-agent-spec-other-bundle"
        local out, made = H.run("docker volume create --label opensandbox.io/agent=true " .. old)
        assert.is_true(made, out)
        local srv = H.start({ config = { docker = { agent_delivery = "volume" } } })
        -- two concurrent creates share one fill
        local a = H.create(srv)
        local b = H.create(srv)
        H.wait_state(srv, a, "Running")
        H.wait_state(srv, b, "Running")
        local ia, ib = H.inspect("sandbox-" .. a), H.inspect("sandbox-" .. b)
        local ma, mb = ia.Mounts[1], ib.Mounts[1]
        assert.are.equal("volume", ma.Type)
        assert.are.equal("/opt/opensandbox", ma.Destination)
        assert.is_false(ma.RW)
        assert.are.equal(ma.Name, mb.Name)
        assert.truthy(ma.Name:match("^opensandbox%-agent%-%x+$"), ma.Name)
        -- the fill container is gone
        assert.is_false(H.container_exists(ma.Name .. "-fill"))
        assert.is_true(agent_answers(srv, a))
        local _, still = H.run("docker volume inspect " .. old)
        assert.is_true(still, "a recent volume of another bundle is kept")
        H.run("docker volume rm " .. old)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. a).status)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. b).status)
    end)

    it("names the volume after the agent's files: a restarted server finds it and does not refill it", function()
        local first = H.start({ config = { docker = { agent_delivery = "volume" } } })
        local a = H.create_running(first)
        local vol = H.inspect("sandbox-" .. a).Mounts[1].Name
        local created = H.run("docker volume inspect -f '{{.CreatedAt}}' " .. H.quote(vol))
        assert.are.equal(204, H.call(first, "DELETE", "/v1/sandboxes/" .. a).status)
        first:stop()
        H.sleep(1.1) -- a tar built now would carry another mtime
        local second = H.start({ config = { docker = { agent_delivery = "volume" } } })
        local b = H.create_running(second)
        assert.are.equal(vol, H.inspect("sandbox-" .. b).Mounts[1].Name)
        assert.are.equal(created, H.run("docker volume inspect -f '{{.CreatedAt}}' " .. H.quote(vol)))
        assert.are.equal(204, H.call(second, "DELETE", "/v1/sandboxes/" .. b).status)
    end)

    it("makes the volume again when it was removed, or replaced by an empty one, behind its back", function()
        local srv = H.start({ config = { docker = { agent_delivery = "volume" } } })
        local a = H.create_running(srv)
        local vol = H.inspect("sandbox-" .. a).Mounts[1].Name
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. a).status)

        -- what `docker volume prune` does once no sandbox uses it
        local out, ok = H.run("docker volume rm " .. H.quote(vol))
        assert.is_true(ok, out)
        local b = H.create_running(srv)
        assert.is_true(agent_answers(srv, b))
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. b).status)

        -- an empty, unlabelled volume of that name: what Docker makes by itself for a container that names a
        -- missing volume (a create that raced the removal)
        out, ok = H.run("docker volume rm " .. H.quote(vol) .. " && docker volume create " .. H.quote(vol))
        assert.is_true(ok, out)
        local c = H.create_running(srv)
        assert.is_true(agent_answers(srv, c))
        out = H.run("docker volume inspect -f '{{json .Labels}}' " .. H.quote(vol))
        assert.are.same({ ["opensandbox.io/agent"] = "true" }, H.json.decode(out))
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. c).status)
    end)

    it("is the default, mounted with NoCopy, and filled only from the server's files, not a user's image", function()
        -- a user image that carries files where the agent volume goes: before API.md §8.4 was tightened the
        -- volume was filled through a container of the first sandbox's image, whose /opt/opensandbox Docker
        -- copied into the new volume (and so into every other tenant's sandbox)
        local planter = "opensandbox-spec-planter"
        H.run("docker rm -f " .. planter)
        local out, ok = H.run("docker run --name " .. planter .. " --label opensandbox.test=1 local/busybox:latest " ..
            "sh -c 'mkdir -p /opt/opensandbox && echo planted > /opt/opensandbox/planted && " ..
            "printf \"#!/bin/sh\\necho owned\\n\" > /opt/opensandbox/bootstrap.sh' && " ..
            "docker commit " .. planter .. " local/planted:latest && docker rm -f " .. planter)
        assert.is_true(ok, out)
        -- no agent volume yet, so the first create below fills it
        local vols = H.run("docker volume ls -q --filter label=opensandbox.io/agent=true")
        for v in vols:gmatch("%S+") do
            H.run("docker volume rm " .. H.quote(v))
        end
        local srv = H.start({})
        local a = H.create(srv, { image = { uri = "local/planted:latest" } })
        H.wait_state(srv, a, "Running")
        local m = H.inspect("sandbox-" .. a).HostConfig.Mounts[1]
        assert.are.equal("/opt/opensandbox", m.Target)
        assert.is_true(m.ReadOnly)
        assert.is_true(m.VolumeOptions.NoCopy)
        assert.is_true(agent_answers(srv, a))
        out = H.run("docker run --rm --label opensandbox.test=1 -v " .. H.quote(m.Source) ..
            ":/v:ro local/busybox:latest sh -c 'ls /v; grep -c owned /v/bootstrap.sh'")
        assert.is_nil(out:find("planted", 1, true), out)
        assert.truthy(out:find("execd", 1, true), out)
        assert.truthy(out:find("bootstrap.sh", 1, true), out)
        assert.truthy(out:match("\n0%s*$"), "the bootstrap is ours: " .. out)
        -- and no image of ours is left from the fill
        assert.are.equal("", (H.run("docker images -q opensandbox-agent-fill")))
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. a).status)
        H.run("docker rmi local/planted:latest")
    end)

    it("archive: uploads the agent into each container, which mounts nothing", function()
        local srv = H.start({ config = { docker = { agent_delivery = "archive" } } })
        local a = H.create_running(srv)
        local ins = H.inspect("sandbox-" .. a)
        assert.are.equal(0, #(ins.Mounts or {}))
        assert.is_true(agent_answers(srv, a))
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. a).status)
    end)
end)
