-- The in-sandbox agent bundle (API.md §8.4): the tar that provisioning uploads at `/` of every created
-- container: opt/opensandbox/ (0755), opt/opensandbox/execd (0755, our static agent) and
-- opt/opensandbox/bootstrap.sh (0755). It is built once, on first use, and kept in memory.
--
-- Where the files are found (first match wins):
--   agent binary: $OPENSANDBOX_EXECD_PATH; <dir of the server binary>/execd/opensandbox-execd (a build tree);
--                 <dir of the server binary>/opensandbox-execd; <root>/build/execd/opensandbox-execd;
--                 <dir of the server binary>/../libexec/opensandbox/opensandbox-execd (an install).
--   bootstrap:    <root>/execd/bootstrap.sh.
-- Without an agent binary the bundle holds only the bootstrap (sandboxes then run without an agent, and a
-- warning is logged once): lifecycle operations keep working.
local tar = require("runtimes.docker.tar")

local M = {}

local Agent = {}
Agent.__index = Agent

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local data = f:read("a")
    f:close()
    return data
end

local function dirname(p)
    return p:match("^(.*)/[^/]*$") or "."
end

--- opts = { root = install root, exe = server binary path, log = core.log-like, runtime = adapter (for
--- execd_image), execd_image = image name or nil, uuid = core.uuid-like }
function M.new(opts)
    return setmetatable({ root = opts.root, exe = opts.exe, log = opts.log, runtime = opts.runtime,
        execd_image = opts.execd_image, uuid = opts.uuid, bundle = nil, from_image = {} }, Agent)
end

local function only_file(tar_bytes, what)
    local entries, err = tar.entries(tar_bytes)
    if not entries then
        return nil, err
    end
    for _, e in ipairs(entries) do
        if e.type == "file" then
            return e.content
        end
    end
    return nil, what .. " is not a regular file in the image"
end

--- runtime.execd_image (§8.4): copies /execd and /bootstrap.sh out of a created (never started) container of
--- that image, then removes it. Cached per platform. Returns the tar bytes for provisioning, or nil, err.
function Agent:archive_from_image(platform)
    local key = platform and (platform.os .. "/" .. platform.arch) or "default"
    if self.from_image[key] then
        return self.from_image[key]
    end
    local rt = self.runtime
    local ok, err = rt:ensure_image(self.execd_image, nil, platform)
    if not ok then
        return nil, "cannot pull runtime.execd_image " .. self.execd_image .. ": " .. tostring(err and err.message)
    end
    local cid, failed
    cid, err, failed = rt:create_from_image(self.execd_image, nil, platform, function()
        return rt:create_scratch(self.execd_image, "sandbox-execd-" .. self.uuid.v4(), platform)
    end)
    if failed == "pull" then
        return nil, "cannot pull runtime.execd_image " .. self.execd_image .. ": " .. tostring(err and err.message)
    end
    if not cid then
        return nil, "cannot create a container of " .. self.execd_image .. ": " .. tostring(err and err.message)
    end
    local files = {}
    for _, p in ipairs({ "/execd", "/bootstrap.sh" }) do
        local bytes, gerr = rt:get_archive(cid, p)
        if bytes then
            bytes, gerr = only_file(bytes, p)
        end
        if not bytes then
            rt:remove(cid)
            return nil, string.format("cannot copy %s out of %s: %s", p, self.execd_image,
                tostring(type(gerr) == "table" and gerr.message or gerr))
        end
        files[p] = bytes
    end
    rt:remove(cid)
    local w = tar.new()
    w:dir("opt/opensandbox", { mode = tonumber("755", 8) })
    w:file("opt/opensandbox/execd", files["/execd"], { mode = tonumber("755", 8) })
    w:file("opt/opensandbox/bootstrap.sh", files["/bootstrap.sh"], { mode = tonumber("755", 8) })
    self.from_image[key] = w:finish()
    return self.from_image[key]
end

