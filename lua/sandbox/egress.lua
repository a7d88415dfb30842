-- Part of the lifecycle service (sandbox/service.lua): network policy (upstream's `networkPolicy` and the
-- egress API of egress-api.yaml). The model is sandbox/netpolicy.lua; the runtime enforces it
-- (lua/runtimes/README.md: network_policy_support, set_network_policy).
--
--   create        check_network_policy: the runtime says whether it can enforce the policy, before anything
--                 is made (400 otherwise); the record keeps the policy and a random egress token, and
--                 provisioning hands the policy to the runtime in spec.network_policy
--   endpoint      port 18080 of a sandbox with a policy is the egress API, served by this server
--                 (views.lua); its reply carries OPENSANDBOX-EGRESS-AUTH with the egress token
--   GET/PATCH/DELETE /sandboxes/{id}/egress/policy   egress_policy, patch_egress, remove_egress: the caller
--                 shows the egress token (or an API key that sees the sandbox); a change is put in force
--                 by the runtime first and stored after, so a refusal leaves the stored policy as it was
--   restart       reapply_network_policies: once the store and the runtime are reconciled, every live
--                 sandbox's stored policy is handed to the runtime again
local errors = require("common.errors")
local model = require("sandbox.model")
local netpolicy = require("sandbox.netpolicy")
local C = require("sandbox.constants")

local P = {}

-- whether two secrets are equal, in time that depends on their lengths only
local function same_secret(a, b)
    if #a ~= #b or #b == 0 then
        return false
    end
    local diff = 0
    for i = 1, #b do
        diff = diff | (a:byte(i) ~ b:byte(i))
    end
    return diff == 0
end

local LIVE = { [model.STATE.RUNNING] = true, [model.STATE.PAUSED] = true }

local function unauthorized(id)
    return errors.new(401, "SANDBOX::EGRESS_UNAUTHORIZED", string.format("The egress API of sandbox %s needs "
        .. "the %s header of its endpoint reply (GET /sandboxes/%s/endpoints/%d) or an OPEN-SANDBOX-API-KEY "
        .. "that can see the sandbox.", id, C.EGRESS_AUTH_HEADER, id, C.EGRESS_PORT))
end

local function no_policy(id)
    return errors.new(404, "SANDBOX::NETWORK_POLICY_NOT_FOUND", string.format("Sandbox %s was created without "
        .. "networkPolicy: it has no egress policy (port %d is an ordinary port of the sandbox).", id,
        C.EGRESS_PORT))
end

