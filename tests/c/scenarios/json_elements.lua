-- Scenario: core.json_elements, the split of a JSON array into its elements' texts (the Docker adapter
-- decodes a container list a part at a time with it, lua/runtimes/docker/engine.lua).
local core = require("core")
local json = require("common.json")

local function same(a, b)
    assert(#a == #b, string.format("%d elements, expected %d", #a, #b))
    for i = 1, #a do
        assert(a[i] == b[i], string.format("element %d: %q, expected %q", i, tostring(a[i]), tostring(b[i])))
    end
end

same(assert(core.json_elements("[]")), {})
same(assert(core.json_elements(" \n[ ] ")), {})
same(assert(core.json_elements('[1, "two" ,true,null, -3.5e2]')), { "1", '"two"', "true", "null", "-3.5e2" })
-- brackets, braces, commas and escaped quotes inside strings are text, not structure
local obj = '{"Id":"a","Labels":{"m":"{\\"x\\":[1,2]}","q":"]},\\\\"},"Names":["/s,1"]}'
same(assert(core.json_elements("[" .. obj .. " , [1,[2,{\"a\":[]}]] ]")), { obj, '[1,[2,{"a":[]}]]' })
local decoded = json.decode(assert(core.json_elements("[" .. obj .. "]"))[1])
assert(decoded.Labels.m == '{"x":[1,2]}' and decoded.Labels.q == ']},\\' and decoded.Names[1] == "/s,1")
-- what is not one whole array
for _, bad in ipairs({ "", "{}", "[1,2", '["abc', "[{\"a\":1}", "x[1]" }) do
    local none, err = core.json_elements(bad)
    assert(none == nil and type(err) == "string", "accepted: " .. bad)
end
-- a large list, as Docker sends it, splits into its elements and each decodes to what the whole decodes to
local items = {}
for i = 1, 3000 do
    items[i] = json.encode({ Id = string.format("%064d", i), State = "running",
        Labels = { ["opensandbox.io/id"] = "s" .. i, ["opensandbox.io/metadata"] = '{"k":"v,]"}' } })
end
local text = "[" .. table.concat(items, ",") .. "]"
local parts = assert(core.json_elements(text))
assert(#parts == 3000)
local whole = json.decode(text)
for i = 1, 3000, 499 do
    local one = json.decode(parts[i])
    assert(one.Id == whole[i].Id and one.Labels["opensandbox.io/metadata"] == '{"k":"v,]"}')
end
require("core.log").info("json_elements scenario passed")
core.stop(0)
