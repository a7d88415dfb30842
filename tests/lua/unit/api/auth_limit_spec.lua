-- Unit spec of the failed-key rate limit (server.auth_failure_limit, lua/api/middleware.lua): counting per
-- client address, the 429 answer with Retry-After, the window, the bound on tracked addresses, the config
-- key, and the wiring into the request handler. The constant-time key comparison has its own spec in
-- middleware_spec.lua ("compares in constant time without an early exit").
local F = dofile("tests/lua/unit/api/fakes.lua")
local mw = require("api.middleware")
local config = require("config")

local KEYS = { { key = "right-key", principal = "default", admin = true } }

local function req(key, addr)
    return F.request({ headers = key and { ["OPEN-SANDBOX-API-KEY"] = key } or nil, remote_addr = addr })
end

describe("api.middleware failed-key rate limit", function()
    local t, limiter, auth
    before_each(function()
        t = 1000
        limiter = mw.failure_limiter(3, function()
            return t
        end)
        auth = mw.authenticator(KEYS, limiter)
    end)

    it("is off unless configured", function()
        assert.is_nil(mw.failure_limiter(nil))
        assert.is_nil(mw.failure_limiter(false))
        assert.is_nil(mw.limiter_from_config({ server = {} }))
        assert.is_table(mw.limiter_from_config({ server = { auth_failure_limit = 5 } }))
    end)

    it("answers 429 with Retry-After once an address used up its failures, even for the right key", function()
        for _ = 1, 3 do
            local p, err = auth(req("wrong", "10.0.0.1"))
            assert.is_nil(p)
            assert.equal(401, err.status)
            assert.equal("INVALID_API_KEY", err.code)
        end
        t = t + 20
        local p, err = auth(req("wrong", "10.0.0.1"))
        assert.is_nil(p)
        assert.equal(429, err.status)
        assert.equal("GENERAL::TOO_MANY_REQUESTS", err.code)
        assert.equal("40", err.headers["Retry-After"])
        assert.equal("Too many failed authentication attempts from this address. Retry after 40 seconds.",
            err.message)
        -- the right key is refused too while the window lasts: a guess cannot be confirmed
        p, err = auth(req("right-key", "10.0.0.1"))
        assert.is_nil(p)
        assert.equal(429, err.status)
        -- other addresses are not affected
        assert.equal("default", (auth(req("right-key", "10.0.0.2"))))
        p, err = auth(req("wrong", "10.0.0.2"))
        assert.is_nil(p)
        assert.equal(401, err.status)
    end)

    it("does not count a missing key or a right key", function()
        for _ = 1, 10 do
            local _, err = auth(req(nil, "10.0.0.1"))
            assert.equal("MISSING_API_KEY", err.code)
            assert.equal("default", (auth(req("right-key", "10.0.0.1"))))
        end
        assert.equal(0, limiter.tracked())
    end)

    it("lets the address try again when its window is over", function()
        for _ = 1, 3 do
            auth(req("wrong", "10.0.0.1"))
        end
        t = t + 59.5
        local _, err = auth(req("right-key", "10.0.0.1"))
        assert.equal(429, err.status)
        assert.equal("1", err.headers["Retry-After"])
        t = t + 0.5
        assert.equal("default", (auth(req("right-key", "10.0.0.1"))))
        local p
        p, err = auth(req("wrong", "10.0.0.1"))
        assert.is_nil(p)
        assert.equal(401, err.status)
        assert.equal(1, limiter.tracked())
    end)

    it("tracks a bounded number of addresses, sweeping expired ones first", function()
        local saved = mw.MAX_TRACKED
        mw.MAX_TRACKED = 4
        local ok, e = pcall(function()
            local l = mw.failure_limiter(1, function()
                return t
            end)
            for i = 1, 6 do
                l.fail("10.1.0." .. i)
            end
            assert.equal(4, l.tracked())
            assert.is_table(l.check("10.1.0.1"))
            assert.is_nil(l.check("10.1.0.6")) -- not tracked: no room
            t = t + 61
            l.fail("10.1.0.9")
            assert.equal(1, l.tracked())
            assert.is_table(l.check("10.1.0.9"))
        end)
        mw.MAX_TRACKED = saved
        assert(ok, e)
    end)

    it("is a documented config key: a positive integer or false", function()
        assert.equal(5, assert(config.validate({ server = { auth_failure_limit = 5 } })).server.auth_failure_limit)
        assert.is_nil(assert(config.validate({})).server.auth_failure_limit)
        assert.is_falsy(assert(config.validate({ server = { auth_failure_limit = false } })).server
            .auth_failure_limit)
        local c, err = config.validate({ server = { auth_failure_limit = 0 } })
        assert.is_nil(c)
        assert.matches("server.auth_failure_limit", err, 1, true)
        c, err = config.validate({ server = { auth_failure_limit = "5" } })
        assert.is_nil(c)
        assert.matches("server.auth_failure_limit", err, 1, true)
    end)

    it("is wired into the request handler: the 429 is an ErrorResponse with Retry-After", function()
        local api = require("api")
        local json = require("common.json")
        local deps = F.deps({ config = { server = { api_key = "right-key", auth_failure_limit = 2 } } })
        deps.keys = nil
        local handler = api.new(deps)
        local function call(key, path)
            return handler(F.request({ path = path or "/v1/sandboxes", remote_addr = "10.9.9.9",
                headers = { ["OPEN-SANDBOX-API-KEY"] = key } }))
        end
        assert.equal(401, (call("x")))
        assert.equal(401, (call("y")))
        local status, headers, body = call("right-key")
        assert.equal(429, status)
        assert.is_string(headers["Retry-After"])
        assert.is_string(headers["X-Request-ID"])
        local obj = json.decode(body)
        assert.equal("GENERAL::TOO_MANY_REQUESTS", obj.code)
        -- exempt routes still answer
        assert.equal(200, (call("x", "/health")))
    end)
end)
