-- Default hook: quotas per principal and per metadata value.
--
-- hooks.config.quotas = {
--     principals = {
--         ["team-a"] = { max_sandboxes = 2, max_cpus = 4, max_memory = "8Gi", max_timeout = 3600 },
--         ["*"] = { max_sandboxes = 10 },            -- every principal without an entry of its own
--     },
--     metadata = {                                   -- per value of a metadata key (after injection)
--         team = { infra = { max_sandboxes = 20 }, ["*"] = { max_sandboxes = 5 } },
--     },
--     admin_exempt = false,                          -- true: admin keys are never limited
-- }
-- Limits (each optional):
--   max_sandboxes  live sandboxes (Pending, Running, Paused, Stopping) including the new one
--   max_cpus       total cpu limit of the live sandboxes, in cores (a number, or "500m"/"2" as in the API);
--                  a request without a cpu limit is refused while this applies
--   max_memory     total memory limit, bytes or "512Mi"/"8Gi"/"1G" as in the API; same rule
--   max_timeout    seconds; a request without a timeout (manual cleanup) is refused while this applies
-- Exceeding one: 429 QUOTA::EXCEEDED "Quota exceeded for principal 'team-a': max_sandboxes 2 reached."
--
-- A metadata patch (before_patch_metadata) that moves a live sandbox into another bucket of a metadata
-- quota is checked as a create into that bucket would be: the sandbox itself, its cpu and memory limits,
-- and its remaining lifetime against max_timeout (no expiry counts as no timeout). Moving into a full bucket:
-- 429 QUOTA::EXCEEDED "Quota exceeded for metadata team=infra: max_sandboxes 20 reached."
--
-- This hook runs last among the before_create and before_patch_metadata hooks (priority 100), so it sees the
-- injected metadata, and nothing that could yield runs between its count and the commit.
-- Usage comes from totals the server keeps per principal and per metadata value, not from a scan.
-- luacheck: read globals opensandbox
local M = {
    name = "quotas",
    priority = 100,
    description = "per-principal and per-metadata quotas",
}

local MEMORY_UNITS = { Ki = 1024, Mi = 1024 ^ 2, Gi = 1024 ^ 3, Ti = 1024 ^ 4, k = 1000, M = 1000 ^ 2, G = 1000 ^ 3,
    T = 1000 ^ 4 }

local principals, by_metadata, admin_exempt = {}, {}, false

local LIVE = { Pending = true, Running = true, Paused = true, Stopping = true }

-- The usage filters, reused from call to call (usage() keeps nothing of them, and nothing between filling one
-- and the usage() call yields): a create that passes allocates no filter tables.
local by_principal_filter = { principal = false }
local by_value = {}
local by_value_filter = { metadata = by_value }

local function value_usage_filter(key, v)
    for k in pairs(by_value) do
        by_value[k] = nil
    end
    by_value[key] = v
    return by_value_filter
end

local function parse_cpus(v)
    if type(v) == "number" and v > 0 then
        return math.floor(v * 1e9 + 0.5)
    end
    if type(v) == "string" then
        local m = v:match("^(%d+)m$")
        if m then
            return tonumber(m) * 1000000
        end
        local n = v:match("^%d+%.?%d*$") and tonumber(v)
        if n and n > 0 then
            return math.floor(n * 1e9 + 0.5)
        end
    end
    return nil
end

local function parse_memory(v)
    if math.type(v) == "integer" and v > 0 then
        return v
    end
    if type(v) == "string" then
        local n, unit = v:match("^(%d+)(%a*)$")
        if n and (unit == "" or MEMORY_UNITS[unit]) then
            return math.floor(tonumber(n) * (MEMORY_UNITS[unit] or 1))
        end
    end
    return nil
end

-- Checks and converts one limits table. Returns it or nil, message.
local function limits_of(t, where)
    if type(t) ~= "table" then
        return nil, where .. " must be a table"
    end
    local out = {}
    for k, v in pairs(t) do
        if k == "max_sandboxes" or k == "max_timeout" then
            if math.type(v) ~= "integer" or v < 0 then
                return nil, string.format("%s.%s must be an integer >= 0", where, k)
            end
            out[k] = v
        elseif k == "max_cpus" then
            out.nano = parse_cpus(v)
            if not out.nano then
                return nil, where .. ".max_cpus must be a number of cores (2, 0.5, \"500m\")"
            end
            out.cpus_text = tostring(v)
        elseif k == "max_memory" then
            out.memory = parse_memory(v)
            if not out.memory then
                return nil, where .. ".max_memory must be bytes or a string such as \"512Mi\" or \"8Gi\""
            end
            out.memory_text = tostring(v)
        else
            return nil, string.format("%s: unknown limit '%s'", where, tostring(k))
        end
    end
    return out
