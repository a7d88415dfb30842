-- luacheck configuration: no globals anywhere; the test files get busted's.
std = "lua54"
max_line_length = 120
codes = true
files["tests/lua"] = { std = "+busted" }
exclude_files = { "build/", "node_modules/", "**/node_modules/" }
