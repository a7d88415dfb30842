-- Hook overhead per create request: before_create + sandbox_name + after_transition through the three
-- shipped hooks (metadata, naming, quotas), all configured, with budgets on.
--
--   lua5.4 bench/hooks_bench.lua [iterations]      (run from the repository root)
--
-- Prints microseconds per request for 0, 100 and 1000 live sandboxes (the quotas hook counts them).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local hooks = require("hooks")

local N = tonumber(arg and arg[1]) or 20000
local nolog = function() end
local log = { debug = nolog, info = nolog, warn = nolog, error = nolog }

local function bench(live)
    local records = {}
    for i = 1, live do
        records[string.format("id-%d", i)] = {
            state = "Running",
            principal = (i % 2 == 0) and "team-a" or "team-b",
            metadata = { owner = "team-x", team = "infra" },
            nano_cpus = 10000000,
            memory = 6291456,
        }
    end
    local h = assert(hooks.new({
        dir = "hooks",
        log = log,
        sandboxes = function()
            return records
        end,
        config = {
            naming = { template = "{metadata.team}-{id8}" },
            metadata = { metadata = { owner = "{principal}" }, env = { TZ = "UTC" } },
            quotas = { principals = { ["team-a"] = { max_sandboxes = 100000, max_cpus = 100000 } } },
        },
    }))
    local ctx = { request_id = "0123456789abcdef0123456789abcdef", principal = "team-a", admin = false,
        host = "127.0.0.1:8080", remote_addr = "127.0.0.1" }
    local rec = { id = "0123abcd-1111-4111-8111-111111111111", principal = "team-a", metadata = {} }
    local function one()
        local spec = {
            image = { uri = "python:3.11-slim" },
            entrypoint = { "python", "-m", "http.server" },
            timeout = 600,
            nano_cpus = 500000000,
            memory = 536870912,
            env = { { "A", "1" } },
            metadata = { team = "infra", purpose = "bench" },
            extensions = {},
        }
        local out = assert(h:before_create(ctx, spec))
        rec.metadata = out.metadata
        h:sandbox_name(ctx, out, rec)
        h:after_transition(rec, nil, "Pending")
    end
    for _ = 1, math.min(N, 1000) do
        one()
    end
    local t0 = os.clock()
    for _ = 1, N do
        one()
    end
    return (os.clock() - t0) / N * 1e6
end

for _, live in ipairs({ 0, 100, 1000 }) do
    local n = N
    if live >= 1000 then
        N = math.max(1000, N // 10)
    end
    print(string.format("hooks: before_create + sandbox_name + after_transition, 3 default hooks, "
        .. "%d live sandboxes: %.1f us per request", live, bench(live)))
    N = n
end
