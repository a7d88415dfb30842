-- Volumes of a create request (upstream's `Volume` schema in specs/sandbox-lifecycle.yml; API.md §12).
--
--   validate(v)                 the request's `volumes` -> a normalised array (defaults filled in), or nil, err.
--                               Pure; runs on the request and again on what before_create hooks hand back.
--   resolve_hosts(vols, allowed) each `host` volume's path (+ subPath) resolved on this machine (`..`,
--                               symlinks) and checked against storage.allowed_host_paths; sets `source`.
--   realpath(path)              the canonical path of an existing file (lfs; Lua has no realpath), or nil, why.
--
-- A normalised volume: { name, mountPath, readOnly (bool), subPath (string|nil),
--   host = { path } | nil, pvc = { claimName, createIfNotExists, deleteOnSandboxTermination, storageClass,
--   storage, accessModes } | nil, source = <resolved host path, set by resolve_hosts> | nil }.
-- Every error is a 400 with upstream's VOLUME::* codes, so that nothing is created for a bad volume.
local errors = require("common.errors")
local json = require("common.json")
local lfs = require("lfs")
local is_object, is_array, absent = json.is_object, json.is_array, json.absent

local M = {}

M.MAX_VOLUMES = 64
-- where the agent lives in every sandbox (API.md §8.4): no volume may cover it
M.AGENT_DIR = "/opt/opensandbox"

local function fail(code, fmt, ...)
    return nil, errors.new(400, code, string.format(fmt, ...))
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    return keys
end

-- the first key of `t` not in `allowed` (sorted, so the message is deterministic)
local function unknown_key(t, allowed)
    for _, k in ipairs(sorted_keys(t)) do
        if not allowed[k] then
            return k
        end
    end
    return nil
end

local function is_dns_label(s, max)
    return #s >= 1 and #s <= max and (s:find("^[a-z0-9]$") or s:find("^[a-z0-9][-a-z0-9]*[a-z0-9]$")) ~= nil
end

