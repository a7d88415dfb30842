local listing = require("sandbox.listing")
local validate = require("sandbox.validate")

local function rec(id, created, state, metadata)
    return { id = id, created_us = created, state = state or "Running", metadata = metadata or {} }
end

local function ids(result)
    local out = {}
    for i, r in ipairs(result.items) do
        out[i] = r.id
    end
    return out
end

local function query(params)
    return assert(validate.list_query(params))
end

describe("sandbox.listing", function()
    describe("the §5 pagination example", function()
        local records = { rec("s1", 1), rec("s2", 2), rec("s3", 3) }

        it("page 1 of 2", function()
            local r = listing.apply(records, query({ pageSize = { "2" } }))
            assert.same({ "s3", "s2" }, ids(r))
            assert.same({ page = 1, pageSize = 2, totalItems = 3, totalPages = 2, hasNextPage = true }, r.pagination)
        end)

        it("page 2 of 2", function()
            local r = listing.apply(records, query({ pageSize = { "2" }, page = { "2" } }))
            assert.same({ "s1" }, ids(r))
            assert.same({ page = 2, pageSize = 2, totalItems = 3, totalPages = 2, hasNextPage = false }, r.pagination)
        end)

        it("a page past the end is empty", function()
            local r = listing.apply(records, query({ pageSize = { "2" }, page = { "3" } }))
            assert.same({}, r.items)
            assert.same({ page = 3, pageSize = 2, totalItems = 3, totalPages = 2, hasNextPage = false }, r.pagination)
        end)
    end)

    it("reports zero pages when nothing matches", function()
        local r = listing.apply({}, query({}))
        assert.same({ page = 1, pageSize = 20, totalItems = 0, totalPages = 0, hasNextPage = false }, r.pagination)
        assert.same({}, r.items)
    end)

    it("orders by createdAt descending, then id ascending, without touching the input", function()
        local records = { rec("b", 5), rec("a", 5), rec("z", 1), rec("c", 9) }
        local r = listing.apply(records, query({}))
        assert.same({ "c", "a", "b", "z" }, ids(r))
        assert.equal("b", records[1].id)
    end)

    it("sort puts records in list order in place", function()
        local records = { rec("b", 5), rec("a", 5), rec("c", 9) }
        listing.sort(records)
        assert.same({ "c", "a", "b" }, { records[1].id, records[2].id, records[3].id })
    end)

    it("ORs states case-insensitively; unknown states match nothing", function()
        local records = { rec("r", 3, "Running"), rec("p", 2, "Paused"), rec("f", 1, "Failed"), rec("x", 0, "Pending") }
        assert.same({ "r", "p" }, ids(listing.apply(records, query({ state = { "running", "PAUSED" } }))))
        assert.same({}, ids(listing.apply(records, query({ state = { "Deleted" } }))))
        assert.same({ "r", "p", "f", "x" }, ids(listing.apply(records, query({ state = { "" } }))))
    end)

    it("ANDs metadata pairs with exact values, empty values included", function()
        local records = {
            rec("a", 4, "Running", { team = "infra", note = "" }),
            rec("b", 3, "Running", { team = "infra", note = "x" }),
            rec("c", 2, "Running", { team = "infra" }),
            rec("d", 1, "Paused", { team = "Infra", note = "" }),
        }
        assert.same({ "a" }, ids(listing.apply(records, query({ metadata = { "team=infra&note=" } }))))
        assert.same({ "a", "b", "c" }, ids(listing.apply(records, query({ metadata = { "team=infra" } }))))
        assert.same({ "a", "b", "c", "d" }, ids(listing.apply(records, query({ metadata = { "" } }))))
        assert.same({}, ids(listing.apply(records, query({ metadata = { "team=infra" }, state = { "paused" } }))))
        assert.same({ "d" }, ids(listing.apply(records, query({ metadata = { "note=" }, state = { "paused" } }))))
    end)

    it("is fast on 500 records with a metadata filter (prints timings, no assertion on time)", function()
        local records = {}
        for i = 1, 500 do
            records[i] = rec(string.format("id-%04d", i), 1767225600000000 + (i % 250) * 1000, i % 3 == 0 and "Paused"
                or "Running", { team = i % 2 == 0 and "infra" or "web", idx = tostring(i) })
        end
        local filter = query({ metadata = { "team=infra" }, state = { "running", "paused" }, pageSize = { "50" } })
        local function bench(label, input)
            local n = 200
            local t0 = os.clock()
            local r
            for _ = 1, n do
                r = listing.apply(input, filter)
            end
            print(string.format("\n  listing.apply, 500 records, metadata+state filter (%s): %.1f us per call",
                label, (os.clock() - t0) / n * 1e6))
            return r
        end
        local unsorted = bench("unsorted input", records)
        local sorted = {}
        for i, r in ipairs(records) do
            sorted[i] = r
        end
        listing.sort(sorted)
        local r = bench("input in list order", sorted)
        assert.same(ids(unsorted), ids(r))
        assert.equal(250, r.pagination.totalItems)
        assert.equal(5, r.pagination.totalPages)
    end)
end)
