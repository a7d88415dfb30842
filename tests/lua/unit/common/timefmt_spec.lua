local timefmt = require("common.timefmt")

describe("common.timefmt", function()
    local T2026 = 1767225600 * 1000000 -- 2026-01-01T00:00:00Z

    describe("format", function()
        it("writes RFC 3339 UTC with 6 fractional digits and Z", function()
            assert.equal("1970-01-01T00:00:00.000000Z", timefmt.format(0))
            assert.equal("2026-01-01T00:00:00.123456Z", timefmt.format(T2026 + 123456))
            assert.equal("2024-02-29T12:34:56.000001Z", timefmt.format(1709210096000001))
        end)

        it("formats MAX_US as 9999-12-31T23:59:59Z", function()
            assert.equal(253402300799000000, timefmt.MAX_US)
            assert.equal("9999-12-31T23:59:59.000000Z", timefmt.format(timefmt.MAX_US))
        end)

        it("handles times before the epoch", function()
            assert.equal("1969-12-31T23:59:59.999999Z", timefmt.format(-1))
        end)

        it("rejects non-integers (programmer error)", function()
            assert.has_error(function()
                timefmt.format(1.5)
            end)
        end)
    end)

    describe("parse", function()
        it("accepts T, t and space separators and Z/z or no offset as UTC", function()
            for _, s in ipairs({ "2026-01-01T00:00:00Z", "2026-01-01t00:00:00z", "2026-01-01 00:00:00",
                "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00-00:00" }) do
                assert.equal(T2026, timefmt.parse(s), s)
            end
        end)

        it("converts offsets to UTC", function()
            assert.equal(T2026, timefmt.parse("2026-01-01T01:30:00+01:30"))
            assert.equal(T2026, timefmt.parse("2025-12-31T19:00:00-05:00"))
            assert.equal(T2026, timefmt.parse("2026-01-01T23:59:00+23:59"))
            assert.equal(T2026 + 250000, timefmt.parse("2025-12-31T14:00:00.25-10:00"))
        end)

        it("takes 1 to 9 fractional digits and truncates to microseconds", function()
            assert.equal(T2026 + 500000, timefmt.parse("2026-01-01T00:00:00.5Z"))
            assert.equal(T2026 + 123456, timefmt.parse("2026-01-01T00:00:00.123456Z"))
            assert.equal(T2026 + 123456, timefmt.parse("2026-01-01T00:00:00.123456999Z"))
            assert.equal(T2026 + 1, timefmt.parse("2026-01-01T00:00:00.000001+00:00"))
            assert.is_nil(timefmt.parse("2026-01-01T00:00:00.1234567890Z"))
            assert.is_nil(timefmt.parse("2026-01-01T00:00:00.Z"))
        end)

        it("round-trips with format", function()
            for _, us in ipairs({ 0, T2026 + 987654, timefmt.MAX_US, 951782400000000 }) do
                assert.equal(us, timefmt.parse(timefmt.format(us)))
            end
        end)

        it("knows leap years", function()
            assert.equal(951782400000000, timefmt.parse("2000-02-29T00:00:00Z"))
            assert.is_not_nil(timefmt.parse("2024-02-29T00:00:00Z"))
            assert.is_nil(timefmt.parse("2023-02-29T00:00:00Z"))
            assert.is_nil(timefmt.parse("1900-02-29T00:00:00Z"))
        end)

        it("rejects invalid dates and times", function()
            for _, s in ipairs({
                "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-04-31T00:00:00Z",
                "2026-01-00T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z", "2026-01-01T23:59:60Z",
                "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+01:60", "0000-01-01T00:00:00Z",
            }) do
                assert.is_nil(timefmt.parse(s), s)
            end
        end)

        it("rejects other shapes", function()
            for _, s in ipairs({
                "", "2026-01-01", "2026-01-01T00:00Z", "2026-1-01T00:00:00Z", "2026-01-01T00:00:00+0100",
                "2026-01-01T00:00:00+01", "2026-01-01T00:00:00 Z", " 2026-01-01T00:00:00Z", "2026-01-01T00:00:00ZZ",
                "2026-01-01X00:00:00Z", "1767225600", "2026-01-01T00:00:00UTC",
            }) do
                assert.is_nil(timefmt.parse(s), s)
            end
            assert.is_nil(timefmt.parse(nil))
            assert.is_nil(timefmt.parse(1767225600))
        end)

        it("rejects instants past year 9999 after conversion", function()
            assert.is_not_nil(timefmt.parse("9999-12-31T23:59:59.999999Z"))
            assert.is_nil(timefmt.parse("9999-12-31T23:59:59-01:00"))
        end)
    end)
end)
