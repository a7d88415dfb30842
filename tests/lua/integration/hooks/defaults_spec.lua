-- Integration spec: the shipped hooks (hooks/naming.lua, hooks/metadata.lua, hooks/quotas.lua) configured
-- through hooks.config, against the real server and the real Docker daemon: the container name from the
-- naming template, injected metadata and env (GET and `docker exec env`), and the quotas' 429s.
--
--   cd /work/main && lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' \
--       tests/lua/integration/hooks
local F = require("hooks.fixtures")
local H = F.H
local null = F.json.null

local Q_FULL = "Quota exceeded for principal 'team-q': max_sandboxes 2 reached."

describe("shipped hooks #integration #docker", function()
    local srv

    local function config()
        return {
            server = {
                api_keys = F.api_keys({
                    { key = "key-team-q", principal = "team-q" },
                    { key = "key-team-m", principal = "team-m" },
                }),
            },
            hooks = {
                config = {
                    naming = { template = "{metadata.team}-{id8}" },
                    metadata = {
                        metadata = { owner = "{principal}" },
                        metadata_defaults = { team = "none" },
                        env = { TZ = "UTC", GREETING = "hello {principal}" },
                        env_defaults = { LANG = "C.UTF-8" },
                    },
                    quotas = {
                        principals = {
                            ["team-q"] = { max_sandboxes = 2 },
                            ["team-m"] = { max_timeout = 3600, max_memory = "64Mi" },
                        },
                        metadata = { team = { ["blue-q"] = { max_sandboxes = 1 } } },
                    },
                },
            },
        }
    end

    setup(function()
        H.ensure_image()
        srv = F.start(config())
    end)

    teardown(function()
        F.cleanup()
        H.stop_all()
    end)

    local function path(id, suffix)
        return "/v1/sandboxes/" .. id .. (suffix or "")
    end

    describe("naming and metadata", function()
        local id, cid

        it("names the container from the template {metadata.team}-{id8}", function()
            id = F.create(srv, "a", { metadata = { team = "red" } })
            local sb = F.wait_state(srv, id, "Running")
            local info = H.inspect("red-" .. id:sub(1, 8))
            assert.is_table(info, "no container named red-" .. id:sub(1, 8))
            cid = info.Id
            assert.are.equal("/red-" .. id:sub(1, 8), info.Name)
            assert.are.equal(id, info.Config.Labels["opensandbox.io/id"])
            assert.is_false(H.container_exists("sandbox-" .. id))
            assert.are.same({ team = "red", owner = "team-a" }, sb.metadata)
        end)

        it("sanitizes the template's result and falls back to the default team", function()
            -- no team sent: metadata_defaults gives "none", which the name uses
            local id2 = F.create(srv, "b", { metadata = null })
            F.wait_state(srv, id2, "Running")
            local info = H.inspect("none-" .. id2:sub(1, 8))
            assert.is_table(info, "no container named none-" .. id2:sub(1, 8))
            local g = F.call(srv, "b", "GET", path(id2))
            assert.are.same({ team = "none", owner = "team-b" }, g.json.metadata)
            assert.are.equal(204, F.call(srv, "b", "DELETE", path(id2)).status)
        end)

        it("shows the injected metadata on GET and list; the caller cannot forge owner", function()
            local id3 = F.create(srv, "b", { metadata = { team = "green", owner = "mallory" } })
            local g = F.call(srv, "b", "GET", path(id3))
            assert.are.equal(200, g.status, g.body)
            assert.are.same({ team = "green", owner = "team-b" }, g.json.metadata)
            local l = F.call(srv, "admin", "GET", "/v1/sandboxes?metadata=" .. "owner%3Dteam-b")
            assert.are.equal(200, l.status, l.body)
            assert.is_true(F.ids(l)[id3], l.body)
            F.wait_state(srv, id3, "Running")
            assert.are.equal(204, F.call(srv, "b", "DELETE", path(id3)).status)
        end)

        it("injects env: visible to `docker exec env` and in the container config", function()
            assert.is_string(cid, "depends on the naming test")
            local out, ok = H.run("docker exec " .. H.quote(cid) .. " env")
            assert.is_true(ok, out)
            assert.truthy(out:find("\nTZ=UTC\n", 1, true) or out:find("^TZ=UTC\n"), out)
            assert.truthy(out:find("GREETING=hello team-a\n", 1, true), out)
            assert.truthy(out:find("LANG=C.UTF-8\n", 1, true), out)
        end)

        it("forced env replaces the caller's value, env_defaults do not", function()
            local id4 = F.create(srv, "a", { metadata = { team = "env" },
                env = { TZ = "Europe/Paris", LANG = "fr_FR.UTF-8", MINE = "kept" } })
            F.wait_state(srv, id4, "Running")
            local info = H.inspect("env-" .. id4:sub(1, 8))
            assert.is_table(info)
            local env = {}
            for _, e in ipairs(info.Config.Env) do
                local k, v = e:match("^([^=]+)=(.*)$")
                env[k] = v
            end
            assert.are.equal("UTC", env.TZ)
            assert.are.equal("fr_FR.UTF-8", env.LANG)
            assert.are.equal("kept", env.MINE)
            assert.are.equal("hello team-a", env.GREETING)
            assert.are.equal(204, F.call(srv, "a", "DELETE", path(id4)).status)
        end)

        it("deletes through the API; the named container is gone", function()
            assert.is_string(id)
            assert.are.equal(204, F.call(srv, "a", "DELETE", path(id)).status)
            assert.is_false(H.container_exists("red-" .. id:sub(1, 8)))
        end)
    end)

    describe("quotas", function()
        it("max_sandboxes 2: the third live sandbox is 429; a delete frees a slot", function()
            local a = F.create(srv, "team-q", { metadata = { team = "q1" } })
            local b = F.create(srv, "team-q", { metadata = { team = "q2" } })
            local res = F.create_raw(srv, "team-q", { metadata = { team = "q3" } })
            H.assert_error(res, 429, "QUOTA::EXCEEDED", Q_FULL)
            -- other principals are not limited by team-q's quota
            local other = F.create(srv, "a", { metadata = { team = "q-other" } })
            -- still refused; nothing was created for the refused request
            res = F.create_raw(srv, "team-q", {})
            H.assert_error(res, 429, "QUOTA::EXCEEDED", Q_FULL)
            local l = F.call(srv, "team-q", "GET", "/v1/sandboxes")
            assert.are.equal(2, #l.json.items, l.body)
            F.wait_state(srv, a, "Running")
            assert.are.equal(204, F.call(srv, "team-q", "DELETE", path(a)).status)
            local c = F.create(srv, "team-q", { metadata = { team = "q4" } })
            assert.is_string(c)
            H.assert_error(F.create_raw(srv, "team-q", {}), 429, "QUOTA::EXCEEDED", Q_FULL)
            for _, x in ipairs({ b, c, other }) do
                F.wait_state(srv, x, "Running")
                assert.are.equal(204, F.call(srv, "admin", "DELETE", path(x)).status)
            end
        end)

        it("max_sandboxes holds for concurrent creates: exactly 2 of 6 parallel requests get 202", function()
            local body = srv.dir .. "/par.json"
            F.write(body, F.json.encode(H.body({ metadata = { team = "par" } })))
            local cmd = {}
            for i = 1, 6 do
                cmd[#cmd + 1] = string.format("curl -s -o %s/par.%d -w '%%{http_code}\\n' "
                    .. "-H 'OPEN-SANDBOX-API-KEY: %s' -H 'Content-Type: application/json' "
                    .. "--data-binary @%s %s/v1/sandboxes &", srv.dir, i, F.KEYS["team-q"], body, srv.base)
            end
            local out = H.run(table.concat(cmd, " ") .. " wait")
            local codes = {}
            for c in out:gmatch("%d+") do
                codes[c] = (codes[c] or 0) + 1
            end
            local ids = {}
            for i = 1, 6 do
                local r = F.json.decode(F.read(srv.dir .. "/par." .. i))
                if r.id then
                    F.track(srv, r.id)
                    ids[#ids + 1] = r.id
                else
                    assert.are.same({ code = "QUOTA::EXCEEDED", message = Q_FULL }, r)
                end
            end
            assert.are.same({ ["202"] = 2, ["429"] = 4 }, codes, out)
            assert.are.equal(2, #ids)
            for _, id in ipairs(ids) do
                F.wait_state(srv, id, "Running")
                assert.are.equal(204, F.call(srv, "team-q", "DELETE", path(id)).status)
            end
        end)

        it("max_timeout: a longer timeout or manual cleanup is 429", function()
            local res = F.create_raw(srv, "team-m", { timeout = 7200, resourceLimits = { memory = "16Mi" } })
            H.assert_error(res, 429, "QUOTA::EXCEEDED",
                "Quota exceeded for principal 'team-m': max_timeout 3600s (requested 7200s).")
            res = F.create_raw(srv, "team-m", { timeout = null, resourceLimits = { memory = "16Mi" } })
            H.assert_error(res, 429, "QUOTA::EXCEEDED",
                "Quota exceeded for principal 'team-m': max_timeout 3600s (requested no timeout).")
        end)

        it("max_memory: a missing limit or the total over the limit is 429", function()
            local res = F.create_raw(srv, "team-m", { timeout = 600 })
            H.assert_error(res, 429, "QUOTA::EXCEEDED",
                "Quota exceeded for principal 'team-m': max_memory 64Mi needs a memory limit in resourceLimits.")
            res = F.create_raw(srv, "team-m", { resourceLimits = { memory = "128Mi" } })
            H.assert_error(res, 429, "QUOTA::EXCEEDED",
                "Quota exceeded for principal 'team-m': max_memory 64Mi (in use 0 bytes, requested 134217728 bytes).")
            local id = F.create(srv, "team-m", { resourceLimits = { memory = "48Mi" }, timeout = 3600 })
            res = F.create_raw(srv, "team-m", { resourceLimits = { memory = "32Mi" } })
            H.assert_error(res, 429, "QUOTA::EXCEEDED",
                "Quota exceeded for principal 'team-m': max_memory 64Mi (in use 50331648 bytes, "
                    .. "requested 33554432 bytes).")
            local id2 = F.create(srv, "team-m", { resourceLimits = { memory = "16Mi" } })
            local info = H.inspect(F.wait_state(srv, id, "Running") and ("none-" .. id:sub(1, 8)))
            assert.are.equal(50331648, info.HostConfig.Memory)
            F.wait_state(srv, id2, "Running")
            assert.are.equal(204, F.call(srv, "team-m", "DELETE", path(id)).status)
            assert.are.equal(204, F.call(srv, "team-m", "DELETE", path(id2)).status)
        end)

        it("a metadata quota counts every principal's sandboxes with that value (after injection)", function()
            local id = F.create(srv, "a", { metadata = { team = "blue-q" } })
            local res = F.create_raw(srv, "b", { metadata = { team = "blue-q" } })
            H.assert_error(res, 429, "QUOTA::EXCEEDED",
                "Quota exceeded for metadata team=blue-q: max_sandboxes 1 reached.")
            F.wait_state(srv, id, "Running")
            assert.are.equal(204, F.call(srv, "a", "DELETE", path(id)).status)
            local id2 = F.create(srv, "b", { metadata = { team = "blue-q" } })
            F.wait_state(srv, id2, "Running")
            assert.are.equal(204, F.call(srv, "b", "DELETE", path(id2)).status)
        end)

        it("a metadata patch into a full metadata bucket is 429 and changes nothing", function()
            local a = F.create(srv, "a", { metadata = { team = "blue-q" } })
            local b = F.create(srv, "b", { metadata = { team = "red" } })
            local res = F.call(srv, "b", "PATCH", path(b, "/metadata"), { team = "blue-q" })
            H.assert_error(res, 429, "QUOTA::EXCEEDED",
                "Quota exceeded for metadata team=blue-q: max_sandboxes 1 reached.")
            assert.are.equal("red", F.call(srv, "b", "GET", path(b)).json.metadata.team)
            -- the admin is refused too (admin_exempt is off); other keys patch as before
            res = F.call(srv, "admin", "PATCH", path(b, "/metadata"), { team = "blue-q", note = "x" })
            assert.are.equal(429, res.status, res.body)
            res = F.call(srv, "b", "PATCH", path(b, "/metadata"), { note = "x" })
            assert.are.equal(200, res.status, res.body)
            assert.are.same({ owner = "team-b", team = "red", note = "x" }, res.json.metadata)
            -- once a leaves the bucket, b may move in; a removed team falls back to the default "none"
            res = F.call(srv, "a", "PATCH", path(a, "/metadata"), { team = null })
            assert.are.equal(200, res.status, res.body)
            assert.are.same({ owner = "team-a", team = "none" }, res.json.metadata)
            res = F.call(srv, "b", "PATCH", path(b, "/metadata"), { team = "blue-q" })
            assert.are.equal(200, res.status, res.body)
            H.assert_error(F.create_raw(srv, "a", { metadata = { team = "blue-q" } }), 429, "QUOTA::EXCEEDED",
                "Quota exceeded for metadata team=blue-q: max_sandboxes 1 reached.")
            for _, x in ipairs({ a, b }) do
                F.wait_state(srv, x, "Running")
                assert.are.equal(204, F.call(srv, "admin", "DELETE", path(x)).status)
            end
        end)

        it("forced metadata stays forced: a patch of owner is 403 METADATA::FORCED", function()
            local a = F.create(srv, "a", { metadata = { team = "red" } })
            for _, body in ipairs({ { owner = "team-b" }, { owner = null }, { owner = "x", team = "blue" } }) do
                local res = F.call(srv, "a", "PATCH", path(a, "/metadata"), body)
                H.assert_error(res, 403, "METADATA::FORCED",
                    "Metadata key 'owner' is set by the server and cannot be changed.")
            end
            local sb = F.call(srv, "admin", "GET", path(a)).json
            assert.are.same({ owner = "team-a", team = "red" }, sb.metadata)
            -- the owner seen by a list filter is still the creator
            local l = F.call(srv, "admin", "GET", "/v1/sandboxes?metadata=owner%3Dteam-a")
            assert.is_true(F.ids(l)[a] == true, l.body)
            F.wait_state(srv, a, "Running")
            assert.are.equal(204, F.call(srv, "a", "DELETE", path(a)).status)
        end)

        it("cpu and memory in use survive a restart: a full memory quota is still full", function()
            -- (the spec's own server restarted: a second server on the daemon would adopt the first's sandboxes)
            local s1 = srv
            local id = F.create(s1, "team-m", { resourceLimits = { memory = "48Mi" }, timeout = 3600 })
            F.wait_state(s1, id, "Running")
            H.assert_error(F.create_raw(s1, "team-m", { resourceLimits = { memory = "32Mi" }, timeout = 600 }), 429,
                "QUOTA::EXCEEDED", "Quota exceeded for principal 'team-m': max_memory 64Mi (in use 50331648 bytes, "
                    .. "requested 33554432 bytes).")
            s1:stop()
            local s2 = F.start(config(), { dir = s1.dir })
            srv = s2
            F.track(s2, id)
            assert.are.equal("Running", F.wait_state(s2, id, "Running").status.state)
            H.assert_error(F.create_raw(s2, "team-m", { resourceLimits = { memory = "32Mi" }, timeout = 600 }), 429,
                "QUOTA::EXCEEDED", "Quota exceeded for principal 'team-m': max_memory 64Mi (in use 50331648 bytes, "
                    .. "requested 33554432 bytes).")
            -- a delete after the restart gives the memory back
            assert.are.equal(204, F.call(s2, "team-m", "DELETE", path(id)).status)
            local id2 = F.create(s2, "team-m", { resourceLimits = { memory = "32Mi" }, timeout = 600 })
            F.wait_state(s2, id2, "Running")
            assert.are.equal(204, F.call(s2, "team-m", "DELETE", path(id2)).status)
        end)
    end)
end)
