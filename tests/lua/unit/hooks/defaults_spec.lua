-- The default hooks shipped in hooks/: naming, metadata, quotas.
local S = dofile("tests/lua/unit/hooks/support.lua")
local hooks = require("hooks")

local ID = "0123abcd-1111-4111-8111-111111111111"

local function ctx(principal, admin)
    return { request_id = "req-1", principal = principal or "team-a", admin = admin or false }
end

-- The shipped hooks with `config`; `records` is the live set the quotas hook counts (id -> record).
local function defaults(config, records)
    local log = S.log()
    local h, err = hooks.new({
        dir = "hooks",
        config = config,
        log = log,
        sandboxes = function()
            return records or {}
        end,
    })
    return h, err, log
end

local function running(principal, t)
    t = t or {}
    return { state = t.state or "Running", principal = principal, metadata = t.metadata or {},
        nano_cpus = t.nano_cpus, memory = t.memory }
end

describe("default hooks", function()
    it("load in the documented order and change nothing without configuration", function()
        local h = assert(defaults({}))
        assert.same({ "metadata", "naming", "quotas" }, h:names())
        local spec = S.spec({ metadata = { team = "infra" }, env = { { "A", "1" } } })
        local out = assert(h:before_create(ctx(), spec))
        assert.same({ team = "infra" }, out.metadata)
        assert.same({ { "A", "1" } }, out.env)
        assert.equal("sandbox-" .. ID, h:sandbox_name(ctx(), out, { id = ID }))
    end)
end)

describe("default hook naming", function()
    local function name(template, spec, c)
        local h = assert(defaults({ naming = { template = template } }))
        return h:sandbox_name(c or ctx(), spec or S.spec(), { id = ID })
    end

    it("expands {id}, {id8}, {principal} and {metadata.KEY}", function()
        assert.equal("infra-0123abcd", name("{metadata.team}-{id8}", S.spec({ metadata = { team = "infra" } })))
        assert.equal("team-a-" .. ID, name("{principal}-{id}"))
        assert.equal("sandbox-" .. ID, name(nil))
    end)

    it("sanitizes the result into a valid Docker name", function()
        assert.equal("a-b-0123abcd", name("{metadata.who}-{id8}", S.spec({ metadata = { who = "a/b" } })))
        -- a missing key expands to "": the leading '-' is dropped
        assert.equal("0123abcd", name("{metadata.none}-{id8}"))
        assert.equal("x.y_z-0123abcd", name("x.y_z-{id8}"))
        -- nothing valid left: the server default
        assert.equal("sandbox-" .. ID, name("{metadata.none}"))
    end)

    it("checks its config and warns when names could collide", function()
        local h, err = defaults({ naming = { template = 42 } })
        assert.is_nil(h)
        assert.matches("naming.lua: hook 'naming' init: template must be a non%-empty string", err)
        local log
        h, err, log = defaults({ naming = { template = "fixed" } })
        assert.is_table(h, err)
        assert.is_table(log.find("warn", "neither {id} nor {id8}"))
    end)
end)

describe("default hook metadata", function()
    it("forces configured metadata and env, with templates", function()
        local h = assert(defaults({ metadata = { metadata = { owner = "{principal}" }, env = { TZ = "UTC" } } }))
        local spec = S.spec({ metadata = { owner = "someone-else", team = "x" }, env = { { "TZ", "CET" },
            { "A", "1" } } })
        local out = assert(h:before_create(ctx("team-a"), spec))
        assert.same({ owner = "team-a", team = "x" }, out.metadata)
        assert.same({ { "TZ", "UTC" }, { "A", "1" } }, out.env)
    end)

    it("sets defaults only where the caller sent nothing", function()
        local h = assert(defaults({ metadata = { metadata_defaults = { team = "none" },
            env_defaults = { LANG = "C.UTF-8", A = "default" } } }))
        local out = assert(h:before_create(ctx(), S.spec({ env = { { "A", "mine" } } })))
        assert.same({ team = "none" }, out.metadata)
        table.sort(out.env, function(a, b)
            return a[1] < b[1]
        end)
        assert.same({ { "A", "mine" }, { "LANG", "C.UTF-8" } }, out.env)
        out = assert(h:before_create(ctx(), S.spec({ metadata = { team = "infra" } })))
        assert.same({ team = "infra" }, out.metadata)
    end)

    it("makes injected values valid label values", function()
        local h = assert(defaults({ metadata = { metadata = { owner = "{principal}" } } }))
        local out = assert(h:before_create(ctx("alice@example.com/"), S.spec()))
        assert.equal("alice-example.com", out.metadata.owner)
        assert.is_true(require("sandbox.validate").metadata_label("owner", out.metadata.owner))
    end)

    it("rejects invalid keys in its config at load", function()
        local h, err = defaults({ metadata = { metadata = { ["opensandbox.io/x"] = "v" } } })
        assert.is_nil(h)
        assert.matches("hook 'metadata' init: metadata: Metadata key 'opensandbox.io/x' uses the reserved prefix",
            err, 1, true)
        h, err = defaults({ metadata = { env = { ["A=B"] = "v" } } })
        assert.is_nil(h)
        assert.matches("env: invalid variable name 'A=B'", err, 1, true)
    end)
end)

