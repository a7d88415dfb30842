-- Fuzz harness (tests/fuzz/fuzz_api.c): the real HTTP layer (router, middleware, body parsing, validation,
-- the one renderer) with a fake service, called with fuzzed requests. It raises when an invariant breaks;
-- the C side turns that into a crash report.
--   invariants: the handler never raises; status is 100..599; X-Request-ID is always set; every
--   non-2xx body is an ErrorResponse {"code": string, "message": string} and nothing else.
local json = require("common.json")
local errors = require("common.errors")
local config = require("config")
local volumes = require("sandbox.volumes")

local cfg = assert(config.validate({ server = { api_key = "fuzz-key" } }))

local view = {
    id = "00000000-0000-4000-8000-000000000000",
    status = { state = "Running", reason = "CONTAINER_RUNNING", message = "m", lastTransitionAt = "x" },
    metadata = {},
    entrypoint = json.array({ "sh" }),
    createdAt = "2026-01-01T00:00:00.000000Z",
}
local service = {}
function service.create(_, spec)
    assert(type(spec) == "table" and (spec.image or spec.snapshot_id) and spec.entrypoint,
        "service got an unvalidated spec")
    assert(not (spec.image and spec.snapshot_id), "both startup sources")
    assert(spec.snapshot_id == nil or spec.snapshot_id:find("^[A-Za-z0-9][A-Za-z0-9_.-]*$"), "bad snapshot id")
    -- env in request order (api.parse.member_key_order): each key once, every value a string
    local seen = {}
    for _, kv in ipairs(spec.env) do
        assert(type(kv[1]) == "string" and type(kv[2]) == "string" and not seen[kv[1]], "bad or repeated env entry")
        seen[kv[1]] = true
    end
    -- volumes (sandbox/volumes.lua): normalised, every rule holds, and validating them again (as the service
    -- does after the hooks) gives the same; host paths then resolve or are refused with a 400, never raise
    assert(type(spec.volumes) == "table", "no volumes in the spec")
    local names, mounts = {}, {}
    for _, v in ipairs(spec.volumes) do
        assert(type(v.name) == "string" and v.name:find("^[a-z0-9][-a-z0-9]*$") and #v.name <= 63, "bad volume name")
        assert(not names[v.name] and not mounts[v.mountPath], "repeated volume name or mountPath")
        names[v.name], mounts[v.mountPath] = true, true
        assert(v.mountPath:sub(1, 1) == "/" and v.mountPath ~= "/" and not v.mountPath:find("/%.%./")
            and not v.mountPath:find("/%.%.$"), "bad mountPath " .. v.mountPath)
        assert(v.subPath == nil or (v.subPath:sub(1, 1) ~= "/" and not ("/" .. v.subPath .. "/"):find("/%.%./")),
            "bad subPath")
        assert((v.host == nil) ~= (v.pvc == nil) and v.ossfs == nil, "not exactly one backend")
    end
    local again = assert(volumes.validate(spec.volumes))
    assert(#again == #spec.volumes, "validation is not idempotent")
    local ok, err = volumes.resolve_hosts(again, { "/tmp" })
    assert(ok or (errors.is(err) and err.status == 400), "host resolution neither succeeded nor refused")
    return view
end
function service.get(_, id)
    return nil, errors.not_found(id)
end
function service.list(_, filter)
    assert(filter.page >= 1 and filter.page_size >= 1 and filter.page_size <= 200)
    return { items = json.array(), pagination = { page = filter.page, pageSize = filter.page_size, totalItems = 0,
        totalPages = 0, hasNextPage = false } }
end
function service.delete()
    return true
end
service.pause = service.delete
service.resume = service.delete
function service.renew(_, _, us)
    assert(math.type(us) == "integer")
    return { expiresAt = "2030-01-01T00:00:00.000000Z" }
end
function service.endpoint()
    return { endpoint = "127.0.0.1:1/proxy/44772" }
end
function service.patch_metadata()
    return view
end
-- snapshots (lua/api/snapshots.lua)
local snap_view = { id = "s", sandboxId = "x", status = { state = "Creating" }, createdAt = view.createdAt }
function service.create_snapshot(_, _, opts)
    assert(type(opts) == "table" and (opts.name == nil or (type(opts.name) == "string" and opts.name ~= "")))
    return snap_view
end
function service.get_snapshot(_, id)
    return nil, errors.new(404, "SNAPSHOT::NOT_FOUND", "Snapshot " .. id .. " not found.")
end
service.delete_snapshot = service.get_snapshot
function service.list_snapshots(_, filter)
    assert(filter.page >= 1 and filter.page_size >= 1 and filter.page_size <= 200)
    assert(filter.sandbox_id == nil or type(filter.sandbox_id) == "string")
    return { items = json.array(), pagination = { page = filter.page, pageSize = filter.page_size, totalItems = 0,
        totalPages = 0, hasNextPage = false } }
end
function service.proxy_target(_, id)
    return nil, errors.not_found(id)
end

local handler = require("api").new({
    config = cfg,
    service = service,
    log = { set_request_id = function() end, level = function() return "INFO" end, error = function() end,
        warn = function() end, info = function() end, debug = function() end },
    uuid = { hex = function() return "0123456789abcdef0123456789abcdef" end },
    now = function() return 1767225600.5 end,
    ncpu = 2,
})

local req_mt = { __index = {
    header = function(self, name)
        return self._h[name:lower()]
    end,
    headers = function(self)
        return self._l
    end,
} }

return function(method, path, query, header_lines, body)
    local h, l = {}, {}
    for line in header_lines:gmatch("[^\n]+") do
        local k, v = line:match("^([^:]+):%s*(.*)$")
        if k then
            local lk = k:lower()
            h[lk] = h[lk] and (h[lk] .. ", " .. v) or v
            l[#l + 1] = { k, v }
        end
    end
    local req = setmetatable({ method = method, path = path, query = query, body = body,
        body_too_large = #body > 1048576, remote_addr = "127.0.0.1", _h = h, _l = l }, req_mt)
    local status, headers, out = handler(req)
    assert(math.type(status) == "integer" and status >= 100 and status <= 599, "bad status " .. tostring(status))
    assert(type(headers) == "table" and headers["X-Request-ID"], "no X-Request-ID")
    if status >= 300 then
        local doc = json.decode(out or "")
        assert(type(doc) == "table" and type(doc.code) == "string" and type(doc.message) == "string",
            "error body is not an ErrorResponse: " .. tostring(out))
        for k in pairs(doc) do
            assert(k == "code" or k == "message", "extra field in ErrorResponse: " .. tostring(k))
        end
    end
end
