local json = require("common.json")
local errors = require("common.errors")
local validate = require("sandbox.validate")
local timefmt = require("common.timefmt")

local NOW = 1767225600 * 1000000 -- 2026-01-01T00:00:00Z
local OPTS = { now_us = NOW, ncpu = 2 }
local BASE = '"image":{"uri":"busybox:latest"},"entrypoint":["sh","-c","sleep 1"],"resourceLimits":{}'

-- A create body decoded from JSON: the base fields, then `extra` (a JSON fragment; a repeated key wins).
local function body(extra)
    local text = "{" .. BASE .. (extra and ("," .. extra) or "") .. "}"
    return assert(json.decode(text))
end

local function create(extra, opts)
    return validate.create(body(extra), opts or OPTS)
end

local function assert_error(status, code, message, v, err)
    assert.is_nil(v)
    assert.is_true(errors.is(err), "expected an error object")
    assert.equal(code, err.code)
    assert.equal(status, err.status)
    if message then
        assert.equal(message, err.message)
    end
    return err
end

local function invalid(message, v, err)
    return assert_error(400, "SANDBOX::INVALID_PARAMETER", message, v, err)
end

local function label_invalid(message, v, err)
    return assert_error(400, "SANDBOX::INVALID_METADATA_LABEL", message, v, err)
end

