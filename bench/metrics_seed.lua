-- Seeds a store with N Running sandbox records for bench/metrics.sh (no runtime needed: a server whose
-- runtime is unreachable serves its stored records as they are).
--   lua5.4 bench/metrics_seed.lua STORE_PATH N   (from the repository root)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local store_mod = require("sandbox.store")
local model = require("sandbox.model")

local path, n = arg[1], tonumber(arg[2] or "1000")
local store = assert(store_mod.open(path))
local now = os.time() * 1000000
for i = 1, n do
    local id = string.format("00000000-0000-4000-8000-%012d", i)
    local rec = model.new_record(id, { image = { uri = "local/busybox:latest" }, entrypoint = { "sleep", "600" },
        timeout = 3600, metadata = { team = "t" .. (i % 10) } }, now)
    model.apply_status(rec, model.status(model.STATE.RUNNING, model.REASON.CONTAINER_RUNNING, "running", now))
    rec.handle = string.format("%064d", i)
    rec.principal = "default"
    assert(store:put(rec))
end
store:close()
print(string.format("seeded %d records into %s", n, path))
