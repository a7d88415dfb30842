// Lifecycle benchmark: our server against raw Docker on the same daemon, in one run (loopback and the
// local Docker socket only; bounded in count and time). Run through bench/lifecycle.sh, which starts the
// server and nginx. Prints a markdown table.
//
//   node bench/lifecycle.mjs <server-url> <api-key> <nginx-url-of-static-sandbox-json> [N_LIST=500]
import http from "node:http";
import { execFileSync } from "node:child_process";

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
    const data = body ? JSON.stringify(body) : undefined;
    const req = http.request({ socketPath: "/var/run/docker.sock", method, path: "/v1.41" + path,
      headers: data ? { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) } : {} },
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

async function createOurs(meta = {}) {
  const t0 = now();
  const r = await api("POST", "/v1/sandboxes", { image: { uri: IMAGE }, entrypoint: ["sleep", "3600"], timeout: 3600,
    resourceLimits: {}, metadata: meta });
  const tPost = now() - t0;
  if (r.status !== 202) throw new Error("create: " + r.status + " " + JSON.stringify(r.body));
  created.push(r.body.id);
  for (;;) {
    const g = await api("GET", "/v1/sandboxes/" + r.body.id);
    if (g.body.status.state === "Running") return { id: r.body.id, post: tPost, running: now() - t0 };
    if (g.body.status.state === "Failed") throw new Error("failed: " + g.body.status.message);
    await sleep(2);
  }
}

const rawIds = [];
async function createRaw(i) {
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
  // 1. create -> Running, ours vs raw create+start, interleaved
  const ours = [], raw = [], posts = [];
  for (let i = 0; i < 20; i++) {
    const o = await createOurs();
    ours.push(o.running); posts.push(o.post);
    raw.push(await createRaw(i));
  }
  rows.push(["create -> Running, median of 20 (ours, through the API)", median(ours).toFixed(1) + " ms"]);
  rows.push(["docker create + start, median of 20 (raw Engine API)", median(raw).toFixed(1) + " ms"]);
  rows.push(["ratio ours / raw", (median(ours) / median(raw)).toFixed(2)]);
  rows.push(["POST /v1/sandboxes answer time, median of 20", median(posts).toFixed(2) + " ms"]);
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

  // 3. 100 creates at once vs 100 raw at once
  let t0 = now();
  const res = await Promise.allSettled(Array.from({ length: 100 }, () => createOurs()));
  const oursAll = now() - t0;
  const errors = res.filter((r) => r.status === "rejected").length;
  await cleanup();
  t0 = now();
  await Promise.all(Array.from({ length: 100 }, (_, i) => createRaw(1000 + i)));
  const rawAll = now() - t0;
  await cleanup();
  rows.push(["100 creates fired at once: all Running (ours)", (oursAll / 1000).toFixed(2) + " s, " + errors + " errors"]);
  rows.push(["100 docker create+start at once (raw)", (rawAll / 1000).toFixed(2) + " s"]);

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
} finally {
  await cleanup();
}
console.log("\n| measure | value |\n|---|---|");
for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
