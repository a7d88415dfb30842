-- Part of the lifecycle service (sandbox/service.lua): what clients read, all from memory (no runtime call):
-- get and list (§2.2, §2.3; encoded objects cached per record), endpoints (§7.1, §7.2) and the target of the
-- server proxy (§7.3). Where a port is reached is the runtime's answer (`address`); the public host
-- (server.eip, the request's Host) and the agent's token are the service's.
local errors = require("common.errors")
local json = require("common.json")
local model = require("sandbox.model")
local listing = require("sandbox.listing")
local C = require("sandbox.constants")

local P = {}

--- Tenancy: a non-admin principal sees only the sandboxes it created (API keys with principals, see
--- config server.api_keys); admins and single-key setups see everything.
function P.visible(_, rec, ctx)
    if ctx and ctx.admin == false then
        return rec.principal == ctx.principal
    end
    return true
end

function P:get(id, ctx)
    local rec = self.records[id]
    if not rec or not self:visible(rec, ctx) then
        return nil, errors.not_found(id)
    end
    return model.sandbox_view(rec)
end

-- Encoded `Sandbox` objects, per record. Records are never changed in place (a mutation commits a copy),
-- so a record's identity is its version and a weak-keyed cache never serves a stale view.
local view_json = setmetatable({}, { __mode = "k" })

local function sandbox_json(rec)
    local s = view_json[rec]
    if not s then
        s = json.encode(model.sandbox_view(rec))
        view_json[rec] = s
    end
    return s
end

--- get() already encoded: the API's GET /sandboxes/{id} body.
function P:get_json(id, ctx)
    local rec = self.records[id]
    if not rec or not self:visible(rec, ctx) then
        return nil, errors.not_found(id)
    end
    return sandbox_json(rec)
end

-- The page of `filter` among the sandboxes `ctx` may see: listing.apply's { items = records, pagination }.
function P:page(filter, ctx)
    local all, n = {}, 0
    local restricted = ctx and ctx.admin == false -- P.visible, inlined
    local who = restricted and ctx.principal
    for _, rec in pairs(self.records) do
        if not restricted or rec.principal == who then
            n = n + 1
            all[n] = rec
        end
    end
    return listing.apply(all, filter)
end

-- Encoded list pages, by the caller's visibility and the raw query string, each valid for one version of
-- the records (state.lua's set_record counts every change): a client polling the same page is answered
-- without parsing, filtering or encoding again. Bounded in entries and in the size of a page kept.
local PAGE_CACHE_ENTRIES = 32
local PAGE_CACHE_MAX_BYTES = 64 * 1024

--- The cache key of a list request: who sees what (P.visible) and the raw query string.
function P.list_key(ctx, raw_query)
    local who = (ctx and ctx.admin == false) and ("p" .. tostring(ctx.principal)) or "*"
    return who .. "?" .. (raw_query or "")
end

--- The cached body for `key` if the records have not changed since it was encoded; else nil.
function P:cached_list(key)
    local cache = self.list_pages
    local e = cache and cache[key]
    if e and e.version == self.records_version then
        return e.body
    end
    return nil
end

--- list() already encoded: the API's GET /sandboxes body. `key` (P.list_key), when given, keeps the body
--- for P:cached_list.
function P:list_json(filter, ctx, key)
    local res = self:page(filter, ctx)
    local items = {}
    for i, rec in ipairs(res.items) do
        items[i] = sandbox_json(rec)
    end
    local p = res.pagination
    local body = string.format('{"items":[%s],"pagination":{"page":%d,"pageSize":%d,"totalItems":%d,' ..
        '"totalPages":%d,"hasNextPage":%s}}', table.concat(items, ","), p.page, p.pageSize, p.totalItems,
        p.totalPages, tostring(p.hasNextPage))
    if key and #body <= PAGE_CACHE_MAX_BYTES then
        local cache = self.list_pages
        if not cache or (not cache[key] and self.list_pages_n >= PAGE_CACHE_ENTRIES) then
            cache = {}
            self.list_pages, self.list_pages_n = cache, 0
        end
        if not cache[key] then
            self.list_pages_n = self.list_pages_n + 1
        end
        cache[key] = { version = self.records_version, body = body }
    end
    return body
end

function P:list(filter, ctx)
    local res = self:page(filter, ctx)
    local items = json.array()
    for i, rec in ipairs(res.items) do
        items[i] = model.sandbox_view(rec)
    end
    return { items = items, pagination = res.pagination }
end

---------------------------------------------------------------------------------------------------------
-- endpoints (§7)
---------------------------------------------------------------------------------------------------------

local function strip_scheme(s)
    s = s:gsub("^%a[%w+.-]*://", "")
    s = s:gsub("/+$", "")
    return s
end

local function host_of_header(h)
    if not h or h == "" then
        return nil
    end
    if h:sub(1, 1) == "[" then
        return h:match("^(%[[^%]]*%])")
    end
    return h:match("^([^:]+)")
end

local function eip(cfg)
    local e = cfg.server and cfg.server.eip
    if e and e ~= "" then
        return strip_scheme(e)
    end
    return nil
end

function P:endpoint(id, port, use_server_proxy, ctx)
    local _, verr = self:check_visible(id, ctx)
    if verr then
        return nil, verr
    end
    local rec, err = self:wait_provisioned(id)
    if not rec then
        return nil, err
    end
    if model.is_provisioning_failure(rec) then
        return nil, self.not_running_error()
    end
    if port == C.EGRESS_PORT and rec.network_policy then
        -- the egress API of a sandbox with a network policy is this server's (sandbox/egress.lua), in both
        -- forms: GET/PATCH/DELETE {endpoint}/policy with the sandbox's egress token
        local base = eip(self.config) or (ctx and ctx.host) or "127.0.0.1:8080"
        return {
            endpoint = string.format("%s/sandboxes/%s/egress", base, id),
            headers = { [C.EGRESS_AUTH_HEADER] = rec.egress_token },
        }
    end
    local agent_headers = { ["X-EXECD-ACCESS-TOKEN"] = rec.access_token }
    if use_server_proxy then
        local base = eip(self.config) or (ctx and ctx.host) or "127.0.0.1:8080"
        local headers = port == C.AGENT_PORT and agent_headers or nil
        -- with authentication on, the proxy wants a key that sees the sandbox or this capability; the
        -- official SDKs send the reply's headers with every request to the endpoint
        local cap = self.proxy_auth and self:proxy_token(id)
        if cap then
            headers = headers or {}
            headers[C.PROXY_TOKEN_HEADER] = cap
        end
        return {
            endpoint = string.format("%s/sandboxes/%s/proxy/%d", base, id, port),
            headers = headers,
        }
    end
    local addr = self.runtime:address(rec, port, "public")
    if not addr then
        return nil, self.not_running_error()
    end
    -- {host}: the sandbox's own address when the runtime gives one (a Pod IP); else server.eip, else the
    -- runtime's host for the server (docker.host_ip), else the request's Host, else loopback
    local host = addr.own_host and addr.host
        or eip(self.config) or addr.host or host_of_header(ctx and ctx.host) or "127.0.0.1"
    return {
        endpoint = string.format("%s:%d%s", host, addr.port, addr.path or ""),
        -- the agent's token for whatever reaches the agent: its own port, or a path through it
        headers = (addr.agent or port == C.AGENT_PORT) and agent_headers or nil,
    }
end

--- The server proxy's capability for sandbox `id` (API.md §7.3): HMAC-SHA256 of the id keyed with the
--- sandbox's agent token. The token is random per sandbox and durable (store, runtime labels), so the
--- capability survives restarts and adoption without a secret of its own, is worthless for any other
--- sandbox, and ends with the sandbox. nil when the record is unknown or has no token.
function P:proxy_token(id)
    local rec = self.records[id]
    local hmac = self.core and self.core.hmac_sha256
    if not rec or type(rec.access_token) ~= "string" or rec.access_token == "" or not hmac then
        return nil
    end
    return hmac(rec.access_token, "opensandbox-server-proxy:" .. id)
end

--- The target of the server proxy (§7.3): { host, port, record } or nil, err. Served from memory (no runtime
--- call). `ctx` (tenancy) and `req` ({ port, method, path }) go to the on_proxy_request hooks, which may refuse
--- or ask for renew-on-access ({ renew_seconds = n }: the expiry moves to now + n when less than half of n
--- is left, so that a busy sandbox costs one durable write per n/2 seconds, not one per request).
function P:proxy_target(id, port, ctx, req)
    local rec = self.records[id]
    if not rec or not self:visible(rec, ctx) then
        return nil, errors.not_found(id)
    end
    if rec.state ~= model.STATE.RUNNING then
        return nil, self.not_running_error()
    end
    local addr = self.runtime:address(rec, port, "proxy")
    if not addr then
        return nil, self.not_running_error()
    end
    local per_request -- the runtime checks this target anew for every request
    if self.runtime.proxy_check then
        local checked, why, stable = self.runtime:proxy_check(rec, port, addr)
        per_request = not stable
        if not checked then
            return nil, errors.new(403, "SANDBOX::PROXY_PORT_FORBIDDEN", string.format(
                "Port %d is not served by sandbox %s: the proxy reaches only the sandbox's agent and the ports "
                .. "its own processes listen on%s.", port, id, why and ("; " .. why) or ""))
        end
        addr = checked
    end
    local target = { host = addr.host, port = addr.port, record = rec }
    -- (the sandbox's view is built only when a hook will see it: this runs for every proxied request)
    if self.hooks and (not self.hooks.has or self.hooks:has("on_proxy_request")) then
        local decision, herr = self.hooks:on_proxy_request(ctx, model.sandbox_view(rec), req or { port = port })
        if herr then
            return nil, herr
        end
        local renew = type(decision) == "table" and tonumber(decision.renew_seconds)
        if renew and renew > 0 and rec.expires_us then
            local now = self:now_us()
            local want = now + math.floor(renew * 1e6)
            if rec.expires_us - now < renew * 1e6 / 2 and want > rec.expires_us then
                self:extend_expiry(id, want)
            end
        end
    end
    -- renew on access (sandbox/access_renew.lua), for traffic the hooks let through: one compare unless a
    -- renewal is due
    local due = self.renew_due[id]
    local now
    if due then
        now = self:now_us()
        if now >= due then
            self:access_renew(id, now)
            due = self.renew_due[id]
        end
    end
    -- The same decision may be taken again without Lua (core/proxy_fast.c) for server.proxy_remember
    -- seconds, or until a renewal is due, when nothing else in it can change per request: no hook sees the
    -- request and the runtime's port check (host mode) does not apply. Any change of the record forgets it
    -- (state.lua).
    local remember = self.proxy_remember
    if remember and not per_request
        and not (self.hooks and (not self.hooks.has or self.hooks:has("on_proxy_request"))) then
        if due then
            remember = math.min(remember, (due - (now or self:now_us())) / 1e6)
        end
        if remember > 0 then
            target.remember = remember
        end
    end
    return target
end

return P
