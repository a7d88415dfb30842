-- Unit spec of common.strings.
local strings = require("common.strings")

describe("common.strings.trim", function()
    it("removes white space at both ends only", function()
        assert.equal("a b", strings.trim(" \t a b \r\n"))
        assert.equal("", strings.trim("   "))
        assert.equal("", strings.trim(""))
        assert.equal("x", strings.trim("x"))
    end)

    it("keeps a long run of inner spaces (the input on which a pattern took more than 20 s)", function()
        local s = "x" .. string.rep(" ", 300000) .. "y"
        assert.equal(s, strings.trim(s))
        assert.equal(s, strings.trim("  " .. s .. "  "))
    end)
end)
