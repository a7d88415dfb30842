-- The API documentation routes: GET /openapi.json, the Swagger UI page (/docs), the ReDoc page (/redoc) and
-- their assets (/docs/<file>).
--
-- The pages are ours; the JavaScript and CSS come from the npm packages swagger-ui-dist and redoc, copied at
-- build time by scripts/docs-assets.sh into a directory (config `server.docs_assets_dir`, default
-- `<root>/docs-assets` in an install (`cmake --install`, the .deb), else `<root>/build/docs-assets` in a source
-- tree). Nothing is loaded from a CDN. Files are read on first use and kept in memory.
-- Only the names in ASSETS are ever served, so no request path reaches the file system.
local errors = require("common.errors")

local M = {}

local JS = "application/javascript; charset=utf-8"
local CSS = "text/css; charset=utf-8"
local HTML = "text/html; charset=utf-8"

M.ASSETS = {
    ["swagger-ui-bundle.js"] = JS,
    ["swagger-ui-standalone-preset.js"] = JS,
    ["swagger-ui.css"] = CSS,
    ["redoc.standalone.js"] = JS,
}

M.SWAGGER_HTML = [[<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>OpenSandbox Server - Swagger UI</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-ui-standalone-preset.js"></script>
<script>
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
</script>
</body>
</html>
]]

M.REDOC_HTML = [[<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>OpenSandbox Server - ReDoc</title>
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/docs/redoc.standalone.js"></script>
</body>
</html>
]]

local function here()
    local src = debug.getinfo(1, "S").source
    local dir = src:sub(1, 1) == "@" and src:sub(2):match("^(.*)/[^/]*$")
    return dir or "."
end

local read_file = require("common.files").read

local function not_found()
    return errors.new(404, "GENERAL::NOT_FOUND", "Not Found")
end

--- The default location of openapi.json: beside this module.
function M.default_openapi_path()
    return here() .. "/openapi.json"
end

--- The default assets directory, root being the install root (default: two levels above this module's dir):
--- `<root>/docs-assets` when it holds the assets (an installed layout), else `<root>/build/docs-assets` (a
--- source tree, where scripts/build.sh puts them). Decided once, when the handlers are made.
function M.default_assets_dir(root)
    root = root or (here() .. "/../..")
    local installed = root .. "/docs-assets"
    local f = io.open(installed .. "/swagger-ui-bundle.js", "rb")
    if f then
        f:close()
        return installed
    end
    return root .. "/build/docs-assets"
end

--- Handlers. deps: config, log, and optionally openapi_path, docs_dir, root (the install root).
function M.new(deps)
    local server = (deps.config and deps.config.server) or {}
    local openapi_path = deps.openapi_path or M.default_openapi_path()
    local assets_dir = deps.docs_dir or server.docs_assets_dir or M.default_assets_dir(deps.root)
    local log = deps.log
    local cache = {}
    local h = {}

    -- Returns the cached content of a file, reading it the first time; logs a missing file once.
    local function cached(path)
        local entry = cache[path]
        if not entry then
            local data, err = read_file(path)
            entry = { data = data }
            cache[path] = entry
            if not data and log then
                log.warn("documentation file unavailable", { path = path, err = tostring(err) })
            end
        end
        return entry.data
    end

    function h.openapi()
        local data = cached(openapi_path)
        if not data then
            return nil, errors.internal()
        end
        return { status = 200, body = data, content_type = "application/json" }
    end

    function h.swagger()
        return { status = 200, body = M.SWAGGER_HTML, content_type = HTML }
    end

    function h.redoc()
        return { status = 200, body = M.REDOC_HTML, content_type = HTML }
    end

    --- /docs/<file>: "" and "index.html" are the Swagger page; other names must be in ASSETS.
    function h.asset(ctx)
        local name = ctx.params.file
        if name == "" or name == "index.html" then
            return h.swagger()
        end
        local ctype = M.ASSETS[name]
        local data = ctype and cached(assets_dir .. "/" .. name)
        if not data then
            return nil, not_found()
        end
        return {
            status = 200,
            body = data,
            content_type = ctype,
            headers = { ["Cache-Control"] = "public, max-age=86400" },
        }
    end

    return h
end

return M
