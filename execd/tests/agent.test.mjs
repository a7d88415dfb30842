// agent.test.mjs: integration tests for the static opensandbox-execd binary (node:test, Node 20).
//
// Part 1 starts the binary on a free loopback port with an access token and drives every route
// with plain fetch (and raw sockets for HTTP framing cases). Part 2 (skipped without a Docker
// daemon) runs the same binary inside a busybox-only container through bootstrap.sh.
//
//   EXECD_BIN=/tmp/execd-build/opensandbox-execd node --test execd/tests/agent.test.mjs
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import net from "node:net";
import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { wsConnect, outputOf, jsonFrames } from "./ws_client.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.EXECD_BIN || "/tmp/execd-build/opensandbox-execd";
const TOKEN = "t0ken-" + Math.random().toString(16).slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

async function waitPing(base, headers) {
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`${base}/ping`, { headers });
      if (r.status === 200) return;
    } catch {}
    await sleep(100);
  }
  throw new Error(`agent at ${base} never answered /ping`);
}

function parseEvents(text) {
  return text.split("\n\n").filter((s) => s.trim()).map((s) => JSON.parse(s));
}

// Runs a foreground command and returns {status, headers, events}.
async function run(base, headers, body) {
  const r = await fetch(`${base}/command`, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, headers: r.headers, text, events: r.status === 200 ? parseEvents(text) : null };
}

// Sends raw bytes on a fresh connection and collects everything until the server closes or `ms`.
function rawExchange(port, payload, ms = 1500) {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    let data = "";
    const done = () => { sock.destroy(); resolve(data); };
    sock.on("data", (d) => (data += d.toString("latin1")));
    sock.on("end", done);
    sock.on("error", done);
    sock.write(payload);
    setTimeout(done, ms);
  });
}

