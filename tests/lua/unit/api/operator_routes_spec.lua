-- Operator routes (lua/api/operator_routes.lua) and in-process calls (lua/api/inproc.lua), with fake deps:
-- module checks, matching (parameters, {rest*}, HEAD, 405), the API pipeline around them (auth, request
-- id, envelope), keeping the previous set on a failed load, and the in-process dispatcher.
local F = dofile("tests/lua/unit/api/fakes.lua")
local api = require("api")
local json = require("common.json")
local operator_routes = require("api.operator_routes")
local inproc = require("api.inproc")

local function set_of(sources, extra_ctx)
    local s = operator_routes.new({ sources = sources, log = F.log(), extra_ctx = extra_ctx })
    return s, s:load()
end

local OK = [[
return { routes = {
  { method = "GET", path = "/ops/{a}/x/{b}", handler = function(ctx)
      return { status = 200, json = { a = ctx.params.a, b = ctx.params.b, svc = ctx.service ~= nil } } end },
  { method = "POST", path = "/ops/{a}/x/{b}", handler = function() return { status = 201 } end },
  { method = "GET", path = "/files/{rest*}", handler = function(ctx)
      return { status = 200, body = ctx.params.rest, content_type = "text/plain" } end },
  { method = "DELETE", path = "/", handler = function() return { status = 204 } end },
} }
]]

