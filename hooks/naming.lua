-- Default hook: container names from a template.
--
-- hooks.config.naming = {
--     template = "sandbox-{id}",   -- the default, what API.md §8.2 specifies
-- }
-- Placeholders: {id} (the sandbox id), {id8} (its first 8 characters), {principal} (who created it),
-- {metadata.KEY} (a metadata value of the create request, after the metadata hook). A missing value
-- expands to "". The result is made a valid Docker name: characters other than letters, digits, '_', '.'
-- and '-' become '-', leading characters that are not a letter or digit are dropped, and it is cut to 200
-- characters. If nothing valid is left, the server uses "sandbox-{id}".
--
-- Docker names are unique, so keep {id} or {id8} in the template: without one, a second sandbox with the
-- same name fails to provision (a warning is logged at load).
-- luacheck: read globals opensandbox
local M = {
    name = "naming",
    priority = 200,
    description = "container names from a template",
}

local template = "sandbox-{id}"

function M.init(config)
    local t = config.template
    if t == nil then
        template = "sandbox-{id}"
        return true
    end
    if type(t) ~= "string" or t == "" then
        return nil, "template must be a non-empty string"
    end
    if not (t:find("{id}", 1, true) or t:find("{id8}", 1, true)) then
        opensandbox.log.warn("naming template has neither {id} nor {id8}; container names may collide",
            { template = t })
    end
    template = t
    return true
end

function M.sandbox_name(ctx, spec, sandbox)
    local values = {
        id = sandbox.id,
        id8 = sandbox.id:sub(1, 8),
        principal = ctx.principal,
    }
    for k, v in pairs(spec.metadata) do
        values["metadata." .. k] = v
    end
    local name = opensandbox.template(template, values)
    name = name:gsub("[^%w_.%-]", "-"):gsub("^[^%w]+", ""):sub(1, 200)
    if name == "" then
        return nil
    end
    return name
end

return M
