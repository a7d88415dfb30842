-- Unit specs of runtimes.kubernetes.api (the REST client) and runtimes.kubernetes.ratelimit, on the fake
-- transport: TLS and token, content types, the error mapping, the rate limit on a fake clock, and watches
-- whose lines are cut across chunks.
package.path = "tests/lua/unit/runtimes/?.lua;" .. package.path

local api_mod = require("runtimes.kubernetes.api")
local ratelimit = require("runtimes.kubernetes.ratelimit")
local fake_kube = require("support.fake_kube")

local TLS = { ca = "CA-PEM", cert = "CERT-PEM", key = "KEY-PEM" }

local function new_api(k, over)
    local opts = { client = k, server = "https://10.0.0.1:6443", ca = TLS.ca, cert = TLS.cert, key = TLS.key,
        token = "tok", now = k.now, sleep = k.sleep }
    for key, v in pairs(over or {}) do
        opts[key] = v
    end
    return api_mod.new(opts)
end

describe("kubernetes api requests", function()
    it("sends the TLS material, the bearer token and JSON bodies", function()
        local k = fake_kube.new()
        k:on("POST", "/pods$", { status = 201, json = { metadata = { name = "p", uid = "u1" } } })
        local api = new_api(k)
        local doc = assert(api:create("/api/v1/namespaces/ns/pods", { metadata = { name = "p" } }))
        assert.equal("u1", doc.metadata.uid)
        local r = k.requests[1]
        assert.equal("https://10.0.0.1:6443/api/v1/namespaces/ns/pods", r.url)
        assert.same(TLS, r.tls)
        assert.is_true(r.http2) -- multiplexed: watches must not hold a connection each
        assert.equal("Bearer tok", r.headers.Authorization)
        assert.equal("application/json", r.headers["Content-Type"])
        assert.equal("p", r.json.metadata.name)
    end)

    it("sends no tls table and no Authorization when none is configured", function()
        local k = fake_kube.new()
        k:on("GET", "^/version$", { json = { gitVersion = "v1.30.1" } })
        local api = new_api(k, { ca = false, cert = false, key = false, token = false })
        assert.equal("v1.30.1", assert(api:get("/version")).gitVersion)
        assert.is_nil(k.requests[1].tls)
        assert.is_nil(k.requests[1].headers.Authorization)
    end)

    it("sends merge patches as application/merge-patch+json", function()
        local k = fake_kube.new()
        k:on("PATCH", "/secrets/s$", { json = { metadata = { name = "s" } } })
        assert(new_api(k):merge_patch("/api/v1/namespaces/ns/secrets/s", { metadata = { labels = { a = "b" } } }))
        assert.equal("application/merge-patch+json", k.requests[1].headers["Content-Type"])
        assert.equal("b", k.requests[1].json.metadata.labels.a)
    end)

    it("reads a rotated token file again after a minute", function()
        local k = fake_kube.new()
        k:on("GET", "^/version$", { json = {} })
        local content = "first"
        local api = new_api(k, { token = "first", token_file = "/t", read_file = function()
            return content .. "\n"
        end })
        assert(api:get("/version"))
        content = "second"
        k.t = k.t + 30
        assert(api:get("/version"))
        k.t = k.t + 31
        assert(api:get("/version"))
        assert.equal("Bearer first", k.requests[1].headers.Authorization)
        assert.equal("Bearer first", k.requests[2].headers.Authorization)
        assert.equal("Bearer second", k.requests[3].headers.Authorization)
    end)

    it("on a 401, reads the token file at once and sends the request again with a new token", function()
        local k = fake_kube.new()
        local content = "old"
        local api = new_api(k, { token = "old", token_file = "/t", read_file = function()
            return content
        end })
        content = "new" -- replaced before the minute is over; the old token is refused already
        local seen, accepted = {}, "new"
        local reply = { json = { gitVersion = "v1" } }
        reply.run = function(r)
            seen[#seen + 1] = r.headers.Authorization
            reply.status = r.headers.Authorization == "Bearer " .. accepted and 200 or 401
        end
        k:on("GET", "^/version$", reply)
        assert.equal("v1", assert(api:get("/version")).gitVersion)
        assert.same({ "Bearer old", "Bearer new" }, seen)
        -- the same token again: no second attempt, the 401 is the answer
        accepted = "newer"
        local ok, err = api:get("/version")
        assert.is_nil(ok)
        assert.equal(401, err.status)
        assert.equal(3, #seen)
    end)
end)

describe("kubernetes api errors", function()
    local k, api
    before_each(function()
        k = fake_kube.new()
        api = new_api(k)
    end)

    it("a transport failure is unavailable, with the transport's reason", function()
        k:on("GET", "^/version$", { err = { kind = "connect", message = "Failed to connect to 10.0.0.1 port 6443" } })
        local doc, err = api:get("/version")
        assert.is_nil(doc)
        assert.equal("unavailable", err.kind)
        assert.equal("Failed to connect to 10.0.0.1 port 6443", err.message)
        k:on("GET", "^/version$", { err = { kind = "timeout", message = "after 30000 ms" } })
        assert.equal("timeout: after 30000 ms", select(2, api:get("/version")).message)
        -- one that waited for a connection all along: busy, not unreachable (runtimes/errors.lua, transport)
        k:on("GET", "^/version$", { err = { kind = "timeout", sent = false, waited = 30, message = "after 0 ms" } })
        err = select(2, api:get("/version"))
        assert.equal("unavailable", err.kind)
        assert.is_true(err.busy)
        assert.truthy(err.message:find("The Kubernetes API server is busy", 1, true), err.message)
    end)

    it("403 names the verb, the resource and the namespace", function()
        k:on("POST", "/pods$", { status = 403, json = fake_kube.status(403, "Forbidden",
            'pods is forbidden: User "system:serviceaccount:x:y" cannot create resource "pods"') })
        local _, err = api:create("/api/v1/namespaces/x/pods", {})
        assert.equal("api", err.kind)
        assert.equal(403, err.status)
        assert.equal('forbidden: cannot create pods in namespace x: pods is forbidden: User '
            .. '"system:serviceaccount:x:y" cannot create resource "pods"', err.message)
        k:on("GET", "/namespaces/x$", { status = 403, json = fake_kube.status(403, "Forbidden", "no") })
        assert.equal("forbidden: cannot get namespaces x: no", select(2, api:get("/api/v1/namespaces/x")).message)
        k:on("GET", "watch=1", { status = 403, body = '{"kind":"Status","code":403,"message":"no watch"}' })
        local ok, werr = api:watch("/api/v1/namespaces/x/pods?labelSelector=a%3Db", nil, function() end)
        assert.is_nil(ok)
        assert.equal("forbidden: cannot watch pods in namespace x: no watch", werr.message)
        k:on("DELETE", "/pods/p", { status = 403, json = fake_kube.status(403, "Forbidden", "nope") })
        assert.equal("forbidden: cannot delete pods in namespace x: nope",
            select(2, api:delete("/api/v1/namespaces/x/pods/p?gracePeriodSeconds=1")).message)
    end)

    it("404 is not_found, 409 conflict, others api with the Status message", function()
        k:on("GET", "/pods/gone$", { status = 404, json = fake_kube.status(404, "NotFound", 'pods "gone" not found') })
        k:on("POST", "/pods$", { status = 409, json = fake_kube.status(409, "AlreadyExists", "already exists") })
        k:on("PATCH", "/pods/p$", { status = 422, json = fake_kube.status(422, "Invalid", "spec: Invalid value") })
        k:on("GET", "^/version$", { status = 500, body = "upstream broke\n" })
        local _, e1 = api:get("/api/v1/namespaces/x/pods/gone")
        assert.same({ "not_found", 404, 'pods "gone" not found' }, { e1.kind, e1.status, e1.message })
        local _, e2 = api:create("/api/v1/namespaces/x/pods", {})
        assert.same({ "conflict", 409, "already exists" }, { e2.kind, e2.status, e2.message })
        local _, e3 = api:merge_patch("/api/v1/namespaces/x/pods/p", {})
        assert.same({ "api", 422, "spec: Invalid value" }, { e3.kind, e3.status, e3.message })
        local _, e4 = api:get("/version")
        assert.same({ "api", 500, "upstream broke" }, { e4.kind, e4.status, e4.message })
    end)

    it("an unusable reply is an api error", function()
        k:on("GET", "^/version$", { body = "<html>" })
        local _, err = api:get("/version")
        assert.equal("api", err.kind)
        assert.matches("^invalid JSON from the Kubernetes API", err.message)
    end)
end)

describe("kubernetes api rate limit", function()
    it("lets a burst through at once, then spaces requests 1/qps apart", function()
        local k = fake_kube.new()
        k:on("GET", "^/version$", { json = {} })
        local api = new_api(k, { qps = 2, burst = 3 })
        for _ = 1, 5 do
            assert(api:get("/version"))
        end
        assert.same({ 0.5, 0.5 }, k.slept)
        -- after a quiet second, two tokens are back (2 qps), not more
        k.t = k.t + 1
        k.slept = {}
        for _ = 1, 3 do
            assert(api:get("/version"))
        end
        assert.same({ 0.5 }, k.slept)
    end)

    it("keeps reads and writes in separate buckets", function()
        local k = fake_kube.new()
        k:on("GET", "^/version$", { json = {} })
        k:on("POST", "/pods$", { status = 201, json = {} })
        local api = new_api(k, { qps = 1, burst = 2 })
        for _ = 1, 2 do
            assert(api:create("/api/v1/namespaces/x/pods", {}))
        end
        assert(api:get("/version"))
        assert(api:get("/version"))
        assert.same({}, k.slept) -- the writes did not use up the reads' burst
        assert(api:create("/api/v1/namespaces/x/pods", {}))
        assert.same({ 1 }, k.slept)
    end)

    it("a bucket: callers arriving together each wait their turn", function()
        local t, slept = 0, {}
        local b = ratelimit.new({ qps = 10, burst = 1, now = function()
            return t
        end, sleep = function(s)
            slept[#slept + 1] = s
        end })
        assert.equal(0, b:take())
        b:take()
        b:take() -- the clock has not moved: the second waiter is due after the first
        assert.same({ 0.1, 0.2 }, slept)
        t = 10
        assert.equal(0, b:take()) -- refilled (up to burst)
    end)
end)

describe("kubernetes api watch", function()
    local PATH = "/api/v1/namespaces/x/pods?labelSelector=opensandbox.io%2Fmanaged-by%3Dopensandbox-server"

    local function pod(name, rv)
        return { metadata = { name = name, resourceVersion = rv } }
    end

    it("asks for bookmarks from a resourceVersion and delivers events cut across chunks", function()
        local k = fake_kube.new()
        k:on("GET", "watch=1", { chunks = fake_kube.chunks({
            { type = "ADDED", object = pod("a", "11") },
            { type = "BOOKMARK", object = pod(nil, "12") },
            { type = "MODIFIED", object = pod("a", "13") },
            { type = "DELETED", object = pod("a", "14") },
        }, 5) })
        local seen = {}
        local ok, err = new_api(k):watch(PATH, "10", function(ev)
            seen[#seen + 1] = ev.type .. " " .. ev.object.metadata.resourceVersion
        end, { timeout_s = 60 })
        assert.is_nil(ok)
        assert.equal("unavailable", err.kind)
        assert.is_true(err.ended)
        assert.same({ "ADDED 11", "BOOKMARK 12", "MODIFIED 13", "DELETED 14" }, seen)
        local r = k.requests[1]
        assert.equal(PATH .. "&watch=1&allowWatchBookmarks=true&resourceVersion=10&timeoutSeconds=60", r.path)
        assert.is_true(r.streaming)
        assert.equal(90, r.timeout)
    end)

    it("stops when on_event returns false", function()
        local k = fake_kube.new()
        k:on("GET", "watch=1", { chunks = fake_kube.chunks({
            { type = "ADDED", object = pod("a", "1") }, { type = "MODIFIED", object = pod("a", "2") },
            { type = "MODIFIED", object = pod("a", "3") } }) })
        local n = 0
        local ok = new_api(k):watch(PATH, nil, function()
            n = n + 1
            return n < 2 and true or false
        end)
        assert.is_true(ok)
        assert.equal(2, n)
        assert.is_nil(k.requests[1].path:find("resourceVersion=", 1, true)) -- none given: none sent
    end)

    it("an ERROR event with code 410 is a distinct 'gone' error", function()
        local k = fake_kube.new()
        k:on("GET", "watch=1", { chunks = fake_kube.chunks({
            { type = "ERROR", object = fake_kube.status(410, "Expired", "too old resource version: 5 (900)") },
        }) })
        local ok, err = new_api(k):watch(PATH, "5", function()
            error("no event expected")
        end)
        assert.is_nil(ok)
        assert.is_true(api_mod.is_gone(err))
        assert.equal(410, err.status)
        assert.equal("too old resource version: 5 (900)", err.message)
        -- other ERROR events are api errors, not "gone"
        k:on("GET", "watch=1", { chunks = fake_kube.chunks({
            { type = "ERROR", object = fake_kube.status(500, "InternalError", "etcd down") } }) })
        local _, e2 = new_api(k):watch(PATH, "5", function() end)
        assert.is_false(api_mod.is_gone(e2))
        assert.same({ "api", 500, "etcd down" }, { e2.kind, e2.status, e2.message })
    end)

    it("a transport failure of the watch is unavailable, not 'ended'", function()
        local k = fake_kube.new()
        k:on("GET", "watch=1", { err = { kind = "connect", message = "refused" } })
        local _, err = new_api(k):watch(PATH, "5", function() end)
        assert.equal("unavailable", err.kind)
        assert.is_nil(err.ended)
    end)
end)
