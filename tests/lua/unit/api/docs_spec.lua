local F = dofile("tests/lua/unit/api/fakes.lua")
local api = require("api")
local json = require("common.json")

local function tmpdir()
    local p = os.tmpname()
    os.remove(p)
    assert(os.execute("mkdir -p " .. p))
    return p
end

local function write(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
end

describe("docs routes", function()
    local dir, deps, handler
    before_each(function()
        dir = tmpdir()
        write(dir .. "/swagger-ui.css", "body{}")
        write(dir .. "/swagger-ui-bundle.js", "var SwaggerUIBundle;")
        write(dir .. "/redoc.standalone.js", "var Redoc;")
        write(dir .. "/secret.txt", "no")
        deps = F.deps({ docs_dir = dir })
        handler = api.new(deps)
    end)
    after_each(function()
        os.execute("rm -rf " .. dir)
    end)

    local function get(path)
        return handler(F.request({ path = path }))
    end

    it("serves openapi.json without a key", function()
        local s, h, b = get("/openapi.json")
        assert.equal(200, s)
        assert.equal("application/json", h["Content-Type"])
        assert.matches("^3%.1", json.decode(b).openapi)
    end)

    it("serves the Swagger UI and ReDoc pages, which load local assets and /openapi.json", function()
        for _, p in ipairs({ "/docs", "/docs/", "/redoc" }) do
            local s, h, b = get(p)
            assert.equal(200, s, p)
            assert.equal("text/html; charset=utf-8", h["Content-Type"])
            assert.matches("/openapi.json", b, 1, true)
            assert.is_nil(b:find("https?://"), "no CDN in " .. p)
        end
        assert.matches('src="/docs/swagger-ui-bundle.js"', select(3, get("/docs")), 1, true)
        assert.matches('src="/docs/redoc.standalone.js"', select(3, get("/redoc")), 1, true)
    end)

    it("serves the known assets with their content types, cached after the first read", function()
        local s, h, b = get("/docs/swagger-ui.css")
        assert.equal(200, s)
        assert.equal("text/css; charset=utf-8", h["Content-Type"])
        assert.equal("body{}", b)
        s, h, b = get("/docs/redoc.standalone.js")
        assert.equal(200, s)
        assert.equal("application/javascript; charset=utf-8", h["Content-Type"])
        assert.equal("var Redoc;", b)
        os.remove(dir .. "/swagger-ui.css")
        local s2, _, b2 = get("/docs/swagger-ui.css")
        assert.equal(200, s2)
        assert.equal("body{}", b2)
    end)

    it("answers 404 for other names and for missing assets, and logs the missing file", function()
        for _, p in ipairs({ "/docs/secret.txt", "/docs/../secret.txt", "/docs/%2e%2e/secret.txt",
            "/docs/swagger-ui-standalone-preset.js" }) do
            local s, _, b = get(p)
            assert.equal(404, s, p)
            assert.same({ code = "GENERAL::NOT_FOUND", message = "Not Found" }, json.decode(b))
        end
        assert.equal("warn", deps.log.lines[#deps.log.lines].level)
    end)

    it("needs a key under /v1 (only the root docs paths are exempt)", function()
        assert.equal(401, (get("/v1/docs")))
        assert.equal(401, (get("/v1/openapi.json")))
    end)
end)

describe("docs assets directory", function()
    local docs = require("api.docs")
    local root
    before_each(function()
        root = tmpdir()
    end)
    after_each(function()
        os.execute("rm -rf " .. root)
    end)

    it("is <root>/build/docs-assets in a source tree", function()
        assert(os.execute("mkdir -p " .. root .. "/build/docs-assets"))
        assert.equal(root .. "/build/docs-assets", docs.default_assets_dir(root))
    end)

    it("is <root>/docs-assets in an installed layout (cmake --install, the package)", function()
        assert(os.execute("mkdir -p " .. root .. "/docs-assets"))
        write(root .. "/docs-assets/swagger-ui-bundle.js", "var SwaggerUIBundle;")
        assert.equal(root .. "/docs-assets", docs.default_assets_dir(root))
    end)

    it("serves from the installed directory when the handlers get only the root", function()
        assert(os.execute("mkdir -p " .. root .. "/docs-assets"))
        write(root .. "/docs-assets/swagger-ui-bundle.js", "var SwaggerUIBundle;")
        local deps = F.deps({ root = root })
        deps.docs_dir = nil
        local s, _, b = api.new(deps)(F.request({ path = "/docs/swagger-ui-bundle.js" }))
        assert.equal(200, s)
        assert.equal("var SwaggerUIBundle;", b)
    end)
end)
