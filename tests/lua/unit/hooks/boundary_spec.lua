-- The boundary between hook code and the server (lua/hooks/README.md): raw copies of what hooks return,
-- error objects read without metamethods, the environment's setmetatable/getmetatable/os, and the bounds
-- that do not need core.hookguard (string.rep's count, json.encode's size). The C guards (allocator,
-- patterns, deadline) run in the server only: tests/lua/integration/hooks/hostile_spec.lua.
local S = dofile("tests/lua/unit/hooks/support.lua")
local hooks = require("hooks")
local budget = require("hooks.budget")
local json = require("common.json")

local CTX = { request_id = "req-1", principal = "team-a", admin = false, host = "h", remote_addr = "192.0.2.1" }

describe("budget.raw_copy", function()
    it("copies plain values deeply, keeping the json.array tag and json.null", function()
        local src = { a = "x", n = 1.5, b = true, list = json.array({}), null = json.null, t = { { 1 } } }
        local out = budget.raw_copy(src)
        assert.same(src, out)
        assert.are_not.equal(src.t, out.t)
        assert.are.equal(getmetatable(src.list), getmetatable(out.list))
        assert.are.equal("[]", json.encode(out.list))
        assert.are.equal("null", json.encode(out.null))
    end)

    it("refuses a table with a metatable without running any of its metamethods", function()
        local ran = 0
        local function count()
            ran = ran + 1
            return "x"
        end
        local evil = setmetatable({ a = 1 }, { __index = count, __pairs = count, __len = count, __tostring = count })
        local ok, err = pcall(budget.raw_copy, { inner = evil })
        assert.is_false(ok)
        assert.matches("has a metatable", err)
        ok, err = pcall(budget.raw_copy, setmetatable({}, { __metatable = false }))
        assert.is_false(ok)
        assert.matches("has a metatable", err)
        assert.are.equal(0, ran)
    end)

    it("refuses functions (but at the top level of a hook file's table), deep nesting and odd keys", function()
        assert.has_error(function()
            budget.raw_copy({ f = print })
        end, "a hook may return only nil, booleans, numbers, strings and tables (got a function)")
        assert.are.equal(print, budget.raw_copy({ f = print }, { functions = true }).f)
        assert.has_error(function()
            budget.raw_copy({ t = { f = print } }, { functions = true })
        end)
        local t = {}
        t.t = t
        assert.has_error(function()
            budget.raw_copy(t)
        end, "a value returned by a hook is nested more than 32 levels deep")
        assert.has_error(function()
            budget.raw_copy({ [{}] = 1 })
        end, "a table returned by a hook has a key of type table")
    end)
end)

