-- The instrumentation outside lua/api: provisioning outcomes and steps (sandbox/provisioning.lua), store
-- write failures (sandbox/store.lua), runtime API requests (docker engine, kubernetes api), hook calls,
-- failures and durations (hooks). Each reads the process-wide registry before and after.
local S = dofile("tests/lua/unit/sandbox/support.lua")
local HS = dofile("tests/lua/unit/hooks/support.lua")
local metrics = require("common.metrics")
local rterrors = require("runtimes.errors")

-- The current value of a series (name{labels}) in the default registry's text (0 when absent).
local function value(series)
    local text = metrics.default:expose()
    for l in text:gmatch("[^\n]+") do
        local head, v = l:match("^(.-) (%S+)$")
        if head == series then
            return tonumber(v)
        end
    end
    return 0
end

describe("metrics instrumentation", function()
    it("counts provisioning outcomes, failed steps and step durations", function()
        local ok0 = value('opensandbox_provisioning_total{result="success"}')
        local fail0 = value('opensandbox_provisioning_total{result="failure"}')
        local step0 = value('opensandbox_provisioning_failures_total{step="create"}')
        local total0 = value('opensandbox_provisioning_step_duration_seconds_count{step="total"}')
        local env = S.env()
        env:running()
        env.rt:fail_next("provision", rterrors.at_step("create", rterrors.new("api", "refused")))
        assert(env:create())
        env:run()
        assert.equal(ok0 + 1, value('opensandbox_provisioning_total{result="success"}'))
        assert.equal(fail0 + 1, value('opensandbox_provisioning_total{result="failure"}'))
        assert.equal(step0 + 1, value('opensandbox_provisioning_failures_total{step="create"}'))
        assert.equal(total0 + 1, value('opensandbox_provisioning_step_duration_seconds_count{step="total"}'))
    end)

    it("counts store write failures by kind, not read failures", function()
        local store = require("sandbox.store")
        local dir = os.tmpname()
        os.remove(dir)
        local s = assert(store.open(dir .. "/db"))
        local w0 = value('opensandbox_store_write_failures_total{op="insert"}')
        local d0 = value('opensandbox_store_write_failures_total{op="delete"}')
        local db = s.db
        s.db = nil -- as if closed under the service
        assert.is_nil(s:put({ id = "x", state = "Running" }))
        assert.is_nil(s:delete("x"))
        s:get("x")
        assert.equal(w0 + 1, value('opensandbox_store_write_failures_total{op="insert"}'))
        assert.equal(d0 + 1, value('opensandbox_store_write_failures_total{op="delete"}'))
        s.db = db
        s:close()
        os.execute("rm -rf " .. dir)
    end)

    it("counts runtime API requests by runtime, method and status class (error: no response)", function()
        local answers = { { status = 200, headers = {}, body = "OK" }, { status = 404, headers = {}, body = "{}" } }
        local client = {
            request = function()
                local a = table.remove(answers, 1)
                if not a then
                    return nil, "connection refused"
                end
                return a
            end,
        }
        local series = 'opensandbox_runtime_requests_total{runtime="docker",method="GET",status_class="%s"}'
        local ok0, nf0, er0 = value(series:format("2xx")), value(series:format("4xx")), value(series:format("error"))
        local engine = require("runtimes.docker.engine").new({ client = client })
        engine:_request("GET", "/_ping")
        engine:_request("GET", "/containers/abc/json")
        engine:_request("GET", "/_ping")
        assert.equal(ok0 + 1, value(series:format("2xx")))
        assert.equal(nf0 + 1, value(series:format("4xx")))
        assert.equal(er0 + 1, value(series:format("error")))

        local kseries = 'opensandbox_runtime_requests_total{runtime="kubernetes",method="POST",status_class="5xx"}'
        local k0 = value(kseries)
        local api = require("runtimes.kubernetes.api").new({
            client = {
                request = function()
                    return { status = 503, headers = {}, body = "{}" }
                end,
            },
            server = "http://127.0.0.1:1",
            sleep = function() end,
        })
        api:request("POST", "/api/v1/namespaces/x/pods", { body = {} })
        assert.equal(k0 + 1, value(kseries))
    end)

    it("counts hook calls, durations and failures by hook and point", function()
        local t = 100
        local dir = HS.dir({
            ["ok.lua"] = HS.hook("fine", 2, "before_create = function(ctx, spec) return spec end,"),
            ["bad.lua"] = HS.hook("broken", 1, "before_create = function() error('boom') end,"),
        })
        local h = assert(require("hooks").new({
            dir = dir,
            log = HS.log(),
            now = function()
                t = t + 0.5
                return t
            end,
        }))
        local calls0 = value('opensandbox_hook_calls_total{hook="fine",point="before_create"}')
        local fail0 = value('opensandbox_hook_failures_total{hook="broken",point="before_create"}')
        local dur0 = value('opensandbox_hook_duration_seconds_sum{hook="fine",point="before_create"}')
        local spec, err = h:before_create({ request_id = "r" }, S.spec())
        assert.is_nil(spec)
        assert.equal(500, err.status)
        assert.equal(calls0 + 1, value('opensandbox_hook_calls_total{hook="fine",point="before_create"}'))
        assert.equal(fail0 + 1, value('opensandbox_hook_failures_total{hook="broken",point="before_create"}'))
        assert.equal(dur0 + 0.5, value('opensandbox_hook_duration_seconds_sum{hook="fine",point="before_create"}'))
        HS.rmdir(dir)
    end)
end)
