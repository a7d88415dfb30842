-- Integration spec: network policy's control plane on the real server and the real Docker daemon:
-- networkPolicy on create (validated before anything is made: a refused create leaves no container), the
-- egress API reached the way the SDKs reach it (the endpoint of port 18080, direct and with
-- use_server_proxy=true, then {endpoint}/policy with the OPENSANDBOX-EGRESS-AUTH header it hands out),
-- its access rules (token, keys of tenants), upstream's PATCH/DELETE semantics, and durability: a restart
-- keeps the patched policy and hands it to the runtime again. Enforcement (packets, DNS) is tested with
-- the Docker runtime's enforcement module (runtimes.docker.netpolicy), not here.
--
--   lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' \
--       tests/lua/integration/lifecycle/egress_api_spec.lua
local H = require("lifecycle.helpers")
local json = H.json

local ADMIN, KEY_A, KEY_B = "np-admin-key", "np-team-a-key", "np-team-b-key"
local ADM = { ["OPEN-SANDBOX-API-KEY"] = ADMIN }
local A = { ["OPEN-SANDBOX-API-KEY"] = KEY_A }
local B = { ["OPEN-SANDBOX-API-KEY"] = KEY_B }
local AUTH = "OPENSANDBOX-EGRESS-AUTH"

local POLICY = { defaultAction = "deny", egress = {
    { action = "allow", target = "PyPI.org." },
    { action = "allow", target = "*.example.com" },
    { action = "allow", target = "10.1.2.3/16" },
} }

local function path(id, suffix)
    return "/v1/sandboxes/" .. id .. (suffix or "")
end

-- a request to http://{endpoint}{suffix} with `headers`, as an SDK makes it
local function at(endpoint, method, suffix, body, headers)
    if type(body) == "table" then
        body = json.encode(body)
    end
    local res, err = H.curl({ method = method, url = "http://" .. endpoint .. suffix, body = body,
        headers = headers, timeout = 60 })
    assert(res, "request failed: " .. tostring(err))
    if res.body ~= "" then
        res.json = json.decode(res.body)
    end
    return res
end

local function rules_of(res)
    local out = {}
    for i, r in ipairs(res.json.policy.egress) do
        out[i] = r.action .. " " .. r.target
    end
    return out
end

