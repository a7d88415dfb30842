local gc = require("common.gc")

describe("common.gc", function()
    -- a collectgarbage stand-in: a heap size the test sets, and the mode calls it got
    local function fake(kb)
        local f = { kb = kb, calls = {} }
        f.collect = function(what)
            if what == "count" then
                return f.kb
            end
            f.calls[#f.calls + 1] = what
            return "generational"
        end
        return f
    end

    it("stays generational while the heap is small", function()
        local f = fake(1024)
        local c = gc.new({ collect = f.collect, window = 1 })
        assert.is_nil(c:check())
        f.kb = gc.HIGH_KB
        assert.is_nil(c:check())
        assert.are.same({}, f.calls)
    end)

    it("goes incremental past the high mark, and back below the low mark only", function()
        local f = fake(gc.HIGH_KB + 1)
        local logged = {}
        local c = gc.new({ collect = f.collect, window = 1, log = { info = function(msg, fields)
            logged[#logged + 1] = msg .. " " .. fields.mode
        end } })
        assert.are.equal("incremental", c:check())
        assert.is_nil(c:check()) -- (already)
        f.kb = (gc.HIGH_KB + gc.LOW_KB) / 2 -- between the marks: no flapping
        assert.is_nil(c:check())
        f.kb = gc.LOW_KB - 1
        assert.are.equal("generational", c:check())
        assert.are.same({ "incremental", "generational" }, f.calls)
        assert.are.same({ "Lua collector mode changed incremental", "Lua collector mode changed generational" },
            logged)
    end)

    it("compares the smallest count of the last checks (garbage between collections is not held)", function()
        local f = fake(gc.HIGH_KB + 1)
        local c = gc.new({ collect = f.collect, window = 3 })
        assert.is_nil(c:check()) -- (too few counts yet)
        f.kb = gc.HIGH_KB - 1 -- a collection ran: this much is held
        assert.is_nil(c:check())
        f.kb = gc.HIGH_KB * 2 -- garbage again
        assert.is_nil(c:check())
        assert.is_nil(c:check())
        assert.are.equal("generational", c.mode)
        assert.are.equal("incremental", c:check()) -- the low count left the window: above the mark throughout
        assert.are.same({}, c.seen)
    end)

    it("switches the real collector (the mode collectgarbage reports back)", function()
        local c = gc.new({ high_kb = 0, low_kb = -1, window = 1 })
        assert.are.equal("incremental", c:check())
        assert.are.equal("incremental", collectgarbage("generational")) -- (returns the previous mode)
        collectgarbage("incremental") -- (busted's own default back)
    end)

    it("checks on core.timer's every", function()
        local f = fake(gc.HIGH_KB + 1)
        local c = gc.new({ collect = f.collect, window = 1 })
        local period, tick
        local handle = gc.start(c, { every = function(s, fn)
            period, tick = s, fn
            return "handle"
        end })
        assert.are.equal("handle", handle)
        assert.are.equal(gc.PERIOD_S, period)
        tick()
        assert.are.equal("incremental", c.mode)
    end)
end)
