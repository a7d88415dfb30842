-- Unit specs of private images (sandbox.image_access, API.md §8.5): a repository once pulled with
-- credentials asks the registry again (spec.image.verify) for every principal that has not proved access;
-- a failed check fails the sandbox as a failed pull; the proof is kept in the store. On runtimes.fake, whose
-- "registry" below allows only the right credentials for private/* and anyone for the rest.
package.path = "tests/lua/unit/sandbox/?.lua;" .. package.path
local S = require("support")
local rterrors = require("runtimes.errors")
local image_access = require("sandbox.image_access")

local PRIVATE = "registry.example:5000/private/app:1"
local RIGHT = { username = "u", password = "right" }

-- S.store() with the image access table of sandbox.store
local function store()
    local st = S.store()
    st.access = {}
    function st.image_access(_, repo)
        local set = {}
        for p in pairs(st.access[repo] or {}) do
            set[p] = true
        end
        return set
    end
    function st.grant_image_access(_, repo, principal)
        st.access[repo] = st.access[repo] or {}
        st.access[repo][principal] = true
        return true
    end
    return st
end

local function env_with_registry()
    local env = S.env({ store = store() })
    env.verified = {} -- what each provisioning was asked to verify
    env.rt.before.provision = function(sandbox, spec)
        env.verified[#env.verified + 1] = spec.image.verify == true
        local private = spec.image.uri:find("/private/", 1, true)
        local auth = spec.image.auth
        if spec.image.verify and private and not (auth and auth.password == RIGHT.password) then
            env.rt:fail_next("provision", rterrors.new("api", "unauthorized: authentication required",
                { step = "image" }))
        end
        return sandbox
    end
    return env
end

local function create(env, principal, uri, auth)
    local id = assert(env:create(S.spec({ image = { uri = uri, auth = auth } }), { principal = principal })).id
    env:run()
    return env.svc.records[id]
end

describe("sandbox: private images", function()
    it("names one repository however the reference is spelled", function()
        assert.are.equal("docker.io/library/busybox", image_access.repository("busybox"))
        assert.are.equal("docker.io/library/busybox", image_access.repository("docker.io/library/busybox:1"))
        assert.are.equal("docker.io/library/busybox", image_access.repository("index.docker.io/busybox@sha256:"
            .. string.rep("a", 64)))
        assert.are.equal("registry.example:5000/private/app", image_access.repository(PRIVATE))
        assert.are.equal("registry.example:5000/private/app",
            image_access.repository("Registry.Example:5000/private/app"))
    end)

    it("makes a principal without proof of access check with the registry; the proof is kept", function()
        local env = env_with_registry()
        -- tenant A pulls with its credentials: checked (the first time), then remembered
        assert.are.equal("Running", create(env, "team-a", PRIVATE, RIGHT).state)
        assert.are.same({ ["team-a"] = true }, env.store.access["registry.example:5000/private/app"])
        assert.are.equal("Running", create(env, "team-a", PRIVATE, RIGHT).state)
        assert.are.equal("Running", create(env, "team-a", PRIVATE, nil).state, "A proved access once")
        assert.are.same({ true, false, false }, env.verified)
        -- tenant B without credentials, or with wrong ones, must prove access: the registry refuses
        local rec = create(env, "team-b", PRIVATE, nil)
        assert.are.equal("Failed", rec.state)
        assert.are.equal("DOCKER::SANDBOX_IMAGE_PULL_FAILED: unauthorized: authentication required", rec.message)
        assert.is_nil(rec.handle)
        rec = create(env, "team-b", "registry.example:5000/private/app:2", { username = "u", password = "wrong" })
        assert.are.equal("Failed", rec.state)
        assert.is_nil(env.store.access["registry.example:5000/private/app"]["team-b"])
        -- another spelling of the same repository is the same repository
        rec = create(env, "team-b", "REGISTRY.example:5000/private/app@sha256:" .. string.rep("b", 64), nil)
        assert.are.equal("Failed", rec.state)
        -- with the right credentials B proves access, and keeps it
        assert.are.equal("Running", create(env, "team-b", PRIVATE, RIGHT).state)
        assert.are.equal("Running", create(env, "team-b", PRIVATE, nil).state)
        assert.are.same({ true, false, false, true, true, true, true, false }, env.verified)
    end)

    it("leaves public images as they were: no check, nothing recorded", function()
        local env = env_with_registry()
        assert.are.equal("Running", create(env, "team-a", "busybox:1", nil).state)
        assert.are.equal("Running", create(env, "team-b", "docker.io/library/busybox:1", nil).state)
        assert.are.same({ false, false }, env.verified)
        assert.are.same({}, env.store.access)
        -- a public repository once pulled with credentials is checked once per principal, and passes
        assert.are.equal("Running", create(env, "team-a", "busybox:1", RIGHT).state)
        assert.are.equal("Running", create(env, "team-b", "busybox:1", nil).state)
        assert.are.equal("Running", create(env, "team-b", "busybox:1", nil).state)
        assert.are.same({ false, false, true, true, false }, env.verified)
    end)
end)
