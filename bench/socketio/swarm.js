// The robot swarm of bench/app_send_bench.py: N robots "robot-0".."robot-{N-1}", robot i on
// URL i % (number of URLs), in a process of its own so the robots are not the servers'
// bottleneck. KIND "ws": plain WebSocket clients (the `ws` package) of a wsctl gateway's
// /ws/{robot_id}; KIND "sio": socket.io-client with auth {robot: id} (server.js joins it to
// the room of that id) receiving event "m". Both count the same way: every message is JSON
// {"m": tag, "n": k, "t": epoch ms at send}; per tag: distinct messages, duplicates, first
// and last receive time (epoch ms), latency (receive - t) and the distinct messages received
// by the robots of each URL ("by_url").
//
// Protocol: prints {"ready": N} once every robot is connected (or exits 1 with the error on
// stderr). Then one JSON command per stdin line: {"report": TAG, "total": T, "idle_ms": I,
// "deadline_ms": D} waits until T distinct messages of TAG arrived, or none for I ms, or D ms
// passed, and prints that tag's counts as one JSON line (and forgets the tag). An empty line
// or end of input closes every robot and exits 0.
// Usage: node swarm.js ws|sio N URL1 URL2 ...
const readline = require("readline");

const kind = process.argv[2];
const n = Number(process.argv[3]);
const urls = process.argv.slice(4);
const CONNECT_BATCH = 200;
const CONNECT_TIMEOUT_MS = 30000;

const now = () => performance.timeOrigin + performance.now();
const tags = new Map(); // tag -> {seen: Set, duplicated, first, last, latencies, lastAt}

function receive(payload, where) {
  const at = now();
  let msg;
  try {
    msg = JSON.parse(payload);
  } catch {
    return;
  }
  let t = tags.get(msg.m);
  if (t === undefined) {
    t = { seen: new Set(), duplicated: 0, first: at, last: at, latencies: [], byUrl: urls.map(() => 0) };
    tags.set(msg.m, t);
  }
  if (t.seen.has(msg.n)) {
    t.duplicated++;
    return;
  }
  t.seen.add(msg.n);
  t.byUrl[where]++;
  t.last = at;
  t.latencies.push(at - msg.t);
}

function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no connection within ${ms} ms`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

function connectWs(url, id, where) {
  const WebSocket = require("ws");
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/ws/${id}`, { perMessageDeflate: false });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
    ws.on("message", (data) => receive(data.toString(), where));
  });
}

function connectSio(url, id, where) {
  const { io } = require("socket.io-client");
  return new Promise((resolve, reject) => {
    const socket = io(url, {
      transports: ["websocket"],
      auth: { robot: id },
      reconnection: false,
      forceNew: true,
    });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
    socket.on("m", (payload) => receive(payload, where));
  });
}

function report(cmd) {
  const started = now();
  return new Promise((resolve) => {
    const check = () => {
      const t = tags.get(cmd.report);
      const got = t ? t.seen.size : 0;
      const quietSince = Math.max(started, t ? t.last : started);
      const at = now();
      if (got >= cmd.total || at - quietSince >= cmd.idle_ms || at - started >= cmd.deadline_ms) {
        tags.delete(cmd.report);
        const lat = t ? t.latencies.sort((a, b) => a - b) : [];
        const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] : null);
        resolve({
          tag: cmd.report,
          delivered: got,
          duplicated: t ? t.duplicated : 0,
          by_url: t ? t.byUrl : urls.map(() => 0),
          first_recv_ms: t ? t.first : null,
          last_recv_ms: t ? t.last : null,
          p50_ms: pct(50),
          p99_ms: pct(99),
          max_ms: lat.length ? lat[lat.length - 1] : null,
        });
      } else {
        setTimeout(check, 20);
      }
    };
    check();
  });
}

async function main() {
  if (kind !== "ws" && kind !== "sio") throw new Error(`unknown kind ${kind} (ws or sio)`);
  const connect = kind === "ws" ? connectWs : connectSio;
  const robots = [];
  for (let start = 0; start < n; start += CONNECT_BATCH) {
    const batch = [];
    for (let i = start; i < Math.min(n, start + CONNECT_BATCH); i++) {
      const where = i % urls.length;
      batch.push(withTimeout(connect(urls[where], `robot-${i}`, where), CONNECT_TIMEOUT_MS, `robot-${i}`));
    }
    robots.push(...(await Promise.all(batch)));
  }
  console.log(JSON.stringify({ ready: robots.length }));
  const lines = readline.createInterface({ input: process.stdin });
  let queue = Promise.resolve();
  const stop = () => {
    for (const r of robots) r.close();
    process.exit(0);
  };
  lines.on("line", (line) => {
    if (!line.trim()) return stop();
    const cmd = JSON.parse(line);
    queue = queue.then(async () => console.log(JSON.stringify(await report(cmd))));
  });
  lines.on("close", () => queue.then(stop));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(String(err && err.stack ? err.stack : err));
  process.exit(1);
});
