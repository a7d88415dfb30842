// Soak: a mixed workload against a running server for a bounded time (loopback and local Docker only).
// Creates, gets, lists, pauses, resumes, renews, proxy requests (to the agent's /ping through the server
// proxy), deletes and expiries (short-lived sandboxes), with a bounded number of live sandboxes. Records
// operations, errors, per-operation p50/p99, leaks (containers without records, records without
// containers), expiries (every short-lived sandbox must be gone by itself, 404, once its expiry has passed),
// the server's RSS and open file descriptors sampled every 15 s (start, end, min, max). Prints a markdown
// report.
//
//   node bench/soak.mjs <server-url> <api-key> <server-pid> <instance-label> [minutes=10] [max_live=20]
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

const [base, key, pidS, instance] = process.argv.slice(2, 6);
const minutes = +(process.argv[6] || 10);
const maxLive = +(process.argv[7] || 20);
const pid = +pidS;
const IMAGE = process.env.SANDBOX_IMAGE || "local/busybox:latest";
const H = { "OPEN-SANDBOX-API-KEY": key, "Content-Type": "application/json" };
const stats = {};
const errors = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6;

function record(op, ms, ok, detail) {
  const s = (stats[op] ||= { n: 0, errors: 0, t: [] });
  s.n++;
  s.t.push(ms);
  if (!ok) {
    s.errors++;
    if (errors.length < 50) errors.push(`${op}: ${detail}`);
  }
}

async function call(op, method, path, body, expect) {
  const t0 = now();
  try {
    const r = await fetch(base + path, { method, headers: H, body: body ? JSON.stringify(body) : undefined });
    const text = await r.text();
    const ok = expect.includes(r.status);
    record(op, now() - t0, ok, `${method} ${path} -> ${r.status} ${text.slice(0, 200)}`);
    return { status: r.status, json: text && text[0] === "{" ? JSON.parse(text) : null };
  } catch (e) {
    record(op, now() - t0, false, `${method} ${path}: ${e.message}`);
    return { status: 0 };
  }
}

function procStats() {
  const rss = +/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1];
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  return { rss, fds };
}

const live = new Map(); // id -> { state, token, endpoint }
const start = procStats();
const deadline = Date.now() + minutes * 60000;
const samples = [start];
const sampler = setInterval(() => samples.push(procStats()), 15000);
const shortOnes = new Map(); // id -> expiry (ms since epoch) of the short-lived sandboxes

async function create(short) {
  const r = await call("create", "POST", "/v1/sandboxes", {
    image: { uri: IMAGE }, entrypoint: ["sleep", "3600"], timeout: short ? 60 : 600, resourceLimits: {},
    metadata: { soak: "yes", kind: short ? "short" : "long" },
  }, [202]);
  if (r.status === 202) {
    live.set(r.json.id, { state: "Pending", short });
    if (short) {
      // an expiry a few seconds ahead: the server must remove it by itself. This renewal comes right after
      // the create, so it waits for provisioning to finish (API.md): timed apart from the other renewals.
      const at = Date.now() + 5000 + Math.random() * 10000;
      const rr = await call("renew (right after create)", "POST", `/v1/sandboxes/${r.json.id}/renew-expiration`,
        { expiresAt: new Date(at).toISOString() }, [200]);
      if (rr.status === 200) shortOnes.set(r.json.id, at);
    }
  }
}

async function worker(w) {
  while (Date.now() < deadline) {
    const ids = [...live.keys()];
    const id = ids[Math.floor(Math.random() * ids.length)];
    const x = Math.random();
    if (ids.length < maxLive && x < 0.2) {
      await create(Math.random() < 0.3);
    } else if (!id) {
      await sleep(20);
    } else if (x < 0.40) {
      const r = await call("get", "GET", `/v1/sandboxes/${id}`, null, [200, 404]);
      if (r.status === 404) live.delete(id); // expired
      else if (r.json) live.get(id) && (live.get(id).state = r.json.status.state);
    } else if (x < 0.50) {
      await call("list", "GET", "/v1/sandboxes?metadata=soak%3Dyes&pageSize=50", null, [200]);
    } else if (x < 0.58) {
      const s = live.get(id);
      if (s && s.state === "Running") {
        const r = await call("pause", "POST", `/v1/sandboxes/${id}/pause`, null, [202, 404, 409]);
        if (r.status === 202) s.state = "Paused";
      }
    } else if (x < 0.66) {
      const s = live.get(id);
      if (s && s.state === "Paused") {
        const r = await call("resume", "POST", `/v1/sandboxes/${id}/resume`, null, [202, 404, 409]);
        if (r.status === 202) s.state = "Running";
      }
    } else if (x < 0.74) {
      const s = live.get(id);
      if (s && !s.short) {
        await call("renew", "POST", `/v1/sandboxes/${id}/renew-expiration`,
          { expiresAt: new Date(Date.now() + 600000).toISOString() }, [200, 404]);
      }
    } else if (x < 0.92) {
      const s = live.get(id);
      if (s && s.state === "Running") {
        if (!s.token) {
          const e = await call("endpoint", "GET", `/v1/sandboxes/${id}/endpoints/44772`, null, [200, 404]);
          if (e.status === 200 && e.json && e.json.headers) s.token = e.json.headers["X-EXECD-ACCESS-TOKEN"];
          else if (e.status === 404) live.delete(id); // expired meanwhile
        }
        if (s.token) {
          const t0 = now();
          try {
            const r = await fetch(`${base}/sandboxes/${id}/proxy/44772/ping`, { headers: { "X-EXECD-ACCESS-TOKEN": s.token } });
            await r.text();
            // 502 while the agent is still starting or the sandbox just expired is not an error of the server
            record("proxy", now() - t0, [200, 404, 409, 502].includes(r.status), `proxy ping -> ${r.status}`);
          } catch (e) {
            record("proxy", now() - t0, false, e.message);
          }
        }
      }
    } else {
      const s = live.get(id);
      if (s && !s.short) {
        const r = await call("delete", "DELETE", `/v1/sandboxes/${id}`, null, [204, 404]);
        if (r.status === 204 || r.status === 404) live.delete(id);
      }
    }
  }
}

