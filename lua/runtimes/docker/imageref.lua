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

local HUB = { ["docker.io"] = true, ["index.docker.io"] = true, ["registry-1.docker.io"] = true }

--- The repository `ref` names, in one spelling for every way of writing it: the registry host (lowercase;
--- Docker Hub's aliases as "docker.io"), "/", the path (Docker Hub's one-word names under "library/").
--- "busybox", "library/busybox" and "docker.io/library/busybox" are all "docker.io/library/busybox".
function M.repository(ref)
    local registry = ref.registry and ref.registry:lower() or "docker.io"
    local path = ref.repository
    if HUB[registry] then
        registry = "docker.io"
        if not path:find("/", 1, true) then
            path = "library/" .. path
        end
    end
    return registry .. "/" .. path
end

--- The names under which an image can be found, as Docker reports them in RepoTags ("name:tag") and
--- RepoDigests ("name@sha256:..."), normalized with M.repository so that both spellings compare: the
--- repository:tag (":latest" when there is neither a tag nor a digest) and the repository@digest of `ref`.
function M.names(ref)
    local out, repo = {}, M.repository(ref)
    if ref.tag or not ref.digest then
        out[#out + 1] = repo .. ":" .. (ref.tag or "latest")
    end
    if ref.digest then
        out[#out + 1] = repo .. "@" .. ref.digest
    end
    return out
end

--- Whether an image whose RepoTags and RepoDigests are `tags` and `digests` (arrays of strings) carries a
--- name of `ref`: false when Docker found it by something else, such as its ID ("sha256:…", or a prefix).
function M.named_by(ref, tags, digests)
    local have = {}
    for _, list in ipairs({ tags or {}, digests or {} }) do
        for _, n in ipairs(type(list) == "table" and list or {}) do
            local r = type(n) == "string" and M.parse(n)
            if r then
                for _, name in ipairs(M.names(r)) do
                    have[name] = true
                end
            end
        end
    end
    for _, name in ipairs(M.names(ref)) do
        if have[name] then
            return true
        end
    end
    return false
end

return M
