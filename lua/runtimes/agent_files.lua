-- The in-sandbox agent's files (API.md §8.4), as every runtime adapter delivers them: our static agent
-- (`execd`) and the bootstrap script (`bootstrap.sh`), read from the install once and kept in memory. How
-- they reach a sandbox is each adapter's business (Docker: a read-only volume or a per-container upload).
--
-- Where the files are found (first match wins):
--   agent binary: $OPENSANDBOX_EXECD_PATH; <dir of the server binary>/execd/opensandbox-execd (a build tree);
--                 <dir of the server binary>/opensandbox-execd; <root>/build/execd/opensandbox-execd;
--                 <dir of the server binary>/../libexec/opensandbox/opensandbox-execd (an install).
--   bootstrap:    <root>/execd/bootstrap.sh.
-- Without an agent binary only the bootstrap is delivered (sandboxes then run without an agent, and a
-- warning is logged once): lifecycle operations keep working.
local M = {}

local Files = {}
Files.__index = Files

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

--- opts = { root = install root, exe = server binary path, log = core.log-like (optional),
---          getenv = os.getenv-like (optional) }
function M.new(opts)
    return setmetatable({ root = opts.root, exe = opts.exe, log = opts.log, getenv = opts.getenv or os.getenv },
        Files)
end

function Files:binary_candidates()
    local bindir = dirname(self.exe or "")
    local c = {}
    local env = self.getenv("OPENSANDBOX_EXECD_PATH")
    if env and env ~= "" then
        c[#c + 1] = env
    end
    c[#c + 1] = bindir .. "/execd/opensandbox-execd"
    c[#c + 1] = bindir .. "/opensandbox-execd"
    c[#c + 1] = self.root .. "/build/execd/opensandbox-execd"
    c[#c + 1] = bindir .. "/../libexec/opensandbox/opensandbox-execd"
    return c
end

-- FNV-1a, 32 bits, plus the length: names what the files hold (an adapter names a volume or a ConfigMap
-- after it, so that a restart with the same agent finds it and a new agent gets a new one). Not a security
-- hash: the name only has to change when the files do. Written here because neither Lua nor any library
-- the server already loads offers a digest, and this runs once per process (~10 ms for the whole agent).
local function content_tag(bytes)
    local h = 2166136261
    for i = 1, #bytes do
        h = ((h ~ bytes:byte(i)) * 16777619) & 0xffffffff
    end
    return string.format("%08x%x", h, #bytes)
end

--- The files: `{ bootstrap = bytes, execd = bytes | nil, from = path | nil }`, or nil, err (the bootstrap
--- script is required; the agent binary is not). Read once.
function Files:get()
    if self.files then
        return self.files
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
    if self.log then
        if bin then
            self.log.info("agent files found", { agent = from, bytes = #bin })
        else
            self.log.warn("agent binary not found; sandboxes will run without the in-sandbox agent",
                { looked_in = table.concat(self:binary_candidates(), ", ") })
        end
    end
    self.files = { bootstrap = boot, execd = bin, from = from }
    return self.files
end

--- A short name for what the files hold (hex), or nil, err. Computed once.
function Files:tag()
    if not self.content_tag then
        local f, err = self:get()
        if not f then
            return nil, err
        end
        self.content_tag = content_tag(f.bootstrap .. "\0" .. (f.execd or ""))
    end
    return self.content_tag
end

M.content_tag = content_tag

return M