describe("budget.error_text", function()
    it("reads a string or a raw message field, never __index or __tostring", function()
        local ran = false
        local function mark()
            ran = true
            return "from a metamethod"
        end
        assert.are.equal("plain", budget.error_text("plain"))
        assert.are.equal("raw", budget.error_text(setmetatable({ message = "raw" }, { __index = mark })))
        assert.are.equal("the hook raised an error value of type table",
            budget.error_text(setmetatable({}, { __index = mark, __tostring = mark })))
        assert.are.equal("the hook raised an error value of type nil", budget.error_text(nil))
        assert.is_false(ran)
        local long = budget.error_text(("x"):rep(100000))
        assert.are.equal(budget.MAX_ERROR + #"...(cut)", #long)
    end)
end)

describe("hooks at the boundary", function()
    local dir
    after_each(function()
        if dir then
            S.rmdir(dir)
            dir = nil
        end
    end)

    local function new(files)
        local h, err
        h, err = hooks.new({ dir = S.dir(files), log = S.log() })
        dir = h and h.dir
        assert.is_table(h, err)
        return h
    end

    local function fails(body, pattern)
        local h = new({ ["x.lua"] = S.hook("x", 1, "before_create = function(ctx, spec)\n" .. body .. "\nend,") })
        local out, err = h:before_create(CTX, S.spec())
        assert.is_nil(out)
        assert.are.equal(500, err.status)
        assert.are.equal("HOOK::FAILED", err.code)
        assert.matches(pattern, err.message)
        S.rmdir(dir)
        dir = nil
    end

    it("fails a hook whose result, rejection or changed spec carries metamethods", function()
        fails("return setmetatable({}, { __index = function() error('ran') end })", "has a metatable")
        fails("setmetatable(spec, { __index = function() error('ran') end })", "has a metatable")
        fails("return nil, setmetatable({}, { __index = function() error('ran') end })", "has a metatable")
        fails("error(setmetatable({}, { __tostring = function() error('ran') end }))",
            "failed in before_create: the hook raised an error value of type table$")
    end)

    it("refuses __gc, __close and weak keys in setmetatable, allows weak values", function()
        fails("setmetatable({}, { __gc = function() end })", "__gc is not allowed in hooks")
        fails("setmetatable({}, { __close = function() end })", "__close is not allowed in hooks")
        fails("setmetatable({}, { __mode = 'k' })", "weak keys is not allowed")
        fails("setmetatable({}, { __mode = 'v' }) error('weak values are fine')", "weak values are fine")
    end)

    it("has no os.getenv; getmetatable shows only the hook's own metatables", function()
        fails("error(tostring(os.getenv) .. ' ' .. tostring(getmetatable('')) .. ' '"
            .. " .. tostring(getmetatable(opensandbox.json.array())))", "nil nil nil")
        fails("local mt = {} error(tostring(getmetatable(setmetatable({}, mt)) == mt))", "true")
    end)

    it("bounds string.rep also for an empty string, and json.encode by the size of its result", function()
        fails("string.rep('', 2^53)", "string.rep: 9007199254740992 repetitions are more than the hook limit")
        fails("local s = ('x'):rep(2^20) local t = {} for i = 1, 100 do t[i] = s end opensandbox.json.encode(t)",
            "json.encode: the result could exceed the hook limit")
    end)

    it("gives each hook its own copy of the context and keeps M.config on the hook's own table", function()
        local h = new({
            ["a.lua"] = S.hook("a", 2, "before_create = function(ctx) ctx.principal = 'mallory' end,"),
            ["b.lua"] = [[
local M = { name = "b", priority = 1 }
function M.before_create(ctx, spec)
    spec.metadata.seen = ctx.principal .. "." .. tostring(M.config.word)
    return spec
end
return M
]],
        })
        h.config = { b = { word = "w" } }
        assert(h:reload())
        local out = assert(h:before_create(CTX, S.spec()))
        assert.are.equal("team-a.w", out.metadata.seen)
    end)

    it("cuts hook log lines at MAX_LOG bytes and MAX_LOG_LINES per call", function()
        local log = S.log()
        local h = assert(hooks.new({ log = log, dir = S.dir({ ["l.lua"] = S.hook("l", 1, [[before_create = function()
            for i = 1, 1000 do opensandbox.log.info(("y"):rep(10000), { big = ("z"):rep(10000) }) end
        end,]]) }) }))
        dir = h.dir
        assert(h:before_create(CTX, S.spec()))
        local n, last = 0, nil
        for _, l in ipairs(log.lines) do
            if l.fields and l.fields.hook == "l" then
                n = n + 1
                last = l
                assert.is_true(#l.msg <= 4096 + 8 and #(l.fields.big or "") <= 4096 + 8)
            end
        end
        assert.are.equal(200, n)
        assert.are.equal("hook log lines beyond this one are dropped in this call", last.msg)
    end)

    it("refuses a hook file whose table has a metatable", function()
        local h, err = hooks.new({ dir = S.dir({ ["m.lua"] = 'return setmetatable({ name = "m", priority = 1 }, '
            .. "{ __index = function() error('ran') end })" }), log = S.log() })
        assert.is_nil(h)
        assert.matches("^m.lua: a table returned by a hook has a metatable", err)
    end)
end)
