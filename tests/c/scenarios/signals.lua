-- Scenario: the engine's signal handling does not leak into the processes it starts. Before, TERM, INT and
-- HUP were blocked for a signalfd (and SIGPIPE ignored), and children inherited both: a backend a test
-- started never died of SIGTERM and held the test's lock long after the test ended.
local core = require("core")
local timer = require("core.timer")

-- a process started in the background through a shell, as tests start their backends
local p = assert(io.popen("sleep 30 >/dev/null 2>&1 & echo $!"))
local pid = assert(tonumber(p:read("l")))
p:close()

local function status_of(id)
    local st = io.open("/proc/" .. id .. "/status")
    if not st then
        return ""
    end
    local s = st:read("a")
    st:close()
    return s
end

-- its signal state (hex masks in /proc): nothing of the engine's blocked or ignored
local status = status_of(pid)
local blk = tonumber(status:match("SigBlk:%s*(%x+)"), 16)
local ign = tonumber(status:match("SigIgn:%s*(%x+)"), 16)
assert(blk and ign, "no signal masks in: " .. status)
local function bit(signo)
    return 1 << (signo - 1)
end
local SIGHUP, SIGINT, SIGPIPE, SIGTERM = 1, 2, 13, 15
local ok = blk & (bit(SIGHUP) | bit(SIGINT) | bit(SIGTERM) | bit(SIGPIPE)) == 0
    and ign & (bit(SIGTERM) | bit(SIGPIPE)) == 0

-- and it ends on TERM
core.kill(pid, "TERM")
local gone = false
for _ = 1, 100 do
    local s = status_of(pid)
    if s == "" or s:find("State:%s*Z") then
        gone = true
        break
    end
    timer.sleep(0.02)
end
if not gone then
    os.execute("kill -9 " .. pid)
end
assert(ok, "a child started by the engine has TERM, INT, HUP or PIPE blocked or ignored: " .. status)
assert(gone, "a child did not end on SIGTERM")
core.stop(0)
