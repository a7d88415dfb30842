-- The X-Registry-Auth header (API.md §8.5): base64url (URL-safe alphabet, WITH padding) of the JSON
-- {"username","password","serveraddress"}.
--
-- The encoder is written here in pure Lua because neither Lua 5.4's standard library nor lua-cjson offers
-- base64, and the core deliberately exposes no codec for it; the header is tiny, so speed does not matter.
local json = require("common.json")

local M = {}

local STD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

local function encode(s, alphabet)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = s:byte(i, i + 2)
        local n = (a << 16) | ((b or 0) << 8) | (c or 0)
        local q1, q2 = (n >> 18) & 63, (n >> 12) & 63
        local q3, q4 = (n >> 6) & 63, n & 63
        out[#out + 1] = alphabet:sub(q1 + 1, q1 + 1) .. alphabet:sub(q2 + 1, q2 + 1)
            .. (b and alphabet:sub(q3 + 1, q3 + 1) or "=")
            .. (c and alphabet:sub(q4 + 1, q4 + 1) or "=")
    end
    return table.concat(out)
end

--- Standard base64 with padding.
function M.base64(s)
    return encode(s, STD)
end

--- base64url (RFC 4648 §5) with padding.
function M.base64url(s)
    return encode(s, URL)
end

--- The header value for `auth = {username, password}` and the registry's `serveraddress`.
function M.header(auth, serveraddress)
    return M.base64url(json.encode({
        username = auth.username,
        password = auth.password,
        serveraddress = serveraddress,
    }))
end

return M
