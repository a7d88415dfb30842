-- GET /events through the whole request pipeline of api.new (fake deps, a fake core.http stream): the route
-- (also under /v1), authentication first, 400 for a bad Last-Event-ID or filter before any stream starts,
-- and the stream's status and headers (event-stream, no caching, request id, CORS).
local F = dofile("tests/lua/unit/api/fakes.lua")
local api = require("api")
local events = require("sandbox.events")
local json = require("common.json")

local KEY = "secret-key"

-- deps with a hub holding two events, and an http whose stream() records what it was given
local function setup()
    local hub = events.new({ buffer = 8, now = function()
        return 1767225600.5
    end, waiter = function()
        return { wait = function() end, wake = function() end }
    end })
    hub:publish("sandbox.transition", { sandboxId = "s1" }, { sandbox_id = "s1" })
    hub:publish("sandbox.deleted", { sandboxId = "s1" }, { sandbox_id = "s1" })
    hub:close_all() -- the stream ends after what is buffered: serve() returns without waiting
    local streams = {}
    local http = {
        stream = function(req, status, headers)
            local s = { req = req, status = status, headers = headers, out = {}, closed = false }
            function s.write(self, data)
                self.out[#self.out + 1] = data
                return true
            end
            function s.pending()
                return 0
            end
            function s.close(self)
                self.closed = true
            end
            streams[#streams + 1] = s
            return s
        end,
    }
    local deps = F.deps({ events = hub, http = http, validate = require("sandbox.validate") })
    return deps, streams
end

describe("api GET /events", function()
    it("streams with the event-stream headers on /events and /v1/events, replaying after Last-Event-ID", function()
        for _, path in ipairs({ "/events", "/v1/events", "/v1/events/" }) do
            local deps, streams = setup()
            local req = F.request({ path = path, headers = { ["OPEN-SANDBOX-API-KEY"] = KEY, ["Last-Event-ID"] = "1",
                Origin = "https://ui.example" } })
            api.new(deps)(req)
            assert.equal(1, #streams, path)
            local s = streams[1]
            assert.equal(req, s.req)
            assert.equal(200, s.status)
            assert.equal("text/event-stream", s.headers["Content-Type"])
            assert.equal("no-cache", s.headers["Cache-Control"])
            assert.equal(F.GENERATED_ID, s.headers["X-Request-ID"])
            assert.equal("https://ui.example", s.headers["Access-Control-Allow-Origin"])
            local text = table.concat(s.out)
            assert.matches("^retry: 3000\n\n", text)
            assert.is_nil(text:find("id: 1\n", 1, true))
            assert.truthy(text:find('id: 2\nevent: sandbox.deleted\ndata: {"sandboxId":"s1"}\n\n', 1, true))
            assert.is_true(s.closed)
        end
    end)

    it("wants the API key, and refuses a bad Last-Event-ID or filter with 400 before streaming", function()
        local deps, streams = setup()
        local s, _, b = api.new(deps)(F.request({ path = "/v1/events" }))
        assert.equal(401, s)
        assert.equal("MISSING_API_KEY", json.decode(b).code)
        for _, c in ipairs({ { { ["Last-Event-ID"] = "abc" }, "" }, { {}, "sandboxId=" }, { {}, "metadata=oops" } }) do
            local h = { ["OPEN-SANDBOX-API-KEY"] = KEY }
            for k, v in pairs(c[1]) do
                h[k] = v
            end
            s, _, b = api.new(deps)(F.request({ path = "/v1/events", query = c[2], headers = h }))
            assert.equal(400, s, c[2])
            assert.matches("INVALID", json.decode(b).code)
        end
        assert.equal(0, #streams)
    end)
end)
