-- Integration: `cmake --install` gives a layout that runs from the install prefix alone (cmake/Packaging.cmake).
-- The build tree's install is put under a temporary prefix, moved elsewhere (nothing may point back at the
-- source tree or at the first prefix), and the installed binary is started from a directory outside the
-- source tree: it finds its Lua code, hooks, docs assets and agent under the new prefix, serves /docs, and
-- creates and deletes a sandbox on the real Docker daemon. The service's configuration and unit are checked.
local H = require("lifecycle.helpers")
local server = require("support.server")

describe("cmake --install layout #integration #docker", function()
    local tmp, prefix, binary, srv
    local original_binary = server.binary

    local function read(path)
        local f = io.open(path, "rb")
        if not f then
            return nil
        end
        local s = f:read("a")
        f:close()
        return s
    end

    setup(function()
        H.ensure_image()
        tmp = server.tmpdir()
        local first = tmp .. "/first"
        local out, ok = H.run("cmake --install " .. H.quote(H.root() .. "/build") .. " --prefix " .. H.quote(first))
        assert.is_true(ok, out)
        -- relocated: the layout must not depend on the prefix it was installed with
        prefix = tmp .. "/moved/opt"
        out, ok = H.run("mkdir -p " .. H.quote(tmp .. "/moved") .. " && mv " .. H.quote(first) .. " "
            .. H.quote(prefix))
        assert.is_true(ok, out)
        binary = prefix .. "/bin/opensandbox-server"
        -- support.server runs the binary from the source tree's directory: a wrapper starts it from elsewhere
        local wrapper = tmp .. "/run/opensandbox-server.sh"
        out, ok = H.run("mkdir -p " .. H.quote(tmp .. "/run"))
        assert.is_true(ok, out)
        local f = assert(io.open(wrapper, "w"))
        f:write("#!/bin/sh\ncd ", H.quote(tmp .. "/run"), " && exec ", H.quote(binary), ' "$@"\n')
        f:close()
        assert.is_true(select(2, H.run("chmod 755 " .. H.quote(wrapper))))
        server.binary = function()
            return wrapper
        end
    end)

    teardown(function()
        server.binary = original_binary
        H.stop_all()
        if tmp and tmp:find("^/tmp/osb%-test%.") then
            H.run("rm -rf " .. H.quote(tmp))
        end
    end)

    it("installs the binary, the Lua tree, the hooks, the config, the docs assets and the agent", function()
        for _, p in ipairs({ "bin/opensandbox-server", "share/opensandbox/lua/main.lua",
            "share/opensandbox/hooks/quotas.lua", "share/opensandbox/config.lua",
            "share/opensandbox/execd/bootstrap.sh",
            "share/opensandbox/docs-assets/swagger-ui-bundle.js", "share/opensandbox/docs-assets/swagger-ui.css",
            "share/opensandbox/docs-assets/swagger-ui-standalone-preset.js",
            "share/opensandbox/docs-assets/redoc.standalone.js", "libexec/opensandbox/opensandbox-execd",
            "lib/systemd/system/opensandbox.service", "etc/opensandbox/config.lua",
            "share/doc/opensandbox-server/README.md" }) do
            local data = read(prefix .. "/" .. p)
            assert.is_truthy(data and #data > 0, p .. " is installed")
        end
        -- no build tree inside the install
        assert.is_nil(read(prefix .. "/share/opensandbox/build/docs-assets/swagger-ui.css"))
    end)

    it("runs from the prefix alone: /health, /docs assets, and a sandbox created and deleted", function()
        -- started from a directory without a config.lua, with no OPENSANDBOX_ROOT
        srv = H.start({ dir = tmp .. "/run", env = { OPENSANDBOX_ROOT = "" } })
        assert.are.equal(200, H.call(srv, "GET", "/health").status)
        local asset = srv:request("GET", "/docs/swagger-ui.css")
        assert.are.equal(200, asset.status)
        assert.are.equal(read(prefix .. "/share/opensandbox/docs-assets/swagger-ui.css"), asset.body)
        assert.are.equal(200, srv:request("GET", "/docs").status)
        assert.are.equal(200, srv:request("GET", "/openapi.json").status)

        local id = H.create_running(srv)
        -- the agent came from the install, not from the source tree's build
        local log = srv:log()
        assert.matches("agent files found", log, 1, true)
        assert.matches(prefix .. "/bin/../libexec/opensandbox/opensandbox-execd", log, 1, true)
        assert.are.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
        assert.are.equal(404, H.call(srv, "GET", "/v1/sandboxes/" .. id).status)
        srv:stop()
        assert.is_true(srv:wait_exit(20))
    end)

    it("installs the service's configuration: valid, the store under /var/lib/opensandbox", function()
        local cfg = prefix .. "/etc/opensandbox/config.lua"
        local out, ok = H.run(H.quote(binary) .. " --check-config --config " .. H.quote(cfg))
        assert.is_true(ok, out)
        assert.matches("configuration OK", out, 1, true)
        local text = read(cfg)
        assert.matches('path = "/var/lib/opensandbox/opensandbox.db"', text, 1, true)
        assert.is_nil(text:find("~/.opensandbox", 1, true))
        -- every other line is the shipped default's
        local shipped = read(prefix .. "/share/opensandbox/config.lua")
        local n_diff = 0
        local a, b = {}, {}
        for l in text:gmatch("[^\n]*") do
            a[#a + 1] = l
        end
        for l in shipped:gmatch("[^\n]*") do
            b[#b + 1] = l
        end
        assert.are.equal(#b, #a)
        for i = 1, #a do
            if a[i] ~= b[i] then
                n_diff = n_diff + 1
            end
        end
        assert.are.equal(1, n_diff)
    end)

    it("installs a systemd unit that runs the installed binary with that configuration", function()
        local unit = read(prefix .. "/lib/systemd/system/opensandbox.service")
        -- the unit names the paths of the configure-time prefix (the build tree's)
        local cache = read(H.root() .. "/build/CMakeCache.txt")
        local configured = cache:match("CMAKE_INSTALL_PREFIX:PATH=([^\n]*)")
        assert.matches("ExecStart=" .. configured .. "/bin/opensandbox-server --config " .. configured
            .. "/etc/opensandbox/config.lua\n", unit, 1, true)
        assert.matches("ExecReload=" .. configured .. "/bin/opensandbox-server --config " .. configured
            .. "/etc/opensandbox/config.lua --reload\n", unit, 1, true)
        for _, line in ipairs({ "After=network-online.target docker.service", "Restart=on-failure",
            "StateDirectory=opensandbox", "User=opensandbox", "ProtectSystem=strict", "NoNewPrivileges=yes", "Nice=-10",
            "WantedBy=multi-user.target" }) do
            assert.matches(line, unit, 1, true)
        end
    end)
end)
