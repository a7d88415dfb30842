// Lifecycle benchmark: our server against raw Docker on the same daemon, in one run (loopback and the
// local Docker socket only; bounded in count and time). Run through bench/lifecycle.sh, which starts the
// server and nginx. Prints a markdown table.
//
//   node bench/lifecycle.mjs <server-url> <api-key> <nginx-url-of-static-sandbox-json> [N_LIST=500]
import http from "node:http";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const [base, key, nginxUrl] = process.argv.slice(2, 5);
const NLIST = +(process.argv[5] || 500);
const IMAGE = process.env.SANDBOX_IMAGE || "local/busybox:latest";
const H = { "OPEN-SANDBOX-API-KEY": key, "Content-Type": "application/json" };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6;
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const created = [];

function docker(method, path, body) {
  return new Promise((resolve, reject) => {
    const tar = Buffer.isBuffer(body);
    const data = tar ? body : body ? JSON.stringify(body) : undefined;
    const req = http.request({ socketPath: "/var/run/docker.sock", method, path: "/v1.41" + path,
      headers: data ? { "Content-Type": tar ? "application/x-tar" : "application/json",
        "Content-Length": Buffer.byteLength(data) } : {} },
      (res) => { let b = ""; res.on("data", (c) => (b += c)); res.on("end", () => resolve({ status: res.statusCode, body: b })); });
    req.on("error", reject);
    if (data) req.write(data);
    req.end();
  });
}

async function api(method, path, body) {
  const r = await fetch(base + path, { method, headers: H, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

// The poller's GET: node:http on kept-alive connections, and a substring test instead of a JSON parse.
// A client polling every 2 ms with fetch() (undici, a new request object and a JSON parse per poll) spent
// enough CPU on 2 vCPUs to slow dockerd itself; this one asks the same question for a fraction of that.
const pollAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });
const baseUrl = new URL(base);
function pollState(id) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: baseUrl.hostname, port: baseUrl.port, path: "/v1/sandboxes/" + id,
      agent: pollAgent, headers: { "OPEN-SANDBOX-API-KEY": key } }, (res) => {
      let b = "";
      res.setEncoding("latin1");
      res.on("data", (c) => (b += c));
      res.on("end", () => resolve(/"state":"(\w+)"/.exec(b)?.[1]));
    });
    req.on("error", reject);
    req.end();
  });
}

// pollMs: how often the client asks for the state. Polling every 2 ms is a client that wants the earliest
// answer, but it also takes CPU from dockerd on a small machine; `wall` (the POST's wall-clock time) lets the
// caller measure instead against the moment the server logged the sandbox Running (serverRunningAt).
async function createOurs(meta = {}, pollMs = 2) {
  const wall = performance.timeOrigin + performance.now();
  const t0 = now();
  const r = await api("POST", "/v1/sandboxes", { image: { uri: IMAGE }, entrypoint: ["sleep", "3600"], timeout: 3600,
    resourceLimits: {}, metadata: meta });
  const tPost = now() - t0;
  if (r.status !== 202) throw new Error("create: " + r.status + " " + JSON.stringify(r.body));
  created.push(r.body.id);
  for (;;) {
    const state = await pollState(r.body.id);
    if (state === "Running") return { id: r.body.id, post: tPost, running: now() - t0, wall };
    if (state === "Failed") throw new Error("failed: " + JSON.stringify((await api("GET", "/v1/sandboxes/" + r.body.id)).body));
    await sleep(pollMs);
  }
}

// the server's CPU time so far (user + system), in seconds
function serverCpu() {
  const f = readFileSync(`/proc/${process.env.SERVER_PID}/stat`, "utf8").split(") ")[1].split(" ");
  return (+f[11] + +f[12]) / 100; // utime, stime in clock ticks (USER_HZ = 100 on Linux)
}

// sandbox id -> epoch ms (fractional) of the server's "sandbox running" log line (the server logs at INFO)
function serverRunningAt() {
  const at = new Map();
  if (!process.env.SERVER_LOG) return at;
  for (const line of readFileSync(process.env.SERVER_LOG, "utf8").split("\n")) {
    if (!line.includes('"sandbox running"')) continue;
    const e = JSON.parse(line);
    const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?Z$/.exec(e.ts);
    at.set(e.sandbox_id, Date.parse(m[1] + "Z") + (m[2] ? +m[2] * 1000 : 0));
  }
  return at;
}

// The agent bundle the server uploads (API.md 8.4), made by bench/lifecycle.sh: raw Docker doing the same
// three calls as our provisioning (create, PUT archive, start) shows what is Docker's cost and what is ours.
const BUNDLE = process.env.BUNDLE_TAR ? readFileSync(process.env.BUNDLE_TAR) : null;

