-- JSON for the whole server: a thin layer over lua-cjson.
--
-- Debian's lua-cjson 2.1.0 has no way to mark an empty table as an array, so `json.array(t)` tags a table
-- and `encode` writes such a table as `[]` when it is empty (a tagged non-empty table encodes as an array
-- anyway). `decode` returns `nil, err` instead of raising, and rejects invalid UTF-8 (cjson does not check).
local cjson = require("cjson")

local M = {}

local encoder = cjson.new()
encoder.encode_sparse_array(true) -- never raise on sparse arrays; we do not build them
encoder.encode_number_precision(14)

local decoder = cjson.new()
decoder.decode_max_depth(200)
decoder.decode_invalid_numbers(false)

-- A value that cannot appear in user data: JSON strings from clients never contain a raw NUL byte after
-- cjson escaping, and this marker encodes as the quoted string below.
local EMPTY_MARK = "\1opensandbox-empty-array\1"
local EMPTY_ENCODED = encoder.encode(EMPTY_MARK)
local array_mt = { __name = "json.array" }

--- Marks `t` (default a new table) as a JSON array, so that it encodes as `[]` when empty.
function M.array(t)
    return setmetatable(t or {}, array_mt)
end

local function has_empty_arrays(v, depth)
    if depth > 64 then
        return false
    end
    for _, x in pairs(v) do
        if type(x) == "table" then
            if getmetatable(x) == array_mt and next(x) == nil then
                return true
            end
            if has_empty_arrays(x, depth + 1) then
                return true
            end
        end
    end
    return false
end

local function replace_empty(v, depth)
    local out = {}
    for k, x in pairs(v) do
        if type(x) == "table" then
            if getmetatable(x) == array_mt and next(x) == nil then
                x = EMPTY_MARK
            elseif depth < 64 then
                x = replace_empty(x, depth + 1)
            end
        end
        out[k] = x
    end
    return out
end

-- cjson 2.1.0 always writes "/" as "\/"; undo that (an escaped backslash before it stays escaped).
local function unescape_slashes(s)
    if s:find("\\/", 1, true) then
        return (s:gsub("\\/", "/"))
    end
    return s
end

local function encode(v)
    if type(v) == "table" then
        if getmetatable(v) == array_mt and next(v) == nil then
            return "[]"
        end
        if has_empty_arrays(v, 0) then
            local s = encoder.encode(replace_empty(v, 0))
            return (s:gsub(EMPTY_ENCODED:gsub("%p", "%%%0"), "[]"))
        end
    end
    return encoder.encode(v)
end

--- Encodes a Lua value. Raises on values JSON cannot hold (functions, NaN): those are programmer errors.
function M.encode(v)
    return unescape_slashes(encode(v))
end

--- Decodes text; returns the value, or nil and a message. JSON null decodes to `json.null`.
function M.decode(s)
    if type(s) ~= "string" then
        return nil, "not a string"
    end
    if not utf8.len(s) then
        return nil, "invalid UTF-8"
    end
    local ok, v = pcall(decoder.decode, s)
    if not ok then
        return nil, tostring(v)
    end
    return v
end

M.null = cjson.null

return M