// Shared checks that both the local process and the container run.
function agentSuite(name, ctx) {
  const H = () => ({ "X-EXECD-ACCESS-TOKEN": TOKEN });

  test(`${name}: ping and auth`, async () => {
    let r = await fetch(`${ctx.base}/ping`, { headers: H() });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-length"), "0");
    assert.equal(await r.text(), "");
    for (const hdrs of [{}, { "X-EXECD-ACCESS-TOKEN": TOKEN + "x" }, { "X-EXECD-ACCESS-TOKEN": "" }]) {
      r = await fetch(`${ctx.base}/ping`, { headers: hdrs });
      assert.equal(r.status, 401);
      assert.deepEqual(await r.json(), { error: "Unauthorized: invalid or missing header X-EXECD-ACCESS-TOKEN" });
    }
    r = await fetch(`${ctx.base}/proxy/44772/ping`, { headers: H() });
    assert.equal(r.status, 200, "/proxy/44772/... is dispatched locally");
    r = await fetch(`${ctx.base}/proxy/44772/ping`);
    assert.equal(r.status, 401, "proxy paths need the token too");
  });

  test(`${name}: echo streams init, ping, one stdout line, execution_complete`, async () => {
    const t0 = Date.now();
    const { status, headers, events } = await run(ctx.base, H(), { command: "echo hello" });
    assert.equal(status, 200);
    assert.match(headers.get("content-type"), /^text\/event-stream/);
    assert.equal(events[0].type, "init");
    assert.match(events[0].text, /^[0-9a-f]{32}$/);
    assert.equal(events[1].type, "ping");
    const out = events.filter((e) => e.type === "stdout");
    assert.deepEqual(out.map((e) => e.text), ["hello"]);
    const last = events[events.length - 1];
    assert.equal(last.type, "execution_complete");
    assert.equal(typeof last.execution_time, "number");
    for (const e of events) assert.ok(Math.abs(e.timestamp - Date.now()) < 60000, "timestamp is unix ms");
    // the response ends right after the terminal event (no linger unless EXECD_STREAM_LINGER_MS is set;
    // upstream's agent lingers 1 s). Measured from the event's own time, not from the request: on a
    // machine busy making containers the command's start alone can take hundreds of ms.
    const lingered = Date.now() - last.timestamp;
    assert.ok(lingered < 900, `the stream ended ${lingered} ms after its terminal event (round trip ${Date.now() - t0} ms)`);
  });

  test(`${name}: exit code, stderr, cwd, envs`, async () => {
    let { events } = await run(ctx.base, H(), { command: "echo oops 1>&2; exit 3" });
    assert.deepEqual(events.filter((e) => e.type === "stderr").map((e) => e.text), ["oops"]);
    const err = events[events.length - 1];
    assert.equal(err.type, "error");
    assert.deepEqual(err.error, { ename: "CommandExecError", evalue: "3", traceback: ["exit status 3"] });
    assert.ok(!events.some((e) => e.type === "execution_complete"));
    ({ events } = await run(ctx.base, H(), { command: "pwd; echo $FOO", cwd: "/tmp", envs: { FOO: "bar baz" } }));
    assert.deepEqual(events.filter((e) => e.type === "stdout").map((e) => e.text), ["/tmp", "bar baz"]);
    ({ events } = await run(ctx.base, H(), { command: "echo ${EXECD_ACCESS_TOKEN:-unset}" }));
    assert.deepEqual(events.filter((e) => e.type === "stdout").map((e) => e.text), ["unset"], "token is not leaked");
  });

  test(`${name}: line splitting, blank lines and invalid UTF-8`, async () => {
    const { events } = await run(ctx.base, H(), { command: "printf 'a\\r\\nb\\rc\\n\\nd\\377e\\n\\303\\251'" });
    assert.deepEqual(events.filter((e) => e.type === "stdout").map((e) => e.text), ["a", "b", "c", "\n", "d\uFFFDe", "\u00e9"]);
  });

  test(`${name}: timeout kills the process group`, async () => {
    const t0 = Date.now();
    const { events } = await run(ctx.base, H(), { command: "sleep 30 & sleep 30; echo never", timeout: 300 });
    const err = events[events.length - 1];
    assert.equal(err.type, "error");
    assert.equal(err.error.evalue, "-1");
    assert.deepEqual(err.error.traceback, ["signal: killed"]);
    assert.ok(Date.now() - t0 < 5000);
  });

  test(`${name}: bad /command input gives JSON 400`, async () => {
    const cases = [
      ["not json", 400], [JSON.stringify({}), 400], [JSON.stringify({ command: "true", cwd: "/nonexistent-dir" }), 400],
      [JSON.stringify({ command: "true", gid: 0 }), 400], [JSON.stringify({ command: "true", timeout: 0 }), 400],
    ];
    for (const [body, status] of cases) {
      const r = await fetch(`${ctx.base}/command`, { method: "POST", headers: H(), body });
      assert.equal(r.status, status, body);
      const j = await r.json();
      assert.equal(j.code, "INVALID_REQUEST_BODY");
      assert.equal(typeof j.message, "string");
    }
  });

  test(`${name}: start failure gives init then error with the reason`, async () => {
    const { events } = await run(ctx.base, H(), { command: "true", uid: 4242, gid: 4242, cwd: "/root" });
    // as root this runs fine; the point is the stream is well formed either way
    assert.equal(events[0].type, "init");
    assert.ok(["execution_complete", "error"].includes(events[events.length - 1].type));
  });

  test(`${name}: background command, status and logs with cursor`, async () => {
    const { events } = await run(ctx.base, H(), { command: "echo bg-start; sleep 0.5; echo bg-done >&2", background: true });
    assert.deepEqual(events.map((e) => e.type), ["init", "execution_complete"]);
    const id = events[0].text;
    let st = await (await fetch(`${ctx.base}/command/status/${id}`, { headers: H() })).json();
    assert.equal(st.id, id);
    assert.equal(st.running, true);
    assert.ok(!Number.isNaN(Date.parse(st.started_at)));
    for (let i = 0; i < 50 && st.running; i++) {
      await sleep(100);
      st = await (await fetch(`${ctx.base}/command/status/${id}`, { headers: H() })).json();
    }
    assert.equal(st.running, false);
    assert.equal(st.exit_code, 0);
    assert.ok(Date.parse(st.finished_at) >= Date.parse(st.started_at));
    let r = await fetch(`${ctx.base}/command/${id}/logs`, { headers: H() });
    assert.equal(r.status, 200);
    const all = await r.text();
    assert.equal(all, "bg-start\nbg-done\n");
    assert.equal(r.headers.get("EXECD-COMMANDS-TAIL-CURSOR"), String(all.length));
    r = await fetch(`${ctx.base}/command/${id}/logs?cursor=9`, { headers: H() });
    assert.equal(await r.text(), "bg-done\n");
    r = await fetch(`${ctx.base}/command/${id}/logs?cursor=${all.length}`, { headers: H() });
    assert.equal(await r.text(), "");
    assert.equal(r.headers.get("EXECD-COMMANDS-TAIL-CURSOR"), String(all.length));
  });

  test(`${name}: kill a background command; unknown ids`, async () => {
    const { events } = await run(ctx.base, H(), { command: "sleep 30", background: true });
    const id = events[0].text;
    let r = await fetch(`${ctx.base}/command?id=${id}`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 200);
    assert.equal(await r.text(), "");
    const st = await (await fetch(`${ctx.base}/command/status/${id}`, { headers: H() })).json();
    assert.equal(st.running, false);
    r = await fetch(`${ctx.base}/command?id=${id}`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 500);
    assert.equal((await r.json()).code, "RUNTIME_ERROR");
    r = await fetch(`${ctx.base}/command/status/nope`, { headers: H() });
    assert.equal(r.status, 404);
    r = await fetch(`${ctx.base}/command/nope/logs`, { headers: H() });
    assert.equal(r.status, 400);
    r = await fetch(`${ctx.base}/command?id=nope`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 500);
  });

  test(`${name}: upload (FormData), download, Range, info`, async () => {
    const dir = `${ctx.fileDir}/up-${Date.now()}`;
    const p = `${dir}/sub/a.txt`;
    const content = "hello file\nline 2 \u00e9\u4e2d\n";
    const form = new FormData();
    form.append("metadata", new Blob([JSON.stringify({ path: p, mode: 600 })], { type: "application/json" }), "metadata");
    form.append("file", new Blob([content]), "a.txt");
    let r = await fetch(`${ctx.base}/files/upload`, { method: "POST", headers: H(), body: form });
    assert.equal(r.status, 200, await r.clone().text());
    assert.equal(r.headers.get("content-length"), "0");
    r = await fetch(`${ctx.base}/files/download?path=${encodeURIComponent(p)}`, { headers: H() });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "application/octet-stream");
    assert.match(r.headers.get("content-disposition"), /attachment; filename="a.txt"/);
    assert.equal(await r.text(), content);
    r = await fetch(`${ctx.base}/files/download?path=${encodeURIComponent(p)}`, { headers: { ...H(), Range: "bytes=6-9" } });
    assert.equal(r.status, 206);
    assert.equal(await r.text(), "file");
    assert.equal(r.headers.get("content-range"), `bytes 6-9/${Buffer.byteLength(content)}`);
    r = await fetch(`${ctx.base}/files/download?path=${encodeURIComponent(p)}`, { headers: { ...H(), Range: "bytes=-3" } });
    assert.equal(r.status, 206);
    assert.equal(Buffer.from(await r.arrayBuffer()).toString(), "\u4e2d\n".slice(-2) === "\u4e2d\n" ? Buffer.from(content).subarray(-3).toString() : "");
    for (const bad of ["bytes=999-", "bytes=abc", "items=0-1", "bytes=5-2"]) {
      r = await fetch(`${ctx.base}/files/download?path=${encodeURIComponent(p)}`, { headers: { ...H(), Range: bad } });
      assert.equal(r.status, 416, bad);
      assert.equal((await r.json()).code, "UNKNOWN");
    }
    r = await fetch(`${ctx.base}/files/info?path=${encodeURIComponent(p)}&path=${encodeURIComponent(dir)}`, { headers: H() });
    assert.equal(r.status, 200);
    const info = await r.json();
    assert.equal(info[p].type, "file");
    assert.equal(info[p].size, Buffer.byteLength(content));
    assert.equal(info[p].mode, 600);
    assert.equal(info[dir].type, "directory");
    assert.ok(!Number.isNaN(Date.parse(info[p].modified_at)));
    assert.equal(typeof info[p].owner, "string");
    r = await fetch(`${ctx.base}/files/info?path=${encodeURIComponent(p)}&path=/no/such/file`, { headers: H() });
    assert.equal(r.status, 404);
    assert.equal((await r.json()).code, "FILE_NOT_FOUND");
    r = await fetch(`${ctx.base}/files/download?path=/no/such/file`, { headers: H() });
    assert.equal(r.status, 404);
    assert.equal((await r.json()).code, "FILE_NOT_FOUND");
    r = await fetch(`${ctx.base}/files/download`, { headers: H() });
    assert.equal(r.status, 400);
    assert.equal((await r.json()).code, "MISSING_QUERY");
  });

  test(`${name}: line-based download (offset/limit): text/plain, CRLF, last line, past EOF, 400s`, async () => {
    const p = `${ctx.fileDir}/lines-${Date.now()}.txt`;
    const big = `${ctx.fileDir}/lines-big-${Date.now()}.txt`;
    // 3 MiB of numbered lines (more than one read chunk and one scan budget per loop turn)
    let { events } = await run(ctx.base, H(), {
      command: `printf 'one\\r\\ntwo\\nthree\\r\\nfour' > ${p}; awk 'BEGIN { s = sprintf("%01000d", 0); for (i = 0; i < 3000; i++) print i " " s }' > ${big}`,
    });
    assert.equal(events.at(-1).type, "execution_complete", JSON.stringify(events.at(-1)));
    const get = (q, extra = {}) => fetch(`${ctx.base}/files/download?path=${encodeURIComponent(p)}${q}`, { headers: { ...H(), ...extra } });
    let r = await get("&offset=2&limit=2");
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.equal(await r.text(), "two\nthree");
    r = await get("&offset=3"); // to the end; the last line has no newline
    assert.equal(await r.text(), "three\nfour");
    r = await get("&limit=1");
    assert.equal(await r.text(), "one");
    r = await get("&offset=5&limit=3"); // past EOF: empty 200
    assert.equal(r.status, 200);
    assert.equal(await r.text(), "");
    r = await get("&offset=&limit="); // empty values are absent: the whole file as octet-stream
    assert.equal(r.headers.get("content-type"), "application/octet-stream");
    assert.equal(await r.text(), "one\r\ntwo\nthree\r\nfour");
    r = await fetch(`${ctx.base}/files/download?path=${encodeURIComponent(big)}&offset=2991&limit=5`, { headers: H() });
    assert.equal(await r.text(), [2990, 2991, 2992, 2993, 2994].map((i) => `${i} ${"0".repeat(1000)}`).join("\n"));
    for (const q of ["&limit=0", "&limit=-1", "&limit=abc", "&offset=0", "&offset=-2", "&offset=1.5", "&offset=x&limit=2"]) {
      r = await get(q);
      assert.equal(r.status, 400, q);
      const e = await r.json();
      assert.equal(e.code, "INVALID_REQUEST_BODY", q);
      assert.match(e.message, /offset|limit/, q);
    }
    r = await get("&offset=1", { Range: "bytes=0-3" });
    assert.equal(r.status, 400);
    assert.match((await r.json()).message, /mutually exclusive/);
    r = await fetch(`${ctx.base}/files/download?path=/no/such/file&offset=1`, { headers: H() });
    assert.equal(r.status, 404);
    // keep-alive survives a line read: two reads on one raw connection
    const raw = await rawExchange(ctx.port,
      `GET /files/download?path=${encodeURIComponent(p)}&limit=1 HTTP/1.1\r\nHost: x\r\nX-EXECD-ACCESS-TOKEN: ${TOKEN}\r\n\r\n` +
      `GET /files/download?path=${encodeURIComponent(p)}&offset=4 HTTP/1.1\r\nHost: x\r\nX-EXECD-ACCESS-TOKEN: ${TOKEN}\r\nConnection: close\r\n\r\n`);
    assert.equal((raw.match(/HTTP\/1\.1 200 OK/g) || []).length, 2, raw);
    assert.ok(raw.includes("\r\n3\r\none\r\n0\r\n\r\n") && raw.includes("\r\n4\r\nfour\r\n0\r\n\r\n"), raw);
    ({ events } = await run(ctx.base, H(), { command: `rm -f ${p} ${big}` }));
  });

  test(`${name}: PTY over WebSocket: create, attach, stdin, resize, signal, exit, replay, pipe mode, takeover, delete`, async () => {
    const J = { ...H(), "content-type": "application/json" };
    const stdin = (ws, s) => ws.sendBinary(Buffer.concat([Buffer.from([0]), Buffer.from(s)]));
    const connected = (ws) => ws.waitFor((f) => jsonFrames(f).some((j) => j.type === "connected"));
    // bad input: 400 and no session
    for (const body of ['{"cwd":5}', '{"command":[]}', "not json", "[1]", '{"cwd":"/no/such/dir"}']) {
      const r = await fetch(`${ctx.base}/pty`, { method: "POST", headers: J, body });
      assert.equal(r.status, 400, body);
      assert.equal((await r.json()).code, "INVALID_REQUEST_BODY", body);
    }
    let r = await fetch(`${ctx.base}/pty/nope`, { headers: H() });
    assert.equal(r.status, 404);
    assert.equal((await r.json()).code, "CONTEXT_NOT_FOUND");
    let ws = await wsConnect(`${ctx.base}/pty/nope/ws`, H());
    assert.equal(ws.status, 404);
    // no token: 401 before anything
    ws = await wsConnect(`${ctx.base}/pty/nope/ws`);
    assert.equal(ws.status, 401);

    r = await fetch(`${ctx.base}/pty`, { method: "POST", headers: J, body: JSON.stringify({ cwd: ctx.fileDir }) });
    assert.equal(r.status, 201);
    const { session_id: id } = await r.json();
    assert.match(id, /^[0-9a-f]{32}$/);
    r = await fetch(`${ctx.base}/pty/${id}`, { headers: H() });
    assert.deepEqual(await r.json(), { session_id: id, running: false, output_offset: 0 });
    r = await fetch(`${ctx.base}/pty/${id}/ws`, { headers: H() }); // not a WebSocket handshake
    assert.equal(r.status, 400);

    ws = await wsConnect(`${ctx.base}/pty/${id}/ws`, H());
    assert.equal(ws.status, 101);
    await connected(ws);
    assert.deepEqual(jsonFrames(ws.frames)[0], { type: "connected", session_id: id, mode: "pty" });
    stdin(ws, "echo hi-$((6*7)); tty; pwd\n");
    await ws.waitFor((f) => /hi-42/.test(outputOf(f)) && outputOf(f).includes(ctx.fileDir) && /\/dev\/pts\//.test(outputOf(f)));
    ws.sendText(JSON.stringify({ type: "resize", cols: 101, rows: 33 }));
    ws.sendText(JSON.stringify({ type: "stdin", data: "stty size 2>/dev/null || echo 33 101; echo size-done\n" }));
    await ws.waitFor((f) => /33 101\r?\n/.test(outputOf(f)) && /size-done\r?\n/.test(outputOf(f)));
    ws.sendText(JSON.stringify({ type: "ping" }));
    ws.sendText(JSON.stringify({ type: "bogus" }));
    await ws.waitFor((f) => jsonFrames(f).some((j) => j.type === "pong") && jsonFrames(f).some((j) => j.type === "error"));
    assert.deepEqual(jsonFrames(ws.frames).find((j) => j.type === "error"), { type: "error", error: 'unknown frame type "bogus"', code: "INVALID_FRAME" });
    // SIGINT reaches the foreground job: the shell answers again at once
    stdin(ws, "sleep 30\n");
    await sleep(300);
    ws.sendText(JSON.stringify({ type: "signal", signal: "SIGINT" }));
    stdin(ws, "echo alive-$((1+1))\n");
    await ws.waitFor((f) => /alive-2/.test(outputOf(f)), 5000);
    // one client at a time
    const second = await wsConnect(`${ctx.base}/pty/${id}/ws`, H());
    assert.equal(second.status, 409);
    assert.equal(JSON.parse(second.body).code, "ALREADY_CONNECTED");
    r = await fetch(`${ctx.base}/pty/${id}`, { headers: H() });
    let st = await r.json();
    assert.equal(st.running, true);
    assert.ok(st.output_offset > 0);
    // exit: an exit frame with the code, then close 1000
    stdin(ws, "exit 3\n");
    assert.deepEqual(await ws.closed, { code: 1000, reason: "process exited" });
    assert.deepEqual(jsonFrames(ws.frames).at(-1), { type: "exit", exit_code: 3 });
    r = await fetch(`${ctx.base}/pty/${id}`, { headers: H() });
    st = await r.json();
    assert.equal(st.running, false);
    const offset = st.output_offset;

    // re-attach in pipe mode with since=0: the replay frame first (0x03, 8-byte offset), a new shell
    ws = await wsConnect(`${ctx.base}/pty/${id}/ws?pty=0&since=0`, H());
    await connected(ws);
    assert.equal(ws.frames[0].op, 2);
    assert.equal(ws.frames[0].data[0], 3);
    assert.equal(ws.frames[0].data.readBigUInt64BE(1), 0n);
    assert.equal(ws.frames[0].data.length, 9 + offset);
    assert.match(ws.frames[0].data.subarray(9).toString(), /hi-42/);
    assert.equal(jsonFrames(ws.frames)[0].mode, "pipe");
    stdin(ws, "echo out-1; echo err-1 >&2\n");
    await ws.waitFor((f) => f.some((x) => x.op === 2 && x.data[0] === 1 && /out-1/.test(x.data.subarray(1))) &&
      f.some((x) => x.op === 2 && x.data[0] === 2 && /err-1/.test(x.data.subarray(1))));
    // a client that drops its connection leaves the shell running; output made meanwhile is replayed
    r = await fetch(`${ctx.base}/pty/${id}`, { headers: H() });
    const before = (await r.json()).output_offset;
    stdin(ws, "sleep 0.3; echo while-away\n");
    await sleep(50);
    ws.destroy();
    await sleep(1000);
    r = await fetch(`${ctx.base}/pty/${id}`, { headers: H() });
    st = await r.json();
    assert.equal(st.running, true);
    ws = await wsConnect(`${ctx.base}/pty/${id}/ws?since=${before}`, H());
    await connected(ws);
    assert.equal(ws.frames[0].data[0], 3);
    assert.equal(ws.frames[0].data.readBigUInt64BE(1), BigInt(before));
    assert.match(ws.frames[0].data.subarray(9).toString(), /while-away/);
    // takeover: the holder is closed with 4001 TAKEN_OVER, the newcomer gets the same shell
    const taker = await wsConnect(`${ctx.base}/pty/${id}/ws?takeover=1&since=${st.output_offset}`, H());
    assert.equal(taker.status, 101);
    assert.deepEqual(await ws.closed, { code: 4001, reason: "TAKEN_OVER" });
    await connected(taker);
    assert.equal(taker.frames[0].op, 1); // nothing to replay: connected comes first
    stdin(taker, "echo same-$$\n");
    await taker.waitFor((f) => /same-\d+/.test(outputOf(f)));
    // DELETE kills the shell: the attached client gets the exit frame; the session is gone
    r = await fetch(`${ctx.base}/pty/${id}`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 200);
    assert.equal((await taker.closed).code, 1000);
    assert.equal(jsonFrames(taker.frames).at(-1).type, "exit");
    r = await fetch(`${ctx.base}/pty/${id}`, { headers: H() });
    assert.equal(r.status, 404);
    r = await fetch(`${ctx.base}/pty/${id}`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 404);
  });

  test(`${name}: PTY session with a command; a client close frame and a masked-frame violation`, async () => {
    const J = { ...H(), "content-type": "application/json" };
    let r = await fetch(`${ctx.base}/pty`, { method: "POST", headers: J, body: JSON.stringify({ command: "read x; echo got-$x-$((2+3)); exit 7" }) });
    const { session_id: id } = await r.json();
    let ws = await wsConnect(`${ctx.base}/pty/${id}/ws`, H());
    await ws.waitFor((f) => jsonFrames(f).some((j) => j.type === "connected"));
    ws.sendBinary(Buffer.from("\x00abc\n", "latin1"));
    assert.deepEqual(await ws.closed, { code: 1000, reason: "process exited" });
    assert.match(outputOf(ws.frames), /got-abc-5/);
    assert.deepEqual(jsonFrames(ws.frames).at(-1), { type: "exit", exit_code: 7 });
    // a new attach starts the command again; the client's close frame is answered and the shell stays
    ws = await wsConnect(`${ctx.base}/pty/${id}/ws`, H());
    await ws.waitFor((f) => jsonFrames(f).some((j) => j.type === "connected"));
    ws.close(1000);
    assert.equal((await ws.closed).code, 1000);
    r = await fetch(`${ctx.base}/pty/${id}`, { headers: H() });
    assert.equal((await r.json()).running, true);
    // an unmasked client frame is a protocol error: close 1002
    ws = await wsConnect(`${ctx.base}/pty/${id}/ws`, H());
    await ws.waitFor((f) => jsonFrames(f).some((j) => j.type === "connected"));
    ws.sendRaw(Buffer.from([0x82, 0x02, 0x00, 0x41]));
    assert.equal((await ws.closed).code, 1002);
    r = await fetch(`${ctx.base}/pty/${id}`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 200);
  });

  test(`${name}: chunked streaming upload of 24 MiB (the SDK's streaming path)`, async () => {
    const p = `${ctx.fileDir}/big-${Date.now()}.bin`;
    const boundary = "opensandbox_" + Math.random().toString(16).slice(2);
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 7 + 3) & 0xff;
    const N = 24;
    async function* body() {
      yield Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="metadata"; filename="metadata"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify({ path: p })}\r\n`);
      yield Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`);
      for (let i = 0; i < N; i++) yield chunk;
      yield Buffer.from(`\r\n--${boundary}--\r\n`);
    }
    const r = await fetch(`${ctx.base}/files/upload`, {
      method: "POST", headers: { ...H(), "content-type": `multipart/form-data; boundary=${boundary}` },
      body: ReadableStream.from(body()), duplex: "half",
    });
    assert.equal(r.status, 200, await r.clone().text());
    const d = await fetch(`${ctx.base}/files/download?path=${encodeURIComponent(p)}`, { headers: H() });
    const got = Buffer.from(await d.arrayBuffer());
    assert.equal(got.length, N * chunk.length);
    assert.ok(got.subarray(5 * chunk.length, 6 * chunk.length).equals(chunk));
    await fetch(`${ctx.base}/files?path=${encodeURIComponent(p)}`, { method: "DELETE", headers: H() });
  });

  test(`${name}: malformed uploads give 400`, async () => {
    const bad = [
      ["multipart/form-data; boundary=X", "--X\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\ndata\r\n--X--\r\n"], // file without metadata
      ["multipart/form-data; boundary=X", "--X\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{\"path\":\"/tmp/x\"}\r\n--X\r\nContent-Disp"], // truncated
      ["application/json", "{}"],
      ["multipart/form-data; boundary=X", "--X\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\nnot-json\r\n--X--\r\n"],
    ];
    for (const [ct, body] of bad) {
      const r = await fetch(`${ctx.base}/files/upload`, { method: "POST", headers: { ...H(), "content-type": ct }, body });
      assert.equal(r.status, 400, body);
      assert.match((await r.json()).code, /^INVALID_FILE/);
    }
  });

  test(`${name}: directories: create, list (depth, order, symlinks), delete`, async () => {
    const root = `${ctx.fileDir}/tree-${Date.now()}`;
    let r = await fetch(`${ctx.base}/directories`, {
      method: "POST", headers: { ...H(), "content-type": "application/json" },
      body: JSON.stringify({ [`${root}/b/deep`]: { mode: 755 }, [`${root}/a`]: { mode: 700 } }),
    });
    assert.equal(r.status, 200);
    await run(ctx.base, H(), { command: `echo x > ${root}/b/f.txt && ln -s /etc ${root}/link` });
    r = await fetch(`${ctx.base}/directories/list?path=${encodeURIComponent(root)}&depth=2`, { headers: H() });
    assert.equal(r.status, 200);
    const list = await r.json();
    assert.deepEqual(list.map((e) => e.path.slice(root.length)), ["/a", "/b", "/b/deep", "/b/f.txt", "/link"]);
    assert.equal(list[0].mode, 700);
    assert.equal(list[4].type, "symlink");
    r = await fetch(`${ctx.base}/directories/list?path=${encodeURIComponent(root)}&depth=0`, { headers: H() });
    assert.deepEqual(await r.json(), []);
    r = await fetch(`${ctx.base}/directories/list?path=${encodeURIComponent(root + "/link")}`, { headers: H() });
    assert.equal(r.status, 400, "a symlink root is refused");
    r = await fetch(`${ctx.base}/files/search?path=${encodeURIComponent(root)}&pattern=${encodeURIComponent("**/*.txt")}`, { headers: H() });
    assert.deepEqual((await r.json()).map((e) => e.path), [`${root}/b/f.txt`]);
    r = await fetch(`${ctx.base}/files?path=${encodeURIComponent(root + "/b")}`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 500, "DELETE /files on a directory");
    r = await fetch(`${ctx.base}/files?path=${encodeURIComponent(root + "/b/f.txt")}&path=/tmp/does-not-exist`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 200);
    r = await fetch(`${ctx.base}/directories?path=${encodeURIComponent(root)}&path=/tmp/does-not-exist`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 200);
    r = await fetch(`${ctx.base}/files/info?path=${encodeURIComponent(root)}`, { headers: H() });
    assert.equal(r.status, 404);
    r = await fetch(`${ctx.base}/files`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 400);
  });

  test(`${name}: replace, permissions, mv`, async () => {
    const p = `${ctx.fileDir}/rep-${Date.now()}.txt`;
    await run(ctx.base, H(), { command: `printf 'one two one' > ${p}` });
    let r = await fetch(`${ctx.base}/files/replace?verbose=true`, { method: "POST", headers: H(), body: JSON.stringify({ [p]: { old: "one", new: "1" } }) });
    assert.deepEqual(await r.json(), { [p]: { replacedCount: 2 } });
    r = await fetch(`${ctx.base}/files/permissions`, { method: "POST", headers: H(), body: JSON.stringify({ [p]: { mode: 640 } }) });
    assert.equal(r.status, 200);
    r = await fetch(`${ctx.base}/files/mv`, { method: "POST", headers: H(), body: JSON.stringify([{ src: p, dest: p + ".moved" }]) });
    assert.equal(r.status, 200);
    const info = await (await fetch(`${ctx.base}/files/info?path=${encodeURIComponent(p + ".moved")}`, { headers: H() })).json();
    assert.equal(info[p + ".moved"].mode, 640);
    const d = await fetch(`${ctx.base}/files/download?path=${encodeURIComponent(p + ".moved")}`, { headers: H() });
    assert.equal(await d.text(), "1 two 1");
  });

  test(`${name}: metrics`, async () => {
    const m = await (await fetch(`${ctx.base}/metrics`, { headers: H() })).json();
    assert.ok(m.cpu_count > 0);
    assert.ok(m.cpu_used_pct >= 0 && m.cpu_used_pct <= 100);
    assert.ok(m.mem_total_mib > 0 && m.mem_used_mib <= m.mem_total_mib);
    assert.ok(Math.abs(Date.now() - m.timestamp) < 60000);
  });

  test(`${name}: metrics/watch streams one sample per second`, async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    const r = await fetch(`${ctx.base}/metrics/watch`, { headers: H(), signal: ac.signal });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type"), /^text\/event-stream/);
    const reader = r.body.getReader();
    let text = "";
    while (parseEvents(text.slice(0, text.lastIndexOf("\n\n") + 2)).length < 3) {
      const { value, done } = await reader.read();
      assert.ok(!done, "the watch stream ended early");
      text += Buffer.from(value).toString();
    }
    ac.abort();
    const samples = parseEvents(text.slice(0, text.lastIndexOf("\n\n") + 2));
    for (const m of samples) {
      assert.ok(m.cpu_count > 0 && m.mem_total_mib > 0 && m.mem_used_mib <= m.mem_total_mib);
      assert.ok(m.cpu_used_pct >= 0 && m.cpu_used_pct <= 100);
    }
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 1800, `3 samples took ${elapsed} ms (first at once, then 1/s)`);
    // the cadence by the samples' own times (the client may be scheduled late on a busy machine)
    const spacing = samples[2].timestamp - samples[1].timestamp;
    assert.ok(spacing >= 900 && spacing < 1900, `samples ${spacing} ms apart`);
    // the agent still answers after the client went away
    assert.equal((await fetch(`${ctx.base}/ping`, { headers: H() })).status, 200);
  });

  test(`${name}: sessions keep cwd, env and functions between runs`, async () => {
    const post = (p, body) => fetch(`${ctx.base}${p}`, { method: "POST", headers: { ...H(), "content-type": "application/json" }, body });
    const runIn = async (sid, body) => {
      const r = await post(`/session/${sid}/run`, JSON.stringify(body));
      const text = await r.text();
      return { status: r.status, events: r.status === 200 ? parseEvents(text) : null, body: text };
    };
    const outOf = (events) => events.filter((e) => e.type === "stdout").map((e) => e.text);
    let r = await post("/session", JSON.stringify({ cwd: "/tmp" }));
    assert.equal(r.status, 200);
    const sid = (await r.json()).session_id;
    assert.match(sid, /^[0-9a-f]{32}$/);

    let { events } = await runIn(sid, { command: "pwd; cd /; export SESS_V='it'\\''s'; f() { echo \"fn:$1\"; }; printf tail" });
    assert.deepEqual(events.map((e) => e.type), ["init", "ping", "stdout", "stdout", "execution_complete"], JSON.stringify(events));
    assert.deepEqual(outOf(events), ["/tmp", "tail"]);
    ({ events } = await runIn(sid, { command: "pwd; echo \"$SESS_V\"; f x; read v; echo \"read=[$v]\"; echo e >&2; exit_not_found_cmd_zz" }));
    assert.deepEqual(outOf(events), ["/", "it's", "fn:x", "read=[]"]);
    assert.ok(events.some((e) => e.type === "stderr" && e.text === "e"));
    assert.equal(events.at(-1).type, "error");
    assert.equal(events.at(-1).error.evalue, "127");
    // a per-run cwd applies to that run only
    ({ events } = await runIn(sid, { command: "pwd", cwd: ctx.fileDir }));
    assert.deepEqual(outOf(events), [ctx.fileDir]);
    ({ events } = await runIn(sid, { command: "pwd" }));
    assert.deepEqual(outOf(events), ["/"]);
    // the run is a command: its id has a status
    const st = await (await fetch(`${ctx.base}/command/status/${events[0].text}`, { headers: H() })).json();
    assert.equal(st.running, false);
    assert.equal(st.exit_code, 0);

    // bad input
    assert.equal((await runIn(sid, {})).status, 400);
    assert.equal((await runIn(sid, { command: "true", cwd: "/nonexistent-zz" })).status, 400);
    assert.equal((await runIn(sid, { command: "true", timeout: 0 })).status, 400);
    r = await post("/session", "not json");
    assert.equal(r.status, 400);
    r = await post("/session", JSON.stringify({ cwd: "/nonexistent-zz" }));
    assert.equal(r.status, 400);
    assert.equal((await r.json()).code, "INVALID_REQUEST_BODY");

    // delete; then the id is unknown
    r = await fetch(`${ctx.base}/session/${sid}`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 200);
    assert.equal(await r.text(), "");
    const gone = await runIn(sid, { command: "true" });
    assert.equal(gone.status, 404);
    assert.equal(JSON.parse(gone.body).code, "RUNTIME_ERROR");
    r = await fetch(`${ctx.base}/session/${sid}`, { method: "DELETE", headers: H() });
    assert.equal(r.status, 404);
    r = await fetch(`${ctx.base}/session/${sid}/run`, { method: "GET", headers: H() });
    assert.equal(r.status, 405);
  });

  test(`${name}: session run: timeout, interrupt, busy, exit, and a fresh shell afterwards`, async () => {
    const post = (p, body) => fetch(`${ctx.base}${p}`, { method: "POST", headers: H(), body: JSON.stringify(body) });
    const sid = (await (await post("/session", {})).json()).session_id;
    let r = await post(`/session/${sid}/run`, { command: "export K=1; sleep 30", timeout: 300 });
    let events = parseEvents(await r.text());
    assert.deepEqual(events.at(-1).error.traceback, ["signal: killed"]);
    // interrupt a running session command through DELETE /command?id=
    const ac = new AbortController();
    r = await post(`/session/${sid}/run`, { command: "echo started; sleep 30" });
    const reader = r.body.getReader();
    let text = "";
    while (!text.includes("started")) text += Buffer.from((await reader.read()).value).toString();
    const runId = parseEvents(text.slice(0, text.indexOf("\n\n") + 2))[0].text;
    const busy = await post(`/session/${sid}/run`, { command: "true" });
    assert.equal(busy.status, 409);
    assert.equal((await busy.json()).code, "RUNTIME_ERROR");
    const t0 = Date.now();
    const k = await fetch(`${ctx.base}/command?id=${runId}`, { method: "DELETE", headers: H() });
    assert.equal(k.status, 200);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    ac.abort();
    assert.ok(Date.now() - t0 < 5000);
    events = parseEvents(text);
    assert.equal(events.at(-1).type, "error");
    assert.equal(events.at(-1).error.evalue, "-1");
    // `exit` ends the shell: that run reports it; the next run gets a fresh shell
    r = await post(`/session/${sid}/run`, { command: "exit 7" });
    assert.equal(parseEvents(await r.text()).at(-1).error.evalue, "7");
    r = await post(`/session/${sid}/run`, { command: "echo alive" });
    events = parseEvents(await r.text());
    assert.deepEqual(events.filter((e) => e.type === "stdout").map((e) => e.text), ["alive"]);
    assert.equal((await fetch(`${ctx.base}/session/${sid}`, { method: "DELETE", headers: H() })).status, 200);
  });

  test(`${name}: HTTP framing: keep-alive pipelining, chunked JSON body, 400, 431, 404`, async () => {
    const auth = `X-EXECD-ACCESS-TOKEN: ${TOKEN}\r\n`;
    let out = await rawExchange(ctx.port, `GET /ping HTTP/1.1\r\nHost: x\r\n${auth}\r\nGET /ping HTTP/1.1\r\nHost: x\r\n${auth}Connection: close\r\n\r\n`);
    assert.equal(out.match(/HTTP\/1\.1 200 OK/g)?.length, 2, out);
    const body = JSON.stringify({ command: "echo chunked" });
    out = await rawExchange(ctx.port, `POST /command HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n${body.slice(0, 5)}\r\n${(body.length - 5).toString(16)}\r\n${body.slice(5)}\r\n0\r\n\r\n`, 3000);
    assert.match(out, /"text":"chunked"/);
    out = await rawExchange(ctx.port, "GARBAGE\r\n\r\n");
    assert.match(out, /^HTTP\/1\.1 400 /);
    out = await rawExchange(ctx.port, `GET /ping HTTP/1.1\r\nX-Big: ${"a".repeat(70000)}\r\n\r\n`);
    assert.match(out, /^HTTP\/1\.1 431 /);
    out = await rawExchange(ctx.port, `POST /command HTTP/1.1\r\n${auth}Transfer-Encoding: chunked\r\n\r\nzz\r\n`);
    assert.match(out, /^HTTP\/1\.1 400 /);
    const r = await fetch(`${ctx.base}/nope`, { headers: H() });
    assert.equal(r.status, 404);
    assert.equal(typeof (await r.json()).code, "string");
  });

  test(`${name}: client disconnect does not kill the command`, async () => {
    const marker = `${ctx.fileDir}/disc-${Date.now()}`;
    const ac = new AbortController();
    const r = await fetch(`${ctx.base}/command`, {
      method: "POST", headers: H(), signal: ac.signal,
      body: JSON.stringify({ command: `for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done; echo done > ${marker}` }),
    });
    const reader = r.body.getReader();
    await reader.read();
    ac.abort();
    await sleep(2500);
    const d = await fetch(`${ctx.base}/files/download?path=${encodeURIComponent(marker)}`, { headers: H() });
    assert.equal(d.status, 200);
    assert.equal(await d.text(), "done\n");
  });
}