const rawIds = [];
async function createRaw(i, upload) {
  const t0 = now();
  // the same container the server makes, minus our agent: published ports on 127.0.0.1, the security defaults
  const c = await docker("POST", `/containers/create?name=bench-raw-${process.pid}-${i}`, {
    Image: IMAGE, Cmd: ["sleep", "3600"], Labels: { "opensandbox.bench": "1" },
    ExposedPorts: { "44772/tcp": {}, "8080/tcp": {} },
    HostConfig: {
      NetworkMode: "bridge",
      PortBindings: { "44772/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }], "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }] },
      CapDrop: ["AUDIT_WRITE", "MKNOD", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE", "SYS_TIME", "SYS_TTY_CONFIG"],
      SecurityOpt: ["no-new-privileges:true"], PidsLimit: 4096, RestartPolicy: { Name: "no" },
    },
  });
  if (c.status !== 201) throw new Error("raw create: " + c.body);
  const id = JSON.parse(c.body).Id;
  rawIds.push(id);
  if (upload) {
    const u = await docker("PUT", `/containers/${id}/archive?path=/`, upload);
    if (u.status !== 200) throw new Error("raw upload: " + u.status + " " + u.body);
  }
  const s = await docker("POST", `/containers/${id}/start`);
  if (s.status !== 204) throw new Error("raw start: " + s.body);
  return now() - t0;
}

async function cleanup() {
  await Promise.all(created.splice(0).map((id) => api("DELETE", "/v1/sandboxes/" + id).catch(() => {})));
  await Promise.all(rawIds.splice(0).map((id) => docker("DELETE", `/containers/${id}?force=true`).catch(() => {})));
}

function wrk(url, conns = 64, secs = 8, header) {
  const args = ["-t2", `-c${conns}`, `-d${secs}s`, "--latency"];
  if (header) args.push("-H", header);
  args.push(url);
  const out = execFileSync("wrk", args, { encoding: "utf8" });
  const rps = +/Requests\/sec:\s+([\d.]+)/.exec(out)[1];
  const p50 = /50%\s+(\S+)/.exec(out)[1];
  return { rps, p50 };
}

