-- Boot script placeholder (replaced by the real boot below once lua/api lands).
local http = require("core.http")
local json = require("common.json")
http.listen({ host = "127.0.0.1", port = tonumber(os.getenv("PORT") or "8080"), handler = function(req)
    if req.path == "/health" then
        return 200, { ["Content-Type"] = "application/json" }, json.encode({ status = "healthy" })
    end
    return 404, { ["Content-Type"] = "application/json" }, '{"code":"GENERAL::NOT_FOUND","message":"Not Found"}'
end })
