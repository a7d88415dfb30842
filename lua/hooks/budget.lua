-- Runs one hook function under an instruction budget, a memory budget and a time budget, and copies what
-- it returns out of its reach. The design and its reasons are in lua/hooks/README.md.
--
-- Instructions: a count hook (`debug.sethook(fn, "", STEP)`) set on the *current* thread, the request's
-- own task, never on a coroutine of our own: core functions that yield (opensandbox.http) must be called
-- from the task's thread (core/README.md, "Tasks"). A hook set by someone else on that thread (a debugger,
-- a coverage tool) is put back when the call ends, however it ends.
--
-- Memory and time (in the server): core.hookguard (core/hookguard.c) arms the Lua state's allocator for
-- the call, so the heap cannot grow past the budget even inside one C call, and guards the library C
-- functions a hook can reach (string.rep's count, pattern cost, table.sort/move sizes, a deadline checked
-- before each of them and by the count hook). Without core.hookguard (the unit specs run in a plain
-- lua5.4) the count hook compares collectgarbage("count") with the baseline taken at the start instead.
--
-- A budget error is a table with its own metatable, so `pcall`/`xpcall` inside hook code (the wrapped
-- ones of lua/hooks/env.lua) re-raise it instead of swallowing it, and once a budget is exceeded every
-- later check raises again. Whatever the hook turned the error into, the budget is reported as the cause.
--
-- What a hook gives back crosses a boundary: M.raw_copy copies it with `next` (no __index, __pairs or
-- any other metamethod runs) *inside* the budget, and error objects become text without __tostring.
local json = require("common.json")

local M = {}

local has_guard, loaded = pcall(require, "core.hookguard")
local guard = has_guard and loaded or nil
M.guard = guard

M.STEP = 200 -- instructions between two checks
M.DEFAULT_INSTRUCTIONS = 10000000
M.DEFAULT_MEMORY_KB = 64 * 1024
M.DEFAULT_SECONDS = 0.5 -- running time of one call (waits in opensandbox.http excluded)
M.MAX_DEPTH = 32 -- nesting of a value a hook returns
M.MAX_ERROR = 1024 -- bytes of a hook's error text kept in the HOOK::FAILED message