describe("default hook quotas", function()
    it("limits live sandboxes per principal, naming the limit", function()
        local records = { s1 = running("team-a"), s2 = running("team-b"), s3 = running("team-a", { state = "Failed" }) }
        local h = assert(defaults({ quotas = { principals = { ["team-a"] = { max_sandboxes = 2 } } } }, records))
        assert.is_table(h:before_create(ctx("team-a"), S.spec()))
        records.s4 = running("team-a", { state = "Pending" })
        local out, err = h:before_create(ctx("team-a"), S.spec())
        assert.is_nil(out)
        assert.equal(429, err.status)
        assert.equal("QUOTA::EXCEEDED", err.code)
        assert.equal("Quota exceeded for principal 'team-a': max_sandboxes 2 reached.", err.message)
        assert.is_table(h:before_create(ctx("team-b"), S.spec()), "another principal is not limited")
    end)

    it("applies the '*' entry to principals without one of their own", function()
        local records = { s1 = running("team-c") }
        local h = assert(defaults({ quotas = { principals = { ["*"] = { max_sandboxes = 1 },
            ["team-a"] = { max_sandboxes = 5 } } } }, records))
        local _, err = h:before_create(ctx("team-c"), S.spec())
        assert.equal("Quota exceeded for principal 'team-c': max_sandboxes 1 reached.", err.message)
        records.s2 = running("team-a")
        assert.is_table(h:before_create(ctx("team-a"), S.spec()))
    end)

    it("limits total cpu and memory, and needs limits on the request while they apply", function()
        local records = { s1 = running("team-a", { nano_cpus = 1500000000, memory = 1073741824 }) }
        local h = assert(defaults({ quotas = { principals = { ["team-a"] = { max_cpus = 2, max_memory = "2Gi" } } } },
            records))
        assert.is_table(h:before_create(ctx(), S.spec({ nano_cpus = 500000000, memory = 1073741824 })))
        local _, err = h:before_create(ctx(), S.spec({ nano_cpus = 1000000000, memory = 536870912 }))
        assert.equal("Quota exceeded for principal 'team-a': max_cpus 2 (in use 1.5, requested 1).", err.message)
        _, err = h:before_create(ctx(), S.spec({ nano_cpus = 100000000, memory = 2147483648 }))
        assert.equal("Quota exceeded for principal 'team-a': max_memory 2Gi (in use 1073741824 bytes, "
            .. "requested 2147483648 bytes).", err.message)
        _, err = h:before_create(ctx(), S.spec({ memory = 1073741824 }))
        assert.equal("Quota exceeded for principal 'team-a': max_cpus 2 needs a cpu limit in resourceLimits.",
            err.message)
    end)

    it("counts resources remembered from sandbox_name when records do not carry them", function()
        local records = {}
        local h = assert(defaults({ quotas = { principals = { ["team-a"] = { max_cpus = "1500m" } } } }, records))
        local spec = assert(h:before_create(ctx(), S.spec({ nano_cpus = 1000000000 })))
        h:sandbox_name(ctx(), spec, { id = "s1" })
        records.s1 = running("team-a")
        local _, err = h:before_create(ctx(), S.spec({ nano_cpus = 1000000000 }))
        assert.equal("Quota exceeded for principal 'team-a': max_cpus 1500m (in use 1, requested 1).", err.message)
        h:after_transition({ id = "s1" }, "Running", "Deleted")
        records.s1 = nil
        assert.is_table(h:before_create(ctx(), S.spec({ nano_cpus = 1000000000 })))
    end)

    it("caps the timeout, and refuses manual cleanup under a max_timeout", function()
        local h = assert(defaults({ quotas = { principals = { ["*"] = { max_timeout = 3600 } } } }))
        assert.is_table(h:before_create(ctx(), S.spec({ timeout = 3600 })))
        local _, err = h:before_create(ctx(), S.spec({ timeout = 7200 }))
        assert.equal("Quota exceeded for principal 'team-a': max_timeout 3600s (requested 7200s).", err.message)
        _, err = h:before_create(ctx(), S.spec())
        assert.equal("Quota exceeded for principal 'team-a': max_timeout 3600s (requested no timeout).", err.message)
    end)

    it("limits per metadata value, seeing metadata the metadata hook injected", function()
        local records = { s1 = running("x", { metadata = { owner = "team-a" } }), s2 = running("y",
            { metadata = { owner = "team-b" } }) }
        local h = assert(defaults({
            metadata = { metadata = { owner = "{principal}" } },
            quotas = { metadata = { owner = { ["*"] = { max_sandboxes = 1 } } } },
        }, records))
        local _, err = h:before_create(ctx("team-a"), S.spec())
        assert.equal("Quota exceeded for metadata owner=team-a: max_sandboxes 1 reached.", err.message)
        assert.is_table(h:before_create(ctx("team-c"), S.spec()))
    end)

    it("can exempt admins", function()
        local records = { s1 = running("default") }
        local h = assert(defaults({ quotas = { admin_exempt = true, principals = { ["*"] = { max_sandboxes = 1 } } } },
            records))
        assert.is_table(h:before_create(ctx("default", true), S.spec()))
        assert.is_nil(h:before_create(ctx("default", false), S.spec()))
    end)

    it("rejects bad limits at load", function()
        local h, err = defaults({ quotas = { principals = { a = { max_sandbox = 1 } } } })
        assert.is_nil(h)
        assert.matches("principals.a: unknown limit 'max_sandbox'", err, 1, true)
        h, err = defaults({ quotas = { principals = { a = { max_memory = "8GB" } } } })
        assert.is_nil(h)
        assert.matches("principals.a.max_memory must be bytes", err, 1, true)
    end)
end)

