-- Scenario: core.toml (core/ltoml.cpp), the TOML parser binding behind TOML configuration files.
local core = require("core")
local toml = require("core.toml")

-- every TOML value kind, tables (standard, inline, dotted keys, arrays of tables)
local doc = assert(toml.parse([==[
# a comment
title = "x \"quoted\" \u00e9"
literal = 'C:\path'
multi = """
two
lines"""
int = 42
neg = -17
hex = 0xff
big = 9007199254740993
float = 30.0
exp = 6.5e-3
yes = true
no = false
list = ["a", "b", "c"]
mixed = [1, [2, 3]]
empty = []
date = 2026-12-02
time = 07:32:00.5
stamp = 1979-05-27T07:32:00Z
offset = 1979-05-27T00:32:00-07:30
local_dt = 1979-05-27T07:32:00

[server]
host = "127.0.0.1"
port = 8080
inline = { a = 1, b = { c = "d" } }

[renew_intent]
redis.enabled = false
redis.dsn = "redis://x"

[a.b.c]
deep = true

[[hosts]]
name = "one"
[[hosts]]
name = "two"
]==], "t.toml"))

assert(doc.title == "x \"quoted\" \u{e9}", doc.title)
assert(doc.literal == "C:\\path")
assert(doc.multi == "two\nlines", doc.multi)
assert(math.type(doc.int) == "integer" and doc.int == 42)
assert(doc.neg == -17 and doc.hex == 255)
assert(doc.big == 9007199254740993 and math.type(doc.big) == "integer")
assert(math.type(doc.float) == "float" and doc.float == 30.0)
assert(math.abs(doc.exp - 0.0065) < 1e-12)
assert(doc.yes == true and doc.no == false)
assert(#doc.list == 3 and doc.list[1] == "a" and doc.list[3] == "c")
assert(doc.mixed[1] == 1 and doc.mixed[2][2] == 3)
assert(type(doc.empty) == "table" and next(doc.empty) == nil)
assert(doc.date == "2026-12-02", doc.date)
assert(doc.time == "07:32:00.500000000", doc.time)
assert(doc.stamp == "1979-05-27T07:32:00Z", doc.stamp)
assert(doc.offset == "1979-05-27T00:32:00-07:30", doc.offset)
assert(doc.local_dt == "1979-05-27T07:32:00", doc.local_dt)
assert(doc.server.host == "127.0.0.1" and doc.server.port == 8080)
assert(doc.server.inline.a == 1 and doc.server.inline.b.c == "d")
assert(doc.renew_intent.redis.enabled == false and doc.renew_intent.redis.dsn == "redis://x")
assert(doc.a.b.c.deep == true)
assert(#doc.hosts == 2 and doc.hosts[2].name == "two")

-- syntax errors: nil and "name:line:column: reason", never a raised error
local cases = {
    { "a = ", 1 },
    { "[server]\nport = 80 80\n", 2 },
    { "a = 1\na = 2\n", 2 }, -- a key defined twice
    { "[t]\nx = 1\n[t]\n", 3 }, -- a table defined twice
    { 'a = "unterminated\n', 1 },
    { "a = [1, 2\n", "%d+" },
    { "a = 1979-13-45\n", 1 },
    { "\0", 1 },
    { "[server]\n[\0\0:x]\n", 2 }, -- a NUL in a key (toml++ 3.3.0 asserts there; refused before it)
    { 'a = "x\0y"\n', 1 },
}
for _, c in ipairs(cases) do
    local v, err = toml.parse(c[1], "bad.toml")
    assert(v == nil, c[1])
    assert(type(err) == "string" and err:find("^bad%.toml:" .. c[2] .. ":%d+: .+"), tostring(err))
end
-- non-ASCII characters where toml++ 3.3.0's whitespace check has an unreachable branch (its issues #190 and
-- #295, fixed after 3.3.0): the library the server links gives the right answers (valid text parses, invalid
-- text is an error), which is what these pin down
local ml = assert(toml.parse('s = """\\\n\u{a7}x"""\n'))
assert(ml.s == "\u{a7}x", ml.s)
local ml2 = assert(toml.parse('s = """\\\n\u{3002}x"""\n'))
assert(ml2.s == "\u{3002}x", ml2.s)
for _, bad in ipairs({ "\xcc\xaa", "a = 1 \u{a7}\n", "[a]\nb = [ 5,2,0.iiiiiiiiiiifuziiiiiiii\u{3aa}\n" }) do
    local v, err = toml.parse(bad)
    assert(v == nil and err:find("^toml:%d+:%d+: "), tostring(err))
end

-- the name defaults to "toml"; a non-string argument is a usage error
assert(select(2, toml.parse("= 1")):find("^toml:1:"))
assert(not pcall(toml.parse, nil))

-- deep nesting is refused cleanly (toml++ limits it; the binding checks the Lua stack)
local deep = string.rep("[", 2000) .. string.rep("]", 2000)
local v, err = toml.parse("a = " .. deep)
assert(v == nil and err:find("^toml:1:"), tostring(err))

-- a large document parses (keys and values of every row)
local rows = {}
for i = 1, 5000 do
    rows[#rows + 1] = string.format("k%d = %d", i, i)
end
local bigdoc = assert(toml.parse(table.concat(rows, "\n")))
assert(bigdoc.k1 == 1 and bigdoc.k5000 == 5000)

require("core.log").info("toml scenario passed")
core.stop(0)
