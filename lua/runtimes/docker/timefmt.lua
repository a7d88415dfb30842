-- Time text for the Docker adapter: Docker's RFC 3339 timestamps with up to nanoseconds
-- ("2026-01-02T03:04:05.123456789Z"; "0001-01-01T00:00:00Z" means "never") to integer microseconds since
-- the epoch, and microseconds back to the API's RFC 3339 form with exactly six fractional digits (§1.4),
-- used for the created-at / expires-at labels. Pure integer arithmetic (no os.time, no time zone).
local M = {}

-- days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil)
local function days_from_civil(y, m, d)
    if m <= 2 then
        y = y - 1
    end
    local era = (y >= 0 and y or y - 399) // 400
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = (153 * mp + 2) // 5 + d - 1
    local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
end

local function civil_from_days(z)
    z = z + 719468
    local era = (z >= 0 and z or z - 146096) // 146097
    local doe = z - era * 146097
    local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    local y = yoe + era * 400
    local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    local mp = (5 * doy + 2) // 153
    local d = doy - (153 * mp + 2) // 5 + 1
    local m = mp < 10 and mp + 3 or mp - 9
    if m <= 2 then
        y = y + 1
    end
    return y, m, d
end

--- Parses an RFC 3339 timestamp (`T`/`t`/space separator, 0-9 fractional digits, `Z` or ±HH:MM) into
--- integer microseconds since the epoch (fraction truncated). Returns nil for Docker's zero time (year 1),
--- an empty or malformed value.
function M.parse_us(s)
    if type(s) ~= "string" then
        return nil
    end
    local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
    if not y then
        return nil
    end
    y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
    if y <= 1 or mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then
        return nil
    end
    local frac, zone = rest:match("^%.(%d+)(.*)$")
    if not frac then
        frac, zone = "", rest
    end
    local us = tonumber((frac .. "000000"):sub(1, 6))
    local offset = 0
    if zone ~= "Z" and zone ~= "z" then
        local sign, oh, om = zone:match("^([+-])(%d%d):(%d%d)$")
        if not sign then
            return nil
        end
        offset = (tonumber(oh) * 60 + tonumber(om)) * 60
        if sign == "-" then
            offset = -offset
        end
    end
    local secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
    return secs * 1000000 + us
end

--- Formats integer microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
function M.format_us(us)
    us = math.tointeger(us) or math.floor(us)
    local secs, frac = us // 1000000, us % 1000000
    local days, tod = secs // 86400, secs % 86400
    local y, m, d = civil_from_days(days)
    return string.format("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", y, m, d, tod // 3600, tod % 3600 // 60,
        tod % 60, frac)
end

return M
