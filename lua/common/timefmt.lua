-- The one calendar module of the server: datetimes for the wire (API.md §1.4), for labels and annotations,
-- and the runtimes' own timestamps. Inside the server a time is an integer count of microseconds since the
-- Unix epoch, always UTC. This module turns such integers into RFC 3339 text and back.
--
-- Calendar arithmetic is done here on the proleptic Gregorian calendar (days from civil and back), so the
-- local time zone of the process never matters (os.time/os.date would use it).
local M = {}

local US_PER_SEC = 1000000
local SEC_PER_DAY = 86400

-- Days since 1970-01-01 for a civil date (proleptic Gregorian). Works for any year, using eras of 400
-- years (146097 days) so that the leap-year rules reduce to integer divisions.
local function days_from_civil(y, m, d)
    if m <= 2 then
        y = y - 1
    end
    local era = y // 400
    local yoe = y - era * 400 -- 0..399
    local mp = (m + 9) % 12 -- March = 0 ... February = 11
    local doy = (153 * mp + 2) // 5 + d - 1 -- 0..365
    local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy -- 0..146096
    return era * 146097 + doe - 719468
end

-- The inverse: a civil date (y, m, d) for a count of days since 1970-01-01.
local function civil_from_days(z)
    z = z + 719468
    local era = z // 146097
    local doe = z - era * 146097
    local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    local mp = (5 * doy + 2) // 153
    local d = doy - (153 * mp + 2) // 5 + 1
    local m = mp < 10 and mp + 3 or mp - 9
    local y = yoe + era * 400
    if m <= 2 then
        y = y + 1
    end
    return y, m, d
end

local function is_leap(y)
    return y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)
end

local MONTH_DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

local function days_in_month(y, m)
    if m == 2 and is_leap(y) then
        return 29
    end
    return MONTH_DAYS[m]
end


--- The latest expiry the server accepts: 9999-12-31T23:59:59Z.
M.MAX_US = (days_from_civil(9999, 12, 31) * SEC_PER_DAY + 23 * 3600 + 59 * 60 + 59) * US_PER_SEC

local function split(us)
    local secs = us // US_PER_SEC
    local frac = us - secs * US_PER_SEC
    local days = secs // SEC_PER_DAY
    local sod = secs - days * SEC_PER_DAY
    local y, m, d = civil_from_days(days)
    return y, m, d, sod // 3600, sod % 3600 // 60, sod % 60, frac
end

--- RFC 3339 UTC with exactly 6 fractional digits: 2026-01-01T00:00:00.123456Z. `us` must be an integer.
function M.format(us)
    local y, m, d, hh, mi, ss, frac = split(math.tointeger(us) or error("timefmt.format: integer expected", 2))
    return string.format("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", y, m, d, hh, mi, ss, frac)
end

-- The smallest and largest instants parse() returns: years 0001..9999 in UTC.
local MIN_PARSE_US = days_from_civil(1, 1, 1) * SEC_PER_DAY * US_PER_SEC
local MAX_PARSE_US = (days_from_civil(10000, 1, 1) * SEC_PER_DAY) * US_PER_SEC - 1

--- Parses `YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,9}][Z|z|±HH:MM]` (no offset = UTC). Returns microseconds since
--- the epoch in UTC, truncated to the microsecond, or nil when the text does not match or names an
--- impossible date or time (Feb 30, month 13, hour 24, second 60, offset hour 24...). Instants outside
--- years 0001..9999 UTC are rejected too.
function M.parse(s)
    if type(s) ~= "string" then
        return nil
    end
    local y, mo, d, hh, mi, ss, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
    if not y then
        return nil
    end
    y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
    hh, mi, ss = tonumber(hh), tonumber(mi), tonumber(ss)
    if y < 1 or mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo) then
        return nil
    end
    if hh > 23 or mi > 59 or ss > 59 then
        return nil
    end
    local frac_us = 0
    local digits, after = rest:match("^%.(%d+)(.*)$")
    if digits then
        if #digits > 9 then
            return nil
        end
        frac_us = tonumber((digits .. "00000"):sub(1, 6))
        rest = after
    end
    local offset = 0
    if rest ~= "Z" and rest ~= "z" and rest ~= "" then
        local sign, oh, om = rest:match("^([+-])(%d%d):(%d%d)$")
        if not sign then
            return nil
        end
        oh, om = tonumber(oh), tonumber(om)
        if oh > 23 or om > 59 then
            return nil
        end
        offset = (oh * 3600 + om * 60) * (sign == "-" and -1 or 1)
    end
    local secs = days_from_civil(y, mo, d) * SEC_PER_DAY + hh * 3600 + mi * 60 + ss - offset
    local us = secs * US_PER_SEC + frac_us
    if us < MIN_PARSE_US or us > MAX_PARSE_US then
        return nil
    end
    return us
end

--- A runtime's timestamp (Docker's `State.StartedAt`, a Kubernetes `startTime`): parse(), except that
--- instants before year 2 are nil, since Go writes its zero time ("0001-01-01T00:00:00Z") for "never".
M.RUNTIME_ZERO_BEFORE_US = days_from_civil(2, 1, 1) * SEC_PER_DAY * US_PER_SEC
function M.parse_runtime(s)
    local us = M.parse(s)
    if not us or us < M.RUNTIME_ZERO_BEFORE_US then
        return nil
    end
    return us
end

return M