describe("network policy #integration #docker", function()
    local srv

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
        srv = H.start({ config = { server = { api_key = ADMIN, api_keys = {
            { key = KEY_A, principal = "team-a", admin = false },
            { key = KEY_B, principal = "team-b", admin = false },
        } } } })
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    local function create_running(over, headers)
        local res = H.call(srv, "POST", "/v1/sandboxes", H.body(over), headers or A)
        assert.are.equal(202, res.status, res.body)
        local id = res.json.id
        for _ = 1, 240 do
            local sb = H.call(srv, "GET", path(id), nil, ADM).json
            if sb.status.state == "Running" then
                return id
            end
            H.sleep(0.25)
        end
        error("sandbox " .. id .. " never ran")
    end

    local function endpoint(id, proxy)
        local res = H.call(srv, "GET", path(id, "/endpoints/18080?use_server_proxy=" .. tostring(proxy)), nil, A)
        assert.are.equal(200, res.status, res.body)
        return res.json
    end

    it("refuses a malformed policy with 400 naming the field, and creates nothing", function()
        local before = #H.labelled_containers()
        local cases = {
            { { egress = { { action = "allow", target = "ok.org" }, { action = "allow", target = "bad..name" } } },
                "networkPolicy.egress[1].target 'bad..name' is not a valid domain name." },
            { { egress = { { action = "allow", target = "10.0.0.0/33" } } },
                "networkPolicy.egress[0].target '10.0.0.0/33' has a prefix length above 32." },
            { { egress = { { action = "permit", target = "a.org" } } },
                "networkPolicy.egress[0].action must be 'allow' or 'deny'." },
            { { defaultAction = "drop" }, "networkPolicy.defaultAction must be 'allow' or 'deny'." },
            { "deny", "networkPolicy must be an object with defaultAction and egress." },
        }
        for _, c in ipairs(cases) do
            local res = H.call(srv, "POST", "/v1/sandboxes", H.body({ networkPolicy = c[1] }), A)
            H.assert_error(res, 400, "SANDBOX::INVALID_PARAMETER", c[2])
        end
        H.sleep(1)
        assert.are.equal(before, #H.labelled_containers(), "no container was created")
        assert.are.equal(0, H.call(srv, "GET", "/v1/sandboxes", nil, ADM).json.pagination.totalItems)
    end)

    it("refuses a policy the runtime cannot enforce (host network) before anything is made", function()
        local host = H.start({ config = { docker = { network_mode = "host" } } })
        local before = #H.labelled_containers()
        local res = H.call(host, "POST", "/v1/sandboxes", H.body({ networkPolicy = POLICY }))
        H.assert_error(res, 400, "SANDBOX::INVALID_PARAMETER", function(m)
            return m:find('docker.network_mode = "host"', 1, true) ~= nil
        end)
        H.sleep(1)
        assert.are.equal(before, #H.labelled_containers())
        assert.are.equal(0, H.call(host, "GET", "/v1/sandboxes").json.pagination.totalItems)
        host:stop()
    end)

    describe("the egress API", function()
        local id, token

        setup(function()
            id = create_running({ networkPolicy = POLICY })
        end)

        it("is the endpoint of port 18080 on this server, with the token, direct and through the proxy", function()
            local direct, proxied = endpoint(id, false), endpoint(id, true)
            local want = "127.0.0.1:" .. srv.port .. "/sandboxes/" .. id .. "/egress"
            assert.are.equal(want, direct.endpoint)
            assert.are.equal(want, proxied.endpoint)
            token = direct.headers[AUTH]
            assert.matches("^%x+$", token)
            assert.are.equal(64, #token)
            assert.are.same({ [AUTH] = token }, direct.headers)
            assert.are.same(direct.headers, proxied.headers)
            -- the agent's endpoint is unchanged
            assert.matches("/proxy/44772$", H.call(srv, "GET", path(id, "/endpoints/44772?use_server_proxy=true"),
                nil, A).json.endpoint)
        end)

        it("GET /policy answers the normalised policy (PolicyStatusResponse) to both forms", function()
            for _, proxy in ipairs({ false, true }) do
                local ep = endpoint(id, proxy)
                local res = at(ep.endpoint, "GET", "/policy", nil, ep.headers)
                assert.are.equal(200, res.status, res.body)
                assert.matches("application/json", res.headers["content-type"])
                assert.are.same({ status = "ok", mode = "enforcing", enforcementMode = "dns+nft", policy = {
                    defaultAction = "deny", egress = {
                        { action = "allow", target = "pypi.org" },
                        { action = "allow", target = "*.example.com" },
                        { action = "allow", target = "10.1.0.0/16" } } } }, res.json)
            end
            -- also under /v1 (every route is)
            local res = H.call(srv, "GET", path(id, "/egress/policy"), nil, { [AUTH] = token })
            assert.are.equal(200, res.status, res.body)
        end)

        it("needs the token or a key that sees the sandbox", function()
            local ep = endpoint(id, false)
            local function code(headers)
                return at(ep.endpoint, "GET", "/policy", nil, headers)
            end
            local res = code(nil)
            H.assert_error(res, 401, "SANDBOX::EGRESS_UNAUTHORIZED")
            H.assert_error(code({ [AUTH] = token:sub(2) .. "0" }), 401, "SANDBOX::EGRESS_UNAUTHORIZED")
            H.assert_error(code({ [AUTH] = "" }), 401, "SANDBOX::EGRESS_UNAUTHORIZED")
            H.assert_error(code({ ["OPEN-SANDBOX-API-KEY"] = "wrong" }), 401, "INVALID_API_KEY")
            assert.are.equal(200, code(A).status)
            assert.are.equal(200, code(ADM).status)
            H.assert_error(code(B), 404, "DOCKER::SANDBOX_NOT_FOUND") -- another tenant's
            -- the token opens its own sandbox whatever key comes with it
            assert.are.equal(200, code({ [AUTH] = token, ["OPEN-SANDBOX-API-KEY"] = "wrong" }).status)
            -- PATCH and DELETE too, before the body is looked at
            H.assert_error(at(ep.endpoint, "PATCH", "/policy", "not json"), 401, "SANDBOX::EGRESS_UNAUTHORIZED")
            H.assert_error(at(ep.endpoint, "DELETE", "/policy", { "pypi.org" }), 401, "SANDBOX::EGRESS_UNAUTHORIZED")
            -- unknown sandbox
            H.assert_error(H.call(srv, "GET", "/sandboxes/00000000-0000-4000-8000-000000000000/egress/policy", nil,
                { [AUTH] = token }), 404, "DOCKER::SANDBOX_NOT_FOUND")
        end)

        it("PATCH merges upstream's way; DELETE removes by target; bad bodies are 400", function()
            local ep = endpoint(id, true)
            local res = at(ep.endpoint, "PATCH", "/policy", { { action = "deny", target = "pypi.org" },
                { action = "allow", target = "files.pythonhosted.org" },
                { action = "allow", target = "PYPI.ORG" } }, ep.headers)
            assert.are.equal(200, res.status, res.body)
            assert.are.equal("ok", res.json.status)
            assert.are.same({ "deny pypi.org", "allow files.pythonhosted.org", "allow *.example.com",
                "allow 10.1.0.0/16" }, rules_of(res))
            res = at(ep.endpoint, "GET", "/policy", nil, ep.headers)
            assert.are.same({ "deny pypi.org", "allow files.pythonhosted.org", "allow *.example.com",
                "allow 10.1.0.0/16" }, rules_of(res))

            res = at(ep.endpoint, "DELETE", "/policy", { "*.EXAMPLE.com.", "nothing.org" }, ep.headers)
            assert.are.equal(200, res.status, res.body)
            assert.are.same({ "deny pypi.org", "allow files.pythonhosted.org", "allow 10.1.0.0/16" }, rules_of(res))
            res = at(ep.endpoint, "DELETE", "/policy", { "nothing.org" }, ep.headers)
            assert.are.equal(200, res.status, res.body)
            assert.are.equal("no matching targets found", res.json.reason)

            local bad = {
                { "PATCH", "[]", "body must be a non-empty array of rules ({action, target})." },
                { "PATCH", '{"action":"allow","target":"a.org"}', "Request body must be a JSON array." },
                { "PATCH", '[{"action":"allow","target":"a..org"}]',
                    "body[0].target 'a..org' is not a valid domain name." },
                { "PATCH", "", "Request body must be a JSON array." },
                { "DELETE", "[]", "body must be a non-empty array of targets (strings)." },
                { "DELETE", "[1]", "body[0] must be a string." },
            }
            for _, b in ipairs(bad) do
                H.assert_error(at(ep.endpoint, b[1], "/policy", b[2], ep.headers), 400, "SANDBOX::INVALID_PARAMETER",
                    b[3])
            end
            -- nothing changed
            assert.are.same({ "deny pypi.org", "allow files.pythonhosted.org", "allow 10.1.0.0/16" },
                rules_of(at(ep.endpoint, "GET", "/policy", nil, ep.headers)))
        end)

        it("a sandbox created without networkPolicy has no egress API; its 18080 is an ordinary port", function()
            local plain = create_running({})
            local ep = endpoint(plain, false)
            assert.matches("/proxy/18080$", ep.endpoint)
            assert.is_nil(ep.headers and ep.headers[AUTH])
            H.assert_error(H.call(srv, "GET", "/sandboxes/" .. plain .. "/egress/policy", nil, A), 404,
                "SANDBOX::NETWORK_POLICY_NOT_FOUND")
            H.assert_error(H.call(srv, "GET", "/sandboxes/" .. plain .. "/egress/policy", nil, { [AUTH] = token }), 401,
                "SANDBOX::EGRESS_UNAUTHORIZED")
        end)
    end)
end)

describe("network policy across a restart #integration #docker", function()
    setup(function()
        H.ensure_image()
        H.remove_all_containers()
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
    end)

    it("keeps the patched policy and the token, and hands the policy to the runtime again", function()
        local srv = H.start()
        local id = H.create_running(srv, { networkPolicy = { defaultAction = "allow",
            egress = { { action = "deny", target = "bad.example.com" } } } })
        local ep = H.call(srv, "GET", path(id, "/endpoints/18080?use_server_proxy=false")).json
        local res = at(ep.endpoint, "PATCH", "/policy", { { action = "deny", target = "192.0.2.0/24" } }, ep.headers)
        assert.are.equal(200, res.status, res.body)
        local patched = res.json.policy
        srv:stop()

        local srv2 = H.start({ dir = srv.dir })
        local ep2 = H.call(srv2, "GET", path(id, "/endpoints/18080?use_server_proxy=true")).json
        assert.are.same(ep.headers, ep2.headers, "the same egress token")
        res = at(ep2.endpoint, "GET", "/policy", nil, ep2.headers)
        assert.are.equal(200, res.status, res.body)
        assert.are.same(patched, res.json.policy)
        assert.are.same({ "deny 192.0.2.0/24", "deny bad.example.com" }, rules_of(res))
        assert.are.equal("enforcing", res.json.mode)
        -- the start-up restoration called set_network_policy for it
        local log
        for _ = 1, 50 do
            log = srv2:log()
            if log:find("network policy restored", 1, true) then
                break
            end
            H.sleep(0.1)
        end
        local line = log:match("[^\n]*network policy restored[^\n]*")
        assert.is_string(line, log)
        assert.truthy(line:find(id, 1, true), line)
    end)
end)