describe("local process", () => {
  const ctx = { fileDir: fs.mkdtempSync(path.join(os.tmpdir(), "execd-test-")) };
  let child, backend, backendPort;

  before(async () => {
    ctx.port = await freePort();
    ctx.base = `http://127.0.0.1:${ctx.port}`;
    child = spawn(BIN, [], { env: { ...process.env, OPENSANDBOX_EXECD_PORT: String(ctx.port), EXECD_ACCESS_TOKEN: TOKEN }, stdio: ["ignore", "inherit", "inherit"] });
    await waitPing(ctx.base, { "X-EXECD-ACCESS-TOKEN": TOKEN });
    backend = http.createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        res.writeHead(201, { "content-type": "text/plain", "x-backend": "1" });
        res.end(`${req.method} ${req.url} host=${req.headers.host} token=${req.headers["x-execd-access-token"] ?? "none"} body=${body}`);
      });
    });
    await new Promise((r) => backend.listen(0, "127.0.0.1", r));
    backendPort = backend.address().port;
  });
  after(() => {
    child?.kill("SIGTERM");
    backend?.close();
    fs.rmSync(ctx.fileDir, { recursive: true, force: true });
  });

  agentSuite("local", ctx);

  test("local: /proxy/{ownPort} is local, other ports are proxied; dead port is 502", async () => {
    const H = { "X-EXECD-ACCESS-TOKEN": TOKEN };
    let r = await fetch(`${ctx.base}/proxy/${ctx.port}/ping`, { headers: H });
    assert.equal(r.status, 200);
    r = await fetch(`${ctx.base}/proxy/${backendPort}/hello/world?x=1&y=%2F`, { method: "POST", headers: H, body: "payload" });
    assert.equal(r.status, 201);
    assert.equal(r.headers.get("x-backend"), "1");
    assert.equal(await r.text(), `POST /hello/world?x=1&y=%2F host=127.0.0.1:${backendPort} token=none body=payload`);
    const dead = await freePort();
    r = await fetch(`${ctx.base}/proxy/${dead}/x`, { headers: H });
    assert.equal(r.status, 502);
    assert.equal(typeof (await r.json()).message, "string");
  });

  test("local: WebSocket upgrade through /proxy/{port} is tunnelled both ways", async () => {
    // a minimal backend that answers 101 and then echoes raw bytes
    const srv = net.createServer((s) => {
      let head = "", up = false;
      s.on("data", (d) => {
        if (up) return s.write("echo:" + d);
        head += d;
        if (!head.includes("\r\n\r\n")) return;
        up = true;
        s.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        s.headSeen = head;
      });
    });
    await new Promise((r) => srv.listen(0, "127.0.0.1", r));
    const port = ctx.port, bport = srv.address().port;
    const got = await new Promise((resolve) => {
      const c = net.connect(port, "127.0.0.1", () => {
        c.write(`GET /proxy/${bport}/ws HTTP/1.1\r\nHost: x\r\nX-EXECD-ACCESS-TOKEN: ${TOKEN}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n`);
        setTimeout(() => c.write("frame1"), 200);
        setTimeout(() => c.write("frame2"), 400);
        setTimeout(() => c.destroy(), 800);
      });
      let data = "";
      c.on("data", (d) => (data += d));
      c.on("close", () => resolve(data));
    });
    srv.close();
    assert.match(got, /^HTTP\/1\.1 101 /);
    assert.ok(got.endsWith("echo:frame1echo:frame2"), JSON.stringify(got));
  });
});