describe("sandbox.validate.create", function()
    it("accepts a minimal body and returns the spec", function()
        local spec = assert(create())
        assert.same({ uri = "busybox:latest" }, spec.image)
        assert.same({ "sh", "-c", "sleep 1" }, spec.entrypoint)
        assert.is_nil(spec.timeout)
        assert.is_nil(spec.nano_cpus)
        assert.is_nil(spec.memory)
        assert.is_nil(spec.gpu)
        assert.same({}, spec.env)
        assert.same({}, spec.metadata)
        assert.is_nil(spec.platform)
        assert.same({}, spec.extensions)
    end)

    it("accepts what the SDK sends", function()
        local spec = assert(create('"timeout":600,"resourceLimits":{"cpu":"1","memory":"2Gi"},'
            .. '"env":{"A":"1"},"metadata":{"smoke":"x"},"secureAccess":false,"extensions":{},'
            .. '"resourceRequests":{"cpu":"1"}'))
        assert.equal(600, spec.timeout)
        assert.equal("integer", math.type(spec.timeout))
        assert.equal(1000000000, spec.nano_cpus)
        assert.equal(2147483648, spec.memory)
        assert.same({ { "A", "1" } }, spec.env)
        assert.same({ smoke = "x" }, spec.metadata)
    end)

    describe("body", function()
        it("must be an object", function()
            for _, b in ipairs({ "x", 1, true, json.null, { "a" } }) do
                invalid("Request body must be a JSON object.", validate.create(b, OPTS))
            end
        end)
    end)

    describe("image", function()
        it("is required and must be an object", function()
            invalid("image is required.", validate.create(json.decode('{"entrypoint":["sh"],"resourceLimits":{}}'),
                OPTS))
            invalid("image is required.", create('"image":null'))
            invalid("image must be an object.", create('"image":"busybox"'))
            invalid("image.uri is required.", create('"image":{}'))
            invalid("image.uri must be a string.", create('"image":{"uri":5}'))
            invalid("image.uri must not be blank.", create('"image":{"uri":"   "}'))
        end)

        it("trims the uri", function()
            assert.equal("busybox", create('"image":{"uri":"  busybox\\t"}').image.uri)
        end)

        it("limits the length to 512 bytes", function()
            local long = string.rep("a", 512)
            assert.equal(long, create('"image":{"uri":"' .. long .. '"}').image.uri)
            invalid("image.uri must be at most 512 bytes.", create('"image":{"uri":"' .. long .. 'a"}'))
        end)

        it("rejects whitespace and control characters inside", function()
            local msg = "image.uri must not contain whitespace or control characters."
            invalid(msg, create('"image":{"uri":"busy box"}'))
            invalid(msg, create('"image":{"uri":"busy\\u0001box"}'))
            invalid(msg, create('"image":{"uri":"busy\\u0000box"}'))
        end)

        it("accepts valid references", function()
            for _, uri in ipairs({
                "busybox", "busybox:latest", "library/busybox:1.36", "docker.io/library/busybox",
                "localhost:5000/foo/bar:v1", "registry.example.com:443/a-b/c__d/e.f:tag_1.2-x",
                "ghcr.io/org/img", "Registry.Example.COM/x", "127.0.0.1:5000/x", "a---b/c",
                "busybox@sha256:" .. string.rep("a", 64), "busybox:1@sha256:" .. string.rep("0", 64),
                "localhost:5000", "x:" .. string.rep("t", 128),
            }) do
                assert.is_true(validate.image_reference(uri), uri)
                assert.is_not_nil(create('"image":{"uri":"' .. uri .. '"}'), uri)
            end
        end)

        it("rejects invalid references with the uri in the message", function()
            for _, uri in ipairs({
                "BusyBox", "busybox:", ":tag", "/busybox", "busybox/", "a//b", "a_-b", "a..b", "a___b", "-a",
                "a-", "busybox@sha256:abc", "busybox@sha256:" .. string.rep("A", 64), "busybox@md5:" .. string.rep(
                    "a", 64), "x:" .. string.rep("t", 129), "x:.tag", "host:port/x", "ghcr.io/Org/Img", "a/b:c/d",
                "héllo", "a:b:c",
            }) do
                assert.is_false(validate.image_reference(uri), uri)
                invalid("image.uri '" .. uri .. "' is not a valid image reference.",
                    create('"image":{"uri":' .. json.encode(uri) .. '}'))
            end
        end)

        it("checks auth: both fields non-empty strings, never more", function()
            local spec = create('"image":{"uri":"busybox","auth":{"username":"u","password":"p","x":1}}')
            assert.same({ uri = "busybox", auth = { username = "u", password = "p" } }, spec.image)
            assert.is_nil(create('"image":{"uri":"busybox","auth":null}').image.auth)
            invalid("image.auth must be an object with username and password.",
                create('"image":{"uri":"busybox","auth":"u:p"}'))
            invalid("image.auth.username must be a non-empty string.",
                create('"image":{"uri":"busybox","auth":{"password":"p"}}'))
            invalid("image.auth.username must be a non-empty string.",
                create('"image":{"uri":"busybox","auth":{"username":"","password":"p"}}'))
            invalid("image.auth.password must be a non-empty string.",
                create('"image":{"uri":"busybox","auth":{"username":"u"}}'))
            invalid("image.auth.password must be a non-empty string.",
                create('"image":{"uri":"busybox","auth":{"username":"u","password":7}}'))
        end)
    end)

    describe("entrypoint", function()
        it("must be a non-empty array of strings with a non-empty first element", function()
            local msg = "entrypoint must be a non-empty array of strings."
            invalid("entrypoint is required.", create('"entrypoint":null'))
            invalid(msg, create('"entrypoint":[]'))
            invalid(msg, create('"entrypoint":"sh"'))
            invalid(msg, create('"entrypoint":{"a":"sh"}'))
            invalid("entrypoint[1] must be a string.", create('"entrypoint":["sh",1]'))
            invalid("entrypoint[0] must not be empty.", create('"entrypoint":["","x"]'))
            invalid("entrypoint[1] must not contain NUL.", create('"entrypoint":["sh","a\\u0000b"]'))
            assert.same({ "sh", "" }, create('"entrypoint":["sh",""]').entrypoint)
        end)
    end)

    describe("timeout", function()
        local msg = "timeout must be an integer >= 60."

        it("absent or null means manual cleanup", function()
            assert.is_nil(create().timeout)
            assert.is_nil(create('"timeout":null').timeout)
        end)

        it("accepts integral numbers >= 60, 600.0 included", function()
            assert.equal(60, create('"timeout":60').timeout)
            assert.equal(600, create('"timeout":600.0').timeout)
            assert.equal(600, create('"timeout":6e2').timeout)
            assert.equal("integer", math.type(create('"timeout":600.0').timeout))
        end)

        it("rejects fractions, small values, strings and booleans", function()
            for _, v in ipairs({ "59", "0", "-60", "600.5", '"600"', "true", "[600]", "{}", "1e400", "-1e400" }) do
                invalid(msg, create('"timeout":' .. v))
            end
        end)

        it("applies the configured maximum (equal is allowed)", function()
            local opts = { now_us = NOW, max_timeout = 3600 }
            assert.equal(3600, create('"timeout":3600', opts).timeout)
            invalid("Sandbox timeout 7200s exceeds configured maximum of 3600s.", create('"timeout":7200', opts))
            invalid("Sandbox timeout 100000000000000000000s exceeds configured maximum of 3600s.",
                create('"timeout":1e20', opts))
        end)

        it("must not pass 9999-12-31T23:59:59Z", function()
            local room = (timefmt.MAX_US - NOW) // 1000000
            assert.equal(room, create('"timeout":' .. room).timeout)
            invalid("timeout " .. (room + 1) .. "s would expire the sandbox after 9999-12-31T23:59:59Z.",
                create('"timeout":' .. (room + 1)))
            invalid(nil, create('"timeout":1e300'))
        end)
    end)

    describe("resourceLimits", function()
        local function limits(text, opts)
            return create('"resourceLimits":' .. text, opts)
        end

        it("is required, must be an object, and every value must be a string", function()
            invalid("resourceLimits is required.", limits("null"))
            invalid("resourceLimits must be an object of strings.", limits('"1"'))
            invalid("resourceLimits must be an object of strings.", limits('["1"]'))
            invalid("resourceLimits.cpu must be a string.", limits('{"cpu":1}'))
            invalid("resourceLimits.other must be a string.", limits('{"other":1}'))
            assert.is_not_nil(limits('{"other":"whatever"}'))
        end)

        it("converts cpu exactly to NanoCpus", function()
            local cases = {
                ["10m"] = 10000000, ["500m"] = 500000000, ["0.5"] = 500000000, ["2"] = 2000000000,
                ["0.01"] = 10000000, ["1.000000001"] = 1000000001, ["0.123456789"] = 123456789,
                ["2000m"] = 2000000000, ["0002"] = 2000000000,
            }
            for s, n in pairs(cases) do
                local spec = limits('{"cpu":"' .. s .. '"}')
                assert.is_not_nil(spec, s)
                assert.equal(n, spec.nano_cpus, s)
                assert.equal("integer", math.type(spec.nano_cpus))
            end
        end)

        it("rejects bad cpu syntax", function()
            for _, s in ipairs({ "", "m", "1.5m", "0.5.1", "-1", "1e3", " 1", "1 ", "1.", ".5", "1.1234567891",
                "1M", "100mm", "abc" }) do
                invalid("resourceLimits.cpu '" .. s .. "' is invalid: use millicores such as '500m' or cores such "
                    .. "as '0.5' (at most 9 decimals).", limits('{"cpu":"' .. s .. '"}'))
            end
        end)

        it("bounds cpu between 10m and the daemon's CPU count", function()
            invalid("resourceLimits.cpu '9m' is below the minimum of 10m (0.01 CPU).", limits('{"cpu":"9m"}'))
            invalid("resourceLimits.cpu '0.009999999' is below the minimum of 10m (0.01 CPU).",
                limits('{"cpu":"0.009999999"}'))
            invalid("resourceLimits.cpu '0' is below the minimum of 10m (0.01 CPU).", limits('{"cpu":"0"}'))
            assert.equal(2000000000, limits('{"cpu":"2"}').nano_cpus)
            invalid("resourceLimits.cpu '2.000000001' exceeds the 2 CPUs available.",
                limits('{"cpu":"2.000000001"}'))
            invalid("resourceLimits.cpu '2001m' exceeds the 2 CPUs available.", limits('{"cpu":"2001m"}'))
        end)

        it("skips the upper cpu bound without ncpu, but never overflows", function()
            assert.equal(64000000000, limits('{"cpu":"64"}', { now_us = NOW }).nano_cpus)
            invalid("resourceLimits.cpu '99999999999999999999' is too large.",
                limits('{"cpu":"99999999999999999999"}', { now_us = NOW }))
            invalid("resourceLimits.cpu '9223372036855m' is too large.",
                limits('{"cpu":"9223372036855m"}', { now_us = NOW }))
        end)

        it("converts memory with binary and decimal suffixes", function()
            local cases = {
                ["6Mi"] = 6291456, ["6291456"] = 6291456, ["512Mi"] = 536870912, ["1Gi"] = 1073741824,
                ["1G"] = 1000000000, ["1000000"] = nil, ["7M"] = 7000000, ["6144Ki"] = 6291456,
                ["7000k"] = 7000000, ["1Ti"] = 1099511627776, ["1T"] = 1000000000000,
                ["9223372036854775807"] = 9223372036854775807,
            }
            for s, n in pairs(cases) do
                local spec = limits('{"memory":"' .. s .. '"}')
                assert.is_not_nil(spec, s)
                assert.equal(n, spec.memory, s)
            end
        end)

        it("enforces 6 MiB <= memory <= 2^63-1", function()
            invalid("resourceLimits.memory '6291455' is below the minimum of 6Mi (6291456 bytes).",
                limits('{"memory":"6291455"}'))
            invalid("resourceLimits.memory '1000000' is below the minimum of 6Mi (6291456 bytes).",
                limits('{"memory":"1000000"}'))
            invalid("resourceLimits.memory '5Mi' is below the minimum of 6Mi (6291456 bytes).",
                limits('{"memory":"5Mi"}'))
            invalid("resourceLimits.memory '6M' is below the minimum of 6Mi (6291456 bytes).",
                limits('{"memory":"6M"}'))
            invalid("resourceLimits.memory '9223372036854775808' exceeds the maximum of 9223372036854775807 bytes.",
                limits('{"memory":"9223372036854775808"}'))
            invalid("resourceLimits.memory '8388608Ti' exceeds the maximum of 9223372036854775807 bytes.",
                limits('{"memory":"8388608Ti"}'))
            assert.equal(8388607 * 1099511627776, limits('{"memory":"8388607Ti"}').memory)
        end)

        it("rejects bad memory syntax (suffixes are case-sensitive)", function()
            for _, s in ipairs({ "", "Mi", "1mi", "1gi", "1K", "1KB", "1.5Gi", "-1", " 1Gi", "1Gi ", "1Pi", "1m" }) do
                invalid("resourceLimits.memory '" .. s .. "' is invalid: use a byte count with an optional suffix "
                    .. "Ki, Mi, Gi, Ti, k, M, G or T, such as '512Mi'.", limits('{"memory":"' .. s .. '"}'))
            end
        end)

        it("accepts gpu as a positive integer or all", function()
            assert.equal(-1, limits('{"gpu":"all"}').gpu)
            assert.equal(2, limits('{"gpu":"2"}').gpu)
            for _, s in ipairs({ "0", "-1", "1.5", "ALL", "", "x", "99999999999999999999" }) do
                invalid("resourceLimits.gpu '" .. s .. "' must be a positive integer or 'all'.",
                    limits('{"gpu":"' .. s .. '"}'))
            end
        end)
    end)

    describe("env", function()
        it("drops null values, keeps empty strings, sorts by key without an order", function()
            local spec = create('"env":{"B":"2","A":"1","DROP":null,"EMPTY":""}')
            assert.same({ { "A", "1" }, { "B", "2" }, { "EMPTY", "" } }, spec.env)
            assert.same({}, create('"env":null').env)
            assert.same({}, create('"env":{}').env)
        end)

        it("keeps the request's key order when given it (§8.2), unknown keys after it, sorted", function()
            local opts = { now_us = NOW, ncpu = 2, env_order = { "Z", "DROP", "B", "NOT_THERE", "A", "B" } }
            local spec = create('"env":{"B":"2","A":"1","DROP":null,"Z":"0","Y":"9","X":"8"}', opts)
            assert.same({ { "Z", "0" }, { "B", "2" }, { "A", "1" }, { "X", "8" }, { "Y", "9" } }, spec.env)
        end)

        it("checks keys and values", function()
            invalid("env must be an object of strings.", create('"env":["A=1"]'))
            invalid("env must be an object of strings.", create('"env":"A=1"'))
            invalid("env key '' is invalid: keys must be non-empty and contain no '=' or NUL.",
                create('"env":{"":"x"}'))
            invalid("env key 'A=B' is invalid: keys must be non-empty and contain no '=' or NUL.",
                create('"env":{"A=B":"x"}'))
            invalid("env key 'A\0' is invalid: keys must be non-empty and contain no '=' or NUL.",
                create('"env":{"A\\u0000":"x"}'))
            invalid("env.A must be a string or null.", create('"env":{"A":1}'))
            invalid("env.A must not contain NUL.", create('"env":{"A":"x\\u0000y"}'))
        end)
    end)

    describe("metadata", function()
        it("accepts the examples of §4.1", function()
            local spec = create('"metadata":{"app.kubernetes.io/name":"x","note":""}')
            assert.same({ ["app.kubernetes.io/name"] = "x", note = "" }, spec.metadata)
            assert.same({}, create('"metadata":null').metadata)
        end)

        it("accepts edge-valid labels", function()
            for _, kv in ipairs({
                { "a", "b" }, { "A-b_c.D", "Z-z_1.0" }, { string.rep("k", 63), string.rep("v", 63) },
                { string.rep("a", 63) .. "." .. string.rep("b", 63) .. "/n", "" }, { "x-1.io/a", "1" },
                { "1/2", "3" },
            }) do
                assert.is_true(validate.metadata_label(kv[1], kv[2]), kv[1])
                assert.is_not_nil(create('"metadata":' .. json.encode({ [kv[1]] = kv[2] })), kv[1])
            end
        end)

        it("rejects the reserved prefix first", function()
            label_invalid("Metadata key 'opensandbox.io/id' uses the reserved prefix 'opensandbox.io/'. Keys "
                .. "under this prefix are managed by the system and cannot be set via metadata.",
                create('"metadata":{"opensandbox.io/id":"has space"}'))
        end)

        it("rejects bad keys", function()
            local name_rule = "the name must be 1-63 characters, begin and end with a letter or digit, and "
                .. "contain only letters, digits, '-', '_' or '.'."
            local prefix_rule = "the prefix must be a lowercase DNS subdomain of at most 253 characters (labels "
                .. "of [a-z0-9-] separated by '.')."
            local cases = {
                ["Bad Key"] = name_rule, [""] = name_rule, ["-a"] = name_rule, ["a-"] = name_rule,
                [string.rep("k", 64)] = name_rule, ["a/b/c"] = name_rule, ["p/-x"] = name_rule,
                ["/name"] = "the prefix and the name around '/' must both be non-empty.",
                ["prefix/"] = "the prefix and the name around '/' must both be non-empty.",
                ["INVALID_PREFIX.io/name"] = prefix_rule, ["Upper.io/name"] = prefix_rule,
                ["a..b/name"] = prefix_rule, ["-a.io/name"] = prefix_rule,
                [string.rep("a", 64) .. ".io/n"] = prefix_rule,
                [string.rep(string.rep("a", 63) .. ".", 4) .. "b/n"] = prefix_rule,
            }
            for k, rule in pairs(cases) do
                label_invalid("Metadata key '" .. k .. "' is invalid: " .. rule,
                    create('"metadata":' .. json.encode({ [k] = "v" })))
            end
        end)

        it("rejects bad values", function()
            local rule = "a value must be empty or 1-63 characters that begin and end with a letter or digit "
                .. "and contain only letters, digits, '-', '_' or '.'."
            for _, v in ipairs({ "has space", string.rep("v", 64), "-a", "a.", "ü", "a/b" }) do
                label_invalid("Metadata value '" .. v .. "' is invalid: " .. rule,
                    create('"metadata":' .. json.encode({ k = v })))
            end
        end)

        it("requires an object of strings", function()
            invalid("metadata must be an object of strings.", create('"metadata":"a=b"'))
            invalid("metadata must be an object of strings.", create('"metadata":["a"]'))
            invalid("metadata.k must be a string.", create('"metadata":{"k":1}'))
            invalid("metadata.k must be a string.", create('"metadata":{"k":null}'))
        end)
    end)

    describe("platform", function()
        it("accepts linux on amd64 or arm64", function()
            assert.same({ os = "linux", arch = "arm64" }, create('"platform":{"os":"linux","arch":"arm64"}').platform)
            assert.same({ os = "linux", arch = "amd64" }, create('"platform":{"os":"linux","arch":"amd64"}').platform)
            assert.is_nil(create('"platform":null').platform)
        end)

        it("rejects windows as not supported and anything else as invalid", function()
            assert_error(400, "SANDBOX::API_NOT_SUPPORTED", "platform.os 'windows' is not supported by this server.",
                create('"platform":{"os":"windows","arch":"amd64"}'))
            invalid("platform.os must be 'linux'.", create('"platform":{"os":"darwin","arch":"amd64"}'))
            invalid("platform.os must be 'linux'.", create('"platform":{"arch":"amd64"}'))
            invalid("platform.arch must be 'amd64' or 'arm64'.", create('"platform":{"os":"linux","arch":"386"}'))
            invalid("platform.arch must be 'amd64' or 'arm64'.", create('"platform":{"os":"linux"}'))
            invalid("platform must be an object with os and arch.", create('"platform":"linux/amd64"'))
        end)
    end)

    describe("extensions", function()
        it("stores string values", function()
            assert.same({ a = "b", poolRef = " " }, create('"extensions":{"a":"b","poolRef":" "}').extensions)
            assert.same({}, create('"extensions":null').extensions)
        end)

        it("takes a poolRef as the pool a create claims, and refuses an invalid pool name", function()
            local spec = create('"extensions":{"poolRef":" pool-1 "}')
            assert.equal("pool-1", spec.pool)
            assert_error(400, "SANDBOX::INVALID_PARAMETER", "extensions.poolRef 'Pool_1' is not a valid pool name.",
                create('"extensions":{"poolRef":"Pool_1"}'))
        end)

        it("makes image, entrypoint and resourceLimits optional with a poolRef (the template has them)", function()
            local spec = assert(validate.create(assert(json.decode('{"extensions":{"poolRef":"p1"}}')), OPTS))
            assert.equal("p1", spec.pool)
            assert.is_nil(spec.image)
            assert.same({ "tail", "-f", "/dev/null" }, spec.entrypoint)
            assert.is_nil(spec.nano_cpus)
            spec = assert(validate.create(assert(json.decode('{"extensions":{"poolRef":"p1"},'
                .. '"image":{"uri":"busybox"},"entrypoint":["sh"],"resourceLimits":{"cpu":"500m"}}')), OPTS))
            assert.equal("busybox", spec.image.uri)
            assert.same({ "sh" }, spec.entrypoint)
            assert.equal(500000000, spec.nano_cpus)
            local _, err = validate.create(assert(json.decode('{"extensions":{"poolRef":"p1"},"snapshotId":"s1"}')),
                OPTS)
            assert.equal(400, err.status)
            assert.equal("snapshotId cannot be combined with extensions.poolRef.", err.message)
            _, err = validate.create(assert(json.decode(
                '{"extensions":{"poolRef":"p1"},"resourceLimits":{"cpu":"x"}}')), OPTS)
            assert.matches("resourceLimits.cpu 'x' is invalid", err.message, 1, true)
        end)

        it("checks access.renew.extend.seconds", function()
            local key = "access.renew.extend.seconds"
            assert.equal("300", create('"extensions":{"' .. key .. '":"300"}').extensions[key])
            assert.equal("86400", create('"extensions":{"' .. key .. '":"86400"}').extensions[key])
            for _, v in ipairs({ "299", "86401", "", "5m", "300.0", " 300" }) do
                invalid("extensions." .. key .. " must be a decimal string between 300 and 86400.",
                    create('"extensions":{"' .. key .. '":"' .. v .. '"}'))
            end
        end)

        it("requires string values", function()
            invalid("extensions.a must be a string.", create('"extensions":{"a":1}'))
            invalid("extensions must be an object of strings.", create('"extensions":"x"'))
        end)
    end)

    describe("secureAccess and unsupported fields", function()
        it("accepts false or null and rejects true", function()
            assert.is_not_nil(create('"secureAccess":false'))
            assert.is_not_nil(create('"secureAccess":null'))
            invalid("secureAccess is only supported by the Kubernetes provider.", create('"secureAccess":true'))
            invalid("secureAccess must be a boolean.", create('"secureAccess":"true"'))
        end)

        it("rejects planned features when present and non-null", function()
            local function unsupported(field, extra)
                assert_error(400, "SANDBOX::API_NOT_SUPPORTED", field .. " is not supported by this server.",
                    create(extra))
            end
            unsupported("credentialProxy", '"credentialProxy":{"enabled":true}')
            assert.is_not_nil(create('"snapshotId":null,"networkPolicy":null,"volumes":[],'
                .. '"credentialProxy":{"enabled":false}'))
            assert.is_not_nil(create('"volumes":null,"credentialProxy":null'))
        end)
    end)

    describe("networkPolicy (sandbox/netpolicy.lua)", function()
        it("is normalised into spec.network_policy, nil when absent or null", function()
            local spec = create('"networkPolicy":{"defaultAction":"Deny","egress":[{"action":"allow",'
                .. '"target":"PyPI.org."},{"action":"allow","target":"10.1.0.0/16"}]}')
            assert.are.same({ defaultAction = "deny", egress = { { action = "allow", target = "pypi.org" },
                { action = "allow", target = "10.1.0.0/16" } } }, spec.network_policy)
            assert.are.same({ defaultAction = "deny", egress = {} }, create('"networkPolicy":{}').network_policy)
            assert.is_nil(create('"networkPolicy":null').network_policy)
            assert.is_nil(create().network_policy)
        end)

        it("refuses a malformed policy with 400 naming the field", function()
            invalid("networkPolicy.egress[1].target 'a..b' is not a valid domain name.",
                create('"networkPolicy":{"egress":[{"action":"allow","target":"a.b"},'
                    .. '{"action":"allow","target":"a..b"}]}'))
            invalid("networkPolicy.defaultAction must be 'allow' or 'deny'.",
                create('"networkPolicy":{"defaultAction":"drop"}'))
            invalid("networkPolicy must be an object with defaultAction and egress.", create('"networkPolicy":"deny"'))
        end)
    end)

    describe("snapshotId (create from a snapshot)", function()
        it("takes a snapshot id instead of an image, with a default entrypoint", function()
            local spec = assert(validate.create(assert(json.decode(
                '{"snapshotId":" 0b6f3c1e-2a4d-4f6b-9c1d-3e5f7a9b1c2d ","resourceLimits":{}}')), OPTS))
            assert.equal("0b6f3c1e-2a4d-4f6b-9c1d-3e5f7a9b1c2d", spec.snapshot_id)
            assert.is_nil(spec.image)
            assert.same({ "tail", "-f", "/dev/null" }, spec.entrypoint)
            spec = assert(validate.create(assert(json.decode(
                '{"snapshotId":"snap_123","entrypoint":["sleep","60"],"resourceLimits":{}}')), OPTS))
            assert.same({ "sleep", "60" }, spec.entrypoint)
            -- the default is a copy: changing one spec's entrypoint changes no other
            local a = assert(validate.create(assert(json.decode('{"snapshotId":"a","resourceLimits":{}}')), OPTS))
            a.entrypoint[1] = "x"
            assert.same({ "tail", "-f", "/dev/null" }, validate.SNAPSHOT_ENTRYPOINT)
        end)

        it("refuses malformed ids, both sources, and a bad entrypoint", function()
            local function bad(text, message)
                local spec, err = validate.create(assert(json.decode(text)), OPTS)
                assert.is_nil(spec)
                assert_error(400, "SANDBOX::INVALID_PARAMETER", message, nil, err)
            end
            bad('{"snapshotId":1,"resourceLimits":{}}', "snapshotId must be a string.")
            bad('{"snapshotId":"  ","resourceLimits":{}}', "snapshotId must not be blank.")
            bad('{"snapshotId":"a/b","resourceLimits":{}}',
                "snapshotId must be 1-128 characters of letters, digits, '_', '.' or '-'.")
            bad('{"snapshotId":"' .. string.rep("a", 129) .. '","resourceLimits":{}}',
                "snapshotId must be 1-128 characters of letters, digits, '_', '.' or '-'.")
            bad('{"snapshotId":"s","image":{"uri":"busybox"},"entrypoint":["sh"],"resourceLimits":{}}',
                "image and snapshotId are mutually exclusive: provide exactly one.")
            bad('{"snapshotId":"s","entrypoint":[],"resourceLimits":{}}',
                "entrypoint must be a non-empty array of strings.")
            bad('{"snapshotId":"s"}', "resourceLimits is required.")
            -- neither source: the image is what is missing
            bad('{"entrypoint":["sh"],"resourceLimits":{}}', "image is required.")
        end)
    end)

    it("reports only the first failure, in the documented order", function()
        local all_bad = '"image":{"uri":"BAD"},"entrypoint":[],"timeout":1,"resourceLimits":{"cpu":"x"},'
            .. '"env":{"=":"x"},"metadata":{"Bad Key":"v"},"platform":{"os":"windows"},'
            .. '"extensions":{"poolRef":"P!"},"secureAccess":true,"snapshotId":"s"'
        local order = {
            { "snapshotId", "image and snapshotId are mutually exclusive" },
            { "image", "image.uri 'BAD' is not a valid image reference." },
            { "entrypoint", "entrypoint must be a non-empty array of strings." },
            { "timeout", "timeout must be an integer >= 60." },
            { "resourceLimits", "resourceLimits.cpu 'x' is invalid" },
            { "env", "env key '=' is invalid" },
            { "metadata", "Metadata key 'Bad Key' is invalid" },
            { "platform", "platform.os 'windows' is not supported" },
            { "extensions", "extensions.poolRef 'P!' is not a valid pool name." },
            { "secureAccess", "secureAccess is only supported" },
        }
        local good = {
            image = '"image":{"uri":"busybox"}', entrypoint = '"entrypoint":["sh"]', timeout = '"timeout":60',
            resourceLimits = '"resourceLimits":{}', env = '"env":{}', metadata = '"metadata":{}',
            platform = '"platform":null', extensions = '"extensions":{}', secureAccess = '"secureAccess":false',
            snapshotId = '"snapshotId":null',
        }
        local fixed = ""
        for _, step in ipairs(order) do
            local _, err = validate.create(assert(json.decode("{" .. all_bad .. fixed .. "}")), OPTS)
            assert.is_not_nil(err, step[1])
            assert.equal(1, err.message:find(step[2], 1, true), err.message)
            fixed = fixed .. "," .. good[step[1]]
        end
        assert.is_not_nil(validate.create(assert(json.decode("{" .. all_bad .. fixed .. "}")), OPTS))
    end)
end)

