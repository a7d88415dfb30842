// Agent benchmark through the official SDK (run by bench/agent.sh from a folder where the SDK is installed):
// commands.run("echo hi") round trips, 100 MB file upload/download through the agent, agent idle RSS.
//   node agent.mjs <server-url> <api-key>
import { ConnectionConfig, Sandbox } from "@alibaba-group/opensandbox";
import { execFileSync } from "node:child_process";

const [url, apiKey] = process.argv.slice(2, 4);
const IMAGE = process.env.SANDBOX_IMAGE || "local/busybox:latest";
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const now = () => Number(process.hrtime.bigint()) / 1e6;
const rows = [];
const sbx = await Sandbox.create({ connectionConfig: new ConnectionConfig({ domain: url, apiKey, disableMetrics: true }),
  image: IMAGE, entrypoint: ["sleep", "3600"], timeoutSeconds: 600, readyTimeoutSeconds: 60 });
try {
  await sbx.commands.run("true");
  const t = [];
  for (let i = 0; i < 50; i++) {
    const t0 = now();
    const ex = await sbx.commands.run("echo hi");
    t.push(now() - t0);
    if (ex.logs.stdout.map((m) => m.text).join("") !== "hi") throw new Error("unexpected output");
  }
  rows.push(['SDK commands.run("echo hi") round trip, median of 50', median(t).toFixed(2) + " ms"]);
  rows.push(['SDK commands.run("echo hi") round trip, p90 of 50', [...t].sort((a, b) => a - b)[44].toFixed(2) + " ms"]);

  const size = 100 * 1024 * 1024;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) data[i] = i & 255;
  let t0 = now();
  await sbx.files.writeFiles([{ path: "/tmp/bench.bin", data }]);
  const up = now() - t0;
  t0 = now();
  const back = await sbx.files.readBytes("/tmp/bench.bin");
  const down = now() - t0;
  if (back.length !== size) throw new Error("download size " + back.length);
  rows.push(["100 MiB upload through the agent (SDK writeFiles)", (size / 1048576 / (up / 1000)).toFixed(0) + " MiB/s"]);
  rows.push(["100 MiB download through the agent (SDK readBytes)", (size / 1048576 / (down / 1000)).toFixed(0) + " MiB/s"]);
  await sbx.commands.run("rm -f /tmp/bench.bin");
  // agent RSS, read inside the sandbox (the agent is the only execd process)
  const ex = await sbx.commands.run("for p in /proc/[0-9]*; do if grep -q execd $p/cmdline 2>/dev/null; then grep VmRSS $p/status; fi; done");
  const rss = ex.logs.stdout.map((m) => m.text).join(" ");
  rows.push(["agent RSS (VmRSS) after the runs above", rss.trim()]);
  const cid = execFileSync("docker", ["ps", "-q", "--filter", `label=opensandbox.io/id=${sbx.id}`], { encoding: "utf8" }).trim();
  const idle = execFileSync("docker", ["exec", cid, "sh", "-c",
    "for p in /proc/[0-9]*; do grep -q execd $p/cmdline 2>/dev/null && grep VmRSS $p/status; done"], { encoding: "utf8" });
  rows.push(["agent RSS (VmRSS) idle, read with docker exec", idle.trim().split("\n")[0]]);
} finally {
  await sbx.kill();
}
console.log("\n| measure | value |\n|---|---|");
for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
