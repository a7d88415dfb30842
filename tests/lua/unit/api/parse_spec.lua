local parse = require("api.parse")

describe("api.parse.json_object", function()
    it("returns the decoded object; the last duplicate key wins; unknown fields are kept", function()
        local v = assert(parse.json_object('{"a":1,"a":2,"resourceRequests":{}}'))
        assert.equal(2, v.a)
        assert.is_table(v.resourceRequests)
        assert.same({}, assert(parse.json_object(" {} ")))
    end)

    local bad = {
        empty = "",
        blank = "  \n\t",
        malformed = '{"a":',
        trailing = '{"a":1} x',
        array = "[1,2]",
        empty_array = " [] ",
        string = '"x"',
        number = "42",
        null = "null",
        ["true"] = "true",
        invalid_utf8 = '{"a":"\255\254"}',
        overlong_utf8 = '{"a":"\192\175"}',
        deep_object = string.rep('{"a":', 1000) .. "1" .. string.rep("}", 1000),
        deep_array = "{\"a\":" .. string.rep("[", 1000) .. string.rep("]", 1000) .. "}",
    }
    for name, body in pairs(bad) do
        it("rejects " .. name .. " with 400 SANDBOX::INVALID_PARAMETER", function()
            local v, err = parse.json_object(body)
            assert.is_nil(v)
            assert.equal(400, err.status)
            assert.equal("SANDBOX::INVALID_PARAMETER", err.code)
            assert.equal("Request body must be a JSON object.", err.message)
        end)
    end

    it("has the 413 error of §1.4", function()
        local err = parse.too_large()
        assert.same({ 413, "GENERAL::PAYLOAD_TOO_LARGE", "Request body exceeds 1048576 bytes." },
            { err.status, err.code, err.message })
    end)
end)

describe("api.parse.query", function()
    it("decodes with form rules once and keeps repeated keys in order", function()
        local q = parse.query("state=running&state=Paused&metadata=team%3Dinfra%26note%3D&x=a+b%2B&e=%2541")
        assert.same({ "running", "Paused" }, q.state)
        assert.same({ "team=infra&note=" }, q.metadata)
        assert.same({ "a b+" }, q.x)
        assert.same({ "%41" }, q.e)
    end)

    it("handles names without values, empty segments and encoded names", function()
        local q = parse.query("flag&&a=&b=1=2&na%6De=v&%zz=1")
        assert.same({ "" }, q.flag)
        assert.same({ "" }, q.a)
        assert.same({ "1=2" }, q.b)
        assert.same({ "v" }, q.name)
        assert.same({ "1" }, q["%zz"])
        assert.is_nil(q[""])
        assert.same({}, parse.query(""))
        assert.same({}, parse.query(nil))
    end)
end)

describe("api.parse.member_key_order", function()
    local order = parse.member_key_order

    it("lists a member object's keys in text order", function()
        assert.same({ "B", "A", "C" }, order('{"env":{"B":"1","A":"2","C":null}}', "env"))
        assert.same({ "K" }, order('{"a":true,"b":false,"n":null,"x":-1.5e3,"env":{"K":"v"}}', "env"))
        assert.same({}, order('{"env":{}}', "env"))
        assert.same({}, order(' \t\r\n{ "env" : { } } ', "env"))
    end)

    it("is not fooled by strings, escapes and nesting elsewhere", function()
        local text = ' { "x" : [1,{"env":{"Z":1}},"]}\\"{"] , "env" : { "Q\\u00e9" : "a\\"}" , '
            .. '"P":{"n":[1,{"k":"}"}]}, "Q\\u00e9":"b" }, "y": 2 } '
        assert.same({ "Q\u{e9}", "P" }, order(text, "env"))
    end)

    it("uses the last occurrence of the member, as decoding does; first position of a repeated key", function()
        assert.same({ "D", "C" }, order('{"env":{"B":"1"},"env":{"D":"1","C":"2","D":"3"}}', "env"))
    end)

    it("gives nil when the member is absent or not an object", function()
        assert.is_nil(order('{"env":null}', "env"))
        assert.is_nil(order('{"env":["A=1"]}', "env"))
        assert.is_nil(order('{"env":"x"}', "env"))
        assert.is_nil(order('{"other":{"A":"1"}}', "env"))
        assert.is_nil(order('{"x":{"env":{"A":"1"}}}', "env"))
    end)

    it("finds the same keys as the decoder on a small corpus", function()
        for _, text in ipairs({
            '{"env":{"b":"1","a":"2"}}',
            '{"image":{"uri":"x"},"env":{"\\"q":"1","c\\\\":"2","d":"\\\\"}}',
            '{"env":{"a":{"x":[1,2,{"y":"}]"}]},"b":[],"c":{}}}',
        }) do
            local decoded = assert(parse.json_object(text))
            local keys = order(text, "env")
            local n = 0
            for k in pairs(decoded.env) do
                n = n + 1
                assert.is_true(keys[n] ~= nil and decoded.env[keys[n]] ~= nil, k)
            end
            assert.equal(n, #keys)
        end
    end)
end)
