-- The hooks framework (lua/hooks): loading, ordering, rejection, failures naming the hook, budgets, the
-- environment, reload, and each hook point's contract with the service.
local S = dofile("tests/lua/unit/hooks/support.lua")
local hooks = require("hooks")
local budget = require("hooks.budget")

local CTX = { request_id = "req-1", principal = "team-a", admin = false, host = "h", remote_addr = "192.0.2.1" }

local function new(files, opts)
    local dir = S.dir(files)
    opts = opts or {}
    opts.dir = dir
    opts.log = opts.log or S.log()
    local h, err = hooks.new(opts)
    return h, err, dir, opts.log
end

describe("hooks loading", function()
    local dir, _
    after_each(function()
        if dir then
            S.rmdir(dir)
            dir = nil
        end
    end)

    it("loads every *.lua file and orders hooks by priority, highest first, ties by name", function()
        local h, err
        h, err, dir = new({
            ["a.lua"] = S.hook("low", 1),
            ["b.lua"] = S.hook("high", 50),
            ["c.lua"] = S.hook("mid-b", 10),
            ["d.lua"] = S.hook("mid-a", 10),
            ["notes.txt"] = "not a hook",
        })
        assert.is_table(h, err)
        assert.same({ "high", "mid-a", "mid-b", "low" }, h:names())
    end)

    it("runs before_create hooks in priority order, each seeing the changes of the previous", function()
        local h
        h, _, dir = new({
            ["1.lua"] = S.hook("second", 5, [[before_create = function(ctx, spec)
                spec.metadata.order = spec.metadata.order .. "-second" end,]]),
            ["2.lua"] = S.hook("first", 9, [[before_create = function(ctx, spec)
                spec.metadata.order = "first" end,]]),
        })
        local spec = S.spec()
        local out = assert(h:before_create(CTX, spec))
        assert.equal("first-second", out.metadata.order)
        assert.is_nil(spec.metadata.order, "the caller's spec is not changed")
    end)

    it("fails the load with a message naming the file for bad hook tables", function()
        local cases = {
            { "return 42", "x.lua: must return a table, got number" },
            { "return { priority = 1 }", "x.lua: name must be" },
            { 'return { name = "n" }', "x.lua: hook 'n': priority must be an integer" },
            { 'return { name = "n", priority = 1, before_creat = function() end }',
                "x.lua: hook 'n': unknown field 'before_creat'" },
            { 'return { name = "n", priority = 1, before_create = 1 }', "before_create must be a function" },
            { "return {", "x.lua:1:" },
            { 'error("boom")', "x.lua: x.lua:1: boom" },
        }
        for _, c in ipairs(cases) do
            local h, err, d = new({ ["x.lua"] = c[1] })
            S.rmdir(d)
            assert.is_nil(h, c[1])
            assert.matches(c[2], err, 1, true)
        end
    end)

    it("refuses two hooks with the same name", function()
        local h, err
        h, err, dir = new({ ["a.lua"] = S.hook("same", 1), ["b.lua"] = S.hook("same", 2) })
        assert.is_nil(h)
        assert.equal("b.lua: hook name 'same' is already used by a.lua", err)
    end)

    it("passes hooks.config.<name> to init, and a failing init fails the load", function()
        local src = S.hook("cfg", 1, [[
            init = function(config)
                if type(config.limit) ~= "number" then return nil, "limit must be a number" end
                return true
            end,
            before_create = function(ctx, spec) end,]])
        local h, err
        h, err, dir = new({ ["cfg.lua"] = src }, { config = { cfg = { limit = "x" } } })
        assert.is_nil(h)
        assert.equal("cfg.lua: hook 'cfg' init: limit must be a number", err)
        S.rmdir(dir)
        h, err, dir = new({ ["cfg.lua"] = src }, { config = { cfg = { limit = 3 } } })
        assert.is_table(h, err)
    end)

    it("warns about config for a hook that is not loaded", function()
        local h, log
        h, _, dir, log = new({ ["a.lua"] = S.hook("a", 1) }, { config = { quotass = {} } })
        assert.is_table(h)
        assert.is_table(log.find("warn", "hooks.config.quotass: no hook of that name is loaded"))
    end)

    it("does not let a hook file create globals", function()
        local h, err
        h, err, dir = new({ ["g.lua"] = "leak = 1\n" .. S.hook("g", 1) })
        assert.is_nil(h)
        assert.matches("g.lua:1: cannot create global 'leak' (declare it local)", err, 1, true)
        assert.is_nil(rawget(_G, "leak"))
        S.rmdir(dir)
        -- nor from inside a hook function: the create fails naming the hook
        h, err, dir = new({ ["g.lua"] = S.hook("g", 1, "before_create = function() counter = 1 end,") })
        assert.is_table(h, err)
        local out, herr = h:before_create(CTX, S.spec())
        assert.is_nil(out)
        assert.equal(500, herr.status)
        assert.equal("HOOK::FAILED", herr.code)
        assert.matches("^Hook 'g' failed in before_create: g.lua:2: cannot create global 'counter'", herr.message)
        assert.is_nil(rawget(_G, "counter"))
    end)

    it("gives hooks only the safe libraries", function()
        local h
        h, _, dir = new({ ["e.lua"] = S.hook("e", 1, [[before_create = function(ctx, spec)
            spec.metadata.io = tostring(io == nil)
            spec.metadata.require = tostring(require == nil)
            spec.metadata.load = tostring(load == nil)
            spec.metadata.debug = tostring(debug == nil)
            spec.metadata.string_mt = tostring(getmetatable("") == nil)
            spec.metadata.os_execute = tostring(os.execute == nil)
            string.upper = nil
        end,]]) })
        local out = assert(h:before_create(CTX, S.spec()))
        for _, k in ipairs({ "io", "require", "load", "debug", "string_mt", "os_execute" }) do
            assert.equal("true", out.metadata[k], k)
        end
        assert.is_function(string.upper, "a hook changes its own copy of string only")
    end)
end)

