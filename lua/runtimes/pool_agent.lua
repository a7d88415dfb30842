-- The warm pool half of the runtime contract that is the same on every runtime (lua/runtimes/README.md,
-- "pools"): a member's agent is asked over HTTP, never the runtime's API, so `pool_ping` and `pool_claim`
-- need only the adapter's `address(rec, port, "proxy")` and its HTTP client (`self.client`).
--
--   require("runtimes.pool_agent").install(Class, { port = 44772 })
--
-- adds to an adapter's class:
--   Class:_agent_request(rec, method, path, body, token)  one request to the sandbox's agent: res, or nil, err
--                                                         (`unavailable` when it cannot be reached)
--   Class:pool_ping(rec)                                  GET /ping with the boot token (rec.access_token);
--                                                         true, { claim_marker } (runtimes/docker/pool_claims.lua)
--   Class:pool_claim(rec, claim)                          POST /pool/claim {token, entrypoint, env}, with the
--                                                         boot token (execd/src/pool.c)
local rterrors = require("runtimes.errors")
local json = require("common.json")

local M = {}

M.TIMEOUT = 5 -- seconds for one request to a member's agent (connect included)
M.TOKEN_HEADER = "X-EXECD-ACCESS-TOKEN"
M.MARKER_HEADER = "x-opensandbox-pool-claim-file" -- (lower case: as core.client gives header names)

--- `host` as the host part of a URL (an IPv6 address in brackets).
function M.bracket(host)
    if host:find(":", 1, true) and not host:find("^%[") then
        return "[" .. host .. "]"
    end
    return host
end

local function reason(err)
    return tostring(type(err) == "table" and (err.message or err.kind) or err)
end

--- The agent's own timings in a claim's answer body: { accepted_us, handled_us, replied_us } or nil.
function M.claim_times(body)
    if type(body) ~= "string" or body:sub(1, 1) ~= "{" then
        return nil
    end
    local ok, doc = pcall(json.decode, body)
    if not ok or type(doc) ~= "table" then
        return nil
    end
    local a, h, r = math.tointeger(doc.acceptedUs), math.tointeger(doc.handledUs), math.tointeger(doc.repliedUs)
    if not (a and h and r) then
        return nil
    end
    return { accepted_us = a, handled_us = h, replied_us = r }
end

--- The claim as the agent reads it (POST /pool/claim's body, or the claim file): JSON text.
function M.claim_body(claim)
    local env = json.array()
    for i, kv in ipairs(claim.env or {}) do
        env[i] = kv
    end
    local ep = json.array()
    for i, a in ipairs(claim.entrypoint) do
        ep[i] = a
    end
    return json.encode({ token = claim.token, entrypoint = ep, env = env })
end

--- Installs the three methods into `Class` (opts.port: the agent's port in the sandbox).
function M.install(Class, opts)
    local port = assert(opts and opts.port, "pool_agent.install: opts.port required")

    function Class:_agent_request(rec, method, path, body, token)
        local addr, aerr = self:address(rec, port, "proxy")
        if not addr then
            return nil, aerr
        end
        if not self.client then
            return nil, rterrors.new("unavailable", "no HTTP client")
        end
        local res, err = self.client.request({
            method = method,
            url = string.format("http://%s:%d%s", M.bracket(addr.host), addr.port, path),
            headers = { [M.TOKEN_HEADER] = token, ["Content-Type"] = body and "application/json" or nil },
            body = body,
            timeout = M.TIMEOUT,
            connect_timeout = M.TIMEOUT,
        })
        if not res then
            return nil, rterrors.new("unavailable", "the agent cannot be reached: " .. reason(err))
        end
        return res
    end

    --- Whether the member's agent answers (with its boot token): true, { claim_marker = what the agent read
    --- from its claim directory's `member` file (execd/src/pool.c), or nil }; or nil, err. May yield.
    function Class:pool_ping(rec)
        local res, err = self:_agent_request(rec, "GET", "/ping", nil, rec.access_token)
        if not res then
            return nil, err
        end
        if res.status ~= 200 then
            return nil, rterrors.new("api", "the agent answered " .. tostring(res.status), { status = res.status })
        end
        return true, { claim_marker = res.headers and res.headers[M.MARKER_HEADER] or nil }
    end

    --- Hands the member `rec` (its boot token in rec.access_token) its claim: { token, entrypoint, env =
    --- {"K=V"} }. The agent execs the entrypoint as the main process and takes the new token. true, times
    --- or nil, err. May yield. `times` is what the agent says of its side on the host's monotonic clock
    --- ({ accepted_us, handled_us, replied_us }, execd/src/pool.c), or nil from an agent that says nothing.
    function Class:pool_claim(rec, claim)
        local res, err = self:_agent_request(rec, "POST", "/pool/claim", M.claim_body(claim), rec.access_token)
        if not res then
            return nil, err
        end
        if res.status ~= 200 then
            return nil, rterrors.new(res.status == 409 and "conflict" or "api", string.format(
                "the agent refused the claim (%d): %s", res.status, tostring(res.body)), { status = res.status })
        end
        return true, M.claim_times(res.body)
    end
end

return M
