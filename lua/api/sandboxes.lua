-- The sandbox lifecycle routes (API.md §2.1-§2.9). Each handler parses the request, validates it with
-- sandbox.validate, calls the lifecycle service and shapes the response; nothing here knows about Docker.
--
-- Handlers take the request context built in lua/api/init.lua:
--   ctx.req, ctx.params (decoded path parameters), ctx.query (name -> array of decoded values),
--   ctx.svc (the context handed to the service: request_id, principal, host, remote_addr)
-- and return a response table (lua/api/respond.lua) or nil and an error object. Service calls may yield.
local parse = require("api.parse")
local respond = require("api.respond")

local M = {}

--- The handlers, bound to `deps` (service, config, now, and optionally validate and ncpu for tests).
--- `deps.ncpu` is the daemon's CPU count (a number, or a function returning one) used by resource checks.
function M.new(deps)
    local service = assert(deps.service, "api: deps.service is required")
    local validate = deps.validate or require("sandbox.validate")
    local config = deps.config or {}
    local now = deps.now or os.time
    local h = {}

    local function ncpu()
        local n = deps.ncpu
        if type(n) == "function" then
            n = n()
        end
        return math.tointeger(n)
    end

    function h.create(ctx)
        local body, err = parse.json_object(ctx.req.body)
        if not body then
            return nil, err
        end
        local server = config.server or {}
        local spec
        spec, err = validate.create(body, {
            max_timeout = server.max_sandbox_timeout_seconds or nil,
            ncpu = ncpu(),
            now_us = math.floor(now() * 1000000),
            env_order = parse.member_key_order(ctx.req.body, "env"), -- §8.2: Env in request order
        })
        if not spec then
            return nil, err
        end
        local created
        created, err = service:create(spec, ctx.svc)
        if not created then
            return nil, err
        end
        return respond.json(202, created, { Location = "/v1/sandboxes/" .. tostring(created.id) })
    end

    function h.list(ctx)
        local key = service.cached_list and service.list_key(ctx, ctx.req.query)
        if key then -- the same page, unchanged since a client last read it (views.lua)
            local body = service:cached_list(key)
            if body then
                return { status = 200, body = body, content_type = respond.JSON }
            end
        end
        local filter, err = validate.list_query(ctx.query)
        if not filter then
            return nil, err
        end
        local page
        if service.list_json then -- the service can hand out the encoded page (cached per record)
            -- list_json only reads the caller's principal and admin flag, which ctx has: no ctx.svc
            page, err = service:list_json(filter, ctx, key)
            if not page then
                return nil, err
            end
            return { status = 200, body = page, content_type = respond.JSON }
        end
        page, err = service:list(filter, ctx.svc)
        if not page then
            return nil, err
        end
        return respond.json(200, page)
    end

    function h.get(ctx)
        if service.get_json then
            -- get_json only reads the caller's principal and admin flag, which ctx has: no ctx.svc
            local text, err = service:get_json(ctx.params.id, ctx)
            if not text then
                return nil, err
            end
            return { status = 200, body = text, content_type = respond.JSON }
        end
        local sandbox, err = service:get(ctx.params.id, ctx.svc)
        if not sandbox then
            return nil, err
        end
        return respond.json(200, sandbox)
    end

    -- delete (204), pause and resume (202): no body either way.
    local function no_body(method, status)
        return function(ctx)
            local ok, err = service[method](service, ctx.params.id, ctx.svc)
            if not ok then
                return nil, err
            end
            return respond.empty(status)
        end
    end
    h.delete = no_body("delete", 204)
    h.pause = no_body("pause", 202)
    h.resume = no_body("resume", 202)

    function h.renew(ctx)
        local body, err = parse.json_object(ctx.req.body)
        if not body then
            return nil, err
        end
        local expires_at_us
        expires_at_us, err = validate.renew(body)
        if not expires_at_us then
            return nil, err
        end
        local res
        res, err = service:renew(ctx.params.id, expires_at_us, ctx.svc)
        if not res then
            return nil, err
        end
        return respond.json(200, res)
    end

    function h.endpoint(ctx)
        local ep, err = validate.endpoint(ctx.params.port, ctx.query)
        if not ep then
            return nil, err
        end
        local res
        res, err = service:endpoint(ctx.params.id, ep.port, ep.use_server_proxy, ctx.svc)
        if not res then
            return nil, err
        end
        return respond.json(200, res)
    end

    function h.patch_metadata(ctx)
        local body, err = parse.json_object(ctx.req.body)
        if not body then
            return nil, err
        end
        local patch
        patch, err = validate.metadata_patch(body)
        if not patch then
            return nil, err
        end
        local sandbox
        sandbox, err = service:patch_metadata(ctx.params.id, patch, ctx.svc)
        if not sandbox then
            return nil, err
        end
        return respond.json(200, sandbox)
    end

    return h
end

return M
