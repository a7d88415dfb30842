-- The TCP ports a set of processes listens on, from /proc: in host network mode the server proxy may only
-- reach ports a process of the sandbox's own container listens on (API.md §7.3), never another service on
-- the host's loopback (the Docker TCP socket, a database, the server itself).
--
-- How: each process's socket inodes (the `socket:[N]` links of /proc/PID/fd, read with lua-filesystem),
-- matched against the LISTEN entries (state 0A) of /proc/PID/net/tcp and tcp6, which list the network
-- namespace the process is in (the host's, in host mode). The address a socket is bound to is kept, so
-- that the proxy connects to that socket and not to another one bound to the same port on a different
-- address. Reading another user's /proc/PID/fd needs the same user or CAP_SYS_PTRACE, and the server must
-- see the container's PIDs (the host's PID namespace): when it cannot, nothing is listed (fail closed).
local lfs = require("lfs")

local M = {}

M.PROC = "/proc"

-- adds the socket inodes held by `pid` to `into`; false when its fd directory cannot be read
local function socket_inodes(proc, pid, into)
    local dir = proc .. "/" .. pid .. "/fd"
    local ok, iter, state = pcall(lfs.dir, dir)
    if not ok then
        return false
    end
    for name in iter, state do
        if name ~= "." and name ~= ".." then
            local target = lfs.symlinkattributes(dir .. "/" .. name, "target")
            local inode = type(target) == "string" and target:match("^socket:%[(%d+)%]$")
            if inode then
                into[inode] = true
            end
        end
    end
    return true
end

-- "0100007F" (a 32-bit word in host byte order, little-endian here) -> "127.0.0.1"
local function v4(hex)
    local b = {}
    for i = 4, 1, -1 do
        b[#b + 1] = tostring(tonumber(hex:sub(2 * i - 1, 2 * i), 16))
    end
    return table.concat(b, ".")
end

-- 32 hex digits (four little-endian 32-bit words) -> a textual IPv6 address (uncompressed groups)
local function v6(hex)
    local bytes = {}
    for w = 0, 3 do
        local word = hex:sub(w * 8 + 1, w * 8 + 8)
        for i = 4, 1, -1 do
            bytes[#bytes + 1] = tonumber(word:sub(2 * i - 1, 2 * i), 16)
        end
    end
    local mapped = true
    for i = 1, 10 do
        mapped = mapped and bytes[i] == 0
    end
    if mapped and bytes[11] == 255 and bytes[12] == 255 then
        return string.format("%d.%d.%d.%d", bytes[13], bytes[14], bytes[15], bytes[16]), true
    end
    local groups = {}
    for i = 1, 16, 2 do
        groups[#groups + 1] = string.format("%x", bytes[i] * 256 + bytes[i + 1])
    end
    return table.concat(groups, ":"), false
end

--- The address to connect to for a socket listening on `addr` (as v4/v6 give it): a wildcard listener is
--- reached on loopback of its family.
function M.connect_host(addr, family)
    if family == 4 then
        return addr == "0.0.0.0" and "127.0.0.1" or addr
    end
    if addr == "0:0:0:0:0:0:0:0" then
        return "::1"
    end
    return addr
end

-- adds { [port] = host } for the LISTEN sockets of `inodes` in a /proc/net/tcp{,6} file
local function listeners(path, family, inodes, out)
    local f = io.open(path, "r")
    if not f then
        return
    end
    f:read("l") -- the title line
    for line in f:lines() do
        local laddr, lport, st, inode = line:match(
            "^%s*%d+:%s+(%x+):(%x+)%s+%x+:%x+%s+(%x+)%s+%S+%s+%S+%s+%S+%s+%d+%s+%d+%s+(%d+)")
        if st == "0A" and inodes[inode] then
            local port = tonumber(lport, 16)
            local host, fam
            if family == 4 then
                host, fam = v4(laddr), 4
            else
                local mapped
                host, mapped = v6(laddr)
                fam = mapped and 4 or 6
            end
            -- an IPv4 socket wins: 127.0.0.1 is what clients of host-mode sandboxes use
            if not out[port] or fam == 4 then
                out[port] = M.connect_host(host, fam)
            end
        end
    end
    f:close()
end

--- { [port] = host to connect to } for every TCP port the processes `pids` listen on, and how many of
--- them could be read (0 means the server cannot see them). `proc` defaults to /proc.
function M.listening(pids, proc)
    proc = proc or M.PROC
    local inodes, readable, first = {}, 0, nil
    for _, pid in ipairs(pids) do
        if socket_inodes(proc, pid, inodes) then
            readable = readable + 1
            first = first or pid
        end
    end
    local out = {}
    if first and next(inodes) then
        listeners(proc .. "/" .. first .. "/net/tcp", 4, inodes, out)
        listeners(proc .. "/" .. first .. "/net/tcp6", 6, inodes, out)
    end
    return out, readable
end

return M
