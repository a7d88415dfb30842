-- Request parsing shared by the handlers (API.md §1.1, §1.4): the JSON body that must be an object, and the
-- query string decoded with form rules.
local errors = require("common.errors")
local json = require("common.json")

local M = {}

M.MAX_BODY = 1048576

--- The error for a body over the limit (the core sets req.body_too_large).
function M.too_large()
    return errors.new(413, "GENERAL::PAYLOAD_TOO_LARGE", "Request body exceeds 1048576 bytes.")
end

local function not_object()
    return errors.invalid("Request body must be a JSON object.")
end

--- Decodes a body that must be a JSON object. Returns the table, or nil and a 400 error for an empty body,
--- malformed JSON, invalid UTF-8, nesting deeper than the decoder allows, or any non-object top level.
--- Duplicate keys: the last one wins (the decoder's behaviour).
function M.json_object(body)
    if type(body) ~= "string" or not body:find("%S") then
        return nil, not_object()
    end
    local v = json.decode(body)
    -- A JSON array decodes to a Lua table too: an object is a table that is not a non-empty sequence and
    -- did not start with "[" (an empty array "[]" decodes to an empty table).
    if type(v) ~= "table" or body:match("^%s*(.)") ~= "{" then
        return nil, not_object()
    end
    return v
end

-- Key order of one member object. The decoder (lua-cjson) gives Lua tables, which have no order, and no
-- library here decodes JSON with its key order; API.md §8.2 wants `env` in request order, so this small
-- scanner walks the raw text, which json_object has already accepted as valid JSON.

-- the position just after the JSON string that starts (with its quote) at i
local function string_end(text, i)
    local j = i + 1
    while true do
        local q = text:find('["\\]', j)
        if not q then
            return #text + 1
        end
        if text:byte(q) == 34 then -- '"'
            return q + 1
        end
        j = q + 2 -- a backslash and the character it escapes
    end
end

-- the position just after the JSON value that starts at i (whitespace before it already skipped)
local function value_end(text, i)
    local c = text:byte(i)
    if c == 34 then
        return string_end(text, i)
    end
    if c ~= 123 and c ~= 91 then -- not '{' or '[': a number or a literal
        return (text:find("[%s,%]}]", i) or #text + 1)
    end
    local depth, j = 0, i
    while true do
        local k = text:find('[%[%]{}"]', j)
        if not k then
            return #text + 1
        end
        local b = text:byte(k)
        if b == 34 then
            j = string_end(text, k)
        else
            depth = depth + ((b == 123 or b == 91) and 1 or -1)
            j = k + 1
            if depth == 0 then
                return j
            end
        end
    end
end

local function skip_ws(text, i)
    return (text:find("[^ \t\r\n]", i) or #text + 1)
end

-- calls fn(key, value_start) for each member of the object at i, in text order; returns nothing
local function each_member(text, i, fn)
    i = skip_ws(text, i + 1)
    while text:byte(i) == 34 do
        local kend = string_end(text, i)
        local key = json.decode(text:sub(i, kend - 1))
        if type(key) ~= "string" then -- cannot happen on text the decoder accepted; stop rather than guess
            return
        end
        local vstart = skip_ws(text, skip_ws(text, kend) + 1) -- past the ':'
        fn(key, vstart)
        i = skip_ws(text, value_end(text, vstart))
        if text:byte(i) ~= 44 then -- ','
            return
        end
        i = skip_ws(text, i + 1)
    end
end

--- The keys of the top-level member `name` of a JSON object text, in the order they first appear, when that
--- member is an object (the last occurrence of `name` counts, as in decoding); nil otherwise. `text` must be
--- a body that json_object accepted.
function M.member_key_order(text, name)
    local at
    each_member(text, skip_ws(text, 1), function(key, vstart)
        if key == name then
            at = vstart
        end
    end)
    if not at or text:byte(at) ~= 123 then
        return nil
    end
    local order, seen = {}, {}
    each_member(text, at, function(key)
        if not seen[key] then
            seen[key] = true
            order[#order + 1] = key
        end
    end)
    return order
end

local function hexbyte(h)
    return string.char(tonumber(h, 16))
end

--- Decodes one query component with form rules: "+" is a space, "%XX" a byte. Decoded once only.
function M.form_unescape(s)
    if not s:find("[+%%]") then
        return s
    end
    s = s:gsub("%+", " ")
    return (s:gsub("%%(%x%x)", hexbyte))
end

--- Parses a raw query string into name -> array of decoded values, in order. Repeated names keep every value;
--- a name with no "=" gets "". Empty segments ("a=1&&b=2") are skipped.
function M.query(raw)
    local out = {}
    if type(raw) ~= "string" or raw == "" then
        return out
    end
    for seg in raw:gmatch("[^&]+") do
        local eq = seg:find("=", 1, true)
        local k, v
        if eq then
            k, v = seg:sub(1, eq - 1), seg:sub(eq + 1)
        else
            k, v = seg, ""
        end
        do
            k, v = M.form_unescape(k), M.form_unescape(v)
            local list = out[k]
            if not list then
                list = {}
                out[k] = list
            end
            list[#list + 1] = v
        end
    end
    return out
end

return M