describe("api.operator_routes", function()
    it("matches literals, parameters (decoded), {rest*}, HEAD and answers 405 with Allow", function()
        local s, ok = set_of({ { name = "ok.lua", source = OK } })
        assert.is_true(ok)
        local r, p = s:match("GET", "/ops/a%20b/x/c")
        assert.equal("/ops/{a}/x/{b}", r.pattern)
        assert.same({ a = "a b", b = "c" }, p)
        assert.equal("GET", (s:match("HEAD", "/ops/1/x/2")).method)
        local _, rp = s:match("GET", "/files/a/b")
        assert.same({ rest = "a/b" }, rp)
        assert.is_nil((s:match("GET", "/files")))
        assert.is_nil((s:match("GET", "/ops//x/2")))
        local _, why, allow = s:match("PUT", "/ops/1/x/2")
        assert.equal("method_not_allowed", why)
        assert.equal("GET, HEAD, POST", allow)
        assert.same({ nil, "not_found" }, { s:match("GET", "/nope") })
        assert.equal("/", (s:match("DELETE", "/")).pattern)
        assert.equal(4, #s:list())
    end)

    it("refuses broken modules with a message naming the file; the previous set stays", function()
        local s = set_of({ { name = "ok.lua", source = OK } })
        local cases = {
            { "return { routes = { { method = 'GET', path = '/x' ", "bad.lua:1:" },
            { "error('at load')", "bad.lua: bad.lua:1: at load" },
            { "return 1", "must return a table with `routes`, got number" },
            { "return { route = {} }", "unknown field 'route'" },
            { "return { routes = { { method = 'GET', path = '/x', handler = 1 } } }", "handler must be a function" },
            { "return { routes = { { method = 'GET', path = 'x', handler = print } } }", "starting with '/'" },
            { "return { routes = { { method = 'GET', path = '/{a*}/b', handler = print } } }", "must be the last" },
            { "return { routes = { { method = 'GET', path = '/a b', handler = print } } }", "neither a literal" },
            { "return { routes = { { method = 'GET', path = '/x', handler = print, auth = false } } }",
                "unknown field 'auth'" },
            { "return { routes = { { method = 'GET', path = '/v1/sandboxes', handler = print } } }",
                "the built-in route GET /sandboxes answers it" },
            { "return { routes = { { method = 'GET', path = '/ops/{x}/x/{y}', handler = print } } }",
                "GET /ops/{x}/x/{y}" }, -- fine alone; a duplicate of the same pattern is refused below
        }
        for i, c in ipairs(cases) do
            s.sources = { { name = "ok.lua", source = OK }, { name = "bad.lua", source = c[1] } }
            local ok, err = s:load()
            if i < #cases then
                assert.is_nil(ok)
                assert.truthy(err:find(c[2], 1, true), err)
            end
            -- the routes of the last good load still answer
            assert.equal("/ops/{a}/x/{b}", (s:match("GET", "/ops/1/x/2")).pattern)
        end
        s.sources = { { name = "ok.lua", source = OK }, { name = "dup.lua", source = OK } }
        local ok, err = s:load()
        assert.is_nil(ok)
        assert.truthy(err:find("dup.lua: GET /ops/{a}/x/{b} is already defined by ok.lua", 1, true), err)
    end)

    it("keeps each module's globals in its own environment", function()
        local s, ok = set_of({ { name = "g.lua", source = "leaked = 1; return { routes = {} }" } })
        assert.is_true(ok)
        assert.is_nil(rawget(_G, "leaked"))
        assert.equal(0, #s:list())
    end)

    describe("served by the API", function()
        local deps, handler
        before_each(function()
            deps = F.deps()
            deps.operator_routes = set_of({ { name = "ok.lua", source = OK }, { name = "err.lua", source = [[
local errors = require("common.errors")
return { routes = {
  { method = "GET", path = "/teapot", handler = function() return nil, errors.new(418, "X::TEA", "tea") end },
  { method = "GET", path = "/boom", handler = function() error("boom") end },
  { method = "GET", path = "/bad", handler = function() return { status = "200" } end },
} }
]] } }, { service = deps.service })
            handler = api.new(deps)
        end)

        local function call(method, path, headers)
            local h = { ["OPEN-SANDBOX-API-KEY"] = "secret-key" }
            for k, v in pairs(headers or {}) do
                h[k] = v
            end
            return handler(F.request({ method = method, path = path, headers = h }))
        end

        it("with authentication, the request id and the extra ctx", function()
            local s, _, b = handler(F.request({ path = "/ops/1/x/2" }))
            assert.equal(401, s)
            local h
            assert.equal("MISSING_API_KEY", json.decode(b).code)
            s, h, b = call("GET", "/ops/1/x/2", { ["X-Request-ID"] = "rid" })
            assert.equal(200, s)
            assert.equal("rid", h["X-Request-ID"])
            assert.same({ a = "1", b = "2", svc = true }, json.decode(b))
            _, h, b = call("GET", "/files/a/b")
            assert.equal("a/b", b)
            assert.equal("text/plain", h["Content-Type"])
        end)

        it("with the error envelope for errors, raised errors, bad results, 404 and 405", function()
            local s, _, b = call("GET", "/teapot")
            assert.equal(418, s)
            assert.same({ code = "X::TEA", message = "tea" }, json.decode(b))
            for _, p in ipairs({ "/boom", "/bad" }) do
                s, _, b = call("GET", p)
                assert.equal(500, s)
                assert.equal("GENERAL::UNKNOWN_ERROR", json.decode(b).code)
            end
            local h
            s, h = call("PUT", "/ops/1/x/2")
            assert.equal(405, s)
            assert.equal("GET, HEAD, POST", h.Allow)
            s = call("GET", "/nothing")
            assert.equal(404, s)
            -- a built-in route's 405 is not widened by the operator set
            s, h = call("PUT", "/v1/sandboxes")
            assert.equal(405, s)
            assert.equal("GET, HEAD, POST", h.Allow)
        end)
    end)
end)

describe("api.inproc", function()
    it("runs the lifecycle handlers as the admin principal and renders like the API", function()
        local deps = F.deps()
        deps.service = F.service({
            create = { id = "sb1", status = { state = "Pending" } },
            get = { id = "sb1" },
            list = { items = {}, pagination = { totalItems = 0 } },
            delete = true,
        })
        local call = inproc.new(deps)
        local s, b = call("create", nil, '{"image":{"uri":"busybox"}}')
        assert.equal(202, s)
        assert.equal("sb1", json.decode(b).id)
        local create_ctx = deps.service.calls[1].args[2]
        assert.equal("default", create_ctx.principal)
        assert.is_true(create_ctx.admin)
        s, b = call("get", "sb1")
        assert.equal(200, s)
        assert.equal("sb1", json.decode(b).id)
        s = call("list", "state=Running&pageSize=5")
        assert.equal(200, s)
        assert.same({ state = { "Running" }, pageSize = { "5" } }, deps.validate.calls.list_query)
        s, b = call("delete", "sb1")
        assert.equal(204, s)
        assert.equal("", b)
        -- errors: the service's, a bad body, a missing id, an unknown op
        deps.service = F.service()
        call = inproc.new(deps)
        s, b = call("get", "nope")
        assert.equal(404, s)
        assert.equal("DOCKER::SANDBOX_NOT_FOUND", json.decode(b).code)
        s = call("create", nil, "not json")
        assert.equal(400, s)
        s, b = call("delete", nil)
        assert.equal(400, s)
        assert.equal("SANDBOX::INVALID_PARAMETER", json.decode(b).code)
        s = call("launch", "x")
        assert.equal(400, s)
    end)
end)
