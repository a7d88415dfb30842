-- The list operation over records (API.md §5): filter by state (OR, case-insensitive) and metadata (AND,
-- exact), order by createdAt descending then id ascending, and cut one page.
--
-- Sorting is the expensive part, so apply() first checks in one pass whether the matches are already in
-- list order and sorts only when they are not. A caller that keeps its records in that order (store:all()
-- returns them so; listing.sort() puts an array in place) pays for the filter only.
local M = {}

--- The list order: true when record `a` comes before record `b`.
function M.before(a, b)
    if a.created_us ~= b.created_us then
        return a.created_us > b.created_us
    end
    return a.id < b.id
end

local before = M.before

--- Sorts an array of records in list order, in place. Returns it.
function M.sort(records)
    table.sort(records, before)
    return records
end

-- Lowercase state names, precomputed for the six states (any other value is lowered on the fly).
local LOWER = {}
for _, s in ipairs({ "Pending", "Running", "Paused", "Stopping", "Terminated", "Failed" }) do
    LOWER[s] = s:lower()
end

local function lower(s)
    return LOWER[s] or s:lower()
end

local function matches_metadata(md, want)
    if not md then
        return false
    end
    for k, v in pairs(want) do
        if md[k] ~= v then
            return false
        end
    end
    return true
end

--- Applies a filter from validate.list_query ({states=, metadata=, page=, page_size=}) to an array of
--- records. Returns { items = <array of records>, pagination = {page, pageSize, totalItems, totalPages,
--- hasNextPage} }. The input array is not modified.
function M.apply(records, filter)
    local states, want_md = filter.states, filter.metadata
    if want_md and next(want_md) == nil then
        want_md = nil
    end
    local matches, n, sorted = {}, 0, true
    for i = 1, #records do
        local rec = records[i]
        if (not states or states[lower(rec.state)]) and (not want_md or matches_metadata(rec.metadata, want_md)) then
            n = n + 1
            matches[n] = rec
            if sorted and n > 1 and not before(matches[n - 1], rec) then
                sorted = false
            end
        end
    end
    if not sorted then
        table.sort(matches, before)
    end
    local page, size = filter.page or 1, filter.page_size or 20
    local total_pages = (n + size - 1) // size
    local items = {}
    local first = (page - 1) * size + 1
    local last = math.min(page * size, n)
    for i = first, last do
        items[#items + 1] = matches[i]
    end
    return {
        items = items,
        pagination = {
            page = page,
            pageSize = size,
            totalItems = n,
            totalPages = total_pages,
            hasNextPage = page < total_pages,
        },
    }
end

return M
