-- Unit specs of runtimes.kubernetes.kubeconfig: a kubeconfig's current (or named) context to credentials,
-- inline (*-data) and file forms, tokens, the in-cluster service account, and every refusal named.
local kubeconfig = require("runtimes.kubernetes.kubeconfig")
local base64 = require("common.base64")

local CA = "-----BEGIN CERTIFICATE-----\nCAcafe\n-----END CERTIFICATE-----\n"
local CERT = "-----BEGIN CERTIFICATE-----\nCLIENTcafe\n-----END CERTIFICATE-----\n"
local KEY = "-----BEGIN EC PRIVATE KEY-----\nKEYcafe\n-----END EC PRIVATE KEY-----\n"

-- a read_file over an in-memory file system
local function files(t)
    return function(path)
        if t[path] then
            return t[path]
        end
        return nil, path .. ": No such file or directory"
    end
end

-- a kubeconfig with two contexts: "dev" (inline data, namespace) and "prod" (files, token file)
local function config_text(over)
    over = over or {}
    return table.concat({
        "apiVersion: v1",
        "kind: Config",
        "current-context: " .. (over.current or "dev"),
        "clusters:",
        "- name: dev-cluster",
        "  cluster:",
        "    server: " .. (over.server or "https://10.0.0.1:6443/"),
        "    certificate-authority-data: " .. (over.ca_data or base64.encode(CA)),
        over.insecure and "    insecure-skip-tls-verify: true" or "",
        "- name: prod-cluster",
        "  cluster:",
        "    server: https://k8s.example.com",
        "    certificate-authority: certs/ca.crt",
        "contexts:",
        "- name: dev",
        "  context:",
        "    cluster: dev-cluster",
        "    user: " .. (over.dev_user or "dev-user"),
        "    namespace: sandboxes",
        "- name: prod",
        "  context:",
        "    cluster: prod-cluster",
        "    user: prod-user",
        "- name: lost",
        "  context:",
        "    cluster: nowhere",
        "users:",
        "- name: dev-user",
        "  user:",
        over.dev_user_body or ("    client-certificate-data: " .. base64.encode(CERT)
            .. "\n    client-key-data: " .. base64.encode(KEY)),
        "- name: prod-user",
        "  user:",
        "    tokenFile: /var/run/token",
        "- name: exec-user",
        "  user:",
        "    exec:",
        "      command: aws",
        "",
    }, "\n")
end

local FS = files({
    ["/home/u/.kube/certs/ca.crt"] = CA,
    ["/var/run/token"] = "tok-from-file\n",
})