function Agent:binary_candidates()
    local bindir = dirname(self.exe or "")
    local c = {}
    local env = os.getenv("OPENSANDBOX_EXECD_PATH")
    if env and env ~= "" then
        c[#c + 1] = env
    end
    c[#c + 1] = bindir .. "/execd/opensandbox-execd"
    c[#c + 1] = bindir .. "/opensandbox-execd"
    c[#c + 1] = self.root .. "/build/execd/opensandbox-execd"
    c[#c + 1] = bindir .. "/../libexec/opensandbox/opensandbox-execd"
    return c
end

-- what marks an agent volume as made (and filled) by the server
local AGENT_VOLUME_LABELS = { ["opensandbox.io/agent"] = "true" }

-- FNV-1a over the bundle's files (not the tar, whose headers carry the build time): names the agent volume
-- after what it holds, so that a restart with the same agent finds its volume, and a new agent gets a new
-- one. Not a security hash: the volume is only ours; the name just has to change when the files do.
local function content_tag(bytes)
    local h = 2166136261
    for i = 1, #bytes do
        h = ((h ~ bytes:byte(i)) * 16777619) & 0xffffffff
    end
    return string.format("%08x%x", h, #bytes)
end

--- docker.agent_delivery = "volume": the name of a Docker volume that holds the bundle, created and filled on
--- first use (single-flight: concurrent provisionings wait for one fill). `image` is any image the daemon has
--- (the fill container is created from it, never started). Returns the name, or nil, err.
function Agent:volume(image)
    local tar_bytes, err = self:archive()
    if not tar_bytes then
        return nil, err
    end
    if not self.bundle_tag then -- hashed once, on first use (~10 ms for the whole agent)
        self.bundle_tag = content_tag(self.bundle_files and table.concat(self.bundle_files, "\0") or tar_bytes)
        self.bundle_files = nil
    end
    local name = "opensandbox-agent-" .. self.bundle_tag
    if self.volume_ready == name then
        -- looked at on every create (one cheap call): `docker volume prune` removes it whenever no sandbox
        -- uses it, and Docker would then create an empty one of that name for the next sandbox by itself
        local state, serr = self.runtime:volume_state(name, AGENT_VOLUME_LABELS)
        if state == "ours" then
            return name
        end
        if not state then
            return nil, "cannot check the agent volume " .. name .. ": " .. tostring(serr and serr.message or serr)
        end
        self.volume_ready = nil
        if self.log then
            self.log.warn("agent volume gone or replaced; making it again", { volume = name, found = state })
        end
    end
    if self.volume_filling then
        local ok, werr = self.volume_filling:wait(120)
        if ok and self.volume_ready == name then
            return name
        end
        if not ok then
            return nil, "waiting for the agent volume: " .. tostring(werr)
        end
    end
    local ev = require("common.sync").event()
    self.volume_filling = ev
    local ok, verr = self.runtime:ensure_volume(name, tar_bytes, image, AGENT_VOLUME_LABELS)
    self.volume_filling = nil
    if ok then
        self.volume_ready = name
    end
    ev:set(ok or false)
    if ok and not self.volumes_pruned then
        -- once per run: the volumes of earlier bundles (one per agent build) that no sandbox uses any more,
        -- and that are over an hour old (one just made by another server is not in use yet)
        self.volumes_pruned = true
        local n = self.runtime:remove_unused_volumes("opensandbox.io/agent=true", name, (os.time() - 3600) * 1000000)
        if n and n > 0 and self.log then
            self.log.info("removed unused agent volumes of earlier bundles", { count = n })
        end
    end
    if not ok then
        return nil, "cannot prepare the agent volume " .. name .. ": " .. tostring(verr and verr.message or verr)
    end
    return name
end

--- The tar bytes, or nil, err (the bootstrap script is required; the agent binary is not). With
--- runtime.execd_image the files come from that image instead (may yield: Docker calls).
function Agent:archive(platform)
    if self.execd_image then
        return self:archive_from_image(platform)
    end
    if self.bundle then
        return self.bundle
    end
    local boot = read_file(self.root .. "/execd/bootstrap.sh")
    if not boot then
        return nil, "bootstrap script not found at " .. self.root .. "/execd/bootstrap.sh"
    end
    local bin, from
    for _, p in ipairs(self:binary_candidates()) do
        bin = read_file(p)
        if bin then
            from = p
            break
        end
    end
    local w = tar.new()
    w:dir("opt/opensandbox", { mode = tonumber("755", 8) })
    if bin then
        w:file("opt/opensandbox/execd", bin, { mode = tonumber("755", 8) })
        if self.log then
            self.log.info("agent bundle built", { agent = from, bytes = #bin })
        end
    elseif self.log then
        self.log.warn("agent binary not found; sandboxes will run without the in-sandbox agent",
            { looked_in = table.concat(self:binary_candidates(), ", ") })
    end
    w:file("opt/opensandbox/bootstrap.sh", boot, { mode = tonumber("755", 8) })
    self.bundle = w:finish()
    self.bundle_files = { boot, bin or "" } -- for the volume's name (Agent:volume)
    return self.bundle
end

return M
