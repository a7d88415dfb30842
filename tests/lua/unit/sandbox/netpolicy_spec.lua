-- sandbox.netpolicy: validation and normalisation of network policies, target kinds, name matching, the
-- egress API's PATCH merge and DELETE by target, the PolicyStatusResponse (upstream's egress semantics).
local json = require("common.json")
local np = require("sandbox.netpolicy")

local function rule(action, target)
    return { action = action, target = target }
end

local function bad(raw, message)
    local p, err = np.validate(raw)
    assert.is_nil(p)
    assert.are.equal(400, err.status)
    assert.are.equal("SANDBOX::INVALID_PARAMETER", err.code)
    if message then
        assert.are.equal(message, err.message)
    end
    return err
end

describe("netpolicy.validate", function()
    it("normalises upstream's examples", function()
        assert.are.same({ defaultAction = "deny", egress = { rule("allow", "pypi.org") } },
            np.validate({ defaultAction = "deny", egress = { rule("allow", "pypi.org") } }))
        assert.are.same({ defaultAction = "allow", egress = { rule("deny", "bad.example.com") } },
            np.validate({ defaultAction = "allow", egress = { rule("deny", "bad.example.com") } }))
    end)

    it("defaults to deny with no rules (an omitted defaultAction, or {})", function()
        local p = np.validate({})
        assert.are.same({ defaultAction = "deny", egress = {} }, p)
        assert.are.equal('[]', json.encode(p.egress)) -- an array on the wire, also when empty
        assert.are.equal("deny", np.validate({ egress = { rule("allow", "a.com") } }).defaultAction)
        assert.are.equal("deny", np.validate({ defaultAction = json.null }).defaultAction)
    end)

    it("lower-cases actions and targets, trims, drops a trailing dot", function()
        local p = np.validate({ defaultAction = " Allow ", egress = {
            rule("DENY", " Example.COM. "), rule("Allow", "*.PyPI.org."),
        } })
        assert.are.same({ defaultAction = "allow", egress = {
            rule("deny", "example.com"), rule("allow", "*.pypi.org") } }, p)
    end)

    it("writes addresses canonically and CIDRs as their network", function()
        local p = np.validate({ egress = {
            rule("allow", "10.1.2.3/8"), rule("allow", "192.168.0.1"), rule("deny", "2001:DB8:0:0:0:0:0:1"),
            rule("allow", "2001:db8::1/32"), rule("allow", "::ffff:1.2.3.4"), rule("deny", "::/0"),
            rule("allow", "0.0.0.0/0"),
        } })
        local targets = {}
        for i, r in ipairs(p.egress) do
            targets[i] = r.target
        end
        assert.are.same({ "10.0.0.0/8", "192.168.0.1", "2001:db8::1", "2001:db8::/32", "::ffff:102:304", "::/0",
            "0.0.0.0/0" }, targets)
    end)

    it("refuses what is not a policy, naming the field", function()
        bad("x", "networkPolicy must be an object with defaultAction and egress.")
        bad({ 1, 2 }, "networkPolicy must be an object with defaultAction and egress.")
        bad({ defaultAction = "block" }, "networkPolicy.defaultAction must be 'allow' or 'deny'.")
        bad({ defaultAction = 1 }, "networkPolicy.defaultAction must be 'allow' or 'deny'.")
        bad({ egress = "pypi.org" }, "networkPolicy.egress must be an array of rules ({action, target}).")
        bad({ egress = { "pypi.org" } }, "networkPolicy.egress[0] must be an object with action and target.")
        bad({ egress = { rule("allow", "a.com"), { target = "b.com" } } },
            "networkPolicy.egress[1].action must be 'allow' or 'deny'.")
        bad({ egress = { rule("permit", "a.com") } }, "networkPolicy.egress[0].action must be 'allow' or 'deny'.")
        bad({ egress = { { action = "allow" } } }, "networkPolicy.egress[0].target is required.")
        bad({ egress = { rule("allow", 5) } }, "networkPolicy.egress[0].target must be a string.")
        bad({ egress = { rule("allow", "  ") } }, "networkPolicy.egress[0].target must not be empty.")
    end)

    it("refuses malformed names, wildcards, addresses and CIDRs", function()
        local cases = {
            { "exa mple.com", "is not a valid domain name" },
            { "a..com", "is not a valid domain name" },
            { "-a.com", "is not a valid domain name" },
            { "a-.com", "is not a valid domain name" },
            { string.rep("a", 64) .. ".com", "is not a valid domain name" },
            { "http://a.com", "is not a valid CIDR (address/prefix-length)" },
            { "a.com:443", "is not a valid IPv6 address" },
            { "*", "is not a valid wildcard domain: '*' is allowed only as a leading '*.' label" },
            { "*a.com", "is not a valid wildcard domain: '*' is allowed only as a leading '*.' label" },
            { "a.*.com", "is not a valid wildcard domain: '*' is allowed only as a leading '*.' label" },
            { "*.", "is not a valid wildcard domain: '*' is allowed only as a leading '*.' label" },
            { "*.*.a.com", "is not a valid wildcard domain (*.example.com)" },
            { "256.1.1.1", "is not a valid IPv4 address" },
            { "1.2.3", "is not a valid IPv4 address" },
            { "01.2.3.4", "is not a valid IPv4 address" },
            { "10.0.0.0/33", "has a prefix length above 32" },
            { "10.0.0.0/", "is not a valid CIDR (address/prefix-length)" },
            { "10.0.0.0/8/8", "is not a valid CIDR (address/prefix-length)" },
            { "a.com/8", "is not a valid CIDR (address/prefix-length)" },
            { "2001:db8::/129", "has a prefix length above 128" },
            { "2001:db8:::1", "is not a valid IPv6 address" },
            { "1:2:3:4:5:6:7:8:9", "is not a valid IPv6 address" },
            { "fe80::1%eth0", "is not a valid IPv6 address" },
            { "12345::", "is not a valid IPv6 address" },
        }
        for _, c in ipairs(cases) do
            local err = bad({ egress = { rule("allow", "ok.com"), rule("deny", c[1]) } })
            assert.are.equal(string.format("networkPolicy.egress[1].target '%s' %s.", c[1], c[2]), err.message)
        end
    end)

    it("answers a huge target (linear trimming and checks: a quadratic pattern would hang here)", function()
        local huge = "x" .. string.rep(" ", 300000) .. "y" .. string.rep(" a", 100000)
        local _, err = np.validate({ egress = { rule("allow", huge) } })
        assert.are.equal(400, err.status)
        assert.is_true(#err.message < 200, "the message quotes a short prefix")
    end)

    it("caps the number of rules", function()
        local many = {}
        for i = 1, np.MAX_RULES + 1 do
            many[i] = rule("allow", "h" .. i .. ".com")
        end
        bad({ egress = many }, string.format("networkPolicy.egress has %d rules; at most %d are allowed.",
            np.MAX_RULES + 1, np.MAX_RULES))
        many[#many] = nil
        assert.are.equal(np.MAX_RULES, #np.validate({ egress = many }).egress)
    end)
end)

describe("netpolicy.kind", function()
    it("classifies targets", function()
        assert.are.equal("domain", np.kind("example.com"))
        assert.are.equal("domain", np.kind("localhost"))
        assert.are.equal("domain", np.kind("_dmarc.example.com"))
        assert.are.equal("wildcard", np.kind("*.example.com"))
        assert.are.equal("ipv4", np.kind("10.0.0.1"))
        assert.are.equal("cidr4", np.kind("10.0.0.0/8"))
        assert.are.equal("ipv6", np.kind("2001:db8::1"))
        assert.are.equal("ipv6", np.kind("::1"))
        assert.are.equal("cidr6", np.kind("fd00::/8"))
        assert.is_nil(np.kind("a..b"))
    end)
end)

describe("netpolicy.match_name", function()
    local p = np.validate({ defaultAction = "deny", egress = {
        rule("deny", "bad.example.com"),
        rule("allow", "*.example.com"),
        rule("allow", "pypi.org"),
        rule("allow", "10.0.0.0/8"),
        rule("deny", "*.pypi.org"),
    } })

    it("takes the first rule in order that matches", function()
        assert.are.same({ "deny", 1 }, { np.match_name(p, "bad.example.com") })
        assert.are.same({ "allow", 2 }, { np.match_name(p, "good.example.com") })
        assert.are.same({ "allow", 2 }, { np.match_name(p, "a.b.example.com") })
        assert.are.same({ "allow", 3 }, { np.match_name(p, "pypi.org") })
        assert.are.same({ "deny", 5 }, { np.match_name(p, "files.pypi.org") })
    end)

    it("a wildcard does not match its own apex; exact names match exactly", function()
        assert.are.same({ "deny" }, { np.match_name(p, "example.com") })
        assert.are.same({ "deny" }, { np.match_name(p, "notexample.com") })
        assert.are.same({ "deny" }, { np.match_name(p, "pypi.org.evil.com") })
    end)

    it("ignores case and a trailing dot", function()
        assert.are.same({ "allow", 3 }, { np.match_name(p, "PyPI.Org.") })
        assert.are.same({ "deny", 1 }, { np.match_name(p, "BAD.example.COM") })
    end)

    it("never matches a name against address rules; nothing matching gives defaultAction", function()
        assert.are.same({ "deny" }, { np.match_name(p, "10.0.0.1") })
        local allow = np.validate({ defaultAction = "allow", egress = { rule("deny", "1.2.3.4") } })
        assert.are.same({ "allow" }, { np.match_name(allow, "1.2.3.4") })
        assert.are.same({ "allow" }, { np.match_name(allow, "anything.org") })
    end)
end)

describe("netpolicy.patch and remove", function()
    local base = np.validate({ defaultAction = "deny", egress = {
        rule("allow", "a.com"), rule("deny", "b.com"), rule("allow", "*.c.com") } })

    it("puts incoming rules first, replacing rules with the same target, keeping defaultAction", function()
        local rules = np.validate_rules({ rule("deny", "A.com"), rule("allow", "d.com") }, "body")
        local p = np.patch(base, rules)
        assert.are.same({ defaultAction = "deny", egress = {
            rule("deny", "a.com"), rule("allow", "d.com"), rule("deny", "b.com"), rule("allow", "*.c.com") } }, p)
        assert.are.same({ "deny", 1 }, { np.match_name(p, "a.com") })
        -- the base policy is unchanged
        assert.are.same(rule("allow", "a.com"), base.egress[1])
    end)

    it("the first of several incoming rules with one target wins (upstream's example)", function()
        local rules = np.validate_rules({ rule("allow", "example.com"), rule("deny", "example.com") }, "body")
        local p = np.patch(np.validate({}), rules)
        assert.are.same({ rule("allow", "example.com") }, p.egress)
    end)

    it("refuses a merge beyond the cap", function()
        local many = {}
        for i = 1, np.MAX_RULES do
            many[i] = rule("allow", "h" .. i .. ".com")
        end
        local full = np.validate({ egress = many })
        local p, err = np.patch(full, { rule("allow", "one-more.com") })
        assert.is_nil(p)
        assert.are.equal(400, err.status)
        assert.are.equal(np.MAX_RULES, #np.patch(full, { rule("deny", "h1.com") }).egress)
    end)

    it("validates PATCH bodies: a non-empty array of rules", function()
        for _, raw in ipairs({ {}, "x", { a = 1 } }) do
            local r, err = np.validate_rules(raw, "body", { non_empty = true })
            assert.is_nil(r)
            assert.are.equal(400, err.status)
        end
        local _, err = np.validate_rules({ rule("allow", "ok.com"), rule("allow", "bad..com") }, "body")
        assert.are.equal("body[1].target 'bad..com' is not a valid domain name.", err.message)
    end)

    it("removes by target, normalised; unknown targets are ignored", function()
        local targets = np.validate_targets({ "B.com.", "*.C.com", "nope.org", "not a target" }, "body")
        local p, removed = np.remove(base, targets)
        assert.are.equal(2, removed)
        assert.are.same({ defaultAction = "deny", egress = { rule("allow", "a.com") } }, p)
        local same, none = np.remove(base, { "x.org" })
        assert.are.equal(0, none)
        assert.are.same(base, same)
        local cidr = np.validate({ egress = { rule("allow", "10.0.0.0/8") } })
        assert.are.equal(1, select(2, np.remove(cidr, np.validate_targets({ "10.9.9.9/8" }, "body"))))
    end)

    it("validates DELETE bodies: a non-empty array of strings", function()
        for _, raw in ipairs({ {}, "a.com", { 1 } }) do
            local t, err = np.validate_targets(raw, "body")
            assert.is_nil(t)
            assert.are.equal(400, err.status)
        end
    end)
end)

describe("netpolicy.status", function()
    it("derives upstream's mode and reports dns+nft enforcement", function()
        assert.are.same({ status = "ok", mode = "deny_all", enforcementMode = "dns+nft",
            policy = { defaultAction = "deny", egress = {} } }, np.status(np.validate({})))
        assert.are.equal("allow_all", np.status(np.validate({ defaultAction = "allow" })).mode)
        local s = np.status(np.validate({ egress = { rule("allow", "pypi.org") } }), "why")
        assert.are.equal("enforcing", s.mode)
        assert.are.equal("why", s.reason)
        assert.are.equal('{"action":"allow","target":"pypi.org"}', json.encode(s.policy.egress[1]):gsub(
            '"target":"pypi.org","action":"allow"', '"action":"allow","target":"pypi.org"'))
    end)

    it("keeps egress a JSON array after a store round trip", function()
        local back = json.decode(json.encode(np.validate({})))
        assert.are.equal('[]', json.encode(np.status(back).policy.egress))
    end)
end)
