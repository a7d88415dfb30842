-- Snapshot images for the Docker Engine API client (runtimes.docker.engine): commit a container to an
-- image, look an image up without ever pulling it, and remove an image unless a container uses it. A part
-- of the engine, installed into its class by engine.lua (so `self` is the engine). The snapshot methods of
-- the runtime contract (docker/init.lua) are built on these.
local json = require("common.json")

return function(Adapter, M, u)
    local urlencode, decode_body, http_error = u.urlencode, u.decode_body, u.http_error

    -- a commit copies the container's whole filesystem diff: it may take far longer than other calls
    M.COMMIT_TIMEOUT_FACTOR = 10

    --- POST /commit?container={cid}&repo={repo}&tag={tag}&pause=false with `config` (a container config
    --- whose Labels and Env override the container's in the image) -> the image id. The container is not
    --- paused: it keeps running, and no pause/unpause events reach the watch.
    function Adapter:commit(cid, repo, tag, config)
        local path = "/commit?container=" .. urlencode(cid) .. "&repo=" .. urlencode(repo) .. "&tag="
            .. urlencode(tag) .. "&pause=false"
        local res, err = self:_expect("POST", path, { [201] = true, [200] = true }, {
            headers = { ["Content-Type"] = "application/json" },
            body = json.encode(config or {}),
            timeout = self.api_timeout * M.COMMIT_TIMEOUT_FACTOR,
        })
        if not res then
            return nil, err
        end
        local doc, derr = decode_body(res)
        if not doc then
            return nil, derr
        end
        if type(doc.Id) ~= "string" then
            return nil, M.error("api", res.status, "Docker returned no image id")
        end
        return doc.Id
    end

    -- (`ref` is one of our own references, [a-z0-9-]+:[0-9a-f-]+: put in the path as it is, as pulls do)
    --- GET /images/{ref}/json -> true when the image exists, false when Docker says 404; never pulls.
    function Adapter:image_exists(ref)
        local res, err = self:_request("GET", "/images/" .. ref .. "/json")
        if not res then
            return nil, err
        end
        if res.status == 200 then
            return true
        end
        if res.status == 404 then
            return false
        end
        return nil, http_error(res)
    end

    --- DELETE /images/{ref} without force: true, also when the image is already gone; a `conflict` error
    --- (409) while a container (running or not) uses it.
    function Adapter:delete_image(ref)
        local res, err = self:_request("DELETE", "/images/" .. ref)
        if not res then
            return nil, err
        end
        if res.status == 200 or res.status == 404 then
            return true
        end
        return nil, http_error(res)
    end
end
