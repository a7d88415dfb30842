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

--- The `*.lua` regular files of directory `dir` (not those starting with "."), sorted by name; or nil and
--- "{what} directory {dir}: {reason}" (the hooks and routes directories).
function M.lua_files(dir, what)
    local lfs = require("lfs")
    local files = {}
    local ok, err = pcall(function()
        for entry in lfs.dir(dir) do
            local path = dir .. "/" .. entry
            if entry:sub(-4) == ".lua" and entry:sub(1, 1) ~= "." and lfs.attributes(path, "mode") == "file" then
                files[#files + 1] = entry
            end
        end
    end)
    if not ok then
        return nil, string.format("%s directory %s: %s", what, dir, tostring(err))
    end
    table.sort(files)
    return files
end

return M