// Connection limits (EXECD_MAX_CONNS, EXECD_HEAD_TIMEOUT_MS, EXECD_IDLE_TIMEOUT_MS) and the incremental
// head parse, on a local agent started with small limits.
describe("connection limits", () => {
  const HEAD_MS = 1500;
  let child, port, base, plain, plainPort;
  const spawnAgent = async (p, env) => {
    const c = spawn(BIN, [], { env: { ...process.env, OPENSANDBOX_EXECD_PORT: String(p), EXECD_ACCESS_TOKEN: TOKEN, ...env }, stdio: ["ignore", "inherit", "inherit"] });
    await waitPing(`http://127.0.0.1:${p}`, { "X-EXECD-ACCESS-TOKEN": TOKEN });
    return c;
  };
  // resolves with { data, closedAfterMs } when the server closes the connection (or after `ms`)
  const watchClose = (sock, ms) => new Promise((resolve) => {
    const t0 = Date.now();
    let data = "";
    const t = setTimeout(() => resolve({ data, closedAfterMs: null }), ms);
    sock.on("data", (d) => (data += d.toString("latin1")));
    sock.on("close", () => { clearTimeout(t); resolve({ data, closedAfterMs: Date.now() - t0 }); });
    sock.on("error", () => {});
  });
  const connect = (p) => new Promise((resolve) => { const s = net.connect(p, "127.0.0.1", () => resolve(s)); });

  before(async () => {
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    child = await spawnAgent(port, { EXECD_MAX_CONNS: "8", EXECD_HEAD_TIMEOUT_MS: String(HEAD_MS), EXECD_IDLE_TIMEOUT_MS: String(HEAD_MS) });
    plainPort = await freePort();
    plain = await spawnAgent(plainPort, {});
  });
  after(() => {
    child?.kill("SIGTERM");
    plain?.kill("SIGTERM");
  });

  test("limits: a connection over EXECD_MAX_CONNS is answered 503 and closed; capacity comes back", async () => {
    const held = [];
    for (let i = 0; i < 8; i++) held.push(await connect(port));
    await sleep(100);
    const extra = await connect(port);
    const r = await watchClose(extra, 1000);
    assert.ok(r.closedAfterMs !== null, "the connection over the cap was left open");
    assert.match(r.data, /^HTTP\/1\.1 503 /);
    assert.deepEqual(JSON.parse(r.data.split("\r\n\r\n")[1]), { code: "RUNTIME_ERROR", message: "too many connections to the agent" });
    for (const s of held) s.destroy();
    await sleep(100);
    const ok = await fetch(`${base}/ping`, { headers: { "X-EXECD-ACCESS-TOKEN": TOKEN } });
    assert.equal(ok.status, 200);
  });

  test("limits: a head trickled byte by byte is cut at EXECD_HEAD_TIMEOUT_MS, and so is an idle keep-alive", async () => {
    const slow = await connect(port);
    slow.write("GET /ping HTTP/1.1\r\nHost: x\r\n");
    const iv = setInterval(() => slow.writable && slow.write("X"), 100);
    const r = await watchClose(slow, HEAD_MS + 3000);
    clearInterval(iv);
    assert.ok(r.closedAfterMs !== null, "a slowloris head was never cut");
    assert.ok(r.closedAfterMs >= HEAD_MS - 200 && r.closedAfterMs < HEAD_MS + 2500, `closed after ${r.closedAfterMs} ms`);
    // keep-alive: a request is answered, then the idle connection is closed after the same time
    const ka = await connect(port);
    const w = watchClose(ka, HEAD_MS + 3000);
    ka.write(`GET /ping HTTP/1.1\r\nHost: x\r\nX-EXECD-ACCESS-TOKEN: ${TOKEN}\r\n\r\n`);
    const k = await w;
    assert.match(k.data, /^HTTP\/1\.1 200 /);
    assert.ok(k.closedAfterMs !== null && k.closedAfterMs >= HEAD_MS - 200, `idle keep-alive closed after ${k.closedAfterMs} ms`);
  });

  test("limits: a request body that stalls is cut at EXECD_IDLE_TIMEOUT_MS", async () => {
    const s = await connect(port);
    s.write(`POST /command HTTP/1.1\r\nHost: x\r\nX-EXECD-ACCESS-TOKEN: ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"command":`);
    const r = await watchClose(s, HEAD_MS + 3000);
    assert.ok(r.closedAfterMs !== null && r.closedAfterMs >= HEAD_MS - 200 && r.closedAfterMs < HEAD_MS + 2500, `closed after ${r.closedAfterMs} ms`);
  });

  test("limits: partial heads held open cost no CPU per loop turn (each byte is searched once)", async () => {
    // 40 connections each hold 60 KB of an unfinished head; 300 pings then drive the loop. Re-parsing
    // every partial head on each loop turn costs seconds of CPU here; searching new bytes only, ~nothing.
    const cpu = () => {
      const f = fs.readFileSync(`/proc/${plain.pid}/stat`, "utf8").split(") ")[1].split(" ");
      return (Number(f[11]) + Number(f[12])) * 10; // utime + stime, in ms (100 Hz ticks)
    };
    const held = [];
    const filler = "GET /ping HTTP/1.1\r\n" + "X-Pad: " + "a".repeat(60 * 1024) + "\r\n";
    for (let i = 0; i < 40; i++) {
      const s = await connect(plainPort);
      s.on("error", () => {});
      s.write(filler);
      held.push(s);
    }
    await sleep(300);
    const c0 = cpu();
    const t0 = Date.now();
    for (let i = 0; i < 300; i++) {
      const r = await fetch(`http://127.0.0.1:${plainPort}/ping`, { headers: { "X-EXECD-ACCESS-TOKEN": TOKEN } });
      assert.equal(r.status, 200);
    }
    const used = cpu() - c0;
    console.log(`  300 pings with 40 x 60 KB partial heads held: agent CPU ${used} ms, wall ${Date.now() - t0} ms`);
    for (const s of held) s.destroy();
    assert.ok(used < 400, `agent CPU ${used} ms for 300 pings`);
  });
});

