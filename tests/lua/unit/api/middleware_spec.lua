local F = dofile("tests/lua/unit/api/fakes.lua")
local mw = require("api.middleware")

local function gen()
    return "generated"
end

describe("api.middleware request_id", function()
    it("echoes a trimmed printable value of 1-256 characters", function()
        assert.equal("abc-123", mw.request_id("abc-123", gen))
        assert.equal("abc 123", mw.request_id("  abc 123\t", gen))
        assert.equal(string.rep("a", 256), mw.request_id(string.rep("a", 256), gen))
        assert.equal("~!", mw.request_id("~!", gen))
    end)

    it("generates an id for missing, empty, long or non-printable values", function()
        assert.equal("generated", mw.request_id(nil, gen))
        assert.equal("generated", mw.request_id("", gen))
        assert.equal("generated", mw.request_id("   ", gen))
        assert.equal("generated", mw.request_id(string.rep("a", 257), gen))
        assert.equal("generated", mw.request_id("a\1b", gen))
        assert.equal("generated", mw.request_id("caf\195\169", gen))
        assert.equal("generated", mw.request_id("a\127", gen))
    end)
end)

describe("api.middleware authentication", function()
    local auth = mw.authenticator({ { key = "secret-key", principal = "default" } })

    it("maps the right key to its principal, whatever the header name's case", function()
        assert.equal("default", auth(F.request({ headers = { ["open-sandbox-api-key"] = "secret-key" } })))
        assert.equal("default", auth(F.request({ headers = { ["OPEN-SANDBOX-API-KEY"] = "secret-key" } })))
    end)

    it("answers MISSING_API_KEY when the header is absent or empty", function()
        for _, req in ipairs({ F.request(), F.request({ headers = { ["Open-Sandbox-Api-Key"] = "" } }) }) do
            local p, err = auth(req)
            assert.is_nil(p)
            assert.equal(401, err.status)
            assert.equal("MISSING_API_KEY", err.code)
            assert.equal(
                "Authentication credentials are missing. Provide API key via OPEN-SANDBOX-API-KEY header.",
                err.message
            )
        end
    end)

    it("answers INVALID_API_KEY for any other value", function()
        for _, v in ipairs({ "secret-kez", "secret-key ", "secret", "secret-key-longer", "SECRET-KEY", " " }) do
            local p, err = auth(F.request({ headers = { ["OPEN-SANDBOX-API-KEY"] = v } }))
            assert.is_nil(p, v)
            assert.equal(401, err.status)
            assert.equal("INVALID_API_KEY", err.code)
            assert.equal("Authentication credentials are invalid. Check your API key and try again.", err.message)
        end
    end)

    it("lets everything through as principal default, an admin, when no key is configured", function()
        local p, admin = mw.authenticator({})(F.request())
        assert.equal("default", p)
        assert.is_true(admin)
        assert.same({}, mw.keys_from_config({ server = { api_key = "  " } }))
        assert.same({ { key = "k", principal = "default", admin = true } },
            mw.keys_from_config({ server = { api_key = "k" } }))
    end)

    it("supports several keys mapping to principals", function()
        local multi = mw.authenticator({ { key = "ka", principal = "alice" }, { key = "kb", principal = "bob" } })
        assert.equal("bob", multi(F.request({ headers = { ["OPEN-SANDBOX-API-KEY"] = "kb" } })))
        assert.equal("alice", multi(F.request({ headers = { ["OPEN-SANDBOX-API-KEY"] = "ka" } })))
    end)

    it("returns the admin flag with the principal: the single key is admin, tenants are not", function()
        local keys = mw.keys_from_config({ server = { api_key = "root-key", api_keys = {
            { key = "a-key", principal = "team-a" },
            { key = "ops-key", principal = "ops", admin = true },
            { key = "b-key", principal = "team-b", admin = false },
        } } })
        assert.same({
            { key = "root-key", principal = "default", admin = true },
            { key = "a-key", principal = "team-a", admin = false },
            { key = "ops-key", principal = "ops", admin = true },
            { key = "b-key", principal = "team-b", admin = false },
        }, keys)
        local tenant_auth = mw.authenticator(keys)
        local function who(key)
            return tenant_auth(F.request({ headers = { ["OPEN-SANDBOX-API-KEY"] = key } }))
        end
        local p, admin = who("root-key")
        assert.equal("default", p)
        assert.is_true(admin)
        p, admin = who("a-key")
        assert.equal("team-a", p)
        assert.is_false(admin)
        p, admin = who("ops-key")
        assert.equal("ops", p)
        assert.is_true(admin)
        p, admin = who("b-key")
        assert.equal("team-b", p)
        assert.is_false(admin)
        local err
        p, err = who("a-keyx")
        assert.is_nil(p)
        assert.equal("INVALID_API_KEY", err.code)
    end)

    it("tenant keys work without the single key", function()
        local keys = mw.keys_from_config({ server = { api_keys = {
            { key = "t", principal = "team-t", admin = false },
        } } })
        assert.same({ { key = "t", principal = "team-t", admin = false } }, keys)
        local p, err = mw.authenticator(keys)(F.request())
        assert.is_nil(p)
        assert.equal("MISSING_API_KEY", err.code)
    end)

    it("compares in constant time without an early exit", function()
        assert.is_true(mw.constant_time_equal("abc", "abc"))
        assert.is_false(mw.constant_time_equal("abd", "abc"))
        assert.is_false(mw.constant_time_equal("ab", "abc"))
        assert.is_false(mw.constant_time_equal("abcabc", "abc"))
        assert.is_false(mw.constant_time_equal("", ""))
        assert.is_false(mw.constant_time_equal("abcdefgh12345678x", "abcdefgh12345678"))
        assert.is_true(mw.constant_time_equal("abcdefgh12345678x", "abcdefgh12345678x"))
        -- The number of reads does not depend on where the strings differ.
        local real, count = string.unpack, 0
        string.unpack = function(...) -- luacheck: ignore 122
            count = count + 1
            return real(...)
        end
        mw.constant_time_equal("xbcdefghijklmnop", "abcdefghijklmnop")
        local first = count
        count = 0
        mw.constant_time_equal("abcdefghijklmnox", "abcdefghijklmnop")
        string.unpack = real -- luacheck: ignore 122
        assert.equal(first, count)
        assert.equal(4, first)
    end)

    it("compares equal exactly when the strings are equal, for every length and difference position", function()
        local base = "0123456789abcdefghijklmnopqrstuvwxyzABCD"
        for m = 1, 24 do
            local expected = base:sub(1, m)
            for n = 0, 26 do
                local given = base:sub(1, n)
                assert.equal(given == expected, mw.constant_time_equal(given, expected), n .. "/" .. m)
                for pos = 1, n do -- one byte changed anywhere
                    local other = given:sub(1, pos - 1) .. "#" .. given:sub(pos + 1)
                    assert.is_false(mw.constant_time_equal(other, expected), pos .. "@" .. n .. "/" .. m)
                end
            end
        end
        assert.is_false(mw.constant_time_equal("abc\0\0", "abc")) -- the padding is not part of the key
    end)
end)

