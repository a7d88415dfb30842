-- Default hook: inject metadata and environment variables into every sandbox.
--
-- hooks.config.metadata = {
--     metadata = { owner = "{principal}" },   -- always set (replaces what the caller sent)
--     metadata_defaults = { team = "none" },   -- set only when the caller did not send the key
--     env = { TZ = "UTC" },                    -- always set
--     env_defaults = { LANG = "C.UTF-8" },     -- set only when the caller did not send the variable
-- }
-- Values are templates: {principal} (who creates the sandbox), {request_id}, {metadata.KEY} (a metadata
-- value of the request). Metadata values are made valid label values (API.md §4.1): characters other than
-- letters, digits, '-', '_' and '.' become '-', the value is cut to 63 characters and must begin and end
-- with a letter or digit (what is not is trimmed). Metadata keys are checked at load.
-- With nothing configured the hook changes nothing.
--
-- Metadata patches (before_patch_metadata): a key of `metadata` (forced) keeps its value: a patch that
-- changes or removes it is refused with 403 METADATA::FORCED. A key of `metadata_defaults` that a patch
-- removes gets its default value again (templates see the sandbox's owner as {principal} and the patched
-- metadata), so a sandbox cannot lose a value that a quota or a name depends on.
-- luacheck: read globals opensandbox
local M = {
    name = "metadata",
    priority = 300,
    description = "inject configured metadata and env",
}

local forced_md, default_md, forced_env, default_env = {}, {}, {}, {}
local needs_md = false -- whether a template uses {metadata.KEY} (else the values table leaves them out)

local function string_map(t, what)
    if t == nil then
        return {}
    end
    if type(t) ~= "table" then
        return nil, what .. " must be a table of name = value strings"
    end
    local out = {}
    for k, v in pairs(t) do
        if type(k) ~= "string" or type(v) ~= "string" then
            return nil, what .. " must be a table of name = value strings"
        end
        out[k] = v
    end
    return out
end

function M.init(config)
    local err
    for _, spec in ipairs({ { "metadata", true }, { "metadata_defaults", true }, { "env", false },
        { "env_defaults", false } }) do
        local t
        t, err = string_map(config[spec[1]], spec[1])
        if not t then
            return nil, err
        end
        for k in pairs(t) do
            if spec[2] then
                local ok, why = opensandbox.metadata_label(k, nil)
                if not ok then
                    return nil, spec[1] .. ": " .. why
                end
            elseif k == "" or k:find("[=%z]") then
                return nil, spec[1] .. ": invalid variable name '" .. k .. "'"
            end
        end
        config[spec[1]] = t
    end
    forced_md, default_md = config.metadata, config.metadata_defaults
    forced_env, default_env = config.env, config.env_defaults
    needs_md = false
    for _, t in ipairs({ forced_md, default_md, forced_env, default_env }) do
        for _, v in pairs(t) do
            needs_md = needs_md or v:find("{metadata.", 1, true) ~= nil
        end
    end
    return true
end

-- (a value that is valid already, the usual case, is returned as it is: no string is built per create)
local function label_value(s)
    if #s <= 63 and (s:find("^%w$") or s:find("^%w[%w_.%-]*%w$")) then
        return s
    end
    s = s:gsub("[^%w_.%-]", "-"):sub(1, 63)
    return (s:gsub("^[^%w]+", ""):gsub("[^%w]+$", ""))
end

local function expand(v, values)
    if not v:find("{", 1, true) then
        return v
    end
    return opensandbox.template(v, values)
end

local function set_env(env, name, value, force)
    for _, e in ipairs(env) do
        if e[1] == name then
            if force then
                e[2] = value
            end
            return
        end
    end
    env[#env + 1] = { name, value }
end

function M.before_create(ctx, spec)
    if not (next(forced_md) or next(default_md) or next(forced_env) or next(default_env)) then
        return
    end
    local values = { principal = ctx.principal, request_id = ctx.request_id }
    if needs_md then
        for k, v in pairs(spec.metadata) do
            values["metadata." .. k] = v
        end
    end
    local md = spec.metadata
    for k, v in pairs(default_md) do
        if md[k] == nil then
            md[k] = label_value(expand(v, values))
        end
    end
    for k, v in pairs(forced_md) do
        md[k] = label_value(expand(v, values))
    end
    for k, v in pairs(default_env) do
        set_env(spec.env, k, expand(v, values), false)
    end
    for k, v in pairs(forced_env) do
        set_env(spec.env, k, expand(v, values), true)
    end
end

function M.before_patch_metadata(_, sandbox, patch)
    local current = sandbox.metadata
    for k in pairs(forced_md) do
        local v = patch[k]
        if v ~= nil and (v or nil) ~= current[k] then
            return opensandbox.reject(403, "METADATA::FORCED",
                string.format("Metadata key '%s' is set by the server and cannot be changed.", k))
        end
    end
    local values
    for k, v in pairs(default_md) do
        if patch[k] == false then
            if not values then
                values = { principal = sandbox.principal }
                for mk, mv in pairs(current) do
                    values["metadata." .. mk] = mv
                end
                for pk, pv in pairs(patch) do
                    values["metadata." .. pk] = pv or nil
                end
            end
            patch[k] = label_value(opensandbox.template(v, values))
        end
    end
end

return M
