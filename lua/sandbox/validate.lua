-- Request validation for the sandbox API (API.md §2.1, §2.2, §2.7-§2.9, §4, §5). Pure functions: they take
-- decoded JSON (common.json, JSON null = json.null) or decoded query parameters and return a normalised
-- value, or nil and an error object from common.errors. Only the first failure is reported, in the order
-- the contract states.
--
-- JSON objects arrive as Lua tables without their key order (cjson), so whenever several keys of one
-- object are checked, they are checked in sorted key order, which keeps the reported error deterministic.
-- An empty JSON array and an empty object decode to the same empty table; both are accepted where an
-- object is expected (and rejected where a non-empty array is required).
local errors = require("common.errors")
local json = require("common.json")
local timefmt = require("common.timefmt")
local volumes = require("sandbox.volumes")
local netpolicy = require("sandbox.netpolicy")
local is_object, is_array, absent = json.is_object, json.is_array, json.absent

local M = {}

local null = json.null
local INT_MAX = math.maxinteger
local RESERVED_PREFIX = "opensandbox.io/"

local BODY_NOT_OBJECT = "Request body must be a JSON object."

local function invalid(fmt, ...)
    return nil, errors.invalid(string.format(fmt, ...))
end

local function not_supported(field)
    return nil, errors.new(400, "SANDBOX::API_NOT_SUPPORTED", field .. " is not supported by this server.")
end

local function label_error(message)
    return nil, errors.new(400, "SANDBOX::INVALID_METADATA_LABEL", message)
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    return keys
end

local trim = require("common.strings").trim

-- A string of decimal digits as an integer, or nil when it does not fit in a Lua integer.
local function parse_digits(s)
    s = s:gsub("^0+(%d)", "%1")
    if #s > 19 or (#s == 19 and s > "9223372036854775807") then
        return nil
    end
    return math.tointeger(tonumber(s))
end

-- Text for an integral number that may be too large for a Lua integer.
local function int_text(v)
    local i = math.tointeger(v)
    if i then
        return tostring(i)
    end
    return string.format("%.0f", v)
end

---------------------------------------------------------------------------------------------------------
-- §4.1 metadata labels
---------------------------------------------------------------------------------------------------------

local function is_label_name(s)
    return #s >= 1 and #s <= 63 and (s:find("^[A-Za-z0-9]$") or s:find("^[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]$"))
end

local function is_dns_subdomain(s)
    if #s < 1 or #s > 253 then
        return false
    end
    for label in (s .. "."):gmatch("([^.]*)%.") do
        if #label < 1 or #label > 63 then
            return false
        end
        if not (label:find("^[a-z0-9]$") or label:find("^[a-z0-9][-a-z0-9]*[a-z0-9]$")) then
            return false
        end
    end
    return true
end

local function is_label_value(s)
    return #s == 0 or (#s <= 63 and (s:find("^[A-Za-z0-9]$") or s:find("^[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]$")))
end

local NAME_RULE = "the name must be 1-63 characters, begin and end with a letter or digit, "
    .. "and contain only letters, digits, '-', '_' or '.'."

