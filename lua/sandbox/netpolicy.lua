-- TEMPORARY (branch netenforce): the two functions the enforcement uses; the netapi branch brings the
-- real module (validation, patch, remove, status) and replaces this file at merge.
local M = {}

function M.kind(target)
    if target:find("^%*%.") then
        return "wildcard"
    elseif target:find("^%d+%.%d+%.%d+%.%d+$") then
        return "ipv4"
    elseif target:find("^%d+%.%d+%.%d+%.%d+/%d+$") then
        return "cidr4"
    elseif target:find(":") then
        return target:find("/") and "cidr6" or "ipv6"
    end
    return "domain"
end

function M.match_name(policy, name)
    name = name:lower():gsub("%.$", "")
    for i, r in ipairs(policy.egress or {}) do
        local k = M.kind(r.target)
        if (k == "domain" and r.target == name)
            or (k == "wildcard" and #name > #r.target - 1 and name:sub(-(#r.target - 1)) == r.target:sub(2)) then
            return r.action, i
        end
    end
    return policy.defaultAction or "deny", nil
end

return M
