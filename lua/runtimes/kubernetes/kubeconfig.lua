-- Where the Kubernetes API server is and how to authenticate to it: a kubeconfig file (YAML, as kubectl
-- reads it) or the in-cluster service account. Both give the same table:
--
--   { server = "https://host:port", ca = PEM | nil, cert = PEM | nil, key = PEM | nil,
--     token = string | nil, token_file = path | nil, namespace = string | nil }
--
-- `ca` nil means the system's trust store. TLS is always verified: `insecure-skip-tls-verify` and plain
-- `http://` servers are refused. Of the kubeconfig's user fields, client certificates and bearer tokens are
-- supported; exec plugins, auth providers and basic auth are refused with an error saying so. File paths in
-- a kubeconfig are relative to the kubeconfig's directory, as kubectl reads them. `token_file` is set when
-- the token came from a file (`tokenFile`, the service account's token), so that the API client can read
-- it again when the kubelet rotates it.
--
-- Every problem is `nil, "kubeconfig <path>: <what is wrong>"` (in-cluster: "in-cluster config: ...").
local lyaml = require("lyaml")
local base64 = require("common.base64")

local M = {}

M.SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

local default_read_file = require("common.files").read

local function is_null(v)
    return v == nil or v == lyaml.null
end

local function str(v)
    if type(v) == "string" and v ~= "" then
        return v
    end
    return nil
end

local function trim(s)
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function dirname(p)
    return p:match("^(.*)/[^/]*$") or "."
end

-- a kubeconfig's named list (clusters, contexts, users) -> name -> the entry's inner table
local function named(doc, list, inner, fail)
    local out = {}
    local v = doc[list]
    if is_null(v) then
        return out
    end
    if type(v) ~= "table" then
        return fail(list .. " is not a list")
    end
    for i, e in ipairs(v) do
        if type(e) ~= "table" or not str(e.name) then
            return fail(string.format("%s[%d] has no name", list, i))
        end
        local body = e[inner]
        if is_null(body) then
            body = {}
        end
        if type(body) ~= "table" then
            return fail(string.format("%s %q: %s is not a mapping", list, e.name, inner))
        end
        out[e.name] = body
    end
    return out
end

-- An https server URL, without a trailing slash; nil and why for anything else.
local function check_server(server)
    if not str(server) then
        return nil, "has no server"
    end
    local s = server:gsub("/+$", "")
    if s:find("^http://") then
        return nil, string.format("server %s is plain http (TLS is required)", s)
    end
    if not s:find("^https://[^/]+") then
        return nil, string.format("server %q is not an https:// URL", s)
    end
    return s
end

local function looks_pem(s)
    return s:find("-----BEGIN ", 1, true) ~= nil
end

--- The credentials of a kubeconfig's text. `path` names the file in errors and anchors relative file
--- paths; opts = { context = name | nil (default: current-context), read_file = fn(path) -> text | nil,
--- err }. Returns the table described at the top, or nil and the error.
function M.parse(text, path, opts)
    opts = opts or {}
    local read_file = opts.read_file or default_read_file
    local function fail(what)
        return nil, string.format("kubeconfig %s: %s", path, what)
    end
    local ok, doc = pcall(lyaml.load, text)
    if not ok then
        return fail("invalid YAML: " .. tostring(doc))
    end
    if type(doc) ~= "table" or doc == lyaml.null or doc[1] ~= nil then
        return fail("not a kubeconfig (the document is not a mapping)")
    end
    local clusters, cerr = named(doc, "clusters", "cluster", fail)
    if not clusters then
        return nil, cerr
    end
    local contexts, xerr = named(doc, "contexts", "context", fail)
    if not contexts then
        return nil, xerr
    end
    local users, uerr = named(doc, "users", "user", fail)
    if not users then
        return nil, uerr
    end

    local ctx_name = opts.context or str(doc["current-context"])
    if not ctx_name then
        return fail("no current-context is set")
    end
    local ctx = contexts[ctx_name]
    if not ctx then
        return fail(string.format("context %q is not defined", ctx_name))
    end
    if not str(ctx.cluster) then
        return fail(string.format("context %q names no cluster", ctx_name))
    end
    local cluster = clusters[ctx.cluster]
    if not cluster then
        return fail(string.format("cluster %q (of context %q) is not defined", ctx.cluster, ctx_name))
    end
    local user = {}
    if str(ctx.user) then
        user = users[ctx.user]
        if not user then
            return fail(string.format("user %q (of context %q) is not defined", ctx.user, ctx_name))
        end
    end
    local cwhere = string.format("cluster %q", ctx.cluster)
    local uwhere = string.format("user %q", tostring(ctx.user))

    -- a PEM given inline (base64) or as a file (relative to the kubeconfig)
    local function pem(where, field, node)
        local data = node[field .. "-data"]
        if not is_null(data) then
            local bytes, berr = base64.decode(data)
            if not bytes then
                return false, string.format("%s: %s-data: %s", where, field, berr)
            end
            if not looks_pem(bytes) then
                return false, string.format("%s: %s-data is not PEM", where, field)
            end
            return bytes
        end
        local file = node[field]
        if is_null(file) then
            return nil
        end
        if not str(file) then
            return false, string.format("%s: %s is not a file path", where, field)
        end
        if file:sub(1, 1) ~= "/" then
            file = dirname(path) .. "/" .. file
        end
        local bytes, ferr = read_file(file)
        if not bytes then
            return false, string.format("%s: %s %s cannot be read: %s", where, field, file, tostring(ferr))
        end
        if not looks_pem(bytes) then
            return false, string.format("%s: %s %s is not PEM", where, field, file)
        end
        return bytes
    end

    if cluster["insecure-skip-tls-verify"] == true then
        return fail(cwhere .. ": insecure-skip-tls-verify is refused (the server's certificate must be verified)")
    end
    local server, serr = check_server(cluster.server)
    if not server then
        return fail(cwhere .. ": " .. serr)
    end
    local out = { server = server, namespace = str(ctx.namespace) }
    local v, err = pem(cwhere, "certificate-authority", cluster)
    if v == false then
        return fail(err)
    end
    out.ca = v

    if not is_null(user.exec) then
        return fail(uwhere .. ": exec credential plugins are not supported (use a token or a client certificate)")
    end
    if not is_null(user["auth-provider"]) then
        return fail(uwhere .. ": auth-provider is not supported (use a token or a client certificate)")
    end
    if not is_null(user.username) or not is_null(user.password) then
        return fail(uwhere .. ": basic authentication is not supported (use a token or a client certificate)")
    end
    v, err = pem(uwhere, "client-certificate", user)
    if v == false then
        return fail(err)
    end
    out.cert = v
    v, err = pem(uwhere, "client-key", user)
    if v == false then
        return fail(err)
    end
    out.key = v
    if (out.cert == nil) ~= (out.key == nil) then
        return fail(uwhere .. ": a client certificate needs both client-certificate and client-key")
    end
    if not is_null(user.token) then
        if not str(user.token) then
            return fail(uwhere .. ": token is not a string")
        end
        out.token = user.token
    elseif not is_null(user.tokenFile) then
        local file = user.tokenFile
        if not str(file) then
            return fail(uwhere .. ": tokenFile is not a file path")
        end
        if file:sub(1, 1) ~= "/" then
            file = dirname(path) .. "/" .. file
        end
        local tok, terr = read_file(file)
        if not tok then
            return fail(string.format("%s: tokenFile %s cannot be read: %s", uwhere, file, tostring(terr)))
        end
        tok = trim(tok)
        if tok == "" then
            return fail(string.format("%s: tokenFile %s is empty", uwhere, file))
        end
        out.token, out.token_file = tok, file
    end
    return out
end

--- Reads the kubeconfig at `path` (opts as for parse).
function M.load(path, opts)
    opts = opts or {}
    local text, err = (opts.read_file or default_read_file)(path)
    if not text then
        return nil, string.format("kubeconfig %s: cannot be read: %s", path, tostring(err))
    end
    return M.parse(text, path, opts)
end

--- The in-cluster credentials: the API server from KUBERNETES_SERVICE_HOST/PORT and the pod's service
--- account (token, ca.crt, namespace) under M.SA_DIR. `getenv` and `read_file` default to os.getenv and
--- a plain file read.
function M.in_cluster(getenv, read_file)
    getenv = getenv or os.getenv
    read_file = read_file or default_read_file
    local function fail(what)
        return nil, "in-cluster config: " .. what
    end
    local host, port = str(getenv("KUBERNETES_SERVICE_HOST")), str(getenv("KUBERNETES_SERVICE_PORT"))
    if not host or not port then
        return fail("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (the server is not running "
            .. "in a pod); set kubernetes.kubeconfig_path")
    end
    if not port:find("^%d+$") then
        return fail(string.format("KUBERNETES_SERVICE_PORT %q is not a port number", port))
    end
    if host:find(":", 1, true) then
        host = "[" .. host .. "]"
    end
    local token_file = M.SA_DIR .. "/token"
    local token, terr = read_file(token_file)
    if not token then
        return fail(string.format("%s cannot be read: %s", token_file, tostring(terr)))
    end
    token = trim(token)
    if token == "" then
        return fail(token_file .. " is empty")
    end
    local ca, cerr = read_file(M.SA_DIR .. "/ca.crt")
    if not ca then
        return fail(string.format("%s/ca.crt cannot be read: %s", M.SA_DIR, tostring(cerr)))
    end
    if not looks_pem(ca) then
        return fail(M.SA_DIR .. "/ca.crt is not PEM")
    end
    local ns = read_file(M.SA_DIR .. "/namespace")
    ns = ns and trim(ns) or ""
    return {
        server = string.format("https://%s:%s", host, port),
        ca = ca,
        token = token,
        token_file = token_file,
        namespace = ns ~= "" and ns or nil,
    }
end

return M
