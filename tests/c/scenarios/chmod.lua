-- Scenario: core.chmod, core.mkfifo and core.poke (core/lcore.c), and the Docker runtime's pool claim
-- directories made with them and core.mkdirs (lua/runtimes/docker/pool_claims.lua): the server's part 0700, each
-- member's 0755 with 0644 files and a 0666 FIFO, whatever the process's umask; the wake-up never blocks.
local core = require("core")
local lfs = require("lfs")

local dir = os.tmpname()
os.remove(dir)
assert(core.mkdirs(dir, tonumber("700", 8)))
assert(lfs.attributes(dir, "permissions") == "rwx------")
local path = dir .. "/f"
assert(io.open(path, "w")):close()

assert(core.chmod(path, tonumber("640", 8)) == true)
assert(lfs.attributes(path, "permissions") == "rw-r-----", lfs.attributes(path, "permissions"))
assert(core.chmod(path, tonumber("600", 8)) == true)
assert(lfs.attributes(path, "permissions") == "rw-------")
-- a path that is not there: nil, err naming it
local ok, err = core.chmod(dir .. "/missing", tonumber("644", 8))
assert(ok == nil and tostring(err):find("missing", 1, true), tostring(err))
assert(not pcall(core.chmod, path), "the mode is required")

-- a FIFO: made with exactly its mode; a poke with no reader says so at once (never blocks), with a reader
-- puts one byte; a path that is not a FIFO, or a symlink to one, is refused
local fifo = dir .. "/w"
assert(core.mkfifo(fifo, tonumber("666", 8)) == true)
assert(lfs.attributes(fifo, "mode") == "named pipe")
assert(lfs.attributes(fifo, "permissions") == "rw-rw-rw-", lfs.attributes(fifo, "permissions"))
local none, nerr = core.poke(fifo)
assert(none == nil and tostring(nerr):find("no reader", 1, true), tostring(nerr))
local reader = assert(io.open(fifo, "r+")) -- (O_RDWR: as the agent holds it)
assert(core.poke(fifo) == true)
assert(reader:read(1) == "1")
local bad, berr = core.poke(path)
assert(bad == nil and tostring(berr):find("not a FIFO", 1, true), tostring(berr))
assert(lfs.link(fifo, dir .. "/link", true))
bad = core.poke(dir .. "/link")
assert(bad == nil, "a symlink is not followed")
assert(select(2, core.mkfifo(fifo, tonumber("600", 8))):find("exists", 1, true))
reader:close()

-- the claim directories, with the real core functions
local rt = require("runtimes.docker").new({ docker = { pool_claim_dir = dir .. "/claims", instance = "i" },
    runtime = {} }, { client = { request = function() end }, log = { warn = function() end }, core = {
    mkdirs = core.mkdirs, chmod = core.chmod, mkfifo = core.mkfifo, poke = core.poke } })
local id = "11111111-2222-4333-8444-555555555555"
local cdir = assert(rt:make_claim_dir(id))
assert(cdir == dir .. "/claims/i/" .. id, cdir)
assert(lfs.attributes(dir .. "/claims/i", "permissions") == "rwx------")
assert(lfs.attributes(cdir, "permissions") == "rwxr-xr-x")
assert(lfs.attributes(cdir .. "/member", "permissions") == "rw-r--r--")
assert(lfs.attributes(cdir .. "/wake", "permissions") == "rw-rw-rw-")
-- no agent holds the FIFO: the claim fails, without blocking
local gone, gerr = rt:pool_claim({ id = id, claim_file = true }, { token = "t", entrypoint = { "true" } })
assert(gone == nil and gerr.kind == "unavailable", tostring(gerr))
local agent = assert(io.open(cdir .. "/wake", "r+"))
local ok2, how = rt:pool_claim({ id = id, claim_file = true }, { token = "t", entrypoint = { "true" } })
assert(ok2 == true and how.file == true)
assert(agent:read(1) == "1", "the agent was woken")
agent:close()
assert(lfs.attributes(cdir .. "/claim.json", "permissions") == "rw-r--r--")
rt:drop_claim_dir(id)
assert(lfs.attributes(cdir, "mode") == nil)

os.remove(path)
os.remove(fifo)
os.remove(dir .. "/link")
os.execute("rm -rf '" .. dir .. "'")
require("core.log").info("chmod scenario passed")
core.stop(0)