describe("kubeconfig.parse", function()
    it("reads the current context with inline data: server, CA, client certificate, namespace", function()
        local c = assert(kubeconfig.parse(config_text(), "/home/u/.kube/config", { read_file = FS }))
        assert.equal("https://10.0.0.1:6443", c.server) -- the trailing slash is dropped
        assert.equal(CA, c.ca)
        assert.equal(CERT, c.cert)
        assert.equal(KEY, c.key)
        assert.is_nil(c.token)
        assert.equal("sandboxes", c.namespace)
    end)

    it("reads a named context with files relative to the kubeconfig and a token file", function()
        local c = assert(kubeconfig.parse(config_text(), "/home/u/.kube/config", { read_file = FS, context = "prod" }))
        assert.equal("https://k8s.example.com", c.server)
        assert.equal(CA, c.ca)
        assert.is_nil(c.cert)
        assert.equal("tok-from-file", c.token)
        assert.equal("/var/run/token", c.token_file)
        assert.is_nil(c.namespace)
    end)

    it("reads files named by client-certificate and client-key, and an inline token", function()
        local fs = files({ ["/etc/k/c.pem"] = CERT, ["/home/u/.kube/k.pem"] = KEY })
        local text = config_text({ dev_user_body = "    client-certificate: /etc/k/c.pem\n    client-key: k.pem\n"
            .. "    token: abc.def" })
        local c = assert(kubeconfig.parse(text, "/home/u/.kube/config", { read_file = fs }))
        assert.equal(CERT, c.cert)
        assert.equal(KEY, c.key)
        assert.equal("abc.def", c.token)
        assert.is_nil(c.token_file)
    end)

    it("loads a file, and names it when it cannot be read", function()
        local fs = files({ ["/k/config"] = config_text() })
        assert.equal("https://10.0.0.1:6443", assert(kubeconfig.load("/k/config", { read_file = fs })).server)
        local c, err = kubeconfig.load("/k/missing", { read_file = fs })
        assert.is_nil(c)
        assert.equal("kubeconfig /k/missing: cannot be read: /k/missing: No such file or directory", err)
    end)

    local function refused(text, opts)
        local c, err = kubeconfig.parse(text, "/k/config", opts or { read_file = FS })
        assert.is_nil(c)
        assert.is_string(err)
        assert.equal("kubeconfig /k/config: ", err:sub(1, 22))
        return err:sub(23)
    end

    it("refuses insecure-skip-tls-verify and plain http", function()
        assert.equal('cluster "dev-cluster": insecure-skip-tls-verify is refused (the server\'s certificate must '
            .. "be verified)", refused(config_text({ insecure = true })))
        assert.equal('cluster "dev-cluster": server http://10.0.0.1:8080 is plain http (TLS is required)',
            refused(config_text({ server = "http://10.0.0.1:8080" })))
    end)

    it("names a missing current-context, an unknown context, cluster or user", function()
        assert.equal("no current-context is set", refused((config_text():gsub("current%-context: dev\n", ""))))
        assert.equal('context "nope" is not defined', refused(config_text({ current = "nope" })))
        assert.equal('cluster "nowhere" (of context "lost") is not defined', refused(config_text({ current = "lost" })))
        assert.equal('user "ghost" (of context "dev") is not defined', refused(config_text({ dev_user = "ghost" })))
    end)

    it("names bad base64, data that is not PEM, and an unreadable file", function()
        assert.equal('cluster "dev-cluster": certificate-authority-data: invalid base64 (a character outside the '
            .. "alphabet, or misplaced padding)", refused(config_text({ ca_data = "abc$" })))
        assert.equal('cluster "dev-cluster": certificate-authority-data is not PEM',
            refused(config_text({ ca_data = base64.encode("hello") })))
        assert.equal('cluster "prod-cluster": certificate-authority /k/certs/ca.crt cannot be read: '
            .. "/k/certs/ca.crt: No such file or directory",
            refused(config_text({ current = "prod" })))
    end)

    it("refuses exec plugins, a certificate without its key, invalid YAML and a non-mapping", function()
        assert.equal('user "exec-user": exec credential plugins are not supported (use a token or a client '
            .. "certificate)", refused(config_text({ dev_user = "exec-user" })))
        assert.equal('user "dev-user": a client certificate needs both client-certificate and client-key',
            refused(config_text({ dev_user_body = "    client-certificate-data: " .. base64.encode(CERT) })))
        assert.matches("^invalid YAML: ", refused("clusters: [unclosed"))
        assert.equal("not a kubeconfig (the document is not a mapping)", refused("- a\n- b\n"))
    end)
end)

describe("kubeconfig.in_cluster", function()
    local DIR = kubeconfig.SA_DIR
    local env = { KUBERNETES_SERVICE_HOST = "10.96.0.1", KUBERNETES_SERVICE_PORT = "443" }
    local function getenv(t)
        return function(k)
            return t[k]
        end
    end

    it("reads the service account's token, CA and namespace", function()
        local fs = files({ [DIR .. "/token"] = "sa-token\n", [DIR .. "/ca.crt"] = CA, [DIR .. "/namespace"] = "sbx" })
        local c = assert(kubeconfig.in_cluster(getenv(env), fs))
        assert.same({ server = "https://10.96.0.1:443", ca = CA, token = "sa-token", token_file = DIR .. "/token",
            namespace = "sbx" }, c)
    end)

    it("brackets an IPv6 service host", function()
        local fs = files({ [DIR .. "/token"] = "t", [DIR .. "/ca.crt"] = CA })
        local c = assert(kubeconfig.in_cluster(getenv({ KUBERNETES_SERVICE_HOST = "fd00::1",
            KUBERNETES_SERVICE_PORT = "443" }), fs))
        assert.equal("https://[fd00::1]:443", c.server)
        assert.is_nil(c.namespace)
    end)

    it("says what is missing outside a pod, and without a token", function()
        local c, err = kubeconfig.in_cluster(getenv({}), files({}))
        assert.is_nil(c)
        assert.equal("in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (the "
            .. "server is not running in a pod); set kubernetes.kubeconfig_path", err)
        c, err = kubeconfig.in_cluster(getenv(env), files({ [DIR .. "/ca.crt"] = CA }))
        assert.is_nil(c)
        assert.equal("in-cluster config: " .. DIR .. "/token cannot be read: " .. DIR
            .. "/token: No such file or directory", err)
    end)
end)

describe("kubernetes base64", function()
    it("round-trips bytes and refuses what is not base64", function()
        local bytes = "\0\1\2\255hello"
        assert.equal(bytes, base64.decode(base64.encode(bytes)))
        assert.equal("hello", base64.decode("aGVs\nbG8="))
        assert.is_nil(base64.decode("aGVsbG8")) -- not whole groups
        assert.is_nil(base64.decode("aG=sbG8="))
        assert.is_nil(base64.decode("a==="))
    end)
end)