describe("default hooks on metadata patches (before_patch_metadata)", function()
    local counters = require("sandbox.counters")

    -- the shipped hooks over `records`, with usage from the service's counters (as lua/main.lua wires it)
    local function with_counters(config, records)
        local c = counters.of(records)
        return assert(hooks.new({
            dir = "hooks",
            config = config,
            log = S.log(),
            now = function()
                return 1767225600
            end,
            sandboxes = function()
                return records
            end,
            usage = function(filter)
                return c:usage(filter)
            end,
        }))
    end

    local function rec(id, principal, t)
        local r = running(principal, t)
        r.id = id
        r.created_us = 1767225600 * 1000000
        r.expires_us = t and t.expires_us
        return r
    end

    local CONFIG = {
        metadata = { metadata = { owner = "{principal}" }, metadata_defaults = { team = "none-{principal}" } },
        quotas = { metadata = { team = { infra = { max_sandboxes = 1, max_memory = "64Mi" },
            ["*"] = { max_sandboxes = 2 } } } },
    }

    it("keep forced metadata forced: changing or removing owner is 403 METADATA::FORCED", function()
        local s1 = rec("s1", "team-a", { metadata = { owner = "team-a", team = "red" } })
        local h = with_counters(CONFIG, { s1 = s1 })
        local _, err = h:before_patch_metadata(ctx("team-a"), s1, { owner = "team-b" })
        assert.same({ 403, "METADATA::FORCED", "Metadata key 'owner' is set by the server and cannot be changed." },
            { err.status, err.code, err.message })
        _, err = h:before_patch_metadata(ctx("team-a"), s1, { owner = false })
        assert.equal("METADATA::FORCED", err.code)
        -- the admin too: forced means forced
        _, err = h:before_patch_metadata(ctx("ops", true), s1, { owner = "ops" })
        assert.equal("METADATA::FORCED", err.code)
        -- re-sending the current value is no change
        assert.same({ owner = "team-a", x = "1" }, h:before_patch_metadata(ctx("team-a"), s1, { owner = "team-a",
            x = "1" }))
    end)

    it("put a removed default back (templated with the owner)", function()
        local s1 = rec("s1", "team-a", { metadata = { owner = "team-a", team = "red" } })
        local h = with_counters({ metadata = CONFIG.metadata }, { s1 = s1 })
        assert.same({ team = "none-team-a", x = false }, h:before_patch_metadata(ctx("ops", true), s1,
            { team = false, x = false }))
    end)

    it("refuse moving a live sandbox into a full metadata quota bucket with 429 QUOTA::EXCEEDED", function()
        local records = {
            s1 = rec("s1", "team-a", { metadata = { team = "infra" }, memory = 33554432 }),
            s2 = rec("s2", "team-b", { metadata = { team = "red" }, memory = 33554432 }),
            s3 = rec("s3", "team-b", { metadata = { team = "blue" }, memory = 33554432 }),
            s4 = rec("s4", "team-b", { metadata = { team = "blue" }, memory = 33554432 }),
        }
        local h = with_counters(CONFIG, records)
        local _, err = h:before_patch_metadata(ctx("team-b"), records.s2, { team = "infra" })
        assert.same({ 429, "QUOTA::EXCEEDED", "Quota exceeded for metadata team=infra: max_sandboxes 1 reached." },
            { err.status, err.code, err.message })
        _, err = h:before_patch_metadata(ctx("team-b"), records.s2, { team = "blue" })
        assert.equal("Quota exceeded for metadata team=blue: max_sandboxes 2 reached.", err.message)
        -- a bucket with room, or the sandbox's own value, passes
        assert.same({ team = "green" }, h:before_patch_metadata(ctx("team-b"), records.s2, { team = "green" }))
        assert.same({ team = "blue" }, h:before_patch_metadata(ctx("team-b"), records.s3, { team = "blue" }))
        -- a sandbox that is not live counts nowhere
        local failed = rec("s5", "team-b", { state = "Failed", metadata = { team = "red" } })
        assert.is_table(h:before_patch_metadata(ctx("team-b"), failed, { team = "infra" }))
    end)

    it("check the moved sandbox's memory and lifetime against the bucket's limits", function()
        local records = { s2 = rec("s2", "team-b", { metadata = { team = "red" }, memory = 134217728 }) }
        local h = with_counters({ quotas = { metadata = { team = { infra = { max_memory = "64Mi" },
            long = { max_timeout = 600 } } } } }, records)
        local _, err = h:before_patch_metadata(ctx("team-b"), records.s2, { team = "infra" })
        assert.equal("Quota exceeded for metadata team=infra: max_memory 64Mi (in use 0 bytes, requested "
            .. "134217728 bytes).", err.message)
        _, err = h:before_patch_metadata(ctx("team-b"), records.s2, { team = "long" })
        assert.equal("Quota exceeded for metadata team=long: max_timeout 600s (requested no timeout).", err.message)
        records.s2.expires_us = (1767225600 + 300) * 1000000
        assert.is_table(h:before_patch_metadata(ctx("team-b"), records.s2, { team = "long" }))
    end)

    it("a hook's invalid patch is refused: label rules 400 naming the hook, other values HOOK::FAILED", function()
        local dir = S.dir({
            ["bad.lua"] = [[
                local M = { name = "bad", priority = 1 }
                function M.before_patch_metadata(ctx, sandbox, patch)
                    if patch.mode == "label" then
                        patch["Bad Key"] = "x"
                    elseif patch.mode == "type" then
                        return { mode = 42 }
                    end
                end
                return M
            ]],
        })
        local h = assert(hooks.new({ dir = dir, log = S.log() }))
        local s1 = rec("s1", "team-a", {})
        local _, err = h:before_patch_metadata(ctx(), s1, { mode = "label" })
        assert.equal(400, err.status)
        assert.equal("SANDBOX::INVALID_METADATA_LABEL", err.code)
        assert.matches("(set by hook 'bad')", err.message, 1, true)
        _, err = h:before_patch_metadata(ctx(), s1, { mode = "type" })
        assert.equal(500, err.status)
        assert.equal("HOOK::FAILED", err.code)
        assert.same({ mode = "ok" }, h:before_patch_metadata(ctx(), s1, { mode = "ok" }))
        S.rmdir(dir)
    end)
end)
