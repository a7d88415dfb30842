-- Helpers for the hooks specs: a temporary directory of hook files and a recording log.
-- Loaded with dofile("tests/lua/unit/hooks/support.lua").
local lfs = require("lfs")

local S = {}

--- A fresh directory holding `files` (name -> Lua source). Returns its path.
function S.dir(files)
    local path = os.tmpname()
    os.remove(path)
    assert(lfs.mkdir(path))
    S.write(path, files)
    return path
end

--- Writes (or, with source false, removes) files in `dir`.
function S.write(dir, files)
    for name, src in pairs(files or {}) do
        if src == false then
            os.remove(dir .. "/" .. name)
        else
            local f = assert(io.open(dir .. "/" .. name, "wb"))
            f:write(src)
            f:close()
        end
    end
end

--- Removes the directory and its files.
function S.rmdir(dir)
    for entry in lfs.dir(dir) do
        if entry ~= "." and entry ~= ".." then
            os.remove(dir .. "/" .. entry)
        end
    end
    lfs.rmdir(dir)
end

--- A log that records every call: log.lines = { {level=, msg=, fields=} }.
function S.log()
    local log = { lines = {} }
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        log[level] = function(msg, fields)
            log.lines[#log.lines + 1] = { level = level, msg = msg, fields = fields or {} }
        end
    end
    function log.find(level, pattern)
        for _, l in ipairs(log.lines) do
            if l.level == level and (not pattern or l.msg:find(pattern, 1, true)) then
                return l
            end
        end
        return nil
    end
    return log
end

--- A validated create spec (lua/sandbox/validate.lua shape).
function S.spec(t)
    t = t or {}
    return {
        image = { uri = "alpine:3", auth = t.auth },
        entrypoint = { "sleep", "60" },
        timeout = t.timeout,
        nano_cpus = t.nano_cpus,
        memory = t.memory,
        env = t.env or {},
        metadata = t.metadata or {},
        extensions = {},
    }
end

--- A hook file's source: a hook `name` with `priority` and the body lines given (Lua source of fields).
function S.hook(name, priority, body)
    return string.format("return { name = %q, priority = %d,\n%s\n}\n", name, priority, body or "")
end

return S
