// ws_client.mjs: TEST-ONLY minimal WebSocket client (RFC 6455) over node's `net`, for the PTY specs
// (Node 20's global WebSocket is behind a flag and no WS package is installed). It checks the 101 and
// Sec-WebSocket-Accept, masks what it sends, and collects the server's frames (unfragmented).
//
//   const ws = await wsConnect("http://127.0.0.1:44772/pty/ID/ws?pty=1", { "X-EXECD-ACCESS-TOKEN": t });
//   ws.status (101 or the refusal's status), ws.body (a refusal's body)
//   ws.sendBinary(buf) / ws.sendText(str) / ws.close(code)
//   await ws.waitFor((frames) => predicate, ms)   frames: [{op, data: Buffer, text?, json?}]
//   ws.closed: a promise of {code, reason} (code 1006 when the socket ended without a close frame)
import net from "node:net";
import crypto from "node:crypto";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

function frame(op, payload) {
  const mask = crypto.randomBytes(4);
  const n = payload.length;
  let head;
  if (n < 126) head = Buffer.from([0x80 | op, 0x80 | n]);
  else if (n < 65536) {
    head = Buffer.alloc(4);
    head[0] = 0x80 | op;
    head[1] = 0x80 | 126;
    head.writeUInt16BE(n, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | op;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  const body = Buffer.from(payload);
  for (let i = 0; i < n; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

export function wsConnect(url, headers = {}, { raw = false } = {}) {
  const u = new URL(url);
  const key = crypto.randomBytes(16).toString("base64");
  const accept = crypto.createHash("sha1").update(key + GUID).digest("base64");
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname);
    let buf = Buffer.alloc(0), upgraded = false;
    const frames = [];
    const waiters = new Set();
    let closeResolve;
    const ws = {
      frames,
      closed: new Promise((r) => (closeResolve = r)),
      sendBinary: (b) => sock.write(frame(0x2, Buffer.from(b))),
      sendText: (s) => sock.write(frame(0x1, Buffer.from(s))),
      sendRaw: (b) => sock.write(b),
      frame,
      close: (code = 1000) => {
        const p = Buffer.alloc(2);
        p.writeUInt16BE(code);
        sock.write(frame(0x8, p));
      },
      destroy: () => sock.destroy(),
      waitFor(pred, ms = 10000) {
        return new Promise((res, rej) => {
          if (pred(frames)) return res(frames);
          const w = { pred, res };
          waiters.add(w);
          setTimeout(() => {
            waiters.delete(w);
            rej(new Error(`timeout waiting for frames; got ${JSON.stringify(frames.map(show))}`));
          }, ms);
        });
      },
    };
    const show = (f) => ({ op: f.op, text: f.text ?? f.data.toString("latin1") });
    const notify = () => {
      for (const w of [...waiters]) if (w.pred(frames)) { waiters.delete(w); w.res(frames); }
    };
    sock.on("connect", () => {
      const hdrs = { Host: u.host, Upgrade: "websocket", Connection: "Upgrade", "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13", ...headers };
      sock.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\n` + Object.entries(hdrs).map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n");
    });
    sock.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.subarray(0, end).toString("latin1");
        ws.head = head;
        ws.status = Number(head.split(" ")[1]);
        if (ws.status !== 101) {
          // a refusal: collect the body until the server closes or Content-Length is there
          const m = /content-length: *(\d+)/i.exec(head);
          const body = buf.subarray(end + 4);
          if (m && body.length < Number(m[1])) return;
          ws.body = body.toString();
          sock.destroy();
          return resolve(ws);
        }
        if (!new RegExp(`sec-websocket-accept: *${accept.replace(/[+/=]/g, "\\$&")}`, "i").test(head))
          return reject(new Error("bad Sec-WebSocket-Accept: " + head));
        upgraded = true;
        buf = buf.subarray(end + 4);
        resolve(ws);
      }
      for (;;) {
        if (buf.length < 2) break;
        const op = buf[0] & 0x0f;
        let len = buf[1] & 0x7f, off = 2;
        if (buf[1] & 0x80) return reject(new Error("server frame is masked"));
        if (len === 126) { if (buf.length < 4) break; len = buf.readUInt16BE(2); off = 4; }
        else if (len === 127) { if (buf.length < 10) break; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (buf.length < off + len) break;
        const data = Buffer.from(buf.subarray(off, off + len));
        buf = buf.subarray(off + len);
        const f = { op, data };
        if (op === 0x1) {
          f.text = data.toString();
          try { f.json = JSON.parse(f.text); } catch {}
        }
        if (op === 0x8) {
          f.code = data.length >= 2 ? data.readUInt16BE(0) : 1005;
          f.reason = data.subarray(2).toString();
          closeResolve({ code: f.code, reason: f.reason });
        }
        if (op === 0x9 && !raw) sock.write(frame(0xa, data));
        frames.push(f);
      }
      notify();
    });
    sock.on("error", (e) => (upgraded ? closeResolve({ code: 1006, reason: String(e) }) : reject(e)));
    sock.on("close", () => {
      closeResolve({ code: 1006, reason: "socket closed" });
      if (!upgraded && ws.status === undefined) reject(new Error("closed before a response"));
      else if (!upgraded && ws.body === undefined) { ws.body = buf.subarray(buf.indexOf("\r\n\r\n") + 4).toString(); resolve(ws); }
    });
  });
}

// helpers over collected frames
export const outputOf = (frames) =>
  Buffer.concat(frames.filter((f) => f.op === 0x2 && (f.data[0] === 1 || f.data[0] === 2)).map((f) => f.data.subarray(1))).toString();
export const jsonFrames = (frames) => frames.filter((f) => f.json).map((f) => f.json);
