-- Integration spec: Docker busy is not Docker unreachable. The server reaches Docker through a proxy that
-- delays the log requests (tests/lua/integration/support/slow_socket.py, in front of the real socket), with
-- docker.api_timeout = 2. A burst of diagnostics/logs requests queues for the server's 16 connections to
-- Docker; the ones still waiting when their 2 s are up were never sent: they answer 503
-- SANDBOX::RUNTIME_BUSY, the others 200, and the server does not take Docker for unreachable (before, every
-- request needing Docker answered 503 DOCKER::UNAVAILABLE until the next reconnect).
local H = require("lifecycle.helpers")

local DOCKER_SOCK = (os.getenv("DOCKER_HOST") or "unix:///var/run/docker.sock"):gsub("^unix://", "")

describe("Docker busy #integration #docker", function()
    local srv, proxy_pid, dir, sock

    setup(function()
        H.ensure_image()
        H.remove_all_containers()
        dir = assert(H.run("mktemp -d /tmp/osb-busy.XXXXXX")):gsub("%s+$", "")
        sock = dir .. "/docker.sock"
        local out = H.run(string.format("python3 %s %s %s 0.4 /logs? >%s/proxy.log 2>&1 & echo $!",
            H.quote(H.root() .. "/tests/lua/integration/support/slow_socket.py"), H.quote(sock),
            H.quote(DOCKER_SOCK), H.quote(dir)))
        proxy_pid = tonumber(out:match("%d+"))
        for _ = 1, 50 do
            local _, up = H.run("test -S " .. H.quote(sock))
            if up then
                break
            end
            H.sleep(0.1)
        end
        srv = H.start({ config = { docker = { host = "unix://" .. sock, api_timeout = 2 } } })
    end)

    teardown(function()
        H.stop_all()
        if proxy_pid then
            H.run("kill " .. proxy_pid)
        end
        H.remove_all_containers()
        if dir then
            H.run("rm -rf " .. H.quote(dir))
        end
    end)

    it("fails the requests that waited past their timeout with 503 RUNTIME_BUSY, and stays available",
        function()
            local id = H.create_running(srv)
            local url = srv.base .. "/v1/sandboxes/" .. id .. "/diagnostics/logs?scope=container"
            -- 100 at once: 16 go to Docker, each takes 0.4 s or more, the last ones wait past 2 s
            local out = H.run(string.format(
                "seq 1 100 | xargs -P 100 -I{} curl -s -m 60 -o %s/r{} -w '%%{http_code}\\n' %s",
                H.quote(dir), H.quote(url)))
            local codes = {}
            for c in out:gmatch("%d%d%d") do
                codes[c] = (codes[c] or 0) + 1
            end
            assert.is_true((codes["200"] or 0) > 0, out)
            assert.is_true((codes["503"] or 0) > 0, "some waited past their timeout: " .. out)
            local busy, others = 0, {} -- (others: the error answers that are not RUNTIME_BUSY)
            for i = 1, 100 do
                local f = io.open(dir .. "/r" .. i)
                local body = f and f:read("a") or ""
                if f then
                    f:close()
                end
                if body:find('"SANDBOX::RUNTIME_BUSY"', 1, true) then
                    busy = busy + 1
                elseif body:find('"code"', 1, true) then
                    others[#others + 1] = body:sub(1, 300)
                end
            end
            assert.are.equal(codes["503"], busy, "every 503 is RUNTIME_BUSY: " .. table.concat(others, "\n"))
            assert.are.same({}, others)
            -- Docker was never taken for unreachable: what needs it works at once
            local log = srv:log()
            assert.is_nil(log:find("runtime became unreachable", 1, true))
            local res = H.call(srv, "POST", "/v1/sandboxes/" .. id .. "/pause")
            assert.are.equal(202, res.status, res.body)
            H.wait_state(srv, id, "Paused", 30)
        end)
end)