function dockerOk() {
  try {
    execFileSync("docker", ["version", "--format", "{{.Server.Version}}"], { stdio: "pipe" });
    return true;
  } catch {
    return false;
  }
}

// A warm pool member (execd --pool-member, pool.c): the process splits into the agent and a main process
// that waits for POST /pool/claim, then execs the claim's entrypoint with its env; the claim's token
// replaces the boot token.
describe("pool member", () => {
  test("pool: the claim's entrypoint becomes the main process; the boot token stops working", async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const boot = { "X-EXECD-ACCESS-TOKEN": "boot-" + TOKEN };
    const logFile = path.join(os.tmpdir(), `execd-pool-${process.pid}.log`);
    const child = spawn(BIN, ["--pool-member"], { env: { ...process.env, OPENSANDBOX_EXECD_PORT: String(port),
      EXECD_ACCESS_TOKEN: boot["X-EXECD-ACCESS-TOKEN"], OPENSANDBOX_POOL_MEMBER: "1", OPENSANDBOX_EXECD_LOG: logFile },
      stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      await waitPing(base, boot);
      const claim = (headers, body) => fetch(`${base}/pool/claim`, { method: "POST",
        headers: { ...headers, "content-type": "application/json" }, body: JSON.stringify(body) });
      assert.equal((await claim({}, { token: "x", entrypoint: ["true"] })).status, 401);
      let r = await claim(boot, { token: "new", entrypoint: [] });
      assert.equal(r.status, 400);
      assert.equal((await r.json()).code, "INVALID_REQUEST_BODY");
      assert.equal((await claim(boot, { token: "new", entrypoint: ["true"], env: ["NOEQUALS"] })).status, 400);
      r = await claim(boot, { token: "new-" + TOKEN, env: ["CLAIM=c"], entrypoint: ["sh", "-c",
        'echo "hello $CLAIM"; [ -z "$EXECD_ACCESS_TOKEN$OPENSANDBOX_POOL_MEMBER" ] && echo clean; exit 7'] });
      assert.equal(r.status, 200);
      const times = await r.json(); // the agent's side of the claim, on the host's monotonic clock
      assert.ok(times.acceptedUs > 0 && times.acceptedUs <= times.handledUs && times.handledUs <= times.repliedUs,
        JSON.stringify(times));
      assert.equal(await exited, 7, "the entrypoint's exit status is the main process's");
      assert.match(out, /hello c/);
      assert.match(out, /clean/);
      // the agent goes on with the new token only, and takes no second claim
      const fresh = { "X-EXECD-ACCESS-TOKEN": "new-" + TOKEN };
      assert.equal((await fetch(`${base}/ping`, { headers: boot })).status, 401);
      assert.equal((await fetch(`${base}/ping`, { headers: fresh })).status, 200);
      assert.equal((await claim(fresh, { token: "again", entrypoint: ["true"] })).status, 409);
      const cmd = await run(base, fresh, { command: "echo env=$CLAIM" });
      assert.ok(cmd.events.some((e) => e.type === "stdout" && e.text === "env=c"), cmd.text);
      // the agent outlived its parent (as in a container); stop it through itself
      await run(base, fresh, { command: "kill $PPID" }).catch(() => {});
    } finally {
      child.kill("SIGKILL");
      fs.rmSync(logFile, { force: true });
    }
  });
});

