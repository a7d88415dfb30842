-- The snapshot routes (upstream sandbox-lifecycle.yml, "Snapshots"): POST /sandboxes/{id}/snapshots,
-- GET /snapshots, GET and DELETE /snapshots/{snapshotId}. Each handler parses, validates with
-- sandbox.validate, calls the lifecycle service (sandbox/snapshots.lua) and shapes the response.
local parse = require("api.parse")
local respond = require("api.respond")

local M = {}

--- The handlers, bound to `deps` (service, and optionally validate for tests).
function M.new(deps)
    local service = assert(deps.service, "api: deps.service is required")
    local validate = deps.validate or require("sandbox.validate")
    local h = {}

    function h.create(ctx)
        -- the body is optional: none (or only whitespace) is {}
        local raw, body = ctx.req.body, nil
        if type(raw) == "string" and raw:find("%S") then
            local perr
            body, perr = parse.json_object(raw)
            if not body then
                return nil, perr
            end
        end
        local opts, err = validate.snapshot_create(body)
        if not opts then
            return nil, err
        end
        local snap
        snap, err = service:create_snapshot(ctx.params.id, opts, ctx.svc)
        if not snap then
            return nil, err
        end
        return respond.json(202, snap, { Location = "/v1/snapshots/" .. tostring(snap.id) })
    end

    function h.list(ctx)
        local filter, err = validate.snapshot_list_query(ctx.query)
        if not filter then
            return nil, err
        end
        return respond.json(200, service:list_snapshots(filter, ctx.svc))
    end

    function h.get(ctx)
        local snap, err = service:get_snapshot(ctx.params.id, ctx.svc)
        if not snap then
            return nil, err
        end
        return respond.json(200, snap)
    end

    function h.delete(ctx)
        local ok, err = service:delete_snapshot(ctx.params.id, ctx.svc)
        if not ok then
            return nil, err
        end
        return respond.empty(204)
    end

    return h
end

return M