end

function M.init(config)
    local p, md = {}, {}
    for name, t in pairs(config.principals or {}) do
        local l, err = limits_of(t, "principals." .. tostring(name))
        if not l then
            return nil, err
        end
        p[name] = l
    end
    for key, values in pairs(config.metadata or {}) do
        if type(values) ~= "table" then
            return nil, "metadata." .. tostring(key) .. " must be a table of value = limits"
        end
        md[key] = {}
        for value, t in pairs(values) do
            local l, err = limits_of(t, string.format("metadata.%s.%s", tostring(key), tostring(value)))
            if not l then
                return nil, err
            end
            md[key][value] = l
        end
    end
    if config.admin_exempt ~= nil and type(config.admin_exempt) ~= "boolean" then
        return nil, "admin_exempt must be a boolean"
    end
    principals, by_metadata, admin_exempt = p, md, config.admin_exempt == true
    return true
end

-- The scope is (fmt, a, b), formatted only when a limit is exceeded: a create that passes builds no
-- message strings.
local function exceeded(fmt, a, b, what)
    return opensandbox.reject(429, "QUOTA::EXCEEDED", string.format("Quota exceeded for %s: %s.",
        string.format(fmt, tostring(a), tostring(b)), what))
end

-- Checks one scope: `limits` against the usage of the live sandboxes that `filter` selects.
local function check(fmt, a, b, limits, spec, filter)
    local t = limits.max_timeout
    if t then
        if spec.timeout == nil then
            return exceeded(fmt, a, b, string.format("max_timeout %ds (requested no timeout)", t))
        elseif spec.timeout > t then
            return exceeded(fmt, a, b, string.format("max_timeout %ds (requested %ds)", t, spec.timeout))
        end
    end
    if limits.nano and not spec.nano_cpus then
        return exceeded(fmt, a, b, string.format("max_cpus %s needs a cpu limit in resourceLimits", limits.cpus_text))
    end
    if limits.memory and not spec.memory then
        return exceeded(fmt, a, b, string.format("max_memory %s needs a memory limit in resourceLimits",
            limits.memory_text))
    end
    if not (limits.max_sandboxes or limits.nano or limits.memory) then
        return true
    end
    local used = opensandbox.usage(filter)
    if limits.max_sandboxes and used.sandboxes + 1 > limits.max_sandboxes then
        return exceeded(fmt, a, b, string.format("max_sandboxes %d reached", limits.max_sandboxes))
    end
    if limits.nano and used.nano_cpus + spec.nano_cpus > limits.nano then
        return exceeded(fmt, a, b, string.format("max_cpus %s (in use %g, requested %g)", limits.cpus_text,
            used.nano_cpus / 1e9, spec.nano_cpus / 1e9))
    end
    if limits.memory and used.memory + spec.memory > limits.memory then
        return exceeded(fmt, a, b, string.format("max_memory %s (in use %d bytes, requested %d bytes)",
            limits.memory_text, used.memory, spec.memory))
    end
    return true
end

function M.before_create(ctx, spec)
    if admin_exempt and ctx.admin then
        return
    end
    local principal = ctx.principal
    local pl = principal ~= nil and (principals[principal] or principals["*"])
    if pl then
        by_principal_filter.principal = principal
        local ok, err = check("principal '%s'", principal, nil, pl, spec, by_principal_filter)
        if not ok then
            return nil, err
        end
    end
    for key, values in pairs(by_metadata) do
        local v = spec.metadata[key]
        local ml = v ~= nil and (values[v] or values["*"])
        if ml then
            local ok, err = check("metadata %s=%s", key, v, ml, spec, value_usage_filter(key, v))
            if not ok then
                return nil, err
            end
        end
    end
end

-- What a sandbox brings into a bucket it is moved to: a spec as a create would have it.
local function spec_of(sandbox)
    local timeout
    if sandbox.expires_us then
        timeout = math.max(0, (sandbox.expires_us - opensandbox.now() * 1e6) // 1e6)
        timeout = math.tointeger(timeout) or timeout
    end
    return { timeout = timeout, nano_cpus = sandbox.nano_cpus, memory = sandbox.memory }
end

function M.before_patch_metadata(ctx, sandbox, patch)
    if (admin_exempt and ctx.admin) or not LIVE[sandbox.state] then
        return
    end
    local spec
    for key, values in pairs(by_metadata) do
        local v = patch[key]
        if v and v ~= sandbox.metadata[key] then
            local ml = values[v] or values["*"]
            if ml then
                spec = spec or spec_of(sandbox)
                local ok, err = check("metadata %s=%s", key, v, ml, spec, value_usage_filter(key, v))
                if not ok then
                    return nil, err
                end
            end
        end
    end
end

return M
