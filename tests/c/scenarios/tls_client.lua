-- Scenario: core.client over HTTPS with the `tls` option (CA, client certificate and key given as PEM
-- text, as a kubeconfig carries them), against `openssl s_server` on loopback that requires a client
-- certificate signed by our test CA. The server is verified (a wrong or missing CA fails), and a client
-- without the certificate is refused.
local core = require("core")
local client = require("core.client")
local timer = require("core.timer")

-- blocking helpers: this scenario sets up before it waits on anything
local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("a")
    local ok = p:close()
    return out, ok
end

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

local dir = os.tmpname()
os.remove(dir)
assert(select(2, sh("mkdir -p " .. dir)))
local q = "'" .. dir .. "'"
local out, ok = sh(table.concat({
    "cd " .. q,
    "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext",
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=scenario-ca",
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=other-ca",
    "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
        .. "-extfile san.ext",
    "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=scenario-client",
    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2",
}, " && "))
assert(ok, "openssl setup failed: " .. out)

-- a free port from the kernel, then s_server on it (the scenario ends it by pid)
local port = assert(core.free_tcp_port("127.0.0.1"))
out, ok = sh(string.format("cd %s && (openssl s_server -accept 127.0.0.1:%d -cert server.pem -key server.key " ..
    "-CAfile ca.pem -Verify 1 -verify_return_error -www -quiet >server.log 2>&1 & echo $! > server.pid)", q, port))
assert(ok, out)
local pid = tonumber(slurp(dir .. "/server.pid"))

local tls = { ca = slurp(dir .. "/ca.pem"), cert = slurp(dir .. "/client.pem"), key = slurp(dir .. "/client.key") }
local url = string.format("https://127.0.0.1:%d/", port)

local res, err
for _ = 1, 100 do -- until s_server listens
    res, err = client.request({ url = url, tls = tls, timeout = 5 })
    if res then
        break
    end
    timer.sleep(0.05)
end
local function finish(code)
    core.kill(pid, "TERM")
    sh("rm -rf " .. q)
    core.stop(code)
end
local function check(cond, msg)
    if not cond then
        io.stderr:write("tls_client scenario: ", msg, "\n")
        finish(1)
        error(msg)
    end
end

check(res and res.status == 200, "mutual TLS request failed: " .. tostring(err))
check(res.body:find("scenario-client", 1, true) ~= nil or #res.body > 0, "no body from s_server")

-- the server's certificate is verified: another CA, or the system's CAs only, fail
res, err = client.request({ url = url, tls = { ca = slurp(dir .. "/other-ca.pem"), cert = tls.cert, key = tls.key },
    timeout = 5 })
check(res == nil and err, "a server signed by an unknown CA was accepted")
res, err = client.request({ url = url, timeout = 5 })
check(res == nil and err, "the system's CAs accepted the test CA")

-- the server requires a client certificate: without one the handshake (or the first read) fails
res, err = client.request({ url = url, tls = { ca = tls.ca }, timeout = 5 })
check(res == nil and err, "a request without the client certificate was served")

-- bad option types are programmer errors
local raised = not pcall(client.request, { url = url, tls = "x" })
check(raised, "tls = string did not raise")
raised = not pcall(client.request, { url = url, tls = { ca = 42 } })
check(raised, "tls.ca = number did not raise")

require("core.log").info("tls_client scenario passed")
finish(0)
