-- Scenario: core.net on the real loop and the real kernel (root): nftables in another process's network
-- namespace (made with unshare), the start gate on a FIFO, UDP sockets and one-shot queries, DNS parsing.
local core = require("core")
local net = require("core.net")
local spawn = require("core.spawn")

local function sh(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    p:close()
    return out
end

-- a process in a network namespace of its own
local h = io.popen("exec unshare -n sh -c 'echo $$; exec sleep 600'") -- (killed at the end)
local pid = math.tointeger(tonumber(h:read("l")))
assert(pid, "unshare failed")

local ok, err = net.nft(pid, "add table inet osbscenario\n"
    .. "add set inet osbscenario s { type ipv4_addr; flags timeout; }\n"
    .. "add chain inet osbscenario o { type filter hook output priority 0; policy accept; }\n"
    .. "add rule inet osbscenario o ip daddr @s accept\n")
assert(ok, err)
ok, err = net.nft(pid, "add element inet osbscenario s { 10.9.8.7 timeout 60s }\n")
assert(ok, err)
local listed, text = net.nft(pid, "list set inet osbscenario s")
assert(listed and text:find("10.9.8.7", 1, true), text)
-- the server's own namespace has no such table, and the server is back in it
local _, own = net.nft(0, "list tables")
assert(not own:find("osbscenario", 1, true), own)
-- the call runs on a worker thread and yields: a task spawned after the caller runs before its answer comes
local ran_meanwhile
local during = false
spawn(function()
    local lok = net.nft(pid, "list set inet osbscenario s")
    assert(lok)
    ran_meanwhile = during
end)
spawn(function()
    during = true
end)
-- where the caller cannot yield (across a C call), it waits for the worker in place
local inplace
string.gsub("x", "x", function()
    inplace = { net.nft(pid, "list set inet osbscenario s") }
end)
assert(inplace[1] == true and inplace[2]:find("10.9.8.7", 1, true), tostring(inplace[2]))
-- calls keep their order: many at once, each sees the elements the ones before it added
local order_done = 0
for i = 1, 4 do
    spawn(function()
        local aok, aerr = net.nft(pid, string.format("add element inet osbscenario s { 10.9.9.%d timeout 60s }\n", i))
        assert(aok, aerr)
        local _, set = net.nft(pid, "list set inet osbscenario s")
        assert(set:find("10.9.9." .. i, 1, true), set)
        order_done = order_done + 1
    end)
end
local timer = require("core.timer")
local waited = 0
while (ran_meanwhile == nil or order_done < 4) and waited < 300 do
    timer.sleep(0.01)
    waited = waited + 0.01
end
assert(ran_meanwhile == true, "core.net.nft did not yield (a task spawned after it ran only after its answer)")
assert(order_done == 4, "not every concurrent nft call finished: " .. order_done)
-- an error comes back as text
ok, err = net.nft(pid, "add element inet osbscenario nosuchset { 1.2.3.4 }\n")
assert(ok == nil and err:find("No such file or directory", 1, true), tostring(err))
-- a process that is gone
ok, err = net.nft(999999999, "list tables")
assert(ok == nil and err:find("network namespace", 1, true), tostring(err))

-- the kept netlink socket: opened once in the namespace, adds and removes set elements there (and only there)
-- with no setns per call; it is one file descriptor, gone when closed
local lfs = require("lfs")
local function fds()
    local n = 0
    for _ in lfs.dir("/proc/self/fd") do
        n = n + 1
    end
    return n
end
local fds0 = fds()
local nl = assert(net.nl_open(pid))
assert(fds() == fds0 + 1, "nl_open: " .. fds() .. " fds, was " .. fds0)
ok, err = nl:elements("osbscenario", "s", { { "10.1.2.3", 120 }, { "10.1.2.4", 3600 } })
assert(ok, err)
_, text = net.nft(pid, "list set inet osbscenario s")
assert(text:find("10.1.2.3 timeout 2m", 1, true) and text:find("10.1.2.4 timeout 1h", 1, true), text)
_, own = net.nft(0, "list tables")
assert(not own:find("osbscenario", 1, true), own)
-- a new timeout: removed and added again in one batch
ok, err = nl:elements("osbscenario", "s", { { "10.1.2.3", 600 } }, { "10.1.2.3" })
assert(ok, err)
_, text = net.nft(pid, "list set inet osbscenario s")
assert(text:find("10.1.2.3 timeout 10m", 1, true), text)
-- the kernel's refusal is an error, and nothing of the batch stays (10.1.2.9 was in it)
ok, err = nl:elements("osbscenario", "s", { { "10.1.2.9", 60 } }, { "10.1.2.200" })
assert(ok == nil and err:find("No such file or directory", 1, true), tostring(err))
ok, err = nl:elements("osbscenario", "nosuchset", { { "10.1.2.9", 60 } })
assert(ok == nil and err:find("No such file or directory", 1, true), tostring(err))
_, text = net.nft(pid, "list set inet osbscenario s")
assert(not text:find("10.1.2.9", 1, true), text)
-- after an error the socket still works (the answers were all read)
assert(nl:elements("osbscenario", "s", { { "10.1.2.5", 60 } }))
_, text = net.nft(pid, "list set inet osbscenario s")
assert(text:find("10.1.2.5", 1, true), text)
-- bad elements are caller errors
assert(not pcall(nl.elements, nl, "osbscenario", "s", { { "not-an-ip", 60 } }))
assert(not pcall(nl.elements, nl, "osbscenario", "s", { { "10.1.2.6", 0 } }))
local many = {}
for i = 1, 257 do
    many[i] = { "10.3.0." .. (i % 250), 60 }
end
assert(not pcall(nl.elements, nl, "osbscenario", "s", many))
nl:close()
nl:close() -- twice is fine
assert(fds() == fds0, "after close: " .. fds() .. " fds, was " .. fds0)
assert(not pcall(nl.elements, nl, "osbscenario", "s", { { "10.1.2.7", 60 } }))
-- one the collector finds is closed by it
do
    local _ = assert(net.nl_open(pid))
end
collectgarbage()
collectgarbage()
assert(fds() == fds0, "after collection: " .. fds() .. " fds, was " .. fds0)
ok, err = net.nl_open(999999999)
assert(ok == nil and err:find("network namespace", 1, true), tostring(err))
assert(fds() == fds0, "after a failed open: " .. fds() .. " fds, was " .. fds0)
sh("kill " .. pid)
h:close()

-- the start gate: a reader blocked on a FIFO is released; no reader yet is "not ready"
local dir = sh("mktemp -d"):gsub("%s+$", "")
local fifo = dir .. "/gate"
ok, err = net.gate(core.getpid(), fifo)
assert(ok == nil and err == "not ready", tostring(err))
sh("mkfifo " .. fifo)
ok, err = net.gate(core.getpid(), fifo)
assert(ok == nil and err == "not ready", tostring(err)) -- a FIFO nobody reads
local reader = io.popen("cat " .. fifo .. " > " .. dir .. "/got; echo done")
local released
for _ = 1, 500 do
    ok, err = net.gate(core.getpid(), fifo)
    if ok then
        released = true
        break
    end
    assert(err == "not ready", err)
    require("core.timer").sleep(0.01)
end
assert(released, "gate never opened")
assert(reader:read("l") == "done")
reader:close()
assert(sh("cat " .. dir .. "/got") == "1")
-- a symbolic link on the way is not followed (it could lead outside the sandbox's root)
sh("mkdir -p " .. dir .. "/real && mkfifo " .. dir .. "/real/gate && ln -s " .. dir .. "/real " .. dir .. "/link")
ok, err = net.gate(core.getpid(), dir .. "/link/gate")
assert(ok == nil and err ~= "not ready", tostring(err))
ok, err = net.gate(core.getpid(), dir .. "/real/../real/gate")
assert(ok == nil and err ~= "not ready", tostring(err))
-- a regular file is not a gate
sh("rm -f " .. fifo .. " && touch " .. fifo)
ok, err = net.gate(core.getpid(), fifo)
assert(ok == nil and err:find("not a FIFO", 1, true), tostring(err))
sh("rm -rf " .. dir)

-- UDP: an echo socket, a query that is answered, one that times out, one whose answer has another id
local s = assert(net.udp_bind("127.0.0.1", 0))
local port = s:port()
assert(port > 0)
spawn(function()
    while true do
        local d, ip, p = s:recv()
        if not d then
            return
        end
        if d:sub(3) == "wrong-id" then
            s:send("zz" .. d, ip, p)
        elseif d:sub(3) ~= "silent" then
            s:send(d .. "!", ip, p)
        end
    end
end)
local reply = net.udp_query("127.0.0.1", port, "ab-hello", 1)
assert(reply == "ab-hello!", tostring(reply))
local none, why = net.udp_query("127.0.0.1", port, "cdsilent", 0.1)
assert(none == nil and why == "timeout", tostring(why))
none, why = net.udp_query("127.0.0.1", port, "efwrong-id", 0.1)
assert(none == nil and why == "timeout", tostring(why))

-- DNS: a query and an answer with two A records, parsed
local function name(n)
    local out = ""
    for label in n:gmatch("[^.]+") do
        out = out .. string.char(#label) .. label
    end
    return out .. "\0"
end
local q = string.pack(">I2I2I2I2I2I2", 0xbeef, 0x0100, 1, 0, 0, 0) .. name("Api.Example.test")
    .. string.pack(">I2I2", 1, 1)
local p = assert(net.dns_parse(q))
assert(p.id == 0xbeef and p.qr == false and p.qname == "Api.Example.test" and p.qtype == 1 and p.qclass == 1)
assert(p.qend == #q, tostring(p.qend))
local ans = string.pack(">I2I2I2I2I2I2", 0xbeef, 0x8180, 1, 2, 0, 0) .. q:sub(13)
    .. "\xc0\x0c" .. string.pack(">I2I2I4I2", 1, 1, 120, 4) .. "\10\0\0\7"
    .. "\xc0\x0c" .. string.pack(">I2I2I4I2", 1, 1, 60, 4) .. "\10\0\0\8"
p = assert(net.dns_parse(ans))
assert(p.qr == true and #p.answers == 2, tostring(#p.answers))
assert(p.answers[1].addr == "10.0.0.7" and p.answers[1].ttl == 120)
assert(p.answers[2].addr == "10.0.0.8" and p.answers[2].ttl == 60)
local bad, berr = net.dns_parse("\0\1\2")
assert(bad == nil and berr, "short message parsed")

s:close()
core.stop(0)
