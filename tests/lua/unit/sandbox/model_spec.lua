local json = require("common.json")
local model = require("sandbox.model")
local validate = require("sandbox.validate")

local NOW = 1767225600 * 1000000 + 123456 -- 2026-01-01T00:00:00.123456Z

local function spec(extra)
    local body = json.decode('{"image":{"uri":"busybox","auth":{"username":"u","password":"p"}},'
        .. '"entrypoint":["sh","-c","x"],"resourceLimits":{},"env":{"SECRET":"v"}' .. (extra or "") .. "}")
    return assert(validate.create(body, { now_us = NOW }))
end

describe("sandbox.model", function()
    it("has the states, reasons and messages of §3.2", function()
        assert.same({ "Failed", "Paused", "Pending", "Running", "Stopping", "Terminated" }, (function()
            local t = {}
            for _, v in pairs(model.STATE) do
                t[#t + 1] = v
            end
            table.sort(t)
            return t
        end)())
        assert.equal("Sandbox container is starting.", model.MESSAGE.STARTING)
        assert.equal("Sandbox container is running.", model.MESSAGE.RUNNING)
        assert.equal("Sandbox container is restarting.", model.MESSAGE.RESTARTING)
        assert.equal("Sandbox container is paused.", model.MESSAGE.PAUSED)
        assert.equal("Sandbox is being deleted.", model.MESSAGE.DELETING)
        assert.equal("Sandbox expired and is being removed.", model.MESSAGE.EXPIRING)
        assert.equal("Sandbox container exited successfully.", model.MESSAGE.EXITED)
        assert.equal("Provisioning was interrupted by a server restart.", model.MESSAGE.INTERRUPTED)
        assert.equal("Sandbox container exited with code 137.", model.exited_error_message(137))
        assert.equal("Sandbox container exited with code 137 (out of memory).", model.exited_error_message(137, true))
        assert.equal("DOCKER::SANDBOX_IMAGE_PULL_FAILED: Failed to pull image 'foo:1': manifest unknown",
            model.provisioning_error_message("DOCKER::SANDBOX_IMAGE_PULL_FAILED",
                "Failed to pull image 'foo:1': manifest unknown"))
        for k, v in pairs(model.REASON) do
            assert.equal(k, v)
        end
    end)

    it("builds a Pending record from a spec, without auth or env", function()
        local rec = model.new_record("id-1", spec(',"timeout":600,"metadata":{"a":"b"}'), NOW)
        assert.equal("id-1", rec.id)
        assert.equal(NOW, rec.created_us)
        assert.equal(NOW + 600 * 1000000, rec.expires_us)
        assert.equal("busybox", rec.image_uri)
        assert.same({ a = "b" }, rec.metadata)
        assert.equal("Pending", rec.state)
        assert.equal("CONTAINER_STARTING", rec.reason)
        assert.equal(NOW, rec.transition_us)
        assert.is_nil(rec.env)
        assert.is_nil(rec.auth)
        assert.is_falsy(json.encode(rec):find("SECRET", 1, true))
        assert.is_falsy(json.encode(rec):find('"p"', 1, true))
        assert.is_nil(model.new_record("id-2", spec(), NOW).expires_us)
    end)

    it("changes lastTransitionAt only when the state changes", function()
        local rec = model.new_record("id-1", spec(), NOW)
        assert.is_false(model.apply_status(rec, model.status("Pending", "CONTAINER_STARTING", "again", NOW + 5)))
        assert.equal(NOW, rec.transition_us)
        assert.equal("again", rec.message)
        assert.is_true(model.apply_status(rec, model.status("Running", "CONTAINER_RUNNING", model.MESSAGE.RUNNING,
            NOW + 10)))
        assert.equal(NOW + 10, rec.transition_us)
        assert.equal("Running", rec.state)
    end)

    it("renders the Sandbox object of §3.1", function()
        local rec = model.new_record("id-1", spec(',"timeout":600,"platform":{"os":"linux","arch":"arm64"}'), NOW)
        local v = model.sandbox_view(rec)
        assert.same({
            id = "id-1",
            image = { uri = "busybox" },
            platform = { os = "linux", arch = "arm64" },
            status = { state = "Pending", reason = "CONTAINER_STARTING", message = "Sandbox container is starting.",
                lastTransitionAt = "2026-01-01T00:00:00.123456Z" },
            metadata = {},
            entrypoint = { "sh", "-c", "x" },
            expiresAt = "2026-01-01T00:10:00.123456Z",
            createdAt = "2026-01-01T00:00:00.123456Z",
        }, v)
        local text = json.encode(v)
        assert.truthy(text:find('"metadata":{}', 1, true))
        assert.truthy(text:find('"entrypoint":["sh","-c","x"]', 1, true))
    end)

    it("omits absent values and never sends null", function()
        local rec = model.new_record("id-1", spec(), NOW)
        local v = model.sandbox_view(rec)
        assert.is_nil(v.expiresAt)
        assert.is_nil(v.platform)
        local text = json.encode(v)
        assert.is_falsy(text:find("null", 1, true))
        assert.is_falsy(text:find("expiresAt", 1, true))
        rec.entrypoint = {}
        assert.truthy(json.encode(model.sandbox_view(rec)):find('"entrypoint":[]', 1, true))
    end)

    it("renders the create response without image", function()
        local rec = model.new_record("id-1", spec(',"metadata":{"k":"v"}'), NOW)
        local v = model.create_view(rec)
        assert.is_nil(v.image)
        assert.equal("id-1", v.id)
        assert.same({ k = "v" }, v.metadata)
        assert.same({ state = "Pending", reason = "CONTAINER_STARTING", message = "Sandbox container is starting.",
            lastTransitionAt = "2026-01-01T00:00:00.123456Z" }, v.status)
        assert.equal("2026-01-01T00:00:00.123456Z", v.createdAt)
        assert.is_falsy(json.encode(v):find('"image"', 1, true))
    end)

    it("recognises failed-provisioning records", function()
        local rec = model.new_record("id-1", spec(), NOW)
        assert.is_false(model.is_provisioning_failure(rec))
        model.apply_status(rec, model.status("Failed", "PROVISIONING_ERROR", "x", NOW))
        assert.is_true(model.is_provisioning_failure(rec))
    end)
end)
