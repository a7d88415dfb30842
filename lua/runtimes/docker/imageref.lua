-- Image references (API.md §4.6, §6.1, §8.5): split an already validated Docker reference into its parts
-- and derive what the Engine API wants for a pull.
--
--   [host[:port]/]path[:tag][@sha256:hex]
--
-- The first `/`-separated component is a registry host only when there is a `/` after it and it contains
-- `.` or `:` or is `localhost` (Docker's own rule); otherwise the image lives on Docker Hub.
-- Pure functions, no I/O.
local M = {}

M.DOCKER_HUB_SERVER = "https://index.docker.io/v1/"

--- Parses `uri`; returns `{ registry = host|nil, repository = path, name = [host/]path, tag = s|nil,
--- digest = "sha256:..."|nil }`, or nil and a message for an empty or obviously broken reference.
-- The grammar itself is checked by the API layer; this only splits.
function M.parse(uri)
    if type(uri) ~= "string" or uri == "" then
        return nil, "empty image reference"
    end
    local rest, digest = uri, nil
    local at = uri:find("@", 1, true)
    if at then
        rest, digest = uri:sub(1, at - 1), uri:sub(at + 1)
        if digest == "" then
            return nil, "empty digest in image reference '" .. uri .. "'"
        end
    end
    -- the tag is a `:` after the last `/` (a `:` before it belongs to host:port)
    local last_slash = rest:match(".*()/") or 0
    local name, tag = rest, nil
    local colon = rest:find(":", last_slash + 1, true)
    if colon then
        name, tag = rest:sub(1, colon - 1), rest:sub(colon + 1)
        if tag == "" then
            return nil, "empty tag in image reference '" .. uri .. "'"
        end
    end
    if name == "" then
        return nil, "empty repository in image reference '" .. uri .. "'"
    end
    local registry, repository = nil, name
    local first, remainder = name:match("^([^/]+)/(.+)$")
    if first and (first:find("[.:]") or first == "localhost") then
        registry, repository = first, remainder
    end
    return { registry = registry, repository = repository, name = name, tag = tag, digest = digest }
end

--- The `serveraddress` for X-Registry-Auth (§8.5): the registry host, or Docker Hub's index address.
function M.server_address(ref)
    return ref.registry or M.DOCKER_HUB_SERVER
end

--- The `fromImage` and `tag` query values for POST /images/create: a digest wins over a tag, and a
--- reference with neither is pulled as `latest`.
function M.pull_params(ref)
    return ref.name, ref.digest or ref.tag or "latest"
end

--- The canonical text of what a pull fetches (used to share identical concurrent pulls).
function M.pull_key(ref)
    local from, tag = M.pull_params(ref)
    if tag:find(":", 1, true) then
        return from .. "@" .. tag
    end
    return from .. ":" .. tag
end

return M
