-- Part of the lifecycle service (sandbox/service.lua): renew on access (upstream OSEP-0009, server proxy
-- mode). A sandbox created with extensions["access.renew.extend.seconds"] = "N" (300..86400, checked by
-- validate.lua) opts in: a request through the server proxy moves its expiry to now + N, when that is
-- later than the current expiry, at most once per `renew_intent.min_interval_seconds` (the cooldown), and
-- only while it is Running. The renewal is the same durable write as renew-expiration (store, and the
-- runtime's copy of the expiry where it keeps one), made in a background task: the proxied request never
-- waits for it.
--
-- Hot path: the proxy asks `self.renew_due[id]` (one table read) and compares it with the clock. The due
-- time is worked out whenever the record changes (set_record -> renew_policy), as the later of
--   * when a renewal would first move the expiry: expires - N (now + N > expires from then on), and
--   * the end of the cooldown: last attempt + min_interval_seconds,
-- so a sandbox with nothing to renew costs no more than that compare. An attempt in flight pushes the due
-- time past the cooldown first, so a burst of requests starts one renewal. The cooldown is kept in memory:
-- after a restart the first request may renew at once (one write), as upstream's in-memory cooldown does.
local model = require("sandbox.model")

local P = {}

P.RENEW_EXTEND_KEY = "access.renew.extend.seconds"

local function settings(self)
    local c = self.config and self.config.renew_intent or {}
    return c.enabled ~= false, (c.min_interval_seconds or 60) * 1000000
end

--- Recomputes the renewal due time of sandbox `id` from its record `rec` (nil: gone). Called by set_record
--- for every change of a record; never yields.
function P:renew_policy(id, rec)
    local due = self.renew_due
    if not due then
        due = {}
        self.renew_due, self.renew_last = due, {}
    end
    local ext = rec and rec.extensions and rec.extensions[P.RENEW_EXTEND_KEY]
    local enabled, cooldown_us = settings(self)
    local extend = ext and math.tointeger(tonumber(ext))
    if not enabled or not extend or not rec.expires_us or rec.state ~= model.STATE.RUNNING then
        due[id] = nil
        if not rec then
            self.renew_last[id] = nil
        end
        return
    end
    local at = rec.expires_us - extend * 1000000
    local last = self.renew_last[id]
    if last and last + cooldown_us > at then
        at = last + cooldown_us
    end
    due[id] = at
end

--- Called by the proxy for a Running sandbox `id` whose renewal is due (renew_due[id] <= now): starts the
--- renewal in a background task, and pushes the due time past the cooldown first (in-flight dedupe).
function P:access_renew(id, now)
    local _, cooldown_us = settings(self)
    self.renew_last[id] = now
    self.renew_due[id] = now + math.max(cooldown_us, 1)
    self.core.spawn(function()
        self:with_sandbox(id, false, function(cur)
            local ext = cur.extensions and math.tointeger(tonumber(cur.extensions[P.RENEW_EXTEND_KEY]))
            if cur.state ~= model.STATE.RUNNING or not ext or not cur.expires_us then
                return true
            end
            local want = self:now_us() + ext * 1000000
            if want <= cur.expires_us or not self:runtime_expiry(cur, want) then
                return true
            end
            local upd = self:copy(cur)
            upd.expires_us = want
            if self:commit(upd) then
                self:arm_timer(upd)
                self.log.info("sandbox renewed on access", { sandbox_id = id, extend_seconds = ext })
            end
            return true
        end)
    end)
end

return P
