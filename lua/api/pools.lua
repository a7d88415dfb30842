-- The pool routes (upstream sandbox-lifecycle.yml "Pools"): POST /pools, GET /pools, GET / PUT / DELETE
-- /pools/{name}. Each handler parses the body, calls the lifecycle service (sandbox/pools.lua, which
-- validates with sandbox/pool_validate.lua) and shapes the response.
local parse = require("api.parse")
local respond = require("api.respond")

local M = {}

--- The handlers, bound to `deps` (service).
function M.new(deps)
    local service = assert(deps.service, "api: deps.service is required")
    local h = {}

    function h.create(ctx)
        local body, err = parse.json_object(ctx.req.body)
        if not body then
            return nil, err
        end
        local pool
        pool, err = service:create_pool(body, ctx.svc)
        if not pool then
            return nil, err
        end
        return respond.json(201, pool, { Location = "/v1/pools/" .. pool.name })
    end

    function h.list(ctx)
        return respond.json(200, service:list_pools(ctx.svc))
    end

    function h.get(ctx)
        local pool, err = service:get_pool(ctx.params.name, ctx.svc)
        if not pool then
            return nil, err
        end
        return respond.json(200, pool)
    end

    function h.update(ctx)
        local body, err = parse.json_object(ctx.req.body)
        if not body then
            return nil, err
        end
        local pool
        pool, err = service:update_pool(ctx.params.name, body, ctx.svc)
        if not pool then
            return nil, err
        end
        return respond.json(200, pool)
    end

    function h.delete(ctx)
        local ok, err = service:delete_pool(ctx.params.name, ctx.svc)
        if not ok then
            return nil, err
        end
        return respond.empty(204)
    end

    return h
end

return M
