-- server.api_keys (tenants) and the hooks section of the configuration.
local config = require("config")

local function load_table(src, env)
    local p = os.tmpname()
    local f = assert(io.open(p, "wb"))
    f:write(src)
    f:close()
    local c, err, code = config.load(p, env or { HOME = "/home/u" }, { warn = function() end })
    os.remove(p)
    return c, err, code
end

describe("config server.api_keys", function()
    it("defaults to no tenants and keeps admin false unless set", function()
        assert.same({}, assert(config.validate({})).server.api_keys)
        local c = assert(config.validate({ server = { api_keys = {
            { key = "ka", principal = "team-a" },
            { key_env = "OPS_KEY", principal = "ops", admin = true },
        } } }))
        assert.same({
            { key = "ka", principal = "team-a", admin = false },
            { key_env = "OPS_KEY", principal = "ops", admin = true },
        }, c.server.api_keys)
    end)

    it("names the entry and the rule broken", function()
        local function err_of(keys)
            return select(2, config.validate({ server = { api_keys = keys } }))
        end
        assert.equal("server.api_keys: expected array of tables, got string", err_of("k"))
        assert.equal('server.api_keys: expected array of tables, got key "a"', err_of({ a = {} }))
        assert.equal("server.api_keys: [1]: exactly one of key and key_env is required",
            err_of({ { principal = "p" } }))
        assert.equal("server.api_keys: [1]: exactly one of key and key_env is required",
            err_of({ { key = "k", key_env = "K", principal = "p" } }))
        assert.equal("server.api_keys: [2].principal: expected a non-blank string",
            err_of({ { key = "k", principal = "p" }, { key = "k2", principal = " " } }))
        assert.equal("server.api_keys: [1].key: expected a non-blank string",
            err_of({ { key = "  ", principal = "p" } }))
        assert.equal("server.api_keys: [1].admin: expected boolean, got string",
            err_of({ { key = "k", principal = "p", admin = "yes" } }))
        assert.equal('server.api_keys: [1]: unknown field "role"', err_of({ { key = "k", principal = "p", role = 1 } }))
    end)

    it("reads key_env from the environment at load, and fails when it is unset", function()
        local src = 'return { server = { api_keys = { { key_env = "TEAM_A_KEY", principal = "team-a" } } } }'
        local c = assert(load_table(src, { HOME = "/h", TEAM_A_KEY = "secret-a" }))
        assert.same({ { key = "secret-a", principal = "team-a", admin = false } }, c.server.api_keys)
        local none, err, code = load_table(src, { HOME = "/h" })
        assert.is_nil(none)
        assert.equal(1, code)
        assert.equal("server.api_keys[1].key_env: environment variable TEAM_A_KEY is not set or blank", err)
    end)

    it("refuses a key used twice", function()
        local c, err, code = load_table('return { server = { api_key = "same", api_keys = { '
            .. '{ key = "other", principal = "a" }, { key = "same", principal = "b" } } } }')
        assert.is_nil(c)
        assert.equal(1, code)
        assert.equal("server.api_keys[2]: the same key is already used by server.api_key", err)
    end)

    it("counts as a configured key for the auth guard", function()
        assert.is_table(load_table('return { server = { host = "0.0.0.0", api_keys = { '
            .. '{ key = "k", principal = "a" } } } }'))
        local c, _, code = load_table('return { server = { host = "0.0.0.0", api_keys = {} } }')
        assert.is_nil(c)
        assert.equal(config.EXIT_INSECURE, code)
    end)
end)

describe("config hooks", function()
    it("has the documented defaults", function()
        local h = assert(config.validate({})).hooks
        assert.is_nil(h.dir)
        assert.same({}, h.config)
        assert.equal(10000000, h.instruction_budget)
        assert.equal(64, h.memory_budget_mb)
    end)

    it("accepts false for no hooks, and a table of per-hook settings (copied)", function()
        local given = { quotas = { principals = { a = { max_sandboxes = 1 } } } }
        local h = assert(config.validate({ hooks = { dir = false, config = given } })).hooks
        assert.is_false(h.dir)
        assert.same(given, h.config)
        given.quotas.principals.a.max_sandboxes = 9
        assert.equal(1, h.config.quotas.principals.a.max_sandboxes)
    end)

    it("rejects a config that is not a table with string keys, and small budgets", function()
        assert.equal("hooks.config: expected table, got string",
            select(2, config.validate({ hooks = { config = "x" } })))
        assert.equal("hooks.config: expected table with string keys, got key 1",
            select(2, config.validate({ hooks = { config = { {} } } })))
        assert.equal("hooks.instruction_budget: must be >= 1000, got 10",
            select(2, config.validate({ hooks = { instruction_budget = 10 } })))
    end)
end)
