-- The whole request pipeline of api.new with fake deps.
local F = dofile("tests/lua/unit/api/fakes.lua")
local api = require("api")
local errors = require("common.errors")
local json = require("common.json")

local KEY = { ["OPEN-SANDBOX-API-KEY"] = "secret-key" }

local function with_key(h)
    local out = { ["OPEN-SANDBOX-API-KEY"] = "secret-key" }
    for k, v in pairs(h or {}) do
        out[k] = v
    end
    return out
end

local function call(deps, t)
    local handler = api.new(deps)
    local status, headers, body = handler(F.request(t))
    return status, headers, body, body and json.decode(body)
end

local function assert_error(status, code, message, s, h, b)
    assert.equal(status, s)
    assert.equal("application/json", h["Content-Type"])
    assert.same({ code = code, message = message }, json.decode(b))
end

describe("api handler", function()
    local deps
    before_each(function()
        deps = F.deps()
    end)

    it("answers /health exactly, without a key, with a generated request id", function()
        for _, p in ipairs({ "/health", "/v1/health" }) do
            local s, h, b = call(deps, { path = p })
            assert.equal(200, s)
            assert.equal('{"status":"healthy"}', b)
            assert.equal("application/json", h["Content-Type"])
            assert.equal(F.GENERATED_ID, h["X-Request-ID"])
        end
        assert.same({ F.GENERATED_ID, F.GENERATED_ID }, deps.log.ids)
    end)

    it("echoes X-Request-ID on errors and binds it to the log", function()
        local s, h, b = call(deps, { path = "/v1/nope", headers = with_key({ ["X-Request-ID"] = " req-1 " }) })
        assert_error(404, "GENERAL::NOT_FOUND", "Not Found", s, h, b)
        assert.equal("req-1", h["X-Request-ID"])
        assert.same({ "req-1" }, deps.log.ids)
        s, h = call(deps, { path = "/v1/sandboxes", headers = { ["X-Request-ID"] = "r2" } })
        assert.equal(401, s)
        assert.equal("r2", h["X-Request-ID"])
    end)

    it("authenticates before routing", function()
        local s, h, b = call(deps, { path = "/v1/unknown" })
        assert_error(401, "MISSING_API_KEY",
            "Authentication credentials are missing. Provide API key via OPEN-SANDBOX-API-KEY header.", s, h, b)
        s, h, b = call(deps, { path = "/v1/unknown", headers = { ["open-sandbox-api-key"] = "wrong" } })
        assert_error(401, "INVALID_API_KEY",
            "Authentication credentials are invalid. Check your API key and try again.", s, h, b)
        s = call(deps, { method = "PUT", path = "/v1/sandboxes" })
        assert.equal(401, s)
        assert.equal(0, #deps.service.calls)
    end)

    it("skips auth when no key is configured", function()
        deps.config = { server = {} }
        local s = call(deps, { path = "/v1/sandboxes/x" })
        assert.equal(404, s)
        assert.equal("default", deps.service.calls[1].args[2].principal)
    end)

    it("answers 405 with Allow", function()
        local s, h, b = call(deps, { method = "PUT", path = "/v1/sandboxes/abc", headers = KEY })
        assert_error(405, "GENERAL::METHOD_NOT_ALLOWED", "Method Not Allowed", s, h, b)
        assert.equal("DELETE, GET, HEAD", h.Allow)
        assert.equal(F.GENERATED_ID, h["X-Request-ID"])
    end)

    it("answers 404 for the routes that are not implemented", function()
        local unimplemented = { "/poolz/x", "/v1/sandboxes/x/diagnostics/a" }
        for _, p in ipairs(unimplemented) do
            local s, h, b = call(deps, { path = p, headers = KEY })
            assert_error(404, "GENERAL::NOT_FOUND", "Not Found", s, h, b)
        end
    end)

    it("answers 413 for too large bodies on non-proxy routes", function()
        for _, r in ipairs({ { "POST", "/v1/sandboxes" }, { "POST", "/v1/metrics/events" },
            { "PATCH", "/sandboxes/x/metadata" }, { "GET", "/health" } }) do
            local s, h, b = call(deps, { method = r[1], path = r[2], headers = KEY, too_large = true })
            assert_error(413, "GENERAL::PAYLOAD_TOO_LARGE", "Request body exceeds 1048576 bytes.", s, h, b)
        end
        assert.equal(0, #deps.service.calls)
        -- The proxy has no body limit: the request reaches the proxy handler (unknown sandbox: 404).
        local s, _, b = call(deps, { method = "POST", path = "/v1/sandboxes/x/proxy/80/up", too_large = true,
            headers = KEY })
        assert.equal(404, s)
        assert.truthy(b:find("DOCKER::SANDBOX_NOT_FOUND", 1, true))
    end)

    it("answers 204 to metrics events whatever the body", function()
        for _, body in ipairs({ "", "not json", '{"eventType":"sandbox.create"}', "[1]" }) do
            local s, h, b = call(deps, { method = "POST", path = "/v1/metrics/events", body = body, headers = KEY })
            assert.equal(204, s)
            assert.is_nil(b)
            assert.equal(F.GENERATED_ID, h["X-Request-ID"])
        end
    end)

    it("lets exempt proxy paths through without a key when none is configured and guards the others", function()
        local open = F.deps()
        open.keys = {}
        local s, h, b = call(open, { path = "/v1/sandboxes/x/proxy/8080/index.html" })
        assert_error(404, "DOCKER::SANDBOX_NOT_FOUND", "Sandbox x not found.", s, h, b)
        s, h, b = call(deps, { path = "/v1/sandboxes/x/proxy/8080/index.html", headers = KEY })
        assert_error(404, "DOCKER::SANDBOX_NOT_FOUND", "Sandbox x not found.", s, h, b)
        s, h, b = call(deps, { path = "/v1/sandboxes/x/proxy/0/index.html", headers = KEY })
        assert_error(400, "DOCKER::INVALID_PORT", "Port must be between 1 and 65535.", s, h, b)
        s = call(deps, { path = "/v1/sandboxes/x/proxy/8080/%2e%2e/%2e%2e" })
        assert.equal(401, s)
        s = call(deps, { path = "/v1/sandboxes/x/proxy/8080/../.." })
        assert.equal(401, s)
    end)

    it("answers CORS preflights without auth and adds CORS headers to responses", function()
        local origin = { Origin = "http://ui.example", ["Access-Control-Request-Method"] = "DELETE" }
        local s, h, b = call(deps, { method = "OPTIONS", path = "/v1/sandboxes/x", headers = origin })
        assert.equal(200, s)
        assert.is_nil(b)
        assert.equal("http://ui.example", h["Access-Control-Allow-Origin"])
        assert.equal("true", h["Access-Control-Allow-Credentials"])
        assert.equal(F.GENERATED_ID, h["X-Request-ID"])
        s, h = call(deps, { path = "/v1/sandboxes", headers = { Origin = "http://ui.example" } })
        assert.equal(401, s)
        assert.equal("http://ui.example", h["Access-Control-Allow-Origin"])
        -- On the proxy route a preflight is a request like any other.
        s = call(deps, { method = "OPTIONS", path = "/v1/sandboxes/x/proxy/80/", headers = with_key(origin) })
        assert.equal(404, s)
    end)

    it("with a key configured, the proxy needs a key or the sandbox's capability (X-OpenSandbox-Proxy-Token)",
        function()
            local proxy = require("api.proxy")
            deps.service = F.service({ proxy_token = function(id)
                return id == "x" and "cap-of-x" or nil
            end })
            -- neither: 401, before the sandbox is looked up
            local s, h, b = call(deps, { path = "/v1/sandboxes/x/proxy/8080/" })
            assert_error(401, "MISSING_API_KEY", proxy.MISSING_CREDENTIALS, s, h, b)
            -- a wrong key and no token: 401 INVALID_API_KEY
            s = call(deps, { path = "/v1/sandboxes/x/proxy/8080/", headers = { ["OPEN-SANDBOX-API-KEY"] = "nope" } })
            assert.equal(401, s)
            -- a wrong token, or the token of another sandbox: 401, the target is never asked for
            for _, t in ipairs({ { "x", "cap-of-y" }, { "y", "cap-of-x" }, { "x", "" .. ("c"):rep(8) } }) do
                s, h, b = call(deps, { path = "/v1/sandboxes/" .. t[1] .. "/proxy/8080/",
                    headers = { ["X-OpenSandbox-Proxy-Token"] = t[2] } })
                assert_error(401, "INVALID_API_KEY", proxy.INVALID_TOKEN, s, h, b)
            end
            for _, c in ipairs(deps.service.calls) do
                assert.are_not.equal("proxy_target", c.name)
            end
            -- the right token: the request reaches the target lookup (the fake knows no sandbox: 404)
            s = call(deps, { path = "/v1/sandboxes/x/proxy/8080/",
                headers = { ["x-opensandbox-proxy-token"] = "cap-of-x" } })
            assert.equal(404, s)
            assert.equal("proxy_target", deps.service.calls[#deps.service.calls].name)
        end)

    it("answers 500 and logs the traceback when a handler raises", function()
        deps.service = F.service({ get = function() error("kaboom") end })
        local s, h, b = call(deps, { path = "/v1/sandboxes/x", headers = KEY })
        assert_error(500, "GENERAL::UNKNOWN_ERROR", "Internal server error.", s, h, b)
        assert.equal(F.GENERATED_ID, h["X-Request-ID"])
        local line = deps.log.lines[#deps.log.lines]
        assert.equal("error", line.level)
        assert.matches("kaboom", line.fields.err)
        assert.matches("stack traceback", line.fields.err)
    end)

    it("answers 500 when a handler returns nothing usable", function()
        deps.service = F.service({ get = function() return nil, "a string" end })
        local s = call(deps, { path = "/v1/sandboxes/x", headers = KEY })
        assert.equal(500, s)
        assert.equal("error", deps.log.lines[#deps.log.lines].level)
    end)

    describe("sandbox routes", function()
        it("create: validates, calls the service, answers 202 with Location", function()
            deps.service = F.service({ create = { id = "sb-1", status = { state = "Pending" } } })
            local s, h, _, v = call(deps, {
                method = "POST",
                path = "/v1/sandboxes",
                body = '{"image":{"uri":"python:3"},"entrypoint":["sh"],"resourceLimits":{}}',
                headers = with_key({ Host = "api.example:8080", ["X-Request-ID"] = "rid" }),
            })
            assert.equal(202, s)
            assert.equal("/v1/sandboxes/sb-1", h.Location)
            assert.equal("application/json", h["Content-Type"])
            assert.same({ id = "sb-1", status = { state = "Pending" } }, v)
            local c = deps.validate.calls.create
            assert.same({ uri = "python:3" }, c.body.image)
            assert.same({ max_timeout = 3600, ncpu = 2, now_us = 1767225600500000 }, c.opts)
            local call1 = deps.service.calls[1]
            assert.equal("create", call1.name)
            assert.same({ spec = true, image = { uri = "python:3" } }, call1.args[1])
            assert.same({ request_id = "rid", principal = "default", admin = true, host = "api.example:8080",
                remote_addr = "192.0.2.7" }, call1.args[2])
        end)

        it("create: a body that is not an object is 400 and the service is not called", function()
            for _, body in ipairs({ "", "[]", "{", "\"x\"" }) do
                local s, h, b = call(deps, { method = "POST", path = "/sandboxes", body = body, headers = KEY })
                assert_error(400, "SANDBOX::INVALID_PARAMETER", "Request body must be a JSON object.", s, h, b)
            end
            assert.equal(0, #deps.service.calls)
            assert.is_nil(deps.validate.calls.create)
        end)

        it("create: a validation error is rendered as is", function()
            deps.validate.create = function()
                return nil, errors.invalid("timeout must be an integer >= 60.")
            end
            local s, h, b = call(deps, { method = "POST", path = "/sandboxes", body = "{}", headers = KEY })
            assert_error(400, "SANDBOX::INVALID_PARAMETER", "timeout must be an integer >= 60.", s, h, b)
            assert.equal(0, #deps.service.calls)
        end)

        it("list: passes the decoded query to the validator and the filter to the service", function()
            deps.service = F.service({ list = { items = json.array(), pagination = { page = 1 } } })
            local s, _, b = call(deps, { path = "/v1/sandboxes/", query = "state=Running&state=paused&metadata=a%3Db",
                headers = KEY })
            assert.equal(200, s)
            assert.matches('"items":[]', b, 1, true)
            assert.same({ items = {}, pagination = { page = 1 } }, json.decode(b))
            assert.same({ state = { "Running", "paused" }, metadata = { "a=b" } }, deps.validate.calls.list_query)
            assert.same({ filter = true }, deps.service.calls[1].args[1])
        end)

        it("get: 200 with the sandbox; errors carry their headers", function()
            deps.service = F.service({ get = { id = "a b" } })
            local s, _, _, v = call(deps, { path = "/v1/sandboxes/a%20b", headers = KEY })
            assert.equal(200, s)
            assert.same({ id = "a b" }, v)
            assert.equal("a b", deps.service.calls[1].args[1])
            deps.service = F.service({ delete = function()
                local msg = "Sandbox x is still being provisioned."
                return nil, errors.new(409, "SANDBOX::PROVISIONING_IN_PROGRESS", msg, { ["Retry-After"] = "5" })
            end })
            local h, b
            s, h, b = call(deps, { method = "DELETE", path = "/v1/sandboxes/x", headers = KEY })
            assert_error(409, "SANDBOX::PROVISIONING_IN_PROGRESS", "Sandbox x is still being provisioned.", s, h, b)
            assert.equal("5", h["Retry-After"])
        end)

        it("answers a request that may have written only once the store says it is durable; reads never wait",
            function()
                deps.service = F.service({ delete = true, get = { id = "x" } })
                local waits = 0
                deps.durable = function()
                    waits = waits + 1
                    return true
                end
                assert.equal(200, (call(deps, { path = "/v1/sandboxes/x", headers = KEY })))
                assert.equal(0, waits, "a GET does not wait")
                assert.equal(204, (call(deps, { method = "DELETE", path = "/v1/sandboxes/x", headers = KEY })))
                assert.equal(1, waits)
                -- a flush that failed: the change is not promised, 503 STORE::UNAVAILABLE instead of the 204
                deps.durable = function()
                    return nil, "fdatasync failed: Input/output error"
                end
                local s, h, b = call(deps, { method = "DELETE", path = "/v1/sandboxes/x", headers = KEY })
                assert_error(503, "STORE::UNAVAILABLE",
                    "The state store could not make the change durable: fdatasync failed: Input/output error", s, h, b)
                assert.equal("5", h["Retry-After"])
            end)

        it("delete 204, pause and resume 202, all without a body", function()
            deps.service = F.service({ delete = true, pause = true, resume = true })
            for _, r in ipairs({ { "DELETE", "/v1/sandboxes/x", 204 }, { "POST", "/v1/sandboxes/x/pause", 202 },
                { "POST", "/sandboxes/x/resume/", 202 } }) do
                local s, h, b = call(deps, { method = r[1], path = r[2], body = "ignored{", headers = KEY })
                assert.equal(r[3], s)
                assert.is_nil(b)
                assert.is_nil(h["Content-Type"])
            end
            assert.same({ "delete", "pause", "resume" },
                { deps.service.calls[1].name, deps.service.calls[2].name, deps.service.calls[3].name })
            assert.equal("x", deps.service.calls[3].args[1])
        end)

        it("renew: object body, validated, service gets microseconds", function()
            deps.service = F.service({ renew = { expiresAt = "2026-01-01T00:00:00.000000Z" } })
            local s, _, _, v = call(deps, { method = "POST", path = "/v1/sandboxes/x/renew-expiration",
                body = '{"expiresAt":"2026-01-01T00:00:00Z"}', headers = KEY })
            assert.equal(200, s)
            assert.same({ expiresAt = "2026-01-01T00:00:00.000000Z" }, v)
            assert.same({ "x", 1767225600000000 }, { deps.service.calls[1].args[1], deps.service.calls[1].args[2] })
            s = call(deps, { method = "POST", path = "/v1/sandboxes/x/renew-expiration", body = "[]", headers = KEY })
            assert.equal(400, s)
        end)

        it("endpoint: port string and query go to the validator", function()
            deps.service = F.service({ endpoint = { endpoint = "127.0.0.1:1234/proxy/44772",
                headers = { ["X-EXECD-ACCESS-TOKEN"] = "t" } } })
            local s, _, _, v = call(deps, { path = "/v1/sandboxes/x/endpoints/44772", query = "use_server_proxy=true",
                headers = KEY })
            assert.equal(200, s)
            assert.equal("127.0.0.1:1234/proxy/44772", v.endpoint)
            assert.same({ port = "44772", params = { use_server_proxy = { "true" } } }, deps.validate.calls.endpoint)
            local args = deps.service.calls[1].args
            assert.same({ "x", 44772, true }, { args[1], args[2], args[3] })
        end)

        it("patch metadata: object body, validated patch to the service", function()
            deps.service = F.service({ patch_metadata = { id = "x", metadata = { a = "1" } } })
            local s, _, _, v = call(deps, { method = "PATCH", path = "/v1/sandboxes/x/metadata",
                body = '{"a":"1","b":null}', headers = KEY })
            assert.equal(200, s)
            assert.same({ id = "x", metadata = { a = "1" } }, v)
            assert.equal("1", deps.validate.calls.metadata_patch.a)
            assert.equal(json.null, deps.validate.calls.metadata_patch.b)
            s = call(deps, { method = "PATCH", path = "/v1/sandboxes/x/metadata", body = "null", headers = KEY })
            assert.equal(400, s)
        end)

        it("diagnostics: checks the scope, then asks the service with the caller's context", function()
            local d = { sandboxId = "x", kind = "logs", scope = "container", delivery = "inline",
                contentType = "text/plain; charset=utf-8", content = "a\n", contentLength = 2, truncated = false }
            deps.service = F.service({ diagnostic_logs = d, diagnostic_events = d })
            local s, _, _, v = call(deps, { path = "/v1/sandboxes/x/diagnostics/logs", query = "scope=container",
                headers = KEY })
            assert.equal(200, s)
            assert.same(d, v)
            local c = deps.service.calls[1]
            assert.equal("diagnostic_logs", c.name)
            assert.equal("x", c.args[1])
            assert.equal("container", c.args[2])
            assert.equal("default", c.args[3].principal)
            s = call(deps, { path = "/sandboxes/x/diagnostics/events/", query = "scope=all", headers = KEY })
            assert.equal(200, s)
            assert.equal("diagnostic_events", deps.service.calls[2].name)
            assert.equal("all", deps.service.calls[2].args[2])
            -- scope missing, empty, unknown, or not one of this kind's: 400 and no service call
            for _, q in ipairs({ "", "scope=", "scope=network", "scope=lifecycle" }) do
                local b
                s, _, b = call(deps, { path = "/v1/sandboxes/x/diagnostics/logs", query = q, headers = KEY })
                assert.equal(400, s, q)
                assert.equal("SANDBOX::INVALID_PARAMETER", json.decode(b).code)
            end
            s = call(deps, { path = "/v1/sandboxes/x/diagnostics/events", query = "scope=container", headers = KEY })
            assert.equal(400, s)
            assert.equal(2, #deps.service.calls)
            -- auth like every lifecycle route
            s = call(deps, { path = "/v1/sandboxes/x/diagnostics/logs", query = "scope=container" })
            assert.equal(401, s)
        end)
    end)
end)

describe("api handler with the real sandbox.validate", function()
    local ok = pcall(require, "sandbox.validate")
    local deps
    before_each(function()
        deps = F.deps()
        deps.validate = nil
    end)

    local cases = {
        { "GET", "/v1/sandboxes/x/endpoints/0", "", 400, "DOCKER::INVALID_PORT" },
        { "GET", "/v1/sandboxes/x/endpoints/80", "use_server_proxy=maybe", 400, "SANDBOX::INVALID_PARAMETER" },
        { "GET", "/v1/sandboxes", "page=0", 400, "SANDBOX::INVALID_PARAMETER" },
        { "GET", "/v1/sandboxes", "metadata=a%3Db%26", 400, "INVALID_METADATA_FORMAT" },
        { "POST", "/v1/sandboxes/x/renew-expiration", "", 400, "DOCKER::INVALID_EXPIRATION", '{"expiresAt":1}' },
        { "PATCH", "/v1/sandboxes/x/metadata", "", 400, "SANDBOX::INVALID_METADATA_LABEL",
            '{"opensandbox.io/x":null}' },
        { "POST", "/v1/sandboxes", "", 400, "SANDBOX::INVALID_PARAMETER", '{"image":"x"}' },
    }
    for _, c in ipairs(cases) do
        local test = ok and it or pending
        test(c[1] .. " " .. c[2] .. "?" .. c[3] .. " -> " .. c[5], function()
            local s, h, b = api.new(deps)(F.request({ method = c[1], path = c[2], query = c[3], body = c[6],
                headers = KEY }))
            assert.equal(c[4], s)
            assert.equal(c[5], json.decode(b).code)
            assert.equal("application/json", h["Content-Type"])
            assert.equal(0, #deps.service.calls)
        end)
    end
end)
