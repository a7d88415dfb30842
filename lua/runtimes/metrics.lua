-- The runtime API request counter shared by the adapters' one request function each (Docker Engine API:
-- runtimes/docker/engine.lua `_request`; Kubernetes API: runtimes/kubernetes/api.lua `_send`):
--
--   opensandbox_runtime_requests_total{runtime, method, status_class}
--
-- status_class is "2xx" .. "5xx" from the HTTP status, "error" when the request got no response (transport
-- failure, timeout). Methods outside the HTTP set count as "OTHER". Series are resolved once per
-- (runtime, method, class) and cached by the registry.
local metrics = require("common.metrics")

local M = {}

local REQUESTS = metrics.default:counter("opensandbox_runtime_requests_total",
    "Requests to the runtime's API (Docker Engine API, Kubernetes API) by runtime, method and status class "
        .. "(\"error\": no response).", { "runtime", "method", "status_class" })

local CLASS = { [1] = "1xx", [2] = "2xx", [3] = "3xx", [4] = "4xx", [5] = "5xx" }
local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, PATCH = true, DELETE = true }

--- Counts one request of `runtime` ("docker", "kubernetes"): `res` is the response ({ status }) or nil.
function M.request(runtime, method, res)
    local class = res and CLASS[res.status // 100] or "error"
    REQUESTS:labels(runtime, METHODS[method] and method or "OTHER", class):inc()
end

return M
