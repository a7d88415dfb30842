-- Integration: volumes on the Kubernetes runtime against the real one-node cluster (tests/k8s/cluster.sh):
-- a `host` volume becomes a hostPath (only under storage.allowed_host_paths), a `pvc` volume the pod's
-- PersistentVolumeClaim (an existing claim bound to a static PersistentVolume, and a claim the server creates
-- with the request's hints, which binds to a waiting static volume: the test cluster has no provisioner),
-- readOnly and subPath become volumeMounts, and refused volumes leave no pod and no claim behind.
local K = require("kubernetes.helpers")
local H = require("lifecycle.helpers")

describe("kubernetes volumes #integration #kubernetes", function()
    local srv, ns, root
    local tag = tostring(math.random(100000, 999999))
    local pvs = {}

    -- runs `cmd` in the sandbox through its agent (server proxy); returns its stdout and stderr lines as
    -- "stdout:..." / "stderr:..." joined by newlines
    local function exec(id, cmd)
        local ep, token
        for _ = 1, 100 do
            local res = H.call(srv, "GET", "/v1/sandboxes/" .. id .. "/endpoints/44772?use_server_proxy=true")
            assert.are.equal(200, res.status, res.body)
            ep, token = res.json.endpoint, res.json.headers and res.json.headers["X-EXECD-ACCESS-TOKEN"]
            local ping = K.curl({ url = "http://" .. ep .. "/ping", headers = { ["X-EXECD-ACCESS-TOKEN"] = token },
                timeout = 2 })
            if ping and ping.status == 200 then
                break
            end
            H.sleep(0.1)
        end
        local res = K.curl({ method = "POST", url = "http://" .. ep .. "/command",
            headers = { ["X-EXECD-ACCESS-TOKEN"] = token, ["Content-Type"] = "application/json" },
            body = H.json.encode({ command = cmd }), timeout = 20 })
        assert.are.equal(200, res.status, res.body)
        local out = {}
        for line in res.body:gmatch("[^\n]+") do
            local ev = H.json.decode(line)
            if type(ev) == "table" and (ev.type == "stdout" or ev.type == "stderr") then
                out[#out + 1] = ev.type .. ":" .. tostring(ev.text):gsub("\n$", "")
            end
        end
        return table.concat(out, "\n")
    end

    local function write(path, text)
        local f = assert(io.open(path, "w"))
        f:write(text)
        f:close()
    end

    local function apply(doc)
        local path = root .. "/manifest-" .. math.random(1, 1e9) .. ".json"
        write(path, H.json.encode(doc))
        local out, ok = K.kubectl("apply -f " .. path)
        assert(ok, out)
    end

    -- a static PersistentVolume on a directory of this host (the node), of its own storage class
    local function pv(name, class)
        local dir = root .. "/" .. name
        assert(select(2, H.run("mkdir -p " .. dir)))
        pvs[#pvs + 1] = name
        apply({ apiVersion = "v1", kind = "PersistentVolume",
            metadata = { name = name, labels = { ["opensandbox.test"] = "1" } },
            spec = { capacity = { storage = "1Gi" }, accessModes = { "ReadWriteOnce" }, storageClassName = class,
                persistentVolumeReclaimPolicy = "Retain", hostPath = { path = dir } } })
        return dir
    end

    local function claim_json(name)
        local out, ok = K.kubectl("-n " .. ns .. " get pvc " .. name .. " -o json")
        return ok and H.json.decode(out) or nil
    end

    setup(function()
        local cfg = K.config()
        root = (H.run("mktemp -d /tmp/osb-k8svol.XXXXXX"):gsub("%s+$", ""))
        assert(select(2, H.run(string.format("mkdir -p %s/allowed/sub %s/outside", root, root))))
        write(root .. "/allowed/hello.txt", "from the host\n")
        write(root .. "/allowed/sub/only.txt", "sub only\n")
        cfg.storage = { allowed_host_paths = { root .. "/allowed" } }
        ns = K.namespace()
        srv = H.start({ config = cfg })
    end)

    teardown(function()
        H.stop_all()
        K.cleanup()
        for _, name in ipairs(pvs) do
            K.kubectl("delete pv " .. name .. " --wait=false")
        end
        if root and root:find("^/tmp/osb%-k8svol%.") then
            H.run("rm -rf " .. H.quote(root))
        end
    end)

    it("mounts a host directory (readOnly, subPath) and an existing claim into the pod", function()
        local class = "osb-static-" .. tag
        local dir = pv("osb-pv-a-" .. tag, class)
        write(dir .. "/in-claim.txt", "in the claim\n")
        apply({ apiVersion = "v1", kind = "PersistentVolumeClaim", metadata = { name = "pre", namespace = ns },
            spec = { accessModes = { "ReadWriteOnce" }, storageClassName = class,
                resources = { requests = { storage = "1Gi" } } } })
        local id = H.create_running(srv, { volumes = {
            { name = "h", host = { path = root .. "/allowed" }, mountPath = "/mnt/h", readOnly = true },
            { name = "s", host = { path = root .. "/allowed" }, subPath = "sub", mountPath = "/mnt/s" },
            { name = "c", pvc = { claimName = "pre", createIfNotExists = false }, mountPath = "/mnt/c" },
        } })
        local out = exec(id, "cat /mnt/h/hello.txt; echo x > /mnt/h/nope || echo WRITE-REFUSED; ls /mnt/s; "
            .. "cat /mnt/c/in-claim.txt; echo from the pod > /mnt/c/back.txt && echo WROTE")
        assert.truthy(out:find("stdout:from the host", 1, true), out)
        assert.truthy(out:find("stdout:WRITE-REFUSED", 1, true), "a readOnly host volume took a write: " .. out)
        assert.truthy(out:find("stdout:only.txt", 1, true), out)
        assert.falsy(out:find("stdout:hello.txt", 1, true), "subPath mounts only the sub-directory: " .. out)
        assert.truthy(out:find("stdout:in the claim", 1, true), out)
        assert.truthy(out:find("stdout:WROTE", 1, true), out)
        assert.is_nil(io.open(root .. "/allowed/nope"))
        local f = assert(io.open(dir .. "/back.txt"))
        assert.are.equal("from the pod\n", f:read("a"))
        f:close()
        local pod = assert(K.pod(id))
        local vols = {}
        for _, v in ipairs(pod.spec.volumes) do
            vols[v.name] = v
        end
        assert.are.equal(root .. "/allowed", vols.h.hostPath.path)
        assert.are.equal("pre", vols.c.persistentVolumeClaim.claimName)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
        assert.is_true(K.wait_pod_gone(id, 60))
        assert.is_table(claim_json("pre"), "an existing claim is never deleted")
    end)

    it("creates a missing claim with the request's hints, labelled with the sandbox", function()
        local class = "osb-static-b-" .. tag
        pv("osb-pv-b-" .. tag, class)
        local id = H.create_running(srv, { volumes = {
            { name = "n", pvc = { claimName = "made-" .. tag, storageClass = class, storage = "512Mi" },
                mountPath = "/mnt/n" },
        } })
        local c = assert(claim_json("made-" .. tag))
        assert.are.equal(id, c.metadata.labels["opensandbox.io/volume-created-for"])
        assert.are.equal(class, c.spec.storageClassName)
        assert.are.equal("512Mi", c.spec.resources.requests.storage)
        local out = exec(id, "echo ok > /mnt/n/f && cat /mnt/n/f")
        assert.truthy(out:find("stdout:ok", 1, true), out)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
    end)

    it("refuses a missing claim, a host path outside the allowed ones, and the agent's volume name", function()
        local function refused(vols, code)
            local res = H.create_raw(srv, { volumes = vols })
            H.assert_error(res, 400, code)
        end
        local before = K.kubectl("-n " .. ns .. " get pods -o name")
        refused({ { name = "x", pvc = { claimName = "absent-" .. tag }, mountPath = "/x" },
            { name = "c", pvc = { claimName = "nope-" .. tag, createIfNotExists = false }, mountPath = "/c" } },
            "VOLUME::PVC_NOT_FOUND")
        refused({ { name = "x", pvc = { claimName = "absent-" .. tag }, mountPath = "/x" },
            { name = "h", host = { path = root .. "/outside" }, mountPath = "/h" } }, "VOLUME::HOST_PATH_NOT_ALLOWED")
        refused({ { name = "opensandbox-agent", pvc = { claimName = "absent-" .. tag }, mountPath = "/x" } },
            "VOLUME::INVALID_NAME")
        assert.is_nil(claim_json("absent-" .. tag), "no claim was created")
        assert.are.equal(before, K.kubectl("-n " .. ns .. " get pods -o name"), "no pod was created")
    end)
end)