describe("sandbox.validate.list_query", function()
    it("has defaults", function()
        assert.same({ page = 1, page_size = 20 }, validate.list_query({}))
        assert.same({ page = 1, page_size = 20 }, validate.list_query(nil))
    end)

    it("collects states lowercased, ignoring blanks", function()
        local f = validate.list_query({ state = { "running", "Paused", "", "  " } })
        assert.same({ running = true, paused = true }, f.states)
        assert.is_nil(validate.list_query({ state = { "" } }).states)
    end)

    it("parses the metadata filter once, splitting on & and the first =", function()
        assert.same({ team = "infra", note = "" }, validate.list_query({ metadata = { "team=infra&note=" } }).metadata)
        assert.same({ a = "b=c" }, validate.list_query({ metadata = { "a=b=c" } }).metadata)
        assert.same({ a = "2" }, validate.list_query({ metadata = { "a=1&a=2" } }).metadata)
        assert.same({ a = "%41" }, validate.list_query({ metadata = { "a=%41" } }).metadata)
        assert.is_nil(validate.list_query({ metadata = { "" } }).metadata)
    end)

    it("rejects malformed metadata segments", function()
        for seg, text in pairs({ ["novalue"] = "novalue", ["=v"] = "=v", [""] = "a=b&", [" "] = "a=b& " }) do
            assert_error(400, "INVALID_METADATA_FORMAT", "Invalid metadata format: bad query field: '" .. seg .. "'",
                validate.list_query({ metadata = { text } }))
        end
        assert_error(400, "INVALID_METADATA_FORMAT", "Invalid metadata format: bad query field: ''",
            validate.list_query({ metadata = { "&a=b" } }))
    end)

    it("validates page and pageSize", function()
        local f = validate.list_query({ page = { "3" }, pageSize = { "200" } })
        assert.equal(3, f.page)
        assert.equal(200, f.page_size)
        assert.equal(1, validate.list_query({ pageSize = { "1" } }).page_size)
        for _, p in ipairs({ "0", "-1", "1.5", "", "x", " 1" }) do
            invalid("page must be an integer >= 1.", validate.list_query({ page = { p } }))
        end
        for _, p in ipairs({ "0", "201", "1.0", "", "x" }) do
            invalid("pageSize must be an integer between 1 and 200.", validate.list_query({ pageSize = { p } }))
        end
        assert.is_true(validate.list_query({ page = { "99999999999999999999999" } }).page >= 1000000000000000)
    end)
end)

