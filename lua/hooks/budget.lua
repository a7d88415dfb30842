-- Runs one hook function under an instruction budget and a memory budget.
--
-- The budget is a count hook (`debug.sethook(fn, "", STEP)`) set on the *current* thread, the request's own
-- task, never on a coroutine of our own: core functions that yield (opensandbox.http) must be called from
-- the task's thread (core/README.md, "Tasks"). A hook set by someone else on that thread (a debugger, a
-- coverage tool) is put back when the call ends, however it ends.
--
-- Every STEP instructions the count hook adds STEP to the instructions used and compares the Lua heap
-- (collectgarbage("count")) with the baseline taken at the start; past either limit it raises a budget
-- error. Before calling the memory budget exceeded it runs one full collection, so garbage does not count.
-- A budget error is a table with its own metatable, so `pcall`/`xpcall` inside hook code (the wrapped ones
-- of lua/hooks/env.lua) re-raise it instead of swallowing it, and once a budget is exceeded every later
-- check raises again.
--
-- Limits of the mechanism: the check runs between VM instructions, so one C call that allocates a lot at
-- once (a huge string.rep through a string's method) is not interrupted; the string.rep of the hook
-- environment is capped for that reason. Time spent waiting in a yielding call does not count, and the
-- memory baseline is taken again after such a call (other tasks allocate meanwhile).
local M = {}

M.STEP = 200 -- instructions between two checks
M.DEFAULT_INSTRUCTIONS = 10000000
M.DEFAULT_MEMORY_KB = 64 * 1024

local budget_mt = {
    __tostring = function(e)
        return e.message
    end,
}

--- Whether `e` is a budget error (raised by the count hook).
function M.is_budget_error(e)
    return getmetatable(e) == budget_mt
end

local function budget_error(message)
    return setmetatable({ message = message }, budget_mt)
end

-- The budget state of the call running on each thread (weak keys: a thread that is gone drops it).
local running = setmetatable({}, { __mode = "k" })

--- Takes the memory baseline again for the call running on the current thread (after a yield).
function M.rebase()
    local st = running[coroutine.running()]
    if st then
        st.base_kb = collectgarbage("count")
    end
end

local function restore(fn, mask, count)
    if type(fn) == "function" then
        debug.sethook(fn, mask or "", count or 0)
    else
        debug.sethook()
    end
end

-- The count hook: one function for every call; the state is that of the call running on this thread.
local function count_hook()
    local st = running[coroutine.running()]
    if not st then
        return
    end
    if st.tripped then
        error(st.tripped, 0)
    end
    st.used = st.used + M.STEP
    if st.used > st.max_instr then
        st.tripped = budget_error(string.format("instruction budget exceeded (%d instructions)", st.max_instr))
        error(st.tripped, 0)
    end
    if collectgarbage("count") - st.base_kb > st.max_kb then
        collectgarbage("collect")
        if collectgarbage("count") - st.base_kb > st.max_kb then
            st.tripped = budget_error(string.format("memory budget exceeded (%d KB)", st.max_kb))
            error(st.tripped, 0)
        end
    end
end

-- Ends a call: puts the previous debug hook and budget state back, and shapes the results.
local function finish(co, outer, st, prev_fn, prev_mask, prev_count, ok, ...)
    restore(prev_fn, prev_mask, prev_count)
    running[co] = outer
    if ok and not st.tripped then
        return true, ...
    end
    local e = ...
    if st.tripped then
        -- Whatever the hook turned the error into, the budget is the cause.
        e = st.tripped
    end
    if getmetatable(e) == budget_mt then
        collectgarbage("collect")
        return false, e.message
    end
    if type(e) == "table" and type(e.message) == "string" then
        return false, e.message
    end
    return false, tostring(e)
end

--- Calls fn(...) on the current thread with limits = { instructions = n, memory_kb = n }.
--- Returns true, results... or false, message (a string; "instruction budget exceeded" and
--- "memory budget exceeded" for the budgets, the error text otherwise).
function M.call(limits, fn, ...)
    local co = coroutine.running()
    local outer = running[co]
    local st = {
        used = 0,
        base_kb = collectgarbage("count"),
        max_instr = limits.instructions or M.DEFAULT_INSTRUCTIONS,
        max_kb = limits.memory_kb or M.DEFAULT_MEMORY_KB,
        tripped = nil,
    }
    local prev_fn, prev_mask, prev_count = debug.gethook()
    running[co] = st
    debug.sethook(count_hook, "", M.STEP)
    return finish(co, outer, st, prev_fn, prev_mask, prev_count, pcall(fn, ...))
end

return M
