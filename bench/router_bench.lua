-- Microbenchmark of the router alone (lua/api/router.lua): microseconds per match of a few request paths.
-- Run from the repository root:  lua5.4 bench/router_bench.lua [N]   (default 500000 matches per path)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local router = require("api.router")

local n = tonumber(arg[1]) or 500000
local cases = {
    { "GET", "/v1/sandboxes/6eb341eb-024d-4eb1-aea2-1ba70b9afd46" },
    { "GET", "/v1/sandboxes" },
    { "GET", "/v1/sandboxes/6eb341eb-024d-4eb1-aea2-1ba70b9afd46/proxy/8080/api/items" },
    { "POST", "/v1/sandboxes/6eb341eb-024d-4eb1-aea2-1ba70b9afd46/renew-expiration" },
    { "GET", "/v1/sandboxes/6eb341eb-024d-4eb1-aea2-1ba70b9afd46/endpoints/8080" },
}
for _, c in ipairs(cases) do
    local method, path = c[1], c[2]
    assert(router.match(method, path), "no route for " .. method .. " " .. path)
    local t0 = os.clock()
    for _ = 1, n do
        router.match(method, path)
    end
    print(string.format("%-6s %-80s %.3f us", method, path, (os.clock() - t0) / n * 1e6))
end
