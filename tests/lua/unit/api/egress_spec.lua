-- The egress API's routes (lua/api/egress.lua) through the whole pipeline of api.new with a fake service:
-- no API key needed on the route, the egress token and the key's verdict handed to the service, a wrong
-- key refused unless a token comes with it, bodies parsed and validated (sandbox/netpolicy.lua) only after
-- access is granted, and the service's PolicyStatusResponse rendered.
local F = dofile("tests/lua/unit/api/fakes.lua")
local api = require("api")
local errors = require("common.errors")
local json = require("common.json")

local ID = "11111111-2222-4333-8444-555555555555"
local PATH = "/v1/sandboxes/" .. ID .. "/egress/policy"
local STATUS = { status = "ok", mode = "deny_all", enforcementMode = "dns+nft",
    policy = { defaultAction = "deny", egress = json.array() } }

local function call(deps, t)
    local status, headers, body = api.new(deps)(F.request(t))
    return status, headers, body and body ~= "" and json.decode(body) or nil
end

-- the service grants access to the token "tok" or to a valid key (by_key)
local function service()
    return F.service({
        egress_access = function(id, token, by_key)
            if token == "tok" or by_key then
                return { id = id }
            end
            return nil, errors.new(401, "SANDBOX::EGRESS_UNAUTHORIZED", "no")
        end,
        egress_policy = function(_, token, by_key)
            if token == "tok" or by_key then
                return STATUS
            end
            return nil, errors.new(401, "SANDBOX::EGRESS_UNAUTHORIZED", "no")
        end,
        patch_egress = STATUS,
        remove_egress = STATUS,
    })
end

describe("api egress routes", function()
    local deps
    before_each(function()
        deps = F.deps({ service = service() })
    end)

    local function last(name)
        for i = #deps.service.calls, 1, -1 do
            if deps.service.calls[i].name == name then
                return deps.service.calls[i].args
            end
        end
    end

    it("need no API key: the token goes to the service", function()
        for _, p in ipairs({ PATH, "/sandboxes/" .. ID .. "/egress/policy", PATH .. "/" }) do
            local s, _, b = call(deps, { path = p, headers = { ["OPENSANDBOX-EGRESS-AUTH"] = "tok" } })
            assert.equal(200, s)
            assert.same(STATUS, b)
            local args = last("egress_policy")
            assert.equal(ID, args[1])
            assert.equal("tok", args[2])
            assert.is_nil(args[3])
        end
        local s, _, b = call(deps, { path = PATH })
        assert.equal(401, s)
        assert.equal("SANDBOX::EGRESS_UNAUTHORIZED", b.code)
    end)

    it("a valid key counts; a wrong key without a token is 401 INVALID_API_KEY, with one it is ignored", function()
        local s = call(deps, { path = PATH, headers = { ["OPEN-SANDBOX-API-KEY"] = "secret-key" } })
        assert.equal(200, s)
        assert.is_true(last("egress_policy")[3])
        local _, b
        s, _, b = call(deps, { path = PATH, headers = { ["OPEN-SANDBOX-API-KEY"] = "wrong" } })
        assert.equal(401, s)
        assert.equal("INVALID_API_KEY", b.code)
        s = call(deps, { path = PATH,
            headers = { ["OPEN-SANDBOX-API-KEY"] = "wrong", ["OPENSANDBOX-EGRESS-AUTH"] = "tok" } })
        assert.equal(200, s)
        assert.is_nil(last("egress_policy")[3])
    end)

    it("with no key configured every route is open, this one too", function()
        deps = F.deps({ service = service(), config = { server = {} } })
        local s = call(deps, { path = PATH })
        assert.equal(200, s)
        assert.is_true(last("egress_policy")[3])
    end)

    it("PATCH validates the rules after access and hands them normalised to the service", function()
        local h = { ["OPENSANDBOX-EGRESS-AUTH"] = "tok" }
        local s, _, b = call(deps, { method = "PATCH", path = PATH, headers = h,
            body = '[{"action":"Allow","target":"PyPI.org."}]' })
        assert.equal(200, s)
        assert.same(STATUS, b)
        local args = last("patch_egress")
        assert.same({ { action = "allow", target = "pypi.org" } }, args[2])
        assert.equal("tok", args[3])
        for body, message in pairs({
            ["[]"] = "body must be a non-empty array of rules ({action, target}).",
            [""] = "Request body must be a JSON array.",
            ['{"action":"allow"}'] = "Request body must be a JSON array.",
            ["[1"] = "Request body must be a JSON array.",
            ['[{"action":"allow","target":"a b"}]'] = "body[0].target 'a b' is not a valid domain name.",
        }) do
            s, _, b = call(deps, { method = "PATCH", path = PATH, headers = h, body = body })
            assert.equal(400, s, body)
            assert.same({ code = "SANDBOX::INVALID_PARAMETER", message = message }, b)
        end
        -- without access the body is not looked at
        s, _, b = call(deps, { method = "PATCH", path = PATH, body = "[]" })
        assert.equal(401, s)
        assert.equal("SANDBOX::EGRESS_UNAUTHORIZED", b.code)
    end)

    it("DELETE takes targets, normalised", function()
        local s = call(deps, { method = "DELETE", path = PATH, headers = { ["OPENSANDBOX-EGRESS-AUTH"] = "tok" },
            body = '["*.Example.COM.", "10.1.2.3/8"]' })
        assert.equal(200, s)
        assert.same({ "*.example.com", "10.0.0.0/8" }, last("remove_egress")[2])
        local _, b
        s, _, b = call(deps, { method = "DELETE", path = PATH, headers = { ["OPENSANDBOX-EGRESS-AUTH"] = "tok" },
            body = '[1]' })
        assert.equal(400, s)
        assert.equal("body[0] must be a string.", b.message)
    end)

    it("other methods are 405", function()
        local s, h = call(deps, { method = "POST", path = PATH, headers = { ["OPENSANDBOX-EGRESS-AUTH"] = "tok" } })
        assert.equal(405, s)
        assert.equal("DELETE, GET, HEAD, PATCH", h.Allow)
    end)
end)