describe("hooks rejection and failures", function()
    local dir, _
    after_each(function()
        if dir then
            S.rmdir(dir)
            dir = nil
        end
    end)

    it("turns a returned {status, code, message} into an error object and stops the chain", function()
        local h
        h, _, dir = new({
            ["a.lua"] = S.hook("gate", 10, [[before_create = function(ctx, spec)
                return nil, { status = 403, code = "POLICY::DENIED", message = "No GPUs for " .. ctx.principal }
            end,]]),
            ["b.lua"] = S.hook("after", 1, [[before_create = function(ctx, spec) error("must not run") end,]]),
        })
        local out, err = h:before_create(CTX, S.spec())
        assert.is_nil(out)
        assert.equal(403, err.status)
        assert.equal("POLICY::DENIED", err.code)
        assert.equal("No GPUs for team-a", err.message)
        assert.is_true(require("common.errors").is(err))
    end)

    it("uses opensandbox.reject and fills in what a rejection leaves out", function()
        local h
        h, _, dir = new({ ["a.lua"] = S.hook("r", 1, [[
            before_create = function() return opensandbox.reject(429, "QUOTA::EXCEEDED", "too many") end,
            before_delete = function() return false end,]]) })
        local _, err = h:before_create(CTX, S.spec())
        assert.equal(429, err.status)
        assert.equal("too many", err.message)
        local ok, derr = h:before_delete(CTX, { id = "x" })
        assert.is_nil(ok)
        assert.equal(403, derr.status)
        assert.equal("HOOK::REJECTED", derr.code)
        assert.equal("Rejected by hook 'r'.", derr.message)
    end)

    it("answers 500 HOOK::FAILED naming the hook and the point when a hook raises, and logs it", function()
        local h, log
        h, _, dir, log = new({ ["q.lua"] = S.hook("quotas", 1, [[before_create = function(ctx, spec)
            local t = nil
            return t.field
        end,]]) })
        local out, err = h:before_create(CTX, S.spec())
        assert.is_nil(out)
        assert.equal(500, err.status)
        assert.equal("HOOK::FAILED", err.code)
        assert.matches("^Hook 'quotas' failed in before_create: q.lua:4: attempt to index", err.message)
        local line = log.find("error", "hook failed")
        assert.equal("quotas", line.fields.hook)
        assert.equal("before_create", line.fields.point)
        assert.equal("req-1", line.fields.request_id)
    end)

    it("stops an endless loop with the instruction budget, also through the hook's own pcall", function()
        local h
        h, _, dir = new({
            ["loop.lua"] = S.hook("spin", 1, [[before_create = function()
                while true do pcall(function() while true do end end) end
            end,]]),
        }, { limits = { instructions = 200000 } })
        local out, err = h:before_create(CTX, S.spec())
        assert.is_nil(out)
        assert.equal(500, err.status)
        assert.equal("Hook 'spin' failed in before_create: instruction budget exceeded (200000 instructions)",
            err.message)
        -- the server goes on: the next call runs normally
        assert.is_nil(debug.gethook())
    end)

    it("stops a hook that allocates without bound with the memory budget", function()
        local h
        h, _, dir = new({ ["mem.lua"] = S.hook("hog", 1, [[before_create = function()
            local t = {}
            for i = 1, 1e9 do t[i] = { i, i + 1, i + 2 } end
        end,]]) }, { limits = { memory_kb = 8 * 1024 } })
        local out, err = h:before_create(CTX, S.spec())
        assert.is_nil(out)
        assert.equal("Hook 'hog' failed in before_create: memory budget exceeded (8192 KB)", err.message)
        assert.is_true(collectgarbage("count") < 64 * 1024, "the hog's memory was released")
    end)

    it("caps string.rep", function()
        local h
        h, _, dir = new({ ["rep.lua"] = S.hook("rep", 1, [[before_create = function()
            return string.rep("x", 1 << 30)
        end,]]) })
        local _, err = h:before_create(CTX, S.spec())
        assert.matches("^Hook 'rep' failed in before_create: .*string.rep: result of 1073741824 bytes", err.message)
    end)

    it("puts back a debug hook that was set before the call", function()
        local h
        h, _, dir = new({ ["a.lua"] = S.hook("a", 1, "before_create = function() end,") })
        local mine = function() end
        debug.sethook(mine, "", 1000000)
        h:before_create(CTX, S.spec())
        local fn, mask, count = debug.gethook()
        debug.sethook()
        assert.equal(mine, fn)
        assert.equal("", mask)
        assert.equal(1000000, count)
    end)

    it("enforces which point may call what, with a clear error", function()
        local h
        h, _, dir = new({ ["n.lua"] = S.hook("namer", 1, [[sandbox_name = function(ctx, spec, sb)
            opensandbox.http({ url = "http://example.invalid/" })
        end,]]) }, { http = function()
            error("must not be called")
        end })
        local log = h.log
        assert.equal("sandbox-abc", h:sandbox_name(CTX, S.spec(), { id = "abc" }))
        local line = log.find("error", "hook failed")
        assert.matches("opensandbox.http is not allowed in sandbox_name (allowed in: before_create, "
            .. "after_transition, before_delete)", line.fields.error, 1, true)
    end)

    it("budget.call reports errors of any type as text", function()
        local ok, msg = budget.call({}, function()
            error({ message = "structured" })
        end)
        assert.is_false(ok)
        assert.equal("structured", msg)
    end)
end)

