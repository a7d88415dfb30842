-- The metrics registry (lua/common/metrics.lua) and its text exposition format (Prometheus 0.0.4).
local metrics = require("common.metrics")

-- The lines of `text` that start with `prefix`.
local function lines(text, prefix)
    local out = {}
    for l in text:gmatch("[^\n]+") do
        if l:sub(1, #prefix) == prefix then
            out[#out + 1] = l
        end
    end
    return out
end

describe("common.metrics", function()
    local r
    before_each(function()
        r = metrics.new({ max_series = 3 })
    end)

    it("writes counters with HELP, TYPE and labels", function()
        local c = r:counter("x_requests_total", "Requests.", { "route", "status" })
        c:labels("/a/{id}", 200):inc()
        c:labels("/a/{id}", 200):inc(2)
        c:labels("/a/{id}", "200"):inc() -- the same series as the number 200
        c:labels("/b", 404):inc()
        local text = r:expose()
        assert.truthy(text:find("# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n", 1, true))
        assert.same({
            'x_requests_total{route="/a/{id}",status="200"} 4',
            'x_requests_total{route="/b",status="404"} 1',
        }, lines(text, "x_requests_total{"))
    end)

    it("returns the same series object for the same label values (resolved once)", function()
        local c = r:counter("x_total", "X.", { "a", "b" })
        assert.equal(c:labels("p", 1), c:labels("p", 1))
        assert.are_not.equal(c:labels("p", 1), c:labels("p", 2))
    end)

    it("writes a metric without labels and gauges that go both ways", function()
        local g = r:gauge("x_gauge", "A gauge.")
        g:get():set(5)
        g:get():dec(2)
        g:get():inc(0.5)
        assert.same({ "x_gauge 3.5" }, lines(r:expose(), "x_gauge "))
    end)

    it("writes histograms with cumulative buckets, +Inf, _sum and _count", function()
        local h = r:histogram("x_seconds", "Latency.", { "route" }, { 0.1, 1 })
        local s = h:labels("/r")
        s:observe(0.05)
        s:observe(0.1) -- on the bound: counted in le="0.1"
        s:observe(0.5)
        s:observe(7)
        local text = r:expose()
        assert.truthy(text:find("# TYPE x_seconds histogram\n", 1, true))
        assert.same({
            'x_seconds_bucket{route="/r",le="0.1"} 2',
            'x_seconds_bucket{route="/r",le="1"} 3',
            'x_seconds_bucket{route="/r",le="+Inf"} 4',
        }, lines(text, "x_seconds_bucket"))
        assert.same({ 'x_seconds_sum{route="/r"} 7.65' }, lines(text, "x_seconds_sum"))
        assert.same({ 'x_seconds_count{route="/r"} 4' }, lines(text, "x_seconds_count"))
    end)

    it("escapes label values and HELP text", function()
        local c = r:counter("x_esc_total", 'Back\\slash and\nnewline "kept".', { "v" })
        c:labels('a"b\\c\nd'):inc()
        local text = r:expose()
        assert.truthy(text:find('# HELP x_esc_total Back\\\\slash and\\nnewline "kept".\n', 1, true))
        assert.same({ 'x_esc_total{v="a\\"b\\\\c\\nd"} 1' }, lines(text, "x_esc_total{"))
    end)

    it("formats numbers the way Prometheus reads them", function()
        assert.equal("3", metrics.number(3))
        assert.equal("3", metrics.number(3.0))
        assert.equal("+Inf", metrics.number(math.huge))
        assert.equal("-Inf", metrics.number(-math.huge))
        assert.equal("NaN", metrics.number(0 / 0))
        assert.equal(0.25, tonumber(metrics.number(0.25)))
    end)

    it("caps the series of a family: beyond max_series every new label set lands in one overflow series", function()
        local c = r:counter("x_capped_total", "Capped.", { "v" })
        for i = 1, 10 do
            c:labels("value-" .. i):inc()
        end
        local text = r:expose()
        local series = lines(text, "x_capped_total{")
        assert.equal(4, #series) -- 3 real + 1 overflow
        assert.truthy(text:find('x_capped_total{v="_overflow"} 7', 1, true))
        assert.truthy(text:find('opensandbox_metrics_series_overflow_total{family="x_capped_total"} 7', 1, true))
        -- the lookup tree does not keep the refused values either
        assert.is_nil(c.tree["value-9"])
    end)

    it("refuses bad names and a second registration of another kind; the same one is returned", function()
        assert.has_error(function()
            r:counter("bad name", "x")
        end)
        assert.has_error(function()
            r:counter("x_ok_total", "x", { "le" })
        end)
        assert.has_error(function()
            r:counter("x_ok_total", "x", { "a", "b", "c", "d", "e" })
        end)
        local a = r:counter("x_same_total", "x", { "a" })
        assert.equal(a, r:counter("x_same_total", "x", { "a" }))
        assert.has_error(function()
            r:gauge("x_same_total", "x", { "a" })
        end)
    end)

    it("runs scrape functions before writing, and reports one that raises without losing the rest", function()
        local g = r:gauge("x_scraped", "Scraped.")
        r:on_scrape(function()
            g:get():set(42)
        end)
        r:on_scrape(function()
            error("collector broke")
        end)
        local text, errs = r:expose()
        assert.same({ "x_scraped 42" }, lines(text, "x_scraped "))
        assert.equal(1, #errs)
        assert.truthy(errs[1]:find("collector broke", 1, true))
    end)

    it("parses listen addresses", function()
        assert.same({ "127.0.0.1", 9464 }, { metrics.parse_listen("127.0.0.1:9464") })
        assert.same({ "::1", 9464 }, { metrics.parse_listen("[::1]:9464") })
        assert.same({ "0.0.0.0", 1 }, { metrics.parse_listen("0.0.0.0:1") })
        assert.is_nil(metrics.parse_listen("127.0.0.1"))
        assert.is_nil(metrics.parse_listen("127.0.0.1:0"))
        assert.is_nil(metrics.parse_listen("127.0.0.1:70000"))
        assert.is_nil(metrics.parse_listen(":9464"))
        assert.is_nil(metrics.parse_listen(9464))
    end)
end)