describe("sandbox.validate.renew", function()
    it("returns the expiry in microseconds", function()
        assert.equal(NOW + 123456, validate.renew({ expiresAt = "2026-01-01T08:00:00.123456789+08:00" }))
    end)

    it("rejects non-object bodies with INVALID_PARAMETER", function()
        invalid("Request body must be a JSON object.", validate.renew("x"))
        invalid("Request body must be a JSON object.", validate.renew(json.null))
    end)

    it("rejects a missing, non-string or unparsable expiresAt", function()
        for _, b in ipairs({ {}, { expiresAt = 1767225600 }, { expiresAt = json.null },
            { expiresAt = "tomorrow" }, { expiresAt = "2026-02-30T00:00:00Z" } }) do
            assert_error(400, "DOCKER::INVALID_EXPIRATION", "expiresAt must be an RFC 3339 date-time.",
                validate.renew(b))
        end
    end)
end)

describe("sandbox.validate.metadata_patch", function()
    it("maps strings to set and null to delete", function()
        assert.same({ a = "1", b = false }, validate.metadata_patch(json.decode('{"a":"1","b":null}')))
        assert.same({}, validate.metadata_patch({}))
    end)

    it("rejects the reserved prefix even with a null value", function()
        label_invalid("Metadata key 'opensandbox.io/x' uses the reserved prefix 'opensandbox.io/'. Keys under this "
            .. "prefix are managed by the system and cannot be set via metadata.",
            validate.metadata_patch(json.decode('{"opensandbox.io/x":null}')))
    end)

    it("rejects non-string values and bad labels", function()
        invalid("metadata.a must be a string or null.", validate.metadata_patch({ a = 1 }))
        invalid("metadata.a must be a string or null.", validate.metadata_patch({ a = {} }))
        label_invalid(nil, validate.metadata_patch(json.decode('{"Bad Key":null}')))
        label_invalid(nil, validate.metadata_patch({ k = "has space" }))
        invalid("Request body must be a JSON object.", validate.metadata_patch({ "a" }))
    end)
end)

