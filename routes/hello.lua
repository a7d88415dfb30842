-- A sample operator route module (README.md, "Operator routes"). Copy it into the directory named by
-- server.routes_dir; it is loaded at startup and reloaded on SIGHUP. Each route gets the API's
-- authentication (OPEN-SANDBOX-API-KEY when keys are configured), X-Request-ID and error envelope.
local errors = require("common.errors")

return {
    routes = {
        -- GET /hello/{name}: a JSON greeting
        {
            method = "GET",
            path = "/hello/{name}",
            summary = "Say hello",
            handler = function(ctx)
                if #ctx.params.name > 64 then
                    return nil, errors.invalid("name: at most 64 characters")
                end
                return { status = 200, json = { hello = ctx.params.name, requestId = ctx.request_id } }
            end,
        },
        -- GET /sandbox-count: how many sandboxes the caller can see, through the lifecycle service
        {
            method = "GET",
            path = "/sandbox-count",
            summary = "Count the caller's sandboxes",
            handler = function(ctx)
                local page, err = ctx.service:list({ page = 1, page_size = 1 }, ctx.svc)
                if not page then
                    return nil, err
                end
                return { status = 200, json = { count = page.pagination.totalItems } }
            end,
        },
    },
}
