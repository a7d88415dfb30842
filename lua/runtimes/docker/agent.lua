-- Agent delivery on Docker (API.md §8.4): how the agent's files (runtimes.agent_files) get into a sandbox
-- container.
--   volume(): docker.agent_delivery = "volume" (the default): one read-only named volume per agent build,
--             created with NoCopy and filled only from the server's own files, mounted by every sandbox at
--             /opt/opensandbox. Nothing is uploaded per sandbox.
--   archive(platform): "archive": the tar uploaded at / of every created container: opt/opensandbox/
--             (0755), opt/opensandbox/execd (0755) and opt/opensandbox/bootstrap.sh (0755). Built once. With
--             runtime.execd_image the two files are copied out of that image instead (cached per platform),
--             and the archive delivery is used whatever agent_delivery says.
local tar = require("runtimes.docker.tar")

local M = {}

local Agent = {}
Agent.__index = Agent

-- what marks an agent volume as made (and filled) by the server
M.VOLUME_LABELS = { ["opensandbox.io/agent"] = "true" }
local MODE_755 = tonumber("755", 8)

--- opts = { files = runtimes.agent_files object, engine = runtimes.docker.engine adapter, log = core.log-like,
---          execd_image = image name or nil, uuid = core.uuid-like, now_s = fn() -> seconds (optional) }
function M.new(opts)
    return setmetatable({ files = opts.files, engine = opts.engine, log = opts.log, execd_image = opts.execd_image,
        uuid = opts.uuid, now_s = opts.now_s or os.time, bundle = nil, from_image = {} }, Agent)
end

local function bundle_tar(execd, bootstrap)
    local w = tar.new()
    w:dir("opt/opensandbox", { mode = MODE_755 })
    if execd then
        w:file("opt/opensandbox/execd", execd, { mode = MODE_755 })
    end
    w:file("opt/opensandbox/bootstrap.sh", bootstrap, { mode = MODE_755 })
    return w:finish()
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
--- that image, then removes it. Cached per platform. Returns the tar bytes, or nil, err.
function Agent:archive_from_image(platform)
    local key = platform and (platform.os .. "/" .. platform.arch) or "default"
    if self.from_image[key] then
        return self.from_image[key]
    end
    local rt = self.engine
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
    self.from_image[key] = bundle_tar(files["/execd"], files["/bootstrap.sh"])
    return self.from_image[key]
end

--- The tar bytes for the archive delivery, or nil, err. With runtime.execd_image the files come from that
--- image (may yield: Docker calls).
function Agent:archive(platform)
    if self.execd_image then
        return self:archive_from_image(platform)
    end
    if not self.bundle then
        local f, err = self.files:get()
        if not f then
            return nil, err
        end
        self.bundle = bundle_tar(f.execd, f.bootstrap)
    end
    return self.bundle
end

--- Whether sandboxes mount the agent volume (else the archive is uploaded into each).
function Agent:uses_volume(delivery)
    return delivery == "volume" and not self.execd_image
end

--- The name of the Docker volume that holds the agent, created and filled on first use (single-flight:
--- concurrent provisionings wait for one fill). Once made, it is trusted without a Docker call per create;
--- `recheck` looks at it again (the adapter does when a sandbox fails to start: `docker volume prune`
--- removes it whenever no sandbox uses it, and Docker then creates an empty one of that name for the next
--- sandbox by itself, whose bootstrap is then missing) and makes it again when it is gone or not ours.
--- Returns the name and whether it was (re)made now, or nil, err.
function Agent:volume(recheck)
    local tar_bytes, err = self:archive()
    if not tar_bytes then
        return nil, err
    end
    local tag
    tag, err = self.files:tag()
    if not tag then
        return nil, err
    end
    local name = "opensandbox-agent-" .. tag
    local engine = self.engine
    if self.volume_ready == name then
        if not recheck then
            return name, false
        end
        local state, serr = engine:volume_state(name, M.VOLUME_LABELS)
        if state == "ours" then
            return name, false
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
            return name, true
        end
        if not ok then
            return nil, "waiting for the agent volume: " .. tostring(werr)
        end
    end
    local ev = require("common.sync").event() -- loaded late: it needs the core
    self.volume_filling = ev
    local ok, verr = engine:ensure_volume(name, tar_bytes, M.VOLUME_LABELS)
    self.volume_filling = nil
    if ok then
        self.volume_ready = name
    end
    ev:set(ok or false)
    if ok and not self.volumes_pruned then
        -- once per run: the volumes of earlier bundles (one per agent build) that no sandbox uses any more,
        -- and that are over an hour old (one just made by another server is not in use yet)
        self.volumes_pruned = true
        local n = engine:remove_unused_volumes("opensandbox.io/agent=true", name, (self.now_s() - 3600) * 1000000)
        if n and n > 0 and self.log then
            self.log.info("removed unused agent volumes of earlier bundles", { count = n })
        end
    end
    if not ok then
        return nil, "cannot prepare the agent volume " .. name .. ": " .. tostring(verr and verr.message or verr)
    end
    return name, true
end

return M
