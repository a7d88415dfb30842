-- Volumes in the runtimes' pure mappings: Docker's HostConfig.Mounts (binds of resolved host paths, named
-- volumes, Subpath), the volumes label an adopting server reads back, and the Kubernetes pod's volumes and
-- volumeMounts (hostPath, persistentVolumeClaim, subPath, readOnly) and a created claim.
local json = require("common.json")
local volumes = require("sandbox.volumes")
local dmap = require("runtimes.docker.mapping")
local kmap = require("runtimes.kubernetes.mapping")

local VOLS = assert(volumes.validate({
    { name = "data", mountPath = "/mnt/data", host = { path = "/srv/x/../y" }, readOnly = true },
    { name = "cache", mountPath = "/cache", pvc = { claimName = "shared", storage = "2Gi",
        accessModes = { "ReadWriteMany" }, storageClass = "fast" }, subPath = "a/b" },
    { name = "plain", mountPath = "/plain", pvc = { claimName = "plain" } },
}))
VOLS[4] = assert(volumes.validate({ { name = "hs", mountPath = "/hs", host = { path = "/srv" }, subPath = "y" } }))[1]
VOLS[1].source = "/srv/y" -- as resolve_hosts sets it
VOLS[4].source = "/srv/y" -- (path + subPath, resolved)

describe("runtimes.docker.mapping volumes", function()
    local function body(vols, agent_volume)
        return assert(json.decode(dmap.create_body({ id = "11111111-2222-4333-8444-555555555555",
            image_uri = "busybox", entrypoint = { "sh" }, created_us = 1700000000000000, expires_us = 1700000600000000,
            metadata = {}, volumes = vols, agent_volume = agent_volume }, {})))
    end

    it("mounts binds of the resolved host path and named volumes, after the agent volume", function()
        local b = body(VOLS, "agent-vol")
        assert.same({
            { Type = "volume", Source = "agent-vol", Target = "/opt/opensandbox", ReadOnly = true,
                VolumeOptions = { NoCopy = true } },
            { Type = "bind", Source = "/srv/y", Target = "/mnt/data", ReadOnly = true },
            { Type = "volume", Source = "shared", Target = "/cache", ReadOnly = false,
                VolumeOptions = { Subpath = "a/b" } },
            { Type = "volume", Source = "plain", Target = "/plain", ReadOnly = false },
            { Type = "bind", Source = "/srv/y", Target = "/hs", ReadOnly = false },
        }, b.HostConfig.Mounts)
        assert.is_true(dmap.uses_subpath({ volumes = VOLS }))
        assert.is_false(dmap.uses_subpath({ volumes = { VOLS[1], VOLS[3], VOLS[4] } }))
        assert.is_nil(body(nil).HostConfig.Mounts)
    end)

    it("keeps the volumes in a label, which decodes back to them", function()
        local b = body(VOLS)
        assert.same(json.decode(json.encode(VOLS)), json.decode(b.Labels[dmap.LABEL_VOLUMES]))
        assert.is_nil(body({}).Labels[dmap.LABEL_VOLUMES])
    end)

    it("refuses a host volume without a resolved source (a programmer error)", function()
        assert.has_error(function()
            dmap.volume_mounts({ { name = "h", mountPath = "/h", host = { path = "/x" } } })
        end)
    end)
end)

describe("runtimes.kubernetes.mapping volumes", function()
    it("adds hostPath and persistentVolumeClaim volumes with their mounts", function()
        local pod = json.decode(json.encode(assert(kmap.pod({ id = "5d41402a-bc4b-4a76-b971-9d911017c592",
            created_us = 1767225600123456, metadata = {} }, { image = { uri = "busybox" }, entrypoint = { "sh" },
            env = {}, volumes = VOLS }, { agent_configmap = "cm" }))))
        local vols, mounts = {}, {}
        for _, v in ipairs(pod.spec.volumes) do
            vols[v.name] = v
        end
        for _, m in ipairs(pod.spec.containers[1].volumeMounts) do
            mounts[m.name] = m
        end
        assert.same({ name = "data", hostPath = { path = "/srv/y" } }, vols.data)
        assert.same({ name = "cache", persistentVolumeClaim = { claimName = "shared" } }, vols.cache)
        assert.same({ name = "data", mountPath = "/mnt/data", readOnly = true }, mounts.data)
        assert.same({ name = "cache", mountPath = "/cache", subPath = "a/b" }, mounts.cache)
        -- a host volume's subPath is in its resolved source already
        assert.same({ name = "hs", hostPath = { path = "/srv/y" } }, vols.hs)
        assert.same({ name = "hs", mountPath = "/hs" }, mounts.hs)
        assert.is_table(vols[kmap.AGENT_VOLUME], "the agent's volume stays")
        assert.is_table(mounts[kmap.AGENT_VOLUME])
    end)

    it("makes a claim with the request's hints, or the defaults", function()
        local c = kmap.claim(VOLS[2], "1Gi", "sb-1", "inst")
        assert.equal("shared", c.metadata.name)
        assert.equal("sb-1", c.metadata.labels[kmap.LABEL_VOLUME_SANDBOX])
        assert.same({ "ReadWriteMany" }, c.spec.accessModes)
        assert.equal("fast", c.spec.storageClassName)
        assert.equal("2Gi", c.spec.resources.requests.storage)
        c = kmap.claim(VOLS[3], "5Gi", "sb-1")
        assert.same({ "ReadWriteOnce" }, c.spec.accessModes)
        assert.is_nil(c.spec.storageClassName)
        assert.equal("5Gi", c.spec.resources.requests.storage)
    end)
end)
