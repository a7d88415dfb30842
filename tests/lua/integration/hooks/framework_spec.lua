-- Integration spec: operator hooks written into a temporary hooks.dir, against the real server and Docker:
-- a hook with an endless loop (500 naming it, the server keeps serving), SIGHUP and `--reload` picking up a
-- changed hook and a changed hooks.config, a reload with a syntax error keeping the old hooks (and logging
-- why), and after_transition hooks that log every state change and POST it to a slow local webhook
-- without holding up the requests.
--
--   cd /work/main && lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' \
--       tests/lua/integration/hooks
local F = require("hooks.fixtures")
local H = F.H
local server = require("support.server")

-- before_create: refuses metadata color=red with a message naming the version and hooks.config.policy.word
local function policy_hook(version)
    return ([[
local M = { name = "policy", priority = 500 }
local word = "?"
function M.init(config)
    word = config.word or "none"
    return true
end
function M.before_create(ctx, spec)
    if spec.metadata.color == "red" then
        return opensandbox.reject(403, "POLICY::NO_RED", "VERSION: red is not allowed (" .. word .. ").")
    end
end
return M
]]):gsub("VERSION", version)
end

local LOOP_HOOK = [[
local M = { name = "loop", priority = 400 }
function M.before_create(ctx, spec)
    if spec.metadata.loop == "yes" then
        local n = 0
        while true do
            n = n + 1
        end
    end
end
function M.after_transition(ctx, sandbox, from, to)
    if sandbox.metadata.loop == "transition" and to == "Running" then
        while true do
        end
    end
end
return M
]]

-- before_delete: only an admin may delete a sandbox with metadata protected=true; on_proxy_request: port
-- 9999 is closed, and every proxied request is logged with the principal the hook sees
local GUARD_HOOK = [[
local M = { name = "guard", priority = 250 }
function M.before_delete(ctx, sandbox)
    if sandbox.metadata.protected == "true" and not ctx.admin then
        return nil, { status = 409, code = "POLICY::PROTECTED",
            message = "Sandbox " .. sandbox.id .. " is protected; ask an admin." }
    end
end
function M.on_proxy_request(ctx, sandbox, req)
    opensandbox.log.info("proxied", { sandbox_id = sandbox.id, port = req.port, path = req.path,
        principal = ctx.principal or "(none)" })
    if req.port == 9999 then
        return { allow = false }
    end
end
return M
]]

-- after_transition: a log line per change, and a POST of it to hooks.config.recorder.url
local RECORDER_HOOK = [[
local M = { name = "recorder", priority = 0 }
local url
function M.init(config)
    url = config.url
    return true
end
function M.after_transition(ctx, sandbox, from, to)
    opensandbox.log.info("transition", { sandbox_id = sandbox.id, from = from or "none", to = to,
        owner = ctx.principal, state = sandbox.status.state })
    if not url then
        return
    end
    local res, err = opensandbox.http({
        method = "POST",
        url = url,
        headers = { ["Content-Type"] = "application/json" },
        body = opensandbox.json.encode({ id = sandbox.id, from = from or "none", to = to, owner = ctx.principal }),
        timeout = 5,
    })
    opensandbox.log.info("webhook sent", { sandbox_id = sandbox.id, to = to, status = res and res.status or 0,
        error = err })
end
return M
]]

local WEBHOOK_DELAY_MS = 1500

