-- Integration: operator routes (server.routes_dir, lua/api/operator_routes.lua) on the real binary without
-- Docker: the shipped sample and a test module are served with the API's authentication, request id and
-- error envelope; a handler error is a 500 envelope; SIGHUP picks up a changed file and a new one; a
-- broken file on reload keeps the previous routes (and is logged); a broken file at startup stops the
-- server with a message naming the file; a route a built-in route would answer first is refused.
local server = require("support.server")
local json = require("common.json")

local KEY = "routes-test-key"

local function write(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
end

local TEST_MODULE = [[
local errors = require("common.errors")
local calls = 0
return {
    routes = {
        { method = "GET", path = "/ops/echo/{word}", summary = "echo",
          handler = function(ctx)
              calls = calls + 1
              return { status = 200, json = { word = ctx.params.word, q = ctx.query.x and ctx.query.x[1],
                  principal = ctx.principal, requestId = ctx.request_id, calls = calls, version = "%s" } }
          end },
        { method = "POST", path = "/ops/echo/{word}",
          handler = function(ctx) return { status = 201, body = ctx.req.body, content_type = "text/plain" } end },
        { method = "GET", path = "/ops/teapot",
          handler = function() return nil, errors.new(418, "OPS::TEAPOT", "I am a teapot.") end },
        { method = "GET", path = "/ops/boom", handler = function() error("kaboom") end },
        { method = "GET", path = "/ops/bad", handler = function() return { json = {} } end },
        { method = "GET", path = "/ops/files/{rest*}",
          handler = function(ctx) return { status = 200, json = { rest = ctx.params.rest } } end },
    },
}
]]

describe("operator routes #integration", function()
    local srv, dir

    setup(function()
        dir = server.tmpdir()
        os.execute("mkdir -p " .. server.quote(dir .. "/routes"))
        os.execute("cp " .. server.quote(server.root() .. "/routes/hello.lua") .. " "
            .. server.quote(dir .. "/routes/"))
        write(dir .. "/routes/ops.lua", TEST_MODULE:format("v1"))
        srv = server.start({
            dir = dir,
            config = {
                server = { api_key = KEY, routes_dir = dir .. "/routes" },
                docker = { host = "unix:///nonexistent/docker.sock" },
            },
        })
    end)

    teardown(function()
        if srv then
            srv:stop()
        end
        os.execute("rm -rf " .. server.quote(dir))
    end)

    local function authed(method, path, o)
        o = o or {}
        o.headers = o.headers or {}
        o.headers["OPEN-SANDBOX-API-KEY"] = KEY
        return assert(srv:request(method, path, o))
    end

    local function envelope(res, status, code)
        assert.are.equal(status, res.status)
        assert.truthy(res.headers["content-type"]:find("application/json", 1, true))
        local body = assert(json.decode(res.body))
        assert.are.equal(code, body.code)
        assert.is_string(body.message)
        return body
    end

    local function count(msg)
        local n = 0
        for line in srv:log():gmatch("[^\n]+") do
            if line:find('"msg":"' .. msg .. '"', 1, true) then
                n = n + 1
            end
        end
        return n
    end

    local function wait_log(msg, n)
        for _ = 1, 100 do
            if count(msg) >= n then
                return
            end
            os.execute("sleep 0.05")
        end
        error("no log line " .. msg .. ":\n" .. srv:log())
    end

    it("serves the shipped sample route with the API key, a request id and JSON", function()
        local res = authed("GET", "/hello/world", { headers = { ["X-Request-ID"] = "req-hello-1" } })
        assert.are.equal(200, res.status)
        assert.are.equal("req-hello-1", res.headers["x-request-id"])
        local body = json.decode(res.body)
        assert.are.equal("world", body.hello)
        assert.are.equal("req-hello-1", body.requestId)
        -- a generated request id when the client sent none
        res = authed("GET", "/hello/there")
        assert.truthy(#(res.headers["x-request-id"] or "") >= 16)
        -- the sample's own validation error is an ErrorResponse
        envelope(authed("GET", "/hello/" .. string.rep("a", 65)), 400, "SANDBOX::INVALID_PARAMETER")
        -- it calls the lifecycle service: no sandboxes in a fresh store
        res = authed("GET", "/sandbox-count")
        assert.are.equal(200, res.status)
        assert.are.equal(0, json.decode(res.body).count)
    end)

    it("needs the API key like every built-in route", function()
        envelope(assert(srv:request("GET", "/hello/world")), 401, "MISSING_API_KEY")
        envelope(assert(srv:request("GET", "/ops/echo/x", { headers = { ["OPEN-SANDBOX-API-KEY"] = "nope" } })),
            401, "INVALID_API_KEY")
    end)

    it("passes path parameters (decoded), the query, the principal and the body", function()
        local res = authed("GET", "/ops/echo/a%20b?x=1")
        assert.are.equal(200, res.status)
        local body = json.decode(res.body)
        assert.are.equal("a b", body.word)
        assert.are.equal("1", body.q)
        assert.are.equal("default", body.principal)
        assert.are.equal(res.headers["x-request-id"], body.requestId)
        res = authed("POST", "/ops/echo/x", { body = "payload" })
        assert.are.equal(201, res.status)
        assert.are.equal("payload", res.body)
        assert.are.equal("text/plain", res.headers["content-type"])
        res = authed("GET", "/ops/files/a/b/c")
        assert.are.equal("a/b/c", json.decode(res.body).rest)
    end)

    it("renders errors, raised errors and bad results as the API's error envelope", function()
        envelope(authed("GET", "/ops/teapot"), 418, "OPS::TEAPOT")
        local res = authed("GET", "/ops/boom", { headers = { ["X-Request-ID"] = "req-boom" } })
        envelope(res, 500, "GENERAL::UNKNOWN_ERROR")
        assert.are.equal("req-boom", res.headers["x-request-id"])
        envelope(authed("GET", "/ops/bad"), 500, "GENERAL::UNKNOWN_ERROR")
        -- 405 with Allow for a known path and another method; 404 for an unknown path
        res = authed("DELETE", "/ops/echo/x")
        envelope(res, 405, "GENERAL::METHOD_NOT_ALLOWED")
        assert.are.equal("GET, HEAD, POST", res.headers["allow"])
        envelope(authed("GET", "/ops/nothing-here"), 404, "GENERAL::NOT_FOUND")
        -- built-in routes are unchanged
        assert.are.equal(200, authed("GET", "/v1/sandboxes").status)
    end)

    it("SIGHUP reloads changed and new files; a broken file keeps the previous routes", function()
        local before = count("operator routes reloaded")
        write(dir .. "/routes/ops.lua", TEST_MODULE:format("v2"))
        write(dir .. "/routes/more.lua", [[
return { routes = { { method = "PUT", path = "/ops/more", handler = function() return { status = 204 } end } } }
]])
        srv:signal("HUP")
        wait_log("operator routes reloaded", before + 1)
        local body = json.decode(authed("GET", "/ops/echo/x").body)
        assert.are.equal("v2", body.version)
        assert.are.equal(1, body.calls) -- a reload runs the module afresh
        assert.are.equal(204, authed("PUT", "/ops/more").status)

        local failed = count("operator routes reload failed; the previous routes stay active")
        write(dir .. "/routes/more.lua", "return { routes = { { method = 'GET', path = '/x' ")
        srv:signal("HUP")
        wait_log("operator routes reload failed; the previous routes stay active", failed + 1)
        assert.truthy(srv:log():find("more.lua:1:", 1, true))
        assert.are.equal(204, authed("PUT", "/ops/more").status)
        assert.are.equal("v2", json.decode(authed("GET", "/ops/echo/x").body).version)

        -- a module shadowing a built-in route is refused the same way
        write(dir .. "/routes/more.lua", [[
return { routes = { { method = "GET", path = "/sandboxes/{id}", handler = function() return { status = 200 } end } } }
]])
        srv:signal("HUP")
        wait_log("operator routes reload failed; the previous routes stay active", failed + 2)
        assert.truthy(srv:log():find("the built-in route GET /sandboxes/{id} answers it", 1, true))
        assert.are.equal(204, authed("PUT", "/ops/more").status)
        os.remove(dir .. "/routes/more.lua")
    end)

    it("a broken route file at startup stops the server with a message naming it", function()
        local d2 = server.tmpdir()
        os.execute("mkdir -p " .. server.quote(d2 .. "/routes"))
        write(d2 .. "/routes/bad.lua", "return { routes = { { method = 'FETCH', path = '/x', handler = print } } }")
        local s2 = server.start({
            dir = d2,
            no_wait = true,
            config = {
                server = { routes_dir = d2 .. "/routes" },
                docker = { host = "unix:///nonexistent/docker.sock" },
            },
        })
        assert.is_true(s2:wait_exit(15))
        local log = s2:log()
        assert.truthy(log:find("operator routes: bad.lua: route 1: method must be one of GET, POST, PUT, PATCH, DELETE",
            1, true), log)
        -- a missing directory is an error too
        local s3 = server.start({
            dir = d2,
            no_wait = true,
            config = {
                server = { routes_dir = d2 .. "/nope" },
                docker = { host = "unix:///nonexistent/docker.sock" },
            },
        })
        assert.is_true(s3:wait_exit(15))
        assert.truthy(s3:log():find("routes directory " .. d2 .. "/nope", 1, true), s3:log())
        os.execute("rm -rf " .. server.quote(d2))
    end)
end)
