-- openapi.json and the router's route table must describe the same routes (both directions).
local docs = require("api.docs")
local json = require("common.json")
local router = require("api.router")

local function load_doc()
    local f = assert(io.open(docs.default_openapi_path(), "rb"))
    local doc = assert(json.decode(f:read("a")))
    f:close()
    return doc
end

-- "/docs/{file*}" in the table is "/docs/{file}" in OpenAPI (which has no multi-segment parameters).
local function openapi_path(pattern)
    return (pattern:gsub("{([%w_]+)%*}", "{%1}"))
end

local METHODS = { get = true, head = true, post = true, put = true, patch = true, delete = true, options = true }

describe("openapi.json", function()
    local doc = load_doc()

    it("is OpenAPI 3.1 with the API-key scheme", function()
        assert.matches("^3%.1%.", doc.openapi)
        assert.same({ type = "apiKey", ["in"] = "header", name = "OPEN-SANDBOX-API-KEY" }, {
            type = doc.components.securitySchemes.apiKey.type,
            ["in"] = doc.components.securitySchemes.apiKey["in"],
            name = doc.components.securitySchemes.apiKey.name,
        })
        assert.same({ "code", "message" }, doc.components.schemas.ErrorResponse.required)
    end)

    it("documents every route of the table, with its summary and auth", function()
        for _, r in ipairs(router.routes()) do
            local item = doc.paths[openapi_path(r.pattern)]
            assert.is_table(item, "missing path " .. r.pattern)
            local op = item[r.method:lower()]
            assert.is_table(op, "missing operation " .. r.method .. " " .. r.pattern)
            assert.equal(r.summary, op.summary, r.method .. " " .. r.pattern)
            local public = type(op.security) == "table" and #op.security == 0
            local what = "security of " .. r.method .. " " .. r.pattern
            assert.equal(r.exempt or r.handler == "proxy.forward", public, what)
        end
    end)

    it("documents nothing that the table does not route", function()
        local table_ops = {}
        for _, r in ipairs(router.routes()) do
            table_ops[r.method .. " " .. openapi_path(r.pattern)] = true
        end
        for path, item in pairs(doc.paths) do
            for method in pairs(item) do
                if METHODS[method] then
                    assert.is_true(table_ops[method:upper() .. " " .. path] ~= nil,
                        "openapi.json documents " .. method:upper() .. " " .. path .. " which is not routed")
                end
            end
        end
    end)

    it("resolves every $ref", function()
        local function walk(v)
            if type(v) ~= "table" then
                return
            end
            for k, x in pairs(v) do
                if k == "$ref" then
                    local cur = doc
                    for part in x:gsub("^#/", ""):gmatch("[^/]+") do
                        cur = cur[part]
                        assert.is_not_nil(cur, "dangling " .. x)
                    end
                else
                    walk(x)
                end
            end
        end
        walk(doc)
    end)

    it("names every error code the server sends (Lua sources, shipped hooks and the C core)", function()
        local f = assert(io.open(docs.default_openapi_path(), "rb"))
        local text = f:read("a")
        f:close()
        local files = {}
        for _, cmd in ipairs({ "find lua hooks -name '*.lua'", "find core -name '*.c'" }) do
            local p = assert(io.popen(cmd))
            for line in p:lines() do
                files[#files + 1] = line
            end
            p:close()
        end
        assert.is_true(#files > 20, "sources not found (run from the repository root)")
        local seen = {}
        for _, path in ipairs(files) do
            local src = assert(io.open(path, "rb")):read("a")
            for code in src:gmatch('"(%u+::[%u_]+)"') do
                seen[code] = path
            end
        end
        seen.MISSING_API_KEY, seen.INVALID_API_KEY = "middleware", "middleware"
        local n = 0
        for code, path in pairs(seen) do
            n = n + 1
            assert.is_truthy(text:find("`" .. code .. "`", 1, true), code .. " (from " .. path .. ") is not documented")
        end
        assert.is_true(n >= 25, "codes found: " .. n)
    end)
end)
