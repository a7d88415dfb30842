// TEST-ONLY. Raw TCP clients for the hostile-input specs (tests/lua/integration/reliability), where an HTTP
// library would refuse to send what we need. Prints one JSON object on stdout.
//
//   node rawhttp.mjs exchange PORT FILE [IDLE_MS]
//       sends the bytes of FILE on one connection, reads until the server closes it or nothing arrives
//       for IDLE_MS (default 1500). Prints {closed, data, statuses}: statuses are the status codes of the
//       response heads found in data, in order.
//   node rawhttp.mjs slowloris PORT CONNS SECONDS [SOURCE_ADDRESS]
//       opens CONNS connections that each send a request line and then one header line per second,
//       never finishing the head; meanwhile a fresh client asks GET /health every 250 ms. After SECONDS
//       everything is closed. Prints {opened, openAtEnd, closedByServer, probes, probeFailures,
//       probeMaxMs, probeP50Ms}. With SOURCE_ADDRESS (e.g. 127.0.0.2) the slow connections come from that
//       address while the probes keep coming from 127.0.0.1: two clients, for per-address limits.
import net from "node:net";
import fs from "node:fs";

const [mode, portArg, ...rest] = process.argv.slice(2);
const port = Number(portArg);
const HOST = "127.0.0.1";

function statuses(text) {
    return [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
}

function exchange(file, idleMs) {
    return new Promise((resolve) => {
        const chunks = [];
        let closed = false;
        let timer;
        const sock = net.connect(port, HOST, () => sock.write(fs.readFileSync(file)));
        const finish = () => {
            clearTimeout(timer);
            sock.destroy();
            const data = Buffer.concat(chunks).toString("latin1");
            resolve({ closed, data, statuses: statuses(data) });
        };
        const arm = () => {
            clearTimeout(timer);
            timer = setTimeout(finish, idleMs);
        };
        arm();
        sock.on("data", (d) => {
            chunks.push(d);
            arm();
        });
        sock.on("end", () => {
            closed = true;
            finish();
        });
        sock.on("error", () => {
            closed = true;
            finish();
        });
    });
}

function probe() {
    return new Promise((resolve) => {
        const t0 = process.hrtime.bigint();
        let data = "";
        const sock = net.connect(port, HOST, () =>
            sock.write("GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"));
        const done = (ok) => {
            clearTimeout(timer);
            sock.destroy();
            resolve({ ok, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
        };
        const timer = setTimeout(() => done(false), 3000);
        sock.on("data", (d) => {
            data += d.toString("latin1");
            if (data.includes('"healthy"')) done(true);
        });
        sock.on("error", () => done(false));
        sock.on("end", () => done(data.includes('"healthy"')));
    });
}

async function slowloris(conns, seconds, source) {
    const socks = [];
    let opened = 0;
    let closedByServer = 0;
    let stopping = false;
    const results = [];
    const deadline = Date.now() + seconds * 1000;
    // open in batches of 100, so that the listen backlog is not what is being measured
    for (let i = 0; i < conns; i++) {
        const s = net.connect({ port, host: HOST, ...(source ? { localAddress: source } : {}) }, () => {
            opened++;
            s.write("GET /health HTTP/1.1\r\nHost: slow\r\n");
        });
        s.on("error", () => {});
        s.on("close", () => {
            if (!stopping) closedByServer++;
        });
        socks.push(s);
        if (i % 100 === 99) await new Promise((r) => setTimeout(r, 50));
    }
    const trickle = setInterval(() => {
        for (const s of socks) if (!s.destroyed) s.write("X-Slow: 1\r\n");
    }, 1000);
    while (Date.now() < deadline) {
        results.push(await probe());
        await new Promise((r) => setTimeout(r, 250));
    }
    clearInterval(trickle);
    const openAtEnd = socks.filter((s) => !s.destroyed).length;
    stopping = true;
    for (const s of socks) s.destroy();
    const ms = results.map((r) => r.ms).sort((a, b) => a - b);
    return {
        opened,
        openAtEnd,
        closedByServer,
        probes: results.length,
        probeFailures: results.filter((r) => !r.ok).length,
        probeMaxMs: Math.round(ms[ms.length - 1] || 0),
        probeP50Ms: Math.round(ms[Math.floor(ms.length / 2)] || 0),
    };
}

let out;
if (mode === "exchange") {
    out = await exchange(rest[0], Number(rest[1] || 1500));
} else if (mode === "slowloris") {
    out = await slowloris(Number(rest[0]), Number(rest[1]), rest[2]);
} else {
    console.error("usage: rawhttp.mjs exchange PORT FILE [IDLE_MS] | slowloris PORT CONNS SECONDS [SOURCE]");
    process.exit(2);
}
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(0);
