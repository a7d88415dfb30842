-- Base64 for the whole server (Docker's X-Registry-Auth; the Kubernetes runtime's kubeconfig *-data fields,
-- ConfigMap binaryData and pull Secrets): a thin layer over Debian's lua-basexx (`require("basexx")`).
--
-- Debian 12 installs basexx.lua for Lua 5.1 and 5.2 only (/usr/share/lua/5.{1,2}); the file is plain Lua
-- that runs unchanged on 5.4, so when `require` does not find it on the 5.4 path it is loaded from there.
-- `decode` is strict where basexx is lenient: the text must be whole 4-character groups of the standard
-- alphabet with at most two `=` of padding at the end (ASCII whitespace is ignored, as PEM-wrapped data
-- has line breaks). Anything else is `nil, reason`.
local M = {}

-- where Debian puts basexx.lua for the Lua versions it packages it for
M.DEBIAN_PATHS = "/usr/share/lua/5.3/?.lua;/usr/share/lua/5.2/?.lua;/usr/share/lua/5.1/?.lua"

local basexx

--- The basexx module (loaded once). Raises when lua-basexx is not installed (an installation error:
--- scripts/setup.sh installs it).
function M.lib()
    if basexx then
        return basexx
    end
    local ok, mod = pcall(require, "basexx")
    if not ok then
        local path = package.searchpath("basexx", M.DEBIAN_PATHS)
        if not path then
            error("base64: the lua-basexx package is not installed (apt-get install lua-basexx)", 2)
        end
        mod = dofile(path)
        package.loaded.basexx = mod
    end
    basexx = mod
    return basexx
end

--- Standard base64 (with padding) of `bytes`.
function M.encode(bytes)
    assert(type(bytes) == "string", "base64.encode: string expected")
    return M.lib().to_base64(bytes)
end

--- base64url (RFC 4648 §5, the URL-safe alphabet) with padding, of `bytes`.
function M.encode_url(bytes)
    return (M.encode(bytes):gsub("[+/]", { ["+"] = "-", ["/"] = "_" }))
end

--- The bytes of standard base64 text, or nil and what is wrong with it.
function M.decode(text)
    if type(text) ~= "string" then
        return nil, "not a string"
    end
    local s = text:gsub("[ \t\r\n]", "")
    if #s % 4 ~= 0 then
        return nil, "invalid base64 (length is not a multiple of 4)"
    end
    local body = s:match("^([A-Za-z0-9+/]*)=?=?$")
    if not body or #s - #body > 2 then
        return nil, "invalid base64 (a character outside the alphabet, or misplaced padding)"
    end
    local out, bad = M.lib().from_base64(s)
    if not out then
        return nil, "invalid base64 (character " .. tostring(bad) .. ")"
    end
    return out
end

return M
