-- An in-memory ustar (POSIX.1-1988) archive writer, enough for PUT /containers/{id}/archive: directories
-- and regular files with a mode and an mtime, owned by uid/gid 0 (root).
--
-- Layout: each entry is a 512-byte header followed by its data padded to a multiple of 512 bytes; the
-- archive ends with two 512-byte blocks of zeros. Numeric header fields are octal text terminated by a NUL;
-- the checksum is the byte sum of the header with the checksum field counted as eight spaces, written as
-- six octal digits, a NUL and a space. Names longer than 100 bytes are split at a `/` into `prefix` (155)
-- and `name` (100). Pure Lua, no I/O.
--
--   local w = tar.new()
--   w:dir("opt/opensandbox/", { mode = 493 })            -- 0755
--   w:file("opt/opensandbox/bootstrap.sh", text, { mode = 493, mtime = os.time() })
--   local bytes = w:finish()
local M = {}

local BLOCK = 512
local Writer = {}
Writer.__index = Writer

local function octal(n, width)
    -- width includes the terminating NUL
    local s = string.format("%o", n)
    if #s > width - 1 then
        error("tar: value " .. n .. " does not fit in a " .. width .. "-byte field", 3)
    end
    return string.rep("0", width - 1 - #s) .. s .. "\0"
end

local function field(s, width)
    return s .. string.rep("\0", width - #s)
end

local function split_name(path)
    if #path <= 100 then
        return path, ""
    end
    -- the prefix takes everything up to a `/` such that both parts fit
    for i = math.min(#path - 1, 156), 1, -1 do
        if path:sub(i, i) == "/" and i - 1 <= 155 and #path - i <= 100 and #path - i > 0 then
            return path:sub(i + 1), path:sub(1, i - 1)
        end
    end
    error("tar: path too long for ustar: " .. path, 3)
end

local function header(path, typeflag, size, mode, mtime)
    local name, prefix = split_name(path)
    local parts = {
        field(name, 100),
        octal(mode, 8),
        octal(0, 8), -- uid
        octal(0, 8), -- gid
        octal(size, 12),
        octal(mtime, 12),
        "        ", -- checksum placeholder: eight spaces
        typeflag,
        field("", 100), -- linkname
        "ustar\0", "00",
        field("root", 32), -- uname
        field("root", 32), -- gname
        octal(0, 8), octal(0, 8), -- devmajor, devminor
        field(prefix, 155),
    }
    local h = table.concat(parts)
    h = h .. string.rep("\0", BLOCK - #h)
    local sum = 0
    for i = 1, BLOCK do
        sum = sum + h:byte(i)
    end
    local chk = string.format("%06o", sum) .. "\0 "
    return h:sub(1, 148) .. chk .. h:sub(157)
end

local function check_path(path)
    if type(path) ~= "string" or path == "" or path:find("\0", 1, true) then
        error("tar: invalid path", 3)
    end
    return (path:gsub("^/+", ""))
end

--- A new, empty archive.
function M.new()
    return setmetatable({ parts = {}, done = false }, Writer)
end

--- Adds a directory. `opts.mode` (default 0755), `opts.mtime` (default now). A trailing `/` is added.
function Writer:dir(path, opts)
    assert(not self.done, "tar: archive already finished")
    opts = opts or {}
    path = check_path(path)
    if path:sub(-1) ~= "/" then
        path = path .. "/"
    end
    self.parts[#self.parts + 1] = header(path, "5", 0, opts.mode or 493, opts.mtime or os.time())
    return self
end

--- Adds a regular file with `content`. `opts.mode` (default 0644), `opts.mtime` (default now).
function Writer:file(path, content, opts)
    assert(not self.done, "tar: archive already finished")
    assert(type(content) == "string", "tar: content must be a string")
    opts = opts or {}
    path = check_path(path)
    local parts = self.parts
    parts[#parts + 1] = header(path, "0", #content, opts.mode or 420, opts.mtime or os.time())
    parts[#parts + 1] = content
    local pad = (BLOCK - #content % BLOCK) % BLOCK
    if pad > 0 then
        parts[#parts + 1] = string.rep("\0", pad)
    end
    return self
end

--- Ends the archive (two zero blocks) and returns its bytes.
function Writer:finish()
    if not self.done then
        self.parts[#self.parts + 1] = string.rep("\0", 2 * BLOCK)
        self.done = true
    end
    return table.concat(self.parts)
end

local function cstring(s)
    local z = s:find("\0", 1, true)
    return z and s:sub(1, z - 1) or s
end

--- Reads an archive (ustar as Docker writes it): array of { path, type ("file"|"dir"|"other"), mode,
--- content (files) }, or nil, err for a truncated or corrupt archive. Long names (GNU/pax extensions) are
--- not needed for the files we read and come back with type "other".
function M.entries(bytes)
    local out, pos = {}, 1
    while pos + BLOCK - 1 <= #bytes do
        local h = bytes:sub(pos, pos + BLOCK - 1)
        if h == string.rep("\0", BLOCK) then
            return out
        end
        local name = cstring(h:sub(1, 100))
        local prefix = cstring(h:sub(346, 500))
        if prefix ~= "" then
            name = prefix .. "/" .. name
        end
        local size = tonumber(cstring(h:sub(125, 136)):match("^%s*([0-7]+)"), 8)
        local mode = tonumber(cstring(h:sub(101, 108)):match("^%s*([0-7]+)") or "0", 8)
        if not size then
            return nil, "tar: bad size field"
        end
        local flag = h:sub(157, 157)
        local kind = (flag == "0" or flag == "\0") and "file" or (flag == "5" and "dir" or "other")
        local data_start = pos + BLOCK
        if data_start + size - 1 > #bytes then
            return nil, "tar: truncated archive"
        end
        out[#out + 1] = { path = name, type = kind, mode = mode,
            content = kind == "file" and bytes:sub(data_start, data_start + size - 1) or nil }
        pos = data_start + math.ceil(size / BLOCK) * BLOCK
    end
    return out
end

--- Convenience: an archive from a list of `{ path=, content=?, dir=bool?, mode=?, mtime=? }`.
function M.archive(entries)
    local w = M.new()
    for _, e in ipairs(entries) do
        if e.dir then
            w:dir(e.path, e)
        else
            w:file(e.path, e.content or "", e)
        end
    end
    return w:finish()
end

return M
