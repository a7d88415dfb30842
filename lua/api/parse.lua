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
