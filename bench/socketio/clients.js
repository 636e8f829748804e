// The workload of `wsctl simulate --robots N --messages K --rate 0` for socket.io: N robots,
// round robin over the servers; every robot gets K messages, a share of the robots (0.75)
// through a server that does not hold them (server-side emits, so the message crosses
// Redis), all at once. Robots check order and duplicates; latency from each message's send
// time. Prints one JSON line.
// Usage: node clients.js N K SHARE URL1 URL2 ...
const { io } = require("socket.io-client");

const n = Number(process.argv[2]);
const k = Number(process.argv[3]);
const share = Number(process.argv[4]);
const urls = process.argv.slice(5);
const CHUNK = 500;

function connect(url, auth) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { transports: ["websocket"], auth, reconnection: false, forceNew: true });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

async function main() {
  const robots = [];
  const received = new Array(n).fill(0);
  const lastSeq = new Array(n).fill(-1);
  let outOfOrder = 0;
  let duplicated = 0;
  let delivered = 0;
  let lastAt = 0;
  const latencies = [];
  const total = n * k;
  let finish;
  const allIn = new Promise((resolve) => (finish = resolve));
  for (let start = 0; start < n; start += 200) {
    const batch = [];
    for (let i = start; i < Math.min(n, start + 200); i++) {
      batch.push(
        connect(urls[i % urls.length], { robot: "r" + i }).then((socket) => {
          socket.on("m", (payload) => {
            const now = performance.now();
            const msg = JSON.parse(payload);
            if (msg.n <= lastSeq[i]) {
              if (msg.n === lastSeq[i]) duplicated++;
              else outOfOrder++;
            }
            lastSeq[i] = Math.max(lastSeq[i], msg.n);
            received[i]++;
            delivered++;
            latencies.push(now - msg.t);
            lastAt = now;
            if (delivered >= total) finish();
          });
          robots[i] = socket;
        })
      );
    }
    await Promise.all(batch);
  }
  const drivers = await Promise.all(urls.map((u) => connect(u, { driver: true })));
  // per server: the (room, payload) pairs it emits, in robot order, K messages each
  const perServer = urls.map(() => []);
  for (let i = 0; i < n; i++) {
    const owner = i % urls.length;
    const through = Math.floor((i + 1) * share) > Math.floor(i * share);
    const via = through && urls.length > 1 ? (owner + 1 + (i % (urls.length - 1))) % urls.length : owner;
    for (let seq = 0; seq < k; seq++) perServer[via].push(["r" + i, seq]);
  }
  const started = performance.now();
  await Promise.all(
    perServer.map(async (pairs, s) => {
      for (let start = 0; start < pairs.length; start += CHUNK) {
        const chunk = pairs.slice(start, start + CHUNK).map(([room, seq]) => [
          room,
          JSON.stringify({ n: seq, t: performance.now() }),
        ]);
        await new Promise((resolve) => drivers[s].emit("emit", chunk, resolve));
      }
    })
  );
  await Promise.race([allIn, new Promise((resolve) => setTimeout(resolve, 60000))]);
  const seconds = ((lastAt || performance.now()) - started) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] : 0);
  console.log(
    JSON.stringify({
      sent: total,
      delivered,
      lost: total - delivered,
      duplicated,
      out_of_order: outOfOrder,
      seconds,
      throughput_per_s: delivered / seconds,
      p50_ms: pct(50),
      p99_ms: pct(99),
    })
  );
  for (const s of [...robots, ...drivers]) if (s) s.close();
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
