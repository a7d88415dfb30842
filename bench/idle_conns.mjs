// Opens N keep-alive connections to host:port, sends one request on each, then holds them all idle for
// SECONDS (bounded) before closing. Used by bench/engine.sh to check that idle connections cost nothing.
import net from "node:net";
const [host, port, n, seconds] = [process.argv[2], +process.argv[3], +process.argv[4], +process.argv[5]];
const socks = [];
let answered = 0;
for (let i = 0; i < n; i++) {
  const s = net.connect(port, host, () => s.write(`GET /health HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
  s.once("data", () => { answered++; if (answered === n) console.log(`idle: ${n} connections open and answered`); });
  s.on("error", (e) => console.error("idle conn error", e.message));
  socks.push(s);
}
setTimeout(() => { for (const s of socks) s.destroy(); process.exit(0); }, seconds * 1000);
