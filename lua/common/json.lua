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

-- Replaces every empty tagged array in `v` (in place) by the marker string; records what it replaced in
-- `undo` so that the caller can put the tables back after encoding.
local function mark_empty(v, depth, undo)
    if depth > 64 then
        return
    end
    for k, x in pairs(v) do
        if type(x) == "table" then
            if next(x) == nil then
                if getmetatable(x) == array_mt then
                    undo[#undo + 1] = v
                    undo[#undo + 1] = k
                    undo[#undo + 1] = x
                    v[k] = EMPTY_MARK
                end
            else
                mark_empty(x, depth + 1, undo)
            end
        end
    end
end

-- Replaces each encoded marker by [] (plain search: faster than a pattern for this fixed string).
local function replace_marks(s)
    local out, pos, n = {}, 1, #EMPTY_ENCODED
    while true do
        local i = s:find(EMPTY_ENCODED, pos, true)
        if not i then
            break
        end
        out[#out + 1] = s:sub(pos, i - 1)
        out[#out + 1] = "[]"
        pos = i + n
    end
    out[#out + 1] = s:sub(pos)
    return table.concat(out)
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
        local undo = {}
        mark_empty(v, 0, undo)
        if #undo > 0 then
            local ok, s = pcall(encoder.encode, v)
            for i = #undo, 1, -3 do
                undo[i - 2][undo[i - 1]] = undo[i]
            end
            if not ok then
                error(s, 2)
            end
            return replace_marks(s)
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

--- `s` with every invalid UTF-8 sequence replaced by U+FFFD, so that text from the outside (a path
--- parameter, a query value) can go into a JSON response: cjson copies bytes as they are.
function M.valid_utf8(s)
    if utf8.len(s) then
        return s
    end
    local out, pos, n = {}, 1, #s
    while pos <= n do
        local ok, bad = utf8.len(s, pos)
        if ok then
            out[#out + 1] = s:sub(pos)
            break
        end
        out[#out + 1] = s:sub(pos, bad - 1)
        out[#out + 1] = "\u{FFFD}"
        pos = bad + 1
    end
    return table.concat(out)
end

M.null = cjson.null

--- Whether `v` is a decoded JSON object: a table whose keys are all strings (a JSON array has integer keys).
--- The empty table is both an object and an array.
function M.is_object(v)
    if type(v) ~= "table" or v == M.null then
        return false
    end
    for k in pairs(v) do
        if type(k) ~= "string" then
            return false
        end
    end
    return true
end

--- Whether `v` is a decoded JSON array: keys exactly 1..n.
function M.is_array(v)
    if type(v) ~= "table" or v == M.null then
        return false
    end
    local n = 0
    for k in pairs(v) do
        if math.type(k) ~= "integer" or k < 1 then
            return false
        end
        n = n + 1
    end
    return n == #v
end

--- Whether a decoded JSON field is absent: missing or null.
function M.absent(v)
    return v == nil or v == M.null
end

return M