describe("sandbox.validate.endpoint", function()
    it("parses the port and use_server_proxy", function()
        assert.same({ port = 44772, use_server_proxy = false }, validate.endpoint("44772", {}))
        assert.same({ port = 1, use_server_proxy = true }, validate.endpoint("1", { use_server_proxy = { "TRUE" } }))
        assert.same({ port = 65535, use_server_proxy = false },
            validate.endpoint("65535", { use_server_proxy = { "off" } }))
        for s, b in pairs({ ["true"] = true, ["1"] = true, yes = true, ON = true, ["false"] = false, ["0"] = false,
            No = false, off = false }) do
            assert.equal(b, validate.endpoint("80", { use_server_proxy = { s } }).use_server_proxy, s)
        end
    end)

    it("rejects bad ports first", function()
        for _, p in ipairs({ "0", "65536", "-1", "abc", "", "80a", "1.5", "99999999999999999999" }) do
            assert_error(400, "DOCKER::INVALID_PORT", "Port must be between 1 and 65535.",
                validate.endpoint(p, { expires = { "1" }, use_server_proxy = { "maybe" } }))
        end
    end)

    it("rejects bad booleans", function()
        invalid("use_server_proxy must be a boolean (true/false/1/0/yes/no/on/off).",
            validate.endpoint("80", { use_server_proxy = { "maybe" } }))
        invalid(nil, validate.endpoint("80", { use_server_proxy = { "" } }))
    end)

    it("handles expires", function()
        invalid("use_server_proxy cannot be combined with expires; signed endpoints require the gateway route.",
            validate.endpoint("80", { use_server_proxy = { "true" }, expires = { "123" } }))
        assert_error(400, "SANDBOX::API_NOT_SUPPORTED", "expires is not supported by this server.",
            validate.endpoint("80", { use_server_proxy = { "false" }, expires = { "123" } }))
        assert_error(400, "SANDBOX::API_NOT_SUPPORTED", nil, validate.endpoint("80", { expires = { "" } }))
    end)
end)

