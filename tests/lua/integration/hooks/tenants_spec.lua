-- Integration spec: tenants (server.api_keys with principals) against the real server and Docker: a
-- principal sees and changes only its own sandboxes on every route (404 otherwise, never in its list), an
-- admin key sees all, and what the auth-exempt server proxy route does across tenants.
--
--   cd /work/main && lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' \
--       tests/lua/integration/hooks
local F = require("hooks.fixtures")
local H = F.H

describe("tenants #integration #docker", function()
    local srv, a_id, b_id

    setup(function()
        H.ensure_image()
        srv = F.start({ hooks = { config = { metadata = { metadata = { owner = "{principal}" } } } } })
        a_id = F.create(srv, "a", { metadata = { app = "alpha" } })
        b_id = F.create(srv, "b", { metadata = { app = "beta" } })
        F.wait_state(srv, a_id, "Running")
        F.wait_state(srv, b_id, "Running")
    end)

    teardown(function()
        F.cleanup()
        H.stop_all()
    end)

    local function path(id, suffix)
        return "/v1/sandboxes/" .. id .. (suffix or "")
    end

    local function not_found(res, id)
        H.assert_error(res, 404, "DOCKER::SANDBOX_NOT_FOUND", "Sandbox " .. id .. " not found.")
    end

    it("records the creating principal (owner metadata from the metadata hook)", function()
        local g = F.call(srv, "a", "GET", path(a_id))
        assert.are.equal(200, g.status, g.body)
        assert.are.same({ app = "alpha", owner = "team-a" }, g.json.metadata)
    end)

    it("another principal gets 404 on every route of a sandbox it did not create", function()
        for _, c in ipairs({
            { "GET", "" },
            { "DELETE", "" },
            { "POST", "/pause" },
            { "POST", "/resume" },
            { "POST", "/renew-expiration", { expiresAt = H.iso(3600) } },
            { "GET", "/endpoints/44772" },
            { "GET", "/endpoints/8080?use_server_proxy=true" },
            { "PATCH", "/metadata", { app = "stolen" } },
        }) do
            local res = F.call(srv, "b", c[1], path(a_id, c[2]), c[3])
            not_found(res, a_id)
            res = F.call(srv, "a", c[1], path(b_id, c[2]), c[3])
            not_found(res, b_id)
        end
        -- nothing changed: still Running, same metadata and expiry
        local g = F.call(srv, "a", "GET", path(a_id))
        assert.are.equal(200, g.status, g.body)
        assert.are.equal("Running", g.json.status.state)
        assert.are.same({ app = "alpha", owner = "team-a" }, g.json.metadata)
        assert.is_true(H.container_exists(g.json.id and ("sandbox-" .. a_id)))
    end)

    it("a 404 for another tenant's sandbox is the same as for an unknown id", function()
        local unknown = "00000000-0000-4000-8000-000000000000"
        not_found(F.call(srv, "b", "GET", path(unknown)), unknown)
        not_found(F.call(srv, "b", "GET", path(a_id)), a_id)
    end)

    it("lists only the principal's own sandboxes, with and without filters", function()
        local la = F.call(srv, "a", "GET", "/v1/sandboxes")
        assert.are.equal(200, la.status, la.body)
        assert.are.same({ [a_id] = true }, F.ids(la))
        assert.are.equal(1, la.json.pagination.totalItems, la.body)
        local lb = F.call(srv, "b", "GET", "/v1/sandboxes?state=Running")
        assert.are.same({ [b_id] = true }, F.ids(lb))
        -- filtering on another tenant's metadata finds nothing
        local lf = F.call(srv, "b", "GET", "/v1/sandboxes?metadata=app%3Dalpha")
        assert.are.equal(200, lf.status, lf.body)
        assert.are.same({}, F.ids(lf))
        assert.are.equal(0, lf.json.pagination.totalItems, lf.body)
    end)

    it("the owner can use every route on its own sandbox", function()
        local res = F.call(srv, "a", "PATCH", path(a_id, "/metadata"), { note = "mine" })
        assert.are.equal(200, res.status, res.body)
        assert.are.equal("mine", res.json.metadata.note)
        res = F.call(srv, "a", "GET", path(a_id, "/endpoints/44772"))
        assert.are.equal(200, res.status, res.body)
        res = F.call(srv, "a", "POST", path(a_id, "/renew-expiration"), { expiresAt = H.iso(1200) })
        assert.are.equal(200, res.status, res.body)
        assert.are.equal(202, F.call(srv, "a", "POST", path(a_id, "/pause")).status)
        assert.are.equal("Paused", F.call(srv, "a", "GET", path(a_id)).json.status.state)
        assert.are.equal(202, F.call(srv, "a", "POST", path(a_id, "/resume")).status)
        assert.are.equal("Running", F.call(srv, "a", "GET", path(a_id)).json.status.state)
    end)

    it("an admin key sees and changes every tenant's sandboxes", function()
        local l = F.call(srv, "admin", "GET", "/v1/sandboxes")
        assert.are.equal(200, l.status, l.body)
        local ids = F.ids(l)
        assert.is_true(ids[a_id], l.body)
        assert.is_true(ids[b_id], l.body)
        for _, id in ipairs({ a_id, b_id }) do
            local g = F.call(srv, "admin", "GET", path(id))
            assert.are.equal(200, g.status, g.body)
        end
        local res = F.call(srv, "admin", "PATCH", path(b_id, "/metadata"), { audited = "yes" })
        assert.are.equal(200, res.status, res.body)
        assert.are.equal("yes", F.call(srv, "b", "GET", path(b_id)).json.metadata.audited)
        res = F.call(srv, "admin", "GET", path(a_id, "/endpoints/44772"))
        assert.are.equal(200, res.status, res.body)
        assert.is_string(res.json.headers["X-EXECD-ACCESS-TOKEN"])
    end)

    it("a sandbox created by the admin is invisible to the tenants", function()
        local id = F.create(srv, "admin", { metadata = { app = "ops" } })
        not_found(F.call(srv, "a", "GET", path(id)), id)
        not_found(F.call(srv, "b", "DELETE", path(id)), id)
        assert.is_nil(F.ids(F.call(srv, "a", "GET", "/v1/sandboxes"))[id])
        F.wait_state(srv, id, "Running")
        assert.are.equal(204, F.call(srv, "admin", "DELETE", path(id)).status)
    end)

    describe("the server proxy (a key that sees the sandbox, or its capability)", function()
        local function proxy(id, headers)
            local res, err = srv:request("GET", "/v1/sandboxes/" .. id .. "/proxy/44772/ping", { headers = headers })
            assert(res, err)
            return res
        end

        it("404 for an unknown id with a key, 401 without one", function()
            local unknown = "00000000-0000-4000-8000-000000000001"
            local res = proxy(unknown)
            assert.are.equal(401, res.status, res.body)
            assert.truthy(res.body:find("MISSING_API_KEY", 1, true), res.body)
            res = proxy(unknown, { ["OPEN-SANDBOX-API-KEY"] = F.KEYS.a })
            assert.are.equal(404, res.status, res.body)
            assert.are.same({ code = "DOCKER::SANDBOX_NOT_FOUND", message = "Sandbox " .. unknown .. " not found." },
                F.json.decode(res.body))
        end)

        it("a tenant's key limits the proxy to its own sandboxes; without a key it needs the capability",
            function()
                local ep = F.call(srv, "a", "GET", path(a_id, "/endpoints/44772"))
                local token = ep.json.headers["X-EXECD-ACCESS-TOKEN"]
                -- the owner with the agent token reaches the agent
                local res = proxy(a_id, { ["OPEN-SANDBOX-API-KEY"] = F.KEYS.a, ["X-EXECD-ACCESS-TOKEN"] = token })
                assert.are.equal(200, res.status, res.body)
                -- another tenant's key: that tenant cannot see the sandbox, so 404, even with the token
                res = proxy(a_id, { ["OPEN-SANDBOX-API-KEY"] = F.KEYS.b, ["X-EXECD-ACCESS-TOKEN"] = token })
                assert.are.equal(404, res.status, res.body)
                assert.truthy(res.body:find("DOCKER::SANDBOX_NOT_FOUND", 1, true), res.body)
                -- the admin key reaches every sandbox
                res = proxy(a_id, { ["OPEN-SANDBOX-API-KEY"] = F.KEYS.admin, ["X-EXECD-ACCESS-TOKEN"] = token })
                assert.are.equal(200, res.status, res.body)
                -- no key: the server refuses (401 MISSING_API_KEY), even with the agent's token
                res = proxy(a_id, {})
                assert.are.equal(401, res.status, res.body)
                assert.truthy(res.body:find("MISSING_API_KEY", 1, true), res.body)
                res = proxy(a_id, { ["X-EXECD-ACCESS-TOKEN"] = token })
                assert.are.equal(401, res.status, res.body)
                assert.truthy(res.body:find("MISSING_API_KEY", 1, true), res.body)
                -- the capability of the owner's endpoint reply (use_server_proxy=true) opens it without a key
                ep = F.call(srv, "a", "GET", path(a_id, "/endpoints/44772?use_server_proxy=true"))
                res = proxy(a_id, ep.json.headers)
                assert.are.equal(200, res.status, res.body)
            end)
    end)

    it("tenancy survives a restart of the server (the principal is in the store)", function()
        local old = srv
        old:stop()
        assert.is_false(old:alive())
        srv = F.start({ hooks = { config = { metadata = { metadata = { owner = "{principal}" } } } } },
            { dir = old.dir })
        F.track(srv, a_id)
        F.track(srv, b_id)
        local g = F.call(srv, "a", "GET", path(a_id))
        assert.are.equal(200, g.status, g.body)
        assert.are.equal("Running", g.json.status.state)
        not_found(F.call(srv, "b", "GET", path(a_id)), a_id)
        not_found(F.call(srv, "a", "DELETE", path(b_id)), b_id)
        assert.are.same({ [a_id] = true }, F.ids(F.call(srv, "a", "GET", "/v1/sandboxes")))
        assert.are.same({ [b_id] = true }, F.ids(F.call(srv, "b", "GET", "/v1/sandboxes")))
    end)

    it("a tenant's delete of its own sandbox works; the other tenant's sandbox stays", function()
        assert.are.equal(204, F.call(srv, "b", "DELETE", path(b_id)).status)
        not_found(F.call(srv, "b", "GET", path(b_id)), b_id)
        assert.are.equal(200, F.call(srv, "a", "GET", path(a_id)).status)
        assert.are.equal(204, F.call(srv, "a", "DELETE", path(a_id)).status)
        assert.are.same({}, F.ids(F.call(srv, "a", "GET", "/v1/sandboxes")))
    end)
end)