local budget_mt = {
    __tostring = function(e)
        return rawget(e, "message")
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

--- Takes the memory baseline again for the call running on the current thread (after a yield; only
--- used without core.hookguard, which suspends and resumes its own count).
function M.rebase()
    local st = running[coroutine.running()]
    if st then
        st.base_kb = collectgarbage("count")
    end
end

--- Counts one more `what` (a log line, say) for the call running on the current thread; returns the count
--- (0 outside a budgeted call).
function M.tick(what)
    local st = running[coroutine.running()]
    if not st then
        return 0
    end
    local ticks = st.ticks
    if not ticks then
        ticks = {}
        st.ticks = ticks
    end
    local n = (ticks[what] or 0) + 1
    ticks[what] = n
    return n
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
        st.tripped = st.instr_err
        error(st.tripped, 0)
    end
    if guard then
        local why = guard.check()
        if why then
            st.tripped = why == "memory" and st.mem_err or st.time_err
            error(st.tripped, 0)
        end
    elseif collectgarbage("count") - st.base_kb > st.max_kb then
        collectgarbage("collect")
        if collectgarbage("count") - st.base_kb > st.max_kb then
            st.tripped = st.mem_err
            error(st.tripped, 0)
        end
    end
end

--- The text of an error object, read raw: a string, a table's own `message` string field, else a fixed
--- text. Never calls __tostring or __index (they would run hook code outside its budget).
function M.error_text(e)
    local m = e
    if type(e) == "table" then
        m = rawget(e, "message")
    end
    if type(m) ~= "string" then
        return string.format("the hook raised an error value of type %s", type(e))
    end
    if #m > M.MAX_ERROR then -- the reason goes into a response and a log line
        return m:sub(1, M.MAX_ERROR) .. "...(cut)"
    end
    return m
end

-- Ends a call: puts the previous debug hook and budget state back, and shapes the results. `tripped` is
-- what core.hookguard reports ("memory", "time" or false; nil without it).
-- Budget states of calls that ended, for the next calls to reuse (a state is a table of ten fields: making
-- one per call was a good part of what a call allocates). A state goes back once its call has ended and
-- nothing reads it any more; nested calls each take their own.
local free_states, n_free = {}, 0
local MAX_FREE = 8

local function release(st)
    st.ticks = nil
    if n_free < MAX_FREE then
        n_free = n_free + 1
        free_states[n_free] = st
    end
end

local function finish(co, outer, st, prev_fn, prev_mask, prev_count, ok, tripped, ...)
    restore(prev_fn, prev_mask, prev_count)
    running[co] = outer
    if tripped == "memory" then
        st.tripped = st.mem_err
    elseif tripped == "time" then
        st.tripped = st.time_err
    end
    local why = st.tripped
    release(st)
    if ok and not why then
        return true, ...
    end
    if why then
        -- Whatever the hook turned the error into, the budget is the cause.
        if why == st.mem_err then
            collectgarbage("collect")
        end
        return false, why.message
    end
    return false, M.error_text((...))
end

local function finish_plain(co, outer, st, prev_fn, prev_mask, prev_count, ok, ...)
    return finish(co, outer, st, prev_fn, prev_mask, prev_count, ok, nil, ...)
end

-- The three budget errors of a set of limits, made once and before any call: raising them must not
-- allocate once the memory budget is spent. Cached per limits table (a hooks object's limits do not change).
local errors_cache = setmetatable({}, { __mode = "k" }) -- limits table -> its errors
local function errors_for(limits, max_instr, max_kb, seconds)
    local errs = errors_cache[limits]
    if not errs then
        errs = {
            budget_error(string.format("instruction budget exceeded (%d instructions)", max_instr)),
            budget_error(string.format("memory budget exceeded (%d KB)", max_kb)),
            budget_error(string.format("time budget exceeded (%d ms)", math.floor(seconds * 1000))),
        }
        errors_cache[limits] = errs
    end
    return errs
end

--- Calls fn(...) on the current thread with limits = { instructions = n, memory_kb = n, seconds = s }.
--- Returns true, results... or false, message (a string; "instruction budget exceeded", "memory budget
--- exceeded" and "time budget exceeded" for the budgets, the error text otherwise).
function M.call(limits, fn, ...)
    local co = coroutine.running()
    local outer = running[co]
    local max_instr = limits.instructions or M.DEFAULT_INSTRUCTIONS
    local max_kb = limits.memory_kb or M.DEFAULT_MEMORY_KB
    local seconds = limits.seconds or M.DEFAULT_SECONDS
    local errs = errors_for(limits, max_instr, max_kb, seconds)
    local st
    if n_free > 0 then
        st = free_states[n_free]
        free_states[n_free] = nil
        n_free = n_free - 1
    else
        st = {}
    end
    st.used = 0
    st.base_kb = guard and 0 or collectgarbage("count")
    st.max_instr = max_instr
    st.max_kb = max_kb
    st.tripped = false
    st.instr_err = errs[1]
    st.mem_err = errs[2]
    st.time_err = errs[3]
    local prev_fn, prev_mask, prev_count = debug.gethook()
    running[co] = st
    debug.sethook(count_hook, "", M.STEP)
    if guard then
        return finish(co, outer, st, prev_fn, prev_mask, prev_count,
            guard.pcall(max_kb * 1024, seconds, fn, ...))
    end
    return finish_plain(co, outer, st, prev_fn, prev_mask, prev_count, pcall(fn, ...))
end

local array_mt = getmetatable(json.array())
local null = json.null

local function copy_value(v, depth, functions)
    local t = type(v)
    if t == "nil" or t == "boolean" or t == "number" or t == "string" or rawequal(v, null) then
        return v
    end
    if t == "function" and functions and depth <= functions then
        return v
    end
    if t ~= "table" then
        error(string.format("a hook may return only nil, booleans, numbers, strings and tables (got a %s)", t),
            0)
    end
    if depth > M.MAX_DEPTH then
        error(string.format("a value returned by a hook is nested more than %d levels deep", M.MAX_DEPTH), 0)
    end
    local out = {}
    local k, x = next(v)
    while k ~= nil do
        local tk = type(k)
        if tk ~= "string" and tk ~= "number" and tk ~= "boolean" then
            error(string.format("a table returned by a hook has a key of type %s", tk), 0)
        end
        out[k] = copy_value(x, depth + 1, functions)
        k, x = next(v, k)
    end
    -- The JSON array tag is the server's own (it has no metamethods; hooks cannot reach it to change it);
    -- any other metatable is refused: its metamethods are hook code, and dropping them silently would
    -- hand the service a value that no longer means what the hook meant.
    local mt = getmetatable(v)
    if mt == array_mt then
        setmetatable(out, array_mt)
    elseif mt ~= nil then
        error("a table returned by a hook has a metatable (its metamethods would run outside the hook's "
            .. "budget)", 0)
    end
    return out
end

--- A raw deep copy of `v`: nil, booleans, numbers, strings, json.null and tables of them (keys strings,
--- numbers or booleans; at most M.MAX_DEPTH levels; no metatable but the json.array tag). Read with
--- `next`, so no metamethod runs. Raises (a string) on anything else, a table with a metatable included.
--- `opts.functions` allows functions as the values of the top-level table (a hook file's table). Call it
--- inside the budget.
function M.raw_copy(v, opts)
    if guard then -- the same rules in C (core/hookguard.c copy_at), several times faster
        return guard.copy(v, array_mt, null, opts and opts.functions and 1 or -1)
    end
    return copy_value(v, 0, opts and opts.functions and 1 or nil)
end

return M
