-- Small string helpers shared by the request parsers.
local M = {}

local WS = { [9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [32] = true }

--- `s` without white space at both ends, in linear time whatever the input (patterns such as "%s+$" or
--- "^%s*(.-)%s*$" take quadratic time on a long run of spaces that does not end the string: a client can
--- send one).
function M.trim(s)
    local a, b = 1, #s
    while a <= b and WS[s:byte(a)] do
        a = a + 1
    end
    while b >= a and WS[s:byte(b)] do
        b = b - 1
    end
    return s:sub(a, b)
end

return M
