-- Whole-file reads for configuration-time code (kubeconfigs, certificates, the docs assets): the contents,
-- or nil and the reason. Blocking: never on a request's path.
local M = {}

function M.read(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, err
    end
    local data = f:read("a")
    f:close()
    return data
end

return M
