local router = require("api.router")

describe("api.router", function()
    it("serves every route at the root and under /v1 identically", function()
        for _, r in ipairs(router.routes()) do
            local path = r.pattern:gsub("{[%w_]+%*}", "a/b"):gsub("{[%w_]+}", "x1")
            local a, pa = router.match(r.method, path)
            local b, pb = router.match(r.method, "/v1" .. path)
            assert.is_table(a, r.method .. " " .. path)
            assert.equal(a.handler, b.handler)
            assert.same(pa, pb)
        end
    end)

    it("extracts and percent-decodes path parameters once", function()
        local r, p = router.match("GET", "/v1/sandboxes/abc%2541def")
        assert.equal("sandboxes.get", r.handler)
        assert.equal("abc%41def", p.id)
        r, p = router.match("GET", "/sandboxes/s%20x/endpoints/8080")
        assert.equal("sandboxes.endpoint", r.handler)
        assert.same({ id = "s x", port = "8080" }, p)
    end)

    it("only strips one /v1 prefix", function()
        assert.same({ nil, "not_found" }, { router.match("GET", "/v1/v1/health") })
        assert.same({ nil, "not_found" }, { router.match("GET", "/v1") })
        assert.same({ nil, "not_found" }, { router.match("GET", "/v1health") })
    end)

    it("ignores a single trailing slash on lifecycle routes only", function()
        assert.equal("sandboxes.list", router.match("GET", "/v1/sandboxes/").handler)
        assert.equal("sandboxes.get", router.match("GET", "/sandboxes/abc/").handler)
        assert.equal("sandboxes.pause", router.match("POST", "/v1/sandboxes/abc/pause/").handler)
        assert.same({ nil, "not_found" }, { router.match("GET", "/sandboxes//") })
        assert.same({ nil, "not_found" }, { router.match("GET", "/v1/sandboxes/abc/pause//") })
        assert.same({ nil, "not_found" }, { router.match("GET", "/health/") })
    end)

    it("answers not_found for unknown and unimplemented paths", function()
        for _, p in ipairs({
            "/",
            "/nope",
            "/v1/sandboxes/abc/diagnostics/inspect",
            "/sandboxes//pause",
        }) do
            assert.same({ nil, "not_found" }, { router.match("GET", p) }, p)
            assert.same({ nil, "not_found" }, { router.match("POST", p) }, p)
        end
    end)

    it("answers method_not_allowed with the Allow list", function()
        assert.same({ nil, "method_not_allowed", "GET, HEAD, POST" }, { router.match("PUT", "/v1/sandboxes") })
        assert.same({ nil, "method_not_allowed", "DELETE, GET, HEAD" }, { router.match("POST", "/sandboxes/x") })
        assert.same({ nil, "method_not_allowed", "POST" }, { router.match("GET", "/v1/sandboxes/x/pause") })
        assert.same({ nil, "method_not_allowed", "GET, HEAD" }, { router.match("POST", "/health") })
        assert.same({ nil, "method_not_allowed", "PATCH" }, { router.match("GET", "/sandboxes/x/metadata/") })
    end)

    it("answers HEAD wherever GET is served", function()
        assert.equal("system.health", router.match("HEAD", "/health").handler)
        assert.equal("sandboxes.get", router.match("HEAD", "/v1/sandboxes/x").handler)
    end)

    it("routes every method of the proxy, with and without a path", function()
        for _, m in ipairs({ "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" }) do
            local r, p = router.match(m, "/v1/sandboxes/sb/proxy/8080")
            assert.equal("proxy.forward", r.handler)
            assert.same({ id = "sb", port = "8080" }, p)
            r, p = router.match(m, "/sandboxes/sb/proxy/8080/a/b%20c/")
            assert.equal("proxy.forward", r.handler)
            assert.same({ id = "sb", port = "8080", path = "a/b c/" }, p)
        end
        local _, p = router.match("GET", "/sandboxes/sb/proxy/80/")
        assert.equal("", p.path)
    end)

    it("routes docs assets under /docs/", function()
        local r, p = router.match("GET", "/docs/swagger-ui.css")
        assert.equal("docs.asset", r.handler)
        assert.equal("swagger-ui.css", p.file)
        assert.equal("docs.swagger", router.match("GET", "/docs").handler)
    end)

    it("describes each route as data", function()
        local seen = {}
        for _, r in ipairs(router.routes()) do
            assert.is_string(r.method)
            assert.is_string(r.summary)
            assert.is_boolean(r.exempt)
            local k = r.method .. " " .. r.pattern
            assert.is_nil(seen[k], "duplicate route " .. k)
            seen[k] = true
        end
        assert.is_true(seen["GET /health"])
        assert.is_true(seen["PATCH /sandboxes/{id}/metadata"])
    end)

    it("gives the same answer on the fast path as the segment matcher, for every route shape", function()
        local methods = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND" }
        local paths = {
            "/", "/v1", "/v1/", "/health", "/v1/health", "/health/", "/docs", "/docs/", "/docs/a/b.css",
            "/v1/docs/x", "/openapi.json", "/redoc", "/metrics/events", "/v1/metrics/events/",
            "/sandboxes", "/sandboxes/", "/v1/sandboxes", "/sandboxes//", "/sandboxes/abc", "/sandboxes/abc/",
            "/v1/sandboxes/abc", "/sandboxes/a%2Fb", "/sandboxes/a%2fb/pause", "/sandboxes/abc/pause",
            "/sandboxes/abc/pause/", "/sandboxes/abc/resume", "/sandboxes/abc/renew-expiration",
            "/sandboxes/abc/renew-expirationX", "/sandboxes/abc/endpoints/8080", "/sandboxes/abc/endpoints/",
            "/sandboxes/abc/endpoints/8080/x", "/sandboxes/abc/metadata", "/sandboxes/abc/proxy/80",
            "/sandboxes/abc/proxy/80/", "/sandboxes/abc/proxy/80/a/b", "/sandboxes/abc/proxy/80//x",
            "/sandboxes/abc/proxy/", "/sandboxes/abc/proxy", "/v1/v1/sandboxes/abc", "/V1/sandboxes/abc",
            "/sandboxes/abc/x/y/z", "/sandboxes/%2e%2e/proxy/1/", "/sandboxes/(a)/pause", "/x%",
            "/sandboxes/abc%2Fproxy%2F80", "/sandboxes/a/proxy/b/proxy/80", "/proxy/80/sandboxes/abc",
            "/sandboxes/abc/egress/policy", "/v1/sandboxes/abc/egress/policyX", "/sandboxes/egress/policy",
        }
        for _, m in ipairs(methods) do
            for _, path in ipairs(paths) do
                local r1, p1, a1 = router.match(m, path)
                local r2, p2, a2 = router.match_segments(m, path)
                local what = m .. " " .. path
                assert.equal(r2 and r2.handler, r1 and r1.handler, what)
                assert.equal(r2 and r2.method, r1 and r1.method, what)
                if r1 then
                    assert.same(p2, p1, what)
                else
                    assert.equal(p2, p1, what)
                    assert.equal(a2, a1, what)
                end
            end
        end
    end)
end)
