-- Volumes for the Docker Engine API client (runtimes.docker.engine): the agent volume's life (state, fill
-- from the server's own files through an imported image, removal of unused ones), image import/removal,
-- and the named volumes of sandboxes' `pvc` volumes (inspect, create, delete).
-- A part of the engine, installed into its class by engine.lua (so `self` is the engine); it uses the
-- engine's request helpers `u`.
local json = require("common.json")
local timefmt = require("common.timefmt")

return function(Adapter, M, u)
    local urlencode, seg, decode_body, http_error, docker_message, OK200, line_failure =
        u.urlencode, u.seg, u.decode_body, u.http_error, u.docker_message, u.OK200, u.line_failure

    --- The state of the named volume: "ours" (it carries every one of `labels`), "missing", or "foreign" (a
    --- volume of that name without them: Docker creates an empty, unlabelled one by itself when a container is
    --- created with a volume that does not exist). Returns the state, or nil, err.
    function Adapter:volume_state(name, labels)
        local res, err = self:_request("GET", "/volumes/" .. seg(name))
        if not res then
            return nil, err
        end
        if res.status == 404 then
            return "missing"
        end
        if res.status ~= 200 then
            return nil, http_error(res)
        end
        local doc = decode_body(res)
        local have = type(doc) == "table" and type(doc.Labels) == "table" and doc.Labels or {}
        for k, v in pairs(labels or {}) do
            if have[k] ~= v then
                return "foreign"
            end
        end
        return "ours"
    end

    --- POST /images/create?fromSrc=-&repo=&tag= with `tar_bytes` as the image's only layer (docker import): an
    --- image made from the server's own files, with nothing of any user's image in it. Returns true or nil, err.
    function Adapter:import_image(repo, tag, tar_bytes, labels)
        local path = "/images/create?fromSrc=-&repo=" .. urlencode(repo) .. "&tag=" .. urlencode(tag)
        for k, v in pairs(labels or {}) do
            path = path .. "&changes=" .. urlencode("LABEL " .. k .. "=" .. v)
        end
        local failure
        local res, err = self:_lines_request("POST", path,
            { headers = { ["Content-Type"] = "application/x-tar" }, body = tar_bytes }, function(line)
                failure = failure or line_failure(json.decode(line))
            end)
        if failure then
            return nil, M.error("api", res and res.status or nil, failure)
        end
        if not res then
            return nil, err
        end
        if res.status ~= 200 then
            return nil, http_error(res)
        end
        return true
    end

    --- DELETE /images/{ref}?force=true: true, also when the image is already gone.
    function Adapter:remove_image(ref)
        local res, err = self:_request("DELETE", "/images/" .. ref .. "?force=true")
        if not res then
            return nil, err
        end
        if res.status == 200 or res.status == 404 then
            return true
        end
        return nil, http_error(res)
    end

    -- Another server on the daemon may be filling the same volume at this moment (servers of one build share
    -- the volume's name): its `{name}-fill` container then exists and is young. A fill takes about a second.
    M.FILL_STALE_S = 120 -- a fill container older than this was left by a server that stopped mid-fill
    M.FILL_WAIT_S = 60 -- how long to wait for another server's fill to end
    M.FILL_POLL_S = 0.2

    -- Waits for another server's fill of `name` to end; true when it did and left the volume complete.
    function Adapter:_await_other_fill(name, fill_name, labels)
        local deadline = os.time() + M.FILL_WAIT_S
        repeat
            local res = self:_request("GET", "/containers/" .. seg(fill_name) .. "/json")
            if not res then
                return false
            end
            if res.status == 404 then
                return self:volume_state(name, labels) == "ours"
            end
            self:_sleep(M.FILL_POLL_S)
        until os.time() > deadline
        return false
    end

    --- Makes sure the named volume exists and holds `tar_bytes` (extracted at /, so the archive's
    --- opt/opensandbox/... lands in the volume mounted at /opt/opensandbox). API.md §8.4: the volume is filled
    --- only from the server's own files. A new volume is created with `labels`, and filled through a created,
    --- never started, container named `{name}-fill` of an image imported from `tar_bytes` itself, which mounts
    --- the volume with NoCopy (so not even that image's files are copied in by Docker); the archive is then
    --- uploaded into it, and the container and the image are removed. A `{name}-fill` container left behind
    --- means the server stopped during a fill. Volumes are named after their content, so a complete one is
    --- never refilled. A volume of that name that is not complete (without `labels`: Docker made it, empty; or
    --- with a fill container left) is removed and made again. A fill container younger than FILL_STALE_S, or
    --- one whose name is taken while this fill creates it, is another server's fill in progress: this one
    --- waits for it to end and takes its volume. Returns true, or nil, err.
    function Adapter:ensure_volume(name, tar_bytes, labels)
        local state, err = self:volume_state(name, labels)
        if not state then
            return nil, err
        end
        local fill_name = name .. "-fill"
        local res
        if state == "ours" then
            res, err = self:_request("GET", "/containers/" .. seg(fill_name) .. "/json")
            if not res then
                return nil, err
            end
            if res.status == 404 then
                return true
            end
            if res.status ~= 200 then
                return nil, http_error(res)
            end
            local doc = decode_body(res)
            local created = type(doc) == "table" and timefmt.parse_runtime(doc.Created)
            if created and os.time() - created / 1e6 < M.FILL_STALE_S
                and self:_await_other_fill(name, fill_name, labels) then
                return true
            end
        end
        if state ~= "missing" then
            self:remove(fill_name)
            res, err = self:_request("DELETE", "/volumes/" .. seg(name))
            if not res then
                return nil, err
            end
            if res.status ~= 204 and res.status ~= 404 then
                return nil, M.error(res.status == 409 and "conflict" or "api", res.status, string.format(
                    "volume %s is incomplete and cannot be replaced: %s", name, docker_message(res.body, res.status)))
            end
            self:_warn("agent volume was incomplete; making it again", { volume = name, found = state })
        end
        local image = "opensandbox-agent-fill:" .. name:gsub("[^%w_.-]", "-")
        local ok
        ok, err = self:import_image("opensandbox-agent-fill", image:match(":(.*)$"), tar_bytes, labels)
        if not ok then
            return nil, err
        end
        res, err = self:_expect("POST", "/volumes/create", { [201] = true, [200] = true }, {
            headers = { ["Content-Type"] = "application/json" },
            body = json.encode({ Name = name, Labels = labels or {} }),
        })
        if res then
            res, err = self:_expect("POST", "/containers/create?name=" .. urlencode(fill_name), { [201] = true }, {
                headers = { ["Content-Type"] = "application/json" },
                body = json.encode({
                    Image = image,
                    Cmd = json.array({ "/opt/opensandbox/execd" }),
                    Labels = labels or {},
                    HostConfig = { Mounts = json.array({ { Type = "volume", Source = name, Target = "/opt/opensandbox",
                        VolumeOptions = { NoCopy = true } } }) },
                }),
            })
        end
        local filled = false -- whether this fill got as far as its own container (else the volume may be another's)
        if res then
            filled = true
            local doc = decode_body(res)
            local cid = doc and doc.Id or fill_name
            ok, err = self:put_archive(cid, tar_bytes)
            self:remove(cid)
            res = ok
        end
        self:remove_image(image)
        if not res then
            -- the fill container's name taken (409), or the shared fill image removed under it (404): another
            -- server is filling the same volume now; its volume is as good as ours
            local st = type(err) == "table" and err.status
            if (st == 409 or st == 404) and not filled and self:_await_other_fill(name, fill_name, labels) then
                return true
            end
            self:_request("DELETE", "/volumes/" .. seg(name))
            return nil, err
        end
        return true
    end

    --- Removes the volumes that carry `label` ("key=value"), are used by no container, are not named `keep`
    --- and were created before `before_us` (microseconds since the epoch; a volume just made by another server
    --- is not yet in use): agent volumes of earlier bundles. A volume taken meanwhile (409) stays. Returns the
    --- number removed, or nil, err.
    function Adapter:remove_unused_volumes(label, keep, before_us)
        local filters = json.encode({ label = json.array({ label }), dangling = json.array({ "true" }) })
        local res, err = self:_expect("GET", "/volumes?filters=" .. urlencode(filters), OK200)
        if not res then
            return nil, err
        end
        local doc, derr = decode_body(res)
        if type(doc) ~= "table" then
            return nil, derr
        end
        local n = 0
        for _, v in ipairs(type(doc.Volumes) == "table" and doc.Volumes or {}) do
            local created = timefmt.parse_runtime(v.CreatedAt)
            if type(v.Name) == "string" and v.Name ~= keep and created and created < before_us then
                local dres = self:_request("DELETE", "/volumes/" .. seg(v.Name))
                if dres and dres.status == 204 then
                    n = n + 1
                end
            end
        end
        return n
    end

    --- GET /volumes/{name}: the volume's document ({ Name, Driver, Labels, ... }), or nil, err (kind
    --- "not_found" when there is none).
    function Adapter:inspect_volume(name)
        local res, err = self:_expect("GET", "/volumes/" .. seg(name), OK200)
        if not res then
            return nil, err
        end
        return decode_body(res)
    end

    --- POST /volumes/create with `labels`. Docker answers with the existing volume when the name is taken,
    --- so the caller tells from the returned document's labels whether this call made it.
    function Adapter:create_volume(name, labels)
        local res, err = self:_expect("POST", "/volumes/create", { [201] = true, [200] = true }, {
            headers = { ["Content-Type"] = "application/json" },
            body = json.encode({ Name = name, Labels = labels or {} }),
        })
        if not res then
            return nil, err
        end
        return decode_body(res)
    end

    --- DELETE /volumes/{name}: true, also when it is gone already; a volume in use is a "conflict".
    function Adapter:delete_volume(name)
        local res, err = self:_request("DELETE", "/volumes/" .. seg(name))
        if not res then
            return nil, err
        end
        if res.status == 204 or res.status == 404 then
            return true
        end
        return nil, http_error(res)
    end
end