describe("operator hooks #integration #docker", function()
    local srv, dir, hooks_dir, listener

    setup(function()
        H.ensure_image()
        dir = server.tmpdir()
        hooks_dir = F.mkdir(dir, "hooks")
        listener = F.listener(dir, WEBHOOK_DELAY_MS)
        F.write(hooks_dir .. "/policy.lua", policy_hook("v1"))
        F.write(hooks_dir .. "/loop.lua", LOOP_HOOK)
        F.write(hooks_dir .. "/recorder.lua", RECORDER_HOOK)
        F.write(hooks_dir .. "/guard.lua", GUARD_HOOK)
        F.write(hooks_dir .. "/README.txt", "not a hook\n")
        srv = F.start({
            hooks = {
                dir = hooks_dir,
                config = { policy = { word = "alpha" }, recorder = { url = listener.url } },
            },
        }, { dir = dir })
    end)

    teardown(function()
        F.cleanup()
        if listener then
            listener.stop()
        end
        H.stop_all()
        if dir and not os.getenv("OSB_KEEP_TEST_DIRS") then
            H.run("rm -rf " .. H.quote(dir))
        end
    end)

    local function path(id, suffix)
        return "/v1/sandboxes/" .. id .. (suffix or "")
    end

    local function red(who)
        return F.create_raw(srv, who or "a", { metadata = { color = "red" } })
    end

    local function msg_is(l, msg)
        return l.msg == msg
    end

    it("loads the hooks of hooks.dir in priority order", function()
        local lines = F.find_lines(srv, function(l)
            return msg_is(l, "hooks loaded")
        end)
        assert.are.equal(1, #lines, srv:log())
        assert.are.equal(hooks_dir, lines[1].dir)
        assert.are.equal("policy,loop,guard,recorder", lines[1].hooks)
        H.assert_error(red(), 403, "POLICY::NO_RED", "v1: red is not allowed (alpha).")
    end)

    describe("a hook with an endless loop", function()
        it("gives 500 HOOK::FAILED naming the hook; the server answers right after", function()
            local t0 = H.now()
            local res = F.create_raw(srv, "a", { metadata = { loop = "yes" } })
            local took = H.now() - t0
            H.assert_error(res, 500, "HOOK::FAILED",
                "Hook 'loop' failed in before_create: instruction budget exceeded (10000000 instructions)")
            assert.is_true(took < 5, "the loop was stopped after " .. took .. " s")
            -- the log line names the hook and the point
            local lines = F.find_lines(srv, function(l)
                return l.level == "ERROR" and msg_is(l, "hook failed")
            end)
            assert.are.equal(1, #lines, srv:log())
            assert.are.equal("loop", lines[1].hook)
            assert.are.equal("before_create", lines[1].point)
            assert.are.equal(res.headers["x-request-id"], lines[1].request_id)
            -- the server keeps serving: health, list, the next create, and the loop again
            local h = srv:request("GET", "/health")
            assert.are.equal(200, h.status, h.body)
            local l = F.call(srv, "a", "GET", "/v1/sandboxes")
            assert.are.equal(200, l.status, l.body)
            assert.are.same({}, F.ids(l))
            local id = F.create(srv, "a", { metadata = { loop = "no" } })
            F.wait_state(srv, id, "Running")
            H.assert_error(F.create_raw(srv, "b", { metadata = { loop = "yes" } }), 500, "HOOK::FAILED",
                "Hook 'loop' failed in before_create: instruction budget exceeded (10000000 instructions)")
            assert.are.equal(204, F.call(srv, "a", "DELETE", path(id)).status)
            assert.is_true(srv:alive())
        end)

        it("in after_transition is stopped and logged; the sandbox and the server go on", function()
            local id = F.create(srv, "a", { metadata = { loop = "transition" } })
            F.wait_state(srv, id, "Running")
            local lines = F.wait_lines(srv, function(l)
                return l.level == "ERROR" and msg_is(l, "hook failed") and l.point == "after_transition"
            end, 1, 10, "hook failed in after_transition")
            assert.are.equal("loop", lines[1].hook)
            assert.are.equal("instruction budget exceeded (10000000 instructions)", lines[1].error)
            assert.are.equal(200, srv:request("GET", "/health").status)
            assert.are.equal(200, F.call(srv, "a", "GET", path(id)).status)
            assert.are.equal(204, F.call(srv, "a", "DELETE", path(id)).status)
        end)
    end)

    describe("before_delete and on_proxy_request", function()
        it("before_delete refuses a tenant with the hook's error; an admin may delete", function()
            local id = F.create(srv, "a", { metadata = { protected = "true" } })
            F.wait_state(srv, id, "Running")
            H.assert_error(F.call(srv, "a", "DELETE", path(id)), 409, "POLICY::PROTECTED",
                "Sandbox " .. id .. " is protected; ask an admin.")
            assert.are.equal("Running", F.call(srv, "a", "GET", path(id)).json.status.state)
            -- another tenant still gets 404 (tenancy is checked before the hooks)
            H.assert_error(F.call(srv, "b", "DELETE", path(id)), 404, "DOCKER::SANDBOX_NOT_FOUND",
                "Sandbox " .. id .. " not found.")
            assert.are.equal(204, F.call(srv, "admin", "DELETE", path(id)).status)
            H.assert_error(F.call(srv, "admin", "GET", path(id)), 404, "DOCKER::SANDBOX_NOT_FOUND",
                "Sandbox " .. id .. " not found.")
        end)

        it("on_proxy_request can close a port (403); it sees the principal of a key sent along", function()
            local id = F.create(srv, "a", {})
            F.wait_state(srv, id, "Running")
            local res = srv:request("GET", "/sandboxes/" .. id .. "/proxy/9999/x",
                { headers = { ["OPEN-SANDBOX-API-KEY"] = F.KEYS.a } })
            assert.are.equal(403, res.status, res.body)
            assert.are.same({ code = "HOOK::REJECTED", message = "Access to port 9999 denied by hook 'guard'." },
                F.json.decode(res.body))
            -- the same request three times: with an on_proxy_request hook the proxy never forwards on a
            -- remembered decision (core/proxy_fast.c), the hook sees every request
            for _ = 1, 3 do
                res = srv:request("GET", "/sandboxes/" .. id .. "/proxy/44772/ping",
                    { headers = { ["OPEN-SANDBOX-API-KEY"] = F.KEYS.a } })
                assert.are.equal(401, res.status, res.body) -- the agent's answer: no token sent
            end
            local lines = F.find_lines(srv, function(l)
                return msg_is(l, "proxied") and l.sandbox_id == id
            end)
            assert.are.equal(4, #lines, srv:log())
            assert.are.equal(9999, lines[1].port)
            assert.are.equal("/x", lines[1].path)
            assert.are.equal("/ping", lines[2].path)
            assert.are.equal("/ping", lines[4].path)
            -- the proxy route needs no key, but a valid one names the tenant
            assert.are.equal("team-a", lines[2].principal)
            assert.are.equal(204, F.call(srv, "a", "DELETE", path(id)).status)
        end)
    end)

    describe("reloading", function()
        local function reload_count(msg)
            return #F.find_lines(srv, function(l)
                return msg_is(l, msg)
            end)
        end

        local function wait_reload(msg, n)
            return F.wait_lines(srv, function(l)
                return msg_is(l, msg)
            end, n, 10, msg)
        end

        it("SIGHUP loads a changed hook file and a changed hooks.config", function()
            local before = reload_count("hooks reloaded")
            F.write(hooks_dir .. "/policy.lua", policy_hook("v2"))
            local cfg = F.read(srv.cfg_path)
            local changed = cfg:gsub('"alpha"', '"beta"')
            assert.are_not.equal(cfg, changed)
            F.write(srv.cfg_path, changed)
            srv:signal("HUP")
            local lines = wait_reload("hooks reloaded", before + 1)
            assert.are.equal("policy,loop,guard,recorder", lines[#lines].hooks)
            H.assert_error(red(), 403, "POLICY::NO_RED", "v2: red is not allowed (beta).")
            -- other requests are not affected
            local id = F.create(srv, "b", { metadata = { color = "blue" } })
            assert.is_string(id)
            assert.are.equal(204, F.call(srv, "b", "DELETE", path(id)).status)
        end)

        it("`opensandbox-server --reload --config <same config>` signals the running server", function()
            local before = reload_count("hooks reloaded")
            F.write(hooks_dir .. "/policy.lua", policy_hook("v3"))
            local out, ok = H.run(H.quote(server.binary()) .. " --reload --config " .. H.quote(srv.cfg_path))
            assert.is_true(ok, out)
            assert.are.equal("reload requested (pid " .. srv.pid .. ")\n", out)
            wait_reload("hooks reloaded", before + 1)
            H.assert_error(red(), 403, "POLICY::NO_RED", "v3: red is not allowed (beta).")
        end)

        it("a reload with a syntax error keeps the loaded hooks and logs why", function()
            local before = reload_count("hooks reload failed; the previous hooks stay active")
            local ok_before = reload_count("hooks reloaded")
            F.write(hooks_dir .. "/policy.lua", policy_hook("v4"):gsub("return M\n$", "return M end\n"))
            srv:signal("HUP")
            local lines = wait_reload("hooks reload failed; the previous hooks stay active", before + 1)
            local err = lines[#lines].error
            assert.is_string(err, srv:log())
            assert.truthy(err:find("policy.lua", 1, true), err)
            assert.truthy(err:find("<eof>", 1, true) or err:find("near 'end'", 1, true), err)
            assert.are.equal("ERROR", lines[#lines].level)
            assert.are.equal(ok_before, reload_count("hooks reloaded"))
            -- the old set is still in use
            H.assert_error(red(), 403, "POLICY::NO_RED", "v3: red is not allowed (beta).")
            H.assert_error(F.create_raw(srv, "a", { metadata = { loop = "yes" } }), 500, "HOOK::FAILED",
                "Hook 'loop' failed in before_create: instruction budget exceeded (10000000 instructions)")
            assert.are.equal(200, srv:request("GET", "/health").status)
        end)

        it("an init that refuses its config also keeps the loaded hooks; a fixed file loads again", function()
            local before = reload_count("hooks reload failed; the previous hooks stay active")
            local refusing = policy_hook("v5"):gsub("word = config.word or \"none\"\n    return true",
                "return nil, \"word must be short\"")
            F.write(hooks_dir .. "/policy.lua", refusing)
            srv:signal("HUP")
            local lines = wait_reload("hooks reload failed; the previous hooks stay active", before + 1)
            assert.truthy(lines[#lines].error:find("word must be short", 1, true), lines[#lines].error)
            H.assert_error(red(), 403, "POLICY::NO_RED", "v3: red is not allowed (beta).")
            local ok_before = reload_count("hooks reloaded")
            F.write(hooks_dir .. "/policy.lua", policy_hook("v6"))
            os.remove(hooks_dir .. "/loop.lua")
            srv:signal("HUP")
            lines = wait_reload("hooks reloaded", ok_before + 1)
            assert.are.equal("policy,guard,recorder", lines[#lines].hooks)
            H.assert_error(red(), 403, "POLICY::NO_RED", "v6: red is not allowed (beta).")
            -- the removed hook no longer runs
            local id = F.create(srv, "a", { metadata = { loop = "yes" } })
            assert.are.equal(204, F.call(srv, "a", "DELETE", path(id)).status)
        end)

        it("a config file that no longer loads: the hooks reload with the hooks.config in use", function()
            local good = F.read(srv.cfg_path)
            local failed_before = reload_count("config re-read failed; reloading hooks with the old hooks.config")
            local ok_before = reload_count("hooks reloaded")
            F.write(hooks_dir .. "/policy.lua", policy_hook("v7"))
            F.write(srv.cfg_path, good:gsub('"beta"', '"gamma"'):gsub("^return", "return return"))
            srv:signal("HUP")
            local lines = wait_reload("config re-read failed; reloading hooks with the old hooks.config",
                failed_before + 1)
            assert.is_string(lines[#lines].error)
            wait_reload("hooks reloaded", ok_before + 1)
            H.assert_error(red(), 403, "POLICY::NO_RED", "v7: red is not allowed (beta).")
            F.write(srv.cfg_path, good)
        end)
    end)

    describe("after_transition", function()
        it("logs every state change and POSTs it to a slow webhook without holding up requests", function()
            local t0 = H.now()
            local id = F.create(srv, "a", { metadata = { app = "watched" } })
            assert.is_true(H.now() - t0 < 1, "the create waited for the webhook")
            F.wait_state(srv, id, "Running")
            t0 = H.now()
            assert.are.equal(202, F.call(srv, "a", "POST", path(id, "/pause")).status)
            assert.are.equal(202, F.call(srv, "a", "POST", path(id, "/resume")).status)
            assert.are.equal(200, srv:request("GET", "/health").status)
            assert.are.equal(204, F.call(srv, "a", "DELETE", path(id)).status)
            assert.is_true(H.now() - t0 < WEBHOOK_DELAY_MS / 1000, "the requests waited for the webhook")

            local expected = {
                "none>Pending", "Pending>Running", "Running>Paused", "Paused>Running", "Running>Stopping",
                "Stopping>Deleted",
            }
            -- the log lines, in the order of the changes
            local lines = F.wait_lines(srv, function(l)
                return msg_is(l, "transition") and l.sandbox_id == id
            end, #expected, 10, "transition")
            local seen = {}
            for i, l in ipairs(lines) do
                assert.are.equal("recorder", l.hook)
                assert.are.equal("team-a", l.owner)
                seen[i] = l.from .. ">" .. l.to
            end
            assert.are.same(expected, seen)
            -- the sandbox snapshot is taken at the change (the Deleted one keeps its last state)
            assert.are.equal("Pending", lines[1].state)
            assert.are.equal("Paused", lines[3].state)
            -- the webhook got all of them (each took WEBHOOK_DELAY_MS to answer)
            local got
            local deadline = H.now() + 15
            repeat
                got = {}
                for _, r in ipairs(listener.received()) do
                    local b = F.json.decode(r.body)
                    if b.id == id then
                        assert.are.equal("POST", r.method)
                        assert.are.equal("/hook", r.url)
                        assert.are.equal("application/json", r.type)
                        assert.are.equal("team-a", b.owner)
                        got[#got + 1] = b.from .. ">" .. b.to
                    end
                end
                if #got >= #expected then
                    break
                end
                H.sleep(0.1)
            until H.now() > deadline
            table.sort(got)
            local want = { table.unpack(expected) }
            table.sort(want)
            assert.are.same(want, got)
            local sent = F.wait_lines(srv, function(l)
                return msg_is(l, "webhook sent") and l.sandbox_id == id
            end, #expected, 10, "webhook sent")
            for _, l in ipairs(sent) do
                assert.are.equal(200, l.status, F.json.encode(l))
            end
        end)

        it("hears of changes that come from Docker events: an exited container", function()
            local id = F.create(srv, "b", { entrypoint = { "sh", "-c", "sleep 2" } })
            F.wait_state(srv, id, "Terminated", 30)
            assert.are.equal(204, F.call(srv, "b", "DELETE", path(id)).status)
            local expected = { "none>Pending", "Pending>Running", "Running>Terminated", "Terminated>Stopping",
                "Stopping>Deleted" }
            local lines = F.wait_lines(srv, function(l)
                return msg_is(l, "transition") and l.sandbox_id == id
            end, #expected, 10, "transition")
            local seen = {}
            for i, l in ipairs(lines) do
                assert.are.equal("team-b", l.owner)
                seen[i] = l.from .. ">" .. l.to
            end
            assert.are.same(expected, seen)
        end)
    end)
end)
