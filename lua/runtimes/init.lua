-- Picks the runtime adapter named by `runtime.type` (the way Kong's db strategies are picked by name) and
-- checks that it implements the contract of lua/runtimes/README.md. The service depends on this contract
-- only; adding a runtime means adding `lua/runtimes/<name>/init.lua` and its name to ADAPTERS (and to the
-- `runtime.type` values in lua/config/schema.lua).
local M = {}

-- runtime.type -> module. "fake" is the in-tree runtime of the service's unit specs (no daemon needed).
M.ADAPTERS = {
    docker = "runtimes.docker",
    fake = "runtimes.fake",
    kubernetes = "runtimes.kubernetes",
}

-- the contract: every adapter has these (lua/runtimes/README.md says what each does)
M.METHODS = { "connect", "unavailable", "provision", "pause", "resume", "remove", "list", "watch", "address" }

--- Raises when `adapter` lacks a method of the contract (a programmer error). Returns it.
function M.check(adapter, name)
    for _, m in ipairs(M.METHODS) do
        if type(adapter[m]) ~= "function" then
            error(string.format("runtime %s: the adapter has no %s()", tostring(name), m), 2)
        end
    end
    assert(type(adapter.name) == "string", "runtime " .. tostring(name) .. ": the adapter has no name")
    return adapter
end

--- A new adapter for `cfg.runtime.type` (the whole validated configuration is handed to it; each adapter
--- reads its own section). `deps` are the adapter's dependencies (see each adapter's new). Raises for an
--- unknown type: the configuration schema only lets known ones through.
function M.new(cfg, deps)
    local name = cfg.runtime and cfg.runtime.type or "docker"
    local mod = M.ADAPTERS[name]
    if not mod then
        error("unknown runtime.type '" .. tostring(name) .. "'", 2)
    end
    return M.check(require(mod).new(cfg, deps or {}), name)
end

return M
