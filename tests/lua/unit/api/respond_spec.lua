local errors = require("common.errors")
local json = require("common.json")
local respond = require("api.respond")

describe("api.respond", function()
    it("renders an error object as ErrorResponse with its status and headers", function()
        local status, headers, body = respond.error(errors.new(409, "SANDBOX::PROVISIONING_IN_PROGRESS",
            "Sandbox x is still being provisioned.", { ["Retry-After"] = 5 }))
        assert.equal(409, status)
        assert.equal("application/json", headers["Content-Type"])
        assert.equal("5", headers["Retry-After"])
        assert.same({ code = "SANDBOX::PROVISIONING_IN_PROGRESS", message = "Sandbox x is still being provisioned." },
            json.decode(body))
    end)

    it("renders anything that is not an error object as a 500", function()
        for _, e in ipairs({ "boom", {}, { status = 400 } }) do
            local status, _, body = respond.error(e)
            assert.equal(500, status)
            assert.same({ code = "GENERAL::UNKNOWN_ERROR", message = "Internal server error." }, json.decode(body))
        end
    end)

    it("renders JSON bodies with a JSON content type", function()
        local status, headers, body = respond.render(respond.json(202, { id = "x", items = json.array() },
            { Location = "/v1/sandboxes/x" }))
        assert.equal(202, status)
        assert.equal("application/json", headers["Content-Type"])
        assert.equal("/v1/sandboxes/x", headers.Location)
        assert.same({ id = "x", items = {} }, json.decode(body))
        assert.matches('"items":%[%]', body)
    end)

    it("renders empty responses with a nil body (the core sends Content-Length: 0)", function()
        local status, headers, body = respond.render(respond.empty(204))
        assert.equal(204, status)
        assert.is_nil(body)
        assert.is_nil(headers["Content-Type"])
        status, headers, body = respond.render({ status = 202, body = "" })
        assert.equal(202, status)
        assert.is_nil(headers["Content-Type"])
        assert.is_nil(body)
    end)

    it("renders raw bodies with their content type", function()
        local _, headers, body = respond.render({ status = 200, body = "<html>", content_type = "text/html" })
        assert.equal("text/html", headers["Content-Type"])
        assert.equal("<html>", body)
    end)
end)

describe("api.respond.error with bytes from the client", function()
    it("keeps the ErrorResponse valid UTF-8 (invalid sequences become U+FFFD)", function()
        local _, _, body = respond.error(errors.not_found("ab\211\255c"))
        local doc = assert(json.decode(body))
        assert.are.equal("Sandbox ab\u{FFFD}\u{FFFD}c not found.", doc.message)
    end)

    it("renames codes to the runtime's (set_codes), and only those", function()
        respond.set_codes(require("runtimes.kubernetes").CODES)
        local status, _, body = respond.error(errors.not_found("abc"))
        assert.equal(404, status)
        assert.same({ code = "KUBERNETES::SANDBOX_NOT_FOUND", message = "Sandbox abc not found." }, json.decode(body))
        local _, _, other = respond.error(errors.new(400, "DOCKER::INVALID_PORT", "Port must be between 1 and 65535."))
        assert.equal("DOCKER::INVALID_PORT", json.decode(other).code) -- upstream's Kubernetes provider keeps it
        respond.set_codes(nil)
        assert.equal("DOCKER::SANDBOX_NOT_FOUND", json.decode(select(3, respond.error(errors.not_found("abc")))).code)
    end)
end)
