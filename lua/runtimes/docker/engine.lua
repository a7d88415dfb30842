-- The Docker Engine API client of the Docker runtime (API.md §6, §7.1, §8): the only module that sends
-- requests to dockerd. runtimes.docker (docker/init.lua) implements the runtime contract on top of it.
--
-- It turns Docker operations (ensure_image, create_container, put_archive, start, pause, unpause, remove,
-- inspect, list, events, volumes) into Engine API requests under the /v1.41 prefix, sent through a
-- `core.client`-like object (`client.request(opts)`, which yields the calling task). It knows nothing of
-- sandboxes' records, HTTP handlers, the store or hooks. The pure mapping (labels, create body, inspect
-- normalisation, status) lives in runtimes.docker.mapping; its calls are listed in lua/runtimes/docker/README.md.
--
-- Every method may yield. Operational failures return `nil, err` with
--   err = { kind = "unavailable"|"not_found"|"conflict"|"api", status = <Docker HTTP status>|nil,
--           message = <Docker's message, or the transport reason> }
-- Programmer errors (a missing argument, a bad DOCKER_HOST given to new) raise.
local rtmetrics = require("runtimes.metrics")
local json = require("common.json")
local rterrors = require("runtimes.errors")
local imageref = require("runtimes.docker.imageref")
local registry_auth = require("runtimes.docker.registry_auth")
local lines = require("runtimes.docker.lines")
local mapping = require("runtimes.docker.mapping")

local M = {}

M.API_VERSION = "1.41"
-- the first API version with VolumeOptions.Subpath (Docker 26): a subPath on a named volume needs it
M.SUBPATH_API_VERSION = "1.45"
M.DEFAULT_HOST = "unix:///var/run/docker.sock"
M.DEFAULT_API_TIMEOUT = 180
-- how often a caller waiting for another caller's identical pull checks whether it has finished
M.PULL_WAIT_STEP = 0.1

M.imageref = imageref
M.registry_auth = registry_auth
M.mapping = mapping
M.labels_for = mapping.labels_for
M.status_of = mapping.status_of

local Adapter = {}
Adapter.__index = Adapter

------------------------------------------------------------------------------------------------------------
-- errors

--- A new adapter error `{kind, status, message}` (the shape of runtimes.errors).
function M.error(kind, status, message)
    return rterrors.new(kind, message, { status = status })
end

local function transport_error(err, timeout)
    return rterrors.transport(err, "Docker", timeout)
end

local function docker_message(body, status)
    if type(body) == "string" and body ~= "" then
        local doc = json.decode(body)
        if type(doc) == "table" and type(doc.message) == "string" then
            return doc.message
        end
        local text = body:gsub("^%s+", ""):gsub("%s+$", "")
        if text ~= "" then
            return text:sub(1, 1024)
        end
    end
    return "Docker answered HTTP " .. tostring(status)
end

local function http_error(res)
    local kind = "api"
    if res.status == 404 then
        kind = "not_found"
    elseif res.status == 409 then
        kind = "conflict"
    end
    return M.error(kind, res.status, docker_message(res.body, res.status))
end

------------------------------------------------------------------------------------------------------------
-- construction

--- Parses a DOCKER_HOST value: `unix:///path` or `tcp://host:port` (TLS is not supported, §8.1).
--- Returns `{ unix_socket = path|nil, base = "http://..." }` or nil and a message.
function M.parse_host(host)
    if type(host) ~= "string" or host == "" then
        return nil, "DOCKER_HOST is empty"
    end
    local path = host:match("^unix://(/.+)$")
    if path then
        return { unix_socket = path, base = "http://docker" }
    end
    local hostport = host:match("^tcp://([^/]+)/?$")
    if hostport then
        if not hostport:find(":%d+$") then
            return nil, "DOCKER_HOST '" .. host .. "' has no port"
        end
        return { base = "http://" .. hostport }
    end
    return nil, "unsupported DOCKER_HOST '" .. host .. "' (use unix:///path or tcp://host:port)"
end

--- A new adapter. `opts`: client (required), host, api_timeout, log, config (the `docker` section), and
--- for waiting on a shared pull either `new_event` (a function returning an object with `set(...)` and
--- `wait()`, like common.sync.event) or `sleep` (function(sec) that yields, for polling). With neither,
--- common.sync.event is used when it loads, else polling with core.timer.sleep.
function M.new(opts)
    assert(type(opts) == "table", "docker.new: options table required")
    assert(opts.client and opts.client.request, "docker.new: opts.client with request() required")
    local host = opts.host or M.DEFAULT_HOST
    local target, perr = M.parse_host(host)
    if not target then
        error("docker.new: " .. perr, 2)
    end
    local self = setmetatable({
        client = opts.client,
        host = host,
        unix_socket = target.unix_socket,
        base = target.base,
        api_timeout = opts.api_timeout or M.DEFAULT_API_TIMEOUT,
        log = opts.log,
        config = opts.config or {},
        sleep = opts.sleep,
        breathe = opts.breathe, -- yields until the loop's next turn (list(): a few hundred containers a turn)
        new_event = opts.new_event,
        pulls = {}, -- pull key -> { done = bool, ok = true|nil, err = err|nil }
        -- images seen present (uri + platform -> true): provisioning skips the inspection for them; a create
        -- that then finds the image gone is told by image_missing() and the caller pulls and retries
        present = {},
        npresent = 0,
    }, Adapter)
    return self
end

-- the pure functions, also reachable from an adapter (a.labels_for(rec) with a dot; a:status_of(ins))
Adapter.labels_for = mapping.labels_for

function Adapter.status_of(_, ins)
    return mapping.status_of(ins)
end

function Adapter:_debug(msg, fields)
    if self.log then
        self.log.debug(msg, fields)
    end
end

function Adapter:_warn(msg, fields)
    if self.log then
        self.log.warn(msg, fields)
    end
end

-- an event for a shared pull, or nil when waiters must poll
function Adapter:_pull_event()
    if self.new_event == nil then
        self.new_event = false
        if not self.sleep then
            local ok, sync = pcall(require, "common.sync")
            if ok and type(sync) == "table" and sync.event then
                self.new_event = sync.event
            end
        end
    end
    return self.new_event and self.new_event() or nil
end

function Adapter:_sleep(sec)
    local sleep = self.sleep
    if not sleep then
        sleep = require("core.timer").sleep
        self.sleep = sleep
    end
    sleep(sec)
end

------------------------------------------------------------------------------------------------------------
-- requests

local function urlencode(s)
    return (tostring(s):gsub("[^A-Za-z0-9%-._~]", function(c)
        return string.format("%%%02X", c:byte())
    end))
end

-- a path segment (container ids and names); `/` is escaped too
local function seg(s)
    assert(type(s) == "string" and s ~= "", "docker: id required")
    return urlencode(s)
end

--- Sends one request. `path` starts with `/` and carries its query; `opts.unversioned` skips the /v1.41
--- prefix, `opts.api_version` asks for another version (a newer field: VolumeOptions.Subpath needs
--- 1.45). Returns the response or nil and an "unavailable" error.
function Adapter:_request(method, path, opts)
    opts = opts or {}
    local prefix = opts.unversioned and "" or "/v" .. (opts.api_version or M.API_VERSION)
    local timeout = opts.timeout or self.api_timeout
    local req = {
        method = method,
        url = self.base .. prefix .. path,
        unix_socket = self.unix_socket,
        headers = opts.headers,
        body = opts.body,
        timeout = timeout,
        idle_timeout = opts.idle_timeout,
        on_data = opts.on_data,
    }
    local res, err = self.client.request(req)
    rtmetrics.request("docker", method, res)
    if not res then
        return nil, transport_error(err, timeout)
    end
    return res
end

-- a request whose success is one of the `ok` statuses (a set); anything else is an error
function Adapter:_expect(method, path, ok, opts)
    local res, err = self:_request(method, path, opts)
    if not res then
        return nil, err
    end
    if not ok[res.status] then
        return nil, http_error(res)
    end
    return res
end

local function decode_body(res)
    local doc, derr = json.decode(res.body)
    if doc == nil then
        return nil, M.error("api", res.status, "invalid JSON from Docker: " .. tostring(derr))
    end
    return doc
end

--- A request whose reply is a stream of JSON lines (pulls, imports, events): `on_line(line)` runs for each
--- complete line, inside the transfer (it must not yield). The first `keep` bytes (default 64 KiB) are
--- kept, so that a refusal, whose body was streamed too, still has Docker's words in `res.body`. Returns
--- the response or nil and an "unavailable" error.
function Adapter:_lines_request(method, path, opts, on_line, keep)
    keep = keep or 65536
    local raw, rawlen = {}, 0
    local splitter = lines.new(on_line)
    opts.on_data = function(chunk)
        if rawlen < keep then
            raw[#raw + 1] = chunk
            rawlen = rawlen + #chunk
        end
        splitter:feed(chunk)
    end
    local res, err = self:_request(method, path, opts)
    splitter:finish()
    if res and res.status ~= 200 and (res.body == nil or res.body == "") then
        res.body = table.concat(raw)
    end
    return res, err
end

--- The failure a progress line of a pull or import reports (Docker sends those even under HTTP 200), or nil.
local function line_failure(doc)
    if type(doc) == "table" and (doc.error ~= nil or doc.errorDetail ~= nil) then
        local detail = type(doc.errorDetail) == "table" and doc.errorDetail.message
        return tostring(detail or doc.error)
    end
    return nil
end

local OK200 = { [200] = true }

local has_core, core_mod = pcall(require, "core")
local json_elements = has_core and type(core_mod) == "table" and core_mod.json_elements or nil
M.LIST_BATCH = 100 -- containers of a list decoded between two turns of the loop

-- GET `path` expecting 200, its JSON body decoded (or nil, err). opts as for _expect.
function Adapter:_get_json(path, opts)
    local res, err = self:_expect("GET", path, OK200, opts)
    if not res then
        return nil, err
    end
    return decode_body(res)
end

local OK204 = { [204] = true, [200] = true }

------------------------------------------------------------------------------------------------------------
-- daemon

--- GET /_ping -> true.
function Adapter:ping()
    local res, err = self:_expect("GET", "/_ping", OK200, { unversioned = true })
    if not res then
        return nil, err
    end
    return true
end

local function version_number(v)
    local major, minor = tostring(v or ""):match("^(%d+)%.(%d+)")
    if not major then
        return nil
    end
    return tonumber(major) * 1000 + tonumber(minor)
end

--- GET /version (unversioned, so that it works on any daemon) ->
--- `{ version, api_version, min_api_version, os, arch }`; fails when the daemon cannot serve API 1.41.
function Adapter:version()
    local doc, err = self:_get_json("/version", { unversioned = true })
    if not doc then
        return nil, err
    end
    local v = {
        version = doc.Version,
        api_version = doc.ApiVersion,
        min_api_version = doc.MinAPIVersion,
        os = doc.Os,
        arch = doc.Arch,
    }
    local have, need = version_number(v.api_version), version_number(M.API_VERSION)
    self.daemon_api_version = v.api_version
    self.subpath_supported = have ~= nil and have >= version_number(M.SUBPATH_API_VERSION)
    if not have or have < need then
        return nil, M.error("api", nil, string.format(
            "Docker API version %s is older than the required %s (Docker Engine >= 20.10)",
            tostring(v.api_version), M.API_VERSION))
    end
    local min = version_number(v.min_api_version)
    if min and min > need then
        return nil, M.error("api", nil, string.format(
            "Docker no longer serves API version %s (minimum %s)", M.API_VERSION, v.min_api_version))
    end
    return v
end

--- GET /info -> `{ ncpu, mem_total, runtimes = {name=true}, default_runtime, server_version, os, name }`.
function Adapter:info()
    local doc, err = self:_get_json("/info")
    if not doc then
        return nil, err
    end
    local runtimes = {}
    if type(doc.Runtimes) == "table" then
        for name in pairs(doc.Runtimes) do
            runtimes[name] = true
        end
    end
    return {
        ncpu = math.tointeger(doc.NCPU),
        mem_total = math.tointeger(doc.MemTotal),
        runtimes = runtimes,
        default_runtime = doc.DefaultRuntime,
        server_version = doc.ServerVersion,
        os = doc.OperatingSystem,
        name = doc.Name,
    }
end

local function ipv4(s)
    local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
    if not (a and a < 256 and b < 256 and c < 256 and d < 256) then
        return nil
    end
    return ((a * 256 + b) * 256 + c) * 256 + d
end

--- The first host address of an IPv4 CIDR ("172.17.0.0/16" -> "172.17.0.1"), or nil (not IPv4, or a
--- prefix longer than /30, which has no room for a gateway and a container).
function M.first_host(cidr)
    local addr, bits = tostring(cidr):match("^([%d.]+)/(%d+)$")
    local n, len = addr and ipv4(addr), tonumber(bits)
    if not n or not len or len > 30 then
        return nil
    end
    local host_bits = 32 - len
    n = (n >> host_bits << host_bits) + 1
    return string.format("%d.%d.%d.%d", n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)
end

--- GET /networks/{name} -> `{ gateway = "172.17.0.1", subnet = "172.17.0.0/16" }` (its first IPv4 pool), or
--- nil, err. A pool without a Gateway (dockerd 20.10 reports none for the default bridge on some hosts,
--- while its containers route through the subnet's first address) gets the one Docker's default IPAM
--- gives: the first host address of the subnet (`derived = true`). A wrong guess fails loudly: the DNS
--- filter cannot bind that address.
function Adapter:network(name)
    local doc, err = self:_get_json("/networks/" .. seg(name))
    if not doc then
        return nil, err
    end
    local pools = type(doc.IPAM) == "table" and type(doc.IPAM.Config) == "table" and doc.IPAM.Config or {}
    for _, pool in ipairs(pools) do
        if type(pool) == "table" and type(pool.Gateway) == "string" and ipv4(pool.Gateway) then
            return { gateway = pool.Gateway, subnet = pool.Subnet, name = doc.Name }
        end
    end
    for _, pool in ipairs(pools) do
        local gw = type(pool) == "table" and type(pool.Subnet) == "string" and M.first_host(pool.Subnet)
        if gw then
            return { gateway = gw, subnet = pool.Subnet, name = doc.Name, derived = true }
        end
    end
    return nil, M.error("not_found", nil, "network " .. name .. " has no IPv4 gateway")
end

------------------------------------------------------------------------------------------------------------
-- containers

--- POST /containers/create?name=sandbox-{id}[&platform=linux/{arch}] with the §8.2 body -> container id.
function Adapter:create_container(spec)
    assert(type(spec) == "table" and type(spec.id) == "string", "create_container: spec.id required")
    local body = mapping.create_body(spec, self.config)
    local path = "/containers/create?name=" .. urlencode(spec.name or ("sandbox-" .. spec.id))
    if spec.platform then
        path = path .. "&platform=" .. urlencode((spec.platform.os or "linux") .. "/" .. spec.platform.arch)
    end
    local res, err = self:_expect("POST", path, { [201] = true, [200] = true }, {
        headers = { ["Content-Type"] = "application/json" },
        body = body,
        api_version = mapping.uses_subpath(spec) and M.SUBPATH_API_VERSION or nil,
    })
    if not res then
        return nil, err
    end
    local doc, derr = decode_body(res)
    if not doc then
        return nil, derr
    end
    if type(doc.Warnings) == "table" and #doc.Warnings > 0 then
        self:_warn("docker create warnings", { sandbox_id = spec.id, warnings = table.concat(doc.Warnings, "; ") })
    end
    if type(doc.Id) ~= "string" then
        return nil, M.error("api", res.status, "Docker returned no container id")
    end
    return doc.Id
end

--- PUT /containers/{cid}/archive?path=/ with a tar archive (application/x-tar).
function Adapter:put_archive(cid, tar_bytes)
    local res, err = self:_expect("PUT", "/containers/" .. seg(cid) .. "/archive?path=/", OK204, {
        headers = { ["Content-Type"] = "application/x-tar" },
        body = tar_bytes,
    })
    if not res then
        return nil, err
    end
    return true
end

--- GET /containers/{cid}/archive?path= -> the tar bytes Docker returns for that path (a file comes back as
--- a one-entry archive named after its basename).
function Adapter:get_archive(cid, path)
    local res, err = self:_expect("GET", "/containers/" .. seg(cid) .. "/archive?path=" .. urlencode(path), OK200)
    if not res then
        return nil, err
    end
    return res.body
end

--- Creates (does not start) a throwaway container of `image` named `name`, to copy files out of it (the
--- runtime.execd_image option). Returns the container id.
function Adapter:create_scratch(image, name, platform)
    local path = "/containers/create?name=" .. urlencode(name)
    if platform and platform.arch then
        path = path .. "&platform=" .. urlencode("linux/" .. platform.arch)
    end
    local res, err = self:_expect("POST", path, { [201] = true, [200] = true }, {
        headers = { ["Content-Type"] = "application/json" },
        body = json.encode({ Image = image, Cmd = json.array({ "/execd" }),
            Labels = { ["opensandbox.scratch"] = "1" } }),
    })
    if not res then
        return nil, err
    end
    local doc, derr = decode_body(res)
    if not doc then
        return nil, derr
    end
    return doc.Id
end

-- POST /containers/{cid}/{action}: true or nil, err.
function Adapter:_container_action(cid, action, ok)
    local res, err = self:_expect("POST", "/containers/" .. seg(cid) .. "/" .. action, ok)
    if not res then
        return nil, err
    end
    return true
end

--- POST /containers/{cid}/start (304 "already started" counts as success).
function Adapter:start(cid)
    return self:_container_action(cid, "start", { [204] = true, [304] = true })
end

--- POST /containers/{cid}/pause.
function Adapter:pause(cid)
    return self:_container_action(cid, "pause", OK204)
end

--- POST /containers/{cid}/unpause.
function Adapter:unpause(cid)
    return self:_container_action(cid, "unpause", OK204)
end

--- DELETE /containers/{cid}?force=true&v=true. A container that does not exist counts as removed. If the
--- daemon refuses because the container is paused, it is unpaused and the removal retried once (§6.3).
function Adapter:remove(cid)
    local path = "/containers/" .. seg(cid) .. "?force=true&v=true"
    local res, err = self:_request("DELETE", path)
    if not res then
        return nil, err
    end
    if res.status == 409 and docker_message(res.body, res.status):lower():find("paused", 1, true) then
        self:unpause(cid)
        res, err = self:_request("DELETE", path)
        if not res then
            return nil, err
        end
    end
    if res.status == 204 or res.status == 200 or res.status == 404 then
        return true
    end
    return nil, http_error(res)
end

--- GET /containers/{cid}/top -> the host PIDs of the container's processes (an array of integers). Docker
--- runs `ps -ef` on its host and keeps the container's lines; the PID column is found by its title.
function Adapter:top_pids(cid)
    local doc, err = self:_get_json("/containers/" .. seg(cid) .. "/top")
    if not doc then
        return nil, err
    end
    local col
    for i, t in ipairs(type(doc.Titles) == "table" and doc.Titles or {}) do
        if t == "PID" then
            col = i
        end
    end
    local pids = {}
    for _, row in ipairs(col and type(doc.Processes) == "table" and doc.Processes or {}) do
        local pid = type(row) == "table" and math.tointeger(tonumber(row[col]))
        if pid and pid > 0 then
            pids[#pids + 1] = pid
        end
    end
    return pids
end

--- GET /containers/{cid}/json -> the normalized inspect result (see mapping.normalize_inspect).
function Adapter:inspect(cid)
    local doc, err = self:_get_json("/containers/" .. seg(cid) .. "/json")
    if not doc then
        return nil, err
    end
    return mapping.normalize_inspect(doc, mapping.config_value(self.config, "network_mode"))
end

--- Every sandbox container on the daemon, whichever server made it (the runtime keeps its own, by the
--- label opensandbox.io/instance):
--- GET /containers/json?all=true&filters={"label":["opensandbox.io/id", ...extra]} -> array of
--- `{ id, name, image, labels, state = "running"|..., status = state, status_text = "Up 2 minutes",
--- created_s }`. `extra_labels` (optional) adds label filters such as "opensandbox.test=1".
function Adapter:list(extra_labels)
    local label_filters = json.array({ mapping.LABEL_ID })
    for _, l in ipairs(extra_labels or {}) do
        label_filters[#label_filters + 1] = l
    end
    local filters = json.encode({ label = label_filters })
    local res, err = self:_expect("GET", "/containers/json?all=true&filters=" .. urlencode(filters), OK200)
    if not res then
        return nil, err
    end
    -- Decoded a part at a time: thousands of containers are megabytes of JSON, and decoding them in one call
    -- held the event loop for tens of milliseconds (core.json_elements; whole without it, in the unit specs).
    local parts = json_elements and json_elements(res.body)
    local doc
    if not parts then
        doc, err = decode_body(res)
        if not doc then
            return nil, err
        end
    end
    local out = {}
    local n = parts and #parts or (type(doc) == "table" and #doc or 0)
    for i = 1, n do
        local c = doc and doc[i]
        if parts then
            local derr
            c, derr = json.decode(parts[i])
            if c == nil then
                return nil, M.error("api", res.status, "invalid JSON from Docker: " .. tostring(derr))
            end
            parts[i] = false
            if i % M.LIST_BATCH == 0 and self.breathe then
                self.breathe()
            end
        end
        if type(c) ~= "table" then
            return nil, M.error("api", res.status, "invalid container list from Docker: an element is not an object")
        end
        local name = type(c.Names) == "table" and c.Names[1]
        out[#out + 1] = {
            id = c.Id,
            name = name and name:gsub("^/", "") or nil,
            image = c.Image,
            labels = type(c.Labels) == "table" and c.Labels or {}, -- (decoded for this call: no copy needed)
            state = c.State,
            status = c.State,
            status_text = c.Status,
            created_s = math.tointeger(c.Created),
        }
    end
    return out
end

------------------------------------------------------------------------------------------------------------
-- events

-- One decoded event line -> the adapter's event table (nil for a line that is not a container event).
function M.parse_event(line)
    local doc = json.decode(line)
    if type(doc) ~= "table" then
        return nil
    end
    local action = doc.Action or doc.status
    if type(action) ~= "string" then
        return nil
    end
    if doc.Type and doc.Type ~= "container" then
        return nil
    end
    local actor = type(doc.Actor) == "table" and doc.Actor or {}
    local attrs = type(actor.Attributes) == "table" and actor.Attributes or {}
    -- cjson decodes numbers as doubles; timeNano needs all 19 digits, so read it from the text
    local nano = line:match('"timeNano"%s*:%s*(%d+)')
    local time_nano = nano and math.tointeger(tonumber(nano))
    if not time_nano and doc.time then
        time_nano = math.tointeger(doc.time) and math.tointeger(doc.time) * 1000000000
    end
    return {
        action = action:match("^([^:]+)") or action, -- "exec_start: sh" -> "exec_start"
        raw_action = action,
        id = actor.ID or doc.id,
        sandbox_id = attrs[mapping.LABEL_ID],
        instance = attrs[mapping.LABEL_INSTANCE],
        exit_code = attrs.exitCode and math.tointeger(tonumber(attrs.exitCode)) or nil,
        time_nano = time_nano,
    }
end

--- Follows GET /events?filters={"type":["container"],"label":["opensandbox.io/id"]}[&since=][&until=]
--- with no timeout, calling `on_event(ev)` for each event (see parse_event). `on_event` runs inside the
--- client's on_data callback and must not yield; an error it raises is logged and the stream goes on.
--- Returns when the stream ends: always nil and an error (kind "unavailable" when the stream simply ended).
function Adapter:events(since_s, on_event, until_s)
    assert(type(on_event) == "function", "events: on_event required")
    local labels = json.array({ mapping.LABEL_ID })
    local filters = json.encode({ type = json.array({ "container" }), label = labels })
    local path = "/events?filters=" .. urlencode(filters)
    local function ts(t)
        if math.type(t) == "integer" then
            return tostring(t)
        end
        return string.format("%.9f", t)
    end
    if since_s then
        path = path .. "&since=" .. ts(since_s)
    end
    if until_s then
        path = path .. "&until=" .. ts(until_s)
    end
    local res, err = self:_lines_request("GET", path, { timeout = 0 }, function(line)
        local ev = M.parse_event(line)
        if ev then
            local ok, perr = pcall(on_event, ev)
            if not ok and self.log then
                self.log.error("docker event handler failed", { error = tostring(perr), action = ev.action })
            end
        end
    end, 4096)
    if not res then
        return nil, err
    end
    if res.status ~= 200 then
        return nil, http_error(res)
    end
    return nil, M.error("unavailable", res.status, "event stream ended")
end

------------------------------------------------------------------------------------------------------------
-- the parts in files of their own

local util = { urlencode = urlencode, seg = seg, decode_body = decode_body, http_error = http_error,
    docker_message = docker_message, OK200 = OK200, line_failure = line_failure }
require("runtimes.docker.images")(Adapter, M, util)
require("runtimes.docker.volumes")(Adapter, M, util)
require("runtimes.docker.logs")(Adapter, M, util)
require("runtimes.docker.snapshots")(Adapter, M, util)

return M
