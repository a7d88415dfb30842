-- The X-Registry-Auth header (API.md §8.5): base64url (URL-safe alphabet, WITH padding) of the JSON
-- {"username","password","serveraddress"}.
local json = require("common.json")
local base64 = require("common.base64")

local M = {}

--- Standard base64 with padding.
M.base64 = base64.encode

--- base64url (RFC 4648 §5) with padding.
M.base64url = base64.encode_url

--- The header value for `auth = {username, password}` and the registry's `serveraddress`.
function M.header(auth, serveraddress)
    return M.base64url(json.encode({
        username = auth.username,
        password = auth.password,
        serveraddress = serveraddress,
    }))
end

return M
