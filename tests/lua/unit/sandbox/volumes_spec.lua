-- sandbox.volumes: every rule of upstream's Volume schema (specs/sandbox-lifecycle.yml) as a 400 with its
-- message, through validate.create (what POST /sandboxes runs), and the host path resolution against
-- storage.allowed_host_paths on a real directory tree.
local json = require("common.json")
local errors = require("common.errors")
local validate = require("sandbox.validate")
local volumes = require("sandbox.volumes")

local OPTS = { now_us = 1767225600 * 1000000, ncpu = 2 }
local BASE = '"image":{"uri":"busybox:latest"},"entrypoint":["sh","-c","sleep 1"],"resourceLimits":{}'

local function create(vols_json)
    return validate.create(assert(json.decode("{" .. BASE .. ',"volumes":' .. vols_json .. "}")), OPTS)
end

local function refused(code, message, vols_json)
    local v, err = create(vols_json)
    assert.is_nil(v, vols_json)
    assert.is_true(errors.is(err), "expected an error object for " .. vols_json)
    assert.equal(400, err.status)
    assert.equal(code, err.code, vols_json .. ": " .. tostring(err.message))
    if message then
        assert.equal(message, err.message)
    end
end

local INVALID = "SANDBOX::INVALID_PARAMETER"

describe("sandbox.volumes", function()
    describe("validate (through validate.create)", function()
        it("accepts none: absent, null, []", function()
            assert.same({}, validate.create(assert(json.decode("{" .. BASE .. "}")), OPTS).volumes)
            assert.same({}, create("null").volumes)
            assert.same({}, create("[]").volumes)
        end)

        it("normalises host and pvc volumes, filling in the defaults", function()
            local spec = assert(create('[{"name":"data","host":{"path":"/srv/x"},"mountPath":"/mnt/data/"},'
                .. '{"name":"cache","pvc":{"claimName":"shared-cache"},"mountPath":"/cache","readOnly":true,'
                .. '"subPath":"./a//b/"}]'))
            assert.same({
                { name = "data", host = { path = "/srv/x" }, mountPath = "/mnt/data", readOnly = false },
                { name = "cache", pvc = { claimName = "shared-cache", createIfNotExists = true,
                    deleteOnSandboxTermination = false }, mountPath = "/cache", readOnly = true, subPath = "a/b" },
            }, spec.volumes)
            spec = assert(create('[{"name":"c","pvc":{"claimName":"c1","createIfNotExists":false,'
                .. '"deleteOnSandboxTermination":true,"storageClass":"standard","storage":"1.5Gi",'
                .. '"accessModes":["ReadWriteOnce"]},"mountPath":"/c","subPath":"."}]'))
            assert.same({ name = "c", mountPath = "/c", readOnly = false, pvc = { claimName = "c1",
                createIfNotExists = false, deleteOnSandboxTermination = true, storageClass = "standard",
                storage = "1.5Gi", accessModes = { "ReadWriteOnce" } } }, spec.volumes[1])
            -- a normalised list validates to itself (the service validates again after the hooks)
            assert.same(spec.volumes, assert(volumes.validate(spec.volumes)))
        end)

        it("refuses a volumes value that is not an array, or too many", function()
            refused(INVALID, "volumes must be an array of Volume objects.", '{"name":"x"}')
            refused(INVALID, "volumes must be an array of Volume objects.", '"x"')
            local many = {}
            for i = 1, volumes.MAX_VOLUMES + 1 do
                many[i] = string.format('{"name":"v%d","pvc":{"claimName":"c%d"},"mountPath":"/m%d"}', i, i, i)
            end
            refused(INVALID, "volumes may hold at most 64 entries.", "[" .. table.concat(many, ",") .. "]")
        end)

        it("refuses an entry that is not an object, and unknown fields", function()
            refused(INVALID, "volumes[0] must be an object with name, mountPath and one backend.", '["x"]')
            refused(INVALID, "volumes[0] must be an object with name, mountPath and one backend.", "[{}]")
            refused(INVALID, "volumes[1] must be an object with name, mountPath and one backend.",
                '[{"name":"a","pvc":{"claimName":"a"},"mountPath":"/a"},[1]]')
            refused(INVALID, "volumes[0].mountpath is not a known field.",
                '[{"name":"a","pvc":{"claimName":"a"},"mountpath":"/a"}]')
        end)

        it("refuses a missing, malformed, too long or duplicate name", function()
            refused("VOLUME::INVALID_NAME", "volumes[0].name is required and must be a non-empty string.",
                '[{"pvc":{"claimName":"a"},"mountPath":"/a"}]')
            refused("VOLUME::INVALID_NAME", "volumes[0].name is required and must be a non-empty string.",
                '[{"name":"","pvc":{"claimName":"a"},"mountPath":"/a"}]')
            refused("VOLUME::INVALID_NAME", "volumes[0].name is required and must be a non-empty string.",
                '[{"name":7,"pvc":{"claimName":"a"},"mountPath":"/a"}]')
            for _, bad in ipairs({ "Data", "-a", "a-", "a_b", "a.b", "é" }) do
                refused("VOLUME::INVALID_NAME", "Volume name '" .. bad .. "' is not a valid DNS label: lowercase "
                    .. "letters, digits and '-', starting and ending with a letter or digit.",
                    '[{"name":"' .. bad .. '","pvc":{"claimName":"a"},"mountPath":"/a"}]')
            end
            refused("VOLUME::INVALID_NAME", "Volume name '" .. string.rep("a", 64) .. "' exceeds the maximum length "
                .. "of 63 characters.", '[{"name":"' .. string.rep("a", 64) .. '","pvc":{"claimName":"a"},'
                .. '"mountPath":"/a"}]')
            assert.is_not_nil(create('[{"name":"' .. string.rep("a", 63) .. '","pvc":{"claimName":"a"},'
                .. '"mountPath":"/a"}]'))
            refused("VOLUME::DUPLICATE_NAME", "Duplicate volume name 'a'. Each volume must have a unique name.",
                '[{"name":"a","pvc":{"claimName":"a"},"mountPath":"/a"},'
                .. '{"name":"a","pvc":{"claimName":"b"},"mountPath":"/b"}]')
        end)

        it("refuses a missing, relative, traversing, reserved or repeated mountPath", function()
            local function mp(v)
                return '[{"name":"a","pvc":{"claimName":"a"},"mountPath":' .. v .. "}]"
            end
            refused("VOLUME::INVALID_MOUNT_PATH", "Volume 'a': mountPath is required and must be a non-empty string.",
                '[{"name":"a","pvc":{"claimName":"a"}}]')
            refused("VOLUME::INVALID_MOUNT_PATH", "Volume 'a': mountPath is required and must be a non-empty string.",
                mp('""'))
            refused("VOLUME::INVALID_MOUNT_PATH", "Volume 'a': mountPath is required and must be a non-empty string.",
                mp("true"))
            refused("VOLUME::INVALID_MOUNT_PATH", "Volume 'a': mountPath 'data' must be an absolute path starting "
                .. "with '/'.", mp('"data"'))
            for _, bad in ipairs({ '"/a/../etc"', '"/a:b"', '"/a\\u0000b"' }) do
                refused("VOLUME::INVALID_MOUNT_PATH", "Volume 'a': mountPath must not contain '..' components, ':' "
                    .. "or NUL, and be at most 4096 bytes.", mp(bad))
            end
            for _, bad in ipairs({ "/", "//", "/opt/opensandbox", "/opt/opensandbox/x", "/opt", "/opt/" }) do
                refused("VOLUME::INVALID_MOUNT_PATH", "Volume 'a': mountPath '" .. bad .. "' would cover '/' or the "
                    .. "sandbox agent's directory /opt/opensandbox.", mp('"' .. bad .. '"'))
            end
            refused("VOLUME::INVALID_MOUNT_PATH", "Volume 'b': mountPath '/x/' is already used by volume 'a'.",
                '[{"name":"a","pvc":{"claimName":"a"},"mountPath":"/x"},'
                .. '{"name":"b","pvc":{"claimName":"b"},"mountPath":"/x/"}]')
        end)

        it("refuses a readOnly that is not a boolean", function()
            refused(INVALID, "Volume 'a': readOnly must be a boolean.",
                '[{"name":"a","pvc":{"claimName":"a"},"mountPath":"/a","readOnly":"true"}]')
        end)

        it("refuses an absolute or traversing subPath", function()
            local function sp(v)
                return '[{"name":"a","pvc":{"claimName":"a"},"mountPath":"/a","subPath":' .. v .. "}]"
            end
            refused("VOLUME::INVALID_SUB_PATH", "Volume 'a': subPath must be a string.", sp("1"))
            refused("VOLUME::INVALID_SUB_PATH", "Volume 'a': subPath '/etc' must be a relative path, not absolute.",
                sp('"/etc"'))
            for _, bad in ipairs({ "..", "../x", "a/../../x", "a/.." }) do
                refused("VOLUME::INVALID_SUB_PATH", "Volume 'a': subPath '" .. bad .. "' contains '..', which is "
                    .. "not allowed.", sp('"' .. bad .. '"'))
            end
            refused("VOLUME::INVALID_SUB_PATH", "Volume 'a': subPath must not contain ':' or NUL, and be at most "
                .. "4096 bytes.", sp('"a:b"'))
            assert.is_nil(create(sp('""')).volumes[1].subPath) -- "" is the whole volume
            assert.equal("a..b/c", create(sp('"a..b/c"')).volumes[1].subPath) -- not a `..` component
        end)

        it("refuses no backend, several backends, and ossfs (not supported)", function()
            refused("VOLUME::INVALID_BACKEND", "Volume 'a' must specify exactly one backend (host, pvc, ossfs), but "
                .. "none was provided.", '[{"name":"a","mountPath":"/a"}]')
            refused("VOLUME::INVALID_BACKEND", "Volume 'a' must specify exactly one backend (host, pvc, ossfs), but "
                .. "none was provided.", '[{"name":"a","mountPath":"/a","pvc":null}]')
            refused("VOLUME::INVALID_BACKEND", "Volume 'a' must specify exactly one backend (host, pvc, ossfs), but "
                .. "host and pvc were provided.", '[{"name":"a","mountPath":"/a","pvc":{"claimName":"a"},'
                .. '"host":{"path":"/x"}}]')
            refused("VOLUME::UNSUPPORTED_BACKEND", "Volume 'a': the ossfs backend is not supported by this server "
                .. "(use host or pvc).", '[{"name":"a","mountPath":"/a","ossfs":{"bucket":"b","endpoint":"e",'
                .. '"accessKeyId":"k","accessKeySecret":"s"}}]')
            refused("VOLUME::INVALID_BACKEND", "Volume 'a': ossfs must be an object.",
                '[{"name":"a","mountPath":"/a","ossfs":"b"}]')
        end)

        it("refuses a malformed host backend", function()
            local function host(v)
                return '[{"name":"a","mountPath":"/a","host":' .. v .. "}]"
            end
            refused("VOLUME::INVALID_BACKEND", "Volume 'a': host must be an object with a path.", host('"/x"'))
            refused("VOLUME::INVALID_BACKEND", "Volume 'a': host.readOnly is not a known field.",
                host('{"path":"/x","readOnly":true}'))
            refused("VOLUME::INVALID_HOST_PATH", "Volume 'a': host.path is required and must be a non-empty string.",
                host("{}"))
            refused("VOLUME::INVALID_HOST_PATH", "Volume 'a': host path 'srv/x' must be an absolute path starting "
                .. "with '/' (this server runs on Linux).", host('{"path":"srv/x"}'))
            refused("VOLUME::INVALID_HOST_PATH", "Volume 'a': host path 'C:\\\\data' must be an absolute path "
                .. "starting with '/' (this server runs on Linux).", host('{"path":"C:\\\\\\\\data"}'))
            refused("VOLUME::INVALID_HOST_PATH", "Volume 'a': host path must not contain ':' or NUL, and be at most "
                .. "4096 bytes.", host('{"path":"/x:/y"}'))
        end)

        it("refuses a malformed pvc backend", function()
            local function pvc(v)
                return '[{"name":"a","mountPath":"/a","pvc":' .. v .. "}]"
            end
            refused("VOLUME::INVALID_BACKEND", "Volume 'a'.pvc must be an object.", pvc('"c"'))
            refused("VOLUME::INVALID_BACKEND", "Volume 'a'.pvc.size is not a known field.",
                pvc('{"claimName":"c","size":"1Gi"}'))
            refused("VOLUME::INVALID_PVC_NAME", "Volume 'a'.pvc.claimName is required and must be a non-empty string.",
                pvc("{}"))
            refused("VOLUME::INVALID_PVC_NAME", "Volume 'a'.pvc.claimName 'My_Vol' is not a valid name: lowercase "
                .. "letters, digits and '-', starting and ending with a letter or digit, at most 253 characters.",
                pvc('{"claimName":"My_Vol"}'))
            refused(INVALID, "Volume 'a'.pvc.createIfNotExists must be a boolean.",
                pvc('{"claimName":"c","createIfNotExists":"no"}'))
            refused(INVALID, "Volume 'a'.pvc.deleteOnSandboxTermination must be a boolean.",
                pvc('{"claimName":"c","deleteOnSandboxTermination":1}'))
            refused(INVALID, "Volume 'a'.pvc.storageClass must be a valid StorageClass name.",
                pvc('{"claimName":"c","storageClass":"Fast SSD"}'))
            for _, bad in ipairs({ '"1GB"', '"1."', '"Gi"', '"-1Gi"', "1" }) do
                refused(INVALID, "Volume 'a'.pvc.storage must be a quantity such as '1Gi' (digits, optional decimals, "
                    .. "Ki|Mi|Gi|Ti|Pi|Ei).", pvc('{"claimName":"c","storage":' .. bad .. "}"))
            end
            refused(INVALID, "Volume 'a'.pvc.accessModes must be a non-empty array of strings.",
                pvc('{"claimName":"c","accessModes":[]}'))
            refused(INVALID, "Volume 'a'.pvc.accessModes[0] must be one of ReadWriteOnce, ReadOnlyMany, "
                .. "ReadWriteMany, ReadWriteOncePod.", pvc('{"claimName":"c","accessModes":["rwo"]}'))
            assert.is_not_nil(create(pvc('{"claimName":"c","storageClass":null,"storage":null,"accessModes":null}')))
        end)
    end)

    describe("resolve_hosts (storage.allowed_host_paths)", function()
        local root
        before_each(function()
            local p = assert(io.popen("mktemp -d /tmp/osb-volspec.XXXXXX"))
            root = p:read("l")
            p:close()
            assert(os.execute(string.format("mkdir -p %s/allowed/sub %s/outside && ln -s %s/outside %s/allowed/out"
                .. " && ln -s sub %s/allowed/rel", root, root, root, root, root)))
        end)
        after_each(function()
            os.execute("rm -rf '" .. root .. "'")
        end)

        local function host(path, sub)
            local vols = assert(volumes.validate({ { name = "a", mountPath = "/a", host = { path = path },
                subPath = sub } }))
            return vols
        end

        local function refused_host(code, vols, allowed, pattern)
            local ok, err = volumes.resolve_hosts(vols, allowed)
            assert.is_nil(ok)
            assert.equal(400, err.status)
            assert.equal(code, err.code)
            if pattern then
                assert.matches(pattern, err.message, 1, true)
            end
        end

        it("resolves a path under an allowed prefix (with subPath, through a link inside it)", function()
            local vols = host(root .. "/allowed", "sub")
            assert.is_true(volumes.resolve_hosts(vols, { root .. "/allowed" }))
            assert.equal(root .. "/allowed/sub", vols[1].source)
            vols = host(root .. "/allowed/rel")
            assert.is_true(volumes.resolve_hosts(vols, { root .. "/allowed/" }))
            assert.equal(root .. "/allowed/sub", vols[1].source)
            vols = host(root .. "/allowed/sub/../sub")
            assert.is_true(volumes.resolve_hosts(vols, { "/" }))
            assert.equal(root .. "/allowed/sub", vols[1].source)
        end)

        it("refuses every host volume when the list is empty", function()
            refused_host("VOLUME::HOST_PATH_NOT_ALLOWED", host(root .. "/allowed"), {},
                "host volumes are disabled on this server (storage.allowed_host_paths is empty)")
            refused_host("VOLUME::HOST_PATH_NOT_ALLOWED", host(root .. "/allowed"), nil)
        end)

        it("refuses a path outside, one that leaves through '..', and one that leaves through a link", function()
            local allowed = { root .. "/allowed" }
            refused_host("VOLUME::HOST_PATH_NOT_ALLOWED", host(root .. "/outside"), allowed,
                "(resolved: '" .. root .. "/outside') is not under any allowed prefix")
            refused_host("VOLUME::HOST_PATH_NOT_ALLOWED", host(root .. "/allowed/../outside"), allowed)
            refused_host("VOLUME::HOST_PATH_NOT_ALLOWED", host(root .. "/allowed/out"), allowed,
                "(resolved: '" .. root .. "/outside')")
            refused_host("VOLUME::HOST_PATH_NOT_ALLOWED", host(root .. "/allowed", "out"), allowed)
            -- a prefix is a directory, not a string prefix
            refused_host("VOLUME::HOST_PATH_NOT_ALLOWED", host(root .. "/allowed/sub"), { root .. "/allowed/su" })
        end)

        it("refuses a path that does not exist", function()
            refused_host("VOLUME::HOST_PATH_NOT_FOUND", host(root .. "/allowed/nope"), { root .. "/allowed" },
                "host path '" .. root .. "/allowed/nope' does not exist on the server's host.")
        end)

        it("realpath follows links and refuses loops", function()
            assert.equal(root .. "/outside", volumes.realpath(root .. "/allowed/out"))
            assert(os.execute(string.format("ln -s loop2 %s/loop1 && ln -s loop1 %s/loop2", root, root)))
            local r, why = volumes.realpath(root .. "/loop1")
            assert.is_nil(r)
            assert.equal("loop", why)
        end)
    end)
end)