const rows = [];
try {
  if (!process.env.BURST_ONLY) {
    // 1. create -> Running, ours vs raw create+start (and, with the bundle, raw create+upload+start), interleaved.
    // Ours twice: seen by a client polling every 2 ms, and per the server's log with a client polling every 50 ms.
    const SAMPLES = +(process.env.SAMPLES || 30);
    const ours = [], oursQuiet = [], raw = [], rawUp = [], posts = [];
    for (let i = 0; i < SAMPLES; i++) {
      const o = await createOurs();
      ours.push(o.running); posts.push(o.post);
      raw.push(await createRaw(i));
      oursQuiet.push(await createOurs({}, 50));
      if (BUNDLE) rawUp.push(await createRaw(500 + i, BUNDLE));
    }
    const at = serverRunningAt();
    const quiet = oursQuiet.map((o) => at.get(o.id) - o.wall).filter((x) => x > 0);
    const ratio = (a, b) => (median(a) / median(b)).toFixed(2);
    rows.push([`create -> Running, median of ${SAMPLES} (ours, seen by a client polling every 2 ms)`, median(ours).toFixed(1) + " ms"]);
    if (quiet.length === SAMPLES) {
      rows.push([`create -> Running, median of ${SAMPLES} (ours, POST sent -> server logs Running; client polls every 50 ms)`,
        median(quiet).toFixed(1) + " ms"]);
    }
    rows.push([`docker create + start, median of ${SAMPLES} (raw Engine API)`, median(raw).toFixed(1) + " ms"]);
    rows.push(["ratio ours / raw (2 ms polling" + (quiet.length === SAMPLES ? "; server log" : "") + ")",
      ratio(ours, raw) + (quiet.length === SAMPLES ? "; " + ratio(quiet, raw) : "")]);
    if (BUNDLE) {
      rows.push([`docker create + PUT archive (the same ${BUNDLE.length}-byte agent bundle) + start, median of ${SAMPLES} (raw)`,
        median(rawUp).toFixed(1) + " ms"]);
      rows.push(["ratio ours / raw with the same upload (2 ms polling" + (quiet.length === SAMPLES ? "; server log" : "") + ")",
        ratio(ours, rawUp) + (quiet.length === SAMPLES ? "; " + ratio(quiet, rawUp) : "")]);
    }
    rows.push([`POST /v1/sandboxes answer time, median of ${SAMPLES}`, median(posts).toFixed(2) + " ms"]);
    await cleanup();

    // 2. GET one sandbox from memory vs nginx serving the same JSON
    const one = await createOurs({ team: "bench" });
    const g = await api("GET", "/v1/sandboxes/" + one.id);
    process.stdout.write(JSON.stringify(g.body) + "\n", () => {});
    const fs = await import("node:fs");
    fs.writeFileSync(process.env.NGINX_JSON_PATH, JSON.stringify(g.body));
    const wOurs = wrk(`${base}/v1/sandboxes/${one.id}`, 64, 8, `OPEN-SANDBOX-API-KEY: ${key}`);
    const wNginx = wrk(nginxUrl, 64, 8);
    rows.push(["GET /v1/sandboxes/{id} req/s (wrk -t2 -c64)", wOurs.rps.toFixed(0)]);
    rows.push(["nginx static JSON of the same size req/s (same wrk)", wNginx.rps.toFixed(0)]);
    rows.push(["ratio", (wOurs.rps / wNginx.rps).toFixed(2)]);
    await cleanup();

  }
  // 3. 100 creates at once vs 100 raw at once. Each of our 100 clients polls every 250 ms (100 clients polling
  // every 2 ms would be a load test of their own, on the CPUs dockerd needs); the time until the server logged
  // the last one Running is recorded too.
  const cpu0 = serverCpu();
  const wall0 = performance.timeOrigin + performance.now();
  let t0 = now();
  const res = await Promise.allSettled(Array.from({ length: 100 }, () => createOurs({}, 250)));
  const oursAll = now() - t0;
  const errors = res.filter((r) => r.status === "rejected").length;
  const cpuBurst = serverCpu() - cpu0;
  const atAll = serverRunningAt();
  const lastLogged = Math.max(...res.filter((r) => r.status === "fulfilled").map((r) => atAll.get(r.value.id) || Infinity));
  await cleanup();
  t0 = now();
  await Promise.all(Array.from({ length: 100 }, (_, i) => createRaw(1000 + i)));
  const rawAll = now() - t0;
  await cleanup();
  rows.push(["100 creates fired at once: all Running (ours, seen by the clients)", (oursAll / 1000).toFixed(2) + " s, " + errors + " errors"]);
  rows.push(["server CPU time (user+system) for those 100 creates, polls included", cpuBurst.toFixed(2) + " s"]);
  if (Number.isFinite(lastLogged)) {
    rows.push(["100 creates fired at once: the server logged the last one Running after", ((lastLogged - wall0) / 1000).toFixed(2) + " s"]);
  }
  rows.push(["100 docker create+start at once (raw)", (rawAll / 1000).toFixed(2) + " s"]);
  if (BUNDLE) {
    t0 = now();
    await Promise.all(Array.from({ length: 100 }, (_, i) => createRaw(2000 + i, BUNDLE)));
    rows.push(["100 docker create+PUT archive+start at once (raw, same bundle)", ((now() - t0) / 1000).toFixed(2) + " s"]);
    await cleanup();
  }

  if (!process.env.BURST_ONLY) {
    // 4. list of N with a metadata filter, and RSS
    for (let i = 0; i < NLIST; i += 25) {
      await Promise.all(Array.from({ length: Math.min(25, NLIST - i) }, (_, j) => {
        const k = i + j;
        return api("POST", "/v1/sandboxes", { image: { uri: IMAGE }, entrypoint: ["sleep", "3600"], timeout: 3600, resourceLimits: {},
          metadata: { team: k % 10 === 0 ? "infra" : "other", idx: String(k) } }).then((r) => created.push(r.body.id));
      }));
    }
    for (;;) { // wait for all to run
      const l = await api("GET", "/v1/sandboxes?state=Running&pageSize=1");
      if (l.body.pagination.totalItems >= NLIST) break;
      await sleep(500);
    }
    const lt = [];
    for (let i = 0; i < 50; i++) {
      const t = now();
      const l = await api("GET", "/v1/sandboxes?metadata=team%3Dinfra&pageSize=200");
      lt.push(now() - t);
      if (l.body.pagination.totalItems !== NLIST / 10) throw new Error("list filter count " + l.body.pagination.totalItems);
    }
    rows.push([`GET /v1/sandboxes?metadata=team=infra over ${NLIST} sandboxes, median of 50`, median(lt).toFixed(2) + " ms"]);
    const rss = execFileSync("ps", ["-o", "rss=", "-p", process.env.SERVER_PID], { encoding: "utf8" }).trim();
    rows.push([`server RSS with ${NLIST} sandboxes`, (rss / 1024).toFixed(1) + " MiB"]);
  }
} finally {
  await cleanup();
}
console.log("\n| measure | value |\n|---|---|");
for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