--- Checks one metadata entry against the Kubernetes label rules (§4.1). `v` may be nil (only the key is
--- checked, as for a null in a merge patch). Returns true, or nil and a SANDBOX::INVALID_METADATA_LABEL
--- error. The reserved prefix is checked first.
function M.metadata_label(k, v)
    if k:sub(1, #RESERVED_PREFIX) == RESERVED_PREFIX then
        return label_error(string.format("Metadata key '%s' uses the reserved prefix '%s'. Keys under this "
            .. "prefix are managed by the system and cannot be set via metadata.", k, RESERVED_PREFIX))
    end
    local slash = k:find("/", 1, true)
    if slash then
        local prefix, name = k:sub(1, slash - 1), k:sub(slash + 1)
        if prefix == "" or name == "" then
            return label_error(string.format(
                "Metadata key '%s' is invalid: the prefix and the name around '/' must both be non-empty.", k))
        end
        if not is_dns_subdomain(prefix) then
            return label_error(string.format("Metadata key '%s' is invalid: the prefix must be a lowercase DNS "
                .. "subdomain of at most 253 characters (labels of [a-z0-9-] separated by '.').", k))
        end
        if not is_label_name(name) then
            return label_error(string.format("Metadata key '%s' is invalid: %s", k, NAME_RULE))
        end
    elseif not is_label_name(k) then
        return label_error(string.format("Metadata key '%s' is invalid: %s", k, NAME_RULE))
    end
    if v ~= nil and not is_label_value(v) then
        return label_error(string.format("Metadata value '%s' is invalid: a value must be empty or 1-63 "
            .. "characters that begin and end with a letter or digit and contain only letters, digits, "
            .. "'-', '_' or '.'.", v))
    end
    return true
end

---------------------------------------------------------------------------------------------------------
-- §4.6 image reference
---------------------------------------------------------------------------------------------------------

-- One path component: [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
local function is_path_component(c)
    if not c:find("^[a-z0-9][a-z0-9._-]*$") or c:find("[._-]$") then
        return false
    end
    for sep in c:gmatch("[._-]+") do
        if not (sep == "." or sep == "_" or sep == "__" or sep:find("^%-+$")) then
            return false
        end
    end
    return true
end

-- The registry component: [A-Za-z0-9-]+ (\.[A-Za-z0-9-]+)* (:[0-9]+)?
local function is_domain(c)
    local host, port = c:match("^([^:]*):(.*)$")
    if host then
        if not port:find("^[0-9]+$") then
            return false
        end
    else
        host = c
    end
    for part in (host .. "."):gmatch("([^.]*)%.") do
        if not part:find("^[A-Za-z0-9-]+$") then
            return false
        end
    end
    return true
end

--- True when `ref` matches the Docker reference grammar of §4.6 (the regular expression there, parsed by
--- hand: optional registry, path components, optional tag, optional sha256 digest).
function M.image_reference(ref)
    local name = ref
    local at = ref:find("@", 1, true)
    if at then
        if not ref:sub(at + 1):find("^sha256:" .. string.rep("[a-f0-9]", 64) .. "$") then
            return false
        end
        name = ref:sub(1, at - 1)
    end
    local last_slash = name:match("^.*()/") or 0
    local colon = name:find(":", last_slash + 1, true)
    if colon then
        local tag = name:sub(colon + 1)
        if #tag < 1 or #tag > 128 or not tag:find("^[A-Za-z0-9_][A-Za-z0-9_.-]*$") then
            return false
        end
        name = name:sub(1, colon - 1)
    end
    local comps = {}
    for c in (name .. "/"):gmatch("([^/]*)/") do
        comps[#comps + 1] = c
    end
    local all_paths = true
    for i = 2, #comps do
        if not is_path_component(comps[i]) then
            return false
        end
    end
    if not is_path_component(comps[1]) then
        all_paths = false
    end
    -- Without a registry every component is a path component; with one, the first is the registry and
    -- at least one path component follows.
    return all_paths or (#comps >= 2 and is_domain(comps[1]))
end

---------------------------------------------------------------------------------------------------------
-- §2.1 create
---------------------------------------------------------------------------------------------------------

local function check_image(v)
    if absent(v) then
        return invalid("image is required.")
    end
    if not is_object(v) then
        return invalid("image must be an object.")
    end
    local uri = v.uri
    if absent(uri) then
        return invalid("image.uri is required.")
    end
    if type(uri) ~= "string" then
        return invalid("image.uri must be a string.")
    end
    uri = trim(uri)
    if uri == "" then
        return invalid("image.uri must not be blank.")
    end
    if #uri > 512 then
        return invalid("image.uri must be at most 512 bytes.")
    end
    if uri:find("[%s%c\127]") then
        return invalid("image.uri must not contain whitespace or control characters.")
    end
    if not uri:find("^[%w%p]+$") or not M.image_reference(uri) then
        return invalid("image.uri '%s' is not a valid image reference.", uri)
    end
    local image = { uri = uri }
    local auth = v.auth
    if not absent(auth) then
        if not is_object(auth) then
            return invalid("image.auth must be an object with username and password.")
        end
        for _, f in ipairs({ "username", "password" }) do
            if type(auth[f]) ~= "string" or auth[f] == "" then
                return invalid("image.auth.%s must be a non-empty string.", f)
            end
        end
        image.auth = { username = auth.username, password = auth.password }
    end
    return image
end

local function check_entrypoint(v)
    if absent(v) then
        return invalid("entrypoint is required.")
    end
    if not is_array(v) or #v == 0 then
        return invalid("entrypoint must be a non-empty array of strings.")
    end
    local out = {}
    for i, s in ipairs(v) do
        if type(s) ~= "string" then
            return invalid("entrypoint[%d] must be a string.", i - 1)
        end
        if s:find("%z") then -- (no argument of a process can hold one; the agent would refuse a pool claim)
            return invalid("entrypoint[%d] must not contain NUL.", i - 1)
        end
        out[i] = s
    end
    if out[1] == "" then
        return invalid("entrypoint[0] must not be empty.")
    end
    return out
end

-- Returns the timeout in seconds (an integer), false for manual cleanup, or nil, err.
local function check_timeout(v, opts)
    if absent(v) then
        return false
    end
    if math.type(v) == nil or v ~= v or v == math.huge or v == -math.huge or v ~= math.floor(v) or v < 60 then
        return invalid("timeout must be an integer >= 60.")
    end
    local max = opts.max_timeout
    if max and v > max then
        return invalid("Sandbox timeout %ss exceeds configured maximum of %ss.", int_text(v), int_text(max))
    end
    local room = (timefmt.MAX_US - opts.now_us) // 1000000
    if v > room then
        return invalid("timeout %ss would expire the sandbox after 9999-12-31T23:59:59Z.", int_text(v))
    end
    return math.tointeger(v)
end

-- cpu → NanoCpus, exactly. "500m" (millicores) or "0.5" (cores, up to 9 decimals).
local function parse_cpu(s)
    local milli = s:match("^([0-9]+)m$")
    if milli then
        local n = parse_digits(milli)
        if not n or n > INT_MAX // 1000000 then
            return nil, "too large"
        end
        return n * 1000000
    end
    local int, frac = s:match("^([0-9]+)%.([0-9]+)$")
    if not int then
        int, frac = s:match("^([0-9]+)$"), ""
    end
    if not int or #frac > 9 then
        return nil, "syntax"
    end
    local n = parse_digits(int)
    if not n or n > INT_MAX // 1000000000 - 1 then
        return nil, "too large"
    end
    return n * 1000000000 + (tonumber((frac .. "000000000"):sub(1, 9)) or 0)
end

local MEMORY_UNITS = {
    [""] = 1,
    Ki = 1024,
    Mi = 1048576,
    Gi = 1073741824,
    Ti = 1099511627776,
    k = 1000,
    M = 1000000,
    G = 1000000000,
    T = 1000000000000,
}

local function parse_memory(s)
    local digits, unit = s:match("^([0-9]+)(%a*)$")
    local mult = digits and MEMORY_UNITS[unit]
    if not mult then
        return nil, "syntax"
    end
    local n = parse_digits(digits)
    if not n or n > INT_MAX // mult then
        return nil, "too large"
    end
    return n * mult
end

local MIN_NANO_CPUS = 10000000
local MIN_MEMORY = 6 * 1024 * 1024

local function check_resources(v, opts, spec)
    if absent(v) then
        return invalid("resourceLimits is required.")
    end
    if not is_object(v) then
        return invalid("resourceLimits must be an object of strings.")
    end
    for _, k in ipairs(sorted_keys(v)) do
        if type(v[k]) ~= "string" then
            return invalid("resourceLimits.%s must be a string.", k)
        end
    end
    if v.cpu then
        local n, why = parse_cpu(v.cpu)
        if why == "syntax" then
            return invalid("resourceLimits.cpu '%s' is invalid: use millicores such as '500m' or cores such as "
                .. "'0.5' (at most 9 decimals).", v.cpu)
        end
        local max = opts.ncpu and opts.ncpu * 1000000000
        if not n or (max and n > max) then
            if opts.ncpu then
                return invalid("resourceLimits.cpu '%s' exceeds the %d CPUs available.", v.cpu, opts.ncpu)
            end
            return invalid("resourceLimits.cpu '%s' is too large.", v.cpu)
        end
        if n < MIN_NANO_CPUS then
            return invalid("resourceLimits.cpu '%s' is below the minimum of 10m (0.01 CPU).", v.cpu)
        end
        spec.nano_cpus = n
    end
    if v.memory then
        local n, why = parse_memory(v.memory)
        if why == "syntax" then
            return invalid("resourceLimits.memory '%s' is invalid: use a byte count with an optional suffix "
                .. "Ki, Mi, Gi, Ti, k, M, G or T, such as '512Mi'.", v.memory)
        end
        if not n then
            return invalid("resourceLimits.memory '%s' exceeds the maximum of 9223372036854775807 bytes.",
                v.memory)
        end
        if n < MIN_MEMORY then
            return invalid("resourceLimits.memory '%s' is below the minimum of 6Mi (6291456 bytes).", v.memory)
        end
        spec.memory = n
    end
    if v.gpu then
        if v.gpu == "all" then
            spec.gpu = -1
        else
            local n = v.gpu:find("^[0-9]+$") and parse_digits(v.gpu)
            if not n or n < 1 then
                return invalid("resourceLimits.gpu '%s' must be a positive integer or 'all'.", v.gpu)
            end
            spec.gpu = n
        end
    end
    return true
end

-- The keys of `v` in `order` (those it has), then any others sorted.
local function keys_in_order(v, order)
    if not order then
        return sorted_keys(v)
    end
    local keys, seen = {}, {}
    for _, k in ipairs(order) do
        if v[k] ~= nil and not seen[k] then
            seen[k] = true
            keys[#keys + 1] = k
        end
    end
    local rest = {}
    for k in pairs(v) do
        if not seen[k] then
            rest[#rest + 1] = k
        end
    end
    table.sort(rest)
    for _, k in ipairs(rest) do
        keys[#keys + 1] = k
    end
    return keys
end

local function check_env(v, order)
    if absent(v) then
        return {}
    end
    if not is_object(v) then
        return invalid("env must be an object of strings.")
    end
    local out = {}
    for _, k in ipairs(keys_in_order(v, order)) do
        local val = v[k]
        if k == "" or k:find("[=%z]") then
            return invalid("env key '%s' is invalid: keys must be non-empty and contain no '=' or NUL.", k)
        end
        if val ~= null then
            if type(val) ~= "string" then
                return invalid("env.%s must be a string or null.", k)
            end
            if val:find("%z") then
                return invalid("env.%s must not contain NUL.", k)
            end
            out[#out + 1] = { k, val }
        end
    end
    return out
end

local function check_metadata(v)
    if absent(v) then
        return {}
    end
    if not is_object(v) then
        return invalid("metadata must be an object of strings.")
    end
    local out = {}
    for _, k in ipairs(sorted_keys(v)) do
        local val = v[k]
        if type(val) ~= "string" then
            return invalid("metadata.%s must be a string.", k)
        end
        local ok, err = M.metadata_label(k, val)
        if not ok then
            return nil, err
        end
        out[k] = val
    end
    return out
end

local ARCHES = { amd64 = true, arm64 = true }

-- Returns the platform table, false when absent, or nil, err.
local function check_platform(v)
    if absent(v) then
        return false
    end
    if not is_object(v) then
        return invalid("platform must be an object with os and arch.")
    end
    if v.os == "windows" then
        return not_supported("platform.os 'windows'")
    end
    if v.os ~= "linux" then
        return invalid("platform.os must be 'linux'.")
    end
    if not ARCHES[v.arch] then
        return invalid("platform.arch must be 'amd64' or 'arm64'.")
    end
    return { os = v.os, arch = v.arch }
end

local RENEW_EXTEND_KEY = "access.renew.extend.seconds"

local function check_extensions(v)
    if absent(v) then
        return {}
    end
    if not is_object(v) then
        return invalid("extensions must be an object of strings.")
    end
    local out = {}
    for _, k in ipairs(sorted_keys(v)) do
        if type(v[k]) ~= "string" then
            return invalid("extensions.%s must be a string.", k)
        end
        out[k] = v[k]
    end
    if out.poolRef and trim(out.poolRef) ~= "" and not M.is_pool_name(trim(out.poolRef)) then
        return invalid("extensions.poolRef '%s' is not a valid pool name.", out.poolRef)
    end
    local ext = out[RENEW_EXTEND_KEY]
    if ext then
        local n = ext:find("^[0-9]+$") and parse_digits(ext)
        if not n or n < 300 or n > 86400 then
            return invalid("extensions.%s must be a decimal string between 300 and 86400.", RENEW_EXTEND_KEY)
        end
    end
    return out
end

local function check_unsupported(body)
    local cp = body.credentialProxy
    if type(cp) == "table" and cp ~= null and cp.enabled == true then
        return not_supported("credentialProxy")
    end
    return true
end

--- Validates a create request body (§2.1). `opts = { max_timeout = int|nil, ncpu = int|nil, now_us = int }`
--- (ncpu nil: no upper cpu bound). Returns the spec:
---   { image = {uri=, auth={username=, password=}|nil}, entrypoint = {...}, timeout = seconds|nil (nil:
---     manual cleanup), nano_cpus = int|nil, memory = bytes|nil, gpu = n|-1 (all)|nil,
---     env = { {k, v}, ... } in `opts.env_order` (the request's key order, §8.2; parse.member_key_order),
---       else sorted by key, metadata = {k=v},
---     platform = {os=, arch=}|nil, extensions = {k=v}, volumes = { normalised Volume, ... } (sandbox/volumes.lua),
---     network_policy = normalised policy (sandbox/netpolicy.lua) | nil }
--- or nil and an error object.
function M.create(body, opts)
    if not is_object(body) then
        return invalid(BODY_NOT_OBJECT)
    end
    local spec = {}
    local snapshot_id, err = M.snapshot_source(body)
    if snapshot_id == nil then
        return nil, err
    end
    -- a claim of a warm pool (extensions.poolRef, sandbox/pools.lua): image, entrypoint and resourceLimits
    -- are optional (the pool's template has them)
    local pool = M.pool_ref(body)
    if pool then
        if snapshot_id then
            return invalid("snapshotId cannot be combined with extensions.poolRef.")
        end
        spec.pool = pool
        if absent(body.image) then
            snapshot_id = false
            spec.image = false -- (the service fills in the template's)
        end
        if absent(body.entrypoint) then
            spec.entrypoint = { table.unpack(M.SNAPSHOT_ENTRYPOINT) }
        end
    end
    if spec.image == false then
        spec.image = nil
    elseif snapshot_id then
        -- a create from a snapshot (upstream's CreateSandboxRequest): the service resolves the snapshot to
        -- the image to run (sandbox/snapshots.lua); the entrypoint is optional
        spec.snapshot_id = snapshot_id
        if absent(body.entrypoint) then
            spec.entrypoint = { table.unpack(M.SNAPSHOT_ENTRYPOINT) }
        end
    else
        spec.image, err = check_image(body.image)
        if not spec.image then
            return nil, err
        end
    end
    if not spec.entrypoint then
        spec.entrypoint, err = check_entrypoint(body.entrypoint)
        if not spec.entrypoint then
            return nil, err
        end
    end
    local timeout
    timeout, err = check_timeout(body.timeout, opts)
    if timeout == nil then
        return nil, err
    end
    spec.timeout = timeout or nil
    local ok = true
    if not (pool and absent(body.resourceLimits)) then
        ok, err = check_resources(body.resourceLimits, opts, spec)
    end
    if not ok then
        return nil, err
    end
    spec.env, err = check_env(body.env, opts.env_order)
    if not spec.env then
        return nil, err
    end
    spec.metadata, err = check_metadata(body.metadata)
    if not spec.metadata then
        return nil, err
    end
    local platform
    platform, err = check_platform(body.platform)
    if platform == nil then
        return nil, err
    end
    spec.platform = platform or nil
    spec.extensions, err = check_extensions(body.extensions)
    if not spec.extensions then
        return nil, err
    end
    local sa = body.secureAccess
    if not absent(sa) and type(sa) ~= "boolean" then
        return invalid("secureAccess must be a boolean.")
    end
    if sa == true then
        return invalid("secureAccess is only supported by the Kubernetes provider.")
    end
    ok, err = check_unsupported(body)
    if not ok then
        return nil, err
    end
    spec.volumes, err = volumes.validate(body.volumes) -- (sandbox/volumes.lua; {} when none)
    if not spec.volumes then
        return nil, err
    end
    if not absent(body.networkPolicy) then -- (sandbox/netpolicy.lua; nil when absent)
        spec.network_policy, err = netpolicy.validate(body.networkPolicy)
        if not spec.network_policy then
            return nil, err
        end
    end
    return spec
end

--- The pool a create claims: extensions.poolRef when it is a valid pool name (trimmed), else nil.
function M.pool_ref(body)
    local ext = is_object(body) and body.extensions
    local ref = is_object(ext) and ext.poolRef
    if type(ref) == "string" and M.is_pool_name(trim(ref)) then
        return trim(ref)
    end
    return nil -- (an invalid name is reported in the order of the checks, with extensions)
end

--- Whether `s` is a valid pool name (upstream: a Kubernetes resource name, at most 253 characters).
function M.is_pool_name(s)
    return type(s) == "string" and #s <= 253 and s:find("^[a-z0-9]$") ~= nil
        or (type(s) == "string" and #s <= 253 and s:find("^[a-z0-9][-a-z0-9]*[a-z0-9]$") ~= nil)
end

-- the create checks a pool template shares (sandbox/pool_validate.lua)
M.check_image = check_image
M.check_resources = check_resources
M.check_env = check_env

---------------------------------------------------------------------------------------------------------
-- §2.2 / §5 list query
---------------------------------------------------------------------------------------------------------

local function last(params, name)
    local vals = params[name]
    if type(vals) == "table" then
        return vals[#vals]
    end
    return vals
end

local function bad_metadata(segment)
    return nil, errors.new(400, "INVALID_METADATA_FORMAT",
        string.format("Invalid metadata format: bad query field: '%s'", segment))
end

-- Splits "k=v&k2=v2" (already decoded once, not decoded again). Returns the map, nil for "", or nil, err.
local function parse_metadata_filter(s)
    if s == nil or s == "" then
        return false
    end
    local out = {}
    for segment in (s .. "&"):gmatch("([^&]*)&") do
        local eq = segment:find("=", 1, true)
        if not eq or eq == 1 then
            return bad_metadata(segment)
        end
        out[segment:sub(1, eq - 1)] = segment:sub(eq + 1)
    end
    return out
end

-- An integer query value in lo..hi (hi nil = unbounded); larger values are clamped to 10^15, far beyond
-- any page that can hold items.
local function query_int(s, lo, hi)
    if type(s) ~= "string" or not s:find("^[0-9]+$") then
        return nil
    end
    local n = parse_digits(s)
    if not n or n > 1000000000000000 then
        n = 1000000000000000
    end
    if n < lo or (hi and n > hi) then
        return nil
    end
    return n
end

--- Validates the list query (§2.2, §5). `params` maps a name to an array of decoded values. Returns
--- { states = {lowercase state = true}|nil, metadata = {k=v}|nil, page = int, page_size = int }, or nil and
--- an error object.
function M.list_query(params)
    params = params or {}
    local filter = { page = 1, page_size = 20 }
    local states = params.state
    if type(states) == "string" then
        states = { states }
    end
    for _, s in ipairs(states or {}) do
        s = trim(s)
        if s ~= "" then
            filter.states = filter.states or {}
            filter.states[s:lower()] = true
        end
    end
    local md, err = parse_metadata_filter(last(params, "metadata"))
    if md == nil then
        return nil, err
    end
    filter.metadata = md or nil
    local page = last(params, "page")
    if page ~= nil then
        filter.page = query_int(page, 1)
        if not filter.page then
            return invalid("page must be an integer >= 1.")
        end
    end
    local size = last(params, "pageSize")
    if size ~= nil then
        filter.page_size = query_int(size, 1, 200)
        if not filter.page_size then
            return invalid("pageSize must be an integer between 1 and 200.")
        end
    end
    return filter
end

---------------------------------------------------------------------------------------------------------
-- snapshots (upstream sandbox-lifecycle.yml: CreateSnapshotRequest, GET /snapshots, snapshotId on create)
---------------------------------------------------------------------------------------------------------

--- The entrypoint of a sandbox created from a snapshot when the request names none (upstream's default).
M.SNAPSHOT_ENTRYPOINT = { "tail", "-f", "/dev/null" }

local SNAPSHOT_NAME_MAX = 256

-- A snapshot id as a client may name it: our ids are UUIDs; anything of 1-128 characters of [A-Za-z0-9_.-]
-- is looked up (and is then a 404 when unknown).
local function is_snapshot_id(s)
    return #s >= 1 and #s <= 128 and s:find("^[A-Za-z0-9][A-Za-z0-9_.-]*$") ~= nil
end

--- The startup source of a create body: the snapshot id (a string) when `snapshotId` is given, false when it
--- is absent (the create names an `image`), or nil and an error (a malformed id, or both sources given).
function M.snapshot_source(body)
    local v = body.snapshotId
    if absent(v) then
        return false
    end
    if type(v) ~= "string" then
        return invalid("snapshotId must be a string.")
    end
    local id = trim(v)
    if id == "" then
        return invalid("snapshotId must not be blank.")
    end
    if not is_snapshot_id(id) then
        return invalid("snapshotId must be 1-128 characters of letters, digits, '_', '.' or '-'.")
    end
    if not absent(body.image) then
        return invalid("image and snapshotId are mutually exclusive: provide exactly one.")
    end
    return id
end

--- Validates the body of POST /sandboxes/{id}/snapshots (optional: an empty body is {}). Returns
--- { name = s|nil } or nil and an error object. Unknown fields are ignored (§1.4).
function M.snapshot_create(body)
    if body == nil then
        return {}
    end
    if not is_object(body) then
        return invalid(BODY_NOT_OBJECT)
    end
    local name = body.name
    if absent(name) then
        return {}
    end
    if type(name) ~= "string" then
        return invalid("name must be a string.")
    end
    if name == "" then
        return invalid("name must not be empty.")
    end
    if #name > SNAPSHOT_NAME_MAX then
        return invalid("name must be at most %d bytes.", SNAPSHOT_NAME_MAX)
    end
    if name:find("%c") then
        return invalid("name must not contain control characters.")
    end
    return { name = name }
end

local SNAPSHOT_STATES = { creating = true, ready = true, failed = true, deleting = true }

--- Validates the query of GET /snapshots: `sandboxId`, `state` (repeatable, OR, case-insensitive), `page`,
--- `pageSize` (as for sandboxes). Returns { sandbox_id = s|nil, states = {lowercase = true}|nil, page,
--- page_size } or nil and an error object. A state that is not a snapshot state matches nothing.
function M.snapshot_list_query(params)
    params = params or {}
    local filter, err = M.list_query({ state = params.state, page = params.page, pageSize = params.pageSize })
    if not filter then
        return nil, err
    end
    local sid = last(params, "sandboxId")
    if sid ~= nil and trim(sid) ~= "" then
        filter.sandbox_id = trim(sid)
    end
    if filter.states then
        local states = {}
        for s in pairs(filter.states) do
            -- (a state no snapshot has keeps the filter on as "", which matches none)
            states[SNAPSHOT_STATES[s] and s or ""] = true
        end
        filter.states = states
    end
    return filter
end

---------------------------------------------------------------------------------------------------------
-- §2.7 renew, §2.9 metadata patch, §2.8 endpoint
---------------------------------------------------------------------------------------------------------

--- Step 1 of §2.7: returns the requested expiry in microseconds (UTC), or nil and an error object. The
--- "must be in the future" check belongs to the service (step 3), after the id lookup.
function M.renew(body)
    if not is_object(body) then
        return invalid(BODY_NOT_OBJECT)
    end
    local us = timefmt.parse(body.expiresAt)
    if not us then
        return nil, errors.new(400, "DOCKER::INVALID_EXPIRATION", "expiresAt must be an RFC 3339 date-time.")
    end
    return us
end

--- Validates an RFC 7396 merge patch on metadata (§2.9). Returns { key = "value" | false } (false: delete
--- the key), or nil and an error object.
function M.metadata_patch(body)
    if not is_object(body) then
        return invalid(BODY_NOT_OBJECT)
    end
    local patch = {}
    for _, k in ipairs(sorted_keys(body)) do
        local v = body[k]
        if k:sub(1, #RESERVED_PREFIX) == RESERVED_PREFIX then
            return M.metadata_label(k, nil)
        end
        if v ~= null and type(v) ~= "string" then
            return invalid("metadata.%s must be a string or null.", k)
        end
        local ok, err = M.metadata_label(k, v ~= null and v or nil)
        if not ok then
            return nil, err
        end
        patch[k] = v ~= null and v or false
    end
    return patch
end

local BOOLEANS = { ["true"] = true, ["1"] = true, yes = true, on = true,
    ["false"] = false, ["0"] = false, no = false, off = false }

--- Parses a query boolean: true/false/1/0/yes/no/on/off, case-insensitive. Returns the boolean or nil.
function M.query_bool(s)
    if type(s) ~= "string" then
        return nil
    end
    return BOOLEANS[s:lower()]
end

--- Steps 1-3 of §2.8. `port_str` is the decoded path segment; `params` the decoded query. Returns
--- { port = int, use_server_proxy = bool }, or nil and an error object.
function M.endpoint(port_str, params)
    params = params or {}
    local port = type(port_str) == "string" and port_str:find("^[0-9]+$") and #port_str <= 10
        and tonumber(port_str)
    if not port or port < 1 or port > 65535 then
        return nil, errors.new(400, "DOCKER::INVALID_PORT", "Port must be between 1 and 65535.")
    end
    local use_proxy = false
    local raw = last(params, "use_server_proxy")
    if raw ~= nil then
        use_proxy = M.query_bool(raw)
        if use_proxy == nil then
            return invalid("use_server_proxy must be a boolean (true/false/1/0/yes/no/on/off).")
        end
    end
    if params.expires ~= nil then
        if use_proxy then
            return invalid("use_server_proxy cannot be combined with expires; "
                .. "signed endpoints require the gateway route.")
        end
        return not_supported("expires")
    end
    return { port = math.tointeger(port), use_server_proxy = use_proxy }
end

return M
