-- Integration spec: volumes on create (upstream's Volume schema, API.md §12) against the real binary and the
-- real Docker daemon: host binds under storage.allowed_host_paths (seen and written both ways, readOnly,
-- subPath), Docker named volumes for `pvc` (created and labelled, shared by two sandboxes, removed by
-- deleteOnSandboxTermination only when this server created them, also after a restart), and refused volumes
-- that leave no container and no volume behind.
local H = require("lifecycle.helpers")

describe("volumes #integration #docker", function()
    local root, allowed, outside, srv
    local tag = tostring(math.random(100000, 999999))
    local made_volumes = {} -- every volume name a test may leave behind, removed at the end

    local function vname(what)
        local n = "osbtest-" .. what .. "-" .. tag
        made_volumes[#made_volumes + 1] = n
        return n
    end

    local function volume_exists(name)
        local _, ok = H.run("docker volume inspect " .. H.quote(name))
        return ok
    end

    local function volume_labels(name)
        local out, ok = H.run("docker volume inspect " .. H.quote(name))
        assert(ok, out)
        local labels = H.json.decode(out)[1].Labels
        return type(labels) == "table" and labels or {}
    end

    local function exec(id, cmd)
        return H.run("docker exec " .. H.quote("sandbox-" .. id) .. " sh -c " .. H.quote(cmd))
    end

    local function write(path, text)
        local f = assert(io.open(path, "w"))
        f:write(text)
        f:close()
    end

    local function read(path)
        local f = io.open(path)
        if not f then
            return nil
        end
        local s = f:read("a")
        f:close()
        return s
    end

    local function pvc(name, claim, over)
        local p = { claimName = claim }
        for k, v in pairs(over or {}) do
            p[k] = v
        end
        return { name = name, mountPath = "/" .. name, pvc = p }
    end

    local function delete(id)
        local res = H.call(srv, "DELETE", "/v1/sandboxes/" .. id)
        assert.are.equal(204, res.status, res.body)
        H.wait_gone(srv, id, 60)
    end

    -- a refused create: the 400, and nothing left behind (no new container, the named volumes absent)
    local function refused(vols, code, message, absent_volumes)
        local before = #H.labelled_containers()
        local res = H.create_raw(srv, { volumes = vols })
        H.assert_error(res, 400, code, message)
        assert.are.equal(before, #H.labelled_containers(), "no container was created")
        for _, n in ipairs(absent_volumes or {}) do
            assert.is_false(volume_exists(n), "volume " .. n .. " was not created")
        end
        assert.are.equal(0, H.call(srv, "GET", "/v1/sandboxes").json.pagination.totalItems)
    end

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
        root = (H.run("mktemp -d /tmp/osb-voltest.XXXXXX"):gsub("%s+$", ""))
        allowed, outside = root .. "/allowed", root .. "/outside"
        assert(select(2, H.run(string.format("mkdir -p %s/data/sub %s && ln -s %s %s/escape",
            allowed, outside, outside, allowed))))
        write(allowed .. "/data/hello.txt", "from the host\n")
        write(allowed .. "/data/sub/only.txt", "sub only\n")
        write(outside .. "/secret.txt", "secret\n")
        srv = H.start({ config = { storage = { allowed_host_paths = { allowed } } } })
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
        for _, n in ipairs(made_volumes) do
            H.run("docker volume rm -f " .. H.quote(n))
        end
        if root and root:find("^/tmp/osb%-voltest%.") then
            H.run("rm -rf " .. H.quote(root))
        end
    end)

    it("binds a host directory: files written on the host are read inside, and the other way round", function()
        local id = H.create_running(srv, { volumes = {
            { name = "data", host = { path = allowed .. "/data" }, mountPath = "/mnt/data" },
            { name = "ro", host = { path = allowed .. "/data" }, mountPath = "/mnt/ro", readOnly = true },
            { name = "sub", host = { path = allowed .. "/data" }, subPath = "sub", mountPath = "/mnt/sub" },
        } })
        local out, ok = exec(id, "cat /mnt/data/hello.txt")
        assert.is_true(ok, out)
        assert.are.equal("from the host\n", out)
        out, ok = exec(id, "echo from the sandbox > /mnt/data/back.txt")
        assert.is_true(ok, out)
        assert.are.equal("from the sandbox\n", read(allowed .. "/data/back.txt"))
        -- readOnly is enforced
        out, ok = exec(id, "echo x > /mnt/ro/nope.txt")
        assert.is_false(ok, "a write to a readOnly volume succeeded")
        assert.matches("Read%-only file system", out)
        assert.is_nil(read(allowed .. "/data/nope.txt"))
        assert.are.equal("from the host\n", (exec(id, "cat /mnt/ro/hello.txt")))
        -- subPath mounts only that directory
        out = exec(id, "ls /mnt/sub")
        assert.are.equal("only.txt\n", out)
        local mounts = H.inspect("sandbox-" .. id).Mounts
        local seen = {}
        for _, m in ipairs(mounts) do
            seen[m.Destination] = m
        end
        assert.are.equal(allowed .. "/data/sub", seen["/mnt/sub"].Source)
        assert.is_false(seen["/mnt/ro"].RW)
        assert.is_true(seen["/mnt/data"].RW)
        delete(id)
        assert.are.equal("from the host\n", read(allowed .. "/data/hello.txt"), "host files stay")
    end)

    it("refuses host paths outside the allowed prefixes (directly, via '..', via a symlink, missing)", function()
        local claim = vname("never")
        local function with_host(path, sub)
            return { pvc("first", claim), { name = "h", host = { path = path }, subPath = sub, mountPath = "/h" } }
        end
        refused(with_host(outside), "VOLUME::HOST_PATH_NOT_ALLOWED", function(m)
            return m:find("is not under any allowed prefix", 1, true) ~= nil
        end, { claim })
        refused(with_host(allowed .. "/../outside"), "VOLUME::HOST_PATH_NOT_ALLOWED", nil, { claim })
        refused(with_host(allowed .. "/escape"), "VOLUME::HOST_PATH_NOT_ALLOWED", function(m)
            return m:find("(resolved: '" .. outside .. "')", 1, true) ~= nil
        end, { claim })
        refused(with_host(allowed, "escape"), "VOLUME::HOST_PATH_NOT_ALLOWED", nil, { claim })
        refused(with_host(allowed .. "/missing"), "VOLUME::HOST_PATH_NOT_FOUND", nil, { claim })
        refused({ { name = "h", host = { path = allowed }, subPath = "../outside", mountPath = "/h" } },
            "VOLUME::INVALID_SUB_PATH", "Volume 'h': subPath '../outside' contains '..', which is not allowed.")
        refused({ { name = "o", ossfs = { bucket = "b", endpoint = "e", accessKeyId = "k", accessKeySecret = "s" },
            mountPath = "/o" } }, "VOLUME::UNSUPPORTED_BACKEND",
            "Volume 'o': the ossfs backend is not supported by this server (use host or pvc).")
        refused({ pvc("a", claim), pvc("a", claim) }, "VOLUME::DUPLICATE_NAME", nil, { claim })
    end)

    it("refuses every host volume on a server without storage.allowed_host_paths", function()
        local other = H.start()
        local res = H.create_raw(other, { volumes = { { name = "h", host = { path = allowed }, mountPath = "/h" } } })
        H.assert_error(res, 400, "VOLUME::HOST_PATH_NOT_ALLOWED",
            "Volume 'h': host volumes are disabled on this server (storage.allowed_host_paths is empty).")
        other:stop()
    end)

    it("refuses a pvc that must exist and does not, before creating anything", function()
        local claim, made = vname("absent"), vname("made")
        refused({ pvc("made", made), pvc("absent", claim, { createIfNotExists = false }) }, "VOLUME::PVC_NOT_FOUND",
            "Volume 'absent': Docker named volume '" .. claim .. "' does not exist and createIfNotExists is false.",
            { claim, made })
    end)

    it("answers a subPath on a named volume as this daemon allows (Docker API 1.45 needed)", function()
        local claim = vname("subpath")
        local api = H.run("docker version --format '{{.Server.APIVersion}}'"):gsub("%s+$", "")
        local major, minor = api:match("^(%d+)%.(%d+)")
        local vol = pvc("sp", claim)
        vol.subPath = "inner"
        if tonumber(major) * 1000 + tonumber(minor) < 1045 then
            refused({ vol }, "VOLUME::PVC_SUBPATH_UNSUPPORTED", "Volume 'sp': subPath on a Docker named volume needs "
                .. "Docker Engine API 1.45 (Docker 26) or newer; this daemon serves API " .. api .. ".", { claim })
        else
            assert(select(2, H.run("docker volume create " .. claim)))
            assert(select(2, H.run("docker run --rm -v " .. claim .. ":/v " .. H.IMAGE
                .. " sh -c 'mkdir /v/inner && echo in > /v/inner/f && echo out > /v/g'")))
            local id = H.create_running(srv, { volumes = { vol } })
            assert.are.equal("f\n", (exec(id, "ls /sp")))
            delete(id)
        end
    end)

    it("creates and labels a named volume, shares it between sandboxes, and removes only its own", function()
        local mine, pre = vname("mine"), vname("pre")
        assert(select(2, H.run("docker volume create " .. pre)))
        local a = H.create_running(srv, { volumes = {
            pvc("shared", mine, { deleteOnSandboxTermination = true }),
            pvc("pre", pre, { deleteOnSandboxTermination = true }),
        } })
        local labels = volume_labels(mine)
        assert.are.equal("server", labels["opensandbox.io/volume-managed-by"])
        assert.are.equal(a, labels["opensandbox.io/volume-created-for"])
        assert.is_truthy(labels["opensandbox.io/instance"] and labels["opensandbox.io/instance"] ~= "")
        assert.is_nil(volume_labels(pre)["opensandbox.io/volume-managed-by"])
        local b = H.create_running(srv, { volumes = { pvc("shared", mine, { deleteOnSandboxTermination = true }) } })
        assert.is_true(select(2, exec(a, "echo shared by a > /shared/f")))
        assert.are.equal("shared by a\n", (exec(b, "cat /shared/f")))
        -- a is deleted while b still uses the volume: it stays (in use); the pre-existing one stays anyway
        delete(a)
        assert.is_true(volume_exists(mine))
        assert.is_true(volume_exists(pre))
        assert.are.equal("shared by a\n", (exec(b, "cat /shared/f")))
        -- b is deleted: the server created the volume, b asked for its removal: gone
        delete(b)
        assert.is_false(volume_exists(mine))
        assert.is_true(volume_exists(pre), "a volume the server did not create is never removed")
        -- without deleteOnSandboxTermination, a created volume stays
        local kept = vname("kept")
        local c = H.create_running(srv, { volumes = { pvc("k", kept) } })
        delete(c)
        assert.is_true(volume_exists(kept))
    end)

    it("removes the volumes a create made when the sandbox then fails to start", function()
        local claim = vname("failed")
        write(allowed .. "/afile", "x")
        -- a file bound over a directory of the image: Docker refuses at start
        local id = H.create(srv, { volumes = { pvc("v", claim),
            { name = "f", host = { path = allowed .. "/afile" }, mountPath = "/bin" } } })
        local sb = H.wait_state(srv, id, "Failed", 60)
        assert.matches("SANDBOX_START_FAILED", sb.status.message)
        assert.is_false(volume_exists(claim), "the volume this create made was removed")
        assert.is_false(H.container_exists("sandbox-" .. id))
        H.call(srv, "DELETE", "/v1/sandboxes/" .. id)
    end)

    it("still removes a volume it created after a restart of the server", function()
        local claim = vname("restart")
        local s1 = H.start({ config = { storage = { allowed_host_paths = { allowed } } } })
        local id = H.create(s1, { volumes = { pvc("v", claim, { deleteOnSandboxTermination = true }) } })
        H.wait_state(s1, id, "Running", 60)
        s1:stop()
        local s2 = H.start({ dir = s1.dir, config = { storage = { allowed_host_paths = { allowed } } } })
        assert.are.equal("Running", H.call(s2, "GET", "/v1/sandboxes/" .. id).json.status.state)
        assert.is_true(volume_exists(claim))
        local res = H.call(s2, "DELETE", "/v1/sandboxes/" .. id)
        assert.are.equal(204, res.status, res.body)
        H.wait_gone(s2, id, 60)
        assert.is_false(volume_exists(claim), "the restarted server knew it had created the volume")
        s2:stop()
    end)
end)
