-- Part of the lifecycle service: private images (API.md §8.5). An image pulled once with one tenant's
-- registry credentials stays on the runtime's node, where any create naming it would run it without asking
-- the registry. So the store keeps, per image repository, the principals that proved they may pull it (a
-- pull with their credentials, or a registry check without any that the registry allowed), and a create of
-- a repository that was ever pulled with credentials, by a principal that has not proved access, asks the
-- runtime to check with the registry (spec.image.verify: Docker pulls again with the caller's credentials or
-- none; Kubernetes sets imagePullPolicy: Always). A registry that refuses fails the sandbox as any failed
-- pull does (DOCKER::SANDBOX_IMAGE_PULL_FAILED). A create that brings credentials is checked the same way
-- until its principal has proved access once, so that wrong credentials never pass on a present image.
-- Grants are never taken back: a principal that proved access once keeps it (as its sandboxes keep running).
local imageref = require("runtimes.docker.imageref") -- OCI references, not a Docker word: pure parsing

local M = {}

local function principal_key(principal)
    return type(principal) == "string" and principal or ""
end

--- The repository of `uri` as the store keys it (imageref.repository), or nil for a reference it cannot parse.
function M.repository(uri)
    local ref = imageref.parse(uri)
    return ref and imageref.repository(ref) or nil
end

--- Whether provisioning `spec` for `principal` must have the registry check access first. Returns the
--- answer and the repository. A store that cannot be read answers yes for a create with credentials or of
--- an unknown status (the registry then decides).
function M.must_verify(store, principal, spec)
    local repo = M.repository(spec.image.uri)
    if not repo or not store.image_access then
        return false, repo
    end
    local who, err = store:image_access(repo)
    if not who then
        return true, repo, err
    end
    if who[principal_key(principal)] then
        return false, repo
    end
    return spec.image.auth ~= nil or next(who) ~= nil, repo
end

--- After a successful provisioning: notes that `principal` proved access to `repo` when the pull was checked
--- (`verified`). Returns true or nil, err.
function M.granted(store, repo, principal, verified)
    if not (repo and verified and store.grant_image_access) then
        return true
    end
    return store:grant_image_access(repo, principal_key(principal))
end

return M
