-- Integration spec: the lifecycle routes (API.md §2-§5) of the real server against the real Docker daemon:
-- create/GET/list shapes, every create validation rule, 404 on every route, PATCH, renew, endpoints, list
-- filters and pagination, pause/resume/delete, exited containers, manual cleanup and TTL expiry.
--
--   cd /work/main && lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' \
--       tests/lua/integration/lifecycle
local H = require("lifecycle.helpers")
local json = H.json
local null = json.null

local MAX_TIMEOUT = 3600

describe("lifecycle API #integration #docker", function()
    local srv

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
        srv = H.start({ config = { server = { max_sandbox_timeout_seconds = MAX_TIMEOUT } } })
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    local function path(id, suffix)
        return "/v1/sandboxes/" .. id .. (suffix or "")
    end

    local function count_keys(t)
        local n = 0
        for _ in pairs(t) do
            n = n + 1
        end
        return n
    end

    describe("create", function()
        it("replies 202 at once with Location and the Pending shape, without image", function()
            local res = H.create_raw(srv, {
                metadata = { team = "infra", ["app.kubernetes.io/name"] = "x", note = "" },
                platform = { os = "linux", arch = "amd64" },
            })
            assert.are.equal(202, res.status, res.body)
            assert.matches("application/json", res.headers["content-type"])
            local b = res.json
            assert.are.equal("/v1/sandboxes/" .. b.id, res.headers["location"])
            assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x+$", b.id)
            assert.are.same({ state = "Pending", reason = "CONTAINER_STARTING",
                message = "Sandbox container is starting.", lastTransitionAt = b.createdAt }, b.status)
            assert.are.same({ team = "infra", ["app.kubernetes.io/name"] = "x", note = "" }, b.metadata)
            assert.are.same({ os = "linux", arch = "amd64" }, b.platform)
            assert.are.same({ "sleep", "600" }, b.entrypoint)
            assert.matches(H.ISO_PATTERN, b.createdAt)
            assert.are.equal(H.parse_time(b.createdAt) + 600 * 1000000, H.parse_time(b.expiresAt))
            assert.is_nil(b.image)
            assert.are.equal(7, count_keys(b), res.body)
            assert.is_nil(res.body:find("null", 1, true))

            local sb = H.wait_state(srv, b.id, "Running", 60)
            H.assert_sandbox_shape(sb)
            assert.are.same({ uri = H.IMAGE }, sb.image)
            assert.are.equal(b.createdAt, sb.createdAt)
            assert.are.equal(b.expiresAt, sb.expiresAt)
            assert.are.same({ os = "linux", arch = "amd64" }, sb.platform)
            assert.are.equal("CONTAINER_RUNNING", sb.status.reason)
            assert.are.equal("Sandbox container is running.", sb.status.message)
            assert.is_true(H.parse_time(sb.status.lastTransitionAt) >= H.parse_time(sb.createdAt))
        end)

        it("omits expiresAt (never null) for manual cleanup; renew is 409 and the sandbox stays", function()
            local id, res = H.create(srv, { timeout = null })
            assert.is_nil(res.json.expiresAt)
            assert.is_nil(res.body:find("expiresAt", 1, true))
            local sb = H.wait_state(srv, id, "Running", 60)
            assert.is_nil(sb.expiresAt)
            local g = H.call(srv, "GET", path(id))
            assert.is_nil(g.body:find("null", 1, true))
            assert.is_nil(g.body:find("platform", 1, true))
            H.assert_error(H.call(srv, "POST", path(id, "/renew-expiration"), { expiresAt = H.iso(3600) }),
                409, "DOCKER::INVALID_EXPIRATION", "Sandbox " .. id .. " does not have automatic expiration enabled.")
            -- explicit null is manual cleanup too, and the sandbox is still there
            local id2, res2 = H.create(srv, { timeout = null })
            assert.is_nil(res2.json.expiresAt)
            assert.are.equal(200, H.call(srv, "GET", path(id)).status)
            assert.are.equal(204, H.call(srv, "DELETE", path(id2)).status)
            assert.are.equal(204, H.call(srv, "DELETE", path(id)).status)
        end)

        it("accepts what the SDK sends (secureAccess false, extensions {}, empty volumes, unknown fields)", function()
            local res = H.call(srv, "POST", "/v1/sandboxes", '{"image":{"uri":"' .. H.IMAGE .. '"},'
                .. '"entrypoint":["sleep","600"],"timeout":600.0,"resourceLimits":{"cpu":"500m","memory":"64Mi"},'
                .. '"resourceRequests":{"cpu":"1"},"secureAccess":false,"extensions":{},"volumes":[],'
                .. '"credentialProxy":{"enabled":false},"snapshotId":null,"networkPolicy":null,'
                .. '"env":{"A":"1","B":null},"timeout":' .. MAX_TIMEOUT .. '}')
            assert.are.equal(202, res.status, res.body)
            -- duplicate key: the last timeout (equal to the configured maximum) wins
            assert.are.equal(H.parse_time(res.json.createdAt) + MAX_TIMEOUT * 1000000,
                H.parse_time(res.json.expiresAt))
            assert.are.equal(204, H.call(srv, "DELETE", path(res.json.id)).status)
        end)

        local P, LBL = "SANDBOX::INVALID_PARAMETER", "SANDBOX::INVALID_METADATA_LABEL"
        local NS = "SANDBOX::API_NOT_SUPPORTED"
        local function prefix(p)
            return function(m)
                return m:sub(1, #p) == p
            end
        end
        local long = string.rep("a", 64)
        local cases = {
            { "empty body", "", P, "Request body must be a JSON object." },
            { "malformed JSON", "{bad", P, "Request body must be a JSON object." },
            { "non-object body", "[1,2]", P, "Request body must be a JSON object." },
            { "invalid UTF-8", '{"image":"\255"}', P, "Request body must be a JSON object." },
            { "missing image", { image = null }, P, "image is required." },
            { "image not an object", { image = "busybox" }, P, "image must be an object." },
            { "blank image.uri", { image = { uri = "   " } }, P, "image.uri must not be blank." },
            { "bad reference", { image = { uri = "Bad/Image" } },
                P, "image.uri 'Bad/Image' is not a valid image reference." },
            { "half auth", { image = { uri = H.IMAGE, auth = { username = "u" } } }, P,
                "image.auth.password must be a non-empty string." },
            { "empty auth username", { image = { uri = H.IMAGE, auth = { username = "", password = "p" } } }, P,
                "image.auth.username must be a non-empty string." },
            { "missing entrypoint", { entrypoint = null }, P, "entrypoint is required." },
            { "empty entrypoint", '{"image":{"uri":"x"},"entrypoint":[],"resourceLimits":{}}', P,
                "entrypoint must be a non-empty array of strings." },
            { "empty first element", { entrypoint = { "" } }, P, "entrypoint[0] must not be empty." },
            { "non-string element", { entrypoint = { "sh", 1 } }, P, "entrypoint[1] must be a string." },
            { "timeout below 60", { timeout = 59 }, P, "timeout must be an integer >= 60." },
            { "fractional timeout", { timeout = 60.5 }, P, "timeout must be an integer >= 60." },
            { "string timeout", { timeout = "600" }, P, "timeout must be an integer >= 60." },
            { "boolean timeout", { timeout = true }, P, "timeout must be an integer >= 60." },
            { "timeout above the maximum", { timeout = 7200 }, P,
                "Sandbox timeout 7200s exceeds configured maximum of 3600s." },
            { "missing resourceLimits", { resourceLimits = null }, P, "resourceLimits is required." },
            { "numeric cpu", { resourceLimits = { cpu = 1 } }, P, "resourceLimits.cpu must be a string." },
            { "bad cpu", { resourceLimits = { cpu = "1.5cores" } },
                P, prefix("resourceLimits.cpu '1.5cores' is invalid") },
            { "cpu below 10m", { resourceLimits = { cpu = "5m" } }, P,
                "resourceLimits.cpu '5m' is below the minimum of 10m (0.01 CPU)." },
            { "cpu above NCPU", { resourceLimits = { cpu = "1000" } }, P, prefix("resourceLimits.cpu '1000' exceeds") },
            { "bad memory", { resourceLimits = { memory = "512MB" } },
                P, prefix("resourceLimits.memory '512MB' is invalid") },
            { "memory below 6Mi", { resourceLimits = { memory = "1Mi" } }, P,
                "resourceLimits.memory '1Mi' is below the minimum of 6Mi (6291456 bytes)." },
            { "bad gpu", { resourceLimits = { gpu = "0" } },
                P, "resourceLimits.gpu '0' must be a positive integer or 'all'." },
            { "env key with =", { env = { ["A=B"] = "x" } }, P,
                "env key 'A=B' is invalid: keys must be non-empty and contain no '=' or NUL." },
            { "env value not a string", { env = { A = 1 } }, P, "env.A must be a string or null." },
            { "reserved metadata prefix", { metadata = { ["opensandbox.io/id"] = "x" } }, LBL,
                "Metadata key 'opensandbox.io/id' uses the reserved prefix 'opensandbox.io/'. Keys under this "
                    .. "prefix are managed by the system and cannot be set via metadata." },
            { "metadata key with a space", { metadata = { ["Bad Key"] = "v" } },
                LBL, prefix("Metadata key 'Bad Key' is invalid: ") },
            { "metadata key /name", { metadata = { ["/name"] = "v" } },
                LBL, prefix("Metadata key '/name' is invalid: ") },
            { "metadata uppercase prefix", { metadata = { ["INVALID_PREFIX.io/name"] = "v" } }, LBL,
                prefix("Metadata key 'INVALID_PREFIX.io/name' is invalid: ") },
            { "metadata 64-char value", { metadata = { k = long } },
                LBL, prefix("Metadata value '" .. long .. "' is invalid: ") },
            { "metadata value with space", { metadata = { k = "has space" } },
                LBL, prefix("Metadata value 'has space' is invalid: ") },
            { "metadata value not a string", { metadata = { k = 1 } }, P, "metadata.k must be a string." },
            { "windows platform", { platform = { os = "windows", arch = "amd64" } }, NS,
                "platform.os 'windows' is not supported by this server." },
            { "bad arch", { platform = { os = "linux", arch = "x86" } },
                P, "platform.arch must be 'amd64' or 'arm64'." },
            { "poolRef of a pool that does not exist", { extensions = { poolRef = "pool-a" } }, P,
                "extensions.poolRef: pool 'pool-a' does not exist." },
            { "renew extend out of range", { extensions = { ["access.renew.extend.seconds"] = "100" } }, P,
                "extensions.access.renew.extend.seconds must be a decimal string between 300 and 86400." },
            { "secureAccess true", { secureAccess = true },
                P, "secureAccess is only supported by the Kubernetes provider." },
            { "secureAccess not a boolean", { secureAccess = "yes" }, P, "secureAccess must be a boolean." },
            { "snapshotId beside image", { snapshotId = "snap-1" }, P,
                "image and snapshotId are mutually exclusive: provide exactly one." },
            { "a malformed networkPolicy", { networkPolicy = { defaultAction = "deny", egress = { { action = "allow",
                target = "*.*" } } } }, P, "networkPolicy.egress[0].target '*.*' is not a valid wildcard domain "
                .. "(*.example.com)." },
            { "credentialProxy enabled", { credentialProxy = { enabled = true } }, NS,
                "credentialProxy is not supported by this server." },
            { "a volume without mountPath", { volumes = { { name = "v", host = { path = "/tmp" } } } },
                "VOLUME::INVALID_MOUNT_PATH", "Volume 'v': mountPath is required and must be a non-empty string." },
            -- check order: image before timeout before metadata
            { "first failure only", { image = { uri = "" }, timeout = 1, metadata = { ["Bad Key"] = "v" } }, P,
                "image.uri must not be blank." },
            { "timeout before resourceLimits", { timeout = 1, resourceLimits = { cpu = "x" } }, P,
                "timeout must be an integer >= 60." },
        }
        for _, c in ipairs(cases) do
            it("rejects " .. c[1] .. " with 400 " .. c[3], function()
                local body = c[2]
                if type(body) == "table" then
                    body = H.body(body)
                end
                local res = H.call(srv, "POST", "/v1/sandboxes", body)
                H.assert_error(res, 400, c[3], c[4])
            end)
        end

        it("rejects a body over 1 MiB with 413 and a wrong method with 405", function()
            local big = '{"image":{"uri":"' .. H.IMAGE .. '"},"entrypoint":["sleep"],"resourceLimits":{},"pad":"'
            big = big .. string.rep("x", 1048576 - #big - 2 + 1) .. '"}'
            assert.are.equal(1048577, #big)
            H.assert_error(H.call(srv, "POST", "/v1/sandboxes", big), 413, "GENERAL::PAYLOAD_TOO_LARGE",
                "Request body exceeds 1048576 bytes.")
            local res = H.call(srv, "PUT", "/v1/sandboxes")
            H.assert_error(res, 405, "GENERAL::METHOD_NOT_ALLOWED", "Method Not Allowed")
            assert.matches("POST", res.headers["allow"])
            assert.matches("GET", res.headers["allow"])
            H.assert_error(H.call(srv, "GET", "/v1/sandboxes/x/pause"), 405, "GENERAL::METHOD_NOT_ALLOWED")
            H.assert_error(H.call(srv, "GET", "/v1/sandboxes/x/unknown"), 404, "GENERAL::NOT_FOUND", "Not Found")
        end)

        it("creates no record for rejected requests", function()
            H.create_raw(srv, { metadata = { rejected = "yes" }, timeout = 1 })
            local res = H.call(srv, "GET", "/v1/sandboxes?metadata=rejected%3Dyes")
            assert.are.equal(200, res.status)
            assert.are.equal(0, res.json.pagination.totalItems)
            assert.matches('"items":%[%]', res.body)
        end)
    end)

    describe("unknown id", function()
        local id = "00000000-0000-4000-8000-000000000000"
        local routes = {
            { "GET", "" },
            { "DELETE", "" },
            { "POST", "/pause" },
            { "POST", "/resume" },
            { "POST", "/renew-expiration", { expiresAt = "2099-01-01T00:00:00Z" } },
            { "GET", "/endpoints/44772" },
            { "GET", "/endpoints/8080?use_server_proxy=true" },
            { "PATCH", "/metadata", { a = "b" } },
        }
        for _, r in ipairs(routes) do
            it("answers 404 DOCKER::SANDBOX_NOT_FOUND on " .. r[1] .. " " .. (r[2] ~= "" and r[2] or "/"), function()
                local res = H.call(srv, r[1], path(id, r[2]), r[3], { ["X-Request-ID"] = "req-404-check" })
                H.assert_error(res, 404, "DOCKER::SANDBOX_NOT_FOUND", "Sandbox " .. id .. " not found.")
                assert.are.equal("req-404-check", res.headers["x-request-id"])
            end)
        end
        it("answers 404 on the root form and with a trailing slash too", function()
            H.assert_error(H.call(srv, "GET", "/sandboxes/" .. id), 404, "DOCKER::SANDBOX_NOT_FOUND")
            H.assert_error(H.call(srv, "GET", "/v1/sandboxes/" .. id .. "/"), 404, "DOCKER::SANDBOX_NOT_FOUND")
        end)
        it("checks the renew body and the endpoint port before the id", function()
            H.assert_error(H.call(srv, "POST", path(id, "/renew-expiration"), { expiresAt = "soon" }), 400,
                "DOCKER::INVALID_EXPIRATION", "expiresAt must be an RFC 3339 date-time.")
            H.assert_error(H.call(srv, "GET", path(id, "/endpoints/0")), 400, "DOCKER::INVALID_PORT",
                "Port must be between 1 and 65535.")
            -- the id is checked before the "in the past" rule
            H.assert_error(H.call(srv, "POST", path(id, "/renew-expiration"), { expiresAt = "2001-01-01T00:00:00Z" }),
                404, "DOCKER::SANDBOX_NOT_FOUND")
        end)
    end)

    describe("with a running sandbox", function()
        local id, created

        setup(function()
            local res
            id, res = H.create(srv, { metadata = { team = "infra", note = "", keep = "1" } })
            created = res.json
            H.wait_state(srv, id, "Running", 60)
        end)

        it("PATCH merges metadata (RFC 7396) and keeps createdAt and the status", function()
            local before = H.call(srv, "GET", path(id)).json
            local res = H.call(srv, "PATCH", path(id, "/metadata"),
                '{"team":"core","note":null,"missing":null,"added":"v"}')
            assert.are.equal(200, res.status, res.body)
            H.assert_sandbox_shape(res.json)
            assert.are.same({ team = "core", keep = "1", added = "v" }, res.json.metadata)
            assert.are.equal(created.createdAt, res.json.createdAt)
            assert.are.same(before.status, res.json.status)
            assert.are.equal(before.expiresAt, res.json.expiresAt)
            -- {} is a no-op
            res = H.call(srv, "PATCH", path(id, "/metadata"), "{}")
            assert.are.equal(200, res.status)
            assert.are.same({ team = "core", keep = "1", added = "v" }, res.json.metadata)
            assert.are.same({ team = "core", keep = "1", added = "v" }, H.call(srv, "GET", path(id)).json.metadata)
            -- list filters see the patched metadata
            local l = H.call(srv, "GET", "/v1/sandboxes?metadata=team%3Dcore%26added%3Dv")
            assert.are.equal(1, l.json.pagination.totalItems)
            assert.are.equal(id, l.json.items[1].id)
            assert.are.equal(0, H.call(srv, "GET", "/v1/sandboxes?metadata=team%3Dinfra%26keep%3D1").json
                .pagination.totalItems)
        end)

        it("PATCH rejects reserved keys (even null), bad keys and values, and non-object bodies", function()
            H.assert_error(H.call(srv, "PATCH", path(id, "/metadata"), '{"opensandbox.io/expires-at":null}'), 400,
                "SANDBOX::INVALID_METADATA_LABEL", "Metadata key 'opensandbox.io/expires-at' uses the reserved "
                    .. "prefix 'opensandbox.io/'. Keys under this prefix are managed by the system and cannot be set "
                    .. "via metadata.")
            H.assert_error(H.call(srv, "PATCH", path(id, "/metadata"), '{"Bad Key":"v"}'), 400,
                "SANDBOX::INVALID_METADATA_LABEL", function(m)
                    return m:find("^Metadata key 'Bad Key' is invalid: ") ~= nil
                end)
            H.assert_error(H.call(srv, "PATCH", path(id, "/metadata"), '{"k":"has space"}'), 400,
                "SANDBOX::INVALID_METADATA_LABEL", function(m)
                    return m:find("^Metadata value 'has space' is invalid: ") ~= nil
                end)
            H.assert_error(H.call(srv, "PATCH", path(id, "/metadata"), '{"k":1}'), 400,
                "SANDBOX::INVALID_PARAMETER", "metadata.k must be a string or null.")
            H.assert_error(H.call(srv, "PATCH", path(id, "/metadata"), '["k"]'), 400,
                "SANDBOX::INVALID_PARAMETER", "Request body must be a JSON object.")
            H.assert_error(H.call(srv, "PATCH", path(id, "/metadata"), ""), 400,
                "SANDBOX::INVALID_PARAMETER", "Request body must be a JSON object.")
        end)

        it("renew validates, normalises to UTC microseconds and allows an earlier time", function()
            local r = path(id, "/renew-expiration")
            H.assert_error(H.call(srv, "POST", r, { expiresAt = H.iso(-10) }), 400, "DOCKER::INVALID_EXPIRATION",
                "New expiration time must be in the future.")
            H.assert_error(H.call(srv, "POST", r, {}), 400, "DOCKER::INVALID_EXPIRATION",
                "expiresAt must be an RFC 3339 date-time.")
            H.assert_error(H.call(srv, "POST", r, { expiresAt = 1234 }), 400, "DOCKER::INVALID_EXPIRATION",
                "expiresAt must be an RFC 3339 date-time.")
            H.assert_error(H.call(srv, "POST", r, { expiresAt = "2099-02-30T00:00:00Z" }), 400,
                "DOCKER::INVALID_EXPIRATION", "expiresAt must be an RFC 3339 date-time.")
            H.assert_error(H.call(srv, "POST", r, "[]"), 400, "SANDBOX::INVALID_PARAMETER",
                "Request body must be a JSON object.")
            local year = tonumber(os.date("!%Y")) + 3
            local res = H.call(srv, "POST", r, { expiresAt = year .. "-01-01t10:00:00.1234567+02:00" })
            assert.are.equal(200, res.status, res.body)
            assert.are.same({ expiresAt = year .. "-01-01T08:00:00.123456Z" }, res.json)
            assert.are.equal(year .. "-01-01T08:00:00.123456Z", H.call(srv, "GET", path(id)).json.expiresAt)
            -- earlier than the current expiry, and no offset means UTC
            local t = os.date("!%Y-%m-%d %H:%M:%S", os.time() + 7200)
            res = H.call(srv, "POST", r, { expiresAt = t })
            assert.are.equal(200, res.status, res.body)
            assert.are.equal(t:gsub(" ", "T") .. ".000000Z", res.json.expiresAt)
            local sb = H.call(srv, "GET", path(id)).json
            assert.are.equal(res.json.expiresAt, sb.expiresAt)
            -- a renewal is not a state change
            assert.are.equal("Running", sb.status.state)
            assert.are.equal(created.createdAt, sb.createdAt)
        end)

        it("resolves endpoints per §7", function()
            local info = H.inspect("sandbox-" .. id)
            local ports = info.NetworkSettings.Ports
            local agent_hp = ports["44772/tcp"][1].HostPort
            local http_hp = ports["8080/tcp"][1].HostPort
            assert.are.equal("127.0.0.1", ports["44772/tcp"][1].HostIp)

            local res = H.call(srv, "GET", path(id, "/endpoints/44772"))
            assert.are.equal(200, res.status, res.body)
            assert.are.equal("127.0.0.1:" .. agent_hp .. "/proxy/44772", res.json.endpoint)
            local token = res.json.headers["X-EXECD-ACCESS-TOKEN"]
            assert.matches("^%x+$", token)
            assert.is_true(#token >= 32)
            local env_token
            for _, e in ipairs(info.Config.Env) do
                env_token = e:match("^EXECD_ACCESS_TOKEN=(.*)$") or env_token
            end
            assert.are.equal(token, env_token)

            res = H.call(srv, "GET", path(id, "/endpoints/8080?use_server_proxy=false"))
            assert.are.equal(200, res.status, res.body)
            assert.are.same({ endpoint = "127.0.0.1:" .. http_hp }, res.json)

            res = H.call(srv, "GET", path(id, "/endpoints/18080"))
            assert.are.equal(200, res.status, res.body)
            assert.are.equal("127.0.0.1:" .. agent_hp .. "/proxy/18080", res.json.endpoint)
            assert.are.equal(token, res.json.headers["X-EXECD-ACCESS-TOKEN"])

            res = H.call(srv, "GET", path(id, "/endpoints/8080?use_server_proxy=true"))
            assert.are.equal(200, res.status, res.body)
            assert.are.equal("127.0.0.1:" .. srv.port .. "/sandboxes/" .. id .. "/proxy/8080", res.json.endpoint)

            res = H.call(srv, "GET", path(id, "/endpoints/44772?use_server_proxy=ON"))
            assert.are.equal(200, res.status, res.body)
            assert.are.equal("127.0.0.1:" .. srv.port .. "/sandboxes/" .. id .. "/proxy/44772", res.json.endpoint)
            assert.are.equal(token, res.json.headers["X-EXECD-ACCESS-TOKEN"])
        end)

        it("rejects bad endpoint ports and the expires combinations", function()
            for _, p in ipairs({ "0", "65536", "abc", "-1", "99999999999" }) do
                H.assert_error(H.call(srv, "GET", path(id, "/endpoints/" .. p)), 400, "DOCKER::INVALID_PORT",
                    "Port must be between 1 and 65535.")
            end
            H.assert_error(H.call(srv, "GET", path(id, "/endpoints/8080?use_server_proxy=true&expires=1700000000")),
                400, "SANDBOX::INVALID_PARAMETER",
                "use_server_proxy cannot be combined with expires; signed endpoints require the gateway route.")
            H.assert_error(H.call(srv, "GET", path(id, "/endpoints/8080?expires=1700000000")), 400,
                "SANDBOX::API_NOT_SUPPORTED", "expires is not supported by this server.")
            H.assert_error(H.call(srv, "GET", path(id, "/endpoints/8080?use_server_proxy=false&expires=1")), 400,
                "SANDBOX::API_NOT_SUPPORTED", "expires is not supported by this server.")
            H.assert_error(H.call(srv, "GET", path(id, "/endpoints/8080?use_server_proxy=maybe")), 400,
                "SANDBOX::INVALID_PARAMETER")
        end)
    end)

    describe("list", function()
        local s1, s2, s3

        setup(function()
            s1 = H.create(srv, { metadata = { suite = "list", note = "" } })
            s2 = H.create(srv, { metadata = { suite = "list", note = "x" } })
            s3 = H.create(srv, { metadata = { suite = "list" } })
            for _, id in ipairs({ s1, s2, s3 }) do
                H.wait_state(srv, id, "Running", 60)
            end
        end)

        local function ids(res)
            local out = {}
            for i, sb in ipairs(res.json.items) do
                out[i] = sb.id
            end
            return out
        end

        it("paginates as in the §5 example", function()
            local res = H.call(srv, "GET", "/v1/sandboxes?metadata=suite%3Dlist&pageSize=2&page=1")
            assert.are.equal(200, res.status, res.body)
            assert.are.same({ s3, s2 }, ids(res))
            assert.are.same({ page = 1, pageSize = 2, totalItems = 3, totalPages = 2, hasNextPage = true },
                res.json.pagination)
            for _, sb in ipairs(res.json.items) do
                H.assert_sandbox_shape(sb)
            end
            res = H.call(srv, "GET", "/v1/sandboxes?metadata=suite%3Dlist&pageSize=2&page=2")
            assert.are.same({ s1 }, ids(res))
            assert.are.same({ page = 2, pageSize = 2, totalItems = 3, totalPages = 2, hasNextPage = false },
                res.json.pagination)
            res = H.call(srv, "GET", "/v1/sandboxes?metadata=suite%3Dlist&pageSize=2&page=3")
            assert.are.equal(200, res.status)
            assert.matches('"items":%[%]', res.body)
            assert.are.equal(false, res.json.pagination.hasNextPage)
            -- defaults
            res = H.call(srv, "GET", "/sandboxes?metadata=suite%3Dlist")
            assert.are.same({ s3, s2, s1 }, ids(res))
            assert.are.equal(20, res.json.pagination.pageSize)
            assert.are.equal(1, res.json.pagination.page)
        end)

        it("filters on metadata (note= matches the empty value) and on state, AND-ed", function()
            assert.are.same({ s1 }, ids(H.call(srv, "GET", "/v1/sandboxes?metadata=suite%3Dlist%26note%3D")))
            assert.are.same({ s2 }, ids(H.call(srv, "GET", "/v1/sandboxes?metadata=suite%3Dlist%26note%3Dx")))
            -- the last repeated key wins; empty metadata= is no filter
            assert.are.same({ s2 }, ids(H.call(srv, "GET", "/v1/sandboxes?metadata=note%3D%26suite%3Dlist%26note%3Dx")))
            assert.is_true(H.call(srv, "GET", "/v1/sandboxes?metadata=").json.pagination.totalItems >= 3)

            assert.are.equal(202, H.call(srv, "POST", path(s2, "/pause")).status)
            local base = "/v1/sandboxes?metadata=suite%3Dlist"
            assert.are.same({ s2 }, ids(H.call(srv, "GET", base .. "&state=paused")))
            assert.are.same({ s3, s1 }, ids(H.call(srv, "GET", base .. "&state=RUNNING")))
            assert.are.same({ s3, s2, s1 }, ids(H.call(srv, "GET", base .. "&state=running&state=Paused")))
            assert.are.same({ s3, s2, s1 }, ids(H.call(srv, "GET", base .. "&state=")))
            local none = H.call(srv, "GET", base .. "&state=bogus")
            assert.are.same({}, ids(none))
            assert.are.same({ page = 1, pageSize = 20, totalItems = 0, totalPages = 0, hasNextPage = false },
                none.json.pagination)
            assert.are.same({}, ids(H.call(srv, "GET", base .. "%26note%3D&state=paused")))
            assert.are.equal(202, H.call(srv, "POST", path(s2, "/resume")).status)
        end)

        it("rejects malformed metadata filters and bad page parameters", function()
            H.assert_error(H.call(srv, "GET", "/v1/sandboxes?metadata=suite"), 400, "INVALID_METADATA_FORMAT",
                "Invalid metadata format: bad query field: 'suite'")
            H.assert_error(H.call(srv, "GET", "/v1/sandboxes?metadata=a%3Db%26"), 400, "INVALID_METADATA_FORMAT",
                "Invalid metadata format: bad query field: ''")
            H.assert_error(H.call(srv, "GET", "/v1/sandboxes?metadata=%3Dv"), 400, "INVALID_METADATA_FORMAT",
                "Invalid metadata format: bad query field: '=v'")
            H.assert_error(H.call(srv, "GET", "/v1/sandboxes?page=0"), 400, "SANDBOX::INVALID_PARAMETER",
                "page must be an integer >= 1.")
            H.assert_error(H.call(srv, "GET", "/v1/sandboxes?pageSize=201"), 400, "SANDBOX::INVALID_PARAMETER",
                "pageSize must be an integer between 1 and 200.")
            H.assert_error(H.call(srv, "GET", "/v1/sandboxes?pageSize=x"), 400, "SANDBOX::INVALID_PARAMETER",
                "pageSize must be an integer between 1 and 200.")
        end)
    end)

    describe("pause, resume, delete", function()
        it("create then pause at once waits for provisioning; pause twice 409; resume running 409", function()
            local id = H.create(srv)
            local res = H.call(srv, "POST", path(id, "/pause"))
            assert.are.equal(202, res.status, res.body)
            assert.are.equal("", res.body)
            assert.are.equal("0", res.headers["content-length"])
            local sb = H.call(srv, "GET", path(id)).json
            assert.are.same("Paused", sb.status.state)
            assert.are.same("CONTAINER_PAUSED", sb.status.reason)
            assert.are.same("Sandbox container is paused.", sb.status.message)
            assert.is_true(H.inspect("sandbox-" .. id).State.Paused)

            H.assert_error(H.call(srv, "POST", path(id, "/pause")), 409, "DOCKER::SANDBOX_NOT_RUNNING",
                "Sandbox is not in a running state.")
            -- a paused sandbox still gets its endpoints; PATCH and renew do not change its status
            local ep = H.call(srv, "GET", path(id, "/endpoints/8080"))
            assert.are.equal(200, ep.status, ep.body)
            assert.are.equal(200, H.call(srv, "PATCH", path(id, "/metadata"), { p = "1" }).status)
            assert.are.same(sb.status, H.call(srv, "GET", path(id)).json.status)
            res = H.call(srv, "POST", path(id, "/resume"), "ignored body")
            assert.are.equal(202, res.status, res.body)
            assert.are.equal("0", res.headers["content-length"])
            assert.are.equal("Running", H.call(srv, "GET", path(id)).json.status.state)
            assert.is_false(H.inspect("sandbox-" .. id).State.Paused)
            H.assert_error(H.call(srv, "POST", path(id, "/resume")), 409, "DOCKER::SANDBOX_NOT_PAUSED",
                "Sandbox is not in a paused state.")
        end)

        it("endpoint and renew right after create wait for provisioning (the SDK's flow)", function()
            local id = H.create(srv)
            local res = H.call(srv, "GET", path(id, "/endpoints/44772?use_server_proxy=false"))
            assert.are.equal(200, res.status, res.body)
            local hp = H.inspect("sandbox-" .. id).NetworkSettings.Ports["44772/tcp"][1].HostPort
            assert.are.equal("127.0.0.1:" .. hp .. "/proxy/44772", res.json.endpoint)
            local id2 = H.create(srv)
            res = H.call(srv, "POST", path(id2, "/renew-expiration"), { expiresAt = H.iso(1200) })
            assert.are.equal(200, res.status, res.body)
            assert.are.equal("Running", H.call(srv, "GET", path(id2)).json.status.state)
            assert.are.equal(204, H.call(srv, "DELETE", path(id)).status)
            assert.are.equal(204, H.call(srv, "DELETE", path(id2)).status)
        end)

        it("serializes concurrent operations on one sandbox", function()
            local id = H.create_running(srv)
            local function burst(method, suffix, n)
                local out = H.run(string.format("for i in $(seq 1 %d); do curl -s -o /dev/null -w '%%{http_code}\\n' "
                    .. "-X %s %s%s & done; wait", n, method, srv.base, path(id, suffix)))
                local counts = {}
                for code in out:gmatch("%d%d%d") do
                    counts[code] = (counts[code] or 0) + 1
                end
                return counts
            end
            assert.are.same({ ["202"] = 1, ["409"] = 9 }, burst("POST", "/pause", 10))
            assert.are.equal("Paused", H.call(srv, "GET", path(id)).json.status.state)
            assert.are.same({ ["202"] = 1, ["409"] = 9 }, burst("POST", "/resume", 10))
            assert.are.equal("Running", H.call(srv, "GET", path(id)).json.status.state)
            assert.are.same({ ["204"] = 1, ["404"] = 9 }, burst("DELETE", "", 10))
            assert.is_false(H.container_exists("sandbox-" .. id))
        end)

        it("delete replies 204, then GET and a second DELETE are 404 and the container is gone", function()
            local id = H.create_running(srv)
            assert.is_true(H.container_exists("sandbox-" .. id))
            local res = H.call(srv, "DELETE", path(id))
            assert.are.equal(204, res.status, res.body)
            assert.are.equal("", res.body)
            assert.are.equal("0", res.headers["content-length"])
            H.assert_error(H.call(srv, "GET", path(id)), 404, "DOCKER::SANDBOX_NOT_FOUND",
                "Sandbox " .. id .. " not found.")
            H.assert_error(H.call(srv, "DELETE", path(id)), 404, "DOCKER::SANDBOX_NOT_FOUND")
            assert.is_false(H.container_exists("sandbox-" .. id))
        end)

        it("delete right after create waits for provisioning and leaves no container", function()
            local id = H.create(srv)
            assert.are.equal(204, H.call(srv, "DELETE", path(id)).status)
            H.assert_error(H.call(srv, "GET", path(id)), 404, "DOCKER::SANDBOX_NOT_FOUND")
            assert.is_false(H.container_exists("sandbox-" .. id))
        end)

        it("deletes a paused sandbox", function()
            local id = H.create_running(srv)
            assert.are.equal(202, H.call(srv, "POST", path(id, "/pause")).status)
            assert.are.equal(204, H.call(srv, "DELETE", path(id)).status)
            assert.is_false(H.container_exists("sandbox-" .. id))
        end)

        it("reports exited containers as Terminated / Failed, keeps them listed, and 409s pause/resume", function()
            -- lives long enough for its published ports to be seen (they vanish when it exits)
            local ok_id = H.create(srv, { entrypoint = { "sleep", "2" } })
            local bad_id = H.create(srv, { entrypoint = { "sh", "-c", "exit 3" } })
            local sb = H.wait_state(srv, ok_id, "Terminated", 60)
            assert.are.equal("CONTAINER_EXITED", sb.status.reason)
            assert.are.equal("Sandbox container exited successfully.", sb.status.message)
            sb = H.wait_state(srv, bad_id, "Failed", 60)
            assert.are.equal("CONTAINER_EXITED_ERROR", sb.status.reason)
            assert.are.equal("Sandbox container exited with code 3.", sb.status.message)
            H.assert_error(H.call(srv, "POST", path(bad_id, "/pause")), 409, "DOCKER::SANDBOX_NOT_RUNNING",
                "Sandbox is not in a running state.")
            H.assert_error(H.call(srv, "POST", path(ok_id, "/resume")), 409, "DOCKER::SANDBOX_NOT_PAUSED",
                "Sandbox is not in a paused state.")
            local l = H.call(srv, "GET", "/v1/sandboxes?state=terminated&state=failed")
            local seen = {}
            for _, it_ in ipairs(l.json.items) do
                seen[it_.id] = true
            end
            assert.is_true(seen[ok_id] and seen[bad_id])
            -- exited sandboxes still get their stored endpoints
            local ep = H.call(srv, "GET", path(ok_id, "/endpoints/44772"))
            assert.are.equal(200, ep.status, ep.body)
            assert.matches("^127%.0%.0%.1:%d+/proxy/44772$", ep.json.endpoint)
            -- renewing an exited sandbox is allowed
            local renewed = H.call(srv, "POST", path(bad_id, "/renew-expiration"), { expiresAt = H.iso(900) })
            assert.are.equal(200, renewed.status, renewed.body)
            assert.are.equal(204, H.call(srv, "DELETE", path(ok_id)).status)
            assert.are.equal(204, H.call(srv, "DELETE", path(bad_id)).status)
            assert.is_false(H.container_exists("sandbox-" .. bad_id))
        end)
    end)

    describe("expiry", function()
        it("re-checks the stored expiry when the timer fires: a later renewal wins", function()
            local id = H.create_running(srv, { timeout = 60 })
            assert.are.equal(200, H.call(srv, "POST", path(id, "/renew-expiration"), { expiresAt = H.iso(1) }).status)
            local later = H.call(srv, "POST", path(id, "/renew-expiration"), { expiresAt = H.iso(3600) })
            assert.are.equal(200, later.status, later.body)
            H.sleep(2.5)
            local sb = H.call(srv, "GET", path(id)).json
            assert.is_table(sb, "the sandbox must survive its earlier expiry")
            assert.are.equal("Running", sb.status.state)
            assert.are.equal(later.json.expiresAt, sb.expiresAt)
            assert.are.equal(204, H.call(srv, "DELETE", path(id)).status)
        end)

        it("removes a sandbox at its (renewed) expiry: GET 404 and the container is gone, paused ones too", function()
            local a = H.create(srv, { timeout = 60 })
            local b = H.create(srv, { timeout = 60 })
            H.wait_state(srv, a, "Running", 60)
            H.wait_state(srv, b, "Running", 60)
            assert.are.equal(202, H.call(srv, "POST", path(b, "/pause")).status)
            local res = H.call(srv, "POST", path(a, "/renew-expiration"), { expiresAt = H.iso(2) })
            assert.are.equal(200, res.status, res.body)
            res = H.call(srv, "POST", path(b, "/renew-expiration"), { expiresAt = H.iso(2) })
            assert.are.equal(200, res.status, res.body)
            H.wait_gone(srv, a, 20)
            H.wait_gone(srv, b, 20)
            H.assert_error(H.call(srv, "GET", path(a)), 404, "DOCKER::SANDBOX_NOT_FOUND")
            H.assert_error(H.call(srv, "DELETE", path(b)), 404, "DOCKER::SANDBOX_NOT_FOUND")
            assert.is_false(H.container_exists("sandbox-" .. a))
            assert.is_false(H.container_exists("sandbox-" .. b))
        end)
    end)

    describe("endpoint reachability", function()
        -- the agent is optional in the build (-DOPENSANDBOX_EXECD=OFF): its checks need the binary
        local agent = os.getenv("OPENSANDBOX_EXECD_PATH") or (H.root() .. "/build/execd/opensandbox-execd")
        local has_agent = io.open(agent) ~= nil

        it("serves what the endpoints point at: 8080 directly, 44772 and 18080 through the agent", function()
            local id = H.create_running(srv, { entrypoint = { "sh", "-c",
                "echo hello > /tmp/index.html; httpd -p 18080 -h /tmp; exec httpd -f -p 8080 -h /tmp" } })
            local function fetch(port, p, with_headers)
                local ep = H.call(srv, "GET", path(id, "/endpoints/" .. port)).json
                local deadline = os.time() + 10
                local res
                repeat
                    res = H.curl({ url = "http://" .. ep.endpoint .. p, timeout = 5,
                        headers = with_headers and ep.headers or nil })
                    if res and res.status ~= 502 then
                        return res
                    end
                    H.sleep(0.2)
                until os.time() > deadline
                return res
            end
            local res = fetch("8080", "/index.html", true)
            assert.are.equal(200, res and res.status)
            assert.are.equal("hello\n", res.body)
            if not has_agent then
                return
            end
            res = fetch("44772", "/ping", true)
            assert.are.equal(200, res and res.status)
            res = fetch("44772", "/ping", false)
            assert.are.equal(401, res and res.status)
            res = fetch("18080", "/index.html", true)
            assert.are.equal(200, res and res.status)
            assert.are.equal("hello\n", res.body)
            assert.are.equal(204, H.call(srv, "DELETE", path(id)).status)
        end)
    end)

    describe("resource failures", function()
        it("reports an OOM kill and a GPU request the host cannot satisfy", function()
            local oom = H.create(srv, { resourceLimits = { memory = "16Mi" }, entrypoint = { "tail", "/dev/zero" } })
            local gpu = H.create(srv, { resourceLimits = { gpu = "all" } })
            local sb = H.wait_state(srv, oom, "Failed", 60)
            assert.are.equal("CONTAINER_EXITED_ERROR", sb.status.reason)
            assert.are.equal("Sandbox container exited with code 137 (out of memory).", sb.status.message)
            assert.are.equal(16 * 1024 * 1024, H.inspect("sandbox-" .. oom).HostConfig.Memory)
            sb = H.wait_state(srv, gpu, "Failed", 60)
            assert.are.equal("PROVISIONING_ERROR", sb.status.reason)
            assert.matches("^DOCKER::SANDBOX_START_FAILED: ", sb.status.message)
            assert.is_false(H.container_exists("sandbox-" .. gpu))
            assert.are.equal(204, H.call(srv, "DELETE", path(oom)).status)
            assert.are.equal(204, H.call(srv, "DELETE", path(gpu)).status)
        end)
    end)

    describe("misc routes", function()
        it("serves /health and /v1/health, and answers 204 to metrics events", function()
            local res = H.call(srv, "GET", "/v1/health")
            assert.are.equal(200, res.status)
            assert.are.equal('{"status":"healthy"}', res.body)
            res = H.call(srv, "POST", "/v1/metrics/events", "not json")
            assert.are.equal(204, res.status)
            assert.are.equal("0", res.headers["content-length"])
        end)
    end)
end)
