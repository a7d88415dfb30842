-- Unit spec of runtimes.docker.netpolicy: the nft scripts it writes, the DNS answers it makes and what the
-- enforcer does with a fake core.net (the real kernel side is tests/lua/integration/lifecycle/netpolicy_spec.lua
-- and tests/c/scenarios/net.lua).
local np = require("runtimes.docker.netpolicy")

local DNS = { ip = "172.17.0.1", port = 40000 }
local NET = { dns_ip = "172.17.0.1", dns_port = 40000, gateway = "172.17.0.1", subnet = "172.17.0.0/16",
    isolate = true }

-- a DNS query for `name` (type `qtype`) with id 0x1234, as a resolver sends it
local function query(name, qtype)
    local q = string.pack(">I2I2I2I2I2I2", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in name:gmatch("[^.]+") do
        q = q .. string.char(#label) .. label
    end
    return q .. "\0" .. string.pack(">I2I2", qtype or 1, 1)
end

local function fake_net(opts)
    opts = opts or {}
    local calls = {}
    local net = {
        calls = calls,
        nft = function(pid, script)
            calls[#calls + 1] = { pid = pid, script = script }
            if opts.nft_fail then
                return nil, "Error: boom\n"
            end
            if script:find("^list table inet") then
                return opts.listing and true or nil, opts.listing or "Error: No such file or directory"
            end
            return true, ""
        end,
        dns_parse = function(msg)
            if msg == "REPLY" then
                return { id = 0x1234, qr = true, opcode = 0, rcode = 0, qdcount = 1, qend = 30,
                    answers = opts.answers or {} }
            end
            -- the test queries: name from the wire
            local pos, labels = 13, {}
            while true do
                local n = msg:byte(pos)
                if n == 0 then
                    break
                end
                labels[#labels + 1] = msg:sub(pos + 1, pos + n)
                pos = pos + n + 1
            end
            local qtype = string.unpack(">I2", msg, pos + 1)
            return { id = 0x1234, qr = false, opcode = 0, rcode = 0, qdcount = 1, qname = table.concat(labels, "."),
                qtype = qtype, qend = pos + 4, answers = {} }
        end,
        udp_bind = function()
            return { port = function() return DNS.port end }
        end,
        udp_query = function(host, port, data)
            calls[#calls + 1] = { query = data, host = host, port = port }
            return "REPLY"
        end,
    }
    return net
end

local function enforcer(net)
    local t = 1000
    return np.new({
        net = net,
        engine = { network = function() return { gateway = DNS.ip, subnet = "172.17.0.0/16" } end },
        spawn = function() end,
        sleep = function() end,
        now = function() return t end,
        instance = "inst-1",
        policy_config = { dns_upstream = "127.0.0.1:5399" },
    })
end

describe("runtimes.docker.netpolicy start gate", function()
    local function gate_enforcer(gate_answers, in_bootstrap)
        local t, gates = 1000, 0
        local e = np.new({
            net = { gate = function()
                gates = gates + 1
                local a = table.remove(gate_answers, 1) or "not ready"
                if a == true then
                    return true
                end
                return nil, a
            end },
            sleep = function() t = t + 1 end,
            now = function() return t end,
        })
        e.in_bootstrap = in_bootstrap
        return e, function() return gates end
    end

    it("opens the gate once the bootstrap waits at it, and gives up at the timeout", function()
        local e, gates = gate_enforcer({ "not ready", "not ready", true })
        assert.is_true(e:release(42, 10))
        assert.are.equal(3, gates())
        e = gate_enforcer({}, function() return false end)
        local ok, err = e:release(42, 5) -- (not taken over: a process past the bootstrap does not count)
        assert.is_nil(ok)
        assert.are.equal("the sandbox did not reach its start gate", err)
        ok, err = gate_enforcer({ "Permission denied" }):release(42, 5)
        assert.is_nil(ok)
        assert.are.equal("cannot open the start gate: Permission denied", err)
    end)

    it("taken over after a crash: released when the main process is past the bootstrap, else waits for it",
        function()
            -- the earlier server had opened it: the entrypoint runs
            local e, gates = gate_enforcer({}, function() return false end)
            assert.is_true(e:release(42, 10, true))
            assert.are.equal(1, gates())
            -- started just before the crash: the bootstrap has not made its FIFO yet, then does
            local n = 0
            e, gates = gate_enforcer({ "not ready", "not ready", true }, function()
                n = n + 1
                return true
            end)
            assert.is_true(e:release(42, 10, true))
            assert.are.equal(3, gates())
            assert.are.equal(2, n)
            -- never gets there (and never gets past): an error, not a sandbox without its rules
            local ok = gate_enforcer({}, function() return true end):release(42, 5, true)
            assert.is_nil(ok)
        end)

    it("tells bootstrap.sh's command line from the entrypoint's", function()
        assert.is_true(np.is_bootstrap_cmdline("/bin/sh\0/opt/opensandbox/bootstrap.sh\0sleep\0003600\0"))
        assert.is_true(np.is_bootstrap_cmdline("/opt/opensandbox/bootstrap.sh\0"))
        assert.is_false(np.is_bootstrap_cmdline("sleep\0003600\0"))
        assert.is_false(np.is_bootstrap_cmdline("/bin/sh\0-c\0/opt/opensandbox/bootstrap.sh\0"))
        assert.is_false(np.in_bootstrap(-1), "a process that is gone")
        -- the real /proc: this process is not the bootstrap
        local self_pid = io.open("/proc/self/stat"):read("l"):match("^(%d+)")
        assert.is_false(np.in_bootstrap(tonumber(self_pid)))
    end)
end)

describe("runtimes.docker.netpolicy", function()
    describe("script", function()
        it("evaluates the rules in order, then the default, and sends DNS to the filter", function()
            local s, sets = np.script({ defaultAction = "deny", egress = {
                { action = "deny", target = "bad.example.com" },
                { action = "allow", target = "*.example.com" },
                { action = "allow", target = "10.1.0.0/16" },
                { action = "deny", target = "2001:db8::/32" },
            } }, NET, {})
            local d1 = np.set_name("bad.example.com")
            local d2 = np.set_name("*.example.com")
            local c1 = np.set_name("10.1.0.0/16")
            local c6 = np.set_name("2001:db8::/32")
            assert.matches("^c6", c6)
            assert.is_true(sets[d1] and sets[d2] and sets[c1] and sets[c6])
            local lines = {}
            for l in s:gmatch("[^\n]+") do
                lines[#lines + 1] = l
            end
            local function index_of(pat)
                for i, l in ipairs(lines) do
                    if l:find(pat, 1, true) then
                        return i
                    end
                end
                error("no line with " .. pat .. " in\n" .. s)
            end
            local est = index_of("egress ct state established,related accept")
            local r1 = index_of("egress ip daddr @" .. d1 .. " " .. np.DENY)
            local r2 = index_of("egress ip daddr @" .. d2 .. " accept")
            local r3 = index_of("egress ip daddr @" .. c1 .. " accept")
            local r4 = index_of("egress ip6 daddr @" .. c6 .. " " .. np.DENY)
            local def = index_of("add rule inet opensandbox egress " .. np.DENY)
            assert.is_true(est < r1 and r1 < r2 and r2 < r3 and r3 < r4 and r4 < def)
            assert.is_true(index_of("ip daddr 172.17.0.1 udp dport 40000 accept") < r1)
            index_of("add element inet opensandbox " .. c1 .. " { 10.1.0.0/16 }")
            index_of("add set inet opensandbox " .. d1 .. " { type ipv4_addr; flags timeout; }")
            index_of("dns meta nfproto ipv4 udp dport 53 dnat ip to 172.17.0.1:40000")
            index_of("th dport { 53, 853 } " .. np.DENY)
        end)

        it("isolation: new connections only from the gateway, none from the subnet or over IPv6", function()
            local s = np.script(nil, NET, {})
            local est = s:find("ingress ct state established,related accept", 1, true)
            local gw = s:find("ingress ip saddr 172.17.0.1 accept", 1, true)
            local v6 = s:find("ingress meta nfproto ipv6 drop", 1, true)
            local sub = s:find("ingress ip saddr 172.17.0.0/16 drop", 1, true)
            assert.is_true(est < gw and gw < v6 and v6 < sub)
            assert.not_matches("add rule inet opensandbox egress", s, 1, true) -- no policy: no egress rules
            assert.not_matches("add rule inet opensandbox dns", s, 1, true)
            local off = np.script(nil, { isolate = false }, {})
            assert.not_matches("add rule", off, 1, true)
        end)

        it("allow by default ends with accept", function()
            local s = np.script({ defaultAction = "allow", egress = {} }, NET, {})
            assert.matches("add rule inet opensandbox egress accept\n", s, 1, true)
        end)

        it("keeps the sets of remaining rules and deletes the others", function()
            local keep, gone = np.set_name("a.test"), np.set_name("b.test")
            local s = np.script({ defaultAction = "deny", egress = { { action = "allow", target = "a.test" } } }, NET,
                { [keep] = true, [gone] = true })
            assert.matches("delete set inet opensandbox " .. gone, s, 1, true)
            assert.not_matches("delete set inet opensandbox " .. keep, s, 1, true)
            assert.not_matches("flush set inet opensandbox " .. keep, s, 1, true) -- learned addresses stay
        end)

        it("reads the set names of a listing", function()
            local sets = np.sets_of_listing("table inet opensandbox {\n\tset dabc {\n\t\ttype ipv4_addr\n\t}\n"
                .. "\tset c6ff {\n\t}\n\tchain egress {\n\t}\n}\n")
            assert.same({ dabc = true, c6ff = true }, sets)
        end)
    end)

    describe("empty_answer", function()
        it("answers the question with the rcode and no records", function()
            local q = query("blocked.test")
            local parsed = fake_net().dns_parse(q)
            local a = np.empty_answer(q, parsed, 3)
            local id, flags, qd, an, ns, ar = string.unpack(">I2I2I2I2I2I2", a)
            assert.same({ 0x1234, 1, 0, 0, 0 }, { id, qd, an, ns, ar })
            assert.equal(0x8000, flags & 0x8000) -- an answer
            assert.equal(3, flags & 0xF) -- NXDOMAIN
            assert.equal(0x0100, flags & 0x0100) -- RD kept
            assert.equal(q:sub(13), a:sub(13))
        end)
    end)

    describe("answer", function()
        local policy = { defaultAction = "deny", egress = {
            { action = "deny", target = "bad.example.com" },
            { action = "allow", target = "*.example.com" },
        } }

        it("refuses a query from an address with no policy", function()
            local net = fake_net()
            local e = enforcer(net)
            local a = e:answer(query("x.example.com"), "172.17.0.9")
            assert.equal(5, string.unpack(">I2", a, 3) & 0xF)
        end)

        it("denies by rule and by default with NXDOMAIN, without asking upstream", function()
            local net = fake_net()
            local e = enforcer(net)
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy))
            local n = #net.calls
            for _, name in ipairs({ "bad.example.com", "example.org" }) do
                local a = e:answer(query(name), "172.17.0.5")
                assert.equal(3, string.unpack(">I2", a, 3) & 0xF)
            end
            assert.equal(n, #net.calls)
        end)

        it("forwards an allowed name and allows its addresses before answering", function()
            local net = fake_net({ answers = { { type = 1, addr = "10.0.0.7", ttl = 30 }, { type = 5 } } })
            local e = enforcer(net)
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy))
            local a = e:answer(query("api.example.com"), "172.17.0.5")
            assert.equal("REPLY", a)
            local last = net.calls[#net.calls]
            assert.equal(42, last.pid)
            assert.equal(string.format("add element inet opensandbox %s { 10.0.0.7 timeout %ds }\n",
                np.set_name("*.example.com"), np.MIN_TTL), last.script)
            assert.equal("127.0.0.1", net.calls[#net.calls - 1].host)
            assert.equal(5399, net.calls[#net.calls - 1].port)
            -- asked again right away: no second kernel call
            local n = #net.calls
            e:answer(query("api.example.com"), "172.17.0.5")
            assert.equal(n + 1, #net.calls) -- the upstream query only
        end)

        it("answers AAAA for an allowed name with no records", function()
            local net = fake_net()
            local e = enforcer(net)
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy))
            local a = e:answer(query("api.example.com", 28), "172.17.0.5")
            local _, flags, _, an = string.unpack(">I2I2I2I2", a)
            assert.same({ 0, 0 }, { flags & 0xF, an })
        end)

        it("a failed kernel update answers SERVFAIL", function()
            local net = fake_net({ answers = { { type = 1, addr = "10.0.0.7", ttl = 30 } } })
            local e = enforcer(net)
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy))
            net.nft = function() return nil, "gone" end
            local a = e:answer(query("api.example.com"), "172.17.0.5")
            assert.equal(2, string.unpack(">I2", a, 3) & 0xF)
        end)
    end)

    describe("the kept netlink socket", function()
        local policy = { defaultAction = "deny", egress = { { action = "allow", target = "*.example.com" } } }
        -- fake_net with nl_open: sockets record their calls; opts.nl_fail makes nl_open fail, opts.el_fail elements
        local function nl_net(opts)
            local net = fake_net(opts)
            net.sockets = {}
            net.nl_open = function(pid)
                if opts.nl_fail then
                    return nil, "no netlink here"
                end
                local sock = { pid = pid, calls = {}, closed = false }
                function sock.elements(self, tbl, set, adds, dels)
                    assert(not self.closed, "used after close")
                    self.calls[#self.calls + 1] = { table = tbl, set = set, adds = adds, dels = dels }
                    if opts.el_fail then
                        return nil, "netfilter refused the set elements: No such file or directory"
                    end
                    return true
                end
                function sock.close(self)
                    self.closed = true
                end
                net.sockets[#net.sockets + 1] = sock
                return sock
            end
            return net
        end

        it("is opened once per sandbox with a policy and takes the addresses instead of libnftables", function()
            local net = nl_net({ answers = { { type = 1, addr = "10.0.0.7", ttl = 30 },
                { type = 1, addr = "10.0.0.8", ttl = 600 }, { type = 5 } } })
            local e = enforcer(net)
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy))
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy)) -- a PATCH: the same socket
            assert.equal(1, #net.sockets)
            assert.equal(42, net.sockets[1].pid)
            local n = #net.calls
            assert.equal("REPLY", e:answer(query("api.example.com"), "172.17.0.5"))
            assert.equal(n + 1, #net.calls) -- the upstream query; no libnftables call
            assert.same({ { table = "opensandbox", set = np.set_name("*.example.com"),
                adds = { { "10.0.0.7", np.MIN_TTL }, { "10.0.0.8", 600 } }, dels = {} } }, net.sockets[1].calls)
        end)

        it("re-adds an address whose time is half gone, removing it first (a new timeout)", function()
            local net = nl_net({ answers = { { type = 1, addr = "10.0.0.7", ttl = 30 } } })
            local e = enforcer(net)
            local t = 1000
            e.now = function() return t end
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy))
            e:answer(query("api.example.com"), "172.17.0.5")
            t = t + np.MIN_TTL / 2 + 1
            e:answer(query("api.example.com"), "172.17.0.5")
            local calls = net.sockets[1].calls
            assert.equal(2, #calls)
            assert.same({ "10.0.0.7" }, calls[2].dels)
            assert.same({ { "10.0.0.7", np.MIN_TTL } }, calls[2].adds)
        end)

        it("a refused update answers SERVFAIL and the address is tried again next time", function()
            local net = nl_net({ answers = { { type = 1, addr = "10.0.0.7", ttl = 30 } }, el_fail = true })
            local e = enforcer(net)
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy))
            local a = e:answer(query("api.example.com"), "172.17.0.5")
            assert.equal(2, string.unpack(">I2", a, 3) & 0xF)
            e:answer(query("api.example.com"), "172.17.0.5")
            assert.equal(2, #net.sockets[1].calls)
        end)

        it("long answers go in chunks the C side accepts", function()
            local answers = {}
            for i = 1, np.NL_CHUNK + 3 do
                answers[i] = { type = 1, addr = string.format("10.0.%d.%d", i // 200, i % 200), ttl = 600 }
            end
            local net = nl_net({ answers = answers })
            local e = enforcer(net)
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy))
            e:answer(query("api.example.com"), "172.17.0.5")
            local calls = net.sockets[1].calls
            assert.equal(2, #calls)
            assert.equal(np.NL_CHUNK, #calls[1].adds)
            assert.equal(3, #calls[2].adds)
        end)

        it("is closed on detach, when the policy goes, and when the sandbox's process changes", function()
            local net = nl_net({})
            local e = enforcer(net)
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy))
            e:detach("sb1")
            assert.is_true(net.sockets[1].closed)
            assert.is_nil(next(e.by_id))
            -- a policy removed by DELETE /policy: isolation stays, the socket goes
            assert.is_true(e:apply("sb2", 43, "172.17.0.6", policy))
            assert.is_true(e:apply("sb2", 43, "172.17.0.6", nil))
            assert.is_true(net.sockets[2].closed)
            assert.is_true(e:apply("sb2", 43, "172.17.0.6", policy)) -- and comes back with one
            assert.is_false(net.sockets[3].closed)
            -- the container restarted (another main process): a socket in the new namespace
            assert.is_true(e:apply("sb2", 44, "172.17.0.6", policy))
            assert.is_true(net.sockets[3].closed)
            assert.equal(44, net.sockets[4].pid)
            assert.is_false(net.sockets[4].closed)
        end)

        it("without a socket (it cannot be opened) the addresses go through libnftables", function()
            local warned
            local net = nl_net({ answers = { { type = 1, addr = "10.0.0.7", ttl = 30 } }, nl_fail = true })
            local e = enforcer(net)
            e.log = { warn = function(msg) warned = msg end, info = function() end }
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", policy))
            assert.matches("no netlink socket", warned)
            e:answer(query("api.example.com"), "172.17.0.5")
            assert.equal(string.format("add element inet opensandbox %s { 10.0.0.7 timeout %ds }\n",
                np.set_name("*.example.com"), np.MIN_TTL), net.calls[#net.calls].script)
        end)
    end)

    describe("attach", function()
        it("takes over the sets an earlier server left in the namespace", function()
            local keep = np.set_name("a.test")
            local net = fake_net({
                listing = "table inet opensandbox {\n\tset " .. keep .. " {\n\t}\n\tset dold {\n\t}\n}\n",
            })
            local e = enforcer(net)
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", { defaultAction = "deny",
                egress = { { action = "allow", target = "a.test" } } }))
            local script = net.calls[#net.calls].script
            assert.matches("delete set inet opensandbox dold", script, 1, true)
            assert.not_matches("delete set inet opensandbox " .. keep, script, 1, true)
        end)

        it("reports a kernel refusal", function()
            local e = enforcer(fake_net({ nft_fail = true }))
            local ok, err = e:apply("sb1", 42, "172.17.0.5", { defaultAction = "deny", egress = {} })
            assert.is_nil(ok)
            assert.matches("nftables is not usable", err)
        end)

        it("without usable nftables: no isolation (said once), a policy still wants its table", function()
            local logged = 0
            local log = { error = function() logged = logged + 1 end }
            local e = np.new({ net = fake_net({ nft_fail = true }), log = log, engine = {}, policy_config = {} })
            assert.is_false(e:wants_table(nil))
            assert.is_false(e:wants_table(nil))
            assert.equal(1, logged)
            assert.is_true(e:wants_table({ defaultAction = "deny", egress = {} }))
            assert.is_true(enforcer(fake_net()):wants_table(nil))
        end)

        it("a gateway Docker did not report is used only when it is an address of this host", function()
            local net = fake_net()
            local bound, closed = {}, 0
            net.udp_bind = function(ip, port)
                bound[#bound + 1] = ip .. ":" .. port
                if ip ~= "172.17.0.1" then
                    return nil, "Cannot assign requested address"
                end
                return { port = function() return DNS.port end, close = function() closed = closed + 1 end }
            end
            local infos = {}
            local derived = { gateway = "172.17.0.1", subnet = "172.17.0.0/16", derived = true }
            local e = np.new({ net = net, engine = { network = function() return derived end }, policy_config = {},
                log = { info = function(msg) infos[#infos + 1] = msg end } })
            assert.are.equal("172.17.0.1", assert(e:_network()).gateway)
            assert.are.same({ "172.17.0.1:0" }, bound)
            assert.are.equal(1, closed)
            assert.matches("first address", infos[1])
            derived = { gateway = "10.1.0.1", subnet = "10.1.0.0/24", derived = true }
            local e2 = np.new({ net = net, engine = { network = function() return derived end }, policy_config = {} })
            local nw, err = e2:_network()
            assert.is_nil(nw)
            assert.matches("reports no gateway, and its subnet's first address 10.1.0.1 is not an address of this "
                .. "host %(Cannot assign requested address%)", err)
        end)

        it("detach forgets the sandbox's address", function()
            local net = fake_net()
            local e = enforcer(net)
            assert.is_true(e:apply("sb1", 42, "172.17.0.5", { defaultAction = "allow", egress = {} }))
            e:detach("sb1")
            local a = e:answer(query("x.test"), "172.17.0.5")
            assert.equal(5, string.unpack(">I2", a, 3) & 0xF)
        end)
    end)
end)

describe("runtimes.docker: a sandbox with a network policy", function()
    local mapping = require("runtimes.docker.mapping")
    local json = require("common.json")
    local function body(over)
        local spec = { id = "11111111-2222-4333-8444-555555555555", image_uri = "busybox", entrypoint = { "sh" },
            created_us = 1, expires_us = 2, metadata = {} }
        for k, v in pairs(over or {}) do
            spec[k] = v
        end
        return json.decode(mapping.create_body(spec, {}))
    end

    it("waits at the start gate and has no IPv6", function()
        local b = body({ start_gate = np.GATE_PATH, no_ipv6 = true })
        local has
        for _, e in ipairs(b.Env) do
            has = has or e == np.GATE_ENV .. "=" .. np.GATE_PATH
        end
        assert.is_true(has)
        assert.equal("1", b.HostConfig.Sysctls["net.ipv6.conf.all.disable_ipv6"])
        local plain = body()
        assert.is_nil(plain.HostConfig.Sysctls)
        for _, e in ipairs(plain.Env) do
            assert.not_matches(np.GATE_ENV, e)
        end
    end)

    it("is refused where it cannot be enforced, with the reason", function()
        package.loaded["core.sync"] = package.loaded["core.sync"] or {}
        local docker_runtime = require("runtimes.docker")
        local function rt(docker_cfg, net)
            return docker_runtime.new({ docker = docker_cfg, network_policy = {} }, {
                engine = { host = "unix:///x" }, net = net, agent_files = {}, core = {} })
        end
        local ok, why = rt({ network_mode = "host" }, fake_net()):network_policy_support({})
        assert.is_nil(ok)
        assert.matches("network_mode = \"host\"", why, 1, true)
        ok, why = rt({ drop_capabilities = { "MKNOD" } }, fake_net()):network_policy_support({})
        assert.is_nil(ok)
        assert.matches("NET_ADMIN", why, 1, true)
        ok, why = rt({}, fake_net({ nft_fail = true })):network_policy_support({})
        assert.is_nil(ok)
        assert.matches("cannot be enforced on this host", why, 1, true)
        assert.is_true(rt({}, fake_net()):network_policy_support({}))
    end)
end)

describe("runtimes.docker.netpolicy DNS filter", function()
    it("answers at most MAX_INFLIGHT queries at once and drops the rest (a flooding sandbox)", function()
        local pending, sent = {}, 0
        local e = np.new({ net = fake_net(), engine = {}, policy_config = {},
            spawn = function(fn) pending[#pending + 1] = fn end })
        local n = np.MAX_INFLIGHT + 50
        local sock = {
            recv = function()
                if n == 0 then
                    return nil, "closed"
                end
                n = n - 1
                return "too short", "172.17.0.5", 5353
            end,
            send = function() sent = sent + 1 end,
        }
        e:_serve(sock)
        assert.equal(np.MAX_INFLIGHT, #pending)
        -- once they are answered, there is room again
        for _, fn in ipairs(pending) do
            fn()
        end
        assert.equal(0, e.inflight)
        assert.equal(0, sent) -- (a datagram shorter than a DNS header gets no answer)
    end)
end)
