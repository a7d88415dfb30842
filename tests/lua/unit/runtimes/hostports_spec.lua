-- runtimes.docker.hostports on a made-up /proc tree: socket inodes of the given PIDs matched against the
-- LISTEN entries of net/tcp and net/tcp6, and the address to connect to for each listener.
local hostports = require("runtimes.docker.hostports")

local TITLE = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

local function line(n, laddr, port, st, inode)
    return string.format("%4d: %s:%04X 00000000:0000 %s 00000000:00000000 00:00000000 00000000     0        0 %d 1 "
        .. "0000000000000000 100 0 0 10 0\n", n, laddr, port, st, inode)
end

describe("runtimes.docker.hostports", function()
    local proc

    before_each(function()
        proc = os.tmpname()
        os.remove(proc)
        assert(os.execute("mkdir -p " .. proc .. "/100/fd " .. proc .. "/100/net " .. proc .. "/200/fd"))
        -- pid 100 holds sockets 11, 12, 13 and a file; pid 200 holds socket 14; 15 belongs to nobody here
        for fd, target in pairs({ ["3"] = "socket:[11]", ["4"] = "socket:[12]", ["5"] = "/etc/hosts",
            ["6"] = "socket:[13]" }) do
            assert(os.execute(string.format("ln -s '%s' %s/100/fd/%s", target, proc, fd)))
        end
        assert(os.execute("ln -s 'socket:[14]' " .. proc .. "/200/fd/3"))
        local f = assert(io.open(proc .. "/100/net/tcp", "w"))
        f:write(TITLE, line(0, "00000000", 8080, "0A", 11), -- 0.0.0.0:8080, ours
            line(1, "0100007F", 5432, "0A", 15), -- 127.0.0.1:5432, not ours (a host database)
            line(2, "0100007F", 9000, "01", 12), -- an established connection, not a listener
            line(3, "0100007F", 7000, "0A", 14)) -- 127.0.0.1:7000, pid 200's
        f:close()
        f = assert(io.open(proc .. "/100/net/tcp6", "w"))
        f:write(TITLE, line(0, "00000000000000000000000000000000", 9090, "0A", 13)) -- [::]:9090, ours
        f:close()
    end)

    after_each(function()
        os.execute("rm -rf " .. proc)
    end)

    it("lists only the listeners whose sockets the given processes hold", function()
        local ports, readable = hostports.listening({ 100 }, proc)
        assert.equal(1, readable)
        assert.same({ [8080] = "127.0.0.1", [9090] = "::1" }, ports)
        ports = hostports.listening({ 100, 200 }, proc)
        assert.same({ [8080] = "127.0.0.1", [9090] = "::1", [7000] = "127.0.0.1" }, ports)
    end)

    it("lists nothing for processes it cannot read", function()
        local ports, readable = hostports.listening({ 999 }, proc)
        assert.equal(0, readable)
        assert.same({}, ports)
    end)

    it("connects to a wildcard listener on loopback and to a bound address as it is", function()
        assert.equal("127.0.0.1", hostports.connect_host("0.0.0.0", 4))
        assert.equal("10.0.0.5", hostports.connect_host("10.0.0.5", 4))
        assert.equal("::1", hostports.connect_host("0:0:0:0:0:0:0:0", 6))
    end)
end)
