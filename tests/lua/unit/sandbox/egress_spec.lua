-- The lifecycle service's part of network policy (sandbox/egress.lua, provisioning.lua, views.lua) on the
-- fake runtime: the create check before anything is made, the policy and egress token in the record and
-- the store, the endpoint of port 18080, the egress API's access rules, PATCH/DELETE put in force by the
-- runtime first (a refusal leaves the stored policy), and the policies handed to the runtime again after
-- a restart.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local rterrors = require("runtimes.errors")
local netpolicy = require("sandbox.netpolicy")

local function count(t)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n
end

local function policy(raw)
    return assert(netpolicy.validate(raw))
end

local function rule(action, target)
    return { action = action, target = target }
end

local POLICY = { defaultAction = "deny", egress = { rule("allow", "pypi.org"), rule("allow", "10.0.0.0/8") } }

describe("sandbox.service network policy", function()
    local function refused_create(e, spec, status, message)
        local v, err = e:create(spec)
        assert.is_nil(v)
        assert.equal(status, err.status)
        assert.equal("SANDBOX::INVALID_PARAMETER", err.code)
        if message then
            assert.equal(message, err.message)
        end
        e:run()
        assert.equal(0, count(e.store.rows), "no record")
        assert.equal(0, e.rt:count(), "no runtime object")
        assert.equal(0, #e:calls("provision"), "nothing provisioned")
        return err
    end

    it("hands the policy to the runtime at provisioning and keeps it, with an egress token, in the store", function()
        local e = S.env()
        local id = e:running(S.spec({ network_policy = policy(POLICY) }))
        assert.same(policy(POLICY), e.rt.objects["fake-1"].spec.network_policy)
        assert.same(policy(POLICY), e.rt.policies["fake-1"])
        local row = e.store.rows[id]
        assert.same(policy(POLICY), row.network_policy)
        assert.matches("^%x+$", row.egress_token)
        assert.equal(32, #row.egress_token)
        assert.are_not.equal(row.access_token, row.egress_token)
        -- GET /sandboxes/{id} does not show it (upstream's Sandbox has no networkPolicy)
        assert.is_nil(e.svc:get(id).networkPolicy)
    end)

    it("a sandbox without a policy has none and no egress token", function()
        local e = S.env()
        local id = e:running()
        assert.is_nil(e.store.rows[id].network_policy)
        assert.is_nil(e.store.rows[id].egress_token)
        assert.is_nil(e.rt.objects["fake-1"].spec.network_policy)
    end)

    it("asks the runtime before anything is made: its refusal is a 400 with its reason", function()
        local e = S.env({ runtime = require("runtimes.fake").new({ fake = { no_network_policy = true } }) })
        refused_create(e, S.spec({ network_policy = policy(POLICY) }), 400,
            "networkPolicy is not supported by the fake runtime.")
        -- without a policy the runtime is not asked
        e:running()
        assert.equal(1, #e:calls("network_policy_support"))
    end)

    it("validates a policy a hook put into the spec", function()
        local hooks = S.hooks()
        function hooks.before_create(_, _, spec)
            spec.network_policy = { egress = { rule("allow", "bad..name") } }
            return spec
        end
        local e = S.env({ hooks = hooks })
        refused_create(e, S.spec(), 400, "networkPolicy.egress[0].target 'bad..name' is not a valid domain name.")
    end)

    it("a hook can impose a policy: it is normalised and kept, with a token", function()
        local hooks = S.hooks()
        function hooks.before_create(_, _, spec)
            spec.network_policy = { egress = { rule("Allow", "Tenant.Example.") } }
            return spec
        end
        local e = S.env({ hooks = hooks })
        local id = e:running(S.spec())
        assert.same(policy({ defaultAction = "deny", egress = { rule("allow", "tenant.example") } }),
            e.store.rows[id].network_policy)
        assert.is_string(e.store.rows[id].egress_token)
        assert.same(e.store.rows[id].network_policy, e.rt.policies["fake-1"])
    end)

    it("answers a runtime that is unreachable while checking with 503, nothing made", function()
        local e = S.env()
        e.rt:fail_next("network_policy_support", rterrors.new("unavailable", "gone"))
        local v, err = e:create(S.spec({ network_policy = policy(POLICY) }))
        assert.is_nil(v)
        assert.equal(503, err.status)
        assert.equal(0, count(e.store.rows))
    end)

    describe("the endpoint of port 18080", function()
        it("is this server's egress API with the egress token, in both forms", function()
            local e = S.env()
            local id = e:running(S.spec({ network_policy = policy(POLICY) }))
            local token = e.store.rows[id].egress_token
            for _, proxy in ipairs({ false, true }) do
                local ep = assert(e:op("endpoint", id, 18080, proxy, { host = "srv:9000" }))
                assert.same({ endpoint = "srv:9000/sandboxes/" .. id .. "/egress",
                    headers = { ["OPENSANDBOX-EGRESS-AUTH"] = token } }, ep)
            end
            e.config.server.eip = "https://public.example"
            local ep = assert(e:op("endpoint", id, 18080, false, { host = "srv:9000" }))
            assert.equal("public.example/sandboxes/" .. id .. "/egress", ep.endpoint)
        end)

        it("is an ordinary port of a sandbox without a policy", function()
            local e = S.env()
            local id = e:running()
            local ep = assert(e:op("endpoint", id, 18080, true, { host = "srv:9000" }))
            assert.equal("srv:9000/sandboxes/" .. id .. "/proxy/18080", ep.endpoint)
            assert.is_nil(ep.headers and ep.headers["OPENSANDBOX-EGRESS-AUTH"])
        end)
    end)

    describe("the egress API", function()
        local e, id, token
        before_each(function()
            e = S.env()
            id = e:running(S.spec({ network_policy = policy(POLICY) }))
            token = e.store.rows[id].egress_token
        end)

        it("GET answers the PolicyStatusResponse with the token, or with a key that sees the sandbox", function()
            local want = { status = "ok", mode = "enforcing", enforcementMode = "dns+nft", policy = policy(POLICY) }
            assert.same(want, e:op("egress_policy", id, token, false, {}))
            assert.same(want, e:op("egress_policy", id, nil, true, {}))
            assert.same(want, e:op("egress_policy", id, nil, true, { admin = true }))
        end)

        it("refuses a missing or wrong token (401), a key of another tenant (404), an unknown sandbox (404)", function()
            for _, bad in ipairs({ false, "", token:sub(2) .. "0", token .. "0" }) do
                local res, err = e:op("egress_policy", id, bad or nil, false, {})
                assert.is_nil(res)
                assert.equal(401, err.status)
                assert.equal("SANDBOX::EGRESS_UNAUTHORIZED", err.code)
            end
            local _, err = e:op("egress_policy", id, nil, true, { admin = false, principal = "other" })
            assert.equal(404, err.status)
            _, err = e:op("egress_policy", "no-such-id", token, false, {})
            assert.equal(404, err.status)
            assert.equal("DOCKER::SANDBOX_NOT_FOUND", err.code)
        end)

        it("answers 404 for a sandbox created without a policy", function()
            local plain = e:running()
            local _, err = e:op("egress_policy", plain, nil, true, {})
            assert.equal(404, err.status)
            assert.equal("SANDBOX::NETWORK_POLICY_NOT_FOUND", err.code)
        end)

        it("PATCH merges, puts the policy in force, then stores it", function()
            local rules = assert(netpolicy.validate_rules({ rule("deny", "pypi.org"), rule("allow", "*.x.org") },
                "body"))
            local res = assert(e:op("patch_egress", id, rules, token, false, {}))
            local want = { defaultAction = "deny", egress = { rule("deny", "pypi.org"), rule("allow", "*.x.org"),
                rule("allow", "10.0.0.0/8") } }
            assert.same(want, res.policy)
            assert.same(want, e.rt.policies["fake-1"])
            assert.same({ handle = "fake-1", policy = want }, e.rt.applied[#e.rt.applied])
            assert.same(want, e.store.rows[id].network_policy)
            assert.same(want, e:op("egress_policy", id, token, false, {}).policy)
        end)

        it("DELETE removes by target; naming no rule changes nothing and says why", function()
            local res = assert(e:op("remove_egress", id, { "pypi.org", "nope.org" }, token, false, {}))
            assert.same({ rule("allow", "10.0.0.0/8") }, res.policy.egress)
            assert.same({ rule("allow", "10.0.0.0/8") }, e.store.rows[id].network_policy.egress)
            local applied = #e.rt.applied
            res = assert(e:op("remove_egress", id, { "nope.org" }, token, false, {}))
            assert.equal("no matching targets found", res.reason)
            assert.equal(applied, #e.rt.applied, "nothing applied")
            res = assert(e:op("remove_egress", id, { "10.0.0.0/8" }, token, false, {}))
            assert.equal("deny_all", res.mode)
        end)

        it("a runtime refusal is a 500 and leaves the stored policy; unreachable is 503", function()
            local rules = { rule("allow", "new.org") }
            e.rt:fail_next("set_network_policy", rterrors.new("api", "nft said no"))
            local res, err = e:op("patch_egress", id, rules, token, false, {})
            assert.is_nil(res)
            assert.equal(500, err.status)
            assert.equal("SANDBOX::NETWORK_POLICY_APPLY_FAILED", err.code)
            assert.matches("nft said no", err.message)
            assert.same(policy(POLICY), e.store.rows[id].network_policy)
            assert.same(policy(POLICY), e.svc.records[id].network_policy)
            e.rt:fail_next("set_network_policy", rterrors.new("unavailable", "docker down"))
            res, err = e:op("remove_egress", id, { "pypi.org" }, token, false, {})
            assert.is_nil(res)
            assert.equal(503, err.status)
            assert.same(policy(POLICY), e.store.rows[id].network_policy)
        end)

        it("refuses changes to a sandbox that is not live (409); a paused one is changed", function()
            assert(e:op("pause", id, {}))
            assert(e:op("patch_egress", id, { rule("allow", "p.org") }, token, false, {}))
            assert.equal("p.org", e.store.rows[id].network_policy.egress[1].target)
            e.rt:set_status("fake-1", "Failed", "CONTAINER_EXITED_ERROR", "exited")
            e:watch()
            local _, err = e:op("patch_egress", id, { rule("allow", "q.org") }, token, false, {})
            assert.equal(409, err.status)
            -- GET still answers
            assert.equal("p.org", e:op("egress_policy", id, token, false, {}).policy.egress[1].target)
        end)
    end)

    it("after a restart, hands every live sandbox's stored policy to the runtime again", function()
        local rt = require("runtimes.fake").new({})
        local e = S.env({ runtime = rt })
        local id = e:running(S.spec({ network_policy = policy(POLICY) }))
        local plain = e:running()
        assert(e:op("patch_egress", id, { rule("allow", "later.org") }, e.store.rows[id].egress_token, false, {}))
        local patched = e.store.rows[id].network_policy
        -- a new server on the same store and runtime
        rt.applied = {}
        local e2 = S.env({ runtime = rt, store = e.store, load = true })
        e2:run()
        assert.equal(1, #rt.applied)
        assert.same({ handle = "fake-1", policy = patched }, rt.applied[1])
        assert.same(patched, e2.svc.records[id].network_policy)
        assert.is_nil(e2.svc.records[plain].network_policy)
        local restored = 0
        for _, l in ipairs(e2.log.lines) do
            if l == "info network policy restored" then
                restored = restored + 1
            end
        end
        assert.equal(1, restored)
    end)
end)
