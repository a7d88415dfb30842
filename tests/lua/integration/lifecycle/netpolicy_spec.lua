-- Integration spec: network policy enforcement and sandbox isolation (issue 13) with real traffic, against the
-- real server and the real Docker daemon. Everything the traffic reaches is made here: three target
-- containers serving HTTP on the default bridge (labelled opensandbox.test.netpolicy=1), and a real DNS
-- server (Debian's dnsmasq on 127.0.0.1) answering the test names with the targets' addresses, which the
-- server's DNS filter forwards to (network_policy.dns_upstream). Commands run inside the sandboxes with
-- `docker exec` (the same network namespace as the sandbox's own processes). Names are looked up by
-- bench/netprobe.c (built static with musl, copied in: the test image's static busybox cannot use the system
-- resolver); addresses are reached with busybox nc.
package.path = "tests/lua/integration/?.lua;tests/lua/integration/lifecycle/?.lua;" .. package.path
local H = require("lifecycle.helpers")
local server = require("support.server")

local LABEL = "opensandbox.test.netpolicy=1"
local INSTANCE = "netpolicy-spec-" .. os.time()

local targets = {} -- name -> { cid, ip }
local dns = {} -- { pid, port, dir }
local srv
local probe -- the netprobe binary

local function docker(args)
    return H.run("docker " .. args)
end

local function start_target(name)
    local out, ok = docker(string.format("run -d --label %s --name osb-np-%s-%d %s sh -c %s", LABEL, name, os.time(),
        H.IMAGE, H.quote("mkdir -p /w && echo hello-" .. name .. " > /w/index.html && exec httpd -f -p 80 -h /w")))
    assert(ok, out)
    local cid = out:match("(%x+)%s*$")
    local ip = H.run("docker inspect -f '{{.NetworkSettings.IPAddress}}' " .. cid):match("([%d%.]+)")
    assert(ip, "target " .. name .. " has no address")
    targets[name] = { cid = cid, ip = ip }
end

local function start_dns()
    dns.dir = server.tmpdir()
    dns.port = math.random(20000, 45000)
    local args = {
        "--keep-in-foreground", "--port=" .. dns.port, "--listen-address=127.0.0.1", "--bind-interfaces",
        "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--log-facility=" .. dns.dir .. "/dnsmasq.log",
        "--address=/allowed.test/" .. targets.a.ip,
        "--address=/blocked.test/" .. targets.b.ip,
        "--address=/api.wild.test/" .. targets.c.ip,
        "--address=/other.test/" .. targets.c.ip,
    }
    local out = H.sh(string.format("dnsmasq %s >%s/dnsmasq.out 2>&1 & echo $!", table.concat(args, " "), dns.dir))
    dns.pid = tonumber(out)
    assert(dns.pid, "dnsmasq did not start")
    for _ = 1, 50 do
        local ans = H.run(string.format("busybox nslookup allowed.test 127.0.0.1:%d", dns.port))
        if ans:find(targets.a.ip, 1, true) then
            return
        end
        H.sleep(0.1)
    end
    error("dnsmasq does not answer: " .. H.run("cat " .. dns.dir .. "/dnsmasq.out"))
end

local function cleanup_targets()
    local ids = H.run("docker ps -aq --filter label=" .. LABEL)
    if ids:find("%x") then
        docker("rm -f " .. ids:gsub("%s+", " "))
    end
end

-- runs `cmd` in the sandbox's container; returns output, ok
local function in_sandbox(id, cmd)
    return H.run("docker exec sandbox-" .. id .. " sh -c " .. H.quote(cmd))
end

-- GET / of `name` (looked up by the sandbox's resolver) on port 80: body, ok
local function fetch(id, name)
    return in_sandbox(id, "/netprobe " .. name .. " 80 / -b")
end

-- GET / of an address, no name involved: answer, ok (busybox nc; the answer is empty when refused)
local function fetch_ip(cid_or_id, ip, port)
    local name = cid_or_id:find("^%x+$") and #cid_or_id > 40 and cid_or_id or ("sandbox-" .. cid_or_id)
    local out = H.run(string.format("docker exec %s sh -c %s", name,
        H.quote(string.format("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 %s %d", ip, port or 80))))
    return out, out:find("200 OK", 1, true) ~= nil
end

local function create_with(policy, over)
    local body = { networkPolicy = policy }
    for k, v in pairs(over or {}) do
        body[k] = v
    end
    local id = H.create_running(srv, body)
    assert(H.run(string.format("docker cp %s sandbox-%s:/netprobe && echo copied", probe, id)):find("copied"))
    return id
end

local function ip_of(container)
    return H.run("docker inspect -f '{{.NetworkSettings.IPAddress}}' " .. container):match("([%d%.]+)")
end

-- The netfilter netlink sockets of sandbox `id`'s network namespace (its /proc/net/netlink, protocol 12) that the
-- server holds (the DNS filter's socket kept per sandbox): a list of socket inodes.
local function server_nl_sockets(id)
    local cpid = H.run("docker inspect -f '{{.State.Pid}}' sandbox-" .. id):match("(%d+)")
    local inodes = {}
    for line in H.run("cat /proc/" .. cpid .. "/net/netlink"):gmatch("[^\n]+") do
        local f = {}
        for w in line:gmatch("%S+") do
            f[#f + 1] = w
        end
        if f[2] == "12" and f[10] then
            inodes[f[10]] = true
        end
    end
    local held = {}
    for inode in H.run("ls -l /proc/" .. srv.pid .. "/fd"):gmatch("socket:%[(%d+)%]") do
        if inodes[inode] then
            held[#held + 1] = inode
        end
    end
    return held
end

-- whether the server holds any of the sockets `inodes`
local function server_holds(inodes)
    local fds = H.run("ls -l /proc/" .. srv.pid .. "/fd")
    for _, inode in ipairs(inodes) do
        if fds:find("socket:[" .. inode .. "]", 1, true) then
            return true
        end
    end
    return false
end

describe("network policy (real traffic)", function()
    setup(function()
        H.ensure_image()
        probe = server.tmpdir() .. "/netprobe"
        local out, built = H.run(string.format("musl-gcc -static -O2 -o %s %s/bench/netprobe.c", probe, H.root()))
        assert(built, out)
        H.remove_all_containers()
        cleanup_targets()
        start_target("a")
        start_target("b")
        start_target("c")
        start_dns()
        srv = H.start({ config = {
            docker = { instance = INSTANCE },
            network_policy = { dns_upstream = "127.0.0.1:" .. dns.port },
        } })
    end)

    teardown(function()
        H.stop_all()
        H.remove_all_containers()
        cleanup_targets()
        if dns.pid then
            H.sh("kill " .. dns.pid .. " 2>/dev/null")
        end
        if dns.dir then
            H.sh("rm -rf " .. H.quote(dns.dir))
        end
    end)

    it("deny by default: an allowed name resolves and connects; others do not, by name or by address", function()
        local id = create_with({ defaultAction = "deny", egress = { { action = "allow", target = "allowed.test" } } })
        local out, ok = fetch(id, "allowed.test")
        assert.is_true(ok, out)
        assert.matches("hello%-a", out)
        -- and its address, once the name resolved to it
        out, ok = fetch_ip(id, targets.a.ip)
        assert.is_true(ok, out)
        -- a name no rule allows does not resolve (NXDOMAIN from the filter)
        out, ok = fetch(id, "blocked.test")
        assert.is_false(ok, out)
        assert.matches("cannot resolve", out)
        -- the denied target's address, hard-coded
        out, ok = fetch_ip(id, targets.b.ip)
        assert.is_false(ok, out)
        -- another resolver: the query is still the filter's
        out = in_sandbox(id, "nslookup blocked.test 10.255.255.1")
        assert.not_matches(targets.b.ip:gsub("%.", "%%."), out)
        -- DNS over TCP is refused
        out, ok = in_sandbox(id, "nc -w 2 " .. targets.b.ip .. " 53 </dev/null")
        assert.is_false(ok, out)
        -- the allowed name asked of any resolver resolves (through the filter)
        out = in_sandbox(id, "nslookup allowed.test 10.255.255.1")
        assert.matches(targets.a.ip:gsub("%.", "%%."), out)
    end)

    it("wildcards, CIDRs and rule order (first match wins)", function()
        local id = create_with({ defaultAction = "deny", egress = {
            { action = "deny", target = "blocked.test" },
            { action = "allow", target = "*.wild.test" },
            { action = "allow", target = targets.b.ip .. "/32" },
        } })
        local out, ok = fetch(id, "api.wild.test")
        assert.is_true(ok, out)
        assert.matches("hello%-c", out)
        -- the name is denied by the first rule, its address allowed by the CIDR rule
        out, ok = fetch(id, "blocked.test")
        assert.is_false(ok, out)
        out, ok = fetch_ip(id, targets.b.ip)
        assert.is_true(ok, out)
        assert.matches("hello%-b", out)
        -- not matched by any rule: default deny (other.test has the address api.wild.test had: the name decides
        -- what resolves, and its address was allowed through api.wild.test)
        out, ok = fetch(id, "other.test")
        assert.is_false(ok, out)
        assert.matches("cannot resolve", out)
        out, ok = fetch_ip(id, targets.a.ip)
        assert.is_false(ok, out)
    end)

    it("allow by default with a denied name", function()
        local id = create_with({ defaultAction = "allow", egress = { { action = "deny", target = "blocked.test" } } })
        local out, ok = fetch(id, "allowed.test")
        assert.is_true(ok, out)
        out, ok = fetch(id, "blocked.test")
        assert.is_false(ok, out)
        assert.matches("cannot resolve", out)
        -- addresses are not restricted by a deny default
        out, ok = fetch_ip(id, targets.b.ip)
        assert.is_true(ok, out)
    end)

    it("IPv6 is off in a sandbox with a policy", function()
        local id = create_with({ defaultAction = "allow", egress = {} })
        local out = in_sandbox(id, "cat /proc/sys/net/ipv6/conf/all/disable_ipv6")
        assert.matches("^1", out)
    end)

    it("sandboxes cannot reach each other, other containers cannot reach sandboxes, the server proxy can", function()
        local serve = { entrypoint = { "sh", "-c",
            "mkdir -p /w && echo sandbox > /w/index.html && exec httpd -f -p 8080 -h /w" } }
        local a = H.create_running(srv, serve)
        local b = H.create_running(srv, serve)
        local ip_a, ip_b = ip_of("sandbox-" .. a), ip_of("sandbox-" .. b)
        local out, ok = fetch_ip(a, ip_b, 8080)
        assert.is_false(ok, out)
        out, ok = fetch_ip(b, ip_a, 8080)
        assert.is_false(ok, out)
        -- a sandbox reaches a container that is not a sandbox (its answers come back)
        out, ok = fetch_ip(a, targets.a.ip)
        assert.is_true(ok, out)
        -- that container cannot reach a sandbox
        out, ok = fetch_ip(targets.a.cid, ip_a, 8080)
        assert.is_false(ok, out)
        -- the server proxy reaches both
        for _, id in ipairs({ a, b }) do
            local res = H.call(srv, "GET", "/v1/sandboxes/" .. id .. "/proxy/8080/")
            assert.equal(200, res.status)
            assert.matches("sandbox", res.body)
        end
        -- with a policy too
        local c = create_with({ defaultAction = "allow", egress = {} }, serve)
        out, ok = fetch_ip(c, ip_a, 8080)
        assert.is_false(ok, out)
        out, ok = fetch_ip(a, ip_of("sandbox-" .. c), 8080)
        assert.is_false(ok, out)
        assert.equal(200, H.call(srv, "GET", "/v1/sandboxes/" .. c .. "/proxy/8080/").status)
    end)

    it("two tenants' sandboxes cannot reach each other; one tenant's key does not proxy into the other's", function()
        local keys = { { key = "key-np-team-a", principal = "team-a" },
            { key = "key-np-team-b", principal = "team-b" } }
        local t = H.start({ config = { server = { api_keys = keys }, docker = { instance = INSTANCE .. "-tenants" },
            network_policy = { dns_upstream = "127.0.0.1:" .. dns.port } } })
        local serve = { entrypoint = { "sh", "-c",
            "mkdir -p /w && echo sandbox > /w/index.html && exec httpd -f -p 8080 -h /w" } }
        local function create_as(key)
            local res = H.call(t, "POST", "/v1/sandboxes", H.body(serve), { ["OPEN-SANDBOX-API-KEY"] = key })
            assert.equal(202, res.status, res.body)
            local id = res.json.id
            for _ = 1, 300 do
                local g = H.call(t, "GET", "/v1/sandboxes/" .. id, nil, { ["OPEN-SANDBOX-API-KEY"] = key })
                if g.json and g.json.status and g.json.status.state == "Running" then
                    return id
                end
                H.sleep(0.1)
            end
            error("sandbox " .. id .. " did not run")
        end
        local a = create_as(keys[1].key)
        local b = create_as(keys[2].key)
        local out, ok = fetch_ip(a, ip_of("sandbox-" .. b), 8080)
        assert.is_false(ok, out)
        out, ok = fetch_ip(b, ip_of("sandbox-" .. a), 8080)
        assert.is_false(ok, out)
        local proxied = "/v1/sandboxes/" .. b .. "/proxy/8080/"
        local res = H.call(t, "GET", proxied, nil, { ["OPEN-SANDBOX-API-KEY"] = keys[1].key })
        assert.equal(404, res.status)
        res = H.call(t, "GET", proxied, nil, { ["OPEN-SANDBOX-API-KEY"] = keys[2].key })
        assert.equal(200, res.status)
        assert.matches("sandbox", res.body)
        for _, pair in ipairs({ { a, keys[1].key }, { b, keys[2].key } }) do
            H.call(t, "DELETE", "/v1/sandboxes/" .. pair[1], nil, { ["OPEN-SANDBOX-API-KEY"] = pair[2] })
        end
        t:stop()
    end)

    it("PATCH and DELETE on /policy change what a running sandbox reaches; a restart keeps it", function()
        local id = create_with({ defaultAction = "deny", egress = { { action = "allow", target = "allowed.test" } } })
        local out, ok = fetch(id, "api.wild.test")
        assert.is_false(ok, out)
        -- the SDK's way: the endpoint of port 18080 and its header
        local ep = H.call(srv, "GET", "/v1/sandboxes/" .. id .. "/endpoints/18080").json
        local function policy_call(method, body)
            local url = ep.endpoint:find("^https?://") and ep.endpoint or ("http://" .. ep.endpoint)
            return H.curl({ method = method, url = url .. "/policy", headers = ep.headers,
                body = body and H.json.encode(body) or nil })
        end
        local res = policy_call("PATCH", { { action = "allow", target = "*.wild.test" } })
        assert.equal(200, res.status, res.body)
        out, ok = fetch(id, "api.wild.test")
        assert.is_true(ok, out)
        assert.matches("hello%-c", out)
        -- removed again: the name no longer resolves, a new connection to its address is refused
        res = policy_call("DELETE", { "*.wild.test" })
        assert.equal(200, res.status, res.body)
        out, ok = fetch(id, "api.wild.test")
        assert.is_false(ok, out)
        out, ok = fetch_ip(id, targets.c.ip)
        assert.is_false(ok, out)
        -- deny the allowed name by a rule ahead of it
        res = policy_call("PATCH", { { action = "deny", target = "allowed.test" } })
        assert.equal(200, res.status, res.body)
        out, ok = fetch(id, "allowed.test")
        assert.is_false(ok, out)
        res = policy_call("PATCH", { { action = "allow", target = "allowed.test" },
            { action = "allow", target = "other.test" } })
        assert.equal(200, res.status, res.body)

        -- a restart (same store): the sandbox keeps its current policy, and the new server's DNS filter serves it
        assert.equal(1, #server_nl_sockets(id))
        srv:stop()
        srv = H.start({ dir = srv.dir, port = srv.port, config = srv.config })
        H.wait_state(srv, id, "Running", 30)
        -- the stored policies are handed to the runtime again in background tasks after the start-up
        -- reconciliation (the record is Running before that): wait for this one's
        local restored = false
        for _ = 1, 300 do
            for line in srv:log():gmatch("[^\n]+") do
                if line:find('"msg":"network policy restored"', 1, true) and line:find(id, 1, true) then
                    restored = true
                end
            end
            if restored then
                break
            end
            H.sleep(0.1)
        end
        assert.is_true(restored, "the policy was not restored after the restart")
        -- the new server keeps a netlink socket of its own in the sandbox's namespace (taken over at start-up)
        assert.equal(1, #server_nl_sockets(id))
        local got = policy_call("GET")
        assert.equal(200, got.status, got.body)
        out, ok = fetch(id, "allowed.test")
        assert.is_true(ok, out)
        out, ok = fetch(id, "other.test")
        assert.is_true(ok, out)
        out, ok = fetch(id, "blocked.test")
        assert.is_false(ok, out)
        out, ok = fetch_ip(id, targets.b.ip)
        assert.is_false(ok, out)
    end)

    it("leaves nothing on the host: no table, no rule, no interface, no socket of its own", function()
        local id = create_with({ defaultAction = "deny", egress = { { action = "allow", target = "allowed.test" } } })
        local out, ok = fetch(id, "allowed.test")
        assert.is_true(ok, out)
        -- the DNS filter's netlink socket in the sandbox's namespace (it holds the namespace while open)
        local held = server_nl_sockets(id)
        assert.equal(1, #held)
        -- the host's end of the sandbox's network interface
        local veth = in_sandbox(id, "cat /sys/class/net/eth0/iflink"):match("(%d+)")
        assert.matches("^" .. veth .. ":", (H.run("ip -o link show | grep '^" .. veth .. ":'")))
        assert.not_matches("opensandbox", (H.run("nft list tables")))
        assert.equal(204, H.call(srv, "DELETE", "/v1/sandboxes/" .. id).status)
        H.wait_gone(srv, id, 30)
        assert.is_false(server_holds(held))
        assert.not_matches("opensandbox", (H.run("nft list ruleset")))
        assert.equal("", (H.run("ip -o link show | grep '^" .. veth .. ":'")))
    end)
end)
