// sdk.test.mjs: the in-sandbox agent driven by the official JS SDK (@alibaba-group/opensandbox 0.1.11)
// through a REAL server on the REAL Docker daemon (node:test, Node 20).
//
// tests/agent/run.sh starts the server and sets OPENSANDBOX_URL, OPENSANDBOX_API_KEY and OSB_SDK (the
// SDK's dist/index.js). Two sandboxes are created: a busybox one for most cases and, when the image
// local/ws-echo:latest exists (tests/images/build-ws-echo.sh), one running tests/backends/ws_echo.c
// on port 9000 behind the agent's own /proxy/{port}. Both are deleted at the end (run.sh also deletes
// whatever its server still lists). The agent's 1.x additions are covered here too: uid/gid/envs on
// commands, listDirectory, line-based reads, and a PTY session driven over a real WebSocket
// (execd/tests/ws_client.mjs) through the SERVER's proxy.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import net from "node:net";
import { pathToFileURL } from "node:url";
import { wsConnect, outputOf, jsonFrames } from "../../execd/tests/ws_client.mjs";

const SDK_PATH = process.env.OSB_SDK;
const URL_ = process.env.OPENSANDBOX_URL;
const API_KEY = process.env.OPENSANDBOX_API_KEY;
const IMAGE = process.env.SANDBOX_IMAGE || "local/busybox:latest";
const WS_IMAGE = "local/ws-echo:latest";
const WS_PORT = 9000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function imageExists(ref) {
  try {
    execFileSync("docker", ["image", "inspect", ref], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const HAVE_WS = imageExists(WS_IMAGE);
let Sandbox, SandboxApiException;
let box, wsBox, execd; // execd: {base, headers} of the busybox sandbox's agent

const conn = () => ({
  domain: URL_,
  apiKey: API_KEY,
  requestTimeoutSeconds: 180,
  disableMetrics: true,
  endpointCacheDisabled: true,
});

async function create(image, extra = {}) {
  return Sandbox.create({
    connectionConfig: conn(),
    image,
    entrypoint: ["sleep", "3600"],
    metadata: { "opensandbox-test": "agent-sdk" },
    timeoutSeconds: 900,
    readyTimeoutSeconds: 120,
    ...extra,
  });
}

// Plain fetch against the agent (for cases the SDK cannot express).
async function agentFetch(p, init = {}) {
  return fetch(`${execd.base}${p}`, { ...init, headers: { ...execd.headers, ...(init.headers || {}) } });
}

async function assertAlive(what) {
  const r = await agentFetch("/ping");
  assert.equal(r.status, 200, `agent answers /ping after ${what}`);
}

// The SDK error for a failed agent call: status and code.
async function rejectsWith(promise, status, codeRe) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof SandboxApiException, `${err?.name}: ${err?.message}`);
    assert.equal(err.statusCode, status, err.message);
    if (codeRe) assert.match(String(err.error?.code), codeRe);
    assert.ok(err.message.length > 0);
    return err;
  }
  assert.fail(`expected a ${status} rejection`);
}

const stdoutOf = (exe) => exe.logs.stdout.map((m) => m.text);

