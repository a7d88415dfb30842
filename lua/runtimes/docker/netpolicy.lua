-- TEMPORARY STUB (branch netapi): the Docker runtime's network policy enforcement (nftables in the
-- sandbox's network namespace, DNS filtering) is written on branch `netenforce`, which replaces this file.
-- The adapter (runtimes/docker/init.lua) calls exactly these two functions:
--   support(spec, config) -> true | nil, reason   whether this host can enforce spec.network_policy
--   apply(handle, policy, rec) -> true | nil, err  puts `policy` in force for the container `handle`
-- The stub accepts everything and enforces nothing; it logs each apply to stderr (the integration specs
-- read that line to see that the service called it).
local M = {}

function M.support()
    return true
end

function M.apply(handle, policy)
    io.stderr:write(string.format("netpolicy-stub: apply %s defaultAction=%s rules=%d\n", tostring(handle),
        tostring(policy and policy.defaultAction), policy and #(policy.egress or {}) or 0))
    io.stderr:flush()
    return true
end

return M
