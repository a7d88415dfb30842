-- Network policy enforcement for Docker sandboxes (the design: NETWORK-POLICY.md).
--
-- One component per server, no sidecars:
--   * each sandbox with a policy gets an nftables table `inet opensandbox` in its own network namespace
--     (the container has no CAP_NET_ADMIN, so nothing inside can change it): an output chain that evaluates
--     the policy's rules in order against per-rule address sets, and a NAT chain that sends every DNS query
--     (UDP port 53, whatever resolver it was meant for) to this server's DNS filter;
--   * the DNS filter (one UDP socket on the sandbox network's gateway) answers a name the policy denies
--     with NXDOMAIN, forwards an allowed one to the upstream resolver and, before the answer goes back,
--     adds its IPv4 addresses to the set of the rule that allowed the name; so a connection succeeds only to
--     an address an allowed name resolved to (or an allowed IP/CIDR rule, or the default);
--   * IPv6 is switched off in a sandbox with a policy (sysctl at create), AAAA questions get an empty answer;
--   * sandbox-to-sandbox isolation: the same table's input chain accepts new connections from the host (the
--     network's gateway: the server proxy, the agent calls) and drops those from the rest of the sandbox
--     network (other sandboxes, other containers) and over IPv6; answers to the sandbox's own connections pass.
-- The user's entrypoint starts only after the table is in place: the bootstrap waits on a FIFO (the start
-- gate) that `release` opens.
local netpolicy = require("sandbox.netpolicy")
local BOOTSTRAP = require("runtimes.docker.mapping").BOOTSTRAP

local M = {}

M.TABLE = "opensandbox"
M.GATE_PATH = "/tmp/.opensandbox-gate"
M.GATE_ENV = "OPENSANDBOX_START_GATE"
M.GATE_FAILED_EXIT = 125 -- bootstrap.sh's exit status when its gate was not opened
M.DENY = "reject with icmpx type admin-prohibited" -- a refused connection fails at once, not by timeout
M.MIN_TTL = 300 -- seconds a learned address stays allowed at least (clients cache names for a while)
M.MAX_TTL = 86400
M.MAX_INFLIGHT = 256 -- DNS queries the filter answers at once (all sandboxes together); more are dropped

local QTYPE_A, QTYPE_AAAA = 1, 28
local RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 2, 3, 5

-- FNV-1a (64 bit): a short, stable set name for a rule's target (a domain can be longer than nft allows for a
-- name). Written here because nothing in the Lua standard library or our C core hashes strings; collisions
-- between two targets of one policy are checked where the names are made.
local function fnv64(s)
    local h = -3750763034362895579 -- 0xcbf29ce484222325
    for i = 1, #s do
        h = (h ~ s:byte(i)) * 1099511628211
    end
    return string.format("%016x", h)
end

--- The nft set name of a rule: `d…` (addresses learned by DNS for a domain or wildcard rule), `c…` (the
--- static addresses of an IP or CIDR rule; `c6…` for IPv6).
function M.set_name(target)
    local kind = netpolicy.kind(target)
    if kind == "domain" or kind == "wildcard" then
        return "d" .. fnv64(target), kind
    elseif kind == "ipv6" or kind == "cidr6" then
        return "c6" .. fnv64(target), kind
    end
    return "c" .. fnv64(target), kind
end

local function verdict(action)
    return action == "allow" and "accept" or M.DENY
end

