-- Network policy: the model of a sandbox's egress policy (upstream's NetworkPolicy / NetworkRule, the
-- body of create's `networkPolicy` and of the egress API's /policy). Pure functions, no I/O: validation
-- and normalisation, the kind of a target, name matching, the PATCH merge and DELETE by target, and the
-- PolicyStatusResponse. The service (sandbox/egress.lua) stores and applies policies; the runtimes
-- enforce them (lua/runtimes/README.md, set_network_policy) and call match_name for DNS answers.
--
-- A normalised policy is { defaultAction = "allow"|"deny", egress = { {action=, target=}, ... } }:
--   * defaultAction defaults to "deny" (upstream's sidecar: an omitted defaultAction, or `{}`, is deny);
--   * actions are lower-cased ("Allow" -> "allow"); a rule needs both action and target;
--   * targets are trimmed and lower-cased, a domain's trailing dot is dropped, IP addresses are written
--     canonically (IPv6 as RFC 5952) and a CIDR as its network address ("10.1.2.3/8" -> "10.0.0.0/8");
--   * kinds: "domain" (example.com), "wildcard" (*.example.com: every name below example.com, not
--     example.com itself), "ipv4", "cidr4", "ipv6", "cidr6" (upstream's dns+nft mode);
--   * at most MAX_RULES rules (upstream's sidecar default, OPENSANDBOX_EGRESS_MAX_RULES).
-- Rules are evaluated in order and the first match wins; domain and wildcard rules match names, address
-- rules match addresses (the runtime's packet filter); nothing matching means defaultAction.
local errors = require("common.errors")
local json = require("common.json")

local M = {}

M.MAX_RULES = 4096
M.ENFORCEMENT_MODE = "dns+nft" -- what upstream's sidecar calls DNS filtering plus a packet filter

local ACTIONS = { allow = true, deny = true }

local function invalid(fmt, ...)
    return nil, errors.invalid(string.format(fmt, ...))
end

local trim = require("common.strings").trim

---------------------------------------------------------------------------------------------------------
-- addresses
---------------------------------------------------------------------------------------------------------

-- "a.b.c.d" -> { a, b, c, d } (decimal, no leading zeros, each 0..255), or nil
local function parse_ipv4(s)
    local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then
        return nil
    end
    local out = {}
    for i, part in ipairs({ a, b, c, d }) do
        if #part > 3 or (#part > 1 and part:sub(1, 1) == "0") then
            return nil
        end
        local n = tonumber(part)
        if n > 255 then
            return nil
        end
        out[i] = n
    end
    return out
end

-- an IPv6 address -> 8 groups (integers 0..65535), or nil. Accepts "::" compression and a dotted IPv4
-- tail ("::ffff:1.2.3.4"); no zone ("%eth0").
local function parse_ipv6(s)
    if not s:find(":", 1, true) or s:find("[^%x:.]") then
        return nil
    end
    local head, tail = s, nil
    local dc = s:find("::", 1, true)
    if dc then
        if s:find("::", dc + 1, true) then
            return nil
        end
        head, tail = s:sub(1, dc - 1), s:sub(dc + 2)
    end
    local function groups(part)
        local out = {}
        if part == "" then
            return out
        end
        local fields = {}
        for f in (part .. ":"):gmatch("([^:]*):") do
            fields[#fields + 1] = f
        end
        for i, f in ipairs(fields) do
            if i == #fields and f:find(".", 1, true) then
                local v4 = parse_ipv4(f)
                if not v4 then
                    return nil
                end
                out[#out + 1] = v4[1] * 256 + v4[2]
                out[#out + 1] = v4[3] * 256 + v4[4]
            elseif f:find("^%x%x?%x?%x?$") then
                out[#out + 1] = tonumber(f, 16)
            else
                return nil
            end
        end
        return out
    end
    local h = groups(head)
    if not h then
        return nil
    end
    if not dc then
        return #h == 8 and h or nil
    end
    if head:find("%.") then -- a dotted tail only at the very end
        return nil
    end
    local t = groups(tail)
    if not t or #h + #t > 7 then
        return nil
    end
    local out = {}
    for _, g in ipairs(h) do
        out[#out + 1] = g
    end
    for _ = 1, 8 - #h - #t do
        out[#out + 1] = 0
    end
    for _, g in ipairs(t) do
        out[#out + 1] = g
    end
    return out
end

-- 8 groups -> RFC 5952 text: lower-case hex, no leading zeros, the longest run (>= 2) of zero groups
-- (the first of equal runs) as "::"
local function format_ipv6(g)
    local best_at, best_len, at, len = 0, 0, 0, 0
    for i = 1, 8 do
        if g[i] == 0 then
            if len == 0 then
                at = i
            end
            len = len + 1
            if len > best_len then
                best_at, best_len = at, len
            end
        else
            len = 0
        end
    end
    local function hex(from, to)
        local parts = {}
        for i = from, to do
            parts[#parts + 1] = string.format("%x", g[i])
        end
        return table.concat(parts, ":")
    end
    if best_len < 2 then
        return hex(1, 8)
    end
    return hex(1, best_at - 1) .. "::" .. hex(best_at + best_len, 8)
end

-- clears the bits of `parts` (each `width` bits wide) beyond the first `bits`
local function mask(parts, width, bits)
    local out = {}
    for i, v in ipairs(parts) do
        local keep = math.max(0, math.min(width, bits - (i - 1) * width))
        local m = ((1 << keep) - 1) << (width - keep)
        out[i] = v & m
    end
    return out
end

---------------------------------------------------------------------------------------------------------
-- names
---------------------------------------------------------------------------------------------------------

-- A host name (already lower-cased, without a trailing dot): dot-separated labels of 1..63 characters
-- [a-z0-9_-], not starting or ending with "-", 253 characters at most, and a last label that is not all
-- digits (so that "1.2.3.999" is a bad address, never a name).
local function is_name(s)
    if #s < 1 or #s > 253 then
        return false
    end
    local last
    for label in (s .. "."):gmatch("([^.]*)%.") do
        if #label < 1 or #label > 63 or label:find("[^a-z0-9_-]") or label:find("^%-") or label:find("%-$") then
            return false
        end
        last = label
    end
    return not last:find("^%d+$")
end

--- The normalised form of a target and its kind ("domain", "wildcard", "ipv4", "cidr4", "ipv6", "cidr6"),
--- or nil and a reason (a phrase, for the caller's message).
function M.normalize_target(raw)
    if type(raw) ~= "string" then
        return nil, nil, "must be a string"
    end
    local t = trim(raw):lower()
    if t == "" then
        return nil, nil, "must not be empty"
    end
    local addr, bits = t:match("^([^/]*)/(%d+)$")
    if addr then
        local n = tonumber(bits)
        if #bits > 3 then
            n = 999
        end
        local v4 = parse_ipv4(addr)
        if v4 then
            if n > 32 then
                return nil, nil, "has a prefix length above 32"
            end
            local m = mask(v4, 8, n)
            return string.format("%d.%d.%d.%d/%d", m[1], m[2], m[3], m[4], n), "cidr4"
        end
        local v6 = parse_ipv6(addr)
        if v6 then
            if n > 128 then
                return nil, nil, "has a prefix length above 128"
            end
            return format_ipv6(mask(v6, 16, n)) .. "/" .. n, "cidr6"
        end
        return nil, nil, "is not a valid CIDR (address/prefix-length)"
    end
    if t:find("/", 1, true) then
        return nil, nil, "is not a valid CIDR (address/prefix-length)"
    end
    local v4 = parse_ipv4(t)
    if v4 then
        return string.format("%d.%d.%d.%d", v4[1], v4[2], v4[3], v4[4]), "ipv4"
    end
    if t:find(":", 1, true) then
        local v6 = parse_ipv6(t)
        if v6 then
            return format_ipv6(v6), "ipv6"
        end
        return nil, nil, "is not a valid IPv6 address"
    end
    local name = t:gsub("%.$", "")
    if name:sub(1, 2) == "*." then
        if is_name(name:sub(3)) then
            return name, "wildcard"
        end
        return nil, nil, "is not a valid wildcard domain (*.example.com)"
    end
    if is_name(name) then
        return name, "domain"
    end
    if name:find("*", 1, true) then
        return nil, nil, "is not a valid wildcard domain: '*' is allowed only as a leading '*.' label"
    end
    if t:find("^[%d.]+$") then
        return nil, nil, "is not a valid IPv4 address"
    end
    return nil, nil, "is not a valid domain name"
end

--- The kind of a normalised target: "domain", "wildcard", "ipv4", "cidr4", "ipv6" or "cidr6" (nil for
--- something that is none of them).
function M.kind(target)
    local _, kind = M.normalize_target(target)
    return kind
end

---------------------------------------------------------------------------------------------------------
-- validation
---------------------------------------------------------------------------------------------------------

local function short(v)
    local s = tostring(v)
    if #s > 80 then
        s = s:sub(1, 77) .. "..."
    end
    return s
end

--- One rule `raw` at `where` (e.g. "networkPolicy.egress[2]") -> { action, target } or nil, err.
function M.validate_rule(raw, where)
    if not json.is_object(raw) or next(raw) == nil then
        return invalid("%s must be an object with action and target.", where)
    end
    local action = raw.action
    if type(action) ~= "string" or not ACTIONS[trim(action):lower()] then
        return invalid("%s.action must be 'allow' or 'deny'.", where)
    end
    if json.absent(raw.target) then
        return invalid("%s.target is required.", where)
    end
    local target, _, why = M.normalize_target(raw.target)
    if not target then
        if type(raw.target) ~= "string" or not raw.target:find("%S") then
            return invalid("%s.target %s.", where, why)
        end
        return invalid("%s.target '%s' %s.", where, short(raw.target), why)
    end
    return { action = trim(action):lower(), target = target }
end

--- A list of rules `raw` named `where` (e.g. "networkPolicy.egress"; the PATCH body is "body") -> array of
--- normalised rules, or nil, err. `opts.non_empty` refuses an empty list (the egress API's PATCH).
function M.validate_rules(raw, where, opts)
    if not json.is_array(raw) then
        return invalid("%s must be an array of rules ({action, target}).", where)
    end
    if opts and opts.non_empty and #raw == 0 then
        return invalid("%s must be a non-empty array of rules ({action, target}).", where)
    end
    if #raw > M.MAX_RULES then
        return invalid("%s has %d rules; at most %d are allowed.", where, #raw, M.MAX_RULES)
    end
    local out = json.array()
    for i, r in ipairs(raw) do
        local rule, err = M.validate_rule(r, string.format("%s[%d]", where, i - 1))
        if not rule then
            return nil, err
        end
        out[i] = rule
    end
    return out
end

--- Validates create's `networkPolicy` (decoded JSON, present and not null) -> the normalised policy, or
--- nil and a 400 SANDBOX::INVALID_PARAMETER error naming the bad field.
function M.validate(raw)
    if not json.is_object(raw) then
        return invalid("networkPolicy must be an object with defaultAction and egress.")
    end
    local da = raw.defaultAction
    local default_action = "deny"
    if not json.absent(da) then
        if type(da) ~= "string" or not ACTIONS[trim(da):lower()] then
            return invalid("networkPolicy.defaultAction must be 'allow' or 'deny'.")
        end
        default_action = trim(da):lower()
    end
    local egress = json.array()
    if not json.absent(raw.egress) then
        local err
        egress, err = M.validate_rules(raw.egress, "networkPolicy.egress")
        if not egress then
            return nil, err
        end
    end
    return { defaultAction = default_action, egress = egress }
end

--- Validates the egress API's DELETE body: a non-empty array of target strings -> array of normalised
--- targets (a string that is no valid target is kept trimmed and lower-cased: it matches nothing, as
--- upstream ignores unknown targets), or nil, err.
function M.validate_targets(raw, where)
    if not json.is_array(raw) or #raw == 0 then
        return invalid("%s must be a non-empty array of targets (strings).", where)
    end
    if #raw > M.MAX_RULES then
        return invalid("%s has %d targets; at most %d are allowed.", where, #raw, M.MAX_RULES)
    end
    local out = {}
    for i, t in ipairs(raw) do
        if type(t) ~= "string" then
            return invalid("%s[%d] must be a string.", where, i - 1)
        end
        out[i] = M.normalize_target(t) or trim(t):lower():gsub("%.$", "")
    end
    return out
end

---------------------------------------------------------------------------------------------------------
-- evaluation and changes
---------------------------------------------------------------------------------------------------------

local function copy_rules(rules)
    local out = json.array()
    for i, r in ipairs(rules or {}) do
        out[i] = { action = r.action, target = r.target }
    end
    return out
end

--- A copy of a normalised policy (egress marked as a JSON array, also after a round trip through the
--- store, where an empty array comes back as an empty table).
function M.copy(policy)
    return { defaultAction = policy.defaultAction, egress = copy_rules(policy.egress) }
end

local function name_matches(target, name)
    if target:sub(1, 2) == "*." then
        local suffix = target:sub(2) -- ".example.com"
        return #name > #suffix and name:sub(-#suffix) == suffix
    end
    return target == name
end

--- The action for a DNS name: the first rule (in order) whose domain or wildcard target matches `name`
--- (case-insensitive, a trailing dot ignored) -> action, its index (1-based); none -> defaultAction, nil.
--- IP and CIDR rules never match names.
function M.match_name(policy, name)
    name = tostring(name or ""):lower():gsub("%.$", "")
    for i, r in ipairs(policy.egress or {}) do
        local t = r.target
        if not t:find("[:/]") and not t:find("^[%d.]+$") and name_matches(t, name) then
            return r.action, i
        end
    end
    return policy.defaultAction, nil
end

--- PATCH (upstream's merge): the incoming rules (normalised) come first, in their order, the first of
--- several with one target winning; then the current rules whose target no incoming rule names.
--- defaultAction is kept. Returns the new policy, or nil, err when it would exceed MAX_RULES.
function M.patch(policy, rules)
    local out, seen = json.array(), {}
    for _, list in ipairs({ rules, policy.egress or {} }) do
        for _, r in ipairs(list) do
            if not seen[r.target] then
                seen[r.target] = true
                out[#out + 1] = { action = r.action, target = r.target }
            end
        end
    end
    if #out > M.MAX_RULES then
        return invalid("The patched policy would have %d rules; at most %d are allowed.", #out, M.MAX_RULES)
    end
    return { defaultAction = policy.defaultAction, egress = out }
end

--- DELETE by target: the policy without the rules whose target is in `targets` (normalised); targets that
--- name no rule are ignored. Returns the new policy and how many rules were removed.
function M.remove(policy, targets)
    local drop = {}
    for _, t in ipairs(targets) do
        drop[t] = true
    end
    local out, removed = json.array(), 0
    for _, r in ipairs(policy.egress or {}) do
        if drop[r.target] then
            removed = removed + 1
        else
            out[#out + 1] = { action = r.action, target = r.target }
        end
    end
    return { defaultAction = policy.defaultAction, egress = out }, removed
end

--- upstream's derived mode: "allow_all" / "deny_all" with no rules, else "enforcing"
function M.mode(policy)
    if #(policy.egress or {}) == 0 then
        return policy.defaultAction == "allow" and "allow_all" or "deny_all"
    end
    return "enforcing"
end

--- The PolicyStatusResponse for a policy: { status = "ok", mode, enforcementMode, policy } (ready for
--- json.encode; `reason` added when given).
function M.status(policy, reason)
    return {
        status = "ok",
        mode = M.mode(policy),
        enforcementMode = M.ENFORCEMENT_MODE,
        reason = reason,
        policy = M.copy(policy),
    }
end

return M
