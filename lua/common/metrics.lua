-- A metrics registry: counters, gauges and histograms, written out in the Prometheus text exposition format
-- (version 0.0.4) by GET /metrics (lua/api/metrics.lua).
--
--   local metrics = require("common.metrics")
--   local REQS = metrics.default:counter("opensandbox_x_total", "What it counts.", { "route", "status" })
--   local s = REQS:labels("/sandboxes/{id}", 200)   -- resolve once (cache it where you can) ...
--   s:inc()                                          -- ... then an increment is one table write
--   metrics.default:expose()                         -- the text of every family
--
-- A family has a fixed list of label names (at most 4). `family:labels(a, b, c, d)` returns the series of
-- that label set; the first call builds it (its label text is rendered once, here), later calls are a walk
-- through nested tables keyed by the values as given: no string is built on the hot path. Label values are
-- written with tostring(), so 200 and "200" are one series.
--
-- Cardinality is bounded: a family holds at most `max_series` series (registry option, default 500). Beyond
-- that every new label set lands in one overflow series whose label values are all "_overflow", and
-- `opensandbox_metrics_series_overflow_total{family=...}` counts those calls. Callers must still never use
-- unbounded values (a sandbox id, a raw path) as label values: the cap is a fuse, not a design.
--
-- Registering a name twice returns the first family when the kind and label names are the same (modules are
-- loaded once, but specs reload them), and raises otherwise. `registry:on_scrape(fn)` adds a function run at
-- the start of every expose() (gauges computed at scrape time: sandboxes by state, process memory, ...).
local M = {}

local format = string.format
local concat = table.concat
local tostring = tostring
local floor = math.floor
local huge = math.huge

M.DEFAULT_MAX_SERIES = 500
M.OVERFLOW = "_overflow"
M.MAX_LABELS = 4

-- Default histogram buckets (seconds): from 1 ms to 60 s.
M.SECONDS = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }
-- Buckets for slow work (provisioning steps, seconds): from 10 ms to 10 minutes.
M.SLOW_SECONDS = { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600 }

--- A number in the exposition format: integers without a fraction, +Inf/-Inf/NaN spelled as Prometheus does.
function M.number(v)
    if v ~= v then
        return "NaN"
    elseif v == huge then
        return "+Inf"
    elseif v == -huge then
        return "-Inf"
    elseif v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
        return format("%d", v)
    end
    -- the shortest text that reads back as the same double
    local t = format("%.15g", v)
    if tonumber(t) ~= v then
        t = format("%.17g", v)
    end
    return t
end
local number = M.number