describe("api.middleware exemptions", function()
    it("exempts exactly the documented paths", function()
        for _, p in ipairs({ "/health", "/v1/health", "/docs", "/docs/", "/docs/swagger-ui.css", "/redoc",
            "/openapi.json" }) do
            assert.is_true(mw.is_exempt(p), p)
        end
        for _, p in ipairs({ "/health/", "/v1/docs", "/v1/redoc", "/v1/openapi.json", "/redoc/x", "/docsx",
            "/sandboxes", "/v1/sandboxes/x", "/metrics/events", "/nope", "/", "/healthz" }) do
            assert.is_false(mw.is_exempt(p), p)
        end
    end)

    it("exempts proxy paths with a numeric port and no ..", function()
        for _, p in ipairs({
            "/sandboxes/abc/proxy/8080",
            "/v1/sandboxes/abc/proxy/8080",
            "/sandboxes/abc/proxy/8080/",
            "/v1/sandboxes/abc/proxy/44772/files/info?x",
            "/sandboxes/a%20b/proxy/1/x",
        }) do
            assert.is_true(mw.is_exempt(p), p)
        end
    end)

    it("requires the key on proxy-looking paths that fail the rule", function()
        for _, p in ipairs({
            "/sandboxes/abc/proxy/http",
            "/sandboxes/abc/proxy/80x",
            "/sandboxes/abc/proxy/",
            "/sandboxes//proxy/80",
            "/v2/sandboxes/abc/proxy/80",
            "/sandboxes/abc/proxy/80/../../../sandboxes",
            "/sandboxes/abc/proxy/80/%2e%2e/%2E%2E/sandboxes",
            "/sandboxes/abc/proxy/80/a..b",
            "/sandboxes/../proxy/80",
            "/sandboxes/abc/proxy/80%2e%2e",
        }) do
            assert.is_false(mw.is_exempt(p), p)
        end
    end)
end)

describe("api.middleware egress API", function()
    it("exempts exactly /sandboxes/{id}/egress/policy (its handler checks the egress token)", function()
        for _, p in ipairs({ "/sandboxes/abc/egress/policy", "/v1/sandboxes/abc/egress/policy",
            "/sandboxes/abc/egress/policy/" }) do
            assert.is_true(mw.is_exempt(p), p)
        end
        for _, p in ipairs({ "/sandboxes/abc/egress", "/sandboxes/abc/egress/policy/x", "/sandboxes//egress/policy",
            "/sandboxes/a/b/egress/policy", "/v2/sandboxes/abc/egress/policy", "/x/sandboxes/abc/egress/policy",
            "/sandboxes/abc/egress/policyx" }) do
            assert.is_false(mw.is_exempt(p), p)
        end
    end)
end)

describe("api.middleware CORS", function()
    local function preflight(path, extra)
        local h = { Origin = "http://app.example", ["Access-Control-Request-Method"] = "POST" }
        for k, v in pairs(extra or {}) do
            h[k] = v
        end
        return F.request({ method = "OPTIONS", path = path, headers = h })
    end

    it("recognises preflights on non-proxy routes only", function()
        assert.is_true(mw.is_preflight(preflight("/v1/sandboxes")))
        assert.is_true(mw.is_preflight(preflight("/anything")))
        assert.is_false(mw.is_preflight(preflight("/v1/sandboxes/x/proxy/80/")))
        assert.is_false(mw.is_preflight(preflight("/sandboxes/x/proxy/80")))
        assert.is_false(mw.is_preflight(F.request({ method = "OPTIONS", path = "/v1/sandboxes",
            headers = { Origin = "http://a" } })))
        assert.is_false(mw.is_preflight(F.request({ method = "GET", path = "/v1/sandboxes",
            headers = { Origin = "http://a", ["Access-Control-Request-Method"] = "GET" } })))
    end)

    it("echoes the origin with credentials", function()
        local h = mw.preflight_headers(preflight("/v1/sandboxes", { ["Access-Control-Request-Headers"] = "x-a" }))
        assert.equal("http://app.example", h["Access-Control-Allow-Origin"])
        assert.equal("true", h["Access-Control-Allow-Credentials"])
        assert.equal("x-a", h["Access-Control-Allow-Headers"])
        assert.matches("PATCH", h["Access-Control-Allow-Methods"])
        assert.same({}, mw.cors_headers(F.request(), {}))
    end)
end)
