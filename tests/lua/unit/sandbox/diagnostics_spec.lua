-- Unit spec of the diagnostics (lua/sandbox/diagnostics.lua), the recorded status changes (model.lua
-- `transitions`) and renew on access (lua/sandbox/access_renew.lua), on the fake runtime and fake core.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local rterrors = require("runtimes.errors")
local model = require("sandbox.model")
local timefmt = require("common.timefmt")
local diag = require("sandbox.diagnostics")

local KEY = "access.renew.extend.seconds"

local function lines_of(text)
    local out = {}
    for l in text:gmatch("([^\n]*)\n") do
        out[#out + 1] = l
    end
    return out
end

describe("model transitions", function()
    it("notes every change of state, reason or message, copying the list, and keeps the newest", function()
        local rec = model.new_record("a", S.spec(), S.T0)
        assert.are.equal(1, #rec.transitions)
        local before = rec.transitions
        model.apply_status(rec, model.status("Running", "CONTAINER_RUNNING", "up", S.T0 + 1))
        model.apply_status(rec, model.status("Running", "CONTAINER_RUNNING", "up", S.T0 + 2)) -- no change
        assert.are.equal(1, #before)
        assert.are.same({ at = string.format("%d", S.T0 + 1), state = "Running", reason = "CONTAINER_RUNNING",
            message = "up" }, rec.transitions[2])
        assert.are.equal(2, #rec.transitions)
        for i = 1, model.MAX_TRANSITIONS + 10 do
            model.apply_status(rec, model.status("Running", "R", "m" .. i, S.T0 + 10 + i))
        end
        assert.are.equal(model.MAX_TRANSITIONS, #rec.transitions)
        assert.are.equal("m" .. (model.MAX_TRANSITIONS + 10), rec.transitions[model.MAX_TRANSITIONS].message)
        -- an earlier time (a runtime's coarser clock) does not go back in the list
        model.apply_status(rec, model.status("Paused", "P", "p", S.T0))
        local last = rec.transitions[#rec.transitions]
        assert.are.equal("p", last.message)
        assert.are.equal(string.format("%d", S.T0 + 10 + model.MAX_TRANSITIONS + 10), last.at)
    end)
end)

describe("diagnostics.bounded_text", function()
    it("keeps the newest lines that fit and says when it cut", function()
        assert.are.same({ "a\nb\n", false }, { diag.bounded_text({ "a", "b" }, 4) })
        assert.are.same({ "b\n", true }, { diag.bounded_text({ "a", "b" }, 3) })
        assert.are.same({ "", false }, { diag.bounded_text({}, 3) })
        -- a line longer than the limit keeps its tail
        assert.are.same({ "efg\n", true }, { diag.bounded_text({ "abcdefg" }, 4) })
    end)
end)

describe("sandbox.service diagnostics", function()
    it("renders the status changes as lifecycle events, kept in the store with the record", function()
        local env = S.env()
        local id = env:running()
        env:advance(5)
        assert(env:op("pause", id))
        env:advance(5)
        assert(env:op("resume", id))
        local d = assert(env:op("diagnostic_events", id, "lifecycle", {}))
        assert.are.equal(id, d.sandboxId)
        assert.are.equal("events", d.kind)
        assert.are.equal("lifecycle", d.scope)
        assert.are.equal("inline", d.delivery)
        assert.are.equal("text/plain; charset=utf-8", d.contentType)
        assert.is_false(d.truncated)
        assert.are.equal(#d.content, d.contentLength)
        local ls = lines_of(d.content)
        assert.are.equal(4, #ls)
        assert.are.equal(timefmt.format(S.T0) .. " lifecycle Pending CONTAINER_STARTING: ",
            ls[1]:sub(1, #timefmt.format(S.T0) + 39))
        assert.matches(" lifecycle Running CONTAINER_RUNNING: ", ls[2], 1, true)
        assert.matches(timefmt.format(S.T0 + 5000000) .. " lifecycle Paused CONTAINER_PAUSED: ", ls[3], 1, true)
        assert.matches(" lifecycle Running CONTAINER_RUNNING: ", ls[4], 1, true)
        -- durable: the store's row has them
        assert.are.equal(4, #env.store.rows[id].transitions)
        -- the runtime's exit is one more
        env.rt:set_status("fake-1", "Failed", "CONTAINER_EXITED_ERROR", model.exited_error_message(137, true))
        env:watch()
        d = assert(env:op("diagnostic_events", id, "lifecycle", {}))
        assert.matches("lifecycle Failed CONTAINER_EXITED_ERROR: " .. model.exited_error_message(137, true),
            d.content, 1, true)
    end)

    it("merges runtime events with the lifecycle by time for scope all, and answers runtime alone", function()
        local env = S.env()
        local id = env:running()
        env.rt:event("fake-1", S.T0 - 1, "pulled")
        env.rt:event("fake-1", S.T0 + 1, "started")
        local d = assert(env:op("diagnostic_events", id, "runtime", {}))
        assert.are.same({ timefmt.format(S.T0 - 1) .. " pulled", timefmt.format(S.T0 + 1) .. " started" },
            lines_of(d.content))
        d = assert(env:op("diagnostic_events", id, "all", {}))
        local ls = lines_of(d.content)
        assert.are.equal(4, #ls)
        assert.matches(" pulled$", ls[1])
        assert.matches(" lifecycle Pending", ls[2], 1, true)
        assert.is_nil(d.warnings)
    end)

    it("caps runtime events at max_events and the text at max_bytes, saying truncated only then", function()
        local env = S.env({ config = { server = {}, diagnostics = { max_events = 2, max_bytes = 1024 } } })
        local id = env:running()
        for i = 1, 2 do
            env.rt:event("fake-1", S.T0 + i, "e" .. i)
        end
        local d = assert(env:op("diagnostic_events", id, "runtime", {}))
        assert.is_false(d.truncated)
        env.rt:event("fake-1", S.T0 + 3, "e3")
        d = assert(env:op("diagnostic_events", id, "runtime", {}))
        assert.is_true(d.truncated)
        assert.are.same({ timefmt.format(S.T0 + 2) .. " e2", timefmt.format(S.T0 + 3) .. " e3" }, lines_of(d.content))
    end)

    it("gives the container's output, newest lines within the limits", function()
        local env = S.env({ config = { server = {}, diagnostics = { max_log_lines = 3, max_bytes = 1024 } } })
        local id = env:running()
        env.rt:write("fake-1", "out one")
        env.rt:write("fake-1", "err two")
        local d = assert(env:op("diagnostic_logs", id, "container", {}))
        assert.are.equal("logs", d.kind)
        assert.are.equal("container", d.scope)
        assert.are.equal("out one\nerr two\n", d.content)
        assert.is_false(d.truncated)
        for i = 3, 5 do
            env.rt:write("fake-1", "line " .. i)
        end
        d = assert(env:op("diagnostic_logs", id, "all", {}))
        assert.are.equal("line 3\nline 4\nline 5\n", d.content)
        assert.is_true(d.truncated)
        -- bytes: 1024 at most, the newest kept
        env.rt.objects["fake-1"].output = { string.rep("x", 600), string.rep("y", 600) }
        d = assert(env:op("diagnostic_logs", id, "container", {}))
        assert.are.equal(string.rep("y", 600) .. "\n", d.content)
        assert.is_true(d.truncated)
    end)

    it("hides another principal's sandbox (404) and answers a sandbox without container with a warning", function()
        local env = S.env()
        local id = env:running(S.spec(), { principal = "alice", admin = false })
        local _, err = env:op("diagnostic_logs", id, "container", { principal = "bob", admin = false })
        assert.are.equal(404, err.status)
        _, err = env:op("diagnostic_events", id, "all", { principal = "bob", admin = false })
        assert.are.equal(404, err.status)
        _, err = env:op("diagnostic_logs", "nope", "container", {})
        assert.are.equal(404, err.status)
        assert(env:op("diagnostic_logs", id, "container", { principal = "alice", admin = false }))
        -- a failed provisioning has no container: empty text, a warning, nothing asked of the runtime
        env.rt:fail_next("provision", rterrors.new("api", "no such image", { step = "image" }))
        local view = assert(env:create())
        env:run()
        local d = assert(env:op("diagnostic_logs", view.id, "container", {}))
        assert.are.equal("", d.content)
        assert.matches("has no container", d.warnings[1], 1, true)
        assert.are.equal(1, #env:calls("diagnostic_logs")) -- alice's only
    end)

    it("maps runtime failures: unavailable is 503, a gone container a warning, others 500", function()
        local env = S.env()
        local id = env:running()
        env.rt:fail_next("diagnostic_logs", rterrors.new("not_found", "No such container"))
        local d = assert(env:op("diagnostic_logs", id, "container", {}))
        assert.matches("No such container", d.warnings[1], 1, true)
        env.rt:fail_next("diagnostic_events", rterrors.new("api", "boom"))
        local _, err = env:op("diagnostic_events", id, "runtime", {})
        assert.are.equal(500, err.status)
        assert.are.equal("SANDBOX::DIAGNOSTICS_FAILED", err.code)
        env.rt:fail_next("diagnostic_logs", rterrors.new("unavailable", "down"))
        _, err = env:op("diagnostic_logs", id, "container", {})
        assert.are.equal(503, err.status)
    end)

    it("answers 501 when the runtime has no diagnostics", function()
        local rt = require("runtimes.fake").new({})
        rt.diagnostic_logs = false
        local env = S.env({ runtime = rt })
        local id = env:running()
        local _, err = env:op("diagnostic_logs", id, "container", {})
        assert.are.equal(501, err.status)
        assert.are.equal("DIAGNOSTICS_NOT_IMPLEMENTED", err.code)
    end)
end)

describe("sandbox.service renew on access", function()
    local function ext(n)
        return S.spec({ extensions = { [KEY] = tostring(n) } })
    end

    it("moves the expiry to now + N on proxy traffic, once per cooldown, durably", function()
        local env = S.env()
        local id = env:running(ext(1800)) -- expires at T0 + 600
        local puts = env.store.puts
        -- a burst before the background task runs starts one renewal
        assert(env.svc:proxy_target(id, 8080, {}))
        assert(env.svc:proxy_target(id, 8080, {}))
        env:run()
        assert.are.equal(S.T0 + 1800 * 1000000, env.svc.records[id].expires_us)
        assert.are.equal(S.T0 + 1800 * 1000000, env.store.rows[id].expires_us)
        assert.are.equal(puts + 1, env.store.puts)
        assert.are.equal(1800, env.svc.timers[id].delay)
        -- inside the cooldown (60 s): no renewal
        env:advance(30)
        assert(env.svc:proxy_target(id, 8080, {}))
        env:run()
        assert.are.equal(S.T0 + 1800 * 1000000, env.svc.records[id].expires_us)
        assert.are.equal(puts + 1, env.store.puts)
        -- after it: renewed again
        env:advance(31)
        assert(env.svc:proxy_target(id, 8080, {}))
        env:run()
        assert.are.equal(S.T0 + 61000000 + 1800 * 1000000, env.svc.records[id].expires_us)
        assert.are.equal(puts + 2, env.store.puts)
    end)

    it("does nothing while now + N is not later than the expiry, then renews", function()
        local env = S.env()
        local id = env:running(ext(300)) -- expires at T0 + 600: due from T0 + 300
        assert.are.equal(S.T0 + 300 * 1000000, env.svc.renew_due[id])
        local puts = env.store.puts
        env:advance(100)
        assert(env.svc:proxy_target(id, 8080, {}))
        env:run()
        assert.are.equal(puts, env.store.puts)
        env:advance(201)
        assert(env.svc:proxy_target(id, 8080, {}))
        env:run()
        assert.are.equal(S.T0 + 601000000, env.svc.records[id].expires_us)
    end)

    it("never renews a sandbox without the extension, with renew_intent off, or not running", function()
        local env = S.env()
        local plain = env:running()
        assert.is_nil(env.svc.renew_due[plain])
        local off = S.env({ config = { server = {}, renew_intent = { enabled = false } } })
        local id = off:running(ext(1800))
        assert.is_nil(off.svc.renew_due[id])
        assert(off.svc:proxy_target(id, 8080, {}))
        off:run()
        assert.are.equal(S.T0 + 600 * 1000000, off.svc.records[id].expires_us)
        local env2 = S.env()
        local p = env2:running(ext(1800))
        assert(env2:op("pause", p))
        assert.is_nil(env2.svc.renew_due[p])
        assert(env2:op("resume", p))
        assert.is_not_nil(env2.svc.renew_due[p])
        assert(env2:op("delete", p))
        assert.is_nil(env2.svc.renew_due[p])
        assert.is_nil(env2.svc.renew_last[p])
    end)

    it("does not renew for traffic an on_proxy_request hook refuses", function()
        local hooks = S.hooks()
        local env = S.env({ hooks = hooks })
        local id = env:running(ext(1800))
        local allow = hooks.on_proxy_request
        hooks.on_proxy_request = function()
            return nil, { status = 403, code = "HOOK::REJECTED", message = "no" }
        end
        local _, err = env.svc:proxy_target(id, 8080, {})
        assert.are.equal("no", err.message)
        env:run()
        assert.are.equal(S.T0 + 600 * 1000000, env.svc.records[id].expires_us)
        hooks.on_proxy_request = allow
        assert(env.svc:proxy_target(id, 8080, {}))
        env:run()
        assert.are.equal(S.T0 + 1800 * 1000000, env.svc.records[id].expires_us)
    end)

    it("writes the renewal where the runtime keeps expiries, and skips it when that fails", function()
        local rt = require("runtimes.fake").new({ fake = { keeps_expiry = true } })
        local env = S.env({ runtime = rt })
        local id = env:running(ext(1800))
        rt:fail_next("set_expiry", rterrors.new("api", "conflict"))
        assert(env.svc:proxy_target(id, 8080, {}))
        env:run()
        assert.are.equal(S.T0 + 600 * 1000000, env.svc.records[id].expires_us)
        env:advance(61)
        assert(env.svc:proxy_target(id, 8080, {}))
        env:run()
        assert.are.equal(S.T0 + 61000000 + 1800 * 1000000, env.svc.records[id].expires_us)
        assert.are.equal(S.T0 + 61000000 + 1800 * 1000000, rt.objects["fake-1"].sandbox.expires_us)
    end)
end)