describe("sandbox.validate snapshots", function()
    it("takes an optional name in the create-snapshot body", function()
        assert.same({}, validate.snapshot_create(nil))
        assert.same({}, validate.snapshot_create({}))
        assert.same({}, validate.snapshot_create(assert(json.decode('{"name":null,"other":1}'))))
        assert.same({ name = "before import" }, validate.snapshot_create({ name = "before import" }))
        invalid("name must be a string.", validate.snapshot_create({ name = 5 }))
        invalid("name must not be empty.", validate.snapshot_create({ name = "" }))
        invalid("name must be at most 256 bytes.", validate.snapshot_create({ name = string.rep("n", 257) }))
        invalid("name must not contain control characters.", validate.snapshot_create({ name = "a\nb" }))
        invalid("Request body must be a JSON object.", validate.snapshot_create(assert(json.decode("[1]"))))
    end)

    it("reads the list query: sandboxId, states, paging", function()
        assert.same({ page = 1, page_size = 20 }, validate.snapshot_list_query({}))
        local f = assert(validate.snapshot_list_query({ sandboxId = { "x", " sb-1 " }, state = { "Ready", "failed" },
            page = { "2" }, pageSize = { "5" }, metadata = { "bad" } }))
        assert.same({ page = 2, page_size = 5, sandbox_id = "sb-1", states = { ready = true, failed = true } }, f)
        -- a state no snapshot has matches nothing (rather than everything)
        f = assert(validate.snapshot_list_query({ state = { "Running" } }))
        assert.same({ [""] = true }, f.states)
        invalid("pageSize must be an integer between 1 and 200.", validate.snapshot_list_query({ pageSize = { "0" } }))
        invalid("page must be an integer >= 1.", validate.snapshot_list_query({ page = { "x" } }))
    end)
end)