describe("hooks points", function()
    local dir, _
    after_each(function()
        if dir then
            S.rmdir(dir)
            dir = nil
        end
    end)

    it("returns the spec unchanged (same table) when no hook implements before_create", function()
        local h
        h, _, dir = new({})
        local spec = S.spec()
        assert.equal(spec, h:before_create(CTX, spec))
    end)

    it("hides image.auth from hooks and restores the request's image afterwards", function()
        local h
        h, _, dir = new({ ["a.lua"] = S.hook("a", 1, [[before_create = function(ctx, spec)
            spec.metadata.saw_auth = tostring(spec.image.auth ~= nil)
            spec.image = { uri = "evil:latest" }
        end,]]) })
        local out = assert(h:before_create(CTX, S.spec({ auth = { username = "u", password = "p" } })))
        assert.equal("false", out.metadata.saw_auth)
        assert.equal("alpine:3", out.image.uri)
        assert.equal("u", out.image.auth.username)
    end)

    it("shows the snapshot a create starts from, and keeps the request's snapshot id", function()
        local h
        h, _, dir = new({ ["a.lua"] = S.hook("a", 1, [[before_create = function(ctx, spec)
            spec.metadata.from = spec.snapshot_id
            spec.snapshot_id = "another"
        end,]]) })
        local spec = S.spec()
        spec.snapshot_id = "snap-1"
        local out = assert(h:before_create(CTX, spec))
        assert.equal("snap-1", out.metadata.from)
        assert.equal("snap-1", out.snapshot_id)
    end)

    it("checks what hooks change: label rules give 400, other breakage 500 naming the hook", function()
        local h
        h, _, dir = new({ ["a.lua"] = S.hook("labels", 1, [[before_create = function(ctx, spec)
            spec.metadata["bad key!"] = "v"
        end,]]) })
        local _, err = h:before_create(CTX, S.spec())
        assert.equal(400, err.status)
        assert.equal("SANDBOX::INVALID_METADATA_LABEL", err.code)
        assert.matches("Metadata key 'bad key!' is invalid", err.message, 1, true)
        assert.matches("(set by hook 'labels')", err.message, 1, true)
        S.rmdir(dir)
        h, _, dir = new({ ["b.lua"] = S.hook("clamp", 1, [[before_create = function(ctx, spec)
            spec.timeout = 10
        end,]]) })
        _, err = h:before_create(CTX, S.spec())
        assert.equal(500, err.status)
        assert.equal("Hook 'clamp' failed in before_create: invalid spec: timeout must be nil or an integer >= 60",
            err.message)
    end)

    it("lets a hook replace the spec by returning a new table", function()
        local h
        h, _, dir = new({ ["a.lua"] = S.hook("a", 1, [[before_create = function(ctx, spec)
            local s = {}
            for k, v in pairs(spec) do s[k] = v end
            s.timeout = 600
            return s
        end,]]) })
        assert.equal(600, assert(h:before_create(CTX, S.spec())).timeout)
    end)

    it("sandbox_name: the first name wins; invalid names and failures fall back to sandbox-{id}", function()
        local h, log
        h, _, dir, log = new({
            ["a.lua"] = S.hook("first", 9, "sandbox_name = function(ctx, spec, sb) return nil end,"),
            ["b.lua"] = S.hook("second", 5, [[sandbox_name = function(ctx, spec, sb)
                return spec.metadata.name_as
            end,]]),
        })
        local rec = { id = "1234" }
        assert.equal("box-1", h:sandbox_name(CTX, S.spec({ metadata = { name_as = "box-1" } }), rec))
        assert.equal("sandbox-1234", h:sandbox_name(CTX, S.spec({ metadata = { name_as = "-bad" } }), rec))
        assert.is_table(log.find("warn", "invalid container name"))
        assert.equal("sandbox-1234", h:sandbox_name(CTX, S.spec({ metadata = { name_as = "a b" } }), rec))
        assert.equal("sandbox-1234", h:sandbox_name(CTX, S.spec(), rec))
        assert.is_true(hooks.valid_name("a.b_c-1"))
        assert.is_false(hooks.valid_name("_a"))
        assert.is_false(hooks.valid_name(string.rep("a", 201)))
    end)

    it("after_transition runs in a spawned task with a snapshot, and never raises into the service", function()
        local spawned = {}
        local h, log
        h, _, dir, log = new({
            ["a.lua"] = S.hook("hook-a", 2, [[after_transition = function(ctx, sb, from, to)
                opensandbox.log.info("transition", { id = sb.id, from = from or "none", to = to,
                    owner = ctx.principal, state = sb.status.state })
            end,]]),
            ["b.lua"] = S.hook("broken", 1, [[after_transition = function() error("webhook down") end,]]),
        }, { spawn = function(fn)
            spawned[#spawned + 1] = fn
        end })
        local rec = { id = "s1", state = "Running", reason = "CONTAINER_RUNNING", message = "m", metadata = {},
            entrypoint = { "x" }, created_us = 0, transition_us = 0, image_uri = "alpine", principal = "team-a" }
        h:after_transition(rec, "Pending", "Running")
        assert.equal(1, #spawned)
        assert.is_nil(log.find("info", "transition"), "nothing runs before the task does")
        rec.state = "Paused" -- the snapshot was taken at the call
        spawned[1]()
        local line = log.find("info", "transition")
        assert.same({ id = "s1", from = "Pending", to = "Running", owner = "team-a", state = "Running",
            hook = "hook-a" }, line.fields)
        assert.matches("webhook down", log.find("error", "hook failed").fields.error, 1, true)
        assert.has_no.errors(function()
            h:after_transition(nil, "a", "b")
        end)
    end)

    it("before_delete: true, or the rejection", function()
        local h
        h, _, dir = new({ ["a.lua"] = S.hook("keep", 1, [[before_delete = function(ctx, sb)
            if sb.metadata.protected == "true" and not ctx.admin then
                return nil, { status = 409, code = "POLICY::PROTECTED", message = "Sandbox is protected." }
            end
        end,]]) })
        assert.is_true(h:before_delete(CTX, { id = "a", metadata = {} }))
        local ok, err = h:before_delete(CTX, { id = "a", metadata = { protected = "true" } })
        assert.is_nil(ok)
        assert.equal(409, err.status)
        assert.is_true(h:before_delete({ admin = true }, { id = "a", metadata = { protected = "true" } }))
    end)

    it("on_proxy_request: merges decisions, and allow = false is a 403 naming the hook", function()
        local h
        h, _, dir = new({
            ["a.lua"] = S.hook("ports", 2, [[on_proxy_request = function(ctx, sb, req)
                if req.port == 22 then return { allow = false } end
            end,]]),
            ["b.lua"] = S.hook("renew", 1, [[on_proxy_request = function(ctx, sb, req)
                return { renew_seconds = 600 }
            end,]]),
        })
        assert.same({ allow = true, renew_seconds = 600 },
            h:on_proxy_request({}, { id = "s" }, { port = 8080, method = "GET", path = "/" }))
        local d, err = h:on_proxy_request({}, { id = "s" }, { port = 22, method = "GET", path = "/" })
        assert.is_nil(d)
        assert.equal(403, err.status)
        assert.equal("Access to port 22 denied by hook 'ports'.", err.message)
    end)

    it("opensandbox.http reaches the injected client with only the allowed fields", function()
        local seen
        local h
        h, _, dir = new({ ["w.lua"] = S.hook("webhook", 1, [[before_create = function(ctx, spec)
            local res, err = opensandbox.http({ method = "POST", url = "http://hooks.example/notify",
                body = opensandbox.json.encode({ who = ctx.principal }), unix_socket = "/var/run/docker.sock" })
            spec.metadata.webhook = tostring(res and res.status or err)
        end,]]) }, { http = function(req)
            seen = req
            return { status = 204, headers = {}, body = "" }
        end })
        local out = assert(h:before_create(CTX, S.spec()))
        assert.equal("204", out.metadata.webhook)
        assert.equal("http://hooks.example/notify", seen.url)
        assert.is_nil(seen.unix_socket)
        assert.equal('{"who":"team-a"}', seen.body)
        assert.equal(5, seen.timeout)
    end)
end)

describe("hooks view of the sandboxes", function()
    local dir, _
    after_each(function()
        if dir then
            S.rmdir(dir)
            dir = nil
        end
    end)

    it("sandboxes() gives read-only summaries and usage() sums the live ones", function()
        local records = {
            a = { state = "Running", principal = "p", metadata = { team = "x" }, nano_cpus = 100, memory = 10 },
            b = { state = "Paused", principal = "p", metadata = { team = "y" }, nano_cpus = 50 },
            c = { state = "Terminated", principal = "p", metadata = { team = "x" }, nano_cpus = 1000 },
            d = { state = "Running", principal = "q", metadata = { team = "x" }, memory = 5 },
        }
        local h
        h, _, dir = new({ ["v.lua"] = S.hook("viewer", 1, [[before_create = function(ctx, spec)
            local list = opensandbox.sandboxes()
            spec.metadata.n = tostring(#list)
            spec.metadata.write = tostring(pcall(function() list[1].state = "x" end))
            spec.metadata.write_md = tostring(pcall(function() list[1].metadata.team = "z" end))
            local u = opensandbox.usage({ principal = "p" })
            spec.metadata.p = string.format("%d-%d-%d", u.sandboxes, u.nano_cpus, u.memory)
            u = opensandbox.usage({ metadata = { team = "x" } })
            spec.metadata.x = string.format("%d-%d-%d", u.sandboxes, u.nano_cpus, u.memory)
        end,]]) }, { sandboxes = function()
            return records
        end })
        local out = assert(h:before_create(CTX, S.spec()))
        assert.equal("4", out.metadata.n)
        assert.equal("false", out.metadata.write)
        assert.equal("false", out.metadata.write_md)
        assert.equal("2-150-10", out.metadata.p)
        assert.equal("2-100-15", out.metadata.x)
        assert.equal("x", records.a.metadata.team)
        assert.equal("Running", records.a.state)
    end)
end)

describe("hooks in tasks that yield", function()
    local dir, _
    after_each(function()
        if dir then
            S.rmdir(dir)
            dir = nil
        end
    end)

    it("runs a hook that yields inside opensandbox.http on the task's own thread, budget and point kept", function()
        local h
        h, _, dir = new({
            ["w.lua"] = S.hook("webhook", 1, [[before_create = function(ctx, spec)
                local res = opensandbox.http({ url = "http://hooks.example/" })
                spec.metadata.status = tostring(res.status)
                -- still in before_create after the yield: sandboxes() is allowed, http too
                spec.metadata.count = tostring(#opensandbox.sandboxes())
                while spec.metadata.loop do end
            end,]]),
        }, {
            limits = { instructions = 100000 },
            http = function()
                return coroutine.yield("waiting")
            end,
            sandboxes = function()
                return { a = { state = "Running" } }
            end,
        })
        -- two "tasks" interleaved, as the core runs them
        local t1 = coroutine.create(function()
            return h:before_create(CTX, S.spec())
        end)
        local t2 = coroutine.create(function()
            return h:before_create(CTX, S.spec({ metadata = { loop = "yes" } }))
        end)
        assert.same({ true, "waiting" }, { coroutine.resume(t1) })
        assert.same({ true, "waiting" }, { coroutine.resume(t2) })
        assert.is_nil(debug.gethook(), "the budget hook is on the tasks' threads, not on this one")
        assert.is_function(debug.gethook(t1))
        local ok, out = coroutine.resume(t1, { status = 200 })
        assert.is_true(ok)
        assert.equal("200", out.metadata.status)
        assert.equal("1", out.metadata.count)
        assert.is_nil(debug.gethook(t1), "removed once the hook is done")
        local ok2, out2, err2 = coroutine.resume(t2, { status = 200 })
        assert.is_true(ok2)
        assert.is_nil(out2)
        assert.equal("Hook 'webhook' failed in before_create: instruction budget exceeded (100000 instructions)",
            err2.message)
    end)
end)

describe("hooks reload", function()
    local dir, _
    after_each(function()
        if dir then
            S.rmdir(dir)
            dir = nil
        end
    end)

    local function tag(value)
        return S.hook("tagger", 1, string.format([[before_create = function(ctx, spec)
            spec.metadata.tag = %q end,]], value))
    end

    it("swaps in the new files, and keeps the old set when any file fails to load", function()
        local h, log
        h, _, dir, log = new({ ["t.lua"] = tag("v1") })
        assert.equal("v1", assert(h:before_create(CTX, S.spec())).metadata.tag)

        S.write(dir, { ["t.lua"] = tag("v2") })
        assert.is_true(h:reload())
        assert.equal("v2", assert(h:before_create(CTX, S.spec())).metadata.tag)

        S.write(dir, { ["t.lua"] = tag("v3"), ["broken.lua"] = "return {" })
        local ok, err = h:reload()
        assert.is_nil(ok)
        assert.matches("^broken.lua:", err)
        assert.is_table(log.find("error", "hooks reload failed"))
        assert.equal("v2", assert(h:before_create(CTX, S.spec())).metadata.tag, "the old set stays")

        S.write(dir, { ["broken.lua"] = false })
        assert.is_true(h:reload())
        assert.equal("v3", assert(h:before_create(CTX, S.spec())).metadata.tag)
    end)

    it("takes a new hooks.config, and keeps the old one when it is rejected", function()
        local src = S.hook("c", 1, [[
            init = function(config) if config.bad then return nil, "bad config" end return true end,
            before_create = function(ctx, spec) spec.metadata.v = tostring(opensandbox_config_v) end,]])
        local h
        h, _, dir = new({ ["c.lua"] = src }, { config = { c = { v = 1 } } })
        assert.is_nil(h:reload({ config = { c = { bad = true } } }))
        assert.equal(1, h.config.c.v)
        assert.is_true(h:reload({ config = { c = { v = 2 } } }))
        assert.equal(2, h.config.c.v)
    end)
end)