--- The nft script (one transaction) that makes a sandbox's namespace enforce `policy` (nil: none) and, with
--- `net.isolate`, the isolation. `net` = { dns_ip, dns_port (the DNS filter), subnet (the sandbox network's,
--- "172.17.0.0/16"), gateway, isolate = bool }. `old_sets` (name -> true) are the sets the table has now:
--- sets of rules that remain are kept (addresses learned for a name survive a policy change), the others are
--- deleted. Returns the script and the set of set names the table has afterwards.
function M.script(policy, net, old_sets)
    local T = "inet " .. M.TABLE
    local out, sets = {}, {}
    local function add(fmt, ...)
        out[#out + 1] = string.format(fmt, ...)
    end
    add("add table %s", T)
    add("add chain %s ingress { type filter hook input priority 0; policy accept; }", T)
    add("add chain %s egress { type filter hook output priority 0; policy accept; }", T)
    -- before Docker's own output NAT (-100), so a query to any resolver reaches the filter
    add("add chain %s dns { type nat hook output priority -101; policy accept; }", T)
    add("flush chain %s ingress", T)
    add("flush chain %s egress", T)
    add("flush chain %s dns", T)
    if net.isolate then
        add("add rule %s ingress ct state established,related accept", T)
        add("add rule %s ingress iifname \"lo\" accept", T)
        add("add rule %s ingress ip saddr %s accept", T, net.gateway)
        add("add rule %s ingress meta nfproto ipv6 drop", T)
        add("add rule %s ingress ip saddr %s drop", T, net.subnet)
    end
    if policy then
        add("add rule %s egress ct state established,related accept", T)
        add("add rule %s egress oifname \"lo\" accept", T)
        add("add rule %s egress ip daddr %s udp dport %d accept", T, net.dns_ip, net.dns_port)
        -- DNS that the filter cannot see: over TCP (the filter answers UDP only) and over TLS
        add("add rule %s egress meta l4proto { tcp, udp } th dport { 53, 853 } %s", T, M.DENY)
        for _, rule in ipairs(policy.egress or {}) do
            local name, kind = M.set_name(rule.target)
            if not sets[name] then
                sets[name] = true
                if kind == "domain" or kind == "wildcard" then
                    add("add set %s %s { type ipv4_addr; flags timeout; }", T, name)
                else
                    local v6 = kind == "ipv6" or kind == "cidr6"
                    add("add set %s %s { type %s; flags interval; }", T, name, v6 and "ipv6_addr" or "ipv4_addr")
                    add("flush set %s %s", T, name)
                    add("add element %s %s { %s }", T, name, rule.target)
                end
                local fam = (kind == "ipv6" or kind == "cidr6") and "ip6" or "ip"
                add("add rule %s egress %s daddr @%s %s", T, fam, name, verdict(rule.action))
            end
        end
        add("add rule %s egress %s", T, verdict(policy.defaultAction))
        add("add rule %s dns meta nfproto ipv4 udp dport 53 dnat ip to %s:%d", T, net.dns_ip, net.dns_port)
    end
    for name in pairs(old_sets or {}) do
        if not sets[name] then
            add("delete set %s %s", T, name)
        end
    end
    out[#out + 1] = ""
    return table.concat(out, "\n"), sets
end

--- The sets a listing of the table names (`nft list table inet opensandbox`).
function M.sets_of_listing(text)
    local sets = {}
    for name in (text or ""):gmatch("\n%s*set ([%w_]+) {") do
        sets[name] = true
    end
    return sets
end

-- DNS answers -----------------------------------------------------------------------------------------------

--- An answer to `query` (its parsed form `q`) with no records and `rcode`.
function M.empty_answer(query, q, rcode)
    local flags = string.unpack(">I2", query, 3)
    -- QR=1, keep opcode and RD, RA=1, the rcode
    local f = 0x8000 | (flags & 0x7900) | 0x0080 | (rcode & 0xF)
    local qd = q and q.qend and 1 or 0
    local head = string.pack(">I2I2I2I2I2I2", q and q.id or string.unpack(">I2", query), f, qd, 0, 0, 0)
    return qd == 1 and head .. query:sub(13, q.qend) or head
end

-- the enforcer ----------------------------------------------------------------------------------------------

local Enforcer = {}
Enforcer.__index = Enforcer

--- opts: { net = core.net, log, sleep = fn(s), spawn = fn(f), now = fn() -> s, engine (docker engine),
--- config = docker config section, policy_config = the `network_policy` config section, instance }
function M.new(opts)
    local pc = opts.policy_config or {}
    return setmetatable({
        net = opts.net,
        log = opts.log,
        sleep = opts.sleep,
        spawn = opts.spawn,
        now = opts.now or os.time,
        engine = opts.engine,
        network = opts.network or "bridge",
        instance = opts.instance or "",
        upstream = pc.dns_upstream,
        dns_port = pc.dns_port or 0,
        isolation = pc.isolate_sandboxes ~= false,
        by_ip = {}, -- sandbox IP -> entry
        by_id = {}, -- sandbox id -> entry
        dns = nil, -- { ip, port, sock } once listening
    }, Enforcer)
end

function Enforcer:_warn(msg, fields)
    if self.log then
        self.log.warn(msg, fields)
    end
end

--- Whether this server can enforce a policy at all: nftables usable (root, kernel support).
function Enforcer:usable()
    if not self.net then
        return false, "the server's core.net module is missing"
    end
    if self.usable_cache == nil then
        local ok, err = self.net.nft(0, "list tables")
        self.usable_cache = ok and true or false
        self.usable_err = not ok and tostring(err):gsub("%s+$", "") or nil
    end
    return self.usable_cache, self.usable_err
end

local function resolv_conf_nameserver()
    local f = io.open("/etc/resolv.conf")
    if not f then
        return nil
    end
    for line in f:lines() do
        local ns = line:match("^%s*nameserver%s+([%d%.]+)%s*$")
        if ns then
            f:close()
            return ns
        end
    end
    f:close()
    return nil
end

-- host, port of the resolver queries are forwarded to
function Enforcer:_upstream()
    local up = self.upstream
    if up and up ~= "" then
        local host, port = up:match("^([%d%.]+):(%d+)$")
        if host then
            return host, tonumber(port)
        end
        return up, 53
    end
    local ns = resolv_conf_nameserver()
    if ns then
        return ns, 53
    end
    return nil
end

--- The sandbox network: { gateway, subnet } (looked up once).
function Enforcer:_network()
    if self.nw then
        return self.nw
    end
    local nw, err = self.engine:network(self.network)
    if not nw or not nw.subnet then
        return nil, string.format("cannot find the gateway and subnet of network %s: %s", self.network,
            tostring(err and err.message or err or "no subnet"))
    end
    if nw.derived then
        -- Docker reported no gateway and the subnet's first address stands in: it must be this host's own
        -- address on that network (the isolation accepts the host's connections by it), or nothing runs
        local probe, perr = self.net.udp_bind(nw.gateway, 0)
        if not probe then
            return nil, string.format("network %s reports no gateway, and its subnet's first address %s is not "
                .. "an address of this host (%s)", self.network, nw.gateway, tostring(perr))
        end
        probe:close()
        if self.log then
            self.log.info("network gateway taken as the subnet's first address (Docker reports none)",
                { network = self.network, gateway = nw.gateway, subnet = nw.subnet })
        end
    end
    self.nw = nw
    return nw
end

--- Starts the DNS filter on the sandbox network's gateway (once). Returns { ip, port } or nil, err.
function Enforcer:_dns()
    if self.dns then
        return self.dns
    end
    local nw, err = self:_network()
    if not nw then
        return nil, err
    end
    local sock, berr = self.net.udp_bind(nw.gateway, self.dns_port)
    if not sock then
        return nil, string.format("cannot listen for DNS on %s:%d: %s", nw.gateway, self.dns_port, tostring(berr))
    end
    self.dns = { ip = nw.gateway, port = sock:port(), sock = sock }
    self.spawn(function()
        self:_serve(sock)
    end)
    if self.log then
        self.log.info("network policy DNS filter listening", { address = nw.gateway, port = self.dns.port })
    end
    return self.dns
end

--- Answers the datagrams of `sock`, each in a task of its own, at most M.MAX_INFLIGHT at a time: a sandbox that
--- floods the filter (each query may wait up to 2 s on the upstream resolver) gets its excess dropped, as a
--- busy resolver would, instead of growing the server's tasks and memory.
function Enforcer:_serve(sock)
    self.inflight = 0
    while true do
        local data, ip, port = sock:recv()
        if not data then
            return -- closed
        end
        if self.inflight < M.MAX_INFLIGHT then
            self.inflight = self.inflight + 1
            self.spawn(function()
                local ok, answer = pcall(self.answer, self, data, ip)
                self.inflight = self.inflight - 1
                if not ok then
                    self:_warn("network policy: DNS answer failed", { error = tostring(answer) })
                elseif answer then
                    sock:send(answer, ip, port)
                end
            end)
        end
    end
end

--- The answer to DNS `query` from sandbox address `from_ip` (nil: send nothing). Adds the addresses of an
--- allowed name to its rule's set before returning.
function Enforcer:answer(query, from_ip)
    if #query < 12 then
        return nil
    end
    local entry = self.by_ip[from_ip]
    local q = self.net.dns_parse(query)
    if not q or q.qr or q.opcode ~= 0 or q.qdcount ~= 1 or not q.qend then
        return M.empty_answer(query, q and q.qend and q or nil, RCODE_REFUSED)
    end
    if not (entry and entry.policy) then
        return M.empty_answer(query, q, RCODE_REFUSED) -- not a sandbox with a policy of this server
    end
    local name = q.qname:lower():gsub("%.$", "")
    local action, index = netpolicy.match_name(entry.policy, name)
    if action ~= "allow" then
        return M.empty_answer(query, q, RCODE_NXDOMAIN)
    end
    if q.qtype == QTYPE_AAAA then
        return M.empty_answer(query, q, 0) -- IPv6 is off in the sandbox: no addresses, no error
    end
    local host, port = self:_upstream()
    if not host then
        return M.empty_answer(query, q, RCODE_SERVFAIL)
    end
    local reply, err = self.net.udp_query(host, port, query, 2)
    if not reply then
        self:_warn("network policy: upstream DNS failed", { upstream = host .. ":" .. port, error = tostring(err) })
        return M.empty_answer(query, q, RCODE_SERVFAIL)
    end
    if index and q.qtype == QTYPE_A then
        local r = self.net.dns_parse(reply)
        if r and r.answers then
            local rule = entry.policy.egress[index]
            local ok, aerr = self:_learn(entry, M.set_name(rule.target), r.answers)
            if not ok then
                self:_warn("network policy: cannot allow resolved addresses",
                    { sandbox_id = entry.id, name = name, error = tostring(aerr) })
                return M.empty_answer(query, q, RCODE_SERVFAIL)
            end
        end
    end
    return reply
end

M.NL_CHUNK = 256 -- elements per core.net netlink call (its limit)

-- adds the A records of `answers` to set `set` of the sandbox (skipping addresses added recently); an address
-- added before is removed and added again, for its new timeout. Through the sandbox's kept netlink socket
-- (entry.nl) when it has one, else with libnftables.
function Enforcer:_learn(entry, set, answers)
    local now = self.now()
    local learned = entry.learned[set]
    if not learned then
        learned = {}
        entry.learned[set] = learned
    end
    local adds, dels = {}, {}
    for _, a in ipairs(answers) do
        if a.type == QTYPE_A and a.addr then
            local ttl = math.max(M.MIN_TTL, math.min(M.MAX_TTL, a.ttl or 0))
            local until_s = learned[a.addr]
            if not until_s or until_s - now < ttl / 2 then
                if until_s and until_s > now + 1 then
                    dels[#dels + 1] = a.addr
                end
                adds[#adds + 1] = { a.addr, ttl }
                learned[a.addr] = now + ttl
            end
        end
    end
    if #adds == 0 then
        return true
    end
    local ok, err
    if entry.nl then
        for i = 1, math.max(#adds, #dels), M.NL_CHUNK do
            local a, d = table.move(adds, i, i + M.NL_CHUNK - 1, 1, {}), table.move(dels, i, i + M.NL_CHUNK - 1, 1, {})
            ok, err = entry.nl:elements(M.TABLE, set, a, d)
            if not ok then
                break
            end
        end
    else
        local cmds = {}
        for _, addr in ipairs(dels) do
            cmds[#cmds + 1] = string.format("delete element inet %s %s { %s }", M.TABLE, set, addr)
        end
        for _, el in ipairs(adds) do
            cmds[#cmds + 1] = string.format("add element inet %s %s { %s timeout %ds }", M.TABLE, set, el[1], el[2])
        end
        ok, err = self.net.nft(entry.pid, table.concat(cmds, "\n") .. "\n")
    end
    if not ok then
        for _, a in ipairs(answers) do
            if a.addr then
                learned[a.addr] = nil
            end
        end
    end
    return ok, err
end

--- Whether sandboxes get a table at all (isolation on, or a policy): then they wait at the start gate.
--- (Without core.net, in the adapter's unit specs on a fake engine, there is nothing to put anywhere.)
function Enforcer:wants_table(policy)
    if self.net == nil then
        return false
    elseif policy ~= nil then
        return true
    elseif not self.isolation then
        return false
    end
    local ok, uerr = self:usable()
    if not ok then
        -- isolation alone is not worth refusing every sandbox for (a server without root or CAP_NET_ADMIN, such
        -- as the packaged service): said once, loudly; a policy is refused instead (network_policy_support)
        if not self.isolation_warned and self.log then
            self.isolation_warned = true
            self.log.error("sandbox isolation is OFF: nftables is not usable by this server (run it as root, or "
                .. "set network_policy.isolate_sandboxes = false to silence this)", { error = tostring(uerr) })
        end
        return false
    end
    return true
end

--- Makes sandbox `id` (main process `pid`, address `ip`) isolated (when configured) and enforce `policy`
--- (nil: none). Idempotent: a sandbox already enforcing gets the new policy; after a server restart the table
--- in its namespace is taken over (the addresses it learned are kept). Returns true or nil, err.
function Enforcer:apply(id, pid, ip, policy)
    if not self:wants_table(policy) then
        return true
    end
    local ok, uerr = self:usable()
    if not ok then
        return nil, "nftables is not usable on this host: " .. tostring(uerr)
    end
    local nw, nerr = self:_network()
    if not nw then
        return nil, nerr
    end
    local net = { isolate = self.isolation, gateway = nw.gateway, subnet = nw.subnet }
    if policy then
        local dns, derr = self:_dns()
        if not dns then
            return nil, derr
        end
        net.dns_ip, net.dns_port = dns.ip, dns.port
    end
    local entry = self.by_id[id]
    if entry and entry.pid ~= pid then
        self:detach(id)
        entry = nil
    end
    local old_sets
    if entry then
        old_sets = entry.sets
    else
        local listed, listing = self.net.nft(pid, "list table inet " .. M.TABLE)
        old_sets = listed and M.sets_of_listing(listing) or {}
    end
    local script, sets = M.script(policy, net, old_sets)
    local aok, aerr = self.net.nft(pid, script)
    if not aok then
        return nil, "cannot install the sandbox's network rules: " .. tostring(aerr):gsub("%s+$", "")
    end
    if entry then
        -- addresses learned for rules that are gone are forgotten with their sets
        for name in pairs(entry.learned) do
            if not sets[name] then
                entry.learned[name] = nil
            end
        end
        entry.policy, entry.sets = policy, sets
    else
        entry = { id = id, pid = pid, ip = ip, policy = policy, sets = sets, learned = {} }
        self.by_id[id] = entry
    end
    if ip then
        self.by_ip[ip] = entry
    end
    self:_keep_socket(entry)
    return true
end

-- A sandbox with a policy keeps a netlink socket in its namespace for the DNS filter's set updates (opened
-- here, also for a sandbox taken over after a restart; closed by detach or when the policy goes). Without
-- one (core.net too old, or the socket cannot be opened) the updates go through libnftables.
function Enforcer:_keep_socket(entry)
    if not entry.policy then
        if entry.nl then
            entry.nl:close()
            entry.nl = nil
        end
    elseif not entry.nl and self.net.nl_open then
        local nl, err = self.net.nl_open(entry.pid)
        if nl then
            entry.nl = nl
        else
            self:_warn("network policy: no netlink socket kept for the sandbox (set updates use libnftables)",
                { sandbox_id = entry.id, error = tostring(err) })
        end
    end
end

--- Forgets sandbox `id` (its namespace, and the table in it, go with the container) and closes its netlink
--- socket.
function Enforcer:detach(id)
    local entry = self.by_id[id]
    if entry then
        self.by_id[id] = nil
        if entry.ip and self.by_ip[entry.ip] == entry then
            self.by_ip[entry.ip] = nil
        end
        if entry.nl then
            -- the socket holds the namespace: closed now, not whenever the collector gets to it
            entry.nl:close()
            entry.nl = nil
        end
    end
end

--- Whether a process command line (/proc/PID/cmdline: NUL-separated) is bootstrap.sh's: the script is argv[0]
--- or, run through its #! line, argv[1].
function M.is_bootstrap_cmdline(s)
    local a0, a1 = s:match("^([^%z]*)%z([^%z]*)")
    return (a0 or s) == BOOTSTRAP or a1 == BOOTSTRAP
end

--- Whether process `pid` (a sandbox's main process) still runs bootstrap.sh: it has not passed its start gate
--- (bootstrap.sh execs the entrypoint right after it). False when the process is gone.
function M.in_bootstrap(pid)
    local f = io.open("/proc/" .. tostring(pid) .. "/cmdline", "rb")
    if not f then
        return false
    end
    local s = f:read(4096) or ""
    f:close()
    return M.is_bootstrap_cmdline(s)
end

--- Opens the start gate of the sandbox whose main process is `pid`: its entrypoint starts. Waits (up to
--- `timeout` s) for the bootstrap to get there. `taken`: the container was started by an earlier server (a
--- provisioning a crash interrupted), which may have opened the gate already: then a main process that no
--- longer runs the bootstrap counts as released. Returns true or nil, err.
function Enforcer:release(pid, timeout, taken)
    local deadline = self.now() + (timeout or 10)
    local in_bootstrap = self.in_bootstrap or M.in_bootstrap
    while true do
        local ok, err = self.net.gate(pid, M.GATE_PATH)
        if ok then
            return true
        end
        if err ~= "not ready" then
            return nil, "cannot open the start gate: " .. tostring(err)
        end
        if taken and not in_bootstrap(pid) then
            return true
        end
        if self.now() > deadline then
            return nil, "the sandbox did not reach its start gate"
        end
        self.sleep(0.002)
    end
end

return M