--- A label value escaped for the exposition format (backslash, double quote, line feed).
function M.escape_label(s)
    return (tostring(s):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

--- A HELP text escaped for the exposition format (backslash, line feed).
function M.escape_help(s)
    return (tostring(s):gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

---------------------------------------------------------------------------------------------------------
-- series
---------------------------------------------------------------------------------------------------------

local Counter = {}
Counter.__index = Counter

--- Adds n (default 1; never negative) to the counter.
function Counter:inc(n)
    self.value = self.value + (n or 1)
end

local Gauge = {}
Gauge.__index = Gauge

function Gauge:set(v)
    self.value = v
end

function Gauge:inc(n)
    self.value = self.value + (n or 1)
end

function Gauge:dec(n)
    self.value = self.value - (n or 1)
end

local Histogram = {}
Histogram.__index = Histogram

--- Records one observation. The buckets are few (about 15): a linear walk is cheaper than anything else.
function Histogram:observe(v)
    local b = self.bounds
    local i = 1
    local n = self.nb
    while i <= n and v > b[i] do
        i = i + 1
    end
    local c = self.counts
    c[i] = c[i] + 1 -- counts[nb + 1] is the +Inf bucket
    self.sum = self.sum + v
    self.count = self.count + 1
end

---------------------------------------------------------------------------------------------------------
-- families
---------------------------------------------------------------------------------------------------------

local Family = {}
Family.__index = Family

local NAME = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL = "^[a-zA-Z_][a-zA-Z0-9_]*$"

-- The `{a="x",b="y"` text of a label set (without the closing brace, so that a histogram can add `le`).
local function label_text(names, values)
    local parts = {}
    for i, n in ipairs(names) do
        parts[i] = n .. '="' .. M.escape_label(values[i]) .. '"'
    end
    return concat(parts, ",")
end

function Family:_make(values)
    local lt = label_text(self.label_names, values)
    local s
    if self.kind == "histogram" then
        local counts = {}
        local prefixes = {}
        local b = self.bounds
        for i = 1, #b + 1 do
            counts[i] = 0
            local le = i <= #b and number(b[i]) or "+Inf"
            prefixes[i] = self.name .. "_bucket{" .. (lt ~= "" and lt .. "," or "") .. 'le="' .. le .. '"} '
        end
        local suffix = lt ~= "" and "{" .. lt .. "} " or " "
        s = setmetatable({
            bounds = b,
            nb = #b,
            counts = counts,
            sum = 0,
            count = 0,
            bucket_prefix = prefixes,
            sum_prefix = self.name .. "_sum" .. suffix,
            count_prefix = self.name .. "_count" .. suffix,
        }, Histogram)
    else
        s = setmetatable({
            value = 0,
            prefix = self.name .. (lt ~= "" and "{" .. lt .. "} " or " "),
        }, self.kind == "counter" and Counter or Gauge)
    end
    s.label_values = values
    return s
end

-- The slow path of labels(): finds or makes the series of this label set and links it into the tree under
-- the values as given, so that the next call with the same values is a table walk.
function Family:_resolve(a, b, c, d)
    local n = self.nlabels
    local given = { a, b, c, d }
    local values = {}
    for i = 1, n do
        local v = given[i]
        values[i] = v == nil and "" or tostring(v)
    end
    local key = concat(values, "\0")
    local s = self.by_key[key]
    if not s then
        if self.nseries >= self.max_series then
            local ov = self.registry.overflow
            if ov and self ~= ov.family then
                ov.family:labels(self.name):inc()
            end
            if not self.overflow then
                local ovalues = {}
                for i = 1, n do
                    ovalues[i] = M.OVERFLOW
                end
                self.overflow = self:_make(ovalues)
                self.series[#self.series + 1] = self.overflow
            end
            return self.overflow -- not linked into the tree: the tree stays bounded too
        end
        s = self:_make(values)
        self.by_key[key] = s
        self.nseries = self.nseries + 1
        self.series[#self.series + 1] = s
    end
    local node = self.tree
    for i = 1, n - 1 do
        local k = given[i]
        if k == nil then
            k = ""
        end
        local nxt = node[k]
        if not nxt then
            nxt = {}
            node[k] = nxt
        end
        node = nxt
    end
    local k = given[n]
    if k == nil then
        k = ""
    end
    node[k] = s
    return s
end

--- The series of one label set (as many values as the family has label names, in their order).
function Family:labels(a, b, c, d)
    local n = self.nlabels
    if n == 0 then
        return self.solo
    end
    local t = self.tree[a]
    if t and n > 1 then
        t = t[b]
        if t and n > 2 then
            t = t[c]
            if t and n > 3 then
                t = t[d]
            end
        end
    end
    return t or self:_resolve(a, b, c, d)
end

--- The series of a family without labels.
function Family:get()
    return self.solo
end

--- Sets every series of the family to 0 (gauges recomputed at scrape time).
function Family:reset()
    for _, s in ipairs(self.series) do
        s.value = 0
    end
end

---------------------------------------------------------------------------------------------------------
-- registry
---------------------------------------------------------------------------------------------------------

local Registry = {}
Registry.__index = Registry

--- A new registry. opts.max_series: the series cap per family (default DEFAULT_MAX_SERIES).
function M.new(opts)
    opts = opts or {}
    local r = setmetatable({
        families = {},
        order = {},
        scrapers = {},
        max_series = opts.max_series or M.DEFAULT_MAX_SERIES,
    }, Registry)
    r.overflow = {
        family = r:counter("opensandbox_metrics_series_overflow_total",
            "Label sets that went to a family's overflow series because the family was full.", { "family" }),
    }
    return r
end

function Registry:_family(kind, name, help, label_names, bounds)
    assert(type(name) == "string" and name:match(NAME), "metrics: bad metric name " .. tostring(name))
    label_names = label_names or {}
    assert(#label_names <= M.MAX_LABELS, "metrics: at most " .. M.MAX_LABELS .. " labels")
    for _, l in ipairs(label_names) do
        assert(type(l) == "string" and l:match(LABEL) and l ~= "le" and not l:match("^__"),
            "metrics: bad label name " .. tostring(l))
    end
    local old = self.families[name]
    if old then
        assert(old.kind == kind and concat(old.label_names, ",") == concat(label_names, ","),
            "metrics: " .. name .. " is already registered differently")
        return old
    end
    if bounds then
        for i = 2, #bounds do
            assert(bounds[i] > bounds[i - 1], "metrics: histogram buckets must increase")
        end
    end
    local f = setmetatable({
        registry = self,
        kind = kind,
        name = name,
        help = help or name,
        label_names = label_names,
        nlabels = #label_names,
        bounds = bounds,
        tree = {},
        by_key = {},
        series = {},
        nseries = 0,
        max_series = self.max_series,
    }, Family)
    f.header = "# HELP " .. name .. " " .. M.escape_help(f.help) .. "\n# TYPE " .. name .. " " .. kind .. "\n"
    if #label_names == 0 then
        f.solo = f:_make({})
        f.series[1] = f.solo
        f.nseries = 1
    end
    self.families[name] = f
    self.order[#self.order + 1] = f
    return f
end

--- A counter family: only goes up (reset by a restart).
function Registry:counter(name, help, label_names)
    return self:_family("counter", name, help, label_names)
end

--- A gauge family: any value, set or moved either way.
function Registry:gauge(name, help, label_names)
    return self:_family("gauge", name, help, label_names)
end

--- A histogram family with fixed upper bounds (`buckets`, increasing; default M.SECONDS).
function Registry:histogram(name, help, label_names, buckets)
    return self:_family("histogram", name, help, label_names, buckets or M.SECONDS)
end

--- Adds fn() to run at the start of each expose() (to compute gauges at scrape time).
function Registry:on_scrape(fn)
    self.scrapers[#self.scrapers + 1] = fn
end

--- The family registered under `name`, or nil.
function Registry:family(name)
    return self.families[name]
end

--- The whole registry in the text exposition format 0.0.4. A scraper that raises is reported in the
--- second result (the text of the other families is still complete).
function Registry:expose()
    local errs
    for _, fn in ipairs(self.scrapers) do
        local ok, err = pcall(fn)
        if not ok then
            errs = errs or {}
            errs[#errs + 1] = tostring(err)
        end
    end
    local out, n = {}, 0
    for _, f in ipairs(self.order) do
        n = n + 1
        out[n] = f.header -- also for a family without series yet: a scraper learns the name and type
        do
            if f.kind == "histogram" then
                for _, s in ipairs(f.series) do
                    local cum = 0
                    local counts, prefixes = s.counts, s.bucket_prefix
                    for i = 1, #counts do
                        cum = cum + counts[i]
                        n = n + 1
                        out[n] = prefixes[i] .. number(cum) .. "\n"
                    end
                    n = n + 1
                    out[n] = s.sum_prefix .. number(s.sum) .. "\n" .. s.count_prefix .. number(s.count) .. "\n"
                end
            else
                for _, s in ipairs(f.series) do
                    n = n + 1
                    out[n] = s.prefix .. number(s.value) .. "\n"
                end
            end
        end
    end
    return concat(out), errs
end

--- "host:port" or "[v6]:port" -> host, port (an integer in 1..65535); nil when it is not that.
function M.parse_listen(s)
    if type(s) ~= "string" then
        return nil
    end
    local host, port = s:match("^%[([%x:.]+)%]:(%d+)$")
    if not host then
        host, port = s:match("^([^:%[%]]+):(%d+)$")
    end
    port = tonumber(port)
    if not host or not port or port < 1 or port > 65535 then
        return nil
    end
    return host, math.tointeger(port)
end

--- The content type of expose()'s text.
M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

--- The process-wide registry the server's modules register into.
M.default = M.new()

return M
