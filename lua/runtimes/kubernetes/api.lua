-- A small Kubernetes REST client for the Kubernetes runtime: the only module that sends requests to the API
-- server. It speaks JSON over a `core.client`-like object (`client.request(opts)`, which yields the calling
-- task), with TLS material passed as `opts.tls = { ca, cert, key }` (PEM strings) and a bearer token when
-- one is configured. It knows paths, verbs, Status objects and watch streams; it knows nothing of
-- sandboxes (runtimes.kubernetes builds the paths and objects).
--
-- Requests are rate limited on the client side (runtimes.kubernetes.ratelimit): one token bucket for
-- reads (GET, watches) and one for writes (POST, PUT, PATCH, DELETE), each with `qps` and `burst`.
--
-- Every method may yield. Operational failures are `nil, err` with a runtimes.errors object:
--   transport failure -> "unavailable" (the transport's reason); 404 -> "not_found"; 409 -> "conflict";
--   403 -> "api", "forbidden: cannot <verb> <resource> in namespace <ns>: <apiserver message>";
--   anything else -> "api" with the apiserver's Status message. A watch whose resourceVersion is too old
--   (410 Gone) gives an "api" error with status 410 and `gone = true` (M.is_gone): the caller relists.
local rtmetrics = require("runtimes.metrics")
local json = require("common.json")
local rterrors = require("runtimes.errors")
local lines = require("runtimes.docker.lines")
local ratelimit = require("runtimes.kubernetes.ratelimit")

local M = {}

M.DEFAULT_TIMEOUT = 30 -- seconds per request (watches have their own)
M.DEFAULT_QPS = 50
M.DEFAULT_BURST = 100
M.TOKEN_REREAD_S = 60 -- a token file (a rotated service-account token) is read again this often

local Api = {}
Api.__index = Api

local WRITES = { POST = true, PUT = true, PATCH = true, DELETE = true }

------------------------------------------------------------------------------------------------------------
-- errors

local function transport_error(err, timeout)
    return rterrors.transport(err, "The Kubernetes API server", timeout)
end

--- The verb and the object a request acts on, for messages: verb, resource, namespace | nil, name | nil.
function M.describe(method, path)
    local p, q = path:match("^([^?]*)%??(.*)$")
    local ns, rest = p:match("^/api/v1/namespaces/([^/]+)/?(.*)$")
    local resource, name
    if ns and rest ~= "" then
        resource, name = rest:match("^([^/]+)/?([^/]*)")
        name = name ~= "" and name or nil
    elseif ns then
        resource, name, ns = "namespaces", ns, nil
    else
        resource = p
    end
    local verb
    if method == "GET" then
        if q:find("%f[%w]watch=") then
            verb = "watch"
        else
            verb = name and "get" or "list"
        end
    elseif method == "POST" then
        verb = "create"
    elseif method == "PATCH" then
        verb = "patch"
    elseif method == "PUT" then
        verb = "update"
    elseif method == "DELETE" then
        verb = name and "delete" or "deletecollection"
    else
        verb = method:lower()
    end
    return verb, resource, ns, name
end

local function status_message(body, status)
    if type(body) == "string" and body ~= "" then
        local doc = json.decode(body)
        if type(doc) == "table" and type(doc.message) == "string" and doc.message ~= "" then
            return doc.message
        end
        local text = body:gsub("^%s+", ""):gsub("%s+$", "")
        if text ~= "" then
            return text:sub(1, 1024)
        end
    end
    return "the Kubernetes API answered HTTP " .. tostring(status)
end

--- The runtimes.errors object of a refused request (`res` = { status, body }).
function M.http_error(method, path, res)
    local msg = status_message(res.body, res.status)
    local kind = "api"
    if res.status == 404 then
        kind = "not_found"
    elseif res.status == 409 then
        kind = "conflict"
    elseif res.status == 403 then
        local verb, resource, ns, name = M.describe(method, path)
        local what
        if ns then
            what = string.format("cannot %s %s in namespace %s", verb, resource, ns)
        else
            what = string.format("cannot %s %s", verb, name and (resource .. " " .. name) or resource)
        end
        msg = string.format("forbidden: %s: %s", what, msg)
    end
    local err = rterrors.new(kind, msg, { status = res.status })
    if res.status == 410 then
        err.gone = true
    end
    return err
end

--- True when `err` says a watch's resourceVersion is too old (410 Gone): list again, then watch from there.
function M.is_gone(err)
    return type(err) == "table" and err.gone == true
end

------------------------------------------------------------------------------------------------------------
-- construction

local function urlencode(s)
    return (tostring(s):gsub("[^A-Za-z0-9%-._~]", function(c)
        return string.format("%%%02X", c:byte())
    end))
end
M.urlencode = urlencode

--- A query string from an array of { name, value } pairs (nil values are skipped), with its leading "?",
--- or "" when empty.
function M.query(params)
    local out = {}
    for _, kv in ipairs(params) do
        if kv[2] ~= nil then
            out[#out + 1] = urlencode(kv[1]) .. "=" .. urlencode(kv[2])
        end
    end
    return #out > 0 and ("?" .. table.concat(out, "&")) or ""
end

--- A new client. opts = { client (required: request(opts) like core.client), server (required:
--- "https://host:port"), ca, cert, key (PEM strings | nil), token, token_file, read_file (fn(path) -> text,
--- for token_file), now (fn -> seconds), sleep (fn(sec), yields), qps, burst, timeout, log }.
function M.new(opts)
    assert(type(opts) == "table", "kubernetes api: options table required")
    assert(opts.client and opts.client.request, "kubernetes api: opts.client with request() required")
    assert(type(opts.server) == "string", "kubernetes api: opts.server required")
    local now = opts.now or os.time
    local sleep = opts.sleep or function(sec)
        require("core.timer").sleep(sec)
    end
    local tls
    if opts.ca or opts.cert or opts.key then
        tls = { ca = opts.ca, cert = opts.cert, key = opts.key }
    end
    local qps, burst = opts.qps or M.DEFAULT_QPS, opts.burst or M.DEFAULT_BURST
    return setmetatable({
        client = opts.client,
        server = opts.server,
        tls = tls,
        token = opts.token,
        token_file = opts.token_file,
        token_read_at = now(),
        read_file = opts.read_file,
        now = now,
        timeout = opts.timeout or M.DEFAULT_TIMEOUT,
        log = opts.log,
        reads = ratelimit.new({ qps = qps, burst = burst, now = now, sleep = sleep }),
        writes = ratelimit.new({ qps = qps, burst = burst, now = now, sleep = sleep }),
    }, Api)
end

------------------------------------------------------------------------------------------------------------
-- requests

-- the bearer token, read again from its file now and then (the kubelet rotates service-account tokens), and
-- at once after a 401 (`token_read_at` is then cleared)
function Api:_token()
    if self.token_file and self.read_file and (not self.token_read_at
        or self.now() - self.token_read_at >= M.TOKEN_REREAD_S) then
        self.token_read_at = self.now()
        local t = self.read_file(self.token_file)
        t = t and t:gsub("^%s+", ""):gsub("%s+$", "")
        if t and t ~= "" then
            self.token = t
        elseif self.log then
            self.log.warn("cannot read the Kubernetes token file again; keeping the last token",
                { file = self.token_file })
        end
    end
    return self.token
end

--- Sends one request (rate limited). opts = { body = table (JSON) | string, content_type, timeout,
--- on_data, accept (the Accept header; default application/json) }. Returns the response { status,
--- headers, body } or nil and an "unavailable" error.
--- A 401 with a token from a file (a rotated, revoked or replaced token) has the file read again at once;
--- when that gives another token, a request without on_data is sent once more with it.
function Api:request(method, path, opts)
    opts = opts or {}
    local used = self:_token()
    local res, err = self:_send(method, path, opts)
    if res and res.status == 401 and self.token_file then
        self.token_read_at = nil
        if not opts.on_data and self:_token() ~= used then
            if self.log then
                self.log.info("the Kubernetes token was refused; retrying with the token file's new token",
                    { file = self.token_file })
            end
            return self:_send(method, path, opts)
        end
    end
    return res, err
end

function Api:_send(method, path, opts)
    if WRITES[method] then
        self.writes:take()
    else
        self.reads:take()
    end
    local headers = { Accept = opts.accept or "application/json" }
    local token = self:_token()
    if token then
        headers.Authorization = "Bearer " .. token
    end
    local body = opts.body
    if type(body) == "table" then
        body = json.encode(body)
    end
    if body then
        headers["Content-Type"] = opts.content_type or "application/json"
    end
    self.sent = (self.sent or 0) + 1
    if self.log then -- one line per request, so that a run's request count per operation can be read back
        self.log.debug("kubernetes request", { method = method, path = path })
    end
    local timeout = opts.timeout or self.timeout
    local res, err = self.client.request({
        method = method,
        url = self.server .. path,
        headers = headers,
        body = body,
        timeout = timeout,
        on_data = opts.on_data,
        tls = self.tls,
        -- HTTP/2, multiplexed: every create's watch of its pod and the long namespace watch are streams on
        -- a few shared connections (over HTTP/1.1 each held one of the host's capped connections, and a
        -- burst of creates starved the other requests until they timed out)
        http2 = self.server:find("^https://") ~= nil,
    })
    rtmetrics.request("kubernetes", method, res)
    if not res then
        return nil, transport_error(err, timeout)
    end
    return res
end

-- A request whose success is one of the `ok` statuses: its JSON reply decoded (only that: `local _, err =`
-- tells success from failure).
function Api:_call(method, path, ok, opts)
    local res, err = self:request(method, path, opts)
    if not res then
        return nil, err
    end
    if not ok[res.status] then
        return nil, M.http_error(method, path, res)
    end
    if res.body == nil or res.body == "" then
        return {}
    end
    local doc, derr = json.decode(res.body)
    if type(doc) ~= "table" then
        return nil, rterrors.new("api", "invalid JSON from the Kubernetes API: " .. tostring(derr or "not an object"),
            { status = res.status })
    end
    return doc
end

local OK_GET = { [200] = true }
local OK_CREATE = { [200] = true, [201] = true, [202] = true }
local OK_DELETE = { [200] = true, [202] = true }

--- GET path -> the decoded object.
function Api:get(path)
    return self:_call("GET", path, OK_GET)
end

--- POST path with `obj` (a table) -> the created object.
function Api:create(path, obj)
    return self:_call("POST", path, OK_CREATE, { body = obj })
end

--- PATCH path with a JSON merge patch (RFC 7386) -> the patched object.
function Api:merge_patch(path, patch)
    return self:_call("PATCH", path, OK_GET, { body = patch, content_type = "application/merge-patch+json" })
end

--- PUT path with the whole object `obj` (its metadata.resourceVersion makes it conditional: a 409
--- "conflict" when someone changed it meanwhile) -> the replaced object.
function Api:replace(path, obj)
    return self:_call("PUT", path, OK_GET, { body = obj })
end

--- DELETE path -> the reply (the object, or a Status). A 404 is a "not_found" error.
function Api:delete(path)
    return self:_call("DELETE", path, OK_DELETE)
end

------------------------------------------------------------------------------------------------------------
-- watch

--- Watches `path` (a collection, with its own query such as labelSelector) from `resource_version`
--- (nil: from now), with bookmarks. Calls on_event(ev) for every event
--- ({ type = "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK", object = {...} }); on_event runs inside the
--- transfer and must not yield; returning false stops the watch. opts = { timeout_s = the server-side
--- timeoutSeconds (default M.WATCH_TIMEOUT) }. Returns true when on_event stopped it, else (the stream
--- ended, or an ERROR event came) nil and an error: "unavailable" when the stream ended (`err.ended` is
--- then true: the server closed it, after timeoutSeconds) or the transport failed; M.is_gone(err) when
--- the resourceVersion is too old; "api" for other ERROR events and refusals.
M.WATCH_TIMEOUT = 300
M.MAX_ERROR_BODY = 65536

function Api:watch(path, resource_version, on_event, opts)
    opts = opts or {}
    local timeout_s = opts.timeout_s or M.WATCH_TIMEOUT
    local sep = path:find("?", 1, true) and "&" or "?"
    local url = path .. sep .. M.query({ { "watch", "1" }, { "allowWatchBookmarks", "true" },
        { "resourceVersion", resource_version }, { "timeoutSeconds", tostring(math.ceil(timeout_s)) } }):sub(2)
    local stopped, werr
    local raw = {} -- text that is not an event: the body of a refusal
    local rawlen = 0
    local splitter = lines.new(function(line)
        if stopped or werr then
            return
        end
        local ev = json.decode(line)
        if type(ev) ~= "table" or type(ev.type) ~= "string" or type(ev.object) ~= "table" then
            if rawlen < M.MAX_ERROR_BODY then
                raw[#raw + 1] = line
                rawlen = rawlen + #line
            end
            return
        end
        if ev.type == "ERROR" then
            local st = ev.object
            local code = math.tointeger(st.code) or 500
            werr = M.http_error("GET", url, { status = code, body = json.encode(st) })
            return
        end
        if on_event(ev) == false then
            stopped = true
        end
    end)
    local res, err = self:request("GET", url, {
        timeout = timeout_s + 30,
        on_data = function(chunk)
            splitter:feed(chunk)
            return not (stopped or werr)
        end,
    })
    if not stopped and not werr then
        splitter:finish()
    end
    if stopped then
        return true
    end
    if werr then
        return nil, werr
    end
    if not res then
        return nil, err
    end
    if res.status ~= 200 then
        return nil, M.http_error("GET", url, { status = res.status, body = table.concat(raw, "\n") })
    end
    local ended = rterrors.new("unavailable", "the Kubernetes watch stream ended")
    ended.ended = true
    return nil, ended
end

return M
