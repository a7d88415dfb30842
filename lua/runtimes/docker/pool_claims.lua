-- Warm pool claims through a file (sandbox/pools.lua has the pools; execd/src/pool.c the agent's side).
--
-- A claim hands a member its entrypoint, env and fresh token. runtimes/pool_agent.lua POSTs them to the member's
-- agent, which costs a round trip to a process that must first be scheduled: on a host busy making containers
-- (the refill), its accept or its read came 20-80 ms late (bench/pool_claim.sh). On Docker with a local daemon
-- the server writes the claim instead into a directory of its host mounted read-only into the member, and the
-- agent takes it from there on its own (woken through a FIFO) and in any case before it handles a request, so
-- a client that got the claim's answer always finds the claim taken. The claim then costs a small write to a
-- file (best on a tmpfs) and one byte into a FIFO.
--
-- Each member gets `<docker.pool_claim_dir>/<instance>/<member id>/`, holding `member` (the member's id) and the
-- FIFO `wake` from before the container is made; the container sees it at mapping.CLAIM_MOUNT. Its agent reads
-- `member` at start, holds `wake` open, and shows the id on every GET /ping; a member whose ping shows its own id
-- is claimed through the file (`rec.claim_file`, kept by the service with the member), any other (a daemon that
-- does not see the server's directories: remote, or the server in a container; an older agent; a directory it
-- cannot read) over HTTP as before. The claim is written whole (`claim.json`, by a rename), then one byte into
-- `wake` wakes the agent (core.poke never blocks; no reader means no agent: the claim fails and the service
-- tries the next member). The directory goes with the container.
--
-- The base directory is 0700 (it holds tokens); each member's is 0755 with 0644 files, so that an agent
-- running as the image's non-root user reads it; inside the container only that member's directory is seen.
local lfs = require("lfs")
local pool_agent = require("runtimes.pool_agent")
local rterrors = require("runtimes.errors")

local M = {}

M.CLAIM_FILE = "claim.json"
M.MARKER_FILE = "member"
M.WAKE_FIFO = "wake"
local TMP_FILE = ".claim.json.tmp"

local function warn(self, text, fields)
    if self.log then
        self.log.warn(text, fields)
    end
end

--- Adds the methods above to the Docker class (after pool_agent.install, whose ping and claim it wraps).
function M.install(Docker)
    local agent_ping, agent_claim = Docker.pool_ping, Docker.pool_claim

    -- This server's directory of claim directories (not made here), or false when claims go over HTTP.
    function Docker:_claim_base_path()
        if self.claim_base_path == nil then
            local dir = self.config and self.config.pool_claim_dir
            local host = self.config and self.config.host or "unix:///var/run/docker.sock"
            local base = false
            local c = self.core
            if type(dir) == "string" and dir:sub(1, 1) == "/" and host:sub(1, 7) == "unix://" and c.mkdirs
                and c.chmod and c.mkfifo and c.poke then
                -- (a path component, and Docker's bind syntax has no escape for ':')
                local inst = tostring(self.instance or "default"):gsub("[^%w_.-]", "_")
                base = dir:gsub("/+$", "") .. "/" .. inst
            elseif type(dir) == "string" and dir:sub(1, 1) ~= "/" then
                warn(self, "docker.pool_claim_dir must be an absolute path; pool claims go over HTTP", { dir = dir })
            end
            self.claim_base_path = base
        end
        return self.claim_base_path
    end

    -- The same, made (0700) on first use; false when it cannot be.
    function Docker:_claim_base()
        if self.claim_base ~= nil then
            return self.claim_base
        end
        local base = self:_claim_base_path()
        if base then
            local ok, err = self.core.mkdirs(base, tonumber("700", 8))
            if not ok then
                warn(self, "pool claims go to the members' agents over HTTP: cannot make the claim directory",
                    { dir = base, error = tostring(err) })
                base = false
            end
        end
        self.claim_base = base
        return base
    end

    -- sandbox `id`'s claim directory (made: its base is; `path_only`: the path, whether or not its base exists)
    function Docker:_claim_dir(id, path_only)
        local base
        if path_only then
            base = self:_claim_base_path()
        else
            base = self:_claim_base()
        end
        return base and type(id) == "string" and id:match("^[%w_.-]+$") and (base .. "/" .. id) or nil
    end

    -- `text` into `path`, readable by all (the server's umask is 077). true or nil, err.
    function Docker:_write_open(path, text)
        local f, err = io.open(path, "wb")
        if not f then
            return nil, err
        end
        local ok, werr = f:write(text)
        local cok, cerr = f:close()
        if not (ok and cok) then
            os.remove(path)
            return nil, werr or cerr
        end
        return self.core.chmod(path, tonumber("644", 8))
    end

    --- Makes member `id`'s claim directory with its `member` file. Its path, or nil (the claim then goes over
    --- HTTP). Never yields.
    function Docker:make_claim_dir(id)
        local dir = self:_claim_dir(id)
        if not dir then
            return nil
        end
        local ok, err = lfs.mkdir(dir)
        if ok or lfs.attributes(dir, "mode") == "directory" then
            ok, err = self.core.chmod(dir, tonumber("755", 8))
            if ok then
                ok, err = self:_write_open(dir .. "/" .. M.MARKER_FILE, id .. "\n")
            end
            local fifo = dir .. "/" .. M.WAKE_FIFO
            if ok and lfs.attributes(fifo, "mode") ~= "named pipe" then -- (made again: kept)
                -- (the agent opens it to read and write: any user of the image)
                ok, err = self.core.mkfifo(fifo, tonumber("666", 8))
            end
        end
        if not ok then
            warn(self, "cannot make a pool member's claim directory; its claim will go over HTTP",
                { sandbox_id = id, dir = dir, error = tostring(err) })
            self:drop_claim_dir(id)
            return nil
        end
        return dir
    end

    --- Removes sandbox `id`'s claim directory, if it has one. Never yields.
    function Docker:drop_claim_dir(id)
        local dir = self:_claim_dir(id, true) -- (members made before a restart have one too)
        if not dir or not lfs.attributes(dir, "mode") then
            return
        end
        for _, name in ipairs({ M.CLAIM_FILE, TMP_FILE, M.MARKER_FILE, M.WAKE_FIFO }) do
            os.remove(dir .. "/" .. name)
        end
        local ok, err = os.remove(dir)
        if not ok then
            warn(self, "cannot remove a claim directory", { sandbox_id = id, dir = dir, error = tostring(err) })
        end
    end

    --- The shared ping, and whether the member's agent sees its claim directory: true, { claim_file = bool }.
    function Docker:pool_ping(rec)
        local ok, info = agent_ping(self, rec)
        if ok then
            info = info or {}
            -- (and the directory is where this server writes: not one of an instance it took over)
            local dir = info.claim_marker ~= nil and info.claim_marker == rec.id and self:_claim_dir(rec.id)
            info.claim_file = dir and lfs.attributes(dir .. "/" .. M.MARKER_FILE, "mode") == "file" or false
        end
        return ok, info
    end

    --- A member whose agent sees its directory (rec.claim_file) gets its claim written there, and its agent
    --- woken; any other, or a write that fails, over HTTP. true, { file = true }; nil, err (`unavailable`)
    --- when the agent does not hold its FIFO (gone); or what pool_agent's pool_claim returns.
    function Docker:pool_claim(rec, claim)
        local dir = rec.claim_file and self:_claim_dir(rec.id)
        if dir then
            local tmp = dir .. "/" .. TMP_FILE
            local ok, err = self:_write_open(tmp, pool_agent.claim_body(claim))
            if ok then
                ok, err = os.rename(tmp, dir .. "/" .. M.CLAIM_FILE)
            end
            if ok then
                local woke, werr = self.core.poke(dir .. "/" .. M.WAKE_FIFO)
                if not woke then
                    return nil, rterrors.new("unavailable", "the agent cannot be woken: " .. tostring(werr))
                end
                return true, { file = true }
            end
            os.remove(tmp)
            warn(self, "cannot write a pool claim; posting it to the agent", { sandbox_id = rec.id, error =
                tostring(err) })
        end
        return agent_claim(self, rec, claim)
    end
end

return M
