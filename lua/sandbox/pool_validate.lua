-- Request validation for the pool API (upstream sandbox-lifecycle.yml "Pools"; sandbox/pools.lua): POST
-- /pools and PUT /pools/{name}. Pure functions over decoded JSON, like sandbox/validate.lua, whose create
-- checks the template shares: they return the normalised value, or nil and a 400 error object, the first
-- failure only.
--
-- The Docker template is the create body without its per-sandbox fields:
--   { image = { uri, auth? }, resourceLimits = { cpu?, memory?, gpu? }, env? = { K = V }, volumes? = [...] }
-- `networkPolicy` is refused for now ("not yet supported in pool templates"); entrypoint, timeout, metadata
-- and the like belong to each claim and are refused in a template, so that nobody expects them to apply.
local errors = require("common.errors")
local json = require("common.json")
local validate = require("sandbox.validate")
local volumes = require("sandbox.volumes")
local is_object, absent = json.is_object, json.absent

local M = {}

local function invalid(fmt, ...)
    return nil, errors.invalid(string.format(fmt, ...))
end

-- capacitySpec's fields, in the order they are checked
M.CAPACITY_FIELDS = { "bufferMax", "bufferMin", "poolMax", "poolMin" }

-- per-sandbox fields a template cannot have: they are the claim's
local CLAIM_FIELDS = { "entrypoint", "timeout", "metadata", "extensions", "snapshotId", "platform", "secureAccess" }

--- capacitySpec -> { bufferMax, bufferMin, poolMax, poolMin } (integers), or nil, err. `max_size` caps poolMax.
function M.capacity(v, max_size)
    if absent(v) then
        return invalid("capacitySpec is required.")
    end
    if not is_object(v) then
        return invalid("capacitySpec must be an object.")
    end
    local out = {}
    for _, f in ipairs(M.CAPACITY_FIELDS) do
        local n = v[f]
        if absent(n) then
            return invalid("capacitySpec.%s is required.", f)
        end
        if math.type(n) == nil or n ~= n or n ~= math.floor(n) or n < 0 or n > 2 ^ 31 then
            return invalid("capacitySpec.%s must be an integer >= 0.", f)
        end
        out[f] = math.tointeger(n)
    end
    if out.bufferMin > out.bufferMax then
        return invalid("capacitySpec.bufferMin must not exceed capacitySpec.bufferMax.")
    end
    if out.poolMin > out.poolMax then
        return invalid("capacitySpec.poolMin must not exceed capacitySpec.poolMax.")
    end
    if max_size and out.poolMax > max_size then
        return invalid("capacitySpec.poolMax %d exceeds the configured maximum of %d (pools.max_pool_size).",
            out.poolMax, max_size)
    end
    return out
end

-- a message about the converted body, in the runtime's own field names (names = { {ours, theirs}, ... })
local function renamed(message, names)
    for _, n in ipairs(names or {}) do
        if message:sub(1, #n[1]) == n[1] then
            return n[2] .. message:sub(#n[1] + 1)
        end
    end
    return message
end

--- The Docker template -> { image = { uri, auth? }, nano_cpus?, memory?, gpu?, env = { {k, v}, ... },
--- volumes = { ... }, resource_limits = { the request's strings }, runtime_template = ... | nil }, or nil,
--- err. opts = { ncpu, env_order, runtime_template = fn(v, name) | nil, name }.
--- With opts.runtime_template (the runtime's rt:pool_template: a template of its own shape, such as
--- Kubernetes' PodTemplateSpec), `v` may be that shape: the runtime turns it into the Docker-shaped body
--- checked here, and its own part (JSON-able) is kept as `runtime_template` for the members' provisioning.
function M.template(v, opts)
    opts = opts or {}
    if absent(v) then
        return invalid("template is required.")
    end
    if not is_object(v) then
        return invalid("template must be an object.")
    end
    if opts.runtime_template then
        local conv, cerr = opts.runtime_template(v, opts.name)
        if conv == nil then
            return invalid("%s", tostring(cerr))
        end
        if conv then
            local t, err = M.template(conv.body, { ncpu = opts.ncpu, env_order = conv.env_order })
            if not t then
                return nil, errors.new(err.status, err.code, "template." .. renamed(err.message:sub(#"template." + 1),
                    conv.names))
            end
            t.runtime_template = conv.template
            return t
        end
    end
    for _, f in ipairs(CLAIM_FIELDS) do
        if not absent(v[f]) then
            return invalid("template.%s is not part of a pool template: set it on each create with "
                .. "extensions.poolRef.", f)
        end
    end
    if not absent(v.networkPolicy) then
        return nil, errors.new(400, "SANDBOX::API_NOT_SUPPORTED",
            "template.networkPolicy is not yet supported in pool templates.")
    end
    local t = {}
    local err
    t.image, err = validate.check_image(v.image)
    if not t.image then
        return nil, errors.invalid("template." .. err.message)
    end
    local ok
    ok, err = validate.check_resources(v.resourceLimits, { ncpu = opts.ncpu }, t)
    if not ok then
        return nil, errors.invalid("template." .. err.message)
    end
    t.resource_limits = {}
    for k, s in pairs(v.resourceLimits) do
        if k == "cpu" or k == "memory" or k == "gpu" then
            t.resource_limits[k] = s
        end
    end
    t.env, err = validate.check_env(v.env, opts.env_order)
    if not t.env then
        return nil, errors.invalid("template." .. err.message)
    end
    t.volumes, err = volumes.validate(v.volumes)
    if not t.volumes then
        return nil, errors.new(err.status, err.code, "template." .. err.message)
    end
    return t
end

--- POST /pools -> { name, capacity, template }, or nil, err.
function M.create(body, opts)
    if not is_object(body) then
        return invalid("Request body must be a JSON object.")
    end
    local name = body.name
    if absent(name) then
        return invalid("name is required.")
    end
    if not validate.is_pool_name(name) then
        return invalid("name must be a lowercase RFC 1123 name (a-z, 0-9 and '-', starting and ending with a "
            .. "letter or digit), at most 253 characters.")
    end
    local capacity, err = M.capacity(body.capacitySpec, opts and opts.max_size)
    if not capacity then
        return nil, err
    end
    local template
    local topts = {}
    for k, x in pairs(opts or {}) do
        topts[k] = x
    end
    topts.name = name
    template, err = M.template(body.template, topts)
    if not template then
        return nil, err
    end
    return { name = name, capacity = capacity, template = template }
end

--- PUT /pools/{name} -> { capacity }, or nil, err (only the capacity can change, as upstream).
function M.update(body, opts)
    if not is_object(body) then
        return invalid("Request body must be a JSON object.")
    end
    if not absent(body.template) then
        return invalid("template cannot be changed: delete the pool and create it again.")
    end
    local capacity, err = M.capacity(body.capacitySpec, opts and opts.max_size)
    if not capacity then
        return nil, err
    end
    return { capacity = capacity }
end

return M
