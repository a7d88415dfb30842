-- Scenario: the proxy's pool of keep-alive backend connections (http.proxy_configure, http.proxy_pool_close).
-- The backend is a small raw-TCP HTTP server in node that counts the connections it accepted, so that every
-- check is about what the backend saw: N requests over one connection, a new connection after a response that
-- may not be reused (Connection: close, no length, HTTP/1.0, bytes after the body, a half-read response), the
-- pool bounded per backend, the idle timeout, closing a tag's connections, and the one retry on a fresh
-- connection when a pooled one turns out dead (only for an idempotent request, never for a POST).
local core = require("core")
local http = require("core.http")
local client = require("core.client")
local timer = require("core.timer")
local spawn = require("core.spawn")
local log = require("core.log")

local function sh(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    p:close()
    return out
end

local backend = [[
const net = require('net');
let conns = 0, dropNext = false;
const big = Buffer.alloc(4 * 1024 * 1024, 120);
net.createServer((s) => {
  conns++;
  let served = 0, buf = Buffer.alloc(0);
  s.on('error', () => {});
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const e = buf.indexOf('\r\n\r\n');
      if (e < 0) return;
      const head = buf.slice(0, e).toString();
      const m = /content-length: *(\d+)/i.exec(head);
      const blen = m ? Number(m[1]) : 0;
      if (buf.length < e + 4 + blen) return;
      const body = buf.slice(e + 4, e + 4 + blen).toString();
      buf = buf.slice(e + 4 + blen);
      const path = head.split(' ')[1];
      const reused = served > 0;
      served++;
      const send = (b, extra) => s.write('HTTP/1.1 200 OK\r\nContent-Length: ' + Buffer.byteLength(b) +
        '\r\n' + (extra || '') + '\r\n' + b);
      if (dropNext && reused) { dropNext = false; s.destroy(); return; }
      if (path === '/count') send(String(conns));
      else if (path === '/arm-drop') { dropNext = true; send('armed'); }
      else if (path === '/ok') send('ok');
      else if (path === '/echo') send('got:' + body);
      else if (path === '/conn-header') send(/\r\nconnection:/i.test(head) ? 'has-connection' : 'none');
      else if (path === '/chunked')
        s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nch\r\n3\r\nunk\r\n0\r\n\r\n');
      else if (path === '/close') { // says close, but keeps the socket open a while: it must not be reused
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nclose');
        setTimeout(() => s.end(), 2000);
      }
      else if (path === '/nolen') { s.end('HTTP/1.1 200 OK\r\n\r\nno length'); return; }
      else if (path === '/http10') { s.write('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold!'); }
      else if (path === '/extra') s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE');
      else if (path === '/big') send(big.toString());
      else send('unknown ' + path);
      if (/\r\nconnection: *close/i.test(head)) { s.end(); return; }
    }
  });
}).listen(Number(process.argv[2]), '127.0.0.1');
]]
local dir = sh("mktemp -d /tmp/osb-proxy-pool.XXXXXX"):gsub("%s+$", "")
local f = assert(io.open(dir .. "/backend.js", "w"))
f:write(backend)
f:close()
-- (below the kernel's ephemeral range, 32768 and up: a client socket holding the port would make the listen fail)
local bport = 20000 + math.random(0, 12000)
local bpid = tonumber(sh(string.format("node %s/backend.js %d >/dev/null 2>&1 & echo $!", dir, bport)))

local port = http.listen({ host = "127.0.0.1", port = 0, early_paths = { "/p/" }, handler = function(req)
    local target = req.path:sub(3)
    http.proxy(req, { host = "127.0.0.1", port = bport, method = req.method, target = target,
        headers = { { "Host", "backend.test" } }, pool = req:header("x-pool") or "sbx-1", connect_timeout = 2 })
end })
local base = "http://127.0.0.1:" .. port

local function get(path, opts)
    opts = opts or {}
    opts.url = base .. "/p" .. path
    opts.timeout = opts.timeout or 10
    return client.request(opts)
end

-- what the backend has seen: its connection count, asked directly (that is one connection more)
local direct_seen = 0
local function backend_conns()
    local r = assert(client.request({ url = "http://127.0.0.1:" .. bport .. "/count", timeout = 5,
        headers = { Connection = "close" } }))
    direct_seen = direct_seen + 1
    return tonumber(r.body) - direct_seen
end

local ok, err = pcall(function()
    for _ = 1, 300 do
        local r = client.request({ url = "http://127.0.0.1:" .. bport .. "/ok", timeout = 1,
            headers = { Connection = "close" } })
        if r and r.status == 200 then
            direct_seen = direct_seen + 1
            break
        end
        timer.sleep(0.1)
    end
    assert(direct_seen == 1, "the node backend did not start")

    -- off (the C default): one connection per request, with Connection: close upstream
    assert(get("/ok").body == "ok")
    assert(get("/conn-header").body == "has-connection")
    local n = backend_conns()
    assert(n == 2, "without keep-alive every request has its own connection: " .. n)
    assert(http.proxy_stats().pool_idle == 0)

    http.proxy_configure({ keepalive = 4, keepalive_timeout = 30 })
    local c0 = backend_conns()
    local s0 = http.proxy_stats()
    -- 20 sequential requests: one backend connection
    for i = 1, 20 do
        local r = assert(get("/ok"))
        assert(r.status == 200 and r.body == "ok", "request " .. i)
    end
    assert(get("/conn-header").body == "none", "no Connection header upstream with keep-alive")
    assert(backend_conns() == c0 + 1, "20 requests over one connection: " .. backend_conns() - c0)
    local s1 = http.proxy_stats()
    assert(s1.reused_total - s0.reused_total == 20, "reused " .. (s1.reused_total - s0.reused_total))
    assert(s1.backend_connects_total - s0.backend_connects_total == 1)
    assert(s1.pool_idle == 1, "idle " .. s1.pool_idle)

    -- request bodies and chunked responses keep the connection
    c0 = backend_conns()
    for i = 1, 5 do
        local r = assert(get("/echo", { method = "POST", body = "payload-" .. i }))
        assert(r.body == "got:payload-" .. i, r.body)
        r = assert(get("/chunked"))
        assert(r.body == "chunk", r.body)
    end
    assert(backend_conns() == c0, "bodies and chunked responses reuse the connection")

    -- responses after which the connection is not reused: each costs one new connection afterwards
    for _, case in ipairs({ { "/close", "close" }, { "/nolen", "no length" }, { "/http10", "old!" },
        { "/extra", "ok" } }) do
        c0 = backend_conns()
        local r = assert(get(case[1]))
        assert(r.status == 200 and r.body == case[2], case[1] .. ": " .. tostring(r.body))
        assert(get("/ok").body == "ok")
        assert(get("/ok").body == "ok")
        assert(backend_conns() == c0 + 1, case[1] .. ": the next request must open a new connection, got "
            .. (backend_conns() - c0))
    end

    -- a response the client stopped reading (half-read) is never reused
    c0 = backend_conns()
    local res, rerr = get("/big", { on_data = function()
        return false
    end })
    assert(not res and rerr.kind == "aborted", "the download was aborted")
    timer.sleep(0.1)
    assert(get("/ok").body == "ok")
    assert(backend_conns() == c0 + 1, "a half-read connection is not reused: " .. (backend_conns() - c0))

    -- concurrency: the pool keeps at most `keepalive` idle connections per backend
    local done = 0
    for _ = 1, 12 do
        spawn(function()
            local r = get("/big")
            if r and r.status == 200 and #r.body == 4 * 1024 * 1024 then
                done = done + 1
            end
        end)
    end
    local t0 = core.monotonic()
    while done < 12 and core.monotonic() - t0 < 20 do
        timer.sleep(0.01)
    end
    assert(done == 12, "concurrent downloads: " .. done)
    assert(http.proxy_stats().pool_idle == 4, "bounded pool: " .. http.proxy_stats().pool_idle)
    -- and later requests take the pooled connections: no new one
    c0 = backend_conns()
    for _ = 1, 10 do
        assert(get("/ok").body == "ok")
    end
    assert(backend_conns() == c0, "the pooled connections are reused")

    -- per tag: a second tag has its own pool; closing one tag leaves the other's
    assert(get("/ok", { headers = { ["X-Pool"] = "sbx-2" } }).body == "ok")
    local idle = http.proxy_stats().pool_idle
    assert(idle == 5, "two tags: " .. idle)
    assert(http.proxy_pool_close("sbx-1") == 4)
    assert(http.proxy_stats().pool_idle == 1)
    c0 = backend_conns()
    assert(get("/ok").body == "ok")
    assert(backend_conns() == c0 + 1, "after proxy_pool_close the tag's next request connects anew")
    assert(http.proxy_pool_close() == 2, "closing all")
    assert(http.proxy_stats().pool_idle == 0)

    -- a pooled connection found dead by a GET: one retry on a fresh connection, the client sees nothing
    assert(get("/ok").body == "ok")
    assert(get("/arm-drop").body == "armed")
    local r0 = http.proxy_stats().retries_total
    c0 = backend_conns()
    res = assert(get("/ok"))
    assert(res.status == 200 and res.body == "ok", "retried GET: " .. res.status .. " " .. res.body)
    assert(http.proxy_stats().retries_total == r0 + 1, "one retry")
    assert(backend_conns() == c0 + 1, "the retry used a fresh connection")
    -- ... but a POST whose bytes went out is not sent twice: 502
    assert(get("/arm-drop").body == "armed")
    res = assert(get("/echo", { method = "POST", body = "once" }))
    assert(res.status == 502, "POST on a dead pooled connection: " .. res.status)
    assert(http.proxy_stats().retries_total == r0 + 1, "no retry for the POST")

    -- the idle timeout closes pooled connections
    http.proxy_configure({ keepalive_timeout = 0.3 })
    assert(get("/ok").body == "ok")
    assert(http.proxy_stats().pool_idle >= 1)
    timer.sleep(0.6)
    assert(http.proxy_stats().pool_idle == 0, "idle connections time out")
    -- an idle connection the backend closes leaves the pool at once
    http.proxy_configure({ keepalive_timeout = 30 })
    assert(get("/ok").body == "ok")
    assert(http.proxy_stats().pool_idle == 1)
    core.kill(bpid, "TERM")
    timer.sleep(0.3)
    assert(http.proxy_stats().pool_idle == 0, "a connection the backend closed leaves the pool")
    -- keepalive = 0 turns pooling off again
    http.proxy_configure({ keepalive = 0 })
    assert(not pcall(http.proxy_configure, { keepalive = -1 }), "a negative keepalive raises")
    assert(http.proxy_stats().active == 0)
end)

core.kill(bpid, "TERM")
sh("rm -rf " .. dir)
if not ok then
    error(err, 0)
end
log.info("proxy pool scenario passed")
core.stop(0)