// A bug in this script must not end the soak early: a worker that throws is counted as an error of the
// script (it fails the run) and started again until the deadline.
async function guarded(w) {
  while (Date.now() < deadline) {
    try {
      await worker(w);
    } catch (e) {
      record("soak script", 0, false, e.stack || String(e));
    }
  }
}
await Promise.all(Array.from({ length: 8 }, (_, i) => guarded(i)));
// wait for the short-lived ones to expire, then check that every one of them is gone by itself
await sleep(20000);
let expiredOk = 0;
const expiryMissed = [];
for (const [id, at] of shortOnes) {
  const r = await fetch(`${base}/v1/sandboxes/${id}`, { headers: H });
  await r.text();
  if (r.status === 404) expiredOk++;
  else expiryMissed.push(`${id} (expiry ${new Date(at).toISOString()}) -> ${r.status}`);
}
if (expiryMissed.length) errors.push(...expiryMissed.slice(0, 10).map((m) => "expiry missed: " + m));
// then delete the rest
for (const id of [...live.keys()]) {
  await call("delete", "DELETE", `/v1/sandboxes/${id}`, null, [204, 404]);
  live.delete(id);
}
await sleep(2000);
clearInterval(sampler);
const end = procStats();
samples.push(end);
// leaks: containers of this server's instance vs records the server still has
const containers = execFileSync("docker", ["ps", "-aq", "--filter", `label=opensandbox.io/instance=${instance}`],
  { encoding: "utf8" }).trim().split("\n").filter(Boolean);
const list = await (await fetch(`${base}/v1/sandboxes?pageSize=200`, { headers: H })).json();

const pct = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(s.length * p))] || 0; };
let total = 0, totalErr = 0;
console.log(`\nSoak ${minutes} min, ${new Date().toISOString().slice(0, 10)}, 8 concurrent workers, at most ${maxLive} live sandboxes\n`);
console.log("| operation | count | errors | p50 ms | p99 ms |\n|---|---|---|---|---|");
for (const [op, s] of Object.entries(stats)) {
  total += s.n; totalErr += s.errors;
  console.log(`| ${op} | ${s.n} | ${s.errors} | ${pct(s.t, 0.5).toFixed(2)} | ${pct(s.t, 0.99).toFixed(2)} |`);
}
console.log(`\n- operations: ${total}, errors: ${totalErr}`);
console.log(`- leaks after cleanup: ${containers.length} containers of this instance left, ${list.pagination.totalItems} records left`);
console.log(`- expiries: ${shortOnes.size} short-lived sandboxes (expiry 5-15 s after create), ${expiredOk} gone by themselves (404) once it passed, ${expiryMissed.length} still there`);
const rssAll = samples.map((x) => x.rss), fdAll = samples.map((x) => x.fds);
console.log(`- server RSS: ${start.rss} KiB at start, ${end.rss} KiB at end (min ${Math.min(...rssAll)}, max ${Math.max(...rssAll)} over ${samples.length} samples, every 15 s)`);
console.log(`- open fds: ${start.fds} at start, ${end.fds} at end (min ${Math.min(...fdAll)}, max ${Math.max(...fdAll)})`);
const step = Math.max(1, Math.floor(samples.length / 10));
console.log(`- RSS KiB over time: ${samples.filter((_, i) => i % step === 0 || i === samples.length - 1).map((x) => x.rss).join(" ")}`);
if (errors.length) console.log("\nfirst errors:\n" + errors.map((e) => "- " + e).join("\n"));
process.exit(totalErr === 0 && expiryMissed.length === 0 && containers.length === 0 && list.pagination.totalItems === 0 ? 0 : 1);
