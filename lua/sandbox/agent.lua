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

--- opts = { root = install root, exe = server binary path, log = core.log-like }
function M.new(opts)
    return setmetatable({ root = opts.root, exe = opts.exe, log = opts.log, bundle = nil }, Agent)
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

--- The tar bytes, or nil, err (the bootstrap script is required; the agent binary is not).
function Agent:archive()
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
    return self.bundle
end

return M