-- the components of a slash-separated path, without empty ones
local function components(p)
    local out = {}
    for c in p:gmatch("[^/]+") do
        out[#out + 1] = c
    end
    return out
end

local function has_dotdot(p)
    for _, c in ipairs(components(p)) do
        if c == ".." then
            return true
        end
    end
    return false
end

-- "/a//b/./c/" -> "/a/b/c" (no `..` here: those are refused before)
local function clean(p)
    local out = {}
    for _, c in ipairs(components(p)) do
        if c ~= "." then
            out[#out + 1] = c
        end
    end
    return "/" .. table.concat(out, "/")
end

local function under(path, dir)
    return path == dir or dir == "/" or path:sub(1, #dir + 1) == dir .. "/"
end

local VOLUME_KEYS = { name = true, host = true, pvc = true, ossfs = true, mountPath = true, readOnly = true,
    subPath = true }
local PVC_KEYS = { claimName = true, createIfNotExists = true, deleteOnSandboxTermination = true,
    storageClass = true, storage = true, accessModes = true }
local ACCESS_MODES = { ReadWriteOnce = true, ReadOnlyMany = true, ReadWriteMany = true, ReadWriteOncePod = true }

local function check_pvc(where, p)
    if not is_object(p) then
        return fail("VOLUME::INVALID_BACKEND", "%s.pvc must be an object.", where)
    end
    local bad = unknown_key(p, PVC_KEYS)
    if bad then
        return fail("VOLUME::INVALID_BACKEND", "%s.pvc.%s is not a known field.", where, bad)
    end
    local cn = p.claimName
    if type(cn) ~= "string" or cn == "" then
        return fail("VOLUME::INVALID_PVC_NAME", "%s.pvc.claimName is required and must be a non-empty string.",
            where)
    end
    if not is_dns_label(cn, 253) then
        return fail("VOLUME::INVALID_PVC_NAME", "%s.pvc.claimName '%s' is not a valid name: lowercase letters, "
            .. "digits and '-', starting and ending with a letter or digit, at most 253 characters.", where, cn)
    end
    local out = { claimName = cn, createIfNotExists = true, deleteOnSandboxTermination = false }
    for _, k in ipairs({ "createIfNotExists", "deleteOnSandboxTermination" }) do
        local v = p[k]
        if not absent(v) then
            if type(v) ~= "boolean" then
                return fail("SANDBOX::INVALID_PARAMETER", "%s.pvc.%s must be a boolean.", where, k)
            end
            out[k] = v
        end
    end
    if not absent(p.storageClass) then
        if type(p.storageClass) ~= "string" or not is_dns_label(p.storageClass, 253)
            and not p.storageClass:find("^[a-z0-9][-a-z0-9.]*[a-z0-9]$") then
            return fail("SANDBOX::INVALID_PARAMETER", "%s.pvc.storageClass must be a valid StorageClass name.", where)
        end
        out.storageClass = p.storageClass
    end
    if not absent(p.storage) then
        local s = p.storage
        local num, unit
        if type(s) == "string" then
            num, unit = s:match("^(%d+%.?%d*)(%a*)$")
        end
        local units = { [""] = true, Ki = true, Mi = true, Gi = true, Ti = true, Pi = true, Ei = true }
        if not num or num:sub(-1) == "." or not units[unit] or #s > 32 then
            return fail("SANDBOX::INVALID_PARAMETER", "%s.pvc.storage must be a quantity such as '1Gi' (digits, "
                .. "optional decimals, Ki|Mi|Gi|Ti|Pi|Ei).", where)
        end
        out.storage = s
    end
    if not absent(p.accessModes) then
        local am = p.accessModes
        if not is_array(am) or #am == 0 then
            return fail("SANDBOX::INVALID_PARAMETER", "%s.pvc.accessModes must be a non-empty array of strings.",
                where)
        end
        out.accessModes = {}
        for i, m in ipairs(am) do
            if not ACCESS_MODES[m] then
                return fail("SANDBOX::INVALID_PARAMETER", "%s.pvc.accessModes[%d] must be one of ReadWriteOnce, "
                    .. "ReadOnlyMany, ReadWriteMany, ReadWriteOncePod.", where, i - 1)
            end
            out.accessModes[i] = m
        end
    end
    return out
end

local function check_one(i, v, seen_names, seen_mounts)
    local where = string.format("volumes[%d]", i - 1)
    if not is_object(v) or next(v) == nil then
        return fail("SANDBOX::INVALID_PARAMETER", "%s must be an object with name, mountPath and one backend.", where)
    end
    local bad = unknown_key(v, VOLUME_KEYS)
    if bad then
        return fail("SANDBOX::INVALID_PARAMETER", "%s.%s is not a known field.", where, bad)
    end
    local name = v.name
    if type(name) ~= "string" or name == "" then
        return fail("VOLUME::INVALID_NAME", "%s.name is required and must be a non-empty string.", where)
    end
    if #name > 63 then
        return fail("VOLUME::INVALID_NAME", "Volume name '%s' exceeds the maximum length of 63 characters.",
            name:sub(1, 80))
    end
    if not is_dns_label(name, 63) then
        return fail("VOLUME::INVALID_NAME", "Volume name '%s' is not a valid DNS label: lowercase letters, digits "
            .. "and '-', starting and ending with a letter or digit.", name)
    end
    if seen_names[name] then
        return fail("VOLUME::DUPLICATE_NAME", "Duplicate volume name '%s'. Each volume must have a unique name.", name)
    end
    seen_names[name] = true
    local mp = v.mountPath
    if type(mp) ~= "string" or mp == "" then
        return fail("VOLUME::INVALID_MOUNT_PATH", "Volume '%s': mountPath is required and must be a non-empty string.",
            name)
    end
    if mp:sub(1, 1) ~= "/" then
        return fail("VOLUME::INVALID_MOUNT_PATH", "Volume '%s': mountPath '%s' must be an absolute path starting "
            .. "with '/'.", name, mp)
    end
    if mp:find("[%z:]") or #mp > 4096 or has_dotdot(mp) then
        return fail("VOLUME::INVALID_MOUNT_PATH", "Volume '%s': mountPath must not contain '..' components, ':' or "
            .. "NUL, and be at most 4096 bytes.", name)
    end
    local cmp = clean(mp)
    if cmp == "/" or under(cmp, M.AGENT_DIR) or under(M.AGENT_DIR, cmp) then
        return fail("VOLUME::INVALID_MOUNT_PATH", "Volume '%s': mountPath '%s' would cover '/' or the sandbox "
            .. "agent's directory %s.", name, mp, M.AGENT_DIR)
    end
    if seen_mounts[cmp] then
        return fail("VOLUME::INVALID_MOUNT_PATH", "Volume '%s': mountPath '%s' is already used by volume '%s'.",
            name, mp, seen_mounts[cmp])
    end
    seen_mounts[cmp] = name
    local out = { name = name, mountPath = cmp, readOnly = false }
    if not absent(v.readOnly) then
        if type(v.readOnly) ~= "boolean" then
            return fail("SANDBOX::INVALID_PARAMETER", "Volume '%s': readOnly must be a boolean.", name)
        end
        out.readOnly = v.readOnly
    end
    if not absent(v.subPath) then
        local sp = v.subPath
        if type(sp) ~= "string" then
            return fail("VOLUME::INVALID_SUB_PATH", "Volume '%s': subPath must be a string.", name)
        end
        if sp:sub(1, 1) == "/" then
            return fail("VOLUME::INVALID_SUB_PATH", "Volume '%s': subPath '%s' must be a relative path, not absolute.",
                name, sp)
        end
        if has_dotdot(sp) then
            return fail("VOLUME::INVALID_SUB_PATH", "Volume '%s': subPath '%s' contains '..', which is not allowed.",
                name, sp)
        end
        if sp:find("[%z:]") or #sp > 4096 then
            return fail("VOLUME::INVALID_SUB_PATH", "Volume '%s': subPath must not contain ':' or NUL, and be at "
                .. "most 4096 bytes.", name)
        end
        local csp = clean(sp):sub(2)
        out.subPath = csp ~= "" and csp or nil -- "" and "." mean the whole volume
    end
    local backends = {}
    for _, b in ipairs({ "host", "ossfs", "pvc" }) do
        if not absent(v[b]) then
            backends[#backends + 1] = b
        end
    end
    if #backends == 0 then
        return fail("VOLUME::INVALID_BACKEND", "Volume '%s' must specify exactly one backend (host, pvc, ossfs), "
            .. "but none was provided.", name)
    end
    if #backends > 1 then
        return fail("VOLUME::INVALID_BACKEND", "Volume '%s' must specify exactly one backend (host, pvc, ossfs), "
            .. "but %s were provided.", name, table.concat(backends, " and "))
    end
    local b = backends[1]
    if b == "ossfs" then
        if not is_object(v.ossfs) then
            return fail("VOLUME::INVALID_BACKEND", "Volume '%s': ossfs must be an object.", name)
        end
        return fail("VOLUME::UNSUPPORTED_BACKEND", "Volume '%s': the ossfs backend is not supported by this server "
            .. "(use host or pvc).", name)
    elseif b == "host" then
        local h = v.host
        if not is_object(h) then
            return fail("VOLUME::INVALID_BACKEND", "Volume '%s': host must be an object with a path.", name)
        end
        bad = unknown_key(h, { path = true })
        if bad then
            return fail("VOLUME::INVALID_BACKEND", "Volume '%s': host.%s is not a known field.", name, bad)
        end
        local p = h.path
        if type(p) ~= "string" or p == "" then
            return fail("VOLUME::INVALID_HOST_PATH", "Volume '%s': host.path is required and must be a non-empty "
                .. "string.", name)
        end
        if p:sub(1, 1) ~= "/" then
            return fail("VOLUME::INVALID_HOST_PATH", "Volume '%s': host path '%s' must be an absolute path starting "
                .. "with '/' (this server runs on Linux).", name, p)
        end
        if p:find("[%z:]") or #p > 4096 then
            return fail("VOLUME::INVALID_HOST_PATH", "Volume '%s': host path must not contain ':' or NUL, and be at "
                .. "most 4096 bytes.", name)
        end
        out.host = { path = p }
    else
        local pvc, err = check_pvc(string.format("Volume '%s'", name), v.pvc)
        if not pvc then
            return nil, err
        end
        out.pvc = pvc
    end
    return out
end

--- Validates the request's `volumes` (absent, null or [] mean none). Returns the normalised array (empty
--- when none), or nil and a 400 error object. Only the first failure is reported.
function M.validate(v)
    if absent(v) then
        return {}
    end
    if not is_array(v) then
        return fail("SANDBOX::INVALID_PARAMETER", "volumes must be an array of Volume objects.")
    end
    if #v > M.MAX_VOLUMES then
        return fail("SANDBOX::INVALID_PARAMETER", "volumes may hold at most %d entries.", M.MAX_VOLUMES)
    end
    local out, names, mounts = {}, {}, {}
    for i, item in ipairs(v) do
        local vol, err = check_one(i, item, names, mounts)
        if not vol then
            return nil, err
        end
        out[i] = vol
    end
    return out
end

M.MAX_LINKS = 40 -- symbolic links followed while resolving one path (as the kernel's ELOOP limit)

--- The canonical absolute path of `path` (every `.`, `..` and symbolic link resolved), which must exist.
--- Returns it, or nil and why ("missing", "loop" or an lfs message).
function M.realpath(path)
    local todo = components(path)
    local done = {} -- resolved components so far
    local links = 0
    local i = 1
    while i <= #todo do
        local c = todo[i]
        i = i + 1
        if c == ".." then
            done[#done] = nil
        elseif c ~= "." then
            local cur = "/" .. table.concat(done, "/") .. (#done > 0 and "/" or "") .. c
            local mode = lfs.symlinkattributes(cur, "mode")
            if not mode then
                return nil, "missing"
            end
            if mode == "link" then
                links = links + 1
                if links > M.MAX_LINKS then
                    return nil, "loop"
                end
                local target = lfs.symlinkattributes(cur, "target")
                if type(target) ~= "string" then
                    return nil, "unreadable link " .. cur
                end
                if target:sub(1, 1) == "/" then
                    done = {}
                end
                -- the link's target, then the rest of the path
                local rest = components(target)
                for j = i, #todo do
                    rest[#rest + 1] = todo[j]
                end
                todo, i = rest, 1
            else
                done[#done + 1] = c
            end
        end
    end
    return "/" .. table.concat(done, "/")
end

--- Checks the `host` volumes of `vols` (normalised) against `allowed` (storage.allowed_host_paths: path
--- prefixes; empty refuses every host volume): path/subPath is resolved on this machine, must exist, and
--- must lie under one of the prefixes (themselves resolved). Sets each one's `source` to the resolved path,
--- which is what gets mounted. Returns true, or nil and a 400 error object.
function M.resolve_hosts(vols, allowed)
    for _, v in ipairs(vols or {}) do
        if v.host then
            if type(allowed) ~= "table" or #allowed == 0 then
                return fail("VOLUME::HOST_PATH_NOT_ALLOWED", "Volume '%s': host volumes are disabled on this server "
                    .. "(storage.allowed_host_paths is empty).", v.name)
            end
            local want = v.host.path .. (v.subPath and ("/" .. v.subPath) or "")
            local real, why = M.realpath(want)
            if not real then
                if why == "missing" then
                    return fail("VOLUME::HOST_PATH_NOT_FOUND", "Volume '%s': host path '%s' does not exist on the "
                        .. "server's host.", v.name, want)
                end
                return fail("VOLUME::INVALID_HOST_PATH", "Volume '%s': host path '%s' cannot be resolved: %s.",
                    v.name, want, why)
            end
            local ok = false
            for _, prefix in ipairs(allowed) do
                local rp = type(prefix) == "string" and prefix:sub(1, 1) == "/" and M.realpath(prefix)
                if rp and under(real, rp) then
                    ok = true
                    break
                end
            end
            if not ok then
                return fail("VOLUME::HOST_PATH_NOT_ALLOWED", "Volume '%s': host path '%s' (resolved: '%s') is not "
                    .. "under any allowed prefix of storage.allowed_host_paths.", v.name, want, real)
            end
            v.source = real
        end
    end
    return true
end

--- The volumes of `vols` that name a pvc, as { [claimName] = volume } (the first of each name).
function M.claims(vols)
    local out = {}
    for _, v in ipairs(vols or {}) do
        if v.pvc and not out[v.pvc.claimName] then
            out[v.pvc.claimName] = v
        end
    end
    return out
end

return M
