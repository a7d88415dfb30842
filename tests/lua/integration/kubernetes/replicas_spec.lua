-- Integration: two server replicas on one namespace of the real cluster, each with a store of its own. Any
-- replica serves any sandbox (the other's appear through the watch), a renewal made on one is seen by the
-- other (the Pod's annotation), only the holder of the Lease removes expired sandboxes, and when the first
-- replica is killed the second one takes the Lease over and still expires the sandbox on time.
local K = require("kubernetes.helpers")

local function path(id, rest)
    return "/v1/sandboxes/" .. id .. (rest or "")
end

describe("kubernetes runtime: two replicas #integration #kubernetes", function()
    setup(function()
        K.cluster()
        K.namespace()
    end)
    teardown(function()
        K.stop_all()
        K.cleanup()
    end)

    it("creates on one, renews on the other, kills the first: the second expires it on time", function()
        local a = K.start()
        local b = K.start()
        local id = K.create_running(a, { timeout = 300 })
        -- the other replica serves it at once (adopted from the watch, not the 30 s sweep)
        local sb = K.wait_state(b, id, "Running", 10)
        assert.is_string(sb.expiresAt)
        -- renewed on b to 40 s from now: the annotation carries it, a sees it
        local want = K.iso(40)
        local res = K.call(b, "POST", path(id, "/renew-expiration"), { expiresAt = want })
        assert.are.equal(200, res.status, res.body)
        local seen = K.poll(a, id, function(s)
            return s and K.parse_time(s.expiresAt) == K.parse_time(want)
        end, 10)
        assert.are.equal(K.parse_time(want), K.parse_time(seen.expiresAt), "replica a did not see the renewal")
        -- exactly one of them leads
        local leaders = 0
        for _, srv in ipairs({ a, b }) do
            if srv:log():find('"msg":"leading: ', 1, true) then
                leaders = leaders + 1
            end
        end
        assert.are.equal(1, leaders, "one leader")
        -- the first replica dies without a goodbye
        a:kill()
        -- the second removes the sandbox when it expires (the Lease of a dead holder lapses in 15 s)
        local deadline = K.parse_time(want) / 1e6
        K.wait_gone(b, id, 60)
        local gone_at = K.now()
        assert.is_true(K.wait_pod_gone(id, 30), "the pod was not removed")
        assert.is_true(gone_at >= deadline - 1, "removed before its expiry")
        assert.is_true(gone_at <= deadline + 15, string.format("removed %.1f s after its expiry", gone_at - deadline))
    end)
end)