describe("agent through the SDK", { timeout: 220000 }, () => {
  before(async () => {
    assert.ok(SDK_PATH && URL_, "run through tests/agent/run.sh");
    ({ Sandbox, SandboxApiException } = await import(pathToFileURL(SDK_PATH).href));
    [box, wsBox] = await Promise.all([
      create(IMAGE),
      HAVE_WS ? create(WS_IMAGE, { entrypoint: ["/ws_echo"], env: { PORT: String(WS_PORT) } }) : null,
    ]);
    const ep = await box.getEndpoint(44772);
    execd = { base: `http://${ep.endpoint}`, headers: ep.headers || {} };
  });

  after(async () => {
    for (const s of [box, wsBox]) {
      if (!s) continue;
      await s.kill().catch((e) => console.error(`kill ${s.id}: ${e.message}`));
      await s.close().catch(() => {});
    }
  });

  test("sessions: cwd, env and functions persist between runs; delete ends them", async () => {
    const sid = await box.commands.createSession({ workingDirectory: "/tmp" });
    let exe = await box.commands.runInSession(sid, "pwd; cd /etc && export GREETING='hi there'; greet() { echo \"$GREETING, $1\"; }");
    assert.deepEqual(stdoutOf(exe), ["/tmp"]);
    assert.equal(exe.exitCode, 0);
    exe = await box.commands.runInSession(sid, "pwd; greet you; echo $GREETING >&2");
    assert.deepEqual(stdoutOf(exe), ["/etc", "hi there, you"]);
    assert.deepEqual(exe.logs.stderr.map((m) => m.text), ["hi there"]);
    // per-run working directory applies to that run only
    exe = await box.commands.runInSession(sid, "pwd", { workingDirectory: "/usr" });
    assert.deepEqual(stdoutOf(exe), ["/usr"]);
    exe = await box.commands.runInSession(sid, "pwd; false");
    assert.deepEqual(stdoutOf(exe), ["/etc"]);
    assert.equal(exe.exitCode, 1);
    // two sessions do not share state
    const other = await box.commands.createSession();
    exe = await box.commands.runInSession(other, "echo \"[$GREETING]\"");
    assert.deepEqual(stdoutOf(exe), ["[]"]);
    await box.commands.deleteSession(other);
    // a run that times out reports the kill
    exe = await box.commands.runInSession(sid, "sleep 30", { timeoutSeconds: 1 });
    assert.equal(exe.exitCode, -1);
    assert.deepEqual(exe.error.traceback, ["signal: killed"]);
    await box.commands.deleteSession(sid);
    await rejectsWith(box.commands.runInSession(sid, "true"), 404, /RUNTIME_ERROR/);
    await rejectsWith(box.commands.deleteSession(sid), 404);
  });

  test("interrupt kills a running command and a running session command", async () => {
    for (const mode of ["command", "session"]) {
      const sid = mode === "session" ? await box.commands.createSession() : null;
      let id, started;
      const seen = new Promise((r) => (started = r));
      const handlers = {
        onInit: (i) => { id = i.id; },
        onStdout: (m) => { if (m.text === "started") started(); },
      };
      const t0 = Date.now();
      const cmd = "echo started; sleep 60; echo never";
      const running = sid ? box.commands.runInSession(sid, cmd, {}, handlers) : box.commands.run(cmd, {}, handlers);
      await seen;
      assert.match(id, /^[0-9a-f]{32}$/);
      const st = await box.commands.getCommandStatus(id);
      assert.equal(st.running, true);
      await box.commands.interrupt(id);
      const exe = await running;
      assert.ok(Date.now() - t0 < 10000, `${mode}: interrupted in ${Date.now() - t0} ms`);
      assert.equal(exe.exitCode, -1, mode);
      assert.ok(!stdoutOf(exe).includes("never"));
      assert.equal((await box.commands.getCommandStatus(id)).running, false);
      // interrupting it again: it is not running any more
      await rejectsWith(box.commands.interrupt(id), 500, /RUNTIME_ERROR/);
      if (sid) await box.commands.deleteSession(sid);
    }
  });

  test("files: Range reads, search, permissions, replace, mv", async () => {
    const dir = `/tmp/sdk-files-${Date.now()}`;
    const body = Array.from({ length: 200 }, (_, i) => `line ${String(i).padStart(3, "0")}\n`).join("");
    await box.files.writeFiles([
      { path: `${dir}/a.txt`, data: body, mode: 644 },
      { path: `${dir}/sub/b.txt`, data: "foo bar foo\n" },
      { path: `${dir}/sub/c.log`, data: "log\n" },
    ]);
    // Range
    assert.equal(await box.files.readFile(`${dir}/a.txt`, { range: "bytes=9-17" }), "line 001\n");
    assert.equal(await box.files.readFile(`${dir}/a.txt`, { range: "bytes=-9" }), "line 199\n");
    assert.equal(await box.files.readFile(`${dir}/a.txt`, { range: `bytes=${body.length - 4}-` }), "199\n");
    const r = await agentFetch(`/files/download?path=${encodeURIComponent(`${dir}/a.txt`)}`, { headers: { Range: "bytes=0-3" } });
    assert.equal(r.status, 206);
    assert.equal(r.headers.get("content-range"), `bytes 0-3/${body.length}`);
    assert.equal(await r.text(), "line");
    await rejectsWith(box.files.readFile(`${dir}/a.txt`, { range: `bytes=${body.length + 10}-` }), 416);
    // search
    const found = await box.files.search({ path: dir, pattern: "*.txt" });
    assert.deepEqual(found.map((f) => f.path).sort(), [`${dir}/a.txt`, `${dir}/sub/b.txt`]);
    assert.ok(found.every((f) => typeof f.size === "number"));
    // permissions
    await box.files.setPermissions([{ path: `${dir}/sub/b.txt`, mode: 600 }]);
    let info = await box.files.getFileInfo([`${dir}/sub/b.txt`]);
    assert.equal(info[`${dir}/sub/b.txt`].mode, 600);
    assert.equal(info[`${dir}/sub/b.txt`].owner, "root");
    const exe = await box.commands.run(`stat -c %a ${dir}/sub/b.txt`);
    assert.deepEqual(stdoutOf(exe), ["600"]);
    // replace
    await box.files.replaceContents([{ path: `${dir}/sub/b.txt`, oldContent: "foo", newContent: "baz" }]);
    assert.equal(await box.files.readFile(`${dir}/sub/b.txt`), "baz bar baz\n");
    info = await box.files.getFileInfo([`${dir}/sub/b.txt`]);
    assert.equal(info[`${dir}/sub/b.txt`].mode, 600, "replace keeps the mode");
    // mv
    await box.files.moveFiles([{ src: `${dir}/sub/c.log`, dest: `${dir}/moved/c.log` }]);
    assert.equal(await box.files.readFile(`${dir}/moved/c.log`), "log\n");
    await rejectsWith(box.files.getFileInfo([`${dir}/sub/c.log`]), 404, /FILE_NOT_FOUND/);
    await box.files.deleteDirectories([dir]);
  });

  test("a 100 MB file round trip keeps its sha256", async () => {
    const size = 100 * 1024 * 1024;
    const data = crypto.randomBytes(size);
    const want = crypto.createHash("sha256").update(data).digest("hex");
    const p = `/tmp/big-${Date.now()}.bin`;
    await box.files.writeFiles([{ path: p, data }]);
    const exe = await box.commands.run(`sha256sum ${p}; stat -c %s ${p}`);
    assert.deepEqual(stdoutOf(exe), [`${want}  ${p}`, String(size)]);
    const h = crypto.createHash("sha256");
    let got = 0;
    for await (const chunk of box.files.readBytesStream(p)) {
      h.update(chunk);
      got += chunk.length;
    }
    assert.equal(got, size);
    assert.equal(h.digest("hex"), want);
    await box.files.deleteFiles([p]);
  });

  test("bad input: unknown ids, missing paths, malformed multipart", async () => {
    await rejectsWith(box.commands.getCommandStatus("no-such-command"), 404, /RUNTIME_ERROR/);
    await rejectsWith(box.commands.interrupt("no-such-command"), 500, /RUNTIME_ERROR/);
    await rejectsWith(box.commands.getBackgroundCommandLogs("no-such-command"), 400);
    await rejectsWith(box.files.readFile("/no/such/file"), 404);
    await rejectsWith(box.files.getFileInfo(["/no/such/file"]), 404, /FILE_NOT_FOUND/);
    await rejectsWith(box.files.listDirectory({ path: "/no/such/dir" }), 404, /FILE_NOT_FOUND/);
    await rejectsWith(box.files.listDirectory({ path: "/etc/passwd" }), 400);
    await rejectsWith(box.files.search({ path: "/no/such/dir" }), 404, /FILE_NOT_FOUND/);
    await rejectsWith(box.files.moveFiles([{ src: "/no/such/file", dest: "/tmp/x" }]), 404);
    await rejectsWith(box.files.setPermissions([{ path: "/no/such/file", mode: 644 }]), 404);
    await rejectsWith(box.files.replaceContents([{ path: "/no/such/file", oldContent: "a", newContent: "b" }]), 404);
    await rejectsWith(box.commands.run("true", { workingDirectory: "/no/such/dir" }), 400, /INVALID_REQUEST_BODY/);
    const sessionErr = await rejectsWith(box.commands.createSession({ workingDirectory: "/no/such/dir" }), 400);
    assert.match(sessionErr.message, /not a directory/);
    const bad = [
      ["multipart/form-data; boundary=XyZ", "this is not multipart at all"],
      ["multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nno metadata\r\n--XyZ--\r\n"],
      ["multipart/form-data", "--XyZ\r\n\r\n"],
      ["application/json", "{}"],
    ];
    for (const [ctype, body] of bad) {
      const r = await agentFetch("/files/upload", { method: "POST", headers: { "content-type": ctype }, body });
      assert.equal(r.status, 400, `${ctype}: ${body.slice(0, 30)}`);
      const j = await r.json();
      assert.match(j.code, /^INVALID_FILE/);
      assert.ok(j.message.length > 0);
    }
    await assertAlive("bad input");
  });

  test("a command writing 100 MB of output: agent stays responsive, memory bounded", async () => {
    let bytes = 0, lines = 0, pingMs = -1;
    const t0 = Date.now();
    const exe = await box.commands.run("head -c 100000000 /dev/zero | tr '\\0' x | fold -w 1000", {}, {
      skipAccumulation: true,
      onStdout: async (m) => {
        bytes += m.text.length;
        lines++;
        if (lines === 20000) {
          // the client is busy; the agent must still answer others at once
          const p0 = Date.now();
          await assertAlive("a flood of output");
          pingMs = Date.now() - p0;
        }
      },
    });
    assert.equal(exe.exitCode, 0);
    assert.equal(bytes, 100000000);
    assert.equal(lines, 100000);
    assert.ok(pingMs >= 0 && pingMs < 2000, `ping took ${pingMs} ms during the flood`);
    const hwm = await box.commands.run("grep VmHWM /proc/$(pidof execd)/status");
    const kb = Number(/(\d+)\s*kB/.exec(stdoutOf(hwm)[0])[1]);
    assert.ok(kb < 32 * 1024, `agent peak RSS ${kb} kB`);
    console.log(`# 100 MB of output in ${Date.now() - t0} ms; agent peak RSS ${kb} kB`);
  });

  test("a fork bomb under the pids limit stops, the agent keeps answering", async () => {
    const t0 = Date.now();
    // the command's timeout SIGKILLs its process group, which the bomb's processes share (the
    // leader must still be alive then: hence the sleep)
    const bomb = box.commands.run("b() { b | b & }; b; sleep 60", { timeoutSeconds: 8 });
    await sleep(3000);
    await assertAlive("a fork bomb (during)");
    const exe = await bomb;
    assert.ok(Date.now() - t0 < 30000);
    assert.equal(exe.exitCode, -1);
    assert.deepEqual(exe.error.traceback, ["signal: killed"]);
    // the bomb's processes are gone (the agent killed the process group); new commands start again
    let count = Infinity, last = "";
    const t1 = Date.now();
    for (let i = 0; i < 60 && count > 10; i++) {
      const ps = await box.commands.run("ls -d /proc/[0-9]* | wc -l").catch((e) => ({ logs: { stdout: [] }, e }));
      // fork fails ("can't fork") until the killed processes are torn down
      const n = Number(stdoutOf(ps)[0]);
      count = Number.isInteger(n) && stdoutOf(ps).length ? n : Infinity;
      last = JSON.stringify(ps.error || ps.e?.message || stdoutOf(ps));
      if (count > 10) await sleep(500);
    }
    assert.ok(count <= 10, `processes left in the sandbox: ${count} (${last})`);
    console.log(`# fork bomb: killed after ${t1 - t0} ms; commands start again after ${Date.now() - t1} ms`);
    await assertAlive("a fork bomb (after)");
  });

  test("commands with uid/gid/envs (setgid before setuid, supplementary groups cleared); gid alone is a 400", async () => {
    let exe = await box.commands.run("id -u; id -g; id -G; echo \"$FOO|$PATH\"", { uid: 4242, gid: 4343, envs: { FOO: "bar baz", PATH: "/bin:/usr/bin" } });
    assert.equal(exe.exitCode, 0, JSON.stringify(exe.error));
    assert.deepEqual(stdoutOf(exe), ["4242", "4343", "4343", "bar baz|/bin:/usr/bin"]);
    exe = await box.commands.run("id -u; id -g", { uid: 4242 }); // no passwd entry: gid = uid
    assert.deepEqual(stdoutOf(exe), ["4242", "4242"]);
    exe = await box.commands.run("touch /root/x 2>&1 || echo denied", { uid: 4242 });
    assert.match(stdoutOf(exe).join("\n"), /denied/);
    // the SDK itself refuses gid without uid before sending; the agent refuses it too (and a bad uid)
    await assert.rejects(box.commands.run("true", { gid: 4343 }), /uid is required/);
    for (const body of [{ command: "true", gid: 4343 }, { command: "true", uid: -1 }, { command: "true", uid: "0" }, { command: "true", envs: ["A=1"] }]) {
      const r = await agentFetch("/command", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal((await r.json()).code, "INVALID_REQUEST_BODY");
    }
  });

  test("files: listDirectory (depth, lexical order, symlinks not followed) and line-based reads through the endpoint", async () => {
    const root = `/tmp/ls-${Date.now()}`;
    await box.commands.run(`mkdir -p ${root}/b/deep ${root}/a && echo x > ${root}/b/f && ln -s /etc ${root}/c && printf 'l1\\r\\nl2\\nl3\\nl4' > ${root}/a/t.txt`);
    let list = await box.files.listDirectory({ path: root });
    assert.deepEqual(list.map((e) => [e.path, e.type]), [[`${root}/a`, "directory"], [`${root}/b`, "directory"], [`${root}/c`, "symlink"]]);
    list = await box.files.listDirectory({ path: root, depth: 2 });
    assert.deepEqual(list.map((e) => e.path), [`${root}/a`, `${root}/a/t.txt`, `${root}/b`, `${root}/b/deep`, `${root}/b/f`, `${root}/c`]);
    const f = list.find((e) => e.path === `${root}/b/f`);
    assert.equal(f.size, 2);
    assert.equal(typeof f.owner, "string");
    assert.ok(f.modifiedAt instanceof Date && !Number.isNaN(f.modifiedAt.getTime()));
    await rejectsWith(box.files.listDirectory({ path: `${root}/c` }), 400); // a symlink path is refused
    // line-based reads: the SDK (0.1.11) has no line options, so plain fetch at the agent endpoint it resolved
    let r = await agentFetch(`/files/download?path=${encodeURIComponent(`${root}/a/t.txt`)}&offset=1&limit=2`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.equal(await r.text(), "l1\nl2");
    r = await agentFetch(`/files/download?path=${encodeURIComponent(`${root}/a/t.txt`)}&offset=4`);
    assert.equal(await r.text(), "l4");
    r = await agentFetch(`/files/download?path=${encodeURIComponent(`${root}/a/t.txt`)}&limit=0`);
    assert.equal(r.status, 400);
    assert.equal(await box.files.readFile(`${root}/a/t.txt`), "l1\r\nl2\nl3\nl4"); // without them: the bytes
    await box.commands.run(`rm -rf ${root}`);
  });

  test("PTY over WebSocket through the SERVER proxy (/sandboxes/{id}/proxy/44772/pty/{id}/ws)", async () => {
    const base = `${URL_}/sandboxes/${box.id}/proxy/44772`;
    const H = { ...execd.headers, "OPEN-SANDBOX-API-KEY": API_KEY };
    let r = await fetch(`${base}/pty`, { method: "POST", headers: { ...H, "content-type": "application/json" }, body: JSON.stringify({ cwd: "/tmp" }) });
    assert.equal(r.status, 201, await r.clone().text());
    const { session_id: id } = await r.json();
    const ws = await wsConnect(`${base}/pty/${id}/ws`, H);
    assert.equal(ws.status, 101, ws.body);
    await ws.waitFor((f) => jsonFrames(f).some((j) => j.type === "connected"));
    assert.equal(jsonFrames(ws.frames)[0].mode, "pty");
    ws.sendBinary(Buffer.concat([Buffer.from([0]), Buffer.from("echo via-proxy-$((40+2)); tty; pwd\n")]));
    await ws.waitFor((f) => /via-proxy-42/.test(outputOf(f)) && /\/dev\/pts\//.test(outputOf(f)) && /\/tmp\r\n/.test(outputOf(f)));
    ws.sendText(JSON.stringify({ type: "ping" }));
    await ws.waitFor((f) => jsonFrames(f).some((j) => j.type === "pong"));
    // a 64 KiB paste arrives whole (stdin back-pressure through two proxies)
    ws.sendBinary(Buffer.concat([Buffer.from([0]), Buffer.from(`cat > /tmp/paste-${id} <<'EOF'\n` + "p".repeat(1000).concat("\n").repeat(64) + "EOF\nwc -c < /tmp/paste-" + id + "\n")]));
    await ws.waitFor((f) => /\b64064\b/.test(outputOf(f)), 20000);
    ws.sendBinary(Buffer.concat([Buffer.from([0]), Buffer.from("exit 5\n")]));
    assert.deepEqual(await ws.closed, { code: 1000, reason: "process exited" });
    assert.deepEqual(jsonFrames(ws.frames).at(-1), { type: "exit", exit_code: 5 });
    r = await fetch(`${base}/pty/${id}`, { headers: H });
    assert.equal((await r.json()).running, false);
    r = await fetch(`${base}/pty/${id}`, { method: "DELETE", headers: H });
    assert.equal(r.status, 200);
    await assertAlive("a PTY session");
  });

  test("the agent's /proxy/{port}: HTTP and a WebSocket to a backend in the sandbox", { skip: !HAVE_WS && `${WS_IMAGE} not found (tests/images/build-ws-echo.sh builds it)` }, async () => {
    const ep = await wsBox.getEndpoint(WS_PORT);
    assert.match(ep.endpoint, new RegExp(`/proxy/${WS_PORT}$`), "a non-published port is served through the agent");
    const base = `http://${ep.endpoint}`;
    let r;
    for (let i = 0; i < 50; i++) {
      r = await fetch(`${base}/`, { headers: ep.headers });
      if (r.status === 200) break;
      await sleep(100);
    }
    assert.equal(r.status, 200);
    assert.equal(await r.text(), "ws-echo ok");
    r = await fetch(`${base}/`);
    assert.equal(r.status, 401, "the agent's proxy needs the token");

    const u = new URL(base);
    const echoed = await wsEcho(u.hostname, Number(u.port), `${u.pathname}/ws`, ep.headers, ["hello", "x".repeat(70000)]);
    assert.deepEqual(echoed, ["hello", "x".repeat(70000)]);
  });
});

// A minimal WebSocket client (RFC 6455) on a raw socket: handshake, masked text frames out, the
// echoed frames back. Returns the texts received.
function wsEcho(host, port, path, headers, messages) {
  return new Promise((resolve, reject) => {
    const key = crypto.randomBytes(16).toString("base64");
    const accept = crypto.createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
    const sock = net.connect(port, host);
    const got = [];
    let buf = Buffer.alloc(0), upgraded = false;
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`WebSocket timed out; got ${got.length}`)); }, 15000);
    const frame = (text) => {
      const payload = Buffer.from(text), mask = crypto.randomBytes(4);
      let head;
      if (payload.length < 126) head = Buffer.from([0x81, 0x80 | payload.length]);
      else if (payload.length < 65536) head = Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 255]);
      else {
        head = Buffer.alloc(10);
        head[0] = 0x81;
        head[1] = 0x80 | 127;
        head.writeBigUInt64BE(BigInt(payload.length), 2);
      }
      const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
      return Buffer.concat([head, mask, masked]);
    };
    sock.on("connect", () => {
      const extra = Object.entries(headers || {}).map(([k, v]) => `${k}: ${v}\r\n`).join("");
      sock.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\n${extra}Upgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    sock.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        if (!/^HTTP\/1\.1 101 /.test(head) || !head.includes(accept)) {
          clearTimeout(timer);
          sock.destroy();
          return reject(new Error(`no upgrade: ${head}`));
        }
        upgraded = true;
        buf = buf.subarray(end + 4);
        for (const m of messages) sock.write(frame(m));
      }
      for (;;) {
        if (buf.length < 2) return;
        let len = buf[1] & 127, off = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
        else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (buf.length < off + len) return;
        got.push(buf.subarray(off, off + len).toString());
        buf = buf.subarray(off + len);
        if (got.length === messages.length) {
          clearTimeout(timer);
          sock.destroy();
          return resolve(got);
        }
      }
    });
    sock.on("error", (e) => { clearTimeout(timer); reject(e); });
  });
}
