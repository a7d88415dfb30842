-- Integration: server.nice, the server's scheduling priority (config.lua, README "Warm pools" for why). The
-- real binary is started and every thread of it (/proc/PID/task/*/stat, field 19) is looked at: the
-- default -10 on all of them (the store's flush thread too: it is made after the priority is set), a
-- configured value, and false leaving the priority it was started with.
local H = require("lifecycle.helpers")

-- the nice value of every thread of process `pid`, and the number of threads
local function thread_nices(pid)
    local out = H.run("cat /proc/" .. pid .. "/task/*/stat")
    local seen, n = {}, 0
    for line in out:gmatch("[^\n]+") do
        -- fields after the command (which may hold spaces) in parentheses: state is field 3, nice field 19
        local rest = line:match("^%d+ %b() (.*)$")
        local fields = {}
        for f in rest:gmatch("%S+") do
            fields[#fields + 1] = f
        end
        seen[tonumber(fields[17])] = true
        n = n + 1
    end
    local list = {}
    for v in pairs(seen) do
        list[#list + 1] = v
    end
    table.sort(list)
    return list, n
end

describe("server.nice #integration #docker", function()
    after_each(function()
        H.stop_all()
    end)

    it("runs the server and all its threads at nice -10 by default, at a configured value, or as started",
        function()
            local srv = H.start()
            local nices, threads = thread_nices(srv.pid)
            assert.are.same({ -10 }, nices)
            assert.is_true(threads >= 2, "the flush thread is there: " .. threads)
            assert.truthy(srv:log():find('"scheduling priority set"', 1, true))
            srv:stop()

            srv = H.start({ config = { server = { nice = 5 } } })
            assert.are.same({ 5 }, (thread_nices(srv.pid)))
            srv:stop()

            local own = tonumber(H.run("cut -d' ' -f19 /proc/$$/stat"):match("%-?%d+"))
            srv = H.start({ config = { server = { nice = false } } })
            assert.are.same({ own }, (thread_nices(srv.pid)))
            assert.is_falsy(srv:log():find('"scheduling priority set"', 1, true))
        end)
end)