// The claim written to a file instead (Docker: the server's directory, mounted into the member): the agent shows
// the directory's `member` text on /ping (when it holds the directory's FIFO `wake`), takes the claim when a byte
// comes through `wake` (the entrypoint runs with no request sent), and before any request, so the request right
// after the write already has the claim's token and env.
describe("pool member, claim file", () => {
  const startMember = async (dir, logFile) => {
    const port = await freePort();
    const boot = { "X-EXECD-ACCESS-TOKEN": "boot-" + TOKEN };
    const child = spawn(BIN, ["--pool-member"], { env: { ...process.env, OPENSANDBOX_EXECD_PORT: String(port),
      EXECD_ACCESS_TOKEN: boot["X-EXECD-ACCESS-TOKEN"], OPENSANDBOX_POOL_MEMBER: "1", OPENSANDBOX_EXECD_LOG: logFile,
      OPENSANDBOX_POOL_CLAIM_FILE: path.join(dir, "claim.json") }, stdio: ["ignore", "pipe", "inherit"] });
    const m = { base: `http://127.0.0.1:${port}`, boot, child, out: "" };
    child.stdout.on("data", (d) => (m.out += d));
    m.exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
    await waitPing(m.base, boot);
    return m;
  };
  const writeClaim = (dir, text) => {
    fs.writeFileSync(path.join(dir, ".claim.tmp"), text);
    fs.renameSync(path.join(dir, ".claim.tmp"), path.join(dir, "claim.json"));
    // the wake-up, as core.poke: non-blocking (the agent holds the FIFO, so there is a reader)
    const fd = fs.openSync(path.join(dir, "wake"), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    fs.writeSync(fd, "1");
    fs.closeSync(fd);
  };

  test("pool file: taken without a request; the entrypoint is the main process; POST is 409 after", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "execd-claimdir-"));
    const logFile = path.join(dir, "execd.log");
    fs.writeFileSync(path.join(dir, "member"), "member-1234\n");
    execFileSync("mkfifo", [path.join(dir, "wake")]);
    const m = await startMember(dir, logFile);
    try {
      let r = await fetch(`${m.base}/ping`, { headers: m.boot });
      assert.equal(r.headers.get("x-opensandbox-pool-claim-file"), "member-1234");
      // a file that is not a claim is left, and the member stays unclaimed
      writeClaim(dir, "{not json");
      await sleep(100);
      r = await fetch(`${m.base}/ping`, { headers: m.boot });
      assert.equal(r.status, 200);
      assert.match(fs.readFileSync(logFile, "utf8"), /not taken: not a JSON object/);
      writeClaim(dir, JSON.stringify({ token: "file-" + TOKEN, env: ["CLAIM=f"], entrypoint: ["sh", "-c",
        'echo "hello $CLAIM"; [ -z "$OPENSANDBOX_POOL_CLAIM_FILE$EXECD_ACCESS_TOKEN" ] && echo clean; exit 5'] }));
      // no request: the watch alone starts the entrypoint
      assert.equal(await m.exited, 5);
      assert.match(m.out, /hello f/);
      assert.match(m.out, /clean/);
      const fresh = { "X-EXECD-ACCESS-TOKEN": "file-" + TOKEN };
      assert.equal((await fetch(`${m.base}/ping`, { headers: m.boot })).status, 401);
      r = await fetch(`${m.base}/ping`, { headers: fresh });
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("x-opensandbox-pool-claim-file"), null, "a claimed member shows no marker");
      const post = await fetch(`${m.base}/pool/claim`, { method: "POST", headers: { ...fresh,
        "content-type": "application/json" }, body: JSON.stringify({ token: "again", entrypoint: ["true"] }) });
      assert.equal(post.status, 409);
      const cmd = await run(m.base, fresh, { command: "echo env=$CLAIM file=$OPENSANDBOX_POOL_CLAIM_FILE" });
      assert.ok(cmd.events.some((e) => e.type === "stdout" && e.text === "env=f file="), cmd.text);
      await run(m.base, fresh, { command: "kill $PPID" }).catch(() => {});
    } finally {
      m.child.kill("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("pool file: the first request after the write finds the claim taken (token and env)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "execd-claimdir-"));
    fs.writeFileSync(path.join(dir, "member"), "member-5678\n");
    const m = await startMember(dir, path.join(dir, "execd.log"));
    try {
      // a `member` file but no FIFO: the agent shows no marker (the server would POST)
      const r = await fetch(`${m.base}/ping`, { headers: m.boot });
      assert.equal(r.headers.get("x-opensandbox-pool-claim-file"), null);
      // the claim put in place with no wake-up, so only the request can make the agent take it
      fs.writeFileSync(path.join(dir, ".claim.tmp"), JSON.stringify({ token: "req-" + TOKEN, env: ["CLAIM=r"],
        entrypoint: ["sleep", "30"] }));
      await sleep(100);
      fs.linkSync(path.join(dir, ".claim.tmp"), path.join(dir, "claim.json"));
      await sleep(100);
      const fresh = { "X-EXECD-ACCESS-TOKEN": "req-" + TOKEN };
      const cmd = await run(m.base, fresh, { command: "echo env=$CLAIM" });
      assert.ok(cmd.events.some((e) => e.type === "stdout" && e.text === "env=r"), cmd.text);
      await run(m.base, fresh, { command: "kill $PPID" }).catch(() => {});
    } finally {
      m.child.kill("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("busybox container", { skip: !dockerOk() && "no Docker daemon" }, () => {
  const ctx = { fileDir: "/tmp" };
  let cid;

  before(async () => {
    execFileSync(path.join(HERE, "make-busybox-image.sh"), [], { stdio: "inherit" });
    cid = execFileSync("docker", [
      "run", "-d", "--label", "opensandbox.test=1",
      "-e", `EXECD_ACCESS_TOKEN=${TOKEN}`,
      "-v", `${BIN}:/opt/opensandbox/execd:ro`,
      "-v", `${path.join(HERE, "..", "bootstrap.sh")}:/opt/opensandbox/bootstrap.sh:ro`,
      "-p", "127.0.0.1::44772",
      "--entrypoint", "/opt/opensandbox/bootstrap.sh",
      "local/busybox:latest", "sleep", "3600",
    ]).toString().trim();
    const port = execFileSync("docker", ["port", cid, "44772/tcp"]).toString().trim().split("\n")[0].split(":").pop();
    ctx.port = Number(port);
    ctx.base = `http://127.0.0.1:${port}`;
    await waitPing(ctx.base, { "X-EXECD-ACCESS-TOKEN": TOKEN });
  });
  after(() => {
    if (cid) execFileSync("docker", ["rm", "-f", cid], { stdio: "ignore" });
  });

  agentSuite("container", ctx);

  test("container: the user's entrypoint is PID 1, the agent has no bash and uses sh", async () => {
    const H = { "X-EXECD-ACCESS-TOKEN": TOKEN };
    const { events } = await run(ctx.base, H, { command: "cat /proc/1/cmdline | tr '\\0' ' '; echo; which bash || echo nobash; cat /tmp/execd.log | head -1" });
    const out = events.filter((e) => e.type === "stdout").map((e) => e.text);
    assert.equal(out[0].trim(), "sleep 3600");
    assert.equal(out[1], "nobash");
    assert.match(out[2], /listening on 0\.0\.0\.0:44772/);
  });

  test("container: orphans of commands are reaped by the agent, not left as zombies under PID 1", async () => {
    const H = { "X-EXECD-ACCESS-TOKEN": TOKEN };
    await run(ctx.base, H, { command: "for i in 1 2 3 4 5; do (sleep 0.2 &); done" });
    await sleep(800);
    const { events } = await run(ctx.base, H, { command: "cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == \"Z\"' | wc -l" });
    assert.deepEqual(events.filter((e) => e.type === "stdout").map((e) => e.text.trim()), ["0"]);
  });

  test("container: docker stop delivers SIGTERM to the entrypoint promptly", async () => {
    const t0 = Date.now();
    execFileSync("docker", ["stop", "-t", "10", cid]);
    // busybox sleep as PID 1 has no SIGTERM handler, so the kernel ignores it: docker waits the
    // full timeout. What matters is that bootstrap.sh did not stay PID 1 (checked above).
    const code = execFileSync("docker", ["inspect", "-f", "{{.State.ExitCode}}", cid]).toString().trim();
    assert.ok(Date.now() - t0 < 15000);
    assert.ok(code !== "");
  });
});