--- Create (before anything is made): the spec's policy again (hooks may have changed it), and whether the
--- runtime can enforce it. Returns true, or nil and a 400 (or the runtime's 503).
function P:check_network_policy(spec)
    if spec.network_policy == nil then
        return true
    end
    local policy, err = netpolicy.validate(spec.network_policy)
    if not policy then
        return nil, err
    end
    spec.network_policy = policy
    local why
    if self.runtime.network_policy_support then
        local ok
        ok, why = self.runtime:network_policy_support(spec)
        if ok then
            return true
        end
    end
    if type(why) == "table" and why.kind == "unavailable" then
        return nil, self:runtime_error(why, "SANDBOX::INVALID_PARAMETER", "check the network policy of")
    end
    if type(why) == "table" then
        why = why.message
    end
    return nil, errors.invalid(tostring(why or ("networkPolicy is not supported on the " ..
        tostring(self.runtime.name) .. " runtime.")))
end

--- The record of sandbox `id` if the caller may use its egress API: `token` is the request's
--- OPENSANDBOX-EGRESS-AUTH, `by_key` whether it showed a valid API key (then `ctx` must see the sandbox).
--- Unknown sandbox: 404; no policy: 404; neither credential: 401.
function P:egress_access(id, token, by_key, ctx)
    local rec = self.records[id]
    if not rec then
        return nil, errors.not_found(id)
    end
    local want = rec.egress_token
    local ok = type(token) == "string" and type(want) == "string" and same_secret(token, want)
    if not ok and by_key and self:visible(rec, ctx) then
        ok = true
    end
    if not ok then
        if by_key then
            return nil, errors.not_found(id) -- a key of another tenant: the sandbox does not exist for it
        end
        return nil, unauthorized(id)
    end
    if not rec.network_policy then
        return nil, no_policy(id)
    end
    return rec
end

--- GET /policy: the PolicyStatusResponse of the sandbox's current policy.
function P:egress_policy(id, token, by_key, ctx)
    local rec, err = self:egress_access(id, token, by_key, ctx)
    if not rec then
        return nil, err
    end
    return netpolicy.status(rec.network_policy)
end

-- Changes the policy of sandbox `id` to change(current) -> new policy | nil, err (| policy, reason: no
-- change needed). Under the sandbox's lock, after provisioning: the runtime puts it in force, then the
-- record takes it.
function P:change_egress(id, token, by_key, ctx, change)
    local _, aerr = self:egress_access(id, token, by_key, ctx)
    if aerr then
        return nil, aerr
    end
    return self:with_sandbox(id, true, function(cur)
        if not cur.network_policy then
            return nil, no_policy(id)
        end
        if not LIVE[cur.state] or not cur.handle then
            return nil, self.not_running_error()
        end
        local policy, reason = change(netpolicy.copy(cur.network_policy))
        if not policy then
            return nil, reason
        end
        if reason then -- nothing to change (DELETE of targets no rule names)
            return netpolicy.status(policy, reason)
        end
        local ok, err = self:require_runtime()
        if not ok then
            return nil, err
        end
        ok, err = self.runtime:set_network_policy(cur, policy)
        if not ok then
            self.log.error("network policy not applied", { sandbox_id = id,
                error = tostring(type(err) == "table" and err.message or err) })
            if type(err) == "table" and err.kind == "unavailable" then
                return nil, self:runtime_error(err, "SANDBOX::NETWORK_POLICY_APPLY_FAILED", "apply")
            end
            return nil, errors.new(500, "SANDBOX::NETWORK_POLICY_APPLY_FAILED", string.format(
                "Failed to apply the network policy of sandbox %s: %s", id,
                tostring(type(err) == "table" and err.message or err)))
        end
        local rec = self:copy(self.records[id] or cur)
        rec.network_policy = policy
        self:commit_fact(rec) -- in force now: memory says so even if the store cannot yet (retried)
        self.log.info("network policy changed", { sandbox_id = id, mode = netpolicy.mode(policy),
            rules = #policy.egress })
        return netpolicy.status(policy)
    end)
end

--- PATCH /policy: `rules` (normalised, netpolicy.validate_rules) merged in front of the current rules.
function P:patch_egress(id, rules, token, by_key, ctx)
    return self:change_egress(id, token, by_key, ctx, function(current)
        return netpolicy.patch(current, rules)
    end)
end

--- DELETE /policy: the rules naming `targets` (normalised) removed; targets no rule names are ignored.
function P:remove_egress(id, targets, token, by_key, ctx)
    return self:change_egress(id, token, by_key, ctx, function(current)
        local policy, removed = netpolicy.remove(current, targets)
        if removed == 0 then
            return current, "no matching targets found"
        end
        return policy
    end)
end

--- After the start-up reconciliation: hands every live sandbox's stored policy to the runtime again (in
--- background tasks; a failure is logged, the stored policy stays and is applied at the next change).
function P:reapply_network_policies()
    if not self.runtime.set_network_policy then
        return
    end
    for id, rec in pairs(self.records) do
        if rec.network_policy and rec.handle and LIVE[rec.state] and not self.provisioning[id] then
            self.core.spawn(function()
                self:with_sandbox(id, false, function(cur)
                    if not cur.network_policy or not cur.handle or not LIVE[cur.state] then
                        return true
                    end
                    local ok, err = self.runtime:set_network_policy(cur, cur.network_policy)
                    if ok then
                        self.log.info("network policy restored", { sandbox_id = id,
                            mode = netpolicy.mode(cur.network_policy), rules = #(cur.network_policy.egress or {}) })
                    else
                        self.log.error("network policy not restored", { sandbox_id = id,
                            error = tostring(type(err) == "table" and err.message or err) })
                    end
                    return ok
                end)
            end)
        end
    end
end

return P
