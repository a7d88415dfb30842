-- Images for the Docker Engine API client (runtimes.docker.engine): pulls (shared when identical), the
-- "seen present" cache that saves an inspection per create, and the create-with-one-re-pull wrapper. A part
-- of the engine, installed into its class by engine.lua (so `self` is the engine); it uses the engine's
-- request helpers `u`.
local json = require("common.json")
local imageref = require("runtimes.docker.imageref")
local registry_auth = require("runtimes.docker.registry_auth")

return function(Adapter, M, u)
    local urlencode, http_error, line_failure = u.urlencode, u.http_error, u.line_failure

    -- Follows one pull: POST /images/create, a stream of JSON lines. Any line with error/errorDetail is a
    -- failure even under HTTP 200. Returns true or nil, err.
    function Adapter:_pull(ref, auth, uri, platform)
        local from, tag = imageref.pull_params(ref)
        local path = "/images/create?fromImage=" .. urlencode(from) .. "&tag=" .. urlencode(tag)
        if platform then
            path = path .. "&platform=" .. urlencode((platform.os or "linux") .. "/" .. platform.arch)
        end
        local headers
        if auth then
            headers = { ["X-Registry-Auth"] = registry_auth.header(auth, imageref.server_address(ref)) }
        end
        local failure
        local res, err = self:_lines_request("POST", path,
            { headers = headers, timeout = 0, idle_timeout = self.api_timeout }, function(line)
                local doc = json.decode(line)
                local f = line_failure(doc)
                if f then
                    failure = failure or f
                elseif type(doc) == "table" and doc.status then
                    self:_debug("docker image pull", {
                        image = uri,
                        status = tostring(doc.status),
                        layer = doc.id and tostring(doc.id) or nil,
                        progress = doc.progress and tostring(doc.progress) or nil,
                    })
                end
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

    --- Makes sure the image `uri` is present: GET /images/{uri}/json, and on 404 (or with `verify`) a pull (with
    --- X-Registry-Auth only when `auth = {username, password}` is given; `platform = {os, arch}` optional).
    --- Identical concurrent pulls are shared: a second caller waits for the first one's result, on an event
    --- (common.sync.event or the injected `new_event`) or else by polling every PULL_WAIT_STEP seconds.
    local function present_key(uri, platform)
        return uri .. "\0" .. (platform and (platform.arch or "") or "")
    end

    M.MAX_PRESENT = 1024

    function Adapter:_seen_present(uri, platform)
        if self.npresent >= M.MAX_PRESENT then
            self.present, self.npresent = {}, 0
        end
        local key = present_key(uri, platform)
        if not self.present[key] then
            self.present[key], self.npresent = true, self.npresent + 1
        end
    end

    --- Forgets that an image was seen present (its next ensure_image inspects, and pulls when absent).
    function Adapter:forget_image(uri, platform)
        local key = present_key(uri, platform)
        if self.present[key] then
            self.present[key], self.npresent = nil, self.npresent - 1
        end
    end

    --- Whether an error from create_container says that the image does not exist (removed since it was seen).
    function Adapter.image_missing(_, err)
        return type(err) == "table" and err.status == 404 and type(err.message) == "string"
            and err.message:lower():find("no such image", 1, true) ~= nil
    end

    --- Runs `create()` (a create of a container of image `uri`, returning id or nil, err). When it fails
    --- because the image has gone since it was seen present, pulls the image and runs `create()` once more.
    --- Returns create's results, or nil, err, "pull" when that pull failed.
    function Adapter:create_from_image(uri, auth, platform, create)
        local cid, err = create()
        if cid or not self:image_missing(err) then
            return cid, err
        end
        self:_debug("image gone since it was last seen; pulling", { image = uri })
        self:forget_image(uri, platform)
        local ok, perr = self:ensure_image(uri, auth, platform)
        if not ok then
            return nil, perr, "pull"
        end
        return create()
    end

    -- `verify`: pull even when the image is present, so that the registry checks `auth` (or the lack of it):
    -- the caller has not proved yet that it may pull this image (API.md §8.5, private images).
    -- An image found only by something that is not one of its names (its ID, "sha256:…" or a prefix of it,
    -- which Docker also resolves) counts as absent and is pulled by that reference, which a registry refuses:
    -- a reference must name what it runs, so that the check of private images by repository holds.
    function Adapter:ensure_image(uri, auth, platform, verify)
        local ref, perr = imageref.parse(uri)
        if not ref then
            return nil, M.error("api", nil, perr)
        end
        if not verify then
            if self.present[present_key(uri, platform)] then
                return true
            end
            local res, err = self:_request("GET", "/images/" .. uri .. "/json")
            if not res then
                return nil, err
            end
            local doc = res.status == 200 and json.decode(res.body or "")
            if type(doc) == "table" and imageref.named_by(ref, doc.RepoTags, doc.RepoDigests) then
                self:_seen_present(uri, platform)
                return true
            end
            if res.status ~= 404 and res.status ~= 200 then
                return nil, http_error(res)
            end
        end
        local key = imageref.pull_key(ref) .. "\0" .. (platform and (platform.arch or "") or "")
            .. "\0" .. (auth and (auth.username .. "\0" .. auth.password) or "")
        local shared = self.pulls[key]
        if shared then
            self:_debug("docker image pull: waiting for an identical pull", { image = uri })
            if shared.event then
                shared.event:wait()
            end
            while not shared.done do
                self:_sleep(M.PULL_WAIT_STEP)
            end
            return shared.ok, shared.err
        end
        shared = { done = false, event = self:_pull_event() }
        self.pulls[key] = shared
        local ok, a, b = pcall(self._pull, self, ref, auth, uri, platform)
        if not ok then
            a, b = nil, M.error("api", nil, "image pull raised: " .. tostring(a))
        end
        shared.ok, shared.err, shared.done = a, b, true
        self.pulls[key] = nil
        if ok and a then
            self:_seen_present(uri, platform)
        end
        if shared.event then
            shared.event:set(a, b)
        end
        if not ok then
            error(b.message, 0)
        end
        return a, b
    end
end
